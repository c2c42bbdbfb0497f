-- 0005: FHIR R4 resources (archive/fhir-store.ts). Every version of every resource is a row: a
-- write adds version n+1 and moves the `is_current` flag, in the transaction that also writes
-- the FhirResourceChanged outbox row (push to an external FHIR server). A version, once written,
-- never changes: only its `is_current` flag may turn false (trigger below).
-- Research Consent is not stored here: it is rendered from the consents table (0002).

CREATE TABLE fhir_resources (
  tenant_id     text NOT NULL REFERENCES tenants (id),
  resource_type text NOT NULL CHECK (resource_type ~ '^[A-Z][A-Za-z]{1,63}$'),
  id            text NOT NULL CHECK (id ~ '^[A-Za-z0-9.-]{1,64}$'),
  version_id    integer NOT NULL CHECK (version_id >= 1),
  last_updated  timestamptz NOT NULL,
  is_current    boolean NOT NULL,
  resource      jsonb NOT NULL CHECK (
    jsonb_typeof(resource) = 'object'
    AND resource ->> 'resourceType' = resource_type
    AND resource ->> 'id' = id
    AND resource -> 'meta' ->> 'versionId' = version_id::text
  ),
  PRIMARY KEY (tenant_id, resource_type, id, version_id)
);

-- One current version per resource; searches run on current versions only.
CREATE UNIQUE INDEX fhir_resources_current ON fhir_resources (tenant_id, resource_type, id) WHERE is_current;
CREATE INDEX fhir_resources_subject ON fhir_resources (tenant_id, resource_type, (resource -> 'subject' ->> 'reference')) WHERE is_current;
CREATE INDEX fhir_resources_identifier ON fhir_resources USING gin ((resource -> 'identifier') jsonb_path_ops) WHERE is_current;

CREATE FUNCTION eco3d_fhir_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE'
     AND OLD.is_current AND NOT NEW.is_current
     AND NEW.tenant_id = OLD.tenant_id AND NEW.resource_type = OLD.resource_type AND NEW.id = OLD.id
     AND NEW.version_id = OLD.version_id AND NEW.last_updated = OLD.last_updated AND NEW.resource = OLD.resource THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'fhir_resources versions are immutable: % refused', TG_OP USING ERRCODE = 'P0001';
END
$$;
CREATE TRIGGER fhir_resources_immutable BEFORE UPDATE OR DELETE ON fhir_resources
  FOR EACH ROW EXECUTE FUNCTION eco3d_fhir_version_immutable();
CREATE TRIGGER fhir_resources_no_truncate BEFORE TRUNCATE ON fhir_resources
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- 0006: the reading physician's report on a study, in versions. A version is a draft
-- (preliminary) until a physician signs it; a signed version is never changed (trigger): a
-- correction is an amendment, a new version that replaces the signed one and is signed in turn.
CREATE TABLE reports (
  id                   text PRIMARY KEY,
  tenant_id            text NOT NULL REFERENCES tenants (id),
  study_instance_uid   text NOT NULL CHECK (length(study_instance_uid) BETWEEN 1 AND 64),
  -- Our own studies come from an acquisition (same UID); an imported study has none.
  acquisition_uid      text,
  version              integer NOT NULL CHECK (version >= 1),
  status               text NOT NULL CHECK (status IN ('preliminary', 'final', 'amended')),
  findings             text NOT NULL CHECK (length(findings) <= 20000),
  conclusion           text NOT NULL CHECK (length(conclusion) <= 4000),
  measurement_ids      jsonb NOT NULL CHECK (jsonb_typeof(measurement_ids) = 'array'),
  authored_by          text NOT NULL,
  updated_at           timestamptz NOT NULL,
  signed_by            text,
  signed_by_account_id text,
  signed_at            timestamptz,
  replaces_id          text REFERENCES reports (id),
  -- The SR that carries the signed version into the study.
  sr_series_instance_uid text,
  sr_sop_instance_uid  text,
  UNIQUE (tenant_id, study_instance_uid, version),
  CHECK ((status = 'preliminary') = (signed_at IS NULL)),
  CHECK ((signed_at IS NULL) = (signed_by IS NULL)),
  CHECK (status <> 'amended' OR replaces_id IS NOT NULL)
);

CREATE FUNCTION eco3d_reports_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'reports are never deleted' USING ERRCODE = 'check_violation';
  END IF;
  IF OLD.signed_at IS NOT NULL THEN
    RAISE EXCEPTION 'a signed report version is never changed: amend it' USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER reports_signed_immutable BEFORE UPDATE OR DELETE ON reports FOR EACH ROW EXECUTE FUNCTION eco3d_reports_guard();

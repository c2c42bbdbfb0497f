-- 0008: the de-identified research data lake (datalake/), and priced charges in the billing ledger.
--
-- Two sides, kept apart:
-- - the hospital's side: why each acquisition did or did not reach the lake (lake_intake), and
--   the pseudonym key (lake_pseudonyms: original patient id encrypted, never in clear);
-- - the lake's side: the catalog of de-identified cases, their labels, datasets and their
--   immutable versions, partners, licences and the access log. Nothing there names a patient:
--   a case carries a pseudonym id, which only the hospital can turn back into a patient.

-- A priced item that is not a scan (a dataset licence; later a plugin's use): no device, no
-- acquisition, its amount fixed when recorded. Reversible like any entry.
ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_kind_check;
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_kind_check CHECK (kind IN ('usage', 'outcome', 'reversal', 'charge'));
ALTER TABLE usage_ledger ALTER COLUMN device_id DROP NOT NULL;
ALTER TABLE usage_ledger ALTER COLUMN acquisition_uid DROP NOT NULL;
ALTER TABLE usage_ledger ADD COLUMN amount_cents bigint CHECK (amount_cents BETWEEN 0 AND 100000000000);
ALTER TABLE usage_ledger ADD COLUMN item text CHECK (length(item) BETWEEN 1 AND 200);
ALTER TABLE usage_ledger ADD COLUMN description text CHECK (length(description) BETWEEN 1 AND 500);
ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_charge_shape CHECK (
  ((kind = 'charge') = (amount_cents IS NOT NULL))
  AND (kind <> 'charge' OR (item IS NOT NULL AND description IS NOT NULL))
  AND (kind IN ('charge', 'reversal') OR (device_id IS NOT NULL AND acquisition_uid IS NOT NULL))
);

-- The lake's de-identified instances are indexed by the archive's tables under this reserved
-- tenant (datalake/intake.ts LAKE_TENANT); nobody signs in to it.
INSERT INTO tenants (id, name) VALUES ('eco3d-lake', 'Research data lake (reserved)') ON CONFLICT (id) DO NOTHING;

-- Per hospital tenant: the lake's settings (site region, device identity, pixel masks, quality
-- thresholds), as validated by datalake/settings.ts.
CREATE TABLE lake_settings (
  tenant_id  text PRIMARY KEY REFERENCES tenants (id),
  settings   jsonb NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
  updated_by text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The pseudonym key. patient_hash is a keyed hash of the patient id (found without decrypting);
-- patient_id_enc is AES-256-GCM of it (nonce, tag, ciphertext). Deleted on erasure.
CREATE TABLE lake_pseudonyms (
  id              text PRIMARY KEY CHECK (id ~ '^P-[0-9a-f]{20}$'),
  tenant_id       text NOT NULL REFERENCES tenants (id),
  patient_hash    text NOT NULL CHECK (patient_hash ~ '^[0-9a-f]{64}$'),
  patient_id_enc  bytea NOT NULL,
  date_shift_days integer NOT NULL CHECK (date_shift_days BETWEEN -366 AND 366),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, patient_hash)
);

-- The lake's catalog: one de-identified study (case). Quasi-identifiers are coarse by design:
-- age as a 5-year band, the study year, the site's region.
CREATE TABLE lake_cases (
  id               text PRIMARY KEY CHECK (id ~ '^C-[0-9a-f]{20}$'),
  study_uid        text NOT NULL UNIQUE,
  pseudonym_id     text NOT NULL,
  source_tenant_id text NOT NULL REFERENCES tenants (id),
  body_part        text,
  probe            text,
  device_model     text,
  study_year       integer CHECK (study_year BETWEEN 1900 AND 2200),
  age_band         text CHECK (age_band ~ '^[0-9]{3}Y$'),
  sex              text CHECK (sex IN ('F', 'M', 'O')),
  site_region      text,
  quality_score    real NOT NULL CHECK (quality_score BETWEEN 0 AND 1),
  instances        integer NOT NULL CHECK (instances > 0),
  size_bytes       bigint NOT NULL CHECK (size_bytes > 0),
  created_at       timestamptz NOT NULL DEFAULT now(),
  withdrawn_at     timestamptz,
  withdrawn_reason text,
  CHECK ((withdrawn_at IS NULL) = (withdrawn_reason IS NULL))
);
CREATE INDEX lake_cases_pseudonym ON lake_cases (pseudonym_id);
CREATE INDEX lake_cases_live ON lake_cases (body_part, study_year) WHERE withdrawn_at IS NULL;

-- Why each completed acquisition did or did not reach the lake: the usable fraction is known.
-- exam_id finds repeat sweeps of one exam (duplicates). Hospital side: it names acquisitions.
CREATE TABLE lake_intake (
  tenant_id       text NOT NULL REFERENCES tenants (id),
  acquisition_uid text NOT NULL,
  exam_id         text,
  outcome         text NOT NULL CHECK (outcome IN ('copied', 'excluded')),
  reason          text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  quality         jsonb,
  case_id         text REFERENCES lake_cases (id),
  decided_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, acquisition_uid),
  CHECK ((outcome = 'copied') = (case_id IS NOT NULL))
);
CREATE INDEX lake_intake_exam ON lake_intake (tenant_id, exam_id) WHERE outcome = 'copied';

-- Labels by authorised annotators (pathology, outcome, finding): append-only.
CREATE TABLE lake_labels (
  id          bigserial PRIMARY KEY,
  case_id     text NOT NULL REFERENCES lake_cases (id),
  kind        text NOT NULL CHECK (kind IN ('pathology', 'outcome', 'finding')),
  code        text NOT NULL CHECK (length(code) BETWEEN 1 AND 64),
  display     text CHECK (length(display) BETWEEN 1 AND 200),
  labelled_by text NOT NULL,
  labelled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lake_labels_case ON lake_labels (case_id);
CREATE INDEX lake_labels_code ON lake_labels (kind, code);
CREATE TRIGGER lake_labels_append_only BEFORE UPDATE OR DELETE ON lake_labels
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();

CREATE TABLE lake_datasets (
  id          text PRIMARY KEY,
  name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
  description text NOT NULL CHECK (length(description) <= 2000),
  cohort      jsonb NOT NULL CHECK (jsonb_typeof(cohort) = 'object'),
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- An immutable snapshot of a dataset's cohort, released after the k-anonymity check. The manifest
-- lists every case and instance with its checksum; manifest_sha256 is of its canonical JSON.
CREATE TABLE lake_dataset_versions (
  id              text PRIMARY KEY,
  dataset_id      text NOT NULL REFERENCES lake_datasets (id),
  version         integer NOT NULL CHECK (version >= 1),
  k               integer NOT NULL CHECK (k >= 2),
  cases           integer NOT NULL CHECK (cases >= 0),
  size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
  manifest        jsonb NOT NULL,
  manifest_sha256 text NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
  released_by     text NOT NULL,
  released_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (dataset_id, version)
);
CREATE TRIGGER lake_dataset_versions_immutable BEFORE UPDATE OR DELETE ON lake_dataset_versions
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER lake_dataset_versions_no_truncate BEFORE TRUNCATE ON lake_dataset_versions
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

CREATE TABLE lake_version_cases (
  version_id text NOT NULL REFERENCES lake_dataset_versions (id),
  case_id    text NOT NULL REFERENCES lake_cases (id),
  ordinal    integer NOT NULL CHECK (ordinal >= 1),
  PRIMARY KEY (version_id, case_id),
  UNIQUE (version_id, ordinal)
);
CREATE INDEX lake_version_cases_case ON lake_version_cases (case_id);
CREATE TRIGGER lake_version_cases_immutable BEFORE UPDATE OR DELETE ON lake_version_cases
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();

-- Data partners (their own tenant, with their own accounts). Academic partners may take the
-- free sample licence.
CREATE TABLE lake_partners (
  tenant_id  text PRIMARY KEY REFERENCES tenants (id),
  academic   boolean NOT NULL,
  updated_by text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lake_licences (
  id                text PRIMARY KEY,
  partner_tenant_id text NOT NULL REFERENCES lake_partners (tenant_id),
  version_id        text NOT NULL REFERENCES lake_dataset_versions (id),
  kind              text NOT NULL CHECK (kind IN ('sample', 'annual', 'per-case')),
  -- A sample licence covers the version's first max_cases cases; else NULL (all of them).
  max_cases         integer CHECK (max_cases >= 1),
  amount_cents      bigint NOT NULL CHECK (amount_cents >= 0),
  valid_from        timestamptz NOT NULL,
  valid_to          timestamptz NOT NULL,
  ledger_key        text NOT NULL UNIQUE,
  created_by        text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  revoked_at        timestamptz,
  revoked_by        text,
  UNIQUE (partner_tenant_id, id),
  CHECK (valid_to > valid_from),
  CHECK ((kind = 'sample') = (max_cases IS NOT NULL)),
  CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

-- A lake token is bound to one licence of its own tenant (the composite key enforces both).
ALTER TABLE api_tokens ADD COLUMN licence_id text;
ALTER TABLE api_tokens ADD FOREIGN KEY (tenant_id, licence_id) REFERENCES lake_licences (partner_tenant_id, id);

-- Every access to lake data: who, what, when, under which licence; append-only. flagged marks
-- what the anomaly rule (datalake/anomaly.ts) found unusual.
CREATE TABLE lake_access_log (
  id                bigserial PRIMARY KEY,
  licence_id        text REFERENCES lake_licences (id),
  partner_tenant_id text NOT NULL,
  actor             text NOT NULL,
  action            text NOT NULL,
  target            text NOT NULL,
  allowed           boolean NOT NULL,
  cases             integer NOT NULL DEFAULT 0,
  -- The cases reached (the anomaly rule counts distinct cases a day).
  case_ids          text[] NOT NULL DEFAULT '{}',
  instances         integer NOT NULL DEFAULT 0,
  size_bytes        bigint NOT NULL DEFAULT 0,
  flagged           boolean NOT NULL DEFAULT false,
  flag_reasons      jsonb,
  detail            jsonb,
  at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lake_access_log_licence ON lake_access_log (licence_id, at);
CREATE TRIGGER lake_access_log_append_only BEFORE UPDATE OR DELETE ON lake_access_log
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER lake_access_log_no_truncate BEFORE TRUNCATE ON lake_access_log
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- Verified erasure requests, as executed (no patient id in clear: its keyed hash).
CREATE TABLE lake_erasures (
  id                text PRIMARY KEY,
  tenant_id         text NOT NULL REFERENCES tenants (id),
  patient_hash      text NOT NULL,
  request_reference text NOT NULL CHECK (length(request_reference) BETWEEN 1 AND 200),
  studies_deleted   integer NOT NULL,
  cases_withdrawn   integer NOT NULL,
  requested_by      text NOT NULL,
  executed_at       timestamptz NOT NULL DEFAULT now()
);

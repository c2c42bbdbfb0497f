-- 0002: scoped API tokens (plugins, devices), exams (the patient and exam of the current
-- acquisition), research consent (append-only) and caliper measurements on acquisitions.
-- Released migrations are never edited: change the schema with a new file.

-- A scoped token for a plugin or device, minted by a tenant admin. token_hash is a SHA-256 of the
-- token: the token itself is shown once and stored nowhere. A token belongs to its tenant, not to
-- the account that minted it (created_by is who, for the record).
CREATE TABLE api_tokens (
  id          text PRIMARY KEY,
  token_hash  text NOT NULL UNIQUE CHECK (length(token_hash) >= 32),
  tenant_id   text NOT NULL REFERENCES tenants (id),
  name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  scopes      jsonb NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz,
  revoked_by  text,
  CHECK (expires_at > created_at),
  CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at DESC);

-- The exam in progress on a device and its patient, as entered at the bedside (later: from the
-- hospital's worklist). Field sizes follow the DICOM VRs they become: PatientID LO (64),
-- PatientName PN (64), StudyDescription LO (64), AccessionNumber SH (16).
CREATE TABLE exams (
  id               text PRIMARY KEY,
  tenant_id        text NOT NULL,
  device_id        text NOT NULL,
  patient_id       text NOT NULL CHECK (length(patient_id) BETWEEN 1 AND 64),
  patient_name     text NOT NULL CHECK (length(patient_name) BETWEEN 1 AND 64),
  birth_date       date,
  sex              text CHECK (sex IN ('F', 'M', 'O')),
  description      text NOT NULL CHECK (length(description) BETWEEN 1 AND 64),
  accession_number text CHECK (length(accession_number) BETWEEN 1 AND 16),
  started_by       text NOT NULL,
  started_at       timestamptz NOT NULL,
  ended_by         text,
  ended_at         timestamptz,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
  CHECK ((ended_at IS NULL) = (ended_by IS NULL)),
  CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- At most one current (not ended) exam per device.
CREATE UNIQUE INDEX exams_current ON exams (tenant_id, device_id) WHERE ended_at IS NULL;
CREATE INDEX exams_patient ON exams (tenant_id, patient_id);

-- Which exam an acquisition belongs to (at most one; set when the acquisition starts).
CREATE TABLE acquisition_exams (
  acquisition_uid text PRIMARY KEY REFERENCES acquisitions (uid),
  exam_id         text NOT NULL REFERENCES exams (id),
  linked_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acquisition_exams_exam ON acquisition_exams (exam_id);

-- Research consent decisions, append-only: a change of mind is a new row ('revoked'), never an
-- edit, so the record shows who recorded what, when, at which exam (the later FHIR Consent).
CREATE TABLE consents (
  seq                 bigserial PRIMARY KEY,
  id                  text NOT NULL UNIQUE,
  tenant_id           text NOT NULL REFERENCES tenants (id),
  patient_id          text NOT NULL CHECK (length(patient_id) BETWEEN 1 AND 64),
  exam_id             text REFERENCES exams (id),
  purpose             text NOT NULL DEFAULT 'research' CHECK (purpose IN ('research')),
  decision            text NOT NULL CHECK (decision IN ('yes', 'no', 'revoked')),
  recorded_by         text NOT NULL, -- username, as in the audit log
  recorded_by_account text NOT NULL, -- account id
  recorded_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX consents_patient ON consents (tenant_id, patient_id, seq DESC);
CREATE TRIGGER consents_append_only BEFORE UPDATE OR DELETE ON consents
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER consents_no_truncate BEFORE TRUNCATE ON consents
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- Caliper measurements on an acquisition's MPR slices (later: DICOM SR). value is computed by the
-- server: mm for a distance, mm² for an area.
CREATE TABLE measurements (
  seq                bigserial PRIMARY KEY,
  id                 text NOT NULL UNIQUE,
  tenant_id          text NOT NULL,
  acquisition_uid    text NOT NULL REFERENCES acquisitions (uid),
  kind               text NOT NULL CHECK (kind IN ('distance', 'area')),
  label              text CHECK (length(label) BETWEEN 1 AND 64),
  plane              text NOT NULL CHECK (plane IN ('axial', 'sagittal', 'coronal')),
  points_mm          jsonb NOT NULL CHECK (jsonb_typeof(points_mm) = 'array'),
  value              double precision NOT NULL CHECK (value >= 0),
  created_by         text NOT NULL, -- username
  created_by_account text NOT NULL, -- account id
  created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX measurements_acquisition ON measurements (tenant_id, acquisition_uid, seq);

-- 0004: the DICOM archive's index (archive/dicom-store.ts). The files live under <data>/archive;
-- these tables say what is there, per tenant, at the three QIDO-RS levels.
--
-- The typed columns are for matching (dates normalised to YYYYMMDD, times to HHMMSS.FFFFFF, person
-- names as their alphabetic group); `attrs` and `metadata` keep the attributes as received, in the
-- DICOM JSON Model (PS3.18 Annex F), for answers. Study and series rows carry what the first
-- instance stored in them said.

CREATE TABLE dicom_studies (
  tenant_id                text NOT NULL REFERENCES tenants (id),
  study_uid                text NOT NULL,
  patient_name             text,
  patient_id               text,
  patient_birth_date       text,
  patient_sex              text,
  study_date               text,
  study_time               text,
  accession_number         text,
  study_id                 text,
  study_description        text,
  referring_physician_name text,
  attrs                    jsonb NOT NULL,
  created_at               timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, study_uid)
);
CREATE INDEX dicom_studies_date ON dicom_studies (tenant_id, study_date);
CREATE INDEX dicom_studies_patient ON dicom_studies (tenant_id, patient_id);
CREATE INDEX dicom_studies_accession ON dicom_studies (tenant_id, accession_number);

CREATE TABLE dicom_series (
  tenant_id          text NOT NULL,
  series_uid         text NOT NULL,
  study_uid          text NOT NULL,
  modality           text,
  series_number      integer,
  series_description text,
  pps_start_date     text,
  pps_start_time     text,
  attrs              jsonb NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, series_uid),
  FOREIGN KEY (tenant_id, study_uid) REFERENCES dicom_studies (tenant_id, study_uid)
);
CREATE INDEX dicom_series_study ON dicom_series (tenant_id, study_uid);

-- sha256 is of the data set (the bytes after the File Meta Information): it is what "the same
-- instance" means on a re-send. pixel_offset/pixel_length locate the Pixel Data value in the file
-- (length NULL when encapsulated), so a frame of a native file is one byte-range read.
CREATE TABLE dicom_instances (
  tenant_id           text NOT NULL,
  sop_instance_uid    text NOT NULL,
  series_uid          text NOT NULL,
  study_uid           text NOT NULL,
  sop_class_uid       text NOT NULL,
  transfer_syntax_uid text NOT NULL,
  instance_number     integer,
  pixel_rows          integer,
  pixel_columns       integer,
  number_of_frames    integer,
  bits_allocated      integer,
  file_path           text NOT NULL,
  size_bytes          bigint NOT NULL CHECK (size_bytes > 0),
  sha256              text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  dataset_offset      bigint NOT NULL,
  pixel_offset        bigint,
  pixel_length        bigint,
  pixel_vr            text CHECK (pixel_vr IN ('OB', 'OW')),
  pixel_encapsulated  boolean,
  metadata            jsonb NOT NULL,
  source              jsonb NOT NULL,
  stored_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, sop_instance_uid),
  FOREIGN KEY (tenant_id, series_uid) REFERENCES dicom_series (tenant_id, series_uid)
);
CREATE INDEX dicom_instances_series ON dicom_instances (tenant_id, series_uid, instance_number);
CREATE INDEX dicom_instances_study ON dicom_instances (tenant_id, study_uid);

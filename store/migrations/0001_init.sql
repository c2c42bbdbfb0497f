-- 0001_init: tenants and accounts, devices, acquisitions, the audit log, robot availability and
-- the outbox. Released migrations are never edited (store/migrate.ts checks a SHA-256 of each
-- file): change the schema with a new file.
--
-- Conventions: ids chosen by people (tenants, devices) are short lower-case slugs; times are
-- timestamptz; the records a hospital may have to produce later (audit log, acquisition
-- transitions, robot availability) are append-only, enforced by trigger, TRUNCATE included.

CREATE FUNCTION eco3d_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'P0001';
END
$$;

CREATE TABLE tenants (
  id         text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  name       text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Login is {username, password} with no tenant, so usernames are unique platform-wide; they are
-- stored lower-case so that "Admin" and "admin" cannot be two accounts.
CREATE TABLE accounts (
  id            text PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants (id),
  username      text NOT NULL UNIQUE CHECK (username = lower(username) AND length(username) BETWEEN 1 AND 64),
  role          text NOT NULL CHECK (role IN ('platform-admin', 'tenant-admin', 'sonographer', 'bedside')),
  password_hash text NOT NULL,
  disabled      boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_tenant ON accounts (tenant_id);

-- id is a hash of the bearer token, never the token: a leaked table opens no session.
CREATE TABLE sessions (
  id         text PRIMARY KEY,
  account_id text NOT NULL REFERENCES accounts (id),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  CHECK (expires_at > created_at)
);
CREATE INDEX sessions_account ON sessions (account_id);

-- A device id is a label a hospital chooses ("sim-1"), so it is unique within its tenant only;
-- the event idempotency keys carry tenant + device for the same reason.
CREATE TABLE devices (
  tenant_id  text NOT NULL REFERENCES tenants (id),
  id         text NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  model      text NOT NULL,
  serial     text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);

-- The current state of each acquisition; its history is acquisition_transitions.
CREATE TABLE acquisitions (
  uid             text PRIMARY KEY,
  tenant_id       text NOT NULL,
  device_id       text NOT NULL,
  state           text NOT NULL CHECK (state IN ('idle', 'positioning', 'scanning', 'paused', 'completed', 'aborted')),
  sweep           jsonb,
  operator_id     text NOT NULL,
  started_at      timestamptz NOT NULL,
  ended_at        timestamptz,
  abort_reason    text CHECK (abort_reason IN ('operator', 'estop', 'fault', 'link-lost')),
  frames_acquired integer CHECK (frames_acquired >= 0),
  updated_at      timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
  CHECK ((state IN ('completed', 'aborted')) = (ended_at IS NOT NULL)),
  CHECK ((state = 'aborted') = (abort_reason IS NOT NULL))
);
CREATE INDEX acquisitions_tenant_started ON acquisitions (tenant_id, started_at DESC);

CREATE TABLE acquisition_transitions (
  id              bigserial PRIMARY KEY,
  acquisition_uid text NOT NULL REFERENCES acquisitions (uid),
  from_state      text NOT NULL CHECK (from_state IN ('idle', 'positioning', 'scanning', 'paused', 'completed', 'aborted')),
  to_state        text NOT NULL CHECK (to_state IN ('idle', 'positioning', 'scanning', 'paused', 'completed', 'aborted')),
  event           text NOT NULL,
  actor           text NOT NULL,
  at              timestamptz NOT NULL,
  detail          text,
  abort_reason    text CHECK (abort_reason IN ('operator', 'estop', 'fault', 'link-lost'))
);
CREATE INDEX acquisition_transitions_uid ON acquisition_transitions (acquisition_uid, id);
CREATE TRIGGER acquisition_transitions_append_only BEFORE UPDATE OR DELETE ON acquisition_transitions
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER acquisition_transitions_no_truncate BEFORE TRUNCATE ON acquisition_transitions
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- No foreign keys: an audit entry must never be lost to referential integrity (a failed login
-- names an account that does not exist). tenant_id is NULL for platform-wide actions.
CREATE TABLE audit_log (
  id        bigserial PRIMARY KEY,
  at        timestamptz NOT NULL DEFAULT now(),
  tenant_id text,
  actor     text NOT NULL,
  action    text NOT NULL,
  target    text,
  detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- Up/down changes of each robot, the evidence behind uptime credits.
CREATE TABLE robot_availability (
  id        bigserial PRIMARY KEY,
  tenant_id text NOT NULL,
  device_id text NOT NULL,
  up        boolean NOT NULL,
  reason    text NOT NULL DEFAULT '',
  at        timestamptz NOT NULL,
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);
CREATE INDEX robot_availability_device_at ON robot_availability (tenant_id, device_id, at);
CREATE TRIGGER robot_availability_append_only BEFORE UPDATE OR DELETE ON robot_availability
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER robot_availability_no_truncate BEFORE TRUNCATE ON robot_availability
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- The transactional outbox (ARCHITECTURE.md, "Exactly-once side effects"). A domain event is
-- written here in the transaction that caused it; store/outbox.ts delivers it to each consumer
-- at least once, and each consumer dedupes on idempotency_key.
CREATE TABLE outbox (
  id              bigserial PRIMARY KEY,
  event_type      text NOT NULL,
  idempotency_key text NOT NULL UNIQUE,
  payload         jsonb NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_event_type ON outbox (event_type, id);

-- The consumers the dispatchers have registered and what they subscribe to. An outbox insert
-- fans out to them in the same transaction, so a poll reads only its own due deliveries.
CREATE TABLE outbox_consumers (
  name          text PRIMARY KEY,
  event_types   text[] NOT NULL,
  registered_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (event, consumer). next_attempt_at NULL: due now, never tried. While a delivery
-- runs, next_attempt_at is its lease expiry, so a dispatcher that died mid-delivery is retried.
CREATE TABLE outbox_deliveries (
  outbox_id       bigint NOT NULL REFERENCES outbox (id),
  consumer        text NOT NULL REFERENCES outbox_consumers (name),
  delivered_at    timestamptz,
  attempts        integer NOT NULL DEFAULT 0,
  last_error      text,
  next_attempt_at timestamptz,
  PRIMARY KEY (outbox_id, consumer)
);
CREATE INDEX outbox_deliveries_due ON outbox_deliveries (consumer, next_attempt_at) WHERE delivered_at IS NULL;

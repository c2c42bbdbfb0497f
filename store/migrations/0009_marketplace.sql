-- 0009: the plugin marketplace (marketplace/): developers and their signing keys, plugins and
-- their versions through review, per-hospital enablement, OAuth2 clients, AIW-I work items with
-- every run attempt, and the revenue split of each plugin charge.
--
-- Money: a plugin's use (or a subscription month) is one `charge` in the hospital's ledger
-- (usage_ledger, 0008). Its split is booked here as two rows, developer and platform, that add up
-- to the charge to the cent (CHECK below, and the reconciliation test).

-- A developer organisation is a tenant of its own; its tenant-admins use the developer portal.
-- share_bps: the developer's share of each charge in basis points (7000 = 70 %), fixed per
-- developer when registered, changeable by the platform admin for future charges only.
CREATE TABLE marketplace_developers (
  tenant_id  text PRIMARY KEY REFERENCES tenants (id),
  share_bps  integer NOT NULL CHECK (share_bps BETWEEN 0 AND 10000),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Ed25519 public keys the developer signs packages with (raw 32 bytes). A revoked key verifies no
-- new submission; versions already signed with it stay as they are.
CREATE TABLE marketplace_developer_keys (
  id                  text PRIMARY KEY,
  developer_tenant_id text NOT NULL REFERENCES marketplace_developers (tenant_id),
  name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  public_key          bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
  created_by          text NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  revoked_at          timestamptz
);

-- A plugin id belongs to the developer who first submitted it.
CREATE TABLE marketplace_plugins (
  id                  text PRIMARY KEY,
  developer_tenant_id text NOT NULL REFERENCES marketplace_developers (tenant_id),
  created_at          timestamptz NOT NULL DEFAULT now()
);

-- One submitted version: its manifest, its package (by checksum, the bytes are a file), and its
-- way through submitted → validating → in-review → published (or validation-failed, rejected).
-- A version is submitted once: (plugin_id, version) is the key, a re-submission is refused.
CREATE TABLE marketplace_versions (
  plugin_id      text NOT NULL REFERENCES marketplace_plugins (id),
  version        text NOT NULL CHECK (length(version) BETWEEN 5 AND 256),
  manifest       jsonb NOT NULL CHECK (jsonb_typeof(manifest) = 'object'),
  package_sha256 text NOT NULL CHECK (package_sha256 ~ '^[0-9a-f]{64}$'),
  package_bytes  bigint NOT NULL CHECK (package_bytes > 0),
  key_id         text NOT NULL REFERENCES marketplace_developer_keys (id),
  status         text NOT NULL CHECK (status IN ('submitted', 'validating', 'validation-failed', 'in-review', 'published', 'rejected')),
  validation     jsonb,
  submitted_by   text NOT NULL,
  submitted_at   timestamptz NOT NULL DEFAULT now(),
  reviewed_by    text,
  review_note    text CHECK (length(review_note) <= 2000),
  reviewed_at    timestamptz,
  PRIMARY KEY (plugin_id, version),
  CHECK ((status IN ('published', 'rejected')) = (reviewed_at IS NOT NULL))
);
CREATE INDEX marketplace_versions_status ON marketplace_versions (status, submitted_at);

-- A hospital's enablement of one published version, with the scopes and price its admin saw and
-- accepted. At most one active per (tenant, plugin); a disabled one stays as history.
CREATE TABLE marketplace_enablements (
  id          text PRIMARY KEY,
  tenant_id   text NOT NULL REFERENCES tenants (id),
  plugin_id   text NOT NULL,
  version     text NOT NULL,
  scopes      jsonb NOT NULL CHECK (jsonb_typeof(scopes) = 'array'),
  pricing     jsonb NOT NULL CHECK (jsonb_typeof(pricing) = 'object'),
  enabled_by  text NOT NULL,
  enabled_at  timestamptz NOT NULL,
  disabled_by text,
  disabled_at timestamptz,
  FOREIGN KEY (plugin_id, version) REFERENCES marketplace_versions (plugin_id, version),
  CHECK ((disabled_at IS NULL) = (disabled_by IS NULL))
);
CREATE UNIQUE INDEX marketplace_enablements_active ON marketplace_enablements (tenant_id, plugin_id) WHERE disabled_at IS NULL;

-- OAuth2 client credentials of an enablement (RFC 6749 §4.4): the secret is stored as its hash.
CREATE TABLE marketplace_clients (
  client_id     text PRIMARY KEY,
  enablement_id text NOT NULL REFERENCES marketplace_enablements (id),
  secret_hash   text NOT NULL CHECK (length(secret_hash) >= 32),
  created_by    text NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  revoked_at    timestamptz
);

-- A token minted for a plugin (client credentials) names its enablement: it is usable only while
-- the enablement is active, and disabling revokes it.
ALTER TABLE api_tokens ADD COLUMN enablement_id text REFERENCES marketplace_enablements (id);
CREATE INDEX api_tokens_enablement ON api_tokens (enablement_id) WHERE enablement_id IS NOT NULL;

-- AIW-I work items (a UPS-like procedure step per completed acquisition and enabled analysis
-- plugin): SCHEDULED → IN PROGRESS → COMPLETED | CANCELED. A claim is a lease: a runner that dies
-- leaves an IN PROGRESS item whose lease runs out, and the next claim takes it again.
CREATE TABLE marketplace_work_items (
  id              text PRIMARY KEY,
  tenant_id       text NOT NULL REFERENCES tenants (id),
  enablement_id   text NOT NULL REFERENCES marketplace_enablements (id),
  plugin_id       text NOT NULL,
  version         text NOT NULL,
  acquisition_uid text NOT NULL,
  study_ref       text NOT NULL UNIQUE,
  state           text NOT NULL CHECK (state IN ('SCHEDULED', 'IN PROGRESS', 'COMPLETED', 'CANCELED')),
  claimed_by      text,
  lease_until     timestamptz,
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  outcome         jsonb,
  created_at      timestamptz NOT NULL,
  finished_at     timestamptz,
  UNIQUE (tenant_id, acquisition_uid, plugin_id),
  CHECK ((state IN ('COMPLETED', 'CANCELED')) = (finished_at IS NOT NULL))
);
CREATE INDEX marketplace_work_items_todo ON marketplace_work_items (created_at) WHERE state IN ('SCHEDULED', 'IN PROGRESS');
CREATE INDEX marketplace_work_items_tenant ON marketplace_work_items (tenant_id, created_at DESC);

-- Every run of a plugin process, failures included (shown to the hospital's admin and the developer).
CREATE TABLE marketplace_runs (
  id           bigserial PRIMARY KEY,
  work_item_id text REFERENCES marketplace_work_items (id),
  plugin_id    text NOT NULL,
  version      text NOT NULL,
  purpose      text NOT NULL CHECK (purpose IN ('work-item', 'validation')),
  status       text NOT NULL CHECK (status IN ('completed', 'failed')),
  reason       text,
  detail       text CHECK (length(detail) <= 4000),
  cpu_ms       integer NOT NULL,
  wall_ms      integer NOT NULL,
  peak_rss_mb  integer NOT NULL,
  at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX marketplace_runs_item ON marketplace_runs (work_item_id);
CREATE INDEX marketplace_runs_plugin ON marketplace_runs (plugin_id, at DESC);

-- The split of each plugin charge: one developer row and one platform row per ledger key.
CREATE TABLE marketplace_revenue (
  ledger_key          text NOT NULL,
  party               text NOT NULL CHECK (party IN ('developer', 'platform')),
  hospital_tenant_id  text NOT NULL REFERENCES tenants (id),
  developer_tenant_id text NOT NULL REFERENCES marketplace_developers (tenant_id),
  plugin_id           text NOT NULL REFERENCES marketplace_plugins (id),
  amount_cents        bigint NOT NULL CHECK (amount_cents >= 0),
  share_bps           integer NOT NULL CHECK (share_bps BETWEEN 0 AND 10000),
  occurred_at         timestamptz NOT NULL,
  PRIMARY KEY (ledger_key, party)
);
CREATE INDEX marketplace_revenue_developer ON marketplace_revenue (developer_tenant_id, occurred_at);
CREATE TRIGGER marketplace_revenue_append_only BEFORE UPDATE OR DELETE ON marketplace_revenue
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();

-- A developer's monthly payout statement, issued once for a closed month and never changed.
CREATE TABLE marketplace_payouts (
  developer_tenant_id text NOT NULL REFERENCES marketplace_developers (tenant_id),
  period              text NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
  total_cents         bigint NOT NULL CHECK (total_cents >= 0),
  statement           jsonb NOT NULL,
  issued_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (developer_tenant_id, period)
);
CREATE TRIGGER marketplace_payouts_immutable BEFORE UPDATE OR DELETE ON marketplace_payouts
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();

-- 0007: usage metering and invoicing (billing/, billing/PRICING.md).
--
-- The ledger is append-only (trigger, TRUNCATE included): a correction is a reversal entry that
-- points at the entry it cancels. It holds no patient data, only acquisition identifiers, so an
-- erasure request never has to touch it. An issued invoice is never changed either.

-- Per tenant: time zone, tax and the repeat-scan window (billing/contracts.ts TenantBilling).
CREATE TABLE billing_settings (
  tenant_id  text PRIMARY KEY REFERENCES tenants (id),
  settings   jsonb NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
  updated_by text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Contracts as validated by billing/contracts.ts. Overlap within a tenant and device is refused
-- by the code under the tenant's ledger lock; a contract that priced an issued invoice is frozen
-- (billing/ledger.ts), and every issued invoice also keeps the contracts it was rated with.
CREATE TABLE billing_contracts (
  id         text PRIMARY KEY,
  tenant_id  text NOT NULL,
  device_id  text NOT NULL,
  valid_from date NOT NULL,
  valid_to   date,
  contract   jsonb NOT NULL CHECK (jsonb_typeof(contract) = 'object'),
  created_by text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
  CHECK (valid_to IS NULL OR valid_to >= valid_from)
);
CREATE INDEX billing_contracts_tenant ON billing_contracts (tenant_id, device_id, valid_from);

-- One row per metered fact: a scan ('usage', billable or not and why), a clinical outcome that
-- earns a bonus ('outcome'), or the reversal of either ('reversal', pointing at it).
-- idempotency_key is derived from the fact (usage: tenant + device + acquisition UID), so a
-- duplicate, however late, meets the unique constraint and is answered with the original row.
CREATE TABLE usage_ledger (
  id              bigserial PRIMARY KEY,
  kind            text NOT NULL CHECK (kind IN ('usage', 'outcome', 'reversal')),
  idempotency_key text NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 512),
  tenant_id       text NOT NULL,
  device_id       text NOT NULL,
  acquisition_uid text NOT NULL CHECK (length(acquisition_uid) BETWEEN 1 AND 128),
  occurred_at     timestamptz NOT NULL,
  billable        boolean NOT NULL,
  -- Why a scan is not billable (aborted:estop, repeat-scan, ...) or why an entry was reversed.
  reason          text CHECK (length(reason) <= 500),
  outcome         text CHECK (length(outcome) BETWEEN 1 AND 128),
  reverses        bigint UNIQUE REFERENCES usage_ledger (id),
  -- 'local' (metered by this instance) or 'ingest' (sent by an edge device).
  source          text NOT NULL CHECK (source IN ('local', 'ingest', 'admin')),
  recorded_by     text NOT NULL,
  recorded_at     timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
  CHECK ((kind = 'reversal') = (reverses IS NOT NULL)),
  CHECK ((kind = 'outcome') = (outcome IS NOT NULL)),
  CHECK (kind <> 'usage' OR billable OR reason IS NOT NULL)
);
CREATE INDEX usage_ledger_tenant_time ON usage_ledger (tenant_id, occurred_at);
-- A tenant's highest id (the invoice watermark) and its id ranges (late usage): without it,
-- max(id) of one tenant walks the primary key through every other tenant's rows.
CREATE INDEX usage_ledger_tenant_id ON usage_ledger (tenant_id, id);
CREATE INDEX usage_ledger_acquisition ON usage_ledger (tenant_id, acquisition_uid);
CREATE TRIGGER usage_ledger_append_only BEFORE UPDATE OR DELETE ON usage_ledger
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER usage_ledger_no_truncate BEFORE TRUNCATE ON usage_ledger
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- Issued invoices, never changed. ledger_watermark is the highest ledger id the invoice saw:
-- with the previous invoice's watermark it fixes exactly which entries it billed, so a re-rating
-- from the ledger reproduces it to the cent (billing/invoices.ts).
CREATE TABLE invoices (
  tenant_id          text NOT NULL REFERENCES tenants (id),
  period             text NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),
  number             text NOT NULL UNIQUE,
  ledger_watermark   bigint NOT NULL CHECK (ledger_watermark >= 0),
  previous_watermark bigint NOT NULL CHECK (previous_watermark >= 0 AND previous_watermark <= ledger_watermark),
  -- The tenant settings and contracts it was rated with.
  inputs             jsonb NOT NULL,
  invoice            jsonb NOT NULL,
  total_cents        bigint NOT NULL,
  sha256             text NOT NULL CHECK (length(sha256) = 64),
  issued_by          text NOT NULL,
  issued_at          timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, period)
);
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION eco3d_reject_change();
CREATE TRIGGER invoices_no_truncate BEFORE TRUNCATE ON invoices
  FOR EACH STATEMENT EXECUTE FUNCTION eco3d_reject_change();

-- A token may be bound to one device: usage ingestion then accepts that device's events only.
ALTER TABLE api_tokens ADD COLUMN device_id text;
ALTER TABLE api_tokens ADD FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id);

// The usage ledger (migration 0007): every metered fact, once, forever.
//
// Exactly once: each entry's idempotency key is derived from the fact itself (a scan: tenant +
// device + acquisition UID), and the database's unique constraint is what dedupes, at any time,
// with no window. A duplicate is answered with the original row. Entries are never changed: a
// correction is a reversal entry. Writers hold the tenant's ledger lock shared; an invoice issue
// holds it exclusive, so the watermark it reads (the highest id) has no uncommitted entry below
// it (billing/invoices.ts).
import { Eco3dError } from '../protocols/errors.ts';
import { type AbortReason, type AcquisitionAbortedV1, type AcquisitionCompletedV1, ABORT_REASONS } from '../protocols/events.ts';
import { insertOutboxEvent, type Database, type Queryable } from '../store/index.ts';
import { parseTenantBilling, type TenantBilling } from './contracts.ts';

export type LedgerKind = 'usage' | 'outcome' | 'reversal' | 'charge';
export type LedgerSource = 'local' | 'ingest' | 'admin';

export interface LedgerEntry {
  readonly id: number;
  readonly kind: LedgerKind;
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
  readonly billable: boolean;
  readonly reason?: string;
  readonly outcome?: string;
  /** A reversal: the id of the entry it cancels. */
  readonly reverses?: number;
  readonly source: LedgerSource;
  readonly recordedBy: string;
  readonly recordedAtMs: number;
}

/** A scan or an outcome to record (reversals go through reverseEntry). */
export interface NewLedgerEntry {
  readonly kind: 'usage' | 'outcome';
  readonly tenantId: string;
  readonly deviceId: string;
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
  readonly billable: boolean;
  readonly reason?: string;
  readonly outcome?: string;
  readonly source: LedgerSource;
  readonly recordedBy: string;
}

/** The key of a scan: one per acquisition, whatever path it arrives by (local, edge, retry). */
export const usageKey = (tenantId: string, deviceId: string, acquisitionUid: string): string => `usage/${tenantId}/${deviceId}/${acquisitionUid}`;
/** One outcome of a kind per acquisition (a second "avoided CT" for one scan is the same fact). */
export const outcomeKey = (tenantId: string, deviceId: string, acquisitionUid: string, outcome: string): string =>
  `outcome/${tenantId}/${deviceId}/${acquisitionUid}/${outcome}`;
export const reversalKey = (key: string): string => `reversal/${key}`;

export interface LedgerRow {
  id: number;
  kind: LedgerKind;
  idempotency_key: string;
  tenant_id: string;
  device_id: string;
  acquisition_uid: string;
  occurred_ms: number;
  billable: boolean;
  reason: string | null;
  outcome: string | null;
  reverses: number | null;
  source: LedgerSource;
  recorded_by: string;
  recorded_ms: number;
}

// Epoch ms straight from SQL: a million rows parse far faster as int8 than as Date objects.
export const LEDGER_COLUMNS = `id, kind, idempotency_key, tenant_id, device_id, acquisition_uid,
  (extract(epoch FROM occurred_at) * 1000)::int8 AS occurred_ms, billable, reason, outcome, reverses, source,
  recorded_by, (extract(epoch FROM recorded_at) * 1000)::int8 AS recorded_ms`;

export const toEntry = (r: LedgerRow): LedgerEntry => ({
  id: Number(r.id),
  kind: r.kind,
  idempotencyKey: r.idempotency_key,
  tenantId: r.tenant_id,
  deviceId: r.device_id,
  acquisitionUid: r.acquisition_uid,
  occurredAtMs: Number(r.occurred_ms),
  billable: r.billable,
  ...(r.reason === null ? {} : { reason: r.reason }),
  ...(r.outcome === null ? {} : { outcome: r.outcome }),
  ...(r.reverses === null ? {} : { reverses: Number(r.reverses) }),
  source: r.source,
  recordedBy: r.recorded_by,
  recordedAtMs: Number(r.recorded_ms),
});

/** Writers: shared. An invoice issue: exclusive (it then sees every entry below its watermark). */
export async function lockTenantLedger(tx: Queryable, tenantId: string, mode: 'shared' | 'exclusive'): Promise<void> {
  await tx.query(`SELECT ${mode === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock'}(hashtext('eco3d:ledger:' || $1))`, [tenantId]);
}

export const keyOf = (e: NewLedgerEntry): string =>
  e.kind === 'usage' ? usageKey(e.tenantId, e.deviceId, e.acquisitionUid) : outcomeKey(e.tenantId, e.deviceId, e.acquisitionUid, e.outcome ?? '');

export interface RecordResult {
  readonly status: 'created' | 'duplicate';
  /** The stored entry: for a duplicate, the original one (never the one just sent). */
  readonly entry: LedgerEntry;
}

/**
 * Appends entries of one tenant in the caller's transaction (the caller has validated them and
 * holds the tenant's ledger lock shared). One INSERT for the batch; duplicates (already stored,
 * or repeated within the batch) come back as the original rows, in input order.
 */
export async function appendEntries(tx: Queryable, entries: readonly NewLedgerEntry[]): Promise<RecordResult[]> {
  if (entries.length === 0) return [];
  const cols = {
    kind: [] as string[],
    key: [] as string[],
    tenant: [] as string[],
    device: [] as string[],
    acq: [] as string[],
    at: [] as string[],
    billable: [] as boolean[],
    reason: [] as (string | null)[],
    outcome: [] as (string | null)[],
    source: [] as string[],
    by: [] as string[],
  };
  const keys = entries.map(keyOf);
  entries.forEach((e, i) => {
    cols.kind.push(e.kind);
    cols.key.push(keys[i]!);
    cols.tenant.push(e.tenantId);
    cols.device.push(e.deviceId);
    cols.acq.push(e.acquisitionUid);
    cols.at.push(new Date(e.occurredAtMs).toISOString());
    cols.billable.push(e.billable);
    cols.reason.push(e.reason ?? null);
    cols.outcome.push(e.outcome ?? null);
    cols.source.push(e.source);
    cols.by.push(e.recordedBy);
  });
  // unnest keeps the statement one round trip whatever the batch size; ordinality keeps the
  // input order, so within a batch the first of two equal keys is the one stored.
  const created = await tx.query<LedgerRow>(
    `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, reason, outcome, source, recorded_by)
     SELECT kind, key, tenant, device, acq, at::timestamptz, billable, reason, outcome, source, by
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::text[], $9::text[], $10::text[], $11::text[])
       WITH ORDINALITY AS t(kind, key, tenant, device, acq, at, billable, reason, outcome, source, by, n)
     ORDER BY n
     ON CONFLICT (idempotency_key) DO NOTHING
     RETURNING ${LEDGER_COLUMNS}`,
    [cols.kind, cols.key, cols.tenant, cols.device, cols.acq, cols.at, cols.billable, cols.reason, cols.outcome, cols.source, cols.by],
  );
  const byKey = new Map<string, LedgerEntry>();
  const fresh = new Set<string>();
  for (const r of created) {
    byKey.set(r.idempotency_key, toEntry(r));
    fresh.add(r.idempotency_key);
  }
  const missing = [...new Set(keys.filter((k) => !byKey.has(k)))];
  if (missing.length > 0) {
    const old = await tx.query<LedgerRow>(`SELECT ${LEDGER_COLUMNS} FROM usage_ledger WHERE idempotency_key = ANY ($1::text[])`, [missing]);
    for (const r of old) byKey.set(r.idempotency_key, toEntry(r));
  }
  return keys.map((k) => {
    const entry = byKey.get(k);
    if (entry === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `ledger entry ${k} neither inserted nor found`);
    // The first occurrence in the batch is the one created; any later one is its duplicate.
    const status = fresh.delete(k) ? 'created' : 'duplicate';
    return { status, entry };
  });
}

export async function findEntry(q: Queryable, tenantId: string, key: string): Promise<LedgerEntry | undefined> {
  const r = (await q.query<LedgerRow>(`SELECT ${LEDGER_COLUMNS} FROM usage_ledger WHERE tenant_id = $1 AND idempotency_key = $2`, [tenantId, key]))[0];
  return r === undefined ? undefined : toEntry(r);
}

// ---------------------------------------------------------------------------------------------
// Settings

export const DEFAULT_TAX = { kind: 'rate', rateBps: 2200, label: 'IVA' } as const;

/** The tenant's billing settings; defaults (Europe/Rome, IVA 22 %, no repeat-scan rule) until set. */
export async function getBillingSettings(q: Queryable, tenantId: string): Promise<TenantBilling> {
  const r = (await q.query<{ settings: Record<string, unknown> }>('SELECT settings FROM billing_settings WHERE tenant_id = $1', [tenantId]))[0];
  return parseTenantBilling(r === undefined ? { tenantId, tax: DEFAULT_TAX } : { ...r.settings, tenantId });
}

export async function putBillingSettings(q: Queryable, tenantId: string, raw: unknown, by: string): Promise<TenantBilling> {
  const body = raw !== null && typeof raw === 'object' ? { ...(raw as Record<string, unknown>) } : raw;
  if (body !== null && typeof body === 'object' && 'tenantId' in body && body.tenantId !== tenantId) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `tenant.tenantId: ${String(body.tenantId)} is not ${tenantId}`, { details: { field: 'tenant.tenantId' } });
  }
  const settings = parseTenantBilling({ ...(body as object), tenantId });
  try {
    await q.query(
      `INSERT INTO billing_settings (tenant_id, settings, updated_by) VALUES ($1, $2::jsonb, $3)
       ON CONFLICT (tenant_id) DO UPDATE SET settings = EXCLUDED.settings, updated_by = EXCLUDED.updated_by, updated_at = now()`,
      [tenantId, JSON.stringify(settings), by],
    );
  } catch (err) {
    throw unknownTenantOr(err, tenantId);
  }
  return settings;
}

function unknownTenantOr(err: unknown, tenantId: string): unknown {
  if (typeof err === 'object' && err !== null && 'code' in err && err.code === '23503') {
    return new Eco3dError('ECO3D_ERR_UNKNOWN_TENANT', `tenant ${tenantId} does not exist`, { details: { tenantId } });
  }
  return err;
}

// ---------------------------------------------------------------------------------------------
// Metering an acquisition (the outbox consumer's work)

const isAbortReason = (r: string): r is AbortReason => (ABORT_REASONS as readonly string[]).includes(r);

/**
 * The ledger entry of a finished acquisition: a completed one is billable unless it repeats a
 * billable scan of the same patient within the tenant's window; an aborted one never is.
 */
export async function meterAcquisition(db: Database, event: AcquisitionCompletedV1 | AcquisitionAbortedV1): Promise<RecordResult> {
  const occurredAtMs = Date.parse(event.occurredAt);
  if (!Number.isFinite(occurredAtMs)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `event ${event.idempotencyKey}: occurredAt ${event.occurredAt} is not a time`);
  return db.transaction(async (tx) => {
    await lockTenantLedger(tx, event.tenantId, 'shared');
    const existing = await findEntry(tx, event.tenantId, usageKey(event.tenantId, event.deviceId, event.acquisitionUid));
    if (existing !== undefined) return { status: 'duplicate', entry: existing };
    let billable = true;
    let reason: string | undefined;
    if (event.type === 'AcquisitionAborted') {
      billable = false;
      reason = `aborted:${isAbortReason(event.reason) ? event.reason : 'unknown'}`;
    } else {
      const settings = await getBillingSettings(tx, event.tenantId);
      const earlier = settings.repeatScanWindowHours > 0 ? await billableScanOfSamePatient(tx, event, settings.repeatScanWindowHours, occurredAtMs) : undefined;
      if (earlier !== undefined) {
        billable = false;
        reason = `repeat-scan:${earlier}`;
      }
    }
    const [result] = await appendEntries(tx, [
      {
        kind: 'usage',
        tenantId: event.tenantId,
        deviceId: event.deviceId,
        acquisitionUid: event.acquisitionUid,
        occurredAtMs,
        billable,
        ...(reason === undefined ? {} : { reason }),
        source: 'local',
        recordedBy: 'system',
      },
    ]);
    if (result!.status === 'created') await announce(tx, result!.entry);
    return result!;
  });
}

/**
 * The acquisition UID of a billable, unreversed scan of the same patient (same tenant, same
 * patient id, through the exams) in [at − window, at), or undefined. The ledger itself holds no
 * patient data: the link is made here, at metering time, and only the reason is kept.
 */
async function billableScanOfSamePatient(tx: Queryable, event: AcquisitionCompletedV1, windowHours: number, atMs: number): Promise<string | undefined> {
  const rows = await tx.query<{ acquisition_uid: string }>(
    `SELECT u.acquisition_uid
     FROM acquisition_exams mine
     JOIN exams me ON me.id = mine.exam_id
     JOIN exams other ON other.tenant_id = me.tenant_id AND other.patient_id = me.patient_id
     JOIN acquisition_exams theirs ON theirs.exam_id = other.id
     JOIN usage_ledger u ON u.tenant_id = me.tenant_id AND u.acquisition_uid = theirs.acquisition_uid AND u.kind = 'usage'
     WHERE mine.acquisition_uid = $1 AND me.tenant_id = $2 AND theirs.acquisition_uid <> $1
       AND u.billable AND u.occurred_at >= $3::timestamptz AND u.occurred_at < $4::timestamptz
       AND NOT EXISTS (SELECT 1 FROM usage_ledger r WHERE r.reverses = u.id)
     ORDER BY u.occurred_at LIMIT 1`,
    [event.acquisitionUid, event.tenantId, new Date(atMs - windowHours * 3_600_000).toISOString(), new Date(atMs).toISOString()],
  );
  return rows[0]?.acquisition_uid;
}

/** A locally metered scan is announced on the outbox (the edge → cloud uplink forwards it). */
async function announce(tx: Queryable, e: LedgerEntry): Promise<void> {
  await insertOutboxEvent(tx, {
    type: 'UsageRecorded',
    version: 1,
    idempotencyKey: `UsageRecorded/${e.idempotencyKey}`,
    tenantId: e.tenantId,
    deviceId: e.deviceId,
    acquisitionUid: e.acquisitionUid,
    occurredAt: new Date(e.occurredAtMs).toISOString(),
    billable: e.billable,
    ...(e.reason === undefined ? {} : { reason: e.reason }),
  });
}

// ---------------------------------------------------------------------------------------------
// Corrections

/**
 * Reverses a usage or outcome entry: a new entry that cancels it (never an edit). Reversing twice
 * returns the first reversal. A reversal of an entry whose period is invoiced is billed in the
 * next invoice as an adjustment.
 */
export async function reverseEntry(db: Database, r: { tenantId: string; idempotencyKey: string; reason: string; by: string }): Promise<RecordResult> {
  const reason = r.reason.trim();
  if (reason.length < 1 || reason.length > 500) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'reason: 1 to 500 characters are required', { details: { field: 'reason' } });
  return db.transaction(async (tx) => {
    await lockTenantLedger(tx, r.tenantId, 'shared');
    const original = await findEntry(tx, r.tenantId, r.idempotencyKey);
    if (original === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no ledger entry ${r.idempotencyKey}`);
    if (original.kind === 'reversal') throw new Eco3dError('ECO3D_ERR_CONFLICT', `${r.idempotencyKey} is itself a reversal`);
    const rows = await tx.query<LedgerRow>(
      `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, reason, reverses, source, recorded_by)
       VALUES ('reversal', $1, $2, $3, $4, $5::timestamptz, false, $6, $7, 'admin', $8)
       ON CONFLICT DO NOTHING RETURNING ${LEDGER_COLUMNS}`,
      [reversalKey(original.idempotencyKey), r.tenantId, original.deviceId, original.acquisitionUid, new Date(original.occurredAtMs).toISOString(), reason, original.id, r.by],
    );
    if (rows[0] !== undefined) return { status: 'created', entry: toEntry(rows[0]) };
    const existing = await findEntry(tx, r.tenantId, reversalKey(original.idempotencyKey));
    if (existing === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `reversal of ${r.idempotencyKey} neither inserted nor found`);
    return { status: 'duplicate', entry: existing };
  });
}

// ---------------------------------------------------------------------------------------------
// Charges: priced items that are not scans (a dataset licence; a plugin's use)

export interface ChargeEntry {
  readonly id: number;
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly item: string;
  readonly description: string;
  readonly amountCents: number;
  readonly occurredAtMs: number;
  readonly recordedBy: string;
}

interface ChargeRow {
  id: number;
  idempotency_key: string;
  tenant_id: string;
  item: string;
  description: string;
  amount_cents: number;
  occurred_ms: number;
  recorded_by: string;
}

const CHARGE_COLUMNS = `id, idempotency_key, tenant_id, item, description, amount_cents, (extract(epoch FROM occurred_at) * 1000)::int8 AS occurred_ms, recorded_by`;

const toCharge = (r: ChargeRow): ChargeEntry => ({
  id: Number(r.id),
  idempotencyKey: r.idempotency_key,
  tenantId: r.tenant_id,
  item: r.item,
  description: r.description,
  amountCents: Number(r.amount_cents),
  occurredAtMs: Number(r.occurred_ms),
  recordedBy: r.recorded_by,
});

/**
 * Records a charge in the caller's transaction, exactly once per key (the key comes from the fact,
 * e.g. `lake-licence/<id>`): a re-send returns the stored entry, `created: false`. The amount is
 * whole cents, 0 included (a free licence is still a recorded, billable item).
 */
export async function recordCharge(
  tx: Queryable,
  c: { idempotencyKey: string; tenantId: string; item: string; description: string; amountCents: number; occurredAtMs: number; recordedBy: string },
): Promise<{ entry: ChargeEntry; created: boolean }> {
  if (!Number.isSafeInteger(c.amountCents) || c.amountCents < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `amountCents must be whole cents ≥ 0, got ${c.amountCents}`, { details: { field: 'amountCents' } });
  if ((await tx.query('SELECT 1 FROM tenants WHERE id = $1', [c.tenantId])).length === 0) throw new Eco3dError('ECO3D_ERR_UNKNOWN_TENANT', `no tenant ${c.tenantId}`);
  await lockTenantLedger(tx, c.tenantId, 'shared');
  const rows = await tx.query<ChargeRow>(
    `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, occurred_at, billable, amount_cents, item, description, source, recorded_by)
     VALUES ('charge', $1, $2, $3::timestamptz, true, $4, $5, $6, 'local', $7)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING ${CHARGE_COLUMNS}`,
    [c.idempotencyKey, c.tenantId, new Date(c.occurredAtMs).toISOString(), c.amountCents, c.item, c.description, c.recordedBy],
  );
  if (rows[0] !== undefined) return { entry: toCharge(rows[0]), created: true };
  const old = (await tx.query<ChargeRow>(`SELECT ${CHARGE_COLUMNS} FROM usage_ledger WHERE idempotency_key = $1 AND kind = 'charge'`, [c.idempotencyKey]))[0];
  if (old === undefined || old.tenant_id !== c.tenantId) throw new Eco3dError('ECO3D_ERR_CONFLICT', `ledger key ${c.idempotencyKey} is taken by another entry`);
  return { entry: toCharge(old), created: false };
}

/** A tenant's charges in [fromMs, toMs), oldest first. */
export async function listCharges(q: Queryable, w: { tenantId: string; fromMs: number; toMs: number }): Promise<ChargeEntry[]> {
  const rows = await q.query<ChargeRow>(
    `SELECT ${CHARGE_COLUMNS} FROM usage_ledger WHERE tenant_id = $1 AND kind = 'charge' AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz ORDER BY id`,
    [w.tenantId, new Date(w.fromMs).toISOString(), new Date(w.toMs).toISOString()],
  );
  return rows.map(toCharge);
}

/** Newest first, for the admin's list (scans, outcomes, reversals; charges are listCharges'). */
export async function listEntries(q: Queryable, w: { tenantId: string; fromMs: number; toMs: number; limit: number }): Promise<LedgerEntry[]> {
  const rows = await q.query<LedgerRow>(
    `SELECT ${LEDGER_COLUMNS} FROM usage_ledger WHERE tenant_id = $1 AND kind <> 'charge' AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz
     ORDER BY id DESC LIMIT $4`,
    [w.tenantId, new Date(w.fromMs).toISOString(), new Date(w.toMs).toISOString(), Math.max(1, Math.min(10_000, Math.trunc(w.limit)))],
  );
  return rows.map(toEntry);
}

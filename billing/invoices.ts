// Invoices from the ledger: the open preview of a period, the issued (stored, immutable) invoice,
// and the re-rating that proves an issued invoice from the ledger to the cent.
//
// What an issued invoice billed is fixed by two ledger ids: its watermark W (the highest id when
// it was issued, read under the tenant's exclusive ledger lock, so no entry below W was still
// uncommitted) and the previous invoice's watermark W0. It billed:
// - its period's scans and outcomes with id ≤ W that no reversal ≤ W cancels;
// - for each earlier period, the entries that arrived (or were reversed) in (W0, W], as
//   adjustments: that period re-rated with them minus as it was billed (pricing.ts LateUsage).
// Invoices are issued in period order, so every entry is billed exactly once.
import { createHash } from 'node:crypto';
import { Eco3dError } from '../protocols/errors.ts';
import { type Database, type Queryable } from '../store/index.ts';
import { type Contract, type TenantBilling } from './contracts.ts';
import { issuedPeriods, listContracts } from './contract-store.ts';
import { getBillingSettings, LEDGER_COLUMNS, lockTenantLedger, toEntry, type LedgerEntry, type LedgerRow } from './ledger.ts';
import { nextPeriod, parsePeriod, type Period, periodBounds, periodOf } from './periods.ts';
import { rate, type AvailabilityChange, type Charge, type Invoice, type LateUsage, type OutcomeEvent, type UsageEvent } from './pricing.ts';

export interface RatingInputs {
  readonly tenant: TenantBilling;
  readonly contracts: readonly Contract[];
}

export interface IssuedInvoice {
  readonly tenantId: string;
  readonly period: Period;
  readonly number: string;
  readonly ledgerWatermark: number;
  readonly previousWatermark: number;
  readonly inputs: RatingInputs;
  readonly invoice: Invoice;
  /** SHA-256 of canonicalInvoiceJson(invoice). */
  readonly sha256: string;
  readonly issuedBy: string;
  readonly issuedAtMs: number;
}

/** What the API, the CLI and the exports show: an issued invoice, or the open period's preview. */
export interface InvoiceView {
  readonly invoice: Invoice;
  readonly status: 'open' | 'issued';
  readonly number?: string;
  readonly issuedAtMs?: number;
  readonly sha256?: string;
}

export const invoiceNumber = (tenantId: string, period: Period): string => `INV-${tenantId}-${period}`;

/** The bytes the hash is over: JSON of the invoice as rate() built it (its key order is fixed). */
export const canonicalInvoiceJson = (invoice: Invoice): string => JSON.stringify(invoice);
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');


const usageEvent = (e: LedgerEntry): UsageEvent => ({
  idempotencyKey: e.idempotencyKey,
  tenantId: e.tenantId,
  deviceId: e.deviceId,
  acquisitionUid: e.acquisitionUid,
  occurredAtMs: e.occurredAtMs,
  billable: e.billable,
});

async function entries(q: Queryable, sql: string, params: readonly unknown[]): Promise<LedgerEntry[]> {
  return (await q.query<LedgerRow>(`SELECT ${LEDGER_COLUMNS} FROM usage_ledger u WHERE ${sql} ORDER BY id`, params)).map((r) => toEntry(r));
}

/** Rates `period` of a tenant from the ledger as of watermark W, after the invoice at W0. */
export async function rateFromLedger(q: Queryable, inputs: RatingInputs, period: Period, watermark: number, previousWatermark: number): Promise<Invoice> {
  const tenantId = inputs.tenant.tenantId;
  const tz = inputs.tenant.timeZone;
  const { startMs, endMs } = periodBounds(period, tz);
  const iso = (ms: number): string => new Date(ms).toISOString();
  // Only what rate() reads: a third fewer columns to decode, and no LedgerEntry in between.
  const rows = await q.query<{
    id: number;
    kind: string;
    idempotency_key: string;
    device_id: string;
    acquisition_uid: string;
    occurred_ms: number;
    billable: boolean;
    outcome: string | null;
    item: string | null;
    description: string | null;
    amount_cents: number | null;
  }>(
    `SELECT id, kind, idempotency_key, device_id, acquisition_uid, (extract(epoch FROM occurred_at) * 1000)::int8 AS occurred_ms, billable, outcome, item, description, amount_cents
     FROM usage_ledger u
     WHERE tenant_id = $1 AND kind IN ('usage', 'outcome', 'charge') AND id <= $2 AND occurred_at >= $3::timestamptz AND occurred_at < $4::timestamptz
       AND NOT EXISTS (SELECT 1 FROM usage_ledger r WHERE r.reverses = u.id AND r.id <= $2)
     ORDER BY id`,
    [tenantId, watermark, iso(startMs), iso(endMs)],
  );
  const usage: UsageEvent[] = [];
  const outcomes: OutcomeEvent[] = [];
  const charges: Charge[] = [];
  for (const r of rows) {
    const occurredAtMs = Number(r.occurred_ms);
    if (r.kind === 'usage') usage.push({ idempotencyKey: r.idempotency_key, tenantId, deviceId: r.device_id, acquisitionUid: r.acquisition_uid, occurredAtMs, billable: r.billable });
    else if (r.kind === 'charge') charges.push({ idempotencyKey: r.idempotency_key, tenantId, item: r.item!, description: r.description!, amountCents: Number(r.amount_cents), occurredAtMs });
    else outcomes.push({ idempotencyKey: r.idempotency_key, tenantId, deviceId: r.device_id, outcome: r.outcome!, occurredAtMs });
  }
  // Every contract device's changes in one statement (was one per device): the last before the
  // period, then those in it; grouped by device in code-point order as before.
  const devices = [...new Set(inputs.contracts.map((c) => c.deviceId))].sort();
  const changes = await q.query<{ device_id: string; up: boolean; at_ms: number }>(
    `SELECT device_id, up, (extract(epoch FROM at) * 1000)::int8 AS at_ms FROM (
       (SELECT DISTINCT ON (device_id) id, device_id, up, at FROM robot_availability
        WHERE tenant_id = $1 AND device_id = ANY ($2::text[]) AND at < $3::timestamptz ORDER BY device_id, at DESC, id DESC)
       UNION ALL
       (SELECT id, device_id, up, at FROM robot_availability
        WHERE tenant_id = $1 AND device_id = ANY ($2::text[]) AND at >= $3::timestamptz AND at < $4::timestamptz)
     ) w ORDER BY at, id`,
    [tenantId, devices, iso(startMs), iso(endMs)],
  );
  const availability: AvailabilityChange[] = [];
  for (const deviceId of devices) for (const a of changes) if (a.device_id === deviceId) availability.push({ deviceId, up: a.up, atMs: Number(a.at_ms) });
  const late = await lateUsage(q, tenantId, tz, startMs, watermark, previousWatermark);
  return rate({ tenant: inputs.tenant, period, contracts: inputs.contracts, usage, outcomes, availability, late, charges });
}

/** Scans of earlier periods that arrived, or were reversed, in (W0, W]. */
async function lateUsage(q: Queryable, tenantId: string, tz: string, beforeMs: number, watermark: number, previousWatermark: number): Promise<LateUsage[]> {
  if (watermark <= previousWatermark) return [];
  const moved = await entries(
    q,
    `tenant_id = $1 AND id > $2 AND id <= $3 AND occurred_at < $4::timestamptz
     AND (kind = 'usage' OR (kind = 'reversal' AND (SELECT o.kind FROM usage_ledger o WHERE o.id = u.reverses) = 'usage'))`,
    [tenantId, previousWatermark, watermark, new Date(beforeMs).toISOString()],
  );
  const periods = [...new Set(moved.map((e) => periodOf(e.occurredAtMs, tz)))].sort();
  const out: LateUsage[] = [];
  for (const p of periods) {
    const { startMs, endMs } = periodBounds(p, tz);
    const all = await entries(q, `tenant_id = $1 AND id <= $2 AND occurred_at >= $3::timestamptz AND occurred_at < $4::timestamptz AND kind IN ('usage', 'reversal')`, [
      tenantId,
      watermark,
      new Date(startMs).toISOString(),
      new Date(endMs).toISOString(),
    ]);
    const reversalOf = new Map<number, LedgerEntry>();
    for (const e of all) if (e.kind === 'reversal') reversalOf.set(e.reverses!, e);
    const billed: LedgerEntry[] = [];
    const arrived: LedgerEntry[] = [];
    const reversedKeys: string[] = [];
    for (const e of all) {
      if (e.kind !== 'usage') continue;
      const r = reversalOf.get(e.id);
      if (e.id <= previousWatermark) {
        if (r !== undefined && r.id <= previousWatermark) continue; // reversed before it was ever billed again
        billed.push(e);
        if (r !== undefined) reversedKeys.push(e.idempotencyKey);
      } else if (r === undefined) {
        arrived.push(e);
      }
    }
    if (arrived.length === 0 && reversedKeys.length === 0) continue;
    out.push({ period: p, billedUsage: billed.map(usageEvent), lateUsage: arrived.map(usageEvent), reversedKeys });
  }
  return out;
}

interface InvoiceRow {
  tenant_id: string;
  period: string;
  number: string;
  ledger_watermark: number;
  previous_watermark: number;
  inputs: RatingInputs;
  invoice: Invoice;
  sha256: string;
  issued_by: string;
  issued_at: Date;
}

const toIssued = (r: InvoiceRow): IssuedInvoice => ({
  tenantId: r.tenant_id,
  period: r.period,
  number: r.number,
  ledgerWatermark: Number(r.ledger_watermark),
  previousWatermark: Number(r.previous_watermark),
  inputs: r.inputs,
  invoice: r.invoice,
  sha256: r.sha256,
  issuedBy: r.issued_by,
  issuedAtMs: r.issued_at.getTime(),
});

export async function getIssuedInvoice(q: Queryable, tenantId: string, period: Period): Promise<IssuedInvoice | undefined> {
  const r = (await q.query<InvoiceRow>('SELECT * FROM invoices WHERE tenant_id = $1 AND period = $2', [tenantId, period]))[0];
  return r === undefined ? undefined : toIssued(r);
}

export async function listIssuedInvoices(q: Queryable, tenantId: string | null, limit = 240): Promise<IssuedInvoice[]> {
  const rows = await q.query<InvoiceRow>(
    `SELECT * FROM invoices WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY period DESC, tenant_id LIMIT $2`,
    [tenantId, Math.max(1, Math.min(10_000, Math.trunc(limit)))],
  );
  return rows.map(toIssued);
}

async function lastIssued(q: Queryable, tenantId: string): Promise<{ period: Period; watermark: number } | undefined> {
  const r = (await q.query<{ period: string; ledger_watermark: number }>('SELECT period, ledger_watermark FROM invoices WHERE tenant_id = $1 ORDER BY period DESC LIMIT 1', [tenantId]))[0];
  return r === undefined ? undefined : { period: r.period, watermark: Number(r.ledger_watermark) };
}

async function currentWatermark(q: Queryable, tenantId: string): Promise<number> {
  const r = (await q.query<{ w: number | null }>('SELECT max(id) AS w FROM usage_ledger WHERE tenant_id = $1', [tenantId]))[0];
  return Number(r?.w ?? 0);
}

async function ratingInputs(q: Queryable, tenantId: string): Promise<RatingInputs> {
  return { tenant: await getBillingSettings(q, tenantId), contracts: await listContracts(q, tenantId) };
}

async function requireTenant(q: Queryable, tenantId: string): Promise<void> {
  if ((await q.query('SELECT 1 FROM tenants WHERE id = $1', [tenantId])).length === 0) {
    throw new Eco3dError('ECO3D_ERR_UNKNOWN_TENANT', `tenant ${tenantId} does not exist`, { details: { tenantId } });
  }
}

/** The issued invoice of the period, or the preview of what it would be if issued now. */
export async function viewInvoice(q: Queryable, tenantId: string, period: Period): Promise<InvoiceView> {
  parsePeriod(period);
  await requireTenant(q, tenantId);
  const issued = await getIssuedInvoice(q, tenantId, period);
  if (issued !== undefined) return { invoice: issued.invoice, status: 'issued', number: issued.number, issuedAtMs: issued.issuedAtMs, sha256: issued.sha256 };
  const last = await lastIssued(q, tenantId);
  // A period before the last issued one that was never issued: its usage goes into the next
  // invoice as adjustments; a preview of it alone prices it from zero.
  const previous = last !== undefined && last.period < period ? last.watermark : 0;
  const invoice = await rateFromLedger(q, await ratingInputs(q, tenantId), period, await currentWatermark(q, tenantId), previous);
  return { invoice, status: 'open' };
}

/**
 * Issues the tenant's invoice for a period that has ended. Idempotent: issuing it again returns
 * the stored invoice unchanged. Refused (CONFLICT) for a period not over, one before the last
 * issued, or while an earlier period with usage has no invoice (issue that one first).
 */
export async function issueInvoice(db: Database, tenantId: string, period: Period, by: string, nowMs: number): Promise<{ issued: IssuedInvoice; created: boolean }> {
  parsePeriod(period);
  return db.transaction(async (tx) => {
    await requireTenant(tx, tenantId);
    const existing = await getIssuedInvoice(tx, tenantId, period);
    if (existing !== undefined) return { issued: existing, created: false };
    await lockTenantLedger(tx, tenantId, 'exclusive');
    const again = await getIssuedInvoice(tx, tenantId, period);
    if (again !== undefined) return { issued: again, created: false };
    const inputs = await ratingInputs(tx, tenantId);
    const tz = inputs.tenant.timeZone;
    const { startMs, endMs } = periodBounds(period, tz);
    if (nowMs < endMs) throw new Eco3dError('ECO3D_ERR_CONFLICT', `period ${period} is not over (it ends ${new Date(endMs).toISOString()}, ${tz})`, { details: { period } });
    const last = await lastIssued(tx, tenantId);
    if (last !== undefined && last.period > period) {
      throw new Eco3dError('ECO3D_ERR_PERIOD_CLOSED', `${period} comes before ${last.period}, already issued: its late usage is billed in the next invoice`, { details: { period } });
    }
    const unissued = await tx.query<{ first_ms: number }>(
      `SELECT (extract(epoch FROM min(occurred_at)) * 1000)::int8 AS first_ms FROM usage_ledger
       WHERE tenant_id = $1 AND occurred_at < $2::timestamptz AND id > $3 AND kind <> 'reversal'`,
      [tenantId, new Date(startMs).toISOString(), last?.watermark ?? 0],
    );
    const firstMs = unissued[0]?.first_ms;
    if (last === undefined && firstMs !== null && firstMs !== undefined) {
      const p = periodOf(Number(firstMs), tz);
      throw new Eco3dError('ECO3D_ERR_CONFLICT', `period ${p} has usage and no invoice: issue ${p} first`, { details: { period: p } });
    }
    if (last !== undefined) {
      // Every period between the last issued one and this one must be issued first when it has usage.
      const gap = await tx.query<{ first_ms: number }>(
        `SELECT (extract(epoch FROM min(occurred_at)) * 1000)::int8 AS first_ms FROM usage_ledger
         WHERE tenant_id = $1 AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz AND kind <> 'reversal'`,
        [tenantId, new Date(periodBounds(nextPeriod(last.period), tz).startMs).toISOString(), new Date(startMs).toISOString()],
      );
      const gapMs = gap[0]?.first_ms;
      if (gapMs !== null && gapMs !== undefined) {
        const p = periodOf(Number(gapMs), tz);
        throw new Eco3dError('ECO3D_ERR_CONFLICT', `period ${p} has usage and no invoice: issue ${p} first`, { details: { period: p } });
      }
    }
    const watermark = await currentWatermark(tx, tenantId);
    const previousWatermark = last?.watermark ?? 0;
    const invoice = await rateFromLedger(tx, inputs, period, watermark, previousWatermark);
    const hash = sha256(canonicalInvoiceJson(invoice));
    const number = invoiceNumber(tenantId, period);
    const rows = await tx.query<InvoiceRow>(
      `INSERT INTO invoices (tenant_id, period, number, ledger_watermark, previous_watermark, inputs, invoice, total_cents, sha256, issued_by, issued_at)
       VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11::timestamptz) RETURNING *`,
      [tenantId, period, number, watermark, previousWatermark, JSON.stringify(inputs), canonicalInvoiceJson(invoice), invoice.totals.totalCents, hash, by, new Date(nowMs).toISOString()],
    );
    return { issued: toIssued(rows[0]!), created: true };
  });
}

/**
 * Re-rates an issued invoice from the ledger with the inputs it was issued with. Equal to the
 * cent (and byte for byte) unless the ledger was tampered with: `matches` says which.
 */
export async function rerateIssued(q: Queryable, tenantId: string, period: Period): Promise<{ issued: IssuedInvoice; rerated: Invoice; matches: boolean }> {
  const issued = await getIssuedInvoice(q, tenantId, period);
  if (issued === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no issued invoice of ${tenantId} for ${period}`);
  const rerated = await rateFromLedger(q, issued.inputs, period, issued.ledgerWatermark, issued.previousWatermark);
  return { issued, rerated, matches: sha256(canonicalInvoiceJson(rerated)) === issued.sha256 };
}

/** Tenants to invoice for a period: those with a contract or with ledger entries. */
export async function billableTenants(q: Queryable): Promise<string[]> {
  const rows = await q.query<{ tenant_id: string }>(
    `SELECT tenant_id FROM billing_contracts UNION SELECT DISTINCT tenant_id FROM usage_ledger ORDER BY tenant_id`,
  );
  return rows.map((r) => r.tenant_id);
}

export { issuedPeriods };

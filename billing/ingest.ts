// Usage ingestion: batches of scans and outcomes from edge devices (or a tenant admin), with the
// same idempotency as local metering (billing/ledger.ts). A batch is all or nothing: one bad
// event and nothing is written, and every bad event is listed (index, field, code).
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import type { Database } from '../store/index.ts';
import { issuedPeriods } from './contract-store.ts';
import { appendEntries, getBillingSettings, keyOf, lockTenantLedger, type NewLedgerEntry, type RecordResult } from './ledger.ts';
import { periodOf } from './periods.ts';

/** The scope of a device's token for POST /api/billing/usage-events (bound to one device). */
export const USAGE_WRITE_SCOPE = 'usage:write';
export const MAX_BATCH_EVENTS = 10_000;
/** Device clocks drift; further ahead than this an event is refused, not stored. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000;
/** Older than this is not a usage event but a data error (Eco3D did not exist). */
export const MIN_EVENT_MS = Date.UTC(2020, 0, 1);

const EVENT_FIELDS = new Set(['type', 'tenantId', 'deviceId', 'acquisitionUid', 'occurredAt', 'occurredAtMs', 'billable', 'reason', 'quantity', 'outcome']);
const ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const UID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const OUTCOME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const REASON = /^[a-z][a-z0-9-]*(:[A-Za-z0-9._-]+)?$/;

export interface IngestIssue {
  readonly index: number;
  readonly field: string;
  readonly code: ErrorCode;
  readonly message: string;
}

/** Who sends: the tenant always comes from the credentials; a device token binds the device. */
export interface IngestPrincipal {
  readonly tenantId: string;
  /** Set for a device-scoped token: only this device's events are accepted. */
  readonly deviceId?: string;
  /** For the ledger's recorded_by. */
  readonly actor: string;
}

/**
 * Validates a batch (`{ events: [...] }`) into ledger entries, or throws BAD_REQUEST listing
 * every bad event (details.issues). Fields: `type` scan|outcome, `deviceId`, `acquisitionUid`,
 * `occurredAt` (ISO 8601 with zone) or `occurredAtMs`, for a scan `billable` (default true) with
 * `reason` when false, and optional `quantity` (must be 1: one acquisition is one scan);
 * for an outcome `outcome` (e.g. `avoided-ct`). An optional `tenantId` must be the sender's.
 */
export function parseBatch(raw: unknown, who: IngestPrincipal, nowMs: number): NewLedgerEntry[] {
  const body = raw as { events?: unknown } | null;
  if (body === null || typeof body !== 'object' || !Array.isArray(body.events)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the body is { "events": [ ... ] }', { details: { field: 'events' } });
  }
  const events = body.events as unknown[];
  if (events.length === 0 || events.length > MAX_BATCH_EVENTS) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a batch has 1 to ${MAX_BATCH_EVENTS} events, got ${events.length}`, { details: { field: 'events' } });
  }
  const issues: IngestIssue[] = [];
  const out: NewLedgerEntry[] = [];
  events.forEach((e, index) => {
    const issue = (field: string, message: string, code: ErrorCode = 'ECO3D_ERR_BAD_REQUEST'): void => {
      issues.push({ index, field: `events[${index}].${field}`, code, message });
    };
    if (e === null || typeof e !== 'object' || Array.isArray(e)) return issue('', 'an event object is required');
    const ev = e as Record<string, unknown>;
    for (const k of Object.keys(ev)) if (!EVENT_FIELDS.has(k)) issue(k, 'unknown field');
    if (ev.tenantId !== undefined && ev.tenantId !== who.tenantId) {
      issue('tenantId', `the credentials are of tenant ${who.tenantId}, not ${JSON.stringify(ev.tenantId)}`, 'ECO3D_ERR_FORBIDDEN');
    }
    const type = ev.type;
    if (type !== 'scan' && type !== 'outcome') return issue('type', 'scan or outcome');
    if (typeof ev.deviceId !== 'string' || !ID.test(ev.deviceId)) return issue('deviceId', 'a device id (letters, digits, . _ -, at most 63)');
    if (who.deviceId !== undefined && ev.deviceId !== who.deviceId) {
      return issue('deviceId', `this token is for device ${who.deviceId}, not ${ev.deviceId}`, 'ECO3D_ERR_FORBIDDEN');
    }
    if (typeof ev.acquisitionUid !== 'string' || !UID.test(ev.acquisitionUid)) return issue('acquisitionUid', 'an acquisition UID (at most 128 characters)');
    const atMs = occurredMs(ev, issue);
    if (atMs === undefined) return;
    if (atMs > nowMs + MAX_CLOCK_SKEW_MS) return issue('occurredAt', `${new Date(atMs).toISOString()} is in the future (more than ${MAX_CLOCK_SKEW_MS / 60_000} min ahead of ${new Date(nowMs).toISOString()})`);
    if (atMs < MIN_EVENT_MS) return issue('occurredAt', `${new Date(atMs).toISOString()} is before ${new Date(MIN_EVENT_MS).toISOString()}`);
    const base = { tenantId: who.tenantId, deviceId: ev.deviceId, acquisitionUid: ev.acquisitionUid, occurredAtMs: atMs, source: 'ingest' as const, recordedBy: who.actor };
    if (type === 'scan') {
      if (ev.outcome !== undefined) return issue('outcome', 'only an outcome event has one');
      if (ev.quantity !== undefined) {
        if (typeof ev.quantity !== 'number' || !Number.isFinite(ev.quantity)) return issue('quantity', `not a finite number: ${typeof ev.quantity === 'number' ? String(ev.quantity) : JSON.stringify(ev.quantity)}`, 'ECO3D_ERR_NOT_FINITE');
        if (ev.quantity !== 1) return issue('quantity', `one acquisition is one scan: quantity must be 1, got ${ev.quantity}`);
      }
      const billable = ev.billable ?? true;
      if (typeof billable !== 'boolean') return issue('billable', 'a boolean is required');
      const reason = ev.reason;
      if (!billable && (typeof reason !== 'string' || !REASON.test(reason) || reason.length > 200)) {
        return issue('reason', 'a scan that is not billable says why (e.g. aborted:estop, repeat-scan)');
      }
      if (billable && reason !== undefined) return issue('reason', 'only a scan that is not billable has a reason');
      out.push({ ...base, kind: 'usage', billable, ...(billable ? {} : { reason: reason as string }) });
    } else {
      if (typeof ev.outcome !== 'string' || !OUTCOME.test(ev.outcome)) return issue('outcome', 'an outcome code, lower-case (e.g. avoided-ct)');
      for (const f of ['billable', 'reason', 'quantity'] as const) if (ev[f] !== undefined) return issue(f, 'an outcome event has no such field');
      out.push({ ...base, kind: 'outcome', billable: true, outcome: ev.outcome });
    }
  });
  if (issues.length > 0) {
    const first = issues[0]!;
    // One code for the answer: FORBIDDEN wins (the credentials do not cover it), else the first.
    const code = issues.some((i) => i.code === 'ECO3D_ERR_FORBIDDEN') ? 'ECO3D_ERR_FORBIDDEN' : first.code;
    throw new Eco3dError(code, `${issues.length} of ${events.length} events refused, nothing stored; first: ${first.field}: ${first.message}`, {
      details: { issues: issues.slice(0, 100), refused: issues.length },
    });
  }
  return out;
}

function occurredMs(ev: Record<string, unknown>, issue: (field: string, message: string, code?: ErrorCode) => void): number | undefined {
  if (ev.occurredAt !== undefined && ev.occurredAtMs !== undefined) return void issue('occurredAt', 'give occurredAt or occurredAtMs, not both');
  if (typeof ev.occurredAtMs === 'number') {
    if (!Number.isFinite(ev.occurredAtMs)) return void issue('occurredAtMs', `not a finite number: ${ev.occurredAtMs}`, 'ECO3D_ERR_NOT_FINITE');
    if (!Number.isSafeInteger(ev.occurredAtMs)) return void issue('occurredAtMs', 'whole milliseconds are required');
    return ev.occurredAtMs;
  }
  // With an explicit zone: a local time would be read in the server's zone, silently.
  if (typeof ev.occurredAt === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(ev.occurredAt)) {
    const ms = Date.parse(ev.occurredAt);
    if (Number.isFinite(ms)) return ms;
  }
  return void issue('occurredAt', 'an ISO 8601 time with its zone (…Z or ±hh:mm), or occurredAtMs');
}

export interface IngestResult {
  readonly created: number;
  readonly duplicates: number;
  readonly results: readonly RecordResult[];
}

/**
 * Stores a validated batch of one tenant: unknown devices are UNKNOWN_DEVICE, an outcome inside
 * an invoiced period is PERIOD_CLOSED (bonuses are not re-rated), and nothing is written then.
 */
export async function ingestBatch(db: Database, who: IngestPrincipal, entries: readonly NewLedgerEntry[]): Promise<IngestResult> {
  const devices = [...new Set(entries.map((e) => e.deviceId))];
  return db.transaction(async (tx) => {
    await lockTenantLedger(tx, who.tenantId, 'shared');
    const tenant = await tx.query('SELECT 1 FROM tenants WHERE id = $1', [who.tenantId]);
    if (tenant.length === 0) throw new Eco3dError('ECO3D_ERR_UNKNOWN_TENANT', `tenant ${who.tenantId} does not exist`);
    const known = new Set((await tx.query<{ id: string }>('SELECT id FROM devices WHERE tenant_id = $1 AND id = ANY ($2::text[])', [who.tenantId, devices])).map((r) => r.id));
    const unknown = devices.filter((d) => !known.has(d));
    if (unknown.length > 0) {
      throw new Eco3dError('ECO3D_ERR_UNKNOWN_DEVICE', `device ${unknown.join(', ')} is not registered in tenant ${who.tenantId}; nothing stored`, { details: { devices: unknown } });
    }
    if (entries.some((e) => e.kind === 'outcome')) {
      const closed = new Set(await issuedPeriods(tx, who.tenantId));
      const { timeZone } = await getBillingSettings(tx, who.tenantId);
      const inClosed = entries.filter((e) => e.kind === 'outcome' && closed.has(periodOf(e.occurredAtMs, timeZone))).map(keyOf);
      // A re-send of an outcome stored before the invoice is a duplicate, not a late change.
      const stored = new Set(
        inClosed.length === 0 ? [] : (await tx.query<{ k: string }>('SELECT idempotency_key AS k FROM usage_ledger WHERE idempotency_key = ANY ($1::text[])', [inClosed])).map((r) => r.k),
      );
      const late = entries.findIndex((e) => e.kind === 'outcome' && closed.has(periodOf(e.occurredAtMs, timeZone)) && !stored.has(keyOf(e)));
      if (late >= 0) {
        const e = entries[late]!;
        throw new Eco3dError('ECO3D_ERR_PERIOD_CLOSED', `events[${late}]: outcome ${e.outcome ?? ''} falls in ${periodOf(e.occurredAtMs, timeZone)}, already invoiced; nothing stored`, {
          details: { field: `events[${late}].occurredAt` },
        });
      }
    }
    const results = await appendEntries(tx, entries);
    const created = results.filter((r) => r.status === 'created').length;
    return { created, duplicates: results.length - created, results };
  });
}

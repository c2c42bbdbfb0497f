// Plugin money (issue 8, "Money"). A plugin's use, or a month of its subscription, is one charge
// in the hospital's billing ledger at the plugin's price. The same transaction books its split:
// a developer row and a platform row that add up to the charge to the cent. The developer gets
// floor(amount × shareBps / 10000), the platform the rest, so no cent is created or lost by
// rounding (the table's rows are append-only; reconcile() checks the sums).
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from '../store/index.ts';

/** billing/'s recordCharge, passed in (marketplace/ does not import billing/). */
export type RecordCharge = (
  tx: Queryable,
  c: { idempotencyKey: string; tenantId: string; item: string; description: string; amountCents: number; occurredAtMs: number; recordedBy: string },
) => Promise<{ entry: { amountCents: number; occurredAtMs: number }; created: boolean }>;

export const SYSTEM_ACTOR = 'eco3d-marketplace';

/** The split of `amountCents` at `shareBps`: whole cents, developer + platform = amount. */
export function splitCents(amountCents: number, shareBps: number): { developerCents: number; platformCents: number } {
  if (!Number.isSafeInteger(amountCents) || amountCents < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `amount must be whole cents ≥ 0, got ${amountCents}`);
  if (!Number.isInteger(shareBps) || shareBps < 0 || shareBps > 10000) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `share must be 0..10000 basis points, got ${shareBps}`);
  // BigInt: amount × bps can pass 2^53 for the largest amounts the ledger accepts.
  const developerCents = Number((BigInt(amountCents) * BigInt(shareBps)) / 10000n);
  return { developerCents, platformCents: amountCents - developerCents };
}

/** "2026-11" for a time (UTC). */
export const periodOf = (ms: number): string => new Date(ms).toISOString().slice(0, 7);
export const periodRange = (period: string): { fromMs: number; toMs: number } => {
  const m = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(period);
  if (m === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a period is YYYY-MM, got ${JSON.stringify(period)}`);
  const y = Number(m[1]);
  const mo = Number(m[2]) - 1;
  return { fromMs: Date.UTC(y, mo, 1), toMs: Date.UTC(y, mo + 1, 1) };
};

interface ChargeFact {
  readonly idempotencyKey: string;
  readonly hospitalTenantId: string;
  readonly pluginId: string;
  readonly version: string;
  readonly amountCents: number;
  readonly description: string;
  readonly occurredAtMs: number;
}

/**
 * Books one plugin charge and its split, in the caller's transaction, exactly once per key. A
 * re-send changes nothing and answers `created: false`.
 */
export async function bookPluginCharge(tx: Queryable, recordCharge: RecordCharge, c: ChargeFact): Promise<{ created: boolean; developerCents: number; platformCents: number }> {
  const dev = (
    await tx.query<{ developer_tenant_id: string; share_bps: number }>(
      'SELECT p.developer_tenant_id, d.share_bps FROM marketplace_plugins p JOIN marketplace_developers d ON d.tenant_id = p.developer_tenant_id WHERE p.id = $1',
      [c.pluginId],
    )
  )[0];
  if (dev === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no plugin ${c.pluginId}`);
  const charged = await recordCharge(tx, {
    idempotencyKey: c.idempotencyKey,
    tenantId: c.hospitalTenantId,
    item: `plugin:${c.pluginId}`,
    description: c.description,
    amountCents: c.amountCents,
    occurredAtMs: c.occurredAtMs,
    recordedBy: SYSTEM_ACTOR,
  });
  // The split of what the ledger holds (a re-send's amount is the first one's).
  const { developerCents, platformCents } = splitCents(charged.entry.amountCents, dev.share_bps);
  const at = new Date(charged.entry.occurredAtMs).toISOString();
  const inserted = await tx.query(
    `INSERT INTO marketplace_revenue (ledger_key, party, hospital_tenant_id, developer_tenant_id, plugin_id, amount_cents, share_bps, occurred_at)
     VALUES ($1, 'developer', $2, $3, $4, $5, $7, $8::timestamptz), ($1, 'platform', $2, $3, $4, $6, $7, $8::timestamptz)
     ON CONFLICT (ledger_key, party) DO NOTHING RETURNING 1`,
    [c.idempotencyKey, c.hospitalTenantId, dev.developer_tenant_id, c.pluginId, developerCents, platformCents, dev.share_bps, at],
  );
  return { created: charged.created || inserted.length > 0, developerCents, platformCents };
}

export const useChargeKey = (workItemId: string): string => `plugin-use/${workItemId}`;
export const subscriptionChargeKey = (tenantId: string, pluginId: string, period: string): string => `plugin-sub/${tenantId}/${pluginId}/${period}`;

/** A per-use plugin's charge for one completed work item. Free (0) uses are booked too. */
export function bookUse(tx: Queryable, recordCharge: RecordCharge, u: { workItemId: string; hospitalTenantId: string; pluginId: string; version: string; name: string; amountCents: number; occurredAtMs: number }) {
  return bookPluginCharge(tx, recordCharge, {
    idempotencyKey: useChargeKey(u.workItemId),
    hospitalTenantId: u.hospitalTenantId,
    pluginId: u.pluginId,
    version: u.version,
    amountCents: u.amountCents,
    description: `${u.name} ${u.version}: analysis (work item ${u.workItemId})`,
    occurredAtMs: u.occurredAtMs,
  });
}

/**
 * Charges every active subscription for the month of `nowMs` that is not charged yet (a month
 * started is a month due: enabling mid-month pays that month). Idempotent: run it at enablement
 * and on the runner's periodic tick.
 */
export async function meterSubscriptions(db: Database, recordCharge: RecordCharge, nowMs: number, only?: { tenantId: string; pluginId: string }): Promise<number> {
  const period = periodOf(nowMs);
  const active = await db.query<{ tenant_id: string; plugin_id: string; version: string; pricing: { model: string; monthlyAmountCents?: number }; name: string }>(
    `SELECT e.tenant_id, e.plugin_id, e.version, e.pricing, v.manifest->>'name' AS name FROM marketplace_enablements e
     JOIN marketplace_versions v ON v.plugin_id = e.plugin_id AND v.version = e.version
     WHERE e.disabled_at IS NULL AND e.pricing->>'model' = 'subscription' AND ($1::text IS NULL OR (e.tenant_id = $1 AND e.plugin_id = $2))
       AND NOT EXISTS (SELECT 1 FROM usage_ledger l WHERE l.idempotency_key = 'plugin-sub/' || e.tenant_id || '/' || e.plugin_id || '/' || $3)`,
    [only?.tenantId ?? null, only?.pluginId ?? null, period],
  );
  // (Months already charged are left out above: bookPluginCharge would find them anyway, at the
  // cost of a transaction each.)
  let charged = 0;
  for (const e of active) {
    const r = await db.transaction((tx) =>
      bookPluginCharge(tx, recordCharge, {
        idempotencyKey: subscriptionChargeKey(e.tenant_id, e.plugin_id, period),
        hospitalTenantId: e.tenant_id,
        pluginId: e.plugin_id,
        version: e.version,
        amountCents: e.pricing.monthlyAmountCents ?? 0,
        description: `${e.name}: subscription ${period}`,
        occurredAtMs: nowMs,
      }),
    );
    if (r.created) charged++;
  }
  return charged;
}

export interface Reconciliation {
  readonly hospitalCents: number;
  readonly developerCents: number;
  readonly platformCents: number;
  /** Ledger keys whose split does not add up to the charge (or has no split): empty when all is well. */
  readonly mismatches: readonly { key: string; chargedCents: number; splitCents: number }[];
}

/** Hospital plugin charges against the split, over [fromMs, toMs): they must be equal, key by key. */
export async function reconcile(q: Queryable, w: { fromMs: number; toMs: number }): Promise<Reconciliation> {
  const rows = await q.query<{ key: string; charged: string | number | null; developer: string | number | null; platform: string | number | null }>(
    `WITH charges AS (
       SELECT idempotency_key AS key, amount_cents FROM usage_ledger
       WHERE kind = 'charge' AND item LIKE 'plugin:%' AND occurred_at >= $1::timestamptz AND occurred_at < $2::timestamptz),
     splits AS (
       SELECT ledger_key AS key, sum(amount_cents) FILTER (WHERE party = 'developer') AS developer, sum(amount_cents) FILTER (WHERE party = 'platform') AS platform
       FROM marketplace_revenue WHERE occurred_at >= $1::timestamptz AND occurred_at < $2::timestamptz GROUP BY ledger_key)
     SELECT coalesce(c.key, s.key) AS key, c.amount_cents AS charged, s.developer, s.platform FROM charges c FULL JOIN splits s ON s.key = c.key`,
    [new Date(w.fromMs).toISOString(), new Date(w.toMs).toISOString()],
  );
  let hospitalCents = 0;
  let developerCents = 0;
  let platformCents = 0;
  const mismatches: { key: string; chargedCents: number; splitCents: number }[] = [];
  for (const r of rows) {
    const c = Number(r.charged ?? 0);
    const d = Number(r.developer ?? 0);
    const p = Number(r.platform ?? 0);
    hospitalCents += c;
    developerCents += d;
    platformCents += p;
    if (r.charged === null || r.developer === null || r.platform === null || c !== d + p) mismatches.push({ key: r.key, chargedCents: c, splitCents: d + p });
  }
  return { hospitalCents, developerCents, platformCents, mismatches };
}

export interface PayoutLine {
  readonly pluginId: string;
  readonly hospitalTenantId: string;
  readonly charges: number;
  readonly grossCents: number;
  readonly developerCents: number;
  readonly shareBps: number;
}
export interface PayoutStatement {
  readonly developerTenantId: string;
  readonly period: string;
  readonly lines: readonly PayoutLine[];
  readonly grossCents: number;
  readonly totalCents: number;
  readonly issuedAtMs?: number;
}

async function computeStatement(q: Queryable, developerTenantId: string, period: string): Promise<PayoutStatement> {
  const { fromMs, toMs } = periodRange(period);
  const rows = await q.query<{ plugin_id: string; hospital_tenant_id: string; share_bps: number; charges: string | number; gross: string | number; developer: string | number }>(
    `SELECT plugin_id, hospital_tenant_id, share_bps, count(DISTINCT ledger_key) AS charges, sum(amount_cents) AS gross,
            sum(amount_cents) FILTER (WHERE party = 'developer') AS developer
     FROM marketplace_revenue WHERE developer_tenant_id = $1 AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz
     GROUP BY plugin_id, hospital_tenant_id, share_bps ORDER BY plugin_id, hospital_tenant_id, share_bps`,
    [developerTenantId, new Date(fromMs).toISOString(), new Date(toMs).toISOString()],
  );
  const lines = rows.map((r) => ({
    pluginId: r.plugin_id,
    hospitalTenantId: r.hospital_tenant_id,
    charges: Number(r.charges),
    grossCents: Number(r.gross),
    developerCents: Number(r.developer ?? 0),
    shareBps: r.share_bps,
  }));
  return {
    developerTenantId,
    period,
    lines,
    grossCents: lines.reduce((s, l) => s + l.grossCents, 0),
    totalCents: lines.reduce((s, l) => s + l.developerCents, 0),
  };
}

/**
 * Issues the payout statements of every developer for every closed month not issued yet (up to
 * `nowMs`'s month, excluded). Issued statements never change. Returns how many were issued.
 */
export async function issuePayouts(db: Database, nowMs: number): Promise<number> {
  const current = periodOf(nowMs);
  const due = await db.query<{ developer_tenant_id: string; period: string }>(
    `SELECT DISTINCT r.developer_tenant_id, to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') AS period FROM marketplace_revenue r
     WHERE to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') < $1
       AND NOT EXISTS (SELECT 1 FROM marketplace_payouts p WHERE p.developer_tenant_id = r.developer_tenant_id AND p.period = to_char(r.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'))`,
    [current],
  );
  let issued = 0;
  for (const d of due) {
    const s = await computeStatement(db, d.developer_tenant_id, d.period);
    const r = await db.query(
      'INSERT INTO marketplace_payouts (developer_tenant_id, period, total_cents, statement, issued_at) VALUES ($1, $2, $3, $4::jsonb, $5::timestamptz) ON CONFLICT DO NOTHING RETURNING 1',
      [d.developer_tenant_id, d.period, s.totalCents, JSON.stringify(s), new Date(nowMs).toISOString()],
    );
    issued += r.length;
  }
  return issued;
}

export async function listPayouts(q: Queryable, developerTenantId: string): Promise<{ period: string; totalCents: number; issuedAtMs: number }[]> {
  const rows = await q.query<{ period: string; total_cents: string | number; issued_ms: string | number }>(
    'SELECT period, total_cents, (extract(epoch FROM issued_at) * 1000)::int8 AS issued_ms FROM marketplace_payouts WHERE developer_tenant_id = $1 ORDER BY period DESC',
    [developerTenantId],
  );
  return rows.map((r) => ({ period: r.period, totalCents: Number(r.total_cents), issuedAtMs: Number(r.issued_ms) }));
}

/** An issued statement, or (for the open month) the running figures, marked by the absence of issuedAtMs. */
export async function payoutStatement(q: Queryable, developerTenantId: string, period: string): Promise<PayoutStatement> {
  periodRange(period);
  const r = (
    await q.query<{ statement: PayoutStatement; issued_ms: string | number }>(
      'SELECT statement, (extract(epoch FROM issued_at) * 1000)::int8 AS issued_ms FROM marketplace_payouts WHERE developer_tenant_id = $1 AND period = $2',
      [developerTenantId, period],
    )
  )[0];
  if (r !== undefined) return { ...r.statement, issuedAtMs: Number(r.issued_ms) };
  return computeStatement(q, developerTenantId, period);
}

/** The statement as CSV (one line per plugin and hospital, then the total). */
export function payoutCsv(s: PayoutStatement): string {
  const esc = (v: string | number): string => (typeof v === 'number' ? String(v) : /[",\n]/.test(v) ? `"${v.replaceAll('"', '""')}"` : v);
  const eur = (c: number): string => (c / 100).toFixed(2);
  const lines = ['period,plugin,hospital,charges,gross,share_percent,developer_amount'];
  for (const l of s.lines) lines.push([s.period, l.pluginId, l.hospitalTenantId, l.charges, eur(l.grossCents), (l.shareBps / 100).toFixed(2), eur(l.developerCents)].map(esc).join(','));
  lines.push([s.period, 'TOTAL', '', s.lines.reduce((n, l) => n + l.charges, 0), eur(s.grossCents), '', eur(s.totalCents)].map(esc).join(','));
  return `${lines.join('\n')}\n`;
}

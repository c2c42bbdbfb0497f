// Helpers shared by the billing benchmarks (billing-ingest, billing-invoice): the PostgreSQL URL,
// a seeded random generator, cleanup on failure or Ctrl-C, and a Database wrapper that times
// every statement, so that a figure can be split into SQL and JavaScript.
import { performance } from 'node:perf_hooks';
import { parseContract, parseTenantBilling, type ContractInput } from '../billing/contracts.ts';
import { periodBounds } from '../billing/periods.ts';
import type { Database, Queryable } from '../store/index.ts';

/** The bench database when DATABASE_URL is unset (trust auth on this machine). */
export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * DATABASE_URL, or the default written into process.env: test/harness.ts and store/testing.ts
 * both read it from there.
 */
export function usePostgres(): string {
  if (process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === '') process.env.DATABASE_URL = DEFAULT_DATABASE_URL;
  return process.env.DATABASE_URL;
}

/** mulberry32: the same events in every run, so runs compare. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `main` with a list of cleanups that run in reverse order however it ends: normally, by
 * an error (then the exit code is 1), or by SIGINT/SIGTERM. A fresh schema must never outlive
 * the bench.
 */
export async function withCleanup(main: (onCleanup: (fn: () => Promise<void>) => void) => Promise<void>): Promise<void> {
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanAll = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (err) {
          console.error(`# cleanup failed: ${(err as Error).message}`);
        }
      }
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`# ${signal}: cleaning up`);
    void cleanAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await main((fn) => cleanups.push(fn));
  } catch (err) {
    console.error(`# FAILED: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  } finally {
    await cleanAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Milliseconds spent in the database (the wait for the answer, rows parsed), by kind of statement. */
export interface SqlTimes {
  readMs: number;
  writeMs: number;
  statements: number;
  rows: number;
  /** Per statement text (whitespace folded): calls, ms, rows. */
  readonly bySql: Map<string, { calls: number; ms: number; rows: number }>;
}

export const newSqlTimes = (): SqlTimes => ({ readMs: 0, writeMs: 0, statements: 0, rows: 0, bySql: new Map() });

/** The statements that took longest, one line each, for stderr. */
export function slowestStatements(times: SqlTimes, n: number): string[] {
  return [...times.bySql.entries()]
    .sort((a, b) => b[1].ms - a[1].ms)
    .slice(0, n)
    .map(([sql, s]) => `${(s.ms / 1000).toFixed(2)} s in ${s.calls} calls (${s.rows} rows): ${sql.length > 160 ? `${sql.slice(0, 160)}…` : sql}`);
}

const isWrite = (sql: string): boolean => /^\s*(INSERT|UPDATE|DELETE)\b/i.test(sql);

function timedQueryable(q: Queryable, times: SqlTimes): Queryable {
  return {
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      const t0 = performance.now();
      const rows = await q.query<T>(sql, params);
      const ms = performance.now() - t0;
      if (isWrite(sql)) times.writeMs += ms;
      else times.readMs += ms;
      times.statements++;
      times.rows += rows.length;
      const key = sql.replace(/\s+/g, ' ').trim();
      const per = times.bySql.get(key) ?? { calls: 0, ms: 0, rows: 0 };
      per.calls++;
      per.ms += ms;
      per.rows += rows.length;
      times.bySql.set(key, per);
      return rows;
    },
    exec: (script) => q.exec(script),
  };
}

/** The same database, timing each statement into `times` (transactions' BEGIN/COMMIT are not counted). */
export function timedDatabase(db: Database, times: SqlTimes): Database {
  const direct = timedQueryable(db, times);
  return {
    get kind() {
      return db.kind;
    },
    get closed() {
      return db.closed;
    },
    query: direct.query.bind(direct),
    exec: direct.exec.bind(direct),
    transaction: (fn) => db.transaction((tx) => fn(timedQueryable(tx, times))),
    close: () => db.close(),
  };
}

export const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

// ---------------------------------------------------------------------------------------------
// The invoice run's month: tenants, contracts and a ledger, seeded with SQL

export const INVOICE_PERIOD = '2026-10';
const TZ = 'Europe/Rome';
const UID_PREFIX = '1.2.826.0.1.3680043.10.543';
const NOT_BILLABLE_EVERY = 40;
const REVERSED = [7, 8, 9];
const TIERS = [
  { upTo: 200, unitPriceCents: 3000 },
  { upTo: 600, unitPriceCents: 2500 },
  { upTo: null, unitPriceCents: 2000 },
];

export interface TenantSeed {
  readonly id: string;
  readonly n: number;
  readonly devices: number;
  readonly settings: unknown;
  readonly contracts: ContractInput[];
  /** Risk-sharing: hours each robot is down on 10 October (SLA credits). */
  readonly downHours?: number;
  readonly outcomes: boolean;
}

/** Tenant n's contracts and settings; ten profiles in turn. */
function profile(n: number): TenantSeed {
  const id = `bench-t${String(n).padStart(5, '0')}`;
  const c = (deviceId: string, model: ContractInput['model'], validFrom = '2026-01-01', validTo: string | null = null, suffix = ''): ContractInput => ({
    id: `c-${id}-${deviceId}${suffix}`,
    tenantId: id,
    deviceId,
    validFrom,
    validTo,
    model,
  });
  const tax = n % 7 === 0 ? { kind: 'exempt', reason: 'art. 10 DPR 633/72' } : { kind: 'rate', rateBps: n % 3 === 0 ? 1000 : 2200, label: 'IVA' };
  const settings = parseTenantBilling({ tenantId: id, timeZone: TZ, tax });
  const base = { id, n, settings, outcomes: false };
  const risk = (forecastScans: number): ContractInput['model'] => ({
    kind: 'risk-sharing',
    unitPriceCents: 2000,
    forecastScans,
    bandScans: 50,
    shareBelowBps: 5000,
    shareAboveBps: 4000,
    outcomeBonuses: [{ outcome: 'avoided-ct', bonusCents: 5000 }],
    slaCredits: [
      { belowBps: 9900, creditBps: 500 },
      { belowBps: 9500, creditBps: 1000 },
    ],
  });
  switch (n % 10) {
    case 0:
      return { ...base, devices: 1, contracts: [c('robot-1', { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2000 } })] };
    case 1:
      return { ...base, devices: 2, contracts: ['robot-1', 'robot-2'].map((d) => c(d, { kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: TIERS } })) };
    case 2:
      return { ...base, devices: 1, contracts: [c('robot-1', { kind: 'pay-per-scan', pricing: { scheme: 'volume', tiers: TIERS } })] };
    case 3:
      return { ...base, devices: 1, contracts: [c('robot-1', { kind: 'lease', monthlyFeeCents: 400_000, includedScans: 800, overageUnitPriceCents: 1500 })] };
    case 4:
      return { ...base, devices: 1, contracts: [c('robot-1', { kind: 'commitment', pricing: { scheme: 'flat', unitPriceCents: 2000 }, minimumScans: 1200 })] };
    case 5:
      return { ...base, devices: 2, contracts: ['robot-1', 'robot-2'].map((d) => c(d, { kind: 'commitment', pricing: { scheme: 'graduated', tiers: TIERS }, minimumScans: 500 })) };
    case 6:
      return { ...base, devices: 1, outcomes: true, downHours: n % 60, contracts: [c('robot-1', risk(800 + (n % 5) * 100))] };
    case 7:
      return { ...base, devices: 2, outcomes: true, downHours: (n * 7) % 60, contracts: ['robot-1', 'robot-2'].map((d) => c(d, risk(600))) };
    case 8:
      return {
        ...base,
        devices: 1,
        contracts: [
          c('robot-1', {
            kind: 'consortium',
            parties: [
              { partyId: 'clinic-a', name: 'Clinica A' },
              { partyId: 'clinic-b', name: 'Clinica B' },
              { partyId: 'clinic-c', name: 'Clinica C' },
            ],
            weekdays: { mon: 'clinic-a', tue: 'clinic-b', wed: 'clinic-c', thu: 'clinic-a', fri: 'clinic-b', sat: 'clinic-c', sun: 'clinic-a' },
            overrides: [{ date: '2026-10-12', partyId: 'clinic-c' }],
            monthlyFeeCents: 100_000,
            pricing: { scheme: 'graduated', tiers: TIERS },
          }),
        ],
      };
    default:
      return {
        ...base,
        devices: 2,
        contracts: [
          c('robot-1', { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2200 } }, '2026-01-01', '2026-10-14', '-a'),
          c('robot-1', { kind: 'lease', monthlyFeeCents: 300_000, includedScans: 400, overageUnitPriceCents: 1200 }, '2026-10-15', null, '-b'),
          c('robot-2', { kind: 'pay-per-scan', pricing: { scheme: 'volume', tiers: TIERS } }),
        ],
      };
  }
}

export interface Seeded {
  readonly tenants: TenantSeed[];
  /** Usage entries not reversed: what the invoices must count. */
  readonly scans: number;
  readonly ledgerRows: number;
}

/**
 * Seeds `count` tenants and `eventsPerTenant` scans each into a migrated database, all in
 * INVOICE_INVOICE_PERIOD (Europe/Rome), with SQL (see billing-invoice.bench.ts for the mix).
 */
export async function seedInvoiceMonth(db: Database, count: number, eventsPerTenant: number): Promise<Seeded> {
  const EVENTS_PER_TENANT = eventsPerTenant;
  const tenants = Array.from({ length: count }, (_, i) => profile(i + 1));
  const ids = tenants.map((t) => t.id);
  await db.query(`INSERT INTO tenants (id, name) SELECT id, 'Bench hospital ' || id FROM unnest($1::text[]) AS id`, [ids]);
  const dev = tenants.flatMap((t) => Array.from({ length: t.devices }, (_, d) => [t.id, `robot-${d + 1}`] as const));
  await db.query(`INSERT INTO devices (tenant_id, id, model) SELECT t, d, 'bench' FROM unnest($1::text[], $2::text[]) AS x(t, d)`, [dev.map((x) => x[0]), dev.map((x) => x[1])]);
  await db.query(`INSERT INTO billing_settings (tenant_id, settings, updated_by) SELECT t, s::jsonb, 'bench' FROM unnest($1::text[], $2::text[]) AS x(t, s)`, [
    ids,
    tenants.map((t) => JSON.stringify(t.settings)),
  ]);
  // Validated as putContract would, and stored as it stores them (defaults applied).
  const contracts = tenants.flatMap((t) => t.contracts.map((c) => parseContract(c)));
  await db.query(
    `INSERT INTO billing_contracts (id, tenant_id, device_id, valid_from, valid_to, contract, created_by)
     SELECT id, t, d, f::date, v::date, c::jsonb, 'bench' FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS x(id, t, d, f, v, c)`,
    [contracts.map((c) => c.id), contracts.map((c) => c.tenantId), contracts.map((c) => c.deviceId), contracts.map((c) => c.validFrom), contracts.map((c) => c.validTo), contracts.map((c) => JSON.stringify(c))],
  );

  // Scan i of tenant n at start + (i − 1) × step + a per-tenant offset under a quarter step; its
  // outcome (if any) a quarter step later: everything stays inside the month.
  const { startMs, endMs } = periodBounds(INVOICE_PERIOD, TZ);
  const step = Math.floor((endMs - startMs) / EVENTS_PER_TENANT);
  const at = (i: string, n: string, extra = '0'): string => `timestamptz 'epoch' + ((${startMs}::int8 + (${i} - 1) * ${step}::int8 + (${n} % 100) * ${Math.floor(step / 400)}::int8 + ${extra}) * interval '1 millisecond')`;
  const CHUNK = 50;
  for (let k = 0; k < tenants.length; k += CHUNK) {
    const part = tenants.slice(k, k + CHUNK);
    await db.query(
      `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, reason, source, recorded_by)
       SELECT 'usage', 'usage/' || t.id || '/' || x.d || '/' || x.uid, t.id, x.d, x.uid, ${at('i', 't.n')},
              i % ${NOT_BILLABLE_EVERY} <> 0, CASE WHEN i % ${NOT_BILLABLE_EVERY} = 0 THEN 'aborted:estop' END, 'ingest', 'bench-seed'
       FROM unnest($1::text[], $2::int[], $3::int[]) AS t(id, n, ndev)
       CROSS JOIN generate_series(1, $4::int) AS i
       CROSS JOIN LATERAL (SELECT 'robot-' || (1 + i % t.ndev) AS d, '${UID_PREFIX}.' || t.n || '.' || i AS uid) x
       ORDER BY t.n, i`,
      [part.map((t) => t.id), part.map((t) => t.n), part.map((t) => t.devices), EVENTS_PER_TENANT],
    );
  }
  const risky = tenants.filter((t) => t.outcomes);
  // One outcome per 50 scans (scans 49, 100, 149, 200…: both robots of a two-robot tenant get
  // some): mostly avoided CTs (a bonus), every 4th an outcome no contract pays for.
  await db.query(
    `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, outcome, source, recorded_by)
     SELECT 'outcome', 'outcome/' || t.id || '/' || x.d || '/' || x.uid || '/' || x.o, t.id, x.d, x.uid, ${at('i', 't.n', String(Math.floor(step / 4)))}, true, x.o, 'ingest', 'bench-seed'
     FROM unnest($1::text[], $2::int[], $3::int[]) AS t(id, n, ndev)
     CROSS JOIN generate_series(50, $4::int, 50) AS j
     CROSS JOIN LATERAL (SELECT j - (j / 50) % 2 AS i) ii
     CROSS JOIN LATERAL (SELECT 'robot-' || (1 + i % t.ndev) AS d, '${UID_PREFIX}.' || t.n || '.' || i AS uid,
                                CASE WHEN j % 200 = 0 THEN 'unpaid-outcome' ELSE 'avoided-ct' END AS o) x`,
    [risky.map((t) => t.id), risky.map((t) => t.n), risky.map((t) => t.devices), EVENTS_PER_TENANT],
  );
  const down = risky.flatMap((t) => Array.from({ length: t.devices }, (_, d) => ({ t: t.id, d: `robot-${d + 1}`, hours: t.downHours ?? 0 })));
  const downAt = Date.UTC(2026, 9, 10, 8);
  await db.query(
    `INSERT INTO robot_availability (tenant_id, device_id, up, reason, at)
     SELECT t, d, false, 'fault', $4::timestamptz FROM unnest($1::text[], $2::text[], $3::int[]) AS x(t, d, h)
     UNION ALL
     SELECT t, d, true, 'reconnected', $4::timestamptz + h * interval '1 hour' FROM unnest($1::text[], $2::text[], $3::int[]) AS x(t, d, h)`,
    [down.map((x) => x.t), down.map((x) => x.d), down.map((x) => x.hours), new Date(downAt).toISOString()],
  );
  const reversing = tenants.filter((t) => t.n % 5 === 0).flatMap((t) => REVERSED.filter((i) => i <= EVENTS_PER_TENANT).map((i) => [t.id, `${UID_PREFIX}.${t.n}.${i}`] as const));
  await db.query(
    `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, reason, reverses, source, recorded_by)
     SELECT 'reversal', 'reversal/' || u.idempotency_key, u.tenant_id, u.device_id, u.acquisition_uid, u.occurred_at, false, 'bench: a test scan billed by mistake', u.id, 'admin', 'bench-seed'
     FROM unnest($1::text[], $2::text[]) AS x(t, uid) JOIN usage_ledger u ON u.tenant_id = x.t AND u.acquisition_uid = x.uid AND u.kind = 'usage'`,
    [reversing.map((x) => x[0]), reversing.map((x) => x[1])],
  );
  for (const table of ['usage_ledger', 'billing_contracts', 'billing_settings', 'robot_availability', 'devices', 'tenants']) await db.exec(`VACUUM ANALYZE ${table}`);
  const [row] = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM usage_ledger');
  return { tenants, scans: count * EVENTS_PER_TENANT - reversing.length, ledgerRows: Number(row?.n) };
}


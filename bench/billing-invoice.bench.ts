// The month's invoice run: runInvoices (billing/routes.ts) for 1,000 tenants and 1,000,000 scans
// of October 2026 (Europe/Rome), on PostgreSQL (the goal: ≤ 10 s) and on PGlite.
//
// Each engine gets a fresh, migrated database (store/testing.ts: a new PostgreSQL schema on
// DATABASE_URL, dropped at the end, or a new PGlite directory), seeded with SQL, not through the
// API: tenants, devices, settings, contracts, then EVENTS_PER_TENANT scans per tenant spread over
// the month (1 in 40 not billable: aborted:estop), outcome events for the risk-sharing tenants,
// robot downtime for their SLA credits, and 3 reversals in every 5th tenant. Then VACUUM ANALYZE
// (what autovacuum does after a bulk load), and the timed call. The contracts cycle over ten
// profiles (see `profile`): pay-per-scan flat / graduated / volume, lease, commitment (with and
// without a true-up), risk-sharing (one and two robots, bonuses, SLA credits), consortium, and a
// robot whose contract changes mid-month (flat until the 14th, a prorated lease from the 15th).
//
// Checked (exit 1 otherwise): every tenant issued, none failed; the invoices count every scan
// that was not reversed; 20 tenants (of every profile) re-rate to the same hash.
//
// Figures: the run's seconds and scans/s per engine and size, and where the time goes: waiting
// for SQL reads, for the INSERTs of the invoices, and the rest (JavaScript: rows to entries,
// rate(), the invoice's JSON and hash). Sizes: BILLING_INVOICE_TENANTS × _EVENTS_PER_TENANT
// (default 1000 × 1000); PGlite runs BILLING_INVOICE_PGLITE_TENANTS (default the same);
// BILLING_INVOICE_ENGINES=postgres skips PGlite.
import { performance } from 'node:perf_hooks';
import { parseContract, parseTenantBilling, type ContractInput } from '../billing/contracts.ts';
import { rerateIssued } from '../billing/invoices.ts';
import { periodBounds } from '../billing/periods.ts';
import { runInvoices } from '../billing/routes.ts';
import { migrate, type Database, type DatabaseKind } from '../store/index.ts';
import { createTestStorage } from '../store/testing.ts';
import { round, timedDatabase, usePostgres, withCleanup, type SqlTimes } from './billing-fixtures.ts';
import { bench } from './stats.ts';

const PERIOD = '2026-10';
const TZ = 'Europe/Rome';
const NOW_MS = Date.UTC(2026, 10, 5, 9);
const EVENTS_PER_TENANT = Number(process.env.BILLING_INVOICE_EVENTS_PER_TENANT ?? 1000);
const TENANTS: Record<DatabaseKind, number> = {
  postgres: Number(process.env.BILLING_INVOICE_TENANTS ?? 1000),
  pglite: Number(process.env.BILLING_INVOICE_PGLITE_TENANTS ?? process.env.BILLING_INVOICE_TENANTS ?? 1000),
};
const ENGINES = (process.env.BILLING_INVOICE_ENGINES ?? 'postgres,pglite').split(',') as DatabaseKind[];
const UID_PREFIX = '1.2.826.0.1.3680043.10.543';
const NOT_BILLABLE_EVERY = 40;
const REVERSED = [7, 8, 9];
const TIERS = [
  { upTo: 200, unitPriceCents: 3000 },
  { upTo: 600, unitPriceCents: 2500 },
  { upTo: null, unitPriceCents: 2000 },
];

interface TenantSeed {
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
  const risk = (forecastScans: number) =>
    ({
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
    }) as const;
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

interface Seeded {
  readonly tenants: TenantSeed[];
  /** Usage entries not reversed: what the invoices must count. */
  readonly scans: number;
  readonly ledgerRows: number;
}

async function seed(db: Database, count: number): Promise<Seeded> {
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
  const { startMs, endMs } = periodBounds(PERIOD, TZ);
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
  // One outcome per 50 scans: mostly avoided CTs (a bonus), some an outcome no contract pays.
  await db.query(
    `INSERT INTO usage_ledger (kind, idempotency_key, tenant_id, device_id, acquisition_uid, occurred_at, billable, outcome, source, recorded_by)
     SELECT 'outcome', 'outcome/' || t.id || '/' || x.d || '/' || x.uid || '/' || x.o, t.id, x.d, x.uid, ${at('i', 't.n', String(Math.floor(step / 4)))}, true, x.o, 'ingest', 'bench-seed'
     FROM unnest($1::text[], $2::int[], $3::int[]) AS t(id, n, ndev)
     CROSS JOIN generate_series(50, $4::int, 50) AS i
     CROSS JOIN LATERAL (SELECT 'robot-' || (1 + i % t.ndev) AS d, '${UID_PREFIX}.' || t.n || '.' || i AS uid,
                                CASE WHEN i % 200 = 0 THEN 'unpaid-outcome' ELSE 'avoided-ct' END AS o) x`,
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

const sizeLabel = (tenants: number, events: number): string => {
  const short = (x: number): string => (x % 1_000_000 === 0 ? `${x / 1_000_000}m` : x % 1000 === 0 ? `${x / 1000}k` : String(x));
  return `${short(tenants)}x${short(events)}`;
};

async function runEngine(kind: DatabaseKind, onCleanup: (fn: () => Promise<void>) => void): Promise<void> {
  const count = TENANTS[kind];
  const storage = await createTestStorage(kind);
  let disposed: Promise<void> | undefined;
  const dispose = (): Promise<void> => (disposed ??= storage.dispose());
  onCleanup(dispose);
  try {
    await measure(kind, count, await storage.open());
  } finally {
    await dispose();
  }
}

async function measure(kind: DatabaseKind, count: number, db: Database): Promise<void> {
  await migrate(db);
  const t0 = performance.now();
  const seeded = await seed(db, count);
  console.error(`# ${kind}: seeded ${count} tenants, ${seeded.ledgerRows} ledger rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const times: SqlTimes = { readMs: 0, writeMs: 0, statements: 0, rows: 0 };
  const start = performance.now();
  const r = await runInvoices(timedDatabase(db, times), PERIOD, 'bench', NOW_MS);
  const seconds = (performance.now() - start) / 1000;
  if (r.issued !== count || r.existing !== 0 || r.failed.length > 0) {
    throw new Error(`${kind}: issued ${r.issued} of ${count}, existing ${r.existing}, failed ${r.failed.length}: ${JSON.stringify(r.failed.slice(0, 3))}`);
  }
  const [sum] = await db.query<{ n: number; total: number }>(
    `SELECT sum((invoice->'usage'->>'billableEvents')::int + (invoice->'usage'->>'nonBillableEvents')::int)::int AS n, sum(total_cents)::int8 AS total FROM invoices WHERE period = $1`,
    [PERIOD],
  );
  if (Number(sum?.n) !== seeded.scans) throw new Error(`${kind}: the invoices count ${sum?.n} scans, the ledger has ${seeded.scans} not reversed`);
  const sample = Array.from({ length: Math.min(20, count) }, (_, k) => seeded.tenants[Math.min(count - 1, Math.floor((k * count) / 20) + (k % 10))]!);
  for (const t of sample) {
    const rr = await rerateIssued(db, t.id, PERIOD);
    if (!rr.matches) throw new Error(`${kind}: ${t.id}'s invoice does not re-rate to the same hash`);
  }
  const sqlS = (times.readMs + times.writeMs) / 1000;
  console.error(
    `# ${kind}: ${r.issued} invoices (${(Number(sum?.total) / 100).toFixed(2)} EUR) in ${seconds.toFixed(2)} s: ` +
      `${times.statements} statements, ${times.rows} rows; SQL reads ${(times.readMs / 1000).toFixed(2)} s, invoice INSERTs ${(times.writeMs / 1000).toFixed(2)} s, ` +
      `the rest (JS: entries, rate(), JSON, hash) ${(seconds - sqlS).toFixed(2)} s; ${sample.length} re-rated to the same hash`,
  );
  const name = `billing-invoice-run-${kind}-${sizeLabel(count, count * EVENTS_PER_TENANT)}`;
  bench(name, round(seconds, 2), 's');
  bench(`${name}-events-per-s`, Math.round((count * EVENTS_PER_TENANT) / seconds), 'events/s');
  bench(`${name}-sql-read`, round(times.readMs / 1000, 2), 's');
  bench(`${name}-sql-write`, round(times.writeMs / 1000, 2), 's');
  bench(`${name}-js`, round(seconds - sqlS, 2), 's');
}

await withCleanup(async (onCleanup) => {
  usePostgres();
  for (const kind of ENGINES) await runEngine(kind, onCleanup);
});

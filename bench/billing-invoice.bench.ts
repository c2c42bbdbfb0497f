// The month's invoice run: runInvoices (billing/routes.ts) for 1,000 tenants and 1,000,000 scans
// of October 2026 (Europe/Rome), on PostgreSQL (the goal: ≤ 10 s) and on PGlite.
//
// Each engine gets a fresh, migrated database (store/testing.ts: a new PostgreSQL schema on
// DATABASE_URL, dropped at the end, or a new PGlite directory), seeded with SQL, not through the
// API: tenants, devices, settings, contracts, then EVENTS_PER_TENANT scans per tenant spread over
// the month (1 in 40 not billable: aborted:estop), outcome events for the risk-sharing tenants,
// robot downtime for their SLA credits, and 3 reversals in every 5th tenant (billing-fixtures.ts
// seedInvoiceMonth). Then VACUUM ANALYZE (what autovacuum does after a bulk load), and the timed
// call. The contracts cycle over ten profiles (billing-fixtures.ts `profile`): pay-per-scan flat / graduated / volume, lease, commitment (with and
// without a true-up), risk-sharing (one and two robots, bonuses, SLA credits), consortium, and a
// robot whose contract changes mid-month (flat until the 14th, a prorated lease from the 15th).
//
// Checked (exit 1 otherwise): every tenant issued, none failed; the invoices count every scan
// that was not reversed; 20 tenants (of every profile) re-rate to the same hash.
//
// Figures: the run's seconds and scans/s per engine and size, and where the time goes: waiting
// for SQL reads, for the INSERTs of the invoices, and the rest (JavaScript: rows to entries,
// rate(), the invoice's JSON and hash), and the slowest statements on stderr. Names carry the
// size, lower-case as bench/stats.ts wants: billing-invoice-run-postgres-1000x1m. Sizes:
// BILLING_INVOICE_TENANTS × _EVENTS_PER_TENANT (default 1000 × 1000). PGlite runs
// BILLING_INVOICE_PGLITE_TENANTS, default 100 (100x100k, ~5 s): at 1000x1m it took 147 s, most
// of it in `SELECT max(id) … WHERE tenant_id = $1`, which scans the primary key backwards (the
// same statement as on PostgreSQL, where it is 83 of ~100 s). BILLING_INVOICE_ENGINES=postgres
// skips PGlite.
import { performance } from 'node:perf_hooks';
import { rerateIssued } from '../billing/invoices.ts';
import { runInvoices } from '../billing/routes.ts';
import { migrate, type Database, type DatabaseKind } from '../store/index.ts';
import { createTestStorage } from '../store/testing.ts';
import { INVOICE_PERIOD, newSqlTimes, seedInvoiceMonth, round, slowestStatements, timedDatabase, usePostgres, withCleanup } from './billing-fixtures.ts';
import { bench } from './stats.ts';

const NOW_MS = Date.UTC(2026, 10, 5, 9);
const EVENTS_PER_TENANT = Number(process.env.BILLING_INVOICE_EVENTS_PER_TENANT ?? 1000);
const TENANTS: Record<DatabaseKind, number> = {
  postgres: Number(process.env.BILLING_INVOICE_TENANTS ?? 1000),
  pglite: Number(process.env.BILLING_INVOICE_PGLITE_TENANTS ?? 100),
};
const ENGINES = (process.env.BILLING_INVOICE_ENGINES ?? 'postgres,pglite').split(',') as DatabaseKind[];
const sizeLabel = (tenants: number, events: number): string => {
  const short = (x: number): string => (x % 1_000_000 === 0 ? `${x / 1_000_000}m` : x % 1000 === 0 ? `${x / 1000}k` : String(x));
  return `${tenants}x${short(events)}`;
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
  const seeded = await seedInvoiceMonth(db, count, EVENTS_PER_TENANT);
  console.error(`# ${kind}: seeded ${count} tenants, ${seeded.ledgerRows} ledger rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const times = newSqlTimes();
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const r = await runInvoices(timedDatabase(db, times), INVOICE_PERIOD, 'bench', NOW_MS);
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  if (r.issued !== count || r.existing !== 0 || r.failed.length > 0) {
    throw new Error(`${kind}: issued ${r.issued} of ${count}, existing ${r.existing}, failed ${r.failed.length}: ${JSON.stringify(r.failed.slice(0, 3))}`);
  }
  const [sum] = await db.query<{ n: number; total: number }>(
    `SELECT sum((invoice->'usage'->>'billableEvents')::int + (invoice->'usage'->>'nonBillableEvents')::int)::int AS n, sum(total_cents)::int8 AS total FROM invoices WHERE period = $1`,
    [INVOICE_PERIOD],
  );
  if (Number(sum?.n) !== seeded.scans) throw new Error(`${kind}: the invoices count ${sum?.n} scans, the ledger has ${seeded.scans} not reversed`);
  const sample = Array.from({ length: Math.min(20, count) }, (_, k) => seeded.tenants[Math.min(count - 1, Math.floor((k * count) / 20) + (k % 10))]!);
  for (const t of sample) {
    const rr = await rerateIssued(db, t.id, INVOICE_PERIOD);
    if (!rr.matches) throw new Error(`${kind}: ${t.id}'s invoice does not re-rate to the same hash`);
  }
  console.error(
    `# ${kind}: ${r.issued} invoices (${(Number(sum?.total) / 100).toFixed(2)} EUR) in ${seconds.toFixed(2)} s: ` +
      `${times.statements} statements, ${times.rows} rows; summed over the run's two workers: SQL reads ${(times.readMs / 1000).toFixed(2)} s, invoice INSERTs ${(times.writeMs / 1000).toFixed(2)} s; ` +
      `this process's CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s; ${sample.length} re-rated to the same hash`,
  );
  for (const line of slowestStatements(times, 5)) console.error(`#   ${line}`);
  const name = `billing-invoice-run-${kind}-${sizeLabel(count, count * EVENTS_PER_TENANT)}`;
  bench(name, round(seconds, 2), 's');
  bench(`${name}-events-per-s`, Math.round((count * EVENTS_PER_TENANT) / seconds), 'events/s');
  // Summed over runInvoices' two concurrent workers: they can exceed the wall time.
  bench(`${name}-sql-read-summed`, round(times.readMs / 1000, 2), 's');
  bench(`${name}-sql-write-summed`, round(times.writeMs / 1000, 2), 's');
}

await withCleanup(async (onCleanup) => {
  usePostgres();
  for (const kind of ENGINES) await runEngine(kind, onCleanup);
});

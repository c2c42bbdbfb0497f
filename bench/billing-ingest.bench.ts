// Usage ingestion throughput, with idempotency, over HTTP: PostgreSQL and PGlite side by side.
//
// For each engine, a real `eco3d start` (test/harness.ts, in this process) on a fresh schema or
// data directory. As the platform admin: a tenant-admin account in tenant `demo`; as it: 4
// devices and one `usage:write` token per device. Then 4 concurrent senders, one per device
// token, POST /api/billing/usage-events with batches of 1,000 scans whose times are spread over
// the previous month; 10 % of each batch re-sends events already sent (a retry after a lost
// answer), at random places. One warm-up batch per sender, then a fixed number of events.
//
// The bodies are serialised before the clock starts and only the head of each answer is read
// (`{"created":N,"duplicates":M,…`): the client shares the event loop with the server, and what
// it costs is not the server's.
//
// Checked (exit 1 otherwise): the ledger holds exactly the unique events sent, and the answers'
// `created` add up to that, their `duplicates` to the re-sends.
//
// Figures per engine: events/s (every event sent, re-sends included), unique events/s, batch
// latency p50/p95 (ms), and the ratio PostgreSQL / PGlite. The goal: ≥ 10,000 events/s on
// PostgreSQL. Both engines get the same 200,000 events (PGlite takes ~20–30 s of them);
// BILLING_INGEST_EVENTS_POSTGRES / _PGLITE change the measured counts.
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { DatabaseKind } from '../store/index.ts';
import { ADMIN_PASSWORD, startTestServer, type TestServer } from '../test/harness.ts';
import { round, seededRandom, usePostgres, withCleanup } from './billing-fixtures.ts';
import { bench, percentile } from './stats.ts';

const SENDERS = 4;
const BATCH = 1000;
const DUPLICATE_SHARE = 0.1;
const TENANT = 'demo';
const EVENTS: Record<DatabaseKind, number> = {
  postgres: Number(process.env.BILLING_INGEST_EVENTS_POSTGRES ?? 200_000),
  pglite: Number(process.env.BILLING_INGEST_EVENTS_PGLITE ?? 200_000),
};

interface SentEvent {
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
}

/** One sender's batches, serialised, and what they should do to the ledger. */
interface SenderPlan {
  readonly deviceId: string;
  readonly token: string;
  warmup: string;
  batches: string[];
  unique: number;
  resent: number;
}

interface EngineResult {
  readonly kind: DatabaseKind;
  readonly events: number;
  readonly unique: number;
  readonly seconds: number;
  readonly latenciesMs: number[];
}

/** Batches of a device: BATCH events each, DUPLICATE_SHARE of them re-sends of earlier ones. */
function planBatches(plan: SenderPlan, count: number, rnd: () => number, sent: SentEvent[], runTag: string, fromMs: number, spanMs: number): string[] {
  const out: string[] = [];
  const dupPerBatch = Math.round(BATCH * DUPLICATE_SHARE);
  for (let b = 0; b < count; b++) {
    const events: SentEvent[] = [];
    for (let i = 0; i < BATCH - dupPerBatch; i++) {
      const e = { acquisitionUid: `1.2.826.0.1.3680043.10.${runTag}.${plan.deviceId}.${sent.length}`, occurredAtMs: fromMs + Math.floor(rnd() * spanMs) };
      sent.push(e);
      events.push(e);
    }
    // Re-sends of anything sent before (this batch's new events included: the first batch has
    // nothing earlier), each exactly as first sent.
    for (let i = 0; i < dupPerBatch; i++) events.push(sent[Math.floor(rnd() * sent.length)]!);
    for (let i = events.length - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [events[i], events[j]] = [events[j]!, events[i]!];
    }
    plan.unique += BATCH - dupPerBatch;
    plan.resent += dupPerBatch;
    out.push(JSON.stringify({ events: events.map((e) => ({ type: 'scan', deviceId: plan.deviceId, acquisitionUid: e.acquisitionUid, occurredAtMs: e.occurredAtMs })) }));
  }
  return out;
}

const HEAD = /^\{"created":(\d+),"duplicates":(\d+),/;

/** POSTs one batch; resolves with its counts. Only the head of the answer is parsed. */
function post(agent: Agent, url: URL, token: string, body: string): Promise<{ created: number; duplicates: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const first = chunks[0] !== undefined && chunks[0].length >= 200 ? chunks[0] : Buffer.concat(chunks);
          const head = first.toString('utf8', 0, Math.min(200, first.length));
          const m = HEAD.exec(head);
          if (res.statusCode !== 200 || m === null) {
            reject(new Error(`POST ${url.pathname}: ${res.statusCode} ${Buffer.concat(chunks).toString('utf8').slice(0, 500)}`));
            return;
          }
          resolve({ created: Number(m[1]), duplicates: Number(m[2]) });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function setUp(t: TestServer): Promise<{ deviceId: string; token: string }[]> {
  const must = (r: { status: number; body: any }, want: number, what: string): any => {
    if (r.status !== want) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const platform = await t.login('admin', ADMIN_PASSWORD);
  const username = `bench-billing-${randomBytes(3).toString('hex')}`;
  const password = `bench-${randomBytes(12).toString('hex')}`;
  must(await t.api('/api/accounts', { method: 'POST', token: platform, body: { tenantId: TENANT, username, password, role: 'tenant-admin' } }), 201, 'create the tenant admin');
  const admin = await t.login(username, password);
  const out: { deviceId: string; token: string }[] = [];
  for (let d = 1; d <= SENDERS; d++) {
    const deviceId = `bench-robot-${d}`;
    must(await t.api(`/api/devices/${deviceId}`, { method: 'PUT', token: admin, body: { model: 'bench' } }), 201, `register ${deviceId}`);
    const tok = must(await t.api('/api/auth/tokens', { method: 'POST', token: admin, body: { name: `bench ${deviceId}`, scopes: ['usage:write'], deviceId } }), 201, `token for ${deviceId}`);
    out.push({ deviceId, token: tok.token as string });
  }
  return out;
}

async function runEngine(kind: DatabaseKind, onCleanup: (fn: () => Promise<void>) => void): Promise<EngineResult> {
  const t0 = performance.now();
  const t = await startTestServer({}, kind);
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await t.close();
  };
  onCleanup(close);
  const devices = await setUp(t);

  // The previous calendar month (UTC), where an edge's late uploads would fall.
  const now = new Date();
  const fromMs = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1);
  const spanMs = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) - fromMs;
  const perSender = Math.ceil(EVENTS[kind] / BATCH / SENDERS);
  const runTag = randomBytes(4).readUInt32BE(0).toString();
  const plans: SenderPlan[] = devices.map((d, i) => {
    const plan: SenderPlan = { deviceId: d.deviceId, token: d.token, warmup: '', batches: [], unique: 0, resent: 0 };
    const rnd = seededRandom(1000 + i);
    const sent: SentEvent[] = [];
    plan.warmup = planBatches(plan, 1, rnd, sent, runTag, fromMs, spanMs)[0]!;
    plan.batches = planBatches(plan, perSender, rnd, sent, runTag, fromMs, spanMs);
    return plan;
  });
  console.error(`# ${kind}: server up and ${SENDERS} device tokens in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${perSender * SENDERS} batches of ${BATCH} to send`);

  const url = new URL('/api/billing/usage-events', t.url);
  const agent = new Agent({ keepAlive: true, maxSockets: SENDERS });
  let created = 0;
  let duplicates = 0;
  const count = (r: { created: number; duplicates: number }): void => {
    created += r.created;
    duplicates += r.duplicates;
  };
  try {
    (await Promise.all(plans.map((p) => post(agent, url, p.token, p.warmup)))).forEach(count);
    const latenciesMs: number[] = [];
    const cpu0 = process.cpuUsage();
    const start = performance.now();
    await Promise.all(
      plans.map(async (p) => {
        for (const body of p.batches) {
          const s = performance.now();
          count(await post(agent, url, p.token, body));
          latenciesMs.push(performance.now() - s);
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    const cpu = process.cpuUsage(cpu0);
    // The server, the client and (for PGlite) the database share this process.
    console.error(`# ${kind}: this process's CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s in ${seconds.toFixed(2)} s`);

    const unique = plans.reduce((n, p) => n + p.unique, 0);
    const resent = plans.reduce((n, p) => n + p.resent, 0);
    const [row] = await t.server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = $1 AND device_id = ANY ($2::text[])', [
      TENANT,
      plans.map((p) => p.deviceId),
    ]);
    const stored = Number(row?.n ?? -1);
    console.error(`# ${kind}: ledger ${stored} entries; answers: ${created} created, ${duplicates} duplicates; sent ${unique} unique + ${resent} re-sends (warm-up included)`);
    if (stored !== unique || created !== unique || duplicates !== resent) {
      throw new Error(`${kind}: the ledger holds ${stored} entries and the answers created ${created} (duplicates ${duplicates}), for ${unique} unique events and ${resent} re-sends`);
    }
    const measured = perSender * SENDERS * BATCH;
    return { kind, events: measured, unique: measured * (1 - DUPLICATE_SHARE), seconds, latenciesMs: latenciesMs.sort((a, b) => a - b) };
  } finally {
    agent.destroy();
    await close();
  }
}

await withCleanup(async (onCleanup) => {
  usePostgres();
  const results: EngineResult[] = [];
  for (const kind of ['postgres', 'pglite'] as const) results.push(await runEngine(kind, onCleanup));
  for (const r of results) {
    console.error(`# ${r.kind}: ${r.events} events (${r.unique} unique) in ${r.seconds.toFixed(2)} s`);
    bench(`billing-ingest-${r.kind}`, Math.round(r.events / r.seconds), 'events/s');
    bench(`billing-ingest-${r.kind}-unique`, Math.round(r.unique / r.seconds), 'events/s');
    bench(`billing-ingest-${r.kind}-batch-p50`, round(percentile(r.latenciesMs, 50), 1), 'ms');
    bench(`billing-ingest-${r.kind}-batch-p95`, round(percentile(r.latenciesMs, 95), 1), 'ms');
  }
  const [pgr, lite] = results;
  bench('billing-ingest-postgres-vs-pglite-ratio', round(pgr!.events / pgr!.seconds / (lite!.events / lite!.seconds), 2), 'x');
});

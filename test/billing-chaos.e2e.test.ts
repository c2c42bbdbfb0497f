// Billing's chaos test: scans are metered exactly once, whatever happens to the server.
//
// Three edge devices send 3,000 scan events in random batches with random duplicates (an event
// again in a later batch, a whole batch again, an event twice in one batch) to a real `eco3d start`
// child process, and retry every batch whose answer they did not get. Meanwhile the server is
// killed between commit and acknowledgement and started again on the same data, several times:
//   - on demand, by its failpoint (ECO3D_FAILPOINT=ingest-after-commit:N:SIGNAL, billing/routes.ts):
//     the Nth committed batch's connection is dropped unanswered and the process signals itself;
//   - at a random moment with batches in flight, from outside.
// The kill is SIGKILL on PostgreSQL. PGlite has no crash recovery in WASM, so there it is SIGTERM,
// which the graceful shutdown handles (a SIGKILL there tests data-directory corruption, not billing).
// In the end the ledger holds each event exactly once (zero lost, zero duplicated, as sent), every
// answer about an event named the same entry, and batches committed without an answer were found.
//
// The plan (events, batches, kills) comes from a seed, printed first: ECO3D_CHAOS_SEED=<n> replays it
// (the timing cannot be replayed: which batch is in flight at a kill varies). ECO3D_CHAOS_DEBUG=1
// prints the end of each server's output when it stops.
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { openPglite, type DatabaseKind } from '../store/index.ts';
import { databasesUnderTest } from '../store/testing.ts';
import { api, ChaosRun, EdgeSender, entryMismatch, Rng, ServerProcess, type Exit, type ScanEvent, type WireEntry } from './billing-chaos-client.ts';

const ADMIN_PASSWORD = 'admin-password-for-chaos';
const DEMO_PASSWORD = 'demo-password-for-chaos';
const TENANT_ADMIN = { username: 'chaos-admin', password: 'chaos-admin-password' };
const TENANT = 'demo';
const DEVICES = ['edge-1', 'edge-2', 'edge-3'] as const;
const EVENTS_PER_DEVICE = 1000;
/** A graceful shutdown (SIGTERM) longer than this is a hang. */
const SHUTDOWN_TIMEOUT_MS = 30_000;

const SEED = /^\d+$/.test(process.env.ECO3D_CHAOS_SEED ?? '') ? Number(process.env.ECO3D_CHAOS_SEED) >>> 0 : randomBytes(4).readUInt32LE(0);

type Step = { readonly kind: 'failpoint'; readonly n: number } | { readonly kind: 'external'; readonly afterAcks: number };

/** Five kills: the first server (the one set up through the API) from outside, then at least two by the failpoint. */
function planKills(rng: Rng): Step[] {
  const kinds = rng.shuffle<Step['kind']>(['failpoint', 'failpoint', 'external', rng.chance(0.5) ? 'failpoint' : 'external']);
  return [{ kind: 'external', afterAcks: rng.int(2, 12) }, ...kinds.map((kind): Step => (kind === 'failpoint' ? { kind, n: rng.int(3, 12) } : { kind, afterAcks: rng.int(2, 12) }))];
}

/** The previous calendar month, and a span inside it far from its edges in any time zone. */
function previousMonth(nowMs: number): { period: string; fromMs: number; toMs: number } {
  const d = new Date(nowMs);
  const year = d.getUTCMonth() === 0 ? d.getUTCFullYear() - 1 : d.getUTCFullYear();
  const month = (d.getUTCMonth() + 11) % 12;
  return { period: `${year}-${String(month + 1).padStart(2, '0')}`, fromMs: Date.UTC(year, month, 2), toMs: Date.UTC(year, month, 27) };
}

function makeEvents(rng: Rng, month: { fromMs: number; toMs: number }): Map<string, ScanEvent[]> {
  const run = randomBytes(4).toString('hex');
  const out = new Map<string, ScanEvent[]>();
  for (const deviceId of DEVICES) {
    const events: ScanEvent[] = [];
    for (let i = 0; i < EVENTS_PER_DEVICE; i++) {
      const base = { type: 'scan' as const, deviceId, acquisitionUid: `2.25.${run}.${deviceId}.${i}`, occurredAtMs: rng.int(month.fromMs, month.toMs) };
      events.push(rng.chance(0.1) ? { ...base, billable: false, reason: 'aborted:estop' } : base);
    }
    out.set(deviceId, events);
  }
  return out;
}

const canListen = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = createServer()
      .once('error', () => resolve(false))
      .listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });

/**
 * A free port below the kernel's ephemeral range, kept for every restart. In the ephemeral range,
 * while the server restarts, an outgoing connection (a device's retry, another test's) could be
 * given it as its local port, even connect to itself, and the next start would find it taken.
 */
async function restartablePort(): Promise<number> {
  let ephemeralFrom = 32768;
  try {
    ephemeralFrom = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    // not Linux: assume the IANA default
  }
  const low = 20_000;
  for (let i = 0; ephemeralFrom > low + 100 && i < 50; i++) {
    const port = randomInt(low, ephemeralFrom);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${low}..${ephemeralFrom - 1}`);
}

async function login(url: string, username: string, password: string): Promise<string> {
  const r = await api(url, '/api/auth/login', { method: 'POST', body: { username, password } });
  assert.equal(r.status, 200, `login ${username}: ${JSON.stringify(r.body)}`);
  return r.body.token as string;
}

/** The whole ledger, read from the database itself after the last server stopped. */
async function ledgerCounts(kind: DatabaseKind, dataDir: string, schema: string): Promise<{ rows: number; keys: number; uids: number; other: number }> {
  const sql = (table: string): string =>
    `SELECT count(*)::int AS rows, count(DISTINCT idempotency_key)::int AS keys, count(DISTINCT acquisition_uid)::int AS uids,
       count(*) FILTER (WHERE kind <> 'usage' OR tenant_id <> '${TENANT}' OR source <> 'ingest')::int AS other FROM ${table}`;
  if (kind === 'postgres') {
    const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await client.connect();
    try {
      return (await client.query<{ rows: number; keys: number; uids: number; other: number }>(sql(`${schema}.usage_ledger`))).rows[0]!;
    } finally {
      await client.end();
    }
  }
  const db = await openPglite(join(dataDir, 'db'));
  try {
    return (await db.query<{ rows: number; keys: number; uids: number; other: number }>(sql('usage_ledger')))[0]!;
  } finally {
    await db.close();
  }
}

interface Cycle {
  readonly step: Step | 'drain' | 'verify';
  readonly spawnedAtMs: number;
  readonly upInMs: number;
  exit?: Exit;
  ackedBatches: number;
}

for (const [engineIndex, kind] of databasesUnderTest().entries()) {
  void describe(`billing chaos: kills between commit and acknowledgement [${kind}]`, () => {
    const procs = new Set<ServerProcess>();
    const schema = `chaos_${randomBytes(5).toString('hex')}`;
    let dataDir: string | undefined;
    let run: ChaosRun | undefined;

    after(async () => {
      if (run !== undefined) run.stopped = true;
      for (const p of procs) {
        p.kill('SIGKILL');
        await p.exited;
      }
      if (dataDir !== undefined) await rm(dataDir, { recursive: true, force: true });
      if (kind === 'postgres') {
        const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
        await client.connect();
        try {
          await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          await client.end();
        }
      }
    });

    test('3,000 scans, retries, duplicates and five kills: each scan in the ledger exactly once, every answer the same entry', { timeout: 300_000 }, async (t) => {
      const seed = (SEED + engineIndex * 0x9e3779b9) >>> 0;
      try {
        await chaos(t, seed);
      } catch (err) {
        if (err instanceof Error) err.message = `[ECO3D_CHAOS_SEED=${SEED}, ${kind}] ${err.message}`;
        throw err;
      }
    });

    async function chaos(t: { diagnostic(message: string): void }, seed: number): Promise<void> {
      const rng = new Rng(seed);
      const signal: NodeJS.Signals = kind === 'postgres' ? 'SIGKILL' : 'SIGTERM';
      const month = previousMonth(Date.now());
      const events = makeEvents(rng, month);
      const sent = new Map<string, ScanEvent>();
      for (const list of events.values()) for (const e of list) sent.set(e.acquisitionUid, e);
      const plan = planKills(rng);
      t.diagnostic(`seed ${SEED} (replay with ECO3D_CHAOS_SEED=${SEED}); kills by ${signal}: ${plan.map((s) => (s.kind === 'failpoint' ? `failpoint after commit ${s.n}` : `external after ${s.afterAcks} acks`)).join(', ')}`);

      dataDir = await mkdtemp(join(tmpdir(), 'eco3d-chaos-'));
      // One port for every restart: the devices keep their URL, as with a real server.
      const port = await restartablePort();
      const url = `http://127.0.0.1:${port}`;
      const env: Record<string, string> = {
        ECO3D_ADMIN_PASSWORD: ADMIN_PASSWORD,
        ECO3D_DEMO_PASSWORD: DEMO_PASSWORD,
        ECO3D_VIEWER_BUILD: 'skip',
        LOG_LEVEL: 'warn',
        ...(kind === 'postgres' ? { DATABASE_URL: process.env.DATABASE_URL!, ECO3D_DB_SCHEMA: schema } : {}),
      };
      const cycles: Cycle[] = [];
      const start = async (step: Cycle['step']): Promise<ServerProcess> => {
        const failpoint: Record<string, string> = typeof step === 'object' && step.kind === 'failpoint' ? { ECO3D_FAILPOINT: `ingest-after-commit:${step.n}:${signal}` } : {};
        const p = await ServerProcess.start({ dataDir: dataDir!, port, env: { ...env, ...failpoint }, onSpawn: (x) => procs.add(x) });
        cycles.push({ step, spawnedAtMs: p.spawnedAtMs, upInMs: p.upAtMs - p.spawnedAtMs, ackedBatches: 0 });
        return p;
      };
      /** Waits for `p` to end (failing fast on a sender's error) and checks how it ended. */
      const ended = async (p: ServerProcess, how: NodeJS.Signals, timeoutMs: number, what: string): Promise<Exit> => {
        try {
          await run!.until(() => !p.running(), timeoutMs, what);
        } catch (err) {
          (err as Error).message += `\nserver output:\n${p.tail()}`;
          throw err;
        }
        const exit = await p.exited;
        procs.delete(p);
        if (process.env.ECO3D_CHAOS_DEBUG === '1') t.diagnostic(`${what}: ${JSON.stringify(exit)}\n${p.tail(3000)}`);
        const cycle = cycles.at(-1)!;
        cycle.exit = exit;
        cycle.ackedBatches = run!.ackedInCycle;
        if (how === 'SIGKILL') assert.equal(exit.signal, 'SIGKILL', `${what}: ended ${JSON.stringify(exit)}`);
        // The graceful shutdown exits 0; anything else is a crash on SIGTERM.
        else assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, `${what}: the SIGTERM shutdown failed:\n${p.tail()}`);
        return exit;
      };

      // ---- setup through the API, on the first server ---------------------------------------
      let proc = await start(plan[0]!);
      const admin = await login(url, 'admin', ADMIN_PASSWORD);
      const account = await api(url, '/api/accounts', { method: 'POST', token: admin, body: { tenantId: TENANT, ...TENANT_ADMIN, role: 'tenant-admin' } });
      assert.equal(account.status, 201, JSON.stringify(account.body));
      const tenantAdmin = await login(url, TENANT_ADMIN.username, TENANT_ADMIN.password);
      const tokens = new Map<string, string>();
      for (const deviceId of DEVICES) {
        const d = await api(url, `/api/devices/${deviceId}`, { method: 'PUT', token: tenantAdmin, body: { model: 'chaos' } });
        assert.equal(d.status, 201, JSON.stringify(d.body));
        const tok = await api(url, '/api/auth/tokens', { method: 'POST', token: tenantAdmin, body: { name: `${deviceId} usage`, scopes: ['usage:write'], deviceId } });
        assert.equal(tok.status, 201, JSON.stringify(tok.body));
        tokens.set(deviceId, tok.body.token as string);
      }

      // ---- chaos: the devices send while the server is killed and restarted ------------------
      run = new ChaosRun(url, TENANT);
      const r = run;
      const senders = DEVICES.map((d, i) => new EdgeSender(r, new Rng(seed + 1 + i), tokens.get(d)!, events.get(d)!));
      const loops = senders.map((s) => s.loop());
      try {
        for (const [c, step] of plan.entries()) {
          if (c > 0) {
            r.cycle = c;
            r.ackedInCycle = 0;
            proc = await start(step);
          }
          if (step.kind === 'external') {
            await r.until(() => r.ackedInCycle >= step.afterAcks, 60_000, `${step.afterAcks} acknowledged batches (cycle ${c})`);
            await sleep(rng.int(0, 30));
            await r.until(() => r.inflight > 0, 10_000, `a batch in flight (cycle ${c})`);
            proc.kill(signal);
            await ended(proc, signal, SHUTDOWN_TIMEOUT_MS, `cycle ${c}: ${signal} from outside`);
          } else {
            await ended(proc, signal, 60_000, `cycle ${c}: the failpoint at commit ${step.n}`);
          }
        }

        // ---- drain: one more server, left alone until every event is acknowledged ----------
        r.phase = 'drain';
        r.cycle = plan.length;
        r.ackedInCycle = 0;
        proc = await start('drain');
        await r.until(() => senders.every((s) => s.done), 120_000, 'every event acknowledged');
        await Promise.all(loops);
        proc.kill('SIGTERM');
        await ended(proc, 'SIGTERM', SHUTDOWN_TIMEOUT_MS, 'the drain server stopping');
      } finally {
        r.stopped = true;
        await Promise.all(loops);
      }
      if (r.fatal !== undefined) throw r.fatal;

      // ---- verify on a clean restart ---------------------------------------------------------
      r.cycle++;
      r.ackedInCycle = 0;
      proc = await start('verify');
      const usage = await api(url, `/api/billing/usage?period=${month.period}&limit=10000`, { token: await login(url, TENANT_ADMIN.username, TENANT_ADMIN.password) });
      proc.kill('SIGTERM');
      await ended(proc, 'SIGTERM', SHUTDOWN_TIMEOUT_MS, 'the verifying server stopping');
      assert.equal(usage.status, 200, JSON.stringify(usage.body));
      const entries = usage.body.entries as WireEntry[];

      const stored = new Map<string, WireEntry>();
      const twice: string[] = [];
      for (const e of entries) {
        if (stored.has(e.acquisitionUid)) twice.push(`${e.acquisitionUid} (entries ${stored.get(e.acquisitionUid)!.id} and ${e.id})`);
        stored.set(e.acquisitionUid, e);
      }
      const lost = [...sent.keys()].filter((uid) => !stored.has(uid));
      const extra = [...stored.keys()].filter((uid) => !sent.has(uid));
      assert.deepEqual(twice.slice(0, 20), [], `zero duplicates: ${twice.length} events are in the ledger more than once`);
      assert.deepEqual(lost.slice(0, 20), [], `zero lost: ${lost.length} of ${sent.size} events are not in the ledger`);
      assert.deepEqual(extra.slice(0, 20), [], `nothing else: ${extra.length} entries were never sent`);
      assert.equal(entries.length, sent.size);
      const wrong = [...sent.values()].map((ev) => entryMismatch(stored.get(ev.acquisitionUid), ev, TENANT)).filter((m) => m !== undefined);
      assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} entries are not what was sent`);
      // Every acknowledged answer about an event named one entry (checked as they came): the stored one.
      const unanswered = [...sent.keys()].filter((uid) => !r.firstAck.has(uid));
      assert.deepEqual(unanswered.slice(0, 10), [], `${unanswered.length} events were never acknowledged`);
      const otherEntry = [...sent.keys()].filter((uid) => r.firstAck.get(uid)!.entry.id !== stored.get(uid)!.id);
      assert.deepEqual(otherEntry.slice(0, 10), [], 'answers named another entry than the stored one');

      // Committed but never acknowledged: no answer said 'created' for them, every answer 'duplicate'.
      const silent = [...sent.keys()].filter((uid) => !r.createdAcks.has(uid));
      assert.ok(silent.length > 0, 'no batch was found committed without its acknowledgement: the kills missed the window');
      const silentIn = (c: Cycle, next: Cycle | undefined): number =>
        silent.filter((uid) => {
          const at = stored.get(uid)!.recordedAtMs;
          return at >= c.spawnedAtMs && at < (next?.spawnedAtMs ?? Infinity);
        }).length;
      const report = cycles.map((c, i) => {
        const what = typeof c.step === 'string' ? c.step : c.step.kind === 'failpoint' ? `failpoint@${c.step.n}` : `external@${c.step.afterAcks}`;
        return `${i}:${what} up in ${c.upInMs} ms, ${c.ackedBatches} acked, ended ${c.exit?.signal ?? c.exit?.code}, committed unacknowledged ${silentIn(c, cycles[i + 1])}`;
      });
      t.diagnostic(`cycles: ${report.join('; ')}`);
      t.diagnostic(
        `${sent.size} events, ${r.counts.eventsSent} sent in ${r.counts.attempts} requests: ${r.counts.acked} acknowledged, ${r.counts.refused} refused, ` +
          `${r.counts.reset} reset, ${r.counts.timeout} timed out, ${r.counts.http5xx} 5xx; ${r.counts.verbatimResends} batches re-sent as they were, ` +
          `${r.counts.ackedBatchResends} acknowledged batches re-sent; ${silent.length} events committed without acknowledgement`,
      );
      if (r.unknowns.length > 0) t.diagnostic(`unknown outcomes (first ${r.unknowns.length}): ${r.unknowns.join('; ')}`);
      // Each failpoint kill came right after a commit that carried an event surely not committed
      // before (the senders see to it): that event was found committed, in that server's lifetime.
      for (const [i, c] of cycles.entries()) {
        if (typeof c.step !== 'object' || c.step.kind !== 'failpoint') continue;
        if (r.noveltyLost.has(i)) {
          t.diagnostic(`cycle ${i}: the fresh events ran out, its failpoint batch may have committed only duplicates: not checked`);
          continue;
        }
        assert.ok(silentIn(c, cycles[i + 1]) > 0, `cycle ${i} (failpoint at commit ${c.step.n}): no event committed without acknowledgement in its lifetime`);
      }

      // The database itself: nothing outside the period, no key twice.
      const counts = await ledgerCounts(kind, dataDir, schema);
      assert.deepEqual(counts, { rows: sent.size, keys: sent.size, uids: sent.size, other: 0 });
    }
  });
}

// The parts of the billing chaos test (test/billing-chaos.e2e.test.ts) that are not the scenario:
// a seeded PRNG, `eco3d start` as a child process that can be killed and started again, and an
// edge device's sender that retries until acknowledged and keeps the record the checks need.
// Test files only.
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const BIN = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));

/** mulberry32: small, fast and the same on every machine, so a seed replays a run's plan. */
export class Rng {
  #a: number;
  constructor(seed: number) {
    this.#a = seed >>> 0;
  }
  next(): number {
    this.#a = (this.#a + 0x6d2b79f5) >>> 0;
    let t = this.#a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** lo..hi inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  shuffle<T>(xs: T[]): T[] {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [xs[i], xs[j]] = [xs[j]!, xs[i]!];
    }
    return xs;
  }
}

// ---------------------------------------------------------------------------------------------
// The server as a child process

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly atMs: number;
}

export class ServerProcess {
  readonly spawnedAtMs = Date.now();
  upAtMs = 0;
  readonly exited: Promise<Exit>;
  #log = '';

  private constructor(readonly child: ChildProcess) {
    const keep = (d: string): void => {
      this.#log = (this.#log + d).slice(-30_000);
    };
    child.stdout!.setEncoding('utf8').on('data', keep);
    child.stderr!.setEncoding('utf8').on('data', keep);
    // 'exit', not 'close': the streamer child shares the pipes and outlives a SIGKILLed parent by a moment.
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, atMs: Date.now() })));
  }

  /** `eco3d start` on `dataDir` and `port`; resolves once it printed that it is up. */
  static async start(o: { dataDir: string; port: number; env: Record<string, string>; onSpawn?: (p: ServerProcess) => void; timeoutMs?: number }): Promise<ServerProcess> {
    // Nothing of the caller's ECO3D_* may leak in (a TLS or uplink setting would change the run).
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('ECO3D_') && k !== 'DATABASE_URL' && k !== 'PORT') env[k] = v;
    const child = spawn(process.execPath, [BIN, 'start', '--data', o.dataDir, '--port', String(o.port), '--host', '127.0.0.1', '--robot', 'sim', '--tenant', 'demo'], {
      env: { ...env, ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const p = new ServerProcess(child);
    o.onSpawn?.(p);
    const timeoutMs = o.timeoutMs ?? 90_000;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`eco3d start not up within ${timeoutMs} ms:\n${p.tail()}`)), timeoutMs);
      const check = (): void => {
        if (!p.#log.includes('Eco3D is up at')) return;
        clearTimeout(timer);
        child.stdout.off('data', check);
        resolve();
      };
      child.stdout.on('data', check);
      void p.exited.then((e) => {
        clearTimeout(timer);
        reject(new Error(`eco3d start ended (${e.code ?? e.signal}) before it was up:\n${p.tail()}`));
      });
      check();
    });
    p.upAtMs = Date.now();
    return p;
  }

  running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running()) this.child.kill(signal);
  }

  /** Its exit, or an error naming a hang (with the end of its output) after `timeoutMs`. */
  async exit(timeoutMs: number, what: string): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what}: the server (pid ${this.child.pid}) did not exit within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  tail(chars = 4000): string {
    return this.#log.slice(-chars);
  }
}

export { apiCall as api } from './harness.ts';

// ---------------------------------------------------------------------------------------------
// The edge devices

export interface ScanEvent {
  readonly type: 'scan';
  readonly deviceId: string;
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
  readonly billable?: false;
  readonly reason?: string;
}

/** A ledger entry as the API answers it (billing/ledger.ts LedgerEntry). */
export interface WireEntry {
  readonly id: number;
  readonly kind: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
  readonly billable: boolean;
  readonly reason?: string;
  readonly source: string;
  readonly recordedAtMs: number;
}

/** What the stored entry of `ev` must say; a description of the difference, or undefined. */
export function entryMismatch(e: WireEntry | undefined, ev: ScanEvent, tenantId: string): string | undefined {
  if (e === undefined || e === null || typeof e !== 'object') return `no entry for ${ev.acquisitionUid}`;
  const want = { kind: 'usage', tenantId, deviceId: ev.deviceId, acquisitionUid: ev.acquisitionUid, occurredAtMs: ev.occurredAtMs, billable: ev.billable ?? true, reason: ev.reason, source: 'ingest' };
  const got = { kind: e.kind, tenantId: e.tenantId, deviceId: e.deviceId, acquisitionUid: e.acquisitionUid, occurredAtMs: e.occurredAtMs, billable: e.billable, reason: e.reason, source: e.source };
  return isDeepStrictEqual(want, got) ? undefined : `entry ${e.id}: ${JSON.stringify(got)}, sent ${JSON.stringify(want)}`;
}

/** The run as the senders and the controller share it. */
export class ChaosRun {
  /** The server process the senders are (probably) talking to: 0, 1, … in start order. */
  cycle = 0;
  /** chaos: kills happen, every batch carries an event never committed; drain: until all is acknowledged. */
  phase: 'chaos' | 'drain' = 'chaos';
  inflight = 0;
  ackedInCycle = 0;
  stopped = false;
  fatal: Error | undefined;
  readonly counts = { attempts: 0, acked: 0, refused: 0, reset: 0, timeout: 0, http5xx: 0, verbatimResends: 0, ackedBatchResends: 0, eventsSent: 0 };
  /** Events some attempt may have committed: it got past connect and ended unacknowledged (or was acknowledged). */
  readonly maybeCommitted = new Set<string>();
  /** Per event: the entry of its first acknowledged answer, and that answer's status. */
  readonly firstAck = new Map<string, { status: 'created' | 'duplicate'; entry: WireEntry; cycle: number }>();
  /** Per event: how many acknowledged answers said 'created' (more than one is a double booking). */
  readonly createdAcks = new Map<string, number>();
  /** Chaos cycles in which some batch had no event that was surely uncommitted (the fresh pool ran dry). */
  readonly noveltyLost = new Set<number>();
  /** The first few unknown outcomes, as the client saw them (for the report). */
  readonly unknowns: string[] = [];

  constructor(
    readonly url: string,
    readonly tenantId: string,
  ) {}

  fail(message: string): void {
    this.fatal ??= new Error(message);
    this.stopped = true;
  }

  /** Waits for `cond`, failing early with the senders' error or after `timeoutMs`. */
  async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!cond()) {
      if (this.fatal !== undefined) throw this.fatal;
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await sleep(5);
    }
  }
}

const MAX_BATCH = 150;
const REQUEST_TIMEOUT_MS = 20_000;

type Outcome = { kind: 'answer'; status: number; body: unknown } | { kind: 'refused' } | { kind: 'unknown'; why: 'reset' | 'timeout' | 'http5xx'; detail: string };

/**
 * One edge device: sends its events in random batches, one request at a time, until each one is
 * acknowledged (a 2xx). A refused connection, a reset, a timeout or a 5xx leaves the batch's fate
 * unknown: its events go back to be sent again, as the same batch or re-batched with others.
 */
export class EdgeSender {
  readonly #events: readonly ScanEvent[];
  #next = 0;
  /** Sent, fate unknown, in the order first sent. */
  readonly #unacked = new Map<string, ScanEvent>();
  readonly #acked: ScanEvent[] = [];
  readonly #ackedUids = new Set<string>();
  readonly #ackedBatches: ScanEvent[][] = [];
  #lastFailed: ScanEvent[] | null = null;
  #failures = 0;

  constructor(
    readonly run: ChaosRun,
    readonly rng: Rng,
    readonly token: string,
    events: readonly ScanEvent[],
  ) {
    this.#events = events;
  }

  get done(): boolean {
    return this.#next >= this.#events.length && this.#unacked.size === 0;
  }

  async loop(): Promise<void> {
    try {
      while (!this.run.stopped) {
        if (this.done && this.run.phase === 'drain') return;
        const batch = this.#build();
        await this.#sendOnce(batch);
        // A little think time varies how the three devices' requests interleave.
        if (this.rng.chance(0.3)) await sleep(this.rng.int(1, 20));
      }
    } catch (err) {
      this.run.fail(`sender: ${(err as Error).stack ?? String(err)}`);
    }
  }

  #surelyUncommitted = (e: ScanEvent): boolean => !this.run.maybeCommitted.has(e.acquisitionUid);

  #build(): ScanEvent[] {
    const r = this.rng;
    const run = this.run;
    const drain = run.phase === 'drain';
    // The whole unacknowledged batch again, as it was. In the chaos phase only while it still has
    // an event surely not committed: the failpoint's batch must then commit something new, so
    // that its commit without acknowledgement shows in the ledger.
    const last = this.#lastFailed;
    if (last !== null && r.chance(0.5) && (drain || last.some(this.#surelyUncommitted))) {
      run.counts.verbatimResends++;
      return last;
    }
    // An acknowledged batch again (its answer lost in the edge's own crash): pure duplicates.
    if (drain && this.#ackedBatches.length > 0 && r.chance(0.05)) {
      run.counts.ackedBatchResends++;
      return r.pick(this.#ackedBatches);
    }
    const size = drain || r.chance(0.4) ? r.int(1, MAX_BATCH) : r.int(1, 40);
    const out: ScanEvent[] = [];
    if (this.#unacked.size > 0) {
      const pending = r.shuffle([...this.#unacked.values()]);
      out.push(...pending.slice(0, r.int(1, Math.min(size, pending.length))));
    }
    if (this.#acked.length > 0 && r.chance(0.3)) {
      for (let k = r.int(1, 5); k > 0 && out.length < MAX_BATCH - 1; k--) out.push(r.pick(this.#acked));
    }
    let want = Math.max(0, size - out.length);
    if (!drain && !out.some(this.#surelyUncommitted)) want = Math.max(1, want);
    while (want-- > 0 && out.length < MAX_BATCH && this.#next < this.#events.length) out.push(this.#events[this.#next++]!);
    if (out.length === 0) {
      // Chaos phase, everything acknowledged: keep the traffic going with duplicates only.
      for (let k = r.int(1, 5); k > 0; k--) out.push(r.pick(this.#acked));
    }
    if (out.length < MAX_BATCH && r.chance(0.1)) out.push(r.pick(out)); // the same event twice in one batch
    if (r.chance(0.5)) r.shuffle(out);
    if (!drain && !out.some(this.#surelyUncommitted)) run.noveltyLost.add(run.cycle);
    return out;
  }

  async #post(batch: readonly ScanEvent[]): Promise<Outcome> {
    let res: Response;
    try {
      res = await fetch(`${this.run.url}/api/billing/usage-events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ events: batch }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (err) {
      return classify(err);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      const c = classify(err);
      return c.kind === 'refused' ? { kind: 'unknown', why: 'reset', detail: 'refused while reading the body' } : c;
    }
    if (res.status >= 500) return { kind: 'unknown', why: 'http5xx', detail: `${res.status} ${text.slice(0, 200)}` };
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { kind: 'answer', status: res.status, body };
  }

  async #sendOnce(batch: ScanEvent[]): Promise<void> {
    const run = this.run;
    const cycle = run.cycle;
    run.counts.attempts++;
    run.counts.eventsSent += batch.length;
    for (const e of batch) if (!this.#ackedUids.has(e.acquisitionUid)) this.#unacked.set(e.acquisitionUid, e);
    run.inflight++;
    let outcome: Outcome;
    try {
      outcome = await this.#post(batch);
    } finally {
      run.inflight--;
    }
    if (outcome.kind === 'answer' && outcome.status >= 200 && outcome.status < 300) {
      this.#accept(batch, outcome.body, cycle);
      return;
    }
    if (outcome.kind === 'answer') {
      run.fail(`POST /api/billing/usage-events answered ${outcome.status}: ${JSON.stringify(outcome.body).slice(0, 1000)}`);
      return;
    }
    if (outcome.kind === 'refused') run.counts.refused++;
    else {
      run.counts[outcome.why]++;
      if (run.unknowns.length < 12) run.unknowns.push(`cycle ${cycle}: ${outcome.why} ${outcome.detail}`.trim());
      // Past connect: the server may have committed it.
      for (const e of batch) run.maybeCommitted.add(e.acquisitionUid);
    }
    this.#lastFailed = batch;
    this.#failures++;
    await sleep(this.rng.int(10, 50) * 2 ** Math.min(this.#failures, 4));
  }

  #accept(batch: readonly ScanEvent[], raw: unknown, cycle: number): void {
    const run = this.run;
    const body = raw as { created?: unknown; duplicates?: unknown; results?: unknown } | null;
    const results = body?.results;
    if (!Array.isArray(results) || results.length !== batch.length) {
      run.fail(`an acknowledged batch of ${batch.length} events answered ${JSON.stringify(raw).slice(0, 500)}`);
      return;
    }
    let created = 0;
    batch.forEach((ev, i) => {
      const r = results[i] as { status?: unknown; entry?: WireEntry };
      const uid = ev.acquisitionUid;
      const bad = entryMismatch(r.entry, ev, run.tenantId);
      if (bad !== undefined) return run.fail(`results[${i}] of an acknowledged batch is not the event sent: ${bad}`);
      if (r.status === 'created') {
        created++;
        const n = (run.createdAcks.get(uid) ?? 0) + 1;
        run.createdAcks.set(uid, n);
        if (n > 1) run.fail(`${uid} was answered 'created' ${n} times: it was stored more than once`);
      } else if (r.status !== 'duplicate') {
        return run.fail(`results[${i}].status is ${JSON.stringify(r.status)}`);
      }
      const first = run.firstAck.get(uid);
      if (first === undefined) run.firstAck.set(uid, { status: r.status, entry: r.entry!, cycle });
      else if (first.entry.id !== r.entry!.id) run.fail(`${uid} was answered with entry ${r.entry!.id}, earlier with entry ${first.entry.id}`);
    });
    if (body!.created !== created || body!.duplicates !== batch.length - created) {
      run.fail(`the batch's counts (created ${String(body!.created)}, duplicates ${String(body!.duplicates)}) are not its results' (${created}, ${batch.length - created})`);
    }
    for (const e of batch) {
      run.maybeCommitted.add(e.acquisitionUid);
      if (this.#unacked.delete(e.acquisitionUid)) {
        this.#acked.push(e);
        this.#ackedUids.add(e.acquisitionUid);
      }
    }
    this.#ackedBatches.push([...batch]);
    if (this.#lastFailed !== null && this.#lastFailed.every((e) => !this.#unacked.has(e.acquisitionUid))) this.#lastFailed = null;
    this.#failures = 0;
    run.counts.acked++;
    run.ackedInCycle++;
  }
}

function classify(err: unknown): Outcome {
  const e = err as { name?: string; message?: string; cause?: { code?: string; name?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return { kind: 'unknown', why: 'timeout', detail: e.message ?? '' };
  // Nothing reached the server: it is down or restarting.
  if (e.cause?.code === 'ECONNREFUSED') return { kind: 'refused' };
  return { kind: 'unknown', why: 'reset', detail: `${e.cause?.code ?? e.cause?.name ?? ''} ${e.cause?.message ?? e.message ?? ''}` };
}

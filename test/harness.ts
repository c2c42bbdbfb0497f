// End-to-end test harness: a real `eco3d start` server (in this process, port 0, a temporary
// data directory, PGlite or PostgreSQL), real HTTP and real WebSockets. Test files only.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { WebSocket } from 'ws';
import type { DatabaseKind } from '../store/index.ts';
import type { TeleopServerMessage, TeleopStatus } from '../protocols/index.ts';
import { loadConfig } from '../server/config.ts';
import { createLogger } from '../server/log.ts';
import { startServer, type RunningServer } from '../server/runtime.ts';

export const ADMIN_PASSWORD = 'admin-password-for-tests';
export const DEMO_PASSWORD = 'demo-password-for-tests';

export interface TestServer {
  readonly server: RunningServer;
  readonly url: string;
  readonly dataDir: string;
  login(username: string, password?: string): Promise<string>;
  api(path: string, init?: { method?: string; token?: string; body?: unknown }): Promise<{ status: number; body: any }>;
  connect(channel: 'operator' | 'bedside', token: string): Promise<TeleopClient>;
  /** Drops every client connected so far (afterEach: a failed test leaves no lock held). */
  killClients(): Promise<void>;
  close(): Promise<void>;
}

/** The environment of a test server: known passwords, quiet logs, no viewer build; PostgreSQL in `schema`. */
export function testServerEnv(database: DatabaseKind, schema: string): Record<string, string | undefined> {
  return {
    ECO3D_ADMIN_PASSWORD: ADMIN_PASSWORD,
    ECO3D_DEMO_PASSWORD: DEMO_PASSWORD,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'silent',
    // scripts/test.sh builds the browser apps once, before any test starts a server.
    ECO3D_VIEWER_BUILD: 'skip',
    ...(database === 'postgres' ? { DATABASE_URL: process.env.DATABASE_URL, ECO3D_DB_SCHEMA: schema } : {}),
  };
}

/** One JSON API call: Bearer token, JSON body; the answer's body parsed when it is JSON, else its text. */
export async function apiCall(baseUrl: string, path: string, init: { method?: string; token?: string; body?: unknown } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${baseUrl}${path}`, {
    method: init.method ?? 'GET',
    headers,
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) }),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return { status: res.status, body };
}

/**
 * Starts a server on a fresh data directory. With `database: 'postgres'` it runs on
 * DATABASE_URL in a fresh schema (dropped at close) instead of the embedded PGlite.
 */
export async function startTestServer(flags: Record<string, string> = {}, database: DatabaseKind = 'pglite'): Promise<TestServer> {
  const dataDir = await mkdtemp(join(tmpdir(), 'eco3d-e2e-'));
  const schema = `e2e_${randomBytes(6).toString('hex')}`;
  const cfg = loadConfig({ flags: { data: dataDir, port: '0', ...flags }, env: testServerEnv(database, schema) });
  const server = await startServer(cfg, createLogger(cfg.logLevel), () => undefined);
  const clients: TeleopClient[] = [];
  const t: TestServer = {
    server,
    url: server.url,
    dataDir,
    async login(username, password = DEMO_PASSWORD) {
      const r = await t.api('/api/auth/login', { method: 'POST', body: { username, password } });
      if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    api: (path, init = {}) => apiCall(server.url, path, init),
    async connect(channel, token) {
      const c = await TeleopClient.open(`${server.url.replace(/^http/, 'ws')}/ws/${channel}`, token);
      clients.push(c);
      return c;
    },
    async killClients() {
      const all = clients.splice(0);
      for (const c of all) c.kill();
      await Promise.all(all.map((c) => c.closed));
    },
    async close() {
      for (const c of clients) c.kill();
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
      if (database === 'postgres') {
        const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
        await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        await pool.end();
      }
    },
  };
  return t;
}

/**
 * Polls `probe` every 250 ms until it answers something, for a state the server reaches in the
 * background (an outbox consumer's work); its last error is in the timeout's message.
 */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}${last === undefined ? '' : `: ${last instanceof Error ? last.message : JSON.stringify(last)}`}`);
}

/** A tele-operation WebSocket client that keeps every message and can await one. */
export class TeleopClient {
  readonly messages: TeleopServerMessage[] = [];
  private waiters: { pred: (m: TeleopServerMessage) => boolean; resolve: (m: TeleopServerMessage) => void }[] = [];
  private nextId = 1;
  closed: Promise<number>;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('message', (data) => {
      const m = JSON.parse((data as Buffer).toString('utf8')) as TeleopServerMessage;
      this.messages.push(m);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
  }

  static open(url: string, token: string): Promise<TeleopClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
      const c = new TeleopClient(ws);
      ws.once('open', () => resolve(c));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  /** Resolves with the first message (already received or future) matching `pred`. */
  waitFor(pred: (m: TeleopServerMessage) => boolean, timeoutMs = 5000, what = 'message'): Promise<TeleopServerMessage> {
    const seen = this.messages.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return this.waitForNext(pred, timeoutMs, what);
  }

  /** Resolves with the first FUTURE message matching `pred`. */
  waitForNext(pred: (m: TeleopServerMessage) => boolean, timeoutMs = 5000, what = 'message'): Promise<TeleopServerMessage> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const done = (m: TeleopServerMessage): void => {
        clearTimeout(timer);
        resolve(m);
      };
      this.waiters.push({ pred, resolve: done });
    });
  }

  /** Waits for a status frame satisfying `pred`. */
  async status(pred: (s: TeleopStatus) => boolean, timeoutMs = 5000, what = 'status'): Promise<TeleopStatus> {
    const m = await this.waitForNext((x) => x.type === 'status' && pred(x.status), timeoutMs, what);
    return (m as Extract<TeleopServerMessage, { type: 'status' }>).status;
  }

  /** Sends a message with a fresh id and resolves with its ack or error reply. */
  async request(msg: Record<string, unknown>, timeoutMs = 5000): Promise<TeleopServerMessage> {
    const id = `r${this.nextId++}`;
    const reply = this.waitForNext((m) => (m.type === 'ack' || m.type === 'error') && m.id === id, timeoutMs, `reply to ${String(msg.type)}`);
    this.ws.send(JSON.stringify({ ...msg, id }));
    return reply;
  }

  /** Sends raw text and resolves with the next error or ack. */
  async raw(text: string, timeoutMs = 5000): Promise<TeleopServerMessage> {
    const reply = this.waitForNext((m) => m.type === 'ack' || m.type === 'error', timeoutMs, 'reply to raw frame');
    this.ws.send(text);
    return reply;
  }

  send(msg: Record<string, unknown>): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Drops the TCP connection with no close handshake (a dead network). */
  kill(): void {
    this.ws.terminate();
  }
}

export const errorCode = (m: TeleopServerMessage): string => (m.type === 'error' ? m.code : m.type);

export const randomId = (): string => randomBytes(4).toString('hex');

export type RobotSnapshot = {
  mode: string;
  tcpPose: { positionMm: { x: number; y: number; z: number } };
  jointVelRadPerS: number[];
  faults: string[];
};
export const robotOf = (s: TeleopStatus): RobotSnapshot => s.robot as RobotSnapshot;

/** Waits (10 s at most) for the billing consumer's ledger entry of an acquisition: one, not billable, for `reason`. */
export async function assertMeteredNotBillable(t: TestServer, acquisitionUid: string, reason: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  let rows: { billable: boolean; reason: string | null }[] = [];
  while (Date.now() < deadline) {
    rows = await t.server.db.query<{ billable: boolean; reason: string | null }>("SELECT billable, reason FROM usage_ledger WHERE acquisition_uid = $1 AND kind = 'usage'", [acquisitionUid]);
    if (rows.length > 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (JSON.stringify(rows) !== JSON.stringify([{ billable: false, reason }])) {
    throw new Error(`acquisition ${acquisitionUid} should be metered once, not billable (${reason}); the ledger has ${JSON.stringify(rows)}`);
  }
}

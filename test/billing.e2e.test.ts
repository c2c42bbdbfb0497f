// Billing through real `eco3d start` servers (simulated robot):
// - a completed sweep is metered once and shows on the dashboard and in the open invoice, in
//   every export format (JSON, CSV, PDF, FHIR);
// - the ingestion endpoint's credentials and bad inputs over HTTP;
// - edge → cloud: an edge instance forwards its scans to a cloud instance through the outbox;
//   the cloud goes down, the edge keeps metering, the cloud comes back and receives every scan
//   exactly once.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { periodOf, usageKey } from '../billing/index.ts';
import { createServer } from 'node:net';
import { loadConfig } from '../server/config.ts';
import { createLogger } from '../server/log.ts';
import { startServer, type RunningServer } from '../server/runtime.ts';
import { databasesUnderTest, seedAcquisition } from '../store/testing.ts';
import { ADMIN_PASSWORD, apiCall, DEMO_PASSWORD, errorCode, randomId, startTestServer, testServerEnv, waitFor, type TestServer } from './harness.ts';

const TENANT_ADMIN_PASSWORD = 'tenant-admin-password-for-tests';

async function tenantAdmin(t: { api: TestServer['api']; login: TestServer['login'] }): Promise<string> {
  const admin = await t.login('admin', ADMIN_PASSWORD);
  const created = await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId: 'demo', username: 'demo-admin', role: 'tenant-admin', password: TENANT_ADMIN_PASSWORD } });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  return t.login('demo-admin', TENANT_ADMIN_PASSWORD);
}

for (const database of databasesUnderTest()) describe(`billing through the server (${database})`, () => {
  let t: TestServer;
  let admin: string;
  before(async () => {
    t = await startTestServer({}, database);
    admin = await tenantAdmin(t);
  });
  after(async () => {
    await t?.close();
  });

  test('a completed sweep is metered once: dashboard, open invoice, every export', { timeout: 240_000 }, async () => {
    const bedside = await t.login('demo-bedside');
    const bs = await t.connect('bedside', bedside);
    const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 };
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
    const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
    const uid = running.acquisition.uid!;
    await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');

    const period = periodOf(Date.now());
    type Board = { scansPerDeviceDay: { deviceId: string; billable: number; nonBillable: number }[]; revenueByTenant: unknown[] };
    const board = await waitFor('the scan on the dashboard', 60_000, async () => {
      const r = await t.api(`/api/billing/dashboard?period=${period}`, { token: admin });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const b = r.body as Board;
      return b.scansPerDeviceDay.length > 0 ? b : undefined;
    });
    assert.deepEqual(
      board.scansPerDeviceDay.map((c) => [c.deviceId, c.billable, c.nonBillable]),
      [['sim-1', 1, 0]],
    );
    // The demo robot's contract: 20.00 EUR a scan, IVA 22 % by default.
    assert.deepEqual(board.revenueByTenant, [{ tenantId: 'demo', period, status: 'open', subtotalCents: 2000, taxCents: 440, totalCents: 2440 }]);
    const usage = (await t.api(`/api/billing/usage?period=${period}`, { token: admin })).body as { entries: { idempotencyKey: string; billable: boolean; source: string }[] };
    assert.deepEqual(
      usage.entries.map((e) => [e.idempotencyKey, e.billable, e.source]),
      [[usageKey('demo', 'sim-1', uid), true, 'local']],
    );

    const get = (format: string) => fetch(`${t.url}/api/billing/invoices/demo/${period}?format=${format}`, { headers: { authorization: `Bearer ${admin}` } });
    const json = await get('json');
    assert.equal(json.status, 200);
    assert.equal(json.headers.get('cache-control'), 'no-store', 'an open preview is never cached');
    const doc = (await json.json()) as { status: string; invoice: { totals: { totalCents: number } } };
    assert.deepEqual([doc.status, doc.invoice.totals.totalCents], ['open', 2440]);
    const csv = await get('csv');
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/);
    assert.match(await csv.text(), /24\.40/);
    const pdf = await get('pdf');
    assert.equal(pdf.headers.get('content-type'), 'application/pdf');
    const pdfBytes = Buffer.from(await pdf.arrayBuffer());
    assert.equal(pdfBytes.subarray(0, 5).toString(), '%PDF-');
    const text = spawnSync('pdftotext', ['-', '-'], { input: pdfBytes, encoding: 'utf8' });
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /24\.40/);
    const fhir = await get('fhir');
    assert.match(fhir.headers.get('content-type') ?? '', /^application\/fhir\+json/);
    const bundle = (await fhir.json()) as { resourceType: string; entry: { resource: { resourceType: string; status?: string } }[] };
    assert.equal(bundle.resourceType, 'Bundle');
    assert.deepEqual([...new Set(bundle.entry.map((e) => e.resource.resourceType))], ['Invoice', 'ChargeItem']);
    assert.equal(bundle.entry[0]!.resource.status, 'draft');

    // The current period cannot be issued yet.
    const early = await t.api(`/api/billing/invoices/demo/${period}/issue`, { method: 'POST', token: admin });
    assert.deepEqual([early.status, early.body.code], [409, 'ECO3D_ERR_CONFLICT']);
  });

  test('ingestion over HTTP: device tokens, bad inputs, duplicates answered with the original', async () => {
    const dev = await t.api('/api/devices/edge-9', { method: 'PUT', token: admin, body: { model: 'edge' } });
    assert.equal(dev.status, 201, JSON.stringify(dev.body));
    const noDevice = await t.api('/api/auth/tokens', { method: 'POST', token: admin, body: { name: 'edge', scopes: ['usage:write'] } });
    assert.deepEqual([noDevice.status, noDevice.body.code], [400, 'ECO3D_ERR_BAD_REQUEST']);
    const ghost = await t.api('/api/auth/tokens', { method: 'POST', token: admin, body: { name: 'edge', scopes: ['usage:write'], deviceId: 'ghost' } });
    assert.deepEqual([ghost.status, ghost.body.code], [422, 'ECO3D_ERR_UNKNOWN_DEVICE']);
    const minted = await t.api('/api/auth/tokens', { method: 'POST', token: admin, body: { name: 'edge-9 usage', scopes: ['usage:write'], deviceId: 'edge-9' } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const token = minted.body.token as string;
    assert.equal(minted.body.deviceId, 'edge-9');

    const at = Date.now() - 3_600_000;
    const uid = `2.25.${BigInt(`0x${randomId()}`)}`;
    const post = (body: unknown, tk: string | null = token) => t.api('/api/billing/usage-events', { method: 'POST', ...(tk === null ? {} : { token: tk }), body });
    const ok = await post({ events: [{ type: 'scan', deviceId: 'edge-9', acquisitionUid: uid, occurredAtMs: at }] });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual([ok.body.created, ok.body.duplicates], [1, 0]);
    const again = await post({ events: [{ type: 'scan', deviceId: 'edge-9', acquisitionUid: uid, occurredAtMs: at + 5000 }] });
    assert.deepEqual([again.body.created, again.body.duplicates, again.body.results[0].status], [0, 1, 'duplicate']);
    assert.deepEqual(again.body.results[0].entry, ok.body.results[0].entry, 'the original record, not the re-sent one');

    const sonographer = await t.login('demo-sonographer');
    const cases: [unknown, string | null, number, string][] = [
      [{ events: [] }, null, 401, 'ECO3D_ERR_UNAUTHENTICATED'],
      [{ events: [] }, sonographer, 403, 'ECO3D_ERR_FORBIDDEN'],
      ['{"events": [', token, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ events: [] }, token, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ events: [{ type: 'scan', deviceId: 'sim-1', acquisitionUid: '9.9', occurredAtMs: at }] }, token, 403, 'ECO3D_ERR_FORBIDDEN'],
      [{ events: [{ type: 'scan', deviceId: 'edge-9', acquisitionUid: '9.9', occurredAtMs: Date.now() + 86_400_000 }] }, token, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ events: [{ type: 'scan', deviceId: 'edge-9', acquisitionUid: '9.9', occurredAtMs: at, quantity: -3 }] }, token, 400, 'ECO3D_ERR_BAD_REQUEST'],
      ['{"events": [{"type": "scan", "deviceId": "edge-9", "acquisitionUid": "9.9", "occurredAtMs": 1e999}]}', token, 422, 'ECO3D_ERR_NOT_FINITE'],
      [{ events: Array.from({ length: 10_001 }, (_, i) => ({ type: 'scan', deviceId: 'edge-9', acquisitionUid: `9.${i}`, occurredAtMs: at })) }, token, 400, 'ECO3D_ERR_BAD_REQUEST'],
    ];
    for (const [body, tk, status, code] of cases) {
      const r = await post(body, tk);
      assert.deepEqual([r.status, r.body.code], [status, code], `${JSON.stringify(body).slice(0, 120)} → ${JSON.stringify(r.body).slice(0, 300)}`);
    }
    const ledger = await t.api(`/api/billing/usage?period=${periodOf(at)}`, { token: admin });
    assert.equal((ledger.body as { entries: { deviceId: string }[] }).entries.filter((e) => e.deviceId === 'edge-9').length, 1, 'nothing written by any refused batch');

    // Contracts over HTTP: overlap, non-integer money, unknown device, another tenant; nothing written.
    const contract = (id: string, over: Record<string, unknown> = {}) => ({
      tenantId: 'demo',
      deviceId: 'edge-9',
      validFrom: '2026-01-01',
      validTo: null,
      model: { kind: 'lease', monthlyFeeCents: 400_000, includedScans: 100, overageUnitPriceCents: 1500 },
      ...over,
    });
    const put = (id: string, body: unknown) => t.api(`/api/billing/contracts/${id}`, { method: 'PUT', token: admin, body });
    assert.equal((await put('lease-9', contract('lease-9'))).status, 201);
    const contractCases: [string, unknown, number, string][] = [
      ['lease-9b', contract('lease-9b', { validFrom: '2026-06-01' }), 409, 'ECO3D_ERR_CONFLICT'],
      ['lease-9c', contract('lease-9c', { validFrom: '2030-01-01', model: { kind: 'lease', monthlyFeeCents: 4000.5, includedScans: 100, overageUnitPriceCents: 1500 } }), 400, 'ECO3D_ERR_BAD_REQUEST'],
      ['lease-9d', contract('lease-9d', { validFrom: '2030-01-01', deviceId: 'ghost' }), 422, 'ECO3D_ERR_UNKNOWN_DEVICE'],
      ['lease-9e', contract('lease-9e', { validFrom: '2030-01-01', tenantId: 'other' }), 403, 'ECO3D_ERR_FORBIDDEN'],
      ['lease-9f', contract('lease-9f', { validFrom: '2030-02-30' }), 400, 'ECO3D_ERR_BAD_REQUEST'],
      ['lease-9g', contract('lease-9g', { validFrom: '2030-01-01', model: { kind: 'barter' } }), 400, 'ECO3D_ERR_BAD_REQUEST'],
    ];
    for (const [id, body, status, code] of contractCases) {
      const r = await put(id, body);
      assert.deepEqual([r.status, r.body.code], [status, code], `${id}: ${JSON.stringify(r.body)}`);
    }
    const listed = (await t.api('/api/billing/contracts', { token: admin })).body as { contracts: { id: string }[] };
    assert.deepEqual(listed.contracts.map((c) => c.id).filter((id) => id.startsWith('lease-9')), ['lease-9']);
    const platform = await t.login('admin', ADMIN_PASSWORD);
    const noTenant = await t.api('/api/billing/settings?tenant=no-such-hospital', { method: 'PUT', token: platform, body: { tax: { kind: 'exempt', reason: 'art. 10' } } });
    assert.deepEqual([noTenant.status, noTenant.body.code], [422, 'ECO3D_ERR_UNKNOWN_TENANT']);

    const doc = (await t.api('/api/openapi.json')).body as { paths: Record<string, unknown> };
    for (const p of ['/api/billing/usage-events', '/api/billing/invoices/{tenant}/{period}', '/api/billing/dashboard', '/api/billing/contracts/{id}']) assert.ok(p in doc.paths, `OpenAPI documents ${p}`);
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** A server on a given data directory, port and schema, which can be stopped and started again. */
async function serverAt(dataDir: string, port: number, database: 'pglite' | 'postgres', schema: string, flags: Record<string, string> = {}): Promise<RunningServer> {
  const cfg = loadConfig({ flags: { data: dataDir, port: String(port), ...flags }, env: testServerEnv(database, schema) });
  return startServer(cfg, createLogger(cfg.logLevel), () => undefined);
}

for (const database of databasesUnderTest()) describe(`edge → cloud uplink, across a cloud outage (cloud on ${database})`, () => {
  const schema = `e2e_cloud_${randomId()}`;
  let cloudDir: string;
  let cloud: RunningServer | undefined;
  let edge: TestServer | undefined;
  after(async () => {
    await edge?.close();
    await cloud?.close();
    if (cloudDir !== undefined) await rm(cloudDir, { recursive: true, force: true });
    if (database === 'postgres') {
      const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
      await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await pool.end();
    }
  });

  test('every scan metered at the edge reaches the cloud exactly once, outage or not', { timeout: 180_000 }, async () => {
    cloudDir = await mkdtemp(join(tmpdir(), 'eco3d-cloud-'));
    const port = await freePort();
    cloud = await serverAt(cloudDir, port, database, schema);
    const cloudUrl = cloud.url;
    const api = (path: string, init: { method?: string; token?: string; body?: unknown } = {}) => apiCall(cloudUrl, path, init);
    const login = async (username: string, password: string) => (await api('/api/auth/login', { method: 'POST', body: { username, password } })).body.token as string;
    const admin = await tenantAdmin({ api, login: (u, p) => login(u, p ?? DEMO_PASSWORD) });
    assert.equal((await api('/api/devices/edge-7', { method: 'PUT', token: admin, body: { model: 'eco3d edge' } })).status, 201);
    const minted = await api('/api/auth/tokens', { method: 'POST', token: admin, body: { name: 'edge-7 uplink', scopes: ['usage:write'], deviceId: 'edge-7' } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const priced = await api('/api/billing/contracts/edge-7-pps', {
      method: 'PUT',
      token: admin,
      body: { tenantId: 'demo', deviceId: 'edge-7', validFrom: '2026-01-01', validTo: null, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 1500 } } },
    });
    assert.equal(priced.status, 201, JSON.stringify(priced.body));

    edge = await startTestServer({ device: 'edge-7', uplink: cloudUrl, uplinkToken: minted.body.token as string });
    const edgeDb = edge.server.db;
    let n = 0;
    const scanAtEdge = async (outcome: 'completed' | 'aborted' = 'completed') => {
      n++;
      await seedAcquisition(edgeDb, { tenantId: 'demo', deviceId: 'edge-7', uid: `2.25.77${n}${randomId().slice(0, 4)}`, startMs: Date.now() - 600_000 + n * 10_000, outcome });
      edge!.server.dispatcher.kick();
    };
    const cloudEntries = async () => {
      const r = await api(`/api/billing/usage?period=${periodOf(Date.now())}&limit=10000`, { token: admin });
      return (r.body.entries as { deviceId: string; acquisitionUid: string; occurredAtMs: number; billable: boolean; reason?: string; source: string }[]).filter((e) => e.deviceId === 'edge-7');
    };

    for (let i = 0; i < 3; i++) await scanAtEdge();
    await waitFor('3 scans in the cloud', 30_000, async () => ((await cloudEntries()).length === 3 ? true : undefined));

    // The cloud goes down; the edge keeps metering, and its uplink fails and backs off.
    await cloud.close();
    cloud = undefined;
    for (let i = 0; i < 4; i++) await scanAtEdge();
    await scanAtEdge('aborted');
    await waitFor('failed uplink attempts at the edge', 30_000, async () => {
      const rows = await edgeDb.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox_deliveries WHERE consumer = 'billing-uplink' AND delivered_at IS NULL AND attempts > 0");
      return rows[0]!.n >= 5 ? true : undefined;
    });

    // Back: every scan arrives, once, as the edge metered it.
    cloud = await serverAt(cloudDir, port, database, schema);
    const got = await waitFor('all 8 scans in the cloud', 90_000, async () => {
      const e = await cloudEntries();
      return e.length === 8 ? e : undefined;
    });
    const edgeLedger = await edgeDb.query<{ acquisition_uid: string; billable: boolean; reason: string | null; ms: number }>(
      "SELECT acquisition_uid, billable, reason, (extract(epoch FROM occurred_at) * 1000)::int8 AS ms FROM usage_ledger WHERE device_id = 'edge-7' ORDER BY acquisition_uid",
    );
    const view = (e: { uid: string; billable: boolean; reason: string | null; ms: number }) => `${e.uid} ${e.billable} ${e.reason ?? '-'} ${e.ms}`;
    assert.deepEqual(
      got.map((e) => view({ uid: e.acquisitionUid, billable: e.billable, reason: e.reason ?? null, ms: e.occurredAtMs })).sort(),
      edgeLedger.map((r) => view({ uid: r.acquisition_uid, billable: r.billable, reason: r.reason, ms: Number(r.ms) })).sort(),
    );
    assert.ok(got.every((e) => e.source === 'ingest'));
    assert.equal(got.filter((e) => !e.billable).length, 1, 'the aborted scan arrives, not billable');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await cloudEntries()).length, 8, 'no late duplicate');

    // `eco3d invoice` reads the cloud's database once the server is stopped (PGlite: one process).
    await cloud.close();
    cloud = undefined;
    const period = periodOf(Date.now());
    const env = { ...process.env, ...(database === 'postgres' ? { ECO3D_DB_SCHEMA: schema } : { DATABASE_URL: '' }) };
    const cli = (...args: string[]) => spawnSync(process.execPath, ['bin/eco3d.mjs', 'invoice', '--tenant', 'demo', '--period', period, '--data', cloudDir, ...args], { env, encoding: 'utf8', timeout: 60_000 });
    const csv = cli('--format', 'csv');
    assert.equal(csv.status, 0, csv.stderr);
    // 7 billable edge scans at 15.00 plus IVA 22 %: 105.00 + 23.10.
    assert.match(csv.stdout, /\r\n,open,demo,[0-9-]+,TOTAL,Total,,,,,,12810,128\.10,/);
    const early = cli('--issue');
    assert.equal(early.status, 1);
    assert.match(early.stderr, /ECO3D_ERR_CONFLICT: period [0-9-]+ is not over/);
    const nobody = cli('--tenant', 'no-such-hospital');
    assert.notEqual(nobody.status, 0);
  });
});

// The marketplace through the running server and the real CLI, on the embedded database:
// - a developer goes from `eco3d plugin init` (then keygen, test, pack, publish) to a version in
//   review; the platform admin publishes it;
// - a hospital admin enables the example lesion-volume plugin after seeing its scopes and price;
//   a simulated bedside sweep then yields a work item that COMPLETES once, with a TID 1500 SR in
//   the study (dciodvfy: no error) whose patient and study are the real ones, FHIR Observations,
//   and the plugin's charge in the hospital's ledger split 70/30 to the cent;
// - a PHI spy plugin, run on a scan of a patient whose identity is packed with a distinctive
//   marker, finds no trace of it in any byte it was given (its input, its directory, argv, env);
// - OAuth2 client credentials give a short-lived token; disabling the plugin refuses it at once.
// The plugin runs use the real sandbox (root, unshare): this file is in test.sh's serial phase.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { generateDeveloperKey, loadDeveloperKey, packPlugin } from '../marketplace/index.ts';
import { ADMIN_PASSWORD, errorCode, startTestServer, waitFor, type TestServer } from './harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(ROOT, 'bin', 'eco3d.mjs');
const MARK = 'ZQPHIMARK';

function eco3d(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, LOG_LEVEL: 'silent', ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** The archive's file of an instance (hierarchical layout: <SOP UID>.<random>.dcm). */
function findInstanceFile(dir: string, sopInstanceUid: string): string | undefined {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const f = findInstanceFile(p, sopInstanceUid);
      if (f !== undefined) return f;
    } else if (e.name.startsWith(`${sopInstanceUid}.`) && e.name.endsWith('.dcm')) return p;
  }
  return undefined;
}

// Reads every byte it was handed and everything it can read of its own directory, and reports
// whether the marker appears anywhere (it is assembled here so the module's own text lacks it).
const SPY = `import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
const mark = ['ZQPHI', 'MARK'].join('');
function scan(dir, found) {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    try {
      if (statSync(p).isDirectory()) scan(p, found);
      else if (readFileSync(p).includes(mark)) found.push('file ' + e);
    } catch { /* unreadable: the sandbox said no */ }
  }
}
export async function analyze(input) {
  const found = [];
  if (Buffer.from(input.volume.voxels.buffer, input.volume.voxels.byteOffset, input.volume.voxels.byteLength).includes(mark)) found.push('voxels');
  if (JSON.stringify({ ...input, volume: { ...input.volume, voxels: null } }).includes(mark)) found.push('input');
  if (JSON.stringify(process.env).includes(mark) || process.argv.join(' ').includes(mark)) found.push('env/argv');
  scan(process.cwd(), found);
  scan(new URL('.', import.meta.url).pathname, found);
  return { measurements: [{ name: 'PHI traces', value: found.length, unit: '1' }], findings: found.map((f) => ({ text: f })) };
}
`;

describe('the marketplace through the server (pglite)', () => {
  let t: TestServer;
  let admin: string;
  let hospitalAdmin: string;
  let dev: string;
  let work: string;
  before(async () => {
    t = await startTestServer({}, 'pglite');
    work = mkdtempSync(join(tmpdir(), 'eco3d-market-e2e-'));
    admin = await t.login('admin', ADMIN_PASSWORD);
    const mk = async (tenantId: string, username: string): Promise<string> => {
      const r = await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId, username, role: 'tenant-admin', password: `${username}-password` } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return t.login(username, `${username}-password`);
    };
    assert.equal((await t.api('/api/marketplace/developers/acme-ai', { method: 'PUT', token: admin, body: { name: 'Acme AI' } })).status, 201);
    hospitalAdmin = await mk('demo', 'market-hospital-admin');
    dev = await mk('acme-ai', 'acme-developer');
  });
  after(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('from eco3d plugin init to a published plugin', { timeout: 600_000 }, async () => {
    const dir = join(work, 'hello-plugin');
    const init = await eco3d(['plugin', 'init', dir, '--id', 'com.acme.hello', '--name', 'Hello analysis', '--vendor', 'Acme AI']);
    assert.equal(init.code, 0, init.stderr);
    const keyFile = join(work, 'acme.pem');
    const keygen = await eco3d(['plugin', 'keygen', '--out', keyFile]);
    assert.equal(keygen.code, 0, keygen.stderr);
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    const { publicKey } = JSON.parse(keygen.stdout) as { publicKey: string };
    const tested = await eco3d(['plugin', 'test', dir], { ECO3D_DEMO_DIR: join(work, 'demo') });
    assert.equal(tested.code, 0, `${tested.stdout}\n${tested.stderr}`);
    assert.equal((JSON.parse(tested.stdout) as { srValid: boolean }).srValid, true);
    const pkg = join(work, 'hello.zip');
    const packed = await eco3d(['plugin', 'pack', dir, '--key', keyFile, '--out', pkg]);
    assert.equal(packed.code, 0, packed.stderr);

    // Unregistered key: refused. Then the key is registered in the portal.
    const refused = await eco3d(['plugin', 'publish', pkg, '--server', t.url, '--wait-s', '0'], { ECO3D_TOKEN: dev });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /ECO3D_ERR_CONFLICT|signing key/);
    assert.equal((await t.api('/api/marketplace/developer/keys', { method: 'POST', token: dev, body: { name: 'ci', publicKey } })).status, 201);
    const published = await eco3d(['plugin', 'publish', pkg, '--server', t.url, '--user', 'acme-developer', '--wait-s', '300'], { ECO3D_PASSWORD: 'acme-developer-password' });
    assert.equal(published.code, 0, published.stderr);
    assert.equal((JSON.parse(published.stdout) as { status: string }).status, 'in-review', published.stdout);
    // The same version again: refused, whatever the signature.
    const again = await eco3d(['plugin', 'publish', pkg, '--server', t.url, '--wait-s', '0'], { ECO3D_TOKEN: dev });
    assert.match(again.stderr, /ECO3D_ERR_CONFLICT/);
    // A hospital admin may not review; the platform admin publishes.
    assert.equal((await t.api('/api/marketplace/review/com.acme.hello/0.1.0', { method: 'POST', token: hospitalAdmin, body: { decision: 'publish' } })).status, 403);
    const review = await t.api('/api/marketplace/review/com.acme.hello/0.1.0', { method: 'POST', token: admin, body: { decision: 'publish', note: 'ok' } });
    assert.equal(review.status, 200, JSON.stringify(review.body));
    const doc = (await t.api('/api/openapi.json')).body as { paths: Record<string, unknown> };
    for (const p of ['/api/oauth/token', '/api/marketplace/developer/versions', '/api/marketplace/enablements/{pluginId}', '/api/marketplace/work-items']) assert.ok(p in doc.paths, p);
    const catalog = await t.api('/api/marketplace/plugins', { token: hospitalAdmin });
    assert.ok((catalog.body.plugins as Array<{ id: string }>).some((p) => p.id === 'com.acme.hello'));
  });

  test('enabled plugins run on a simulated scan: SR in the study, Observations, the charge split; no PHI reaches them; disabling cuts their tokens', { timeout: 600_000 }, async () => {
    // The example lesion-volume plugin and the PHI spy, submitted and published through the API.
    const key = generateDeveloperKey();
    assert.equal((await t.api('/api/marketplace/developer/keys', { method: 'POST', token: dev, body: { name: 'ci-2', publicKey: key.publicKey } })).status, 201);
    const spyDir = join(work, 'spy');
    cpSync(join(ROOT, 'marketplace', 'examples', 'lesion-volume'), join(work, 'lesion'), { recursive: true });
    const lesionManifest = JSON.parse(readFileSync(join(work, 'lesion', 'manifest.json'), 'utf8')) as { id: string; version: string; scopes: string[]; pricing: unknown };
    // Ours, for the test: the id under this developer's name.
    lesionManifest.id = 'com.acme.lesion-volume';
    writeFileSync(join(work, 'lesion', 'manifest.json'), JSON.stringify(lesionManifest));
    cpSync(join(work, 'lesion'), spyDir, { recursive: true });
    writeFileSync(join(spyDir, 'index.mjs'), SPY);
    writeFileSync(join(spyDir, 'manifest.json'), JSON.stringify({ ...lesionManifest, id: 'com.acme.phi-spy', name: 'PHI spy', pricing: { model: 'per-use', amountCents: 0 } }));
    for (const d of [join(work, 'lesion'), spyDir]) {
      const bytes = await packPlugin(d, loadDeveloperKey(key.privateKeyPem));
      const r = await fetch(`${t.url}/api/marketplace/developer/versions`, { method: 'POST', headers: { authorization: `Bearer ${dev}`, 'content-type': 'application/zip' }, body: bytes });
      assert.equal(r.status, 202, await r.text());
    }
    type V = { pluginId: string; status: string; validation?: { problems: string[] } };
    const statusOf = async (id: string): Promise<V | undefined> =>
      ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body.plugins as Array<{ id: string; versions: V[] }>).find((p) => p.id === id)?.versions[0];
    for (const id of ['com.acme.lesion-volume', 'com.acme.phi-spy']) {
      const v = await waitFor(`${id} validated`, 300_000, async () => {
        const s = await statusOf(id);
        return s !== undefined && s.status !== 'submitted' && s.status !== 'validating' ? s : undefined;
      });
      assert.equal(v.status, 'in-review', JSON.stringify(v.validation));
      assert.equal((await t.api(`/api/marketplace/review/${id}/1.0.0`, { method: 'POST', token: admin, body: { decision: 'publish' } })).status, 200);
    }
    const plugins = (await t.api('/api/marketplace/plugins', { token: hospitalAdmin })).body.plugins as Array<{ id: string; version: string; scopes: string[]; pricing: unknown }>;
    // With the init template's plugin (published above): it always measures.
    for (const id of ['com.acme.lesion-volume', 'com.acme.phi-spy', 'com.acme.hello']) {
      const p = plugins.find((x) => x.id === id)!;
      // What the admin saw is what is accepted: another price is refused.
      assert.equal((await t.api(`/api/marketplace/enablements/${id}`, { method: 'PUT', token: hospitalAdmin, body: { version: p.version, acceptScopes: p.scopes, acceptPricing: { model: 'per-use', amountCents: 1 } } })).status, 409);
      const en = await t.api(`/api/marketplace/enablements/${id}`, { method: 'PUT', token: hospitalAdmin, body: { version: p.version, acceptScopes: p.scopes, acceptPricing: p.pricing } });
      assert.equal(en.status, 201, JSON.stringify(en.body));
    }

    // A bedside sweep of a patient whose identity carries the marker everywhere.
    const bedside = await t.login('demo-bedside');
    const bs = await t.connect('bedside', bedside);
    const exam = await t.api('/api/exam', {
      method: 'PUT',
      token: bedside,
      body: { patientId: `${MARK}-ID-1`, patientName: `${MARK}^Name`, birthDate: '1960-02-03', sex: 'F', description: `${MARK} abdomen`, accessionNumber: 'ZQPHIACC1' },
    });
    assert.equal(exam.status, 201, JSON.stringify(exam.body));
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan: { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 } })), 'ack');
    const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
    const uid = running.acquisition.uid!;
    await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');

    type Item = { id: string; pluginId: string; state: string; acquisitionUid: string; outcome?: Record<string, unknown>; runs: unknown[] };
    const items = await waitFor('the three work items finished', 300_000, async () => {
      const list = ((await t.api('/api/marketplace/work-items', { token: hospitalAdmin })).body.workItems as Item[]).filter((i) => i.acquisitionUid === uid);
      return list.length === 3 && list.every((i) => i.state === 'COMPLETED' || i.state === 'CANCELED') ? list : undefined;
    });
    const lesion = items.find((i) => i.pluginId === 'com.acme.lesion-volume')!;
    const spy = items.find((i) => i.pluginId === 'com.acme.phi-spy')!;
    const hello = items.find((i) => i.pluginId === 'com.acme.hello')!;
    assert.equal(lesion.state, 'COMPLETED', JSON.stringify(lesion));
    assert.equal(hello.state, 'COMPLETED', JSON.stringify(hello));
    assert.equal(spy.state, 'COMPLETED', JSON.stringify(spy));
    // PHI: the spy found no trace of the marker in anything it received.
    assert.deepEqual(spy.outcome?.['measurements'], [{ name: 'PHI traces', value: 0, unit: '1' }], JSON.stringify(spy.outcome));

    // The SRs, in the real study: dciodvfy finds no error; they name the real patient (the
    // platform maps the opaque reference back); the lesion plugin's holds its measurement or its
    // "no lesion" finding (the simulated phantom decides), the template's its volume in mL.
    const srOf = (item: Item): string => {
      const f = findInstanceFile(join(t.dataDir, 'archive'), String(item.outcome?.['srSopInstanceUid']));
      assert.ok(f !== undefined, `the SR of ${item.pluginId} is in the archive`);
      const v = spawnSync('dciodvfy', [f], { encoding: 'utf8' });
      assert.deepEqual(`${v.stdout}${v.stderr}`.split('\n').filter((l) => l.startsWith('Error')), [], f);
      return spawnSync('dsrdump', ['+Pc', '+U8', f], { encoding: 'utf8' }).stdout;
    };
    const lesionSr = srOf(lesion);
    assert.match(lesionSr, new RegExp(`Patient +: ${MARK}\\^Name`));
    assert.match(lesionSr, /NUM:\(118565006,SCT,"Volume"\)="[0-9.]+" \(ml,UCUM|TEXT:\(121071,DCM,"Finding"\)="No hypoechoic lesion found"/);
    assert.match(srOf(hello), /NUM:\(118565006,SCT,"Volume"\)="[0-9.]+" \(ml,UCUM/);
    // FHIR Observations next to the study.
    const obsIds = hello.outcome?.['observations'] as string[];
    assert.ok(obsIds.length >= 2);
    const obs = await t.api(`/fhir/Observation/${obsIds[1]}`, { token: hospitalAdmin });
    assert.equal(obs.status, 200, JSON.stringify(obs.body));
    assert.equal(obs.body.valueQuantity?.code, 'ml');
    assert.equal(obs.body.status, 'preliminary');

    // The charge: 150 cents on the hospital's invoice, split 105 / 45 (booked once).
    const period = new Date().toISOString().slice(0, 7);
    const invoice = await t.api(`/api/billing/invoices/demo/${period}`, { token: admin });
    assert.equal(invoice.status, 200, JSON.stringify(invoice.body));
    assert.match(JSON.stringify(invoice.body), /plugin-use\//);
    const payout = await t.api(`/api/marketplace/developer/payouts/${period}.json`, { token: dev });
    const line = (payout.body.lines as Array<{ pluginId: string; grossCents: number; developerCents: number }>).find((l) => l.pluginId === 'com.acme.lesion-volume')!;
    assert.deepEqual([line.grossCents, line.developerCents], [150, 105]);

    // OAuth2 client credentials → a short-lived token, refused once the plugin is disabled.
    const client = await t.api('/api/marketplace/enablements/com.acme.lesion-volume/clients', { method: 'POST', token: hospitalAdmin });
    assert.equal(client.status, 201);
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret });
    const tok = (await (await fetch(`${t.url}/api/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form })).json()) as { token_type: string; expires_in: number; access_token: string };
    assert.equal(tok.token_type, 'Bearer');
    assert.equal(tok.expires_in, 900);
    const bad = await fetch(`${t.url}/api/oauth/token`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: 'wrong' }) });
    assert.equal(bad.status, 401);
    assert.equal(((await bad.json()) as { error: string }).error, 'invalid_client');
    const scopeTooWide = await t.api('/api/oauth/token', { method: 'POST', body: { grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret, scope: 'live:video' } });
    assert.equal(scopeTooWide.body.error, 'invalid_scope');
    assert.equal((await t.api('/api/marketplace/plugin/whoami', { token: tok.access_token })).body.pluginId, 'com.acme.lesion-volume');
    // A plugin token reaches no hospital endpoint.
    assert.equal((await t.api('/api/marketplace/work-items', { token: tok.access_token })).status, 403);
    assert.equal((await t.api('/api/acquisitions', { token: tok.access_token })).status, 403);
    const off = await t.api('/api/marketplace/enablements/com.acme.lesion-volume', { method: 'DELETE', token: hospitalAdmin });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    assert.equal(off.body.revokedTokens, 1);
    assert.equal((await t.api('/api/marketplace/plugin/whoami', { token: tok.access_token })).status, 401);
    const again = await t.api('/api/oauth/token', { method: 'POST', body: { grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret } });
    assert.equal(again.status, 401);
  });

  test('a live plugin streams with its OAuth token; disabling the plugin cuts its stream at once', { timeout: 300_000 }, async () => {
    const key = generateDeveloperKey();
    assert.equal((await t.api('/api/marketplace/developer/keys', { method: 'POST', token: dev, body: { name: 'ci-3', publicKey: key.publicKey } })).status, 201);
    const dir = join(work, 'external-ar');
    cpSync(join(work, 'lesion'), dir, { recursive: true });
    const manifest = {
      id: 'com.acme.ar-guide',
      name: 'AR guide (external)',
      version: '1.0.0',
      vendor: { name: 'Acme AI' },
      description: 'Guidance overlays computed on the vendor’s own machine from the pose stream.',
      kind: 'live',
      tier: 'research',
      scopes: ['live:pose'],
      pricing: { model: 'subscription', monthlyAmountCents: 1999 },
      entry: { kind: 'external' },
    };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    const r = await fetch(`${t.url}/api/marketplace/developer/versions`, { method: 'POST', headers: { authorization: `Bearer ${dev}`, 'content-type': 'application/zip' }, body: await packPlugin(dir, loadDeveloperKey(key.privateKeyPem)) });
    assert.equal(r.status, 202, await r.text());
    await waitFor('the live plugin validated', 120_000, async () => {
      const p = ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body.plugins as Array<{ id: string; versions: Array<{ status: string }> }>).find((x) => x.id === manifest.id);
      return p?.versions[0]?.status === 'in-review' ? true : undefined;
    });
    assert.equal((await t.api(`/api/marketplace/review/${manifest.id}/1.0.0`, { method: 'POST', token: admin, body: { decision: 'publish' } })).status, 200);
    const en = await t.api(`/api/marketplace/enablements/${manifest.id}`, { method: 'PUT', token: hospitalAdmin, body: { version: '1.0.0', acceptScopes: ['live:pose'], acceptPricing: manifest.pricing } });
    assert.equal(en.status, 201, JSON.stringify(en.body));
    const client = await t.api(`/api/marketplace/enablements/${manifest.id}/clients`, { method: 'POST', token: hospitalAdmin });
    const tok = await t.api('/api/oauth/token', { method: 'POST', body: { grant_type: 'client_credentials', client_id: client.body.clientId, client_secret: client.body.clientSecret } });
    assert.equal(tok.status, 200, JSON.stringify(tok.body));
    assert.equal(tok.body.scope, 'live:pose');

    // The plugin joins the live streams with its token: it is granted telemetry only.
    const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws/live`);
    const inbox: Array<Record<string, unknown>> = [];
    ws.on('message', (d) => inbox.push(JSON.parse((d as Buffer).toString('utf8')) as Record<string, unknown>));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'join', token: tok.body.access_token, want: { video: false, telemetry: true, volume: false, call: false } }));
    const welcome = await waitFor('welcome', 15_000, async () => inbox.find((m) => m.type === 'welcome'));
    assert.deepEqual(welcome.grants, { video: false, telemetry: true, volume: false, call: false, teleop: false });

    // Disabled: the enablement, the client, the token and the stream end together.
    const off = await t.api(`/api/marketplace/enablements/${manifest.id}`, { method: 'DELETE', token: hospitalAdmin });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    assert.equal(off.body.cutStreams, 1);
    const c = await closed;
    assert.equal(c.code, 1008);
    assert.ok(inbox.some((m) => m.type === 'error' && m.code === 'ECO3D_ERR_UNAUTHENTICATED'), JSON.stringify(inbox.filter((m) => m.type === 'error')));
    // The subscription month was charged when enabled (and once only).
    const period = new Date().toISOString().slice(0, 7);
    const invoice = JSON.stringify((await t.api(`/api/billing/invoices/demo/${period}`, { token: admin })).body);
    assert.equal(invoice.split(`plugin-sub/demo/${manifest.id}/${period}`).length - 1 >= 1, true, invoice.slice(0, 2000));
  });

  test('a runaway plugin is stopped at its CPU limit while a scan runs undisturbed', { timeout: 600_000 }, async () => {
    // It behaves on the demo studies (so it passes validation) and spins on real scans: the
    // sandbox, not the review, is what contains it.
    const key = generateDeveloperKey();
    assert.equal((await t.api('/api/marketplace/developer/keys', { method: 'POST', token: dev, body: { name: 'ci-4', publicKey: key.publicKey } })).status, 201);
    const dir = join(work, 'spinner');
    cpSync(join(work, 'lesion'), dir, { recursive: true });
    writeFileSync(join(dir, 'index.mjs'), `export async function analyze(input) {
  if (input.study.ref.startsWith('S-')) for (;;) {}
  return { measurements: [], findings: [{ text: 'fine' }] };
}
`);
    const manifest = { ...(JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { scopes: string[] }), id: 'com.acme.spinner', name: 'Spinner', pricing: { model: 'per-use', amountCents: 0 }, limits: { memoryMb: 128, cpuTimeMs: 3000, wallTimeMs: 20000 } };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
    const r = await fetch(`${t.url}/api/marketplace/developer/versions`, { method: 'POST', headers: { authorization: `Bearer ${dev}`, 'content-type': 'application/zip' }, body: await packPlugin(dir, loadDeveloperKey(key.privateKeyPem)) });
    assert.equal(r.status, 202, await r.text());
    await waitFor('the spinner validated', 120_000, async () => {
      const p = ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body.plugins as Array<{ id: string; versions: Array<{ status: string }> }>).find((x) => x.id === 'com.acme.spinner');
      return p?.versions[0]?.status === 'in-review' ? true : undefined;
    });
    assert.equal((await t.api('/api/marketplace/review/com.acme.spinner/1.0.0', { method: 'POST', token: admin, body: { decision: 'publish' } })).status, 200);
    for (const id of ['com.acme.phi-spy', 'com.acme.hello']) assert.equal((await t.api(`/api/marketplace/enablements/${id}`, { method: 'DELETE', token: hospitalAdmin })).status, 200);
    const en = await t.api('/api/marketplace/enablements/com.acme.spinner', { method: 'PUT', token: hospitalAdmin, body: { version: '1.0.0', acceptScopes: manifest.scopes, acceptPricing: manifest.pricing } });
    assert.equal(en.status, 201, JSON.stringify(en.body));

    const bedside = await t.login('demo-bedside');
    const bs = await t.connect('bedside', bedside);
    const sweep = async (): Promise<string> => {
      assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan: { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 } })), 'ack');
      const running = await bs.status((st) => st.acquisition.uid !== null && st.acquisition.state !== 'idle' && st.acquisition.state !== 'completed', 5000, 'acquisition running');
      const uid = running.acquisition.uid!;
      const end = await bs.status((st) => st.acquisition.uid === uid && (st.acquisition.state === 'completed' || st.acquisition.state === 'aborted'), 60_000, 'acquisition ended');
      assert.equal(end.acquisition.state, 'completed', 'the scan completes normally');
      return uid;
    };
    const first = await sweep();
    type Item = { pluginId: string; state: string; acquisitionUid: string; outcome?: Record<string, unknown>; runs: Array<{ status: string; reason?: string; cpuMs: number }> };
    const spinnerItem = async (): Promise<Item | undefined> =>
      ((await t.api('/api/marketplace/work-items', { token: hospitalAdmin })).body.workItems as Item[]).find((i) => i.acquisitionUid === first && i.pluginId === 'com.acme.spinner');
    await waitFor('the spinner running', 300_000, async () => ((await spinnerItem())?.state === 'IN PROGRESS' ? true : undefined));
    // A scan while it spins: completes normally.
    await sweep();
    const done = await waitFor('the spinner stopped', 120_000, async () => {
      const i = await spinnerItem();
      return i?.state === 'CANCELED' ? i : undefined;
    });
    assert.equal(done.outcome?.['reason'], 'cpu-limit', JSON.stringify(done));
    assert.equal(done.runs.length, 1);
    assert.ok(done.runs[0]!.cpuMs >= 3000 && done.runs[0]!.cpuMs < 4000, `stopped at its limit: ${done.runs[0]!.cpuMs} ms of CPU`);
  });
});

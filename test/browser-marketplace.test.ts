// The plugin marketplace's two pages in Chromium against a real `eco3d start` (issue 8): a
// developer signs in to the developer portal, registers a signing key (and revokes another),
// uploads a signed package, and watches validation run it in the sandbox on the demo studies
// until it is in review; the platform admin publishes it from the Review section; a hospital's
// admin finds it in the marketplace, enables it through the dialog that lists its permissions
// and price, creates client credentials (which really get a token), sees the work item a scan
// made run the plugin, and disables it (which revokes that token).
//
// Needs root: validation and work items run the plugin in the sandbox (unshare, setpriv).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { generateDeveloperKey, keyFingerprint, loadDeveloperKey, packPlugin } from '../marketplace/index.ts';
import { ADMIN_PASSWORD, errorCode, startTestServer, waitFor, type TestServer } from './harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const EXAMPLE = join(ROOT, 'marketplace', 'examples', 'lesion-volume');
const DEV_TENANT = 'acme-ai';
const DEV = 'acme-dev';
const DEV_PW = 'acme-developer-password-for-tests';
const HOSPITAL_ADMIN = 'demo-market-admin';
const HOSPITAL_PW = 'market-admin-password-for-tests';

// The page functions below run in the browser; this file is type-checked without the DOM lib.
declare const document: { querySelector(sel: string): { dataset: Record<string, string | undefined> } | null };

function nicedChromium(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-chromium-'));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec nice -n 5 ${JSON.stringify(CHROMIUM)} "$@"\n`, { mode: 0o755 });
  return wrapper;
}

/** The example plugin's folder, or (while the example is being written) a tiny analysis plugin. */
function pluginDir(): { dir: string; id: string; version: string; scopes: string[]; pricing: { model: string; amountCents: number } } {
  if (existsSync(join(EXAMPLE, 'manifest.json')) && existsSync(join(EXAMPLE, 'index.mjs'))) {
    return { dir: EXAMPLE, id: 'org.eco3d.examples.lesion-volume', version: '1.0.0', scopes: ['study:deidentified:read', 'results:write'], pricing: { model: 'per-use', amountCents: 150 } };
  }
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-tiny-plugin-'));
  const manifest = {
    id: 'org.eco3d.tests.voxel-volume',
    name: 'Voxel volume (test)',
    version: '1.0.0',
    vendor: { name: 'Eco3D tests' },
    description: 'The volume of the whole field of view.',
    kind: 'analysis',
    tier: 'research',
    scopes: ['study:deidentified:read', 'results:write'],
    pricing: { model: 'per-use', amountCents: 150 },
    entry: 'index.mjs',
  };
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  writeFileSync(
    join(dir, 'index.mjs'),
    `export async function analyze(input) {
  const [x, y, z] = input.volume.dims;
  const [sx, sy, sz] = input.volume.spacingMm;
  return { measurements: [{ name: 'Field of view volume', value: Math.round((x * sx * y * sy * z * sz) / 10) / 100, unit: 'mL', concept: { value: '118565006', scheme: 'SCT', meaning: 'Volume' } }], findings: [] };
}
`,
  );
  return { dir, id: manifest.id, version: manifest.version, scopes: manifest.scopes, pricing: manifest.pricing };
}

/** One attribute of every element matching `selector`, in document order. */
function attrs(page: Page, selector: string, name: string): Promise<(string | null)[]> {
  type El = { getAttribute(n: string): string | null };
  return page.$$eval(selector, (els, n) => els.map((e) => (e as unknown as El).getAttribute(n)), name);
}

async function signIn(page: Page, url: string, username: string, password: string, next: string): Promise<void> {
  await page.goto(`${url}/index.html?next=${next}`);
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#login');
  await page.waitForURL((u) => u.pathname.endsWith(`/${next}`), { timeout: 15_000 });
}

describe('the plugin marketplace in the browser (Chromium)', { timeout: 600_000 }, () => {
  let t: TestServer;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  let platform: string;
  let dev: string;
  let hospital: string;

  before(async () => {
    for (const page of ['developer.html', 'marketplace.html']) {
      if (!existsSync(join(ROOT, 'viewer', 'dist', page))) throw new Error(`viewer/dist/${page} is missing: build the browser apps first (scripts/test.sh does)`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    [t, browser] = await Promise.all([
      startTestServer(),
      chromium.launch({ executablePath: nicedChromium(), headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] }),
    ]);
    platform = await t.login('admin', ADMIN_PASSWORD);
    const registered = await t.api(`/api/marketplace/developers/${DEV_TENANT}`, { method: 'PUT', token: platform, body: { name: 'Acme AI', shareBps: 7000 } });
    assert.equal(registered.status, 201, JSON.stringify(registered.body));
    for (const [tenantId, username, password] of [
      [DEV_TENANT, DEV, DEV_PW],
      ['demo', HOSPITAL_ADMIN, HOSPITAL_PW],
    ] as const) {
      const created = await t.api('/api/accounts', { method: 'POST', token: platform, body: { tenantId, username, role: 'tenant-admin', password } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
    }
    dev = await t.login(DEV, DEV_PW);
    hospital = await t.login(HOSPITAL_ADMIN, HOSPITAL_PW);
  });
  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await t?.close();
  });

  test('submit, validate, review, publish, enable, use, disable', async () => {
    const plugin = pluginDir();
    const key = generateDeveloperKey();
    const zip = join(mkdtempSync(join(tmpdir(), 'eco3d-package-')), 'plugin.zip');
    writeFileSync(zip, await packPlugin(plugin.dir, loadDeveloperKey(key.privateKeyPem)));

    const newPage = async (name: string): Promise<{ page: Page; errors: string[]; shot: (what: string) => Promise<void> }> => {
      const ctx = await browser.newContext({ viewport: { width: 1500, height: 1100 } });
      contexts.push(ctx);
      const page = await ctx.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      return { page, errors, shot: async (what) => writeFileSync(join(ARTIFACTS, `marketplace-${name}-${what}.png`), await page.screenshot({ fullPage: true })) };
    };
    const d = await newPage('developer');
    const p = await newPage('platform');
    const h = await newPage('hospital');
    try {
      // --- the developer: the home page links to the portal, which shows the developer ---------
      await d.page.goto(`${t.url}/index.html`);
      await d.page.fill('#username', DEV);
      await d.page.fill('#password', DEV_PW);
      await d.page.click('#login');
      await d.page.waitForSelector('#nav-developer:not(.hidden)', { timeout: 15_000 });
      assert.equal(await d.page.isHidden('#nav-marketplace'), true, 'a developer tenant has no marketplace link');
      await d.page.click('#nav-developer');
      await d.page.waitForURL((u) => u.pathname.endsWith('/developer.html'), { timeout: 15_000 });
      await d.page.waitForSelector('[data-testid="page-state"][data-state="loaded"]', { timeout: 15_000 });
      assert.equal(await d.page.textContent('[data-testid="developer-name"]'), 'Acme AI');
      assert.equal(await d.page.getAttribute('[data-testid="developer-share"]', 'data-bps'), '7000');
      assert.equal(await d.page.isVisible('[data-testid="keys-empty"]'), true, 'no key yet');
      assert.equal(await d.page.isHidden('[data-testid="review-section"]'), true, 'review is the platform’s');
      // The sandbox tenant's demo studies, with their download links (which work).
      const demo = (await t.api('/api/marketplace/demo-studies', { token: dev })).body as { studies: { ref: string; sizeBytes: number }[] };
      assert.ok(demo.studies.length > 0, 'the sandbox tenant has demo studies');
      await d.page.waitForSelector(`[data-testid="demo-studies-table"] tr[data-ref="${demo.studies[0]!.ref}"]`, { timeout: 10_000 });
      assert.equal((await d.page.$$('[data-testid="demo-study-row"]')).length, demo.studies.length);
      const href = await d.page.getAttribute(`tr[data-ref="${demo.studies[0]!.ref}"] [data-testid="demo-study-download"]`, 'href');
      const dl = await d.page.evaluate(async (u) => {
        const r = await fetch(u!);
        return { status: r.status, type: r.headers.get('content-type'), bytes: (await r.arrayBuffer()).byteLength };
      }, href);
      assert.deepEqual(dl, { status: 200, type: 'application/dicom', bytes: demo.studies[0]!.sizeBytes });

      // --- keys: one to revoke, then the one that signs ------------------------------------------
      const old = generateDeveloperKey();
      await d.page.fill('[data-testid="key-name"]', 'old laptop');
      await d.page.fill('[data-testid="key-public"]', old.publicKey);
      await d.page.click('[data-testid="key-add"]');
      const oldRow = `[data-testid="key-row"][data-fingerprint="${keyFingerprint(Buffer.from(old.publicKey, 'base64'))}"]`;
      await d.page.waitForSelector(oldRow, { timeout: 10_000 });
      await d.page.click(`${oldRow} [data-testid="key-revoke"]`);
      await d.page.waitForSelector('[data-testid="confirm-dialog"][open]');
      await d.page.click('[data-testid="confirm-ok"]');
      await d.page.waitForSelector(`${oldRow}[data-revoked="true"]`, { timeout: 10_000 });

      const fingerprint = keyFingerprint(Buffer.from(key.publicKey, 'base64'));
      await d.page.fill('[data-testid="key-name"]', 'release key');
      await d.page.fill('[data-testid="key-public"]', key.publicKey);
      await d.page.click('[data-testid="key-add"]');
      const keyRow = `[data-testid="key-row"][data-fingerprint="${fingerprint}"]`;
      await d.page.waitForSelector(keyRow, { timeout: 10_000 });
      assert.equal(await d.page.textContent(`${keyRow} [data-testid="key-status"]`), 'active');
      const keys = (await t.api('/api/marketplace/developer/keys', { token: dev })).body as { keys: { fingerprint: string; revokedAtMs?: number }[] };
      assert.deepEqual(keys.keys.map((k) => [k.fingerprint, k.revokedAtMs !== undefined]).sort(), [
        [fingerprint, false],
        [keyFingerprint(Buffer.from(old.publicKey, 'base64')), true],
      ].sort());

      // --- submit; validation runs it in the sandbox on the demo studies ---------------------------
      await d.page.setInputFiles('[data-testid="package-file"]', zip);
      await d.page.click('[data-testid="package-submit"]');
      await d.page.waitForSelector('[data-testid="submit-result"][data-state="submitted"]', { timeout: 30_000 });
      assert.equal(await d.page.getAttribute('[data-testid="submit-result"]', 'data-plugin'), plugin.id);
      const row = `[data-testid="version-row"][data-plugin="${plugin.id}"][data-version="${plugin.version}"]`;
      await d.page.waitForSelector(row, { timeout: 10_000 });
      // The page polls until validation is over: in review, or failed (which the assert shows).
      await d.page.waitForSelector(`${row}[data-status="in-review"], ${row}[data-status="validation-failed"]`, { timeout: 180_000 });
      await d.shot('validated');
      const validated = ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body as { plugins: { id: string; versions: { version: string; status: string; validation?: { ok: boolean; runs: unknown[]; problems: string[] } }[] }[] }).plugins;
      const v = validated.find((x) => x.id === plugin.id)!.versions.find((x) => x.version === plugin.version)!;
      assert.equal(v.status, 'in-review', `validation: ${JSON.stringify(v.validation)}`);
      assert.equal(await d.page.getAttribute(`${row} [data-testid="version-status"]`, 'data-status'), 'in-review');
      assert.equal(await d.page.getAttribute(`${row} [data-testid="validation"]`, 'data-ok'), 'true');
      await d.page.click(`${row} [data-testid="validation"] summary`);
      assert.equal((await d.page.$$(`${row} [data-testid="validation"] tbody tr[data-status="completed"]`)).length, demo.studies.length, 'one completed run per demo study');
      assert.equal((await d.page.$$(`${row} [data-testid="validation"] tbody tr`)).length, v.validation!.runs.length);
      assert.equal(await d.page.getAttribute('[data-testid="plugins"]', 'data-polling'), 'false', 'polling stops once validation is over');

      // --- the platform admin publishes it from the Review section -------------------------------
      await signIn(p.page, t.url, 'admin', ADMIN_PASSWORD, 'developer.html');
      await p.page.waitForSelector('[data-testid="review-section"]:not(.hidden)', { timeout: 15_000 });
      assert.equal(await p.page.isHidden('#dev-content'), true, 'the platform has no developer record');
      const reviewRow = `[data-testid="review-row"][data-plugin="${plugin.id}"][data-version="${plugin.version}"]`;
      await p.page.waitForSelector(reviewRow, { timeout: 10_000 });
      assert.deepEqual(
        await attrs(p.page, `${reviewRow} [data-testid="review-scopes"] li`, 'data-scope'),
        plugin.scopes,
      );
      // Reject needs a note: without one nothing is sent.
      await p.page.click(`${reviewRow} [data-testid="review-reject"]`);
      await p.page.waitForSelector('#errors .error-line[data-code="ECO3D_ERR_BAD_REQUEST"]', { timeout: 5000 });
      assert.equal(await p.page.isHidden('[data-testid="confirm-dialog"]'), true);
      await p.page.fill(`${reviewRow} [data-testid="review-note-input"]`, 'Validated on the demo studies; research tier, no certificate needed.');
      await p.page.click(`${reviewRow} [data-testid="review-publish"]`);
      await p.page.waitForSelector('[data-testid="confirm-dialog"][open]');
      await p.page.click('[data-testid="confirm-ok"]');
      await p.page.waitForSelector(reviewRow, { state: 'detached', timeout: 10_000 });
      assert.equal(await p.page.isVisible('[data-testid="review-empty"]'), true);
      assert.deepEqual((await t.api('/api/marketplace/review', { token: platform })).body, { versions: [] });
      // The developer sees it published, with the reviewer's note.
      await d.page.reload();
      await d.page.waitForSelector(`${row}[data-status="published"]`, { timeout: 10_000 });
      assert.match((await d.page.textContent(`${row} [data-testid="review-note"]`)) ?? '', /research tier, no certificate needed/);

      // --- the hospital's admin: the marketplace -------------------------------------------------
      await h.page.goto(`${t.url}/index.html`);
      await h.page.fill('#username', HOSPITAL_ADMIN);
      await h.page.fill('#password', HOSPITAL_PW);
      await h.page.click('#login');
      await h.page.waitForSelector('#nav-marketplace:not(.hidden)', { timeout: 15_000 });
      assert.equal(await h.page.isHidden('#nav-developer'), true, 'a hospital has no developer portal link');
      await h.page.click('#nav-marketplace');
      await h.page.waitForURL((u) => u.pathname.endsWith('/marketplace.html'), { timeout: 15_000 });
      const cat = `[data-testid="catalog-row"][data-plugin="${plugin.id}"]`;
      await h.page.waitForSelector(`${cat}[data-enabled="false"]`, { timeout: 15_000 });
      assert.equal(await h.page.getAttribute(cat, 'data-version'), plugin.version);
      assert.equal(await h.page.textContent(`${cat} [data-testid="price"]`), '1.50 € per use');
      assert.match((await h.page.textContent(`${cat} [data-testid="tier"]`)) ?? '', /research only/);
      assert.deepEqual(await attrs(h.page, `${cat} [data-testid="scopes"] li`, 'data-scope'), plugin.scopes);
      assert.match((await h.page.textContent(`${cat} [data-testid="scopes"] li[data-scope="study:deidentified:read"]`)) ?? '', /de-identified/);
      assert.equal(await h.page.isVisible('[data-testid="work-items-empty"]'), true, 'no work item yet');

      // Enable: the dialog lists exactly the scopes and the price; Cancel changes nothing.
      await h.page.click(`${cat} [data-testid="enable"]`);
      await h.page.waitForSelector('[data-testid="enable-dialog"][open]');
      assert.deepEqual(await attrs(h.page, '[data-testid="enable-scopes"] li', 'data-scope'), plugin.scopes);
      assert.equal(await h.page.textContent('[data-testid="enable-price"]'), '1.50 € per use');
      assert.equal(await h.page.textContent('[data-testid="enable-version"]'), plugin.version);
      await h.page.click('[data-testid="enable-cancel"]');
      await h.page.waitForSelector('[data-testid="enable-dialog"]', { state: 'hidden' });
      assert.deepEqual(((await t.api('/api/marketplace/enablements', { token: hospital })).body as { enablements: unknown[] }).enablements, []);
      await h.page.click(`${cat} [data-testid="enable"]`);
      await h.page.waitForSelector('[data-testid="enable-dialog"][open]');
      await h.shot('enable-dialog');
      await h.page.click('[data-testid="enable-confirm"]');
      await h.page.waitForSelector(`${cat}[data-enabled="true"]`, { timeout: 10_000 });
      assert.equal(await h.page.getAttribute(`${cat} [data-testid="enabled-state"]`, 'data-enabled-version'), plugin.version);
      const enabled = ((await t.api('/api/marketplace/enablements', { token: hospital })).body as { enablements: { pluginId: string; version: string; scopes: string[]; pricing: unknown; enabledBy: string; disabledAtMs?: number }[] }).enablements;
      assert.equal(enabled.length, 1);
      assert.deepEqual(
        { pluginId: enabled[0]!.pluginId, version: enabled[0]!.version, scopes: enabled[0]!.scopes, pricing: enabled[0]!.pricing, by: enabled[0]!.enabledBy, active: enabled[0]!.disabledAtMs === undefined },
        { pluginId: plugin.id, version: plugin.version, scopes: plugin.scopes, pricing: plugin.pricing, by: HOSPITAL_ADMIN, active: true },
      );

      // Client credentials, shown once; they really get a token.
      await h.page.click(`${cat} [data-testid="create-client"]`);
      await h.page.waitForSelector('[data-testid="client-credentials"]:not(.hidden)', { timeout: 10_000 });
      const clientId = (await h.page.textContent('[data-testid="client-id"]')) ?? '';
      const clientSecret = (await h.page.textContent('[data-testid="client-secret"]')) ?? '';
      assert.ok(clientId.length > 0 && clientSecret.length > 0, 'client id and secret shown');
      const tokenBody = { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret };
      const minted = await t.api('/api/oauth/token', { method: 'POST', body: tokenBody });
      assert.equal(minted.status, 200, JSON.stringify(minted.body));
      assert.equal(minted.body.token_type, 'Bearer');
      assert.deepEqual(String(minted.body.scope).split(' ').sort(), [...plugin.scopes].sort());
      const pluginToken = minted.body.access_token as string;
      const whoami = await t.api('/api/marketplace/plugin/whoami', { token: pluginToken });
      assert.equal(whoami.status, 200, JSON.stringify(whoami.body));
      assert.deepEqual([whoami.body.pluginId, whoami.body.tenantId], [plugin.id, 'demo']);
      await h.page.click('[data-testid="client-done"]');
      assert.equal(await h.page.textContent('[data-testid="client-secret"]'), '', 'the secret leaves the page');

      // A scan: its work item runs the plugin, and the page lists it with its run.
      const bs = await t.connect('bedside', await t.login('demo-bedside'));
      const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 };
      assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
      const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
      const uid = running.acquisition.uid!;
      await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');
      type Item = { id: string; acquisitionUid: string; state: string; attempts: number; runs: { status: string; reason?: string }[] };
      const item = await waitFor('the work item to finish', 120_000, async () => {
        const items = ((await t.api('/api/marketplace/work-items', { token: hospital })).body as { workItems: Item[] }).workItems;
        const it = items.find((w) => w.acquisitionUid === uid);
        return it !== undefined && (it.state === 'COMPLETED' || it.state === 'CANCELED') ? it : undefined;
      });
      // The page refreshes its work items every 10 s.
      const itemRow = `[data-testid="work-item-row"][data-work-item="${item.id}"]`;
      await h.page.waitForFunction((sel) => document.querySelector(sel)?.dataset.state === 'COMPLETED' || document.querySelector(sel)?.dataset.state === 'CANCELED', itemRow, { timeout: 30_000, polling: 500 });
      assert.equal(await h.page.getAttribute(itemRow, 'data-state'), item.state);
      assert.equal(await h.page.getAttribute(itemRow, 'data-plugin'), plugin.id);
      assert.equal(await h.page.textContent(`${itemRow} [data-testid="work-item-state"]`), item.state);
      assert.deepEqual(await attrs(h.page, `${itemRow} [data-testid="work-item-run"]`, 'data-status'), item.runs.map((r) => r.status));
      assert.deepEqual(await attrs(h.page, `${itemRow} [data-testid="work-item-run"]`, 'data-reason'), item.runs.map((r) => r.reason ?? ''));
      assert.equal(item.state, 'COMPLETED', `the plugin ran: ${JSON.stringify(item)}`);
      await h.shot('enabled');
      // The developer sees the use and the money of it (a per-use price, split by their share).
      const usage = ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body as { plugins: { id: string; usage: Record<string, number> }[] }).plugins.find((x) => x.id === plugin.id)!.usage;
      assert.deepEqual(usage, { runs: 1, completed: 1, failed: 0, chargedCents: plugin.pricing.amountCents, developerCents: Math.round((plugin.pricing.amountCents * 7000) / 10_000) });
      await d.page.reload();
      const usageSel = `[data-testid="usage"][data-plugin="${plugin.id}"]`;
      await d.page.waitForSelector(`${usageSel}[data-runs="1"]`, { timeout: 10_000 });
      assert.deepEqual(
        await d.page.$eval(usageSel, (e) => ({ ...(e as unknown as { dataset: Record<string, string> }).dataset })),
        { testid: 'usage', plugin: plugin.id, runs: '1', completed: '1', failed: '0', chargedCents: String(usage.chargedCents), developerCents: String(usage.developerCents) },
      );
      assert.equal(await d.page.isVisible('[data-testid="payouts-empty"]'), true, 'no statement issued yet');

      // Disable: the confirmation, then what it revoked (the token minted above).
      await h.page.click(`${cat} [data-testid="disable"]`);
      await h.page.waitForSelector('[data-testid="disable-dialog"][open]');
      await h.page.click('[data-testid="disable-confirm"]');
      await h.page.waitForSelector(`[data-testid="disable-result"]:not(.hidden)[data-plugin="${plugin.id}"]`, { timeout: 10_000 });
      const summary = await h.page.$eval('[data-testid="disable-result"]', (e) => ({ ...(e as unknown as { dataset: Record<string, string> }).dataset }));
      assert.deepEqual(
        { tokens: summary.revokedTokens, clients: summary.revokedClients, streams: summary.cutStreams, items: summary.canceledWorkItems },
        { tokens: '1', clients: '1', streams: '0', items: '0' },
      );
      assert.match((await h.page.textContent('[data-testid="disable-result"]')) ?? '', /1 token revoked/);
      await h.page.waitForSelector(`${cat}[data-enabled="false"]`, { timeout: 10_000 });
      const after = ((await t.api('/api/marketplace/enablements', { token: hospital })).body as { enablements: { disabledAtMs?: number }[] }).enablements;
      assert.equal(after.length, 1);
      assert.ok(after[0]!.disabledAtMs !== undefined, 'the enablement is disabled');
      const refused = await t.api('/api/oauth/token', { method: 'POST', body: tokenBody });
      assert.equal(refused.status, 401, 'the client credentials are revoked with it');
      assert.equal(refused.body.error, 'invalid_client');
      assert.equal((await t.api('/api/marketplace/plugin/whoami', { token: pluginToken })).status, 401, 'the plugin token is revoked');
      await h.shot('disabled');

      assert.deepEqual(d.errors, [], 'no script error on the developer portal');
      assert.deepEqual(p.errors, [], 'no script error on the review page');
      assert.deepEqual(h.errors, [], 'no script error on the marketplace page');
    } catch (err) {
      await Promise.all([d.shot('failure'), p.shot('failure'), h.shot('failure')].map((s) => s.catch(() => undefined)));
      throw err;
    }
  });
});

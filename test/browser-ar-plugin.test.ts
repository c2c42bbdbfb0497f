// A live AR plugin from the marketplace on the sonographer's console, in Chromium against a real
// `eco3d start` (issue 8): a developer submits the packaged image-plane AR example, validation
// checks its browser module, the platform publishes it, a hospital's admin enables it; the
// sonographer's console then lists it as a layer labelled with its name; turned on, its sandboxed
// frame (an opaque origin: no cookie, no API as the user) connects with a session token and draws
// over the live B-mode; disabled by the admin, the server cuts its stream and the layer says so.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Frame, type Page } from 'playwright-core';
import { generateDeveloperKey, loadDeveloperKey, packPlugin } from '../marketplace/index.ts';
import { ADMIN_PASSWORD, startTestServer, waitFor, type TestServer } from './harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const EXAMPLE = join(ROOT, 'marketplace', 'examples', 'image-plane-ar');
const PLUGIN_ID = 'org.eco3d.examples.image-plane-ar';
const PLUGIN_NAME = 'Image plane AR (example)';
const VERSION = '1.0.0';
const SCOPES = ['live:video', 'live:pose'];
const PRICING = { model: 'subscription', monthlyAmountCents: 990 };
const DEV_TENANT = 'acme-ar';
const DEV = 'acme-ar-dev';
const DEV_PW = 'acme-ar-developer-password-for-tests';
const HOSPITAL_ADMIN = 'demo-ar-admin';
const HOSPITAL_PW = 'ar-admin-password-for-tests';

// The page functions below run in the browser; this file is type-checked without the DOM lib.
interface PageCanvas {
  width: number;
  height: number;
  getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
}
declare const document: { querySelector(sel: string): unknown; cookie: string; title: string; createElement(tag: string): unknown; body: { append(n: unknown): void } };
declare const self: { origin: string };
declare function addEventListener(type: 'message', cb: (e: { origin: string; data: unknown }) => void): void;

function nicedChromium(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-chromium-'));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec nice -n 5 ${JSON.stringify(CHROMIUM)} "$@"\n`, { mode: 0o755 });
  return wrapper;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('a live AR plugin on the console (Chromium)', { timeout: 600_000 }, () => {
  let t: TestServer;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  let platform: string;
  let dev: string;
  let hospital: string;

  before(async () => {
    for (const page of ['console.html', 'plugin-frame.html']) {
      if (!existsSync(join(ROOT, 'viewer', 'dist', page))) throw new Error(`viewer/dist/${page} is missing: build the browser apps first (scripts/test.sh does)`);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    [t, browser] = await Promise.all([
      startTestServer(),
      chromium.launch({
        executablePath: nicedChromium(),
        headless: true,
        args: [
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
          // The console asks for a camera and microphone (the call with the bedside).
          '--use-fake-device-for-media-stream',
          '--use-fake-ui-for-media-stream',
        ],
      }),
    ]);
    platform = await t.login('admin', ADMIN_PASSWORD);
    const registered = await t.api(`/api/marketplace/developers/${DEV_TENANT}`, { method: 'PUT', token: platform, body: { name: 'Acme AR' } });
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

  const newPage = async (name: string): Promise<{ page: Page; errors: string[]; logs: string[]; shot: (what: string) => Promise<void> }> => {
    const ctx = await browser.newContext({ viewport: { width: 1500, height: 1000 } });
    contexts.push(ctx);
    const page = await ctx.newPage();
    const errors: string[] = [];
    const logs: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    // The frames' console too (a module that fails to load says why only there).
    page.on('console', (m) => logs.push(`${m.type()} ${m.location().url}: ${m.text()}`));
    return { page, errors, logs, shot: async (what) => writeFileSync(join(ARTIFACTS, `ar-plugin-${name}-${what}.png`), await page.screenshot({ fullPage: true })) };
  };

  test('submit, validate, publish, enable; the console runs it sandboxed; disable cuts it', async () => {
    // --- the developer: a key, the signed package, validation (a browser module: node --check) ---
    const key = generateDeveloperKey();
    const added = await t.api('/api/marketplace/developer/keys', { method: 'POST', token: dev, body: { name: 'release key', publicKey: key.publicKey } });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const zip = await packPlugin(EXAMPLE, loadDeveloperKey(key.privateKeyPem));
    const submitted = await fetch(`${t.url}/api/marketplace/developer/versions`, { method: 'POST', headers: { authorization: `Bearer ${dev}`, 'content-type': 'application/zip' }, body: zip });
    assert.equal(submitted.status, 202, await submitted.clone().text());
    type Version = { version: string; status: string; kind: string; scopes: string[]; pricing: unknown; validation?: { ok: boolean; runs: unknown[]; problems: string[] } };
    const validated = await waitFor('validation to end', 120_000, async () => {
      const plugins = ((await t.api('/api/marketplace/developer/plugins', { token: dev })).body as { plugins: { id: string; versions: Version[] }[] }).plugins;
      const v = plugins.find((p) => p.id === PLUGIN_ID)?.versions.find((x) => x.version === VERSION);
      return v !== undefined && v.status !== 'submitted' && v.status !== 'validating' ? v : undefined;
    });
    assert.equal(validated.status, 'in-review', `validation: ${JSON.stringify(validated.validation)}`);
    assert.deepEqual({ kind: validated.kind, scopes: validated.scopes, pricing: validated.pricing }, { kind: 'live', scopes: SCOPES, pricing: PRICING });
    assert.deepEqual(validated.validation, { ok: true, runs: [], problems: [] }, 'the browser module parses (node --check); nothing runs on the platform');

    // --- the platform publishes; the hospital's admin enables it (what it was shown) -------------
    const published = await t.api(`/api/marketplace/review/${PLUGIN_ID}/${VERSION}`, { method: 'POST', token: platform, body: { decision: 'publish', note: 'Live overlay, research tier.' } });
    assert.equal(published.status, 200, JSON.stringify(published.body));
    const catalog = ((await t.api('/api/marketplace/plugins', { token: hospital })).body as { plugins: { id: string; name: string; version: string; kind: string; scopes: string[]; pricing: unknown; enabled: boolean }[] }).plugins;
    const entry = catalog.find((p) => p.id === PLUGIN_ID);
    assert.ok(entry !== undefined, 'the plugin is in the hospital’s catalog');
    assert.deepEqual({ name: entry.name, version: entry.version, kind: entry.kind, enabled: entry.enabled }, { name: PLUGIN_NAME, version: VERSION, kind: 'live', enabled: false });
    const enabled = await t.api(`/api/marketplace/enablements/${PLUGIN_ID}`, { method: 'PUT', token: hospital, body: { version: VERSION, acceptScopes: entry.scopes, acceptPricing: entry.pricing } });
    assert.equal(enabled.status, 201, JSON.stringify(enabled.body));

    // The console's list (what the sonographer's session sees).
    const sono = await t.login('demo-sonographer');
    const live = await t.api('/api/marketplace/live-plugins', { token: sono });
    assert.equal(live.status, 200, JSON.stringify(live.body));
    assert.deepEqual(live.body.plugins, [{ pluginId: PLUGIN_ID, name: PLUGIN_NAME, version: VERSION, vendor: 'Eco3D examples', scopes: SCOPES, moduleUrl: `/api/marketplace/plugins/${PLUGIN_ID}/${VERSION}/files/overlay.mjs` }]);

    // --- the sonographer's console ---------------------------------------------------------------
    const c = await newPage('console');
    const page = c.page;
    try {
      await page.goto(`${t.url}/index.html?next=console.html`);
      await page.fill('#username', 'demo-sonographer');
      await page.fill('#password', 'demo-password-for-tests');
      await page.click('#login');
      await page.waitForURL((u) => u.pathname.endsWith('/console.html'), { timeout: 15_000 });
      const row = `[data-testid="plugin-layer-row"][data-plugin="${PLUGIN_ID}"]`;
      await page.waitForSelector(row, { timeout: 20_000 });
      assert.equal(await page.textContent(`${row} [data-testid="plugin-layer-name"]`), `Plugin: ${PLUGIN_NAME}`);
      assert.match((await page.textContent(`${row} [data-testid="plugin-layer-vendor"]`)) ?? '', /by Eco3D examples · v1\.0\.0 · third-party/);
      assert.equal(await page.getAttribute(row, 'data-state'), 'off', 'nothing of the plugin runs until it is turned on');
      assert.equal((await page.$$('iframe')).length, 0, 'no frame before the toggle');

      // On: a sandboxed frame over the B-mode, labelled as the plugin's.
      await page.check(`${row} [data-testid="plugin-layer-toggle"]`);
      const layer = `[data-testid="plugin-layer"][data-plugin="${PLUGIN_ID}"]`;
      await page.waitForSelector(`${layer} iframe`, { timeout: 10_000 });
      assert.equal(await page.getAttribute(`${layer} iframe`, 'sandbox'), 'allow-scripts', 'scripts only: no allow-same-origin');
      assert.equal(await page.$eval(`${layer}`, (e) => (e as { closest(s: string): unknown }).closest('.video-box') !== null), true, 'the layer lies over the live video');
      assert.match((await page.textContent(`${layer} [data-testid="plugin-layer-label"]`)) ?? '', new RegExp(`^Plugin: ${PLUGIN_NAME.replace(/[()]/g, '\\$&')} — third-party`));
      const status = `${row} [data-testid="plugin-layer-status"]`;
      await page.waitForSelector(`${status}[data-state="connected"], ${status}[data-state="error"]`, { timeout: 60_000 });
      assert.equal(await page.getAttribute(status, 'data-state'), 'connected', `the plugin connects: ${await page.textContent(status)}\n${c.logs.join('\n')}`);
      assert.equal(await page.getAttribute(status, 'data-video'), 'true', 'the session token carries live:video');
      assert.match((await page.textContent(status)) ?? '', /^connected: video, pose$/);

      // Inside the frame: an opaque origin, no cookie, our API closed to it; it draws over the video.
      const frame = await waitFor('the plugin frame', 10_000, async () => page.frames().find((f: Frame) => f.url().endsWith('/plugin-frame.html')));
      const isolation = await frame.evaluate(async () => {
        let cookie: string;
        try {
          cookie = `readable: ${JSON.stringify(document.cookie)}`;
        } catch (e) {
          cookie = (e as Error).name;
        }
        let api: string;
        try {
          const r = await fetch('/api/marketplace/live-plugins', { credentials: 'include' });
          api = `answered ${r.status}`;
        } catch (e) {
          api = (e as Error).name;
        }
        return { origin: self.origin, cookie, api };
      });
      assert.deepEqual(isolation, { origin: 'null', cookie: 'SecurityError', api: 'TypeError' });
      const painted = (): Promise<number> =>
        frame.evaluate(() => {
          const cv = document.querySelector('#plugin-overlay') as PageCanvas;
          const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) n++;
          return n;
        });
      let n = await painted();
      for (const end = Date.now() + 20_000; n < 500 && Date.now() < end; ) {
        await sleep(250);
        n = await painted();
      }
      assert.ok(n > 500, `the plugin drew the image plane over the video: ${n} pixels`);
      const videoWidth = await frame.evaluate(() => (document.querySelector('#plugin-video') as { videoWidth: number }).videoWidth);
      assert.ok(videoWidth > 0, 'the frame plays the live B-mode');
      assert.equal(await frame.evaluate(() => document.title), `Plugin: ${PLUGIN_NAME}`);
      await c.shot('on');

      // --- its token revoked while the plugin stays enabled: the console gets it a new one --------
      // (the same path as a token that ran out: refused, renewed, the plugin restarted with it)
      type Token = { id: string; name: string; createdBy: string; status: string; scopes: string[]; expiresAtMs: number; createdAtMs: number };
      const consoleTokens = async (): Promise<Token[]> =>
        ((await t.api('/api/auth/tokens', { token: hospital })).body as { tokens: Token[] }).tokens.filter((x) => x.createdBy === 'client:console:demo-sonographer');
      const first = await consoleTokens();
      assert.equal(first.length, 1, JSON.stringify(first));
      assert.deepEqual({ status: first[0]!.status, scopes: first[0]!.scopes, ttlS: (first[0]!.expiresAtMs - first[0]!.createdAtMs) / 1000 }, { status: 'active', scopes: SCOPES, ttlS: 900 });
      assert.equal((await t.api(`/api/auth/tokens/${first[0]!.id}`, { method: 'DELETE', token: hospital })).status, 200);
      await waitFor('a renewed session token', 30_000, async () => {
        const all = await consoleTokens();
        return all.length === 2 && all.some((x) => x.id !== first[0]!.id && x.status === 'active') ? all : undefined;
      });
      await page.waitForSelector(`${status}[data-state="connected"]`, { timeout: 60_000 });
      assert.equal(await page.getAttribute(row, 'data-state'), 'connected', 'the plugin runs again on its new token');

      // --- the admin disables it: the server cuts the stream, the layer says so -----------------
      const disabled = await t.api(`/api/marketplace/enablements/${PLUGIN_ID}`, { method: 'DELETE', token: hospital });
      assert.equal(disabled.status, 200, JSON.stringify(disabled.body));
      assert.ok(disabled.body.cutStreams >= 1, `the plugin's stream is cut: ${JSON.stringify(disabled.body)}`);
      await page.waitForSelector(`${row}[data-state="cut"]`, { timeout: 30_000 });
      assert.match((await page.textContent(status)) ?? '', /^stream cut by the server \(ECO3D_ERR_UNAUTHENTICATED: .*\): Image plane AR \(example\) is no longer enabled for this hospital$/);
      assert.equal(await page.isDisabled(`${row} [data-testid="plugin-layer-toggle"]`), true);
      assert.equal(await page.isChecked(`${row} [data-testid="plugin-layer-toggle"]`), false);
      await page.waitForSelector(layer, { state: 'detached', timeout: 5000 });
      assert.equal((await t.api('/api/marketplace/live-plugins', { token: sono })).body.plugins.length, 0);
      await c.shot('cut');
      assert.deepEqual(c.errors, [], 'no script error on the console');
    } catch (err) {
      await c.shot('failure').catch(() => undefined);
      throw err;
    }
  });

  test('the plugin frame takes orders only from a console at its own origin', async () => {
    // Another origin (localhost vs 127.0.0.1) frames plugin-frame.html and posts it a module.
    const other = new URL(t.url);
    other.hostname = other.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
    const o = await newPage('other-origin');
    await o.page.goto(`${other.origin}/index.html`);
    const heard = await o.page.evaluate(async (frameUrl) => {
      const got: string[] = [];
      addEventListener('message', (e) => got.push(`${e.origin} ${JSON.stringify(e.data)}`));
      const f = document.createElement('iframe') as { setAttribute(k: string, v: string): void; src: string; contentWindow: { postMessage(m: unknown, o: string): void }; onload: (() => void) | null };
      f.setAttribute('sandbox', 'allow-scripts');
      const loaded = new Promise<void>((r) => (f.onload = () => r()));
      f.src = frameUrl;
      document.body.append(f);
      await loaded;
      await new Promise((r) => setTimeout(r, 500));
      const moduleSource = `export function activate() { parent.postMessage({ type: 'eco3d-plugin:status', state: 'connected', message: 'ran' }, '*'); return { stop() {} }; }`;
      f.contentWindow.postMessage({ type: 'eco3d-plugin:start', moduleSource, token: 'x', expiresIn: 900, url: 'http://x', name: 'intruder' }, '*');
      await new Promise((r) => setTimeout(r, 1500));
      return got;
    }, `${t.url}/plugin-frame.html`);
    assert.deepEqual(heard, [], 'neither its ready nor a module run reached another origin');
    assert.deepEqual(o.errors, []);
  });
});

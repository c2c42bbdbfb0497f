// The billing dashboard in Chromium against a real `eco3d start`: a tenant admin signs in and
// sees usage sent by an edge device and the forecast against actual of its risk-sharing
// contract; then a real sweep completes at the bedside and the page, refreshing itself, shows the
// metered scan and the revenue the server computes.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { dayOf, periodOf } from '../billing/index.ts';
import { ADMIN_PASSWORD, errorCode, startTestServer, type TestServer } from './harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ADMIN = 'demo-billing-admin';
const ADMIN_PW = 'billing-admin-password-for-tests';

// The page functions below run in the browser; this file is type-checked without the DOM lib.
declare const document: { querySelectorAll(sel: string): ArrayLike<{ dataset: Record<string, string | undefined> }> };

function nicedChromium(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-chromium-'));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec nice -n 5 ${JSON.stringify(CHROMIUM)} "$@"\n`, { mode: 0o755 });
  return wrapper;
}

describe('the billing dashboard in the browser (Chromium)', { timeout: 300_000 }, () => {
  let t: TestServer;
  let browser: Browser;
  let ctx: BrowserContext | undefined;
  let admin: string;

  before(async () => {
    if (!existsSync(join(ROOT, 'viewer', 'dist', 'billing.html'))) throw new Error('viewer/dist/billing.html is missing: build the browser apps first (scripts/test.sh does)');
    mkdirSync(ARTIFACTS, { recursive: true });
    [t, browser] = await Promise.all([
      startTestServer(),
      chromium.launch({ executablePath: nicedChromium(), headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] }),
    ]);
    const platform = await t.login('admin', ADMIN_PASSWORD);
    const created = await t.api('/api/accounts', { method: 'POST', token: platform, body: { tenantId: 'demo', username: ADMIN, role: 'tenant-admin', password: ADMIN_PW } });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    admin = await t.login(ADMIN, ADMIN_PW);
  });
  after(async () => {
    await ctx?.close().catch(() => undefined);
    await browser?.close();
    await t?.close();
  });

  test('edge usage, a risk-sharing forecast, then a live sweep appearing by itself', async () => {
    const now = Date.now();
    const period = periodOf(now);
    // An edge robot on a risk-sharing contract since the start of the month, with 3 scans today.
    assert.equal((await t.api('/api/devices/edge-r', { method: 'PUT', token: admin, body: { model: 'eco3d edge' } })).status, 201);
    const contract = {
      tenantId: 'demo',
      deviceId: 'edge-r',
      validFrom: `${period}-01`,
      validTo: null,
      model: { kind: 'risk-sharing', unitPriceCents: 2500, forecastScans: 100, bandScans: 10, shareBelowBps: 5000, shareAboveBps: 3000 },
    };
    const put = await t.api('/api/billing/contracts/risk-edge-r', { method: 'PUT', token: admin, body: contract });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const today = dayOf(now);
    const events = [1, 2, 3].map((i) => ({ type: 'scan', deviceId: 'edge-r', acquisitionUid: `2.25.9100${i}`, occurredAtMs: now - i * 1000 }));
    const ingested = await t.api('/api/billing/usage-events', { method: 'POST', token: admin, body: { events } });
    assert.equal(ingested.status, 200, JSON.stringify(ingested.body));

    ctx = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const shot = async (name: string): Promise<void> => writeFileSync(join(ARTIFACTS, `billing-${name}.png`), await page.screenshot({ fullPage: true }));
    try {
      await page.goto(`${t.url}/index.html?next=billing.html`);
      await page.fill('#username', ADMIN);
      await page.fill('#password', ADMIN_PW);
      await page.click('#login');
      await page.waitForURL((u) => u.pathname.endsWith('/billing.html'), { timeout: 15_000 });
      await page.waitForSelector(`[data-testid="scans-table"] tr[data-device="edge-r"][data-date="${today}"]`, { timeout: 20_000 });
      assert.equal(await page.getAttribute(`[data-testid="scans-table"] tr[data-device="edge-r"][data-date="${today}"]`, 'data-billable'), '3');
      assert.equal(await page.textContent(`[data-testid="risk-chart"][data-contract="risk-edge-r"] [data-testid="risk-caption"]`), '3 of 100 forecast (band ±10)');
      const chart = `[data-testid="risk-chart"][data-contract="risk-edge-r"] svg`;
      assert.equal((await page.$$(`${chart} polygon.billing-band`)).length, 1, 'the band is drawn');
      assert.ok((await page.$$(`${chart} circle.billing-dot`)).length >= 1, 'the actual scans are drawn');
      await shot('before-sweep');

      // A sweep at the bedside; the page refreshes itself (every 10 s) and shows it.
      const bs = await t.connect('bedside', await t.login('demo-bedside'));
      const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 };
      assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
      const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
      await bs.status((s) => s.acquisition.uid === running.acquisition.uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');
      const simRow = `[data-testid="scans-table"] tr[data-device="sim-1"][data-date="${dayOf(Date.now())}"]`;
      await page.waitForSelector(simRow, { timeout: 45_000 });
      assert.equal(await page.getAttribute(simRow, 'data-billable'), '1');

      // The revenue on the page is the server's, to the cent.
      const board = (await t.api(`/api/billing/dashboard?period=${period}`, { token: admin })).body as { revenueByTenant: { tenantId: string; totalCents: number }[] };
      const expected = board.revenueByTenant.find((r) => r.tenantId === 'demo')!.totalCents;
      await page.waitForFunction(
        (cents) => Array.from(document.querySelectorAll('[data-testid="revenue-table"] [data-col="total"]')).some((c) => c.dataset.cents === String(cents)),
        expected,
        { timeout: 30_000, polling: 500 },
      );
      const invoiceRow = await page.$(`[data-testid="invoices-table"] tr[data-period="${period}"][data-status="open"]`);
      assert.ok(invoiceRow !== null, 'the open invoice is listed');
      const pdfHref = await page.getAttribute(`[data-testid="invoices-table"] tr[data-period="${period}"] a[data-format="pdf"]`, 'href');
      assert.match(pdfHref ?? '', new RegExp(`/api/billing/invoices/demo/${period}\\?format=pdf$`));
      await shot('after-sweep');
      assert.deepEqual(errors, [], 'no script error on the page');
    } catch (err) {
      await shot('failure').catch(() => undefined);
      throw err;
    }
  });
});

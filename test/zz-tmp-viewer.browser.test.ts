// The browser apps in a real browser (Debian's Chromium, headless): sign in with the HttpOnly
// cookie, the teleop status stream, hold-to-move jogging with heartbeats on the console, and the
// bedside e-stop and its reset. (Replaces panel.browser.test.ts, which drove the interim panel.)
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEMO_PASSWORD, startTestServer, type TestServer } from './harness.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// The page functions below run in the browser; this file is type-checked without the DOM lib.
declare const document: { getElementById(id: string): { textContent: string | null; dataset: Record<string, string | undefined> } | null; cookie: string };

async function signIn(page: Page, url: string, username: string, next: 'console.html' | 'bedside.html'): Promise<void> {
  await page.goto(`${url}/index.html?next=${next}`);
  await page.fill('#username', username);
  await page.fill('#password', DEMO_PASSWORD);
  await page.click('#login');
  await page.waitForURL((u) => u.pathname.endsWith(`/${next}`), { timeout: 10_000 });
  await page.waitForSelector('#teleop-state.ok', { timeout: 10_000 });
}

describe('the browser apps in Chromium', () => {
  let t: TestServer;
  let browser: Browser;
  let page: Page;

  before(async () => {
    t = await startTestServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterEach(async () => {
    await page?.context().close();
  });
  after(async () => {
    await browser?.close();
    await t?.close();
  });

  test('bedside staff press the e-stop and reset it', async () => {
    page = await (await browser.newContext()).newPage();
    await signIn(page, t.url, 'demo-bedside', 'bedside.html');
    await page.waitForFunction(() => document.getElementById('link-state')?.textContent === 'up');
    assert.equal(await page.textContent('#estop-state'), 'clear');
    await page.click('#estop');
    await page.waitForFunction(() => document.getElementById('estop-state')?.textContent === 'LATCHED', undefined, { timeout: 5000 });
    assert.equal(t.server.safety.status.estopLatched, true);
    await page.click('#estop-reset');
    await page.waitForFunction(() => document.getElementById('estop-state')?.textContent === 'clear', undefined, { timeout: 5000 });
    assert.equal(t.server.safety.status.estopLatched, false);
    // The session is an HttpOnly cookie: page scripts cannot read it.
    assert.equal(await page.evaluate(() => document.cookie), '');
  });

  test('the sonographer takes control and jogs by holding a button', async () => {
    page = await (await browser.newContext()).newPage();
    await signIn(page, t.url, 'demo-sonographer', 'console.html');
    await page.click('#take-control');
    await page.waitForFunction(() => document.getElementById('control-holder')?.textContent === 'demo-sonographer');
    await page.waitForFunction(() => document.getElementById('deadman')?.dataset.state === 'armed');
    const y0 = Number((await page.textContent('#tcp'))!.split(',')[1]);
    const button = page.locator('#jog-pad button[data-jog="0,1,0"]');
    await button.hover();
    await page.mouse.down();
    await page.waitForFunction(() => document.getElementById('robot-mode')?.textContent?.startsWith('jogging'), undefined, { timeout: 5000 });
    await page.waitForTimeout(600);
    await page.mouse.up();
    await page.waitForFunction(() => !document.getElementById('robot-mode')?.textContent?.startsWith('jogging'), undefined, { timeout: 5000 });
    const y1 = Number((await page.textContent('#tcp'))!.split(',')[1]);
    assert.ok(y1 - y0 > 3, `the probe moved ${(y1 - y0).toFixed(1)} mm along +y`);
    assert.equal(await page.textContent('#errors'), '', 'no command was refused');
  });
});

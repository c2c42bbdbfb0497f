// The interim console and bedside panel in a real browser (Debian's Chromium, headless): sign in
// with the HttpOnly cookie, the WebSocket status stream, hold-to-move jogging with heartbeats,
// and the bedside e-stop and its reset.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEMO_PASSWORD, startTestServer, type TestServer } from './harness.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// The page functions below run in the browser; this file is type-checked without the DOM lib.
declare const document: { getElementById(id: string): { textContent: string | null } | null; cookie: string };

async function signIn(page: Page, url: string, username: string): Promise<void> {
  await page.goto(url);
  await page.fill('#user', username);
  await page.fill('#pass', DEMO_PASSWORD);
  await page.click('#loginForm button');
  await page.waitForSelector('#conn.ok', { timeout: 10_000 });
}

describe('the panel in Chromium', () => {
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
    await signIn(page, t.url, 'demo-bedside');
    await page.waitForFunction(() => document.getElementById('sLink')?.textContent === 'up');
    assert.equal(await page.textContent('#sEstop'), 'clear');
    await page.click('#estop');
    await page.waitForFunction(() => document.getElementById('sEstop')?.textContent === 'LATCHED', undefined, { timeout: 5000 });
    assert.equal(t.server.safety.status.estopLatched, true);
    await page.click('#reset');
    await page.waitForFunction(() => document.getElementById('sEstop')?.textContent === 'clear', undefined, { timeout: 5000 });
    assert.equal(t.server.safety.status.estopLatched, false);
    // The session is an HttpOnly cookie: page scripts cannot read it.
    assert.equal(await page.evaluate(() => document.cookie), '');
  });

  test('the sonographer takes control and jogs by holding a button', async () => {
    page = await (await browser.newContext()).newPage();
    await signIn(page, t.url, 'demo-sonographer');
    await page.click('#acquire');
    await page.waitForFunction(() => document.getElementById('sControl')?.textContent === 'demo-sonographer');
    const y0 = Number((await page.textContent('#sTcp'))!.split(',')[1]);
    const button = page.locator('[data-jog="0,1,0"]');
    await button.hover();
    await page.mouse.down();
    await page.waitForFunction(() => document.getElementById('sMode')?.textContent?.startsWith('jogging'), undefined, { timeout: 5000 });
    await page.waitForTimeout(600);
    await page.mouse.up();
    await page.waitForFunction(() => !document.getElementById('sMode')?.textContent?.startsWith('jogging'), undefined, { timeout: 5000 });
    const y1 = Number((await page.textContent('#sTcp'))!.split(',')[1]);
    assert.ok(y1 - y0 > 3, `the probe moved ${(y1 - y0).toFixed(1)} mm along +y`);
    assert.equal(await page.textContent('#lastError'), '', 'no command was refused');
  });
});

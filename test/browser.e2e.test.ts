// The browser apps end to end, in a real browser (Debian's Chromium, headless, driven by
// playwright-core) against a real `eco3d start` (simulated robot, PGlite) in a child process:
// sign-in and the B-mode video, hold-to-move jogging, the bedside E-STOP and its reset, the
// volume of a sweep, STOP during a sweep, the console ↔ bedside call, the example AR plugin with
// scoped tokens, and a clean shutdown afterwards.
//
// This process never loads wrtc: Chromium is the WebRTC client. One server and one browser for
// the file; each test opens its own contexts and closes them. The server runs in a child process
// rather than in this one so that its exit status after SIGTERM can be checked (the last test):
// a crash while it shuts down would otherwise take this process down with it.
//
// Pages get no camera (getUserMedia refuses) except in the call test: a fake camera costs a
// video encoder in Chromium and a forwarded stream in the server, CPU this 2-core budget needs.
//
// Screenshots of every test go to test-artifacts/ (with the server's log); with
// ECO3D_UPDATE_SCREENSHOTS=1 the README's docs/screenshots/console.png and bedside.png are
// written too. Needs the browser apps built (viewer/dist; scripts/test.sh builds them).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PNG } from 'pngjs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { apiCall } from './harness.ts';

const ADMIN_PASSWORD = 'admin-password-for-browser-tests';
const DEMO_PASSWORD = 'demo-password-for-browser-tests';
const TENANT_ADMIN_PASSWORD = 'tenant-admin-password-for-browser-tests';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Chromium at a lower CPU priority (nice 5), through a wrapper that playwright launches: the
 * browser stands in for the sonographer's own computer. At the server's priority, on a 2-core
 * test machine, its software WebGL starved the server's control loop and the sweep's state
 * watchdog (200 ms) aborted the sweep.
 */
function nicedChromium(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-chromium-'));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec nice -n 5 ${JSON.stringify(CHROMIUM)} "$@"\n`, { mode: 0o755 });
  return wrapper;
}
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const README_SHOTS = join(ROOT, 'docs', 'screenshots');
const UPDATE_SCREENSHOTS = process.env.ECO3D_UPDATE_SCREENSHOTS === '1';
const VIEWPORT = { width: 1600, height: 1000 };
/** The volume view's background (volume-view.ts: vtk.js `background: [0.06, 0.08, 0.11]`). */
const VOLUME_BG = [15, 20, 28] as const;
/**
 * The operator deadman timeout given to the server (`--deadman-ms`; default 300). The console
 * beats every 100 ms from a worker, but on a busy 2-core machine, with Chromium rendering in
 * software GL next to the server, its beats reach the server up to ~400 ms apart now and then:
 * at 300 ms the deadman would stop jogs and abort sweeps for want of CPU, not of a heartbeat.
 * A console that stopped beating still trips it.
 */
const DEADMAN_MS = 1000;
/** Joint speeds below this (rad/s) count as standing still. */
const STILL_RAD_PER_S = 1e-3;

// The page functions below run in the browser; this file is type-checked without the DOM lib.
interface PageVideo {
  readonly videoWidth: number;
  readonly videoHeight: number;
  readonly srcObject: unknown;
  getVideoPlaybackQuality(): { readonly totalVideoFrames: number };
}
interface PageCanvas {
  readonly width: number;
  readonly height: number;
  getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { readonly data: Uint8ClampedArray } } | null;
}
interface PageElement {
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
}
declare const document: { getElementById(id: string): PageElement | null; querySelector(sel: string): unknown };
declare const window: { eco3d?: { volume: { updates: number } } };
declare const navigator: { mediaDevices?: { getUserMedia: (c: unknown) => Promise<unknown> } };
declare class DOMException extends Error {
  constructor(message: string, name: string);
}

type Xyz = { x: number; y: number; z: number };
interface RobotStatus {
  estopLatched: boolean;
  control: { holder: string | null };
  acquisition: { uid: string | null; state: string; abortReason?: string; progress?: number };
  robot: { mode: string; tcpPose: { positionMm: Xyz }; jointVelRadPerS: number[] } | null;
}
interface Transition {
  from: string;
  to: string;
  event: string;
  actor: string;
  detail?: string;
  abortReason?: string;
}

interface ApiReply {
  status: number;
  body: any;
}

/** `eco3d start` in a child process: simulated robot, PGlite in a temporary data directory, a free port. */
interface ServerProcess {
  readonly url: string;
  api(path: string, init?: { method?: string; token?: string; body?: unknown }): Promise<ApiReply>;
  login(username: string, password?: string): Promise<string>;
  /** SIGTERM; resolves with how the process ended and the end of its log. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; logTail: string }>;
  /** SIGKILL (cleanup after a failure); idempotent. */
  kill(): Promise<void>;
}

async function startServerProcess(): Promise<ServerProcess> {
  if (!existsSync(join(ROOT, 'viewer', 'dist', 'console.html'))) {
    throw new Error('viewer/dist is missing: build the browser apps first (node --import tsx scripts/build-viewer.ts; scripts/test.sh does)');
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), 'eco3d-browser-e2e-'));
  const port = await new Promise<number>((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
    s.once('error', reject);
  });
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'eco3d.mjs'), 'start', '--data', dataDir, '--port', String(port), '--deadman-ms', String(DEADMAN_MS)], {
    env: { ...process.env, ECO3D_ADMIN_PASSWORD: ADMIN_PASSWORD, ECO3D_DEMO_PASSWORD: DEMO_PASSWORD, LOG_LEVEL: 'info', ECO3D_VIEWER_BUILD: 'skip', DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // The server's log (JSON lines) is kept as an artifact; its end goes into failure messages.
  const logFile = createWriteStream(join(ARTIFACTS, 'server.log'));
  let log = '';
  child.stderr.on('data', (d: Buffer) => {
    logFile.write(d);
    log = (log + d.toString()).slice(-20_000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      logFile.end();
      resolve({ code, signal });
    }),
  );
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('Eco3D is up')) resolve();
      });
      void exited.then(({ code, signal }) => reject(new Error(`eco3d start ended (${code ?? signal}) before it was up:\n${log.slice(-3000)}`)));
      setTimeout(() => reject(new Error(`eco3d start not up within 60 s:\n${log.slice(-3000)}`)), 60_000).unref();
    });
  } catch (e) {
    if (running()) child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  const url = `http://127.0.0.1:${port}`;
  const api: ServerProcess['api'] = (path, init = {}) => apiCall(url, path, init);
  return {
    url,
    api,
    async login(username, password = DEMO_PASSWORD) {
      const r = await api('/api/auth/login', { method: 'POST', body: { username, password } });
      if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    async stop() {
      if (running()) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const end = await exited;
      clearTimeout(timer);
      rmSync(dataDir, { recursive: true, force: true });
      return { ...end, logTail: log.trimEnd().split('\n').slice(-8).join('\n') };
    },
    async kill() {
      if (running()) child.kill('SIGKILL');
      await exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

describe('the browser apps end to end (Chromium)', { timeout: 280_000 }, () => {
  let t: ServerProcess;
  let browser: Browser;
  /** A sonographer's session token for the API (GET /api/robot …). */
  let sono: string;
  const contexts = new Set<BrowserContext>();

  before(async () => {
    [t, browser] = await Promise.all([
      startServerProcess(),
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
          '--use-fake-device-for-media-stream',
          '--use-fake-ui-for-media-stream',
        ],
      }),
    ]);
    sono = await t.login('demo-sonographer');
  });

  after(async () => {
    for (const c of contexts) await c.close().catch(() => undefined);
    await browser?.close();
    await t?.kill();
  });

  // ---- helpers ------------------------------------------------------------------------------

  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

  async function robot(): Promise<RobotStatus> {
    const r = await t.api('/api/robot', { token: sono });
    assert.equal(r.status, 200, `GET /api/robot: ${JSON.stringify(r.body)}`);
    return r.body as RobotStatus;
  }

  const brief = (s: RobotStatus | null): string =>
    JSON.stringify(s === null ? null : { estop: s.estopLatched, holder: s.control.holder, acquisition: s.acquisition, mode: s.robot?.mode, tcp: s.robot?.tcpPose.positionMm });

  /** Polls GET /api/robot until `pred` holds; returns that status. */
  async function robotUntil(pred: (s: RobotStatus) => boolean, what: string, timeoutMs: number, everyMs = 100): Promise<RobotStatus> {
    const end = Date.now() + timeoutMs;
    let last: RobotStatus | null = null;
    while (Date.now() < end) {
      last = await robot();
      if (pred(last)) return last;
      await sleep(everyMs);
    }
    assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}; last status: ${brief(last)}`);
  }

  const still = (s: RobotStatus): boolean => s.robot !== null && s.robot.jointVelRadPerS.every((v) => Math.abs(v) < STILL_RAD_PER_S);

  /** The acquisition's transitions (GET /api/acquisitions/:uid), once the one ending it is recorded. */
  async function transitionsOf(uid: string): Promise<Transition[]> {
    const end = Date.now() + 10_000;
    for (;;) {
      const r = await t.api(`/api/acquisitions/${encodeURIComponent(uid)}`, { token: sono });
      const ts = (r.status === 200 ? (r.body.transitions as Transition[]) : []) ?? [];
      if (ts.some((x) => x.to === 'completed' || x.to === 'aborted') || Date.now() > end) return ts;
      await sleep(200);
    }
  }

  /** A fresh context (its own cookies) with a page that records uncaught errors. */
  async function newPage(opts: { session?: string; camera?: boolean } = {}): Promise<{ page: Page; errors: string[] }> {
    const ctx = await browser.newContext({ viewport: VIEWPORT });
    contexts.add(ctx);
    if (opts.session !== undefined) await ctx.addCookies([{ name: 'eco3d_session', value: opts.session, url: t.url, httpOnly: true, sameSite: 'Strict' }]);
    if (opts.camera !== true) {
      await ctx.addInitScript(() => {
        if (navigator.mediaDevices !== undefined) navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('no camera in this test', 'NotAllowedError'));
      });
    }
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    return { page, errors };
  }

  async function closePage(page: Page): Promise<void> {
    const ctx = page.context();
    contexts.delete(ctx);
    await ctx.close();
  }

  /** A signed-in page (a session cookie of `username`) on `path`, its teleop socket connected. */
  async function openPanel(username: string, path: 'console.html' | 'bedside.html', camera = false): Promise<{ page: Page; errors: string[] }> {
    const p = await newPage({ session: await t.login(username), camera });
    await p.page.goto(`${t.url}/${path}`);
    await p.page.waitForSelector('#teleop-state.ok', { timeout: 30_000 });
    await p.page.waitForFunction(() => document.getElementById('link-state')?.textContent === 'up', undefined, { timeout: 10_000 });
    return p;
  }

  /** A screenshot of the page into test-artifacts/ (and, when updating them, the README's: the whole page). */
  async function shot(page: Page, name: string, readme?: string): Promise<void> {
    const png = await page.screenshot({ fullPage: readme !== undefined });
    writeFileSync(join(ARTIFACTS, `${name}.png`), png);
    if (readme !== undefined && UPDATE_SCREENSHOTS) {
      mkdirSync(README_SHOTS, { recursive: true });
      writeFileSync(join(README_SHOTS, readme), png);
    }
  }

  /** Decoded frames and size of a <video>. */
  const videoOf = (page: Page, sel: string): Promise<{ frames: number; width: number; height: number; hasStream: boolean }> =>
    page.evaluate((s) => {
      const v = document.querySelector(s) as PageVideo;
      return { frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, height: v.videoHeight, hasStream: v.srcObject !== null };
    }, sel);

  /** Waits until the <video> has decoded `more` frames beyond those it had decoded when called. */
  async function framesAdvance(page: Page, sel: string, more: number, timeoutMs: number): Promise<{ from: number; to: number }> {
    const from = (await videoOf(page, sel)).frames;
    await page.waitForFunction(([s, n]) => (document.querySelector(s) as PageVideo).getVideoPlaybackQuality().totalVideoFrames >= n, [sel, from + more] as const, {
      timeout: timeoutMs,
      polling: 100,
    });
    return { from, to: (await videoOf(page, sel)).frames };
  }

  const text = async (page: Page, id: string): Promise<string> => (await page.textContent(`#${id}`)) ?? '';
  const waitText = (page: Page, id: string, value: string, timeoutMs: number): Promise<unknown> =>
    page.waitForFunction(([i, v]) => document.getElementById(i)?.textContent === v, [id, value] as const, { timeout: timeoutMs, polling: 100 });
  const waitAcq = (page: Page, states: readonly string[], timeoutMs: number): Promise<unknown> =>
    page.waitForFunction((s) => s.includes(document.getElementById('acq-state')?.dataset.state ?? ''), states, { timeout: timeoutMs, polling: 100 });

  /**
   * Pixels of an element's screenshot that differ from `bg` (sum of |Δrgb| > 24), leaving out a
   * 4 px frame (the card's rounded corners show through there).
   */
  async function paintedPixels(page: Page, sel: string, bg: readonly [number, number, number]): Promise<{ painted: number; total: number; png: Buffer }> {
    const png = await page.locator(sel).screenshot();
    const img = PNG.sync.read(png);
    const m = 4;
    let painted = 0;
    for (let y = m; y < img.height - m; y++) {
      for (let x = m; x < img.width - m; x++) {
        const i = (y * img.width + x) * 4;
        const d = Math.abs(img.data[i]! - bg[0]) + Math.abs(img.data[i + 1]! - bg[1]) + Math.abs(img.data[i + 2]! - bg[2]);
        if (d > 24) painted++;
      }
    }
    return { painted, total: (img.width - 2 * m) * (img.height - 2 * m), png };
  }

  /** Takes control on a console page; resolves once the deadman heartbeat is armed. */
  async function takeControl(page: Page): Promise<void> {
    await page.click('#take-control');
    await waitText(page, 'control-holder', 'demo-sonographer', 10_000);
    await page.waitForFunction(() => document.getElementById('deadman')?.dataset.state === 'armed', undefined, { timeout: 10_000 });
  }

  async function releaseControl(page: Page): Promise<void> {
    await page.click('#release-control');
    await waitText(page, 'control-holder', 'nobody', 10_000);
  }

  /** Why an acquisition ended early, for failure messages. */
  async function abortDetail(uid: string): Promise<string> {
    const end = (await transitionsOf(uid)).find((x) => x.to === 'aborted');
    return end === undefined ? 'no abort recorded' : `${end.from} → aborted by ${end.actor} (${end.abortReason ?? '—'}): ${end.detail ?? ''}`;
  }

  // ---- the tests ----------------------------------------------------------------------------

  test('sign in on the login page, land on the console, and the B-mode video plays, 640 px wide', async () => {
    const { page, errors } = await newPage();
    try {
      await page.goto(`${t.url}/index.html?next=console.html`);
      await page.fill('#username', 'demo-sonographer');
      await page.fill('#password', DEMO_PASSWORD);
      await page.click('#login');
      await page.waitForURL((u) => u.pathname.endsWith('/console.html'), { timeout: 15_000 });
      await page.waitForSelector('#teleop-state.ok', { timeout: 30_000 });
      assert.equal(await text(page, 'who'), 'demo-sonographer (sonographer, demo)');
      const { from, to } = await framesAdvance(page, '#bmode', 20, 30_000);
      const v = await videoOf(page, '#bmode');
      assert.equal(v.width, 640, `the B-mode video's width (decoded frames ${from} → ${to})`);
      assert.equal(v.height, 480);
      await shot(page, '1-console-bmode');
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } finally {
      await closePage(page);
    }
  });

  test('holding a jog key moves the robot; releasing it stops the robot', async () => {
    const { page, errors } = await openPanel('demo-sonographer', 'console.html');
    try {
      await takeControl(page);
      const p0 = (await robotUntil(still, 'the robot to stand still', 10_000)).robot!.tcpPose.positionMm;
      await page.keyboard.down('ArrowRight');
      let moved: Xyz;
      try {
        await page.waitForFunction(() => document.getElementById('deadman')?.dataset.state === 'active', undefined, { timeout: 5000 });
        moved = (await robotUntil((s) => s.robot !== null && s.robot.tcpPose.positionMm.x - p0.x > 5, 'the TCP to move 5 mm along +x', 15_000)).robot!.tcpPose.positionMm;
        assert.equal((await robot()).robot?.mode, 'jogging');
      } finally {
        await page.keyboard.up('ArrowRight');
      }
      await page.waitForFunction(() => document.getElementById('deadman')?.dataset.state === 'armed', undefined, { timeout: 5000 });
      const a = (await robotUntil((s) => s.robot?.mode !== 'jogging' && still(s), 'the robot to stop after the key is released', 5000)).robot!.tcpPose.positionMm;
      await sleep(300);
      const b = (await robot()).robot!.tcpPose.positionMm;
      const drift = Math.hypot(b.x - a.x, b.y - a.y, b.z - a.z);
      assert.ok(drift < 0.1, `the TCP stays put after the key is released (moved ${drift.toFixed(3)} mm in 300 ms)`);
      assert.ok(moved.x - p0.x > 5 && Math.abs(a.y - p0.y) < 1 && Math.abs(a.z - p0.z) < 1, `the TCP moved along +x: ${JSON.stringify(p0)} → ${JSON.stringify(a)}`);
      await shot(page, '2-console-jog');
      assert.equal(await text(page, 'errors'), '', 'no command was refused');
      await releaseControl(page);
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } finally {
      await closePage(page);
    }
  });

  test('the bedside E-STOP latches, the console shows it and the robot stops; reset clears it', async () => {
    const con = await openPanel('demo-sonographer', 'console.html');
    const bed = await openPanel('demo-bedside', 'bedside.html');
    try {
      await waitText(con.page, 'estop-state', 'clear', 10_000);
      await bed.page.click('#estop');
      await waitText(con.page, 'estop-state', 'LATCHED', 5000);
      assert.equal(await con.page.getAttribute('#estop-state', 'data-latched'), 'true');
      assert.equal(await text(bed.page, 'estop-state'), 'LATCHED');
      const s = await robotUntil((x) => x.estopLatched && x.robot?.mode === 'estopped' && still(x), 'the robot e-stopped and standing still', 5000);
      assert.equal(s.estopLatched, true);
      await con.page.waitForFunction(() => document.getElementById('robot-mode')?.dataset.mode === 'estopped', undefined, { timeout: 5000 });
      await Promise.all([shot(con.page, '3-console-estop'), shot(bed.page, '3-bedside-estop')]);

      await bed.page.click('#estop-reset');
      await waitText(con.page, 'estop-state', 'clear', 5000);
      await waitText(bed.page, 'estop-state', 'clear', 5000);
      await robotUntil((x) => !x.estopLatched && x.robot !== null && x.robot.mode !== 'estopped', 'the e-stop reset', 5000);
      assert.equal(await text(bed.page, 'errors'), '', 'the bedside had no command refused');
      assert.deepEqual([...con.errors, ...bed.errors], [], 'no uncaught errors in the pages');
    } finally {
      await Promise.all([closePage(con.page), closePage(bed.page)]);
    }
  });

  test('the volume view renders the volume of a sweep (and is empty before)', async (t) => {
    // The console watches; the bedside starts the sweep (no remote operator: no deadman involved).
    const con = await openPanel('demo-sonographer', 'console.html');
    const bed = await openPanel('demo-bedside', 'bedside.html');
    try {
      const canvas = '#volume-view canvas';
      await con.page.waitForSelector(canvas, { timeout: 10_000 });
      const empty = await paintedPixels(con.page, canvas, VOLUME_BG);
      writeFileSync(join(ARTIFACTS, '4-volume-before.png'), empty.png);
      assert.ok(empty.painted < empty.total * 0.001, `before any sweep the volume view is empty: ${empty.painted} of ${empty.total} pixels drawn`);

      // One retry, reported, for a sweep that the state watchdog aborted: on a saturated 2-core
      // test machine (the server, the streamer, and Chromium rendering in software) the control
      // loop can go 200 ms without a robot state, and the sweep then stops safely, as it must.
      // What this test checks is the volume view, not the machine's headroom.
      for (let attempt = 1; ; attempt++) {
        await bed.page.click('#sweep-start');
        await waitAcq(con.page, ['positioning', 'scanning'], 15_000);
        const uid = (await robot()).acquisition.uid;
        assert.ok(uid !== null, 'the sweep has an acquisition uid');
        const ended = (s: RobotStatus): boolean => s.acquisition.uid === uid && ['completed', 'aborted'].includes(s.acquisition.state);
        // Mid-sweep: the bedside panel at work (force, progress) for the README. (Polled gently: the
        // sweep's control loop shares the server's main thread with these requests.)
        const mid = await robotUntil((s) => ended(s) || (s.acquisition.state === 'scanning' && (s.acquisition.progress ?? 0) >= 0.4), 'the sweep to be under way', 90_000, 250);
        if (mid.acquisition.state === 'scanning') await shot(bed.page, '4-bedside-mid-sweep', 'bedside.png');
        const done = await robotUntil(ended, 'the sweep to end', 90_000, 250);
        const why = await abortDetail(uid);
        if (done.acquisition.state === 'aborted' && attempt === 1 && /no robot state/.test(why)) {
          t.diagnostic(`sweep ${attempt} stopped by the state watchdog, retried: ${why}`);
          continue;
        }
        assert.equal(done.acquisition.state, 'completed', `the sweep completed, or why not: ${why}`);
        break;
      }
      await waitAcq(con.page, ['completed'], 10_000);
      assert.ok((await con.page.evaluate(() => window.eco3d?.volume.updates ?? 0)) > 0, 'the volume view uploaded the volume');

      // The volume on screen (the view re-renders at most every 2 s in software GL).
      let drawn = await paintedPixels(con.page, canvas, VOLUME_BG);
      for (const end = Date.now() + 20_000; drawn.painted < drawn.total * 0.01 && Date.now() < end; ) {
        await sleep(500);
        drawn = await paintedPixels(con.page, canvas, VOLUME_BG);
      }
      writeFileSync(join(ARTIFACTS, '4-volume-after.png'), drawn.png);
      assert.ok(drawn.painted > drawn.total * 0.01, `after the sweep the volume view shows the volume: ${drawn.painted} of ${drawn.total} pixels drawn (${empty.painted} before)`);
      await shot(con.page, '4-console-after-sweep', 'console.png');
      assert.deepEqual([...con.errors, ...bed.errors], [], 'no uncaught errors in the pages');
    } finally {
      await Promise.all([closePage(con.page), closePage(bed.page)]);
    }
  });

  test('STOP on the console aborts a running sweep', async (t) => {
    const { page, errors } = await openPanel('demo-sonographer', 'console.html');
    try {
      await takeControl(page);
      let uid: string;
      // One retry, reported, when the state watchdog stopped the sweep before STOP did (see the
      // volume test: a saturated 2-core machine, and the sweep stops safely, as it must).
      for (let attempt = 1; ; attempt++) {
        await page.click('#sweep-start');
        await waitAcq(page, ['positioning', 'scanning'], 15_000);
        uid = (await robot()).acquisition.uid!;
        const current = uid;
        // Mid-sweep: the robot is on its way to the sweep's start (or already scanning).
        const moving = await robotUntil((s) => s.acquisition.uid === current && (!still(s) || s.acquisition.state !== 'positioning'), 'the robot to move', 15_000);
        assert.ok(['positioning', 'scanning'].includes(moving.acquisition.state), `the sweep is running when STOP is pressed, or why not: ${await abortDetail(uid)}`);
        await page.click('#stop');
        await waitAcq(page, ['aborted', 'completed'], 10_000);
        const s = await robotUntil((x) => x.acquisition.state !== 'positioning' && x.acquisition.state !== 'scanning', 'the sweep to end', 5000);
        assert.equal(s.acquisition.uid, uid);
        const why = await abortDetail(uid);
        if (s.acquisition.abortReason === 'link-lost' && attempt === 1 && /no robot state/.test(why)) {
          t.diagnostic(`sweep ${attempt} stopped by the state watchdog before STOP, retried: ${why}`);
          await robotUntil(still, 'the robot to stand still', 5000);
          continue;
        }
        assert.deepEqual([s.acquisition.state, s.acquisition.abortReason], ['aborted', 'operator'], `the sweep was aborted by the operator: ${why}`);
        break;
      }
      const why = await abortDetail(uid);
      assert.equal(await page.getAttribute('#acq-state', 'data-state'), 'aborted');
      const abort = (await transitionsOf(uid)).find((x) => x.to === 'aborted');
      assert.equal(abort?.actor, 'demo-sonographer', `the abort came from the console's STOP: ${why}`);
      await robotUntil(still, 'the robot to stand still', 5000);
      await shot(page, '5-console-stop');
      await releaseControl(page);
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } finally {
      await closePage(page);
    }
  });

  test('the call connects both ways: each side decodes the other side’s camera', async () => {
    const con = await openPanel('demo-sonographer', 'console.html', true);
    const bed = await openPanel('demo-bedside', 'bedside.html', true);
    try {
      for (const [name, p] of [
        ['console', con.page],
        ['bedside', bed.page],
      ] as const) {
        const { from, to } = await framesAdvance(p, '#callRemote', 15, 30_000);
        const v = await videoOf(p, '#callRemote');
        assert.ok(v.width > 0 && v.height > 0, `the ${name}'s #callRemote shows a picture (${v.width}×${v.height}; frames ${from} → ${to})`);
        await p.waitForFunction(() => document.getElementById('call-state')?.textContent?.startsWith('in call with') === true, undefined, { timeout: 5000 });
      }
      await Promise.all([shot(con.page, '6-console-call'), shot(bed.page, '6-bedside-call')]);
      assert.deepEqual([...con.errors, ...bed.errors], [], 'no uncaught errors in the pages');
    } finally {
      await Promise.all([closePage(con.page), closePage(bed.page)]);
    }
  });

  test('the example AR plugin: video and overlay with live:video + live:pose; no video with live:pose alone', async () => {
    const admin = await t.login('admin', ADMIN_PASSWORD);
    const created = await t.api('/api/accounts', {
      method: 'POST',
      token: admin,
      body: { tenantId: 'demo', username: 'demo-admin', role: 'tenant-admin', password: TENANT_ADMIN_PASSWORD },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const tenantAdmin = await t.login('demo-admin', TENANT_ADMIN_PASSWORD);
    const mint = async (name: string, scopes: string[]): Promise<string> => {
      const r = await t.api('/api/auth/tokens', { method: 'POST', token: tenantAdmin, body: { name, scopes } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.tenantId, 'demo');
      return r.body.token as string;
    };
    const full = await mint('ar-e2e-video-pose', ['live:video', 'live:pose']);
    const poseOnly = await mint('ar-e2e-pose', ['live:pose']);

    // No session in these contexts: the token alone.
    const a = await newPage();
    const b = await newPage();
    try {
      await a.page.goto(`${t.url}/ar-example.html?token=${encodeURIComponent(full)}`);
      await b.page.goto(`${t.url}/ar-example.html?token=${encodeURIComponent(poseOnly)}`);
      for (const p of [a.page, b.page]) await p.waitForFunction(() => document.getElementById('ar-status')?.dataset.state === 'connected', undefined, { timeout: 30_000 });
      assert.equal(await a.page.getAttribute('#ar-status', 'data-video'), 'true');
      assert.equal(await b.page.getAttribute('#ar-status', 'data-video'), 'false');
      assert.match(await text(b.page, 'ar-status'), /no video \(scope live:video not granted\)/);
      assert.doesNotMatch(await text(a.page, 'ar-status'), /not granted/);
      // The token leaves the address bar once read, and its field is masked.
      assert.equal(new URL(a.page.url()).search, '');
      assert.equal(await a.page.getAttribute('#ar-token', 'type'), 'password');

      // While the video+pose page decodes 30 frames, the pose-only page decodes none.
      const { from, to } = await framesAdvance(a.page, '#ar-video', 30, 30_000);
      const va = await videoOf(a.page, '#ar-video');
      assert.equal(va.width, 640, `the AR page shows the B-mode (frames ${from} → ${to})`);
      const vb = await videoOf(b.page, '#ar-video');
      assert.deepEqual({ frames: vb.frames, hasStream: vb.hasStream, width: vb.width }, { frames: 0, hasStream: false, width: 0 }, 'the pose-only page has no video');

      // The overlay (a 2D canvas over the video) draws the image plane outline, depth scale and target.
      const overlayPainted = async (p: Page): Promise<number> =>
        p.evaluate(() => {
          const c = document.querySelector('#ar-overlay') as PageCanvas;
          const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) n++;
          return n;
        });
      let painted = await overlayPainted(a.page);
      for (const end = Date.now() + 15_000; painted < 500 && Date.now() < end; ) {
        await sleep(250);
        painted = await overlayPainted(a.page);
      }
      assert.ok(painted > 500, `the overlay drew the image plane: ${painted} pixels`);
      await Promise.all([shot(a.page, '7-ar-video-pose'), shot(b.page, '7-ar-pose-only')]);
      assert.deepEqual([...a.errors, ...b.errors], [], 'no uncaught errors in the pages');
    } finally {
      await Promise.all([closePage(a.page), closePage(b.page)]);
    }
  });

  test('the server shuts down cleanly on SIGTERM once the browsers have left', async () => {
    for (const c of contexts) await c.close();
    contexts.clear();
    await browser.close();
    const { code, signal, logTail } = await t.stop();
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, `eco3d start's exit after SIGTERM; the end of its log:\n${logTail}`);
  });
});

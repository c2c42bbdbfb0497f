// Integration: the ROS image source (roslib 2.x client) against the simulator's real rosbridge
// server, publishing sensor_msgs/Image from a frame observable.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BehaviorSubject, firstValueFrom, ReplaySubject, Subject, take, toArray } from 'rxjs';
import { WebSocketServer } from 'ws';
import { Eco3dError } from '../protocols/errors.ts';
import type { ImageFrame } from '../protocols/imaging.ts';
import type { LinkStatus, RobotDriver, RobotState } from '../protocols/robot.ts';
import { serveRosbridge } from '../sim/rosbridge-server.ts';
import { rosImageFrameSource } from './sources-ros.ts';

/** The bridge needs a robot; this one never moves. */
class IdleDriver implements RobotDriver {
  readonly kind = 'sim' as const;
  readonly state$ = new ReplaySubject<RobotState>(1);
  readonly link$ = new BehaviorSubject<LinkStatus>({ up: true, atMs: Date.now(), reason: 'test' });
  async connect(): Promise<void> {}
  async send(): Promise<void> {}
  stats() {
    return { statesReceived: 0, commandsSent: 0, commandsFailed: 0, errors: {} };
  }
  async close(): Promise<void> {}
}

async function waitUntil(pred: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const W = 640;
const H = 480;
function usFrame(k: number): ImageFrame {
  const pixels = new Uint8Array(W * H);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7 + k * 13) & 255;
  // ROS time (wall clock), fractional milliseconds on purpose.
  return { index: k, tMs: 1_760_000_000_000 + k * 33.3333, width: W, height: H, pixels };
}

void test('ROS image source: 640×480 mono8 frames published by the rosbridge server arrive through roslib, pixels and stamps intact', { timeout: 8000 }, async () => {
  const frames$ = new Subject<ImageFrame>();
  const driver = new IdleDriver();
  const server = await serveRosbridge(driver, { imageTopic: { frames$ } });
  const src = rosImageFrameSource({ url: server.url });
  const published = new Map<number, ImageFrame>();
  let k = 0;
  // The source subscribes once it is connected; publish until it has what it wants.
  const pump = setInterval(() => {
    const f = usFrame(k++);
    published.set(f.index, f);
    frames$.next(f);
  }, 30);
  try {
    const got = await firstValueFrom(src.frames$.pipe(take(5), toArray()));
    assert.equal(got.length, 5);
    let prevT = -Infinity;
    for (const [i, f] of got.entries()) {
      assert.equal(f.index, i, 'the source numbers its own frames');
      const sent = [...published.values()].find((p) => Math.abs(p.tMs - f.tMs) < 1e-3);
      assert.ok(sent !== undefined, `no published frame has stamp ${f.tMs}`);
      assert.ok(Math.abs(sent.tMs - f.tMs) < 1e-6, `stamp ${f.tMs} vs ${sent.tMs}`);
      assert.ok(f.tMs > prevT, 'stamps increase');
      prevT = f.tMs;
      assert.equal(f.width, W);
      assert.equal(f.height, H);
      assert.ok(Buffer.from(f.pixels).equals(Buffer.from(sent.pixels)), `pixels of frame ${sent.index} differ`);
    }
    assert.equal(src.stats().framesEmitted, 5);
    assert.deepEqual(src.stats().rejected, {});
    // take(5) unsubscribed: refCount 0 closes the connection.
    await waitUntil(() => server.stats().clientsConnected === 0, 2000, 'the source to disconnect');

  } finally {
    clearInterval(pump);
    src.close();
    await server.close();
  }
});

void test('ROS image source: a lost link is ECO3D_ERR_LINK_LOST; a refused connection too', { timeout: 8000 }, async () => {
  const frames$ = new Subject<ImageFrame>();
  const server = await serveRosbridge(new IdleDriver(), { imageTopic: { frames$ } });
  const src = rosImageFrameSource({ url: server.url });
  try {
    const done = new Promise<unknown>((resolve) => {
      src.frames$.subscribe({ error: resolve, complete: () => resolve('completed') });
    });
    await waitUntil(() => server.stats().clientsConnected === 1, 2000, 'the source to connect');
    server.dropAllClients();
    const err = await done;
    assert.ok(err instanceof Eco3dError && err.code === 'ECO3D_ERR_LINK_LOST', String(err));
  } finally {
    src.close();
    await server.close();
  }
  const port = server.port; // closed now: nobody listens there
  const refused = await firstValueFrom(rosImageFrameSource({ url: `ws://127.0.0.1:${port}` }).frames$).then(
    () => 'a frame?',
    (e: unknown) => e,
  );
  assert.ok(refused instanceof Eco3dError && refused.code === 'ECO3D_ERR_LINK_LOST', String(refused));
});

void test('ROS image source: a non-mono8 image is rejected and counted; the stream goes on', { timeout: 5000 }, async () => {
  // A bridge that answers a subscription with an rgb8 image, then a mono8 one.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const addr = wss.address();
  assert.ok(typeof addr === 'object' && addr !== null);
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const m = JSON.parse(data.toString('utf8')) as { op: string; topic: string };
      if (m.op !== 'subscribe') return;
      const header = { stamp: { sec: 5, nanosec: 0 }, frame_id: 'us_image' };
      const img = (encoding: string, step: number, n: number): string =>
        JSON.stringify({ op: 'publish', topic: m.topic, msg: { header, height: 2, width: 2, encoding, is_bigendian: 0, step, data: Buffer.alloc(n, 9).toString('base64') } });
      ws.send(img('rgb8', 6, 12));
      ws.send(img('mono8', 2, 4));
    });
  });
  const src = rosImageFrameSource({ url: `ws://127.0.0.1:${addr.port}` });
  try {
    const f = await firstValueFrom(src.frames$);
    assert.deepEqual({ tMs: f.tMs, w: f.width, px: [...f.pixels] }, { tMs: 5000, w: 2, px: [9, 9, 9, 9] });
    assert.deepEqual(src.stats(), { framesEmitted: 1, rejected: { 'unsupported-encoding': 1 } });
  } finally {
    src.close();
    for (const c of wss.clients) c.terminate();
    await new Promise((r) => wss.close(r));
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BehaviorSubject, map, VirtualTimeScheduler } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import type { ImageFrame } from '../protocols/imaging.ts';
import type { Pose } from '../protocols/robot.ts';
import { parseRosImage } from './sources-ros.ts';
import { playbackFrameSource, simulatorFrameSource } from './sources.ts';
import type { TimedPose } from './sync.ts';

const newScheduler = (): TestScheduler => new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const pose = (tMs: number, x: number): TimedPose => ({ tMs, tcpPose: { positionMm: { x, y: 0, z: 0 }, orientation: { x: 0, y: 0, z: 0, w: 1 } } });
/** A renderer stand-in: one pixel whose value is the pose's x. */
const render = (p: Pose): ImageFrame => ({ index: -1, tMs: -1, width: 1, height: 1, pixels: new Uint8Array([p.positionMm.x]) });
const label = (f: ImageFrame): string => `${f.index}@${f.tMs}:${f.pixels[0]}`;

void test('simulator source: a frame per 1/fps at the latest pose, stamped with its time; no new pose, no frame', () => {
  const ts = newScheduler();
  let src!: ReturnType<typeof simulatorFrameSource>;
  ts.run(({ hot, expectObservable }) => {
    src = simulatorFrameSource({ render, poses$: hot('a 14ms b', { a: pose(5, 1), b: pose(17, 2) }), fps: 100, scheduler: ts });
    expectObservable(src.frames$.pipe(map(label)), '35ms !').toBe('10ms a 9ms b', { a: '0@5:1', b: '1@17:2' });
  });
  assert.equal(src.temperature, 'hot');
  assert.deepEqual(src.stats(), { framesEmitted: 2, rejected: { 'no-new-pose': 1 } });
});

void test('simulator source is hot with refCount: one pose subscription shared, torn down with the last subscriber, restarted by the next', () => {
  const ts = newScheduler();
  ts.run(({ hot, expectObservable, expectSubscriptions }) => {
    const poses = hot('a 14ms b 29ms c', { a: pose(5, 1), b: pose(17, 2), c: pose(47, 3) });
    const src = simulatorFrameSource({ render, poses$: poses, fps: 100, scheduler: ts });
    const frames = src.frames$.pipe(map(label));
    expectObservable(frames, '^ 34ms !').toBe('10ms a 9ms b', { a: '0@5:1', b: '1@17:2' });
    expectObservable(frames, '12ms ^ 12ms !').toBe('20ms b', { b: '1@17:2' });
    // A new upstream: its ticks start at 40 (50 is the first), and `index` goes on.
    expectObservable(frames, '40ms ^ 14ms !').toBe('50ms c', { c: '2@47:3' });
    expectSubscriptions(poses.subscriptions).toBe(['^ 34ms !', '40ms ^ 14ms !']);
  });
});

void test('simulator source: close() completes subscribers and tears the upstream down; a later subscriber completes at once', () => {
  const ts = newScheduler();
  ts.run(({ hot, expectObservable, expectSubscriptions }) => {
    const poses = hot('a', { a: pose(5, 1) });
    const src = simulatorFrameSource({ render, poses$: poses, fps: 100, scheduler: ts });
    ts.schedule(() => src.close(), 15);
    expectObservable(src.frames$.pipe(map(label))).toBe('10ms a 4ms |', { a: '0@5:1' });
    expectObservable(src.frames$, '20ms ^').toBe('20ms |');
    expectSubscriptions(poses.subscriptions).toBe('^ 14ms !');
  });
});

void test('simulator source: an asynchronous renderer has one render in flight; a tick meanwhile is skipped; frames keep tick order', async () => {
  const vs = new VirtualTimeScheduler();
  const poses = new BehaviorSubject<TimedPose>(pose(5, 1));
  const pending: (() => void)[] = [];
  const asyncRender = (p: Pose): Promise<ImageFrame> => new Promise((resolve) => pending.push(() => resolve(render(p))));
  const src = simulatorFrameSource({ render: asyncRender, poses$: poses, fps: 100, scheduler: vs });
  const got: string[] = [];
  const sub = src.frames$.pipe(map(label)).subscribe((f) => got.push(f));
  const runTo = (ms: number): void => {
    vs.maxFrames = ms;
    vs.flush();
  };
  runTo(10); // tick 10: render of pose 5 starts
  assert.equal(pending.length, 1);
  poses.next(pose(17, 2));
  runTo(20); // tick 20: still rendering → skipped
  assert.equal(pending.length, 1);
  pending.shift()!();
  await Promise.resolve();
  assert.deepEqual(got, ['0@5:1']);
  runTo(30); // tick 30: pose 17 is new → rendered
  pending.shift()!();
  await Promise.resolve();
  assert.deepEqual(got, ['0@5:1', '1@17:2']);
  runTo(40); // tick 40: no new pose
  sub.unsubscribe();
  assert.deepEqual(src.stats(), { framesEmitted: 2, rejected: { 'render-busy': 1, 'no-new-pose': 1 } });
  // A render that ends after the last subscriber left emits nothing.
  const late = simulatorFrameSource({ render: asyncRender, poses$: poses, fps: 100, scheduler: vs });
  const lateGot: string[] = [];
  const lateSub = late.frames$.pipe(map(label)).subscribe((f) => lateGot.push(f));
  runTo(60);
  lateSub.unsubscribe();
  pending.shift()!();
  await Promise.resolve();
  assert.deepEqual(lateGot, []);
});

const rec = (index: number, tMs: number): ImageFrame => ({ index, tMs, width: 1, height: 1, pixels: new Uint8Array([index]) });
const recording = [rec(7, 100), rec(8, 104), rec(9, 110)];

void test('playback source: cold, at recorded speed, at a rate, or as fast as possible; close() ends it', () => {
  const ts = newScheduler();
  ts.run(({ expectObservable }) => {
    const idx = (f: ImageFrame): number => f.index;
    const recorded = playbackFrameSource({ frames: recording, scheduler: ts });
    expectObservable(recorded.frames$.pipe(map(idx))).toBe('a---b-----(c|)', { a: 7, b: 8, c: 9 });
    // Cold: a later subscriber gets the whole recording from its own start.
    expectObservable(recorded.frames$.pipe(map(idx)), '5ms ^').toBe('5ms a---b-----(c|)', { a: 7, b: 8, c: 9 });
    const fast = playbackFrameSource({ frames: recording, speed: 2, scheduler: ts });
    expectObservable(fast.frames$.pipe(map(idx))).toBe('a-b--(c|)', { a: 7, b: 8, c: 9 });
    const asap = playbackFrameSource({ frames: recording, speed: 'asap', scheduler: ts });
    expectObservable(asap.frames$.pipe(map(idx))).toBe('(abc|)', { a: 7, b: 8, c: 9 });
    const closing = playbackFrameSource({ frames: recording, scheduler: ts });
    ts.schedule(() => closing.close(), 6);
    expectObservable(closing.frames$.pipe(map(idx))).toBe('a---b-|', { a: 7, b: 8 });
    expectObservable(closing.frames$, '8ms ^').toBe('8ms |');
    assert.equal(recorded.temperature, 'cold');
  });
});

void test('playback source: a lazy reader is read per subscription, frame by frame, and released on unsubscribe', () => {
  const ts = newScheduler();
  let opened = 0;
  let released = 0;
  let read = 0;
  function* reader(): Generator<ImageFrame> {
    opened++;
    try {
      for (let i = 0; i < 1000; i++) {
        read++;
        yield rec(i, i * 10);
      }
    } finally {
      released++;
    }
  }
  ts.run(({ expectObservable }) => {
    const src = playbackFrameSource({ frames: reader, scheduler: ts });
    expectObservable(src.frames$.pipe(map((f) => f.index)), '25ms !').toBe('a 9ms b 9ms c', { a: 0, b: 1, c: 2 });
  });
  assert.deepEqual({ opened, released, read }, { opened: 1, released: 1, read: 4 });
});

// ---------------------------------------------------------------------------------------------
// sensor_msgs/Image parsing (the ROS source's edge; the integration test is sources-ros.test.ts)

const header = { stamp: { sec: 12, nanosec: 500_000_000 }, frame_id: 'us_image' };

void test('ROS image: mono8 in base64, a byte array or bytes; padded rows unpadded; stamp in ms', () => {
  const px = [1, 2, 3, 4, 5, 6];
  const b64 = Buffer.from(px).toString('base64');
  for (const data of [b64, px, new Uint8Array(px)]) {
    const r = parseRosImage({ header, height: 2, width: 3, encoding: 'mono8', is_bigendian: 0, step: 3, data });
    assert.ok(r.ok);
    assert.deepEqual(r.ok ? { ...r.frame, pixels: [...r.frame.pixels] } : null, { tMs: 12_500, width: 3, height: 2, pixels: px });
  }
  const padded = parseRosImage({ header: { stamp: { secs: 1, nsecs: 0 } }, height: 2, width: 3, encoding: '8UC1', step: 4, data: [1, 2, 3, 0, 4, 5, 6, 0] });
  assert.ok(padded.ok);
  assert.deepEqual(padded.ok ? [padded.frame.tMs, ...padded.frame.pixels] : null, [1000, 1, 2, 3, 4, 5, 6]);
});

void test('ROS image: other encodings, bad sizes and malformed messages are rejected with a reason', () => {
  const base = { header, height: 2, width: 3, encoding: 'mono8', step: 3, data: [1, 2, 3, 4, 5, 6] };
  const reason = (m: unknown): string => {
    const r = parseRosImage(m);
    return r.ok ? 'ok' : r.reason;
  };
  assert.equal(reason({ ...base, encoding: 'rgb8', step: 9 }), 'unsupported-encoding');
  assert.equal(reason({ ...base, encoding: 'mono16', step: 6 }), 'unsupported-encoding');
  assert.equal(reason({ ...base, data: [1, 2, 3] }), 'size-mismatch');
  assert.equal(reason({ ...base, step: 2 }), 'size-mismatch');
  assert.equal(reason({ ...base, data: [1, 2, 3, 4, 5, 300] }), 'malformed');
  assert.equal(reason({ ...base, header: { stamp: { sec: 1, nanosec: -1 } } }), 'malformed');
  assert.equal(reason({ ...base, width: 0 }), 'malformed');
  assert.equal(reason(null), 'malformed');
  assert.equal(reason(base), 'ok');
});

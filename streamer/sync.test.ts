import assert from 'node:assert/strict';
import { test } from 'node:test';
import { map } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { quatFromAxisAngle } from '../protocols/geometry.ts';
import { poseToMat4 } from '../protocols/imaging-pose.ts';
import { IDENTITY_MAT4, mat4Apply, mat4Mul, type ImageFrame, type Mat4, type TrackedFrame } from '../protocols/imaging.ts';
import type { Pose, Quat } from '../protocols/robot.ts';
import { FramePoseMatcher, FrameSync, PoseHistory, type SyncDropReason, type TimedPose } from './sync.ts';

const newScheduler = (): TestScheduler => new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const Q0: Quat = { x: 0, y: 0, z: 0, w: 1 };
const poseAtX = (tMs: number, x: number): TimedPose => ({ tMs, tcpPose: { positionMm: { x, y: 0, z: 0 }, orientation: Q0 } });
const frame = (index: number, tMs: number): ImageFrame => ({ index, tMs, width: 1, height: 1, pixels: new Uint8Array([index]) });
const summary = (f: TrackedFrame): { i: number; x: number } => ({ i: f.index, x: f.imageToReference[3]! });

void test('sync: every drop reason, in marbles; tracked frames keep their order; both inputs torn down on completion', () => {
  const sync = new FrameSync({ imageToProbe: IDENTITY_MAT4(), maxGapMs: 50, futureToleranceMs: 20 });
  newScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
    const poses = hot('--a-b-----cd', { a: poseAtX(10, 0), b: poseAtX(20, 10), c: poseAtX(40, 30), d: poseAtX(200, 0) });
    const frames = hot('0-----1234--56|', {
      0: frame(0, 5), // no pose yet
      1: frame(1, 15), // between a and b: x = 5
      2: frame(2, 5), // before the oldest pose
      3: frame(3, 100), // 80 ms past the newest pose
      4: frame(4, 30), // 10 ms past the newest: waits for c, then x = 20
      5: frame(5, 150), // between c and d, 160 ms apart
      6: frame(6, Number.NaN),
    });
    expectObservable(frames.pipe(sync.track(poses), map(summary))).toBe('------x---y---|', { x: { i: 1, x: 5 }, y: { i: 4, x: 20 } });
    expectSubscriptions(poses.subscriptions).toBe('^-------------!');
    expectSubscriptions(frames.subscriptions).toBe('^-------------!');
  });
  const expected: Record<SyncDropReason, number> = { 'no-pose': 1, 'too-old': 1, future: 1, gap: 1, invalid: 1, overflow: 0 };
  assert.deepEqual(sync.stats(), { tracked: 2, dropped: expected, posesRejected: 0 });
});

void test('sync: unsubscribing the output unsubscribes the poses and the frames; a waiting frame is not emitted', () => {
  const sync = new FrameSync({ imageToProbe: IDENTITY_MAT4(), futureToleranceMs: 20 });
  newScheduler().run(({ hot, cold, expectObservable, expectSubscriptions }) => {
    const poses = hot('-a------b', { a: poseAtX(10, 0), b: poseAtX(20, 10) });
    const frames = cold('--0-1', { 0: frame(0, 10), 1: frame(1, 15) });
    expectObservable(frames.pipe(sync.track(poses), map(summary)), '^-----!').toBe('--x', { x: { i: 0, x: 0 } });
    expectSubscriptions(poses.subscriptions).toBe('^-----!');
    expectSubscriptions(frames.subscriptions).toBe('^-----!');
  });
  assert.equal(sync.stats().tracked, 1);
});

void test('sync: the pose stream ending drops waiting and later frames as future; a pose error is passed on', () => {
  const sync = new FrameSync({ imageToProbe: IDENTITY_MAT4(), futureToleranceMs: 20 });
  newScheduler().run(({ hot, cold, expectObservable }) => {
    const poses = cold('a-|', { a: poseAtX(10, 0) });
    const frames = hot('-0--1-|', { 0: frame(0, 15), 1: frame(1, 12) });
    expectObservable(frames.pipe(sync.track(poses))).toBe('------|');
    const failing = cold('a-#', { a: poseAtX(10, 0) }, new Error('link lost'));
    expectObservable(hot<ImageFrame>('------').pipe(sync.track(failing))).toBe('--#', undefined, new Error('link lost'));
  });
  assert.equal(sync.stats().dropped.future, 2);
});

void test('sync: at most maxWaitingFrames wait; the oldest overflows; out-of-order and non-finite poses are rejected', () => {
  const out: number[] = [];
  const drops: [SyncDropReason, number][] = [];
  let rejected = 0;
  const m = new FramePoseMatcher(
    { imageToProbe: IDENTITY_MAT4(), futureToleranceMs: 100, maxWaitingFrames: 2 },
    (f) => out.push(f.index),
    (r, f) => drops.push([r, f.index]),
    () => rejected++,
  );
  m.addPose(poseAtX(0, 0));
  m.addFrame(frame(1, 10));
  m.addFrame(frame(2, 20));
  m.addFrame(frame(3, 30)); // three waiting: frame 1 overflows
  assert.deepEqual(drops, [['overflow', 1]]);
  m.addPose(poseAtX(0, 1)); // not newer
  m.addPose({ tMs: 5, tcpPose: { positionMm: { x: Number.NaN, y: 0, z: 0 }, orientation: Q0 } });
  assert.equal(rejected, 2);
  m.addPose(poseAtX(25, 25)); // releases frame 2 only; frame 3 keeps waiting
  assert.deepEqual(out, [2]);
  assert.equal(m.waiting, 1);
  m.finish();
  assert.deepEqual(drops, [['overflow', 1], ['future', 3]]);
});

void test('pose history: bounded by age and count; older frames then read as too-old', () => {
  const h = new PoseHistory({ historyMs: 100, maxPoses: 5 });
  for (let t = 0; t <= 300; t += 10) h.add(t, poseAtX(t, t).tcpPose);
  assert.equal(h.size, 5);
  assert.equal(h.oldestMs, 260);
  assert.deepEqual(h.lookup(250), { kind: 'drop', reason: 'too-old' });
  const hit = h.lookup(265);
  assert.equal(hit.kind, 'pose');
  assert.equal(hit.kind === 'pose' ? hit.pose.positionMm.x : NaN, 265);
});

// ---------------------------------------------------------------------------------------------
// Accuracy: a known motion gives exactly the pose at the frame's time

const AXIS = { x: 1, y: 2, z: 3 };
const OMEGA_RAD_PER_MS = 0.002; // 115°/s: a fast wrist
const V_MM_PER_MS = { x: 0.05, y: -0.02, z: 0.01 }; // 50 mm/s
const truePose = (tMs: number): Pose => ({
  positionMm: { x: 400 + V_MM_PER_MS.x * tMs, y: 10 + V_MM_PER_MS.y * tMs, z: 250 + V_MM_PER_MS.z * tMs },
  orientation: quatFromAxisAngle(AXIS, OMEGA_RAD_PER_MS * tMs),
});

// A realistic calibration: 0.1 mm/px, the image's top centre at the probe face, rows along z.
const IMAGE_TO_PROBE: Mat4 = new Float64Array([0.1, 0, 0, -32, 0, 0, 0, 0, 0, 0.1, 0, 0, 0, 0, 0, 1]);

void test('sync accuracy: linear motion and constant-rate rotation give the exact interpolated pose, with the temporal offset', () => {
  const offsetMs = 7;
  const m = new FramePoseMatcher(
    { imageToProbe: IMAGE_TO_PROBE, temporalCalibrationOffsetMs: offsetMs },
    (f) => out.push(f),
    (r) => assert.fail(`dropped: ${r}`),
  );
  const out: TrackedFrame[] = [];
  const frameTimes: number[] = [];
  for (let k = 0; k < 30; k++) frameTimes.push(20.3 + k * 33.37);
  // Poses at 125 Hz with a little jitter, as a real controller stamps them.
  let next = 0;
  for (let t = 0; t < 1100; t += 8 + (t % 3) * 0.25) {
    m.addPose({ tMs: t, tcpPose: truePose(t) });
    while (next < frameTimes.length && frameTimes[next]! + offsetMs <= t) m.addFrame(frame(next, frameTimes[next++]!));
  }
  assert.equal(out.length, frameTimes.length);
  let worstMm = 0;
  for (const f of out) {
    const expected = mat4Mul(poseToMat4(truePose(f.tMs + offsetMs)), IMAGE_TO_PROBE);
    for (const corner of [{ x: 0, y: 0, z: 0 }, { x: 639, y: 0, z: 0 }, { x: 0, y: 479, z: 0 }, { x: 639, y: 479, z: 0 }]) {
      const a = mat4Apply(f.imageToReference, corner);
      const b = mat4Apply(expected, corner);
      worstMm = Math.max(worstMm, Math.hypot(a.x - b.x, a.y - b.y, a.z - b.z));
    }
  }
  assert.ok(worstMm < 1e-9, `worst corner error ${worstMm} mm`);
});

// The scanner rendering in a worker thread: the same pixels as on this thread, bad poses refused
// per frame without ending the stream, and at most one render waiting (the latest wins).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { lastValueFrom, Subject, toArray } from 'rxjs';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { Pose, RobotState } from '../protocols/robot.ts';
import { HOME_POSE } from '../protocols/scene.ts';
import { createPhantom } from './phantom.ts';
import { UltrasoundSimulator } from './ultrasound.ts';
import { workerUltrasoundFrames$ } from './us-stream.ts';
import { startRenderWorker } from './worker-render.ts';

const state = (tMs: number, pose: Pose = HOME_POSE): RobotState => ({ tMs, tcpPose: pose }) as unknown as RobotState;

void test('a real worker renders the same frame as this thread, and refuses a non-finite pose', async () => {
  const worker = await startRenderWorker(3);
  try {
    const here = new UltrasoundSimulator(createPhantom(3)).render(HOME_POSE, 123);
    const rendered = await worker.render(HOME_POSE, 123);
    const there = rendered.frame;
    assert.ok(rendered.renderMs > 0 && rendered.renderMs < 5000, `renderMs ${rendered.renderMs}`);
    assert.equal(there.width, here.width);
    assert.equal(there.height, here.height);
    assert.ok(Buffer.from(there.pixels).equals(Buffer.from(here.pixels)), 'pixels differ');
    assert.deepEqual(Array.from(there.imageToReference), Array.from(here.imageToReference));
    await assert.rejects(worker.render({ ...HOME_POSE, positionMm: { x: Number.NaN, y: 0, z: 0 } }, 1), (err: Error & { code?: string }) => err.code === 'ECO3D_ERR_NOT_FINITE');
    // The worker survives a refused pose.
    assert.equal((await worker.render(HOME_POSE, 124)).frame.tMs, 124);
  } finally {
    await worker.close();
  }
  await assert.rejects(worker.render(HOME_POSE, 1), (err: Error & { code?: string }) => err.code === 'ECO3D_ERR_CLOSED');
});

void test('workerUltrasoundFrames$: one render in flight, the latest due state waits, a failed render is reported and skipped', async () => {
  const started: number[] = [];
  const pending: { tMs: number; resolve(f: TrackedFrame): void; reject(e: Error): void }[] = [];
  // Renders that "take" 0 ms: no pause between renders here.
  const render = (_pose: Pose, tMs: number): Promise<{ frame: TrackedFrame; renderMs: number }> =>
    new Promise<TrackedFrame>((resolve, reject) => {
      started.push(tMs);
      pending.push({ tMs, resolve, reject });
    }).then((frame) => ({ frame, renderMs: 0 }));
  const errors: unknown[] = [];
  const states = new Subject<RobotState>();
  const out = lastValueFrom(workerUltrasoundFrames$(render, states, 10, (e) => errors.push(e)).pipe(toArray()));
  const frame = (tMs: number): TrackedFrame => ({ tMs }) as unknown as TrackedFrame;
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 10));
  // 10 fps: due at 0, 100, 200, …; states between slots are not due.
  states.next(state(0));
  states.next(state(50));
  states.next(state(100)); // waits
  states.next(state(200)); // replaces 100 (the latest wins)
  await settle();
  assert.deepEqual(started, [0]);
  pending.shift()!.reject(new Error('worker hiccup'));
  await settle();
  assert.deepEqual(started, [0, 200]);
  pending.shift()!.resolve(frame(200));
  await settle();
  states.next(state(300));
  await settle();
  pending.shift()!.resolve(frame(300));
  states.complete();
  const frames = await out;
  assert.deepEqual(
    frames.map((f) => f.tMs),
    [200, 300],
  );
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /worker hiccup/);
});

void test('workerUltrasoundFrames$: after a render of d ms the next starts d ms later at the earliest (at most half a core)', async () => {
  const started: number[] = [];
  const render = (_pose: Pose, tMs: number): Promise<{ frame: TrackedFrame; renderMs: number }> => {
    started.push(tMs);
    // This render took 60 ms in the worker.
    return Promise.resolve({ frame: { tMs } as unknown as TrackedFrame, renderMs: 60 });
  };
  const states = new Subject<RobotState>();
  const frames: number[] = [];
  const sub = workerUltrasoundFrames$(render, states, 100).subscribe((f) => frames.push(f.tMs));
  states.next(state(0));
  await new Promise((r) => setTimeout(r, 5));
  states.next(state(10)); // due, but must wait ~60 ms
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(started, [0], 'the second render waits for the first one\'s length');
  assert.deepEqual(frames, [0], 'the first frame went out at once');
  await new Promise((r) => setTimeout(r, 80));
  assert.deepEqual(started, [0, 10]);
  sub.unsubscribe();
});

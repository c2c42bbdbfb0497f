import assert from 'node:assert/strict';
import { test } from 'node:test';
import { performance } from 'node:perf_hooks';
import { from, map, Subject, timer, type Observable } from 'rxjs';
import { TestScheduler } from 'rxjs/testing';
import { IDENTITY_MAT4, type TrackedFrame } from '../protocols/imaging.ts';
import { brickSink, concatMapDropOldest, dropOldest, latestOnly, mergeVolumeDeltas, ReconstructionPipeline, volumeDeltas, type FrameSink, type VolumeDelta } from './pipeline.ts';

const newScheduler = (): TestScheduler => new TestScheduler((actual, expected) => assert.deepStrictEqual(actual, expected));

const tracked = (index: number): TrackedFrame => ({ index, tMs: index, width: 1, height: 1, pixels: new Uint8Array(1), imageToReference: IDENTITY_MAT4() });

/** A reconstructor stand-in: the "bricks" of a delta are the indices of the frames pasted since the last take. */
class FakeSink implements FrameSink<number> {
  readonly pasted: number[] = [];
  #changed: number[] = [];
  constructor(private readonly busyMs = 0) {}
  pasteFrame(f: TrackedFrame): void {
    if (this.busyMs > 0) {
      const until = performance.now() + this.busyMs;
      while (performance.now() < until) {
        // a slow paste: the event loop is blocked for busyMs
      }
    }
    this.pasted.push(f.index);
    this.#changed.push(f.index);
  }
  takeChangedBricks(): number[] {
    const c = this.#changed;
    this.#changed = [];
    return c;
  }
}

const delta = (seq: number, bricks: number[], atMs: number): VolumeDelta<number> => ({ seq, bricks, framesPasted: bricks.length, atMs });

void test('deltas: every N frames or T ms after the first frame not yet sent, whichever first; a final delta on completion; never an empty one', () => {
  const ts = newScheduler();
  ts.run(({ hot, expectObservable, expectSubscriptions }) => {
    const frames = hot('-abc-d------e|', { a: tracked(0), b: tracked(1), c: tracked(2), d: tracked(3), e: tracked(4) });
    const sink = new FakeSink();
    // 3 frames cut at 3 (and cancel the timer armed at 1); d alone waits T = 5 → cut at 10; e is cut by the completion.
    expectObservable(volumeDeltas(frames, sink, { everyFrames: 3, everyMs: 5, scheduler: ts })).toBe('---x------y--(z|)', {
      x: delta(0, [0, 1, 2], 3),
      y: delta(1, [3], 10),
      z: delta(2, [4], 13),
    });
    expectSubscriptions(frames.subscriptions).toBe('^------------!');
  });
});

void test('deltas: unsubscribing tears down the frames and the pending timer', () => {
  const ts = newScheduler();
  const sink = new FakeSink();
  ts.run(({ hot, expectObservable, expectSubscriptions }) => {
    const frames = hot('-a--b--', { a: tracked(0), b: tracked(1) });
    expectObservable(volumeDeltas(frames, sink, { everyFrames: 10, everyMs: 5, scheduler: ts }), '^---!').toBe('----');
    expectSubscriptions(frames.subscriptions).toBe('^---!');
  });
  // The timer armed at 1 would have fired at 6; b (at 4) was never pasted.
  assert.deepEqual(sink.pasted, [0]);
});

void test('deltas: a reconstructor that is behind drops the oldest queued frames, counted; the newest are pasted', () => {
  const ts = newScheduler();
  const sink = new FakeSink();
  const dropped: number[] = [];
  ts.run(({ cold, expectObservable }) => {
    // Five frames in one synchronous burst: frame 0 is being pasted, 1..4 queue behind a queue of 2.
    const burst = cold('(abcde|)', { a: tracked(0), b: tracked(1), c: tracked(2), d: tracked(3), e: tracked(4) });
    expectObservable(volumeDeltas(burst, sink, { everyFrames: 10, maxQueuedFrames: 2, scheduler: ts, onFrameDropped: (f) => dropped.push(f.index) })).toBe('(x|)', {
      x: delta(0, [0, 3, 4], 0),
    });
  });
  assert.deepEqual(dropped, [1, 2]);
});

void test('drop-oldest: a slow consumer loses old values, never the newest; drops are counted; completion waits for the queue', () => {
  const dropped: string[] = [];
  newScheduler().run(({ hot, expectObservable, expectSubscriptions }) => {
    const src = hot('-abcde-f----|');
    // The consumer needs 5 ms per value; 2 may wait.
    const slow = (v: string): Observable<string> => timer(5).pipe(map(() => v));
    expectObservable(src.pipe(concatMapDropOldest(2, slow, { onDrop: (v) => dropped.push(v) }))).toBe('------a----d----e----(f|)');
    expectSubscriptions(src.subscriptions).toBe('^-----------!');
  });
  assert.deepEqual(dropped, ['b', 'c']);
});

void test('drop-oldest: unsubscribing tears down the source and the work in progress', () => {
  const ts = newScheduler();
  const inners: { subs: () => { subscribedFrame: number; unsubscribedFrame: number }[] }[] = [];
  ts.run(({ hot, cold, expectObservable, expectSubscriptions }) => {
    const src = hot('-ab---');
    const work = (v: string): Observable<string> => {
      const c = cold('-----(r|)', { r: v.toUpperCase() });
      inners.push({ subs: () => c.subscriptions });
      return c;
    };
    expectObservable(src.pipe(concatMapDropOldest(1, work)), '^-------!').toBe('------A-');
    expectSubscriptions(src.subscriptions).toBe('^-------!');
  });
  // a's work ran 1→6; b's started at 6 and was cut at 8 by the unsubscription.
  assert.deepEqual(inners.map((i) => i.subs().map((s) => [s.subscribedFrame, s.unsubscribedFrame])), [[[1, 6]], [[6, 8]]]);
});

void test('dropOldest / latestOnly: a synchronous burst keeps the first (in delivery) and the newest; each value in its own task', () => {
  const ts = newScheduler();
  const dropped: number[] = [];
  ts.run(({ cold, expectObservable }) => {
    expectObservable(from([1, 2, 3, 4]).pipe(dropOldest(2, { scheduler: ts, onDrop: (v) => dropped.push(v) }))).toBe('(abc|)', { a: 1, b: 3, c: 4 });
    expectObservable(cold('-a-b-|', { a: 1, b: 2 }).pipe(latestOnly({ scheduler: ts }))).toBe('-a-b-|', { a: 1, b: 2 });
    expectObservable(from([1, 2, 3, 4]).pipe(latestOnly({ scheduler: ts }))).toBe('(ab|)', { a: 1, b: 4 });
  });
  assert.deepEqual(dropped, [2]);
});

void test('mergeVolumeDeltas: a dropped delta is folded into the next, bricks by key, the newer winning', () => {
  type Brick = { id: number; v: string };
  const merge = mergeVolumeDeltas<Brick>((b) => b.id);
  const m = merge(
    { seq: 4, bricks: [{ id: 1, v: 'old' }, { id: 2, v: 'old' }], framesPasted: 3, atMs: 10 },
    { seq: 5, bricks: [{ id: 2, v: 'new' }, { id: 3, v: 'new' }], framesPasted: 2, atMs: 20 },
  );
  assert.deepEqual(m, { seq: 5, bricks: [{ id: 1, v: 'old' }, { id: 2, v: 'new' }, { id: 3, v: 'new' }], framesPasted: 5, atMs: 20 });
});

void test('pipeline: hot deltas$ runs from start() to close() whatever the consumers; per-consumer queues and counters; close tears the source down', () => {
  const ts = newScheduler();
  const sink = new FakeSink();
  let pipeline!: ReconstructionPipeline<number>;
  ts.run(({ hot, expectObservable, expectSubscriptions }) => {
    const frames = hot('-a-b-c-d-e-f-g-h', Object.fromEntries([...'abcdefgh'].map((k, i) => [k, tracked(i)])));
    pipeline = new ReconstructionPipeline(frames, sink, { everyFrames: 1, scheduler: ts }).start();
    ts.schedule(() => pipeline.close(), 14);
    const seqs = { a: 0, b: 1, c: 2, d: 3, e: 4, f: 5, g: 6 };
    // A consumer that keeps up: every delta, one per task, completes on close.
    expectObservable(pipeline.consumer('console').pipe(map((d) => d.seq))).toBe('-a-b-c-d-e-f-g|', seqs);
    // A slow one (5 ms per delta, 1 may wait): gets 0, 2, 4, 6 (1, 3, 5 dropped while it was busy),
    // and finishes its queue after close.
    const slow = (d: VolumeDelta<number>): Observable<number> => timer(5).pipe(map(() => d.seq));
    expectObservable(pipeline.consumerWith('viewer', slow, { capacity: 1 })).toBe('------a----c----e----(g|)', seqs);
    // A late one sees only newer deltas.
    expectObservable(pipeline.consumer('late'), '--------^').toBe('---------e-f-g|', {
      e: delta(4, [4], 9),
      f: delta(5, [5], 11),
      g: delta(6, [6], 13),
    });
    expectSubscriptions(frames.subscriptions).toBe('^-------------!');
  });
  const st = pipeline.stats();
  assert.equal(st.state, 'closed');
  assert.equal(st.framesPasted, 7);
  assert.equal(st.deltasEmitted, 7);
  // All three consumers left: their counters moved to consumersGone (7 + 4 + 3 delivered; 3 dropped by the slow one).
  assert.deepEqual(st.consumers, {});
  assert.deepEqual(st.consumersGone, { delivered: 14, dropped: 3 });
  pipeline.close(); // idempotent
});

void test('pipeline: reports consumers by name while they listen; a failing sink fails the pipeline and its consumers', () => {
  const ts = newScheduler();
  ts.run(({ hot, expectObservable }) => {
    const frames = hot('-a-b', { a: tracked(0), b: tracked(1) });
    const bad: FrameSink<number> = {
      pasteFrame: (f) => {
        if (f.index === 1) throw new Error('out of memory budget');
      },
      takeChangedBricks: () => [],
    };
    const p = new ReconstructionPipeline(frames, bad, { everyFrames: 1, scheduler: ts }).start();
    expectObservable(p.consumer('a').pipe(map((d) => d.seq))).toBe('-0-#', { 0: 0 }, new Error('out of memory budget'));
    ts.schedule(() => {
      assert.deepEqual(Object.keys(p.stats().consumers), ['a', 'a#2']);
    }, 2);
    expectObservable(p.consumer('a').pipe(map((d) => d.seq))).toBe('-0-#', { 0: 0 }, new Error('out of memory budget'));
    ts.schedule(() => {
      assert.equal(p.stats().state, 'failed');
      assert.equal(p.stats().error, 'out of memory budget');
    }, 4);
  });
});

void test('the control loop is never blocked: robot states keep flowing while a slow reconstructor works through a burst', async () => {
  // Real time, on purpose: this is about the event loop. Ten frames arrive in one burst, each
  // paste blocks for 15 ms (150 ms of work); robot states come every 4 ms from a timer.
  const sink = new FakeSink(15);
  const frames$ = new Subject<TrackedFrame>();
  const pipeline = new ReconstructionPipeline(frames$, sink, { everyFrames: 5, maxQueuedFrames: 16 }).start();
  const stateTimesMs: number[] = [];
  const robot = setInterval(() => stateTimesMs.push(performance.now()), 4);
  try {
    await new Promise((r) => setTimeout(r, 20));
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) frames$.next(tracked(i));
    while (pipeline.stats().framesPasted < 10) await new Promise((r) => setTimeout(r, 5));
    const t1 = performance.now();
    const during = stateTimesMs.filter((t) => t >= t0 && t <= t1);
    let maxGapMs = 0;
    for (let i = 1; i < during.length; i++) maxGapMs = Math.max(maxGapMs, during[i]! - during[i - 1]!);
    assert.ok(t1 - t0 >= 150, `the pastes took ${t1 - t0} ms`);
    // Synchronous pasting would have blocked for 150 ms; one paste at a time blocks for ~15.
    assert.ok(during.length >= 5, `only ${during.length} robot states in ${Math.round(t1 - t0)} ms`);
    assert.ok(maxGapMs < 60, `robot states stalled for ${Math.round(maxGapMs)} ms`);
    assert.equal(pipeline.stats().deltasEmitted, 2);
  } finally {
    clearInterval(robot);
    pipeline.close();
  }
});

void test('wiring with the real VolumeReconstructor: brickSink deltas carry the changed bricks\' voxels', async () => {
  const { VolumeReconstructor } = await import('./reconstruct.ts');
  // A 64³ grid of 1 mm voxels, 32³ bricks; a 16×16 image at 1 mm/px lying in the plane z = 10.
  const opts = { outputSpacing: [1, 1, 1] as const, outputOrigin: [0, 0, 0] as const, outputExtent: [0, 63, 0, 63, 0, 63] as const };
  const rec = new VolumeReconstructor(opts, { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [64, 64, 64] });
  const img = (index: number, x0: number): TrackedFrame => ({
    index,
    tMs: index,
    width: 16,
    height: 16,
    pixels: new Uint8Array(256).fill(200),
    imageToReference: new Float64Array([1, 0, 0, x0, 0, 1, 0, 5, 0, 0, 1, 10, 0, 0, 0, 1]),
  });
  const ts = newScheduler();
  const seen: VolumeDelta<{ index: number; data: Uint8Array }>[] = [];
  ts.run(({ cold }) => {
    const frames = cold('a-b|', { a: img(0, 5), b: img(1, 40) });
    volumeDeltas(frames, brickSink(rec), { everyFrames: 1, scheduler: ts }).subscribe((d) => seen.push(d));
  });
  assert.deepEqual(seen.map((d) => [d.seq, d.bricks.map((b) => b.index)]), [[0, [0]], [1, [1]]]);
  assert.equal(seen[0]!.bricks[0]!.data[10 * 32 * 32 + 5 * 32 + 5], 200);
});

// The live reconstruction pipeline: tracked frames → incremental paste → volume deltas → fan-out.
//
//   frames$ ─► FrameSync.track(poses$) ─► [bounded frame queue, drop-oldest] ─► paste (one frame
//   per scheduler task) ─► batch: a VolumeDelta every N frames or T ms ─► deltas$ (hot) ─►
//   per consumer: [bounded delta queue, drop-oldest] ─► the consumer's work (ws/WebRTC send)
//
// Never blocking the control loop. Node has one thread: the robot's state$ callbacks, the safety
// supervisor's timers and the sockets all run on the event loop this pipeline shares. So:
// - Each frame is pasted in a task of its own on `scheduler` (default `asyncScheduler`, a
//   macrotask: `asapScheduler` would run in microtasks, which starve I/O). Between two pastes the
//   event loop delivers robot states, timers and socket data. The longest block is one paste.
// - Frames that arrive while the reconstructor is behind wait in a queue of `maxQueuedFrames`;
//   past that the OLDEST frame is dropped and counted (`framesDroppedBacklog`), so memory and lag
//   stay bounded and the newest frames are the ones pasted.
// - Pose synchronisation is cheap (a binary search and a 4×4 product) and runs inline.
//
// Slow consumers. Each consumer has its own queue of `capacity` deltas; when it is full the
// oldest delta is dropped (never the newest) and counted in `stats().consumers`. With a `merge`
// function the dropped delta is folded into the next one instead (bricks by key, newest wins),
// so a slow viewer loses messages, not parts of the volume. A consumer never slows the
// reconstruction or another consumer.
//
// Hot and cold:
// - `volumeDeltas(tracked$, sink)` is COLD and stateful through `sink`: subscribe it ONCE.
// - `ReconstructionPipeline.deltas$` is HOT: the pipeline runs from `start()` to `close()`,
//   whether or not anyone listens (an acquisition is reconstructed even with no viewer); a
//   subscriber sees the deltas emitted after it subscribed (a late viewer first fetches a full
//   snapshot of the volume, then applies deltas). It is a plain Subject multicast, not a
//   refCount `share()`: the last viewer leaving must not stop the reconstruction.
// - `consumer(...)` is cold over the hot stream: each subscription gets its own queue, counters
//   and teardown.
import {
  asyncScheduler,
  from,
  Observable,
  Subject,
  type MonoTypeOperatorFunction,
  type ObservableInput,
  type OperatorFunction,
  type SchedulerLike,
  type Subscription,
} from 'rxjs';
import type { TrackedFrame } from '../protocols/imaging.ts';

/**
 * What the pipeline needs from a reconstructor: paste one frame, then hand over the bricks
 * changed since the last call. `brickSink(reconstructor)` makes one of reconstruct.ts's
 * VolumeReconstructor.
 */
export interface FrameSink<B> {
  /** Its result, if any, is ignored. */
  pasteFrame(frame: TrackedFrame): unknown;
  takeChangedBricks(): B[];
}

/** The shape of reconstruct.ts's VolumeReconstructor that brickSink needs (structural, no import). */
export interface BrickedReconstructor<B> {
  pasteFrame(frame: TrackedFrame): unknown;
  takeChangedBricks(): { readonly indices: ArrayLike<number> };
  brickVoxels(index: number): B;
}

/**
 * A FrameSink whose deltas carry each changed brick's CONTENT at cut time (VolumeReconstructor's
 * `BrickVoxels`: index, start, dims, uint8 data). Content, not a reference to the live volume,
 * so a delta stays true while the volume moves on, and `mergeVolumeDeltas((b) => b.index)` can
 * fold a dropped delta into the next without losing anything.
 */
export function brickSink<B>(rec: BrickedReconstructor<B>): FrameSink<B> {
  return {
    pasteFrame: (frame) => rec.pasteFrame(frame),
    takeChangedBricks: () => Array.from(rec.takeChangedBricks().indices, (i) => rec.brickVoxels(i)),
  };
}

export interface VolumeDelta<B> {
  /** 0, 1, 2, … per pipeline; a consumer that sees a gap knows it lost deltas. */
  readonly seq: number;
  readonly bricks: readonly B[];
  /** Frames pasted since the previous delta. */
  readonly framesPasted: number;
  /** `scheduler.now()` when the delta was cut. */
  readonly atMs: number;
}

// ---------------------------------------------------------------------------------------------
// Bounded, drop-oldest buffering

export interface DropOldestOptions<T> {
  /** Called with each value dropped (or folded by `merge`) from a full queue. */
  readonly onDrop?: (dropped: T) => void;
  /** Fold a dropped value into the next one instead of losing it. */
  readonly merge?: (older: T, newer: T) => T;
}

/**
 * Like `concatMap(work)`, but the values waiting for `work` are bounded: at most `capacity` wait,
 * and when one more comes the OLDEST waiting value is dropped (the newest is always kept).
 * `work` runs for one value at a time; its completion pulls the next value.
 */
export function concatMapDropOldest<T, R>(capacity: number, work: (value: T) => ObservableInput<R>, opts: DropOldestOptions<T> = {}): OperatorFunction<T, R> {
  if (!(Number.isInteger(capacity) && capacity >= 1)) throw new RangeError(`capacity must be an integer ≥ 1, got ${capacity}`);
  return (source) =>
    new Observable<R>((sub) => {
      const queue: T[] = [];
      let busy = false;
      let sourceDone = false;
      let active: Subscription | undefined;

      const runNext = (): void => {
        while (!busy && queue.length > 0 && !sub.closed) {
          busy = true;
          const v = queue.shift()!;
          let inSubscribe = true;
          let doneInSubscribe = false;
          let input: ObservableInput<R>;
          try {
            input = work(v);
          } catch (err) {
            sub.error(err);
            return;
          }
          const s = from(input).subscribe({
            next: (r) => sub.next(r),
            error: (err: unknown) => sub.error(err),
            complete: () => {
              busy = false;
              active = undefined;
              if (inSubscribe) doneInSubscribe = true;
              else runNext();
            },
          });
          inSubscribe = false;
          if (!doneInSubscribe && busy) active = s;
        }
        if (!busy && queue.length === 0 && sourceDone) sub.complete();
      };

      const srcSub = source.subscribe({
        next: (v) => {
          queue.push(v);
          if (queue.length > capacity) {
            const old = queue.shift()!;
            if (opts.merge !== undefined) queue[0] = opts.merge(old, queue[0]!);
            opts.onDrop?.(old);
          }
          runNext();
        },
        error: (err: unknown) => sub.error(err),
        complete: () => {
          sourceDone = true;
          runNext();
        },
      });
      return () => {
        srcSub.unsubscribe();
        active?.unsubscribe();
        queue.length = 0;
      };
    });
}

/** Delivers `value` in a task of its own on `scheduler`. */
const onTask =
  <T>(scheduler: SchedulerLike) =>
  (value: T): Observable<T> =>
    new Observable<T>((s) =>
      scheduler.schedule(() => {
        s.next(value);
        s.complete();
      }),
    );

/**
 * Decouples a consumer that does its work synchronously in `next`: values are delivered one per
 * task on `scheduler` (default asyncScheduler); at most `capacity` wait, and a full queue drops
 * its oldest value.
 */
export function dropOldest<T>(capacity: number, opts: DropOldestOptions<T> & { readonly scheduler?: SchedulerLike } = {}): MonoTypeOperatorFunction<T> {
  return concatMapDropOldest(capacity, onTask<T>(opts.scheduler ?? asyncScheduler), opts);
}

/** `dropOldest(1)`: a slow consumer only ever gets the newest value that came while it was busy. */
export function latestOnly<T>(opts: DropOldestOptions<T> & { readonly scheduler?: SchedulerLike } = {}): MonoTypeOperatorFunction<T> {
  return dropOldest(1, opts);
}

/**
 * A `merge` for deltas whose bricks carry their full content: the union of bricks by key, the
 * newer brick winning. Nothing of the volume is lost when the older delta is dropped.
 */
export function mergeVolumeDeltas<B>(keyOf: (brick: B) => string | number): (older: VolumeDelta<B>, newer: VolumeDelta<B>) => VolumeDelta<B> {
  return (older, newer) => {
    const byKey = new Map<string | number, B>();
    for (const b of older.bricks) byKey.set(keyOf(b), b);
    for (const b of newer.bricks) {
      const k = keyOf(b);
      byKey.delete(k); // keep insertion order "older first, then newer"
      byKey.set(k, b);
    }
    return { seq: newer.seq, bricks: [...byKey.values()], framesPasted: older.framesPasted + newer.framesPasted, atMs: newer.atMs };
  };
}

// ---------------------------------------------------------------------------------------------
// Frames → deltas (cold)

export interface VolumeDeltaOptions {
  /** Cut a delta after this many pasted frames. Default 10 (a third of a second at 30 fps). */
  readonly everyFrames?: number;
  /** … or this long after the first frame not yet in a delta, whichever comes first. Default 100 ms. */
  readonly everyMs?: number;
  /** Frames waiting to be pasted, at most; a full queue drops its oldest. Default 32 (about 1 s at 30 fps). */
  readonly maxQueuedFrames?: number;
  /** Where pastes and batch timers run. Default asyncScheduler (macrotasks; see the header). */
  readonly scheduler?: SchedulerLike;
  readonly onFramePasted?: (frame: TrackedFrame) => void;
  readonly onFrameDropped?: (frame: TrackedFrame) => void;
}

const DEFAULTS = { everyFrames: 10, everyMs: 100, maxQueuedFrames: 32, consumerCapacity: 4 } as const;

/**
 * COLD: on subscription, pastes every tracked frame into `sink` (one frame per task) and emits a
 * VolumeDelta every `everyFrames` frames or `everyMs` after the first frame not yet in a delta;
 * never an empty one. When `tracked$` completes, the last frames go out in a final delta. The
 * sink is stateful: subscribe once (ReconstructionPipeline does that for you).
 */
export function volumeDeltas<B>(tracked$: Observable<TrackedFrame>, sink: FrameSink<B>, opts: VolumeDeltaOptions = {}): Observable<VolumeDelta<B>> {
  const everyFrames = opts.everyFrames ?? DEFAULTS.everyFrames;
  const everyMs = opts.everyMs ?? DEFAULTS.everyMs;
  const maxQueued = opts.maxQueuedFrames ?? DEFAULTS.maxQueuedFrames;
  const scheduler = opts.scheduler ?? asyncScheduler;
  if (!(Number.isInteger(everyFrames) && everyFrames >= 1)) throw new RangeError(`everyFrames must be an integer ≥ 1, got ${everyFrames}`);
  if (!(everyMs > 0 && Number.isFinite(everyMs))) throw new RangeError(`everyMs must be a finite number > 0, got ${everyMs}`);
  const paste = (f: TrackedFrame): Observable<TrackedFrame> =>
    new Observable<TrackedFrame>((s) =>
      scheduler.schedule(() => {
        try {
          sink.pasteFrame(f);
        } catch (err) {
          s.error(err);
          return;
        }
        s.next(f);
        s.complete();
      }),
    );
  return new Observable<VolumeDelta<B>>((sub) => {
    let seq = 0;
    let pending = 0;
    let timer: Subscription | undefined;
    const cut = (): void => {
      timer?.unsubscribe();
      timer = undefined;
      if (pending === 0) return;
      const framesPasted = pending;
      pending = 0;
      sub.next({ seq: seq++, bricks: sink.takeChangedBricks(), framesPasted, atMs: scheduler.now() });
    };
    const s = tracked$.pipe(concatMapDropOldest(maxQueued, paste, { onDrop: (f) => opts.onFrameDropped?.(f) })).subscribe({
      next: (f) => {
        opts.onFramePasted?.(f);
        pending++;
        if (pending >= everyFrames) cut();
        else timer ??= scheduler.schedule(cut, everyMs);
      },
      error: (err: unknown) => sub.error(err),
      complete: () => {
        cut();
        sub.complete();
      },
    });
    return () => {
      s.unsubscribe();
      timer?.unsubscribe();
    };
  });
}

// ---------------------------------------------------------------------------------------------
// The hot pipeline with per-consumer queues and counters

export interface ConsumerStats {
  readonly delivered: number;
  readonly dropped: number;
}

export interface PipelineStats {
  readonly state: 'idle' | 'running' | 'completed' | 'failed' | 'closed';
  readonly framesPasted: number;
  /** Frames dropped because the reconstructor was behind (oldest first). */
  readonly framesDroppedBacklog: number;
  readonly deltasEmitted: number;
  readonly lastDeltaAtMs: number | undefined;
  /** Current consumers, by the name they subscribed with (`name#2` for a second of that name). */
  readonly consumers: Readonly<Record<string, ConsumerStats>>;
  /** Consumers that left, summed. */
  readonly consumersGone: ConsumerStats;
  readonly error: string | undefined;
}

export interface ConsumerOptions<B> {
  /** Deltas waiting for this consumer, at most. Default 4. */
  readonly capacity?: number;
  /** Fold a dropped delta into the next (see mergeVolumeDeltas) instead of losing its bricks. */
  readonly merge?: (older: VolumeDelta<B>, newer: VolumeDelta<B>) => VolumeDelta<B>;
  /** For `consumer()`: where deliveries run. Default asyncScheduler. */
  readonly scheduler?: SchedulerLike;
}

export class ReconstructionPipeline<B> {
  readonly #subject = new Subject<VolumeDelta<B>>();
  /** HOT: deltas from `start()` on; completes when the frames end or on `close()`. */
  readonly deltas$: Observable<VolumeDelta<B>> = this.#subject.asObservable();
  readonly #cold: Observable<VolumeDelta<B>>;
  readonly #scheduler: SchedulerLike;
  #conn: Subscription | undefined;
  #state: PipelineStats['state'] = 'idle';
  #error: string | undefined;
  #framesPasted = 0;
  #framesDropped = 0;
  #deltas = 0;
  #lastDeltaAtMs: number | undefined;
  readonly #consumers = new Map<string, { delivered: number; dropped: number }>();
  readonly #gone = { delivered: 0, dropped: 0 };

  constructor(tracked$: Observable<TrackedFrame>, sink: FrameSink<B>, opts: Omit<VolumeDeltaOptions, 'onFramePasted' | 'onFrameDropped'> = {}) {
    this.#scheduler = opts.scheduler ?? asyncScheduler;
    this.#cold = volumeDeltas(tracked$, sink, {
      ...opts,
      onFramePasted: () => {
        this.#framesPasted++;
      },
      onFrameDropped: () => {
        this.#framesDropped++;
      },
    });
  }

  /** Starts pasting (idempotent; a closed pipeline stays closed). */
  start(): this {
    if (this.#state !== 'idle') return this;
    this.#state = 'running';
    this.#conn = this.#cold.subscribe({
      next: (d) => {
        this.#deltas++;
        this.#lastDeltaAtMs = d.atMs;
        this.#subject.next(d);
      },
      error: (err: unknown) => {
        this.#state = 'failed';
        this.#error = err instanceof Error ? err.message : String(err);
        this.#subject.error(err);
      },
      complete: () => {
        this.#state = 'completed';
        this.#subject.complete();
      },
    });
    return this;
  }

  /** Idempotent: stops the frames (unsubscribing the source chain) and completes deltas$. */
  close(): void {
    if (this.#state === 'closed') return;
    const wasRunning = this.#state === 'running' || this.#state === 'idle';
    this.#state = 'closed';
    this.#conn?.unsubscribe();
    this.#conn = undefined;
    if (wasRunning) this.#subject.complete();
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  stats(): PipelineStats {
    const consumers: Record<string, ConsumerStats> = {};
    for (const [k, v] of this.#consumers) consumers[k] = { ...v };
    return {
      state: this.#state,
      framesPasted: this.#framesPasted,
      framesDroppedBacklog: this.#framesDropped,
      deltasEmitted: this.#deltas,
      lastDeltaAtMs: this.#lastDeltaAtMs,
      consumers,
      consumersGone: { ...this.#gone },
      error: this.#error,
    };
  }

  /**
   * A consumer that handles each delta synchronously in `next`: deltas come one per task, at most
   * `capacity` wait, the oldest is dropped. Cold over the hot deltas$.
   */
  consumer(name: string, opts: ConsumerOptions<B> = {}): Observable<VolumeDelta<B>> {
    return this.consumerWith(name, onTask<VolumeDelta<B>>(opts.scheduler ?? this.#scheduler), opts);
  }

  /**
   * A consumer with asynchronous work per delta (send, then wait for the socket to drain): the
   * next delta starts when `work`'s observable completes; meanwhile at most `capacity` wait.
   */
  consumerWith<R>(name: string, work: (delta: VolumeDelta<B>) => ObservableInput<R>, opts: ConsumerOptions<B> = {}): Observable<R> {
    const capacity = opts.capacity ?? DEFAULTS.consumerCapacity;
    return new Observable<R>((sub) => {
      let key = name;
      for (let n = 2; this.#consumers.has(key); n++) key = `${name}#${n}`;
      const c = { delivered: 0, dropped: 0 };
      this.#consumers.set(key, c);
      const counted = (d: VolumeDelta<B>): ObservableInput<R> => {
        c.delivered++;
        return work(d);
      };
      const s = this.deltas$
        .pipe(
          concatMapDropOldest(capacity, counted, {
            onDrop: () => {
              c.dropped++;
            },
            ...(opts.merge === undefined ? {} : { merge: opts.merge }),
          }),
        )
        .subscribe(sub);
      return () => {
        s.unsubscribe();
        this.#consumers.delete(key);
        this.#gone.delivered += c.delivered;
        this.#gone.dropped += c.dropped;
      };
    });
  }
}

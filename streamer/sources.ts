// Frame sources: where B-mode frames come from. One interface, three implementations:
//   - simulatorFrameSource: renders a frame at the robot's latest pose, at a fixed frame rate;
//   - rosImageFrameSource (sources-ros.ts): a sensor_msgs/Image topic over rosbridge;
//   - playbackFrameSource: a recorded sequence, at recorded speed or as fast as possible.
//
// Hot or cold is part of each source's contract (`temperature`):
//   hot  — live: one upstream (renderer, rosbridge subscription) shared by all subscribers; it
//          starts with the first subscriber and is torn down when the last one leaves
//          (`share()` with its default refCount reset); a late subscriber sees only newer
//          frames; `index` keeps counting across restarts.
//   cold — each subscriber gets the whole sequence from its start, on its own timer.
// Every source has an idempotent `close()`: current subscribers complete, upstream is torn down,
// and a later subscriber completes at once.
import { asyncScheduler, interval, Observable, ReplaySubject, share, takeUntil, type SchedulerLike, type Subscription } from 'rxjs';
import type { ImageFrame } from '../protocols/imaging.ts';
import type { Pose } from '../protocols/robot.ts';
import type { TimedPose } from './sync.ts';

export type FrameSourceKind = 'sim' | 'ros' | 'playback';
export type Temperature = 'hot' | 'cold';

export interface FrameSourceStats {
  readonly framesEmitted: number;
  /** Frames not emitted, by reason (e.g. `unsupported-encoding`, `no-new-pose`). */
  readonly rejected: Readonly<Record<string, number>>;
}

export interface FrameSource<F extends ImageFrame = ImageFrame> {
  readonly kind: FrameSourceKind;
  readonly temperature: Temperature;
  readonly frames$: Observable<F>;
  readonly closed: boolean;
  stats(): FrameSourceStats;
  /** Idempotent: completes every subscriber and tears the upstream down. */
  close(): void;
}

/** Shared plumbing: counters, close(), and the hot/cold wrapping. */
export class SourceBase<F extends ImageFrame> implements FrameSource<F> {
  readonly frames$: Observable<F>;
  readonly #closed$ = new ReplaySubject<void>(1);
  #closed = false;
  framesEmitted = 0;
  readonly rejected: Record<string, number> = {};

  constructor(
    readonly kind: FrameSourceKind,
    readonly temperature: Temperature,
    upstream: Observable<F>,
  ) {
    const guarded = upstream.pipe(takeUntil(this.#closed$));
    // share(): one upstream while anyone listens; reset (teardown) when the count drops to 0,
    // and after an error or completion, so `retry()` downstream reconnects.
    this.frames$ = temperature === 'hot' ? guarded.pipe(share()) : guarded;
  }

  get closed(): boolean {
    return this.#closed;
  }

  reject(reason: string): void {
    this.rejected[reason] = (this.rejected[reason] ?? 0) + 1;
  }

  stats(): FrameSourceStats {
    return { framesEmitted: this.framesEmitted, rejected: { ...this.rejected } };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closed$.next();
    this.#closed$.complete();
  }
}

// ---------------------------------------------------------------------------------------------
// Simulator

export interface SimulatorSourceOptions<F extends ImageFrame = ImageFrame> {
  /**
   * Renders the B-mode image at a probe pose (base ← probe, mm). The source sets `index` (its own
   * counter) and `tMs` (the pose's time) on what it returns; other fields pass through (sim/
   * ultrasound.ts's `UltrasoundSimulator.render` returns TrackedFrames with the true transform).
   * It may return a promise (a renderer in a worker thread, keeping the ~5 ms render off the
   * event loop the robot's control loop runs on): at most one render is in flight, a tick that
   * finds one still running emits nothing (`rejected['render-busy']`: a scanner does not queue
   * frames), frames come out in tick order, and a rejected promise errors the stream.
   */
  readonly render: (pose: Pose, tMs: number) => F | PromiseLike<F>;
  /** The robot's poses, e.g. `driver.state$`. The frames end when it completes. */
  readonly poses$: Observable<TimedPose>;
  /** Default 30. */
  readonly fps?: number;
  /** Default asyncScheduler. */
  readonly scheduler?: SchedulerLike;
}

/**
 * HOT. Every 1/fps it renders a frame at the latest pose and stamps it with that pose's time:
 * the image is exactly where the pose says, on the robot clock. A tick with no pose newer than
 * the last frame's emits nothing (`rejected['no-new-pose']`): a silent robot gives no frames,
 * never frames stamped with a stale pose.
 */
export function simulatorFrameSource<F extends ImageFrame = ImageFrame>(opts: SimulatorSourceOptions<F>): FrameSource<F> {
  const fps = opts.fps ?? 30;
  if (!(fps > 0 && fps <= 1000)) throw new RangeError(`fps must be in (0, 1000], got ${fps}`);
  const scheduler = opts.scheduler ?? asyncScheduler;
  let index = 0;
  const upstream = new Observable<F>((sub) => {
    let latest: TimedPose | undefined;
    let lastTMs = -Infinity;
    const poseSub = opts.poses$.subscribe({
      next: (p) => {
        latest = p;
      },
      error: (err: unknown) => sub.error(err),
      complete: () => sub.complete(),
    });
    let busy = false;
    let torn = false;
    const emit = (img: F, tMs: number): void => {
      src.framesEmitted++;
      sub.next({ ...img, index: index++, tMs });
    };
    const tickSub = interval(1000 / fps, scheduler).subscribe(() => {
      if (busy) {
        src.reject('render-busy');
        return;
      }
      const p = latest;
      if (p === undefined || !(p.tMs > lastTMs)) {
        src.reject('no-new-pose');
        return;
      }
      lastTMs = p.tMs;
      let img: F | PromiseLike<F>;
      try {
        img = opts.render(p.tcpPose, p.tMs);
      } catch (err) {
        sub.error(err);
        return;
      }
      if (!isPromiseLike(img)) {
        emit(img, p.tMs);
        return;
      }
      busy = true;
      img.then(
        (f) => {
          busy = false;
          if (!torn) emit(f, p.tMs);
        },
        (err: unknown) => {
          busy = false;
          if (!torn) sub.error(err);
        },
      );
    });
    return () => {
      torn = true;
      tickSub.unsubscribe();
      poseSub.unsubscribe();
    };
  });
  const src = new SourceBase<F>('sim', 'hot', upstream);
  return src;
}

function isPromiseLike<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

// ---------------------------------------------------------------------------------------------
// Playback

export interface PlaybackSourceOptions<F extends ImageFrame> {
  /** The frames in order, or a function giving a fresh iterable per subscription (a lazy reader). */
  readonly frames: readonly F[] | (() => Iterable<F>);
  /**
   * 'recorded': frame i comes (tMs_i − tMs_0) / rate after subscription (no drift: each delay
   * is computed from the start); 'asap': one frame per scheduler task, as fast as the consumer
   * goes while still yielding to the event loop between frames. A number is a rate factor
   * (2 = twice the recorded speed). Default 'recorded'.
   */
  readonly speed?: 'recorded' | 'asap' | number;
  /** Default asyncScheduler. */
  readonly scheduler?: SchedulerLike;
}

/**
 * COLD: each subscriber gets the whole recording from its first frame. Frames are passed on
 * unchanged (recorded TrackedFrames keep their transforms). A frame whose time goes backwards, or
 * is not finite, comes right after the previous one.
 */
export function playbackFrameSource<F extends ImageFrame>(opts: PlaybackSourceOptions<F>): FrameSource<F> {
  const speed = opts.speed ?? 'recorded';
  const rate = speed === 'recorded' ? 1 : speed === 'asap' ? Infinity : speed;
  if (!(rate > 0)) throw new RangeError(`speed must be 'recorded', 'asap' or a rate > 0, got ${String(speed)}`);
  const scheduler = opts.scheduler ?? asyncScheduler;
  const framesOpt = opts.frames;
  const iterate = (): Iterable<F> => (typeof framesOpt === 'function' ? framesOpt() : framesOpt);
  const upstream = new Observable<F>((sub) => {
    const it = iterate()[Symbol.iterator]();
    let first: { tMs: number; atMs: number } | undefined;
    const step = (): void => {
      let r: IteratorResult<F>;
      try {
        r = it.next();
      } catch (err) {
        sub.error(err);
        return;
      }
      if (r.done === true) {
        sub.complete();
        return;
      }
      const f = r.value;
      let delayMs = 0;
      if (first === undefined) first = { tMs: f.tMs, atMs: scheduler.now() };
      else if (rate !== Infinity && Number.isFinite(f.tMs)) delayMs = Math.max(0, first.atMs + (f.tMs - first.tMs) / rate - scheduler.now());
      // One pending task at a time (not sub.add per frame, which would keep every finished one).
      pending = scheduler.schedule(() => {
        src.framesEmitted++;
        sub.next(f);
        step();
      }, delayMs);
    };
    let pending: Subscription | undefined;
    step();
    return () => {
      pending?.unsubscribe();
      it.return?.();
    };
  });
  const src = new SourceBase<F>('playback', 'cold', upstream);
  return src;
}

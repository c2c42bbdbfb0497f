// Pose/frame synchronisation: each ultrasound frame gets the probe pose at its acquisition time.
//
// - Poses come from the robot (`RobotState`: `tcpPose` at `tMs`, base ← probe, mm) and are kept
//   in a bounded history (by age and by count).
// - A frame is placed at `frame.tMs + temporalCalibrationOffsetMs` (the offset says how much
//   later, on the robot clock, the image really was taken than its stamp says; PLUS calls the
//   same idea a device's local time offset). The pose there is interpolated between the two
//   poses around it: position linearly, rotation by quaternion slerp.
// - A frame with no valid pose is DROPPED and counted by reason, never extrapolated:
//     no-pose   no pose received yet
//     too-old   before the oldest pose still in the history
//     future    past the newest pose by more than `futureToleranceMs`, or still waiting when
//               the streams ended
//     gap       the two poses around it are more than `maxGapMs` apart (lost state reports)
//     invalid   a non-finite frame time
//     overflow  more than `maxWaitingFrames` frames were waiting for a pose (oldest dropped)
//   A frame a little past the newest pose (within `futureToleranceMs`) WAITS for the next pose
//   rather than being guessed: images usually travel slower than poses, so this is rare and short.
// - Output: a TrackedFrame with imageToReference = T_reference_probe(t) · imageToProbe, where
//   Reference is the robot base frame.
import { Observable, type OperatorFunction } from 'rxjs';
import { isFiniteQuat, isFiniteVec3, lerp3, quatNormalize } from '../protocols/geometry.ts';
import { poseToMat4 } from '../protocols/imaging-pose.ts';
import { mat4Mul, type ImageFrame, type Mat4, type TrackedFrame } from '../protocols/imaging.ts';
import type { Pose, Quat } from '../protocols/robot.ts';

/** A pose on the robot clock. `RobotState` is one (its `tMs` and `tcpPose`). */
export interface TimedPose {
  readonly tMs: number;
  readonly tcpPose: Pose;
}

export type SyncDropReason = 'no-pose' | 'too-old' | 'future' | 'gap' | 'invalid' | 'overflow';
export const SYNC_DROP_REASONS: readonly SyncDropReason[] = ['no-pose', 'too-old', 'future', 'gap', 'invalid', 'overflow'];

export interface FrameSyncOptions {
  /** Image (px) → probe (mm) calibration, row-major. */
  readonly imageToProbe: Mat4;
  /** The pose is looked up at frame.tMs + this. Default 0. */
  readonly temporalCalibrationOffsetMs?: number;
  /** Poses older than the newest minus this are forgotten. Default 2000 ms. */
  readonly historyMs?: number;
  /** At most this many poses are kept. Default 1024. */
  readonly maxPoses?: number;
  /** Interpolate only between poses at most this far apart. Default 50 ms. */
  readonly maxGapMs?: number;
  /** A frame up to this far past the newest pose waits for the next one; further is dropped. Default 50 ms. */
  readonly futureToleranceMs?: number;
  /** Frames waiting for a pose, at most. Default 8. */
  readonly maxWaitingFrames?: number;
}

export interface SyncStats {
  readonly tracked: number;
  readonly dropped: Readonly<Record<SyncDropReason, number>>;
  /** Poses ignored: non-finite, or not newer than the newest one. */
  readonly posesRejected: number;
}

const DEFAULTS = { offsetMs: 0, historyMs: 2000, maxPoses: 1024, maxGapMs: 50, futureToleranceMs: 50, maxWaitingFrames: 8 } as const;

/**
 * Slerp, shortest path, exact down to tiny angles. protocols/geometry.ts's `slerp` switches to a
 * normalised lerp below ~3.6° (a float32-era threshold); poses 8 ms apart are always below it, and
 * its error (about 1e-6 mm at the image corners for a fast wrist) would make "exact" untrue.
 * In float64, sin(tθ)/sin(θ) stays accurate down to θ ≈ 1e-8 rad.
 */
function slerpExact(a: Quat, b: Quat, t: number): Quat {
  let d = a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
  const s = d < 0 ? -1 : 1;
  d = Math.min(1, Math.abs(d));
  const theta = Math.acos(d);
  if (theta < 1e-8) return quatNormalize({ x: a.x + (s * b.x - a.x) * t, y: a.y + (s * b.y - a.y) * t, z: a.z + (s * b.z - a.z) * t, w: a.w + (s * b.w - a.w) * t });
  const sinTheta = Math.sin(theta);
  const wa = Math.sin((1 - t) * theta) / sinTheta;
  const wb = (s * Math.sin(t * theta)) / sinTheta;
  return quatNormalize({ x: wa * a.x + wb * b.x, y: wa * a.y + wb * b.y, z: wa * a.z + wb * b.z, w: wa * a.w + wb * b.w });
}

export type PoseLookup =
  | { readonly kind: 'pose'; readonly pose: Pose }
  | { readonly kind: 'wait' }
  | { readonly kind: 'drop'; readonly reason: SyncDropReason };

/** A bounded, time-ordered pose history with interpolated lookup. No RxJS, no clock. */
export class PoseHistory {
  readonly #t: number[] = [];
  readonly #p: Pose[] = [];
  readonly #historyMs: number;
  readonly #maxPoses: number;
  readonly #maxGapMs: number;
  readonly #futureToleranceMs: number;

  constructor(opts: Pick<FrameSyncOptions, 'historyMs' | 'maxPoses' | 'maxGapMs' | 'futureToleranceMs'> = {}) {
    this.#historyMs = opts.historyMs ?? DEFAULTS.historyMs;
    this.#maxPoses = Math.max(2, opts.maxPoses ?? DEFAULTS.maxPoses);
    this.#maxGapMs = opts.maxGapMs ?? DEFAULTS.maxGapMs;
    this.#futureToleranceMs = opts.futureToleranceMs ?? DEFAULTS.futureToleranceMs;
  }

  get size(): number {
    return this.#t.length;
  }
  get newestMs(): number {
    return this.#t.length === 0 ? -Infinity : this.#t[this.#t.length - 1]!;
  }
  get oldestMs(): number {
    return this.#t.length === 0 ? Infinity : this.#t[0]!;
  }

  /** Adds a pose; false (and nothing kept) when it is non-finite or not newer than the newest. */
  add(tMs: number, pose: Pose): boolean {
    if (!Number.isFinite(tMs) || !isFiniteVec3(pose.positionMm) || !isFiniteQuat(pose.orientation)) return false;
    if (tMs <= this.newestMs) return false;
    this.#t.push(tMs);
    this.#p.push(pose);
    // Trim by age and count; splice is cheap at these sizes (a few hundred poses).
    let cut = 0;
    while (cut < this.#t.length - 1 && (this.#t[cut]! < tMs - this.#historyMs || this.#t.length - cut > this.#maxPoses)) cut++;
    if (cut > 0) {
      this.#t.splice(0, cut);
      this.#p.splice(0, cut);
    }
    return true;
  }

  /** The pose at `tMs`: interpolated, or why there is none (yet). */
  lookup(tMs: number): PoseLookup {
    if (!Number.isFinite(tMs)) return { kind: 'drop', reason: 'invalid' };
    const n = this.#t.length;
    if (n === 0) return { kind: 'drop', reason: 'no-pose' };
    const newest = this.#t[n - 1]!;
    if (tMs > newest) return tMs - newest > this.#futureToleranceMs ? { kind: 'drop', reason: 'future' } : { kind: 'wait' };
    if (tMs < this.#t[0]!) return { kind: 'drop', reason: 'too-old' };
    // Largest i with t[i] <= tMs.
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#t[mid]! <= tMs) lo = mid;
      else hi = mid - 1;
    }
    const t0 = this.#t[lo]!;
    if (t0 === tMs) return { kind: 'pose', pose: this.#p[lo]! };
    const t1 = this.#t[lo + 1]!;
    if (t1 - t0 > this.#maxGapMs) return { kind: 'drop', reason: 'gap' };
    const a = this.#p[lo]!;
    const b = this.#p[lo + 1]!;
    const u = (tMs - t0) / (t1 - t0);
    return { kind: 'pose', pose: { positionMm: lerp3(a.positionMm, b.positionMm, u), orientation: slerpExact(quatNormalize(a.orientation), quatNormalize(b.orientation), u) } };
  }
}

/**
 * One synchronisation run: a pose history and the frames waiting for a pose. Frames leave in the
 * order they came. `emit` receives tracked frames, `drop` each dropped frame with its reason.
 */
export class FramePoseMatcher {
  readonly #history: PoseHistory;
  readonly #waiting: ImageFrame[] = [];
  readonly #imageToProbe: Mat4;
  readonly #offsetMs: number;
  readonly #maxWaiting: number;
  #posesEnded = false;

  constructor(
    opts: FrameSyncOptions,
    private readonly emit: (f: TrackedFrame) => void,
    private readonly drop: (reason: SyncDropReason, f: ImageFrame) => void,
    private readonly poseRejected: () => void = () => undefined,
  ) {
    if (opts.imageToProbe.length !== 16 || !opts.imageToProbe.every(Number.isFinite)) {
      throw new RangeError('imageToProbe must be 16 finite numbers (row-major 4×4)');
    }
    this.#history = new PoseHistory(opts);
    this.#imageToProbe = opts.imageToProbe;
    this.#offsetMs = opts.temporalCalibrationOffsetMs ?? DEFAULTS.offsetMs;
    this.#maxWaiting = Math.max(1, opts.maxWaitingFrames ?? DEFAULTS.maxWaitingFrames);
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  addPose(p: TimedPose): void {
    if (!this.#history.add(p.tMs, p.tcpPose)) {
      this.poseRejected();
      return;
    }
    this.#release();
  }

  addFrame(f: ImageFrame): void {
    if (this.#waiting.length === 0) {
      if (this.#resolve(f)) return;
    } else {
      // Behind waiting frames, to keep the order; but a frame that can never resolve goes now.
      const r = this.#history.lookup(f.tMs + this.#offsetMs);
      if (r.kind === 'drop' && (r.reason === 'future' || r.reason === 'invalid')) {
        this.drop(r.reason, f);
        return;
      }
    }
    this.#waiting.push(f);
    if (this.#waiting.length > this.#maxWaiting) this.drop('overflow', this.#waiting.shift()!);
  }

  /** The pose stream ended: frames waiting now or later will never get a pose. */
  posesEnded(): void {
    this.#posesEnded = true;
    this.finish();
  }

  /** The frames ended: frames still waiting are dropped. */
  finish(): void {
    for (const f of this.#waiting.splice(0)) this.drop('future', f);
  }

  /** Emits or drops `f` and returns true, or returns false if it must wait. */
  #resolve(f: ImageFrame): boolean {
    const r = this.#history.lookup(f.tMs + this.#offsetMs);
    switch (r.kind) {
      case 'wait':
        if (!this.#posesEnded) return false;
        this.drop('future', f);
        return true;
      case 'drop':
        this.drop(r.reason, f);
        return true;
      case 'pose':
        this.emit({ ...f, imageToReference: mat4Mul(poseToMat4(r.pose), this.#imageToProbe) });
        return true;
    }
  }

  #release(): void {
    while (this.#waiting.length > 0 && this.#resolve(this.#waiting[0]!)) this.#waiting.shift();
  }
}

/**
 * Frames → tracked frames. `track(poses$)` is a COLD operator: each subscription subscribes to
 * `poses$` (first, so a replaying `driver.state$` gives its latest state before any frame) and
 * to the frames, with a pose history of its own. The counters are the instance's, summed over
 * its subscriptions.
 */
export class FrameSync {
  readonly #opts: FrameSyncOptions;
  #tracked = 0;
  #posesRejected = 0;
  readonly #dropped: Record<SyncDropReason, number> = { 'no-pose': 0, 'too-old': 0, future: 0, gap: 0, invalid: 0, overflow: 0 };
  readonly #onDrop: ((reason: SyncDropReason, f: ImageFrame) => void) | undefined;

  constructor(opts: FrameSyncOptions & { readonly onDrop?: (reason: SyncDropReason, f: ImageFrame) => void }) {
    // Validate now, not at the first subscription.
    new FramePoseMatcher(opts, () => undefined, () => undefined);
    this.#opts = opts;
    this.#onDrop = opts.onDrop;
  }

  stats(): SyncStats {
    return { tracked: this.#tracked, dropped: { ...this.#dropped }, posesRejected: this.#posesRejected };
  }

  track(poses$: Observable<TimedPose>): OperatorFunction<ImageFrame, TrackedFrame> {
    return (frames$) =>
      new Observable<TrackedFrame>((sub) => {
        const m = new FramePoseMatcher(
          this.#opts,
          (f) => {
            this.#tracked++;
            sub.next(f);
          },
          (reason, f) => {
            this.#dropped[reason]++;
            this.#onDrop?.(reason, f);
          },
          () => {
            this.#posesRejected++;
          },
        );
        const poseSub = poses$.subscribe({
          next: (p) => m.addPose(p),
          error: (err: unknown) => sub.error(err),
          // No more poses: frames keep coming and drop as `future`; nothing is guessed.
          complete: () => m.posesEnded(),
        });
        const frameSub = frames$.subscribe({
          next: (f) => m.addFrame(f),
          error: (err: unknown) => sub.error(err),
          complete: () => {
            m.finish();
            sub.complete();
          },
        });
        return () => {
          frameSub.unsubscribe();
          poseSub.unsubscribe();
        };
      });
  }
}

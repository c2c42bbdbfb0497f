// Scan trajectories with force control: a linear sweep and a fan (tilt) sweep.
//
// The control law is split from the I/O so it can be tested alone:
// - admittanceVelocityMmPerS(): the probe-axis velocity that drives the contact force to its
//   target (v = gain × (targetForceN − measuredForceN), clamped), used while descending;
// - ForceTracker: the same law plus an integral term, used in contact (sweep and pause), so that
//   a skin that rises or falls under a moving probe leaves no steady force error;
// - linearSweepGeometry() / linearSweepProgress() / linearSweepVelocity(): the linear path;
// - tiltAngleAboutRad() / fanAngularVelocityRadPerS(): the fan path.
// The SweepRunner reads the robot's state$ and issues jog commands through the safety gate at a
// fixed control rate (50 Hz by default, well inside JOG_WATCHDOG_MS, so a host that dies leaves
// the robot stopping by itself within the watchdog).
//
// Phases (an explicit state machine, one phase per control tick):
//   approach (Cartesian target above the start point) → descend (jog along the probe axis until
//   the contact force is reached) → sweep ⇄ paused (hold position, keep the contact force)
//   → lift-off (Cartesian target back along the probe axis) → done (controlled stop).
// Whatever ends a run (completion, abort signal, refusal, error), the runner sends a stop.
import type { Observable, Subscription } from 'rxjs';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import type { SweepSummary } from '../protocols/events.ts';
import {
  add,
  cross,
  dot,
  norm,
  normalize,
  quatAngle,
  quatConj,
  quatFromAxisAngle,
  quatMul,
  quatNormalize,
  scale,
  sub,
  toolAxis,
  ZERO3,
} from '../protocols/geometry.ts';
import { JOG_WATCHDOG_MS, type Pose, type Quat, type RobotCommand, type RobotState, type Vec3 } from '../protocols/robot.ts';
import { HOME_POSE } from '../protocols/scene.ts';
import type { CommandSource } from './safety.ts';

// ---------------------------------------------------------------------------------------------
// Plans

export interface ForceControl {
  /** Contact force to hold along the probe axis (positive pressing). */
  readonly targetForceN: number;
  /** Band around the target that counts as "in contact" / "on target". */
  readonly toleranceN: number;
  /** Admittance gain: probe-axis velocity per newton of force error. */
  readonly gainMmPerSPerN: number;
  /** Clamp of the probe-axis velocity (also the descent speed before contact). */
  readonly maxAxialSpeedMmPerS: number;
  /**
   * Integral gain in contact: probe-axis velocity per newton-second of accumulated force error.
   * It cancels the steady error a proportional loop keeps on a sloped skin (slope × speed / gain,
   * 0.7 N at 15 mm/s on the default torso). 0 turns it off.
   */
  readonly integralGainMmPerSPerNs: number;
  /** Clamp of the integral term's velocity (anti-windup: a lost contact cannot build up a push). */
  readonly maxIntegralSpeedMmPerS: number;
}

export const DEFAULT_FORCE_CONTROL: ForceControl = {
  targetForceN: 5,
  toleranceN: 1,
  // 0.8 N/mm tissue (PATIENT_TORSO) × 2.5 mm/s/N × 20 ms = 0.04 of the error per tick: a time
  // constant of ~0.5 s, stable with a tick of delay even on 10× stiffer tissue.
  gainMmPerSPerN: 2.5,
  maxAxialSpeedMmPerS: 12,
  // With tissue stiffness k the loop is s² + k·kp·s + k·ki: critically damped at 0.8 N/mm
  // (ωn = 1 rad/s), overdamped on stiffer tissue.
  integralGainMmPerSPerNs: 1.25,
  maxIntegralSpeedMmPerS: 6,
};

/** A straight sweep over the skin. */
export interface LinearSweepPlan {
  readonly kind: 'linear';
  /** Start point on the skin, base frame. */
  readonly startMm: Vec3;
  /** Sweep direction, base frame; its component along the probe axis is ignored. */
  readonly direction: Vec3;
  /** Length measured along the direction (projected perpendicular to the probe axis). */
  readonly lengthMm: number;
  readonly speedMmPerS: number;
  /** Probe orientation before tilt. Default: HOME_POSE's (probe pointing straight down). */
  readonly orientation?: Quat;
  /**
   * Probe tilt about the lateral axis (probe axis × sweep direction): positive tilts the probe face
   * toward the sweep direction. Default 0.
   */
  readonly tiltRad?: number;
  readonly force?: Partial<ForceControl>;
}

/** A fan sweep: the probe tilts about its contact point. */
export interface FanSweepPlan {
  readonly kind: 'fan';
  /** Pivot: the probe contact point on the skin, base frame. */
  readonly contactMm: Vec3;
  /** Tilt axis, base frame; its component along the probe axis is ignored. */
  readonly tiltAxis: Vec3;
  readonly tiltStartRad: number;
  readonly tiltEndRad: number;
  readonly angularSpeedRadPerS: number;
  /** Probe orientation at zero tilt. Default: HOME_POSE's (probe pointing straight down). */
  readonly orientation?: Quat;
  readonly force?: Partial<ForceControl>;
}

export type SweepPlan = LinearSweepPlan | FanSweepPlan;

/** What the acquisition records about a plan. */
export function sweepSummary(plan: SweepPlan): SweepSummary {
  const force = { ...DEFAULT_FORCE_CONTROL, ...plan.force };
  switch (plan.kind) {
    case 'linear':
      return { kind: 'linear', lengthMm: plan.lengthMm, tiltRangeRad: 0, speedMmPerS: plan.speedMmPerS, targetForceN: force.targetForceN };
    case 'fan':
      return {
        kind: 'fan',
        lengthMm: 0,
        tiltRangeRad: Math.abs(plan.tiltEndRad - plan.tiltStartRad),
        speedMmPerS: 0,
        targetForceN: force.targetForceN,
      };
  }
}

// ---------------------------------------------------------------------------------------------
// Pure control law

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

export function clampNorm(v: Vec3, maxNorm: number): Vec3 {
  const n = norm(v);
  return n <= maxNorm || n === 0 ? v : scale(v, maxNorm / n);
}

/**
 * The admittance step: velocity along the probe axis, positive into the patient.
 * Pressing too lightly ⇒ advance; too hard ⇒ back off.
 */
export function admittanceVelocityMmPerS(measuredForceN: number, fc: ForceControl): number {
  return clamp(fc.gainMmPerSPerN * (fc.targetForceN - measuredForceN), -fc.maxAxialSpeedMmPerS, fc.maxAxialSpeedMmPerS);
}

/**
 * The contact-force loop in contact: proportional + integral, on the robot's own clock (state
 * timestamps), so a late control tick integrates the time that really passed, capped at
 * `maxDtMs` (a stalled host does not dump a burst into the integral).
 */
export class ForceTracker {
  #integralMmPerS = 0;
  #lastTMs: number | null = null;
  constructor(
    private readonly fc: ForceControl,
    private readonly maxDtMs: number,
  ) {}

  /** Probe-axis velocity, positive into the patient, for a force measured at robot time tMs. */
  velocityMmPerS(measuredForceN: number, tMs: number): number {
    const errN = this.fc.targetForceN - measuredForceN;
    const dtS = this.#lastTMs === null ? 0 : clamp(tMs - this.#lastTMs, 0, this.maxDtMs) / 1000;
    this.#lastTMs = tMs;
    const lim = this.fc.maxIntegralSpeedMmPerS;
    this.#integralMmPerS = clamp(this.#integralMmPerS + this.fc.integralGainMmPerSPerNs * errN * dtS, -lim, lim);
    return clamp(this.fc.gainMmPerSPerN * errN + this.#integralMmPerS, -this.fc.maxAxialSpeedMmPerS, this.fc.maxAxialSpeedMmPerS);
  }
}

/** The sweep's frame, fixed when contact is made. */
export interface LinearSweepGeometry {
  readonly originMm: Vec3;
  /** Unit, perpendicular to the probe axis. */
  readonly alongUnit: Vec3;
  /** Unit, perpendicular to both the probe axis and alongUnit. */
  readonly lateralUnit: Vec3;
  readonly probeAxisUnit: Vec3;
  readonly lengthMm: number;
}

export function linearSweepGeometry(originMm: Vec3, direction: Vec3, probeAxis: Vec3, lengthMm: number): LinearSweepGeometry {
  const axis = normalize(probeAxis);
  const along = normalize(sub(direction, scale(axis, dot(direction, axis))));
  if (norm(along) === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'sweep direction is parallel to the probe axis');
  return { originMm, alongUnit: along, lateralUnit: normalize(cross(axis, along)), probeAxisUnit: axis, lengthMm };
}

/** The setpoint at `sMm` along the path (the path generator, sampled). */
export function linearSweepPointMm(g: LinearSweepGeometry, sMm: number): Vec3 {
  return add(g.originMm, scale(g.alongUnit, clamp(sMm, 0, g.lengthMm)));
}

export interface LinearSweepProgress {
  readonly alongMm: number;
  readonly crossTrackMm: number;
  readonly remainingMm: number;
  /** 0..1 */
  readonly fraction: number;
}

export function linearSweepProgress(g: LinearSweepGeometry, positionMm: Vec3): LinearSweepProgress {
  const d = sub(positionMm, g.originMm);
  const alongMm = dot(d, g.alongUnit);
  return {
    alongMm,
    crossTrackMm: dot(d, g.lateralUnit),
    remainingMm: g.lengthMm - alongMm,
    fraction: clamp(alongMm / g.lengthMm, 0, 1),
  };
}

export interface PathTuning {
  /**
   * Constant deceleration into the end of a linear sweep (speed ≤ √(2 · decel · remaining)): a
   * smooth arrival instead of an overshoot, without a long exponential crawl.
   */
  readonly endDecelMmPerS2: number;
  /** The same for a fan sweep. */
  readonly endDecelRadPerS2: number;
  /** Floor of the tapered speed, so that the sweep always finishes. */
  readonly minSpeedMmPerS: number;
  /** Cross-track (and pivot) position correction gain. */
  readonly positionGainPerS: number;
  /** The sweep counts as done within this distance of its end. */
  readonly endToleranceMm: number;
}

export const DEFAULT_PATH_TUNING: PathTuning = {
  endDecelMmPerS2: 40,
  endDecelRadPerS2: 0.8,
  minSpeedMmPerS: 1,
  positionGainPerS: 2,
  endToleranceMm: 0.5,
};

/**
 * The in-plane velocity of a linear sweep (no probe-axis component: the admittance owns that
 * axis): feed-forward along the path, tapered at the end, plus a cross-track correction.
 * Zero once the end is reached.
 */
export function linearSweepVelocityMmPerS(g: LinearSweepGeometry, positionMm: Vec3, speedMmPerS: number, t: PathTuning): Vec3 {
  const p = linearSweepProgress(g, positionMm);
  const alongSpeed =
    p.remainingMm <= t.endToleranceMm
      ? 0
      : Math.min(speedMmPerS, Math.max(t.minSpeedMmPerS, Math.sqrt(2 * t.endDecelMmPerS2 * p.remainingMm)));
  return add(scale(g.alongUnit, alongSpeed), scale(g.lateralUnit, -t.positionGainPerS * p.crossTrackMm));
}

/** Rotation vector (axis × angle, radians) of a unit quaternion, shortest way round. */
export function rotationVector(q: Quat): Vec3 {
  const sgn = q.w < 0 ? -1 : 1;
  const v = { x: q.x * sgn, y: q.y * sgn, z: q.z * sgn };
  const s = norm(v);
  if (s < 1e-12) return scale(v, 2);
  const angle = 2 * Math.atan2(s, q.w * sgn);
  return scale(v, angle / s);
}

/** Signed rotation angle from orientation `from` to `to` about `axisUnit` (base frame), (−π, π]. */
export function tiltAngleAboutRad(from: Quat, to: Quat, axisUnit: Vec3): number {
  const r = quatMul(to, quatConj(from)); // base-frame rotation taking `from` to `to`
  // Swing–twist: the twist about the axis has the quaternion (axis·r.xyz, r.w).
  let a = 2 * Math.atan2(dot({ x: r.x, y: r.y, z: r.z }, axisUnit), r.w);
  if (a > Math.PI) a -= 2 * Math.PI;
  if (a <= -Math.PI) a += 2 * Math.PI;
  return a;
}

/**
 * The fan's angular speed about its tilt axis (signed like the range), decelerating into the end, zero
 * once `progressRad` reaches `rangeRad`.
 */
export function fanAngularVelocityRadPerS(
  progressRad: number,
  rangeRad: number,
  angularSpeedRadPerS: number,
  endDecelRadPerS2: number,
  endToleranceRad: number,
): number {
  const sign = Math.sign(rangeRad);
  const remainingRad = Math.abs(rangeRad) - progressRad * sign;
  if (remainingRad <= endToleranceRad) return 0;
  return sign * Math.min(angularSpeedRadPerS, Math.max(angularSpeedRadPerS * 0.05, Math.sqrt(2 * endDecelRadPerS2 * remainingRad)));
}

// ---------------------------------------------------------------------------------------------
// Runner

/** The slice of the SafetySupervisor the runner needs (an interface, so tests can fake it). */
export interface MotionGate {
  command(cmd: RobotCommand, source: CommandSource, timeoutMs?: number): Promise<void>;
  stop(source: CommandSource, reason: string): Promise<void>;
}

export type SweepPhase = 'approach' | 'descend' | 'sweep' | 'paused' | 'lift-off' | 'done';

export interface SweepProgress {
  readonly phase: SweepPhase;
  /** Fraction of the sweep done, 0..1 (0 before contact, 1 from lift-off on). */
  readonly fraction: number;
  readonly forceN: number | null;
  /** Whether the force is within targetForceN ± toleranceN. */
  readonly forceInBand: boolean;
  /** Runner clock, ms. */
  readonly tMs: number;
}

export interface SweepRunHooks {
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: SweepProgress) => void;
  readonly onPhase?: (phase: SweepPhase, previous: SweepPhase | null) => void;
}

export interface SweepRunnerOptions {
  /** Control period. 20 ms = 50 Hz: the robot's 250 ms jog watchdog survives a dozen late ticks. */
  readonly controlPeriodMs: number;
  /** Hover height above the start point, along the probe axis. */
  readonly approachClearanceMm: number;
  readonly approachSpeedMmPerS: number;
  /** Give up the descent (no skin found) after this travel below the hover point. */
  readonly maxDescentMm: number;
  /** Consecutive ticks in the force band that count as contact. */
  readonly contactSettleTicks: number;
  readonly liftOffMm: number;
  readonly liftSpeedMmPerS: number;
  /**
   * Clamp of the jog's linear speed (the whole vector: along-path + axial + corrections), and the
   * highest plan speed accepted. At most the supervisor's maxSpeedMmPerS (the acquisition sets it
   * from the supervisor's config).
   */
  readonly maxLinearSpeedMmPerS: number;
  /** Same for the angular speed. */
  readonly maxAngularSpeedRadPerS: number;
  /** Orientation-hold gain (rad/s per rad of error). */
  readonly orientationGainPerS: number;
  readonly path: PathTuning;
  /** Fan end tolerance. */
  readonly fanEndToleranceRad: number;
  /** A Cartesian move counts as arrived within these tolerances. */
  readonly arrivalToleranceMm: number;
  readonly arrivalToleranceRad: number;
  /** Extra time granted to a Cartesian move beyond distance / speed. */
  readonly moveTimeoutMarginMs: number;
  /** Acknowledgement timeout of one jog: under the robot's jog watchdog. */
  readonly jogTimeoutMs: number;
  /** A robot state older than this stops the sweep (the force is no longer observed). */
  readonly stateTimeoutMs: number;
  /** Jog acknowledgements that may time out in a row before the sweep gives up. */
  readonly maxConsecutiveTimeouts: number;
  /** Clock in ms (default: monotonic). */
  readonly now: () => number;
}

export const DEFAULT_SWEEP_RUNNER_OPTIONS: SweepRunnerOptions = {
  controlPeriodMs: 20,
  approachClearanceMm: 30,
  approachSpeedMmPerS: 30,
  maxDescentMm: 60,
  contactSettleTicks: 3,
  liftOffMm: 30,
  liftSpeedMmPerS: 30,
  maxLinearSpeedMmPerS: 45,
  maxAngularSpeedRadPerS: 0.45,
  orientationGainPerS: 1,
  path: DEFAULT_PATH_TUNING,
  fanEndToleranceRad: 0.005,
  arrivalToleranceMm: 1,
  arrivalToleranceRad: 0.02,
  moveTimeoutMarginMs: 3000,
  jogTimeoutMs: JOG_WATCHDOG_MS - 50,
  stateTimeoutMs: 200,
  maxConsecutiveTimeouts: 3,
  now: () => performance.timeOrigin + performance.now(),
};

/** Defaults filled in (the path tuning merges one level deep). */
export function resolveSweepRunnerOptions(options?: Partial<SweepRunnerOptions>): SweepRunnerOptions {
  return { ...DEFAULT_SWEEP_RUNNER_OPTIONS, ...options, path: { ...DEFAULT_PATH_TUNING, ...options?.path } };
}

/** A validated plan with everything derived that the runner needs. */
type ResolvedPlan =
  | (ResolvedCommon & { readonly kind: 'linear'; readonly direction: Vec3; readonly lengthMm: number; readonly speedMmPerS: number })
  | (ResolvedCommon & {
      readonly kind: 'fan';
      readonly tiltAxisUnit: Vec3;
      readonly rangeRad: number;
      readonly angularSpeedRadPerS: number;
    });

interface ResolvedCommon {
  /** Probe orientation for approach and contact (tilt applied). */
  readonly orientation: Quat;
  /** Probe axis of that orientation (into the patient). */
  readonly axisUnit: Vec3;
  readonly contactMm: Vec3;
  readonly hoverMm: Vec3;
  readonly force: ForceControl;
}

const sane = (v: number, maxAbs = 1e6): boolean => Number.isFinite(v) && Math.abs(v) <= maxAbs;
const saneVec = (v: Vec3 | undefined): v is Vec3 =>
  typeof v === 'object' && v !== null && sane(v.x) && sane(v.y) && sane(v.z);

function badPlan(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', `sweep plan: ${message}`);
}

function resolveQuat(q: Quat | undefined): Quat {
  if (q === undefined) return HOME_POSE.orientation;
  if (!sane(q.x) || !sane(q.y) || !sane(q.z) || !sane(q.w)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'sweep plan: orientation is not finite');
  const n = Math.hypot(q.x, q.y, q.z, q.w);
  if (Math.abs(n - 1) > 0.01) throw badPlan('orientation is not a unit quaternion');
  return quatNormalize(q);
}

function resolveForce(f: Partial<ForceControl> | undefined): ForceControl {
  const fc = { ...DEFAULT_FORCE_CONTROL, ...f };
  for (const [k, v] of Object.entries(fc)) {
    if (k === 'integralGainMmPerSPerNs' ? typeof v !== 'number' || !sane(v) || v < 0 : typeof v !== 'number' || !sane(v) || v <= 0) {
      throw badPlan(`force.${k} must be a ${k === 'integralGainMmPerSPerNs' ? 'non-negative' : 'positive'} number`);
    }
  }
  if (fc.toleranceN >= fc.targetForceN) throw badPlan('force.toleranceN must be below force.targetForceN');
  return fc;
}

/** Validates a plan (NaN, ranges, geometry) and derives approach and contact poses. */
export function resolveSweepPlan(plan: SweepPlan, o: SweepRunnerOptions = DEFAULT_SWEEP_RUNNER_OPTIONS): ResolvedPlan {
  const force = resolveForce(plan.force);
  const base = resolveQuat(plan.orientation);
  const baseAxis = toolAxis({ positionMm: ZERO3, orientation: base });
  switch (plan.kind) {
    case 'linear': {
      if (!saneVec(plan.startMm) || !saneVec(plan.direction)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'sweep plan: startMm/direction not finite');
      if (!sane(plan.lengthMm) || plan.lengthMm <= 0) throw badPlan('lengthMm must be positive');
      if (!sane(plan.speedMmPerS) || plan.speedMmPerS <= 0) throw badPlan('speedMmPerS must be positive');
      if (plan.speedMmPerS > o.maxLinearSpeedMmPerS) {
        throw new Eco3dError('ECO3D_ERR_SPEED_LIMIT', `sweep plan: speedMmPerS ${plan.speedMmPerS} exceeds ${o.maxLinearSpeedMmPerS}`);
      }
      const tiltRad = plan.tiltRad ?? 0;
      if (!sane(tiltRad) || Math.abs(tiltRad) > 1) throw badPlan('tiltRad must be within ±1 rad');
      const along = sub(plan.direction, scale(baseAxis, dot(plan.direction, baseAxis)));
      if (norm(along) < 1e-6 * Math.max(1, norm(plan.direction))) throw badPlan('direction is parallel to the probe axis');
      const lateral = normalize(cross(baseAxis, along));
      const orientation = quatNormalize(quatMul(quatFromAxisAngle(lateral, tiltRad), base));
      const axisUnit = toolAxis({ positionMm: ZERO3, orientation });
      return {
        kind: 'linear',
        orientation,
        axisUnit,
        contactMm: plan.startMm,
        hoverMm: sub(plan.startMm, scale(axisUnit, o.approachClearanceMm)),
        force,
        direction: normalize(along),
        lengthMm: plan.lengthMm,
        speedMmPerS: plan.speedMmPerS,
      };
    }
    case 'fan': {
      if (!saneVec(plan.contactMm) || !saneVec(plan.tiltAxis)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'sweep plan: contactMm/tiltAxis not finite');
      if (!sane(plan.tiltStartRad, 1.2) || !sane(plan.tiltEndRad, 1.2)) throw badPlan('tilt angles must be within ±1.2 rad');
      const rangeRad = plan.tiltEndRad - plan.tiltStartRad;
      if (Math.abs(rangeRad) < 0.01) throw badPlan('tilt range too small');
      if (!sane(plan.angularSpeedRadPerS) || plan.angularSpeedRadPerS <= 0) throw badPlan('angularSpeedRadPerS must be positive');
      if (plan.angularSpeedRadPerS > o.maxAngularSpeedRadPerS) {
        throw new Eco3dError(
          'ECO3D_ERR_SPEED_LIMIT',
          `sweep plan: angularSpeedRadPerS ${plan.angularSpeedRadPerS.toFixed(3)} exceeds ${o.maxAngularSpeedRadPerS}`,
        );
      }
      const axisPerp = sub(plan.tiltAxis, scale(baseAxis, dot(plan.tiltAxis, baseAxis)));
      if (norm(axisPerp) < 1e-6 * Math.max(1, norm(plan.tiltAxis))) throw badPlan('tiltAxis is parallel to the probe axis');
      const tiltAxisUnit = normalize(axisPerp);
      const orientation = quatNormalize(quatMul(quatFromAxisAngle(tiltAxisUnit, plan.tiltStartRad), base));
      const axisUnit = toolAxis({ positionMm: ZERO3, orientation });
      return {
        kind: 'fan',
        orientation,
        axisUnit,
        contactMm: plan.contactMm,
        hoverMm: sub(plan.contactMm, scale(axisUnit, o.approachClearanceMm)),
        force,
        tiltAxisUnit,
        rangeRad,
        angularSpeedRadPerS: plan.angularSpeedRadPerS,
      };
    }
  }
}

/** Per-run mutable context (reset for every run). */
interface RunContext {
  moveTarget: Pose | null;
  moveDeadlineMs: number;
  contactTicks: number;
  descendFromMm: Vec3;
  /** Set at contact: the frame the sweep is measured in. */
  sweepOriginMm: Vec3;
  sweepOrientation: Quat;
  linear: LinearSweepGeometry | null;
  fraction: number;
  consecutiveTimeouts: number;
  finished: boolean;
  /** The force loop in contact; created at contact. */
  force: ForceTracker | null;
}

/** The abort signal's reason as an Error (an AbortSignal may carry anything). */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new Eco3dError('ECO3D_ERR_CONFLICT', `sweep aborted: ${String(r)}`);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      if (signal !== undefined) reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export class SweepRunner {
  private readonly o: SweepRunnerOptions;
  private currentPhase: SweepPhase | null = null;
  private running = false;
  private hooks: SweepRunHooks = {};
  private latest: RobotState | null = null;
  private latestAtMs = Number.NEGATIVE_INFINITY;
  private streamError: unknown = null;

  constructor(
    private readonly gate: MotionGate,
    private readonly state$: Observable<RobotState>,
    options?: Partial<SweepRunnerOptions>,
  ) {
    this.o = resolveSweepRunnerOptions(options);
  }

  /** Null before the first run. */
  get phase(): SweepPhase | null {
    return this.currentPhase;
  }

  /** Hold position and contact force. Only while sweeping (ECO3D_ERR_ROBOT_BUSY otherwise). */
  pause(): void {
    if (this.currentPhase !== 'sweep') {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot pause the sweep in phase ${this.currentPhase ?? 'none'}`);
    }
    this.setPhase('paused');
  }

  /** Continue the sweep from where it was paused. */
  resume(): void {
    if (this.currentPhase !== 'paused') {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot resume the sweep in phase ${this.currentPhase ?? 'none'}`);
    }
    this.setPhase('sweep');
  }

  /**
   * Runs one sweep to its end. Resolves once lifted off and stopped; rejects with the abort
   * signal's reason or an Eco3dError. The robot is sent a stop in every case.
   */
  async run(plan: SweepPlan, source: CommandSource, hooks: SweepRunHooks = {}): Promise<void> {
    if (this.running) throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', 'a sweep is already running');
    const p = resolveSweepPlan(plan, this.o);
    this.running = true;
    this.hooks = hooks;
    this.latest = null;
    this.streamError = null;
    this.currentPhase = null;
    const sub: Subscription = this.state$.subscribe({
      next: (s) => {
        this.latest = s;
        this.latestAtMs = this.o.now();
      },
      error: (err: unknown) => {
        this.streamError = err;
      },
    });
    let failure: { err: unknown } | null = null;
    try {
      await this.loop(p, source, hooks.signal);
    } catch (err) {
      failure = { err };
    } finally {
      sub.unsubscribe();
    }
    // Whatever happened, leave the robot stopped (stop is always allowed by the gate).
    let stopFailure: unknown = null;
    try {
      await this.gate.stop(source, failure === null ? 'sweep finished' : 'sweep ended early');
    } catch (err) {
      stopFailure = err;
    }
    this.setPhase('done');
    this.running = false;
    if (failure !== null) throw failure.err;
    if (stopFailure !== null) throw toEco3dError(stopFailure);
  }

  private setPhase(next: SweepPhase): void {
    const prev = this.currentPhase;
    if (prev === next) return;
    this.currentPhase = next;
    this.hooks.onPhase?.(next, prev);
  }

  private async loop(p: ResolvedPlan, source: CommandSource, signal: AbortSignal | undefined): Promise<void> {
    const first = this.freshState();
    const ctx: RunContext = {
      moveTarget: null,
      moveDeadlineMs: 0,
      contactTicks: 0,
      descendFromMm: first.tcpPose.positionMm,
      sweepOriginMm: p.contactMm,
      sweepOrientation: p.orientation,
      linear: null,
      fraction: 0,
      consecutiveTimeouts: 0,
      finished: false,
      force: null,
    };
    this.setPhase('approach');
    let nextTickAtMs = this.o.now();
    for (;;) {
      if (signal?.aborted === true) throw abortReason(signal);
      const s = this.freshState();
      const cmd = this.step(ctx, s, p);
      if (cmd !== null) await this.send(cmd, source, ctx);
      this.reportProgress(ctx, s, p);
      if (ctx.finished) return;
      // Fixed rate: aim at the next tick; after an overrun, restart the grid instead of bursting.
      nextTickAtMs += this.o.controlPeriodMs;
      const nowMs = this.o.now();
      if (nextTickAtMs < nowMs) nextTickAtMs = nowMs;
      await sleep(nextTickAtMs - nowMs, signal);
    }
  }

  private freshState(): RobotState {
    if (this.streamError !== null) {
      throw new Eco3dError('ECO3D_ERR_LINK_LOST', 'the robot state stream failed', { cause: this.streamError });
    }
    const s = this.latest;
    if (s === null) throw new Eco3dError('ECO3D_ERR_LINK_LOST', 'no robot state');
    const ageMs = this.o.now() - this.latestAtMs;
    if (ageMs > this.o.stateTimeoutMs) {
      throw new Eco3dError('ECO3D_ERR_LINK_LOST', `no robot state for ${Math.round(ageMs)} ms: contact force unobserved`);
    }
    return s;
  }

  private async send(cmd: RobotCommand, source: CommandSource, ctx: RunContext): Promise<void> {
    try {
      await this.gate.command(cmd, source, cmd.kind === 'jog' ? this.o.jogTimeoutMs : undefined);
      ctx.consecutiveTimeouts = 0;
    } catch (err) {
      const e = toEco3dError(err);
      // One late acknowledgement is survivable (the next jog refreshes the robot's watchdog);
      // several in a row mean the link is failing. Any refusal by the gate is final.
      if (e.code === 'ECO3D_ERR_TIMEOUT' && cmd.kind === 'jog' && ++ctx.consecutiveTimeouts < this.o.maxConsecutiveTimeouts) return;
      throw e;
    }
  }

  private forceOf(s: RobotState): number {
    if (s.wrench === null) throw new Eco3dError('ECO3D_ERR_ROBOT_FAULT', 'the force sensor stopped reporting during the sweep');
    return s.wrench.forceN.z;
  }

  /** One control tick: may change phase; returns the command to send, if any. */
  private step(ctx: RunContext, s: RobotState, p: ResolvedPlan): RobotCommand | null {
    const phase = this.currentPhase;
    switch (phase) {
      case null:
      case 'done':
        return null;
      case 'approach': {
        const target: Pose = { positionMm: p.hoverMm, orientation: p.orientation };
        if (ctx.moveTarget === null) return this.startMove(ctx, s, target, this.o.approachSpeedMmPerS);
        if (this.arrived(s, ctx.moveTarget)) {
          ctx.moveTarget = null;
          ctx.descendFromMm = s.tcpPose.positionMm;
          this.setPhase('descend');
          return this.descendJog(ctx, s, p);
        }
        this.checkMoveDeadline(ctx, 'approach');
        return null;
      }
      case 'descend': {
        const forceN = this.forceOf(s);
        ctx.contactTicks = forceN >= p.force.targetForceN - p.force.toleranceN ? ctx.contactTicks + 1 : 0;
        if (ctx.contactTicks >= this.o.contactSettleTicks) {
          ctx.sweepOriginMm = s.tcpPose.positionMm;
          ctx.sweepOrientation = s.tcpPose.orientation;
          ctx.force = new ForceTracker(p.force, 5 * this.o.controlPeriodMs);
          if (p.kind === 'linear') ctx.linear = linearSweepGeometry(s.tcpPose.positionMm, p.direction, p.axisUnit, p.lengthMm);
          this.setPhase('sweep');
          return this.sweepJog(ctx, s, p);
        }
        const descendedMm = dot(sub(s.tcpPose.positionMm, ctx.descendFromMm), p.axisUnit);
        if (descendedMm > this.o.maxDescentMm) {
          throw new Eco3dError('ECO3D_ERR_CONFLICT', `no skin contact within ${this.o.maxDescentMm} mm of descent`);
        }
        return this.descendJog(ctx, s, p);
      }
      case 'sweep':
        return this.sweepJog(ctx, s, p);
      case 'paused':
        return this.holdJog(ctx, s, p);
      case 'lift-off': {
        if (ctx.moveTarget === null) {
          const axis = toolAxis(s.tcpPose);
          const target: Pose = { positionMm: sub(s.tcpPose.positionMm, scale(axis, this.o.liftOffMm)), orientation: s.tcpPose.orientation };
          return this.startMove(ctx, s, target, this.o.liftSpeedMmPerS);
        }
        if (this.arrived(s, ctx.moveTarget)) {
          ctx.finished = true;
          return null;
        }
        this.checkMoveDeadline(ctx, 'lift-off');
        return null;
      }
    }
  }

  private startMove(ctx: RunContext, s: RobotState, target: Pose, speedMmPerS: number): RobotCommand {
    ctx.moveTarget = target;
    const distanceMm = norm(sub(target.positionMm, s.tcpPose.positionMm));
    ctx.moveDeadlineMs = this.o.now() + (distanceMm / speedMmPerS) * 1000 + this.o.moveTimeoutMarginMs;
    return { kind: 'cartesian-target', pose: target, speedMmPerS };
  }

  private checkMoveDeadline(ctx: RunContext, what: string): void {
    if (this.o.now() > ctx.moveDeadlineMs) throw new Eco3dError('ECO3D_ERR_TIMEOUT', `${what}: the robot did not reach its target in time`);
  }

  private arrived(s: RobotState, target: Pose): boolean {
    return (
      norm(sub(s.tcpPose.positionMm, target.positionMm)) <= this.o.arrivalToleranceMm &&
      quatAngle(s.tcpPose.orientation, target.orientation) <= this.o.arrivalToleranceRad
    );
  }

  private jog(linear: Vec3, angular: Vec3): RobotCommand {
    return {
      kind: 'jog',
      linearMmPerS: clampNorm(linear, this.o.maxLinearSpeedMmPerS),
      angularRadPerS: clampNorm(angular, this.o.maxAngularSpeedRadPerS),
    };
  }

  /** Angular velocity turning the current orientation toward `target`. */
  private orientationHold(s: RobotState, target: Quat): Vec3 {
    const err = rotationVector(quatMul(target, quatConj(s.tcpPose.orientation)));
    return scale(err, this.o.orientationGainPerS);
  }

  /** Position correction perpendicular to `axis`, toward `pointMm`. */
  private lateralHold(s: RobotState, pointMm: Vec3, axis: Vec3): Vec3 {
    const e = sub(pointMm, s.tcpPose.positionMm);
    return scale(sub(e, scale(axis, dot(e, axis))), this.o.path.positionGainPerS);
  }

  private descendJog(_ctx: RunContext, s: RobotState, p: ResolvedPlan): RobotCommand {
    const vAxialMmPerS = admittanceVelocityMmPerS(this.forceOf(s), p.force);
    const linear = add(scale(p.axisUnit, vAxialMmPerS), this.lateralHold(s, p.hoverMm, p.axisUnit));
    return this.jog(linear, this.orientationHold(s, p.orientation));
  }

  private sweepJog(ctx: RunContext, s: RobotState, p: ResolvedPlan): RobotCommand | null {
    const axis = toolAxis(s.tcpPose);
    const axial = scale(axis, this.contactAxialMmPerS(ctx, s));
    switch (p.kind) {
      case 'linear': {
        const g = ctx.linear!;
        const prog = linearSweepProgress(g, s.tcpPose.positionMm);
        ctx.fraction = prog.fraction;
        if (prog.remainingMm <= this.o.path.endToleranceMm) {
          ctx.fraction = 1;
          this.setPhase('lift-off');
          return this.step(ctx, s, p);
        }
        const inPlane = linearSweepVelocityMmPerS(g, s.tcpPose.positionMm, p.speedMmPerS, this.o.path);
        return this.jog(add(inPlane, axial), this.orientationHold(s, ctx.sweepOrientation));
      }
      case 'fan': {
        const tiltRad = tiltAngleAboutRad(ctx.sweepOrientation, s.tcpPose.orientation, p.tiltAxisUnit);
        ctx.fraction = clamp(tiltRad / p.rangeRad, 0, 1);
        const omega = fanAngularVelocityRadPerS(tiltRad, p.rangeRad, p.angularSpeedRadPerS, this.o.path.endDecelRadPerS2, this.o.fanEndToleranceRad);
        if (omega === 0) {
          ctx.fraction = 1;
          this.setPhase('lift-off');
          return this.step(ctx, s, p);
        }
        // Hold the pivot: the TCP is the contact point, so only drift needs correcting.
        const linear = add(axial, this.lateralHold(s, ctx.sweepOriginMm, axis));
        // Keep the orientation on the fan: correct any drift off the tilt axis.
        const onFan = quatMul(quatFromAxisAngle(p.tiltAxisUnit, tiltRad), ctx.sweepOrientation);
        const angular = add(scale(p.tiltAxisUnit, omega), this.orientationHold(s, onFan));
        return this.jog(linear, angular);
      }
    }
  }

  private contactAxialMmPerS(ctx: RunContext, s: RobotState): number {
    if (ctx.force === null) throw new Error('force loop used before contact'); // a bug, not a robot state
    return ctx.force.velocityMmPerS(this.forceOf(s), s.tMs);
  }

  /** Paused: no motion in the plane, keep the contact force. */
  private holdJog(ctx: RunContext, s: RobotState, p: ResolvedPlan): RobotCommand {
    const axis = toolAxis(s.tcpPose);
    const axial = scale(axis, this.contactAxialMmPerS(ctx, s));
    switch (p.kind) {
      case 'linear':
        return this.jog(axial, this.orientationHold(s, ctx.sweepOrientation));
      case 'fan':
        // Hold the pivot and the current tilt.
        return this.jog(add(axial, this.lateralHold(s, ctx.sweepOriginMm, axis)), ZERO3);
    }
  }

  private reportProgress(ctx: RunContext, s: RobotState, p: ResolvedPlan): void {
    const phase = this.currentPhase;
    if (this.hooks.onProgress === undefined || phase === null) return;
    const forceN = s.wrench?.forceN.z ?? null;
    this.hooks.onProgress({
      phase,
      fraction: ctx.fraction,
      forceN,
      forceInBand: forceN !== null && Math.abs(forceN - p.force.targetForceN) <= p.force.toleranceN,
      tMs: this.o.now(),
    });
  }
}

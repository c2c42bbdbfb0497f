// The robot simulator core: a deterministic, explicitly stepped model of the arm, its controller
// and its force/torque sensor. No timers and no I/O: whoever owns it calls step(dtMs) (the
// in-process driver at 250 Hz; the serial and rosbridge servers; tests directly).
//
// Public API (re-exported by sim/index.ts):
//   new RobotSimulator(opts?)          starts at rest at HOME_JOINTS_RAD, mode 'idle'
//   sim.step(dtMs): RobotState         advances time; returns (and keeps in sim.state) the new report
//   sim.state: RobotState              the latest report (seq increments by one per step)
//   sim.apply(cmd: RobotCommand)       accepts a command or throws Eco3dError('ECO3D_ERR_NACK', reason);
//                                      its effect (motion, mode) shows from the next step's report
//   sim.injectFault(f) / sim.clearFault(kind)   faults on demand (SimFaultInjection)
//   sim.patient                        the PatientModel it presses into (surface queries for the US sim)
//   SIM_LIMITS                         the robot's own limits (over-force, TCP speeds, following error…)
//
// Behaviour, per command (protocols/robot.ts):
// - joint-target: each joint follows a time-optimal ramp (trapezoid) bounded by
//   JOINT_MAX_SPEED × speedScale and JOINT_MAX_ACCEL; the joints are time-synchronised so that
//   they arrive together. Ends in 'idle'.
// - cartesian-target: the TCP moves on the straight line with the orientation slerped alongside,
//   at speedMmPerS (orientation at most SIM_LIMITS.cartesianAngSpeedRadPerS), ramped at the TCP
//   acceleration limits, with closed-form IK every step. Where a joint would exceed its speed
//   limit the motion slows down along the line, in advance (it never leaves the line). The whole
//   line is checked when the command arrives: unreachable, or through a singularity (elbow
//   stretched out, wrist over the base, wrist axes aligned) ⇒ NACK. A target arriving during a
//   motion keeps the part of the TCP velocity along the new line. Ends in 'idle'.
// - jog: Cartesian twist in the base frame (linear at the TCP), ramped at the TCP acceleration
//   limits, IK every step. The robot-side watchdog ramps it down to 'stopped' when no jog came
//   for JOG_WATCHDOG_MS. Approaching a singularity it slows down and creeps to a halt on its
//   line; a step it cannot make (edge of the reach, joint range) brakes to 'stopped'.
// - stop: synchronised joint-space braking at the joints' acceleration limits, then 'stopped'.
// - estop: immediate halt, latched 'estopped'; only reset leaves it.
// - reset: all-or-nothing. Refused while still moving, or while a fault's cause remains (an
//   injected fault not yet cleared); otherwise clears the e-stop latch and all faults ⇒ 'idle'.
// While 'estopped' only reset is accepted; while 'faulted' only reset, stop and estop.
//
// Faults: any fault ⇒ mode 'faulted' and a braking stop, except 'joint-stuck' and 'joint-limit'
// which halt at once (a joint that does not follow must not be driven further).
// - over-force: the probe-axis force (noise-free contact + injected push) above
//   SIM_LIMITS.overForceN. After braking the robot backs the probe off along its axis
//   (backoffSpeedMmPerS, at most backoffMaxMm, until the force is below backoffReleaseRatio × limit)
//   and holds: the robot-side "retract and stop", which also means a reset can never leave the
//   probe pressed above the limit (if it does, the next step faults again and backs off again).
// - joint-stuck: injected; the joint keeps its angle, the others follow; raised when the
//   following error exceeds SIM_LIMITS.followingErrorRad.
// - sensor-dropout: injected; the wrench is null while it lasts.
// - joint-limit: a braking joint ran into its limit (clamped there).
// - unreachable: a Cartesian path lost its IK solution mid-way (the start-time check makes this rare).
// - watchdog: never raised here; a lost host is the driver's business (SimRobotDriver stops the
//   robot when its link drops).
//
// Time: step(dtMs) integrates in sub-steps of at most 5 ms (one report, one seq, per call).
// Sensor noise comes from the patient model's seeded PRNG: the same seed and the same calls give
// the same states. Joint speed limits always hold. Joint acceleration limits hold exactly for
// joint targets and braking; Cartesian motion bounds them per step from the path's geometry, which
// held in random moves up to 250 mm/s and overshoots by up to ~20 % at 500 mm/s close to the
// base axis (no full time-optimal path parameterisation).
import type { Joints6, Pose, RobotCommand, RobotFaultCode, RobotMode, RobotState, Vec3 } from '../protocols/robot.ts';
import { JOG_WATCHDOG_MS } from '../protocols/robot.ts';
import { Eco3dError } from '../protocols/errors.ts';
import {
  add,
  dot,
  isFiniteQuat,
  isFiniteVec3,
  lerp3,
  norm,
  quatAngle,
  quatFromAxisAngle,
  quatMul,
  quatNorm,
  quatNormalize,
  scale,
  slerp,
  sub,
  toolAxis,
} from '../protocols/geometry.ts';
import { JOINT_LIMITS_RAD, JOINT_MAX_ACCEL_RAD_PER_S2, JOINT_MAX_SPEED_RAD_PER_S } from '../protocols/scene.ts';
import {
  forwardKinematics,
  HOME_JOINTS_RAD,
  inverseKinematics,
  jacobian,
  singularityMargins,
  withinJointLimits,
} from './kinematics.ts';
import { PatientModel } from './patient.ts';

export const SIM_LIMITS = {
  /** The robot's own hard limit on the force along the probe axis. */
  overForceN: 45,
  maxTcpSpeedMmPerS: 500,
  maxTcpAngSpeedRadPerS: 2,
  /** Linear and angular TCP accelerations of Cartesian motion and jogs. */
  tcpAccelMmPerS2: 1000,
  tcpAngAccelRadPerS2: 5,
  /** Orientation speed of a Cartesian target (the linear speed is the command's). */
  cartesianAngSpeedRadPerS: 1,
  /** Commanded minus measured joint angle above which a joint counts as stuck (≈ 3 mm at full reach). */
  followingErrorRad: 0.005,
  backoffSpeedMmPerS: 10,
  backoffMaxMm: 50,
  backoffReleaseRatio: 0.8,
  /**
   * Singularity margins (see singularityMargins in kinematics.ts) below which a jog or a path may
   * not go deeper: near a singularity the joints would have to spin up without bound.
   */
  singularMargins: { elbow: 0.05, wrist: 0.05, shoulderMm: 20 },
  /** Largest integration sub-step. */
  maxSubstepMs: 5,
} as const;

/** Faults to inject for tests. */
export type SimFaultInjection =
  | { readonly kind: 'stuck-joint'; readonly joint: number }
  | { readonly kind: 'over-force'; readonly extraForceN: number }
  | { readonly kind: 'sensor-dropout' };
export type SimFaultKind = SimFaultInjection['kind'];

export interface RobotSimulatorOptions {
  /** Start configuration (at rest); default HOME_JOINTS_RAD. */
  readonly initialJointsRad?: Joints6;
  /** Seed of the sensor noise when no `patient` is given; default 1. */
  readonly seed?: number;
  readonly patient?: PatientModel;
  readonly overForceLimitN?: number;
}

interface Twist {
  readonly linearMmPerS: Vec3;
  readonly angularRadPerS: Vec3;
}
const ZERO_VEC: Vec3 = Object.freeze({ x: 0, y: 0, z: 0 });
const ZERO_TWIST: Twist = Object.freeze({ linearMmPerS: ZERO_VEC, angularRadPerS: ZERO_VEC });

/** What the motion generator is doing. The reported RobotMode derives from it (see mode()). */
type Motion =
  | { readonly kind: 'hold' }
  | { readonly kind: 'joint'; readonly targetRad: readonly number[]; readonly vCapRadPerS: readonly number[] }
  | {
      readonly kind: 'path';
      readonly from: Pose;
      readonly to: Pose;
      /** Path parameter in [0, 1] and its rate. */
      s: number;
      sDotPerS: number;
      readonly sDotMaxPerS: number;
      readonly sDDotPerS2: number;
      /**
       * Look-ahead from the start-time check: the path is cut into `segLimits.length` equal
       * segments; segLimits[k] is the largest ṡ at which no joint exceeds its speed limit in
       * segment k. The robot slows down before a segment rather than inside it.
       */
      readonly segLimitsPerS: readonly number[];
    }
  | { readonly kind: 'jog'; target: Twist; twist: Twist; lastCmdTMs: number }
  | { readonly kind: 'backoff'; twist: Twist; readonly fromMm: Vec3 }
  | {
      readonly kind: 'brake';
      /** Joint velocities when braking began; they scale down together to zero. */
      readonly v0RadPerS: readonly number[];
      f: number;
      readonly durationS: number;
      then: 'stopped' | 'fault';
      readonly shownAs: 'moving' | 'jogging';
    };

/** Planning deceleration as a share of the limit: margin for step-time jitter. */
const PLAN_DECEL_SHARE = 0.95;
/** Path samples for the start-time check of a Cartesian target. */
const PATH_CHECK_STEP_MM = 5;
const PATH_CHECK_STEP_RAD = 0.05;
/** A joint jump larger than this between neighbouring path samples means a singularity on the line. */
const PATH_CHECK_MAX_JUMP_RAD = 0.5;
/** Share of the joint speed limits the look-ahead plans with. */
const PATH_LOOKAHEAD_SHARE = 0.95;
/**
 * Share of the joint acceleration limits the path acceleration may use; the rest is for the
 * geometric part (dq/ds changing along the line at speed), which the per-step bound handles.
 */
const PATH_ACCEL_SHARE = 0.7;

const nack = (reason: string, details?: Record<string, unknown>): Eco3dError =>
  new Eco3dError('ECO3D_ERR_NACK', reason, details === undefined ? undefined : { details });

const toJoints6 = (a: readonly number[]): Joints6 => Object.freeze(a.slice(0, 6)) as unknown as Joints6;

function rampVec(cur: Vec3, target: Vec3, maxDelta: number): Vec3 {
  const d = sub(target, cur);
  const n = norm(d);
  return n <= maxDelta ? target : add(cur, scale(d, maxDelta / n));
}

/** Largest stop-in-time rate for distance e at deceleration a with steps dt (semi-implicit Euler). */
function brakingRate(e: number, a: number, dtS: number): number {
  return -a * dtS / 2 + Math.sqrt((a * dtS * a * dtS) / 4 + 2 * a * e);
}

export class RobotSimulator {
  readonly patient: PatientModel;
  readonly overForceLimitN: number;

  private readonly qCmd: number[];
  private readonly qdCmd: number[] = [0, 0, 0, 0, 0, 0];
  private readonly qAct: number[];
  private readonly qdAct: number[] = [0, 0, 0, 0, 0, 0];
  private tMs = 0;
  private seq = 0;
  private estopLatched = false;
  private faults: RobotFaultCode[] = [];
  private restMode: 'idle' | 'stopped' = 'idle';
  private motion: Motion = { kind: 'hold' };
  private backoffDone = false;
  /** Force along the probe axis at the last sub-step, noise-free, including the injected push. */
  private probeForceN = 0;
  private tcp: Pose;
  private readonly stuckJoints = new Set<number>();
  private extraForceN = 0;
  private sensorDropout = false;
  private snapshot: RobotState;

  constructor(opts: RobotSimulatorOptions = {}) {
    const q0 = opts.initialJointsRad ?? HOME_JOINTS_RAD;
    if (q0.length !== 6 || !q0.every(Number.isFinite) || !withinJointLimits(q0)) {
      throw new RangeError('initialJointsRad must be 6 finite angles within the joint limits');
    }
    this.qCmd = [...q0];
    this.qAct = [...q0];
    this.patient = opts.patient ?? new PatientModel({ seed: opts.seed ?? 1 });
    this.overForceLimitN = opts.overForceLimitN ?? SIM_LIMITS.overForceN;
    this.tcp = forwardKinematics(q0);
    this.snapshot = this.report();
  }

  /** The latest state report. */
  get state(): RobotState {
    return this.snapshot;
  }

  // ---------------------------------------------------------------- commands

  apply(cmd: RobotCommand): void {
    if (this.estopLatched && cmd.kind !== 'reset') {
      throw nack(`${cmd.kind} refused: the e-stop is latched, only reset is accepted`, { command: cmd.kind, mode: 'estopped' });
    }
    if (this.faults.length > 0 && cmd.kind !== 'reset' && cmd.kind !== 'stop' && cmd.kind !== 'estop') {
      throw nack(`${cmd.kind} refused: faulted (${this.faults.join(', ')}), only reset, stop or estop are accepted`, {
        command: cmd.kind,
        faults: [...this.faults],
      });
    }
    switch (cmd.kind) {
      case 'joint-target':
        this.startJointTarget(cmd.jointsRad, cmd.speedScale);
        return;
      case 'cartesian-target':
        this.startCartesianTarget(cmd.pose, cmd.speedMmPerS);
        return;
      case 'jog':
        this.startJog(cmd.linearMmPerS, cmd.angularRadPerS);
        return;
      case 'stop':
        if (this.motion.kind === 'backoff') this.backoffDone = true; // the operator's stop wins over the back-off
        this.beginBrake(this.faults.length > 0 ? 'fault' : 'stopped');
        return;
      case 'estop':
        this.halt();
        this.estopLatched = true;
        return;
      case 'reset':
        this.reset();
        return;
    }
  }

  injectFault(f: SimFaultInjection): void {
    switch (f.kind) {
      case 'stuck-joint':
        if (!Number.isInteger(f.joint) || f.joint < 0 || f.joint > 5) throw new RangeError(`joint must be 0..5, got ${f.joint}`);
        this.stuckJoints.add(f.joint);
        return;
      case 'over-force':
        if (!Number.isFinite(f.extraForceN)) throw new RangeError('extraForceN must be finite');
        this.extraForceN = f.extraForceN;
        return;
      case 'sensor-dropout':
        this.sensorDropout = true;
        return;
    }
  }

  /** Removes an injected fault's cause; the fault itself stays latched until `reset`. */
  clearFault(kind: SimFaultKind): void {
    switch (kind) {
      case 'stuck-joint':
        this.stuckJoints.clear();
        return;
      case 'over-force':
        this.extraForceN = 0;
        return;
      case 'sensor-dropout':
        this.sensorDropout = false;
        return;
    }
  }

  private startJointTarget(target: Joints6, speedScale: number): void {
    if (target.length !== 6 || !target.every(Number.isFinite)) throw nack('joint-target refused: joints must be 6 finite angles');
    if (!(Number.isFinite(speedScale) && speedScale > 0 && speedScale <= 1)) {
      throw nack(`joint-target refused: speedScale must be in (0, 1], got ${speedScale}`);
    }
    for (let i = 0; i < 6; i++) {
      const lim = JOINT_LIMITS_RAD[i]!;
      if (target[i]! < lim.min || target[i]! > lim.max) {
        throw nack(`joint-target refused: joint ${i} target ${target[i]} rad is outside the joint limits [${lim.min}, ${lim.max}]`, {
          joint: i,
        });
      }
    }
    // Time-synchronise: the slowest joint sets the duration T, the others get the cruise speed
    // that makes their own trapezoid last T: d = v (T − v/a).
    const vMax = JOINT_MAX_SPEED_RAD_PER_S.map((v) => v * speedScale);
    let T = 0;
    const dist = target.map((t, i) => Math.abs(t - this.qCmd[i]!));
    for (let i = 0; i < 6; i++) T = Math.max(T, trapezoidTimeS(dist[i]!, vMax[i]!, JOINT_MAX_ACCEL_RAD_PER_S2[i]!));
    const vCap = dist.map((d, i) => {
      const a = JOINT_MAX_ACCEL_RAD_PER_S2[i]!;
      const disc = Math.max(0, a * a * T * T - 4 * a * d);
      const v = T > 0 ? (a * T - Math.sqrt(disc)) / 2 : 0;
      // A floor so that a joint already moving can come back to its (near) target.
      return Math.min(vMax[i]!, Math.max(v, 0.05 * vMax[i]!));
    });
    this.motion = { kind: 'joint', targetRad: [...target], vCapRadPerS: vCap };
  }

  private startCartesianTarget(pose: Pose, speedMmPerS: number): void {
    if (!isFiniteVec3(pose.positionMm) || !isFiniteQuat(pose.orientation)) throw nack('cartesian-target refused: pose is not finite');
    if (Math.abs(quatNorm(pose.orientation) - 1) > 1e-3) throw nack('cartesian-target refused: orientation is not a unit quaternion');
    if (!(Number.isFinite(speedMmPerS) && speedMmPerS > 0 && speedMmPerS <= SIM_LIMITS.maxTcpSpeedMmPerS)) {
      throw nack(`cartesian-target refused: speedMmPerS must be in (0, ${SIM_LIMITS.maxTcpSpeedMmPerS}], got ${speedMmPerS}`);
    }
    const from = forwardKinematics(this.qCmd as unknown as Joints6);
    const to: Pose = { positionMm: pose.positionMm, orientation: quatNormalize(pose.orientation) };
    const distMm = norm(sub(to.positionMm, from.positionMm));
    const angRad = quatAngle(from.orientation, to.orientation);
    if (inverseKinematics(to, this.qCmd as unknown as Joints6) === null) {
      throw nack('cartesian-target refused: unreachable (no inverse-kinematics solution within the joint limits)', { reason: 'unreachable' });
    }
    // Check the whole straight line now rather than fault half-way along it, and note how fast
    // each stretch may be taken within the joint speed limits.
    const n = Math.max(1, Math.ceil(Math.max(distMm / PATH_CHECK_STEP_MM, angRad / PATH_CHECK_STEP_RAD)));
    const segLimitsPerS: number[] = [];
    const start: Joints6 = [...this.qCmd] as unknown as Joints6;
    // The path acceleration at which no joint exceeds its acceleration limit (first-order term).
    let sDDotJointsPerS2 = Infinity;
    let prev: Joints6 = this.qCmd as unknown as Joints6;
    for (let k = 1; k <= n; k++) {
      const q = inverseKinematics(pathPose(from, to, k / n), prev);
      if (q === null) {
        throw nack(`cartesian-target refused: unreachable (the straight line leaves the reach ${((k / n) * distMm).toFixed(0)} mm along)`, {
          reason: 'unreachable',
        });
      }
      let jump = 0;
      let limit = Infinity;
      for (let i = 0; i < 6; i++) {
        const dq = Math.abs(q[i]! - prev[i]!);
        jump = Math.max(jump, dq);
        // ṡ · n · dq ≤ vmax, with a margin because dq/ds varies inside the segment.
        if (dq > 0) limit = Math.min(limit, (PATH_LOOKAHEAD_SHARE * JOINT_MAX_SPEED_RAD_PER_S[i]!) / (dq * n));
        if (dq > 0) sDDotJointsPerS2 = Math.min(sDDotJointsPerS2, (PATH_ACCEL_SHARE * JOINT_MAX_ACCEL_RAD_PER_S2[i]!) / (dq * n));
      }
      if (jump > PATH_CHECK_MAX_JUMP_RAD || deeperIntoSingularity(q, start)) {
        // Typically the elbow stretching out fully at the edge of the reach, where the nearest
        // solution jumps to another branch: a real arm cannot follow the line there either.
        throw nack(
          'cartesian-target refused: the straight line passes through a singularity (the arm would have to stretch out fully or change configuration)',
          { reason: 'singular' },
        );
      }
      segLimitsPerS.push(limit);
      prev = q;
    }
    if (distMm < 1e-6 && angRad < 1e-9) {
      this.motion = { kind: 'joint', targetRad: [...prev], vCapRadPerS: JOINT_MAX_SPEED_RAD_PER_S };
      return;
    }
    const sDotMaxPerS = Math.min(
      distMm > 1e-9 ? speedMmPerS / distMm : Infinity,
      angRad > 1e-12 ? SIM_LIMITS.cartesianAngSpeedRadPerS / angRad : Infinity,
    );
    const sDDotPerS2 = Math.min(
      distMm > 1e-9 ? SIM_LIMITS.tcpAccelMmPerS2 / distMm : Infinity,
      angRad > 1e-12 ? SIM_LIMITS.tcpAngAccelRadPerS2 / angRad : Infinity,
      sDDotJointsPerS2,
    );
    // Blend from the current motion: keep the part of the TCP velocity along the new line (the
    // rest is dropped at once; the controller streams targets along one line in practice).
    const twist = this.commandedTwist();
    let sDot0 = 0;
    if (distMm > 1e-9) sDot0 = dot(twist.linearMmPerS, sub(to.positionMm, from.positionMm)) / (distMm * distMm);
    sDot0 = Math.max(0, Math.min(sDotMaxPerS, sDot0));
    this.motion = { kind: 'path', from, to, s: 0, sDotPerS: sDot0, sDotMaxPerS, sDDotPerS2, segLimitsPerS };
  }

  private startJog(linearMmPerS: Vec3, angularRadPerS: Vec3): void {
    if (!isFiniteVec3(linearMmPerS) || !isFiniteVec3(angularRadPerS)) throw nack('jog refused: velocities must be finite');
    if (norm(linearMmPerS) > SIM_LIMITS.maxTcpSpeedMmPerS) {
      throw nack(`jog refused: linear speed ${norm(linearMmPerS).toFixed(1)} mm/s above ${SIM_LIMITS.maxTcpSpeedMmPerS} mm/s`);
    }
    if (norm(angularRadPerS) > SIM_LIMITS.maxTcpAngSpeedRadPerS) {
      throw nack(`jog refused: angular speed ${norm(angularRadPerS).toFixed(2)} rad/s above ${SIM_LIMITS.maxTcpAngSpeedRadPerS} rad/s`);
    }
    const target: Twist = { linearMmPerS, angularRadPerS };
    if (this.motion.kind === 'jog') {
      this.motion.target = target;
      this.motion.lastCmdTMs = this.tMs;
      return;
    }
    // Start from the TCP's present twist so that a jog taking over a motion is continuous.
    this.motion = { kind: 'jog', target, twist: this.commandedTwist(), lastCmdTMs: this.tMs };
  }

  private reset(): void {
    if (!this.estopLatched && this.faults.length === 0) return; // nothing to reset: a no-op ack
    if (this.motion.kind !== 'hold') throw nack('reset refused: the robot is still moving (braking or backing off); retry when at rest');
    const remaining: string[] = [];
    for (const f of this.faults) {
      const why = this.faultCause(f);
      if (why !== null) remaining.push(`${f} (${why})`);
    }
    if (remaining.length > 0) throw nack(`reset refused: cause still present: ${remaining.join('; ')}`, { faults: [...this.faults] });
    this.estopLatched = false;
    this.faults = [];
    this.restMode = 'idle';
    this.backoffDone = false;
    for (let i = 0; i < 6; i++) {
      this.qCmd[i] = this.qAct[i]!;
      this.qdCmd[i] = 0;
    }
  }

  /** Why a fault cannot be cleared yet, or null when its cause is gone. */
  private faultCause(f: RobotFaultCode): string | null {
    switch (f) {
      case 'over-force':
        // The contact part needs no check here: a probe still pressed above the limit after a
        // reset faults again on the next step and backs off again.
        return this.extraForceN !== 0 ? 'external push still applied' : null;
      case 'joint-stuck':
        return this.stuckJoints.size > 0 ? `joint ${[...this.stuckJoints].join(', ')} still stuck` : null;
      case 'sensor-dropout':
        return this.sensorDropout ? 'force/torque sensor still silent' : null;
      case 'joint-limit':
      case 'unreachable':
      case 'watchdog':
        return null;
    }
  }

  // ---------------------------------------------------------------- stepping

  step(dtMs: number): RobotState {
    if (!(Number.isFinite(dtMs) && dtMs > 0)) throw new RangeError(`dtMs must be a positive finite number, got ${dtMs}`);
    const n = Math.ceil(dtMs / SIM_LIMITS.maxSubstepMs);
    const hMs = dtMs / n;
    for (let k = 0; k < n; k++) this.substep(hMs);
    this.seq++;
    this.snapshot = this.report();
    return this.snapshot;
  }

  private substep(hMs: number): void {
    const dtS = hMs / 1000;
    if (this.sensorDropout) this.raiseFault('sensor-dropout', 'brake');
    this.advanceMotion(dtS);
    // A braking joint may run into its limit: clamp it there and halt.
    for (let i = 0; i < 6; i++) {
      const lim = JOINT_LIMITS_RAD[i]!;
      if (this.qCmd[i]! > lim.max || this.qCmd[i]! < lim.min) {
        this.qCmd[i] = Math.max(lim.min, Math.min(lim.max, this.qCmd[i]!));
        this.raiseFault('joint-limit', 'halt');
      }
    }
    // The arm follows its commands, except a stuck joint.
    for (let i = 0; i < 6; i++) {
      if (this.stuckJoints.has(i)) {
        this.qdAct[i] = 0;
      } else {
        this.qAct[i] = this.qCmd[i]!;
        this.qdAct[i] = this.qdCmd[i]!;
      }
    }
    for (let i = 0; i < 6; i++) {
      if (Math.abs(this.qCmd[i]! - this.qAct[i]!) > SIM_LIMITS.followingErrorRad) {
        this.raiseFault('joint-stuck', 'halt');
        break;
      }
    }
    this.tcp = forwardKinematics(this.qAct as unknown as Joints6);
    this.probeForceN = this.patient.contactAt(this.tcp).wrench.forceN.z + this.extraForceN;
    if (!this.sensorDropout && this.probeForceN > this.overForceLimitN) this.raiseFault('over-force', 'brake');
    this.tMs += hMs;
  }

  private advanceMotion(dtS: number): void {
    const m = this.motion;
    switch (m.kind) {
      case 'hold':
        this.qdCmd.fill(0);
        return;
      case 'joint':
        this.stepJoint(m.targetRad, m.vCapRadPerS, dtS);
        return;
      case 'path':
        this.stepPath(m, dtS);
        return;
      case 'jog':
        this.stepJog(m, dtS);
        return;
      case 'backoff':
        this.stepBackoff(m, dtS);
        return;
      case 'brake':
        this.stepBrake(m, dtS);
        return;
    }
  }

  private stepJoint(target: readonly number[], vCap: readonly number[], dtS: number): void {
    let done = true;
    for (let i = 0; i < 6; i++) {
      const a = JOINT_MAX_ACCEL_RAD_PER_S2[i]!;
      const e = target[i]! - this.qCmd[i]!;
      const absE = Math.abs(e);
      // The fastest speed from which the joint still stops on target, and never past it in one step.
      const vDes = Math.sign(e) * Math.min(vCap[i]!, brakingRate(absE, PLAN_DECEL_SHARE * a, dtS), absE / dtS);
      const v = this.qdCmd[i]!;
      const vNew = v + Math.max(-a * dtS, Math.min(a * dtS, vDes - v));
      this.qdCmd[i] = vNew;
      this.qCmd[i] = this.qCmd[i]! + vNew * dtS;
      if (Math.abs(target[i]! - this.qCmd[i]!) > 1e-9 || Math.abs(vNew) > 1e-9) done = false;
    }
    if (done) {
      for (let i = 0; i < 6; i++) this.qCmd[i] = target[i]!;
      this.finishMotion();
    }
  }

  private stepPath(m: Extract<Motion, { kind: 'path' }>, dtS: number): void {
    const remaining = 1 - m.s;
    const a = m.sDDotPerS2;
    const aPlan = PLAN_DECEL_SHARE * a;
    let sDotDes = Math.min(m.sDotMaxPerS, brakingRate(remaining, aPlan, dtS), remaining / dtS);
    // Slow down in time for the joint-speed-limited stretches ahead (and keep within the present one).
    const segs = m.segLimitsPerS;
    const kNow = Math.min(segs.length - 1, Math.floor(m.s * segs.length));
    for (let k = kNow; k < segs.length; k++) {
      const lim = segs[k]!;
      if (lim >= sDotDes) continue;
      const ahead = Math.max(0, k / segs.length - m.s);
      const cap = k === kNow ? lim : Math.sqrt(lim * lim + 2 * aPlan * ahead);
      if (cap < sDotDes) sDotDes = cap;
    }
    let sDot = m.sDotPerS + Math.max(-a * dtS, Math.min(a * dtS, sDotDes - m.sDotPerS));
    let sNew = Math.min(1, m.s + sDot * dtS);
    let q = inverseKinematics(pathPose(m.from, m.to, sNew), this.qCmd as unknown as Joints6);
    // Slow down along the line while a joint would exceed its speed limit, or speed up no faster
    // than the joints' acceleration limits allow (never leave the line).
    for (let iter = 0; iter < 4 && q !== null && sNew > m.s; iter++) {
      const ratio = jointSpeedRatio(q, this.qCmd, dtS);
      // q̇_i ≈ g_i · ṡ with g = dq/ds here; |g_i ṡ − q̇_i,now| ≤ a_i dt bounds ṡ from above.
      let sDotAccelMax = Infinity;
      for (let i = 0; i < 6; i++) {
        const g = (q[i]! - this.qCmd[i]!) / (sNew - m.s);
        if (Math.abs(g) < 1e-12) continue;
        const aDt = JOINT_MAX_ACCEL_RAD_PER_S2[i]! * dtS;
        const v = this.qdCmd[i]!;
        sDotAccelMax = Math.min(sDotAccelMax, Math.max((v - aDt) / g, (v + aDt) / g));
      }
      let next = sDot;
      if (ratio > 1) next = sDot / (ratio * 1.001);
      // The acceleration bound only ever slows an acceleration: decelerating stays on the braking curve.
      if (sDotAccelMax < next && sDotAccelMax >= m.sDotPerS) next = sDotAccelMax;
      if (next >= sDot) break;
      sDot = next;
      sNew = Math.min(1, m.s + sDot * dtS);
      q = inverseKinematics(pathPose(m.from, m.to, sNew), this.qCmd as unknown as Joints6);
    }
    if (q === null) {
      this.raiseFault('unreachable', 'brake');
      if (this.motion.kind === 'brake') this.stepBrake(this.motion, dtS);
      return;
    }
    this.commitJoints(q, dtS);
    m.s = sNew;
    m.sDotPerS = sDot;
    if (sNew >= 1) this.finishMotion();
  }

  private stepJog(m: Extract<Motion, { kind: 'jog' }>, dtS: number): void {
    const expired = this.tMs - m.lastCmdTMs >= JOG_WATCHDOG_MS;
    if (expired) m.target = ZERO_TWIST; // the robot-side watchdog: no refresh ⇒ ramp down
    m.twist = rampTwist(m.twist, m.target, dtS);
    if (expired && norm(m.twist.linearMmPerS) === 0 && norm(m.twist.angularRadPerS) === 0) {
      this.qdCmd.fill(0);
      this.motion = { kind: 'hold' };
      this.restMode = 'stopped';
      return;
    }
    const applied = this.stepTwist(m.twist, m.target, dtS);
    if (applied === null) {
      // The edge of the reach or of a joint range: brake there rather than fault.
      this.brakeNow('stopped', dtS);
      return;
    }
    m.twist = applied;
  }

  private stepBackoff(m: Extract<Motion, { kind: 'backoff' }>, dtS: number): void {
    const travelledMm = norm(sub(this.tcp.positionMm, m.fromMm));
    if (this.probeForceN < SIM_LIMITS.backoffReleaseRatio * this.overForceLimitN || travelledMm >= SIM_LIMITS.backoffMaxMm) {
      this.backoffDone = true;
      this.brakeNow('fault', dtS);
      return;
    }
    const away = scale(toolAxis(this.tcp), -SIM_LIMITS.backoffSpeedMmPerS);
    const target: Twist = { linearMmPerS: away, angularRadPerS: ZERO_VEC };
    m.twist = rampTwist(m.twist, target, dtS);
    const applied = this.stepTwist(m.twist, target, dtS);
    if (applied === null) {
      this.backoffDone = true;
      this.brakeNow('fault', dtS);
      return;
    }
    m.twist = applied;
  }

  /**
   * Moves the TCP by twist·dt through IK, slowed down uniformly if a joint would exceed its speed
   * limit, and slowed towards zero inside a singularity's slow-down zone (the speed cap there is
   * a share of `refSpeed`'s, the twist asked for, so that the arm creeps to a halt instead of
   * spinning its joints up). Returns the twist actually applied, or null when the step cannot be
   * made (no IK solution, or at a singularity margin).
   */
  private stepTwist(twist: Twist, refSpeed: Twist, dtS: number): Twist | null {
    if (norm(twist.linearMmPerS) === 0 && norm(twist.angularRadPerS) === 0) {
      this.qdCmd.fill(0); // hold exactly: no IK round trip, no round-off velocities
      return twist;
    }
    const pose = forwardKinematics(this.qCmd as unknown as Joints6);
    let t = twist;
    let q = inverseKinematics(integratePose(pose, t, dtS), this.qCmd as unknown as Joints6);
    for (let iter = 0; iter < 4 && q !== null; iter++) {
      const ratio = jointSpeedRatio(q, this.qCmd, dtS);
      const ks = singularSlowdown(q, this.qCmd);
      let k = ratio > 1 ? 1 / (ratio * 1.001) : 1;
      if (ks < 1) {
        // Cap |t| at ks·|ref| (per part: linear and angular).
        const capLin = (ks * norm(refSpeed.linearMmPerS)) / Math.max(1e-12, norm(t.linearMmPerS));
        const capAng = (ks * norm(refSpeed.angularRadPerS)) / Math.max(1e-12, norm(t.angularRadPerS));
        k = Math.min(k, norm(t.linearMmPerS) > 0 ? capLin : 1, norm(t.angularRadPerS) > 0 ? capAng : 1);
      }
      if (k >= 1) break;
      if (k <= 0) return null;
      t = { linearMmPerS: scale(t.linearMmPerS, k), angularRadPerS: scale(t.angularRadPerS, k) };
      q = inverseKinematics(integratePose(pose, t, dtS), this.qCmd as unknown as Joints6);
    }
    if (q === null) return null;
    // Refuse a step the joints cannot make in time (even slowed down), one that goes deeper into a
    // singularity, or one whose solution misses the pose (IK clamped at the edge of the reach):
    // the jog stops there instead of crawling or wandering off its line.
    if (jointSpeedRatio(q, this.qCmd, dtS) > 1 + 1e-6) return null;
    if (deeperIntoSingularity(q, this.qCmd)) return null;
    const target = integratePose(pose, t, dtS);
    const reached = forwardKinematics(q);
    if (norm(sub(reached.positionMm, target.positionMm)) > 1e-4 || quatAngle(reached.orientation, target.orientation) > 1e-7) return null;
    this.commitJoints(q, dtS);
    return t;
  }

  private stepBrake(m: Extract<Motion, { kind: 'brake' }>, dtS: number): void {
    m.f = Math.max(0, m.f - dtS / m.durationS);
    for (let i = 0; i < 6; i++) {
      this.qdCmd[i] = m.v0RadPerS[i]! * m.f;
      this.qCmd[i] = this.qCmd[i]! + this.qdCmd[i]! * dtS;
    }
    if (m.f === 0) this.atRest(m.then);
  }

  private commitJoints(q: Joints6, dtS: number): void {
    for (let i = 0; i < 6; i++) {
      this.qdCmd[i] = (q[i]! - this.qCmd[i]!) / dtS;
      this.qCmd[i] = q[i]!;
    }
  }

  /** A joint or Cartesian target was reached. */
  private finishMotion(): void {
    this.motion = { kind: 'hold' };
    this.restMode = 'idle';
  }

  /**
   * Synchronised joint-space braking: all joint velocities shrink by the same factor, as fast as
   * the joint that needs longest at its acceleration limit allows.
   */
  private beginBrake(then: 'stopped' | 'fault'): void {
    const m = this.motion;
    if (m.kind === 'brake') {
      if (then === 'fault') m.then = 'fault';
      return;
    }
    let durationS = 0;
    for (let i = 0; i < 6; i++) durationS = Math.max(durationS, Math.abs(this.qdCmd[i]!) / JOINT_MAX_ACCEL_RAD_PER_S2[i]!);
    const shownAs = m.kind === 'jog' ? 'jogging' : 'moving';
    if (durationS < 1e-9) {
      this.qdCmd.fill(0);
      this.motion = { kind: 'hold' };
      this.atRest(then);
      return;
    }
    this.motion = { kind: 'brake', v0RadPerS: [...this.qdCmd], f: 1, durationS, then, shownAs };
  }

  /** Starts braking inside a motion step and brakes for this step, so velocity and position agree. */
  private brakeNow(then: 'stopped' | 'fault', dtS: number): void {
    this.beginBrake(then);
    if (this.motion.kind === 'brake') this.stepBrake(this.motion, dtS);
  }

  private atRest(why: 'stopped' | 'fault'): void {
    this.motion = { kind: 'hold' };
    if (why === 'stopped') this.restMode = 'stopped';
    const overForce =
      this.faults.includes('over-force') &&
      !this.backoffDone &&
      !this.estopLatched &&
      this.probeForceN >= SIM_LIMITS.backoffReleaseRatio * this.overForceLimitN;
    if (overForce) this.motion = { kind: 'backoff', twist: ZERO_TWIST, fromMm: this.tcp.positionMm };
  }

  /** Stops dead where the arm physically is (e-stop, stuck joint, joint limit). */
  private halt(): void {
    for (let i = 0; i < 6; i++) {
      this.qCmd[i] = this.qAct[i]!;
      this.qdCmd[i] = 0;
      this.qdAct[i] = 0;
    }
    this.motion = { kind: 'hold' };
  }

  /** Latches a fault and stops (once per fault: a fault already latched changes nothing). */
  private raiseFault(code: RobotFaultCode, how: 'brake' | 'halt'): void {
    if (this.faults.includes(code)) return;
    this.faults.push(code);
    if (this.estopLatched) return; // already halted, brakes on
    if (how === 'halt') this.halt();
    else this.beginBrake('fault');
  }

  /** The TCP twist the commanded joint velocities produce (J · q̇). */
  private commandedTwist(): Twist {
    if (this.qdCmd.every((v) => v === 0)) return ZERO_TWIST;
    const J = jacobian(this.qCmd as unknown as Joints6);
    const r = [0, 0, 0, 0, 0, 0];
    for (let row = 0; row < 6; row++) {
      let s = 0;
      for (let i = 0; i < 6; i++) s += J[row * 6 + i]! * this.qdCmd[i]!;
      r[row] = s;
    }
    return { linearMmPerS: { x: r[0]!, y: r[1]!, z: r[2]! }, angularRadPerS: { x: r[3]!, y: r[4]!, z: r[5]! } };
  }

  private mode(): RobotMode {
    if (this.estopLatched) return 'estopped';
    if (this.faults.length > 0) return 'faulted';
    const m = this.motion;
    switch (m.kind) {
      case 'hold':
        return this.restMode;
      case 'joint':
      case 'path':
      case 'backoff':
        return 'moving';
      case 'jog':
        return 'jogging';
      case 'brake':
        return m.shownAs;
    }
  }

  private report(): RobotState {
    return {
      tMs: this.tMs,
      seq: this.seq,
      mode: this.mode(),
      jointsRad: toJoints6(this.qAct),
      jointVelRadPerS: toJoints6(this.qdAct),
      tcpPose: this.tcp,
      wrench: this.sensorDropout ? null : this.patient.sensedWrench(this.tcp, this.extraForceN),
      faults: Object.freeze([...this.faults]),
    };
  }
}

function trapezoidTimeS(d: number, v: number, a: number): number {
  if (d <= 0) return 0;
  return d >= (v * v) / a ? d / v + v / a : 2 * Math.sqrt(d / a);
}

function pathPose(from: Pose, to: Pose, s: number): Pose {
  return { positionMm: lerp3(from.positionMm, to.positionMm, s), orientation: slerp(from.orientation, to.orientation, s) };
}

function integratePose(pose: Pose, t: Twist, dtS: number): Pose {
  const w = t.angularRadPerS;
  const angle = norm(w) * dtS;
  const orientation = angle === 0 ? pose.orientation : quatNormalize(quatMul(quatFromAxisAngle(w, angle), pose.orientation));
  return { positionMm: add(pose.positionMm, scale(t.linearMmPerS, dtS)), orientation };
}

function rampTwist(cur: Twist, target: Twist, dtS: number): Twist {
  return {
    linearMmPerS: rampVec(cur.linearMmPerS, target.linearMmPerS, SIM_LIMITS.tcpAccelMmPerS2 * dtS),
    angularRadPerS: rampVec(cur.angularRadPerS, target.angularRadPerS, SIM_LIMITS.tcpAngAccelRadPerS2 * dtS),
  };
}

/** Width of the slow-down zone outside each singularity margin, in multiples of the margin. */
const SINGULAR_ZONE_FACTOR = 2;

/**
 * 1 away from singularities; inside a slow-down zone, for a step that approaches the singularity,
 * the share of speed allowed: falling linearly from 1 at the zone's edge to 0 at the margin.
 */
function singularSlowdown(q: Joints6, from: readonly number[]): number {
  const m = singularityMargins(q);
  const m0 = singularityMargins(from as unknown as Joints6);
  const lim = SIM_LIMITS.singularMargins;
  let k = 1;
  const zone = (v: number, v0: number, l: number): void => {
    if (v < v0 && v < l * (1 + SINGULAR_ZONE_FACTOR)) k = Math.min(k, Math.max(0, (v - l) / (l * SINGULAR_ZONE_FACTOR)));
  };
  zone(m.elbow, m0.elbow, lim.elbow);
  zone(m.wrist, m0.wrist, lim.wrist);
  zone(m.shoulderMm, m0.shoulderMm, lim.shoulderMm);
  return k;
}

/** True when q is within a singularity margin and closer to that singularity than `from`. */
function deeperIntoSingularity(q: Joints6, from: readonly number[]): boolean {
  const m = singularityMargins(q);
  const m0 = singularityMargins(from as unknown as Joints6);
  const lim = SIM_LIMITS.singularMargins;
  return (
    (m.elbow < lim.elbow && m.elbow < m0.elbow) ||
    (m.wrist < lim.wrist && m.wrist < m0.wrist) ||
    (m.shoulderMm < lim.shoulderMm && m.shoulderMm < m0.shoulderMm)
  );
}

function jointSpeedRatio(q: readonly number[], prev: readonly number[], dtS: number): number {
  let r = 0;
  for (let i = 0; i < 6; i++) r = Math.max(r, Math.abs(q[i]! - prev[i]!) / (JOINT_MAX_SPEED_RAD_PER_S[i]! * dtS));
  return r;
}

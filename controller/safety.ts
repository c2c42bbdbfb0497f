// The SafetySupervisor: the single gate every motion command passes on its way to a RobotDriver,
// and the watcher that stops the robot on its own when something goes wrong (ARCHITECTURE.md,
// "Safety"). It is transport-independent: sim, serial and ROS drivers all sit behind it.
//
// What it guarantees:
// - A refused command never reaches the driver. Every refusal is an Eco3dError with a stable code.
// - The e-stop always wins: it latches synchronously before anything can fail, it is never rate
//   limited, it is re-sent when the link returns, and only bedside staff can reset it.
// - Contact force above the limit ⇒ retract along the probe axis (away from the patient), then a
//   controlled stop; motion stays refused until the force is back under the limit and a new
//   command arrives.
// - Deadman: an operator-sourced motion without a fresh operator heartbeat ⇒ controlled stop.
// - Force sensor dropout during motion ⇒ controlled stop. Link down ⇒ motion refused.
// - Every driver call has a client-side timeout, so no promise here can hang forever.
import { BehaviorSubject, Subject, type Observable, type Subscription } from 'rxjs';
import { Eco3dError, toEco3dError, type ErrorCode } from '../protocols/errors.ts';
import { add, norm, quatNorm, quatNormalize, scale, sub, toolAxis } from '../protocols/geometry.ts';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  JOG_WATCHDOG_MS,
  JOINT_COUNT,
  type Joints6,
  type LinkStatus,
  type Pose,
  type Quat,
  type RobotCommand,
  type RobotCommandKind,
  type RobotDriver,
  type RobotFaultCode,
  type RobotState,
  type Vec3,
} from '../protocols/robot.ts';
import { DEFAULT_WORKSPACE, JOINT_LIMITS_RAD, type WorkspaceBox } from '../protocols/scene.ts';

// ---------------------------------------------------------------------------------------------
// Configuration

export interface JointLimitRad {
  readonly min: number;
  readonly max: number;
}

export interface SafetyConfig {
  /** Box the probe face (TCP) must stay in. */
  readonly workspace: WorkspaceBox;
  /** One entry per joint. */
  readonly jointLimitsRad: readonly JointLimitRad[];
  /** Linear TCP speed limit for jogs and Cartesian targets. */
  readonly maxSpeedMmPerS: number;
  readonly maxAngularSpeedRadPerS: number;
  /** Contact force (wrench.forceN.z, positive pressing) that trips the retract-and-stop. */
  readonly maxForceN: number;
  /** How far the probe backs off along its axis when the force limit trips. */
  readonly retractMm: number;
  /** Operator heartbeat age that stops an operator-sourced motion. */
  readonly deadmanTimeoutMs: number;
  /** Sustained motion-command rate (token bucket refill); stop/estop are never limited. */
  readonly maxCommandsPerS: number;
  /** Token bucket size: how many motion commands may arrive back to back. */
  readonly rateBurst: number;
  /**
   * How far ahead a jog is predicted for the workspace check. The robot keeps following a jog
   * for up to JOG_WATCHDOG_MS after the last command, then decelerates: cover both.
   */
  readonly jogHorizonMs: number;
  /** Speed of the force-limit retract (a Cartesian target). */
  readonly retractSpeedMmPerS: number;
  /**
   * Upper bound on a joint target's speedScale. Without a kinematic model the TCP speed of a
   * joint move cannot be checked, so joint moves are kept slow instead.
   */
  readonly maxJointSpeedScale: number;
  /** Default acknowledgement timeout passed to driver.send. */
  readonly commandTimeoutMs: number;
  /** Motion is refused when the last robot state is older than this (force is unsupervised). */
  readonly stateStaleMs: number;
  /**
   * Optional forward kinematics (joints → TCP pose in the base frame). When given, joint targets
   * are also checked against the workspace box; the driver layer or server wires it.
   */
  readonly forwardKinematics?: ((jointsRad: Joints6) => Pose) | undefined;
}

export const DEFAULT_SAFETY_CONFIG: SafetyConfig = {
  workspace: DEFAULT_WORKSPACE,
  jointLimitsRad: JOINT_LIMITS_RAD,
  maxSpeedMmPerS: 50,
  maxAngularSpeedRadPerS: 0.5,
  maxForceN: 20,
  retractMm: 10,
  deadmanTimeoutMs: 300,
  maxCommandsPerS: 100,
  rateBurst: 10,
  jogHorizonMs: JOG_WATCHDOG_MS + 50,
  retractSpeedMmPerS: 20,
  maxJointSpeedScale: 0.25,
  commandTimeoutMs: DEFAULT_COMMAND_TIMEOUT_MS,
  stateStaleMs: 500,
};

/** Any number beyond this magnitude is treated as garbage (mm, rad, mm/s, N alike). */
export const MAX_ABS_VALUE = 1e6;
/** A quaternion whose norm is this close to 1 is normalised; further away it is refused. */
export const QUAT_NORM_TOLERANCE = 0.01;
/** Extra wait beyond the driver's own timeout before our client-side guard gives up. */
const DRIVER_TIMEOUT_GUARD_MS = 100;
/** Retract counts as arrived within this distance of its target. */
const RETRACT_ARRIVAL_MM = 1;

export function resolveSafetyConfig(partial?: Partial<SafetyConfig>): SafetyConfig {
  const c: SafetyConfig = { ...DEFAULT_SAFETY_CONFIG, ...partial };
  const positive: (keyof SafetyConfig)[] = [
    'maxSpeedMmPerS',
    'maxAngularSpeedRadPerS',
    'maxForceN',
    'retractMm',
    'deadmanTimeoutMs',
    'maxCommandsPerS',
    'rateBurst',
    'jogHorizonMs',
    'retractSpeedMmPerS',
    'maxJointSpeedScale',
    'commandTimeoutMs',
    'stateStaleMs',
  ];
  for (const k of positive) {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `safety config ${k} must be a positive finite number`);
    }
  }
  const { minMm, maxMm } = c.workspace;
  for (const a of ['x', 'y', 'z'] as const) {
    if (!Number.isFinite(minMm[a]) || !Number.isFinite(maxMm[a]) || minMm[a] >= maxMm[a]) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `safety config workspace ${a}: min must be below max`);
    }
  }
  if (c.jointLimitsRad.length !== JOINT_COUNT) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `safety config jointLimitsRad needs ${JOINT_COUNT} entries`);
  }
  if (c.retractSpeedMmPerS > c.maxSpeedMmPerS) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', 'safety config retractSpeedMmPerS exceeds maxSpeedMmPerS');
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Public types

export type CommandRole = 'operator' | 'bedside' | 'system';

export interface CommandSource {
  readonly role: CommandRole;
  /** Account id, or a component name for role `system`. */
  readonly actor: string;
}

/** The supervisor's own commands (retract, deadman stop, e-stop re-send) carry this source. */
export const SAFETY_SOURCE: CommandSource = Object.freeze({ role: 'system', actor: 'safety' });

export type ProblemSeverity = 'info' | 'warning' | 'error';

/** What the console and bedside panel must see (HOUSE-STYLE.md point 6): state, not exceptions. */
export interface Problem {
  /** Stable key: `estop`, `link-lost`, `force-limit`, `deadman`, `sensor-dropout`, `fault:<code>`, ... */
  readonly id: string;
  readonly severity: ProblemSeverity;
  readonly code?: ErrorCode;
  readonly message: string;
  /** Supervisor clock (ms) when the problem was first raised. */
  readonly sinceMs: number;
}

export interface SafetyStatus {
  readonly estopLatched: boolean;
  /** Actor who latched the e-stop (`robot` when the robot reported it by itself). */
  readonly estopBy?: string;
  readonly linkUp: boolean;
  /** Latest contact force along the probe axis; null while the sensor is not reporting. */
  readonly forceN: number | null;
  readonly deadmanArmed: boolean;
  /** Whether a new motion command would pass the state gates (limits still apply). */
  readonly motionAllowed: boolean;
  readonly problems: readonly Problem[];
  /** Last measured deadman latency: last heartbeat → stop command handed to the driver. */
  readonly lastDeadmanLatencyMs?: number;
}

export type SafetyEvent =
  | {
      readonly type: 'refused';
      readonly atMs: number;
      readonly kind: string;
      readonly code: ErrorCode;
      readonly message: string;
      readonly source: CommandSource;
    }
  | { readonly type: 'estop'; readonly atMs: number; readonly by: string; readonly role: CommandRole | 'robot' }
  | { readonly type: 'estop-reset'; readonly atMs: number; readonly by: string }
  | { readonly type: 'stop'; readonly atMs: number; readonly source: CommandSource; readonly reason: string }
  | {
      readonly type: 'force-limit';
      readonly atMs: number;
      readonly forceN: number;
      readonly limitN: number;
      /** Null when no retract could be commanded (e-stop latched, link down, no pose). */
      readonly retractTargetMm: Vec3 | null;
    }
  | { readonly type: 'retract-done'; readonly atMs: number; readonly outcome: 'arrived' | 'timeout' | 'failed' }
  | {
      readonly type: 'deadman-stop';
      readonly atMs: number;
      readonly actor: string;
      readonly lastHeartbeatAtMs: number;
      readonly stopSentAtMs: number;
      /** stopSentAtMs − lastHeartbeatAtMs: the figure the deadman bench reports. */
      readonly latencyMs: number;
      readonly timeoutMs: number;
    }
  | { readonly type: 'sensor-dropout'; readonly atMs: number; readonly stopped: boolean }
  | { readonly type: 'link'; readonly atMs: number; readonly up: boolean; readonly reason: string }
  | { readonly type: 'faults'; readonly atMs: number; readonly faults: readonly RobotFaultCode[] }
  | {
      /** A command the supervisor sent on its own (stop, retract, estop re-send) failed. */
      readonly type: 'send-failed';
      readonly atMs: number;
      readonly kind: RobotCommandKind;
      readonly code: ErrorCode;
      readonly message: string;
    };

export interface SafetySupervisorOptions {
  /** Monotonic clock in ms. Default: performance.timeOrigin + performance.now() (epoch-aligned). */
  readonly now?: () => number;
  /** Called for every SafetyEvent; an exception thrown here never breaks the supervisor. */
  readonly onEvent?: (e: SafetyEvent) => void;
}

export type MotionCommand = Extract<RobotCommand, { kind: 'joint-target' | 'cartesian-target' | 'jog' }>;

// ---------------------------------------------------------------------------------------------
// Helpers

/** Rejects with ECO3D_ERR_TIMEOUT if `p` has not settled after `ms`; always clears its timer. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `${what}: no answer within ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(toEco3dError(err));
      },
    );
  });
}

const isSane = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= MAX_ABS_VALUE;

function requireSaneNumber(what: string, v: unknown): number {
  if (!isSane(v)) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${what} must be a finite number within ±${MAX_ABS_VALUE}`, {
      details: { field: what },
    });
  }
  return v;
}

function requireSaneVec3(what: string, v: unknown): Vec3 {
  if (typeof v !== 'object' || v === null) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${what} must be a vector {x, y, z}`, { details: { field: what } });
  }
  const o = v as Record<string, unknown>;
  return {
    x: requireSaneNumber(`${what}.x`, o['x']),
    y: requireSaneNumber(`${what}.y`, o['y']),
    z: requireSaneNumber(`${what}.z`, o['z']),
  };
}

/** Normalises a nearly-unit quaternion; refuses garbage (NaN, zero, far from unit). */
export function requireUnitQuat(what: string, v: unknown): Quat {
  if (typeof v !== 'object' || v === null) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${what} must be a quaternion {x, y, z, w}`, { details: { field: what } });
  }
  const o = v as Record<string, unknown>;
  const q: Quat = {
    x: requireSaneNumber(`${what}.x`, o['x']),
    y: requireSaneNumber(`${what}.y`, o['y']),
    z: requireSaneNumber(`${what}.z`, o['z']),
    w: requireSaneNumber(`${what}.w`, o['w']),
  };
  const n = quatNorm(q);
  if (Math.abs(n - 1) > QUAT_NORM_TOLERANCE) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${what} is not a unit quaternion (norm ${n.toPrecision(4)})`, {
      details: { field: what, norm: n },
    });
  }
  return quatNormalize(q);
}

export function insideBox(p: Vec3, box: WorkspaceBox): boolean {
  return (
    p.x >= box.minMm.x && p.x <= box.maxMm.x && p.y >= box.minMm.y && p.y <= box.maxMm.y && p.z >= box.minMm.z && p.z <= box.maxMm.z
  );
}

export function clampToBox(p: Vec3, box: WorkspaceBox): Vec3 {
  const c = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));
  return { x: c(p.x, box.minMm.x, box.maxMm.x), y: c(p.y, box.minMm.y, box.maxMm.y), z: c(p.z, box.minMm.z, box.maxMm.z) };
}

const fmt = (v: number): string => v.toFixed(1);

/**
 * The static checks on one motion command: finite numbers, unit quaternion, speed limits,
 * workspace box (a jog is predicted `jogHorizonMs` ahead from the current pose) and joint limits.
 * Pure: returns the command to send (quaternion normalised) or throws an Eco3dError.
 * `currentPose` is required for jogs.
 */
export function checkMotionCommand(cmd: MotionCommand, config: SafetyConfig, currentPose: Pose | null): MotionCommand {
  const speedSlack = 1 + 1e-9; // floating-point noise from norms of clamped vectors
  switch (cmd.kind) {
    case 'jog': {
      const v = requireSaneVec3('linearMmPerS', cmd.linearMmPerS);
      const w = requireSaneVec3('angularRadPerS', cmd.angularRadPerS);
      const speedMmPerS = norm(v);
      if (speedMmPerS > config.maxSpeedMmPerS * speedSlack) {
        throw new Eco3dError('ECO3D_ERR_SPEED_LIMIT', `jog speed ${fmt(speedMmPerS)} mm/s exceeds ${config.maxSpeedMmPerS} mm/s`);
      }
      const angularRadPerS = norm(w);
      if (angularRadPerS > config.maxAngularSpeedRadPerS * speedSlack) {
        throw new Eco3dError(
          'ECO3D_ERR_SPEED_LIMIT',
          `jog angular speed ${angularRadPerS.toFixed(3)} rad/s exceeds ${config.maxAngularSpeedRadPerS} rad/s`,
        );
      }
      if (currentPose === null) {
        throw new Eco3dError('ECO3D_ERR_LINK_LOST', 'no robot pose yet: cannot check the jog against the workspace');
      }
      // Refuse only a jog that would carry the TCP out (or further out) of the box, so that a
      // robot resting on a face of the box can still be jogged back in.
      const p = currentPose.positionMm;
      const predicted = add(p, scale(v, config.jogHorizonMs / 1000));
      const { minMm, maxMm } = config.workspace;
      for (const a of ['x', 'y', 'z'] as const) {
        if ((predicted[a] < minMm[a] && v[a] < 0) || (predicted[a] > maxMm[a] && v[a] > 0)) {
          throw new Eco3dError(
            'ECO3D_ERR_WORKSPACE',
            `jog would leave the workspace along ${a} within ${config.jogHorizonMs} ms (at ${fmt(predicted[a])} mm)`,
            { details: { axis: a, predictedMm: predicted[a] } },
          );
        }
      }
      return { kind: 'jog', linearMmPerS: v, angularRadPerS: w };
    }
    case 'cartesian-target': {
      const pose = cmd.pose as unknown;
      if (typeof pose !== 'object' || pose === null) {
        throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'pose must be {positionMm, orientation}');
      }
      const positionMm = requireSaneVec3('pose.positionMm', (pose as Record<string, unknown>)['positionMm']);
      const orientation = requireUnitQuat('pose.orientation', (pose as Record<string, unknown>)['orientation']);
      const speedMmPerS = requireSaneNumber('speedMmPerS', cmd.speedMmPerS);
      if (speedMmPerS <= 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'speedMmPerS must be positive');
      if (speedMmPerS > config.maxSpeedMmPerS * speedSlack) {
        throw new Eco3dError('ECO3D_ERR_SPEED_LIMIT', `speed ${fmt(speedMmPerS)} mm/s exceeds ${config.maxSpeedMmPerS} mm/s`);
      }
      if (!insideBox(positionMm, config.workspace)) {
        throw new Eco3dError(
          'ECO3D_ERR_WORKSPACE',
          `target (${fmt(positionMm.x)}, ${fmt(positionMm.y)}, ${fmt(positionMm.z)}) mm is outside the workspace box`,
          { details: { targetMm: positionMm } },
        );
      }
      return { kind: 'cartesian-target', pose: { positionMm, orientation }, speedMmPerS };
    }
    case 'joint-target': {
      const j = cmd.jointsRad as unknown;
      if (!Array.isArray(j) || j.length !== JOINT_COUNT) {
        throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `jointsRad must have ${JOINT_COUNT} entries`);
      }
      const jointsRad = j.map((v: unknown, i) => requireSaneNumber(`jointsRad[${i}]`, v)) as unknown as Joints6;
      jointsRad.forEach((v, i) => {
        const lim = config.jointLimitsRad[i]!;
        if (v < lim.min || v > lim.max) {
          throw new Eco3dError('ECO3D_ERR_JOINT_LIMIT', `joint ${i} target ${v.toFixed(3)} rad is outside [${lim.min.toFixed(3)}, ${lim.max.toFixed(3)}]`, {
            details: { joint: i },
          });
        }
      });
      const speedScale = requireSaneNumber('speedScale', cmd.speedScale);
      if (speedScale <= 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'speedScale must be positive');
      if (speedScale > config.maxJointSpeedScale) {
        throw new Eco3dError('ECO3D_ERR_SPEED_LIMIT', `speedScale ${speedScale} exceeds ${config.maxJointSpeedScale}`);
      }
      if (config.forwardKinematics !== undefined) {
        const tcp = config.forwardKinematics(jointsRad).positionMm;
        if (!insideBox(tcp, config.workspace)) {
          throw new Eco3dError('ECO3D_ERR_WORKSPACE', 'joint target puts the probe outside the workspace box', { details: { targetMm: tcp } });
        }
      }
      return { kind: 'joint-target', jointsRad, speedScale };
    }
    default: {
      const never: never = cmd;
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `unknown motion command ${String((never as { kind?: unknown }).kind)}`);
    }
  }
}

/** Token bucket: `ratePerS` sustained, `burst` back to back. */
export class TokenBucket {
  private tokens: number;
  private lastMs: number;
  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.lastMs = nowMs;
  }
  take(nowMs: number): boolean {
    const elapsedMs = Math.max(0, nowMs - this.lastMs);
    this.lastMs = nowMs;
    this.tokens = Math.min(this.burst, this.tokens + (elapsedMs * this.ratePerS) / 1000);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** A one-shot timer on the supervisor's clock: re-arms itself if it fires early. */
class DeadlineTimer {
  private handle: ReturnType<typeof setTimeout> | null = null;
  constructor(
    private readonly now: () => number,
    private readonly dueAtMs: () => number | null,
    private readonly onDue: () => void,
  ) {}
  /**
   * Schedules only when no timer is pending. Use it when the deadline can only have moved later
   * (a heartbeat): the pending timer fires, sees it is early and re-arms, which spares a
   * clearTimeout/setTimeout pair per heartbeat.
   */
  ensure(): void {
    if (this.handle === null) this.reschedule();
  }
  /** Schedules for the current deadline; a null deadline clears. */
  reschedule(): void {
    this.clear();
    const due = this.dueAtMs();
    if (due === null) return;
    this.handle = setTimeout(() => this.fire(), Math.max(0, due - this.now()));
  }
  clear(): void {
    if (this.handle !== null) clearTimeout(this.handle);
    this.handle = null;
  }
  private fire(): void {
    this.handle = null;
    const due = this.dueAtMs();
    if (due === null) return;
    // Timers and our clock may disagree by a fraction of a millisecond: never fire early.
    if (this.now() < due) {
      this.reschedule();
      return;
    }
    this.onDue();
  }
}

const defaultNow = (): number => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// The supervisor

type EstopLatch = { readonly latched: false } | { readonly latched: true; readonly by: string; readonly atMs: number };

/**
 * Force guard: `ok` → (force over limit) → `retracting` → (arrived / timeout) → `tripped`
 * → (force back under the limit) → `under-limit` → (a new motion command) → `ok`.
 * From `under-limit`, force over the limit again trips again.
 */
type ForceGuard = 'ok' | 'retracting' | 'tripped' | 'under-limit';

type Deadman = { readonly armed: false } | { readonly armed: true; readonly actor: string };

export class SafetySupervisor {
  readonly config: SafetyConfig;
  private readonly driver: RobotDriver;
  private readonly now: () => number;
  private readonly onEvent: ((e: SafetyEvent) => void) | undefined;

  private readonly statusSubject: BehaviorSubject<SafetyStatus>;
  private readonly eventSubject = new Subject<SafetyEvent>();
  /** Latest status first (replayed to a new subscriber), then every change. */
  readonly status$: Observable<SafetyStatus>;
  /** Every SafetyEvent (the acquisition watches e-stop, force and deadman events here). */
  readonly events$: Observable<SafetyEvent>;

  private closed = false;
  private estopLatch: EstopLatch = { latched: false };
  /** Bumped at every latch, so a reset that raced a new e-stop never clears it. */
  private estopGeneration = 0;
  private linkUp = false;
  private lastState: RobotState | null = null;
  private lastStateAtMs = Number.NEGATIVE_INFINITY;
  private forceGuard: ForceGuard = 'ok';
  private retractTargetMm: Vec3 | null = null;
  private retractGeneration = 0;
  private deadman: Deadman = { armed: false };
  private readonly heartbeatsMs = new Map<string, number>();
  private lastOperatorMotionAtMs = Number.NEGATIVE_INFINITY;
  private lastMotionSentAtMs = Number.NEGATIVE_INFINITY;
  private lastDeadmanLatencyMs: number | undefined;
  private dropoutStopSent = false;
  private motionActiveAtLinkLoss = false;
  /** Set by latchEstop, emitted once the e-stop has been handed to the driver. */
  private pendingEstopEvent: { by: string; role: CommandRole | 'robot' } | null = null;
  private readonly bucket: TokenBucket;
  private readonly problems = new Map<string, Problem>();
  private readonly subscriptions: Subscription[] = [];
  private readonly deadmanTimer: DeadlineTimer;
  private readonly retractTimer: DeadlineTimer;
  private retractDeadlineMs: number | null = null;
  /** stop() calls that arrived during a retract: settled by the stop that ends the retract. */
  private readonly retractWaiters: { resolve: () => void; reject: (err: Eco3dError) => void }[] = [];

  constructor(driver: RobotDriver, config?: Partial<SafetyConfig>, opts?: SafetySupervisorOptions) {
    this.driver = driver;
    this.config = resolveSafetyConfig(config);
    this.now = opts?.now ?? defaultNow;
    this.onEvent = opts?.onEvent;
    this.bucket = new TokenBucket(this.config.maxCommandsPerS, this.config.rateBurst, this.now());
    this.statusSubject = new BehaviorSubject<SafetyStatus>(this.computeStatus());
    this.status$ = this.statusSubject.asObservable();
    this.events$ = this.eventSubject.asObservable();
    this.deadmanTimer = new DeadlineTimer(this.now, () => this.deadmanDueAtMs(), () => this.onDeadmanDue());
    this.retractTimer = new DeadlineTimer(this.now, () => this.retractDeadlineMs, () => this.finishRetract('timeout'));
    // link$ first: a driver that replays "down" must leave motion refused from the start.
    this.subscriptions.push(
      driver.link$.subscribe({ next: (l) => this.onLink(l), error: (err: unknown) => this.onStreamError('link$', err) }),
      driver.state$.subscribe({ next: (s) => this.onState(s), error: (err: unknown) => this.onStreamError('state$', err) }),
    );
  }

  // --- commands ------------------------------------------------------------------------------

  /**
   * Validates a command and sends it. Resolves on the robot's acknowledgement; rejects with an
   * Eco3dError carrying a stable code. A refused command never reaches the driver.
   * `stop`, `estop` and `reset` are routed to stop(), estop() and resetEstop().
   */
  async command(cmd: RobotCommand, source: CommandSource, timeoutMs?: number): Promise<void> {
    const kind = (cmd as { kind?: unknown }).kind;
    switch (kind) {
      case 'stop':
        return this.stop(source, 'stop command');
      case 'estop':
        return this.estop(source);
      case 'reset':
        return this.resetEstop(source);
      case 'jog':
      case 'cartesian-target':
      case 'joint-target':
        break;
      default:
        throw this.refuse(String(kind), source, new Eco3dError('ECO3D_ERR_BAD_REQUEST', `unknown command kind ${String(kind)}`));
    }
    const motion = cmd as MotionCommand;
    // admit() is synchronous: no event can slip between the checks and the send.
    const checked = this.admit(motion, source);
    const t = this.now();
    this.lastMotionSentAtMs = t;
    if (source.role === 'operator') {
      this.lastOperatorMotionAtMs = t;
      if (!this.deadman.armed || this.deadman.actor !== source.actor) {
        this.deadman = { armed: true, actor: source.actor };
        this.deadmanTimer.reschedule();
        this.publish();
      } else {
        this.deadmanTimer.ensure();
      }
    }
    await this.sendToDriver(checked, timeoutMs ?? this.config.commandTimeoutMs);
  }

  /** Operator heartbeat feeding the deadman. Cheap: call it for every operator message. */
  heartbeat(source: CommandSource): void {
    if (this.closed || typeof source.actor !== 'string' || source.actor === '') return;
    this.heartbeatsMs.set(source.actor, this.now());
    if (this.deadman.armed && this.deadman.actor === source.actor) this.deadmanTimer.ensure();
    if (this.problems.has('deadman')) this.clearProblem('deadman');
  }

  /**
   * Controlled stop. Always allowed: never rate limited, refused neither by e-stop nor by limits.
   * During a force-limit retract the stop is deferred to the end of the retract (which ends in a
   * stop anyway): stopping half-way would leave the probe pressed above the limit. The promise
   * then resolves when that stop has been acknowledged.
   */
  async stop(source: CommandSource, reason: string): Promise<void> {
    if (this.forceGuard === 'retracting') {
      this.disarmDeadman();
      this.emit({ type: 'stop', atMs: this.now(), source, reason: `${reason} (after the force-limit retract)` });
      return new Promise<void>((resolve, reject) => this.retractWaiters.push({ resolve, reject }));
    }
    const sent = this.sendToDriver({ kind: 'stop' }, this.config.commandTimeoutMs);
    this.disarmDeadman();
    this.emit({ type: 'stop', atMs: this.now(), source, reason });
    await sent;
  }

  /**
   * Emergency stop. Latches first, synchronously, then sends. The latch holds even when the send
   * fails or the link is down (the e-stop is re-sent when the link returns); the returned promise
   * rejects in that case so the caller knows the robot did not acknowledge.
   */
  estop(source: CommandSource): Promise<void> {
    this.latchEstop(source.actor, source.role);
    return this.sendEstop();
  }

  /** Resets the e-stop latch (and robot faults). Bedside staff only. */
  async resetEstop(source: CommandSource): Promise<void> {
    if (this.closed) throw this.refuse('reset', source, new Eco3dError('ECO3D_ERR_CLOSED', 'the safety supervisor is closed'));
    if (source.role !== 'bedside') {
      throw this.refuse('reset', source, new Eco3dError('ECO3D_ERR_FORBIDDEN', 'only bedside staff can reset the e-stop'));
    }
    if (!this.linkUp) {
      throw this.refuse('reset', source, new Eco3dError('ECO3D_ERR_LINK_LOST', 'the link to the robot is down: the e-stop stays latched'));
    }
    const generation = this.estopGeneration;
    await this.sendToDriver({ kind: 'reset' }, this.config.commandTimeoutMs);
    // An e-stop pressed while the reset was in flight must stay latched.
    if (this.estopLatch.latched && generation === this.estopGeneration) {
      this.estopLatch = { latched: false };
      this.clearProblem('estop');
      this.clearProblem('estop-unconfirmed');
      this.emit({ type: 'estop-reset', atMs: this.now(), by: source.actor });
    }
  }

  /** Idempotent. Stops the supervisor's timers and subscriptions; later commands get ECO3D_ERR_CLOSED. */
  close(): void {
    if (this.closed) return;
    const wasMoving = this.motionActive();
    this.closed = true;
    this.deadmanTimer.clear();
    this.retractTimer.clear();
    for (const w of this.retractWaiters.splice(0)) w.reject(new Eco3dError('ECO3D_ERR_CLOSED', 'the safety supervisor closed during a retract'));
    for (const s of this.subscriptions) s.unsubscribe();
    this.subscriptions.length = 0;
    if (wasMoving && this.linkUp) {
      // Leave the robot stopped rather than finishing a Cartesian move nobody supervises.
      void this.sendToDriver({ kind: 'stop' }, this.config.commandTimeoutMs).catch((err: unknown) => this.reportSendFailure('stop', err));
    }
    this.publish();
    this.statusSubject.complete();
    this.eventSubject.complete();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The latest status, synchronously (same value status$ replays). */
  get status(): SafetyStatus {
    return this.statusSubject.getValue();
  }

  // --- admission -----------------------------------------------------------------------------

  private admit(cmd: MotionCommand, source: CommandSource): MotionCommand {
    const refuse = (code: ErrorCode, message: string): Eco3dError => this.refuse(cmd.kind, source, new Eco3dError(code, message));
    if (this.closed) throw refuse('ECO3D_ERR_CLOSED', 'the safety supervisor is closed');
    if (this.estopLatch.latched) {
      throw refuse('ECO3D_ERR_ESTOP_LATCHED', `the e-stop is latched (by ${this.estopLatch.by}); only bedside staff can reset it`);
    }
    if (!this.linkUp) throw refuse('ECO3D_ERR_LINK_LOST', 'the link to the robot is down');
    const state = this.lastState;
    const nowMs = this.now();
    if (state === null) throw refuse('ECO3D_ERR_LINK_LOST', 'no state report from the robot yet');
    if (nowMs - this.lastStateAtMs > this.config.stateStaleMs) {
      throw refuse('ECO3D_ERR_LINK_LOST', `no state report from the robot for ${Math.round(nowMs - this.lastStateAtMs)} ms`);
    }
    if (!this.bucket.take(nowMs)) {
      throw refuse('ECO3D_ERR_RATE_LIMITED', `more than ${this.config.maxCommandsPerS} motion commands per second`);
    }
    if (state.faults.length > 0) throw refuse('ECO3D_ERR_ROBOT_FAULT', `the robot reports ${state.faults.join(', ')}`);
    if (state.mode === 'estopped') throw refuse('ECO3D_ERR_ESTOP_LATCHED', 'the robot reports an e-stop');
    if (state.wrench === null) throw refuse('ECO3D_ERR_ROBOT_FAULT', 'the force sensor is not reporting: contact force is unsupervised');
    switch (this.forceGuard) {
      case 'ok':
        break;
      case 'retracting':
      case 'tripped':
        throw refuse('ECO3D_ERR_FORCE_LIMIT', `contact force tripped the ${this.config.maxForceN} N limit: retracting, motion refused`);
      case 'under-limit':
        break; // cleared below, once the command has passed every check
    }
    if (source.role === 'operator') {
      const hb = this.heartbeatsMs.get(source.actor);
      if (hb === undefined || nowMs - hb > this.config.deadmanTimeoutMs) {
        throw refuse('ECO3D_ERR_DEADMAN', `no operator heartbeat from ${source.actor} in the last ${this.config.deadmanTimeoutMs} ms`);
      }
    }
    let checked: MotionCommand;
    try {
      checked = checkMotionCommand(cmd, this.config, state.tcpPose);
    } catch (err) {
      throw this.refuse(cmd.kind, source, toEco3dError(err));
    }
    if (this.forceGuard === 'under-limit') {
      // Force is back under the limit and a new command arrived: motion may resume.
      this.forceGuard = 'ok';
      this.clearProblem('force-limit');
    }
    return checked;
  }

  private refuse(kind: string, source: CommandSource, err: Eco3dError): Eco3dError {
    this.emit({ type: 'refused', atMs: this.now(), kind, code: err.code, message: err.message, source });
    return err;
  }

  // --- driver I/O ------------------------------------------------------------------------------

  /** Every driver call goes through here: the driver's own timeout plus a client-side guard. */
  private sendToDriver(cmd: RobotCommand, timeoutMs: number): Promise<void> {
    let p: Promise<void>;
    try {
      p = this.driver.send(cmd, timeoutMs);
    } catch (err) {
      // A driver that throws synchronously must not escape as an exception from a timer callback.
      p = Promise.reject(toEco3dError(err));
    }
    return withTimeout(p, timeoutMs + DRIVER_TIMEOUT_GUARD_MS, `robot ${cmd.kind}`);
  }

  private reportSendFailure(kind: RobotCommandKind, err: unknown): void {
    const e = toEco3dError(err);
    // Reported even after close(): onEvent still hears it (status$ and events$ are complete).
    this.emit({ type: 'send-failed', atMs: this.now(), kind, code: e.code, message: e.message });
    this.raiseProblem(`send-failed:${kind}`, 'error', e.code, `the robot did not take the safety ${kind}: ${e.message}`);
  }

  /**
   * A controlled stop initiated by the supervisor itself; failures become problems. Returns the
   * send (already handled: callers may ignore it).
   */
  private safetyStop(reason: string): Promise<void> {
    const sent = this.sendToDriver({ kind: 'stop' }, this.config.commandTimeoutMs);
    this.disarmDeadman();
    this.emit({ type: 'stop', atMs: this.now(), source: SAFETY_SOURCE, reason });
    void sent.then(
      () => this.clearProblem('send-failed:stop'),
      (err: unknown) => this.reportSendFailure('stop', err),
    );
    return sent;
  }

  // --- e-stop --------------------------------------------------------------------------------

  private latchEstop(by: string, role: CommandRole | 'robot'): void {
    this.estopGeneration++;
    if (!this.estopLatch.latched) this.estopLatch = { latched: true, by, atMs: this.now() };
    this.disarmDeadman();
    // No retract under an e-stop: the brakes are on.
    if (this.forceGuard === 'retracting') this.abandonRetract(null);
    this.raiseProblem('estop', 'error', 'ECO3D_ERR_ESTOP_LATCHED', `e-stop latched by ${this.estopLatch.by}`);
    this.pendingEstopEvent = { by, role };
  }

  private sendEstop(): Promise<void> {
    // The send is started before any listener runs, so no listener can delay the e-stop.
    const sent = this.sendToDriver({ kind: 'estop' }, this.config.commandTimeoutMs);
    const ev = this.pendingEstopEvent;
    this.pendingEstopEvent = null;
    if (ev !== null) this.emit({ type: 'estop', atMs: this.now(), by: ev.by, role: ev.role });
    return sent.then(
      () => this.clearProblem('estop-unconfirmed'),
      (err: unknown) => {
        const e = toEco3dError(err);
        // The latch holds; the e-stop is re-sent when the link comes back.
        this.raiseProblem('estop-unconfirmed', 'error', e.code, `the robot has not acknowledged the e-stop: ${e.message}`);
        throw e;
      },
    );
  }

  // --- deadman -------------------------------------------------------------------------------

  private deadmanDueAtMs(): number | null {
    if (!this.deadman.armed || this.closed) return null;
    const hb = this.heartbeatsMs.get(this.deadman.actor) ?? Number.NEGATIVE_INFINITY;
    // A missing heartbeat means "due now" (admit() refuses that case, but be safe).
    return Number.isFinite(hb) ? hb + this.config.deadmanTimeoutMs : this.now();
  }

  private onDeadmanDue(): void {
    if (!this.deadman.armed) return;
    const actor = this.deadman.actor;
    const lastHeartbeatAtMs = this.heartbeatsMs.get(actor) ?? Number.NEGATIVE_INFINITY;
    this.deadman = { armed: false };
    const stopSentAtMs = this.now();
    // Hand the stop to the driver before anything else (events, problems) runs.
    const sent = this.sendToDriver({ kind: 'stop' }, this.config.commandTimeoutMs);
    const latencyMs = stopSentAtMs - lastHeartbeatAtMs;
    this.lastDeadmanLatencyMs = latencyMs;
    this.raiseProblem(
      'deadman',
      'warning',
      'ECO3D_ERR_DEADMAN',
      `no heartbeat from operator ${actor} for ${Math.round(latencyMs)} ms: controlled stop`,
    );
    this.emit({ type: 'deadman-stop', atMs: stopSentAtMs, actor, lastHeartbeatAtMs, stopSentAtMs, latencyMs, timeoutMs: this.config.deadmanTimeoutMs });
    this.emit({ type: 'stop', atMs: stopSentAtMs, source: SAFETY_SOURCE, reason: 'deadman' });
    void sent.then(
      () => this.clearProblem('send-failed:stop'),
      (err: unknown) => this.reportSendFailure('stop', err),
    );
  }

  private disarmDeadman(): void {
    if (!this.deadman.armed) return;
    this.deadman = { armed: false };
    this.deadmanTimer.clear();
    this.publish();
  }

  // --- force guard ---------------------------------------------------------------------------

  private tripForceLimit(state: RobotState, forceN: number): void {
    this.disarmDeadman();
    const canRetract = !this.estopLatch.latched && this.linkUp && state.mode !== 'estopped';
    const axis = toolAxis(state.tcpPose);
    // Back along the probe axis: the tool z axis points into the patient.
    const target = canRetract ? clampToBox(sub(state.tcpPose.positionMm, scale(axis, this.config.retractMm)), this.config.workspace) : null;
    this.raiseProblem(
      'force-limit',
      'error',
      'ECO3D_ERR_FORCE_LIMIT',
      `contact force ${forceN.toFixed(1)} N above the ${this.config.maxForceN} N limit: probe retracted and stopped`,
    );
    if (target === null) {
      this.forceGuard = 'tripped';
      this.emit({ type: 'force-limit', atMs: this.now(), forceN, limitN: this.config.maxForceN, retractTargetMm: null });
      void this.safetyStop('force limit');
      return;
    }
    this.forceGuard = 'retracting';
    this.retractTargetMm = target;
    const generation = ++this.retractGeneration;
    const retract: RobotCommand = {
      kind: 'cartesian-target',
      pose: { positionMm: target, orientation: state.tcpPose.orientation },
      speedMmPerS: this.config.retractSpeedMmPerS,
    };
    const sent = this.sendToDriver(retract, this.config.commandTimeoutMs);
    // Time to travel retractMm, plus a second for acceleration and state latency.
    this.retractDeadlineMs = this.now() + (this.config.retractMm / this.config.retractSpeedMmPerS) * 1000 + 1000;
    this.retractTimer.reschedule();
    this.emit({ type: 'force-limit', atMs: this.now(), forceN, limitN: this.config.maxForceN, retractTargetMm: target });
    void sent.then(
      () => undefined,
      (err: unknown) => {
        this.reportSendFailure('cartesian-target', err);
        // The retract did not go out: stop right away instead of waiting for the timeout.
        if (this.forceGuard === 'retracting' && generation === this.retractGeneration) this.finishRetract('failed');
      },
    );
  }

  private finishRetract(outcome: 'arrived' | 'timeout' | 'failed'): void {
    if (this.forceGuard !== 'retracting') return;
    this.retractTimer.clear();
    this.retractDeadlineMs = null;
    this.retractTargetMm = null;
    this.forceGuard = 'tripped';
    this.emit({ type: 'retract-done', atMs: this.now(), outcome });
    const stopped = this.safetyStop(`force limit: retract ${outcome}`);
    const waiters = this.retractWaiters.splice(0);
    void stopped.then(
      () => waiters.forEach((w) => w.resolve()),
      (err: unknown) => waiters.forEach((w) => w.reject(toEco3dError(err))),
    );
  }

  /** The retract cannot go on: e-stop (the robot is halted: waiters resolve) or link loss (reject). */
  private abandonRetract(failure: Eco3dError | null): void {
    this.retractTimer.clear();
    this.retractDeadlineMs = null;
    this.retractTargetMm = null;
    this.retractGeneration++;
    this.forceGuard = 'tripped';
    for (const w of this.retractWaiters.splice(0)) {
      if (failure === null) w.resolve();
      else w.reject(failure);
    }
  }

  // --- watching the driver ------------------------------------------------------------------

  private motionActive(): boolean {
    const mode = this.lastState?.mode;
    return mode === 'moving' || mode === 'jogging' || this.now() - this.lastMotionSentAtMs < JOG_WATCHDOG_MS;
  }

  private onLink(l: LinkStatus): void {
    if (this.closed) return;
    const wasUp = this.linkUp;
    this.linkUp = l.up;
    if (wasUp === l.up) return;
    this.emit({ type: 'link', atMs: this.now(), up: l.up, reason: l.reason });
    if (!l.up) {
      this.motionActiveAtLinkLoss = this.motionActive();
      this.raiseProblem('link-lost', 'error', 'ECO3D_ERR_LINK_LOST', `link to the robot is down: ${l.reason}`);
      // A retract cannot be delivered now; motion stays refused until a fresh command after reset.
      if (this.forceGuard === 'retracting') {
        this.abandonRetract(new Eco3dError('ECO3D_ERR_LINK_LOST', `link to the robot is down during the force-limit retract: ${l.reason}`));
      }
      this.disarmDeadman();
      return;
    }
    this.clearProblem('link-lost');
    if (this.estopLatch.latched) {
      // The e-stop always wins: repeat it as soon as the robot can hear it.
      void this.sendEstop().catch(() => undefined /* already a problem: estop-unconfirmed */);
    } else if (this.motionActiveAtLinkLoss) {
      void this.safetyStop('link restored after a loss during motion');
    }
    this.motionActiveAtLinkLoss = false;
  }

  private onState(s: RobotState): void {
    if (this.closed) return;
    const prev = this.lastState;
    this.lastState = s;
    this.lastStateAtMs = this.now();

    // The robot's own e-stop (a hardware button) latches ours too.
    if (s.mode === 'estopped' && prev?.mode !== 'estopped' && !this.estopLatch.latched) {
      this.latchEstop('robot', 'robot');
      const ev = this.pendingEstopEvent;
      this.pendingEstopEvent = null;
      if (ev !== null) this.emit({ type: 'estop', atMs: this.now(), by: ev.by, role: ev.role });
    }

    this.updateFaults(prev?.faults ?? [], s.faults);

    if (s.wrench === null) {
      const moving = this.motionActive();
      if (!this.dropoutStopSent) {
        this.raiseProblem('sensor-dropout', 'error', 'ECO3D_ERR_ROBOT_FAULT', 'the force/torque sensor stopped reporting');
        this.emit({ type: 'sensor-dropout', atMs: this.now(), stopped: moving });
        // A retract in progress is not interrupted: it moves away from the patient and ends in a stop.
        if (moving && this.forceGuard !== 'retracting') void this.safetyStop('force sensor dropout');
        this.dropoutStopSent = true;
      }
    } else {
      if (this.dropoutStopSent) {
        this.dropoutStopSent = false;
        this.clearProblem('sensor-dropout');
      }
      this.checkForce(s, s.wrench.forceN.z);
    }

    // Deadman disarms once the operator's motion is over: robot at rest and no operator command
    // for longer than the robot's own jog watchdog.
    if (
      this.deadman.armed &&
      (s.mode === 'idle' || s.mode === 'stopped' || s.mode === 'estopped' || s.mode === 'faulted') &&
      this.now() - this.lastOperatorMotionAtMs > JOG_WATCHDOG_MS + 50
    ) {
      this.disarmDeadman();
    }
    this.publish();
  }

  private checkForce(s: RobotState, forceN: number): void {
    const over = !Number.isFinite(forceN) || forceN > this.config.maxForceN;
    switch (this.forceGuard) {
      case 'ok':
      case 'under-limit':
        if (over) this.tripForceLimit(s, Number.isFinite(forceN) ? forceN : Number.NaN);
        return;
      case 'retracting': {
        const target = this.retractTargetMm;
        if (target !== null && norm(sub(s.tcpPose.positionMm, target)) <= RETRACT_ARRIVAL_MM) {
          this.finishRetract('arrived');
          if (!over) this.forceGuard = 'under-limit';
        }
        return;
      }
      case 'tripped':
        if (!over) this.forceGuard = 'under-limit';
        return;
    }
  }

  private updateFaults(prev: readonly RobotFaultCode[], next: readonly RobotFaultCode[]): void {
    const same = prev.length === next.length && prev.every((f) => next.includes(f));
    if (same) return;
    for (const f of prev) if (!next.includes(f)) this.clearProblem(`fault:${f}`);
    for (const f of next) this.raiseProblem(`fault:${f}`, 'error', 'ECO3D_ERR_ROBOT_FAULT', `robot fault: ${f}`);
    this.emit({ type: 'faults', atMs: this.now(), faults: next });
  }

  private onStreamError(which: string, err: unknown): void {
    const e = toEco3dError(err);
    this.raiseProblem(`driver-${which}`, 'error', e.code, `the driver's ${which} failed: ${e.message}`);
    if (which === 'link$') this.onLink({ up: false, atMs: Date.now(), reason: `link$ failed: ${e.message}` });
  }

  // --- problems, status, events --------------------------------------------------------------

  private raiseProblem(id: string, severity: ProblemSeverity, code: ErrorCode | undefined, message: string): void {
    const existing = this.problems.get(id);
    const p: Problem = { id, severity, message, sinceMs: existing?.sinceMs ?? this.now(), ...(code === undefined ? {} : { code }) };
    this.problems.set(id, p);
    this.publish();
  }

  private clearProblem(id: string): void {
    if (this.problems.delete(id)) this.publish();
  }

  private computeStatus(): SafetyStatus {
    const s = this.lastState;
    const forceN = s?.wrench?.forceN.z ?? null;
    const fresh = s !== null && this.now() - this.lastStateAtMs <= this.config.stateStaleMs;
    const motionAllowed =
      !this.closed &&
      !this.estopLatch.latched &&
      this.linkUp &&
      fresh &&
      s.wrench !== null &&
      s.faults.length === 0 &&
      s.mode !== 'estopped' &&
      (this.forceGuard === 'ok' || this.forceGuard === 'under-limit');
    return {
      estopLatched: this.estopLatch.latched,
      ...(this.estopLatch.latched ? { estopBy: this.estopLatch.by } : {}),
      linkUp: this.linkUp,
      forceN,
      deadmanArmed: this.deadman.armed,
      motionAllowed,
      problems: [...this.problems.values()],
      ...(this.lastDeadmanLatencyMs === undefined ? {} : { lastDeadmanLatencyMs: this.lastDeadmanLatencyMs }),
    };
  }

  private publish(): void {
    if (this.statusSubject.closed) return;
    this.statusSubject.next(this.computeStatus());
  }

  private emit(e: SafetyEvent): void {
    if (this.onEvent !== undefined) {
      try {
        this.onEvent(e);
      } catch {
        // A listener's exception never breaks the supervisor (HOUSE-STYLE.md point 7).
      }
    }
    if (!this.eventSubject.closed) this.eventSubject.next(e);
  }
}

// The robot as every layer sees it: state, commands and the driver interface.
//
// Frames and units (they are in the names on purpose):
// - The base frame has its origin at the robot base, z up, millimetres.
// - Orientation is a unit quaternion {x, y, z, w}, base ← tool.
// - The tool frame's z axis is the probe's axis, pointing out of the probe face into the patient.
// - Joint angles are radians, time is milliseconds on the robot's monotonic clock.
import type { Observable } from 'rxjs';

export interface Vec3 {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

export interface Quat {
  readonly x: number;
  readonly y: number;
  readonly z: number;
  readonly w: number;
}

/** The tool centre point (probe face centre) in the base frame. */
export interface Pose {
  readonly positionMm: Vec3;
  readonly orientation: Quat;
}

export const JOINT_COUNT = 6;
export type Joints6 = readonly [number, number, number, number, number, number];

/**
 * The force and torque the probe applies to what it touches, in the tool frame.
 * Pressing the probe into the skin gives a positive `forceN.z`.
 */
export interface Wrench {
  readonly forceN: Vec3;
  readonly torqueNm: Vec3;
}

/** The robot's own motion state, as its controller reports it. */
export type RobotMode =
  | 'idle' // powered, holding position, accepts commands
  | 'moving' // executing a joint or Cartesian target
  | 'jogging' // following a Cartesian velocity; stops by itself when jog commands stop coming
  | 'stopped' // after a controlled stop; accepts new commands
  | 'estopped' // latched emergency stop: brakes on, only `reset` leaves it
  | 'faulted'; // a fault is active; only `reset` leaves it once the cause is gone

export const ROBOT_MODES: readonly RobotMode[] = ['idle', 'moving', 'jogging', 'stopped', 'estopped', 'faulted'];

export type RobotFaultCode =
  | 'over-force' // contact force above the robot's own hard limit
  | 'joint-stuck' // a joint does not follow its command
  | 'sensor-dropout' // force/torque sensor stopped reporting
  | 'joint-limit' // a joint reached a position limit
  | 'unreachable' // a target has no inverse-kinematics solution
  | 'watchdog'; // the robot lost its host heartbeat

export const ROBOT_FAULT_CODES: readonly RobotFaultCode[] = [
  'over-force',
  'joint-stuck',
  'sensor-dropout',
  'joint-limit',
  'unreachable',
  'watchdog',
];

export interface RobotState {
  /** Robot clock, milliseconds, monotonic. */
  readonly tMs: number;
  /** Increments with every state report; a gap means reports were lost. */
  readonly seq: number;
  readonly mode: RobotMode;
  readonly jointsRad: Joints6;
  readonly jointVelRadPerS: Joints6;
  readonly tcpPose: Pose;
  /** Null while the force/torque sensor is not reporting. */
  readonly wrench: Wrench | null;
  readonly faults: readonly RobotFaultCode[];
}

/**
 * Motion commands. The robot acknowledges a command when it accepts it, not when the motion
 * ends; motion shows in `state$`.
 */
export type RobotCommand =
  | { readonly kind: 'joint-target'; readonly jointsRad: Joints6; readonly speedScale: number }
  | { readonly kind: 'cartesian-target'; readonly pose: Pose; readonly speedMmPerS: number }
  /**
   * Cartesian velocity in the base frame. The robot stops by itself `JOG_WATCHDOG_MS` after the
   * last jog command, so a lost host can never leave it jogging.
   */
  | { readonly kind: 'jog'; readonly linearMmPerS: Vec3; readonly angularRadPerS: Vec3 }
  | { readonly kind: 'stop' }
  | { readonly kind: 'estop' }
  | { readonly kind: 'reset' };

export type RobotCommandKind = RobotCommand['kind'];

/** The robot-side jog watchdog: a jog with no refresh for this long decelerates to a stop. */
export const JOG_WATCHDOG_MS = 250;

export interface LinkStatus {
  readonly up: boolean;
  /** Wall clock (Date.now()) of the change. */
  readonly atMs: number;
  /** Why the link went down (or came up), for the operator and the availability log. */
  readonly reason: string;
}

export interface DriverStats {
  readonly statesReceived: number;
  readonly commandsSent: number;
  readonly commandsFailed: number;
  /** Transport-level errors (bad frames, CRC, replays, malformed messages), by code. */
  readonly errors: Readonly<Record<string, number>>;
}

/** Default time a command waits for its acknowledgement. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 500;

/**
 * One robot, whatever the transport. Implementations: in-process simulator (`sim/`), serial and
 * ROS (`controller/`).
 *
 * Lifecycle: `connect()` once; `close()` is idempotent and rejects pending commands. When the
 * link drops, `link$` emits `up: false`, pending commands reject with ECO3D_ERR_LINK_LOST, and a
 * driver that can reconnect does so by itself and emits `up: true` again.
 */
export interface RobotDriver {
  readonly kind: 'sim' | 'serial' | 'ros';
  /** Latest state first (replays the last one to a new subscriber), then every report. */
  readonly state$: Observable<RobotState>;
  /** Replays the current link status, then every change. */
  readonly link$: Observable<LinkStatus>;
  connect(): Promise<void>;
  /** Resolves on acknowledgement; rejects with an Eco3dError (NACK, timeout, link lost, closed). */
  send(cmd: RobotCommand, timeoutMs?: number): Promise<void>;
  stats(): DriverStats;
  close(): Promise<void>;
}

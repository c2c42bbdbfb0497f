// The rosbridge v2 wire protocol and the ROS messages of our robot link. Pure types, schemas and
// converters; no I/O. Both sides use it: the simulator's rosbridge server (sim/) and the ROS
// driver (controller/).
//
// Spec: https://github.com/RobotWebTools/rosbridge_suite/blob/ros2/ROSBRIDGE_PROTOCOL.md
// (`status` and `set_level` come from the v2.0 spec of the ros1 branch, and roslib still speaks
// them). A message is a JSON object tagged on `op`; `unknown` comes in through
// `parseRosbridgeMessage`, a typed message or a typed error goes out.
//
// Units and frames at the ROS edge (REP 103): ROS speaks SI (metres, m/s, rad, rad/s, N, N·m);
// we speak millimetres everywhere else. Convert ONLY with the helpers below (`mToMm`, `mmToM`,
// `poseFromRos`, `poseToRos`, ...), so that the unit change sits in one reviewed place.
// - `base`: the robot base frame, z up. Poses and jog twists are expressed in it.
// - `probe`: the TCP at the probe face (tool z = probe axis). `/tcp_pose` is base ← probe and
//   `/wrench` is expressed in `probe`.
// - `tool0`: the UR flange, PROBE_LENGTH_MM behind `probe` along tool z. We never publish it; it
//   is named so that nobody mistakes the flange for the probe face.
// Stamps use the ROS 2 layout `{sec, nanosec}`; parsers also accept the ROS 1 `{secs, nsecs}`.
import { z } from 'zod';
import { isErrorCode, type ErrorCode } from './errors.ts';
import type { Joints6, Pose, RobotCommand, RobotFaultCode, RobotMode, Vec3, Wrench } from './robot.ts';
import { ROBOT_FAULT_CODES, ROBOT_MODES } from './robot.ts';

// ---------------------------------------------------------------------------------------------
// Names: topics, services, types, frames, joints

/** ROS 2 type names; `sameRosType` also accepts the ROS 1 spelling (`sensor_msgs/JointState`). */
export const ROS_TYPES = {
  header: 'std_msgs/msg/Header',
  string: 'std_msgs/msg/String',
  jointState: 'sensor_msgs/msg/JointState',
  poseStamped: 'geometry_msgs/msg/PoseStamped',
  wrenchStamped: 'geometry_msgs/msg/WrenchStamped',
  twistStamped: 'geometry_msgs/msg/TwistStamped',
  trigger: 'std_srvs/srv/Trigger',
  moveToPose: 'eco3d_msgs/srv/MoveToPose',
  moveToJoints: 'eco3d_msgs/srv/MoveToJoints',
} as const;

/** True when two ROS type names denote the same type (`pkg/Type` and `pkg/msg/Type` are equal). */
export function sameRosType(a: string, b: string): boolean {
  const norm = (t: string): string => t.replace(/\/(msg|srv|action)\//, '/');
  return norm(a) === norm(b);
}

export const ROS_FRAME_BASE = 'base';
export const ROS_FRAME_PROBE = 'probe';
export const ROS_FRAME_FLANGE = 'tool0';

/** UR-style joint names, in our `Joints6` order (base to wrist). */
export const UR_JOINT_NAMES = [
  'shoulder_pan_joint',
  'shoulder_lift_joint',
  'elbow_joint',
  'wrist_1_joint',
  'wrist_2_joint',
  'wrist_3_joint',
] as const;

/**
 * Topics the robot publishes (server → client). Rates are the simulator bridge's defaults;
 * `/joint_states` closes each sampling tick, so a client that combines topics can emit on it.
 */
export const ROS_TOPIC_JOINT_STATES = '/joint_states';
export const ROS_TOPIC_TCP_POSE = '/tcp_pose';
export const ROS_TOPIC_WRENCH = '/wrench';
export const ROS_TOPIC_ROBOT_MODE = '/robot_mode';
/** The one topic the robot subscribes to (client → server): Cartesian velocity, base frame. */
/** The ultrasound image topic (sensor_msgs/Image, mono8), published by a scanner or the simulator. */
export const ROS_TOPIC_US_IMAGE = '/us/image';
export const ROS_TYPE_IMAGE = 'sensor_msgs/msg/Image';
export const ROS_TOPIC_JOG = '/jog';

export const ROS_SERVICE_MOVE_TO_POSE = '/move_to_pose';
export const ROS_SERVICE_MOVE_TO_JOINTS = '/move_to_joints';
export const ROS_SERVICE_STOP = '/stop';
export const ROS_SERVICE_ESTOP = '/estop';
export const ROS_SERVICE_RESET = '/reset';

export type RosPublishedTopic =
  | typeof ROS_TOPIC_JOINT_STATES
  | typeof ROS_TOPIC_TCP_POSE
  | typeof ROS_TOPIC_WRENCH
  | typeof ROS_TOPIC_ROBOT_MODE;

/** Topic name → message type, for what the robot publishes. */
export const ROS_PUBLISHED_TOPICS: Readonly<Record<RosPublishedTopic, string>> = {
  [ROS_TOPIC_JOINT_STATES]: ROS_TYPES.jointState,
  [ROS_TOPIC_TCP_POSE]: ROS_TYPES.poseStamped,
  [ROS_TOPIC_WRENCH]: ROS_TYPES.wrenchStamped,
  [ROS_TOPIC_ROBOT_MODE]: ROS_TYPES.string,
};

export const isRosPublishedTopic = (topic: string): topic is RosPublishedTopic => Object.hasOwn(ROS_PUBLISHED_TOPICS, topic);

export type RosServiceName =
  | typeof ROS_SERVICE_MOVE_TO_POSE
  | typeof ROS_SERVICE_MOVE_TO_JOINTS
  | typeof ROS_SERVICE_STOP
  | typeof ROS_SERVICE_ESTOP
  | typeof ROS_SERVICE_RESET;

/** Service name → service type. */
export const ROS_SERVICES: Readonly<Record<RosServiceName, string>> = {
  [ROS_SERVICE_MOVE_TO_POSE]: ROS_TYPES.moveToPose,
  [ROS_SERVICE_MOVE_TO_JOINTS]: ROS_TYPES.moveToJoints,
  [ROS_SERVICE_STOP]: ROS_TYPES.trigger,
  [ROS_SERVICE_ESTOP]: ROS_TYPES.trigger,
  [ROS_SERVICE_RESET]: ROS_TYPES.trigger,
};

export const isRosServiceName = (name: string): name is RosServiceName => Object.hasOwn(ROS_SERVICES, name);

// ---------------------------------------------------------------------------------------------
// Results

/** A parse outcome: the typed value, or a one-line reason fit for a status message. */
export type RosResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

const ok = <T>(value: T): RosResult<T> => ({ ok: true, value });
const fail = <T>(error: string): RosResult<T> => ({ ok: false, error });

function fromZod<T>(r: z.ZodSafeParseResult<T>, what: string): RosResult<T> {
  return r.success ? ok(r.data) : fail(`${what}: ${z.prettifyError(r.error).replace(/\s*\n\s*/g, ' ')}`);
}

// ---------------------------------------------------------------------------------------------
// Standard ROS messages (SI units)

const finite = z.number(); // zod 4 rejects NaN and ±Infinity; JSON null (a NaN that was sent) fails too.

const rosTime2Schema = z.object({ sec: z.int(), nanosec: z.int().min(0).max(999_999_999) });
const rosTime1Schema = z.object({ secs: z.int(), nsecs: z.int().min(0).max(999_999_999) });
/** builtin_interfaces/Time, normalised to the ROS 2 layout. */
const rosTimeSchema = z.union([
  rosTime2Schema,
  rosTime1Schema.transform((t) => ({ sec: t.secs, nanosec: t.nsecs })),
]);
export type RosTime = z.infer<typeof rosTime2Schema>;

const headerSchema = z.object({ seq: z.int().optional(), stamp: rosTimeSchema, frame_id: z.string() });
export type RosHeader = { readonly stamp: RosTime; readonly frame_id: string };

const vector3Schema = z.object({ x: finite, y: finite, z: finite });
const quaternionSchema = z.object({ x: finite, y: finite, z: finite, w: finite });
export type RosVector3 = z.infer<typeof vector3Schema>;
export type RosQuaternion = z.infer<typeof quaternionSchema>;

const poseSchema = z.object({ position: vector3Schema, orientation: quaternionSchema });
export type RosPose = z.infer<typeof poseSchema>;

/** sensor_msgs/JointState: positions rad, velocities rad/s, efforts N·m. */
export const jointStateSchema = z.object({
  header: headerSchema,
  name: z.array(z.string()),
  position: z.array(finite),
  velocity: z.array(finite),
  effort: z.array(finite),
});
export type RosJointState = z.infer<typeof jointStateSchema>;

/** geometry_msgs/PoseStamped: position in metres. */
export const poseStampedSchema = z.object({ header: headerSchema, pose: poseSchema });
export type RosPoseStamped = z.infer<typeof poseStampedSchema>;

/** geometry_msgs/WrenchStamped: N and N·m. */
export const wrenchStampedSchema = z.object({
  header: headerSchema,
  wrench: z.object({ force: vector3Schema, torque: vector3Schema }),
});
export type RosWrenchStamped = z.infer<typeof wrenchStampedSchema>;

/**
 * geometry_msgs/TwistStamped: m/s and rad/s. The header may be omitted (rosbridge fills it in);
 * the twist itself must be complete: a motion command is never filled with defaults.
 */
export const twistStampedSchema = z.object({
  header: headerSchema.optional(),
  twist: z.object({ linear: vector3Schema, angular: vector3Schema }),
});
export type RosTwistStamped = z.infer<typeof twistStampedSchema>;

/** std_msgs/String. */
export const stringMsgSchema = z.object({ data: z.string() });
export type RosString = z.infer<typeof stringMsgSchema>;

/** std_srvs/Trigger response; also the response of our own services. */
export const triggerResponseSchema = z.object({ success: z.boolean(), message: z.string() });
export type RosTriggerResponse = z.infer<typeof triggerResponseSchema>;

/** eco3d_msgs/MoveToPose request: a TCP target (frame `base`, metres) and a TCP speed in m/s. */
export const moveToPoseRequestSchema = z.object({ pose: poseStampedSchema, speed_mps: finite.positive() });
export type RosMoveToPoseRequest = z.infer<typeof moveToPoseRequestSchema>;

/** eco3d_msgs/MoveToJoints request: named joint targets (rad) and a speed scale in (0, 1]. */
export const moveToJointsRequestSchema = z.object({
  name: z.array(z.string()),
  position: z.array(finite),
  speed_scale: finite.positive().max(1),
});
export type RosMoveToJointsRequest = z.infer<typeof moveToJointsRequestSchema>;

export const parseJointState = (v: unknown): RosResult<RosJointState> => fromZod(jointStateSchema.safeParse(v), 'JointState');
export const parsePoseStamped = (v: unknown): RosResult<RosPoseStamped> => fromZod(poseStampedSchema.safeParse(v), 'PoseStamped');
export const parseWrenchStamped = (v: unknown): RosResult<RosWrenchStamped> =>
  fromZod(wrenchStampedSchema.safeParse(v), 'WrenchStamped');
export const parseTwistStamped = (v: unknown): RosResult<RosTwistStamped> =>
  fromZod(twistStampedSchema.safeParse(v), 'TwistStamped');
export const parseStringMsg = (v: unknown): RosResult<RosString> => fromZod(stringMsgSchema.safeParse(v), 'String');
export const parseTriggerResponse = (v: unknown): RosResult<RosTriggerResponse> =>
  fromZod(triggerResponseSchema.safeParse(v), 'Trigger response');

// ---------------------------------------------------------------------------------------------
// Unit and frame conversion at the edge (the only place where metres meet millimetres)

export const MM_PER_M = 1000;
export const mToMm = (m: number): number => m * MM_PER_M;
export const mmToM = (mm: number): number => mm / MM_PER_M;

export function msToRosTime(ms: number): RosTime {
  const sec = Math.floor(ms / 1000);
  const nanosec = Math.min(999_999_999, Math.round((ms - sec * 1000) * 1e6));
  return { sec, nanosec };
}

export const rosTimeToMs = (t: RosTime): number => t.sec * 1000 + t.nanosec / 1e6;

export const rosHeader = (stampMs: number, frameId: string): RosHeader => ({ stamp: msToRosTime(stampMs), frame_id: frameId });

const vecMToMm = (v: RosVector3): Vec3 => ({ x: mToMm(v.x), y: mToMm(v.y), z: mToMm(v.z) });
const vecMmToM = (v: Vec3): RosVector3 => ({ x: mmToM(v.x), y: mmToM(v.y), z: mmToM(v.z) });
const vecCopy = (v: Vec3): RosVector3 => ({ x: v.x, y: v.y, z: v.z });

/** ROS pose (metres) → our pose (millimetres). Same frame on both sides. */
export const poseFromRos = (p: RosPose): Pose => ({
  positionMm: vecMToMm(p.position),
  orientation: { x: p.orientation.x, y: p.orientation.y, z: p.orientation.z, w: p.orientation.w },
});

/** Our pose (millimetres) → ROS pose (metres). */
export const poseToRos = (p: Pose): RosPose => ({
  position: vecMmToM(p.positionMm),
  orientation: { x: p.orientation.x, y: p.orientation.y, z: p.orientation.z, w: p.orientation.w },
});

/**
 * Wrench conversion. Both are already SI; the sign convention is ours on both sides (the force the
 * probe applies to the patient, in `probe`; pressing gives +z) and is documented on `/wrench`.
 */
export const wrenchFromRos = (w: RosWrenchStamped['wrench']): Wrench => ({
  forceN: { x: w.force.x, y: w.force.y, z: w.force.z },
  torqueNm: { x: w.torque.x, y: w.torque.y, z: w.torque.z },
});
export const wrenchToRos = (w: Wrench): RosWrenchStamped['wrench'] => ({ force: vecCopy(w.forceN), torque: vecCopy(w.torqueNm) });

export type JogCommand = Extract<RobotCommand, { kind: 'jog' }>;

/** A jog command (mm/s, rad/s, base frame) → TwistStamped (m/s, rad/s, frame `base`). */
export function jogToTwistStamped(cmd: JogCommand, stampMs: number): RosTwistStamped {
  return {
    header: rosHeader(stampMs, ROS_FRAME_BASE),
    twist: { linear: vecMmToM(cmd.linearMmPerS), angular: vecCopy(cmd.angularRadPerS) },
  };
}

/**
 * TwistStamped → jog command. Only the base frame is accepted (an empty frame_id means the
 * default, base): the bridge does not transform twists, and a twist meant for `probe` executed
 * in `base` would move the probe the wrong way.
 */
export function jogFromTwistStamped(msg: RosTwistStamped): RosResult<JogCommand> {
  const frame = msg.header?.frame_id ?? '';
  if (frame !== '' && frame !== ROS_FRAME_BASE) return fail(`jog twist must be in frame "${ROS_FRAME_BASE}", got "${frame}"`);
  return ok({ kind: 'jog', linearMmPerS: vecMToMm(msg.twist.linear), angularRadPerS: vecCopy(msg.twist.angular) });
}

/** Joint positions and velocities from a JointState, reordered by name into our joint order. */
export function jointsFromRos(js: RosJointState): RosResult<{ jointsRad: Joints6; jointVelRadPerS: Joints6 }> {
  if (js.position.length !== js.name.length) return fail('JointState: name and position lengths differ');
  if (js.velocity.length !== 0 && js.velocity.length !== js.name.length) return fail('JointState: name and velocity lengths differ');
  const pos: number[] = [];
  const vel: number[] = [];
  for (const jointName of UR_JOINT_NAMES) {
    const i = js.name.indexOf(jointName);
    if (i < 0) return fail(`JointState: missing joint ${jointName}`);
    pos.push(js.position[i]!);
    // An empty velocity array is legal in ROS ("not reported"); we report zero then.
    vel.push(js.velocity.length === 0 ? 0 : js.velocity[i]!);
  }
  return ok({ jointsRad: pos as unknown as Joints6, jointVelRadPerS: vel as unknown as Joints6 });
}

export function jointStateToRos(stampMs: number, jointsRad: Joints6, jointVelRadPerS: Joints6): RosJointState {
  return {
    header: rosHeader(stampMs, ROS_FRAME_BASE),
    name: [...UR_JOINT_NAMES],
    position: [...jointsRad],
    velocity: [...jointVelRadPerS],
    effort: [],
  };
}

/**
 * `/robot_mode` (std_msgs/String) data: the mode, then the active faults, space-separated, e.g.
 * `"idle"` or `"faulted over-force sensor-dropout"`. Readable in `ros2 topic echo`, and parsed
 * strictly: an unknown word is an error, never a guess.
 */
export function robotModeToRos(mode: RobotMode, faults: readonly RobotFaultCode[]): RosString {
  return { data: [mode, ...faults].join(' ') };
}

export function robotModeFromRos(msg: RosString): RosResult<{ mode: RobotMode; faults: RobotFaultCode[] }> {
  const [modeWord, ...faultWords] = msg.data.trim().split(/\s+/);
  const mode = ROBOT_MODES.find((m) => m === modeWord);
  if (mode === undefined) return fail(`robot_mode: unknown mode "${modeWord ?? ''}"`);
  const faults: RobotFaultCode[] = [];
  for (const w of faultWords) {
    const f = ROBOT_FAULT_CODES.find((c) => c === w);
    if (f === undefined) return fail(`robot_mode: unknown fault "${w}"`);
    faults.push(f);
  }
  return ok({ mode, faults });
}

// ---------------------------------------------------------------------------------------------
// Services ↔ robot commands

/**
 * A service's `success: false` carries our error code in front of the reason
 * (`"ECO3D_ERR_NACK: e-stop latched"`), so that a client can tell why without a second channel,
 * and a plain ROS user still reads a sentence.
 */
export const formatServiceFailure = (code: ErrorCode, message: string): string => `${code}: ${message}`;

export function parseServiceFailure(text: string): { code: ErrorCode | undefined; message: string } {
  const m = /^(ECO3D_ERR_[A-Z_]+):\s?(.*)$/s.exec(text);
  if (m !== null && isErrorCode(m[1])) return { code: m[1], message: m[2] ?? '' };
  return { code: undefined, message: text };
}

/** One service call as the client sends it. */
export interface RosServiceCall {
  readonly service: RosServiceName;
  readonly type: string;
  readonly args: Record<string, unknown>;
}

export type ServiceCommand = Exclude<RobotCommand, JogCommand>;

/** The service call that carries a (non-jog) command. */
export function commandToServiceCall(cmd: ServiceCommand, stampMs: number): RosServiceCall {
  switch (cmd.kind) {
    case 'cartesian-target': {
      const req: RosMoveToPoseRequest = {
        pose: { header: rosHeader(stampMs, ROS_FRAME_BASE), pose: poseToRos(cmd.pose) },
        speed_mps: mmToM(cmd.speedMmPerS),
      };
      return { service: ROS_SERVICE_MOVE_TO_POSE, type: ROS_TYPES.moveToPose, args: req };
    }
    case 'joint-target': {
      const req: RosMoveToJointsRequest = { name: [...UR_JOINT_NAMES], position: [...cmd.jointsRad], speed_scale: cmd.speedScale };
      return { service: ROS_SERVICE_MOVE_TO_JOINTS, type: ROS_TYPES.moveToJoints, args: req };
    }
    case 'stop':
      return { service: ROS_SERVICE_STOP, type: ROS_TYPES.trigger, args: {} };
    case 'estop':
      return { service: ROS_SERVICE_ESTOP, type: ROS_TYPES.trigger, args: {} };
    case 'reset':
      return { service: ROS_SERVICE_RESET, type: ROS_TYPES.trigger, args: {} };
  }
}

/**
 * rosbridge allows `args` as an object (what roslib sends) or as a positional list (what the spec
 * text says). A list is mapped onto the request's fields in declaration order.
 */
function argsObject(args: unknown, fields: readonly string[]): unknown {
  if (args === undefined || args === null) return {};
  if (Array.isArray(args)) return Object.fromEntries(fields.map((f, i) => [f, args[i] as unknown]));
  return args;
}

/** The robot command a service call asks for, or why the call is malformed. */
export function commandFromServiceCall(service: RosServiceName, args: unknown): RosResult<ServiceCommand> {
  switch (service) {
    case ROS_SERVICE_MOVE_TO_POSE: {
      const r = fromZod(moveToPoseRequestSchema.safeParse(argsObject(args, ['pose', 'speed_mps'])), 'MoveToPose request');
      if (!r.ok) return r;
      const frame = r.value.pose.header.frame_id;
      if (frame !== '' && frame !== ROS_FRAME_BASE) return fail(`MoveToPose: pose must be in frame "${ROS_FRAME_BASE}", got "${frame}"`);
      return ok({ kind: 'cartesian-target', pose: poseFromRos(r.value.pose.pose), speedMmPerS: mToMm(r.value.speed_mps) });
    }
    case ROS_SERVICE_MOVE_TO_JOINTS: {
      const r = fromZod(
        moveToJointsRequestSchema.safeParse(argsObject(args, ['name', 'position', 'speed_scale'])),
        'MoveToJoints request',
      );
      if (!r.ok) return r;
      const j = jointsFromRos({ header: { stamp: { sec: 0, nanosec: 0 }, frame_id: '' }, name: r.value.name, position: r.value.position, velocity: [], effort: [] });
      if (!j.ok) return fail(j.error.replace('JointState', 'MoveToJoints'));
      return ok({ kind: 'joint-target', jointsRad: j.value.jointsRad, speedScale: r.value.speed_scale });
    }
    case ROS_SERVICE_STOP:
      return ok({ kind: 'stop' });
    case ROS_SERVICE_ESTOP:
      return ok({ kind: 'estop' });
    case ROS_SERVICE_RESET:
      return ok({ kind: 'reset' });
  }
}

// ---------------------------------------------------------------------------------------------
// rosbridge v2 messages

const idSchema = z.union([z.string(), z.int()]).optional();
const nameSchema = z.string().min(1);
const statusLevelSchema = z.enum(['info', 'warning', 'error', 'none']);
export type RosbridgeStatusLevel = z.infer<typeof statusLevelSchema>;

const advertiseSchema = z.object({
  op: z.literal('advertise'),
  id: idSchema,
  topic: nameSchema,
  type: nameSchema,
  latch: z.boolean().optional(),
  queue_size: z.int().min(0).optional(),
});
const unadvertiseSchema = z.object({ op: z.literal('unadvertise'), id: idSchema, topic: nameSchema });
const publishSchema = z.object({ op: z.literal('publish'), id: idSchema, topic: nameSchema, msg: z.unknown() });
const subscribeSchema = z.object({
  op: z.literal('subscribe'),
  id: idSchema,
  topic: nameSchema,
  type: nameSchema.optional(),
  /** Minimum time between two messages, ms. */
  throttle_rate: z.number().min(0).optional(),
  queue_length: z.int().min(0).optional(),
  fragment_size: z.int().min(1).optional(),
  compression: z.string().optional(),
});
const unsubscribeSchema = z.object({ op: z.literal('unsubscribe'), id: idSchema, topic: nameSchema });
const callServiceSchema = z.object({
  op: z.literal('call_service'),
  id: idSchema,
  service: nameSchema,
  type: nameSchema.optional(),
  args: z.unknown().optional(),
  fragment_size: z.int().min(1).optional(),
  compression: z.string().optional(),
  /** Seconds; the server's default when absent or not positive. */
  timeout: z.number().optional(),
});
const serviceResponseSchema = z.object({
  op: z.literal('service_response'),
  id: idSchema,
  service: nameSchema,
  values: z.unknown().optional(),
  result: z.boolean(),
});
const advertiseServiceSchema = z.object({ op: z.literal('advertise_service'), id: idSchema, type: nameSchema, service: nameSchema });
const unadvertiseServiceSchema = z.object({ op: z.literal('unadvertise_service'), id: idSchema, service: nameSchema });
const statusSchema = z.object({ op: z.literal('status'), id: idSchema, level: statusLevelSchema, msg: z.string() });
const setLevelSchema = z.object({ op: z.literal('set_level'), id: idSchema, level: statusLevelSchema });
const fragmentSchema = z.object({
  op: z.literal('fragment'),
  id: z.union([z.string(), z.int()]),
  data: z.string(),
  num: z.int().min(0),
  total: z.int().min(1),
});
const pngSchema = z.object({ op: z.literal('png'), id: idSchema, data: z.string(), num: z.int().optional(), total: z.int().optional() });
const authSchema = z.object({
  op: z.literal('auth'),
  mac: z.string(),
  client: z.string(),
  dest: z.string(),
  rand: z.string(),
  t: z.number(),
  level: z.string(),
  end: z.number(),
});
const advertiseActionSchema = z.object({ op: z.literal('advertise_action'), id: idSchema, type: nameSchema, action: nameSchema });
const unadvertiseActionSchema = z.object({ op: z.literal('unadvertise_action'), id: idSchema, action: nameSchema });
const sendActionGoalSchema = z.object({
  op: z.literal('send_action_goal'),
  id: idSchema,
  action: nameSchema,
  action_type: nameSchema,
  args: z.unknown().optional(),
  feedback: z.boolean().optional(),
  fragment_size: z.int().min(1).optional(),
  compression: z.string().optional(),
});
const cancelActionGoalSchema = z.object({ op: z.literal('cancel_action_goal'), id: z.union([z.string(), z.int()]), action: nameSchema });
const actionFeedbackSchema = z.object({ op: z.literal('action_feedback'), id: z.union([z.string(), z.int()]), action: nameSchema, values: z.unknown() });
const actionResultSchema = z.object({
  op: z.literal('action_result'),
  id: z.union([z.string(), z.int()]),
  action: nameSchema,
  values: z.unknown().optional(),
  status: z.int(),
  result: z.boolean(),
});

const rosbridgeMessageSchema = z.discriminatedUnion('op', [
  advertiseSchema,
  unadvertiseSchema,
  publishSchema,
  subscribeSchema,
  unsubscribeSchema,
  callServiceSchema,
  serviceResponseSchema,
  advertiseServiceSchema,
  unadvertiseServiceSchema,
  statusSchema,
  setLevelSchema,
  fragmentSchema,
  pngSchema,
  authSchema,
  advertiseActionSchema,
  unadvertiseActionSchema,
  sendActionGoalSchema,
  cancelActionGoalSchema,
  actionFeedbackSchema,
  actionResultSchema,
]);

export type RosbridgeMessage = z.infer<typeof rosbridgeMessageSchema>;
export type RosbridgeOp = RosbridgeMessage['op'];
export type RosbridgeMessageOf<O extends RosbridgeOp> = Extract<RosbridgeMessage, { op: O }>;
export type RosbridgeAdvertise = RosbridgeMessageOf<'advertise'>;
export type RosbridgeUnadvertise = RosbridgeMessageOf<'unadvertise'>;
export type RosbridgePublish = RosbridgeMessageOf<'publish'>;
export type RosbridgeSubscribe = RosbridgeMessageOf<'subscribe'>;
export type RosbridgeUnsubscribe = RosbridgeMessageOf<'unsubscribe'>;
export type RosbridgeCallService = RosbridgeMessageOf<'call_service'>;
export type RosbridgeServiceResponse = RosbridgeMessageOf<'service_response'>;
export type RosbridgeStatus = RosbridgeMessageOf<'status'>;
export type RosbridgeId = string | number;

export const ROSBRIDGE_OPS: readonly RosbridgeOp[] = rosbridgeMessageSchema.options.map((o) => o.shape.op.value);

export const isRosbridgeOp = (op: unknown): op is RosbridgeOp => typeof op === 'string' && (ROSBRIDGE_OPS as readonly string[]).includes(op);

/** Type guard on the tag, for code that holds a message of unknown op. */
export const isRosbridgeMessageOf = <O extends RosbridgeOp>(m: RosbridgeMessage, op: O): m is RosbridgeMessageOf<O> => m.op === op;

/** Why a frame is not a usable rosbridge message; `id` echoes the request's id when it had one. */
export interface RosbridgeParseError {
  readonly code: Extract<ErrorCode, 'ECO3D_ERR_BAD_REQUEST' | 'ECO3D_ERR_UNKNOWN_MESSAGE'>;
  readonly message: string;
  readonly op?: string;
  readonly id?: RosbridgeId;
}

export type RosbridgeParseResult =
  | { readonly ok: true; readonly message: RosbridgeMessage }
  | { readonly ok: false; readonly error: RosbridgeParseError };

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A decoded JSON value → a typed rosbridge message, or a typed error. Never throws. */
export function parseRosbridgeMessage(value: unknown): RosbridgeParseResult {
  if (!isPlainObject(value) || typeof value.op !== 'string') {
    return { ok: false, error: { code: 'ECO3D_ERR_BAD_REQUEST', message: 'not a rosbridge message: expected a JSON object with a string "op"' } };
  }
  const op = value.op;
  const rawId = value.id;
  const id = typeof rawId === 'string' || (typeof rawId === 'number' && Number.isInteger(rawId)) ? rawId : undefined;
  const withId = <T extends object>(e: T): T & { id?: RosbridgeId } => (id === undefined ? e : { ...e, id });
  if (!isRosbridgeOp(op)) {
    return { ok: false, error: withId({ code: 'ECO3D_ERR_UNKNOWN_MESSAGE' as const, message: `unknown op "${op.slice(0, 64)}"`, op }) };
  }
  const r = rosbridgeMessageSchema.safeParse(value);
  if (r.success) return { ok: true, message: r.data };
  const detail = z.prettifyError(r.error).replace(/\s*\n\s*/g, ' ');
  return { ok: false, error: withId({ code: 'ECO3D_ERR_BAD_REQUEST' as const, message: `bad "${op}" message: ${detail}`, op }) };
}

/** A text frame → a typed rosbridge message, or a typed error (bad JSON included). Never throws. */
export function parseRosbridgeText(text: string): RosbridgeParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { ok: false, error: { code: 'ECO3D_ERR_BAD_REQUEST', message: `bad JSON: ${why}` } };
  }
  return parseRosbridgeMessage(value);
}

/**
 * The bridge answers a refused jog (jogs have no response) with an error status whose text starts
 * with this, followed by `formatServiceFailure(code, reason)`; a client can count refusals by it.
 */
export const ROSBRIDGE_JOG_REFUSED_PREFIX = 'jog refused: ';

/** A status message (server → client): how rosbridge reports errors and warnings. */
export function rosbridgeStatus(level: Exclude<RosbridgeStatusLevel, 'none'>, msg: string, id?: RosbridgeId): RosbridgeStatus {
  return id === undefined ? { op: 'status', level, msg } : { op: 'status', id, level, msg };
}

/** Status levels in increasing verbosity; a client at level L receives statuses at L or above. */
const STATUS_RANK: Readonly<Record<RosbridgeStatusLevel, number>> = { none: 0, error: 1, warning: 2, info: 3 };

/** True when a status of `level` should reach a client whose `set_level` is `clientLevel`. */
export const statusPasses = (level: RosbridgeStatusLevel, clientLevel: RosbridgeStatusLevel): boolean =>
  level !== 'none' && STATUS_RANK[level] <= STATUS_RANK[clientLevel];

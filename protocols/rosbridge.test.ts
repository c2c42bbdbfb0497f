// Unit tests of the rosbridge schemas and the SI ⇄ mm edge helpers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  commandFromServiceCall,
  commandToServiceCall,
  jogFromTwistStamped,
  jogToTwistStamped,
  jointsFromRos,
  msToRosTime,
  parseJointState,
  parseRosbridgeMessage,
  parseRosbridgeText,
  parseServiceFailure,
  poseFromRos,
  poseToRos,
  robotModeFromRos,
  robotModeToRos,
  rosTimeToMs,
  sameRosType,
  statusPasses,
  UR_JOINT_NAMES,
  type ServiceCommand,
} from './rosbridge.ts';

void test('stamps: ms ⇄ {sec, nanosec}; a ROS 1 {secs, nsecs} stamp is accepted', () => {
  const t = msToRosTime(1_700_000_000_123.5);
  assert.deepEqual(t, { sec: 1_700_000_000, nanosec: 123_500_000 });
  assert.equal(rosTimeToMs(t), 1_700_000_000_123.5);
  const js = parseJointState({ header: { stamp: { secs: 5, nsecs: 2_000_000 }, frame_id: '' }, name: [], position: [], velocity: [], effort: [] });
  assert.ok(js.ok);
  assert.equal(rosTimeToMs(js.value.header.stamp), 5002);
});

void test('poses: metres on the wire, millimetres here', () => {
  const pose = { positionMm: { x: 450, y: -12.5, z: 270 }, orientation: { x: 1, y: 0, z: 0, w: 0 } };
  const ros = poseToRos(pose);
  assert.deepEqual(ros.position, { x: 0.45, y: -0.0125, z: 0.27 });
  assert.deepEqual(poseFromRos(ros), pose);
});

void test('jog: mm/s ⇄ m/s in frame base; other frames are refused', () => {
  const cmd = { kind: 'jog', linearMmPerS: { x: 20, y: 0, z: -5 }, angularRadPerS: { x: 0, y: 0.1, z: 0 } } as const;
  const msg = jogToTwistStamped(cmd, 1000);
  assert.equal(msg.header?.frame_id, 'base');
  assert.deepEqual(msg.twist.linear, { x: 0.02, y: 0, z: -0.005 });
  assert.deepEqual(jogFromTwistStamped(msg), { ok: true, value: cmd });
  assert.equal(jogFromTwistStamped({ twist: msg.twist }).ok, true, 'no header: default frame');
  assert.equal(jogFromTwistStamped({ ...msg, header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'tool0' } }).ok, false);
});

void test('joint states are matched by name, in any order; a missing joint is an error', () => {
  const names = [...UR_JOINT_NAMES].reverse();
  const r = jointsFromRos({ header: { stamp: { sec: 0, nanosec: 0 }, frame_id: '' }, name: names, position: [6, 5, 4, 3, 2, 1], velocity: [], effort: [] });
  assert.ok(r.ok);
  assert.deepEqual(r.value.jointsRad, [1, 2, 3, 4, 5, 6]);
  assert.deepEqual(r.value.jointVelRadPerS, [0, 0, 0, 0, 0, 0]);
  const bad = jointsFromRos({ header: { stamp: { sec: 0, nanosec: 0 }, frame_id: '' }, name: names.slice(1), position: [5, 4, 3, 2, 1], velocity: [], effort: [] });
  assert.equal(bad.ok, false);
});

void test('robot mode string: mode then faults; unknown words are errors', () => {
  const msg = robotModeToRos('faulted', ['over-force', 'sensor-dropout']);
  assert.equal(msg.data, 'faulted over-force sensor-dropout');
  assert.deepEqual(robotModeFromRos(msg), { ok: true, value: { mode: 'faulted', faults: ['over-force', 'sensor-dropout'] } });
  assert.equal(robotModeFromRos({ data: 'dancing' }).ok, false);
  assert.equal(robotModeFromRos({ data: 'idle melted' }).ok, false);
});

void test('every service command survives the trip through its service call', () => {
  const cmds: ServiceCommand[] = [
    { kind: 'cartesian-target', pose: { positionMm: { x: 400, y: 25, z: 300 }, orientation: { x: 0, y: 1, z: 0, w: 0 } }, speedMmPerS: 40 },
    { kind: 'joint-target', jointsRad: [0, -1, 1, 0, 1, 0], speedScale: 0.3 },
    { kind: 'stop' },
    { kind: 'estop' },
    { kind: 'reset' },
  ];
  for (const cmd of cmds) {
    const call = commandToServiceCall(cmd, 0);
    // Through JSON, as on the wire.
    const back = commandFromServiceCall(call.service, JSON.parse(JSON.stringify(call.args)));
    assert.ok(back.ok, back.ok ? '' : back.error);
    assert.deepEqual(back.value, cmd);
  }
  // Positional args (the spec's list form) work too.
  const pos = commandFromServiceCall('/move_to_joints', [[...UR_JOINT_NAMES], [1, 2, 3, 4, 5, 6], 0.5]);
  assert.ok(pos.ok);
  // A pose in another frame, a zero speed, a NaN: refused.
  const pose = { header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'probe' }, pose: poseToRos({ positionMm: { x: 1, y: 2, z: 3 }, orientation: { x: 0, y: 0, z: 0, w: 1 } }) };
  assert.equal(commandFromServiceCall('/move_to_pose', { pose, speed_mps: 0.1 }).ok, false);
  assert.equal(commandFromServiceCall('/move_to_pose', { pose: { ...pose, header: { ...pose.header, frame_id: 'base' } }, speed_mps: 0 }).ok, false);
  assert.equal(commandFromServiceCall('/move_to_joints', { name: [...UR_JOINT_NAMES], position: [1, 2, 3, 4, 5, null], speed_scale: 0.5 }).ok, false);
});

void test('service failure text carries our code in front', () => {
  assert.deepEqual(parseServiceFailure('ECO3D_ERR_ESTOP_LATCHED: reset at the bedside'), { code: 'ECO3D_ERR_ESTOP_LATCHED', message: 'reset at the bedside' });
  assert.deepEqual(parseServiceFailure('ECO3D_ERR_MADE_UP: x'), { code: undefined, message: 'ECO3D_ERR_MADE_UP: x' });
  assert.deepEqual(parseServiceFailure('plain words'), { code: undefined, message: 'plain words' });
});

void test('the parser: typed messages, typed errors, never a throw', () => {
  const ok = parseRosbridgeMessage({ op: 'subscribe', id: 7, topic: '/joint_states', throttle_rate: 10, extra: true });
  assert.ok(ok.ok && ok.message.op === 'subscribe' && ok.message.throttle_rate === 10 && ok.message.id === 7);
  const inputs: unknown[] = [undefined, null, 3, 'x', [], {}, { op: null }, { op: 'publish' }, { op: 'call_service', service: '' }, { op: 'nope', id: 'i' }];
  for (const v of inputs) {
    const r = parseRosbridgeMessage(v);
    assert.equal(r.ok, false, JSON.stringify(v));
  }
  const unknown = parseRosbridgeMessage({ op: 'nope', id: 'i' });
  assert.ok(!unknown.ok && unknown.error.code === 'ECO3D_ERR_UNKNOWN_MESSAGE' && unknown.error.id === 'i');
  const shape = parseRosbridgeMessage({ op: 'publish', id: 'p' });
  assert.ok(!shape.ok && shape.error.code === 'ECO3D_ERR_BAD_REQUEST' && shape.error.id === 'p');
  const json = parseRosbridgeText('{"op":');
  assert.ok(!json.ok && json.error.message.startsWith('bad JSON'));
});

void test('type names and status levels', () => {
  assert.ok(sameRosType('sensor_msgs/JointState', 'sensor_msgs/msg/JointState'));
  assert.ok(sameRosType('std_srvs/srv/Trigger', 'std_srvs/Trigger'));
  assert.ok(!sameRosType('std_msgs/String', 'std_msgs/msg/Header'));
  assert.ok(statusPasses('error', 'error') && !statusPasses('warning', 'error') && statusPasses('warning', 'info') && !statusPasses('error', 'none'));
});

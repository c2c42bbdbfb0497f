// SafetySupervisor unit tests: a hand-written fake driver and virtual time (mock.timers), never
// real sleeps. Every refusal is checked for its code AND for the driver never being called.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import { quatFromAxisAngle, toolAxis } from '../protocols/geometry.ts';
import type { Joints6, Pose, RobotCommand } from '../protocols/robot.ts';
import { HOME_POSE } from '../protocols/scene.ts';
import {
  checkMotionCommand,
  DEFAULT_SAFETY_CONFIG,
  resolveSafetyConfig,
  SafetySupervisor,
  TokenBucket,
  type CommandSource,
  type SafetyConfig,
  type SafetyEvent,
} from './safety.ts';
import { FakeRobotDriver, zeroWrench } from './testing/fake-driver.ts';
import { flushMicrotasks, VirtualTime } from './testing/virtual-time.ts';
import { rejectsWith } from '../protocols/testing.ts';

const OPERATOR: CommandSource = { role: 'operator', actor: 'op-1' };
const BEDSIDE: CommandSource = { role: 'bedside', actor: 'nurse-1' };
const SYSTEM: CommandSource = { role: 'system', actor: 'test' };

const jog = (x: number, y = 0, z = 0, w = { x: 0, y: 0, z: 0 }): RobotCommand => ({
  kind: 'jog',
  linearMmPerS: { x, y, z },
  angularRadPerS: w,
});
const target = (x: number, y: number, z: number, orientation = HOME_POSE.orientation, speedMmPerS = 20): RobotCommand => ({
  kind: 'cartesian-target',
  pose: { positionMm: { x, y, z }, orientation },
  speedMmPerS,
});
const joints = (j: number[], speedScale = 0.1): RobotCommand => ({ kind: 'joint-target', jointsRad: j as unknown as Joints6, speedScale });

interface Rig {
  vt: VirtualTime;
  driver: FakeRobotDriver;
  sup: SafetySupervisor;
  events: SafetyEvent[];
}

function rig(t: TestContext, config?: Partial<SafetyConfig>, driverOpts?: ConstructorParameters<typeof FakeRobotDriver>[0]): Rig {
  const vt = new VirtualTime(t.mock.timers);
  const driver = new FakeRobotDriver(driverOpts);
  const events: SafetyEvent[] = [];
  const sup = new SafetySupervisor(driver, config, { now: vt.now, onEvent: (e) => events.push(e) });
  t.after(() => sup.close());
  return { vt, driver, sup, events };
}


void describe('config', () => {
  void test('defaults match the brief', () => {
    const c = resolveSafetyConfig();
    assert.equal(c.maxSpeedMmPerS, 50);
    assert.equal(c.maxAngularSpeedRadPerS, 0.5);
    assert.equal(c.maxForceN, 20);
    assert.equal(c.retractMm, 10);
    assert.equal(c.deadmanTimeoutMs, 300);
    assert.equal(c.maxCommandsPerS, 100);
  });
  void test('bad config is refused with ECO3D_ERR_CONFIG', () => {
    for (const bad of [{ maxForceN: Number.NaN }, { deadmanTimeoutMs: -1 }, { maxSpeedMmPerS: 0 }, { jointLimitsRad: [] }]) {
      assert.throws(() => resolveSafetyConfig(bad), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_CONFIG');
    }
  });
});

void describe('checkMotionCommand (pure)', () => {
  const c = DEFAULT_SAFETY_CONFIG;
  void test('normalises a nearly-unit quaternion, refuses garbage', () => {
    const q = { x: 1.004, y: 0, z: 0, w: 0 };
    const out = checkMotionCommand(target(450, 0, 200, q) as never, c, HOME_POSE);
    assert.equal(out.kind, 'cartesian-target');
    if (out.kind === 'cartesian-target') assert.ok(Math.abs(out.pose.orientation.x - 1) < 1e-12);
    assert.throws(() => checkMotionCommand(target(450, 0, 200, { x: 0, y: 0, z: 0, w: 0 }) as never, c, HOME_POSE), /unit quaternion/);
    assert.throws(() => checkMotionCommand(target(450, 0, 200, { x: 2, y: 0, z: 0, w: 0 }) as never, c, HOME_POSE), /unit quaternion/);
  });
  void test('a jog at the workspace face can move back in, not further out', () => {
    const atTop: Pose = { positionMm: { x: 450, y: 0, z: 500 }, orientation: HOME_POSE.orientation };
    assert.doesNotThrow(() => checkMotionCommand(jog(0, 0, -20) as never, c, atTop));
    assert.throws(() => checkMotionCommand(jog(0, 0, 5) as never, c, atTop), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_WORKSPACE');
  });
  void test('joint targets are checked against forward kinematics when given', () => {
    const fk = (): Pose => ({ positionMm: { x: 0, y: 0, z: 0 }, orientation: HOME_POSE.orientation });
    assert.throws(
      () => checkMotionCommand(joints([0, 0, 0, 0, 0, 0]) as never, { ...c, forwardKinematics: fk }, HOME_POSE),
      (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_WORKSPACE',
    );
  });
});

void describe('refusals never reach the driver', () => {
  // [name, command, expected code]; the robot is at HOME_POSE (450, 0, 270), pointing down.
  const cases: [string, RobotCommand, ErrorCode][] = [
    ['jog NaN', jog(Number.NaN), 'ECO3D_ERR_NOT_FINITE'],
    ['jog +Infinity', jog(0, Number.POSITIVE_INFINITY), 'ECO3D_ERR_NOT_FINITE'],
    ['jog -Infinity', jog(0, 0, Number.NEGATIVE_INFINITY), 'ECO3D_ERR_NOT_FINITE'],
    ['jog huge', jog(1e300), 'ECO3D_ERR_NOT_FINITE'],
    ['jog angular NaN', jog(0, 0, 0, { x: Number.NaN, y: 0, z: 0 }), 'ECO3D_ERR_NOT_FINITE'],
    ['jog missing field', { kind: 'jog', linearMmPerS: { x: 1, y: 2 }, angularRadPerS: { x: 0, y: 0, z: 0 } } as never, 'ECO3D_ERR_NOT_FINITE'],
    ['jog too fast', jog(40, 40), 'ECO3D_ERR_SPEED_LIMIT'],
    ['jog angular too fast', jog(0, 0, 0, { x: 0, y: 0, z: 0.6 }), 'ECO3D_ERR_SPEED_LIMIT'],
    ['jog leaving the box', jog(0, 0, 50), 'ECO3D_ERR_WORKSPACE'], // from z 495: 495 + 50 mm/s × 0.3 s > 500
    ['target NaN', target(Number.NaN, 0, 200), 'ECO3D_ERR_NOT_FINITE'],
    ['target huge', target(1e9, 0, 200), 'ECO3D_ERR_NOT_FINITE'],
    ['target Infinity speed', target(450, 0, 200, HOME_POSE.orientation, Number.POSITIVE_INFINITY), 'ECO3D_ERR_NOT_FINITE'],
    ['target outside the box (below)', target(450, 0, 10), 'ECO3D_ERR_WORKSPACE'],
    ['target outside the box (x)', target(800, 0, 200), 'ECO3D_ERR_WORKSPACE'],
    ['target too fast', target(450, 0, 200, HOME_POSE.orientation, 51), 'ECO3D_ERR_SPEED_LIMIT'],
    ['target zero speed', target(450, 0, 200, HOME_POSE.orientation, 0), 'ECO3D_ERR_BAD_REQUEST'],
    ['target garbage quaternion', target(450, 0, 200, { x: 3, y: 1, z: 0, w: 0 }), 'ECO3D_ERR_BAD_REQUEST'],
    ['target NaN quaternion', target(450, 0, 200, { x: Number.NaN, y: 0, z: 0, w: 1 }), 'ECO3D_ERR_NOT_FINITE'],
    ['joints outside limits', joints([0, 0, 3.5, 0, 0, 0]), 'ECO3D_ERR_JOINT_LIMIT'],
    ['joints NaN', joints([0, Number.NaN, 0, 0, 0, 0]), 'ECO3D_ERR_NOT_FINITE'],
    ['joints wrong count', joints([0, 0, 0]), 'ECO3D_ERR_BAD_REQUEST'],
    ['joints too fast', joints([0, 0, 0, 0, 0, 0], 0.9), 'ECO3D_ERR_SPEED_LIMIT'],
    ['unknown kind', { kind: 'teleport' } as never, 'ECO3D_ERR_BAD_REQUEST'],
  ];
  for (const [name, cmd, code] of cases) {
    void test(`${name} → ${code}`, async (t) => {
      // "jog leaving the box": put the robot 5 mm under the ceiling first.
      const { driver, sup, events } = rig(t, undefined, name === 'jog leaving the box' ? { initialState: { tcpPose: { ...HOME_POSE, positionMm: { x: 450, y: 0, z: 495 } } } } : {});
      await rejectsWith(sup.command(cmd, SYSTEM), code);
      assert.equal(driver.sent.length, 0, 'the driver must never see a refused command');
      assert.equal(events.at(-1)?.type, 'refused');
    });
  }

  void test('valid commands pass and reach the driver (quaternion normalised)', async (t) => {
    const { driver, sup } = rig(t);
    await sup.command(jog(10, 0, -5), SYSTEM);
    await sup.command(target(450, 0, 200, { x: 0.999, y: 0, z: 0, w: 0 }), SYSTEM);
    await sup.command(joints([0, 0.1, -0.2, 0, 0, 0]), SYSTEM);
    assert.deepEqual(driver.kinds(), ['jog', 'cartesian-target', 'joint-target']);
    const sent = driver.sent[1]!.cmd;
    assert.ok(sent.kind === 'cartesian-target' && sent.pose.orientation.x === 1);
    assert.equal(driver.sent[0]!.timeoutMs, DEFAULT_SAFETY_CONFIG.commandTimeoutMs, 'every driver call carries a timeout');
  });

  void test('no state yet, stale state, link down, robot fault, sensor dropout: motion refused', async (t) => {
    const vt = new VirtualTime(t.mock.timers);
    const driver = new FakeRobotDriver({ initialState: null });
    const sup = new SafetySupervisor(driver, {}, { now: vt.now });
    t.after(() => sup.close());
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_LINK_LOST');
    driver.pushState({});
    await vt.advance(600, 50);
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_LINK_LOST'); // stale: 600 ms old
    driver.pushState({});
    driver.setLink(false, 'cable');
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_LINK_LOST');
    assert.ok(sup.status.problems.some((p) => p.id === 'link-lost' && p.code === 'ECO3D_ERR_LINK_LOST'));
    assert.equal(sup.status.motionAllowed, false);
    driver.setLink(true);
    assert.ok(!sup.status.problems.some((p) => p.id === 'link-lost'));
    driver.pushState({ faults: ['joint-stuck'] });
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_ROBOT_FAULT');
    assert.ok(sup.status.problems.some((p) => p.id === 'fault:joint-stuck' && p.severity === 'error'));
    driver.pushState({ faults: [] });
    assert.ok(!sup.status.problems.some((p) => p.id.startsWith('fault:')));
    driver.pushState({ wrench: null });
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_ROBOT_FAULT');
    assert.equal(driver.sent.length, 0);
    driver.pushState({ wrench: zeroWrench() });
    await sup.command(jog(1), SYSTEM);
    assert.deepEqual(driver.kinds(), ['jog']);
  });
});

void describe('rate limit', () => {
  void test('token bucket: burst, then the sustained rate', () => {
    const b = new TokenBucket(100, 10, 0);
    for (let i = 0; i < 10; i++) assert.ok(b.take(0));
    assert.equal(b.take(0), false);
    assert.equal(b.take(5), false); // half a token
    assert.ok(b.take(10));
  });

  void test('the 11th command in a burst is refused; stop and estop are never limited', async (t) => {
    const { vt, driver, sup } = rig(t);
    for (let i = 0; i < 10; i++) await sup.command(jog(1), SYSTEM);
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_RATE_LIMITED');
    assert.equal(driver.sent.length, 10);
    await sup.stop(SYSTEM, 'test');
    await sup.stop(SYSTEM, 'test');
    await sup.estop(BEDSIDE); // the e-stop wins while rate limited
    assert.deepEqual(driver.kinds().slice(10), ['stop', 'stop', 'estop']);
    await sup.resetEstop(BEDSIDE);
    driver.pushState({ mode: 'idle' });
    await vt.advance(20);
    await sup.command(jog(1), SYSTEM); // 2 tokens back after 20 ms at 100/s
    assert.equal(driver.lastCommand()?.kind, 'jog');
  });
});

void describe('deadman', () => {
  void test('an operator jog needs a fresh heartbeat', async (t) => {
    const { vt, driver, sup } = rig(t);
    await rejectsWith(sup.command(jog(1), OPERATOR), 'ECO3D_ERR_DEADMAN');
    sup.heartbeat(OPERATOR);
    await vt.advance(301);
    await rejectsWith(sup.command(jog(1), OPERATOR), 'ECO3D_ERR_DEADMAN');
    assert.equal(driver.sent.length, 0);
  });

  void test('fires a stop within timeout + one tick of the last heartbeat, and reports the latency', async (t) => {
    const { vt, driver, sup, events } = rig(t);
    sup.heartbeat(OPERATOR);
    const lastHeartbeatAtMs = Date.now();
    await sup.command(jog(5), OPERATOR);
    assert.equal(sup.status.deadmanArmed, true);
    // Keep the jog going (as a console would) but stop heartbeating.
    for (let i = 0; i < 14; i++) {
      driver.pushState({ mode: 'jogging' });
      await vt.advance(20);
      if (Date.now() - lastHeartbeatAtMs < 300) await sup.command(jog(5), OPERATOR);
    }
    // 280 ms after the heartbeat: not yet.
    assert.ok(!driver.kinds().includes('stop'));
    await vt.advance(19);
    assert.ok(!driver.kinds().includes('stop'), 'no stop before the timeout');
    await vt.advance(1 + 1); // the timeout, plus one tick
    const stop = driver.sent.find((s) => s.cmd.kind === 'stop');
    assert.ok(stop, 'deadman stop sent');
    const latency = stop.atMs - lastHeartbeatAtMs;
    assert.ok(latency >= 300 && latency <= 301, `stop at ${latency} ms`);
    const ev = events.find((e) => e.type === 'deadman-stop');
    assert.ok(ev?.type === 'deadman-stop');
    assert.equal(ev.latencyMs, latency);
    assert.equal(ev.actor, 'op-1');
    assert.equal(sup.status.lastDeadmanLatencyMs, latency);
    assert.equal(sup.status.deadmanArmed, false);
    assert.ok(sup.status.problems.some((p) => p.id === 'deadman' && p.code === 'ECO3D_ERR_DEADMAN'));
    // Further operator motion is refused until the operator heartbeats again.
    await rejectsWith(sup.command(jog(5), OPERATOR), 'ECO3D_ERR_DEADMAN');
    sup.heartbeat(OPERATOR);
    assert.ok(!sup.status.problems.some((p) => p.id === 'deadman'));
    await sup.command(jog(5), OPERATOR);
  });

  void test('steady heartbeats keep it quiet; system motion never arms it; it disarms at rest', async (t) => {
    const { vt, driver, sup } = rig(t);
    sup.heartbeat(OPERATOR);
    await sup.command(jog(5), OPERATOR);
    for (let i = 0; i < 50; i++) {
      await vt.advance(20);
      if (i % 5 === 0) sup.heartbeat(OPERATOR);
      driver.pushState({ mode: 'jogging' });
      await sup.command(jog(5), OPERATOR);
    }
    assert.ok(!driver.kinds().includes('stop'));
    // Operator lets go (heartbeats go on): the robot's jog watchdog stops it, the deadman disarms.
    sup.heartbeat(OPERATOR);
    await vt.advance(200);
    sup.heartbeat(OPERATOR);
    await vt.advance(200);
    driver.pushState({ mode: 'idle' });
    assert.equal(sup.status.deadmanArmed, false);
    await vt.advance(1000);
    assert.ok(!driver.kinds().includes('stop'), 'no stop for a robot at rest');
    driver.pushState({ mode: 'idle' });
    await sup.command(jog(5), SYSTEM);
    assert.equal(sup.status.deadmanArmed, false);
  });

  void test('a heartbeat from another actor does not feed the armed deadman', async (t) => {
    const { vt, driver, sup } = rig(t);
    sup.heartbeat(OPERATOR);
    await sup.command(jog(5), OPERATOR);
    driver.pushState({ mode: 'jogging' });
    for (let i = 0; i < 10; i++) {
      sup.heartbeat({ role: 'operator', actor: 'someone-else' });
      await vt.advance(40);
    }
    assert.ok(driver.kinds().includes('stop'));
  });
});

void describe('e-stop', () => {
  void test('latches synchronously; motion refused; operator cannot reset, bedside can', async (t) => {
    const { driver, sup, events } = rig(t);
    const p = sup.estop(OPERATOR);
    assert.equal(sup.status.estopLatched, true, 'latched before the first await');
    assert.equal(sup.status.estopBy, 'op-1');
    assert.equal(driver.lastCommand()?.kind, 'estop', 'handed to the driver synchronously');
    await p;
    assert.ok(events.some((e) => e.type === 'estop'));
    driver.clearSent();
    for (const cmd of [jog(1), target(450, 0, 200), joints([0, 0, 0, 0, 0, 0])]) {
      await rejectsWith(sup.command(cmd, BEDSIDE), 'ECO3D_ERR_ESTOP_LATCHED');
    }
    await rejectsWith(sup.resetEstop(OPERATOR), 'ECO3D_ERR_FORBIDDEN');
    await rejectsWith(sup.command({ kind: 'reset' }, OPERATOR), 'ECO3D_ERR_FORBIDDEN');
    await rejectsWith(sup.resetEstop(SYSTEM), 'ECO3D_ERR_FORBIDDEN');
    assert.equal(driver.sent.length, 0);
    assert.equal(sup.status.estopLatched, true);
    await sup.stop(OPERATOR, 'stop is always allowed');
    assert.deepEqual(driver.kinds(), ['stop']);
    await sup.resetEstop(BEDSIDE);
    assert.deepEqual(driver.kinds(), ['stop', 'reset']);
    assert.equal(sup.status.estopLatched, false);
    driver.pushState({ mode: 'idle' });
    await sup.command(jog(1), SYSTEM);
    assert.equal(driver.lastCommand()?.kind, 'jog');
  });

  void test('while the link is down: the latch holds, estop rejects, and is re-sent when the link returns', async (t) => {
    const { driver, sup } = rig(t);
    driver.setLink(false, 'unplugged');
    await rejectsWith(sup.estop(BEDSIDE), 'ECO3D_ERR_LINK_LOST');
    assert.equal(sup.status.estopLatched, true);
    assert.ok(sup.status.problems.some((p) => p.id === 'estop-unconfirmed'));
    await rejectsWith(sup.resetEstop(BEDSIDE), 'ECO3D_ERR_LINK_LOST');
    assert.equal(sup.status.estopLatched, true);
    driver.setLink(true, 'replugged');
    await flushMicrotasks();
    assert.deepEqual(driver.kinds(), ['estop', 'estop']);
    assert.ok(!sup.status.problems.some((p) => p.id === 'estop-unconfirmed'));
    assert.equal(sup.status.estopLatched, true, 'only a bedside reset clears it');
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_ESTOP_LATCHED');
  });

  void test('holds when the send fails (NACK) or hangs', async (t) => {
    const { vt, driver, sup } = rig(t);
    driver.reply = (cmd) => (cmd.kind === 'estop' ? new Eco3dError('ECO3D_ERR_NACK', 'nope') : 'ack');
    await rejectsWith(sup.estop(BEDSIDE), 'ECO3D_ERR_NACK');
    assert.equal(sup.status.estopLatched, true);
    driver.reply = () => 'hang';
    const expectation = rejectsWith(sup.estop(BEDSIDE), 'ECO3D_ERR_TIMEOUT');
    await vt.advance(DEFAULT_SAFETY_CONFIG.commandTimeoutMs + 100, 10);
    await expectation;
    assert.equal(sup.status.estopLatched, true);
  });

  void test('the robot reporting an e-stop by itself latches ours', async (t) => {
    const { driver, sup, events } = rig(t);
    driver.pushState({ mode: 'estopped' });
    assert.equal(sup.status.estopLatched, true);
    assert.equal(sup.status.estopBy, 'robot');
    assert.ok(events.some((e) => e.type === 'estop' && e.role === 'robot'));
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_ESTOP_LATCHED');
  });

  void test('an e-stop pressed while a reset is in flight stays latched', async (t) => {
    const { sup, driver } = rig(t);
    await sup.estop(BEDSIDE);
    driver.reply = (cmd) => (cmd.kind === 'reset' ? 'hang' : 'ack');
    const reset = sup.resetEstop(BEDSIDE);
    await sup.estop(OPERATOR);
    driver.setLink(false); // rejects the hanging reset
    await rejectsWith(reset, 'ECO3D_ERR_LINK_LOST');
    assert.equal(sup.status.estopLatched, true);
  });
});

void describe('contact force', () => {
  void test('over the limit: retract along the probe axis, then stop; motion refused until force is back and a new command arrives', async (t) => {
    const { vt, driver, sup, events } = rig(t);
    const at = { x: 450, y: 10, z: 115 };
    driver.pushState({ tcpPose: { ...HOME_POSE, positionMm: at }, mode: 'jogging', wrench: zeroWrench(25) });
    const retract = driver.sent[0]?.cmd;
    assert.ok(retract?.kind === 'cartesian-target', 'retract first');
    // Probe points down (tool z = −base z): backing off means going up by retractMm.
    assert.deepEqual(retract.pose.positionMm, { x: 450, y: 10, z: 125 });
    assert.deepEqual(retract.pose.orientation, HOME_POSE.orientation);
    assert.ok(retract.speedMmPerS <= DEFAULT_SAFETY_CONFIG.maxSpeedMmPerS);
    assert.ok(sup.status.problems.some((p) => p.id === 'force-limit' && p.code === 'ECO3D_ERR_FORCE_LIMIT'));
    assert.ok(events.some((e) => e.type === 'force-limit' && e.forceN === 25));
    await rejectsWith(sup.command(jog(0, 0, 1), SYSTEM), 'ECO3D_ERR_FORCE_LIMIT');
    // The robot gets there: then the stop.
    await vt.advance(500, 10);
    driver.pushState({ tcpPose: { ...HOME_POSE, positionMm: { x: 450, y: 10, z: 124.5 } }, mode: 'idle', wrench: zeroWrench(0) });
    assert.deepEqual(driver.kinds(), ['cartesian-target', 'stop']);
    assert.ok(events.some((e) => e.type === 'retract-done' && e.outcome === 'arrived'));
    // Force back under the limit + a new command: motion resumes, the problem clears.
    await sup.command(jog(0, 0, 1), SYSTEM);
    assert.equal(driver.lastCommand()?.kind, 'jog');
    assert.ok(!sup.status.problems.some((p) => p.id === 'force-limit'));
  });

  void test('a stop asked for during the retract waits for it: the probe is never left pressed', async (t) => {
    const { vt, driver, sup } = rig(t);
    driver.pushState({ tcpPose: { ...HOME_POSE, positionMm: { x: 450, y: 0, z: 110 } }, mode: 'jogging', wrench: zeroWrench(26) });
    let stopped = false;
    const p = sup.stop({ role: 'operator', actor: 'op-1' }, 'operator pressed stop').then(() => {
      stopped = true;
    });
    await vt.advance(200, 10);
    assert.deepEqual(driver.kinds(), ['cartesian-target'], 'no stop in the middle of the retract');
    assert.equal(stopped, false);
    driver.pushState({ tcpPose: { ...HOME_POSE, positionMm: { x: 450, y: 0, z: 120 } }, mode: 'idle', wrench: zeroWrench(2) });
    await p;
    assert.deepEqual(driver.kinds(), ['cartesian-target', 'stop']);
    assert.equal(stopped, true);
  });

  void test('still over the limit after the retract: motion stays refused', async (t) => {
    const { vt, driver, sup } = rig(t);
    driver.pushState({ wrench: zeroWrench(30) });
    await vt.advance(10 / 20 * 1000 + 1000 + 1, 10); // retract timeout
    assert.deepEqual(driver.kinds(), ['cartesian-target', 'stop']);
    driver.pushState({ wrench: zeroWrench(22) });
    await rejectsWith(sup.command(jog(0, 0, 1), SYSTEM), 'ECO3D_ERR_FORCE_LIMIT');
    driver.pushState({ wrench: zeroWrench(3) });
    await sup.command(jog(0, 0, 1), SYSTEM);
  });

  void test('a tilted probe retracts along its own axis', async (t) => {
    const { driver } = rig(t);
    const q = quatFromAxisAngle({ x: 1, y: 0, z: 0 }, Math.PI - 0.5); // 0.5 rad off vertical
    const pose: Pose = { positionMm: { x: 450, y: 0, z: 150 }, orientation: q };
    driver.pushState({ tcpPose: pose, wrench: zeroWrench(21) });
    const cmd = driver.sent[0]?.cmd;
    assert.ok(cmd?.kind === 'cartesian-target');
    const axis = toolAxis(pose);
    const d = { x: cmd.pose.positionMm.x - 450, y: cmd.pose.positionMm.y, z: cmd.pose.positionMm.z - 150 };
    for (const a of ['x', 'y', 'z'] as const) assert.ok(Math.abs(d[a] + 10 * axis[a]) < 1e-9);
  });

  void test('a failed retract stops at once', async (t) => {
    const { driver } = rig(t);
    driver.reply = (cmd) => (cmd.kind === 'cartesian-target' ? new Eco3dError('ECO3D_ERR_NACK', 'unreachable') : 'ack');
    driver.pushState({ wrench: zeroWrench(40) });
    await flushMicrotasks();
    assert.deepEqual(driver.kinds(), ['cartesian-target', 'stop']);
  });

  void test('no retract under a latched e-stop, just the stop', async (t) => {
    const { driver, sup } = rig(t);
    await sup.estop(BEDSIDE);
    driver.pushState({ wrench: zeroWrench(40) });
    assert.deepEqual(driver.kinds(), ['estop', 'stop']);
  });

  void test('sensor dropout during motion: controlled stop and a problem; at rest only the problem', async (t) => {
    const { driver, sup, events } = rig(t);
    await sup.command(jog(1), SYSTEM);
    driver.pushState({ mode: 'jogging', wrench: null });
    assert.deepEqual(driver.kinds(), ['jog', 'stop']);
    assert.ok(sup.status.problems.some((p) => p.id === 'sensor-dropout'));
    assert.equal(sup.status.forceN, null);
    assert.ok(events.some((e) => e.type === 'sensor-dropout' && e.stopped));
    driver.pushState({ mode: 'jogging', wrench: null });
    assert.deepEqual(driver.kinds(), ['jog', 'stop'], 'one stop per dropout');
    driver.pushState({ mode: 'stopped', wrench: zeroWrench(1) });
    assert.ok(!sup.status.problems.some((p) => p.id === 'sensor-dropout'));
    assert.equal(sup.status.forceN, 1);
  });
});

void describe('lifecycle', () => {
  void test('a hung driver: the command rejects with ECO3D_ERR_TIMEOUT', async (t) => {
    const { vt, driver, sup } = rig(t);
    driver.reply = () => 'hang';
    const expectation = rejectsWith(sup.command(jog(1), SYSTEM, 200), 'ECO3D_ERR_TIMEOUT');
    await vt.advance(301, 10);
    await expectation;
  });

  void test('a throwing listener never breaks the supervisor', async (t) => {
    const vt = new VirtualTime(t.mock.timers);
    const driver = new FakeRobotDriver();
    const sup = new SafetySupervisor(driver, {}, {
      now: vt.now,
      onEvent: () => {
        throw new Error('listener bug');
      },
    });
    await sup.estop(BEDSIDE);
    assert.equal(sup.status.estopLatched, true);
    sup.close();
  });

  void test('status$ replays the latest; close() is idempotent and refuses later commands', async (t) => {
    const { sup } = rig(t);
    let seen: boolean | undefined;
    const sub = sup.status$.subscribe((s) => {
      seen = s.motionAllowed;
    });
    assert.equal(seen, true);
    sub.unsubscribe();
    sup.close();
    sup.close();
    await rejectsWith(sup.command(jog(1), SYSTEM), 'ECO3D_ERR_CLOSED');
    await rejectsWith(sup.resetEstop(BEDSIDE), 'ECO3D_ERR_CLOSED');
  });
});

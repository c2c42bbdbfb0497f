// Integration: RosRobotDriver and an independent roslib client against the simulator's rosbridge
// server, over real WebSockets on loopback. Waits are on real signals (messages, link changes,
// commands reaching the robot), each with a timeout.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ros, Topic } from 'roslib';
import { BehaviorSubject, filter, firstValueFrom, ReplaySubject, Subject, timeout, type Observable } from 'rxjs';
import { Eco3dError } from '../protocols/errors.ts';
import type { LinkStatus, RobotCommand, RobotCommandKind, RobotDriver, RobotState, Vec3 } from '../protocols/robot.ts';
import { serveRosbridge, type RosbridgeServerHandle } from '../sim/rosbridge-server.ts';
import { SimRobotDriver } from '../sim/sim-driver.ts';
import { RosRobotDriver } from './ros-driver.ts';
import { rejectsWith } from '../protocols/testing.ts';

// ---------------------------------------------------------------------------------------------
// The robot behind the bridge: a small fake (states at 250 Hz, integrates jogs, records
// commands; can NACK, hold a command, or fall silent).

class FakeRobot implements RobotDriver {
  readonly kind = 'sim' as const;
  readonly commands$ = new Subject<RobotCommand>();
  readonly commands: RobotCommand[] = [];
  readonly nack = new Map<RobotCommandKind, string>();
  /** Commands of these kinds wait for the gate before they are acknowledged. */
  readonly held = new Set<RobotCommandKind>();
  silent = false;
  private releaseGate: () => void = () => undefined;
  private gate = new Promise<void>((resolve) => (this.releaseGate = resolve));
  private readonly states = new ReplaySubject<RobotState>(1);
  readonly state$ = this.states.asObservable();
  readonly link$ = new BehaviorSubject<LinkStatus>({ up: true, atMs: Date.now(), reason: 'fake' });
  positionMm: Vec3 = { x: 450, y: 0, z: 270 };
  private velMmPerS: Vec3 = { x: 0, y: 0, z: 0 };
  private seq = 0;
  private readonly timer = setInterval(() => this.tick(), 4);

  private tick(): void {
    if (this.silent) return;
    const dt = 0.004;
    const v = this.velMmPerS;
    this.positionMm = { x: this.positionMm.x + v.x * dt, y: this.positionMm.y + v.y * dt, z: this.positionMm.z + v.z * dt };
    this.states.next({
      tMs: performance.now(),
      seq: ++this.seq,
      mode: v.x !== 0 || v.y !== 0 || v.z !== 0 ? 'jogging' : 'idle',
      jointsRad: [0.1, -1.2, 1.3, -0.4, 1.5, 0.6],
      jointVelRadPerS: [0, 0, 0, 0, 0, 0.01],
      tcpPose: { positionMm: this.positionMm, orientation: { x: 1, y: 0, z: 0, w: 0 } },
      wrench: { forceN: { x: 0.5, y: 0, z: 3 }, torqueNm: { x: 0, y: 0.1, z: 0 } },
      faults: [],
    });
  }
  async connect(): Promise<void> {}
  async send(cmd: RobotCommand): Promise<void> {
    this.commands.push(cmd);
    this.commands$.next(cmd);
    if (this.held.has(cmd.kind)) await this.gate;
    const why = this.nack.get(cmd.kind);
    if (why !== undefined) throw new Eco3dError('ECO3D_ERR_NACK', why);
    if (cmd.kind === 'jog') this.velMmPerS = cmd.linearMmPerS;
    if (cmd.kind === 'stop' || cmd.kind === 'estop') this.velMmPerS = { x: 0, y: 0, z: 0 };
  }
  stats() {
    return { statesReceived: this.seq, commandsSent: this.commands.length, commandsFailed: 0, errors: {} };
  }
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.releaseGate();
  }
  nextCommand(kind: RobotCommandKind, ms = 2000): Promise<RobotCommand> {
    return firstValueFrom(this.commands$.pipe(filter((c) => c.kind === kind), timeout({ first: ms })));
  }
  count(kind: RobotCommandKind): number {
    return this.commands.filter((c) => c.kind === kind).length;
  }
}

// ---------------------------------------------------------------------------------------------

const within = <T>(obs: Observable<T>, pred: (v: T) => boolean, ms: number): Promise<T> =>
  firstValueFrom(obs.pipe(filter(pred), timeout({ first: ms })));

async function waitUntil(pred: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}


/** A ROS user's client: plain roslib, its default transport, nothing of ours. */
function rosUserConnect(url: string): Promise<Ros> {
  const ros = new Ros({ url });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('roslib did not connect within 3 s')), 3000);
    ros.on('connection', () => {
      clearTimeout(t);
      resolve(ros);
    });
    ros.on('error', (e) => {
      clearTimeout(t);
      reject(new Error(`roslib error: ${String(e)}`));
    });
  });
}

type JointStateMsg = { header: { stamp: { sec: number; nanosec: number } }; name: string[]; position: number[] };
type TwistStampedMsg = {
  header: { stamp: { sec: number; nanosec: number }; frame_id: string };
  twist: { linear: { x: number; y: number; z: number }; angular: { x: number; y: number; z: number } };
};

void describe('ROS link over the simulator rosbridge', { timeout: 14_000 }, () => {
  let robot: FakeRobot;
  let server: RosbridgeServerHandle;

  before(async () => {
    robot = new FakeRobot();
    server = await serveRosbridge(robot);
  });
  after(async () => {
    await server.close();
    await robot.close();
  });

  void test('an independent roslib client gets /joint_states at ≥ 100 Hz and jogs the robot through /jog', async () => {
    const ros = await rosUserConnect(server.url);
    try {
      const jointStates = new Topic<JointStateMsg>({ ros, name: '/joint_states', messageType: 'sensor_msgs/msg/JointState' });
      // The rate over windows of 100 messages; one window at ≥ 100 Hz out of four passes, so
      // that a stall of a busy host (other jobs, GC) does not fail the test, while a bridge that
      // cannot sustain 100 Hz fails every window.
      const windowRatesHz: number[] = [];
      await new Promise<void>((resolve, reject) => {
        let windowStartMs = 0;
        let inWindow = 0;
        const t = setTimeout(() => reject(new Error(`joint_states windows: ${windowRatesHz.map((r) => r.toFixed(1)).join(', ')} Hz`)), 6000);
        jointStates.subscribe((m) => {
          assert.equal(m.name.length, 6);
          const now = performance.now();
          if (inWindow === 0) windowStartMs = now;
          if (++inWindow < 101) return;
          windowRatesHz.push(100 / ((now - windowStartMs) / 1000));
          inWindow = 0;
          if (windowRatesHz.at(-1)! >= 100 || windowRatesHz.length >= 4) {
            clearTimeout(t);
            resolve();
          }
        });
      });
      jointStates.unsubscribe();
      assert.ok(Math.max(...windowRatesHz) >= 100, `joint_states at ${windowRatesHz.map((r) => r.toFixed(1)).join(', ')} Hz`);

      const jog = new Topic<TwistStampedMsg>({ ros, name: '/jog', messageType: 'geometry_msgs/msg/TwistStamped' });
      const x0 = robot.positionMm.x;
      const jogsBefore = robot.count('jog');
      const publishJog = (): void => {
        const nowMs = Date.now();
        jog.publish({
          header: { stamp: { sec: Math.floor(nowMs / 1000), nanosec: (nowMs % 1000) * 1e6 }, frame_id: 'base' },
          twist: { linear: { x: 0.05, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0 } }, // 5 cm/s along base x
        });
      };
      publishJog();
      const timer = setInterval(publishJog, 20);
      try {
        const first = await robot.nextCommand('jog');
        assert.ok(first.kind === 'jog');
        assert.equal(first.linearMmPerS.x, 50, '0.05 m/s arrives as 50 mm/s');
        await waitUntil(() => robot.positionMm.x - x0 > 5, 2000, 'the robot to move 5 mm along x');
        assert.ok(robot.count('jog') - jogsBefore >= 5);
      } finally {
        clearInterval(timer);
      }
      // A ROS user who stops publishing and leaves: the bridge stops the robot for them.
      const stop = robot.nextCommand('stop');
      ros.close();
      await stop;
    } finally {
      ros.close();
    }
  });

  void test('RosRobotDriver: state, command round trips, NACK, timeout, jog, close', async () => {
    const driver = new RosRobotDriver({ url: server.url });
    try {
      await driver.connect();
      const s = await within(driver.state$, () => true, 2000);
      assert.ok(Math.abs(s.tcpPose.positionMm.z - robot.positionMm.z) < 1, 'millimetres again after the metres on the wire');
      assert.deepEqual(s.jointsRad, [0.1, -1.2, 1.3, -0.4, 1.5, 0.6]);
      assert.deepEqual(s.wrench, { forceN: { x: 0.5, y: 0, z: 3 }, torqueNm: { x: 0, y: 0.1, z: 0 } });
      assert.equal(s.mode, 'idle');
      assert.ok(Math.abs(s.tMs - Date.now()) < 1000, 'tMs is the ROS stamp (wall clock), ms');
      const s2 = await within(driver.state$, (x) => x.seq > s.seq, 1000);
      assert.ok(s2.tMs > s.tMs);

      const stopSeen = robot.nextCommand('stop');
      await driver.send({ kind: 'stop' });
      await stopSeen;

      const target = robot.nextCommand('cartesian-target');
      await driver.send({ kind: 'cartesian-target', pose: { positionMm: { x: 460, y: -20, z: 250 }, orientation: { x: 1, y: 0, z: 0, w: 0 } }, speedMmPerS: 30 });
      const t = await target;
      assert.ok(t.kind === 'cartesian-target');
      assert.ok(Math.abs(t.pose.positionMm.x - 460) < 1e-9 && Math.abs(t.pose.positionMm.y + 20) < 1e-9 && Math.abs(t.pose.positionMm.z - 250) < 1e-9);
      assert.ok(Math.abs(t.speedMmPerS - 30) < 1e-9);

      const joints = robot.nextCommand('joint-target');
      await driver.send({ kind: 'joint-target', jointsRad: [0, -1, 1, 0, 1, 0], speedScale: 0.5 });
      const j = await joints;
      assert.ok(j.kind === 'joint-target');
      assert.deepEqual(j.jointsRad, [0, -1, 1, 0, 1, 0]);

      robot.nack.set('reset', 'fault still active');
      try {
        await assert.rejects(driver.send({ kind: 'reset' }), (err: unknown) => {
          assert.ok(err instanceof Eco3dError);
          assert.equal(err.code, 'ECO3D_ERR_NACK');
          assert.match(err.message, /fault still active/);
          assert.equal(err.details?.remoteCode, 'ECO3D_ERR_NACK');
          return true;
        });
      } finally {
        robot.nack.delete('reset');
      }

      server.setLatencyMs(300);
      try {
        await rejectsWith(driver.send({ kind: 'stop' }, 100), 'ECO3D_ERR_TIMEOUT');
      } finally {
        server.setLatencyMs(0);
      }
      await driver.send({ kind: 'stop' }); // the late response of the timed-out call is ignored
      assert.equal(driver.stats().pendingCommands, 0);

      const jogSeen = robot.nextCommand('jog');
      await driver.send({ kind: 'jog', linearMmPerS: { x: 0, y: 12, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0.1 } });
      const jg = await jogSeen;
      assert.ok(jg.kind === 'jog');
      assert.ok(Math.abs(jg.linearMmPerS.y - 12) < 1e-9);
      assert.equal(jg.angularRadPerS.z, 0.1);
      await driver.send({ kind: 'stop' });

      await rejectsWith(driver.send({ kind: 'jog', linearMmPerS: { x: NaN, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } }), 'ECO3D_ERR_NOT_FINITE');

      const st = driver.stats();
      assert.ok(st.statesReceived > 0 && st.commandsSent >= 8 && st.commandsFailed >= 3, JSON.stringify(st));
    } finally {
      await Promise.all([driver.close(), driver.close()]);
    }
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_CLOSED');
    await rejectsWith(driver.connect(), 'ECO3D_ERR_CLOSED');
  });

  void test('a refused jog (no response exists for jogs) is counted as a NACK from the status it causes', async () => {
    const driver = new RosRobotDriver({ url: server.url });
    robot.nack.set('jog', 'e-stop latched');
    try {
      await driver.connect();
      await driver.send({ kind: 'jog', linearMmPerS: { x: 1, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } });
      await waitUntil(() => (driver.stats().errors.ECO3D_ERR_NACK ?? 0) >= 1, 2000, 'the refusal to be counted');
    } finally {
      robot.nack.delete('jog');
      await driver.close();
    }
  });

  void test('a silent robot takes the link down; it comes back by itself', async () => {
    const driver = new RosRobotDriver({ url: server.url, stateTimeoutMs: 300 });
    try {
      await driver.connect();
      await within(driver.state$, () => true, 2000);
      robot.silent = true;
      const down = await within(driver.link$, (l) => !l.up, 3000);
      assert.match(down.reason, /no \/joint_states/);
      robot.silent = false;
      await within(driver.link$, (l) => l.up, 5000);
      const seq = driver.stats().statesReceived;
      await waitUntil(() => driver.stats().statesReceived > seq, 2000, 'states after reconnecting');
    } finally {
      robot.silent = false;
      await driver.close();
    }
  });
});

void test('rosbridge closes mid-jog: the robot gets stop, the link goes down, pending commands fail, then it reconnects', { timeout: 14_000 }, async () => {
  const robot = new FakeRobot();
  // A long server-side command timeout, so that the held reset below stays pending at the server.
  const first = await serveRosbridge(robot, { commandTimeoutMs: 10_000 });
  const driver = new RosRobotDriver({ url: first.url, backoffInitialMs: 50, backoffMaxMs: 400 });
  let second: RosbridgeServerHandle | undefined;
  const jogErrors: unknown[] = [];
  let jogTimer: NodeJS.Timeout | undefined;
  try {
    await driver.connect();
    await within(driver.state$, () => true, 2000);

    // Jog continuously, as a tele-operation would.
    const jogOnce = (): void => {
      driver.send({ kind: 'jog', linearMmPerS: { x: 20, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } }).catch((e: unknown) => jogErrors.push(e));
    };
    jogTimer = setInterval(jogOnce, 20);
    await waitUntil(() => robot.count('jog') >= 5, 2000, 'jogs at the robot');

    // A command the robot holds, so that it is still pending when the bridge goes away.
    robot.held.add('reset');
    const resetSeen = robot.nextCommand('reset');
    const pending = driver.send({ kind: 'reset' }, 10_000);
    await resetSeen;

    const stopAtRobot = robot.nextCommand('stop');
    const linkDown = within(driver.link$, (l) => !l.up, 3000);
    await first.close();
    await stopAtRobot;
    const down = await linkDown;
    assert.match(down.reason, /rosbridge connection closed/);
    await rejectsWith(pending, 'ECO3D_ERR_LINK_LOST');
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_LINK_LOST');
    await waitUntil(() => jogErrors.length > 0, 1000, 'a jog to be refused while down');
    assert.ok(jogErrors.every((e) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_LINK_LOST'));
    clearInterval(jogTimer);
    jogTimer = undefined;

    // The bridge comes back on the same port: the driver reconnects by itself.
    robot.held.clear();
    second = await serveRosbridge(robot, { port: first.port });
    await within(driver.link$, (l) => l.up, 5000);
    await within(driver.state$, (s) => s.seq > 0, 2000);
    await driver.send({ kind: 'stop' });
    assert.ok(driver.stats().connects >= 2 && driver.stats().disconnects >= 1);
  } finally {
    if (jogTimer !== undefined) clearInterval(jogTimer);
    await driver.close();
    await second?.close();
    await first.close();
    await robot.close();
  }
});

void test('no server: connect() rejects with LINK_LOST in time and retries; close() mid-attempt leaves nothing running', { timeout: 10_000 }, async () => {
  assert.throws(() => new RosRobotDriver({ url: 'http://robot:9090' }), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_CONFIG');
  // A port that was just free: bind and release it, nobody listens there now.
  const robot = new FakeRobot();
  const probe = await serveRosbridge(robot);
  await probe.close();
  await robot.close();
  const driver = new RosRobotDriver({ url: probe.url, connectTimeoutMs: 400, backoffInitialMs: 20, backoffMaxMs: 100 });
  try {
    const t0 = performance.now();
    await rejectsWith(driver.connect(), 'ECO3D_ERR_LINK_LOST');
    assert.ok(performance.now() - t0 < 1000);
    assert.ok(driver.stats().connectAttempts >= 2, 'still retrying');
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_LINK_LOST');
  } finally {
    await driver.close();
  }
  assert.equal(driver.linkState, 'closed');
});

void test('the real simulator behind the bridge: a ROS user jogs it up, RosRobotDriver sees it move and stop', { timeout: 10_000 }, async () => {
  const sim = new SimRobotDriver();
  await sim.connect();
  const server = await serveRosbridge(sim);
  const driver = new RosRobotDriver({ url: server.url });
  let jogTimer: NodeJS.Timeout | undefined;
  try {
    await driver.connect();
    const s0 = await within(driver.state$, () => true, 2000);
    const ros = await rosUserConnect(server.url);
    const jog = new Topic<TwistStampedMsg>({ ros, name: '/jog', messageType: 'geometry_msgs/TwistStamped' });
    const up = (): void =>
      jog.publish({ header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'base' }, twist: { linear: { x: 0, y: 0, z: 0.02 }, angular: { x: 0, y: 0, z: 0 } } });
    up();
    jogTimer = setInterval(up, 20);
    const moving = await within(driver.state$, (s) => s.tcpPose.positionMm.z - s0.tcpPose.positionMm.z > 3, 4000);
    assert.equal(moving.mode, 'jogging');
    clearInterval(jogTimer);
    jogTimer = undefined;
    ros.close(); // the user leaves mid-jog: the bridge stops the robot
    await within(driver.state$, (s) => s.mode !== 'jogging', 2000);
    await driver.send({ kind: 'cartesian-target', pose: s0.tcpPose, speedMmPerS: 50 });
    await within(driver.state$, (s) => Math.abs(s.tcpPose.positionMm.z - s0.tcpPose.positionMm.z) < 0.5 && s.mode !== 'moving', 4000);
  } finally {
    if (jogTimer !== undefined) clearInterval(jogTimer);
    await driver.close();
    await server.close();
    await sim.close();
  }
});

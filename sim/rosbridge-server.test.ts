// Protocol-level tests of the rosbridge server with a raw `ws` client: what a buggy or hostile
// client sends must become `status` errors, and the bridge must keep serving.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { BehaviorSubject, filter, firstValueFrom, ReplaySubject, Subject, timeout } from 'rxjs';
import { WebSocket } from 'ws';
import { Eco3dError } from '../protocols/errors.ts';
import type { ImageFrame } from '../protocols/imaging.ts';
import type { LinkStatus, RobotCommand, RobotCommandKind, RobotDriver, RobotState, Vec3 } from '../protocols/robot.ts';
import { serveRosbridge, type RosbridgeServerHandle } from './rosbridge-server.ts';

// ---------------------------------------------------------------------------------------------
// A small fake robot: states at 250 Hz, integrates jogs, records commands, NACKs on demand.

class FakeDriver implements RobotDriver {
  readonly kind = 'sim' as const;
  readonly commands$ = new Subject<RobotCommand>();
  readonly commands: RobotCommand[] = [];
  readonly nack = new Map<RobotCommandKind, string>();
  private readonly states = new ReplaySubject<RobotState>(1);
  readonly state$ = this.states.asObservable();
  readonly link$ = new BehaviorSubject<LinkStatus>({ up: true, atMs: Date.now(), reason: 'fake' });
  positionMm: Vec3 = { x: 450, y: 0, z: 270 };
  private velMmPerS: Vec3 = { x: 0, y: 0, z: 0 };
  private seq = 0;
  private readonly timer = setInterval(() => this.emit(), 4);

  private emit(): void {
    const dt = 0.004;
    this.positionMm = { x: this.positionMm.x + this.velMmPerS.x * dt, y: this.positionMm.y + this.velMmPerS.y * dt, z: this.positionMm.z + this.velMmPerS.z * dt };
    this.states.next({
      tMs: performance.now(),
      seq: ++this.seq,
      mode: this.velMmPerS.x !== 0 || this.velMmPerS.y !== 0 || this.velMmPerS.z !== 0 ? 'jogging' : 'idle',
      jointsRad: [0, -1, 1, 0, 1.5, 0],
      jointVelRadPerS: [0, 0, 0, 0, 0, 0],
      tcpPose: { positionMm: this.positionMm, orientation: { x: 1, y: 0, z: 0, w: 0 } },
      wrench: { forceN: { x: 0, y: 0, z: 2 }, torqueNm: { x: 0, y: 0, z: 0 } },
      faults: [],
    });
  }

  async connect(): Promise<void> {}
  async send(cmd: RobotCommand): Promise<void> {
    this.commands.push(cmd);
    this.commands$.next(cmd);
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
  }
  nextCommand(kind: RobotCommandKind, ms = 2000): Promise<RobotCommand> {
    return firstValueFrom(this.commands$.pipe(filter((c) => c.kind === kind), timeout({ first: ms })));
  }
}

// ---------------------------------------------------------------------------------------------
// A raw client: every frame it receives, and a way to wait for one.

type Json = Record<string, any>;

class RawClient {
  readonly received: Json[] = [];
  private readonly incoming = new Subject<Json>();
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const m = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : '{}') as Json;
      this.received.push(m);
      this.incoming.next(m);
    });
  }
  static async open(url: string): Promise<RawClient> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new RawClient(ws);
  }
  send(m: unknown): void {
    this.ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  }
  /** The next frame (from now on) that matches. */
  next(pred: (m: Json) => boolean, ms = 2000): Promise<Json> {
    return firstValueFrom(this.incoming.pipe(filter(pred), timeout({ first: ms })));
  }
  /** `n` matching frames from now on, with their arrival times. */
  collect(pred: (m: Json) => boolean, n: number, ms = 3000): Promise<{ m: Json; atMs: number }[]> {
    return new Promise((resolve, reject) => {
      const got: { m: Json; atMs: number }[] = [];
      const sub = this.incoming.pipe(filter(pred)).subscribe((m) => {
        got.push({ m, atMs: performance.now() });
        if (got.length >= n) {
          clearTimeout(t);
          sub.unsubscribe();
          resolve(got);
        }
      });
      const t = setTimeout(() => {
        sub.unsubscribe();
        reject(new Error(`only ${got.length} of ${n} messages within ${ms} ms`));
      }, ms);
    });
  }
  async call(service: string, args: unknown, id: string): Promise<Json> {
    const reply = this.next((m) => m.op === 'service_response' && m.id === id);
    this.send({ op: 'call_service', id, service, args });
    return reply;
  }
  close(): void {
    this.ws.terminate();
  }
}

const isStatusError = (m: Json): boolean => m.op === 'status' && m.level === 'error';
const isPublish = (topic: string) => (m: Json): boolean => m.op === 'publish' && m.topic === topic;

async function waitUntil(pred: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = performance.now();
  while (!pred()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// ---------------------------------------------------------------------------------------------

void describe('rosbridge server, protocol level', { timeout: 12_000 }, () => {
  let driver: FakeDriver;
  let server: RosbridgeServerHandle;

  before(async () => {
    driver = new FakeDriver();
    server = await serveRosbridge(driver);
  });
  after(async () => {
    await server.close();
    await driver.close();
  });

  void test('bad JSON, non-messages, unknown ops and bad shapes give status errors; the connection survives', async () => {
    const c = await RawClient.open(server.url);
    try {
      const cases: { frame: unknown; expect: RegExp; id?: string }[] = [
        { frame: '{"op": "subscribe", ', expect: /ECO3D_ERR_BAD_REQUEST: bad JSON/ },
        { frame: '[1, 2, 3]', expect: /not a rosbridge message/ },
        { frame: 'null', expect: /not a rosbridge message/ },
        { frame: { op: 42 }, expect: /not a rosbridge message/ },
        { frame: { op: 'teleport', id: 'u1' }, expect: /ECO3D_ERR_UNKNOWN_MESSAGE: unknown op "teleport"/, id: 'u1' },
        { frame: { op: 'subscribe', id: 's1' }, expect: /bad "subscribe" message/, id: 's1' },
        { frame: { op: 'subscribe', id: 's2', topic: '/joint_states', throttle_rate: -5 }, expect: /throttle_rate/, id: 's2' },
        { frame: { op: 'subscribe', id: 's3', topic: '/secret' }, expect: /cannot subscribe to "\/secret"/, id: 's3' },
        { frame: { op: 'subscribe', id: 's4', topic: '/joint_states', type: 'std_msgs/String' }, expect: /has type/, id: 's4' },
        { frame: { op: 'advertise', id: 'a1', topic: '/jog', type: 'geometry_msgs/Twist' }, expect: /has type/, id: 'a1' },
        { frame: { op: 'publish', id: 'p1', topic: '/joint_states', msg: {} }, expect: /accepts publishes on \/jog only/, id: 'p1' },
        { frame: { op: 'publish', id: 'p2', topic: '/jog', msg: { twist: { linear: { x: 'fast' } } } }, expect: /TwistStamped/, id: 'p2' },
        // JSON has no NaN: a NaN sent by JSON.stringify arrives as null and must be refused.
        { frame: { op: 'publish', id: 'p3', topic: '/jog', msg: { twist: { linear: { x: NaN, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0 } } } }, expect: /TwistStamped/, id: 'p3' },
        { frame: { op: 'publish', id: 'p4', topic: '/jog', msg: { header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'probe' }, twist: { linear: { x: 0, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0 } } } }, expect: /frame "base"/, id: 'p4' },
        { frame: { op: 'advertise_service', type: 'std_srvs/Trigger', service: '/mine' }, expect: /not supported/ },
        { frame: { op: 'send_action_goal', id: 'g1', action: '/x', action_type: 'a/B' }, expect: /not supported/, id: 'g1' },
      ];
      for (const k of cases) {
        const reply = c.next(isStatusError);
        c.send(k.frame);
        const m = await reply;
        assert.match(String(m.msg), k.expect, `frame ${JSON.stringify(k.frame)}`);
        if (k.id !== undefined) assert.equal(m.id, k.id);
      }
      // A binary frame is refused too.
      const bin = c.next(isStatusError);
      c.ws.send(Buffer.from([0xa1, 0x62, 0x6f, 0x70]), { binary: true });
      assert.match(String((await bin).msg), /binary frames/);

      // Service calls with bad arguments fail the call (result false) and say why.
      const badPose = await c.call('/move_to_pose', { pose: { pose: {} }, speed_mps: 0.05 }, 'c1');
      assert.equal(badPose.result, false);
      assert.match(String(badPose.values), /MoveToPose request/);
      const unknown = await c.call('/self_destruct', {}, 'c2');
      assert.equal(unknown.result, false);
      assert.match(String(unknown.values), /unknown service/);

      // Still alive on the same connection: a subscription streams, a service answers.
      c.send({ op: 'subscribe', id: 'js', topic: '/joint_states', type: 'sensor_msgs/msg/JointState' });
      const js = await c.next(isPublish('/joint_states'));
      assert.deepEqual(js.msg.name, ['shoulder_pan_joint', 'shoulder_lift_joint', 'elbow_joint', 'wrist_1_joint', 'wrist_2_joint', 'wrist_3_joint']);
      assert.equal(js.msg.position.length, 6);
      assert.equal(typeof js.msg.header.stamp.sec, 'number');
      const stop = await c.call('/stop', {}, 'c3');
      assert.deepEqual({ result: stop.result, values: stop.values }, { result: true, values: { success: true, message: '' } });
      assert.ok(server.stats().statusErrors >= 17);
    } finally {
      c.close();
    }
  });

  void test('topics carry SI units and our frames', async () => {
    const c = await RawClient.open(server.url);
    try {
      c.send({ op: 'subscribe', topic: '/tcp_pose' });
      c.send({ op: 'subscribe', topic: '/wrench' });
      c.send({ op: 'subscribe', topic: '/robot_mode' });
      const [pose, wrench, mode] = await Promise.all([
        c.next(isPublish('/tcp_pose')),
        c.next(isPublish('/wrench')),
        c.next(isPublish('/robot_mode')),
      ]);
      assert.equal(pose.msg.header.frame_id, 'base');
      assert.ok(Math.abs(pose.msg.pose.position.z - driver.positionMm.z / 1000) < 0.01, 'metres, not millimetres');
      assert.equal(wrench.msg.header.frame_id, 'probe');
      assert.equal(wrench.msg.wrench.force.z, 2);
      assert.equal(mode.msg.data, 'idle');
    } finally {
      c.close();
    }
  });

  void test('throttle_rate limits one subscription without slowing another client', async () => {
    const slow = await RawClient.open(server.url);
    const fast = await RawClient.open(server.url);
    try {
      slow.send({ op: 'subscribe', id: 'slow', topic: '/joint_states', throttle_rate: 100 });
      fast.send({ op: 'subscribe', id: 'fast', topic: '/joint_states' });
      const [s, f] = await Promise.all([slow.collect(isPublish('/joint_states'), 8, 3000), fast.collect(isPublish('/joint_states'), 60, 3000)]);
      // Median gaps: a stall of a busy CI host lengthens one gap, not the median.
      const medianGap = (xs: { atMs: number }[]): number => {
        const gaps = xs.slice(1).map((x, i) => x.atMs - xs[i]!.atMs).sort((a, b) => a - b);
        return gaps[Math.floor(gaps.length / 2)]!;
      };
      const slowGapMs = medianGap(s);
      const fastGapMs = medianGap(f);
      assert.ok(slowGapMs > 85 && slowGapMs < 125, `throttled gap ${slowGapMs.toFixed(1)} ms`);
      assert.ok(fastGapMs < 10, `unthrottled gap ${fastGapMs.toFixed(1)} ms (≥ 100 Hz)`);

      // Unsubscribing by id stops the stream: after it, a service round trip, then a few ticks.
      slow.send({ op: 'unsubscribe', id: 'slow', topic: '/joint_states' });
      await slow.call('/stop', {}, 'barrier');
      const seen = slow.received.length;
      const ticks = server.stats().ticks;
      await waitUntil(() => server.stats().ticks >= ticks + 30, 2000, '30 ticks');
      assert.equal(slow.received.filter(isPublish('/joint_states')).length, slow.received.slice(0, seen).filter(isPublish('/joint_states')).length);
    } finally {
      slow.close();
      fast.close();
    }
  });

  void test('a NACK from the robot is a successful call whose response says success: false, with the code', async () => {
    const c = await RawClient.open(server.url);
    driver.nack.set('reset', 'cause still present');
    try {
      const r = await c.call('/reset', [], 'r1');
      assert.equal(r.result, true);
      assert.equal(r.values.success, false);
      assert.equal(r.values.message, 'ECO3D_ERR_NACK: cause still present');
      const move = c.call('/move_to_pose', { pose: { header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'base' }, pose: { position: { x: 0.45, y: 0.01, z: 0.2 }, orientation: { x: 1, y: 0, z: 0, w: 0 } } }, speed_mps: 0.05 }, 'm1');
      const cmd = await driver.nextCommand('cartesian-target');
      assert.equal((await move).values.success, true);
      assert.ok(cmd.kind === 'cartesian-target');
      assert.deepEqual(cmd.pose.positionMm, { x: 450, y: 10, z: 200 });
      assert.equal(cmd.speedMmPerS, 50);
    } finally {
      driver.nack.delete('reset');
      c.close();
    }
  });

  void test('a jogging client that vanishes makes the bridge send stop', async () => {
    const c = await RawClient.open(server.url);
    c.send({ op: 'advertise', topic: '/jog', type: 'geometry_msgs/TwistStamped' });
    const jogMsg = { header: { stamp: { sec: 0, nanosec: 0 }, frame_id: 'base' }, twist: { linear: { x: 0.01, y: 0, z: 0 }, angular: { x: 0, y: 0, z: 0 } } };
    const firstJog = driver.nextCommand('jog');
    c.send({ op: 'publish', topic: '/jog', msg: jogMsg });
    const jog = await firstJog;
    assert.ok(jog.kind === 'jog');
    assert.equal(jog.linearMmPerS.x, 10, 'm/s → mm/s');
    const stop = driver.nextCommand('stop');
    c.close(); // abrupt: no close handshake
    await stop;
    await waitUntil(() => server.stats().stopsOnDisconnect >= 1, 1000, 'stop counted');
  });

  void test('latency injection delays what the server sends; dropAllClients closes sockets and the server keeps serving', async () => {
    const c = await RawClient.open(server.url);
    server.setLatencyMs(150);
    const t0 = performance.now();
    await c.call('/stop', {}, 'slow');
    assert.ok(performance.now() - t0 >= 145, 'response delayed');
    server.setLatencyMs(0);
    const closed = new Promise<number>((resolve) => c.ws.once('close', (code) => resolve(code)));
    server.dropAllClients();
    assert.equal(await closed, 1006, 'abrupt close, no handshake');
    const again = await RawClient.open(server.url);
    try {
      assert.equal((await again.call('/stop', {}, 'again')).result, true);
    } finally {
      again.close();
    }
  });
});

void test('close() is idempotent, terminates clients, releases the port and leaves no timers', async () => {
  const timersBefore = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const driver = new FakeDriver();
  const server = await serveRosbridge(driver, { publishRateHz: 200 });
  const c = await RawClient.open(server.url);
  c.send({ op: 'subscribe', topic: '/joint_states' });
  await c.next(isPublish('/joint_states'));
  server.setLatencyMs(1000); // leaves delayed sends pending; close() must clear them
  c.send({ op: 'call_service', id: 'x', service: '/stop' });
  await waitUntil(() => server.stats().serviceCalls >= 1, 1000, 'the call to arrive');
  const closed = new Promise<void>((resolve) => c.ws.once('close', () => resolve()));
  await Promise.all([server.close(), server.close()]);
  await server.close();
  await closed;
  assert.equal(server.closed, true);
  await driver.close();
  // The same port can be bound again at once.
  const d2 = new FakeDriver();
  const s2 = await serveRosbridge(d2, { port: server.port });
  assert.equal(s2.port, server.port);
  await s2.close();
  await d2.close();
  const timersAfter = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  assert.equal(timersAfter, timersBefore, 'no timer left behind');
});

void test('image topic (opt-in): frames published as sensor_msgs/Image mono8, base64 data, stamp from the frame; off by default', async () => {
  const driver = new FakeDriver();
  const frames$ = new Subject<ImageFrame>();
  const server = await serveRosbridge(driver, { imageTopic: { frames$ } });
  const plain = await serveRosbridge(driver);
  const c = await RawClient.open(server.url);
  const p = await RawClient.open(plain.url);
  try {
    // Without the option the topic does not exist, as before.
    p.send({ op: 'subscribe', id: 's0', topic: '/us/image' });
    assert.match((await p.next(isStatusError)).msg as string, /cannot subscribe to "\/us\/image"/);
    await assert.rejects(serveRosbridge(driver, { imageTopic: { frames$, topic: '/tcp_pose' } }), { code: 'ECO3D_ERR_CONFIG' });

    c.send({ op: 'subscribe', id: 'bad', topic: '/us/image', type: 'sensor_msgs/CompressedImage' });
    assert.match((await c.next(isStatusError)).msg as string, /has type sensor_msgs\/msg\/Image/);
    c.send({ op: 'subscribe', id: 'img', topic: '/us/image', type: 'sensor_msgs/Image' });
    await waitUntil(() => server.stats().messagesIn >= 2, 1000, 'the subscription');
    const got = c.next(isPublish('/us/image'));
    frames$.next({ index: 0, tMs: 1_500.25, width: 3, height: 2, pixels: new Uint8Array([0, 1, 2, 253, 254, 255]) });
    const m = (await got).msg as Json;
    assert.deepEqual(m.header, { stamp: { sec: 1, nanosec: 500_250_000 }, frame_id: 'us_image' });
    assert.deepEqual({ h: m.height, w: m.width, enc: m.encoding, be: m.is_bigendian, step: m.step }, { h: 2, w: 3, enc: 'mono8', be: 0, step: 3 });
    assert.deepEqual([...Buffer.from(m.data as string, 'base64')], [0, 1, 2, 253, 254, 255]);
    assert.equal(server.stats().imageFrames, 1);
    // The robot topics are untouched.
    c.send({ op: 'subscribe', topic: '/joint_states' });
    await c.next(isPublish('/joint_states'));
    c.send({ op: 'unsubscribe', id: 'img', topic: '/us/image' });
  } finally {
    c.close();
    p.close();
    await server.close();
    await plain.close();
    await driver.close();
  }
  assert.equal(frames$.observed, false, 'close() unsubscribes the frames');
});

// Integration tests of the serial stack over a REAL pseudo-terminal: sim/serial-server.ts (the
// device, spawning socat) and SerialRobotDriver (the host) in one process, with a small fake
// robot behind the server. Every wait is on a real signal (an observable value, a promise) with
// a timeout; nothing sleeps and hopes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, test, type TestContext } from 'node:test';
import { BehaviorSubject, filter, firstValueFrom, type Observable, ReplaySubject, Subject, timeout } from 'rxjs';
import { SerialPort } from 'serialport';
import { Eco3dError } from '../protocols/errors.ts';
import type { DriverStats, LinkStatus, RobotCommand, RobotDriver, RobotState } from '../protocols/robot.ts';
import { encodeFrame, SerialFrameDecoder, type SerialMessage } from '../protocols/serial.ts';
import { startSerialServer, type SerialServerHandle, type SerialServerOptions } from '../sim/serial-server.ts';
import { SerialRobotDriver, type SerialRobotDriverOptions } from './serial-driver.ts';
import { rejectsWith } from '../protocols/testing.ts';

// ---------------------------------------------------------------------------------------------
// A fake robot: states at 500 Hz, commands recorded, replies scripted per command kind.

type Reply = { readonly kind: 'ack' } | { readonly kind: 'refuse'; readonly error: Eco3dError } | { readonly kind: 'hang' };

class FakeRobot implements RobotDriver {
  readonly kind = 'sim' as const;
  private readonly states = new ReplaySubject<RobotState>(1);
  readonly state$ = this.states.asObservable();
  readonly link$: Observable<LinkStatus> = new BehaviorSubject<LinkStatus>({ up: true, atMs: Date.now(), reason: 'fake' });
  readonly commands$ = new Subject<RobotCommand>();
  readonly received: RobotCommand[] = [];
  readonly replies = new Map<RobotCommand['kind'], Reply>();
  private readonly hung: (() => void)[] = [];
  private seq = 0;
  private readonly timer: NodeJS.Timeout;

  /** `statesPerTick` > 1 makes a robot much faster than any stream rate, even on a loaded machine. */
  constructor(statesPerTick = 1) {
    this.timer = setInterval(() => {
      for (let i = 0; i < statesPerTick; i++) this.states.next(this.makeState());
    }, 2);
  }

  private makeState(): RobotState {
    this.seq++;
    return {
      tMs: performance.now(),
      seq: this.seq,
      mode: 'idle',
      jointsRad: [0, -1.5, 1.5, 0, 1.57, 0],
      jointVelRadPerS: [0, 0, 0, 0, 0, 0],
      tcpPose: { positionMm: { x: 450, y: 0, z: 270 }, orientation: { x: 1, y: 0, z: 0, w: 0 } },
      wrench: { forceN: { x: 0, y: 0, z: 1.5 }, torqueNm: { x: 0, y: 0, z: 0 } },
      faults: [],
    };
  }

  async connect(): Promise<void> {}

  send(cmd: RobotCommand): Promise<void> {
    this.received.push(cmd);
    this.commands$.next(cmd);
    const reply = this.replies.get(cmd.kind) ?? { kind: 'ack' };
    switch (reply.kind) {
      case 'ack':
        return Promise.resolve();
      case 'refuse':
        return Promise.reject(reply.error);
      case 'hang':
        return new Promise<void>((resolve) => this.hung.push(resolve));
    }
  }

  stats(): DriverStats {
    return { statesReceived: 0, commandsSent: this.received.length, commandsFailed: 0, errors: {} };
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const release of this.hung.splice(0)) release();
    this.states.complete();
    this.commands$.complete();
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

const WAIT_MS = 3000;

/** The first value of `obs` that passes `pred`, or a rejection after `ms`. */
function firstMatch<T>(obs: Observable<T>, pred: (v: T) => boolean, ms = WAIT_MS, what = 'value'): Promise<T> {
  return firstValueFrom(obs.pipe(filter(pred), timeout({ first: ms, with: () => { throw new Error(`timed out after ${ms} ms waiting for ${what}`); } })));
}

/** Resolves after `n` more states. */
function nStates(driver: SerialRobotDriver, n: number, ms = WAIT_MS): Promise<RobotState> {
  let seen = 0;
  return firstMatch(driver.state$, () => ++seen > n, ms, `${n} states`);
}


const tmpDirs: string[] = [];
after(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

interface Rig {
  readonly robot: FakeRobot;
  readonly server: SerialServerHandle;
  readonly driver: SerialRobotDriver;
  readonly path: string;
}

/**
 * Timeouts for tests that are not about timing: generous, so that a loaded CI machine (the
 * server, socat and the driver all share it) never turns scheduler jitter into a link loss.
 * The tests of the silence and watchdog mechanisms set the real 250 ms values explicitly.
 */
const RELAXED = { linkTimeoutMs: 1500, watchdogMs: 1500, handshakeTimeoutMs: 3000 } as const;

/** A server on a fresh PTY path, with a driver (connected unless told otherwise); torn down after the test. */
async function rig(
  t: TestContext,
  opts: {
    server?: Partial<SerialServerOptions>;
    driver?: Partial<SerialRobotDriverOptions>;
    connect?: 'connect' | 'no-connect';
    statesPerTick?: number;
  } = {},
): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-serial-'));
  tmpDirs.push(dir);
  const path = join(dir, 'robot.tty');
  const robot = new FakeRobot(opts.statesPerTick);
  const server = await startSerialServer(robot, { path, watchdogMs: RELAXED.watchdogMs, ...opts.server });
  const driver = new SerialRobotDriver({
    path,
    reconnectPollMs: 50,
    linkTimeoutMs: RELAXED.linkTimeoutMs,
    handshakeTimeoutMs: RELAXED.handshakeTimeoutMs,
    ...opts.driver,
  });
  t.after(async () => {
    await driver.close();
    await server.close();
    await robot.close();
  });
  if ((opts.connect ?? 'connect') === 'connect') await driver.connect();
  return { robot, server, driver, path };
}

// ---------------------------------------------------------------------------------------------

void describe('SerialRobotDriver over a real PTY', () => {
  void test('handshake, state stream and a command ACK round trip', async (t) => {
    const { robot, driver } = await rig(t);
    assert.equal(driver.state, 'up');
    const link = await firstMatch(driver.link$, () => true);
    assert.equal(link.up, true);
    assert.equal(driver.deviceInfo?.deviceId, 'eco3d-sim-serial');
    assert.equal(driver.deviceInfo?.sessionVersion, 1);

    const s = await nStates(driver, 25);
    assert.equal(s.mode, 'idle');
    assert.deepEqual(s.tcpPose.positionMm, { x: 450, y: 0, z: 270 });
    assert.ok(s.wrench !== null && Math.abs(s.wrench.forceN.z - 1.5) < 1e-6);

    const cmd: RobotCommand = { kind: 'cartesian-target', pose: { positionMm: { x: 451.125, y: -3, z: 260 }, orientation: { x: 1, y: 0, z: 0, w: 0 } }, speedMmPerS: 12.5 };
    await driver.send(cmd);
    assert.deepEqual(robot.received.at(-1), cmd, 'the robot got exactly what was sent (float64 targets)');
    await driver.send({ kind: 'stop' });
    const st = driver.stats();
    assert.equal(st.commandsSent, 2);
    assert.equal(st.commandsFailed, 0);
    assert.ok(st.statesReceived >= 25);
    assert.deepEqual(st.errors, {}, 'a clean link has no transport errors');
  });

  void test('a NACK surfaces as ECO3D_ERR_NACK with the reason and the robot-side code', async (t) => {
    const { robot, driver } = await rig(t);
    robot.replies.set('joint-target', { kind: 'refuse', error: new Eco3dError('ECO3D_ERR_ESTOP_LATCHED', 'e-stop is latched') });
    const err = await rejectsWith(driver.send({ kind: 'joint-target', jointsRad: [0, 0, 0, 0, 0, 0], speedScale: 0.5 }), 'ECO3D_ERR_NACK');
    assert.match(err.message, /estopped/);
    assert.match(err.message, /e-stop is latched/);
    assert.equal(err.details?.['robotCode'], 'ECO3D_ERR_ESTOP_LATCHED');
    await driver.send({ kind: 'stop' }); // the link is fine after a refusal
    assert.equal(driver.stats().commandsFailed, 1);
  });

  void test('a command nobody acknowledges in time rejects with ECO3D_ERR_TIMEOUT; the late ACK is counted', async (t) => {
    const { server, driver } = await rig(t);
    server.setLatencyMs(120); // below the link timeout: slow, not dead
    await rejectsWith(driver.send({ kind: 'stop' }, 40), 'ECO3D_ERR_TIMEOUT');
    await firstMatch(
      driver.state$,
      () => (driver.stats().errors['unmatched-ack'] ?? 0) >= 1,
      WAIT_MS,
      `the late ACK (link ${driver.state}, ${JSON.stringify(driver.stats())})`,
    );
    server.setLatencyMs(0);
    await driver.send({ kind: 'stop' }, 1000);
    assert.equal(driver.state, 'up', 'latency alone never dropped the link');
  });

  void test('a NaN target never leaves the host', async (t) => {
    const { robot, driver } = await rig(t);
    await rejectsWith(driver.send({ kind: 'jog', linearMmPerS: { x: Number.NaN, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } }), 'ECO3D_ERR_NOT_FINITE');
    assert.equal(robot.received.length, 0);
  });

  void test('garbage, truncated frames, CRC errors and replayed seqs: counted, and the link survives', async (t) => {
    const { server, driver } = await rig(t);
    const downs: LinkStatus[] = [];
    const sub = driver.link$.subscribe((l) => {
      if (!l.up) downs.push(l);
    });
    t.after(() => sub.unsubscribe());
    await nStates(driver, 5);
    const hb = (seq: number): Buffer => encodeFrame({ type: 'heartbeat', clockMs: 0 }, seq);

    // Bad COBS: a code byte claiming 5 bytes when 2 follow. Each injection is fenced by 0x00.
    await server.injectRaw(Buffer.from([0x00, 0x05, 0x01, 0x02, 0x00]));
    // CRC: a valid frame with one byte flipped (kept non-zero so framing is intact).
    const bad = hb(100);
    bad[6] = bad[6]! ^ 0x01 || 0x02;
    await server.injectRaw(Buffer.concat([Buffer.of(0), bad]));
    // Truncated: the first half of a STATE frame, then the delimiter a glitch left behind.
    const state = await nStates(driver, 1);
    const full = encodeFrame({ type: 'state', state }, 200);
    await server.injectRaw(Buffer.concat([Buffer.of(0), full.subarray(0, 60), Buffer.of(0)]));
    // Replays: an exact repeat of the last seq, and an older one.
    await server.injectRaw(Buffer.concat([Buffer.of(0), hb(server.lastTxSeq()), hb((server.lastTxSeq() - 3) & 0xffff)]));
    // Pure noise without any delimiter, longer than a frame can be.
    await server.injectRaw(Buffer.alloc(2000, 0x5a));

    await firstMatch(driver.state$, () => (driver.stats().errors['replayed-seq'] ?? 0) >= 2, WAIT_MS, 'replays counted');
    await nStates(driver, 20); // states keep flowing after all of it
    await driver.send({ kind: 'stop' });
    const e = driver.stats().errors;
    assert.ok((e['bad-cobs'] ?? 0) >= 1, JSON.stringify(e));
    assert.ok((e['crc-mismatch'] ?? 0) >= 1, JSON.stringify(e));
    assert.ok((e['replayed-seq'] ?? 0) >= 2, JSON.stringify(e));
    assert.ok((e['frame-too-long'] ?? 0) >= 1, JSON.stringify(e));
    const badFrames = (e['bad-cobs'] ?? 0) + (e['crc-mismatch'] ?? 0) + (e['bad-length'] ?? 0);
    assert.ok(badFrames >= 3, `the truncated frame is counted too: ${JSON.stringify(e)}`);
    assert.deepEqual(downs.filter((l) => l.reason !== 'not connected'), [], 'the link never went down');
  });

  void test('random corruption of 20% of frames: errors counted, link and commands survive', async (t) => {
    const { server, driver } = await rig(t, { server: { seed: 7 } });
    await nStates(driver, 5);
    const before = driver.stats().statesReceived;
    const badFrames = (): number => Object.entries(driver.stats().errors).reduce((a, [k, v]) => (k === 'frames-lost' ? a : a + v), 0);
    server.setCorruption(0.2);
    await firstMatch(driver.state$, () => badFrames() >= 10, WAIT_MS, '10 corrupted frames caught');
    server.setCorruption(0);
    await nStates(driver, 10);
    await driver.send({ kind: 'stop' });
    const st = driver.stats();
    assert.ok((st.errors['frames-lost'] ?? 0) >= 5, `the gaps were seen: ${JSON.stringify(st.errors)}`);
    // At 20% corruption, ~4 good states per bad frame; 10 bad frames ⇒ well over 10 good ones.
    assert.ok(st.statesReceived - before > 10, `states kept coming through (${st.statesReceived - before})`);
    assert.equal(driver.state, 'up');
  });

  void test('a robot that is not there yet: connect() times out, the driver keeps trying and comes up', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'eco3d-serial-'));
    tmpDirs.push(dir);
    const path = join(dir, 'robot.tty');
    const driver = new SerialRobotDriver({ path, connectTimeoutMs: 300, reconnectPollMs: 50, ...RELAXED });
    t.after(() => driver.close());
    const err = await rejectsWith(driver.connect(), 'ECO3D_ERR_LINK_LOST');
    assert.match(err.message, /does not exist/);
    assert.equal(driver.state, 'down', 'still trying in the background');

    const up = firstMatch(driver.link$, (l) => l.up, WAIT_MS, 'link up once the robot appears');
    const robot = new FakeRobot();
    const server = await startSerialServer(robot, { path, watchdogMs: RELAXED.watchdogMs });
    t.after(async () => {
      await driver.close();
      await server.close();
      await robot.close();
    });
    assert.equal((await up).reason, 'connected');
    await driver.connect(); // resolves at once now
    await driver.send({ kind: 'stop' });
  });

  void test('an incompatible robot is refused with ECO3D_ERR_VERSION', async (t) => {
    const { driver } = await rig(t, { server: { protocolVersion: 7, minProtocolVersion: 5 }, connect: 'no-connect' });
    const err = await rejectsWith(driver.connect(), 'ECO3D_ERR_VERSION');
    assert.match(err.message, /5\.\.7/);
    assert.equal(driver.state, 'incompatible');
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_LINK_LOST');
  });

  void test('cable pull mid-command: pending commands reject with LINK_LOST, link$ goes down, plugIn reconnects', async (t) => {
    const { robot, server, driver } = await rig(t);
    robot.replies.set('joint-target', { kind: 'hang' });
    const reached = firstMatch(robot.commands$, (c) => c.kind === 'joint-target', WAIT_MS, 'the command at the robot');
    // The expectations are attached before the pull, so the rejections are never unhandled.
    const r1 = rejectsWith(driver.send({ kind: 'joint-target', jointsRad: [0, 0, 0, 0, 0, 0], speedScale: 0.1 }, 5000), 'ECO3D_ERR_LINK_LOST');
    const r2 = rejectsWith(driver.send({ kind: 'joint-target', jointsRad: [0.1, 0, 0, 0, 0, 0], speedScale: 0.1 }, 5000), 'ECO3D_ERR_LINK_LOST');
    await reached;
    const down = firstMatch(driver.link$, (l) => !l.up, WAIT_MS, 'link down');
    const pulledAt = performance.now();
    await server.pullCable();
    await r1;
    await r2;
    const l = await down;
    assert.ok(performance.now() - pulledAt < 250, 'the port closing is noticed at once, before any heartbeat timeout');
    assert.match(l.reason, /port/);
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_LINK_LOST'); // never queued for later

    const up = firstMatch(driver.link$, (x) => x.up, WAIT_MS, 'link up again');
    await server.plugIn();
    assert.equal((await up).reason, 'reconnected');
    robot.replies.delete('joint-target');
    await driver.send({ kind: 'joint-target', jointsRad: [0, 0, 0, 0, 0, 0], speedScale: 0.1 });
    await nStates(driver, 5);
    assert.equal(driver.stats().commandsFailed, 3);
  });

  void test('robot silence (no port close) is detected by the heartbeat timeout, then the driver recovers', async (t) => {
    const { server, driver } = await rig(t, { driver: { linkTimeoutMs: 400 } }); // default 250; margin for loaded CI
    await nStates(driver, 5);
    const down = firstMatch(driver.link$, (l) => !l.up, WAIT_MS, 'link down on silence');
    server.setLatencyMs(1200); // a 1.2 s hole in the stream, the port itself stays open
    const l = await down;
    assert.match(l.reason, /heartbeat silence/);
    const up = firstMatch(driver.link$, (x) => x.up, WAIT_MS, 'link up again');
    server.setLatencyMs(0);
    await up;
    await driver.send({ kind: 'stop' });
  });

  void test('host heartbeat silence: the robot-side watchdog sends stop to the robot', async (t) => {
    const watchdogMs = 500; // the default is 250; the margin keeps a loaded CI machine from flaking
    const { robot, server, path } = await rig(t, { server: { watchdogMs }, connect: 'no-connect' });
    // Play the host by hand, so that we control exactly when it falls silent.
    const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    t.after(() => new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve())));
    const decoder = new SerialFrameDecoder();
    const frames = new Subject<SerialMessage>();
    port.on('data', (chunk: Buffer) => {
      for (const r of decoder.push(chunk)) if (r.ok) frames.next(r.frame.msg);
    });
    let seq = 0;
    const say = (msg: SerialMessage): void => {
      port.write(encodeFrame(msg, seq));
      seq = (seq + 1) & 0xffff;
    };
    const ack = firstMatch(frames, (m) => m.type === 'hello-ack', WAIT_MS, 'HELLO_ACK');
    say({ type: 'hello', protocolVersion: 1, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'test-host' });
    await ack;

    // 1 s of heartbeats every 50 ms (longer than the watchdog): it must stay quiet.
    const beating = setInterval(() => say({ type: 'heartbeat', clockMs: 0 }), 50);
    const beatStart = performance.now();
    await firstMatch(frames, () => performance.now() - beatStart > 1000, WAIT_MS, '1 s of heartbeats');
    clearInterval(beating);
    assert.equal(robot.received.length, 0, 'no stop while the host is alive');
    assert.equal(server.watchdog, 'armed');

    const silentFrom = performance.now();
    const stop = await firstMatch(robot.commands$, () => true, WAIT_MS, 'the watchdog stop');
    const afterMs = performance.now() - silentFrom;
    assert.equal(stop.kind, 'stop');
    // The last heartbeat left up to one period before `silentFrom`; the upper bound allows for a loaded machine.
    assert.ok(afterMs >= watchdogMs - 60 && afterMs < watchdogMs + 800, `stop ${afterMs.toFixed(0)} ms into the silence (watchdog ${watchdogMs} ms)`);
    assert.equal(server.watchdog, 'tripped');
    assert.equal(server.stats().watchdogStops, 1, 'one stop per silence, not one per tick');

    // The host speaks again: the watchdog re-arms.
    say({ type: 'heartbeat', clockMs: 0 });
    await firstMatch(frames, () => server.watchdog === 'armed', WAIT_MS, 're-armed watchdog');
  });

  void test('a closed driver (host gone) also trips the watchdog', async (t) => {
    const { robot, driver } = await rig(t, { server: { watchdogMs: 250 } });
    await nStates(driver, 3);
    await driver.close();
    const stop = await firstMatch(robot.commands$, () => true, WAIT_MS, 'the watchdog stop');
    assert.equal(stop.kind, 'stop');
  });

  void test('close(): pending rejects with CLOSED, later sends too, idempotent, link$ completes', async (t) => {
    const { robot, driver } = await rig(t);
    robot.replies.set('reset', { kind: 'hang' });
    const pending = rejectsWith(driver.send({ kind: 'reset' }, 5000), 'ECO3D_ERR_CLOSED');
    await firstMatch(robot.commands$, (c) => c.kind === 'reset', WAIT_MS, 'the command at the robot');
    let completed = false;
    driver.link$.subscribe({ complete: () => (completed = true) });
    const c1 = driver.close();
    const c2 = driver.close();
    assert.equal(c1, c2, 'the same promise: idempotent');
    await pending;
    await c1;
    assert.equal(completed, true);
    await rejectsWith(driver.send({ kind: 'stop' }), 'ECO3D_ERR_CLOSED');
    await rejectsWith(driver.connect(), 'ECO3D_ERR_CLOSED');
    assert.equal(driver.state, 'closed');
  });

  void test('close() during connect(): connect rejects with CLOSED and nothing is left open', async (t) => {
    const { driver } = await rig(t, { connect: 'no-connect' });
    const connecting = rejectsWith(driver.connect(), 'ECO3D_ERR_CLOSED');
    await driver.close();
    await connecting;
    assert.equal(driver.state, 'closed');
    // A leaked port or timer would keep this test file's process alive: the runner's exit shows it.
  });

  void test('the server samples: a fast robot is streamed at the configured rate, never queued', async (t) => {
    const { driver } = await rig(t, { server: { stateRateHz: 100 }, statesPerTick: 10 });
    const first = await nStates(driver, 1);
    const last = await nStates(driver, 30);
    const robotSeqsPerFrame = (last.seq - first.seq) / 30;
    assert.ok(robotSeqsPerFrame > 2, `states were sampled (${robotSeqsPerFrame.toFixed(1)} robot reports per frame)`);
    // Queued at 100 Hz, a 500 Hz robot's states would lag by ~0.8 s more every second.
    const lagMs = performance.now() - last.tMs;
    assert.ok(lagMs < 200, `the newest state, not an old queued one (lag ${lagMs.toFixed(0)} ms)`);
  });
});

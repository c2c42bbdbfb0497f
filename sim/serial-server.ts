// Serves any RobotDriver (the simulator, or a fake in tests) as a real serial device on a
// pseudo-terminal, speaking the binary protocol of protocols/SERIAL.md. The controller opens
// `path` with `serialport` exactly as it would open /dev/ttyUSB0.
//
// How it works, and why:
// - `socat -d -d pty,raw,echo=0,link=<path> pty,raw,echo=0` makes a linked PTY pair. The first
//   end is published at the stable `path` (a symlink), so that a reconnecting controller finds the
//   device at the same place after a cable pull; we hold the second end (its /dev/pts/N is read
//   from socat's stderr). We wait for socat's own "starting data transfer loop" line, never a sleep.
// - Robot states are SAMPLED on a drift-corrected timer (default 250 Hz): each tick sends the
//   latest state if a new one arrived since the last tick. Nothing is queued, and a write
//   backlog above `maxTxBacklogBytes` drops frames instead of growing memory: a stalled host sees
//   gaps (the frame sequence numbers tell it), never a growing delay.
// - Robot-side watchdog: once a host has spoken (normally its HELLO), no valid frame from it for
//   `watchdogMs` sends `stop` to the driver (once per silence). A pulled cable trips it too: that
//   is the point.
// - Fault injection (pullCable, plugIn, setCorruption, setLatencyMs, injectRaw) is on the handle
//   so that integration tests drive real failures through the real PTY.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { Subscription } from 'rxjs';
import { SerialPort } from 'serialport';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import type { RobotCommand, RobotDriver, RobotState } from '../protocols/robot.ts';
import {
  encodeFrame,
  nackReasonForErrorCode,
  negotiateVersion,
  SERIAL_DECODE_ERROR_CODES,
  SERIAL_HEARTBEAT_PERIOD_MS,
  SERIAL_MIN_PROTOCOL_VERSION,
  SERIAL_PROTOCOL_VERSION,
  SERIAL_STATE_RATE_HZ,
  SERIAL_WATCHDOG_MS,
  SerialFrameDecoder,
  seqNext,
  type SerialHelloFields,
  type SerialMessage,
  type SerialNackReason,
} from '../protocols/serial.ts';
import { createPrng, type Prng } from './prng.ts';

export interface SerialServerOptions {
  /** The stable device path the controller opens (socat creates it as a symlink). */
  readonly path: string;
  /** STATE frames per second (default 250, the PTY budget in SERIAL.md). */
  readonly stateRateHz?: number;
  readonly heartbeatPeriodMs?: number;
  /** Host silence after which the robot is sent `stop`. */
  readonly watchdogMs?: number;
  readonly deviceId?: string;
  /** Advertised versions; tests set these to exercise the version refusal. */
  readonly protocolVersion?: number;
  readonly minProtocolVersion?: number;
  /** Outgoing bytes allowed to wait in the port's write queue before frames are dropped. */
  readonly maxTxBacklogBytes?: number;
  /** Seed of the corruption generator (reproducible fault injection). */
  readonly seed?: number;
  /** How long socat may take to print its PTYs before we give up. */
  readonly socatStartTimeoutMs?: number;
}

/**
 * The device side of the link:
 * unplugged → (plugIn) → awaiting-hello → (HELLO, compatible) → session → (pullCable) → unplugged.
 * A new HELLO in `session` starts a fresh session; an incompatible HELLO leaves `awaiting-hello`.
 */
export type SerialServerState = 'unplugged' | 'awaiting-hello' | 'session' | 'closed';

/** Robot-side watchdog: `disarmed` until the first HELLO; `tripped` after it sent its stop. */
export type SerialWatchdogState = 'disarmed' | 'armed' | 'tripped';

export interface SerialServerStats {
  readonly framesSent: number;
  /** Frames dropped because the write queue was over its cap (a stalled or absent host). */
  readonly framesDropped: number;
  readonly statesSent: number;
  readonly commandsReceived: number;
  readonly acksSent: number;
  readonly nacksSent: number;
  readonly hellos: number;
  readonly watchdogStops: number;
  /** Watchdog stops the driver refused (e.g. the robot was already e-stopped). */
  readonly watchdogStopsRefused: number;
  /** Error events of our end of the PTY (it vanishing shows as `close` as well). */
  readonly portErrors: number;
  /** Decode errors of frames from the host, by code, plus `unexpected-message`. */
  readonly rxErrors: Readonly<Record<string, number>>;
}

export interface SerialServerHandle {
  /** The stable path the controller opens. */
  readonly path: string;
  readonly state: SerialServerState;
  readonly watchdog: SerialWatchdogState;
  stats(): SerialServerStats;
  /** Sequence number of the last frame sent (lets a test craft a replayed frame). */
  lastTxSeq(): number;
  /** Kills socat: both PTY ends vanish, as when the cable is pulled. */
  pullCable(): Promise<void>;
  /** Respawns socat at the same path and opens our end again. */
  plugIn(): Promise<void>;
  /** Probability in [0, 1] that an outgoing frame gets one random byte flipped. */
  setCorruption(probability: number): void;
  /** Delay added to every outgoing frame (order kept). */
  setLatencyMs(ms: number): void;
  /** Writes bytes as they are (garbage, truncated frames, replays), bypassing corruption and latency. */
  injectRaw(bytes: Uint8Array): Promise<void>;
  /** Idempotent: stops the timers, closes our end, kills socat. */
  close(): Promise<void>;
}

const DEFAULT_DEVICE_ID = 'eco3d-sim-serial';
const DEFAULT_MAX_TX_BACKLOG_BYTES = 8192;
const DEFAULT_SOCAT_START_TIMEOUT_MS = 5000;

interface Socat {
  readonly proc: ChildProcess;
  /** Our end, /dev/pts/N. */
  readonly devicePty: string;
  readonly exited: Promise<void>;
}

/**
 * Spawns socat and resolves once its data loop runs and the link exists. Rejects (and kills it)
 * if socat exits or stays silent past the timeout.
 */
function spawnSocat(path: string, timeoutMs: number): Promise<Socat> {
  const proc = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${path}`, 'pty,raw,echo=0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return new Promise<Socat>((resolve, reject) => {
    let stderr = '';
    const ptys: string[] = [];
    const onError = (err: Error): void => fail(`cannot spawn: ${err.message}`);
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => fail(`exited early (${code ?? signal})`);
    const detach = (): void => {
      clearTimeout(timer);
      proc.off('error', onError);
      proc.off('exit', onExit);
      // Keep draining stderr so that socat never blocks on a full pipe; we no longer read it.
      proc.stderr?.removeAllListeners('data');
      proc.stderr?.resume();
    };
    const fail = (why: string): void => {
      detach();
      proc.kill('SIGKILL');
      reject(new Error(`socat for ${path}: ${why}; stderr: ${stderr.trim().slice(-500)}`));
    };
    const timer = setTimeout(() => fail(`no data loop within ${timeoutMs} ms`), timeoutMs);
    proc.on('error', onError);
    proc.on('exit', onExit);
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (text: string) => {
      stderr += text;
      for (const m of text.matchAll(/PTY is (\S+)/g)) ptys.push(m[1]!);
      if (!stderr.includes('starting data transfer loop')) return;
      const devicePty = ptys[1];
      if (devicePty === undefined || !existsSync(path)) {
        fail('data loop started but a PTY or the link is missing');
        return;
      }
      detach();
      resolve({ proc, devicePty, exited });
    });
  });
}

function openPort(devicePty: string): Promise<SerialPort> {
  const port = new SerialPort({ path: devicePty, baudRate: 115200, autoOpen: false });
  return new Promise((resolve, reject) => {
    port.open((err) => (err ? reject(err) : resolve(port)));
  });
}

function closePort(port: SerialPort): Promise<void> {
  if (!port.isOpen) return Promise.resolve();
  return new Promise((resolve) => {
    // An error here means the port is already gone (socat died first): nothing left to release.
    port.close(() => resolve());
  });
}

/** Starts the device. Resolves once the PTY exists at `opts.path` and our end is open. */
export async function startSerialServer(driver: RobotDriver, opts: SerialServerOptions): Promise<SerialServerHandle> {
  const server = new SerialServer(driver, opts);
  try {
    await server.plugIn();
  } catch (err) {
    await server.close(); // releases the state subscription
    throw new Eco3dError('ECO3D_ERR_CONFIG', `cannot serve the robot on ${opts.path}: ${toEco3dError(err).message}`, { cause: err });
  }
  return server;
}

class SerialServer implements SerialServerHandle {
  readonly path: string;
  private linkState: SerialServerState = 'unplugged';
  private watchdogState: SerialWatchdogState = 'disarmed';
  private socat: Socat | null = null;
  private port: SerialPort | null = null;
  /** Serialises plugIn / pullCable / close so that they never interleave. */
  private lifecycle: Promise<void> = Promise.resolve();
  private closing: Promise<void> | null = null;
  private readonly decoder = new SerialFrameDecoder();
  private txSeq = 0xffff; // the first frame goes out with seq 0
  private sessionVersion = SERIAL_PROTOCOL_VERSION;
  /** What we say in HELLO_ACK. */
  private readonly hello: SerialHelloFields;
  private readonly stateRateHz: number;
  private readonly maxTxBacklogBytes: number;
  private readonly socatStartTimeoutMs: number;
  private readonly rng: Prng;
  private corruptionProbability = 0;
  private latencyMs = 0;
  private readonly delayed: { dueMs: number; bytes: Buffer }[] = [];
  private delayTimer: NodeJS.Timeout | null = null;
  private stateTimer: NodeJS.Timeout | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private watchdogTimer: NodeJS.Timeout | null = null;
  private watchdogRecheck = false;
  private watchdogDueMs = 0;
  private lastTickMs = 0;
  private lastStallEndMs = Number.NEGATIVE_INFINITY;
  private latest: RobotState | null = null;
  private lastSent: RobotState | null = null;
  private readonly stateSub: Subscription;
  private readonly counters = {
    framesSent: 0,
    framesDropped: 0,
    statesSent: 0,
    commandsReceived: 0,
    acksSent: 0,
    nacksSent: 0,
    hellos: 0,
    watchdogStops: 0,
    watchdogStopsRefused: 0,
    portErrors: 0,
  };
  /** Robot-to-host messages arriving from the host: a miswired or looped-back link. */
  private unexpectedMessages = 0;

  constructor(
    private readonly driver: RobotDriver,
    opts: SerialServerOptions,
  ) {
    this.path = opts.path;
    this.stateRateHz = opts.stateRateHz ?? SERIAL_STATE_RATE_HZ;
    this.maxTxBacklogBytes = opts.maxTxBacklogBytes ?? DEFAULT_MAX_TX_BACKLOG_BYTES;
    this.socatStartTimeoutMs = opts.socatStartTimeoutMs ?? DEFAULT_SOCAT_START_TIMEOUT_MS;
    this.rng = createPrng(opts.seed ?? 0xec03);
    this.hello = {
      protocolVersion: opts.protocolVersion ?? SERIAL_PROTOCOL_VERSION,
      minProtocolVersion: opts.minProtocolVersion ?? SERIAL_MIN_PROTOCOL_VERSION,
      heartbeatPeriodMs: opts.heartbeatPeriodMs ?? SERIAL_HEARTBEAT_PERIOD_MS,
      watchdogMs: opts.watchdogMs ?? SERIAL_WATCHDOG_MS,
      deviceId: opts.deviceId ?? DEFAULT_DEVICE_ID,
    };
    if (!(this.stateRateHz > 0 && this.stateRateHz <= 2000)) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `stateRateHz ${this.stateRateHz} outside (0, 2000]`);
    }
    // Sample, never queue: only the latest state is kept.
    this.stateSub = driver.state$.subscribe((s) => {
      this.latest = s;
    });
  }

  get state(): SerialServerState {
    return this.linkState;
  }

  get watchdog(): SerialWatchdogState {
    return this.watchdogState;
  }

  stats(): SerialServerStats {
    const rxErrors: Record<string, number> = {};
    const counts = this.decoder.errorCounts();
    for (const code of SERIAL_DECODE_ERROR_CODES) if (counts[code] > 0) rxErrors[code] = counts[code];
    if (this.unexpectedMessages > 0) rxErrors['unexpected-message'] = this.unexpectedMessages;
    return { ...this.counters, rxErrors };
  }

  lastTxSeq(): number {
    return this.txSeq;
  }

  setCorruption(probability: number): void {
    if (!(probability >= 0 && probability <= 1)) throw new Eco3dError('ECO3D_ERR_CONFIG', `corruption probability ${probability} outside [0, 1]`);
    this.corruptionProbability = probability;
  }

  setLatencyMs(ms: number): void {
    if (!(ms >= 0 && Number.isFinite(ms))) throw new Eco3dError('ECO3D_ERR_CONFIG', `latency ${ms} ms is not a finite number >= 0`);
    this.latencyMs = ms;
  }

  async injectRaw(bytes: Uint8Array): Promise<void> {
    const port = this.port;
    if (port === null || !port.isOpen) throw new Eco3dError('ECO3D_ERR_LINK_LOST', 'injectRaw: the cable is pulled');
    await new Promise<void>((resolve, reject) => {
      port.write(Buffer.from(bytes), (err) => (err ? reject(err) : resolve()));
    });
  }

  plugIn(): Promise<void> {
    return this.serialise(async () => {
      if (this.linkState !== 'unplugged') return;
      const socat = await spawnSocat(this.path, this.socatStartTimeoutMs);
      let port: SerialPort;
      try {
        port = await openPort(socat.devicePty);
      } catch (err) {
        socat.proc.kill('SIGTERM');
        await socat.exited;
        throw err;
      }
      if (this.closing !== null) {
        // close() was called while we were plugging in: undo.
        await closePort(port);
        socat.proc.kill('SIGTERM');
        await socat.exited;
        return;
      }
      this.socat = socat;
      this.port = port;
      this.decoder.reset();
      port.on('data', (chunk: Buffer) => this.onData(chunk));
      // A vanishing PTY also emits `close`, which is what we act on; errors are only counted here
      // (an 'error' event without a listener would throw).
      port.on('error', () => {
        this.counters.portErrors++;
      });
      port.on('close', () => this.onPortGone(port));
      // socat dying on its own (killed from outside) is a pulled cable too.
      void socat.exited.then(() => this.onSocatGone(socat));
      this.linkState = 'awaiting-hello';
    });
  }

  pullCable(): Promise<void> {
    return this.serialise(async () => {
      if (this.linkState === 'unplugged' || this.linkState === 'closed') return;
      await this.unplug();
    });
  }

  close(): Promise<void> {
    this.closing ??= this.serialise(async () => {
      await this.unplug();
      this.linkState = 'closed';
      this.watchdogState = 'disarmed';
      if (this.watchdogTimer !== null) clearTimeout(this.watchdogTimer);
      this.watchdogTimer = null;
      this.stateSub.unsubscribe();
    });
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------

  private serialise(fn: () => Promise<void>): Promise<void> {
    const run = this.lifecycle.then(fn);
    // The chain continues after a failure; the caller still sees it through `run`.
    this.lifecycle = run.catch(() => undefined);
    return run;
  }

  /** Kills socat, closes our end, stops streaming. The watchdog keeps running: silence stops the robot. */
  private async unplug(): Promise<void> {
    this.linkState = 'unplugged';
    this.stopStreaming();
    this.delayed.length = 0;
    if (this.delayTimer !== null) clearTimeout(this.delayTimer);
    this.delayTimer = null;
    const socat = this.socat;
    const port = this.port;
    this.socat = null;
    this.port = null;
    if (socat !== null) {
      socat.proc.kill('SIGTERM');
      await socat.exited;
    }
    if (port !== null) await closePort(port);
  }

  private onPortGone(port: SerialPort): void {
    if (this.port !== port) return; // an old port closing after a replug
    void this.pullCable();
  }

  private onSocatGone(socat: Socat): void {
    if (this.socat !== socat) return;
    void this.pullCable();
  }

  private startStreaming(): void {
    this.stopStreaming();
    const periodMs = 1000 / this.stateRateHz;
    let nextMs = performance.now() + periodMs;
    const tick = (): void => {
      const s = this.latest;
      if (s !== null && s !== this.lastSent) {
        this.lastSent = s;
        if (this.sendFrame({ type: 'state', state: s })) this.counters.statesSent++;
      }
      // Drift-corrected: aim at the schedule, but never try to catch up on missed ticks.
      const now = performance.now();
      nextMs += periodMs;
      if (nextMs < now) nextMs = now + periodMs;
      this.stateTimer = setTimeout(tick, nextMs - now);
    };
    this.stateTimer = setTimeout(tick, periodMs);
    this.lastTickMs = performance.now();
    this.heartbeatTimer = setInterval(() => {
      const now = performance.now();
      if (now - this.lastTickMs > 2 * this.hello.heartbeatPeriodMs) this.lastStallEndMs = now; // our loop stalled
      this.lastTickMs = now;
      this.sendFrame({ type: 'heartbeat', clockMs: now });
    }, this.hello.heartbeatPeriodMs);
  }

  private stopStreaming(): void {
    if (this.stateTimer !== null) clearTimeout(this.stateTimer);
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.stateTimer = null;
    this.heartbeatTimer = null;
  }

  /** Encodes and sends (through the latency line and corruption). False if the frame was dropped. */
  private sendFrame(msg: SerialMessage): boolean {
    if (this.port === null) return false;
    let bytes: Buffer;
    try {
      bytes = encodeFrame(msg, seqNext(this.txSeq), msg.type === 'hello-ack' ? msg.protocolVersion : this.sessionVersion);
    } catch {
      // A state the codec refuses (NaN from a broken simulator) is not sent; the host sees a gap.
      this.counters.framesDropped++;
      return false;
    }
    this.txSeq = seqNext(this.txSeq);
    if (this.corruptionProbability > 0 && this.rng.next() < this.corruptionProbability) {
      const i = Math.floor(this.rng.next() * (bytes.length - 1)); // not the delimiter
      bytes[i] = bytes[i]! ^ (1 + Math.floor(this.rng.next() * 255));
    }
    if (this.latencyMs > 0 || this.delayed.length > 0) {
      this.delayed.push({ dueMs: performance.now() + this.latencyMs, bytes });
      this.scheduleDelayed();
      return true;
    }
    return this.write(bytes);
  }

  private scheduleDelayed(): void {
    if (this.delayTimer !== null) return;
    const head = this.delayed[0];
    if (head === undefined) return;
    this.delayTimer = setTimeout(
      () => {
        this.delayTimer = null;
        const now = performance.now();
        // Release in order: a frame never overtakes an earlier one, even if the latency shrank.
        while (this.delayed.length > 0 && this.delayed[0]!.dueMs <= now) this.write(this.delayed.shift()!.bytes);
        this.scheduleDelayed();
      },
      Math.max(0, head.dueMs - performance.now()),
    );
  }

  private write(bytes: Buffer): boolean {
    const port = this.port;
    if (port === null || !port.isOpen || port.writableLength > this.maxTxBacklogBytes) {
      this.counters.framesDropped++;
      return false;
    }
    port.write(bytes);
    this.counters.framesSent++;
    return true;
  }

  private onData(chunk: Buffer): void {
    for (const r of this.decoder.push(chunk)) {
      if (!r.ok) {
        // A command whose payload is invalid still has a genuine seq (its CRC passed): refuse it
        // explicitly so that the host fails fast instead of timing out.
        const e = r.error;
        if (e.code === 'bad-payload' && e.seq !== undefined && e.wireType?.startsWith('cmd-') === true) {
          this.nack(e.seq, 'bad-args', e.detail);
        }
        continue;
      }
      this.feedWatchdog();
      const { seq, msg } = r.frame;
      switch (msg.type) {
        case 'hello':
          this.onHello(msg);
          break;
        case 'heartbeat':
          break;
        case 'command':
          this.onCommand(seq, msg.command);
          break;
        case 'hello-ack':
        case 'state':
        case 'ack':
        case 'nack':
          this.unexpectedMessages++;
          break;
      }
    }
  }

  private onHello(host: SerialHelloFields): void {
    this.counters.hellos++;
    const version = negotiateVersion(host, this.hello);
    // Always answer, even when incompatible: the host must learn why it cannot talk to us.
    this.sendFrame({ type: 'hello-ack', ...this.hello });
    if (version === null) {
      this.linkState = 'awaiting-hello';
      this.stopStreaming();
      return;
    }
    this.sessionVersion = version;
    this.lastSent = null; // a new session starts with the latest state, even if already sent
    if (this.linkState !== 'session') {
      this.linkState = 'session';
      this.startStreaming();
    }
  }

  private onCommand(seq: number, command: RobotCommand): void {
    this.counters.commandsReceived++;
    if (this.linkState !== 'session') {
      this.nack(seq, 'no-session', 'no HELLO yet');
      return;
    }
    this.driver.send(command).then(
      () => {
        this.counters.acksSent++;
        this.sendFrame({ type: 'ack', ackSeq: seq });
      },
      (err: unknown) => {
        const e = toEco3dError(err);
        this.nack(seq, nackReasonForErrorCode(e.code), e.message);
      },
    );
  }

  private nack(seq: number, reason: SerialNackReason, detail: string): void {
    this.counters.nacksSent++;
    this.sendFrame({ type: 'nack', ackSeq: seq, reason, detail });
  }

  /** Any valid frame from the host proves it is alive: (re)arm the watchdog. */
  private feedWatchdog(): void {
    if (this.linkState === 'closed') return;
    this.watchdogState = 'armed';
    this.watchdogDueMs = performance.now() + this.hello.watchdogMs;
    if (this.watchdogTimer !== null && !this.watchdogRecheck) {
      this.watchdogTimer.refresh();
      return;
    }
    if (this.watchdogTimer !== null) clearTimeout(this.watchdogTimer);
    this.watchdogRecheck = false;
    this.watchdogTimer = setTimeout(() => this.tripWatchdog(), this.hello.watchdogMs);
  }

  private tripWatchdog(): void {
    this.watchdogTimer = null;
    if (this.watchdogState !== 'armed') return;
    // This simulator shares a process (one event loop) with its tests and often with the host
    // driver: if our loop stalled (this timer fired late, or a heartbeat tick just came in late),
    // the host's frames may sit unread in the PTY. Listen one more heartbeat period, once.
    // (A real robot controller is its own computer and has no such excuse to make.)
    const now = performance.now();
    const hbMs = this.hello.heartbeatPeriodMs;
    const stalled = now - this.watchdogDueMs > hbMs / 2 || now - this.lastStallEndMs < hbMs;
    if (stalled && !this.watchdogRecheck) {
      this.watchdogRecheck = true;
      this.watchdogDueMs = now + hbMs;
      this.watchdogTimer = setTimeout(() => this.tripWatchdog(), hbMs);
      return;
    }
    this.watchdogState = 'tripped';
    this.counters.watchdogStops++;
    // A controlled stop; the outcome is visible in the state stream (mode 'stopped').
    // A refusal (e.g. already e-stopped) leaves the robot no less stopped; it is counted, and the
    // state stream shows the mode either way.
    this.driver.send({ kind: 'stop' }).catch(() => {
      this.counters.watchdogStopsRefused++;
    });
  }
}

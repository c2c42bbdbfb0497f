// The robot over a serial line (a USB-serial adapter, or the simulator's PTY), speaking the
// binary protocol of protocols/SERIAL.md.
//
// Link state machine (one field, one place that changes it: `setLinkState`):
//
//   idle ──connect()──► connecting ──HELLO_ACK, version ok──► up
//                         ▲   │  └──version refused──► incompatible (no retry)     │
//                         │   └──open / handshake failed──► down ◄──port closed, ──┘
//                         └──── path exists (polled every reconnectPollMs) ──┘   silence
//   any state ──close()──► closed
//
// Why it is built this way:
// - Every command has a timeout, and every pending command is rejected the moment the link
//   drops (ECO3D_ERR_LINK_LOST) or the driver closes (ECO3D_ERR_CLOSED): no promise is left
//   hanging on a robot that can no longer answer. Commands are never queued while the link is
//   down, and never retransmitted: a motion command replayed late is worse than one refused.
// - Link loss is detected two ways: the port's own close/error (a pulled USB cable, a killed
//   PTY), and silence (no valid frame for `linkTimeoutMs` while the robot should be sending a
//   heartbeat every 50 ms and states at up to 250 Hz).
// - Reconnection polls for the device path every `reconnectPollMs` (a bounded interval, no busy
//   loop) and redoes the whole handshake, with a fresh decoder and sequence window.
// - A robot speaking no version we share is refused with ECO3D_ERR_VERSION and not retried: a
//   firmware mismatch does not fix itself.
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { BehaviorSubject, filter, firstValueFrom, ReplaySubject, startWith, Subject, throwError, timeout, type Observable } from 'rxjs';
import { SerialPort } from 'serialport';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  type DriverStats,
  type LinkStatus,
  type RobotCommand,
  type RobotDriver,
  type RobotState,
} from '../protocols/robot.ts';
import {
  encodeFrame,
  errorCodeForNackReason,
  negotiateVersion,
  SERIAL_HEARTBEAT_PERIOD_MS,
  SERIAL_LINK_TIMEOUT_MS,
  SERIAL_MIN_PROTOCOL_VERSION,
  SERIAL_PROTOCOL_VERSION,
  SerialFrameDecoder,
  seqNext,
  type SerialFrame,
  type SerialHelloFields,
  type SerialMessage,
  type SerialNackReason,
} from '../protocols/serial.ts';

export interface SerialRobotDriverOptions {
  /** Device path, e.g. /dev/ttyUSB0 or the simulator's PTY link. */
  readonly path: string;
  /** Ignored by a PTY; a real adapter needs the robot's rate. */
  readonly baudRate?: number;
  /** Our id in HELLO (shows in the robot's log). */
  readonly hostId?: string;
  readonly heartbeatPeriodMs?: number;
  /** No valid frame from the robot for this long ⇒ link down. */
  readonly linkTimeoutMs?: number;
  /** Open + HELLO_ACK must complete within this. */
  readonly handshakeTimeoutMs?: number;
  /** connect() resolves once up, or rejects after this (the driver keeps trying). */
  readonly connectTimeoutMs?: number;
  /** HELLO is resent this often during the handshake (the robot's end may open after ours). */
  readonly helloRetryMs?: number;
  /** How often a lost link looks for the device path again. */
  readonly reconnectPollMs?: number;
  /** Advertised versions; tests set these to exercise the refusal. */
  readonly protocolVersion?: number;
  readonly minProtocolVersion?: number;
}

export type SerialLinkState = 'idle' | 'connecting' | 'up' | 'down' | 'incompatible' | 'closed';

/** What the robot said about itself in HELLO_ACK. */
export interface SerialDeviceInfo {
  readonly deviceId: string;
  /** The version this session speaks (the newest both ends support). */
  readonly sessionVersion: number;
  readonly robotProtocolVersion: number;
  readonly robotMinProtocolVersion: number;
  readonly robotHeartbeatPeriodMs: number;
  /** The robot's watchdog: host silence this long stops it. */
  readonly robotWatchdogMs: number;
}

const DEFAULT_BAUD_RATE = 115200;
const DEFAULT_HOST_ID = 'eco3d-host';
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 1000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
const DEFAULT_HELLO_RETRY_MS = 100;
const DEFAULT_RECONNECT_POLL_MS = 200;

interface PendingCommand {
  readonly kind: RobotCommand['kind'];
  readonly resolve: () => void;
  readonly reject: (err: Eco3dError) => void;
  readonly timer: NodeJS.Timeout;
}

/** One open port and its session (a reconnect makes a new one). */
interface Connection {
  readonly port: SerialPort;
  readonly decoder: SerialFrameDecoder;
  txSeq: number;
  version: number;
  /** Set while waiting for HELLO_ACK. */
  onHelloAck: ((hello: SerialHelloFields) => void) | null;
  /** Called once when the port goes away (close or error). */
  onGone: ((reason: string) => void) | null;
  gone: boolean;
}

function linkError(message: string, cause?: unknown): Eco3dError {
  return new Eco3dError('ECO3D_ERR_LINK_LOST', message, cause === undefined ? undefined : { cause });
}

export class SerialRobotDriver implements RobotDriver {
  readonly kind = 'serial' as const;
  readonly state$: Observable<RobotState>;
  readonly link$: Observable<LinkStatus>;

  private readonly opts: Required<SerialRobotDriverOptions>;
  private readonly stateSubject = new ReplaySubject<RobotState>(1);
  private readonly linkSubject = new BehaviorSubject<LinkStatus>({ up: false, atMs: Date.now(), reason: 'not connected' });
  private linkState: SerialLinkState = 'idle';
  private conn: Connection | null = null;
  private device: SerialDeviceInfo | null = null;
  private readonly pending = new Map<number, PendingCommand>();
  /** Every state change, for connect() to wait on. */
  private readonly stateChanges = new Subject<SerialLinkState>();
  private lastFailure = 'not connected';
  private everUp = false;
  /** The open/handshake in progress (settles, never rejects). */
  private inflight: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  /** Aborts an in-flight open/handshake when the driver closes. */
  private attemptAbort: AbortController | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private silenceTimer: NodeJS.Timeout | null = null;
  /** When the silence timer is due (performance.now() ms); a later firing means we stalled. */
  private silenceDueMs = 0;
  /** True while the silence timer is the one-off re-check after a stall of our own. */
  private silenceRecheck = false;
  private lastTickMs = 0;
  private lastStallEndMs = Number.NEGATIVE_INFINITY;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private statesReceived = 0;
  private commandsSent = 0;
  private commandsFailed = 0;
  private readonly errors: Record<string, number> = {};
  private lastRxMs = 0;

  constructor(opts: SerialRobotDriverOptions) {
    this.opts = {
      path: opts.path,
      baudRate: opts.baudRate ?? DEFAULT_BAUD_RATE,
      hostId: opts.hostId ?? DEFAULT_HOST_ID,
      heartbeatPeriodMs: opts.heartbeatPeriodMs ?? SERIAL_HEARTBEAT_PERIOD_MS,
      linkTimeoutMs: opts.linkTimeoutMs ?? SERIAL_LINK_TIMEOUT_MS,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      helloRetryMs: opts.helloRetryMs ?? DEFAULT_HELLO_RETRY_MS,
      reconnectPollMs: opts.reconnectPollMs ?? DEFAULT_RECONNECT_POLL_MS,
      protocolVersion: opts.protocolVersion ?? SERIAL_PROTOCOL_VERSION,
      minProtocolVersion: opts.minProtocolVersion ?? SERIAL_MIN_PROTOCOL_VERSION,
    };
    if (this.opts.linkTimeoutMs <= this.opts.heartbeatPeriodMs) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `linkTimeoutMs (${this.opts.linkTimeoutMs}) must exceed heartbeatPeriodMs (${this.opts.heartbeatPeriodMs})`);
    }
    this.state$ = this.stateSubject.asObservable();
    this.link$ = this.linkSubject.asObservable();
  }

  /** The link's state machine state (finer than link$'s up/down). */
  get state(): SerialLinkState {
    return this.linkState;
  }

  /** Why the link is not up (the last failed attempt), for diagnostics. */
  get lastFailureReason(): string {
    return this.lastFailure;
  }

  /** The robot's HELLO_ACK of the current (or last) session, null before the first. */
  get deviceInfo(): SerialDeviceInfo | null {
    return this.device;
  }

  /**
   * Starts the link and resolves once it is up. Rejects with ECO3D_ERR_VERSION at once if the
   * robot speaks no version we share, ECO3D_ERR_CLOSED if closed meanwhile, and
   * ECO3D_ERR_LINK_LOST (with the last failure's reason) if the link is not up within
   * `connectTimeoutMs`; in that last case the driver keeps trying in the background (watch link$),
   * as it does after any link loss.
   */
  async connect(): Promise<void> {
    switch (this.linkState) {
      case 'closed':
        throw new Eco3dError('ECO3D_ERR_CLOSED', 'serial driver is closed');
      case 'incompatible':
        throw new Eco3dError('ECO3D_ERR_VERSION', this.lastFailure);
      case 'up':
        return;
      case 'idle':
        this.setLinkState('down');
        void this.tryConnect(); // the first attempt starts now, not after a poll interval
        break;
      case 'connecting':
      case 'down':
        break;
    }
    const ms = this.opts.connectTimeoutMs;
    let outcome: SerialLinkState;
    try {
      outcome = await firstValueFrom(
        this.stateChanges.pipe(
          startWith(this.linkState),
          filter((st) => st === 'up' || st === 'incompatible' || st === 'closed'),
          timeout({ first: ms, with: () => throwError(() => linkError(`robot at ${this.opts.path} not reachable within ${ms} ms: ${this.lastFailure}`)) }),
        ),
      );
    } catch (err) {
      if (err instanceof Eco3dError) throw err;
      outcome = 'closed'; // the subject completed: close() was called while we waited
    }
    switch (outcome) {
      case 'up':
        return;
      case 'incompatible':
        throw new Eco3dError('ECO3D_ERR_VERSION', this.lastFailure);
      default:
        throw new Eco3dError('ECO3D_ERR_CLOSED', 'serial driver was closed while connecting');
    }
  }

  send(cmd: RobotCommand, timeoutMs: number = DEFAULT_COMMAND_TIMEOUT_MS): Promise<void> {
    const fail = (err: Eco3dError): Promise<void> => {
      this.commandsFailed++;
      return Promise.reject(err);
    };
    if (this.linkState === 'closed') return fail(new Eco3dError('ECO3D_ERR_CLOSED', `serial driver is closed: ${cmd.kind} not sent`));
    const conn = this.conn;
    if (this.linkState !== 'up' || conn === null) {
      return fail(linkError(`link to the robot is down (${this.linkSubject.value.reason}): ${cmd.kind} not sent`));
    }
    if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
      return fail(new Eco3dError('ECO3D_ERR_BAD_REQUEST', `timeoutMs must be a positive finite number, got ${timeoutMs}`));
    }
    let seq: number;
    try {
      seq = this.write(conn, { type: 'command', command: cmd });
    } catch (err) {
      return fail(toEco3dError(err, 'ECO3D_ERR_BAD_REQUEST')); // e.g. ECO3D_ERR_NOT_FINITE from the encoder
    }
    this.commandsSent++;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.get(seq)?.timer !== timer) return;
        this.pending.delete(seq);
        this.commandsFailed++;
        reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `robot did not acknowledge ${cmd.kind} within ${timeoutMs} ms`, { details: { seq } }));
      }, timeoutMs);
      this.pending.set(seq, { kind: cmd.kind, resolve, reject, timer });
    });
  }

  stats(): DriverStats {
    const errors: Record<string, number> = { ...this.errors };
    return { statesReceived: this.statesReceived, commandsSent: this.commandsSent, commandsFailed: this.commandsFailed, errors };
  }

  /** Idempotent. Rejects pending commands with ECO3D_ERR_CLOSED, clears every timer, closes the port. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------
  // State machine

  /** A method, not a field read, so that TypeScript does not narrow across awaits. */
  private isIn(st: SerialLinkState): boolean {
    return this.linkState === st;
  }

  private setLinkState(next: SerialLinkState): void {
    if (this.linkState === next) return;
    this.linkState = next;
    this.stateChanges.next(next);
  }

  private emitLink(up: boolean, reason: string): void {
    const cur = this.linkSubject.value;
    if (cur.up === up && cur.reason === reason) return;
    this.linkSubject.next({ up, atMs: Date.now(), reason });
  }

  private goUp(reason: string): void {
    this.everUp = true;
    this.setLinkState('up');
    this.lastRxMs = performance.now();
    this.lastTickMs = this.lastRxMs;
    this.heartbeatTimer = setInterval(() => this.sendHeartbeat(), this.opts.heartbeatPeriodMs);
    this.armSilenceTimer();
    this.emitLink(true, reason);
  }

  /** up → down: reject everything pending, drop the port, start looking for the device again. */
  private linkDown(reason: string): void {
    if (this.linkState !== 'up') return;
    this.setLinkState('down');
    this.lastFailure = reason;
    this.stopSessionTimers();
    this.dropConnection();
    this.rejectAllPending(() => linkError(`link to the robot lost (${reason})`));
    this.emitLink(false, reason);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.linkState !== 'down' || this.reconnectTimer !== null) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.tryConnect();
    }, this.opts.reconnectPollMs);
  }

  /** down → connecting → up, or back to down (and poll again), or incompatible. Never rejects. */
  private async tryConnect(): Promise<void> {
    if (this.linkState !== 'down') return;
    // The path is gone while the cable is out; opening it would only fail. Poll cheaply instead.
    if (!existsSync(this.opts.path)) {
      this.noteFailure(`${this.opts.path} does not exist`);
      this.scheduleReconnect();
      return;
    }
    this.setLinkState('connecting');
    try {
      await this.attempt();
    } catch (err) {
      if (!this.isIn('connecting')) return; // closed meanwhile
      const e = toEco3dError(err, 'ECO3D_ERR_LINK_LOST');
      this.noteFailure(e.message);
      if (e.code === 'ECO3D_ERR_VERSION') {
        this.setLinkState('incompatible'); // a firmware mismatch does not fix itself: no retry
        this.emitLink(false, e.message); // the one down→down change worth showing: it is final
        return;
      }
      this.setLinkState('down');
      this.scheduleReconnect();
      return;
    }
    if (!this.isIn('connecting')) return;
    this.goUp(this.everUp ? 'reconnected' : 'connected');
  }

  /**
   * Remembers why the link is not up (for connect()'s rejection and `lastFailureReason`).
   * link$ itself only emits on edges (up ⇄ down), as availability logs count them.
   */
  private noteFailure(reason: string): void {
    this.lastFailure = reason;
  }

  private async doClose(): Promise<void> {
    this.setLinkState('closed');
    this.attemptAbort?.abort();
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopSessionTimers();
    this.rejectAllPending((kind) => new Eco3dError('ECO3D_ERR_CLOSED', `serial driver closed before ${kind} was acknowledged`));
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) await closeQuietly(conn);
    // An attempt in flight owns its port until it notices the abort; wait for it to let go.
    if (this.inflight !== null) await this.inflight;
    if (this.linkSubject.value.up) this.emitLink(false, 'driver closed');
    this.linkSubject.complete();
    this.stateSubject.complete();
    this.stateChanges.complete();
  }

  private stopSessionTimers(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    if (this.silenceTimer !== null) clearTimeout(this.silenceTimer);
    this.heartbeatTimer = null;
    this.silenceTimer = null;
  }

  private rejectAllPending(makeError: (kind: RobotCommand['kind']) => Eco3dError): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      this.commandsFailed++;
      p.reject(makeError(p.kind));
    }
  }

  private dropConnection(): void {
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) void closeQuietly(conn);
  }

  // -------------------------------------------------------------------------------------------
  // Opening and handshake

  /** Opens the port and completes the handshake; on success `this.conn` is the new session. */
  private attempt(): Promise<void> {
    const abort = new AbortController();
    this.attemptAbort = abort;
    const run = this.openAndHandshake(abort);
    // close() waits for this, so that an attempt never outlives the driver with an open port.
    this.inflight = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async openAndHandshake(abort: AbortController): Promise<void> {
    const port = new SerialPort({ path: this.opts.path, baudRate: this.opts.baudRate, autoOpen: false });
    try {
      await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(linkError(`cannot open ${this.opts.path}: ${err.message}`, err)) : resolve())));
    } catch (err) {
      this.attemptAbort = null;
      throw err;
    }
    const conn: Connection = {
      port,
      decoder: new SerialFrameDecoder({ minVersion: this.opts.minProtocolVersion, maxVersion: this.opts.protocolVersion }),
      txSeq: 0xffff, // HELLO goes out with seq 0
      version: this.opts.protocolVersion,
      onHelloAck: null,
      onGone: null,
      gone: false,
    };
    const gone = (why: string): void => {
      if (conn.gone) return;
      conn.gone = true;
      conn.onGone?.(why);
    };
    port.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    port.on('error', (err: Error) => gone(`port error: ${err.message}`));
    port.on('close', (err?: Error | null) => gone(err ? `port closed: ${err.message}` : 'port closed'));
    try {
      const hello = await this.handshake(conn, abort.signal);
      const version = negotiateVersion(this.ourHello(), hello);
      if (version === null) {
        throw new Eco3dError(
          'ECO3D_ERR_VERSION',
          `robot ${hello.deviceId} speaks serial protocol versions ${hello.minProtocolVersion}..${hello.protocolVersion}; ` +
            `we speak ${this.opts.minProtocolVersion}..${this.opts.protocolVersion}`,
          { details: { robotVersion: hello.protocolVersion, robotMinVersion: hello.minProtocolVersion } },
        );
      }
      conn.version = version;
      this.device = {
        deviceId: hello.deviceId,
        sessionVersion: version,
        robotProtocolVersion: hello.protocolVersion,
        robotMinProtocolVersion: hello.minProtocolVersion,
        robotHeartbeatPeriodMs: hello.heartbeatPeriodMs,
        robotWatchdogMs: hello.watchdogMs,
      };
      // From now on, losing the port means losing the link.
      conn.onGone = (why) => {
        if (this.conn === conn) this.linkDown(why);
      };
      if (conn.gone) throw linkError('port closed right after the handshake');
      if (abort.signal.aborted) throw new Eco3dError('ECO3D_ERR_CLOSED', 'serial driver closed during the handshake');
      this.conn = conn;
    } catch (err) {
      conn.onGone = null;
      await closeQuietly(conn);
      throw err;
    } finally {
      this.attemptAbort = null;
    }
  }

  private ourHello(): SerialHelloFields {
    return {
      protocolVersion: this.opts.protocolVersion,
      minProtocolVersion: this.opts.minProtocolVersion,
      heartbeatPeriodMs: this.opts.heartbeatPeriodMs,
      watchdogMs: this.opts.linkTimeoutMs,
      deviceId: this.opts.hostId,
    };
  }

  /** Flushes stale input, says HELLO (again every helloRetryMs) and waits for HELLO_ACK. */
  private handshake(conn: Connection, signal: AbortSignal): Promise<SerialHelloFields> {
    return new Promise<SerialHelloFields>((resolve, reject) => {
      let retry: NodeJS.Timeout | null = null;
      const finish = (): void => {
        clearTimeout(deadline);
        if (retry !== null) clearInterval(retry);
        signal.removeEventListener('abort', onAbort);
        conn.onHelloAck = null;
        conn.onGone = null;
      };
      const deadline = setTimeout(() => {
        finish();
        reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `no HELLO_ACK from ${this.opts.path} within ${this.opts.handshakeTimeoutMs} ms`));
      }, this.opts.handshakeTimeoutMs);
      const onAbort = (): void => {
        finish();
        reject(new Eco3dError('ECO3D_ERR_CLOSED', 'serial driver closed during the handshake'));
      };
      if (signal.aborted) {
        onAbort(); // close() came while the port was still opening
        return;
      }
      signal.addEventListener('abort', onAbort);
      conn.onGone = (why) => {
        finish();
        reject(linkError(`${why} during the handshake`));
      };
      if (conn.gone) {
        finish();
        reject(linkError('port closed before the handshake'));
        return;
      }
      conn.onHelloAck = (hello) => {
        finish();
        resolve(hello);
      };
      const sayHello = (): void => {
        try {
          // The leading 0x00 ends whatever partial frame the robot's decoder holds.
          conn.port.write(Buffer.of(0));
          this.write(conn, { type: 'hello', ...this.ourHello() });
        } catch (err) {
          finish();
          reject(toEco3dError(err));
        }
      };
      // Stale bytes from before we opened (an old session's states) must not be taken for new ones.
      conn.port.flush(() => {
        if (conn.onHelloAck === null) return; // already finished (closed or gone)
        sayHello();
        retry = setInterval(sayHello, this.opts.helloRetryMs);
      });
    });
  }

  // -------------------------------------------------------------------------------------------
  // Wire

  /** Encodes and writes one frame on `conn`; returns its seq. Throws if the message cannot be encoded. */
  private write(conn: Connection, msg: SerialMessage): number {
    const seq = seqNext(conn.txSeq);
    const bytes = encodeFrame(msg, seq, msg.type === 'hello' ? this.opts.protocolVersion : conn.version);
    conn.txSeq = seq;
    conn.port.write(bytes);
    return seq;
  }

  private sendHeartbeat(): void {
    const now = performance.now();
    // A tick far later than its period means our own event loop stalled (GC, CPU starvation, a
    // descheduled VM); onSilence() must not blame the robot for frames we could not read.
    if (now - this.lastTickMs > 2 * this.opts.heartbeatPeriodMs) this.lastStallEndMs = now;
    this.lastTickMs = now;
    const conn = this.conn;
    if (conn === null || this.linkState !== 'up') return;
    this.write(conn, { type: 'heartbeat', clockMs: now });
  }

  /** One timer, re-armed by every valid frame: silence for linkTimeoutMs ⇒ link down. */
  private armSilenceTimer(): void {
    this.silenceDueMs = performance.now() + this.opts.linkTimeoutMs;
    if (this.silenceTimer !== null && !this.silenceRecheck) {
      this.silenceTimer.refresh(); // same duration from now: cheap at 250 frames/s
      return;
    }
    if (this.silenceTimer !== null) clearTimeout(this.silenceTimer);
    this.silenceRecheck = false;
    this.silenceTimer = setTimeout(() => this.onSilence(), this.opts.linkTimeoutMs);
  }

  /**
   * The silence verdict. If our own loop stalled during the silence (this timer fired late, or a
   * heartbeat tick just came in late), the robot's frames may be sitting unread in the OS buffer
   * and the silence is ours: listen for one more heartbeat period, once, before declaring the
   * link down. A real silence is then detected at linkTimeoutMs (no stall) or at most one
   * heartbeat period after the stall ends. The robot's watchdog does not depend on our stalls.
   */
  private onSilence(): void {
    this.silenceTimer = null;
    const now = performance.now();
    const hbMs = this.opts.heartbeatPeriodMs;
    const stalled = now - this.silenceDueMs > hbMs / 2 || now - this.lastStallEndMs < hbMs;
    if (stalled && !this.silenceRecheck) {
      this.silenceRecheck = true;
      this.silenceDueMs = now + hbMs;
      this.silenceTimer = setTimeout(() => this.onSilence(), hbMs);
      return;
    }
    this.linkDown(`no frame from the robot for ${Math.round(now - this.lastRxMs)} ms (heartbeat silence)`);
  }

  private countError(code: string, n = 1): void {
    this.errors[code] = (this.errors[code] ?? 0) + n;
  }

  private onData(conn: Connection, chunk: Buffer): void {
    const lostBefore = conn.decoder.framesLost;
    for (const r of conn.decoder.push(chunk)) {
      if (!r.ok) {
        this.countError(r.error.code);
        continue;
      }
      this.onFrame(conn, r.frame);
    }
    const lost = conn.decoder.framesLost - lostBefore;
    if (lost > 0) this.countError('frames-lost', lost);
  }

  private onFrame(conn: Connection, frame: SerialFrame): void {
    const msg = frame.msg;
    if (conn.onHelloAck !== null) {
      // Handshaking: only HELLO_ACK matters; anything else is a previous session's leftovers.
      if (msg.type === 'hello-ack') conn.onHelloAck(msg);
      return;
    }
    if (this.conn !== conn || this.linkState !== 'up') return;
    this.lastRxMs = performance.now();
    this.armSilenceTimer();
    switch (msg.type) {
      case 'state':
        this.statesReceived++;
        this.stateSubject.next(msg.state);
        break;
      case 'heartbeat':
      case 'hello-ack': // an answer to a HELLO we retried: harmless
        break;
      case 'ack':
        this.settle(msg.ackSeq, null);
        break;
      case 'nack':
        this.settle(msg.ackSeq, msg.reason, msg.detail);
        break;
      case 'hello':
      case 'command':
        this.countError('unexpected-message'); // host-to-robot messages coming back: a miswired link
        break;
    }
  }

  private settle(seq: number, nack: SerialNackReason | null, detail = ''): void {
    const p = this.pending.get(seq);
    if (p === undefined) {
      this.countError('unmatched-ack'); // late (after its timeout) or for a command we never sent
      return;
    }
    this.pending.delete(seq);
    clearTimeout(p.timer);
    if (nack === null) {
      p.resolve();
      return;
    }
    this.commandsFailed++;
    const robotCode = errorCodeForNackReason(nack);
    p.reject(
      new Eco3dError('ECO3D_ERR_NACK', `robot refused ${p.kind}: ${nack}${detail === '' ? '' : ` (${detail})`}`, {
        details: { reason: nack, robotCode, seq },
      }),
    );
  }
}

/** Closes a connection's port; a port that is already gone is not an error here. */
function closeQuietly(conn: Connection): Promise<void> {
  conn.onGone = null;
  conn.port.removeAllListeners('data');
  if (!conn.port.isOpen) return Promise.resolve();
  return new Promise((resolve) => conn.port.close(() => resolve()));
}

// RosRobotDriver: the robot behind a rosbridge v2 server, through roslib 2.x. Topics and services
// are in protocols/rosbridge.ts (table in README); units change from SI to mm there, nowhere else.
//
// The link is an explicit state machine:
//
//   idle ──connect()──► connecting ──socket open──► up
//                          ▲    │                    │ socket closed / error / no /joint_states
//                          │    └──failed──► backoff ◄┘
//                          └────── timer ──────┘
//   any state ──close()──► closed (terminal)
//
// - Each connection attempt gets a fresh roslib `Ros`. roslib queues messages sent while it is
//   disconnected and replays them on the next connection; a fresh `Ros` per attempt means a
//   stale jog or target can never be replayed into a new connection. Commands sent while the
//   link is not up are rejected at once with ECO3D_ERR_LINK_LOST instead.
// - Back-off is bounded (100 ms doubling to 2 s by default, with jitter), and resets once up.
// - roslib's service call has no timeout (FACTS.md), so calls are made on the `Ros` object with
//   our own id and timer: on timeout we reject with ECO3D_ERR_TIMEOUT and remove the response
//   listener, so a hung service leaks nothing. A timed-out command may still execute.
// - The link is only as good as the state it carries: no /joint_states for `stateTimeoutMs`
//   counts as a lost link (a half-open TCP connection looks alive otherwise).
import { performance } from 'node:perf_hooks';
import { BehaviorSubject, filter, firstValueFrom, ReplaySubject, throwError, timeout, type Observable } from 'rxjs';
import { Ros, Topic, type ITransport, type ITransportFactory, type RosbridgeMessage } from 'roslib';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  type DriverStats,
  type LinkStatus,
  type Pose,
  type RobotCommand,
  type RobotDriver,
  type RobotFaultCode,
  type RobotMode,
  type RobotState,
  type Wrench,
} from '../protocols/robot.ts';
import {
  commandToServiceCall,
  jogToTwistStamped,
  jointsFromRos,
  parseJointState,
  parsePoseStamped,
  parseRosbridgeMessage,
  parseServiceFailure,
  parseStringMsg,
  parseTriggerResponse,
  parseWrenchStamped,
  poseFromRos,
  robotModeFromRos,
  ROSBRIDGE_JOG_REFUSED_PREFIX,
  rosTimeToMs,
  ROS_FRAME_BASE,
  ROS_FRAME_PROBE,
  ROS_TOPIC_JOG,
  ROS_TOPIC_JOINT_STATES,
  ROS_TOPIC_ROBOT_MODE,
  ROS_TOPIC_TCP_POSE,
  ROS_TOPIC_WRENCH,
  ROS_TYPES,
  wrenchFromRos,
  type RosServiceCall,
  type RosTwistStamped,
  type ServiceCommand,
} from '../protocols/rosbridge.ts';
import { wsTransportFactory } from './ros-transport.ts';

export type RosLinkState = 'idle' | 'connecting' | 'up' | 'backoff' | 'closed';

/** Allowed transitions; anything else is a bug and throws. */
const TRANSITIONS: Readonly<Record<RosLinkState, readonly RosLinkState[]>> = {
  idle: ['connecting', 'closed'],
  connecting: ['up', 'backoff', 'closed'],
  up: ['backoff', 'closed'],
  backoff: ['connecting', 'closed'],
  closed: [],
};

export interface RosDriverOptions {
  /** rosbridge URL, e.g. ws://robot:9090. */
  readonly url: string;
  /** How roslib reaches the server; default: `ws` (see ros-transport.ts). */
  readonly transportFactory?: ITransportFactory;
  /** WebSocket handshake limit per attempt, for the default transport; default 2000 ms. */
  readonly handshakeTimeoutMs?: number;
  /** How long connect() waits for the first connection; default 5000 ms (retries go on). */
  readonly connectTimeoutMs?: number;
  /** First retry delay; default 100 ms. */
  readonly backoffInitialMs?: number;
  /** Longest retry delay; default 2000 ms. */
  readonly backoffMaxMs?: number;
  /** No /joint_states for this long while up ⇒ the link is down; default 1000 ms. */
  readonly stateTimeoutMs?: number;
  /** A /wrench older than this (by stamp) relative to /joint_states reads as null; default 100 ms. */
  readonly wrenchStaleMs?: number;
}

export interface RosDriverStats extends DriverStats {
  readonly linkState: RosLinkState;
  readonly connectAttempts: number;
  readonly connects: number;
  readonly disconnects: number;
  readonly jogsPublished: number;
  readonly serviceCalls: number;
  readonly pendingCommands: number;
}

interface Pending {
  readonly conn: Connection;
  readonly reject: (err: Eco3dError) => void;
  /** Clears the timer and the response listener. */
  readonly cleanup: () => void;
}

/** Everything that belongs to one connection attempt, dropped as a whole when it ends. */
interface Connection {
  readonly ros: Ros;
  readonly socket: { transport: ITransport | undefined; disposed: boolean };
  jog: Topic<RosTwistStamped> | undefined;
  lastError: string | undefined;
  lastJointStatesAtMs: number;
  watchdog: NodeJS.Timeout | undefined;
  pose: Pose | undefined;
  wrench: { readonly value: Wrench; readonly stampMs: number } | undefined;
  mode: { readonly mode: RobotMode; readonly faults: readonly RobotFaultCode[] } | undefined;
}

const errMessage = (e: unknown): string => (e instanceof Error ? e.message : typeof e === 'string' ? e : Object.prototype.toString.call(e));
const wallNowMs = (): number => performance.timeOrigin + performance.now();

function allFinite(cmd: RobotCommand): boolean {
  const nums: number[] = [];
  switch (cmd.kind) {
    case 'jog':
      nums.push(cmd.linearMmPerS.x, cmd.linearMmPerS.y, cmd.linearMmPerS.z, cmd.angularRadPerS.x, cmd.angularRadPerS.y, cmd.angularRadPerS.z);
      break;
    case 'cartesian-target': {
      const p = cmd.pose;
      nums.push(p.positionMm.x, p.positionMm.y, p.positionMm.z, p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w, cmd.speedMmPerS);
      break;
    }
    case 'joint-target':
      nums.push(...cmd.jointsRad, cmd.speedScale);
      break;
    case 'stop':
    case 'estop':
    case 'reset':
      break;
  }
  return nums.every(Number.isFinite);
}

export class RosRobotDriver implements RobotDriver {
  readonly kind = 'ros' as const;
  readonly state$: Observable<RobotState>;
  readonly link$: Observable<LinkStatus>;

  readonly #opts: Required<Omit<RosDriverOptions, 'transportFactory' | 'handshakeTimeoutMs'>>;
  readonly #factory: ITransportFactory;
  readonly #states = new ReplaySubject<RobotState>(1);
  readonly #link: BehaviorSubject<LinkStatus>;
  #state: RosLinkState = 'idle';
  #conn: Connection | undefined;
  #backoffTimer: NodeJS.Timeout | undefined;
  #backoffAttempt = 0;
  #lastDownReason = 'not connected yet';
  readonly #pending = new Map<string, Pending>();
  #callSeq = 0;
  #seq = 0;
  #closing: Promise<void> | undefined;
  readonly #st = {
    statesReceived: 0,
    commandsSent: 0,
    commandsFailed: 0,
    connectAttempts: 0,
    connects: 0,
    disconnects: 0,
    jogsPublished: 0,
    serviceCalls: 0,
  };
  readonly #errors: Record<string, number> = {};

  constructor(opts: RosDriverOptions) {
    // A bad URL would otherwise fail every attempt, forever, as a "link down".
    if (!/^wss?:\/\/[^/\s]+/.test(opts.url)) throw new Eco3dError('ECO3D_ERR_CONFIG', `rosbridge URL must be ws://host:port or wss://…, got "${opts.url}"`);
    this.#opts = {
      url: opts.url,
      connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
      backoffInitialMs: opts.backoffInitialMs ?? 100,
      backoffMaxMs: opts.backoffMaxMs ?? 2000,
      stateTimeoutMs: opts.stateTimeoutMs ?? 1000,
      wrenchStaleMs: opts.wrenchStaleMs ?? 100,
    };
    this.#factory = opts.transportFactory ?? wsTransportFactory({ handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 2000 });
    this.#link = new BehaviorSubject<LinkStatus>({ up: false, atMs: Date.now(), reason: this.#lastDownReason });
    this.state$ = this.#states.asObservable();
    this.link$ = this.#link.asObservable();
  }

  get linkState(): RosLinkState {
    return this.#state;
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  /**
   * Starts the link and resolves once it is up. Rejects with ECO3D_ERR_LINK_LOST if it is not up
   * within `connectTimeoutMs`; the driver keeps retrying in the background (watch link$).
   */
  async connect(): Promise<void> {
    if (this.#state === 'closed') throw new Eco3dError('ECO3D_ERR_CLOSED', 'the ROS driver is closed');
    if (this.#state === 'up') return;
    if (this.#state === 'idle') this.#startAttempt();
    const ms = this.#opts.connectTimeoutMs;
    try {
      await firstValueFrom(
        this.#link.pipe(
          filter((l) => l.up),
          timeout({
            first: ms,
            with: () => throwError(() => new Eco3dError('ECO3D_ERR_LINK_LOST', `rosbridge at ${this.#opts.url} not reachable within ${ms} ms: ${this.#lastDownReason}`)),
          }),
        ),
      );
    } catch (err) {
      if (err instanceof Eco3dError) throw err;
      // link$ completed: close() was called while we waited.
      throw new Eco3dError('ECO3D_ERR_CLOSED', 'the ROS driver was closed while connecting', { cause: err });
    }
  }

  /**
   * Jog: published on /jog; resolves once handed to the socket (the robot does not acknowledge
   * jogs: its watchdog stops it when they stop coming). Everything else: a service call that
   * resolves on `success: true` and rejects with NACK / TIMEOUT / LINK_LOST / CLOSED.
   */
  async send(cmd: RobotCommand, timeoutMs: number = DEFAULT_COMMAND_TIMEOUT_MS): Promise<void> {
    try {
      if (this.#state === 'closed') throw new Eco3dError('ECO3D_ERR_CLOSED', 'the ROS driver is closed');
      const conn = this.#conn;
      if (this.#state !== 'up' || conn === undefined) throw new Eco3dError('ECO3D_ERR_LINK_LOST', `rosbridge link is down: ${this.#lastDownReason}`);
      if (!allFinite(cmd)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${cmd.kind} command has a NaN or infinite number`);
      if (!(timeoutMs > 0)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `timeoutMs must be > 0, got ${timeoutMs}`);
      this.#st.commandsSent++;
      if (cmd.kind === 'jog') {
        // Our own advertise happened on connect; publish() hands the frame to the socket now.
        conn.jog?.publish(jogToTwistStamped(cmd, wallNowMs()));
        this.#st.jogsPublished++;
        return;
      }
      await this.#callService(conn, commandToServiceCall(cmd satisfies ServiceCommand, wallNowMs()), timeoutMs);
    } catch (err) {
      this.#st.commandsFailed++;
      throw err;
    }
  }

  stats(): RosDriverStats {
    return { ...this.#st, errors: { ...this.#errors }, linkState: this.#state, pendingCommands: this.#pending.size };
  }

  /** Idempotent. Rejects pending commands with ECO3D_ERR_CLOSED, closes the socket, stops all timers. */
  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    const wasUp = this.#state === 'up';
    this.#setState('closed');
    if (this.#backoffTimer !== undefined) clearTimeout(this.#backoffTimer);
    this.#backoffTimer = undefined;
    const conn = this.#conn;
    this.#conn = undefined;
    this.#rejectAll(() => new Eco3dError('ECO3D_ERR_CLOSED', 'the ROS driver was closed'));
    if (wasUp) this.#link.next({ up: false, atMs: Date.now(), reason: 'driver closed' });
    this.#link.complete();
    this.#states.complete();
    if (conn !== undefined) await this.#dispose(conn);
  }

  // ----- the state machine

  #setState(next: RosLinkState): void {
    if (!TRANSITIONS[this.#state].includes(next)) throw new Eco3dError('ECO3D_ERR_INTERNAL', `ROS link: no transition ${this.#state} → ${next}`);
    this.#state = next;
  }

  #startAttempt(): void {
    this.#setState('connecting');
    this.#st.connectAttempts++;
    // Keep the transport so that dispose can wait for the socket to be really gone. roslib calls
    // the factory from ros.connect(), i.e. after `conn` below exists.
    const socket: Connection['socket'] = { transport: undefined, disposed: false };
    const factory: ITransportFactory = async (url) => {
      const t = await this.#factory(url);
      socket.transport = t;
      // close() or a give-up happened while the factory ran: do not leave a socket behind.
      if (socket.disposed) t.close();
      return t;
    };
    const conn: Connection = {
      ros: new Ros({ transportFactory: factory }),
      socket,
      jog: undefined,
      lastError: undefined,
      lastJointStatesAtMs: 0,
      watchdog: undefined,
      pose: undefined,
      wrench: undefined,
      mode: undefined,
    };
    this.#conn = conn;
    const ros = conn.ros;
    ros.on('connection', () => {
      if (this.#conn === conn) this.#onUp(conn);
    });
    ros.on('close', (ev: unknown) => {
      if (this.#conn !== conn) return;
      const code = typeof ev === 'object' && ev !== null && 'code' in ev ? ` (code ${String(ev.code)})` : '';
      const why = conn.lastError === undefined ? '' : `: ${conn.lastError}`;
      this.#onDown(conn, `rosbridge connection closed${code}${why}`);
    });
    ros.on('error', (ev: unknown) => {
      if (this.#conn === conn) conn.lastError = errMessage(ev);
    });
    ros.connect(this.#opts.url).catch((err: unknown) => {
      if (this.#conn === conn) this.#onDown(conn, `cannot open ${this.#opts.url}: ${errMessage(err)}`);
    });
  }

  #onUp(conn: Connection): void {
    const ros = conn.ros;
    this.#st.connects++;
    this.#backoffAttempt = 0;
    conn.lastJointStatesAtMs = performance.now();
    // reconnect_on_close: false everywhere: a new connection gets a new Ros and new topics.
    const sub = (name: string, messageType: string, onMsg: (m: unknown) => void): void => {
      new Topic<unknown>({ ros, name, messageType, reconnect_on_close: false }).subscribe((m) => {
        if (this.#conn === conn) onMsg(m);
      });
    };
    sub(ROS_TOPIC_ROBOT_MODE, ROS_TYPES.string, (m) => this.#onRobotMode(conn, m));
    sub(ROS_TOPIC_TCP_POSE, ROS_TYPES.poseStamped, (m) => this.#onTcpPose(conn, m));
    sub(ROS_TOPIC_WRENCH, ROS_TYPES.wrenchStamped, (m) => this.#onWrench(conn, m));
    sub(ROS_TOPIC_JOINT_STATES, ROS_TYPES.jointState, (m) => this.#onJointStates(conn, m));
    conn.jog = new Topic<RosTwistStamped>({ ros, name: ROS_TOPIC_JOG, messageType: ROS_TYPES.twistStamped, queue_size: 1, reconnect_on_close: false });
    conn.jog.advertise();
    // Status errors without an id: a refused jog (jogs have no response, so this is the only
    // trace of a refusal), or the server telling us a message of ours was bad.
    ros.on('status', (m: RosbridgeMessage) => {
      const p = parseRosbridgeMessage(m);
      if (!p.ok || p.message.op !== 'status' || p.message.level !== 'error') return;
      this.#countError(p.message.msg.startsWith(ROSBRIDGE_JOG_REFUSED_PREFIX) ? 'ECO3D_ERR_NACK' : 'ECO3D_ERR_BAD_REQUEST');
    });
    const checkEveryMs = Math.max(10, this.#opts.stateTimeoutMs / 4);
    conn.watchdog = setInterval(() => {
      const silentMs = performance.now() - conn.lastJointStatesAtMs;
      if (this.#conn === conn && silentMs > this.#opts.stateTimeoutMs) {
        this.#onDown(conn, `no ${ROS_TOPIC_JOINT_STATES} for ${Math.round(silentMs)} ms`);
      }
    }, checkEveryMs);
    this.#setState('up');
    this.#link.next({ up: true, atMs: Date.now(), reason: `connected to ${this.#opts.url}` });
  }

  #onDown(conn: Connection, reason: string): void {
    if (this.#conn !== conn || this.#state === 'closed') return;
    const wasUp = this.#state === 'up';
    this.#conn = undefined;
    this.#lastDownReason = reason;
    void this.#dispose(conn);
    this.#rejectAll(() => new Eco3dError('ECO3D_ERR_LINK_LOST', `rosbridge link lost: ${reason}`));
    this.#setState('backoff');
    if (wasUp) {
      this.#st.disconnects++;
      this.#link.next({ up: false, atMs: Date.now(), reason });
    }
    // Exponential with ±20 % jitter, bounded: a site full of robots does not reconnect in step.
    const baseMs = Math.min(this.#opts.backoffMaxMs, this.#opts.backoffInitialMs * 2 ** this.#backoffAttempt);
    this.#backoffAttempt = Math.min(this.#backoffAttempt + 1, 30);
    const delayMs = Math.min(this.#opts.backoffMaxMs, baseMs * (0.8 + 0.4 * Math.random()));
    this.#backoffTimer = setTimeout(() => {
      this.#backoffTimer = undefined;
      if (this.#state === 'backoff') this.#startAttempt();
    }, delayMs);
  }

  /** Drops one connection's resources; resolves once its socket is closed (bounded). */
  async #dispose(conn: Connection): Promise<void> {
    conn.socket.disposed = true;
    if (conn.watchdog !== undefined) clearInterval(conn.watchdog);
    conn.watchdog = undefined;
    conn.ros.removeAllListeners();
    const t = conn.socket.transport;
    if (t === undefined || t.isClosed()) {
      conn.ros.close();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      t.on('close', () => resolve());
      // Our ws transport drops the socket after its own close timeout; this bounds any other.
      timer = setTimeout(resolve, 1000);
      conn.ros.close();
    });
    clearTimeout(timer);
  }

  #rejectAll(makeErr: () => Eco3dError): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) {
      p.cleanup();
      p.reject(makeErr());
    }
  }

  #countError(code: ErrorCode): void {
    this.#errors[code] = (this.#errors[code] ?? 0) + 1;
  }

  // ----- services

  #callService(conn: Connection, call: RosServiceCall, timeoutMs: number): Promise<void> {
    this.#st.serviceCalls++;
    const id = `eco3d:${call.service}:${++this.#callSeq}`;
    return new Promise<void>((resolve, reject) => {
      const onResponse = (raw: RosbridgeMessage): void => {
        if (!this.#pending.delete(id)) return;
        cleanup();
        const p = parseRosbridgeMessage(raw);
        if (!p.ok || p.message.op !== 'service_response') {
          this.#countError('ECO3D_ERR_PROTOCOL');
          reject(new Eco3dError('ECO3D_ERR_PROTOCOL', `${call.service}: malformed service response`));
          return;
        }
        const r = p.message;
        if (!r.result) {
          // The call itself failed (unknown service, bad arguments): rosbridge puts the reason in values.
          const why = typeof r.values === 'string' ? r.values : 'service call failed';
          reject(new Eco3dError('ECO3D_ERR_NACK', `${call.service}: ${why}`, { details: { service: call.service } }));
          return;
        }
        const v = parseTriggerResponse(r.values);
        if (!v.ok) {
          this.#countError('ECO3D_ERR_PROTOCOL');
          reject(new Eco3dError('ECO3D_ERR_PROTOCOL', `${call.service}: ${v.error}`));
          return;
        }
        if (v.value.success) {
          resolve();
          return;
        }
        const f = parseServiceFailure(v.value.message);
        const details = f.code === undefined ? { service: call.service } : { service: call.service, remoteCode: f.code };
        reject(new Eco3dError('ECO3D_ERR_NACK', `${call.service} refused: ${f.message}`, { details }));
      };
      const timer = setTimeout(() => {
        if (!this.#pending.delete(id)) return;
        cleanup();
        reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `${call.service}: no response within ${timeoutMs} ms`, { details: { service: call.service } }));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        conn.ros.off(id, onResponse);
      };
      this.#pending.set(id, { conn, reject, cleanup });
      conn.ros.on(id, onResponse);
      // `type` is optional in rosbridge; sending it lets the server check it (roslib's type omits it).
      const msg = { op: 'call_service' as const, id, service: call.service, type: call.type, args: call.args };
      conn.ros.callOnConnection(msg);
    });
  }

  // ----- topics → RobotState

  #protocolError(): void {
    this.#countError('ECO3D_ERR_PROTOCOL');
  }

  #onRobotMode(conn: Connection, raw: unknown): void {
    const s = parseStringMsg(raw);
    const m = s.ok ? robotModeFromRos(s.value) : s;
    if (!m.ok) return this.#protocolError();
    conn.mode = m.value;
  }

  #onTcpPose(conn: Connection, raw: unknown): void {
    const p = parsePoseStamped(raw);
    // A pose in another frame would be silently wrong; we do not transform, we refuse.
    if (!p.ok || (p.value.header.frame_id !== ROS_FRAME_BASE && p.value.header.frame_id !== '')) return this.#protocolError();
    conn.pose = poseFromRos(p.value.pose);
  }

  #onWrench(conn: Connection, raw: unknown): void {
    const w = parseWrenchStamped(raw);
    if (!w.ok || (w.value.header.frame_id !== ROS_FRAME_PROBE && w.value.header.frame_id !== '')) return this.#protocolError();
    conn.wrench = { value: wrenchFromRos(w.value.wrench), stampMs: rosTimeToMs(w.value.header.stamp) };
  }

  #onJointStates(conn: Connection, raw: unknown): void {
    conn.lastJointStatesAtMs = performance.now();
    const js = parseJointState(raw);
    const joints = js.ok ? jointsFromRos(js.value) : js;
    if (!js.ok || !joints.ok) return this.#protocolError();
    // /joint_states closes each server tick; emit once the other topics have been heard from.
    if (conn.pose === undefined || conn.mode === undefined) return;
    const tMs = rosTimeToMs(js.value.header.stamp);
    const w = conn.wrench;
    this.#st.statesReceived++;
    this.#states.next({
      tMs,
      seq: ++this.#seq,
      mode: conn.mode.mode,
      jointsRad: joints.value.jointsRad,
      jointVelRadPerS: joints.value.jointVelRadPerS,
      tcpPose: conn.pose,
      wrench: w !== undefined && Math.abs(tMs - w.stampMs) <= this.#opts.wrenchStaleMs ? w.value : null,
      faults: conn.mode.faults,
    });
  }
}

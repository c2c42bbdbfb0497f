// A rosbridge v2 WebSocket server in front of any RobotDriver, so that any roslib client (or a
// ROS user's rosbridge tooling) can drive the simulator, or a serial robot, as if it were a ROS
// robot. The topic and service table lives in protocols/rosbridge.ts.
//
// How it behaves, and why:
// - Robot topics are SAMPLED from the driver's latest state on a drift-corrected timer
//   (default 125 Hz, a UR CB3 controller's own rate). A tick that runs late is skipped, never
//   replayed, and a client whose socket buffer is over `maxBufferedBytes` misses topic messages
//   instead of growing our memory: a slow client sees gaps, never a backlog.
// - A state older than `stateStaleMs` is not republished: a dead robot shows as silent topics,
//   not as frozen data that looks alive.
// - Jogs (TwistStamped on /jog) are forwarded one at a time per client; a jog that arrives while
//   the previous one is still with the driver replaces any queued one (only the newest velocity
//   matters).
// - A client that was jogging and goes away (socket closed, dropped, unadvertised /jog, server
//   closed) makes us send `stop` at once; the robot's own JOG_WATCHDOG_MS is the second line.
// - Bad input never throws out of a handler: every malformed frame gets a `status` error (level
//   `error`, the request's id when it had one) and the connection stays up.
// - Optional ultrasound image topic (`imageTopic`): each frame of a provided observable is
//   published once, as it comes, as sensor_msgs/Image mono8 (rosbridge JSON: `data` in base64,
//   header.stamp = the frame's tMs read as ROS time), to the clients subscribed to it. Like the
//   robot topics it is dropped, never queued, for a client whose socket buffer is full.
import { performance } from 'node:perf_hooks';
import type { Observable, Subscription } from 'rxjs';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import type { ImageFrame } from '../protocols/imaging.ts';
import {
  DEFAULT_COMMAND_TIMEOUT_MS,
  JOG_WATCHDOG_MS,
  type RobotDriver,
  type RobotState,
} from '../protocols/robot.ts';
import {
  commandFromServiceCall,
  formatServiceFailure,
  isRosPublishedTopic,
  isRosServiceName,
  jogFromTwistStamped,
  jointStateToRos,
  parseRosbridgeText,
  parseTwistStamped,
  poseToRos,
  robotModeToRos,
  ROSBRIDGE_JOG_REFUSED_PREFIX,
  rosbridgeStatus,
  rosHeader,
  ROS_FRAME_BASE,
  ROS_FRAME_PROBE,
  ROS_PUBLISHED_TOPICS,
  ROS_SERVICES,
  ROS_SERVICE_STOP,
  ROS_TOPIC_JOG,
  ROS_TOPIC_JOINT_STATES,
  ROS_TOPIC_ROBOT_MODE,
  ROS_TOPIC_TCP_POSE,
  ROS_TOPIC_WRENCH,
  ROS_TYPES,
  sameRosType,
  statusPasses,
  wrenchToRos,
  type JogCommand,
  type RosbridgeCallService,
  type RosbridgeId,
  type RosbridgeMessage,
  type RosbridgeStatusLevel,
  type RosbridgeSubscribe,
  type RosPublishedTopic,
  ROS_TOPIC_US_IMAGE,
  ROS_TYPE_IMAGE,
} from '../protocols/rosbridge.ts';

export interface RosbridgeServerOptions {
  /** Default 127.0.0.1: the bridge has no authentication, so it stays on loopback unless asked. */
  readonly host?: string;
  /** Default 0: an ephemeral port (read it from the handle). */
  readonly port?: number;
  /** Sampling rate of the robot topics. Default 125 Hz. */
  readonly publishRateHz?: number;
  /** Timeout of each command passed to the driver, unless the call_service carries its own. */
  readonly commandTimeoutMs?: number;
  /** Per-client socket buffer above which topic and status messages are dropped. Default 256 KiB. */
  readonly maxBufferedBytes?: number;
  /** Per-client socket buffer above which the client is disconnected as unresponsive. Default 4 MiB. */
  readonly hardMaxBufferedBytes?: number;
  /** A driver state older than this is not republished. Default 500 ms. */
  readonly stateStaleMs?: number;
  /** /robot_mode is sent on change, and at least this often otherwise. Default 100 ms. */
  readonly modeHeartbeatMs?: number;
  /** Publish these frames on an image topic too. Off by default. */
  readonly imageTopic?: RosbridgeImageTopicOptions;
}

export interface RosbridgeImageTopicOptions {
  /** Subscribed once, when the server starts; unsubscribed on close(). Frames must be mono8. */
  readonly frames$: Observable<ImageFrame>;
  /** Default `/us/image`. */
  readonly topic?: string;
  /** header.frame_id. Default `us_image`. */
  readonly frameId?: string;
}

/** sensor_msgs/Image's type name, for the optional image topic. */

export interface RosbridgeServerStats {
  readonly clientsConnected: number;
  readonly clientsTotal: number;
  readonly messagesIn: number;
  readonly messagesOut: number;
  /** Topic or status messages not sent because the client's socket buffer was full. */
  readonly messagesDropped: number;
  /** Clients disconnected because their buffer passed `hardMaxBufferedBytes`. */
  readonly slowClientsDropped: number;
  readonly statusErrors: number;
  readonly ticks: number;
  /** Sampling ticks skipped because the event loop ran late (no burst to catch up). */
  readonly ticksSkipped: number;
  readonly jogsForwarded: number;
  /** Jogs replaced by a newer one before reaching the driver. */
  readonly jogsCoalesced: number;
  readonly serviceCalls: number;
  readonly stopsOnDisconnect: number;
  readonly stopsOnDisconnectFailed: number;
  /** Frames taken from `imageTopic.frames$` (each published to every subscribed client). */
  readonly imageFrames: number;
}

export interface RosbridgeServerHandle {
  readonly url: string;
  readonly port: number;
  readonly closed: boolean;
  /** Idempotent: terminates every client, stops a jogging client's motion, releases the port and all timers. */
  close(): Promise<void>;
  /** Fault injection: closes every client socket abruptly (no close handshake). */
  dropAllClients(): void;
  /** Fault injection: delays everything the server sends by `ms` (0 turns it off). */
  setLatencyMs(ms: number): void;
  stats(): RosbridgeServerStats;
}

const DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  publishRateHz: 125,
  maxBufferedBytes: 256 * 1024,
  hardMaxBufferedBytes: 4 * 1024 * 1024,
  stateStaleMs: 500,
  modeHeartbeatMs: 100,
} as const;

/** Longest service timeout a client may ask for; beyond it a call is surely a mistake. */
const MAX_SERVICE_TIMEOUT_MS = 60_000;
/** Largest frame we accept. Our requests are well under 4 kB; this bounds a hostile one. */
const MAX_PAYLOAD_BYTES = 1024 * 1024;

/** Wall clock with sub-millisecond resolution, for header stamps (ROS time is wall time). */
const wallNowMs = (): number => performance.timeOrigin + performance.now();

type SendKind = 'topic' | 'status' | 'response';

interface TopicSubs {
  /** Subscription key (the subscribe id, or a generated one) → throttle_rate, ms. */
  readonly throttleMsByKey: Map<string, number>;
  lastSentAtMs: number;
  /** Last payload sent, to send /robot_mode on change. */
  lastSentData: string | undefined;
}

interface JogState {
  /** The last jog received asked for motion (any non-zero component). */
  active: boolean;
  lastAtMs: number;
  inFlight: boolean;
  pending: JogCommand | null;
}

interface Client {
  readonly ws: WebSocket;
  readonly n: number;
  gone: boolean;
  statusLevel: RosbridgeStatusLevel;
  /** Robot topics, and the image topic when there is one. */
  readonly subs: Map<string, TopicSubs>;
  readonly advertised: Set<string>;
  readonly jog: JogState;
  anonSubs: number;
}

const isNonZeroJog = (c: JogCommand): boolean =>
  c.linearMmPerS.x !== 0 ||
  c.linearMmPerS.y !== 0 ||
  c.linearMmPerS.z !== 0 ||
  c.angularRadPerS.x !== 0 ||
  c.angularRadPerS.y !== 0 ||
  c.angularRadPerS.z !== 0;

function rawToText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/** Starts a rosbridge v2 server for `driver`. The driver stays the caller's: close() does not close it. */
export async function serveRosbridge(driver: RobotDriver, opts: RosbridgeServerOptions = {}): Promise<RosbridgeServerHandle> {
  const host = opts.host ?? DEFAULTS.host;
  const publishRateHz = opts.publishRateHz ?? DEFAULTS.publishRateHz;
  const commandTimeoutMs = opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  const maxBufferedBytes = opts.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes;
  const hardMaxBufferedBytes = opts.hardMaxBufferedBytes ?? DEFAULTS.hardMaxBufferedBytes;
  const stateStaleMs = opts.stateStaleMs ?? DEFAULTS.stateStaleMs;
  const modeHeartbeatMs = opts.modeHeartbeatMs ?? DEFAULTS.modeHeartbeatMs;
  if (!(publishRateHz > 0 && publishRateHz <= 1000)) throw new Eco3dError('ECO3D_ERR_CONFIG', `publishRateHz must be in (0, 1000], got ${publishRateHz}`);
  const periodMs = 1000 / publishRateHz;
  const imageTopic = opts.imageTopic === undefined ? undefined : (opts.imageTopic.topic ?? ROS_TOPIC_US_IMAGE);
  const imageFrameId = opts.imageTopic?.frameId ?? 'us_image';
  if (imageTopic !== undefined && (isRosPublishedTopic(imageTopic) || !imageTopic.startsWith('/'))) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `image topic "${imageTopic}" must start with / and not be a robot topic`);
  }

  const wss = new WebSocketServer({ host, port: opts.port ?? DEFAULTS.port, maxPayload: MAX_PAYLOAD_BYTES, perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      wss.off('listening', onListening);
      reject(new Eco3dError('ECO3D_ERR_CONFIG', `rosbridge server cannot listen on ${host}:${opts.port ?? 0}: ${err.message}`, { cause: err }));
    };
    const onListening = (): void => {
      wss.off('error', onError);
      resolve();
    };
    wss.once('error', onError);
    wss.once('listening', onListening);
  });
  const addr = wss.address();
  if (addr === null || typeof addr === 'string') throw new Eco3dError('ECO3D_ERR_INTERNAL', `unexpected server address ${String(addr)}`);
  const port = addr.port;
  const url = `ws://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const clients = new Set<Client>();
  const latencyTimers = new Set<NodeJS.Timeout>();
  const pendingStops = new Set<Promise<void>>();
  /** Cancels every driver call still waiting, so that close() leaves no deadline timer behind. */
  const inflightCancels = new Set<() => void>();
  let latencyMs = 0;
  let closed = false;
  let closing: Promise<void> | undefined;
  let clientSeq = 0;
  const st = {
    clientsTotal: 0,
    messagesIn: 0,
    messagesOut: 0,
    messagesDropped: 0,
    slowClientsDropped: 0,
    statusErrors: 0,
    ticks: 0,
    ticksSkipped: 0,
    jogsForwarded: 0,
    jogsCoalesced: 0,
    serviceCalls: 0,
    stopsOnDisconnect: 0,
    stopsOnDisconnectFailed: 0,
    imageFrames: 0,
  };
  const publishedTopicNames = (): string => [...Object.keys(ROS_PUBLISHED_TOPICS), ...(imageTopic === undefined ? [] : [imageTopic])].join(', ');

  // The latest robot state and when it arrived (monotonic), sampled by the tick.
  let latest: RobotState | undefined;
  let latestAtMs = 0;
  const stateSub: Subscription = driver.state$.subscribe({
    next: (s) => {
      latest = s;
      latestAtMs = performance.now();
    },
    // A driver whose state stream errors or ends simply goes stale: topics fall silent.
    error: () => undefined,
  });

  /**
   * Bounds a driver call even if the driver breaks its own timeout contract, and lets close()
   * abandon it (the call may still complete at the driver; nobody is waiting for the answer).
   */
  async function withDeadline(p: Promise<void>, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    let cancel: () => void = () => undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `driver did not answer within ${ms} ms`)), ms);
      cancel = () => reject(new Eco3dError('ECO3D_ERR_CLOSED', 'rosbridge server closed'));
    });
    inflightCancels.add(cancel);
    try {
      await Promise.race([p, deadline]);
    } finally {
      clearTimeout(timer);
      inflightCancels.delete(cancel);
    }
  }

  // ----- sending

  function transmit(c: Client, data: string, kind: SendKind): void {
    if (c.gone || c.ws.readyState !== WebSocket.OPEN) return;
    const buffered = c.ws.bufferedAmount;
    if (buffered > hardMaxBufferedBytes) {
      st.slowClientsDropped++;
      clientGone(c);
      c.ws.terminate();
      return;
    }
    // Responses are never dropped (one per request the client made); streams and statuses are.
    if (kind !== 'response' && buffered > maxBufferedBytes) {
      st.messagesDropped++;
      return;
    }
    c.ws.send(data);
    st.messagesOut++;
  }

  function send(c: Client, data: string, kind: SendKind): void {
    if (closed || c.gone) return;
    if (latencyMs <= 0) {
      transmit(c, data, kind);
      return;
    }
    const t = setTimeout(() => {
      latencyTimers.delete(t);
      transmit(c, data, kind);
    }, latencyMs);
    latencyTimers.add(t);
  }

  function status(c: Client, level: 'error' | 'warning' | 'info', msg: string, id?: RosbridgeId): void {
    if (level === 'error') st.statusErrors++;
    if (!statusPasses(level, c.statusLevel)) return;
    send(c, JSON.stringify(rosbridgeStatus(level, msg, id)), 'status');
  }

  // ----- the sampling loop

  let tickTimer: NodeJS.Timeout | undefined;
  let nextTickAt = performance.now() + periodMs;

  function scheduleTick(): void {
    const now = performance.now();
    // Late by more than a period (GC pause, busy loop): skip ahead rather than burst.
    if (nextTickAt < now) {
      st.ticksSkipped += Math.floor((now - nextTickAt) / periodMs) + 1;
      nextTickAt = now + periodMs;
    }
    tickTimer = setTimeout(onTick, Math.max(0, Math.floor(nextTickAt - now)));
  }

  function onTick(): void {
    tickTimer = undefined;
    if (closed) return;
    nextTickAt += periodMs;
    try {
      tick();
    } finally {
      scheduleTick();
    }
  }

  function tick(): void {
    st.ticks++;
    const s = latest;
    if (s === undefined || clients.size === 0) return;
    const nowMs = performance.now();
    if (nowMs - latestAtMs > stateStaleMs) return;
    // The stamp is the sampling time (wall clock, as ROS time is), one stamp for the whole tick.
    const stampMs = wallNowMs();
    const frames = new Map<RosPublishedTopic, string>();
    const frame = (topic: RosPublishedTopic): string | undefined => {
      if (frames.has(topic)) return frames.get(topic);
      let msg: unknown;
      switch (topic) {
        case ROS_TOPIC_ROBOT_MODE:
          msg = robotModeToRos(s.mode, s.faults);
          break;
        case ROS_TOPIC_TCP_POSE:
          msg = { header: rosHeader(stampMs, ROS_FRAME_BASE), pose: poseToRos(s.tcpPose) };
          break;
        case ROS_TOPIC_WRENCH:
          // No sensor reading, no message: the client sees the dropout as silence.
          msg = s.wrench === null ? undefined : { header: rosHeader(stampMs, ROS_FRAME_PROBE), wrench: wrenchToRos(s.wrench) };
          break;
        case ROS_TOPIC_JOINT_STATES:
          msg = jointStateToRos(stampMs, s.jointsRad, s.jointVelRadPerS);
          break;
      }
      if (msg === undefined) return undefined;
      const text = JSON.stringify({ op: 'publish', topic, msg });
      frames.set(topic, text);
      return text;
    };
    // /joint_states goes last: it closes the tick, so a client that combines topics can emit on it.
    const order: readonly RosPublishedTopic[] = [ROS_TOPIC_ROBOT_MODE, ROS_TOPIC_TCP_POSE, ROS_TOPIC_WRENCH, ROS_TOPIC_JOINT_STATES];
    for (const c of clients) {
      for (const topic of order) {
        const subs = c.subs.get(topic);
        if (subs === undefined || subs.throttleMsByKey.size === 0) continue;
        // Several subscriptions to one topic get one stream at the smallest throttle (spec 3.2.4).
        const throttleMs = Math.min(...subs.throttleMsByKey.values());
        const sinceMs = nowMs - subs.lastSentAtMs;
        // Half a period of slack so that throttle_rate 100 at 125 Hz gives 10 Hz, not 8.3 Hz.
        if (sinceMs < throttleMs - periodMs / 2) continue;
        const text = frame(topic);
        if (text === undefined) continue;
        if (topic === ROS_TOPIC_ROBOT_MODE && text === subs.lastSentData && sinceMs < modeHeartbeatMs - periodMs / 2) continue;
        subs.lastSentAtMs = nowMs;
        subs.lastSentData = topic === ROS_TOPIC_ROBOT_MODE ? text : undefined;
        send(c, text, 'topic');
      }
    }
  }

  scheduleTick();

  // ----- the optional image topic: each frame published as it comes (not sampled by the tick)

  function publishImage(topic: string, f: ImageFrame): void {
    // mono8, unpadded rows: anything else would publish a message that lies about its size.
    if (f.pixels.length !== f.width * f.height) return;
    st.imageFrames++;
    let text: string | undefined;
    const nowMs = performance.now();
    for (const c of clients) {
      const subs = c.subs.get(topic);
      if (subs === undefined || subs.throttleMsByKey.size === 0) continue;
      const throttleMs = Math.min(...subs.throttleMsByKey.values());
      if (nowMs - subs.lastSentAtMs < throttleMs) continue;
      subs.lastSentAtMs = nowMs;
      text ??= JSON.stringify({
        op: 'publish',
        topic,
        msg: {
          header: rosHeader(f.tMs, imageFrameId),
          height: f.height,
          width: f.width,
          encoding: 'mono8',
          is_bigendian: 0,
          step: f.width,
          // rosbridge's JSON encoding of uint8[]: base64.
          data: Buffer.from(f.pixels.buffer, f.pixels.byteOffset, f.pixels.byteLength).toString('base64'),
        },
      });
      send(c, text, 'topic');
    }
  }

  const imageSub: Subscription | undefined =
    imageTopic === undefined
      ? undefined
      : opts.imageTopic?.frames$.subscribe({
          next: (f) => {
            if (!closed) publishImage(imageTopic, f);
          },
          // A frame stream that fails or ends leaves the topic silent, like a dead robot's.
          error: () => undefined,
        });

  // ----- jogs and stops

  function stopForLostJogger(c: Client): void {
    const wasJogging = c.jog.active && performance.now() - c.jog.lastAtMs <= 2 * JOG_WATCHDOG_MS;
    c.jog.active = false;
    c.jog.pending = null;
    // Twice the watchdog: past that the robot has stopped by itself, and a late stop could cut
    // short another client's motion.
    if (!wasJogging) return;
    const p = withDeadline(driver.send({ kind: 'stop' }, commandTimeoutMs), commandTimeoutMs + 100).then(
      () => {
        st.stopsOnDisconnect++;
      },
      () => {
        // The robot's own jog watchdog still stops it; we count the failure for the operator.
        st.stopsOnDisconnectFailed++;
      },
    );
    pendingStops.add(p);
    void p.finally(() => pendingStops.delete(p));
  }

  async function forwardJogs(c: Client, first: JogCommand): Promise<void> {
    c.jog.inFlight = true;
    let cmd: JogCommand | null = first;
    try {
      while (cmd !== null && !c.gone && !closed) {
        try {
          await withDeadline(driver.send(cmd, commandTimeoutMs), commandTimeoutMs + 100);
          st.jogsForwarded++;
        } catch (err) {
          const e = toEco3dError(err);
          status(c, 'error', `${ROSBRIDGE_JOG_REFUSED_PREFIX}${formatServiceFailure(e.code, e.message)}`);
        }
        cmd = c.jog.pending;
        c.jog.pending = null;
      }
    } finally {
      c.jog.inFlight = false;
    }
  }

  function onJog(c: Client, cmd: JogCommand): void {
    c.jog.active = isNonZeroJog(cmd);
    c.jog.lastAtMs = performance.now();
    if (c.jog.inFlight) {
      if (c.jog.pending !== null) st.jogsCoalesced++;
      c.jog.pending = cmd;
      return;
    }
    void forwardJogs(c, cmd);
  }

  // ----- services

  async function onCallService(c: Client, m: RosbridgeCallService): Promise<void> {
    const respond = (result: boolean, values: unknown): void => {
      const msg = m.id === undefined ? { op: 'service_response', service: m.service, values, result } : { op: 'service_response', id: m.id, service: m.service, values, result };
      send(c, JSON.stringify(msg), 'response');
    };
    st.serviceCalls++;
    try {
      if (!isRosServiceName(m.service)) {
        const why = `unknown service "${m.service}"; this robot offers ${Object.keys(ROS_SERVICES).join(', ')}`;
        status(c, 'error', why, m.id);
        respond(false, why);
        return;
      }
      const expected = ROS_SERVICES[m.service];
      if (m.type !== undefined && !sameRosType(m.type, expected)) {
        const why = `service ${m.service} has type ${expected}, not ${m.type}`;
        status(c, 'error', why, m.id);
        respond(false, why);
        return;
      }
      const cmd = commandFromServiceCall(m.service, m.args);
      if (!cmd.ok) {
        status(c, 'error', cmd.error, m.id);
        respond(false, cmd.error);
        return;
      }
      const timeoutMs = m.timeout !== undefined && m.timeout > 0 ? Math.min(m.timeout * 1000, MAX_SERVICE_TIMEOUT_MS) : commandTimeoutMs;
      try {
        await withDeadline(driver.send(cmd.value, timeoutMs), timeoutMs + 100);
        if (m.service === ROS_SERVICE_STOP) c.jog.active = false;
        respond(true, { success: true, message: '' });
      } catch (err) {
        // The robot refused or failed: the call itself worked, so result is true and the
        // Trigger-style response says why (the way ROS robot drivers report refusals).
        const e = toEco3dError(err);
        respond(true, { success: false, message: formatServiceFailure(e.code, e.message) });
      }
    } catch (err) {
      const e = toEco3dError(err);
      respond(false, formatServiceFailure(e.code, e.message));
    }
  }

  // ----- incoming messages

  function onSubscribe(c: Client, m: RosbridgeSubscribe): void {
    const isImage = imageTopic !== undefined && m.topic === imageTopic;
    if (!isImage && !isRosPublishedTopic(m.topic)) {
      status(c, 'error', `cannot subscribe to "${m.topic}": this robot publishes ${publishedTopicNames()}`, m.id);
      return;
    }
    const type = isImage ? ROS_TYPE_IMAGE : ROS_PUBLISHED_TOPICS[m.topic as RosPublishedTopic];
    if (m.type !== undefined && !sameRosType(m.type, type)) {
      status(c, 'error', `topic ${m.topic} has type ${type}, not ${m.type}`, m.id);
      return;
    }
    if (m.compression !== undefined && m.compression !== 'none') {
      // roslib reads plain JSON whatever it asked for; tell the user once and carry on.
      status(c, 'warning', `compression "${m.compression}" is not supported; sending JSON`, m.id);
    }
    let subs = c.subs.get(m.topic);
    if (subs === undefined) {
      subs = { throttleMsByKey: new Map(), lastSentAtMs: -Infinity, lastSentData: undefined };
      c.subs.set(m.topic, subs);
    }
    // queue_length is accepted but has no effect: we always send the newest sample, which is
    // what a queue of length 1 would give and what a control client wants.
    const key = m.id === undefined ? `anon:${++c.anonSubs}` : `id:${String(m.id)}`;
    subs.throttleMsByKey.set(key, m.throttle_rate ?? 0);
  }

  function onMessage(c: Client, m: RosbridgeMessage): void {
    switch (m.op) {
      case 'subscribe':
        onSubscribe(c, m);
        return;
      case 'unsubscribe': {
        const subs = isRosPublishedTopic(m.topic) || m.topic === imageTopic ? c.subs.get(m.topic) : undefined;
        if (subs === undefined || subs.throttleMsByKey.size === 0) {
          status(c, 'warning', `not subscribed to "${m.topic}"`, m.id);
          return;
        }
        // With an id, only that subscription; without, all of them (spec 3.2.5).
        if (m.id === undefined) subs.throttleMsByKey.clear();
        else if (!subs.throttleMsByKey.delete(`id:${String(m.id)}`)) status(c, 'warning', `no subscription "${String(m.id)}" on "${m.topic}"`, m.id);
        return;
      }
      case 'advertise':
        if (m.topic !== ROS_TOPIC_JOG) {
          status(c, 'error', `cannot advertise "${m.topic}": this robot accepts publishes on ${ROS_TOPIC_JOG} only`, m.id);
          return;
        }
        if (!sameRosType(m.type, ROS_TYPES.twistStamped)) {
          status(c, 'error', `topic ${ROS_TOPIC_JOG} has type ${ROS_TYPES.twistStamped}, not ${m.type}`, m.id);
          return;
        }
        c.advertised.add(m.topic);
        return;
      case 'unadvertise':
        if (!c.advertised.delete(m.topic)) {
          status(c, 'warning', `"${m.topic}" was not advertised`, m.id);
          return;
        }
        if (m.topic === ROS_TOPIC_JOG) stopForLostJogger(c);
        return;
      case 'publish': {
        if (m.topic !== ROS_TOPIC_JOG) {
          status(c, 'error', `cannot publish on "${m.topic}": this robot accepts publishes on ${ROS_TOPIC_JOG} only`, m.id);
          return;
        }
        // Publishing without advertising first is tolerated: raw clients often skip it.
        const twist = parseTwistStamped(m.msg);
        if (!twist.ok) {
          status(c, 'error', twist.error, m.id);
          return;
        }
        const jog = jogFromTwistStamped(twist.value);
        if (!jog.ok) {
          status(c, 'error', jog.error, m.id);
          return;
        }
        onJog(c, jog.value);
        return;
      }
      case 'call_service':
        void onCallService(c, m);
        return;
      case 'set_level':
        c.statusLevel = m.level;
        return;
      case 'status':
        // A client's own status report carries nothing for us to act on.
        return;
      case 'advertise_service':
      case 'unadvertise_service':
      case 'service_response':
        status(c, 'error', `"${m.op}" is not supported: this bridge hosts no client-side service servers`, m.id);
        return;
      case 'advertise_action':
      case 'unadvertise_action':
      case 'send_action_goal':
      case 'cancel_action_goal':
      case 'action_feedback':
      case 'action_result':
        status(c, 'error', `"${m.op}" is not supported: this robot offers no actions`, m.id);
        return;
      case 'fragment':
      case 'png':
        status(c, 'error', `"${m.op}" is not supported: send whole JSON messages`, m.id);
        return;
      case 'auth':
        status(c, 'error', '"auth" is not supported: this bridge has no authentication; keep it on loopback', undefined);
        return;
    }
  }

  function onFrame(c: Client, data: RawData, isBinary: boolean): void {
    st.messagesIn++;
    if (isBinary) {
      status(c, 'error', 'binary frames (BSON/CBOR) are not supported; send JSON text');
      return;
    }
    const parsed = parseRosbridgeText(rawToText(data));
    if (!parsed.ok) {
      status(c, 'error', `${parsed.error.code}: ${parsed.error.message}`, parsed.error.id);
      return;
    }
    onMessage(c, parsed.message);
  }

  function clientGone(c: Client): void {
    if (c.gone) return;
    c.gone = true;
    clients.delete(c);
    stopForLostJogger(c);
  }

  wss.on('connection', (ws) => {
    if (closed) {
      ws.terminate();
      return;
    }
    const c: Client = {
      ws,
      n: ++clientSeq,
      gone: false,
      statusLevel: 'error',
      subs: new Map(),
      advertised: new Set(),
      jog: { active: false, lastAtMs: 0, inFlight: false, pending: null },
      anonSubs: 0,
    };
    st.clientsTotal++;
    clients.add(c);
    ws.on('message', (data, isBinary) => {
      try {
        onFrame(c, data, isBinary);
      } catch (err) {
        // A bug of ours must not take the bridge down; the client hears about it.
        const e = toEco3dError(err);
        status(c, 'error', `internal error: ${e.message}`);
      }
    });
    ws.on('close', () => clientGone(c));
    // ws emits 'close' after 'error'; the listener is here so an error never becomes an
    // uncaught exception.
    ws.on('error', () => undefined);
  });
  wss.on('error', () => undefined);

  async function doClose(): Promise<void> {
    closed = true;
    if (tickTimer !== undefined) clearTimeout(tickTimer);
    tickTimer = undefined;
    for (const t of latencyTimers) clearTimeout(t);
    latencyTimers.clear();
    stateSub.unsubscribe();
    imageSub?.unsubscribe();
    // Abandon waiting calls first; the stops for jogging clients below get fresh deadlines.
    for (const cancel of [...inflightCancels]) cancel();
    for (const c of [...clients]) {
      clientGone(c);
      c.ws.terminate();
    }
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    // The stops for clients that were jogging: bounded by the command timeout.
    await Promise.allSettled([...pendingStops]);
  }

  return {
    url,
    port,
    get closed() {
      return closed;
    },
    close: () => {
      closing ??= doClose();
      return closing;
    },
    dropAllClients: () => {
      for (const c of [...clients]) {
        clientGone(c);
        c.ws.terminate();
      }
    },
    setLatencyMs: (ms: number) => {
      if (!(ms >= 0 && Number.isFinite(ms))) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `latency must be a finite number ≥ 0, got ${ms}`);
      latencyMs = ms;
    },
    stats: () => ({ ...st, clientsConnected: clients.size }),
  };
}

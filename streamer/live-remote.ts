// The server's side of the live streams: a LiveHub and its live volume running in a child
// process of their own (live-worker.ts), so that libwebrtc's blocking calls and the volume's
// paste and encoding never run on the thread of the robot's control loop, and a crash inside
// libwebrtc (native code) ends the streams, not the robot's controller. A streamer process that
// dies is started again after a second; its viewers reconnect (the SDK does it by itself) and
// get a fresh snapshot of the live volume from then on.
//
// Server → streamer: B-mode frames (a copy of the pixels, transferred, not cloned), the tele-op status
// at the telemetry rate, the live volume's grid per acquisition, and each viewer's signaling.
// Streamer → server: each viewer's outgoing signaling, replies, and whether any viewer wants video
// (the server renders frames only when someone needs them).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Observable, Subscription } from 'rxjs';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import type { TrackedFrame, VolumeGrid } from '../protocols/imaging.ts';
import type { LiveImaging, LiveServerMessage, RTCIceCandidateLike } from '../protocols/live.ts';
import type { TeleopStatus } from '../protocols/teleop.ts';
import type { LiveFrame, LiveHubOptions, LiveHubStats, Signal, ViewerIdentity } from './live-hub.ts';
import type { LiveVolumeOptions } from './live-volume.ts';

export type ToLiveWorker =
  | { t: 'init'; imaging: Omit<LiveImaging, 'timecodeRows'>; options: Omit<LiveHubOptions, 'wrtc' | 'now' | 'log'>; volume: Omit<LiveVolumeOptions, 'now'>; status: TeleopStatus }
  | { t: 'frame'; frame: LiveFrame; video: boolean; paste: boolean }
  | { t: 'status'; status: TeleopStatus }
  | { t: 'volume-begin'; acquisitionUid: string; grid: VolumeGrid }
  | { t: 'volume-end' }
  | { t: 'join'; req: number; identity: ViewerIdentity }
  | { t: 'answer'; req: number; viewerId: string; sdp: string }
  | { t: 'ice'; req: number; viewerId: string; candidate: RTCIceCandidateLike | null }
  | { t: 'leave'; viewerId: string; reason: string }
  | { t: 'stats'; req: number }
  | { t: 'close'; req: number };

export type FromLiveWorker =
  | { t: 'ready' }
  | { t: 'signal'; join: number; msg: LiveServerMessage }
  | { t: 'reply'; req: number; ok: true; value?: unknown }
  | { t: 'reply'; req: number; ok: false; code: string; message: string }
  | { t: 'wants-video'; value: boolean }
  | { t: 'log'; level: 'info' | 'warn'; obj: object; msg: string };

/** One viewer, as the signaling socket sees it. */
export interface LiveViewerHandle {
  readonly id: string;
  answer(sdp: string): Promise<void>;
  addIceCandidate(c: RTCIceCandidateLike | null): Promise<void>;
  close(reason: string): void;
}

/** What the server needs of the live streams. */
export interface LiveService {
  join(identity: ViewerIdentity, signal: Signal): Promise<LiveViewerHandle>;
  stats(): Promise<LiveHubStats>;
  wantsVideo(): boolean;
}

export interface RemoteLiveHubOptions {
  readonly frames$: Observable<LiveFrame>;
  readonly status: () => TeleopStatus;
  readonly imaging: Omit<LiveImaging, 'timecodeRows'>;
  readonly hub?: Omit<LiveHubOptions, 'wrtc' | 'now' | 'log'>;
  readonly volume?: Omit<LiveVolumeOptions, 'now'>;
  /** Whether a frame also goes into the live volume (the acquisition is in its sweep). */
  readonly pasteFrame?: (f: TrackedFrame) => boolean;
  readonly log?: { info(o: object, msg: string): void; warn(o: object, msg: string): void; error(o: object, msg: string): void };
}

/** Starts a TypeScript module as a child process (tsx registered), speaking structured-clone IPC. */
export function forkTs(url: URL): ChildProcess {
  let tsx = 'tsx';
  try {
    tsx = import.meta.resolve('tsx');
  } catch {
    // keep the bare specifier
  }
  return fork(fileURLToPath(url), [], {
    execArgv: ['--import', tsx],
    // libwebrtc runs threads per peer connection, and glibc gives each thread that allocates an
    // arena of its own (up to 8 per core) that it rarely hands back: with viewers coming and
    // going, RSS climbed ~70 MB per 20 viewers. Two arenas keep it flat (measured in
    // test/live-churn.e2e.test.ts); the live-stream figures in the README were taken with it.
    env: { ...process.env, MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX || '2' },
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

const RESTART_DELAY_MS = 1000;
/** A request the streamer does not answer in this time fails (a busy streamer answers in < 1 s). */
const REQUEST_TIMEOUT_MS = 20_000;
/** How long a leaving viewer's `bye` from the streamer is still passed on to its client. */
const BYE_WAIT_MS = 10_000;

export class RemoteLiveHub implements LiveService {
  #child!: ChildProcess;
  #ready: Promise<void> = Promise.resolve();
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #signals = new Map<number, Signal>();
  readonly #sub: Subscription;
  readonly #statusTimer: NodeJS.Timeout;
  #nextReq = 1;
  #wantsVideo = false;
  #dead: Error | null = null;
  #closing: Promise<void> | null = null;

  private constructor(private readonly opts: RemoteLiveHubOptions) {
    this.#spawn();
    this.#sub = opts.frames$.subscribe((f) => {
      const paste = opts.pasteFrame?.(f) ?? false;
      if (this.#dead !== null || (!paste && !this.#wantsVideo)) return;
      // A copy goes to the worker (the recorder keeps the original); transferring it avoids a second copy.
      const pixels = f.pixels.slice();
      const frame: LiveFrame = { index: f.index, tMs: f.tMs, width: f.width, height: f.height, pixels, imageToReference: f.imageToReference, capturedAtMs: f.capturedAtMs };
      this.#post({ t: 'frame', frame, video: this.#wantsVideo, paste });
    });
    const hz = opts.hub?.telemetryHz ?? 30;
    this.#statusTimer = setInterval(() => this.#post({ t: 'status', status: opts.status() }), Math.max(5, Math.round(1000 / hz)));
  }

  /** Starts the streamer process and waits until it is ready. */
  static async start(opts: RemoteLiveHubOptions): Promise<RemoteLiveHub> {
    const hub = new RemoteLiveHub(opts);
    await hub.#ready;
    return hub;
  }

  #spawn(): void {
    const child = forkTs(new URL('./live-worker.ts', import.meta.url));
    this.#child = child;
    this.#dead = null;
    this.#ready = new Promise<void>((resolve, reject) => {
      const onMsg = (m: FromLiveWorker): void => {
        if (m.t !== 'ready') return;
        child.off('message', onMsg);
        resolve();
      };
      child.on('message', onMsg);
      child.once('exit', (code, signal) => reject(new Error(`the streamer process exited (${signal ?? code}) before it was ready`)));
    });
    child.on('message', (m: FromLiveWorker) => this.#onMessage(m));
    child.on('error', (err) => this.#die(err));
    child.on('exit', (code, signal) => {
      this.#die(new Error(`the streamer process exited (${signal ?? code})`));
      if (this.#closing === null) setTimeout(() => this.#restart(), RESTART_DELAY_MS).unref();
    });
    this.#post({ t: 'init', imaging: this.opts.imaging, options: this.opts.hub ?? {}, volume: this.opts.volume ?? {}, status: this.opts.status() });
  }

  #restart(): void {
    if (this.#closing !== null) return;
    this.opts.log?.warn({}, 'restarting the streamer process');
    this.#wantsVideo = false;
    this.#spawn();
    this.#ready.catch((err: unknown) => this.opts.log?.error({ err: (err as Error).message }, 'the streamer process did not start'));
  }

  wantsVideo(): boolean {
    return this.#wantsVideo;
  }

  /** A new live volume for an acquisition's sweep (the previous one ends). */
  beginVolume(acquisitionUid: string, grid: VolumeGrid): void {
    this.#post({ t: 'volume-begin', acquisitionUid, grid });
  }

  endVolume(): void {
    this.#post({ t: 'volume-end' });
  }

  async join(identity: ViewerIdentity, signal: Signal): Promise<LiveViewerHandle> {
    const req = this.#nextReq++;
    this.#signals.set(req, signal);
    let id: string;
    try {
      id = (await this.#request({ t: 'join', req, identity })) as string;
    } catch (err) {
      this.#signals.delete(req);
      throw err;
    }
    return {
      id,
      answer: async (sdp) => {
        await this.#request({ t: 'answer', req: this.#nextReq++, viewerId: id, sdp });
      },
      addIceCandidate: async (candidate) => {
        await this.#request({ t: 'ice', req: this.#nextReq++, viewerId: id, candidate });
      },
      close: (reason) => {
        this.#post({ t: 'leave', viewerId: id, reason });
        // The streamer's `bye` still goes to the client: it closes its peer on it, after ours (see
        // LiveClient). Forgotten anyway if the bye never comes.
        setTimeout(() => this.#signals.delete(req), BYE_WAIT_MS).unref();
      },
    };
  }

  async stats(): Promise<LiveHubStats> {
    return (await this.#request({ t: 'stats', req: this.#nextReq++ })) as LiveHubStats;
  }

  /** Closes every peer, then ends the worker. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#sub.unsubscribe();
      clearInterval(this.#statusTimer);
      if (this.#dead === null) {
        await Promise.race([this.#request({ t: 'close', req: this.#nextReq++ }), new Promise((r) => setTimeout(r, 3000))]).catch(() => undefined);
      }
      const child = this.#child;
      this.#dead ??= new Eco3dError('ECO3D_ERR_CLOSED', 'the live streams are closed');
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    })();
    return this.#closing;
  }

  #post(m: ToLiveWorker): void {
    if (this.#dead !== null || !this.#child.connected) return;
    // Backed-up IPC (the streamer is behind): drop a frame rather than queue it in memory.
    if (m.t === 'frame' && this.#child.channel !== undefined && (this.#child as unknown as { channel: { writableLength?: number } }).channel.writableLength! > 8 * 1024 * 1024) return;
    this.#child.send(m, (err) => {
      if (err !== null) this.opts.log?.warn({ err: err.message, message: m.t }, 'message to the streamer process failed');
    });
  }

  /** A request to the streamer; it fails with ECO3D_ERR_TIMEOUT when no reply comes in time. */
  #request(m: ToLiveWorker & { req: number }): Promise<unknown> {
    if (this.#dead !== null) return Promise.reject(new Eco3dError('ECO3D_ERR_CLOSED', `live streams unavailable: ${this.#dead.message}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(m.req);
        reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `the streamer process did not answer '${m.t}' within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      timer.unref();
      this.#pending.set(m.req, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#post(m);
    });
  }

  #onMessage(m: FromLiveWorker): void {
    switch (m.t) {
      case 'ready':
        return;
      case 'signal': {
        const signal = this.#signals.get(m.join);
        signal?.(m.msg);
        if (m.msg.type === 'bye') this.#signals.delete(m.join);
        return;
      }
      case 'reply': {
        const p = this.#pending.get(m.req);
        this.#pending.delete(m.req);
        if (p === undefined) return;
        if (m.ok) p.resolve(m.value);
        else p.reject(new Eco3dError(m.code as ErrorCode, m.message));
        return;
      }
      case 'wants-video':
        this.#wantsVideo = m.value;
        return;
      case 'log':
        this.opts.log?.[m.level](m.obj, m.msg);
        return;
    }
  }

  #die(err: Error): void {
    if (this.#dead !== null) return;
    this.#dead = err;
    this.opts.log?.error({ err: err.message }, 'the streamer process stopped; live video and volume are unavailable until it restarts (the robot is unaffected)');
    for (const p of this.#pending.values()) p.reject(new Eco3dError('ECO3D_ERR_CLOSED', `live streams unavailable: ${err.message}`));
    this.#pending.clear();
    for (const s of this.#signals.values()) s({ type: 'bye', reason: 'live streams unavailable' });
    this.#signals.clear();
  }
}

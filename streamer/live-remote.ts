// The main thread's side of the live streams: a LiveHub and its live volume running in a worker
// thread (live-worker.ts), so that libwebrtc's blocking calls and the volume's paste and
// encoding never run on the thread of the robot's control loop.
//
// Main → worker: B-mode frames (a copy of the pixels, transferred, not cloned), the tele-op status
// at the telemetry rate, the live volume's grid per acquisition, and each viewer's signaling.
// Worker → main: each viewer's outgoing signaling, replies, and whether any viewer wants video
// (the main thread renders frames only when someone needs them).
import { Worker } from 'node:worker_threads';
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

/** Starts a TypeScript worker: Node 20 ignores `--import tsx` in a Worker's execArgv, so it registers tsx itself. */
export function startTsWorker(url: URL): Worker {
  let tsxApi = 'tsx/esm/api';
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    // keep the bare specifier
  }
  return new Worker(`import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`, { eval: true });
}

export class RemoteLiveHub implements LiveService {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #signals = new Map<number, Signal>();
  readonly #sub: Subscription;
  readonly #statusTimer: NodeJS.Timeout;
  #nextReq = 1;
  #wantsVideo = false;
  #dead: Error | null = null;
  #closing: Promise<void> | null = null;

  private constructor(private readonly opts: RemoteLiveHubOptions) {
    this.#worker = startTsWorker(new URL('./live-worker.ts', import.meta.url));
    this.#worker.on('message', (m: FromLiveWorker) => this.#onMessage(m));
    this.#worker.on('error', (err) => this.#die(err));
    this.#worker.on('exit', (code) => this.#die(new Error(`live worker exited with code ${code}`)));
    this.#sub = opts.frames$.subscribe((f) => {
      const paste = opts.pasteFrame?.(f) ?? false;
      if (this.#dead !== null || (!paste && !this.#wantsVideo)) return;
      // A copy goes to the worker (the recorder keeps the original); transferring it avoids a second copy.
      const pixels = f.pixels.slice();
      const frame: LiveFrame = { index: f.index, tMs: f.tMs, width: f.width, height: f.height, pixels, imageToReference: f.imageToReference, capturedAtMs: f.capturedAtMs };
      this.#post({ t: 'frame', frame, video: this.#wantsVideo, paste }, [pixels.buffer]);
    });
    const hz = opts.hub?.telemetryHz ?? 30;
    this.#statusTimer = setInterval(() => this.#post({ t: 'status', status: opts.status() }), Math.max(5, Math.round(1000 / hz)));
  }

  /** Starts the worker and waits until it is ready. */
  static async start(opts: RemoteLiveHubOptions): Promise<RemoteLiveHub> {
    const hub = new RemoteLiveHub(opts);
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: FromLiveWorker): void => {
        if (m.t !== 'ready') return;
        hub.#worker.off('message', onMsg);
        hub.#worker.off('error', reject);
        resolve();
      };
      hub.#worker.on('message', onMsg);
      hub.#worker.once('error', reject);
      hub.#post({ t: 'init', imaging: opts.imaging, options: opts.hub ?? {}, volume: opts.volume ?? {}, status: opts.status() });
    });
    return hub;
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
        this.#signals.delete(req);
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
      this.#dead ??= new Eco3dError('ECO3D_ERR_CLOSED', 'the live streams are closed');
      await this.#worker.terminate();
    })();
    return this.#closing;
  }

  #post(m: ToLiveWorker, transfer: ArrayBuffer[] = []): void {
    if (this.#dead === null) this.#worker.postMessage(m, transfer);
  }

  #request(m: ToLiveWorker & { req: number }): Promise<unknown> {
    if (this.#dead !== null) return Promise.reject(new Eco3dError('ECO3D_ERR_CLOSED', `live streams unavailable: ${this.#dead.message}`));
    return new Promise((resolve, reject) => {
      this.#pending.set(m.req, { resolve, reject });
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
    this.opts.log?.error({ err: err.message }, 'the live-stream worker stopped; live video and volume are unavailable (the robot is unaffected)');
    for (const p of this.#pending.values()) p.reject(new Eco3dError('ECO3D_ERR_CLOSED', `live streams unavailable: ${err.message}`));
    this.#pending.clear();
    for (const s of this.#signals.values()) s({ type: 'bye', reason: 'live streams unavailable' });
    this.#signals.clear();
  }
}

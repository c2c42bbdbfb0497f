// Live fan-out over WebRTC: one RTCPeerConnection per viewer (@roamhq/wrtc), carrying
//   - the B-mode video as a real video track (RTCVideoSource, I420), which the viewer's own
//     decoder plays and WebRTC's congestion control paces;
//   - telemetry on an unordered, no-retransmit data channel at `telemetryHz`;
//   - the growing volume on a reliable data channel (protocols/VOLUME-STREAM.md): a joining
//     viewer first gets the bricks that hold data (a snapshot), then each change;
//   - the console ↔ bedside call: audio and video received from one side are relayed to the
//     other side's peers.
//
// Back-pressure, per viewer, never shared: a viewer that falls behind never slows the others,
// the reconstruction or the robot.
//   - Video: each viewer has its own source; frames go out at the viewer's tier rate (operator
//     and bedside full rate; others lower, and at half resolution past a few viewers), and the
//     encoder's own frame dropping handles a slow network. Frames not sent are counted.
//   - Telemetry: a frame is skipped (and counted) while the channel holds unsent data.
//   - Volume: per viewer a set of dirty bricks. A brick updated again before it was sent is
//     sent once, with its newest content (counted as coalesced): old content is what gets lost,
//     never the newest, and never a part of the volume. Bricks are sent while the channel's
//     buffer is under a high-water mark; each encoded brick is shared by all viewers.
import { randomUUID } from 'node:crypto';
import type { Observable, Subscription } from 'rxjs';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import type { TrackedFrame } from '../protocols/imaging.ts';
import {
  LIVE_CHANNELS,
  looksLikeSdp,
  parseTelemetryPing,
  type LiveGrants,
  type LiveImaging,
  type LiveServerMessage,
  type LiveWant,
  type RTCIceCandidateLike,
  type TelemetryMessage,
  type ViewerCounters,
  type ViewerTier,
} from '../protocols/live.ts';
import type { TeleopStatus } from '../protocols/teleop.ts';
import { stampTimecode, TIMECODE_ROWS } from '../protocols/video-timecode.ts';
import { encodeBrick, encodeCommit, encodeGrid } from '../protocols/volume-stream.ts';
import type { LiveGridInfo, LiveVolumeSource, LiveVolumeUpdate } from './live-volume.ts';
import { wrtc, type AudioSink, type AudioSource, type DataChannel, type IceServer, type MediaTrack, type PeerConnection, type VideoSink, type VideoSource, type Wrtc } from './wrtc.ts';

/** A B-mode frame as captured, with its wall-clock capture time (for frame age). */
export interface LiveFrame extends TrackedFrame {
  readonly capturedAtMs: number;
}

export interface LiveHubSources {
  /** Hot. */
  readonly frames$: Observable<LiveFrame>;
  readonly status: () => TeleopStatus;
  readonly volume: LiveVolumeSource;
  readonly imaging: Omit<LiveImaging, 'timecodeRows'>;
}

export interface LiveHubOptions {
  readonly iceServers?: readonly IceServer[];
  readonly telemetryHz?: number;
  /** A viewer that has not answered the offer by then is closed. */
  readonly answerTimeoutMs?: number;
  readonly maxViewers?: number;
  readonly wrtc?: Wrtc;
  readonly now?: () => number;
  readonly log?: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
}

export interface ViewerIdentity {
  readonly actor: string;
  readonly role: string;
  readonly tier: ViewerTier;
  readonly grants: LiveGrants;
  readonly want: LiveWant;
}

/** What the server pushes to a viewer's signaling socket. */
export type Signal = (msg: LiveServerMessage) => void;

/** Frame rate and scale a viewer gets, by tier and by how many viewers there are. */
export function videoPolicy(tier: ViewerTier, viewers: number): { fps: number; scale: 1 | 0.5 } {
  switch (tier) {
    case 'operator':
      return { fps: 30, scale: 1 };
    case 'bedside':
      return viewers <= 5 ? { fps: 30, scale: 1 } : { fps: 15, scale: 1 };
    case 'observer':
    case 'plugin':
      if (viewers <= 5) return { fps: 15, scale: 1 };
      if (viewers <= 10) return { fps: 10, scale: 0.5 };
      return { fps: 5, scale: 0.5 };
  }
}

/**
 * How often a viewer gets telemetry and volume commits. The operator and the bedside get every
 * telemetry tick and every reconstruction delta; other viewers get them less often as the
 * audience grows (telemetry every k-th tick; changed bricks coalesced into fewer commits). Every
 * data-channel send is a blocking hop to libwebrtc's signaling thread, shared by all peers: at 20
 * viewers, full-rate data for everyone queued the operator's stream behind the crowd's.
 */
export function dataPolicy(tier: ViewerTier, viewers: number): { telemetryEveryTicks: number; volumeCommitIntervalMs: number } {
  if (tier === 'operator' || tier === 'bedside') return { telemetryEveryTicks: 1, volumeCommitIntervalMs: 0 };
  if (viewers <= 5) return { telemetryEveryTicks: 1, volumeCommitIntervalMs: 200 };
  if (viewers <= 10) return { telemetryEveryTicks: 2, volumeCommitIntervalMs: 500 };
  return { telemetryEveryTicks: 3, volumeCommitIntervalMs: 1000 };
}

/** The simulated scanner's frame rate. */
const SOURCE_FPS = 30;
const VOLUME_HIGH_WATER_BYTES = 512 * 1024;
const VOLUME_LOW_WATER_BYTES = 128 * 1024;
const TELEMETRY_MAX_BUFFERED_BYTES = 64 * 1024;
const TELEMETRY_CHECK_EVERY = 10;

export interface LiveHubStats {
  readonly viewers: number;
  /** Peer connections created and not yet closed (a leak shows here). */
  readonly peersOpen: number;
  readonly peersCreated: number;
  readonly perViewer: readonly ({ readonly id: string; readonly actor: string; readonly tier: ViewerTier; readonly connectionState: string } & ViewerCounters)[];
}

export class LiveHub {
  readonly #viewers = new Map<string, LiveViewer>();
  readonly #rtc: Wrtc;
  readonly #now: () => number;
  readonly #framesSub: Subscription;
  readonly #gridSub: Subscription;
  readonly #updateSub: Subscription;
  readonly #telemetryTimer: NodeJS.Timeout;
  /** Encoded bricks of the current grid, shared by all viewers: index → [version, bytes]. */
  readonly #brickCache = new Map<number, { version: number; bytes: Uint8Array }>();
  readonly #brickVersion = new Map<number, number>();
  #lastFrame: LiveFrame | null = null;
  #lastUpdate: LiveVolumeUpdate | null = null;
  /** Who holds the control lock, as of the last telemetry tick. */
  #holder: string | null = null;
  #peersOpen = 0;
  #ticks = 0;
  #peersCreated = 0;
  #closed = false;

  constructor(
    private readonly sources: LiveHubSources,
    private readonly opts: LiveHubOptions = {},
  ) {
    this.#rtc = opts.wrtc ?? wrtc();
    this.#now = opts.now ?? Date.now;
    this.#framesSub = sources.frames$.subscribe((f) => this.#onFrame(f));
    this.#gridSub = sources.volume.grids$.subscribe((g) => this.#onGrid(g));
    this.#updateSub = sources.volume.updates$.subscribe((u) => this.#onUpdate(u));
    this.#telemetryTimer = setInterval(() => this.#tick(), Math.max(5, Math.round(1000 / (opts.telemetryHz ?? 30))));
  }

  get viewerCount(): number {
    return this.#viewers.size;
  }

  /** True when some viewer wants video: the server renders B-mode frames only then (or while scanning). */
  wantsVideo(): boolean {
    for (const v of this.#viewers.values()) if (v.sendsVideo) return true;
    return false;
  }

  stats(): LiveHubStats {
    return {
      viewers: this.#viewers.size,
      peersOpen: this.#peersOpen,
      peersCreated: this.#peersCreated,
      perViewer: [...this.#viewers.values()].map((v) => ({ id: v.id, actor: v.identity.actor, tier: v.identity.tier, connectionState: v.connectionState, ...v.counters() })),
    };
  }

  /**
   * Creates the viewer's peer, sends `welcome` and the `offer` through `signal`. Throws
   * ECO3D_ERR_CONFLICT when the hub is full or closed.
   */
  async join(identity: ViewerIdentity, signal: Signal): Promise<LiveViewer> {
    if (this.#closed) throw new Eco3dError('ECO3D_ERR_CLOSED', 'the live stream is shutting down');
    const max = this.opts.maxViewers ?? 32;
    if (this.#viewers.size >= max) throw new Eco3dError('ECO3D_ERR_CONFLICT', `the live stream has its maximum of ${max} viewers`);
    const pc = new this.#rtc.RTCPeerConnection({ iceServers: [...(this.opts.iceServers ?? [])] });
    this.#peersCreated++;
    this.#peersOpen++;
    const viewer = new LiveViewer(randomUUID(), identity, pc, signal, this, (reason) => {
      this.#peersOpen--;
      this.#viewers.delete(viewer.id);
      this.opts.log?.info({ viewerId: viewer.id, actor: identity.actor, reason, viewers: this.#viewers.size, ...viewer.counters() }, 'live viewer left');
    });
    this.#viewers.set(viewer.id, viewer);
    try {
      signal({
        type: 'welcome',
        viewerId: viewer.id,
        actor: identity.actor,
        role: identity.role,
        tier: identity.tier,
        grants: identity.grants,
        imaging: { ...this.sources.imaging, timecodeRows: TIMECODE_ROWS },
        iceServers: this.opts.iceServers ?? [],
      });
      // A browser answers within a second; a streamer on a saturated machine can take several
      // seconds to even apply the answer.
      await viewer.offer(this.opts.answerTimeoutMs ?? 30_000);
    } catch (err) {
      viewer.close('offer failed');
      throw toEco3dError(err);
    }
    this.opts.log?.info({ viewerId: viewer.id, actor: identity.actor, tier: identity.tier, viewers: this.#viewers.size }, 'live viewer joined');
    return viewer;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#telemetryTimer);
    this.#framesSub.unsubscribe();
    this.#gridSub.unsubscribe();
    this.#updateSub.unsubscribe();
    for (const v of [...this.#viewers.values()]) v.close('server shutting down');
  }

  // --- internals used by LiveViewer -----------------------------------------------------------

  /** @internal */ get now(): number {
    return this.#now();
  }

  /** @internal */ get rtc(): Wrtc {
    return this.#rtc;
  }

  /** @internal The viewers of the other side of the call. */
  callPeersOf(v: LiveViewer): LiveViewer[] {
    const side = callSide(v.identity.tier);
    return [...this.#viewers.values()].filter((o) => o !== v && o.inCall && callSide(o.identity.tier) !== side);
  }

  /** @internal Of the viewers of one side, the latest that joined speaks (one voice per side). */
  isCallSpeaker(v: LiveViewer): boolean {
    const side = callSide(v.identity.tier);
    let latest: LiveViewer | null = null;
    for (const o of this.#viewers.values()) if (o.inCall && o.hasCallInput && callSide(o.identity.tier) === side) latest = o;
    return latest === v;
  }

  /** @internal The brick's newest encoding (shared across viewers). */
  encodedBrick(index: number): Uint8Array {
    const version = this.#brickVersion.get(index) ?? 0;
    const cached = this.#brickCache.get(index);
    if (cached !== undefined && cached.version === version) return cached.bytes;
    const grid = this.sources.volume.current()!;
    const b = this.sources.volume.brickVoxels(index);
    const bytes = encodeBrick({ gridId: grid.gridId, index, start: b.start, dims: b.dims, voxels: b.data });
    this.#brickCache.set(index, { version, bytes });
    return bytes;
  }

  /** @internal */ currentGrid(): LiveGridInfo | null {
    return this.sources.volume.current();
  }

  /** @internal */ touchedBricks(): readonly number[] {
    return this.sources.volume.touchedBricks();
  }

  /** @internal */ lastUpdate(): LiveVolumeUpdate | null {
    return this.#lastUpdate;
  }

  /**
   * The one viewer served as the operator: the control holder's first viewer, or, while nobody
   * holds control, the first operator-tier viewer. Other operator-tier viewers (a second tab, a
   * colleague watching) are observers.
   */
  #operator(): LiveViewer | null {
    let first: LiveViewer | null = null;
    for (const v of this.#viewers.values()) {
      if (v.identity.tier !== 'operator') continue;
      if (this.#holder !== null && v.identity.actor === this.#holder) return v;
      first ??= v;
    }
    return this.#holder === null ? first : null;
  }

  #effectiveTier(v: LiveViewer, operator: LiveViewer | null): ViewerTier {
    return v.identity.tier === 'operator' && v !== operator ? 'observer' : v.identity.tier;
  }

  #onFrame(f: LiveFrame): void {
    this.#lastFrame = f;
    const n = this.#viewers.size;
    if (n === 0) return;
    const operator = this.#operator();
    // One I420 buffer per scale per frame, shared by every viewer at that scale.
    const i420: Partial<Record<1 | 0.5, { width: number; height: number; data: Uint8Array }>> = {};
    for (const v of this.#viewers.values()) {
      if (!v.sendsVideo) continue;
      const policy = videoPolicy(this.#effectiveTier(v, operator), n);
      if (!v.videoDue(f.capturedAtMs, policy.fps)) continue;
      const frame = (i420[policy.scale] ??= toI420(f, policy.scale));
      this.#guard(v, () => v.sendVideo(frame, policy, f.capturedAtMs));
    }
  }

  /** One viewer's failure closes that viewer, never the stream of the others (nor the server). */
  #guard(v: LiveViewer, work: () => void): void {
    try {
      work();
    } catch (err) {
      this.opts.log?.warn({ viewerId: v.id, err: (err as Error).message }, 'live viewer failed; closing it');
      v.close('internal error');
    }
  }

  #onGrid(g: LiveGridInfo): void {
    this.#brickCache.clear();
    this.#brickVersion.clear();
    this.#lastUpdate = null;
    for (const v of this.#viewers.values()) this.#guard(v, () => v.volumeGrid(g));
  }

  #onUpdate(u: LiveVolumeUpdate): void {
    this.#lastUpdate = u;
    for (const b of u.bricks) this.#brickVersion.set(b, u.seq + 1);
    for (const v of this.#viewers.values()) this.#guard(v, () => v.volumeUpdate(u));
  }

  #tick(): void {
    if (this.#viewers.size === 0) return;
    const status = this.sources.status();
    this.#holder = status.control.holder;
    const f = this.#lastFrame;
    const common = JSON.stringify({
      type: 'telemetry',
      v: 1,
      sentAtMs: this.#now(),
      status,
      frame: f === null ? null : { index: f.index, capturedAtMs: f.capturedAtMs, imageToReference: Array.from(f.imageToReference) },
    });
    const n = this.#viewers.size;
    const operator = this.#operator();
    const tick = this.#ticks++;
    for (const v of this.#viewers.values()) {
      this.#guard(v, () => {
        const policy = dataPolicy(this.#effectiveTier(v, operator), n);
        v.volumeCommitIntervalMs = policy.volumeCommitIntervalMs;
        if (tick % policy.telemetryEveryTicks === 0) v.sendTelemetry(common);
        v.pumpVolume();
      });
    }
  }
}

/**
 * Sends on a data channel unless it is no longer open. The channel's state changes on
 * libwebrtc's thread, so `readyState` can turn between a check and the send, and wrtc's send
 * then throws: a viewer going away must never take the server down.
 */
function trySend(ch: DataChannel, data: string | Uint8Array): boolean {
  return ch.readyState === 'open' && sendOpen(ch, data);
}

/** Sends on a channel found open earlier in the same pump; false when it has closed since. */
function sendOpen(ch: DataChannel, data: string | Uint8Array): boolean {
  try {
    ch.send(data);
    return true;
  } catch {
    return false;
  }
}

const callSide = (tier: ViewerTier): 'console' | 'bedside' => (tier === 'bedside' ? 'bedside' : 'console');

/** Gray pixels → I420 (Y = the pixels, chroma neutral), at full or half size, with the timecode. */
function toI420(f: LiveFrame, scale: 1 | 0.5): { width: number; height: number; data: Uint8Array } {
  const w = scale === 1 ? f.width : f.width >> 1;
  const h = scale === 1 ? f.height : f.height >> 1;
  // I420 needs even sizes: crop a last odd row/column.
  const width = w & ~1;
  const height = h & ~1;
  const data = new Uint8Array(width * height * 1.5);
  if (scale === 1) {
    for (let y = 0; y < height; y++) data.set(f.pixels.subarray(y * f.width, y * f.width + width), y * width);
  } else {
    const src = f.pixels;
    const sw = f.width;
    for (let y = 0; y < height; y++) {
      const r0 = 2 * y * sw;
      const r1 = r0 + sw;
      for (let x = 0; x < width; x++) {
        const i = 2 * x;
        data[y * width + x] = (src[r0 + i]! + src[r0 + i + 1]! + src[r1 + i]! + src[r1 + i + 1]! + 2) >> 2;
      }
    }
  }
  data.fill(128, width * height);
  stampTimecode(data, width, height, f.capturedAtMs);
  return { width, height, data };
}

export class LiveViewer {
  readonly #video: VideoSource | null;
  readonly #telemetry: DataChannel | null;
  readonly #volume: DataChannel | null;
  #callAudioOut: AudioSource | null = null;
  #callVideoOut: VideoSource | null = null;
  readonly #mids: { video?: string; callAudio?: string; callVideo?: string } = {};
  readonly #sinks: (VideoSink | AudioSink)[] = [];
  #answerTimer: NodeJS.Timeout | undefined;
  #answered = false;
  #closed = false;
  #lastVideoAtMs = Number.NEGATIVE_INFINITY;
  #telemetrySeq = 0;
  // counters
  #videoSent = 0;
  #videoDropped = 0;
  #videoFps = 0;
  #videoScale = 1;
  #telemetryDropped = 0;
  #bricksSent = 0;
  #bricksCoalesced = 0;
  // volume state
  #gridSentId: number | null = null;
  readonly #dirty = new Set<number>();
  #pendingCommit: LiveVolumeUpdate | null = null;
  #inSnapshot = false;
  /** Set by the hub from the viewer's tier and the audience (dataPolicy). */
  volumeCommitIntervalMs = 0;
  #lastCommitAtMs = Number.NEGATIVE_INFINITY;
  /** Bricks of the next commit are being sent (a batch is never held back half-sent). */
  #batchOpen = false;
  // Whether each channel is open, from its events: reading `readyState` is a blocking hop to
  // libwebrtc's thread, paid per message per viewer. A send on a channel closing meanwhile throws
  // and is caught (sendOpen).
  #telemetryOpen = false;
  #volumeOpen = false;
  #telemetryBackedUp = false;
  #hasCallInput = false;

  constructor(
    readonly id: string,
    readonly identity: ViewerIdentity,
    private readonly pc: PeerConnection,
    private readonly signal: Signal,
    private readonly hub: LiveHub,
    private readonly onClosed: (reason: string) => void,
  ) {
    const { grants, want } = identity;
    const rtc = hub.rtc;
    if (grants.video && want.video) {
      this.#video = new rtc.nonstandard.RTCVideoSource();
      pc.addTransceiver(this.#video.createTrack(), { direction: 'sendonly' });
    } else this.#video = null;
    if (this.inCall) {
      this.#callAudioOut = new rtc.nonstandard.RTCAudioSource();
      this.#callVideoOut = new rtc.nonstandard.RTCVideoSource();
      pc.addTransceiver(this.#callAudioOut.createTrack(), { direction: 'sendrecv' });
      pc.addTransceiver(this.#callVideoOut.createTrack(), { direction: 'sendrecv' });
    }
    this.#telemetry = grants.telemetry && want.telemetry ? pc.createDataChannel(LIVE_CHANNELS.telemetry, { ordered: false, maxRetransmits: 0 }) : null;
    this.#volume = grants.volume && want.volume ? pc.createDataChannel(LIVE_CHANNELS.volume, { ordered: true }) : null;
    if (this.#telemetry !== null) {
      const ch = this.#telemetry;
      ch.onopen = () => {
        this.#telemetryOpen = true;
      };
      ch.onclose = () => {
        this.#telemetryOpen = false;
      };
      ch.onmessage = (e) => {
        const ping = parseTelemetryPing(e.data);
        if (ping !== null) trySend(ch, JSON.stringify({ type: 'pong', clientMs: ping.clientMs, serverMs: hub.now } satisfies TelemetryMessage));
      };
    }
    if (this.#volume !== null) {
      const ch = this.#volume;
      ch.bufferedAmountLowThreshold = VOLUME_LOW_WATER_BYTES;
      ch.onbufferedamountlow = () => this.pumpVolume();
      ch.onclose = () => {
        this.#volumeOpen = false;
      };
      ch.onopen = () => {
        this.#volumeOpen = true;
        const g = hub.currentGrid();
        if (g !== null) this.volumeGrid(g, true);
      };
    }
    pc.onicecandidate = (e) => {
      if (this.#closed) return;
      const c = e.candidate;
      signal({ type: 'ice', candidate: c === null ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null } });
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'failed' || s === 'closed') this.close(`peer connection ${s}`);
    };
    pc.ontrack = (e) => this.#onTrack(e.track, e.transceiver.mid);
  }

  get inCall(): boolean {
    const { tier, grants, want } = this.identity;
    return grants.call && want.call && (tier === 'operator' || tier === 'bedside');
  }

  get hasCallInput(): boolean {
    return this.#hasCallInput;
  }

  get sendsVideo(): boolean {
    return this.#video !== null && !this.#closed;
  }

  get connectionState(): string {
    return this.#closed ? 'closed' : this.pc.connectionState;
  }

  counters(): ViewerCounters {
    return {
      videoFramesSent: this.#videoSent,
      videoFramesDropped: this.#videoDropped,
      videoFps: this.#videoFps,
      videoScale: this.#videoScale,
      telemetryDropped: this.#telemetryDropped,
      volumeBricksSent: this.#bricksSent,
      volumeBricksCoalesced: this.#bricksCoalesced,
    };
  }

  /** @internal Creates and sends the offer, and arms the answer timeout. */
  async offer(answerTimeoutMs: number): Promise<void> {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    // The mids are known once the local description is set (order: video, call audio, call video).
    const [first, second, third] = this.pc.getTransceivers();
    const call = this.#video === null ? [first, second] : [second, third];
    if (this.#video !== null) this.#mids.video = first?.mid ?? undefined;
    if (this.inCall) {
      this.#mids.callAudio = call[0]?.mid ?? undefined;
      this.#mids.callVideo = call[1]?.mid ?? undefined;
    }
    if (this.#closed) return;
    this.signal({ type: 'offer', sdp: this.pc.localDescription?.sdp ?? offer.sdp, mids: { ...this.#mids } });
    this.#answerTimer = setTimeout(() => {
      if (this.#answered) return;
      this.signal({ type: 'error', code: 'ECO3D_ERR_TIMEOUT', message: `no answer to the offer within ${answerTimeoutMs} ms` });
      this.close('no answer');
    }, answerTimeoutMs);
  }

  /** Throws ECO3D_ERR_BAD_REQUEST for an answer that is not SDP or that the peer rejects (the viewer is then closed). */
  async answer(sdp: string): Promise<void> {
    if (this.#closed) throw new Eco3dError('ECO3D_ERR_CLOSED', 'this viewer is closed');
    if (this.#answered) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'the offer was already answered');
    if (!looksLikeSdp(sdp)) {
      this.close('bad answer');
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the answer is not an SDP session description (it must start with "v=0" and have o= and m= lines)');
    }
    try {
      await this.pc.setRemoteDescription({ type: 'answer', sdp });
    } catch (err) {
      this.close('answer rejected');
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `the answer was rejected: ${(err as Error).message}`);
    }
    this.#answered = true;
    clearTimeout(this.#answerTimer);
  }

  async addIceCandidate(c: RTCIceCandidateLike | null): Promise<void> {
    if (this.#closed || c === null || c.candidate === '') return;
    try {
      await this.pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null });
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `ICE candidate rejected: ${(err as Error).message}`);
    }
  }

  /** Closes the peer and everything it holds. Idempotent. */
  close(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#answerTimer);
    for (const s of this.#sinks) s.stop();
    for (const t of this.pc.getTransceivers()) t.sender.track?.stop();
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
    this.onClosed(reason);
    try {
      this.signal({ type: 'bye', reason });
    } catch {
      // the socket is gone: nothing to tell
    }
  }

  // --- video ----------------------------------------------------------------------------------

  /** @internal Whether a frame captured at `atMs` is due at `fps`; counts the ones that are not. */
  videoDue(atMs: number, fps: number): boolean {
    // A full-rate tier takes every frame (the source is 30 fps, with render jitter); lower tiers
    // take one per interval, with 10 % slack for that jitter.
    if (fps >= SOURCE_FPS || atMs - this.#lastVideoAtMs >= (1000 / fps) * 0.9) return true;
    this.#videoDropped++;
    return false;
  }

  /** @internal */
  sendVideo(frame: { width: number; height: number; data: Uint8Array }, policy: { fps: number; scale: 1 | 0.5 }, capturedAtMs: number): void {
    if (this.#video === null || this.#closed) return;
    // On the capture clock, like videoDue: the scanner's clock need not be this process's.
    this.#lastVideoAtMs = capturedAtMs;
    this.#videoFps = policy.fps;
    this.#videoScale = policy.scale;
    this.#video.onFrame(frame);
    this.#videoSent++;
  }

  // --- telemetry ------------------------------------------------------------------------------

  /** @internal `common` is the JSON object shared by all viewers; this adds the viewer's own fields. */
  sendTelemetry(common: string): void {
    const ch = this.#telemetry;
    if (ch === null || !this.#telemetryOpen || this.#closed) return;
    // The buffered amount is read every few messages, not each (a blocking hop): a backed-up
    // channel is still found within a third of a second, a few kB over the limit.
    if (this.#telemetryBackedUp || this.#telemetrySeq % TELEMETRY_CHECK_EVERY === 0) this.#telemetryBackedUp = ch.bufferedAmount > TELEMETRY_MAX_BUFFERED_BYTES;
    if (this.#telemetryBackedUp) {
      this.#telemetryDropped++;
      return;
    }
    if (!sendOpen(ch, `{"seq":${this.#telemetrySeq},"viewer":${JSON.stringify(this.counters())},${common.slice(1)}`)) this.#telemetryDropped++;
    this.#telemetrySeq++;
  }

  // --- volume ---------------------------------------------------------------------------------

  /** @internal A new grid: send it, then everything that holds data (the snapshot). */
  volumeGrid(g: LiveGridInfo, joining = false): void {
    const ch = this.#volume;
    if (ch === null || ch.readyState !== 'open') return;
    const sent = trySend(
      ch,
      encodeGrid({
        gridId: g.gridId,
        dims: g.grid.dims,
        spacingMm: [g.grid.spacingMm.x, g.grid.spacingMm.y, g.grid.spacingMm.z],
        originMm: [g.grid.originMm.x, g.grid.originMm.y, g.grid.originMm.z],
        brickSize: g.brickSize,
        acquisitionUid: g.acquisitionUid,
      }),
    );
    if (!sent) return;
    this.#gridSentId = g.gridId;
    this.#dirty.clear();
    this.#pendingCommit = null;
    this.#batchOpen = false;
    if (joining) {
      for (const b of this.hub.touchedBricks()) this.#dirty.add(b);
      this.#inSnapshot = true;
      this.#pendingCommit = this.hub.lastUpdate();
    }
    this.pumpVolume();
  }

  /** @internal */
  volumeUpdate(u: LiveVolumeUpdate): void {
    if (this.#volume === null || this.#gridSentId !== u.gridId) return;
    for (const b of u.bricks) {
      if (this.#dirty.has(b)) this.#bricksCoalesced++;
      else this.#dirty.add(b);
    }
    this.#pendingCommit = u;
    this.pumpVolume();
  }

  /**
   * @internal Sends dirty bricks while the channel has room, then the commit. A new batch starts
   * only `volumeCommitIntervalMs` after the last commit (a joining viewer's snapshot at once);
   * meanwhile changed bricks coalesce in the dirty set.
   */
  pumpVolume(): void {
    const ch = this.#volume;
    if (ch === null || this.#gridSentId === null) return;
    const grid = this.hub.currentGrid();
    if (grid === null || grid.gridId !== this.#gridSentId) return;
    if (this.#pendingCommit === null && !this.#inSnapshot) return;
    if (!this.#batchOpen && !this.#inSnapshot && this.hub.now - this.#lastCommitAtMs < this.volumeCommitIntervalMs) return;
    // Every property read and send is a blocking hop to libwebrtc's thread: read the buffered
    // amount once per pump, then count what this pump adds.
    if (!this.#volumeOpen || this.#closed) return;
    let roomBytes = VOLUME_HIGH_WATER_BYTES - ch.bufferedAmount;
    this.#batchOpen = true;
    for (const b of this.#dirty) {
      if (roomBytes <= 0) return;
      const data = this.hub.encodedBrick(b);
      if (!sendOpen(ch, data)) return; // closing: the brick stays dirty
      roomBytes -= data.byteLength;
      this.#dirty.delete(b);
      this.#bricksSent++;
    }
    const u = this.#pendingCommit;
    const committed = sendOpen(
      ch,
      encodeCommit({
        gridId: grid.gridId,
        seq: u?.seq ?? 0,
        framesPasted: u?.framesPasted ?? 0,
        bricks: u?.bricks.length ?? 0,
        snapshotComplete: this.#inSnapshot,
        cutAtMs: u?.cutAtMs ?? this.hub.now,
      }),
    );
    if (!committed) return;
    this.#pendingCommit = null;
    this.#inSnapshot = false;
    this.#batchOpen = false;
    this.#lastCommitAtMs = this.hub.now;
  }

  // --- call -----------------------------------------------------------------------------------

  /** Call media into this viewer's outgoing sources; a closing viewer just misses it. */
  #relay(push: () => void): void {
    if (this.#closed) return;
    try {
      push();
    } catch {
      // closing between the check and the push: nothing to relay to
    }
  }

  #onTrack(track: MediaTrack, mid: string | null): void {
    if (!this.inCall || this.#closed) return;
    const rtc = this.hub.rtc;
    if (mid === this.#mids.callAudio && track.kind === 'audio') {
      const sink = new rtc.nonstandard.RTCAudioSink(track);
      this.#sinks.push(sink);
      this.#hasCallInput = true;
      sink.ondata = (d) => {
        if (!this.hub.isCallSpeaker(this)) return;
        for (const o of this.hub.callPeersOf(this)) o.#relay(() => o.#callAudioOut?.onData({ samples: d.samples, sampleRate: d.sampleRate, bitsPerSample: d.bitsPerSample ?? 16, channelCount: d.channelCount ?? 1, numberOfFrames: d.numberOfFrames ?? d.samples.length / (d.channelCount ?? 1) }));
      };
    } else if (mid === this.#mids.callVideo && track.kind === 'video') {
      const sink = new rtc.nonstandard.RTCVideoSink(track);
      this.#sinks.push(sink);
      this.#hasCallInput = true;
      sink.onframe = ({ frame }) => {
        if (!this.hub.isCallSpeaker(this)) return;
        for (const o of this.hub.callPeersOf(this)) o.#relay(() => o.#callVideoOut?.onFrame(frame));
      };
    }
  }
}

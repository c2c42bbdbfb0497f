// The live client of the Eco3D plugin SDK: one WebRTC connection to an Eco3D server, giving the
// B-mode video, telemetry, the growing volume and (console/bedside) the call.
//
// Browser-safe, and usable from Node too: pass `RTCPeerConnection`, `MediaStream` and
// `createWebSocket` (e.g. from @roamhq/wrtc and ws). The types below are structural for that
// reason: the DOM's own objects satisfy them.
//
//   const live = await LiveClient.connect({ token, want: { video: true, telemetry: true, volume: false } });
//   video.srcObject = live.videoStream;
//   live.on('telemetry', (t) => draw(t.frame?.imageToReference));
//
// After a network drop it reconnects by itself (unless `reconnect: false`), and the server
// sends a fresh volume snapshot.
import { LIVE_CHANNELS, type LiveServerMessage, type LiveWant, type TelemetryMessage } from '../../protocols/live.ts';
import { readTimecode, unwrapTimecode } from '../../protocols/video-timecode.ts';
import { decodeVolumeMessage, VolumeAssembler, type CommitMessage, type GridMessage } from '../../protocols/volume-stream.ts';

export type WelcomeMessage = Extract<LiveServerMessage, { type: 'welcome' }>;
export type OfferMessage = Extract<LiveServerMessage, { type: 'offer' }>;
export type Telemetry = Extract<TelemetryMessage, { type: 'telemetry' }>;
export type LiveConnectionState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

// --- structural stand-ins for the DOM's WebRTC and WebSocket objects ---------------------------
export interface TrackLike {
  readonly kind: string;
}
export interface MediaStreamLike {
  addTrack(t: TrackLike): void;
  getTracks(): TrackLike[];
}
interface TransceiverLike {
  readonly mid: string | null;
  direction: string;
  readonly sender: { replaceTrack(t: TrackLike | null): Promise<void> };
}
interface DataChannelLike {
  readonly label: string;
  readonly readyState: string;
  binaryType: string;
  onmessage: ((e: { data: unknown }) => void) | null;
  onopen: (() => void) | null;
  send(data: string): void;
}
interface PeerLike {
  readonly connectionState: string;
  onicecandidate: ((e: { candidate: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null } | null }) => void) | null;
  ontrack: ((e: { track: TrackLike; transceiver: TransceiverLike }) => void) | null;
  ondatachannel: ((e: { channel: DataChannelLike }) => void) | null;
  onconnectionstatechange: (() => void) | null;
  getTransceivers(): TransceiverLike[];
  setRemoteDescription(d: { type: 'offer'; sdp: string }): Promise<void>;
  createAnswer(): Promise<{ type: string; sdp?: string }>;
  setLocalDescription(d: { type: string; sdp?: string }): Promise<void>;
  addIceCandidate(c: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null }): Promise<void>;
  close(): void;
}
export interface WebSocketLike {
  readonly readyState: number;
  onopen: (() => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
interface CanvasLike {
  width: number;
  height: number;
  getContext(kind: '2d', opts?: object): unknown;
}
/** What `frameAgeMs` reads the timecode from: a <video> element (or anything a canvas can draw). */
export interface VideoLike {
  readonly videoWidth: number;
  readonly videoHeight: number;
}

export interface LiveClientOptions {
  /** Base URL of the Eco3D server (http[s]://host:port). Default: the page's origin. */
  readonly url?: string;
  /** A scoped token (plugins). Browsers signed in with the session cookie need none. */
  readonly token?: string;
  readonly want?: Partial<LiveWant>;
  /** Camera + microphone for the console ↔ bedside call (with want.call). */
  readonly localMedia?: MediaStreamLike;
  /** Reconnect after a network drop (default true). */
  readonly reconnect?: boolean;
  /** Node only: implementations (the browser's globals are used otherwise). */
  readonly RTCPeerConnection?: new (config: { iceServers: unknown[] }) => unknown;
  readonly MediaStream?: new (tracks?: unknown[]) => unknown;
  readonly createWebSocket?: (url: string) => WebSocketLike;
}

export interface LiveClientEvents {
  welcome: WelcomeMessage;
  state: LiveConnectionState;
  telemetry: Telemetry;
  grid: GridMessage;
  /** After each commit: the assembled volume is consistent. */
  volume: { commit: CommitMessage; assembler: VolumeAssembler };
  /** The B-mode video (kind 'video') or the other side of the call ('call'). */
  stream: { kind: 'video' | 'call'; stream: MediaStreamLike };
  error: { code: string; message: string };
}

type Listeners = { [K in keyof LiveClientEvents]: Set<(e: LiveClientEvents[K]) => void> };

const PING_INTERVAL_MS = 1000;
/** How long a leaving client waits for the server's `bye` before closing its peer anyway. */
const LEAVE_GRACE_MS = 5000;

export class LiveClient {
  readonly volume = new VolumeAssembler();
  /** Bytes received on the volume channel (for bandwidth figures). */
  volumeBytesReceived = 0;
  #welcome: WelcomeMessage | null = null;
  #videoStream: MediaStreamLike | null = null;
  #callStream: MediaStreamLike | null = null;
  #telemetry: Telemetry | null = null;
  #state: LiveConnectionState = 'connecting';
  #ws: WebSocketLike | null = null;
  #pc: PeerLike | null = null;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #attempt = 0;
  #closed = false;
  /** ICE candidates received before the offer was applied. */
  #pendingIce: { candidate: string; sdpMid?: string | null; sdpMLineIndex?: number | null }[] | null = null;
  #rttMs: number | null = null;
  #offsetMs: number | null = null;
  #bestRttMs = Number.POSITIVE_INFINITY;
  #canvas: CanvasLike | null = null;
  readonly #listeners: Listeners = { welcome: new Set(), state: new Set(), telemetry: new Set(), grid: new Set(), volume: new Set(), stream: new Set(), error: new Set() };

  private constructor(private readonly opts: LiveClientOptions) {}

  /** Connects; resolves once the server has welcomed this viewer and the offer is answered. */
  static async connect(opts: LiveClientOptions = {}): Promise<LiveClient> {
    const c = new LiveClient(opts);
    await c.#open();
    return c;
  }

  get welcome(): WelcomeMessage {
    if (this.#welcome === null) throw new Error('not connected');
    return this.#welcome;
  }
  get videoStream(): MediaStreamLike | null {
    return this.#videoStream;
  }
  get callStream(): MediaStreamLike | null {
    return this.#callStream;
  }
  get state(): LiveConnectionState {
    return this.#state;
  }
  get telemetry(): Telemetry | null {
    return this.#telemetry;
  }

  on<K extends keyof LiveClientEvents>(event: K, cb: (e: LiveClientEvents[K]) => void): () => void {
    const set = this.#listeners[event] as Set<(e: LiveClientEvents[K]) => void>;
    set.add(cb);
    return () => set.delete(cb);
  }

  /** Round trip over the telemetry channel, ms (null until measured). */
  rttMs(): number | null {
    return this.#rttMs;
  }

  /** server clock − this clock, ms, from the ping with the shortest round trip (null until measured). */
  clockOffsetMs(): number | null {
    return this.#offsetMs;
  }

  /**
   * Age of the frame a <video> shows now (capture on the server → now), from the timecode burned
   * into the frame's bottom rows (protocols/video-timecode.ts). Null when it cannot be read.
   */
  frameAgeMs(video: VideoLike): number | null {
    const w = video.videoWidth;
    const h = video.videoHeight;
    const doc = (globalThis as { document?: { createElement(t: 'canvas'): CanvasLike } }).document;
    if (w === 0 || h === 0 || doc === undefined) return null;
    const canvas = (this.#canvas ??= doc.createElement('canvas'));
    const rows = 8;
    canvas.width = w;
    canvas.height = rows;
    const ctx = canvas.getContext('2d', { willReadFrequently: true }) as {
      drawImage(v: unknown, sx: number, sy: number, sw: number, sh: number, dx: number, dy: number, dw: number, dh: number): void;
      getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
    } | null;
    if (ctx === null) return null;
    ctx.drawImage(video, 0, h - rows, w, rows, 0, 0, w, rows);
    const px = ctx.getImageData(0, 0, w, rows).data;
    // The canvas holds the last `rows` rows; readTimecode samples row h − 3.
    const code = readTimecode((x, y) => px[((y - (h - rows)) * w + x) * 4 + 1]!, w, h);
    if (code === null) return null;
    const serverNow = Date.now() + (this.#offsetMs ?? 0);
    return serverNow - unwrapTimecode(code, serverNow);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#teardown();
    this.#setState('closed');
  }

  // --- internals ------------------------------------------------------------------------------

  #emit<K extends keyof LiveClientEvents>(event: K, e: LiveClientEvents[K]): void {
    for (const cb of this.#listeners[event] as Set<(e: LiveClientEvents[K]) => void>) {
      try {
        cb(e);
      } catch (err) {
        console.error(`eco3d live client: a '${event}' listener threw`, err);
      }
    }
  }

  #setState(s: LiveConnectionState): void {
    if (this.#state === s) return;
    this.#state = s;
    this.#emit('state', s);
  }

  #teardown(): void {
    clearInterval(this.#pingTimer);
    const ws = this.#ws;
    const pc = this.#pc;
    this.#ws = null;
    this.#pc = null;
    if (pc !== null) pc.onconnectionstatechange = null;
    const closeNow = (): void => {
      if (ws !== null) {
        ws.onclose = null;
        ws.onmessage = null;
        ws.close(1000, 'bye');
      }
      pc?.close();
    };
    if (ws === null || ws.readyState !== 1 || pc === null) {
      if (ws?.readyState === 1) ws.send(JSON.stringify({ type: 'leave' }));
      closeNow();
      return;
    }
    // Leave, and let the server close its end of the peer first (it answers `bye`): a server on
    // @roamhq/wrtc that is sending on a data channel the far side closes can crash in the
    // binding (a race between its signaling thread and the JS thread), so the side that sends the
    // most closes first. Without an answer in time, close anyway.
    const grace = setTimeout(closeNow, LEAVE_GRACE_MS);
    const finish = (): void => {
      clearTimeout(grace);
      closeNow();
    };
    ws.onclose = finish;
    ws.onmessage = (e) => {
      try {
        if ((JSON.parse(String(e.data)) as { type?: string }).type === 'bye') finish();
      } catch {
        // not ours to answer while leaving
      }
    };
    ws.send(JSON.stringify({ type: 'leave' }));
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.opts.reconnect === false) {
      this.close();
      return;
    }
    this.#teardown();
    this.#setState('reconnecting');
    const delayMs = Math.min(5000, 250 * 2 ** this.#attempt++);
    this.#reconnectTimer = setTimeout(() => {
      this.#open().catch((err: unknown) => {
        this.#emit('error', { code: codeOf(err), message: (err as Error).message });
        this.#scheduleReconnect();
      });
    }, delayMs);
  }

  #open(): Promise<void> {
    const base = this.opts.url ?? (globalThis as { location?: { origin: string } }).location?.origin;
    if (base === undefined) return Promise.reject(new Error('LiveClient needs a url outside a browser page'));
    const wsUrl = `${base.replace(/^http/, 'ws').replace(/\/$/, '')}/ws/live`;
    const ws = this.opts.createWebSocket?.(wsUrl) ?? (new (globalThis as unknown as { WebSocket: new (u: string) => WebSocketLike }).WebSocket(wsUrl));
    this.#ws = ws;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (code: string, message: string): void => {
        if (settled) return;
        settled = true;
        reject(Object.assign(new Error(message), { code }));
      };
      ws.onopen = () => {
        const want = { video: true, telemetry: true, volume: true, call: false, ...this.opts.want };
        ws.send(JSON.stringify({ type: 'join', want, ...(this.opts.token === undefined ? {} : { token: this.opts.token }) }));
      };
      ws.onerror = () => fail('ECO3D_ERR_LINK_LOST', `cannot reach ${wsUrl}`);
      ws.onclose = (e) => {
        if (!settled) fail('ECO3D_ERR_LINK_LOST', `signaling closed (${e.code} ${e.reason})`);
        else if (this.#ws === ws) this.#scheduleReconnect();
      };
      ws.onmessage = (e) => {
        let msg: LiveServerMessage;
        try {
          msg = JSON.parse(String(e.data)) as LiveServerMessage;
        } catch {
          return;
        }
        switch (msg.type) {
          case 'welcome':
            this.#welcome = msg;
            this.#emit('welcome', msg);
            break;
          case 'offer':
            this.#answer(ws, msg).then(
              () => {
                this.#attempt = 0;
                if (!settled) {
                  settled = true;
                  resolve();
                }
              },
              (err: unknown) => fail(codeOf(err), `cannot answer the offer: ${(err as Error).message}`),
            );
            break;
          case 'ice':
            if (msg.candidate === null) break;
            if (this.#pendingIce !== null) this.#pendingIce.push(msg.candidate);
            else this.#pc?.addIceCandidate(msg.candidate).catch(() => undefined);
            break;
          case 'error':
            this.#emit('error', { code: msg.code, message: msg.message });
            fail(msg.code, msg.message);
            break;
          case 'bye':
            break;
        }
      };
    });
  }

  async #answer(ws: WebSocketLike, offer: OfferMessage): Promise<void> {
    const welcome = this.#welcome;
    if (welcome === null) throw new Error('offer before welcome');
    const PC = (this.opts.RTCPeerConnection ?? (globalThis as { RTCPeerConnection?: new (c: object) => unknown }).RTCPeerConnection) as new (c: object) => PeerLike;
    const MS = (this.opts.MediaStream ?? (globalThis as { MediaStream?: new (t?: unknown[]) => unknown }).MediaStream) as new (t?: unknown[]) => MediaStreamLike;
    const pc = new PC({ iceServers: [...welcome.iceServers] });
    this.#pc = pc;
    pc.onicecandidate = (e) => {
      if (ws.readyState !== 1) return;
      const c = e.candidate;
      ws.send(JSON.stringify({ type: 'ice', candidate: c === null ? null : { candidate: c.candidate, sdpMid: c.sdpMid ?? null, sdpMLineIndex: c.sdpMLineIndex ?? null } }));
    };
    pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      if (mid !== null && mid === offer.mids.video) {
        this.#videoStream = new MS([e.track]);
        this.#emit('stream', { kind: 'video', stream: this.#videoStream });
      } else if (mid !== null && (mid === offer.mids.callAudio || mid === offer.mids.callVideo)) {
        if (this.#callStream === null) this.#callStream = new MS([]);
        this.#callStream.addTrack(e.track);
        this.#emit('stream', { kind: 'call', stream: this.#callStream });
      }
    };
    pc.ondatachannel = (e) => this.#onChannel(e.channel);
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected') this.#setState('connected');
      else if (s === 'failed' || s === 'closed') this.#scheduleReconnect();
    };
    this.#pendingIce = [];
    await pc.setRemoteDescription({ type: 'offer', sdp: offer.sdp });
    // Candidates that came while the offer was being applied.
    const early = this.#pendingIce;
    this.#pendingIce = null;
    for (const c of early) await pc.addIceCandidate(c).catch(() => undefined);
    // The call: our camera and microphone go out on the transceivers the server offered for them.
    const local = this.opts.localMedia;
    for (const t of pc.getTransceivers()) {
      const isAudio = t.mid !== null && t.mid === offer.mids.callAudio;
      const isVideo = t.mid !== null && t.mid === offer.mids.callVideo;
      if (!isAudio && !isVideo) continue;
      const track = local?.getTracks().find((x) => x.kind === (isAudio ? 'audio' : 'video'));
      if (track === undefined) continue;
      await t.sender.replaceTrack(track);
      t.direction = 'sendrecv';
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    ws.send(JSON.stringify({ type: 'answer', sdp: answer.sdp }));
  }

  #onChannel(ch: DataChannelLike): void {
    // A peer being torn down (leaving, or replaced on reconnect) delivers nothing more.
    const owner = this.#pc;
    if (ch.label === LIVE_CHANNELS.telemetry) {
      ch.onmessage = (e) => {
        if (this.#pc !== owner) return;
        let m: TelemetryMessage;
        try {
          m = JSON.parse(String(e.data)) as TelemetryMessage;
        } catch {
          return;
        }
        if (m.type === 'telemetry') {
          this.#telemetry = m;
          this.#emit('telemetry', m);
        } else if (m.type === 'pong') {
          const now = Date.now();
          const rtt = now - m.clientMs;
          this.#rttMs = rtt;
          if (rtt <= this.#bestRttMs) {
            this.#bestRttMs = rtt;
            this.#offsetMs = m.serverMs - (m.clientMs + rtt / 2);
          }
        }
      };
      const ping = (): void => {
        if (ch.readyState === 'open') ch.send(JSON.stringify({ type: 'ping', clientMs: Date.now() }));
      };
      ch.onopen = ping;
      clearInterval(this.#pingTimer);
      this.#pingTimer = setInterval(ping, PING_INTERVAL_MS);
    } else if (ch.label === LIVE_CHANNELS.volume) {
      ch.binaryType = 'arraybuffer';
      ch.onmessage = (e) => {
        if (this.#pc !== owner) return;
        try {
          const data = e.data instanceof ArrayBuffer ? e.data : (e.data as Uint8Array);
          this.volumeBytesReceived += data.byteLength;
          const msg = decodeVolumeMessage(data);
          const applied = this.volume.apply(msg);
          if (applied === 'grid') this.#emit('grid', msg as GridMessage);
          else if (applied === 'commit') this.#emit('volume', { commit: msg as CommitMessage, assembler: this.volume });
        } catch (err) {
          this.#emit('error', { code: codeOf(err), message: (err as Error).message });
        }
      };
    }
  }
}

function codeOf(err: unknown): string {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : 'ECO3D_ERR_INTERNAL';
}

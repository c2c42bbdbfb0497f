// @roamhq/wrtc (libwebrtc for Node), typed by the few members we use. Its own typings re-export
// the DOM's WebRTC types, which a Node program does not have; these structural types stand in.
import { createRequire } from 'node:module';

export interface SessionDescription {
  readonly type: 'offer' | 'answer' | 'pranswer' | 'rollback';
  readonly sdp: string;
}

export interface IceCandidateInit {
  readonly candidate: string;
  readonly sdpMid?: string | null;
  readonly sdpMLineIndex?: number | null;
}

export interface MediaTrack {
  readonly kind: 'audio' | 'video';
  readonly id: string;
  stop(): void;
}

export interface Transceiver {
  readonly mid: string | null;
  readonly sender: { replaceTrack(t: MediaTrack | null): Promise<void>; readonly track: MediaTrack | null };
  readonly receiver: { readonly track: MediaTrack };
  direction: string;
}

export interface DataChannel {
  readonly label: string;
  readonly readyState: 'connecting' | 'open' | 'closing' | 'closed';
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  binaryType: string;
  onopen: (() => void) | null;
  onclose: (() => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  onbufferedamountlow: (() => void) | null;
  send(data: string | Uint8Array | ArrayBuffer): void;
  close(): void;
}

export interface PeerConnection {
  readonly connectionState: string;
  readonly iceConnectionState: string;
  readonly localDescription: SessionDescription | null;
  onicecandidate: ((e: { candidate: (IceCandidateInit & { toJSON?: () => IceCandidateInit }) | null }) => void) | null;
  onconnectionstatechange: (() => void) | null;
  ontrack: ((e: { track: MediaTrack; transceiver: Transceiver; streams: readonly unknown[] }) => void) | null;
  ondatachannel: ((e: { channel: DataChannel }) => void) | null;
  addTransceiver(trackOrKind: MediaTrack | 'audio' | 'video', init?: { direction?: string; streams?: readonly unknown[] }): Transceiver;
  addTrack(track: MediaTrack, ...streams: unknown[]): unknown;
  getTransceivers(): Transceiver[];
  createDataChannel(label: string, init?: { ordered?: boolean; maxRetransmits?: number }): DataChannel;
  createOffer(): Promise<SessionDescription>;
  createAnswer(): Promise<SessionDescription>;
  setLocalDescription(d?: SessionDescription): Promise<void>;
  setRemoteDescription(d: SessionDescription): Promise<void>;
  addIceCandidate(c: IceCandidateInit): Promise<void>;
  close(): void;
}

export interface I420Frame {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

export interface VideoSource {
  createTrack(): MediaTrack;
  onFrame(frame: I420Frame): void;
}

export interface VideoSink {
  onframe: ((e: { frame: I420Frame }) => void) | null;
  stop(): void;
}

export interface AudioData {
  readonly samples: Int16Array;
  readonly sampleRate: number;
  readonly bitsPerSample?: number;
  readonly channelCount?: number;
  readonly numberOfFrames?: number;
}

export interface AudioSource {
  createTrack(): MediaTrack;
  onData(data: AudioData): void;
}

export interface AudioSink {
  ondata: ((data: AudioData) => void) | null;
  stop(): void;
}

export interface IceServer {
  readonly urls: string | readonly string[];
  readonly username?: string;
  readonly credential?: string;
}

export interface Wrtc {
  readonly RTCPeerConnection: new (config?: { iceServers?: readonly IceServer[] }) => PeerConnection;
  readonly MediaStream: new (tracks?: MediaTrack[]) => unknown;
  readonly nonstandard: {
    readonly RTCVideoSource: new (init?: { isScreencast?: boolean }) => VideoSource;
    readonly RTCVideoSink: new (track: MediaTrack) => VideoSink;
    readonly RTCAudioSource: new () => AudioSource;
    readonly RTCAudioSink: new (track: MediaTrack) => AudioSink;
  };
}

let loaded: Wrtc | undefined;

/** Loads the native module once, on first use (it starts libwebrtc's threads). */
export function wrtc(): Wrtc {
  loaded ??= createRequire(import.meta.url)('@roamhq/wrtc') as Wrtc;
  return loaded;
}

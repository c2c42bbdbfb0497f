// The SDK's LiveClient in Node (for tests and benchmarks): @roamhq/wrtc for WebRTC, ws for the
// signaling socket, and an RTCVideoSink to read the decoded B-mode frames and their timecodes.
import WebSocket from 'ws';
import { LiveClient, type LiveClientOptions, type MediaStreamLike, type WebSocketLike } from '../marketplace/sdk/live-client.ts';
import { readTimecodeLuma, unwrapTimecode } from '../protocols/video-timecode.ts';
import { wrtc, type MediaTrack, type VideoSink } from '../streamer/index.ts';

export async function connectNodeViewer(url: string, auth: { session?: string; token?: string }, opts: Omit<LiveClientOptions, 'url' | 'RTCPeerConnection' | 'MediaStream' | 'createWebSocket'> = {}): Promise<LiveClient> {
  const rtc = wrtc();
  return LiveClient.connect({
    ...opts,
    url,
    ...(auth.token === undefined ? {} : { token: auth.token }),
    RTCPeerConnection: rtc.RTCPeerConnection as unknown as NonNullable<LiveClientOptions['RTCPeerConnection']>,
    MediaStream: rtc.MediaStream as unknown as NonNullable<LiveClientOptions['MediaStream']>,
    createWebSocket: (u) => new WebSocket(u, auth.session === undefined ? {} : { headers: { authorization: `Bearer ${auth.session}` } }) as unknown as WebSocketLike,
  });
}

export interface DecodedFrame {
  readonly width: number;
  readonly height: number;
  /** Capture time from the burned-in timecode, or null when unreadable. */
  readonly capturedAtMs: number | null;
  readonly receivedAtMs: number;
  readonly luma: Uint8Array;
}

/** Calls `onFrame` for each decoded video frame of a stream; returns the stop function. */
export function watchVideo(stream: MediaStreamLike, onFrame: (f: DecodedFrame) => void): () => void {
  const track = stream.getTracks().find((t) => t.kind === 'video') as unknown as MediaTrack | undefined;
  if (track === undefined) throw new Error('no video track');
  const sink: VideoSink = new (wrtc().nonstandard.RTCVideoSink)(track);
  sink.onframe = ({ frame }) => {
    const now = Date.now();
    const luma = frame.data.subarray(0, frame.width * frame.height);
    const code = readTimecodeLuma(luma, frame.width, frame.height);
    onFrame({ width: frame.width, height: frame.height, capturedAtMs: code === null ? null : unwrapTimecode(code, now), receivedAtMs: now, luma });
  };
  return () => sink.stop();
}

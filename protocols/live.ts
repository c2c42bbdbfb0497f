// Live streaming: the signaling WebSocket (`/ws/live`) and the telemetry data channel.
// Browser-safe (zod only): the viewer apps and the plugin SDK import this file directly.
//
// One RTCPeerConnection per viewer. The server makes the offer, because it owns the streams:
//   client                                  server
//   join {want, token?} ───────────────────►  checks role/scopes
//                       ◄──────────────────── welcome {viewerId, grants, imaging, iceServers}
//                       ◄──────────────────── offer {sdp, mids}
//   answer {sdp} ──────────────────────────►
//   ice {candidate} ◄─────────────────────►  ice {candidate}      (trickle, both ways)
//   leave ─────────────────────────────────►  (or the socket closes: the peer is closed)
// A client that does not answer within the server's answer timeout gets an error and its peer
// is closed. Every error carries a stable ECO3D_ERR_* code.
import { z } from 'zod';
import { Eco3dError } from './errors.ts';
import type { TeleopStatus } from './teleop.ts';

/** The scopes a tenant admin can grant to a plugin or device token (`POST /api/auth/tokens`). */
export const LIVE_SCOPES = ['live:video', 'live:pose', 'live:volume'] as const;
export type LiveScope = (typeof LIVE_SCOPES)[number];

/** The streams a viewer may ask for. */
export interface LiveWant {
  readonly video: boolean;
  readonly telemetry: boolean;
  readonly volume: boolean;
  /** The two-way audio/video call between the console and the bedside panel. */
  readonly call: boolean;
}

const sdp = z.string().min(10).max(64 * 1024);
const iceCandidate = z
  .object({
    candidate: z.string().max(2048),
    sdpMid: z.string().max(64).nullable().optional(),
    sdpMLineIndex: z.number().int().min(0).max(64).nullable().optional(),
    usernameFragment: z.string().max(256).nullable().optional(),
  })
  .strip();

export const liveClientMessageSchema = z.discriminatedUnion('type', [
  z
    .object({
      type: z.literal('join'),
      /** A scoped token, for clients that cannot send a cookie or an Authorization header. */
      token: z.string().min(10).max(2048).optional(),
      want: z
        .object({ video: z.boolean().default(true), telemetry: z.boolean().default(true), volume: z.boolean().default(true), call: z.boolean().default(false) })
        .strict()
        .default({ video: true, telemetry: true, volume: true, call: false }),
      /** A viewer that reconnects names its previous id, so its counters carry on. */
      resume: z.string().max(64).optional(),
    })
    .strict(),
  z.object({ type: z.literal('answer'), sdp }).strict(),
  z.object({ type: z.literal('ice'), candidate: iceCandidate.nullable() }).strict(),
  z.object({ type: z.literal('leave') }).strict(),
]);
export type LiveClientMessage = z.infer<typeof liveClientMessageSchema>;

/** What a viewer was granted (its role's rights, or its token's scopes), per stream. */
export interface LiveGrants {
  readonly video: boolean;
  readonly telemetry: boolean;
  readonly volume: boolean;
  readonly call: boolean;
  /** Tele-operation is on its own socket (/ws/operator); this says whether this viewer may use it. */
  readonly teleop: boolean;
}

/** How the B-mode image maps into the world, so a viewer can place the image plane. */
export interface LiveImaging {
  readonly widthPx: number;
  readonly heightPx: number;
  /** Image (px) → Probe (mm) calibration, a row-major 4×4 as 16 numbers. */
  readonly imageToProbe: readonly number[];
  /** Rows at the bottom of each video frame that carry the capture-time code (video-timecode.ts). */
  readonly timecodeRows: number;
}

export type LiveServerMessage =
  | {
      readonly type: 'welcome';
      readonly viewerId: string;
      readonly actor: string;
      readonly role: string;
      readonly tier: ViewerTier;
      readonly grants: LiveGrants;
      readonly imaging: LiveImaging;
      readonly iceServers: readonly { readonly urls: string | readonly string[]; readonly username?: string; readonly credential?: string }[];
    }
  | {
      readonly type: 'offer';
      readonly sdp: string;
      /** The transceiver mid of each media stream in this offer (absent when not granted). */
      readonly mids: { readonly video?: string; readonly callAudio?: string; readonly callVideo?: string };
    }
  | { readonly type: 'ice'; readonly candidate: RTCIceCandidateLike | null }
  | { readonly type: 'error'; readonly code: string; readonly message: string }
  | { readonly type: 'bye'; readonly reason: string };

export interface RTCIceCandidateLike {
  readonly candidate: string;
  readonly sdpMid?: string | null;
  readonly sdpMLineIndex?: number | null;
}

/**
 * How the server serves a viewer. The operator (the one who drives) and the bedside get the full
 * stream; other viewers (observers, plugins) degrade first: lower frame rate, then resolution.
 */
export type ViewerTier = 'operator' | 'bedside' | 'observer' | 'plugin';

/** Data channel labels. */
export const LIVE_CHANNELS = { telemetry: 'telemetry', volume: 'volume' } as const;

/** Max bytes of one signaling message. */
export const MAX_SIGNALING_BYTES = 96 * 1024;

export function parseLiveClientMessage(raw: string): LiveClientMessage {
  if (raw.length > MAX_SIGNALING_BYTES) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `signaling message larger than ${MAX_SIGNALING_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'signaling message is not valid JSON');
  }
  const type = typeof value === 'object' && value !== null ? (value as { type?: unknown }).type : undefined;
  if (typeof type !== 'string' || !['join', 'answer', 'ice', 'leave'].includes(type)) {
    throw new Eco3dError('ECO3D_ERR_UNKNOWN_MESSAGE', `unknown signaling message type ${JSON.stringify(type)}`);
  }
  const r = liveClientMessageSchema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${i?.path.join('.') ?? ''}: ${i?.message ?? 'invalid'}`.replace(/^: /, ''));
  }
  return r.data;
}

/** A minimal structural check that a string is an SDP session description (RFC 8866 §5). */
export function looksLikeSdp(s: string): boolean {
  return /^v=0\r?\n/.test(s) && /\r?\no=/.test(s) && /\r?\nm=/.test(s);
}

// ---------------------------------------------------------------------------------------------
// Telemetry data channel: unordered, no retransmits, JSON text, 30 Hz by default.

/** Server → viewer, on the telemetry channel. */
export type TelemetryMessage =
  | {
      readonly type: 'telemetry';
      readonly v: 1;
      readonly seq: number;
      /** Server wall clock when sent (ms since the epoch). */
      readonly sentAtMs: number;
      /** Robot, force, e-stop, control holder, acquisition and problems (what /ws/operator broadcasts). */
      readonly status: TeleopStatus;
      /** The latest B-mode frame: its index, capture time and pose, for overlays on the video. */
      readonly frame: { readonly index: number; readonly capturedAtMs: number; readonly imageToReference: readonly number[] } | null;
      /** This viewer's own counters. */
      readonly viewer: ViewerCounters;
    }
  | { readonly type: 'pong'; readonly clientMs: number; readonly serverMs: number };

/** Viewer → server, on the telemetry channel: a clock probe (round trip and clock offset). */
export interface TelemetryPing {
  readonly type: 'ping';
  readonly clientMs: number;
}

export interface ViewerCounters {
  readonly videoFramesSent: number;
  /** Frames not sent to this viewer because it was behind or its tier's rate is lower. */
  readonly videoFramesDropped: number;
  readonly videoFps: number;
  readonly videoScale: number;
  readonly telemetryDropped: number;
  readonly volumeBricksSent: number;
  /** Brick updates superseded by a newer one before they were sent (the newest always goes). */
  readonly volumeBricksCoalesced: number;
}

/** Parses a viewer's telemetry-channel message; anything else is null (and ignored). */
export function parseTelemetryPing(raw: unknown): TelemetryPing | null {
  if (typeof raw !== 'string' || raw.length > 256) return null;
  try {
    const v = JSON.parse(raw) as { type?: unknown; clientMs?: unknown };
    return v.type === 'ping' && typeof v.clientMs === 'number' && Number.isFinite(v.clientMs) ? { type: 'ping', clientMs: v.clientMs } : null;
  } catch {
    return null;
  }
}

// The AR plugin API of the browser SDK: connect with a scoped token, show the live B-mode video,
// and draw over it every frame with the probe's pose at hand. Browser-safe (no Node modules).
//
//   const run = await runArPlugin({
//     token, video, overlay,
//     onFrame({ draw, project, imageToWorld, telemetry }) { ... },
//     onStatus(s) { statusLine.textContent = s.message },
//   });
//   ...
//   run.stop();
//
// Geometry (PLUS conventions, protocols/imaging.ts): the Image frame is in pixels (u across, v
// down the depth), `imageToReference` maps image px → world (robot base) mm, row-major 4×4. The
// telemetry carries it for the latest frame; the plugin runner picks the one captured when the
// frame now on screen was (from the frame's burned-in time code), so overlays stay on the image.
import { mat4Apply, mat4Invert, type Mat4 } from '../../protocols/imaging.ts';
import type { LiveGrants, LiveImaging, LiveWant } from '../../protocols/live.ts';
import { LiveClient, type LiveConnectionState, type MediaStreamLike, type Telemetry } from './live-client.ts';

export interface Vec3 {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

/** A matrix as it comes off the wire (array, typed array, or an object keyed "0"…"15") → Mat4. */
export function toMat4(m: unknown): Mat4 | null {
  if (typeof m !== 'object' || m === null) return null;
  const src = m as ArrayLike<unknown> & Record<string, unknown>;
  const out = new Float64Array(16);
  for (let i = 0; i < 16; i++) {
    const v = src[i];
    if (typeof v !== 'number' || !Number.isFinite(v)) return null;
    out[i] = v;
  }
  return out;
}

/** Image (px) → world (mm) of a point of the image. */
export const imagePointToWorld = (imageToReference: Mat4, u: number, v: number): Vec3 => mat4Apply(imageToReference, { x: u, y: v, z: 0 });

/**
 * The outline of the image in the world: its four corners (pixel edges, clockwise from the
 * top-left as the image is shown: top = the probe face).
 */
export function imagePlaneCorners(imageToReference: Mat4, imaging: Pick<LiveImaging, 'widthPx' | 'heightPx'>): [Vec3, Vec3, Vec3, Vec3] {
  const w = imaging.widthPx - 0.5;
  const h = imaging.heightPx - 0.5;
  return [
    imagePointToWorld(imageToReference, -0.5, -0.5),
    imagePointToWorld(imageToReference, w, -0.5),
    imagePointToWorld(imageToReference, w, h),
    imagePointToWorld(imageToReference, -0.5, h),
  ];
}

export interface ImageProjection {
  /** Image px of the point's foot on the image plane. */
  readonly u: number;
  readonly v: number;
  /** Signed distance from the image plane, mm (+ along u × v). */
  readonly distanceMm: number;
  /** Whether the foot lies inside the image. */
  readonly inImage: boolean;
}

/** Projects a world point (mm) onto the image plane. */
export function projectToImage(imageToReference: Mat4, referenceToImage: Mat4, p: Vec3, imaging: Pick<LiveImaging, 'widthPx' | 'heightPx'>): ImageProjection {
  const q = mat4Apply(referenceToImage, p);
  const m = imageToReference;
  // The plane normal in the world: column u × column v of the (row-major) matrix.
  const cu = { x: m[0]!, y: m[4]!, z: m[8]! };
  const cv = { x: m[1]!, y: m[5]!, z: m[9]! };
  const n = { x: cu.y * cv.z - cu.z * cv.y, y: cu.z * cv.x - cu.x * cv.z, z: cu.x * cv.y - cu.y * cv.x };
  const nl = Math.hypot(n.x, n.y, n.z) || 1;
  const o = { x: m[3]!, y: m[7]!, z: m[11]! };
  const distanceMm = ((p.x - o.x) * n.x + (p.y - o.y) * n.y + (p.z - o.z) * n.z) / nl;
  const inImage = q.x >= -0.5 && q.y >= -0.5 && q.x <= imaging.widthPx - 0.5 && q.y <= imaging.heightPx - 0.5;
  return { u: q.x, v: q.y, distanceMm, inImage };
}

export interface ArFrameContext {
  readonly client: LiveClient;
  readonly grants: LiveGrants;
  readonly imaging: LiveImaging;
  /** The latest telemetry (robot, force, acquisition…), null before the first. */
  readonly telemetry: Telemetry | null;
  /** Image px → world mm of the frame on screen (or the latest one), null before any pose. */
  readonly imageToReference: Mat4 | null;
  /** The 2D overlay, cleared, in CSS px of the overlay canvas (device pixel ratio applied). */
  readonly draw: CanvasRenderingContext2D;
  readonly width: number;
  readonly height: number;
  readonly video: HTMLVideoElement;
  /** Age of the frame on screen (capture → now), ms, when its time code is readable. */
  readonly frameAgeMs: number | null;
  /** World mm → overlay px (where it falls on the video) plus its image projection; null without a pose. */
  project(worldMm: Vec3): (ImageProjection & { readonly x: number; readonly y: number }) | null;
  /** Image px → overlay px. */
  imageToOverlay(u: number, v: number): { x: number; y: number };
  /** Image px → world mm; null without a pose. */
  imageToWorld(u: number, v: number): Vec3 | null;
}

export interface ArPluginStatus {
  readonly state: LiveConnectionState | 'error';
  readonly message: string;
  readonly grants: LiveGrants | null;
}

export interface ArPluginOptions {
  /** A scoped token from POST /api/auth/tokens (scopes live:video, live:pose…). */
  readonly token?: string;
  /** Server base URL; default the page's origin. */
  readonly url?: string;
  readonly video: HTMLVideoElement;
  readonly overlay: HTMLCanvasElement;
  /** Default: video and telemetry, no volume, no call. */
  readonly want?: Partial<LiveWant>;
  readonly onFrame: (ctx: ArFrameContext) => void;
  readonly onStatus?: (s: ArPluginStatus) => void;
}

export interface ArPluginHandle {
  readonly client: LiveClient;
  stop(): void;
}

export const NO_VIDEO_MESSAGE = 'no video (scope live:video not granted)';

/** Connects, shows the video (when granted) and calls `onFrame` once per displayed frame or pose update. */
export async function runArPlugin(opts: ArPluginOptions): Promise<ArPluginHandle> {
  const want: LiveWant = { video: true, telemetry: true, volume: false, call: false, ...opts.want };
  const status = (state: ArPluginStatus['state'], message: string, grants: LiveGrants | null): void => opts.onStatus?.({ state, message, grants });
  status('connecting', 'connecting…', null);
  const client = await LiveClient.connect({
    ...(opts.url === undefined ? {} : { url: opts.url }),
    ...(opts.token === undefined || opts.token === '' ? {} : { token: opts.token }),
    want,
  });
  const grants = client.welcome.grants;
  const video = opts.video;
  const describe = (): string => {
    const parts: string[] = [];
    if (want.video && !grants.video) parts.push(NO_VIDEO_MESSAGE);
    else if (want.video) parts.push('video');
    if (want.telemetry && !grants.telemetry) parts.push('no pose (scope live:pose not granted)');
    else if (want.telemetry) parts.push('pose');
    return `${client.state}: ${parts.join(', ')}`;
  };
  status(client.state, describe(), grants);

  // In a page the SDK's structural streams are MediaStreams.
  const attach = (ms: MediaStreamLike | null): void => {
    const s = ms as unknown as MediaStream | null;
    if (!grants.video || s === null) {
      video.srcObject = null;
      return;
    }
    if (video.srcObject !== s) {
      video.srcObject = s;
      video.muted = true;
      video.playsInline = true;
      video.play().catch(() => {
        /* autoplay of a muted stream is allowed; a refusal shows as a paused video */
      });
    }
  };
  attach(client.videoStream);

  // Recent frame poses, to pick the one of the frame on screen.
  const history: { capturedAtMs: number; m: Mat4 }[] = [];
  let latest: Mat4 | null = null;
  let changed = true;
  const offs = [
    client.on('stream', (e) => {
      if (e.kind === 'video') attach(e.stream);
    }),
    client.on('state', (s) => status(s, describe(), grants)),
    client.on('error', (e) => status('error', `${e.code}: ${e.message}`, grants)),
    client.on('telemetry', (t) => {
      changed = true;
      if (t.frame === null) return;
      const m = toMat4(t.frame.imageToReference);
      if (m === null) return;
      latest = m;
      history.push({ capturedAtMs: t.frame.capturedAtMs, m });
      if (history.length > 90) history.shift();
    }),
  ];

  // A new frame on screen is a reason to redraw.
  let stopped = false;
  const rvfc = (): void => {
    if (stopped) return;
    changed = true;
    video.requestVideoFrameCallback(rvfc);
  };
  if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(rvfc);

  let ageMs: number | null = null;
  let ageAtMs = 0;
  const poseOnScreen = (): Mat4 | null => {
    if (history.length === 0 || ageMs === null) return latest;
    const shownAt = Date.now() + (client.clockOffsetMs() ?? 0) - ageMs;
    let best = history[history.length - 1]!;
    for (const h of history) if (Math.abs(h.capturedAtMs - shownAt) < Math.abs(best.capturedAtMs - shownAt)) best = h;
    return best.m;
  };

  const overlay = opts.overlay;
  const draw = overlay.getContext('2d')!;
  let lastSize = '';
  let raf = 0;
  const loop = (): void => {
    if (stopped) return;
    raf = requestAnimationFrame(loop);
    const dpr = window.devicePixelRatio || 1;
    const box = video.clientWidth > 0 ? video : overlay;
    const cssW = box.clientWidth;
    const cssH = box.clientHeight;
    const size = `${cssW}x${cssH}@${dpr}`;
    if (size !== lastSize) {
      lastSize = size;
      overlay.width = Math.max(1, Math.round(cssW * dpr));
      overlay.height = Math.max(1, Math.round(cssH * dpr));
      changed = true;
    }
    if (!changed) return;
    changed = false;
    const now = performance.now();
    if (grants.video && video.videoWidth > 0 && now - ageAtMs > 100) {
      ageAtMs = now;
      ageMs = client.frameAgeMs(video);
    }
    const imaging = client.welcome.imaging;
    // The image as shown: object-fit contain of the video (or of the image's own aspect).
    const vw = video.videoWidth || imaging.widthPx;
    const vh = video.videoHeight || imaging.heightPx;
    const s = Math.min(cssW / vw, cssH / vh);
    const ox = (cssW - vw * s) / 2;
    const oy = (cssH - vh * s) / 2;
    const imageToOverlay = (u: number, v: number): { x: number; y: number } => ({
      x: ox + ((u + 0.5) * (vw / imaging.widthPx)) * s,
      y: oy + ((v + 0.5) * (vh / imaging.heightPx)) * s,
    });
    const m = poseOnScreen();
    const inv = m === null ? null : mat4Invert(m);
    draw.setTransform(dpr, 0, 0, dpr, 0, 0);
    draw.clearRect(0, 0, cssW, cssH);
    const ctx: ArFrameContext = {
      client,
      grants,
      imaging,
      telemetry: client.telemetry,
      imageToReference: m,
      draw,
      width: cssW,
      height: cssH,
      video,
      frameAgeMs: ageMs,
      imageToOverlay,
      imageToWorld: (u, v) => (m === null ? null : imagePointToWorld(m, u, v)),
      project: (p) => {
        if (m === null || inv === null) return null;
        const pr = projectToImage(m, inv, p, imaging);
        return { ...pr, ...imageToOverlay(pr.u, pr.v) };
      },
    };
    try {
      opts.onFrame(ctx);
    } catch (e) {
      status('error', `plugin onFrame failed: ${(e as Error).message}`, grants);
    }
  };
  raf = requestAnimationFrame(loop);

  return {
    client,
    stop(): void {
      stopped = true;
      cancelAnimationFrame(raf);
      for (const off of offs) off();
      video.srcObject = null;
      client.close();
      status('closed', 'stopped', grants);
    },
  };
}

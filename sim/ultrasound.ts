// The B-mode image simulator: a slice of the phantom at the probe pose the robot reports.
//
// Public API (for sim/index.ts):
//   UltrasoundSimulator(phantom, opts?)  → render(tcpPose, tMs): TrackedFrame
//   linearProbe(opts?), curvilinearProbe(opts?)  → probe models (defaults below)
//   imageToProbe(probe): Mat4, imageGeometry(probe)  → the calibration and the fan's clip terms
//   FrameClock  → which robot-clock instants get a frame at a given frame rate (no timers)
//
// ImageToProbe (the calibration; "Probe" is the robot's TCP/tool frame, mm):
//   The image plane holds the probe axis (tool z, depth) and the array direction (tool x).
//   A pixel (u, v) — u along columns (lateral), v along rows (depth), origin at the centre of
//   the first pixel, PLUS's Image frame — sits in the tool frame at
//       x = (u − (W − 1)/2) · su          (the image is centred on the probe axis)
//       y = 0                              (the image's third axis w maps to −tool y)
//       z = topMm + (v + 1/2) · sv         (row v's centre; row 0's top edge is at topMm)
//   As a row-major matrix:
//       [ su  0   0   −(W−1)/2·su   ]
//       [ 0   0  −su   0            ]
//       [ 0   sv  0    topMm + sv/2 ]
//       [ 0   0   0    1            ]
//   (w ↦ −y·su makes the 3×3 a positive-determinant similarity when su = sv.)
//   Then imageToReference = poseToMat4(tcpPose) · imageToProbe(probe).
//   - Linear probe: su = lateral spacing, sv = axial spacing, topMm = 0: the image starts at the
//     probe face and covers W·su × H·sv mm (default 640 × 480 px at 0.1 mm: 64 × 48 mm).
//   - Curvilinear probe: the TCP is the centre of the convex array; the fan's apex is at tool
//     (0, 0, −radiusMm). Rays leave the array at angles ±spanDeg/2 and run depthMm. The raster
//     is the scan-converted fan with square pixels s = max(fan height / H, fan width / W),
//     centred laterally, top edge at the arc's ends (topMm = R·cos(span/2) − R, above the
//     face centre). `imageGeometry(probe).fan` gives PLUS's fan clip terms in pixels; pixels
//     outside the fan are 0.
//
// Image formation, per pixel at world point p, depth d from the face along its ray:
//   amplitude = echogenicity(p) · speckle(p) · 10^((TGC(d) − attenuation(d) + gain) / 20)
//   speckle: unit-mean Rayleigh, from a hash of p quantised to speckleCellMm (0.2 mm) and the
//   phantom's seed — fixed to the tissue, so the same point looks the same from every pose,
//   as it must for 3D compounding to be consistent.
//   attenuation(d) = 2 · α · f · d (round trip; α dB/cm/MHz, default 0.5, f the probe's MHz).
//   TGC: 'auto' (default) cancels the attenuation exactly; or gains in dB at evenly spaced
//   depths from the face to the full depth, interpolated linearly (a console's slider pots).
//   Log compression: 20·log10(amplitude) dB, whiteDb (default +20 dB re the tissue mean) shows
//   as 255, whiteDb − dynamicRangeDb (default 50 dB) and below as 0.
//   Outside the body (air, gel, table) is black. Not modelled: tissue deformation under the
//   probe, loss of coupling in air, shadowing and enhancement, beam blur.
import { isFiniteQuat, isFiniteVec3, quatNorm } from '../protocols/geometry.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { mat4Mul, type Mat4, type TrackedFrame } from '../protocols/imaging.ts';
import { poseToMat4 } from '../protocols/imaging-pose.ts';
import type { Pose } from '../protocols/robot.ts';
import { classifyRegion, type ProceduralPhantom } from './phantom.ts';

export interface LinearProbe {
  readonly kind: 'linear';
  readonly widthPx: number;
  readonly heightPx: number;
  /** Pixel size along the array (columns, u). */
  readonly lateralSpacingMm: number;
  /** Pixel size along depth (rows, v). */
  readonly axialSpacingMm: number;
  readonly frequencyMHz: number;
}

export interface CurvilinearProbe {
  readonly kind: 'curvilinear';
  readonly widthPx: number;
  readonly heightPx: number;
  /** Radius of the convex array: the fan's apex is this far behind the face centre. */
  readonly radiusMm: number;
  /** Full opening angle of the fan, in (0, 180). */
  readonly spanDeg: number;
  /** Imaging depth along each ray from the array. */
  readonly depthMm: number;
  readonly frequencyMHz: number;
}

export type ProbeModel = LinearProbe | CurvilinearProbe;

/** A linear probe; defaults 640 × 480 px, 0.1 mm pixels (64 mm wide, 48 mm deep), 7.5 MHz. */
export function linearProbe(opts: Partial<Omit<LinearProbe, 'kind'>> = {}): LinearProbe {
  const p: LinearProbe = { kind: 'linear', widthPx: 640, heightPx: 480, lateralSpacingMm: 0.1, axialSpacingMm: 0.1, frequencyMHz: 7.5, ...opts };
  checkPx(p.widthPx, 'widthPx');
  checkPx(p.heightPx, 'heightPx');
  checkPositive(p.lateralSpacingMm, 'lateralSpacingMm');
  checkPositive(p.axialSpacingMm, 'axialSpacingMm');
  checkPositive(p.frequencyMHz, 'frequencyMHz');
  return p;
}

/** A curvilinear (convex) probe; defaults 640 × 480 px, radius 40 mm, 60° span, 90 mm deep, 3.5 MHz. */
export function curvilinearProbe(opts: Partial<Omit<CurvilinearProbe, 'kind'>> = {}): CurvilinearProbe {
  const p: CurvilinearProbe = { kind: 'curvilinear', widthPx: 640, heightPx: 480, radiusMm: 40, spanDeg: 60, depthMm: 90, frequencyMHz: 3.5, ...opts };
  checkPx(p.widthPx, 'widthPx');
  checkPx(p.heightPx, 'heightPx');
  checkPositive(p.radiusMm, 'radiusMm');
  checkPositive(p.depthMm, 'depthMm');
  checkPositive(p.frequencyMHz, 'frequencyMHz');
  if (!(p.spanDeg > 0 && p.spanDeg < 180)) throw configError(`spanDeg must be in (0, 180), got ${p.spanDeg}`);
  return p;
}

/** A fan in PLUS's clip terms (FanOriginPixel, FanAnglesDeg, FanRadiusStart/StopPixel). */
export interface FanGeometry {
  /** The apex in Image pixels (v is negative: above the first row). */
  readonly originPx: { readonly u: number; readonly v: number };
  /** Ray angles from the +v (depth) axis, positive towards +u. */
  readonly anglesDeg: readonly [number, number];
  readonly radiusStartPx: number;
  readonly radiusStopPx: number;
}

export interface ImageGeometry {
  readonly widthPx: number;
  readonly heightPx: number;
  /** Pixel size: u along columns (lateral), v along rows (depth). */
  readonly spacingMm: { readonly u: number; readonly v: number };
  /** Tool z of row 0's top edge: 0 for a linear probe, above the face (< 0) for a fan. */
  readonly topMm: number;
  /** Depth of the deepest pixel from the face, along its ray (the TGC curve spans 0 … this). */
  readonly maxDepthMm: number;
  readonly fan: FanGeometry | null;
}

export function imageGeometry(probe: ProbeModel): ImageGeometry {
  switch (probe.kind) {
    case 'linear':
      return {
        widthPx: probe.widthPx,
        heightPx: probe.heightPx,
        spacingMm: { u: probe.lateralSpacingMm, v: probe.axialSpacingMm },
        topMm: 0,
        maxDepthMm: probe.heightPx * probe.axialSpacingMm,
        fan: null,
      };
    case 'curvilinear': {
      const half = (probe.spanDeg * Math.PI) / 360;
      const r = probe.radiusMm, d = probe.depthMm;
      const topMm = r * Math.cos(half) - r;
      const s = Math.max((d - topMm) / probe.heightPx, (2 * (r + d) * Math.sin(half)) / probe.widthPx);
      return {
        widthPx: probe.widthPx,
        heightPx: probe.heightPx,
        spacingMm: { u: s, v: s },
        topMm,
        maxDepthMm: d,
        fan: {
          originPx: { u: (probe.widthPx - 1) / 2, v: (-r - topMm) / s - 0.5 },
          anglesDeg: [-probe.spanDeg / 2, probe.spanDeg / 2],
          radiusStartPx: r / s,
          radiusStopPx: (r + d) / s,
        },
      };
    }
  }
}

/** Image (px) → probe/TCP frame (mm), row-major; see the header for the formula. */
export function imageToProbe(probe: ProbeModel): Mat4 {
  const g = imageGeometry(probe);
  const su = g.spacingMm.u, sv = g.spacingMm.v;
  // prettier-ignore
  return new Float64Array([
    su, 0, 0, (-(g.widthPx - 1) / 2) * su,
    0, 0, -su, 0,
    0, sv, 0, g.topMm + sv / 2,
    0, 0, 0, 1,
  ]);
}

export interface UltrasoundOptions {
  /** Default: linearProbe(). */
  readonly probe?: ProbeModel;
  /** Tissue attenuation, dB per cm per MHz, one way (default 0.5, soft tissue). */
  readonly attenuationDbPerCmMHz?: number;
  /** 'auto' (default) cancels the attenuation; or gains (dB) at evenly spaced depths, face to full depth. */
  readonly tgc?: 'auto' | readonly number[];
  /** Overall gain (default 0 dB). */
  readonly gainDb?: number;
  /** Displayed dynamic range (default 50 dB). */
  readonly dynamicRangeDb?: number;
  /** Amplitude shown as white, dB re the tissue mean (default +20 dB). */
  readonly whiteDb?: number;
  /** Size of the world cells the speckle is fixed to (default 0.2 mm). */
  readonly speckleCellMm?: number;
}

/** Speckle lookup size: 12 bits of the hash pick a Rayleigh quantile. */
const SPECKLE_BITS = 12;
/**
 * The speckle grid is shifted by this fraction of a cell, so that round coordinates (a sweep in
 * the plane y = 0, a pose at z = 117 mm) do not sit on cell boundaries, where rounding noise of
 * 1e-15 mm would pick either cell from one pose to the next.
 */
const CELL_OFFSET = 0.3719;
/** Below this a pixel's base level means "not imaged" (outside the fan). */
const NOT_IMAGED = -1e9;

/**
 * Renders tracked B-mode frames of a phantom. Pure and synchronous: no timers, no I/O; each
 * render returns a new pixel buffer (frames are kept downstream, so buffers are never reused).
 */
export class UltrasoundSimulator {
  readonly phantom: ProceduralPhantom;
  readonly probe: ProbeModel;
  readonly geometry: ImageGeometry;
  private readonly i2p: Mat4;
  /** Per pixel: gain − attenuation + TGC − display floor, in output levels; NOT_IMAGED off the fan. */
  private readonly baseLevel: Float64Array;
  /** Per phantom region: 20·log10(echogenicity) in output levels. */
  private readonly echoLevel: Float64Array;
  /** Per speckle hash bucket: 20·log10(unit-mean Rayleigh quantile) in output levels. */
  private readonly speckleLevel: Float64Array;
  private readonly invCellMm: number;
  private readonly speckleSeed: number;
  /** Per frame: the structures that can cross the image, and their pixel boxes uLo uHi vLo vHi. */
  private readonly cand: Int32Array;
  private readonly boxPx: Int32Array;
  /** Per row: the structures whose box holds the row. */
  private readonly rowCand: Int32Array;
  private nextIndex = 0;

  constructor(phantom: ProceduralPhantom, opts: UltrasoundOptions = {}) {
    this.phantom = phantom;
    this.probe = opts.probe ?? linearProbe();
    this.geometry = imageGeometry(this.probe);
    this.i2p = imageToProbe(this.probe);
    const alpha = opts.attenuationDbPerCmMHz ?? 0.5;
    const gainDb = opts.gainDb ?? 0;
    const rangeDb = opts.dynamicRangeDb ?? 50;
    const whiteDb = opts.whiteDb ?? 20;
    const cellMm = opts.speckleCellMm ?? 0.2;
    const tgc = opts.tgc ?? 'auto';
    if (!(alpha >= 0) || !Number.isFinite(alpha)) throw configError(`attenuationDbPerCmMHz must be finite and ≥ 0, got ${alpha}`);
    if (!Number.isFinite(gainDb) || !Number.isFinite(whiteDb)) throw configError('gainDb and whiteDb must be finite');
    checkPositive(rangeDb, 'dynamicRangeDb');
    checkPositive(cellMm, 'speckleCellMm');
    if (tgc !== 'auto' && (tgc.length === 0 || !tgc.every(Number.isFinite))) throw configError('tgc must be "auto" or a non-empty list of finite dB values');

    const levelsPerDb = 255 / rangeDb;
    const g = this.geometry;
    const attenuationDb = (depthMm: number): number => (2 * alpha * this.probe.frequencyMHz * depthMm) / 10;
    const tgcDb = (depthMm: number): number => {
      if (tgc === 'auto') return attenuationDb(depthMm);
      if (tgc.length === 1) return tgc[0]!;
      const t = Math.max(0, Math.min(1, depthMm / g.maxDepthMm)) * (tgc.length - 1);
      const i = Math.min(tgc.length - 2, Math.floor(t));
      return tgc[i]! + (tgc[i + 1]! - tgc[i]!) * (t - i);
    };
    const floorDb = whiteDb - rangeDb;
    const W = g.widthPx, H = g.heightPx;
    this.baseLevel = new Float64Array(W * H);
    const fanR = this.probe.kind === 'curvilinear' ? this.probe.radiusMm : 0;
    const fanHalfRad = this.probe.kind === 'curvilinear' ? (this.probe.spanDeg * Math.PI) / 360 : 0;
    for (let v = 0; v < H; v++) {
      const zMm = g.topMm + (v + 0.5) * g.spacingMm.v;
      for (let u = 0; u < W; u++) {
        let depthMm = zMm;
        if (this.probe.kind === 'curvilinear') {
          const xMm = (u - (W - 1) / 2) * g.spacingMm.u;
          const r = Math.hypot(xMm, zMm + fanR);
          const theta = Math.atan2(xMm, zMm + fanR);
          if (r < fanR || r > fanR + g.maxDepthMm || Math.abs(theta) > fanHalfRad) {
            this.baseLevel[v * W + u] = NOT_IMAGED;
            continue;
          }
          depthMm = r - fanR;
        }
        this.baseLevel[v * W + u] = (gainDb + tgcDb(depthMm) - attenuationDb(depthMm) - floorDb) * levelsPerDb;
      }
    }
    const regionEcho = phantom.kernel.regionEcho;
    this.echoLevel = new Float64Array(regionEcho.length);
    for (let r = 0; r < regionEcho.length; r++) {
      const e = regionEcho[r]!;
      this.echoLevel[r] = e > 0 ? 20 * Math.log10(e) * levelsPerDb : NOT_IMAGED;
    }
    // Quantiles of the Rayleigh distribution (σ = 1: mean √(π/2)), scaled to unit mean.
    const n = 1 << SPECKLE_BITS;
    this.speckleLevel = new Float64Array(n);
    const meanRayleigh = Math.sqrt(Math.PI / 2);
    for (let j = 0; j < n; j++) {
      const r = Math.sqrt(-2 * Math.log(1 - (j + 0.5) / n)) / meanRayleigh;
      this.speckleLevel[j] = 20 * Math.log10(r) * levelsPerDb;
    }
    this.invCellMm = 1 / cellMm;
    this.speckleSeed = fmix32((phantom.seed ^ 0x2545f491) >>> 0);
    this.cand = new Int32Array(phantom.kernel.count);
    this.boxPx = new Int32Array(phantom.kernel.count * 4);
    this.rowCand = new Int32Array(phantom.kernel.count);
  }

  /** The calibration of this simulator's probe (a copy). */
  imageToProbe(): Mat4 {
    return this.i2p.slice();
  }

  /**
   * The frame the probe sees at `tcpPose` (base frame), stamped `tMs` (robot clock).
   * Throws ECO3D_ERR_NOT_FINITE for a pose or time with NaN/∞ or a zero quaternion.
   */
  render(tcpPose: Pose, tMs: number): TrackedFrame {
    if (!isFiniteVec3(tcpPose.positionMm) || !isFiniteQuat(tcpPose.orientation) || quatNorm(tcpPose.orientation) === 0 || !Number.isFinite(tMs)) {
      throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'ultrasound render: the pose or timestamp is not finite', { details: { tMs } });
    }
    const m = mat4Mul(poseToMat4(tcpPose), this.i2p);
    const W = this.geometry.widthPx, H = this.geometry.heightPx;
    const pixels = new Uint8Array(W * H);
    // The clamped view rounds and clamps each level to 0…255 on store (NaN would store 0).
    const out = new Uint8ClampedArray(pixels.buffer);
    const ox = m[3]!, oy = m[7]!, oz = m[11]!;
    const ux = m[0]!, uy = m[4]!, uz = m[8]!;
    const vx = m[1]!, vy = m[5]!, vz = m[9]!;
    const nCand = this.cullToPlane(m);
    const k = this.phantom.kernel;
    const cand = this.cand, rowCand = this.rowCand, box = this.boxPx;
    const base = this.baseLevel, echo = this.echoLevel, speckle = this.speckleLevel;
    const inv = this.invCellMm, seed = this.speckleSeed;
    const shift = 32 - SPECKLE_BITS;
    for (let v = 0; v < H; v++) {
      const rx = ox + v * vx, ry = oy + v * vy, rz = oz + v * vz;
      const row = v * W;
      // The shapes whose pixel box holds this row, and the columns they span: elsewhere in the
      // row only the body and skin need testing.
      let nRow = 0, uLo = W, uHi = -1;
      for (let c = 0; c < nCand; c++) {
        if (v >= box[c * 4 + 2]! && v <= box[c * 4 + 3]!) {
          rowCand[nRow++] = cand[c]!;
          uLo = Math.min(uLo, box[c * 4]!);
          uHi = Math.max(uHi, box[c * 4 + 1]!);
        }
      }
      for (let u = 0; u < W; u++) {
        const b = base[row + u]!;
        if (b === NOT_IMAGED) continue;
        const x = rx + u * ux, y = ry + u * uy, z = rz + u * uz;
        const region = classifyRegion(k, x, y, z, rowCand, u >= uLo && u <= uHi ? nRow : 0);
        if (region === 0) continue;
        // Spatial hash of the speckle cell (the three primes of Teschner et al. 2003), mixed.
        let h = seed ^ Math.imul(Math.floor(x * inv + CELL_OFFSET), 73856093) ^ Math.imul(Math.floor(y * inv + CELL_OFFSET), 19349663) ^ Math.imul(Math.floor(z * inv + CELL_OFFSET), 83492791);
        h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
        h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
        h ^= h >>> 16;
        out[row + u] = b + echo[region]! + speckle[h >>> shift]!;
      }
    }
    return { index: this.nextIndex++, tMs, width: W, height: H, pixels, imageToReference: m };
  }

  /**
   * The structures that can cross the image plane, each with the box of pixels it can cover
   * (into cand and boxPx; returns how many). The per-pixel loop then tests only the one or two
   * shapes that can be there. Conservative: a quadric's bounding sphere cut by the plane; for a
   * tube, the part of its axis within its outer radius of the plane, widened by that radius.
   */
  private cullToPlane(m: Mat4): number {
    const ox = m[3]!, oy = m[7]!, oz = m[11]!;
    // Image axes in the world: U (per column), V (per row), W (normal); orthogonal by construction.
    const ux = m[0]!, uy = m[4]!, uz = m[8]!, vx = m[1]!, vy = m[5]!, vz = m[9]!;
    const wl = Math.hypot(m[2]!, m[6]!, m[10]!);
    const nx = m[2]! / wl, ny = m[6]! / wl, nz = m[10]! / wl;
    const uu = ux * ux + uy * uy + uz * uz, vv = vx * vx + vy * vy + vz * vz;
    const su = Math.sqrt(uu), sv = Math.sqrt(vv);
    const W = this.geometry.widthPx, H = this.geometry.heightPx;
    const k = this.phantom.kernel;
    const structures = this.phantom.structures;
    let n = 0;
    const keep = (s: number, pu0: number, pv0: number, pu1: number, pv1: number, rMm: number): void => {
      const uLo = Math.max(0, Math.floor(Math.min(pu0, pu1) - rMm / su)), uHi = Math.min(W - 1, Math.ceil(Math.max(pu0, pu1) + rMm / su));
      const vLo = Math.max(0, Math.floor(Math.min(pv0, pv1) - rMm / sv)), vHi = Math.min(H - 1, Math.ceil(Math.max(pv0, pv1) + rMm / sv));
      if (uLo > uHi || vLo > vHi) return;
      this.cand[n] = s;
      this.boxPx.set([uLo, uHi, vLo, vHi], n * 4);
      n++;
    };
    for (let c = 0; c < k.count; c++) {
      const s = k.all[c]!;
      const st = structures[s]!;
      if (st.shape === 'tube') {
        const r = st.radiusMm + st.wallMm;
        const a = st.startMm, b = st.endMm;
        const da = (a.x - ox) * nx + (a.y - oy) * ny + (a.z - oz) * nz;
        const db = (b.x - ox) * nx + (b.y - oy) * ny + (b.z - oz) * nz;
        // Axis parameters t ∈ [0, 1] where the axis is within r of the plane.
        let t0 = 0, t1 = 1;
        if (da === db) {
          if (Math.abs(da) > r) continue;
        } else {
          const ta = (-r - da) / (db - da), tb = (r - da) / (db - da);
          t0 = Math.max(0, Math.min(ta, tb));
          t1 = Math.min(1, Math.max(ta, tb));
          if (t0 > t1) continue;
        }
        const p0x = a.x + (b.x - a.x) * t0 - ox, p0y = a.y + (b.y - a.y) * t0 - oy, p0z = a.z + (b.z - a.z) * t0 - oz;
        const p1x = a.x + (b.x - a.x) * t1 - ox, p1y = a.y + (b.y - a.y) * t1 - oy, p1z = a.z + (b.z - a.z) * t1 - oz;
        keep(s, (p0x * ux + p0y * uy + p0z * uz) / uu, (p0x * vx + p0y * vy + p0z * vz) / vv, (p1x * ux + p1y * uy + p1z * uz) / uu, (p1x * vx + p1y * vy + p1z * vz) / vv, r);
      } else {
        const px = st.centerMm.x - ox, py = st.centerMm.y - oy, pz = st.centerMm.z - oz;
        const d = px * nx + py * ny + pz * nz;
        if (Math.abs(d) > st.boundingRadiusMm) continue;
        const pu = (px * ux + py * uy + pz * uz) / uu, pv = (px * vx + py * vy + pz * vz) / vv;
        keep(s, pu, pv, pu, pv, Math.sqrt(st.boundingRadiusMm ** 2 - d * d));
      }
    }
    return n;
  }
}

/**
 * Which robot-clock instants get a frame, for a scanner running at `fps`: the first instant
 * seen gets one, then the first instant at or after each later slot of the 1/fps grid. Slots
 * that pass with no instant are skipped, not caught up (a scanner does not queue frames).
 * Driven by whoever has a clock (robot states, a test, the streamer); it holds no timer.
 */
export class FrameClock {
  readonly periodMs: number;
  /** The first frame's time; slot k is at startMs + k·periodMs (no accumulated rounding). */
  private startMs = Number.NaN;
  private nextSlot = 0;

  constructor(fps = 30) {
    checkPositive(fps, 'fps');
    this.periodMs = 1000 / fps;
  }

  /** True when a frame is due at tMs (and books it). Times going backwards never get a frame. */
  due(tMs: number): boolean {
    if (!Number.isFinite(tMs)) return false;
    if (Number.isNaN(this.startMs)) {
      this.startMs = tMs;
      this.nextSlot = 1;
      return true;
    }
    // 1 ns of slack: 6 · (1000/30) is 200.00000000000003, and a state at 200 ms is on time.
    const slot = Math.floor((tMs - this.startMs) / this.periodMs + 1e-6);
    if (slot < this.nextSlot) return false;
    this.nextSlot = slot + 1;
    return true;
  }
}

function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function configError(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_CONFIG', `ultrasound simulator: ${message}`);
}
function checkPositive(v: number, name: string): void {
  if (!(v > 0) || !Number.isFinite(v)) throw configError(`${name} must be finite and > 0, got ${v}`);
}
function checkPx(v: number, name: string): void {
  if (!Number.isInteger(v) || v <= 0 || v > 8192) throw configError(`${name} must be an integer in 1…8192, got ${v}`);
}

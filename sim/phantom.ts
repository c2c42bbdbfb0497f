// The procedural ultrasound phantom: what the simulated probe sees inside the simulated patient.
//
// Public API (for sim/index.ts):
//   createPhantom(seed, opts?)   → ProceduralPhantom: echogenicityAt(p), labelAt(p), structures
//   labelVolume(phantom, grid)   → ground-truth label map (Volume) in the base frame on any grid
//   PHANTOM_LABELS, DEFAULT_ECHOGENICITY, DEFAULT_LESION_REGION, types
//
// Everything is in the base (world) frame, millimetres, z up. The body is the robot simulator's
// torso (sim/patient.ts: the upper half of an ellipsoid on the table), so the probe touches the
// same skin the contact model pushes against. The phantom is rigid: pressing the probe in does
// not deform it, which keeps the ground truth exact for reconstruction tests.
//
// Label table (labelAt, labelVolume), with the default echogenicity (mean backscatter
// amplitude, tissue = 1; the image multiplies it by unit-mean speckle):
//   0 outside      outside the body: air, gel, the table, below the table   0
//   1 tissue       soft-tissue background                                   1
//   2 skin         the outer skinThicknessMm of the body (default 2 mm)     4     (+12 dB)
//   3 hypoLesion   hypo-echoic lesion (sphere or ellipsoid)                 0.1   (−20 dB)
//   4 hyperLesion  hyper-echoic lesion (sphere or ellipsoid)                6     (+15.6 dB)
//   5 vesselLumen  the vessel's lumen (blood: anechoic)                     0.01  (−40 dB)
//   6 vesselWall   the vessel's wall (default 0.8 mm thick)                 5     (+14 dB)
// Where shapes meet, the vessel wins over lesions, lesions over skin, skin over tissue; lesions
// are placed apart from each other and from the vessel, so this only matters for custom options.
//
// Layout (defaults, for sweeps that must see everything): with PATIENT_TORSO the skin top is at
// (450, 0, 120). Lesions lie ENTIRELY in the box x ∈ 450 ± 20, y ∈ 0 ± 36, depth 6–42 mm below
// the skin (vertical depth, skin height at the lesion's x, y), so a linear probe pointing down
// at x = 450 (64 mm wide) swept over y ∈ [−40, 40] sees all of them whole with any indentation
// up to 6 mm. There are 6: even ids hypo, odd ids hyper; radii from about 7.5 mm down to 2.3 mm
// (diameters 5–15 mm), spheres and rotated ellipsoids. The vessel is a tube of lumen radius
// 2.5–3.5 mm running roughly along y (±100 mm) 22–28 mm below the top, 24.5–27 mm to one side
// of x = 450 (outside the lesion box, inside the linear probe's ±32 mm field), slightly oblique.
// Exact shapes for a seed: `structures`.
import { quatNormalize, quatToMat3 } from '../protocols/geometry.ts';
import type { Volume, VolumeGrid } from '../protocols/imaging.ts';
import type { Quat, Vec3 } from '../protocols/robot.ts';
import { PATIENT_TORSO } from '../protocols/scene.ts';
import { skinSurfaceAt, type TorsoModel } from './patient.ts';
import { createPrng, type Prng } from './prng.ts';

export const PHANTOM_LABELS = {
  outside: 0,
  tissue: 1,
  skin: 2,
  hypoLesion: 3,
  hyperLesion: 4,
  vesselLumen: 5,
  vesselWall: 6,
} as const;
export type PhantomLabelName = keyof typeof PHANTOM_LABELS;
export type PhantomLabel = (typeof PHANTOM_LABELS)[PhantomLabelName];

/** Mean backscatter amplitude per label (tissue = 1). */
export const DEFAULT_ECHOGENICITY: Readonly<Record<PhantomLabelName, number>> = Object.freeze({
  outside: 0,
  tissue: 1,
  skin: 4,
  // Strong contrasts on purpose: the golden reconstruction test segments lesions by a threshold
  // through speckle (log-Rayleigh spread ≈ 5.6 dB), which needs ≥ 15 dB to stay clean.
  hypoLesion: 0.1,
  hyperLesion: 6,
  vesselLumen: 0.01,
  vesselWall: 5,
});

/** Where lesions go: a box around the torso top, in which each lesion must lie whole. */
export interface LesionRegion {
  /** Half extent along base x (across the body) around the torso top. */
  readonly halfWidthXMm: number;
  /** Half extent along base y (head-foot) around the torso top. */
  readonly halfLengthYMm: number;
  /** Vertical depth below the skin, shallowest and deepest lesion extent. */
  readonly minDepthMm: number;
  readonly maxDepthMm: number;
}

export const DEFAULT_LESION_REGION: LesionRegion = Object.freeze({
  halfWidthXMm: 20,
  halfLengthYMm: 36,
  minDepthMm: 6,
  maxDepthMm: 42,
});

export interface PhantomOptions {
  readonly torso?: TorsoModel;
  /** Number of lesions (default 6), alternating hypo (even ids) and hyper (odd ids). */
  readonly lesionCount?: number;
  /** 'none' leaves the vessel out (a homogeneous background for calibration tests). */
  readonly vessel?: 'auto' | 'none';
  readonly skinThicknessMm?: number;
  readonly echogenicity?: Partial<Record<PhantomLabelName, number>>;
  readonly lesionRegion?: Partial<LesionRegion>;
}

interface StructureBase {
  /** 0, 1, 2 … in the order of `structures`. */
  readonly id: number;
  /** Mean backscatter amplitude inside. */
  readonly echogenicity: number;
  /** A sphere around `centerMm` that contains the whole structure. */
  readonly boundingRadiusMm: number;
  readonly centerMm: Vec3;
}

export interface SphereLesion extends StructureBase {
  readonly shape: 'sphere';
  readonly label: 3 | 4;
  readonly radiusMm: number;
}

export interface EllipsoidLesion extends StructureBase {
  readonly shape: 'ellipsoid';
  readonly label: 3 | 4;
  /** Semi-axes along the ellipsoid's own x, y, z. */
  readonly semiAxesMm: Vec3;
  /** Base ← ellipsoid rotation. */
  readonly orientation: Quat;
}

/** A straight tube from startMm to endMm (rounded ends); label 5 inside, 6 in the wall. */
export interface VesselTube extends StructureBase {
  readonly shape: 'tube';
  readonly label: 5;
  readonly startMm: Vec3;
  readonly endMm: Vec3;
  /** Lumen radius. */
  readonly radiusMm: number;
  readonly wallMm: number;
  readonly wallEchogenicity: number;
}

export type PhantomStructure = SphereLesion | EllipsoidLesion | VesselTube;

/**
 * Flat tables the renderer and labelVolume run on. Internal to sim/ (us-* and phantom files); not
 * exported from sim/index.ts.
 *
 * A "region" is one homogeneous piece: 0 outside, 1 tissue, 2 skin, then one per lesion and two
 * per tube (lumen, wall). Each structure k has a kind (0 quadric, 1 tube) and PARAM_STRIDE
 * parameters:
 *   quadric: cx cy cz, then the 3×3 M with local = M·(p − c), inside when |local| < 1
 *   tube:    ax ay az, unit direction dx dy dz, length, lumen radius², outer radius²
 */
export interface PhantomKernel {
  readonly count: number;
  readonly kind: Uint8Array;
  readonly params: Float64Array;
  readonly region: Int32Array;
  readonly wallRegion: Int32Array;
  /** Axis-aligned bounds per structure: minX minY minZ maxX maxY maxZ. */
  readonly aabb: Float64Array;
  readonly regionLabel: Uint8Array;
  readonly regionEcho: Float64Array;
  /** Torso centre and inverse semi-axes. */
  readonly cx: number;
  readonly cy: number;
  readonly cz: number;
  readonly iax: number;
  readonly iay: number;
  readonly iaz: number;
  /** Skin test: 1 − q below this may be skin; (1 − q)² < skin4t2·|g|² is skin (see classify). */
  readonly skinPrefilter: number;
  readonly skin4t2: number;
  /** All structure indices in priority order (tubes first). */
  readonly all: Int32Array;
}

export const PARAM_STRIDE = 12;

/**
 * The region index at (x, y, z), testing only the structures cand[0 … n−1] (in priority order).
 * Hot path of the renderer: numbers in, a number out, no allocation.
 */
export function classifyRegion(k: PhantomKernel, x: number, y: number, z: number, cand: Int32Array, n: number): number {
  if (z < k.cz) return 0; // the body is the upper half of the ellipsoid; below is the table
  const ex = (x - k.cx) * k.iax, ey = (y - k.cy) * k.iay, ez = (z - k.cz) * k.iaz;
  const q = ex * ex + ey * ey + ez * ez;
  if (q >= 1) return 0;
  const p = k.params;
  for (let c = 0; c < n; c++) {
    const s = cand[c]!;
    const o = s * PARAM_STRIDE;
    const rx = x - p[o]!, ry = y - p[o + 1]!, rz = z - p[o + 2]!;
    if (k.kind[s] === 0) {
      const lx = p[o + 3]! * rx + p[o + 4]! * ry + p[o + 5]! * rz;
      const ly = p[o + 6]! * rx + p[o + 7]! * ry + p[o + 8]! * rz;
      const lz = p[o + 9]! * rx + p[o + 10]! * ry + p[o + 11]! * rz;
      if (lx * lx + ly * ly + lz * lz < 1) return k.region[s]!;
    } else {
      const dx = p[o + 3]!, dy = p[o + 4]!, dz = p[o + 5]!;
      let t = rx * dx + ry * dy + rz * dz;
      t = t < 0 ? 0 : t > p[o + 6]! ? p[o + 6]! : t;
      const wx = rx - t * dx, wy = ry - t * dy, wz = rz - t * dz;
      const d2 = wx * wx + wy * wy + wz * wz;
      if (d2 < p[o + 8]!) return d2 < p[o + 7]! ? k.region[s]! : k.wallRegion[s]!;
    }
  }
  // Distance to the skin to first order: (1 − q) / |∇q|, with ∇q = 2·g, g = (p − c)/a². Exact
  // enough for a few-mm layer (at the torso top the error is t²/240 mm) and needs no root finding.
  const oneMinusQ = 1 - q;
  if (oneMinusQ < k.skinPrefilter) {
    const gx = ex * k.iax, gy = ey * k.iay, gz = ez * k.iaz;
    if (oneMinusQ * oneMinusQ < k.skin4t2 * (gx * gx + gy * gy + gz * gz)) return 2;
  }
  return 1;
}

/** The phantom for one seed. Build it with createPhantom. */
export class ProceduralPhantom {
  readonly seed: number;
  readonly torso: TorsoModel;
  readonly skinThicknessMm: number;
  readonly lesionRegion: LesionRegion;
  readonly structures: readonly PhantomStructure[];
  /** @internal flat tables for sim/us-* and labelVolume. */
  readonly kernel: PhantomKernel;

  constructor(seed: number, structures: readonly PhantomStructure[], opts: Required<Pick<PhantomOptions, 'torso' | 'skinThicknessMm'>> & { echo: Record<PhantomLabelName, number>; lesionRegion: LesionRegion }) {
    this.seed = seed;
    this.torso = opts.torso;
    this.skinThicknessMm = opts.skinThicknessMm;
    this.lesionRegion = opts.lesionRegion;
    this.structures = structures;
    this.kernel = buildKernel(structures, opts.torso, opts.skinThicknessMm, opts.echo);
  }

  /** Mean backscatter amplitude at a point (the image adds speckle, attenuation and TGC). */
  echogenicityAt(pMm: Vec3): number {
    const k = this.kernel;
    return k.regionEcho[classifyRegion(k, pMm.x, pMm.y, pMm.z, k.all, k.count)]!;
  }

  /** The label (see the table at the top of this file) at a point. */
  labelAt(pMm: Vec3): PhantomLabel {
    const k = this.kernel;
    return k.regionLabel[classifyRegion(k, pMm.x, pMm.y, pMm.z, k.all, k.count)]! as PhantomLabel;
  }
}

function buildKernel(structures: readonly PhantomStructure[], torso: TorsoModel, skinMm: number, echo: Record<PhantomLabelName, number>): PhantomKernel {
  const n = structures.length;
  const kind = new Uint8Array(n);
  const params = new Float64Array(n * PARAM_STRIDE);
  const region = new Int32Array(n);
  const wallRegion = new Int32Array(n).fill(-1);
  const aabb = new Float64Array(n * 6);
  const labels: number[] = [PHANTOM_LABELS.outside, PHANTOM_LABELS.tissue, PHANTOM_LABELS.skin];
  const echoes: number[] = [echo.outside, echo.tissue, echo.skin];
  for (let s = 0; s < n; s++) {
    const st = structures[s]!;
    const o = s * PARAM_STRIDE;
    region[s] = labels.length;
    labels.push(st.label);
    echoes.push(st.echogenicity);
    switch (st.shape) {
      case 'sphere':
      case 'ellipsoid': {
        const c = st.centerMm;
        params[o] = c.x; params[o + 1] = c.y; params[o + 2] = c.z;
        // local = diag(1/a) · Rᵀ · (p − c), R = base ← ellipsoid.
        const a = st.shape === 'sphere' ? { x: st.radiusMm, y: st.radiusMm, z: st.radiusMm } : st.semiAxesMm;
        const r = st.shape === 'sphere' ? [1, 0, 0, 0, 1, 0, 0, 0, 1] : quatToMat3(quatNormalize(st.orientation));
        const inv = [1 / a.x, 1 / a.y, 1 / a.z];
        for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) params[o + 3 + i * 3 + j] = inv[i]! * r[j * 3 + i]!;
        // Exact half extents of a rotated ellipsoid: sqrt(Σ_j (R_ij a_j)²).
        const av = [a.x, a.y, a.z];
        const cv = [c.x, c.y, c.z];
        for (let i = 0; i < 3; i++) {
          let h2 = 0;
          for (let j = 0; j < 3; j++) h2 += (r[i * 3 + j]! * av[j]!) ** 2;
          const h = Math.sqrt(h2);
          aabb[s * 6 + i] = cv[i]! - h;
          aabb[s * 6 + 3 + i] = cv[i]! + h;
        }
        break;
      }
      case 'tube': {
        kind[s] = 1;
        const a = st.startMm, b = st.endMm;
        const len = Math.hypot(b.x - a.x, b.y - a.y, b.z - a.z);
        const outer = st.radiusMm + st.wallMm;
        params[o] = a.x; params[o + 1] = a.y; params[o + 2] = a.z;
        params[o + 3] = len === 0 ? 1 : (b.x - a.x) / len;
        params[o + 4] = len === 0 ? 0 : (b.y - a.y) / len;
        params[o + 5] = len === 0 ? 0 : (b.z - a.z) / len;
        params[o + 6] = len;
        params[o + 7] = st.radiusMm ** 2;
        params[o + 8] = outer ** 2;
        wallRegion[s] = labels.length;
        labels.push(PHANTOM_LABELS.vesselWall);
        echoes.push(st.wallEchogenicity);
        aabb.set([Math.min(a.x, b.x) - outer, Math.min(a.y, b.y) - outer, Math.min(a.z, b.z) - outer], s * 6);
        aabb.set([Math.max(a.x, b.x) + outer, Math.max(a.y, b.y) + outer, Math.max(a.z, b.z) + outer], s * 6 + 3);
        break;
      }
    }
  }
  const order = [...structures.keys()].sort((i, j) => kind[j]! - kind[i]! || i - j);
  const ax = torso.semiAxesMm;
  return {
    count: n,
    kind,
    params,
    region,
    wallRegion,
    aabb,
    regionLabel: Uint8Array.from(labels),
    regionEcho: Float64Array.from(echoes),
    cx: torso.centerMm.x,
    cy: torso.centerMm.y,
    cz: torso.centerMm.z,
    iax: 1 / ax.x,
    iay: 1 / ax.y,
    iaz: 1 / ax.z,
    // Inside the ellipsoid |g| ≤ 1/min(a), so 1 − q ≥ 2t/min(a) can never be skin.
    skinPrefilter: (2 * skinMm) / Math.min(ax.x, ax.y, ax.z),
    skin4t2: 4 * skinMm * skinMm,
    all: Int32Array.from(order),
  };
}

/** Distance from p to the segment a–b. */
function segmentDistance(p: Vec3, a: Vec3, b: Vec3): number {
  const abx = b.x - a.x, aby = b.y - a.y, abz = b.z - a.z;
  const l2 = abx * abx + aby * aby + abz * abz;
  let t = l2 === 0 ? 0 : ((p.x - a.x) * abx + (p.y - a.y) * aby + (p.z - a.z) * abz) / l2;
  t = Math.max(0, Math.min(1, t));
  return Math.hypot(p.x - a.x - t * abx, p.y - a.y - t * aby, p.z - a.z - t * abz);
}

function randomQuat(prng: Prng): Quat {
  // Four Gaussians, normalised: uniform on the rotation group.
  return quatNormalize({ x: prng.gaussian(), y: prng.gaussian(), z: prng.gaussian(), w: prng.gaussian() });
}

const between = (prng: Prng, lo: number, hi: number): number => lo + (hi - lo) * prng.next();

const MAX_PLACEMENT_TRIES = 5000;
/** Clearance between placed structures, so each lesion is segmentable on its own. */
const GAP_MM = 2;

/**
 * The phantom for a seed: the same seed and options give the same structures, bit for bit.
 * Throws a RangeError when the lesions cannot be placed in the region (options too crowded).
 */
export function createPhantom(seed: number, opts: PhantomOptions = {}): ProceduralPhantom {
  const torso = opts.torso ?? PATIENT_TORSO;
  const region: LesionRegion = { ...DEFAULT_LESION_REGION, ...opts.lesionRegion };
  const echo = { ...DEFAULT_ECHOGENICITY, ...opts.echogenicity };
  const skinThicknessMm = opts.skinThicknessMm ?? 2;
  const lesionCount = opts.lesionCount ?? 6;
  if (!Number.isInteger(lesionCount) || lesionCount < 0) throw new RangeError(`lesionCount must be a non-negative integer, got ${lesionCount}`);
  if (!(skinThicknessMm >= 0)) throw new RangeError(`skinThicknessMm must be ≥ 0, got ${skinThicknessMm}`);
  for (const [name, v] of Object.entries(echo)) {
    if (!(v >= 0) || !Number.isFinite(v)) throw new RangeError(`echogenicity.${name} must be finite and ≥ 0, got ${v}`);
  }
  const prng = createPrng(seed);
  const topX = torso.centerMm.x, topY = torso.centerMm.y;
  const skinZ = (x: number, y: number): number => skinSurfaceAt(x, y, torso)?.zMm ?? torso.centerMm.z;

  const lesions: (SphereLesion | EllipsoidLesion)[] = [];
  let vessel: VesselTube | null = null;

  if (opts.vessel !== 'none') {
    const side = prng.next() < 0.5 ? -1 : 1;
    const radiusMm = between(prng, 2.5, 3.5);
    const wallMm = 0.8;
    const xMid = topX + side * (region.halfWidthXMm + between(prng, 4.5, 7));
    const zMid = skinZ(topX, topY) - between(prng, 22, 28);
    const jx = between(prng, -3, 3), jz = between(prng, -3, 3);
    const startMm = { x: xMid - jx, y: topY - 100, z: zMid - jz };
    const endMm = { x: xMid + jx, y: topY + 100, z: zMid + jz };
    vessel = {
      id: 0, // renumbered below
      shape: 'tube',
      label: PHANTOM_LABELS.vesselLumen,
      startMm,
      endMm,
      radiusMm,
      wallMm,
      echogenicity: echo.vesselLumen,
      wallEchogenicity: echo.vesselWall,
      centerMm: { x: xMid, y: topY, z: zMid },
      boundingRadiusMm: Math.hypot(jx, 100, jz) + radiusMm + wallMm,
    };
  }

  for (let i = 0; i < lesionCount; i++) {
    const label = i % 2 === 0 ? PHANTOM_LABELS.hypoLesion : PHANTOM_LABELS.hyperLesion;
    const shape = Math.floor(i / 2) % 2 === 0 ? 'sphere' : 'ellipsoid';
    // Largest first (easier packing), from 7 mm down to 2.5 mm, ±7 % jitter: diameters ≈ 5–15 mm.
    const ladder = lesionCount === 1 ? 5 : 7 - (4.5 * i) / (lesionCount - 1);
    const rb = ladder * between(prng, 0.93, 1.07);
    const semi: Vec3 = shape === 'sphere' ? { x: rb, y: rb, z: rb } : { x: rb, y: rb * between(prng, 0.5, 0.8), z: rb * between(prng, 0.4, 0.7) };
    const orientation = shape === 'sphere' ? { x: 0, y: 0, z: 0, w: 1 } : randomQuat(prng);
    let placed: Vec3 | null = null;
    const fits = region.halfWidthXMm > rb && region.halfLengthYMm > rb && region.maxDepthMm - region.minDepthMm > 2 * rb;
    for (let tries = 0; fits && tries < MAX_PLACEMENT_TRIES && placed === null; tries++) {
      const x = topX + between(prng, -1, 1) * (region.halfWidthXMm - rb);
      const y = topY + between(prng, -1, 1) * (region.halfLengthYMm - rb);
      const depth = between(prng, region.minDepthMm + rb, region.maxDepthMm - rb);
      const c = { x, y, z: skinZ(x, y) - depth };
      const clear =
        lesions.every((l) => Math.hypot(l.centerMm.x - c.x, l.centerMm.y - c.y, l.centerMm.z - c.z) >= l.boundingRadiusMm + rb + GAP_MM) &&
        (vessel === null || segmentDistance(c, vessel.startMm, vessel.endMm) >= vessel.radiusMm + vessel.wallMm + rb + GAP_MM);
      if (clear) placed = c;
    }
    if (placed === null) throw new RangeError(`phantom seed ${seed}: no room for lesion ${i} (radius ${rb.toFixed(1)} mm) in the lesion region`);
    const echogenicity = label === PHANTOM_LABELS.hypoLesion ? echo.hypoLesion : echo.hyperLesion;
    lesions.push(
      shape === 'sphere'
        ? { id: i, shape, label, centerMm: placed, radiusMm: rb, echogenicity, boundingRadiusMm: rb }
        : { id: i, shape, label, centerMm: placed, semiAxesMm: semi, orientation, echogenicity, boundingRadiusMm: rb },
    );
  }
  const structures: PhantomStructure[] = [...lesions];
  if (vessel !== null) structures.push({ ...vessel, id: lesions.length });
  return new ProceduralPhantom(seed, structures, { torso, skinThicknessMm, echo, lesionRegion: region });
}

/** Largest label volume labelVolume will allocate (voxels): 1 GiB of uint8. */
const MAX_LABEL_VOXELS = 2 ** 30;

/**
 * The ground-truth label map on a grid in the base frame: voxel (i, j, k) holds labelAt of its
 * centre, originMm + (i·sx, j·sy, k·sz). Exactly the classification the renderer uses.
 */
export function labelVolume(phantom: ProceduralPhantom, grid: VolumeGrid): Volume {
  const [nx, ny, nz] = grid.dims;
  const o = grid.originMm, sp = grid.spacingMm;
  if (![nx, ny, nz].every((d) => Number.isInteger(d) && d > 0)) throw new RangeError(`grid dims must be positive integers, got ${grid.dims.join('×')}`);
  if (![o.x, o.y, o.z, sp.x, sp.y, sp.z].every(Number.isFinite)) throw new RangeError('grid origin and spacing must be finite');
  if (nx * ny * nz > MAX_LABEL_VOXELS) throw new RangeError(`grid of ${nx * ny * nz} voxels is above the ${MAX_LABEL_VOXELS} limit`);
  const k = phantom.kernel;
  const data = new Uint8Array(nx * ny * nz);
  // Cull structures by their bounds per slice and per row: the test per voxel stays short.
  const slice = new Int32Array(k.count);
  const row = new Int32Array(k.count);
  const bb = k.aabb;
  for (let iz = 0; iz < nz; iz++) {
    const z = o.z + iz * sp.z;
    let ns = 0;
    for (let c = 0; c < k.count; c++) {
      const s = k.all[c]!;
      if (z >= bb[s * 6 + 2]! && z <= bb[s * 6 + 5]!) slice[ns++] = s;
    }
    for (let iy = 0; iy < ny; iy++) {
      const y = o.y + iy * sp.y;
      let nr = 0;
      for (let c = 0; c < ns; c++) {
        const s = slice[c]!;
        if (y >= bb[s * 6 + 1]! && y <= bb[s * 6 + 4]!) row[nr++] = s;
      }
      const base = (iz * ny + iy) * nx;
      for (let ix = 0; ix < nx; ix++) {
        data[base + ix] = k.regionLabel[classifyRegion(k, o.x + ix * sp.x, y, z, row, nr)]!;
      }
    }
  }
  return { grid, data };
}

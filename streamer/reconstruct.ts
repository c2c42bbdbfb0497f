// Volume reconstruction: tracked 2D B-mode frames → a 3D uint8 volume in the Reference frame.
//
// The algorithm is the PLUS toolkit's (docs/algorithms/AlgorithmVolumeReconstruction.md in
// PlusToolkit/PlusLib; the paste loop now lives in IGSIO's vtkIGSIOPasteSliceIntoVolume*):
// every pixel of every frame is mapped through ImageToReference into the voxel lattice and
// "pasted" into the nearest voxel (NEAREST_NEIGHBOR) or splatted into the 8 surrounding voxels
// with trilinear weights (LINEAR), then compounded (MEAN, MAXIMUM, LATEST). Option names are
// PLUS's `VolumeReconstruction` attribute names in camelCase, so a PLUS config maps 1:1.
//
// Where we differ from PLUS, on purpose:
// - Accumulators never saturate. PLUS keeps a running uint8 mean and a uint16 weight capped at
//   65535 (≈255 hits), after which it blends with fixed 1/256 weights. We keep exact sums:
//   NN+MEAN a uint32 sum and a uint32 count per voxel (exact up to 16.8 M hits of 255 per voxel),
//   LINEAR+MEAN a float64 sum and a float64 weight. The uint8 output is round(sum / weight),
//   computed when asked; PLUS truncates at each insertion, so it can read up to ~1 level lower.
//   `plusRounding: true` opts into PLUS's own per-insertion state instead (bit-compatibility
//   with PLUS; it saturates and depends on insertion order, as PLUS does).
// - Determinism: the same frames give the same bytes with 1 or N workers (`reconstructParallel`
//   splits the volume into z slabs; every worker walks every frame in order, clipped to its slab,
//   so each voxel sees its contributions in frame order). PLUS splits the frame between threads
//   and documents that its multi-threaded result varies.
// - Clipping is computed once per frame size, as runs of pixels per row, with the rule of the
//   PLUS paste path that `optimization` selects (fan edges differ by about a pixel between them).
// - Each pixel's position is computed as rowBase + u·step (never accumulated), and the
//   in-volume pixel span of each row is solved once per row, so the inner loop has no bounds
//   checks and no matrix multiply.
import type { Worker } from 'node:worker_threads';
import { Eco3dError } from '../protocols/errors.ts';
import { startTsWorker } from '../protocols/ts-worker.ts';
import type { Mat4, TrackedFrame, Volume, VolumeGrid } from '../protocols/imaging.ts';

export type Interpolation = 'NEAREST_NEIGHBOR' | 'LINEAR';
export type CompoundingMode = 'MEAN' | 'MAXIMUM' | 'LATEST';
export type Optimization = 'NONE' | 'PARTIAL' | 'FULL';
export type Triple = readonly [number, number, number];
export type Pair = readonly [number, number];
export type Extent6 = readonly [number, number, number, number, number, number];

/**
 * Reconstruction options. Field names are PLUS's `VolumeReconstruction` XML attributes in
 * camelCase (OutputSpacing → outputSpacing …); units are PLUS's: millimetres in the Reference
 * frame, pixels in the image.
 */
export interface ReconstructionOptions {
  /** PLUS `OutputSpacing`, mm (x, y, z). Required. */
  readonly outputSpacing: Triple;
  /**
   * PLUS `OutputOrigin`, mm: position of voxel index (0, 0, 0) of the extent's coordinate system.
   * Used only with `outputExtent`; default (0, 0, 0).
   */
  readonly outputOrigin?: Triple;
  /**
   * PLUS `OutputExtent` (x0 x1 y0 y1 z0 z1, inclusive voxel indices). When given, the grid is
   * explicit: first voxel centre at outputOrigin + (x0, y0, z0)·spacing, dims x1−x0+1 …. When
   * absent, the grid is computed from the frames (`computeOutputGrid`), as PLUS's
   * VolumeReconstructor application always does.
   */
  readonly outputExtent?: Extent6;
  /** PLUS `Interpolation`; default NEAREST_NEIGHBOR. */
  readonly interpolation?: Interpolation;
  /** PLUS `CompoundingMode`; default MEAN. */
  readonly compoundingMode?: CompoundingMode;
  /** PLUS `ClipRectangleOrigin`, pixels (x = column, y = row); default (0, 0). */
  readonly clipRectangleOrigin?: Pair;
  /**
   * PLUS `ClipRectangleSize`, pixels. (0, 0) or absent = the whole frame. As in PLUS, the
   * rectangle includes the column origin+size and the row origin+size (clamped to the image).
   */
  readonly clipRectangleSize?: Pair;
  /** PLUS `FanAnglesDeg` (left, right edge of the fan, degrees from the image's +y axis); (0, 0) = no fan clipping. */
  readonly fanAnglesDeg?: Pair;
  /** PLUS `FanOriginPixel`; default (0, 0). */
  readonly fanOriginPixel?: Pair;
  /** PLUS `FanRadiusStartPixel`; default 0. */
  readonly fanRadiusStartPixel?: number;
  /** PLUS `FanRadiusStopPixel`; default 500. */
  readonly fanRadiusStopPixel?: number;
  /**
   * PLUS `Optimization` (default FULL, as PLUS). Our results depend on it only where PLUS's do:
   * fan clipping. NONE keeps the pixels that satisfy PLUS's per-pixel fan predicate (angles and
   * radii inclusive); FULL and PARTIAL (PLUS's optimized paste path) keep, per row, the span from
   * ⌈left edge + 1⌉ to ⌊right edge − 1⌋ of the fan lines and of the stop radius, minus
   * ⌈…+1⌉…⌊…−1⌋ of the start radius: about one pixel less at each edge. (PLUS's FULL also uses
   * 14-bit fixed-point positions; we keep float64.)
   */
  readonly optimization?: Optimization;
  /**
   * PLUS `PixelRejectionThreshold`: pixels darker than this are not pasted. As PLUS's paste loop
   * (`value < threshold` ⇒ skip), a pixel equal to the threshold is kept. Absent = disabled.
   */
  readonly pixelRejectionThreshold?: number;
  /** PLUS `SkipInterval`: use frames 0, N, 2N, … of the input; default 1. */
  readonly skipInterval?: number;
  /** Edge of a streaming brick in voxels (cube); default 32. */
  readonly brickSize?: number;
  /** Refuse grids whose reconstruction buffers need more than this; default 1 GiB. */
  readonly memoryBudgetBytes?: number;
  /**
   * PLUS-exact MEAN (default false; not a PLUS attribute: PLUS always does this). When true, MEAN
   * compounding keeps PLUS's per-voxel state instead of exact sums: an 8-bit running mean and a
   * 16-bit weight in 1/256 units, both re-quantized at every insertion, in the order PLUS inserts
   * (frame, row, column). NEAREST_NEIGHBOR: mean ← ⌊(256·p + mean·w) / (w + 256)⌋, w ← w + 256;
   * past 255 hits (w > 65279) the voxel is saturated and follows mean ← ⌊(p + 255·mean) / 256⌋.
   * LINEAR, per corner of trilinear weight f ≠ 0: r = w / 256, a = f + r,
   * mean ← round((f·p + r·mean) / a), w ← round(256·a) capped at 65535. Positions are rounded
   * (NN) and floored (LINEAR) as PLUS does, after snapping them to 1/65536 voxel.
   * The result depends on insertion order and saturates, as PLUS's does (why it is not the
   * default); the bytes are still the same for 1 or N workers. Exact where PLUS computes in
   * doubles (Optimization NONE, PARTIAL); PLUS's FULL path computes positions and LINEAR weights in
   * 14-bit fixed point, which is not emulated. Refused for MAXIMUM/LATEST (PLUS rounds nothing there).
   */
  readonly plusRounding?: boolean;
}

export const DEFAULT_BRICK_SIZE = 32;
export const DEFAULT_MEMORY_BUDGET_BYTES = 1024 * 1024 * 1024;

/** Options with PLUS's defaults filled in and validated. */
export interface ResolvedReconstructionOptions {
  readonly outputSpacing: Triple;
  readonly outputOrigin: Triple;
  readonly outputExtent: Extent6 | undefined;
  readonly interpolation: Interpolation;
  readonly compoundingMode: CompoundingMode;
  readonly clipRectangleOrigin: Pair;
  readonly clipRectangleSize: Pair;
  readonly fanAnglesDeg: Pair;
  readonly fanOriginPixel: Pair;
  readonly fanRadiusStartPixel: number;
  readonly fanRadiusStopPixel: number;
  readonly optimization: Optimization;
  readonly pixelRejectionThreshold: number | undefined;
  readonly skipInterval: number;
  readonly brickSize: number;
  readonly memoryBudgetBytes: number;
  readonly plusRounding: boolean;
}

function bad(message: string, details?: Record<string, unknown>): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message, details === undefined ? undefined : { details });
}

function finiteTuple<T extends readonly number[]>(name: string, v: T | undefined, len: number, dflt: T): T {
  if (v === undefined) return dflt;
  if (v.length !== len || !v.every((x) => Number.isFinite(x))) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `reconstruction option ${name} must be ${len} finite numbers, got [${v.join(', ')}]`);
  }
  return v;
}

export function resolveReconstructionOptions(o: ReconstructionOptions): ResolvedReconstructionOptions {
  const outputSpacing = finiteTuple('outputSpacing', o.outputSpacing, 3, o.outputSpacing);
  if (!outputSpacing.every((s) => s > 0)) throw bad(`reconstruction option outputSpacing must be > 0 mm, got [${outputSpacing.join(', ')}]`);
  const outputExtent = o.outputExtent === undefined ? undefined : finiteTuple('outputExtent', o.outputExtent, 6, o.outputExtent);
  if (outputExtent !== undefined) {
    for (let a = 0; a < 3; a++) {
      const lo = outputExtent[2 * a]!;
      const hi = outputExtent[2 * a + 1]!;
      if (!Number.isInteger(lo) || !Number.isInteger(hi) || hi < lo) {
        throw bad(`reconstruction option outputExtent must be integer pairs lo ≤ hi, got [${outputExtent.join(', ')}]`);
      }
    }
  }
  const skipInterval = o.skipInterval ?? 1;
  if (!Number.isInteger(skipInterval) || skipInterval < 1) throw bad(`reconstruction option skipInterval must be an integer ≥ 1, got ${skipInterval}`);
  const brickSize = o.brickSize ?? DEFAULT_BRICK_SIZE;
  if (!Number.isInteger(brickSize) || brickSize < 1) throw bad(`reconstruction option brickSize must be an integer ≥ 1, got ${brickSize}`);
  const memoryBudgetBytes = o.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES;
  if (!(memoryBudgetBytes > 0)) throw bad(`reconstruction option memoryBudgetBytes must be > 0, got ${memoryBudgetBytes}`);
  const interpolation = o.interpolation ?? 'NEAREST_NEIGHBOR';
  if (interpolation !== 'NEAREST_NEIGHBOR' && interpolation !== 'LINEAR') throw bad(`unknown interpolation ${String(interpolation)} (NEAREST_NEIGHBOR or LINEAR)`);
  const compoundingMode = o.compoundingMode ?? 'MEAN';
  if (compoundingMode !== 'MEAN' && compoundingMode !== 'MAXIMUM' && compoundingMode !== 'LATEST') {
    throw bad(`unknown compoundingMode ${String(compoundingMode)} (MEAN, MAXIMUM or LATEST)`);
  }
  const optimization = o.optimization ?? 'FULL';
  if (optimization !== 'NONE' && optimization !== 'PARTIAL' && optimization !== 'FULL') throw bad(`unknown optimization ${String(optimization)} (NONE, PARTIAL or FULL)`);
  const thr = o.pixelRejectionThreshold;
  if (thr !== undefined && Number.isNaN(thr)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'reconstruction option pixelRejectionThreshold is NaN');
  const plusRounding = o.plusRounding ?? false;
  if (typeof plusRounding !== 'boolean') throw bad(`reconstruction option plusRounding must be true or false, got ${String(plusRounding)}`);
  if (plusRounding && compoundingMode !== 'MEAN') {
    throw bad(
      `reconstruction option plusRounding applies to MEAN compounding only (PLUS re-rounds a running mean; ${compoundingMode} keeps pixel values as they are): ` +
        `drop plusRounding or use compoundingMode MEAN`,
      { option: 'plusRounding', compoundingMode },
    );
  }
  return {
    outputSpacing,
    outputOrigin: finiteTuple('outputOrigin', o.outputOrigin, 3, [0, 0, 0] as const),
    outputExtent,
    interpolation,
    compoundingMode,
    clipRectangleOrigin: finiteTuple('clipRectangleOrigin', o.clipRectangleOrigin, 2, [0, 0] as const),
    clipRectangleSize: finiteTuple('clipRectangleSize', o.clipRectangleSize, 2, [0, 0] as const),
    fanAnglesDeg: finiteTuple('fanAnglesDeg', o.fanAnglesDeg, 2, [0, 0] as const),
    fanOriginPixel: finiteTuple('fanOriginPixel', o.fanOriginPixel, 2, [0, 0] as const),
    fanRadiusStartPixel: o.fanRadiusStartPixel ?? 0,
    fanRadiusStopPixel: o.fanRadiusStopPixel ?? 500,
    optimization,
    pixelRejectionThreshold: thr,
    skipInterval,
    brickSize,
    memoryBudgetBytes,
    plusRounding,
  };
}

// ---------------------------------------------------------------------------------------------
// Output grid

/** The clipped frame rectangle used for the automatic extent, in pixel coordinates (inclusive). */
function clippedCornerBox(width: number, height: number, o: ResolvedReconstructionOptions): [number, number, number, number] {
  let minX = 0;
  let maxX = width - 1;
  let minY = 0;
  let maxY = height - 1;
  if (o.clipRectangleSize[0] > 0 && o.clipRectangleSize[1] > 0) {
    minX = Math.max(minX, o.clipRectangleOrigin[0]);
    maxX = Math.min(maxX, o.clipRectangleOrigin[0] + o.clipRectangleSize[0]);
    minY = Math.max(minY, o.clipRectangleOrigin[1]);
    maxY = Math.min(maxY, o.clipRectangleOrigin[1] + o.clipRectangleSize[1]);
  }
  return [minX, maxX, minY, maxY];
}

/**
 * The automatic output grid, PLUS's rule (vtkIGSIOVolumeReconstructor::SetOutputExtentFromFrameList
 * + AddImageToExtent), so a PLUS user gets the same grid:
 * 1. For every frame (all of them: SkipInterval does not apply here, as in PLUS), take the four
 *    corners of the clipped image rectangle in pixels — (minX, minY), (minX, maxY), (maxX, minY),
 *    (maxX, maxY) with minX = max(0, clipOriginX), maxX = min(width−1, clipOriginX+clipSizeX)
 *    (the whole image 0…width−1 when no clip rectangle) — and map them through ImageToReference.
 *    Fan clipping does not shrink the box.
 * 2. The bounding box of all corners, [min, max] per axis, in Reference mm.
 * 3. origin = min (the centre of voxel 0), spacing = outputSpacing,
 *    dims = round((max − min) / spacing) + 1 per axis.
 * (PLUS's optional RecomputeOutputSpacing is not supported.)
 */
export function computeOutputGrid(frames: Iterable<TrackedFrame>, options: ReconstructionOptions): VolumeGrid {
  const o = resolveReconstructionOptions(options);
  const lo = [Infinity, Infinity, Infinity];
  const hi = [-Infinity, -Infinity, -Infinity];
  let n = 0;
  for (const f of frames) {
    const m = f.imageToReference;
    checkMatrix(m, f.index);
    const [minX, maxX, minY, maxY] = clippedCornerBox(f.width, f.height, o);
    for (const [px, py] of [[minX, minY], [minX, maxY], [maxX, minY], [maxX, maxY]] as const) {
      for (let a = 0; a < 3; a++) {
        const v = m[a * 4]! * px + m[a * 4 + 1]! * py + m[a * 4 + 3]!;
        if (v < lo[a]!) lo[a] = v;
        if (v > hi[a]!) hi[a] = v;
      }
    }
    n++;
  }
  if (n === 0) throw bad('cannot compute the output grid: no frames');
  const s = o.outputSpacing;
  return {
    originMm: { x: lo[0]!, y: lo[1]!, z: lo[2]! },
    spacingMm: { x: s[0], y: s[1], z: s[2] },
    dims: [0, 1, 2].map((a) => Math.round((hi[a]! - lo[a]!) / s[a]!) + 1) as unknown as [number, number, number],
  };
}

/** The explicit grid of `outputOrigin` + `outputExtent` + `outputSpacing`. */
export function gridFromExtent(options: ReconstructionOptions): VolumeGrid {
  const o = resolveReconstructionOptions(options);
  const e = o.outputExtent;
  if (e === undefined) throw bad('gridFromExtent needs outputExtent');
  const s = o.outputSpacing;
  const org = o.outputOrigin;
  return {
    originMm: { x: org[0] + e[0] * s[0], y: org[1] + e[2] * s[1], z: org[2] + e[4] * s[2] },
    spacingMm: { x: s[0], y: s[1], z: s[2] },
    dims: [e[1] - e[0] + 1, e[3] - e[2] + 1, e[5] - e[4] + 1],
  };
}

/** The grid the options ask for: explicit when `outputExtent` is set, else from the frames. */
export function outputGridFor(options: ReconstructionOptions, frames?: Iterable<TrackedFrame>): VolumeGrid {
  if (options.outputExtent !== undefined) return gridFromExtent(options);
  if (frames === undefined) throw bad('the output grid needs outputExtent (live reconstruction) or the frames (automatic extent)');
  return computeOutputGrid(frames, options);
}

// ---------------------------------------------------------------------------------------------
// Memory

/** Bytes per voxel of the accumulators for these options. */
function accumulatorBytesPerVoxel(o: { interpolation: Interpolation; compoundingMode: CompoundingMode; plusRounding: boolean }): number {
  if (o.compoundingMode !== 'MEAN') return 2; // value + touched, uint8 each
  if (o.plusRounding) return 4; // PLUS's running mean + weight, uint16 each
  return o.interpolation === 'NEAREST_NEIGHBOR' ? 8 : 16; // uint32 sum+count | float64 sum+weight
}

export interface MemoryEstimate {
  readonly voxels: number;
  readonly accumulatorBytes: number;
  /** uint8 volume + uint8 coverage mask produced on request. */
  readonly outputBytes: number;
  readonly totalBytes: number;
}

/** What a reconstruction on this grid will allocate, computed before allocating anything. */
export function estimateReconstructionBytes(grid: VolumeGrid, options: ReconstructionOptions): MemoryEstimate {
  const o = resolveReconstructionOptions(options);
  const voxels = grid.dims[0] * grid.dims[1] * grid.dims[2];
  const accumulatorBytes = voxels * accumulatorBytesPerVoxel(o);
  const outputBytes = voxels * 2;
  const b = o.brickSize;
  const bricks = Math.ceil(grid.dims[0] / b) * Math.ceil(grid.dims[1] / b) * Math.ceil(grid.dims[2] / b);
  return { voxels, accumulatorBytes, outputBytes, totalBytes: accumulatorBytes + outputBytes + bricks * 5 };
}

const MIB = 1024 * 1024;

function checkGrid(grid: VolumeGrid): void {
  const d = grid.dims;
  if (!d.every((n) => Number.isInteger(n) && n >= 1)) throw bad(`output grid dims must be integers ≥ 1, got ${d.join('×')}`);
  const s = grid.spacingMm;
  const org = grid.originMm;
  if (![s.x, s.y, s.z, org.x, org.y, org.z].every(Number.isFinite) || !(s.x > 0 && s.y > 0 && s.z > 0)) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'output grid spacing must be finite and > 0 and its origin finite');
  }
}

function checkBudget(grid: VolumeGrid, options: ReconstructionOptions, budget: number): void {
  const est = estimateReconstructionBytes(grid, options);
  if (est.totalBytes <= budget && est.voxels <= 2 ** 31 - 1) return;
  const [nx, ny, nz] = grid.dims;
  const s = grid.spacingMm;
  const o = resolveReconstructionOptions(options);
  const perVoxel = accumulatorBytesPerVoxel(o) + 2;
  const factor = Math.cbrt(est.totalBytes / budget);
  throw new Eco3dError(
    'ECO3D_ERR_BAD_REQUEST',
    `reconstruction volume too large: ${nx}×${ny}×${nz} voxels at ${s.x}×${s.y}×${s.z} mm needs ` +
      `${(est.totalBytes / MIB).toFixed(0)} MiB (${perVoxel} bytes/voxel for ${o.interpolation}+${o.compoundingMode}${o.plusRounding ? '+plusRounding' : ''}), ` +
      `over the ${(budget / MIB).toFixed(0)} MiB budget. Increase outputSpacing (about ×${factor.toFixed(2)} fits), ` +
      `reduce outputExtent or the clip rectangle, use MAXIMUM/LATEST compounding (2 bytes/voxel), or raise memoryBudgetBytes.`,
    { details: { neededBytes: est.totalBytes, budgetBytes: budget, dims: [nx, ny, nz], spacingMm: [s.x, s.y, s.z] } },
  );
}

function checkMatrix(m: Mat4, frameIndex: number): void {
  if (m.length !== 16) throw bad(`frame ${frameIndex}: imageToReference must have 16 numbers, got ${m.length}`);
  for (let i = 0; i < 16; i++) {
    if (!Number.isFinite(m[i]!)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `frame ${frameIndex}: imageToReference[${i}] is ${m[i]}`);
  }
  if (Math.abs(m[12]!) > 1e-9 || Math.abs(m[13]!) > 1e-9 || Math.abs(m[14]!) > 1e-9 || Math.abs(m[15]! - 1) > 1e-9) {
    throw bad(`frame ${frameIndex}: imageToReference is not affine (last row ${m[12]} ${m[13]} ${m[14]} ${m[15]})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Clipping: per frame size, the pixel runs [start, end] of each row that pass the clip rectangle
// and the fan (PLUS's per-pixel predicates).

interface RowRuns {
  /** runs of row v are runs[rowStart[v] .. rowStart[v+1]) as (start, end) pairs, inclusive. */
  readonly rowStart: Int32Array;
  readonly runs: Int32Array;
  /** Bounding box of all runs (u0 > u1 when there is none). */
  readonly u0: number;
  readonly u1: number;
  readonly v0: number;
  readonly v1: number;
}

function buildRowRuns(width: number, height: number, o: ResolvedReconstructionOptions): RowRuns {
  let x0 = 0;
  let x1 = width - 1;
  let y0 = 0;
  let y1 = height - 1;
  if (o.clipRectangleSize[0] > 0 && o.clipRectangleSize[1] > 0) {
    // PLUS GetClipExtent: [ceil(origin), floor(origin + size)], clamped to the image.
    const cx0 = Math.ceil(o.clipRectangleOrigin[0]);
    const cx1 = Math.floor(o.clipRectangleOrigin[0] + o.clipRectangleSize[0]);
    const cy0 = Math.ceil(o.clipRectangleOrigin[1]);
    const cy1 = Math.floor(o.clipRectangleOrigin[1] + o.clipRectangleSize[1]);
    x0 = Math.max(x0, Math.min(cx0, cx1));
    x1 = Math.min(x1, Math.max(cx0, cx1));
    y0 = Math.max(y0, Math.min(cy0, cy1));
    y1 = Math.min(y1, Math.max(cy0, cy1));
  }
  let tanL = Math.tan((o.fanAnglesDeg[0] * Math.PI) / 180);
  let tanR = Math.tan((o.fanAnglesDeg[1] * Math.PI) / 180);
  if (tanL > tanR) [tanL, tanR] = [tanR, tanL];
  const fan = tanL !== 0 || tanR !== 0;
  const fox = o.fanOriginPixel[0];
  const foy = o.fanOriginPixel[1];
  const r0sq = o.fanRadiusStartPixel * o.fanRadiusStartPixel;
  const r1sq = o.fanRadiusStopPixel * o.fanRadiusStopPixel;
  const inFan = (u: number, v: number): boolean => {
    const x = u - fox;
    const y = v - foy;
    if (y < 0 || x / y < tanL || x / y > tanR) return false;
    const d2 = x * x + y * y;
    return !(d2 < r0sq || d2 > r1sq);
  };
  const rowStart = new Int32Array(height + 1);
  const runs: number[] = [];
  for (let v = 0; v < height; v++) {
    rowStart[v] = runs.length;
    if (v < y0 || v > y1) continue;
    if (!fan) {
      if (x0 <= x1) runs.push(x0, x1);
      continue;
    }
    if (o.optimization !== 'NONE') {
      // PLUS's optimized (FULL/PARTIAL) path: per row, the span strictly inside the fan lines and
      // the stop radius, trimmed by one pixel at each edge, minus the span inside the start radius.
      const y = v - foy;
      let s = Math.max(x0, Math.ceil(tanL * y + fox + 1));
      let e = Math.min(x1, Math.floor(tanR * y + fox - 1));
      const d1 = r1sq - y * y;
      if (d1 < 0) continue;
      const dx1 = Math.sqrt(d1);
      s = Math.max(s, Math.ceil(fox - dx1 + 1));
      e = Math.min(e, Math.floor(fox + dx1 - 1));
      if (s > e) continue;
      const d0 = r0sq - y * y;
      if (d0 > 0) {
        const dx0 = Math.sqrt(d0);
        const k0 = Math.ceil(fox - dx0 + 1);
        const k1 = Math.floor(fox + dx0 - 1);
        if (k0 < s) s = Math.max(s, k1 + 1);
        else if (k1 > e) e = Math.min(e, k0 - 1);
        else {
          if (s <= k0 - 1) runs.push(s, k0 - 1);
          if (k1 + 1 <= e) runs.push(k1 + 1, e);
          continue;
        }
      }
      if (s <= e) runs.push(s, e);
      continue;
    }
    let open = -1;
    for (let u = x0; u <= x1; u++) {
      const ok = inFan(u, v);
      if (ok && open < 0) open = u;
      if (!ok && open >= 0) {
        runs.push(open, u - 1);
        open = -1;
      }
    }
    if (open >= 0) runs.push(open, x1);
  }
  rowStart[height] = runs.length;
  let u0 = Infinity;
  let u1 = -Infinity;
  let v0 = Infinity;
  let v1 = -Infinity;
  for (let v = 0; v < height; v++) {
    for (let r = rowStart[v]!; r < rowStart[v + 1]!; r += 2) {
      u0 = Math.min(u0, runs[r]!);
      u1 = Math.max(u1, runs[r + 1]!);
      v0 = Math.min(v0, v);
      v1 = Math.max(v1, v);
    }
  }
  return { rowStart, runs: Int32Array.from(runs), u0, u1, v0, v1 };
}

// ---------------------------------------------------------------------------------------------
// The kernel (shared by the main thread and the workers, so both produce the same bytes).

/** Accumulator layouts. */
export type AccumulatorKind = 'nn-mean' | 'linear-mean' | 'plus-mean' | 'keep';

function accumulatorKind(o: { interpolation: Interpolation; compoundingMode: CompoundingMode; plusRounding: boolean }): AccumulatorKind {
  if (o.compoundingMode !== 'MEAN') return 'keep';
  if (o.plusRounding) return 'plus-mean';
  return o.interpolation === 'NEAREST_NEIGHBOR' ? 'nn-mean' : 'linear-mean';
}

/** Frame → voxel-index affine map (12 numbers, row-major 3×4): index = M · (u, v, 0, 1). */
function imageToIndexMatrix(m: Mat4, grid: VolumeGrid, out: Float64Array): void {
  const org = [grid.originMm.x, grid.originMm.y, grid.originMm.z];
  const sp = [grid.spacingMm.x, grid.spacingMm.y, grid.spacingMm.z];
  for (let a = 0; a < 3; a++) {
    const inv = 1 / sp[a]!;
    out[a * 4] = m[a * 4]! * inv;
    out[a * 4 + 1] = m[a * 4 + 1]! * inv;
    out[a * 4 + 2] = m[a * 4 + 2]! * inv;
    out[a * 4 + 3] = (m[a * 4 + 3]! - org[a]!) * inv;
  }
}

// clipAxis result (module-level scratch: no allocation in the hot path)
let clipS = 0;
let clipE = 0;

/**
 * Narrows [s, e] to the pixels u with lo ≤ b + u·a < hi (or ≤ hi when `incl`), using exactly
 * the expression the paste loop evaluates; the set is an interval since b + u·a is monotonic in u
 * even in floating point. Returns false when empty.
 */
function clipAxis(s: number, e: number, b: number, a: number, lo: number, hi: number, incl: boolean): boolean {
  if (a === 0) {
    const t = b;
    const ok = t >= lo && (incl ? t <= hi : t < hi);
    clipS = s;
    clipE = e;
    return ok && s <= e;
  }
  const r1 = (lo - b) / a;
  const r2 = (hi - b) / a;
  let uLo = a > 0 ? Math.ceil(r1) : Math.ceil(r2);
  let uHi = a > 0 ? Math.floor(r2) : Math.floor(r1);
  uLo = uLo - 2 > s ? uLo - 2 : s;
  uHi = uHi + 2 < e ? uHi + 2 : e;
  for (;;) {
    if (uLo > uHi) return false;
    const t = b + uLo * a;
    if (t >= lo && (incl ? t <= hi : t < hi)) break;
    uLo++;
  }
  for (;;) {
    const t = b + uHi * a;
    if (t >= lo && (incl ? t <= hi : t < hi)) break;
    uHi--;
  }
  clipS = uLo;
  clipE = uHi;
  return true;
}

interface KernelTarget {
  readonly kind: AccumulatorKind;
  readonly compounding: CompoundingMode;
  readonly dims: readonly [number, number, number];
  /** nn-mean: interleaved (sum, count). */
  readonly u32: Uint32Array | null;
  /** linear-mean: interleaved (sum, weight). */
  readonly f64: Float64Array | null;
  /** plus-mean: interleaved (running uint8 mean, uint16 weight in 1/256 units), PLUS's state. */
  readonly u16: Uint16Array | null;
  /** keep: interleaved (value, touched). */
  readonly u8: Uint8Array | null;
}

/**
 * Pastes one frame into the accumulators, restricted to voxel slices zLo..zHi (inclusive).
 * Returns the number of pixels that landed in the volume (after clipping and rejection).
 */
function pasteKernel(
  t: KernelTarget,
  pixels: Uint8Array,
  width: number,
  height: number,
  m: Float64Array,
  rr: RowRuns,
  linear: boolean,
  threshold: number,
  zLo: number,
  zHi: number,
): number {
  if (t.kind === 'plus-mean') return pasteKernelPlus(t, pixels, width, height, m, rr, linear, threshold, zLo, zHi);
  const [nx, ny, nz] = t.dims;
  const nxy = nx * ny;
  const ax = m[0]!;
  const ay = m[4]!;
  const az = m[8]!;
  const rowStart = rr.rowStart;
  const runs = rr.runs;
  let count = 0;
  const nn = !linear;
  // NN: t = base + 0.5 + u·a, index = trunc(t), valid when 0 ≤ t < n.
  // LINEAR: t = base + u·a, corners trunc(t) and trunc(t)+1 (when fractional), valid when 0 ≤ t ≤ n−1.
  const half = nn ? 0.5 : 0;
  for (let v = 0; v < height; v++) {
    const r0 = rowStart[v]!;
    const r1 = rowStart[v + 1]!;
    if (r0 === r1) continue;
    const bx = m[3]! + v * m[1]! + half;
    const by = m[7]! + v * m[5]! + half;
    const bz = m[11]! + v * m[9]! + half;
    const off = v * width;
    for (let r = r0; r < r1; r += 2) {
      let s: number;
      let e: number;
      if (nn) {
        if (!clipAxis(runs[r]!, runs[r + 1]!, bx, ax, 0, nx, false)) continue;
        if (!clipAxis(clipS, clipE, by, ay, 0, ny, false)) continue;
        if (!clipAxis(clipS, clipE, bz, az, zLo, zHi + 1, false)) continue;
        s = clipS;
        e = clipE;
      } else {
        if (!clipAxis(runs[r]!, runs[r + 1]!, bx, ax, 0, nx - 1, true)) continue;
        if (!clipAxis(clipS, clipE, by, ay, 0, ny - 1, true)) continue;
        if (!clipAxis(clipS, clipE, bz, az, 0, nz - 1, true)) continue;
        if (!clipAxis(clipS, clipE, bz, az, zLo - 1, zHi + 1, false)) continue;
        s = clipS;
        e = clipE;
      }
      switch (t.kind) {
        case 'nn-mean':
          count += runNnMean(t.u32!, pixels, off, s, e, bx, by, bz, ax, ay, az, nx, nxy, threshold);
          break;
        case 'linear-mean':
          count += linearMeanSpan(t.f64!, pixels, off, s, e, bx, by, bz, ax, ay, az, nx, ny, nxy, threshold, zLo, zHi);
          break;
        case 'keep':
          count += nn
            ? runNnKeep(t.u8!, pixels, off, s, e, bx, by, bz, ax, ay, az, nx, nxy, threshold, t.compounding === 'MAXIMUM')
            : linearKeepSpan(t.u8!, pixels, off, s, e, bx, by, bz, ax, ay, az, nx, ny, nxy, threshold, zLo, zHi, t.compounding === 'MAXIMUM');
          break;
      }
    }
  }
  return count;
}

/** pasteKernel for plusRounding (kept apart so that the default kernel's loop is untouched). */
function pasteKernelPlus(
  t: KernelTarget,
  pixels: Uint8Array,
  width: number,
  height: number,
  m: Float64Array,
  rr: RowRuns,
  linear: boolean,
  threshold: number,
  zLo: number,
  zHi: number,
): number {
  const [nx, ny, nz] = t.dims;
  const nxy = nx * ny;
  const ax = m[0]!;
  const ay = m[4]!;
  const az = m[8]!;
  const rowStart = rr.rowStart;
  const runs = rr.runs;
  const acc = t.u16!;
  let count = 0;
  const half = linear ? 0 : 0.5;
  // PLUS snaps positions to a 2^-16 grid before rounding (NN) or flooring (LINEAR) them, so a
  // pixel within 2^-17 of a bound may fall on the other side: clip with a margin and let the
  // kernel test each pixel's PLUS index.
  const g = PLUS_CLIP_MARGIN;
  for (let v = 0; v < height; v++) {
    const r0 = rowStart[v]!;
    const r1 = rowStart[v + 1]!;
    if (r0 === r1) continue;
    const bx = m[3]! + v * m[1]! + half;
    const by = m[7]! + v * m[5]! + half;
    const bz = m[11]! + v * m[9]! + half;
    const off = v * width;
    for (let r = r0; r < r1; r += 2) {
      if (!linear) {
        if (!clipAxis(runs[r]!, runs[r + 1]!, bx, ax, -g, nx + g, false)) continue;
        if (!clipAxis(clipS, clipE, by, ay, -g, ny + g, false)) continue;
        if (!clipAxis(clipS, clipE, bz, az, zLo - g, zHi + 1 + g, false)) continue;
        count += runNnMeanPlus(acc, pixels, off, clipS, clipE, bx, by, bz, ax, ay, az, nx, ny, nxy, threshold, zLo, zHi);
      } else {
        if (!clipAxis(runs[r]!, runs[r + 1]!, bx, ax, -g, nx - 1 + g, true)) continue;
        if (!clipAxis(clipS, clipE, by, ay, -g, ny - 1 + g, true)) continue;
        if (!clipAxis(clipS, clipE, bz, az, -g, nz - 1 + g, true)) continue;
        if (!clipAxis(clipS, clipE, bz, az, zLo - 1 - g, zHi + 1 + g, false)) continue;
        count += runLinearMeanPlus(acc, pixels, off, clipS, clipE, bx, by, bz, ax, ay, az, nx, ny, nz, nxy, threshold, zLo, zHi);
      }
    }
  }
  return count;
}

// The inner loops. Positions are base + u·step (exactly as clipAxis evaluates them), so the
// span [s, e] is known to be inside the volume (and the slab): no bounds checks here.

function runNnMean(
  acc: Uint32Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, nxy: number, thr: number,
): number {
  let n = 0;
  // Neighbouring pixels mostly land in the same voxel (pixels are finer than voxels): sum them in
  // registers and touch memory once per voxel change (~40% faster; integer sums are order-free).
  let pk = -1;
  let ps = 0;
  let pc = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const k = (((bx + u * ax) | 0) + ((by + u * ay) | 0) * nx + ((bz + u * az) | 0) * nxy) << 1;
    if (k === pk) {
      ps += p;
      pc++;
    } else {
      if (pk >= 0) {
        acc[pk] = acc[pk]! + ps;
        acc[pk + 1] = acc[pk + 1]! + pc;
        n += pc;
      }
      pk = k;
      ps = p;
      pc = 1;
    }
  }
  if (pk >= 0) {
    acc[pk] = acc[pk]! + ps;
    acc[pk + 1] = acc[pk + 1]! + pc;
    n += pc;
  }
  return n;
}

function runNnKeep(
  acc: Uint8Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, nxy: number, thr: number, max: boolean,
): number {
  let n = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const k = (((bx + u * ax) | 0) + ((by + u * ay) | 0) * nx + ((bz + u * az) | 0) * nxy) << 1;
    if (!max || p > acc[k]!) acc[k] = p;
    acc[k + 1] = 1;
    n++;
  }
  return n;
}

function runLinearMean(
  acc: Float64Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, nxy: number, thr: number,
  zLo: number, zHi: number,
): number {
  let n = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const tx = bx + u * ax;
    const ty = by + u * ay;
    const tz = bz + u * az;
    const x0 = tx | 0;
    const y0 = ty | 0;
    const z0 = tz | 0;
    const fx = tx - x0;
    const fy = ty - y0;
    const fz = tz - z0;
    const rx = 1 - fx;
    const ry = 1 - fy;
    // corners outside the slab get weight 0 and are not written (another worker owns them)
    const wz0 = z0 >= zLo ? 1 - fz : 0;
    const wz1 = z0 + 1 <= zHi ? fz : 0;
    const base = x0 + y0 * nx + z0 * nxy;
    if (z0 >= zLo) n++; // a pixel straddling two slabs is counted by the slab of its lower corner
    let w: number;
    let k: number;
    // order: (x, y, z) bits 000, 001, 010, 011, 100, … as PLUS's fdx[] (any fixed order is deterministic)
    w = rx * ry * wz0;
    if (w !== 0) { k = base << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = rx * ry * wz1;
    if (w !== 0) { k = (base + nxy) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = rx * fy * wz0;
    if (w !== 0) { k = (base + nx) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = rx * fy * wz1;
    if (w !== 0) { k = (base + nx + nxy) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = fx * ry * wz0;
    if (w !== 0) { k = (base + 1) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = fx * ry * wz1;
    if (w !== 0) { k = (base + 1 + nxy) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = fx * fy * wz0;
    if (w !== 0) { k = (base + 1 + nx) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
    w = fx * fy * wz1;
    if (w !== 0) { k = (base + 1 + nx + nxy) << 1; acc[k] = acc[k]! + w * p; acc[k + 1] = acc[k + 1]! + w; }
  }
  return n;
}

/** PLUS applies MAXIMUM/LATEST with LINEAR only to the corners whose trilinear weight is ≥ 1/8. */
const MIN_KEEP_WEIGHT = 0.125;

function runLinearKeep(
  acc: Uint8Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, nxy: number, thr: number,
  zLo: number, zHi: number, max: boolean,
): number {
  let n = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const tx = bx + u * ax;
    const ty = by + u * ay;
    const tz = bz + u * az;
    const x0 = tx | 0;
    const y0 = ty | 0;
    const z0 = tz | 0;
    const fx = tx - x0;
    const fy = ty - y0;
    const fz = tz - z0;
    const wz0 = z0 >= zLo ? 1 - fz : 0;
    const wz1 = z0 + 1 <= zHi ? fz : 0;
    const base = x0 + y0 * nx + z0 * nxy;
    if (z0 >= zLo) n++; // a pixel straddling two slabs is counted by the slab of its lower corner
    for (let c = 0; c < 8; c++) {
      const w = (c & 4 ? fx : 1 - fx) * (c & 2 ? fy : 1 - fy) * (c & 1 ? wz1 : wz0);
      if (w < MIN_KEEP_WEIGHT) continue;
      const k = (base + (c & 4 ? 1 : 0) + (c & 2 ? nx : 0) + (c & 1 ? nxy : 0)) << 1;
      if (!max || p > acc[k]!) acc[k] = p;
      acc[k + 1] = 1;
    }
  }
  return n;
}

// PLUS-exact MEAN (plusRounding). PLUS keeps, per voxel, the uint8 running mean itself and a
// uint16 weight in 1/256 units, and re-quantizes both at every insertion, in insertion order.
// These loops reproduce that state transition exactly, one pixel at a time (no register batching:
// the order of the updates now changes the result), with IEEE doubles as PLUS's NONE and PARTIAL
// paths use (PLUS's FULL path computes positions and LINEAR weights in 14-bit fixed point: not
// emulated). They also round positions as PLUS does: PLUS's fast Round/Floor add 1.5·2^36
// first, which snaps the position to a 2^-16 grid (a position within 2^-17 below a rounding edge
// goes up), then NN takes floor(x + 0.5) and LINEAR floor(x) with fraction x − floor (which can be
// a hair negative: PLUS then gives the far corner a tiny negative weight, and so do we).

/** PLUS's weight of one whole NN hit (its ACCUMULATION_MULTIPLIER). */
const PLUS_WEIGHT_UNIT = 256;
/** The uint16 weight's ceiling. */
const PLUS_WEIGHT_MAX = 65535;
/** Above this an NN voxel is saturated (one more unit would not fit): 255 hits. */
const PLUS_WEIGHT_SATURATED = PLUS_WEIGHT_MAX - PLUS_WEIGHT_UNIT;
/** 1.5·2^36: adding it leaves a value on a 2^-16 grid (round to nearest, ties to even). */
const PLUS_SNAP = 103079215104;
/** Clip margin (voxels) around the bounds: more than the snap can move a position (2^-17). */
const PLUS_CLIP_MARGIN = 1 / 1024;

/** PLUS's floor (igsioMath::Floor on 64-bit, after vtkImageReslice): floor of x snapped to 2^-16. */
function plusFloor(x: number): number {
  return Math.floor(x + PLUS_SNAP) - PLUS_SNAP;
}

/** PLUS's round (igsioMath::Round): floor(x + 0.5) of x snapped to 2^-16, so halves go up. */
function plusRound(x: number): number {
  return Math.floor(x + (PLUS_SNAP + 0.5)) - PLUS_SNAP;
}

/** NN + MEAN, PLUS's state. b* include the +0.5 of rounding: index = plusFloor(b + u·a). */
function runNnMeanPlus(
  acc: Uint16Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, ny: number, nxy: number, thr: number,
  zLo: number, zHi: number,
): number {
  let n = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const ix = plusFloor(bx + u * ax);
    const iy = plusFloor(by + u * ay);
    const iz = plusFloor(bz + u * az);
    if (ix < 0 || ix >= nx || iy < 0 || iy >= ny || iz < zLo || iz > zHi) continue;
    n++;
    const k = (ix + iy * nx + iz * nxy) << 1;
    const w = acc[k + 1]!;
    const m = acc[k]!;
    if (w <= PLUS_WEIGHT_SATURATED) {
      // integer mean of the previous mean (weight w) and the pixel (weight 256), truncated
      const nw = w + PLUS_WEIGHT_UNIT;
      acc[k] = ((p * PLUS_WEIGHT_UNIT + m * w) / nw) | 0;
      acc[k + 1] = nw < PLUS_WEIGHT_MAX ? nw : PLUS_WEIGHT_MAX;
    } else {
      // saturated: PLUS blends with fixed weights 1/256 and 255/256 and truncates; that sum is
      // exact in doubles, so it is this integer expression
      acc[k] = (p + 255 * m) >>> 8;
    }
  }
  return n;
}

/** One trilinear corner of weight f (≠ 0) into voxel v, PLUS's MEAN update. */
function plusLinearInsert(acc: Uint16Array, v: number, f: number, p: number): void {
  const k = v << 1;
  const r = acc[k + 1]! / PLUS_WEIGHT_UNIT;
  const a = f + r;
  acc[k] = plusRound((f * p + r * acc[k]!) / a);
  const na = a * PLUS_WEIGHT_UNIT;
  acc[k + 1] = na < PLUS_WEIGHT_MAX ? plusRound(na) : PLUS_WEIGHT_MAX;
}

/** LINEAR + MEAN, PLUS's state. */
function runLinearMeanPlus(
  acc: Uint16Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, ny: number, nz: number, nxy: number, thr: number,
  zLo: number, zHi: number,
): number {
  let n = 0;
  for (let u = s; u <= e; u++) {
    const p = px[off + u]!;
    if (p < thr) continue;
    const tx = bx + u * ax;
    const ty = by + u * ay;
    const tz = bz + u * az;
    const x0 = plusFloor(tx);
    const y0 = plusFloor(ty);
    const z0 = plusFloor(tz);
    const fx = tx - x0;
    const fy = ty - y0;
    const fz = tz - z0;
    // PLUS's bounds: the low corner and the high one (the same voxel when the fraction is 0)
    if (x0 < 0 || y0 < 0 || z0 < 0) continue;
    if ((fx !== 0 ? x0 + 1 : x0) > nx - 1 || (fy !== 0 ? y0 + 1 : y0) > ny - 1 || (fz !== 0 ? z0 + 1 : z0) > nz - 1) continue;
    const lowIn = z0 >= zLo && z0 <= zHi;
    const highIn = fz !== 0 && z0 + 1 >= zLo && z0 + 1 <= zHi;
    if (lowIn) n++; // a pixel straddling two slabs is counted by the slab of its low corner
    else if (!highIn) continue;
    const rx = 1 - fx;
    const ry = 1 - fy;
    const rz = 1 - fz;
    // PLUS's weights, in its association: wx · (wy · wz); corners of weight 0 are skipped (they
    // would divide 0 by 0 on a fresh voxel). Corners outside the slab belong to another worker.
    const ryrz = ry * rz;
    const fyrz = fy * rz;
    const base = x0 + y0 * nx + z0 * nxy;
    let w: number;
    if (lowIn) {
      w = rx * ryrz;
      if (w !== 0) plusLinearInsert(acc, base, w, p);
      w = rx * fyrz;
      if (w !== 0) plusLinearInsert(acc, base + nx, w, p);
      w = fx * ryrz;
      if (w !== 0) plusLinearInsert(acc, base + 1, w, p);
      w = fx * fyrz;
      if (w !== 0) plusLinearInsert(acc, base + 1 + nx, w, p);
    }
    if (highIn) {
      const ryfz = ry * fz;
      const fyfz = fy * fz;
      const b1 = base + nxy;
      w = rx * ryfz;
      if (w !== 0) plusLinearInsert(acc, b1, w, p);
      w = rx * fyfz;
      if (w !== 0) plusLinearInsert(acc, b1 + nx, w, p);
      w = fx * ryfz;
      if (w !== 0) plusLinearInsert(acc, b1 + 1, w, p);
      w = fx * fyfz;
      if (w !== 0) plusLinearInsert(acc, b1 + 1 + nx, w, p);
    }
  }
  return n;
}

// LINEAR, fast path. runLinearMean / runLinearKeep test every corner at every pixel (inside the
// volume? inside the slab? weight 0?): 8 branches per pixel, after each of which V8 re-checks the
// typed arrays and reloads spilled values, and the row's doubles, passed as call arguments, are
// unboxed anew on every pass of the loop. Almost every pixel of a span has all 8 corners inside
// the volume and the slab, so:
// - linear*Span cuts the span [s, e] into the interior (0 ≤ tx < nx−1, 0 ≤ ty < ny−1,
//   zLo ≤ tz < zHi: an interval of u, found with clipAxis as the span itself is) and the edges
//   before and after it, which keep the checked loops;
// - the interior loops write all 8 corners with no position test (the MEAN loop adds w·p and w
//   to a corner of weight 0, i.e. +0, which leaves its sums as they are), read the row's doubles
//   from a Float64Array once (unboxed for the whole loop) and index with int32 arithmetic.
// Each voxel receives the same additions in the same order as from runLinearMean over the whole
// span (the 8 corners of a pixel are distinct voxels, so their order does not matter): the bytes
// are unchanged, for 1 or N workers. LINEAR+MEAN pastes about 1.4× faster, MAXIMUM/LATEST ~2×.

/** Row parameters of the interior loops: bx, by, bz, ax, ay, az, threshold. */
const rowParams = new Float64Array(7);

function linearMeanSpan(
  acc: Float64Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, ny: number, nxy: number, thr: number,
  zLo: number, zHi: number,
): number {
  if (!clipAxis(s, e, bx, ax, 0, nx - 1, false) || !clipAxis(clipS, clipE, by, ay, 0, ny - 1, false) || !clipAxis(clipS, clipE, bz, az, zLo, zHi, false)) {
    return runLinearMean(acc, px, off, s, e, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi);
  }
  const is = clipS;
  const ie = clipE;
  let n = 0;
  if (s < is) n += runLinearMean(acc, px, off, s, is - 1, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi);
  setRowParams(bx, by, bz, ax, ay, az, thr);
  n += linearMeanInterior(acc, px, off, is, ie, rowParams, nx, nxy);
  if (ie < e) n += runLinearMean(acc, px, off, ie + 1, e, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi);
  return n;
}

function linearKeepSpan(
  acc: Uint8Array, px: Uint8Array, off: number, s: number, e: number,
  bx: number, by: number, bz: number, ax: number, ay: number, az: number, nx: number, ny: number, nxy: number, thr: number,
  zLo: number, zHi: number, max: boolean,
): number {
  if (!clipAxis(s, e, bx, ax, 0, nx - 1, false) || !clipAxis(clipS, clipE, by, ay, 0, ny - 1, false) || !clipAxis(clipS, clipE, bz, az, zLo, zHi, false)) {
    return runLinearKeep(acc, px, off, s, e, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi, max);
  }
  const is = clipS;
  const ie = clipE;
  let n = 0;
  if (s < is) n += runLinearKeep(acc, px, off, s, is - 1, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi, max);
  setRowParams(bx, by, bz, ax, ay, az, thr);
  n += linearKeepInterior(acc, px, off, is, ie, rowParams, nx, nxy, max);
  if (ie < e) n += runLinearKeep(acc, px, off, ie + 1, e, bx, by, bz, ax, ay, az, nx, nxy, thr, zLo, zHi, max);
  return n;
}

function setRowParams(bx: number, by: number, bz: number, ax: number, ay: number, az: number, thr: number): void {
  rowParams[0] = bx;
  rowParams[1] = by;
  rowParams[2] = bz;
  rowParams[3] = ax;
  rowParams[4] = ay;
  rowParams[5] = az;
  rowParams[6] = thr;
}

/** runLinearMean for pixels whose 8 corners are all inside the volume and the slab. */
function linearMeanInterior(acc: Float64Array, px: Uint8Array, off: number, s: number, e: number, rp: Float64Array, nx: number, nxy: number): number {
  const bx = rp[0]!;
  const by = rp[1]!;
  const bz = rp[2]!;
  const ax = rp[3]!;
  const ay = rp[4]!;
  const az = rp[5]!;
  const thr = rp[6]!;
  const o = off | 0;
  const sy = nx | 0;
  const sz = nxy | 0;
  const dy = sy << 1;
  const dz = sz << 1;
  let n = 0;
  for (let u = s | 0; u <= e; u++) {
    const p = px[o + u]!;
    if (p < thr) continue;
    n++;
    const tx = bx + u * ax;
    const ty = by + u * ay;
    const tz = bz + u * az;
    const x0 = tx | 0;
    const y0 = ty | 0;
    const z0 = tz | 0;
    const fx = tx - x0;
    const fy = ty - y0;
    const fz = tz - z0;
    const rx = 1 - fx;
    const ry = 1 - fy;
    const rz = 1 - fz;
    // weights as runLinearMean computes them: (wx · wy) · wz
    const w00 = rx * ry;
    const w10 = fx * ry;
    const w01 = rx * fy;
    const w11 = fx * fy;
    let k = (x0 + Math.imul(y0, sy) + Math.imul(z0, sz)) << 1;
    let w = w00 * rz;
    acc[k] = acc[k]! + w * p;
    acc[(k + 1) | 0] = acc[(k + 1) | 0]! + w;
    w = w10 * rz;
    acc[(k + 2) | 0] = acc[(k + 2) | 0]! + w * p;
    acc[(k + 3) | 0] = acc[(k + 3) | 0]! + w;
    k = (k + dy) | 0;
    w = w01 * rz;
    acc[k] = acc[k]! + w * p;
    acc[(k + 1) | 0] = acc[(k + 1) | 0]! + w;
    w = w11 * rz;
    acc[(k + 2) | 0] = acc[(k + 2) | 0]! + w * p;
    acc[(k + 3) | 0] = acc[(k + 3) | 0]! + w;
    k = (k + dz) | 0;
    w = w01 * fz;
    acc[k] = acc[k]! + w * p;
    acc[(k + 1) | 0] = acc[(k + 1) | 0]! + w;
    w = w11 * fz;
    acc[(k + 2) | 0] = acc[(k + 2) | 0]! + w * p;
    acc[(k + 3) | 0] = acc[(k + 3) | 0]! + w;
    k = (k - dy) | 0;
    w = w00 * fz;
    acc[k] = acc[k]! + w * p;
    acc[(k + 1) | 0] = acc[(k + 1) | 0]! + w;
    w = w10 * fz;
    acc[(k + 2) | 0] = acc[(k + 2) | 0]! + w * p;
    acc[(k + 3) | 0] = acc[(k + 3) | 0]! + w;
  }
  return n;
}

/** runLinearKeep for pixels whose 8 corners are all inside the volume and the slab. */
function linearKeepInterior(acc: Uint8Array, px: Uint8Array, off: number, s: number, e: number, rp: Float64Array, nx: number, nxy: number, max: boolean): number {
  const bx = rp[0]!;
  const by = rp[1]!;
  const bz = rp[2]!;
  const ax = rp[3]!;
  const ay = rp[4]!;
  const az = rp[5]!;
  const thr = rp[6]!;
  const o = off | 0;
  const sy = nx | 0;
  const sz = nxy | 0;
  const dy = sy << 1;
  const dz = sz << 1;
  let n = 0;
  for (let u = s | 0; u <= e; u++) {
    const p = px[o + u]!;
    if (p < thr) continue;
    n++;
    const tx = bx + u * ax;
    const ty = by + u * ay;
    const tz = bz + u * az;
    const x0 = tx | 0;
    const y0 = ty | 0;
    const z0 = tz | 0;
    const fx = tx - x0;
    const fy = ty - y0;
    const fz = tz - z0;
    const rx = 1 - fx;
    const ry = 1 - fy;
    const rz = 1 - fz;
    const w00 = rx * ry;
    const w10 = fx * ry;
    const w01 = rx * fy;
    const w11 = fx * fy;
    let k = (x0 + Math.imul(y0, sy) + Math.imul(z0, sz)) << 1;
    let w = w00 * rz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[k]!) acc[k] = p;
      acc[(k + 1) | 0] = 1;
    }
    w = w10 * rz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[(k + 2) | 0]!) acc[(k + 2) | 0] = p;
      acc[(k + 3) | 0] = 1;
    }
    k = (k + dy) | 0;
    w = w01 * rz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[k]!) acc[k] = p;
      acc[(k + 1) | 0] = 1;
    }
    w = w11 * rz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[(k + 2) | 0]!) acc[(k + 2) | 0] = p;
      acc[(k + 3) | 0] = 1;
    }
    k = (k + dz) | 0;
    w = w01 * fz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[k]!) acc[k] = p;
      acc[(k + 1) | 0] = 1;
    }
    w = w11 * fz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[(k + 2) | 0]!) acc[(k + 2) | 0] = p;
      acc[(k + 3) | 0] = 1;
    }
    k = (k - dy) | 0;
    w = w00 * fz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[k]!) acc[k] = p;
      acc[(k + 1) | 0] = 1;
    }
    w = w10 * fz;
    if (w >= MIN_KEEP_WEIGHT) {
      if (!max || p > acc[(k + 2) | 0]!) acc[(k + 2) | 0] = p;
      acc[(k + 3) | 0] = 1;
    }
  }
  return n;
}

function kernelTarget(kind: AccumulatorKind, compounding: CompoundingMode, dims: readonly [number, number, number], buf: ArrayBufferLike): KernelTarget {
  return {
    kind,
    compounding,
    dims,
    u32: kind === 'nn-mean' ? new Uint32Array(buf) : null,
    f64: kind === 'linear-mean' ? new Float64Array(buf) : null,
    u16: kind === 'plus-mean' ? new Uint16Array(buf) : null,
    u8: kind === 'keep' ? new Uint8Array(buf) : null,
  };
}

/**
 * Voxels [from, to) of the accumulators → out[at …] as uint8. MEAN: NN truncates sum / count and
 * LINEAR rounds sum / weight, the same conventions as PLUS's paste kernels (PLUS re-quantizes a
 * running mean at every insertion; we quantize the exact mean once, so we never drift).
 */
function accumulatorToUint8(t: KernelTarget, from: number, to: number, out: Uint8Array, at: number): void {
  if (t.u32 !== null) {
    const a = t.u32;
    for (let v = from, o = at; v < to; v++, o++) {
      const c = a[2 * v + 1]!;
      out[o] = c === 0 ? 0 : (a[2 * v]! / c) | 0;
    }
  } else if (t.f64 !== null) {
    const a = t.f64;
    for (let v = from, o = at; v < to; v++, o++) {
      const w = a[2 * v + 1]!;
      out[o] = w > 0 ? (a[2 * v]! / w + 0.5) | 0 : 0;
    }
  } else if (t.u16 !== null) {
    // PLUS's output is its running mean as it stands (a voxel whose weight rounded to 0 keeps it)
    const a = t.u16;
    for (let v = from, o = at; v < to; v++, o++) out[o] = a[2 * v]!;
  } else {
    const a = t.u8!;
    for (let v = from, o = at; v < to; v++, o++) out[o] = a[2 * v]!;
  }
}

function checkFrame(f: { index: number; width: number; height: number; pixels: Uint8Array }): void {
  if (!Number.isInteger(f.width) || !Number.isInteger(f.height) || f.width < 1 || f.height < 1) {
    throw bad(`frame ${f.index}: bad size ${f.width}×${f.height}`);
  }
  if (f.pixels.length !== f.width * f.height) {
    throw bad(`frame ${f.index}: ${f.pixels.length} pixels for a ${f.width}×${f.height} image`);
  }
}

/** One frame into a kernel target (used by VolumeReconstructor and the worker). */
function pasteFrameInto(
  t: KernelTarget,
  linear: boolean,
  grid: VolumeGrid,
  frame: { index: number; width: number; height: number; pixels: Uint8Array; imageToReference: Mat4 },
  runsFor: (w: number, h: number) => RowRuns,
  threshold: number,
  zLo: number,
  zHi: number,
  scratch: Float64Array,
): number {
  checkFrame(frame);
  checkMatrix(frame.imageToReference, frame.index);
  imageToIndexMatrix(frame.imageToReference, grid, scratch);
  return pasteKernel(t, frame.pixels, frame.width, frame.height, scratch, runsFor(frame.width, frame.height), linear, threshold, zLo, zHi);
}

function runsCache(o: ResolvedReconstructionOptions): (w: number, h: number) => RowRuns {
  const cache = new Map<number, RowRuns>();
  return (w, h) => {
    const key = w * 65536 + h;
    let rr = cache.get(key);
    if (rr === undefined) {
      rr = buildRowRuns(w, h, o);
      cache.set(key, rr);
    }
    return rr;
  };
}

// ---------------------------------------------------------------------------------------------
// The reconstructor

export interface PasteResult {
  /** False when SkipInterval skipped the frame. */
  readonly used: boolean;
  /** Pixels that landed in the volume (after clipping and pixel rejection). */
  readonly pixelsPasted: number;
}

export interface BrickVoxels {
  readonly index: number;
  /** Voxel index of the brick's first voxel. */
  readonly start: readonly [number, number, number];
  /** Voxel counts (edge bricks are smaller). */
  readonly dims: readonly [number, number, number];
  /** uint8 voxels, x fastest. */
  readonly data: Uint8Array;
}

export interface ChangedBricks {
  readonly brickSize: number;
  /** Bricks per axis (x, y, z); brick index = bx + nbx·(by + nby·bz). */
  readonly bricksPerAxis: readonly [number, number, number];
  /** Bricks touched since the previous takeChangedBricks(), ascending. */
  readonly indices: Uint32Array;
}

export interface ReconstructionStats {
  readonly framesSeen: number;
  readonly framesUsed: number;
  readonly pixelsPasted: number;
}

/** Internal: adopt existing (shared) accumulators instead of allocating. */
interface AdoptedBuffers {
  readonly buffer: ArrayBufferLike;
  readonly stats: ReconstructionStats;
  /** The uint8 volume, already computed from `buffer`. */
  readonly volume?: Uint8Array;
}

export class VolumeReconstructor {
  readonly grid: VolumeGrid;
  readonly options: ResolvedReconstructionOptions;
  readonly estimate: MemoryEstimate;
  private readonly kind: AccumulatorKind;
  private readonly linear: boolean;
  private readonly target: KernelTarget;
  private readonly runsFor: (w: number, h: number) => RowRuns;
  private readonly threshold: number;
  private readonly scratch = new Float64Array(12);
  private readonly nb: [number, number, number];
  private readonly dirty: Uint8Array;
  private dirtyList: number[] = [];
  private seen = 0;
  private used = 0;
  private pasted = 0;
  private cached: Volume | null = null;

  /**
   * Checks the memory budget, then allocates the accumulators for `grid`
   * (see `outputGridFor` / `computeOutputGrid` / `gridFromExtent`).
   */
  constructor(options: ReconstructionOptions, grid: VolumeGrid, adopt?: AdoptedBuffers) {
    this.options = resolveReconstructionOptions(options);
    checkGrid(grid);
    checkBudget(grid, options, this.options.memoryBudgetBytes);
    this.grid = { originMm: grid.originMm, spacingMm: grid.spacingMm, dims: [grid.dims[0], grid.dims[1], grid.dims[2]] };
    this.estimate = estimateReconstructionBytes(grid, options);
    this.kind = accumulatorKind(this.options);
    this.linear = this.options.interpolation === 'LINEAR';
    const bytes = this.estimate.accumulatorBytes;
    let buffer: ArrayBufferLike;
    if (adopt !== undefined) {
      if (adopt.buffer.byteLength !== bytes) throw new Eco3dError('ECO3D_ERR_INTERNAL', 'adopted accumulator has the wrong size');
      buffer = adopt.buffer;
      this.seen = adopt.stats.framesSeen;
      this.used = adopt.stats.framesUsed;
      this.pasted = adopt.stats.pixelsPasted;
    } else {
      try {
        buffer = new ArrayBuffer(bytes);
      } catch (err) {
        throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `cannot allocate ${(bytes / MIB).toFixed(0)} MiB for the reconstruction accumulators`, { cause: err });
      }
    }
    this.target = kernelTarget(this.kind, this.options.compoundingMode, this.grid.dims, buffer);
    if (adopt?.volume !== undefined) this.cached = { grid: this.grid, data: adopt.volume };
    this.runsFor = runsCache(this.options);
    this.threshold = this.options.pixelRejectionThreshold ?? -Infinity;
    const b = this.options.brickSize;
    const d = this.grid.dims;
    this.nb = [Math.ceil(d[0] / b), Math.ceil(d[1] / b), Math.ceil(d[2] / b)];
    this.dirty = new Uint8Array(this.nb[0] * this.nb[1] * this.nb[2]);
    if (adopt !== undefined) {
      // everything may have changed
      this.dirty.fill(1);
      this.dirtyList = Array.from({ length: this.dirty.length }, (_, i) => i);
    }
  }

  /** The accumulator buffer (for tests and the parallel path). */
  get accumulatorBuffer(): ArrayBufferLike {
    return (this.target.u32 ?? this.target.f64 ?? this.target.u16 ?? this.target.u8)!.buffer;
  }

  get stats(): ReconstructionStats {
    return { framesSeen: this.seen, framesUsed: this.used, pixelsPasted: this.pasted };
  }

  /**
   * Pastes one frame (incremental). Frames are counted as they arrive; with SkipInterval N only
   * the 0th, Nth, 2Nth … are used.
   */
  pasteFrame(frame: TrackedFrame): PasteResult {
    const i = this.seen++;
    if (i % this.options.skipInterval !== 0) return { used: false, pixelsPasted: 0 };
    const [, , nz] = this.grid.dims;
    const n = pasteFrameInto(this.target, this.linear, this.grid, frame, this.runsFor, this.threshold, 0, nz - 1, this.scratch);
    this.used++;
    this.pasted += n;
    if (n > 0) {
      this.cached = null;
      this.markFrame(this.runsFor(frame.width, frame.height));
    }
    return { used: true, pixelsPasted: n };
  }

  /**
   * Marks the bricks the frame just pasted (its index matrix is in this.scratch) may have changed:
   * the clipped pixel area is cut into square tiles small enough to span less than a brick along
   * every axis, and the bricks of each tile's voxel bounding box are marked. Conservative: it may
   * mark a brick no pixel changed (rejected or fan-clipped pixels), it never misses one.
   */
  private markFrame(rr: RowRuns): void {
    if (rr.u0 > rr.u1) return;
    const m = this.scratch;
    const b = this.options.brickSize;
    const dims = this.grid.dims;
    const [nbx, nby] = this.nb;
    const half = this.linear ? 0 : 0.5;
    const extra = this.linear ? 1 : 0;
    let span = 1e-9;
    for (let a = 0; a < 3; a++) span = Math.max(span, Math.abs(m[a * 4]!) + Math.abs(m[a * 4 + 1]!));
    const tile = Math.max(1, Math.floor(b / span));
    const lo = [0, 0, 0];
    const hi = [0, 0, 0];
    for (let v = rr.v0; v <= rr.v1; v += tile) {
      const ve = Math.min(rr.v1, v + tile);
      for (let u = rr.u0; u <= rr.u1; u += tile) {
        const ue = Math.min(rr.u1, u + tile);
        let outside = false;
        for (let a = 0; a < 3 && !outside; a++) {
          const c = m[a * 4 + 3]! + half;
          const du = m[a * 4]!;
          const dv = m[a * 4 + 1]!;
          const t00 = c + u * du + v * dv;
          const t10 = c + ue * du + v * dv;
          const t01 = c + u * du + ve * dv;
          const t11 = c + ue * du + ve * dv;
          const l = Math.floor(Math.min(t00, t10, t01, t11)) - 1; // −1/+1: float slack
          const h = Math.floor(Math.max(t00, t10, t01, t11)) + extra + 1;
          const n = dims[a]!;
          if (h < 0 || l > n - 1) outside = true;
          lo[a] = Math.floor(Math.max(0, l) / b);
          hi[a] = Math.floor(Math.min(n - 1, h) / b);
        }
        if (outside) continue;
        for (let kz = lo[2]!; kz <= hi[2]!; kz++) {
          for (let ky = lo[1]!; ky <= hi[1]!; ky++) {
            for (let kx = lo[0]!; kx <= hi[0]!; kx++) {
              const idx = kx + nbx * (ky + nby * kz);
              if (this.dirty[idx] === 0) {
                this.dirty[idx] = 1;
                this.dirtyList.push(idx);
              }
            }
          }
        }
        if (ue === rr.u1) break;
      }
      if (ve === rr.v1) break;
    }
  }

  /** The bricks changed since the last call (and resets the set). */
  takeChangedBricks(): ChangedBricks {
    const list = Uint32Array.from(this.dirtyList).sort();
    for (const i of list) this.dirty[i] = 0;
    this.dirtyList = [];
    return { brickSize: this.options.brickSize, bricksPerAxis: [this.nb[0], this.nb[1], this.nb[2]], indices: list };
  }

  /** A brick's current uint8 voxels. */
  brickVoxels(index: number): BrickVoxels {
    const [nbx, nby, nbz] = this.nb;
    if (!Number.isInteger(index) || index < 0 || index >= nbx * nby * nbz) throw bad(`no brick ${index}`);
    const b = this.options.brickSize;
    const kx = index % nbx;
    const ky = Math.floor(index / nbx) % nby;
    const kz = Math.floor(index / (nbx * nby));
    const [nx, ny, nz] = this.grid.dims;
    const start: [number, number, number] = [kx * b, ky * b, kz * b];
    const dims: [number, number, number] = [Math.min(b, nx - start[0]), Math.min(b, ny - start[1]), Math.min(b, nz - start[2])];
    const data = new Uint8Array(dims[0] * dims[1] * dims[2]);
    let o = 0;
    for (let z = 0; z < dims[2]; z++) {
      for (let y = 0; y < dims[1]; y++) {
        const v0 = start[0] + (start[1] + y) * nx + (start[2] + z) * nx * ny;
        accumulatorToUint8(this.target, v0, v0 + dims[0], data, o);
        o += dims[0];
      }
    }
    return { index, start, dims, data };
  }

  /** The current uint8 volume (a snapshot; cached until the next frame lands). */
  volume(): Volume {
    if (this.cached !== null) return this.cached;
    const n = this.grid.dims[0] * this.grid.dims[1] * this.grid.dims[2];
    const data = new Uint8Array(n);
    accumulatorToUint8(this.target, 0, n, data, 0);
    this.cached = { grid: this.grid, data };
    return this.cached;
  }

  /**
   * 1 where a voxel received data (weight > 0, or touched for MAXIMUM/LATEST), else 0. With
   * plusRounding, PLUS's rule: weight > 0 after rounding to 1/256 (a voxel touched only by
   * corners of tiny trilinear weight is a hole, as in PLUS's hole filling).
   */
  coverage(): Uint8Array {
    const n = this.grid.dims[0] * this.grid.dims[1] * this.grid.dims[2];
    const out = new Uint8Array(n);
    const t = this.target;
    if (t.u32 !== null) for (let v = 0; v < n; v++) out[v] = t.u32[2 * v + 1]! > 0 ? 1 : 0;
    else if (t.f64 !== null) for (let v = 0; v < n; v++) out[v] = t.f64[2 * v + 1]! > 0 ? 1 : 0;
    else if (t.u16 !== null) for (let v = 0; v < n; v++) out[v] = t.u16[2 * v + 1]! > 0 ? 1 : 0;
    else for (let v = 0; v < n; v++) out[v] = t.u8![2 * v + 1]!;
    return out;
  }

  /**
   * Per-voxel accumulated weight (hit count for NN+MEAN, summed trilinear weight for LINEAR+MEAN,
   * 0/1 for MAXIMUM/LATEST; with plusRounding PLUS's rounded, saturating weight, in the same
   * units): the weighting of hole filling's GAUSSIAN_ACCUMULATION kernel.
   */
  accumulationWeights(): Float32Array {
    const n = this.grid.dims[0] * this.grid.dims[1] * this.grid.dims[2];
    const out = new Float32Array(n);
    const t = this.target;
    if (t.u32 !== null) for (let v = 0; v < n; v++) out[v] = t.u32[2 * v + 1]!;
    else if (t.f64 !== null) for (let v = 0; v < n; v++) out[v] = t.f64[2 * v + 1]!;
    else if (t.u16 !== null) for (let v = 0; v < n; v++) out[v] = t.u16[2 * v + 1]! / PLUS_WEIGHT_UNIT; // exact (a power of 2)
    else for (let v = 0; v < n; v++) out[v] = t.u8![2 * v + 1]!;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Workers

/** A job for one worker: all frames, pasted into voxel slices zLo..zHi of shared accumulators. */
export interface WorkerJob {
  readonly kind: 'paste';
  readonly id: number;
  readonly options: ReconstructionOptions;
  readonly grid: VolumeGrid;
  readonly accumulator: SharedArrayBuffer;
  /** The uint8 volume; the worker writes its slab after pasting. */
  readonly output: SharedArrayBuffer;
  /** All frames' pixels back to back. */
  readonly pixels: Uint8Array;
  readonly pixelOffsets: Float64Array;
  readonly widths: Int32Array;
  readonly heights: Int32Array;
  readonly indices: Float64Array;
  /** 16 numbers per frame. */
  readonly matrices: Float64Array;
  readonly zLo: number;
  readonly zHi: number;
}

export interface WorkerDone {
  readonly kind: 'done';
  readonly id: number;
  readonly pixelsPasted: number;
  readonly framesUsed: number;
}

export interface WorkerFailed {
  readonly kind: 'failed';
  readonly id: number;
  readonly code: string;
  readonly message: string;
}

/** Runs one worker job (called inside the worker; exported for recon-worker.ts). */
export function runWorkerJob(job: WorkerJob): WorkerDone {
  const o = resolveReconstructionOptions(job.options);
  const kind = accumulatorKind(o);
  const target = kernelTarget(kind, o.compoundingMode, job.grid.dims, job.accumulator);
  const runsFor = runsCache(o);
  const threshold = o.pixelRejectionThreshold ?? -Infinity;
  const scratch = new Float64Array(12);
  let pixelsPasted = 0;
  let framesUsed = 0;
  for (let f = 0; f < job.widths.length; f += o.skipInterval) {
    const w = job.widths[f]!;
    const h = job.heights[f]!;
    const at = job.pixelOffsets[f]!;
    const frame = {
      index: job.indices[f]!,
      width: w,
      height: h,
      pixels: job.pixels.subarray(at, at + w * h),
      imageToReference: job.matrices.subarray(f * 16, f * 16 + 16),
    };
    pixelsPasted += pasteFrameInto(target, o.interpolation === 'LINEAR', job.grid, frame, runsFor, threshold, job.zLo, job.zHi, scratch);
    framesUsed++;
  }
  const nxy = job.grid.dims[0] * job.grid.dims[1];
  accumulatorToUint8(target, job.zLo * nxy, (job.zHi + 1) * nxy, new Uint8Array(job.output), job.zLo * nxy);
  return { kind: 'done', id: job.id, pixelsPasted, framesUsed };
}

/** A persistent set of reconstruction workers (startup costs ~100 ms each: keep one for live use). */
export class ReconstructionWorkerPool {
  private readonly workers: Worker[];
  private closedFlag = false;
  private nextId = 1;

  private constructor(workers: Worker[]) {
    this.workers = workers;
  }

  static async create(size: number): Promise<ReconstructionWorkerPool> {
    if (!Number.isInteger(size) || size < 1) throw bad(`worker count must be an integer ≥ 1, got ${size}`);
    const url = new URL('./recon-worker.ts', import.meta.url);
    const workers: Worker[] = [];
    try {
      for (let i = 0; i < size; i++) workers.push(startTsWorker(url));
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve, reject) => {
              const onMsg = (m: unknown): void => {
                if ((m as { kind?: string }).kind === 'ready') {
                  w.off('error', reject);
                  resolve();
                }
              };
              w.once('message', onMsg);
              w.once('error', reject);
            }),
        ),
      );
    } catch (err) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw new Eco3dError('ECO3D_ERR_INTERNAL', 'reconstruction workers failed to start', { cause: err });
    }
    return new ReconstructionWorkerPool(workers);
  }

  get size(): number {
    return this.workers.length;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** @internal Runs one job per worker (job i on worker i). */
  async runJobs(jobs: readonly Omit<WorkerJob, 'id' | 'kind'>[]): Promise<WorkerDone[]> {
    if (this.closedFlag) throw new Eco3dError('ECO3D_ERR_CLOSED', 'the reconstruction worker pool is closed');
    if (jobs.length > this.workers.length) throw new Eco3dError('ECO3D_ERR_INTERNAL', 'more jobs than workers');
    return Promise.all(
      jobs.map((j, i) => {
        const w = this.workers[i]!;
        const id = this.nextId++;
        return new Promise<WorkerDone>((resolve, reject) => {
          const onMessage = (m: WorkerDone | WorkerFailed): void => {
            if (m.id !== id) return;
            cleanup();
            if (m.kind === 'done') resolve(m);
            else reject(new Eco3dError(m.code === 'ECO3D_ERR_NOT_FINITE' ? 'ECO3D_ERR_NOT_FINITE' : 'ECO3D_ERR_BAD_REQUEST', m.message));
          };
          const onError = (err: Error): void => {
            cleanup();
            reject(new Eco3dError('ECO3D_ERR_INTERNAL', `reconstruction worker failed: ${err.message}`, { cause: err }));
          };
          const onExit = (code: number): void => {
            cleanup();
            reject(new Eco3dError('ECO3D_ERR_CLOSED', `reconstruction worker exited (code ${code})`));
          };
          const cleanup = (): void => {
            w.off('message', onMessage);
            w.off('error', onError);
            w.off('exit', onExit);
          };
          w.on('message', onMessage);
          w.once('error', onError);
          w.once('exit', onExit);
          const job: WorkerJob = { kind: 'paste', id, ...j };
          w.postMessage(job);
        });
      }),
    );
  }

  /** Terminates the workers; idempotent. */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

function prefault(buf: SharedArrayBuffer): void {
  const b = new Uint8Array(buf);
  for (let i = 0; i < b.length; i += 4096) b[i] = 0;
}

/**
 * Reconstructs `frames` with N workers (a count, or a pool to reuse). The volume is split into
 * z slabs; every worker pastes every frame clipped to its slab, so each voxel accumulates its
 * contributions in frame order and the bytes are the same for any N (and the same as
 * VolumeReconstructor.pasteFrame in a loop). Returns a VolumeReconstructor over the result.
 */
export async function reconstructParallel(
  frames: readonly TrackedFrame[],
  options: ReconstructionOptions,
  workers: number | ReconstructionWorkerPool,
  grid?: VolumeGrid,
): Promise<VolumeReconstructor> {
  const o = resolveReconstructionOptions(options);
  const g = grid ?? outputGridFor(options, frames);
  checkGrid(g);
  checkBudget(g, options, o.memoryBudgetBytes);
  for (const f of frames) {
    checkFrame(f);
    checkMatrix(f.imageToReference, f.index);
  }
  const est = estimateReconstructionBytes(g, options);
  const accumulator = new SharedArrayBuffer(est.accumulatorBytes);
  const output = new SharedArrayBuffer(est.voxels);
  // First-touch page faults taken by several threads at once contend in the kernel (measured:
  // ~150 ms more for 96 MB with 2 workers); taking them here first costs ~30 ms.
  prefault(accumulator);
  prefault(output);

  // Frames: share pixels as they are when they already live in one SharedArrayBuffer, else copy
  // them once into a shared block.
  const n = frames.length;
  const widths = new Int32Array(n);
  const heights = new Int32Array(n);
  const indices = new Float64Array(n);
  const pixelOffsets = new Float64Array(n);
  const matrices = new Float64Array(16 * n);
  const first = frames[0]?.pixels.buffer;
  const shared = first instanceof SharedArrayBuffer && frames.every((f) => f.pixels.buffer === first);
  let pixels: Uint8Array;
  if (shared) {
    pixels = new Uint8Array(first);
    frames.forEach((f, i) => (pixelOffsets[i] = f.pixels.byteOffset));
  } else {
    let total = 0;
    for (const f of frames) total += f.pixels.length;
    pixels = new Uint8Array(new SharedArrayBuffer(total));
    let at = 0;
    frames.forEach((f, i) => {
      pixels.set(f.pixels, at);
      pixelOffsets[i] = at;
      at += f.pixels.length;
    });
  }
  frames.forEach((f, i) => {
    widths[i] = f.width;
    heights[i] = f.height;
    indices[i] = f.index;
    matrices.set(f.imageToReference, 16 * i);
  });

  const pool = typeof workers === 'number' ? await ReconstructionWorkerPool.create(workers) : workers;
  try {
    const nz = g.dims[2];
    const count = Math.min(pool.size, nz);
    const jobs: Omit<WorkerJob, 'id' | 'kind'>[] = [];
    for (let k = 0; k < count; k++) {
      const zLo = Math.floor((k * nz) / count);
      const zHi = Math.floor(((k + 1) * nz) / count) - 1;
      jobs.push({ options, grid: g, accumulator, output, pixels, pixelOffsets, widths, heights, indices, matrices, zLo, zHi });
    }
    const done = await pool.runJobs(jobs);
    const pixelsPasted = done.reduce((s, d) => s + d.pixelsPasted, 0);
    const framesUsed = done[0]?.framesUsed ?? 0;
    return new VolumeReconstructor(options, g, {
      buffer: accumulator,
      stats: { framesSeen: n, framesUsed, pixelsPasted },
      volume: new Uint8Array(output),
    });
  } finally {
    if (typeof workers === 'number') await pool.close();
  }
}

// Hole filling after reconstruction: PLUS's HoleFillingElement kernels (vtkIGSIOFillHolesInVolume,
// PLUS docs "HoleFilling"). Every voxel that got no data (coverage 0) tries the elements in
// order until one succeeds; voxels that got data are never changed. Like PLUS, every element
// reads the reconstructed volume and its coverage as they were before filling (a filled voxel
// never feeds another), so the result does not depend on the visiting order: deterministic.
//
// Values follow PLUS's integer semantics: each stick's interpolated value is truncated to a level,
// and so is every element's result (PLUS assigns the double to the voxel type). STICK truncates
// exactly, as PLUS does: its sums run over the sticks in PLUS's order with PLUS's operations, so the
// round-off is PLUS's too (a mean of two equal sticks can be 89.99999… and read 89, in both). The
// weighted kernels sum in another order than PLUS (z, y, x rather than x, y, z) with float64 rather
// than float32 weights, so `level` truncates them with a 1e-7 allowance: a weighted mean that is an
// integer up to round-off (89.99999…) reads as that integer whatever the summation order.
// MinimumKnownVoxelsRatio is compared as PLUS's C++ float (Math.fround): float(0.04) is below
// 0.04, so 5 known voxels of a 5³ kernel pass a 0.04 ratio in PLUS and here. A hole that no
// element fills is 0 in the output, as in PLUS (whose failing elements write 0), even when the
// reconstructor left a value there (a LINEAR voxel whose rounded weight is 0).
//
// Where we differ from PLUS: holes with no known voxel within reach of any element are skipped up
// front (a box count of known voxels), which changes nothing but the running time.
import { Eco3dError } from '../protocols/errors.ts';
import type { Volume } from '../protocols/imaging.ts';

/** PLUS's conversion of a fill value to a voxel level: truncation (see the header). */
function level(x: number): number {
  return Math.floor(x + 1e-7);
}

/** PLUS HoleFillingElement, attribute names in camelCase. */
export type HoleFillingElement =
  | { readonly type: 'GAUSSIAN'; readonly size: number; readonly stdev: number; readonly minimumKnownVoxelsRatio: number }
  | { readonly type: 'GAUSSIAN_ACCUMULATION'; readonly size: number; readonly stdev: number; readonly minimumKnownVoxelsRatio: number }
  | { readonly type: 'NEAREST_NEIGHBOR'; readonly size: number; readonly minimumKnownVoxelsRatio: number }
  | { readonly type: 'DISTANCE_WEIGHT_INVERSE'; readonly size: number; readonly minimumKnownVoxelsRatio: number }
  | { readonly type: 'STICK'; readonly stickLengthLimit: number; readonly numberOfSticksToUse: number };

export interface HoleFillOptions {
  /** Per-voxel accumulated weight (VolumeReconstructor.accumulationWeights()); GAUSSIAN_ACCUMULATION needs it. */
  readonly accumulation?: Float32Array;
}

export interface HoleFillResult {
  /** A new volume; the input is not modified. */
  readonly volume: Volume;
  /** 1 where a voxel is known after filling (original data or filled). */
  readonly coverage: Uint8Array;
  readonly filledVoxels: number;
  /** Holes no element could fill (left at 0). */
  readonly remainingHoles: number;
}

function bad(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

function checkElement(e: HoleFillingElement, i: number): void {
  const where = `hole filling element ${i} (${e.type})`;
  if (e.type === 'STICK') {
    if (!Number.isInteger(e.stickLengthLimit) || e.stickLengthLimit < 2) throw bad(`${where}: stickLengthLimit must be an integer ≥ 2, got ${e.stickLengthLimit}`);
    if (!Number.isInteger(e.numberOfSticksToUse) || e.numberOfSticksToUse < 1) throw bad(`${where}: numberOfSticksToUse must be an integer ≥ 1, got ${e.numberOfSticksToUse}`);
    return;
  }
  if (!Number.isInteger(e.size) || e.size < 1 || e.size % 2 === 0) throw bad(`${where}: size must be an odd integer ≥ 1, got ${e.size}`);
  if (!(e.minimumKnownVoxelsRatio >= 0 && e.minimumKnownVoxelsRatio <= 1)) {
    throw bad(`${where}: minimumKnownVoxelsRatio must be within [0, 1], got ${e.minimumKnownVoxelsRatio}`);
  }
  if ((e.type === 'GAUSSIAN' || e.type === 'GAUSSIAN_ACCUMULATION') && !(e.stdev > 0)) throw bad(`${where}: stdev must be > 0, got ${e.stdev}`);
}

/** How far (in voxels, Chebyshev) an element looks from the hole. */
function reach(e: HoleFillingElement): number {
  return e.type === 'STICK' ? e.stickLengthLimit - 1 : (e.size - 1) / 2;
}

/** Kernel weights for a cube of `size` (z, y, x order, x fastest), as PLUS builds them. */
function kernelWeights(e: HoleFillingElement): Float64Array | null {
  if (e.type === 'STICK' || e.type === 'NEAREST_NEIGHBOR') return null;
  const s = e.size;
  const r = (s - 1) / 2;
  const k = new Float64Array(s * s * s);
  let i = 0;
  for (let z = 0; z < s; z++) {
    for (let y = 0; y < s; y++) {
      for (let x = 0; x < s; x++) {
        const d2 = (x - r) ** 2 + (y - r) ** 2 + (z - r) ** 2;
        if (e.type === 'DISTANCE_WEIGHT_INVERSE') k[i] = d2 === 0 ? 0 : 1 / Math.sqrt(d2);
        else k[i] = Math.exp(-d2 / (2 * e.stdev * e.stdev)) / ((2 * Math.PI) ** 1.5 * e.stdev ** 3);
        i++;
      }
    }
  }
  return k;
}

/** PLUS's 13 stick directions (one of each ± pair). */
const STICKS: readonly (readonly [number, number, number])[] = [
  [1, 0, 0], [0, 1, 0], [0, 0, 1],
  [1, 1, 0], [1, 0, 1], [0, 1, 1],
  [1, -1, 0], [1, 0, -1], [0, 1, -1],
  [1, 1, 1],
  [-1, 1, 1], [1, -1, 1], [-1, -1, 1],
];

/** Known-voxel counts in the (2r+1)³ box around each voxel (clipped to the volume), by separable running sums. */
function boxCount(known: Uint8Array, dims: readonly [number, number, number], r: number): Int32Array {
  const [nx, ny] = dims;
  let src = Int32Array.from(known);
  let dst = new Int32Array(src.length);
  const strides = [1, nx, nx * ny];
  for (let a = 0; a < 3; a++) {
    const n = dims[a]!;
    const st = strides[a]!;
    const lines = src.length / n;
    for (let l = 0; l < lines; l++) {
      // the line's first voxel
      let base: number;
      if (a === 0) base = l * nx;
      else if (a === 1) base = (l % nx) + Math.floor(l / nx) * nx * ny;
      else base = l;
      let sum = 0;
      for (let i = 0; i <= Math.min(r, n - 1); i++) sum += src[base + i * st]!;
      for (let i = 0; i < n; i++) {
        dst[base + i * st] = sum;
        const add = i + r + 1;
        const sub = i - r;
        if (add < n) sum += src[base + add * st]!;
        if (sub >= 0) sum -= src[base + sub * st]!;
      }
    }
    [src, dst] = [dst, src];
  }
  return src;
}

/** Fills the holes of `volume` (voxels whose `coverage` is 0) with the elements, in order. */
export function fillHoles(volume: Volume, coverage: Uint8Array, elements: readonly HoleFillingElement[], options: HoleFillOptions = {}): HoleFillResult {
  const dims = volume.grid.dims;
  const [nx, ny, nz] = dims;
  const n = nx * ny * nz;
  if (volume.data.length !== n || coverage.length !== n) throw bad(`hole filling: volume (${volume.data.length}) and coverage (${coverage.length}) must both have ${n} voxels`);
  elements.forEach(checkElement);
  const acc = options.accumulation;
  if (elements.some((e) => e.type === 'GAUSSIAN_ACCUMULATION') && (acc === undefined || acc.length !== n)) {
    throw bad('hole filling: GAUSSIAN_ACCUMULATION needs the accumulation weights (VolumeReconstructor.accumulationWeights())');
  }
  const src = volume.data;
  const out = Uint8Array.from(src);
  const outCov = Uint8Array.from(coverage);
  if (elements.length === 0) return { volume: { grid: volume.grid, data: out }, coverage: outCov, filledVoxels: 0, remainingHoles: coverage.reduce((s, c) => s + (c === 0 ? 1 : 0), 0) };

  const maxReach = Math.max(...elements.map(reach));
  const near = maxReach > 0 ? boxCount(coverage, dims, maxReach) : null;
  const kernels = elements.map(kernelWeights);
  // PLUS keeps MinimumKnownVoxelsRatio in a float
  const minRatios = elements.map((e) => (e.type === 'STICK' ? 0 : Math.fround(e.minimumKnownVoxelsRatio)));
  const nxy = nx * ny;
  let filled = 0;
  let remaining = 0;

  const known = (x: number, y: number, z: number): boolean => coverage[x + y * nx + z * nxy] !== 0;

  // One element at one hole; returns the fill value or -1.
  const apply = (e: HoleFillingElement, k: Float64Array | null, minRatio: number, x: number, y: number, z: number): number => {
    if (e.type === 'STICK') return stick(e.stickLengthLimit, e.numberOfSticksToUse, x, y, z);
    const s = e.size;
    const r = (s - 1) / 2;
    const cube = s * s * s;
    if (e.type === 'NEAREST_NEIGHBOR') {
      for (let range = 1; range <= r; range++) {
        let sum = 0;
        let cnt = 0;
        for (let zz = Math.max(0, z - range); zz <= Math.min(nz - 1, z + range); zz++) {
          for (let yy = Math.max(0, y - range); yy <= Math.min(ny - 1, y + range); yy++) {
            for (let xx = Math.max(0, x - range); xx <= Math.min(nx - 1, x + range); xx++) {
              const v = xx + yy * nx + zz * nxy;
              if (coverage[v] !== 0) {
                sum += src[v]!;
                cnt++;
              }
            }
          }
        }
        if (cnt > 0) return cnt / cube > minRatio ? level(sum / cnt) : -1;
      }
      return -1;
    }
    let sumI = 0;
    let sumW = 0;
    let cnt = 0;
    const accumulation = e.type === 'GAUSSIAN_ACCUMULATION';
    for (let zz = Math.max(0, z - r); zz <= Math.min(nz - 1, z + r); zz++) {
      for (let yy = Math.max(0, y - r); yy <= Math.min(ny - 1, y + r); yy++) {
        const kRow = (zz - z + r) * s * s + (yy - y + r) * s - (x - r);
        for (let xx = Math.max(0, x - r); xx <= Math.min(nx - 1, x + r); xx++) {
          const v = xx + yy * nx + zz * nxy;
          if (coverage[v] === 0) continue;
          const w = accumulation ? acc![v]! * k![kRow + xx]! : k![kRow + xx]!;
          sumI += src[v]! * w;
          sumW += w;
          cnt++;
        }
      }
    }
    if (sumW === 0) return -1;
    return cnt / cube > minRatio ? level(sumI / sumW) : -1;
  };

  const values = new Float64Array(STICKS.length);
  const weights = new Float64Array(STICKS.length);
  const stick = (limit: number, toUse: number, x: number, y: number, z: number): number => {
    for (let i = 0; i < STICKS.length; i++) {
      const [dx, dy, dz] = STICKS[i]!;
      weights[i] = 0;
      let fwd = 0;
      let fwdVal = 0;
      for (let j = 1; j + 1 <= limit; j++) {
        const xx = x + j * dx;
        const yy = y + j * dy;
        const zz = z + j * dz;
        if (xx < 0 || yy < 0 || zz < 0 || xx >= nx || yy >= ny || zz >= nz) break;
        if (known(xx, yy, zz)) {
          fwd = j;
          fwdVal = src[xx + yy * nx + zz * nxy]!;
          break;
        }
      }
      if (fwd === 0) continue;
      let rvs = 0;
      let rvsVal = 0;
      for (let j = 1; j + fwd + 1 <= limit; j++) {
        const xx = x - j * dx;
        const yy = y - j * dy;
        const zz = z - j * dz;
        if (xx < 0 || yy < 0 || zz < 0 || xx >= nx || yy >= ny || zz >= nz) break;
        if (known(xx, yy, zz)) {
          rvs = j;
          rvsVal = src[xx + yy * nx + zz * nxy]!;
          break;
        }
      }
      if (rvs === 0) continue;
      // PLUS's weighting: total = fwd + rvs + 1; the forward end weighs (rvs + 1) / total
      const total = fwd + rvs + 1;
      const wFwd = (rvs + 1) / total;
      values[i] = Math.floor((1 - wFwd) * rvsVal + wFwd * fwdVal); // PLUS keeps each stick's value as a voxel level (exact truncation)
      weights[i] = 1 / (total * Math.sqrt(dx * dx + dy * dy + dz * dz));
    }
    // use the best-scoring sticks (ties together) until numberOfSticksToUse are used
    let used = 0;
    let sumV = 0;
    let sumW = 0;
    while (used < toUse) {
      let best = 0;
      for (let i = 0; i < STICKS.length; i++) if (weights[i]! > best) best = weights[i]!;
      if (best === 0) break;
      for (let i = 0; i < STICKS.length; i++) {
        if (weights[i] === best) {
          sumV += values[i]! * best;
          sumW += best;
          used++;
          weights[i] = 0;
        }
      }
    }
    return sumW > 0 ? Math.floor(sumV / sumW) : -1;
  };

  for (let z = 0; z < nz; z++) {
    for (let y = 0; y < ny; y++) {
      for (let x = 0; x < nx; x++) {
        const v = x + y * nx + z * nxy;
        if (coverage[v] !== 0) continue;
        if (near !== null && near[v] === 0) {
          out[v] = 0;
          remaining++;
          continue; // no known voxel within any element's reach
        }
        let value = -1;
        for (let i = 0; i < elements.length && value < 0; i++) value = apply(elements[i]!, kernels[i]!, minRatios[i]!, x, y, z);
        if (value < 0) {
          out[v] = 0;
          remaining++;
          continue;
        }
        out[v] = Math.min(255, Math.max(0, value));
        outCov[v] = 1;
        filled++;
      }
    }
  }
  return { volume: { grid: volume.grid, data: out }, coverage: outCov, filledVoxels: filled, remainingHoles: remaining };
}

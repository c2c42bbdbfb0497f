// Example analysis plugin: the volume of the largest hypoechoic (dark) lesion of a B-mode volume.
//
// Plain JavaScript, no dependencies: the sandbox copies this folder only, and runs it with no
// network and no file access outside it. The types of `input` and of the result are in the SDK
// (marketplace/sdk/analysis.ts: AnalysisInput, AnalysisOutput); its two helpers are repeated
// below, since a plugin cannot import files outside its own package.
//
// Method (a classic, transparent pipeline rather than a trained model):
//  1. Smooth with a separable box filter of about 2 mm, so that speckle (bright and dark grains of
//     a few voxels) averages out and a lesion becomes a uniformly darker region.
//  2. Tissue level = the median of the smoothed volume (lesions are a small part of it).
//     Candidates: voxels darker than 75 % of it.
//  3. 6-connected components of the candidates (iterative flood fill, no recursion). Components
//     that touch the volume's sides (the subcutaneous fat layer, a vessel crossing the field,
//     a lesion cut by the field of view) or are smaller than 0.1 mL are left out.
//  4. Each remaining component is refined at the midpoint between its own level and the tissue
//     around it (both medians): with a symmetric smoothing kernel, that contour lies on the edge.
//  5. The largest refined lesion is the answer: its volume (voxel count × voxel volume) in mL.
// Memory: the input (1 byte per voxel) plus two working volumes of 1 byte per voxel.

const VOLUME_CONCEPT = { value: '118565006', scheme: 'SCT', meaning: 'Volume' };
/** Box filter half-width, mm: a full width of about 2 mm covers a few speckle grains. */
const SMOOTHING_HALF_WIDTH_MM = 1;
/** Candidates: darker than this fraction of the tissue level. */
const CANDIDATE_FRACTION = 0.75;
const MIN_LESION_ML = 0.1;
const MIN_LESION_VOXELS = 27;
/** Margin around a lesion's bounding box where its surrounding tissue is sampled, mm. */
const SURROUND_MARGIN_MM = 4;

// Voxel states in the working volume.
const ABOVE = 0; // not a candidate
const CANDIDATE = 1;
const SEEN = 2; // a candidate already in a component
const MARK = 3; // in the region being collected
const CLAIMED = 4; // in a refined lesion

/** Volume of one voxel in mL (1 mL = 1000 mm³). */
function voxelVolumeMl(spacingMm) {
  return (spacingMm[0] * spacingMm[1] * spacingMm[2]) / 1000;
}

function measurement(name, value, unit, concept) {
  return concept === undefined ? { name, value, unit } : { name, value, unit, concept };
}

/**
 * One pass of a box filter of half-width `r` along `axis`, from `src` to `dst` (both x fastest).
 * Edges replicate the border voxel, so every output averages exactly 2r + 1 values. Along y and z
 * whole rows (planes) slide at once, in memory order: a 16 MiB volume takes tens of ms a pass.
 */
function boxPass(src, dst, dims, axis, r) {
  const [nx, ny, nz] = dims;
  const inv = 1 / (2 * r + 1);
  if (axis === 0) {
    for (let row = 0; row < ny * nz; row++) {
      const start = row * nx;
      const last = start + nx - 1;
      let acc = 0;
      for (let d = -r; d <= r; d++) acc += src[Math.min(last, Math.max(start, start + d))];
      for (let t = 0; t < nx; t++) {
        dst[start + t] = (acc * inv + 0.5) | 0;
        acc += src[Math.min(last, start + t + r + 1)] - src[Math.max(start, start + t - r)];
      }
    }
    return;
  }
  // Along y: blocks of one row (nx) sliding within each plane; along z: one plane sliding through the volume.
  const block = axis === 1 ? nx : nx * ny;
  const n = axis === 1 ? ny : nz;
  const groups = axis === 1 ? nz : 1;
  const acc = new Int32Array(block);
  for (let g = 0; g < groups; g++) {
    const base = g * nx * ny;
    const at = (t) => base + Math.min(n - 1, Math.max(0, t)) * block;
    acc.fill(0);
    for (let d = -r; d <= r; d++) {
      const o = at(d);
      for (let x = 0; x < block; x++) acc[x] += src[o + x];
    }
    for (let t = 0; t < n; t++) {
      const out = base + t * block;
      const add = at(t + r + 1);
      const sub = at(t - r);
      for (let x = 0; x < block; x++) {
        const v = acc[x];
        dst[out + x] = (v * inv + 0.5) | 0;
        acc[x] = v + src[add + x] - src[sub + x];
      }
    }
  }
}

/** The median of the 8-bit values counted in `hist` (256 bins). */
function median(hist) {
  let total = 0;
  for (let v = 0; v < 256; v++) total += hist[v];
  if (total === 0) return NaN;
  let seen = 0;
  for (let v = 0; v < 256; v++) {
    seen += hist[v];
    if (seen * 2 >= total) return v;
  }
  return 255;
}

/** A growable list of voxel indices (also the flood fill's work list: nothing is ever popped). */
class IndexList {
  constructor() {
    this.items = new Int32Array(1 << 16);
    this.length = 0;
  }
  push(v) {
    if (this.length === this.items.length) {
      const bigger = new Int32Array(this.items.length * 2);
      bigger.set(this.items);
      this.items = bigger;
    }
    this.items[this.length++] = v;
  }
}

/**
 * Breadth-first 6-connected fill from the indices already in `list` (their state set to `to`):
 * every neighbour for which `accept(index)` holds gets state `to` and joins the list. Returns
 * whether the region touches the volume's sides.
 */
function fill(list, state, dims, accept, to) {
  const [nx, ny, nz] = dims;
  const plane = nx * ny;
  let touches = false;
  for (let head = 0; head < list.length; head++) {
    const p = list.items[head];
    const i = p % nx;
    const j = ((p - i) / nx) % ny;
    const k = (p - i - j * nx) / plane;
    if (i === 0 || j === 0 || k === 0 || i === nx - 1 || j === ny - 1 || k === nz - 1) touches = true;
    if (i > 0 && accept(p - 1)) { state[p - 1] = to; list.push(p - 1); }
    if (i < nx - 1 && accept(p + 1)) { state[p + 1] = to; list.push(p + 1); }
    if (j > 0 && accept(p - nx)) { state[p - nx] = to; list.push(p - nx); }
    if (j < ny - 1 && accept(p + nx)) { state[p + nx] = to; list.push(p + nx); }
    if (k > 0 && accept(p - plane)) { state[p - plane] = to; list.push(p - plane); }
    if (k < nz - 1 && accept(p + plane)) { state[p + plane] = to; list.push(p + plane); }
  }
  return touches;
}

/** Count, centroid (voxel indices) and bounding box of the voxels in `list`. */
function describe(list, dims) {
  const [nx, ny] = dims;
  const plane = nx * ny;
  let si = 0, sj = 0, sk = 0;
  const lo = [Infinity, Infinity, Infinity];
  const hi = [-Infinity, -Infinity, -Infinity];
  for (let n = 0; n < list.length; n++) {
    const p = list.items[n];
    const i = p % nx;
    const j = ((p - i) / nx) % ny;
    const k = (p - i - j * nx) / plane;
    si += i; sj += j; sk += k;
    if (i < lo[0]) lo[0] = i;
    if (j < lo[1]) lo[1] = j;
    if (k < lo[2]) lo[2] = k;
    if (i > hi[0]) hi[0] = i;
    if (j > hi[1]) hi[1] = j;
    if (k > hi[2]) hi[2] = k;
  }
  const c = list.length;
  return { count: c, centroid: [si / c, sj / c, sk / c], lo, hi };
}

/** Median smoothed level of the tissue around a box (expanded by `margin` voxels), candidates left out. */
function surroundLevel(smooth, state, dims, lo, hi, margin) {
  const [nx, ny, nz] = dims;
  const hist = new Float64Array(256);
  const i0 = Math.max(0, lo[0] - margin[0]), i1 = Math.min(nx - 1, hi[0] + margin[0]);
  const j0 = Math.max(0, lo[1] - margin[1]), j1 = Math.min(ny - 1, hi[1] + margin[1]);
  const k0 = Math.max(0, lo[2] - margin[2]), k1 = Math.min(nz - 1, hi[2] + margin[2]);
  for (let k = k0; k <= k1; k++) {
    for (let j = j0; j <= j1; j++) {
      for (let i = i0, p = (k * ny + j) * nx + i0; i <= i1; i++, p++) if (state[p] === ABOVE) hist[smooth[p]]++;
    }
  }
  return median(hist);
}

export async function analyze(input) {
  const { dims, spacingMm, voxels } = input.volume;
  const [nx, ny, nz] = dims;
  const total = nx * ny * nz;
  const voxelMl = voxelVolumeMl(spacingMm);

  // 1. Smoothing: x, y, z passes between two working volumes (the input is left as it is).
  const a = new Uint8Array(total);
  const b = new Uint8Array(total);
  const r = spacingMm.map((s) => Math.max(1, Math.round(SMOOTHING_HALF_WIDTH_MM / s)));
  boxPass(voxels, a, dims, 0, r[0]);
  boxPass(a, b, dims, 1, r[1]);
  boxPass(b, a, dims, 2, r[2]);
  const smooth = a;
  const state = b;

  // 2. Tissue level and candidates.
  const hist = new Float64Array(256);
  for (let p = 0; p < total; p++) hist[smooth[p]]++;
  const tissue = median(hist);
  const t0 = CANDIDATE_FRACTION * tissue;
  for (let p = 0; p < total; p++) state[p] = smooth[p] < t0 ? CANDIDATE : ABOVE;

  // 3. Components at the candidate threshold, the sides and the specks left out.
  const minVoxels = Math.max(MIN_LESION_VOXELS, Math.ceil(MIN_LESION_ML / voxelMl));
  const kept = [];
  const list = new IndexList();
  for (let p = 0; p < total; p++) {
    if (state[p] !== CANDIDATE) continue;
    list.length = 0;
    state[p] = SEEN;
    list.push(p);
    const touches = fill(list, state, dims, (q) => state[q] === CANDIDATE, SEEN);
    if (!touches && list.length >= minVoxels) kept.push(p);
  }

  // 4. Refinement of each kept component at the midpoint between its level and its surroundings.
  const margin = spacingMm.map((s) => Math.ceil(SURROUND_MARGIN_MM / s));
  const lesions = [];
  for (const seed of kept) {
    if (state[seed] !== SEEN) continue; // already inside a refined lesion
    // The component again (marked), for its level and box.
    list.length = 0;
    state[seed] = MARK;
    list.push(seed);
    fill(list, state, dims, (q) => state[q] === SEEN, MARK);
    const members = list.items.slice(0, list.length);
    const inner = new Float64Array(256);
    for (const q of members) inner[smooth[q]]++;
    const box = describe(list, dims);
    const level = median(inner);
    const around = surroundLevel(smooth, state, dims, box.lo, box.hi, margin);
    const t1 = (level + around) / 2;
    // Grow from the members darker than t1, through any voxel darker than t1 not yet claimed.
    list.length = 0;
    for (const q of members) {
      if (smooth[q] < t1) {
        state[q] = CLAIMED;
        list.push(q);
      } else state[q] = SEEN;
    }
    if (list.length === 0) continue;
    const touches = fill(list, state, dims, (q) => state[q] !== CLAIMED && smooth[q] < t1, CLAIMED);
    if (touches || list.length < minVoxels) continue;
    lesions.push({ ...describe(list, dims), level, around });
  }

  if (lesions.length === 0) return { measurements: [], findings: [{ text: 'No hypoechoic lesion found' }] };
  lesions.sort((x, y) => y.count - x.count);
  const best = lesions[0];
  const volumeMl = Math.round(best.count * voxelMl * 100) / 100;
  const mm = (v, axis) => (v * spacingMm[axis]).toFixed(1);
  const at = best.centroid.map((v, axis) => mm(v, axis)).join(', ');
  const extent = best.hi.map((h, axis) => ((h - best.lo[axis] + 1) * spacingMm[axis]).toFixed(1)).join(' × ');
  const others = lesions.length - 1;
  return {
    measurements: [measurement('Lesion volume', volumeMl, 'ml', VOLUME_CONCEPT)],
    findings: [
      {
        text:
          `Largest hypoechoic lesion: ${volumeMl.toFixed(2)} mL at (${at}) mm from the centre of the first voxel (x, y, z), ` +
          `extent ${extent} mm, median level ${best.level} against ${best.around} in the tissue around it (8-bit)` +
          (others === 0 ? '; no other lesion.' : `; ${others} smaller lesion${others === 1 ? '' : 's'} (${lesions.slice(1).map((l) => (l.count * voxelMl).toFixed(2)).join(', ')} mL).`),
      },
    ],
  };
}

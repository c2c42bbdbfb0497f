import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import type { TrackedFrame, VolumeGrid } from '../protocols/imaging.ts';
import {
  ReconstructionWorkerPool,
  VolumeReconstructor,
  computeOutputGrid,
  estimateReconstructionBytes,
  gridFromExtent,
  reconstructParallel,
  type CompoundingMode,
  type Interpolation,
  type ReconstructionOptions,
} from './reconstruct.ts';

type V3 = readonly [number, number, number];

/** ImageToReference for a plane: pixel (u, v) → origin + u·sp·U + v·sp·V (U, V unit, orthogonal). */
function planeMatrix(originMm: V3, U: V3, V: V3, spacingMm: number): Float64Array {
  const N: V3 = [U[1] * V[2] - U[2] * V[1], U[2] * V[0] - U[0] * V[2], U[0] * V[1] - U[1] * V[0]];
  const m = new Float64Array(16);
  for (let a = 0; a < 3; a++) {
    m[a * 4] = U[a]! * spacingMm;
    m[a * 4 + 1] = V[a]! * spacingMm;
    m[a * 4 + 2] = N[a]!;
    m[a * 4 + 3] = originMm[a]!;
  }
  m[15] = 1;
  return m;
}

function frame(index: number, w: number, h: number, m: Float64Array, value: (u: number, v: number, world: V3) => number): TrackedFrame {
  const pixels = new Uint8Array(w * h);
  for (let v = 0; v < h; v++) {
    for (let u = 0; u < w; u++) {
      const world: V3 = [m[0]! * u + m[1]! * v + m[3]!, m[4]! * u + m[5]! * v + m[7]!, m[8]! * u + m[9]! * v + m[11]!];
      pixels[v * w + u] = value(u, v, world);
    }
  }
  return { index, tMs: index * 33, width: w, height: h, pixels, imageToReference: m };
}

function world(grid: VolumeGrid, i: number): V3 {
  const [nx, ny] = grid.dims;
  const x = i % nx;
  const y = Math.floor(i / nx) % ny;
  const z = Math.floor(i / (nx * ny));
  return [grid.originMm.x + x * grid.spacingMm.x, grid.originMm.y + y * grid.spacingMm.y, grid.originMm.z + z * grid.spacingMm.z];
}

const deg = Math.PI / 180;
const SPHERE_C: V3 = [10, 12, 8];
const SPHERE_R = 4;
const inSphere = (p: V3): boolean => (p[0] - SPHERE_C[0]) ** 2 + (p[1] - SPHERE_C[1]) ** 2 + (p[2] - SPHERE_C[2]) ** 2 <= SPHERE_R ** 2;

/** A sweep along y through a bright sphere, the probe tilted by `tiltDeg` about z and x. */
function sphereSweep(tiltDeg: number): TrackedFrame[] {
  const frames: TrackedFrame[] = [];
  const t = tiltDeg * deg;
  const U: V3 = [Math.cos(t), Math.sin(t), 0];
  const V: V3 = [0, Math.sin(t / 2) * 0, 1]; // depth along z
  for (let k = 0; k < 90; k++) {
    const y = 1 + k * 0.25;
    const m = planeMatrix([0, y, 0], U, V, 0.25);
    frames.push(frame(k, 84, 68, m, (_u, _v, p) => (inSphere(p) ? 220 : 20)));
  }
  return frames;
}

describe('VolumeReconstructor geometry', () => {
  for (const tilt of [0, 20]) {
    for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as const) {
      test(`a bright sphere lands at its world position (tilt ${tilt}°, ${interpolation})`, () => {
        const frames = sphereSweep(tilt);
        const options: ReconstructionOptions = { outputSpacing: [0.5, 0.5, 0.5], interpolation };
        const grid = computeOutputGrid(frames, options);
        const r = new VolumeReconstructor(options, grid);
        for (const f of frames) r.pasteFrame(f);
        const vol = r.volume();
        const cov = r.coverage();
        let sx = 0;
        let sy = 0;
        let sz = 0;
        let n = 0;
        let wrong = 0;
        let checked = 0;
        for (let i = 0; i < vol.data.length; i++) {
          if (cov[i] === 0) continue;
          const p = world(grid, i);
          if (vol.data[i]! > 120) {
            sx += p[0];
            sy += p[1];
            sz += p[2];
            n++;
          }
          // well inside / well outside the sphere, the value must be right
          const d = Math.hypot(p[0] - SPHERE_C[0], p[1] - SPHERE_C[1], p[2] - SPHERE_C[2]);
          if (d < SPHERE_R - 0.6) {
            checked++;
            if (vol.data[i]! < 200) wrong++;
          } else if (d > SPHERE_R + 0.6) {
            checked++;
            if (vol.data[i]! > 40) wrong++;
          }
        }
        assert.ok(n > 100, `bright voxels: ${n}`);
        const c = [sx / n, sy / n, sz / n];
        const err = Math.hypot(c[0]! - SPHERE_C[0], c[1]! - SPHERE_C[1], c[2]! - SPHERE_C[2]);
        assert.ok(err < 0.5, `centroid ${c.map((x) => x.toFixed(2)).join(', ')} is ${err.toFixed(3)} mm off`);
        assert.ok(checked > 1000);
        assert.equal(wrong, 0);
      });
    }
  }

  test('NN and LINEAR on a smooth ramp: both follow it, LINEAR at least as closely', () => {
    // intensity = 20 + 8·x (mm), frames sweeping along y, pixels 0.2 mm, voxels 0.5 mm
    const ramp = (x: number): number => 20 + 8 * x;
    const frames: TrackedFrame[] = [];
    for (let k = 0; k < 40; k++) {
      const m = planeMatrix([0.1, 0.3 + k * 0.2, 0.1], [1, 0, 0], [0, 0, 1], 0.2);
      frames.push(frame(k, 120, 40, m, (_u, _v, p) => Math.round(ramp(p[0]))));
    }
    const errs: Record<string, number> = {};
    for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as const) {
      const options: ReconstructionOptions = { outputSpacing: [0.5, 0.5, 0.5], interpolation };
      const grid = computeOutputGrid(frames, options);
      const r = new VolumeReconstructor(options, grid);
      for (const f of frames) r.pasteFrame(f);
      const vol = r.volume();
      const cov = r.coverage();
      let sum = 0;
      let n = 0;
      for (let i = 0; i < vol.data.length; i++) {
        if (cov[i] === 0) continue;
        const p = world(grid, i);
        sum += Math.abs(vol.data[i]! - ramp(p[0]));
        n++;
      }
      errs[interpolation] = sum / n;
      assert.ok(n > 1000);
    }
    // NN: a voxel averages pixels within ±0.25 mm in x, symmetric → ≈ exact; LINEAR likewise
    assert.ok(errs.NEAREST_NEIGHBOR! < 1.0, `NN mean error ${errs.NEAREST_NEIGHBOR}`);
    assert.ok(errs.LINEAR! < 1.0, `LINEAR mean error ${errs.LINEAR}`);
    assert.ok(errs.LINEAR! <= errs.NEAREST_NEIGHBOR! + 0.25, `LINEAR ${errs.LINEAR} vs NN ${errs.NEAREST_NEIGHBOR}`);
  });
});

describe('compounding', () => {
  const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [12, 4, 12] };
  // a 10×10 plane at y = 2 (exactly on voxel centres), 1 mm pixels
  const m = planeMatrix([1, 2, 1], [1, 0, 0], [0, 0, 1], 1);
  const uniform = (i: number, v: number): TrackedFrame => frame(i, 10, 10, m, () => v);
  // MEAN of 200, 100, 101 = 133.67: NN truncates (133), LINEAR rounds (134), as PLUS's kernels.
  const cases: [CompoundingMode, readonly number[], number | { NEAREST_NEIGHBOR: number; LINEAR: number }][] = [
    ['MEAN', [100, 200], 150],
    ['MEAN', [200, 100, 101], { NEAREST_NEIGHBOR: 133, LINEAR: 134 }],
    ['MAXIMUM', [100, 200], 200],
    ['MAXIMUM', [200, 100], 200],
    ['LATEST', [100, 200], 200],
    ['LATEST', [200, 100], 100],
  ];
  for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as const) {
    for (const [mode, values, want] of cases) {
      const expected = typeof want === 'number' ? want : want[interpolation];
      test(`${interpolation} ${mode} of ${values.join(', ')} is ${expected}`, () => {
        const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation, compoundingMode: mode }, grid);
        values.forEach((v, i) => r.pasteFrame(uniform(i, v)));
        const vol = r.volume();
        const cov = r.coverage();
        let covered = 0;
        for (let i = 0; i < vol.data.length; i++) {
          if (cov[i] === 0) {
            assert.equal(vol.data[i], 0);
            continue;
          }
          covered++;
          assert.equal(vol.data[i], expected, `voxel ${i}`);
        }
        assert.equal(covered, 100);
      });
    }
  }
});

describe('plusRounding: PLUS-exact MEAN', () => {
  const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [12, 4, 12] };
  // a 10×10 plane exactly on voxel centres (y = 2), 1 mm pixels: every pixel lands on one voxel
  // with weight 1, so each covered voxel sees exactly the frames' values, in order
  const onGrid = planeMatrix([1, 2, 1], [1, 0, 0], [0, 0, 1], 1);
  const uniform = (i: number, v: number, m: Float64Array = onGrid): TrackedFrame => frame(i, 10, 10, m, () => v);

  /** The value of every covered voxel (asserting they agree) and the covered count. */
  function run(interpolation: Interpolation, plusRounding: boolean, values: readonly number[], m?: Float64Array): { value: number; covered: number; r: VolumeReconstructor } {
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation, plusRounding }, grid);
    values.forEach((v, i) => r.pasteFrame(uniform(i, v, m)));
    const vol = r.volume().data;
    const cov = r.coverage();
    let value = -1;
    let covered = 0;
    for (let i = 0; i < vol.length; i++) {
      if (cov[i] === 0) continue;
      covered++;
      if (value < 0) value = vol[i]!;
      assert.equal(vol[i], value, `voxel ${i}`);
    }
    return { value, covered, r };
  }

  test('NN: PLUS truncates the running mean at every insertion (3, 4, 5 → 3; exact mean 4)', () => {
    assert.deepEqual([run('NEAREST_NEIGHBOR', false, [3, 4, 5]).value, run('NEAREST_NEIGHBOR', true, [3, 4, 5]).value], [4, 3]);
  });

  test('LINEAR: PLUS rounds the running mean at every insertion (100, 101, 100 → 101; exact mean 100.3)', () => {
    assert.deepEqual([run('LINEAR', false, [100, 101, 100]).value, run('LINEAR', true, [100, 101, 100]).value], [100, 101]);
  });

  test('NN saturates after 255 hits, as PLUS: 255 × 255 then 255 × 1 gives 1 (exact mean 128)', () => {
    const values = [...Array<number>(255).fill(255), ...Array<number>(255).fill(1)];
    const exact = run('NEAREST_NEIGHBOR', false, values);
    const plus = run('NEAREST_NEIGHBOR', true, values);
    assert.equal(exact.value, 128);
    // past 255 hits PLUS blends ⌊(p + 255·mean) / 256⌋: each pixel of 1 takes the mean one level down
    assert.equal(plus.value, 1);
    assert.equal(plus.covered, 100);
    assert.equal(plus.r.accumulationWeights().find((w) => w > 0), 65280 / 256);
  });

  test('LINEAR: a faint corner into an empty voxel leaves a weight that rounds to 0 (a hole for PLUS), then the next pixel overwrites it', () => {
    // the plane at y = 2.001: voxels y = 2 get weight 0.999, voxels y = 3 get 0.001 (0.256/256: rounds to 0)
    const faint = planeMatrix([1, 2.001, 1], [1, 0, 0], [0, 0, 1], 1);
    const exact = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation: 'LINEAR' }, grid);
    const plus = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation: 'LINEAR', plusRounding: true }, grid);
    for (const r of [exact, plus]) r.pasteFrame(uniform(0, 200, faint));
    const at = (x: number, y: number, z: number): number => x + 12 * (y + 4 * z);
    const v3 = at(5, 3, 5);
    assert.equal(exact.coverage()[v3], 1);
    assert.equal(plus.coverage()[v3], 0);
    assert.equal(plus.volume().data[v3], 200); // PLUS's output keeps the value it wrote
    assert.equal(plus.accumulationWeights()[v3], 0);
    // a pixel of weight 1 and value 50 at y = 3: the exact mean keeps a trace of the 200, PLUS's does not
    const onY3 = planeMatrix([1, 3, 1], [1, 0, 0], [0, 0, 1], 1);
    for (const r of [exact, plus]) r.pasteFrame(uniform(1, 50, onY3));
    assert.equal(exact.volume().data[v3], Math.round((0.001 * 200 + 50) / 1.001)); // 50.15 → 50
    assert.equal(plus.volume().data[v3], 50);
    assert.equal(plus.accumulationWeights()[v3], 1);
  });

  test('positions are rounded as PLUS rounds them: snapped to 1/65536 voxel first, so 2^-18 below a rounding edge goes up', () => {
    const e = 2 ** -18;
    const coveredYs = (r: VolumeReconstructor): number[] => {
      const cov = r.coverage();
      const ys = new Set<number>();
      for (let i = 0; i < cov.length; i++) if (cov[i] !== 0) ys.add(Math.floor(i / 12) % 4);
      return [...ys].sort();
    };
    const paste = (interpolation: Interpolation, plusRounding: boolean, y: number): VolumeReconstructor => {
      const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation, plusRounding }, grid);
      r.pasteFrame(uniform(0, 90, planeMatrix([1, y, 1], [1, 0, 0], [0, 0, 1], 1)));
      return r;
    };
    // NN at y = 2.5 − 2^-18: the exact position rounds to voxel 2, PLUS's to voxel 3
    assert.deepEqual(coveredYs(paste('NEAREST_NEIGHBOR', false, 2.5 - e)), [2]);
    assert.deepEqual(coveredYs(paste('NEAREST_NEIGHBOR', true, 2.5 - e)), [3]);
    // … and just outside the volume (y = −0.5 − 2^-18) PLUS still pastes into voxel 0
    assert.deepEqual(coveredYs(paste('NEAREST_NEIGHBOR', false, -0.5 - e)), []);
    assert.deepEqual(coveredYs(paste('NEAREST_NEIGHBOR', true, -0.5 - e)), [0]);
    // LINEAR at y = 2 − 2^-18: exact corners 1 (weight 2^-18) and 2; PLUS's floor is 2 with a
    // fraction of −2^-18, so voxel 3 gets a tiny negative weight (value 90, weight rounding to 0)
    const exact = paste('LINEAR', false, 2 - e);
    const plus = paste('LINEAR', true, 2 - e);
    assert.deepEqual(coveredYs(exact), [1, 2]);
    assert.deepEqual(coveredYs(plus), [2]);
    const v = (y: number): number => 5 + 12 * (y + 4 * 5);
    assert.deepEqual([1, 2, 3].map((y) => plus.volume().data[v(y)]), [0, 90, 90]);
  });

  test('the default stays exact and never saturates', () => {
    const r = run('NEAREST_NEIGHBOR', false, [...Array<number>(600).fill(255), ...Array<number>(600).fill(1)]);
    assert.equal(r.value, 128);
  });

  test('refused for MAXIMUM and LATEST (PLUS rounds nothing there), and must be a boolean', () => {
    for (const compoundingMode of ['MAXIMUM', 'LATEST'] as const) {
      assert.throws(
        () => new VolumeReconstructor({ outputSpacing: [1, 1, 1], compoundingMode, plusRounding: true }, grid),
        (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST' && /plusRounding/.test(e.message) && e.message.includes(compoundingMode),
      );
      assert.doesNotThrow(() => new VolumeReconstructor({ outputSpacing: [1, 1, 1], compoundingMode, plusRounding: false }, grid));
    }
    assert.throws(
      () => new VolumeReconstructor({ outputSpacing: [1, 1, 1], plusRounding: 'yes' as unknown as boolean }, grid),
      (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST' && /plusRounding/.test(e.message),
    );
  });

  test('needs 4 bytes per voxel (uint16 mean + uint16 weight)', () => {
    const g: VolumeGrid = { ...grid, dims: [100, 100, 100] };
    for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as const) {
      assert.equal(estimateReconstructionBytes(g, { outputSpacing: [1, 1, 1], interpolation, plusRounding: true }).accumulatorBytes, 4_000_000);
    }
  });
});

describe('clipping, rejection, skipping', () => {
  const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [80, 3, 60] };
  const m = planeMatrix([0, 1, 0], [1, 0, 0], [0, 0, 1], 1); // pixel (u, v) → voxel (u, 1, v)

  test('the clip rectangle keeps pixels origin…origin+size inclusive (as PLUS)', () => {
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], clipRectangleOrigin: [10, 5], clipRectangleSize: [20, 10] }, grid);
    const res = r.pasteFrame(frame(0, 80, 60, m, () => 200));
    assert.equal(res.pixelsPasted, 21 * 11);
    const cov = r.coverage();
    for (let z = 0; z < 60; z++) {
      for (let x = 0; x < 80; x++) {
        const inside = x >= 10 && x <= 30 && z >= 5 && z <= 15;
        assert.equal(cov[x + 80 + z * 240], inside ? 1 : 0, `(${x}, ${z})`);
      }
    }
  });

  test('fan clipping with optimization NONE excludes pixels outside the angles and radii (PLUS per-pixel predicate)', () => {
    const fan = { fanAnglesDeg: [-30, 40] as const, fanOriginPixel: [40, 2] as const, fanRadiusStartPixel: 10, fanRadiusStopPixel: 45 };
    const inFan = (u: number, v: number): boolean => {
      const x = u - 40;
      const y = v - 2;
      if (y < 0 || x / y < Math.tan(-30 * deg) || x / y > Math.tan(40 * deg)) return false;
      const d = x * x + y * y;
      return d >= 100 && d <= 45 * 45;
    };
    let expected = 0;
    for (let v = 0; v < 60; v++) for (let u = 0; u < 80; u++) if (inFan(u, v)) expected++;
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], compoundingMode: 'MAXIMUM', optimization: 'NONE', ...fan }, grid);
    // inside the fan 100, outside 255: nothing may reach 255
    const res = r.pasteFrame(frame(0, 80, 60, m, (u, v) => (inFan(u, v) ? 100 : 255)));
    assert.equal(res.pixelsPasted, expected);
    const vol = r.volume();
    assert.equal(Math.max(...vol.data), 100);
    const cov = r.coverage();
    for (let z = 0; z < 60; z++) for (let x = 0; x < 80; x++) assert.equal(cov[x + 80 + z * 240], inFan(x, z) ? 1 : 0);
  });

  test('fan clipping with optimization FULL (PLUS default) keeps PLUS optimized-path row spans, one pixel in from each edge', () => {
    const fan = { fanAnglesDeg: [-30, 40] as const, fanOriginPixel: [40, 2] as const, fanRadiusStartPixel: 10, fanRadiusStopPixel: 45 };
    const tanL = Math.tan(-30 * deg);
    const tanR = Math.tan(40 * deg);
    // PLUS vtkOptimizedInsertSlice, per row y = v − 2: [⌈tanL·y + 41⌉, ⌊tanR·y + 39⌋] ∩ [⌈40 − d + 1⌉, ⌊40 + d − 1⌋]
    // with d = √(45² − y²), minus [⌈40 − d0 + 1⌉, ⌊40 + d0 − 1⌋] with d0 = √(10² − y²) when 10² > y²
    const kept = (u: number, v: number): boolean => {
      const y = v - 2;
      if (45 * 45 - y * y < 0) return false;
      const d = Math.sqrt(45 * 45 - y * y);
      const s = Math.max(0, Math.ceil(tanL * y + 41), Math.ceil(40 - d + 1));
      const e = Math.min(79, Math.floor(tanR * y + 39), Math.floor(40 + d - 1));
      if (u < s || u > e) return false;
      if (100 - y * y > 0) {
        const d0 = Math.sqrt(100 - y * y);
        if (u >= Math.ceil(40 - d0 + 1) && u <= Math.floor(40 + d0 - 1)) return false;
      }
      return true;
    };
    const inFanNone = (u: number, v: number): boolean => {
      const x = u - 40;
      const y = v - 2;
      if (y < 0 || x / y < tanL || x / y > tanR) return false;
      const d = x * x + y * y;
      return d >= 100 && d <= 45 * 45;
    };
    let expected = 0;
    let none = 0;
    for (let v = 0; v < 60; v++) {
      for (let u = 0; u < 80; u++) {
        if (kept(u, v)) expected++;
        if (inFanNone(u, v)) none++;
      }
    }
    // about a pixel less at the lines and the stop radius, a pixel more inside the start radius
    assert.ok(expected < none && expected > none * 0.9, `FULL ${expected} vs NONE ${none}`);
    for (const optimization of [undefined, 'FULL', 'PARTIAL'] as const) {
      const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], compoundingMode: 'MAXIMUM', ...(optimization === undefined ? {} : { optimization }), ...fan }, grid);
      const res = r.pasteFrame(frame(0, 80, 60, m, (u, v) => (kept(u, v) ? 100 : 255)));
      assert.equal(res.pixelsPasted, expected);
      assert.equal(Math.max(...r.volume().data), 100);
      const cov = r.coverage();
      for (let z = 0; z < 60; z++) for (let x = 0; x < 80; x++) assert.equal(cov[x + 80 + z * 240], kept(x, z) ? 1 : 0, `(${x}, ${z})`);
    }
  });

  test('pixels darker than PixelRejectionThreshold are not pasted (equal ones are, as PLUS)', () => {
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], pixelRejectionThreshold: 3 }, grid);
    const res = r.pasteFrame(frame(0, 80, 60, m, (u) => (u < 40 ? 2 : u < 60 ? 3 : 50)));
    assert.equal(res.pixelsPasted, 40 * 60);
    const cov = r.coverage();
    assert.equal(cov[39 + 80], 0);
    assert.equal(cov[40 + 80], 1);
    assert.equal(r.volume().data[40 + 80], 3);
  });

  test('SkipInterval uses frames 0, N, 2N …', () => {
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], skipInterval: 3, compoundingMode: 'LATEST' }, grid);
    const used = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => r.pasteFrame(frame(i, 80, 60, m, () => 10 + i)).used);
    assert.deepEqual(used, [true, false, false, true, false, false, true, false]);
    assert.deepEqual(r.stats, { framesSeen: 8, framesUsed: 3, pixelsPasted: 3 * 80 * 60 });
    assert.equal(r.volume().data[80], 16);
  });
});

describe('output grid', () => {
  test('computeOutputGrid: bounding box of the clipped frame corners, PLUS rule', () => {
    // 101×51 px at 0.5 mm: corners (0,0)…(100,50) → x 5…55, z −3…22; two frames at y = 1 and y = 7
    const f0 = frame(0, 101, 51, planeMatrix([5, 1, -3], [1, 0, 0], [0, 0, 1], 0.5), () => 1);
    const f1 = frame(1, 101, 51, planeMatrix([5, 7, -3], [1, 0, 0], [0, 0, 1], 0.5), () => 1);
    const g = computeOutputGrid([f0, f1], { outputSpacing: [0.4, 0.4, 0.4] });
    assert.deepEqual(g.originMm, { x: 5, y: 1, z: -3 });
    // dims = round((max − min) / spacing) + 1: x 50/0.4 = 125 → 126, y 6/0.4 = 15 → 16, z 25/0.4 = 62.5 → 63 (round half up) → 64
    assert.deepEqual(g.dims, [126, 16, 64]);
    // with a clip rectangle: x 10…30 px → 10…20 mm, z rows 4…14 → −1…4 mm
    const c = computeOutputGrid([f0, f1], { outputSpacing: [1, 1, 1], clipRectangleOrigin: [20, 4], clipRectangleSize: [40, 10] });
    assert.deepEqual(c.originMm, { x: 15, y: 1, z: -1 });
    assert.deepEqual(c.dims, [21, 7, 6]);
  });

  test('an explicit OutputOrigin + OutputExtent grid', () => {
    const g = gridFromExtent({ outputSpacing: [0.5, 0.5, 1], outputOrigin: [-15, -15, 30], outputExtent: [2, 11, 0, 4, 1, 3] });
    assert.deepEqual(g, { originMm: { x: -14, y: -15, z: 31 }, spacingMm: { x: 0.5, y: 0.5, z: 1 }, dims: [10, 5, 3] });
  });
});

describe('accumulators and memory', () => {
  for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as const) {
    test(`10 000 overlapping frames do not saturate (${interpolation})`, () => {
      const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [6, 3, 6] };
      const m = planeMatrix([1, 1.3, 1], [1, 0, 0], [0, 0, 1], 0.5);
      const bright = frame(0, 8, 8, m, () => 255);
      const dark = frame(1, 8, 8, m, () => 1); // 255 and 1 average to 128 exactly (no .5 tie)
      const all255 = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation }, grid);
      const mixed = new VolumeReconstructor({ outputSpacing: [1, 1, 1], interpolation }, grid);
      for (let i = 0; i < 10_000; i++) {
        all255.pasteFrame(bright);
        mixed.pasteFrame(i % 2 === 0 ? bright : dark);
      }
      const a = all255.volume();
      const b = mixed.volume();
      const cov = all255.coverage();
      let n = 0;
      for (let i = 0; i < a.data.length; i++) {
        if (cov[i] === 0) continue;
        n++;
        assert.equal(a.data[i], 255);
        assert.equal(b.data[i], 128);
      }
      assert.ok(n >= 9);
      // the late frames still count: 10 000 × 255, then 10 000 × 1 → 128
      for (let i = 0; i < 10_000; i++) all255.pasteFrame(dark);
      for (let i = 0; i < a.data.length; i++) if (cov[i] !== 0) assert.equal(all255.volume().data[i], 128);
    });
  }

  test('a grid over the memory budget is refused before allocating, with the size and a way out', () => {
    const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 0.1, y: 0.1, z: 0.1 }, dims: [1000, 1000, 800] };
    const est = estimateReconstructionBytes(grid, { outputSpacing: [0.1, 0.1, 0.1] });
    assert.equal(est.accumulatorBytes, 8 * 800_000_000);
    assert.throws(
      () => new VolumeReconstructor({ outputSpacing: [0.1, 0.1, 0.1] }, grid),
      (err: unknown) =>
        err instanceof Eco3dError &&
        err.code === 'ECO3D_ERR_BAD_REQUEST' &&
        /1000×1000×800/.test(err.message) &&
        /MiB/.test(err.message) &&
        /outputSpacing/.test(err.message) &&
        err.details?.neededBytes === est.totalBytes,
    );
    const small: VolumeGrid = { ...grid, dims: [100, 100, 100] };
    assert.throws(() => new VolumeReconstructor({ outputSpacing: [0.1, 0.1, 0.1], memoryBudgetBytes: 1_000_000 }, small), /over the 1 MiB budget/);
    assert.doesNotThrow(() => new VolumeReconstructor({ outputSpacing: [0.1, 0.1, 0.1], compoundingMode: 'MAXIMUM', memoryBudgetBytes: 5_000_000 }, small));
  });

  test('bad frames are refused with the frame named', () => {
    const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [4, 4, 4] };
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1] }, grid);
    const m = planeMatrix([0, 0, 0], [1, 0, 0], [0, 0, 1], 1);
    m[3] = Number.NaN;
    assert.throws(() => r.pasteFrame(frame(7, 2, 2, m, () => 1)), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_NOT_FINITE' && /frame 7/.test(e.message));
    const ok = planeMatrix([0, 0, 0], [1, 0, 0], [0, 0, 1], 1);
    assert.throws(() => r.pasteFrame({ index: 8, tMs: 0, width: 3, height: 3, pixels: new Uint8Array(4), imageToReference: ok }), /frame 8/);
  });
});

describe('brick change tracking', () => {
  test('reports every brick whose voxels changed, then nothing until the next frame', () => {
    const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [40, 40, 36] };
    const r = new VolumeReconstructor({ outputSpacing: [1, 1, 1], brickSize: 8 }, grid);
    assert.equal(r.takeChangedBricks().indices.length, 0);
    const before = r.volume().data.slice();
    // a tilted plane through part of the volume
    const t = 25 * deg;
    const f = frame(0, 50, 30, planeMatrix([3, 10, 2], [Math.cos(t), Math.sin(t), 0], [0, 0, 1], 0.6), (u, v) => 50 + ((u + v) % 100));
    r.pasteFrame(f);
    const changed = r.takeChangedBricks();
    assert.deepEqual(changed.bricksPerAxis, [5, 5, 5]);
    const set = new Set(changed.indices);
    const after = r.volume().data;
    const touched = new Set<number>();
    for (let i = 0; i < after.length; i++) {
      if (after[i] === before[i]) continue;
      const x = i % 40;
      const y = Math.floor(i / 40) % 40;
      const z = Math.floor(i / 1600);
      const b = (x >> 3) + 5 * ((y >> 3) + 5 * (z >> 3));
      touched.add(b);
      assert.ok(set.has(b), `brick ${b} changed but was not reported`);
    }
    assert.ok(touched.size > 3);
    assert.ok(set.size <= touched.size * 3, `reported ${set.size} bricks for ${touched.size} changed`);
    // a brick's voxels are the volume's
    for (const b of changed.indices) {
      const bv = r.brickVoxels(b);
      for (let z = 0; z < bv.dims[2]; z++) {
        for (let y = 0; y < bv.dims[1]; y++) {
          for (let x = 0; x < bv.dims[0]; x++) {
            const vi = bv.start[0] + x + (bv.start[1] + y) * 40 + (bv.start[2] + z) * 1600;
            assert.equal(bv.data[x + bv.dims[0] * (y + bv.dims[1] * z)], after[vi]);
          }
        }
      }
    }
    assert.equal(r.takeChangedBricks().indices.length, 0);
  });
});

describe('determinism across workers', () => {
  const pools: ReconstructionWorkerPool[] = [];
  before(async () => {
    for (const n of [1, 2, 3]) pools.push(await ReconstructionWorkerPool.create(n));
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  // overlapping, tilted, noisy frames so that order matters for float sums, LATEST and MAXIMUM
  const frames: TrackedFrame[] = [];
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  for (let k = 0; k < 30; k++) {
    const a = (k * 7) % 40 * deg;
    const b = ((k * 13) % 30 - 15) * deg;
    const U: V3 = [Math.cos(a), Math.sin(a), 0];
    const V: V3 = [-Math.sin(a) * Math.sin(b), Math.cos(a) * Math.sin(b), Math.cos(b)];
    frames.push(frame(k, 70, 60, planeMatrix([2 + rnd() * 3, 4 + k * 0.4, 1 + rnd()], U, V, 0.3), () => Math.floor(rnd() * 256)));
  }
  const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 0.5, y: 0.5, z: 0.5 }, dims: [50, 60, 45] };
  for (const interpolation of ['NEAREST_NEIGHBOR', 'LINEAR'] as Interpolation[]) {
    for (const [compoundingMode, plusRounding] of [['MEAN', false], ['MEAN', true], ['MAXIMUM', false], ['LATEST', false]] as [CompoundingMode, boolean][]) {
      test(`${interpolation} ${compoundingMode}${plusRounding ? ' plusRounding' : ''}: 1, 2, 3 workers and the main thread give the same bytes`, async () => {
        const options: ReconstructionOptions = { outputSpacing: [0.5, 0.5, 0.5], interpolation, compoundingMode, skipInterval: 1, plusRounding };
        const single = new VolumeReconstructor(options, grid);
        for (const f of frames) single.pasteFrame(f);
        const ref = single.volume().data;
        const filled = ref.reduce((s, v) => s + (v > 0 ? 1 : 0), 0);
        assert.ok(filled > 5000, `filled ${filled}`);
        for (const pool of pools) {
          const r = await reconstructParallel(frames, options, pool, grid);
          assert.ok(Buffer.from(r.volume().data).equals(Buffer.from(ref)), `${pool.size} workers differ`);
          assert.ok(Buffer.from(r.coverage()).equals(Buffer.from(single.coverage())));
          assert.equal(r.stats.pixelsPasted, single.stats.pixelsPasted);
          assert.deepEqual(r.accumulationWeights(), single.accumulationWeights());
        }
        if (plusRounding) {
          // the mode is order-dependent (as PLUS): the same frames reversed give other bytes
          const reversed = new VolumeReconstructor(options, grid);
          for (const f of [...frames].reverse()) reversed.pasteFrame(f);
          assert.ok(!Buffer.from(reversed.volume().data).equals(Buffer.from(ref)));
          const exact = new VolumeReconstructor({ ...options, plusRounding: false }, grid);
          for (const f of frames) exact.pasteFrame(f);
          assert.ok(!Buffer.from(exact.volume().data).equals(Buffer.from(ref)));
        }
      });
    }
  }

  test('a worker count (not a pool) works and closes its pool', async () => {
    const options: ReconstructionOptions = { outputSpacing: [0.5, 0.5, 0.5], skipInterval: 2 };
    const single = new VolumeReconstructor(options, grid);
    for (const f of frames) single.pasteFrame(f);
    const r = await reconstructParallel(frames, options, 2, grid);
    assert.ok(Buffer.from(r.volume().data).equals(Buffer.from(single.volume().data)));
    assert.equal(r.stats.framesUsed, 15);
  });
});

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import type { Volume, VolumeGrid } from '../protocols/imaging.ts';
import { fillHoles, type HoleFillingElement } from './holefill.ts';

const N = 16;
const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [N, N, N] };
const at = (x: number, y: number, z: number): number => x + y * N + z * N * N;

/** A volume known everywhere (value = 10·x + 40, a ramp along x) except a few holes. */
function rampWithHoles(holes: readonly (readonly [number, number, number])[]): { vol: Volume; cov: Uint8Array } {
  const data = new Uint8Array(N * N * N);
  const cov = new Uint8Array(N * N * N).fill(1);
  for (let z = 0; z < N; z++) for (let y = 0; y < N; y++) for (let x = 0; x < N; x++) data[at(x, y, z)] = 10 * x + 40;
  for (const [x, y, z] of holes) {
    data[at(x, y, z)] = 0;
    cov[at(x, y, z)] = 0;
  }
  return { vol: { grid, data }, cov };
}

const ELEMENTS: Record<string, HoleFillingElement> = {
  STICK: { type: 'STICK', stickLengthLimit: 9, numberOfSticksToUse: 1 },
  GAUSSIAN: { type: 'GAUSSIAN', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0.5 },
  GAUSSIAN_ACCUMULATION: { type: 'GAUSSIAN_ACCUMULATION', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0.5 },
  NEAREST_NEIGHBOR: { type: 'NEAREST_NEIGHBOR', size: 3, minimumKnownVoxelsRatio: 0.5 },
  DISTANCE_WEIGHT_INVERSE: { type: 'DISTANCE_WEIGHT_INVERSE', size: 3, minimumKnownVoxelsRatio: 0.5 },
};

describe('fillHoles', () => {
  for (const [name, element] of Object.entries(ELEMENTS)) {
    test(`${name} fills isolated holes in a ramp with the ramp's value and leaves known voxels alone`, () => {
      const holes = [[5, 5, 5], [9, 3, 12], [2, 14, 7]] as const;
      const { vol, cov } = rampWithHoles(holes);
      const accumulation = new Float32Array(N * N * N).fill(3);
      const res = fillHoles(vol, cov, [element], { accumulation });
      assert.equal(res.filledVoxels, 3);
      assert.equal(res.remainingHoles, 0);
      // STICK: the x, y and z sticks tie (length 3). PLUS weighs a stick's forward end by
      // (rvs + 1) / total = 2/3, so the x stick reads ramp + 10/3 and the mean ramp + 10/9.
      const bias = name === 'STICK' ? 1 : 0;
      for (const [x, y, z] of holes) {
        assert.equal(res.volume.data[at(x, y, z)], 10 * x + 40 + bias, `${name} at ${x},${y},${z}`);
        assert.equal(res.coverage[at(x, y, z)], 1);
      }
      for (let i = 0; i < vol.data.length; i++) if (cov[i] === 1) assert.equal(res.volume.data[i], vol.data[i]);
      // the input is untouched
      assert.equal(vol.data[at(5, 5, 5)], 0);
    });
  }

  test('STICK bridges a 5-voxel gap along x by linear interpolation of its ends (PLUS weighting, truncated)', () => {
    // known: x ≤ 3 (value 40) and x ≥ 9 (value 200); holes x = 4…8, in a line only (y, z fixed)
    const data = new Uint8Array(N * N * N);
    const cov = new Uint8Array(N * N * N);
    for (let x = 0; x < N; x++) {
      if (x <= 3 || x >= 9) {
        cov[at(x, 8, 8)] = 1;
        data[at(x, 8, 8)] = x <= 3 ? 40 : 200;
      }
    }
    const res = fillHoles({ grid, data }, cov, [{ type: 'STICK', stickLengthLimit: 9, numberOfSticksToUse: 1 }]);
    // hole x = 4: fwd reaches x = 9 after 5 steps, rvs x = 3 after 1 → total 7, fwd weight (1 + 1) / 7
    const expect = (x: number): number => {
      const fwd = 9 - x;
      const rvs = x - 3;
      const total = fwd + rvs + 1;
      const wf = (rvs + 1) / total;
      return Math.floor(wf * 200 + (1 - wf) * 40); // PLUS truncates the stick's value
    };
    for (let x = 4; x <= 8; x++) assert.equal(res.volume.data[at(x, 8, 8)], expect(x), `x = ${x}`);
    assert.equal(res.filledVoxels, 5);
  });

  test('fill values are truncated to a level, as PLUS assigns them to the voxel type', () => {
    // the hole (5, 5, 5) sees 100 and 101 at distance 1: NEAREST_NEIGHBOR mean 100.5 → 100
    const data = new Uint8Array(N * N * N);
    const cov = new Uint8Array(N * N * N);
    cov[at(4, 5, 5)] = 1;
    data[at(4, 5, 5)] = 100;
    cov[at(6, 5, 5)] = 1;
    data[at(6, 5, 5)] = 101;
    const res = fillHoles({ grid, data }, cov, [{ type: 'NEAREST_NEIGHBOR', size: 3, minimumKnownVoxelsRatio: 0 }]);
    assert.equal(res.volume.data[at(5, 5, 5)], 100);
    // GAUSSIAN: symmetric weights, same mean → 100
    const g = fillHoles({ grid, data }, cov, [{ type: 'GAUSSIAN', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0 }]);
    assert.equal(g.volume.data[at(5, 5, 5)], 100);
  });

  test('a hole no element fills is 0 in the output, even if the reconstruction left a value there', () => {
    // a LINEAR voxel whose rounded weight is 0 holds a value but is a hole (PLUS: acc = 0)
    const data = new Uint8Array(N * N * N);
    const cov = new Uint8Array(N * N * N);
    data[at(2, 2, 2)] = 77; // hole with a value, nothing known nearby
    data[at(10, 10, 10)] = 50; // hole with a value, a known voxel next to it
    cov[at(11, 10, 10)] = 1;
    data[at(11, 10, 10)] = 90;
    const res = fillHoles({ grid, data }, cov, [{ type: 'NEAREST_NEIGHBOR', size: 3, minimumKnownVoxelsRatio: 0 }]);
    assert.equal(res.volume.data[at(2, 2, 2)], 0);
    assert.equal(res.coverage[at(2, 2, 2)], 0);
    assert.equal(res.volume.data[at(10, 10, 10)], 90);
  });

  test('elements are tried in order: a failing element falls through to the next', () => {
    // a hole in a sparse neighbourhood: GAUSSIAN with a high known ratio fails, NEAREST_NEIGHBOR succeeds
    const data = new Uint8Array(N * N * N);
    const cov = new Uint8Array(N * N * N);
    cov[at(6, 5, 5)] = 1;
    data[at(6, 5, 5)] = 90;
    cov[at(5, 5, 7)] = 1;
    data[at(5, 5, 7)] = 200;
    const strict: HoleFillingElement = { type: 'GAUSSIAN', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0.5 };
    const nn: HoleFillingElement = { type: 'NEAREST_NEIGHBOR', size: 5, minimumKnownVoxelsRatio: 0 };
    const onlyStrict = fillHoles({ grid, data }, cov, [strict]);
    assert.equal(onlyStrict.volume.data[at(5, 5, 5)], 0);
    const both = fillHoles({ grid, data }, cov, [strict, nn]);
    // NEAREST_NEIGHBOR: the 3×3×3 cube holds only (6,5,5) → 90 (the 200 is 2 away)
    assert.equal(both.volume.data[at(5, 5, 5)], 90);
    // (5,5,6) sees both in its 3×3×3 cube → mean 145
    assert.equal(both.volume.data[at(5, 5, 6)], 145);
    // far away holes stay holes
    assert.equal(both.volume.data[at(14, 14, 14)], 0);
    assert.equal(both.coverage[at(14, 14, 14)], 0);
    assert.equal(both.filledVoxels + both.remainingHoles, N * N * N - 2);
  });

  test('MinimumKnownVoxelsRatio is a strict lower bound over the full cube', () => {
    const { vol, cov } = rampWithHoles([[5, 5, 5]]);
    // 26 of 27 known: ratio 0.963 > 0.96 fills, > 0.97 does not
    assert.equal(fillHoles(vol, cov, [{ type: 'GAUSSIAN', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0.96 }]).filledVoxels, 1);
    assert.equal(fillHoles(vol, cov, [{ type: 'GAUSSIAN', size: 3, stdev: 1, minimumKnownVoxelsRatio: 0.97 }]).filledVoxels, 0);
  });

  test('MinimumKnownVoxelsRatio is compared as PLUS\'s C++ float: 5 known of 5³ pass a ratio of 0.04', () => {
    // float(0.04) = 0.039999999105… < 5 / 125 = 0.04, so PLUS fills (checked against PLUS's own build)
    const data = new Uint8Array(N * N * N);
    const cov = new Uint8Array(N * N * N);
    for (const [x, y, z] of [[4, 5, 5], [6, 5, 5], [5, 4, 5], [5, 6, 5], [5, 5, 4]] as const) {
      cov[at(x, y, z)] = 1;
      data[at(x, y, z)] = 80;
    }
    for (const e of [
      { type: 'NEAREST_NEIGHBOR', size: 5, minimumKnownVoxelsRatio: 0.04 },
      { type: 'GAUSSIAN', size: 5, stdev: 1, minimumKnownVoxelsRatio: 0.04 },
      { type: 'DISTANCE_WEIGHT_INVERSE', size: 5, minimumKnownVoxelsRatio: 0.04 },
    ] as const) {
      const res = fillHoles({ grid, data }, cov, [e]);
      assert.equal(res.volume.data[at(5, 5, 5)], 80, e.type);
    }
    // 0.041 as a float is above 0.04: no fill at (5, 5, 5)
    const none = fillHoles({ grid, data }, cov, [{ type: 'GAUSSIAN', size: 5, stdev: 1, minimumKnownVoxelsRatio: 0.041 }]);
    assert.equal(none.volume.data[at(5, 5, 5)], 0);
  });

  test('STICK truncates exactly, as PLUS: a hole among voxels of 7 reads 6 (round-off of the tied sticks\' mean)', () => {
    // the x, y and z sticks tie (ends at distance 1, value 7): Σ 7·(1/3) / Σ 1/3 = 6.999999999999999 → 6 in PLUS
    const data = new Uint8Array(N * N * N).fill(7);
    const cov = new Uint8Array(N * N * N).fill(1);
    data[at(5, 5, 5)] = 0;
    cov[at(5, 5, 5)] = 0;
    const res = fillHoles({ grid, data }, cov, [{ type: 'STICK', stickLengthLimit: 9, numberOfSticksToUse: 1 }]);
    assert.equal(res.volume.data[at(5, 5, 5)], 6);
    data.fill(8);
    data[at(5, 5, 5)] = 0;
    assert.equal(fillHoles({ grid, data }, cov, [{ type: 'STICK', stickLengthLimit: 9, numberOfSticksToUse: 1 }]).volume.data[at(5, 5, 5)], 8);
  });

  test('bad parameters and a missing accumulation buffer are refused', () => {
    const { vol, cov } = rampWithHoles([[5, 5, 5]]);
    assert.throws(() => fillHoles(vol, cov, [{ type: 'GAUSSIAN', size: 4, stdev: 1, minimumKnownVoxelsRatio: 0.5 }]), /odd integer/);
    assert.throws(() => fillHoles(vol, cov, [{ type: 'STICK', stickLengthLimit: 1, numberOfSticksToUse: 1 }]), /stickLengthLimit/);
    assert.throws(
      () => fillHoles(vol, cov, [ELEMENTS.GAUSSIAN_ACCUMULATION!]),
      (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST' && /accumulation/.test(e.message),
    );
  });

  test('GAUSSIAN_ACCUMULATION weighs known voxels by their accumulated weight', () => {
    const { vol, cov } = rampWithHoles([[5, 5, 5]]);
    const accumulation = new Float32Array(N * N * N).fill(1);
    // make the x = 6 side count 100× more: the fill leans towards 10·6 + 40 = 100
    for (let z = 4; z <= 6; z++) for (let y = 4; y <= 6; y++) accumulation[at(6, y, z)] = 100;
    const res = fillHoles(vol, cov, [ELEMENTS.GAUSSIAN_ACCUMULATION!], { accumulation });
    const v = res.volume.data[at(5, 5, 5)]!;
    assert.ok(v > 95 && v <= 100, `filled ${v}`);
  });
});

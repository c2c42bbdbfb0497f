import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { quatToMat3 } from '../protocols/geometry.ts';
import type { Vec3 } from '../protocols/robot.ts';
import { PATIENT_TORSO } from '../protocols/scene.ts';
import { skinSurfaceAt } from './patient.ts';
import { createPhantom, DEFAULT_ECHOGENICITY, labelVolume, PHANTOM_LABELS, type EllipsoidLesion, type PhantomStructure, type VesselTube } from './phantom.ts';

const TOP = { x: PATIENT_TORSO.centerMm.x, y: PATIENT_TORSO.centerMm.y, z: PATIENT_TORSO.centerMm.z + PATIENT_TORSO.semiAxesMm.z };
const L = PHANTOM_LABELS;
const lesionsOf = (s: readonly PhantomStructure[]): Exclude<PhantomStructure, VesselTube>[] =>
  s.filter((x): x is Exclude<PhantomStructure, VesselTube> => x.shape !== 'tube');
const vesselOf = (s: readonly PhantomStructure[]): VesselTube => {
  const v = s.find((x): x is VesselTube => x.shape === 'tube');
  assert.ok(v !== undefined, 'the phantom has a vessel');
  return v;
};
/** A point of an ellipsoid lesion at local (a·fx, b·fy, c·fz), in the base frame. */
function ellipsoidPoint(e: EllipsoidLesion, fx: number, fy: number, fz: number): Vec3 {
  const r = quatToMat3(e.orientation);
  const l = [e.semiAxesMm.x * fx, e.semiAxesMm.y * fy, e.semiAxesMm.z * fz];
  return {
    x: e.centerMm.x + r[0] * l[0]! + r[1] * l[1]! + r[2] * l[2]!,
    y: e.centerMm.y + r[3] * l[0]! + r[4] * l[1]! + r[5] * l[2]!,
    z: e.centerMm.z + r[6] * l[0]! + r[7] * l[1]! + r[8] * l[2]!,
  };
}

void describe('createPhantom', () => {
  void it('is deterministic for a seed and differs between seeds', () => {
    const a = createPhantom(7), b = createPhantom(7), c = createPhantom(8);
    assert.deepEqual(a.structures, b.structures);
    assert.notDeepEqual(a.structures, c.structures);
  });

  void it('places 3 hypo and 3 hyper lesions, spheres and ellipsoids, whole inside the sweep box, and a vessel in view', () => {
    for (let seed = 1; seed <= 25; seed++) {
      const ph = createPhantom(seed);
      const lesions = lesionsOf(ph.structures);
      assert.equal(lesions.length, 6);
      assert.equal(lesions.filter((l) => l.label === L.hypoLesion).length, 3);
      assert.equal(lesions.filter((l) => l.label === L.hyperLesion).length, 3);
      assert.ok(lesions.some((l) => l.shape === 'sphere') && lesions.some((l) => l.shape === 'ellipsoid'));
      assert.deepEqual(ph.structures.map((s) => s.id), [0, 1, 2, 3, 4, 5, 6]);
      for (const l of lesions) {
        const c = l.centerMm, rb = l.boundingRadiusMm;
        assert.ok(2 * rb >= 4.5 && 2 * rb <= 15, `seed ${seed} lesion ${l.id}: diameter ${2 * rb}`);
        assert.ok(Math.abs(c.x - TOP.x) + rb <= 20 && Math.abs(c.y - TOP.y) + rb <= 36, `seed ${seed} lesion ${l.id} inside the x/y box`);
        const depth = skinSurfaceAt(c.x, c.y)!.zMm - c.z;
        assert.ok(depth - rb >= 6 && depth + rb <= 42, `seed ${seed} lesion ${l.id}: depth ${depth} ± ${rb}`);
        for (const o of lesions) {
          if (o.id <= l.id) continue;
          const d = Math.hypot(o.centerMm.x - c.x, o.centerMm.y - c.y, o.centerMm.z - c.z);
          assert.ok(d >= rb + o.boundingRadiusMm, `seed ${seed}: lesions ${l.id} and ${o.id} overlap`);
        }
      }
      const v = vesselOf(ph.structures);
      const outer = v.radiusMm + v.wallMm;
      for (const y of [TOP.y - 40, TOP.y + 40]) {
        const t = (y - v.startMm.y) / (v.endMm.y - v.startMm.y);
        const x = v.startMm.x + t * (v.endMm.x - v.startMm.x);
        assert.ok(Math.abs(x - TOP.x) + outer <= 32, `seed ${seed}: vessel inside a 64 mm linear field at x = 450, y = ${y}`);
      }
      assert.ok(Math.abs(v.startMm.y - TOP.y) >= 40 && Math.abs(v.endMm.y - TOP.y) >= 40, 'the vessel spans the sweep');
    }
  });

  void it('refuses options with no room for the lesions', () => {
    assert.throws(() => createPhantom(1, { lesionCount: 200 }), RangeError);
    assert.throws(() => createPhantom(1, { lesionCount: -1 }), RangeError);
    assert.equal(createPhantom(1, { lesionCount: 0, vessel: 'none' }).structures.length, 0);
  });
});

void describe('labelAt and echogenicityAt', () => {
  const ph = createPhantom(3);

  void it('labels the outside, the skin layer and the tissue along the vertical through the torso top', () => {
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: TOP.z + 0.1 }), L.outside);
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: -0.1 }), L.outside, 'below the table');
    assert.equal(ph.labelAt({ x: TOP.x + 400, y: 0, z: 50 }), L.outside);
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: TOP.z - 0.1 }), L.skin);
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: TOP.z - 1.9 }), L.skin);
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: TOP.z - 2.1 }), L.tissue);
    assert.equal(ph.labelAt({ x: TOP.x, y: TOP.y, z: 3 }), L.tissue);
    // The skin follows the curved surface: 1 mm under it, along the normal, far from the top.
    const s = skinSurfaceAt(TOP.x + 120, TOP.y - 150)!;
    const under = (d: number): Vec3 => ({ x: TOP.x + 120 - d * s.normal.x, y: TOP.y - 150 - d * s.normal.y, z: s.zMm - d * s.normal.z });
    assert.equal(ph.labelAt(under(1)), L.skin);
    assert.equal(ph.labelAt(under(3)), L.tissue);
    assert.equal(ph.echogenicityAt(under(1)), DEFAULT_ECHOGENICITY.skin);
    assert.equal(ph.echogenicityAt(under(3)), DEFAULT_ECHOGENICITY.tissue);
    assert.equal(ph.echogenicityAt({ x: 0, y: 0, z: 0 }), 0);
  });

  void it('labels lesions inside and not just outside their surface', () => {
    for (const l of lesionsOf(ph.structures)) {
      assert.equal(ph.labelAt(l.centerMm), l.label);
      assert.equal(ph.echogenicityAt(l.centerMm), l.label === L.hypoLesion ? DEFAULT_ECHOGENICITY.hypoLesion : DEFAULT_ECHOGENICITY.hyperLesion);
      const probes: [Vec3, Vec3][] =
        l.shape === 'sphere'
          ? [[{ x: 0.97, y: 0, z: 0 }, { x: 1.03, y: 0, z: 0 }], [{ x: 0, y: 0, z: -0.97 }, { x: 0, y: 0, z: -1.03 }]].map(([a, b]) => [
              { x: l.centerMm.x + a!.x * l.radiusMm, y: l.centerMm.y, z: l.centerMm.z + a!.z * l.radiusMm },
              { x: l.centerMm.x + b!.x * l.radiusMm, y: l.centerMm.y, z: l.centerMm.z + b!.z * l.radiusMm },
            ])
          : [
              [ellipsoidPoint(l, 0.97, 0, 0), ellipsoidPoint(l, 1.03, 0, 0)],
              [ellipsoidPoint(l, 0, 0.97, 0), ellipsoidPoint(l, 0, 1.03, 0)],
              [ellipsoidPoint(l, 0, 0, -0.97), ellipsoidPoint(l, 0, 0, -1.03)],
            ];
      for (const [inside, outside] of probes) {
        assert.equal(ph.labelAt(inside), l.label, `lesion ${l.id} just inside`);
        assert.equal(ph.labelAt(outside), L.tissue, `lesion ${l.id} just outside`);
      }
    }
  });

  void it('labels the vessel lumen and wall', () => {
    const v = vesselOf(ph.structures);
    const mid = { x: (v.startMm.x + v.endMm.x) / 2, y: (v.startMm.y + v.endMm.y) / 2, z: (v.startMm.z + v.endMm.z) / 2 };
    // Straight up is perpendicular enough to a nearly horizontal tube: step by the true distance.
    const d = { x: v.endMm.x - v.startMm.x, y: v.endMm.y - v.startMm.y, z: v.endMm.z - v.startMm.z };
    const len = Math.hypot(d.x, d.y, d.z);
    const up = { x: -(d.z * d.x) / len ** 2, y: -(d.z * d.y) / len ** 2, z: 1 - (d.z * d.z) / len ** 2 };
    const n = Math.hypot(up.x, up.y, up.z);
    const at = (r: number): Vec3 => ({ x: mid.x + (up.x / n) * r, y: mid.y + (up.y / n) * r, z: mid.z + (up.z / n) * r });
    assert.equal(ph.labelAt(mid), L.vesselLumen);
    assert.equal(ph.labelAt(at(v.radiusMm - 0.1)), L.vesselLumen);
    assert.equal(ph.labelAt(at(v.radiusMm + v.wallMm / 2)), L.vesselWall);
    assert.equal(ph.labelAt(at(v.radiusMm + v.wallMm + 0.1)), L.tissue);
    assert.equal(ph.echogenicityAt(mid), DEFAULT_ECHOGENICITY.vesselLumen);
    assert.equal(ph.echogenicityAt(at(v.radiusMm + v.wallMm / 2)), DEFAULT_ECHOGENICITY.vesselWall);
  });
});

void describe('labelVolume', () => {
  const ph = createPhantom(5);

  void it('agrees with labelAt voxel by voxel and is deterministic', () => {
    const grid = { originMm: { x: 405.1, y: -45.2, z: 60.3 }, spacingMm: { x: 1.1, y: 1.3, z: 0.9 }, dims: [82, 70, 70] as const };
    const vol = labelVolume(ph, grid);
    assert.equal(vol.data.length, 82 * 70 * 70);
    let i = 0;
    const seen = new Set<number>();
    for (let k = 0; k < 70; k++) {
      for (let j = 0; j < 70; j++) {
        for (let x = 0; x < 82; x++, i++) {
          const expected = ph.labelAt({ x: 405.1 + x * 1.1, y: -45.2 + j * 1.3, z: 60.3 + k * 0.9 });
          if (vol.data[i] !== expected) assert.fail(`voxel ${x},${j},${k}: ${vol.data[i]} vs labelAt ${expected}`);
          seen.add(expected);
        }
      }
    }
    assert.deepEqual([...seen].sort(), [0, 1, 2, 3, 4, 5, 6], 'every label appears over the sweep region');
    assert.deepEqual(labelVolume(createPhantom(5), grid).data, vol.data);
  });

  void it('gives each lesion its analytic volume and centre', () => {
    for (const l of lesionsOf(ph.structures)) {
      const s = 0.2, r = l.boundingRadiusMm + 0.5, n = Math.ceil((2 * r) / s);
      const o = { x: l.centerMm.x - r, y: l.centerMm.y - r, z: l.centerMm.z - r };
      const vol = labelVolume(ph, { originMm: o, spacingMm: { x: s, y: s, z: s }, dims: [n, n, n] });
      let count = 0, sx = 0, sy = 0, sz = 0;
      for (let k = 0, i = 0; k < n; k++) for (let j = 0; j < n; j++) for (let x = 0; x < n; x++, i++) {
        if (vol.data[i] !== l.label) continue;
        count++;
        sx += x; sy += j; sz += k;
      }
      const a = l.shape === 'sphere' ? { x: l.radiusMm, y: l.radiusMm, z: l.radiusMm } : l.semiAxesMm;
      const expected = ((4 / 3) * Math.PI * a.x * a.y * a.z) / s ** 3;
      assert.ok(Math.abs(count / expected - 1) < 0.03, `lesion ${l.id}: ${count} voxels vs ${expected.toFixed(0)}`);
      assert.ok(Math.abs(o.x + (sx / count) * s - l.centerMm.x) < 0.05, `lesion ${l.id} centroid x`);
      assert.ok(Math.abs(o.y + (sy / count) * s - l.centerMm.y) < 0.05, `lesion ${l.id} centroid y`);
      assert.ok(Math.abs(o.z + (sz / count) * s - l.centerMm.z) < 0.05, `lesion ${l.id} centroid z`);
    }
  });

  void it('refuses a bad grid', () => {
    const ok = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 } };
    assert.throws(() => labelVolume(ph, { ...ok, dims: [0, 1, 1] }), RangeError);
    assert.throws(() => labelVolume(ph, { ...ok, dims: [1.5, 1, 1] }), RangeError);
    assert.throws(() => labelVolume(ph, { ...ok, dims: [2048, 2048, 2048] }), RangeError);
    assert.throws(() => labelVolume(ph, { originMm: { x: Number.NaN, y: 0, z: 0 }, spacingMm: ok.spacingMm, dims: [1, 1, 1] }), RangeError);
  });
});

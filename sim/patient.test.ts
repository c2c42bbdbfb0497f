import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Pose, Vec3 } from '../protocols/robot.ts';
import { cross, dot, norm, quatFromAxisAngle, quatMul, sub } from '../protocols/geometry.ts';
import { HOME_POSE, PATIENT_TORSO } from '../protocols/scene.ts';
import { PatientModel, skinQuery, skinSurfaceAt, TISSUE_STIFFENING_N_PER_MM2, tissueForceN } from './patient.ts';
import { createPrng } from './prng.ts';

const C = PATIENT_TORSO.centerMm;
const A = PATIENT_TORSO.semiAxesMm;
const TOP_Z = C.z + A.z;
const DOWN = HOME_POSE.orientation;
const close = (a: number, b: number, tol: number, what: string): void =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);
const ellipsoidF = (p: Vec3): number => ((p.x - C.x) / A.x) ** 2 + ((p.y - C.y) / A.y) ** 2 + ((p.z - C.z) / A.z) ** 2;

void describe('skin surface', () => {
  void it('is the torso top at the centre, with the normal straight up', () => {
    const s = skinSurfaceAt(C.x, C.y);
    assert.ok(s !== null, 'centre is on the torso');
    close(s.zMm, TOP_Z, 1e-12, 'height');
    close(s.normal.z, 1, 1e-12, 'normal z');
  });

  void it('lies on the ellipsoid with the gradient as normal, and is null off the footprint', () => {
    const s = skinSurfaceAt(C.x + 100, C.y - 150);
    assert.ok(s !== null, 'inside the footprint');
    const p = { x: C.x + 100, y: C.y - 150, z: s.zMm };
    close(ellipsoidF(p), 1, 1e-12, 'on surface');
    const g = { x: (p.x - C.x) / A.x ** 2, y: (p.y - C.y) / A.y ** 2, z: (p.z - C.z) / A.z ** 2 };
    close(norm(cross(g, s.normal)), 0, 1e-12, 'normal ∥ gradient');
    assert.ok(s.normal.x > 0 && s.normal.y < 0 && s.normal.z > 0, 'outward');
    assert.equal(skinSurfaceAt(C.x + A.x + 1, C.y), null);
    assert.equal(skinSurfaceAt(C.x, C.y + A.y + 1), null);
  });
});

void describe('skinQuery (distance along the normal)', () => {
  void it('gives the indentation straight below the top', () => {
    const q = skinQuery({ x: C.x, y: C.y, z: TOP_Z - 12.5 });
    close(q.depthMm, 12.5, 1e-9, 'depth');
    close(q.normal.z, 1, 1e-12, 'normal');
    const out = skinQuery({ x: C.x, y: C.y, z: TOP_Z + 30 });
    close(out.depthMm, -30, 1e-9, 'outside distance');
  });

  void it('finds the closest skin point for random points inside and outside (vs brute force)', () => {
    const prng = createPrng(11);
    for (let k = 0; k < 200; k++) {
      const p = {
        x: C.x + (prng.next() * 2 - 1) * (A.x + 40),
        y: C.y + (prng.next() * 2 - 1) * (A.y + 40),
        z: C.z + prng.next() * (A.z + 40),
      };
      const q = skinQuery(p);
      close(ellipsoidF(q.surfaceMm), 1, 1e-9, `on surface (${k})`);
      const d = sub(p, q.surfaceMm);
      // The offset lies along the normal: the defining property of the closest point.
      if (norm(d) > 1e-6) close(norm(cross(d, q.normal)) / norm(d), 0, 1e-6, `along normal (${k})`);
      assert.equal(q.depthMm > 0, ellipsoidF(p) < 1, `sign (${k})`);
      if (k < 20) {
        // Brute force over the upper half surface: nothing is closer.
        let best = Infinity;
        for (let i = 0; i <= 180; i++) {
          for (let j = 0; j <= 90; j++) {
            const th = (i / 180) * 2 * Math.PI, ph = (j / 90) * (Math.PI / 2);
            const s = { x: C.x + A.x * Math.cos(th) * Math.cos(ph), y: C.y + A.y * Math.sin(th) * Math.cos(ph), z: C.z + A.z * Math.sin(ph) };
            best = Math.min(best, norm(sub(p, s)));
          }
        }
        assert.ok(Math.abs(q.depthMm) <= best + 1e-9, `closer than brute force (${k}): ${q.depthMm} vs ${best}`);
        assert.ok(Math.abs(q.depthMm) > best - 3, `brute force near (${k})`);
      }
    }
  });
});

void describe('tissue force and contact wrench', () => {
  void it('is k·d + k2·d², zero when not touching', () => {
    assert.equal(tissueForceN(0), 0);
    assert.equal(tissueForceN(-3), 0);
    close(tissueForceN(10), PATIENT_TORSO.stiffnessNPerMm * 10 + TISSUE_STIFFENING_N_PER_MM2 * 100, 1e-12, 'force');
  });

  void it('pressing straight down gives +z force = stiffness × depth in the tool frame and no torque', () => {
    const patient = new PatientModel();
    const pose: Pose = { positionMm: { x: C.x, y: C.y, z: TOP_Z - 10 }, orientation: DOWN };
    const c = patient.contactAt(pose);
    close(c.depthMm, 10, 1e-9, 'depth');
    close(c.wrench.forceN.z, tissueForceN(10), 1e-9, 'Fz');
    close(c.wrench.forceN.x, 0, 1e-9, 'Fx');
    close(c.wrench.forceN.y, 0, 1e-9, 'Fy');
    close(norm(c.wrench.torqueNm), 0, 1e-12, 'torque');
  });

  void it('a tilted probe still presses (Fz > 0), with a lateral force and a small off-axis torque', () => {
    const patient = new PatientModel();
    const tilt = quatFromAxisAngle({ x: 0, y: 1, z: 0 }, (15 * Math.PI) / 180);
    const pose: Pose = { positionMm: { x: C.x, y: C.y, z: TOP_Z - 8 }, orientation: quatMul(tilt, DOWN) };
    const c = patient.contactAt(pose);
    const f = c.wrench.forceN;
    close(norm(f), c.normalForceN, 1e-9, '|F| = normal force');
    assert.ok(f.z > 0.9 * c.normalForceN, 'mostly along the probe axis');
    close(Math.hypot(f.x, f.y) / c.normalForceN, Math.sin((15 * Math.PI) / 180), 1e-9, 'lateral share = sin(tilt)');
    const tau = norm(c.wrench.torqueNm);
    assert.ok(tau > 0.01 && tau < 0.5, `small torque, got ${tau} N·m`);
    // Torque is r × F with r in the face plane: perpendicular to the force.
    close(dot(c.wrench.torqueNm, f) / (tau * norm(f)), 0, 0.35, 'torque mostly ⊥ force');
  });

  void it('reports nothing off the body', () => {
    const patient = new PatientModel();
    const c = patient.contactAt({ positionMm: { x: C.x, y: C.y, z: TOP_Z + 1 }, orientation: DOWN });
    assert.equal(c.depthMm, 0);
    assert.equal(c.normal, null);
    assert.equal(norm(c.wrench.forceN), 0);
  });
});

void describe('sensed wrench', () => {
  const pose: Pose = { positionMm: { x: C.x, y: C.y, z: TOP_Z - 5 }, orientation: DOWN };

  void it('is deterministic for a seed and differs between seeds', () => {
    const a = new PatientModel({ seed: 5 }), b = new PatientModel({ seed: 5 }), c = new PatientModel({ seed: 6 });
    for (let i = 0; i < 10; i++) {
      const wa = a.sensedWrench(pose), wb = b.sensedWrench(pose), wc = c.sensedWrench(pose);
      assert.deepEqual(wa, wb);
      assert.notDeepEqual(wa, wc);
    }
  });

  void it('is the contact wrench plus zero-mean Gaussian noise of the configured σ, plus any extra push', () => {
    const p = new PatientModel({ seed: 9, forceNoiseN: 0.1 });
    const expected = tissueForceN(5) + 3;
    const n = 20000;
    let sum = 0, sum2 = 0;
    for (let i = 0; i < n; i++) {
      const z = p.sensedWrench(pose, 3).forceN.z - expected;
      sum += z;
      sum2 += z * z;
    }
    const mean = sum / n, sd = Math.sqrt(sum2 / n - mean * mean);
    close(mean, 0, 0.005, 'mean');
    close(sd, 0.1, 0.005, 'σ');
  });
});

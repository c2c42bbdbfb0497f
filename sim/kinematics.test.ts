import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Joints6, Pose } from '../protocols/robot.ts';
import { norm, quatAngle, quatFromAxisAngle, quatMul, sub, toolAxis } from '../protocols/geometry.ts';
import { DEFAULT_WORKSPACE, HOME_POSE, JOINT_LIMITS_RAD } from '../protocols/scene.ts';
import {
  forwardKinematics,
  HOME_JOINTS_RAD,
  inverseKinematics,
  inverseKinematicsAll,
  jacobian,
  orientationErrorRad,
  singularityMargins,
  withinJointLimits,
} from './kinematics.ts';
import { createPrng } from './prng.ts';

const DOWN = HOME_POSE.orientation;

/** A pose in the default workspace with the probe within `tiltRad` of straight down. */
function randomDownPose(rnd: () => number, tiltRad: number): Pose {
  const w = DEFAULT_WORKSPACE;
  const positionMm = {
    x: w.minMm.x + rnd() * (w.maxMm.x - w.minMm.x),
    y: w.minMm.y + rnd() * (w.maxMm.y - w.minMm.y),
    z: w.minMm.z + rnd() * (w.maxMm.z - w.minMm.z),
  };
  const spin = quatFromAxisAngle({ x: 0, y: 0, z: 1 }, (rnd() * 2 - 1) * Math.PI);
  const tiltAxisAngle = rnd() * 2 * Math.PI;
  const tilt = quatFromAxisAngle({ x: Math.cos(tiltAxisAngle), y: Math.sin(tiltAxisAngle), z: 0 }, rnd() * tiltRad);
  // base ← tool = tilt · down · spin (spin about the probe axis, then tilt in the base frame)
  return { positionMm, orientation: quatMul(tilt, quatMul(DOWN, spin)) };
}

function assertPoseClose(actual: Pose, expected: Pose, tolMm: number, tolRad: number, what: string): void {
  const dMm = norm(sub(actual.positionMm, expected.positionMm));
  const dRad = quatAngle(actual.orientation, expected.orientation);
  assert.ok(dMm < tolMm, `${what}: position off by ${dMm} mm`);
  assert.ok(dRad < tolRad, `${what}: orientation off by ${dRad} rad`);
}

void describe('kinematics', () => {
  void it('HOME_JOINTS_RAD puts the TCP exactly at HOME_POSE, probe pointing down', () => {
    assertPoseClose(forwardKinematics(HOME_JOINTS_RAD), HOME_POSE, 1e-9, 1e-9, 'home');
    const axis = toolAxis(forwardKinematics(HOME_JOINTS_RAD));
    assert.ok(axis.z < -0.999999);
    assert.ok(withinJointLimits(HOME_JOINTS_RAD));
  });

  void it('at zero joints the arm is stretched along base −x (UR convention) with the probe on the flange', () => {
    const p = forwardKinematics([0, 0, 0, 0, 0, 0]);
    // x = a2 + a3, y = −(d4 + d6 + probe), z = d1 − d5 (flange z points along base −y)
    assert.ok(Math.abs(p.positionMm.x - (-425 - 392.2)) < 1e-9);
    assert.ok(Math.abs(p.positionMm.y - -(133.3 + 99.6 + 150)) < 1e-9);
    assert.ok(Math.abs(p.positionMm.z - (162.5 - 99.7)) < 1e-9);
  });

  void it('FK∘IK round-trips random reachable down-pointing (±30°) poses in the workspace', () => {
    const prng = createPrng(42);
    const rnd = (): number => prng.next();
    let reached = 0;
    const n = 2000;
    for (let k = 0; k < n; k++) {
      const target = randomDownPose(rnd, (30 * Math.PI) / 180);
      const q = inverseKinematics(target, HOME_JOINTS_RAD);
      if (q === null) continue;
      reached++;
      assert.ok(withinJointLimits(q));
      assertPoseClose(forwardKinematics(q), target, 0.01, 1e-4, `pose ${k}`);
    }
    // The workspace box's far top corners lie beyond the arm's 850 mm reach; nearly all else is reachable.
    assert.ok(reached > 0.9 * n, `only ${reached}/${n} poses reachable`);
  });

  void it('the whole workspace centre column is reachable straight down', () => {
    for (let z = DEFAULT_WORKSPACE.minMm.z; z <= DEFAULT_WORKSPACE.maxMm.z; z += 20) {
      const target: Pose = { positionMm: { x: 450, y: 0, z }, orientation: DOWN };
      const q = inverseKinematics(target, HOME_JOINTS_RAD);
      assert.ok(q !== null, `z=${z} unreachable`);
      assertPoseClose(forwardKinematics(q), target, 0.01, 1e-4, `z=${z}`);
    }
  });

  void it('IK returns the seed configuration itself when the seed solves the pose (nearest branch)', () => {
    const prng = createPrng(7);
    for (let k = 0; k < 500; k++) {
      const q = JOINT_LIMITS_RAD.map((lim) => {
        const span = Math.min(lim.max - lim.min, 2 * Math.PI) * 0.98;
        return (prng.next() - 0.5) * span;
      }) as unknown as Joints6;
      if (Math.abs(Math.sin(q[4])) < 0.05) continue; // wrist singular: θ4/θ6 not unique
      const sol = inverseKinematics(forwardKinematics(q), q);
      assert.ok(sol !== null);
      for (let i = 0; i < 6; i++) assert.ok(Math.abs(sol[i]! - q[i]!) < 1e-6, `joint ${i}: ${sol[i]} vs ${q[i]}`);
    }
  });

  void it('gives up to 8 distinct solutions, each of which reproduces the pose', () => {
    const sols = inverseKinematicsAll(HOME_POSE);
    assert.equal(sols.length, 8);
    for (const s of sols) assertPoseClose(forwardKinematics(s), HOME_POSE, 1e-6, 1e-9, 'branch');
  });

  void it('keeps a ±2π joint on the turn nearest the seed', () => {
    const seed = [...HOME_JOINTS_RAD] as number[];
    seed[5] = HOME_JOINTS_RAD[5] - 2 * Math.PI; // still inside ±2π
    const q = inverseKinematics(HOME_POSE, seed as unknown as Joints6);
    assert.ok(q !== null);
    assert.ok(Math.abs(q[5] - seed[5]) < 1e-9);
  });

  void it('returns null (no throw) for unreachable targets', () => {
    const far: Pose = { positionMm: { x: 1500, y: 0, z: 200 }, orientation: DOWN };
    assert.equal(inverseKinematics(far, HOME_JOINTS_RAD), null);
    // Wrist centre on the base axis: inside the shoulder offset's dead cylinder.
    const overBase: Pose = { positionMm: { x: 0, y: 0, z: 600 }, orientation: DOWN };
    assert.equal(inverseKinematics(overBase, HOME_JOINTS_RAD), null);
  });

  void it('singularityMargins is the factorisation of det J', () => {
    const prng = createPrng(4);
    for (let k = 0; k < 50; k++) {
      const q = HOME_JOINTS_RAD.map((v) => v + (prng.next() - 0.5) * 4) as unknown as Joints6;
      const m = singularityMargins(q);
      const expected = Math.abs(425 * 392.2 * m.elbow * m.wrist * m.shoulderMm);
      const got = Math.abs(det6(jacobian(q)));
      assert.ok(Math.abs(got - expected) <= 1e-9 * Math.max(1, expected), `det ${got} vs ${expected}`);
    }
    const home = singularityMargins(HOME_JOINTS_RAD);
    assert.ok(home.elbow > 0.5 && home.wrist > 0.99 && home.shoulderMm > 200, 'home is far from every singularity');
  });

  void it('the Jacobian matches finite differences of FK', () => {
    const prng = createPrng(3);
    const h = 1e-6;
    for (let k = 0; k < 50; k++) {
      const q = HOME_JOINTS_RAD.map((v) => v + (prng.next() - 0.5) * 2) as unknown as Joints6;
      const J = jacobian(q);
      for (let i = 0; i < 6; i++) {
        const qp = [...q] as number[], qm = [...q] as number[];
        qp[i]! += h;
        qm[i]! -= h;
        const fp = forwardKinematics(qp as unknown as Joints6), fm = forwardKinematics(qm as unknown as Joints6);
        const v = sub(fp.positionMm, fm.positionMm);
        const w = orientationErrorRad(fm.orientation, fp.orientation);
        const numeric = [v.x / (2 * h), v.y / (2 * h), v.z / (2 * h), w.x / (2 * h), w.y / (2 * h), w.z / (2 * h)];
        for (let r = 0; r < 6; r++) {
          const tol = r < 3 ? 1e-3 : 1e-6;
          assert.ok(Math.abs(J[r * 6 + i]! - numeric[r]!) < tol, `J[${r}][${i}] ${J[r * 6 + i]} vs ${numeric[r]}`);
        }
      }
    }
  });
});

/** Determinant of a row-major 6×6 matrix (Gaussian elimination with partial pivoting). */
function det6(m: readonly number[]): number {
  const a = [...m];
  let d = 1;
  for (let c = 0; c < 6; c++) {
    let p = c;
    for (let r = c + 1; r < 6; r++) if (Math.abs(a[r * 6 + c]!) > Math.abs(a[p * 6 + c]!)) p = r;
    if (a[p * 6 + c] === 0) return 0;
    if (p !== c) {
      for (let k = 0; k < 6; k++) [a[c * 6 + k], a[p * 6 + k]] = [a[p * 6 + k]!, a[c * 6 + k]!];
      d = -d;
    }
    d *= a[c * 6 + c]!;
    for (let r = c + 1; r < 6; r++) {
      const f = a[r * 6 + c]! / a[c * 6 + c]!;
      for (let k = c; k < 6; k++) a[r * 6 + k] = a[r * 6 + k]! - f * a[c * 6 + k]!;
    }
  }
  return d;
}

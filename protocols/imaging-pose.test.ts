import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quatFromAxisAngle, quatMul, rotate } from './geometry.ts';
import { mat4Apply } from './imaging.ts';
import { mat4ToPose, poseToMat4 } from './imaging-pose.ts';
import type { Pose } from './robot.ts';
import { HOME_POSE } from './scene.ts';

const close = (a: number, b: number, what: string, tol = 1e-12): void => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('poseToMat4: the home pose points tool z down, translation in the last column (row-major)', () => {
  const m = poseToMat4(HOME_POSE);
  const expected = [1, 0, 0, 450, 0, -1, 0, 0, 0, 0, -1, 270, 0, 0, 0, 1];
  expected.forEach((v, i) => close(m[i]!, v, `entry ${i}`));
});

test('poseToMat4 maps tool points as the pose does, normalises the quaternion, and mat4ToPose inverts it', () => {
  const q = quatMul(quatFromAxisAngle({ x: 0.3, y: -1, z: 0.2 }, 2.1), HOME_POSE.orientation);
  const pose: Pose = { positionMm: { x: 412.5, y: -31, z: 117.25 }, orientation: q };
  const m = poseToMat4(pose);
  const pTool = { x: 3, y: -7, z: 40 };
  const r = rotate(q, pTool);
  const p = mat4Apply(m, pTool);
  close(p.x, r.x + 412.5, 'x', 1e-9);
  close(p.y, r.y - 31, 'y', 1e-9);
  close(p.z, r.z + 117.25, 'z', 1e-9);
  const scaled = poseToMat4({ ...pose, orientation: { x: 2 * q.x, y: 2 * q.y, z: 2 * q.z, w: 2 * q.w } });
  for (let i = 0; i < 16; i++) close(scaled[i]!, m[i]!, `scaled quaternion, entry ${i}`);
  const back = poseToMat4(mat4ToPose(m));
  for (let i = 0; i < 16; i++) close(back[i]!, m[i]!, `round trip, entry ${i}`);
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IDENTITY_MAT4, mat4Apply, mat4Invert, mat4Mul } from './imaging.ts';

test('mat4: multiply, apply and invert agree on a rigid transform with scaling', () => {
  const c = Math.cos(0.3), s = Math.sin(0.3);
  const rigid = new Float64Array([c, -s, 0, 10, s, c, 0, -5, 0, 0, 1, 3, 0, 0, 0, 1]);
  const scaleMmPerPx = new Float64Array([0.1, 0, 0, 0, 0, 0.1, 0, 0, 0, 0, 0.1, 0, 0, 0, 0, 1]);
  const m = mat4Mul(rigid, scaleMmPerPx); // scale first, then rigid
  const p = mat4Apply(m, { x: 100, y: 50, z: 0 });
  const q = mat4Apply(rigid, { x: 10, y: 5, z: 0 });
  assert.ok(Math.abs(p.x - q.x) < 1e-12 && Math.abs(p.y - q.y) < 1e-12 && Math.abs(p.z - q.z) < 1e-12);
  const inv = mat4Invert(m)!;
  const id = mat4Mul(inv, m);
  const I = IDENTITY_MAT4();
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(id[i]! - I[i]!) < 1e-12, `entry ${i}`);
  assert.equal(mat4Invert(new Float64Array(16)), null);
});

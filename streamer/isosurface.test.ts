import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Volume } from '../protocols/imaging.ts';
import { encodeObj, encodeStlBinary, type Mesh } from '../protocols/mesh.ts';
import { throwsWith } from '../protocols/testing.ts';
import { isosurface, marchingCubesCase } from './isosurface.ts';

// A sphere in world mm on an anisotropic grid with an off-zero origin, so a mix-up of axes,
// spacing or origin moves the vertices off the sphere.
const ORIGIN = { x: -12.5, y: 30, z: 4 };
const SPACING = { x: 0.5, y: 0.6, z: 0.7 };
const DIMS = [56, 48, 40] as const;
const CENTRE = { x: ORIGIN.x + 27.3 * SPACING.x, y: ORIGIN.y + 23.6 * SPACING.y, z: ORIGIN.z + 19.2 * SPACING.z };

/** Voxels whose centre lies within `radiusMm` get 255 (`graded`: a linear ramp, 128 at the sphere). */
function sphereVolume(radiusMm: number, graded: boolean): Volume {
  const [nx, ny, nz] = DIMS;
  const data = new Uint8Array(nx * ny * nz);
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      for (let i = 0; i < nx; i++) {
        const d = Math.hypot(ORIGIN.x + i * SPACING.x - CENTRE.x, ORIGIN.y + j * SPACING.y - CENTRE.y, ORIGIN.z + k * SPACING.z - CENTRE.z);
        // The ramp: 64 levels per mm, so 1 level is 1/64 mm and rounding moves the surface < 0.01 mm.
        data[i + nx * (j + ny * k)] = graded ? Math.max(0, Math.min(255, Math.round(128 + 64 * (radiusMm - d)))) : d <= radiusMm ? 255 : 0;
      }
    }
  }
  return { grid: { originMm: ORIGIN, spacingMm: SPACING, dims: [...DIMS] }, data };
}

/** Every undirected edge is in exactly two triangles, once in each direction (closed, consistently wound). */
function assertClosedAndOriented(mesh: Mesh): void {
  const t = mesh.triangles;
  const vertexCount = mesh.positionsMm.length / 3;
  const directed = new Map<number, number>();
  for (let i = 0; i < t.length; i += 3) {
    for (let k = 0; k < 3; k++) {
      const a = t[i + k]!, b = t[i + ((k + 1) % 3)]!;
      assert.notEqual(a, b, `triangle ${i / 3} repeats vertex ${a}`);
      const key = a * vertexCount + b;
      directed.set(key, (directed.get(key) ?? 0) + 1);
    }
  }
  for (const [key, count] of directed) {
    const a = Math.floor(key / vertexCount), b = key % vertexCount;
    assert.equal(count, 1, `edge ${a}→${b} is used by ${count} triangles in the same direction`);
    assert.equal(directed.get(b * vertexCount + a), 1, `edge ${a}–${b} is not shared by exactly one opposite triangle (open or non-manifold)`);
  }
}

/** Signed enclosed volume by the divergence theorem: positive when the winding is outward. */
function enclosedVolumeMm3(mesh: Mesh): number {
  const p = mesh.positionsMm, t = mesh.triangles;
  let sum = 0;
  for (let i = 0; i < t.length; i += 3) {
    const a = t[i]! * 3, b = t[i + 1]! * 3, c = t[i + 2]! * 3;
    sum += p[a]! * (p[b + 1]! * p[c + 2]! - p[b + 2]! * p[c + 1]!) - p[a + 1]! * (p[b]! * p[c + 2]! - p[b + 2]! * p[c]!) + p[a + 2]! * (p[b]! * p[c + 1]! - p[b + 1]! * p[c]!);
  }
  return sum / 6;
}

function radii(mesh: Mesh): { min: number; max: number } {
  const p = mesh.positionsMm;
  let min = Infinity, max = -Infinity;
  for (let i = 0; i < p.length; i += 3) {
    const r = Math.hypot(p[i]! - CENTRE.x, p[i + 1]! - CENTRE.y, p[i + 2]! - CENTRE.z);
    min = Math.min(min, r);
    max = Math.max(max, r);
  }
  return { min, max };
}

test('sphere (binary voxels): closed, outward, volume within 3 % of 4/3πr³, vertices within a voxel of r', () => {
  const r = 9;
  const mesh = isosurface(sphereVolume(r, false), 127.5);
  assert.ok(mesh.triangles.length / 3 > 1000);
  assertClosedAndOriented(mesh);
  const expected = (4 / 3) * Math.PI * r ** 3;
  const volume = enclosedVolumeMm3(mesh);
  assert.ok(Math.abs(volume - expected) / expected < 0.03, `enclosed ${volume.toFixed(1)} mm³, sphere ${expected.toFixed(1)} mm³`);
  // Binary data puts vertices at edge midpoints: at most half the largest voxel diagonal off.
  const { min, max } = radii(mesh);
  const halfDiagonal = 0.5 * Math.hypot(SPACING.x, SPACING.y, SPACING.z);
  assert.ok(min > r - halfDiagonal && max < r + halfDiagonal, `radii ${min}..${max}`);
});

test('sphere (graded voxels): vertices on the sphere to 0.05 mm, volume within 1 %, normals outward', () => {
  const r = 9;
  const mesh = isosurface(sphereVolume(r, true), 128, { normals: true });
  assertClosedAndOriented(mesh);
  const { min, max } = radii(mesh);
  assert.ok(min > r - 0.05 && max < r + 0.05, `radii ${min}..${max}`);
  const expected = (4 / 3) * Math.PI * r ** 3;
  assert.ok(Math.abs(enclosedVolumeMm3(mesh) - expected) / expected < 0.01);
  const p = mesh.positionsMm, n = mesh.normals!;
  assert.equal(n.length, p.length);
  for (let i = 0; i < p.length; i += 3) {
    const rx = (p[i]! - CENTRE.x) / r, ry = (p[i + 1]! - CENTRE.y) / r, rz = (p[i + 2]! - CENTRE.z) / r;
    assert.ok(Math.abs(Math.hypot(n[i]!, n[i + 1]!, n[i + 2]!) - 1) < 1e-5);
    assert.ok(rx * n[i]! + ry * n[i + 1]! + rz * n[i + 2]! > 0.95, `normal of vertex ${i / 3} is not radial`);
  }
});

test('shared vertices are deduplicated: one vertex per cut edge, none at the same place', () => {
  const mesh = isosurface(sphereVolume(6, false), 127.5);
  const seen = new Set<string>();
  for (let i = 0; i < mesh.positionsMm.length; i += 3) seen.add(`${mesh.positionsMm[i]},${mesh.positionsMm[i + 1]},${mesh.positionsMm[i + 2]}`);
  assert.equal(seen.size, mesh.positionsMm.length / 3);
  // Euler: a closed genus-0 surface has V − E + F = 2, which only holds with shared vertices.
  const v = mesh.positionsMm.length / 3, f = mesh.triangles.length / 3;
  assert.equal(v - (3 * f) / 2 + f, 2);
});

test('every one of the 256 cell cases gives a closed, outward surface (alone, capped)', () => {
  let maxTriangles = 0;
  for (let mask = 0; mask < 256; mask++) {
    const data = new Uint8Array(8);
    for (let c = 0; c < 8; c++) data[c] = (mask >> c) & 1 ? 200 : 10;
    maxTriangles = Math.max(maxTriangles, marchingCubesCase(mask).length / 3);
    const mesh = isosurface({ grid: { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [2, 2, 2] }, data }, 100);
    assert.equal(mesh.triangles.length === 0, mask === 0, `case ${mask}`);
    if (mask !== 0) {
      assertClosedAndOriented(mesh);
      assert.ok(enclosedVolumeMm3(mesh) > 0, `case ${mask} is wound inward`);
    }
  }
  assert.ok(maxTriangles <= 5, `a case has ${maxTriangles} triangles`);
});

test('noise touching the borders: closed and consistently wound with capBorders, open without', () => {
  let seed = 12345;
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const n = 20;
  const data = new Uint8Array(n * n * n).map(() => Math.floor(rnd() * 256));
  const volume: Volume = { grid: { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [n, n, n] }, data };
  const capped = isosurface(volume, 127.5);
  assertClosedAndOriented(capped);
  assert.ok(enclosedVolumeMm3(capped) > 0);
  const open = isosurface(volume, 127.5, { capBorders: false });
  assert.ok(open.triangles.length < capped.triangles.length);
  assert.throws(() => assertClosedAndOriented(open));
  // every vertex stays inside the volume's box (not on the half-voxel caps)
  for (const c of open.positionsMm) assert.ok(c >= 0 && c <= n - 1);
});

test('bad input and a mesh over the memory budget are refused with clear errors', () => {
  const v = sphereVolume(5, false);
  throwsWith(() => isosurface(v, 0), 'ECO3D_ERR_BAD_REQUEST', 'outside (0, 255]');
  throwsWith(() => isosurface(v, 256), 'ECO3D_ERR_BAD_REQUEST', 'outside (0, 255]');
  throwsWith(() => isosurface(v, Number.NaN), 'ECO3D_ERR_NOT_FINITE');
  throwsWith(() => isosurface({ ...v, data: v.data.subarray(1) }, 100), 'ECO3D_ERR_BAD_REQUEST', 'voxels');
  throwsWith(() => isosurface({ ...v, grid: { ...v.grid, spacingMm: { x: 0, y: 1, z: 1 } } }, 100), 'ECO3D_ERR_NOT_FINITE');
  const err = throwsWith(() => isosurface(v, 127.5, { memoryBudgetBytes: 100_000 }), 'ECO3D_ERR_BAD_REQUEST', 'isosurface too large', 'budget', 'memoryBudgetBytes');
  assert.equal(err.details?.budgetBytes, 100_000);
  // a tiny budget is refused before any slice is allocated
  throwsWith(() => isosurface(v, 127.5, { memoryBudgetBytes: 1000 }), 'ECO3D_ERR_BAD_REQUEST', 'working slices');
  // an empty surface is fine
  const none = isosurface({ ...v, data: new Uint8Array(v.data.length) }, 100);
  assert.equal(none.triangles.length, 0);
  assert.equal(none.positionsMm.length, 0);
});

test('binary STL: header, count, size, and the triangles as written', () => {
  const mesh = isosurface(sphereVolume(5, false), 127.5);
  const triangleCount = mesh.triangles.length / 3;
  const stl = encodeStlBinary(mesh, 'lesion 3');
  assert.equal(stl.length, 80 + 4 + 50 * triangleCount);
  assert.equal(Buffer.from(stl.subarray(0, 8)).toString('latin1'), 'lesion 3');
  const dv = new DataView(stl.buffer, stl.byteOffset, stl.byteLength);
  assert.equal(dv.getUint32(80, true), triangleCount);
  // First and last facets: the vertices, a unit normal along the winding, a zero attribute.
  for (const k of [0, triangleCount - 1]) {
    const at = 84 + 50 * k;
    for (let v = 0; v < 3; v++) {
      const idx = mesh.triangles[3 * k + v]! * 3;
      for (let c = 0; c < 3; c++) assert.equal(dv.getFloat32(at + 12 + 12 * v + 4 * c, true), mesh.positionsMm[idx + c]);
    }
    const n = [0, 1, 2].map((c) => dv.getFloat32(at + 4 * c, true));
    assert.ok(Math.abs(Math.hypot(n[0]!, n[1]!, n[2]!) - 1) < 1e-5);
    assert.equal(dv.getUint16(at + 48, true), 0);
  }
  // A name starting with "solid" would make readers take the file for ASCII STL.
  assert.doesNotMatch(Buffer.from(encodeStlBinary(mesh, 'solid part').subarray(0, 80)).toString('latin1'), /^solid/);
  assert.equal(encodeStlBinary({ positionsMm: new Float32Array(0), triangles: new Uint32Array(0) }).length, 84);
  throwsWith(() => encodeStlBinary({ positionsMm: new Float32Array(3), triangles: new Uint32Array([0, 0, 1]) }), 'ECO3D_ERR_BAD_REQUEST', 'vertex 1');
});

test('OBJ parses back: same vertex and face counts, same coordinates, valid 1-based indices', () => {
  const mesh = isosurface(sphereVolume(5, false), 127.5, { normals: true });
  const vertexCount = mesh.positionsMm.length / 3;
  const lines = Buffer.from(encodeObj(mesh)).toString('latin1').split('\n');
  const v = lines.filter((l) => l.startsWith('v ')).map((l) => l.slice(2).split(' ').map(Number));
  const vn = lines.filter((l) => l.startsWith('vn '));
  const f = lines.filter((l) => l.startsWith('f ')).map((l) => l.slice(2).split(' ').map((s) => s.split('//').map(Number)));
  assert.equal(v.length, vertexCount);
  assert.equal(vn.length, vertexCount);
  assert.equal(f.length, mesh.triangles.length / 3);
  v.forEach((xyz, i) => xyz.forEach((c, k) => assert.equal(Math.fround(c), mesh.positionsMm[3 * i + k])));
  f.forEach((face, i) => face.forEach(([vi, ni], k) => {
    assert.equal(vi, mesh.triangles[3 * i + k]! + 1);
    assert.equal(ni, vi);
  }));
  // without normals: plain "f a b c"
  const plain = Buffer.from(encodeObj({ positionsMm: mesh.positionsMm, triangles: mesh.triangles })).toString('latin1');
  assert.match(plain, /\nf \d+ \d+ \d+\n/);
  assert.doesNotMatch(plain, /\nvn /);
});

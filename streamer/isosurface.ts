// Isosurface extraction (marching cubes) from a reconstructed 8-bit volume, for 3D printing and
// mesh viewers. Output is in world millimetres (voxel (i, j, k) sits at origin + (i, j, k) ×
// spacing, as VolumeGrid says), with shared vertices (one per cut grid edge) and outward winding.
//
// Why our own code rather than vtk.js's ImageMarchingCubes (already a dependency, and it does
// run in Node without a DOM): its vertex welding keys an edge by 0.5·(a·b)·(a·b+1) + b over the
// two point ids, computed in doubles. Past a few hundred thousand points the rounding makes
// distinct edges collide (in a 256³ grid, edges 244671–244672 and 214088–279624 get the same
// key), so a triangle can silently be welded to a vertex elsewhere in the volume. It also
// writes console.time() lines to stdout on every call and ships no type declarations.
//
// The case table is not transcribed: it is generated at load time from a rule, which makes its
// consistency a property we can state rather than 256 rows to trust.
// - On each cube face the contour is the marching-squares one; on an ambiguous face (two
//   diagonal corners inside) the inside corners are kept apart. The decision depends only on the
//   face's four corners, so the two cubes sharing a face draw the same segments: no cracks.
// - Each face segment is oriented with the inside on a fixed side; the segments then chain into
//   closed loops whose winding gives the outward normal.
// - Each loop is triangulated without a diagonal between two vertices on a common face (such a
//   diagonal could also be drawn by the neighbouring cube, making an edge with four triangles).
// The result: every mesh edge is shared by exactly two triangles, in opposite directions.
//
// "Inside" is value ≥ thresholdLevel. By default the volume is treated as surrounded by zeros
// (capBorders), so a structure touching the edge of the volume is closed off half a voxel
// beyond it: a printable, watertight mesh. A level exactly equal to voxel values puts vertices
// on voxel centres and may give zero-area triangles; a half-integer level (127.5) avoids that.
import { Eco3dError } from '../protocols/errors.ts';
import type { Volume } from '../protocols/imaging.ts';
import type { Mesh } from '../protocols/mesh.ts';

export type { Mesh } from '../protocols/mesh.ts';

export interface IsosurfaceOptions {
  /** Close the surface where it meets the volume's border (voxels beyond it count as 0). Default true. */
  readonly capBorders?: boolean;
  /** Also compute area-weighted outward vertex normals. Default false. */
  readonly normals?: boolean;
  /** Refuse (before allocating the mesh) when the mesh would need more bytes than this. Default 512 MiB. */
  readonly memoryBudgetBytes?: number;
}

const MIB = 1024 * 1024;
export const DEFAULT_ISOSURFACE_BUDGET_BYTES = 512 * MIB;

// ---------------------------------------------------------------------------------------------
// Case table, generated

/** Corner c of a cell is voxel offset (c & 1, c >> 1 & 1, c >> 2 & 1): x fastest, as the data. */
function cornerXyz(c: number): [number, number, number] {
  return [c & 1, (c >> 1) & 1, (c >> 2) & 1];
}

/** The 12 cell edges: lower corner, upper corner, axis (0 x, 1 y, 2 z). */
const EDGES: ReadonlyArray<readonly [number, number, number]> = (() => {
  const edges: Array<[number, number, number]> = [];
  for (let a = 0; a < 8; a++) {
    for (let axis = 0; axis < 3; axis++) if ((a & (1 << axis)) === 0) edges.push([a, a | (1 << axis), axis]);
  }
  return edges;
})();

function edgeBetween(a: number, b: number): number {
  const e = EDGES.findIndex(([p, q]) => (p === a && q === b) || (p === b && q === a));
  if (e < 0) throw new Error(`corners ${a} and ${b} are not an edge`);
  return e;
}

interface Face {
  /** Corners in cyclic order around the face. */
  readonly corners: readonly [number, number, number, number];
  /** Outward normal of the cube face. */
  readonly normal: readonly [number, number, number];
}

const FACES: readonly Face[] = (() => {
  const faces: Face[] = [];
  for (let axis = 0; axis < 3; axis++) {
    const u = (axis + 1) % 3;
    const v = (axis + 2) % 3;
    for (const side of [0, 1]) {
      const at = (cu: number, cv: number): number => (side << axis) | (cu << u) | (cv << v);
      const normal: [number, number, number] = [0, 0, 0];
      normal[axis] = side === 1 ? 1 : -1;
      faces.push({ corners: [at(0, 0), at(1, 0), at(1, 1), at(0, 1)], normal });
    }
  }
  return faces;
})();

/** Holds e·12 + f when cell edges e and f lie on a common face. */
const SHARE_FACE: ReadonlySet<number> = (() => {
  const s = new Set<number>();
  for (const f of FACES) {
    const es = [0, 1, 2, 3].map((i) => edgeBetween(f.corners[i]!, f.corners[(i + 1) % 4]!));
    for (const a of es) for (const b of es) s.add(a * 12 + b);
  }
  return s;
})();

type V3 = readonly [number, number, number];
const sub = (a: V3, b: V3): V3 => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a: V3, b: V3): V3 => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const dot = (a: V3, b: V3): number => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
function edgeMid(e: number): V3 {
  const [a, b] = EDGES[e]!;
  const pa = cornerXyz(a), pb = cornerXyz(b);
  return [(pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2, (pa[2] + pb[2]) / 2];
}

/** Triangles (edge-id triples, outward winding) for one cell configuration (bit c = corner c inside). */
function buildCase(mask: number): number[] {
  const inside = (c: number): boolean => ((mask >> c) & 1) === 1;
  const next = new Map<number, number>(); // oriented face segments: from-edge → to-edge
  for (const face of FACES) {
    const cs = face.corners;
    const ins = cs.map(inside);
    const count = ins.filter(Boolean).length;
    if (count === 0 || count === 4) continue;
    const edgeAt = (i: number): number => edgeBetween(cs[i]!, cs[(i + 1) % 4]!);
    // Each segment with a point on its inside: [edge, edge, point].
    const segments: Array<[number, number, V3]> = [];
    if (count === 2 && ins[0] === ins[2]) {
      // Ambiguous face: cut each inside corner off on its own.
      for (let i = 0; i < 4; i++) if (ins[i]) segments.push([edgeAt((i + 3) % 4), edgeAt(i), cornerXyz(cs[i]!)]);
    } else {
      const cut = [0, 1, 2, 3].filter((i) => ins[i] !== ins[(i + 1) % 4]).map(edgeAt);
      const inner = cs.filter(inside).map(cornerXyz);
      const mean = (k: number): number => inner.reduce((sum, p) => sum + p[k]!, 0) / inner.length;
      const centroid: V3 = [mean(0), mean(1), mean(2)];
      segments.push([cut[0]!, cut[1]!, centroid]);
    }
    for (const [ea, eb, ref] of segments) {
      const pa = edgeMid(ea);
      // Inside to the right of the segment seen from outside the cube: this makes the loops,
      // and so the triangles, counter-clockwise seen from outside the surface.
      const side = dot(cross(sub(edgeMid(eb), pa), sub(ref, pa)), face.normal);
      const [from, to] = side < 0 ? [ea, eb] : [eb, ea];
      if (next.has(from)) throw new Error(`marching cubes table: case ${mask}, edge ${from} starts two segments`);
      next.set(from, to);
    }
  }
  const triangles: number[] = [];
  while (next.size > 0) {
    const start = next.keys().next().value!;
    const loop = [start];
    let at = next.get(start)!;
    next.delete(start);
    while (at !== start) {
      loop.push(at);
      const to = next.get(at);
      if (to === undefined) throw new Error(`marching cubes table: case ${mask}, open loop at edge ${at}`);
      next.delete(at);
      at = to;
    }
    const tris = triangulateLoop(loop);
    if (tris === undefined) throw new Error(`marching cubes table: case ${mask}, loop ${loop.join(',')} has no admissible triangulation`);
    for (const t of tris) triangles.push(...t);
  }
  return triangles;
}

/** A triangulation of a loop (order kept) with no diagonal between two edges on a common face. */
function triangulateLoop(loop: readonly number[]): number[][] | undefined {
  const n = loop.length;
  if (n === 3) return [[...loop]];
  for (let k = 2; k < n; k++) {
    if (k !== 2 && SHARE_FACE.has(loop[1]! * 12 + loop[k]!)) continue;
    if (k !== n - 1 && SHARE_FACE.has(loop[k]! * 12 + loop[0]!)) continue;
    const left = k === 2 ? [] : triangulateLoop(loop.slice(1, k + 1));
    if (left === undefined) continue;
    const right = k === n - 1 ? [] : triangulateLoop([...loop.slice(k), loop[0]!]);
    if (right === undefined) continue;
    return [[loop[0]!, loop[1]!, loop[k]!], ...left, ...right];
  }
  return undefined;
}

/** CASE_TRIANGLES[mask] = edge ids, three per triangle. */
const CASE_TRIANGLES: readonly Uint8Array[] = Array.from({ length: 256 }, (_, mask) => Uint8Array.from(buildCase(mask)));
const CASE_TRIANGLE_COUNT = Uint8Array.from(CASE_TRIANGLES, (t) => t.length / 3);

/** The generated table, for tests and tools: edge ids (three per triangle) for each of the 256 cases. */
export function marchingCubesCase(mask: number): readonly number[] {
  return [...CASE_TRIANGLES[mask]!];
}

// ---------------------------------------------------------------------------------------------
// Extraction

/**
 * Triangulates the surface value = `thresholdLevel` of `volume` (marching cubes). Returns world
 * millimetre positions, one vertex per cut grid edge, triangles counter-clockwise seen from the
 * outside (the side below the level). Throws ECO3D_ERR_BAD_REQUEST for a malformed volume, a
 * level outside (0, 255], or a mesh over `memoryBudgetBytes`.
 */
export function isosurface(volume: Volume, thresholdLevel: number, opts: IsosurfaceOptions = {}): Mesh {
  const { dims, spacingMm: s, originMm: o } = volume.grid;
  const [nx, ny, nz] = dims;
  for (const d of dims) if (!Number.isInteger(d) || d < 1) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `isosurface: volume dims ${dims.join('×')} are not positive integers`);
  if (volume.data.length !== nx * ny * nz) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `isosurface: volume has ${volume.data.length} voxels, dims ${dims.join('×')} need ${nx * ny * nz}`);
  if (![s.x, s.y, s.z, o.x, o.y, o.z].every(Number.isFinite) || !(s.x > 0 && s.y > 0 && s.z > 0)) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `isosurface: spacing must be finite and > 0, origin finite (spacing ${s.x} ${s.y} ${s.z}, origin ${o.x} ${o.y} ${o.z})`);
  }
  if (!Number.isFinite(thresholdLevel)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `isosurface: threshold level ${thresholdLevel} is not finite`);
  // At ≤ 0 every voxel (and the zero border) would be inside; above 255 none is.
  if (!(thresholdLevel > 0 && thresholdLevel <= 255)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `isosurface: threshold level ${thresholdLevel} is outside (0, 255]`);
  const cap = opts.capBorders ?? true;
  const wantNormals = opts.normals ?? false;
  const budget = opts.memoryBudgetBytes ?? DEFAULT_ISOSURFACE_BUDGET_BYTES;
  const level = thresholdLevel;

  // Work in a grid padded by one zero voxel on every side; padded (p, q, r) is voxel (p-1, q-1, r-1).
  const px = nx + 2, py = ny + 2;
  const planeSize = px * py;
  // Cells [lo, hi] along each axis, cell p spanning padded voxels p and p+1.
  const lo = cap ? 0 : 1;
  const hi = (n: number): number => (cap ? n : n - 1);
  const budgetError = (what: string, neededBytes: number): Eco3dError =>
    new Eco3dError(
      'ECO3D_ERR_BAD_REQUEST',
      `isosurface too large: ${what} for the ${nx}×${ny}×${nz} volume at level ${level} needs ${(neededBytes / MIB).toFixed(0)} MiB, ` +
        `over the ${(budget / MIB).toFixed(0)} MiB budget. Resample the volume coarser, crop it, smooth it (speckle makes many small surfaces), or raise memoryBudgetBytes.`,
      { details: { neededBytes, budgetBytes: budget, dims: [nx, ny, nz], thresholdLevel: level } },
    );
  // Working memory (two padded slabs and five edge-vertex caches) comes before the mesh itself.
  const workBytes = planeSize * (2 + 5 * 4);
  if (workBytes > budget) throw budgetError('the working slices', workBytes);

  const planeA = new Uint8Array(planeSize);
  const planeB = new Uint8Array(planeSize);
  const fillPlane = (plane: Uint8Array, r: number): void => {
    plane.fill(0);
    if (r < 1 || r > nz) return;
    for (let q = 1; q <= ny; q++) {
      const from = ((r - 1) * ny + (q - 1)) * nx;
      plane.set(volume.data.subarray(from, from + nx), q * px + 1);
    }
  };

  // Pass 1: count the triangles, so the budget is checked before the mesh is allocated.
  let triangleCount = 0;
  for (let r = lo; r <= hi(nz); r++) {
    fillPlane(planeA, r);
    fillPlane(planeB, r + 1);
    for (let q = lo; q <= hi(ny); q++) {
      for (let p = lo; p <= hi(nx); p++) triangleCount += CASE_TRIANGLE_COUNT[cellCase(planeA, planeB, p + q * px, px, level)]!;
    }
  }
  // A closed surface has about half as many vertices as triangles, an open one up to as many.
  const bytesPerVertex = wantNormals ? 24 : 12;
  const estimatedBytes = triangleCount * 12 + triangleCount * bytesPerVertex;
  if (workBytes + estimatedBytes > budget) throw budgetError(`${triangleCount} triangles`, workBytes + estimatedBytes);

  // Pass 2: emit. Vertex ids per grid edge, for the lower (0) and upper (1) plane of the layer.
  const triangles = new Uint32Array(triangleCount * 3);
  let positions = new Float32Array(Math.max(64, Math.ceil(triangleCount / 2) + 64) * 3);
  let vertexCount = 0;
  let xEdges = [new Int32Array(planeSize), new Int32Array(planeSize)] as const;
  let yEdges = [new Int32Array(planeSize), new Int32Array(planeSize)] as const;
  const zEdges = new Int32Array(planeSize);
  xEdges[1].fill(-1);
  yEdges[1].fill(-1);
  const planes = [planeA, planeB];
  let t = 0;

  const addVertex = (p: number, q: number, r: number, axis: number, va: number, vb: number): number => {
    if ((vertexCount + 1) * 3 > positions.length) {
      const grown = new Float32Array(Math.ceil(positions.length * 1.5 / 3) * 3 + 3);
      if (workBytes + triangles.byteLength + (grown.byteLength * bytesPerVertex) / 12 > budget) {
        throw budgetError(`${triangleCount} triangles and over ${vertexCount} vertices`, workBytes + triangles.byteLength + (grown.byteLength * bytesPerVertex) / 12);
      }
      grown.set(positions);
      positions = grown;
    }
    // Where the level crosses the edge, by linear interpolation of the two voxel values.
    const f = (level - va) / (vb - va);
    const at = vertexCount * 3;
    positions[at] = o.x + (p - 1 + (axis === 0 ? f : 0)) * s.x;
    positions[at + 1] = o.y + (q - 1 + (axis === 1 ? f : 0)) * s.y;
    positions[at + 2] = o.z + (r - 1 + (axis === 2 ? f : 0)) * s.z;
    return vertexCount++;
  };

  for (let r = lo; r <= hi(nz); r++) {
    // The upper plane of the previous layer is this layer's lower plane.
    xEdges = [xEdges[1], xEdges[0]];
    yEdges = [yEdges[1], yEdges[0]];
    if (r === lo) {
      xEdges[0].fill(-1);
      yEdges[0].fill(-1);
    }
    xEdges[1].fill(-1);
    yEdges[1].fill(-1);
    zEdges.fill(-1);
    fillPlane(planeA, r);
    fillPlane(planeB, r + 1);
    for (let q = lo; q <= hi(ny); q++) {
      for (let p = lo; p <= hi(nx); p++) {
        const base = p + q * px;
        const tris = CASE_TRIANGLES[cellCase(planeA, planeB, base, px, level)]!;
        for (let k = 0; k < tris.length; k++) {
          const [ca, cb, axis] = EDGES[tris[k]!]!;
          const dx = ca & 1, dy = (ca >> 1) & 1, dz = (ca >> 2) & 1;
          const slot = base + dx + dy * px;
          const cache = axis === 2 ? zEdges : (axis === 0 ? xEdges : yEdges)[dz === 0 ? 0 : 1];
          let id = cache[slot]!;
          if (id < 0) {
            const va = planes[dz]![slot]!;
            const vb = planes[(cb >> 2) & 1]![slot + (axis === 0 ? 1 : axis === 1 ? px : 0)]!;
            id = addVertex(p + dx, q + dy, r + dz, axis, va, vb);
            cache[slot] = id;
          }
          triangles[t++] = id;
        }
      }
    }
  }

  const positionsMm = positions.slice(0, vertexCount * 3);
  return wantNormals ? { positionsMm, triangles, normals: computeVertexNormals(positionsMm, triangles) } : { positionsMm, triangles };
}

/** The case index of the cell whose corner 0 is at `base` in the lower plane. */
function cellCase(lower: Uint8Array, upper: Uint8Array, base: number, px: number, level: number): number {
  return (
    (lower[base]! >= level ? 1 : 0) |
    (lower[base + 1]! >= level ? 2 : 0) |
    (lower[base + px]! >= level ? 4 : 0) |
    (lower[base + px + 1]! >= level ? 8 : 0) |
    (upper[base]! >= level ? 16 : 0) |
    (upper[base + 1]! >= level ? 32 : 0) |
    (upper[base + px]! >= level ? 64 : 0) |
    (upper[base + px + 1]! >= level ? 128 : 0)
  );
}

/**
 * Unit vertex normals: the area-weighted mean of the adjacent triangles' normals, so they follow
 * the winding (outward). A vertex whose triangles are all degenerate gets 0 0 0.
 */
export function computeVertexNormals(positionsMm: Float32Array, triangles: Uint32Array): Float32Array {
  const acc = new Float64Array(positionsMm.length);
  const p = positionsMm;
  for (let i = 0; i < triangles.length; i += 3) {
    const a = triangles[i]! * 3, b = triangles[i + 1]! * 3, c = triangles[i + 2]! * 3;
    const ux = p[b]! - p[a]!, uy = p[b + 1]! - p[a + 1]!, uz = p[b + 2]! - p[a + 2]!;
    const vx = p[c]! - p[a]!, vy = p[c + 1]! - p[a + 1]!, vz = p[c + 2]! - p[a + 2]!;
    // The cross product's length is twice the area: the weighting comes for free.
    const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
    for (const v of [a, b, c]) {
      acc[v] = acc[v]! + nx;
      acc[v + 1] = acc[v + 1]! + ny;
      acc[v + 2] = acc[v + 2]! + nz;
    }
  }
  const out = new Float32Array(positionsMm.length);
  for (let v = 0; v < acc.length; v += 3) {
    const len = Math.hypot(acc[v]!, acc[v + 1]!, acc[v + 2]!);
    if (len > 0) {
      out[v] = acc[v]! / len;
      out[v + 1] = acc[v + 1]! / len;
      out[v + 2] = acc[v + 2]! / len;
    }
  }
  return out;
}

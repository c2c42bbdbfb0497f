// Triangle meshes and their two most widely read exchange formats: binary STL (3D printing
// slicers, CAD) and Wavefront OBJ (Blender, MeshLab, 3D Slicer, three.js).
//
// Units: positions are millimetres in the volume's frame (the robot base frame for our
// reconstructions). STL has no unit field; every slicer we know of assumes millimetres, which is
// why we keep mm rather than converting. OBJ has no unit either; we say so in a comment line.
//
// Winding: triangles are counter-clockwise seen from outside, so the right-hand rule gives the
// outward normal. STL's facet normals are recomputed from that winding (readers that trust the
// stored normal and readers that trust the winding then agree).
import { Eco3dError } from './errors.ts';

export interface Mesh {
  /** x, y, z per vertex, millimetres. */
  readonly positionsMm: Float32Array;
  /** Three vertex indices per triangle, counter-clockwise seen from outside. */
  readonly triangles: Uint32Array;
  /** Optional unit normal per vertex (x, y, z), pointing outward. */
  readonly normals?: Float32Array | undefined;
}

/** Vertex count. */
export function meshVertexCount(mesh: Mesh): number {
  return mesh.positionsMm.length / 3;
}

/** Triangle count. */
export function meshTriangleCount(mesh: Mesh): number {
  return mesh.triangles.length / 3;
}

/** Throws ECO3D_ERR_BAD_REQUEST unless the arrays are whole triples and every index is in range. */
export function checkMesh(mesh: Mesh): void {
  const { positionsMm: p, triangles: t, normals: n } = mesh;
  if (p.length % 3 !== 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `mesh positions have ${p.length} numbers, not a multiple of 3`);
  if (t.length % 3 !== 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `mesh triangles have ${t.length} indices, not a multiple of 3`);
  if (n !== undefined && n.length !== p.length) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `mesh has ${n.length / 3} normals for ${p.length / 3} vertices`);
  const vertexCount = p.length / 3;
  for (let i = 0; i < t.length; i++) {
    if (t[i]! >= vertexCount) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `mesh triangle ${Math.floor(i / 3)} refers to vertex ${t[i]}, the mesh has ${vertexCount}`);
  }
  for (let i = 0; i < p.length; i++) {
    if (!Number.isFinite(p[i]!)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `mesh vertex ${Math.floor(i / 3)} has a non-finite coordinate (${p[i]})`);
  }
}

// ---------------------------------------------------------------------------------------------
// Binary STL

const STL_HEADER_BYTES = 80;
const STL_TRIANGLE_BYTES = 50;

/**
 * Binary STL: an 80-byte header, a uint32 triangle count, then per triangle a float32 facet
 * normal, three float32 vertices and a zero uint16 "attribute byte count", little-endian.
 * `name` goes in the header (ASCII; other characters become "?", cut at 80 bytes). A header that
 * begins with "solid" makes some readers parse the file as ASCII STL, so such a name is prefixed.
 */
export function encodeStlBinary(mesh: Mesh, name = 'Eco3D mesh, units mm'): Uint8Array {
  checkMesh(mesh);
  const triangleCount = mesh.triangles.length / 3;
  if (triangleCount > 0xffffffff) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `binary STL holds at most 2^32-1 triangles, the mesh has ${triangleCount}`);
  const out = new Uint8Array(STL_HEADER_BYTES + 4 + triangleCount * STL_TRIANGLE_BYTES);
  let header = name.replace(/[^\x20-\x7e]/g, '?');
  if (/^\s*solid/i.test(header)) header = `binary ${header}`;
  header = header.slice(0, STL_HEADER_BYTES);
  for (let i = 0; i < header.length; i++) out[i] = header.charCodeAt(i);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  dv.setUint32(STL_HEADER_BYTES, triangleCount, true);
  const p = mesh.positionsMm;
  const t = mesh.triangles;
  let at = STL_HEADER_BYTES + 4;
  for (let k = 0; k < triangleCount; k++) {
    const a = t[3 * k]! * 3;
    const b = t[3 * k + 1]! * 3;
    const c = t[3 * k + 2]! * 3;
    const [nx, ny, nz] = unitNormal(p, a, b, c);
    dv.setFloat32(at, nx, true);
    dv.setFloat32(at + 4, ny, true);
    dv.setFloat32(at + 8, nz, true);
    at += 12;
    for (const v of [a, b, c]) {
      dv.setFloat32(at, p[v]!, true);
      dv.setFloat32(at + 4, p[v + 1]!, true);
      dv.setFloat32(at + 8, p[v + 2]!, true);
      at += 12;
    }
    at += 2; // attribute byte count: 0 (the array is zero-filled)
  }
  return out;
}

/** Unit normal of triangle (a, b, c) (offsets into `p`) by the right-hand rule; 0 0 0 when degenerate. */
function unitNormal(p: Float32Array, a: number, b: number, c: number): [number, number, number] {
  const ux = p[b]! - p[a]!, uy = p[b + 1]! - p[a + 1]!, uz = p[b + 2]! - p[a + 2]!;
  const vx = p[c]! - p[a]!, vy = p[c + 1]! - p[a + 1]!, vz = p[c + 2]! - p[a + 2]!;
  const nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
  const len = Math.hypot(nx, ny, nz);
  return len > 0 ? [nx / len, ny / len, nz / len] : [0, 0, 0];
}

// ---------------------------------------------------------------------------------------------
// Wavefront OBJ

/**
 * Wavefront OBJ text (ASCII): `v x y z` per vertex, `vn` per normal when the mesh has them, and
 * `f a b c` per triangle (1-based; `a//a` with normals). Numbers are the shortest decimals that
 * read back to the same float32, so a round trip through OBJ loses nothing.
 */
export function encodeObj(mesh: Mesh): Uint8Array {
  checkMesh(mesh);
  const p = mesh.positionsMm;
  const n = mesh.normals;
  const t = mesh.triangles;
  // Built in chunks: one string for a multi-million-triangle mesh would approach V8's string limit.
  const chunks: Buffer[] = [];
  let lines: string[] = [
    '# Eco3D mesh',
    '# units: millimetres; triangles counter-clockwise seen from outside',
    `# ${p.length / 3} vertices, ${t.length / 3} triangles`,
  ];
  const flush = (force: boolean): void => {
    if (lines.length === 0 || (!force && lines.length < 65536)) return;
    chunks.push(Buffer.from(`${lines.join('\n')}\n`, 'latin1'));
    lines = [];
  };
  for (let i = 0; i < p.length; i += 3) {
    lines.push(`v ${float32Text(p[i]!)} ${float32Text(p[i + 1]!)} ${float32Text(p[i + 2]!)}`);
    flush(false);
  }
  if (n !== undefined) {
    for (let i = 0; i < n.length; i += 3) {
      lines.push(`vn ${float32Text(n[i]!)} ${float32Text(n[i + 1]!)} ${float32Text(n[i + 2]!)}`);
      flush(false);
    }
  }
  for (let i = 0; i < t.length; i += 3) {
    const a = t[i]! + 1, b = t[i + 1]! + 1, c = t[i + 2]! + 1;
    lines.push(n === undefined ? `f ${a} ${b} ${c}` : `f ${a}//${a} ${b}//${b} ${c}//${c}`);
    flush(false);
  }
  flush(true);
  const all = Buffer.concat(chunks);
  return new Uint8Array(all.buffer, all.byteOffset, all.length);
}

/** The shortest decimal that parses back to the same float32 ("0.1", not "0.10000000149011612"). */
function float32Text(v: number): string {
  if (Object.is(v, -0) || v === 0) return '0';
  for (let digits = 6; digits < 9; digits++) {
    const s = v.toPrecision(digits);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(Number(v.toPrecision(9))); // 9 significant digits always identify a float32
}

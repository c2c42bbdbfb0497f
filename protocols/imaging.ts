// Ultrasound frames, tracked frames and volumes as every layer sees them.
//
// Conventions follow the PLUS toolkit, so that PLUS files and configs mean the same here:
// - An image is row-major, x (columns, u) fastest, 8-bit B-mode intensities.
// - The `Image` coordinate frame is in PIXELS: (u, v, 0) with u along columns, v along rows,
//   origin at the first pixel's centre. Pixel size lives in the ImageToProbe calibration.
// - Transforms are 4×4 homogeneous matrices, row-major (16 numbers, as PLUS writes them), named
//   `FromToTo`: `imageToReference` maps a point in Image (px) to Reference (mm).
// - Volumes are axis-aligned in the Reference frame, x fastest, then y, then z.
import type { Vec3 } from './robot.ts';

/** Row-major 4×4 homogeneous transform. */
export type Mat4 = Float64Array;

export interface ImageFrame {
  /** Monotonic frame counter of its source. */
  readonly index: number;
  /** Acquisition time on the robot/tracker clock, milliseconds (the clock poses use). */
  readonly tMs: number;
  readonly width: number;
  readonly height: number;
  /** width × height, row-major. */
  readonly pixels: Uint8Array;
}

/** A frame with the transform from its Image frame (px) to the Reference frame (mm). */
export interface TrackedFrame extends ImageFrame {
  readonly imageToReference: Mat4;
}

export interface VolumeGrid {
  /** Centre of voxel (0, 0, 0) in the Reference frame. */
  readonly originMm: Vec3;
  readonly spacingMm: Vec3;
  /** Voxel counts along x, y, z. */
  readonly dims: readonly [number, number, number];
}

export interface Volume {
  readonly grid: VolumeGrid;
  /** dims[0] × dims[1] × dims[2] voxels, x fastest. */
  readonly data: Uint8Array;
}

export const IDENTITY_MAT4 = (): Mat4 => new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);

/** a · b (apply b first, then a). */
export function mat4Mul(a: Mat4, b: Mat4): Mat4 {
  const r = new Float64Array(16);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 4; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += a[i * 4 + k]! * b[k * 4 + j]!;
      r[i * 4 + j] = s;
    }
  }
  return r;
}

/** Applies a homogeneous transform to a point. */
export function mat4Apply(m: Mat4, p: Vec3): Vec3 {
  return {
    x: m[0]! * p.x + m[1]! * p.y + m[2]! * p.z + m[3]!,
    y: m[4]! * p.x + m[5]! * p.y + m[6]! * p.z + m[7]!,
    z: m[8]! * p.x + m[9]! * p.y + m[10]! * p.z + m[11]!,
  };
}

/** Inverse of a rigid or affine transform (general 4×4 inverse by cofactors); null if singular. */
export function mat4Invert(m: Mat4): Mat4 | null {
  const a = m;
  const inv = new Float64Array(16);
  inv[0] = a[5]! * a[10]! * a[15]! - a[5]! * a[11]! * a[14]! - a[9]! * a[6]! * a[15]! + a[9]! * a[7]! * a[14]! + a[13]! * a[6]! * a[11]! - a[13]! * a[7]! * a[10]!;
  inv[4] = -a[4]! * a[10]! * a[15]! + a[4]! * a[11]! * a[14]! + a[8]! * a[6]! * a[15]! - a[8]! * a[7]! * a[14]! - a[12]! * a[6]! * a[11]! + a[12]! * a[7]! * a[10]!;
  inv[8] = a[4]! * a[9]! * a[15]! - a[4]! * a[11]! * a[13]! - a[8]! * a[5]! * a[15]! + a[8]! * a[7]! * a[13]! + a[12]! * a[5]! * a[11]! - a[12]! * a[7]! * a[9]!;
  inv[12] = -a[4]! * a[9]! * a[14]! + a[4]! * a[10]! * a[13]! + a[8]! * a[5]! * a[14]! - a[8]! * a[6]! * a[13]! - a[12]! * a[5]! * a[10]! + a[12]! * a[6]! * a[9]!;
  inv[1] = -a[1]! * a[10]! * a[15]! + a[1]! * a[11]! * a[14]! + a[9]! * a[2]! * a[15]! - a[9]! * a[3]! * a[14]! - a[13]! * a[2]! * a[11]! + a[13]! * a[3]! * a[10]!;
  inv[5] = a[0]! * a[10]! * a[15]! - a[0]! * a[11]! * a[14]! - a[8]! * a[2]! * a[15]! + a[8]! * a[3]! * a[14]! + a[12]! * a[2]! * a[11]! - a[12]! * a[3]! * a[10]!;
  inv[9] = -a[0]! * a[9]! * a[15]! + a[0]! * a[11]! * a[13]! + a[8]! * a[1]! * a[15]! - a[8]! * a[3]! * a[13]! - a[12]! * a[1]! * a[11]! + a[12]! * a[3]! * a[9]!;
  inv[13] = a[0]! * a[9]! * a[14]! - a[0]! * a[10]! * a[13]! - a[8]! * a[1]! * a[14]! + a[8]! * a[2]! * a[13]! + a[12]! * a[1]! * a[10]! - a[12]! * a[2]! * a[9]!;
  inv[2] = a[1]! * a[6]! * a[15]! - a[1]! * a[7]! * a[14]! - a[5]! * a[2]! * a[15]! + a[5]! * a[3]! * a[14]! + a[13]! * a[2]! * a[7]! - a[13]! * a[3]! * a[6]!;
  inv[6] = -a[0]! * a[6]! * a[15]! + a[0]! * a[7]! * a[14]! + a[4]! * a[2]! * a[15]! - a[4]! * a[3]! * a[14]! - a[12]! * a[2]! * a[7]! + a[12]! * a[3]! * a[6]!;
  inv[10] = a[0]! * a[5]! * a[15]! - a[0]! * a[7]! * a[13]! - a[4]! * a[1]! * a[15]! + a[4]! * a[3]! * a[13]! + a[12]! * a[1]! * a[7]! - a[12]! * a[3]! * a[5]!;
  inv[14] = -a[0]! * a[5]! * a[14]! + a[0]! * a[6]! * a[13]! + a[4]! * a[1]! * a[14]! - a[4]! * a[2]! * a[13]! - a[12]! * a[1]! * a[6]! + a[12]! * a[2]! * a[5]!;
  inv[3] = -a[1]! * a[6]! * a[11]! + a[1]! * a[7]! * a[10]! + a[5]! * a[2]! * a[11]! - a[5]! * a[3]! * a[10]! - a[9]! * a[2]! * a[7]! + a[9]! * a[3]! * a[6]!;
  inv[7] = a[0]! * a[6]! * a[11]! - a[0]! * a[7]! * a[10]! - a[4]! * a[2]! * a[11]! + a[4]! * a[3]! * a[10]! + a[8]! * a[2]! * a[7]! - a[8]! * a[3]! * a[6]!;
  inv[11] = -a[0]! * a[5]! * a[11]! + a[0]! * a[7]! * a[9]! + a[4]! * a[1]! * a[11]! - a[4]! * a[3]! * a[9]! - a[8]! * a[1]! * a[7]! + a[8]! * a[3]! * a[5]!;
  inv[15] = a[0]! * a[5]! * a[10]! - a[0]! * a[6]! * a[9]! - a[4]! * a[1]! * a[10]! + a[4]! * a[2]! * a[9]! + a[8]! * a[1]! * a[6]! - a[8]! * a[2]! * a[5]!;
  const det = a[0]! * inv[0] + a[1]! * inv[4] + a[2]! * inv[8] + a[3]! * inv[12];
  if (det === 0 || !Number.isFinite(det)) return null;
  for (let i = 0; i < 16; i++) inv[i] = inv[i]! / det;
  return inv;
}

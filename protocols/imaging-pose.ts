// Poses as 4×4 transforms, so a robot pose can sit in a PLUS-style transform chain:
// imageToReference = poseToMat4(tcpPose) · imageToProbe. Pure, no I/O.
//
// A Pose (protocols/robot.ts) is the TCP (probe face centre) in the base frame, orientation
// base ← tool; as a matrix it is ProbeToReference when the base frame is the Reference frame:
// row-major, millimetres, rotation in the upper-left 3×3, translation in the last column.
import { mat3ToQuat, quatNormalize, quatToMat3 } from './geometry.ts';
import type { Mat4 } from './imaging.ts';
import type { Pose } from './robot.ts';

/**
 * Tool (probe) frame → base frame as a row-major 4×4 (mm). The quaternion is normalised first,
 * because a pose that travelled through JSON or interpolation is only nearly unit, and an
 * unnormalised one would scale the image.
 */
export function poseToMat4(pose: Pose): Mat4 {
  const r = quatToMat3(quatNormalize(pose.orientation));
  const p = pose.positionMm;
  return new Float64Array([r[0], r[1], r[2], p.x, r[3], r[4], r[5], p.y, r[6], r[7], r[8], p.z, 0, 0, 0, 1]);
}

/**
 * The inverse reading: a rigid row-major 4×4 (mm) back to a Pose. Only the rotation part of the
 * upper-left 3×3 is kept (it is assumed orthonormal, as in a tracker's ProbeToReference).
 */
export function mat4ToPose(m: Mat4): Pose {
  const q = mat3ToQuat([m[0]!, m[1]!, m[2]!, m[4]!, m[5]!, m[6]!, m[8]!, m[9]!, m[10]!]);
  return { positionMm: { x: m[3]!, y: m[7]!, z: m[11]! }, orientation: q };
}

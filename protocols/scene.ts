// The default work cell, shared by the simulator, the safety defaults and the viewer's 3D scene:
// a UR-class arm mounted at the base-frame origin beside a patient lying on a table along y.
// Millimetres, base frame, z up. A real site overrides the workspace box in its configuration.
import type { Joints6, Pose, Vec3 } from './robot.ts';

/** Table top plane height. */
export const TABLE_TOP_Z_MM = 0;

/**
 * The patient's torso: the upper half of an ellipsoid resting on the table.
 * x: left-right width, y: head-foot length, z: height above the table.
 */
export const PATIENT_TORSO = {
  centerMm: { x: 450, y: 0, z: TABLE_TOP_Z_MM } as Vec3,
  semiAxesMm: { x: 170, y: 300, z: 120 } as Vec3,
  /** Soft-tissue stiffness along the surface normal, newtons per millimetre of indentation. */
  stiffnessNPerMm: 0.8,
} as const;

/** Probe length from the tool flange to the probe face, along tool z. */
export const PROBE_LENGTH_MM = 150;

/** Safety workspace box for the probe face (TCP). */
export interface WorkspaceBox {
  readonly minMm: Vec3;
  readonly maxMm: Vec3;
}

export const DEFAULT_WORKSPACE: WorkspaceBox = {
  minMm: { x: 200, y: -350, z: 20 },
  maxMm: { x: 700, y: 350, z: 500 },
};

/** Start pose of the simulator and the `home` target: probe 150 mm above the torso, pointing down. */
export const HOME_POSE: Pose = {
  positionMm: { x: 450, y: 0, z: 270 },
  // tool z = -base z (pointing down): a rotation of π about base x.
  orientation: { x: 1, y: 0, z: 0, w: 0 },
};

/** Joint limits of the simulated arm, radians (UR-class: ±2π except the elbow, ±π). */
export const JOINT_LIMITS_RAD: readonly { min: number; max: number }[] = [
  { min: -2 * Math.PI, max: 2 * Math.PI },
  { min: -2 * Math.PI, max: 2 * Math.PI },
  { min: -Math.PI, max: Math.PI },
  { min: -2 * Math.PI, max: 2 * Math.PI },
  { min: -2 * Math.PI, max: 2 * Math.PI },
  { min: -2 * Math.PI, max: 2 * Math.PI },
];

export const JOINT_MAX_SPEED_RAD_PER_S: Joints6 = [1.5, 1.5, 2, 2.5, 2.5, 2.5];
export const JOINT_MAX_ACCEL_RAD_PER_S2: Joints6 = [4, 4, 4, 6, 6, 6];

/**
 * Skin height of the default patient at (x, y), or null off the torso. A first guess only: the
 * sweep's descent finds the real skin by contact force.
 */
export function torsoSkinHeightMm(xMm: number, yMm: number): number | null {
  const c = PATIENT_TORSO.centerMm;
  const a = PATIENT_TORSO.semiAxesMm;
  const u = ((xMm - c.x) / a.x) ** 2 + ((yMm - c.y) / a.y) ** 2;
  return u >= 1 ? null : c.z + a.z * Math.sqrt(1 - u);
}

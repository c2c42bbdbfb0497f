// The simulated patient: a soft torso (the upper half of the PATIENT_TORSO ellipsoid, lying on
// the table) that the probe presses into, and the force/torque sensor that feels it.
//
// Public API (re-exported by sim/index.ts):
//   skinSurfaceAt(xMm, yMm, torso?)  → { zMm, normal } of the skin above (x, y), or null off the torso
//   skinQuery(pointMm, torso?)       → signed distance to the skin (depthMm > 0 inside the body),
//                                      the closest skin point and its outward normal
//   tissueForceN(depthMm, torso?)    → normal force for an indentation (0 when not touching)
//   PatientModel                     → contactAt(tcpPose) (noise-free), sensedWrench(tcpPose, extraN)
//                                      (with seeded Gaussian sensor noise)
//
// Model: the probe face is a rectangle (PROBE_FACE_HALF_MM) centred on the TCP. Its indentation
// is the TCP's depth below the skin along the skin's normal (closest skin point, exact, after
// D. Eberly, "Distance from a Point to an Ellipse, an Ellipsoid, or a Hyperellipsoid", 2013).
// Tissue pushes back along the outward normal with k·d + k2·d² (soft tissue stiffens as it is
// compressed; k is PATIENT_TORSO.stiffnessNPerMm). A tilted face presses one edge deeper, which
// moves the centre of pressure off the axis and gives the small torques a real probe feels.
// Friction is not modelled. The table top is rigid and not part of the contact model.
import type { Pose, Vec3, Wrench } from '../protocols/robot.ts';
import { quatConj, rotate } from '../protocols/geometry.ts';
import { PATIENT_TORSO } from '../protocols/scene.ts';
import { createPrng, type Prng } from './prng.ts';

export interface TorsoModel {
  readonly centerMm: Vec3;
  readonly semiAxesMm: Vec3;
  readonly stiffnessNPerMm: number;
}

/** Quadratic stiffening of tissue, N/mm²: at 20 mm the force is 10 % above the linear k·d. */
export const TISSUE_STIFFENING_N_PER_MM2 = 0.004;

/** Half width (tool x, along the transducer array) and half thickness (tool y) of the probe face. */
export const PROBE_FACE_HALF_MM = { x: 20, y: 6 } as const;

export interface SkinPoint {
  /** Signed distance to the skin: positive inside the body (indentation), negative outside. */
  readonly depthMm: number;
  /** The closest point on the skin surface. */
  readonly surfaceMm: Vec3;
  /** Outward unit normal of the skin at that point. */
  readonly normal: Vec3;
}

/** Outward normal of the ellipsoid at a point on (or near) its surface. */
function ellipsoidNormal(torso: TorsoModel, p: Vec3): Vec3 {
  const c = torso.centerMm, a = torso.semiAxesMm;
  const gx = (p.x - c.x) / (a.x * a.x), gy = (p.y - c.y) / (a.y * a.y), gz = (p.z - c.z) / (a.z * a.z);
  const n = Math.hypot(gx, gy, gz);
  return n === 0 ? { x: 0, y: 0, z: 1 } : { x: gx / n, y: gy / n, z: gz / n };
}

/** The skin above (xMm, yMm): its height and outward normal, or null off the torso's footprint. */
export function skinSurfaceAt(xMm: number, yMm: number, torso: TorsoModel = PATIENT_TORSO): { zMm: number; normal: Vec3 } | null {
  const c = torso.centerMm, a = torso.semiAxesMm;
  const u = (xMm - c.x) / a.x, v = (yMm - c.y) / a.y;
  const r2 = u * u + v * v;
  if (r2 > 1) return null;
  const p = { x: xMm, y: yMm, z: c.z + a.z * Math.sqrt(1 - r2) };
  return { zMm: p.z, normal: ellipsoidNormal(torso, p) };
}

// --- Eberly's robust point–ellipsoid distance (first octant, axes sorted e0 ≥ e1 ≥ e2) ---------

const MAX_BISECTIONS = 160;

function robustLength2(a: number, b: number): number {
  const m = Math.max(Math.abs(a), Math.abs(b));
  return m === 0 ? 0 : m * Math.hypot(a / m, b / m);
}
function robustLength3(a: number, b: number, c: number): number {
  const m = Math.max(Math.abs(a), Math.abs(b), Math.abs(c));
  return m === 0 ? 0 : m * Math.hypot(a / m, b / m, c / m);
}

function getRoot2(r0: number, z0: number, z1: number, g: number): number {
  const n0 = r0 * z0;
  let s0 = z1 - 1;
  let s1 = g < 0 ? 0 : robustLength2(n0, z1) - 1;
  let s = 0;
  for (let i = 0; i < MAX_BISECTIONS; i++) {
    s = (s0 + s1) / 2;
    if (s === s0 || s === s1) break;
    const a = n0 / (s + r0), b = z1 / (s + 1);
    const gs = a * a + b * b - 1;
    if (gs > 0) s0 = s;
    else if (gs < 0) s1 = s;
    else break;
  }
  return s;
}

function getRoot3(r0: number, r1: number, z0: number, z1: number, z2: number, g: number): number {
  const n0 = r0 * z0, n1 = r1 * z1;
  let s0 = z2 - 1;
  let s1 = g < 0 ? 0 : robustLength3(n0, n1, z2) - 1;
  let s = 0;
  for (let i = 0; i < MAX_BISECTIONS; i++) {
    s = (s0 + s1) / 2;
    if (s === s0 || s === s1) break;
    const a = n0 / (s + r0), b = n1 / (s + r1), c = z2 / (s + 1);
    const gs = a * a + b * b + c * c - 1;
    if (gs > 0) s0 = s;
    else if (gs < 0) s1 = s;
    else break;
  }
  return s;
}

/** Closest point on the ellipse (e0 ≥ e1) to (y0, y1) ≥ 0. */
function closestOnEllipse(e0: number, e1: number, y0: number, y1: number): [number, number] {
  if (y1 > 0) {
    if (y0 > 0) {
      const z0 = y0 / e0, z1 = y1 / e1;
      const g = z0 * z0 + z1 * z1 - 1;
      if (g === 0) return [y0, y1];
      const r0 = (e0 / e1) ** 2;
      const sbar = getRoot2(r0, z0, z1, g);
      return [(r0 * y0) / (sbar + r0), y1 / (sbar + 1)];
    }
    return [0, e1];
  }
  const numer0 = e0 * y0, denom0 = e0 * e0 - e1 * e1;
  if (numer0 < denom0) {
    const xde0 = numer0 / denom0;
    return [e0 * xde0, e1 * Math.sqrt(Math.max(0, 1 - xde0 * xde0))];
  }
  return [e0, 0];
}

/** Closest point on the ellipsoid (e0 ≥ e1 ≥ e2) to (y0, y1, y2) ≥ 0. */
function closestOnEllipsoid(e0: number, e1: number, e2: number, y0: number, y1: number, y2: number): [number, number, number] {
  if (y2 > 0) {
    if (y1 > 0) {
      if (y0 > 0) {
        const z0 = y0 / e0, z1 = y1 / e1, z2 = y2 / e2;
        const g = z0 * z0 + z1 * z1 + z2 * z2 - 1;
        if (g === 0) return [y0, y1, y2];
        const r0 = (e0 / e2) ** 2, r1 = (e1 / e2) ** 2;
        const sbar = getRoot3(r0, r1, z0, z1, z2, g);
        return [(r0 * y0) / (sbar + r0), (r1 * y1) / (sbar + r1), y2 / (sbar + 1)];
      }
      const [x1, x2] = closestOnEllipse(e1, e2, y1, y2);
      return [0, x1, x2];
    }
    if (y0 > 0) {
      const [x0, x2] = closestOnEllipse(e0, e2, y0, y2);
      return [x0, 0, x2];
    }
    return [0, 0, e2];
  }
  const denom0 = e0 * e0 - e2 * e2, denom1 = e1 * e1 - e2 * e2;
  const numer0 = e0 * y0, numer1 = e1 * y1;
  if (numer0 < denom0 && numer1 < denom1) {
    const xde0 = numer0 / denom0, xde1 = numer1 / denom1;
    const discr = 1 - xde0 * xde0 - xde1 * xde1;
    if (discr > 0) return [e0 * xde0, e1 * xde1, e2 * Math.sqrt(discr)];
  }
  const [x0, x1] = closestOnEllipse(e0, e1, y0, y1);
  return [x0, x1, 0];
}

/**
 * The skin point closest to `pointMm` and the signed distance to it (positive inside the body).
 * Exact for the whole ellipsoid; callers only care about the upper half (the lower half is under
 * the table top).
 */
export function skinQuery(pointMm: Vec3, torso: TorsoModel = PATIENT_TORSO): SkinPoint {
  const c = torso.centerMm, a = torso.semiAxesMm;
  const rel = [pointMm.x - c.x, pointMm.y - c.y, pointMm.z - c.z];
  const axes = [a.x, a.y, a.z];
  // Sort the axes descending (Eberly's precondition) and fold the point into the first octant.
  const order = [0, 1, 2].sort((i, j) => axes[j]! - axes[i]!);
  const [i0, i1, i2] = order as [number, number, number];
  const x = closestOnEllipsoid(axes[i0]!, axes[i1]!, axes[i2]!, Math.abs(rel[i0]!), Math.abs(rel[i1]!), Math.abs(rel[i2]!));
  const local = [0, 0, 0];
  local[i0] = Math.sign(rel[i0]!) * x[0] || x[0];
  local[i1] = Math.sign(rel[i1]!) * x[1] || x[1];
  local[i2] = Math.sign(rel[i2]!) * x[2] || x[2];
  const surfaceMm = { x: c.x + local[0]!, y: c.y + local[1]!, z: c.z + local[2]! };
  const dist = Math.hypot(pointMm.x - surfaceMm.x, pointMm.y - surfaceMm.y, pointMm.z - surfaceMm.z);
  const inside = (rel[0]! / a.x) ** 2 + (rel[1]! / a.y) ** 2 + (rel[2]! / a.z) ** 2 < 1;
  return { depthMm: inside ? dist : -dist, surfaceMm, normal: ellipsoidNormal(torso, surfaceMm) };
}

/** Normal force of the tissue for an indentation depth (zero when not touching). */
export function tissueForceN(depthMm: number, torso: TorsoModel = PATIENT_TORSO): number {
  if (!(depthMm > 0)) return 0;
  return torso.stiffnessNPerMm * depthMm + TISSUE_STIFFENING_N_PER_MM2 * depthMm * depthMm;
}

export interface Contact {
  /** Indentation of the probe face below the skin, along the normal; 0 when not touching. */
  readonly depthMm: number;
  /** Magnitude of the tissue's normal reaction force. */
  readonly normalForceN: number;
  /** Outward skin normal at the contact (base frame); null when not touching. */
  readonly normal: Vec3 | null;
  /** What the probe applies to the patient, tool frame (noise-free). */
  readonly wrench: Wrench;
}

const ZERO_WRENCH: Wrench = Object.freeze({ forceN: { x: 0, y: 0, z: 0 }, torqueNm: { x: 0, y: 0, z: 0 } });
const NO_CONTACT: Contact = Object.freeze({ depthMm: 0, normalForceN: 0, normal: null, wrench: ZERO_WRENCH });

export interface PatientModelOptions {
  readonly torso?: TorsoModel;
  /** Seed of the sensor noise; the same seed gives the same noise sequence. */
  readonly seed?: number;
  /** Standard deviation of the sensed force, per axis. */
  readonly forceNoiseN?: number;
  /** Standard deviation of the sensed torque, per axis. */
  readonly torqueNoiseNm?: number;
}

export class PatientModel {
  readonly torso: TorsoModel;
  readonly forceNoiseN: number;
  readonly torqueNoiseNm: number;
  private readonly prng: Prng;

  constructor(opts: PatientModelOptions = {}) {
    this.torso = opts.torso ?? PATIENT_TORSO;
    // Typical of a 6-axis F/T sensor on a UR e-series flange (resolution ≈ 0.1 N / 0.005 N·m).
    this.forceNoiseN = opts.forceNoiseN ?? 0.05;
    this.torqueNoiseNm = opts.torqueNoiseNm ?? 0.002;
    this.prng = createPrng(opts.seed ?? 1);
  }

  /** The probe's contact with the torso at a TCP pose, noise-free. */
  contactAt(tcpPose: Pose): Contact {
    const p = tcpPose.positionMm;
    const c = this.torso.centerMm, a = this.torso.semiAxesMm;
    // Quick reject before the exact distance: contact needs the face centre inside the body.
    if (p.z < c.z || ((p.x - c.x) / a.x) ** 2 + ((p.y - c.y) / a.y) ** 2 + ((p.z - c.z) / a.z) ** 2 >= 1) return NO_CONTACT;
    const skin = skinQuery(p, this.torso);
    if (!(skin.depthMm > 0)) return NO_CONTACT;
    const depthMm = skin.depthMm;
    const normalForceN = tissueForceN(depthMm, this.torso);
    // The probe pushes into the body, against the outward normal; express it in the tool frame.
    const toTool = quatConj(tcpPose.orientation);
    const nTool = rotate(toTool, skin.normal);
    const forceN = { x: -normalForceN * nTool.x, y: -normalForceN * nTool.y, z: -normalForceN * nTool.z };
    // Centre of pressure of a linear pressure field over the rectangular face: a face point at
    // r = (u, v, 0) sits d − r·n deep, so the centroid shifts by −(h²/3)·n_lateral/d per axis
    // (h = half-size), clamped to the face edge when only part of the face touches.
    const copX = clamp((-(PROBE_FACE_HALF_MM.x ** 2) / 3) * nTool.x / depthMm, PROBE_FACE_HALF_MM.x);
    const copY = clamp((-(PROBE_FACE_HALF_MM.y ** 2) / 3) * nTool.y / depthMm, PROBE_FACE_HALF_MM.y);
    // τ = r × F, r = (copX, copY, 0) mm → N·m.
    const torqueNm = {
      x: (copY * forceN.z) / 1000,
      y: (-copX * forceN.z) / 1000,
      z: (copX * forceN.y - copY * forceN.x) / 1000,
    };
    return { depthMm, normalForceN, normal: skin.normal, wrench: { forceN, torqueNm } };
  }

  /**
   * What the force/torque sensor reports: the contact wrench, plus `extraForceAlongProbeN` pushing
   * along the probe axis (an external push, for fault injection), plus Gaussian noise.
   */
  sensedWrench(tcpPose: Pose, extraForceAlongProbeN = 0): Wrench {
    const w = this.contactAt(tcpPose).wrench;
    const g = (): number => this.prng.gaussian();
    const fn = this.forceNoiseN, tn = this.torqueNoiseNm;
    return {
      forceN: { x: w.forceN.x + fn * g(), y: w.forceN.y + fn * g(), z: w.forceN.z + extraForceAlongProbeN + fn * g() },
      torqueNm: { x: w.torqueNm.x + tn * g(), y: w.torqueNm.y + tn * g(), z: w.torqueNm.z + tn * g() },
    };
  }
}

const clamp = (v: number, lim: number): number => Math.max(-lim, Math.min(lim, v));

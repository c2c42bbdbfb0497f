// Kinematics of the simulated arm: a UR5e-class 6-axis arm with the ultrasound probe as its tool.
//
// Public API (re-exported by sim/index.ts):
//   UR5E_DH                      the standard (Denavit–Hartenberg) parameters, millimetres/radians
//   HOME_JOINTS_RAD              the joint configuration whose TCP is exactly HOME_POSE
//   forwardKinematics(q)         → the TCP Pose (probe face centre) in the base frame
//   jacobian(q)                  → the 6×6 geometric Jacobian at the TCP, rows [vx vy vz wx wy wz]
//                                  (mm/rad for the linear rows, rad/rad for the angular rows), base frame
//   inverseKinematics(pose, seed) → the solution closest to `seed` within the joint limits, or null
//   inverseKinematicsAll(pose)   → every closed-form solution (up to 8), wrapped to (-π, π]
//   withinJointLimits(q)
//   singularityMargins(q)        → how far q is from each of the arm's three singularities
//
// Conventions:
// - DH frames as Universal Robots publish them (Rz(θ)·Tz(d)·Tx(a)·Rx(α) per joint); at all-zero
//   joints the arm is stretched out along base −x. The base frame is the scene's base frame
//   (protocols/robot.ts: origin at the robot base, z up, mm).
// - The tool (TCP) frame is the flange frame moved PROBE_LENGTH_MM along flange z, with the same
//   orientation: tool z is the probe axis, pointing out of the probe face into the patient.
// - Inverse kinematics is the closed form for UR-type wrists (K. P. Hawkins, "Analytic Inverse
//   Kinematics for the Universal Robots UR-5/UR-10 Arms", 2013), checked here by re-deriving each
//   step: 2 shoulder × 2 wrist × 2 elbow branches. At a wrist singularity (sin θ5 ≈ 0) θ6 is free
//   and is taken from the seed. Joints with ±2π limits get the 2π-multiple nearest the seed, so a
//   continuous Cartesian path gives continuous joints.
import type { Joints6, Pose, Quat, Vec3 } from '../protocols/robot.ts';
import { mat3ToQuat, quatNormalize, quatToMat3 } from '../protocols/geometry.ts';
import { HOME_POSE, JOINT_LIMITS_RAD, PROBE_LENGTH_MM } from '../protocols/scene.ts';

export const UR5E_DH = {
  d1Mm: 162.5,
  a2Mm: -425,
  a3Mm: -392.2,
  d4Mm: 133.3,
  d5Mm: 99.7,
  d6Mm: 99.6,
  /** Link twists α1..α6. */
  alphaRad: [Math.PI / 2, 0, 0, Math.PI / 2, -Math.PI / 2, 0] as const,
  toolLengthMm: PROBE_LENGTH_MM,
} as const;

const { d1Mm: D1, a2Mm: A2, a3Mm: A3, d4Mm: D4, d5Mm: D5, d6Mm: D6, toolLengthMm: TOOL } = UR5E_DH;
const DH_D = [D1, 0, 0, D4, D5, D6] as const;
const DH_A = [0, A2, A3, 0, 0, 0] as const;
const DH_SIN_ALPHA = UR5E_DH.alphaRad.map((a) => Math.round(Math.sin(a)));
const DH_COS_ALPHA = UR5E_DH.alphaRad.map((a) => Math.round(Math.cos(a)));

const TWO_PI = 2 * Math.PI;
/** Below this |sin θ5| the wrist is treated as singular (θ4 and θ6 share one axis). */
const WRIST_SINGULAR_EPS = 1e-9;
/** Round-off slack when a cosine lands just outside [-1, 1] at a workspace boundary. */
const COS_SLACK = 1e-9;

// A rigid transform as a row-major 3×4 matrix [r00 r01 r02 px | r10 r11 r12 py | r20 r21 r22 pz],
// in plain arrays: allocation-light, and IK runs every simulation step.
type Mat34 = number[];

function identity34(): Mat34 {
  return [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0];
}

/** out = a · b (out may not alias a or b). */
function mul34(a: Mat34, b: Mat34, out: Mat34): Mat34 {
  for (let r = 0; r < 3; r++) {
    const a0 = a[r * 4]!, a1 = a[r * 4 + 1]!, a2 = a[r * 4 + 2]!, a3 = a[r * 4 + 3]!;
    out[r * 4] = a0 * b[0]! + a1 * b[4]! + a2 * b[8]!;
    out[r * 4 + 1] = a0 * b[1]! + a1 * b[5]! + a2 * b[9]!;
    out[r * 4 + 2] = a0 * b[2]! + a1 * b[6]! + a2 * b[10]!;
    out[r * 4 + 3] = a0 * b[3]! + a1 * b[7]! + a2 * b[11]! + a3;
  }
  return out;
}

/** Inverse of a rigid transform. */
function inv34(m: Mat34): Mat34 {
  const [r00, r01, r02, px, r10, r11, r12, py, r20, r21, r22, pz] = m as [number, number, number, number, number, number, number, number, number, number, number, number];
  return [
    r00, r10, r20, -(r00 * px + r10 * py + r20 * pz),
    r01, r11, r21, -(r01 * px + r11 * py + r21 * pz),
    r02, r12, r22, -(r02 * px + r12 * py + r22 * pz),
  ];
}

/** The DH link transform of joint i (0-based) at angle theta. */
function dhLink(i: number, theta: number, out: Mat34): Mat34 {
  const ct = Math.cos(theta), st = Math.sin(theta);
  const ca = DH_COS_ALPHA[i]!, sa = DH_SIN_ALPHA[i]!;
  const a = DH_A[i]!, d = DH_D[i]!;
  out[0] = ct; out[1] = -st * ca; out[2] = st * sa; out[3] = a * ct;
  out[4] = st; out[5] = ct * ca; out[6] = -ct * sa; out[7] = a * st;
  out[8] = 0; out[9] = sa; out[10] = ca; out[11] = d;
  return out;
}

/** Frames 1..6 (base ← joint-i frame) for q; frames[5] is the flange. */
function chain(q: readonly number[]): Mat34[] {
  const frames: Mat34[] = [];
  let prev = identity34();
  const link = identity34();
  for (let i = 0; i < 6; i++) {
    const next = mul34(prev, dhLink(i, q[i]!, link), new Array<number>(12));
    frames.push(next);
    prev = next;
  }
  return frames;
}

function poseFromFlange(f: Mat34): Pose {
  return {
    positionMm: { x: f[3]! + TOOL * f[2]!, y: f[7]! + TOOL * f[6]!, z: f[11]! + TOOL * f[10]! },
    orientation: mat3ToQuat([f[0]!, f[1]!, f[2]!, f[4]!, f[5]!, f[6]!, f[8]!, f[9]!, f[10]!]),
  };
}

/** The TCP (probe face centre) pose for joint angles q. */
export function forwardKinematics(q: Joints6): Pose {
  return poseFromFlange(chain(q)[5]!);
}

/**
 * Geometric Jacobian at the TCP, base frame: row-major 6×6, rows [vx vy vz wx wy wz], so that
 * twist = J · q̇ with linear velocity in mm/s and angular velocity in rad/s for q̇ in rad/s.
 */
export function jacobian(q: Joints6): number[] {
  const frames = chain(q);
  const f6 = frames[5]!;
  const tcp: Vec3 = { x: f6[3]! + TOOL * f6[2]!, y: f6[7]! + TOOL * f6[6]!, z: f6[11]! + TOOL * f6[10]! };
  const J = new Array<number>(36).fill(0);
  for (let i = 0; i < 6; i++) {
    // Joint i turns about the z axis of frame i-1 (the base frame for i = 0).
    const f = i === 0 ? identity34() : frames[i - 1]!;
    const zx = f[2]!, zy = f[6]!, zz = f[10]!;
    const rx = tcp.x - f[3]!, ry = tcp.y - f[7]!, rz = tcp.z - f[11]!;
    J[0 * 6 + i] = zy * rz - zz * ry;
    J[1 * 6 + i] = zz * rx - zx * rz;
    J[2 * 6 + i] = zx * ry - zy * rx;
    J[3 * 6 + i] = zx;
    J[4 * 6 + i] = zy;
    J[5 * 6 + i] = zz;
  }
  return J;
}

export function withinJointLimits(q: readonly number[]): boolean {
  for (let i = 0; i < 6; i++) {
    const lim = JOINT_LIMITS_RAD[i]!;
    const v = q[i]!;
    if (!(v >= lim.min && v <= lim.max)) return false;
  }
  return true;
}

const wrapPi = (a: number): number => {
  let r = a % TWO_PI;
  if (r > Math.PI) r -= TWO_PI;
  else if (r <= -Math.PI) r += TWO_PI;
  return r;
};

function flangeFromTcp(pose: Pose): Mat34 {
  const m = quatToMat3(quatNormalize(pose.orientation));
  const p = pose.positionMm;
  return [
    m[0], m[1], m[2], p.x - TOOL * m[2],
    m[3], m[4], m[5], p.y - TOOL * m[5],
    m[6], m[7], m[8], p.z - TOOL * m[8],
  ];
}

/**
 * Every closed-form solution for the TCP pose, angles wrapped to (-π, π] (not yet checked against
 * the joint limits). `theta6WhenSingular` fills θ6 where the wrist is singular.
 */
export function inverseKinematicsAll(pose: Pose, theta6WhenSingular = 0): Joints6[] {
  const T06 = flangeFromTcp(pose);
  const nx = T06[0]!, ox = T06[1]!, ax = T06[2]!, px = T06[3]!;
  const ny = T06[4]!, oy = T06[5]!, ay = T06[6]!, py = T06[7]!;
  const out: Joints6[] = [];

  // θ1: the wrist centre (origin of frame 5) lies d4 off the arm plane, along joint 2's axis
  // z1 = (sin θ1, −cos θ1, 0):  p05 · z1 = d4.
  const p05x = px - D6 * ax;
  const p05y = py - D6 * ay;
  const r = Math.hypot(p05x, p05y);
  if (r < Math.abs(D4) * (1 - COS_SLACK)) return out; // inside the shoulder's dead cylinder
  const phi1 = Math.atan2(p05y, p05x);
  const phi2 = Math.acos(Math.min(1, D4 / r));
  const t3 = identity34(), t4 = identity34(), t5 = identity34(), tmp = identity34(), t14 = identity34();
  for (const sh of [1, -1]) {
    const th1 = wrapPi(phi1 + sh * phi2 + Math.PI / 2);
    const s1 = Math.sin(th1), c1 = Math.cos(th1);
    // θ5: the flange's offset along z1 beyond d4 is d6·(z6 · z1) = d6·cos θ5.
    let c5 = (px * s1 - py * c1 - D4) / D6;
    if (Math.abs(c5) > 1 + COS_SLACK) continue;
    c5 = Math.max(-1, Math.min(1, c5));
    const th5a = Math.acos(c5);
    for (const wr of [1, -1]) {
      const th5 = wr * th5a;
      const s5 = Math.sin(th5);
      // θ6: z1 seen from frame 6 is (s5·c6, −s5·s6, c5).
      const xz1 = nx * s1 - ny * c1;
      const yz1 = ox * s1 - oy * c1;
      const th6 = Math.abs(s5) < WRIST_SINGULAR_EPS ? theta6WhenSingular : Math.atan2(-yz1 / s5, xz1 / s5);
      // The planar 2–3–4 chain: T14 = T01⁻¹ · T06 · T56⁻¹ · T45⁻¹.
      const T01inv = inv34(dhLink(0, th1, t3));
      const T45inv = inv34(dhLink(4, th5, t4));
      const T56inv = inv34(dhLink(5, th6, t5));
      mul34(mul34(T01inv, T06, tmp), T56inv, t3);
      mul34(t3, T45inv, t14);
      // Frame 3's origin is d4 back along y4 (= z3) from frame 4's origin.
      const p13x = t14[3]! - D4 * t14[1]!;
      const p13y = t14[7]! - D4 * t14[5]!;
      const c3raw = (p13x * p13x + p13y * p13y - A2 * A2 - A3 * A3) / (2 * A2 * A3);
      if (Math.abs(c3raw) > 1 + COS_SLACK) continue;
      const th3a = Math.acos(Math.max(-1, Math.min(1, c3raw)));
      for (const el of [1, -1]) {
        const th3 = el * th3a;
        const th2 = Math.atan2(p13y, p13x) - Math.atan2(A3 * Math.sin(th3), A2 + A3 * Math.cos(th3));
        // x4 in frame 1 is (cos θ234, sin θ234, 0).
        const th4 = Math.atan2(t14[4]!, t14[0]!) - th2 - th3;
        out.push([th1, wrapPi(th2), th3, wrapPi(th4), th5, wrapPi(th6)]);
        if (th3a === 0) break; // both elbow branches coincide
      }
    }
    if (phi2 === 0) break; // both shoulder branches coincide
  }
  return out;
}

/**
 * The inverse-kinematics solution closest to `seed` (sum of squared joint differences) that lies
 * within the joint limits, or null when the pose is unreachable.
 */
export function inverseKinematics(pose: Pose, seed: Joints6): Joints6 | null {
  let best: number[] | null = null;
  let bestCost = Infinity;
  const cand = [0, 0, 0, 0, 0, 0];
  for (const sol of inverseKinematicsAll(pose, seed[5])) {
    let cost = 0;
    let ok = true;
    for (let i = 0; i < 6 && ok; i++) {
      // Among θ + 2πk inside the limits, take the one nearest the seed.
      const lim = JOINT_LIMITS_RAD[i]!;
      const s = seed[i]!;
      let v = sol[i]! + TWO_PI * Math.round((s - sol[i]!) / TWO_PI);
      if (v > lim.max) v -= TWO_PI;
      if (v < lim.min) v += TWO_PI;
      if (v > lim.max || v < lim.min) ok = false;
      cand[i] = v;
      cost += (v - s) * (v - s);
    }
    if (ok && cost < bestCost) {
      bestCost = cost;
      best = cand.slice();
    }
  }
  return best === null ? null : (best as unknown as Joints6);
}

// Of the 8 branches for HOME_POSE: elbow up and leaning towards the patient (elbow ≈ 560 mm high,
// 130 mm in front of the base), wrist with θ5 = −π/2 as on a UR's usual start pose. The seed only
// picks the branch; the angles are solved exactly below (≈ [0.301, −1.906, −1.349, 1.684, −π/2, 1.872]).
const HOME_SEED: Joints6 = [0.3, -1.9, -1.35, 1.68, -1.57, 1.87];

function solveHome(): Joints6 {
  const q = inverseKinematics(HOME_POSE, HOME_SEED);
  if (q === null) throw new Error('HOME_POSE is unreachable for the simulated arm (scene.ts and kinematics.ts disagree)');
  return q;
}

/** The joint configuration whose TCP is exactly HOME_POSE (probe down, 150 mm above the torso). */
export const HOME_JOINTS_RAD: Joints6 = Object.freeze(solveHome());

/**
 * Distances from the three singularities of a UR-type arm, from the closed form
 * det J = a2·a3·sin θ3·sin θ5·(a2·cos θ2 + a3·cos θ23 + d5·sin θ234) (checked against the
 * numeric Jacobian in the tests):
 * - elbow: |sin θ3|, 0 with the arm stretched out (edge of the reach) or folded;
 * - wrist: |sin θ5|, 0 when joints 4 and 6 line up (probe axis parallel to joint 2's axis);
 * - shoulderMm: the wrist point's distance from the plane through the base axis and joint 2's
 *   axis, 0 when it sits over the base (the shoulder offset's dead cylinder).
 */
export interface SingularityMargins {
  readonly elbow: number;
  readonly wrist: number;
  readonly shoulderMm: number;
}

export function singularityMargins(q: Joints6): SingularityMargins {
  const [, t2, t3, t4, t5] = q;
  return {
    elbow: Math.abs(Math.sin(t3)),
    wrist: Math.abs(Math.sin(t5)),
    shoulderMm: Math.abs(A2 * Math.cos(t2) + A3 * Math.cos(t2 + t3) + D5 * Math.sin(t2 + t3 + t4)),
  };
}

/** Orientation error a→b as a rotation vector (axis × angle) in the base frame, radians. */
export function orientationErrorRad(from: Quat, to: Quat): Vec3 {
  // q_err = to · from⁻¹ (base frame); rotation vector = 2·atan2(|v|, w)·v/|v|, shortest path.
  const fw = from.w, fx = -from.x, fy = -from.y, fz = -from.z;
  let w = to.w * fw - to.x * fx - to.y * fy - to.z * fz;
  let x = to.w * fx + to.x * fw + to.y * fz - to.z * fy;
  let y = to.w * fy - to.x * fz + to.y * fw + to.z * fx;
  let z = to.w * fz + to.x * fy - to.y * fx + to.z * fw;
  if (w < 0) {
    w = -w; x = -x; y = -y; z = -z;
  }
  const s = Math.hypot(x, y, z);
  if (s < 1e-15) return { x: 2 * x, y: 2 * y, z: 2 * z };
  const k = (2 * Math.atan2(s, w)) / s;
  return { x: x * k, y: y * k, z: z * k };
}

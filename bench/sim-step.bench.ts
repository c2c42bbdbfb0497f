// The simulator's step cost: one RobotSimulator.step(4 ms) while it runs a Cartesian scan over the
// torso (closed-form IK twice per step, forward kinematics, the contact model with its exact
// skin distance, sensor noise). The in-process driver steps at 250 Hz, so this must stay far
// below 4 ms; the budget is 0.5 ms.
import { performance } from 'node:perf_hooks';
import type { Pose } from '../protocols/robot.ts';
import { HOME_POSE, PATIENT_TORSO } from '../protocols/scene.ts';
import { RobotSimulator } from '../sim/robot-sim.ts';
import { bench, percentile } from './stats.ts';

const topZ = PATIENT_TORSO.centerMm.z + PATIENT_TORSO.semiAxesMm.z;
// A linear sweep along the body, pressed 8 mm into the skin, and back.
const waypoints: Pose[] = [
  { positionMm: { x: 450, y: -150, z: topZ - 8 }, orientation: HOME_POSE.orientation },
  { positionMm: { x: 450, y: 150, z: topZ - 8 }, orientation: HOME_POSE.orientation },
];

const sim = new RobotSimulator({ seed: 1 });
let next = 0;
function stepOnce(): void {
  if (sim.state.mode === 'idle') {
    sim.apply({ kind: 'cartesian-target', pose: waypoints[next]!, speedMmPerS: 40 });
    next = (next + 1) % waypoints.length;
  }
  sim.step(4);
}

for (let i = 0; i < 5000; i++) stepOnce(); // warm-up (JIT), and into contact
const BATCH = 1000;
const perStepUs: number[] = [];
for (let b = 0; b < 40; b++) {
  const t0 = performance.now();
  for (let i = 0; i < BATCH; i++) stepOnce();
  perStepUs.push(((performance.now() - t0) * 1000) / BATCH);
}
perStepUs.sort((a, b) => a - b);
bench('sim-step-us', percentile(perStepUs, 50), 'us');

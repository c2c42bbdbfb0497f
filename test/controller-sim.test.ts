// Integration: the controller's safety gate, sweep runner and acquisition state machine driving
// the in-process robot simulator (sim/), which has real kinematics, acceleration limits, a jog
// watchdog and a tissue model. One run in virtual time (deterministic), one with real timers.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { AcquisitionController, type AcquisitionPlan, type AcquisitionRecorder, type AcquisitionResult } from '../controller/acquisition.ts';
import { SafetySupervisor, type CommandSource } from '../controller/safety.ts';
import type { SweepProgress } from '../controller/trajectory.ts';
import type { AcquisitionTransition } from '../protocols/events.ts';
import { torsoSkinHeightMm } from '../protocols/scene.ts';
import type { RobotCommand } from '../protocols/robot.ts';
import { SimRobotDriver } from '../sim/sim-driver.ts';

const SYSTEM: CommandSource = { role: 'system', actor: 'integration' };

function plan(lengthMm: number, speedMmPerS: number): AcquisitionPlan {
  return {
    tenantId: 'demo',
    deviceId: 'sim-1',
    sweep: {
      kind: 'linear',
      startMm: { x: 450, y: -20, z: torsoSkinHeightMm(450, -20)! },
      direction: { x: 0, y: 1, z: 0 },
      lengthMm,
      speedMmPerS,
    },
  };
}

interface Rig {
  driver: SimRobotDriver;
  sup: SafetySupervisor;
  acq: AcquisitionController;
  transitions: AcquisitionTransition[];
  progress: SweepProgress[];
  sent: RobotCommand[];
}

async function rig(t: TestContext, now: () => number, runner: Record<string, unknown> = {}): Promise<Rig> {
  const driver = new SimRobotDriver();
  const sent: RobotCommand[] = [];
  const send = driver.send.bind(driver);
  driver.send = (cmd, timeoutMs) => {
    sent.push(cmd);
    return send(cmd, timeoutMs);
  };
  await driver.connect();
  const sup = new SafetySupervisor(driver, {}, { now });
  const transitions: AcquisitionTransition[] = [];
  const recorder: AcquisitionRecorder = {
    record: async (tr) => {
      transitions.push(tr);
    },
  };
  const acq = new AcquisitionController({ driver, safety: sup, recorder, runner: { now, ...runner } });
  const progress: SweepProgress[] = [];
  acq.progress$.subscribe((p) => progress.push(p));
  t.after(async () => {
    await acq.close();
    sup.close();
    await driver.close();
  });
  return { driver, sup, acq, transitions, progress, sent };
}

/** Call once the robot had time to finish braking after the final stop. */
function checkCompleted(r: Rig, result: AcquisitionResult): void {
  assert.equal(result.outcome, 'completed', JSON.stringify(result));
  assert.deepEqual(
    r.transitions.map((x) => x.event),
    ['start', 'reach-start', 'finish'],
  );
  const sweep = r.progress.filter((p) => p.phase === 'sweep');
  assert.ok(sweep.length > 20, `${sweep.length} sweep ticks`);
  // After the first half second of contact the force stays within 5 ± 1 N.
  for (const p of sweep.slice(25)) assert.ok(p.forceN !== null && Math.abs(p.forceN - 5) <= 1, `force ${p.forceN}`);
  assert.ok(sweep.at(-1)!.fraction > 0.97);
  assert.equal(r.sent.at(-1)?.kind, 'stop', 'ends with a stop');
  const s = r.driver.simulator.state;
  assert.ok(s.mode === 'stopped' || s.mode === 'idle', `robot ${s.mode}`);
  assert.deepEqual(s.faults, []);
  assert.ok(s.wrench !== null && s.wrench.forceN.z < 0.5, 'lifted off the skin');
}

void describe('controller × simulator', () => {
  void it('full linear sweep acquisition in virtual time', async (t) => {
    t.mock.timers.enable({ apis: ['setInterval', 'setTimeout', 'Date'], now: 1_000_000 });
    const r = await rig(t, () => Date.now());
    await r.acq.start(plan(60, 20), SYSTEM);
    let result: AcquisitionResult | null = null;
    void r.acq.whenDone().then((x) => (result = x));
    for (let ms = 0; ms < 40_000 && result === null; ms += 4) {
      t.mock.timers.tick(4);
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    assert.ok(result !== null, `not done: ${JSON.stringify(r.acq.snapshot)}`);
    for (let ms = 0; ms < 500; ms += 4) t.mock.timers.tick(4); // braking
    checkCompleted(r, result);
    const y = r.driver.simulator.state.tcpPose.positionMm.y;
    assert.ok(Math.abs(y - 40) < 1.5, `ended at y ${y}`);
  });

  void it('full linear sweep acquisition with real timers (< 15 s)', { timeout: 20_000 }, async (t) => {
    const r = await rig(t, () => performance.timeOrigin + performance.now(), { approachClearanceMm: 15, approachSpeedMmPerS: 50 });
    const t0 = performance.now();
    await r.acq.start(plan(40, 25), SYSTEM);
    const result = await r.acq.whenDone();
    const elapsedS = (performance.now() - t0) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 500)); // braking
    checkCompleted(r, result);
    assert.ok(elapsedS < 15, `took ${elapsedS.toFixed(1)} s`);
  });
});

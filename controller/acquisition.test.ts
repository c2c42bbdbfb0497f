// Acquisition state machine tests: the transition table alone, then whole acquisitions against
// the real SafetySupervisor, a fake driver and a spring-model plant in virtual time. Checked for
// every path: the transitions the recorder receives, the abort reason, and a stopped robot.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import { ABORT_REASONS, ACQUISITION_STATES, type AcquisitionStateName, type AcquisitionTransition } from '../protocols/events.ts';
import { HOME_POSE } from '../protocols/scene.ts';
import {
  abortReasonForError,
  ACQUISITION_TRANSITIONS,
  AcquisitionController,
  newAcquisitionUid,
  nextAcquisitionState,
  type AcquisitionEventName,
  type AcquisitionPlan,
  type AcquisitionRecorder,
  type AcquisitionResult,
  type AcquisitionSnapshot,
} from './acquisition.ts';
import { SafetySupervisor, type CommandSource } from './safety.ts';
import type { LinearSweepPlan } from './trajectory.ts';
import { FakeRobotDriver } from './testing/fake-driver.ts';
import { SpringPlant } from './testing/spring-plant.ts';
import { VirtualTime } from './testing/virtual-time.ts';
import { rejectsWith } from '../protocols/testing.ts';

const SYSTEM: CommandSource = { role: 'system', actor: 'scan-cli' };
const OPERATOR: CommandSource = { role: 'operator', actor: 'op-1' };
const BEDSIDE: CommandSource = { role: 'bedside', actor: 'nurse-1' };

const PLAN: AcquisitionPlan = {
  tenantId: 'demo',
  deviceId: 'sim-1',
  sweep: { kind: 'linear', startMm: { x: 450, y: -40, z: 120 }, direction: { x: 0, y: 1, z: 0 }, lengthMm: 60, speedMmPerS: 20 },
};

void describe('transition table (pure)', () => {
  const events = Object.keys(ACQUISITION_TRANSITIONS) as AcquisitionEventName[];
  const allowed: Record<string, AcquisitionStateName> = {
    'idle/start': 'positioning',
    'positioning/reach-start': 'scanning',
    'positioning/abort': 'aborted',
    'scanning/pause': 'paused',
    'scanning/finish': 'completed',
    'scanning/abort': 'aborted',
    'paused/resume': 'scanning',
    'paused/abort': 'aborted',
  };
  void test('exactly the designed transitions are allowed', () => {
    for (const from of ACQUISITION_STATES) {
      for (const ev of events) {
        assert.equal(nextAcquisitionState(from, ev), allowed[`${from}/${ev}`] ?? null, `${from} --${ev}-->`);
      }
    }
  });
  void test('terminal states have no way out', () => {
    for (const ev of events) {
      assert.equal(nextAcquisitionState('completed', ev), null);
      assert.equal(nextAcquisitionState('aborted', ev), null);
    }
  });
  void test('error codes map to abort reasons', () => {
    const cases: [ErrorCode, (typeof ABORT_REASONS)[number]][] = [
      ['ECO3D_ERR_ESTOP_LATCHED', 'estop'],
      ['ECO3D_ERR_LINK_LOST', 'link-lost'],
      ['ECO3D_ERR_TIMEOUT', 'link-lost'],
      ['ECO3D_ERR_DEADMAN', 'operator'],
      ['ECO3D_ERR_FORCE_LIMIT', 'fault'],
      ['ECO3D_ERR_ROBOT_FAULT', 'fault'],
    ];
    for (const [code, reason] of cases) assert.equal(abortReasonForError(code), reason, code);
  });
  void test('acquisition UIDs are DICOM UIDs under 2.25', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const uid = newAcquisitionUid();
      assert.match(uid, /^2\.25\.(0|[1-9][0-9]*)$/);
      assert.ok(uid.length <= 64);
      assert.ok(BigInt(uid.slice(5)) < 2n ** 128n);
      seen.add(uid);
    }
    assert.equal(seen.size, 200);
  });
});

// ---------------------------------------------------------------------------------------------

class MemoryRecorder implements AcquisitionRecorder {
  readonly transitions: AcquisitionTransition[] = [];
  /** Return an error (or 'hang') to fail the matching call. */
  failWhen: (t: AcquisitionTransition) => Error | 'hang' | null = () => null;
  calls = 0;
  record(t: AcquisitionTransition): Promise<void> {
    this.calls++;
    const f = this.failWhen(t);
    if (f === 'hang') return new Promise<void>(() => undefined);
    if (f !== null) return Promise.reject(f);
    this.transitions.push(t);
    return Promise.resolve();
  }
  events(): string[] {
    return this.transitions.map((t) => `${t.event}:${t.from}->${t.to}`);
  }
}

interface Rig {
  vt: VirtualTime;
  driver: FakeRobotDriver;
  plant: SpringPlant;
  sup: SafetySupervisor;
  recorder: MemoryRecorder;
  acq: AcquisitionController;
  snapshots: AcquisitionSnapshot[];
  logs: string[];
  heartbeat: CommandSource | null;
  /** A number the test marks at the trigger (a command count, a height). */
  mark: number;
}

function rig(t: TestContext): Rig {
  const vt = new VirtualTime(t.mock.timers);
  const driver = new FakeRobotDriver();
  const plant = new SpringPlant(driver, { pose: { positionMm: { x: 450, y: -40, z: 155 }, orientation: HOME_POSE.orientation } });
  const sup = new SafetySupervisor(driver, {}, { now: vt.now });
  const recorder = new MemoryRecorder();
  const logs: string[] = [];
  const acq = new AcquisitionController({
    driver,
    safety: sup,
    recorder,
    wallClock: vt.now,
    runner: { now: vt.now },
    framesAcquired: () => 42,
    recorderTimeoutMs: 1000,
    recorderRetryDelayMs: 50,
    logger: {
      info: (_o, m) => logs.push(`info ${m}`),
      warn: (_o, m) => logs.push(`warn ${m}`),
      error: (_o, m) => logs.push(`error ${m}`),
    },
  });
  const r: Rig = { vt, driver, plant, sup, recorder, acq, snapshots: [], logs, heartbeat: null, mark: 0 };
  acq.state$.subscribe((s) => r.snapshots.push(s));
  let sinceHeartbeatMs = 0;
  vt.onStep = (dt) => {
    plant.step(dt);
    sinceHeartbeatMs += dt;
    if (r.heartbeat !== null && sinceHeartbeatMs >= 50) {
      sinceHeartbeatMs = 0;
      sup.heartbeat(r.heartbeat);
    }
  };
  t.after(async () => {
    await acq.close();
    sup.close();
  });
  return r;
}

/** Advances virtual time until `pred` or `maxMs`. */
async function until(r: Rig, pred: () => boolean, maxMs = 20_000): Promise<void> {
  const ok = await r.vt.until(pred, maxMs, 2);
  assert.ok(ok, `condition not met within ${maxMs} ms (state ${r.acq.snapshot.state}, phase ${r.acq.snapshot.sweepPhase})`);
}

async function settle(r: Rig): Promise<AcquisitionResult> {
  await until(r, () => r.acq.snapshot.result !== null);
  return r.acq.whenDone();
}

/** The robot's command stream ends with a stop and nothing moves it afterwards. */
async function assertRobotStopped(r: Rig): Promise<void> {
  const kinds = r.driver.kinds();
  assert.equal(kinds.at(-1), 'stop', `last command ${kinds.at(-1)}`);
  const n = kinds.length;
  await r.vt.advance(500, 10);
  assert.equal(r.driver.sent.length, n, 'no command after the final stop');
  assert.ok(r.plant.mode !== 'jogging' && r.plant.mode !== 'moving', `robot ${r.plant.mode}`);
}


void describe('AcquisitionController', () => {
  void test('a whole acquisition: start → reach-start → finish, recorded in order, robot stopped', async (t) => {
    const r = rig(t);
    const uid = await r.acq.start(PLAN, SYSTEM);
    assert.match(uid, /^2\.25\.\d+$/);
    assert.equal(r.acq.snapshot.state, 'positioning');
    await until(r, () => r.acq.snapshot.state === 'scanning');
    const result = await settle(r);
    assert.deepEqual(result, { outcome: 'completed', acquisitionUid: uid, framesAcquired: 42, persisted: true });
    assert.deepEqual(r.recorder.events(), ['start:idle->positioning', 'reach-start:positioning->scanning', 'finish:scanning->completed']);
    const [start, reach, finish] = r.recorder.transitions;
    assert.deepEqual(start!.sweep, { kind: 'linear', lengthMm: 60, tiltRangeRad: 0, speedMmPerS: 20, targetForceN: 5 });
    assert.equal(start!.actor, 'scan-cli');
    assert.equal(reach!.actor, 'system');
    assert.equal(finish!.framesAcquired, 42);
    for (const tr of r.recorder.transitions) {
      assert.equal(tr.acquisitionUid, uid);
      assert.equal(tr.tenantId, 'demo');
      assert.equal(tr.deviceId, 'sim-1');
    }
    assert.deepEqual(
      [...new Set(r.snapshots.map((s) => s.state))],
      ['idle', 'positioning', 'scanning', 'completed'],
    );
    assert.equal(r.logs.filter((l) => l.startsWith('info acquisition')).length, 3, 'every transition logged');
    await assertRobotStopped(r);
  });

  void test('pause / resume are recorded; refused transitions throw ROBOT_BUSY', async (t) => {
    const r = rig(t);
    await r.acq.start(PLAN, SYSTEM);
    await rejectsWith(r.acq.start(PLAN, SYSTEM), 'ECO3D_ERR_ROBOT_BUSY');
    await rejectsWith(r.acq.pause(SYSTEM), 'ECO3D_ERR_ROBOT_BUSY'); // still positioning
    await rejectsWith(r.acq.resume(SYSTEM), 'ECO3D_ERR_ROBOT_BUSY');
    await until(r, () => r.acq.snapshot.state === 'scanning');
    await r.vt.advance(500, 2);
    await r.acq.pause(BEDSIDE);
    assert.equal(r.acq.snapshot.state, 'paused');
    await rejectsWith(r.acq.pause(BEDSIDE), 'ECO3D_ERR_ROBOT_BUSY');
    const yPaused = r.plant.pose.positionMm.y;
    await r.vt.advance(1000, 2);
    assert.ok(Math.abs(r.plant.pose.positionMm.y - yPaused) < 1, 'holds position while paused');
    assert.ok(Math.abs(r.plant.normalForceN() - 5) <= 1, 'keeps contact force while paused');
    await r.acq.resume(BEDSIDE);
    const result = await settle(r);
    assert.equal(result.outcome, 'completed');
    assert.deepEqual(r.recorder.events(), [
      'start:idle->positioning',
      'reach-start:positioning->scanning',
      'pause:scanning->paused',
      'resume:paused->scanning',
      'finish:scanning->completed',
    ]);
    assert.equal(r.recorder.transitions[2]!.actor, 'nurse-1');
    await rejectsWith(r.acq.abort(SYSTEM), 'ECO3D_ERR_ROBOT_BUSY'); // nothing left to abort
    await assertRobotStopped(r);
  });

  void test('a new acquisition can start after the last one ended', async (t) => {
    const r = rig(t);
    const a = await r.acq.start(PLAN, SYSTEM);
    await r.vt.advance(100, 2);
    await r.acq.abort(SYSTEM);
    const b = await r.acq.start(PLAN, SYSTEM);
    assert.notEqual(a, b);
    assert.equal(r.recorder.transitions.at(-1)!.from, 'idle');
    await r.acq.abort(SYSTEM);
  });

  // Each abort path: its trigger, the recorded reason, and a stopped robot.
  const abortPaths: { name: string; reason: string; trigger: (r: Rig) => void | Promise<void>; heartbeat?: boolean }[] = [
    { name: 'operator abort', reason: 'operator', trigger: async (r) => void (await r.acq.abort(OPERATOR)) },
    { name: 'bedside e-stop', reason: 'estop', trigger: (r) => void r.sup.estop(BEDSIDE).catch(() => undefined) },
    { name: 'robot hardware e-stop', reason: 'estop', trigger: (r) => void (r.plant.mode = 'estopped') },
    { name: 'robot fault', reason: 'fault', trigger: (r) => void r.plant.faults.push('joint-stuck') },
    {
      name: 'link lost',
      reason: 'link-lost',
      trigger: (r) => {
        r.mark = r.driver.sent.length;
        r.driver.setLink(false, 'cable pulled');
      },
    },
    {
      // The patient moves up 25 mm into the probe: 5 N + 0.8 N/mm × 25 mm = 25 N.
      name: 'over-force',
      reason: 'fault',
      trigger: (r) => {
        r.mark = r.plant.pose.positionMm.z;
        r.plant.skinOffsetMm = 25;
      },
    },
    { name: 'sensor dropout', reason: 'fault', trigger: (r) => void (r.plant.sensorDropout = true) },
    { name: 'deadman (operator heartbeat stops)', reason: 'operator', heartbeat: true, trigger: (r) => void (r.heartbeat = null) },
  ];
  for (const path of abortPaths) {
    void test(`abort path: ${path.name} → aborted (${path.reason}), robot stopped`, async (t) => {
      const r = rig(t);
      const source = path.heartbeat === true ? OPERATOR : SYSTEM;
      if (path.heartbeat === true) {
        r.heartbeat = OPERATOR;
        r.sup.heartbeat(OPERATOR);
      }
      await r.acq.start(PLAN, source);
      await until(r, () => r.acq.snapshot.state === 'scanning');
      await r.vt.advance(300, 2);
      await path.trigger(r);
      const result = await settle(r);
      assert.equal(result.outcome, 'aborted');
      assert.ok(result.outcome === 'aborted' && result.reason === path.reason, JSON.stringify(result));
      assert.equal(result.persisted, true);
      const last = r.recorder.transitions.at(-1)!;
      assert.equal(last.event, 'abort');
      assert.equal(last.from, 'scanning');
      assert.equal(last.to, 'aborted');
      assert.equal(last.abortReason, path.reason);
      assert.equal(last.framesAcquired, 42);
      assert.equal(r.recorder.transitions.filter((x) => x.event === 'abort').length, 1, 'one abort only');
      if (path.name === 'over-force') {
        // The retract ran to its end (10 mm up the probe axis) before the stop.
        const zMm = r.plant.pose.positionMm.z;
        assert.ok(zMm >= r.mark + 9 && zMm <= r.mark + 12, `retracted from ${r.mark.toFixed(1)} to ${zMm.toFixed(1)} mm`);
        assert.ok(r.plant.normalForceN() < 20, `force after the retract ${r.plant.normalForceN().toFixed(1)} N`);
      }
      if (path.name !== 'link lost') {
        await assertRobotStopped(r);
      } else {
        // Nothing reaches a robot behind a down link; when it returns, the supervisor stops it.
        const afterLoss = r.driver.sent.slice(r.mark).map((s) => s.cmd.kind);
        assert.ok(afterLoss.length > 0 && afterLoss.every((k) => k === 'stop'), `after the loss: ${afterLoss.join(',')}`);
        r.driver.setLink(true, 'back');
        await r.vt.advance(50, 2);
        await assertRobotStopped(r);
      }
    });
  }

  void test('abort while positioning', async (t) => {
    const r = rig(t);
    await r.acq.start(PLAN, SYSTEM);
    await r.vt.advance(100, 2);
    const result = await r.acq.abort(SYSTEM, 'operator', 'changed my mind');
    assert.deepEqual(result, { outcome: 'aborted', acquisitionUid: result.acquisitionUid, reason: 'operator', detail: 'changed my mind', persisted: true });
    assert.deepEqual(r.recorder.events(), ['start:idle->positioning', 'abort:positioning->aborted']);
    await assertRobotStopped(r);
  });

  void test('start refused while the e-stop is latched or the link is down; nothing recorded, robot untouched', async (t) => {
    const r = rig(t);
    r.driver.setLink(false);
    await rejectsWith(r.acq.start(PLAN, SYSTEM), 'ECO3D_ERR_LINK_LOST');
    r.driver.setLink(true);
    await r.sup.estop(BEDSIDE);
    r.driver.clearSent();
    await rejectsWith(r.acq.start(PLAN, SYSTEM), 'ECO3D_ERR_ESTOP_LATCHED');
    await rejectsWith(r.acq.start({ ...PLAN, tenantId: '' }, SYSTEM), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(r.recorder.calls, 0);
    assert.equal(r.driver.sent.length, 0);
    assert.equal(r.acq.snapshot.state, 'idle');
  });

  void test('a plan beyond the safety gate\'s limits is refused up front (nothing recorded, nothing moved)', async (t) => {
    const r = rig(t);
    const tooFast: AcquisitionPlan = { ...PLAN, sweep: { ...(PLAN.sweep as LinearSweepPlan), speedMmPerS: 60 } };
    await rejectsWith(r.acq.start(tooFast, SYSTEM), 'ECO3D_ERR_SPEED_LIMIT');
    const fanTooFast: AcquisitionPlan = {
      ...PLAN,
      sweep: { kind: 'fan', contactMm: { x: 450, y: 0, z: 120 }, tiltAxis: { x: 1, y: 0, z: 0 }, tiltStartRad: -0.3, tiltEndRad: 0.3, angularSpeedRadPerS: 30 * (Math.PI / 180) },
    };
    await rejectsWith(r.acq.start(fanTooFast, SYSTEM), 'ECO3D_ERR_SPEED_LIMIT');
    assert.equal(r.recorder.calls, 0);
    assert.equal(r.driver.sent.length, 0);
  });

  void test('recorder fails on start: start rejects, state stays idle, the robot never moves', async (t) => {
    const r = rig(t);
    r.recorder.failWhen = () => new Error('database is down');
    const p = assert.rejects(r.acq.start(PLAN, SYSTEM), (e: unknown) => e instanceof Eco3dError && /did not start/.test(e.message));
    await r.vt.advance(1000, 10); // retries
    await p;
    assert.equal(r.recorder.calls, 3, 'retried');
    assert.equal(r.acq.snapshot.state, 'idle');
    assert.equal(r.driver.sent.length, 0);
    assert.ok(r.logs.some((l) => l.startsWith('error')));
  });

  void test('recorder fails mid-scan (reach-start): aborted (fault), robot stopped, error surfaced', async (t) => {
    const r = rig(t);
    r.recorder.failWhen = (tr) => (tr.event === 'reach-start' ? new Error('disk full') : null);
    await r.acq.start(PLAN, SYSTEM);
    const result = await settle(r);
    assert.ok(result.outcome === 'aborted' && result.reason === 'fault' && /recorder failed/.test(result.detail), JSON.stringify(result));
    assert.equal(result.persisted, true, 'the abort itself was recorded');
    assert.deepEqual(r.recorder.events(), ['start:idle->positioning', 'abort:scanning->aborted']);
    assert.equal(r.acq.snapshot.error?.message, 'disk full');
    await assertRobotStopped(r);
  });

  void test('recorder hangs on pause: pause rejects after the timeout, aborted, robot stopped', async (t) => {
    const r = rig(t);
    r.recorder.failWhen = (tr) => (tr.event === 'pause' ? 'hang' : null);
    await r.acq.start(PLAN, SYSTEM);
    await until(r, () => r.acq.snapshot.state === 'scanning');
    const p = assert.rejects(r.acq.pause(SYSTEM), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_TIMEOUT');
    await until(r, () => r.acq.snapshot.result !== null, 10_000);
    await p;
    const result = await r.acq.whenDone();
    assert.ok(result.outcome === 'aborted' && result.reason === 'fault');
    await assertRobotStopped(r);
  });

  void test('recorder fails on every call: the run still ends aborted and stopped, persisted=false, abort() rejects', async (t) => {
    const r = rig(t);
    await r.acq.start(PLAN, SYSTEM);
    await until(r, () => r.acq.snapshot.state === 'scanning');
    r.recorder.failWhen = () => new Error('gone');
    const p = assert.rejects(r.acq.abort(SYSTEM));
    await until(r, () => r.acq.snapshot.result !== null);
    await p;
    const snap = r.acq.snapshot;
    assert.equal(snap.state, 'aborted');
    assert.equal(snap.result?.persisted, false);
    assert.ok(snap.error !== null);
    await assertRobotStopped(r);
  });

  void test('an operator-driven scan runs with the deadman armed and heartbeats', async (t) => {
    const r = rig(t);
    r.heartbeat = OPERATOR;
    r.sup.heartbeat(OPERATOR);
    await r.acq.start(PLAN, OPERATOR);
    await until(r, () => r.acq.snapshot.state === 'scanning');
    assert.equal(r.sup.status.deadmanArmed, true);
    const result = await settle(r);
    assert.equal(result.outcome, 'completed');
  });
});

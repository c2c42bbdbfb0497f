// Trajectory tests: the pure control law (admittance step, path generators) alone, then the
// SweepRunner closed-loop against a spring-model plant behind the real SafetySupervisor, in
// virtual time (mock.timers): a 10 s sweep runs in well under a second.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import { norm, quatFromAxisAngle, quatMul, sub, toolAxis } from '../protocols/geometry.ts';
import { HOME_POSE } from '../protocols/scene.ts';
import { SafetySupervisor, type CommandSource } from './safety.ts';
import { FakeRobotDriver } from './testing/fake-driver.ts';
import { SpringPlant, type SpringPlantOptions } from './testing/spring-plant.ts';
import { VirtualTime } from './testing/virtual-time.ts';
import {
  admittanceVelocityMmPerS,
  ForceTracker,
  DEFAULT_FORCE_CONTROL,
  DEFAULT_PATH_TUNING,
  fanAngularVelocityRadPerS,
  linearSweepGeometry,
  linearSweepPointMm,
  linearSweepProgress,
  linearSweepVelocityMmPerS,
  resolveSweepPlan,
  rotationVector,
  SweepRunner,
  tiltAngleAboutRad,
  type FanSweepPlan,
  type LinearSweepPlan,
  type SweepPhase,
  type SweepProgress,
} from './trajectory.ts';

const SYSTEM: CommandSource = { role: 'system', actor: 'test' };
const DOWN = HOME_POSE.orientation;
const near = (a: number, b: number, tol: number, what = ''): void => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} ≉ ${b} ± ${tol}`);

void describe('admittance step (pure)', () => {
  const fc = DEFAULT_FORCE_CONTROL;
  void test('zero at the target, advances when light, backs off when heavy, clamped', () => {
    assert.equal(admittanceVelocityMmPerS(fc.targetForceN, fc), 0);
    near(admittanceVelocityMmPerS(4, fc), fc.gainMmPerSPerN, 1e-12);
    near(admittanceVelocityMmPerS(6, fc), -fc.gainMmPerSPerN, 1e-12);
    assert.equal(admittanceVelocityMmPerS(0, fc), Math.min(fc.maxAxialSpeedMmPerS, fc.gainMmPerSPerN * fc.targetForceN));
    assert.equal(admittanceVelocityMmPerS(100, fc), -fc.maxAxialSpeedMmPerS);
  });

  // The closed loop on a spring (tissue) with the runner's rate and one tick of measurement
  // delay: the force must settle into target ± tolerance and stay there.
  for (const stiffnessNPerMm of [0.3, 0.8, 3, 8]) {
    void test(`converges to 5 N ± 1 N on a ${stiffnessNPerMm} N/mm spring`, () => {
      const dtS = 0.02;
      let depthMm = -20; // 20 mm above the skin
      let measuredN = 0;
      const history: number[] = [];
      for (let i = 0; i < 500; i++) {
        const v = admittanceVelocityMmPerS(measuredN, fc); // uses last tick's measurement
        depthMm += v * dtS;
        measuredN = Math.max(0, depthMm) * stiffnessNPerMm;
        history.push(measuredN);
      }
      const settled = history.slice(-200); // the last 4 s
      for (const f of settled) near(f, fc.targetForceN, fc.toleranceN, 'force');
      near(history.at(-1)!, fc.targetForceN, 0.05, 'final force');
      assert.ok(Math.max(...history) < fc.targetForceN + 2, 'no big overshoot');
    });
  }
});

void describe('force tracker in contact (pure, PI)', () => {
  const fc = DEFAULT_FORCE_CONTROL;
  /** Probe on a 0.8 N/mm skin that rises by slopeMmPerS; one tick of measurement delay. */
  function track(make: () => (forceN: number, tMs: number) => number, skinRiseMmPerS: number, tickMs = 20, seconds = 12): number[] {
    const v = make();
    let depthMm = 5 / 0.8; // in contact at the target
    let measuredN = 5;
    const history: number[] = [];
    for (let tMs = 0; tMs < seconds * 1000; tMs += tickMs) {
      const vMmPerS = v(measuredN, tMs);
      depthMm += ((vMmPerS - skinRiseMmPerS) * tickMs) / 1000;
      measuredN = Math.max(0, depthMm) * 0.8;
      history.push(measuredN);
    }
    return history;
  }
  // 15 mm/s over a skin sloping 0.13 (the default torso's flank): it rises 2 mm/s under the probe.
  void test('a sloped skin: proportional alone keeps a steady error; PI removes it', () => {
    const p = track(() => (f) => admittanceVelocityMmPerS(f, fc), 2);
    near(p.at(-1)!, fc.targetForceN - 2 / fc.gainMmPerSPerN, 0.01, 'P steady force');
    const pi = track(() => {
      const t = new ForceTracker(fc, 100);
      return (f, tMs) => t.velocityMmPerS(f, tMs);
    }, 2);
    near(pi.at(-1)!, fc.targetForceN, 0.02, 'PI steady force');
    for (const f of pi) near(f, fc.targetForceN, fc.toleranceN, 'PI force');
  });
  void test('late ticks (the host stalls to 80 ms) still hold the band', () => {
    const pi = track(() => {
      const t = new ForceTracker(fc, 100);
      return (f, tMs) => t.velocityMmPerS(f, tMs);
    }, 2, 80);
    for (const f of pi.slice(50)) near(f, fc.targetForceN, fc.toleranceN, 'PI force at 80 ms ticks');
  });
  void test('anti-windup: contact lost for long builds at most maxIntegralSpeedMmPerS; a stall integrates at most maxDtMs', () => {
    const t = new ForceTracker(fc, 100);
    t.velocityMmPerS(0, 0);
    let v = 0;
    for (let tMs = 20; tMs <= 60_000; tMs += 20) v = t.velocityMmPerS(5, tMs); // zero error: only the integral speaks
    near(v, 0, 1e-12, 'no error, no integral');
    const t2 = new ForceTracker(fc, 100);
    t2.velocityMmPerS(0, 0);
    for (let tMs = 20; tMs <= 60_000; tMs += 20) t2.velocityMmPerS(0, tMs);
    near(t2.velocityMmPerS(fc.targetForceN, 60_020), fc.maxIntegralSpeedMmPerS, 1e-9, 'integral clamped');
    const t3 = new ForceTracker(fc, 100);
    t3.velocityMmPerS(4, 0);
    const after10s = t3.velocityMmPerS(4, 10_000); // one 10 s gap counts as 100 ms
    near(after10s, fc.gainMmPerSPerN * 1 + fc.integralGainMmPerSPerNs * 1 * 0.1, 1e-9, 'stall capped');
  });
});

void describe('path generators (pure)', () => {
  const axis = toolAxis(HOME_POSE); // (0, 0, -1)
  const g = linearSweepGeometry({ x: 450, y: -40, z: 114 }, { x: 0, y: 2, z: 1 }, axis, 80);

  void test('linear: the direction is projected perpendicular to the probe axis', () => {
    assert.deepEqual(g.alongUnit, { x: 0, y: 1, z: 0 });
    near(norm(g.lateralUnit), 1, 1e-12);
    assert.deepEqual(linearSweepPointMm(g, 0), g.originMm);
    assert.deepEqual(linearSweepPointMm(g, 40), { x: 450, y: 0, z: 114 });
    assert.deepEqual(linearSweepPointMm(g, 500), { x: 450, y: 40, z: 114 }, 'clamped to the end');
    assert.throws(() => linearSweepGeometry(g.originMm, { x: 0, y: 0, z: 3 }, axis, 10), /parallel/);
  });

  void test('linear: progress, feed-forward, end taper, cross-track correction', () => {
    const p = linearSweepProgress(g, { x: 452, y: 0, z: 110 });
    near(p.alongMm, 40, 1e-9);
    near(p.fraction, 0.5, 1e-9);
    near(Math.abs(p.crossTrackMm), 2, 1e-9);
    const t = DEFAULT_PATH_TUNING;
    const mid = linearSweepVelocityMmPerS(g, { x: 450, y: 0, z: 114 }, 20, t);
    assert.deepEqual(mid, { x: 0, y: 20, z: 0 });
    const late = linearSweepVelocityMmPerS(g, { x: 450, y: 37, z: 114 }, 20, t);
    near(late.y, Math.sqrt(2 * t.endDecelMmPerS2 * 3), 1e-9, 'decelerating into the end');
    assert.ok(late.y < 20);
    assert.equal(linearSweepVelocityMmPerS(g, { x: 450, y: 40, z: 114 }, 20, t).y, 0, 'stops at the end');
    const off = linearSweepVelocityMmPerS(g, { x: 453, y: 0, z: 114 }, 20, t);
    assert.ok(off.x < 0, 'pulls back toward the line');
    near(off.x, -t.positionGainPerS * 3, 1e-9);
  });

  void test('fan: tilt angle about an axis round-trips; angular velocity tapers and stops', () => {
    const ax = { x: 0, y: 1, z: 0 };
    for (const a of [-0.7, -0.1, 0, 0.2, 0.9]) {
      const q = quatMul(quatFromAxisAngle(ax, a), DOWN);
      near(tiltAngleAboutRad(DOWN, q, ax), a, 1e-9, 'tilt');
      const rv = rotationVector(quatFromAxisAngle(ax, a));
      near(rv.y, a, 1e-9, 'rotation vector');
    }
    assert.equal(fanAngularVelocityRadPerS(0, 0.6, 0.2, 0.8, 0.005), 0.2);
    assert.equal(fanAngularVelocityRadPerS(0, -0.6, 0.2, 0.8, 0.005), -0.2);
    near(fanAngularVelocityRadPerS(0.59, 0.6, 0.2, 0.8, 0.005), Math.sqrt(2 * 0.8 * 0.01), 1e-9);
    near(fanAngularVelocityRadPerS(-0.59, -0.6, 0.2, 0.8, 0.005), -Math.sqrt(2 * 0.8 * 0.01), 1e-9);
    assert.equal(fanAngularVelocityRadPerS(0.6, 0.6, 0.2, 0.8, 0.005), 0);
    assert.equal(fanAngularVelocityRadPerS(-0.6, -0.6, 0.2, 0.8, 0.005), 0);
  });

  void test('plan validation', () => {
    const ok: LinearSweepPlan = { kind: 'linear', startMm: { x: 450, y: 0, z: 120 }, direction: { x: 0, y: 1, z: 0 }, lengthMm: 50, speedMmPerS: 10 };
    const p = resolveSweepPlan(ok);
    near(p.hoverMm.z, 150, 1e-9, 'hover 30 mm above along the probe axis');
    const bad: [Partial<LinearSweepPlan>, ErrorCode][] = [
      [{ lengthMm: Number.NaN }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ lengthMm: -5 }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ speedMmPerS: 80 }, 'ECO3D_ERR_SPEED_LIMIT'],
      [{ speedMmPerS: 0 }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ startMm: { x: Number.POSITIVE_INFINITY, y: 0, z: 0 } }, 'ECO3D_ERR_NOT_FINITE'],
      [{ direction: { x: 0, y: 0, z: 1 } }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ tiltRad: 2 }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ orientation: { x: 0, y: 0, z: 0, w: 0 } }, 'ECO3D_ERR_BAD_REQUEST'],
      [{ force: { targetForceN: 0.5 } }, 'ECO3D_ERR_BAD_REQUEST'],
    ];
    for (const [patch, code] of bad) {
      assert.throws(() => resolveSweepPlan({ ...ok, ...patch }), (e: unknown) => e instanceof Eco3dError && e.code === code, JSON.stringify(patch));
    }
    const tilted = resolveSweepPlan({ ...ok, tiltRad: 0.3 });
    near(Math.acos(-tilted.axisUnit.z), 0.3, 1e-9, 'tilt from vertical');
  });
});

// ---------------------------------------------------------------------------------------------
// Closed loop: runner → real SafetySupervisor → fake driver → spring plant, in virtual time.

interface SweepRig {
  vt: VirtualTime;
  driver: FakeRobotDriver;
  plant: SpringPlant;
  sup: SafetySupervisor;
  runner: SweepRunner;
  phases: SweepPhase[];
  progress: SweepProgress[];
}

function sweepRig(t: TestContext, plant?: Partial<SpringPlantOptions>): SweepRig {
  const vt = new VirtualTime(t.mock.timers);
  const driver = new FakeRobotDriver();
  const p = new SpringPlant(driver, { pose: { positionMm: { x: 450, y: -40, z: 160 }, orientation: DOWN }, ...plant });
  vt.onStep = (dt) => p.step(dt);
  const sup = new SafetySupervisor(driver, {}, { now: vt.now });
  const runner = new SweepRunner(sup, driver.state$, { now: vt.now });
  t.after(() => sup.close());
  return { vt, driver, plant: p, sup, runner, phases: [], progress: [] };
}

/** Runs the sweep in virtual time until it settles; returns the error, if any. */
async function runSweep(r: SweepRig, plan: LinearSweepPlan | FanSweepPlan, opts: { signal?: AbortSignal; maxMs?: number; during?: (r: SweepRig) => void } = {}): Promise<unknown> {
  let settled = false;
  let error: unknown = null;
  const done = r.runner
    .run(plan, SYSTEM, {
      ...(opts.signal === undefined ? {} : { signal: opts.signal }),
      onPhase: (ph) => r.phases.push(ph),
      onProgress: (p) => r.progress.push(p),
    })
    .then(
      () => {
        settled = true;
      },
      (err: unknown) => {
        settled = true;
        error = err;
      },
    );
  const maxMs = opts.maxMs ?? 30_000;
  for (let elapsed = 0; !settled && elapsed < maxMs; elapsed += 2) {
    await r.vt.advance(2, 2);
    opts.during?.(r);
  }
  await done;
  assert.ok(settled, 'sweep settled');
  return error;
}

const LINEAR: LinearSweepPlan = {
  kind: 'linear',
  startMm: { x: 450, y: -40, z: 120 },
  direction: { x: 0, y: 1, z: 0 },
  lengthMm: 80,
  speedMmPerS: 20,
};

function jogIntervalsMs(driver: FakeRobotDriver): number[] {
  const jogs = driver.sent.filter((s) => s.cmd.kind === 'jog');
  return jogs.slice(1).map((s, i) => s.atMs - jogs[i]!.atMs);
}

function assertWithinLimits(driver: FakeRobotDriver): void {
  for (const { cmd } of driver.sent) {
    if (cmd.kind === 'jog') {
      assert.ok(norm(cmd.linearMmPerS) <= 50 + 1e-9);
      assert.ok(norm(cmd.angularRadPerS) <= 0.5 + 1e-9);
    }
  }
}

void describe('SweepRunner (closed loop, virtual time)', () => {
  void test('linear sweep: approach → descend → sweep → lift-off → done, force held at 5 ± 1 N', async (t) => {
    const r = sweepRig(t, { skinSlopeY: 0.05 }); // a gently sloping skin the force loop must follow
    const err = await runSweep(r, LINEAR);
    assert.equal(err, null, String(err));
    assert.deepEqual(r.phases, ['approach', 'descend', 'sweep', 'lift-off', 'done']);
    const kinds = r.driver.kinds();
    assert.equal(kinds[0], 'cartesian-target', 'approach with a Cartesian target');
    assert.equal(kinds.at(-1), 'stop', 'ends with a stop');
    assert.equal(kinds.filter((k) => k === 'cartesian-target').length, 2, 'approach + lift-off');
    // Fixed control rate: 50 Hz jogs, always well inside the robot's jog watchdog.
    const intervals = jogIntervalsMs(r.driver);
    assert.ok(intervals.every((d) => d >= 19 && d <= 22), `jog intervals ${Math.min(...intervals)}..${Math.max(...intervals)} ms`);
    assertWithinLimits(r.driver);
    // Force during the sweep, after a short settling: within the band.
    const sweep = r.progress.filter((p) => p.phase === 'sweep');
    assert.ok(sweep.length > 150, `${sweep.length} sweep ticks`);
    for (const p of sweep.slice(10)) near(p.forceN!, 5, 1, 'sweep force');
    const last = sweep.at(-1)!;
    assert.ok(last.fraction > 0.98);
    // Covered the length along y, stayed on the line, lifted off.
    const yMm = r.plant.pose.positionMm.y;
    near(yMm, LINEAR.startMm.y + LINEAR.lengthMm, 1, 'end y');
    near(r.plant.pose.positionMm.x, 450, 0.5, 'cross-track');
    assert.ok(r.plant.pose.positionMm.z > r.plant.skinHeightMm(yMm) + 20, 'lifted off the skin');
    assert.equal(r.plant.normalForceN(), 0);
    assert.equal(r.runner.phase, 'done');
  });

  void test('fan sweep: tilts through the range about the contact point, force held', async (t) => {
    const r = sweepRig(t);
    const plan: FanSweepPlan = {
      kind: 'fan',
      contactMm: { x: 450, y: -40, z: 120 },
      tiltAxis: { x: 1, y: 0, z: 0 },
      tiltStartRad: -0.3,
      tiltEndRad: 0.3,
      angularSpeedRadPerS: 0.2,
    };
    let pivot: { x: number; y: number; z: number } | null = null;
    let maxPivotErrMm = 0;
    const err = await runSweep(r, plan, {
      during: (rr) => {
        if (rr.runner.phase === 'sweep') {
          pivot ??= rr.plant.pose.positionMm;
          maxPivotErrMm = Math.max(maxPivotErrMm, norm(sub(rr.plant.pose.positionMm, pivot)));
        }
      },
    });
    assert.equal(err, null, String(err));
    assert.deepEqual(r.phases, ['approach', 'descend', 'sweep', 'lift-off', 'done']);
    assert.ok(maxPivotErrMm < 4, `pivot moved ${maxPivotErrMm.toFixed(2)} mm`);
    const sweep = r.progress.filter((p) => p.phase === 'sweep');
    for (const p of sweep.slice(10)) near(p.forceN!, 5, 1, 'fan force');
    const x = { x: 1, y: 0, z: 0 };
    near(tiltAngleAboutRad(DOWN, r.plant.pose.orientation, x), 0.3, 0.02, 'end tilt');
    assertWithinLimits(r.driver);
    assert.equal(r.driver.lastCommand()?.kind, 'stop');
  });

  void test('pause holds position and contact force; resume finishes the sweep', async (t) => {
    const r = sweepRig(t);
    let pausedAtY: number | null = null;
    let pausedTicks = 0;
    const err = await runSweep(r, LINEAR, {
      during: (rr) => {
        const prog = rr.progress.at(-1);
        if (rr.runner.phase === 'sweep' && pausedAtY === null && prog !== undefined && prog.fraction > 0.4) {
          rr.runner.pause();
          pausedAtY = rr.plant.pose.positionMm.y;
        } else if (rr.runner.phase === 'paused') {
          pausedTicks++;
          assert.ok(Math.abs(rr.plant.pose.positionMm.y - pausedAtY!) < 1, 'holds position');
          if (pausedTicks === 1000) rr.runner.resume(); // 2 s paused
        }
      },
    });
    assert.equal(err, null, String(err));
    assert.deepEqual(r.phases, ['approach', 'descend', 'sweep', 'paused', 'sweep', 'lift-off', 'done']);
    const paused = r.progress.filter((p) => p.phase === 'paused');
    assert.ok(paused.length >= 90, 'jogs keep coming while paused (force loop active)');
    for (const p of paused) near(p.forceN!, 5, 1, 'paused force');
    assert.throws(() => r.runner.pause(), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_ROBOT_BUSY');
  });

  void test('abort via AbortSignal: rejects with the reason, robot stopped, no jog after the stop', async (t) => {
    const r = sweepRig(t);
    const ac = new AbortController();
    const reason = new Eco3dError('ECO3D_ERR_CONFLICT', 'operator abort');
    const err = await runSweep(r, LINEAR, {
      signal: ac.signal,
      during: (rr) => {
        if (rr.runner.phase === 'sweep' && !ac.signal.aborted) ac.abort(reason);
      },
    });
    assert.equal(err, reason);
    assert.equal(r.driver.lastCommand()?.kind, 'stop');
    const n = r.driver.sent.length;
    await r.vt.advance(200, 10);
    assert.equal(r.driver.sent.length, n, 'nothing after the stop');
    assert.equal(r.runner.phase, 'done');
  });

  void test('an e-stop mid-sweep: the runner stops with ECO3D_ERR_ESTOP_LATCHED', async (t) => {
    const r = sweepRig(t);
    let pressed = false;
    const err = await runSweep(r, LINEAR, {
      during: (rr) => {
        if (rr.runner.phase === 'sweep' && !pressed) {
          pressed = true;
          void rr.sup.estop({ role: 'bedside', actor: 'nurse' });
        }
      },
    });
    assert.ok(err instanceof Eco3dError && err.code === 'ECO3D_ERR_ESTOP_LATCHED', String(err));
    const kinds = r.driver.kinds();
    assert.ok(kinds.indexOf('estop') > 0);
    assert.ok(!kinds.slice(kinds.indexOf('estop')).includes('jog'), 'no jog after the e-stop');
    assert.equal(kinds.at(-1), 'stop');
  });

  void test('sensor dropout mid-sweep ends the run', async (t) => {
    const r = sweepRig(t);
    const err = await runSweep(r, LINEAR, {
      during: (rr) => {
        if (rr.runner.phase === 'sweep') rr.plant.sensorDropout = true;
      },
    });
    assert.ok(err instanceof Eco3dError && err.code === 'ECO3D_ERR_ROBOT_FAULT', String(err));
    assert.equal(r.driver.lastCommand()?.kind, 'stop');
  });

  void test('a missing skin ends the descent', async (t) => {
    const r2 = sweepRig(t, { skinZMm: 40 }); // skin 80 mm lower than planned
    const err2 = await runSweep(r2, LINEAR);
    assert.ok(err2 instanceof Eco3dError && err2.code === 'ECO3D_ERR_CONFLICT' && /no skin contact/.test(err2.message), String(err2));
    assert.equal(r2.driver.lastCommand()?.kind, 'stop');
  });

  void test('a second run while one is active is refused', async (t) => {
    const r = sweepRig(t);
    const ac = new AbortController();
    const holder: { second: Promise<void> | null } = { second: null };
    const err = await runSweep(r, LINEAR, {
      signal: ac.signal,
      during: (rr) => {
        if (holder.second !== null) return;
        holder.second = assert.rejects(rr.runner.run(LINEAR, SYSTEM), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_ROBOT_BUSY');
        ac.abort(new Error('test over'));
      },
    });
    assert.ok(err instanceof Error && err.message === 'test over');
    assert.ok(holder.second !== null);
    await holder.second;
  });
});

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Joints6, Pose, RobotCommand, RobotState, Vec3 } from '../protocols/robot.ts';
import { JOG_WATCHDOG_MS } from '../protocols/robot.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { cross, dot, norm, quatAngle, quatFromAxisAngle, quatMul, slerp, sub } from '../protocols/geometry.ts';
import { HOME_POSE, JOINT_MAX_ACCEL_RAD_PER_S2, JOINT_MAX_SPEED_RAD_PER_S, PATIENT_TORSO } from '../protocols/scene.ts';
import { HOME_JOINTS_RAD } from './kinematics.ts';
import { tissueForceN } from './patient.ts';
import { RobotSimulator, SIM_LIMITS } from './robot-sim.ts';

const DT_MS = 4;
const DOWN = HOME_POSE.orientation;
const TOP_Z = PATIENT_TORSO.centerMm.z + PATIENT_TORSO.semiAxesMm.z;

/** Steps for `ms` milliseconds, calling `each` after every step; returns the states. */
function run(sim: RobotSimulator, ms: number, each?: (s: RobotState) => void): RobotState[] {
  const out: RobotState[] = [];
  for (let t = 0; t < ms - 1e-9; t += DT_MS) {
    const s = sim.step(DT_MS);
    out.push(s);
    each?.(s);
  }
  return out;
}

/** Steps until `pred` holds (or fails after maxMs). */
function runUntil(sim: RobotSimulator, pred: (s: RobotState) => boolean, maxMs: number, what: string): RobotState[] {
  const out: RobotState[] = [];
  for (let t = 0; t < maxMs; t += DT_MS) {
    const s = sim.step(DT_MS);
    out.push(s);
    if (pred(s)) return out;
  }
  assert.fail(`${what}: not reached within ${maxMs} ms (mode ${sim.state.mode}, faults ${sim.state.faults.join(',')})`);
}

const speedMmPerS = (a: RobotState, b: RobotState): number =>
  norm(sub(b.tcpPose.positionMm, a.tcpPose.positionMm)) / ((b.tMs - a.tMs) / 1000);

function assertNack(sim: RobotSimulator, cmd: RobotCommand, reasonPart: RegExp): void {
  assert.throws(
    () => sim.apply(cmd),
    (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_NACK' && reasonPart.test(err.message),
    `${cmd.kind} should be refused with ${reasonPart}`,
  );
}

const jog = (linearMmPerS: Vec3, angularRadPerS: Vec3 = { x: 0, y: 0, z: 0 }): RobotCommand => ({ kind: 'jog', linearMmPerS, angularRadPerS });
const cart = (pose: Pose, speed: number): RobotCommand => ({ kind: 'cartesian-target', pose, speedMmPerS: speed });
const restAt = (s: RobotState): boolean => s.jointVelRadPerS.every((v) => v === 0);

void describe('RobotSimulator', () => {
  void it('starts idle at HOME_POSE, at rest, with a near-zero wrench; time and seq advance per step', () => {
    const sim = new RobotSimulator();
    assert.equal(sim.state.mode, 'idle');
    assert.equal(sim.state.seq, 0);
    assert.ok(norm(sub(sim.state.tcpPose.positionMm, HOME_POSE.positionMm)) < 1e-9, 'at home');
    const s = sim.step(DT_MS);
    assert.equal(s.seq, 1);
    assert.equal(s.tMs, DT_MS);
    assert.equal(sim.state, s);
    assert.ok(s.wrench !== null && norm(s.wrench.forceN) < 0.5, 'only sensor noise');
    assert.deepEqual(s.jointsRad, HOME_JOINTS_RAD);
  });

  void it('is deterministic for a seed', () => {
    const drive = (): RobotState[] => {
      const sim = new RobotSimulator({ seed: 77 });
      sim.apply(jog({ x: 20, y: -10, z: -30 }));
      return run(sim, 400);
    };
    assert.deepEqual(drive(), drive());
  });

  void describe('jog', () => {
    void it('moves the TCP at the commanded velocity, then the watchdog ramps it down to stopped', () => {
      const sim = new RobotSimulator();
      const v = { x: 30, y: -40, z: 0 }; // 50 mm/s
      const states: RobotState[] = [];
      // The host refreshes the jog every 100 ms for 1 s, then goes silent.
      for (let k = 0; k < 10; k++) {
        sim.apply(jog(v));
        states.push(...run(sim, 100));
      }
      const lastCmdTMs = 900;
      for (let i = 1; i < states.length; i++) {
        const a = states[i - 1]!, b = states[i]!;
        assert.equal(b.mode, 'jogging');
        const sp = speedMmPerS(a, b);
        assert.ok(sp <= 50 + 1e-6, `never faster than commanded (${sp})`);
        if (b.tMs > 100) {
          assert.ok(Math.abs(sp - 50) < 1e-6, `cruises at 50 mm/s, got ${sp} at ${b.tMs} ms`);
          const d = sub(b.tcpPose.positionMm, a.tcpPose.positionMm);
          assert.ok(norm(cross(d, v)) / (norm(d) * 50) < 1e-6, 'along the commanded direction');
        }
        assert.ok(quatAngle(b.tcpPose.orientation, DOWN) < 1e-9, 'orientation kept');
      }
      // Still cruising until the watchdog fires…
      const beforeWatchdog = run(sim, lastCmdTMs + JOG_WATCHDOG_MS - sim.state.tMs - DT_MS);
      assert.ok(beforeWatchdog.every((s) => s.mode === 'jogging'));
      assert.ok(Math.abs(speedMmPerS(beforeWatchdog.at(-2)!, beforeWatchdog.at(-1)!) - 50) < 1e-6, 'full speed right before the watchdog');
      // …then it decelerates at the TCP acceleration limit and reports 'stopped'.
      const tail = runUntil(sim, (s) => s.mode === 'stopped', 200, 'watchdog stop');
      const stopAt = tail.at(-1)!.tMs;
      const rampMs = (50 / SIM_LIMITS.tcpAccelMmPerS2) * 1000;
      assert.ok(stopAt >= lastCmdTMs + JOG_WATCHDOG_MS + rampMs - DT_MS, `stopped at ${stopAt}`);
      assert.ok(stopAt <= lastCmdTMs + JOG_WATCHDOG_MS + rampMs + 2 * DT_MS, `stopped at ${stopAt}`);
      let prev = beforeWatchdog.at(-1)!;
      let prevSpeed = 50;
      for (const s of tail) {
        const sp = speedMmPerS(prev, s);
        assert.ok(prevSpeed - sp <= SIM_LIMITS.tcpAccelMmPerS2 * (DT_MS / 1000) + 1e-6, 'decelerates within the TCP limit');
        prev = s;
        prevSpeed = sp;
      }
      const still = run(sim, 100);
      assert.ok(still.every((s) => s.mode === 'stopped' && restAt(s)));
      assert.deepEqual(still.at(-1)!.tcpPose, tail.at(-1)!.tcpPose);
    });

    void it('rotates about the TCP with an angular jog (the probe face stays put)', () => {
      const sim = new RobotSimulator();
      sim.apply(jog({ x: 0, y: 0, z: 0 }, { x: 0.2, y: 0, z: 0 }));
      run(sim, 200);
      const s = sim.state;
      assert.ok(norm(sub(s.tcpPose.positionMm, HOME_POSE.positionMm)) < 1e-6, 'TCP fixed');
      const angle = quatAngle(s.tcpPose.orientation, DOWN);
      // 200 ms with a 40 ms ramp at 5 rad/s²: 0.2·(0.2 − 0.02) = 0.036 rad
      assert.ok(Math.abs(angle - 0.036) < 1e-3, `turned ${angle} rad`);
    });

    for (const [name, v] of [
      ['elbow stretched out (edge of the reach)', { x: 0, y: 0, z: 200 }],
      ['wrist over the base (shoulder singularity)', { x: -200, y: 0, z: 0 }],
    ] as const) {
      void it(`creeps to a halt on its line at a singularity: ${name}; jogging back out works`, () => {
        const sim = new RobotSimulator();
        const start = sim.state.tcpPose.positionMm;
        const states: RobotState[] = [];
        for (let k = 0; k < 40; k++) {
          if (sim.state.mode !== 'jogging' && k > 0) break;
          sim.apply(jog(v));
          states.push(...run(sim, 100));
        }
        assert.deepEqual(sim.state.faults, []);
        for (const s of states) {
          const rel = sub(s.tcpPose.positionMm, start);
          assert.ok(norm(cross(rel, v)) / norm(v) < 0.01, `stays on the jog line (${norm(cross(rel, v)) / norm(v)} mm off)`);
          for (let i = 0; i < 6; i++) assert.ok(Math.abs(s.jointVelRadPerS[i]!) <= JOINT_MAX_SPEED_RAD_PER_S[i]! + 1e-9);
        }
        const last = states.at(-1)!;
        assert.ok(speedMmPerS(states.at(-2)!, last) < 1, 'at (or creeping to) a halt');
        const travelled = norm(sub(last.tcpPose.positionMm, start));
        assert.ok(travelled > 150, `got well on the way (${travelled} mm)`);
        const back = { x: -v.x / 4, y: -v.y / 4, z: -v.z / 4 }; // 50 mm/s back out
        sim.apply(jog(back));
        const out = run(sim, 200);
        assert.equal(sim.state.mode, 'jogging');
        assert.ok(Math.abs(speedMmPerS(out.at(-2)!, out.at(-1)!) - 50) < 1e-6, 'full speed away from the singularity');
      });
    }

    void it('refuses jogs above the speed limit', () => {
      const sim = new RobotSimulator();
      assertNack(sim, jog({ x: SIM_LIMITS.maxTcpSpeedMmPerS + 1, y: 0, z: 0 }), /linear speed/);
      assertNack(sim, jog({ x: Number.NaN, y: 0, z: 0 }), /finite/);
    });
  });

  void describe('joint target and stop', () => {
    void it('moves every joint to its target within speed and acceleration limits, synchronised, ending idle', () => {
      const sim = new RobotSimulator();
      const target = HOME_JOINTS_RAD.map((q, i) => q + [0.8, -0.3, 0.4, 0.2, -0.5, 1][i]!) as unknown as Joints6;
      sim.apply({ kind: 'joint-target', jointsRad: target, speedScale: 0.5 });
      const states = runUntil(sim, (s) => s.mode === 'idle', 5000, 'joint target');
      let prev = HOME_JOINTS_RAD.map(() => 0);
      const arrivedAtMs: number[] = [0, 0, 0, 0, 0, 0];
      for (const s of states) {
        for (let i = 0; i < 6; i++) {
          const v = s.jointVelRadPerS[i]!;
          assert.ok(Math.abs(v) <= JOINT_MAX_SPEED_RAD_PER_S[i]! * 0.5 + 1e-9, `joint ${i} speed ${v}`);
          assert.ok(Math.abs(v - prev[i]!) <= JOINT_MAX_ACCEL_RAD_PER_S2[i]! * (DT_MS / 1000) + 1e-9, `joint ${i} accel`);
          if (Math.abs(s.jointsRad[i]! - target[i]!) > 1e-3) arrivedAtMs[i] = s.tMs;
        }
        prev = [...s.jointVelRadPerS];
      }
      assert.deepEqual(sim.state.jointsRad, target);
      const spread = Math.max(...arrivedAtMs) - Math.min(...arrivedAtMs);
      assert.ok(spread < 100, `joints arrive together (spread ${spread} ms)`);
    });

    void it('refuses targets outside the joint limits or with a bad speed scale', () => {
      const sim = new RobotSimulator();
      const bad = [...HOME_JOINTS_RAD] as number[];
      bad[2] = 3.5; // elbow limit ±π
      assertNack(sim, { kind: 'joint-target', jointsRad: bad as unknown as Joints6, speedScale: 0.5 }, /joint 2 .*outside the joint limits/);
      assertNack(sim, { kind: 'joint-target', jointsRad: HOME_JOINTS_RAD, speedScale: 0 }, /speedScale/);
      assertNack(sim, { kind: 'joint-target', jointsRad: HOME_JOINTS_RAD, speedScale: 1.5 }, /speedScale/);
    });

    void it('stop decelerates within the joint acceleration limits, then reports stopped', () => {
      const sim = new RobotSimulator();
      const target = [...HOME_JOINTS_RAD] as number[];
      target[0] = target[0]! + 2;
      target[3] = target[3]! - 2;
      sim.apply({ kind: 'joint-target', jointsRad: target as unknown as Joints6, speedScale: 1 });
      run(sim, 600);
      const before = sim.state;
      assert.ok(Math.abs(before.jointVelRadPerS[0]) > 1, 'moving fast');
      sim.apply({ kind: 'stop' });
      const braking = runUntil(sim, (s) => s.mode === 'stopped', 1000, 'stop');
      let prev = before;
      for (const s of braking) {
        for (let i = 0; i < 6; i++) {
          const dv = Math.abs(s.jointVelRadPerS[i]! - prev.jointVelRadPerS[i]!);
          assert.ok(dv <= JOINT_MAX_ACCEL_RAD_PER_S2[i]! * (DT_MS / 1000) + 1e-9, `joint ${i} decel ${dv / (DT_MS / 1000)}`);
          // Never speeds up or reverses while braking.
          assert.ok(Math.abs(s.jointVelRadPerS[i]!) <= Math.abs(prev.jointVelRadPerS[i]!) + 1e-12);
        }
        if (s.mode !== 'stopped') assert.equal(s.mode, 'moving');
        prev = s;
      }
      const tookMs = braking.at(-1)!.tMs - before.tMs;
      const minMs = (Math.max(...before.jointVelRadPerS.map((v, i) => Math.abs(v) / JOINT_MAX_ACCEL_RAD_PER_S2[i]!)) * 1000);
      assert.ok(tookMs >= minMs - 1e-6 && tookMs <= minMs + 2 * DT_MS, `braking took ${tookMs} ms (min ${minMs})`);
      assert.ok(restAt(sim.state));
      const frozen = sim.state.jointsRad;
      run(sim, 100);
      assert.deepEqual(sim.state.jointsRad, frozen);
      assert.equal(sim.state.mode, 'stopped');
      // 'stopped' accepts new commands.
      sim.apply({ kind: 'joint-target', jointsRad: HOME_JOINTS_RAD, speedScale: 1 });
      runUntil(sim, (s) => s.mode === 'idle', 5000, 'back home');
    });
  });

  void describe('cartesian target', () => {
    const tilt = quatFromAxisAngle({ x: 1, y: 1, z: 0 }, 0.2);
    const target: Pose = { positionMm: { x: 540, y: 90, z: 220 }, orientation: quatMul(tilt, DOWN) };

    void it('moves the TCP in a straight line with the orientation slerped, at the commanded speed', () => {
      const sim = new RobotSimulator();
      const from = sim.state.tcpPose;
      sim.apply(cart(target, 60));
      const states = runUntil(sim, (s) => s.mode === 'idle', 10_000, 'cartesian target');
      const line = sub(target.positionMm, from.positionMm);
      const L = norm(line);
      let maxSpeed = 0;
      for (let i = 0; i < states.length; i++) {
        const s = states[i]!;
        const rel = sub(s.tcpPose.positionMm, from.positionMm);
        const along = dot(rel, line) / L;
        const off = norm(cross(rel, line)) / L;
        assert.ok(off < 1e-6, `off the line by ${off} mm`);
        assert.ok(along >= -1e-9 && along <= L + 1e-9);
        const expected = slerp(from.orientation, target.orientation, along / L);
        assert.ok(quatAngle(s.tcpPose.orientation, expected) < 1e-6, 'orientation follows the slerp');
        if (i > 0) maxSpeed = Math.max(maxSpeed, speedMmPerS(states[i - 1]!, s));
      }
      assert.ok(Math.abs(maxSpeed - 60) < 1e-6, `cruise speed ${maxSpeed}`);
      const end = sim.state.tcpPose;
      assert.ok(norm(sub(end.positionMm, target.positionMm)) < 1e-6, 'reached the position');
      assert.ok(quatAngle(end.orientation, target.orientation) < 1e-6, 'reached the orientation');
      const expectedMs = (L / 60 + 60 / SIM_LIMITS.tcpAccelMmPerS2) * 1000;
      assert.ok(Math.abs(states.at(-1)!.tMs - expectedMs) < 30, `took ${states.at(-1)!.tMs} ms, trapezoid ${expectedMs} ms`);
      run(sim, 20);
      assert.ok(restAt(sim.state) && sim.state.mode === 'idle');
    });

    void it('slows down along the line where a joint would exceed its speed limit (near the base axis)', () => {
      const sim = new RobotSimulator();
      const a: Pose = { positionMm: { x: 250, y: -300, z: 350 }, orientation: DOWN };
      const b: Pose = { positionMm: { x: 250, y: 300, z: 350 }, orientation: DOWN };
      sim.apply(cart(a, 200));
      runUntil(sim, (s) => s.mode === 'idle', 10_000, 'to a');
      sim.apply(cart(b, SIM_LIMITS.maxTcpSpeedMmPerS));
      const states = runUntil(sim, (s) => s.mode === 'idle', 10_000, 'to b');
      let slowest = Infinity;
      for (let i = 1; i < states.length; i++) {
        const s = states[i]!;
        for (let j = 0; j < 6; j++) assert.ok(Math.abs(s.jointVelRadPerS[j]!) <= JOINT_MAX_SPEED_RAD_PER_S[j]! + 1e-9, `joint ${j} speed`);
        const rel = sub(s.tcpPose.positionMm, a.positionMm);
        assert.ok(Math.abs(rel.x) < 1e-6 && Math.abs(rel.z) < 1e-6, 'on the line');
        if (Math.abs(s.tcpPose.positionMm.y) < 20) slowest = Math.min(slowest, speedMmPerS(states[i - 1]!, s));
      }
      assert.ok(slowest < 0.8 * SIM_LIMITS.maxTcpSpeedMmPerS, `slowed down near the base axis (${slowest} mm/s)`);
      assert.ok(norm(sub(sim.state.tcpPose.positionMm, b.positionMm)) < 1e-6);
    });

    void it('refuses unreachable targets, a bad speed and a non-unit quaternion, with a clear reason', () => {
      const sim = new RobotSimulator();
      assertNack(sim, cart({ positionMm: { x: 1500, y: 0, z: 200 }, orientation: DOWN }, 50), /unreachable/);
      assertNack(sim, cart({ positionMm: { x: 0, y: 0, z: 600 }, orientation: DOWN }, 50), /unreachable/);
      // Reachable, but only by another arm configuration: the line ends with the elbow stretched out.
      assertNack(sim, cart({ positionMm: { x: 650, y: 0, z: 300 }, orientation: DOWN }, 50), /singularity/);
      assertNack(sim, cart(target, 0), /speedMmPerS/);
      assertNack(sim, cart({ positionMm: target.positionMm, orientation: { x: 0.5, y: 0, z: 0, w: 0 } }, 50), /unit quaternion/);
      assert.equal(sim.state.mode, 'idle');
    });

    void it('pressing into the torso gives the tissue force (stiffness × depth) along the probe axis', () => {
      const sim = new RobotSimulator({ seed: 3 });
      const depthMm = 10;
      sim.apply(cart({ positionMm: { x: PATIENT_TORSO.centerMm.x, y: PATIENT_TORSO.centerMm.y, z: TOP_Z - depthMm }, orientation: DOWN }, 40));
      runUntil(sim, (s) => s.mode === 'idle', 10_000, 'press');
      const states = run(sim, 400);
      const fz = states.reduce((acc, s) => acc + s.wrench!.forceN.z, 0) / states.length;
      const expected = tissueForceN(depthMm);
      assert.ok(Math.abs(expected - PATIENT_TORSO.stiffnessNPerMm * depthMm) < 0.05 * expected, 'nearly linear at 10 mm');
      assert.ok(Math.abs(fz - expected) < 0.02, `mean Fz ${fz} vs ${expected}`);
      assert.equal(sim.state.mode, 'idle');
    });
  });

  void describe('e-stop and reset', () => {
    void it('halts at once, latches, refuses everything but reset, then accepts motion again', () => {
      const sim = new RobotSimulator();
      sim.apply(jog({ x: 0, y: 50, z: 0 }));
      run(sim, 200);
      sim.apply({ kind: 'estop' });
      const s = sim.step(DT_MS);
      assert.equal(s.mode, 'estopped');
      assert.ok(restAt(s), 'velocities zero at once');
      const frozen = s.jointsRad;
      for (const cmd of [jog({ x: 10, y: 0, z: 0 }), cart(HOME_POSE, 50), { kind: 'stop' } as const, { kind: 'estop' } as const]) {
        assertNack(sim, cmd, /e-stop is latched/);
      }
      run(sim, 500);
      assert.deepEqual(sim.state.jointsRad, frozen);
      assert.equal(sim.state.mode, 'estopped');
      sim.apply({ kind: 'reset' });
      assert.equal(sim.step(DT_MS).mode, 'idle');
      sim.apply(cart(HOME_POSE, 50));
      runUntil(sim, (st) => st.mode === 'idle' && norm(sub(st.tcpPose.positionMm, HOME_POSE.positionMm)) < 1e-6, 5000, 'home');
    });

    void it('reset with nothing to reset is a harmless acknowledgement', () => {
      const sim = new RobotSimulator();
      sim.apply({ kind: 'reset' });
      assert.equal(sim.step(DT_MS).mode, 'idle');
    });
  });

  void describe('faults', () => {
    void it('over-force from pressing too deep: fault, stop, back off below the limit, then reset', () => {
      const sim = new RobotSimulator();
      sim.apply(cart({ positionMm: { x: 450, y: 0, z: TOP_Z - 70 }, orientation: DOWN }, 20));
      const toFault = runUntil(sim, (s) => s.faults.includes('over-force'), 20_000, 'over-force');
      const atFault = toFault.at(-1)!;
      assert.equal(atFault.mode, 'faulted');
      assert.ok(atFault.wrench!.forceN.z > SIM_LIMITS.overForceN - 0.5, `force at fault ${atFault.wrench!.forceN.z}`);
      assertNack(sim, jog({ x: 0, y: 0, z: 10 }), /faulted \(over-force\)/);
      const after = runUntil(sim, (s) => restAt(s) && s.wrench!.forceN.z < SIM_LIMITS.backoffReleaseRatio * SIM_LIMITS.overForceN, 5000, 'back-off');
      assert.ok(after.every((s) => s.mode === 'faulted'));
      run(sim, 300);
      assert.ok(restAt(sim.state), 'holds after backing off');
      const fz = sim.state.wrench!.forceN.z;
      assert.ok(fz < SIM_LIMITS.backoffReleaseRatio * SIM_LIMITS.overForceN && fz > 0.7 * SIM_LIMITS.backoffReleaseRatio * SIM_LIMITS.overForceN, `backs off just enough (${fz} N)`);
      sim.apply({ kind: 'reset' });
      const s = sim.step(DT_MS);
      assert.equal(s.mode, 'idle');
      assert.deepEqual(s.faults, []);
    });

    void it('over-force injected as an external push: reset refused until it is cleared', () => {
      const sim = new RobotSimulator();
      sim.injectFault({ kind: 'over-force', extraForceN: 50 });
      const s = sim.step(DT_MS);
      assert.deepEqual(s.faults, ['over-force']);
      assert.equal(s.mode, 'faulted');
      assert.ok(s.wrench!.forceN.z > 49);
      run(sim, 6000); // backs off at most backoffMaxMm (at backoffSpeedMmPerS), then holds
      assert.ok(restAt(sim.state));
      const rise = sim.state.tcpPose.positionMm.z - HOME_POSE.positionMm.z;
      assert.ok(rise > 0 && rise <= SIM_LIMITS.backoffMaxMm + 1, `backed off ${rise} mm`);
      assertNack(sim, { kind: 'reset' }, /external push/);
      sim.clearFault('over-force');
      sim.apply({ kind: 'reset' });
      assert.equal(sim.step(DT_MS).mode, 'idle');
    });

    void it('stuck joint: the following error raises joint-stuck and the arm halts', () => {
      const sim = new RobotSimulator();
      sim.injectFault({ kind: 'stuck-joint', joint: 2 }); // the elbow: it does most of a vertical jog
      run(sim, 100);
      assert.equal(sim.state.mode, 'idle', 'no motion, no following error, no fault');
      const elbow = sim.state.jointsRad[2];
      const down = jog({ x: 0, y: 0, z: -40 });
      sim.apply(down);
      // The host keeps the jog alive (its refreshes NACK once the fault is up: stop refreshing then).
      const states = runUntil(sim, (st) => {
        if (st.faults.length === 0 && st.tMs % 100 === 0) sim.apply(down);
        return st.faults.includes('joint-stuck');
      }, 2000, 'joint-stuck');
      const detectMs = states.at(-1)!.tMs - states[0]!.tMs;
      assert.ok(detectMs < 300, `detected after ${detectMs} ms`);
      const s = states.at(-1)!;
      assert.equal(s.mode, 'faulted');
      assert.equal(s.jointsRad[2], elbow, 'the stuck joint never moved');
      assert.ok(restAt(s), 'halted at once');
      const frozen = s.jointsRad;
      run(sim, 200);
      assert.deepEqual(sim.state.jointsRad, frozen);
      assertNack(sim, { kind: 'reset' }, /joint 2 still stuck/);
      sim.clearFault('stuck-joint');
      sim.apply({ kind: 'reset' });
      assert.equal(sim.step(DT_MS).mode, 'idle');
      assert.deepEqual(sim.state.jointsRad, frozen, 'no jump when the joint frees up');
      sim.apply(jog({ x: 0, y: 0, z: -40 }));
      run(sim, 200);
      assert.equal(sim.state.mode, 'jogging');
    });

    void it('sensor dropout: wrench null and a fault; stop and estop are still accepted while faulted', () => {
      const sim = new RobotSimulator();
      sim.apply(jog({ x: 20, y: 0, z: 0 }));
      run(sim, 100);
      sim.injectFault({ kind: 'sensor-dropout' });
      const s = sim.step(DT_MS);
      assert.equal(s.wrench, null);
      assert.deepEqual(s.faults, ['sensor-dropout']);
      assert.equal(s.mode, 'faulted');
      assertNack(sim, jog({ x: 20, y: 0, z: 0 }), /faulted/);
      assertNack(sim, cart(HOME_POSE, 20), /faulted/);
      sim.apply({ kind: 'stop' });
      runUntil(sim, restAt, 500, 'braked');
      assertNack(sim, { kind: 'reset' }, /sensor still silent/);
      sim.clearFault('sensor-dropout');
      assert.ok(sim.step(DT_MS).wrench !== null, 'wrench back');
      sim.apply({ kind: 'estop' });
      sim.apply({ kind: 'reset' });
      const r = sim.step(DT_MS);
      assert.equal(r.mode, 'idle');
      assert.deepEqual(r.faults, []);
    });

    void it('refuses reset while still braking', () => {
      const sim = new RobotSimulator();
      const target = [...HOME_JOINTS_RAD] as number[];
      target[0] = target[0]! + 1;
      sim.apply({ kind: 'joint-target', jointsRad: target as unknown as Joints6, speedScale: 1 });
      run(sim, 400);
      sim.injectFault({ kind: 'sensor-dropout' });
      sim.step(DT_MS);
      sim.clearFault('sensor-dropout');
      assert.ok(!restAt(sim.state));
      assertNack(sim, { kind: 'reset' }, /still moving/);
      runUntil(sim, restAt, 1000, 'braked');
      sim.apply({ kind: 'reset' });
      assert.equal(sim.step(DT_MS).mode, 'idle');
    });
  });
});

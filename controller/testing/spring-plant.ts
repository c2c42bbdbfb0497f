// A tiny robot-and-tissue model for control tests: the TCP follows jogs and Cartesian targets
// exactly (no dynamics), the skin is the plane z = skinZMm with a linear spring, and the robot's
// jog watchdog stops a jog that is not refreshed. It drives a FakeRobotDriver: commands come in
// through driver.onCommand, states go out through driver.pushState.
import { add, norm, quatAngle, quatConj, quatFromAxisAngle, quatMul, quatNormalize, rotate, scale, slerp, sub } from '../../protocols/geometry.ts';
import { JOG_WATCHDOG_MS, type Pose, type RobotCommand, type RobotFaultCode, type RobotMode, type RobotState, type Vec3 } from '../../protocols/robot.ts';
import { HOME_POSE, PATIENT_TORSO } from '../../protocols/scene.ts';
import type { FakeRobotDriver } from './fake-driver.ts';

export interface SpringPlantOptions {
  /** Skin plane height (normal +z). Default: the torso top, 120 mm. */
  readonly skinZMm: number;
  readonly stiffnessNPerMm: number;
  /** State report period. */
  readonly statePeriodMs: number;
  readonly pose: Pose;
  /** Orientation rate of Cartesian moves. */
  readonly moveAngularSpeedRadPerS: number;
  /** Skin slope along y (mm of height per mm): a surface the force loop has to follow. */
  readonly skinSlopeY: number;
}

export class SpringPlant {
  readonly o: SpringPlantOptions;
  pose: Pose;
  mode: RobotMode = 'idle';
  faults: RobotFaultCode[] = [];
  /** When true the force sensor reports null. */
  sensorDropout = false;
  /** Added to the modelled force (to fake a push by the patient). */
  extraForceN = 0;
  /** Raises the skin (the patient moving up into the probe). */
  skinOffsetMm = 0;
  private jog: { linear: Vec3; angular: Vec3; lastAtMs: number } | null = null;
  private move: { target: Pose; speedMmPerS: number } | null = null;
  private sinceStateMs = 0;
  /** Every command the plant has executed, for assertions. */
  readonly executed: RobotCommand[] = [];

  constructor(
    private readonly driver: FakeRobotDriver,
    opts: Partial<SpringPlantOptions> = {},
  ) {
    this.o = {
      skinZMm: PATIENT_TORSO.centerMm.z + PATIENT_TORSO.semiAxesMm.z,
      stiffnessNPerMm: PATIENT_TORSO.stiffnessNPerMm,
      statePeriodMs: 4,
      pose: HOME_POSE,
      moveAngularSpeedRadPerS: 0.5,
      skinSlopeY: 0,
      ...opts,
    };
    this.pose = this.o.pose;
    driver.onCommand = (cmd) => this.onCommand(cmd);
    this.report();
  }

  /** Normal force of the skin on the probe, N. */
  normalForceN(): number {
    const p = this.pose.positionMm;
    return Math.max(0, this.skinHeightMm(p.y) - p.z) * this.o.stiffnessNPerMm + this.extraForceN;
  }

  skinHeightMm(yMm: number): number {
    return this.o.skinZMm + this.skinOffsetMm + this.o.skinSlopeY * yMm;
  }

  /** Force the probe applies, in the tool frame (positive z when pressing). */
  toolForceN(): Vec3 {
    return rotate(quatConj(this.pose.orientation), { x: 0, y: 0, z: -this.normalForceN() });
  }

  private onCommand(cmd: RobotCommand): void {
    this.executed.push(cmd);
    if ((this.mode === 'estopped' || this.mode === 'faulted') && cmd.kind !== 'reset' && cmd.kind !== 'estop') return;
    switch (cmd.kind) {
      case 'jog':
        this.move = null;
        this.jog = { linear: cmd.linearMmPerS, angular: cmd.angularRadPerS, lastAtMs: Date.now() };
        this.mode = 'jogging';
        return;
      case 'cartesian-target':
        this.jog = null;
        this.move = { target: cmd.pose, speedMmPerS: cmd.speedMmPerS };
        this.mode = 'moving';
        return;
      case 'joint-target':
        return; // not modelled
      case 'stop':
        this.jog = null;
        this.move = null;
        this.mode = 'stopped';
        return;
      case 'estop':
        this.jog = null;
        this.move = null;
        this.mode = 'estopped';
        return;
      case 'reset':
        this.faults = [];
        this.mode = 'idle';
        return;
    }
  }

  /** Advances the model by dtMs and reports a state every statePeriodMs. */
  step(dtMs: number): void {
    const dtS = dtMs / 1000;
    if (this.jog !== null) {
      if (Date.now() - this.jog.lastAtMs > JOG_WATCHDOG_MS) {
        this.jog = null;
        this.mode = 'idle';
      } else {
        const w = this.jog.angular;
        const angle = norm(w) * dtS;
        const orientation = angle > 0 ? quatNormalize(quatMul(quatFromAxisAngle(w, angle), this.pose.orientation)) : this.pose.orientation;
        this.pose = { positionMm: add(this.pose.positionMm, scale(this.jog.linear, dtS)), orientation };
      }
    }
    if (this.move !== null) {
      const { target, speedMmPerS } = this.move;
      const d = sub(target.positionMm, this.pose.positionMm);
      const dist = norm(d);
      const stepMm = speedMmPerS * dtS;
      const positionMm = dist <= stepMm ? target.positionMm : add(this.pose.positionMm, scale(d, stepMm / dist));
      const angleRad = quatAngle(this.pose.orientation, target.orientation);
      const stepRad = this.o.moveAngularSpeedRadPerS * dtS;
      const orientation = angleRad <= stepRad ? target.orientation : slerp(this.pose.orientation, target.orientation, stepRad / angleRad);
      this.pose = { positionMm, orientation };
      if (dist <= stepMm && angleRad <= stepRad) {
        this.move = null;
        this.mode = 'idle';
      }
    }
    this.sinceStateMs += dtMs;
    if (this.sinceStateMs >= this.o.statePeriodMs) {
      this.sinceStateMs = 0;
      this.report();
    }
  }

  report(): RobotState {
    return this.driver.pushState({
      mode: this.mode,
      tcpPose: this.pose,
      wrench: this.sensorDropout ? null : { forceN: this.toolForceN(), torqueNm: { x: 0, y: 0, z: 0 } },
      faults: [...this.faults],
    });
  }
}

// A minimal robot for the serial benchmarks: a new state every millisecond (about 1 kHz, well
// above any stream rate, so that the stream's rate is the link's, not the robot's) stamped with
// performance.now() so that the receiver, in the same process, can measure latency; every
// command acknowledged at once. The benchmarks measure the serial link (codec ⇄ PTY ⇄ socat),
// not a simulator.
import { BehaviorSubject, ReplaySubject } from 'rxjs';
import type { DriverStats, LinkStatus, RobotCommand, RobotDriver, RobotState } from '../protocols/robot.ts';

export class SerialBenchRobot implements RobotDriver {
  readonly kind = 'sim' as const;
  private readonly states = new ReplaySubject<RobotState>(1);
  readonly state$ = this.states.asObservable();
  readonly link$ = new BehaviorSubject<LinkStatus>({ up: true, atMs: Date.now(), reason: 'bench robot' });
  private seq = 0;
  private commands = 0;
  private readonly timer = setInterval(() => {
    this.states.next({
      tMs: performance.now(),
      seq: ++this.seq,
      mode: 'moving',
      jointsRad: [0.1, -1.2, 1.3, -0.4, 1.5, 0.6],
      jointVelRadPerS: [0.01, 0, 0, 0, 0, 0],
      tcpPose: { positionMm: { x: 450, y: 0, z: 270 }, orientation: { x: 1, y: 0, z: 0, w: 0 } },
      wrench: { forceN: { x: 0, y: 0, z: 2 }, torqueNm: { x: 0, y: 0, z: 0 } },
      faults: [],
    });
  }, 1);

  async connect(): Promise<void> {}
  async send(_cmd: RobotCommand): Promise<void> {
    this.commands++;
  }
  stats(): DriverStats {
    return { statesReceived: this.seq, commandsSent: this.commands, commandsFailed: 0, errors: {} };
  }
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.states.complete();
  }
}

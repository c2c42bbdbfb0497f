// The in-process simulated robot as a RobotDriver (kind 'sim'): the default robot of `eco3d start`
// and the robot the controller's tests drive.
//
// Public API (re-exported by sim/index.ts):
//   new SimRobotDriver(opts?)    owns a RobotSimulator (or drives the one given)
//   driver.connect()             link up, first state, and (clock 'timer') the 250 Hz step timer
//   driver.send(cmd, timeoutMs?) resolves on the robot's ack; rejects with Eco3dError:
//                                ECO3D_ERR_NACK (reason from the robot), ECO3D_ERR_TIMEOUT,
//                                ECO3D_ERR_LINK_LOST, ECO3D_ERR_CLOSED, ECO3D_ERR_BAD_REQUEST
//   driver.state$ / link$        replay the latest state / the current link status, then every change
//   driver.tick(dtMs)            advances the simulation by dtMs now (virtual time for tests)
//   driver.simulator             for fault injection (simulator.injectFault(...))
//   driver.dropLink(reason?) / restoreLink() / setAckLatencyMs(ms)   link faults for tests
//   driver.close()               idempotent; rejects pending sends with ECO3D_ERR_CLOSED
//
// Time: with clock 'timer' (default) a setInterval fires at stepHz and each firing steps the
// simulator by the elapsed time measured with `now()` (capped at maxStepMs, so a stalled event
// loop slows the robot down instead of making it jump). With clock 'manual' nothing runs by itself
// and only tick() moves time. `now` defaults to Date.now rather than performance.now so that
// node:test mock.timers (which mocks Date, not performance) drives the timer clock as is; a wall
// clock step is harmless here (a backward step skips one step, a forward one is capped). On
// Node 20, mock.timers.tick(ms) moves Date only once per call: advance in steps of one period.
//
// Link model: a command reaches the robot ackLatencyMs after send() (0: at once, synchronously)
// and is acknowledged on arrival. A command still in flight when the link drops is lost. A send
// that timed out may still reach the robot later, as over a real link. While the link is down the
// robot keeps running but its states are not delivered, and the robot, like a real one whose host
// went silent, makes a controlled stop (mode 'stopped'; nothing happens if it is e-stopped).
import { BehaviorSubject, ReplaySubject, type Observable } from 'rxjs';
import type { DriverStats, LinkStatus, RobotCommand, RobotDriver, RobotState } from '../protocols/robot.ts';
import { DEFAULT_COMMAND_TIMEOUT_MS } from '../protocols/robot.ts';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import { RobotSimulator, type RobotSimulatorOptions } from './robot-sim.ts';

export interface SimRobotDriverOptions {
  /** Drive this simulator instead of creating one. */
  readonly simulator?: RobotSimulator;
  /** Options of the simulator created when none is given. */
  readonly simulatorOptions?: RobotSimulatorOptions;
  /** 'timer' (default): steps by itself at stepHz; 'manual': only tick() steps. */
  readonly clock?: 'timer' | 'manual';
  readonly stepHz?: number;
  /** Cap on one step's duration (a late timer never makes the robot jump further). */
  readonly maxStepMs?: number;
  /** Clock in ms for the step timer; default Date.now (see the header). */
  readonly now?: () => number;
  /** Wall clock for LinkStatus.atMs; default Date.now. */
  readonly wallNowMs?: () => number;
  readonly ackLatencyMs?: number;
}

interface InFlight {
  readonly cmd: RobotCommand;
  settled: boolean;
  resolve(): void;
  reject(err: Eco3dError): void;
  deliverTimer: ReturnType<typeof setTimeout> | null;
  timeoutTimer: ReturnType<typeof setTimeout> | null;
}

type Lifecycle = 'new' | 'connected' | 'closed';

export class SimRobotDriver implements RobotDriver {
  readonly kind = 'sim' as const;
  readonly simulator: RobotSimulator;
  readonly state$: Observable<RobotState>;
  readonly link$: Observable<LinkStatus>;

  private readonly stateSubject = new ReplaySubject<RobotState>(1);
  private readonly linkSubject: BehaviorSubject<LinkStatus>;
  private readonly clock: 'timer' | 'manual';
  private readonly periodMs: number;
  private readonly maxStepMs: number;
  private readonly now: () => number;
  private readonly wallNowMs: () => number;
  private lifecycle: Lifecycle = 'new';
  private linkUp = false;
  private timer: ReturnType<typeof setInterval> | null = null;
  private lastStepAtMs = 0;
  private ackLatencyMs: number;
  private readonly inFlight = new Set<InFlight>();
  private statesReceived = 0;
  private commandsSent = 0;
  private commandsFailed = 0;

  constructor(opts: SimRobotDriverOptions = {}) {
    this.simulator = opts.simulator ?? new RobotSimulator(opts.simulatorOptions);
    this.clock = opts.clock ?? 'timer';
    const stepHz = opts.stepHz ?? 250;
    if (!(Number.isFinite(stepHz) && stepHz > 0 && stepHz <= 1000)) throw new RangeError(`stepHz must be in (0, 1000], got ${stepHz}`);
    this.periodMs = 1000 / stepHz;
    this.maxStepMs = opts.maxStepMs ?? 5 * this.periodMs;
    this.now = opts.now ?? ((): number => Date.now());
    this.wallNowMs = opts.wallNowMs ?? Date.now;
    this.ackLatencyMs = checkLatency(opts.ackLatencyMs ?? 0);
    this.linkSubject = new BehaviorSubject<LinkStatus>({ up: false, atMs: this.wallNowMs(), reason: 'not connected' });
    this.state$ = this.stateSubject.asObservable();
    this.link$ = this.linkSubject.asObservable();
  }

  get closed(): boolean {
    return this.lifecycle === 'closed';
  }

  async connect(): Promise<void> {
    switch (this.lifecycle) {
      case 'closed':
        throw new Eco3dError('ECO3D_ERR_CLOSED', 'the simulated robot driver is closed');
      case 'connected':
        return;
      case 'new':
        break;
    }
    this.lifecycle = 'connected';
    this.setLink(true, 'connected to the in-process simulator');
    this.emitState(this.simulator.state);
    if (this.clock === 'timer') {
      this.lastStepAtMs = this.now();
      this.timer = setInterval(() => this.onTimer(), this.periodMs);
    }
  }

  send(cmd: RobotCommand, timeoutMs: number = DEFAULT_COMMAND_TIMEOUT_MS): Promise<void> {
    if (this.lifecycle === 'closed') return this.fail(new Eco3dError('ECO3D_ERR_CLOSED', 'the simulated robot driver is closed'));
    if (!this.linkUp) {
      const why = this.lifecycle === 'new' ? 'not connected' : this.linkSubject.value.reason;
      return this.fail(new Eco3dError('ECO3D_ERR_LINK_LOST', `the link to the simulated robot is down (${why})`));
    }
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      return this.fail(new Eco3dError('ECO3D_ERR_BAD_REQUEST', `timeoutMs must be a positive number, got ${timeoutMs}`));
    }
    this.commandsSent++;
    if (this.ackLatencyMs === 0) {
      try {
        this.simulator.apply(cmd);
        return Promise.resolve();
      } catch (err) {
        return this.fail(toEco3dError(err));
      }
    }
    return new Promise<void>((resolve, reject) => {
      const f: InFlight = { cmd, settled: false, resolve, reject, deliverTimer: null, timeoutTimer: null };
      f.deliverTimer = setTimeout(() => this.deliver(f), this.ackLatencyMs);
      f.timeoutTimer = setTimeout(() => {
        f.timeoutTimer = null;
        this.settle(f, new Eco3dError('ECO3D_ERR_TIMEOUT', `${cmd.kind}: no acknowledgement within ${timeoutMs} ms`));
      }, timeoutMs);
      this.inFlight.add(f);
    });
  }

  /** Advances the simulation by dtMs now, in steps of at most one timer period, emitting each state. */
  tick(dtMs: number): void {
    if (!(Number.isFinite(dtMs) && dtMs > 0)) throw new RangeError(`dtMs must be a positive finite number, got ${dtMs}`);
    if (this.lifecycle === 'closed') return;
    const n = Math.ceil(dtMs / this.periodMs - 1e-9);
    for (let i = 0; i < n; i++) this.stepAndEmit(dtMs / n);
  }

  /** Simulates a lost link: link$ goes down, in-flight and new sends fail, the robot stops itself. */
  dropLink(reason = 'link dropped (simulated fault)'): void {
    if (this.lifecycle !== 'connected' || !this.linkUp) return;
    this.setLink(false, reason);
    this.abortInFlight(() => new Eco3dError('ECO3D_ERR_LINK_LOST', `the link to the simulated robot dropped (${reason})`));
    this.robotLostHost();
  }

  restoreLink(reason = 'link restored'): void {
    if (this.lifecycle !== 'connected' || this.linkUp) return;
    this.setLink(true, reason);
    this.emitState(this.simulator.state);
  }

  setAckLatencyMs(ms: number): void {
    this.ackLatencyMs = checkLatency(ms);
  }

  stats(): DriverStats {
    return {
      statesReceived: this.statesReceived,
      commandsSent: this.commandsSent,
      commandsFailed: this.commandsFailed,
      errors: {},
    };
  }

  async close(): Promise<void> {
    if (this.lifecycle === 'closed') return;
    const wasUp = this.linkUp;
    this.lifecycle = 'closed';
    if (this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    this.abortInFlight(() => new Eco3dError('ECO3D_ERR_CLOSED', 'the simulated robot driver was closed'));
    if (wasUp) this.robotLostHost();
    this.setLink(false, 'closed');
    this.linkSubject.complete();
    this.stateSubject.complete();
  }

  // ------------------------------------------------------------------------------------------

  private onTimer(): void {
    const t = this.now();
    const elapsedMs = Math.min(this.maxStepMs, t - this.lastStepAtMs);
    this.lastStepAtMs = t;
    if (elapsedMs > 0) this.stepAndEmit(elapsedMs);
  }

  private stepAndEmit(dtMs: number): void {
    const s = this.simulator.step(dtMs);
    if (this.linkUp) this.emitState(s);
  }

  private emitState(s: RobotState): void {
    this.statesReceived++;
    this.stateSubject.next(s);
  }

  private setLink(up: boolean, reason: string): void {
    this.linkUp = up;
    this.linkSubject.next({ up, atMs: this.wallNowMs(), reason });
  }

  private deliver(f: InFlight): void {
    f.deliverTimer = null;
    this.inFlight.delete(f);
    if (!this.linkUp) return; // lost on the way (abortInFlight already rejected it)
    try {
      this.simulator.apply(f.cmd);
      this.settle(f, null);
    } catch (err) {
      this.settle(f, toEco3dError(err));
    }
  }

  /** Settles once: null resolves (ack), an error rejects. A late ack after a timeout is dropped. */
  private settle(f: InFlight, err: Eco3dError | null): void {
    if (f.timeoutTimer !== null) {
      clearTimeout(f.timeoutTimer);
      f.timeoutTimer = null;
    }
    if (f.settled) return;
    f.settled = true;
    if (err === null) {
      f.resolve();
    } else {
      this.commandsFailed++;
      f.reject(err);
    }
  }

  private abortInFlight(makeError: () => Eco3dError): void {
    for (const f of this.inFlight) {
      if (f.deliverTimer !== null) clearTimeout(f.deliverTimer);
      f.deliverTimer = null;
      this.settle(f, makeError());
    }
    this.inFlight.clear();
  }

  /** What the robot does when its host goes silent: a controlled stop (an e-stop stays latched). */
  private robotLostHost(): void {
    if (this.simulator.state.mode === 'estopped') return;
    try {
      this.simulator.apply({ kind: 'stop' });
    } catch {
      // stop is refused only while e-stopped, checked above; the robot is halted either way.
    }
  }

  private fail(err: Eco3dError): Promise<never> {
    this.commandsFailed++;
    return Promise.reject(err);
  }
}

function checkLatency(ms: number): number {
  if (!(Number.isFinite(ms) && ms >= 0)) throw new RangeError(`ack latency must be a finite number ≥ 0, got ${ms}`);
  return ms;
}

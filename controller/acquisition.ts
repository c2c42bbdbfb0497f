// The acquisition state machine: idle → positioning → scanning ⇄ paused → completed | aborted.
//
// - Named transitions (start, reach-start, pause, resume, finish, abort) and one table of what is
//   allowed (ACQUISITION_TRANSITIONS); anything else throws ECO3D_ERR_ROBOT_BUSY.
// - Every transition is logged and persisted, in order, through the injected AcquisitionRecorder
//   (store/ implements it and writes the outbox event on the terminal transition).
// - `start` is recorded BEFORE the robot moves: if the recorder fails, the acquisition never
//   starts and the robot never moves. Later transitions change the in-memory state at once (the
//   robot must react now, not after a database round trip) and are persisted in order; a failure
//   to persist aborts the acquisition (robot stopped) and is surfaced on state$, in the result,
//   in the log, and to the caller that asked for the transition.
// - While positioning/scanning/paused the SweepRunner drives the robot; link loss, robot faults,
//   e-stops, the force limit and the deadman abort the acquisition with a reason. Whatever
//   happens, the run ends with a stop command sent to the robot.
import { BehaviorSubject, Subject, type Observable, type Subscription } from 'rxjs';
import { Eco3dError, toEco3dError, type ErrorCode } from '../protocols/errors.ts';
import {
  isTerminalAcquisitionState,
  type AbortReason,
  type AcquisitionStateName,
  type AcquisitionTransition,
  type SweepSummary,
} from '../protocols/events.ts';
import type { RobotDriver } from '../protocols/robot.ts';
import { withTimeout, type CommandSource, type SafetyConfig, type SafetyEvent, type SafetyStatus } from './safety.ts';
import {
  DEFAULT_SWEEP_RUNNER_OPTIONS,
  resolveSweepPlan,
  resolveSweepRunnerOptions,
  sweepSummary,
  SweepRunner,
  type MotionGate,
  type SweepPhase,
  type SweepPlan,
  type SweepProgress,
  type SweepRunnerOptions,
} from './trajectory.ts';

// ---------------------------------------------------------------------------------------------
// The transition table

export type AcquisitionEventName = 'start' | 'reach-start' | 'pause' | 'resume' | 'finish' | 'abort';

export const ACQUISITION_TRANSITIONS: Readonly<
  Record<AcquisitionEventName, { readonly from: readonly AcquisitionStateName[]; readonly to: AcquisitionStateName }>
> = {
  start: { from: ['idle'], to: 'positioning' },
  'reach-start': { from: ['positioning'], to: 'scanning' },
  pause: { from: ['scanning'], to: 'paused' },
  resume: { from: ['paused'], to: 'scanning' },
  finish: { from: ['scanning'], to: 'completed' },
  abort: { from: ['positioning', 'scanning', 'paused'], to: 'aborted' },
};

/** The state `event` leads to from `from`, or null when the table does not allow it. */
export function nextAcquisitionState(from: AcquisitionStateName, event: AcquisitionEventName): AcquisitionStateName | null {
  const t = ACQUISITION_TRANSITIONS[event];
  return t.from.includes(from) ? t.to : null;
}

/** A DICOM UID from a random UUID (PS3.5 B.2): `2.25.` + the UUID as one decimal integer. */
export function newAcquisitionUid(): string {
  const hex = crypto.randomUUID().replace(/-/g, '');
  return `2.25.${BigInt(`0x${hex}`).toString(10)}`;
}

/** Which abort reason an error that ended the sweep stands for. */
export function abortReasonForError(code: ErrorCode): AbortReason {
  switch (code) {
    case 'ECO3D_ERR_ESTOP_LATCHED':
      return 'estop';
    case 'ECO3D_ERR_LINK_LOST':
    case 'ECO3D_ERR_TIMEOUT':
    case 'ECO3D_ERR_CLOSED':
      return 'link-lost';
    case 'ECO3D_ERR_DEADMAN':
      // The operator stopped answering: the operator's session ended the scan.
      return 'operator';
    default:
      return 'fault';
  }
}

// ---------------------------------------------------------------------------------------------
// Public types

/** Persists transitions. Must be idempotent per (acquisitionUid, event, from): failed calls are retried. */
export interface AcquisitionRecorder {
  record(t: AcquisitionTransition): Promise<void>;
}

/** pino-compatible. */
export interface AcquisitionLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AcquisitionPlan {
  readonly tenantId: string;
  readonly deviceId: string;
  readonly sweep: SweepPlan;
}

export type AcquisitionResult =
  | {
      readonly outcome: 'completed';
      readonly acquisitionUid: string;
      readonly framesAcquired?: number;
      /** False when the terminal transition could not be recorded (see snapshot.error). */
      readonly persisted: boolean;
    }
  | {
      readonly outcome: 'aborted';
      readonly acquisitionUid: string;
      readonly reason: AbortReason;
      readonly detail: string;
      readonly persisted: boolean;
    };

export interface AcquisitionSnapshot {
  readonly state: AcquisitionStateName;
  readonly acquisitionUid: string | null;
  readonly sweepPhase: SweepPhase | null;
  /** Set once the run is over (robot stop sent, terminal transition recorded or failed). */
  readonly result: AcquisitionResult | null;
  /** The last recorder failure of this run, for the console. */
  readonly error: { readonly code: ErrorCode; readonly message: string } | null;
}

export interface AcquisitionProgress extends SweepProgress {
  readonly acquisitionUid: string;
}

/** What the acquisition needs of the SafetySupervisor. */
export interface AcquisitionSafety extends MotionGate {
  readonly status$: Observable<SafetyStatus>;
  readonly events$: Observable<SafetyEvent>;
  /** When present, the sweep's speed clamps are taken from it (the gate's own limits). */
  readonly config?: Pick<SafetyConfig, 'maxSpeedMmPerS' | 'maxAngularSpeedRadPerS'>;
}

export interface AcquisitionControllerDeps {
  readonly driver: Pick<RobotDriver, 'state$' | 'link$'>;
  readonly safety: AcquisitionSafety;
  readonly recorder: AcquisitionRecorder;
  readonly logger?: AcquisitionLogger;
  /** Called synchronously on every transition (after the state changed, before it is recorded). */
  readonly onTransition?: (t: AcquisitionTransition) => void;
  /** Wall clock for transition timestamps. Default Date.now. */
  readonly wallClock?: () => number;
  readonly newUid?: () => string;
  readonly runner?: Partial<SweepRunnerOptions>;
  /** Frames the streamer synchronised for this acquisition, read on the terminal transition. */
  readonly framesAcquired?: (acquisitionUid: string) => number;
  /** Per recorder call. Default 5000 ms. */
  readonly recorderTimeoutMs?: number;
  /** Recorder attempts per transition (the recorder is idempotent). Default 3. */
  readonly recorderAttempts?: number;
  /** Delay before retry n is n × this. Default 200 ms. */
  readonly recorderRetryDelayMs?: number;
}

const SYSTEM_ACTOR = 'system';
const SYSTEM_SOURCE: CommandSource = { role: 'system', actor: 'acquisition' };

interface Run {
  readonly uid: string;
  readonly plan: AcquisitionPlan;
  readonly summary: SweepSummary;
  readonly source: CommandSource;
  state: AcquisitionStateName;
  readonly abortController: AbortController;
  readonly runner: SweepRunner;
  /** Settles (never rejects) when the runner has returned and sent its stop. */
  runnerSettled: Promise<void>;
  /** Tail of the ordered recorder queue; never rejects. */
  recordTail: Promise<void>;
  readonly subscriptions: Subscription[];
  result: AcquisitionResult | null;
  error: Eco3dError | null;
  /** The terminal part (stop + record) in progress. */
  finishing: Promise<AcquisitionResult> | null;
  readonly done: Promise<AcquisitionResult>;
  resolveDone: (r: AcquisitionResult) => void;
}

const IDLE_SNAPSHOT: AcquisitionSnapshot = { state: 'idle', acquisitionUid: null, sweepPhase: null, result: null, error: null };

export class AcquisitionController {
  private readonly deps: AcquisitionControllerDeps;
  private readonly wallClock: () => number;
  private readonly newUid: () => string;
  private readonly recorderTimeoutMs: number;
  private readonly recorderAttempts: number;
  private readonly recorderRetryDelayMs: number;
  private readonly runnerOptions: Partial<SweepRunnerOptions>;
  private readonly snapshotSubject = new BehaviorSubject<AcquisitionSnapshot>(IDLE_SNAPSHOT);
  private readonly progressSubject = new Subject<AcquisitionProgress>();
  private readonly statusSub: Subscription;
  private safetyStatus: SafetyStatus | null = null;
  private run: Run | null = null;
  private starting: Promise<unknown> | null = null;
  private closed = false;

  /** The current acquisition's state; replays the latest. */
  readonly state$: Observable<AcquisitionSnapshot> = this.snapshotSubject.asObservable();
  /** Sweep progress of the current acquisition (every control tick). */
  readonly progress$: Observable<AcquisitionProgress> = this.progressSubject.asObservable();

  constructor(deps: AcquisitionControllerDeps) {
    this.deps = deps;
    this.wallClock = deps.wallClock ?? Date.now;
    this.newUid = deps.newUid ?? newAcquisitionUid;
    this.recorderTimeoutMs = deps.recorderTimeoutMs ?? 5000;
    this.recorderAttempts = Math.max(1, deps.recorderAttempts ?? 3);
    this.recorderRetryDelayMs = deps.recorderRetryDelayMs ?? 200;
    // The sweep clamps its jogs to the gate's own limits, so a plan the gate would refuse
    // mid-sweep is refused up front instead.
    const limits = deps.safety.config;
    const d = DEFAULT_SWEEP_RUNNER_OPTIONS;
    this.runnerOptions =
      limits === undefined
        ? { ...deps.runner }
        : {
            maxLinearSpeedMmPerS: limits.maxSpeedMmPerS,
            maxAngularSpeedRadPerS: limits.maxAngularSpeedRadPerS,
            approachSpeedMmPerS: Math.min(d.approachSpeedMmPerS, limits.maxSpeedMmPerS),
            liftSpeedMmPerS: Math.min(d.liftSpeedMmPerS, limits.maxSpeedMmPerS),
            ...deps.runner,
          };
    this.statusSub = deps.safety.status$.subscribe((s) => {
      this.safetyStatus = s;
    });
  }

  get snapshot(): AcquisitionSnapshot {
    return this.snapshotSubject.getValue();
  }

  /** The plan of the current (or last) acquisition, or null before the first. */
  get plan(): AcquisitionPlan | null {
    return this.run?.plan ?? null;
  }

  /**
   * Starts an acquisition. Resolves with its UID once the `start` transition is recorded and the
   * sweep has begun; the sweep goes on in the background (watch state$, or whenDone()).
   */
  async start(plan: AcquisitionPlan, source: CommandSource): Promise<string> {
    if (this.closed) throw new Eco3dError('ECO3D_ERR_CLOSED', 'the acquisition controller is closed');
    if (this.starting !== null || (this.run !== null && !isTerminalAcquisitionState(this.run.state))) {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot start: an acquisition is ${this.run?.state ?? 'starting'}`);
    }
    if (typeof plan.tenantId !== 'string' || plan.tenantId === '' || typeof plan.deviceId !== 'string' || plan.deviceId === '') {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'acquisition plan needs tenantId and deviceId');
    }
    // Throws on a bad plan before anything is recorded.
    resolveSweepPlan(plan.sweep, resolveSweepRunnerOptions(this.runnerOptions));
    this.preflight();
    const uid = this.newUid();
    const summary = sweepSummary(plan.sweep);
    const t: AcquisitionTransition = {
      acquisitionUid: uid,
      tenantId: plan.tenantId,
      deviceId: plan.deviceId,
      from: 'idle',
      to: 'positioning',
      event: 'start',
      atMs: this.wallClock(),
      actor: source.actor,
      sweep: summary,
    };
    // Record first: an acquisition the store does not know of must never move the robot.
    const recording = this.persist(t);
    this.starting = recording;
    try {
      await recording;
    } catch (err) {
      const e = toEco3dError(err);
      this.log('error', { acquisitionUid: uid, code: e.code, err: e.message }, 'acquisition start could not be recorded; the robot did not move');
      throw new Eco3dError(e.code, `the acquisition could not be recorded, so it did not start: ${e.message}`, { cause: e });
    } finally {
      this.starting = null;
    }
    if (this.closed) {
      // Closed while the start was being recorded: record the abort, never move.
      const run = this.createRun(uid, plan, summary, source);
      this.run = run;
      this.announce(run, t);
      this.abortRun(run, 'operator', SYSTEM_ACTOR, 'acquisition controller closed');
      return uid;
    }
    const run = this.createRun(uid, plan, summary, source);
    this.run = run;
    this.announce(run, t);
    // watch() may abort at once: the driver replays a fault or a down link.
    this.watch(run);
    // An e-stop or link loss that happened while the start was being recorded.
    const status = this.safetyStatus;
    if (!isTerminalAcquisitionState(run.state) && status !== null && (status.estopLatched || !status.linkUp)) {
      this.abortRun(run, status.estopLatched ? 'estop' : 'link-lost', SYSTEM_ACTOR, 'safety state changed while starting');
    }
    if (isTerminalAcquisitionState(run.state)) return uid; // never moved
    run.runnerSettled = run.runner
      .run(plan.sweep, source, {
        signal: run.abortController.signal,
        onPhase: (phase, prev) => this.onRunnerPhase(run, phase, prev),
        onProgress: (p) => {
          if (!this.progressSubject.closed) this.progressSubject.next({ ...p, acquisitionUid: uid });
        },
      })
      .then(
        () => this.onRunnerCompleted(run),
        (err: unknown) => this.onRunnerFailed(run, err),
      )
      .catch((err: unknown) => {
        // A bug in the handlers above: still end the run in a known state.
        this.log('error', { acquisitionUid: uid, err: toEco3dError(err).message }, 'internal error ending the sweep');
        this.abortRun(run, 'fault', SYSTEM_ACTOR, `internal error: ${toEco3dError(err).message}`);
      });
    return uid;
  }

  /** scanning → paused: the probe holds position and contact force. */
  async pause(source: CommandSource): Promise<void> {
    const run = this.requireTransition('pause');
    try {
      run.runner.pause();
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot pause now: ${toEco3dError(err).message}`, { cause: err });
    }
    await this.transitionAndPersist(run, 'pause', source.actor, {});
  }

  /** paused → scanning. */
  async resume(source: CommandSource): Promise<void> {
    const run = this.requireTransition('resume');
    try {
      run.runner.resume();
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot resume now: ${toEco3dError(err).message}`, { cause: err });
    }
    await this.transitionAndPersist(run, 'resume', source.actor, {});
  }

  /**
   * Aborts the acquisition in progress. Resolves once the robot has been sent a stop and the
   * abort is recorded; rejects (with the state already `aborted`) when the recorder failed.
   */
  async abort(source: CommandSource, reason: AbortReason = 'operator', detail?: string): Promise<AcquisitionResult> {
    if (this.starting !== null) {
      // Let the start finish (or fail: its caller gets that error), then abort what it started.
      await this.starting.catch(() => undefined);
    }
    const run = this.requireTransition('abort');
    this.abortRun(run, reason, source.actor, detail ?? `aborted by ${source.role} ${source.actor}`);
    const result = await run.done;
    if (run.error !== null) throw run.error;
    return result;
  }

  /** The current (or last) acquisition's result, once it is over. */
  whenDone(): Promise<AcquisitionResult> {
    if (this.run === null) return Promise.reject(new Eco3dError('ECO3D_ERR_NOT_FOUND', 'no acquisition has been started'));
    return this.run.done;
  }

  /** Idempotent: aborts an acquisition in progress (robot stopped) and completes the streams. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.starting !== null) await this.starting.catch(() => undefined); // its caller sees the error
    const run = this.run;
    if (run !== null) {
      if (!isTerminalAcquisitionState(run.state)) this.abortRun(run, 'operator', SYSTEM_ACTOR, 'acquisition controller closed');
      await run.done;
    }
    this.statusSub.unsubscribe();
    this.snapshotSubject.complete();
    this.progressSubject.complete();
  }

  // --- internals -----------------------------------------------------------------------------

  /** Refuses a start the safety gate would refuse anyway, with the gate's own code. */
  private preflight(): void {
    const s = this.safetyStatus;
    if (s === null) throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', 'the safety supervisor has not reported yet');
    if (s.estopLatched) throw new Eco3dError('ECO3D_ERR_ESTOP_LATCHED', 'cannot start: the e-stop is latched');
    if (!s.linkUp) throw new Eco3dError('ECO3D_ERR_LINK_LOST', 'cannot start: the link to the robot is down');
    if (!s.motionAllowed) {
      const why = s.problems.map((p) => p.message).join('; ');
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot start: motion is not allowed${why === '' ? '' : ` (${why})`}`);
    }
  }

  private createRun(uid: string, plan: AcquisitionPlan, summary: SweepSummary, source: CommandSource): Run {
    let resolveDone!: (r: AcquisitionResult) => void;
    const done = new Promise<AcquisitionResult>((r) => {
      resolveDone = r;
    });
    return {
      uid,
      plan,
      summary,
      source,
      state: 'positioning',
      abortController: new AbortController(),
      runner: new SweepRunner(this.deps.safety, this.deps.driver.state$, this.runnerOptions),
      runnerSettled: Promise.resolve(),
      recordTail: Promise.resolve(),
      subscriptions: [],
      result: null,
      error: null,
      finishing: null,
      done,
      resolveDone,
    };
  }

  private requireTransition(event: AcquisitionEventName): Run {
    const run = this.run;
    const from = run?.state ?? 'idle';
    if (run === null || nextAcquisitionState(from, event) === null) {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot ${event}: the acquisition is ${from}`, { details: { state: from, event } });
    }
    return run;
  }

  /** Applies a transition in memory (synchronously), then logs and announces it. */
  private apply(
    run: Run,
    event: AcquisitionEventName,
    actor: string,
    extra: Partial<Pick<AcquisitionTransition, 'abortReason' | 'detail' | 'framesAcquired'>>,
  ): AcquisitionTransition {
    const to = nextAcquisitionState(run.state, event);
    if (to === null) throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `cannot ${event}: the acquisition is ${run.state}`);
    const t: AcquisitionTransition = {
      acquisitionUid: run.uid,
      tenantId: run.plan.tenantId,
      deviceId: run.plan.deviceId,
      from: run.state,
      to,
      event,
      atMs: this.wallClock(),
      actor,
      ...extra,
    };
    run.state = to;
    this.announce(run, t);
    return t;
  }

  private announce(run: Run, t: AcquisitionTransition): void {
    this.log('info', { ...t }, `acquisition ${t.event}: ${t.from} → ${t.to}`);
    if (this.deps.onTransition !== undefined) {
      try {
        this.deps.onTransition(t);
      } catch (err) {
        this.log('warn', { err: toEco3dError(err).message }, 'onTransition listener threw');
      }
    }
    this.publish(run);
  }

  private async transitionAndPersist(
    run: Run,
    event: AcquisitionEventName,
    actor: string,
    extra: Partial<Pick<AcquisitionTransition, 'abortReason' | 'detail' | 'framesAcquired'>>,
  ): Promise<void> {
    const t = this.apply(run, event, actor, extra);
    try {
      await this.persistInOrder(run, t);
    } catch (err) {
      const e = this.recorderFailed(run, err);
      // An unrecorded acquisition must not go on moving the robot.
      this.abortRun(run, 'fault', SYSTEM_ACTOR, `recorder failed: ${e.message}`);
      throw e;
    }
  }

  private recorderFailed(run: Run, err: unknown): Eco3dError {
    const e = toEco3dError(err);
    run.error = e;
    this.log('error', { acquisitionUid: run.uid, code: e.code, err: e.message }, 'acquisition transition could not be recorded');
    this.publish(run);
    return e;
  }

  /** Records transitions one after the other, in the order they happened. */
  private persistInOrder(run: Run, t: AcquisitionTransition): Promise<void> {
    const p = run.recordTail.then(() => this.persist(t));
    // The tail only orders the queue; `p`'s failure is handled by whoever asked for it.
    run.recordTail = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  private async persist(t: AcquisitionTransition): Promise<void> {
    let last: unknown = null;
    for (let attempt = 1; attempt <= this.recorderAttempts; attempt++) {
      if (attempt > 1) await new Promise<void>((r) => setTimeout(r, this.recorderRetryDelayMs * (attempt - 1)));
      try {
        let p: Promise<void>;
        try {
          p = this.deps.recorder.record(t);
        } catch (err) {
          p = Promise.reject(toEco3dError(err));
        }
        await withTimeout(p, this.recorderTimeoutMs, 'acquisition recorder');
        return;
      } catch (err) {
        last = err;
        this.log('warn', { acquisitionUid: t.acquisitionUid, event: t.event, attempt, err: toEco3dError(err).message }, 'recorder attempt failed');
      }
    }
    throw toEco3dError(last);
  }

  /**
   * The single way a run ends early: state → aborted at once (synchronously), the runner is
   * cancelled (it sends a stop), the abort is recorded, and `done` resolves when all of that is
   * over. Safe to call from inside a SafetySupervisor event callback: nothing here touches the
   * driver synchronously.
   */
  private abortRun(run: Run, reason: AbortReason, actor: string, detail: string): void {
    if (isTerminalAcquisitionState(run.state)) return;
    const framesAcquired = this.framesOf(run);
    const t = this.apply(run, 'abort', actor, { abortReason: reason, detail, ...(framesAcquired === undefined ? {} : { framesAcquired }) });
    run.abortController.abort(new Eco3dError('ECO3D_ERR_CONFLICT', `acquisition aborted (${reason}): ${detail}`));
    this.finish(run, t, { outcome: 'aborted', acquisitionUid: run.uid, reason, detail, persisted: false });
  }

  private finish(run: Run, t: AcquisitionTransition, result: AcquisitionResult): void {
    const recorded = this.persistInOrder(run, t).then(
      () => true,
      (err: unknown) => {
        this.recorderFailed(run, err);
        return false;
      },
    );
    const stopped = run.runnerSettled.then(() => this.ensureStopped(run));
    run.finishing = Promise.all([recorded, stopped]).then(([persisted]) => {
      for (const s of run.subscriptions) s.unsubscribe();
      run.subscriptions.length = 0;
      const final: AcquisitionResult = { ...result, persisted };
      run.result = final;
      this.publish(run);
      run.resolveDone(final);
      return final;
    });
    void run.finishing;
  }

  /** One last stop after the runner's own: the run must end with a stopped robot. */
  private async ensureStopped(run: Run): Promise<void> {
    try {
      await this.deps.safety.stop(SYSTEM_SOURCE, `acquisition ${run.state}`);
    } catch (err) {
      // With the link down this fails; the robot's jog watchdog has stopped it, and the
      // supervisor re-stops it when the link returns.
      this.log('warn', { acquisitionUid: run.uid, err: toEco3dError(err).message }, 'final stop not acknowledged');
    }
  }

  private framesOf(run: Run): number | undefined {
    if (this.deps.framesAcquired === undefined) return undefined;
    try {
      return this.deps.framesAcquired(run.uid);
    } catch {
      return undefined;
    }
  }

  private onRunnerPhase(run: Run, phase: SweepPhase, _prev: SweepPhase | null): void {
    if (phase === 'sweep' && run.state === 'positioning') {
      void this.transitionAndPersist(run, 'reach-start', SYSTEM_ACTOR, {}).catch(() => undefined /* handled: run aborted, error on state$ */);
      return;
    }
    this.publish(run);
  }

  private onRunnerCompleted(run: Run): void {
    switch (run.state) {
      case 'scanning': {
        const framesAcquired = this.framesOf(run);
        const t = this.apply(run, 'finish', SYSTEM_ACTOR, framesAcquired === undefined ? {} : { framesAcquired });
        this.finish(run, t, {
          outcome: 'completed',
          acquisitionUid: run.uid,
          ...(framesAcquired === undefined ? {} : { framesAcquired }),
          persisted: false,
        });
        return;
      }
      case 'completed':
      case 'aborted':
        return; // already ended (an abort raced the last tick)
      case 'idle':
      case 'positioning':
      case 'paused':
        this.abortRun(run, 'fault', SYSTEM_ACTOR, `the sweep ended while ${run.state}`);
        return;
    }
  }

  private onRunnerFailed(run: Run, err: unknown): void {
    if (isTerminalAcquisitionState(run.state)) return; // the abort signal we sent ourselves
    const e = toEco3dError(err);
    this.abortRun(run, abortReasonForError(e.code), SYSTEM_ACTOR, e.message);
  }

  /** Link loss, faults, e-stops, force limit, deadman: each aborts the run with its reason. */
  private watch(run: Run): void {
    const { driver, safety } = this.deps;
    run.subscriptions.push(
      driver.link$.subscribe((l) => {
        if (!l.up) this.abortRun(run, 'link-lost', SYSTEM_ACTOR, `link to the robot lost: ${l.reason}`);
      }),
      driver.state$.subscribe((s) => {
        if (s.mode === 'estopped') this.abortRun(run, 'estop', SYSTEM_ACTOR, 'the robot reports an e-stop');
        else if (s.faults.length > 0) this.abortRun(run, 'fault', SYSTEM_ACTOR, `robot fault: ${s.faults.join(', ')}`);
      }),
      safety.events$.subscribe((e) => this.onSafetyEvent(run, e)),
    );
  }

  private onSafetyEvent(run: Run, e: SafetyEvent): void {
    switch (e.type) {
      case 'estop':
        this.abortRun(run, 'estop', SYSTEM_ACTOR, `e-stop by ${e.by}`);
        return;
      case 'force-limit':
        this.abortRun(run, 'fault', SYSTEM_ACTOR, `contact force ${e.forceN.toFixed(1)} N above the ${e.limitN} N limit`);
        return;
      case 'deadman-stop':
        this.abortRun(run, 'operator', SYSTEM_ACTOR, `deadman: no heartbeat from ${e.actor} for ${Math.round(e.latencyMs)} ms`);
        return;
      case 'sensor-dropout':
        this.abortRun(run, 'fault', SYSTEM_ACTOR, 'the force sensor stopped reporting');
        return;
      case 'link':
        if (!e.up) this.abortRun(run, 'link-lost', SYSTEM_ACTOR, `link to the robot lost: ${e.reason}`);
        return;
      case 'refused':
      case 'estop-reset':
      case 'stop':
      case 'retract-done':
      case 'faults':
      case 'send-failed':
        return;
    }
  }

  private publish(run: Run): void {
    if (this.snapshotSubject.closed || this.run !== run) return;
    this.snapshotSubject.next({
      state: run.state,
      acquisitionUid: run.uid,
      sweepPhase: run.runner.phase,
      result: run.result,
      error: run.error === null ? null : { code: run.error.code, message: run.error.message },
    });
  }

  private log(level: 'info' | 'warn' | 'error', obj: object, msg: string): void {
    const logger = this.deps.logger;
    if (logger === undefined) return;
    try {
      logger[level](obj, msg);
    } catch {
      // Logging must never break the state machine.
    }
  }
}

// The tele-operation session of one robot: who holds control, what each message does, and the
// status every connected UI sees. Transport-free: server/teleop-ws.ts carries it over WebSockets.
//
// Rules (ARCHITECTURE.md, Safety):
// - One operator at a time holds the control lock; the others watch. Jog, move and sweep
//   commands from the operator channel need the lock. `stop` never does: stopping is always safe.
// - The bedside channel needs no lock: staff at the bedside are the physical authority. Its
//   e-stop latches at once, and only the bedside can reset it.
// - Manual motion (jog, move-to, home) is refused while an acquisition is running.
// - When the holder leaves, the lock is released and any manual motion of theirs is stopped.
// - Only `heartbeat` feeds the deadman. A motion command is not a heartbeat: a UI stuck sending
//   jogs must still be stopped when the person stops holding the deadman.
import { BehaviorSubject, combineLatest, type Subscription } from 'rxjs';
import {
  Eco3dError,
  HOME_POSE,
  isTerminalAcquisitionState,
  torsoSkinHeightMm,
  type BedsideMessage,
  type LinkStatus,
  type OperatorMessage,
  type RobotDriver,
  type RobotState,
  type SweepRequest,
  type TeleopChannel,
  type TeleopProblem,
  type TeleopStatus,
  type Vec3,
} from '../protocols/index.ts';
import type { AcquisitionController, AcquisitionProgress, AcquisitionSnapshot } from './acquisition.ts';
import type { CommandSource, SafetyStatus, SafetySupervisor } from './safety.ts';
import type { SweepPlan } from './trajectory.ts';

export interface TeleopParticipant {
  /** Unique per connection. */
  readonly connId: string;
  /** Account username, shown to others as the control holder. */
  readonly actor: string;
  readonly channel: TeleopChannel;
}

export interface TeleopAuditEntry {
  readonly actor: string;
  readonly action: string;
  readonly detail?: Record<string, unknown>;
}

export interface TeleopSessionDeps {
  readonly driver: Pick<RobotDriver, 'state$' | 'link$'>;
  readonly safety: SafetySupervisor;
  readonly acquisition: AcquisitionController;
  readonly tenantId: string;
  readonly deviceId: string;
  /** Every control action goes to the audit log. Must not throw; failures are the callee's to log. */
  readonly audit: (e: TeleopAuditEntry) => void;
  readonly now?: () => number;
  /** Speed of `home` moves. */
  readonly homeSpeedMmPerS?: number;
}

type Holder = { readonly connId: string; readonly actor: string } | null;

export class TeleopSession {
  private readonly deps: TeleopSessionDeps;
  private readonly holder$ = new BehaviorSubject<Holder>(null);
  private readonly progress$ = new BehaviorSubject<AcquisitionProgress | null>(null);
  private readonly subs: Subscription[] = [];
  private readonly now: () => number;
  /** connId of the participant whose manual jog may be in progress. */
  private jogging: string | null = null;
  /** The latest of every part of the status; composed only when asked (30 Hz), not per state (250 Hz). */
  private inputs: readonly [RobotState, LinkStatus, SafetyStatus, AcquisitionSnapshot, Holder, AcquisitionProgress | null] | null = null;

  constructor(deps: TeleopSessionDeps) {
    this.deps = deps;
    this.now = deps.now ?? Date.now;
    this.subs.push(deps.acquisition.progress$.subscribe((p) => this.progress$.next(p)));
    this.subs.push(
      deps.acquisition.state$.subscribe((s) => {
        if (s.acquisitionUid !== this.progress$.getValue()?.acquisitionUid) this.progress$.next(null);
      }),
    );
    this.subs.push(
      combineLatest([deps.driver.state$, deps.driver.link$, deps.safety.status$, deps.acquisition.state$, this.holder$, this.progress$]).subscribe(
        (i) => (this.inputs = i),
      ),
    );
  }

  /** The current status: the broadcast (30 Hz) and polling clients (`GET /api/robot`). */
  status(): TeleopStatus {
    return this.inputs === null ? emptyStatus(this.now()) : this.compose(...this.inputs);
  }

  get controlHolder(): string | null {
    return this.holder$.getValue()?.actor ?? null;
  }

  /** Handles one message. Throws Eco3dError with a stable code; a refused message changes nothing. */
  async handle(p: TeleopParticipant, msg: OperatorMessage | BedsideMessage): Promise<void> {
    if (p.channel === 'bedside') return this.handleBedside(p, msg as BedsideMessage);
    return this.handleOperator(p, msg as OperatorMessage);
  }

  /** A participant's connection closed. */
  async leave(p: TeleopParticipant): Promise<void> {
    const h = this.holder$.getValue();
    if (h?.connId !== p.connId) return;
    this.holder$.next(null);
    this.deps.audit({ actor: p.actor, action: 'control-release', detail: { why: 'disconnected' } });
    if (this.jogging === p.connId) {
      this.jogging = null;
      await this.deps.safety.stop(this.source(p), 'operator disconnected');
    }
  }

  close(): void {
    for (const s of this.subs) s.unsubscribe();
    this.holder$.complete();
    this.progress$.complete();
  }

  private async handleOperator(p: TeleopParticipant, msg: OperatorMessage): Promise<void> {
    const src = this.source(p);
    switch (msg.type) {
      case 'heartbeat':
        if (this.isHolder(p)) this.deps.safety.heartbeat(src);
        return;
      case 'acquire-control': {
        const h = this.holder$.getValue();
        if (h !== null && h.connId !== p.connId) {
          throw new Eco3dError('ECO3D_ERR_NOT_IN_CONTROL', `${h.actor} holds control; they must release it first`);
        }
        if (h === null) {
          this.holder$.next({ connId: p.connId, actor: p.actor });
          this.deps.audit({ actor: p.actor, action: 'control-acquire' });
        }
        return;
      }
      case 'release-control':
        this.requireHolder(p);
        this.holder$.next(null);
        this.deps.audit({ actor: p.actor, action: 'control-release' });
        if (this.jogging === p.connId) {
          this.jogging = null;
          await this.deps.safety.stop(src, 'control released');
        }
        return;
      case 'stop':
        this.jogging = null;
        this.deps.audit({ actor: p.actor, action: 'stop', detail: { channel: 'operator' } });
        await this.deps.safety.stop(src, `stop by operator ${p.actor}`);
        return;
      case 'jog':
        this.requireHolder(p);
        this.requireNoAcquisition();
        // Jogs arrive at 10–30 Hz: audit the start of a jog, not every refresh.
        if (this.jogging !== p.connId) this.deps.audit({ actor: p.actor, action: 'jog', detail: { linearMmPerS: msg.linearMmPerS } });
        await this.deps.safety.command({ kind: 'jog', linearMmPerS: msg.linearMmPerS, angularRadPerS: msg.angularRadPerS }, src);
        this.jogging = p.connId;
        return;
      case 'move-to':
        this.requireHolder(p);
        this.requireNoAcquisition();
        this.deps.audit({ actor: p.actor, action: 'move-to', detail: { pose: msg.pose, speedMmPerS: msg.speedMmPerS } });
        await this.deps.safety.command({ kind: 'cartesian-target', pose: msg.pose, speedMmPerS: msg.speedMmPerS }, src);
        return;
      case 'home':
        this.requireHolder(p);
        this.requireNoAcquisition();
        this.deps.audit({ actor: p.actor, action: 'home' });
        await this.deps.safety.command({ kind: 'cartesian-target', pose: HOME_POSE, speedMmPerS: this.deps.homeSpeedMmPerS ?? 30 }, src);
        return;
      case 'sweep-start':
        this.requireHolder(p);
        await this.startSweep(p, msg.plan);
        return;
      case 'sweep-pause':
        this.requireHolder(p);
        this.deps.audit({ actor: p.actor, action: 'sweep-pause' });
        await this.deps.acquisition.pause(src);
        return;
      case 'sweep-resume':
        this.requireHolder(p);
        this.deps.audit({ actor: p.actor, action: 'sweep-resume' });
        await this.deps.acquisition.resume(src);
        return;
      case 'sweep-abort':
        this.requireHolder(p);
        this.deps.audit({ actor: p.actor, action: 'sweep-abort' });
        await this.deps.acquisition.abort(src, 'operator');
        return;
    }
  }

  private async handleBedside(p: TeleopParticipant, msg: BedsideMessage): Promise<void> {
    const src = this.source(p);
    switch (msg.type) {
      case 'estop':
        // Latch first (the supervisor does so synchronously), audit after: the e-stop never waits.
        try {
          await this.deps.safety.estop(src);
        } finally {
          this.jogging = null;
          this.deps.audit({ actor: p.actor, action: 'estop' });
        }
        return;
      case 'estop-reset':
        this.deps.audit({ actor: p.actor, action: 'estop-reset' });
        await this.deps.safety.resetEstop(src);
        return;
      case 'stop':
        this.jogging = null;
        this.deps.audit({ actor: p.actor, action: 'stop', detail: { channel: 'bedside' } });
        await this.deps.safety.stop(src, `stop by bedside ${p.actor}`);
        return;
      case 'sweep-start':
        await this.startSweep(p, msg.plan);
        return;
      case 'sweep-pause':
        this.deps.audit({ actor: p.actor, action: 'sweep-pause', detail: { channel: 'bedside' } });
        await this.deps.acquisition.pause(src);
        return;
      case 'sweep-resume':
        this.deps.audit({ actor: p.actor, action: 'sweep-resume', detail: { channel: 'bedside' } });
        await this.deps.acquisition.resume(src);
        return;
      case 'sweep-abort':
        this.deps.audit({ actor: p.actor, action: 'sweep-abort', detail: { channel: 'bedside' } });
        await this.deps.acquisition.abort(src, 'operator', `aborted at the bedside by ${p.actor}`);
        return;
    }
  }

  private async startSweep(p: TeleopParticipant, req: SweepRequest): Promise<void> {
    const sweep = sweepPlanFromRequest(req);
    this.deps.audit({ actor: p.actor, action: 'sweep-start', detail: { channel: p.channel, plan: req } });
    this.jogging = null;
    await this.deps.acquisition.start({ tenantId: this.deps.tenantId, deviceId: this.deps.deviceId, sweep }, this.source(p));
  }

  private source(p: TeleopParticipant): CommandSource {
    return { role: p.channel === 'bedside' ? 'bedside' : 'operator', actor: p.actor };
  }

  private isHolder(p: TeleopParticipant): boolean {
    return this.holder$.getValue()?.connId === p.connId;
  }

  private requireHolder(p: TeleopParticipant): void {
    if (this.isHolder(p)) return;
    const h = this.holder$.getValue();
    throw new Eco3dError(
      'ECO3D_ERR_NOT_IN_CONTROL',
      h === null ? 'take control first (acquire-control)' : `${h.actor} holds control`,
    );
  }

  private requireNoAcquisition(): void {
    const s = this.deps.acquisition.snapshot.state;
    if (s !== 'idle' && !isTerminalAcquisitionState(s)) {
      throw new Eco3dError('ECO3D_ERR_ROBOT_BUSY', `an acquisition is ${s}: pause or abort it before moving the robot by hand`);
    }
  }

  private compose(
    robot: RobotState,
    link: LinkStatus,
    safety: SafetyStatus,
    acq: AcquisitionSnapshot,
    holder: Holder,
    progress: AcquisitionProgress | null,
  ): TeleopStatus {
    const problems: TeleopProblem[] = safety.problems.map((pr) => ({
      id: pr.id,
      severity: pr.severity,
      message: pr.message,
      sinceMs: pr.sinceMs,
      ...(pr.code === undefined ? {} : { code: pr.code }),
    }));
    if (acq.error !== null) {
      problems.push({ id: 'acquisition-record', severity: 'error', code: acq.error.code, message: acq.error.message, sinceMs: this.now() });
    }
    const abortReason = acq.result?.outcome === 'aborted' ? acq.result.reason : undefined;
    return {
      atMs: this.now(),
      link: { up: link.up, reason: link.reason },
      robot,
      forceN: safety.forceN,
      estopLatched: safety.estopLatched,
      control: { holder: holder?.actor ?? null },
      acquisition: {
        uid: acq.acquisitionUid,
        state: acq.state,
        ...(abortReason === undefined ? {} : { abortReason }),
        ...(progress === null ? {} : { progress: progress.fraction }),
      },
      problems,
    };
  }
}

function emptyStatus(atMs: number): TeleopStatus {
  return {
    atMs,
    link: { up: false, reason: 'connecting' },
    robot: null,
    forceN: null,
    estopLatched: false,
    control: { holder: null },
    acquisition: { uid: null, state: 'idle' },
    problems: [],
  };
}

const DEG = Math.PI / 180;

/**
 * Turns a sweep request from a UI (table-plane start point, heading) into a controller plan. The
 * start height is a first guess from the default patient model; the descent phase finds the real
 * skin by contact force.
 */
export function sweepPlanFromRequest(req: SweepRequest): SweepPlan {
  const zMm = torsoSkinHeightMm(req.startMm.x, req.startMm.y);
  if (zMm === null) {
    throw new Eco3dError('ECO3D_ERR_WORKSPACE', `sweep start (${req.startMm.x}, ${req.startMm.y}) mm is not over the patient`);
  }
  const start: Vec3 = { x: req.startMm.x, y: req.startMm.y, z: zMm };
  const h = req.headingDeg * DEG;
  // Heading is measured from +y (head-foot axis) toward +x.
  const direction: Vec3 = { x: Math.sin(h), y: Math.cos(h), z: 0 };
  const force = { targetForceN: req.targetForceN };
  switch (req.kind) {
    case 'linear':
      return { kind: 'linear', startMm: start, direction, lengthMm: req.lengthMm, speedMmPerS: req.speedMmPerS, tiltRad: req.tiltDeg * DEG, force };
    case 'fan': {
      const half = (req.tiltRangeDeg * DEG) / 2;
      return {
        kind: 'fan',
        contactMm: start,
        // Fan about the lateral axis, so the image plane sweeps along the heading.
        tiltAxis: { x: Math.cos(h), y: -Math.sin(h), z: 0 },
        tiltStartRad: -half,
        tiltEndRad: half,
        angularSpeedRadPerS: req.angularSpeedDegPerS * DEG,
        force,
      };
    }
  }
}

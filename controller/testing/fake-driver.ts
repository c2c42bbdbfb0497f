// A hand-written fake RobotDriver for unit tests: it records every command, lets the test push
// states and link changes, and replies to each command the way the test asks (ack, hang, or an
// Eco3dError). Time comes from Date.now(), so node:test's mock.timers (with 'Date') drives it.
import { BehaviorSubject, ReplaySubject, type Observable } from 'rxjs';
import { Eco3dError } from '../../protocols/errors.ts';
import { HOME_POSE } from '../../protocols/scene.ts';
import type {
  DriverStats,
  LinkStatus,
  RobotCommand,
  RobotCommandKind,
  RobotDriver,
  RobotState,
  Wrench,
} from '../../protocols/robot.ts';

export interface SentCommand {
  readonly cmd: RobotCommand;
  readonly timeoutMs: number | undefined;
  /** Date.now() when send() was called. */
  readonly atMs: number;
}

/** How the fake answers one command. */
export type FakeReply = 'ack' | 'hang' | Eco3dError;

export const zeroWrench = (forceZN = 0): Wrench => ({ forceN: { x: 0, y: 0, z: forceZN }, torqueNm: { x: 0, y: 0, z: 0 } });

export function makeRobotState(patch: Partial<RobotState> = {}): RobotState {
  return {
    tMs: Date.now(),
    seq: 0,
    mode: 'idle',
    jointsRad: [0, 0, 0, 0, 0, 0],
    jointVelRadPerS: [0, 0, 0, 0, 0, 0],
    tcpPose: HOME_POSE,
    wrench: zeroWrench(),
    faults: [],
    ...patch,
  };
}

export interface FakeRobotDriverOptions {
  /** Pushed at construction unless null (then state$ has nothing to replay yet). */
  readonly initialState?: Partial<RobotState> | null;
  readonly linkUp?: boolean;
}

export class FakeRobotDriver implements RobotDriver {
  readonly kind = 'sim' as const;
  readonly sent: SentCommand[] = [];
  /** Decides the reply to each command (after the link/closed checks). Default: ack. */
  reply: (cmd: RobotCommand) => FakeReply = () => 'ack';
  /** Sees every command the fake acknowledges (a plant model hooks in here). */
  onCommand: ((cmd: RobotCommand) => void) | null = null;

  private readonly stateSubject = new ReplaySubject<RobotState>(1);
  private readonly linkSubject: BehaviorSubject<LinkStatus>;
  private current: RobotState | null = null;
  private seq = 0;
  private closed = false;
  private readonly hanging = new Set<(err: Eco3dError) => void>();
  private failed = 0;

  readonly state$: Observable<RobotState> = this.stateSubject.asObservable();
  readonly link$: Observable<LinkStatus>;

  constructor(opts: FakeRobotDriverOptions = {}) {
    this.linkSubject = new BehaviorSubject<LinkStatus>({ up: opts.linkUp ?? true, atMs: Date.now(), reason: 'fake' });
    this.link$ = this.linkSubject.asObservable();
    if (opts.initialState !== null) this.pushState(opts.initialState ?? {});
  }

  get state(): RobotState | null {
    return this.current;
  }

  get linkUp(): boolean {
    return this.linkSubject.getValue().up;
  }

  /** Emits a new state: the previous one with `patch` applied, a fresh seq and tMs. */
  pushState(patch: Partial<RobotState> = {}): RobotState {
    const base = this.current ?? makeRobotState();
    const s: RobotState = { ...base, ...patch, seq: ++this.seq, tMs: Date.now() };
    this.current = s;
    this.stateSubject.next(s);
    return s;
  }

  setLink(up: boolean, reason = 'test'): void {
    if (!up) this.rejectHanging(new Eco3dError('ECO3D_ERR_LINK_LOST', `link down: ${reason}`));
    this.linkSubject.next({ up, atMs: Date.now(), reason });
  }

  kinds(): RobotCommandKind[] {
    return this.sent.map((s) => s.cmd.kind);
  }

  lastCommand(): RobotCommand | undefined {
    return this.sent.at(-1)?.cmd;
  }

  clearSent(): void {
    this.sent.length = 0;
  }

  async connect(): Promise<void> {}

  send(cmd: RobotCommand, timeoutMs?: number): Promise<void> {
    this.sent.push({ cmd, timeoutMs, atMs: Date.now() });
    if (this.closed) return this.fail(new Eco3dError('ECO3D_ERR_CLOSED', 'fake driver closed'));
    if (!this.linkUp) return this.fail(new Eco3dError('ECO3D_ERR_LINK_LOST', 'fake link down'));
    const r = this.reply(cmd);
    if (r instanceof Eco3dError) return this.fail(r);
    if (r === 'hang') {
      // Never answers until the link drops or the driver closes: the caller's timeout must act.
      return new Promise<void>((_resolve, reject) => {
        this.hanging.add(reject);
      });
    }
    this.onCommand?.(cmd);
    return Promise.resolve();
  }

  stats(): DriverStats {
    return { statesReceived: this.seq, commandsSent: this.sent.length, commandsFailed: this.failed, errors: {} };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.rejectHanging(new Eco3dError('ECO3D_ERR_CLOSED', 'fake driver closed'));
    this.stateSubject.complete();
    this.linkSubject.complete();
  }

  private fail(err: Eco3dError): Promise<void> {
    this.failed++;
    return Promise.reject(err);
  }

  private rejectHanging(err: Eco3dError): void {
    for (const reject of this.hanging) reject(err);
    this.hanging.clear();
  }
}

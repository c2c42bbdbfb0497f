// The tele-operation socket client (/ws/operator, /ws/bedside; protocols/teleop.ts). The browser
// authenticates with the session cookie. Commands that matter carry an id and resolve on the
// server's `ack` (reject on its `error`); jog refreshes are fire-and-forget. The socket itself
// runs in a worker (teleop-worker.ts), which also beats the deadman heartbeat while armed, and
// reconnects by itself.
import type { z } from 'zod';
import type { bedsideMessageSchema, operatorMessageSchema, TeleopChannel, TeleopServerMessage, TeleopStatus } from '../../protocols/teleop.ts';
import { wsUrl } from './ui.ts';
import type { FromWorker, ToWorker } from './teleop-worker.ts';

type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
export type OperatorCommand = WithoutId<z.input<typeof operatorMessageSchema>>;
export type BedsideCommand = WithoutId<z.input<typeof bedsideMessageSchema>>;
export type Hello = Extract<TeleopServerMessage, { type: 'hello' }>;

export class TeleopError extends Error {
  override readonly name = 'TeleopError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Events {
  status: TeleopStatus;
  hello: Hello;
  /** An error the server sent for a message without id (a jog refresh, a heartbeat). */
  error: { code: string; message: string };
  open: undefined;
  close: { code: number; reason: string };
}

const ACK_TIMEOUT_MS = 5000;

export class TeleopSocket<C extends OperatorCommand | BedsideCommand = OperatorCommand> {
  private readonly worker: Worker;
  private open = false;
  private aliveTimer: ReturnType<typeof setInterval> | null = null;
  private nextId = 1;
  private readonly pending = new Map<string, { resolve: () => void; reject: (e: TeleopError) => void; timer: ReturnType<typeof setTimeout> }>();
  private readonly listeners = new Map<keyof Events, Set<(e: never) => void>>();
  private closed = false;
  private retryMs = 500;
  status: TeleopStatus | null = null;
  hello: Hello | null = null;

  constructor(readonly channel: TeleopChannel) {
    this.worker = new Worker(new URL('./teleop-worker.ts', import.meta.url), { type: 'module', name: `teleop-${channel}` });
    this.worker.onmessage = (e: MessageEvent<FromWorker>) => this.onWorker(e.data);
    this.connect();
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  get connected(): boolean {
    return this.open;
  }

  /**
   * Arms (or disarms) the deadman heartbeat: every 100 ms while this page is responsive. The
   * page's own 100 ms timer proves it is: the worker stops once it has been silent for 1 s.
   */
  setHeartbeat(on: boolean): void {
    if (on && this.aliveTimer === null) this.aliveTimer = setInterval(() => this.post({ op: 'alive' }), 100);
    if (!on && this.aliveTimer !== null) {
      clearInterval(this.aliveTimer);
      this.aliveTimer = null;
    }
    this.post({ op: 'heartbeat', on });
  }

  on<K extends keyof Events>(event: K, cb: (e: Events[K]) => void): () => void {
    let set = this.listeners.get(event);
    if (set === undefined) this.listeners.set(event, (set = new Set()));
    set.add(cb);
    return () => set.delete(cb);
  }

  private emit<K extends keyof Events>(event: K, e: Events[K]): void {
    for (const cb of (this.listeners.get(event) ?? []) as Set<(e: Events[K]) => void>) {
      try {
        cb(e);
      } catch (err) {
        console.error(err);
      }
    }
  }

  private connect(): void {
    if (this.closed) return;
    this.post({ op: 'connect', url: wsUrl(`/ws/${this.channel}`) });
  }

  private onWorker(w: FromWorker): void {
    if (w.ev === 'open') {
      this.open = true;
      this.retryMs = 500;
      this.emit('open', undefined);
      return;
    }
    if (w.ev === 'close') {
      this.open = false;
      for (const id of Array.from(this.pending.keys())) this.settle(id, new TeleopError('ECO3D_ERR_CLOSED', 'the connection closed before the server answered'));
      this.emit('close', { code: w.code, reason: w.reason });
      if (!this.closed) {
        setTimeout(() => this.connect(), this.retryMs);
        this.retryMs = Math.min(5000, this.retryMs * 2);
      }
      return;
    }
    {
      let m: TeleopServerMessage;
      try {
        m = JSON.parse(w.data) as TeleopServerMessage;
      } catch {
        return;
      }
      switch (m.type) {
        case 'status':
          this.status = m.status;
          this.emit('status', m.status);
          break;
        case 'hello':
          this.hello = m;
          this.emit('hello', m);
          break;
        case 'ack':
          this.settle(m.id, null);
          break;
        case 'error':
          if (m.id !== undefined && this.pending.has(m.id)) this.settle(m.id, new TeleopError(m.code, m.message));
          else this.emit('error', { code: m.code, message: m.message });
          break;
      }
    }
  }

  private settle(id: string, err: TeleopError | null): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (err === null) p.resolve();
    else p.reject(err);
  }

  /** Sends a command and resolves when the server acknowledges it. */
  command(msg: C): Promise<void> {
    if (!this.open) return Promise.reject(new TeleopError('ECO3D_ERR_CLOSED', `not connected to /ws/${this.channel}`));
    const id = String(this.nextId++);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(id, new TeleopError('ECO3D_ERR_TIMEOUT', `no answer to ${msg.type} within ${ACK_TIMEOUT_MS} ms`)), ACK_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      this.post({ op: 'send', data: JSON.stringify({ ...msg, id }) });
    });
  }

  /** Sends without waiting for an answer (jog refreshes, heartbeats). False when not connected. */
  fire(msg: C): boolean {
    if (!this.open) return false;
    this.post({ op: 'send', data: JSON.stringify(msg) });
    return true;
  }

  close(): void {
    this.closed = true;
    this.setHeartbeat(false);
    this.post({ op: 'close' });
  }
}

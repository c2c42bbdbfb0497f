// Hold-to-move tele-operation for the console: keyboard (arrows, PageUp/PageDown), the on-screen
// jog pad (pointer down/up) and a gamepad (Gamepad API: sticks → jog, a held button as deadman).
// While this page holds the control lock the deadman heartbeat is armed (every 100 ms, from the
// socket's worker; the server's deadman stops operator motion 300 ms after the last one) and a
// held jog is refreshed every 100 ms from here; releasing every input sends `stop`. The
// #deadman indicator shows off / armed (heartbeats flowing) / active (an input is held).
import type { TeleopSocket } from './teleop.ts';
import { $, setText } from './ui.ts';

type Vec = readonly [number, number, number];
type Source = 'key' | 'pad' | 'gamepad';

const TICK_MS = 100;
const KEYS: Readonly<Record<string, Vec>> = {
  ArrowLeft: [-1, 0, 0],
  ArrowRight: [1, 0, 0],
  ArrowUp: [0, 1, 0],
  ArrowDown: [0, -1, 0],
  PageUp: [0, 0, 1],
  PageDown: [0, 0, -1],
};

/** Gamepad mapping (standard layout): left stick x/y → base x/y, right stick y → z. */
export const GAMEPAD = { deadzone: 0.15, deadmanButton: 4 /* LB */, stopButton: 1 /* B */, axisX: 0, axisY: 1, axisZ: 3 } as const;

export class JogController {
  private readonly held: Record<Source, Vec | null> = { key: null, pad: null, gamepad: null };
  private readonly keysDown = new Set<string>();
  private sent: Vec | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private gamepadDeadman = false;
  private gamepadStopWas = false;
  /** This page took the lock on its current socket (another tab of the same account does not count). */
  private mine = false;

  constructor(
    private readonly sock: TeleopSocket,
    private readonly opts: { speedMmPerS: () => number; onStop: () => void },
  ) {
    this.wireKeys();
    this.wirePad();
    this.pollGamepad();
    sock.on('close', () => this.setMine(false));
    this.render();
  }

  /** Called with each status: a status naming another holder (or none) ends ours. */
  setHolder(holder: string | null, me: string): void {
    // A status already in flight when the lock was granted may still name nobody.
    if (holder !== me && performance.now() - this.mineSinceMs > 500) this.setMine(false);
  }

  private mineSinceMs = 0;

  setMine(mine: boolean): void {
    if (mine === this.mine) return;
    this.mine = mine;
    if (mine) this.mineSinceMs = performance.now();
    this.sock.setHeartbeat(mine);
    if (mine && this.timer === null) {
      this.timer = setInterval(() => this.tick(), TICK_MS);
    } else if (!mine && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
      this.releaseAll();
    }
    this.render();
  }

  get holding(): boolean {
    return this.mine;
  }

  /** Forget every held input (STOP, blur, lost control). Sends no stop itself. */
  releaseAll(): void {
    this.keysDown.clear();
    this.held.key = null;
    this.held.pad = null;
    this.held.gamepad = null;
    this.sent = null;
    this.render();
  }

  /** Refreshes a held jog (the robot stops 250 ms after the last one). */
  private tick(): void {
    if (this.mine && this.sent !== null) this.sendJog(this.sent);
  }

  private current(): Vec | null {
    return this.held.gamepad ?? this.held.pad ?? this.held.key;
  }

  /** Sends a jog at once when the held vector changes, a stop when nothing is held any more. */
  private update(): void {
    const v = this.current();
    const prev = this.sent;
    this.sent = v;
    if (v !== null && (prev === null || v.some((c, i) => c !== prev[i]))) {
      this.sendJog(v);
    } else if (v === null && prev !== null) {
      this.sock.fire({ type: 'stop' });
    }
    this.render();
  }

  private sendJog(v: Vec): void {
    const s = Math.min(50, Math.max(0.5, this.opts.speedMmPerS()));
    this.sock.fire({ type: 'jog', linearMmPerS: { x: v[0] * s, y: v[1] * s, z: v[2] * s } });
  }

  private render(): void {
    const d = document.getElementById('deadman');
    if (d === null) return;
    const state = !this.mine ? 'off' : this.sent !== null ? 'active' : 'armed';
    d.dataset.state = state;
    d.className = `deadman ${state}`;
    const via = this.held.gamepad !== null ? ' (gamepad)' : this.held.pad !== null ? ' (pad)' : this.held.key !== null ? ' (keys)' : '';
    setText('deadman-text', state === 'off' ? 'deadman off — take control to drive' : state === 'armed' ? 'deadman armed — heartbeat' : `moving${via}`);
    setText('gamepad-state', this.gamepadName === null ? 'no gamepad' : `${this.gamepadName}${this.gamepadDeadman ? ' — deadman held' : ' — hold LB to drive'}`);
  }

  // ---- keyboard -------------------------------------------------------------------------------

  private wireKeys(): void {
    const typing = (t: EventTarget | null): boolean => t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName));
    addEventListener('keydown', (e) => {
      const v = KEYS[e.key];
      if (v === undefined || typing(e.target)) return;
      e.preventDefault();
      if (e.repeat || this.keysDown.has(e.key)) return;
      this.keysDown.add(e.key);
      this.held.key = this.keyVector();
      this.update();
    });
    addEventListener('keyup', (e) => {
      if (KEYS[e.key] === undefined || !this.keysDown.delete(e.key)) return;
      this.held.key = this.keyVector();
      this.update();
    });
    const drop = (): void => {
      this.keysDown.clear();
      this.held.key = null;
      this.held.pad = null;
      this.update();
    };
    addEventListener('blur', drop);
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) drop();
    });
  }

  private keyVector(): Vec | null {
    if (this.keysDown.size === 0) return null;
    const v = [0, 0, 0];
    for (const k of this.keysDown) KEYS[k]!.forEach((c, i) => (v[i]! += c));
    return v.every((c) => c === 0) ? null : [v[0]!, v[1]!, v[2]!];
  }

  // ---- on-screen pad --------------------------------------------------------------------------

  private wirePad(): void {
    for (const b of Array.from($('jog-pad').querySelectorAll<HTMLButtonElement>('button[data-jog]'))) {
      const parts = (b.dataset.jog ?? '').split(',').map(Number);
      if (parts.length !== 3 || parts.some((n) => !Number.isFinite(n))) continue;
      const v: Vec = [parts[0]!, parts[1]!, parts[2]!];
      b.addEventListener('pointerdown', (e) => {
        e.preventDefault();
        try {
          b.setPointerCapture(e.pointerId);
        } catch {
          /* synthetic events have no capturable pointer */
        }
        b.classList.add('held');
        this.held.pad = v;
        this.update();
      });
      const end = (): void => {
        b.classList.remove('held');
        if (this.held.pad === v) {
          this.held.pad = null;
          this.update();
        }
      };
      for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture', 'pointerleave'] as const) b.addEventListener(ev, end);
      b.addEventListener('contextmenu', (e) => e.preventDefault());
    }
  }

  // ---- gamepad --------------------------------------------------------------------------------

  private gamepadName: string | null = null;

  private pollGamepad(): void {
    const poll = (): void => {
      const pads = typeof navigator.getGamepads === 'function' ? navigator.getGamepads() : [];
      const gp = Array.from(pads).find((p): p is Gamepad => p !== null && p.connected) ?? null;
      const name = gp === null ? null : gp.id.slice(0, 40);
      let changed = name !== this.gamepadName;
      this.gamepadName = name;
      let v: Vec | null = null;
      const deadman = gp !== null && (gp.buttons[GAMEPAD.deadmanButton]?.pressed ?? false);
      if (deadman !== this.gamepadDeadman) changed = true;
      this.gamepadDeadman = deadman;
      if (gp !== null) {
        const stop = gp.buttons[GAMEPAD.stopButton]?.pressed ?? false;
        if (stop && !this.gamepadStopWas) this.opts.onStop();
        this.gamepadStopWas = stop;
        if (deadman) {
          const ax = (i: number): number => {
            const a = gp.axes[i] ?? 0;
            const m = Math.abs(a);
            // Outside the deadzone, rescaled so speed starts at 0 at its edge; rounded so that
            // stick noise does not make every poll a "change".
            return m < GAMEPAD.deadzone ? 0 : Math.round(Math.sign(a) * ((m - GAMEPAD.deadzone) / (1 - GAMEPAD.deadzone)) * 20) / 20;
          };
          const x = ax(GAMEPAD.axisX);
          const y = -ax(GAMEPAD.axisY);
          const z = -ax(GAMEPAD.axisZ);
          if (x !== 0 || y !== 0 || z !== 0) v = [x, y, z];
        }
      }
      const prev = this.held.gamepad;
      if ((v === null) !== (prev === null) || (v !== null && prev !== null && v.some((c, i) => c !== prev[i]))) {
        this.held.gamepad = v;
        this.update();
      } else if (changed) this.render();
      setTimeout(poll, 50);
    };
    addEventListener('gamepadconnected', () => this.render());
    addEventListener('gamepaddisconnected', () => this.render());
    poll();
  }
}

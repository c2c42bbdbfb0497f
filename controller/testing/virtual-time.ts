// Virtual time for control tests: node:test's mock.timers (setTimeout, setInterval and Date)
// advanced in small steps, with a hook per step (a plant model) and the microtask queue drained
// after every step, so async control loops run exactly as they would in real time — only faster.
// setImmediate is deliberately NOT mocked: it is how a step drains pending promise reactions.

export interface MockTimersLike {
  enable(opts: { apis: ('setTimeout' | 'setInterval' | 'Date')[]; now?: number }): void;
  tick(ms: number): void;
}

export const flushMicrotasks = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

export class VirtualTime {
  /** Runs after every step, after the timers fired (e.g. the plant model). */
  onStep: ((dtMs: number) => void) | null = null;

  constructor(
    private readonly timers: MockTimersLike,
    startMs = 1_000_000,
  ) {
    timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: startMs });
  }

  readonly now = (): number => Date.now();

  /** Advances `ms` in steps of `stepMs`: timers fire, the step hook runs, microtasks drain. */
  async advance(ms: number, stepMs = 1): Promise<void> {
    for (let done = 0; done < ms; done += stepMs) {
      const dt = Math.min(stepMs, ms - done);
      this.timers.tick(dt);
      this.onStep?.(dt);
      await flushMicrotasks();
    }
  }

  /** Advances until `pred()` holds or `maxMs` passed; returns whether it held. */
  async until(pred: () => boolean, maxMs: number, stepMs = 1): Promise<boolean> {
    for (let done = 0; done < maxMs; done += stepMs) {
      if (pred()) return true;
      await this.advance(stepMs, stepMs);
    }
    return pred();
  }
}

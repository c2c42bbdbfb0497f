// The simulated scanner rendering in a worker thread (render-worker.ts), so that the control
// loop's thread only receives finished frames (the pixel buffer is transferred, not copied).
import { Eco3dError } from '../protocols/errors.ts';
import { startTsWorker } from '../protocols/ts-worker.ts';
import type { TrackedFrame } from '../protocols/imaging.ts';
import type { Pose } from '../protocols/robot.ts';

/** A frame and how long its render took in the worker (ms). */
export interface RenderedFrame {
  readonly frame: TrackedFrame;
  readonly renderMs: number;
}

export interface WorkerRenderer {
  /** Rejects with ECO3D_ERR_NOT_FINITE for a bad pose (as UltrasoundSimulator.render throws), ECO3D_ERR_TIMEOUT when the worker does not answer. */
  render(pose: Pose, tMs: number): Promise<RenderedFrame>;
  close(): Promise<void>;
}

/** A render takes 5–40 ms; a worker silent this long is stuck. */
const RENDER_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 30_000;

export async function startRenderWorker(phantomSeed: number): Promise<WorkerRenderer> {
  const w = startTsWorker(new URL('./render-worker.ts', import.meta.url), { name: 'us-render' });
  const waiting = new Map<number, { resolve(f: RenderedFrame): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  let nextId = 0;
  let failed: Error | undefined;
  const fail = (err: Error): void => {
    failed ??= err;
    for (const p of waiting.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    waiting.clear();
  };
  let onReady: (() => void) | undefined;
  w.on('message', (m: { kind?: 'ready'; id?: number; frame?: TrackedFrame; renderMs?: number; error?: string }) => {
    if (m.kind === 'ready') return onReady?.();
    const p = waiting.get(m.id!);
    if (p === undefined) return; // timed out meanwhile
    waiting.delete(m.id!);
    clearTimeout(p.timer);
    if (m.frame !== undefined) p.resolve({ frame: m.frame, renderMs: m.renderMs ?? 0 });
    else p.reject(new Eco3dError('ECO3D_ERR_NOT_FINITE', `ultrasound render: ${m.error}`));
  });
  w.on('error', (err) => fail(err));
  w.on('exit', (code) => fail(new Eco3dError('ECO3D_ERR_CLOSED', `the ultrasound render worker exited (${code})`)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Eco3dError('ECO3D_ERR_TIMEOUT', 'the ultrasound render worker did not start')), START_TIMEOUT_MS);
    onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    w.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    w.postMessage({ seed: phantomSeed });
  }).catch(async (err: unknown) => {
    await w.terminate();
    throw err;
  });
  // The worker must not keep the process alive on its own.
  w.unref();
  return {
    render: (pose, tMs) =>
      new Promise<RenderedFrame>((resolve, reject) => {
        if (failed !== undefined) return reject(failed);
        const id = nextId++;
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Eco3dError('ECO3D_ERR_TIMEOUT', `the ultrasound render worker did not answer in ${RENDER_TIMEOUT_MS} ms`));
        }, RENDER_TIMEOUT_MS);
        waiting.set(id, { resolve, reject, timer });
        w.postMessage({ id, tMs, pose });
      }),
    close: async () => {
      fail(new Eco3dError('ECO3D_ERR_CLOSED', 'the ultrasound render worker is closed'));
      await w.terminate();
    },
  };
}

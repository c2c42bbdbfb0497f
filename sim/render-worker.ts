// The ultrasound simulator's worker thread (started by worker-render.ts): a real scanner forms
// its images outside our process, so the render (5 ms on a fast machine, 40 ms on a slow one)
// must not run on the event loop the robot's control loop shares. First message { seed };
// then requests { id, tMs, pose }; reply { id, frame, renderMs } with the pixel buffer
// transferred (no copy), or { id, error }.
import { parentPort } from 'node:worker_threads';
import type { Pose } from '../protocols/robot.ts';
import { createPhantom } from './phantom.ts';
import { UltrasoundSimulator } from './ultrasound.ts';

export interface RenderRequest {
  readonly id: number;
  readonly tMs: number;
  readonly pose: Pose;
}

const port = parentPort;
if (port === null) throw new Error('render-worker.ts must run in a worker thread');
let sim: UltrasoundSimulator | undefined;

port.on('message', (m: { readonly seed: number } | RenderRequest) => {
  if ('seed' in m) {
    sim = new UltrasoundSimulator(createPhantom(m.seed));
    port.postMessage({ kind: 'ready' });
    return;
  }
  try {
    // The render's own length (not the round trip, which a loaded machine stretches): the
    // caller's duty cycle is based on it.
    const t0 = performance.now();
    const f = sim!.render(m.pose, m.tMs);
    port.postMessage({ id: m.id, frame: f, renderMs: performance.now() - t0 }, [f.pixels.buffer as ArrayBuffer]);
  } catch (err) {
    port.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
});

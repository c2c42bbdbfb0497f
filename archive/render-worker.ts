// The render worker (node:worker_threads): encodes frames to PNG/JPEG off the main thread, which
// runs the robot's control loop (see render.ts).
import { parentPort } from 'node:worker_threads';
import { Eco3dError } from '../protocols/errors.ts';
import { renderFrame, type RenderJob } from './render.ts';

const port = parentPort;
if (port === null) throw new Error('render-worker.ts must run in a worker thread');

port.on('message', (m: { id: number; job: RenderJob }) => {
  try {
    const bytes = renderFrame(m.job);
    port.postMessage({ id: m.id, ok: true, bytes });
  } catch (err) {
    port.postMessage({ id: m.id, ok: false, code: err instanceof Eco3dError ? err.code : 'ECO3D_ERR_INTERNAL', message: err instanceof Error ? err.message : String(err) });
  }
});

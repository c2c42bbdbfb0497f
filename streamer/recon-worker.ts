// A reconstruction worker (node:worker_threads): runs paste jobs over shared accumulators with the
// same kernel as the main thread (reconstruct.ts), so results are byte-identical.
import { parentPort } from 'node:worker_threads';
import { Eco3dError } from '../protocols/errors.ts';
import { runWorkerJob, type WorkerFailed, type WorkerJob } from './reconstruct.ts';

const port = parentPort;
if (port === null) throw new Error('recon-worker.ts must run in a worker thread');

port.on('message', (job: WorkerJob) => {
  try {
    port.postMessage(runWorkerJob(job));
  } catch (err) {
    const failed: WorkerFailed = {
      kind: 'failed',
      id: job.id,
      code: err instanceof Eco3dError ? err.code : 'ECO3D_ERR_INTERNAL',
      message: err instanceof Error ? err.message : String(err),
    };
    port.postMessage(failed);
  }
});
port.postMessage({ kind: 'ready' });

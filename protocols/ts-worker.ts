// A worker thread running one of our TypeScript modules. Node 20 ignores `--import tsx` in a
// Worker's execArgv, so the worker registers tsx itself before importing the module. The one
// place this trick lives: the reconstruction pool, the scanner's renderer, DICOMweb rendering
// and FHIR validation all start their workers here.
import { Worker, type WorkerOptions } from 'node:worker_threads';

export function startTsWorker(moduleUrl: URL | string, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  let tsxApi = 'tsx/esm/api';
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    // keep the bare specifier
  }
  const href = typeof moduleUrl === 'string' ? moduleUrl : moduleUrl.href;
  return new Worker(`import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(href)}); })`, { ...options, eval: true });
}

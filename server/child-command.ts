// Heavy one-shot work (`eco3d reconstruct`, `eco3d study`) runs in a child process, so that its
// seconds of CPU never run on the control loop's thread, and at a lower CPU priority, so that on
// a small machine it yields to the robot, the live streams and the viewers.
import { execFile } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Eco3dError } from '../protocols/index.ts';

/** Niceness of the child (0 normal, 19 lowest): below the server, above idle. */
const CHILD_NICE = 10;

/** Runs `eco3d <args>` and parses the JSON of its last stdout line. */
export function runEco3dInChild<T>(args: readonly string[], opts: { readonly timeoutMs?: number } = {}): Promise<T> {
  const bin = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));
  const what = `eco3d ${args[0] ?? ''}`;
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [bin, ...args], { maxBuffer: 16 * 1024 * 1024, ...(opts.timeoutMs === undefined ? {} : { timeout: opts.timeoutMs }) }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new Eco3dError('ECO3D_ERR_INTERNAL', `${what} failed: ${stderr.trim().split('\n').pop() ?? err.message}`, { cause: err }));
        return;
      }
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop()!) as T);
      } catch (e) {
        reject(new Eco3dError('ECO3D_ERR_INTERNAL', `${what} printed no result`, { cause: e }));
      }
    });
    try {
      if (child.pid !== undefined) setPriority(child.pid, CHILD_NICE);
    } catch {
      // Not allowed here (a container's policy): it runs at normal priority, still off the control loop.
    }
  });
}

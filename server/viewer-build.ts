// The browser apps are built by Vite into viewer/dist. `eco3d start` builds them when the build
// is missing or older than its sources, so a fresh clone needs no separate build step; the
// build runs in a child process (Vite and its bundler stay out of the server's memory).
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Eco3dError } from '../protocols/errors.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const VIEWER_DIST = join(ROOT, 'viewer', 'dist');
/** What the build reads: a change in any of these makes the build stale. */
const SOURCES = ['viewer', 'marketplace/sdk', 'protocols'].map((p) => join(ROOT, p));

function newestMtimeMs(dir: string, skip: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (p === skip || e.name === 'node_modules') continue;
    newest = Math.max(newest, e.isDirectory() ? newestMtimeMs(p, skip) : statSync(p).mtimeMs);
  }
  return newest;
}

export function viewerBuildIsFresh(): boolean {
  const index = join(VIEWER_DIST, 'index.html');
  if (!existsSync(index)) return false;
  const built = statSync(index).mtimeMs;
  return SOURCES.every((d) => !existsSync(d) || newestMtimeMs(d, VIEWER_DIST) <= built);
}

/** Builds viewer/dist unless it is fresh. Resolves with whether it built. */
export function ensureViewerBuilt(log: { info(o: object, m: string): void }): Promise<boolean> {
  if (viewerBuildIsFresh()) return Promise.resolve(false);
  const vite = join(createRequire(import.meta.url).resolve('vite/package.json'), '..', 'bin', 'vite.js');
  log.info({ out: VIEWER_DIST }, 'building the browser apps (vite build)');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [vite, 'build', '--config', join(ROOT, 'viewer', 'vite.config.ts'), '--logLevel', 'warn'], { cwd: ROOT, maxBuffer: 32 * 1024 * 1024 }, (err, _stdout, stderr) => {
      if (err !== null) reject(new Eco3dError('ECO3D_ERR_CONFIG', `building the browser apps failed: ${stderr.trim().split('\n').slice(-5).join(' | ') || err.message}`, { cause: err }));
      else resolve(true);
    });
  });
}

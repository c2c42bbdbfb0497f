// Builds the browser apps (viewer/dist) when stale: what `eco3d start` does at start, for the
// test command and for installs that prebuild.
import { ensureViewerBuilt } from '../server/viewer-build.ts';

const built = await ensureViewerBuilt({ info: (_o, m) => process.stdout.write(`${m}\n`) });
process.stdout.write(built ? 'browser apps built\n' : 'browser apps up to date\n');

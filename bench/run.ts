// `npm run bench [-- NAME]`: runs every bench/*.bench.ts (or those whose name contains NAME),
// one child process each so that one benchmark's garbage never slows the next. Each benchmark
// prints its figures as `BENCH <name> <value> <unit>` lines; this runner passes them through.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const filter = process.argv[2] ?? '';
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts') && f.includes(filter))
  .sort();
if (files.length === 0) {
  console.error(`no benchmark matches "${filter}"`);
  process.exit(1);
}
let failed = 0;
for (const f of files) {
  console.error(`# ${f}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(here, f)], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.error(`# ${f} failed with exit code ${r.status ?? r.signal}`);
  }
}
process.exit(failed === 0 ? 0 : 1);

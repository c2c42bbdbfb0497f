// What running an analysis plugin costs the platform, without the plugin's own compute (issue 8,
// "Benchmarks"): the work item's path for a trivial plugin on the 16 MiB demo volume (256³):
//   de-identify the archived volume's header (the profile's checks; the plugin never gets a
//   header) → read its voxels, while the sandboxed process starts → deliver, run, collect → the TID 1500 SR
//   built and stored in the archive (PGlite). For scale, the old path's de-identified 16 MB copy.
//
//   BENCH plugin-overhead-16mb-p50 / -p95  (ms) the whole path. Goal p50 ≤ 200 ms.
//   BENCH plugin-overhead-deid-p50         (ms) de-identification of the header
//   BENCH plugin-overhead-deid-copy-p50    (ms) (not on the path) a de-identified copy of the whole file
//   BENCH plugin-overhead-read-p50         (ms) the de-identified file → voxels
//   BENCH plugin-overhead-run-p50          (ms) from the input ready to the result (the process started meanwhile)
//   BENCH plugin-overhead-sr-p50           (ms) SR encode + archive store
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DicomArchive } from '../archive/index.ts';
import { parseManifest, readVolumeInput, startPlugin, writeDemoStudies } from '../marketplace/index.ts';
import { deidentifyFile, deidentifyHeader } from '../server/deidentify-command.ts';
import { resultObjects } from '../server/marketplace.ts';
import { migrate, openPglite } from '../store/index.ts';
import { bench, percentile } from './stats.ts';

const RUNS = Number(process.env['PLUGIN_OVERHEAD_RUNS'] ?? 20);
const GOAL_P50_MS = 200;

const root = await mkdtemp(join(tmpdir(), 'eco3d-plugin-overhead-'));
await chmod(root, 0o711);
const db = await openPglite(join(root, 'db'));
try {
  await migrate(db);
  await db.query("INSERT INTO tenants (id, name) VALUES ('bench', 'bench')");
  const archive = new DicomArchive({ root: join(root, 'archive'), db });
  const demo = (await writeDemoStudies(join(root, 'demo'))).find((d) => d.dims[0] === 256);
  if (demo === undefined) throw new Error('no 256³ demo study');
  const pluginDir = join(root, 'plugin');
  await mkdir(pluginDir);
  await writeFile(join(pluginDir, 'index.mjs'), `export async function analyze(input) { return { measurements: [{ name: 'Voxels', value: input.volume.voxels.length, unit: '1' }], findings: [] }; }`);
  const manifest = parseManifest({
    id: 'org.eco3d.bench.trivial',
    name: 'Trivial',
    version: '1.0.0',
    vendor: { name: 'Eco3D' },
    description: 'bench',
    kind: 'analysis',
    tier: 'research',
    scopes: ['study:deidentified:read', 'results:write'],
    pricing: { model: 'per-use', amountCents: 0 },
    entry: 'index.mjs',
  });

  const total: number[] = [];
  const deid: number[] = [];
  const read: number[] = [];
  const run: number[] = [];
  const sr: number[] = [];
  const copy: number[] = [];
  for (let i = 0; i < RUNS + 2; i++) {
    const work = await mkdtemp(join(root, 'work-'));
    const t0 = performance.now();
    // As the runner does: the sandboxed process starts while the input is prepared.
    const starting = startPlugin({ pluginDir, entry: 'index.mjs', limits: manifest.limits, tmpRoot: root });
    await deidentifyHeader(demo.path, { uidKey: randomBytes(32), cleanDescriptors: true, cleanStructuredContent: true });
    const t1 = performance.now();
    const volume = await readVolumeInput(demo.path);
    const t2 = performance.now();
    const r = await (await starting).run({ volume, study: { ref: `S-${i}` } });
    const t3 = performance.now();
    if (r.status !== 'completed') throw new Error(`trivial plugin: ${JSON.stringify(r)}`);
    const o = resultObjects({
      manifest,
      output: r.output,
      common: demo.dicom.common,
      volume: { sopInstanceUid: demo.dicom.sopInstanceUid, seriesInstanceUid: demo.dicom.seriesInstanceUid },
      key: `bench-${i}`,
      contentDateTime: new Date().toISOString(),
    });
    await archive.storeInstance('bench', o.bytes, { kind: 'acquisition', acquisitionUid: demo.dicom.common.study.studyInstanceUid });
    const t4 = performance.now();
    const c0 = performance.now();
    await deidentifyFile(demo.path, { uidKey: randomBytes(32), cleanDescriptors: true, cleanStructuredContent: true }, async () => join(work, 'volume.dcm'));
    const copyMs = performance.now() - c0;
    await rm(work, { recursive: true, force: true });
    if (i < 2) continue; // warm-up
    copy.push(copyMs);
    total.push(t4 - t0);
    deid.push(t1 - t0);
    read.push(t2 - t1);
    run.push(t3 - t2);
    sr.push(t4 - t3);
  }
  for (const a of [total, deid, read, run, sr, copy]) a.sort((x, y) => x - y);
  bench('plugin-overhead-16mb-p50', percentile(total, 50), 'ms');
  bench('plugin-overhead-16mb-p95', percentile(total, 95), 'ms');
  bench('plugin-overhead-deid-p50', percentile(deid, 50), 'ms');
  bench('plugin-overhead-deid-copy-p50', percentile(copy, 50), 'ms');
  bench('plugin-overhead-read-p50', percentile(read, 50), 'ms');
  bench('plugin-overhead-run-p50', percentile(run, 50), 'ms');
  bench('plugin-overhead-sr-p50', percentile(sr, 50), 'ms');
  if (percentile(total, 50) > GOAL_P50_MS) console.error(`# plugin-overhead: p50 ${percentile(total, 50).toFixed(1)} ms is over the goal of ${GOAL_P50_MS} ms`);
} finally {
  await db.close();
  await rm(root, { recursive: true, force: true });
}

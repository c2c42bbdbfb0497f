// The plugin sandbox's overhead and its kill latency (issue 8, "Benchmarks").
//
//   BENCH plugin-sandbox-run-16mb-p50 / -p95   (ms) runPlugin() end to end for a trivial plugin on
//        a 16 MB volume: run directory, copy, spawn in a namespace as nobody, deliver, collect,
//        clean up. Goal p50 ≤ 200 ms. Storing the SR is not included.
//   BENCH plugin-sandbox-node-start-p50         (ms) a bare `node -e 0` here, for scale: most of the above.
//   BENCH plugin-sandbox-kill-latency-p50 / -p95 (ms) watchdog sees a limit exceeded → process gone
//        (CPU-time and memory limits mixed). Goal ≤ 100 ms.
//   BENCH plugin-sandbox-cpu-overshoot-p95      (ms) CPU time past the limit when the watchdog saw it.
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPlugin, type PluginInput, type PluginLimits } from '../marketplace/sandbox.ts';
import { bench, percentile } from './stats.ts';

const RUNS = Number(process.env['PLUGIN_SANDBOX_RUNS'] ?? 20);
const KILL_RUNS = Number(process.env['PLUGIN_SANDBOX_KILL_RUNS'] ?? 10);
const GOAL_RUN_P50_MS = 200;
const GOAL_KILL_MS = 100;

const root = await mkdtemp(join(tmpdir(), 'eco3d-plugin-bench-'));
await chmod(root, 0o711); // plugins run as nobody, who must pass through to the run directories
try {
  const plugins = join(root, 'plugins');
  const write = async (name: string, source: string): Promise<string> => {
    const dir = join(plugins, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'index.mjs'), source);
    return dir;
  };
  const trivial = await write('trivial', `export async function analyze(input) { return { measurements: [{ name: 'n', value: input.volume.voxels.length, unit: '1' }], findings: [] }; }`);
  const spin = await write('spin', `export async function analyze() { for (;;) {} }`);
  const hog = await write('hog', `export async function analyze() { const keep = []; for (;;) keep.push(Buffer.alloc(4 << 20, 1)); }`);

  const dims = [256, 256, 256] as const;
  const voxels = new Uint8Array(dims[0] * dims[1] * dims[2]);
  for (let i = 0; i < voxels.length; i += 4096) voxels[i] = i & 0xff;
  const input: PluginInput = { volume: { dims, spacingMm: [0.3, 0.3, 0.3], voxels }, study: { ref: 'bench' } };
  const once = async (pluginDir: string, limits?: Partial<PluginLimits>) => runPlugin({ pluginDir, entry: 'index.mjs', input, tmpRoot: root, ...(limits === undefined ? {} : { limits }) });

  // Warm the page cache and the first-use checks.
  for (let i = 0; i < 2; i++) await once(trivial);
  const runMs: number[] = [];
  const spawnMs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const r = await once(trivial);
    runMs.push(performance.now() - t0);
    if (r.status !== 'completed' || r.output.measurements[0]?.value !== voxels.length) throw new Error(`trivial plugin: ${JSON.stringify(r)}`);
    spawnMs.push(r.wallMs);
  }
  const nodeStartMs: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t0 = performance.now();
    spawnSync(process.execPath, ['-e', '0']);
    nodeStartMs.push(performance.now() - t0);
  }

  const killMs: number[] = [];
  const overshootMs: number[] = [];
  for (let i = 0; i < KILL_RUNS; i++) {
    const cpuMs = 200;
    const r = await once(spin, { cpuTimeMs: cpuMs });
    if (r.status !== 'failed' || r.reason !== 'cpu-limit' || r.killLatencyMs === undefined) throw new Error(`spin plugin: ${JSON.stringify(r)}`);
    killMs.push(r.killLatencyMs);
    overshootMs.push(r.cpuMs - cpuMs);
    const m = await once(hog, { memoryMb: 256 });
    if (m.status !== 'failed' || m.reason !== 'memory-limit' || m.killLatencyMs === undefined) throw new Error(`hog plugin: ${JSON.stringify(m)}`);
    killMs.push(m.killLatencyMs);
  }

  for (const a of [runMs, spawnMs, nodeStartMs, killMs, overshootMs]) a.sort((x, y) => x - y);
  const runP50 = percentile(runMs, 50);
  const killP95 = percentile(killMs, 95);
  bench('plugin-sandbox-run-16mb-p50', runP50, 'ms');
  bench('plugin-sandbox-run-16mb-p95', percentile(runMs, 95), 'ms');
  bench('plugin-sandbox-child-wall-p50', percentile(spawnMs, 50), 'ms');
  bench('plugin-sandbox-node-start-p50', percentile(nodeStartMs, 50), 'ms');
  bench('plugin-sandbox-kill-latency-p50', percentile(killMs, 50), 'ms');
  bench('plugin-sandbox-kill-latency-p95', killP95, 'ms');
  bench('plugin-sandbox-cpu-overshoot-p95', percentile(overshootMs, 95), 'ms');
  console.error(
    `# ${RUNS} runs on a 16 MB volume: goal p50 ≤ ${GOAL_RUN_P50_MS} ms ${runP50 <= GOAL_RUN_P50_MS ? 'met' : 'MISSED'} ` +
      `(a bare node start is ${percentile(nodeStartMs, 50).toFixed(0)} ms here); ` +
      `${killMs.length} kills: goal ≤ ${GOAL_KILL_MS} ms at p95 ${killP95 <= GOAL_KILL_MS ? 'met' : 'MISSED'}`,
  );
} finally {
  await rm(root, { recursive: true, force: true });
}

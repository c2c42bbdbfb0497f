// Runs one analysis plugin in one OS process, isolated (issue 8, "Running plugins" / "Isolation").
//
// The layers, outermost first; each one alone stops the usual attempt:
//  1. A network namespace of its own (`unshare --net`): only a loopback that is down, so no TCP,
//     UDP or DNS reaches anything, 127.0.0.1 included. This is the network boundary: node's
//     permission model does not cover the network on Node 20.
//  2. An unprivileged user (`setpriv` to nobody:nogroup, no new privileges, empty capability
//     bounding set, killed if we die): the files of the machine are as closed as to any stranger.
//  3. A fresh directory holding a copy of the plugin's files and the input, nothing else, and node's
//     permission model reading only that directory (no fs writes, no child processes, no workers).
//     A seat belt, not the boundary: it has had bypasses.
//  4. Lower scheduling priority (nice 10) from the moment the input is delivered (node's own
//     start-up before it runs at normal priority: it is ours, and it overlaps the preparation of
//     the input), so a runaway plugin leaves the CPU to acquisitions.
//  5. A watchdog here, polling the child's /proc every `pollMs`: RSS over `memoryMb`, CPU time
//     (utime + stime) over `cpuTimeMs` or wall time over `wallTimeMs` ⇒ SIGKILL. `--max-old-space-size`
//     and RLIMIT_CPU (prlimit) back it up if this process is stalled.
// If the namespace or the user switch cannot be set up, nothing runs (ECO3D_ERR_CONFIG): never
// unisolated.
//
// The plugin is an ES module exporting `async function analyze(input: PluginInput):
// Promise<PluginOutput>`. Voxels travel as a raw file (a 16 MB volume as JSON would cost more than
// the spawn); the result comes back on a pipe of its own (fd 3), capped at `outputBytes`, and is
// validated here. Every failure of the plugin is a result, never an exception.
import { MANIFEST_LIMITS, type PluginLimits } from './manifest.ts';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { setPriority, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { Eco3dError } from '../protocols/errors.ts';

/** What `analyze` receives: de-identified voxels and an opaque study reference, nothing more. */
export interface PluginInput {
  readonly volume: {
    /** Voxels along x, y, z; x varies fastest in `voxels`. */
    readonly dims: readonly [number, number, number];
    readonly spacingMm: readonly [number, number, number];
    readonly voxels: Uint8Array;
  };
  /** Opaque: only the platform maps it back to the real study. */
  readonly study: { readonly ref: string };
}

export interface PluginMeasurement {
  readonly name: string;
  readonly value: number;
  /** UCUM, e.g. `ml`, `mm`, `%`, `1`. */
  readonly unit: string;
  /** What was measured as a coded concept (e.g. SCT 118565006 "Volume"); else the name is coded privately. */
  readonly concept?: { readonly value: string; readonly scheme: string; readonly meaning: string };
}
export interface PluginFinding {
  readonly text: string;
}
/** What `analyze` returns (plain JSON; validated on return). */
export interface PluginOutput {
  readonly measurements: readonly PluginMeasurement[];
  readonly findings: readonly PluginFinding[];
}

/**
 * The run's limits: the manifest's (marketplace/manifest.ts: memory = the process's resident
 * memory, node's own ~40 MB included; CPU time of all threads, GC included; wall time from spawn
 * to exit; the output as JSON). The defaults are the manifest's defaults.
 */
export type { PluginLimits };
export const DEFAULT_PLUGIN_LIMITS: PluginLimits = {
  memoryMb: MANIFEST_LIMITS.memoryMb.default,
  cpuTimeMs: MANIFEST_LIMITS.cpuTimeMs.default,
  wallTimeMs: MANIFEST_LIMITS.wallTimeMs.default,
  outputBytes: MANIFEST_LIMITS.outputBytes.default,
};

export type PluginFailureReason = 'timeout' | 'cpu-limit' | 'memory-limit' | 'crashed' | 'bad-output' | 'forbidden' | 'canceled';

interface RunFigures {
  readonly cpuMs: number;
  readonly wallMs: number;
  readonly peakRssMb: number;
}
export type PluginRunResult =
  | ({ readonly status: 'completed'; readonly output: PluginOutput } & RunFigures)
  | ({
      readonly status: 'failed';
      readonly reason: PluginFailureReason;
      /** For the admin: what happened, with the plugin's own error message when there is one. */
      readonly detail: string;
      /** Watchdog kills only: from the watchdog seeing the limit exceeded to the process being gone. */
      readonly killLatencyMs?: number;
    } & RunFigures);

export interface RunPluginOptions {
  /** The plugin's unpacked package; copied, never run in place. Symlinks are refused. */
  readonly pluginDir: string;
  /** The ES module exporting `analyze`, relative to `pluginDir`. */
  readonly entry: string;
  readonly input: PluginInput;
  readonly limits?: Partial<PluginLimits>;
  /** Aborting kills the run: result `failed` / `canceled` (a work item canceled, a plugin disabled). */
  readonly signal?: AbortSignal;
  /** Where the run directory is made (default: the OS temp dir). */
  readonly tmpRoot?: string;
  /** Watchdog period (default 10 ms). */
  readonly pollMs?: number;
}

// nobody:nogroup on Debian-family systems.
const SANDBOX_UID = 65534;
const SANDBOX_GID = 65534;
/** Scheduling niceness of plugin processes (all their threads). */
const PLUGIN_NICE = 10;
const CHILD_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'sandbox-child.mjs');
/** Plugin stdout/stderr kept for the failure detail (the rest is drained and dropped). */
const LOG_KEEP_BYTES = 8192;
/** Error codes that mean "the sandbox said no", as opposed to a bug of the plugin. */
const FORBIDDEN_CODES = new Set(['ERR_ACCESS_DENIED', 'EACCES', 'EPERM', 'EROFS', 'ENETUNREACH', 'ENETDOWN', 'EADDRNOTAVAIL', 'ECONNREFUSED', 'EAI_AGAIN']);
const NOT_JSON_CODE = 'ECO3D_PLUGIN_OUTPUT_NOT_JSON';

interface SandboxTools {
  readonly unshare: string;
  readonly setpriv: string;
  readonly prlimit: string;
  readonly clockTicksPerS: number;
}
let toolsCache: SandboxTools | null = null;

function findExecutable(name: string): string | null {
  for (const dir of (process.env['PATH'] ?? '/usr/bin:/bin').split(delimiter)) {
    const p = join(dir, name);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      // not in this directory
    }
  }
  return null;
}

/**
 * Checks once per process that the isolation can be set up here: root, util-linux's unshare,
 * setpriv and prlimit, a network namespace and the switch to nobody actually working. Throws
 * ECO3D_ERR_CONFIG otherwise (the caller must not run plugins at all then).
 */
export function checkSandboxSupport(): void {
  if (toolsCache !== null) return;
  const problems: string[] = [];
  if (process.platform !== 'linux') problems.push(`plugins need Linux namespaces (this is ${process.platform})`);
  if (typeof process.geteuid === 'function' && process.geteuid() !== 0) problems.push('plugins run in a network namespace of their own, which needs root (CAP_SYS_ADMIN)');
  const unshare = findExecutable('unshare');
  const setpriv = findExecutable('setpriv');
  const prlimit = findExecutable('prlimit');
  for (const [name, p] of [['unshare', unshare], ['setpriv', setpriv], ['prlimit', prlimit]] as const) {
    if (p === null) problems.push(`${name} (util-linux) is not on PATH`);
  }
  if (problems.length === 0 && unshare !== null && setpriv !== null) {
    // The real thing, once: a namespace, then nobody, then a command that proves both.
    const r = spawnSync(unshare, ['--net', '--', setpriv, ...setprivArgs(), '--', '/bin/sh', '-c', 'id -u; cat /proc/net/dev'], { encoding: 'utf8', timeout: 10_000, env: {} });
    const lines = (r.stdout ?? '').trim().split('\n');
    const ifaces = lines.slice(3).map((l) => l.split(':')[0]!.trim());
    if (r.status !== 0) problems.push(`cannot start a process in a network namespace as nobody: ${(r.stderr ?? r.error?.message ?? '').trim() || `exit ${r.status}`}`);
    else if (lines[0] !== String(SANDBOX_UID)) problems.push(`setpriv did not switch to uid ${SANDBOX_UID} (got ${lines[0]})`);
    else if (ifaces.some((i) => i !== 'lo')) problems.push(`the network namespace is not empty: ${ifaces.join(', ')}`);
  }
  const ticks = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const clockTicksPerS = Number((ticks.stdout ?? '').trim());
  if (!(clockTicksPerS > 0)) problems.push('cannot read CLK_TCK (getconf), needed to read CPU time from /proc');
  if (problems.length > 0 || unshare === null || setpriv === null || prlimit === null) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `the plugin sandbox cannot be set up, so no plugin runs:\n  - ${problems.join('\n  - ')}`, { details: { problems } });
  }
  toolsCache = { unshare, setpriv, prlimit, clockTicksPerS };
}

function setprivArgs(): string[] {
  return [`--reuid=${SANDBOX_UID}`, `--regid=${SANDBOX_GID}`, '--clear-groups', '--no-new-privs', '--bounding-set=-all', '--inh-caps=-all', '--pdeathsig=KILL'];
}

function resolveLimits(partial: Partial<PluginLimits> | undefined): PluginLimits {
  const l = { ...DEFAULT_PLUGIN_LIMITS, ...partial };
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isFinite(v) || v <= 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `plugin limit ${k} must be a positive number (got ${v})`);
  }
  return l;
}

function checkInput(input: PluginInput): void {
  const { dims, spacingMm, voxels } = input.volume;
  const bad = (m: string): never => {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `plugin input: ${m}`);
  };
  if (dims.length !== 3 || dims.some((d) => !Number.isSafeInteger(d) || d <= 0)) bad(`dims must be three positive integers (got ${JSON.stringify(dims)})`);
  if (spacingMm.length !== 3 || spacingMm.some((s) => !Number.isFinite(s) || s <= 0)) bad(`spacingMm must be three positive numbers (got ${JSON.stringify(spacingMm)})`);
  if (!(voxels instanceof Uint8Array)) bad('voxels must be a Uint8Array');
  if (voxels.length !== dims[0] * dims[1] * dims[2]) bad(`voxels holds ${voxels.length} bytes, dims ${dims.join('×')} need ${dims[0] * dims[1] * dims[2]}`);
  if (typeof input.study.ref !== 'string') bad('study.ref must be a string');
}

/** Copies regular files and directories only, readable by the sandbox user; a symlink could point anywhere. */
async function copyPackage(fromDir: string, toDir: string): Promise<void> {
  await mkdir(toDir, { mode: 0o755 });
  for (const e of await readdir(fromDir, { withFileTypes: true })) {
    const src = join(fromDir, e.name);
    const dst = join(toDir, e.name);
    if (e.isDirectory()) await copyPackage(src, dst);
    else if (e.isFile()) {
      await copyFile(src, dst);
      await chmod(dst, 0o644);
    } else throw new Eco3dError('ECO3D_ERR_BAD_FILE', `plugin package: "${src}" is not a regular file or directory (symlinks are refused)`);
  }
}

/** The sandbox user must be able to reach the run directory: every ancestor needs o+x. */
async function checkTraversable(dir: string): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    const st = await stat(d);
    if ((st.mode & 0o001) === 0) throw new Eco3dError('ECO3D_ERR_CONFIG', `plugin runs cannot go under "${dir}": "${d}" is closed to other users (mode ${(st.mode & 0o777).toString(8)}), and plugins run as nobody`);
    if (dirname(d) === d) return;
  }
}

/** Output validation: `unknown` in, a typed value or the reason out. */
export function parsePluginOutput(value: unknown): { ok: true; output: PluginOutput } | { ok: false; problem: string } {
  const no = (problem: string): { ok: false; problem: string } => ({ ok: false, problem });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return no('the output is not an object');
  const v = value as Record<string, unknown>;
  const extra = Object.keys(v).filter((k) => k !== 'measurements' && k !== 'findings');
  if (extra.length > 0) return no(`unknown output fields: ${extra.join(', ')}`);
  if (!Array.isArray(v['measurements'])) return no('measurements is not an array');
  if (!Array.isArray(v['findings'])) return no('findings is not an array');
  const measurements: PluginMeasurement[] = [];
  for (const [i, m] of (v['measurements'] as unknown[]).entries()) {
    const r = m as Record<string, unknown> | null;
    if (typeof r !== 'object' || r === null) return no(`measurements[${i}] is not an object`);
    if (typeof r['name'] !== 'string' || r['name'] === '') return no(`measurements[${i}].name is not a non-empty string`);
    if (typeof r['value'] !== 'number' || !Number.isFinite(r['value'])) return no(`measurements[${i}].value is not a finite number`);
    if (typeof r['unit'] !== 'string') return no(`measurements[${i}].unit is not a string`);
    const extraM = Object.keys(r).filter((k) => !['name', 'value', 'unit', 'concept'].includes(k));
    if (extraM.length > 0) return no(`measurements[${i}] has unknown fields: ${extraM.join(', ')}`);
    const c = r['concept'] as Record<string, unknown> | undefined | null;
    if (c === undefined) {
      measurements.push({ name: r['name'], value: r['value'], unit: r['unit'] });
      continue;
    }
    const str = (k: string, max: number): boolean => typeof c?.[k] === 'string' && (c[k]).length > 0 && (c[k]).length <= max;
    if (typeof c !== 'object' || c === null || !str('value', 64) || !str('scheme', 16) || !str('meaning', 64) || Object.keys(c).length !== 3) {
      return no(`measurements[${i}].concept is not {value, scheme, meaning} (strings of at most 64, 16 and 64 characters)`);
    }
    measurements.push({ name: r['name'], value: r['value'], unit: r['unit'], concept: { value: c['value'] as string, scheme: c['scheme'] as string, meaning: c['meaning'] as string } });
  }
  const findings: PluginFinding[] = [];
  for (const [i, f] of (v['findings'] as unknown[]).entries()) {
    const r = f as Record<string, unknown> | null;
    if (typeof r !== 'object' || r === null || typeof r['text'] !== 'string') return no(`findings[${i}].text is not a string`);
    findings.push({ text: r['text'] });
  }
  return { ok: true, output: { measurements, findings } };
}

/** Keeps the first `LOG_KEEP_BYTES` of a stream and drains the rest (a full pipe would stall the child). */
function keepHead(stream: Readable | null): () => string {
  const chunks: Buffer[] = [];
  let kept = 0;
  stream?.on('data', (c: Buffer) => {
    if (kept < LOG_KEEP_BYTES) {
      chunks.push(c.subarray(0, LOG_KEEP_BYTES - kept));
      kept += Math.min(c.length, LOG_KEEP_BYTES - kept);
    }
  });
  return () => Buffer.concat(chunks).toString('utf8');
}

/** Sets the niceness of every thread of a process (Linux niceness is per thread). */
function setThreadsNice(pid: number, nice: number): void {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return; // the process is already gone
  }
  for (const tid of tids) {
    try {
      setPriority(Number(tid), nice);
    } catch (err) {
      // A thread that is already gone is fine; anything else must not leave a plugin unniced.
      if ((err as { code?: string }).code !== 'ESRCH' && existsSync(`/proc/${pid}/task/${tid}`)) throw err;
    }
  }
}

interface ProcSample {
  rssKb: number;
  cpuTicks: number;
}
/** One look at the child; null once it is gone. Sync reads of /proc take microseconds. */
function sampleProc(pid: number): ProcSample | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'latin1');
    const m = /VmRSS:\s+(\d+) kB/.exec(status);
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the command name (which may hold spaces and parentheses): state is the 1st,
    // utime the 12th, stime the 13th (fields 14 and 15 of proc(5)).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Until the plugin's node has been exec'd, the pid is a fork of this process (unshare, nice,
    // prlimit, setpriv in turn): its RSS counts our own pages shared copy-on-write, which are not
    // the plugin's (a 400 MB server would look like a plugin over a 256 MB limit).
    const plugin = readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(`${sep}runner.mjs`);
    return { rssKb: m === null || !plugin ? 0 : Number(m[1]), cpuTicks: Number(f[11]) + Number(f[12]) };
  } catch {
    return null;
  }
}

/** What sandbox-child.mjs writes on fd 3 (untrusted: the plugin can write there too). */
interface RunnerDoc {
  ok?: unknown;
  output?: unknown;
  error?: { code?: unknown; message?: unknown };
  usage?: { cpuMs?: unknown; maxRssKb?: unknown };
}

type Verdict = { reason: PluginFailureReason; detail: string; detectedAtMs: number };

/**
 * Runs `analyze` of one plugin on one input, isolated, and reports how it went. Throws only when
 * the run cannot be set up (ECO3D_ERR_CONFIG: no isolation here; ECO3D_ERR_BAD_REQUEST: bad input
 * or limits; ECO3D_ERR_BAD_FILE: a package with a symlink); every failure of the plugin is a
 * `failed` result. The run directory is always removed.
 */
export async function runPlugin(opts: RunPluginOptions): Promise<PluginRunResult> {
  checkInput(opts.input);
  const started = await startPlugin(opts);
  return started.run(opts.input);
}

/** A sandboxed plugin process started ahead of its input (see startPlugin). */
export interface StartedPlugin {
  /** Delivers the input and waits for the result; once. */
  run(input: PluginInput): Promise<PluginRunResult>;
  /** Kills the process and removes its directory (the input never came). */
  cancel(): Promise<void>;
}

/**
 * Starts the isolated process of one run before its input is ready: node's start-up in its
 * namespace overlaps the caller's preparation of the input (de-identification, reading the
 * volume), and `run` then only delivers it. The same process is never given a second input. The
 * wall-time limit counts from the delivery; CPU and memory from the start.
 */
export async function startPlugin(opts: Omit<RunPluginOptions, 'input'>): Promise<StartedPlugin> {
  checkSandboxSupport();
  const tools = toolsCache!;
  const limits = resolveLimits(opts.limits);
  const pollMs = opts.pollMs ?? 10;
  const pluginDir = resolve(opts.pluginDir);
  const entryPath = resolve(pluginDir, opts.entry);
  if (!entryPath.startsWith(pluginDir + sep)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `plugin entry "${opts.entry}" is outside the package`);
  if (opts.signal?.aborted === true) {
    return { run: () => Promise.resolve({ status: 'failed', reason: 'canceled', detail: 'canceled before it started', cpuMs: 0, wallMs: 0, peakRssMb: 0 }), cancel: () => Promise.resolve() };
  }

  const tmpRoot = resolve(opts.tmpRoot ?? tmpdir());
  await checkTraversable(tmpRoot);
  const runDir = await mkdtemp(join(tmpRoot, 'eco3d-plugin-'));
  const removeRunDir = (): Promise<void> => rm(runDir, { recursive: true, force: true });
  let proc: Isolated;
  try {
    // Readable by root and the sandbox's group only: the input is de-identified, still not for everyone.
    await chown(runDir, 0, SANDBOX_GID);
    await chmod(runDir, 0o750);
    await Promise.all([
      copyPackage(pluginDir, join(runDir, 'plugin')),
      copyFile(CHILD_SCRIPT, join(runDir, 'runner.mjs')).then(() => chmod(join(runDir, 'runner.mjs'), 0o644)),
    ]);
    proc = runIsolated(tools, runDir, limits, pollMs, opts.signal);
  } catch (err) {
    await removeRunDir();
    throw err;
  }
  let used = false;
  return {
    async run(input) {
      if (used) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'a sandboxed process takes one input');
      used = true;
      try {
        checkInput(input);
        const { dims, spacingMm, voxels } = input.volume;
        await Promise.all([
          writeFile(join(runDir, 'input.json'), JSON.stringify({ dims, spacingMm, voxelsBytes: voxels.length, studyRef: input.study.ref, entry: opts.entry }), { mode: 0o644 }),
          writeFile(join(runDir, 'voxels.raw'), voxels, { mode: 0o644 }),
        ]);
        proc.go();
        return await proc.result;
      } catch (err) {
        proc.kill();
        await proc.result.catch(() => undefined);
        throw err;
      } finally {
        await removeRunDir();
      }
    },
    async cancel() {
      if (used) return;
      used = true;
      proc.kill();
      await proc.result.catch(() => undefined);
      await removeRunDir();
    },
  };
}

interface Isolated {
  readonly result: Promise<PluginRunResult>;
  /** The input is in place: the child may read it (the wall clock starts). */
  go(): void;
  /** Ends the process now (an input that never came). */
  kill(): void;
}

function runIsolated(tools: SandboxTools, runDir: string, limits: PluginLimits, pollMs: number, signal: AbortSignal | undefined): Isolated {
  // RLIMIT_CPU is a backstop for when this process cannot watch (stalled or dead): whole seconds, a
  // second above the limit so the watchdog, which is exact, normally acts first.
  const cpuBackstopS = Math.ceil(limits.cpuTimeMs / 1000) + 1;
  const args = [
    '--net', '--',
    tools.prlimit, `--cpu=${cpuBackstopS}:${cpuBackstopS}`, '--',
    tools.setpriv, ...setprivArgs(), '--',
    process.execPath,
    '--experimental-permission', `--allow-fs-read=${runDir}${sep}`,
    `--max-old-space-size=${Math.max(16, Math.floor(limits.memoryMb))}`,
    '--no-warnings',
    join(runDir, 'runner.mjs'),
  ];
  // The wall clock of the run: from the delivery of the input (go) when there is one.
  let startMs = performance.now();
  let child: ChildProcess;
  try {
    // No environment at all: the parent's secrets and NODE_OPTIONS stay here. stdin carries the go.
    child = spawn(tools.unshare, args, { cwd: runDir, env: {}, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] });
  } catch (err) {
    const failed = Promise.reject(new Eco3dError('ECO3D_ERR_CONFIG', `cannot start the plugin sandbox: ${(err as Error).message}`, { cause: err }));
    return { result: failed, go: () => undefined, kill: () => undefined };
  }
  // A child that died before reading its stdin must not crash us with EPIPE.
  child.stdin?.on('error', () => undefined);
  let killNow: () => void = () => child.kill('SIGKILL');
  let reniceAgain = false;

  const result = new Promise<PluginRunResult>((resolvePromise, rejectPromise) => {
    let verdict: Verdict | null = null;
    let exitedAtMs: number | null = null;
    let exitCode: number | null = null;
    let exitSignal: NodeJS.Signals | null = null;
    let peakRssKb = 0;
    let lastCpuTicks = 0;
    let spawnError: Error | null = null;
    const stdoutHead = keepHead(child.stdout);
    const stderrHead = keepHead(child.stderr);
    const resultChunks: Buffer[] = [];
    let resultBytes = 0;
    // The envelope around the output ({"ok":true,"output":…,"usage":…}) is small; the output itself is checked exactly below.
    const resultCapBytes = limits.outputBytes + 1024;

    const kill = (reason: PluginFailureReason, detail: string): void => {
      if (verdict !== null || exitedAtMs !== null) return;
      verdict = { reason, detail, detectedAtMs: performance.now() };
      // A killed process still has to be scheduled to die (and free its memory): give its threads
      // back normal priority first, or on a busy machine the niceness would stretch the kill.
      if (child.pid !== undefined) {
        try {
          setThreadsNice(child.pid, 0);
        } catch {
          // it is being killed anyway
        }
      }
      child.kill('SIGKILL');
    };
    killNow = () => kill('canceled', 'canceled before its input came');

    const resultPipe = child.stdio[3] as Readable | null;
    resultPipe?.on('data', (c: Buffer) => {
      resultBytes += c.length;
      if (resultBytes > resultCapBytes) kill('bad-output', `output larger than ${limits.outputBytes} bytes`);
      else resultChunks.push(c);
    });

    const watch = (): void => {
      if (exitedAtMs !== null || child.pid === undefined) return;
      if (reniceAgain) {
        reniceAgain = false;
        try {
          setThreadsNice(child.pid, PLUGIN_NICE);
        } catch (err) {
          return kill('canceled', `the platform could not lower the plugin's priority (retried later): ${(err as Error).message}`);
        }
      }
      const s = sampleProc(child.pid);
      const wallMs = performance.now() - startMs;
      if (s !== null) {
        peakRssKb = Math.max(peakRssKb, s.rssKb);
        lastCpuTicks = Math.max(lastCpuTicks, s.cpuTicks);
        const cpuMs = (s.cpuTicks * 1000) / tools.clockTicksPerS;
        if (s.rssKb > limits.memoryMb * 1024) return kill('memory-limit', `resident memory ${(s.rssKb / 1024).toFixed(0)} MB over the limit of ${limits.memoryMb} MB`);
        if (cpuMs > limits.cpuTimeMs) return kill('cpu-limit', `CPU time ${cpuMs.toFixed(0)} ms over the limit of ${limits.cpuTimeMs} ms`);
      }
      if (wallMs > limits.wallTimeMs) kill('timeout', `still running after ${wallMs.toFixed(0)} ms (limit ${limits.wallTimeMs} ms)`);
    };
    const timer = setInterval(watch, pollMs);
    const onAbort = (): void => kill('canceled', 'canceled while running');
    signal?.addEventListener('abort', onAbort, { once: true });

    child.on('error', (err) => {
      spawnError = err;
    });
    child.on('exit', (code, sig) => {
      exitedAtMs = performance.now();
      exitCode = code;
      exitSignal = sig;
      clearInterval(timer);
    });
    child.on('close', () => {
      clearInterval(timer);
      signal?.removeEventListener('abort', onAbort);
      const endMs = exitedAtMs ?? performance.now();
      if (spawnError !== null && exitedAtMs === null) {
        rejectPromise(new Eco3dError('ECO3D_ERR_CONFIG', `cannot start the plugin sandbox: ${spawnError.message}`, { cause: spawnError }));
        return;
      }
      let doc: RunnerDoc | null = null;
      if (verdict === null && resultChunks.length > 0) {
        try {
          doc = JSON.parse(Buffer.concat(resultChunks).toString('utf8')) as RunnerDoc;
        } catch {
          doc = null;
        }
      }
      // The runner's own account (getrusage) is exact for short runs the watchdog barely saw.
      const selfCpuMs = typeof doc?.usage?.cpuMs === 'number' ? doc.usage.cpuMs : 0;
      // The child's RSS at the end (its getrusage peak would include the pre-exec fork of this process).
      const selfRssKb = typeof doc?.usage?.maxRssKb === 'number' ? doc.usage.maxRssKb : 0;
      const figures: RunFigures = {
        cpuMs: Math.round(Math.max((lastCpuTicks * 1000) / tools.clockTicksPerS, selfCpuMs)),
        wallMs: Math.round((endMs - startMs) * 10) / 10,
        peakRssMb: Math.round(Math.max(peakRssKb, selfRssKb) / 102.4) / 10,
      };
      const stderr = stderrHead();
      const logs = (): string => {
        const out = [stderr.trim(), stdoutHead().trim()].filter((s) => s !== '').join('\n');
        return out === '' ? '' : `\n--- plugin output (head) ---\n${out.slice(0, 2000)}`;
      };
      const failed = (reason: PluginFailureReason, detail: string, killLatencyMs?: number): PluginRunResult =>
        killLatencyMs === undefined ? { status: 'failed', reason, detail, ...figures } : { status: 'failed', reason, detail, killLatencyMs, ...figures };

      if (verdict !== null) {
        const v: Verdict = verdict;
        resolvePromise(failed(v.reason, v.detail, Math.round((endMs - v.detectedAtMs) * 10) / 10));
        return;
      }
      if (doc === null) {
        // The isolation itself failed before the plugin started: fail closed, loudly.
        if (/^(unshare|setpriv|prlimit): /m.test(stderr)) {
          rejectPromise(new Eco3dError('ECO3D_ERR_CONFIG', `the plugin sandbox could not be set up: ${stderr.trim().slice(0, 500)}`));
          return;
        }
        const how = exitSignal !== null ? `killed by ${exitSignal}` : `exit code ${exitCode}`;
        if (/heap out of memory|Reached heap limit/.test(stderr)) resolvePromise(failed('memory-limit', `the JavaScript heap reached ${limits.memoryMb} MB (${how})`));
        else if (exitSignal === 'SIGXCPU') resolvePromise(failed('cpu-limit', `stopped by the CPU-time backstop, RLIMIT_CPU (${how})`));
        else resolvePromise(failed('crashed', `the plugin process ended without a result (${how})${logs()}`));
        return;
      }
      if (doc.ok === true) {
        const parsed = parsePluginOutput(doc.output);
        if (!parsed.ok) {
          resolvePromise(failed('bad-output', parsed.problem));
          return;
        }
        const sizeBytes = Buffer.byteLength(JSON.stringify(parsed.output));
        if (sizeBytes > limits.outputBytes) resolvePromise(failed('bad-output', `output of ${sizeBytes} bytes over the limit of ${limits.outputBytes}`));
        else resolvePromise({ status: 'completed', output: parsed.output, ...figures });
        return;
      }
      const code = typeof doc.error?.code === 'string' ? doc.error.code : undefined;
      const message = typeof doc.error?.message === 'string' ? doc.error.message : 'unknown error';
      if (code === NOT_JSON_CODE) resolvePromise(failed('bad-output', `the output is not JSON: ${message}`));
      else if (code !== undefined && FORBIDDEN_CODES.has(code)) resolvePromise(failed('forbidden', `the sandbox refused: ${code}: ${message}`));
      else resolvePromise(failed('crashed', `${code === undefined ? '' : `${code}: `}${message}${logs()}`));
    });
    // A plugin that exits while a grandchild (there should be none) holds a pipe must not hang us.
    child.once('exit', () => {
      const t = setTimeout(() => {
        for (const s of child.stdio) s?.destroy();
      }, 1000);
      t.unref();
    });
  });
  return {
    result,
    go() {
      startMs = performance.now();
      // A plugin yields the CPU to acquisitions and the server: niced before it runs a line. A
      // thread its start-up was still creating is caught by the second pass, at the first watch.
      if (child.pid !== undefined) {
        try {
          setThreadsNice(child.pid, PLUGIN_NICE);
        } catch (err) {
          killNow();
          throw new Eco3dError('ECO3D_ERR_CONFIG', `cannot lower the plugin's priority: ${(err as Error).message}`, { cause: err });
        }
        reniceAgain = true;
      }
      child.stdin?.end('go\n');
    },
    kill: () => killNow(),
  };
}

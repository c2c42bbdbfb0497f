// The automated validation of a submitted version (publication pipeline, step 2), and the
// unpacked plugin files both it and the runner use.
//
// Analysis plugin: run in the sandbox, as the runner would, on every demo de-identified study;
// each run must complete within the manifest's limits with valid output, and the SR built from
// each output must pass dicom3tools' dciodvfy with no error. Live plugin: a browser module must
// be present and parse as JavaScript (node --check); an external client has nothing to run here
// (its behaviour is bounded by its token's scopes), which the report says.
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Eco3dError } from '../protocols/errors.ts';
import { entryModulePath, parseManifest, type PluginManifest } from './manifest.ts';
import { MANIFEST_FILE, verifyPackage } from './package.ts';
import type { ValidationReport, ValidationRun } from './registry.ts';
import type { PluginInput, PluginOutput, PluginRunResult, RunPluginOptions } from './sandbox.ts';

/**
 * The unpacked files of a package, once per package checksum under `root`. A package is verified
 * when unpacked (a package file changed on disk has another checksum, so it is verified again,
 * and refused); later runs of the same bytes only read its manifest back.
 */
export async function unpackedPackage(packageFile: string, root: string): Promise<{ dir: string; manifest: PluginManifest }> {
  const bytes = new Uint8Array(await readFile(packageFile));
  const sha = createHash('sha256').update(bytes).digest('hex');
  const dir = join(root, sha);
  if (existsSync(join(dir, '.complete'))) return { dir, manifest: parseManifest(JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as unknown) };
  const pkg = verifyPackage(bytes);
  const tmp = join(root, `.${sha}.${randomUUID()}`);
  for (const [path, data] of pkg.files) {
    const target = join(tmp, path);
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, data, { mode: 0o644 });
  }
  await writeFile(join(tmp, '.complete'), '');
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return { dir, manifest: pkg.manifest };
}

export interface DemoVolume {
  readonly ref: string;
  readonly path: string;
}

export interface ValidationDeps {
  readonly demoStudies: () => Promise<readonly DemoVolume[]>;
  readonly readVolume: (path: string) => Promise<PluginInput['volume']>;
  readonly runPlugin: (o: RunPluginOptions) => Promise<PluginRunResult>;
  /** The SR the platform would store for this output on this demo study (Part-10 bytes). */
  readonly resultSr: (manifest: PluginManifest, study: DemoVolume, output: PluginOutput) => Promise<Uint8Array>;
  /** Every run, for the record (marketplace_runs). */
  readonly onRun?: (result: PluginRunResult) => Promise<void>;
  readonly tmpRoot?: string;
}

/** Problems dciodvfy finds in a DICOM file (its `Error` lines); [] when it is valid. */
export async function dciodvfyErrors(bytes: Uint8Array, tmpRoot?: string): Promise<string[]> {
  const dir = await mkdtemp(join(tmpRoot ?? tmpdir(), 'eco3d-dciodvfy-'));
  try {
    const file = join(dir, 'sr.dcm');
    await writeFile(file, bytes);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('dciodvfy', [file], { stdio: ['ignore', 'pipe', 'pipe'] });
      let text = '';
      p.stdout.on('data', (c: Buffer) => (text += c.toString()));
      p.stderr.on('data', (c: Buffer) => (text += c.toString()));
      p.once('error', (err) =>
        reject(new Eco3dError('ECO3D_ERR_CONFIG', `dciodvfy cannot run (${err.message}): plugin validation needs dicom3tools installed`, { cause: err })),
      );
      p.once('close', () => resolve(text));
    });
    return out.split('\n').filter((l) => /^Error/.test(l.trim()));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function nodeCheck(file: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, ['--check', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.once('error', (e) => resolve(e.message));
    p.once('close', (code) => resolve(code === 0 ? undefined : err.trim().split('\n').slice(0, 5).join('\n')));
  });
}

/** Validates an unpacked plugin; never throws for the plugin's own faults (they are in the report). */
export async function validatePlugin(deps: ValidationDeps, dir: string, manifest: PluginManifest): Promise<ValidationReport> {
  const problems: string[] = [];
  const runs: ValidationRun[] = [];
  if (manifest.kind === 'live') {
    const module = entryModulePath(manifest);
    if (module === undefined) return { ok: true, runs, problems: ['external live client: nothing to run on the platform; it reaches only what its token’s scopes allow'] };
    const problem = await nodeCheck(join(dir, module));
    if (problem !== undefined) problems.push(`${module} does not parse: ${problem}`);
    return { ok: problems.length === 0, runs, problems };
  }
  const studies = await deps.demoStudies();
  if (studies.length === 0) throw new Eco3dError('ECO3D_ERR_CONFIG', 'no demo studies to validate plugins on');
  let srValid = true;
  for (const study of studies) {
    const volume = await deps.readVolume(study.path);
    const result = await deps.runPlugin({
      pluginDir: dir,
      entry: manifest.entry as string,
      input: { volume, study: { ref: study.ref } },
      limits: manifest.limits,
      ...(deps.tmpRoot === undefined ? {} : { tmpRoot: deps.tmpRoot }),
    });
    await deps.onRun?.(result);
    if (result.status === 'failed') {
      runs.push({ study: study.ref, status: 'failed', reason: result.reason, detail: result.detail.slice(0, 2000), wallMs: Math.round(result.wallMs) });
      problems.push(`${study.ref}: the plugin ${result.reason === 'crashed' ? 'crashed' : `failed (${result.reason})`}: ${result.detail.slice(0, 300)}`);
      continue;
    }
    runs.push({ study: study.ref, status: 'completed', wallMs: Math.round(result.wallMs), measurements: result.output.measurements.map((m) => ({ name: m.name, value: m.value, unit: m.unit })) });
    try {
      const errors = await dciodvfyErrors(await deps.resultSr(manifest, study, result.output), deps.tmpRoot);
      if (errors.length > 0) {
        srValid = false;
        problems.push(`${study.ref}: the SR of the results is not valid: ${errors.slice(0, 5).join(' | ')}`);
      }
    } catch (err) {
      if (err instanceof Eco3dError && err.code === 'ECO3D_ERR_CONFIG') throw err;
      srValid = false;
      problems.push(`${study.ref}: the results cannot be written as SR: ${(err as Error).message}`);
    }
  }
  return { ok: problems.length === 0, runs, srValid, problems };
}

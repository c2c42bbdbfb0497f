// `eco3d plugin …`: a developer's way from an empty folder to a published plugin.
//   eco3d plugin init DIR --id com.example.thing --name "Thing" [--kind analysis|live]
//   eco3d plugin keygen --out developer-key.pem         (prints the public key to register)
//   eco3d plugin test DIR                                (the sandbox on the demo studies, as the platform validates)
//   eco3d plugin pack DIR --key developer-key.pem --out thing-1.0.0.zip
//   eco3d plugin publish thing-1.0.0.zip --server URL    (ECO3D_TOKEN, or --user with ECO3D_PASSWORD)
// Exit codes: 0 done; 2 the plugin failed (test or validation); 1 usage or transport error.
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  generateDeveloperKey,
  keyFingerprint,
  loadDeveloperKey,
  MANIFEST_FILE,
  packPlugin,
  parseManifest,
  readVolumeInput,
  runPlugin,
  validatePlugin,
  writeDemoStudies,
  type PluginManifestInput,
  type ValidationReport,
} from '../marketplace/index.ts';
import { Eco3dError } from '../protocols/index.ts';
import { demoResultSr } from './marketplace.ts';

const ANALYSIS_TEMPLATE = `// An Eco3D analysis plugin. The platform runs it isolated (no network, no files but its own,
// memory/CPU/time limits from manifest.json) on each completed scan of a hospital that enabled it.
//
// input.volume: { dims: [x, y, z], spacingMm: [x, y, z], voxels: Uint8Array } — de-identified
//   8-bit voxels, x varies fastest (index = x + dims[0] * (y + dims[1] * z)).
// input.study.ref: an opaque reference (never an identifier of the patient or the study).
// Return { measurements: [{ name, value, unit (UCUM), concept? }], findings: [{ text }] }:
// the platform stores them as a DICOM SR (TID 1500) in the real study and as FHIR Observations.
export async function analyze(input) {
  const { dims, spacingMm, voxels } = input.volume;
  let sum = 0;
  for (let i = 0; i < voxels.length; i++) sum += voxels[i];
  const mean = voxels.length === 0 ? 0 : sum / voxels.length;
  const voxelMl = (spacingMm[0] * spacingMm[1] * spacingMm[2]) / 1000;
  return {
    measurements: [
      { name: 'Mean echogenicity', value: Math.round(mean * 100) / 100, unit: '1' },
      { name: 'Scanned volume', value: Math.round(voxels.length * voxelMl * 100) / 100, unit: 'ml', concept: { value: '118565006', scheme: 'SCT', meaning: 'Volume' } },
    ],
    findings: [{ text: \`Grid \${dims.join(' x ')} voxels\` }],
  };
}
`;

const LIVE_TEMPLATE = `// An Eco3D live (AR) plugin: browser code using the SDK (marketplace/sdk: runArPlugin), or any
// external client holding the scoped token the hospital's OAuth2 client credentials give it.
export const about = 'live plugin';
`;

export async function pluginInit(o: { dir: string; id: string; name: string; kind: 'analysis' | 'live'; vendor: string }): Promise<string[]> {
  const dir = resolve(o.dir);
  if (existsSync(join(dir, MANIFEST_FILE))) throw new Eco3dError('ECO3D_ERR_CONFLICT', `${join(dir, MANIFEST_FILE)} exists: init makes a new plugin`);
  const manifest: PluginManifestInput =
    o.kind === 'analysis'
      ? {
          id: o.id,
          name: o.name,
          version: '0.1.0',
          vendor: { name: o.vendor },
          description: `${o.name}: an analysis plugin for Eco3D.`,
          kind: 'analysis',
          tier: 'research',
          scopes: ['study:deidentified:read', 'results:write'],
          pricing: { model: 'per-use', amountCents: 0 },
          entry: 'index.mjs',
          limits: { memoryMb: 256, cpuTimeMs: 20_000, wallTimeMs: 30_000 },
        }
      : {
          id: o.id,
          name: o.name,
          version: '0.1.0',
          vendor: { name: o.vendor },
          description: `${o.name}: a live plugin for Eco3D.`,
          kind: 'live',
          tier: 'research',
          scopes: ['live:video', 'live:pose'],
          pricing: { model: 'subscription', monthlyAmountCents: 0 },
          entry: { kind: 'browser', module: 'index.mjs' },
        };
  parseManifest(manifest);
  await mkdir(dir, { recursive: true });
  const written = [join(dir, MANIFEST_FILE), join(dir, 'index.mjs')];
  await writeFile(written[0]!, `${JSON.stringify(manifest, null, 2)}\n`);
  await writeFile(written[1]!, o.kind === 'analysis' ? ANALYSIS_TEMPLATE : LIVE_TEMPLATE);
  return written;
}

export async function pluginKeygen(out: string): Promise<{ publicKey: string; fingerprint: string }> {
  if (existsSync(out)) throw new Eco3dError('ECO3D_ERR_CONFLICT', `${out} exists: a key is never overwritten`);
  const k = generateDeveloperKey();
  await writeFile(out, k.privateKeyPem, { mode: 0o600 });
  await chmod(out, 0o600);
  return { publicKey: k.publicKey, fingerprint: keyFingerprint(Buffer.from(k.publicKey, 'base64')) };
}

/** Where `plugin test` keeps the demo studies (generated once). */
export const demoCacheDir = (env: NodeJS.ProcessEnv): string => env['ECO3D_DEMO_DIR'] ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'eco3d', 'demo-studies');

/** Runs the plugin as the platform's validation does: sandbox, every demo study, SR through dciodvfy. */
export async function pluginTest(o: { dir: string; demoDir: string }): Promise<ValidationReport> {
  const dir = resolve(o.dir);
  const manifest = parseManifest(JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as unknown);
  const demo = await writeDemoStudies(o.demoDir);
  return validatePlugin({ demoStudies: async () => demo, readVolume: readVolumeInput, runPlugin, resultSr: (m, s, out) => demoResultSr(demo, m, s, out) }, dir, manifest);
}

export async function pluginPack(o: { dir: string; keyFile: string; out?: string | undefined }): Promise<{ file: string; id: string; version: string; sizeBytes: number }> {
  const dir = resolve(o.dir);
  const manifest = parseManifest(JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as unknown);
  const bytes = await packPlugin(dir, loadDeveloperKey(await readFile(o.keyFile, 'utf8')));
  const file = resolve(o.out ?? `${manifest.id}-${manifest.version}.zip`);
  await writeFile(file, bytes);
  return { file, id: manifest.id, version: manifest.version, sizeBytes: bytes.byteLength };
}

interface VersionAnswer {
  pluginId: string;
  version: string;
  status: string;
  validation?: ValidationReport;
}

/** Submits a package and (with `wait`) follows it until validation is over. */
export async function pluginPublish(o: {
  file: string;
  server: string;
  token?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  waitMs: number;
  progress: (line: string) => void;
}): Promise<VersionAnswer> {
  const base = o.server.replace(/\/+$/, '');
  let token = o.token;
  if (token === undefined) {
    if (o.user === undefined || o.password === undefined) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'set ECO3D_TOKEN, or give --user with ECO3D_PASSWORD in the environment');
    const r = await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: o.user, password: o.password }) });
    const b = (await r.json()) as { token?: string; code?: string; message?: string };
    if (!r.ok || b.token === undefined) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', `login failed: ${b.code ?? r.status}: ${b.message ?? ''}`);
    token = b.token;
  }
  const auth = { authorization: `Bearer ${token}` };
  const body = await readFile(o.file);
  const r = await fetch(`${base}/api/marketplace/developer/versions`, { method: 'POST', headers: { ...auth, 'content-type': 'application/zip' }, body });
  const answer = (await r.json()) as { version?: VersionAnswer; code?: string; message?: string };
  if (!r.ok || answer.version === undefined) throw new Eco3dError(((answer.code as Eco3dError['code'] | undefined) ?? 'ECO3D_ERR_UPSTREAM'), `submission refused (${r.status}): ${answer.message ?? ''}`);
  let v = answer.version;
  o.progress(`submitted ${v.pluginId} ${v.version}: ${v.status}`);
  const deadline = Date.now() + o.waitMs;
  while ((v.status === 'submitted' || v.status === 'validating') && Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 1000));
    const list = (await (await fetch(`${base}/api/marketplace/developer/plugins`, { headers: auth })).json()) as { plugins?: { id: string; versions: VersionAnswer[] }[] };
    const found = list.plugins?.find((p) => p.id === v.pluginId)?.versions.find((x) => x.version === v.version);
    if (found !== undefined && found.status !== v.status) {
      v = found;
      o.progress(`${v.pluginId} ${v.version}: ${v.status}`);
    }
  }
  return v;
}

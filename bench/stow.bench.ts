// STOW-RS ingest throughput: our archive against Orthanc, on the same files, on this machine.
//
// - Ours: a real fastify server with registerDicomWeb + DicomArchive on PGlite (a temporary data
//   directory), in a child process of its own (like Orthanc, so that the client never shares a
//   thread with the server), over loopback HTTP.
// - Orthanc: the Debian Orthanc + DICOMweb plugin (test/orthanc.ts), Basic auth on.
// - The client: archive/stow-client.ts, one STOW-RS request per study, streamed from files.
//
// The mix, per study, as an acquisition makes it: one Enhanced US Volume of 256³ and two of
// 128³, two Ultrasound Multi-frame instances of 100 frames of 640×480 (B-mode), four measurement
// reports (Comprehensive 3D SR): 9 instances, ~82 MB. STUDIES distinct studies (fresh UIDs: a
// re-send of a known instance is a cheap duplicate for both servers) go to both servers; each
// server gets a small warm-up study first (not counted), and the order alternates per study.
// Figures: MB/s (10^6 bytes of request body per second) and instances/s per server, and the
// ratio ours / Orthanc (the goal: ≥ 1).
//
// `node --import tsx bench/stow.bench.ts --serve-eco3d DIR` is the child: it prints the
// server's base URL on stdout and runs until its stdin closes.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stowInstances, type StowAuth } from '../archive/stow-client.ts';
import { buildTestStudy, startOrthanc, type TestStudy } from '../test/orthanc.ts';
import { bench } from './stats.ts';

const STUDIES = Number(process.env.STOW_BENCH_STUDIES ?? 4);
const TENANT = 'bench';
const TIMEOUT_MS = 600_000;

if (process.argv[2] === '--serve-eco3d') {
  await serveEco3d(process.argv[3]!);
} else {
  await main();
}

// --- the child: our server ----------------------------------------------------------------------

async function serveEco3d(dir: string): Promise<void> {
  const { default: Fastify } = await import('fastify');
  const { DicomArchive, registerDicomWeb, inlineRenderer } = await import('../archive/index.ts');
  const { openPglite, migrate, ensureTenant, appendAudit } = await import('../store/index.ts');
  const db = await openPglite(join(dir, 'db'));
  await migrate(db);
  await ensureTenant(db, { id: TENANT, name: 'Bench hospital' });
  const archive = new DicomArchive({ root: join(dir, 'archive'), db });
  const app = Fastify({ logger: false });
  // What server/app.ts's onRequest hook does after checking a session: a sonographer of the tenant.
  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req) => {
    (req as unknown as { principal: unknown }).principal = { username: 'bench', tenantId: TENANT, role: 'sonographer', kind: 'session', scopes: null };
  });
  await registerDicomWeb(app, { archive, audit: async (e) => void (await appendAudit(db, e)), maxStowBytes: 1 << 30, renderer: inlineRenderer });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  console.log(`${url}/dicom-web`);
  process.stdin.resume();
  await new Promise<void>((resolve) => process.stdin.once('end', resolve));
  await app.close();
  await db.close();
}

async function startEco3dChild(dir: string): Promise<{ baseUrl: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--serve-eco3d', dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const baseUrl = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`the Eco3D server child exited (${code}) before listening`)));
  });
  return {
    baseUrl,
    stop: async () => {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// --- the parent: files, servers, timings ------------------------------------------------------------

interface StudyFiles {
  readonly study: TestStudy;
  readonly files: string[];
  readonly bytes: number;
}

async function writeStudy(dir: string, study: TestStudy): Promise<StudyFiles> {
  const sdir = join(dir, study.studyInstanceUid);
  await mkdir(sdir);
  const files: string[] = [];
  let bytes = 0;
  for (const inst of study.instances) {
    const f = join(sdir, `${inst.sopInstanceUid}.dcm`);
    await writeFile(f, inst.bytes);
    files.push(f);
    bytes += inst.bytes.byteLength;
  }
  return { study, files, bytes };
}

async function push(baseUrl: string, auth: StowAuth | undefined, s: StudyFiles): Promise<number> {
  const t0 = performance.now();
  const r = await stowInstances(baseUrl, s.files, { auth, timeoutMs: TIMEOUT_MS });
  const ms = performance.now() - t0;
  const want = new Set(s.study.instances.map((i) => i.sopInstanceUid));
  if (r.stored.length !== want.size || !r.stored.every((x) => want.has(x.sopInstanceUid))) {
    throw new Error(`${baseUrl}: ${r.stored.length} of ${want.size} instances confirmed`);
  }
  return ms;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-stow-bench-'));
  const cleanup: Array<() => Promise<void>> = [async () => rm(dir, { recursive: true, force: true })];
  try {
    const t0 = performance.now();
    const warmup = await writeStudy(dir, buildTestStudy({ volumes: [[64, 64, 64]], multiframes: [{ frames: 10, width: 640, height: 480 }], reports: 1 }));
    const studies: StudyFiles[] = [];
    for (let k = 0; k < STUDIES; k++) {
      const study = buildTestStudy({
        volumes: [[256, 256, 256], [128, 128, 128], [128, 128, 128]],
        multiframes: [{ frames: 100, width: 640, height: 480 }, { frames: 100, width: 640, height: 480 }],
        reports: 4,
      });
      studies.push(await writeStudy(dir, study));
    }
    const totalBytes = studies.reduce((n, s) => n + s.bytes, 0);
    const totalInstances = studies.reduce((n, s) => n + s.files.length, 0);
    console.error(`# ${STUDIES} studies, ${totalInstances} instances, ${(totalBytes / 1e6).toFixed(1)} MB (made in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);

    const eco3dDir = join(dir, 'eco3d');
    await mkdir(eco3dDir);
    const eco3d = await startEco3dChild(eco3dDir);
    cleanup.unshift(eco3d.stop);
    const orthanc = await startOrthanc();
    cleanup.unshift(() => orthanc.close());
    const orthancAuth: StowAuth = { kind: 'basic', username: orthanc.credentials!.username, password: orthanc.credentials!.password };

    await push(eco3d.baseUrl, undefined, warmup);
    await push(orthanc.dicomWebUrl, orthancAuth, warmup);
    let ecoMs = 0;
    let orthancMs = 0;
    for (const [k, s] of studies.entries()) {
      // Alternate who goes first: the page cache and the other process's leftovers even out.
      const runs = [
        async () => (ecoMs += await push(eco3d.baseUrl, undefined, s)),
        async () => (orthancMs += await push(orthanc.dicomWebUrl, orthancAuth, s)),
      ];
      if (k % 2 === 1) runs.reverse();
      for (const run of runs) await run();
    }
    console.error(`# eco3d ${ecoMs.toFixed(0)} ms, orthanc ${orthancMs.toFixed(0)} ms for the same ${totalInstances} instances`);
    const ecoMbPerS = totalBytes / 1e6 / (ecoMs / 1000);
    const orthancMbPerS = totalBytes / 1e6 / (orthancMs / 1000);
    bench('stow-eco3d-mb-per-s', Math.round(ecoMbPerS * 10) / 10, 'MB/s');
    bench('stow-eco3d-instances-per-s', Math.round((totalInstances / (ecoMs / 1000)) * 10) / 10, 'instances/s');
    bench('stow-orthanc-mb-per-s', Math.round(orthancMbPerS * 10) / 10, 'MB/s');
    bench('stow-orthanc-instances-per-s', Math.round((totalInstances / (orthancMs / 1000)) * 10) / 10, 'instances/s');
    bench('stow-eco3d-vs-orthanc-ratio', Math.round((ecoMbPerS / orthancMbPerS) * 100) / 100, 'x');
  } finally {
    for (const c of cleanup) await c();
  }
}

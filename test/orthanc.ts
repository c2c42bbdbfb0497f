// A real Orthanc for tests and benchmarks (Debian `orthanc` + `orthanc-dicomweb`; scripts/test.sh
// installs them when missing). Test and bench files only.
//
//   const orthanc = await startOrthanc();
//   await fetch(`${orthanc.dicomWebUrl}/studies`, { headers: orthanc.authHeaders });
//   await orthanc.stop();   // the process only: storage kept, start() brings it back on the same ports
//   await orthanc.close();  // the process and its temporary directory
//
// Each instance gets its own config, storage and index in a temporary directory and free,
// non-default ports on loopback (Orthanc 1.10 has no bind-address option: FACTS.md), so it
// neither depends on nor disturbs a system Orthanc the Debian package may have started on
// 8042/4242 (on these machines none runs: there is no init to start it). HTTP Basic
// authentication is on for real, with a user made up per instance.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID, encodeMeasurementReport, type MeasurementReportInput } from '../protocols/dicom-sr.ts';
import {
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  US_MULTIFRAME_SOP_CLASS_UID,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  newUid,
  type EnhancedUsVolumeInput,
  type UsMultiframeInput,
} from '../protocols/dicom-us.ts';
import type { ImageFrame } from '../protocols/imaging.ts';

export const ORTHANC_BINARY = '/usr/sbin/Orthanc';
export const ORTHANC_DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so';

export interface OrthancOptions {
  /** Default: Basic auth with a user made up for this instance. `'none'` turns authentication off. */
  readonly auth?: { readonly username: string; readonly password: string } | 'none';
  /** DICOM AE title of this Orthanc (its C-STORE SCP). Default `ORTHANC`. */
  readonly aet?: string;
  /** How long to wait for `/system` after a launch. Default 20 s (a loaded test machine). */
  readonly startTimeoutMs?: number;
  /** Extra top-level configuration keys (merged over ours). */
  readonly config?: Readonly<Record<string, unknown>>;
}

export interface RunningOrthanc {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** `<url>/dicom-web` (no trailing slash) */
  readonly dicomWebUrl: string;
  readonly httpPort: number;
  readonly dicomPort: number;
  readonly aet: string;
  /** Undefined when started with `auth: 'none'`. */
  readonly credentials: { readonly username: string; readonly password: string } | undefined;
  /** The `Authorization` header to send (empty without auth). */
  readonly authHeaders: Readonly<Record<string, string>>;
  readonly dir: string;
  /** The PID of the running process, undefined while stopped. */
  readonly pid: number | undefined;
  /** Orthanc's own log (stderr and stdout), the last 64 kB: for failure messages. */
  logTail(): string;
  /** GET/POST/… against the REST API with the credentials; throws on a network error only. */
  request(path: string, init?: RequestInit): Promise<Response>;
  /** Stops the process (SIGTERM, then SIGKILL after 10 s); storage and ports are kept. */
  stop(): Promise<void>;
  /** Starts it again after stop(), on the same ports and storage; resolves once `/system` answers. */
  start(): Promise<void>;
  /** stop() and remove the temporary directory. Idempotent. */
  close(): Promise<void>;
}

/** A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

const LOG_TAIL_CHARS = 64 * 1024;

export async function startOrthanc(options: OrthancOptions = {}): Promise<RunningOrthanc> {
  for (const f of [ORTHANC_BINARY, ORTHANC_DICOMWEB_PLUGIN]) {
    // Fail loudly: the tests that need Orthanc never skip (scripts/test.sh installs it).
    if (!existsSync(f)) throw new Error(`${f} is missing: apt-get install orthanc orthanc-dicomweb (scripts/test.sh does)`);
  }
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-orthanc-'));
  const storageDir = join(dir, 'storage');
  await mkdir(storageDir);
  const [httpPort, dicomPort] = await Promise.all([freePort(), freePort()]);
  if (httpPort === dicomPort) throw new Error('freePort gave the same port twice');
  const credentials = options.auth === 'none' ? undefined : (options.auth ?? { username: 'eco3d-test', password: randomBytes(12).toString('hex') });
  const aet = options.aet ?? 'ORTHANC';
  const config = {
    Name: `eco3d-test-${httpPort}`,
    StorageDirectory: storageDir,
    IndexDirectory: storageDir,
    // Only the DICOMweb plugin: the Debian default loads the whole plugin folder.
    Plugins: [ORTHANC_DICOMWEB_PLUGIN],
    HttpPort: httpPort,
    DicomPort: dicomPort,
    DicomAet: aet,
    DicomServerEnabled: true,
    // No bind address in 1.10: loopback-only access is the best we can ask for.
    RemoteAccessAllowed: false,
    AuthenticationEnabled: credentials !== undefined,
    RegisteredUsers: credentials === undefined ? {} : { [credentials.username]: credentials.password },
    HttpDescribeErrors: true,
    OrthancExplorerEnabled: false,
    WebDavEnabled: false,
    SaveJobs: false,
    // Enhanced US Volume and friends over C-STORE.
    UnknownSopClassAccepted: true,
    DicomWeb: {
      Enable: true,
      Root: '/dicom-web/',
      EnableWado: false,
      // Without the port the retrieve URLs in QIDO answers point at port 80 (FACTS.md).
      Host: `127.0.0.1:${httpPort}`,
      Ssl: false,
    },
    ...options.config,
  };
  const configFile = join(dir, 'orthanc.json');
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const url = `http://127.0.0.1:${httpPort}`;
  const authHeaders: Record<string, string> =
    credentials === undefined ? {} : { authorization: `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}` };

  const dirGuard = (): void => rmSync(dir, { recursive: true, force: true });
  process.once('exit', dirGuard);
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let log = '';
  let closed = false;

  const request = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`${url}${path}`, {
      ...init,
      headers: { ...authHeaders, ...(init.headers as Record<string, string> | undefined) },
      signal: init.signal ?? AbortSignal.timeout(30_000),
    });

  const launch = async (): Promise<void> => {
    if (closed) throw new Error('this Orthanc was closed');
    if (child !== undefined) return;
    const p = spawn(ORTHANC_BINARY, [configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    child = p;
    // A test process that dies without close() (an uncaught error, --test-force-exit) takes its
    // Orthanc with it: an orphan would keep its ports and its temporary directory.
    const orphanGuard = (): void => {
      p.kill('SIGKILL');
    };
    process.once('exit', orphanGuard);
    p.once('exit', () => process.removeListener('exit', orphanGuard));
    const append = (chunk: Buffer): void => {
      log = (log + chunk.toString('utf8')).slice(-LOG_TAIL_CHARS);
    };
    p.stdout?.on('data', append);
    p.stderr?.on('data', append);
    let exitedEarly: ((why: string) => void) | undefined;
    exited = new Promise<void>((resolve) => {
      const done = (why: string): void => {
        if (child === p) child = undefined;
        exitedEarly?.(why);
        resolve();
      };
      p.once('exit', (code, signal) => done(`exit code ${code ?? signal}`));
      p.once('error', (err) => done(err.message));
    });
    // A process that dies during start-up ends the wait at once, with its log.
    const died = new Promise<never>((_resolve, reject) => {
      exitedEarly = (why) => reject(new Error(`Orthanc exited during start-up (${why}):\n${log}`));
    });
    died.catch(() => undefined); // observed by the race below, or irrelevant once it is up
    try {
      await Promise.race([waitForSystem(request, options.startTimeoutMs ?? 20_000, () => log), died]);
    } catch (err) {
      await kill();
      throw err;
    } finally {
      exitedEarly = undefined;
    }
  };

  const kill = async (): Promise<void> => {
    const p = child;
    if (p === undefined) return;
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  const orthanc: RunningOrthanc = {
    url,
    dicomWebUrl: `${url}/dicom-web`,
    httpPort,
    dicomPort,
    aet,
    credentials,
    authHeaders,
    dir,
    get pid() {
      return child?.pid;
    },
    logTail: () => log,
    request,
    stop: kill,
    start: launch,
    async close() {
      if (closed) return;
      await kill();
      closed = true;
      await rm(dir, { recursive: true, force: true });
      process.removeListener('exit', dirGuard);
    },
  };
  try {
    await launch();
  } catch (err) {
    await orthanc.close();
    throw err;
  }
  return orthanc;
}

// Polls /system until it answers 200 (about 0.1 s after launch on an idle machine, FACTS.md).
async function waitForSystem(request: (path: string, init?: RequestInit) => Promise<Response>, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    try {
      const res = await request('/system', { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) {
        await res.arrayBuffer();
        return;
      }
      last = `HTTP ${res.status}: ${await res.text()}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`Orthanc did not answer /system within ${timeoutMs} ms (last: ${last}):\n${log()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- a study to push ----------------------------------------------------------------------------

export interface TestInstance {
  readonly kind: 'volume' | 'frames' | 'sr';
  readonly sopClassUid: string;
  readonly sopInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly bytes: Uint8Array;
  /** The Pixel Data value as written (volume and frames), for byte comparisons. */
  readonly pixelData: Uint8Array | undefined;
  readonly numberOfFrames: number | undefined;
  readonly rows: number | undefined;
  readonly columns: number | undefined;
}

export interface TestStudy {
  readonly studyInstanceUid: string;
  readonly patientId: string;
  readonly patientName: string;
  readonly accessionNumber: string;
  readonly instances: readonly TestInstance[];
}

export interface TestStudyShape {
  /** Enhanced US Volumes, each its own series: voxel dims [x, y, z]. */
  readonly volumes?: ReadonlyArray<readonly [number, number, number]>;
  /** Ultrasound Multi-frame instances (one series): frame count and size. */
  readonly multiframes?: ReadonlyArray<{ readonly frames: number; readonly width: number; readonly height: number }>;
  /** Measurement reports (Comprehensive 3D SR) on the first volume, one series. */
  readonly reports?: number;
}

/**
 * A study as an Eco3D acquisition makes it: Enhanced US Volume(s), the B-mode frames as an
 * Ultrasound Multi-frame, measurement report(s). Pixel values depend on every index, so a
 * swapped frame or axis changes bytes.
 */
export function buildTestStudy(shape: TestStudyShape = {}): TestStudy {
  const volumes = shape.volumes ?? [[40, 32, 24]];
  const multiframes = shape.multiframes ?? [{ frames: 6, width: 48, height: 40 }];
  const reports = shape.reports ?? 1;
  const studyInstanceUid = newUid();
  const patient = { name: 'Orthanc^Test', id: `P-${randomBytes(3).toString('hex')}`, birthDate: '1970-01-01', sex: 'F' as const };
  const study = { studyInstanceUid, studyId: 'S1', accessionNumber: `ACC-${randomBytes(3).toString('hex')}`, studyDateTime: '2026-03-01T10:20:30Z', description: 'Robotic 3D US (test)' };
  const equipment = { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d test'] };
  const common = { patient, study, equipment, acquisitionDateTime: '2026-03-01T10:21:00Z', contentDateTime: '2026-03-01T10:22:00Z', anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' } };
  const frameOfReferenceUid = newUid();
  const identity = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  const instances: TestInstance[] = [];
  const volumeRefs: Array<{ sopInstanceUid: string; seriesInstanceUid: string; volumeFrameOfReferenceUid: string }> = [];
  volumes.forEach(([nx, ny, nz], k) => {
    const data = new Uint8Array(nx * ny * nz);
    for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) data[(z * ny + y) * nx + x] = (x * 7 + y * 13 + z * 29 + k) & 0xff;
    const input: EnhancedUsVolumeInput = {
      ...common,
      seriesInstanceUid: newUid(),
      seriesNumber: 2 + k,
      seriesDescription: 'Reconstructed volume',
      sopInstanceUid: newUid(),
      instanceNumber: 1,
      volume: { grid: { dims: [nx, ny, nz], spacingMm: { x: 0.3, y: 0.3, z: 0.3 }, originMm: { x: 400, y: -30, z: 10 } }, data },
      acquisitionDurationS: 8,
      frameOfReferenceUid,
      volumeFrameOfReferenceUid: newUid(),
      dimensionOrganizationUid: newUid(),
      synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
      volumeToTransducer: new Float64Array([1, 0, 0, -405, 0, 0, -1, 30, 0, 1, 0, 25, 0, 0, 0, 1]),
      volumeToTransducerRelationship: 'POSITION_VAR',
      tableFrameOfReferenceUid: newUid(),
      volumeToTable: identity,
      tableToPatient: identity,
      transducer: {
        description: 'Eco3D sim linear',
        scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
        geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
        beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
        application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
      },
      scan: { view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' }, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 48 },
    };
    volumeRefs.push({ sopInstanceUid: input.sopInstanceUid, seriesInstanceUid: input.seriesInstanceUid, volumeFrameOfReferenceUid: input.volumeFrameOfReferenceUid });
    instances.push({
      kind: 'volume',
      sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID,
      sopInstanceUid: input.sopInstanceUid,
      seriesInstanceUid: input.seriesInstanceUid,
      bytes: encodeEnhancedUsVolume(input),
      pixelData: data,
      numberOfFrames: nz,
      rows: ny,
      columns: nx,
    });
  });
  const framesSeriesUid = newUid();
  multiframes.forEach((m, k) => {
    const frames: ImageFrame[] = Array.from({ length: m.frames }, (_, f) => {
      const pixels = new Uint8Array(m.width * m.height);
      for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 3 + f * 50 + k) & 0xff;
      return { index: f, tMs: 1000 + f * 33.3, width: m.width, height: m.height, pixels };
    });
    const input: UsMultiframeInput = {
      ...common,
      seriesInstanceUid: framesSeriesUid,
      seriesNumber: 1,
      seriesDescription: 'B-mode frames',
      sopInstanceUid: newUid(),
      instanceNumber: 1 + k,
      frames,
      pixelSpacingMm: { x: 0.1, y: 0.1 },
      frameOfReferenceUid,
    };
    const pixelData = new Uint8Array(m.width * m.height * m.frames);
    frames.forEach((f, i) => pixelData.set(f.pixels, i * m.width * m.height));
    instances.push({
      kind: 'frames',
      sopClassUid: US_MULTIFRAME_SOP_CLASS_UID,
      sopInstanceUid: input.sopInstanceUid,
      seriesInstanceUid: input.seriesInstanceUid,
      bytes: encodeUsMultiframe(input),
      pixelData,
      numberOfFrames: m.frames,
      rows: m.height,
      columns: m.width,
    });
  });
  const srSeriesUid = newUid();
  const ref = volumeRefs[0];
  for (let k = 0; k < reports; k++) {
    if (ref === undefined) throw new Error('a report needs a volume to refer to');
    const input: MeasurementReportInput = {
      patient,
      study,
      equipment,
      seriesInstanceUid: srSeriesUid,
      seriesNumber: 100,
      seriesDescription: 'Measurements',
      sopInstanceUid: newUid(),
      instanceNumber: 1 + k,
      contentDateTime: '2026-03-01T10:30:00Z',
      deviceObserverUid: newUid(),
      procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
      referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: ref.sopInstanceUid, seriesInstanceUid: ref.seriesInstanceUid, frameOfReferenceUid: ref.volumeFrameOfReferenceUid },
      measurements: [{ kind: 'distance', valueMm: 3.5 + k, plane: 'axial', pointsMm: [{ x: 401, y: -29, z: 11 }, { x: 404.5 + k, y: -29, z: 11 }], label: `Lesion ${k + 1}` }],
    };
    instances.push({
      kind: 'sr',
      sopClassUid: COMPREHENSIVE_3D_SR_SOP_CLASS_UID,
      sopInstanceUid: input.sopInstanceUid,
      seriesInstanceUid: srSeriesUid,
      bytes: encodeMeasurementReport(input),
      pixelData: undefined,
      numberOfFrames: undefined,
      rows: undefined,
      columns: undefined,
    });
  }
  return { studyInstanceUid, patientId: patient.id, patientName: patient.name, accessionNumber: study.accessionNumber, instances };
}

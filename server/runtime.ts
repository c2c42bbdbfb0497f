// The composition root of `eco3d start`: takes the data directory, opens the database, wires the
// robot driver, safety supervisor, acquisition controller, tele-operation session and HTTP
// server, and shuts them down in the reverse order.
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { filter, map, share, type Observable, type Subscription } from 'rxjs';
import { AcquisitionController, SafetySupervisor, TeleopSession, type SweepPlan } from '../controller/index.ts';
import { toEco3dError, torsoSkinHeightMm, watchEventLoop, type RobotDriver, type TrackedFrame } from '../protocols/index.ts';
import { imageGeometry, imageToProbe, type UltrasoundSimulator } from '../sim/index.ts';
import { liveGridFor, RemoteLiveHub, type LiveFrame, type LiveSweepShape } from '../streamer/index.ts';
import {
  acquireDataDirLock,
  addMeasurement,
  appendAudit,
  createApiToken,
  currentExam,
  endCurrentExam,
  findActiveApiToken,
  getExamOfAcquisition,
  linkAcquisitionToExam,
  listApiTokens,
  listConsents,
  listMeasurements,
  recordConsent,
  revokeApiToken,
  startExam,
  type AuditEntry,
  type Queryable,
  createAccount,
  createSession,
  ensureDevice,
  ensureTenant,
  findAccountByUsername,
  findActiveSession,
  getAcquisition,
  getTenant,
  listAcquisitions,
  listAcquisitionTransitions,
  listAudit,
  listAvailability,
  migrate,
  openPglite,
  openPostgres,
  OutboxDispatcher,
  recordAcquisitionTransition,
  recordAvailability,
  revokeSession,
  type Database,
  type DataDirLock,
} from '../store/index.ts';
import { billingConsumer, periodOf, putContract, listContracts, registerBilling, uplinkConsumer } from '../billing/index.ts';
import { createFhirService, DicomArchive, fhirPushConsumer, pacsPushConsumer, parsePacsTarget, registerDicomWeb, registerFhir, RenderPool } from '../archive/index.ts';
import { wireLake } from './lake.ts';
import { ACQUISITION_FILES, buildApp, type ApiRepo } from './app.ts';
import { runEco3dInChild } from './child-command.ts';
import { PACKAGE_VERSION } from './scan.ts';
import { reportService, studyConsumer, studyFhir, type StudiesDeps } from './studies.ts';
import { generatePassword, hashPassword, newSecret } from './auth-crypto.ts';
import { AuthService, type AuthRepo } from './auth.ts';
import type { ServerConfig } from './config.ts';
import { createDriver } from './drivers.ts';
import { isSweeping, scannerFrames$, simulatedScanner, SweepImaging } from './imaging.ts';
import { liveSignaling, type LiveSignaling } from './live-ws.ts';
import { wireMarketplace } from './marketplace.ts';
import { readScanStudy } from './scan-dicom.ts';
import { ensureViewerBuilt, VIEWER_DIST } from './viewer-build.ts';
import type { ReconstructArgs, ReconstructReport } from './reconstruct-command.ts';
import type { Logger } from './log.ts';
import { TeleopWsGateway } from './teleop-ws.ts';
import { loadTls } from './tls.ts';

export interface RunningServer {
  readonly url: string;
  readonly db: Database;
  readonly driver: RobotDriver;
  readonly safety: SafetySupervisor;
  readonly acquisition: AcquisitionController;
  readonly dispatcher: OutboxDispatcher;
  readonly live: RemoteLiveHub;
  /** Idempotent graceful shutdown: stops the robot, records, closes the database, unlocks. */
  close(): Promise<void>;
}

/** Sessions are stored under a hash of their id: a leaked table holds no usable session. */
const sessionKey = (id: string): string => createHash('sha256').update(id).digest('hex');

/** Things to print once for a person (never logged): generated passwords. */
export type Announce = (line: string) => void;

export async function startServer(cfg: ServerConfig, log: Logger, announce: Announce): Promise<RunningServer> {
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (err) {
        log.error({ err: toEco3dError(err).message }, 'shutdown step failed');
      }
    }
  };
  try {
    const lock: DataDirLock = await acquireDataDirLock(cfg.dataDir);
    cleanups.push(() => lock.release());

    const db =
      cfg.databaseUrl === undefined
        ? await openPglite(join(cfg.dataDir, 'db'))
        : await openPostgres(cfg.databaseUrl, cfg.databaseSchema === undefined ? {} : { schema: cfg.databaseSchema });
    cleanups.push(() => db.close());
    const migrated = await migrate(db);
    log.info({ db: db.kind, ...migrated }, 'database ready');
    // From here on this thread runs the robot's control loop (opening PGlite blocks it for seconds before).
    cleanups.push(watchEventLoop((blockedMs) => log.warn({ blockedMs }, 'the control loop thread was blocked')));

    // The links we hand out (DICOMweb RetrieveURLs, the FHIR Endpoint) need our address before
    // we listen: a free port is picked now when none is configured (tests).
    const tls = await loadTls(cfg, [cfg.host]);
    const port = cfg.port !== 0 ? cfg.port : await freePort(cfg.host);
    const url = `${tls === undefined ? 'http' : 'https'}://${cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host}:${port}`;
    const publicUrl = cfg.publicUrl ?? url;

    const secret = cfg.secret ?? loadOrCreateSecret(cfg.dataDir);
    await bootstrap(db, cfg, announce);

    const driver = createDriver(cfg.robot, log);
    cleanups.push(() => driver.close());

    // Consumers register before the dispatcher starts (below, once everything they use exists).
    // A study of 1800 frames takes a while to write and store: generous handler timeout and lease.
    // A failed delivery is retried with back-off; it is logged, not raised (a PACS, a FHIR server
    // or the cloud may be down for hours).
    const dispatcher = new OutboxDispatcher(db, {
      handlerTimeoutMs: 15 * 60_000,
      leaseMs: 20 * 60_000,
      onError: (err, c) =>
        log.warn(
          { consumer: c.consumer, idempotencyKey: c.idempotencyKey, attempts: c.attempts, nextAttemptAt: c.nextAttemptAtMs === undefined ? undefined : new Date(c.nextAttemptAtMs).toISOString(), err: toEco3dError(err).message },
          c.idempotencyKey === undefined ? 'outbox poll failed' : 'outbox delivery failed; it will be retried',
        ),
    });

    // The DICOM archive: files under <data>/archive, the index in the database. Each newly stored
    // instance goes to the hospital PACS when one is configured (durably: the outbox).
    const archive = new DicomArchive({ root: join(cfg.dataDir, 'archive'), db });
    if (cfg.pacs !== undefined) {
      const target = cfg.pacs.url.startsWith('dicom:') ? parsePacsTarget(cfg.pacs.url) : { baseUrl: cfg.pacs.url, auth: cfg.pacs.auth };
      dispatcher.register(pacsPushConsumer({ ...target, instanceFile: (t, sop) => archive.instanceFile(t, sop), tenantIds: [cfg.tenantId], log }));
    }

    const safety = new SafetySupervisor(
      driver,
      { deadmanTimeoutMs: cfg.deadmanTimeoutMs },
      {
        onEvent: (e) => {
          if (e.type === 'refused') return; // the client is told; logging each would flood
          log.info({ safety: e }, `safety: ${e.type}`);
        },
      },
    );
    cleanups.push(() => safety.close());

    const acquisition: AcquisitionController = new AcquisitionController({
      driver,
      safety,
      framesAcquired: (uid) => imaging.frameCount(uid),
      recorder: {
        record: async (t) => {
          await recordAcquisitionTransition(db, t);
          dispatcher.kick();
        },
      },
      logger: log,
    });
    cleanups.push(() => acquisition.close());

    // The simulated scanner renders B-mode frames (in a worker thread) while a sweep records them
    // or a viewer watches, never otherwise.
    const scanner = simulatedScanner();
    let live: RemoteLiveHub | null = null;
    const renderWanted = (): boolean => isSweeping(acquisition.snapshot) || (live?.wantsVideo() ?? false);
    let renderErrorLogged = false;
    const rendering = await scannerFrames$(1, driver.state$.pipe(filter(renderWanted)), (err) => {
      // Once: a stuck worker would otherwise log 30 lines a second.
      if (!renderErrorLogged) log.error({ err: toEco3dError(err).message }, 'a B-mode frame could not be rendered (further failures not logged)');
      renderErrorLogged = true;
    });
    cleanups.push(() => rendering.close());
    const frames$: Observable<LiveFrame> = rendering.frames$.pipe(
      map((f) => Object.assign(f, { capturedAtMs: Date.now() })),
      share(),
    );
    // Uncompressed frames: deflating ~100 MB in this process would stall the control loop; the
    // reconstruction runs in a child process for the same reason.
    // The contact force at each kept frame goes into sweep-quality.json (the lake's quality gate).
    let contactForceN: number | null = null;
    const forceSub = driver.state$.subscribe((s) => {
      contactForceN = s.wrench?.forceN.z ?? null;
    });
    cleanups.push(() => forceSub.unsubscribe());
    const imaging: SweepImaging = new SweepImaging(frames$, scanner, () => acquisition.snapshot, {
      compressFrames: false,
      spoolDir: join(acquisitionsDir(cfg.dataDir), '.spool'),
      contactForceN: () => contactForceN,
    });
    const imagingWork = reconstructCompletedAcquisitions(acquisition, imaging, acquisitionsDir(cfg.dataDir), log);
    cleanups.push(async () => {
      imagingWork.subscription.unsubscribe();
      await imagingWork.idle();
      imaging.close();
    });

    // FHIR R4: our resources (ImagingStudy, DiagnosticReport, …) and the RIS's worklist. Sent on to
    // the hospital's FHIR server when one is configured (durably: the outbox).
    const fhir = createFhirService({ db, dicomWebBaseUrl: `${publicUrl}/dicom-web` });
    if (cfg.fhirServer !== undefined) {
      const a = cfg.fhirServer.auth;
      const authorization = a === undefined ? undefined : a.kind === 'bearer' ? `Bearer ${a.token}` : `Basic ${Buffer.from(`${a.username}:${a.password}`).toString('base64')}`;
      dispatcher.register(
        fhirPushConsumer({ baseUrl: cfg.fhirServer.url, ...(authorization === undefined ? {} : { headers: { authorization } }), readResource: fhir.readResource, tenantIds: [cfg.tenantId] }),
      );
    }

    // The research data lake: a consenting patient's completed scan is copied de-identified
    // once its study is archived (server/lake.ts).
    const renderer = new RenderPool();
    cleanups.push(() => renderer.close());
    const lake = wireLake({ db, dataDir: cfg.dataDir, hospitalArchive: archive, acquisitionsDir: acquisitionsDir(cfg.dataDir), publicUrl, renderer, log });

    // The plugin marketplace: each completed scan becomes a work item per enabled analysis plugin,
    // run isolated on the de-identified volume once the study is archived (server/marketplace.ts).
    const auth = new AuthService(authRepo(db), secret);
    // The live signaling is made further down (it needs the live hub): disabling a plugin cuts its streams there.
    const liveRef: { current?: LiveSignaling } = {};
    const sfhir = studyFhir(fhir, archive);
    const market = wireMarketplace({
      db,
      dataDir: cfg.dataDir,
      archive,
      fhir,
      studyChanged: async (tenantId, acquisitionUid) => {
        const study = readScanStudy(join(acquisitionsDir(cfg.dataDir), acquisitionUid));
        if (study !== undefined) await sfhir.studyArchived({ tenantId, study, startedAtMs: Date.parse(study.common.study.studyDateTime) });
      },
      acquisitionsDir: acquisitionsDir(cfg.dataDir),
      auth,
      live: () => liveRef.current,
      log,
    });

    // Each completed acquisition becomes a study in the archive, announced over FHIR.
    const studies: StudiesDeps = {
      db,
      archive,
      fhir: sfhir,
      acquisitionsDir: acquisitionsDir(cfg.dataDir),
      imagesDone: imagingWork.imagesDone,
      studyDefaults: { phantomSeed: 1, probe: scanner.probe, softwareVersion: `eco3d ${PACKAGE_VERSION}` },
      organization: (await getTenant(db, cfg.tenantId))?.name ?? cfg.tenantId,
      log,
      onDone: (tenantId, acquisitionUid) => {
        lake.studyDone(tenantId, acquisitionUid);
        market.studyDone();
      },
    };
    dispatcher.register(studyConsumer(studies));
    for (const c of lake.consumers) dispatcher.register(c);
    for (const c of market.consumers) dispatcher.register(c);
    // Every finished acquisition is metered (billing/); an edge forwards its scans to the cloud.
    dispatcher.register(billingConsumer(db));
    if (cfg.uplink !== undefined) dispatcher.register(uplinkConsumer(cfg.uplink));
    await dispatcher.start();
    // Stops before the imaging above is torn down: a study in progress waits for its images.
    cleanups.push(() => dispatcher.stop());
    market.start();
    cleanups.push(() => market.stop());

    const audit = (actor: string, action: string, detail?: Record<string, unknown>): void => {
      appendAudit(db, { tenantId: cfg.tenantId, actor, action, target: cfg.deviceId, ...(detail === undefined ? {} : { detail }) }).catch((err: unknown) =>
        log.error({ err: toEco3dError(err).message, actor, action }, 'audit write failed'),
      );
    };
    const session = new TeleopSession({
      driver,
      safety,
      acquisition,
      tenantId: cfg.tenantId,
      deviceId: cfg.deviceId,
      audit: (e) => audit(e.actor, `teleop.${e.action}`, e.detail),
    });
    cleanups.push(() => session.close());

    // The live streams (WebRTC) and the live volume run in a worker thread: their work never
    // delays the robot's state stream on this thread.
    const liveFeed = liveVolumeFeed(acquisition, scanner);
    const hub = await RemoteLiveHub.start({
      frames$,
      status: () => session.status(),
      imaging: { widthPx: imageGeometry(scanner.probe).widthPx, heightPx: imageGeometry(scanner.probe).heightPx, imageToProbe: Array.from(imageToProbe(scanner.probe)) },
      hub: { iceServers: cfg.iceServers },
      pasteFrame: liveFeed.pasteFrame,
      log,
    });
    live = hub;
    cleanups.push(() => hub.close());
    const liveVolumeSub = liveFeed.start(hub, log);
    cleanups.push(() => liveVolumeSub.unsubscribe());

    const availabilitySub = recordLinkAvailability(db, driver, cfg, log);
    cleanups.push(() => availabilitySub.unsubscribe());

    // Each new acquisition belongs to the device's current exam, if any.
    cleanups.push(linkNewAcquisitionsToExam(db, acquisition, cfg, log));

    const gateway = new TeleopWsGateway(session, log, { tenantId: cfg.tenantId, deviceId: cfg.deviceId }, cfg.broadcastHz);
    cleanups.push(() => gateway.close());

    const liveWs = liveSignaling(hub, auth, log, { tenantId: cfg.tenantId });
    liveRef.current = liveWs;
    cleanups.push(() => liveWs.close());
    if (cfg.viewerBuild) {
      // A UI that fails to build must not keep the robot API and its safety from starting.
      await ensureViewerBuilt(log).catch((err: unknown) => log.error({ err: toEco3dError(err).message }, 'the browser apps are not available'));
    }
    mkdirSync(VIEWER_DIST, { recursive: true });

    const app = await buildApp({
      log,
      auth,
      live: liveWs,
      viewerDir: VIEWER_DIST,
      repo: apiRepo(db, cfg),
      reports: reportService(studies),
      worklist: async (tenantId) =>
        (await fhir.listWorklist(tenantId)).map((w) => ({
          serviceRequestId: w.serviceRequestId,
          patientId: w.patient.patientId,
          patientName: w.patient.name,
          birthDate: w.patient.birthDate,
          sex: w.patient.sex,
          description: w.description,
          accessionNumber: w.accessionNumber,
        })),
      plugins: [
        (app) =>
          registerDicomWeb(app, {
            archive,
            audit: async (e) => {
              await appendAudit(db, e);
            },
            maxStowBytes: MAX_STOW_BYTES,
            baseUrl: `${publicUrl}/dicom-web`,
            renderer,
          }),
        ...lake.plugins,
        ...market.plugins,
        (app) =>
          registerBilling(app, {
            db,
            publicUrl,
            audit: async (e) => {
              await appendAudit(db, e);
            },
          }),
        async (app) => {
          await registerFhir(app, {
            db,
            baseUrl: `${publicUrl}/fhir`,
            dicomWebBaseUrl: `${publicUrl}/dicom-web`,
            audit: async (e) => {
              await appendAudit(db, e);
            },
          });
        },
      ],
      teleop: gateway,
      health: async () => ({
        db: await db.query('SELECT 1').then(
          () => true,
          () => false,
        ),
        robotLinkUp: session.status().link.up,
      }),
      tls,
      secureCookies: tls !== undefined,
    });
    cleanups.push(() => app.close());
    await app.listen({ host: cfg.host, port });

    // The robot may not be there yet (a serial cable, a ROS master still booting): the link
    // shows as down, the drivers keep retrying, and the server is usable meanwhile.
    driver.connect().then(
      () => log.info({ robot: cfg.robot }, 'robot connected'),
      (err: unknown) => log.warn({ robot: cfg.robot, err: toEco3dError(err).message }, 'robot not reachable yet; retrying in the background'),
    );

    let closing: Promise<void> | null = null;
    return {
      url,
      db,
      driver,
      safety,
      acquisition,
      dispatcher,
      live: hub,
      close: () => (closing ??= cleanup()),
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

export const acquisitionsDir = (dataDir: string): string => join(dataDir, 'acquisitions');

/** A port free on `host` now (the OS picks it); the server listens on it right after. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen({ host, port: 0 }, () => {
      const a = probe.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

/** A STOW-RS request's limit: a 60 s sweep's multi-frame instance is 550 MB; parts past 32 MiB spool to disk. */
const MAX_STOW_BYTES = 2 * 1024 ** 3;

/**
 * The live volume: a grid per acquisition, from its plan, when its sweep phase begins; the
 * sweep's frames go into it as they come (the worker pastes them).
 */
function liveVolumeFeed(acquisition: AcquisitionController, scanner: UltrasoundSimulator): { pasteFrame: (f: TrackedFrame) => boolean; start(hub: RemoteLiveHub, log: Logger): Subscription } {
  let uid: string | null = null;
  const g = imageGeometry(scanner.probe);
  const image = { widthMm: g.widthPx * g.spacingMm.u, depthMm: g.maxDepthMm };
  return {
    pasteFrame: () => uid !== null && acquisition.snapshot.acquisitionUid === uid && isSweeping(acquisition.snapshot),
    start: (hub, log) =>
      acquisition.state$.subscribe((s) => {
        const sweeping = isSweeping(s);
        if (sweeping && s.acquisitionUid !== null && s.acquisitionUid !== uid) {
          const plan = acquisition.plan;
          if (plan === null) return;
          try {
            hub.beginVolume(s.acquisitionUid, liveGridFor(sweepShape(plan.sweep), image));
            uid = s.acquisitionUid;
          } catch (err) {
            log.warn({ acquisitionUid: s.acquisitionUid, err: toEco3dError(err).message }, 'no live volume for this sweep');
          }
        } else if (!sweeping && uid !== null) {
          hub.endVolume();
          uid = null;
        }
      }),
  };
}

function sweepShape(sweep: SweepPlan): LiveSweepShape {
  if (sweep.kind === 'fan') return { kind: 'fan', contactMm: sweep.contactMm, maxTiltRad: Math.max(Math.abs(sweep.tiltStartRad), Math.abs(sweep.tiltEndRad)) };
  const d = sweep.direction;
  const n = Math.hypot(d.x, d.y) || 1;
  const end = { x: sweep.startMm.x + (d.x / n) * sweep.lengthMm, y: sweep.startMm.y + (d.y / n) * sweep.lengthMm };
  return { kind: 'linear', startMm: sweep.startMm, endMm: { ...end, z: torsoSkinHeightMm(end.x, end.y) ?? sweep.startMm.z }, tiltRad: sweep.tiltRad ?? 0 };
}

/** After each completed acquisition: its frames, config and volume under <data>/acquisitions/<uid>/. */
function reconstructCompletedAcquisitions(
  acquisition: AcquisitionController,
  imaging: SweepImaging,
  baseDir: string,
  log: Logger,
): { subscription: Subscription; idle: () => Promise<void>; imagesDone: (uid: string) => Promise<void> } {
  let tail: Promise<void> = Promise.resolve();
  const done = new Set<string>();
  const pending = new Map<string, Promise<void>>();
  const subscription = acquisition.state$.subscribe((s) => {
    const r = s.result;
    if (r === null || done.has(r.acquisitionUid)) return;
    done.add(r.acquisitionUid);
    if (r.outcome !== 'completed') {
      imaging.discard(r.acquisitionUid);
      return;
    }
    const uid = r.acquisitionUid;
    const dir = join(baseDir, uid);
    tail = tail
      .then(async () => {
        mkdirSync(dir, { recursive: true });
        const result = await imaging.finish(uid, dir, reconstructInChildProcess);
        log.info({ acquisitionUid: uid, frames: result.frames, droppedFrames: result.droppedFrames, volume: result.volume?.dims }, 'acquisition reconstructed');
      })
      .catch((err: unknown) => log.error({ acquisitionUid: uid, err: toEco3dError(err).message }, 'reconstruction failed'))
      .finally(() => pending.delete(uid));
    pending.set(uid, tail);
  });
  return { subscription, idle: () => tail, imagesDone: (uid) => pending.get(uid) ?? Promise.resolve() };
}

/** `eco3d reconstruct` in a child process: minutes of CPU never run on the control loop. */
function reconstructInChildProcess(a: ReconstructArgs): Promise<ReconstructReport> {
  return runEco3dInChild<ReconstructReport>(['reconstruct', '--config-file', a.configFile, '--source-seq-file', a.sourceSeqFile, '--output-volume-file', a.outputVolumeFile, '--threads', '1']);
}

function loadOrCreateSecret(dataDir: string): string {
  const file = join(dataDir, 'secret.key');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const s = newSecret();
  writeFileSync(file, `${s}\n`, { mode: 0o600, flag: 'wx' });
  return s;
}

/** First start: the platform admin; demo mode: tenant `demo`, device `sim-1` and two demo accounts. */
async function bootstrap(db: Database, cfg: ServerConfig, announce: Announce): Promise<void> {
  await ensureTenant(db, { id: 'platform', name: 'Platform operator' });
  if ((await findAccountByUsername(db, 'admin')) === undefined) {
    const password = cfg.adminPassword ?? generatePassword();
    await createAccount(db, { tenantId: 'platform', username: 'admin', role: 'platform-admin', passwordHash: await hashPassword(password) });
    if (cfg.adminPassword === undefined) announce(`platform admin created: username "admin", password "${password}" (shown once)`);
  }
  const demo = cfg.tenantId === 'demo';
  await ensureTenant(db, { id: cfg.tenantId, name: demo ? 'Demo hospital' : cfg.tenantId });
  await ensureDevice(db, { tenantId: cfg.tenantId, id: cfg.deviceId, model: cfg.robot.kind === 'sim' ? 'eco3d-sim UR5e-class' : `robot over ${cfg.robot.kind}` });
  if (!demo) return;
  // The demo's simulated robot is priced like the seed's pay-per-scan offer (10–30 EUR a scan),
  // so that its scans show as revenue on the dashboard from the first sweep.
  if (cfg.robot.kind === 'sim' && (await listContracts(db, cfg.tenantId)).length === 0) {
    await putContract(
      db,
      cfg.tenantId,
      {
        id: 'demo-pay-per-scan',
        tenantId: cfg.tenantId,
        deviceId: cfg.deviceId,
        validFrom: `${periodOf(Date.now())}-01`,
        validTo: null,
        model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2000 } },
      },
      'system',
    );
  }
  for (const [username, role] of [
    ['demo-sonographer', 'sonographer'],
    ['demo-bedside', 'bedside'],
  ] as const) {
    if ((await findAccountByUsername(db, username)) !== undefined) continue;
    const password = cfg.demoPassword ?? generatePassword();
    await createAccount(db, { tenantId: 'demo', username, role, passwordHash: await hashPassword(password) });
    if (cfg.demoPassword === undefined) announce(`demo account created: username "${username}", password "${password}" (shown once)`);
  }
}

/** Robot up/down with reasons, for billing's uptime credits. Writes are serialised in order. */
function recordLinkAvailability(db: Database, driver: RobotDriver, cfg: ServerConfig, log: Logger): Subscription {
  let tail: Promise<void> = Promise.resolve();
  let last: boolean | null = null;
  return driver.link$.subscribe((l) => {
    if (l.up === last) return;
    last = l.up;
    log.info({ up: l.up, reason: l.reason }, l.up ? 'robot link up' : 'robot link down');
    tail = tail
      .then(() => recordAvailability(db, { tenantId: cfg.tenantId, deviceId: cfg.deviceId, up: l.up, reason: l.reason, atMs: l.atMs }))
      .catch((err: unknown) => log.error({ err: toEco3dError(err).message }, 'availability write failed'));
  });
}

/**
 * Links each acquisition, when its UID first appears, to the device's current exam (if any).
 * Writes are serialised; the returned cleanup stops watching and waits for the last one.
 */
function linkNewAcquisitionsToExam(db: Database, acquisition: AcquisitionController, cfg: ServerConfig, log: Logger): () => Promise<void> {
  let tail: Promise<void> = Promise.resolve();
  let lastUid: string | null = null;
  const sub = acquisition.state$.subscribe((s) => {
    const uid = s.acquisitionUid;
    if (uid === null || uid === lastUid) return;
    lastUid = uid;
    tail = tail
      .then(async () => {
        const exam = await currentExam(db, cfg.tenantId, cfg.deviceId);
        if (exam === undefined) return;
        await linkAcquisitionToExam(db, { tenantId: cfg.tenantId, acquisitionUid: uid, examId: exam.id });
        log.info({ acquisitionUid: uid, examId: exam.id }, 'acquisition linked to the current exam');
      })
      .catch((err: unknown) => log.error({ acquisitionUid: uid, err: toEco3dError(err).message }, 'linking the acquisition to its exam failed'));
  });
  return async () => {
    sub.unsubscribe();
    await tail;
  };
}

/** A change and its audit entry in one transaction: neither exists alone. */
async function audited<T>(db: Database, change: (tx: Queryable) => Promise<T>, entry: (result: T) => AuditEntry | null): Promise<T> {
  return db.transaction(async (tx) => {
    const result = await change(tx);
    const e = entry(result);
    if (e !== null) await appendAudit(tx, e);
    return result;
  });
}

function authRepo(db: Database): AuthRepo {
  return {
    findAccountByUsername: async (u) => (await findAccountByUsername(db, u)) ?? null,
    createSession: async (s) => {
      await createSession(db, { tokenHash: sessionKey(s.id), accountId: s.accountId, createdAtMs: s.createdAtMs, expiresAtMs: s.expiresAtMs });
    },
    findActiveSession: async (id, nowMs) => (await findActiveSession(db, sessionKey(id), nowMs))?.account ?? null,
    revokeSession: async (id, atMs) => {
      await revokeSession(db, sessionKey(id), atMs);
    },
    createScopedToken: (t) =>
      audited(
        db,
        (tx) => createApiToken(tx, t),
        (r) => ({ tenantId: r.tenantId, actor: r.createdBy, action: 'token.mint', target: r.id, detail: { name: r.name, scopes: r.scopes, expiresAtMs: r.expiresAtMs } }),
      ),
    findActiveScopedToken: async (hash, nowMs) => (await findActiveApiToken(db, hash, nowMs)) ?? null,
    listScopedTokens: (tenantId) => listApiTokens(db, tenantId),
    revokeScopedToken: async (r) =>
      (await audited(
        db,
        (tx) => revokeApiToken(tx, r),
        (x) => (x?.revoked === true ? { tenantId: r.tenantId, actor: r.revokedBy, action: 'token.revoke', target: r.id, detail: { name: x.token.name } } : null),
      )) ?? null,
  };
}

const AVAILABILITY_WINDOW_MS = 31 * 24 * 3600 * 1000;

function apiRepo(db: Database, cfg: Pick<ServerConfig, 'tenantId' | 'deviceId' | 'dataDir'>): ApiRepo {
  const { deviceId, dataDir } = cfg;
  const filesOf = (uid: string): string[] =>
    Object.keys(ACQUISITION_FILES).filter((n) => existsSync(join(acquisitionsDir(dataDir), uid, n)));
  return {
    acquisitionFile: async (tenantId, uid, name) => {
      // The tenant check comes first: a UID of another hospital reads as absent.
      if ((await getAcquisition(db, tenantId, uid)) === undefined) return null;
      const path = join(acquisitionsDir(dataDir), uid, name);
      return existsSync(path) ? path : null;
    },
    createAccount: async (a) => ({ id: (await createAccount(db, a)).id }),
    tenantExists: async (id) => (await getTenant(db, id)) !== undefined,
    listAcquisitions: (tenantId, limit) => listAcquisitions(db, tenantId, limit),
    getAcquisition: async (tenantId, uid) => {
      const a = await getAcquisition(db, tenantId, uid);
      if (a === undefined) return null;
      const exam = (await getExamOfAcquisition(db, tenantId, uid)) ?? null;
      return { ...a, transitions: await listAcquisitionTransitions(db, tenantId, uid), files: filesOf(uid), exam };
    },
    listAvailability: async (tenantId, limit) => {
      const toMs = Date.now() + 1;
      const all = await listAvailability(db, { tenantId, deviceId, fromMs: toMs - AVAILABILITY_WINDOW_MS, toMs });
      return all.slice(-limit);
    },
    listAudit: (tenantId, limit) => listAudit(db, { ...(tenantId === null ? {} : { tenantId }), limit }),
    audit: async (e) => {
      await appendAudit(db, {
        actor: e.actor,
        action: e.action,
        ...(e.tenantId === null ? {} : { tenantId: e.tenantId }),
        ...(e.target === undefined ? {} : { target: e.target }),
        ...(e.detail === undefined ? {} : { detail: e.detail }),
      });
    },
    // Demo mode masks patient identity in every answer (privacy by design; ?reveal=true, audited).
    site: { tenantId: cfg.tenantId, deviceId: cfg.deviceId, maskPatientData: cfg.tenantId === 'demo' },
    currentExam: async (tenantId, device) => (await currentExam(db, tenantId, device)) ?? null,
    startExam: async (e) =>
      (
        await audited(
          db,
          (tx) => startExam(tx, e),
          (r) => ({ tenantId: e.tenantId, actor: e.startedBy, action: 'exam.start', target: r.exam.id, detail: { deviceId: e.deviceId, ...(r.ended === undefined ? {} : { endedExamId: r.ended.id }) } }),
        )
      ).exam,
    endExam: async (e) =>
      (await audited(
        db,
        (tx) => endCurrentExam(tx, e),
        (r) => (r === undefined ? null : { tenantId: e.tenantId, actor: e.endedBy, action: 'exam.end', target: r.id, detail: { deviceId: e.deviceId } }),
      )) ?? null,
    recordConsent: (c) =>
      audited(
        db,
        (tx) => recordConsent(tx, c),
        (r) => ({ tenantId: r.tenantId, actor: r.recordedBy, action: 'consent.record', target: r.id, detail: { decision: r.decision, examId: r.examId } }),
      ),
    listConsents: (tenantId, patientId) => listConsents(db, tenantId, patientId),
    addMeasurement: (m) =>
      audited(
        db,
        (tx) => addMeasurement(tx, m),
        (r) => ({ tenantId: r.tenantId, actor: r.createdBy, action: 'measurement.create', target: r.acquisitionUid, detail: { id: r.id, kind: r.kind } }),
      ),
    listMeasurements: (tenantId, uid) => listMeasurements(db, tenantId, uid),
  };
}

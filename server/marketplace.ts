// The plugin marketplace, wired (marketplace/): its folders under <data>/marketplace, the
// validation worker of the publication pipeline, the work-item consumer and runner of analysis
// plugins, and /api/marketplace + /api/oauth/token.
//
// What a plugin receives: the acquisition's volume, de-identified (server/deidentify-command.ts,
// with a key made for the run and thrown away: nothing the plugin could see links back), read
// into voxels, dims and spacing, plus the work item's opaque study reference. What comes back is
// stored by the platform alone, against the real study: a TID 1500 SR in the archive and FHIR
// Observations next to the study's ImagingStudy.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { DicomArchive, FhirService } from '../archive/index.ts';
import { recordCharge } from '../billing/index.ts';
import {
  claimForValidation,
  finishValidation,
  readVolumeInput,
  recordRun,
  registerMarketplace,
  requeueInterruptedValidations,
  runPlugin,
  startPlugin,
  unpackedPackage,
  validatePlugin,
  versionPackage,
  workItemConsumer,
  WorkItemRunner,
  writeDemoStudies,
  type DemoStudy,
  type PluginManifest,
  type PluginOutput,
  type ValidationReport,
} from '../marketplace/index.ts';
import { buildAlgorithmObservations, encodeAlgorithmResultReport, ENHANCED_US_VOLUME_SOP_CLASS_UID, pluginDeviceObserverUid, toEco3dError, type DicomUsCommon } from '../protocols/index.ts';
import { appendAudit, type Database, type OutboxConsumer } from '../store/index.ts';
import type { AuthService } from './auth.ts';
import { deidentifyHeader } from './deidentify-command.ts';
import type { LiveSignaling } from './live-ws.ts';
import type { Logger } from './log.ts';
import { readScanStudy } from './scan-dicom.ts';

/** A UID under 2.25 derived from a stable name: a re-run of a work item writes the same SR. */
export function derivedUid(name: string): string {
  return `2.25.${BigInt(`0x${createHash('sha256').update(name).digest('hex').slice(0, 32)}`).toString()}`;
}

const ULTRASONOGRAPHY = { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' } as const;

/** The SR and Observations of a plugin's results on a study (the runner's, and validation's on demo studies). */
export function resultObjects(o: {
  manifest: PluginManifest;
  output: PluginOutput;
  common: Pick<DicomUsCommon, 'patient' | 'study' | 'equipment'>;
  volume: { sopInstanceUid: string; seriesInstanceUid: string };
  /** Names the SR's UIDs (the work item id). */
  key: string;
  contentDateTime: string;
}): { bytes: Uint8Array; sopInstanceUid: string; seriesInstanceUid: string } {
  const plugin = { id: o.manifest.id, name: o.manifest.name, version: o.manifest.version, vendorName: o.manifest.vendor.name, deviceObserverUid: pluginDeviceObserverUid(o.manifest.id) };
  const seriesInstanceUid = derivedUid(`eco3d-plugin-sr-series/${o.key}`);
  const sopInstanceUid = derivedUid(`eco3d-plugin-sr/${o.key}`);
  const bytes = encodeAlgorithmResultReport({
    patient: o.common.patient,
    study: o.common.study,
    equipment: o.common.equipment,
    seriesInstanceUid,
    // Series numbers of ours: 1 volume, 2 frames, 3 the physician's report; plugins from 100.
    seriesNumber: 100,
    sopInstanceUid,
    instanceNumber: 1,
    contentDateTime: o.contentDateTime,
    procedureReported: ULTRASONOGRAPHY,
    plugin,
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: o.volume.sopInstanceUid, seriesInstanceUid: o.volume.seriesInstanceUid },
    measurements: o.output.measurements,
    findings: o.output.findings,
  });
  return { bytes, sopInstanceUid, seriesInstanceUid };
}

/** The SR validation builds for a plugin's output on a demo study (as the runner would on a real one). */
export function demoResultSr(demo: readonly DemoStudy[], manifest: PluginManifest, study: { ref: string }, output: PluginOutput): Promise<Uint8Array> {
  const d = demo.find((x) => x.ref === study.ref);
  if (d === undefined) throw new Error(`no demo study ${study.ref}`);
  return Promise.resolve(
    resultObjects({
      manifest,
      output,
      common: d.dicom.common,
      volume: { sopInstanceUid: d.dicom.sopInstanceUid, seriesInstanceUid: d.dicom.seriesInstanceUid },
      key: `validation/${manifest.id}/${manifest.version}/${study.ref}`,
      contentDateTime: d.dicom.common.study.studyDateTime,
    }).bytes,
  );
}

export interface MarketplaceWiring {
  readonly consumers: readonly OutboxConsumer[];
  readonly plugins: ReadonlyArray<(app: FastifyInstance) => Promise<void>>;
  /** A study is archived: its work items may run now. */
  readonly studyDone: () => void;
  readonly runner: WorkItemRunner;
  /** Starts the validation worker and the runner (after the dispatcher). */
  start(): void;
  stop(): Promise<void>;
}

export function wireMarketplace(o: {
  db: Database;
  dataDir: string;
  archive: DicomArchive;
  fhir: Pick<FhirService, 'publishObservations'>;
  /** Re-announces a study's ImagingStudy (it then lists the SR's series). */
  studyChanged: (tenantId: string, acquisitionUid: string) => Promise<void>;
  acquisitionsDir: string;
  auth: AuthService;
  live: () => LiveSignaling | undefined;
  log: Logger;
}): MarketplaceWiring {
  const { db, log } = o;
  const root = join(o.dataDir, 'marketplace');
  const packagesDir = join(root, 'packages');
  const unpackedDir = join(root, 'plugins');
  const demoDir = join(root, 'demo');
  mkdirSync(unpackedDir, { recursive: true });
  let demo: Promise<DemoStudy[]> | undefined;
  const demoStudies = (): Promise<DemoStudy[]> => (demo ??= writeDemoStudies(demoDir).catch((err: unknown) => {
    demo = undefined;
    throw err;
  }));
  const pluginFiles = async (pluginId: string, version: string) => {
    const p = await versionPackage(db, packagesDir, pluginId, version);
    if (p === undefined) throw new Error(`no package for ${pluginId} ${version}`);
    return unpackedPackage(p.path, unpackedDir);
  };

  const runner = new WorkItemRunner({
    db,
    pluginFiles,
    startPlugin,
    recordCharge,
    log,
    // (Runs go under the OS temp dir, the default: the data directory is closed to nobody.)
    prepareInput: async (item) => {
      const study = readScanStudy(join(o.acquisitionsDir, item.acquisitionUid));
      if (study === undefined) return null;
      const volume = study.instances.find((i) => i.sopClassUid === ENHANCED_US_VOLUME_SOP_CLASS_UID);
      if (volume === undefined) throw new Error(`acquisition ${item.acquisitionUid}: its study has no volume`);
      const file = await o.archive.instanceFile(item.tenantId, volume.sopInstanceUid);
      if (file === null) return null;
      // The data layer's de-identification, on the header (a key for this run only, thrown away):
      // the profile must take this instance as it is (a burned-in annotation without its mask is
      // refused). The plugin then gets the voxels and the grid, never a header; the pixel data is
      // what de-identification would copy unchanged, so it is read from the archived file
      // instead of from a 16 MB de-identified copy.
      await deidentifyHeader(file, { uidKey: randomBytes(32), cleanDescriptors: true, cleanStructuredContent: true });
      return readVolumeInput(file);
    },
    storeResults: async (item, manifest, output) => {
      const study = readScanStudy(join(o.acquisitionsDir, item.acquisitionUid));
      if (study === undefined) throw new Error(`acquisition ${item.acquisitionUid} has no study`);
      const volume = study.instances.find((i) => i.sopClassUid === ENHANCED_US_VOLUME_SOP_CLASS_UID)!;
      const sr = resultObjects({
        manifest,
        output,
        common: study.common,
        volume: { sopInstanceUid: volume.sopInstanceUid, seriesInstanceUid: volume.seriesInstanceUid },
        key: item.id,
        contentDateTime: new Date(item.createdAtMs).toISOString(),
      });
      await o.archive.storeInstance(item.tenantId, sr.bytes, { kind: 'acquisition', acquisitionUid: item.acquisitionUid });
      await o.studyChanged(item.tenantId, item.acquisitionUid);
      const observations = await o.fhir.publishObservations(item.tenantId, study.studyInstanceUid, (subject, imagingStudy) =>
        buildAlgorithmObservations({
          plugin: { id: manifest.id, name: manifest.name, version: manifest.version, vendorName: manifest.vendor.name, deviceObserverUid: pluginDeviceObserverUid(manifest.id) },
          measurements: output.measurements,
          findings: output.findings,
          sopInstanceUid: sr.sopInstanceUid,
          contentDateTime: new Date(item.createdAtMs).toISOString(),
          subject,
          imagingStudy,
        }),
      );
      return { srSopInstanceUid: sr.sopInstanceUid, observationIds: observations.map((x) => x.id) };
    },
  });

  // The validation worker: one version at a time, woken by a submission.
  let validating: Promise<void> = Promise.resolve();
  let stopped = false;
  const validateOne = async (v: { pluginId: string; version: string }): Promise<ValidationReport> => {
    const pkg = await versionPackage(db, packagesDir, v.pluginId, v.version);
    const { dir, manifest } = await unpackedPackage(pkg!.path, unpackedDir);
    return validatePlugin(
      {
        demoStudies,
        readVolume: readVolumeInput,
        runPlugin,
        onRun: (result) => recordRun(db, { workItemId: null, pluginId: manifest.id, version: manifest.version, purpose: 'validation', result }),
        resultSr: async (m, study, output) => demoResultSr(await demoStudies(), m, study, output),
      },
      dir,
      manifest,
    );
  };
  const validateNext = async (): Promise<void> => {
    for (let v = await claimForValidation(db); v !== undefined && !stopped; v = await claimForValidation(db)) {
      let report: ValidationReport;
      try {
        report = await validateOne(v);
      } catch (err) {
        // The platform's fault, not the plugin's: said as such, so no version waits forever.
        const e = toEco3dError(err);
        log.error({ plugin: v.pluginId, version: v.version, err: e.message }, 'plugin validation could not run');
        report = { ok: false, runs: [], problems: [`the platform could not validate this version (${e.code}: ${e.message}); ask the platform admin`] };
      }
      await finishValidation(db, v.pluginId, v.version, report);
      log.info({ plugin: v.pluginId, version: v.version, ok: report.ok, problems: report.problems }, 'plugin version validated');
    }
  };
  const kickValidation = (): void => {
    validating = validating.then(validateNext).catch((err: unknown) => log.error({ err: toEco3dError(err).message }, 'plugin validation failed'));
  };

  return {
    runner,
    consumers: [workItemConsumer({ db, kick: () => runner.kick() })],
    studyDone: () => runner.kick(),
    start() {
      runner.start();
      validating = requeueInterruptedValidations(db)
        .then(() => undefined)
        .catch((err: unknown) => log.error({ err: toEco3dError(err).message }, 'requeueing validations failed'));
      kickValidation();
    },
    async stop() {
      stopped = true;
      await runner.stop();
      await validating;
    },
    plugins: [
      (app) =>
        registerMarketplace(app, {
          db,
          packagesDir,
          audit: async (e) => {
            await appendAudit(db, e);
          },
          submitted: kickValidation,
          disabled: async (r) => {
            runner.abort(r.canceledWorkItemIds);
            return { cutStreams: o.live()?.cutTokens(r.revokedTokenIds) ?? 0 };
          },
          mintPluginToken: ({ enablement, scopes, ttlSeconds, clientId }) =>
            o.auth.mintPluginToken({ tenantId: enablement.tenantId, enablementId: enablement.id, pluginId: enablement.pluginId, clientId, scopes, ttlSeconds }),
          demoStudies,
          recordCharge,
          pluginFiles,
        }),
    ],
  };
}


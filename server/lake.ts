// The research data lake, wired: its keys, its content-addressed archive of de-identified
// instances (<data>/lake, reserved tenant eco3d-lake, no outbox events: the copies never go to
// the hospital's PACS or FHIR server), the intake and consent consumers, /api/lake, and the
// de-identified DICOMweb at /lake/dicom-web scoped to the caller's licence.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { DicomArchive, registerDicomWeb, type DicomWebAuditEntry, type FrameRenderer } from '../archive/index.ts';
import { recordCharge } from '../billing/index.ts';
import {
  consentConsumer,
  intakeConsumer,
  lakeTokenScope,
  LAKE_TENANT,
  loadLakeKeys,
  logAccess,
  registerLake,
  StudyGate,
  type DeidentifyFile,
  type LakeKeys,
  type LicenceScope,
} from '../datalake/index.ts';
import { appendAudit, type Database, type OutboxConsumer } from '../store/index.ts';
import type { Logger } from './log.ts';
import { deidentifyFile } from './deidentify-command.ts';
import { SERIES_DESCRIPTIONS } from './scan-dicom.ts';
import { STUDY_CONSUMER } from './studies.ts';

export const LAKE_DICOMWEB_PREFIX = '/lake/dicom-web';

/**
 * The intake's de-identifier: each copy is written under `incomingDir` (on the lake's file
 * system, so the archive takes it by a rename), header in memory, pixels file to file.
 */
export function lakeDeidentifier(incomingDir: string): DeidentifyFile {
  let made: Promise<unknown> | undefined;
  return async (path, options) => {
    await (made ??= mkdir(incomingDir, { recursive: true }));
    const r = await deidentifyFile(path, options, async () => join(incomingDir, `${randomBytes(12).toString('hex')}.dcm`));
    return { path: r.target, sizeBytes: r.bytesOut };
  };
}

export interface LakeWiring {
  readonly keys: LakeKeys;
  readonly archive: DicomArchive;
  /** For StudiesDeps.onDone: the intake waits for the study of each acquisition. */
  readonly studyDone: (tenantId: string, acquisitionUid: string) => void;
  readonly consumers: readonly OutboxConsumer[];
  readonly plugins: ReadonlyArray<(app: FastifyInstance) => Promise<void>>;
}

export function wireLake(o: { db: Database; dataDir: string; hospitalArchive: DicomArchive; acquisitionsDir: string; publicUrl: string; renderer: FrameRenderer; log: Logger }): LakeWiring {
  const { db, log } = o;
  const keys = loadLakeKeys(join(o.dataDir, 'keys', 'lake.key'));
  const lake = new DicomArchive({ root: join(o.dataDir, 'lake'), db, layout: 'content-addressed', announce: false });
  const gate = new StudyGate(db, STUDY_CONSUMER);
  // One process owns the data directory: what is in .deid is a previous process's unfinished copy.
  const incoming = join(o.dataDir, 'lake', '.deid');
  rmSync(incoming, { recursive: true, force: true });
  const consumers = [
    intakeConsumer({
      db,
      keys,
      archive: o.hospitalArchive,
      lake,
      // A crash mid-copy leaves a file in it; the next start clears the folder (above).
      deidentifyFile: lakeDeidentifier(incoming),
      acquisitionsDir: o.acquisitionsDir,
      studyDone: (t, u, k, s) => gate.wait(t, u, k, s),
      safeDescriptors: Object.values(SERIES_DESCRIPTIONS),
      log,
    }),
    consentConsumer({ db, keys, log }),
  ];

  const lakeDicomWeb = (app: FastifyInstance): Promise<void> =>
    registerDicomWeb(app, {
      archive: lake,
      prefix: LAKE_DICOMWEB_PREFIX,
      readOnly: true,
      auditPrefix: 'lake.dicomweb',
      maxStowBytes: 1,
      renderer: o.renderer,
      baseUrl: `${o.publicUrl}${LAKE_DICOMWEB_PREFIX}`,
      access: async (_req, principal) => {
        const scope = await lakeTokenScope(db, principal, Date.now());
        return {
          tenantId: LAKE_TENANT,
          actor: principal!.username,
          studies: new Set(scope.studies.values()),
          auditTenantId: principal!.tenantId,
          auditDetail: { licence: scope.licence.id },
          auditContext: scope,
        };
      },
      audit: async (e: DicomWebAuditEntry) => {
        // Every lake DICOMweb access, allowed or refused, goes to the lake's access log (with the anomaly rule).
        const d = e.detail ?? {};
        const licence = typeof d.licence === 'string' ? d.licence : null;
        const allowed = d.denied !== true && d.found !== false;
        // The scope the access check resolved for this request (absent when it refused).
        const scope = e.context as LicenceScope | undefined;
        const anomaly = await logAccess(
          db,
          {
            licenceId: licence,
            partnerTenantId: e.tenantId,
            actor: e.actor,
            action: e.action,
            target: e.target ?? '/',
            allowed,
            instances: typeof d.instances === 'number' ? d.instances : 0,
            sizeBytes: typeof d.bytes === 'number' ? d.bytes : 0,
            caseIds: allowed && scope !== undefined ? casesOf(scope, e.target ?? '') : [],
            detail: d,
          },
          scope,
          Date.now(),
        );
        if (anomaly?.flagged === true) log.warn({ licence, reasons: anomaly.reasons }, 'unusual lake access (flagged in the access log)');
      },
    });
  /** The case a WADO path reaches (/studies/<lake study UID>/…), by the licence's own map. */
  const casesOf = (scope: LicenceScope, target: string): string[] => {
    const study = /^\/studies\/([0-9.]+)/.exec(target)?.[1];
    if (study === undefined) return [];
    for (const [caseId, uid] of scope.studies) if (uid === study) return [caseId];
    return [];
  };


  return {
    keys,
    archive: lake,
    studyDone: (t, u) => gate.done(t, u),
    consumers,
    plugins: [
      lakeDicomWeb,
      (app) =>
        registerLake(app, {
          db,
          keys,
          archive: o.hospitalArchive,
          lakeInstanceFile: (sop) => lake.instanceFile(LAKE_TENANT, sop),
          recordCharge,
          audit: async (e) => {
            await appendAudit(db, e);
          },
          log,
        }),
    ],
  };
}

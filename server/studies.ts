// What becomes of a completed acquisition once its images are on disk: its DICOM study (written
// in a child process: encoding 1800 frames is seconds of CPU that must not run on the control
// loop's thread), stored in the archive and announced over FHIR; and the reading physician's
// report on it, whose signature puts an SR into the study.
//
// The study step is an outbox consumer of AcquisitionCompleted: a crash or a failure is retried
// with back-off, and every step is idempotent (the study's UIDs are fixed by its manifest on the
// first attempt, the archive answers a re-stored instance as a duplicate, FHIR writes are
// upserts), so each completed acquisition becomes exactly one study.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  Eco3dError,
  encodeMeasurementReport,
  newUid,
  toEco3dError,
  type DomainEvent,
  type SrMeasurement,
} from '../protocols/index.ts';
import {
  amendReport,
  draftToSign,
  getAcquisition,
  getExamOfAcquisition,
  listMeasurements,
  listReportVersions,
  saveReportDraft,
  signReport,
  type Database,
  type Measurement,
  type OutboxConsumer,
  type Report,
  type ReportText,
} from '../store/index.ts';
import { diagnosticReportIdFor, type DicomArchive, type DicomSource, type FhirService } from '../archive/index.ts';
import type { Principal } from './auth.ts';
import type { ReportService, ReportView } from './app.ts';
import { runEco3dInChild } from './child-command.ts';
import type { Logger } from './log.ts';
import { readScanStudy, type ScanStudy, type ScanStudyInput } from './scan-dicom.ts';

/** What this module needs of FHIR (archive/fhir-*). Both are idempotent upserts. */
export interface StudyFhir {
  /** ImagingStudy (+ Patient, Endpoint) with every series the archive holds; the worklist entry is completed. */
  studyArchived(s: { tenantId: string; study: ScanStudy; startedAtMs: number }): Promise<void>;
  /** The DiagnosticReport follows the report's newest version; its measurements become Observations. */
  reportChanged(r: { tenantId: string; report: Report; measurements: readonly Measurement[]; study: ScanStudy | undefined }): Promise<void>;
}

export interface StudiesDeps {
  readonly db: Database;
  readonly archive: DicomArchive;
  readonly fhir: StudyFhir;
  /** <data>/acquisitions: one folder per acquisition. */
  readonly acquisitionsDir: string;
  /** Resolves when this process's image work (frames, reconstruction) for the acquisition is over; at once when it has none. */
  readonly imagesDone: (acquisitionUid: string) => Promise<void>;
  /** Everything ScanStudyInput needs beyond the acquisition and its exam. */
  readonly studyDefaults: Pick<ScanStudyInput, 'phantomSeed' | 'probe' | 'softwareVersion'>;
  readonly organization: string;
  readonly log: Logger;
  /** Told when this consumer is done with an acquisition (its study archived, or none possible): the lake's intake waits for it. */
  readonly onDone?: (tenantId: string, acquisitionUid: string) => void;
}

export const STUDY_CONSUMER = 'archive-study';

/** The outbox consumer that turns each completed acquisition into its stored, announced study. */
export function studyConsumer(d: StudiesDeps): OutboxConsumer {
  return {
    name: STUDY_CONSUMER,
    eventTypes: ['AcquisitionCompleted'],
    handle: async (event: DomainEvent) => {
      if (event.type !== 'AcquisitionCompleted') return;
      const uid = event.acquisitionUid;
      await d.imagesDone(uid);
      const dir = join(d.acquisitionsDir, uid);
      let study = readScanStudy(dir);
      if (study === undefined) {
        if (!existsSync(join(dir, 'volume.mha')) || !existsSync(join(dir, 'tracked-frames.igs.mha'))) {
          // Frames live in memory until the sweep's end: after a crash they are gone, and a
          // failed reconstruction left no volume. Retrying cannot bring them back.
          d.log.error({ acquisitionUid: uid }, 'no images on disk for this completed acquisition: no DICOM study');
          d.onDone?.(event.tenantId, uid);
          return;
        }
        const exam = await getExamOfAcquisition(d.db, event.tenantId, uid);
        const meta: Omit<ScanStudyInput, 'outDir'> = {
          ...d.studyDefaults,
          acquisitionUid: uid,
          startedAtMs: Date.parse(event.startedAt),
          finishedAtMs: Date.parse(event.occurredAt),
          deviceId: event.deviceId,
          sweep: event.sweep.kind,
          ...(exam === undefined
            ? {}
            : {
                patient: { name: exam.patientName, id: exam.patientId, birthDate: exam.birthDate, sex: exam.sex },
                accessionNumber: exam.accessionNumber ?? '',
                studyDescription: exam.description,
              }),
        };
        const metaFile = join(dir, 'study-meta.json');
        writeFileSync(metaFile, `${JSON.stringify(meta)}\n`);
        study = await writeStudyInChildProcess(dir, metaFile);
      }
      const source: DicomSource = { kind: 'acquisition', acquisitionUid: uid };
      for (const i of study.instances) {
        const file = join(study.dir, i.file);
        // Moved into the archive by an earlier attempt when absent.
        if (existsSync(file)) await d.archive.storeFile(event.tenantId, file, source, { move: true });
      }
      await d.fhir.studyArchived({ tenantId: event.tenantId, study, startedAtMs: Date.parse(event.startedAt) });
      d.log.info({ acquisitionUid: uid, instances: study.instances.length }, 'study archived');
      d.onDone?.(event.tenantId, uid);
    },
  };
}

/** `eco3d study` in a child process (see the header). */
function writeStudyInChildProcess(dir: string, metaFile: string): Promise<ScanStudy> {
  return runEco3dInChild<ScanStudy>(['study', dir, '--meta', metaFile], { timeoutMs: 10 * 60_000 });
}

/** The report API's service: drafts and amendments in the store; signing also writes the SR and FHIR. */
export function reportService(d: StudiesDeps): ReportService {
  const studyOf = async (tenantId: string, studyUid: string): Promise<{ acquisitionUid: string | null; study: ScanStudy | undefined }> => {
    const acquisition = await getAcquisition(d.db, tenantId, studyUid);
    if (acquisition === undefined && (await d.archive.studyInstances(tenantId, studyUid)).length === 0) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no study ${studyUid}`);
    return { acquisitionUid: acquisition === undefined ? null : studyUid, study: acquisition === undefined ? undefined : readScanStudy(join(d.acquisitionsDir, studyUid)) };
  };
  const announce = async (tenantId: string, report: Report, study: ScanStudy | undefined): Promise<ReportView> => {
    // The draft of an amendment is not published: until it is signed, the signed version stands.
    if (report.status === 'preliminary' && report.replacesId !== undefined) return view(tenantId, report);
    const measurements = report.acquisitionUid === null ? [] : await listMeasurements(d.db, tenantId, report.acquisitionUid);
    await d.fhir.reportChanged({ tenantId, report, measurements: measurements.filter((m) => report.measurementIds.includes(m.id)), study });
    return view(tenantId, report);
  };
  const view = (tenantId: string, r: Report): ReportView => ({ ...r, fhirDiagnosticReportId: diagnosticReportIdFor(tenantId, r.studyInstanceUid) });
  return {
    versions: async (tenantId, studyUid) => {
      await studyOf(tenantId, studyUid);
      return (await listReportVersions(d.db, tenantId, studyUid)).map((r) => view(tenantId, r));
    },
    saveDraft: async (p: Principal, studyUid: string, text: ReportText) => {
      const { acquisitionUid, study } = await studyOf(p.tenantId, studyUid);
      const r = await d.db.transaction((tx) => saveReportDraft(tx, { tenantId: p.tenantId, studyInstanceUid: studyUid, acquisitionUid, text, authoredBy: p.username, atMs: Date.now() }));
      return announce(p.tenantId, r, study);
    },
    amend: async (p: Principal, studyUid: string) => {
      const { study } = await studyOf(p.tenantId, studyUid);
      const r = await d.db.transaction((tx) => amendReport(tx, { tenantId: p.tenantId, studyInstanceUid: studyUid, authoredBy: p.username, atMs: Date.now() }));
      return announce(p.tenantId, r, study);
    },
    sign: async (p: Principal, studyUid: string) => {
      const { study } = await studyOf(p.tenantId, studyUid);
      if (study === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'this study has no volume of ours to reference from a signed SR');
      // Check first (nothing is written for a report that cannot be signed), then store the SR,
      // then sign with its UIDs. A failure between the two leaves an unreferenced SR in the
      // study, never a signed report without its SR.
      const draft = await d.db.transaction((tx) => draftToSign(tx, p.tenantId, studyUid));
      const previous = draft.replacesId === undefined ? undefined : (await listReportVersions(d.db, p.tenantId, studyUid)).find((r) => r.id === draft.replacesId);
      const atMs = Date.now();
      const measurements = draft.acquisitionUid === null ? [] : (await listMeasurements(d.db, p.tenantId, draft.acquisitionUid)).filter((m) => draft.measurementIds.includes(m.id));
      const sr = { seriesInstanceUid: newUid(), sopInstanceUid: newUid() };
      const volume = study.instances.find((i) => i.sopClassUid === ENHANCED_US_VOLUME_SOP_CLASS_UID);
      if (volume === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'this study has no Enhanced US Volume');
      const bytes = encodeMeasurementReport({
        ...study.common,
        ...sr,
        seriesNumber: 100 + draft.version,
        seriesDescription: `Report v${draft.version}, signed by ${p.username}`,
        instanceNumber: 1,
        contentDateTime: new Date(atMs).toISOString(),
        deviceObserverUid: ECO3D_DEVICE_OBSERVER_UID,
        procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
        referencedVolume: { sopClassUid: volume.sopClassUid, sopInstanceUid: volume.sopInstanceUid, seriesInstanceUid: volume.seriesInstanceUid, frameOfReferenceUid: study.volumeFrameOfReferenceUid },
        measurements: measurements.map(toSrMeasurement),
        findings: draft.findings,
        conclusion: draft.conclusion,
        verification: { observerName: p.username, organization: d.organization, dateTime: new Date(atMs).toISOString() },
        ...(previous?.srSopInstanceUid === undefined || previous.srSeriesInstanceUid === undefined
          ? {}
          : { predecessor: { seriesInstanceUid: previous.srSeriesInstanceUid, sopInstanceUid: previous.srSopInstanceUid } }),
      });
      await d.archive.storeInstance(p.tenantId, bytes, { kind: 'acquisition', acquisitionUid: studyUid });
      const signed = await d.db.transaction(async (tx) => {
        const again = await draftToSign(tx, p.tenantId, studyUid);
        if (again.id !== draft.id || again.updatedAtMs !== draft.updatedAtMs) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'the draft changed while it was being signed: review it and sign again');
        return signReport(tx, { id: draft.id, signedBy: p.username, signedByAccountId: p.accountId, atMs, srSeriesInstanceUid: sr.seriesInstanceUid, srSopInstanceUid: sr.sopInstanceUid });
      });
      return announce(p.tenantId, signed, study).catch((err: unknown) => {
        // Signed and stored: the FHIR view catches up at the next change; say so loudly.
        d.log.error({ studyUid, err: toEco3dError(err).message }, 'the signed report could not be announced over FHIR');
        return view(p.tenantId, signed);
      });
    },
  };
}

/** Identifies this software as the observer device of the measurements (TID 1004). A fixed 2.25 UID. */
const ECO3D_DEVICE_OBSERVER_UID = '2.25.183716215734946092857623092150983423871';

function toSrMeasurement(m: Measurement): SrMeasurement {
  return m.kind === 'distance'
    ? { kind: 'distance', valueMm: m.valueMm, plane: m.plane, pointsMm: m.pointsMm, label: m.label }
    : { kind: 'area', valueMm2: m.valueMm2, plane: m.plane, pointsMm: m.pointsMm, label: m.label };
}

/** StudyFhir over the FHIR service: the ImagingStudy lists what the archive holds (the SR too, once signed). */
export function studyFhir(fhir: FhirService, archive: DicomArchive): StudyFhir {
  const publish = async (tenantId: string, study: ScanStudy, startedAtMs?: number): Promise<void> => {
    const bySeries = new Map<string, { seriesInstanceUid: string; modality: string; number?: number; instances: { sopInstanceUid: string; sopClassUid: string; number?: number }[] }>();
    for (const i of await archive.studyInstances(tenantId, study.studyInstanceUid)) {
      let s = bySeries.get(i.seriesInstanceUid);
      if (s === undefined) {
        // An instance without Modality is not one of ours; OT ("other") is DICOM's word for it.
        s = { seriesInstanceUid: i.seriesInstanceUid, modality: i.modality ?? 'OT', ...(i.seriesNumber === null ? {} : { number: i.seriesNumber }), instances: [] };
        bySeries.set(i.seriesInstanceUid, s);
      }
      s.instances.push({ sopInstanceUid: i.sopInstanceUid, sopClassUid: i.sopClassUid, ...(i.instanceNumber === null ? {} : { number: i.instanceNumber }) });
    }
    const p = study.common.patient;
    await fhir.publishStudy({
      tenantId,
      studyInstanceUid: study.studyInstanceUid,
      accessionNumber: study.common.study.accessionNumber === '' ? undefined : study.common.study.accessionNumber,
      description: study.common.study.description,
      startedMs: startedAtMs ?? Date.parse(study.common.study.studyDateTime),
      series: [...bySeries.values()],
      patient: { patientId: p.id, name: p.name, birthDate: p.birthDate, sex: p.sex },
    });
  };
  return {
    studyArchived: ({ tenantId, study, startedAtMs }) => publish(tenantId, study, startedAtMs),
    reportChanged: async ({ tenantId, report, measurements, study }) => {
      // A signed version's SR joins the study: the ImagingStudy lists it. A draft changes no series.
      if (study !== undefined && report.status !== 'preliminary') await publish(tenantId, study);
      await fhir.publishReport({
        tenantId,
        // One report per study: its versions are the DiagnosticReport's versions.
        reportId: report.studyInstanceUid,
        studyInstanceUid: report.studyInstanceUid,
        status: report.status,
        findings: report.findings === '' ? undefined : report.findings,
        conclusion: report.conclusion === '' ? undefined : report.conclusion,
        author: { username: report.authoredBy },
        signer: report.signedBy === undefined ? undefined : { username: report.signedBy },
        issuedMs: report.signedAtMs ?? report.updatedAtMs,
        measurements,
      });
    },
  };
}

// The lake's intake: an outbox consumer of AcquisitionCompleted that decides whether the
// acquisition's study enters the research data lake, and if so writes its de-identified copy.
//
// In order, each refusal recorded in lake_intake with its reason (the usable fraction is known):
//   1. the study is archived (the archive-study consumer is done; waits for it) and complete
//      (every instance of its manifest is in the archive)        → else no-study / incomplete
//   2. the patient's newest research consent is yes               → else no-consent / consent-denied / consent-revoked
//   3. the scan is diagnostic (coverage, contact force stability) → else low-quality:<reasons>
//   4. no other scan of the same exam is already in the lake     → else duplicate:<case>
//   5. every instance de-identifies (burned-in annotation needs a mask) → else burned-in-annotation / deid-failed
// Then the copies go into the lake's content-addressed store, and one transaction re-checks the
// consent (a revocation during processing wins), adds the case to the catalog, records the
// intake and announces StudyDeidentified. A crash before that transaction leaves only unreferenced
// files that the retry overwrites with the same bytes (the UID remap and date shift are keyed, so
// a retry writes the same instances): never a half-written case.
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Eco3dError, remapUid, toEco3dError, type DeidOptions, type DomainEvent } from '../protocols/index.ts';
import { currentConsent, getExamOfAcquisition, insertOutboxEvent, type Database, type OutboxConsumer, type Queryable } from '../store/index.ts';
import type { LakeKeys } from './keys.ts';
import { pseudonymFor } from './pseudonyms.ts';
import { qualityScore, type QualityAssessment } from './quality.ts';
import { getLakeSettings } from './settings.ts';

export const LAKE_INTAKE_CONSUMER = 'lake-intake';
/** The lake's instances are kept in their own archive under this reserved tenant. */
export const LAKE_TENANT = 'eco3d-lake';

/** A DICOM JSON data set, as the archive's metadata gives it. */
type DicomJson = Readonly<Record<string, { readonly Value?: readonly unknown[] } | undefined>>;

/** What the intake needs of the hospital's archive (archive/DicomArchive fits). */
export interface HospitalArchive {
  studyInstances(tenantId: string, studyUid: string): Promise<ReadonlyArray<{ readonly sopInstanceUid: string; readonly sizeBytes: number }>>;
  instanceFile(tenantId: string, sopInstanceUid: string): Promise<string | null>;
  findInstances(tenantId: string, where: { study: string }, opts: { metadata: 'all' }): Promise<ReadonlyArray<{ readonly metadata?: DicomJson }>>;
}

/** What the intake needs of the lake's own archive (a content-addressed DicomArchive, no outbox events). */
export interface LakeArchive {
  /** Moves a de-identified file in (`move`: the file is the archive's afterwards). */
  storeFile(tenantId: string, path: string, source: { kind: 'stow'; actor: string }, options: { move: true }): Promise<{ readonly sopInstanceUid: string; readonly studyInstanceUid: string }>;
  deleteStudy(tenantId: string, studyUid: string): Promise<{ instances: number; bytes: number }>;
}

/**
 * De-identifies one file to a new file (server/deidentify-command.ts deidentifyFile fits, with a
 * target on the lake's file system): the header in memory, the pixel data file to file, so a
 * large volume never blocks the event loop the robot's control shares.
 */
export type DeidentifyFile = (path: string, options: DeidOptions) => Promise<{ readonly path: string; readonly sizeBytes: number }>;

export interface IntakeDeps {
  readonly db: Database;
  readonly keys: LakeKeys;
  readonly archive: HospitalArchive;
  readonly lake: LakeArchive;
  readonly deidentifyFile: DeidentifyFile;
  /** <data>/acquisitions: the study manifest and sweep-quality.json of each acquisition. */
  readonly acquisitionsDir: string;
  /** Resolves once the archive-study consumer is done with this acquisition (see StudyGate). */
  readonly studyDone: (tenantId: string, acquisitionUid: string, eventKey: string, signal: AbortSignal) => Promise<void>;
  readonly log: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
  /** Descriptions known to hold no patient data (our own series descriptions), kept by Clean Descriptors. */
  readonly safeDescriptors?: readonly string[];
}

export type IntakeOutcome = { readonly outcome: 'copied'; readonly caseId: string } | { readonly outcome: 'excluded'; readonly reason: string };

/** The case id of an acquisition: stable (a retry finds the same), and not the acquisition UID. */
const caseIdOf = (keys: LakeKeys, tenantId: string, acquisitionUid: string): string =>
  `C-${createHash('sha256').update(keys.deidKey).update(`case\u0000${tenantId}\u0000${acquisitionUid}`).digest('hex').slice(0, 20)}`;

export function intakeConsumer(d: IntakeDeps): OutboxConsumer {
  return {
    name: LAKE_INTAKE_CONSUMER,
    eventTypes: ['AcquisitionCompleted'],
    handle: async (event: DomainEvent, signal: AbortSignal) => {
      if (event.type !== 'AcquisitionCompleted') return;
      const done = await intakeOutcome(d.db, event.tenantId, event.acquisitionUid);
      if (done !== undefined) return;
      await d.studyDone(event.tenantId, event.acquisitionUid, event.idempotencyKey, signal);
      const r = await intake(d, event.tenantId, event.acquisitionUid, { framesAcquired: event.framesAcquired, sweep: event.sweep, durationMs: event.durationMs });
      d.log.info({ acquisitionUid: event.acquisitionUid, ...r }, r.outcome === 'copied' ? 'de-identified copy added to the data lake' : 'not copied to the data lake');
    },
  };
}

export async function intakeOutcome(q: Queryable, tenantId: string, acquisitionUid: string): Promise<IntakeOutcome | undefined> {
  const r = (await q.query<{ outcome: 'copied' | 'excluded'; reason: string; case_id: string | null }>('SELECT outcome, reason, case_id FROM lake_intake WHERE tenant_id = $1 AND acquisition_uid = $2', [tenantId, acquisitionUid]))[0];
  if (r === undefined) return undefined;
  return r.outcome === 'copied' ? { outcome: 'copied', caseId: r.case_id! } : { outcome: 'excluded', reason: r.reason };
}

async function exclude(q: Queryable, tenantId: string, acquisitionUid: string, examId: string | null, reason: string, quality: unknown = null): Promise<IntakeOutcome> {
  await q.query(
    `INSERT INTO lake_intake (tenant_id, acquisition_uid, exam_id, outcome, reason, quality) VALUES ($1, $2, $3, 'excluded', $4, $5::jsonb)
     ON CONFLICT (tenant_id, acquisition_uid) DO NOTHING`,
    [tenantId, acquisitionUid, examId, reason.slice(0, 500), quality === null ? null : JSON.stringify(quality)],
  );
  return (await intakeOutcome(q, tenantId, acquisitionUid))!;
}

const consentVerdict = async (q: Queryable, tenantId: string, patientId: string): Promise<string | undefined> => {
  const c = await currentConsent(q, tenantId, patientId);
  if (c === undefined) return 'no-consent';
  if (c.decision === 'no') return 'consent-denied';
  if (c.decision === 'revoked') return 'consent-revoked';
  return undefined;
};

interface SweepFacts {
  readonly framesAcquired: number;
  readonly durationMs: number;
  readonly sweep: { kind: 'linear' | 'fan'; lengthMm: number; tiltRangeRad: number; speedMmPerS: number; targetForceN: number };
}

/** Steps 1–5 of the header, then the copy. */
export async function intake(d: IntakeDeps, tenantId: string, acquisitionUid: string, facts: SweepFacts): Promise<IntakeOutcome> {
  const exam = await getExamOfAcquisition(d.db, tenantId, acquisitionUid);
  const examId = exam?.id ?? null;
  const dir = join(d.acquisitionsDir, acquisitionUid);

  // 1. The study, complete.
  const manifestFile = join(dir, 'study', 'manifest.json');
  if (!existsSync(manifestFile)) return exclude(d.db, tenantId, acquisitionUid, examId, 'no-study');
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { studyInstanceUid: string; instances: ReadonlyArray<{ sopInstanceUid: string }> };
  const archived = await d.archive.studyInstances(tenantId, manifest.studyInstanceUid);
  const have = new Set(archived.map((i) => i.sopInstanceUid));
  const missing = manifest.instances.filter((i) => !have.has(i.sopInstanceUid)).length;
  if (missing > 0 || manifest.instances.length === 0) return exclude(d.db, tenantId, acquisitionUid, examId, `incomplete:${missing} of ${manifest.instances.length} instances missing`);

  // 2. Consent: there is none without a known patient.
  if (exam === undefined) return exclude(d.db, tenantId, acquisitionUid, examId, 'no-consent:no-patient');
  const refused = await consentVerdict(d.db, tenantId, exam.patientId);
  if (refused !== undefined) return exclude(d.db, tenantId, acquisitionUid, examId, refused);

  // 3. Quality.
  const settings = await getLakeSettings(d.db, tenantId);
  const qualityFile = join(dir, 'sweep-quality.json');
  const sweepQuality = existsSync(qualityFile) ? (JSON.parse(readFileSync(qualityFile, 'utf8')) as { framesAcquired: number; frameRateHz: number; sweepDurationMs: number; forceSamplesN: number[] }) : undefined;
  let quality: QualityAssessment;
  try {
    quality = qualityScore(
      {
        framesAcquired: sweepQuality?.framesAcquired ?? facts.framesAcquired,
        sweep: facts.sweep,
        frameRateHz: sweepQuality?.frameRateHz ?? 30,
        forceSamplesN: sweepQuality?.forceSamplesN ?? [],
        // A fan sweep's length is in time only; without our sweep record, the acquisition's (an upper bound).
        sweepDurationMs: sweepQuality?.sweepDurationMs ?? facts.durationMs,
      },
      { minCoverage: settings.minCoverage, minForceInBandShare: settings.minForceInBandShare },
    );
  } catch (err) {
    // Facts a score cannot be made of (a fan sweep of one frame has no duration): not diagnostic.
    return exclude(d.db, tenantId, acquisitionUid, examId, `low-quality:unscorable:${toEco3dError(err).message}`);
  }
  if (!quality.diagnostic) return exclude(d.db, tenantId, acquisitionUid, examId, `low-quality:${quality.reasons.join(',')}`, quality);

  // 4. One case per exam: repeat sweeps of one exam are duplicates of its first diagnostic scan.
  if (examId !== null) {
    const other = (await d.db.query<{ case_id: string }>(`SELECT case_id FROM lake_intake WHERE tenant_id = $1 AND exam_id = $2 AND outcome = 'copied' AND acquisition_uid <> $3`, [tenantId, examId, acquisitionUid]))[0];
    if (other !== undefined) return exclude(d.db, tenantId, acquisitionUid, examId, `duplicate:${other.case_id}`, quality);
  }

  // 5. De-identify every instance into the lake.
  const pseudonym = await d.db.transaction((tx) => pseudonymFor(tx, d.keys, tenantId, exam.patientId));
  const options: DeidOptions = {
    uidKey: d.keys.deidKey,
    dateShiftDays: pseudonym.dateShiftDays,
    retainPatientCharacteristics: true,
    cleanDescriptors: true,
    safeDescriptors: d.safeDescriptors ?? [],
    cleanStructuredContent: true,
    retainDeviceIdentity: settings.retainDeviceIdentity,
    burnedInMasks: settings.burnedInMasks,
    safePrivateTags: settings.safePrivateTags,
    patientPseudonym: pseudonym.id,
  };
  const lakeStudyUid = remapUid(manifest.studyInstanceUid, d.keys.deidKey);
  let sizeBytes = 0;
  try {
    for (const i of archived) {
      const file = await d.archive.instanceFile(tenantId, i.sopInstanceUid);
      if (file === null) throw new Eco3dError('ECO3D_ERR_CONFLICT', `instance ${i.sopInstanceUid} left the archive during the copy`);
      const out = await d.deidentifyFile(file, options);
      const stored = await d.lake.storeFile(LAKE_TENANT, out.path, { kind: 'stow', actor: 'lake-intake' }, { move: true }).finally(() => rm(out.path, { force: true }));
      if (stored.studyInstanceUid !== lakeStudyUid) throw new Eco3dError('ECO3D_ERR_INTERNAL', `de-identified study UID ${stored.studyInstanceUid} is not the remapped ${lakeStudyUid}`);
      sizeBytes += out.sizeBytes;
    }
  } catch (err) {
    const e = toEco3dError(err);
    if (e.code !== 'ECO3D_ERR_BURNED_IN_ANNOTATION' && e.code !== 'ECO3D_ERR_BAD_FILE') throw err; // retried
    await d.lake.deleteStudy(LAKE_TENANT, lakeStudyUid);
    return exclude(d.db, tenantId, acquisitionUid, examId, e.code === 'ECO3D_ERR_BURNED_IN_ANNOTATION' ? 'burned-in-annotation' : `deid-failed:${e.message}`, quality);
  }

  // The catalog's attributes, from the original (coarsened here: never more precise than listed).
  // From whichever instance of the study carries each (the volume and the frames differ: the
  // Enhanced US Volume keeps its transducer in functional groups, the frames at the top level).
  const mds = (await d.archive.findInstances(tenantId, { study: manifest.studyInstanceUid }, { metadata: 'all' })).map((i) => i.metadata ?? {});
  const str = (v: unknown): string | null => (typeof v === 'string' && v.trim() !== '' ? v.trim() : null);
  const text = (tag: string): string | null => {
    for (const md of mds) {
      const v = str(md[tag]?.Value?.[0]);
      if (v !== null) return v;
    }
    return null;
  };
  /** The code meaning of a code sequence's first item (e.g. Anatomic Region Sequence → "Abdomen"). */
  const meaning = (tag: string): string | null => {
    for (const md of mds) {
      const item = md[tag]?.Value?.[0] as Record<string, { Value?: readonly unknown[] }> | undefined;
      const v = str(item?.['00080104']?.Value?.[0]);
      if (v !== null) return v;
    }
    return null;
  };
  const studyDate = text('00080020');
  const caseId = caseIdOf(d.keys, tenantId, acquisitionUid);
  const cat = {
    bodyPart: text('00180015') ?? meaning('00082218'),
    probe: text('00185010'),
    deviceModel: text('00081090'),
    studyYear: studyDate === null ? null : Number(studyDate.slice(0, 4)),
    ageBand: exam.birthDate !== undefined && studyDate !== null ? ageBandAt(exam.birthDate, studyDate) : null,
    sex: exam.sex ?? null,
  };

  const result = await d.db.transaction(async (tx) => {
    // A revocation (or erasure) that arrived while the copy was being made wins.
    const late = await consentVerdict(tx, tenantId, exam.patientId);
    if (late !== undefined) return undefined;
    await tx.query(
      `INSERT INTO lake_cases (id, study_uid, pseudonym_id, source_tenant_id, body_part, probe, device_model, study_year, age_band, sex, site_region, quality_score, instances, size_bytes)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (id) DO NOTHING`,
      [caseId, lakeStudyUid, pseudonym.id, tenantId, cat.bodyPart, cat.probe, cat.deviceModel, cat.studyYear, cat.ageBand, cat.sex, settings.siteRegion, quality.score, archived.length, sizeBytes],
    );
    await tx.query(
      `INSERT INTO lake_intake (tenant_id, acquisition_uid, exam_id, outcome, reason, quality, case_id) VALUES ($1, $2, $3, 'copied', 'ok', $4::jsonb, $5)
       ON CONFLICT (tenant_id, acquisition_uid) DO NOTHING`,
      [tenantId, acquisitionUid, examId, JSON.stringify(quality), caseId],
    );
    await insertOutboxEvent(tx, {
      type: 'StudyDeidentified',
      version: 1,
      idempotencyKey: `StudyDeidentified/${caseId}`,
      tenantId,
      occurredAt: new Date().toISOString(),
      caseId,
      studyInstanceUid: lakeStudyUid,
      instances: archived.length,
    });
    return caseId;
  });
  if (result === undefined) {
    await d.lake.deleteStudy(LAKE_TENANT, lakeStudyUid);
    const reason = (await consentVerdict(d.db, tenantId, exam.patientId)) ?? 'consent-revoked';
    return exclude(d.db, tenantId, acquisitionUid, examId, `${reason}:during-processing`, quality);
  }
  return (await intakeOutcome(d.db, tenantId, acquisitionUid))!;
}

/** The 5-year age band ('040Y' = 40–44; 90 and over '090Y') at the study date (YYYYMMDD). */
export function ageBandAt(birthDate: string, studyDate: string): string | null {
  const b = /^(\d{4})-?(\d{2})-?(\d{2})$/.exec(birthDate);
  const s = /^(\d{4})(\d{2})(\d{2})$/.exec(studyDate);
  if (b === null || s === null) return null;
  let years = Number(s[1]) - Number(b[1]);
  if (Number(s[2]) * 100 + Number(s[3]) < Number(b[2]) * 100 + Number(b[3])) years--;
  if (years < 0) return null;
  return `${String(Math.min(90, Math.floor(years / 5) * 5)).padStart(3, '0')}Y`;
}

/**
 * Lets the intake wait for the archive-study consumer in this process (it resolves `done` when it
 * finishes an acquisition), with the outbox's own record as the fallback after a restart.
 */
export class StudyGate {
  readonly #done = new Set<string>();
  readonly #waiters = new Map<string, Array<() => void>>();
  constructor(
    private readonly db: Queryable,
    private readonly studyConsumer: string,
    private readonly maxWaitMs = 45_000,
  ) {}

  done(tenantId: string, acquisitionUid: string): void {
    const k = `${tenantId}/${acquisitionUid}`;
    this.#done.add(k);
    for (const w of this.#waiters.get(k) ?? []) w();
    this.#waiters.delete(k);
  }

  async wait(tenantId: string, acquisitionUid: string, eventKey: string, signal: AbortSignal): Promise<void> {
    const k = `${tenantId}/${acquisitionUid}`;
    // Each acquisition is awaited once; a retry finds the outbox's record instead.
    if (this.#done.delete(k) || (await this.#deliveredInOutbox(eventKey))) return;
    const arrived = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), this.maxWaitMs);
      const finish = (v: boolean): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      };
      const onAbort = (): void => finish(false);
      signal.addEventListener('abort', onAbort, { once: true });
      const list = this.#waiters.get(k) ?? [];
      list.push(() => finish(true));
      this.#waiters.set(k, list);
    });
    if (this.#done.delete(k) || arrived || (await this.#deliveredInOutbox(eventKey))) return;
    throw new Eco3dError('ECO3D_ERR_CONFLICT', `the study of acquisition ${acquisitionUid} is not archived yet: the lake intake retries`);
  }

  async #deliveredInOutbox(eventKey: string): Promise<boolean> {
    const r = await this.db.query(
      `SELECT 1 FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE o.idempotency_key = $1 AND d.consumer = $2 AND d.delivered_at IS NOT NULL`,
      [eventKey, this.studyConsumer],
    );
    return r.length > 0;
  }
}

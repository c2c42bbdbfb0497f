// Exams: the patient and exam of the current acquisition on a device, as entered at the bedside.
// A device has at most one current exam (a partial unique index); starting one ends the
// previous. Each acquisition started during an exam is linked to it.
//
// Also the masking of patient identity for demo mode (privacy by design): pure functions, so that
// every answer carrying patient data masks it the same way.
import { randomUUID } from 'node:crypto';
import { Eco3dError } from '../protocols/errors.ts';
import type { Queryable } from './database.ts';
import { badRequest, finiteMs, iso, rethrowConstraint } from './util.ts';

export type Sex = 'F' | 'M' | 'O';
export const SEXES: readonly Sex[] = ['F', 'M', 'O'];

export interface Exam {
  readonly id: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly patientId: string;
  readonly patientName: string;
  /** YYYY-MM-DD (masked: YYYY). */
  readonly birthDate?: string;
  readonly sex?: Sex;
  readonly description: string;
  readonly accessionNumber?: string;
  /** Username of who started it. */
  readonly startedBy: string;
  readonly startedAtMs: number;
  readonly endedBy?: string;
  readonly endedAtMs?: number;
}

export interface NewExam {
  readonly tenantId: string;
  readonly deviceId: string;
  readonly patientId: string;
  readonly patientName: string;
  readonly birthDate?: string | undefined;
  readonly sex?: Sex | undefined;
  readonly description: string;
  readonly accessionNumber?: string | undefined;
  readonly startedBy: string;
  readonly atMs: number;
}

interface ExamRow {
  id: string;
  tenant_id: string;
  device_id: string;
  patient_id: string;
  patient_name: string;
  birth_date: string | null;
  sex: Sex | null;
  description: string;
  accession_number: string | null;
  started_by: string;
  started_at: Date;
  ended_by: string | null;
  ended_at: Date | null;
}

// The date goes out as text: `pg` would turn a `date` into a Date at local midnight.
const examColumns = (t = ''): string =>
  `${t}id, ${t}tenant_id, ${t}device_id, ${t}patient_id, ${t}patient_name, to_char(${t}birth_date, 'YYYY-MM-DD') AS birth_date, ${t}sex,
   ${t}description, ${t}accession_number, ${t}started_by, ${t}started_at, ${t}ended_by, ${t}ended_at`;
const EXAM_COLUMNS = examColumns();

const toExam = (r: ExamRow): Exam => ({
  id: r.id,
  tenantId: r.tenant_id,
  deviceId: r.device_id,
  patientId: r.patient_id,
  patientName: r.patient_name,
  ...(r.birth_date === null ? {} : { birthDate: r.birth_date }),
  ...(r.sex === null ? {} : { sex: r.sex }),
  description: r.description,
  ...(r.accession_number === null ? {} : { accessionNumber: r.accession_number }),
  startedBy: r.started_by,
  startedAtMs: r.started_at.getTime(),
  ...(r.ended_by === null ? {} : { endedBy: r.ended_by }),
  ...(r.ended_at === null ? {} : { endedAtMs: r.ended_at.getTime() }),
});

// Control characters and the DICOM value delimiter (backslash) have no place in these fields.
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f\\]/;

/** A DICOM-ready text field: trimmed, 1..max printable characters. */
function text(field: string, value: string, max: number): string {
  if (typeof value !== 'string') throw badRequest(`${field} must be a string`);
  const v = value.trim();
  if (v.length < 1 || v.length > max) throw badRequest(`${field} has 1 to ${max} characters`);
  if (UNPRINTABLE.test(v)) throw badRequest(`${field} has a control character or a backslash`);
  return v;
}

/** A real calendar date YYYY-MM-DD, not after `nowMs`, not before 1900. */
export function checkBirthDate(value: string, nowMs: number): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  const ms = m === null ? NaN : Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  if (m === null || Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 10) !== value) {
    throw badRequest(`birthDate ${JSON.stringify(value)} is not a date YYYY-MM-DD`);
  }
  if (Number(m[1]) < 1900 || ms > nowMs) throw badRequest(`birthDate ${value} is out of range (1900 to today)`);
  return value;
}

/**
 * Starts an exam on a device and makes it the device's current exam, ending the previous one.
 * Two statements: pass a transaction (`db.transaction`), so they are one change. The device row is
 * locked first, so concurrent starts on one device queue instead of failing.
 */
export async function startExam(tx: Queryable, e: NewExam): Promise<{ exam: Exam; ended?: Exam }> {
  const atMs = finiteMs('atMs', e.atMs);
  const exam = {
    patientId: text('patientId', e.patientId, 64),
    patientName: text('patientName', e.patientName, 64),
    birthDate: e.birthDate === undefined ? null : checkBirthDate(e.birthDate, atMs),
    sex: e.sex ?? null,
    description: text('description', e.description, 64),
    accessionNumber: e.accessionNumber === undefined ? null : text('accessionNumber', e.accessionNumber, 16),
    startedBy: text('startedBy', e.startedBy, 200),
  };
  if (exam.sex !== null && !SEXES.includes(exam.sex)) throw badRequest(`sex is one of ${SEXES.join(', ')}`);
  const device = await tx.query('SELECT 1 FROM devices WHERE tenant_id = $1 AND id = $2 FOR UPDATE', [e.tenantId, e.deviceId]);
  if (device.length === 0) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no device ${e.tenantId}/${e.deviceId}`);
  const ended = await endCurrentExam(tx, { tenantId: e.tenantId, deviceId: e.deviceId, endedBy: exam.startedBy, atMs });
  try {
    const rows = await tx.query<ExamRow>(
      `INSERT INTO exams (id, tenant_id, device_id, patient_id, patient_name, birth_date, sex, description, accession_number, started_by, started_at)
       VALUES ($1, $2, $3, $4, $5, $6::date, $7, $8, $9, $10, $11::timestamptz) RETURNING ${EXAM_COLUMNS}`,
      [
        randomUUID(),
        e.tenantId,
        e.deviceId,
        exam.patientId,
        exam.patientName,
        exam.birthDate,
        exam.sex,
        exam.description,
        exam.accessionNumber,
        exam.startedBy,
        iso(atMs),
      ],
    );
    return { exam: toExam(rows[0]!), ...(ended === undefined ? {} : { ended }) };
  } catch (err) {
    return rethrowConstraint(err, { duplicate: `device ${e.deviceId} already has a current exam (a concurrent start)` });
  }
}

/** Ends the device's current exam; undefined when it has none. */
export async function endCurrentExam(
  q: Queryable,
  e: { tenantId: string; deviceId: string; endedBy: string; atMs: number },
): Promise<Exam | undefined> {
  if (e.endedBy === '') throw badRequest('ending an exam needs its author');
  // GREATEST: a clock step back never makes an exam end before it started.
  const rows = await q.query<ExamRow>(
    `UPDATE exams SET ended_at = GREATEST($3::timestamptz, started_at), ended_by = $4
     WHERE tenant_id = $1 AND device_id = $2 AND ended_at IS NULL RETURNING ${EXAM_COLUMNS}`,
    [e.tenantId, e.deviceId, iso(finiteMs('atMs', e.atMs)), e.endedBy],
  );
  return rows[0] === undefined ? undefined : toExam(rows[0]);
}

/** The device's current exam, or undefined. */
export async function currentExam(q: Queryable, tenantId: string, deviceId: string): Promise<Exam | undefined> {
  const row = (
    await q.query<ExamRow>(`SELECT ${EXAM_COLUMNS} FROM exams WHERE tenant_id = $1 AND device_id = $2 AND ended_at IS NULL`, [tenantId, deviceId])
  )[0];
  return row === undefined ? undefined : toExam(row);
}

/** Scoped by tenant, like every read. */
export async function getExam(q: Queryable, tenantId: string, examId: string): Promise<Exam | undefined> {
  const row = (await q.query<ExamRow>(`SELECT ${EXAM_COLUMNS} FROM exams WHERE tenant_id = $1 AND id = $2`, [tenantId, examId]))[0];
  return row === undefined ? undefined : toExam(row);
}

/**
 * Links an acquisition to an exam, both of the tenant (else ECO3D_ERR_NOT_FOUND). Idempotent for
 * the same exam; an acquisition already linked to another exam is ECO3D_ERR_CONFLICT.
 */
export async function linkAcquisitionToExam(q: Queryable, l: { tenantId: string; acquisitionUid: string; examId: string }): Promise<void> {
  const rows = await q.query<{ acquisition: boolean; exam: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM acquisitions WHERE tenant_id = $1 AND uid = $2) AS acquisition,
            EXISTS (SELECT 1 FROM exams WHERE tenant_id = $1 AND id = $3) AS exam`,
    [l.tenantId, l.acquisitionUid, l.examId],
  );
  if (rows[0]?.acquisition !== true) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no acquisition ${l.acquisitionUid}`);
  if (rows[0].exam !== true) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no exam ${l.examId}`);
  const inserted = await q.query(
    'INSERT INTO acquisition_exams (acquisition_uid, exam_id) VALUES ($1, $2) ON CONFLICT (acquisition_uid) DO NOTHING RETURNING exam_id',
    [l.acquisitionUid, l.examId],
  );
  if (inserted.length > 0) return;
  const existing = (await q.query<{ exam_id: string }>('SELECT exam_id FROM acquisition_exams WHERE acquisition_uid = $1', [l.acquisitionUid]))[0];
  if (existing?.exam_id !== l.examId) {
    throw new Eco3dError('ECO3D_ERR_CONFLICT', `acquisition ${l.acquisitionUid} already belongs to exam ${existing?.exam_id ?? '?'}`);
  }
}

/** The exam an acquisition of the tenant belongs to, or undefined. */
export async function getExamOfAcquisition(q: Queryable, tenantId: string, acquisitionUid: string): Promise<Exam | undefined> {
  const row = (
    await q.query<ExamRow>(
      `SELECT ${examColumns('e.')}
       FROM acquisition_exams l JOIN exams e ON e.id = l.exam_id
       WHERE e.tenant_id = $1 AND l.acquisition_uid = $2`,
      [tenantId, acquisitionUid],
    )
  )[0];
  return row === undefined ? undefined : toExam(row);
}

// --- masking (demo mode) -------------------------------------------------------------------------

/** "Doe^Jane Q" → "D*** J*** Q***": the first letter of each name part, separators kept. */
export function maskPersonName(name: string): string {
  return name.replace(/[^\s^,.-]+/gu, (part) => `${Array.from(part)[0] ?? ''}***`);
}

/** "PAT-0042" → "P***": the first character only. */
export function maskPatientId(id: string): string {
  return `${Array.from(id)[0] ?? ''}***`;
}

/** "1980-04-12" → "1980". */
export const maskBirthDate = (date: string): string => date.slice(0, 4);

/** The exam with patient name, id and birth date masked. */
export function maskExam(e: Exam): Exam {
  return {
    ...e,
    patientId: maskPatientId(e.patientId),
    patientName: maskPersonName(e.patientName),
    ...(e.birthDate === undefined ? {} : { birthDate: maskBirthDate(e.birthDate) }),
  };
}

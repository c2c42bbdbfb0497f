// The reading physician's report on a study, in versions (migration 0006). Drafting updates the
// open (preliminary) version; signing closes it for good (a trigger refuses any later change);
// amending opens a new version that replaces the signed one. Only a physician signs: the HTTP
// layer checks the role, this module checks the states.
import { randomUUID } from 'node:crypto';
import { Eco3dError } from '../protocols/errors.ts';
import type { Queryable } from './database.ts';
import { badRequest, iso } from './util.ts';

export type ReportStatus = 'preliminary' | 'final' | 'amended';

export interface Report {
  readonly id: string;
  readonly tenantId: string;
  readonly studyInstanceUid: string;
  readonly acquisitionUid: string | null;
  readonly version: number;
  /** preliminary until signed; final when signed; amended when a signed amendment. */
  readonly status: ReportStatus;
  readonly findings: string;
  readonly conclusion: string;
  readonly measurementIds: readonly string[];
  /** Username of who last wrote the text. */
  readonly authoredBy: string;
  readonly updatedAtMs: number;
  readonly signedBy?: string;
  readonly signedAtMs?: number;
  /** The signed version this one amends. */
  readonly replacesId?: string;
  readonly srSeriesInstanceUid?: string;
  readonly srSopInstanceUid?: string;
}

interface ReportRow {
  id: string;
  tenant_id: string;
  study_instance_uid: string;
  acquisition_uid: string | null;
  version: number;
  status: ReportStatus;
  findings: string;
  conclusion: string;
  measurement_ids: string[];
  authored_by: string;
  updated_at: Date;
  signed_by: string | null;
  signed_at: Date | null;
  replaces_id: string | null;
  sr_series_instance_uid: string | null;
  sr_sop_instance_uid: string | null;
}

const toReport = (r: ReportRow): Report => ({
  id: r.id,
  tenantId: r.tenant_id,
  studyInstanceUid: r.study_instance_uid,
  acquisitionUid: r.acquisition_uid,
  version: r.version,
  status: r.status,
  findings: r.findings,
  conclusion: r.conclusion,
  measurementIds: r.measurement_ids,
  authoredBy: r.authored_by,
  updatedAtMs: r.updated_at.getTime(),
  ...(r.signed_by === null ? {} : { signedBy: r.signed_by }),
  ...(r.signed_at === null ? {} : { signedAtMs: r.signed_at.getTime() }),
  ...(r.replaces_id === null ? {} : { replacesId: r.replaces_id }),
  ...(r.sr_series_instance_uid === null ? {} : { srSeriesInstanceUid: r.sr_series_instance_uid }),
  ...(r.sr_sop_instance_uid === null ? {} : { srSopInstanceUid: r.sr_sop_instance_uid }),
});

/** Every version of the study's report, newest first. */
export async function listReportVersions(q: Queryable, tenantId: string, studyInstanceUid: string): Promise<Report[]> {
  const rows = await q.query<ReportRow>('SELECT * FROM reports WHERE tenant_id = $1 AND study_instance_uid = $2 ORDER BY version DESC', [tenantId, studyInstanceUid]);
  return rows.map(toReport);
}

/** The newest version, locked for the caller's transaction (drafting and signing race otherwise). */
async function latestForUpdate(q: Queryable, tenantId: string, studyInstanceUid: string): Promise<Report | undefined> {
  const rows = await q.query<ReportRow>(
    'SELECT * FROM reports WHERE tenant_id = $1 AND study_instance_uid = $2 ORDER BY version DESC LIMIT 1 FOR UPDATE',
    [tenantId, studyInstanceUid],
  );
  return rows[0] === undefined ? undefined : toReport(rows[0]);
}

export interface ReportText {
  readonly findings: string;
  readonly conclusion: string;
  readonly measurementIds: readonly string[];
}

// eslint-disable-next-line no-control-regex
const CONTROL_EXCEPT_NEWLINES = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

function checkText(t: ReportText): ReportText {
  const findings = t.findings.trim();
  const conclusion = t.conclusion.trim();
  if (findings.length > 20000) throw badRequest('findings: at most 20000 characters');
  if (conclusion.length > 4000) throw badRequest('conclusion: at most 4000 characters');
  if (CONTROL_EXCEPT_NEWLINES.test(findings) || CONTROL_EXCEPT_NEWLINES.test(conclusion)) throw badRequest('findings and conclusion: printable text and line breaks only');
  const ids = [...new Set(t.measurementIds)];
  if (ids.length > 200) throw badRequest('measurementIds: at most 200');
  return { findings, conclusion, measurementIds: ids };
}

/** The picked measurements must be the study's own (its acquisition's), else 422. */
async function checkMeasurements(q: Queryable, tenantId: string, acquisitionUid: string | null, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  if (acquisitionUid === null) throw new Eco3dError('ECO3D_ERR_INVALID_RESOURCE', 'this study has no acquisition, so no measurements to pick');
  const rows = await q.query<{ id: string }>('SELECT id FROM measurements WHERE tenant_id = $1 AND acquisition_uid = $2 AND id = ANY($3::text[])', [
    tenantId,
    acquisitionUid,
    ids,
  ]);
  const found = new Set(rows.map((r) => r.id));
  const missing = ids.filter((id) => !found.has(id));
  if (missing.length > 0) throw new Eco3dError('ECO3D_ERR_INVALID_RESOURCE', `not measurements of this study: ${missing.join(', ')}`);
}

/**
 * Creates the first version or updates the open draft. A signed newest version refuses
 * (ECO3D_ERR_CONFLICT): amend it first. Run inside a transaction.
 */
export async function saveReportDraft(
  tx: Queryable,
  d: { tenantId: string; studyInstanceUid: string; acquisitionUid: string | null; text: ReportText; authoredBy: string; atMs: number },
): Promise<Report> {
  const text = checkText(d.text);
  const latest = await latestForUpdate(tx, d.tenantId, d.studyInstanceUid);
  await checkMeasurements(tx, d.tenantId, latest?.acquisitionUid ?? d.acquisitionUid, text.measurementIds);
  if (latest !== undefined && latest.status !== 'preliminary') {
    throw new Eco3dError('ECO3D_ERR_CONFLICT', `version ${latest.version} of this report is signed (${latest.status}): amend it to change it`);
  }
  if (latest === undefined) {
    const rows = await tx.query<ReportRow>(
      `INSERT INTO reports (id, tenant_id, study_instance_uid, acquisition_uid, version, status, findings, conclusion, measurement_ids, authored_by, updated_at)
       VALUES ($1, $2, $3, $4, 1, 'preliminary', $5, $6, $7::jsonb, $8, $9::timestamptz) RETURNING *`,
      [randomUUID(), d.tenantId, d.studyInstanceUid, d.acquisitionUid, text.findings, text.conclusion, JSON.stringify(text.measurementIds), d.authoredBy, iso(d.atMs)],
    );
    return toReport(rows[0]!);
  }
  const rows = await tx.query<ReportRow>(
    `UPDATE reports SET findings = $2, conclusion = $3, measurement_ids = $4::jsonb, authored_by = $5, updated_at = $6::timestamptz WHERE id = $1 RETURNING *`,
    [latest.id, text.findings, text.conclusion, JSON.stringify(text.measurementIds), d.authoredBy, iso(d.atMs)],
  );
  return toReport(rows[0]!);
}

/** Opens a new draft version replacing the signed newest one, with its text. Run inside a transaction. */
export async function amendReport(tx: Queryable, a: { tenantId: string; studyInstanceUid: string; authoredBy: string; atMs: number }): Promise<Report> {
  const latest = await latestForUpdate(tx, a.tenantId, a.studyInstanceUid);
  if (latest === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'this study has no report to amend');
  if (latest.status === 'preliminary') throw new Eco3dError('ECO3D_ERR_CONFLICT', `version ${latest.version} is still a draft: edit it instead`);
  const rows = await tx.query<ReportRow>(
    `INSERT INTO reports (id, tenant_id, study_instance_uid, acquisition_uid, version, status, findings, conclusion, measurement_ids, authored_by, updated_at, replaces_id)
     VALUES ($1, $2, $3, $4, $5, 'preliminary', $6, $7, $8::jsonb, $9, $10::timestamptz, $11) RETURNING *`,
    [
      randomUUID(),
      a.tenantId,
      a.studyInstanceUid,
      latest.acquisitionUid,
      latest.version + 1,
      latest.findings,
      latest.conclusion,
      JSON.stringify(latest.measurementIds),
      a.authoredBy,
      iso(a.atMs),
      latest.id,
    ],
  );
  return toReport(rows[0]!);
}

/** The open draft to sign, or ECO3D_ERR_CONFLICT / NOT_FOUND. Run inside the signing transaction. */
export async function draftToSign(tx: Queryable, tenantId: string, studyInstanceUid: string): Promise<Report> {
  const latest = await latestForUpdate(tx, tenantId, studyInstanceUid);
  if (latest === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'this study has no report yet: save a draft first');
  if (latest.status !== 'preliminary') throw new Eco3dError('ECO3D_ERR_CONFLICT', `version ${latest.version} is already signed`);
  if (latest.findings === '' && latest.conclusion === '' && latest.measurementIds.length === 0) {
    throw new Eco3dError('ECO3D_ERR_CONFLICT', 'an empty report cannot be signed: write findings, a conclusion or pick measurements');
  }
  return latest;
}

/** Signs the draft `id` (from draftToSign, same transaction): final, or amended when it replaces a signed version. */
export async function signReport(
  tx: Queryable,
  s: { id: string; signedBy: string; signedByAccountId: string; atMs: number; srSeriesInstanceUid: string; srSopInstanceUid: string },
): Promise<Report> {
  const rows = await tx.query<ReportRow>(
    `UPDATE reports SET status = CASE WHEN replaces_id IS NULL THEN 'final' ELSE 'amended' END,
       signed_by = $2, signed_by_account_id = $3, signed_at = $4::timestamptz, sr_series_instance_uid = $5, sr_sop_instance_uid = $6
     WHERE id = $1 AND signed_at IS NULL RETURNING *`,
    [s.id, s.signedBy, s.signedByAccountId, iso(s.atMs), s.srSeriesInstanceUid, s.srSopInstanceUid],
  );
  if (rows[0] === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'this report version was signed meanwhile');
  return toReport(rows[0]);
}

// The patient's rights over the lake: a consent that says no or is revoked withdraws their cases
// (an outbox consumer of ConsentRecorded, so it happens exactly once even across a crash), and a
// verified erasure request deletes their identifiable data — the archive's studies and the
// pseudonym key — and withdraws their cases. The billing ledger holds no patient data (only
// acquisition identifiers) and stays append-only; the consent records are kept as the legal
// record of what the patient decided.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { Eco3dError, parseWith, type DomainEvent } from '../protocols/index.ts';
import type { Database, OutboxConsumer, Queryable } from '../store/index.ts';
import { withdrawPseudonym } from './catalog.ts';
import { patientHash, type LakeKeys } from './keys.ts';
import { deletePseudonym, findPseudonym } from './pseudonyms.ts';

export const LAKE_CONSENT_CONSUMER = 'lake-consent';

/** Withdraws the patient's cases when their research consent becomes no or revoked. */
export function consentConsumer(d: { db: Database; keys: LakeKeys; log: { info(o: object, msg: string): void } }): OutboxConsumer {
  return {
    name: LAKE_CONSENT_CONSUMER,
    eventTypes: ['ConsentRecorded'],
    handle: async (event: DomainEvent) => {
      if (event.type !== 'ConsentRecorded' || event.decision === 'yes') return;
      const c = (await d.db.query<{ patient_id: string }>('SELECT patient_id FROM consents WHERE tenant_id = $1 AND id = $2', [event.tenantId, event.consentId]))[0];
      if (c === undefined) return;
      const p = await findPseudonym(d.db, d.keys, event.tenantId, c.patient_id);
      if (p === undefined) return; // never in the lake
      const withdrawn = await withdrawPseudonym(d.db, p.id, event.decision === 'no' ? 'consent-denied' : 'consent-revoked');
      if (withdrawn.length > 0) d.log.info({ pseudonym: p.id, cases: withdrawn }, 'research consent withdrawn: the patient\'s lake cases are withdrawn');
    },
  };
}

/** What erasure needs of the hospital's archive (archive/DicomArchive fits). */
export interface ErasableArchive {
  deleteStudy(tenantId: string, studyUid: string): Promise<{ instances: number; bytes: number }>;
}

const erasureSchema = z.strictObject({
  patientId: z.string().trim().min(1).max(64),
  /** Typed a second time: an erasure cannot be undone. */
  confirmPatientId: z.string().trim().min(1).max(64),
  /** The request's reference in the hospital's records (the verification is theirs to keep). */
  requestReference: z.string().trim().min(1).max(200),
});

export interface ErasureResult {
  readonly id: string;
  readonly studiesDeleted: number;
  readonly instancesDeleted: number;
  readonly casesWithdrawn: readonly string[];
  readonly pseudonymDeleted: boolean;
}

/**
 * Executes a verified erasure request (the caller checked the requester is the hospital's admin).
 * Idempotent: a second run finds nothing left and records that.
 */
export async function erasePatient(db: Database, keys: LakeKeys, archive: ErasableArchive, tenantId: string, raw: unknown, by: string): Promise<ErasureResult> {
  const r = parseWith(erasureSchema, raw, 'erasure');
  if (r.patientId !== r.confirmPatientId) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'confirmPatientId does not match patientId', { details: { field: 'erasure.confirmPatientId' } });
  const pseudonym = await findPseudonym(db, keys, tenantId, r.patientId);
  // Cases first: from here on nothing of the patient is served, even if the rest fails and is retried.
  const casesWithdrawn = pseudonym === undefined ? [] : await withdrawPseudonym(db, pseudonym.id, 'erasure');
  const studies = await db.query<{ study_uid: string }>('SELECT study_uid FROM dicom_studies WHERE tenant_id = $1 AND patient_id = $2', [tenantId, r.patientId]);
  let instancesDeleted = 0;
  for (const s of studies) instancesDeleted += (await archive.deleteStudy(tenantId, s.study_uid)).instances;
  const id = `E-${randomBytes(8).toString('hex')}`;
  const pseudonymDeleted = await db.transaction(async (tx) => {
    const deleted = pseudonym === undefined ? false : await deletePseudonym(tx, tenantId, pseudonym.id);
    await tx.query(
      `INSERT INTO lake_erasures (id, tenant_id, patient_hash, request_reference, studies_deleted, cases_withdrawn, requested_by) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [id, tenantId, patientHash(keys, tenantId, r.patientId), r.requestReference, studies.length, casesWithdrawn.length, by],
    );
    return deleted;
  });
  return { id, studiesDeleted: studies.length, instancesDeleted, casesWithdrawn, pseudonymDeleted };
}

/** Why acquisitions did or did not reach the lake: counts by reason and the usable fraction. */
export async function intakeSummary(q: Queryable, tenantId: string): Promise<{ considered: number; copied: number; usableFraction: number | null; byReason: Record<string, number> }> {
  const rows = await q.query<{ reason: string; n: number }>(
    `SELECT CASE WHEN outcome = 'copied' THEN 'copied' ELSE split_part(reason, ':', 1) END AS reason, count(*)::int AS n
     FROM lake_intake WHERE tenant_id = $1 GROUP BY 1 ORDER BY 1`,
    [tenantId],
  );
  const byReason = Object.fromEntries(rows.map((r) => [r.reason, Number(r.n)]));
  const considered = rows.reduce((s, r) => s + Number(r.n), 0);
  const copied = byReason.copied ?? 0;
  return { considered, copied, usableFraction: considered === 0 ? null : copied / considered, byReason };
}

export async function listIntake(q: Queryable, tenantId: string, limit: number): Promise<Array<{ acquisitionUid: string; outcome: string; reason: string; caseId: string | null; qualityScore: number | null; decidedAt: string }>> {
  const rows = await q.query<{ acquisition_uid: string; outcome: string; reason: string; case_id: string | null; quality: { score?: number } | null; decided_at: Date }>(
    'SELECT acquisition_uid, outcome, reason, case_id, quality, decided_at FROM lake_intake WHERE tenant_id = $1 ORDER BY decided_at DESC LIMIT $2',
    [tenantId, Math.max(1, Math.min(1000, Math.trunc(limit)))],
  );
  return rows.map((r) => ({
    acquisitionUid: r.acquisition_uid,
    outcome: r.outcome,
    reason: r.reason,
    caseId: r.case_id,
    qualityScore: typeof r.quality?.score === 'number' ? r.quality.score : null,
    decidedAt: r.decided_at.toISOString(),
  }));
}

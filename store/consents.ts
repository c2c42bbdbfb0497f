// Research consent: the patient's decisions, append-only (triggers refuse UPDATE, DELETE and
// TRUNCATE). A change of mind is a new row; the current decision is the latest row. Each row
// keeps who recorded it, when, and at which exam: what a FHIR Consent resource needs later.
import { randomUUID } from 'node:crypto';
import { Eco3dError } from '../protocols/errors.ts';
import type { Queryable } from './database.ts';
import { insertOutboxEvent } from './outbox.ts';
import { badRequest, rethrowConstraint } from './util.ts';

export type ConsentDecision = 'yes' | 'no' | 'revoked';
export const CONSENT_DECISIONS: readonly ConsentDecision[] = ['yes', 'no', 'revoked'];

export interface ConsentRecord {
  readonly id: string;
  readonly tenantId: string;
  readonly patientId: string;
  /** The exam during which it was recorded; null when recorded outside one. */
  readonly examId: string | null;
  /** Only research consent for now. */
  readonly purpose: 'research';
  readonly decision: ConsentDecision;
  /** Username of who recorded it. */
  readonly recordedBy: string;
  readonly recordedByAccountId: string;
  /** The database clock at insert. */
  readonly recordedAtMs: number;
}

interface ConsentRow {
  id: string;
  tenant_id: string;
  patient_id: string;
  exam_id: string | null;
  purpose: 'research';
  decision: ConsentDecision;
  recorded_by: string;
  recorded_by_account: string;
  recorded_at: Date;
}

const toRecord = (r: ConsentRow): ConsentRecord => ({
  id: r.id,
  tenantId: r.tenant_id,
  patientId: r.patient_id,
  examId: r.exam_id,
  purpose: r.purpose,
  decision: r.decision,
  recordedBy: r.recorded_by,
  recordedByAccountId: r.recorded_by_account,
  recordedAtMs: r.recorded_at.getTime(),
});

/**
 * Appends a decision, and its ConsentRecorded event: call it in a transaction. With `examId`, the exam must be the tenant's and the patient's
 * (ECO3D_ERR_NOT_FOUND / ECO3D_ERR_BAD_REQUEST otherwise).
 */
export async function recordConsent(
  q: Queryable,
  c: { tenantId: string; patientId: string; examId?: string | null; decision: ConsentDecision; recordedBy: string; recordedByAccountId: string },
): Promise<ConsentRecord> {
  if (!CONSENT_DECISIONS.includes(c.decision)) throw badRequest(`decision is one of ${CONSENT_DECISIONS.join(', ')}`);
  const patientId = typeof c.patientId === 'string' ? c.patientId.trim() : '';
  if (patientId.length < 1 || patientId.length > 64) throw badRequest('patientId has 1 to 64 characters');
  if (c.recordedBy === '' || c.recordedByAccountId === '') throw badRequest('a consent needs who recorded it');
  const examId = c.examId ?? null;
  if (examId !== null) {
    const exam = (await q.query<{ patient_id: string }>('SELECT patient_id FROM exams WHERE tenant_id = $1 AND id = $2', [c.tenantId, examId]))[0];
    if (exam === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no exam ${examId}`);
    if (exam.patient_id !== patientId) throw badRequest(`exam ${examId} is another patient's`);
  }
  try {
    const rows = await q.query<ConsentRow>(
      `INSERT INTO consents (id, tenant_id, patient_id, exam_id, decision, recorded_by, recorded_by_account)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [randomUUID(), c.tenantId, patientId, examId, c.decision, c.recordedBy, c.recordedByAccountId],
    );
    const record = toRecord(rows[0]!);
    // The data lake acts on it (a no or a revocation withdraws the patient's copies).
    await insertOutboxEvent(q, {
      type: 'ConsentRecorded',
      version: 1,
      idempotencyKey: `ConsentRecorded/${record.tenantId}/${record.id}`,
      tenantId: record.tenantId,
      occurredAt: new Date(record.recordedAtMs).toISOString(),
      consentId: record.id,
      decision: record.decision,
    });
    return record;
  } catch (err) {
    return rethrowConstraint(err, { missingParent: `tenant ${c.tenantId} does not exist` });
  }
}

/** The patient's decisions, newest first. */
export async function listConsents(q: Queryable, tenantId: string, patientId: string, limit = 200): Promise<ConsentRecord[]> {
  const rows = await q.query<ConsentRow>('SELECT * FROM consents WHERE tenant_id = $1 AND patient_id = $2 ORDER BY seq DESC LIMIT $3', [
    tenantId,
    patientId.trim(),
    Math.max(1, Math.min(1000, Math.trunc(limit))),
  ]);
  return rows.map(toRecord);
}

/** The patient's latest decision, or undefined when none was ever recorded. */
export async function currentConsent(q: Queryable, tenantId: string, patientId: string): Promise<ConsentRecord | undefined> {
  return (await listConsents(q, tenantId, patientId, 1))[0];
}

// The pseudonym key: a patient of a hospital ↔ the pseudonym their lake cases carry. It lives on
// the hospital's side of the lake: the original patient id only encrypted (keys.ts), found by a
// keyed hash. Only the hospital's administrators may turn a pseudonym back into a patient, and
// each use is audited by the caller (routes.ts). Erasure deletes the entry.
import { randomBytes } from 'node:crypto';
import { patientDateShiftDays } from '../protocols/index.ts';
import type { Queryable } from '../store/index.ts';
import { decryptPatientId, encryptPatientId, patientHash, type LakeKeys } from './keys.ts';

export interface Pseudonym {
  readonly id: string;
  readonly tenantId: string;
  /** Every date of the patient's copies moves by this many days (intervals between studies hold). */
  readonly dateShiftDays: number;
}

/** The patient's pseudonym, made on first use. Concurrent first uses agree (unique key, re-read). */
export async function pseudonymFor(tx: Queryable, keys: LakeKeys, tenantId: string, patientId: string): Promise<Pseudonym> {
  const hash = patientHash(keys, tenantId, patientId);
  const found = await findByHash(tx, tenantId, hash);
  if (found !== undefined) return found;
  const id = `P-${randomBytes(10).toString('hex')}`;
  const shift = patientDateShiftDays(keys.deidKey, `${tenantId}\u0000${patientId.trim()}`);
  await tx.query(
    `INSERT INTO lake_pseudonyms (id, tenant_id, patient_hash, patient_id_enc, date_shift_days) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (tenant_id, patient_hash) DO NOTHING`,
    [id, tenantId, hash, encryptPatientId(keys, tenantId, patientId.trim()), shift],
  );
  const now = await findByHash(tx, tenantId, hash);
  if (now === undefined) throw new Error('pseudonym neither inserted nor found');
  return now;
}

async function findByHash(q: Queryable, tenantId: string, hash: string): Promise<Pseudonym | undefined> {
  const r = (await q.query<{ id: string; date_shift_days: number }>('SELECT id, date_shift_days FROM lake_pseudonyms WHERE tenant_id = $1 AND patient_hash = $2', [tenantId, hash]))[0];
  return r === undefined ? undefined : { id: r.id, tenantId, dateShiftDays: r.date_shift_days };
}

/** The existing pseudonym of a patient, or undefined (never creates one). */
export function findPseudonym(q: Queryable, keys: LakeKeys, tenantId: string, patientId: string): Promise<Pseudonym | undefined> {
  return findByHash(q, tenantId, patientHash(keys, tenantId, patientId));
}

/** Re-identification: the patient id behind a pseudonym of this tenant, or undefined. */
export async function reidentify(q: Queryable, keys: LakeKeys, tenantId: string, pseudonymId: string): Promise<string | undefined> {
  const r = (await q.query<{ patient_id_enc: Uint8Array }>('SELECT patient_id_enc FROM lake_pseudonyms WHERE tenant_id = $1 AND id = $2', [tenantId, pseudonymId]))[0];
  return r === undefined ? undefined : decryptPatientId(keys, tenantId, r.patient_id_enc);
}

/** Erasure: the key entry goes; the cases keep a pseudonym nobody can resolve any more. */
export async function deletePseudonym(tx: Queryable, tenantId: string, pseudonymId: string): Promise<boolean> {
  return (await tx.query('DELETE FROM lake_pseudonyms WHERE tenant_id = $1 AND id = $2 RETURNING id', [tenantId, pseudonymId])).length > 0;
}

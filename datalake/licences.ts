// Data partners, licences and access.
//
// Three licences, each priced when granted and recorded as a charge in the partner's billing
// ledger (key `lake-licence/<id>`, so a re-sent grant is never billed twice):
// - sample: the version's first N cases (default 100), free, for academic partners only, 1 year;
// - annual: the whole version for a year, at the agreed price;
// - per-case: the whole version, priced per case (cases × unit price), 1 year.
// A lake token (scope lake:read) is bound to one licence of its tenant (api_tokens.licence_id);
// what it can reach is that licence's version, minus withdrawn cases, within the licence's dates.
// Every access is logged (lake_access_log) and checked by the anomaly rule (anomaly.ts).
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { Eco3dError, parseWith } from '../protocols/index.ts';
import type { Queryable } from '../store/index.ts';
import { detectAccessAnomaly, type AccessAnomaly } from './anomaly.ts';

export const LAKE_READ_SCOPE = 'lake:read';
export const LICENCE_KINDS = ['sample', 'annual', 'per-case'] as const;
export type LicenceKind = (typeof LICENCE_KINDS)[number];
export const DEFAULT_SAMPLE_CASES = 100;
const YEAR_MS = 365 * 86_400_000;

/** Records a charge in the billing ledger in the caller's transaction (billing/recordCharge fits). */
export type RecordCharge = (
  tx: Queryable,
  c: { idempotencyKey: string; tenantId: string; item: string; description: string; amountCents: number; occurredAtMs: number; recordedBy: string },
) => Promise<unknown>;

export interface Partner {
  readonly tenantId: string;
  readonly academic: boolean;
}

const partnerSchema = z.strictObject({ name: z.string().trim().min(1).max(100).optional(), academic: z.boolean() });

/** Registers (or updates) a data partner; its tenant is created when missing. */
export async function putPartner(q: Queryable, tenantId: string, raw: unknown, by: string): Promise<Partner> {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(tenantId)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `bad tenant id ${JSON.stringify(tenantId)}`);
  const p = parseWith(partnerSchema, raw, 'partner');
  await q.query('INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [tenantId, p.name ?? tenantId]);
  await q.query(
    `INSERT INTO lake_partners (tenant_id, academic, updated_by) VALUES ($1, $2, $3)
     ON CONFLICT (tenant_id) DO UPDATE SET academic = EXCLUDED.academic, updated_by = EXCLUDED.updated_by, updated_at = now()`,
    [tenantId, p.academic, by],
  );
  return { tenantId, academic: p.academic };
}

export interface Licence {
  readonly id: string;
  readonly partnerTenantId: string;
  readonly versionId: string;
  readonly kind: LicenceKind;
  readonly maxCases: number | null;
  readonly amountCents: number;
  readonly validFromMs: number;
  readonly validToMs: number;
  readonly ledgerKey: string;
  readonly createdBy: string;
  readonly revoked: boolean;
}

interface LicenceRow {
  id: string;
  partner_tenant_id: string;
  version_id: string;
  kind: LicenceKind;
  max_cases: number | null;
  amount_cents: number;
  valid_from: Date;
  valid_to: Date;
  ledger_key: string;
  created_by: string;
  revoked_at: Date | null;
}

const toLicence = (r: LicenceRow): Licence => ({
  id: r.id,
  partnerTenantId: r.partner_tenant_id,
  versionId: r.version_id,
  kind: r.kind,
  maxCases: r.max_cases,
  amountCents: Number(r.amount_cents),
  validFromMs: r.valid_from.getTime(),
  validToMs: r.valid_to.getTime(),
  ledgerKey: r.ledger_key,
  createdBy: r.created_by,
  revoked: r.revoked_at !== null,
});

const cents = z.number().int().min(0).max(100_000_000_000);
const licenceSchema = z.strictObject({
  /** Optional client-chosen id: a re-sent grant with the same id is answered with the licence, not a second one. */
  id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'letters, digits, . _ -')
    .optional(),
  partnerTenantId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a tenant id'),
  versionId: z.string().min(1).max(64),
  kind: z.enum(LICENCE_KINDS),
  /** annual: the price of the year. */
  amountCents: cents.optional(),
  /** per-case: the price of one case. */
  unitAmountCents: cents.optional(),
  /** sample: how many cases (default 100). */
  maxCases: z.number().int().min(1).max(100_000).optional(),
  validFrom: z.iso.datetime({ offset: true }).optional(),
});

/** Grants a licence and records its charge, in the caller's transaction. */
export async function grantLicence(tx: Queryable, raw: unknown, o: { by: string; nowMs: number; recordCharge: RecordCharge }): Promise<{ licence: Licence; created: boolean }> {
  const l = parseWith(licenceSchema, raw, 'licence');
  const partner = (await tx.query<{ academic: boolean }>('SELECT academic FROM lake_partners WHERE tenant_id = $1', [l.partnerTenantId]))[0];
  if (partner === undefined) throw new Eco3dError('ECO3D_ERR_UNKNOWN_TENANT', `${l.partnerTenantId} is not a registered data partner`);
  const version = (await tx.query<{ cases: number; version: number; name: string }>(
    'SELECT v.cases, v.version, d.name FROM lake_dataset_versions v JOIN lake_datasets d ON d.id = v.dataset_id WHERE v.id = $1',
    [l.versionId],
  ))[0];
  if (version === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no dataset version ${l.versionId}`);
  let amountCents: number;
  let maxCases: number | null = null;
  let pricing: string;
  if (l.kind === 'sample') {
    if (!partner.academic) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'the free sample licence is for academic partners');
    if (l.amountCents !== undefined || l.unitAmountCents !== undefined) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'a sample licence is free: no amountCents or unitAmountCents');
    maxCases = l.maxCases ?? DEFAULT_SAMPLE_CASES;
    amountCents = 0;
    pricing = `free academic sample of ${Math.min(maxCases, version.cases)} cases`;
  } else if (l.kind === 'annual') {
    if (l.amountCents === undefined || l.unitAmountCents !== undefined || l.maxCases !== undefined) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'an annual licence takes amountCents (the price of the year) only');
    amountCents = l.amountCents;
    pricing = 'annual licence';
  } else {
    if (l.unitAmountCents === undefined || l.amountCents !== undefined || l.maxCases !== undefined) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'a per-case licence takes unitAmountCents (the price of one case) only');
    amountCents = l.unitAmountCents * version.cases;
    if (!Number.isSafeInteger(amountCents) || amountCents > 100_000_000_000) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the licence amount is too large');
    pricing = `${version.cases} cases × ${l.unitAmountCents} cents`;
  }
  const id = l.id ?? `L-${randomBytes(8).toString('hex')}`;
  const existing = await getLicence(tx, id);
  if (existing !== undefined) {
    const same = existing.partnerTenantId === l.partnerTenantId && existing.versionId === l.versionId && existing.kind === l.kind && existing.amountCents === amountCents && existing.maxCases === maxCases;
    if (!same) throw new Eco3dError('ECO3D_ERR_CONFLICT', `licence ${id} exists with other terms`);
    return { licence: existing, created: false };
  }
  const validFromMs = l.validFrom === undefined ? o.nowMs : Date.parse(l.validFrom);
  const ledgerKey = `lake-licence/${id}`;
  await tx.query(
    `INSERT INTO lake_licences (id, partner_tenant_id, version_id, kind, max_cases, amount_cents, valid_from, valid_to, ledger_key, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8::timestamptz, $9, $10)`,
    [id, l.partnerTenantId, l.versionId, l.kind, maxCases, amountCents, new Date(validFromMs).toISOString(), new Date(validFromMs + YEAR_MS).toISOString(), ledgerKey, o.by],
  );
  await o.recordCharge(tx, {
    idempotencyKey: ledgerKey,
    tenantId: l.partnerTenantId,
    item: `lake-licence:${l.kind}`,
    description: `Dataset ${version.name} v${version.version}: ${pricing} (licence ${id})`.slice(0, 500),
    amountCents,
    occurredAtMs: o.nowMs,
    recordedBy: o.by,
  });
  return { licence: (await getLicence(tx, id))!, created: true };
}

export async function getLicence(q: Queryable, id: string): Promise<Licence | undefined> {
  const r = (await q.query<LicenceRow>('SELECT * FROM lake_licences WHERE id = $1', [id]))[0];
  return r === undefined ? undefined : toLicence(r);
}

export async function listLicences(q: Queryable, partnerTenantId: string | undefined): Promise<Licence[]> {
  const rows =
    partnerTenantId === undefined
      ? await q.query<LicenceRow>('SELECT * FROM lake_licences ORDER BY created_at, id')
      : await q.query<LicenceRow>('SELECT * FROM lake_licences WHERE partner_tenant_id = $1 ORDER BY created_at, id', [partnerTenantId]);
  return rows.map(toLicence);
}

export async function revokeLicence(q: Queryable, id: string, by: string): Promise<Licence | undefined> {
  await q.query('UPDATE lake_licences SET revoked_at = now(), revoked_by = $2 WHERE id = $1 AND revoked_at IS NULL', [id, by]);
  return getLicence(q, id);
}

/** What a licence reaches now: its version's cases (first max_cases for a sample), withdrawn ones excluded. */
export interface LicenceScope {
  readonly licence: Licence;
  /** Lake Study Instance UIDs, by case id. */
  readonly studies: ReadonlyMap<string, string>;
  /** Cases of the licence withdrawn since its version was released (not served). */
  readonly withdrawn: readonly string[];
  readonly versionSizeBytes: number;
}

/**
 * The scope of a lake token's licence, or ECO3D_ERR_FORBIDDEN saying why not (none bound, not
 * this tenant's, revoked, not yet valid, expired).
 */
export async function licenceScope(q: Queryable, licenceId: string | undefined, tenantId: string, nowMs: number): Promise<LicenceScope> {
  if (licenceId === undefined) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'this token is bound to no licence: lake data needs a token minted for a licence');
  const licence = await getLicence(q, licenceId);
  if (licence === undefined || licence.partnerTenantId !== tenantId) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${licenceId} is not this tenant's`);
  if (licence.revoked) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${licenceId} is revoked`);
  if (nowMs < licence.validFromMs) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${licenceId} is valid from ${new Date(licence.validFromMs).toISOString()}`);
  if (nowMs >= licence.validToMs) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${licenceId} expired at ${new Date(licence.validToMs).toISOString()}`);
  const rows = await q.query<{ id: string; study_uid: string; withdrawn: boolean }>(
    `SELECT c.id, c.study_uid, c.withdrawn_at IS NOT NULL AS withdrawn FROM lake_version_cases v JOIN lake_cases c ON c.id = v.case_id
     WHERE v.version_id = $1 AND ($2::int IS NULL OR v.ordinal <= $2::int) ORDER BY v.ordinal`,
    [licence.versionId, licence.maxCases],
  );
  const size = (await q.query<{ size_bytes: number }>('SELECT size_bytes FROM lake_dataset_versions WHERE id = $1', [licence.versionId]))[0];
  return {
    licence,
    studies: new Map(rows.filter((r) => !r.withdrawn).map((r) => [r.id, r.study_uid])),
    withdrawn: rows.filter((r) => r.withdrawn).map((r) => r.id),
    versionSizeBytes: Number(size?.size_bytes ?? 0),
  };
}

export interface AccessRecord {
  readonly licenceId: string | null;
  readonly partnerTenantId: string;
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly allowed: boolean;
  /** The cases reached (distinct cases a day feed the anomaly rule). */
  readonly caseIds?: readonly string[];
  readonly instances?: number;
  readonly sizeBytes?: number;
  readonly detail?: Record<string, unknown>;
}

/**
 * Logs one access and runs the anomaly rule over the licence's days (UTC) with it included.
 * Returns the rule's verdict (flagged accesses are also logged as warnings by the caller).
 */
export async function logAccess(q: Queryable, a: AccessRecord, scope: Pick<LicenceScope, 'versionSizeBytes' | 'licence'> | undefined, nowMs: number): Promise<AccessAnomaly | undefined> {
  let anomaly: AccessAnomaly | undefined;
  if (a.allowed && a.licenceId !== null && scope !== undefined && scope.versionSizeBytes > 0) {
    const today = new Date(nowMs).toISOString().slice(0, 10);
    const days = await q.query<{ day: string; instances: number; bytes: number; cases: number; requests: number }>(
      `WITH a AS (SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, instances, size_bytes, case_ids
                  FROM lake_access_log WHERE licence_id = $1 AND allowed AND at >= $2::timestamptz)
       SELECT day, sum(instances)::int8 AS instances, sum(size_bytes)::int8 AS bytes, count(*)::int8 AS requests,
              (SELECT count(DISTINCT c) FROM a a2, unnest(a2.case_ids) c WHERE a2.day = a.day)::int8 AS cases
       FROM a GROUP BY day`,
      [a.licenceId, new Date(nowMs - 60 * 86_400_000).toISOString()],
    );
    // Today's distinct cases with this access's.
    const todayCases = await q.query<{ n: number }>(
      `SELECT count(DISTINCT c)::int8 AS n FROM (
         SELECT unnest(case_ids) AS c FROM lake_access_log WHERE licence_id = $1 AND allowed AND at >= $2::timestamptz
         UNION SELECT unnest($3::text[])) x`,
      [a.licenceId, `${today}T00:00:00Z`, a.caseIds ?? []],
    );
    const num = (v: unknown): number => Number(v ?? 0);
    const history = days.filter((d) => d.day !== today).map((d) => ({ day: d.day, instances: num(d.instances), bytes: num(d.bytes), distinctCases: num(d.cases), requests: num(d.requests) }));
    const t = days.find((d) => d.day === today);
    anomaly = detectAccessAnomaly({
      history,
      today: {
        day: today,
        instances: num(t?.instances) + (a.instances ?? 0),
        bytes: num(t?.bytes) + (a.sizeBytes ?? 0),
        distinctCases: num(todayCases[0]?.n),
        requests: num(t?.requests) + 1,
      },
      versionSizeBytes: scope.versionSizeBytes,
      caseCapPerDay: scope.licence.maxCases,
    });
  }
  await q.query(
    `INSERT INTO lake_access_log (licence_id, partner_tenant_id, actor, action, target, allowed, cases, case_ids, instances, size_bytes, flagged, flag_reasons, detail, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text[], $9, $10, $11, $12::jsonb, $13::jsonb, $14::timestamptz)`,
    [
      a.licenceId,
      a.partnerTenantId,
      a.actor,
      a.action,
      a.target.slice(0, 1000),
      a.allowed,
      a.caseIds?.length ?? 0,
      a.caseIds ?? [],
      a.instances ?? 0,
      a.sizeBytes ?? 0,
      anomaly?.flagged ?? false,
      anomaly?.flagged === true ? JSON.stringify(anomaly.reasons) : null,
      a.detail === undefined ? null : JSON.stringify(a.detail),
      new Date(nowMs).toISOString(),
    ],
  );
  return anomaly;
}

export interface AccessLogEntry extends Required<Omit<AccessRecord, 'detail' | 'caseIds'>> {
  readonly cases: number;
  readonly id: number;
  readonly at: string;
  readonly flagged: boolean;
  readonly flagReasons: readonly string[];
  readonly detail: Record<string, unknown> | null;
}

export async function listAccess(q: Queryable, w: { licenceId?: string; partnerTenantId?: string; flaggedOnly?: boolean; limit: number }): Promise<AccessLogEntry[]> {
  const rows = await q.query<{
    id: number;
    licence_id: string | null;
    partner_tenant_id: string;
    actor: string;
    action: string;
    target: string;
    allowed: boolean;
    cases: number;
    instances: number;
    size_bytes: number;
    flagged: boolean;
    flag_reasons: string[] | null;
    detail: Record<string, unknown> | null;
    at: Date;
  }>(
    `SELECT * FROM lake_access_log WHERE ($1::text IS NULL OR licence_id = $1) AND ($2::text IS NULL OR partner_tenant_id = $2) AND (NOT $3 OR flagged)
     ORDER BY id DESC LIMIT $4`,
    [w.licenceId ?? null, w.partnerTenantId ?? null, w.flaggedOnly === true, Math.max(1, Math.min(10_000, Math.trunc(w.limit)))],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    licenceId: r.licence_id,
    partnerTenantId: r.partner_tenant_id,
    actor: r.actor,
    action: r.action,
    target: r.target,
    allowed: r.allowed,
    cases: r.cases,
    instances: r.instances,
    sizeBytes: Number(r.size_bytes),
    flagged: r.flagged,
    flagReasons: r.flag_reasons ?? [],
    detail: r.detail,
    at: r.at.toISOString(),
  }));
}

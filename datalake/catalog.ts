// The lake's catalog: cases and their labels, cohort queries over them, datasets and their
// immutable versions (a snapshot of a cohort with a manifest and checksums, released only when
// the k-anonymity check passes), and withdrawals.
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { DEID_PROFILE_SOURCE, Eco3dError, parseWith } from '../protocols/index.ts';
import type { Queryable } from '../store/index.ts';
import { checkKAnonymity, kAnonymityError, type KAnonymityReport } from './kanon.ts';
import { LAKE_TENANT } from './intake.ts';

export const DEFAULT_K = 5;

export interface LakeCase {
  readonly id: string;
  readonly studyInstanceUid: string;
  readonly bodyPart: string | null;
  readonly probe: string | null;
  readonly deviceModel: string | null;
  readonly studyYear: number | null;
  readonly ageBand: string | null;
  readonly sex: string | null;
  readonly siteRegion: string | null;
  readonly qualityScore: number;
  readonly instances: number;
  readonly sizeBytes: number;
  readonly labels: ReadonlyArray<{ readonly kind: string; readonly code: string; readonly display: string | null }>;
  readonly withdrawn: boolean;
}

interface CaseRow {
  id: string;
  study_uid: string;
  body_part: string | null;
  probe: string | null;
  device_model: string | null;
  study_year: number | null;
  age_band: string | null;
  sex: string | null;
  site_region: string | null;
  quality_score: number;
  instances: number;
  size_bytes: number;
  withdrawn_at: Date | null;
  labels: Array<{ kind: string; code: string; display: string | null }> | null;
}

const CASE_SELECT = `SELECT c.id, c.study_uid, c.body_part, c.probe, c.device_model, c.study_year, c.age_band, c.sex, c.site_region,
  c.quality_score, c.instances, c.size_bytes, c.withdrawn_at,
  (SELECT json_agg(json_build_object('kind', l.kind, 'code', l.code, 'display', l.display) ORDER BY l.id) FROM lake_labels l WHERE l.case_id = c.id) AS labels
  FROM lake_cases c`;

const toCase = (r: CaseRow): LakeCase => ({
  id: r.id,
  studyInstanceUid: r.study_uid,
  bodyPart: r.body_part,
  probe: r.probe,
  deviceModel: r.device_model,
  studyYear: r.study_year,
  ageBand: r.age_band,
  sex: r.sex,
  siteRegion: r.site_region,
  qualityScore: Number(r.quality_score),
  instances: r.instances,
  sizeBytes: Number(r.size_bytes),
  labels: r.labels ?? [],
  withdrawn: r.withdrawn_at !== null,
});

// ---------------------------------------------------------------------------------------------
// Cohorts

const text = z.string().trim().min(1).max(64);
export const cohortSchema = z.strictObject({
  bodyParts: z.array(text).min(1).max(50).optional(),
  probes: z.array(text).min(1).max(50).optional(),
  deviceModels: z.array(text).min(1).max(50).optional(),
  studyYearFrom: z.number().int().min(1900).max(2200).optional(),
  studyYearTo: z.number().int().min(1900).max(2200).optional(),
  ageBands: z
    .array(z.string().regex(/^\d{3}Y$/, 'an age band such as 040Y'))
    .min(1)
    .max(19)
    .optional(),
  sexes: z.array(z.enum(['F', 'M', 'O'])).min(1).optional(),
  siteRegions: z
    .array(z.string().regex(/^[A-Z]{2}(-[A-Z0-9]{1,3})?$/, 'an ISO 3166-2 code'))
    .min(1)
    .max(100)
    .optional(),
  minQuality: z.number().min(0).max(1).optional(),
  /** Every label listed must be on the case. */
  labels: z
    .array(z.strictObject({ kind: z.enum(['pathology', 'outcome', 'finding']), code: text }))
    .min(1)
    .max(20)
    .optional(),
});
export type Cohort = z.infer<typeof cohortSchema>;

export const parseCohort = (raw: unknown): Cohort => parseWith(cohortSchema, raw ?? {}, 'cohort');

/** The SQL WHERE of a cohort over lake_cases c (withdrawn cases never match). */
function cohortWhere(c: Cohort, params: unknown[]): string {
  const where = ['c.withdrawn_at IS NULL'];
  const p = (v: unknown): string => {
    params.push(v);
    return `$${params.length}`;
  };
  if (c.bodyParts !== undefined) where.push(`c.body_part = ANY (${p(c.bodyParts)}::text[])`);
  if (c.probes !== undefined) where.push(`c.probe = ANY (${p(c.probes)}::text[])`);
  if (c.deviceModels !== undefined) where.push(`c.device_model = ANY (${p(c.deviceModels)}::text[])`);
  if (c.studyYearFrom !== undefined) where.push(`c.study_year >= ${p(c.studyYearFrom)}`);
  if (c.studyYearTo !== undefined) where.push(`c.study_year <= ${p(c.studyYearTo)}`);
  if (c.ageBands !== undefined) where.push(`c.age_band = ANY (${p(c.ageBands)}::text[])`);
  if (c.sexes !== undefined) where.push(`c.sex = ANY (${p(c.sexes)}::text[])`);
  if (c.siteRegions !== undefined) where.push(`c.site_region = ANY (${p(c.siteRegions)}::text[])`);
  if (c.minQuality !== undefined) where.push(`c.quality_score >= ${p(c.minQuality)}`);
  for (const l of c.labels ?? []) where.push(`EXISTS (SELECT 1 FROM lake_labels l WHERE l.case_id = c.id AND l.kind = ${p(l.kind)} AND l.code = ${p(l.code)})`);
  return where.join(' AND ');
}

/** The cohort's cases, oldest first, and how many there are in all. `limit: 'all'` for a release (never cut short). */
export async function queryCohort(q: Queryable, cohort: Cohort, limit: number | 'all' = 100, offset = 0): Promise<{ total: number; cases: LakeCase[] }> {
  const params: unknown[] = [];
  const where = cohortWhere(cohort, params);
  const total = Number((await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM lake_cases c WHERE ${where}`, params))[0]!.n);
  const page = limit === 'all' ? '' : ` LIMIT ${Math.max(0, Math.min(10_000, Math.trunc(limit)))} OFFSET ${Math.max(0, Math.trunc(offset))}`;
  const rows = await q.query<CaseRow>(`${CASE_SELECT} WHERE ${where} ORDER BY c.created_at, c.id${page}`, params);
  return { total, cases: rows.map(toCase) };
}

export async function getCase(q: Queryable, caseId: string): Promise<LakeCase | undefined> {
  const r = (await q.query<CaseRow>(`${CASE_SELECT} WHERE c.id = $1`, [caseId]))[0];
  return r === undefined ? undefined : toCase(r);
}

export const labelSchema = z.strictObject({ kind: z.enum(['pathology', 'outcome', 'finding']), code: text, display: z.string().trim().min(1).max(200).optional() });

/** Adds a label (append-only). The case must exist and not be withdrawn. */
export async function addLabel(q: Queryable, caseId: string, raw: unknown, by: string): Promise<{ id: number; kind: string; code: string }> {
  const l = parseWith(labelSchema, raw, 'label');
  const c = (await q.query<{ withdrawn_at: Date | null }>('SELECT withdrawn_at FROM lake_cases WHERE id = $1', [caseId]))[0];
  if (c === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no case ${caseId}`);
  if (c.withdrawn_at !== null) throw new Eco3dError('ECO3D_ERR_CONFLICT', `case ${caseId} is withdrawn`);
  const r = await q.query<{ id: number }>('INSERT INTO lake_labels (case_id, kind, code, display, labelled_by) VALUES ($1, $2, $3, $4, $5) RETURNING id', [caseId, l.kind, l.code, l.display ?? null, by]);
  return { id: Number(r[0]!.id), kind: l.kind, code: l.code };
}

/** The tenant a case came from (who may label it, besides the platform). */
export async function caseSourceTenant(q: Queryable, caseId: string): Promise<string | undefined> {
  return (await q.query<{ source_tenant_id: string }>('SELECT source_tenant_id FROM lake_cases WHERE id = $1', [caseId]))[0]?.source_tenant_id;
}

// ---------------------------------------------------------------------------------------------
// Datasets and versions

export interface Dataset {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly cohort: Cohort;
  readonly createdBy: string;
  readonly createdAtMs: number;
  readonly versions: ReadonlyArray<{ readonly id: string; readonly version: number; readonly cases: number; readonly sizeBytes: number; readonly releasedAtMs: number }>;
}

const datasetSchema = z.strictObject({ name: z.string().trim().min(1).max(100), description: z.string().trim().max(2000).default(''), cohort: cohortSchema.default({}) });

export async function createDataset(q: Queryable, raw: unknown, by: string): Promise<Dataset> {
  const d = parseWith(datasetSchema, raw, 'dataset');
  const id = `D-${randomBytes(8).toString('hex')}`;
  const inserted = await q.query('INSERT INTO lake_datasets (id, name, description, cohort, created_by) VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (name) DO NOTHING RETURNING id', [
    id,
    d.name,
    d.description,
    JSON.stringify(d.cohort),
    by,
  ]);
  if (inserted.length === 0) throw new Eco3dError('ECO3D_ERR_CONFLICT', `a dataset named ${JSON.stringify(d.name)} exists`);
  return (await getDataset(q, id))!;
}

export async function getDataset(q: Queryable, id: string): Promise<Dataset | undefined> {
  const r = (await q.query<{ id: string; name: string; description: string; cohort: Cohort; created_by: string; created_at: Date }>('SELECT * FROM lake_datasets WHERE id = $1', [id]))[0];
  if (r === undefined) return undefined;
  const versions = await q.query<{ id: string; version: number; cases: number; size_bytes: number; released_at: Date }>(
    'SELECT id, version, cases, size_bytes, released_at FROM lake_dataset_versions WHERE dataset_id = $1 ORDER BY version',
    [id],
  );
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    cohort: r.cohort,
    createdBy: r.created_by,
    createdAtMs: r.created_at.getTime(),
    versions: versions.map((v) => ({ id: v.id, version: v.version, cases: v.cases, sizeBytes: Number(v.size_bytes), releasedAtMs: v.released_at.getTime() })),
  };
}

export async function listDatasets(q: Queryable): Promise<Dataset[]> {
  const ids = await q.query<{ id: string }>('SELECT id FROM lake_datasets ORDER BY created_at, id');
  const out: Dataset[] = [];
  for (const { id } of ids) out.push((await getDataset(q, id))!);
  return out;
}

export interface ManifestInstance {
  readonly sopInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopClassUid: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  /** Where the zip export puts it. */
  readonly path: string;
}

export interface ManifestCase extends Omit<LakeCase, 'withdrawn' | 'instances' | 'sizeBytes'> {
  readonly instances: readonly ManifestInstance[];
}

export interface Manifest {
  readonly format: 'eco3d-lake-manifest/1';
  readonly dataset: { readonly id: string; readonly name: string; readonly description: string };
  readonly version: number;
  readonly versionId: string;
  readonly releasedAt: string;
  readonly cohort: Cohort;
  readonly k: number;
  readonly quasiIdentifiers: readonly string[];
  readonly deidentification: { readonly profile: string; readonly source: string };
  readonly totals: { readonly cases: number; readonly instances: number; readonly sizeBytes: number };
  readonly cases: readonly ManifestCase[];
}

export interface DatasetVersion {
  readonly id: string;
  readonly datasetId: string;
  readonly version: number;
  readonly k: number;
  readonly cases: number;
  readonly sizeBytes: number;
  readonly manifestSha256: string;
  readonly releasedBy: string;
  readonly releasedAtMs: number;
  readonly manifest: Manifest;
}

/** Canonical JSON of a manifest (keys as built, no spaces): what manifest_sha256 is of. */
export const manifestJson = (m: Manifest): string => JSON.stringify(m);
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/**
 * Releases the next version of a dataset: its cohort now (withdrawn cases excluded), checked for
 * k-anonymity over the quasi-identifiers (refused with ECO3D_ERR_K_ANONYMITY and the report
 * otherwise), frozen with a manifest that lists every instance's checksum. Immutable once written.
 */
export async function releaseVersion(tx: Queryable, datasetId: string, opts: { k?: number; by: string; nowMs: number }): Promise<DatasetVersion> {
  const k = opts.k ?? DEFAULT_K;
  const ds = (await tx.query<{ id: string; name: string; description: string; cohort: Cohort }>('SELECT * FROM lake_datasets WHERE id = $1 FOR UPDATE', [datasetId]))[0];
  if (ds === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no dataset ${datasetId}`);
  const cohort = parseCohort(ds.cohort);
  // Every case of the cohort: a version silently cut at a page size would misstate its cohort.
  const { cases } = await queryCohort(tx, cohort, 'all');
  if (cases.length === 0) throw new Eco3dError('ECO3D_ERR_CONFLICT', `the cohort of dataset ${ds.name} has no cases: nothing to release`);
  const report: KAnonymityReport = checkKAnonymity(
    cases.map((c) => ({ ageBand: c.ageBand, sex: c.sex, siteRegion: c.siteRegion, studyYear: c.studyYear })),
    k,
  );
  if (!report.ok) throw kAnonymityError(report);
  const version = Number((await tx.query<{ n: number }>('SELECT coalesce(max(version), 0)::int + 1 AS n FROM lake_dataset_versions WHERE dataset_id = $1', [datasetId]))[0]!.n);
  const versionId = `V-${randomBytes(8).toString('hex')}`;
  const instances = await tx.query<{ study_uid: string; sop_instance_uid: string; series_uid: string; sop_class_uid: string; size_bytes: number; sha256: string }>(
    `SELECT study_uid, sop_instance_uid, series_uid, sop_class_uid, size_bytes, sha256 FROM dicom_instances
     WHERE tenant_id = $1 AND study_uid = ANY ($2::text[]) ORDER BY study_uid, series_uid, instance_number, sop_instance_uid`,
    [LAKE_TENANT, cases.map((c) => c.studyInstanceUid)],
  );
  const byStudy = new Map<string, ManifestInstance[]>();
  for (const i of instances) {
    const list = byStudy.get(i.study_uid) ?? [];
    list.push({ sopInstanceUid: i.sop_instance_uid, seriesInstanceUid: i.series_uid, sopClassUid: i.sop_class_uid, sizeBytes: Number(i.size_bytes), sha256: i.sha256, path: '' });
    byStudy.set(i.study_uid, list);
  }
  const manifestCases: ManifestCase[] = cases.map((c) => {
    const { withdrawn: _w, instances: _n, sizeBytes: _s, ...rest } = c;
    return { ...rest, instances: (byStudy.get(c.studyInstanceUid) ?? []).map((i) => ({ ...i, path: `${c.id}/${i.seriesInstanceUid}/${i.sopInstanceUid}.dcm` })) };
  });
  const totalBytes = manifestCases.reduce((s, c) => s + c.instances.reduce((t, i) => t + i.sizeBytes, 0), 0);
  const manifest: Manifest = {
    format: 'eco3d-lake-manifest/1',
    dataset: { id: ds.id, name: ds.name, description: ds.description },
    version,
    versionId,
    releasedAt: new Date(opts.nowMs).toISOString(),
    cohort,
    k,
    quasiIdentifiers: ['ageBand', 'sex', 'siteRegion', 'studyYear'],
    deidentification: { profile: 'DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile with options (see README, Privacy)', source: DEID_PROFILE_SOURCE.edition },
    totals: { cases: manifestCases.length, instances: instances.length, sizeBytes: totalBytes },
    cases: manifestCases,
  };
  const json = manifestJson(manifest);
  await tx.query(
    `INSERT INTO lake_dataset_versions (id, dataset_id, version, k, cases, size_bytes, manifest, manifest_sha256, released_by, released_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10::timestamptz)`,
    [versionId, datasetId, version, k, cases.length, totalBytes, json, sha256(json), opts.by, manifest.releasedAt],
  );
  await tx.query(
    `INSERT INTO lake_version_cases (version_id, case_id, ordinal) SELECT $1, c, o::int FROM unnest($2::text[]) WITH ORDINALITY AS t(c, o)`,
    [versionId, cases.map((c) => c.id)],
  );
  return (await getVersion(tx, versionId))!;
}

interface VersionRow {
  id: string;
  dataset_id: string;
  version: number;
  k: number;
  cases: number;
  size_bytes: number;
  manifest: Manifest;
  manifest_sha256: string;
  released_by: string;
  released_at: Date;
}

export async function getVersion(q: Queryable, versionId: string): Promise<DatasetVersion | undefined> {
  const r = (await q.query<VersionRow>('SELECT * FROM lake_dataset_versions WHERE id = $1', [versionId]))[0];
  if (r === undefined) return undefined;
  return {
    id: r.id,
    datasetId: r.dataset_id,
    version: r.version,
    k: r.k,
    cases: r.cases,
    sizeBytes: Number(r.size_bytes),
    manifestSha256: r.manifest_sha256,
    releasedBy: r.released_by,
    releasedAtMs: r.released_at.getTime(),
    manifest: r.manifest,
  };
}

/** The version's cases withdrawn since it was released (its audit of withdrawals). */
export async function versionWithdrawals(q: Queryable, versionId: string): Promise<Array<{ caseId: string; withdrawnAt: string; reason: string }>> {
  const rows = await q.query<{ id: string; withdrawn_at: Date; withdrawn_reason: string }>(
    `SELECT c.id, c.withdrawn_at, c.withdrawn_reason FROM lake_version_cases v JOIN lake_cases c ON c.id = v.case_id
     WHERE v.version_id = $1 AND c.withdrawn_at IS NOT NULL ORDER BY c.withdrawn_at, c.id`,
    [versionId],
  );
  return rows.map((r) => ({ caseId: r.id, withdrawnAt: r.withdrawn_at.toISOString(), reason: r.withdrawn_reason }));
}

/**
 * Withdraws a patient's cases (by pseudonym) from every future version and from access; released
 * versions keep their manifest and list the withdrawal. Returns the cases newly withdrawn.
 */
export async function withdrawPseudonym(q: Queryable, pseudonymId: string, reason: string): Promise<string[]> {
  const rows = await q.query<{ id: string }>(
    `UPDATE lake_cases SET withdrawn_at = now(), withdrawn_reason = $2 WHERE pseudonym_id = $1 AND withdrawn_at IS NULL RETURNING id`,
    [pseudonymId, reason.slice(0, 500)],
  );
  return rows.map((r) => r.id);
}

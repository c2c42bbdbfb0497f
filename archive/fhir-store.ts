// FHIR resources in the database (migration 0005): versioned rows in `fhir_resources`, each write
// together with its FhirResourceChanged outbox row in one transaction, so that a configured
// external FHIR server receives every change (archive/fhir-push.ts) and a crash loses none.
//
// Above the generic store, the domain: the RIS's Patient and ServiceRequest in (the worklist),
// the study's ImagingStudy, Endpoint, Observations and DiagnosticReport out, and the research
// Consent rendered from store/consents.ts (the bedside's append-only decisions).
//
// Resources we derive (ImagingStudy, Observation, DiagnosticReport, Endpoint, a bedside Patient)
// get deterministic ids (fhirResourceId) and are written with putFhirResource, which adds a
// version only when the content changed: the publish functions are idempotent, so the server can
// call them from an at-least-once outbox consumer.
import { createHash, randomUUID } from 'node:crypto';
import {
  Eco3dError,
  accessionOf,
  buildDiagnosticReport,
  buildDicomWebEndpoint,
  buildImagingStudy,
  buildMeasurementObservation,
  buildPatient,
  consentDecisionOf,
  consentResources,
  dicomPatientIdOf,
  dicomPersonNameOf,
  examDescriptionOf,
  fhirInstant,
  fhirReference,
  isFhirId,
  localReferenceId,
  worklistItemOf,
  type AccessionInput,
  type CodingInput,
  type Consent,
  type DiagnosticReport,
  type DicomSex,
  type Endpoint,
  type FhirIssue,
  type FhirResourceChangedV1,
  type ImagingSeriesInput,
  type ImagingStudy,
  type MeasurementValue,
  type Observation,
  type Patient,
  type PersonRef,
  type Reference,
  type Resource,
  type ResultStatus,
  type ServiceRequest,
  type WorklistItem,
} from '../protocols/index.ts';
import { insertOutboxEvent, listConsents, recordConsent, type Database, type Queryable } from '../store/index.ts';

// ---------------------------------------------------------------------------------------------
// Errors carrying OperationOutcome issues

/** An ECO3D_ERR_INVALID_RESOURCE (422) whose details carry the issues for the OperationOutcome. */
export function invalidResource(issues: readonly FhirIssue[]): Eco3dError {
  return new Eco3dError('ECO3D_ERR_INVALID_RESOURCE', issues.map((i) => i.diagnostics).join('; '), { details: { issues } });
}

/** The OperationOutcome issues an error carries (set by invalidResource and friends), if any. */
export function fhirIssuesOf(err: Eco3dError): readonly FhirIssue[] | undefined {
  const issues = err.details?.issues;
  return Array.isArray(issues) ? (issues as FhirIssue[]) : undefined;
}

function conflict(message: string, code: FhirIssue['code'] = 'conflict', expression?: string): Eco3dError {
  const issue: FhirIssue = { severity: 'error', code, diagnostics: message, ...(expression === undefined ? {} : { expression: [expression] }) };
  return new Eco3dError('ECO3D_ERR_CONFLICT', message, { details: { issues: [issue] } });
}

// ---------------------------------------------------------------------------------------------
// The versioned store

export interface StoredFhirResource<R extends Resource = Resource> {
  readonly tenantId: string;
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: number;
  readonly lastUpdatedMs: number;
  /** With meta.versionId and meta.lastUpdated. */
  readonly resource: R;
}

interface ResourceRow {
  tenant_id: string;
  resource_type: string;
  id: string;
  version_id: number;
  last_updated: Date;
  resource: Resource;
}

const COLUMNS = 'tenant_id, resource_type, id, version_id, last_updated, resource';

/** resourceType, id and meta first (jsonb stores keys in its own order), then the rest. */
function presentable<R extends Resource>(r: R): R {
  const { resourceType, id, meta, ...rest } = r as R & { resourceType: string; id?: string; meta?: unknown };
  return { resourceType, id, meta, ...rest } as unknown as R;
}

const toStored = <R extends Resource>(row: ResourceRow): StoredFhirResource<R> => ({
  tenantId: row.tenant_id,
  resourceType: row.resource_type,
  id: row.id,
  versionId: row.version_id,
  lastUpdatedMs: row.last_updated.getTime(),
  resource: presentable(row.resource as R),
});

/**
 * A stable id for a resource we derive from something of ours (a study UID, a measurement id):
 * a name-based UUID (RFC 9562 version 8 layout over SHA-256), distinct per tenant.
 */
export function fhirResourceId(tenantId: string, kind: string, key: string): string {
  const h = createHash('sha256').update(`eco3d/${tenantId}/${kind}/${key}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x80;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** JSON with sorted keys: jsonb reorders keys, so content is compared in this form. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object' && v !== null) {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/** The content that versions compare on: everything but meta.versionId and meta.lastUpdated. */
function content(r: Resource): string {
  const { meta, ...rest } = r as Resource & { meta?: Record<string, unknown> };
  if (meta === undefined) return canonical(rest);
  const { versionId: _v, lastUpdated: _l, ...otherMeta } = meta;
  return canonical(Object.keys(otherMeta).length === 0 ? rest : { ...rest, meta: otherMeta });
}

export interface WriteResult<R extends Resource = Resource> {
  readonly stored: StoredFhirResource<R>;
  /** False when the content equals the current version's: nothing was written. */
  readonly changed: boolean;
}

async function writeVersion<R extends Resource>(tx: Queryable, tenantId: string, resource: R, nowMs: number): Promise<WriteResult<R>> {
  const type = resource.resourceType;
  const id = resource.id;
  if (!isFhirId(id)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `not a FHIR id: ${JSON.stringify(id)}`);
  const current = (
    await tx.query<ResourceRow>(
      `SELECT ${COLUMNS} FROM fhir_resources WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND is_current FOR UPDATE`,
      [tenantId, type, id],
    )
  )[0];
  if (current !== undefined && content(current.resource) === content(resource)) return { stored: toStored<R>(current), changed: false };
  const versionId = (current?.version_id ?? 0) + 1;
  // lastUpdated never goes back, even if the clock does.
  const lastUpdatedMs = Math.max(nowMs, current?.last_updated.getTime() ?? 0);
  const lastUpdated = fhirInstant(lastUpdatedMs);
  const { meta, ...rest } = resource as R & { meta?: Record<string, unknown> };
  const versioned = { ...rest, resourceType: type, id, meta: { ...meta, versionId: String(versionId), lastUpdated } } as unknown as R;
  if (current !== undefined) {
    await tx.query('UPDATE fhir_resources SET is_current = false WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND is_current', [tenantId, type, id]);
  }
  let row: ResourceRow;
  try {
    row = (
      await tx.query<ResourceRow>(
        `INSERT INTO fhir_resources (tenant_id, resource_type, id, version_id, last_updated, is_current, resource)
         VALUES ($1, $2, $3, $4, $5::timestamptz, true, $6::jsonb) RETURNING ${COLUMNS}`,
        [tenantId, type, id, versionId, lastUpdated, JSON.stringify(versioned)],
      )
    )[0]!;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === '23505') throw conflict(`${type}/${id} was written concurrently: retry`);
    if (code === '23503') throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `tenant ${tenantId} does not exist`, { cause: err });
    throw err;
  }
  const event: FhirResourceChangedV1 = {
    type: 'FhirResourceChanged',
    version: 1,
    idempotencyKey: `FhirResourceChanged/${tenantId}/${type}/${id}/${versionId}`,
    tenantId,
    occurredAt: lastUpdated,
    resourceType: type,
    id,
    versionId: String(versionId),
  };
  await insertOutboxEvent(tx, event);
  return { stored: toStored<R>(row), changed: true };
}

/** Creates a resource with a server-assigned id (a client's id and meta are ignored, as R4 create says). */
export async function createFhirResource<R extends Resource>(tx: Queryable, tenantId: string, resource: R, opts: { nowMs: number }): Promise<StoredFhirResource<R>> {
  const { id: _ignored, meta: _meta, ...rest } = resource as R & { meta?: unknown };
  const fresh = { ...rest, id: randomUUID() } as unknown as R;
  return (await writeVersion(tx, tenantId, fresh, opts.nowMs)).stored;
}

/** Writes `resource` (which has its id) as the next version, unless its content is unchanged. */
export async function putFhirResource<R extends Resource>(tx: Queryable, tenantId: string, resource: R, opts: { nowMs: number }): Promise<WriteResult<R>> {
  return writeVersion(tx, tenantId, resource, opts.nowMs);
}

/** The current version, or the given one; undefined when absent (or another tenant's). */
export async function readFhirResource<R extends Resource = Resource>(
  q: Queryable,
  tenantId: string,
  resourceType: string,
  id: string,
  versionId?: number,
): Promise<StoredFhirResource<R> | undefined> {
  if (!isFhirId(id)) return undefined;
  const rows =
    versionId === undefined
      ? await q.query<ResourceRow>(`SELECT ${COLUMNS} FROM fhir_resources WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND is_current`, [
          tenantId,
          resourceType,
          id,
        ])
      : await q.query<ResourceRow>(`SELECT ${COLUMNS} FROM fhir_resources WHERE tenant_id = $1 AND resource_type = $2 AND id = $3 AND version_id = $4`, [
          tenantId,
          resourceType,
          id,
          versionId,
        ]);
  return rows[0] === undefined ? undefined : toStored<R>(rows[0]);
}

/** A token: `system|value`, `value` (any system) or `system|` (any value). */
export interface TokenQuery {
  readonly system?: string;
  readonly value?: string;
}

export interface FhirSearch {
  readonly ids?: readonly string[];
  /** Any of these identifiers (OR). */
  readonly identifiers?: readonly TokenQuery[];
  /** Any of these status codes (OR). */
  readonly statuses?: readonly string[];
  /** subject.reference is any of these (`Patient/<id>`). */
  readonly subjects?: readonly string[];
  /** Page size (0 for a count only). */
  readonly count: number;
  readonly offset: number;
}

export interface FhirSearchResult<R extends Resource = Resource> {
  readonly total: number;
  readonly resources: readonly StoredFhirResource<R>[];
}

/** Current versions of `resourceType` matching every given criterion, newest first. */
export async function searchFhirResources<R extends Resource = Resource>(
  q: Queryable,
  tenantId: string,
  resourceType: string,
  s: FhirSearch,
): Promise<FhirSearchResult<R>> {
  const params: unknown[] = [tenantId, resourceType];
  const p = (v: unknown): string => {
    params.push(v);
    return `$${params.length}`;
  };
  const list = (values: readonly string[]): string => `(SELECT jsonb_array_elements_text(${p(JSON.stringify(values))}::jsonb))`;
  const where = ['tenant_id = $1', 'resource_type = $2', 'is_current'];
  if (s.ids !== undefined) where.push(`id IN ${list(s.ids)}`);
  if (s.identifiers !== undefined) {
    const alternatives = s.identifiers.map((t) => {
      const probe: Record<string, string> = {};
      if (t.system !== undefined) probe.system = t.system;
      if (t.value !== undefined) probe.value = t.value;
      return `resource -> 'identifier' @> ${p(JSON.stringify([probe]))}::jsonb`;
    });
    where.push(alternatives.length === 0 ? 'false' : `(${alternatives.join(' OR ')})`);
  }
  if (s.statuses !== undefined) where.push(`resource ->> 'status' IN ${list(s.statuses)}`);
  if (s.subjects !== undefined) where.push(`resource -> 'subject' ->> 'reference' IN ${list(s.subjects)}`);
  const whereSql = where.join(' AND ');
  const countParams = [...params];
  const total = (await q.query<{ n: number }>(`SELECT count(*) AS n FROM fhir_resources WHERE ${whereSql}`, countParams))[0]?.n ?? 0;
  if (s.count === 0 || total <= s.offset) return { total: Number(total), resources: [] };
  const rows = await q.query<ResourceRow>(
    `SELECT ${COLUMNS} FROM fhir_resources WHERE ${whereSql} ORDER BY last_updated DESC, id LIMIT ${p(s.count)} OFFSET ${p(s.offset)}`,
    params,
  );
  return { total: Number(total), resources: rows.map((r) => toStored<R>(r)) };
}

// ---------------------------------------------------------------------------------------------
// In: Patient and ServiceRequest (the RIS), the worklist

export interface CreateOptions {
  readonly nowMs: number;
  /** Conditional create (If-None-Exist): when exactly one resource matches, it is returned instead. */
  readonly ifNoneExist?: Omit<FhirSearch, 'count' | 'offset'> | undefined;
}

export interface CreateResult<R extends Resource> {
  readonly stored: StoredFhirResource<R>;
  /** False when If-None-Exist matched an existing resource. */
  readonly created: boolean;
}

async function conditionalMatch<R extends Resource>(tx: Queryable, tenantId: string, type: string, crit: CreateOptions['ifNoneExist']): Promise<StoredFhirResource<R> | undefined> {
  if (crit === undefined) return undefined;
  const found = await searchFhirResources<R>(tx, tenantId, type, { ...crit, count: 2, offset: 0 });
  if (found.total > 1) throw conflict(`If-None-Exist matches ${found.total} ${type} resources: make the criteria selective`, 'duplicate');
  return found.resources[0];
}

const MAX_PATIENT_ID = 64;
const MAX_ACCESSION = 16;
const DICOM_TEXT_RE = /^[^\\\p{Cc}]+$/u;

/** What the worklist needs of a Patient beyond what the validators check. */
export function patientProblems(p: Patient): FhirIssue[] {
  const issues: FhirIssue[] = [];
  const pid = dicomPatientIdOf(p);
  if (pid === undefined) {
    issues.push({ severity: 'error', code: 'required', diagnostics: 'a Patient needs an identifier with a value (it becomes the DICOM Patient ID; type MR preferred)', expression: ['Patient.identifier'] });
  } else if (pid.value.length > MAX_PATIENT_ID || !DICOM_TEXT_RE.test(pid.value)) {
    issues.push({ severity: 'error', code: 'value', diagnostics: `the patient identifier becomes the DICOM Patient ID: at most ${MAX_PATIENT_ID} characters, no backslash or control characters`, expression: ['Patient.identifier'] });
  }
  if (dicomPersonNameOf(p) === undefined) {
    issues.push({ severity: 'error', code: 'required', diagnostics: 'a Patient needs a name (family, given or text)', expression: ['Patient.name'] });
  }
  return issues;
}

export async function createPatient(db: Database, tenantId: string, patient: Patient, opts: CreateOptions): Promise<CreateResult<Patient>> {
  const issues = patientProblems(patient);
  if (issues.length > 0) throw invalidResource(issues);
  return db.transaction(async (tx) => {
    const existing = await conditionalMatch<Patient>(tx, tenantId, 'Patient', opts.ifNoneExist);
    if (existing !== undefined) return { stored: existing, created: false };
    return { stored: await createFhirResource(tx, tenantId, patient, opts), created: true };
  });
}

function accessionProblems(sr: ServiceRequest): FhirIssue[] {
  const acc = accessionOf(sr);
  if (acc === undefined) {
    return [
      {
        severity: 'error',
        code: 'required',
        diagnostics: 'a ServiceRequest needs its accession number: an identifier with type http://terminology.hl7.org/CodeSystem/v2-0203#ACSN and a value',
        expression: ['ServiceRequest.identifier'],
      },
    ];
  }
  if (acc.value.length > MAX_ACCESSION || !DICOM_TEXT_RE.test(acc.value)) {
    return [
      {
        severity: 'error',
        code: 'value',
        diagnostics: `the accession number becomes DICOM AccessionNumber (SH): at most ${MAX_ACCESSION} characters, no backslash or control characters`,
        expression: ['ServiceRequest.identifier'],
      },
    ];
  }
  return [];
}

export async function createServiceRequest(db: Database, tenantId: string, sr: ServiceRequest, opts: CreateOptions): Promise<CreateResult<ServiceRequest>> {
  const issues = accessionProblems(sr);
  if (examDescriptionOf(sr) === undefined) {
    issues.push({ severity: 'error', code: 'required', diagnostics: 'a ServiceRequest needs code.text or a code.coding display: it becomes the exam description', expression: ['ServiceRequest.code'] });
  }
  const patientId = localReferenceId(sr.subject, 'Patient');
  if (patientId === undefined) {
    issues.push({ severity: 'error', code: 'required', diagnostics: 'subject must reference a Patient of this server (Patient/<id>)', expression: ['ServiceRequest.subject'] });
  }
  if (issues.length > 0) throw invalidResource(issues);
  const accession = accessionOf(sr)!;
  return db.transaction(async (tx) => {
    const existing = await conditionalMatch<ServiceRequest>(tx, tenantId, 'ServiceRequest', opts.ifNoneExist);
    if (existing !== undefined) return { stored: existing, created: false };
    if ((await readFhirResource(tx, tenantId, 'Patient', patientId!)) === undefined) {
      throw invalidResource([{ severity: 'error', code: 'not-found', diagnostics: `subject Patient/${patientId!} does not exist: POST the Patient first`, expression: ['ServiceRequest.subject'] }]);
    }
    // One order per accession number: the number names the study in DICOM. The lock serialises
    // two concurrent creates of the same number (PostgreSQL; PGlite runs one transaction at a time).
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`eco3d:fhir:acsn:${tenantId}:${accession.system ?? ''}|${accession.value}`]);
    const dup = await searchFhirResources(tx, tenantId, 'ServiceRequest', { identifiers: [accessionToken(accession)], count: 1, offset: 0 });
    if (dup.total > 0) {
      throw conflict(`accession number ${accession.value} is already ServiceRequest/${dup.resources[0]!.id}'s`, 'duplicate', 'ServiceRequest.identifier');
    }
    return { stored: await createFhirResource(tx, tenantId, sr, opts), created: true };
  });
}

const accessionToken = (a: AccessionInput): TokenQuery => (a.system === undefined ? { value: a.value } : { system: a.system, value: a.value });

/**
 * The open orders (ServiceRequest status `active`) with their patients, soonest scheduled first:
 * what the bedside panel offers. An order whose patient lacks what DICOM needs is left out.
 */
export async function listWorklist(q: Queryable, tenantId: string, opts: { patientFhirId?: string; limit?: number } = {}): Promise<WorklistItem[]> {
  const limit = Math.max(1, Math.min(1000, Math.trunc(opts.limit ?? 200)));
  const params: unknown[] = [tenantId, limit];
  let extra = '';
  if (opts.patientFhirId !== undefined) {
    params.push(opts.patientFhirId);
    extra = 'AND p.id = $3';
  }
  const rows = await q.query<{ sr: ServiceRequest; patient: Patient }>(
    `SELECT s.resource AS sr, p.resource AS patient
     FROM fhir_resources s
     JOIN fhir_resources p ON p.tenant_id = s.tenant_id AND p.resource_type = 'Patient' AND p.is_current
                          AND s.resource -> 'subject' ->> 'reference' = 'Patient/' || p.id
     WHERE s.tenant_id = $1 AND s.resource_type = 'ServiceRequest' AND s.is_current AND s.resource ->> 'status' = 'active' ${extra}
     ORDER BY s.last_updated, s.id
     LIMIT $2`,
    params,
  );
  const items = rows.map((r) => worklistItemOf(r.sr, r.patient)).filter((i): i is WorklistItem => i !== undefined);
  const when = (i: WorklistItem): number => i.scheduledAtMs ?? i.authoredOnMs ?? Number.MAX_SAFE_INTEGER;
  return items.sort((a, b) => when(a) - when(b));
}

/** The tenant's ServiceRequest with this accession number (an active one first), if any. */
export async function findServiceRequestByAccession(q: Queryable, tenantId: string, accession: AccessionInput): Promise<StoredFhirResource<ServiceRequest> | undefined> {
  const found = await searchFhirResources<ServiceRequest>(q, tenantId, 'ServiceRequest', { identifiers: [accessionToken(accession)], count: 20, offset: 0 });
  const withAcsn = found.resources.filter((r) => accessionOf(r.resource)?.value === accession.value);
  return withAcsn.find((r) => r.resource.status === 'active') ?? withAcsn[0];
}

const COMPLETABLE: ReadonlySet<ServiceRequest['status']> = new Set(['draft', 'active', 'on-hold']);

/** Marks an order completed (its acquisition completed). Idempotent; a revoked or erroneous order is ECO3D_ERR_CONFLICT. */
export async function completeServiceRequest(tx: Queryable, tenantId: string, id: string, nowMs: number): Promise<WriteResult<ServiceRequest>> {
  const current = await readFhirResource<ServiceRequest>(tx, tenantId, 'ServiceRequest', id);
  if (current === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no ServiceRequest/${id}`);
  if (current.resource.status === 'completed') return { stored: current, changed: false };
  if (!COMPLETABLE.has(current.resource.status)) throw conflict(`ServiceRequest/${id} is ${current.resource.status}: it cannot be completed`);
  return putFhirResource(tx, tenantId, { ...current.resource, status: 'completed' }, { nowMs });
}

/** completeServiceRequest in its own transaction. */
export async function markServiceRequestCompleted(db: Database, c: { tenantId: string; serviceRequestId: string; nowMs: number }): Promise<WriteResult<ServiceRequest>> {
  return db.transaction((tx) => completeServiceRequest(tx, c.tenantId, c.serviceRequestId, c.nowMs));
}

// ---------------------------------------------------------------------------------------------
// Out: the study, its measurements and its report

/** The current Patients of the tenant with an identifier of this value (any system). */
export async function findPatientsByIdentifierValue(q: Queryable, tenantId: string, value: string): Promise<StoredFhirResource<Patient>[]> {
  const found = await searchFhirResources<Patient>(q, tenantId, 'Patient', { identifiers: [{ value }], count: 20, offset: 0 });
  return [...found.resources];
}

export interface ExamPatient {
  /** The DICOM Patient ID. */
  readonly patientId: string;
  /** DICOM PN or plain text. */
  readonly name: string;
  readonly birthDate?: string | undefined;
  readonly sex?: DicomSex | undefined;
}

/** The Patient with this patient id (the RIS's, if it sent one), else one made from the exam. */
async function ensurePatient(tx: Queryable, tenantId: string, p: ExamPatient, nowMs: number): Promise<StoredFhirResource<Patient>> {
  const existing = await findPatientsByIdentifierValue(tx, tenantId, p.patientId);
  const mine = fhirResourceId(tenantId, 'patient', p.patientId);
  const pick = existing.find((r) => r.id !== mine) ?? existing[0];
  if (pick !== undefined) return pick;
  return (await putFhirResource(tx, tenantId, buildPatient({ id: mine, patientId: p.patientId, name: p.name, birthDate: p.birthDate, sex: p.sex }), { nowMs })).stored;
}

/** A measurement as store/measurements.ts keeps it (a store Measurement fits). */
export type MeasurementForFhir = MeasurementValue & {
  readonly id: string;
  readonly label?: string | undefined;
  /** Username of who measured. */
  readonly createdBy: string;
  readonly createdAtMs: number;
  readonly bodySite?: CodingInput | undefined;
};

export interface StudyPublication {
  readonly tenantId: string;
  readonly nowMs: number;
  /** Our DICOMweb base URL: the Endpoint's address. */
  readonly dicomWebBaseUrl: string;
  readonly studyInstanceUid: string;
  readonly accessionNumber?: string | undefined;
  readonly description?: string | undefined;
  readonly startedMs?: number | undefined;
  /** The study's series; merged by UID with those published before (a later SR series adds to the US one). */
  readonly series: readonly ImagingSeriesInput[];
  /** The exam's patient, as written in DICOM: used when no ServiceRequest names one. */
  readonly patient: ExamPatient;
  /** The order the study fulfils. Default: the ServiceRequest with this accession number, if any. */
  readonly serviceRequestId?: string | undefined;
  /** Caliper measurements to publish as (preliminary) Observations. */
  readonly measurements?: readonly MeasurementForFhir[] | undefined;
}

export interface PublishedStudy {
  readonly imagingStudy: StoredFhirResource<ImagingStudy>;
  readonly endpoint: StoredFhirResource<Endpoint>;
  /** The study's subject. */
  readonly patientReference: Reference<Patient>;
  readonly serviceRequest?: StoredFhirResource<ServiceRequest>;
  readonly observations: readonly StoredFhirResource<Observation>[];
  /** `Type/id/_history/n` of each version written by this call (empty when nothing changed). */
  readonly written: readonly string[];
}

/** The id of the ImagingStudy of a study (what DiagnosticReport and Observation reference). */
export const imagingStudyIdFor = (tenantId: string, studyInstanceUid: string): string => fhirResourceId(tenantId, 'imaging-study', studyInstanceUid);
export const observationIdFor = (tenantId: string, measurementId: string): string => fhirResourceId(tenantId, 'measurement', measurementId);
export const diagnosticReportIdFor = (tenantId: string, reportId: string): string => fhirResourceId(tenantId, 'report', reportId);

/** An ImagingStudy's series back as builder input (to merge with new ones). */
function seriesInputsOf(study: ImagingStudy): ImagingSeriesInput[] {
  const oid = (s: string | undefined): string => (s ?? '').replace(/^urn:oid:/, '');
  return (study.series ?? []).map((s) => ({
    seriesInstanceUid: s.uid,
    modality: s.modality.code ?? 'OT',
    number: s.number,
    description: s.description,
    startedMs: s.started === undefined ? undefined : Date.parse(s.started),
    bodySite: s.bodySite?.system !== undefined && s.bodySite.code !== undefined ? { system: s.bodySite.system, code: s.bodySite.code, display: s.bodySite.display } : undefined,
    laterality: s.laterality?.code === '24028007' ? 'R' : s.laterality?.code === '7771000' ? 'L' : undefined,
    instances: (s.instance ?? []).map((i) => ({ sopInstanceUid: i.uid, sopClassUid: oid(i.sopClass.code), number: i.number, title: i.title })),
  }));
}

function mergeSeries(before: readonly ImagingSeriesInput[], now: readonly ImagingSeriesInput[]): ImagingSeriesInput[] {
  const byUid = new Map<string, ImagingSeriesInput>();
  for (const s of before) byUid.set(s.seriesInstanceUid, s);
  for (const s of now) {
    const old = byUid.get(s.seriesInstanceUid);
    if (old === undefined) {
      byUid.set(s.seriesInstanceUid, s);
      continue;
    }
    // A series only grows: instances already published stay, new ones are added.
    const instances = new Map(old.instances.map((i) => [i.sopInstanceUid, i]));
    for (const i of s.instances) instances.set(i.sopInstanceUid, i);
    byUid.set(s.seriesInstanceUid, { ...s, instances: [...instances.values()] });
  }
  return [...byUid.values()];
}

function observationOf(tenantId: string, m: MeasurementForFhir, status: ResultStatus, subject: Reference<Patient>, imagingStudyId: string): Observation {
  const measurement: MeasurementValue = m.kind === 'distance' ? { kind: 'distance', valueMm: m.valueMm } : { kind: 'area', valueMm2: m.valueMm2 };
  return buildMeasurementObservation({
    id: observationIdFor(tenantId, m.id),
    status,
    measurement,
    label: m.label,
    subject,
    imagingStudyId,
    effectiveMs: m.createdAtMs,
    performer: { username: m.createdBy },
    bodySite: m.bodySite,
  });
}

const versionRef = (s: StoredFhirResource): string => `${s.resourceType}/${s.id}/_history/${s.versionId}`;

/**
 * On completion (the study is archived): the Endpoint, the ImagingStudy (based on the order, if
 * any), preliminary Observations for the measurements, the order marked completed. One
 * transaction; idempotent (unchanged resources get no new version).
 */
export async function publishStudy(db: Database, input: StudyPublication): Promise<PublishedStudy> {
  const { tenantId, nowMs } = input;
  return db.transaction(async (tx) => {
    const written: string[] = [];
    const note = <R extends Resource>(w: WriteResult<R>): StoredFhirResource<R> => {
      if (w.changed) written.push(versionRef(w.stored));
      return w.stored;
    };
    const endpoint = note(
      await putFhirResource(tx, tenantId, buildDicomWebEndpoint({ id: fhirResourceId(tenantId, 'endpoint', input.dicomWebBaseUrl), address: input.dicomWebBaseUrl }), { nowMs }),
    );

    let order: StoredFhirResource<ServiceRequest> | undefined;
    if (input.serviceRequestId !== undefined) {
      order = await readFhirResource<ServiceRequest>(tx, tenantId, 'ServiceRequest', input.serviceRequestId);
      if (order === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no ServiceRequest/${input.serviceRequestId}`);
    } else if (input.accessionNumber !== undefined) {
      order = await findServiceRequestByAccession(tx, tenantId, { value: input.accessionNumber });
    }
    const orderAccession = order === undefined ? undefined : accessionOf(order.resource);
    if (orderAccession !== undefined && input.accessionNumber !== undefined && orderAccession.value !== input.accessionNumber) {
      throw new Eco3dError('ECO3D_ERR_CONFLICT', `the study's accession number ${input.accessionNumber} is not ServiceRequest/${order!.id}'s (${orderAccession.value})`);
    }
    const accession = orderAccession ?? (input.accessionNumber === undefined ? undefined : { value: input.accessionNumber });

    const subject: Reference<Patient> =
      order?.resource.subject !== undefined && localReferenceId(order.resource.subject, 'Patient') !== undefined
        ? { reference: order.resource.subject.reference! }
        : fhirReference('Patient', (await ensurePatient(tx, tenantId, input.patient, nowMs)).id);

    const studyId = imagingStudyIdFor(tenantId, input.studyInstanceUid);
    const previous = await readFhirResource<ImagingStudy>(tx, tenantId, 'ImagingStudy', studyId);
    const series = mergeSeries(previous === undefined ? [] : seriesInputsOf(previous.resource), input.series);
    const imagingStudy = note(
      await putFhirResource(
        tx,
        tenantId,
        buildImagingStudy({
          id: studyId,
          studyInstanceUid: input.studyInstanceUid,
          subject,
          accession,
          basedOn: order === undefined ? undefined : [fhirReference('ServiceRequest', order.id)],
          endpointId: endpoint.id,
          startedMs: input.startedMs,
          description: input.description,
          series,
        }),
        { nowMs },
      ),
    );

    const observations: StoredFhirResource<Observation>[] = [];
    for (const m of input.measurements ?? []) {
      observations.push(note(await putFhirResource(tx, tenantId, observationOf(tenantId, m, 'preliminary', subject, studyId), { nowMs })));
    }

    let serviceRequest = order;
    if (order !== undefined && order.resource.status !== 'completed') serviceRequest = note(await completeServiceRequest(tx, tenantId, order.id, nowMs));
    return {
      imagingStudy,
      endpoint,
      patientReference: subject,
      ...(serviceRequest === undefined ? {} : { serviceRequest }),
      observations,
      written,
    };
  });
}

export interface ReportPublication {
  readonly tenantId: string;
  readonly nowMs: number;
  /** The server's report id, stable across the report's versions. */
  readonly reportId: string;
  /** The study reported on: publishStudy must have run for it. */
  readonly studyInstanceUid: string;
  readonly status: ResultStatus;
  readonly findings?: string | undefined;
  readonly conclusion?: string | undefined;
  readonly author: PersonRef;
  /** Required for final and amended. */
  readonly signer?: PersonRef | undefined;
  /** When this version was issued (signed, or saved as preliminary). */
  readonly issuedMs: number;
  /** What was reported; default LOINC 18748-4. */
  readonly code?: CodingInput | undefined;
  /** The measurements the report cites: published as Observations (final once the report is). */
  readonly measurements?: readonly MeasurementForFhir[] | undefined;
}

export interface PublishedReport {
  readonly diagnosticReport: StoredFhirResource<DiagnosticReport>;
  readonly observations: readonly StoredFhirResource<Observation>[];
  readonly written: readonly string[];
}

/**
 * A report version: the DiagnosticReport (preliminary, final once signed, amended for a signed
 * amendment) and its measurement Observations. A signed report never goes back to preliminary.
 */
export async function publishReport(db: Database, input: ReportPublication): Promise<PublishedReport> {
  const { tenantId, nowMs } = input;
  return db.transaction(async (tx) => {
    const written: string[] = [];
    const note = <R extends Resource>(w: WriteResult<R>): StoredFhirResource<R> => {
      if (w.changed) written.push(versionRef(w.stored));
      return w.stored;
    };
    const studyId = imagingStudyIdFor(tenantId, input.studyInstanceUid);
    const study = await readFhirResource<ImagingStudy>(tx, tenantId, 'ImagingStudy', studyId);
    if (study === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `study ${input.studyInstanceUid} has no ImagingStudy yet: publishStudy first`);
    // Our ImagingStudies always have a Patient subject (publishStudy).
    const subject: Reference<Patient> = { reference: study.resource.subject.reference ?? '' };
    const basedOn: Reference<ServiceRequest>[] = (study.resource.basedOn ?? [])
      .filter((r) => localReferenceId(r, 'ServiceRequest') !== undefined)
      .map((r) => ({ reference: r.reference! }));
    const reportId = diagnosticReportIdFor(tenantId, input.reportId);
    const before = await readFhirResource<DiagnosticReport>(tx, tenantId, 'DiagnosticReport', reportId);
    if (before !== undefined && before.resource.status !== 'preliminary' && input.status === 'preliminary') {
      throw conflict(`DiagnosticReport/${reportId} is ${before.resource.status}: a signed report is changed by an amendment, never made preliminary again`);
    }
    const obsStatus: ResultStatus = input.status === 'preliminary' ? 'preliminary' : 'final';
    const observations: StoredFhirResource<Observation>[] = [];
    for (const m of input.measurements ?? []) {
      observations.push(note(await putFhirResource(tx, tenantId, observationOf(tenantId, m, obsStatus, subject, studyId), { nowMs })));
    }
    const diagnosticReport = note(
      await putFhirResource(
        tx,
        tenantId,
        buildDiagnosticReport({
          id: reportId,
          status: input.status,
          subject,
          imagingStudyId: studyId,
          basedOn,
          code: input.code,
          effectiveMs: study.resource.started === undefined ? undefined : Date.parse(study.resource.started),
          issuedMs: input.issuedMs,
          author: input.author,
          signer: input.signer,
          findings: input.findings,
          conclusion: input.conclusion,
          observationIds: observations.map((o) => o.id),
        }),
        { nowMs },
      ),
    );
    return { diagnosticReport, observations, written };
  });
}

/**
 * An algorithm's results on a study (a marketplace plugin's Observations): written in one
 * transaction against the study's ImagingStudy and Patient, which must exist. `build` makes the
 * Observations from those references; their ids must be stable (a re-run overwrites, never adds).
 */
export async function publishObservations(
  db: Database,
  input: { tenantId: string; studyInstanceUid: string; build: (subject: Reference<Patient>, imagingStudy: Reference<ImagingStudy>) => Observation[]; nowMs: number },
): Promise<StoredFhirResource<Observation>[]> {
  return db.transaction(async (tx) => {
    const studyId = imagingStudyIdFor(input.tenantId, input.studyInstanceUid);
    const study = await readFhirResource<ImagingStudy>(tx, input.tenantId, 'ImagingStudy', studyId);
    if (study === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `study ${input.studyInstanceUid} has no ImagingStudy yet: publishStudy first`);
    const subject: Reference<Patient> = { reference: study.resource.subject.reference ?? '' };
    const out: StoredFhirResource<Observation>[] = [];
    for (const o of input.build(subject, fhirReference('ImagingStudy', studyId))) out.push((await putFhirResource(tx, input.tenantId, o, { nowMs: input.nowMs })).stored);
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Consent, rendered from store/consents.ts

/** How a Consent names the patient: the Patient resource when we have one, else the patient id. */
export async function patientReferenceFor(q: Queryable, tenantId: string, patientId: string): Promise<Reference<Patient>> {
  const found = await findPatientsByIdentifierValue(q, tenantId, patientId);
  // Prefer the RIS's Patient over one we made from a bedside exam.
  const mine = fhirResourceId(tenantId, 'patient', patientId);
  const p = found.find((r) => r.id !== mine) ?? found[0];
  return p === undefined ? { type: 'Patient', identifier: { value: patientId } } : fhirReference('Patient', p.id);
}

/** The patient's research consent decisions as Consent resources, newest first. */
export async function consentsForPatient(q: Queryable, tenantId: string, patientId: string): Promise<Consent[]> {
  const records = await listConsents(q, tenantId, patientId, 1000);
  if (records.length === 0) return [];
  return consentResources(records, await patientReferenceFor(q, tenantId, patientId));
}

/** One decision as a Consent; undefined when the tenant has no such record. */
export async function readConsent(q: Queryable, tenantId: string, id: string): Promise<Consent | undefined> {
  // The consents table belongs to store/consents.ts, which has no lookup by id: one read here.
  const row = (await q.query<{ patient_id: string }>('SELECT patient_id FROM consents WHERE tenant_id = $1 AND id = $2', [tenantId, id]))[0];
  if (row === undefined) return undefined;
  return (await consentsForPatient(q, tenantId, row.patient_id)).find((c) => c.id === id);
}

/**
 * The patient id (DICOM Patient ID, the consents table's key) a Consent names: through its
 * Patient reference (which must exist), or its logical identifier.
 */
async function consentPatientId(q: Queryable, tenantId: string, c: Consent): Promise<string> {
  const ref = c.patient;
  const fhirId = localReferenceId(ref, 'Patient');
  if (fhirId !== undefined) {
    const p = await readFhirResource<Patient>(q, tenantId, 'Patient', fhirId);
    if (p === undefined) throw invalidResource([{ severity: 'error', code: 'not-found', diagnostics: `patient Patient/${fhirId} does not exist`, expression: ['Consent.patient'] }]);
    const pid = dicomPatientIdOf(p.resource);
    if (pid === undefined) throw invalidResource([{ severity: 'error', code: 'processing', diagnostics: `Patient/${fhirId} has no identifier`, expression: ['Consent.patient'] }]);
    return pid.value;
  }
  const value = ref?.reference === undefined ? ref?.identifier?.value?.trim() : undefined;
  if (value === undefined || value === '' || value.length > 64) {
    throw invalidResource([
      { severity: 'error', code: 'required', diagnostics: 'patient must reference a Patient (Patient/<id>) or carry the patient identifier (patient.identifier.value)', expression: ['Consent.patient'] },
    ]);
  }
  return value;
}

/**
 * Records the decision a POSTed Consent states (see consentDecisionOf) through store/consents.ts,
 * and answers it rendered. `by` is who recorded it.
 */
export async function recordFhirConsent(db: Database, tenantId: string, consent: Consent, by: { username: string; accountId: string }): Promise<Consent> {
  const d = consentDecisionOf(consent);
  if ('issues' in d) throw invalidResource(d.issues);
  const patientId = await consentPatientId(db, tenantId, consent);
  const record = await db.transaction((tx) => recordConsent(tx, { tenantId, patientId, examId: null, decision: d.decision, recordedBy: by.username, recordedByAccountId: by.accountId }));
  const rendered = (await consentsForPatient(db, tenantId, patientId)).find((c) => c.id === record.id);
  if (rendered === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `consent ${record.id} was recorded but cannot be read back`);
  return rendered;
}

// ---------------------------------------------------------------------------------------------
// The service the server calls (bound to the database, our DICOMweb URL and a clock)

export type StudyCompletion = Omit<StudyPublication, 'dicomWebBaseUrl' | 'nowMs'> & { readonly nowMs?: number | undefined };
export type ReportVersion = Omit<ReportPublication, 'nowMs'> & { readonly nowMs?: number | undefined };

export interface FhirService {
  /** Open orders with their patients, for the bedside panel. */
  readonly listWorklist: (tenantId: string, opts?: { patientFhirId?: string; limit?: number }) => Promise<WorklistItem[]>;
  /** On completion (the study is archived). Idempotent. */
  readonly publishStudy: (input: StudyCompletion) => Promise<PublishedStudy>;
  /** For each report version (saved, signed, amended). Idempotent. */
  readonly publishReport: (input: ReportVersion) => Promise<PublishedReport>;
  /** Marks an order completed (publishStudy does it too, for the study's order). Idempotent. */
  readonly completeServiceRequest: (tenantId: string, serviceRequestId: string) => Promise<WriteResult<ServiceRequest>>;
  /** The patient's research consent as Consent resources, newest first. */
  readonly consentsForPatient: (tenantId: string, patientId: string) => Promise<Consent[]>;
  /** The current version (what fhirPushConsumer's readResource wants). */
  readonly readResource: (tenantId: string, resourceType: string, id: string) => Promise<StoredFhirResource | undefined>;
  /** An algorithm's Observations on a study (publishObservations). Idempotent by their ids. */
  readonly publishObservations: (
    tenantId: string,
    studyInstanceUid: string,
    build: (subject: Reference<Patient>, imagingStudy: Reference<ImagingStudy>) => Observation[],
  ) => Promise<StoredFhirResource<Observation>[]>;
}

export function createFhirService(opts: { db: Database; dicomWebBaseUrl: string; nowMs?: () => number }): FhirService {
  const { db } = opts;
  const now = opts.nowMs ?? Date.now;
  // Checked once here, not at the first completion.
  buildDicomWebEndpoint({ id: 'check', address: opts.dicomWebBaseUrl });
  return {
    listWorklist: (tenantId, o) => listWorklist(db, tenantId, o),
    publishStudy: (input) => publishStudy(db, { ...input, dicomWebBaseUrl: opts.dicomWebBaseUrl, nowMs: input.nowMs ?? now() }),
    publishReport: (input) => publishReport(db, { ...input, nowMs: input.nowMs ?? now() }),
    completeServiceRequest: (tenantId, serviceRequestId) => markServiceRequestCompleted(db, { tenantId, serviceRequestId, nowMs: now() }),
    consentsForPatient: (tenantId, patientId) => consentsForPatient(db, tenantId, patientId),
    readResource: (tenantId, resourceType, id) => readFhirResource(db, tenantId, resourceType, id),
    publishObservations: (tenantId, studyInstanceUid, build) => publishObservations(db, { tenantId, studyInstanceUid, build, nowMs: now() }),
  };
}

// The FHIR store on both engines: versions and their outbox rows, searches, the worklist in, the
// study, measurements and report out (each resource checked by both official validators), and
// research consent rendered from the bedside's decisions.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Consent, DiagnosticReport, ImagingStudy, Observation, Patient, Resource, ServiceRequest } from '../protocols/index.ts';
import { rejectsWith } from '../protocols/testing.ts';
import { ensureTenant, recordConsent, type Database } from '../store/index.ts';
import { forEachDatabase } from '../store/testing.ts';
import {
  consentsForPatient,
  createFhirResource,
  createFhirService,
  createPatient,
  createServiceRequest,
  fhirIssuesOf,
  fhirResourceId,
  imagingStudyIdFor,
  listWorklist,
  putFhirResource,
  readConsent,
  readFhirResource,
  recordFhirConsent,
  searchFhirResources,
  type MeasurementForFhir,
} from './fhir-store.ts';
import { createFhirValidator } from './fhir-validate.ts';

const validator = createFhirValidator({ inWorker: false });
async function assertValid(r: Resource): Promise<void> {
  const issues = await validator.validate(r);
  assert.deepEqual(issues, [], `${r.resourceType}: ${JSON.stringify(issues, null, 1)}`);
}

const T0 = Date.UTC(2026, 2, 1, 8);
const ACSN = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] };
const MR = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] };
const DICOMWEB = 'http://127.0.0.1:8080/dicom-web';

let n = 0;
/** A fresh tenant per test: the block shares one database. */
async function tenant(db: Database): Promise<string> {
  n += 1;
  const id = `fhir-${n}-${Math.random().toString(36).slice(2, 8)}`;
  await ensureTenant(db, { id, name: id });
  return id;
}

const patientBody = (mrn: string, extra: Partial<Patient> = {}): Patient => ({
  resourceType: 'Patient',
  identifier: [{ type: MR, system: 'urn:oid:1.2.3.5', value: mrn }],
  name: [{ family: 'Doe', given: ['Jane'] }],
  gender: 'female',
  birthDate: '1980-04-05',
  ...extra,
});

const orderBody = (patientId: string, accession: string, extra: Partial<ServiceRequest> = {}): ServiceRequest => ({
  resourceType: 'ServiceRequest',
  status: 'active',
  intent: 'order',
  identifier: [{ type: ACSN, system: 'urn:oid:1.2.3.6', value: accession }],
  code: { text: 'US abdomen 3D' },
  subject: { reference: `Patient/${patientId}` },
  ...extra,
});

async function outboxKeys(db: Database, tenantId: string): Promise<string[]> {
  const rows = await db.query<{ idempotency_key: string }>(
    `SELECT idempotency_key FROM outbox WHERE event_type = 'FhirResourceChanged' AND payload ->> 'tenantId' = $1 ORDER BY id`,
    [tenantId],
  );
  return rows.map((r) => r.idempotency_key);
}

const issueOf = async (p: Promise<unknown>, code: Parameters<typeof rejectsWith>[1]) => fhirIssuesOf(await rejectsWith(p, code)) ?? [];

forEachDatabase('FHIR store', (ctx) => {
  test('a write is a version and an outbox row, in one transaction; unchanged content writes nothing', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const v1 = await db.transaction((tx) => createFhirResource<Patient>(tx, t, { ...patientBody('MRN-1'), id: 'client-id', meta: { versionId: '9' } }, { nowMs: T0 }));
    assert.notEqual(v1.id, 'client-id');
    assert.equal(v1.versionId, 1);
    assert.equal(v1.resource.meta?.versionId, '1');
    assert.equal(v1.resource.meta?.lastUpdated, new Date(T0).toISOString());
    assert.deepEqual(Object.keys(v1.resource).slice(0, 3), ['resourceType', 'id', 'meta']);
    const same = await db.transaction((tx) => putFhirResource(tx, t, v1.resource, { nowMs: T0 + 1000 }));
    assert.equal(same.changed, false);
    assert.equal(same.stored.versionId, 1);
    // The clock went back: lastUpdated does not.
    const v2 = await db.transaction((tx) => putFhirResource(tx, t, { ...v1.resource, gender: 'other' }, { nowMs: T0 - 5000 }));
    assert.equal(v2.changed, true);
    assert.equal(v2.stored.versionId, 2);
    assert.equal(v2.stored.lastUpdatedMs, T0);
    assert.equal((await readFhirResource<Patient>(db, t, 'Patient', v1.id))?.resource.gender, 'other');
    assert.equal((await readFhirResource<Patient>(db, t, 'Patient', v1.id, 1))?.resource.gender, 'female');
    assert.equal(await readFhirResource(db, t, 'Patient', v1.id, 3), undefined);
    assert.deepEqual(await outboxKeys(db, t), [`FhirResourceChanged/${t}/Patient/${v1.id}/1`, `FhirResourceChanged/${t}/Patient/${v1.id}/2`]);

    // A transaction that fails leaves neither the version nor its outbox row.
    await assert.rejects(
      db.transaction(async (tx) => {
        await putFhirResource(tx, t, { ...v1.resource, gender: 'male' }, { nowMs: T0 + 2000 });
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal((await readFhirResource<Patient>(db, t, 'Patient', v1.id))?.versionId, 2);
    assert.equal((await outboxKeys(db, t)).length, 2);
  });

  test('a version never changes, and another tenant sees nothing', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const other = await tenant(db);
    const p = await db.transaction((tx) => createFhirResource(tx, t, patientBody('MRN-2'), { nowMs: T0 }));
    await assert.rejects(db.query(`UPDATE fhir_resources SET resource = resource || '{"gender":"male"}'::jsonb WHERE id = $1`, [p.id]), /immutable/);
    await assert.rejects(db.query('DELETE FROM fhir_resources WHERE id = $1', [p.id]), /immutable/);
    assert.equal(await readFhirResource(db, other, 'Patient', p.id), undefined);
    assert.equal((await searchFhirResources(db, other, 'Patient', { count: 10, offset: 0 })).total, 0);
  });

  test('search: identifier tokens, status, subject, ids, paging', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const p1 = (await createPatient(db, t, patientBody('MRN-A'), { nowMs: T0 })).stored;
    const p2 = (await createPatient(db, t, patientBody('MRN-B'), { nowMs: T0 + 1 })).stored;
    const s1 = (await createServiceRequest(db, t, orderBody(p1.id, 'A1'), { nowMs: T0 + 2 })).stored;
    const s2 = (await createServiceRequest(db, t, orderBody(p1.id, 'A2', { status: 'on-hold' }), { nowMs: T0 + 3 })).stored;
    const s3 = (await createServiceRequest(db, t, orderBody(p2.id, 'A3'), { nowMs: T0 + 4 })).stored;
    const ids = async (type: string, s: Parameters<typeof searchFhirResources>[3]): Promise<string[]> =>
      (await searchFhirResources(db, t, type, s)).resources.map((r) => r.id).sort();
    const page = { count: 10, offset: 0 };
    assert.deepEqual(await ids('Patient', { ...page, identifiers: [{ value: 'MRN-A' }] }), [p1.id]);
    assert.deepEqual(await ids('Patient', { ...page, identifiers: [{ system: 'urn:oid:1.2.3.5', value: 'MRN-B' }] }), [p2.id]);
    assert.deepEqual(await ids('Patient', { ...page, identifiers: [{ system: 'urn:other', value: 'MRN-B' }] }), []);
    assert.deepEqual(await ids('Patient', { ...page, identifiers: [{ system: 'urn:oid:1.2.3.5' }] }), [p1.id, p2.id].sort());
    assert.deepEqual(await ids('ServiceRequest', { ...page, statuses: ['active'], subjects: [`Patient/${p1.id}`] }), [s1.id]);
    assert.deepEqual(await ids('ServiceRequest', { ...page, statuses: ['active', 'on-hold'] }), [s1.id, s2.id, s3.id].sort());
    assert.deepEqual(await ids('ServiceRequest', { ...page, identifiers: [{ value: 'A3' }, { value: 'A2' }] }), [s2.id, s3.id].sort());
    assert.deepEqual(await ids('ServiceRequest', { ...page, ids: [s1.id, 'nope'] }), [s1.id]);
    const first = await searchFhirResources(db, t, 'ServiceRequest', { count: 2, offset: 0 });
    const rest = await searchFhirResources(db, t, 'ServiceRequest', { count: 2, offset: 2 });
    assert.equal(first.total, 3);
    assert.equal(first.resources.length, 2);
    assert.equal(rest.resources.length, 1);
    assert.equal(new Set([...first.resources, ...rest.resources].map((r) => r.id)).size, 3);
    assert.deepEqual((await searchFhirResources(db, t, 'ServiceRequest', { count: 0, offset: 0 })).resources, []);
  });

  test('the RIS: a Patient needs an identifier and a name; an order its accession, description and an existing patient', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const noId = await issueOf(createPatient(db, t, patientBody('x', { identifier: [] }), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(noId.map((i) => i.expression), [['Patient.identifier']]);
    const longId = await issueOf(createPatient(db, t, patientBody('x'.repeat(65)), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.match(longId[0]?.diagnostics ?? '', /64 characters/);
    const noName = await issueOf(createPatient(db, t, patientBody('x', { name: [] }), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(noName.map((i) => i.expression), [['Patient.name']]);

    const p = (await createPatient(db, t, patientBody('MRN-R'), { nowMs: T0 })).stored;
    const noAcsn = await issueOf(createServiceRequest(db, t, orderBody(p.id, 'A', { identifier: [{ value: 'A' }] }), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(noAcsn.map((i) => [i.code, i.expression?.[0]]), [['required', 'ServiceRequest.identifier']]);
    const longAcsn = await issueOf(createServiceRequest(db, t, orderBody(p.id, 'A'.repeat(17)), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.match(longAcsn[0]?.diagnostics ?? '', /16 characters/);
    const noCode = await issueOf(createServiceRequest(db, t, orderBody(p.id, 'A', { code: { coding: [{ code: 'x' }] } }), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(noCode.map((i) => i.expression?.[0]), ['ServiceRequest.code']);
    const ghost = await issueOf(createServiceRequest(db, t, orderBody('no-such-patient', 'A'), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(ghost.map((i) => [i.code, i.expression?.[0]]), [['not-found', 'ServiceRequest.subject']]);
    const group = await issueOf(createServiceRequest(db, t, orderBody(p.id, 'A', { subject: { reference: `Group/${p.id}` } }), { nowMs: T0 }), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(group.map((i) => i.expression?.[0]), ['ServiceRequest.subject']);

    const sr = await createServiceRequest(db, t, orderBody(p.id, 'ACC-7'), { nowMs: T0 });
    assert.equal(sr.created, true);
    const dup = await issueOf(createServiceRequest(db, t, orderBody(p.id, 'ACC-7'), { nowMs: T0 }), 'ECO3D_ERR_CONFLICT');
    assert.equal(dup[0]?.code, 'duplicate');
    // If-None-Exist: the RIS retrying its POST gets the order it created, not a conflict.
    const again = await createServiceRequest(db, t, orderBody(p.id, 'ACC-7'), { nowMs: T0, ifNoneExist: { identifiers: [{ value: 'ACC-7' }] } });
    assert.deepEqual([again.created, again.stored.id], [false, sr.stored.id]);
    const pAgain = await createPatient(db, t, patientBody('MRN-R'), { nowMs: T0, ifNoneExist: { identifiers: [{ value: 'MRN-R' }] } });
    assert.deepEqual([pAgain.created, pAgain.stored.id], [false, p.id]);
  });

  test('the worklist lists the open orders with their patients, soonest first; a completed one leaves it', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const fhir = createFhirService({ db, dicomWebBaseUrl: DICOMWEB, nowMs: () => T0 });
    const p = (await createPatient(db, t, patientBody('MRN-W'), { nowMs: T0 })).stored;
    const later = (await createServiceRequest(db, t, orderBody(p.id, 'W2', { occurrenceDateTime: '2026-03-02T10:00:00Z' }), { nowMs: T0 })).stored;
    const sooner = (await createServiceRequest(db, t, orderBody(p.id, 'W1', { occurrenceDateTime: '2026-03-02T09:00:00Z' }), { nowMs: T0 })).stored;
    await createServiceRequest(db, t, orderBody(p.id, 'W3', { status: 'draft' }), { nowMs: T0 });
    const list = await fhir.listWorklist(t);
    assert.deepEqual(
      list.map((i) => i.accessionNumber),
      ['W1', 'W2'],
    );
    assert.deepEqual(list[0], {
      serviceRequestId: sooner.id,
      accessionNumber: 'W1',
      accessionSystem: 'urn:oid:1.2.3.6',
      description: 'US abdomen 3D',
      scheduledAtMs: Date.UTC(2026, 2, 2, 9),
      patient: { fhirId: p.id, patientId: 'MRN-W', patientIdSystem: 'urn:oid:1.2.3.5', name: 'Doe^Jane', displayName: 'Jane Doe', birthDate: '1980-04-05', sex: 'F' },
    });
    const done = await fhir.completeServiceRequest(t, sooner.id);
    assert.deepEqual([done.changed, done.stored.resource.status, done.stored.versionId], [true, 'completed', 2]);
    assert.equal((await fhir.completeServiceRequest(t, sooner.id)).changed, false);
    assert.deepEqual((await listWorklist(db, t)).map((i) => i.serviceRequestId), [later.id]);
    await rejectsWith(fhir.completeServiceRequest(t, 'nope'), 'ECO3D_ERR_NOT_FOUND');
    const revoked = (await createServiceRequest(db, t, orderBody(p.id, 'W4', { status: 'revoked' }), { nowMs: T0 })).stored;
    await rejectsWith(fhir.completeServiceRequest(t, revoked.id), 'ECO3D_ERR_CONFLICT');
  });

  const STUDY = '1.2.826.0.1.3680043.8.498.77';
  const usSeries = { seriesInstanceUid: `${STUDY}.1`, modality: 'US', number: 1, instances: [{ sopInstanceUid: `${STUDY}.1.1`, sopClassUid: '1.2.840.10008.5.1.4.1.1.6.2', number: 1 }] };
  const srSeries = { seriesInstanceUid: `${STUDY}.2`, modality: 'SR', number: 2, instances: [{ sopInstanceUid: `${STUDY}.2.1`, sopClassUid: '1.2.840.10008.5.1.4.1.1.88.34', number: 1 }] };
  const measurements: MeasurementForFhir[] = [
    { id: 'm-1', kind: 'distance', valueMm: 41.5, label: 'kidney length', createdBy: 'sono', createdAtMs: T0 + 60_000 },
    { id: 'm-2', kind: 'area', valueMm2: 310.25, createdBy: 'sono', createdAtMs: T0 + 90_000, bodySite: { system: 'http://snomed.info/sct', code: '18639004', display: 'Left kidney' } },
  ];

  test('on completion: ImagingStudy (DICOM UIDs, accession, order, endpoint), Observations, the order completed; idempotent', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const fhir = createFhirService({ db, dicomWebBaseUrl: DICOMWEB, nowMs: () => T0 + 100_000 });
    const p = (await createPatient(db, t, patientBody('MRN-S'), { nowMs: T0 })).stored;
    const sr = (await createServiceRequest(db, t, orderBody(p.id, 'S-1'), { nowMs: T0 })).stored;
    const keysBefore = (await outboxKeys(db, t)).length;

    const out = await fhir.publishStudy({
      tenantId: t,
      studyInstanceUid: STUDY,
      accessionNumber: 'S-1',
      startedMs: T0,
      description: 'Robotic 3D US',
      series: [usSeries],
      patient: { patientId: 'MRN-S', name: 'Doe^Jane' },
      measurements,
    });
    const study = out.imagingStudy.resource;
    assert.equal(study.id, imagingStudyIdFor(t, STUDY));
    assert.deepEqual(study.identifier?.map((i) => i.value), [`urn:oid:${STUDY}`, 'S-1']);
    assert.equal(study.identifier?.[1]?.system, 'urn:oid:1.2.3.6');
    assert.deepEqual(study.basedOn, [{ reference: `ServiceRequest/${sr.id}` }]);
    assert.deepEqual(study.subject, { reference: `Patient/${p.id}` });
    assert.deepEqual(study.endpoint, [{ reference: `Endpoint/${out.endpoint.id}` }]);
    assert.equal(out.endpoint.resource.address, DICOMWEB);
    assert.equal(out.endpoint.resource.connectionType.code, 'dicom-wado-rs');
    assert.equal(study.series?.[0]?.uid, usSeries.seriesInstanceUid);
    assert.equal(study.series?.[0]?.instance?.[0]?.uid, usSeries.instances[0]!.sopInstanceUid);
    assert.deepEqual(study.modality?.map((m) => m.code), ['US']);
    assert.equal(out.serviceRequest?.resource.status, 'completed');
    assert.deepEqual(
      out.observations.map((o) => [o.resource.status, o.resource.valueQuantity?.value, o.resource.valueQuantity?.code, o.resource.derivedFrom?.[0]?.reference]),
      [
        ['preliminary', 41.5, 'mm', `ImagingStudy/${study.id}`],
        ['preliminary', 310.25, 'mm2', `ImagingStudy/${study.id}`],
      ],
    );
    for (const r of [study, out.endpoint.resource, out.serviceRequest.resource, ...out.observations.map((o) => o.resource)]) await assertValid(r);
    // Endpoint, ImagingStudy, two Observations and the order's new version: five outbox rows.
    assert.equal(out.written.length, 5);
    assert.equal((await outboxKeys(db, t)).length, keysBefore + 5);

    // Delivered twice (an at-least-once consumer): nothing new.
    const again = await fhir.publishStudy({ tenantId: t, studyInstanceUid: STUDY, accessionNumber: 'S-1', startedMs: T0, description: 'Robotic 3D US', series: [usSeries], patient: { patientId: 'MRN-S', name: 'Doe^Jane' }, measurements });
    assert.deepEqual(again.written, []);
    assert.equal((await outboxKeys(db, t)).length, keysBefore + 5);

    // The SR series arrives later: a new version with both series, the US one kept.
    const withSr = await fhir.publishStudy({ tenantId: t, studyInstanceUid: STUDY, startedMs: T0, description: 'Robotic 3D US', series: [srSeries], patient: { patientId: 'MRN-S', name: 'Doe^Jane' }, serviceRequestId: sr.id });
    assert.deepEqual(withSr.written, [`ImagingStudy/${study.id}/_history/2`]);
    const s2 = withSr.imagingStudy.resource;
    assert.deepEqual(s2.series?.map((s) => s.uid), [usSeries.seriesInstanceUid, srSeries.seriesInstanceUid]);
    assert.deepEqual(s2.modality?.map((m) => m.code), ['US', 'SR']);
    assert.deepEqual([s2.numberOfSeries, s2.numberOfInstances], [2, 2]);
    await assertValid(s2);

    await rejectsWith(fhir.publishStudy({ tenantId: t, studyInstanceUid: STUDY, accessionNumber: 'OTHER', series: [usSeries], patient: { patientId: 'MRN-S', name: 'x' }, serviceRequestId: sr.id }), 'ECO3D_ERR_CONFLICT');
    await rejectsWith(fhir.publishStudy({ tenantId: t, studyInstanceUid: STUDY, series: [usSeries], patient: { patientId: 'MRN-S', name: 'x' }, serviceRequestId: 'nope' }), 'ECO3D_ERR_NOT_FOUND');
  });

  test('a study without an order: a Patient is made from the exam once, or the RIS patient is used', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const fhir = createFhirService({ db, dicomWebBaseUrl: DICOMWEB, nowMs: () => T0 });
    const a = await fhir.publishStudy({ tenantId: t, studyInstanceUid: `${STUDY}.9`, series: [{ ...usSeries, seriesInstanceUid: `${STUDY}.9.1`, instances: [] }], patient: { patientId: 'BED-1', name: 'Roe^Rick', sex: 'M', birthDate: '1990-01-01' } });
    const patientId = fhirResourceId(t, 'patient', 'BED-1');
    assert.deepEqual(a.imagingStudy.resource.subject, { reference: `Patient/${patientId}` });
    assert.equal(a.imagingStudy.resource.basedOn, undefined);
    const made = await readFhirResource<Patient>(db, t, 'Patient', patientId);
    assert.deepEqual([made?.resource.identifier?.[0]?.value, made?.resource.name?.[0]?.family, made?.resource.gender], ['BED-1', 'Roe', 'male']);
    await assertValid(made!.resource);
    await assertValid(a.imagingStudy.resource);
    const b = await fhir.publishStudy({ tenantId: t, studyInstanceUid: `${STUDY}.10`, series: [{ ...usSeries, seriesInstanceUid: `${STUDY}.10.1`, instances: [] }], patient: { patientId: 'BED-1', name: 'Roe^Rick' } });
    assert.deepEqual(b.imagingStudy.resource.subject, { reference: `Patient/${patientId}` });
    assert.ok(!b.written.some((w) => w.startsWith('Patient/')));
    // A patient the RIS sent is preferred.
    const ris = (await createPatient(db, t, patientBody('RIS-1'), { nowMs: T0 })).stored;
    const c = await fhir.publishStudy({ tenantId: t, studyInstanceUid: `${STUDY}.11`, series: [{ ...usSeries, seriesInstanceUid: `${STUDY}.11.1`, instances: [] }], patient: { patientId: 'RIS-1', name: 'Doe^Jane' } });
    assert.deepEqual(c.imagingStudy.resource.subject, { reference: `Patient/${ris.id}` });
  });

  test('a report: preliminary, final once signed, amended; never back to preliminary; Observations final', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    let clock = T0;
    const fhir = createFhirService({ db, dicomWebBaseUrl: DICOMWEB, nowMs: () => clock });
    await rejectsWith(fhir.publishReport({ tenantId: t, reportId: 'r1', studyInstanceUid: STUDY, status: 'preliminary', author: { username: 'sono' }, issuedMs: T0 }), 'ECO3D_ERR_NOT_FOUND');
    const p = (await createPatient(db, t, patientBody('MRN-D'), { nowMs: T0 })).stored;
    const sr = (await createServiceRequest(db, t, orderBody(p.id, 'D-1'), { nowMs: T0 })).stored;
    const study = await fhir.publishStudy({ tenantId: t, studyInstanceUid: STUDY, accessionNumber: 'D-1', startedMs: T0, series: [usSeries], patient: { patientId: 'MRN-D', name: 'Doe^Jane' } });

    const base = { tenantId: t, reportId: 'r1', studyInstanceUid: STUDY, author: { username: 'sono', display: 'S. Onographer' }, findings: 'Kidney 41.5 mm.', measurements } as const;
    clock += 1000;
    const pre = await fhir.publishReport({ ...base, status: 'preliminary', issuedMs: clock });
    const dr = pre.diagnosticReport.resource;
    assert.deepEqual([dr.status, pre.diagnosticReport.versionId], ['preliminary', 1]);
    assert.deepEqual(dr.imagingStudy, [{ reference: `ImagingStudy/${study.imagingStudy.id}` }]);
    assert.deepEqual(dr.basedOn, [{ reference: `ServiceRequest/${sr.id}` }]);
    assert.deepEqual(dr.subject, { reference: `Patient/${p.id}` });
    assert.deepEqual(dr.result?.map((r) => r.reference), pre.observations.map((o) => `Observation/${o.id}`));
    assert.equal(dr.effectiveDateTime, new Date(T0).toISOString());
    assert.ok(pre.observations.every((o) => o.resource.status === 'preliminary'));
    for (const r of [dr, ...pre.observations.map((o) => o.resource)]) await assertValid(r);

    await rejectsWith(fhir.publishReport({ ...base, status: 'final', issuedMs: clock }), 'ECO3D_ERR_BAD_REQUEST');
    clock += 1000;
    const fin = await fhir.publishReport({ ...base, status: 'final', signer: { username: 'dr-house' }, conclusion: 'Normal.', issuedMs: clock });
    assert.deepEqual([fin.diagnosticReport.resource.status, fin.diagnosticReport.versionId], ['final', 2]);
    assert.equal(fin.diagnosticReport.resource.resultsInterpreter?.[0]?.identifier?.value, 'dr-house');
    assert.ok(fin.observations.every((o) => o.resource.status === 'final' && o.versionId === 2));
    await assertValid(fin.diagnosticReport.resource);
    await rejectsWith(fhir.publishReport({ ...base, status: 'preliminary', issuedMs: clock }), 'ECO3D_ERR_CONFLICT');
    clock += 1000;
    const amended = await fhir.publishReport({ ...base, status: 'amended', signer: { username: 'dr-house' }, conclusion: 'Normal; cyst 3 mm.', issuedMs: clock });
    assert.deepEqual([amended.diagnosticReport.resource.status, amended.diagnosticReport.versionId], ['amended', 3]);
    // The measurements did not change with the amendment: no new Observation versions.
    assert.ok(!amended.written.some((w) => w.startsWith('Observation/')));
    await assertValid(amended.diagnosticReport.resource);
    const v1 = await readFhirResource<DiagnosticReport>(db, t, 'DiagnosticReport', dr.id!, 1);
    assert.equal(v1?.resource.status, 'preliminary');
    const obs = await readFhirResource<Observation>(db, t, 'Observation', pre.observations[0]!.id);
    assert.equal(obs?.resource.status, 'final');
    assert.equal((await readFhirResource<ImagingStudy>(db, t, 'ImagingStudy', study.imagingStudy.id))?.versionId, 1);
  });

  test('consent: the bedside decisions as Consent resources; a FHIR decision goes through the same store', async () => {
    const db = ctx.db;
    const t = await tenant(db);
    const by = { username: 'nurse', accountId: 'acc-nurse' };
    assert.deepEqual(await consentsForPatient(db, t, 'MRN-C'), []);
    // Recorded at the bedside (store/consents.ts), before the RIS ever sent the Patient.
    const yes = await recordConsent(db, { tenantId: t, patientId: 'MRN-C', decision: 'yes', recordedBy: 'nurse', recordedByAccountId: 'acc-nurse' });
    const [only] = await consentsForPatient(db, t, 'MRN-C');
    assert.deepEqual([only?.id, only?.status, only?.provision?.type], [yes.id, 'active', 'permit']);
    assert.deepEqual(only?.patient, { type: 'Patient', identifier: { value: 'MRN-C' } });
    await assertValid(only);

    const p = (await createPatient(db, t, patientBody('MRN-C'), { nowMs: T0 })).stored;
    const consent: Consent = { ...only, status: 'inactive', patient: { reference: `Patient/${p.id}` } };
    delete consent.id;
    const revoked = await recordFhirConsent(db, t, consent, by);
    assert.deepEqual([revoked.status, revoked.patient?.reference], ['inactive', `Patient/${p.id}`]);
    const all = await consentsForPatient(db, t, 'MRN-C');
    assert.deepEqual(
      all.map((c) => [c.status, c.provision?.type]),
      [
        ['inactive', 'deny'],
        ['inactive', 'permit'],
      ],
    );
    assert.equal(all[1]?.provision?.period?.end, revoked.dateTime);
    for (const c of all) await assertValid(c);
    assert.deepEqual(await readConsent(db, t, yes.id), all[1]);
    assert.equal(await readConsent(db, await tenant(db), yes.id), undefined);

    const denied = await recordFhirConsent(db, t, { ...consent, status: 'active', provision: { type: 'deny' }, patient: { identifier: { value: 'MRN-C' } } }, by);
    assert.deepEqual([denied.status, denied.provision?.type], ['active', 'deny']);
    const ghost = await issueOf(recordFhirConsent(db, t, { ...consent, patient: { reference: 'Patient/nope' } }, by), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(ghost.map((i) => i.expression?.[0]), ['Consent.patient']);
    const nobody = await issueOf(recordFhirConsent(db, t, { ...consent, patient: undefined }, by), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(nobody.map((i) => i.code), ['required']);
    const draft = await issueOf(recordFhirConsent(db, t, { ...consent, status: 'draft' }, by), 'ECO3D_ERR_INVALID_RESOURCE');
    assert.deepEqual(draft.map((i) => i.expression?.[0]), ['Consent.status']);
  });
});

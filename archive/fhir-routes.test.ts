// FHIR R4 at /fhir through fastify's inject(), on both engines, with a stub principal hook. Every
// body that comes back (resources, Bundles, OperationOutcomes, the CapabilityStatement) passes
// both official validators.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import type { Bundle, CapabilityStatement, Consent, OperationOutcome, Patient, Resource, ServiceRequest } from '../protocols/index.ts';
import { ensureTenant, type Database } from '../store/index.ts';
import { forEachDatabase } from '../store/testing.ts';
import type { FhirService } from './fhir-store.ts';
import { FHIR_RESOURCES, registerFhir, type FhirAuditEntry, type FhirPrincipal } from './fhir-routes.ts';
import { createFhirValidator } from './fhir-validate.ts';

const BASE = 'http://eco3d.test/fhir';
const DICOMWEB = 'http://eco3d.test/dicom-web';
const validator = createFhirValidator({ inWorker: false });

const account = (username: string, role: string, tenantId = 'hosp-a'): FhirPrincipal => ({ accountId: `acc-${username}`, username, tenantId, role, kind: 'session', scopes: null });
const token = (id: string, scopes: string[], tenantId = 'hosp-a'): FhirPrincipal => ({ accountId: `token:${id}`, username: `token:${id}`, tenantId, role: 'service', kind: 'token', scopes });
const PRINCIPALS: Record<string, FhirPrincipal> = {
  admin: account('admin', 'tenant-admin'),
  sono: account('sono', 'sonographer'),
  doc: account('doc', 'physician'),
  bed: account('bed', 'bedside'),
  platform: account('root', 'platform-admin', 'platform'),
  otherAdmin: account('admin-b', 'tenant-admin', 'hosp-b'),
  ris: token('ris', ['fhir:write']),
  reader: token('reader', ['fhir:read']),
  live: token('live', ['live:video']),
};

const ACSN = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] };
const MR = { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] };
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

forEachDatabase('FHIR REST at /fhir', (ctx) => {
  let app: FastifyInstance;
  let fhir: FhirService;
  const audits: FhirAuditEntry[] = [];

  before(async () => {
    await ensureTenant(ctx.db, { id: 'hosp-a', name: 'A' });
    await ensureTenant(ctx.db, { id: 'hosp-b', name: 'B' });
    app = Fastify();
    app.decorateRequest('principal', null);
    app.addHook('onRequest', async (req) => {
      const as = req.headers['x-test-as'];
      (req as unknown as { principal: FhirPrincipal | null }).principal = typeof as === 'string' ? (PRINCIPALS[as] ?? null) : null;
    });
    fhir = await registerFhir(app, { db: ctx.db, baseUrl: `${BASE}/`, dicomWebBaseUrl: DICOMWEB, validator, audit: async (e) => void audits.push(e), nowMs: () => Date.UTC(2026, 3, 1) });
    await app.ready();
  });
  after(() => app.close());

  interface Call {
    as?: string;
    body?: unknown;
    headers?: Record<string, string>;
  }
  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, c: Call = {}): Promise<LightMyRequestResponse> =>
    app.inject({
      method,
      url: `/fhir${url}`,
      headers: {
        ...(c.as === undefined ? {} : { 'x-test-as': c.as }),
        ...(c.body === undefined ? {} : { 'content-type': 'application/fhir+json' }),
        ...c.headers,
      },
      ...(c.body === undefined ? {} : { payload: typeof c.body === 'string' ? c.body : JSON.stringify(c.body) }),
    });

  /** The body, after checking the status, the FHIR media type and both validators. */
  async function fhirBody<R extends Resource>(res: LightMyRequestResponse, status: number, resourceType: R['resourceType']): Promise<R> {
    assert.equal(res.statusCode, status, res.body);
    assert.match(String(res.headers['content-type']), /^application\/fhir\+json; charset=utf-8$/);
    const body = res.json<R>();
    assert.equal(body.resourceType, resourceType, res.body);
    assert.deepEqual(await validator.validate(body), [], `${resourceType} is not valid FHIR: ${res.body}`);
    return body;
  }
  const outcome = (res: LightMyRequestResponse, status: number): Promise<OperationOutcome> => fhirBody<OperationOutcome>(res, status, 'OperationOutcome');
  const notARoute = async (res: LightMyRequestResponse): Promise<boolean> =>
    res.statusCode === 404 && (await outcome(res, 404)).issue[0]?.diagnostics?.startsWith('no FHIR interaction') === true;

  async function postPatient(mrn: string, as = 'admin'): Promise<Patient> {
    return fhirBody<Patient>(await call('POST', '/Patient', { as, body: patientBody(mrn) }), 201, 'Patient');
  }

  test('GET /metadata: a valid CapabilityStatement naming exactly what the routes serve', async () => {
    const cs = await fhirBody<CapabilityStatement>(await call('GET', '/metadata'), 200, 'CapabilityStatement');
    assert.equal(cs.fhirVersion, '4.0.1');
    assert.equal(cs.implementation?.url, BASE);
    const listed = cs.rest?.[0]?.resource ?? [];
    assert.deepEqual(listed.map((r) => r.type), ['Patient', 'ServiceRequest', 'ImagingStudy', 'DiagnosticReport', 'Observation', 'Endpoint', 'Consent']);
    for (const r of listed) {
      const codes = new Set((r.interaction ?? []).map((i) => i.code));
      const probes: Array<[string, 'GET' | 'POST' | 'PUT' | 'DELETE', string]> = [
        ['read', 'GET', `/${r.type}/x1`],
        ['vread', 'GET', `/${r.type}/x1/_history/1`],
        ['search-type', 'GET', `/${r.type}?_count=1`],
        ['create', 'POST', `/${r.type}`],
        ['update', 'PUT', `/${r.type}/x1`],
        ['delete', 'DELETE', `/${r.type}/x1`],
        ['history-instance', 'GET', `/${r.type}/x1/_history`],
      ];
      for (const [code, method, url] of probes) {
        const res = await call(method, url, { as: 'admin', ...(method === 'POST' || method === 'PUT' ? { body: { resourceType: r.type } } : {}) });
        assert.equal(!(await notARoute(res)), codes.has(code as never), `${r.type} ${code}: listed ${codes.has(code as never)}, answered ${res.statusCode} ${res.body}`);
      }
      // Each listed search parameter is applied (it shows in the self link); anything else is ignored, or refused when strict.
      if (codes.has('search-type')) {
        for (const p of r.searchParam ?? []) {
          const value = p.name === 'patient' ? 'Patient/x1' : 'x1';
          const bundle = await fhirBody<Bundle>(await call('GET', `/${r.type}?${p.name}=${value}${r.type === 'Consent' && p.name !== 'patient' ? '&patient=x1' : ''}`, { as: 'admin' }), 200, 'Bundle');
          assert.match(bundle.link?.[0]?.url ?? '', new RegExp(`[?&]${p.name}=`), `${r.type}?${p.name}`);
        }
        const q = r.type === 'Consent' ? '?patient=x1&color=blue' : '?color=blue';
        const lenient = await fhirBody<Bundle>(await call('GET', `/${r.type}${q}`, { as: 'admin' }), 200, 'Bundle');
        assert.doesNotMatch(lenient.link?.[0]?.url ?? '', /color/);
        await outcome(await call('GET', `/${r.type}${q}`, { as: 'admin', headers: { prefer: 'handling=strict' } }), 400);
      }
    }
    assert.equal(FHIR_RESOURCES.length, listed.length);
    assert.equal(await notARoute(await call('GET', '/Practitioner/x1', { as: 'admin' })), true);
  });

  test('Patient: create, read, vread, search; Location, ETag, audit', async () => {
    audits.length = 0;
    const res = await call('POST', '/Patient', { as: 'admin', body: { ...patientBody('MRN-P1'), id: 'mine' } });
    const p = await fhirBody<Patient>(res, 201, 'Patient');
    assert.notEqual(p.id, 'mine');
    assert.equal(res.headers.location, `${BASE}/Patient/${p.id}/_history/1`);
    assert.equal(res.headers.etag, 'W/"1"');
    const read = await call('GET', `/Patient/${p.id}`, { as: 'bed' });
    assert.deepEqual(await fhirBody<Patient>(read, 200, 'Patient'), p);
    assert.equal(read.headers['last-modified'], new Date(Date.UTC(2026, 3, 1)).toUTCString());
    assert.deepEqual(await fhirBody<Patient>(await call('GET', `/Patient/${p.id}/_history/1`, { as: 'sono' }), 200, 'Patient'), p);
    await outcome(await call('GET', `/Patient/${p.id}/_history/2`, { as: 'sono' }), 404);
    const bundle = await fhirBody<Bundle>(await call('GET', '/Patient?identifier=urn:oid:1.2.3.5|MRN-P1', { as: 'doc' }), 200, 'Bundle');
    assert.equal(bundle.total, 1);
    assert.equal(bundle.entry?.[0]?.fullUrl, `${BASE}/Patient/${p.id}`);
    assert.deepEqual(
      audits.map((a) => [a.action, a.actor, a.target]),
      [
        ['fhir.create', 'admin', `Patient/${p.id}`],
        ['fhir.read', 'bed', `Patient/${p.id}`],
        ['fhir.read', 'sono', `Patient/${p.id}/_history/1`],
        ['fhir.search', 'doc', 'Patient'],
      ],
    );
    assert.deepEqual(audits[3]?.detail, { params: { identifier: 'urn:oid:1.2.3.5|MRN-P1' }, total: 1 });
    assert.ok(audits.every((a) => a.tenantId === 'hosp-a'));
    // If-None-Exist: the same Patient, 200, nothing created.
    const again = await call('POST', '/Patient', { as: 'admin', body: patientBody('MRN-P1'), headers: { 'if-none-exist': 'identifier=urn:oid:1.2.3.5|MRN-P1' } });
    assert.equal((await fhirBody<Patient>(again, 200, 'Patient')).id, p.id);
  });

  test('the worklist: ServiceRequest create, read, search by status, patient and identifier', async () => {
    const p = await postPatient('MRN-W1');
    const other = await postPatient('MRN-W2');
    const res = await call('POST', '/ServiceRequest', { as: 'ris', body: orderBody(p.id!, 'W-1') });
    const sr = await fhirBody<ServiceRequest>(res, 201, 'ServiceRequest');
    await fhirBody<ServiceRequest>(await call('POST', '/ServiceRequest', { as: 'ris', body: orderBody(p.id!, 'W-2', { status: 'on-hold' }) }), 201, 'ServiceRequest');
    await fhirBody<ServiceRequest>(await call('POST', '/ServiceRequest', { as: 'ris', body: orderBody(other.id!, 'W-3') }), 201, 'ServiceRequest');
    assert.deepEqual(await fhirBody<ServiceRequest>(await call('GET', `/ServiceRequest/${sr.id}`, { as: 'bed' }), 200, 'ServiceRequest'), sr);
    const search = async (q: string): Promise<string[]> =>
      ((await fhirBody<Bundle>(await call('GET', `/ServiceRequest?${q}`, { as: 'bed' }), 200, 'Bundle')).entry ?? []).map((e) => (e.resource as ServiceRequest).identifier?.[0]?.value ?? '').sort();
    assert.deepEqual(await search(`status=active&patient=${p.id}`), ['W-1']);
    assert.deepEqual(await search(`status=active,on-hold&patient=Patient/${p.id}`), ['W-1', 'W-2']);
    assert.deepEqual(await search(`patient=${encodeURIComponent(`${BASE}/Patient/${other.id}`)}`), ['W-3']);
    assert.deepEqual(await search('identifier=urn:oid:1.2.3.6|W-2'), ['W-2']);
    assert.deepEqual(await search('identifier=W-1,W-3&status=active'), ['W-1', 'W-3']);
    // The server's view of the same orders.
    const list = await fhir.listWorklist('hosp-a');
    const mine = list.filter((i) => i.patient.fhirId === p.id);
    assert.deepEqual(mine.map((i) => [i.accessionNumber, i.patient.patientId, i.patient.name, i.description]), [['W-1', 'MRN-W1', 'Doe^Jane', 'US abdomen 3D']]);
    // POST _search (form-encoded) answers as GET.
    const form = await call('POST', '/ServiceRequest/_search', { as: 'bed', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `status=active&patient=${p.id}` });
    assert.deepEqual((await fhirBody<Bundle>(form, 200, 'Bundle')).entry?.map((e) => e.resource?.id), [sr.id]);
    // Paging.
    const page1 = await fhirBody<Bundle>(await call('GET', '/ServiceRequest?identifier=W-1,W-2,W-3&_count=2', { as: 'bed' }), 200, 'Bundle');
    assert.equal(page1.total, 3);
    assert.equal(page1.entry?.length, 2);
    const next = page1.link?.find((l) => l.relation === 'next')?.url ?? '';
    const page2 = await fhirBody<Bundle>(await call('GET', next.slice(BASE.length), { as: 'bed' }), 200, 'Bundle');
    assert.equal(page2.entry?.length, 1);
    assert.ok(!page1.entry?.some((e) => e.resource?.id === page2.entry?.[0]?.resource?.id));
  });

  test('bad input answers an OperationOutcome with the right status and details', async () => {
    const p = await postPatient('MRN-E1');
    // 400: not JSON, not an object, not this type.
    const notJson = await outcome(await call('POST', '/Patient', { as: 'admin', body: '{"resourceType": "Patient",' }), 400);
    assert.deepEqual([notJson.issue[0]?.severity, notJson.issue[0]?.code], ['error', 'structure']);
    assert.equal(notJson.issue[0]?.details?.coding?.[0]?.code, 'ECO3D_ERR_BAD_REQUEST');
    await outcome(await call('POST', '/Patient', { as: 'admin', body: '[1]' }), 400);
    const wrongType = await outcome(await call('POST', '/Patient', { as: 'admin', body: { resourceType: 'Observation' } }), 400);
    assert.deepEqual(wrongType.issue[0]?.expression, ['resourceType']);
    // 422: the validators (the JSON schema knows gender's codes; the StructureDefinitions ServiceRequest.intent 1..1).
    const gender = await outcome(await call('POST', '/Patient', { as: 'admin', body: patientBody('MRN-E2', { gender: 'femme' as never }) }), 422);
    assert.deepEqual(gender.issue.map((i) => [i.severity, i.code, i.expression?.[0]]), [['error', 'code-invalid', 'Patient.gender']]);
    assert.match(gender.issue[0]?.diagnostics ?? '', /female/);
    const { intent: _intent, ...noIntent } = orderBody(p.id!, 'E-1');
    const intent = await outcome(await call('POST', '/ServiceRequest', { as: 'admin', body: noIntent }), 422);
    assert.deepEqual(intent.issue.map((i) => i.expression?.[0]), ['ServiceRequest.intent']);
    // 422: our own rules (accession number, existing subject).
    const noAcsn = await outcome(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody(p.id!, 'E-2', { identifier: [{ value: 'E-2' }] }) }), 422);
    assert.deepEqual(noAcsn.issue.map((i) => [i.code, i.expression?.[0]]), [['required', 'ServiceRequest.identifier']]);
    assert.match(noAcsn.issue[0]?.diagnostics ?? '', /ACSN/);
    const ghost = await outcome(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody('no-such', 'E-3') }), 422);
    assert.deepEqual(ghost.issue.map((i) => [i.code, i.expression?.[0]]), [['not-found', 'ServiceRequest.subject']]);
    // 409: an accession number already taken.
    await fhirBody(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody(p.id!, 'E-4') }), 201, 'ServiceRequest');
    assert.equal((await outcome(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody(p.id!, 'E-4') }), 409)).issue[0]?.code, 'duplicate');
    // 404, 415, 406.
    assert.equal((await outcome(await call('GET', '/Patient/unknown-id', { as: 'admin' }), 404)).issue[0]?.code, 'not-found');
    await outcome(await call('GET', '/Patient/bad%20id!', { as: 'admin' }), 404);
    await outcome(await call('POST', '/Patient', { as: 'admin', body: JSON.stringify(patientBody('X')), headers: { 'content-type': 'text/plain' } }), 415);
    await outcome(await call('POST', '/Patient', { as: 'admin', body: '<Patient xmlns="http://hl7.org/fhir"/>', headers: { 'content-type': 'application/fhir+xml' } }), 415);
    const untyped = await app.inject({ method: 'POST', url: '/fhir/Patient', headers: { 'x-test-as': 'admin' }, payload: JSON.stringify(patientBody('X')) });
    await outcome(untyped, 415);
    const huge = await call('POST', '/Patient', { as: 'admin', body: { ...patientBody('X'), text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(1_100_000)}</div>` } } });
    assert.equal((await outcome(huge, 413)).issue[0]?.code, 'too-costly');
    await outcome(await call('GET', `/Patient/${p.id}`, { as: 'admin', headers: { accept: 'application/fhir+xml' } }), 406);
    await outcome(await call('GET', `/Patient/${p.id}?_format=xml`, { as: 'admin' }), 406);
    const modifier = await outcome(await call('GET', '/ServiceRequest?status:not=x', { as: 'admin' }), 400);
    assert.equal(modifier.issue[0]?.code, 'not-supported');
    await outcome(await call('GET', '/Patient?_count=-1', { as: 'admin' }), 400);
    await outcome(await call('GET', '/Consent', { as: 'admin' }), 400);
  });

  test('content negotiation: fhir+json by default and for */*, application/json when that is what is accepted', async () => {
    const p = await postPatient('MRN-N1');
    for (const accept of ['*/*', 'application/fhir+json', 'application/*', 'application/fhir+xml;q=0.9, application/fhir+json']) {
      await fhirBody(await call('GET', `/Patient/${p.id}`, { as: 'admin', headers: { accept } }), 200, 'Patient');
    }
    const json = await call('GET', `/Patient/${p.id}`, { as: 'admin', headers: { accept: 'application/json' } });
    assert.equal(json.statusCode, 200);
    assert.equal(json.headers['content-type'], 'application/json; charset=utf-8');
    // A body sent as application/json is taken too.
    const res = await call('POST', '/Patient', { as: 'admin', body: JSON.stringify(patientBody('MRN-N2')), headers: { 'content-type': 'application/json; charset=utf-8' } });
    assert.equal(res.statusCode, 201, res.body);
  });

  test('who may do what: clinicians read, bedside the worklist, the RIS writes; tokens by scope; tenants apart', async () => {
    const p = await postPatient('MRN-A1');
    const sr = await fhirBody<ServiceRequest>(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody(p.id!, 'A-1') }), 201, 'ServiceRequest');
    const published = await fhir.publishStudy({ tenantId: 'hosp-a', studyInstanceUid: '1.2.826.0.1.3680043.8.498.501', accessionNumber: 'A-1', series: [{ seriesInstanceUid: '1.2.826.0.1.3680043.8.498.501.1', modality: 'US', instances: [] }], patient: { patientId: 'MRN-A1', name: 'Doe^Jane' } });
    const study = `/ImagingStudy/${published.imagingStudy.id}`;
    const status = async (as: string | undefined, method: 'GET' | 'POST', url: string, body?: unknown): Promise<number> => (await call(method, url, { ...(as === undefined ? {} : { as }), ...(body === undefined ? {} : { body }) })).statusCode;
    const unauth = await outcome(await call('GET', `/Patient/${p.id}`), 401);
    assert.equal(unauth.issue[0]?.code, 'login');
    for (const as of ['sono', 'doc', 'admin', 'reader']) {
      assert.equal(await status(as, 'GET', study), 200, as);
      assert.equal(await status(as, 'GET', `/ServiceRequest/${sr.id}`), 200, as);
    }
    assert.equal(await status('bed', 'GET', `/ServiceRequest/${sr.id}`), 200);
    assert.equal(await status('bed', 'GET', `/Patient?identifier=MRN-A1`), 200);
    assert.equal((await outcome(await call('GET', study, { as: 'bed' }), 403)).issue[0]?.code, 'forbidden');
    assert.equal(await status('ris', 'GET', study), 403);
    assert.equal(await status('live', 'GET', study), 403);
    assert.equal(await status('platform', 'GET', study), 403);
    for (const as of ['sono', 'doc', 'bed', 'reader', 'live']) assert.equal(await status(as, 'POST', '/Patient', patientBody(`MRN-${as}`)), 403, as);
    assert.equal(await status('ris', 'POST', '/Patient', patientBody('MRN-ris')), 201);
    // Another hospital sees none of it.
    assert.equal(await status('otherAdmin', 'GET', `/Patient/${p.id}`), 404);
    assert.equal(await status('otherAdmin', 'GET', study), 404);
    assert.equal((await fhirBody<Bundle>(await call('GET', '/Patient?identifier=MRN-A1', { as: 'otherAdmin' }), 200, 'Bundle')).total, 0);
    // Nor may it reference our patient in an order of its own.
    assert.equal(await status('otherAdmin', 'POST', '/ServiceRequest', orderBody(p.id!, 'B-1')), 422);
  });

  test('the study, its Endpoint, Observations and report, as published on completion', async () => {
    const p = await postPatient('MRN-S1');
    const sr = await fhirBody<ServiceRequest>(await call('POST', '/ServiceRequest', { as: 'admin', body: orderBody(p.id!, 'S-1') }), 201, 'ServiceRequest');
    const uid = '1.2.826.0.1.3680043.8.498.601';
    const measurements = [{ id: 'm-s1', kind: 'distance' as const, valueMm: 12.5, createdBy: 'sono', createdAtMs: Date.UTC(2026, 3, 1) }];
    const out = await fhir.publishStudy({
      tenantId: 'hosp-a',
      studyInstanceUid: uid,
      accessionNumber: 'S-1',
      series: [{ seriesInstanceUid: `${uid}.1`, modality: 'US', instances: [{ sopInstanceUid: `${uid}.1.1`, sopClassUid: '1.2.840.10008.5.1.4.1.1.6.2' }] }],
      patient: { patientId: 'MRN-S1', name: 'Doe^Jane' },
      measurements,
    });
    await fhir.publishReport({ tenantId: 'hosp-a', reportId: 'rep-s1', studyInstanceUid: uid, status: 'final', author: { username: 'sono' }, signer: { username: 'doc' }, issuedMs: Date.UTC(2026, 3, 2), conclusion: 'Normal.', measurements });
    const found = await fhirBody<Bundle>(await call('GET', `/ImagingStudy?identifier=${encodeURIComponent(`urn:dicom:uid|urn:oid:${uid}`)}`, { as: 'doc' }), 200, 'Bundle');
    assert.deepEqual(found.entry?.map((e) => e.resource?.id), [out.imagingStudy.id]);
    const byAccession = await fhirBody<Bundle>(await call('GET', `/ImagingStudy?identifier=S-1&patient=${p.id}`, { as: 'doc' }), 200, 'Bundle');
    assert.equal(byAccession.total, 1);
    const endpoint = await fhirBody<Resource & { address: string }>(await call('GET', `/Endpoint/${out.endpoint.id}`, { as: 'doc' }), 200, 'Endpoint');
    assert.equal(endpoint.address, DICOMWEB);
    const reports = await fhirBody<Bundle>(await call('GET', `/DiagnosticReport?patient=${p.id}&status=final`, { as: 'doc' }), 200, 'Bundle');
    assert.equal(reports.total, 1);
    const obs = await fhirBody<Bundle>(await call('GET', `/Observation?patient=Patient/${p.id}`, { as: 'sono' }), 200, 'Bundle');
    assert.equal(obs.total, 1);
    const order = await fhirBody<ServiceRequest>(await call('GET', `/ServiceRequest/${sr.id}`, { as: 'admin' }), 200, 'ServiceRequest');
    assert.equal(order.status, 'completed');
    await fhirBody(await call('GET', `/ServiceRequest/${sr.id}/_history/1`, { as: 'admin' }), 200, 'ServiceRequest');
  });

  test('Consent: the bedside records and reads research consent; revoking leaves no active consent', async () => {
    const p = await postPatient('MRN-C1');
    audits.length = 0;
    const consent = (status: 'active' | 'inactive', type?: 'permit' | 'deny', patient: Consent['patient'] = { reference: `Patient/${p.id}` }): Consent => ({
      resourceType: 'Consent',
      status,
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'research' }] },
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentcategorycodes', code: 'research' }] }],
      patient,
      dateTime: '2026-04-01T08:00:00Z',
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: type === 'permit' ? 'OPTIN' : 'OPTOUT' }] },
      ...(type === undefined ? {} : { provision: { type } }),
    });
    const res = await call('POST', '/Consent', { as: 'bed', body: consent('active', 'permit') });
    const yes = await fhirBody<Consent>(res, 201, 'Consent');
    assert.deepEqual([yes.status, yes.provision?.type, yes.patient?.reference], ['active', 'permit', `Patient/${p.id}`]);
    assert.equal(res.headers.location, `${BASE}/Consent/${yes.id}`);
    assert.deepEqual(audits.map((a) => [a.action, a.actor, a.target]), [['fhir.create', 'bed', `Consent/${yes.id}`]]);
    const active = async (q: string): Promise<Bundle> => fhirBody<Bundle>(await call('GET', `/Consent?${q}&status=active`, { as: 'bed' }), 200, 'Bundle');
    assert.deepEqual((await active(`patient=${p.id}`)).entry?.map((e) => e.resource?.id), [yes.id]);
    assert.deepEqual((await active('patient:identifier=MRN-C1')).entry?.map((e) => e.resource?.id), [yes.id]);
    assert.deepEqual(await fhirBody<Consent>(await call('GET', `/Consent/${yes.id}`, { as: 'doc' }), 200, 'Consent'), yes);
    // Revoked (by the admin this time): inactive, and the patient has no active research consent left.
    await fhirBody<Consent>(await call('POST', '/Consent', { as: 'admin', body: consent('inactive', undefined, { identifier: { value: 'MRN-C1' } }) }), 201, 'Consent');
    assert.equal((await active(`patient=${p.id}`)).total, 0);
    const all = await fhirBody<Bundle>(await call('GET', `/Consent?patient=${p.id}`, { as: 'bed' }), 200, 'Bundle');
    assert.deepEqual(all.entry?.map((e) => (e.resource as Consent).status), ['inactive', 'inactive']);
    // The server reads the same records.
    assert.equal((await fhir.consentsForPatient('hosp-a', 'MRN-C1')).length, 2);
    // Who may record it: bedside, tenant admin, a fhir:write token; not the sonographer.
    assert.equal((await call('POST', '/Consent', { as: 'sono', body: consent('active', 'deny') })).statusCode, 403);
    assert.equal((await call('POST', '/Consent', { as: 'ris', body: consent('active', 'deny') })).statusCode, 201);
    const treatment = { ...consent('active', 'permit'), scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'treatment' }] } };
    assert.deepEqual((await outcome(await call('POST', '/Consent', { as: 'bed', body: treatment }), 422)).issue.map((i) => i.expression?.[0]), ['Consent.scope']);
    const { policyRule: _rule, ...noRule } = consent('active', 'permit');
    const ppc1 = await outcome(await call('POST', '/Consent', { as: 'bed', body: noRule }), 422);
    assert.match(ppc1.issue[0]?.diagnostics ?? '', /ppc-1/);
    await outcome(await call('GET', '/Consent/no-such', { as: 'bed' }), 404);
  });

  test('unknown paths under /fhir are OperationOutcomes too', async () => {
    const o = await outcome(await call('GET', '/Patient/x1/$everything', { as: 'admin' }), 404);
    assert.equal(o.issue[0]?.details?.coding?.[0]?.code, 'ECO3D_ERR_NOT_FOUND');
    await outcome(await call('GET', '/', { as: 'admin' }), 404);
  });
});

test('by default POSTs are validated in a worker: loading both validators does not stall the event loop', async () => {
  const app = Fastify();
  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req) => {
    (req as unknown as { principal: FhirPrincipal | null }).principal = PRINCIPALS.admin!;
  });
  // The request is refused before any database access.
  const noDatabase = {} as Database;
  await registerFhir(app, { db: noDatabase, baseUrl: BASE, dicomWebBaseUrl: DICOMWEB, audit: async () => {} });
  await app.ready();
  // The longest gap between ticks of a 10 ms timer while the first POST loads the validators.
  let last = performance.now();
  let maxGapMs = 0;
  const ticker = setInterval(() => {
    const t = performance.now();
    maxGapMs = Math.max(maxGapMs, t - last);
    last = t;
  }, 10);
  const res = await app
    .inject({ method: 'POST', url: '/fhir/Patient', headers: { 'content-type': 'application/fhir+json' }, payload: JSON.stringify(patientBody('MRN-X', { gender: 'femme' as never })) })
    .finally(() => clearInterval(ticker));
  assert.equal(res.statusCode, 422, res.body);
  assert.deepEqual(
    res.json<OperationOutcome>().issue.map((i) => i.expression?.[0]),
    ['Patient.gender'],
  );
  // Loading in-process blocks the loop for over 2 s here (the JSON schema compiles synchronously);
  // in the worker the loop stays responsive.
  assert.ok(maxGapMs < 1000, `event loop stalled ${Math.round(maxGapMs)} ms`);
  await app.close();
});

// From the RIS's order to the signed report, through a real `eco3d start` server (simulated
// robot): the RIS posts a Patient and a ServiceRequest over FHIR; the bedside picks it from the
// worklist; a sweep completes; the study appears over DICOMweb (QIDO, WADO) with the order's
// accession number, dciodvfy-clean; FHIR has the ImagingStudy (same UIDs) and the order is
// completed; a physician measures, drafts, signs: the DiagnosticReport is final and a verified SR
// joins the study; an amendment makes it amended. Also the bad inputs of the report API.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getMultipartBoundary, parseMultipart } from '@mjackson/multipart-parser/node';
import { databasesUnderTest } from '../store/testing.ts';
import { ADMIN_PASSWORD, DEMO_PASSWORD, errorCode, randomId, startTestServer, type TestServer } from './harness.ts';

const ENHANCED_US_VOLUME = '1.2.840.10008.5.1.4.1.1.6.2';
const US_MULTIFRAME = '1.2.840.10008.5.1.4.1.1.3.1';
const COMPREHENSIVE_3D_SR = '1.2.840.10008.5.1.4.1.1.88.34';

/** A DICOM JSON attribute's first value. */
const first = (ds: Record<string, { Value?: unknown[] }>, tag: string): unknown => ds[tag]?.Value?.[0];

for (const database of databasesUnderTest()) describe(`a study from order to signed report (${database})`, () => {
  let t: TestServer;
  const tmp = mkdtempSync(join(tmpdir(), 'eco3d-study-e2e-'));
  before(async () => {
    t = await startTestServer({}, database);
  });
  after(async () => {
    await t?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  const json = async (path: string, token: string, init: { method?: string; body?: unknown; accept?: string; contentType?: string } = {}) => {
    const res = await fetch(`${t.url}${path}`, {
      method: init.method ?? 'GET',
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.accept === undefined ? {} : { accept: init.accept }),
        ...(init.body === undefined ? {} : { 'content-type': init.contentType ?? 'application/json' }),
      },
      ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
    });
    const text = await res.text();
    return { status: res.status, body: text === '' ? null : (JSON.parse(text)) };
  };
  const dciodvfyClean = (bytes: Uint8Array, name: string): void => {
    const file = join(tmp, name);
    writeFileSync(file, bytes);
    const r = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
    const lines = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('Error'));
    assert.deepEqual(lines, [], `dciodvfy ${name}`);
    assert.equal(r.status, 0, `dciodvfy ${name} exit code`);
  };
  const wado = async (path: string, token: string): Promise<Uint8Array[]> => {
    const res = await fetch(`${t.url}${path}`, { headers: { authorization: `Bearer ${token}`, accept: 'multipart/related; type="application/dicom"' } });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    const boundary = getMultipartBoundary(res.headers.get('content-type') ?? '');
    assert.ok(boundary !== null, 'a multipart answer');
    return [...parseMultipart(Buffer.from(await res.arrayBuffer()), { boundary, maxFileSize: 1 << 30 })].map((p) => p.bytes);
  };

  test('order → worklist → sweep → DICOMweb + FHIR → measure → sign → amend', { timeout: 300_000 }, async () => {
    const admin = await t.login('admin', ADMIN_PASSWORD);
    const tag = randomId();
    const create = async (username: string, role: string): Promise<string> => {
      const r = await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId: 'demo', username, role, password: DEMO_PASSWORD } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return t.login(username, DEMO_PASSWORD);
    };
    const physician = await create(`dr-${tag}`, 'physician');
    const tenantAdmin = await create(`ta-${tag}`, 'tenant-admin');
    const sonographer = await t.login('demo-sonographer', DEMO_PASSWORD);
    const bedside = await t.login('demo-bedside', DEMO_PASSWORD);
    const minted = await t.api('/api/auth/tokens', { method: 'POST', token: tenantAdmin, body: { name: 'ris', scopes: ['fhir:write', 'fhir:read'] } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const ris = minted.body.token as string;

    // The RIS orders the exam.
    const accession = `A${tag}`.slice(0, 16);
    const patient = await json('/fhir/Patient', ris, {
      method: 'POST',
      contentType: 'application/fhir+json',
      body: { resourceType: 'Patient', identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'urn:oid:1.2.3.4', value: `P-${tag}` }], name: [{ family: 'Rossi', given: ['Maria'] }], birthDate: '1970-04-01', gender: 'female' },
    });
    assert.equal(patient.status, 201, JSON.stringify(patient.body));
    const order = await json('/fhir/ServiceRequest', ris, {
      method: 'POST',
      contentType: 'application/fhir+json',
      body: {
        resourceType: 'ServiceRequest',
        status: 'active',
        intent: 'order',
        subject: { reference: `Patient/${patient.body.id as string}` },
        identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, system: 'urn:oid:1.2.3.5', value: accession }],
        code: { text: 'Robotic 3D US abdomen' },
      },
    });
    assert.equal(order.status, 201, JSON.stringify(order.body));
    // An invalid resource answers an OperationOutcome.
    const invalid = await json('/fhir/ServiceRequest', ris, { method: 'POST', contentType: 'application/fhir+json', body: { resourceType: 'ServiceRequest', status: 'nonsense' } });
    assert.ok(invalid.status === 400 || invalid.status === 422, `status ${invalid.status}`);
    assert.equal(invalid.body.resourceType, 'OperationOutcome');

    // The bedside picks it from the worklist and starts the exam with it.
    const worklist = await t.api('/api/worklist', { token: bedside });
    assert.equal(worklist.status, 200);
    const entry = (worklist.body.entries as { accessionNumber: string; patientId: string; patientName: string; birthDate?: string; sex?: string; description: string }[]).find((e) => e.accessionNumber === accession);
    assert.ok(entry !== undefined, `worklist lacks ${accession}: ${JSON.stringify(worklist.body)}`);
    assert.equal(entry.patientId, `P-${tag}`);
    const exam = await t.api('/api/exam', {
      method: 'PUT',
      token: bedside,
      body: { patientId: entry.patientId, patientName: entry.patientName, birthDate: entry.birthDate, sex: entry.sex, description: entry.description.slice(0, 64), accessionNumber: entry.accessionNumber },
    });
    assert.equal(exam.status, 201, JSON.stringify(exam.body));

    // The sweep.
    const bs = await t.connect('bedside', bedside);
    const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 30, speedMmPerS: 15 };
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
    const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
    const uid = running.acquisition.uid!;
    await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');

    // The study appears over QIDO-RS once reconstructed, written and stored.
    let studies: any[] = [];
    for (const deadline = Date.now() + 180_000; Date.now() < deadline; ) {
      const q = await json(`/dicom-web/studies?StudyInstanceUID=${uid}&includefield=all`, sonographer, { accept: 'application/dicom+json' });
      // No match is 204 No Content (PS3.18 allows 204 for an empty result).
      assert.ok(q.status === 200 || q.status === 204, `QIDO status ${q.status}: ${JSON.stringify(q.body)}`);
      studies = (q.body as any[] | null) ?? [];
      if (studies.length === 1 && first(studies[0], '00201208') === 2) break;
      await new Promise<void>((r) => setTimeout(r, 500));
    }
    assert.equal(studies.length, 1, 'the study is archived');
    const study = studies[0];
    assert.equal(first(study, '00080050'), accession, 'AccessionNumber from the order');
    assert.equal(first(study, '00100020'), `P-${tag}`, 'PatientID');
    assert.deepEqual(study['00080061']?.Value, ['US'], 'ModalitiesInStudy');
    const instances = (await json(`/dicom-web/studies/${uid}/instances`, sonographer, { accept: 'application/dicom+json' })).body as any[];
    const classes = instances.map((i) => first(i, '00080016')).sort();
    assert.deepEqual(classes, [US_MULTIFRAME, ENHANCED_US_VOLUME].sort());
    const volume = instances.find((i) => first(i, '00080016') === ENHANCED_US_VOLUME);
    const [volumeBytes] = await wado(`/dicom-web/studies/${uid}/series/${first(volume, '0020000E') as string}/instances/${first(volume, '00080018') as string}`, sonographer);
    dciodvfyClean(volumeBytes!, 'volume.dcm');
    // Another tenant sees nothing.
    const otherTenant = await json(`/dicom-web/studies?StudyInstanceUID=${uid}`, admin, { accept: 'application/dicom+json' });
    assert.ok([403, 204].includes(otherTenant.status), `another tenant: status ${otherTenant.status}`);

    // FHIR: the ImagingStudy has the DICOM UIDs, its endpoint is our DICOMweb, the order is completed.
    const fhirStudies = await json(`/fhir/ImagingStudy?identifier=urn:dicom:uid|urn:oid:${uid}`, sonographer, { accept: 'application/fhir+json' });
    assert.equal(fhirStudies.status, 200, JSON.stringify(fhirStudies.body));
    const imagingStudy = fhirStudies.body.entry?.[0]?.resource;
    assert.ok(imagingStudy !== undefined, `no ImagingStudy for ${uid}: ${JSON.stringify(fhirStudies.body)}`);
    const fhirSeries = (imagingStudy.series as { uid: string; instance: { uid: string }[] }[]).flatMap((s) => s.instance.map((i) => `${s.uid}/${i.uid}`)).sort();
    assert.deepEqual(fhirSeries, instances.map((i) => `${first(i, '0020000E') as string}/${first(i, '00080018') as string}`).sort());
    const endpoint = await json(`/fhir/${imagingStudy.endpoint[0].reference as string}`, sonographer);
    assert.equal(endpoint.body.address, `${t.url}/dicom-web`);
    const orderNow = await json(`/fhir/ServiceRequest/${order.body.id as string}`, ris);
    assert.equal(orderNow.body.status, 'completed');

    // The physician measures on the volume, drafts and signs.
    const m = await t.api(`/api/acquisitions/${uid}/measurements`, {
      method: 'POST',
      token: physician,
      body: { kind: 'distance', label: 'lesion', plane: 'axial', pointsMm: [{ x: 440, y: -15, z: 80 }, { x: 452, y: -15, z: 80 }] },
    });
    assert.equal(m.status, 201, JSON.stringify(m.body));
    const draft = await t.api(`/api/studies/${uid}/report`, { method: 'PUT', token: physician, body: { findings: 'Hypoechoic lesion, 12 mm.', conclusion: 'Follow-up.', measurementIds: [m.body.id] } });
    assert.equal(draft.status, 200, JSON.stringify(draft.body));
    assert.equal(draft.body.status, 'preliminary');
    const dr0 = await json(`/fhir/DiagnosticReport/${draft.body.fhirDiagnosticReportId as string}`, sonographer);
    assert.equal(dr0.body.status, 'preliminary');
    // Only a physician signs; a foreign measurement and a bad body are refused.
    assert.equal((await t.api(`/api/studies/${uid}/report/sign`, { method: 'POST', token: sonographer })).status, 403);
    const foreign = await t.api(`/api/studies/${uid}/report`, { method: 'PUT', token: physician, body: { findings: 'x', measurementIds: ['nope'] } });
    assert.equal(foreign.body.code, 'ECO3D_ERR_INVALID_RESOURCE');
    assert.equal((await t.api(`/api/studies/${uid}/report`, { method: 'PUT', token: physician, body: { findings: 3 } })).body.code, 'ECO3D_ERR_BAD_REQUEST');
    assert.equal((await t.api(`/api/studies/2.25.1/report`, { token: physician })).status, 404);

    const signed = await t.api(`/api/studies/${uid}/report/sign`, { method: 'POST', token: physician });
    assert.equal(signed.status, 200, JSON.stringify(signed.body));
    assert.equal(signed.body.status, 'final');
    const dr = await json(`/fhir/DiagnosticReport/${signed.body.fhirDiagnosticReportId as string}`, sonographer);
    assert.equal(dr.body.status, 'final');
    assert.equal(dr.body.conclusion, 'Follow-up.');
    assert.equal((await t.api(`/api/studies/${uid}/report`, { method: 'PUT', token: physician, body: { findings: 'late edit', measurementIds: [] } })).status, 409);

    // The signed SR is in the study, VERIFIED, dciodvfy-clean.
    const srs = ((await json(`/dicom-web/studies/${uid}/instances?SOPClassUID=${COMPREHENSIVE_3D_SR}`, sonographer, { accept: 'application/dicom+json' })).body as any[]) ?? [];
    assert.equal(srs.length, 1);
    assert.equal(first(srs[0], '00080018'), signed.body.srSopInstanceUid);
    const [srBytes] = await wado(`/dicom-web/studies/${uid}/series/${signed.body.srSeriesInstanceUid as string}/instances/${signed.body.srSopInstanceUid as string}`, physician);
    dciodvfyClean(srBytes!, 'report.dcm');
    assert.ok(Buffer.from(srBytes!).includes('VERIFIED'), 'VerificationFlag VERIFIED');
    assert.ok(Buffer.from(srBytes!).includes('Hypoechoic lesion, 12 mm.'));
    const modalities = ((await json(`/dicom-web/studies?StudyInstanceUID=${uid}`, sonographer, { accept: 'application/dicom+json' })).body as any[])[0]['00080061'].Value as string[];
    assert.deepEqual([...modalities].sort(), ['SR', 'US']);

    // An amendment: a new version, signed as amended, its SR naming the first as predecessor.
    const amend = await t.api(`/api/studies/${uid}/report/amend`, { method: 'POST', token: physician });
    assert.equal(amend.body.version, 2);
    await t.api(`/api/studies/${uid}/report`, { method: 'PUT', token: physician, body: { findings: 'Hypoechoic lesion, 13 mm on review.', conclusion: 'Follow-up.', measurementIds: [m.body.id] } });
    const amended = await t.api(`/api/studies/${uid}/report/sign`, { method: 'POST', token: physician });
    assert.equal(amended.body.status, 'amended');
    assert.equal((await json(`/fhir/DiagnosticReport/${amended.body.fhirDiagnosticReportId as string}`, sonographer)).body.status, 'amended');
    const history = await t.api(`/api/studies/${uid}/report`, { token: sonographer });
    assert.deepEqual(
      (history.body.versions as { version: number; status: string }[]).map((v) => [v.version, v.status]),
      [
        [2, 'amended'],
        [1, 'final'],
      ],
    );
    bs.kill();
  });
});

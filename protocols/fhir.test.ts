// The FHIR builders and parsers, on their own. Validation against both official validators, for
// every resource built here, is in archive/fhir-validate.test.ts (protocols/ imports nothing of ours).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  FHIR_SYSTEMS,
  accessionOf,
  buildCapabilityStatement,
  buildConsent,
  buildDiagnosticReport,
  buildDicomWebEndpoint,
  buildImagingStudy,
  buildMeasurementObservation,
  buildOperationOutcome,
  buildPatient,
  buildSearchBundle,
  codingFromDicom,
  consentDecisionOf,
  consentResources,
  dicomPatientIdOf,
  dicomPersonNameOf,
  displayNameOf,
  humanNameFromDicom,
  localReferenceId,
  worklistItemOf,
  type Consent,
  type Patient,
  type ServiceRequest,
} from './fhir.ts';
import { throwsWith } from './testing.ts';

const STUDY = '1.2.826.0.1.3680043.8.498.1';
const US_SERIES = '1.2.826.0.1.3680043.8.498.2';
const SR_SERIES = '1.2.826.0.1.3680043.8.498.3';
const ENHANCED_US_VOLUME = '1.2.840.10008.5.1.4.1.1.6.2';
const COMPREHENSIVE_3D_SR = '1.2.840.10008.5.1.4.1.1.88.34';

const patientRef = { reference: 'Patient/p1' };

describe('ImagingStudy', () => {
  const study = buildImagingStudy({
    id: 'is1',
    studyInstanceUid: STUDY,
    subject: patientRef,
    accession: { value: 'ACC-1', system: 'urn:oid:1.2.3.4' },
    basedOn: [{ reference: 'ServiceRequest/sr1' }],
    endpointId: 'ep1',
    startedMs: Date.UTC(2026, 0, 2, 10, 30),
    description: 'Robotic 3D US',
    series: [
      { seriesInstanceUid: US_SERIES, modality: 'US', number: 1, instances: [{ sopInstanceUid: `${US_SERIES}.1`, sopClassUid: ENHANCED_US_VOLUME, number: 1 }] },
      { seriesInstanceUid: SR_SERIES, modality: 'SR', number: 2, instances: [{ sopInstanceUid: `${SR_SERIES}.1`, sopClassUid: COMPREHENSIVE_3D_SR }] },
    ],
  });

  test('carries the DICOM UIDs, the accession, the order and the endpoint', () => {
    assert.deepEqual(study.identifier?.[0], { system: 'urn:dicom:uid', value: `urn:oid:${STUDY}` });
    assert.equal(accessionOf(study)?.value, 'ACC-1');
    assert.equal(accessionOf(study)?.system, 'urn:oid:1.2.3.4');
    assert.deepEqual(study.basedOn, [{ reference: 'ServiceRequest/sr1' }]);
    assert.deepEqual(study.endpoint, [{ reference: 'Endpoint/ep1' }]);
    assert.deepEqual(study.series?.map((s) => s.uid), [US_SERIES, SR_SERIES]);
    assert.equal(study.series?.[0]?.instance?.[0]?.uid, `${US_SERIES}.1`);
    assert.deepEqual(study.series?.[0]?.instance?.[0]?.sopClass, { system: 'urn:ietf:rfc:3986', code: `urn:oid:${ENHANCED_US_VOLUME}` });
    assert.equal(study.started, '2026-01-02T10:30:00.000Z');
  });

  test('modalities are DICOM codes, once each, and the counts add up', () => {
    assert.deepEqual(
      study.modality?.map((m) => [m.system, m.code]),
      [
        [FHIR_SYSTEMS.dicomDcm, 'US'],
        [FHIR_SYSTEMS.dicomDcm, 'SR'],
      ],
    );
    assert.equal(study.series?.[1]?.modality.code, 'SR');
    assert.equal(study.numberOfSeries, 2);
    assert.equal(study.numberOfInstances, 2);
  });

  test('refuses what is not a DICOM UID, duplicates and an empty study', () => {
    const base = { id: 'x', subject: patientRef, endpointId: 'ep' } as const;
    const series = [{ seriesInstanceUid: US_SERIES, modality: 'US', instances: [] }];
    throwsWith(() => buildImagingStudy({ ...base, studyInstanceUid: '1.2.03', series }), 'ECO3D_ERR_BAD_REQUEST', 'not a DICOM UID');
    throwsWith(() => buildImagingStudy({ ...base, studyInstanceUid: STUDY, series: [] }), 'ECO3D_ERR_BAD_REQUEST', 'at least one series');
    throwsWith(() => buildImagingStudy({ ...base, studyInstanceUid: STUDY, series: [series[0]!, series[0]!] }), 'ECO3D_ERR_BAD_REQUEST', 'twice');
    throwsWith(() => buildImagingStudy({ ...base, id: 'not an id!', studyInstanceUid: STUDY, series }), 'ECO3D_ERR_BAD_REQUEST', 'not a FHIR id');
  });

  test('the endpoint is dicom-wado-rs at our DICOMweb base URL', () => {
    const ep = buildDicomWebEndpoint({ id: 'ep1', address: 'http://127.0.0.1:8080/dicom-web/' });
    assert.equal(ep.connectionType.code, 'dicom-wado-rs');
    assert.equal(ep.connectionType.system, 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type');
    assert.equal(ep.address, 'http://127.0.0.1:8080/dicom-web');
    throwsWith(() => buildDicomWebEndpoint({ id: 'ep1', address: '/dicom-web' }), 'ECO3D_ERR_BAD_REQUEST', 'absolute URL');
  });

  test('a DICOM coded concept maps to its FHIR code system', () => {
    assert.deepEqual(codingFromDicom({ value: '818981001', scheme: 'SCT', meaning: 'Abdomen' }), { system: 'http://snomed.info/sct', code: '818981001', display: 'Abdomen' });
    assert.equal(codingFromDicom({ value: '121206', scheme: 'DCM', meaning: 'Distance' }).system, FHIR_SYSTEMS.dicomDcm);
  });
});

describe('Observation and DiagnosticReport', () => {
  test('a caliper distance is mm and an area mm², UCUM, SNOMED-coded, derived from the study', () => {
    const d = buildMeasurementObservation({
      id: 'o1',
      status: 'final',
      measurement: { kind: 'distance', valueMm: 41.23456 },
      label: 'left kidney length',
      subject: patientRef,
      imagingStudyId: 'is1',
      effectiveMs: 0,
      bodySite: { system: 'http://snomed.info/sct', code: '18639004', display: 'Left kidney' },
    });
    assert.deepEqual(d.valueQuantity, { value: 41.235, unit: 'mm', system: 'http://unitsofmeasure.org', code: 'mm' });
    assert.deepEqual(d.code.coding?.[0], { system: 'http://snomed.info/sct', code: '410668003', display: 'Length' });
    assert.equal(d.code.text, 'left kidney length');
    assert.deepEqual(d.derivedFrom, [{ reference: 'ImagingStudy/is1' }]);
    assert.equal(d.bodySite?.coding?.[0]?.code, '18639004');
    const a = buildMeasurementObservation({ id: 'o2', status: 'preliminary', measurement: { kind: 'area', valueMm2: 120 }, subject: patientRef, imagingStudyId: 'is1', effectiveMs: 0 });
    assert.deepEqual(a.valueQuantity, { value: 120, unit: 'mm²', system: 'http://unitsofmeasure.org', code: 'mm2' });
    assert.equal(a.code.coding?.[0]?.code, '42798000');
    assert.equal(a.bodySite, undefined);
    throwsWith(
      () => buildMeasurementObservation({ id: 'o3', status: 'final', measurement: { kind: 'area', valueMm2: Number.NaN }, subject: patientRef, imagingStudyId: 'is1', effectiveMs: 0 }),
      'ECO3D_ERR_NOT_FINITE',
    );
  });

  const report = (status: 'preliminary' | 'final' | 'amended', signed: boolean) =>
    buildDiagnosticReport({
      id: 'dr1',
      status,
      subject: patientRef,
      imagingStudyId: 'is1',
      basedOn: [{ reference: 'ServiceRequest/sr1' }],
      issuedMs: Date.UTC(2026, 0, 3),
      author: { username: 'sono', display: 'S. Onographer' },
      ...(signed ? { signer: { username: 'dr-house' } } : {}),
      findings: 'Kidney 41 mm, <normal> & smooth',
      conclusion: 'No abnormality.',
      observationIds: ['o1', 'o2'],
    });

  test('a report links its study, results and order; signer only when signed', () => {
    const r = report('preliminary', false);
    assert.equal(r.status, 'preliminary');
    assert.deepEqual(r.imagingStudy, [{ reference: 'ImagingStudy/is1' }]);
    assert.deepEqual(r.result, [{ reference: 'Observation/o1' }, { reference: 'Observation/o2' }]);
    assert.deepEqual(r.basedOn, [{ reference: 'ServiceRequest/sr1' }]);
    assert.equal(r.resultsInterpreter, undefined);
    assert.equal(r.performer?.[0]?.identifier?.value, 'sono');
    assert.equal(r.conclusion, 'No abnormality.');
    assert.match(r.text?.div ?? '', /&lt;normal&gt; &amp; smooth/);
    const text = Buffer.from(r.presentedForm?.[0]?.data ?? '', 'base64').toString('utf8');
    assert.match(text, /Findings:\nKidney 41 mm, <normal> & smooth\n\nConclusion:\nNo abnormality\./);
    const f = report('final', true);
    assert.equal(f.status, 'final');
    assert.equal(f.resultsInterpreter?.[0]?.identifier?.value, 'dr-house');
    assert.equal(report('amended', true).status, 'amended');
  });

  test('final and amended need a signer', () => {
    throwsWith(() => report('final', false), 'ECO3D_ERR_BAD_REQUEST', 'signer');
    throwsWith(() => report('amended', false), 'ECO3D_ERR_BAD_REQUEST', 'signer');
  });
});

describe('Patient and the worklist', () => {
  const patient: Patient = {
    resourceType: 'Patient',
    id: 'p1',
    identifier: [
      { system: 'urn:oid:1.2.3.99', value: 'INS-77' },
      { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'urn:oid:1.2.3.5', value: 'MRN-123' },
    ],
    name: [{ use: 'official', family: 'Doe', given: ['Jane', 'Q'], prefix: ['Dr'] }],
    gender: 'female',
    birthDate: '1980-04-05',
  };
  const order: ServiceRequest = {
    resourceType: 'ServiceRequest',
    id: 'sr1',
    status: 'active',
    intent: 'order',
    identifier: [
      { system: 'urn:placer', value: 'PL-1' },
      { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'ACSN' }] }, system: 'urn:oid:1.2.3.6', value: 'ACC-42' },
    ],
    code: { text: 'US abdomen 3D' },
    subject: { reference: 'Patient/p1' },
    occurrenceDateTime: '2026-01-05T09:00:00Z',
    priority: 'routine',
  };

  test('the DICOM patient id is the MR identifier; the name a DICOM PN', () => {
    assert.deepEqual(dicomPatientIdOf(patient), { value: 'MRN-123', system: 'urn:oid:1.2.3.5' });
    assert.equal(dicomPatientIdOf({ ...patient, identifier: [{ value: 'only' }] })?.value, 'only');
    assert.equal(dicomPatientIdOf({ resourceType: 'Patient' }), undefined);
    assert.equal(dicomPersonNameOf(patient), 'Doe^Jane^Q^Dr');
    assert.equal(dicomPersonNameOf({ resourceType: 'Patient', name: [{ text: 'Jo^hn' }] }), 'Jo hn');
    assert.equal(displayNameOf(patient), 'Jane Q Doe');
  });

  test('a worklist item has what an exam needs', () => {
    assert.deepEqual(worklistItemOf(order, patient), {
      serviceRequestId: 'sr1',
      accessionNumber: 'ACC-42',
      accessionSystem: 'urn:oid:1.2.3.6',
      description: 'US abdomen 3D',
      priority: 'routine',
      scheduledAtMs: Date.UTC(2026, 0, 5, 9),
      patient: { fhirId: 'p1', patientId: 'MRN-123', patientIdSystem: 'urn:oid:1.2.3.5', name: 'Doe^Jane^Q^Dr', displayName: 'Jane Q Doe', birthDate: '1980-04-05', sex: 'F' },
    });
    // No accession number, or no description: not a worklist entry.
    assert.equal(worklistItemOf({ ...order, identifier: [{ value: 'x' }] }, patient), undefined);
    assert.equal(worklistItemOf({ ...order, code: { coding: [{ code: 'x' }] } }, patient), undefined);
    // A partial birth date is left out (DICOM DA and exams need a full date).
    assert.equal(worklistItemOf(order, { ...patient, birthDate: '1980' })?.patient.birthDate, undefined);
  });

  test('a bedside patient round-trips its DICOM name, sex and birth date', () => {
    const p = buildPatient({ id: 'p2', patientId: 'PID-9', name: 'Smith^John', sex: 'M', birthDate: '1970-01-02' });
    assert.deepEqual(p.name, [{ family: 'Smith', given: ['John'], text: 'John Smith' }]);
    assert.equal(p.gender, 'male');
    assert.equal(dicomPatientIdOf(p)?.value, 'PID-9');
    assert.equal(dicomPersonNameOf(p), 'Smith^John');
    assert.deepEqual(humanNameFromDicom('Plain Name'), { text: 'Plain Name' });
    throwsWith(() => buildPatient({ id: 'p3', patientId: ' ', name: 'x' }), 'ECO3D_ERR_BAD_REQUEST', 'patient id');
    throwsWith(() => buildPatient({ id: 'p3', patientId: 'a', name: 'x', birthDate: '1970' }), 'ECO3D_ERR_BAD_REQUEST', 'birthDate');
  });

  test('local references resolve to an id of the expected type only', () => {
    assert.equal(localReferenceId({ reference: 'Patient/p1' }, 'Patient'), 'p1');
    assert.equal(localReferenceId({ reference: 'http://h/fhir/Patient/p1' }, 'Patient', 'http://h/fhir/'), 'p1');
    assert.equal(localReferenceId({ reference: 'Group/p1' }, 'Patient'), undefined);
    assert.equal(localReferenceId({ reference: 'http://elsewhere/Patient/p1' }, 'Patient', 'http://h/fhir'), undefined);
    assert.equal(localReferenceId({ display: 'x' }, 'Patient'), undefined);
  });
});

describe('Consent', () => {
  const t = (m: number): number => Date.UTC(2026, 0, 1) + m * 60_000;
  const records = [
    { id: 'c3', patientId: 'P', decision: 'revoked' as const, recordedAtMs: t(30) },
    { id: 'c2', patientId: 'P', decision: 'yes' as const, recordedAtMs: t(20) },
    { id: 'c1', patientId: 'P', decision: 'no' as const, recordedAtMs: t(10) },
  ];

  test('the latest yes/no is active; earlier ones and revocations are inactive, periods closed', () => {
    const [c3, c2, c1] = consentResources(records, patientRef);
    assert.deepEqual([c3?.status, c2?.status, c1?.status], ['inactive', 'inactive', 'inactive']);
    assert.equal(c2?.provision?.type, 'permit');
    assert.deepEqual(c2?.provision?.period, { start: new Date(t(20)).toISOString(), end: new Date(t(30)).toISOString() });
    assert.equal(c3?.provision?.type, 'deny');
    assert.equal(c3?.provision?.period?.end, undefined);
    const [now] = consentResources(records.slice(1), patientRef);
    assert.equal(now?.status, 'active');
    assert.equal(now?.provision?.type, 'permit');
    assert.equal(now?.policyRule?.coding?.[0]?.code, 'OPTIN');
    assert.equal(now?.scope.coding?.[0]?.code, 'research');
    assert.deepEqual(now?.patient, patientRef);
    const [denied] = consentResources(records.slice(2), patientRef);
    assert.deepEqual([denied?.status, denied?.provision?.type, denied?.policyRule?.coding?.[0]?.code], ['active', 'deny', 'OPTOUT']);
  });

  test('a POSTed Consent reads as a decision, or as issues', () => {
    const base = buildConsent({ record: records[1]!, patient: patientRef });
    assert.deepEqual(consentDecisionOf(base), { decision: 'yes' });
    assert.deepEqual(consentDecisionOf({ ...base, provision: { type: 'deny' } }), { decision: 'no' });
    assert.deepEqual(consentDecisionOf({ ...base, status: 'inactive' }), { decision: 'revoked' });
    const noType = consentDecisionOf({ ...base, provision: {} });
    assert.ok('issues' in noType && noType.issues[0]?.expression?.[0] === 'Consent.provision.type');
    const draft = consentDecisionOf({ ...base, status: 'draft' });
    assert.ok('issues' in draft && draft.issues[0]?.code === 'not-supported');
    const treatment: Consent = { ...base, scope: { coding: [{ system: FHIR_SYSTEMS.consentScope, code: 'treatment' }] } };
    const r = consentDecisionOf(treatment);
    assert.ok('issues' in r && r.issues.some((i) => i.expression?.[0] === 'Consent.scope'));
  });
});

describe('OperationOutcome, Bundle, CapabilityStatement', () => {
  test('an OperationOutcome keeps severity, code, diagnostics, expression and our error code', () => {
    const oo = buildOperationOutcome([{ severity: 'error', code: 'required', diagnostics: 'Patient.name: is required', expression: ['Patient.name'] }], { errorCode: 'ECO3D_ERR_INVALID_RESOURCE' });
    assert.deepEqual(oo.issue[0], {
      severity: 'error',
      code: 'required',
      details: { coding: [{ system: 'urn:eco3d:error-code', code: 'ECO3D_ERR_INVALID_RESOURCE' }] },
      diagnostics: 'Patient.name: is required',
      expression: ['Patient.name'],
    });
    assert.equal(buildOperationOutcome([]).issue[0]?.severity, 'information');
  });

  test('a searchset carries total, links and full URLs', () => {
    const b = buildSearchBundle({ baseUrl: 'http://h/fhir/', resources: [{ resourceType: 'Patient', id: 'p1' }], total: 3, selfUrl: 'http://h/fhir/Patient?_count=1', nextUrl: 'http://h/fhir/Patient?_count=1&_offset=1' });
    assert.equal(b.type, 'searchset');
    assert.equal(b.total, 3);
    assert.equal(b.entry?.[0]?.fullUrl, 'http://h/fhir/Patient/p1');
    assert.deepEqual(b.link?.map((l) => l.relation), ['self', 'next']);
    assert.equal(buildSearchBundle({ baseUrl: 'http://h', resources: [], total: 0, selfUrl: 'http://h/X' }).entry, undefined);
  });

  test('the CapabilityStatement lists exactly the interactions and parameters given', () => {
    const cs = buildCapabilityStatement({
      baseUrl: 'http://h/fhir',
      softwareVersion: '1.0',
      dateMs: 0,
      securityDescription: 'bearer',
      resources: [
        { type: 'Patient', interactions: ['read', 'create'], searchParams: [], versioning: 'versioned', conditionalCreate: true },
        { type: 'Consent', interactions: ['search-type'], searchParams: [{ name: 'patient', type: 'reference' }], versioning: 'no-version' },
      ],
    });
    assert.equal(cs.fhirVersion, '4.0.1');
    assert.equal(cs.kind, 'instance');
    const [patient, consent] = cs.rest?.[0]?.resource ?? [];
    assert.deepEqual(patient?.interaction?.map((i) => i.code), ['read', 'create']);
    assert.equal(patient?.conditionalCreate, true);
    assert.equal(patient?.readHistory, false);
    assert.equal(patient?.searchParam, undefined);
    assert.deepEqual(consent?.searchParam, [{ name: 'patient', type: 'reference' }]);
    assert.equal(consent?.conditionalCreate, undefined);
  });
});

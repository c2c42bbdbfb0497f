// Every resource our builders emit passes both official validators, each of which catches errors
// the other misses; the worker-hosted validator answers as the in-process one and loads once.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
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
  type Resource,
} from '../protocols/index.ts';
import { FHIR_RESOURCES } from './fhir-routes.ts';
import { createFhirValidator, isBlocking, type FhirValidationIssue } from './fhir-validate.ts';

const inProcess = createFhirValidator({ inWorker: false });

async function assertClean(r: Resource): Promise<void> {
  const issues = await inProcess.validate(r);
  assert.deepEqual(issues, [], `${r.resourceType}: ${JSON.stringify(issues, null, 1)}`);
}

const bySource = (issues: readonly FhirValidationIssue[], source: FhirValidationIssue['source']): FhirValidationIssue[] => issues.filter((i) => i.source === source && isBlocking(i));

const STUDY = '1.2.826.0.1.3680043.8.498.10';
const patientRef = { reference: 'Patient/p1' };

describe('what we emit is valid FHIR R4 (JSON schema and StructureDefinitions)', () => {
  test('ImagingStudy and its Endpoint', async () => {
    await assertClean(buildDicomWebEndpoint({ id: 'ep1', address: 'http://127.0.0.1:8080/dicom-web' }));
    await assertClean(
      buildImagingStudy({
        id: 'is1',
        studyInstanceUid: STUDY,
        subject: patientRef,
        accession: { value: 'ACC-1', system: 'urn:oid:1.2.3' },
        basedOn: [{ reference: 'ServiceRequest/sr1' }],
        endpointId: 'ep1',
        startedMs: Date.UTC(2026, 0, 1),
        description: 'Robotic 3D US',
        series: [
          {
            seriesInstanceUid: `${STUDY}.1`,
            modality: 'US',
            number: 1,
            description: 'volume',
            startedMs: Date.UTC(2026, 0, 1),
            bodySite: codingFromDicom({ value: '818981001', scheme: 'SCT', meaning: 'Abdomen' }),
            laterality: 'L',
            instances: [{ sopInstanceUid: `${STUDY}.1.1`, sopClassUid: '1.2.840.10008.5.1.4.1.1.6.2', number: 1, title: 'Enhanced US Volume' }],
          },
          { seriesInstanceUid: `${STUDY}.2`, modality: 'SR', instances: [{ sopInstanceUid: `${STUDY}.2.1`, sopClassUid: '1.2.840.10008.5.1.4.1.1.88.34' }] },
        ],
      }),
    );
  });

  test('Observations (distance, area) and DiagnosticReports (preliminary, final, amended)', async () => {
    await assertClean(
      buildMeasurementObservation({
        id: 'o1',
        status: 'final',
        measurement: { kind: 'distance', valueMm: 41.2 },
        label: 'kidney length',
        subject: patientRef,
        imagingStudyId: 'is1',
        effectiveMs: 0,
        performer: { username: 'sono' },
        bodySite: { system: 'http://snomed.info/sct', code: '18639004', display: 'Left kidney' },
      }),
    );
    await assertClean(buildMeasurementObservation({ id: 'o2', status: 'preliminary', measurement: { kind: 'area', valueMm2: 120.5 }, subject: patientRef, imagingStudyId: 'is1', effectiveMs: 0 }));
    for (const status of ['preliminary', 'final', 'amended'] as const) {
      await assertClean(
        buildDiagnosticReport({
          id: `dr-${status}`,
          status,
          subject: patientRef,
          imagingStudyId: 'is1',
          basedOn: [{ reference: 'ServiceRequest/sr1' }],
          effectiveMs: 0,
          issuedMs: 1000,
          author: { username: 'sono', display: 'S. Onographer' },
          ...(status === 'preliminary' ? {} : { signer: { username: 'dr-house' } }),
          findings: 'Kidney <41 mm> & smooth',
          conclusion: 'Normal.',
          observationIds: ['o1', 'o2'],
        }),
      );
    }
    // The smallest report: no findings, no conclusion, no results.
    await assertClean(buildDiagnosticReport({ id: 'dr-min', status: 'preliminary', subject: patientRef, imagingStudyId: 'is1', issuedMs: 0, author: { username: 'sono' } }));
  });

  test('Patient, Consent (every state), OperationOutcome, Bundle, CapabilityStatement', async () => {
    await assertClean(buildPatient({ id: 'p1', patientId: 'PID-1', name: 'Doe^Jane', sex: 'F', birthDate: '1980-01-02' }));
    await assertClean(buildPatient({ id: 'p2', patientId: 'PID-2', name: 'Plain', patientIdSystem: 'urn:oid:1.2.3' }));
    for (const decision of ['yes', 'no', 'revoked'] as const) {
      await assertClean(buildConsent({ record: { id: `c-${decision}`, patientId: 'PID-1', decision, recordedAtMs: 1000 }, patient: patientRef }));
      await assertClean(buildConsent({ record: { id: `c-${decision}-old`, patientId: 'PID-1', decision, recordedAtMs: 1000 }, patient: patientRef, supersededAtMs: 2000 }));
    }
    await assertClean(buildConsent({ record: { id: 'c-logical', patientId: 'PID-9', decision: 'yes', recordedAtMs: 0 }, patient: { type: 'Patient', identifier: { value: 'PID-9' } } }));
    await assertClean(buildOperationOutcome([{ severity: 'error', code: 'required', diagnostics: 'x', expression: ['Patient.name'] }], { errorCode: 'ECO3D_ERR_INVALID_RESOURCE' }));
    await assertClean(buildSearchBundle({ baseUrl: 'http://h/fhir', resources: [buildPatient({ id: 'p1', patientId: 'a', name: 'b' })], total: 2, selfUrl: 'http://h/fhir/Patient', nextUrl: 'http://h/fhir/Patient?_offset=1' }));
    await assertClean(buildSearchBundle({ baseUrl: 'http://h/fhir', resources: [], total: 0, selfUrl: 'http://h/fhir/Patient' }));
    await assertClean(buildCapabilityStatement({ baseUrl: 'http://h/fhir', softwareVersion: '0.1.0', dateMs: 0, resources: FHIR_RESOURCES, securityDescription: 'Bearer' }));
  });
});

describe('the two validators catch different errors', () => {
  test('only the JSON schema knows the value set of a required binding (gender)', async () => {
    const issues = await inProcess.validate({ resourceType: 'Patient', gender: 'femme' });
    const schema = bySource(issues, 'json-schema');
    assert.equal(schema.length, 1, JSON.stringify(issues));
    assert.equal(schema[0]?.code, 'code-invalid');
    assert.deepEqual(schema[0]?.expression, ['Patient.gender']);
    assert.match(schema[0]?.diagnostics ?? '', /female/);
    assert.deepEqual(bySource(issues, 'structure-definitions'), []);
  });

  test('only the StructureDefinitions know cardinalities the schema omits and the invariants', async () => {
    // ServiceRequest.intent is 1..1, which the JSON schema does not require.
    const sr = await inProcess.validate({ resourceType: 'ServiceRequest', status: 'active', subject: { reference: 'Patient/p1' } });
    assert.deepEqual(bySource(sr, 'json-schema'), []);
    assert.deepEqual(bySource(sr, 'structure-definitions').map((i) => i.expression), [['ServiceRequest.intent']]);
    // ppc-1: a Consent needs a policy or a policyRule.
    const consent = buildConsent({ record: { id: 'c1', patientId: 'P', decision: 'yes', recordedAtMs: 0 }, patient: patientRef });
    delete consent.policyRule;
    const c = await inProcess.validate(consent);
    assert.deepEqual(bySource(c, 'json-schema'), []);
    const sd = bySource(c, 'structure-definitions');
    assert.equal(sd.length, 1);
    assert.equal(sd[0]?.code, 'invariant');
    assert.match(sd[0]?.diagnostics ?? '', /ppc-1/);
  });

  test('both report a bad primitive, with the path', async () => {
    const issues = await inProcess.validate({ resourceType: 'Patient', birthDate: '1980-13-01', identifier: [{ value: 7 }] });
    for (const source of ['json-schema', 'structure-definitions'] as const) {
      const found = bySource(issues, source).flatMap((i) => i.expression ?? []);
      assert.ok(found.includes('Patient.birthDate'), `${source}: ${JSON.stringify(issues)}`);
      assert.ok(found.includes('Patient.identifier[0].value'), `${source}: ${JSON.stringify(issues)}`);
    }
  });

  test('a contained resource matching no type is one issue, not one per resource type', async () => {
    const issues = bySource(await inProcess.validate({ resourceType: 'Patient', contained: [{ resourceType: 'Nonsense' }] }), 'json-schema');
    assert.deepEqual(issues.map((i) => i.expression), [['Patient.contained[0]']]);
  });

  test('4.0.1 passes although the R4 schema predates it; another version does not', async () => {
    const cs = buildCapabilityStatement({ baseUrl: 'http://h/fhir', softwareVersion: '1', dateMs: 0, resources: FHIR_RESOURCES, securityDescription: 'Bearer' });
    assert.deepEqual(await inProcess.validate(cs), []);
    const wrong = bySource(await inProcess.validate({ ...cs, fhirVersion: '9.9.9' }), 'json-schema');
    assert.deepEqual(wrong.map((i) => i.expression), [['CapabilityStatement.fhirVersion']]);
  });

  test('not a resource at all', async () => {
    assert.equal((await inProcess.validate([])).length, 1);
    assert.deepEqual((await inProcess.validate({ id: 'x' }))[0]?.expression, ['resourceType']);
    const unknown = await inProcess.validate({ resourceType: 'Spaceship' });
    assert.ok(unknown.some((i) => i.source === 'json-schema' && i.code === 'not-supported'), JSON.stringify(unknown));
  });
});

describe('loading', () => {
  const worker = createFhirValidator();
  after(() => worker.close());

  test('the worker-hosted validator answers as the in-process one, and loads once', async () => {
    const first = await worker.warmUp();
    assert.ok((first.jsonSchemaLoadMs ?? -1) >= 0 && (first.structureDefinitionsLoadMs ?? -1) >= 0, JSON.stringify(first));
    const bad = { resourceType: 'Patient', gender: 'femme', birthDate: 'yesterday', foo: 1 };
    assert.deepEqual(await worker.validate(bad), await inProcess.validate(bad));
    assert.deepEqual(await worker.validate({ resourceType: 'Patient', id: 'ok' }), []);
    const again = await worker.warmUp();
    assert.equal(again.jsonSchemaLoadMs, first.jsonSchemaLoadMs);
    assert.equal(again.structureDefinitionsLoadMs, first.structureDefinitionsLoadMs);
    // The detail validator of a type is compiled on its first failure only.
    assert.ok(again.jsonSchemaDetailCompileMs?.Patient !== undefined);
    assert.equal(again.jsonSchemaDetailCompileMs?.Observation, undefined);
    console.log(`fhir validator load: json schema ${first.jsonSchemaLoadMs} ms, structure definitions ${first.structureDefinitionsLoadMs} ms, Patient detail schema ${again.jsonSchemaDetailCompileMs?.Patient} ms`);
  });

  test('in-process validators share one engine per thread', async () => {
    const a = await createFhirValidator({ inWorker: false }).warmUp();
    const b = await inProcess.warmUp();
    assert.equal(a.jsonSchemaLoadMs, b.jsonSchemaLoadMs);
    assert.equal(a.structureDefinitionsLoadMs, b.structureDefinitionsLoadMs);
  });

  test('a closed worker validator starts a new worker when used again', async () => {
    await worker.close();
    assert.deepEqual(await worker.validate({ resourceType: 'Observation', status: 'final', code: { text: 'x' } }), []);
  });

  test('a kind-restricted validator runs that validator only', async () => {
    const schemaOnly = createFhirValidator({ kinds: ['json-schema'], inWorker: false });
    const issues = await schemaOnly.validate({ resourceType: 'Patient', gender: 'femme', foo: 1 });
    assert.ok(issues.length > 0 && issues.every((i) => i.source === 'json-schema'));
  });
});

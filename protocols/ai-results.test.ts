// AI Results (AIR) objects of an analysis plugin: the TID 1500 Comprehensive 3D SR validated by
// dicom3tools dciodvfy (IOD) and read back with dcmtk dsrdump (the content tree, codes
// included) and dcmdump (modules outside the tree); the FHIR Observations checked by both
// official validators (archive/fhir-validate.ts). The tools are required: a missing tool fails
// the test (spawnSync's ENOENT), never skips it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { createFhirValidator, isBlocking } from '../archive/fhir-validate.ts';
import {
  buildAlgorithmObservations,
  ECO3D_PLUGIN_MEASUREMENT_SYSTEM,
  encodeAlgorithmResultReport,
  pluginDeviceObserverUid,
  privateMeasurementConcept,
  type AlgorithmMeasurement,
  type AlgorithmObservationsInput,
  type AlgorithmResultReportInput,
} from './ai-results.ts';
import { checkUid } from './dicom-part10.ts';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID } from './dicom-sr.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'eco3d-ai-results-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const PLUGIN_ID = 'com.example.lesion-volume';
const VOLUME: AlgorithmMeasurement = { name: 'Lesion volume', value: 12.3, unit: 'ml', concept: { value: '118565006', scheme: 'SCT', meaning: 'Volume' } };
const SPHERICITY: AlgorithmMeasurement = { name: 'Lesion sphericity index', value: 0.87, unit: '1' };
const FINDING = 'Solid hypoechoic lesion in the left lobe, well circumscribed.';

// The study and volume UIDs match dicom-sr.test.ts / dicom-us.test.ts; all fixed, so the file is reproducible.
function reportInput(over: Partial<AlgorithmResultReportInput> = {}): AlgorithmResultReportInput {
  return {
    patient: { name: 'Doe^Jane', id: 'P-0042', birthDate: '1980-02-29', sex: 'F' },
    study: { studyInstanceUid: '2.25.1001', studyId: 'S1', accessionNumber: 'ACC-7', studyDateTime: '2024-05-01T10:20:30.123+02:00', description: 'Robotic 3D US abdomen' },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d 0.1.0', 'dcmjs 0.52.2'], stationName: 'ECO3D-1' },
    seriesInstanceUid: '2.25.3002',
    seriesNumber: 900,
    sopInstanceUid: '2.25.3003',
    instanceNumber: 1,
    contentDateTime: '2024-05-01T11:00:00.250+02:00',
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    plugin: { id: PLUGIN_ID, name: 'Lesion Volume', version: '1.2.0', vendorName: 'Example Imaging AI', deviceObserverUid: pluginDeviceObserverUid(PLUGIN_ID) },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: '2.25.1003', seriesInstanceUid: '2.25.1002' },
    measurements: [VOLUME, SPHERICITY],
    findings: [{ text: FINDING }],
    ...over,
  };
}

function observationsInput(over: Partial<AlgorithmObservationsInput> = {}): AlgorithmObservationsInput {
  return { ...reportInput(), subject: { reference: 'Patient/p-0042' }, imagingStudy: { reference: 'ImagingStudy/study-1001' }, ...over };
}

function writeTemp(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

function run(tool: string, args: string[]): { status: number | null; out: string; stderr: string } {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `${tool} could not run (is it installed?): ${String(r.error)}`);
  return { status: r.status, out: `${r.stdout}\n${r.stderr}`, stderr: r.stderr };
}

const isBadRequest = (err: unknown): boolean => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_REQUEST';

// Warnings dciodvfy (dicom3tools 1.00~20220618) gives for this object, each explained:
// - 99ECO3D is "unrecognized" as a Coding Scheme Designator: it is our private scheme (PS3.16:
//   designators beginning with 99 are private, there is no registry to recognise them), and the
//   object declares it in the Coding Scheme Identification Sequence.
// - Device UID (0018,1002) in the Contributing Equipment Sequence "not in the standard IOD" and
//   hence "Standard Extended SOP Class": the current PS3.3 SOP Common module lists Device UID
//   in that sequence (Type 3) and AIR asks for it there; this release of dicom3tools predates it.
const EXPLAINED_WARNINGS = [
  /^Warning - Unrecognized defined term <99ECO3D> for value 1 of attribute <Coding Scheme Designator>$/,
  /^Warning - Attribute is not present in standard DICOM IOD - \(0x0018,0x1002\) UI Device UID $/,
  /^Warning - Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class$/,
];

function dciodvfy(file: string): { lines: string[]; warnings: string[] } {
  const { status, out } = run('dciodvfy', [file]);
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(lines.filter((l) => l.includes('Error')), [], `dciodvfy:\n${lines.join('\n')}`);
  assert.equal(status, 0, `dciodvfy exit code ${status}:\n${lines.join('\n')}`);
  const warnings = lines.filter((l) => l.startsWith('Warning'));
  const unexplained = warnings.filter((w) => !EXPLAINED_WARNINGS.some((re) => re.test(w)));
  assert.deepEqual(unexplained, [], `dciodvfy warnings nobody explained:\n${lines.join('\n')}`);
  return { lines, warnings };
}

void test('the SR passes dciodvfy: no error, only the explained warnings', (t) => {
  const { lines, warnings } = dciodvfy(writeTemp('ai-report.dcm', encodeAlgorithmResultReport(reportInput())));
  assert.equal(lines[0], 'Comprehensive3DSR', `dciodvfy took it for another IOD:\n${lines.join('\n')}`);
  for (const w of warnings) t.diagnostic(w);
  // With standard concepts only, the private-scheme warnings are gone.
  const standardOnly = dciodvfy(writeTemp('ai-report-sct.dcm', encodeAlgorithmResultReport(reportInput({ measurements: [VOLUME], findings: [] })))).warnings;
  assert.ok(!standardOnly.some((w) => w.includes('99ECO3D')), standardOnly.join('\n'));
  // A findings-only result (no measurement) is a valid report too.
  dciodvfy(writeTemp('ai-report-findings.dcm', encodeAlgorithmResultReport(reportInput({ measurements: [] }))));
});

void test('dsrdump: the TID 1500 tree with the plugin as device observer, coded values and UCUM units', () => {
  const file = writeTemp('ai-report-tree.dcm', encodeAlgorithmResultReport(reportInput()));
  // +Pc: concept name codes too; +Pl: long values whole; +Psu/+Pu: SOP class and instance UIDs.
  const { status, out } = run('dsrdump', ['+Pc', '+Pl', '+Psu', '+Pu', '+Pt', '+U8', file]);
  assert.equal(status, 0, out);
  // dcmtk 3.6.7 checks no VR in UTF-8 and says so; anything else it reports would be a problem.
  const complaints = out.split('\n').filter((l) => /^[EWF]: /.test(l) && !l.includes('does not support this Specific Character Set: ISO_IR 192'));
  assert.deepEqual(complaints, [], out);
  assert.match(out, /^Comprehensive 3D SR Document$/m);
  assert.match(out, /Completion Flag\s+: COMPLETE/);
  assert.match(out, /Verification Flag\s+: UNVERIFIED/);
  assert.match(out, /Series\s+: AI: Lesion Volume \(#900\)/);
  const expected = [
    '<CONTAINER:(126000,DCM,"Imaging Measurement Report")=SEPARATE>  # TID 1500 (DCMR)',
    '  <has concept mod CODE:(121049,DCM,"Language of Content Item and Descendants")=(en-US,RFC5646,"English (United States)")>',
    '  <has obs context CODE:(121005,DCM,"Observer Type")=(121007,DCM,"Device")>',
    `  <has obs context UIDREF:(121012,DCM,"Device Observer UID")="${pluginDeviceObserverUid(PLUGIN_ID)}">`,
    '  <has obs context TEXT:(121013,DCM,"Device Observer Name")="Lesion Volume">',
    '  <has obs context TEXT:(121014,DCM,"Device Observer Manufacturer")="Example Imaging AI">',
    '  <has obs context TEXT:(121015,DCM,"Device Observer Model Name")="com.example.lesion-volume">',
    '  <has concept mod CODE:(121058,DCM,"Procedure reported")=(16310003,SCT,"Ultrasonography")>',
    '  <contains CONTAINER:(111028,DCM,"Image Library")=SEPARATE>',
    '    <contains CONTAINER:(126200,DCM,"Image Library Group")=SEPARATE>',
    '      <contains IMAGE:=("1.2.840.10008.5.1.4.1.1.6.2","2.25.1003")>',
    '        <has acq context CODE:(121139,DCM,"Modality")=(US,DCM,"Ultrasound")>',
    '  <contains CONTAINER:(126010,DCM,"Imaging Measurements")=SEPARATE>',
    '    <contains CONTAINER:(125007,DCM,"Measurement Group")=SEPARATE>  # TID 1501 (DCMR)',
    '      <has obs context TEXT:(112039,DCM,"Tracking Identifier")="Lesion volume">',
  ];
  const lines = out.split('\n');
  const start = lines.findIndex((l) => l.startsWith('<CONTAINER:'));
  assert.deepEqual(lines.slice(start, start + expected.length), expected, out);
  // Each group: tracking UID, TID 4019, the NUM with its UCUM unit and the volume it came from.
  assert.equal([...out.matchAll(/<has obs context UIDREF:\(112040,DCM,"Tracking Unique Identifier"\)="2\.25\.\d+">/g)].length, 2, out);
  assert.equal([...out.matchAll(/<has concept mod TEXT:\(111001,DCM,"Algorithm Name"\)="Lesion Volume">/g)].length, 2, out);
  assert.equal([...out.matchAll(/<has concept mod TEXT:\(111003,DCM,"Algorithm Version"\)="1\.2\.0">/g)].length, 2, out);
  assert.ok(out.includes('<contains NUM:(118565006,SCT,"Volume")="12.3" (ml,UCUM,"milliliter")>'), out);
  const priv = privateMeasurementConcept('Lesion sphericity index');
  assert.ok(out.includes(`<contains NUM:(${priv.value},99ECO3D,"Lesion sphericity index")="0.87" (1,UCUM,"no units")>`), out);
  assert.equal([...out.matchAll(/<inferred from IMAGE:\(121112,DCM,"Source of Measurement"\)=\("1\.2\.840\.10008\.5\.1\.4\.1\.1\.6\.2","2\.25\.1003"\)>/g)].length, 2, out);
  assert.ok(out.includes(`<contains CONTAINER:(C0034375,UMLS,"Qualitative Evaluations")=SEPARATE>`), out);
  assert.ok(out.includes(`<contains TEXT:(121071,DCM,"Finding")="${FINDING}">`), out);
  // Two values of one name (two lesions): readers tell the groups apart by their identifiers.
  const twice = run('dsrdump', ['+Pc', '+U8', writeTemp('ai-report-twice.dcm', encodeAlgorithmResultReport(reportInput({ measurements: [VOLUME, { ...VOLUME, value: 3.25 }] })))]).out;
  assert.ok(twice.includes('"Tracking Identifier")="Lesion volume (1)"') && twice.includes('"Tracking Identifier")="Lesion volume (2)"'), twice);
  assert.ok(twice.includes('<contains NUM:(118565006,SCT,"Volume")="3.25" (ml,UCUM,"milliliter")>'), twice);
});

void test('dcmdump: SOP class, patient and study of the real study, own series, evidence, contributing equipment, private scheme', () => {
  const { status, out } = run('dcmdump', ['-Un', '+L', writeTemp('ai-report-dump.dcm', encodeAlgorithmResultReport(reportInput()))]);
  assert.equal(status, 0, out);
  assert.equal(COMPREHENSIVE_3D_SR_SOP_CLASS_UID, '1.2.840.10008.5.1.4.1.1.88.34');
  assert.ok(out.includes('(0002,0010) UI [1.2.840.10008.1.2.1]'), 'not Explicit VR Little Endian');
  assert.ok(out.includes(`(0008,0016) UI [${COMPREHENSIVE_3D_SR_SOP_CLASS_UID}]`));
  // Patient and study copied from the real study; the SR's own series.
  assert.match(out, /\(0010,0010\) PN \[Doe\^Jane\]/);
  assert.match(out, /\(0010,0020\) LO \[P-0042\]/);
  assert.match(out, /\(0008,0050\) SH \[ACC-7\]/);
  assert.match(out, /\(0020,000d\) UI \[2\.25\.1001\]/);
  assert.match(out, /\(0008,0060\) CS \[SR\]/);
  assert.match(out, /\(0020,000e\) UI \[2\.25\.3002\]/);
  assert.match(out, /\(0008,103e\) LO \[AI: Lesion Volume\]/);
  assert.match(out, /\(0008,0023\) DA \[20240501\]/);
  assert.match(out, /\(0008,0033\) TM \[110000\.250000\]/);
  assert.match(out, /\(0040,a491\) CS \[COMPLETE\]/);
  assert.match(out, /\(0040,a493\) CS \[UNVERIFIED\]/);
  // Current Requested Procedure Evidence → study → series → the volume instance.
  assert.ok(out.includes('(0040,a375)'), 'no Current Requested Procedure Evidence Sequence');
  const evidence = out.slice(out.indexOf('(0040,a375)'));
  assert.match(evidence, /\(0020,000d\) UI \[2\.25\.1001\]/);
  assert.match(evidence, /\(0020,000e\) UI \[2\.25\.1002\]/);
  assert.match(evidence, /\(0008,1150\) UI \[1\.2\.840\.10008\.5\.1\.4\.1\.1\.6\.2\]/);
  assert.match(evidence, /\(0008,1155\) UI \[2\.25\.1003\]/);
  // The plugin as contributing equipment (AIR), and the private scheme declared.
  const contributing = out.slice(out.indexOf('(0018,a001)'), out.indexOf('(0020,000d)'));
  assert.match(contributing, /\(0008,0070\) LO \[Example Imaging AI\]/);
  assert.match(contributing, /\(0008,1090\) LO \[Lesion Volume\]/);
  assert.match(contributing, /\(0018,1020\) LO \[1\.2\.0\]/);
  assert.ok(contributing.includes(`(0018,1002) UI [${pluginDeviceObserverUid(PLUGIN_ID)}]`), contributing);
  assert.match(contributing, /\(0008,0100\) SH \[109102\]/);
  assert.match(out, /\(0008,0110\) SQ[^\n]*\n[^\n]*\n\s+\(0008,0102\) SH \[99ECO3D\]/);
  assert.match(out, /\(0040,db00\) CS \[1500\]/);
  assert.equal([...out.matchAll(/\(0040,db00\) CS \[1501\]/g)].length, 2);
  // Each NUM has an Observation UID: the identifier of its FHIR Observation.
  const obs = buildAlgorithmObservations(observationsInput());
  for (const o of obs.slice(0, 2)) {
    const uid = o.identifier?.[0]?.value?.replace('urn:oid:', '') ?? '';
    assert.ok(out.includes(`(0040,a171) UI [${uid}]`), `Observation UID ${uid} of ${o.id} not in the SR`);
  }
});

void test('encoding is deterministic; the derived UIDs follow the SR instance', () => {
  const a = encodeAlgorithmResultReport(reportInput());
  assert.deepEqual(encodeAlgorithmResultReport(structuredClone(reportInput())), a);
  assert.deepEqual(buildAlgorithmObservations(observationsInput()), buildAlgorithmObservations(structuredClone(observationsInput())));
  // Another SR instance: other tracking and observation UIDs, other Observation ids.
  const dumpOf = (bytes: Uint8Array, name: string): string => run('dsrdump', ['+Pc', '+U8', writeTemp(name, bytes)]).out;
  const trackingUids = (dump: string): string[] => [...dump.matchAll(/"Tracking Unique Identifier"\)="([\d.]+)"/g)].map((m) => m[1] ?? '');
  const first = trackingUids(dumpOf(a, 'det-a.dcm'));
  const second = trackingUids(dumpOf(encodeAlgorithmResultReport(reportInput({ sopInstanceUid: '2.25.3004' })), 'det-b.dcm'));
  assert.equal(first.length, 2);
  assert.equal(new Set([...first, ...second]).size, 4, 'tracking UIDs repeat across SR instances');
  for (const uid of first) assert.equal(checkUid('tracking UID', uid), uid);
  const ids = (o: AlgorithmObservationsInput): string[] => buildAlgorithmObservations(o).map((x) => x.id ?? '');
  assert.notDeepEqual(ids(observationsInput()), ids(observationsInput({ sopInstanceUid: '2.25.3004' })));
});

void test('plugin device UID and private codes are deterministic and well-formed', () => {
  const uid = pluginDeviceObserverUid(PLUGIN_ID);
  assert.equal(uid, pluginDeviceObserverUid(PLUGIN_ID));
  assert.equal(checkUid('uid', uid), uid);
  assert.ok(uid.startsWith('2.25.') && uid.length <= 64);
  assert.notEqual(uid, pluginDeviceObserverUid('com.example.other'));
  // A 2.25 UID is a UUID: version 8 (name-based, SHA-256) and the RFC 9562 variant.
  const hex = BigInt(uid.slice(5)).toString(16).padStart(32, '0');
  assert.equal(hex[12], '8');
  assert.match(hex[16] ?? '', /[89ab]/);

  const c = privateMeasurementConcept('Lesion sphericity index');
  assert.deepEqual(c, privateMeasurementConcept('Lesion sphericity index'));
  assert.match(c.value, /^LESIONS-[0-9A-F]{8}$/);
  assert.equal(c.scheme, '99ECO3D');
  assert.equal(c.meaning, 'Lesion sphericity index');
  // Names alike in their first letters still get different codes; every value fits SH.
  assert.notEqual(privateMeasurementConcept('Lesion sphericity').value, c.value);
  const long = privateMeasurementConcept(`Mean ${'very '.repeat(30)}long name`);
  assert.ok(long.value.length <= 16);
  assert.equal(long.meaning.length, 64);
  assert.match(privateMeasurementConcept('Объём узла').value, /^M-[0-9A-F]{8}$/);
  assert.equal(privateMeasurementConcept('a\\b').meaning, 'a/b');
});

void test('bad input is refused with ECO3D_ERR_BAD_REQUEST', () => {
  const many = Array.from({ length: 65 }, (_, i): AlgorithmMeasurement => ({ name: `m${i}`, value: i, unit: 'mm' }));
  const cases: Array<[string, AlgorithmResultReportInput]> = [
    ['NaN value', reportInput({ measurements: [{ ...VOLUME, value: Number.NaN }] })],
    ['infinite value', reportInput({ measurements: [{ ...VOLUME, value: Number.POSITIVE_INFINITY }] })],
    ['value not a number', reportInput({ measurements: [{ ...VOLUME, value: '12' as unknown as number }] })],
    ['empty name', reportInput({ measurements: [{ ...SPHERICITY, name: '' }] })],
    ['blank name', reportInput({ measurements: [{ ...SPHERICITY, name: '  \t ' }] })],
    ['name with a control character', reportInput({ measurements: [{ ...SPHERICITY, name: 'a\u0000b' }] })],
    ['65 measurements', reportInput({ measurements: many })],
    ['no measurement and no finding', reportInput({ measurements: [], findings: [] })],
    ['empty unit', reportInput({ measurements: [{ ...VOLUME, unit: '' }] })],
    ['unit with a space', reportInput({ measurements: [{ ...VOLUME, unit: 'milli liter' }] })],
    ['unit longer than SH', reportInput({ measurements: [{ ...VOLUME, unit: 'mm'.repeat(9) }] })],
    ['concept meaning beyond LO', reportInput({ measurements: [{ ...VOLUME, concept: { value: '118565006', scheme: 'SCT', meaning: 'x'.repeat(65) } }] })],
    ['concept value beyond SH', reportInput({ measurements: [{ ...VOLUME, concept: { value: '1'.repeat(17), scheme: 'SCT', meaning: 'Volume' } }] })],
    ['concept with a backslash', reportInput({ measurements: [{ ...VOLUME, concept: { value: '118565006', scheme: 'SCT', meaning: 'Vol\\ume' } }] })],
    ['finding over 1024 characters', reportInput({ findings: [{ text: 'x'.repeat(1025) }] })],
    ['empty finding', reportInput({ findings: [{ text: ' ' }] })],
    ['bad device observer UID', reportInput({ plugin: { ...reportInput().plugin, deviceObserverUid: '1.02.3' } })],
    ['empty plugin name', reportInput({ plugin: { ...reportInput().plugin, name: '' } })],
    ['bad volume UID', reportInput({ referencedVolume: { ...reportInput().referencedVolume, sopInstanceUid: 'x' } })],
    ['bad content time', reportInput({ contentDateTime: '2024-05-01 11:00' })],
  ];
  // The Observations do not name the volume (they point to the ImagingStudy and the SR).
  const srOnly = new Set(['bad volume UID']);
  for (const [name, input] of cases) {
    assert.throws(() => encodeAlgorithmResultReport(input), isBadRequest, `SR: ${name}`);
    if (!srOnly.has(name)) assert.throws(() => buildAlgorithmObservations({ ...observationsInput(), ...input }), isBadRequest, `FHIR: ${name}`);
  }
  assert.throws(() => buildAlgorithmObservations(observationsInput({ subject: {} })), isBadRequest, 'no subject');
  assert.throws(() => buildAlgorithmObservations(observationsInput({ imagingStudy: {} })), isBadRequest, 'no ImagingStudy');
  // 64 is the limit, not beyond it.
  assert.doesNotThrow(() => encodeAlgorithmResultReport(reportInput({ measurements: many.slice(0, 64) })));
});

const validator = createFhirValidator({ inWorker: false });
after(() => validator.close());

void test('FHIR: one preliminary imaging Observation per measurement and per finding, valid by both validators', async () => {
  const obs = buildAlgorithmObservations(observationsInput());
  assert.equal(obs.length, 3);
  const [volume, sphericity, finding] = obs;
  assert.ok(volume !== undefined && sphericity !== undefined && finding !== undefined);
  for (const o of obs) {
    assert.equal(o.resourceType, 'Observation');
    assert.equal(o.status, 'preliminary');
    assert.deepEqual(o.category, [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'imaging', display: 'Imaging' }] }]);
    assert.deepEqual(o.subject, { reference: 'Patient/p-0042' });
    assert.equal(o.effectiveDateTime, '2024-05-01T09:00:00.250Z');
    assert.deepEqual(o.device, { type: 'Device', identifier: { system: 'urn:dicom:uid', value: `urn:oid:${pluginDeviceObserverUid(PLUGIN_ID)}` }, display: 'Lesion Volume 1.2.0' });
    assert.deepEqual(o.derivedFrom, [
      { reference: 'ImagingStudy/study-1001' },
      { type: 'DocumentReference', identifier: { system: 'urn:dicom:uid', value: 'urn:oid:2.25.3003' }, display: 'DICOM SR AI: Lesion Volume' },
    ]);
    assert.match(o.id ?? '', /^ai-[0-9a-f]{16}-[mf]\d+$/);
  }
  assert.equal(new Set(obs.map((o) => o.id)).size, 3);
  assert.deepEqual(volume.code, { coding: [{ system: 'http://snomed.info/sct', code: '118565006', display: 'Volume' }], text: 'Lesion volume' });
  assert.deepEqual(volume.valueQuantity, { value: 12.3, unit: 'ml', system: 'http://unitsofmeasure.org', code: 'ml' });
  const priv = privateMeasurementConcept('Lesion sphericity index');
  assert.deepEqual(sphericity.code, { coding: [{ system: ECO3D_PLUGIN_MEASUREMENT_SYSTEM, code: priv.value, display: priv.meaning }], text: 'Lesion sphericity index' });
  assert.deepEqual(sphericity.valueQuantity, { value: 0.87, unit: '1', system: 'http://unitsofmeasure.org', code: '1' });
  assert.deepEqual(finding.code, { coding: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: '121071', display: 'Finding' }] });
  assert.equal(finding.valueString, FINDING);
  assert.equal(finding.identifier, undefined);
  // A DCM-coded concept maps to the DICOM system too.
  const dcm = buildAlgorithmObservations(observationsInput({ measurements: [{ name: 'Depth', value: 41, unit: 'mm', concept: { value: '121206', scheme: 'DCM', meaning: 'Distance' } }], findings: [] }));
  assert.equal(dcm[0]?.code?.coding?.[0]?.system, 'http://dicom.nema.org/resources/ontology/DCM');

  for (const o of [...obs, ...dcm]) {
    const issues = (await validator.validate(o)).filter(isBlocking);
    assert.deepEqual(issues, [], `${o.id}: ${JSON.stringify(issues, null, 1)}`);
  }
});

// PS3.15 Annex E de-identification on real objects: our Enhanced US Volume, US Multi-frame and
// Comprehensive 3D SR writers (plus PHI attributes and private tags added to their files),
// de-identified, then checked with dicom3tools (dciodvfy per instance, dcentvfy across the study)
// and by scanning every output byte for the input's PHI. The tools are required: a missing tool
// fails the test (spawnSync's ENOENT), never skips it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { DEID_PROFILE, DEID_PROFILE_SOURCE, deidActionFor, deidentify, deidentifyPart10, deidentifyPart10Prefix, patientDateShiftDays, remapUid, type DeidOptions } from './deid.ts';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID, encodeMeasurementReport, type MeasurementReportInput } from './dicom-sr.ts';
import {
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  US_MULTIFRAME_SOP_CLASS_UID,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  type DicomUsCommon,
  type EnhancedUsVolumeInput,
} from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'eco3d-deid-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// Distinctive PHI, so that a byte search cannot match by chance.
const PHI = {
  name: 'Qwertyson^Zelda^Maud',
  id: 'PID-PHI-58213',
  birthDate: '1971-03-14',
  accession: 'ACC-PHI-90417',
  institution: 'Phiville General Hospital',
  referring: 'Refmd^Phialpha',
  operator: 'Opera^Phibeta',
  performing: 'Perfmd^Phigamma',
  address: '12 Phistreet, Phitown',
  station: 'STN-PHI-7',
  serial: 'SER-PHI-3141',
  verifier: 'Verimd^Phidelta',
  verifierOrg: 'Phiorg Imaging Partners',
  privateText: 'PRIVATE-PHI-777',
} as const;
const STUDY_DA = '20230918';

const KEY = 'a-secret-key-of-32-bytes-0123456';
const OTHER_KEY = 'another-secret-key-32-bytes-9876';
const BASIC: DeidOptions = { uidKey: KEY };
const ALL_OPTIONS: DeidOptions = {
  uidKey: KEY,
  dateShiftDays: -100,
  retainPatientCharacteristics: true,
  retainDeviceIdentity: true,
  cleanDescriptors: true,
  cleanStructuredContent: true,
  safeDescriptors: ['Reconstructed volume', 'B-mode frames'],
  safePrivateTags: [{ group: 0x0009, creator: 'ECO3D DEID TEST', element: 0x11 }],
};

const IDENTITY = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);

const common: DicomUsCommon = {
  patient: { name: PHI.name, id: PHI.id, birthDate: PHI.birthDate, sex: 'F', sizeM: 1.71, weightKg: 64 },
  study: {
    studyInstanceUid: '1.2.826.0.1.3680043.10.1.1',
    studyId: 'SID-PHI-11',
    accessionNumber: PHI.accession,
    studyDateTime: '2023-09-18T08:05:00.000+02:00',
    description: 'Liver robotic 3D',
    referringPhysicianName: PHI.referring,
  },
  equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: PHI.serial, softwareVersions: ['eco3d 0.1.0'], institutionName: PHI.institution, stationName: PHI.station },
  seriesInstanceUid: '1.2.826.0.1.3680043.10.1.2',
  seriesNumber: 2,
  seriesDescription: 'Reconstructed volume',
  sopInstanceUid: '1.2.826.0.1.3680043.10.1.3',
  instanceNumber: 1,
  acquisitionDateTime: '2023-09-18T08:06:00.000000+02:00',
  contentDateTime: '2023-09-18T08:09:00.000000+02:00',
  anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
};

function volumeInput(sopInstanceUid: string, instanceNumber: number): EnhancedUsVolumeInput {
  const dims: [number, number, number] = [6, 5, 3];
  const data = new Uint8Array(dims[0] * dims[1] * dims[2]).map((_, i) => (i * 37) & 0xff);
  return {
    ...common,
    sopInstanceUid,
    instanceNumber,
    volume: { grid: { dims, spacingMm: { x: 0.5, y: 0.5, z: 1 }, originMm: { x: 10, y: -5, z: 2 } }, data },
    acquisitionDurationS: 6,
    frameOfReferenceUid: '1.2.826.0.1.3680043.10.1.4',
    volumeFrameOfReferenceUid: '1.2.826.0.1.3680043.10.1.5',
    dimensionOrganizationUid: '1.2.826.0.1.3680043.10.1.6',
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: new Float64Array([1, 0, 0, -12, 0, 0, -1, 8, 0, 1, 0, 3, 0, 0, 0, 1]),
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: '1.2.826.0.1.3680043.10.1.7',
    volumeToTable: IDENTITY,
    tableToPatient: IDENTITY,
    transducer: {
      description: 'Eco3D sim L640 linear',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: {
      view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' },
      processingFunction: 'B-MODE ABDOMEN',
      mechanicalIndex: 0.8,
      boneThermalIndex: 0.2,
      cranialThermalIndex: 0.1,
      softTissueThermalIndex: 0.3,
      depthsOfFocusMm: [24],
      depthOfScanFieldMm: 48,
    },
  };
}

function frames(): Uint8Array {
  return encodeUsMultiframe({
    ...common,
    seriesInstanceUid: '1.2.826.0.1.3680043.10.1.10',
    seriesNumber: 1,
    seriesDescription: 'B-mode frames',
    sopInstanceUid: '1.2.826.0.1.3680043.10.1.11',
    frames: [0, 1, 2].map((k) => ({ index: k, tMs: 1000 + k * 33.3, width: 8, height: 6, pixels: new Uint8Array(48).fill(20 * k + 1) })),
    pixelSpacingMm: { x: 0.1, y: 0.1 },
    frameOfReferenceUid: '1.2.826.0.1.3680043.10.1.4',
  });
}

function reportInput(): MeasurementReportInput {
  return {
    patient: common.patient,
    study: common.study,
    equipment: common.equipment,
    seriesInstanceUid: '1.2.826.0.1.3680043.10.1.20',
    seriesNumber: 100,
    seriesDescription: 'Measurements',
    sopInstanceUid: '1.2.826.0.1.3680043.10.1.21',
    instanceNumber: 1,
    contentDateTime: '2023-09-20T11:00:00.000000+02:00',
    deviceObserverUid: '1.2.826.0.1.3680043.10.1.22',
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: {
      sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID,
      sopInstanceUid: '1.2.826.0.1.3680043.10.1.3',
      seriesInstanceUid: common.seriesInstanceUid,
      frameOfReferenceUid: '1.2.826.0.1.3680043.10.1.5',
    },
    measurements: [{ kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 10, y: -5, z: 2 }, { x: 12.5, y: -5, z: 2 }], label: 'Lesion' }],
    verification: { observerName: PHI.verifier, organization: PHI.verifierOrg, dateTime: '2023-09-21T09:30:00.000+02:00' },
  };
}

/** Our writer's file plus PHI attributes it does not write (type 3, valid in these IODs) and a private block. */
function withExtraPhi(bytes: Uint8Array, image: boolean): Uint8Array {
  const d = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer);
  if (image) {
    d.dict['00081070'] = { vr: 'PN', Value: [{ Alphabetic: PHI.operator }] }; // Operators' Name (General Series)
    d.dict['00081050'] = { vr: 'PN', Value: [{ Alphabetic: PHI.performing }] }; // Performing Physician's Name
    d.dict['00080081'] = { vr: 'ST', Value: [PHI.address] }; // Institution Address (General Equipment)
  }
  d.dict['00101040'] = { vr: 'LO', Value: [PHI.address] }; // Patient's Address (Patient)
  d.dict['00090010'] = { vr: 'LO', Value: ['ECO3D DEID TEST'] };
  d.dict['00091010'] = { vr: 'LO', Value: [PHI.privateText] };
  d.dict['00091011'] = { vr: 'LO', Value: ['SAFE-PRIVATE-VALUE'] };
  return new Uint8Array(d.write());
}

const inputs = {
  volume: withExtraPhi(encodeEnhancedUsVolume(volumeInput('1.2.826.0.1.3680043.10.1.3', 1)), true),
  volume2: withExtraPhi(encodeEnhancedUsVolume(volumeInput('1.2.826.0.1.3680043.10.1.8', 2)), true),
  frames: withExtraPhi(frames(), true),
  report: withExtraPhi(encodeMeasurementReport(reportInput()), false),
};

function writeTemp(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

function run(tool: string, args: string[]): { status: number | null; lines: string[] } {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `${tool} could not run (is dicom3tools installed?): ${String(r.error)}`);
  return { status: r.status, lines: `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.trim() !== '') };
}

function read(bytes: Uint8Array): { meta: DenaturalizedDataset; dict: DenaturalizedDataset } {
  return dcmjs.data.DicomMessage.readFile(bytes.slice().buffer);
}

function val(ds: DenaturalizedDataset, ...path: string[]): any {
  let cur: any = ds;
  for (const [i, k] of path.entries()) {
    const el = cur?.[k];
    if (el === undefined) return undefined;
    if (i === path.length - 1) {
      const v = el.Value?.[0];
      return v !== null && typeof v === 'object' && 'Alphabetic' in v ? v.Alphabetic : v;
    }
    cur = el.Value?.[0];
  }
  return undefined;
}

function contains(bytes: Uint8Array, s: string): boolean {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes(Buffer.from(s, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// The table

test('E.1-1 as data: every row, a known source, valid actions, rows checked against the standard', () => {
  assert.equal(DEID_PROFILE.length, 621);
  assert.equal(DEID_PROFILE_SOURCE.rows, 621);
  assert.equal(DEID_PROFILE_SOURCE.edition, 'DICOM PS3.15 2024b');
  assert.match(DEID_PROFILE_SOURCE.commit, /^[0-9a-f]{40}$/);
  const basic = new Set(['D', 'Z', 'X', 'K', 'C', 'U', 'Z/D', 'X/Z', 'X/D', 'X/Z/D', 'X/Z/U*']);
  const seen = new Set<string>();
  for (const r of DEID_PROFILE) {
    assert.ok(basic.has(r.basic), `${r.tag} ${r.basic}`);
    seen.add(r.basic);
    for (const k of ['retainSafePrivate', 'retainUids', 'retainDeviceIdentity', 'retainInstitutionIdentity', 'retainPatientCharacteristics', 'retainLongitudinalFullDates', 'retainLongitudinalModifiedDates', 'cleanDescriptors', 'cleanStructuredContent', 'cleanGraphics'] as const) {
      const v = r[k];
      assert.ok(v === undefined || v === 'K' || v === 'C', `${r.tag} ${k}=${v}`);
    }
  }
  // Every action of the 2024b Basic Profile column occurs (it has no plain K or C).
  assert.deepEqual([...seen].sort(), ['D', 'U', 'X', 'X/D', 'X/Z', 'X/Z/D', 'X/Z/U*', 'Z', 'Z/D']);
  assert.equal(new Set(DEID_PROFILE.map((r) => r.tag)).size, DEID_PROFILE.length);
  const row = (tag: string) => DEID_PROFILE.find((r) => r.tag === tag);
  assert.deepEqual(row('(0010,0010)'), { tag: '(0010,0010)', name: "Patient's Name", keyword: 'PatientName', vr: 'PN', inStdCompIod: true, basic: 'Z' });
  assert.equal(row('(0010,0020)')?.basic, 'Z/D'); // Patient ID: Z/D in 2024b
  assert.equal(row('(0010,0030)')?.basic, 'Z');
  assert.equal(row('(0008,0050)')?.basic, 'Z');
  assert.equal(row('(0020,000D)')?.basic, 'U');
  assert.equal(row('(0020,000D)')?.retainUids, 'K');
  assert.equal(row('(0008,0080)')?.basic, 'X/Z/D');
  assert.equal(row('(0008,0080)')?.retainInstitutionIdentity, 'K');
  assert.equal(row('(0018,1000)')?.retainDeviceIdentity, 'K');
  assert.equal(row('(0008,1140)')?.basic, 'X/Z/U*');
  assert.equal(row('(0008,0020)')?.retainLongitudinalModifiedDates, 'C');
  assert.equal(row('(0010,1010)')?.retainPatientCharacteristics, 'K');
  assert.equal(row('(0008,1030)')?.cleanDescriptors, 'C');
  assert.equal(row('(0040,A730)')?.basic, 'D');
  assert.equal(row('(0040,A730)')?.cleanStructuredContent, 'C');
  assert.equal(row('(50XX,XXXX)')?.basic, 'X');
  assert.equal(row('(60XX,4000)')?.basic, 'X');
  assert.equal(row('(60XX,3000)')?.cleanGraphics, 'C');
  assert.deepEqual(row('(gggg,eeee) where gggg is odd'), { tag: '(gggg,eeee) where gggg is odd', name: 'Private Attributes', keyword: '', vr: '', inStdCompIod: false, basic: 'X', retainSafePrivate: 'C' });
});

test('combined actions resolve by the type in the IOD, else to the choice that cannot break validity', () => {
  // Content Date: type 1 in Enhanced US Volume and SRs (D), type 2C in US Multi-frame (Z).
  assert.equal(deidActionFor('00080023', {}, { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID }), 'D');
  assert.equal(deidActionFor('00080023', {}, { sopClassUid: COMPREHENSIVE_3D_SR_SOP_CLASS_UID }), 'D');
  assert.equal(deidActionFor('00080023', {}, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID }), 'Z');
  // Device Serial Number: type 1 in Enhanced General Equipment, 3 in General Equipment; kept by the Option.
  assert.equal(deidActionFor('00181000', {}, { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID }), 'D');
  assert.equal(deidActionFor('00181000', {}, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID }), 'X');
  assert.equal(deidActionFor('00181000', { retainDeviceIdentity: true }, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID }), 'K');
  // Acquisition DateTime in US images: 1C, required for IVUS only.
  assert.equal(deidActionFor('0008002A', {}, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID, modality: 'US' }), 'X');
  assert.equal(deidActionFor('0008002A', {}, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID, modality: 'IVUS' }), 'D');
  // Elsewhere: the strictest type anywhere in PS3.3.
  assert.equal(deidActionFor('00080080', {}, { nested: true }), 'D'); // Institution Name, 1C in the Person Identification macro
  assert.equal(deidActionFor('00080080', {}, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID }), 'X');
  assert.equal(deidActionFor('00081140', {}, { nested: true }), 'U'); // X/Z/U*: kept, UIDs replaced
  assert.equal(deidActionFor('00081110', {}, { nested: true }), 'Z'); // X/Z, at most type 2
  assert.equal(deidActionFor('00080013', {}, { nested: true }), 'X'); // type 3 everywhere
  assert.equal(deidActionFor('00100010', {}), 'Z');
  assert.equal(deidActionFor('00100020', {}, { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID }), 'Z');
  // Every combined row resolves, in every context, to one of the choices it offers.
  for (const r of DEID_PROFILE.filter((x) => x.basic.includes('/'))) {
    const allowed = r.basic.replace('U*', 'U').split('/');
    const key = r.tag.replace(/[(),]/g, '');
    for (const where of [{ nested: true }, { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID }, { sopClassUid: US_MULTIFRAME_SOP_CLASS_UID }, { sopClassUid: COMPREHENSIVE_3D_SR_SOP_CLASS_UID }]) {
      const a = deidActionFor(key, {}, where);
      assert.ok(allowed.includes(a), `${r.tag} ${r.basic} → ${a} (${JSON.stringify(where)})`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Validity

for (const [label, options] of [
  ['Basic Profile', BASIC],
  ['all Options', ALL_OPTIONS],
] as const) {
  test(`dciodvfy: de-identification (${label}) adds no error to any of our objects`, (t) => {
    for (const [name, bytes] of Object.entries(inputs)) {
      const before = run('dciodvfy', [writeTemp(`${name}-in.dcm`, bytes)]).lines;
      const out = deidentifyPart10(bytes, options);
      const after = run('dciodvfy', [writeTemp(`${name}-${label.replace(/ /g, '')}.dcm`, out.bytes)]).lines;
      const errorsBefore = new Set(before.filter((l) => l.includes('Error')));
      t.diagnostic(`${name}: ${errorsBefore.size} dciodvfy errors in the input, ${after.filter((l) => l.includes('Error')).length} in the output`);
      const added = after.filter((l) => l.includes('Error') && !errorsBefore.has(l));
      assert.deepEqual(added, [], `${name}: dciodvfy errors added by de-identification:\n${after.join('\n')}`);
      const warningsBefore = new Set(before.filter((l) => l.startsWith('Warning')));
      for (const w of after.filter((l) => l.startsWith('Warning') && !warningsBefore.has(l))) t.diagnostic(`${name}: ${w}`);
    }
  });
}

test('dcentvfy: a de-identified study (two volumes of one series, the frames, the SR) is consistent', () => {
  for (const options of [BASIC, ALL_OPTIONS]) {
    const files = Object.entries(inputs).map(([name, bytes]) => writeTemp(`entity-${name}.dcm`, deidentifyPart10(bytes, options).bytes));
    const r = run('dcentvfy', files);
    assert.equal(r.status, 0, r.lines.join('\n'));
    assert.deepEqual(r.lines.filter((l) => /Error/.test(l)), []);
  }
});

// ---------------------------------------------------------------------------------------------
// PHI

test('no PHI of the input remains anywhere in the output bytes (Basic Profile)', () => {
  const phi = [...Object.values(PHI), PHI.birthDate.replace(/-/g, ''), STUDY_DA, '20230920', '20230921', 'SID-PHI-11', 'Qwertyson', 'Zelda', 'Phiville'];
  for (const [name, bytes] of Object.entries(inputs)) {
    // The inputs do carry it: the search works.
    assert.ok(contains(bytes, PHI.id) && contains(bytes, PHI.privateText), name);
    const out = deidentifyPart10(bytes, BASIC).bytes;
    const leaks = phi.filter((s) => contains(out, s));
    assert.deepEqual(leaks, [], `${name} still holds ${leaks.join(', ')}`);
    // Nor any original UID.
    for (const uid of ['1.2.826.0.1.3680043.10.1.1', '1.2.826.0.1.3680043.10.1.3', '1.2.826.0.1.3680043.10.1.5']) assert.ok(!contains(out, uid), `${name} holds ${uid}`);
  }
});

test('with the Options only what they retain remains: device identity, sex, size, weight, age band', () => {
  const retained = new Set<string>([PHI.serial, PHI.station]);
  const phi = [...Object.values(PHI), PHI.birthDate.replace(/-/g, ''), STUDY_DA, 'SID-PHI-11'];
  for (const [name, bytes] of Object.entries(inputs)) {
    const out = deidentifyPart10(bytes, ALL_OPTIONS).bytes;
    assert.deepEqual(phi.filter((s) => contains(out, s) && !retained.has(s)), [], name);
    const ds = read(out).dict;
    assert.equal(val(ds, '00181000'), PHI.serial);
    assert.equal(val(ds, '00100040'), 'F');
    assert.equal(val(ds, '00101010'), '050Y'); // 52 on the study date, in a 5-year band
    assert.equal(val(ds, '00091011'), 'SAFE-PRIVATE-VALUE'); // on the safe list
    assert.equal(val(ds, '00090010'), 'ECO3D DEID TEST'); // its creator stays with it
    assert.equal(val(ds, '00091010'), undefined);
    if (name !== 'report') assert.equal(Number(val(ds, '00101030')), 64);
  }
});

test('a PHI attribute three sequence levels deep is cleaned; private tags removed unless safe', () => {
  const pn = (s: string) => ({ vr: 'PN', Value: [{ Alphabetic: s }] });
  const lo = (s: string) => ({ vr: 'LO', Value: [s] });
  const input: DenaturalizedDataset = {
    '00080016': { vr: 'UI', Value: [COMPREHENSIVE_3D_SR_SOP_CLASS_UID] },
    '00100010': pn(PHI.name),
    '00090010': lo('ECO3D DEID TEST'),
    '00091010': lo(PHI.privateText),
    '00091011': lo('SAFE-TOP'),
    '0040A730': {
      vr: 'SQ',
      Value: [
        {
          '0040A730': {
            vr: 'SQ',
            Value: [
              {
                '0040A730': {
                  vr: 'SQ',
                  Value: [
                    {
                      '0040A123': pn(PHI.verifier), // Person Name: D
                      '00100020': lo(PHI.id), // Patient ID nested: type 1 somewhere, so D
                      '00080080': lo(PHI.institution),
                      '00081155': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.1.3'] },
                      '00091010': lo(PHI.privateText), // private without a creator: removed
                      '00290010': lo('OTHER VENDOR'),
                      '00291011': lo(PHI.privateText),
                      '00090010': lo('ECO3D DEID TEST'),
                      '00091011': lo('SAFE-NESTED'),
                    },
                  ],
                },
              },
            ],
          },
        },
      ],
    },
  };
  const { dataset, report } = deidentify(input, ALL_OPTIONS);
  const deep = (dataset['0040A730']!.Value![0] as any)['0040A730'].Value[0]['0040A730'].Value[0] as DenaturalizedDataset;
  assert.deepEqual(deep['0040A123']?.Value, [{ Alphabetic: 'ANONYMIZED^ANONYMIZED' }]);
  assert.deepEqual(deep['00100020']?.Value, ['ANONYMIZED']);
  assert.deepEqual(deep['00080080']?.Value, ['ANONYMIZED']);
  assert.deepEqual(deep['00081155']?.Value, [remapUid('1.2.826.0.1.3680043.10.1.3', KEY)]);
  assert.equal(deep['00291011'], undefined);
  assert.equal(deep['00290010'], undefined);
  assert.deepEqual(deep['00091011']?.Value, ['SAFE-NESTED']);
  assert.deepEqual(dataset['00091011']?.Value, ['SAFE-TOP']);
  assert.equal(dataset['00091010'], undefined);
  assert.deepEqual(dataset['00100010']?.Value, []);
  assert.ok(report.privateRemoved >= 4, `removed ${report.privateRemoved}`);
  assert.equal(report.privateKept, 2);
  assert.ok(!JSON.stringify(dataset).includes('PHI'));
  // Without the safe list every private element goes.
  const plain = deidentify(input, BASIC).dataset;
  assert.ok(!Object.keys(plain).some((k) => parseInt(k.slice(0, 4), 16) % 2 === 1));
  // The input is untouched.
  assert.deepEqual(input['00100010']?.Value, [{ Alphabetic: PHI.name }]);
});

// ---------------------------------------------------------------------------------------------
// UIDs

test('UIDs: one keyed remap across instances, calls and the SR references; File Meta updated', () => {
  const outs = Object.fromEntries(Object.entries(inputs).map(([n, b]) => [n, read(deidentifyPart10(b, BASIC).bytes)]));
  const v1 = outs.volume!.dict;
  const v2 = outs.volume2!.dict;
  const fr = outs.frames!.dict;
  const sr = outs.report!.dict;
  const study = remapUid('1.2.826.0.1.3680043.10.1.1', KEY);
  assert.match(study, /^2\.25\.[1-9][0-9]*$/);
  assert.ok(study.length <= 64);
  for (const ds of [v1, v2, fr, sr]) assert.equal(val(ds, '0020000D'), study);
  assert.equal(val(v1, '0020000E'), val(v2, '0020000E')); // one series
  assert.notEqual(val(v1, '00080018'), val(v2, '00080018'));
  for (const [n, o] of Object.entries(outs)) assert.equal(val(o.meta, '00020003'), val(o.dict, '00080018'), `${n}: File Meta`);
  assert.equal(val(outs.volume!.meta, '00020012'), '2.25.96735317232318465305131916453062474312');
  // The SR points at the de-identified volume: evidence, and the SCOORD3D frame of reference.
  assert.equal(val(sr, '0040A375', '0020000D'), study);
  assert.equal(val(sr, '0040A375', '00081115', '00081199', '00081155'), val(v1, '00080018'));
  assert.equal(val(sr, '0040A375', '00081115', '0020000E'), val(v1, '0020000E'));
  const scoord = (sr['0040A730']!.Value as any[]).find((i) => i['0040A730'])['0040A730'].Value[0]['0040A730'].Value[1]['0040A730'].Value[0];
  assert.equal(val(scoord, '30060024'), val(v1, '00209312'));
  assert.equal(val(fr, '00200052'), val(v1, '00200052')); // shared patient Frame of Reference
  // Class UIDs and well-known UIDs are not touched.
  assert.equal(val(v1, '00080016'), ENHANCED_US_VOLUME_SOP_CLASS_UID);
  assert.equal(val(sr, '0040A375', '00081115', '00081199', '00081150'), ENHANCED_US_VOLUME_SOP_CLASS_UID);
  assert.equal(val(v1, '00200200'), UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID);
  // Same key, another call: the same UIDs; another key: others.
  const again = read(deidentifyPart10(inputs.volume, BASIC).bytes).dict;
  assert.equal(val(again, '00080018'), val(v1, '00080018'));
  const other = read(deidentifyPart10(inputs.volume, { uidKey: OTHER_KEY }).bytes).dict;
  assert.notEqual(val(other, '00080018'), val(v1, '00080018'));
  assert.notEqual(val(other, '0020000D'), study);
  const { report } = deidentifyPart10(inputs.volume, BASIC);
  assert.equal(report.uidMap.get('1.2.826.0.1.3680043.10.1.1'), study);
  assert.ok(!report.uidMap.has(UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID));
});

// ---------------------------------------------------------------------------------------------
// Dates

test('Modified Dates: every date of a patient moves by the same offset, times kept, intervals preserved', () => {
  const shifted = Object.fromEntries(Object.entries(inputs).map(([n, b]) => [n, read(deidentifyPart10(b, ALL_OPTIONS).bytes).dict]));
  const original = Object.fromEntries(Object.entries(inputs).map(([n, b]) => [n, read(b).dict]));
  const v = shifted.volume!;
  assert.equal(val(v, '00080020'), '20230610'); // 2023-09-18 − 100 days
  assert.equal(val(v, '00080030'), val(original.volume!, '00080030')); // Study Time kept
  assert.equal(val(v, '0008002A'), '20230610080600.000000+0200');
  assert.equal(val(v, '52009230', '00209111', '00189074'), '20230610080600.000000+0200'); // per-frame, in a sequence
  for (const n of ['volume2', 'frames', 'report']) assert.equal(val(shifted[n]!, '00080020'), '20230610', n);
  // The SR was made 2 days after the study and verified 3 days after: still so.
  assert.equal(val(shifted.report!, '00080023'), '20230612');
  assert.equal(val(shifted.report!, '0040A073', '0040A030'), '20230613093000.000000+0200');
  assert.equal(val(v, '00280303'), 'MODIFIED');
  assert.equal(val(read(deidentifyPart10(inputs.volume, BASIC).bytes).dict, '00280303'), 'REMOVED');
  // Across a leap day and a year.
  const d = deidentify({ '00080020': { vr: 'DA', Value: ['20240301'] }, '00080021': { vr: 'DA', Value: ['20240101'] } }, { uidKey: KEY, dateShiftDays: -1 }).dataset;
  assert.deepEqual(d['00080020']?.Value, ['20240229']);
  assert.deepEqual(d['00080021']?.Value, ['20231231']);
});

test('patientDateShiftDays: the same offset for a patient, in range, different across patients', () => {
  const a = patientDateShiftDays(KEY, PHI.id);
  assert.equal(patientDateShiftDays(KEY, PHI.id), a);
  assert.ok(Number.isInteger(a) && a <= -1 && a >= -365);
  const many = new Set(Array.from({ length: 50 }, (_, i) => patientDateShiftDays(KEY, `P${i}`)));
  assert.ok(many.size > 40, `only ${many.size} distinct offsets for 50 patients`);
  const offsets = (key: string) => Array.from({ length: 20 }, (_, i) => patientDateShiftDays(key, `P${i}`));
  assert.notDeepEqual(offsets(OTHER_KEY), offsets(KEY)); // not derivable without the key
});

// ---------------------------------------------------------------------------------------------
// Options and markers

test('Patient Characteristics: age as a 5-year band capped at 90, from Patient Age or birth and study dates', () => {
  const age = (as: string) => deidentify({ '00101010': { vr: 'AS', Value: [as] } }, { uidKey: KEY, retainPatientCharacteristics: true }).dataset['00101010']?.Value;
  assert.deepEqual(age('047Y'), ['045Y']);
  assert.deepEqual(age('040Y'), ['040Y']);
  assert.deepEqual(age('093Y'), ['090Y']);
  assert.deepEqual(age('018M'), ['000Y']);
  assert.equal(deidentify({ '00101010': { vr: 'AS', Value: ['047Y'] } }, BASIC).dataset['00101010'], undefined);
});

test('Clean Descriptors: known-safe values kept, others emptied; markers and CID 7050 codes written', () => {
  const out = read(deidentifyPart10(inputs.frames, ALL_OPTIONS).bytes).dict;
  assert.equal(val(out, '0008103E'), 'B-mode frames'); // Series Description on the safe list
  // Study Description emptied (present, zero length: dcmjs reads that back as one empty string).
  assert.ok(out['00081030'] !== undefined && (out['00081030'].Value ?? []).every((v) => v === ''));
  assert.equal(val(out, '00120062'), 'YES');
  const codes = (out['00120064']!.Value as DenaturalizedDataset[]).map((i) => `${val(i, '00080102')}:${val(i, '00080100')}`);
  assert.deepEqual(codes, ['DCM:113100', 'DCM:113104', 'DCM:113105', 'DCM:113107', 'DCM:113108', 'DCM:113109', 'DCM:113111']);
  assert.ok((out['00120063']!.Value as string[]).every((s) => s.length <= 64));
  const basic = read(deidentifyPart10(inputs.frames, BASIC).bytes).dict;
  assert.deepEqual((basic['00120064']!.Value as DenaturalizedDataset[]).map((i): unknown => val(i, '00080100')), ['113100']);
  assert.equal(basic['00081030'], undefined); // Study Description: X without the Option
  assert.equal(basic['0008103E'], undefined);
});

test('bad options and bad files are refused with a code', () => {
  const isCode = (code: string) => (err: unknown) => err instanceof Eco3dError && err.code === code;
  assert.throws(() => deidentify({}, { uidKey: 'short' }), isCode('ECO3D_ERR_BAD_REQUEST'));
  assert.throws(() => deidentify({}, { uidKey: KEY, dateShiftDays: 1.5 }), isCode('ECO3D_ERR_BAD_REQUEST'));
  assert.throws(() => deidentify({}, { uidKey: KEY, safePrivateTags: [{ group: 0x0008, creator: 'X', element: 0x10 }] }), isCode('ECO3D_ERR_BAD_REQUEST'));
  assert.throws(() => deidentifyPart10(new Uint8Array(200), BASIC), isCode('ECO3D_ERR_BAD_FILE'));
  const garbage = new Uint8Array(600).map((_, i) => (i * 97 + 13) & 0xff);
  garbage.set([0x44, 0x49, 0x43, 0x4d], 128); // "DICM", then garbage
  assert.throws(() => deidentifyPart10(garbage, BASIC), isCode('ECO3D_ERR_BAD_FILE'));
});

// ---------------------------------------------------------------------------------------------
// Clean Structured Content

const codeSeq = (value: string, scheme: string, meaning: string) => ({
  vr: 'SQ',
  Value: [{ '00080100': { vr: 'SH', Value: [value] }, '00080102': { vr: 'SH', Value: [scheme] }, '00080104': { vr: 'LO', Value: [meaning] } }],
});
const contentItem = (rel: string, type: string, concept: ReturnType<typeof codeSeq>, value: DenaturalizedDataset): DenaturalizedDataset => ({
  '0040A010': { vr: 'CS', Value: [rel] },
  '0040A040': { vr: 'CS', Value: [type] },
  '0040A043': concept,
  ...value,
});

/** Our SR with free text (findings, conclusion) and PNAME, DATE, TIME, DATETIME, UIDREF items, two levels deep. */
function reportWithItems(): Uint8Array {
  const d = dcmjs.data.DicomMessage.readFile(
    encodeMeasurementReport({ ...reportInput(), findings: `Seen ${PHI.name} at ${PHI.institution}`, conclusion: 'Follow-up PHI-CONCLUSION-55' }).slice().buffer,
  );
  const root = d.dict['0040A730']!.Value as DenaturalizedDataset[];
  // A person observer (TID 1003) after the device's context.
  root.splice(6, 0, contentItem('HAS OBS CONTEXT', 'PNAME', codeSeq('121008', 'DCM', 'Person Observer Name'), { '0040A123': { vr: 'PN', Value: [{ Alphabetic: PHI.performing }] } }));
  const qualitative = root.find((i) => (i['0040A043']!.Value![0] as DenaturalizedDataset)['00080100']!.Value![0] === 'C0034375')!;
  (qualitative['0040A730']!.Value as DenaturalizedDataset[]).push(
    contentItem('CONTAINS', 'DATE', codeSeq('111060', 'DCM', 'Study Date'), { '0040A121': { vr: 'DA', Value: ['20230919'] } }),
    contentItem('CONTAINS', 'TIME', codeSeq('111061', 'DCM', 'Study Time'), { '0040A122': { vr: 'TM', Value: ['101500'] } }),
    contentItem('CONTAINS', 'DATETIME', codeSeq('111526', 'DCM', 'DateTime Started'), { '0040A120': { vr: 'DT', Value: ['20230919101500+0200'] } }),
    contentItem('CONTAINS', 'UIDREF', codeSeq('121018', 'DCM', 'Procedure Study Instance UID'), { '0040A124': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.1.1'] } }),
  );
  return new Uint8Array(d.write());
}

/** Every content item of the tree, by its concept name code value. */
function contentByCode(ds: DenaturalizedDataset): Map<string, DenaturalizedDataset> {
  const out = new Map<string, DenaturalizedDataset>();
  const walk = (items: DenaturalizedDataset[]): void => {
    for (const i of items) {
      const code = i['0040A043'] === undefined ? undefined : val(i, '0040A043', '00080100');
      if (typeof code === 'string') out.set(code, i);
      if (i['0040A730'] !== undefined) walk(i['0040A730'].Value as DenaturalizedDataset[]);
    }
  };
  walk((ds['0040A730']?.Value ?? []) as DenaturalizedDataset[]);
  return out;
}

test('Clean Structured Content: TEXT replaced unless it names the make and model; PNAME, dates and UIDREFs cleaned at any depth; dciodvfy adds no error', () => {
  const input = reportWithItems();
  const inputErrors = new Set(run('dciodvfy', [writeTemp('sr-items-in.dcm', input)]).lines.filter((l) => l.includes('Error')));
  const phi = [PHI.name, PHI.institution, PHI.performing, PHI.serial, PHI.station, 'PHI-CONCLUSION-55', 'Qwertyson', '20230919', 'Lesion'];
  assert.ok(contains(input, 'PHI-CONCLUSION-55') && contains(input, PHI.performing), 'the input carries the PHI');

  const shifted = deidentifyPart10(input, { uidKey: KEY, cleanStructuredContent: true, dateShiftDays: -100 });
  const after = run('dciodvfy', [writeTemp('sr-items-out.dcm', shifted.bytes)]).lines;
  assert.deepEqual(after.filter((l) => l.includes('Error') && !inputErrors.has(l)), [], after.join('\n'));
  assert.deepEqual(phi.filter((s) => contains(shifted.bytes, s)), []);
  assert.deepEqual(shifted.report.methodCodes, ['113100', '113104', '113107']);
  const items = contentByCode(read(shifted.bytes).dict);
  assert.equal(val(items.get('121071')!, '0040A160'), 'ANONYMIZED'); // Finding
  assert.equal(val(items.get('121077')!, '0040A160'), 'ANONYMIZED'); // Conclusion
  assert.equal(val(items.get('112039')!, '0040A160'), 'ANONYMIZED'); // Tracking Identifier (the label)
  assert.equal(val(items.get('121014')!, '0040A160'), 'Eco3D'); // Device Observer Manufacturer: kept, like (0008,0070)
  assert.equal(val(items.get('121015')!, '0040A160'), 'Eco3D robotic US'); // … Model Name, like (0008,1090)
  assert.equal(val(items.get('121016')!, '0040A160'), 'ANONYMIZED'); // Serial Number: device identity
  assert.equal(val(items.get('121013')!, '0040A160'), 'ANONYMIZED'); // Device Observer Name (the station)
  assert.equal(val(items.get('121008')!, '0040A123'), 'ANONYMIZED^ANONYMIZED');
  assert.equal(val(items.get('111060')!, '0040A121'), '20230611'); // −100 days, like every other date
  assert.equal(val(items.get('111061')!, '0040A122'), '101500'); // a time without its date says nothing: kept
  assert.equal(String(val(items.get('111526')!, '0040A120')).trim(), '20230611101500+0200');
  assert.equal(val(items.get('121018')!, '0040A124'), remapUid('1.2.826.0.1.3680043.10.1.1', KEY)); // = the study's new UID
  assert.equal(val(read(shifted.bytes).dict, '0020000D'), remapUid('1.2.826.0.1.3680043.10.1.1', KEY));
  // Numbers and coordinates stay.
  assert.ok(contentByCode(read(shifted.bytes).dict).has('410668003'));

  // Without a date shift: dummy date, time and datetime.
  const dummied = contentByCode(read(deidentifyPart10(input, { uidKey: KEY, cleanStructuredContent: true }).bytes).dict);
  assert.equal(val(dummied.get('111060')!, '0040A121'), '19000101');
  assert.equal(val(dummied.get('111061')!, '0040A122'), '000000');
  assert.equal(String(val(dummied.get('111526')!, '0040A120')).trim(), '19000101000000');

  // Known-safe labels and, under Retain Device Identity, the device's own name and serial stay.
  const kept = contentByCode(read(deidentifyPart10(input, { uidKey: KEY, cleanStructuredContent: true, retainDeviceIdentity: true, safeDescriptors: ['Lesion (axial)'] }).bytes).dict);
  assert.equal(val(kept.get('112039')!, '0040A160'), 'Lesion (axial)');
  assert.equal(val(kept.get('121016')!, '0040A160'), PHI.serial);
  assert.equal(val(kept.get('121013')!, '0040A160'), PHI.station);
  assert.equal(val(kept.get('121071')!, '0040A160'), 'ANONYMIZED');

  // Without the Option only the observer text is replaced: free text stays (the limit the Option lifts).
  const basic = deidentifyPart10(input, BASIC);
  assert.ok(contains(basic.bytes, 'PHI-CONCLUSION-55'));
  assert.ok(!contains(basic.bytes, PHI.performing) && !contains(basic.bytes, PHI.serial));
  assert.ok(!basic.report.methodCodes.includes('113104'));
  assert.equal(deidActionFor('0040A730', { cleanStructuredContent: true }), 'C');
  assert.equal(deidActionFor('0040A730', {}), 'D');
});

test('Clean Structured Content keeps the Acquisition Context Sequence (cleaned) where the Basic Profile empties it', () => {
  const input: DenaturalizedDataset = {
    '00080016': { vr: 'UI', Value: [ENHANCED_US_VOLUME_SOP_CLASS_UID] },
    '00400555': {
      vr: 'SQ',
      Value: [
        contentItem('', 'TEXT', codeSeq('121106', 'DCM', 'Comment'), { '0040A160': { vr: 'UT', Value: [`Patient ${PHI.name} was anxious`] } }),
        contentItem('', 'CODE', codeSeq('G-C0E8', 'SRT', 'Position'), { '0040A168': codeSeq('102538003', 'SCT', 'Supine') }),
      ],
    },
  };
  for (const item of input['00400555']!.Value as DenaturalizedDataset[]) delete item['0040A010']; // no relationship in an acquisition context
  const clean = deidentify(input, { uidKey: KEY, cleanStructuredContent: true }).dataset;
  const items = clean['00400555']!.Value as DenaturalizedDataset[];
  assert.equal(items.length, 2);
  assert.equal(val(items[0]!, '0040A160'), 'ANONYMIZED');
  assert.equal(val(items[1]!, '0040A168', '00080100'), '102538003');
  assert.deepEqual(deidentify(input, BASIC).dataset['00400555']!.Value, []); // Z: type 2 in Enhanced US Volume
});

// ---------------------------------------------------------------------------------------------
// Part-10 completeness

test('a truncated or corrupt Part-10 file is ECO3D_ERR_BAD_FILE, never read in part', () => {
  const isBadFile = (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_FILE';
  const file = inputs.frames;
  const pixelTag = Buffer.from(file).lastIndexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00]));
  assert.ok(pixelTag > 0);
  // Inside the pixel value, inside the pixel element's header, at its tag.
  for (const cut of [file.length - 1, file.length - 40, pixelTag + 14, pixelTag + 6, pixelTag + 2]) {
    assert.throws(() => deidentifyPart10(file.subarray(0, cut), BASIC), (err: unknown) => isBadFile(err) && /truncated/.test((err as Error).message), `cut at ${cut}`);
  }
  // Inside an undefined-length sequence (the report's content tree) and inside the File Meta Information.
  const report = inputs.report;
  const content = Buffer.from(report).indexOf(Buffer.from([0x40, 0x00, 0x30, 0xa7])); // (0040,A730), the last top-level element
  assert.ok(content > 0);
  for (const cut of [content + 20, content + 200, report.length - 3, 150]) {
    assert.throws(() => deidentifyPart10(report.subarray(0, cut), BASIC), isBadFile, `report cut at ${cut}`);
  }
  // Garbage after the last element, and a tag out of order.
  const trailing = new Uint8Array(file.length + 5);
  trailing.set(file);
  trailing.set([1, 2, 3, 4, 5], file.length);
  assert.throws(() => deidentifyPart10(trailing, BASIC), isBadFile);
  // Every cut from the pixel element on, whatever the byte (right before it too: an image without pixels): refused.
  for (let cut = pixelTag; cut < file.length; cut += 7) assert.throws(() => deidentifyPart10(file.subarray(0, cut), BASIC), isBadFile, `cut at ${cut}`);
  // The input is whole: accepted, from a view into a larger buffer too.
  const padded = new Uint8Array(file.length + 16);
  padded.set(file, 8);
  assert.deepEqual(deidentifyPart10(padded.subarray(8, 8 + file.length), BASIC).bytes, deidentifyPart10(file, BASIC).bytes);
});

test('dateShiftDaysForPatient: the offset from the instance\'s own Patient ID; patientPseudonym as Patient\'s Name and ID', () => {
  const seen: string[] = [];
  const out = read(
    deidentifyPart10(inputs.volume, {
      uidKey: KEY,
      dateShiftDaysForPatient: (id) => {
        seen.push(id);
        return patientDateShiftDays(KEY, id);
      },
      patientPseudonym: 'LAKE-0001',
    }).bytes,
  ).dict;
  assert.deepEqual(seen, [PHI.id]);
  const days = patientDateShiftDays(KEY, PHI.id);
  const expected = new Date(Date.UTC(2023, 8, 18) + days * 86_400_000).toISOString().slice(0, 10).replace(/-/g, '');
  assert.equal(val(out, '00080020'), expected);
  assert.equal(val(out, '00280303'), 'MODIFIED');
  assert.equal(val(out, '00100010'), 'LAKE-0001');
  assert.equal(val(out, '00100020'), 'LAKE-0001');
  const isBad = (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_REQUEST';
  assert.throws(() => deidentify({}, { uidKey: KEY, dateShiftDaysForPatient: () => 0.5 }), isBad);
  for (const p of ['', 'a\\b', 'x'.repeat(65), 'tab\there']) assert.throws(() => deidentify({}, { uidKey: KEY, patientPseudonym: p }), isBad, JSON.stringify(p));
});

test('deidentifyPart10Prefix: from a growing prefix, the output of deidentifyPart10; a large image\'s pixels stay in the file', () => {
  const big = encodeUsMultiframe({
    ...common,
    seriesInstanceUid: '1.2.826.0.1.3680043.10.1.30',
    sopInstanceUid: '1.2.826.0.1.3680043.10.1.31',
    frames: [0, 1, 2].map((k) => ({ index: k, tMs: k * 33, width: 640, height: 480, pixels: new Uint8Array(640 * 480).map((_, i) => (i + k) & 0xff) })),
    pixelSpacingMm: { x: 0.1, y: 0.1 },
    frameOfReferenceUid: '1.2.826.0.1.3680043.10.1.4',
  });
  for (const [name, file] of Object.entries({ ...inputs, big })) {
    let n = 200;
    let r = deidentifyPart10Prefix(file.subarray(0, n), file.length, ALL_OPTIONS);
    while (r.kind === 'need') {
      assert.ok(r.bytes > n && r.bytes <= file.length, `${name}: asks for ${r.bytes} after ${n}`);
      n = r.bytes;
      r = deidentifyPart10Prefix(file.subarray(0, n), file.length, ALL_OPTIONS);
    }
    const assembled = r.tail === null ? r.head : Buffer.concat([r.head, file.subarray(r.tail.offset, r.tail.offset + r.tail.length)]);
    assert.deepEqual(new Uint8Array(assembled), deidentifyPart10(file, ALL_OPTIONS).bytes, name);
    if (name === 'big') {
      assert.ok(n < file.length / 2, `read ${n} of ${file.length} bytes`);
      assert.equal(r.tail?.offset, file.length - r.tail!.length);
      assert.equal(r.tail?.length, 640 * 480 * 3 + 12); // the Pixel Data element, header included
    }
    if (name === 'report') assert.equal(r.tail, null); // no pixels: read whole
  }
  // A file shorter than its pixel data says: truncated, from the header alone.
  assert.throws(() => deidentifyPart10Prefix(big.subarray(0, 300_000), big.length - 10, BASIC), (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_FILE' && /truncated/.test(err.message));
});

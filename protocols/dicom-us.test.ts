// Enhanced US Volume and US Multi-frame writers: validated by the reference tools (dicom3tools
// dciodvfy, dcmtk dcmdump), structure checked by reading back with dcmjs, voxels round-tripped.
// The tools are required: a missing tool fails the test (spawnSync's ENOENT), never skips it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import dcmjs from 'dcmjs';
import {
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  decodeEnhancedUsVolume,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  newUid,
  type DicomUsCommon,
  type EnhancedUsVolumeInput,
  type UsMultiframeInput,
} from './dicom-us.ts';
import { Eco3dError } from './errors.ts';
import type { ImageFrame, Volume } from './imaging.ts';

const dir = mkdtempSync(join(tmpdir(), 'eco3d-dicom-us-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const NX = 24;
const NY = 20;
const NZ = 16;

function syntheticVolume(nx = NX, ny = NY, nz = NZ): Volume {
  const data = new Uint8Array(nx * ny * nz);
  // A voxel's value depends on all three indices, so a swapped axis or frame shows up.
  for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) data[(z * ny + y) * nx + x] = (x * 7 + y * 13 + z * 29) & 0xff;
  return { grid: { dims: [nx, ny, nz], spacingMm: { x: 0.3, y: 0.45, z: 0.6 }, originMm: { x: 431.5, y: -28.25, z: 12.5 } }, data };
}

const IDENTITY = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);

// Fixed UIDs so that the files are reproducible; newUid() is tested on its own.
const common: DicomUsCommon = {
  patient: { name: 'Doe^Jane', id: 'P-0042', birthDate: '1980-02-29', sex: 'F', sizeM: 1.68, weightKg: 61.5 },
  study: { studyInstanceUid: '2.25.1001', studyId: 'S1', accessionNumber: 'ACC-7', studyDateTime: '2024-05-01T10:20:30.123+02:00', description: 'Robotic 3D US abdomen' },
  equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d 0.1.0', 'dcmjs 0.52.2'], institutionName: 'Test Hospital' },
  seriesInstanceUid: '2.25.1002',
  seriesNumber: 2,
  seriesDescription: 'Reconstructed volume',
  sopInstanceUid: '2.25.1003',
  instanceNumber: 1,
  // 5 fraction digits: odd-length if written as is; the DT must still read back exactly.
  acquisitionDateTime: '2024-05-01T10:21:00.12345+02:00',
  contentDateTime: '2024-05-01T10:22:00Z',
  // Fixture codes: SNOMED CT "Abdomen" for the region; the transducer/view codes below are the
  // DCM codes of PS3.16 CIDs 12032–12035 as we understand them (dciodvfy does not check them).
  anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
};

function volumeInput(volume: Volume = syntheticVolume()): EnhancedUsVolumeInput {
  return {
    ...common,
    volume,
    acquisitionDurationS: 8.25,
    frameOfReferenceUid: '2.25.1004',
    volumeFrameOfReferenceUid: '2.25.1005',
    dimensionOrganizationUid: '2.25.1006',
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    // Probe face centre at (435, -24, 30) mm in the Reference frame, beam along −z, marker along +x.
    volumeToTransducer: new Float64Array([1, 0, 0, -435, 0, 0, -1, 30, 0, 1, 0, 24, 0, 0, 0, 1]),
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: '2.25.1007',
    volumeToTable: IDENTITY,
    // Patient lying along the robot's y axis: base x → anterior, base y → left.
    tableToPatient: new Float64Array([0, 1, 0, 0, -1, 0, 0, 450, 0, 0, 1, -100, 0, 0, 0, 1]),
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

function syntheticFrames(count: number, width = 32, height = 24): ImageFrame[] {
  return Array.from({ length: count }, (_, k) => {
    const pixels = new Uint8Array(width * height);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 3 + k * 50) & 0xff;
    // Irregular timing, as tracked frames have.
    return { index: k, tMs: 1000 + k * 33.3 + (k === 3 ? 5 : 0), width, height, pixels };
  });
}

function multiframeInput(): UsMultiframeInput {
  return { ...common, seriesInstanceUid: '2.25.1010', seriesNumber: 1, seriesDescription: 'B-mode frames', sopInstanceUid: '2.25.1011', frames: syntheticFrames(5), pixelSpacingMm: { x: 0.1, y: 0.1 }, frameOfReferenceUid: '2.25.1004' };
}

function writeTemp(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** Runs dciodvfy: exit code 0 and no `Error` line required; returns the warnings. */
function dciodvfy(file: string): string[] {
  const r = spawnSync('dciodvfy', [file], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `dciodvfy could not run (is dicom3tools installed?): ${String(r.error)}`);
  const lines = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(lines.filter((l) => l.includes('Error')), [], `dciodvfy reports errors for ${file}`);
  assert.equal(r.status, 0, `dciodvfy exit code ${r.status}:\n${lines.join('\n')}`);
  return lines.filter((l) => l.startsWith('Warning'));
}

function dcmdump(file: string): string {
  const r = spawnSync('dcmdump', ['-Un', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `dcmdump could not run (is dcmtk installed?): ${String(r.error)}`);
  assert.equal(r.status, 0, `dcmdump failed: ${r.stderr}`);
  return r.stdout;
}

function readNaturalized(bytes: Uint8Array): Record<string, any> {
  const dict = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer);
  return dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
}

test('Enhanced US Volume passes dciodvfy with no errors', (t) => {
  const file = writeTemp('volume.dcm', encodeEnhancedUsVolume(volumeInput()));
  const warnings = dciodvfy(file);
  for (const w of warnings) t.diagnostic(w);
  // The only warning allowed: dicom3tools 2022 predates PATIENT as a defined term of
  // Ultrasound Acquisition Geometry (PS3.3 C.8.24.2 lists it now).
  assert.deepEqual(
    warnings.filter((w) => !w.includes('<PATIENT>')),
    [],
  );
});

test('US Multi-frame Image passes dciodvfy, and dcentvfy agrees with the volume on study and patient', (t) => {
  const mf = writeTemp('frames.dcm', encodeUsMultiframe(multiframeInput()));
  const vol = writeTemp('volume-2.dcm', encodeEnhancedUsVolume(volumeInput()));
  const warnings = dciodvfy(mf);
  for (const w of warnings) t.diagnostic(w);
  assert.deepEqual(warnings, []);
  const r = spawnSync('dcentvfy', [mf, vol], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `dcentvfy could not run: ${String(r.error)}`);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.doesNotMatch(`${r.stdout}${r.stderr}`, /Error/);
});

test('AT values survive as tags: the three dimensions of PS3.3 C.8.24.3.3, in order', () => {
  const out = dcmdump(writeTemp('volume-at.dcm', encodeEnhancedUsVolume(volumeInput())));
  const pointers = [...out.matchAll(/\((0020,916[57])\) AT \(([0-9a-f]{4},[0-9a-f]{4})\)/g)].map((m) => `${m[1]}=${m[2]}`);
  assert.deepEqual(pointers, [
    '0020,9165=0020,9128', // Temporal Position Index
    '0020,9167=0020,9111', // in the Frame Content Sequence
    '0020,9165=0020,9301', // Image Position (Volume)
    '0020,9167=0020,930e', // in the Plane Position (Volume) Sequence
    '0020,9165=0018,9808', // Data Type
    '0020,9167=0018,9807', // in the Image Data Type Sequence
  ]);
  const mfOut = dcmdump(writeTemp('frames-at.dcm', encodeUsMultiframe(multiframeInput())));
  assert.match(mfOut, /\(0028,0009\) AT \(0018,1065\)/); // Frame Increment Pointer → Frame Time Vector
});

test('functional groups: one per-frame item per frame, macros where PS3.3 A.59-2 puts them', () => {
  const ds = readNaturalized(encodeEnhancedUsVolume(volumeInput()));
  assert.equal(ds.SOPClassUID, ENHANCED_US_VOLUME_SOP_CLASS_UID);
  assert.equal(Number(ds.NumberOfFrames), NZ);
  assert.equal(ds.PerFrameFunctionalGroupsSequence.length, NZ);
  assert.equal(ds.Rows, NY);
  assert.equal(ds.Columns, NX);
  const shared = ds.SharedFunctionalGroupsSequence[0] ?? ds.SharedFunctionalGroupsSequence;
  // Plane Orientation (Volume) and US Image Description may not be per-frame; Frame Content and
  // Plane Position (Volume) may not be shared.
  for (const k of ['PixelMeasuresSequence', 'PlaneOrientationVolumeSequence', 'PlaneOrientationSequence', 'FrameVOILUTSequence', 'ImageDataTypeSequence', 'USImageDescriptionSequence']) {
    assert.ok(k in shared, `shared group lacks ${k}`);
  }
  for (const k of ['FrameContentSequence', 'PlanePositionVolumeSequence', 'PlanePositionSequence']) assert.ok(!(k in shared), `shared group has ${k}`);
  (ds.PerFrameFunctionalGroupsSequence as Array<Record<string, any>>).forEach((f, k) => {
    assert.deepEqual(Object.keys(f).filter((key) => !key.startsWith('_')).sort(), ['FrameContentSequence', 'PlanePositionSequence', 'PlanePositionVolumeSequence']);
    const content = f.FrameContentSequence[0] ?? f.FrameContentSequence;
    assert.deepEqual(content.DimensionIndexValues, [1, k + 1, 1]);
    const pos = (f.PlanePositionVolumeSequence[0] ?? f.PlanePositionVolumeSequence).ImagePositionVolume;
    assert.deepEqual(pos, [431.5, -28.25, 12.5 + k * 0.6]);
  });
  assert.equal(ds.DimensionIndexSequence.length, 3);
  assert.equal(ds.DimensionOrganizationType, '3D');
  assert.deepEqual(ds.VolumeToTransducerMappingMatrix, Array.from(volumeInput().volumeToTransducer));
  assert.equal(ds.UltrasoundAcquisitionGeometry, 'PATIENT');
  assert.equal(ds.PatientFrameOfReferenceSource, 'TABLE');
  // The odd-length-DT pitfall: every DT is written with 26 characters and reads back exactly.
  assert.equal(ds.AcquisitionDateTime, '20240501102100.123450+0200');
});

test('US Multi-frame: frame count, frame time vector and pixels', () => {
  const input = multiframeInput();
  const ds = readNaturalized(encodeUsMultiframe(input));
  assert.equal(Number(ds.NumberOfFrames), 5);
  assert.deepEqual((ds.FrameTimeVector as string[]).map(Number), [0, 33.3, 33.3, 38.3, 28.3]);
  assert.equal(ds.FrameIncrementPointer, 0x00181065); // dcmjs reads AT back as a number
  const px = new Uint8Array(ds.PixelData[0]);
  input.frames.forEach((f, k) => assert.deepEqual(px.subarray(k * f.pixels.length, (k + 1) * f.pixels.length), f.pixels));
});

test('round trip: voxels byte-identical, grid exact', () => {
  for (const v of [syntheticVolume(), syntheticVolume(3, 3, 3) /* odd byte count: padded */, syntheticVolume(5, 4, 1)]) {
    const back = decodeEnhancedUsVolume(encodeEnhancedUsVolume(volumeInput(v)));
    assert.deepEqual(back.volume.grid.dims, v.grid.dims);
    assert.deepEqual(back.volume.grid.originMm, v.grid.originMm);
    assert.equal(back.volume.grid.spacingMm.x, v.grid.spacingMm.x);
    assert.equal(back.volume.grid.spacingMm.y, v.grid.spacingMm.y);
    assert.ok(Math.abs(back.volume.grid.spacingMm.z - v.grid.spacingMm.z) < 1e-12);
    assert.equal(Buffer.compare(back.volume.data, v.data), 0);
    assert.equal(back.sopInstanceUid, '2.25.1003');
    assert.equal(back.studyInstanceUid, '2.25.1001');
  }
});

test('a volume viewed through a subarray is encoded from its own bytes only', () => {
  const v = syntheticVolume();
  const big = new Uint8Array(v.data.length + 10);
  big.set(v.data, 5);
  const view: Volume = { grid: v.grid, data: big.subarray(5, 5 + v.data.length) };
  assert.equal(Buffer.compare(decodeEnhancedUsVolume(encodeEnhancedUsVolume(volumeInput(view))).volume.data, v.data), 0);
});

test('encoding is deterministic', () => {
  assert.deepEqual(encodeEnhancedUsVolume(volumeInput()), encodeEnhancedUsVolume(volumeInput()));
  assert.deepEqual(encodeUsMultiframe(multiframeInput()), encodeUsMultiframe(multiframeInput()));
});

test('bad files are ECO3D_ERR_BAD_FILE', () => {
  const good = encodeEnhancedUsVolume(volumeInput());
  let seed = 12345;
  const random = Uint8Array.from({ length: 4096 }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff);
  const withPrefix = random.slice();
  withPrefix.set([0x44, 0x49, 0x43, 0x4d], 128); // "DICM" then garbage
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array(0)],
    ['random', random],
    ['random after a DICM prefix', withPrefix],
    ['truncated in the pixel data', good.subarray(0, good.length - 1000)],
    ['truncated in the header', good.subarray(0, 400)],
    ['truncated in the functional groups', good.subarray(0, Math.floor(good.length / 3))],
    ['another SOP class', encodeUsMultiframe(multiframeInput())],
  ];
  for (const [name, bytes] of cases) {
    assert.throws(
      () => decodeEnhancedUsVolume(bytes),
      (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_FILE',
      name,
    );
  }
});

test('bad inputs are refused before writing', () => {
  const v = syntheticVolume();
  const badCases: Array<[string, EnhancedUsVolumeInput]> = [
    ['voxel count', volumeInput({ grid: v.grid, data: v.data.subarray(1) })],
    ['UID', { ...volumeInput(), sopInstanceUid: '1.2.03' }],
    ['date', { ...volumeInput(), acquisitionDateTime: '2024-05-01 10:21' }],
    ['non-rigid matrix', { ...volumeInput(), volumeToTransducer: new Float64Array([2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]) }],
  ];
  for (const [name, input] of badCases) assert.throws(() => encodeEnhancedUsVolume(input), Eco3dError, name);
  assert.throws(() => encodeUsMultiframe({ ...multiframeInput(), frames: [] }), Eco3dError);
  assert.throws(() => encodeUsMultiframe({ ...multiframeInput(), frames: [...syntheticFrames(2), ...syntheticFrames(1, 16, 16)] }), Eco3dError);
});

test('newUid: 2.25 UUID-derived, valid and distinct', () => {
  const uids = new Set(Array.from({ length: 100 }, () => newUid()));
  assert.equal(uids.size, 100);
  for (const uid of uids) {
    assert.match(uid, /^2\.25\.(0|[1-9][0-9]*)$/);
    assert.ok(uid.length <= 64);
    assert.ok(BigInt(uid.slice(5)) < 2n ** 128n);
  }
});

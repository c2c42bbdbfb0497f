// TID 1500 Comprehensive 3D SR writer: validated by dicom3tools dciodvfy (IOD) and read with
// dcmtk dcmdump (template id, evidence, coordinates). The tools are required: a missing tool
// fails the test (spawnSync's ENOENT), never skips it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID, encodeMeasurementReport, type MeasurementReportInput, type SrMeasurement } from './dicom-sr.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'eco3d-dicom-sr-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const DISTANCE: SrMeasurement = { kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 431.5, y: -28.25, z: 12.5 }, { x: 444, y: -28.25, z: 12.5 }], label: 'Cyst diameter' };
const AREA: SrMeasurement = {
  kind: 'area',
  valueMm2: 50,
  plane: 'sagittal',
  pointsMm: [{ x: 435, y: -25, z: 14 }, { x: 435, y: -15, z: 14 }, { x: 435, y: -15, z: 24 }, { x: 435, y: -25, z: 19 }],
};

// Fixed UIDs (the volume's match dicom-us.test.ts) so that the file is reproducible.
function reportInput(measurements: readonly SrMeasurement[] = [DISTANCE, AREA]): MeasurementReportInput {
  return {
    patient: { name: 'Doe^Jane', id: 'P-0042', birthDate: '1980-02-29', sex: 'F' },
    study: { studyInstanceUid: '2.25.1001', studyId: 'S1', accessionNumber: 'ACC-7', studyDateTime: '2024-05-01T10:20:30.123+02:00', description: 'Robotic 3D US abdomen' },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d 0.1.0', 'dcmjs 0.52.2'], stationName: 'ECO3D-1' },
    seriesInstanceUid: '2.25.2002',
    seriesNumber: 100,
    seriesDescription: 'Measurements',
    sopInstanceUid: '2.25.2003',
    instanceNumber: 1,
    contentDateTime: '2024-05-01T10:30:00Z',
    deviceObserverUid: '2.25.2004',
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: '2.25.1003', seriesInstanceUid: '2.25.1002', frameOfReferenceUid: '2.25.1005' },
    measurements,
  };
}

function writeTemp(name: string, bytes: Uint8Array): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

function run(tool: string, args: string[]): { status: number | null; out: string } {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `${tool} could not run (is it installed?): ${String(r.error)}`);
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

test('the report passes dciodvfy with no errors', (t) => {
  const { status, out } = run('dciodvfy', [writeTemp('report.dcm', encodeMeasurementReport(reportInput()))]);
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(lines.filter((l) => l.includes('Error')), [], `dciodvfy:\n${lines.join('\n')}`);
  assert.equal(status, 0, `dciodvfy exit code ${status}:\n${lines.join('\n')}`);
  for (const w of lines.filter((l) => l.startsWith('Warning'))) t.diagnostic(w);
});

test('dcmdump: TID 1500, the evidence reference and the coordinates', () => {
  const { status, out } = run('dcmdump', ['-Un', writeTemp('report-dump.dcm', encodeMeasurementReport(reportInput()))]);
  assert.equal(status, 0, out);
  assert.ok(out.includes(`(0008,0016) UI [${COMPREHENSIVE_3D_SR_SOP_CLASS_UID}]`), 'SOP Class is not Comprehensive 3D SR');
  assert.equal(COMPREHENSIVE_3D_SR_SOP_CLASS_UID, '1.2.840.10008.5.1.4.1.1.88.34');
  assert.match(out, /\(0008,0105\) CS \[DCMR\]/);
  assert.match(out, /\(0040,db00\) CS \[1500\]/);
  assert.match(out, /\(0040,db00\) CS \[1501\]/);
  // Current Requested Procedure Evidence → study → series → the volume instance.
  const evidence = out.slice(out.indexOf('(0040,a375)'));
  assert.ok(out.includes('(0040,a375)'), 'no Current Requested Procedure Evidence Sequence');
  assert.match(evidence, /\(0020,000d\) UI \[2\.25\.1001\]/);
  assert.match(evidence, /\(0020,000e\) UI \[2\.25\.1002\]/);
  assert.match(evidence, /\(0008,1150\) UI \[1\.2\.840\.10008\.5\.1\.4\.1\.1\.6\.2\]/);
  assert.match(evidence, /\(0008,1155\) UI \[2\.25\.1003\]/);
  assert.match(out, /\(0040,a491\) CS \[COMPLETE\]/);
  assert.match(out, /\(0040,a493\) CS \[UNVERIFIED\]/);
  // Values with UCUM units, and the graphics in the volume's frame.
  assert.match(out, /\(0040,a30a\) DS \[12\.5\]/);
  assert.match(out, /\(0040,a30a\) DS \[50\]/);
  assert.match(out, /\(0008,0100\) SH \[410668003\]/);
  assert.match(out, /\(0008,0100\) SH \[42798000\]/);
  assert.match(out, /\(0008,0100\) SH \[mm\]/);
  assert.match(out, /\(0008,0100\) SH \[mm2\]/);
  assert.match(out, /\(0070,0023\) CS \[POLYLINE\]/);
  assert.match(out, /\(0070,0023\) CS \[POLYGON\]/);
  assert.equal([...out.matchAll(/\(3006,0024\) UI \[2\.25\.1005\]/g)].length, 2);
  // The polygon is closed: 4 vertices + the first again = 15 floats.
  assert.match(out, /\(0070,0022\) FL 435\\-25\\14\\435\\-15\\14\\435\\-15\\24\\435\\-25\\19\\435\\-25\\14\b/);
});

test('a signed report (findings, conclusion, verifying physician, predecessor) passes dciodvfy; dcmdump shows VERIFIED and the text', (t) => {
  const signed: MeasurementReportInput = {
    ...reportInput(),
    findings: 'Hypoechoic lesion, 12 mm, left lobe.',
    conclusion: 'Follow-up in 6 months.',
    verification: { observerName: 'House^Gregory', organization: 'Eco3D Demo Hospital', dateTime: '2026-12-06T10:20:30.000+01:00' },
    predecessor: { seriesInstanceUid: '2.25.1234', sopInstanceUid: '2.25.5678' },
  };
  const file = writeTemp('signed.dcm', encodeMeasurementReport(signed));
  const { status, out } = run('dciodvfy', [file]);
  const lines = out.split('\n').filter((l) => l.trim() !== '');
  assert.deepEqual(lines.filter((l) => l.includes('Error')), [], `dciodvfy:\n${lines.join('\n')}`);
  assert.equal(status, 0);
  for (const w of lines.filter((l) => l.startsWith('Warning'))) t.diagnostic(w);
  const dump = run('dcmdump', ['-Un', '+L', file]).out;
  assert.match(dump, /\(0040,a493\) CS \[VERIFIED\]/);
  assert.match(dump, /\(0040,a075\) PN \[House\^Gregory\]/);
  assert.match(dump, /Hypoechoic lesion, 12 mm, left lobe\./);
  assert.match(dump, /Follow-up in 6 months\./);
  assert.match(dump, /\(0040,a360\) SQ/);
  // Text alone, with no measurement, is a report too.
  assert.equal(run('dciodvfy', [writeTemp('text-only.dcm', encodeMeasurementReport({ ...signed, measurements: [] }))]).status, 0);
});

test('encoding is deterministic', () => {
  assert.deepEqual(encodeMeasurementReport(reportInput()), encodeMeasurementReport(reportInput()));
});

test('bad input is refused with ECO3D_ERR_BAD_REQUEST', () => {
  const cases: Array<[string, MeasurementReportInput]> = [
    ['no measurements and no text', reportInput([])],
    ['NaN value', reportInput([{ ...DISTANCE, valueMm: Number.NaN }])],
    ['infinite value', reportInput([{ ...AREA, valueMm2: Number.POSITIVE_INFINITY }])],
    ['non-finite point', reportInput([{ ...DISTANCE, pointsMm: [{ x: 0, y: 0, z: 0 }, { x: Number.NaN, y: 0, z: 0 }] }])],
    ['polygon with 2 points', reportInput([{ ...AREA, pointsMm: [{ x: 0, y: 0, z: 0 }, { x: 1, y: 0, z: 0 }] }])],
    ['polygon with 2 distinct points, closed', reportInput([{ ...AREA, pointsMm: [{ x: 0, y: 0, z: 0 }, { x: 1, y: 0, z: 0 }, { x: 0, y: 0, z: 0 }] }])],
    ['distance with 1 point', reportInput([{ ...DISTANCE, pointsMm: [{ x: 0, y: 0, z: 0 }] }])],
    ['bad plane', reportInput([{ ...DISTANCE, plane: 'oblique' as 'axial' }])],
    ['bad frame of reference UID', { ...reportInput(), referencedVolume: { ...reportInput().referencedVolume, frameOfReferenceUid: '1.02' } }],
  ];
  for (const [name, input] of cases) {
    assert.throws(
      () => encodeMeasurementReport(input),
      (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_REQUEST',
      name,
    );
  }
});

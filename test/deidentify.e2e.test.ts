// `eco3d deidentify` as a user runs it: the real CLI in its own process, on a directory tree that
// mixes our objects (Enhanced US Volume, US Multi-frame, Comprehensive 3D SR, carrying PHI in
// attributes, private tags, nested sequences and their file names), foreign files written by
// dcmtk's dump2dcm (implicit VR, explicit big endian, deflated), a text file, a corrupt file, a
// truncated one and an image with burned-in annotation. Outputs are checked with dciodvfy (no
// error added), dcentvfy, a PHI byte scan and the UIDs across runs. dicom3tools and dcmtk are
// required: a missing tool fails the test (spawnSync's ENOENT), never skips it.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID, ENHANCED_US_VOLUME_SOP_CLASS_UID, encodeEnhancedUsVolume, encodeMeasurementReport, encodeUsMultiframe, patientDateShiftDays, remapUid, UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID, type DicomUsCommon } from '../protocols/index.ts';

const BIN = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'eco3d-deid-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const PHI = {
  name: 'Qwertyson^Zelda',
  id: 'PID-PHI-58213',
  accession: 'ACC-PHI-90417',
  institution: 'Phiville General Hospital',
  referring: 'Refmd^Phialpha',
  operator: 'Opera^Phibeta',
  serial: 'SER-PHI-3141',
  station: 'STN-PHI-7',
  privateText: 'PRIVATE-PHI-777',
  finding: 'FINDING-PHI-4242',
  foreignName: 'Foreignperson^Olga',
  foreignId: 'PID-FOREIGN-42',
  foreignOtherId: 'PID-FOREIGN-OTHER-7',
  foreignAccession: 'ACC-FOREIGN-1',
  foreignInstitution: 'Foreignville Clinic',
  foreignPrivate: 'PRIVATE-FOREIGN-PHI',
} as const;
const PHI_STRINGS = [...Object.values(PHI), 'Qwertyson', 'Foreignperson', 'Phiville', 'Foreignville', '19710314', '19600229', '20230918', '20220105', '20220106', '20220107'];

// ---------------------------------------------------------------------------------------------
// Inputs

const IDENTITY = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
const U = (n: number): string => `1.2.826.0.1.3680043.10.5.${n}`;
const common: DicomUsCommon = {
  patient: { name: PHI.name, id: PHI.id, birthDate: '1971-03-14', sex: 'F', sizeM: 1.71, weightKg: 64 },
  study: { studyInstanceUid: U(1), studyId: 'SID-1', accessionNumber: PHI.accession, studyDateTime: '2023-09-18T08:05:00.000+02:00', description: 'Liver robotic 3D', referringPhysicianName: PHI.referring },
  equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: PHI.serial, softwareVersions: ['eco3d 0.1.0'], institutionName: PHI.institution, stationName: PHI.station },
  seriesInstanceUid: U(2),
  seriesNumber: 2,
  seriesDescription: 'Reconstructed volume',
  sopInstanceUid: U(3),
  instanceNumber: 1,
  acquisitionDateTime: '2023-09-18T08:06:00.000000+02:00',
  contentDateTime: '2023-09-18T08:09:00.000000+02:00',
  anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
};

function withPrivatePhi(bytes: Uint8Array): Uint8Array {
  const d = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer);
  d.dict['00081070'] = { vr: 'PN', Value: [{ Alphabetic: PHI.operator }] };
  d.dict['00090010'] = { vr: 'LO', Value: ['ECO3D DEID TEST'] };
  d.dict['00091010'] = { vr: 'LO', Value: [PHI.privateText] };
  return new Uint8Array(d.write());
}

const volume = withPrivatePhi(
  encodeEnhancedUsVolume({
    ...common,
    volume: { grid: { dims: [6, 5, 3], spacingMm: { x: 0.5, y: 0.5, z: 1 }, originMm: { x: 10, y: -5, z: 2 } }, data: new Uint8Array(90).map((_, i) => (i * 37) & 0xff) },
    acquisitionDurationS: 6,
    frameOfReferenceUid: U(4),
    volumeFrameOfReferenceUid: U(5),
    dimensionOrganizationUid: U(6),
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: IDENTITY,
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: U(7),
    volumeToTable: IDENTITY,
    tableToPatient: IDENTITY,
    transducer: {
      description: 'Eco3D sim L640 linear',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: { view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' }, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 48 },
  }),
);
const frames = withPrivatePhi(
  encodeUsMultiframe({
    ...common,
    seriesInstanceUid: U(10),
    seriesNumber: 1,
    seriesDescription: 'B-mode frames',
    sopInstanceUid: U(11),
    frames: [0, 1, 2].map((k) => ({ index: k, tMs: 1000 + k * 33.3, width: 32, height: 24, pixels: new Uint8Array(768).map((_, i) => ((i + k) % 200) + 1) })),
    pixelSpacingMm: { x: 0.1, y: 0.1 },
    frameOfReferenceUid: U(4),
  }),
);
const report = withPrivatePhi(
  encodeMeasurementReport({
    patient: common.patient,
    study: common.study,
    equipment: common.equipment,
    seriesInstanceUid: U(20),
    seriesNumber: 100,
    sopInstanceUid: U(21),
    instanceNumber: 1,
    contentDateTime: '2023-09-20T11:00:00.000000+02:00',
    deviceObserverUid: U(22),
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: U(3), seriesInstanceUid: U(2), frameOfReferenceUid: U(5) },
    measurements: [{ kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 10, y: -5, z: 2 }, { x: 12.5, y: -5, z: 2 }], label: 'Lesion' }],
    findings: `Seen: ${PHI.finding}`,
  }),
);

/** A foreign US Multi-frame image written by dcmtk's dump2dcm (not dcmjs), in transfer syntax `ts` (dump2dcm's +t… flag). */
function foreign(name: string, ts: '+ti' | '+tb' | '+td', o: { model: string; burnedIn: 'YES' | 'NO'; rgb: boolean; sop: string; date: string }): string {
  const rows = 12;
  const columns = 16;
  const spp = o.rgb ? 3 : 1;
  const raw = join(dir, `${name}.raw`);
  writeFileSync(raw, new Uint8Array(rows * columns * spp * 2).map((_, i) => ((i * 29 + 7) % 255) + 1));
  const dump = `
(0002,0001) OB 00\\01
(0002,0002) UI =UltrasoundMultiframeImageStorage
(0002,0003) UI [${o.sop}]
(0002,0010) UI =LittleEndianExplicit
(0008,0008) CS [ORIGINAL\\PRIMARY]
(0008,0016) UI =UltrasoundMultiframeImageStorage
(0008,0018) UI [${o.sop}]
(0008,0020) DA [${o.date}]
(0008,0030) TM [093000]
(0008,0050) SH [${PHI.foreignAccession}]
(0008,0060) CS [US]
(0008,0070) LO [Acme Medical]
(0008,0080) LO [${PHI.foreignInstitution}]
(0008,0090) PN [Referrer^Foreign]
(0008,1090) LO [${o.model}]
(0009,0010) LO [ACME PRIVATE]
(0009,1001) LO [${PHI.foreignPrivate}]
(0010,0010) PN [${PHI.foreignName}]
(0010,0020) LO [${PHI.foreignId}]
(0010,0030) DA [19600229]
(0010,0040) CS [F]
(0010,1002) SQ (Sequence with explicit length #=1)
  (fffe,e000) na (Item with explicit length #=1)
    (0010,0020) LO [${PHI.foreignOtherId}]
  (fffe,e00d) na (ItemDelimitationItem for re-encoding)
(fffe,e0dd) na (SequenceDelimitationItem for re-encod.)
(0018,1063) DS [33.3]
(0020,000d) UI [1.2.826.0.1.3680043.10.6.1]
(0020,000e) UI [1.2.826.0.1.3680043.10.6.2]
(0020,0010) SH [FS1]
(0020,0011) IS [1]
(0020,0013) IS [1]
(0020,0020) CS (no value available)
(0020,0060) CS (no value available)
(0028,0002) US ${spp}
(0028,0004) CS [${o.rgb ? 'RGB' : 'MONOCHROME2'}]
${o.rgb ? '(0028,0006) US 1' : ''}
(0028,0008) IS [2]
(0028,0009) AT (0018,1063)
(0028,0010) US ${rows}
(0028,0011) US ${columns}
(0028,0100) US 8
(0028,0101) US 8
(0028,0102) US 7
(0028,0103) US 0
(0028,0301) CS [${o.burnedIn}]
(7fe0,0010) OB =${raw}
`;
  const dumpFile = join(dir, `${name}.dump`);
  writeFileSync(dumpFile, dump);
  const file = join(dir, `${name}.dcm`);
  const r = spawnSync('dump2dcm', [ts, dumpFile, file], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `dump2dcm could not run (is dcmtk installed?): ${String(r.error)}`);
  assert.equal(r.status, 0, r.stderr);
  return file;
}

// The tree: names that carry PHI, nested folders, files that are not (whole) DICOM.
const IN = join(dir, 'in');
const files = {
  volume: join(IN, 'Qwertyson_Zelda', 'liver', 'volume.dcm'),
  frames: join(IN, 'Qwertyson_Zelda', 'liver', 'frames.dcm'),
  report: join(IN, 'Qwertyson_Zelda', 'report-Qwertyson.dcm'),
  foreignImplicit: join(IN, 'Foreignperson', 'implicit.dcm'),
  foreignBig: join(IN, 'Foreignperson', 'bigendian.dcm'),
  foreignDeflated: join(IN, 'Foreignperson', 'deep', 'deflated.dcm'),
  burned: join(IN, 'burned.dcm'),
  text: join(IN, 'notes-Qwertyson.txt'),
  corrupt: join(IN, 'corrupt.dcm'),
  truncated: join(IN, 'truncated.dcm'),
} as const;
const GOOD = ['volume', 'frames', 'report', 'foreignImplicit', 'foreignBig', 'foreignDeflated'] as const;
const SOP = { volume: U(3), frames: U(11), report: U(21), foreignImplicit: '1.2.826.0.1.3680043.10.6.3', foreignBig: '1.2.826.0.1.3680043.10.6.4', foreignDeflated: '1.2.826.0.1.3680043.10.6.5', burned: '1.2.826.0.1.3680043.10.6.6' } as const;
const MASK = [{ manufacturer: 'Acme Medical', modelName: 'SonoMax 9', regions: [{ x: 0, y: 0, width: 16, height: 3 }, { x: 12, y: 10, width: 30, height: 30 }] }];

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const base = { ...process.env };
    delete base['ECO3D_DEID_KEY'];
    const child = spawn(process.execPath, [BIN, 'deidentify', ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function tree(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(root, join(e.parentPath, e.name)))
    .sort();
}

function dicom(path: string): { meta: DenaturalizedDataset; dict: DenaturalizedDataset } {
  return dcmjs.data.DicomMessage.readFile(new Uint8Array(readFileSync(path)).buffer); // a copy: a small Buffer is a view into a shared pool
}

function v(ds: DenaturalizedDataset, tag: string): string | undefined {
  const x: unknown = ds[tag]?.Value?.[0];
  if (typeof x === 'string') return x.trim();
  if (typeof x === 'number') return String(x);
  if (typeof x === 'object' && x !== null && 'Alphabetic' in x && typeof x.Alphabetic === 'string') return x.Alphabetic;
  return undefined;
}

function tool(name: string, args: string[]): { status: number | null; lines: string[] } {
  const r = spawnSync(name, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.error, undefined, `${name} could not run (are dicom3tools and dcmtk installed?): ${String(r.error)}`);
  return { status: r.status, lines: `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.trim() !== '') };
}

function shiftDa(da: string, days: number): string {
  const t = new Date(Date.UTC(Number(da.slice(0, 4)), Number(da.slice(4, 6)) - 1, Number(da.slice(6, 8))) + days * 86_400_000);
  return t.toISOString().slice(0, 10).replace(/-/g, '');
}

const KEY_FILE = join(dir, 'deid.key');
const OUT1 = join(dir, 'out1');
const OUT2 = join(dir, 'out2');
const OUT_ENV = join(dir, 'out-env');
const OUT_MASK = join(dir, 'out-mask');
const runs: Record<'first' | 'second' | 'env' | 'mask' | 'missing' | 'badMask', Run> = {} as never;
let key: Buffer;

before(async () => {
  for (const f of Object.values(files)) mkdirSync(join(f, '..'), { recursive: true });
  writeFileSync(files.volume, volume);
  writeFileSync(files.frames, frames);
  writeFileSync(files.report, report);
  writeFileSync(files.foreignImplicit, readFileSync(foreign('implicit', '+ti', { model: 'SonoMax 9', burnedIn: 'NO', rgb: true, sop: SOP.foreignImplicit, date: '20220105' })));
  writeFileSync(files.foreignBig, readFileSync(foreign('big', '+tb', { model: 'Other 1', burnedIn: 'NO', rgb: false, sop: SOP.foreignBig, date: '20220106' })));
  writeFileSync(files.foreignDeflated, readFileSync(foreign('deflated', '+td', { model: 'Other 1', burnedIn: 'NO', rgb: false, sop: SOP.foreignDeflated, date: '20220107' })));
  writeFileSync(files.burned, readFileSync(foreign('burned', '+ti', { model: 'SonoMax 9', burnedIn: 'YES', rgb: true, sop: SOP.burned, date: '20220105' })));
  writeFileSync(files.text, `Patient ${PHI.name}: see the scans\n`);
  const corrupt = Buffer.alloc(700, 0x5a);
  corrupt.write('DICM', 128, 'latin1');
  writeFileSync(files.corrupt, corrupt);
  writeFileSync(files.truncated, frames.subarray(0, frames.length - 1000)); // in the middle of the pixels
  writeFileSync(join(dir, 'masks.json'), JSON.stringify(MASK));
  writeFileSync(join(dir, 'bad-masks.json'), JSON.stringify([{ modelName: 'SonoMax 9', regions: [{ x: -4, y: 0, width: 2, height: 2 }] }]));

  // The first run creates the key; the others run side by side.
  runs.first = await cli([IN, '--out', OUT1, '--key-file', KEY_FILE]);
  key = readFileSync(KEY_FILE);
  const [second, env, mask, missing, badMask] = await Promise.all([
    cli([IN, '--out', OUT2, '--key-file', KEY_FILE]),
    cli([files.volume, files.foreignBig, '--out', OUT_ENV, '--no-date-shift', '--retain-device-identity'], { ECO3D_DEID_KEY: key.toString('hex') }),
    cli([files.burned, '--out', OUT_MASK, '--mask-config', join(dir, 'masks.json')]),
    cli([join(dir, 'no-such-dir'), '--out', join(dir, 'out-missing'), '--key-file', KEY_FILE]),
    cli([files.burned, '--out', join(dir, 'out-badmask'), '--mask-config', join(dir, 'bad-masks.json'), '--key-file', KEY_FILE]),
  ]);
  Object.assign(runs, { second, env, mask, missing, badMask });
});

const outPath = (out: string, name: keyof typeof SOP, k: Buffer = key): string => {
  const ds = dicom(files[name]).dict;
  return join(out, remapUid(v(ds, '0020000D')!, k), remapUid(v(ds, '0020000E')!, k), `${remapUid(SOP[name], k)}.dcm`);
};

// ---------------------------------------------------------------------------------------------

test('a tree of files: exit 2, each good file written under its new UIDs only, each bad one reported with its code and path', () => {
  const r = runs.first;
  assert.equal(r.code, 2, r.stderr);
  const summary = JSON.parse(r.stdout.trim()) as { filesIn: number; filesOut: number; filesFailed: number; mbIn: number; mbOut: number; seconds: number };
  assert.equal(r.stdout.trim().split('\n').length, 1, 'one summary line');
  assert.deepEqual({ ...summary, mbIn: 0, mbOut: 0, seconds: 0 }, { filesIn: 10, filesOut: 6, filesFailed: 4, mbIn: 0, mbOut: 0, seconds: 0 });
  assert.ok(summary.mbIn > 0 && summary.mbOut > 0 && summary.seconds > 0);
  assert.match(r.stderr, /created key file .*deid\.key \(32 random bytes, mode 0600\)/);
  assert.equal(key.length, 32);
  assert.equal(statSync(KEY_FILE).mode & 0o777, 0o600);
  const failed = (code: string, path: string): void => {
    assert.ok(r.stderr.split('\n').some((l) => l.startsWith(`eco3d deidentify: ${code}: ${path}: `)), `${path} reported as ${code}:\n${r.stderr}`);
  };
  failed('ECO3D_ERR_BAD_FILE', files.text);
  failed('ECO3D_ERR_BAD_FILE', files.corrupt);
  failed('ECO3D_ERR_BAD_FILE', files.truncated);
  failed('ECO3D_ERR_BURNED_IN_ANNOTATION', files.burned);
  assert.match(r.stderr, /truncated\.dcm: truncated/);
  // Named by the keyed UIDs, nothing of the input paths; no temporary file left.
  const written = tree(OUT1);
  assert.equal(written.length, 6);
  for (const p of written) assert.match(p, /^2\.25\.\d+\/2\.25\.\d+\/2\.25\.\d+\.dcm$/);
  for (const name of GOOD) assert.ok(existsSync(outPath(OUT1, name)), `${name} at ${outPath(OUT1, name)}`);
  // Our three objects are one study; the foreign ones another.
  assert.equal(new Set(written.map((p) => p.split('/')[0])).size, 2);
});

test('no PHI in any output byte (deflated data inflated first), nor in the output paths', () => {
  for (const p of tree(OUT1)) {
    const file = join(OUT1, p);
    const ts = v(dicom(file).meta, '00020010');
    let bytes = readFileSync(file);
    if (ts === '1.2.840.10008.1.2.1.99') {
      const plain = join(dir, 'inflated.dcm');
      assert.equal(tool('dcmconv', ['+te', file, plain]).status, 0);
      bytes = readFileSync(plain);
    }
    const leaks = PHI_STRINGS.filter((s) => bytes.includes(s) || p.includes(s));
    assert.deepEqual(leaks, [], `${p} holds ${leaks.join(', ')}`);
    for (const uid of [...Object.values(SOP), U(1), U(2), U(5), '1.2.826.0.1.3680043.10.6.1']) assert.ok(!bytes.includes(uid), `${p} holds ${uid}`);
  }
  // The inputs did carry it: the scan can find it.
  assert.ok(readFileSync(files.foreignImplicit).includes(PHI.foreignOtherId) && readFileSync(files.report).includes(PHI.finding));
});

test('dciodvfy adds no error to any file, ours or foreign; dcentvfy passes on our de-identified study', () => {
  const IOD = { volume: 'EnhancedUltrasoundVolume', frames: 'USMultiFrameImage', report: 'Comprehensive3DSR', foreignImplicit: 'USMultiFrameImage', foreignBig: 'USMultiFrameImage', foreignDeflated: 'USMultiFrameImage' } as const;
  for (const name of GOOD) {
    const lines = (file: string, label: string): string[] => {
      // dciodvfy does not inflate: a deflated file is checked as its explicit VR equivalent.
      if (name !== 'foreignDeflated') return tool('dciodvfy', [file]).lines;
      const plain = join(dir, `${label}-explicit.dcm`);
      assert.equal(tool('dcmconv', ['+te', file, plain]).status, 0);
      return tool('dciodvfy', [plain]).lines;
    };
    const before = lines(files[name], 'in');
    const after = lines(outPath(OUT1, name), 'out');
    assert.ok(before.includes(IOD[name]) && after.includes(IOD[name]), `${name}: dciodvfy read it as ${IOD[name]}:\n${after.join('\n')}`);
    const added = after.filter((l) => l.includes('Error') && !before.includes(l));
    assert.deepEqual(added, [], `${name}: dciodvfy errors added by de-identification`);
  }
  const ours = (['volume', 'frames', 'report'] as const).map((n) => outPath(OUT1, n));
  const r = tool('dcentvfy', ours);
  assert.equal(r.status, 0, r.lines.join('\n'));
  assert.deepEqual(r.lines.filter((l) => /Error/.test(l)), []);
  // The method is recorded: profile and options, Clean Structured Content on our SR too.
  const sr = dicom(outPath(OUT1, 'report')).dict;
  const codes = (sr['00120064']!.Value as DenaturalizedDataset[]).map((i) => v(i, '00080100'));
  assert.deepEqual(codes, ['113100', '113104', '113105', '113107', '113108']);
  assert.equal(v(sr, '00120062'), 'YES');
  assert.equal(v(dicom(outPath(OUT1, 'report')).dict, '00080016'), COMPREHENSIVE_3D_SR_SOP_CLASS_UID);
});

test('the same key file gives the same UIDs and the same bytes in a second run', () => {
  assert.equal(runs.second.code, 2, runs.second.stderr);
  assert.doesNotMatch(runs.second.stderr, /created key file/);
  assert.deepEqual(tree(OUT2), tree(OUT1));
  for (const p of tree(OUT1)) assert.ok(readFileSync(join(OUT1, p)).equals(readFileSync(join(OUT2, p))), p);
  // The SR still points at the de-identified volume.
  const sr = dicom(outPath(OUT1, 'report')).dict;
  const evidence = (sr['0040A375']!.Value![0] as DenaturalizedDataset)['00081115']!.Value![0] as DenaturalizedDataset;
  assert.equal(v(evidence['00081199']!.Value![0] as DenaturalizedDataset, '00081155'), remapUid(SOP.volume, key));
});

test('dates move by the per-patient offset of the key; ECO3D_DEID_KEY gives the same UIDs; --no-date-shift dummies dates, --retain-device-identity keeps the serial', () => {
  const ours = dicom(outPath(OUT1, 'volume')).dict;
  const shift = patientDateShiftDays(key, PHI.id);
  assert.equal(v(ours, '00080020'), shiftDa('20230918', shift));
  assert.equal(v(ours, '00280303'), 'MODIFIED');
  assert.equal(v(ours, '00101010'), '050Y'); // 52 at the study: the 5-year band
  const theirs = dicom(outPath(OUT1, 'foreignBig')).dict;
  assert.equal(v(theirs, '00080020'), shiftDa('20220106', patientDateShiftDays(key, PHI.foreignId)));
  assert.equal(v(theirs, '00100040'), 'F');

  const r = runs.env;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.deepEqual(tree(OUT_ENV), [relative(OUT1, outPath(OUT1, 'volume')), relative(OUT1, outPath(OUT1, 'foreignBig'))].sort());
  const dummied = dicom(outPath(OUT_ENV, 'volume')).dict;
  assert.ok(dummied['00080020'] === undefined || (v(dummied, '00080020') ?? '') === '' || v(dummied, '00080020') === '19000101', `Study Date ${v(dummied, '00080020')}`);
  assert.equal(v(dummied, '00280303'), 'REMOVED');
  assert.equal(v(dummied, '00181000'), PHI.serial);
  const codes = (dummied['00120064']!.Value as DenaturalizedDataset[]).map((i) => v(i, '00080100'));
  assert.deepEqual(codes, ['113100', '113104', '113105', '113108', '113109']);
});

test('burned-in annotation: refused without a mask; with --mask-config the regions are zero in every frame and sample, the rest unchanged', () => {
  const r = runs.mask;
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /random key for this run only/);
  const written = tree(OUT_MASK);
  assert.equal(written.length, 1);
  const out = dicom(join(OUT_MASK, written[0]!)).dict;
  assert.equal(v(out, '00280301'), 'NO');
  assert.ok((out['00120064']!.Value as DenaturalizedDataset[]).some((i) => v(i, '00080100') === '113101'));
  const input = new Uint8Array(dicom(files.burned).dict['7FE00010']!.Value![0] as ArrayBuffer);
  const pixels = new Uint8Array(out['7FE00010']!.Value![0] as ArrayBuffer);
  assert.equal(pixels.length, input.length);
  // RGB, planar configuration 1: per frame three planes of 12 × 16.
  let zero = 0;
  for (let i = 0; i < input.length; i++) {
    const inPlane = i % (12 * 16);
    const x = inPlane % 16;
    const y = Math.floor(inPlane / 16);
    const masked = y < 3 || (x >= 12 && y >= 10);
    if (masked) {
      assert.equal(pixels[i], 0, `byte ${i} (${x},${y})`);
      zero++;
    } else {
      assert.equal(pixels[i], input[i], `byte ${i} (${x},${y})`);
    }
  }
  assert.equal(zero, 2 * 3 * (16 * 3 + 4 * 2));
  assert.ok(!readFileSync(join(OUT_MASK, written[0]!)).includes(PHI.foreignName));
});

test('usage errors exit 1 with a code and write nothing: a missing input, a bad mask config', () => {
  assert.equal(runs.missing.code, 1);
  assert.match(runs.missing.stderr, /ECO3D_ERR_CONFIG: .*no-such-dir: no such file or directory/);
  assert.equal(existsSync(join(dir, 'out-missing')), false);
  assert.equal(runs.badMask.code, 1);
  assert.match(runs.badMask.stderr, /ECO3D_ERR_CONFIG: --mask-config .*x and y must be integers ≥ 0/);
  assert.equal(existsSync(join(dir, 'out-badmask')), false);
});

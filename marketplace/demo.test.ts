// The sandbox tenant's demo studies (demo.ts), the plugin input reader (volume-input.ts), the
// analysis SDK helpers (sdk/analysis.ts) and the example lesion-volume plugin.
//
// The plugin runs IN THE SANDBOX here (runPlugin: its own network namespace via `unshare --net`,
// setpriv to nobody, node's permission model), from its signed package unpacked, like a
// published plugin: this needs root, as marketplace/sandbox.test.ts does. The demo files are
// checked with dciodvfy (dicom3tools) and read back with dcmjs (decodeEnhancedUsVolume) as the
// independent reader.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import dcmjs from 'dcmjs';
import {
  decodeEnhancedUsVolume,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  type DicomUsCommon,
  type EnhancedUsVolumeInput,
} from '../protocols/dicom-us.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { IDENTITY_MAT4 } from '../protocols/imaging.ts';
import { deidentifyFile } from '../server/deidentify-command.ts';
import { writeDemoStudies, type DemoStudy } from './demo.ts';
import { parseManifest } from './manifest.ts';
import { generateDeveloperKey, loadDeveloperKey, packPlugin, verifyPackage } from './package.ts';
import { runPlugin, type PluginInput, type PluginOutput } from './sandbox.ts';
import { measurement, VOLUME_CONCEPT, voxelIndex, voxelVolumeMl, type AnalysisInput, type AnalysisOutput, type AnalyzeFunction } from './sdk/analysis.ts';
import { readVolumeHeader, readVolumeInput } from './volume-input.ts';

const EXAMPLE_DIR = join(dirname(fileURLToPath(import.meta.url)), 'examples', 'lesion-volume');
/** The accuracy bar for the example on the demo studies. */
const VOLUME_TOLERANCE = 0.15;

let root: string;
let demoDir: string;
let studies: DemoStudy[];

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'eco3d-demo-test-'));
  // Plugins run as nobody, who must be able to pass through to the run directories.
  await chmod(root, 0o711);
  demoDir = join(root, 'demo');
  studies = await writeDemoStudies(demoDir);
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

const study = (ref: string): DemoStudy => {
  const s = studies.find((x) => x.ref === ref);
  assert.ok(s, `demo study ${ref}`);
  return s;
};
const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const isBadFile = (pattern: RegExp) => (err: unknown): boolean => {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, 'ECO3D_ERR_BAD_FILE', err.message);
  assert.match(err.message, pattern);
  return true;
};
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const common: DicomUsCommon = {
  patient: { name: 'TEST^VOLUME', id: 'T1' },
  study: { studyInstanceUid: '2.25.7001', studyId: 'T', accessionNumber: '', studyDateTime: '2024-05-01T10:00:00Z' },
  equipment: { manufacturer: 'Eco3D', modelName: 'test', deviceSerialNumber: '0', softwareVersions: ['test'] },
  seriesInstanceUid: '2.25.7002',
  seriesNumber: 1,
  sopInstanceUid: '2.25.7003',
  instanceNumber: 1,
  acquisitionDateTime: '2024-05-01T10:00:00Z',
  contentDateTime: '2024-05-01T10:01:00Z',
  anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
};

/** An Enhanced US Volume of our encoder with the given grid (anisotropic, off-origin: the axes must not be swapped). */
function volumeFile(dims: [number, number, number], spacingMm: { x: number; y: number; z: number }, data: Uint8Array): Uint8Array {
  const input: EnhancedUsVolumeInput = {
    ...common,
    volume: { grid: { dims, spacingMm, originMm: { x: 400.1, y: -32.7, z: -51.3 } }, data },
    acquisitionDurationS: 10,
    frameOfReferenceUid: '2.25.7004',
    volumeFrameOfReferenceUid: '2.25.7005',
    dimensionOrganizationUid: '2.25.7006',
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: IDENTITY_MAT4(),
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: '2.25.7007',
    volumeToTable: IDENTITY_MAT4(),
    tableToPatient: IDENTITY_MAT4(),
    transducer: {
      description: 'test',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: { view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' }, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 64 },
  };
  return encodeEnhancedUsVolume(input);
}

/** Replaces the one occurrence of `from` in `bytes` by `to` (same length). */
function patch(bytes: Uint8Array, from: Uint8Array, to: Uint8Array): Uint8Array {
  assert.equal(from.length, to.length);
  const buf = Buffer.from(bytes);
  const at = buf.indexOf(from);
  assert.ok(at >= 0, 'pattern found');
  assert.equal(buf.indexOf(from, at + 1), -1, 'pattern unique');
  const out = new Uint8Array(bytes);
  out.set(to, at);
  return out;
}

describe('demo studies', () => {
  test('four synthetic volumes with their known answers, the 16 MiB one included', () => {
    assert.deepEqual(
      studies.map((s) => [s.ref, s.dims, s.spacingMm]),
      [
        ['demo-1', [112, 112, 96], [0.5, 0.5, 0.5]],
        ['demo-2', [128, 112, 96], [0.5, 0.5, 0.5]],
        ['demo-3', [112, 112, 96], [0.5, 0.5, 0.5]],
        ['demo-4', [256, 256, 256], [0.4, 0.4, 0.4]],
      ],
    );
    // Voxel counts of the painted ellipsoids; analytic volumes 4/3·π·abc: 2.35, 3.52 (and 0.90), none, 7.74 mL.
    assert.deepEqual(
      studies.map((s) => s.expected.largestLesionVolumeMl),
      [2.34, 3.52, null, 7.74],
    );
    for (const s of studies) {
      assert.equal(s.path, join(demoDir, `${s.ref}.dcm`));
      assert.match(s.description, /^Synthetic phantom \(not a patient\)/);
    }
    assert.ok(study('demo-4').sizeBytes > 16 * 1024 * 1024, `${study('demo-4').sizeBytes} bytes`);
  });

  test('obviously synthetic: DEMO^PHANTOM, a synthetic device, and valid DICOM (dciodvfy)', async () => {
    const s = study('demo-1');
    const bytes = await readFile(s.path);
    assert.equal(bytes.byteLength, s.sizeBytes);
    const dict = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), { untilTag: '7FE00010' });
    const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict) as Record<string, unknown>;
    const name = ds['PatientName'] as Array<{ Alphabetic?: string }> | string;
    assert.equal(typeof name === 'string' ? name : name[0]?.Alphabetic, 'DEMO^PHANTOM');
    assert.equal(ds['PatientID'], 'DEMO-PHANTOM-1');
    assert.equal(ds['PatientBirthDate'], '');
    assert.equal(ds['ManufacturerModelName'], 'Synthetic phantom');
    assert.match(String(ds['StudyDescription']), /Synthetic phantom/);
    const r = spawnSync('dciodvfy', [s.path], { encoding: 'utf8' });
    assert.equal(r.error, undefined, `dciodvfy could not run (is dicom3tools installed?): ${String(r.error)}`);
    const lines = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.includes('Error'));
    assert.deepEqual(lines, [], 'dciodvfy errors');
  });

  test('idempotent: a second run rewrites nothing; a damaged file is rewritten with the same bytes', async () => {
    const before1 = await Promise.all(studies.map((s) => stat(s.path)));
    const hash1 = await sha256(study('demo-1').path);
    const again = await writeDemoStudies(demoDir);
    assert.deepEqual(again, studies);
    const after1 = await Promise.all(studies.map((s) => stat(s.path)));
    assert.deepEqual(after1.map((st) => [st.ino, st.mtimeMs]), before1.map((st) => [st.ino, st.mtimeMs]), 'files left alone');

    await truncate(study('demo-1').path, 4096);
    const repaired = await writeDemoStudies(demoDir);
    assert.deepEqual(repaired, studies);
    assert.equal(await sha256(study('demo-1').path), hash1, 'the same bytes as the first run');
    assert.notEqual((await stat(study('demo-1').path)).ino, before1[0]!.ino, 'rewritten (renamed into place)');
    assert.equal((await stat(study('demo-2').path)).mtimeMs, before1[1]!.mtimeMs, 'the others untouched');
  });
});

describe('readVolumeInput', () => {
  test('reads each demo study exactly as dcmjs decodes it', async () => {
    for (const s of studies) {
      const v = await readVolumeInput(s.path);
      const d = decodeEnhancedUsVolume(new Uint8Array(await readFile(s.path)));
      assert.deepEqual(v.dims, s.dims);
      assert.deepEqual(v.spacingMm, s.spacingMm);
      assert.deepEqual(v.dims, d.volume.grid.dims);
      assert.ok(Buffer.from(v.voxels.buffer, v.voxels.byteOffset, v.voxels.byteLength).equals(d.volume.data), `${s.ref}: voxels`);
      // Speckle over tissue, not a blank volume.
      assert.ok(new Set(v.voxels.subarray(0, 4096)).size > 50, `${s.ref}: speckle`);
    }
  });

  test('round trip of a known anisotropic volume: x = columns, y = rows, z = frames, x fastest; odd voxel count', async () => {
    const dims: [number, number, number] = [5, 3, 7]; // 105 voxels: a pad byte in the file
    const data = Uint8Array.from({ length: 105 }, (_, p) => (p * 37 + 11) % 256);
    const file = join(root, 'aniso.dcm');
    await writeFile(file, volumeFile(dims, { x: 0.3, y: 0.45, z: 0.7 }, data));
    const v = await readVolumeInput(file);
    assert.deepEqual(v.dims, [5, 3, 7]);
    assert.deepEqual(v.spacingMm, [0.3, 0.45, 0.7]);
    assert.deepEqual([...v.voxels], [...data]);
    assert.equal(v.voxels[voxelIndex(v.dims, 4, 2, 6)], data[104]);
    assert.equal(v.voxels.byteLength, 105);
    // A buffer of its own, not a view into a larger file buffer.
    assert.equal(v.voxels.buffer.byteLength, 105);
    const h = await readVolumeHeader(file);
    assert.equal(h.sopInstanceUid, '2.25.7003');
  });

  test('a header longer than the first read (1500 frames of per-frame groups)', async () => {
    const dims: [number, number, number] = [4, 2, 1500];
    const data = Uint8Array.from({ length: 4 * 2 * 1500 }, (_, p) => p % 251);
    const file = join(root, 'many-frames.dcm');
    await writeFile(file, volumeFile(dims, { x: 0.5, y: 0.5, z: 0.25 }, data));
    const h = await readVolumeHeader(file);
    assert.ok(h.pixelDataOffset > 256 * 1024, `header of ${h.pixelDataOffset} bytes`);
    const v = await readVolumeInput(file);
    assert.deepEqual(v.dims, dims);
    assert.deepEqual(v.spacingMm, [0.5, 0.5, 0.25]);
    assert.ok(Buffer.from(v.voxels).equals(Buffer.from(data)));
  });

  test('a 16 MiB volume in well under 50 ms of its own work (header walk; the rest is one read)', async (t) => {
    const s = study('demo-4');
    await readVolumeInput(s.path); // warm-up
    const totalMs: number[] = [];
    const headerMs: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = performance.now();
      const h = await readVolumeHeader(s.path);
      const t1 = performance.now();
      const v = await readVolumeInput(s.path);
      const t2 = performance.now();
      assert.equal(v.voxels.byteLength, 16 * 1024 * 1024);
      assert.equal(h.voxelsBytes, v.voxels.byteLength);
      headerMs.push(t1 - t0);
      totalMs.push(t2 - t1);
    }
    t.diagnostic(`readVolumeInput 16 MiB: median ${median(totalMs).toFixed(1)} ms (min ${Math.min(...totalMs).toFixed(1)}); header alone median ${median(headerMs).toFixed(1)} ms`);
    // The header is the part this code controls; the read itself is the OS's (page faults of a
    // fresh 16 MiB buffer dominate on a VM). Generous bounds for a loaded CI machine.
    assert.ok(median(headerMs) < 25, `header ${median(headerMs).toFixed(1)} ms`);
    assert.ok(median(totalMs) < 250, `total ${median(totalMs).toFixed(1)} ms`);
  });

  test('a de-identified demo study (deidentifyFile) reads the same', async () => {
    const s = study('demo-2');
    const outDir = join(root, 'deid');
    await mkdir(outDir);
    const r = await deidentifyFile(s.path, { uidKey: 'demo-test-key-0123456789', cleanDescriptors: true, retainPatientCharacteristics: true, dateShiftDays: -30 }, async ({ sop }) => join(outDir, `${sop}.dcm`));
    const original = await readVolumeInput(s.path);
    const deid = await readVolumeInput(r.target);
    assert.deepEqual(deid.dims, original.dims);
    assert.deepEqual(deid.spacingMm, original.spacingMm);
    assert.ok(Buffer.from(deid.voxels).equals(Buffer.from(original.voxels)));
    // Really rewritten: new UIDs, header of another size.
    assert.notEqual((await readVolumeHeader(r.target)).sopInstanceUid, (await readVolumeHeader(s.path)).sopInstanceUid);
    assert.notEqual(r.bytesOut, r.bytesIn);
  });

  describe('refuses with ECO3D_ERR_BAD_FILE', () => {
    let good: Uint8Array;
    const write = async (name: string, bytes: Uint8Array): Promise<string> => {
      const p = join(root, name);
      await writeFile(p, bytes);
      return p;
    };
    before(async () => {
      good = await readFile(study('demo-1').path);
    });

    test('a truncated file: cut in the pixels, in the header, after the meta header', async () => {
      await assert.rejects(readVolumeInput(await write('cut-pixels.dcm', good.subarray(0, good.byteLength - 1000))), isBadFile(/truncated/));
      await assert.rejects(readVolumeInput(await write('cut-header.dcm', good.subarray(0, 3000))), isBadFile(/truncated/));
      await assert.rejects(readVolumeInput(await write('cut-meta.dcm', good.subarray(0, 200))), isBadFile(/truncated/));
      await assert.rejects(readVolumeInput(await write('empty.dcm', new Uint8Array(0))), isBadFile(/too short/));
    });

    test('not DICOM, or DICOM but not an Enhanced US Volume', async () => {
      await assert.rejects(readVolumeInput(await write('text.dcm', new TextEncoder().encode('x'.repeat(4096)))), isBadFile(/not a DICOM Part-10 file/));
      const frames = Array.from({ length: 3 }, (_, n) => ({ index: n, tMs: n * 33, width: 8, height: 6, pixels: new Uint8Array(48).fill(n * 40) }));
      const mf = encodeUsMultiframe({ ...common, frames, pixelSpacingMm: { x: 0.1, y: 0.1 } });
      await assert.rejects(readVolumeInput(await write('multiframe.dcm', mf)), isBadFile(/SOP Class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.3\.1 is not Enhanced US Volume/));
    });

    test('16-bit pixels', async () => {
      // (0028,0100) US 2 bytes, value 8 → 16.
      const bits16 = patch(good, Uint8Array.of(0x28, 0, 0, 1, 0x55, 0x53, 2, 0, 8, 0), Uint8Array.of(0x28, 0, 0, 1, 0x55, 0x53, 2, 0, 16, 0));
      await assert.rejects(readVolumeInput(await write('bits16.dcm', bits16)), isBadFile(/16-bit .*only 8-bit/));
    });

    test('compressed: another transfer syntax, or encapsulated pixel data', async () => {
      const enc = new TextEncoder();
      const rle = patch(good, enc.encode('1.2.840.10008.1.2.1\0'), enc.encode('1.2.840.10008.1.2.5\0'));
      await assert.rejects(readVolumeInput(await write('rle.dcm', rle)), isBadFile(/transfer syntax 1\.2\.840\.10008\.1\.2\.5 \(RLE Lossless\)/));
      // Pixel Data (7FE0,0010) OB with an undefined length: the encapsulated form.
      const tag = Uint8Array.of(0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0, 0);
      const at = Buffer.from(good).lastIndexOf(tag);
      assert.ok(at > 0);
      const encapsulated = new Uint8Array(good);
      new DataView(encapsulated.buffer).setUint32(at + 8, 0xffffffff, true);
      await assert.rejects(readVolumeInput(await write('encapsulated.dcm', encapsulated)), isBadFile(/encapsulated \(compressed\)/));
    });

    test('a missing file is the fs error, not a bad file', async () => {
      await assert.rejects(readVolumeInput(join(root, 'nope.dcm')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    });
  });
});

describe('analysis SDK helpers', () => {
  test('voxelVolumeMl, voxelIndex, measurement', () => {
    assert.equal(voxelVolumeMl([0.5, 0.5, 0.5]), 0.000125);
    assert.equal(voxelIndex([4, 3, 2], 1, 2, 1), 1 + 4 * (2 + 3 * 1));
    assert.deepEqual(measurement('Lesion volume', 2.5, 'ml', VOLUME_CONCEPT), { name: 'Lesion volume', value: 2.5, unit: 'ml', concept: { value: '118565006', scheme: 'SCT', meaning: 'Volume' } });
    assert.deepEqual(measurement('Count', 3, '1'), { name: 'Count', value: 3, unit: '1' });
    assert.throws(() => measurement('x', Number.NaN, 'ml'), RangeError);
    assert.throws(() => measurement('', 1, 'ml'), TypeError);
    assert.throws(() => measurement('x', 1, 'ml', { value: '', scheme: 'SCT', meaning: 'Volume' }), TypeError);
  });

  test("the SDK's types and the runner's agree (compile time)", () => {
    // Both directions, the measurement's coded concept included.
    const toRunner = (i: AnalysisInput): PluginInput => i;
    const toSdk = (i: PluginInput): AnalysisInput => i;
    const out = (o: AnalysisOutput): PluginOutput => o;
    const back = (o: PluginOutput): AnalysisOutput => o;
    for (const f of [toRunner, toSdk, out, back]) assert.equal(typeof f, 'function');
  });
});

describe('the example lesion-volume plugin', () => {
  let pluginDir: string;
  let manifest: ReturnType<typeof parseManifest>;

  before(async () => {
    // As published: packed and signed, verified, unpacked; the run uses the manifest's entry and limits.
    const key = generateDeveloperKey();
    const packed = await packPlugin(EXAMPLE_DIR, loadDeveloperKey(key.privateKeyPem));
    const verified = verifyPackage(packed, { trustedKeys: [key.publicKey] });
    manifest = verified.manifest;
    pluginDir = join(root, 'lesion-volume');
    await mkdir(pluginDir);
    for (const [name, bytes] of verified.files) await writeFile(join(pluginDir, name), bytes);
    await mkdir(join(root, 'runs'));
  });

  test('its manifest passes parseManifest', async () => {
    const m = parseManifest(JSON.parse(await readFile(join(EXAMPLE_DIR, 'manifest.json'), 'utf8')));
    assert.equal(m.id, 'org.eco3d.examples.lesion-volume');
    assert.equal(m.kind, 'analysis');
    assert.equal(m.tier, 'research');
    assert.deepEqual(m.scopes, ['study:deidentified:read', 'results:write']);
    assert.deepEqual(m.pricing, { model: 'per-use', amountCents: 150 });
    assert.equal(m.entry, 'index.mjs');
    assert.deepEqual(manifest, m);
  });

  test('returns the coded volume measurement (called directly: the SDK output shape)', async () => {
    const mod = (await import(join(EXAMPLE_DIR, 'index.mjs'))) as { analyze: AnalyzeFunction };
    const s = study('demo-1');
    const out = await mod.analyze({ volume: await readVolumeInput(s.path), study: { ref: s.ref } });
    assert.equal(out.measurements.length, 1);
    const m = out.measurements[0]!;
    assert.deepEqual({ ...m, value: 0 }, { name: 'Lesion volume', value: 0, unit: 'ml', concept: VOLUME_CONCEPT });
    assert.equal(Math.round(m.value * 100) / 100, m.value, 'rounded to 0.01 mL');
    assert.match(out.findings[0]!.text, /^Largest hypoechoic lesion: \d+\.\d\d mL at \(\d+\.\d, \d+\.\d, \d+\.\d\) mm/);
  });

  // In the sandbox (root, unshare --net, setpriv to nobody): every demo study, the 16 MiB one within the manifest's 256 MB.
  for (const ref of ['demo-1', 'demo-2', 'demo-3', 'demo-4']) {
    test(`in the sandbox, on ${ref}: the expected largest lesion within ${VOLUME_TOLERANCE * 100} %, or none`, async (t) => {
      const s = study(ref);
      const r = await runPlugin({
        pluginDir,
        entry: manifest.entry as string,
        input: { volume: await readVolumeInput(s.path), study: { ref: s.ref } },
        limits: manifest.limits,
        tmpRoot: join(root, 'runs'),
      });
      assert.equal(r.status, 'completed', JSON.stringify(r));
      const expected = s.expected.largestLesionVolumeMl;
      if (expected === null) {
        assert.deepEqual(r.output, { measurements: [], findings: [{ text: 'No hypoechoic lesion found' }] });
      } else {
        assert.equal(r.output.measurements.length, 1);
        const m = r.output.measurements[0]!;
        assert.equal(m.name, 'Lesion volume');
        assert.equal(m.unit, 'ml');
        assert.deepEqual(m.concept, VOLUME_CONCEPT);
        const error = m.value / expected - 1;
        t.diagnostic(`${ref}: ${m.value} mL against ${expected} mL (${(error * 100).toFixed(1)} %); ${r.wallMs} ms wall, ${r.cpuMs} ms CPU, ${r.peakRssMb} MB peak RSS`);
        assert.ok(Math.abs(error) <= VOLUME_TOLERANCE, `${m.value} mL, expected ${expected} mL`);
        assert.match(r.output.findings[0]!.text, new RegExp(`^Largest hypoechoic lesion: ${m.value.toFixed(2)} mL`));
        if (ref === 'demo-2') assert.match(r.output.findings[0]!.text, /1 smaller lesion \(0\.\d\d mL\)/);
      }
      // Within the manifest's 256 MB: the watchdog (RSS from /proc) would have killed it otherwise.
    });
  }
});

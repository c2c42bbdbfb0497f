// Clean Pixel Data by device-model mask: real pixel values in, every byte checked out (masked
// bytes zero, all others unchanged, the input untouched), for 8 and 16 bits, grey and RGB in both
// planar configurations, several frames; through `maskPixels`, `deidentify` (dataset) and
// `deidentifyPart10` (files in explicit, implicit and big-endian VR, compressed refused).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { deidentify, deidentifyPart10, type DeidOptions } from './deid.ts';
import { findBurnedInMask, maskPixels, nativePixelLayout, parseBurnedInMasks, type BurnedInMask, type PixelRegion } from './deid-pixels.ts';
import { encodeUsMultiframe } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

const KEY = 'a-secret-key-of-32-bytes-0123456';
const isCode = (code: string) => (err: unknown) => err instanceof Eco3dError && err.code === code;

interface Shape {
  readonly rows: number;
  readonly columns: number;
  readonly frames: number;
  readonly spp: 1 | 3;
  readonly bits: 8 | 16;
  readonly planar: 0 | 1;
}

/** Pixels with no zero byte anywhere, so a zero can only come from the mask. */
function pattern(s: Shape): Uint8Array {
  const n = s.rows * s.columns * s.spp * s.frames * (s.bits / 8);
  return new Uint8Array(n).map((_, i) => (i * 29 + 7) % 255 + 1);
}

function inAnyRegion(regions: readonly PixelRegion[], x: number, y: number): boolean {
  return regions.some((r) => x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height);
}

/** Checks every byte: zero where a region covers its pixel, the input's value elsewhere. */
function assertMasked(out: Uint8Array, input: Uint8Array, s: Shape, regions: readonly PixelRegion[]): void {
  const bps = s.bits / 8;
  const frameBytes = s.rows * s.columns * s.spp * bps;
  let zeroed = 0;
  for (let f = 0; f < s.frames; f++) {
    for (let sample = 0; sample < s.spp; sample++) {
      for (let y = 0; y < s.rows; y++) {
        for (let x = 0; x < s.columns; x++) {
          for (let b = 0; b < bps; b++) {
            const i = s.planar === 0 ? f * frameBytes + ((y * s.columns + x) * s.spp + sample) * bps + b : f * frameBytes + sample * s.rows * s.columns * bps + (y * s.columns + x) * bps + b;
            if (inAnyRegion(regions, x, y)) {
              assert.equal(out[i], 0, `frame ${f} sample ${sample} (${x},${y}) byte ${b} is not masked`);
              zeroed++;
            } else {
              assert.equal(out[i], input[i], `frame ${f} sample ${sample} (${x},${y}) byte ${b} changed`);
            }
          }
        }
      }
    }
  }
  assert.ok(zeroed > 0, 'the regions cover some pixels');
  // A file pads an odd-length value to even.
  assert.ok(out.length === input.length || (input.length % 2 === 1 && out.length === input.length + 1), `${out.length} bytes for ${input.length}`);
}

// One region inside, one crossing the right and bottom edges (clipped), one wholly outside.
const REGIONS: readonly PixelRegion[] = [
  { x: 1, y: 0, width: 3, height: 2 },
  { x: 5, y: 3, width: 100, height: 100 },
  { x: 50, y: 50, width: 4, height: 4 },
];

const SHAPES: readonly Shape[] = [
  { rows: 5, columns: 7, frames: 3, spp: 1, bits: 8, planar: 0 },
  { rows: 5, columns: 7, frames: 2, spp: 1, bits: 16, planar: 0 },
  { rows: 4, columns: 6, frames: 2, spp: 3, bits: 8, planar: 0 },
  { rows: 4, columns: 6, frames: 2, spp: 3, bits: 8, planar: 1 },
  { rows: 4, columns: 6, frames: 3, spp: 3, bits: 16, planar: 1 },
];

const label = (s: Shape): string => `${s.bits}-bit, ${s.spp === 1 ? 'grey' : `RGB planar ${s.planar}`}, ${s.frames} frames`;

function pixelDataset(s: Shape, pixels: Uint8Array, extra: DenaturalizedDataset = {}): DenaturalizedDataset {
  return {
    '00080016': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.7.2'] }, // Multi-frame Grayscale Byte SC (the shape varies; validity is not the point here)
    '00080018': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.9.3'] },
    '00080070': { vr: 'LO', Value: ['Acme Medical '] },
    '00081090': { vr: 'LO', Value: ['SonoMax 9'] },
    '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Burnedin^Patient' }] },
    '0020000D': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.9.1'] },
    '0020000E': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.9.2'] },
    '00280002': { vr: 'US', Value: [s.spp] },
    '00280004': { vr: 'CS', Value: [s.spp === 3 ? 'RGB' : 'MONOCHROME2'] },
    ...(s.spp === 3 ? { '00280006': { vr: 'US', Value: [s.planar] } } : {}),
    '00280008': { vr: 'IS', Value: [s.frames] },
    '00280010': { vr: 'US', Value: [s.rows] },
    '00280011': { vr: 'US', Value: [s.columns] },
    '00280100': { vr: 'US', Value: [s.bits] },
    '00280101': { vr: 'US', Value: [s.bits] },
    '00280102': { vr: 'US', Value: [s.bits - 1] },
    '00280103': { vr: 'US', Value: [0] },
    '00280301': { vr: 'CS', Value: ['YES'] },
    '7FE00010': { vr: s.bits === 8 ? 'OB' : 'OW', Value: [pixels.slice().buffer] },
    ...extra,
  };
}

function part10(ds: DenaturalizedDataset, transferSyntax: string): Uint8Array {
  const dict = new dcmjs.data.DicomDict({
    '00020001': { vr: 'OB', Value: [new Uint8Array([0, 1]).buffer] },
    '00020002': { vr: 'UI', Value: [ds['00080016']!.Value![0]] },
    '00020003': { vr: 'UI', Value: [ds['00080018']!.Value![0]] },
    '00020010': { vr: 'UI', Value: [transferSyntax] },
    '00020012': { vr: 'UI', Value: ['1.2.826.0.1.3680043.10.9.99'] },
  });
  dict.dict = ds;
  return new Uint8Array(dict.write());
}

function pixelsOf(bytes: Uint8Array): { ds: DenaturalizedDataset; pixels: Uint8Array } {
  const ds = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer).dict;
  return { ds, pixels: new Uint8Array(ds['7FE00010']!.Value![0] as ArrayBuffer) };
}

const MASKS: readonly BurnedInMask[] = [{ manufacturer: 'Acme Medical', modelName: 'SonoMax 9', regions: REGIONS }];

// ---------------------------------------------------------------------------------------------

for (const s of SHAPES) {
  test(`maskPixels: ${label(s)}: regions zeroed in every frame and sample, clipped at the edges, the rest and the input unchanged`, () => {
    const input = pattern(s);
    const before = input.slice();
    const ds = pixelDataset(s, input);
    const out = maskPixels(input, nativePixelLayout(ds), REGIONS);
    assertMasked(out, before, s, REGIONS);
    assert.deepEqual(input, before, 'the input is not changed');
  });
}

test('deidentify (dataset): mask applied, Burned In Annotation NO, Clean Pixel Data recorded, the input buffer untouched', () => {
  const s = SHAPES[3]!;
  const input = pattern(s);
  const ds = pixelDataset(s, input);
  const buffer = ds['7FE00010']!.Value![0] as ArrayBuffer;
  const copy = new Uint8Array(buffer).slice();
  const { dataset, report } = deidentify(ds, { uidKey: KEY, burnedInMasks: MASKS });
  assertMasked(new Uint8Array(dataset['7FE00010']!.Value![0] as ArrayBuffer), input, s, REGIONS);
  assert.deepEqual(new Uint8Array(buffer), copy, 'the input pixel buffer is not changed');
  assert.deepEqual(ds['00280301']!.Value, ['YES']);
  assert.deepEqual(dataset['00280301']!.Value, ['NO']);
  assert.deepEqual(report.methodCodes, ['113100', '113101']);
  assert.equal(report.pixelMask, MASKS[0]);
});

test('burned-in annotation without a mask is refused; a mask of another model or manufacturer does not count', () => {
  const s = SHAPES[0]!;
  const ds = pixelDataset(s, pattern(s));
  assert.throws(() => deidentify(ds, { uidKey: KEY }), isCode('ECO3D_ERR_BURNED_IN_ANNOTATION'));
  assert.throws(() => deidentify(ds, { uidKey: KEY, burnedInMasks: [{ modelName: 'SonoMax 8', regions: REGIONS }] }), isCode('ECO3D_ERR_BURNED_IN_ANNOTATION'));
  assert.throws(() => deidentify(ds, { uidKey: KEY, burnedInMasks: [{ manufacturer: 'Other', modelName: 'SonoMax 9', regions: REGIONS }] }), isCode('ECO3D_ERR_BURNED_IN_ANNOTATION'));
  try {
    deidentify(ds, { uidKey: KEY });
  } catch (err) {
    assert.match((err as Error).message, /Acme Medical.*SonoMax 9/);
  }
  // The caller vouches for its own masking: accepted, marked NO, 113101 recorded, pixels as given.
  const vouched = deidentify(ds, { uidKey: KEY, pixelDataCleaned: true });
  assert.deepEqual(vouched.dataset['00280301']!.Value, ['NO']);
  assert.ok(vouched.report.methodCodes.includes('113101'));
  // NO, or absent, without a mask: the pixels pass untouched (shared, not copied).
  const clean = pixelDataset(s, pattern(s), { '00280301': { vr: 'CS', Value: ['NO'] } });
  const out = deidentify(clean, { uidKey: KEY });
  assert.equal(out.dataset['7FE00010'], clean['7FE00010']);
  assert.equal(out.report.pixelMask, undefined);
  assert.ok(!out.report.methodCodes.includes('113101'));
});

test('a mask also applies when Burned In Annotation is NO or absent (the device model is known to burn text in)', () => {
  const s = SHAPES[0]!;
  const input = pattern(s);
  const ds = pixelDataset(s, input);
  delete ds['00280301'];
  const { dataset } = deidentify(ds, { uidKey: KEY, burnedInMasks: [{ modelName: 'SonoMax 9', regions: REGIONS }] });
  assertMasked(new Uint8Array(dataset['7FE00010']!.Value![0] as ArrayBuffer), input, s, REGIONS);
  assert.deepEqual(dataset['00280301']!.Value, ['NO']);
});

test('findBurnedInMask: trimmed exact match; a mask naming the manufacturer wins over a generic one', () => {
  const generic: BurnedInMask = { modelName: 'SonoMax 9', regions: [{ x: 0, y: 0, width: 1, height: 1 }] };
  const acme: BurnedInMask = { manufacturer: 'Acme Medical', modelName: ' SonoMax 9 ', regions: [{ x: 0, y: 0, width: 2, height: 2 }] };
  assert.equal(findBurnedInMask([generic, acme], 'Acme Medical ', 'SonoMax 9'), acme);
  assert.equal(findBurnedInMask([generic, acme], 'Other', 'SonoMax 9'), generic);
  assert.equal(findBurnedInMask([generic, acme], 'Acme Medical', 'sonomax 9'), undefined); // exact, case included
  assert.equal(findBurnedInMask([acme], undefined, 'SonoMax 9'), undefined);
  assert.equal(findBurnedInMask([generic], 'Acme', undefined), undefined);
  assert.equal(findBurnedInMask([generic], 'Acme', '  '), undefined);
});

test('bad regions and masks are ECO3D_ERR_BAD_REQUEST, in parseBurnedInMasks and in the options', () => {
  const bad: unknown[] = [
    { modelName: 'M', regions: [{ x: -1, y: 0, width: 2, height: 2 }] },
    { modelName: 'M', regions: [{ x: 0, y: 1.5, width: 2, height: 2 }] },
    { modelName: 'M', regions: [{ x: 0, y: 0, width: 0, height: 2 }] },
    { modelName: 'M', regions: [{ x: 0, y: 0, width: 2, height: '2' }] },
    { modelName: 'M', regions: [] },
    { modelName: '', regions: [{ x: 0, y: 0, width: 2, height: 2 }] },
    { manufacturer: 3, modelName: 'M', regions: [{ x: 0, y: 0, width: 2, height: 2 }] },
  ];
  for (const m of bad) {
    assert.throws(() => parseBurnedInMasks([m]), isCode('ECO3D_ERR_BAD_REQUEST'), JSON.stringify(m));
    assert.throws(() => deidentify({}, { uidKey: KEY, burnedInMasks: [m as BurnedInMask] }), isCode('ECO3D_ERR_BAD_REQUEST'), JSON.stringify(m));
  }
  assert.throws(() => parseBurnedInMasks({ modelName: 'M' }), isCode('ECO3D_ERR_BAD_REQUEST'));
  assert.deepEqual(parseBurnedInMasks([{ modelName: 'M', regions: [{ x: 0, y: 0, width: 2, height: 2 }] }]), [{ modelName: 'M', regions: [{ x: 0, y: 0, width: 2, height: 2 }] }]);
});

test('layouts the masker does not handle, and too few pixel bytes, are ECO3D_ERR_BAD_FILE', () => {
  const s = SHAPES[2]!;
  const ds = pixelDataset(s, pattern(s));
  assert.throws(() => nativePixelLayout({ ...ds, '00280004': { vr: 'CS', Value: ['YBR_FULL_422'] } }), isCode('ECO3D_ERR_BAD_FILE'));
  assert.throws(() => nativePixelLayout({ ...ds, '00280100': { vr: 'US', Value: [32] } }), isCode('ECO3D_ERR_BAD_FILE'));
  assert.throws(() => nativePixelLayout({ ...ds, '00280100': { vr: 'US', Value: [1] } }), isCode('ECO3D_ERR_BAD_FILE'));
  assert.throws(() => nativePixelLayout({ ...ds, '00280002': { vr: 'US', Value: [4] } }), isCode('ECO3D_ERR_BAD_FILE'));
  assert.throws(() => nativePixelLayout({ ...ds, '00280010': undefined as never }), isCode('ECO3D_ERR_BAD_FILE'));
  assert.throws(() => maskPixels(pattern(s).subarray(1), nativePixelLayout(ds), REGIONS), isCode('ECO3D_ERR_BAD_FILE'));
  // Fragments in the dataset (compressed frames) cannot be masked either.
  const fragments = { ...ds, '7FE00010': { vr: 'OB', Value: [new ArrayBuffer(10), new ArrayBuffer(10)] } };
  assert.throws(() => deidentify(fragments, { uidKey: KEY, burnedInMasks: MASKS }), isCode('ECO3D_ERR_BAD_FILE'));
});

// ---------------------------------------------------------------------------------------------
// Part-10 files

const SYNTAXES = {
  'explicit VR little endian': '1.2.840.10008.1.2.1',
  'implicit VR little endian': '1.2.840.10008.1.2',
  'explicit VR big endian': '1.2.840.10008.1.2.2',
} as const;

for (const [name, ts] of Object.entries(SYNTAXES)) {
  test(`deidentifyPart10 (${name}): masked pixels in every shape, the input bytes unchanged`, () => {
    for (const s of SHAPES) {
      const input = pattern(s);
      const file = part10(pixelDataset(s, input), ts);
      const copy = file.slice();
      const out = deidentifyPart10(file, { uidKey: KEY, burnedInMasks: MASKS });
      assert.deepEqual(file, copy, `${label(s)}: the input file bytes are not changed`);
      const read = pixelsOf(out.bytes);
      assert.equal(dcmjs.data.DicomMessage.readFile(out.bytes.slice().buffer).meta['00020010']!.Value![0], ts, 'same transfer syntax');
      assertMasked(read.pixels, input, s, REGIONS);
      assert.deepEqual(read.ds['00280301']!.Value, ['NO']);
      assert.ok(!Buffer.from(out.bytes).includes('Burnedin'), `${label(s)}: no PHI left`);
    }
  });
}

test('deidentifyPart10: our US Multi-frame, one device model masked, another passed through byte for byte', () => {
  const frames = [0, 1, 2].map((k) => ({ index: k, tMs: k * 33, width: 16, height: 12, pixels: new Uint8Array(192).map((_, i) => ((i + k * 7) % 200) + 1) }));
  const base = {
    patient: { name: 'Maskme^Ann', id: 'PID-MASK-1' },
    study: { studyInstanceUid: '1.2.826.0.1.3680043.10.8.1', studyId: 'S', accessionNumber: 'A', studyDateTime: '2023-09-18T08:05:00.000+02:00' },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'SER-1', softwareVersions: ['eco3d 0.1.0'] },
    seriesInstanceUid: '1.2.826.0.1.3680043.10.8.2',
    seriesNumber: 1,
    sopInstanceUid: '1.2.826.0.1.3680043.10.8.3',
    instanceNumber: 1,
    acquisitionDateTime: '2023-09-18T08:06:00.000000+02:00',
    contentDateTime: '2023-09-18T08:09:00.000000+02:00',
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
    frames,
    pixelSpacingMm: { x: 0.1, y: 0.1 },
    frameOfReferenceUid: '1.2.826.0.1.3680043.10.8.4',
  };
  const file = encodeUsMultiframe(base);
  const input = pixelsOf(file).pixels;
  const regions = [{ x: 0, y: 0, width: 16, height: 2 }];
  const masked = pixelsOf(deidentifyPart10(file, { uidKey: KEY, burnedInMasks: [{ manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', regions }] }).bytes);
  assertMasked(masked.pixels, input, { rows: 12, columns: 16, frames: 3, spp: 1, bits: 8, planar: 0 }, regions);
  const passed = deidentifyPart10(file, { uidKey: KEY, burnedInMasks: [{ modelName: 'other', regions }] });
  assert.deepEqual(pixelsOf(passed.bytes).pixels, input);
  assert.equal(passed.report.pixelMask, undefined);
  // The pixel element is the input's bytes, at the end of the output.
  assert.deepEqual(passed.bytes.subarray(passed.bytes.length - input.length), input);
});

test('deidentifyPart10: compressed pixel data with a mask to apply is ECO3D_ERR_BAD_FILE; without one it passes through', () => {
  const s = SHAPES[0]!;
  const ds = pixelDataset(s, pattern(s));
  // Three "compressed" frames (the bytes need not be a real JPEG: nothing decodes them).
  ds['7FE00010'] = { vr: 'OB', Value: [0, 1, 2].map((k) => new Uint8Array(10).fill(k + 1).buffer) };
  const file = part10(ds, '1.2.840.10008.1.2.4.50');
  assert.throws(() => deidentifyPart10(file, { uidKey: KEY, burnedInMasks: MASKS }), (err: unknown) => isCode('ECO3D_ERR_BAD_FILE')(err) && /compressed.*not transcoded/.test((err as Error).message));
  ds['00280301'] = { vr: 'CS', Value: ['NO'] };
  const out = deidentifyPart10(part10(ds, '1.2.840.10008.1.2.4.50'), { uidKey: KEY });
  const frames = dcmjs.data.DicomMessage.readFile(out.bytes.slice().buffer).dict['7FE00010']!.Value as ArrayBuffer[];
  assert.deepEqual(frames.map((f) => new Uint8Array(f)[0]), [1, 2, 3]);
});

test('the options carry masks through deidentifyPart10 checks too: a bad region is ECO3D_ERR_BAD_REQUEST before any file work', () => {
  const bad = { uidKey: KEY, burnedInMasks: [{ modelName: 'M', regions: [{ x: 0, y: -2, width: 1, height: 1 }] }] } as DeidOptions;
  assert.throws(() => deidentifyPart10(new Uint8Array(10), bad), isCode('ECO3D_ERR_BAD_REQUEST'));
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { Eco3dError } from './errors.ts';
import type { Mat4 } from './imaging.ts';
import { decodePlusSequence, encodePlusSequence, readPlusSequenceFile, writePlusSequenceFile, writePlusSequenceFileFromRaw, type PlusSequence, type PlusSequenceToWrite } from './plus-sequence.ts';
import { throwsWith } from './testing.ts';

const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));
const mat = (tx: number, ty: number, tz: number): Mat4 => new Float64Array([0, -1, 0, tx, 1, 0, 0, ty, 0, 0, 1, tz, 0, 0, 0, 1]);

const assertBadFile = (fn: () => unknown, ...fragments: string[]): void => {
  throwsWith(fn, 'ECO3D_ERR_BAD_FILE', ...fragments);
};

// A tiny hand-written PLUS sequence: 3×2 frames, 3 frames, UF orientation, frame 1's image
// INVALID, frame 2's ProbeToTracker INVALID, a transform without status, custom fields.
const HAND = [
  'ObjectType = Image', 'NDims = 3', 'BinaryData = True', 'BinaryDataByteOrderMSB = False', 'CompressedData = False',
  'DimSize = 3 2 3', 'Kinds = domain domain list', 'ElementType = MET_UCHAR', 'UltrasoundImageOrientation = UF', 'UltrasoundImageType = BRIGHTNESS',
  'Operator = someone',
  'Seq_Frame0000_ProbeToTrackerTransform = 0 -1 0 10 1 0 0 20 0 0 1 30 0 0 0 1',
  'Seq_Frame0000_ProbeToTrackerTransformStatus = OK',
  'Seq_Frame0000_ReferenceToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0',
  'Seq_Frame0000_ReferenceToTrackerTransformStatus = OK ',
  'Seq_Frame0000_StylusToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1',
  'Seq_Frame0000_Timestamp = 215.102186',
  'Seq_Frame0000_FrameNumber = 7',
  'Seq_Frame0000_ImageStatus = OK',
  'Seq_Frame0001_Timestamp = 215.2',
  'Seq_Frame0001_ImageStatus = INVALID',
  'Seq_Frame0002_ProbeToTrackerTransform = NaN garbage is fine when INVALID',
  'Seq_Frame0002_ProbeToTrackerTransformStatus = INVALID',
  'Seq_Frame0002_Timestamp = 215.3',
  'ElementDataFile = LOCAL',
].join('\n') + '\n';
const HAND_PIXELS = new Uint8Array([1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12]);

test('reads a hand-written sequence: UF flipped to MF, invalid image skipped, statuses honoured (golden)', () => {
  const s = decodePlusSequence(concat(text(HAND), HAND_PIXELS), { source: 'hand.igs.mha' });
  assert.equal(s.source, 'hand.igs.mha');
  assert.equal(s.width, 3);
  assert.equal(s.height, 2);
  assert.equal(s.frameCountInFile, 3);
  assert.deepEqual(s.skippedFrames, [1]);
  assert.equal(s.orientationInFile, 'UF');
  assert.deepEqual([...s.fields], [['Operator', 'someone']]);
  assert.deepEqual(s.frames.map((f) => f.index), [0, 2]);
  const [f0, f2] = s.frames as [PlusSequence['frames'][0], PlusSequence['frames'][0]];
  assert.deepEqual([...f0.pixels], [3, 2, 1, 6, 5, 4]); // x flipped (UF → MF)
  assert.deepEqual([...f2.pixels], [9, 8, 7, 12, 11, 10]);
  assert.equal(f0.timestampS, 215.102186);
  assert.deepEqual([...f0.transforms.keys()], ['ProbeToTracker', 'ReferenceToTracker']);
  assert.deepEqual(f0.transforms.get('ProbeToTracker'), mat(10, 20, 30));
  assert.deepEqual(f0.transforms.get('ReferenceToTracker'), new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])); // 12 numbers
  assert.deepEqual([...f0.invalidTransforms], [['StylusToTracker', 'MISSING']]);
  assert.deepEqual([...f0.fields], [['FrameNumber', '7']]);
  assert.deepEqual([...f2.transforms.keys()], []);
  assert.deepEqual([...f2.invalidTransforms], [['ProbeToTracker', 'INVALID']]);
  // MN flips rows, UN both
  const mn = decodePlusSequence(concat(text(HAND.replace('= UF', '= MN')), HAND_PIXELS));
  assert.deepEqual([...mn.frames[0]!.pixels], [4, 5, 6, 1, 2, 3]);
  const una = decodePlusSequence(concat(text(HAND.replace('= UF', '= UNA')), HAND_PIXELS));
  assert.deepEqual([...una.frames[0]!.pixels], [6, 5, 4, 3, 2, 1]);
});

function sample(frames = 4): PlusSequenceToWrite {
  return {
    width: 4,
    height: 3,
    fields: new Map([['Operator', 'x']]),
    frames: Array.from({ length: frames }, (_, i) => ({
      timestampS: 100 + i / 30,
      pixels: i === 2 ? null : Uint8Array.from({ length: 12 }, (_, k) => (k * 13 + i * 7) % 256),
      transforms: new Map([['ProbeToTracker', mat(i * 0.1, 1 / 3, -2e-7)], ['ReferenceToTracker', mat(1, 2, 3)]]),
      invalidTransforms: i === 3 ? new Map([['StylusToTracker', 'INVALID']]) : new Map<string, string>(),
      fields: new Map([['FrameNumber', String(i)]]),
    })),
  };
}

test('sequence round trip (MetaImage and NRRD, compressed and not): read → write → read is equal', () => {
  const orig = sample();
  for (const format of ['metaimage', 'nrrd'] as const) {
    for (const compress of [true, false]) {
      const a = decodePlusSequence(encodePlusSequence(orig, { format, compress }));
      assert.deepEqual(a.skippedFrames, [2]);
      assert.equal(a.frames.length, 3);
      assert.deepEqual(a.frames.map((f) => f.pixels), orig.frames.filter((f) => f.pixels !== null).map((f) => f.pixels));
      const b = decodePlusSequence(encodePlusSequence(a, { format, compress }));
      assert.deepEqual(
        b.frames.map(({ index: _i, ...rest }) => rest),
        a.frames.map(({ index: _i, ...rest }) => rest),
      );
      assert.deepEqual(b.fields, a.fields);
      assert.equal(a.frames[0]!.timestampS, 100);
      assert.deepEqual(a.frames[0]!.transforms.get('ProbeToTracker'), mat(0, 1 / 3, -2e-7));
      assert.deepEqual([...a.frames[2]!.invalidTransforms], [['StylusToTracker', 'INVALID']]);
    }
  }
});

test('sequence header and frame fields are written in PLUS order (golden)', () => {
  const bytes = encodePlusSequence(
    { width: 2, height: 1, frames: [{ timestampS: 1.5, pixels: new Uint8Array([9, 8]), transforms: new Map([['ProbeToTracker', mat(1, 2, 3)]]), fields: new Map([['FrameNumber', '1']]) }] },
    { compress: false },
  );
  const golden =
    'ObjectType = Image\nNDims = 3\nAnatomicalOrientation = RAI\nBinaryData = True\nBinaryDataByteOrderMSB = False\nCenterOfRotation = 0 0 0\n' +
    'CompressedData = False\nDimSize = 2 1 1\nElementNumberOfChannels = 1\nElementSpacing = 1 1 1\nElementType = MET_UCHAR\n' +
    'Kinds = domain domain list\nOffset = 0 0 0\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nUltrasoundImageOrientation = MF\nUltrasoundImageType = BRIGHTNESS\n' +
    'Seq_Frame0000_FrameNumber = 1\nSeq_Frame0000_ProbeToTrackerTransform = 0 -1 0 1 1 0 0 2 0 0 1 3 0 0 0 1\n' +
    'Seq_Frame0000_ProbeToTrackerTransformStatus = OK\nSeq_Frame0000_Timestamp = 1.5\nSeq_Frame0000_ImageStatus = OK\nElementDataFile = LOCAL\n';
  assert.deepEqual(bytes, concat(text(golden), new Uint8Array([9, 8])));
});

test('bad sequence files: each error names the file, the frame and the field', () => {
  const src = { source: 'S.igs.mha' };
  const good = encodePlusSequence(sample(), { compress: false });
  const goodText = Buffer.from(good).toString('latin1');
  const edit = (from: string | RegExp, to: string): Uint8Array => {
    const out = goodText.replace(from, to);
    assert.notEqual(out, goodText, `edit ${String(from)} did nothing`);
    return text(out);
  };
  assertBadFile(() => decodePlusSequence(edit(/Seq_Frame0001_ProbeToTrackerTransform = [^\n]*/, 'Seq_Frame0001_ProbeToTrackerTransform = 1 0 0 NaN 0 1 0 0 0 0 1 0 0 0 0 1'), src), 'S.igs.mha: frame 1: Seq_Frame0001_ProbeToTrackerTransform: "NaN" is not a finite number');
  assertBadFile(() => decodePlusSequence(edit(/Seq_Frame0003_ReferenceToTrackerTransform = [^\n]*/, 'Seq_Frame0003_ReferenceToTrackerTransform = 1 0 0 0 1 0 0 0 1 0 0 0 1 0 0'), src), 'frame 3: Seq_Frame0003_ReferenceToTrackerTransform: expected 16 or 12 numbers, got 15');
  assertBadFile(() => decodePlusSequence(edit(/Seq_Frame0000_ProbeToTrackerTransform = [^\n]*/, 'Seq_Frame0000_ProbeToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1 0 5 0 0 1'), src), 'frame 0: Seq_Frame0000_ProbeToTrackerTransform: the last row is 5 0 0 1');
  assertBadFile(() => decodePlusSequence(edit('Seq_Frame0000_Timestamp = 100', 'Seq_Frame0000_Timestamp = soon'), src), 'frame 0: Seq_Frame0000_Timestamp: "soon" is not a finite number');
  assertBadFile(() => decodePlusSequence(edit('Seq_Frame0003_ImageStatus = OK', 'Seq_Frame0003_ImageStatus = OK\nSeq_Frame0009_Timestamp = 1'), src), 'S.igs.mha: frame 9: DimSize: the header has fields for frame 9, but DimSize says 4 frames');
  assertBadFile(() => decodePlusSequence(edit('DimSize = 4 3 4', 'DimSize = 4 3 5'), src), 'S.igs.mha: DimSize: truncated file', 'needs 60 bytes of data, only 48');
  assertBadFile(() => decodePlusSequence(edit('DimSize = 4 3 4', 'DimSize = 4 3'), src), 'S.igs.mha: DimSize: expected 3 numbers, got 2');
  assertBadFile(() => decodePlusSequence(good.subarray(0, good.length - 1), src), 'S.igs.mha: DimSize: truncated file');
  assertBadFile(() => decodePlusSequence(good.subarray(0, 300), src), 'S.igs.mha: ElementDataFile: truncated file');
  assertBadFile(() => decodePlusSequence(edit('ElementType = MET_UCHAR', 'ElementType = MET_SHORT'), src), 'S.igs.mha: ElementType: MET_SHORT: only 8-bit');
  assertBadFile(() => decodePlusSequence(edit('UltrasoundImageOrientation = MF', 'UltrasoundImageOrientation = FM'), src), 'S.igs.mha: UltrasoundImageOrientation: FM');
  assertBadFile(() => decodePlusSequence(edit('UltrasoundImageType = BRIGHTNESS', 'UltrasoundImageType = RF_REAL'), src), 'UltrasoundImageType: RF_REAL: only B-mode');
  assertBadFile(() => decodePlusSequence(edit('Seq_Frame0000_Timestamp', 'Seq_FrameX_Timestamp'), src), 'S.igs.mha: Seq_FrameX_Timestamp: is not a Seq_FrameNNNN_<Name> field');
  const z = encodePlusSequence(sample(), { compress: true });
  const corrupt = new Uint8Array(z);
  corrupt[corrupt.length - 10] = corrupt[corrupt.length - 10]! ^ 0xff;
  corrupt[corrupt.length - 11] = corrupt[corrupt.length - 11]! ^ 0xff;
  assertBadFile(() => decodePlusSequence(corrupt, src), 'S.igs.mha: CompressedData: corrupt or truncated zlib data');
  assertBadFile(() => decodePlusSequence(z.subarray(0, z.length - 4), src), 'S.igs.mha: CompressedDataSize: truncated file');
  const nrrd = encodePlusSequence(sample(), { format: 'nrrd' });
  assertBadFile(() => decodePlusSequence(nrrd.subarray(0, nrrd.length - 8), { source: 'S.igs.nrrd' }), 'S.igs.nrrd: encoding: corrupt or truncated gzip data');
  const zlibDims = concat(text('ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nCompressedData = True\nElementDataFile = LOCAL\n'), deflateSync(Buffer.alloc(4)));
  assertBadFile(() => decodePlusSequence(zlibDims, src), 'S.igs.mha: DimSize: DimSize = 2 2 2 needs 8 bytes, the compressed data holds 4');
});

test('file helpers write and read .igs.mha, .mhd and .igs.nrrd', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-seq-'));
  try {
    for (const name of ['a.igs.mha', 'b.igs.mhd', 'c.igs.nrrd']) {
      await writePlusSequenceFile(join(dir, name), sample(3));
      const s = await readPlusSequenceFile(join(dir, name));
      assert.equal(s.source, join(dir, name));
      assert.equal(s.frames.length, 2);
      assert.deepEqual(s.skippedFrames, [2]);
    }
    await assert.rejects(readPlusSequenceFile(join(dir, 'missing.igs.mha')), (e: Eco3dError) => e.code === 'ECO3D_ERR_NOT_FOUND');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a spooled sequence (pixels already in a raw file) is the same file, uncompressed byte for byte, compressed once decoded', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-seq-spool-'));
  try {
    // Every frame valid: a spool holds the pixels of rendered frames only.
    const seq: PlusSequenceToWrite = { ...sample(4), frames: sample(4).frames.map((f, i) => ({ ...f, pixels: Uint8Array.from({ length: 12 }, (_, k) => (k * 7 + i) % 256) })) };
    const raw = join(dir, 'frames.raw');
    await writeFile(raw, Buffer.concat(seq.frames.map((f) => f.pixels!)));
    const meta = { ...seq, frames: seq.frames.map(({ pixels: _pixels, ...rest }) => rest) };
    await writePlusSequenceFileFromRaw(join(dir, 'plain.igs.mha'), meta, raw, { compress: false });
    assert.deepEqual(new Uint8Array(await readFile(join(dir, 'plain.igs.mha'))), encodePlusSequence(seq, { compress: false }));
    await writePlusSequenceFileFromRaw(join(dir, 'z.igs.mha'), meta, raw, { compress: true });
    const back = await readPlusSequenceFile(join(dir, 'z.igs.mha'));
    const want = decodePlusSequence(encodePlusSequence(seq, { compress: true }), { source: 'x' });
    assert.deepEqual(back.frames.map((f) => Array.from(f.pixels)), want.frames.map((f) => Array.from(f.pixels)));
    assert.deepEqual(back.frames.map((f) => f.timestampS), want.frames.map((f) => f.timestampS));
    // A spool that does not hold the frames it claims is refused.
    await writeFile(raw, Buffer.alloc(11));
    await assert.rejects(writePlusSequenceFileFromRaw(join(dir, 'bad.igs.mha'), meta, raw), (e: Eco3dError) => e.code === 'ECO3D_ERR_BAD_FILE' && /48/.test(e.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { deflateSync } from 'node:zlib';
import { Eco3dError } from './errors.ts';
import type { Volume } from './imaging.ts';
import { decodeMetaImageVolume, encodeMetaImageVolume, readMetaImageVolumeFile, writeMetaImageVolumeFile } from './metaimage.ts';
import { throwsWith } from './testing.ts';

function sampleVolume(): Volume {
  const dims = [5, 4, 3] as const;
  const data = new Uint8Array(dims[0] * dims[1] * dims[2]);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + 11) % 256;
  return { grid: { originMm: { x: -74.5217, y: 165.573, z: 0.1 + 0.2 }, spacingMm: { x: 0.5, y: 0.25, z: 1 / 3 }, dims: [...dims] }, data };
}

const text = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const concat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

const assertBadFile = (fn: () => unknown, ...fragments: string[]): void => {
  throwsWith(fn, 'ECO3D_ERR_BAD_FILE', ...fragments);
};

test('volume round trip: read(write(v)) equals v, compressed and not', () => {
  const v = sampleVolume();
  for (const compress of [true, false]) {
    const back = decodeMetaImageVolume(encodeMetaImageVolume(v, { compress }));
    assert.deepEqual(back.grid, v.grid);
    assert.deepEqual(back.data, v.data);
    // and once more: write(read(write(v))) is byte-identical
    assert.deepEqual(encodeMetaImageVolume(back, { compress }), encodeMetaImageVolume(v, { compress }));
  }
});

test('volume header is written as PLUS VolumeReconstructor writes it (golden)', () => {
  const v: Volume = { grid: { originMm: { x: -1.5, y: 2, z: 0 }, spacingMm: { x: 0.5, y: 0.5, z: 0.5 }, dims: [2, 2, 1] }, data: new Uint8Array([0, 1, 2, 255]) };
  const bytes = encodeMetaImageVolume(v, { compress: false, extraFields: { Comment: 'eco3d' } });
  const golden =
    'ObjectType = Image\nNDims = 3\nAnatomicalOrientation = RAI\nBinaryData = True\nBinaryDataByteOrderMSB = False\n' +
    'CenterOfRotation = 0 0 0\nComment = eco3d\nCompressedData = False\nDimSize = 2 2 1\nElementNumberOfChannels = 1\n' +
    'ElementSpacing = 0.5 0.5 0.5\nElementType = MET_UCHAR\nKinds = domain domain domain\nOffset = -1.5 2 0\n' +
    'TransformMatrix = 1 0 0 0 1 0 0 0 1\nUltrasoundImageOrientation = MFA\nUltrasoundImageType = BRIGHTNESS\n' +
    'Seq_Frame0000_ImageStatus = OK\nElementDataFile = LOCAL\n';
  assert.deepEqual(bytes, concat(text(golden), new Uint8Array([0, 1, 2, 255])));
  const z = encodeMetaImageVolume(v);
  const zt = Buffer.from(z).toString('latin1');
  assert.match(zt, /CompressedData = True\nCompressedDataSize = (\d+)\n/);
  const size = Number(/CompressedDataSize = (\d+)/.exec(zt)![1]);
  assert.equal(z.length - zt.indexOf('ElementDataFile = LOCAL\n') - 'ElementDataFile = LOCAL\n'.length, size);
});

test('reads a hand-written MetaIO file: defaults, CRLF line ends, MSB shorts converted on request', () => {
  const header = 'ObjectType = Image\r\nNDims = 3\r\nDimSize = 2 1 1\r\nElementType = MET_SHORT\r\nBinaryDataByteOrderMSB = True\r\nElementDataFile = LOCAL\r\n';
  const file = concat(text(header), new Uint8Array([0x01, 0x00, 0xff, 0xff])); // 256, -1 big-endian
  assertBadFile(() => decodeMetaImageVolume(file, { source: 'short.mha' }), 'short.mha: ElementType: MET_SHORT', "convert: 'clamp'");
  const v = decodeMetaImageVolume(file, { convert: 'clamp' });
  assert.deepEqual([...v.data], [255, 0]);
  assert.deepEqual(v.grid, { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [2, 1, 1] });
  const f32 = Buffer.alloc(8);
  f32.writeFloatLE(12.6, 0);
  f32.writeFloatLE(NaN, 4);
  const vf = decodeMetaImageVolume(concat(text('ObjectType = Image\nNDims = 3\nDimSize = 2 1 1\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n'), f32), { convert: 'clamp' });
  assert.deepEqual([...vf.data], [13, 0]);
});

test('bad volume files: each a clear ECO3D_ERR_BAD_FILE naming the file and field', () => {
  const good = encodeMetaImageVolume(sampleVolume(), { compress: false });
  const goodZ = encodeMetaImageVolume(sampleVolume(), { compress: true });
  const src = { source: 'V.mha' };
  assertBadFile(() => decodeMetaImageVolume(good.subarray(0, good.length - 7), src), 'V.mha: DimSize: truncated file', 'needs 60 bytes', 'only 53');
  assertBadFile(() => decodeMetaImageVolume(concat(good, new Uint8Array(3)), src), 'V.mha: DimSize', '63 follow the header');
  assertBadFile(() => decodeMetaImageVolume(good.subarray(0, 100), src), 'V.mha: ElementDataFile: truncated file: the header ends before ElementDataFile');
  assertBadFile(() => decodeMetaImageVolume(goodZ.subarray(0, goodZ.length - 5), src), 'V.mha: CompressedDataSize: truncated file');
  const corrupt = new Uint8Array(goodZ);
  for (let i = corrupt.length - 20; i < corrupt.length - 4; i++) corrupt[i] = corrupt[i]! ^ 0x5a;
  assertBadFile(() => decodeMetaImageVolume(corrupt, src), 'V.mha: CompressedData: corrupt or truncated zlib data');
  const wrongDims = Buffer.from(good).toString('latin1').replace('DimSize = 5 4 3', 'DimSize = 5 4 2');
  assertBadFile(() => decodeMetaImageVolume(text(wrongDims), src), 'V.mha: DimSize', 'DimSize = 5 4 2 needs 40 bytes');
  const wrongDimsZ = Buffer.from(goodZ).toString('latin1').replace('DimSize = 5 4 3', 'DimSize = 5 4 4');
  assertBadFile(() => decodeMetaImageVolume(text(wrongDimsZ), src), 'V.mha: DimSize', 'needs 80 bytes, the compressed data holds 60');
  const bigDimsZ = Buffer.from(goodZ).toString('latin1').replace('DimSize = 5 4 3', 'DimSize = 5 4 1');
  assertBadFile(() => decodeMetaImageVolume(text(bigDimsZ), src), 'V.mha: DimSize', 'holds more than the 20 bytes');
  assertBadFile(() => decodeMetaImageVolume(text('hello world\n'), src), 'V.mha: not a MetaImage file');
  assertBadFile(() => decodeMetaImageVolume(new Uint8Array(0), src), 'V.mha: empty file');
  const garbled = Buffer.from(good).toString('latin1').replace('ElementSpacing = 0.5 0.25', 'ElementSpacing = 0.5 nan');
  assertBadFile(() => decodeMetaImageVolume(text(garbled), src), 'V.mha: ElementSpacing: "nan" is not a finite number');
  const rotated = Buffer.from(good).toString('latin1').replace('TransformMatrix = 1 0 0 0 1 0 0 0 1', 'TransformMatrix = 0 1 0 1 0 0 0 0 1');
  assertBadFile(() => decodeMetaImageVolume(text(rotated), src), 'V.mha: TransformMatrix', 'axis-aligned');
  const zlibOk = deflateSync(Buffer.alloc(4));
  const noSize = concat(text('ObjectType = Image\nNDims = 3\nDimSize = 2 2 1\nElementType = MET_UCHAR\nCompressedData = True\nElementDataFile = LOCAL\n'), zlibOk);
  assert.deepEqual([...decodeMetaImageVolume(noSize).data], [0, 0, 0, 0]); // CompressedDataSize is optional
});

test('file helpers: .mha and .mhd + .zraw/.raw, errors name the path', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-mha-'));
  try {
    const v = sampleVolume();
    await writeMetaImageVolumeFile(join(dir, 'v.mha'), v);
    assert.deepEqual((await readMetaImageVolumeFile(join(dir, 'v.mha'))).data, v.data);
    await writeMetaImageVolumeFile(join(dir, 'w.mhd'), v, { compress: false });
    await writeMetaImageVolumeFile(join(dir, 'z.mhd'), v);
    assert.deepEqual((await readdir(dir)).sort(), ['v.mha', 'w.mhd', 'w.raw', 'z.mhd', 'z.zraw']);
    assert.match(await readFile(join(dir, 'z.mhd'), 'latin1'), /ElementDataFile = z\.zraw\n$/);
    for (const name of ['w.mhd', 'z.mhd']) {
      const back = await readMetaImageVolumeFile(join(dir, name));
      assert.deepEqual(back.grid, v.grid);
      assert.deepEqual(back.data, v.data);
    }
    await rm(join(dir, 'w.raw'));
    await assert.rejects(readMetaImageVolumeFile(join(dir, 'w.mhd')), (e: Eco3dError) => e.code === 'ECO3D_ERR_NOT_FOUND' && e.message.includes('w.raw'));
    await assert.rejects(readMetaImageVolumeFile(join(dir, 'nope.mha')), (e: Eco3dError) => e.code === 'ECO3D_ERR_NOT_FOUND' && e.message.includes('nope.mha'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

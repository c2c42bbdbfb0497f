import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { Volume } from './imaging.ts';
import { decodeNrrdVolume, encodeNrrdVolume } from './nrrd.ts';
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

/** A hand-written header (fields as given) followed by `data`. */
function nrrd(fields: Record<string, string>, data: Uint8Array, magic = 'NRRD0004'): Uint8Array {
  const lines = [magic, ...Object.entries(fields).map(([k, v]) => `${k}: ${v}`), '', ''];
  return concat(text(lines.join('\n')), data);
}
const goodFields = (): Record<string, string> => ({
  type: 'uint8',
  dimension: '3',
  space: '3D-right-handed',
  sizes: '2 2 1',
  'space directions': '(0.5,0,0) (0,0.5,0) (0,0,1)',
  encoding: 'raw',
  'space origin': '(1,2,3)',
});
const four = new Uint8Array([1, 2, 3, 4]);

test('round trip: voxels and geometry come back identical, raw and gzip, and re-encode byte-identically', () => {
  const v = sampleVolume();
  for (const compress of [false, true]) {
    const bytes = encodeNrrdVolume(v, { compress });
    const back = decodeNrrdVolume(bytes);
    assert.deepEqual(back.grid, v.grid);
    assert.deepEqual(back.data, v.data);
    assert.deepEqual(encodeNrrdVolume(back, { compress }), bytes);
  }
  // gzip is the default and does shrink a compressible volume
  const flat: Volume = { grid: v.grid, data: new Uint8Array(v.data.length).fill(7) };
  assert.ok(encodeNrrdVolume(flat).length < encodeNrrdVolume(flat, { compress: false }).length);
  assert.match(Buffer.from(encodeNrrdVolume(flat)).toString('latin1'), /\nencoding: gzip\n/);
});

test('header is what Slicer/ITK/pynrrd expect (golden)', () => {
  const v: Volume = { grid: { originMm: { x: -1.5, y: 2, z: 0 }, spacingMm: { x: 0.5, y: 0.25, z: 2 }, dims: [2, 2, 1] }, data: new Uint8Array([0, 1, 2, 255]) };
  const bytes = encodeNrrdVolume(v, { compress: false });
  const golden =
    'NRRD0004\n' +
    '# Eco3D volume: robot base frame (right-handed, z up), millimetres\n' +
    'type: uint8\n' +
    'dimension: 3\n' +
    'space: 3D-right-handed\n' +
    'sizes: 2 2 1\n' +
    'space directions: (0.5,0,0) (0,0.25,0) (0,0,2)\n' +
    'kinds: domain domain domain\n' +
    'encoding: raw\n' +
    'space units: "mm" "mm" "mm"\n' +
    'space origin: (-1.5,2,0)\n' +
    '\n';
  assert.equal(Buffer.from(bytes.subarray(0, bytes.length - 4)).toString('latin1'), golden);
  assert.deepEqual([...bytes.subarray(bytes.length - 4)], [0, 1, 2, 255]);
});

test('reads what other writers produce: LPS space, CRLF lines, comments, key/value pairs, gz', () => {
  const f = { ...goodFields(), space: 'left-posterior-superior', encoding: 'gz', 'space directions': '(0.5, 0, 0) (0, 0.5, 0) (0, 0, 1)' };
  const header = `NRRD0005\r\n# written by hand\r\n${Object.entries(f).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\nquality:=good\r\n\r\n`;
  const v = decodeNrrdVolume(concat(text(header), gzipSync(four)));
  assert.deepEqual(v.grid, { originMm: { x: 1, y: 2, z: 3 }, spacingMm: { x: 0.5, y: 0.5, z: 1 }, dims: [2, 2, 1] });
  assert.deepEqual([...v.data], [1, 2, 3, 4]);
});

test('wrong magic, empty and old-version files are refused', () => {
  assertBadFile(() => decodeNrrdVolume(new Uint8Array(0)), 'empty file');
  assertBadFile(() => decodeNrrdVolume(text('ObjectType = Image\nNDims = 3\n\n')), 'not a NRRD file');
  assertBadFile(() => decodeNrrdVolume(text('PK\x03\x04')), 'not a NRRD file');
  assertBadFile(() => decodeNrrdVolume(nrrd(goodFields(), four, 'NRRD0003')), 'NRRD0003', 'only NRRD0004 and NRRD0005');
});

test('truncated files are refused: header without its blank line, data short, gzip cut', () => {
  const full = encodeNrrdVolume(sampleVolume(), { compress: false });
  const headerEnd = Buffer.from(full).indexOf('\n\n') + 2;
  assertBadFile(() => decodeNrrdVolume(full.subarray(0, headerEnd - 1)), 'truncated file', 'empty line');
  assertBadFile(() => decodeNrrdVolume(full.subarray(0, 5)), 'not a NRRD file');
  assertBadFile(() => decodeNrrdVolume(full.subarray(0, full.length - 1)), '<buffer>: sizes: truncated file', 'need 60 bytes', 'only 59');
  const gz = encodeNrrdVolume(sampleVolume(), { compress: true });
  assertBadFile(() => decodeNrrdVolume(gz.subarray(0, gz.length - 10)), 'encoding', 'corrupt or truncated gzip');
  // the file name given as source is in the message
  assertBadFile(() => decodeNrrdVolume(full.subarray(0, 30), { source: 'scan.nrrd' }), 'scan.nrrd: ');
});

test('unsupported types, dimensions, encodings, spaces and detached data are refused by name', () => {
  const bad = (over: Record<string, string>, data: Uint8Array = four): Uint8Array => nrrd({ ...goodFields(), ...over }, data);
  assertBadFile(() => decodeNrrdVolume(bad({ type: 'float' })), 'type', 'unsupported type "float"');
  assertBadFile(() => decodeNrrdVolume(bad({ type: 'short' })), 'unsupported type "short"');
  assertBadFile(() => decodeNrrdVolume(bad({ dimension: '4', sizes: '2 2 1 1' })), 'dimension', '"4"');
  assertBadFile(() => decodeNrrdVolume(bad({ encoding: 'ascii' })), 'encoding', 'unsupported encoding "ascii"');
  assertBadFile(() => decodeNrrdVolume(bad({ encoding: 'bzip2' })), 'unsupported encoding "bzip2"');
  assertBadFile(() => decodeNrrdVolume(bad({ space: 'right-anterior-superior' })), 'space', 'unsupported space');
  assertBadFile(() => decodeNrrdVolume(bad({ 'data file': 'scan.raw' }, new Uint8Array(0))), 'data file', 'detached data');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space units': '"m" "m" "m"' })), 'space units', 'millimetres');
  assertBadFile(() => decodeNrrdVolume(bad({ 'byte skip': '-1' })), 'byte skip');
  assertBadFile(() => decodeNrrdVolume(bad({ kinds: 'RGB-color domain domain' })), 'kinds');
});

test('malformed geometry is refused by field', () => {
  const bad = (over: Record<string, string>): Uint8Array => nrrd({ ...goodFields(), ...over }, four);
  const noOrigin = goodFields();
  delete noOrigin['space origin'];
  assertBadFile(() => decodeNrrdVolume(nrrd(noOrigin, four)), 'space origin: is missing');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space origin': '(1,2)' })), 'space origin', '2 components');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space origin': '(1,nan,3)' })), 'space origin', '"nan" is not a finite number');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space directions': '(0.5,0.1,0) (0,0.5,0) (0,0,1)' })), 'space directions', 'not axis-aligned');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space directions': '(-0.5,0,0) (0,0.5,0) (0,0,1)' })), 'spacing must be positive');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space directions': '(0.5,0,0) (0,0.5,0)' })), 'expected 3 vectors');
  assertBadFile(() => decodeNrrdVolume(bad({ 'space directions': 'none (0,0.5,0) (0,0,1)' })), 'no space direction');
  assertBadFile(() => decodeNrrdVolume(bad({ sizes: '2 2' })), 'sizes', 'expected 3 sizes');
  assertBadFile(() => decodeNrrdVolume(bad({ sizes: '2 0 1' })), 'sizes', '"0" is not a positive integer');
  assertBadFile(() => decodeNrrdVolume(text('NRRD0004\ntype uint8\n\n')), 'header line 2 is not "field: value"');
  assertBadFile(() => decodeNrrdVolume(text('NRRD0004\ntype: uint8\ntype: uint8\n\n')), 'type: appears twice');
});

test('data size mismatch is refused, raw and gzip (and an oversized gzip is not inflated whole)', () => {
  const v = sampleVolume();
  const raw = encodeNrrdVolume(v, { compress: false });
  assertBadFile(() => decodeNrrdVolume(concat(raw, new Uint8Array(1))), 'sizes', 'need 60 bytes of data, but 61 follow');
  const withSizes = (sizes: string, data: Uint8Array): Uint8Array => nrrd({ ...goodFields(), sizes, encoding: 'gzip' }, gzipSync(data));
  assertBadFile(() => decodeNrrdVolume(withSizes('2 2 1', new Uint8Array(3))), 'sizes', 'need 4 bytes, the gzip data holds 3');
  assertBadFile(() => decodeNrrdVolume(withSizes('2 2 1', new Uint8Array(1 << 20))), 'sizes', 'holds more than the 4 bytes');
});

test('encoding refuses a malformed volume with a clear error', () => {
  const v = sampleVolume();
  throwsWith(() => encodeNrrdVolume({ ...v, data: v.data.subarray(1) }), 'ECO3D_ERR_BAD_REQUEST', '59 voxels');
  throwsWith(() => encodeNrrdVolume({ ...v, grid: { ...v.grid, spacingMm: { x: 0, y: 1, z: 1 } } }), 'ECO3D_ERR_NOT_FINITE');
  throwsWith(() => encodeNrrdVolume({ ...v, grid: { ...v.grid, originMm: { x: Number.NaN, y: 0, z: 0 } } }), 'ECO3D_ERR_NOT_FINITE');
});

// MetaImage (MetaIO) codec: `.mha` (header and data in one file) and `.mhd` + `.raw`/`.zraw`.
//
// Format: https://itk.org/Wiki/ITK/MetaIO/Documentation; the PLUS toolkit's variant (the one
// PLUS's VolumeReconstructor writes and its sequence files extend) is described in
// PlusToolkit/PlusLib docs/file-formats/FileSequenceFile.md. A header is "Name = Value" lines,
// `ObjectType = Image` first, `ElementDataFile` last; binary data follows that line (`LOCAL`) or
// lives in the named file. `CompressedData = True` means one zlib stream (RFC 1950, what
// zlib's compress()/deflate() write) over all the data, `CompressedDataSize` bytes long.
//
// The decoders and encoders are pure (bytes in, bytes out). The `*File` helpers are the only
// file I/O: they read or write a path and put the file's name in every error. Errors are
// Eco3dError `ECO3D_ERR_BAD_FILE` with a message "<file>[: frame N][: field]: what is wrong" and
// the same in `details`. This module uses node:zlib, so it is not browser-safe.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { Eco3dError } from './errors.ts';
import type { Volume } from './imaging.ts';

// ---------------------------------------------------------------------------------------------
// Errors

/** Where in a file a problem is: the file, and optionally the frame and the field. */
export interface FileLocation {
  readonly file: string;
  readonly frame?: number | undefined;
  readonly field?: string | undefined;
}

/** An `ECO3D_ERR_BAD_FILE` error whose message names the file, the frame and the field. */
export function badFileError(where: FileLocation, problem: string, cause?: unknown): Eco3dError {
  const parts = [where.file];
  if (where.frame !== undefined) parts.push(`frame ${where.frame}`);
  if (where.field !== undefined) parts.push(where.field);
  const details: Record<string, unknown> = { file: where.file };
  if (where.frame !== undefined) details.frame = where.frame;
  if (where.field !== undefined) details.field = where.field;
  return new Eco3dError('ECO3D_ERR_BAD_FILE', `${parts.join(': ')}: ${problem}`, cause === undefined ? { details } : { details, cause });
}

// ---------------------------------------------------------------------------------------------
// Header

export interface MetaHeader {
  /** Every "Name = Value" line in file order (names and values trimmed), ElementDataFile last. */
  readonly fields: ReadonlyArray<readonly [string, string]>;
  /** Byte offset of the first data byte after the ElementDataFile line (for `LOCAL`). */
  readonly dataOffset: number;
  /** `LOCAL`, or the name of the data file (relative to the header's folder). */
  readonly elementDataFile: string;
}

/** Looks a field up by name, case-insensitively as PLUS and MetaIO do. */
export function metaField(h: MetaHeader, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [k, v] of h.fields) if (k.toLowerCase() === lower) return v;
  return undefined;
}

const LF = 0x0a;

/**
 * Parses a MetaImage header up to and including `ElementDataFile`. The first field must be
 * `ObjectType = Image`; a header that ends before `ElementDataFile` is reported as truncated.
 */
export function parseMetaHeader(bytes: Uint8Array, file: string): MetaHeader {
  const fields: Array<readonly [string, string]> = [];
  let pos = 0;
  let lineNo = 0;
  const decoder = new TextDecoder('latin1');
  while (pos < bytes.length) {
    let nl = bytes.indexOf(LF, pos);
    const lineEnd = nl === -1 ? bytes.length : nl;
    if (nl === -1) nl = bytes.length - 1;
    let line = decoder.decode(bytes.subarray(pos, lineEnd));
    if (line.endsWith('\r')) line = line.slice(0, -1);
    pos = nl + 1;
    lineNo++;
    if (line.trim() === '') continue;
    const eq = line.indexOf('=');
    if (eq === -1) {
      if (fields.length === 0) throw badFileError({ file }, 'not a MetaImage file (the first line must be "ObjectType = Image")');
      throw badFileError({ file }, `header line ${lineNo} has no "=" (corrupt header, or the header ended without ElementDataFile)`);
    }
    const name = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (fields.length === 0 && !(name.toLowerCase() === 'objecttype' && value.toLowerCase() === 'image')) {
      throw badFileError({ file, field: name }, 'not a MetaImage file (the first line must be "ObjectType = Image")');
    }
    fields.push([name, value]);
    if (name.toLowerCase() === 'elementdatafile') {
      if (value === '') throw badFileError({ file, field: 'ElementDataFile' }, 'is empty');
      return { fields, dataOffset: pos, elementDataFile: value };
    }
  }
  if (fields.length === 0) throw badFileError({ file }, 'empty file, not a MetaImage file');
  throw badFileError({ file, field: 'ElementDataFile' }, 'truncated file: the header ends before ElementDataFile');
}

/** Serializes a header and its inline data: "Name = Value" lines, then `ElementDataFile`. */
export function serializeMetaImage(fields: ReadonlyArray<readonly [string, string]>, payload: Uint8Array, elementDataFile = 'LOCAL'): Uint8Array {
  let text = '';
  for (const [k, v] of fields) {
    if (/[\r\n=]/.test(k) || /[\r\n]/.test(v) || k.trim() !== k || k === '') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `cannot write MetaImage field ${JSON.stringify(k)} = ${JSON.stringify(v)}`);
    text += `${k} = ${v}\n`;
  }
  text += `ElementDataFile = ${elementDataFile}\n`;
  const head = Buffer.from(text, 'latin1');
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** Formats a number the shortest way that reads back to the same double ("1", "0.25", "-3.5e-7"). */
export function formatNumber(n: number): string {
  if (!Number.isFinite(n)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `cannot write a non-finite number (${n})`);
  return Object.is(n, -0) ? '0' : String(n);
}

/** Parses a whitespace-separated list of exactly `count` finite numbers, or throws naming the field. */
export function parseNumbers(value: string | undefined, count: number | readonly number[], where: FileLocation): number[] {
  const counts = typeof count === 'number' ? [count] : count;
  if (value === undefined) throw badFileError(where, 'is missing');
  const parts = value.trim() === '' ? [] : value.trim().split(/\s+/);
  if (!counts.includes(parts.length)) throw badFileError(where, `expected ${counts.join(' or ')} numbers, got ${parts.length} (${JSON.stringify(truncate(value))})`);
  return parts.map((p) => {
    const n = Number(p);
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(p) || !Number.isFinite(n)) throw badFileError(where, `${JSON.stringify(truncate(p))} is not a finite number`);
    return n;
  });
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

// ---------------------------------------------------------------------------------------------
// Data

export type MetaElementType = 'MET_CHAR' | 'MET_UCHAR' | 'MET_SHORT' | 'MET_USHORT' | 'MET_INT' | 'MET_UINT' | 'MET_FLOAT' | 'MET_DOUBLE';

export const META_ELEMENT_BYTES: Readonly<Record<MetaElementType, number>> = {
  MET_CHAR: 1, MET_UCHAR: 1, MET_SHORT: 2, MET_USHORT: 2, MET_INT: 4, MET_UINT: 4, MET_FLOAT: 4, MET_DOUBLE: 8,
};

export function parseElementType(h: MetaHeader, file: string): MetaElementType {
  const t = metaField(h, 'ElementType');
  if (t === undefined) throw badFileError({ file, field: 'ElementType' }, 'is missing');
  const u = t.toUpperCase();
  if (!Object.hasOwn(META_ELEMENT_BYTES, u)) throw badFileError({ file, field: 'ElementType' }, `unsupported element type ${JSON.stringify(t)} (supported: ${Object.keys(META_ELEMENT_BYTES).join(', ')})`);
  return u as MetaElementType;
}

export function isTrue(v: string | undefined): boolean {
  return v !== undefined && v.toLowerCase() === 'true';
}

/**
 * Returns exactly `expectedBytes` bytes of pixel data: inflated when `CompressedData = True`.
 * `data` holds the bytes of the file the data is in, from `offset` on. A short file, bad zlib
 * data, or a size that does not match `DimSize` is a clear error.
 */
export function readMetaPixelBytes(h: MetaHeader, data: Uint8Array, offset: number, expectedBytes: number, file: string, dimSizeText: string): Uint8Array {
  const available = Math.max(0, data.length - offset);
  if (!isTrue(metaField(h, 'BinaryData') ?? 'True')) throw badFileError({ file, field: 'BinaryData' }, 'only binary pixel data (BinaryData = True) is supported');
  if (isTrue(metaField(h, 'CompressedData'))) {
    const sizeText = metaField(h, 'CompressedDataSize');
    let size = available;
    if (sizeText !== undefined && sizeText !== '') {
      size = parseNumbers(sizeText, 1, { file, field: 'CompressedDataSize' })[0]!;
      if (!Number.isInteger(size) || size < 0) throw badFileError({ file, field: 'CompressedDataSize' }, `${sizeText} is not a byte count`);
      if (size > available) throw badFileError({ file, field: 'CompressedDataSize' }, `truncated file: CompressedDataSize says ${size} bytes, only ${available} follow the header`);
    }
    let raw: Buffer;
    try {
      // One more byte than expected is enough to tell "too much data" without inflating a bomb.
      raw = inflateSync(data.subarray(offset, offset + size), { maxOutputLength: Math.max(1, expectedBytes + 1) });
    } catch (err) {
      if (err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
        throw badFileError({ file, field: 'DimSize' }, `the compressed data holds more than the ${expectedBytes} bytes DimSize = ${dimSizeText} describes`, err);
      }
      const msg = err instanceof Error ? err.message : String(err);
      throw badFileError({ file, field: 'CompressedData' }, `corrupt or truncated zlib data (${msg})`, err);
    }
    if (raw.length !== expectedBytes) throw badFileError({ file, field: 'DimSize' }, `DimSize = ${dimSizeText} needs ${expectedBytes} bytes, the compressed data holds ${raw.length}`);
    return new Uint8Array(raw.buffer, raw.byteOffset, raw.length);
  }
  if (available < expectedBytes) throw badFileError({ file, field: 'DimSize' }, `truncated file: DimSize = ${dimSizeText} needs ${expectedBytes} bytes of data, only ${available} follow the header`);
  if (available > expectedBytes) throw badFileError({ file, field: 'DimSize' }, `DimSize = ${dimSizeText} needs ${expectedBytes} bytes of data, but ${available} follow the header`);
  return data.subarray(offset, offset + expectedBytes);
}

/** Compresses with zlib as PLUS does (a zlib stream, default level). */
export function compressMeta(raw: Uint8Array): Uint8Array {
  const z = deflateSync(raw);
  return new Uint8Array(z.buffer, z.byteOffset, z.length);
}

// ---------------------------------------------------------------------------------------------
// Generic image (any element type)

export interface MetaImage {
  readonly fields: ReadonlyArray<readonly [string, string]>;
  readonly dims: readonly number[];
  readonly elementType: MetaElementType;
  readonly channels: number;
  /** Little-endian raw element bytes (swapped when the file was MSB first). */
  readonly bytes: Uint8Array;
  readonly spacing: readonly number[];
  readonly offset: readonly number[];
  /** Row-major NDims × NDims direction matrix (MetaIO `TransformMatrix`). */
  readonly transformMatrix: readonly number[];
}

export interface MetaReadOptions {
  /** The file name used in errors (default `<buffer>`). */
  readonly source?: string;
  /** For a detached header (`ElementDataFile` names a file): that file's bytes. */
  readonly dataFile?: Uint8Array;
}

/** Decodes any MetaImage header + data (no interpretation beyond MetaIO itself). */
export function decodeMetaImage(bytes: Uint8Array, opts: MetaReadOptions = {}): MetaImage {
  const file = opts.source ?? '<buffer>';
  const h = parseMetaHeader(bytes, file);
  const nDimsText = metaField(h, 'NDims');
  const nDims = parseNumbers(nDimsText, 1, { file, field: 'NDims' })[0]!;
  if (!Number.isInteger(nDims) || nDims < 1 || nDims > 4) throw badFileError({ file, field: 'NDims' }, `${nDimsText} is not 1 to 4`);
  const dimText = metaField(h, 'DimSize');
  const dims = parseNumbers(dimText, nDims, { file, field: 'DimSize' });
  for (const d of dims) if (!Number.isInteger(d) || d < 0) throw badFileError({ file, field: 'DimSize' }, `${dimText} is not a list of sizes`);
  const elementType = parseElementType(h, file);
  const channelsText = metaField(h, 'ElementNumberOfChannels');
  const channels = channelsText === undefined ? 1 : parseNumbers(channelsText, 1, { file, field: 'ElementNumberOfChannels' })[0]!;
  if (!Number.isInteger(channels) || channels < 1) throw badFileError({ file, field: 'ElementNumberOfChannels' }, `${channelsText} is not a channel count`);
  const spacing = optionalNumbers(h, ['ElementSpacing', 'ElementSize'], nDims, file) ?? dims.map(() => 1);
  const offset = optionalNumbers(h, ['Offset', 'Position', 'Origin'], nDims, file) ?? dims.map(() => 0);
  const identity: number[] = [];
  for (let i = 0; i < nDims; i++) for (let j = 0; j < nDims; j++) identity.push(i === j ? 1 : 0);
  const transformMatrix = optionalNumbers(h, ['TransformMatrix', 'Rotation', 'Orientation'], nDims * nDims, file) ?? identity;
  const elementBytes = META_ELEMENT_BYTES[elementType];
  const expected = dims.reduce((a, b) => a * b, 1) * channels * elementBytes;
  if (!Number.isSafeInteger(expected) || expected > 2 ** 31) throw badFileError({ file, field: 'DimSize' }, `${dimText} is too large (${expected} bytes)`);
  let data = bytes;
  let start = h.dataOffset;
  if (h.elementDataFile.toUpperCase() !== 'LOCAL') {
    if (opts.dataFile === undefined) throw badFileError({ file, field: 'ElementDataFile' }, `the data is in ${h.elementDataFile}, which was not given`);
    data = opts.dataFile;
    start = 0;
  }
  let raw = readMetaPixelBytes(h, data, start, expected, file, dimText ?? '');
  const msb = isTrue(metaField(h, 'BinaryDataByteOrderMSB') ?? metaField(h, 'ElementByteOrderMSB'));
  if (msb && elementBytes > 1) {
    const swapped = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i += elementBytes) for (let b = 0; b < elementBytes; b++) swapped[i + b] = raw[i + elementBytes - 1 - b]!;
    raw = swapped;
  }
  return { fields: h.fields, dims, elementType, channels, bytes: raw, spacing, offset, transformMatrix };
}

function optionalNumbers(h: MetaHeader, names: readonly string[], count: number, file: string): number[] | undefined {
  for (const name of names) {
    const v = metaField(h, name);
    if (v !== undefined) return parseNumbers(v, count, { file, field: name });
  }
  return undefined;
}

/** Reads element `i` of a little-endian raw buffer as a number. */
export function metaElementReader(type: MetaElementType, bytes: Uint8Array): (i: number) => number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (type) {
    case 'MET_UCHAR': return (i) => bytes[i]!;
    case 'MET_CHAR': return (i) => dv.getInt8(i);
    case 'MET_SHORT': return (i) => dv.getInt16(i * 2, true);
    case 'MET_USHORT': return (i) => dv.getUint16(i * 2, true);
    case 'MET_INT': return (i) => dv.getInt32(i * 4, true);
    case 'MET_UINT': return (i) => dv.getUint32(i * 4, true);
    case 'MET_FLOAT': return (i) => dv.getFloat32(i * 4, true);
    case 'MET_DOUBLE': return (i) => dv.getFloat64(i * 8, true);
  }
}

// ---------------------------------------------------------------------------------------------
// Volumes

export interface VolumeReadOptions extends MetaReadOptions {
  /**
   * What to do with an ElementType other than MET_UCHAR: `refuse` (default) throws a clear
   * error; `clamp` rounds each voxel and clamps it to 0..255 (NaN becomes 0).
   */
  readonly convert?: 'refuse' | 'clamp';
}

/**
 * Decodes a 3-D MetaImage into a Volume. `Offset` is the centre of voxel (0, 0, 0), as PLUS and
 * VTK write it; the TransformMatrix must be the identity (a Volume is axis-aligned). NDims = 2 is
 * read as one slice. Only one channel is accepted.
 */
export function decodeMetaImageVolume(bytes: Uint8Array, opts: VolumeReadOptions = {}): Volume {
  const file = opts.source ?? '<buffer>';
  const img = decodeMetaImage(bytes, opts);
  if (img.dims.length !== 3 && img.dims.length !== 2) throw badFileError({ file, field: 'NDims' }, `a volume needs NDims = 3 (or 2), got ${img.dims.length}`);
  if (img.channels !== 1) throw badFileError({ file, field: 'ElementNumberOfChannels' }, `a volume has one channel, got ${img.channels}`);
  const n = img.dims.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (Math.abs(img.transformMatrix[i * n + j]! - (i === j ? 1 : 0)) > 1e-9) {
        throw badFileError({ file, field: 'TransformMatrix' }, `${img.transformMatrix.join(' ')} is not the identity: only axis-aligned volumes are supported`);
      }
    }
  }
  for (const s of img.spacing) if (!(s > 0)) throw badFileError({ file, field: 'ElementSpacing' }, `${img.spacing.join(' ')}: spacing must be positive`);
  const dims: [number, number, number] = [img.dims[0]!, img.dims[1]!, img.dims[2] ?? 1];
  const count = dims[0] * dims[1] * dims[2];
  let data: Uint8Array;
  if (img.elementType === 'MET_UCHAR') {
    data = new Uint8Array(img.bytes); // own copy, detached from the file buffer
  } else if (opts.convert === 'clamp') {
    const get = metaElementReader(img.elementType, img.bytes);
    data = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      const v = Math.round(get(i));
      data[i] = Number.isNaN(v) ? 0 : v < 0 ? 0 : v > 255 ? 255 : v;
    }
  } else {
    throw badFileError({ file, field: 'ElementType' }, `${img.elementType}: a volume holds 8-bit voxels (MET_UCHAR); convert it with { convert: 'clamp' }`);
  }
  return {
    grid: {
      originMm: { x: img.offset[0]!, y: img.offset[1]!, z: img.offset[2] ?? 0 },
      spacingMm: { x: img.spacing[0]!, y: img.spacing[1]!, z: img.spacing[2] ?? 1 },
      dims,
    },
    data,
  };
}

export interface VolumeWriteOptions {
  /** zlib-compress the data (PLUS's VolumeReconstructor default). Default true. */
  readonly compress?: boolean;
  /** Extra header fields (for example PLUS's `--save-custom-headers`), sorted in with the rest. */
  readonly extraFields?: Readonly<Record<string, string>>;
}

/** Fields this codec owns; extra fields may not use these names. */
const VOLUME_OWNED = new Set(
  ['ObjectType', 'NDims', 'AnatomicalOrientation', 'BinaryData', 'BinaryDataByteOrderMSB', 'CenterOfRotation', 'CompressedData',
    'CompressedDataSize', 'DimSize', 'ElementNumberOfChannels', 'ElementSpacing', 'ElementType', 'Kinds', 'Offset', 'TransformMatrix',
    'UltrasoundImageOrientation', 'UltrasoundImageType', 'Seq_Frame0000_ImageStatus', 'ElementDataFile'].map((s) => s.toLowerCase()),
);

/**
 * Encodes a Volume the way PLUS's VolumeReconstructor writes one (a one-frame sequence file with
 * a 3-D frame): ObjectType and NDims first, the other fields in alphabetical order, `Offset` =
 * centre of voxel 0, identity `TransformMatrix`, `Kinds = domain domain domain`,
 * `UltrasoundImageOrientation = MFA`, `Seq_Frame0000_ImageStatus = OK`, data inline (`LOCAL`).
 */
export function encodeMetaImageVolume(volume: Volume, opts: VolumeWriteOptions = {}): Uint8Array {
  return encodeVolumeParts(volume, opts).bytes;
}

function encodeVolumeParts(volume: Volume, opts: VolumeWriteOptions, elementDataFile = 'LOCAL'): { bytes: Uint8Array; header: Uint8Array; payload: Uint8Array } {
  const { dims, spacingMm: s, originMm: o } = volume.grid;
  for (const d of dims) if (!Number.isInteger(d) || d < 1) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `cannot write a volume with dims ${dims.join('×')}`);
  if (volume.data.length !== dims[0] * dims[1] * dims[2]) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `volume data has ${volume.data.length} voxels, dims ${dims.join('×')} need ${dims[0] * dims[1] * dims[2]}`);
  if (!(s.x > 0 && s.y > 0 && s.z > 0)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `volume spacing must be positive: ${s.x} ${s.y} ${s.z}`);
  const compress = opts.compress ?? true;
  const payload = compress ? compressMeta(volume.data) : volume.data;
  const fields: Array<[string, string]> = [
    ['AnatomicalOrientation', 'RAI'],
    ['BinaryData', 'True'],
    ['BinaryDataByteOrderMSB', 'False'],
    ['CenterOfRotation', '0 0 0'],
    ['CompressedData', compress ? 'True' : 'False'],
    ...(compress ? [['CompressedDataSize', String(payload.length)] as [string, string]] : []),
    ['DimSize', dims.join(' ')],
    ['ElementNumberOfChannels', '1'],
    ['ElementSpacing', [s.x, s.y, s.z].map(formatNumber).join(' ')],
    ['ElementType', 'MET_UCHAR'],
    ['Kinds', 'domain domain domain'],
    ['Offset', [o.x, o.y, o.z].map(formatNumber).join(' ')],
    ['TransformMatrix', '1 0 0 0 1 0 0 0 1'],
    ['UltrasoundImageOrientation', 'MFA'],
    ['UltrasoundImageType', 'BRIGHTNESS'],
  ];
  for (const [k, v] of Object.entries(opts.extraFields ?? {})) {
    if (VOLUME_OWNED.has(k.toLowerCase()) || k.toLowerCase().startsWith('seq_frame')) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `extra field ${k} clashes with a field the volume writer owns`);
    fields.push([k, v]);
  }
  return assembleMetaImage(fields, [['Seq_Frame0000_ImageStatus', 'OK']], payload, elementDataFile);
}

/**
 * The file layout PLUS writes: ObjectType and NDims first, the other header fields sorted, then
 * `tail` (per-frame fields), then the data; for a detached data file, the header alone.
 */
export function assembleMetaImage(
  fields: Array<readonly [string, string]>,
  tail: ReadonlyArray<readonly [string, string]>,
  payload: Uint8Array,
  elementDataFile: string,
): { bytes: Uint8Array; header: Uint8Array; payload: Uint8Array } {
  fields.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const all: Array<readonly [string, string]> = [['ObjectType', 'Image'], ['NDims', '3'], ...fields, ...tail];
  const header = serializeMetaImage(all, new Uint8Array(0), elementDataFile);
  return { bytes: elementDataFile === 'LOCAL' ? serializeMetaImage(all, payload) : header, header, payload };
}

// ---------------------------------------------------------------------------------------------
// Thin file helpers: the only I/O in this module.

/** Reads a file; a missing file is ECO3D_ERR_NOT_FOUND, any other failure ECO3D_ERR_BAD_FILE. */
export async function readFileBytes(path: string): Promise<Uint8Array> {
  try {
    const b = await readFile(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `${path}: no such file`, { cause: err, details: { file: path } });
    throw badFileError({ file: path }, `cannot read (${err instanceof Error ? err.message : String(err)})`, err);
  }
}

/** Writes a file through a temporary name and a rename, so a reader never sees half a file. */
export async function writeFileBytes(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  } catch (err) {
    throw badFileError({ file: path }, `cannot write (${err instanceof Error ? err.message : String(err)})`, err);
  }
}

/** Reads a MetaImage file's bytes and, for a detached header (`.mhd`), its data file's bytes. */
export async function readMetaImageFileParts(path: string): Promise<{ bytes: Uint8Array; dataFile?: Uint8Array }> {
  const bytes = await readFileBytes(path);
  const h = parseMetaHeader(bytes, path);
  if (h.elementDataFile.toUpperCase() === 'LOCAL') return { bytes };
  const dataPath = isAbsolute(h.elementDataFile) ? h.elementDataFile : join(dirname(path), h.elementDataFile);
  return { bytes, dataFile: await readFileBytes(dataPath) };
}

/** Reads a volume from `.mha` (inline data) or `.mhd` (+ its `.raw`/`.zraw`). */
export async function readMetaImageVolumeFile(path: string, opts: Omit<VolumeReadOptions, 'source' | 'dataFile'> = {}): Promise<Volume> {
  const parts = await readMetaImageFileParts(path);
  return decodeMetaImageVolume(parts.bytes, { ...opts, source: path, ...(parts.dataFile === undefined ? {} : { dataFile: parts.dataFile }) });
}

/** Writes a volume as `.mha` (inline data), or as `.mhd` + `.raw`/`.zraw` when the path ends in `.mhd`. */
export async function writeMetaImageVolumeFile(path: string, volume: Volume, opts: VolumeWriteOptions = {}): Promise<void> {
  if (path.toLowerCase().endsWith('.mhd')) {
    const dataName = `${basename(path).slice(0, -4)}.${(opts.compress ?? true) ? 'zraw' : 'raw'}`;
    const parts = encodeVolumeParts(volume, opts, dataName);
    await writeFileBytes(join(dirname(path), dataName), parts.payload);
    await writeFileBytes(path, parts.header);
    return;
  }
  await writeFileBytes(path, encodeMetaImageVolume(volume, opts));
}

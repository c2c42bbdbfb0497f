// PLUS sequence files: tracked 2-D B-mode frames with per-frame transforms, as the PLUS toolkit
// records them (`.igs.mha` / `.mha` / `.mhd`, and `.igs.nrrd`). Learned from PLUS's
// docs/file-formats/FileSequenceFile.md and IGSIO's vtkIGSIOMetaImageSequenceIO /
// vtkIGSIONrrdSequenceIO; our own code.
//
// A sequence is an image of DimSize = W H N (NDims = 3, `Kinds = domain domain list`; also
// NDims = 4 with DimSize = W H 1 N) whose header carries per-frame fields
// `Seq_FrameNNNN_<Name> = <value>`:
// - `<From>To<To>Transform` = 16 numbers, a row-major 4×4 matrix (12 numbers, the top three
//   rows, are accepted too: PLUS reads them the same way), with `…TransformStatus` = OK/INVALID;
// - `Timestamp` (seconds), `ImageStatus` (OK/INVALID; `Status` in NRRD files);
// - anything else (FrameNumber, UnfilteredTimestamp, …) is kept as a string.
//
// Reading, as PLUS does:
// - a frame whose ImageStatus is not OK is skipped and its index listed in `skippedFrames`;
// - a transform whose status is not OK, or that has no status field (PLUS then reports it as
//   unusable), is not in `transforms`; it is listed in `invalidTransforms` with its status
//   (`MISSING` when the status field is absent). Only OK transforms are checked for numbers: a
//   NaN or garbled OK transform is an error naming the file, the frame and the field.
// - Image orientation: PLUS keeps B-mode images in memory in MF orientation (x towards the
//   transducer's Marked side, y Far from the transducer) and flips on read/write. We do the same:
//   `pixels` are always MF. A file in UF is flipped along x, MN along y, UN along both (the third
//   letter of 3-D codes such as MFA only concerns the z axis of 3-D frames and is ignored for
//   2-D frames). The original is reported as `orientationInFile`. A file without the field is
//   taken as MF. Transposed codes (FM, NM, …, used for RF data) are refused.
// - Only 8-bit single-channel B-mode (ElementType MET_UCHAR / NRRD uint8, UltrasoundImageType
//   absent or BRIGHTNESS) is read; anything else is refused with a clear error.
// Writing produces what PLUS writes: ObjectType and NDims first, the other header fields in
// alphabetical order, frame fields in alphabetical order with ImageStatus last, MF orientation.
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createDeflate, createGzip, gunzipSync, gzipSync } from 'node:zlib';
import { Eco3dError } from './errors.ts';
import { IDENTITY_MAT4, type Mat4 } from './imaging.ts';
import {
  badFileError, compressMeta, formatNumber, metaField, parseElementType, parseMetaHeader, parseNumbers,
  readFileBytes, readMetaImageFileParts, readMetaPixelBytes, assembleMetaImage, writeFileBytes,
} from './metaimage.ts';
import { parseTransformName } from './plus-transforms.ts';

export interface PlusFrame {
  /** The frame's number in the file (NNNN of Seq_FrameNNNN). */
  readonly index: number;
  /** `Seq_FrameNNNN_Timestamp`, seconds; undefined when the file has none. */
  readonly timestampS: number | undefined;
  readonly width: number;
  readonly height: number;
  /** width × height, row-major, MF orientation. */
  readonly pixels: Uint8Array;
  /** Transforms with status OK, by name without the suffix: `ProbeToTracker` → matrix. */
  readonly transforms: ReadonlyMap<string, Mat4>;
  /** Transforms present but unusable in this frame, by name → status (`INVALID`, `MISSING`, …). */
  readonly invalidTransforms: ReadonlyMap<string, string>;
  /** Every other frame field, raw (FrameNumber, UnfilteredTimestamp, custom fields). */
  readonly fields: ReadonlyMap<string, string>;
}

export type UsImageOrientation = string;

export interface PlusSequence {
  /** The file name (used in errors). */
  readonly source: string;
  readonly width: number;
  readonly height: number;
  /** N of DimSize: frames in the file, including skipped ones. */
  readonly frameCountInFile: number;
  /** The frames whose ImageStatus is OK, in file order. */
  readonly frames: readonly PlusFrame[];
  /** Indices of the frames skipped because their ImageStatus is not OK. */
  readonly skippedFrames: readonly number[];
  /** UltrasoundImageOrientation as written in the file (`MF`, `UF`, `MFA`, …); pixels are MF. */
  readonly orientationInFile: UsImageOrientation;
  /** ElementSpacing of the file (PLUS ignores it: pixel size is in the ImageToProbe calibration). */
  readonly elementSpacing: readonly number[] | undefined;
  /** Header fields other than the ones this codec owns, in file order. */
  readonly fields: ReadonlyMap<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface SequenceReadOptions {
  /** File name for errors (default `<buffer>`). */
  readonly source?: string;
  /** For a detached header (`.mhd`): the data file's bytes. */
  readonly dataFile?: Uint8Array;
}

/** The format-neutral parts of a sequence file, before frames are built. */
interface RawSequence {
  readonly file: string;
  readonly width: number;
  readonly height: number;
  readonly count: number;
  readonly orientation: string;
  readonly headerFields: Array<readonly [string, string]>;
  readonly frameFields: Map<number, Map<string, string>>;
  readonly elementSpacing: readonly number[] | undefined;
  readonly pixels: () => Uint8Array;
}

const FRAME_PREFIX = 'seq_frame';

/** Decodes a sequence file; MetaImage or NRRD is recognised by its first bytes. */
export function decodePlusSequence(bytes: Uint8Array, opts: SequenceReadOptions = {}): PlusSequence {
  const file = opts.source ?? '<buffer>';
  const magic = new TextDecoder('latin1').decode(bytes.subarray(0, 4));
  const raw = magic === 'NRRD' ? decodeNrrdParts(bytes, file) : decodeMetaParts(bytes, file, opts.dataFile);
  return buildSequence(raw);
}

/** Splits a header field list into header fields and frame fields (by frame index). */
function splitFrameFields(fields: ReadonlyArray<readonly [string, string]>, file: string): { header: Array<readonly [string, string]>; frames: Map<number, Map<string, string>> } {
  const header: Array<readonly [string, string]> = [];
  const frames = new Map<number, Map<string, string>>();
  for (const [name, value] of fields) {
    if (!name.toLowerCase().startsWith(FRAME_PREFIX)) {
      header.push([name, value]);
      continue;
    }
    const rest = name.slice(FRAME_PREFIX.length);
    const m = /^(\d+)_(.+)$/.exec(rest);
    if (m === null) throw badFileError({ file, field: name }, 'is not a Seq_FrameNNNN_<Name> field');
    const index = Number(m[1]);
    let map = frames.get(index);
    if (map === undefined) {
      map = new Map();
      frames.set(index, map);
    }
    map.set(m[2]!, value);
  }
  return { header, frames };
}

function decodeMetaParts(bytes: Uint8Array, file: string, dataFile: Uint8Array | undefined): RawSequence {
  const h = parseMetaHeader(bytes, file);
  const { header, frames } = splitFrameFields(h.fields, file);
  const nDims = parseNumbers(metaField(h, 'NDims'), 1, { file, field: 'NDims' })[0]!;
  const dimText = metaField(h, 'DimSize');
  const dims = parseNumbers(dimText, nDims, { file, field: 'DimSize' });
  for (const d of dims) if (!Number.isInteger(d) || d < 0) throw badFileError({ file, field: 'DimSize' }, `${dimText} is not a list of sizes`);
  const kinds = metaField(h, 'Kinds')?.split(/\s+/).filter((k) => k !== '');
  const { width, height, count } = frameGeometry(dims, kinds, file, 'DimSize');
  const elementType = parseElementType(h, file);
  if (elementType !== 'MET_UCHAR') throw badFileError({ file, field: 'ElementType' }, `${elementType}: only 8-bit B-mode sequences (MET_UCHAR) are supported`);
  checkChannels(metaField(h, 'ElementNumberOfChannels'), file, 'ElementNumberOfChannels');
  checkImageType(metaField(h, 'UltrasoundImageType'), file, 'UltrasoundImageType');
  const spacingText = metaField(h, 'ElementSpacing');
  const elementSpacing = spacingText === undefined ? undefined : parseNumbers(spacingText, [2, 3, 4], { file, field: 'ElementSpacing' });
  const local = h.elementDataFile.toUpperCase() === 'LOCAL';
  if (!local && dataFile === undefined && width * height * count > 0) throw badFileError({ file, field: 'ElementDataFile' }, `the data is in ${h.elementDataFile}, which was not given`);
  return {
    file, width, height, count,
    orientation: metaField(h, 'UltrasoundImageOrientation') ?? 'MF',
    headerFields: header, frameFields: frames, elementSpacing,
    pixels: () => (width * height * count === 0 ? new Uint8Array(0) : readMetaPixelBytes(h, local ? bytes : dataFile!, local ? h.dataOffset : 0, width * height * count, file, dimText ?? '')),
  };
}

function frameGeometry(dims: readonly number[], kinds: readonly string[] | undefined, file: string, field: string): { width: number; height: number; count: number } {
  const k = kinds ?? (dims.length <= 2 ? dims.map(() => 'domain') : [...dims.slice(0, -1).map(() => 'domain'), 'list']);
  if (k.length !== dims.length) throw badFileError({ file, field: 'Kinds' }, `${k.join(' ')} does not match ${dims.length} dimensions`);
  const spatial: number[] = [];
  let count = 1;
  for (let i = 0; i < dims.length; i++) {
    const kind = k[i]!.toLowerCase();
    if (kind === 'domain' || kind === 'space') spatial.push(dims[i]!);
    else if (kind === 'list' || kind === 'time') count = dims[i]!;
    else throw badFileError({ file, field: 'Kinds' }, `unsupported kind ${JSON.stringify(k[i])} (only 8-bit single-channel frames are supported)`);
  }
  if (spatial.length < 2 || spatial.length > 3) throw badFileError({ file, field }, `${dims.join(' ')}: frames must be 2-D`);
  if (spatial.length === 3 && spatial[2]! > 1) throw badFileError({ file, field }, `${dims.join(' ')}: 3-D frames are not supported`);
  return { width: spatial[0]!, height: spatial[1]!, count };
}

function checkChannels(v: string | undefined, file: string, field: string): void {
  if (v !== undefined && v.trim() !== '1') throw badFileError({ file, field }, `${v}: only single-channel (grey-level) images are supported`);
}

function checkImageType(v: string | undefined, file: string, field: string): void {
  if (v !== undefined && v.toUpperCase() !== 'BRIGHTNESS') throw badFileError({ file, field }, `${v}: only B-mode images (BRIGHTNESS) are supported`);
}

/** Flips (x, y) that bring an image from the file's orientation to MF. */
function flipsToMf(orientation: string, file: string): { x: boolean; y: boolean } {
  const o = orientation.toUpperCase().replace(/^US_IMG_ORIENT_/, '');
  const m = /^([MU])([FN])([AD])?$/.exec(o);
  if (m === null) throw badFileError({ file, field: 'UltrasoundImageOrientation' }, `${orientation}: expected MF, MN, UF or UN (optionally with A/D); transposed (RF) orientations are not supported`);
  return { x: m[1] === 'U', y: m[2] === 'N' };
}

function buildSequence(raw: RawSequence): PlusSequence {
  const { file, width, height, count } = raw;
  for (const index of raw.frameFields.keys()) {
    if (index >= count) throw badFileError({ file, frame: index, field: 'DimSize' }, `the header has fields for frame ${index}, but DimSize says ${count} frames`);
  }
  const flips = flipsToMf(raw.orientation, file);
  const all = raw.pixels();
  const frameBytes = width * height;
  const frames: PlusFrame[] = [];
  const skipped: number[] = [];
  for (let index = 0; index < count; index++) {
    const ff = raw.frameFields.get(index) ?? new Map<string, string>();
    const imageStatus = ff.get('ImageStatus') ?? ff.get('Status');
    if (imageStatus !== undefined && imageStatus.toUpperCase() !== 'OK') {
      skipped.push(index);
      continue;
    }
    const transforms = new Map<string, Mat4>();
    const invalid = new Map<string, string>();
    const fields = new Map<string, string>();
    let timestampS: number | undefined;
    for (const [name, value] of ff) {
      if (name === 'ImageStatus' || name === 'Status') continue;
      if (name === 'Timestamp') {
        timestampS = parseNumbers(value, 1, { file, frame: index, field: `Seq_Frame${pad(index)}_Timestamp` })[0]!;
        continue;
      }
      if (name.endsWith('TransformStatus') && ff.has(name.slice(0, -'Status'.length)) && parseTransformName(name.slice(0, -'Status'.length)) !== undefined) continue;
      if (name.endsWith('Transform') && parseTransformName(name) !== undefined) {
        const tName = name.slice(0, -'Transform'.length);
        const status = ff.get(`${name}Status`)?.toUpperCase() ?? 'MISSING';
        if (status !== 'OK') {
          invalid.set(tName, status);
          continue;
        }
        transforms.set(tName, parseMatrix(value, { file, frame: index, field: `Seq_Frame${pad(index)}_${name}` }));
        continue;
      }
      fields.set(name, value);
    }
    frames.push({ index, timestampS, width, height, pixels: orient(all.subarray(index * frameBytes, (index + 1) * frameBytes), width, height, flips), transforms, invalidTransforms: invalid, fields });
  }
  const owned = new Set(OWNED_HEADER.map((s) => s.toLowerCase()));
  const header = new Map<string, string>();
  for (const [k, v] of raw.headerFields) if (!owned.has(k.toLowerCase())) header.set(k, v);
  return { source: file, width, height, frameCountInFile: count, frames, skippedFrames: skipped, orientationInFile: raw.orientation, elementSpacing: raw.elementSpacing, fields: header };
}

/** Parses a 16-number (or 12-number, last row implied 0 0 0 1) row-major matrix. */
export function parseMatrix(value: string, where: { file: string; frame?: number; field: string }): Mat4 {
  const n = parseNumbers(value, [16, 12], where);
  const m = n.length === 12 ? [...n, 0, 0, 0, 1] : n;
  if (Math.abs(m[12]!) > 1e-6 || Math.abs(m[13]!) > 1e-6 || Math.abs(m[14]!) > 1e-6 || Math.abs(m[15]! - 1) > 1e-6) {
    throw badFileError(where, `the last row is ${m.slice(12).join(' ')}, not 0 0 0 1 (garbled transform)`);
  }
  return new Float64Array(m);
}

function orient(src: Uint8Array, width: number, height: number, flips: { x: boolean; y: boolean }): Uint8Array {
  const out = new Uint8Array(width * height);
  if (!flips.x && !flips.y) {
    out.set(src);
    return out;
  }
  for (let y = 0; y < height; y++) {
    const sy = flips.y ? height - 1 - y : y;
    const row = src.subarray(sy * width, (sy + 1) * width);
    if (flips.x) for (let x = 0; x < width; x++) out[y * width + x] = row[width - 1 - x]!;
    else out.set(row, y * width);
  }
  return out;
}

function pad(index: number): string {
  return String(index).padStart(4, '0');
}

// --- NRRD ------------------------------------------------------------------------------------

function decodeNrrdParts(bytes: Uint8Array, file: string): RawSequence {
  const dec = new TextDecoder('latin1');
  let pos = 0;
  const fields: Array<readonly [string, string]> = [];
  const kv: Array<readonly [string, string]> = [];
  let first = true;
  let ended = false;
  while (pos < bytes.length) {
    const nl = bytes.indexOf(0x0a, pos);
    if (nl === -1) break;
    let line = dec.decode(bytes.subarray(pos, nl));
    pos = nl + 1;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (first) {
      if (!/^NRRD000\d$/.test(line)) throw badFileError({ file }, 'not a NRRD file (the first line must be NRRD000x)');
      first = false;
      continue;
    }
    if (line === '') {
      ended = true;
      break;
    }
    if (line.startsWith('#')) continue;
    const kvAt = line.indexOf(':=');
    const fAt = line.indexOf(': ');
    if (kvAt !== -1 && (fAt === -1 || kvAt < fAt)) kv.push([line.slice(0, kvAt).trim(), line.slice(kvAt + 2).trim()]);
    else if (fAt !== -1) fields.push([line.slice(0, fAt).trim().toLowerCase(), line.slice(fAt + 2).trim()]);
    else throw badFileError({ file }, `header line ${JSON.stringify(line.slice(0, 60))} is neither "field: value" nor "key:=value"`);
  }
  if (!ended) throw badFileError({ file }, 'truncated file: the NRRD header does not end with a blank line');
  const get = (k: string): string | undefined => fields.find(([n]) => n === k)?.[1];
  if (get('data file') !== undefined || get('datafile') !== undefined) throw badFileError({ file, field: 'data file' }, 'detached NRRD data is not supported');
  const type = get('type');
  if (type === undefined || !['uint8', 'uchar', 'unsigned char', 'uint8_t'].includes(type.toLowerCase())) {
    throw badFileError({ file, field: 'type' }, `${type ?? '(missing)'}: only 8-bit B-mode sequences (uint8) are supported`);
  }
  const nDims = parseNumbers(get('dimension'), 1, { file, field: 'dimension' })[0]!;
  const sizesText = get('sizes');
  const sizes = parseNumbers(sizesText, nDims, { file, field: 'sizes' });
  for (const d of sizes) if (!Number.isInteger(d) || d < 0) throw badFileError({ file, field: 'sizes' }, `${sizesText} is not a list of sizes`);
  const kinds = get('kinds')?.split(/\s+/).filter((k) => k !== '');
  const { width, height, count } = frameGeometry(sizes, kinds, file, 'sizes');
  const kvGet = (k: string): string | undefined => kv.find(([n]) => n.toLowerCase() === k)?.[1];
  checkImageType(kvGet('ultrasound image type'), file, 'ultrasound image type');
  const encoding = (get('encoding') ?? '').toLowerCase();
  if (!['raw', 'gz', 'gzip'].includes(encoding)) throw badFileError({ file, field: 'encoding' }, `${encoding || '(missing)'}: only raw and gzip encodings are supported`);
  const { header, frames } = splitFrameFields(kv, file);
  const headerFields: Array<readonly [string, string]> = [...fields.map(([k, v]) => [k, v] as const), ...header];
  const expected = width * height * count;
  const dataStart = pos;
  return {
    file, width, height, count,
    orientation: kvGet('ultrasound image orientation') ?? 'MF',
    headerFields, frameFields: frames, elementSpacing: undefined,
    pixels: () => {
      const body = bytes.subarray(dataStart);
      let data: Uint8Array = body;
      if (encoding !== 'raw') {
        try {
          const z = gunzipSync(body, { maxOutputLength: Math.max(1, expected + 1) });
          data = new Uint8Array(z.buffer, z.byteOffset, z.length);
        } catch (err) {
          throw badFileError({ file, field: 'encoding' }, `corrupt or truncated gzip data (${err instanceof Error ? err.message : String(err)})`, err);
        }
      }
      if (data.length < expected) throw badFileError({ file, field: 'sizes' }, `truncated file: sizes = ${sizesText} needs ${expected} bytes, the data holds ${data.length}`);
      if (data.length > expected) throw badFileError({ file, field: 'sizes' }, `sizes = ${sizesText} needs ${expected} bytes, the data holds more`);
      return data;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface PlusFrameToWrite {
  readonly timestampS?: number | undefined;
  /** width × height, MF orientation; null writes a blank frame with ImageStatus = INVALID. */
  readonly pixels: Uint8Array | null;
  readonly transforms?: ReadonlyMap<string, Mat4>;
  /** Transforms to record as not OK (written as the identity with that status; MISSING → INVALID). */
  readonly invalidTransforms?: ReadonlyMap<string, string>;
  readonly fields?: ReadonlyMap<string, string>;
}

export interface PlusSequenceToWrite {
  readonly width: number;
  readonly height: number;
  readonly frames: readonly PlusFrameToWrite[];
  /** Extra header fields (not ones the codec owns), e.g. from a sequence that was read. */
  readonly fields?: ReadonlyMap<string, string>;
}

export interface SequenceWriteOptions {
  /** zlib (MetaImage) / gzip (NRRD) compression. Default true. */
  readonly compress?: boolean;
  /** Default `metaimage`. */
  readonly format?: 'metaimage' | 'nrrd';
}

/** Header fields the codec writes itself (other header fields are kept as custom fields). */
const OWNED_HEADER = [
  'ObjectType', 'NDims', 'AnatomicalOrientation', 'BinaryData', 'BinaryDataByteOrderMSB', 'CenterOfRotation', 'CompressedData',
  'CompressedDataSize', 'DimSize', 'ElementNumberOfChannels', 'ElementSpacing', 'ElementType', 'Kinds', 'Offset', 'TransformMatrix',
  'UltrasoundImageOrientation', 'UltrasoundImageType', 'ElementDataFile', 'ElementByteOrderMSB',
  // NRRD
  'dimension', 'type', 'encoding', 'endian', 'kinds', 'sizes', 'space dimension', 'space directions', 'space origin', 'space',
  'ultrasound image orientation', 'ultrasound image type', 'content',
];

/** The per-frame header lines; checks every frame's fields and pixel count. */
function frameLines(seq: PlusSequenceToWrite, statusField: string): Array<readonly [string, string]> {
  const { width, height } = seq;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `bad frame size ${width}×${height}`);
  const frameBytes = width * height;
  const lines: Array<readonly [string, string]> = [];
  seq.frames.forEach((f, i) => {
    const entries: Array<[string, string]> = [];
    for (const [name, m] of f.transforms ?? []) {
      checkTransformName(name, i);
      entries.push([`${name}Transform`, [...m].map(formatNumber).join(' ')], [`${name}TransformStatus`, 'OK']);
    }
    for (const [name, status] of f.invalidTransforms ?? []) {
      checkTransformName(name, i);
      if (f.transforms?.has(name) === true) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${i}: ${name} is both valid and invalid`);
      entries.push([`${name}Transform`, [...IDENTITY_MAT4()].join(' ')], [`${name}TransformStatus`, status === 'OK' || status === 'MISSING' ? 'INVALID' : status]);
    }
    if (f.timestampS !== undefined) entries.push(['Timestamp', formatNumber(f.timestampS)]);
    for (const [k, v] of f.fields ?? []) {
      if (k === 'Timestamp' || k === 'ImageStatus' || k === 'Status' || k.endsWith('Transform') || k.endsWith('TransformStatus')) {
        throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${i}: custom field ${k} clashes with a field the codec writes`);
      }
      entries.push([k, v]);
    }
    entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [k, v] of entries) lines.push([`Seq_Frame${pad(i)}_${k}`, v]);
    lines.push([`Seq_Frame${pad(i)}_${statusField}`, f.pixels === null ? 'INVALID' : 'OK']);
    if (f.pixels !== null && f.pixels.length !== frameBytes) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${i} has ${f.pixels.length} pixels, ${width}×${height} needs ${frameBytes}`);
  });
  return lines;
}

/** The frames' pixels one after the other (an invalid frame is zeros). */
function framePixels(seq: PlusSequenceToWrite): Uint8Array[] {
  const blank = new Uint8Array(seq.width * seq.height);
  return seq.frames.map((f) => f.pixels ?? blank);
}

/**
 * The frames' pixels, zlib- or gzip-compressed frame by frame on libuv's thread pool, as chunks:
 * a sweep is hundreds of MB, and one contiguous copy of it blocked the server's control loop for
 * seconds (page faults on a fresh buffer cost more than the copy).
 */
async function packPixelsAsync(seq: PlusSequenceToWrite, compress: boolean, gzip: boolean): Promise<Uint8Array[]> {
  const frames = framePixels(seq);
  if (!compress) return frames;
  const z = gzip ? createGzip() : createDeflate();
  const out: Uint8Array[] = [];
  z.on('data', (c: Buffer) => out.push(c));
  const ended = once(z, 'end');
  for (const f of frames) if (!z.write(f)) await once(z, 'drain');
  z.end();
  await ended;
  return out;
}

function checkTransformName(name: string, frame: number): void {
  const p = parseTransformName(name);
  if (p === undefined || name.endsWith('Transform') || `${p.from}To${p.to}` !== name) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${frame}: ${JSON.stringify(name)} is not a <From>To<To> transform name`);
}

function customHeader(seq: PlusSequenceToWrite): Array<[string, string]> {
  const owned = new Set(OWNED_HEADER.map((s) => s.toLowerCase()));
  const out: Array<[string, string]> = [];
  for (const [k, v] of seq.fields ?? []) {
    if (owned.has(k.toLowerCase()) || k.toLowerCase().startsWith(FRAME_PREFIX)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `header field ${k} clashes with a field the codec writes`);
    out.push([k, v]);
  }
  return out;
}

/** Encodes a sequence as PLUS writes one (MetaImage by default, or NRRD). */
export function encodePlusSequence(seq: PlusSequenceToWrite, opts: SequenceWriteOptions = {}): Uint8Array {
  const compress = opts.compress ?? true;
  if ((opts.format ?? 'metaimage') === 'nrrd') return encodeNrrd(seq, compress);
  return encodeMetaSequenceParts(seq, compress, 'LOCAL').bytes;
}

function encodeMetaSequenceParts(seq: PlusSequenceToWrite, compress: boolean, elementDataFile: string): { bytes: Uint8Array; header: Uint8Array; payload: Uint8Array } {
  const lines = frameLines(seq, 'ImageStatus');
  const pixels = Buffer.concat(framePixels(seq));
  return assembleMetaSequence(seq, lines, compress ? compressMeta(pixels) : pixels, compress, elementDataFile);
}

function assembleMetaSequence(
  seq: PlusSequenceToWrite,
  lines: Array<readonly [string, string]>,
  payload: Uint8Array,
  compress: boolean,
  elementDataFile: string,
): { bytes: Uint8Array; header: Uint8Array; payload: Uint8Array } {
  return assembleMetaImage(metaSequenceFields(seq, compress, payload.length), lines, payload, elementDataFile);
}

function metaSequenceFields(seq: PlusSequenceToWrite, compress: boolean, payloadBytes: number): Array<[string, string]> {
  return [
    ['AnatomicalOrientation', 'RAI'],
    ['BinaryData', 'True'],
    ['BinaryDataByteOrderMSB', 'False'],
    ['CenterOfRotation', '0 0 0'],
    ['CompressedData', compress ? 'True' : 'False'],
    ...(compress ? [['CompressedDataSize', String(payloadBytes)] as [string, string]] : []),
    ['DimSize', `${seq.width} ${seq.height} ${seq.frames.length}`],
    ['ElementNumberOfChannels', '1'],
    ['ElementSpacing', '1 1 1'],
    ['ElementType', 'MET_UCHAR'],
    ['Kinds', 'domain domain list'],
    ['Offset', '0 0 0'],
    ['TransformMatrix', '1 0 0 0 1 0 0 0 1'],
    ['UltrasoundImageOrientation', 'MF'],
    ['UltrasoundImageType', 'BRIGHTNESS'],
    ...customHeader(seq),
  ];
}

function encodeNrrd(seq: PlusSequenceToWrite, compress: boolean): Uint8Array {
  const lines = frameLines(seq, 'Status');
  const pixels = Buffer.concat(framePixels(seq));
  return Buffer.concat([nrrdHeader(seq, lines, compress), compress ? gzipSync(pixels) : pixels]);
}

function nrrdHeader(seq: PlusSequenceToWrite, lines: Array<readonly [string, string]>, compress: boolean): Uint8Array {
  let text = 'NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n';
  text += `dimension: 3\nencoding: ${compress ? 'gz' : 'raw'}\nendian: little\nkinds: domain domain list\n`;
  text += `sizes: ${seq.width} ${seq.height} ${seq.frames.length}\nspace dimension: 2\nspace directions: (1,0) (0,1) none\nspace origin: (0,0)\ntype: uint8\n`;
  text += 'ultrasound image orientation:=MF\nultrasound image type:=BRIGHTNESS\n';
  for (const [k, v] of customHeader(seq)) text += `${k}:=${v}\n`;
  for (const [k, v] of lines) {
    if (/[\r\n]/.test(v)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `field ${k} has a line break`);
    text += `${k}:=${v}\n`;
  }
  text += '\n';
  return Buffer.from(text, 'latin1');
}

// ---------------------------------------------------------------------------------------------
// Thin file helpers

/** Reads `.igs.mha`/`.mha` (inline data), `.mhd` (+ its data file) or `.igs.nrrd`/`.nrrd`. */
export async function readPlusSequenceFile(path: string): Promise<PlusSequence> {
  const head = await readFileBytes(path);
  if (new TextDecoder('latin1').decode(head.subarray(0, 4)) === 'NRRD') return decodePlusSequence(head, { source: path });
  const parts = await readMetaImageFileParts(path);
  return decodePlusSequence(parts.bytes, { source: path, ...(parts.dataFile === undefined ? {} : { dataFile: parts.dataFile }) });
}

/**
 * Writes NRRD for `.nrrd`, `.mhd` + `.raw`/`.zraw` for `.mhd`, MetaImage with inline data
 * otherwise. Streams: the server calls this on the thread that runs the robot's control loop,
 * with a sweep's frames (packPixelsAsync).
 */
export async function writePlusSequenceFile(path: string, seq: PlusSequenceToWrite, opts: Omit<SequenceWriteOptions, 'format'> = {}): Promise<void> {
  const lower = path.toLowerCase();
  const compress = opts.compress ?? true;
  const nrrd = lower.endsWith('.nrrd');
  const lines = frameLines(seq, nrrd ? 'Status' : 'ImageStatus');
  const packed = await packPixelsAsync(seq, compress, nrrd);
  if (nrrd) return writeChunks(path, [nrrdHeader(seq, lines, compress), ...packed]);
  const fields = metaSequenceFields(seq, compress, packed.reduce((n, c) => n + c.length, 0));
  if (lower.endsWith('.mhd')) {
    const base = path.slice(path.lastIndexOf('/') + 1, -4);
    const dataName = `${base}.${compress ? 'zraw' : 'raw'}`;
    await writeChunks(path.slice(0, path.length - base.length - 4) + dataName, packed);
    return writeFileBytes(path, assembleMetaImage(fields, lines, new Uint8Array(0), dataName).header);
  }
  return writeChunks(path, [assembleMetaImage(fields, lines, new Uint8Array(0), 'LOCAL').header, ...packed]);
}

/** A frame of a spooled sequence: everything but its pixels, which are in the spool file. */
export type SpooledFrame = Omit<PlusFrameToWrite, 'pixels'>;

/**
 * Writes a MetaImage sequence (.mha) whose pixels are already on disk in `rawFile`, the frames
 * one after the other (width × height bytes each), for a recorder that spools frames as they
 * come instead of holding a sweep (550 MB) in memory. The raw bytes are streamed, through zlib
 * when `compress` (into a temporary file first: the header states the compressed size).
 */
export async function writePlusSequenceFileFromRaw(
  path: string,
  seq: Omit<PlusSequenceToWrite, 'frames'> & { readonly frames: readonly SpooledFrame[] },
  rawFile: string,
  opts: Omit<SequenceWriteOptions, 'format'> = {},
): Promise<void> {
  const compress = opts.compress ?? true;
  if (!path.toLowerCase().endsWith('.mha')) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${path}: a spooled sequence is written as .mha`);
  const frameBytes = seq.width * seq.height;
  const expected = frameBytes * seq.frames.length;
  const rawBytes = (await stat(rawFile)).size;
  if (rawBytes !== expected) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${rawFile}: ${rawBytes} bytes, ${seq.frames.length} frames of ${seq.width}×${seq.height} need ${expected}`, { details: { file: rawFile } });
  }
  // frameLines checks each frame's pixel count: one shared stand-in of the right length.
  const standIn = new Uint8Array(frameBytes);
  const lines = frameLines({ ...seq, frames: seq.frames.map((f) => ({ ...f, pixels: standIn })) }, 'ImageStatus');
  const payload = compress ? `${path}.zraw.tmp` : rawFile;
  try {
    if (compress) await pipeline(createReadStream(rawFile), createDeflate(), createWriteStream(payload));
    const payloadBytes = (await stat(payload)).size;
    const header = assembleMetaImage(metaSequenceFields({ ...seq, frames: seq.frames.map(() => ({ pixels: null })) }, compress, payloadBytes), lines, new Uint8Array(0), 'LOCAL').header;
    await writeChunks(path, [header]);
    await pipeline(createReadStream(payload), createWriteStream(path, { flags: 'a' }));
  } catch (err) {
    if (err instanceof Eco3dError) throw err;
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${path}: cannot write (${err instanceof Error ? err.message : String(err)})`, { cause: err, details: { file: path } });
  } finally {
    if (compress) await rm(payload, { force: true });
  }
}

/** Writes the chunks one after the other, a batch at a time; a failure is ECO3D_ERR_BAD_FILE. */
async function writeChunks(path: string, chunks: readonly Uint8Array[]): Promise<void> {
  try {
    const file = await open(path, 'w');
    try {
      for (let i = 0; i < chunks.length; i += 256) await file.writev(chunks.slice(i, i + 256));
    } finally {
      await file.close();
    }
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${path}: cannot write (${err instanceof Error ? err.message : String(err)})`, { cause: err, details: { file: path } });
  }
}


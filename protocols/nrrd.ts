// NRRD codec for volumes: the format 3D Slicer, ITK, Teem and pynrrd read natively.
//
// Format: Teem's "NRRD0004" (http://teem.sourceforge.net/nrrd/format.html). The header is the
// magic line, then "field: value" lines ("#" lines are comments, "key:=value" lines are
// key/value pairs), ended by an empty line; attached data follows right after it.
//
// What we write, for a Volume (8-bit, axis-aligned, x fastest):
//   type uint8, dimension 3, sizes nx ny nz, kinds domain ×3, encoding raw or gzip,
//   space 3D-right-handed, space directions (sx,0,0) (0,sy,0) (0,0,sz),
//   space units "mm" ×3, space origin (centre of voxel 0, as NRRD defines it).
//
// Why "3D-right-handed": our world frame is the robot base frame (right-handed, z up, mm). It has
// no anatomical meaning (the patient lies on the table in whatever pose), so an anatomical space
// (left-posterior-superior, right-anterior-superior) would claim one we do not know, and
// "scanner-xyz" names the ACR/NEMA 2.0 scanner frame, which ours is not. NRRD's generic
// right-handed space says exactly what we know. ITK (so 3D Slicer) takes coordinates in such a
// space as they are, treating them like its LPS physical space: the same numbers our MetaImage
// export gives it, so NRRD and MHA exports of one volume land in the same place.
//
// The reader reads back what we write: attached raw or gzip data, uint8, 3 axes, axis-aligned
// positive space directions. It also accepts left-posterior-superior and scanner-xyz, taking
// their coordinates as they are (as ITK does), so a volume cropped in Slicer and saved as NRRD
// reads back in our frame. Anything else is an ECO3D_ERR_BAD_FILE naming the field.
import { gunzipSync, gzipSync } from 'node:zlib';
import { Eco3dError } from './errors.ts';
import type { Volume } from './imaging.ts';
import { badFileError, formatNumber, type FileLocation } from './metaimage.ts';

export const NRRD_SPACE = '3D-right-handed';

export interface NrrdWriteOptions {
  /** gzip the data (every NRRD reader supports it; ultrasound volumes shrink several-fold). Default true. */
  readonly compress?: boolean;
}

export interface NrrdReadOptions {
  /** The file name used in errors (default `<buffer>`). */
  readonly source?: string;
}

/** Encodes a volume as a single-file `.nrrd` (header and data together). */
export function encodeNrrdVolume(volume: Volume, opts: NrrdWriteOptions = {}): Uint8Array {
  const { dims, spacingMm: s, originMm: o } = volume.grid;
  for (const d of dims) if (!Number.isInteger(d) || d < 1) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `cannot write a volume with dims ${dims.join('×')}`);
  const count = dims[0] * dims[1] * dims[2];
  if (volume.data.length !== count) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `volume data has ${volume.data.length} voxels, dims ${dims.join('×')} need ${count}`);
  if (!(s.x > 0 && s.y > 0 && s.z > 0)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `volume spacing must be positive: ${s.x} ${s.y} ${s.z}`);
  const compress = opts.compress ?? true;
  const vec = (v: readonly number[]): string => `(${v.map(formatNumber).join(',')})`;
  const header = [
    'NRRD0004',
    '# Eco3D volume: robot base frame (right-handed, z up), millimetres',
    'type: uint8',
    'dimension: 3',
    `space: ${NRRD_SPACE}`,
    `sizes: ${dims.join(' ')}`,
    `space directions: ${vec([s.x, 0, 0])} ${vec([0, s.y, 0])} ${vec([0, 0, s.z])}`,
    'kinds: domain domain domain',
    `encoding: ${compress ? 'gzip' : 'raw'}`,
    'space units: "mm" "mm" "mm"',
    `space origin: ${vec([o.x, o.y, o.z])}`,
    '',
    '',
  ].join('\n');
  // gzipSync writes mtime 0 and no file name, so the same volume always gives the same bytes.
  const payload = compress ? gzipSync(volume.data) : volume.data;
  const head = Buffer.from(header, 'latin1');
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reading

interface NrrdHeader {
  readonly magic: string;
  /** Fields by lower-cased name (NRRD field names are case-insensitive in Teem). */
  readonly fields: ReadonlyMap<string, string>;
  readonly dataOffset: number;
}

const LF = 0x0a;
/** Fields that change where or how the data is read, which we do not implement. */
const UNSUPPORTED_FIELDS: Readonly<Record<string, string>> = {
  'data file': 'detached data (a .nhdr with a data file) is not supported; save as a single .nrrd',
  datafile: 'detached data (a .nhdr with a data file) is not supported; save as a single .nrrd',
  'measurement frame': 'only scalar volumes are supported',
  'block size': 'only uint8 volumes are supported',
  blocksize: 'only uint8 volumes are supported',
};
const UINT8_NAMES = new Set(['uchar', 'unsigned char', 'uint8', 'uint8_t']);
const IDENTITY_SPACES = new Set(['3d-right-handed', 'left-posterior-superior', 'lps', 'scanner-xyz']);

function parseNrrdHeader(bytes: Uint8Array, file: string): NrrdHeader {
  const decoder = new TextDecoder('latin1');
  const fields = new Map<string, string>();
  let pos = 0;
  let lineNo = 0;
  let magic = '';
  for (;;) {
    const nl = bytes.indexOf(LF, pos);
    if (nl === -1) {
      if (lineNo === 0 && bytes.length < 8) throw badFileError({ file }, bytes.length === 0 ? 'empty file, not a NRRD file' : 'not a NRRD file (it must begin with "NRRD000")');
      if (lineNo === 0) checkMagic(decoder.decode(bytes.subarray(0, 8)), file);
      throw badFileError({ file }, 'truncated file: the header does not end with an empty line before the data');
    }
    let line = decoder.decode(bytes.subarray(pos, nl));
    if (line.endsWith('\r')) line = line.slice(0, -1);
    pos = nl + 1;
    lineNo++;
    if (lineNo === 1) {
      magic = checkMagic(line, file);
      continue;
    }
    if (line === '') return { magic, fields, dataOffset: pos };
    if (line.startsWith('#')) continue;
    if (/^[^:]*:=/.test(line)) continue; // key/value pair: metadata we do not use
    const colon = line.indexOf(': ');
    if (colon <= 0) throw badFileError({ file }, `header line ${lineNo} is not "field: value" (${JSON.stringify(line.length > 80 ? `${line.slice(0, 77)}...` : line)})`);
    const name = line.slice(0, colon).trim().toLowerCase();
    if (fields.has(name)) throw badFileError({ file, field: name }, 'appears twice in the header');
    fields.set(name, line.slice(colon + 2).trim());
  }
}

function checkMagic(line: string, file: string): string {
  const m = /^NRRD000(\d)$/.exec(line.trim());
  if (m === null) throw badFileError({ file }, `not a NRRD file (it must begin with "NRRD000", got ${JSON.stringify(line.slice(0, 16))})`);
  // Space fields (space, space directions, space origin) arrived in NRRD0004.
  if (Number(m[1]) < 4 || Number(m[1]) > 5) throw badFileError({ file }, `${line.trim()}: only NRRD0004 and NRRD0005 files are supported`);
  return line.trim();
}

function required(h: NrrdHeader, name: string, file: string): string {
  const v = h.fields.get(name);
  if (v === undefined) throw badFileError({ file, field: name }, 'is missing');
  return v;
}

const NUMBER_RE = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function parseNumber(text: string, where: FileLocation): number {
  const n = Number(text);
  if (!NUMBER_RE.test(text) || !Number.isFinite(n)) throw badFileError(where, `${JSON.stringify(text)} is not a finite number`);
  return n;
}

/** Parses "(a,b,c)" into three finite numbers. */
function parseVector(text: string, where: FileLocation): [number, number, number] {
  const m = /^\(([^()]*)\)$/.exec(text.trim());
  if (m === null) throw badFileError(where, `${JSON.stringify(text)} is not a vector "(x,y,z)"`);
  const parts = m[1]!.split(',').map((p) => p.trim());
  if (parts.length !== 3) throw badFileError(where, `${JSON.stringify(text)} has ${parts.length} components, a 3-D space needs 3`);
  return [parseNumber(parts[0]!, where), parseNumber(parts[1]!, where), parseNumber(parts[2]!, where)];
}

/** Decodes a single-file NRRD volume (raw or gzip data, uint8, 3 axis-aligned axes). */
export function decodeNrrdVolume(bytes: Uint8Array, opts: NrrdReadOptions = {}): Volume {
  const file = opts.source ?? '<buffer>';
  const h = parseNrrdHeader(bytes, file);
  for (const [name, why] of Object.entries(UNSUPPORTED_FIELDS)) if (h.fields.has(name)) throw badFileError({ file, field: name }, why);

  const type = required(h, 'type', file);
  if (!UINT8_NAMES.has(type.toLowerCase())) throw badFileError({ file, field: 'type' }, `unsupported type ${JSON.stringify(type)}: a volume holds 8-bit voxels (uint8)`);
  const dimension = required(h, 'dimension', file);
  if (dimension !== '3') throw badFileError({ file, field: 'dimension' }, `${JSON.stringify(dimension)}: a volume has dimension 3`);

  const sizeParts = required(h, 'sizes', file).split(/\s+/);
  if (sizeParts.length !== 3) throw badFileError({ file, field: 'sizes' }, `expected 3 sizes, got ${sizeParts.length}`);
  const sizes = sizeParts.map((p) => {
    const n = Number(p);
    if (!/^\d+$/.test(p) || !Number.isSafeInteger(n) || n < 1) throw badFileError({ file, field: 'sizes' }, `${JSON.stringify(p)} is not a positive integer`);
    return n;
  });
  const dims: [number, number, number] = [sizes[0]!, sizes[1]!, sizes[2]!];
  const expected = dims[0] * dims[1] * dims[2];
  // Typed arrays and Buffers stop well before this; refusing here gives a message, not a RangeError.
  if (expected > 2 ** 31) throw badFileError({ file, field: 'sizes' }, `${dims.join(' ')} is too large (${expected} voxels)`);

  const space = required(h, 'space', file);
  if (!IDENTITY_SPACES.has(space.toLowerCase())) {
    throw badFileError({ file, field: 'space' }, `unsupported space ${JSON.stringify(space)} (supported: ${NRRD_SPACE}, left-posterior-superior, scanner-xyz)`);
  }
  const units = h.fields.get('space units');
  if (units !== undefined) {
    const u = units.match(/"[^"]*"/g) ?? [];
    if (u.length !== 3 || u.some((x) => x !== '"mm"')) throw badFileError({ file, field: 'space units' }, `${units}: only millimetres ("mm" "mm" "mm") are supported`);
  }
  const dirText = required(h, 'space directions', file);
  const dirParts = dirText.match(/\([^()]*\)|none/g) ?? [];
  if (dirParts.length !== 3 || dirText.replace(/\([^()]*\)|none/g, '').trim() !== '') {
    throw badFileError({ file, field: 'space directions' }, `expected 3 vectors, got ${JSON.stringify(dirText)}`);
  }
  const spacing = [0, 0, 0];
  dirParts.forEach((part, axis) => {
    if (part === 'none') throw badFileError({ file, field: 'space directions' }, `axis ${axis} has no space direction: every axis of a volume is spatial`);
    const v = parseVector(part, { file, field: 'space directions' });
    for (let j = 0; j < 3; j++) {
      if (j !== axis && v[j] !== 0) throw badFileError({ file, field: 'space directions' }, `${dirText} is not axis-aligned: only axis-aligned volumes are supported`);
    }
    if (!(v[axis]! > 0)) throw badFileError({ file, field: 'space directions' }, `${dirText}: spacing must be positive (flipped axes are not supported)`);
    spacing[axis] = v[axis]!;
  });
  const origin = parseVector(required(h, 'space origin', file), { file, field: 'space origin' });

  const kinds = h.fields.get('kinds');
  if (kinds !== undefined) {
    const k = kinds.toLowerCase().split(/\s+/);
    if (k.length !== 3 || k.some((x) => x !== 'domain' && x !== 'space')) throw badFileError({ file, field: 'kinds' }, `${JSON.stringify(kinds)}: a volume's three axes are domain axes`);
  }
  for (const skip of ['line skip', 'lineskip', 'byte skip', 'byteskip']) {
    const v = h.fields.get(skip);
    if (v !== undefined && v !== '0') throw badFileError({ file, field: skip }, `${JSON.stringify(v)}: skipping lines or bytes is not supported`);
  }

  const encoding = required(h, 'encoding', file).toLowerCase();
  const payload = bytes.subarray(h.dataOffset);
  const dimText = dims.join(' ');
  let data: Uint8Array;
  if (encoding === 'raw') {
    if (payload.length < expected) throw badFileError({ file, field: 'sizes' }, `truncated file: sizes ${dimText} need ${expected} bytes of data, only ${payload.length} follow the header`);
    if (payload.length > expected) throw badFileError({ file, field: 'sizes' }, `sizes ${dimText} need ${expected} bytes of data, but ${payload.length} follow the header`);
    data = new Uint8Array(payload); // own copy, detached from the file buffer
  } else if (encoding === 'gzip' || encoding === 'gz') {
    let raw: Buffer;
    try {
      // One byte more than needed tells "too much data" without inflating a decompression bomb.
      raw = gunzipSync(payload, { maxOutputLength: expected + 1 });
    } catch (err) {
      if (err instanceof RangeError || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
        throw badFileError({ file, field: 'sizes' }, `the gzip data holds more than the ${expected} bytes sizes ${dimText} describe`, err);
      }
      const msg = err instanceof Error ? err.message : String(err);
      throw badFileError({ file, field: 'encoding' }, `corrupt or truncated gzip data (${msg})`, err);
    }
    if (raw.length !== expected) throw badFileError({ file, field: 'sizes' }, `sizes ${dimText} need ${expected} bytes, the gzip data holds ${raw.length}`);
    data = new Uint8Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  } else {
    throw badFileError({ file, field: 'encoding' }, `unsupported encoding ${JSON.stringify(encoding)} (supported: raw, gzip)`);
  }
  return {
    grid: {
      originMm: { x: origin[0], y: origin[1], z: origin[2] },
      spacingMm: { x: spacing[0]!, y: spacing[1]!, z: spacing[2]! },
      dims,
    },
    data,
  };
}

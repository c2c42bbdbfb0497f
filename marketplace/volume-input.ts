// An analysis plugin's input from an Enhanced US Volume Part-10 file (issue 8, "Running plugins"):
// the volume as `encodeEnhancedUsVolume` (protocols/dicom-us.ts) writes it, before or after
// de-identification (`deidentifyFile` keeps the transfer syntax and copies the Pixel Data element
// byte for byte; only the header is rewritten, possibly with other sequence length encodings).
//
// Why not `decodeEnhancedUsVolume`: dcmjs naturalizes the whole header (hundreds of per-frame
// items) and the file must be in memory first; on a 256³ volume that is ~75 ms, over our budget.
// Here the header alone is walked element by element (explicit VR little endian, defined or
// undefined lengths), only the attributes that give the grid are read, and the pixel bytes go
// from the file straight into the voxel buffer: a 16 MB volume costs one read.
//
// Accepted, as our writer makes it: Explicit VR Little Endian, SOP Class Enhanced US Volume,
// 8-bit unsigned MONOCHROME2 single-sample pixels, native (not encapsulated) Pixel Data, frames on
// a regular axis-aligned grid (Image Orientation (Volume) 1\0\0\0\1\0, Image Position (Volume)
// stepping along z by the slice spacing). Anything else — not DICOM, truncated, compressed,
// 16-bit, another SOP class — is ECO3D_ERR_BAD_FILE saying what is wrong.
//
// Geometry: dims = [Columns, Rows, Number of Frames] (x, y, z); spacingMm = [column spacing,
// row spacing, slice spacing] from the Shared Functional Groups' Pixel Measures (Pixel Spacing is
// row\column, i.e. y then x; Spacing Between Slices, else Slice Thickness, checked against the
// per-frame positions). Voxels x fastest, then y, then z: a frame's pixels are one z-slice.
import { open, type FileHandle } from 'node:fs/promises';
import { Eco3dError } from '../protocols/errors.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID, EXPLICIT_VR_LITTLE_ENDIAN_UID } from '../protocols/dicom-us.ts';
import type { PluginInput } from './sandbox.ts';

/** What the header of an Enhanced US Volume says about its grid and where its voxels are. */
export interface VolumeHeader {
  readonly dims: readonly [number, number, number];
  readonly spacingMm: readonly [number, number, number];
  readonly sopInstanceUid: string;
  /** Offset of the first voxel in the file. */
  readonly pixelDataOffset: number;
  /** dims[0] × dims[1] × dims[2]. */
  readonly voxelsBytes: number;
  readonly fileSizeBytes: number;
}

// The first read; a larger header (tens of thousands of frames) is read again in full.
const FIRST_READ_BYTES = 256 * 1024;
const MAX_DEPTH = 32;
const UNDEFINED_LENGTH = 0xffffffff;
// VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1).
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

const T = {
  TransferSyntaxUID: 0x00020010,
  SOPClassUID: 0x00080016,
  SOPInstanceUID: 0x00080018,
  SliceThickness: 0x00180050,
  SpacingBetweenSlices: 0x00180088,
  ImagePositionVolume: 0x00209301,
  ImageOrientationVolume: 0x00209302,
  PlanePositionVolumeSequence: 0x0020930e,
  PlaneOrientationVolumeSequence: 0x0020930f,
  SamplesPerPixel: 0x00280002,
  PhotometricInterpretation: 0x00280004,
  NumberOfFrames: 0x00280008,
  Rows: 0x00280010,
  Columns: 0x00280011,
  PixelSpacing: 0x00280030,
  BitsAllocated: 0x00280100,
  BitsStored: 0x00280101,
  PixelRepresentation: 0x00280103,
  PixelMeasuresSequence: 0x00289110,
  SharedFunctionalGroupsSequence: 0x52009229,
  PerFrameFunctionalGroupsSequence: 0x52009230,
  PixelData: 0x7fe00010,
  Item: 0xfffee000,
  ItemDelimitation: 0xfffee00d,
  SequenceDelimitation: 0xfffee0dd,
} as const;

const TRANSFER_SYNTAX_NAMES: Readonly<Record<string, string>> = {
  '1.2.840.10008.1.2': 'Implicit VR Little Endian',
  '1.2.840.10008.1.2.2': 'Explicit VR Big Endian',
  '1.2.840.10008.1.2.1.99': 'Deflated Explicit VR Little Endian',
  '1.2.840.10008.1.2.5': 'RLE Lossless',
};

function bad(message: string, cause?: unknown): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_FILE', `Enhanced US Volume: ${message}`, { details: { file: 'DICOM' }, ...(cause === undefined ? {} : { cause }) });
}

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
const tagName = (tag: number): string => `(${hex4(tag >>> 16)},${hex4(tag & 0xffff)})`;

/** The walker asks for a longer prefix of the file. */
class NeedMore extends Error {
  constructor(readonly bytes: number) {
    super(`read ${bytes} bytes`);
  }
}

interface Element {
  readonly tag: number;
  readonly vr: string;
  readonly valueOffset: number;
  /** UNDEFINED_LENGTH for a sequence (or encapsulated pixel data) of undefined length. */
  readonly length: number;
}

/** The direct children of a data set or item, by tag, plus the end of what was walked. */
interface Level {
  readonly elements: ReadonlyMap<number, Element>;
  /** Sequences' items (content ranges), for the sequences asked for. */
  readonly items: ReadonlyMap<number, readonly ItemRange[]>;
  readonly end: number;
}
interface ItemRange {
  readonly start: number;
  /** Content end for a defined-length item; undefined: up to its Item Delimitation. */
  readonly end: number | undefined;
}

/** Explicit VR little endian element walker over a prefix of a file of `size` bytes. */
class Walker {
  readonly #view: DataView;
  readonly #bytes: Uint8Array;
  readonly #size: number;

  constructor(bytes: Uint8Array, size: number) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#size = size;
  }

  /** Bytes up to `end` are read: past the file is truncation, past the prefix a request for more. */
  need(end: number, what: string): void {
    if (end > this.#size) throw bad(`truncated: ${what} runs past the end of the file (byte ${end} of ${this.#size})`);
    if (end > this.#bytes.byteLength) throw new NeedMore(Math.min(this.#size, Math.max(end + 64 * 1024, this.#bytes.byteLength * 2)));
  }

  /** `end` is within the file (a value skipped, not read). */
  within(end: number, what: string): void {
    if (end > this.#size) throw bad(`truncated: ${what} runs past the end of the file (byte ${end} of ${this.#size})`);
  }

  element(pos: number): Element {
    this.need(pos + 8, `the element header at byte ${pos}`);
    const tag = ((this.#view.getUint16(pos, true) << 16) | this.#view.getUint16(pos + 2, true)) >>> 0;
    // Items and delimiters have no VR (PS3.5 7.5).
    if (tag >>> 16 === 0xfffe) return { tag, vr: '', valueOffset: pos + 8, length: this.#view.getUint32(pos + 4, true) };
    const a = this.#bytes[pos + 4]!;
    const b = this.#bytes[pos + 5]!;
    if (a < 0x41 || a > 0x5a || b < 0x41 || b > 0x5a) throw bad(`corrupt: no VR at byte ${pos + 4} for ${tagName(tag)} (not explicit VR?)`);
    const vr = String.fromCharCode(a, b);
    if (!LONG_VRS.has(vr)) return { tag, vr, valueOffset: pos + 8, length: this.#view.getUint16(pos + 6, true) };
    this.need(pos + 12, `the element header at byte ${pos}`);
    return { tag, vr, valueOffset: pos + 12, length: this.#view.getUint32(pos + 8, true) };
  }

  /** The offset after element `e`; the items of a sequence are collected into `items` when given. */
  skip(e: Element, depth: number, items?: ItemRange[]): number {
    if (e.length !== UNDEFINED_LENGTH && e.vr !== 'SQ') {
      const end = e.valueOffset + e.length;
      this.within(end, `the value of ${tagName(e.tag)} at byte ${e.valueOffset}`);
      return end;
    }
    if (e.vr !== 'SQ') throw bad(`${tagName(e.tag)} (${e.vr}) has an undefined length: not a layout read here`);
    if (depth > MAX_DEPTH) throw bad(`corrupt: sequences nested deeper than ${MAX_DEPTH}`);
    const seqEnd = e.length === UNDEFINED_LENGTH ? undefined : e.valueOffset + e.length;
    if (seqEnd !== undefined) this.within(seqEnd, `the sequence ${tagName(e.tag)} at byte ${e.valueOffset}`);
    let pos = e.valueOffset;
    for (;;) {
      if (seqEnd !== undefined && pos >= seqEnd) {
        if (pos > seqEnd) throw bad(`corrupt: an item of ${tagName(e.tag)} runs past its sequence`);
        return pos;
      }
      const it = this.element(pos);
      if (it.tag === T.SequenceDelimitation && seqEnd === undefined) return pos + 8;
      if (it.tag !== T.Item) throw bad(`corrupt: expected an item of ${tagName(e.tag)} at byte ${pos}, found ${tagName(it.tag)}`);
      if (it.length !== UNDEFINED_LENGTH) {
        const end = it.valueOffset + it.length;
        this.within(end, `an item of ${tagName(e.tag)} at byte ${pos}`);
        items?.push({ start: it.valueOffset, end });
        pos = end;
        continue;
      }
      items?.push({ start: it.valueOffset, end: undefined });
      pos = it.valueOffset;
      for (;;) {
        const child = this.element(pos);
        if (child.tag === T.ItemDelimitation) {
          pos += 8;
          break;
        }
        if (child.tag >>> 16 === 0xfffe) throw bad(`corrupt: ${tagName(child.tag)} inside an item at byte ${pos}`);
        pos = this.skip(child, depth + 1);
      }
    }
  }

  /**
   * The elements of a data set or item from `start`: to `end`, to its Item Delimitation (end
   * undefined, `inItem`), or at the top level (`stopAt`) up to and including that tag.
   */
  level(start: number, end: number | undefined, opts: { depth: number; sequences: readonly number[]; stopAt?: number }): Level {
    const elements = new Map<number, Element>();
    const items = new Map<number, ItemRange[]>();
    let pos = start;
    let previous = -1;
    for (;;) {
      if (end !== undefined && pos >= end) {
        if (pos > end) throw bad(`corrupt: an element runs past its item (byte ${pos})`);
        break;
      }
      if (end === undefined && opts.stopAt !== undefined && pos >= this.#size) break;
      const e = this.element(pos);
      if (e.tag === T.ItemDelimitation && end === undefined && opts.stopAt === undefined) {
        pos += 8;
        break;
      }
      if (e.tag >>> 16 === 0xfffe) throw bad(`corrupt: ${tagName(e.tag)} out of place at byte ${pos}`);
      // Data elements come in ascending tag order (PS3.5 7.1): a step back means garbage.
      if (e.tag <= previous) throw bad(`corrupt: ${tagName(e.tag)} at byte ${pos} is out of order`);
      previous = e.tag;
      elements.set(e.tag, e);
      if (e.tag === opts.stopAt) {
        pos = e.valueOffset;
        break;
      }
      let list: ItemRange[] | undefined;
      if (opts.sequences.includes(e.tag)) {
        list = [];
        items.set(e.tag, list);
      }
      pos = this.skip(e, opts.depth + 1, list);
    }
    return { elements, items, end: pos };
  }

  string(e: Element | undefined): string {
    if (e === undefined) return '';
    this.need(e.valueOffset + e.length, `the value of ${tagName(e.tag)}`);
    let s = '';
    for (let i = 0; i < e.length; i++) s += String.fromCharCode(this.#bytes[e.valueOffset + i]!);
    return s.replace(/[\0 ]+$/, '').replace(/^ +/, '');
  }

  us(e: Element | undefined, what: string): number {
    if (e === undefined) throw bad(`no ${what}`);
    if (e.vr !== 'US' || e.length !== 2) throw bad(`${what} is not one US value`);
    this.need(e.valueOffset + 2, `the value of ${what}`);
    return this.#view.getUint16(e.valueOffset, true);
  }

  /** DS or IS values, as numbers. */
  decimals(e: Element | undefined, count: number, what: string): number[] {
    const s = this.string(e);
    if (s === '') throw bad(`no ${what}`);
    const parts = s.split('\\').map((p) => Number(p.trim()));
    if (parts.length !== count || parts.some((v) => !Number.isFinite(v))) throw bad(`${what} "${s}" is not ${count} number${count === 1 ? '' : 's'}`);
    return parts;
  }

  fd(e: Element | undefined, count: number, what: string): number[] {
    if (e === undefined) throw bad(`no ${what}`);
    if (e.vr !== 'FD' || e.length !== count * 8) throw bad(`${what} is not ${count} FD values`);
    this.need(e.valueOffset + e.length, `the value of ${what}`);
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(this.#view.getFloat64(e.valueOffset + i * 8, true));
    if (out.some((v) => !Number.isFinite(v))) throw bad(`${what} is not finite`);
    return out;
  }

  /** The first item of a sequence element of `parent`, as a level. */
  firstItem(parent: Level, tag: number, what: string, depth: number, sequences: readonly number[] = []): Level {
    const e = parent.elements.get(tag);
    if (e === undefined || e.vr !== 'SQ') throw bad(`no ${what}`);
    const list: ItemRange[] = [];
    this.skip(e, depth, list);
    const first = list[0];
    if (first === undefined) throw bad(`${what} is empty`);
    return this.level(first.start, first.end, { depth: depth + 1, sequences });
  }
}

/** Parses the header in `prefix` (the first bytes of a file of `size` bytes); NeedMore when short. */
function parseHeader(prefix: Uint8Array, size: number): VolumeHeader {
  if (size < 132) throw bad(`${size} bytes: too short for a DICOM file`);
  const w = new Walker(prefix, size);
  w.need(132, 'the preamble');
  if (prefix[128] !== 0x44 || prefix[129] !== 0x49 || prefix[130] !== 0x43 || prefix[131] !== 0x4d) throw bad('no DICM prefix: not a DICOM Part-10 file');

  // File Meta Information (always explicit VR little endian), element by element: some writers get its group length wrong.
  let pos = 132;
  let transferSyntax = '';
  for (;;) {
    w.need(pos + 2, 'the File Meta Information');
    if ((prefix[pos]! | (prefix[pos + 1]! << 8)) !== 0x0002) break;
    const e = w.element(pos);
    if (e.tag === T.TransferSyntaxUID) transferSyntax = w.string(e);
    pos = w.skip(e, 0);
    if (pos >= size) throw bad('truncated: no data set after the File Meta Information');
  }
  if (transferSyntax !== EXPLICIT_VR_LITTLE_ENDIAN_UID) {
    const name = TRANSFER_SYNTAX_NAMES[transferSyntax] ?? (transferSyntax.startsWith('1.2.840.10008.1.2.4.') ? 'JPEG family, compressed' : undefined);
    throw bad(`transfer syntax ${transferSyntax === '' ? '(none)' : transferSyntax}${name === undefined ? '' : ` (${name})`}: only Explicit VR Little Endian with native pixel data is read`);
  }

  const top = w.level(pos, undefined, { depth: 0, sequences: [T.PerFrameFunctionalGroupsSequence], stopAt: T.PixelData });
  const sopClass = w.string(top.elements.get(T.SOPClassUID));
  if (sopClass !== ENHANCED_US_VOLUME_SOP_CLASS_UID) throw bad(`SOP Class ${sopClass === '' ? '(none)' : sopClass} is not Enhanced US Volume (${ENHANCED_US_VOLUME_SOP_CLASS_UID})`);
  const samples = w.us(top.elements.get(T.SamplesPerPixel), 'Samples per Pixel');
  const bitsAllocated = w.us(top.elements.get(T.BitsAllocated), 'Bits Allocated');
  const bitsStored = w.us(top.elements.get(T.BitsStored), 'Bits Stored');
  const signed = w.us(top.elements.get(T.PixelRepresentation), 'Pixel Representation');
  const photometric = w.string(top.elements.get(T.PhotometricInterpretation));
  if (samples !== 1 || bitsAllocated !== 8 || bitsStored !== 8 || signed !== 0 || photometric !== 'MONOCHROME2') {
    throw bad(`pixels are ${bitsAllocated}-bit (${bitsStored} stored), ${signed === 0 ? 'unsigned' : 'signed'}, ${samples} sample(s), ${photometric || '(no photometric interpretation)'}: only 8-bit unsigned single-sample MONOCHROME2 is read`);
  }
  const nx = w.us(top.elements.get(T.Columns), 'Columns');
  const ny = w.us(top.elements.get(T.Rows), 'Rows');
  const nz = w.decimals(top.elements.get(T.NumberOfFrames), 1, 'Number of Frames')[0]!;
  if (![nx, ny, nz].every((n) => Number.isSafeInteger(n) && n >= 1)) throw bad(`bad size ${nx}×${ny}×${nz}`);

  const shared = w.firstItem(top, T.SharedFunctionalGroupsSequence, 'Shared Functional Groups Sequence', 0);
  const measures = w.firstItem(shared, T.PixelMeasuresSequence, 'Pixel Measures Sequence (shared)', 2);
  const [rowSpacing, colSpacing] = w.decimals(measures.elements.get(T.PixelSpacing), 2, 'Pixel Spacing') as [number, number];
  const sliceEl = measures.elements.get(T.SpacingBetweenSlices) ?? measures.elements.get(T.SliceThickness);
  const orientation = w.fd(w.firstItem(shared, T.PlaneOrientationVolumeSequence, 'Plane Orientation (Volume) Sequence (shared)', 2).elements.get(T.ImageOrientationVolume), 6, 'Image Orientation (Volume)');
  if (orientation.some((v, i) => Math.abs(v - [1, 0, 0, 0, 1, 0][i]!) > 1e-9)) throw bad(`Image Orientation (Volume) ${orientation.join('\\')} is not axis-aligned`);

  // Per-frame positions: they must step along z on a regular grid (what the voxel array assumes).
  const frames = top.items.get(T.PerFrameFunctionalGroupsSequence);
  if (frames === undefined || top.elements.get(T.PerFrameFunctionalGroupsSequence)?.vr !== 'SQ') throw bad('no Per-frame Functional Groups Sequence');
  if (frames.length !== nz) throw bad(`Per-frame Functional Groups Sequence has ${frames.length} items, Number of Frames is ${nz}`);
  const positions = frames.map((f, k) => {
    const item = w.level(f.start, f.end, { depth: 2, sequences: [] });
    const plane = w.firstItem(item, T.PlanePositionVolumeSequence, `frame ${k + 1}: Plane Position (Volume) Sequence`, 3);
    return w.fd(plane.elements.get(T.ImagePositionVolume), 3, `frame ${k + 1}: Image Position (Volume)`);
  });
  const p0 = positions[0]!;
  let sz: number;
  if (sliceEl !== undefined) sz = w.decimals(sliceEl, 1, 'Spacing Between Slices')[0]!;
  else if (nz > 1) sz = positions[1]![2]! - p0[2]!;
  else throw bad('no Spacing Between Slices or Slice Thickness');
  if (!(sz > 0) || !(rowSpacing > 0) || !(colSpacing > 0)) throw bad(`spacing ${colSpacing}×${rowSpacing}×${sz} mm is not positive`);
  const tolMm = 1e-6 * Math.max(1, sz * nz);
  positions.forEach((p, k) => {
    if (Math.abs(p[0]! - p0[0]!) > tolMm || Math.abs(p[1]! - p0[1]!) > tolMm || Math.abs(p[2]! - (p0[2]! + k * sz)) > tolMm) {
      throw bad(`frame ${k + 1}: Image Position (Volume) ${p.join('\\')} is off the regular grid of ${sz} mm slices`);
    }
  });

  const px = top.elements.get(T.PixelData);
  if (px === undefined) throw bad('truncated or incomplete: no Pixel Data');
  if (px.length === UNDEFINED_LENGTH) throw bad('the Pixel Data is encapsulated (compressed): only native pixel data is read');
  if (px.vr !== 'OB' && px.vr !== 'OW') throw bad(`Pixel Data has VR ${px.vr}, expected OB`);
  const voxelsBytes = nx * ny * nz;
  // 8-bit native pixels: exactly the voxels, plus one pad byte when their count is odd.
  if (px.length !== voxelsBytes && px.length !== voxelsBytes + (voxelsBytes % 2)) throw bad(`Pixel Data has ${px.length} bytes, ${nx}×${ny}×${nz} 8-bit voxels need ${voxelsBytes}`);
  w.within(px.valueOffset + px.length, 'the Pixel Data');
  return {
    dims: [nx, ny, nz],
    spacingMm: [colSpacing, rowSpacing, sz],
    sopInstanceUid: w.string(top.elements.get(T.SOPInstanceUID)),
    pixelDataOffset: px.valueOffset,
    voxelsBytes,
    fileSizeBytes: size,
  };
}

async function readExactly(fh: FileHandle, into: Uint8Array, position: number): Promise<void> {
  let got = 0;
  while (got < into.byteLength) {
    const { bytesRead } = await fh.read(into, got, into.byteLength - got, position + got);
    if (bytesRead === 0) throw bad(`the file ended at byte ${position + got} while being read: changed while read?`);
    got += bytesRead;
  }
}

async function headerOf(fh: FileHandle): Promise<VolumeHeader> {
  const size = (await fh.stat()).size;
  let prefix = new Uint8Array(Math.min(size, FIRST_READ_BYTES));
  await readExactly(fh, prefix, 0);
  for (;;) {
    try {
      return parseHeader(prefix, size);
    } catch (err) {
      if (!(err instanceof NeedMore)) throw err;
      const longer = new Uint8Array(err.bytes);
      longer.set(prefix);
      await readExactly(fh, longer.subarray(prefix.byteLength), prefix.byteLength);
      prefix = longer;
    }
  }
}

/** Reads the header only (a few hundred kB at most): grid, SOP Instance UID and where the voxels are. */
export async function readVolumeHeader(path: string): Promise<VolumeHeader> {
  const fh = await open(path, 'r');
  try {
    return await headerOf(fh);
  } finally {
    await fh.close();
  }
}

/**
 * The plugin input volume of an Enhanced US Volume file: dims [x, y, z] = [Columns, Rows,
 * frames], spacing in mm along the same axes, 8-bit voxels x fastest. The voxels are a buffer of
 * their own (one read from the file). Anything but an Enhanced US Volume as we write it is
 * ECO3D_ERR_BAD_FILE; a missing file is the fs error (ENOENT).
 */
export async function readVolumeInput(path: string): Promise<PluginInput['volume']> {
  const fh = await open(path, 'r');
  try {
    const h = await headerOf(fh);
    // Uninitialized is fine: every byte is read from the file or the call fails.
    const buf = Buffer.allocUnsafeSlow(h.voxelsBytes);
    const voxels = new Uint8Array(buf.buffer, buf.byteOffset, h.voxelsBytes);
    await readExactly(fh, voxels, h.pixelDataOffset);
    return { dims: h.dims, spacingMm: h.spacingMm, voxels };
  } finally {
    await fh.close();
  }
}

// Reading a Part-10 file's header without touching its pixel data (PS3.10 7.1, PS3.5 7).
//
// dcmjs parses values, but tells nobody where an element sits in the file, and the archive needs
// two offsets: where the data set starts (after the File Meta Information, so that "the same
// instance" can ignore a sender's own meta header) and where the Pixel Data value starts (so that
// a frame is read by byte range). So a small walker of our own goes over the element headers,
// skipping values by their lengths (undefined-length sequences item by item), stops at Pixel
// Data (7FE0,0010), and dcmjs then parses the bytes before it (`untilTag`). Nothing here reads
// pixels, so the cost of a header does not grow with the number of frames.
//
// The walker works on a prefix of the file. When the prefix ends before Pixel Data it answers
// `need` with a larger size, and the caller reads more (store: a growing prefix of a big file).
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';

export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2';
export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1';
export const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1.99';
export const EXPLICIT_VR_BIG_ENDIAN = '1.2.840.10008.1.2.2';

/** Transfer syntaxes whose Pixel Data is native (not encapsulated). */
export const NATIVE_TRANSFER_SYNTAXES: ReadonlySet<string> = new Set([IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN]);

/** A file that is not a readable Part-10 file: not DICOM, truncated, or corrupt. */
export class DicomHeaderError extends Error {
  override readonly name = 'DicomHeaderError';
}

/** Where Pixel Data sits in the file. */
export interface PixelDataLocation {
  /** Offset of the (7FE0,0010) tag. */
  readonly tagOffset: number;
  /** Offset of the first value byte (for encapsulated data: the Basic Offset Table item). */
  readonly valueOffset: number;
  /** Value length in bytes; null when undefined (encapsulated: items up to a delimiter). */
  readonly length: number | null;
  readonly vr: 'OB' | 'OW';
  readonly encapsulated: boolean;
}

export interface DicomHeader {
  /** Offset of the first data set byte: the end of the File Meta Information. */
  readonly datasetOffset: number;
  readonly transferSyntaxUid: string;
  /** File Meta Information (group 0002), dcmjs form. */
  readonly meta: DenaturalizedDataset;
  /** The data set up to Pixel Data, dcmjs form (tag → {vr, Value}). Pixel Data is not in it. */
  readonly dataset: DenaturalizedDataset;
  /** Null when there is no top-level Pixel Data, or the data set is deflated (no byte offsets). */
  readonly pixelData: PixelDataLocation | null;
}

export type HeaderProbe = { readonly kind: 'need'; readonly bytes: number } | { readonly kind: 'header'; readonly header: DicomHeader };

// VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1).
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
const UNDEFINED_LENGTH = 0xffffffff;
const ITEM = 0xfffee000;
const ITEM_DELIMITATION = 0xfffee00d;
const SEQUENCE_DELIMITATION = 0xfffee0dd;
const PIXEL_DATA = 0x7fe00010;

interface Syntax {
  readonly explicit: boolean;
  readonly little: boolean;
}

/** Thrown inside the walker when the prefix ends too early; carries a size that will do. */
class NeedMore extends Error {
  constructor(readonly bytes: number) {
    super(`the header continues past this prefix: read ${bytes} bytes`);
  }
}

class Walker {
  readonly #view: DataView;
  readonly #length: number;
  /** The whole file's size: reading past it is truncation, not a short prefix. */
  readonly #fileSize: number;

  constructor(bytes: Uint8Array, fileSize: number) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#length = bytes.byteLength;
    this.#fileSize = fileSize;
  }

  ensure(end: number): void {
    if (end <= this.#length) return;
    if (end > this.#fileSize) throw new DicomHeaderError(`truncated: an element at byte ${end} runs past the end of the file (${this.#fileSize} bytes)`);
    // Ask for a generous step: headers with large per-frame sequences come in hundreds of kB.
    throw new NeedMore(Math.min(this.#fileSize, Math.max(end + 64 * 1024, this.#length * 2)));
  }

  u16(pos: number, little: boolean): number {
    this.ensure(pos + 2);
    return this.#view.getUint16(pos, little);
  }

  u32(pos: number, little: boolean): number {
    this.ensure(pos + 4);
    return this.#view.getUint32(pos, little);
  }

  tag(pos: number, little: boolean): number {
    return ((this.u16(pos, little) << 16) | this.u16(pos + 2, little)) >>> 0;
  }

  vr(pos: number): string {
    this.ensure(pos + 2);
    const a = this.#view.getUint8(pos);
    const b = this.#view.getUint8(pos + 1);
    if (a < 0x41 || a > 0x5a || b < 0x41 || b > 0x5a) throw new DicomHeaderError(`corrupt: no VR at byte ${pos} (explicit VR expected)`);
    return String.fromCharCode(a, b);
  }

  /** One element header at `pos`: its tag, VR (explicit only), value offset and length. */
  element(pos: number, s: Syntax): { tag: number; vr: string | null; valueOffset: number; length: number } {
    const tag = this.tag(pos, s.little);
    // Items and delimiters have no VR, in every transfer syntax (PS3.5 7.5).
    if (tag >>> 16 === 0xfffe) return { tag, vr: null, valueOffset: pos + 8, length: this.u32(pos + 4, s.little) };
    if (!s.explicit) return { tag, vr: null, valueOffset: pos + 8, length: this.u32(pos + 4, s.little) };
    const vr = this.vr(pos + 4);
    if (LONG_VRS.has(vr)) return { tag, vr, valueOffset: pos + 12, length: this.u32(pos + 8, s.little) };
    return { tag, vr, valueOffset: pos + 8, length: this.u16(pos + 6, s.little) };
  }

  /** Skips an undefined-length sequence's items from `pos`; returns the offset after its delimiter. */
  skipSequence(pos: number, s: Syntax, depth: number): number {
    if (depth > 32) throw new DicomHeaderError('corrupt: sequences nested deeper than 32');
    for (;;) {
      const tag = this.tag(pos, s.little);
      const length = this.u32(pos + 4, s.little);
      if (tag === SEQUENCE_DELIMITATION) return pos + 8;
      if (tag !== ITEM) throw new DicomHeaderError(`corrupt: expected an item in a sequence at byte ${pos}, found (${hex4(tag >>> 16)},${hex4(tag & 0xffff)})`);
      if (length === UNDEFINED_LENGTH) pos = this.skipElements(pos + 8, s, depth + 1, ITEM_DELIMITATION);
      else pos = this.skipTo(pos + 8, length);
    }
  }

  /** Skips the elements of an undefined-length item; returns the offset after its delimiter. */
  skipElements(pos: number, s: Syntax, depth: number, until: number): number {
    for (;;) {
      const e = this.element(pos, s);
      if (e.tag === until) return pos + 8;
      pos = this.skipValue(e, s, depth);
    }
  }

  skipValue(e: { vr: string | null; valueOffset: number; length: number }, s: Syntax, depth: number): number {
    if (e.length !== UNDEFINED_LENGTH) return this.skipTo(e.valueOffset, e.length);
    // An undefined-length UN holds implicit VR little endian content (PS3.5 6.2.2).
    const inner = e.vr === 'UN' ? { explicit: false, little: true } : s;
    return this.skipSequence(e.valueOffset, inner, depth + 1);
  }

  skipTo(pos: number, length: number): number {
    const end = pos + length;
    if (end > this.#fileSize) throw new DicomHeaderError(`truncated: a value of ${length} bytes at byte ${pos} runs past the end of the file (${this.#fileSize} bytes)`);
    return end;
  }
}

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');

function ascii(bytes: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/**
 * Reads the header of a Part-10 file from `bytes`, a prefix of a file of `fileSize` bytes (the
 * whole file when equal). Returns `need` with a larger prefix size when the prefix is too short.
 * Throws DicomHeaderError for a file that is not DICOM, truncated or corrupt.
 */
export function probeHeader(bytes: Uint8Array, fileSize: number = bytes.byteLength): HeaderProbe {
  try {
    return { kind: 'header', header: readHeader(bytes, fileSize) };
  } catch (err) {
    if (err instanceof NeedMore) return { kind: 'need', bytes: err.bytes };
    throw err;
  }
}

function readHeader(bytes: Uint8Array, fileSize: number): DicomHeader {
  if (fileSize < 132 + 12) throw new DicomHeaderError(`${fileSize} bytes: too short for a DICOM Part-10 file`);
  const w = new Walker(bytes, fileSize);
  w.ensure(132);
  if (ascii(bytes, 128, 132) !== 'DICM') throw new DicomHeaderError('no DICM prefix at byte 128: not a DICOM Part-10 file');
  // File Meta Information: always explicit VR little endian. Walked element by element rather
  // than trusting the group length, which some writers get wrong or leave out.
  const metaSyntax: Syntax = { explicit: true, little: true };
  let pos = 132;
  let transferSyntaxUid: string | undefined;
  for (;;) {
    if (pos >= fileSize) break;
    const tag = w.tag(pos, true);
    if (tag >>> 16 !== 0x0002) break;
    const e = w.element(pos, metaSyntax);
    if (e.length === UNDEFINED_LENGTH) throw new DicomHeaderError('corrupt: undefined length in the File Meta Information');
    const end = w.skipTo(e.valueOffset, e.length);
    if (tag === 0x00020010) {
      w.ensure(end);
      transferSyntaxUid = ascii(bytes, e.valueOffset, end).replace(/[\0 ]+$/, '');
    }
    pos = end;
  }
  const datasetOffset = pos;
  if (transferSyntaxUid === undefined || transferSyntaxUid === '') throw new DicomHeaderError('no Transfer Syntax UID (0002,0010) in the File Meta Information');
  if (datasetOffset >= fileSize) throw new DicomHeaderError('no data set after the File Meta Information');

  if (transferSyntaxUid === DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN) {
    // A deflated data set has no byte offsets to walk: dcmjs inflates it, whole.
    w.ensure(fileSize);
    const dict = parseWithDcmjs(bytes.subarray(0, fileSize), null);
    return { datasetOffset, transferSyntaxUid, meta: dict.meta, dataset: dict.dict, pixelData: null };
  }

  const s: Syntax = { explicit: transferSyntaxUid !== IMPLICIT_VR_LITTLE_ENDIAN, little: transferSyntaxUid !== EXPLICIT_VR_BIG_ENDIAN };
  let pixelData: PixelDataLocation | null = null;
  let previous = -1;
  while (pos < fileSize) {
    const e = w.element(pos, s);
    if (e.tag >>> 16 === 0xfffe) throw new DicomHeaderError(`corrupt: an item or delimiter at the top level, byte ${pos}`);
    // Data elements come in ascending tag order (PS3.5 7.1): a step back means garbage.
    if (e.tag <= previous) throw new DicomHeaderError(`corrupt: tag (${hex4(e.tag >>> 16)},${hex4(e.tag & 0xffff)}) at byte ${pos} is out of order`);
    previous = e.tag;
    if (e.tag === PIXEL_DATA) {
      const encapsulated = e.length === UNDEFINED_LENGTH;
      const vr = e.vr === 'OB' || (e.vr === null && encapsulated) ? 'OB' : 'OW';
      if (!encapsulated) w.skipTo(e.valueOffset, e.length); // checks that the pixels are all there
      pixelData = { tagOffset: pos, valueOffset: e.valueOffset, length: encapsulated ? null : e.length, vr, encapsulated };
      break;
    }
    pos = w.skipValue(e, s, 0);
  }
  // dcmjs gets the bytes before Pixel Data plus its tag (untilTag stops right after reading it).
  const end = pixelData === null ? fileSize : pixelData.tagOffset + 4;
  w.ensure(end);
  const dict = parseWithDcmjs(bytes.subarray(0, end), pixelData === null ? null : '7FE00010');
  const dataset = { ...dict.dict };
  delete dataset['7FE00010'];
  return { datasetOffset, transferSyntaxUid, meta: dict.meta, dataset, pixelData };
}

function parseWithDcmjs(bytes: Uint8Array, untilTag: string | null): ReturnType<typeof dcmjs.data.DicomMessage.readFile> {
  // dcmjs reads an ArrayBuffer from its start: copy the prefix out (headers are small).
  // (A Buffer's slice() is a view, so the copy is made with the Uint8Array constructor.)
  const ab = bytes.byteOffset === 0 && bytes.buffer instanceof ArrayBuffer && bytes.buffer.byteLength === bytes.byteLength ? bytes.buffer : new Uint8Array(bytes).buffer;
  try {
    return dcmjs.data.DicomMessage.readFile(ab, { untilTag, includeUntilTagValue: false, noCopy: false, ignoreErrors: false });
  } catch (strictErr) {
    // The structure was walked already, so a failure here is in a value (e.g. a character set
    // dcmjs does not know): keep what it can read rather than refuse the instance.
    try {
      return dcmjs.data.DicomMessage.readFile(ab, { untilTag, includeUntilTagValue: false, noCopy: false, ignoreErrors: true });
    } catch {
      throw new DicomHeaderError(`cannot parse: ${strictErr instanceof Error ? strictErr.message : String(strictErr)}`);
    }
  }
}

// The DICOM JSON Model (PS3.18 Annex F) from dcmjs's parsed form, and the attribute dictionary
// lookups the query side needs (keyword ⇄ tag ⇄ VR).
//
// Annex F in short: an object keyed by 8 upper-case hex digits; each attribute has "vr" and, when
// it has a value, "Value" (an array), "InlineBinary" (base64) or "BulkDataURI". PN values are
// objects {Alphabetic, Ideographic, Phonetic}; IS and DS are JSON numbers; AT values are 8-hex
// strings; SQ values are arrays of such objects; an empty value inside a multi-valued attribute
// is null, and an attribute with no value at all has no "Value".
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';

export interface DicomJsonAttribute {
  vr: string;
  Value?: unknown[];
  InlineBinary?: string;
  BulkDataURI?: string;
}

/** A data set in the DICOM JSON Model. */
export type DicomJsonDataset = Record<string, DicomJsonAttribute>;

export interface PersonNameJson {
  Alphabetic?: string;
  Ideographic?: string;
  Phonetic?: string;
}

const BINARY_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);
const NUMBER_VRS = new Set(['FL', 'FD', 'SL', 'SS', 'UL', 'US', 'SV', 'UV', 'IS', 'DS']);

/** Converts dcmjs's denaturalized data set (tag → {vr, Value}) to the DICOM JSON Model. */
export function toDicomJson(ds: DenaturalizedDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const tag of Object.keys(ds).sort()) {
    const el = ds[tag]!;
    if (typeof el.vr !== 'string' || !/^[0-9A-F]{8}$/i.test(tag)) continue; // dcmjs's untilTag placeholder has no VR
    if (tag.endsWith('0000')) continue; // no Group Length in the JSON model (F.2.2)
    out[tag.toUpperCase()] = attributeToJson(el.vr, el.Value);
  }
  return out;
}

function attributeToJson(vr: string, values: unknown): DicomJsonAttribute {
  const list = Array.isArray(values) ? (values as unknown[]) : values === undefined || values === null ? [] : [values];
  if (BINARY_VRS.has(vr)) {
    const bytes = concatBinary(list);
    return bytes.byteLength === 0 ? { vr } : { vr, InlineBinary: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64') };
  }
  if (vr === 'SQ') {
    const items = list.filter((i): i is DenaturalizedDataset => typeof i === 'object' && i !== null).map((i) => toDicomJson(i));
    return items.length === 0 ? { vr } : { vr, Value: items };
  }
  const converted = list.map((v) => valueToJson(vr, v));
  // An attribute whose only value is empty has no value at all (F.2.5).
  if (converted.length === 0 || converted.every((v) => v === null)) return { vr };
  return { vr, Value: converted };
}

function valueToJson(vr: string, v: unknown): unknown {
  if (v === undefined || v === null) return null;
  if (vr === 'PN') return personNameJson(v);
  if (vr === 'AT') return typeof v === 'number' ? (v >>> 0).toString(16).toUpperCase().padStart(8, '0') : typeof v === 'string' && v !== '' ? v.toUpperCase() : null;
  if (NUMBER_VRS.has(vr)) {
    if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
    return Number.isFinite(n) ? n : null;
  }
  if (typeof v === 'string') return v === '' ? null : v;
  if (typeof v === 'number') return String(v);
  return null;
}

function personNameJson(v: unknown): PersonNameJson | null {
  if (typeof v === 'string') return v === '' ? null : splitPersonName(v);
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  const out: PersonNameJson = {};
  for (const k of ['Alphabetic', 'Ideographic', 'Phonetic'] as const) {
    const s = o[k];
    if (typeof s === 'string' && s !== '') out[k] = s;
  }
  return Object.keys(out).length === 0 ? null : out;
}

/** `Alphabetic=Ideographic=Phonetic` (PS3.5 6.2) as its JSON object. */
export function splitPersonName(s: string): PersonNameJson | null {
  const [a, i, p] = s.split('=');
  const out: PersonNameJson = {};
  if (a !== undefined && a !== '') out.Alphabetic = a;
  if (i !== undefined && i !== '') out.Ideographic = i;
  if (p !== undefined && p !== '') out.Phonetic = p;
  return Object.keys(out).length === 0 ? null : out;
}

function concatBinary(list: readonly unknown[]): Uint8Array {
  const parts = list.flatMap((b) => (b instanceof ArrayBuffer ? [new Uint8Array(b)] : ArrayBuffer.isView(b) ? [new Uint8Array(b.buffer, b.byteOffset, b.byteLength)] : []));
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

// --- reading values ---------------------------------------------------------------------------

/** The first value of a string attribute (trimmed), or undefined when absent or empty. */
export function jsonString(ds: DicomJsonDataset, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (typeof v === 'string') return v.trim() === '' ? undefined : v.trim();
  if (typeof v === 'number') return String(v);
  if (typeof v === 'object' && v !== null) {
    const a = (v as PersonNameJson).Alphabetic;
    return a === undefined || a === '' ? undefined : a;
  }
  return undefined;
}

/** All values of a string attribute. */
export function jsonStrings(ds: DicomJsonDataset, tag: string): string[] {
  return (ds[tag]?.Value ?? []).filter((v): v is string => typeof v === 'string');
}

/** The first value of a numeric attribute, or undefined. */
export function jsonNumber(ds: DicomJsonDataset, tag: string): number | undefined {
  const v = ds[tag]?.Value?.[0];
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

/** A JSON attribute of one value (or none, when `value` is undefined or empty). */
export function attr(vr: string, value: unknown): DicomJsonAttribute {
  if (value === undefined || value === null || value === '') return { vr };
  if (Array.isArray(value)) return value.length === 0 ? { vr } : { vr, Value: value as unknown[] };
  return { vr, Value: [value] };
}

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

/** A UID as PS3.5 9.1 has it: digits in dot-separated components, no leading zeros, ≤ 64 characters. */
export function isUid(v: string): boolean {
  return v.length <= 64 && UID_RE.test(v);
}

// --- the data dictionary ----------------------------------------------------------------------

export interface AttributeInfo {
  /** 8 upper-case hex digits. */
  readonly tag: string;
  readonly keyword: string;
  readonly vr: string;
}

interface DictEntry {
  tag: string;
  vr: string;
  name: string;
}

const dictionary = (dcmjs.data.DicomMetaDictionary as unknown as { dictionary: Record<string, DictEntry | undefined>; nameMap: Record<string, DictEntry | undefined> });

/**
 * A public attribute by keyword (`PatientName`) or tag (`00100010`, any case); null when the
 * dictionary does not know it. Private tags (odd group) are not in the dictionary.
 */
export function lookupAttribute(id: string): AttributeInfo | null {
  let entry: DictEntry | undefined;
  if (/^[0-9A-Fa-f]{8}$/.test(id)) {
    const t = id.toUpperCase();
    entry = dictionary.dictionary[`(${t.slice(0, 4)},${t.slice(4)})`];
  } else if (/^[A-Za-z][A-Za-z0-9]*$/.test(id)) {
    entry = dictionary.nameMap[id];
  }
  if (entry === undefined || !/^\([0-9A-F]{4},[0-9A-F]{4}\)$/.test(entry.tag)) return null;
  // dcmjs writes "ox" for OB-or-OW and "xs" for US-or-SS.
  const vr = entry.vr === 'ox' ? 'OB' : entry.vr === 'xs' ? 'US' : entry.vr;
  return { tag: entry.tag.slice(1, 5) + entry.tag.slice(6, 10), keyword: entry.name, vr };
}

// DICOM de-identification: PS3.15 Annex E, Basic Application Level Confidentiality Profile, driven
// by table E.1-1 held as data (deid-profile.ts, generated from the standard), with the Options
// Retain Longitudinal Temporal Information with Modified Dates, Retain Patient Characteristics,
// Retain Device Identity, Clean Descriptors and Retain Safe Private.
//
// It works on dcmjs *denaturalized* datasets (tag → { vr, Value }): unlike the naturalized form
// they address every element, private ones included, by tag, and keep the VR of each, which picks
// the dummy value of action D. Sequences are cleaned item by item at any depth. The input is not
// changed; unchanged values (pixel data above all) are shared with the output, not copied.
//
// Actions (E.1.1): D a dummy value valid for the VR (never empty), Z zero length, X removed,
// K kept (a kept sequence still has its items cleaned), C cleaned as the Option says, U UID
// replaced. Combined actions (Z/D, X/Z, X/D, X/Z/D, X/Z/U*) resolve by the attribute's type:
// type 1 → D (or, for X/Z/U*, kept with its UIDs replaced), type 2 → Z, type 3 → X, each taken
// from the allowed choices. The type comes from IOD_TYPES for the top level of the IODs we write
// and read most (PS3.3 module tables); anywhere else — other IODs, inside sequences — from the
// strictest type the attribute has anywhere in PS3.3 (GENERIC_TYPES; unknown → 1), the choice
// that cannot make a valid object invalid.
//
// Rules beyond the table, each stricter than the profile:
// - UIDs: every UI value that identifies an instance is replaced, including attributes the 2024b
//   table does not list (Volume and Table Frame of Reference UID: the SR's SCOORD3D points at the
//   former, so leaving it would break the reference). Never replaced: well-known UIDs under
//   1.2.840.10008 and class/syntax/coding-scheme UIDs (CLASS_UID_TAGS).
// - Overlays: removing Overlay Data (60xx,3000) removes its whole group, so no Overlay Plane
//   module is left without its type 1 data.
// - SR observer context (TID 1002/1004): the text of Device Observer Name / Serial Number /
//   Physical Location and Person Observer's Organization Name items is replaced (E.1-1 has no
//   row for Text Value; those items name the device or the institution).
// - File Meta: Media Storage SOP Instance UID remapped like SOP Instance UID; the source,
//   sending and receiving AE titles and the private information are removed.
//
//
// Clean Structured Content Option: the sequences E.1-1 marks C for it (Content Sequence,
// Acquisition Context Sequence, Specimen Preparation Sequence) are kept, their items cleaned at
// any depth. Coded values, numbers and coordinates say nothing of the patient and stay; the table
// already replaces Person Name (PNAME), Date/Time/DateTime (shifted with Modified Dates) and UID
// (UIDREF) values wherever they sit; TEXT values (0040,A160), which it has no row for, become
// a neutral "ANONYMIZED", unless they name the device's make and model (kept like Manufacturer
// and Manufacturer's Model Name, which E.1-1 keeps), the device itself under Retain Device
// Identity, or are listed in `safeDescriptors`. Without the Option, only the observer text above
// is replaced and other TEXT values are kept: callers that cannot vouch for their SR text turn
// the Option on.
//
// Clean Pixel Data Option by a per-device-model mask (deid-pixels.ts): the mask matching the
// instance's Manufacturer and Model Name zeroes its regions in every frame of native pixel data;
// an instance that declares Burned In Annotation YES and has no mask is refused.
//
// Part-10 files (`deidentifyPart10`, `deidentifyPart10Prefix`) are first walked element by element
// to the end, so a truncated or corrupt file is refused rather than read in part (dcmjs reads what
// it can without a word). When Pixel Data is the last element and the transfer syntax is little
// endian and not deflated, only the bytes before it are parsed (dcmjs) and written (our writer,
// below: dcmjs's is most of the cost of a small instance); the pixel element is kept as it is (or
// masked), so a large volume costs its header and one copy, which `deidentifyPart10Prefix` lets
// the caller make file to file.
//
// Not done here (known limits): Retain Full Dates / UIDs / Institution Identity Options, Clean
// Graphics, masking compressed pixel data.
import { createHmac } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { findBurnedInMask, maskPixels, nativePixelLayout, parseBurnedInMasks, type BurnedInMask, type NativePixelLayout } from './deid-pixels.ts';
import { DEID_PROFILE, DEID_PROFILE_SOURCE, type DeidBasicAction, type DeidProfileRow } from './deid-profile.ts';
import { ECO3D_IMPLEMENTATION_CLASS_UID } from './dicom-part10.ts';
import { Eco3dError } from './errors.ts';

export { DEID_PROFILE, DEID_PROFILE_SOURCE, type DeidBasicAction, type DeidOptionAction, type DeidProfileRow } from './deid-profile.ts';
export { findBurnedInMask, maskPixels, nativePixelLayout, parseBurnedInMasks, type BurnedInMask, type NativePixelLayout, type PixelRegion } from './deid-pixels.ts';

type Element = DenaturalizedDataset[string];

/** What was done to one element. */
export type DeidAction = 'X' | 'Z' | 'D' | 'K' | 'C' | 'U';

/** A private element kept by the Retain Safe Private Option: (group, xxEE) in the block of `creator`. */
export interface SafePrivateTag {
  /** Odd group, e.g. 0x0009. */
  readonly group: number;
  /** Private Creator value of the block (e.g. "ECO3D"), compared after trimming spaces. */
  readonly creator: string;
  /** The element's offset in the block: its last two hex digits (0x10 for (0009,xx10)); 0x1010-style values work too. */
  readonly element: number;
}

export interface DeidOptions {
  /** Secret for the keyed UID remap (HMAC-SHA256), at least 16 bytes; a string is taken as UTF-8. Keep it apart from the data. */
  readonly uidKey: Uint8Array | string;
  /** Retain Device Identity Option: keep the device serial number, station name, device UID… (E.1-1 column K). */
  readonly retainDeviceIdentity?: boolean;
  /** Retain Patient Characteristics Option: sex, size, weight… kept; age kept as a 5-year band (capped at 90Y). */
  readonly retainPatientCharacteristics?: boolean;
  /**
   * Retain Longitudinal Temporal Information with Modified Dates Option: every date of the table
   * (DA, DT) is shifted by this many days, times (TM) and the timezone offset are kept. Give the
   * same value for all instances of a patient (e.g. `patientDateShiftDays`) so intervals hold.
   */
  readonly dateShiftDays?: number;
  /**
   * Like `dateShiftDays`, from the instance's own (original) Patient ID, e.g.
   * `(id) => patientDateShiftDays(key, id)` when the caller has no patient registry; wins over
   * `dateShiftDays`. Must return an integer within ±36500.
   */
  readonly dateShiftDaysForPatient?: (patientId: string) => number;
  /** Clean Descriptors Option (see `cleanDescriptor`): free-text descriptors become empty or neutral unless listed in `safeDescriptors`. */
  readonly cleanDescriptors?: boolean;
  /**
   * Clean Structured Content Option (CID 7050 113104): SR content, acquisition context and
   * specimen preparation items are kept, their free text (TEXT items) replaced unless known safe.
   */
  readonly cleanStructuredContent?: boolean;
  /** With `cleanDescriptors` or `cleanStructuredContent`: values known to carry no identifying information (e.g. our own series descriptions, measurement labels), kept verbatim. */
  readonly safeDescriptors?: readonly string[];
  /** Retain Safe Private Option: private elements kept (with their creator); every other private element is removed. */
  readonly safePrivateTags?: readonly SafePrivateTag[];
  /**
   * The caller has masked burned-in annotation in the pixel data: records Clean Pixel Data
   * (113101), and Burned In Annotation YES becomes NO instead of being refused.
   */
  readonly pixelDataCleaned?: boolean;
  /**
   * Clean Pixel Data by device model (deid-pixels.ts): the mask matching the instance's
   * Manufacturer and Manufacturer's Model Name is applied to its native pixel data, Burned In
   * Annotation set to NO and 113101 recorded. Burned In Annotation YES with no matching mask
   * (and no `pixelDataCleaned`) is ECO3D_ERR_BURNED_IN_ANNOTATION; a mask to apply to
   * compressed pixel data is ECO3D_ERR_BAD_FILE (we do not transcode).
   */
  readonly burnedInMasks?: readonly BurnedInMask[];
  /**
   * A pseudonym (1–64 characters, no backslash or control character) written as the top-level
   * Patient's Name and Patient ID instead of their emptied or dummy values, so a patient's
   * instances stay linkable without the key. It must not be derived from the identity
   * without a secret.
   */
  readonly patientPseudonym?: string;
}

export interface DeidDecision {
  readonly tag: string;
  readonly keyword: string;
  readonly table: DeidBasicAction;
  readonly applied: DeidAction;
  /** Where the type came from: the instance's IOD (top level), or the strictest type in PS3.3. */
  readonly basis: 'iod' | 'generic';
  readonly type: 1 | 2 | 3;
}

export interface DeidReport {
  /** Elements per action applied (a sequence counts once, plus what its items hold). */
  readonly counts: Readonly<Record<DeidAction, number>>;
  readonly privateRemoved: number;
  readonly privateKept: number;
  /** Every UID replaced: original → new. */
  readonly uidMap: ReadonlyMap<string, string>;
  /** How each combined action (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) was resolved, by tag and level. */
  readonly decisions: ReadonlyMap<string, DeidDecision>;
  /** De-identification Method Code Sequence values written (CID 7050). */
  readonly methodCodes: readonly string[];
  /** The de-identified instance's Study, Series and SOP Instance UIDs (undefined when absent). */
  readonly instanceUids: { readonly study: string | undefined; readonly series: string | undefined; readonly sop: string | undefined };
  /** The burned-in mask applied to the pixel data, if one was. */
  readonly pixelMask: BurnedInMask | undefined;
}

export interface DeidResult {
  readonly dataset: DenaturalizedDataset;
  /** The File Meta Information, when given: SOP Instance UID remapped, AE titles removed. */
  readonly meta: DenaturalizedDataset | undefined;
  readonly report: DeidReport;
}

// ---------------------------------------------------------------------------------------------
// The table

const ROWS = new Map<string, DeidProfileRow>();
let OVERLAY_DATA: DeidProfileRow | undefined;
let OVERLAY_COMMENTS: DeidProfileRow | undefined;
let CURVE_DATA: DeidProfileRow | undefined;
let PRIVATE_ROW: DeidProfileRow | undefined;
for (const row of DEID_PROFILE) {
  const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/.exec(row.tag);
  if (m !== null) ROWS.set(`${m[1]}${m[2]}`, row);
  else if (row.tag === '(60XX,3000)') OVERLAY_DATA = row;
  else if (row.tag === '(60XX,4000)') OVERLAY_COMMENTS = row;
  else if (row.tag === '(50XX,XXXX)') CURVE_DATA = row;
  else if (row.tag.startsWith('(gggg,eeee)')) PRIVATE_ROW = row;
  else throw new Error(`deid-profile: unexpected wildcard row ${row.tag}`);
}
// The private-attribute rule below (remove, unless on the safe list) is this row's.
if (PRIVATE_ROW?.basic !== 'X' || PRIVATE_ROW.retainSafePrivate !== 'C' || OVERLAY_DATA?.basic !== 'X' || CURVE_DATA?.basic !== 'X') {
  throw new Error('deid-profile: the private, overlay or curve rows are not what deid.ts implements');
}

function rowFor(key: string): DeidProfileRow | undefined {
  const exact = ROWS.get(key);
  if (exact !== undefined) return exact;
  const group = key.slice(0, 4);
  if (/^60[0-9A-F]{2}$/.test(group)) {
    if (key.endsWith('3000')) return OVERLAY_DATA;
    if (key.endsWith('4000')) return OVERLAY_COMMENTS;
  }
  if (/^50[0-9A-F]{2}$/.test(group)) return CURVE_DATA;
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Attribute types for the combined actions

type AttrType = 1 | 2 | 3;
/** A type, or for a conditional attribute the type its condition gives in this instance. */
type IodType = AttrType | ((top: DenaturalizedDataset) => AttrType);

/**
 * The strictest type each combined-action attribute of E.1-1 has in any module or macro of PS3.3
 * (1C counts as 1, 2C as 2). Rows not listed here (added after the parse we checked against)
 * count as type 1, the safe assumption.
 */
const GENERIC_TYPES: Readonly<Record<string, AttrType>> = {
  '00400555': 2, // Acquisition Context Sequence (Acquisition Context module)
  '00080022': 2, // Acquisition Date
  '00080032': 2, // Acquisition Time
  '0008002A': 1, // Acquisition DateTime (Enhanced … Image modules)
  '00181400': 1, // Acquisition Device Processing Description (X-Ray detector macros)
  '22000005': 2, // Barcode Value
  '00700084': 2, // Content Creator's Name (presentation states)
  '00080023': 1, // Content Date (Multi-frame Functional Groups, SR Document General)
  '00080033': 1, // Content Time
  '00180010': 1, // Contrast/Bolus Agent (1C in X-Ray contrast macros)
  '0018700C': 1, // Date of Last Detector Calibration
  '0018700A': 1, // Detector ID
  '00181000': 1, // Device Serial Number (Enhanced General Equipment)
  '00189517': 1, // End Acquisition DateTime
  '30080054': 2, // First Treatment Date
  '00080012': 3, // Instance Creation Date (SOP Common)
  '00080013': 3, // Instance Creation Time
  '00080082': 1, // Institution Code Sequence (1C in the Person Identification macro)
  '00080080': 1, // Institution Name (1C in the Person Identification macro)
  '22000002': 2, // Label Text
  '30080056': 2, // Most Recent Treatment Date
  '0040A032': 1, // Observation DateTime (1C in SR content items)
  '00081072': 1, // Operator Identification Sequence
  '00081070': 1, // Operators' Name
  '00102203': 2, // Patient's Sex Neutered (2C)
  '00100020': 1, // Patient ID (1 in some nested identification sequences)
  '00181030': 1, // Protocol Name
  '00081140': 1, // Referenced Image Sequence
  '00081111': 1, // Referenced Performed Procedure Step Sequence
  '00081110': 2, // Referenced Study Sequence
  '00321060': 2, // Requested Procedure Description
  '300E0008': 2, // Reviewer Name (2C)
  '300A0006': 2, // RT Plan Date
  '300A0007': 2, // RT Plan Time
  '00080021': 1, // Series Date
  '00080031': 1, // Series Time
  '00082112': 1, // Source Image Sequence
  '30080105': 2, // Source Serial Number
  '00189516': 1, // Start Acquisition DateTime
  '00081010': 1, // Station Name
  '0018700E': 1, // Time of Last Detector Calibration
  '30080250': 2, // Treatment Date
  '300A00B2': 2, // Treatment Machine Name
  '30080251': 2, // Treatment Time
};

const US_IMAGE = '1.2.840.10008.5.1.4.1.1.6.1';
const US_MULTIFRAME = '1.2.840.10008.5.1.4.1.1.3.1';
const ENHANCED_US_VOLUME = '1.2.840.10008.5.1.4.1.1.6.2';
const COMPREHENSIVE_3D_SR = '1.2.840.10008.5.1.4.1.1.88.34';
const ENHANCED_SR = '1.2.840.10008.5.1.4.1.1.88.22';
const COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33';

// Patient, General Study, Patient Study, General Series / SR Document Series, General Equipment,
// SOP Common: the modules every one of the IODs below has.
const COMMON_TYPES: Readonly<Record<string, IodType>> = {
  '00100020': 2, // Patient ID (Patient)
  '00102203': 2, // Patient's Sex Neutered (Patient, 2C)
  '00081110': 3, // Referenced Study Sequence (General Study)
  '00080080': 3, // Institution Name (General Equipment)
  '00080082': 3, // Institution Code Sequence (General Equipment)
  '00081010': 3, // Station Name (General Equipment)
  '00081070': 3, // Operators' Name (General Series)
  '00081072': 3, // Operator Identification Sequence (General Series)
  '00181030': 3, // Protocol Name (General Series, SR Document Series)
  '00080021': 3, // Series Date
  '00080031': 3, // Series Time
  '00080012': 3, // Instance Creation Date (SOP Common)
  '00080013': 3, // Instance Creation Time (SOP Common)
};

// US Image (A.6) and US Multi-frame Image (A.7): General Image, General Acquisition, US Image,
// Contrast/Bolus.
const US_TYPES: Readonly<Record<string, IodType>> = {
  ...COMMON_TYPES,
  '00080023': 2, // Content Date (General Image, 2C)
  '00080033': 2, // Content Time (General Image, 2C)
  '0008002A': (top) => (first(top['00080060']) === 'IVUS' ? 1 : 3), // Acquisition DateTime (US Image, 1C: required for IVUS)
  '00080022': 3, // Acquisition Date (General Acquisition)
  '00080032': 3, // Acquisition Time
  '00181000': 3, // Device Serial Number (General Equipment)
  '00081111': 3, // Referenced Performed Procedure Step Sequence (General Series)
  '00081140': 3, // Referenced Image Sequence (General Image)
  '00082112': 3, // Source Image Sequence (General Image)
  '00180010': 2, // Contrast/Bolus Agent (Contrast/Bolus)
};

const SR_TYPES: Readonly<Record<string, IodType>> = {
  ...COMMON_TYPES,
  '00080023': 1, // Content Date (SR Document General)
  '00080033': 1, // Content Time
  '00081111': 2, // Referenced Performed Procedure Step Sequence (SR Document Series)
  '00181000': 3, // Device Serial Number (General Equipment)
};

/** Top-level types of the combined-action attributes in the IODs we write or read most. */
const IOD_TYPES: Readonly<Record<string, Readonly<Record<string, IodType>>>> = {
  [US_IMAGE]: US_TYPES,
  [US_MULTIFRAME]: US_TYPES,
  // Enhanced US Volume (A.59): Multi-frame Functional Groups, Enhanced General Equipment,
  // Enhanced US Image, Enhanced US Series, Acquisition Context.
  [ENHANCED_US_VOLUME]: {
    ...COMMON_TYPES,
    '00080023': 1, // Content Date (Multi-frame Functional Groups)
    '00080033': 1, // Content Time
    '0008002A': 1, // Acquisition DateTime (Enhanced US Image)
    '00080022': 3, // Acquisition Date
    '00080032': 3, // Acquisition Time
    '00181000': 1, // Device Serial Number (Enhanced General Equipment)
    '00081111': 1, // Referenced Performed Procedure Step Sequence (Enhanced US Series, 1C)
    '00081140': 3, // Referenced Image Sequence
    '00082112': 1, // Source Image Sequence (Enhanced US Image, 1C)
    '00400555': 2, // Acquisition Context Sequence
  },
  // Comprehensive 3D SR (A.35.13), Enhanced SR (A.35.2), Comprehensive SR (A.35.3): SR Document
  // Series and General; General Equipment only (no Enhanced General Equipment in 2024b).
  [COMPREHENSIVE_3D_SR]: SR_TYPES,
  [ENHANCED_SR]: SR_TYPES,
  [COMPREHENSIVE_SR]: SR_TYPES,
};

/** UI attributes naming a class, syntax or coding scheme, not an instance: never replaced. */
const CLASS_UID_TAGS = new Set([
  '00020002', '00020010', '00020012', '00020100', '00041510', '00041512', '0004151A',
  '00080016', '0008001A', '0008001B', '00080062', '0008010C', '0008010D', '00080117', '00080118',
  '00081150', '00089123', '04000010', '04000510',
]);

const WELL_KNOWN_UID = /^1\.2\.840\.10008\./;

// ---------------------------------------------------------------------------------------------
// Values

const TEXT_VRS = new Set(['AE', 'CS', 'SH', 'LO', 'ST', 'LT', 'UT', 'UC', 'PN', 'UR']);
const NUMBER_VRS = new Set(['US', 'SS', 'UL', 'SL', 'FL', 'FD', 'UV', 'SV', 'AT', 'IS', 'DS']);
const DUMMY_TEXT = 'ANONYMIZED';

function strings(el: Element): string[] {
  return (el.Value ?? []).map((v) => {
    if (typeof v === 'string') return v.replace(/[\0 ]+$/, '').trim();
    if (v !== null && typeof v === 'object' && 'Alphabetic' in v) {
      const a = v.Alphabetic;
      return typeof a === 'string' ? a : '';
    }
    return typeof v === 'number' || typeof v === 'bigint' ? String(v) : '';
  });
}

function first(el: Element | undefined): string | undefined {
  return el === undefined ? undefined : strings(el)[0];
}

/** A value valid for `vr` carrying nothing of the original (action D). */
function dummy(vr: string): unknown[] {
  switch (vr) {
    case 'DA':
      return ['19000101'];
    case 'DT':
      return ['19000101000000'];
    case 'TM':
      return ['000000'];
    case 'AS':
      return ['000Y'];
    case 'UR':
      return ['about:blank'];
    case 'PN':
      return [{ Alphabetic: `${DUMMY_TEXT}^${DUMMY_TEXT}` }];
    default:
      if (NUMBER_VRS.has(vr)) return [0];
      if (TEXT_VRS.has(vr)) return [DUMMY_TEXT];
      // OB, OW, OD, OF, OL, OV, UN: eight zero bytes, a whole number of units of each.
      return [new ArrayBuffer(8)];
  }
}

const DAY_MS = 86_400_000;

function shiftYmd(y: number, m: number, d: number, days: number): string {
  const t = new Date(0);
  t.setUTCFullYear(y, m - 1, d); // not Date.UTC, which reads years 0–99 as 1900–1999
  t.setTime(t.getTime() + days * DAY_MS);
  return `${String(t.getUTCFullYear()).padStart(4, '0')}${String(t.getUTCMonth() + 1).padStart(2, '0')}${String(t.getUTCDate()).padStart(2, '0')}`;
}

/** DA (or a DA range) shifted by `days`; undefined when it is not a date. */
function shiftDa(v: string, days: number): string | undefined {
  if (v === '') return v;
  const parts = v.split('-');
  if (parts.length > 2) return undefined;
  const out: string[] = [];
  for (const p of parts) {
    if (p === '') {
      out.push('');
      continue;
    }
    const m = /^(\d{4})(\d{2})(\d{2})$/.exec(p.replace(/\./g, ''));
    if (m === null) return undefined;
    out.push(shiftYmd(Number(m[1]), Number(m[2]), Number(m[3]), days));
  }
  return out.join('-');
}

/** DT shifted by `days`, time and offset kept; a year-only or year-month value keeps its precision. */
function shiftDt(v: string, days: number): string | undefined {
  if (v === '') return v;
  const m = /^(\d{4})(\d{2})?(\d{2})?(.*)$/.exec(v);
  if (m === null) return undefined;
  const [, y, mo, d, rest] = m as unknown as [string, string, string | undefined, string | undefined, string];
  const shifted = shiftYmd(Number(y), Number(mo ?? '01'), Number(d ?? '01'), days);
  return shifted.slice(0, 4 + (mo === undefined ? 0 : 2) + (d === undefined ? 0 : 2)) + rest;
}

/** An AS age as a 5-year band, capped at 090Y ("90 or older"). */
function ageBand(years: number): string {
  const band = Math.min(90, Math.max(0, Math.floor(years / 5) * 5));
  return `${String(band).padStart(3, '0')}Y`;
}

function asYears(as: string): number | undefined {
  const m = /^(\d{3})([DWMY])$/.exec(as);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return m[2] === 'Y' ? n : m[2] === 'M' ? n / 12 : m[2] === 'W' ? (n * 7) / 365.25 : n / 365.25;
}

function yearsBetween(birthDa: string, atDa: string): number | undefined {
  const b = /^(\d{4})(\d{2})(\d{2})$/.exec(birthDa);
  const a = /^(\d{4})(\d{2})(\d{2})$/.exec(atDa);
  if (b === null || a === null) return undefined;
  let years = Number(a[1]) - Number(b[1]);
  if (Number(a[2]) * 100 + Number(a[3]) < Number(b[2]) * 100 + Number(b[3])) years -= 1;
  return years >= 0 ? years : undefined;
}

// ---------------------------------------------------------------------------------------------
// Keys

function keyBytes(name: string, key: Uint8Array | string): Buffer {
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  if (bytes.length < 16) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: at least 16 bytes of secret are required, got ${bytes.length}`);
  return bytes;
}

/**
 * The pseudonymous UID of `uid` under `key`: 2.25.<the first 128 bits of HMAC-SHA256(key, uid)
 * as an unsigned decimal> (PS3.5 B.2; at most 44 characters). Same key and UID → same result, so
 * a study keeps its structure across instances, calls and studies of one project.
 */
export function remapUid(uid: string, key: Uint8Array | string): string {
  return remapWith(keyBytes('uidKey', key), uid);
}

function remapWith(key: Buffer, uid: string): string {
  const h = createHmac('sha256', key).update(uid, 'utf8').digest();
  return `2.25.${BigInt(`0x${h.subarray(0, 16).toString('hex')}`).toString(10)}`;
}

/**
 * A per-patient date offset for `dateShiftDays`: between −maxDays and −1 days, derived from the
 * key and the patient ID (HMAC-SHA256), so every instance of a patient moves alike without
 * storing the offset, and the offset cannot be recovered without the key.
 */
export function patientDateShiftDays(key: Uint8Array | string, patientId: string, maxDays = 365): number {
  if (!Number.isInteger(maxDays) || maxDays < 1 || maxDays > 36_500) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `maxDays must be an integer in 1..36500, got ${maxDays}`);
  const h = createHmac('sha256', keyBytes('key', key)).update(`eco3d-date-shift:${patientId}`, 'utf8').digest();
  return -(1 + (h.readUInt32BE(0) % maxDays));
}

// ---------------------------------------------------------------------------------------------
// The walk

interface Ctx {
  readonly key: Buffer;
  readonly opts: DeidOptions;
  readonly iod: Readonly<Record<string, IodType>> | undefined;
  /** The instance's top-level dataset (the input), for conditional types. */
  readonly top: DenaturalizedDataset;
  readonly safePrivate: ReadonlySet<string>;
  readonly safeDescriptors: ReadonlySet<string>;
  readonly counts: Record<DeidAction, number>;
  readonly uidMap: Map<string, string>;
  readonly decisions: Map<string, DeidDecision>;
  privateRemoved: number;
  privateKept: number;
  /** > 0 inside a sequence kept by Clean Structured Content (its TEXT values are cleaned). */
  structuredDepth: number;
}

type Resolved =
  | { readonly action: 'X' | 'Z' | 'D' | 'K' | 'U' }
  | { readonly action: 'C'; readonly clean: 'date' | 'age' | 'descriptor' | 'structured' };

function typeOf(key: string, depth: number, ctx: Ctx): { type: AttrType; basis: 'iod' | 'generic' } {
  const iodType = depth === 0 ? ctx.iod?.[key] : undefined;
  if (iodType !== undefined) return { type: typeof iodType === 'function' ? iodType(ctx.top) : iodType, basis: 'iod' };
  return { type: GENERIC_TYPES[key] ?? 1, basis: 'generic' };
}

/** A combined action resolved by type: the first allowed choice in order of preference. */
function resolveCombined(action: DeidBasicAction, type: AttrType): 'X' | 'Z' | 'D' | 'U' {
  const allowed = action.split('/').map((a) => (a === 'U*' ? 'U' : a));
  const order: Array<'X' | 'Z' | 'D' | 'U'> = type === 1 ? ['D', 'U', 'Z', 'X'] : type === 2 ? ['Z', 'D', 'U', 'X'] : ['X', 'Z', 'D', 'U'];
  const choice = order.find((a) => allowed.includes(a));
  if (choice === undefined) throw new Error(`unresolvable action ${action}`);
  return choice;
}

function basicAction(key: string, row: DeidProfileRow, depth: number, ctx: Ctx): 'X' | 'Z' | 'D' | 'K' | 'U' {
  const b = row.basic;
  if (b === 'X' || b === 'Z' || b === 'D' || b === 'K' || b === 'U') return b;
  if (b === 'C') return 'X'; // no row of the Basic Profile says C; were one to, removal is safe
  const { type, basis } = typeOf(key, depth, ctx);
  const applied = resolveCombined(b, type);
  const id = `${key}@${depth === 0 ? 'top' : 'nested'}`;
  if (!ctx.decisions.has(id)) ctx.decisions.set(id, { tag: key, keyword: row.keyword, table: b, applied, basis, type });
  return applied;
}

function resolve(key: string, row: DeidProfileRow, vr: string, depth: number, ctx: Ctx): Resolved {
  const o = ctx.opts;
  // Options first; a C (clean, i.e. retained in a safe form) wins over a K of another Option.
  if (o.dateShiftDays !== undefined && row.retainLongitudinalModifiedDates === 'C') {
    if (vr === 'DA' || vr === 'DT') return { action: 'C', clean: 'date' };
    if (vr === 'TM' || key === '00080201') return { action: 'K' }; // times and the UTC offset say nothing without the date
  }
  if (o.cleanDescriptors === true && row.cleanDescriptors === 'C') return { action: 'C', clean: 'descriptor' };
  if (o.cleanStructuredContent === true && row.cleanStructuredContent === 'C' && vr === 'SQ') return { action: 'C', clean: 'structured' };
  if (o.retainPatientCharacteristics === true && row.retainPatientCharacteristics !== undefined) {
    if (vr === 'AS') return { action: 'C', clean: 'age' };
    if (row.retainPatientCharacteristics === 'K') return { action: 'K' };
    // C on free text (allergies, pre-medication…): no safe form exists, so the Basic Profile applies.
  }
  if (o.retainDeviceIdentity === true && row.retainDeviceIdentity === 'K') return { action: 'K' };
  // C of Retain Device Identity is on AE titles, which name the site's network nodes: Basic Profile.
  return { action: basicAction(key, row, depth, ctx) };
}

function remapValue(uid: string, ctx: Ctx): string {
  if (uid === '' || WELL_KNOWN_UID.test(uid)) return uid;
  let out = ctx.uidMap.get(uid);
  if (out === undefined) {
    out = remapWith(ctx.key, uid);
    ctx.uidMap.set(uid, out);
  }
  return out;
}

function remapElement(el: Element, ctx: Ctx): Element {
  return { vr: el.vr, Value: strings(el).map((u) => remapValue(u, ctx)) };
}

function count(ctx: Ctx, a: DeidAction): void {
  ctx.counts[a] += 1;
}

function cleanItems(el: Element, ctx: Ctx, depth: number): Element {
  const items = (el.Value ?? []).map((item) => cleanDataset(item as DenaturalizedDataset, ctx, depth + 1));
  return { vr: 'SQ', Value: items };
}

/** Applies a resolved action; undefined removes the element. */
function apply(key: string, el: Element, r: Resolved, row: DeidProfileRow, depth: number, ctx: Ctx): Element | undefined {
  count(ctx, r.action);
  const vr = el.vr;
  switch (r.action) {
    case 'X':
      return undefined;
    case 'Z':
      return { vr, Value: [] };
    case 'D':
      if (vr === 'SQ') return cleanItems(el, ctx, depth);
      if (vr === 'UI') return strings(el).length > 0 ? remapElement(el, ctx) : { vr, Value: [remapValue(`${key}:dummy`, ctx)] };
      return { vr, Value: dummy(vr) };
    case 'K':
      return vr === 'SQ' ? cleanItems(el, ctx, depth) : el;
    case 'U':
      if (vr === 'SQ') return cleanItems(el, ctx, depth);
      if (vr === 'UI') return remapElement(el, ctx);
      return { vr, Value: dummy(vr) };
    case 'C':
      return clean(key, el, r.clean, row, depth, ctx);
  }
}

function clean(key: string, el: Element, kind: 'date' | 'age' | 'descriptor' | 'structured', row: DeidProfileRow, depth: number, ctx: Ctx): Element | undefined {
  const vr = el.vr;
  switch (kind) {
    case 'date': {
      const days = ctx.opts.dateShiftDays ?? 0;
      const values = strings(el).map((v) => (vr === 'DA' ? shiftDa(v, days) : shiftDt(v, days)));
      // A value that is not a date cannot be shifted: the Basic Profile's action instead.
      if (values.some((v) => v === undefined)) return basicFallback(key, el, row, depth, ctx);
      return { vr, Value: values };
    }
    case 'age': {
      const years = asYears(first(el) ?? '');
      return years === undefined ? { vr, Value: [] } : { vr, Value: [ageBand(years)] };
    }
    case 'descriptor': {
      if (vr === 'SQ') return cleanItems(el, ctx, depth);
      if (!TEXT_VRS.has(vr)) return basicFallback(key, el, row, depth, ctx);
      const values = strings(el);
      if (values.length > 0 && values.every((v) => ctx.safeDescriptors.has(v))) return el;
      // Not known to be safe: emptied, or a neutral value where the attribute must not be empty.
      return basicAction(key, row, depth, ctx) === 'D' ? { vr, Value: dummy(vr) } : { vr, Value: [] };
    }
    case 'structured': {
      // Kept, items cleaned; within, TEXT values are replaced (textValueReplaced).
      ctx.structuredDepth += 1;
      try {
        return cleanItems(el, ctx, depth);
      } finally {
        ctx.structuredDepth -= 1;
      }
    }
  }
}

function basicFallback(key: string, el: Element, row: DeidProfileRow, depth: number, ctx: Ctx): Element | undefined {
  ctx.counts.C -= 1; // counted again under the action taken
  return apply(key, el, { action: basicAction(key, row, depth, ctx) }, row, depth, ctx);
}

// TID 1002/1004 observer-context items whose text names a device or an institution (DCM codes).
const OBSERVER_DEVICE_TEXT = new Set(['121013', '121016']); // Device Observer Name, Serial Number
const OBSERVER_SITE_TEXT = new Set(['121017', '121009']); // Device Observer Physical Location, Person Observer's Organization Name
// Device Observer Manufacturer and Model Name: the make and model, as (0008,0070) and (0008,1090), which E.1-1 keeps.
const OBSERVER_MODEL_TEXT = new Set(['121014', '121015']);

/** Whether the Text Value of this content item is replaced (observer context always; others under Clean Structured Content). */
function textValueReplaced(item: DenaturalizedDataset, el: Element, ctx: Ctx): boolean {
  const name = item['0040A043']?.Value?.[0] as DenaturalizedDataset | undefined;
  const code = name !== undefined && first(name['00080102']) === 'DCM' ? first(name['00080100']) : undefined;
  if (code !== undefined && OBSERVER_SITE_TEXT.has(code)) return true;
  if (code !== undefined && OBSERVER_DEVICE_TEXT.has(code)) return ctx.opts.retainDeviceIdentity !== true;
  if (ctx.structuredDepth === 0) return false;
  if (code !== undefined && OBSERVER_MODEL_TEXT.has(code)) return false;
  const values = strings(el);
  return !(values.length > 0 && values.every((v) => ctx.safeDescriptors.has(v)));
}

function cleanDataset(ds: DenaturalizedDataset, ctx: Ctx, depth: number): DenaturalizedDataset {
  const out: DenaturalizedDataset = {};
  const entries = Object.entries(ds).map(([k, el]) => [k.toUpperCase(), el] as const);
  // Private creators of this item: "gggg:bb" → creator, and the creators whose block keeps an element.
  const creators = new Map<string, string>();
  for (const [k, el] of entries) {
    const g = parseInt(k.slice(0, 4), 16);
    const e = parseInt(k.slice(4), 16);
    if (g % 2 === 1 && e >= 0x10 && e <= 0xff) creators.set(`${k.slice(0, 4)}:${k.slice(6, 8)}`, first(el) ?? '');
  }
  const keptCreators = new Set<string>();
  const removedOverlayGroups = new Set(entries.filter(([k]) => /^60[0-9A-F]{2}3000$/.test(k)).map(([k]) => k.slice(0, 4)));

  for (const [k, el] of entries) {
    const g = parseInt(k.slice(0, 4), 16);
    const e = parseInt(k.slice(4), 16);
    if (g % 2 === 1) {
      if (e >= 0x10 && e <= 0xff) continue; // creators: decided once their blocks are known
      const creator = e >= 0x1000 ? creators.get(`${k.slice(0, 4)}:${k.slice(4, 6)}`) : undefined;
      if (creator !== undefined && ctx.safePrivate.has(`${g}|${creator}|${e & 0xff}`)) {
        keptCreators.add(`${k.slice(0, 4)}00${k.slice(4, 6)}`);
        ctx.privateKept += 1;
        count(ctx, 'K');
        out[k] = el.vr === 'SQ' ? cleanItems(el, ctx, depth) : el;
      } else {
        ctx.privateRemoved += 1;
        count(ctx, 'X');
      }
      continue;
    }
    // Group lengths (retired, and wrong once anything changes), command and file-meta groups.
    if (e === 0 || g === 0x0000 || g === 0x0002 || removedOverlayGroups.has(k.slice(0, 4))) {
      count(ctx, 'X');
      continue;
    }
    if (k === '0040A160' && textValueReplaced(ds, el, ctx)) {
      // Text Value is type 1 in a TEXT item: a neutral text, not an empty one.
      count(ctx, 'D');
      out[k] = { vr: el.vr, Value: [DUMMY_TEXT] };
      continue;
    }
    const row = rowFor(k);
    if (row === undefined) {
      // Not in E.1-1: kept (K), a sequence with its items cleaned, an instance UID replaced.
      if (el.vr === 'SQ') {
        count(ctx, 'K');
        out[k] = cleanItems(el, ctx, depth);
      } else if (el.vr === 'UI' && !CLASS_UID_TAGS.has(k) && strings(el).some((u) => u !== '' && !WELL_KNOWN_UID.test(u))) {
        count(ctx, 'U');
        out[k] = remapElement(el, ctx);
      } else {
        count(ctx, 'K');
        out[k] = el;
      }
      continue;
    }
    const next = apply(k, el, resolve(k, row, el.vr, depth, ctx), row, depth, ctx);
    if (next !== undefined) out[k] = next;
  }
  for (const c of keptCreators) {
    const el = ds[c] ?? ds[c.toLowerCase()];
    if (el !== undefined) out[c] = el;
  }
  const creatorsRemoved = creators.size - keptCreators.size;
  ctx.privateRemoved += creatorsRemoved;
  ctx.counts.X += creatorsRemoved;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Method codes (CID 7050) and option checks

const CID_7050 = {
  basic: ['113100', 'Basic Application Confidentiality Profile'],
  cleanPixelData: ['113101', 'Clean Pixel Data Option'],
  cleanStructuredContent: ['113104', 'Clean Structured Content Option'],
  cleanDescriptors: ['113105', 'Clean Descriptors Option'],
  modifiedDates: ['113107', 'Retain Longitudinal Temporal Information Modified Dates Option'],
  patientCharacteristics: ['113108', 'Retain Patient Characteristics Option'],
  deviceIdentity: ['113109', 'Retain Device Identity Option'],
  safePrivate: ['113111', 'Retain Safe Private Option'],
} as const;

function checkShift(name: string, days: unknown): void {
  if (!(typeof days === 'number' && Number.isInteger(days) && Math.abs(days) <= 36_500)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name} must be an integer within ±36500, got ${String(days)}`);
  }
}

function checkOptions(o: DeidOptions): void {
  if (o === null || typeof o !== 'object') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'de-identification options are required');
  if (o.dateShiftDays !== undefined) checkShift('dateShiftDays', o.dateShiftDays);
  if (o.dateShiftDaysForPatient !== undefined && typeof o.dateShiftDaysForPatient !== 'function') {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'dateShiftDaysForPatient must be a function of the Patient ID');
  }
  for (const t of o.safePrivateTags ?? []) {
    if (!(Number.isInteger(t.group) && t.group % 2 === 1 && t.group > 0x0008 && t.group <= 0xffff) || typeof t.creator !== 'string' || !Number.isInteger(t.element)) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `safePrivateTags: ${JSON.stringify(t)} is not { group: odd, creator, element }`);
    }
  }
  if (o.burnedInMasks !== undefined) parseBurnedInMasks(o.burnedInMasks);
  const pseudonym: unknown = o.patientPseudonym;
  // LO and PN: at most 64 characters, no backslash (the value separator), no control character.
  if (pseudonym !== undefined && !(typeof pseudonym === 'string' && pseudonym.length <= 64 && pseudonym.trim() !== '' && ![...pseudonym].some((c) => c === '\\' || c.charCodeAt(0) < 0x20))) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'patientPseudonym must be 1..64 characters without a backslash or control character');
  }
}

// ---------------------------------------------------------------------------------------------
// Pixel data

const IMPLICIT_VR_LE = '1.2.840.10008.1.2';
const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
const DEFLATED_EXPLICIT_VR_LE = '1.2.840.10008.1.2.1.99';
const EXPLICIT_VR_BE = '1.2.840.10008.1.2.2';
/** Transfer syntaxes whose Pixel Data is native (uncompressed), so it can be masked. */
const NATIVE_SYNTAXES = new Set([IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE]);

type PixelPlan = { readonly kind: 'keep' } | { readonly kind: 'mask'; readonly mask: BurnedInMask; readonly layout: NativePixelLayout };

function pixelError(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_FILE', message, { details: { file: 'DICOM', field: 'PixelData' } });
}

/** Decides, before anything is cleaned, whether the pixels are masked, kept, or the instance refused. */
function planPixels(top: DenaturalizedDataset, o: DeidOptions, transferSyntax: string | undefined, hasPixelData: boolean): PixelPlan {
  const manufacturer = first(top['00080070']);
  const modelName = first(top['00081090']);
  const mask = o.burnedInMasks === undefined ? undefined : findBurnedInMask(o.burnedInMasks, manufacturer, modelName);
  if (mask === undefined) {
    if ((first(top['00280301']) ?? '').toUpperCase() === 'YES' && o.pixelDataCleaned !== true) {
      throw new Eco3dError('ECO3D_ERR_BURNED_IN_ANNOTATION', `Burned In Annotation is YES and no pixel mask is configured for manufacturer "${manufacturer ?? ''}", model "${modelName ?? ''}"`, {
        details: { manufacturer: manufacturer ?? null, modelName: modelName ?? null },
      });
    }
    return { kind: 'keep' };
  }
  if (!hasPixelData) {
    if (top['7FE00008'] !== undefined || top['7FE00009'] !== undefined) throw pixelError('a burned-in mask applies, but float pixel data cannot be masked');
    return { kind: 'keep' }; // e.g. a report from the masked device model: no pixels to mask
  }
  if (transferSyntax !== undefined && !NATIVE_SYNTAXES.has(transferSyntax)) {
    throw pixelError(
      `the pixel data is compressed (transfer syntax ${transferSyntax}) and a burned-in mask applies to model "${mask.modelName}": it is not transcoded here; decompress the file first (e.g. dcmdjpeg, dcmdrle, dcmdjpls)`,
    );
  }
  return { kind: 'mask', mask, layout: nativePixelLayout(top) };
}

function maskPixelElement(el: Element, plan: Extract<PixelPlan, { kind: 'mask' }>): Element {
  const values = el.Value ?? [];
  const v = values[0];
  if (values.length !== 1) throw pixelError(`the pixel data is in ${values.length} fragments (compressed?): it cannot be masked`);
  let bytes: Uint8Array;
  if (v instanceof ArrayBuffer) bytes = new Uint8Array(v);
  else if (ArrayBuffer.isView(v)) bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  else throw pixelError('the pixel data has no bytes in the dataset (bulk data reference?): it cannot be masked');
  return { vr: el.vr, Value: [maskPixels(bytes, plan.layout, plan.mask.regions).buffer] };
}

// ---------------------------------------------------------------------------------------------
// Entry points

/** The work of `deidentify`; `external` when the Pixel Data stays outside the dataset (Part-10 fast path). */
function deidentifyCore(
  dataset: DenaturalizedDataset,
  options: DeidOptions,
  meta: DenaturalizedDataset | undefined,
  external?: { readonly hasPixelData: boolean; readonly transferSyntax: string },
): { readonly result: DeidResult; readonly plan: PixelPlan } {
  checkOptions(options);
  const key = keyBytes('uidKey', options.uidKey);
  const top: DenaturalizedDataset = Object.fromEntries(Object.entries(dataset).map(([k, v]) => [k.toUpperCase(), v]));
  let opts = options;
  if (options.dateShiftDaysForPatient !== undefined) {
    const days = options.dateShiftDaysForPatient(first(top['00100020']) ?? '');
    checkShift('dateShiftDaysForPatient()', days);
    opts = { ...options, dateShiftDays: days };
  }
  const transferSyntax = external?.transferSyntax ?? (meta === undefined ? undefined : first(meta['00020010']));
  const plan = planPixels(top, opts, transferSyntax, external?.hasPixelData ?? top['7FE00010'] !== undefined);
  const sopClass = first(top['00080016']);
  const ctx: Ctx = {
    key,
    opts,
    iod: sopClass === undefined ? undefined : IOD_TYPES[sopClass],
    top,
    safePrivate: new Set((opts.safePrivateTags ?? []).map((t) => `${t.group}|${t.creator.trim()}|${t.element & 0xff}`)),
    safeDescriptors: new Set((opts.safeDescriptors ?? []).map((s) => s.trim())),
    counts: { X: 0, Z: 0, D: 0, K: 0, C: 0, U: 0 },
    uidMap: new Map(),
    decisions: new Map(),
    privateRemoved: 0,
    privateKept: 0,
    structuredDepth: 0,
  };
  const out = cleanDataset(top, ctx, 0);

  if (opts.retainPatientCharacteristics === true && out['00101010'] === undefined) {
    // No Patient's Age: the band from birth date and study date, both removed above.
    const birth = first(top['00100030']);
    const at = first(top['00080020']) ?? first(top['00080023']) ?? first(top['00080022']);
    const years = birth === undefined || at === undefined ? undefined : yearsBetween(birth, at);
    if (years !== undefined) {
      out['00101010'] = { vr: 'AS', Value: [ageBand(years)] };
      count(ctx, 'C');
    }
  }

  if (opts.patientPseudonym !== undefined) {
    out['00100010'] = { vr: 'PN', Value: [{ Alphabetic: opts.patientPseudonym }] };
    out['00100020'] = { vr: 'LO', Value: [opts.patientPseudonym] };
  }

  const pixelEl = top['7FE00010'];
  if (plan.kind === 'mask' && external === undefined && pixelEl !== undefined) out['7FE00010'] = maskPixelElement(pixelEl, plan);
  const pixelsCleaned = plan.kind === 'mask' || opts.pixelDataCleaned === true;
  // Masked (or vouched for by the caller): the image no longer carries burned-in text.
  if (plan.kind === 'mask' || (opts.pixelDataCleaned === true && out['00280301'] !== undefined)) out['00280301'] = { vr: 'CS', Value: ['NO'] };

  const codes: Array<readonly [string, string]> = [CID_7050.basic];
  const method = [`PS3.15 E.1-1 ${DEID_PROFILE_SOURCE.edition.replace('DICOM PS3.15 ', '')} Basic Profile`];
  if (pixelsCleaned) codes.push(CID_7050.cleanPixelData);
  if (opts.cleanStructuredContent === true) codes.push(CID_7050.cleanStructuredContent);
  if (opts.cleanDescriptors === true) codes.push(CID_7050.cleanDescriptors);
  if (opts.dateShiftDays !== undefined) codes.push(CID_7050.modifiedDates);
  if (opts.retainPatientCharacteristics === true) codes.push(CID_7050.patientCharacteristics);
  if (opts.retainDeviceIdentity === true) codes.push(CID_7050.deviceIdentity);
  if (ctx.privateKept > 0) codes.push(CID_7050.safePrivate);
  for (const [, meaning] of codes.slice(1)) method.push(meaning.replace(/ Option$/, '').slice(0, 64));
  method.push('UIDs: HMAC-SHA256 keyed, 2.25 root');

  out['00120062'] = { vr: 'CS', Value: ['YES'] };
  out['00120063'] = { vr: 'LO', Value: method };
  out['00120064'] = {
    vr: 'SQ',
    Value: codes.map(([value, meaning]) => ({
      '00080100': { vr: 'SH', Value: [value] },
      '00080102': { vr: 'SH', Value: ['DCM'] },
      '00080104': { vr: 'LO', Value: [meaning] },
    })),
  };
  // Longitudinal Temporal Information Modified (SOP Common): dates shifted, or gone.
  out['00280303'] = { vr: 'CS', Value: [opts.dateShiftDays !== undefined ? 'MODIFIED' : 'REMOVED'] };

  let outMeta: DenaturalizedDataset | undefined;
  if (meta !== undefined) {
    outMeta = {};
    for (const [k0, el] of Object.entries(meta)) {
      const k = k0.toUpperCase();
      // Group length (rewritten by the writer), AE titles of the source, sender and receiver, private information.
      if (k === '00020000' || k === '00020016' || k === '00020017' || k === '00020018' || k === '00020102') continue;
      outMeta[k] = k === '00020003' ? remapElement(el, ctx) : el;
    }
    outMeta['00020012'] = { vr: 'UI', Value: [ECO3D_IMPLEMENTATION_CLASS_UID] };
    outMeta['00020013'] = { vr: 'SH', Value: ['ECO3D_DEID_1'] };
  }

  const result: DeidResult = {
    dataset: out,
    meta: outMeta,
    report: {
      counts: { ...ctx.counts },
      privateRemoved: ctx.privateRemoved,
      privateKept: ctx.privateKept,
      uidMap: ctx.uidMap,
      decisions: ctx.decisions,
      methodCodes: codes.map(([v]) => v),
      instanceUids: { study: first(out['0020000D']), series: first(out['0020000E']), sop: first(out['00080018']) },
      pixelMask: plan.kind === 'mask' ? plan.mask : undefined,
    },
  };
  return { result, plan };
}

/**
 * De-identifies a dcmjs denaturalized dataset (and its File Meta Information, when given) by
 * PS3.15 E.1-1 and the Options chosen; returns a new dataset and a report. The input and its
 * buffers are not changed. Throws ECO3D_ERR_BAD_REQUEST on bad options,
 * ECO3D_ERR_BURNED_IN_ANNOTATION for burned-in annotation without a mask, ECO3D_ERR_BAD_FILE for
 * pixel data a mask cannot be applied to.
 */
export function deidentify(dataset: DenaturalizedDataset, options: DeidOptions, meta?: DenaturalizedDataset): DeidResult {
  return deidentifyCore(dataset, options, meta).result;
}

// ---------------------------------------------------------------------------------------------
// Part-10 files

/** Where the top-level Pixel Data element sits in a Part-10 file. */
interface PixelDataSpan {
  readonly tagOffset: number;
  readonly valueOffset: number;
  /** The byte after the element (after the sequence delimiter when encapsulated). */
  readonly end: number;
  readonly encapsulated: boolean;
}

interface Part10Layout {
  readonly transferSyntaxUid: string;
  /** Undefined for a deflated data set (its offsets are in the inflated bytes). */
  readonly pixelData: PixelDataSpan | undefined;
}

interface WalkSyntax {
  readonly explicit: boolean;
  readonly little: boolean;
}

// VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 Table 7.1-1).
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);
const UNDEFINED_LENGTH = 0xffffffff;
const ITEM_TAG = 0xfffee000;
const ITEM_DELIMITER = 0xfffee00d;
const SEQUENCE_DELIMITER = 0xfffee0dd;
const PIXEL_DATA_TAG = 0x7fe00010;

function fileError(message: string, cause?: unknown): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_FILE', message, { details: { file: 'DICOM' }, ...(cause === undefined ? {} : { cause }) });
}

const hex4 = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');

/**
 * Walks every element header of a data set, skipping values by their lengths and undefined-length
 * sequences item by item, to the last byte: a value or header that runs past the end is a
 * truncated file, a top-level tag out of order or a stray item a corrupt one.
 */
class Part10Walker {
  readonly #view: DataView;
  /** Bytes at hand: a prefix of the file. */
  readonly #length: number;
  /** The whole file's size: running past it is truncation, past the prefix a request for more. */
  readonly #size: number;

  constructor(bytes: Uint8Array, fileSize: number = bytes.byteLength) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#length = bytes.byteLength;
    this.#size = fileSize;
  }

  /** `end` is within the file (a value skipped, not read). */
  #within(end: number, what: string): void {
    if (end > this.#size) throw fileError(`truncated: ${what} runs past the end of the file (byte ${end} of ${this.#size})`);
  }

  /** The bytes up to `end` are to be read. */
  #need(end: number, what: string): void {
    this.#within(end, what);
    // A generous step: headers with large per-frame sequences come in hundreds of kB.
    if (end > this.#length) throw new NeedMore(Math.min(this.#size, Math.max(end + 256 * 1024, this.#length * 2)));
  }

  tag(pos: number, little: boolean): number {
    this.#need(pos + 4, `the tag at byte ${pos}`);
    return ((this.#view.getUint16(pos, little) << 16) | this.#view.getUint16(pos + 2, little)) >>> 0;
  }

  element(pos: number, s: WalkSyntax): { tag: number; vr: string | null; valueOffset: number; length: number } {
    const tag = this.tag(pos, s.little);
    this.#need(pos + 8, `the element header at byte ${pos}`);
    // Items and delimiters have no VR in any transfer syntax (PS3.5 7.5).
    if (!s.explicit || tag >>> 16 === 0xfffe) return { tag, vr: null, valueOffset: pos + 8, length: this.#view.getUint32(pos + 4, s.little) };
    const a = this.#view.getUint8(pos + 4);
    const b = this.#view.getUint8(pos + 5);
    if (a < 0x41 || a > 0x5a || b < 0x41 || b > 0x5a) throw fileError(`corrupt: no VR at byte ${pos + 4} for (${hex4(tag >>> 16)},${hex4(tag & 0xffff)})`);
    const vr = String.fromCharCode(a, b);
    if (!LONG_VRS.has(vr)) return { tag, vr, valueOffset: pos + 8, length: this.#view.getUint16(pos + 6, s.little) };
    this.#need(pos + 12, `the element header at byte ${pos}`);
    return { tag, vr, valueOffset: pos + 12, length: this.#view.getUint32(pos + 8, s.little) };
  }

  /** The offset after the value of element `e`. */
  skipValue(e: { tag: number; vr: string | null; valueOffset: number; length: number }, s: WalkSyntax, depth: number): number {
    if (e.length !== UNDEFINED_LENGTH) {
      const end = e.valueOffset + e.length;
      this.#within(end, `the value of (${hex4(e.tag >>> 16)},${hex4(e.tag & 0xffff)}) at byte ${e.valueOffset}`);
      return end;
    }
    if (depth > 64) throw fileError('corrupt: sequences nested deeper than 64');
    // An undefined-length UN holds implicit VR little endian content (PS3.5 6.2.2).
    const inner = e.vr === 'UN' ? { explicit: false, little: true } : s;
    let pos = e.valueOffset;
    for (;;) {
      const tag = this.tag(pos, inner.little);
      this.#need(pos + 8, `the item header at byte ${pos}`);
      const length = this.#view.getUint32(pos + 4, inner.little);
      if (tag === SEQUENCE_DELIMITER) return pos + 8;
      if (tag !== ITEM_TAG) throw fileError(`corrupt: expected an item at byte ${pos}, found (${hex4(tag >>> 16)},${hex4(tag & 0xffff)})`);
      if (length !== UNDEFINED_LENGTH) {
        pos += 8 + length;
        this.#within(pos, `the item at byte ${pos - 8 - length}`);
        continue;
      }
      pos += 8;
      for (;;) {
        const el = this.element(pos, inner);
        if (el.tag === ITEM_DELIMITER) {
          pos += 8;
          break;
        }
        pos = this.skipValue(el, inner, depth + 1);
      }
    }
  }

  /** Walks the top-level elements from `pos` to the end; returns the Pixel Data span. */
  dataset(pos: number, s: WalkSyntax): { pixelData: PixelDataSpan | undefined; afterPixelData: boolean } {
    let previous = -1;
    let pixelData: PixelDataSpan | undefined;
    let afterPixelData = false;
    let rows = false;
    let floatPixels = false;
    while (pos < this.#size) {
      const e = this.element(pos, s);
      if (e.tag >>> 16 === 0xfffe) throw fileError(`corrupt: an item or delimiter at the top level, byte ${pos}`);
      // Data elements come in ascending tag order (PS3.5 7.1): a step back means garbage.
      if (e.tag <= previous) throw fileError(`corrupt: tag (${hex4(e.tag >>> 16)},${hex4(e.tag & 0xffff)}) at byte ${pos} is out of order`);
      previous = e.tag;
      const end = this.skipValue(e, s, 0);
      if (e.tag === PIXEL_DATA_TAG) pixelData = { tagOffset: pos, valueOffset: e.valueOffset, end, encapsulated: e.length === UNDEFINED_LENGTH };
      else if (pixelData !== undefined) afterPixelData = true;
      if (e.tag === 0x00280010) rows = true;
      if (e.tag === 0x7fe00008 || e.tag === 0x7fe00009) floatPixels = true;
      pos = end;
    }
    // A file cut right before its pixels ends on an element boundary; an image without them is
    // that, not an image (every image IOD requires pixel data).
    if (rows && pixelData === undefined && !floatPixels) throw fileError('truncated: the image has Rows and Columns but no Pixel Data');
    return { pixelData, afterPixelData };
  }
}

/** Thrown by the walker when the prefix ends before what it must read; carries a size that will do. */
class NeedMore extends Error {
  constructor(readonly bytes: number) {
    super(`read ${bytes} bytes of the file`);
  }
}

function walkPart10(bytes: Uint8Array, fileSize: number): Part10Layout & { readonly afterPixelData: boolean } {
  if (fileSize < 132 || (bytes.byteLength >= 132 && (bytes[128] !== 0x44 || bytes[129] !== 0x49 || bytes[130] !== 0x43 || bytes[131] !== 0x4d))) {
    throw fileError('not a DICOM Part-10 file (no DICM prefix)');
  }
  const w = new Part10Walker(bytes, fileSize);
  if (bytes.byteLength < 132) throw new NeedMore(Math.min(fileSize, 64 * 1024));
  const metaSyntax = { explicit: true, little: true };
  let pos = 132;
  let transferSyntaxUid: string | undefined;
  // File Meta Information, element by element rather than by its group length, which some writers get wrong.
  while (pos < fileSize && w.tag(pos, true) >>> 16 === 0x0002) {
    const e = w.element(pos, metaSyntax);
    if (e.length === UNDEFINED_LENGTH) throw fileError('corrupt: undefined length in the File Meta Information');
    const end = w.skipValue(e, metaSyntax, 0);
    if (e.tag === 0x00020010) transferSyntaxUid = Buffer.from(bytes.buffer, bytes.byteOffset + e.valueOffset, e.length).toString('latin1').replace(/[\0 ]+$/, '');
    pos = end;
  }
  if (transferSyntaxUid === undefined || transferSyntaxUid === '') throw fileError('no Transfer Syntax UID (0002,0010) in the File Meta Information');
  if (pos >= fileSize) throw fileError('truncated: no data set after the File Meta Information');
  if (transferSyntaxUid === DEFLATED_EXPLICIT_VR_LE) {
    if (bytes.byteLength < fileSize) throw new NeedMore(fileSize); // inflated whole
    let inflated: Uint8Array;
    try {
      inflated = inflateRawSync(bytes.subarray(pos));
    } catch (err) {
      throw fileError(`truncated or corrupt deflated data set: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    const r = new Part10Walker(inflated).dataset(0, { explicit: true, little: true });
    return { transferSyntaxUid, pixelData: undefined, afterPixelData: r.afterPixelData };
  }
  const r = w.dataset(pos, { explicit: transferSyntaxUid !== IMPLICIT_VR_LE, little: transferSyntaxUid !== EXPLICIT_VR_BE });
  return { transferSyntaxUid, ...r };
}

function readPart10(buffer: ArrayBuffer, untilPixelData: boolean): ReturnType<typeof dcmjs.data.DicomMessage.readFile> {
  try {
    return dcmjs.data.DicomMessage.readFile(buffer, { ignoreErrors: false, untilTag: untilPixelData ? '7FE00010' : null, includeUntilTagValue: false, noCopy: false });
  } catch (err) {
    throw fileError(`cannot parse the DICOM file: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}

/**
 * Writes a Part-10 file with dcmjs, in the transfer syntax of `meta`. dcmjs writes a deflated
 * data set uncompressed while declaring it deflated (an unreadable file), so that one is written
 * as explicit VR little endian and then deflated here (PS3.5 A.5).
 */
function writeWithDcmjs(meta: DenaturalizedDataset, dataset: DenaturalizedDataset): Uint8Array {
  if (first(meta['00020010']) !== DEFLATED_EXPLICIT_VR_LE) {
    const w = new dcmjs.data.DicomDict(meta);
    w.dict = dataset;
    return new Uint8Array(w.write());
  }
  const plain = new dcmjs.data.DicomDict({ ...meta, '00020010': { vr: 'UI', Value: [EXPLICIT_VR_LE] } });
  plain.dict = dataset;
  const bytes = new Uint8Array(plain.write());
  // The data set starts after the File Meta Information, whose group length dcmjs writes first.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(132, true) !== 0x00000002) throw new Error('dcmjs wrote no File Meta Information Group Length first');
  const datasetOffset = 144 + view.getUint32(140, true);
  const head = new dcmjs.data.DicomDict(meta);
  head.dict = {};
  const metaBytes = new Uint8Array(head.write());
  const deflated = deflateRawSync(bytes.subarray(datasetOffset));
  const out = new Uint8Array(metaBytes.byteLength + deflated.byteLength);
  out.set(metaBytes, 0);
  out.set(deflated, metaBytes.byteLength);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Part-10 writing
//
// dcmjs's writer costs most of the time of a small instance (about 2 ms of 3), so the data sets
// are written here: little endian, explicit or implicit VR, sequences and items of undefined
// length, as dcmjs writes them. Values keep the bytes they were read with when unchanged (dcmjs's
// _rawValue, e.g. a DS's own digits). What this writer does not know (another VR, a value too long
// for a 16-bit length, bulk data references) goes to dcmjs, as does big endian.

/** This writer cannot encode the data set: dcmjs does. */
class NotEncodable extends Error {}

const STRING_VRS = new Set(['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'LO', 'LT', 'PN', 'SH', 'ST', 'TM', 'UC', 'UI', 'UR', 'UT']);
// Text that may hold any character: written as UTF-8 (dcmjs reads every data set into ISO_IR 192).
const UTF8_VRS = new Set(['LO', 'LT', 'PN', 'SH', 'ST', 'UC', 'UT']);
const BYTE_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'UN']);
const NUMBER_SIZES: Readonly<Record<string, number>> = { US: 2, SS: 2, UL: 4, SL: 4, FL: 4, FD: 8, SV: 8, UV: 8, AT: 4 };

class ByteWriter {
  #buf: Uint8Array;
  #view: DataView;
  length = 0;

  constructor(initialBytes: number) {
    this.#buf = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#buf.buffer);
  }

  #ensure(n: number): void {
    if (this.length + n <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  u16(v: number): void {
    this.#ensure(2);
    this.#view.setUint16(this.length, v, true);
    this.length += 2;
  }

  u32(v: number): void {
    this.#ensure(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }

  bytes(b: Uint8Array): void {
    this.#ensure(b.byteLength);
    this.#buf.set(b, this.length);
    this.length += b.byteLength;
  }

  /** Room for `n` bytes at the end, written through the returned view. */
  reserve(n: number): DataView {
    this.#ensure(n);
    const view = new DataView(this.#buf.buffer, this.length, n);
    this.length += n;
    return view;
  }

  result(): Uint8Array {
    return this.#buf.subarray(0, this.length);
  }
}

type StoredElement = Element & { readonly _rawValue?: unknown };

/** The values to write: the ones read (`_rawValue`) when they still say what Value says. */
function valuesToWrite(el: StoredElement): readonly unknown[] {
  const values = el.Value ?? [];
  const raw = el._rawValue;
  if (!Array.isArray(raw) || raw.length !== values.length || el.vr === 'PN') return values;
  for (let i = 0; i < values.length; i++) {
    const v: unknown = values[i];
    const r: unknown = raw[i];
    if (typeof v === 'string' ? typeof r === 'string' && r.trim() === v.trim() : typeof v === 'number' ? r === v || (typeof r === 'string' && r.trim() !== '' && Number(r) === v) : false) continue;
    return values;
  }
  return raw as unknown[];
}

/** A DS number in at most 16 characters (dcmjs's rule, so that both writers agree). */
function dsString(v: number): string {
  const s = String(v);
  if (s.length <= 16) return s;
  const sign = v < 0 ? 1 : 0;
  const log = Math.log10(Math.abs(v));
  if (log < -4 || log >= 14 - sign) {
    const e = v.toExponential(16 - sign);
    return e.length <= 16 ? e : v.toExponential(16 - (e.length - 16) - sign);
  }
  const f = v.toFixed(16 - sign);
  return f.length <= 16 ? f : v.toFixed(16 - sign - (f.length - 16));
}

function stringValue(vr: string, v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return vr === 'DS' ? dsString(v) : String(v);
  if (vr === 'PN' && typeof v === 'object') {
    const p = v as { Alphabetic?: unknown; Ideographic?: unknown; Phonetic?: unknown };
    const groups = [p.Alphabetic, p.Ideographic, p.Phonetic].map((g) => (typeof g === 'string' ? g : ''));
    while (groups.length > 1 && groups[groups.length - 1] === '') groups.pop();
    return groups.join('=');
  }
  throw new NotEncodable(`a ${vr} value of type ${typeof v}`);
}

function valueBytes(el: StoredElement): Uint8Array {
  const vr = el.vr;
  if (el.InlineBinary !== undefined || el.BulkDataURI !== undefined) throw new NotEncodable('bulk data');
  const values = valuesToWrite(el);
  if (STRING_VRS.has(vr)) {
    const text = values.map((v) => stringValue(vr, v)).join('\\');
    const b = Buffer.from(text, UTF8_VRS.has(vr) ? 'utf8' : 'latin1');
    if (b.byteLength % 2 === 0) return b;
    const padded = new Uint8Array(b.byteLength + 1);
    padded.set(b);
    padded[b.byteLength] = vr === 'UI' ? 0 : 0x20;
    return padded;
  }
  const size = NUMBER_SIZES[vr];
  if (size !== undefined) {
    const out = new Uint8Array(size * values.length);
    const view = new DataView(out.buffer);
    values.forEach((v, i) => {
      const at = i * size;
      if (vr === 'SV' || vr === 'UV') {
        const n = typeof v === 'bigint' ? v : BigInt(Number(v));
        if (vr === 'SV') view.setBigInt64(at, n, true);
        else view.setBigUint64(at, n, true);
        return;
      }
      const n = Number(v);
      if (vr === 'US') view.setUint16(at, n, true);
      else if (vr === 'SS') view.setInt16(at, n, true);
      else if (vr === 'UL') view.setUint32(at, n, true);
      else if (vr === 'SL') view.setInt32(at, n, true);
      else if (vr === 'FL') view.setFloat32(at, n, true);
      else if (vr === 'FD') view.setFloat64(at, n, true);
      else {
        // AT: the tag as group, element.
        view.setUint16(at, n >>> 16, true);
        view.setUint16(at + 2, n & 0xffff, true);
      }
    });
    return out;
  }
  if (BYTE_VRS.has(vr)) {
    const parts = values.map((v) => {
      if (v instanceof ArrayBuffer) return new Uint8Array(v);
      if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      throw new NotEncodable(`a ${vr} value that is not bytes`);
    });
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    const out = new Uint8Array(total + (total % 2));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
  throw new NotEncodable(`VR ${vr}`);
}

function writeElements(w: ByteWriter, ds: DenaturalizedDataset, explicit: boolean, depth: number): void {
  if (depth > 64) throw new NotEncodable('sequences nested deeper than 64');
  for (const key of Object.keys(ds).sort()) {
    const el: StoredElement | undefined = ds[key];
    if (el === undefined) continue;
    const tag = parseInt(key, 16);
    if (!/^[0-9A-F]{8}$/.test(key)) throw new NotEncodable(`key ${key}`);
    w.u16(tag >>> 16);
    w.u16(tag & 0xffff);
    if (el.vr === 'SQ') {
      if (explicit) {
        w.u16(0x5153); // "SQ"
        w.u16(0);
      }
      w.u32(UNDEFINED_LENGTH);
      for (const item of (el.Value ?? []) as DenaturalizedDataset[]) {
        w.u32(ITEM_TAG_LE);
        w.u32(UNDEFINED_LENGTH);
        writeElements(w, item, explicit, depth + 1);
        w.u32(ITEM_DELIMITER_LE);
        w.u32(0);
      }
      w.u32(SEQUENCE_DELIMITER_LE);
      w.u32(0);
      continue;
    }
    const value = valueBytes(el);
    if (explicit) {
      if (!/^[A-Z]{2}$/.test(el.vr)) throw new NotEncodable(`VR ${el.vr}`);
      w.u16(el.vr.charCodeAt(0) | (el.vr.charCodeAt(1) << 8));
      if (LONG_VRS.has(el.vr)) {
        w.u16(0);
        w.u32(value.byteLength);
      } else {
        if (value.byteLength > 0xfffe) throw new NotEncodable(`a ${el.vr} value of ${value.byteLength} bytes`);
        w.u16(value.byteLength);
      }
    } else {
      w.u32(value.byteLength);
    }
    w.bytes(value);
  }
}

// Item and delimiter tags as written little endian: (FFFE,E000) is the u32 0xE000FFFE.
const ITEM_TAG_LE = 0xe000fffe;
const ITEM_DELIMITER_LE = 0xe00dfffe;
const SEQUENCE_DELIMITER_LE = 0xe0ddfffe;

/** Preamble, "DICM", the File Meta Information with its group length, then the data set (little endian). */
function encodePart10(meta: DenaturalizedDataset, dataset: DenaturalizedDataset, explicit: boolean): Uint8Array {
  const metaOnly = new ByteWriter(512);
  const rest = Object.fromEntries(Object.entries(meta).filter(([k]) => k !== '00020000'));
  writeElements(metaOnly, rest, true, 0);
  const metaBytes = metaOnly.result();
  const w = new ByteWriter(16 * 1024);
  w.reserve(128); // zeros
  w.bytes(Buffer.from('DICM', 'latin1'));
  w.u16(0x0002);
  w.u16(0x0000);
  w.u16(0x4c55); // "UL"
  w.u16(4);
  w.u32(metaBytes.byteLength);
  w.bytes(metaBytes);
  writeElements(w, dataset, explicit, 0);
  return w.result();
}

/** Writes a Part-10 file in the transfer syntax of `meta` (deflated: PS3.5 A.5, the data set deflated). */
function writePart10(meta: DenaturalizedDataset, dataset: DenaturalizedDataset): Uint8Array {
  const ts = first(meta['00020010']);
  if (ts !== EXPLICIT_VR_BE) {
    try {
      if (ts !== DEFLATED_EXPLICIT_VR_LE) return encodePart10(meta, dataset, ts !== IMPLICIT_VR_LE);
      const metaBytes = encodePart10(meta, {}, true);
      const plain = encodePart10(meta, dataset, true).subarray(metaBytes.byteLength);
      const deflated = deflateRawSync(plain);
      const out = new Uint8Array(metaBytes.byteLength + deflated.byteLength);
      out.set(metaBytes, 0);
      out.set(deflated, metaBytes.byteLength);
      return out;
    } catch (err) {
      if (!(err instanceof NotEncodable)) throw err;
    }
  }
  return writeWithDcmjs(meta, dataset);
}

/** What `deidentifyPart10Prefix` asks for, or gives. */
export type Part10PrefixResult =
  /** Call again with the first `bytes` bytes of the file (the whole file, at most). */
  | { readonly kind: 'need'; readonly bytes: number }
  /**
   * The de-identified file is `head`, then, when `tail` is not null, the input file's bytes
   * [tail.offset, tail.offset + tail.length) unchanged: its Pixel Data element.
   */
  | { readonly kind: 'done'; readonly head: Uint8Array; readonly tail: { readonly offset: number; readonly length: number } | null; readonly report: DeidReport };

/**
 * `deidentifyPart10` for a file that need not be in memory: from `prefix`, the first bytes of a
 * file of `fileSize` bytes (all of it, or as much as the caller read), either asks for a longer
 * prefix or gives the output as a de-identified head and the range of the input to append as it
 * is. A large image whose Pixel Data is its last element is thus de-identified from its header
 * alone, and its pixels can be copied file to file. Files that must be read whole (deflated or
 * big-endian data sets, elements after Pixel Data, encapsulated pixel data whose fragments are
 * walked, a burned-in mask to apply) ask for all of it. Errors as `deidentifyPart10`; `prefix` is
 * not changed.
 */
export function deidentifyPart10Prefix(prefix: Uint8Array, fileSize: number, options: DeidOptions): Part10PrefixResult {
  checkOptions(options);
  keyBytes('uidKey', options.uidKey);
  if (!Number.isSafeInteger(fileSize) || prefix.byteLength > fileSize) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `the prefix (${prefix.byteLength} bytes) is longer than the file (${fileSize})`);
  let layout: ReturnType<typeof walkPart10>;
  try {
    layout = walkPart10(prefix, fileSize);
  } catch (err) {
    if (err instanceof NeedMore) return { kind: 'need', bytes: err.bytes };
    throw err;
  }
  const whole = prefix.byteLength === fileSize;
  const own = prefix.byteOffset === 0 && prefix.buffer instanceof ArrayBuffer && prefix.buffer.byteLength === prefix.byteLength ? prefix.buffer : undefined;
  const px = layout.pixelData;

  if (px === undefined || layout.afterPixelData || layout.transferSyntaxUid === EXPLICIT_VR_BE) {
    // dcmjs reads the whole file, and copies every value it reads (noCopy: false), so it may read
    // the caller's buffer itself.
    if (!whole) return { kind: 'need', bytes: fileSize };
    const dict = readPart10(own ?? prefix.slice().buffer, false);
    const r = deidentifyCore(dict.dict, options, dict.meta).result;
    return { kind: 'done', head: writePart10(r.meta ?? {}, r.dataset), tail: null, report: r.report };
  }

  // dcmjs reads and writes what precedes Pixel Data; the pixel element is kept byte for byte, in
  // the same transfer syntax (or masked).
  const dict = readPart10(own ?? prefix.slice(0, px.tagOffset + 4).buffer, true);
  const header = { ...dict.dict };
  delete header['7FE00010'];
  const { result, plan } = deidentifyCore(header, options, dict.meta, { hasPixelData: true, transferSyntax: layout.transferSyntaxUid });
  const head = writePart10(result.meta ?? {}, result.dataset);
  if (plan.kind === 'keep') return { kind: 'done', head, tail: { offset: px.tagOffset, length: fileSize - px.tagOffset }, report: result.report };
  if (px.encapsulated) throw pixelError('the pixel data is encapsulated (compressed): it cannot be masked');
  if (!whole) return { kind: 'need', bytes: fileSize };
  const pixelHead = prefix.subarray(px.tagOffset, px.valueOffset);
  const masked = maskPixels(prefix.subarray(px.valueOffset, px.end), plan.layout, plan.mask.regions);
  const out = new Uint8Array(head.byteLength + pixelHead.byteLength + masked.byteLength);
  out.set(head, 0);
  out.set(pixelHead, head.byteLength);
  out.set(masked, head.byteLength + pixelHead.byteLength);
  return { kind: 'done', head: out, tail: null, report: result.report };
}

/**
 * De-identifies a DICOM Part-10 file: checked whole (a truncated or corrupt file is
 * ECO3D_ERR_BAD_FILE, never read in part), read with dcmjs, `deidentify` with its File Meta
 * Information, written back in the same transfer syntax. When Pixel Data is the last element of
 * a little-endian, not deflated, file, only the bytes before it go through dcmjs and the pixel
 * element is copied as it is (or masked). Burned-in annotation and masks as in `deidentify`.
 * `bytes` is not changed.
 */
export function deidentifyPart10(bytes: Uint8Array, options: DeidOptions): { readonly bytes: Uint8Array; readonly report: DeidReport } {
  const r = deidentifyPart10Prefix(bytes, bytes.byteLength, options);
  if (r.kind === 'need') throw new Error(`deidentifyPart10Prefix asked for ${r.bytes} bytes of a whole file`); // cannot happen: the prefix is the file
  if (r.tail === null) return { bytes: r.head, report: r.report };
  const out = new Uint8Array(r.head.byteLength + r.tail.length);
  out.set(r.head, 0);
  out.set(bytes.subarray(r.tail.offset, r.tail.offset + r.tail.length), r.head.byteLength);
  return { bytes: out, report: r.report };
}

/**
 * The action `deidentify` takes on a standard attribute (8 hex digits) with `options`: at the top
 * level of an instance of `sopClassUid`, or nested in a sequence. For tests and audits.
 */
export function deidActionFor(tag: string, options: Omit<DeidOptions, 'uidKey'>, where: { readonly sopClassUid?: string; readonly modality?: string; readonly nested?: boolean; readonly vr?: string } = {}): DeidAction {
  const key = tag.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  const row = rowFor(key);
  if (row === undefined) return 'K';
  const ctx: Ctx = {
    key: Buffer.alloc(16),
    opts: { ...options, uidKey: '' },
    iod: where.sopClassUid === undefined ? undefined : IOD_TYPES[where.sopClassUid],
    top: where.modality === undefined ? {} : { '00080060': { vr: 'CS', Value: [where.modality] } },
    safePrivate: new Set(),
    safeDescriptors: new Set(),
    counts: { X: 0, Z: 0, D: 0, K: 0, C: 0, U: 0 },
    uidMap: new Map(),
    decisions: new Map(),
    privateRemoved: 0,
    privateKept: 0,
    structuredDepth: 0,
  };
  return resolve(key, row, where.vr ?? row.vr, where.nested === true ? 1 : 0, ctx).action;
}


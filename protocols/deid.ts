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
// Not done here (known limits): free text inside SR TEXT items other than the above (Clean
// Structured Content), burned-in pixel annotation (Clean Pixel Data: the caller masks and then
// sets `pixelDataCleaned`), Retain Full Dates / UIDs / Institution Identity Options.
import { createHmac } from 'node:crypto';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { DEID_PROFILE, DEID_PROFILE_SOURCE, type DeidBasicAction, type DeidProfileRow } from './deid-profile.ts';
import { ECO3D_IMPLEMENTATION_CLASS_UID } from './dicom-part10.ts';
import { Eco3dError } from './errors.ts';

export { DEID_PROFILE, DEID_PROFILE_SOURCE, type DeidBasicAction, type DeidOptionAction, type DeidProfileRow } from './deid-profile.ts';

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
  /** Clean Descriptors Option (see `cleanDescriptor`): free-text descriptors become empty or neutral unless listed in `safeDescriptors`. */
  readonly cleanDescriptors?: boolean;
  /** With `cleanDescriptors`: descriptor values known to carry no identifying information (e.g. our own series descriptions), kept verbatim. */
  readonly safeDescriptors?: readonly string[];
  /** Retain Safe Private Option: private elements kept (with their creator); every other private element is removed. */
  readonly safePrivateTags?: readonly SafePrivateTag[];
  /** The caller has masked burned-in annotation in the pixel data: records Clean Pixel Data (113101). */
  readonly pixelDataCleaned?: boolean;
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
}

type Resolved =
  | { readonly action: 'X' | 'Z' | 'D' | 'K' | 'U' }
  | { readonly action: 'C'; readonly clean: 'date' | 'age' | 'descriptor' };

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

function clean(key: string, el: Element, kind: 'date' | 'age' | 'descriptor', row: DeidProfileRow, depth: number, ctx: Ctx): Element | undefined {
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
  }
}

function basicFallback(key: string, el: Element, row: DeidProfileRow, depth: number, ctx: Ctx): Element | undefined {
  ctx.counts.C -= 1; // counted again under the action taken
  return apply(key, el, { action: basicAction(key, row, depth, ctx) }, row, depth, ctx);
}

// TID 1002/1004 observer-context items whose text names a device or an institution (DCM codes).
const OBSERVER_DEVICE_TEXT = new Set(['121013', '121016']); // Device Observer Name, Serial Number
const OBSERVER_SITE_TEXT = new Set(['121017', '121009']); // Device Observer Physical Location, Person Observer's Organization Name

function observerTextToClean(item: DenaturalizedDataset, ctx: Ctx): boolean {
  const name = item['0040A043']?.Value?.[0] as DenaturalizedDataset | undefined;
  if (name === undefined || first(name['00080102']) !== 'DCM') return false;
  const code = first(name['00080100']) ?? '';
  return OBSERVER_SITE_TEXT.has(code) || (OBSERVER_DEVICE_TEXT.has(code) && ctx.opts.retainDeviceIdentity !== true);
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
  const observerText = observerTextToClean(ds, ctx);

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
    if (observerText && k === '0040A160') {
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
// Entry points

const CID_7050 = {
  basic: ['113100', 'Basic Application Confidentiality Profile'],
  cleanPixelData: ['113101', 'Clean Pixel Data Option'],
  cleanDescriptors: ['113105', 'Clean Descriptors Option'],
  modifiedDates: ['113107', 'Retain Longitudinal Temporal Information Modified Dates Option'],
  patientCharacteristics: ['113108', 'Retain Patient Characteristics Option'],
  deviceIdentity: ['113109', 'Retain Device Identity Option'],
  safePrivate: ['113111', 'Retain Safe Private Option'],
} as const;

function checkOptions(o: DeidOptions): void {
  if (o === null || typeof o !== 'object') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'de-identification options are required');
  if (o.dateShiftDays !== undefined && !(Number.isInteger(o.dateShiftDays) && Math.abs(o.dateShiftDays) <= 36_500)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `dateShiftDays must be an integer within ±36500, got ${o.dateShiftDays}`);
  }
  for (const t of o.safePrivateTags ?? []) {
    if (!(Number.isInteger(t.group) && t.group % 2 === 1 && t.group > 0x0008 && t.group <= 0xffff) || typeof t.creator !== 'string' || !Number.isInteger(t.element)) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `safePrivateTags: ${JSON.stringify(t)} is not { group: odd, creator, element }`);
    }
  }
}

/**
 * De-identifies a dcmjs denaturalized dataset (and its File Meta Information, when given) by
 * PS3.15 E.1-1 and the Options chosen; returns a new dataset and a report. Throws
 * ECO3D_ERR_BAD_REQUEST on bad options.
 */
export function deidentify(dataset: DenaturalizedDataset, options: DeidOptions, meta?: DenaturalizedDataset): DeidResult {
  checkOptions(options);
  const key = keyBytes('uidKey', options.uidKey);
  const top: DenaturalizedDataset = Object.fromEntries(Object.entries(dataset).map(([k, v]) => [k.toUpperCase(), v]));
  const sopClass = first(top['00080016']);
  const ctx: Ctx = {
    key,
    opts: options,
    iod: sopClass === undefined ? undefined : IOD_TYPES[sopClass],
    top,
    safePrivate: new Set((options.safePrivateTags ?? []).map((t) => `${t.group}|${t.creator.trim()}|${t.element & 0xff}`)),
    safeDescriptors: new Set((options.safeDescriptors ?? []).map((s) => s.trim())),
    counts: { X: 0, Z: 0, D: 0, K: 0, C: 0, U: 0 },
    uidMap: new Map(),
    decisions: new Map(),
    privateRemoved: 0,
    privateKept: 0,
  };
  const out = cleanDataset(top, ctx, 0);

  if (options.retainPatientCharacteristics === true && out['00101010'] === undefined) {
    // No Patient's Age: the band from birth date and study date, both removed above.
    const birth = first(top['00100030']);
    const at = first(top['00080020']) ?? first(top['00080023']) ?? first(top['00080022']);
    const years = birth === undefined || at === undefined ? undefined : yearsBetween(birth, at);
    if (years !== undefined) {
      out['00101010'] = { vr: 'AS', Value: [ageBand(years)] };
      count(ctx, 'C');
    }
  }

  const codes: Array<readonly [string, string]> = [CID_7050.basic];
  const method = [`PS3.15 E.1-1 ${DEID_PROFILE_SOURCE.edition.replace('DICOM PS3.15 ', '')} Basic Profile`];
  if (options.pixelDataCleaned === true) codes.push(CID_7050.cleanPixelData);
  if (options.cleanDescriptors === true) codes.push(CID_7050.cleanDescriptors);
  if (options.dateShiftDays !== undefined) codes.push(CID_7050.modifiedDates);
  if (options.retainPatientCharacteristics === true) codes.push(CID_7050.patientCharacteristics);
  if (options.retainDeviceIdentity === true) codes.push(CID_7050.deviceIdentity);
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
  out['00280303'] = { vr: 'CS', Value: [options.dateShiftDays !== undefined ? 'MODIFIED' : 'REMOVED'] };

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

  return {
    dataset: out,
    meta: outMeta,
    report: {
      counts: { ...ctx.counts },
      privateRemoved: ctx.privateRemoved,
      privateKept: ctx.privateKept,
      uidMap: ctx.uidMap,
      decisions: ctx.decisions,
      methodCodes: codes.map(([v]) => v),
    },
  };
}

/**
 * De-identifies a DICOM Part-10 file: read with dcmjs, `deidentify` with its File Meta
 * Information, written back in the same transfer syntax. A file dcmjs cannot read is
 * ECO3D_ERR_BAD_FILE.
 */
export function deidentifyPart10(bytes: Uint8Array, options: DeidOptions): { readonly bytes: Uint8Array; readonly report: DeidReport } {
  checkOptions(options);
  keyBytes('uidKey', options.uidKey);
  if (bytes.length < 132 || bytes[128] !== 0x44 || bytes[129] !== 0x49 || bytes[130] !== 0x43 || bytes[131] !== 0x4d) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', 'not a DICOM Part-10 file (no DICM prefix)', { details: { file: 'DICOM' } });
  }
  let dict: ReturnType<typeof dcmjs.data.DicomMessage.readFile>;
  try {
    dict = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer);
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `cannot parse the DICOM file: ${err instanceof Error ? err.message : String(err)}`, { cause: err, details: { file: 'DICOM' } });
  }
  const r = deidentify(dict.dict, options, dict.meta);
  const out = new dcmjs.data.DicomDict(r.meta ?? {});
  out.dict = r.dataset;
  return { bytes: new Uint8Array(out.write()), report: r.report };
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
  };
  return resolve(key, row, where.vr ?? row.vr, where.nested === true ? 1 : 0, ctx).action;
}


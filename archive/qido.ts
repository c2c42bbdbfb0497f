// QIDO-RS (PS3.18 10.6): query parameters → SQL over the archive's index → DICOM JSON results.
//
// Matching (PS3.18 8.3.4.1, PS3.4 C.2.2.2), by keyword or tag:
// - single value; `*` and `?` wildcards for text VRs (case-sensitive, except PN, which matches
//   case-insensitively: PS3.4 leaves PN matching to the implementation);
// - UID lists (`1.2.3,1.2.4`, or `\` as separator);
// - DA and TM ranges (`20260101-20261231`, `-20261231`, `20260101-`); a partial time matches
//   its whole span (`10` is 10:00:00 to 10:59:59.999999);
// - an empty value or `*` is universal matching: no constraint, the attribute is returned.
// Attributes of a lower level than the query (a Modality in a study search) match relationally:
// the study matches when one of its series does. A known attribute we do not index is matched
// against each instance's stored metadata (its first value), so any public keyword works.
// Unknown keywords, malformed tags and sequence paths are 400, naming the parameter.
//
// fuzzymatching=true is applied to PN attributes: a value then also matches at the start of any
// name component, case-insensitively (`jo` finds `Doe^John`).
import { Eco3dError } from '../protocols/errors.ts';
import type { Queryable } from '../store/database.ts';
import { attr, isUid, lookupAttribute, type AttributeInfo, type DicomJsonAttribute, type DicomJsonDataset } from './dicom-json.ts';

export type QidoLevel = 'study' | 'series' | 'instance';

/** The resource the search is under: /studies/{study}/series, /studies/{study}/series/{series}/instances, … */
export interface QidoScope {
  readonly study?: string;
  readonly series?: string;
}

type Kind = 'uid' | 'text' | 'pn' | 'date' | 'time' | 'datetime' | 'int' | 'number' | 'modalities';

interface Column {
  readonly level: QidoLevel;
  /** SQL over the aliases st (study), se (series), i (instance). */
  readonly sql: string;
  readonly kind: Kind;
}

// Matching on indexed columns (dicom_studies st, dicom_series se, dicom_instances i).
const COLUMNS: Readonly<Record<string, Column>> = {
  StudyInstanceUID: { level: 'study', sql: 'st.study_uid', kind: 'uid' },
  PatientName: { level: 'study', sql: 'st.patient_name', kind: 'pn' },
  PatientID: { level: 'study', sql: 'st.patient_id', kind: 'text' },
  PatientBirthDate: { level: 'study', sql: 'st.patient_birth_date', kind: 'date' },
  PatientSex: { level: 'study', sql: 'st.patient_sex', kind: 'text' },
  StudyDate: { level: 'study', sql: 'st.study_date', kind: 'date' },
  StudyTime: { level: 'study', sql: 'st.study_time', kind: 'time' },
  AccessionNumber: { level: 'study', sql: 'st.accession_number', kind: 'text' },
  StudyID: { level: 'study', sql: 'st.study_id', kind: 'text' },
  StudyDescription: { level: 'study', sql: 'st.study_description', kind: 'text' },
  ReferringPhysicianName: { level: 'study', sql: 'st.referring_physician_name', kind: 'pn' },
  ModalitiesInStudy: { level: 'study', sql: 'm.modality', kind: 'modalities' },
  SeriesInstanceUID: { level: 'series', sql: 'se.series_uid', kind: 'uid' },
  Modality: { level: 'series', sql: 'se.modality', kind: 'text' },
  SeriesNumber: { level: 'series', sql: 'se.series_number', kind: 'int' },
  SeriesDescription: { level: 'series', sql: 'se.series_description', kind: 'text' },
  PerformedProcedureStepStartDate: { level: 'series', sql: 'se.pps_start_date', kind: 'date' },
  PerformedProcedureStepStartTime: { level: 'series', sql: 'se.pps_start_time', kind: 'time' },
  SOPInstanceUID: { level: 'instance', sql: 'i.sop_instance_uid', kind: 'uid' },
  SOPClassUID: { level: 'instance', sql: 'i.sop_class_uid', kind: 'uid' },
  InstanceNumber: { level: 'instance', sql: 'i.instance_number', kind: 'int' },
  Rows: { level: 'instance', sql: 'i.pixel_rows', kind: 'int' },
  Columns: { level: 'instance', sql: 'i.pixel_columns', kind: 'int' },
  NumberOfFrames: { level: 'instance', sql: 'i.number_of_frames', kind: 'int' },
  BitsAllocated: { level: 'instance', sql: 'i.bits_allocated', kind: 'int' },
};

// Attributes the server computes: returned, never matched.
const COMPUTED = new Set(['NumberOfStudyRelatedSeries', 'NumberOfStudyRelatedInstances', 'NumberOfSeriesRelatedInstances', 'RetrieveURL', 'InstanceAvailability']);

const TEXT_VRS = new Set(['AE', 'AS', 'CS', 'LO', 'LT', 'SH', 'ST', 'UC', 'UR', 'UT']);
const NUMBER_VRS = new Set(['DS', 'FL', 'FD', 'SL', 'SS', 'UL', 'US', 'SV', 'UV', 'IS']);

const RESERVED = new Set(['includefield', 'limit', 'offset', 'fuzzymatching', 'emptyvaluematching', 'multiplevaluematching', 'accept', 'charset']);

export const QIDO_DEFAULT_LIMIT = 1000;
export const QIDO_MAX_LIMIT = 5000;

interface Match {
  readonly param: string;
  readonly attribute: AttributeInfo;
  readonly level: QidoLevel;
  /** A SQL condition over the level's alias, with `?` placeholders for `values`; null = universal. */
  readonly condition: string | null;
  readonly values: readonly unknown[];
}

export interface ParsedQido {
  readonly matches: readonly Match[];
  readonly includeAll: boolean;
  readonly includeFields: readonly AttributeInfo[];
  readonly limit: number;
  readonly offset: number;
  /** fuzzymatching=true was asked (and is applied to PN attributes). */
  readonly fuzzy: boolean;
  /** Warning header texts (PS3.18 8.3.4). */
  readonly warnings: readonly string[];
}

function bad(param: string, message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', `query parameter ${JSON.stringify(param)}: ${message}`, { details: { parameter: param } });
}

/** Parses a QIDO-RS query string (as fastify gives it: repeated names become arrays). */
export function parseQido(query: Readonly<Record<string, unknown>>): ParsedQido {
  const one = (name: string): string | undefined => {
    const v = query[name];
    if (v === undefined) return undefined;
    if (Array.isArray(v)) throw bad(name, 'given more than once');
    return text(name, v);
  };
  const uint = (name: string, dflt: number): number => {
    const v = one(name);
    if (v === undefined) return dflt;
    if (!/^\d{1,9}$/.test(v)) throw bad(name, `expected a whole number ≥ 0, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const bool = (name: string): boolean => {
    const v = one(name);
    if (v === undefined) return false;
    if (v !== 'true' && v !== 'false') throw bad(name, `expected true or false, got ${JSON.stringify(v)}`);
    return v === 'true';
  };
  const warnings: string[] = [];
  const fuzzy = bool('fuzzymatching');
  if (bool('emptyvaluematching')) warnings.push('The emptyvaluematching parameter is not supported. Only literal matching has been performed.');
  if (bool('multiplevaluematching')) warnings.push('The multiplevaluematching parameter is not supported. Multiple Value Matching has not been performed.');
  let limit = uint('limit', QIDO_DEFAULT_LIMIT);
  if (limit === 0) limit = QIDO_DEFAULT_LIMIT;
  if (limit > QIDO_MAX_LIMIT) {
    warnings.push(`The limit ${limit} exceeds the maximum of ${QIDO_MAX_LIMIT}; at most ${QIDO_MAX_LIMIT} results are returned.`);
    limit = QIDO_MAX_LIMIT;
  }
  const offset = uint('offset', 0);

  let includeAll = false;
  const includeFields: AttributeInfo[] = [];
  const rawInclude = query.includefield;
  const includeValues = rawInclude === undefined ? [] : Array.isArray(rawInclude) ? rawInclude.map((x) => text('includefield', x)) : [text('includefield', rawInclude)];
  for (const v of includeValues.flatMap((x) => x.split(','))) {
    const id = v.trim();
    if (id === '') continue;
    if (id === 'all') {
      includeAll = true;
      continue;
    }
    const a = resolve('includefield', id);
    if (!includeFields.some((f) => f.tag === a.tag)) includeFields.push(a);
  }

  const matches: Match[] = [];
  for (const [name, raw] of Object.entries(query)) {
    if (RESERVED.has(name) || raw === undefined) continue;
    if (Array.isArray(raw)) throw bad(name, 'given more than once');
    const a = resolve(name, name);
    if (matches.some((m) => m.attribute.tag === a.tag)) throw bad(name, `${a.keyword} is matched twice (by keyword and by tag)`);
    matches.push(matchFor(name, a, text(name, raw), fuzzy));
  }
  return { matches, includeAll, includeFields, limit, offset, fuzzy, warnings };
}

function text(param: string, v: unknown): string {
  if (typeof v !== 'string') throw bad(param, 'expected a text value');
  return v;
}

function resolve(param: string, id: string): AttributeInfo {
  if (id.includes('.')) throw bad(param, `sequence matching (${id}) is not supported`);
  if (!/^[0-9A-Fa-f]{8}$/.test(id) && !/^[A-Za-z][A-Za-z0-9]*$/.test(id)) throw bad(param, `${JSON.stringify(id)} is neither a keyword nor a tag of 8 hex digits`);
  const a = lookupAttribute(id);
  if (a === null) throw bad(param, `unknown attribute ${JSON.stringify(id)} (not a keyword or tag of the DICOM data dictionary, PS3.6)`);
  return a;
}

function matchFor(param: string, a: AttributeInfo, value: string, fuzzy: boolean): Match {
  if (COMPUTED.has(a.keyword)) throw bad(param, `${a.keyword} is computed by the server and cannot be matched`);
  const column = COLUMNS[a.keyword];
  let sql: string;
  let kind: Kind;
  let level: QidoLevel;
  const values: unknown[] = [];
  if (column !== undefined) {
    ({ sql, kind, level } = column);
  } else {
    // Matched on the instance's stored metadata: its first value. The tag goes into the SQL as
    // text: lookupAttribute returns 8 hex digits only.
    level = 'instance';
    if (a.vr === 'PN') {
      sql = `(i.metadata->'${a.tag}'->'Value'->0->>'Alphabetic')`;
      kind = 'pn';
    } else if (a.vr === 'UI') {
      sql = `(i.metadata->'${a.tag}'->'Value'->>0)`;
      kind = 'uid';
    } else if (a.vr === 'DA' || a.vr === 'TM' || a.vr === 'DT') {
      sql = `(i.metadata->'${a.tag}'->'Value'->>0)`;
      kind = a.vr === 'DA' ? 'date' : a.vr === 'TM' ? 'time' : 'datetime';
    } else if (TEXT_VRS.has(a.vr)) {
      sql = `(i.metadata->'${a.tag}'->'Value'->>0)`;
      kind = 'text';
    } else if (NUMBER_VRS.has(a.vr)) {
      sql = `(CASE WHEN jsonb_typeof(i.metadata->'${a.tag}'->'Value'->0) = 'number' THEN (i.metadata->'${a.tag}'->'Value'->>0)::numeric END)`;
      kind = 'number';
    } else {
      throw bad(param, `matching on ${a.keyword} (VR ${a.vr}) is not supported`);
    }
  }
  // Universal matching: the attribute is only asked to be returned.
  if (value === '' || value === '*') return { param, attribute: a, level, condition: null, values: [] };
  const cond = condition(param, kind, sql, value, fuzzy, values);
  return { param, attribute: a, level, condition: kind === 'modalities' ? `EXISTS (SELECT 1 FROM dicom_series m WHERE m.tenant_id = st.tenant_id AND m.study_uid = st.study_uid AND ${cond})` : cond, values };
}

function condition(param: string, kind: Kind, sql: string, value: string, fuzzy: boolean, values: unknown[]): string {
  const wild = /[*?]/.test(value);
  switch (kind) {
    case 'uid': {
      const uids = value.split(/[,\\]/).map((u) => u.trim());
      for (const u of uids) if (!isUid(u)) throw bad(param, `${JSON.stringify(u)} is not a UID (UID matching takes a UID or a comma-separated list, no wildcards)`);
      values.push(...uids);
      return `${sql} IN (${uids.map(() => '?').join(', ')})`;
    }
    case 'text':
    case 'modalities':
      if (wild) {
        values.push(likePattern(value));
        return `${sql} LIKE ? ESCAPE '\\'`;
      }
      values.push(value);
      return `${sql} = ?`;
    case 'pn': {
      if (fuzzy) {
        // Start of the name or of any component (^ between components, spaces within).
        const p = likePattern(value.toLowerCase());
        values.push(`${p}%`, `%^${p}%`, `% ${p}%`);
        return `(lower(${sql}) LIKE ? ESCAPE '\\' OR lower(${sql}) LIKE ? ESCAPE '\\' OR lower(${sql}) LIKE ? ESCAPE '\\')`;
      }
      if (wild) {
        values.push(likePattern(value.toLowerCase()));
        return `lower(${sql}) LIKE ? ESCAPE '\\'`;
      }
      values.push(value.toLowerCase());
      return `lower(${sql}) = ?`;
    }
    case 'date':
      return rangeCondition(param, sql, value, values, parseDateBound);
    case 'time':
      return rangeCondition(param, sql, value, values, parseTimeBound);
    case 'datetime':
      return rangeCondition(param, sql, value, values, parseDateTimeBound);
    case 'int': {
      if (!/^[+-]?\d{1,10}$/.test(value.trim()) || Math.abs(Number(value)) > 2147483647) throw bad(param, `expected a whole number, got ${JSON.stringify(value)}`);
      values.push(Number(value));
      return `${sql} = ?`;
    }
    case 'number': {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw bad(param, `expected a number, got ${JSON.stringify(value)}`);
      values.push(String(n));
      return `${sql} = ?::numeric`;
    }
  }
}

/** `*` → `%`, `?` → `_`, with LIKE's own `%`, `_` and `\` escaped. */
function likePattern(value: string): string {
  return value.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, '%').replace(/\?/g, '_');
}

type BoundParser = (param: string, v: string, side: 'lo' | 'hi') => string;

function rangeCondition(param: string, sql: string, value: string, values: unknown[], parse: BoundParser): string {
  if (parse === parseDateBound && !/^(\d{8})?-?(\d{8})?$/.test(value)) {
    throw bad(param, `malformed date ${JSON.stringify(value)}: expected YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end open`);
  }
  if (parse === parseTimeBound && !/^[\d.:]*-?[\d.:]*$/.test(value)) {
    throw bad(param, `malformed time ${JSON.stringify(value)}: expected HHMMSS.FFFFFF (partial allowed), or a range of them`);
  }
  const dash = value.indexOf('-');
  // A DT may carry a negative UTC offset: only a '-' that splits two bounds counts as a range.
  const isRange = dash >= 0 && (parse !== parseDateTimeBound || value.split('-').length === 2);
  if (!isRange) {
    const lo = parse(param, value, 'lo');
    const hi = parse(param, value, 'hi');
    values.push(lo, hi);
    return `(${sql} >= ? AND ${sql} <= ?)`;
  }
  const from = value.slice(0, dash);
  const to = value.slice(dash + 1);
  if (from === '' && to === '') throw bad(param, 'a range needs at least one bound');
  const parts: string[] = [];
  if (from !== '') {
    values.push(parse(param, from, 'lo'));
    parts.push(`${sql} >= ?`);
  }
  if (to !== '') {
    values.push(parse(param, to, 'hi'));
    parts.push(`${sql} <= ?`);
  }
  if (from !== '' && to !== '' && (values[values.length - 2] as string) > (values[values.length - 1] as string)) throw bad(param, `the range ${value} ends before it starts`);
  return `(${parts.join(' AND ')})`;
}

function parseDateBound(param: string, v: string, _side: 'lo' | 'hi'): string {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(v);
  if (m === null) throw bad(param, `malformed date ${JSON.stringify(v)}: expected YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end open`);
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const date = new Date(Date.UTC(y, mo - 1, d));
  if (mo < 1 || mo > 12 || date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) throw bad(param, `malformed date ${JSON.stringify(v)}: no such day`);
  return v;
}

function parseTimeBound(param: string, v: string, side: 'lo' | 'hi'): string {
  const m = /^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$/.exec(v.replace(/:/g, ''));
  if (m === null || (m[4] !== undefined && m[3] === undefined)) throw bad(param, `malformed time ${JSON.stringify(v)}: expected HH, HHMM, HHMMSS or HHMMSS.FFFFFF, or a range of them`);
  const [hh, mm, ss] = [Number(m[1]), m[2] === undefined ? 0 : Number(m[2]), m[3] === undefined ? 0 : Number(m[3])];
  if (hh > 23 || mm > 59 || ss > 60) throw bad(param, `malformed time ${JSON.stringify(v)}: out of range`);
  const fill = side === 'lo' ? { mm: '00', ss: '00', f: '0' } : { mm: '59', ss: '59', f: '9' };
  return `${m[1]}${m[2] ?? fill.mm}${m[3] ?? fill.ss}.${(m[4] ?? '').padEnd(6, fill.f)}`;
}

function parseDateTimeBound(param: string, v: string, side: 'lo' | 'hi'): string {
  const m = /^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?(?:[+-]\d{4})?$/.exec(v);
  if (m === null) throw bad(param, `malformed date-time ${JSON.stringify(v)}: expected YYYYMMDDHHMMSS.FFFFFF (partial allowed), or a range`);
  // Compared as text without the offset, each bound completed to YYYYMMDDHHMMSS.FFFFFF: the lower
  // one with the earliest, the upper one with the latest moment its prefix covers.
  const digits = v.replace(/[+-]\d{4}$/, '');
  const [whole, frac] = digits.split('.') as [string, string | undefined];
  const fill = side === 'lo' ? '00000101000000' : '99991231235959';
  return `${whole}${fill.slice(whole.length)}.${(frac ?? '').padEnd(6, side === 'lo' ? '0' : '9')}`;
}

// --- running a search -----------------------------------------------------------------------

export interface QidoResult {
  readonly results: DicomJsonDataset[];
  /** More results exist past limit + offset. */
  readonly more: boolean;
}

const LEVEL_DEPTH: Readonly<Record<QidoLevel, number>> = { study: 0, series: 1, instance: 2 };

// Attributes of a study answer (PS3.18 Table 10.6.3-3) taken from the study row.
const STUDY_ANSWER_TAGS = ['00080020', '00080030', '00080050', '00080090', '00100010', '00100020', '00100030', '00100040', '0020000D', '00200010'];
const STUDY_ANSWER_OPTIONAL = ['00080005', '00080201'];
// Of a series answer (Table 10.6.3-4).
const SERIES_ANSWER_TAGS = ['00080060', '0008103E', '0020000E', '00200011'];
const SERIES_ANSWER_OPTIONAL = ['00400244', '00400245', '00400275'];

/**
 * Runs a parsed search for a tenant; `baseUrl` is the service root (…/dicom-web) for RetrieveURLs.
 * `allowedStudyUids`, when given, limits every level to those studies (a licence's scope): the
 * filter is in the query, so limit, offset and the "more results" warning count allowed ones only.
 */
export async function runQido(
  q: Queryable,
  tenantId: string,
  level: QidoLevel,
  scope: QidoScope,
  parsed: ParsedQido,
  baseUrl: string,
  allowedStudyUids?: Iterable<string>,
): Promise<QidoResult> {
  const params: unknown[] = [tenantId];
  const add = (v: unknown): string => {
    params.push(v);
    return `$${params.length}`;
  };
  const where: string[] = [];
  const root = level === 'study' ? 'st' : level === 'series' ? 'se' : 'i';
  where.push(`${root}.tenant_id = $1`);
  if (allowedStudyUids !== undefined) {
    const allowed = [...allowedStudyUids];
    if (allowed.length === 0) return { results: [], more: false };
    where.push(`${root}.study_uid = ANY(${add(allowed)}::text[])`);
  }
  if (scope.study !== undefined) where.push(`${level === 'study' ? 'st' : root}.study_uid = ${add(scope.study)}`);
  if (scope.series !== undefined) where.push(`${root}.series_uid = ${add(scope.series)}`);

  for (const m of parsed.matches) {
    if (m.condition === null) continue;
    let i = 0;
    const cond = m.condition.replace(/\?/g, () => add(m.values[i++]));
    if (LEVEL_DEPTH[m.level] <= LEVEL_DEPTH[level]) {
      where.push(cond);
    } else if (m.level === 'series') {
      where.push(`EXISTS (SELECT 1 FROM dicom_series se WHERE se.tenant_id = st.tenant_id AND se.study_uid = st.study_uid AND ${cond})`);
    } else if (level === 'study') {
      where.push(`EXISTS (SELECT 1 FROM dicom_instances i WHERE i.tenant_id = st.tenant_id AND i.study_uid = st.study_uid AND ${cond})`);
    } else {
      where.push(`EXISTS (SELECT 1 FROM dicom_instances i WHERE i.tenant_id = se.tenant_id AND i.series_uid = se.series_uid AND ${cond})`);
    }
  }

  // Extra attributes to return: includefield, plus match keys at or above the query level.
  const wanted = new Map<string, AttributeInfo>();
  for (const f of parsed.includeFields) wanted.set(f.tag, f);
  for (const m of parsed.matches) if (LEVEL_DEPTH[m.level] <= LEVEL_DEPTH[level]) wanted.set(m.attribute.tag, m.attribute);
  const extraTags = [...wanted.keys()];
  // Tags go into SQL as text: they were checked to be 8 hex digits by lookupAttribute. A function
  // takes at most 100 arguments: past 40 attributes the whole metadata is read instead.
  const pickFrom = (alias: string): string =>
    extraTags.length > 40 ? `${alias}.metadata` : `jsonb_build_object(${extraTags.map((t) => `'${t}', ${alias}.metadata->'${t}'`).join(', ')})`;
  const wantAllMetadata = parsed.includeAll && level === 'instance';

  let sql: string;
  const limit = add(parsed.limit + 1);
  const offset = add(parsed.offset);
  const countSeries = `(SELECT count(*) FROM dicom_series c WHERE c.tenant_id = st.tenant_id AND c.study_uid = st.study_uid)`;
  const countStudyInstances = `(SELECT count(*) FROM dicom_instances c WHERE c.tenant_id = st.tenant_id AND c.study_uid = st.study_uid)`;
  const modalities = `(SELECT coalesce(jsonb_agg(DISTINCT c.modality), '[]'::jsonb) FROM dicom_series c WHERE c.tenant_id = st.tenant_id AND c.study_uid = st.study_uid AND c.modality IS NOT NULL)`;
  const countSeriesInstances = `(SELECT count(*) FROM dicom_instances c WHERE c.tenant_id = se.tenant_id AND c.series_uid = se.series_uid)`;
  if (level === 'study') {
    const rep = extraTags.length === 0 ? 'NULL' : `(SELECT ${pickFrom('r')} FROM dicom_instances r WHERE r.tenant_id = st.tenant_id AND r.study_uid = st.study_uid ORDER BY r.stored_at, r.sop_instance_uid LIMIT 1)`;
    sql = `SELECT st.study_uid, st.attrs AS study_attrs, ${countSeries} AS n_series, ${countStudyInstances} AS n_instances, ${modalities} AS modalities, ${rep} AS extra
             FROM dicom_studies st WHERE ${where.join(' AND ')}
            ORDER BY st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, st.study_uid
            LIMIT ${limit} OFFSET ${offset}`;
  } else if (level === 'series') {
    const rep = extraTags.length === 0 ? 'NULL' : `(SELECT ${pickFrom('r')} FROM dicom_instances r WHERE r.tenant_id = se.tenant_id AND r.series_uid = se.series_uid ORDER BY r.stored_at, r.sop_instance_uid LIMIT 1)`;
    sql = `SELECT se.study_uid, se.series_uid, se.attrs AS series_attrs, st.attrs AS study_attrs, ${countSeriesInstances} AS n_instances,
                  ${countSeries} AS n_series, ${countStudyInstances} AS n_study_instances, ${modalities} AS modalities, ${rep} AS extra
             FROM dicom_series se JOIN dicom_studies st ON st.tenant_id = se.tenant_id AND st.study_uid = se.study_uid
            WHERE ${where.join(' AND ')}
            ORDER BY st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, se.study_uid, se.series_number NULLS LAST, se.series_uid
            LIMIT ${limit} OFFSET ${offset}`;
  } else {
    const extra = wantAllMetadata ? 'i.metadata' : extraTags.length === 0 ? 'NULL' : pickFrom('i');
    sql = `SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.pixel_rows, i.pixel_columns, i.bits_allocated,
                  i.number_of_frames, i.metadata->'00080201' AS tz, se.attrs AS series_attrs, st.attrs AS study_attrs, ${countSeriesInstances} AS n_series_instances,
                  ${countSeries} AS n_series, ${countStudyInstances} AS n_study_instances, ${modalities} AS modalities, ${extra} AS extra
             FROM dicom_instances i
             JOIN dicom_series se ON se.tenant_id = i.tenant_id AND se.series_uid = i.series_uid
             JOIN dicom_studies st ON st.tenant_id = i.tenant_id AND st.study_uid = i.study_uid
            WHERE ${where.join(' AND ')}
            ORDER BY st.study_date DESC NULLS LAST, st.study_time DESC NULLS LAST, i.study_uid, se.series_number NULLS LAST, i.series_uid, i.instance_number NULLS LAST, i.sop_instance_uid
            LIMIT ${limit} OFFSET ${offset}`;
  }
  const rows = await q.query<QidoRow>(sql, params);
  const more = rows.length > parsed.limit;
  const page = more ? rows.slice(0, parsed.limit) : rows;
  const results = page.map((r) => answer(level, scope, parsed, r, baseUrl));
  return { results, more };
}

interface QidoRow {
  study_uid: string;
  series_uid?: string;
  sop_instance_uid?: string;
  sop_class_uid?: string;
  instance_number?: number | null;
  pixel_rows?: number | null;
  pixel_columns?: number | null;
  bits_allocated?: number | null;
  number_of_frames?: number | null;
  tz?: DicomJsonAttribute | null;
  study_attrs: DicomJsonDataset;
  series_attrs?: DicomJsonDataset;
  n_series?: number;
  n_instances?: number;
  n_study_instances?: number;
  n_series_instances?: number;
  modalities?: string[];
  extra: Record<string, DicomJsonAttribute | null> | null;
}

function studyAttributes(out: DicomJsonDataset, r: QidoRow, nSeries: number, nInstances: number, baseUrl: string): void {
  const a = r.study_attrs;
  for (const t of STUDY_ANSWER_TAGS) out[t] = a[t] ?? { vr: vrOf(t) };
  for (const t of STUDY_ANSWER_OPTIONAL) if (a[t] !== undefined) out[t] = a[t];
  out['00080056'] = attr('CS', 'ONLINE');
  out['00080061'] = attr('CS', [...(r.modalities ?? [])].sort());
  out['00081190'] = attr('UR', `${baseUrl}/studies/${r.study_uid}`);
  out['0020000D'] = attr('UI', r.study_uid);
  out['00201206'] = attr('IS', nSeries);
  out['00201208'] = attr('IS', nInstances);
}

function seriesAttributes(out: DicomJsonDataset, r: QidoRow, nInstances: number, baseUrl: string): void {
  const a = r.series_attrs ?? {};
  for (const t of SERIES_ANSWER_TAGS) out[t] = a[t] ?? { vr: vrOf(t) };
  for (const t of SERIES_ANSWER_OPTIONAL) if (a[t] !== undefined) out[t] = a[t];
  const tz = r.study_attrs['00080201'];
  if (tz !== undefined) out['00080201'] = tz;
  out['00081190'] = attr('UR', `${baseUrl}/studies/${r.study_uid}/series/${r.series_uid!}`);
  out['0020000D'] = attr('UI', r.study_uid);
  out['0020000E'] = attr('UI', r.series_uid);
  out['00201209'] = attr('IS', nInstances);
}

function answer(level: QidoLevel, scope: QidoScope, parsed: ParsedQido, r: QidoRow, baseUrl: string): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  if (level === 'study') {
    studyAttributes(out, r, Number(r.n_series ?? 0), Number(r.n_instances ?? 0), baseUrl);
    if (parsed.includeAll) addMissing(out, r.study_attrs);
  } else if (level === 'series') {
    // All series (no study in the path): the study's attributes too (PS3.18 10.6.3.3.2).
    if (scope.study === undefined) studyAttributes(out, r, Number(r.n_series ?? 0), Number(r.n_study_instances ?? 0), baseUrl);
    seriesAttributes(out, r, Number(r.n_instances ?? 0), baseUrl);
    if (parsed.includeAll) addMissing(out, r.series_attrs ?? {});
  } else {
    if (scope.study === undefined) studyAttributes(out, r, Number(r.n_series ?? 0), Number(r.n_study_instances ?? 0), baseUrl);
    if (scope.series === undefined) seriesAttributes(out, r, Number(r.n_series_instances ?? 0), baseUrl);
    out['00080016'] = attr('UI', r.sop_class_uid);
    out['00080018'] = attr('UI', r.sop_instance_uid);
    out['00080056'] = attr('CS', 'ONLINE');
    if (r.tz !== null && r.tz !== undefined) out['00080201'] = r.tz;
    out['00081190'] = attr('UR', `${baseUrl}/studies/${r.study_uid}/series/${r.series_uid!}/instances/${r.sop_instance_uid!}`);
    out['0020000D'] = attr('UI', r.study_uid);
    out['0020000E'] = attr('UI', r.series_uid);
    out['00200013'] = attr('IS', r.instance_number ?? undefined);
    if (r.pixel_rows !== null && r.pixel_rows !== undefined) out['00280010'] = attr('US', r.pixel_rows);
    if (r.pixel_columns !== null && r.pixel_columns !== undefined) out['00280011'] = attr('US', r.pixel_columns);
    if (r.bits_allocated !== null && r.bits_allocated !== undefined) out['00280100'] = attr('US', r.bits_allocated);
    if (r.number_of_frames !== null && r.number_of_frames !== undefined) out['00280008'] = attr('IS', r.number_of_frames);
  }
  // Asked-for attributes the answer does not have yet: from the row's stored attributes, else
  // from (a representative) instance's metadata.
  const extra = r.extra ?? {};
  if (parsed.includeAll && level === 'instance') {
    addMissing(out, extra);
  }
  const wanted = [...parsed.includeFields, ...parsed.matches.filter((m) => LEVEL_DEPTH[m.level] <= LEVEL_DEPTH[level]).map((m) => m.attribute)];
  for (const a of wanted) {
    if (out[a.tag] !== undefined) continue;
    const v = r.series_attrs?.[a.tag] ?? r.study_attrs[a.tag] ?? extra[a.tag] ?? null;
    // Asked for but absent: present without a value (an empty attribute, PS3.18 F.2.5).
    out[a.tag] = v ?? { vr: a.vr };
  }
  return sortByTag(out);
}

function addMissing(out: DicomJsonDataset, from: Readonly<Record<string, DicomJsonAttribute | null>>): void {
  for (const [t, v] of Object.entries(from)) if (out[t] === undefined && v !== null) out[t] = v;
}

function sortByTag(ds: DicomJsonDataset): DicomJsonDataset {
  const out: DicomJsonDataset = {};
  for (const t of Object.keys(ds).sort()) out[t] = ds[t]!;
  return out;
}

function vrOf(tag: string): string {
  return lookupAttribute(tag)?.vr ?? 'UN';
}

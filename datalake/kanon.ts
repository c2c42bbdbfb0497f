// k-anonymity of a dataset release over the quasi-identifiers the lake catalog keeps (age band,
// sex, site region, study year), with evaluated suggestions of generalisations when it fails.
//
// Why these choices:
// - A group is the exact combination of the four values. An unknown value (null) is a value of
//   its own, shown as 'unknown' in group keys: "age unknown" is as visible in a release as
//   "age 40-44", so it cannot hide a record among the known ones. '*' means "generalised away"
//   (the attribute removed from the release); every record, unknown or not, then shares it.
// - Zero records is ok (vacuously k-anonymous: there is nobody to re-identify). Whether an empty
//   dataset version may be released at all is the version builder's rule, not this check's.
// - Generalisation hierarchies nest (5-year age bands within 10-year within 20-year; 2-year
//   study-year ranges within 4-year ones; subdivision within country), so every coarser step only
//   merges groups and can never create a new small one: offending records never increase as a
//   plan coarsens (property-tested), and a passing plan's coarsenings pass too. That is why study
//   years go 2 → 4 years, not 2 → 5 (a 5-year grid cuts through 2-year ranges).
// - Ranges sit on a fixed grid (age bands from 0, years at multiples of 2 and 4): a generalised
//   value is a function of the value alone (global recoding), so a plan applies the same way to
//   every release and to later versions.
// - Information loss of a plan is its generalisation height, averaged over the four attributes
//   (level / top level: age 10y = 1/3, country = 1/2, sex removed = 1). Suppressing a record
//   counts as generalising all of its attributes to '*' (loss 1 for that record), so suppression's
//   loss is the fraction of records dropped: both are the average per-record, per-attribute
//   loss, on one scale. Transparent and data-independent; ties go to the plan that keeps more
//   groups.
// - Search is bounded: every single-attribute level (9 plans), and only if none passes, every
//   pair of attributes at every level (29 plans), plus suppression; each plan is one O(n) pass.
//   Passing plans that a cheaper passing plan refines are dropped (nothing gained by coarsening
//   more).
// - The report names groups by their quasi-identifier values and counts. It is meant for the
//   data steward who releases a version, not for partners.
import { Eco3dError } from '../protocols/errors.ts';

export interface QuasiIdentifiers {
  /** DICOM AS band as the de-identifier writes it: '040Y' = 40–44, '090Y' = 90 or older. */
  readonly ageBand: string | null;
  /** 'F' | 'M' | 'O' (DICOM Patient's Sex). */
  readonly sex: string | null;
  /** ISO 3166-2 subdivision ('IT-25') or country ('IT'). */
  readonly siteRegion: string | null;
  readonly studyYear: number | null;
}

export type QuasiIdentifierName = keyof QuasiIdentifiers;
export const QUASI_IDENTIFIERS: readonly QuasiIdentifierName[] = ['ageBand', 'sex', 'siteRegion', 'studyYear'];

export type AgeLevel = '5y' | '10y' | '20y' | 'any';
export type StudyYearLevel = 'year' | '2y' | '4y' | 'any';
export type SiteRegionLevel = 'subdivision' | 'country' | 'any';
export type SexLevel = 'kept' | 'any';

/** How far each quasi-identifier is generalised; the first level of each is "as in the catalog". */
export interface GeneralisationPlan {
  readonly ageBand: AgeLevel;
  readonly sex: SexLevel;
  readonly siteRegion: SiteRegionLevel;
  readonly studyYear: StudyYearLevel;
}

/** The levels of each attribute, finest first. */
export const GENERALISATION_LEVELS: {
  readonly ageBand: readonly AgeLevel[];
  readonly sex: readonly SexLevel[];
  readonly siteRegion: readonly SiteRegionLevel[];
  readonly studyYear: readonly StudyYearLevel[];
} = {
  ageBand: ['5y', '10y', '20y', 'any'],
  sex: ['kept', 'any'],
  siteRegion: ['subdivision', 'country', 'any'],
  studyYear: ['year', '2y', '4y', 'any'],
};

export const IDENTITY_PLAN: GeneralisationPlan = { ageBand: '5y', sex: 'kept', siteRegion: 'subdivision', studyYear: 'year' };

/** A record's quasi-identifiers after a plan: a label, '*' when generalised away, null when unknown. */
export interface GeneralisedQuasiIdentifiers {
  readonly ageBand: string | null;
  readonly sex: string | null;
  readonly siteRegion: string | null;
  readonly studyYear: string | null;
}

/** Group key values: null shows as 'unknown', a generalised-away attribute as '*'. */
export type GroupKey = Record<QuasiIdentifierName, string>;

export const UNKNOWN_VALUE = 'unknown';
export const ANY_VALUE = '*';

export interface OffendingGroup {
  readonly key: GroupKey;
  readonly count: number;
}

export interface Suggestion {
  /** 'generalise': apply `plan`; 'suppress': drop every record of the offending groups (plan unchanged). */
  readonly kind: 'generalise' | 'suppress';
  readonly plan: GeneralisationPlan;
  /** For people: "age in 10-year bands, study year in 2-year ranges". */
  readonly description: string;
  /** After it, every group holds at least k records. */
  readonly passes: boolean;
  /** Groups after it. */
  readonly groups: number;
  readonly offendingGroups: number;
  /** Records still in groups below k after it (what a further suppression would drop). */
  readonly offendingRecords: number;
  /** Records it drops (suppression only). */
  readonly recordsDropped: number;
  /** Average per-record, per-attribute loss in [0, 1] (see the header). */
  readonly informationLoss: number;
}

export interface KAnonymityReport {
  readonly k: number;
  readonly ok: boolean;
  readonly records: number;
  readonly groups: number;
  readonly offendingGroups: number;
  readonly offendingRecords: number;
  /** Smallest groups first; at most `maxOffendingListed` of them (see `offendingTruncated`). */
  readonly offending: OffendingGroup[];
  readonly offendingTruncated: boolean;
  /** Empty when ok. Passing suggestions by least loss first, then the best failing ones. */
  readonly suggestions: Suggestion[];
}

export interface KAnonymityOptions {
  /** Default 100: the report goes into an error's details. */
  readonly maxOffendingListed?: number;
  /** Default 12. */
  readonly maxSuggestions?: number;
}

// ---------------------------------------------------------------------------------------------
// Parsing the catalog's values

interface Parsed {
  /** 5-year band start (0…90), or null. */
  readonly ageBandStart: number | null;
  readonly sex: string | null;
  readonly region: string | null;
  readonly country: string | null;
  readonly year: number | null;
}

const AS_RE = /^(\d{3})([DWMY])$/;
const REGION_RE = /^([A-Z]{2})(?:-[A-Z0-9]{1,3})?$/;
const SEXES = new Set(['F', 'M', 'O']);
const DAYS_PER_UNIT = { D: 1, W: 7, M: 365.25 / 12, Y: 365.25 } as const;

/** `index` null: a lone record (generalise()). */
function bad(index: number | null, message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', `k-anonymity: ${where(index)}${message}`, index === null ? undefined : { details: { record: index } });
}

const where = (index: number | null): string => (index === null ? '' : `record ${index}: `);

function parseRecord(r: QuasiIdentifiers, index: number | null): Parsed {
  let ageBandStart: number | null = null;
  if (r.ageBand !== null) {
    const m = typeof r.ageBand === 'string' ? AS_RE.exec(r.ageBand) : null;
    if (m === null) throw bad(index, `ageBand ${JSON.stringify(r.ageBand)} is not a DICOM AS value such as '040Y'`);
    const years = Math.floor((Number(m[1]) * DAYS_PER_UNIT[m[2] as keyof typeof DAYS_PER_UNIT]) / 365.25);
    ageBandStart = Math.min(90, Math.floor(years / 5) * 5);
  }
  if (r.sex !== null && (typeof r.sex !== 'string' || !SEXES.has(r.sex))) throw bad(index, `sex ${JSON.stringify(r.sex)} is not F, M or O`);
  let region: string | null = null;
  let country: string | null = null;
  if (r.siteRegion !== null) {
    const m = typeof r.siteRegion === 'string' ? REGION_RE.exec(r.siteRegion) : null;
    if (m === null) throw bad(index, `siteRegion ${JSON.stringify(r.siteRegion)} is not an ISO 3166-2 code such as 'IT-25' or 'IT'`);
    region = r.siteRegion;
    country = m[1]!;
  }
  if (r.studyYear !== null) {
    if (typeof r.studyYear === 'number' && !Number.isFinite(r.studyYear)) {
      throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `k-anonymity: ${where(index)}studyYear is ${r.studyYear}`, index === null ? undefined : { details: { record: index } });
    }
    if (!Number.isInteger(r.studyYear) || r.studyYear < 1000 || r.studyYear > 9999) throw bad(index, `studyYear ${String(r.studyYear)} is not a 4-digit year`);
  }
  return { ageBandStart, sex: r.sex, region, country, year: r.studyYear };
}

// ---------------------------------------------------------------------------------------------
// Generalisation

const pad3 = (n: number): string => String(n).padStart(3, '0');

function ageLabel(start: number | null, level: AgeLevel): string | null {
  if (level === 'any') return ANY_VALUE;
  if (start === null) return null;
  switch (level) {
    case '5y':
      return `${pad3(start)}Y`;
    case '10y': {
      if (start >= 90) return '90+';
      const lo = Math.floor(start / 10) * 10;
      return `${lo}-${lo + 9}`;
    }
    case '20y': {
      if (start >= 80) return '80+';
      const lo = Math.floor(start / 20) * 20;
      return `${lo}-${lo + 19}`;
    }
  }
}

function yearLabel(year: number | null, level: StudyYearLevel): string | null {
  if (level === 'any') return ANY_VALUE;
  if (year === null) return null;
  switch (level) {
    case 'year':
      return String(year);
    case '2y':
    case '4y': {
      const width = level === '2y' ? 2 : 4;
      const lo = Math.floor(year / width) * width;
      return `${lo}-${lo + width - 1}`;
    }
  }
}

function generaliseParsed(p: Parsed, plan: GeneralisationPlan): GeneralisedQuasiIdentifiers {
  return {
    ageBand: ageLabel(p.ageBandStart, plan.ageBand),
    sex: plan.sex === 'any' ? ANY_VALUE : p.sex,
    siteRegion: plan.siteRegion === 'any' ? ANY_VALUE : plan.siteRegion === 'country' ? p.country : p.region,
    studyYear: yearLabel(p.year, plan.studyYear),
  };
}

function resolvePlan(plan: Partial<GeneralisationPlan>): GeneralisationPlan {
  const full = { ...IDENTITY_PLAN, ...plan };
  for (const name of QUASI_IDENTIFIERS) {
    if (!(GENERALISATION_LEVELS[name] as readonly string[]).includes(full[name])) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `generalisation plan: ${name} level ${JSON.stringify(full[name])} is not one of ${GENERALISATION_LEVELS[name].join(', ')}`);
    }
  }
  return full;
}

/**
 * A record's quasi-identifiers after `plan` (levels left out stay as in the catalog). Apply the
 * plan the k-anonymity report suggested to the metadata a release carries.
 */
export function generalise(record: QuasiIdentifiers, plan: Partial<GeneralisationPlan>): GeneralisedQuasiIdentifiers {
  return generaliseParsed(parseRecord(record, null), resolvePlan(plan));
}

/** Information loss of a plan in [0, 1]: the mean over attributes of level index / top level index. */
export function planInformationLoss(plan: Partial<GeneralisationPlan>): number {
  const full = resolvePlan(plan);
  let sum = 0;
  for (const name of QUASI_IDENTIFIERS) {
    const levels = GENERALISATION_LEVELS[name] as readonly string[];
    sum += levels.indexOf(full[name]) / (levels.length - 1);
  }
  return sum / QUASI_IDENTIFIERS.length;
}

function toKey(g: GeneralisedQuasiIdentifiers): GroupKey {
  return {
    ageBand: g.ageBand ?? UNKNOWN_VALUE,
    sex: g.sex ?? UNKNOWN_VALUE,
    siteRegion: g.siteRegion ?? UNKNOWN_VALUE,
    studyYear: g.studyYear ?? UNKNOWN_VALUE,
  };
}

// 'unknown' and '*' cannot collide with real labels (validated formats), and \u0001 cannot occur.
const SEP = '\u0001';

function keyString(g: GeneralisedQuasiIdentifiers): string {
  return `${g.ageBand ?? UNKNOWN_VALUE}${SEP}${g.sex ?? UNKNOWN_VALUE}${SEP}${g.siteRegion ?? UNKNOWN_VALUE}${SEP}${g.studyYear ?? UNKNOWN_VALUE}`;
}

interface Grouping {
  /** key string → count and key */
  readonly groups: Map<string, { key: GeneralisedQuasiIdentifiers; count: number }>;
  readonly offendingGroups: number;
  readonly offendingRecords: number;
}

function group(parsed: readonly Parsed[], plan: GeneralisationPlan, k: number): Grouping {
  const groups = new Map<string, { key: GeneralisedQuasiIdentifiers; count: number }>();
  for (const p of parsed) {
    const g = generaliseParsed(p, plan);
    const s = keyString(g);
    const entry = groups.get(s);
    if (entry === undefined) groups.set(s, { key: g, count: 1 });
    else entry.count++;
  }
  let offendingGroups = 0;
  let offendingRecords = 0;
  for (const { count } of groups.values()) {
    if (count < k) {
      offendingGroups++;
      offendingRecords += count;
    }
  }
  return { groups, offendingGroups, offendingRecords };
}

const AGE_TEXT: Record<AgeLevel, string> = { '5y': 'age in 5-year bands', '10y': 'age in 10-year bands', '20y': 'age in 20-year bands', any: 'age removed' };
const YEAR_TEXT: Record<StudyYearLevel, string> = { year: 'study year', '2y': 'study year in 2-year ranges', '4y': 'study year in 4-year ranges', any: 'study year removed' };
const REGION_TEXT: Record<SiteRegionLevel, string> = { subdivision: 'site region', country: 'site region as its country', any: 'site region removed' };
const SEX_TEXT: Record<SexLevel, string> = { kept: 'sex', any: 'sex removed' };

/** "age in 10-year bands, study year in 2-year ranges" (only the attributes the plan changes). */
export function describePlan(plan: Partial<GeneralisationPlan>): string {
  const p = resolvePlan(plan);
  const parts: string[] = [];
  if (p.ageBand !== '5y') parts.push(AGE_TEXT[p.ageBand]);
  if (p.sex !== 'kept') parts.push(SEX_TEXT[p.sex]);
  if (p.siteRegion !== 'subdivision') parts.push(REGION_TEXT[p.siteRegion]);
  if (p.studyYear !== 'year') parts.push(YEAR_TEXT[p.studyYear]);
  return parts.length === 0 ? 'as in the catalog' : parts.join(', ');
}

/** The plans that change one attribute, every level of it. */
function singlePlans(): GeneralisationPlan[] {
  const out: GeneralisationPlan[] = [];
  for (const name of QUASI_IDENTIFIERS) {
    for (const level of GENERALISATION_LEVELS[name].slice(1)) out.push({ ...IDENTITY_PLAN, [name]: level });
  }
  return out;
}

/** The plans that change exactly two attributes, every level of each. */
function pairPlans(): GeneralisationPlan[] {
  const out: GeneralisationPlan[] = [];
  for (let i = 0; i < QUASI_IDENTIFIERS.length; i++) {
    for (let j = i + 1; j < QUASI_IDENTIFIERS.length; j++) {
      const a = QUASI_IDENTIFIERS[i]!;
      const b = QUASI_IDENTIFIERS[j]!;
      for (const la of GENERALISATION_LEVELS[a].slice(1)) {
        for (const lb of GENERALISATION_LEVELS[b].slice(1)) out.push({ ...IDENTITY_PLAN, [a]: la, [b]: lb });
      }
    }
  }
  return out;
}

const levelIndex = (plan: GeneralisationPlan, name: QuasiIdentifierName): number => (GENERALISATION_LEVELS[name] as readonly string[]).indexOf(plan[name]);

/** `a` is at least as fine as `b` on every attribute. */
function refines(a: GeneralisationPlan, b: GeneralisationPlan): boolean {
  return QUASI_IDENTIFIERS.every((n) => levelIndex(a, n) <= levelIndex(b, n));
}

function checkK(k: number): void {
  if (typeof k !== 'number' || !Number.isSafeInteger(k) || k < 2) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `k-anonymity: k must be an integer of at least 2, got ${String(k)}`);
  }
}

function countOption(v: number | undefined, fallback: number, name: string): number {
  if (v === undefined) return fallback;
  if (!Number.isSafeInteger(v) || v < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `k-anonymity: ${name} must be a non-negative integer`);
  return v;
}

function byLossThenDetail(a: Suggestion, b: Suggestion): number {
  return a.informationLoss - b.informationLoss || b.groups - a.groups || a.description.localeCompare(b.description);
}

/**
 * Checks that every combination of quasi-identifiers holds at least `k` records and, if not,
 * evaluates generalisations and suppression. Throws ECO3D_ERR_BAD_REQUEST for a bad k or a
 * malformed record (ECO3D_ERR_NOT_FINITE for a NaN year).
 */
export function checkKAnonymity(records: readonly QuasiIdentifiers[], k = 5, options: KAnonymityOptions = {}): KAnonymityReport {
  checkK(k);
  const maxListed = countOption(options.maxOffendingListed, 100, 'maxOffendingListed');
  const maxSuggestions = countOption(options.maxSuggestions, 12, 'maxSuggestions');
  const parsed = records.map((r, i) => parseRecord(r, i));
  const base = group(parsed, IDENTITY_PLAN, k);
  const offendingAll = [...base.groups.values()]
    .filter((g) => g.count < k)
    .map((g) => ({ key: toKey(g.key), count: g.count }))
    .sort((a, b) => a.count - b.count || compareKeys(a.key, b.key));
  const ok = base.offendingGroups === 0;
  return {
    k,
    ok,
    records: parsed.length,
    groups: base.groups.size,
    offendingGroups: base.offendingGroups,
    offendingRecords: base.offendingRecords,
    offending: offendingAll.slice(0, maxListed),
    offendingTruncated: offendingAll.length > maxListed,
    suggestions: ok ? [] : suggest(parsed, k, base, maxSuggestions),
  };
}

function compareKeys(a: GroupKey, b: GroupKey): number {
  for (const n of QUASI_IDENTIFIERS) {
    const c = a[n].localeCompare(b[n]);
    if (c !== 0) return c;
  }
  return 0;
}

function evaluate(parsed: readonly Parsed[], plan: GeneralisationPlan, k: number): Suggestion {
  const g = group(parsed, plan, k);
  return {
    kind: 'generalise',
    plan,
    description: describePlan(plan),
    passes: g.offendingGroups === 0,
    groups: g.groups.size,
    offendingGroups: g.offendingGroups,
    offendingRecords: g.offendingRecords,
    recordsDropped: 0,
    informationLoss: planInformationLoss(plan),
  };
}

/**
 * Evaluates one plan (for a steward's own choice, or to check a plan before applying it): the
 * groups and offending records after it, as a 'generalise' suggestion.
 */
export function evaluatePlan(records: readonly QuasiIdentifiers[], plan: Partial<GeneralisationPlan>, k = 5): Suggestion {
  checkK(k);
  return evaluate(
    records.map((r, i) => parseRecord(r, i)),
    resolvePlan(plan),
    k,
  );
}

function suggest(parsed: readonly Parsed[], k: number, base: Grouping, maxSuggestions: number): Suggestion[] {
  const n = parsed.length;
  const suppression: Suggestion = {
    kind: 'suppress',
    plan: IDENTITY_PLAN,
    description: `suppress the ${base.offendingRecords} record${base.offendingRecords === 1 ? '' : 's'} of the ${base.offendingGroups} offending group${base.offendingGroups === 1 ? '' : 's'} (${formatPercent(base.offendingRecords / n)} of the records)`,
    passes: true,
    groups: base.groups.size - base.offendingGroups,
    offendingGroups: 0,
    offendingRecords: 0,
    recordsDropped: base.offendingRecords,
    informationLoss: base.offendingRecords / n,
  };
  const singles = singlePlans().map((p) => evaluate(parsed, p, k));
  const evaluated = singles.some((s) => s.passes) ? singles : [...singles, ...pairPlans().map((p) => evaluate(parsed, p, k))];
  // A passing plan that a cheaper passing plan refines only loses more.
  const passing = evaluated.filter((s) => s.passes).sort(byLossThenDetail);
  const minimal: Suggestion[] = [];
  for (const s of passing) if (!minimal.some((m) => refines(m.plan, s.plan))) minimal.push(s);
  const failing = evaluated
    .filter((s) => !s.passes)
    .sort((a, b) => a.offendingRecords - b.offendingRecords || byLossThenDetail(a, b));
  return [...[...minimal, suppression].sort(byLossThenDetail), ...failing].slice(0, maxSuggestions);
}

function formatPercent(x: number): string {
  const pct = x * 100;
  return `${pct < 10 ? pct.toFixed(1) : pct.toFixed(0)} %`;
}

// ---------------------------------------------------------------------------------------------
// The refusal

function describeKey(key: GroupKey): string {
  return `age ${key.ageBand}, sex ${key.sex}, region ${key.siteRegion}, year ${key.studyYear}`;
}

/**
 * The ECO3D_ERR_K_ANONYMITY refusal of a failed report: the message names the smallest groups
 * and the best suggestion; the report is in details. A passing report is a caller's bug
 * (ECO3D_ERR_INTERNAL is thrown).
 */
export function kAnonymityError(report: KAnonymityReport): Eco3dError {
  if (report.ok) throw new Eco3dError('ECO3D_ERR_INTERNAL', 'kAnonymityError: the report passes; there is nothing to refuse');
  const shown = report.offending.slice(0, 3);
  const worst = shown.map((g) => `${describeKey(g.key)} (${g.count} record${g.count === 1 ? '' : 's'})`).join('; ');
  const more = report.offendingGroups > shown.length ? `; and ${report.offendingGroups - shown.length} more` : '';
  const best = report.suggestions[0];
  const hint = best === undefined ? '' : `. Least loss: ${best.description}${best.passes ? '' : ` (still ${best.offendingRecords} records below k)`}`;
  return new Eco3dError(
    'ECO3D_ERR_K_ANONYMITY',
    `release refused: ${report.offendingGroups} of ${report.groups} quasi-identifier groups (${report.offendingRecords} of ${report.records} records) hold fewer than k = ${report.k} records. Smallest: ${worst}${more}${hint}`,
    { details: { ...report } },
  );
}

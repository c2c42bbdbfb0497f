// The access anomaly rule: flags a licence's day of access that falls outside its normal pattern,
// for the audit (a steward looks at flagged days; nothing is blocked here).
//
// The rule, and why:
// - 'bulk-download': today's bytes > 3 × the median of the licence's previous active days AND
//   > 100 MiB, once there are at least 3 active days of history. The median, not the mean, so
//   that one earlier big day does not raise the bar for the next; 3× leaves room for an ordinary
//   busy day; the 100 MiB floor keeps a licence that usually fetches a few instances (an
//   ultrasound volume is tens of MB) from being flagged for fetching a few more; fewer than 3
//   days is not yet a pattern. An active day is one with bytes downloaded (days of metadata
//   queries only would drag the median down and make any download look bulky). The median is
//   over the most recent 30 active days, so that the pattern follows how a licence is used now.
// - 'repeated-full-download': whatever the history, more than 2 × the licensed version's bytes in
//   one day. A partner needs one full copy; twice over in a day is a script in a loop or a token
//   shared around.
// - 'case-cap-exceeded': more distinct cases in a day than the licence allows (a sample licence's
//   case cap, e.g. 100 cases).
// Every rule compares today's running totals with a bar that does not depend on them, so more
// bytes (or more cases) never un-flag a day: the check can run after every request.
import { Eco3dError } from '../protocols/errors.ts';

export interface DailyAccessTotals {
  /** UTC calendar day, YYYY-MM-DD. */
  readonly day: string;
  readonly instances: number;
  readonly bytes: number;
  readonly distinctCases: number;
  readonly requests: number;
}

export interface AccessAnomalyInput {
  /** The licence's previous days (before `today.day`), any order; days without access may be absent. */
  readonly history: readonly DailyAccessTotals[];
  /** Today's running totals. */
  readonly today: DailyAccessTotals;
  /** Bytes of the licensed dataset version (the sum, if the licence covers several). */
  readonly versionSizeBytes: number;
  /** Distinct cases the licence allows in a day; null: no cap. */
  readonly caseCapPerDay: number | null;
}

export interface AnomalyRule {
  /** Today's bytes must exceed this multiple of the median active day. */
  readonly bulkFactor: number;
  /** …and this many bytes. */
  readonly bulkMinBytes: number;
  /** Active days of history needed before the bulk rule applies. */
  readonly minHistoryDays: number;
  /** The median is over at most this many of the most recent active days. */
  readonly historyWindowDays: number;
  /** More than this multiple of the version's bytes in a day is flagged, whatever the history. */
  readonly fullVersionFactor: number;
}

export const DEFAULT_ANOMALY_RULE: AnomalyRule = {
  bulkFactor: 3,
  bulkMinBytes: 100 * 1024 * 1024,
  minHistoryDays: 3,
  historyWindowDays: 30,
  fullVersionFactor: 2,
};

export type AnomalyReason = 'bulk-download' | 'repeated-full-download' | 'case-cap-exceeded';

export interface AccessAnomaly {
  readonly flagged: boolean;
  /** Stable, machine-readable, in the order above. */
  readonly reasons: AnomalyReason[];
  /** What the rules compared, for the audit record. */
  readonly evidence: {
    readonly todayBytes: number;
    /** Active days the median is over (at most historyWindowDays). */
    readonly activeHistoryDays: number;
    /** null with fewer than minHistoryDays active days. */
    readonly medianBytes: number | null;
    /** The bulk rule's bar, max(bulkFactor × median, bulkMinBytes); null when it does not apply. */
    readonly bulkThresholdBytes: number | null;
    readonly fullVersionThresholdBytes: number;
    readonly distinctCases: number;
    readonly caseCapPerDay: number | null;
  };
}

const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;

function count(what: string, v: unknown): number {
  if (typeof v !== 'number') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: ${what} must be a number, got ${typeof v}`);
  if (!Number.isFinite(v)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `access anomaly: ${what} is ${v}`);
  if (v < 0 || !Number.isInteger(v)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: ${what} must be a non-negative integer, got ${v}`);
  return v;
}

function positiveNumber(what: string, v: unknown): number {
  if (typeof v !== 'number') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: ${what} must be a number`);
  if (!Number.isFinite(v)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `access anomaly: ${what} is ${v}`);
  if (v <= 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: ${what} must be positive, got ${v}`);
  return v;
}

function checkDay(what: string, d: DailyAccessTotals): void {
  if (typeof d.day !== 'string' || !DAY_RE.test(d.day)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: ${what}.day must be YYYY-MM-DD, got ${JSON.stringify(d.day)}`);
  count(`${what}.instances`, d.instances);
  count(`${what}.bytes`, d.bytes);
  count(`${what}.distinctCases`, d.distinctCases);
  count(`${what}.requests`, d.requests);
}

function resolveRule(r: Partial<AnomalyRule> | undefined): AnomalyRule {
  const rule = { ...DEFAULT_ANOMALY_RULE, ...r };
  positiveNumber('rule.bulkFactor', rule.bulkFactor);
  count('rule.bulkMinBytes', rule.bulkMinBytes);
  positiveNumber('rule.minHistoryDays', count('rule.minHistoryDays', rule.minHistoryDays));
  positiveNumber('rule.historyWindowDays', count('rule.historyWindowDays', rule.historyWindowDays));
  if (rule.historyWindowDays < rule.minHistoryDays) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'access anomaly: rule.historyWindowDays must be at least rule.minHistoryDays');
  positiveNumber('rule.fullVersionFactor', rule.fullVersionFactor);
  return rule;
}

/** The median of a non-empty list (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Eco3dError('ECO3D_ERR_INTERNAL', 'median of nothing');
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/**
 * Decides whether today's access under a licence is anomalous. Pure. Throws
 * ECO3D_ERR_BAD_REQUEST for malformed totals (negative, fractional, a history day that is not
 * before today, a day twice) and ECO3D_ERR_NOT_FINITE for NaN or infinite ones.
 */
export function detectAccessAnomaly(input: AccessAnomalyInput, rule?: Partial<AnomalyRule>): AccessAnomaly {
  const r = resolveRule(rule);
  checkDay('today', input.today);
  const versionBytes = count('versionSizeBytes', input.versionSizeBytes);
  const cap = input.caseCapPerDay === null ? null : count('caseCapPerDay', input.caseCapPerDay);
  const seen = new Set<string>();
  input.history.forEach((d, k) => {
    checkDay(`history[${k}]`, d);
    if (d.day >= input.today.day) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: history[${k}] is ${d.day}, not before today (${input.today.day})`);
    if (seen.has(d.day)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `access anomaly: history has ${d.day} twice`);
    seen.add(d.day);
  });

  const active = input.history
    .filter((d) => d.bytes > 0)
    .sort((a, b) => (a.day < b.day ? 1 : a.day > b.day ? -1 : 0))
    .slice(0, r.historyWindowDays);
  const medianBytes = active.length >= r.minHistoryDays ? median(active.map((d) => d.bytes)) : null;
  const bulkThresholdBytes = medianBytes === null ? null : Math.max(r.bulkFactor * medianBytes, r.bulkMinBytes);
  const fullVersionThresholdBytes = r.fullVersionFactor * versionBytes;
  const todayBytes = input.today.bytes;

  const reasons: AnomalyReason[] = [];
  if (bulkThresholdBytes !== null && todayBytes > bulkThresholdBytes) reasons.push('bulk-download');
  if (todayBytes > fullVersionThresholdBytes) reasons.push('repeated-full-download');
  if (cap !== null && input.today.distinctCases > cap) reasons.push('case-cap-exceeded');
  return {
    flagged: reasons.length > 0,
    reasons,
    evidence: {
      todayBytes,
      activeHistoryDays: active.length,
      medianBytes,
      bulkThresholdBytes,
      fullVersionThresholdBytes,
      distinctCases: input.today.distinctCases,
      caseCapPerDay: cap,
    },
  };
}

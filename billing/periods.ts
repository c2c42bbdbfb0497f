// Billing periods: calendar months in the tenant's IANA time zone (default Europe/Rome).
//
// Temporal does the calendar work: a month in Rome that contains a DST change is 743 or 745
// hours long, and a day 23 or 25; counting in milliseconds of UTC would put the scans done
// between midnight and 1 am on the wrong day, or in the wrong month.
import { Temporal } from 'temporal-polyfill';
import { Eco3dError } from '../protocols/errors.ts';

export const DEFAULT_TIME_ZONE = 'Europe/Rome';

/** `YYYY-MM`, e.g. `2026-03`. */
export type Period = string;
/** `YYYY-MM-DD`, a calendar date in the tenant's zone. */
export type LocalDate = string;

// Outside these years a period or a timestamp is a bug, not a bill.
export const MIN_YEAR = 2000;
export const MAX_YEAR = 2199;

const PERIOD_RE = /^(\d{4})-(0[1-9]|1[0-2])$/;
const DATE_RE = /^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/;

const bad = (field: string, message: string): Eco3dError => new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field}: ${message}`, { details: { field } });

/** The zone's canonical id, or BAD_REQUEST. */
export function requireTimeZone(tz: unknown, field = 'timeZone'): string {
  if (typeof tz !== 'string' || tz.length === 0 || tz.length > 64) throw bad(field, 'an IANA time zone id is required');
  try {
    return Temporal.Instant.fromEpochMilliseconds(0).toZonedDateTimeISO(tz).timeZoneId;
  } catch {
    throw bad(field, `unknown time zone ${JSON.stringify(tz)}`);
  }
}

export function parsePeriod(period: unknown, field = 'period'): { year: number; month: number } {
  const m = typeof period === 'string' ? PERIOD_RE.exec(period) : null;
  if (m === null) throw bad(field, `expected YYYY-MM, got ${JSON.stringify(period)}`);
  const year = Number(m[1]);
  if (year < MIN_YEAR || year > MAX_YEAR) throw bad(field, `year ${year} outside ${MIN_YEAR}–${MAX_YEAR}`);
  return { year, month: Number(m[2]) };
}

export function requireLocalDate(date: unknown, field = 'date'): LocalDate {
  const m = typeof date === 'string' ? DATE_RE.exec(date) : null;
  if (m === null) throw bad(field, `expected YYYY-MM-DD, got ${JSON.stringify(date)}`);
  const year = Number(m[1]);
  if (year < MIN_YEAR || year > MAX_YEAR) throw bad(field, `year ${year} outside ${MIN_YEAR}–${MAX_YEAR}`);
  try {
    Temporal.PlainDate.from(date as string, { overflow: 'reject' });
  } catch {
    throw bad(field, `${date as string} is not a calendar date`);
  }
  return date as string;
}

function requireInstantMs(instantMs: unknown, field: string): number {
  if (typeof instantMs !== 'number' || !Number.isFinite(instantMs) || !Number.isInteger(instantMs)) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${field} must be an integer number of milliseconds, got ${String(instantMs)}`, { details: { field } });
  }
  const year = new Date(instantMs).getUTCFullYear();
  if (year < MIN_YEAR || year > MAX_YEAR) throw bad(field, `${new Date(instantMs).toISOString()} is outside ${MIN_YEAR}–${MAX_YEAR}`);
  return instantMs;
}

/** The local date (tenant zone) of an instant. */
export function dayOf(instantMs: number, tz: string = DEFAULT_TIME_ZONE, field = 'instantMs'): LocalDate {
  return Temporal.Instant.fromEpochMilliseconds(requireInstantMs(instantMs, field)).toZonedDateTimeISO(tz).toPlainDate().toString();
}

/** The period (tenant zone) an instant falls in. */
export function periodOf(instantMs: number, tz: string = DEFAULT_TIME_ZONE, field = 'instantMs'): Period {
  return dayOf(instantMs, tz, field).slice(0, 7);
}

/** The instant a local date starts in `tz` (its first instant; midnight may not exist on DST days). */
export function dayStartMs(date: LocalDate, tz: string = DEFAULT_TIME_ZONE): number {
  return Temporal.PlainDate.from(requireLocalDate(date)).toZonedDateTime({ timeZone: tz }).epochMilliseconds;
}

/** [startMs, endMs) of a period in `tz`: from the first instant of its first day to that of the next month. */
export function periodBounds(period: Period, tz: string = DEFAULT_TIME_ZONE): { startMs: number; endMs: number } {
  const { year, month } = parsePeriod(period);
  const first = Temporal.PlainDate.from({ year, month, day: 1 });
  return {
    startMs: first.toZonedDateTime({ timeZone: tz }).epochMilliseconds,
    endMs: first.add({ months: 1 }).toZonedDateTime({ timeZone: tz }).epochMilliseconds,
  };
}

/** Every date of the period, in order (28 to 31 of them). */
export function daysOfPeriod(period: Period): LocalDate[] {
  const { year, month } = parsePeriod(period);
  const first = Temporal.PlainDate.from({ year, month, day: 1 });
  return Array.from({ length: first.daysInMonth }, (_, i) => first.add({ days: i }).toString());
}

/** ISO weekday of a date: 1 = Monday … 7 = Sunday. */
export function weekdayOf(date: LocalDate): number {
  return Temporal.PlainDate.from(requireLocalDate(date)).dayOfWeek;
}

/** The period after `period`. */
export function nextPeriod(period: Period): Period {
  const { year, month } = parsePeriod(period);
  return Temporal.PlainYearMonth.from({ year, month }).add({ months: 1 }).toString();
}

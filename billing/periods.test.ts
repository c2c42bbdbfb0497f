// Periods: calendar months in the tenant's zone, DST months included.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { throwsWith } from '../protocols/testing.ts';
import { dayOf, dayStartMs, daysOfPeriod, nextPeriod, periodBounds, periodOf, requireTimeZone, weekdayOf } from './periods.ts';

const HOUR_MS = 3_600_000;

void test('periodBounds in Europe/Rome: March 2026 loses an hour, October gains one', () => {
  const march = periodBounds('2026-03', 'Europe/Rome');
  assert.equal(new Date(march.startMs).toISOString(), '2026-02-28T23:00:00.000Z'); // CET midnight
  assert.equal(new Date(march.endMs).toISOString(), '2026-03-31T22:00:00.000Z'); // CEST midnight
  assert.equal(march.endMs - march.startMs, (31 * 24 - 1) * HOUR_MS);
  const october = periodBounds('2026-10', 'Europe/Rome');
  assert.equal(october.endMs - october.startMs, (31 * 24 + 1) * HOUR_MS);
  const feb = periodBounds('2026-02'); // default zone: Rome
  assert.equal(feb.endMs, march.startMs);
  assert.equal(feb.endMs - feb.startMs, 28 * 24 * HOUR_MS);
});

void test('periodOf puts the instants around local midnight in the right month', () => {
  const { startMs } = periodBounds('2026-03', 'Europe/Rome');
  assert.equal(periodOf(startMs - 1, 'Europe/Rome'), '2026-02');
  assert.equal(periodOf(startMs, 'Europe/Rome'), '2026-03');
  // 23:30 UTC on 28 Feb is 00:30 on 1 March in Rome, still February in UTC and New York.
  const t = Date.parse('2026-02-28T23:30:00Z');
  assert.equal(periodOf(t, 'Europe/Rome'), '2026-03');
  assert.equal(periodOf(t, 'UTC'), '2026-02');
  assert.equal(periodOf(t, 'America/New_York'), '2026-02');
  assert.equal(dayOf(t, 'Europe/Rome'), '2026-03-01');
  // New Year's Eve: 23:00 UTC is already midnight in Rome.
  assert.equal(periodOf(Date.parse('2026-12-31T22:59:59.999Z'), 'Europe/Rome'), '2026-12');
  assert.equal(periodOf(Date.parse('2026-12-31T23:00:00.000Z'), 'Europe/Rome'), '2027-01');
});

void test('dayStartMs: a DST day is 23 or 25 hours long', () => {
  assert.equal(dayStartMs('2026-03-30', 'Europe/Rome') - dayStartMs('2026-03-29', 'Europe/Rome'), 23 * HOUR_MS);
  assert.equal(dayStartMs('2026-10-26', 'Europe/Rome') - dayStartMs('2026-10-25', 'Europe/Rome'), 25 * HOUR_MS);
});

void test('days of a month, weekdays and the next period', () => {
  assert.equal(daysOfPeriod('2026-02').length, 28);
  assert.equal(daysOfPeriod('2028-02').length, 29);
  assert.deepEqual(daysOfPeriod('2026-03').slice(0, 2), ['2026-03-01', '2026-03-02']);
  assert.equal(daysOfPeriod('2026-03').at(-1), '2026-03-31');
  assert.equal(weekdayOf('2026-03-01'), 7); // a Sunday
  assert.equal(weekdayOf('2026-03-02'), 1);
  assert.equal(nextPeriod('2026-12'), '2027-01');
});

void test('property: every instant lies within the bounds of its own period, in any zone', () => {
  const zones = ['Europe/Rome', 'UTC', 'America/New_York', 'Australia/Lord_Howe', 'Asia/Kathmandu', 'Pacific/Kiritimati'];
  fc.assert(
    fc.property(fc.integer({ min: Date.parse('2001-01-01T00:00:00Z'), max: Date.parse('2190-01-01T00:00:00Z') }), fc.constantFrom(...zones), (t, tz) => {
      const p = periodOf(t, tz);
      const { startMs, endMs } = periodBounds(p, tz);
      assert.ok(startMs <= t && t < endMs, `${t} in ${p} ${tz}`);
      assert.equal(periodOf(startMs, tz), p);
      assert.equal(periodOf(endMs, tz), nextPeriod(p));
    }),
    { numRuns: 2000 },
  );
});

void test('bad periods, dates and zones are refused', () => {
  throwsWith(() => periodBounds('2026-13'), 'ECO3D_ERR_BAD_REQUEST', 'period');
  throwsWith(() => periodBounds('2026-3'), 'ECO3D_ERR_BAD_REQUEST', 'period');
  throwsWith(() => periodBounds('1999-12'), 'ECO3D_ERR_BAD_REQUEST', 'period');
  throwsWith(() => dayStartMs('2026-02-30'), 'ECO3D_ERR_BAD_REQUEST', 'date');
  throwsWith(() => requireTimeZone('Mars/Olympus'), 'ECO3D_ERR_BAD_REQUEST', 'timeZone');
  throwsWith(() => periodOf(Number.NaN), 'ECO3D_ERR_NOT_FINITE', 'instantMs');
  throwsWith(() => periodOf(Date.parse('2400-01-01T00:00:00Z')), 'ECO3D_ERR_BAD_REQUEST', 'instantMs');
  assert.equal(requireTimeZone('europe/rome'), 'Europe/Rome');
});

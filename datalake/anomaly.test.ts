// The access anomaly rule: each reason, the history it needs, validation, and monotonicity
// (more bytes or more cases never un-flag a day) as a property.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { throwsWith } from '../protocols/testing.ts';
import { detectAccessAnomaly, median, type AccessAnomalyInput, type DailyAccessTotals } from './anomaly.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const day = (d: string, bytes: number, over: Partial<DailyAccessTotals> = {}): DailyAccessTotals => ({
  day: d,
  instances: Math.ceil(bytes / (30 * MiB)),
  bytes,
  distinctCases: Math.ceil(bytes / (60 * MiB)),
  requests: bytes > 0 ? 10 : 1,
  ...over,
});
/** The ISO day `k` days after 2026-01-01 (k = 0 is that day). */
const isoDay = (k: number): string => new Date(Date.UTC(2026, 0, 1 + k)).toISOString().slice(0, 10);
const HISTORY = [day('2026-03-02', 200 * MiB), day('2026-03-03', 0), day('2026-03-04', 100 * MiB), day('2026-03-05', 150 * MiB)];
const input = (today: DailyAccessTotals, over: Partial<AccessAnomalyInput> = {}): AccessAnomalyInput => ({
  history: HISTORY,
  today,
  versionSizeBytes: 50 * GiB,
  caseCapPerDay: null,
  ...over,
});

void test('an ordinary day is not flagged; the evidence shows the bars', () => {
  const a = detectAccessAnomaly(input(day('2026-03-06', 400 * MiB)));
  assert.equal(a.flagged, false);
  assert.deepEqual(a.reasons, []);
  // Active days: 200, 100, 150 MiB (the 0-byte day is not active) → median 150 MiB, bar 450 MiB.
  assert.deepEqual(a.evidence, {
    todayBytes: 400 * MiB,
    activeHistoryDays: 3,
    medianBytes: 150 * MiB,
    bulkThresholdBytes: 450 * MiB,
    fullVersionThresholdBytes: 100 * GiB,
    distinctCases: 7,
    caseCapPerDay: null,
  });
});

void test('bulk download: above 3 × the median of the active days and above 100 MiB', () => {
  assert.deepEqual(detectAccessAnomaly(input(day('2026-03-06', 451 * MiB))).reasons, ['bulk-download']);
  // A licence that usually takes a few MB: 3× is not enough, it must also pass 100 MiB.
  const small = [day('2026-03-01', 5 * MiB), day('2026-03-02', 4 * MiB), day('2026-03-03', 6 * MiB)];
  assert.equal(detectAccessAnomaly(input(day('2026-03-06', 90 * MiB), { history: small })).flagged, false);
  assert.deepEqual(detectAccessAnomaly(input(day('2026-03-06', 101 * MiB), { history: small })).reasons, ['bulk-download']);
  // Fewer than 3 active days: no pattern yet, the bulk rule does not apply.
  const short = detectAccessAnomaly(input(day('2026-03-06', 40 * GiB), { history: small.slice(0, 2) }));
  assert.deepEqual([short.flagged, short.evidence.medianBytes, short.evidence.bulkThresholdBytes], [false, null, null]);
  // One earlier huge day does not move the median.
  const spiky = [...small, day('2026-03-04', 30 * GiB)];
  assert.equal(detectAccessAnomaly(input(day('2026-03-06', 200 * MiB), { history: spiky })).evidence.medianBytes, 5.5 * MiB);
  assert.deepEqual(detectAccessAnomaly(input(day('2026-03-06', 200 * MiB), { history: spiky })).reasons, ['bulk-download']);
});

void test('the median follows the most recent 30 active days', () => {
  // 40 old days of 1 GiB, then 30 recent days of 10 MiB: the pattern is the recent one.
  const old = Array.from({ length: 40 }, (_, k) => day(isoDay(k), GiB));
  const recent = Array.from({ length: 30 }, (_, k) => day(isoDay(40 + k), 10 * MiB));
  const history = [...recent, ...old].reverse(); // any order
  const a = detectAccessAnomaly(input(day(isoDay(80), 500 * MiB), { history }));
  assert.equal(a.evidence.activeHistoryDays, 30);
  assert.equal(a.evidence.medianBytes, 10 * MiB);
  assert.deepEqual(a.reasons, ['bulk-download']);
  assert.equal(detectAccessAnomaly(input(day(isoDay(80), 500 * MiB), { history }), { historyWindowDays: 70 }).flagged, false);
});

void test('more than twice the whole version in a day, whatever the history', () => {
  const v = 2 * GiB;
  assert.equal(detectAccessAnomaly(input(day('2026-03-06', 2 * v), { history: [], versionSizeBytes: v })).flagged, false);
  const a = detectAccessAnomaly(input(day('2026-03-06', 2 * v + 1), { history: [], versionSizeBytes: v }));
  assert.deepEqual(a.reasons, ['repeated-full-download']);
  // With a pattern, both rules can fire.
  assert.deepEqual(detectAccessAnomaly(input(day('2026-03-06', 5 * GiB), { versionSizeBytes: v })).reasons, ['bulk-download', 'repeated-full-download']);
});

void test('more distinct cases in a day than the licence allows', () => {
  const t = day('2026-03-06', 10 * MiB, { distinctCases: 101 });
  assert.deepEqual(detectAccessAnomaly(input(t, { caseCapPerDay: 100 })).reasons, ['case-cap-exceeded']);
  assert.equal(detectAccessAnomaly(input({ ...t, distinctCases: 100 }, { caseCapPerDay: 100 })).flagged, false);
  assert.equal(detectAccessAnomaly(input(t)).flagged, false);
});

void test('malformed totals are refused', () => {
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', Number.NaN, { instances: 1 }))), 'ECO3D_ERR_NOT_FINITE', 'today.bytes');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', Number.POSITIVE_INFINITY, { instances: 1, distinctCases: 1 }))), 'ECO3D_ERR_NOT_FINITE', 'today.bytes');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1, { requests: Number.NaN }))), 'ECO3D_ERR_NOT_FINITE', 'today.requests');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', -1))), 'ECO3D_ERR_BAD_REQUEST', 'today.bytes');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1.5))), 'ECO3D_ERR_BAD_REQUEST', 'today.bytes');
  throwsWith(() => detectAccessAnomaly(input(day('6 March', 1))), 'ECO3D_ERR_BAD_REQUEST', 'today.day');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-05', 1))), 'ECO3D_ERR_BAD_REQUEST', 'not before today');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1), { history: [...HISTORY, day('2026-03-02', 5)] })), 'ECO3D_ERR_BAD_REQUEST', '2026-03-02 twice');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1), { versionSizeBytes: Number.NaN })), 'ECO3D_ERR_NOT_FINITE', 'versionSizeBytes');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1)), { bulkFactor: 0 }), 'ECO3D_ERR_BAD_REQUEST', 'bulkFactor');
  throwsWith(() => detectAccessAnomaly(input(day('2026-03-06', 1)), { historyWindowDays: 2 }), 'ECO3D_ERR_BAD_REQUEST', 'historyWindowDays');
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
});

// ---------------------------------------------------------------------------------------------
// Properties

const arbTotals = (d: string): fc.Arbitrary<DailyAccessTotals> =>
  fc.record({
    day: fc.constant(d),
    instances: fc.nat({ max: 10_000 }),
    bytes: fc.oneof(fc.constant(0), fc.nat({ max: 4 * GiB })),
    distinctCases: fc.nat({ max: 500 }),
    requests: fc.nat({ max: 10_000 }),
  });
const arbHistory = fc
  .uniqueArray(fc.integer({ min: 1, max: 60 }), { maxLength: 40 })
  .chain((days) => fc.tuple(...days.map((k) => arbTotals(isoDay(k)))));
const arbInput: fc.Arbitrary<AccessAnomalyInput> = fc.record({
  history: arbHistory,
  today: arbTotals(isoDay(70)),
  versionSizeBytes: fc.nat({ max: 8 * GiB }),
  caseCapPerDay: fc.option(fc.nat({ max: 300 }), { nil: null }),
});

void test('property: more bytes or more cases today never un-flag, and never drop a reason', () => {
  fc.assert(
    fc.property(arbInput, fc.nat({ max: 8 * GiB }), fc.nat({ max: 300 }), (inp, moreBytes, moreCases) => {
      const before = detectAccessAnomaly(inp);
      const after = detectAccessAnomaly({ ...inp, today: { ...inp.today, bytes: inp.today.bytes + moreBytes, distinctCases: inp.today.distinctCases + moreCases } });
      if (before.flagged) assert.equal(after.flagged, true);
      for (const r of before.reasons) assert.ok(after.reasons.includes(r), `${r} dropped`);
    }),
  );
});

void test('property: a day within every bar is never flagged, and a flag always names a reason', () => {
  fc.assert(
    fc.property(arbInput, (inp) => {
      const a = detectAccessAnomaly(inp);
      assert.equal(a.flagged, a.reasons.length > 0);
      const e = a.evidence;
      const within = (e.bulkThresholdBytes === null || e.todayBytes <= e.bulkThresholdBytes) && e.todayBytes <= e.fullVersionThresholdBytes && (e.caseCapPerDay === null || e.distinctCases <= e.caseCapPerDay);
      assert.equal(a.flagged, !within);
      // The bulk rule needs a pattern of at least 3 active days.
      if (inp.history.filter((d) => d.bytes > 0).length < 3) assert.ok(!a.reasons.includes('bulk-download'));
    }),
  );
});

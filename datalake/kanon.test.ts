// k-anonymity: groups and refusals, the generalisation labels, the suggestions (each checked by
// applying it independently), and properties over random catalogs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { throwsWith } from '../protocols/testing.ts';
import {
  checkKAnonymity,
  evaluatePlan,
  GENERALISATION_LEVELS,
  generalise,
  IDENTITY_PLAN,
  kAnonymityError,
  planInformationLoss,
  type GeneralisationPlan,
  type QuasiIdentifiers,
} from './kanon.ts';

const rec = (ageBand: string | null, sex: string | null, siteRegion: string | null, studyYear: number | null): QuasiIdentifiers => ({ ageBand, sex, siteRegion, studyYear });
const times = (n: number, r: QuasiIdentifiers): QuasiIdentifiers[] => Array.from({ length: n }, () => r);

/** Group sizes computed the plain way, from generalise(): the oracle for the report. */
function naiveGroups(records: readonly QuasiIdentifiers[], plan: Partial<GeneralisationPlan>): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of records) {
    const s = JSON.stringify(generalise(r, plan));
    m.set(s, (m.get(s) ?? 0) + 1);
  }
  return m;
}

void test('zero records pass (nothing to re-identify); a k-anonymous set passes with no suggestions', () => {
  assert.deepEqual(checkKAnonymity([]), {
    k: 5,
    ok: true,
    records: 0,
    groups: 0,
    offendingGroups: 0,
    offendingRecords: 0,
    offending: [],
    offendingTruncated: false,
    suggestions: [],
  });
  const r = checkKAnonymity([...times(5, rec('040Y', 'F', 'IT-25', 2026)), ...times(6, rec(null, null, null, null))]);
  assert.equal(r.ok, true);
  assert.equal(r.groups, 2);
  assert.deepEqual(r.suggestions, []);
});

void test('k must be an integer of at least 2', () => {
  for (const k of [1, 0, -3, 2.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    throwsWith(() => checkKAnonymity([], k), 'ECO3D_ERR_BAD_REQUEST', 'k must be an integer');
  }
  assert.equal(checkKAnonymity(times(2, rec('040Y', 'F', 'IT', 2026)), 2).ok, true);
  assert.equal(checkKAnonymity(times(2, rec('040Y', 'F', 'IT', 2026)), 3).ok, false);
});

void test('malformed catalog values are refused, naming the record', () => {
  throwsWith(() => checkKAnonymity([rec('040Y', 'F', 'IT', 2026), rec('forty', 'F', 'IT', 2026)]), 'ECO3D_ERR_BAD_REQUEST', 'record 1', 'ageBand');
  throwsWith(() => checkKAnonymity([rec('040Y', 'X', 'IT', 2026)]), 'ECO3D_ERR_BAD_REQUEST', 'sex');
  throwsWith(() => checkKAnonymity([rec('040Y', 'F', 'Italy', 2026)]), 'ECO3D_ERR_BAD_REQUEST', 'siteRegion');
  throwsWith(() => checkKAnonymity([rec('040Y', 'F', 'IT', 26)]), 'ECO3D_ERR_BAD_REQUEST', 'studyYear');
  throwsWith(() => checkKAnonymity([rec('040Y', 'F', 'IT', Number.NaN)]), 'ECO3D_ERR_NOT_FINITE', 'studyYear');
  throwsWith(() => generalise(rec('040Y', 'F', 'IT', 2026), { ageBand: '7y' as never }), 'ECO3D_ERR_BAD_REQUEST', 'ageBand level');
});

void test('generalisation labels: nested bands on a fixed grid, unknown stays unknown, any is *', () => {
  const r = rec('085Y', 'F', 'IT-25', 2027);
  assert.deepEqual(generalise(r, {}), { ageBand: '085Y', sex: 'F', siteRegion: 'IT-25', studyYear: '2027' });
  assert.deepEqual(generalise(r, { ageBand: '10y', studyYear: '2y', siteRegion: 'country' }), { ageBand: '80-89', sex: 'F', siteRegion: 'IT', studyYear: '2026-2027' });
  assert.deepEqual(generalise(r, { ageBand: '20y', studyYear: '4y', siteRegion: 'any', sex: 'any' }), { ageBand: '80+', sex: '*', siteRegion: '*', studyYear: '2024-2027' });
  assert.equal(generalise(rec('090Y', null, null, null), { ageBand: '10y' }).ageBand, '90+');
  assert.equal(generalise(rec('000Y', null, null, null), { ageBand: '10y' }).ageBand, '0-9');
  assert.equal(generalise(rec('000Y', null, null, null), { ageBand: '20y' }).ageBand, '0-19');
  assert.equal(generalise(rec('045Y', null, null, null), { ageBand: '20y' }).ageBand, '40-59');
  // Ages in months/weeks/days (infants) and ages not on a band are banded; 90 and over is one band.
  assert.equal(generalise(rec('006M', null, null, null), {}).ageBand, '000Y');
  assert.equal(generalise(rec('042Y', null, null, null), {}).ageBand, '040Y');
  assert.equal(generalise(rec('097Y', null, null, null), {}).ageBand, '090Y');
  assert.deepEqual(generalise(rec(null, null, 'IT', null), { siteRegion: 'country' }), { ageBand: null, sex: null, siteRegion: 'IT', studyYear: null });
  assert.deepEqual(generalise(rec(null, null, null, null), { ageBand: 'any', sex: 'any', siteRegion: 'any', studyYear: 'any' }), {
    ageBand: '*',
    sex: '*',
    siteRegion: '*',
    studyYear: '*',
  });
  assert.equal(planInformationLoss(IDENTITY_PLAN), 0);
  assert.equal(planInformationLoss({ ageBand: 'any', sex: 'any', siteRegion: 'any', studyYear: 'any' }), 1);
  assert.equal(planInformationLoss({ siteRegion: 'country' }), 0.125);
});

void test('a refusal reports the offending groups, smallest first, with unknown shown as unknown', () => {
  const records = [
    ...times(7, rec('040Y', 'F', 'IT-25', 2026)),
    ...times(3, rec('045Y', 'F', 'IT-25', 2026)),
    ...times(1, rec(null, 'M', 'IT-25', 2026)),
    ...times(2, rec('045Y', 'M', 'IT-25', 2026)),
  ];
  const r = checkKAnonymity(records, 5);
  assert.equal(r.ok, false);
  assert.equal(r.records, 13);
  assert.equal(r.groups, 4);
  assert.equal(r.offendingGroups, 3);
  assert.equal(r.offendingRecords, 6);
  assert.deepEqual(r.offending, [
    { key: { ageBand: 'unknown', sex: 'M', siteRegion: 'IT-25', studyYear: '2026' }, count: 1 },
    { key: { ageBand: '045Y', sex: 'M', siteRegion: 'IT-25', studyYear: '2026' }, count: 2 },
    { key: { ageBand: '045Y', sex: 'F', siteRegion: 'IT-25', studyYear: '2026' }, count: 3 },
  ]);
  assert.equal(r.offendingTruncated, false);
  const t = checkKAnonymity(records, 5, { maxOffendingListed: 1 });
  assert.equal(t.offending.length, 1);
  assert.equal(t.offendingTruncated, true);
  assert.equal(t.offendingGroups, 3);
});

void test('the cheapest passing single generalisation comes first; coarser versions of it are left out', () => {
  const records = [...times(3, rec('040Y', 'F', 'IT-25', 2026)), ...times(3, rec('045Y', 'F', 'IT-25', 2026))];
  const r = checkKAnonymity(records, 5);
  assert.equal(r.ok, false);
  const first = r.suggestions[0]!;
  assert.equal(first.kind, 'generalise');
  assert.deepEqual(first.plan, { ...IDENTITY_PLAN, ageBand: '10y' });
  assert.equal(first.description, 'age in 10-year bands');
  assert.equal(first.passes, true);
  assert.equal(first.groups, 1);
  assert.ok(Math.abs(first.informationLoss - 1 / 12) < 1e-12);
  // 20-year bands and "age removed" pass too, but 10-year bands refine them.
  assert.ok(!r.suggestions.some((s) => s.plan.ageBand === '20y' || s.plan.ageBand === 'any'));
  // Suppression is there, at its loss (every record: 100 %), after the passing generalisation.
  const sup = r.suggestions.find((s) => s.kind === 'suppress')!;
  assert.equal(sup.recordsDropped, 6);
  assert.equal(sup.informationLoss, 1);
  assert.ok(r.suggestions.indexOf(sup) > 0);
  // The failing single plans follow, with what they leave below k.
  const sexAny = r.suggestions.find((s) => s.plan.sex === 'any')!;
  assert.deepEqual([sexAny.passes, sexAny.offendingGroups, sexAny.offendingRecords], [false, 2, 6]);
  // No pairs: a single plan passed.
  assert.ok(r.suggestions.every((s) => Object.values(s.plan).filter((v, i) => v !== Object.values(IDENTITY_PLAN)[i]).length <= 1));

  const err = kAnonymityError(r);
  assert.equal(err.code, 'ECO3D_ERR_K_ANONYMITY');
  assert.equal(err.httpStatus, 422);
  assert.match(err.message, /2 of 2 quasi-identifier groups \(6 of 6 records\) hold fewer than k = 5/);
  assert.ok(err.message.includes('age 040Y, sex F, region IT-25, year 2026 (3 records)'), err.message);
  assert.ok(err.message.includes('Least loss: age in 10-year bands'), err.message);
  assert.deepEqual(err.details, { ...r });
  throwsWith(() => kAnonymityError(checkKAnonymity([])), 'ECO3D_ERR_INTERNAL', 'nothing to refuse');
});

void test('pairs of attributes are tried when no single one passes', () => {
  const records = [...times(3, rec('040Y', 'F', 'IT-25', 2026)), ...times(3, rec('045Y', 'F', 'IT-25', 2027))];
  const r = checkKAnonymity(records, 5);
  const first = r.suggestions[0]!;
  assert.deepEqual(first.plan, { ...IDENTITY_PLAN, ageBand: '10y', studyYear: '2y' });
  assert.equal(first.description, 'age in 10-year bands, study year in 2-year ranges');
  assert.equal(first.passes, true);
  assert.equal(kAnonymityError(r).message.includes('Least loss: age in 10-year bands, study year in 2-year ranges'), true);
});

void test('suppressing a few outliers costs less than generalising everyone', () => {
  const records = [...times(60, rec('040Y', 'F', 'IT-25', 2026)), ...times(40, rec('070Y', 'M', 'IT-21', 2026)), rec('090Y', 'O', 'FR-IDF', 2026)];
  const r = checkKAnonymity(records, 5);
  const first = r.suggestions[0]!;
  assert.equal(first.kind, 'suppress');
  assert.equal(first.recordsDropped, 1);
  assert.ok(Math.abs(first.informationLoss - 1 / 101) < 1e-12);
  assert.match(first.description, /suppress the 1 record of the 1 offending group \(1\.0 % of the records\)/);
  // Nothing generalised on its own or in pairs passes: the lone record differs everywhere but year.
  assert.ok(r.suggestions.slice(1).every((s) => !s.passes));
});

// ---------------------------------------------------------------------------------------------
// Properties

const arbRecord: fc.Arbitrary<QuasiIdentifiers> = fc.record({
  ageBand: fc.option(fc.integer({ min: 0, max: 18 }).map((b) => `${String(b * 5).padStart(3, '0')}Y`), { nil: null, freq: 8 }),
  sex: fc.option(fc.constantFrom('F', 'M', 'O'), { nil: null, freq: 8 }),
  siteRegion: fc.option(fc.constantFrom('IT-25', 'IT-21', 'IT', 'FR-IDF', 'DE-BY', 'DE-BE'), { nil: null, freq: 8 }),
  studyYear: fc.option(fc.integer({ min: 2019, max: 2030 }), { nil: null, freq: 8 }),
});
/** A narrow catalog, where groups are big enough for generalisations to pass. */
const arbNarrowRecord: fc.Arbitrary<QuasiIdentifiers> = fc.record({
  ageBand: fc.option(fc.constantFrom('040Y', '045Y', '085Y', '090Y'), { nil: null, freq: 30 }),
  sex: fc.option(fc.constantFrom('F', 'M'), { nil: null, freq: 30 }),
  siteRegion: fc.option(fc.constantFrom('IT-25', 'IT-21'), { nil: null, freq: 30 }),
  studyYear: fc.option(fc.constantFrom(2026, 2027), { nil: null, freq: 30 }),
});
const arbCatalog = fc.oneof(fc.array(arbRecord, { maxLength: 80 }), fc.array(arbNarrowRecord, { minLength: 10, maxLength: 150 }));
const arbPlan: fc.Arbitrary<GeneralisationPlan> = fc.record({
  ageBand: fc.constantFrom(...GENERALISATION_LEVELS.ageBand),
  sex: fc.constantFrom(...GENERALISATION_LEVELS.sex),
  siteRegion: fc.constantFrom(...GENERALISATION_LEVELS.siteRegion),
  studyYear: fc.constantFrom(...GENERALISATION_LEVELS.studyYear),
});
const arbK = fc.integer({ min: 2, max: 6 });

void test('property: the report agrees with a plain grouping, and ok means every group holds k', () => {
  fc.assert(
    fc.property(arbCatalog, arbK, (records, k) => {
      const r = checkKAnonymity(records, k);
      const sizes = [...naiveGroups(records, {}).values()];
      assert.equal(r.groups, sizes.length);
      assert.equal(r.offendingGroups, sizes.filter((s) => s < k).length);
      assert.equal(r.offendingRecords, sizes.filter((s) => s < k).reduce((a, b) => a + b, 0));
      assert.equal(r.ok, sizes.every((s) => s >= k));
      assert.equal(r.offending.reduce((a, g) => a + g.count, 0), r.offendingRecords);
      for (let i = 1; i < r.offending.length; i++) assert.ok(r.offending[i - 1]!.count <= r.offending[i]!.count);
    }),
  );
});

void test('property: every suggestion does what it claims when applied independently', () => {
  let passingSeen = 0;
  fc.assert(
    fc.property(arbCatalog, arbK, (records, k) => {
      const r = checkKAnonymity(records, k, { maxSuggestions: 100 });
      if (r.ok) return;
      if (r.suggestions.some((s) => s.kind === 'generalise' && s.passes)) passingSeen++;
      assert.ok(r.suggestions.length > 0);
      let seenFailing = false;
      let lastLoss = -1;
      for (const s of r.suggestions) {
        if (s.kind === 'suppress') {
          // Drop the offending groups' records: what is left is k-anonymous and the count matches.
          const base = naiveGroups(records, {});
          const kept = records.filter((x) => base.get(JSON.stringify(generalise(x, {})))! >= k);
          assert.equal(records.length - kept.length, s.recordsDropped);
          assert.equal(checkKAnonymity(kept, k).ok, true);
        } else {
          const sizes = [...naiveGroups(records, s.plan).values()];
          assert.equal(s.groups, sizes.length);
          assert.equal(s.offendingRecords, sizes.filter((n) => n < k).reduce((a, b) => a + b, 0));
          assert.equal(s.passes, sizes.every((n) => n >= k));
          assert.equal(s.informationLoss, planInformationLoss(s.plan));
        }
        // Passing suggestions first, by least loss.
        if (!s.passes) seenFailing = true;
        else {
          assert.ok(!seenFailing, 'a passing suggestion after a failing one');
          assert.ok(s.informationLoss >= lastLoss);
          lastLoss = s.informationLoss;
        }
      }
    }),
    { numRuns: 200 },
  );
  // The narrow catalogs make passing generalisations common enough to be checked above.
  assert.ok(passingSeen >= 3, `only ${passingSeen} catalogs had a passing generalisation`);
});

void test('property: a coarser plan never leaves more records below k (the hierarchies nest)', () => {
  const coarser = (a: GeneralisationPlan, b: GeneralisationPlan): GeneralisationPlan => {
    const pick = <T extends string>(levels: readonly T[], x: T, y: T): T => (levels.indexOf(x) >= levels.indexOf(y) ? x : y);
    return {
      ageBand: pick(GENERALISATION_LEVELS.ageBand, a.ageBand, b.ageBand),
      sex: pick(GENERALISATION_LEVELS.sex, a.sex, b.sex),
      siteRegion: pick(GENERALISATION_LEVELS.siteRegion, a.siteRegion, b.siteRegion),
      studyYear: pick(GENERALISATION_LEVELS.studyYear, a.studyYear, b.studyYear),
    };
  };
  fc.assert(
    fc.property(arbCatalog, arbK, arbPlan, arbPlan, (records, k, a, b) => {
      const fine = evaluatePlan(records, a, k);
      const coarse = evaluatePlan(records, coarser(a, b), k);
      assert.ok(coarse.offendingRecords <= fine.offendingRecords, `${fine.description} → ${coarse.description}`);
      assert.ok(coarse.groups <= fine.groups);
      assert.ok(coarse.informationLoss >= fine.informationLoss);
    }),
  );
});

void test('100 000 records: the whole check (baseline, 9 single plans, 29 pairs) takes seconds at most', () => {
  const regions = ['IT-25', 'IT-21', 'IT-45', 'FR-IDF', 'DE-BY'];
  const records = Array.from({ length: 100_000 }, (_, i) => rec(`${String((i % 19) * 5).padStart(3, '0')}Y`, 'FMO'[i % 3]!, regions[i % 5]!, 2020 + (i % 7)));
  // An outlier that only a pair of generalisations (or suppression) can hide.
  records.push(rec('040Y', 'F', 'PT-11', 2031));
  const t0 = performance.now();
  const r = checkKAnonymity(records, 5);
  const ms = performance.now() - t0;
  assert.equal(r.ok, false);
  assert.equal(r.suggestions[0]!.kind, 'suppress');
  assert.equal(r.suggestions.length, 12);
  assert.ok(ms < 10_000, `${ms.toFixed(0)} ms`);
});

// The quality gate's score: coverage of linear and fan sweeps, force stability, the reasons,
// refusal of non-finite input, and properties of the score.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { SweepSummary } from '../protocols/events.ts';
import { throwsWith } from '../protocols/testing.ts';
import { DEFAULT_QUALITY_THRESHOLDS, expectedFrames, qualityScore, type QualityInput } from './quality.ts';

const LINEAR: SweepSummary = { kind: 'linear', lengthMm: 80, tiltRangeRad: 0, speedMmPerS: 8, targetForceN: 5 };
const FAN: SweepSummary = { kind: 'fan', lengthMm: 0, tiltRangeRad: 0.6, speedMmPerS: 0, targetForceN: 5 };
/** A steady contact: ±10 % ripple around 5 N. */
const steady = (n: number, target = 5): number[] => Array.from({ length: n }, (_, k) => target * (1 + 0.1 * Math.sin(k / 3)));
const input = (over: Partial<QualityInput> = {}): QualityInput => ({ framesAcquired: 290, sweep: LINEAR, frameRateHz: 30, forceSamplesN: steady(500), ...over });

void test('a good linear sweep is diagnostic: coverage from length / speed × rate', () => {
  const q = qualityScore(input());
  assert.equal(q.framesExpected, 300);
  assert.ok(Math.abs(q.coverage - 290 / 300) < 1e-12);
  assert.equal(q.forceInBandShare, 1);
  assert.equal(q.contactLostShare, 0);
  assert.ok(q.forceCv !== null && q.forceCv > 0.05 && q.forceCv < 0.1, String(q.forceCv));
  assert.deepEqual(q.reasons, []);
  assert.equal(q.diagnostic, true);
  assert.ok(Math.abs(q.score - Math.sqrt(290 / 300)) < 1e-12);
  assert.deepEqual(q.thresholds, DEFAULT_QUALITY_THRESHOLDS);
  // More frames than planned (a slower sweep) is full coverage, not a bonus.
  const slow = qualityScore(input({ framesAcquired: 330 }));
  assert.ok(slow.coverage > 1);
  assert.equal(slow.score, 1);
});

void test('too few frames: low-coverage', () => {
  const q = qualityScore(input({ framesAcquired: 200 }));
  assert.deepEqual(q.reasons, ['low-coverage']);
  assert.equal(q.diagnostic, false);
  assert.equal(qualityScore(input({ framesAcquired: 240 })).diagnostic, true); // exactly 0.8
  assert.deepEqual(qualityScore(input({ framesAcquired: 0 })).score, 0);
});

void test('a fan sweep needs its duration; a linear sweep is measured against its plan', () => {
  throwsWith(() => qualityScore(input({ sweep: FAN })), 'ECO3D_ERR_BAD_REQUEST', 'fan sweep needs sweepDurationMs');
  const fan = qualityScore(input({ sweep: FAN, sweepDurationMs: 6000, framesAcquired: 175 }));
  assert.equal(fan.framesExpected, 180);
  assert.equal(fan.diagnostic, true);
  assert.equal(expectedFrames(FAN, 25, 4000), 100);
  // A duration measured from the frames cannot hide lost frames of a linear sweep.
  assert.equal(expectedFrames(LINEAR, 25), 250);
  assert.equal(expectedFrames(LINEAR, 30, 6000), 300);
  assert.deepEqual(qualityScore(input({ framesAcquired: 180, sweepDurationMs: 6000 })).reasons, ['low-coverage']);
});

void test('force: no data, contact lost, sawing, a biased push', () => {
  const none = qualityScore(input({ forceSamplesN: [] }));
  assert.deepEqual(none.reasons, ['no-force-data']);
  assert.deepEqual([none.score, none.forceInBandShare, none.forceCv, none.contactLostShare], [0, null, null, null]);
  const optional = qualityScore(input({ forceSamplesN: [] }), { requireForceData: false });
  assert.deepEqual(optional.reasons, []);
  assert.ok(Math.abs(optional.score - Math.sqrt(290 / 300)) < 1e-12);

  // Lifted off for 10 % of the sweep: contact lost, and the force swings.
  const lifted = steady(500).map((f, k) => (k % 10 === 0 ? 0 : f));
  assert.deepEqual(qualityScore(input({ forceSamplesN: lifted })).reasons, ['contact-lost', 'unstable-contact']);
  // Sawing between −30 % and +30 %: never in the band.
  const sawing = Array.from({ length: 400 }, (_, k) => (k % 2 === 0 ? 3.5 : 6.5));
  const saw = qualityScore(input({ forceSamplesN: sawing }));
  assert.deepEqual(saw.reasons, ['unstable-contact']);
  assert.equal(saw.forceInBandShare, 0);
  assert.equal(saw.score, 0);
  // Steady but 40 % too hard: stable (low CV) yet off target.
  const hard = qualityScore(input({ forceSamplesN: steady(300, 7) }));
  assert.deepEqual(hard.reasons, ['unstable-contact']);
  assert.ok(hard.forceCv! < 0.1);
  // Everything wrong at once, in the fixed order.
  assert.deepEqual(qualityScore(input({ framesAcquired: 10, forceSamplesN: lifted })).reasons, ['low-coverage', 'contact-lost', 'unstable-contact']);
  // A sensor offset below zero with no contact at all: the CV is undefined, the contact unstable.
  const off = qualityScore(input({ forceSamplesN: [-0.1, -0.2, -0.1] }));
  assert.equal(off.forceCv, null);
  assert.deepEqual(off.reasons, ['contact-lost', 'unstable-contact']);
});

void test('thresholds can be relaxed or tightened', () => {
  assert.deepEqual(qualityScore(input({ framesAcquired: 200 }), { minCoverage: 0.6 }).reasons, []);
  assert.deepEqual(qualityScore(input(), { maxForceCv: 0.01 }).reasons, ['unstable-contact']);
  throwsWith(() => qualityScore(input(), { minCoverage: 1.5 }), 'ECO3D_ERR_BAD_REQUEST', 'minCoverage');
  throwsWith(() => qualityScore(input(), { maxForceCv: Number.NaN }), 'ECO3D_ERR_NOT_FINITE', 'maxForceCv');
});

void test('NaN and infinite inputs: ECO3D_ERR_NOT_FINITE; impossible ones: ECO3D_ERR_BAD_REQUEST', () => {
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    throwsWith(() => qualityScore(input({ framesAcquired: bad })), 'ECO3D_ERR_NOT_FINITE', 'framesAcquired');
    throwsWith(() => qualityScore(input({ frameRateHz: bad })), 'ECO3D_ERR_NOT_FINITE', 'frameRateHz');
    throwsWith(() => qualityScore(input({ sweepDurationMs: bad })), 'ECO3D_ERR_NOT_FINITE', 'sweepDurationMs');
    throwsWith(() => qualityScore(input({ sweep: FAN, sweepDurationMs: bad })), 'ECO3D_ERR_NOT_FINITE', 'sweepDurationMs');
    throwsWith(() => qualityScore(input({ sweep: { ...LINEAR, lengthMm: bad } })), 'ECO3D_ERR_NOT_FINITE', 'lengthMm');
    throwsWith(() => qualityScore(input({ sweep: { ...LINEAR, speedMmPerS: bad } })), 'ECO3D_ERR_NOT_FINITE', 'speedMmPerS');
    throwsWith(() => qualityScore(input({ sweep: { ...LINEAR, targetForceN: bad } })), 'ECO3D_ERR_NOT_FINITE', 'targetForceN');
    throwsWith(() => qualityScore(input({ forceSamplesN: [5, 5, bad, 5] })), 'ECO3D_ERR_NOT_FINITE', 'forceSamplesN[2]');
  }
  throwsWith(() => qualityScore(input({ framesAcquired: -1 })), 'ECO3D_ERR_BAD_REQUEST', 'framesAcquired');
  throwsWith(() => qualityScore(input({ framesAcquired: 2.5 })), 'ECO3D_ERR_BAD_REQUEST', 'framesAcquired');
  throwsWith(() => qualityScore(input({ frameRateHz: 0 })), 'ECO3D_ERR_BAD_REQUEST', 'frameRateHz');
  throwsWith(() => qualityScore(input({ sweep: { ...LINEAR, speedMmPerS: 0 } })), 'ECO3D_ERR_BAD_REQUEST', 'speedMmPerS');
  throwsWith(() => qualityScore(input({ sweep: FAN, sweepDurationMs: 0 })), 'ECO3D_ERR_BAD_REQUEST', 'sweepDurationMs');
});

void test('property: score in [0, 1], diagnostic iff no reason, more frames never score lower', () => {
  const arbForce = fc.array(fc.double({ min: -1, max: 15, noNaN: true }), { maxLength: 60 });
  fc.assert(
    fc.property(fc.nat({ max: 600 }), fc.nat({ max: 600 }), arbForce, fc.boolean(), (a, b, forces, requireForceData) => {
      const lo = qualityScore(input({ framesAcquired: Math.min(a, b), forceSamplesN: forces }), { requireForceData });
      const hi = qualityScore(input({ framesAcquired: Math.max(a, b), forceSamplesN: forces }), { requireForceData });
      for (const q of [lo, hi]) {
        assert.ok(q.score >= 0 && q.score <= 1, String(q.score));
        assert.equal(q.diagnostic, q.reasons.length === 0);
        assert.equal(q.reasons.includes('low-coverage'), q.coverage < 0.8);
      }
      assert.ok(hi.score >= lo.score);
      // The force verdict does not depend on the frames.
      assert.deepEqual(
        hi.reasons.filter((r) => r !== 'low-coverage'),
        lo.reasons.filter((r) => r !== 'low-coverage'),
      );
    }),
  );
});

// Money rules: rounding once half up, largest-remainder splits, refusal of non-integer money.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { throwsWith } from '../protocols/testing.ts';
import { MAX_AMOUNT_CENTS, formatEuro, prorate, ratedCents, requireCents, roundHalfUp, splitByWeights, sumCents } from './money.ts';

void test('roundHalfUp: halves go up (away from zero for credits), the rest to the nearest', () => {
  assert.equal(roundHalfUp(5n, 2n), 3n); // 2.5
  assert.equal(roundHalfUp(7n, 2n), 4n); // 3.5
  assert.equal(roundHalfUp(249n, 100n), 2n); // 2.49
  assert.equal(roundHalfUp(251n, 100n), 3n);
  assert.equal(roundHalfUp(-5n, 2n), -3n); // a credit mirrors its charge
  assert.equal(roundHalfUp(-249n, 100n), -2n);
  assert.equal(roundHalfUp(0n, 7n), 0n);
  assert.equal(roundHalfUp(1n, 3n), 0n);
  assert.equal(roundHalfUp(2n, 3n), 1n);
});

void test('ratedCents rounds the product once: 2499 ¢ × 3 scans × 33.33 %', () => {
  // 2499 × 3 × 3333 / 10000 = 2498.7501 → 2499 (not 833.0667 × 3 = 2499.2 rounded per scan)
  assert.equal(ratedCents('x', [2499, 3, 3333], 10_000), 2499);
  // 1 ¢ × 1 × 5000 bps = 0.5 ¢ → 1 ¢ (half up)
  assert.equal(ratedCents('x', [1, 1, 5000], 10_000), 1);
  assert.equal(ratedCents('x', [1, 1, 4999], 10_000), 0);
  // Products beyond 2^53 stay exact (bigint): 10^12 × 10^4 / 10^4
  assert.equal(ratedCents('x', [MAX_AMOUNT_CENTS, 10_000], 10_000), MAX_AMOUNT_CENTS);
});

void test('prorate: a monthly term × days/daysInMonth, half up; the whole month is unchanged', () => {
  assert.equal(prorate('fee', 100_000, 31, 31), 100_000);
  assert.equal(prorate('fee', 100_000, 15, 31), 48_387); // 48387.09…
  assert.equal(prorate('fee', 100_001, 15, 30), 50_001); // 50000.5 → 50001
  assert.equal(prorate('scans', 45, 15, 30), 23); // 22.5 → 23
});

void test('splitByWeights: largest remainder, ties to the earliest party', () => {
  assert.deepEqual(splitByWeights(100, [1, 1, 1]), [34, 33, 33]); // three equal remainders: first wins
  assert.deepEqual(splitByWeights(101, [1, 1, 1]), [34, 34, 33]);
  assert.deepEqual(splitByWeights(1000, [10, 21]), [323, 677]); // 322.58 / 677.42: first has the larger remainder
  assert.deepEqual(splitByWeights(10, [3, 3, 1]), [4, 4, 2]); // 4.29, 4.29, 1.43: one cent left, to the largest remainder (.43)
  assert.deepEqual(splitByWeights(7, [0, 2, 0, 1]), [0, 5, 0, 2]); // 4.67, 2.33: leftover 1 to the .67
  assert.deepEqual(splitByWeights(-100, [1, 1, 1]), [-34, -33, -33]);
  assert.deepEqual(splitByWeights(0, [5, 6]), [0, 0]);
  assert.deepEqual(splitByWeights(1, [2, 2]), [1, 0]);
  assert.deepEqual(splitByWeights(3, [1, 2, 1, 2]), [1, 1, 0, 1]); // 0.5, 1, 0.5, 1: the leftover goes to the earlier 0.5
});

void test('property: a split sums exactly to the amount, each share within a cent of its exact share, zero weights get zero', () => {
  fc.assert(
    fc.property(fc.integer({ min: -10_000_000, max: 10_000_000 }), fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 12 }), (amount, weights) => {
      fc.pre(weights.some((w) => w > 0));
      const shares = splitByWeights(amount, weights);
      const total = weights.reduce((a, b) => a + b, 0);
      assert.equal(shares.reduce((a, b) => a + b, 0), amount);
      shares.forEach((s, i) => {
        const exact = (amount * weights[i]!) / total;
        assert.ok(Math.abs(s - exact) < 1, `share ${s} vs exact ${exact}`);
        if (weights[i] === 0) assert.equal(s, 0);
      });
      // Equal weights: earlier parties never get less than later ones (ties to the earliest).
      for (let i = 0; i < weights.length; i++) {
        for (let j = i + 1; j < weights.length; j++) {
          if (weights[i] === weights[j]) assert.ok(Math.abs(shares[i]!) >= Math.abs(shares[j]!));
        }
      }
    }),
    { numRuns: 3000 },
  );
});

void test('bad money is refused with a code naming the field', () => {
  throwsWith(() => requireCents('unitPriceCents', 12.5), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', -1), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', '12'), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', MAX_AMOUNT_CENTS + 1), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', Number.NaN), 'ECO3D_ERR_NOT_FINITE', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', Infinity), 'ECO3D_ERR_NOT_FINITE', 'unitPriceCents');
  throwsWith(() => requireCents('unitPriceCents', 2 ** 60), 'ECO3D_ERR_NOT_FINITE', 'unitPriceCents');
  throwsWith(() => ratedCents('line', [1.5, 2], 1), 'ECO3D_ERR_BAD_REQUEST', 'line');
  throwsWith(() => splitByWeights(100.5, [1]), 'ECO3D_ERR_BAD_REQUEST', 'amountCents');
  throwsWith(() => splitByWeights(100, [0, 0]), 'ECO3D_ERR_BAD_REQUEST', 'weights');
  throwsWith(() => splitByWeights(100, [1, -1]), 'ECO3D_ERR_BAD_REQUEST', 'weights[1]');
  throwsWith(() => sumCents('total', [MAX_AMOUNT_CENTS, 1]), 'ECO3D_ERR_BAD_REQUEST', 'total');
});

void test('formatEuro prints cents as euro without floats', () => {
  assert.equal(formatEuro(123_456), '1234.56');
  assert.equal(formatEuro(-5), '-0.05');
  assert.equal(formatEuro(0), '0.00');
});

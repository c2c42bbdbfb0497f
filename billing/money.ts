// Money: integer euro cents, one rounding rule, one split rule (billing/PRICING.md, "Money rules").
//
// Amounts are JavaScript numbers that must be safe integers, not bigint: they go into JSON, zod
// schemas and PostgreSQL bigint columns unchanged, and an invoice serialises byte-identically
// with plain JSON.stringify. The caps below keep every amount and every sum of amounts far below
// 2^53, so additions stay exact; products and quotients (price × quantity × share) are computed
// in bigint, so nothing is ever rounded except where the rules say so: once per line, half up.
import { Eco3dError } from '../protocols/errors.ts';

/** Integer euro cents. */
export type Cents = number;

/** Largest amount in one line or total: 10^12 cents (10 billion euro). Beyond that, a bug. */
export const MAX_AMOUNT_CENTS = 1_000_000_000_000;
/** Largest quantity (scans, events) in one contract term or line. */
export const MAX_QUANTITY = 100_000_000;
/** Basis points: 10,000 = 100 %. */
export const BPS_DENOMINATOR = 10_000;

/**
 * `value` as an integer in [min, max], or an Eco3dError naming `field`: NOT_FINITE for NaN,
 * ±Infinity and integers beyond 2^53 (they cannot be held exactly), BAD_REQUEST for anything
 * else (a fraction, a string, a negative or absurd amount).
 */
export function requireInteger(field: string, value: unknown, min: number, max: number): number {
  if (typeof value === 'bigint') {
    if (value < BigInt(Number.MIN_SAFE_INTEGER) || value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${field} is out of the safe integer range`, { details: { field } });
    }
    return requireInteger(field, Number(value), min, max);
  }
  if (typeof value !== 'number') {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field} must be an integer, got ${typeof value}`, { details: { field } });
  }
  if (!Number.isFinite(value) || (Number.isInteger(value) && !Number.isSafeInteger(value))) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${field} is ${value}: not a finite safe integer`, { details: { field } });
  }
  if (!Number.isInteger(value)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field} must be an integer number of cents or units, got ${value}`, { details: { field } });
  }
  if (value < min || value > max) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field} is ${value}: outside [${min}, ${max}]`, { details: { field } });
  }
  return value;
}

/** A non-negative amount of cents no larger than MAX_AMOUNT_CENTS. */
export const requireCents = (field: string, value: unknown): Cents => requireInteger(field, value, 0, MAX_AMOUNT_CENTS);
/** A signed amount of cents (credits are negative) within ±MAX_AMOUNT_CENTS. */
export const requireSignedCents = (field: string, value: unknown): Cents => requireInteger(field, value, -MAX_AMOUNT_CENTS, MAX_AMOUNT_CENTS);
export const requireQuantity = (field: string, value: unknown): number => requireInteger(field, value, 0, MAX_QUANTITY);
export const requireBps = (field: string, value: unknown): number => requireInteger(field, value, 0, BPS_DENOMINATOR);

/**
 * numerator / denominator rounded half up, once. For a negative quotient "half up" is applied to
 * the magnitude (half away from zero), so a credit is the exact negation of the charge it
 * mirrors: −2.5 cents → −3, as +2.5 → +3.
 */
export function roundHalfUp(numerator: bigint, denominator: bigint): bigint {
  if (denominator === 0n) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'division by zero in a money computation');
  const negative = numerator < 0n !== denominator < 0n;
  const n = numerator < 0n ? -numerator : numerator;
  const d = denominator < 0n ? -denominator : denominator;
  const q = (2n * n + d) / (2n * d);
  return negative ? -q : q;
}

/** A bigint result as Cents, refusing anything beyond ±MAX_AMOUNT_CENTS. */
export function toCents(field: string, value: bigint): Cents {
  if (value > BigInt(MAX_AMOUNT_CENTS) || value < -BigInt(MAX_AMOUNT_CENTS)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field} would be ${value} cents: beyond ±${MAX_AMOUNT_CENTS}`, { details: { field } });
  }
  return Number(value);
}

/**
 * (∏ factors) / divisor in cents, rounded once half up. The usual line:
 * `ratedCents('line', [unitPriceCents, quantity, shareBps], BPS_DENOMINATOR)`.
 */
export function ratedCents(field: string, factors: readonly number[], divisor: number): Cents {
  let product = 1n;
  for (const [i, f] of factors.entries()) product *= BigInt(requireInteger(`${field}.factor[${i}]`, f, -MAX_AMOUNT_CENTS, MAX_AMOUNT_CENTS));
  return toCents(field, roundHalfUp(product, BigInt(requireInteger(`${field}.divisor`, divisor, 1, MAX_AMOUNT_CENTS))));
}

/** value × part / whole rounded once half up: the proration of a monthly term by days. */
export function prorate(field: string, value: number, part: number, whole: number): number {
  if (part === whole) return value;
  return toCents(field, roundHalfUp(BigInt(value) * BigInt(part), BigInt(whole)));
}

/** Exact sum of amounts; refuses a total beyond ±MAX_AMOUNT_CENTS. */
export function sumCents(field: string, amounts: readonly Cents[]): Cents {
  let total = 0n;
  for (const a of amounts) total += BigInt(a);
  return toCents(field, total);
}

/**
 * Splits `amountCents` over parties in proportion to `weights` (for example the days each
 * clinic owns) by the largest-remainder method: each party gets the floor of its exact share;
 * the cents left over go one each to the parties with the largest remainders, a tie going to
 * the earliest party (lowest index). The shares always sum to the amount exactly. A negative
 * amount is split as its magnitude and negated, so a reversal mirrors its original.
 * Parties with weight 0 get 0; at least one weight must be positive.
 */
export function splitByWeights(amountCents: Cents, weights: readonly number[]): Cents[] {
  const amount = requireSignedCents('amountCents', amountCents);
  if (weights.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'weights: a split needs at least one party', { details: { field: 'weights' } });
  const w = weights.map((x, i) => BigInt(requireInteger(`weights[${i}]`, x, 0, MAX_AMOUNT_CENTS)));
  const total = w.reduce((a, b) => a + b, 0n);
  if (total === 0n) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'weights: at least one weight must be positive', { details: { field: 'weights' } });
  const magnitude = BigInt(Math.abs(amount));
  const shares = w.map((wi) => (magnitude * wi) / total);
  const remainders = w.map((wi, i) => ({ i, r: (magnitude * wi) % total }));
  let left = magnitude - shares.reduce((a, b) => a + b, 0n);
  // Largest remainder first; equal remainders keep party order (earliest wins the tie).
  remainders.sort((a, b) => (a.r === b.r ? a.i - b.i : a.r > b.r ? -1 : 1));
  for (const { i } of remainders) {
    if (left === 0n) break;
    shares[i] = shares[i]! + 1n;
    left -= 1n;
  }
  return shares.map((s) => (amount < 0 ? negateCents(Number(s)) : Number(s)));
}

/** −x without a −0 (which would survive deepEqual checks and confuse a reader of the JSON). */
export const negateCents = (x: Cents): Cents => (x === 0 ? 0 : -x);

/**
 * 123456 → "1234.56", −5 → "-0.05": for explanations and documents, never for arithmetic. Cut
 * from the integer's digits (no division), so it is exact for every safe integer.
 */
export function formatEuro(cents: Cents): string {
  if (!Number.isSafeInteger(cents)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `an amount must be a safe integer number of cents, got ${cents}`);
  const digits = String(Math.abs(cents)).padStart(3, '0');
  return `${cents < 0 ? '-' : ''}${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

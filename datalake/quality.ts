// The quality gate's score of an acquisition: does the sweep's image data cover what was planned,
// and was the probe held on the skin with a steady force? Non-diagnostic scans stay out of the
// lake, with machine-readable reasons so that the usable fraction (and why scans fail) is known.
//
// Why these choices:
// - Coverage = frames acquired / frames expected. Expected = sweep duration × frame rate. A
//   linear sweep's duration comes from its plan, lengthMm / speedMmPerS (the controller's end
//   taper adds about speed / (2 · endDecel) ≈ 0.1 s at 8 mm/s, a few frames: negligible, and
//   coverage is capped at 1 in the score). The plan says what should have been covered; a
//   measured duration cannot say more, and one measured from the frames themselves (first to
//   last timestamp) would make coverage ≈ 1 whatever was lost. So `sweepDurationMs` is used
//   only for a fan, whose SweepSummary records no speed (controller/trajectory.ts
//   sweepSummary() writes speedMmPerS 0 for a fan and keeps no angular speed): pass the
//   scanning time from the acquisition's transitions (reach-start → finish, pauses excluded).
// - Force stability = the share of samples within ±25 % of targetForceN. The controller's own
//   on-target band is ±1 N of 5 N (±20 %); the gate judges images, not the controller, and a
//   little more slack than the controller's band still gives comparable tissue compression.
// - Defaults: coverage ≥ 0.8 (missing a fifth of the planned frames leaves gaps of several
//   millimetres in a reconstructed volume at 0.5 mm spacing); in-band share ≥ 0.7 (most of the
//   sweep at the planned compression); coefficient of variation ≤ 0.2 (steady ±10 % ripple
//   passes, a sawing probe does not); contact lost (below 20 % of target: an air gap, a black
//   image) on at most 5 % of samples; force data required (an unverified contact is not
//   assumed good).
// - Score = √(coverage term × force term), in [0, 1]: a geometric mean, so that a bad component
//   pulls the score down and a zero in either makes it zero. With no force data the force term
//   is 0 when force data is required, 1 otherwise. `diagnostic` comes from the thresholds, not
//   from the score: the score ranks scans in the catalog, the reasons say what failed.
import { Eco3dError } from '../protocols/errors.ts';
import type { SweepSummary } from '../protocols/events.ts';

export interface QualityInput {
  readonly framesAcquired: number;
  readonly sweep: SweepSummary;
  readonly frameRateHz: number;
  /** Contact force during the sweep, newtons; may be empty. */
  readonly forceSamplesN: readonly number[];
  /**
   * Scanning time (reach-start → finish, pauses excluded). Required for a fan sweep; a linear
   * sweep's expected frames come from its plan and this is not used (see the header).
   */
  readonly sweepDurationMs?: number;
}

export interface QualityThresholds {
  /** Minimum frames acquired / frames expected. */
  readonly minCoverage: number;
  /** Half-width of the force band around targetForceN, as a fraction of it. */
  readonly forceBandFraction: number;
  /** Minimum share of force samples within the band. */
  readonly minForceInBandShare: number;
  /** Maximum coefficient of variation (std / mean) of the force samples. */
  readonly maxForceCv: number;
  /** A sample below this fraction of targetForceN counts as contact lost. */
  readonly contactLostFraction: number;
  /** Maximum share of samples with contact lost. */
  readonly maxContactLostShare: number;
  /** No force samples makes the scan non-diagnostic. */
  readonly requireForceData: boolean;
}

export const DEFAULT_QUALITY_THRESHOLDS: QualityThresholds = {
  minCoverage: 0.8,
  forceBandFraction: 0.25,
  minForceInBandShare: 0.7,
  maxForceCv: 0.2,
  contactLostFraction: 0.2,
  maxContactLostShare: 0.05,
  requireForceData: true,
};

/** Stable, machine-readable; the order is fixed (coverage first). */
export type QualityReason = 'low-coverage' | 'no-force-data' | 'contact-lost' | 'unstable-contact';

export interface QualityAssessment {
  /** [0, 1]; see the header. */
  readonly score: number;
  readonly diagnostic: boolean;
  /** Empty when diagnostic. */
  readonly reasons: QualityReason[];
  readonly framesExpected: number;
  /** frames acquired / frames expected, not capped (above 1: a slower sweep than planned). */
  readonly coverage: number;
  /** null without force samples. */
  readonly forceInBandShare: number | null;
  /** null without force samples, or when their mean is not positive. */
  readonly forceCv: number | null;
  readonly contactLostShare: number | null;
  readonly thresholds: QualityThresholds;
}

function notFinite(what: string, v: unknown): Eco3dError {
  return new Eco3dError('ECO3D_ERR_NOT_FINITE', `quality: ${what} is ${String(v)}`);
}

function badRequest(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', `quality: ${message}`);
}

/** A finite number, else ECO3D_ERR_NOT_FINITE (a non-number is a bad request). */
function num(what: string, v: unknown): number {
  if (typeof v !== 'number') throw badRequest(`${what} must be a number, got ${typeof v}`);
  if (!Number.isFinite(v)) throw notFinite(what, v);
  return v;
}

function positive(what: string, v: unknown): number {
  const n = num(what, v);
  if (n <= 0) throw badRequest(`${what} must be positive, got ${n}`);
  return n;
}

function fraction(what: string, v: unknown): number {
  const n = num(what, v);
  if (n < 0 || n > 1) throw badRequest(`${what} must be within [0, 1], got ${n}`);
  return n;
}

function resolveThresholds(t: Partial<QualityThresholds> | undefined): QualityThresholds {
  const r = { ...DEFAULT_QUALITY_THRESHOLDS, ...t };
  fraction('thresholds.minCoverage', r.minCoverage);
  fraction('thresholds.forceBandFraction', r.forceBandFraction);
  fraction('thresholds.minForceInBandShare', r.minForceInBandShare);
  if (num('thresholds.maxForceCv', r.maxForceCv) < 0) throw badRequest('thresholds.maxForceCv must not be negative');
  fraction('thresholds.contactLostFraction', r.contactLostFraction);
  fraction('thresholds.maxContactLostShare', r.maxContactLostShare);
  if (typeof r.requireForceData !== 'boolean') throw badRequest('thresholds.requireForceData must be a boolean');
  return r;
}

/** Frames the sweep should have produced at `frameRateHz` (sweepDurationMs: fan sweeps only). */
export function expectedFrames(sweep: SweepSummary, frameRateHz: number, sweepDurationMs?: number): number {
  const rate = positive('frameRateHz', frameRateHz);
  switch (sweep.kind) {
    case 'linear':
      if (sweepDurationMs !== undefined) num('sweepDurationMs', sweepDurationMs); // NaN is still refused
      return (positive('sweep.lengthMm', sweep.lengthMm) / positive('sweep.speedMmPerS', sweep.speedMmPerS)) * rate;
    case 'fan':
      if (sweepDurationMs === undefined) throw badRequest('a fan sweep needs sweepDurationMs (its SweepSummary records no angular speed)');
      return (positive('sweepDurationMs', sweepDurationMs) / 1000) * rate;
    default:
      throw badRequest(`unknown sweep kind ${JSON.stringify((sweep as { kind: unknown }).kind)}`);
  }
}

/**
 * Scores an acquisition for the quality gate. Throws ECO3D_ERR_NOT_FINITE for a NaN or infinite
 * input and ECO3D_ERR_BAD_REQUEST for an impossible one (negative frames, zero frame rate, a fan
 * without sweepDurationMs).
 */
export function qualityScore(i: QualityInput, thresholds?: Partial<QualityThresholds>): QualityAssessment {
  const t = resolveThresholds(thresholds);
  const frames = num('framesAcquired', i.framesAcquired);
  if (!Number.isSafeInteger(frames) || frames < 0) throw badRequest(`framesAcquired must be a non-negative integer, got ${frames}`);
  const target = positive('sweep.targetForceN', i.sweep.targetForceN);
  const framesExpected = expectedFrames(i.sweep, i.frameRateHz, i.sweepDurationMs);
  const coverage = frames / framesExpected;

  const samples = i.forceSamplesN;
  if (!Array.isArray(samples)) throw badRequest('forceSamplesN must be an array');
  let inBand = 0;
  let lost = 0;
  let sum = 0;
  const band = t.forceBandFraction * target;
  const lostBelow = t.contactLostFraction * target;
  for (let k = 0; k < samples.length; k++) {
    const f = num(`forceSamplesN[${k}]`, samples[k]);
    if (Math.abs(f - target) <= band) inBand++;
    if (f < lostBelow) lost++;
    sum += f;
  }
  const n = samples.length;
  let forceInBandShare: number | null = null;
  let forceCv: number | null = null;
  let contactLostShare: number | null = null;
  if (n > 0) {
    forceInBandShare = inBand / n;
    contactLostShare = lost / n;
    const mean = sum / n;
    let ss = 0;
    for (const f of samples) ss += (f - mean) ** 2;
    forceCv = mean > 0 ? Math.sqrt(ss / n) / mean : null;
  }

  const reasons: QualityReason[] = [];
  if (coverage < t.minCoverage) reasons.push('low-coverage');
  if (n === 0) {
    if (t.requireForceData) reasons.push('no-force-data');
  } else {
    if (contactLostShare! > t.maxContactLostShare) reasons.push('contact-lost');
    if (forceInBandShare! < t.minForceInBandShare || forceCv === null || forceCv > t.maxForceCv) reasons.push('unstable-contact');
  }
  const coverageTerm = Math.min(1, coverage);
  const forceTerm = forceInBandShare ?? (t.requireForceData ? 0 : 1);
  return {
    score: Math.sqrt(coverageTerm * forceTerm),
    diagnostic: reasons.length === 0,
    reasons,
    framesExpected,
    coverage,
    forceInBandShare,
    forceCv,
    contactLostShare,
    thresholds: t,
  };
}

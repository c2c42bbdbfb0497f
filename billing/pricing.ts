// Rating: one tenant, one period, its contracts and its usage in, explained invoice lines out.
//
// Pure and deterministic: no clock, no I/O, no locale, no floats. The same input (in any order)
// gives the same lines in the same order, byte for byte once JSON.stringify'd, which is what
// lets a closed period be re-rated from the ledger and compared to the cent with what was issued.
// Each line is rounded once, half up (money.ts); tax is computed on the sum of the rounded lines.
import { Eco3dError } from '../protocols/errors.ts';
import { cmp, type Contract, type ContractInput, ownerOfDay, parseContracts, parseTenantBilling, type PricingModel, type ScanPricing, type TenantBillingInput } from './contracts.ts';
import { BPS_DENOMINATOR, type Cents, formatEuro, negateCents, prorate, ratedCents, sumCents, splitByWeights, MAX_QUANTITY } from './money.ts';
import { dayStartMs, daysOfPeriod, type LocalDate, parsePeriod, type Period, periodBounds, weekdayOf } from './periods.ts';

/** One completed acquisition, as metered (one per idempotency key). */
export interface UsageEvent {
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly acquisitionUid: string;
  readonly occurredAtMs: number;
  /** false for aborted scans and repeat scans marked not billable: rated at nothing. */
  readonly billable: boolean;
}

/** A clinical outcome that earns a bonus under a risk-sharing contract (e.g. `avoided-ct`). */
export interface OutcomeEvent {
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly outcome: string;
  readonly occurredAtMs: number;
}

/** A change of a device's availability, as `store/availability.ts` lists it. */
export interface AvailabilityChange {
  readonly deviceId: string;
  readonly up: boolean;
  readonly atMs: number;
}

/**
 * Usage of a closed period that reached the ledger after its invoice was issued. The closed
 * period is re-rated with and without it; the differences are billed now as adjustments.
 */
export interface LateUsage {
  readonly period: Period;
  /** The usage the issued invoice was rated on. */
  readonly billedUsage: readonly UsageEvent[];
  /** The usage that arrived late (occurred in `period`). */
  readonly lateUsage: readonly UsageEvent[];
  /** Keys of billed events reversed since (ledger corrections): rated as if never billed. */
  readonly reversedKeys?: readonly string[];
}

/**
 * A priced item that is not a scan (a dataset licence, a plugin's use): its amount is fixed when
 * it is recorded, so rating only adds it up. Billed in the period it occurred in.
 */
export interface Charge {
  readonly idempotencyKey: string;
  readonly tenantId: string;
  /** What is sold, e.g. `lake-licence:annual`. */
  readonly item: string;
  readonly description: string;
  readonly amountCents: Cents;
  readonly occurredAtMs: number;
}

export interface RateInput {
  readonly tenant: TenantBillingInput;
  readonly period: Period;
  /** The tenant's contracts (other tenants' are ignored); validated, overlap refused. */
  readonly contracts: readonly ContractInput[];
  /** The period's usage events, in any order. */
  readonly usage: readonly UsageEvent[];
  readonly outcomes?: readonly OutcomeEvent[];
  /**
   * Availability changes of the tenant's devices in the period, preceded by the last change
   * before it when there is one. Before the first known change a device counts as up.
   */
  readonly availability?: readonly AvailabilityChange[];
  readonly late?: readonly LateUsage[];
  /** The period's charges, in any order (their key orders them on the invoice). */
  readonly charges?: readonly Charge[];
}

export type LineRule =
  | 'flat'
  | 'graduated-tier'
  | 'volume-tier'
  | 'lease-fee'
  | 'lease-included'
  | 'lease-overage'
  | 'commitment-true-up'
  | 'risk-budget'
  | 'risk-below-band'
  | 'risk-above-band'
  | 'outcome-bonus'
  | 'sla-credit'
  | 'consortium-fee-share'
  | 'late-usage-adjustment'
  | 'charge'
  | 'tax'
  | 'tax-exempt';

export interface LineExplanation {
  readonly rule: LineRule;
  /** 1-based tier index, for tiered prices. */
  readonly tier?: number;
  /** How many events the line prices. */
  readonly eventCount: number;
  /** Their idempotency keys in billing order, when there are at most MAX_EXPLAINED_KEYS. */
  readonly eventKeys?: readonly string[];
  /** The arithmetic, in cents and units, that a person can redo by hand. */
  readonly formula: string;
}

export interface InvoiceLine {
  /** Stable and unique within the invoice, e.g. `PPS/c1/tier-2`, `TAX`. */
  readonly code: string;
  readonly description: string;
  readonly contractId?: string;
  readonly deviceId?: string;
  /** The consortium clinic the line is attributed to. */
  readonly partyId?: string;
  readonly quantity: number;
  /** Present when amountCents = quantity × unitAmountCents exactly. */
  readonly unitAmountCents?: Cents;
  readonly amountCents: Cents;
  readonly explanation: LineExplanation;
}

export interface Invoice {
  readonly tenantId: string;
  readonly period: Period;
  readonly timeZone: string;
  readonly currency: 'EUR';
  readonly periodStartMs: number;
  readonly periodEndMs: number;
  /** Charges and credits (contract order), then adjustments, then tax. */
  readonly lines: readonly InvoiceLine[];
  readonly usage: { readonly billableEvents: number; readonly nonBillableEvents: number };
  readonly totals: { readonly subtotalCents: Cents; readonly taxCents: Cents; readonly totalCents: Cents };
}

/** Above this many events a line gives the count only (the ledger lists them by contract and period). */
export const MAX_EXPLAINED_KEYS = 100;

const bad = (field: string, message: string, details: Record<string, unknown> = {}): Eco3dError =>
  new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field}: ${message}`, { details: { field, ...details } });

// Not `Array.isArray` inline: it narrows a readonly array to any[].
function requireArray(field: string, v: unknown): void {
  if (!Array.isArray(v)) throw bad(field, 'an array is required');
}

function requireString(field: string, v: unknown, maxLength: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) throw bad(field, `a non-empty string of at most ${maxLength} characters is required`);
  return v;
}

function requireMs(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${field} must be a finite number of milliseconds, got ${String(v)}`, { details: { field } });
  }
  if (!Number.isSafeInteger(v)) throw bad(field, `must be an integer number of milliseconds, got ${v}`);
  return v;
}

interface Window {
  readonly tenantId: string;
  readonly tz: string;
  readonly period: Period;
  readonly startMs: number;
  readonly endMs: number;
}

// Hand-rolled rather than zod: an invoice run parses a million of these (issue 6, benchmarks).
function checkEvent(e: unknown, field: string, w: Window): void {
  if (e === null || typeof e !== 'object') throw bad(field, 'an event object is required');
  const ev = e as Record<string, unknown>;
  const key = requireString(`${field}.idempotencyKey`, ev.idempotencyKey, 512);
  if (requireString(`${field}.tenantId`, ev.tenantId, 128) !== w.tenantId) throw bad(`${field}.tenantId`, `event ${key} belongs to tenant ${String(ev.tenantId)}, not ${w.tenantId}`, { idempotencyKey: key });
  requireString(`${field}.deviceId`, ev.deviceId, 128);
  const at = requireMs(`${field}.occurredAtMs`, ev.occurredAtMs);
  if (at < w.startMs || at >= w.endMs) {
    throw bad(`${field}.occurredAtMs`, `event ${key} at ${new Date(at).toISOString()} is outside period ${w.period} (${w.tz})`, { idempotencyKey: key });
  }
}

function checkUsage(events: readonly UsageEvent[], field: string, w: Window, seen: Set<string>): void {
  requireArray(field, events);
  events.forEach((e, i) => {
    checkEvent(e, `${field}[${i}]`, w);
    requireString(`${field}[${i}].acquisitionUid`, e.acquisitionUid, 128);
    if (typeof e.billable !== 'boolean') throw bad(`${field}[${i}].billable`, 'a boolean is required');
    if (seen.has(e.idempotencyKey)) throw bad(`${field}[${i}].idempotencyKey`, `duplicate event ${e.idempotencyKey}`, { idempotencyKey: e.idempotencyKey });
    seen.add(e.idempotencyKey);
  });
}

/** Billing order: by time, then key. Tiers are filled in this order. */
const byTimeThenKey = (a: { occurredAtMs: number; idempotencyKey: string }, b: { occurredAtMs: number; idempotencyKey: string }): number =>
  a.occurredAtMs - b.occurredAtMs || cmp(a.idempotencyKey, b.idempotencyKey);

interface Keyed {
  readonly idempotencyKey: string;
}

function explain(rule: LineRule, events: readonly Keyed[], formula: string, tier?: number): LineExplanation {
  return {
    rule,
    ...(tier === undefined ? {} : { tier }),
    eventCount: events.length,
    ...(events.length <= MAX_EXPLAINED_KEYS ? { eventKeys: events.map((e) => e.idempotencyKey) } : {}),
    formula,
  };
}

interface LineDraft {
  code: string;
  description: string;
  partyId?: string;
  quantity: number;
  unitAmountCents?: Cents;
  amountCents: Cents;
  explanation: LineExplanation;
}

function finishLine(d: LineDraft, c: Contract | undefined): InvoiceLine {
  return {
    code: d.code,
    description: d.description,
    ...(c === undefined ? {} : { contractId: c.id, deviceId: c.deviceId }),
    ...(d.partyId === undefined ? {} : { partyId: d.partyId }),
    quantity: d.quantity,
    ...(d.unitAmountCents === undefined ? {} : { unitAmountCents: d.unitAmountCents }),
    amountCents: d.amountCents,
    explanation: d.explanation,
  };
}

const times = (field: string, q: number, unit: Cents): Cents => ratedCents(field, [unit, q], 1);

/** The amount of `n` scans under a scan pricing (no lines): the true-up needs it. */
export function scanPricingAmount(pricing: ScanPricing, n: number): Cents {
  switch (pricing.scheme) {
    case 'flat':
      return times('amount', n, pricing.unitPriceCents);
    case 'graduated': {
      let total = 0;
      let below = 0;
      for (const t of pricing.tiers) {
        const q = Math.max(0, Math.min(n, t.upTo ?? MAX_QUANTITY) - below);
        total += times('amount', q, t.unitPriceCents);
        below = t.upTo ?? MAX_QUANTITY;
      }
      return total;
    }
    case 'volume': {
      const t = volumeTier(pricing.tiers, n);
      return times('amount', n, t.tier.unitPriceCents);
    }
  }
}

function volumeTier(tiers: readonly { upTo: number | null; unitPriceCents: Cents }[], n: number): { tier: { upTo: number | null; unitPriceCents: Cents }; index: number } {
  const index = tiers.findIndex((t) => t.upTo === null || n <= t.upTo);
  return { tier: tiers[index]!, index };
}

/** Lines pricing `events` (in billing order) under `pricing`; none when there are no events. */
function scanLines(pricing: ScanPricing, events: readonly UsageEvent[], codePrefix: string, what: string, partyId?: string): LineDraft[] {
  const n = events.length;
  if (n === 0) return [];
  const party = partyId === undefined ? {} : { partyId };
  switch (pricing.scheme) {
    case 'flat': {
      const p = pricing.unitPriceCents;
      return [{ code: `${codePrefix}/flat`, description: `${what}: ${n} scans at ${formatEuro(p)} EUR`, ...party, quantity: n, unitAmountCents: p, amountCents: times(codePrefix, n, p), explanation: explain('flat', events, `${n} × ${p} = ${n * p}`) }];
    }
    case 'graduated': {
      const lines: LineDraft[] = [];
      let below = 0;
      pricing.tiers.forEach((t, i) => {
        const top = t.upTo ?? MAX_QUANTITY;
        const slice = events.slice(below, Math.min(n, top));
        if (slice.length > 0) {
          const p = t.unitPriceCents;
          const range = t.upTo === null ? `${below + 1}+` : `${below + 1}–${t.upTo}`;
          lines.push({
            code: `${codePrefix}/tier-${i + 1}`,
            description: `${what}: scans ${range} (graduated tier ${i + 1}), ${slice.length} at ${formatEuro(p)} EUR`,
            ...party,
            quantity: slice.length,
            unitAmountCents: p,
            amountCents: times(codePrefix, slice.length, p),
            explanation: explain('graduated-tier', slice, `${slice.length} × ${p} = ${slice.length * p}`, i + 1),
          });
        }
        below = top;
      });
      return lines;
    }
    case 'volume': {
      const { tier, index } = volumeTier(pricing.tiers, n);
      const p = tier.unitPriceCents;
      return [
        {
          code: `${codePrefix}/volume`,
          description: `${what}: ${n} scans, all at volume tier ${index + 1} (${formatEuro(p)} EUR)`,
          ...party,
          quantity: n,
          unitAmountCents: p,
          amountCents: times(codePrefix, n, p),
          explanation: explain('volume-tier', events, `${n} × ${p} = ${n * p}`, index + 1),
        },
      ];
    }
  }
}

interface ContractScope {
  readonly contract: Contract;
  /** The period's days the contract covers, in order. */
  readonly days: readonly LocalDate[];
  readonly daysInPeriod: number;
  /** [startMs, endMs) of the covered days. */
  readonly startMs: number;
  readonly endMs: number;
  readonly usage: UsageEvent[];
  /** The local date of each usage event. */
  readonly dayOfUsage: Map<UsageEvent, LocalDate>;
  readonly outcomes: OutcomeEvent[];
}

function rateContract(s: ContractScope, availability: readonly AvailabilityChange[]): LineDraft[] {
  const c = s.contract;
  const m: PricingModel = c.model;
  const covered = s.days.length;
  const whole = s.daysInPeriod;
  const prorata = covered === whole ? '' : ` × ${covered}/${whole} days`;
  const dev = `device ${c.deviceId}`;
  switch (m.kind) {
    case 'pay-per-scan':
      return scanLines(m.pricing, s.usage, `PPS/${c.id}`, `Scans on ${dev}`);
    case 'lease': {
      const fee = prorate('lease fee', m.monthlyFeeCents, covered, whole);
      const included = prorate('included scans', m.includedScans, covered, whole);
      const n = s.usage.length;
      const lines: LineDraft[] = [
        {
          code: `LEASE/${c.id}/fee`,
          description: `Monthly lease of ${dev}${covered === whole ? '' : ` (${covered} of ${whole} days)`}`,
          quantity: 1,
          unitAmountCents: fee,
          amountCents: fee,
          explanation: explain('lease-fee', [], `${m.monthlyFeeCents}${prorata} = ${fee}`),
        },
      ];
      if (n > 0) {
        const inc = s.usage.slice(0, Math.min(n, included));
        lines.push({
          code: `LEASE/${c.id}/included`,
          description: `Scans on ${dev} included in the lease: ${inc.length} of ${included}`,
          quantity: inc.length,
          unitAmountCents: 0,
          amountCents: 0,
          explanation: explain('lease-included', inc, `${inc.length} × 0 = 0 (included ${m.includedScans}${prorata} = ${included})`),
        });
      }
      const over = s.usage.slice(included);
      if (over.length > 0) {
        const p = m.overageUnitPriceCents;
        lines.push({
          code: `LEASE/${c.id}/overage`,
          description: `Scans on ${dev} beyond the ${included} included: ${over.length} at ${formatEuro(p)} EUR`,
          quantity: over.length,
          unitAmountCents: p,
          amountCents: times('overage', over.length, p),
          explanation: explain('lease-overage', over, `(${n} − ${included}) × ${p} = ${over.length * p}`),
        });
      }
      return lines;
    }
    case 'commitment': {
      const lines = scanLines(m.pricing, s.usage, `COMMIT/${c.id}`, `Scans on ${dev}`);
      const minimum = prorate('minimum scans', m.minimumScans, covered, whole);
      const n = s.usage.length;
      if (n < minimum) {
        const owed = scanPricingAmount(m.pricing, minimum);
        const paid = scanPricingAmount(m.pricing, n);
        const trueUp = Math.max(0, owed - paid);
        if (trueUp > 0) {
          lines.push({
            code: `COMMIT/${c.id}/true-up`,
            description: `Minimum volume true-up on ${dev}: ${n} scans of the ${minimum} committed`,
            quantity: minimum - n,
            amountCents: trueUp,
            explanation: explain('commitment-true-up', [], `price(${minimum}) − price(${n}) = ${owed} − ${paid} = ${trueUp} (minimum ${m.minimumScans}${prorata} = ${minimum})`),
          });
        }
      }
      return lines;
    }
    case 'risk-sharing':
      return riskSharingLines(c, m, s, availability);
    case 'consortium':
      return consortiumLines(c, m, s);
  }
}

function riskSharingLines(c: Contract, m: Extract<PricingModel, { kind: 'risk-sharing' }>, s: ContractScope, availability: readonly AvailabilityChange[]): LineDraft[] {
  const covered = s.days.length;
  const whole = s.daysInPeriod;
  const prorata = covered === whole ? '' : ` × ${covered}/${whole} days`;
  const forecast = prorate('forecast', m.forecastScans, covered, whole);
  const band = prorate('band', m.bandScans, covered, whole);
  const low = forecast - band;
  const high = forecast + band;
  const p = m.unitPriceCents;
  const n = s.usage.length;
  const dev = `device ${c.deviceId}`;
  const budget = times('budget', forecast, p);
  const lines: LineDraft[] = [
    {
      code: `RISK/${c.id}/budget`,
      description: `Risk-sharing budget for ${dev}: forecast ${forecast} scans at ${formatEuro(p)} EUR (corridor ${low}–${high}, actual ${n})`,
      quantity: forecast,
      unitAmountCents: p,
      amountCents: budget,
      explanation: explain('risk-budget', s.usage, `${forecast} × ${p} = ${budget}${prorata === '' ? '' : ` (forecast ${m.forecastScans}${prorata} = ${forecast}, band ${m.bandScans}${prorata} = ${band})`}`),
    },
  ];
  if (n < low) {
    const q = low - n;
    const credit = negateCents(ratedCents('below band', [p, q, m.shareBelowBps], BPS_DENOMINATOR));
    lines.push({
      code: `RISK/${c.id}/below-band`,
      description: `Volume below the corridor on ${dev}: ${q} scans short of ${low}, ${m.shareBelowBps / 100}% of their price credited`,
      quantity: q,
      amountCents: credit,
      explanation: explain('risk-below-band', [], `−(${p} × (${low} − ${n}) × ${m.shareBelowBps} / 10000) = ${credit}`),
    });
  } else if (n > high) {
    const over = s.usage.slice(high);
    const q = over.length;
    const charge = ratedCents('above band', [p, q, m.shareAboveBps], BPS_DENOMINATOR);
    lines.push({
      code: `RISK/${c.id}/above-band`,
      description: `Volume above the corridor on ${dev}: ${q} scans beyond ${high}, ${m.shareAboveBps / 100}% of their price`,
      quantity: q,
      amountCents: charge,
      explanation: explain('risk-above-band', over, `${p} × (${n} − ${high}) × ${m.shareAboveBps} / 10000 = ${charge}`),
    });
  }
  for (const b of m.outcomeBonuses) {
    const evs = s.outcomes.filter((o) => o.outcome === b.outcome);
    if (evs.length === 0) continue;
    lines.push({
      code: `RISK/${c.id}/outcome/${b.outcome}`,
      description: `Outcome bonus on ${dev}: ${evs.length} × ${b.outcome} at ${formatEuro(b.bonusCents)} EUR`,
      quantity: evs.length,
      unitAmountCents: b.bonusCents,
      amountCents: times('bonus', evs.length, b.bonusCents),
      explanation: explain('outcome-bonus', evs, `${evs.length} × ${b.bonusCents} = ${evs.length * b.bonusCents}`),
    });
  }
  if (m.slaCredits.length > 0) {
    const { upMs, totalMs } = uptime(availability, s.startMs, s.endMs);
    // Exact comparison, no rounded percentage: up/total < below/10000.
    const breached = m.slaCredits.filter((t) => BigInt(upMs) * 10_000n < BigInt(t.belowBps) * BigInt(totalMs));
    if (breached.length > 0) {
      const creditBps = Math.max(...breached.map((t) => t.creditBps));
      const threshold = Math.min(...breached.filter((t) => t.creditBps === creditBps).map((t) => t.belowBps));
      const credit = negateCents(ratedCents('sla credit', [budget, creditBps], BPS_DENOMINATOR));
      lines.push({
        code: `RISK/${c.id}/sla-credit`,
        description: `Uptime SLA credit on ${dev}: availability below ${threshold / 100}%, ${creditBps / 100}% of the budget`,
        quantity: 1,
        amountCents: credit,
        explanation: explain('sla-credit', [], `up ${upMs} ms of ${totalMs} ms < ${threshold}/10000; −(${budget} × ${creditBps} / 10000) = ${credit}`),
      });
    }
  }
  return lines;
}

/**
 * Milliseconds up within [startMs, endMs). Changes at the same instant: a down sorts last, so
 * the device counts as down from then (the tenant's benefit of the doubt). Before the first
 * known change the device is up.
 */
export function uptime(changes: readonly AvailabilityChange[], startMs: number, endMs: number): { upMs: number; totalMs: number } {
  const sorted = [...changes].sort((a, b) => a.atMs - b.atMs || Number(b.up) - Number(a.up));
  let up = true;
  let cursor = startMs;
  let upMs = 0;
  for (const ch of sorted) {
    const at = Math.min(Math.max(ch.atMs, startMs), endMs);
    if (at > cursor) {
      if (up) upMs += at - cursor;
      cursor = at;
    }
    up = ch.up;
  }
  if (up && endMs > cursor) upMs += endMs - cursor;
  return { upMs, totalMs: endMs - startMs };
}

function consortiumLines(c: Contract, m: Extract<PricingModel, { kind: 'consortium' }>, s: ContractScope): LineDraft[] {
  const covered = s.days.length;
  const whole = s.daysInPeriod;
  const prorata = covered === whole ? '' : ` × ${covered}/${whole} days`;
  const ownerOf = new Map(s.days.map((d) => [d, ownerOfDay(m, d, weekdayOf(d))]));
  const daysOwned = m.parties.map((p) => s.days.filter((d) => ownerOf.get(d) === p.partyId).length);
  const fee = prorate('consortium fee', m.monthlyFeeCents, covered, whole);
  const shares = splitByWeights(fee, daysOwned);
  const weights = m.parties.map((p, i) => `${p.partyId}:${daysOwned[i]}`).join(', ');
  const lines: LineDraft[] = [];
  m.parties.forEach((party, i) => {
    const days = daysOwned[i]!;
    if (days === 0) return;
    lines.push({
      code: `CONS/${c.id}/${party.partyId}/fee`,
      description: `${party.name}: share of the monthly fee of device ${c.deviceId}, ${days} of ${covered} days`,
      partyId: party.partyId,
      quantity: days,
      amountCents: shares[i]!,
      explanation: explain('consortium-fee-share', [], `${m.monthlyFeeCents}${prorata} = ${fee}; split by days (${weights}), largest remainder → ${shares[i]}`),
    });
  });
  m.parties.forEach((party) => {
    const evs = s.usage.filter((e) => ownerOf.get(s.dayOfUsage.get(e)!) === party.partyId);
    lines.push(...scanLines(m.pricing, evs, `CONS/${c.id}/${party.partyId}`, `${party.name}: scans on device ${c.deviceId} on its days`, party.partyId));
  });
  return lines;
}

interface Rated {
  readonly lines: InvoiceLine[];
  readonly billable: number;
  readonly nonBillable: number;
  /** Which contract priced each billable event (to explain adjustments). */
  readonly contractOfEvent: Map<string, Contract>;
}

function ratePeriod(
  tenantId: string,
  tz: string,
  period: Period,
  contracts: readonly Contract[],
  usage: readonly UsageEvent[],
  outcomes: readonly OutcomeEvent[],
  availability: readonly AvailabilityChange[],
  field: string,
): Rated {
  const { startMs, endMs } = periodBounds(period, tz);
  const w: Window = { tenantId, tz, period, startMs, endMs };
  const days = daysOfPeriod(period);
  // Day of an instant by binary search over the period's day starts: Temporal per event would
  // be most of an invoice run's time (a million events, issue 6 benchmarks).
  const dayStarts = days.map((d) => dayStartMs(d, tz));
  const mine = contracts.filter((c) => c.tenantId === tenantId);
  const scopes: ContractScope[] = mine
    .map((contract) => {
      const cdays = days.filter((d) => d >= contract.validFrom && (contract.validTo === null || d <= contract.validTo));
      const first = cdays[0];
      const last = cdays[cdays.length - 1];
      return {
        contract,
        days: cdays,
        daysInPeriod: days.length,
        startMs: first === undefined ? 0 : dayStarts[days.indexOf(first)]!,
        endMs: last === undefined ? 0 : (dayStarts[days.indexOf(last) + 1] ?? endMs),
        usage: [] as UsageEvent[],
        dayOfUsage: new Map<UsageEvent, LocalDate>(),
        outcomes: [] as OutcomeEvent[],
      };
    })
    .filter((s) => s.days.length > 0);
  const byDevice = new Map<string, ContractScope[]>();
  for (const s of scopes) byDevice.set(s.contract.deviceId, [...(byDevice.get(s.contract.deviceId) ?? []), s]);
  const find = (deviceId: string, day: LocalDate): ContractScope | undefined =>
    byDevice.get(deviceId)?.find((s) => day >= s.contract.validFrom && (s.contract.validTo === null || day <= s.contract.validTo));

  const localDay = (ms: number): LocalDate => {
    let lo = 0;
    let hi = dayStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (dayStarts[mid]! <= ms) lo = mid;
      else hi = mid - 1;
    }
    return days[lo]!;
  };
  let billable = 0;
  let nonBillable = 0;
  const contractOfEvent = new Map<string, Contract>();
  usage.forEach((e, i) => {
    const day = localDay(e.occurredAtMs);
    if (!e.billable) {
      nonBillable++;
      return;
    }
    const s = find(e.deviceId, day);
    if (s === undefined) throw bad(`${field}[${i}]`, `no contract of tenant ${tenantId} covers device ${e.deviceId} on ${day} (event ${e.idempotencyKey})`, { idempotencyKey: e.idempotencyKey });
    s.dayOfUsage.set(e, day);
    s.usage.push(e);
    contractOfEvent.set(e.idempotencyKey, s.contract);
    billable++;
  });
  outcomes.forEach((o, i) => {
    checkEvent(o, `outcomes[${i}]`, w);
    requireString(`outcomes[${i}].outcome`, o.outcome, 128);
    const s = find(o.deviceId, localDay(o.occurredAtMs));
    // An outcome no contract pays a bonus for is not billed (and not an error: the controller reports them all).
    if (s !== undefined) s.outcomes.push(o);
  });
  const lines: InvoiceLine[] = [];
  for (const s of scopes) {
    s.usage.sort(byTimeThenKey);
    s.outcomes.sort(byTimeThenKey);
    const dev = availability.filter((a) => a.deviceId === s.contract.deviceId);
    for (const d of rateContract(s, dev)) lines.push(finishLine(d, s.contract));
  }
  return { lines, billable, nonBillable, contractOfEvent };
}

function lateAdjustments(
  tenantId: string,
  tz: string,
  current: Period,
  contracts: readonly Contract[],
  late: readonly LateUsage[],
): InvoiceLine[] {
  requireArray('late', late);
  const periods = new Set<string>();
  const out: InvoiceLine[] = [];
  const sorted = late.map((l, i) => ({ l, i })).sort((a, b) => cmp(a.l.period, b.l.period));
  for (const { l, i } of sorted) {
    const field = `late[${i}]`;
    parsePeriod(l.period, `${field}.period`);
    if (l.period >= current) throw bad(`${field}.period`, `late usage must belong to a period before ${current}, got ${l.period}`);
    if (periods.has(l.period)) throw bad(`${field}.period`, `period ${l.period} appears twice`);
    periods.add(l.period);
    const { startMs, endMs } = periodBounds(l.period, tz);
    const w: Window = { tenantId, tz, period: l.period, startMs, endMs };
    const seen = new Set<string>();
    checkUsage(l.billedUsage, `${field}.billedUsage`, w, seen);
    checkUsage(l.lateUsage, `${field}.lateUsage`, w, seen);
    const reversed = new Set(l.reversedKeys ?? []);
    requireArray(`${field}.reversedKeys`, l.reversedKeys ?? []);
    for (const k of reversed) {
      if (!l.billedUsage.some((e) => e.idempotencyKey === k)) throw bad(`${field}.reversedKeys`, `${String(k)} is not a billed event of ${l.period}`, { idempotencyKey: k });
    }
    const before = ratePeriod(tenantId, tz, l.period, contracts, l.billedUsage, [], [], `${field}.billedUsage`);
    const kept = l.billedUsage.filter((e) => !reversed.has(e.idempotencyKey));
    const after = ratePeriod(tenantId, tz, l.period, contracts, [...kept, ...l.lateUsage], [], [], `${field}.lateUsage`);
    const was = new Map(before.lines.map((x) => [x.code, x]));
    const contractOf = new Map([...before.contractOfEvent, ...after.contractOfEvent]);
    const lateBillable = [...l.lateUsage.filter((e) => e.billable), ...l.billedUsage.filter((e) => reversed.has(e.idempotencyKey))].sort(byTimeThenKey);
    for (const now of after.lines) {
      const old = was.get(now.code);
      was.delete(now.code);
      pushDelta(out, l.period, old, now, lateBillable, contractOf);
    }
    // Lines that vanished (a true-up now covered by real scans): reversed in full.
    for (const old of was.values()) pushDelta(out, l.period, old, undefined, lateBillable, contractOf);
  }
  return out;
}

function pushDelta(out: InvoiceLine[], period: Period, old: InvoiceLine | undefined, now: InvoiceLine | undefined, lateEvents: readonly UsageEvent[], contractOf: Map<string, Contract>): void {
  const ref = (now ?? old)!;
  const amount = (now?.amountCents ?? 0) - (old?.amountCents ?? 0);
  const quantity = (now?.quantity ?? 0) - (old?.quantity ?? 0);
  if (amount === 0 && quantity === 0) return;
  const evs = lateEvents.filter((e) => contractOf.get(e.idempotencyKey)?.id === ref.contractId);
  out.push({
    code: `ADJ/${period}/${ref.code}`,
    description: `Adjustment for ${period}, late usage or corrections: ${ref.description}`,
    ...(ref.contractId === undefined ? {} : { contractId: ref.contractId }),
    ...(ref.deviceId === undefined ? {} : { deviceId: ref.deviceId }),
    ...(ref.partyId === undefined ? {} : { partyId: ref.partyId }),
    quantity,
    amountCents: amount,
    explanation: explain('late-usage-adjustment', evs, `re-rated ${period} with ${lateEvents.length} late or reversed events: ${now?.amountCents ?? 0} − ${old?.amountCents ?? 0} = ${amount}`),
  });
}

/** One line per charge, in key order (code-point order: no locale). */
function chargeLines(charges: readonly Charge[], w: Window): InvoiceLine[] {
  requireArray('charges', charges);
  const seen = new Set<string>();
  charges.forEach((c, i) => {
    const f = `charges[${i}]`;
    requireString(`${f}.idempotencyKey`, c.idempotencyKey, 512);
    if (seen.has(c.idempotencyKey)) throw bad(`${f}.idempotencyKey`, `duplicate charge ${c.idempotencyKey}`);
    seen.add(c.idempotencyKey);
    if (c.tenantId !== w.tenantId) throw bad(`${f}.tenantId`, `charge of tenant ${c.tenantId} in ${w.tenantId}'s invoice`);
    requireString(`${f}.item`, c.item, 200);
    requireString(`${f}.description`, c.description, 500);
    if (ratedCents(`${f}.amountCents`, [c.amountCents], 1) < 0) throw bad(`${f}.amountCents`, 'a charge is not negative (a credit is a reversal)');
    requireMs(`${f}.occurredAtMs`, c.occurredAtMs);
    if (c.occurredAtMs < w.startMs || c.occurredAtMs >= w.endMs) throw bad(`${f}.occurredAtMs`, `charge at ${new Date(c.occurredAtMs).toISOString()} is outside period ${w.period}`);
  });
  return [...charges]
    .sort((a, b) => cmp(a.idempotencyKey, b.idempotencyKey))
    .map((c) => ({
      code: `CHG/${c.idempotencyKey}`,
      description: c.description,
      quantity: 1,
      unitAmountCents: c.amountCents,
      amountCents: c.amountCents,
      explanation: { rule: 'charge', eventCount: 1, eventKeys: [c.idempotencyKey], formula: `${c.item}: 1 × ${c.amountCents} = ${c.amountCents}` },
    }));
}

/**
 * Rates one tenant's period: its contracts' lines (contracts ordered by device, validFrom, id),
 * then adjustments for late usage of earlier periods, then the tax line, and the totals.
 * Throws an Eco3dError (BAD_REQUEST, NOT_FINITE, CONFLICT) naming the offending field.
 */
export function rate(input: RateInput): Invoice {
  if (input === null || typeof input !== 'object') throw bad('input', 'an object is required');
  const tenant = parseTenantBilling(input.tenant);
  const tz = tenant.timeZone;
  parsePeriod(input.period);
  const period = input.period;
  const contracts = parseContracts(input.contracts);
  const { startMs, endMs } = periodBounds(period, tz);
  const w: Window = { tenantId: tenant.tenantId, tz, period, startMs, endMs };
  checkUsage(input.usage, 'usage', w, new Set());
  const outcomes = input.outcomes ?? [];
  requireArray('outcomes', outcomes);
  const outcomeKeys = new Set<string>();
  outcomes.forEach((o, i) => {
    if (outcomeKeys.has(o.idempotencyKey)) throw bad(`outcomes[${i}].idempotencyKey`, `duplicate event ${o.idempotencyKey}`);
    outcomeKeys.add(o.idempotencyKey);
  });
  const availability = input.availability ?? [];
  requireArray('availability', availability);
  availability.forEach((a, i) => {
    requireString(`availability[${i}].deviceId`, a.deviceId, 128);
    requireMs(`availability[${i}].atMs`, a.atMs);
    if (typeof a.up !== 'boolean') throw bad(`availability[${i}].up`, 'a boolean is required');
    if (a.atMs >= endMs) throw bad(`availability[${i}].atMs`, `change at ${new Date(a.atMs).toISOString()} is after period ${period}`);
  });

  const rated = ratePeriod(tenant.tenantId, tz, period, contracts, input.usage, outcomes, availability, 'usage');
  const lines = [...rated.lines, ...chargeLines(input.charges ?? [], w), ...lateAdjustments(tenant.tenantId, tz, period, contracts, input.late ?? [])];
  const subtotal = sumCents('subtotal', lines.map((l) => l.amountCents));
  const tax = tenant.tax;
  const taxAmount = tax.kind === 'rate' ? ratedCents('tax', [subtotal, tax.rateBps], BPS_DENOMINATOR) : 0;
  const taxLine: InvoiceLine =
    tax.kind === 'rate'
      ? {
          code: 'TAX',
          description: `${tax.label} ${tax.rateBps / 100}%`,
          quantity: 1,
          amountCents: taxAmount,
          explanation: { rule: 'tax', eventCount: 0, formula: `${subtotal} × ${tax.rateBps} / 10000 = ${taxAmount}` },
        }
      : {
          code: 'TAX',
          description: `Exempt: ${tax.reason}`,
          quantity: 1,
          amountCents: 0,
          explanation: { rule: 'tax-exempt', eventCount: 0, formula: `exempt (${tax.reason}) = 0` },
        };
  const taxCents = taxLine.amountCents;
  return {
    tenantId: tenant.tenantId,
    period,
    timeZone: tz,
    currency: 'EUR',
    periodStartMs: startMs,
    periodEndMs: endMs,
    lines: [...lines, taxLine],
    usage: { billableEvents: rated.billable, nonBillableEvents: rated.nonBillable },
    totals: { subtotalCents: subtotal, taxCents, totalCents: sumCents('total', [subtotal, taxCents]) },
  };
}

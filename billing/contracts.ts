// Contracts: what a tenant pays for a device, from which day to which day (billing/PRICING.md).
//
// `unknown` comes in, a typed contract or an Eco3dError naming the field goes out. Every number
// is an integer (cents, scans, basis points); a NaN or an infinity is NOT_FINITE, anything else
// malformed is BAD_REQUEST, and two contracts of one tenant and device whose validity overlaps
// are a CONFLICT (which one would price a scan on the shared day?).
import { z } from 'zod';
import { Eco3dError } from '../protocols/errors.ts';
import { parseWith, valueAt } from '../protocols/parse.ts';
import { BPS_DENOMINATOR, MAX_AMOUNT_CENTS, MAX_QUANTITY } from './money.ts';
import { DEFAULT_TIME_ZONE, MAX_YEAR, MIN_YEAR, requireTimeZone } from './periods.ts';

const IdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$/, 'an id: letters, digits and . _ : @ / -, at most 128');
const CentsSchema = z.number().int().min(0).max(MAX_AMOUNT_CENTS);
const QuantitySchema = z.number().int().min(0).max(MAX_QUANTITY);
const BpsSchema = z.number().int().min(0).max(BPS_DENOMINATOR);
const DateSchema = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'a date YYYY-MM-DD')
  .refine((s) => {
    const d = new Date(`${s}T00:00:00Z`);
    const y = Number(s.slice(0, 4));
    return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s && y >= MIN_YEAR && y <= MAX_YEAR;
  }, `a calendar date between ${MIN_YEAR} and ${MAX_YEAR}`);

/**
 * A tier covers the scans up to and including `upTo` (counted from the first scan of the
 * period); the last tier has `upTo: null` (no upper bound).
 */
const TierSchema = z.strictObject({ upTo: QuantitySchema.min(1).nullable(), unitPriceCents: CentsSchema });
const TiersSchema = z
  .array(TierSchema)
  .min(1)
  .max(32)
  .superRefine((tiers, ctx) => {
    tiers.forEach((t, i) => {
      const last = i === tiers.length - 1;
      if (last && t.upTo !== null) ctx.addIssue({ code: 'custom', path: [i, 'upTo'], message: 'the last tier must have upTo: null' });
      if (!last && t.upTo === null) ctx.addIssue({ code: 'custom', path: [i, 'upTo'], message: 'only the last tier may have upTo: null' });
      const prev = i > 0 ? tiers[i - 1]!.upTo : 0;
      if (t.upTo !== null && prev !== null && t.upTo <= prev) ctx.addIssue({ code: 'custom', path: [i, 'upTo'], message: `must be above the previous tier's ${prev}` });
    });
  });

/** A price per scan: one flat price, graduated tiers (each scan at its tier's price) or volume tiers (every scan at the price of the tier the total falls in). */
export const ScanPricingSchema = z.discriminatedUnion('scheme', [
  z.strictObject({ scheme: z.literal('flat'), unitPriceCents: CentsSchema }),
  z.strictObject({ scheme: z.literal('graduated'), tiers: TiersSchema }),
  z.strictObject({ scheme: z.literal('volume'), tiers: TiersSchema }),
]);
export type ScanPricing = z.infer<typeof ScanPricingSchema>;
export type Tier = z.infer<typeof TierSchema>;

const PayPerScanSchema = z.strictObject({ kind: z.literal('pay-per-scan'), pricing: ScanPricingSchema });

const LeaseSchema = z.strictObject({
  kind: z.literal('lease'),
  monthlyFeeCents: CentsSchema,
  includedScans: QuantitySchema,
  overageUnitPriceCents: CentsSchema,
});

const CommitmentSchema = z.strictObject({
  kind: z.literal('commitment'),
  pricing: ScanPricingSchema,
  /** Scans the tenant pays for each month at least (true-up at period end). */
  minimumScans: QuantitySchema,
});

const RiskSharingSchema = z
  .strictObject({
    kind: z.literal('risk-sharing'),
    unitPriceCents: CentsSchema,
    forecastScans: QuantitySchema,
    /** The corridor is [forecast − band, forecast + band]. */
    bandScans: QuantitySchema,
    /** Below the corridor the tenant gets back this share of the missing scans' price. */
    shareBelowBps: BpsSchema,
    /** Above the corridor the tenant pays this share of the extra scans' price. */
    shareAboveBps: BpsSchema,
    outcomeBonuses: z.array(z.strictObject({ outcome: IdSchema, bonusCents: CentsSchema })).max(32).default([]),
    /** Credits, as a share of the month's budget, when availability falls below a threshold; the largest credit breached applies. */
    slaCredits: z.array(z.strictObject({ belowBps: BpsSchema.min(1), creditBps: BpsSchema })).max(16).default([]),
  })
  .superRefine((m, ctx) => {
    if (m.bandScans > m.forecastScans) ctx.addIssue({ code: 'custom', path: ['bandScans'], message: 'the band cannot exceed the forecast' });
    const seen = new Set<string>();
    m.outcomeBonuses.forEach((b, i) => {
      if (seen.has(b.outcome)) ctx.addIssue({ code: 'custom', path: ['outcomeBonuses', i, 'outcome'], message: `duplicate outcome ${b.outcome}` });
      seen.add(b.outcome);
    });
    const thresholds = new Set<number>();
    m.slaCredits.forEach((c, i) => {
      if (thresholds.has(c.belowBps)) ctx.addIssue({ code: 'custom', path: ['slaCredits', i, 'belowBps'], message: `duplicate threshold ${c.belowBps}` });
      thresholds.add(c.belowBps);
    });
  });

const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

const ConsortiumSchema = z
  .strictObject({
    kind: z.literal('consortium'),
    /** In contract order: the order that breaks ties in splits. */
    parties: z.array(z.strictObject({ partyId: IdSchema, name: z.string().min(1).max(200) })).min(1).max(64),
    /** Who owns each weekday (every day has an owner, so every scan has a payer). */
    weekdays: z.strictObject(Object.fromEntries(WEEKDAYS.map((d) => [d, IdSchema])) as Record<Weekday, typeof IdSchema>),
    /** Dates owned by someone else than their weekday's owner (holidays, swaps). */
    overrides: z.array(z.strictObject({ date: DateSchema, partyId: IdSchema })).max(1000).default([]),
    monthlyFeeCents: CentsSchema,
    pricing: ScanPricingSchema,
  })
  .superRefine((m, ctx) => {
    const ids = new Set<string>();
    m.parties.forEach((p, i) => {
      if (ids.has(p.partyId)) ctx.addIssue({ code: 'custom', path: ['parties', i, 'partyId'], message: `duplicate party ${p.partyId}` });
      ids.add(p.partyId);
    });
    for (const d of WEEKDAYS) {
      if (!ids.has(m.weekdays[d])) ctx.addIssue({ code: 'custom', path: ['weekdays', d], message: `unknown party ${m.weekdays[d]}` });
    }
    const dates = new Set<string>();
    m.overrides.forEach((o, i) => {
      if (!ids.has(o.partyId)) ctx.addIssue({ code: 'custom', path: ['overrides', i, 'partyId'], message: `unknown party ${o.partyId}` });
      if (dates.has(o.date)) ctx.addIssue({ code: 'custom', path: ['overrides', i, 'date'], message: `duplicate date ${o.date}` });
      dates.add(o.date);
    });
  });

export const PRICING_MODELS = ['pay-per-scan', 'lease', 'commitment', 'risk-sharing', 'consortium'] as const;
export type PricingModelKind = (typeof PRICING_MODELS)[number];

export const PricingModelSchema = z.discriminatedUnion('kind', [PayPerScanSchema, LeaseSchema, CommitmentSchema, RiskSharingSchema, ConsortiumSchema]);
export type PricingModel = z.infer<typeof PricingModelSchema>;

export const ContractSchema = z
  .strictObject({
    id: IdSchema,
    tenantId: IdSchema,
    deviceId: IdSchema,
    /** First day of validity, in the tenant's zone, inclusive. */
    validFrom: DateSchema,
    /** Last day of validity, inclusive; null = open-ended. */
    validTo: DateSchema.nullable(),
    model: PricingModelSchema,
  })
  .superRefine((c, ctx) => {
    if (c.validTo !== null && c.validTo < c.validFrom) ctx.addIssue({ code: 'custom', path: ['validTo'], message: `ends before validFrom ${c.validFrom}` });
  });
export type Contract = z.infer<typeof ContractSchema>;
/** What callers write (defaults not yet applied). */
export type ContractInput = z.input<typeof ContractSchema>;

export const TaxSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('rate'), rateBps: BpsSchema, label: z.string().min(1).max(100).default('VAT') }),
  /** Medical services are often exempt; the reason (the law's article) is printed on the invoice. */
  z.strictObject({ kind: z.literal('exempt'), reason: z.string().min(1).max(500) }),
]);
export type Tax = z.infer<typeof TaxSchema>;

export const TenantBillingSchema = z.strictObject({
  tenantId: IdSchema,
  timeZone: z.string().default(DEFAULT_TIME_ZONE),
  tax: TaxSchema,
  /**
   * A completed scan of a patient who already had a billable scan this many hours before is
   * metered as not billable (`repeat-scan`); 0 turns the rule off. Metering applies it, not rate().
   */
  repeatScanWindowHours: z.number().int().min(0).max(24 * 366).default(0),
});
export type TenantBilling = z.infer<typeof TenantBillingSchema>;
export type TenantBillingInput = z.input<typeof TenantBillingSchema>;

export { parseWith };

export function parseContract(raw: unknown, what = 'contract'): Contract {
  const kind = valueAt(raw, ['model', 'kind']);
  if (typeof kind === 'string' && !(PRICING_MODELS as readonly string[]).includes(kind)) {
    const id = valueAt(raw, ['id']);
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${what}.model.kind: unknown pricing model ${JSON.stringify(kind)} in contract ${String(id)} (known: ${PRICING_MODELS.join(', ')})`, {
      details: { field: `${what}.model.kind` },
    });
  }
  return parseWith(ContractSchema, raw, what);
}

export function parseTenantBilling(raw: unknown): TenantBilling {
  const t = parseWith(TenantBillingSchema, raw, 'tenant');
  return { ...t, timeZone: requireTimeZone(t.timeZone, 'tenant.timeZone') };
}

/**
 * Parses every contract and refuses overlapping validity for the same tenant and device
 * (ECO3D_ERR_CONFLICT, both contract ids in the message). Returns them sorted by tenant,
 * device and validFrom.
 */
export function parseContracts(raw: readonly unknown[]): Contract[] {
  if (!Array.isArray(raw)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'contracts: an array is required', { details: { field: 'contracts' } });
  const contracts = raw.map((c, i) => parseContract(c, `contracts[${i}]`));
  const ids = new Set<string>();
  for (const c of contracts) {
    if (ids.has(c.id)) throw new Eco3dError('ECO3D_ERR_CONFLICT', `contract id ${c.id} appears twice`, { details: { field: 'contracts', contractId: c.id } });
    ids.add(c.id);
  }
  contracts.sort((a, b) => cmp(a.tenantId, b.tenantId) || cmp(a.deviceId, b.deviceId) || cmp(a.validFrom, b.validFrom) || cmp(a.id, b.id));
  for (let i = 1; i < contracts.length; i++) {
    const prev = contracts[i - 1]!;
    const cur = contracts[i]!;
    if (prev.tenantId !== cur.tenantId || prev.deviceId !== cur.deviceId) continue;
    if (prev.validTo === null || prev.validTo >= cur.validFrom) {
      throw new Eco3dError(
        'ECO3D_ERR_CONFLICT',
        `contracts ${prev.id} (${prev.validFrom}…${prev.validTo ?? 'open'}) and ${cur.id} (${cur.validFrom}…${cur.validTo ?? 'open'}) overlap for tenant ${cur.tenantId}, device ${cur.deviceId}`,
        { details: { field: 'contracts', contractIds: [prev.id, cur.id] } },
      );
    }
  }
  return contracts;
}

/** Code-point order, never locale order: the same bytes on every machine. */
export const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The owner of a consortium day: an override, else the weekday's owner. `isoWeekday` 1 = Monday. */
export function ownerOfDay(model: Extract<PricingModel, { kind: 'consortium' }>, date: string, isoWeekday: number): string {
  const override = model.overrides.find((o) => o.date === date);
  if (override !== undefined) return override.partyId;
  return model.weekdays[WEEKDAYS[isoWeekday - 1]!];
}

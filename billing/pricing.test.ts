// Rating, model by model, on hand-computed invoices (cents worked out in the comments).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Temporal } from 'temporal-polyfill';
import { throwsWith } from '../protocols/testing.ts';
import type { ContractInput, TenantBillingInput } from './contracts.ts';
import { type AvailabilityChange, type Invoice, type OutcomeEvent, type RateInput, rate, type UsageEvent } from './pricing.ts';

const ROME = 'Europe/Rome';
const tenant: TenantBillingInput = { tenantId: 'hosp-a', tax: { kind: 'rate', rateBps: 2200 } };

/** Rome wall-clock time → epoch ms. */
const at = (local: string, tz = ROME): number => Temporal.PlainDateTime.from(local).toZonedDateTime(tz).epochMilliseconds;

type Model<K extends ContractInput['model']['kind']> = Extract<ContractInput['model'], { kind: K }>;

const contract = (model: ContractInput['model'], over: Partial<ContractInput> = {}): ContractInput => ({
  id: 'c1',
  tenantId: 'hosp-a',
  deviceId: 'dev-1',
  validFrom: '2026-01-01',
  validTo: null,
  model,
  ...over,
});

/** `n` billable scans on `deviceId`, one an hour from `fromLocal` (Rome). */
function scans(n: number, fromLocal = '2026-03-02T08:00', deviceId = 'dev-1', prefix = 's'): UsageEvent[] {
  const start = at(fromLocal);
  return Array.from({ length: n }, (_, i) => ({
    idempotencyKey: `${prefix}${String(i + 1).padStart(3, '0')}`,
    tenantId: 'hosp-a',
    deviceId,
    acquisitionUid: `1.2.3.${prefix}.${i + 1}`,
    occurredAtMs: start + i * 3_600_000,
    billable: true,
  }));
}

const amounts = (inv: Invoice): Record<string, number> => Object.fromEntries(inv.lines.map((l) => [l.code, l.amountCents]));
const run = (over: Partial<RateInput> & Pick<RateInput, 'contracts'>): Invoice => rate({ tenant, period: '2026-03', usage: [], ...over });

const TIERS = [
  { upTo: 10, unitPriceCents: 3000 },
  { upTo: 20, unitPriceCents: 2500 },
  { upTo: null, unitPriceCents: 2000 },
];

void test('pay-per-scan flat: 12 × 25.00 EUR + 22 % VAT', () => {
  const inv = run({ contracts: [contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } })], usage: scans(12) });
  assert.deepEqual(amounts(inv), { 'PPS/c1/flat': 30_000, TAX: 6600 });
  assert.deepEqual(inv.totals, { subtotalCents: 30_000, taxCents: 6600, totalCents: 36_600 });
  const line = inv.lines[0]!;
  assert.equal(line.quantity, 12);
  assert.equal(line.unitAmountCents, 2500);
  assert.equal(line.explanation.formula, '12 × 2500 = 30000');
  assert.equal(line.explanation.eventKeys?.length, 12);
});

void test('graduated tiers at their boundaries: scans 1–10, 11–20, 21+', () => {
  const c = [contract({ kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: TIERS } })];
  assert.deepEqual(amounts(run({ contracts: c, usage: scans(10) })), { 'PPS/c1/tier-1': 30_000, TAX: 6600 });
  // 10 × 3000 + 10 × 2500 + 1 × 2000 = 57000; VAT 12540
  const inv = run({ contracts: c, usage: scans(21) });
  assert.deepEqual(amounts(inv), { 'PPS/c1/tier-1': 30_000, 'PPS/c1/tier-2': 25_000, 'PPS/c1/tier-3': 2000, TAX: 12_540 });
  assert.equal(inv.totals.totalCents, 69_540);
  const t3 = inv.lines[2]!;
  assert.deepEqual([t3.explanation.tier, t3.explanation.eventKeys], [3, ['s021']]); // the latest scan
});

void test('volume tiers: every scan at the price of the tier the total reaches', () => {
  const c = [contract({ kind: 'pay-per-scan', pricing: { scheme: 'volume', tiers: TIERS } })];
  assert.equal(amounts(run({ contracts: c, usage: scans(10) }))['PPS/c1/volume'], 30_000); // 10 × 3000
  assert.equal(amounts(run({ contracts: c, usage: scans(11) }))['PPS/c1/volume'], 27_500); // 11 × 2500
  assert.equal(amounts(run({ contracts: c, usage: scans(21) }))['PPS/c1/volume'], 42_000); // 21 × 2000
  assert.deepEqual(amounts(run({ contracts: c, usage: [] })), { TAX: 0 });
});

void test('lease: fee, included scans, overage; prorated when the contract starts mid-month', () => {
  const model = { kind: 'lease', monthlyFeeCents: 400_000, includedScans: 20, overageUnitPriceCents: 1500 } as const;
  assert.deepEqual(amounts(run({ contracts: [contract(model)], usage: scans(23) })), {
    'LEASE/c1/fee': 400_000,
    'LEASE/c1/included': 0,
    'LEASE/c1/overage': 4500, // 3 × 1500
    TAX: 88_990, // 404500 × 2200 / 10000
  });
});

void test('rounding happens once per line, half up: 2499 ¢ × 3 scans × 33.33 %', () => {
  // Risk-sharing above the corridor: forecast 10, band 0, 13 scans → 3 extra at 33.33 %:
  // 2499 × 3 × 3333 / 10000 = 2498.7501 → 2499. With 1 ¢ × 3 × 50 % = 1.5 → 2, where rounding
  // each scan (0.5 → 1) would give 3: the rule matters.
  const m = { kind: 'risk-sharing', unitPriceCents: 2499, forecastScans: 10, bandScans: 0, shareBelowBps: 0, shareAboveBps: 3333 } as const;
  assert.equal(amounts(run({ contracts: [contract(m)], usage: scans(13) }))['RISK/c1/above-band'], 2499);
  const tiny = { ...m, unitPriceCents: 1, shareAboveBps: 5000 };
  assert.equal(amounts(run({ contracts: [contract(tiny)], usage: scans(13) }))['RISK/c1/above-band'], 2);
});

void test('lease starting on 17 March: 15 of 31 days of fee and of included scans', () => {
  const model = { kind: 'lease', monthlyFeeCents: 400_000, includedScans: 20, overageUnitPriceCents: 1500 } as const;
  const inv = run({ contracts: [contract(model, { validFrom: '2026-03-17' })], usage: scans(12, '2026-03-17T08:00') });
  // fee 400000 × 15/31 = 193548.39 → 193548; included 20 × 15/31 = 9.68 → 10; overage 2 × 1500
  assert.deepEqual(amounts(inv), { 'LEASE/c1/fee': 193_548, 'LEASE/c1/included': 0, 'LEASE/c1/overage': 3000, TAX: 43_241 }); // 196548 × 22 % = 43240.56
  assert.equal(inv.lines[0]!.explanation.formula, '400000 × 15/31 days = 193548');
});

void test('a contract change mid-month: each scan priced by the contract of its day (Rome), each term prorated', () => {
  const inv = run({
    contracts: [
      contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 3000 } }, { id: 'old', validTo: '2026-03-15' }),
      contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2000 } }, { id: 'new', validFrom: '2026-03-16', validTo: null }),
    ],
    // 23:30 and 00:30 Rome around the change of day: one scan each side.
    usage: [...scans(1, '2026-03-15T23:30', 'dev-1', 'a'), ...scans(1, '2026-03-16T00:30', 'dev-1', 'b')],
  });
  assert.deepEqual(amounts(inv), { 'PPS/old/flat': 3000, 'PPS/new/flat': 2000, TAX: 1100 });
});

void test('minimum-volume commitment: the true-up bills the shortfall at the contract price', () => {
  const m = { kind: 'commitment', pricing: { scheme: 'flat', unitPriceCents: 2000 }, minimumScans: 50 } as const;
  // 30 × 2000 = 60000; true-up price(50) − price(30) = 100000 − 60000 = 40000
  assert.deepEqual(amounts(run({ contracts: [contract(m)], usage: scans(30) })), { 'COMMIT/c1/flat': 60_000, 'COMMIT/c1/true-up': 40_000, TAX: 22_000 });
  assert.deepEqual(amounts(run({ contracts: [contract(m)], usage: scans(50) })), { 'COMMIT/c1/flat': 100_000, TAX: 22_000 });
  // Graduated: price(25) − price(12) = (300000… ) 10×3000+10×2500+5×2000 − (10×3000+2×2500) = 65000 − 35000
  const g = { kind: 'commitment', pricing: { scheme: 'graduated', tiers: TIERS }, minimumScans: 25 } as const;
  assert.equal(amounts(run({ contracts: [contract(g)], usage: scans(12) }))['COMMIT/c1/true-up'], 30_000);
});

void test('risk-sharing: budget, credit below the corridor, share above it, outcome bonuses, SLA credit', () => {
  const m: Model<'risk-sharing'> = {
    kind: 'risk-sharing',
    unitPriceCents: 2000,
    forecastScans: 100,
    bandScans: 10,
    shareBelowBps: 5000,
    shareAboveBps: 4000,
    outcomeBonuses: [{ outcome: 'avoided-ct', bonusCents: 5000 }],
    slaCredits: [
      { belowBps: 9900, creditBps: 500 },
      { belowBps: 9500, creditBps: 1000 },
    ],
  };
  // Inside the corridor [90, 110]: the budget only (100 × 2000).
  assert.deepEqual(amounts(run({ contracts: [contract(m)], usage: scans(95) })), { 'RISK/c1/budget': 200_000, TAX: 44_000 });
  assert.deepEqual(amounts(run({ contracts: [contract(m)], usage: scans(90) })), { 'RISK/c1/budget': 200_000, TAX: 44_000 });
  assert.deepEqual(amounts(run({ contracts: [contract(m)], usage: scans(110) })), { 'RISK/c1/budget': 200_000, TAX: 44_000 });
  // 80 scans: 10 short of 90, half of 10 × 2000 credited.
  assert.equal(amounts(run({ contracts: [contract(m)], usage: scans(80) }))['RISK/c1/below-band'], -10_000);
  // 115 scans: 5 beyond 110, 40 % of 5 × 2000.
  const above = run({ contracts: [contract(m)], usage: scans(115) });
  assert.equal(amounts(above)['RISK/c1/above-band'], 4000);
  assert.deepEqual(above.lines[1]!.explanation.eventKeys, ['s111', 's112', 's113', 's114', 's115']);
  // Outcomes and 48 h down of the 743 h of March (DST): 695/743 = 93.5 % < 95 % → 10 % of the budget.
  const outcomes: OutcomeEvent[] = [1, 2, 3].map((i) => ({ idempotencyKey: `o${i}`, tenantId: 'hosp-a', deviceId: 'dev-1', outcome: 'avoided-ct', occurredAtMs: at(`2026-03-1${i}T10:00`) }));
  outcomes.push({ idempotencyKey: 'o9', tenantId: 'hosp-a', deviceId: 'dev-1', outcome: 'unpaid-outcome', occurredAtMs: at('2026-03-20T10:00') });
  const availability: AvailabilityChange[] = [
    { deviceId: 'dev-1', up: true, atMs: at('2026-02-01T00:00') },
    { deviceId: 'dev-1', up: false, atMs: at('2026-03-10T00:00') },
    { deviceId: 'dev-1', up: true, atMs: at('2026-03-12T00:00') },
    { deviceId: 'dev-2', up: false, atMs: at('2026-03-01T00:00') }, // another device: no effect
  ];
  const inv = run({ contracts: [contract(m)], usage: scans(100), outcomes, availability });
  assert.deepEqual(amounts(inv), { 'RISK/c1/budget': 200_000, 'RISK/c1/outcome/avoided-ct': 15_000, 'RISK/c1/sla-credit': -20_000, TAX: 42_900 });
  assert.match(inv.lines[2]!.explanation.formula, /^up 2502000000 ms of 2674800000 ms < 9500\/10000/);
  // 7 h down (99.06 %): no credit; 8 h (98.92 %): 5 %.
  const down = (h: number): AvailabilityChange[] => [
    { deviceId: 'dev-1', up: false, atMs: at('2026-03-10T00:00') },
    { deviceId: 'dev-1', up: true, atMs: at('2026-03-10T00:00') + h * 3_600_000 },
  ];
  assert.equal(amounts(run({ contracts: [contract(m)], usage: scans(100), availability: down(7) }))['RISK/c1/sla-credit'], undefined);
  assert.equal(amounts(run({ contracts: [contract(m)], usage: scans(100), availability: down(8) }))['RISK/c1/sla-credit'], -10_000);
});

void test('consortium: scans go to the owner of their day, the fee is split by days with the largest remainder', () => {
  const m: Model<'consortium'> = {
    kind: 'consortium',
    parties: [
      { partyId: 'a', name: 'Clinic A' },
      { partyId: 'b', name: 'Clinic B' },
      { partyId: 'c', name: 'Clinic C' },
    ],
    weekdays: { mon: 'a', tue: 'b', wed: 'c', thu: 'a', fri: 'b', sat: 'c', sun: 'a' },
    monthlyFeeCents: 100_000,
    pricing: { scheme: 'flat', unitPriceCents: 1000 },
  };
  // March 2026 starts on a Sunday: a owns Sun, Mon, Thu = 5 + 5 + 4 = 14 days, b Tue, Fri = 9, c Wed, Sat = 8.
  // 100000 × 14/31 = 45161.29, × 9/31 = 29032.26, × 8/31 = 25806.45: 99999 floored, the cent to c (.45).
  const usage = [
    ...scans(1, '2026-03-01T00:15', 'dev-1', 'sun'), // 23:15 UTC on 28 Feb: March in Rome, a Sunday → a
    ...scans(2, '2026-03-29T00:30', 'dev-1', 'dst'), // the DST Sunday: 00:30 and 01:30 → a
    ...scans(1, '2026-03-31T23:30', 'dev-1', 'tue'), // 21:30 UTC, the last Tuesday → b
  ];
  const inv = run({ contracts: [contract(m)], usage });
  assert.deepEqual(amounts(inv), {
    'CONS/c1/a/fee': 45_161,
    'CONS/c1/b/fee': 29_032,
    'CONS/c1/c/fee': 25_807,
    'CONS/c1/a/flat': 3000,
    'CONS/c1/b/flat': 1000,
    TAX: 22_880, // 104000 × 22 %
  });
  assert.deepEqual(
    inv.lines.map((l) => l.partyId),
    ['a', 'b', 'c', 'a', 'b', undefined],
  );
  // February 2026: a 12 days, b 12, c 4 of 28; 100001 → 42857.57, 42857.57, 14285.86: the two cents
  // left go to c (.86) then to a, which ties with b and comes first in the contract.
  const feb = rate({ tenant, period: '2026-02', contracts: [contract({ ...m, monthlyFeeCents: 100_001, weekdays: { mon: 'a', tue: 'a', wed: 'a', thu: 'b', fri: 'b', sat: 'b', sun: 'c' } })], usage: [] });
  assert.deepEqual(amounts(feb), { 'CONS/c1/a/fee': 42_858, 'CONS/c1/b/fee': 42_857, 'CONS/c1/c/fee': 14_286, TAX: 22_000 });
  // An override moves a day (and its scans) to another clinic.
  const moved = run({ contracts: [contract({ ...m, overrides: [{ date: '2026-03-31', partyId: 'c' }] })], usage });
  assert.equal(amounts(moved)['CONS/c1/c/flat'], 1000);
  assert.equal(moved.lines.find((l) => l.code === 'CONS/c1/c/fee')!.quantity, 9);
});

void test('tax exemption: a zero tax line carrying the reason', () => {
  const inv = rate({
    tenant: { tenantId: 'hosp-a', tax: { kind: 'exempt', reason: 'Art. 10 DPR 633/72 (prestazioni sanitarie)' } },
    period: '2026-03',
    contracts: [contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } })],
    usage: scans(2),
  });
  const tax = inv.lines.at(-1)!;
  assert.deepEqual([tax.code, tax.amountCents, tax.explanation.rule], ['TAX', 0, 'tax-exempt']);
  assert.match(tax.description, /Art\. 10 DPR 633\/72/);
  assert.deepEqual(inv.totals, { subtotalCents: 5000, taxCents: 0, totalCents: 5000 });
});

void test('non-billable scans are counted, never priced; other tenants\' contracts are ignored', () => {
  const usage = scans(5).map((e, i) => ({ ...e, billable: i % 2 === 0 }));
  const inv = run({
    contracts: [contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } }), contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 1 } }, { id: 'other', tenantId: 'hosp-b' })],
    usage,
  });
  assert.deepEqual(amounts(inv), { 'PPS/c1/flat': 7500, TAX: 1650 });
  assert.deepEqual(inv.usage, { billableEvents: 3, nonBillableEvents: 2 });
});

void test('late usage of a closed period: billed now as the difference of the re-rated period', () => {
  const c = [contract({ kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: TIERS } })];
  const billedUsage = scans(9, '2026-02-02T08:00', 'dev-1', 'feb');
  const lateUsage = scans(3, '2026-02-20T08:00', 'dev-1', 'late');
  const issued = rate({ tenant, period: '2026-02', contracts: c, usage: billedUsage });
  const reRated = rate({ tenant, period: '2026-02', contracts: c, usage: [...billedUsage, ...lateUsage] });
  const inv = run({ contracts: c, usage: scans(1), late: [{ period: '2026-02', billedUsage, lateUsage }] });
  // February was 9 × 3000; with 3 late: 10 × 3000 + 2 × 2500. Adjustments: +1 × 3000, +2 × 2500.
  assert.deepEqual(amounts(inv), { 'PPS/c1/tier-1': 3000, 'ADJ/2026-02/PPS/c1/tier-1': 3000, 'ADJ/2026-02/PPS/c1/tier-2': 5000, TAX: 2420 });
  assert.equal(issued.totals.subtotalCents + 8000, reRated.totals.subtotalCents);
  const adj = inv.lines[2]!;
  assert.deepEqual([adj.quantity, adj.explanation.rule, adj.explanation.eventKeys], [2, 'late-usage-adjustment', ['late001', 'late002', 'late003']]);
  // A true-up that late scans fill is reversed.
  const commit = [contract({ kind: 'commitment', pricing: { scheme: 'flat', unitPriceCents: 2000 }, minimumScans: 10 })];
  const inv2 = run({ contracts: commit, usage: scans(10), late: [{ period: '2026-02', billedUsage, lateUsage }] });
  assert.deepEqual(amounts(inv2), { 'COMMIT/c1/flat': 20_000, 'ADJ/2026-02/COMMIT/c1/flat': 6000, 'ADJ/2026-02/COMMIT/c1/true-up': -2000, TAX: 5280 });
});

void test('a billed event of a closed period reversed later: credited now, and a late one replaces it', () => {
  const c = [contract({ kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: TIERS } })];
  const billedUsage = scans(11, '2026-02-02T08:00', 'dev-1', 'feb');
  const lateUsage = scans(1, '2026-02-20T08:00', 'dev-1', 'late');
  const inv = run({ contracts: c, usage: [], late: [{ period: '2026-02', billedUsage, lateUsage, reversedKeys: ['feb003', 'feb005'] }] });
  // February billed 10 × 3000 + 1 × 2500; now it is 10 scans: 10 × 3000. The tier-2 scan goes.
  assert.deepEqual(amounts(inv), { 'ADJ/2026-02/PPS/c1/tier-2': -2500, TAX: -550 });
  assert.deepEqual(inv.lines[0]!.explanation.eventKeys, ['feb003', 'feb005', 'late001']);
  throwsWith(() => run({ contracts: c, late: [{ period: '2026-02', billedUsage, lateUsage: [], reversedKeys: ['nope'] }] }), 'ECO3D_ERR_BAD_REQUEST', 'late[0].reversedKeys');
});

void test('bad inputs: a clear error with a code naming the field', () => {
  const c = [contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } })];
  const [e] = scans(1);
  const one = (over: Partial<UsageEvent>): UsageEvent[] => [{ ...e!, ...over }];
  const { startMs, endMs } = { startMs: at('2026-03-01T00:00'), endMs: at('2026-04-01T00:00') };
  throwsWith(() => run({ contracts: c, usage: one({ occurredAtMs: startMs - 1 }) }), 'ECO3D_ERR_BAD_REQUEST', 'usage[0].occurredAtMs', 'outside period 2026-03');
  throwsWith(() => run({ contracts: c, usage: one({ occurredAtMs: endMs }) }), 'ECO3D_ERR_BAD_REQUEST', 'outside period');
  throwsWith(() => run({ contracts: c, usage: one({ occurredAtMs: Number.NaN }) }), 'ECO3D_ERR_NOT_FINITE', 'usage[0].occurredAtMs');
  throwsWith(() => run({ contracts: c, usage: one({ tenantId: 'hosp-b' }) }), 'ECO3D_ERR_BAD_REQUEST', 'usage[0].tenantId');
  throwsWith(() => run({ contracts: c, usage: one({ deviceId: 'dev-9' }) }), 'ECO3D_ERR_BAD_REQUEST', 'no contract', 'dev-9');
  throwsWith(() => run({ contracts: c, usage: one({ billable: 'yes' as unknown as boolean }) }), 'ECO3D_ERR_BAD_REQUEST', 'usage[0].billable');
  throwsWith(() => run({ contracts: c, usage: [...scans(2), ...scans(1)] }), 'ECO3D_ERR_BAD_REQUEST', 'usage[2].idempotencyKey', 'duplicate');
  throwsWith(() => run({ contracts: [...c, contract(c[0]!.model, { id: 'c2', validFrom: '2026-03-10' })] }), 'ECO3D_ERR_CONFLICT', 'overlap');
  throwsWith(() => run({ contracts: [contract({ kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 24.5 } })] }), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => run({ contracts: [contract({ kind: 'subscription' } as never)] }), 'ECO3D_ERR_BAD_REQUEST', 'unknown pricing model');
  throwsWith(() => run({ contracts: c, period: '2026-3' }), 'ECO3D_ERR_BAD_REQUEST', 'period');
  throwsWith(() => run({ contracts: c, late: [{ period: '2026-03', billedUsage: [], lateUsage: [] }] }), 'ECO3D_ERR_BAD_REQUEST', 'late[0].period');
  throwsWith(() => run({ contracts: c, late: [{ period: '2026-02', billedUsage: [], lateUsage: scans(1) }] }), 'ECO3D_ERR_BAD_REQUEST', 'late[0].lateUsage[0].occurredAtMs', 'outside period 2026-02');
  throwsWith(() => run({ contracts: c, availability: [{ deviceId: 'dev-1', up: false, atMs: Infinity }] }), 'ECO3D_ERR_NOT_FINITE', 'availability[0].atMs');
});

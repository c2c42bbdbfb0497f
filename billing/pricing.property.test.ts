// Every pricing model against a deliberately simple reference calculator, over thousands of
// random contracts, periods (DST months, leap February), zones and usage patterns.
//
// The reference is written the obvious way and shares no code with pricing.ts: local dates come
// from Intl.DateTimeFormat (not Temporal), tiers are filled one scan at a time, availability is
// sampled hour by hour, splits hand out cents in a loop, rounding is Math.floor((2a + b) / 2b).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { ContractInput, TenantBillingInput } from './contracts.ts';
import { periodBounds } from './periods.ts';
import { type AvailabilityChange, type Invoice, type OutcomeEvent, rate, type UsageEvent } from './pricing.ts';

const RUNS = Number(process.env.BILLING_PROPERTY_RUNS ?? 1500);
const HOUR_MS = 3_600_000;
const ZONES = ['Europe/Rome', 'UTC', 'America/New_York'] as const;
const PERIODS = ['2026-02', '2026-03', '2026-10', '2026-12', '2028-02', '2027-03'] as const;

// ---------- the reference calculator ----------

const formatters = new Map<string, Intl.DateTimeFormat>();
function localDate(ms: number, tz: string): string {
  let f = formatters.get(tz);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' });
    formatters.set(tz, f);
  }
  return f.format(ms); // en-CA formats as YYYY-MM-DD
}

function monthDays(period: string): string[] {
  const [y, m] = period.split('-').map(Number) as [number, number];
  const n = new Date(Date.UTC(y, m, 0)).getUTCDate();
  return Array.from({ length: n }, (_, i) => `${period}-${String(i + 1).padStart(2, '0')}`);
}

const weekdayName = (date: string): string => ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'][new Date(`${date}T12:00:00Z`).getUTCDay()]!;

/** a / b rounded half up, for a ≥ 0, b > 0 (all reference values stay far below 2^53). */
const roundDiv = (a: number, b: number): number => Math.floor((2 * a + b) / (2 * b));
const roundSigned = (a: number, b: number): number => (a < 0 ? 0 - roundDiv(-a, b) : roundDiv(a, b));

type Scheme = { scheme: 'flat'; unitPriceCents: number } | { scheme: 'graduated' | 'volume'; tiers: { upTo: number | null; unitPriceCents: number }[] };

/** Price of each tier line, scan by scan. Returns code suffix → amount. */
function refScan(s: Scheme, n: number): Map<string, number> {
  const out = new Map<string, number>();
  if (n === 0) return out;
  if (s.scheme === 'flat') {
    out.set('flat', n * s.unitPriceCents);
  } else if (s.scheme === 'graduated') {
    for (let i = 1; i <= n; i++) {
      const t = s.tiers.findIndex((x) => x.upTo === null || i <= x.upTo);
      out.set(`tier-${t + 1}`, (out.get(`tier-${t + 1}`) ?? 0) + s.tiers[t]!.unitPriceCents);
    }
  } else {
    let t = 0;
    while (s.tiers[t]!.upTo !== null && n > s.tiers[t]!.upTo!) t++;
    out.set('volume', n * s.tiers[t]!.unitPriceCents);
  }
  return out;
}
const refScanTotal = (s: Scheme, n: number): number => [...refScan(s, n).values()].reduce((a, b) => a + b, 0);

function refSplit(amount: number, weights: number[]): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  const shares = weights.map((w) => Math.floor((amount * w) / total));
  let left = amount - shares.reduce((a, b) => a + b, 0);
  while (left > 0) {
    // the party with the largest remainder that has not had a cent yet; ties: the first one
    let best = -1;
    let bestRem = -1;
    weights.forEach((w, i) => {
      const rem = (amount * w) % total;
      if (shares[i] === Math.floor((amount * w) / total) && rem > bestRem) {
        best = i;
        bestRem = rem;
      }
    });
    shares[best]! += 1;
    left--;
  }
  return shares;
}

interface RefInput {
  tz: string;
  period: string;
  contracts: ContractInput[];
  usage: UsageEvent[];
  outcomes: OutcomeEvent[];
  availability: AvailabilityChange[];
  taxBps: number | null;
}

/** Expected line amounts by code (tax included) and the totals. */
function reference(input: RefInput): { amounts: Map<string, number>; subtotal: number; tax: number } {
  const days = monthDays(input.period);
  const amounts = new Map<string, number>();
  const add = (code: string, cents: number): void => void amounts.set(code, cents);
  for (const c of input.contracts) {
    const covered = days.filter((d) => d >= c.validFrom && (c.validTo === null || d <= c.validTo));
    if (covered.length === 0) continue;
    const scale = (v: number): number => roundDiv(v * covered.length, days.length);
    const mine = input.usage.filter((e) => e.billable && e.deviceId === c.deviceId && covered.includes(localDate(e.occurredAtMs, input.tz)));
    const n = mine.length;
    const m = c.model;
    switch (m.kind) {
      case 'pay-per-scan':
        for (const [k, v] of refScan(m.pricing, n)) add(`PPS/${c.id}/${k}`, v);
        break;
      case 'lease': {
        add(`LEASE/${c.id}/fee`, scale(m.monthlyFeeCents));
        const inc = scale(m.includedScans);
        if (n > 0) add(`LEASE/${c.id}/included`, 0);
        if (n > inc) add(`LEASE/${c.id}/overage`, (n - inc) * m.overageUnitPriceCents);
        break;
      }
      case 'commitment': {
        for (const [k, v] of refScan(m.pricing, n)) add(`COMMIT/${c.id}/${k}`, v);
        const min = scale(m.minimumScans);
        const trueUp = n < min ? refScanTotal(m.pricing, min) - refScanTotal(m.pricing, n) : 0;
        if (trueUp > 0) add(`COMMIT/${c.id}/true-up`, trueUp);
        break;
      }
      case 'risk-sharing': {
        const f = scale(m.forecastScans);
        const b = scale(m.bandScans);
        const budget = f * m.unitPriceCents;
        add(`RISK/${c.id}/budget`, budget);
        if (n < f - b) add(`RISK/${c.id}/below-band`, 0 - roundDiv(m.unitPriceCents * (f - b - n) * m.shareBelowBps, 10_000));
        if (n > f + b) add(`RISK/${c.id}/above-band`, roundDiv(m.unitPriceCents * (n - f - b) * m.shareAboveBps, 10_000));
        for (const bonus of m.outcomeBonuses ?? []) {
          const k = input.outcomes.filter((o) => o.deviceId === c.deviceId && o.outcome === bonus.outcome && covered.includes(localDate(o.occurredAtMs, input.tz))).length;
          if (k > 0) add(`RISK/${c.id}/outcome/${bonus.outcome}`, k * bonus.bonusCents);
        }
        const sla = m.slaCredits ?? [];
        if (sla.length > 0) {
          // Hour by hour over the covered days (changes fall on whole hours, days start on whole hours in these zones).
          const { startMs, endMs } = periodBounds(input.period, input.tz);
          let up = 0;
          let total = 0;
          for (let h = startMs; h < endMs; h += HOUR_MS) {
            if (!covered.includes(localDate(h, input.tz))) continue;
            total++;
            const before = input.availability.filter((a) => a.deviceId === c.deviceId && a.atMs <= h);
            const lastAt = Math.max(...before.map((a) => a.atMs));
            const isUp = before.length === 0 || before.filter((a) => a.atMs === lastAt).every((a) => a.up);
            if (isUp) up++;
          }
          let credit = 0;
          for (const t of sla) if (up * 10_000 < t.belowBps * total) credit = Math.max(credit, t.creditBps);
          const hit = sla.some((t) => up * 10_000 < t.belowBps * total);
          if (hit) add(`RISK/${c.id}/sla-credit`, 0 - roundDiv(budget * credit, 10_000));
        }
        break;
      }
      case 'consortium': {
        const owner = (d: string): string => m.overrides?.find((o) => o.date === d)?.partyId ?? m.weekdays[weekdayName(d) as 'mon'];
        const weights = m.parties.map((p) => covered.filter((d) => owner(d) === p.partyId).length);
        const shares = refSplit(scale(m.monthlyFeeCents), weights);
        m.parties.forEach((p, i) => {
          if (weights[i]! > 0) add(`CONS/${c.id}/${p.partyId}/fee`, shares[i]!);
        });
        for (const p of m.parties) {
          const k = mine.filter((e) => owner(localDate(e.occurredAtMs, input.tz)) === p.partyId).length;
          for (const [code, v] of refScan(m.pricing, k)) add(`CONS/${c.id}/${p.partyId}/${code}`, v);
        }
        break;
      }
    }
  }
  const subtotal = [...amounts.values()].reduce((a, b) => a + b, 0);
  const tax = input.taxBps === null ? 0 : roundSigned(subtotal * input.taxBps, 10_000);
  amounts.set('TAX', tax);
  return { amounts, subtotal, tax };
}

// ---------- generators ----------

const price = fc.integer({ min: 0, max: 5000 });
const tiersArb = fc
  .uniqueArray(fc.integer({ min: 1, max: 60 }), { minLength: 0, maxLength: 4 })
  .chain((bounds) => {
    const ups = [...bounds].sort((a, b) => a - b);
    return fc.tuple(...[...ups, null].map((upTo) => price.map((unitPriceCents) => ({ upTo, unitPriceCents }))));
  });
const schemeArb: fc.Arbitrary<Scheme> = fc.oneof(
  price.map((unitPriceCents) => ({ scheme: 'flat' as const, unitPriceCents })),
  tiersArb.map((tiers) => ({ scheme: 'graduated' as const, tiers })),
  tiersArb.map((tiers) => ({ scheme: 'volume' as const, tiers })),
);
const PARTIES = ['p1', 'p2', 'p3', 'p4'];
const modelArb = (kind: ContractInput['model']['kind']): fc.Arbitrary<ContractInput['model']> => {
  switch (kind) {
    case 'pay-per-scan':
      return schemeArb.map((pricing) => ({ kind, pricing }));
    case 'lease':
      return fc.record({ monthlyFeeCents: fc.integer({ min: 0, max: 2_000_000 }), includedScans: fc.integer({ min: 0, max: 80 }), overageUnitPriceCents: price }).map((r) => ({ kind, ...r }));
    case 'commitment':
      return fc.record({ pricing: schemeArb, minimumScans: fc.integer({ min: 0, max: 120 }) }).map((r) => ({ kind, ...r }));
    case 'risk-sharing':
      return fc
        .record({
          unitPriceCents: price,
          forecastScans: fc.integer({ min: 0, max: 100 }),
          bandPart: fc.integer({ min: 0, max: 100 }),
          shareBelowBps: fc.integer({ min: 0, max: 10_000 }),
          shareAboveBps: fc.integer({ min: 0, max: 10_000 }),
          outcomeBonuses: fc.uniqueArray(fc.record({ outcome: fc.constantFrom('avoided-ct', 'avoided-mri', 'early-dx'), bonusCents: price }), { selector: (b) => b.outcome, maxLength: 2 }),
          slaCredits: fc.uniqueArray(fc.record({ belowBps: fc.integer({ min: 1, max: 10_000 }), creditBps: fc.integer({ min: 0, max: 10_000 }) }), { selector: (t) => t.belowBps, maxLength: 3 }),
        })
        .map(({ bandPart, forecastScans, ...r }) => ({ kind, forecastScans, bandScans: Math.floor((forecastScans * bandPart) / 100), ...r }));
    case 'consortium':
      return fc
        .record({
          parties: fc.integer({ min: 1, max: 4 }),
          owners: fc.array(fc.nat(3), { minLength: 7, maxLength: 7 }),
          overrides: fc.array(fc.tuple(fc.integer({ min: 1, max: 28 }), fc.nat(3)), { maxLength: 4 }),
          monthlyFeeCents: fc.integer({ min: 0, max: 2_000_000 }),
          pricing: schemeArb,
        })
        .map((r) => {
          const ids = PARTIES.slice(0, r.parties);
          const pick = (i: number): string => ids[i % ids.length]!;
          const [mon, tue, wed, thu, fri, sat, sun] = r.owners.map(pick) as [string, string, string, string, string, string, string];
          return {
            kind,
            parties: ids.map((partyId) => ({ partyId, name: `Clinic ${partyId}` })),
            weekdays: { mon, tue, wed, thu, fri, sat, sun },
            // The period is filled in by the scenario; overrides are day-of-month, any month 2026–2028.
            overrides: [...new Map(r.overrides.map(([d, p]) => [d, p])).entries()].map(([d, p]) => ({ date: `OVERRIDE-${String(d).padStart(2, '0')}`, partyId: pick(p) })),
            monthlyFeeCents: r.monthlyFeeCents,
            pricing: r.pricing,
          };
        });
  }
};

const KINDS = ['pay-per-scan', 'lease', 'commitment', 'risk-sharing', 'consortium'] as const;

interface Scenario extends RefInput {
  shuffleSeed: number;
}

function scenarioArb(kinds: readonly ContractInput['model']['kind'][]): fc.Arbitrary<Scenario> {
  return fc
    .record({
      tz: fc.constantFrom(...ZONES),
      period: fc.constantFrom(...PERIODS),
      taxBps: fc.option(fc.integer({ min: 0, max: 2500 }), { nil: null }),
      // per device: a validity pattern and one or two models
      devices: fc.array(
        fc.record({
          pattern: fc.constantFrom('whole', 'starts', 'ends', 'split', 'within'),
          dayA: fc.integer({ min: 1, max: 28 }),
          dayB: fc.integer({ min: 1, max: 28 }),
          models: fc.tuple(fc.constantFrom(...kinds).chain(modelArb), fc.constantFrom(...kinds).chain(modelArb)),
        }),
        { minLength: 1, maxLength: 2 },
      ),
      // positions within the period as fractions of 1e6, plus device index and billable flag
      scans: fc.array(fc.tuple(fc.integer({ min: 0, max: 999_999 }), fc.nat(1), fc.boolean(), fc.boolean()), { maxLength: 150 }),
      outcomes: fc.array(fc.tuple(fc.integer({ min: 0, max: 999_999 }), fc.nat(1), fc.constantFrom('avoided-ct', 'avoided-mri', 'other')), { maxLength: 8 }),
      downs: fc.array(fc.tuple(fc.integer({ min: -48, max: 800 }), fc.nat(1), fc.boolean()), { maxLength: 8 }),
      shuffleSeed: fc.nat(),
    })
    .map((r) => {
      const { startMs, endMs } = periodBounds(r.period, r.tz);
      const d = (day: number): string => `${r.period}-${String(day).padStart(2, '0')}`;
      const contracts: ContractInput[] = [];
      r.devices.forEach((dev, i) => {
        const deviceId = `dev-${i}`;
        const [lo, hi] = [Math.min(dev.dayA, dev.dayB), Math.max(dev.dayA, dev.dayB)];
        const fix = (m: ContractInput['model']): ContractInput['model'] =>
          m.kind === 'consortium' ? { ...m, overrides: (m.overrides ?? []).map((o) => ({ ...o, date: d(Number(o.date.slice(-2))) })) } : m;
        const mk = (id: string, validFrom: string, validTo: string | null, m: ContractInput['model']): void =>
          void contracts.push({ id, tenantId: 't', deviceId, validFrom, validTo, model: fix(m) });
        switch (dev.pattern) {
          case 'whole':
            mk(`c${i}a`, '2020-01-01', null, dev.models[0]);
            break;
          case 'starts':
            mk(`c${i}a`, d(dev.dayA), null, dev.models[0]);
            break;
          case 'ends':
            mk(`c${i}a`, '2020-01-01', d(dev.dayA), dev.models[0]);
            break;
          case 'within':
            mk(`c${i}a`, d(lo), d(hi), dev.models[0]);
            break;
          case 'split':
            mk(`c${i}a`, '2020-01-01', d(Math.min(dev.dayA, 27)), dev.models[0]);
            mk(`c${i}b`, d(Math.min(dev.dayA, 27) + 1), '2099-12-31', dev.models[1]);
            break;
        }
      });
      const spanMs = endMs - startMs;
      const covers = (deviceId: string, date: string): boolean =>
        contracts.some((c) => c.deviceId === deviceId && c.validFrom <= date && (c.validTo === null || date <= c.validTo));
      const nDev = r.devices.length;
      const usage: UsageEvent[] = [];
      r.scans.forEach(([pos, dev, billable, sameAsPrevious], i) => {
        const deviceId = `dev-${dev % nDev}`;
        // Some scans share a timestamp with the previous one: billing order then falls back to the key.
        const occurredAtMs = sameAsPrevious && usage.length > 0 ? usage[usage.length - 1]!.occurredAtMs : startMs + Math.floor((spanMs * pos) / 1_000_000);
        if (!billable || covers(deviceId, localDate(occurredAtMs, r.tz))) {
          usage.push({ idempotencyKey: `k${String(i).padStart(4, '0')}`, tenantId: 't', deviceId, acquisitionUid: `1.2.${i}`, occurredAtMs, billable });
        }
      });
      const outcomes: OutcomeEvent[] = r.outcomes.map(([pos, dev, outcome], i) => ({
        idempotencyKey: `o${i}`,
        tenantId: 't',
        deviceId: `dev-${dev % nDev}`,
        outcome,
        occurredAtMs: startMs + Math.floor((spanMs * pos) / 1_000_000),
      }));
      const availability: AvailabilityChange[] = r.downs
        .map(([hour, dev, up]) => ({ deviceId: `dev-${dev % nDev}`, up, atMs: startMs + hour * HOUR_MS }))
        .filter((a) => a.atMs < endMs);
      return { tz: r.tz, period: r.period, contracts, usage, outcomes, availability, taxBps: r.taxBps, shuffleSeed: r.shuffleSeed };
    });
}

function rateScenario(s: Scenario): Invoice {
  const tenant: TenantBillingInput = { tenantId: 't', timeZone: s.tz, tax: s.taxBps === null ? { kind: 'exempt', reason: 'exempt medical service' } : { kind: 'rate', rateBps: s.taxBps } };
  return rate({ tenant, period: s.period, contracts: s.contracts, usage: s.usage, outcomes: s.outcomes, availability: s.availability });
}

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let x = seed | 1;
  for (let i = out.length - 1; i > 0; i--) {
    x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

function checkAgainstReference(s: Scenario): void {
  const inv = rateScenario(s);
  const ref = reference(s);
  assert.deepEqual(Object.fromEntries(inv.lines.map((l) => [l.code, l.amountCents])), Object.fromEntries(ref.amounts));
  assert.equal(new Set(inv.lines.map((l) => l.code)).size, inv.lines.length, 'line codes are unique');
  assert.deepEqual(inv.totals, { subtotalCents: ref.subtotal, taxCents: ref.tax, totalCents: ref.subtotal + ref.tax });
  // Totals equal the sum of lines; every amount an integer; unit lines multiply exactly.
  assert.equal(inv.lines.reduce((a, l) => a + l.amountCents, 0), inv.totals.totalCents);
  for (const l of inv.lines) {
    assert.ok(Number.isSafeInteger(l.amountCents) && !Object.is(l.amountCents, -0), l.code);
    if (l.unitAmountCents !== undefined) assert.equal(l.amountCents, l.quantity * l.unitAmountCents, l.code);
  }
  // Determinism: events, outcomes, availability and contracts in another order → the same bytes.
  const again = rateScenario({
    ...s,
    contracts: shuffled(s.contracts, s.shuffleSeed),
    usage: shuffled(s.usage, s.shuffleSeed + 1),
    outcomes: shuffled(s.outcomes, s.shuffleSeed + 2),
    availability: shuffled(s.availability, s.shuffleSeed + 3),
  });
  assert.equal(JSON.stringify(again), JSON.stringify(inv));
}

for (const kind of KINDS) {
  void test(`property: ${kind} matches the reference calculator; totals sum the lines; order does not matter`, () => {
    fc.assert(fc.property(scenarioArb([kind]), checkAgainstReference), { numRuns: RUNS });
  });
}

void test('property: mixed models, contract changes mid-month, two devices', () => {
  fc.assert(fc.property(scenarioArb(KINDS), checkAgainstReference), { numRuns: RUNS });
});

void test('property: late usage: issued + adjustments = the re-rated period, to the cent', () => {
  fc.assert(
    fc.property(scenarioArb(['pay-per-scan', 'lease', 'commitment', 'risk-sharing', 'consortium']), fc.array(fc.boolean(), { maxLength: 150 }), (s, lateMask) => {
      const billedUsage = s.usage.filter((_, i) => lateMask[i] !== true);
      const lateUsage = s.usage.filter((_, i) => lateMask[i] === true);
      const tenant: TenantBillingInput = { tenantId: 't', timeZone: s.tz, tax: { kind: 'exempt', reason: 'x' } };
      const base = { tenant, contracts: s.contracts };
      const issued = rate({ ...base, period: s.period, usage: billedUsage });
      const full = rate({ ...base, period: s.period, usage: s.usage });
      const next = rate({ ...base, period: s.period === '2026-12' ? '2027-01' : '2029-01', usage: [], late: [{ period: s.period, billedUsage, lateUsage }] });
      const adjustments = next.lines.filter((l) => l.code.startsWith('ADJ/'));
      const sum = adjustments.reduce((a, l) => a + l.amountCents, 0);
      assert.equal(issued.totals.subtotalCents + sum, full.totals.subtotalCents);
      // Line by line, too.
      const byCode = new Map(issued.lines.map((l) => [l.code, l.amountCents]));
      for (const a of adjustments) {
        const code = a.code.slice(`ADJ/${s.period}/`.length);
        byCode.set(code, (byCode.get(code) ?? 0) + a.amountCents);
      }
      for (const l of full.lines) assert.equal(byCode.get(l.code) ?? 0, l.amountCents, l.code);
    }),
    { numRuns: Math.ceil(RUNS / 3) },
  );
});

// Contracts: schema, defaults, refusal of bad terms and of overlapping validity.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { throwsWith } from '../protocols/testing.ts';
import { type ContractInput, ownerOfDay, parseContract, parseContracts, parseTenantBilling } from './contracts.ts';

const ppsFlat = (id: string, validFrom: string, validTo: string | null, deviceId = 'dev-1'): ContractInput => ({
  id,
  tenantId: 'hosp-a',
  deviceId,
  validFrom,
  validTo,
  model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } },
});

void test('every pricing model parses, with its defaults', () => {
  const models: ContractInput['model'][] = [
    { kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: [{ upTo: 100, unitPriceCents: 3000 }, { upTo: null, unitPriceCents: 2000 }] } },
    { kind: 'lease', monthlyFeeCents: 500_000, includedScans: 200, overageUnitPriceCents: 1500 },
    { kind: 'commitment', pricing: { scheme: 'volume', tiers: [{ upTo: 50, unitPriceCents: 3000 }, { upTo: null, unitPriceCents: 2500 }] }, minimumScans: 80 },
    { kind: 'risk-sharing', unitPriceCents: 2000, forecastScans: 300, bandScans: 30, shareBelowBps: 5000, shareAboveBps: 5000 },
    {
      kind: 'consortium',
      parties: [{ partyId: 'a', name: 'Clinic A' }, { partyId: 'b', name: 'Clinic B' }],
      weekdays: { mon: 'a', tue: 'b', wed: 'a', thu: 'b', fri: 'a', sat: 'b', sun: 'a' },
      monthlyFeeCents: 100_000,
      pricing: { scheme: 'flat', unitPriceCents: 1000 },
    },
  ];
  for (const model of models) {
    const c = parseContract({ ...ppsFlat('c', '2026-01-01', null), model });
    assert.equal(c.model.kind, model.kind);
  }
  const risk = parseContract({ ...ppsFlat('c', '2026-01-01', null), model: models[3] });
  assert.ok(risk.model.kind === 'risk-sharing');
  assert.deepEqual([risk.model.outcomeBonuses, risk.model.slaCredits], [[], []]);
  const cons = parseContract({ ...ppsFlat('c', '2026-01-01', null), model: models[4] });
  assert.ok(cons.model.kind === 'consortium');
  assert.equal(ownerOfDay(cons.model, '2026-03-02', 1), 'a');
  assert.equal(ownerOfDay({ ...cons.model, overrides: [{ date: '2026-03-02', partyId: 'b' }] }, '2026-03-02', 1), 'b');
  assert.equal(parseTenantBilling({ tenantId: 't', tax: { kind: 'rate', rateBps: 2200 } }).timeZone, 'Europe/Rome');
});

void test('an unknown model, bad tiers and bad money are refused, naming the field', () => {
  const base = ppsFlat('c1', '2026-01-01', null);
  throwsWith(() => parseContract({ ...base, model: { kind: 'barter' } }), 'ECO3D_ERR_BAD_REQUEST', 'unknown pricing model "barter"', 'c1');
  throwsWith(() => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 24.99 } } }), 'ECO3D_ERR_BAD_REQUEST', 'contract.model.pricing.unitPriceCents');
  throwsWith(() => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: Number.NaN } } }), 'ECO3D_ERR_NOT_FINITE', 'unitPriceCents');
  throwsWith(() => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: -100 } } }), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(() => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: '2500' } } }), 'ECO3D_ERR_BAD_REQUEST', 'unitPriceCents');
  throwsWith(
    () => parseContract({ ...base, model: { kind: 'lease', monthlyFeeCents: 1e15, includedScans: 10, overageUnitPriceCents: 100 } }),
    'ECO3D_ERR_BAD_REQUEST',
    'monthlyFeeCents',
  );
  throwsWith(
    () => parseContract({ ...base, model: { kind: 'lease', monthlyFeeCents: 100, includedScans: -1, overageUnitPriceCents: 100 } }),
    'ECO3D_ERR_BAD_REQUEST',
    'includedScans',
  );
  throwsWith(
    () => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: [{ upTo: 100, unitPriceCents: 1 }, { upTo: 50, unitPriceCents: 1 }, { upTo: null, unitPriceCents: 1 }] } } }),
    'ECO3D_ERR_BAD_REQUEST',
    'tiers.1.upTo',
  );
  throwsWith(() => parseContract({ ...base, model: { kind: 'pay-per-scan', pricing: { scheme: 'volume', tiers: [{ upTo: 100, unitPriceCents: 1 }] } } }), 'ECO3D_ERR_BAD_REQUEST', 'tiers.0.upTo');
  throwsWith(
    () => parseContract({ ...base, model: { kind: 'risk-sharing', unitPriceCents: 1, forecastScans: 10, bandScans: 11, shareBelowBps: 1, shareAboveBps: 1 } }),
    'ECO3D_ERR_BAD_REQUEST',
    'bandScans',
  );
  throwsWith(
    () => parseContract({ ...base, model: { kind: 'risk-sharing', unitPriceCents: 1, forecastScans: 10, bandScans: 1, shareBelowBps: 10_001, shareAboveBps: 1 } }),
    'ECO3D_ERR_BAD_REQUEST',
    'shareBelowBps',
  );
  throwsWith(
    () =>
      parseContract({
        ...base,
        model: {
          kind: 'consortium',
          parties: [{ partyId: 'a', name: 'A' }],
          weekdays: { mon: 'a', tue: 'zz', wed: 'a', thu: 'a', fri: 'a', sat: 'a', sun: 'a' },
          monthlyFeeCents: 1,
          pricing: { scheme: 'flat', unitPriceCents: 1 },
        },
      }),
    'ECO3D_ERR_BAD_REQUEST',
    'weekdays.tue',
    'unknown party zz',
  );
  throwsWith(() => parseContract({ ...base, validFrom: '2026-02-30' }), 'ECO3D_ERR_BAD_REQUEST', 'validFrom');
  throwsWith(() => parseContract({ ...base, validTo: '2025-12-31' }), 'ECO3D_ERR_BAD_REQUEST', 'validTo');
  throwsWith(() => parseContract({ ...base, extra: 1 }), 'ECO3D_ERR_BAD_REQUEST', 'contract');
  throwsWith(() => parseTenantBilling({ tenantId: 't', tax: { kind: 'rate', rateBps: 22.5 } }), 'ECO3D_ERR_BAD_REQUEST', 'tenant.tax.rateBps');
  throwsWith(() => parseTenantBilling({ tenantId: 't', tax: { kind: 'exempt', reason: '' } }), 'ECO3D_ERR_BAD_REQUEST', 'tenant.tax.reason');
  throwsWith(() => parseTenantBilling({ tenantId: 't', timeZone: 'Nowhere/City', tax: { kind: 'exempt', reason: 'x' } }), 'ECO3D_ERR_BAD_REQUEST', 'tenant.timeZone');
});

void test('overlapping validity for the same tenant and device is a CONFLICT naming both contracts', () => {
  throwsWith(() => parseContracts([ppsFlat('c1', '2026-01-01', '2026-03-15'), ppsFlat('c2', '2026-03-15', null)]), 'ECO3D_ERR_CONFLICT', 'c1', 'c2', 'overlap');
  throwsWith(() => parseContracts([ppsFlat('c2', '2026-06-01', '2026-06-30'), ppsFlat('c1', '2026-01-01', null)]), 'ECO3D_ERR_CONFLICT', 'c1', 'c2');
  throwsWith(() => parseContracts([ppsFlat('c1', '2026-01-01', null), ppsFlat('c1', '2027-01-01', null, 'dev-2')]), 'ECO3D_ERR_CONFLICT', 'c1');
  // Back to back, or on another device, or for another tenant: fine.
  const ok = parseContracts([
    ppsFlat('c2', '2026-03-16', null),
    ppsFlat('c1', '2026-01-01', '2026-03-15'),
    ppsFlat('c3', '2026-01-01', null, 'dev-2'),
    { ...ppsFlat('c4', '2026-01-01', null), tenantId: 'hosp-b' },
  ]);
  assert.deepEqual(ok.map((c) => c.id), ['c1', 'c2', 'c3', 'c4']);
});

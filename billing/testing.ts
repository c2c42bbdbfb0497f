// Fixtures billing's tests share (not part of billing's public surface).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Temporal } from 'temporal-polyfill';
import type { ContractInput, TenantBillingInput } from './contracts.ts';
import { type Invoice, rate } from './pricing.ts';

/** The compact input of PRICING.md's worked example: wall-clock times in the tenant's zone. */
export interface WorkedExample {
  tenant: TenantBillingInput & { timeZone: string; tenantId: string };
  period: string;
  contracts: ContractInput[];
  scans: Record<string, string[]>;
  notBillable: Record<string, string[]>;
  outcomes: { deviceId: string; outcome: string; at: string }[];
  availability: { deviceId: string; up: boolean; at: string }[];
}

export function between(text: string, start: string, end: string): string {
  const i = text.indexOf(start);
  const j = text.indexOf(end, i + start.length);
  assert.ok(i >= 0 && j > i, `the document lacks ${start} … ${end}`);
  return text.slice(i + start.length, j).trim();
}

/** The worked example's input block, as PRICING.md has it. */
export function readWorkedExample(): WorkedExample {
  const doc = readFileSync(new URL('./PRICING.md', import.meta.url), 'utf8');
  return JSON.parse(between(between(doc, '<!-- example:input -->', '<!-- /example:input -->'), '```json', '```')) as WorkedExample;
}

/** The example's compact input as rate() input, then rated. */
export function rateExample(ex: WorkedExample): Invoice {
  const tz = ex.tenant.timeZone;
  const ms = (local: string): number => Temporal.PlainDateTime.from(local).toZonedDateTime(tz).epochMilliseconds;
  const events = (byDevice: Record<string, string[]>, billable: boolean, prefix: string) =>
    Object.entries(byDevice).flatMap(([deviceId, times]) =>
      times.map((t, i) => ({
        idempotencyKey: `${prefix}/${deviceId}/${i + 1}`,
        tenantId: ex.tenant.tenantId,
        deviceId,
        acquisitionUid: `2.25.${deviceId.length}${i + 1}`,
        occurredAtMs: ms(t),
        billable,
      })),
    );
  return rate({
    tenant: ex.tenant,
    period: ex.period,
    contracts: ex.contracts,
    usage: [...events(ex.scans, true, 'scan'), ...events(ex.notBillable, false, 'aborted')],
    outcomes: ex.outcomes.map((o, i) => ({ idempotencyKey: `outcome/${i + 1}`, tenantId: ex.tenant.tenantId, deviceId: o.deviceId, outcome: o.outcome, occurredAtMs: ms(o.at) })),
    availability: ex.availability.map((a) => ({ deviceId: a.deviceId, up: a.up, atMs: ms(a.at) })),
  });
}

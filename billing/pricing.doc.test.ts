// The worked example of billing/PRICING.md, computed: its input block is rated and the invoice
// table in the document must be exactly what rate() prints, so the document cannot drift.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Temporal } from 'temporal-polyfill';
import type { ContractInput, TenantBillingInput } from './contracts.ts';
import { formatEuro } from './money.ts';
import { type Invoice, rate } from './pricing.ts';

const DOC = new URL('./PRICING.md', import.meta.url);

interface Example {
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
  assert.ok(i >= 0 && j > i, `PRICING.md lacks ${start} … ${end}`);
  return text.slice(i + start.length, j).trim();
}

/** The example's compact input (wall-clock times in the tenant zone) as rate() input, then rated. */
export function rateExample(ex: Example): Invoice {
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

/** The invoice as the markdown table of PRICING.md. */
export function renderTable(inv: Invoice): string {
  const rows = inv.lines.map(
    (l) => `| \`${l.code}\` | ${l.description} | ${l.quantity} | ${l.unitAmountCents === undefined ? '' : formatEuro(l.unitAmountCents)} | ${formatEuro(l.amountCents)} | \`${l.explanation.formula}\` |`,
  );
  return [
    '| Code | Description | Qty | Unit EUR | Amount EUR | Formula (cents) |',
    '| --- | --- | ---: | ---: | ---: | --- |',
    ...rows,
    `| | **Subtotal** | | | **${formatEuro(inv.totals.subtotalCents)}** | |`,
    `| | **Tax** | | | **${formatEuro(inv.totals.taxCents)}** | |`,
    `| | **Total** | | | **${formatEuro(inv.totals.totalCents)}** | |`,
  ].join('\n');
}

void test('PRICING.md: the worked example invoice is what rate() computes, to the cent', () => {
  const doc = readFileSync(DOC, 'utf8');
  const input = JSON.parse(between(between(doc, '<!-- example:input -->', '<!-- /example:input -->'), '```json', '```')) as Example;
  const inv = rateExample(input);
  const table = between(doc, '<!-- example:lines -->', '<!-- /example:lines -->');
  assert.equal(table, renderTable(inv));
  // The totals the prose quotes.
  assert.ok(doc.includes(`**${formatEuro(inv.totals.totalCents)} EUR**`), 'the total quoted in the text');
  // README.md shows the same invoice.
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  assert.equal(between(readme, '<!-- example:lines -->', '<!-- /example:lines -->'), renderTable(inv), 'README.md shows the worked invoice as computed');
  assert.ok(readme.includes(`**${formatEuro(inv.totals.totalCents)} EUR**`), 'README.md quotes the total');
});

// The worked example of billing/PRICING.md, computed: its input block is rated and the invoice
// table in the document must be exactly what rate() prints, so the document cannot drift.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatEuro } from './money.ts';
import type { Invoice } from './pricing.ts';
import { between, rateExample, readWorkedExample } from './testing.ts';

const DOC = new URL('./PRICING.md', import.meta.url);

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
  const inv = rateExample(readWorkedExample());
  const table = between(doc, '<!-- example:lines -->', '<!-- /example:lines -->');
  assert.equal(table, renderTable(inv));
  // The totals the prose quotes.
  assert.ok(doc.includes(`**${formatEuro(inv.totals.totalCents)} EUR**`), 'the total quoted in the text');
  // README.md shows the same invoice.
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  assert.equal(between(readme, '<!-- example:lines -->', '<!-- /example:lines -->'), renderTable(inv), 'README.md shows the worked invoice as computed');
  assert.ok(readme.includes(`**${formatEuro(inv.totals.totalCents)} EUR**`), 'README.md quotes the total');
});

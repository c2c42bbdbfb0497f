// An invoice as the documents a hospital's accounts department receives: canonical JSON, CSV
// for spreadsheets, PDF for people and FHIR R4 (Invoice + ChargeItem) for their systems.
//
// Pure: the invoice comes from rate() (pricing.ts), and the same document gives the same bytes
// in every format, the PDF included (its dates come from the document, never from the clock).
// Amounts stay integer cents until the last moment and are printed by string arithmetic, so the
// euro figures of every format agree to the cent with the JSON and with billing/PRICING.md.
import { createHash } from 'node:crypto';
import type { Annotation, ChargeItem, Invoice as FhirInvoiceResource, InvoiceLineItem, Money, Period as FhirPeriod, Reference } from '@medplum/fhirtypes';
import { stringify } from 'csv-stringify/sync';
import PDFDocument from 'pdfkit';
import { Temporal } from 'temporal-polyfill';
import { Eco3dError } from '../protocols/errors.ts';
import { fhirInstant } from '../protocols/fhir.ts';
import { type Cents, formatEuro } from './money.ts';
import type { Invoice, InvoiceLine } from './pricing.ts';

export type FhirInvoice = FhirInvoiceResource;
export type FhirChargeItem = ChargeItem;

export interface InvoiceDocument {
  readonly invoice: Invoice;
  /** `open`: a preview of a period not yet issued (it can still change); `issued`: stored, immutable. */
  readonly status: 'open' | 'issued';
  /** Issued invoices only, e.g. `INV-<tenant>-2026-11`. */
  readonly number?: string;
  /** Issued invoices only. */
  readonly issuedAtMs?: number;
  /**
   * Issued invoices only: hex SHA-256 of the canonical issued invoice JSON (invoices.ts
   * canonicalInvoiceJson: the invoice as rate() built it, which is byte for byte the `invoice`
   * member of invoiceToJson). Printed on the PDF and in the FHIR notes, not verified here.
   */
  readonly sha256?: string;
}

const ROUNDING_NOTE = 'Amounts in integer euro cents, each line rounded once half up (billing/PRICING.md)';
const SYSTEM_TENANT = 'urn:eco3d:tenant';
const SYSTEM_INVOICE = 'urn:eco3d:invoice';
const SYSTEM_RULE = 'urn:eco3d:billing-rule';

// ---------------------------------------------------------------------------------------------
// Money as text

/**
 * The JSON decimal of a FHIR Money.value: the number whose shortest printing is the euro string
 * without trailing zeros (1230 → 12.3, −5 → -0.05). Parsing the decimal string (rather than
 * dividing by 100) gives the double nearest to it, which JavaScript prints back as that string.
 */
export const centsToDecimal = (cents: Cents): number => Number(formatEuro(cents));

// ---------------------------------------------------------------------------------------------
// The document, checked once for every format

const bad = (field: string, message: string): Eco3dError => new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${field}: ${message}`, { details: { field } });

function requireSafeInteger(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${field} must be a finite integer, got ${String(v)}`, { details: { field } });
  if (!Number.isSafeInteger(v)) throw bad(field, `must be a safe integer, got ${v}`);
  return v;
}

function requireText(field: string, v: unknown, maxLength: number): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > maxLength) throw bad(field, `a non-empty string of at most ${maxLength} characters is required`);
  return v;
}

const isTaxLine = (l: InvoiceLine): boolean => l.explanation.rule === 'tax' || l.explanation.rule === 'tax-exempt';

interface Checked {
  readonly doc: InvoiceDocument;
  readonly inv: Invoice;
  /** Every line but the tax line, in invoice order. */
  readonly charges: readonly InvoiceLine[];
  readonly tax: InvoiceLine;
  readonly issued: boolean;
}

/**
 * The consistency every format relies on (the sums a reader will redo), so that no format can
 * print an invoice that does not add up. rate() output always passes; a hand-edited or
 * truncated stored invoice does not.
 */
function check(doc: InvoiceDocument): Checked {
  if (doc === null || typeof doc !== 'object') throw bad('doc', 'an invoice document is required');
  if (doc.status !== 'open' && doc.status !== 'issued') throw bad('doc.status', `must be open or issued, got ${JSON.stringify(doc.status)}`);
  const issued = doc.status === 'issued';
  if (issued) {
    requireText('doc.number', doc.number, 128);
    if (/[\p{Cc}]/u.test(doc.number!)) throw bad('doc.number', 'control characters are not allowed');
    requireSafeInteger('doc.issuedAtMs', doc.issuedAtMs);
    if (doc.sha256 !== undefined && !/^[0-9a-f]{64}$/.test(doc.sha256)) throw bad('doc.sha256', 'a lowercase hex SHA-256 is required');
  } else {
    for (const k of ['number', 'issuedAtMs', 'sha256'] as const) {
      if (doc[k] !== undefined) throw bad(`doc.${k}`, 'an open period (preview) has no number, issue date or hash');
    }
  }
  const inv = doc.invoice;
  if (inv === null || typeof inv !== 'object') throw bad('doc.invoice', 'an invoice is required');
  requireText('doc.invoice.tenantId', inv.tenantId, 128);
  if (typeof inv.period !== 'string' || !/^\d{4}-(0[1-9]|1[0-2])$/.test(inv.period)) throw bad('doc.invoice.period', `expected YYYY-MM, got ${JSON.stringify(inv.period)}`);
  requireText('doc.invoice.timeZone', inv.timeZone, 64);
  try {
    Temporal.Instant.fromEpochMilliseconds(0).toZonedDateTimeISO(inv.timeZone);
  } catch {
    throw bad('doc.invoice.timeZone', `unknown time zone ${JSON.stringify(inv.timeZone)}`);
  }
  if (inv.currency !== 'EUR') throw bad('doc.invoice.currency', `only EUR is supported, got ${JSON.stringify(inv.currency)}`);
  requireSafeInteger('doc.invoice.periodStartMs', inv.periodStartMs);
  if (requireSafeInteger('doc.invoice.periodEndMs', inv.periodEndMs) <= inv.periodStartMs) throw bad('doc.invoice.periodEndMs', 'must be after periodStartMs');
  const lines: readonly InvoiceLine[] = inv.lines;
  // Checked through `unknown`: Array.isArray narrows a readonly array to any[].
  const raw: unknown = inv.lines;
  if (!Array.isArray(raw) || lines.length === 0) throw bad('doc.invoice.lines', 'a non-empty array of lines is required (the tax line at least)');
  const codes = new Set<string>();
  let sum = 0n;
  lines.forEach((l, i) => {
    const f = `doc.invoice.lines[${i}]`;
    if (l === null || typeof l !== 'object') throw bad(f, 'a line object is required');
    requireText(`${f}.code`, l.code, 512);
    if (codes.has(l.code)) throw bad(`${f}.code`, `duplicate line code ${l.code}`);
    codes.add(l.code);
    if (typeof l.description !== 'string') throw bad(`${f}.description`, 'a string is required');
    requireSafeInteger(`${f}.quantity`, l.quantity);
    if (l.unitAmountCents !== undefined) requireSafeInteger(`${f}.unitAmountCents`, l.unitAmountCents);
    requireSafeInteger(`${f}.amountCents`, l.amountCents);
    if (l.explanation === null || typeof l.explanation !== 'object') throw bad(`${f}.explanation`, 'an explanation is required');
    requireText(`${f}.explanation.rule`, l.explanation.rule, 64);
    requireSafeInteger(`${f}.explanation.eventCount`, l.explanation.eventCount);
    if (typeof l.explanation.formula !== 'string') throw bad(`${f}.explanation.formula`, 'a string is required');
    const last = i === lines.length - 1;
    if (isTaxLine(l) !== last) throw bad(f, last ? 'the last line must be the tax line' : 'only the last line may be a tax line');
    if (!last) sum += BigInt(l.amountCents);
  });
  const tax = lines.at(-1)!;
  const t = inv.totals;
  if (t === null || typeof t !== 'object') throw bad('doc.invoice.totals', 'totals are required');
  if (BigInt(requireSafeInteger('doc.invoice.totals.subtotalCents', t.subtotalCents)) !== sum) throw bad('doc.invoice.totals.subtotalCents', `is ${t.subtotalCents}, the lines sum to ${sum}`);
  if (requireSafeInteger('doc.invoice.totals.taxCents', t.taxCents) !== tax.amountCents) throw bad('doc.invoice.totals.taxCents', `is ${t.taxCents}, the tax line says ${tax.amountCents}`);
  if (BigInt(requireSafeInteger('doc.invoice.totals.totalCents', t.totalCents)) !== sum + BigInt(t.taxCents)) throw bad('doc.invoice.totals.totalCents', `is ${t.totalCents}, not subtotal + tax`);
  return { doc, inv, charges: lines.slice(0, -1), tax, issued };
}

// ---------------------------------------------------------------------------------------------
// JSON

interface KeyOrder {
  readonly keys: readonly string[];
  readonly nested?: Readonly<Record<string, KeyOrder>>;
}

// The order rate() builds in. A stored invoice read back from jsonb has its keys reordered;
// this puts them back, so the bytes (and the hash) do not depend on where the invoice was kept.
const LINE_ORDER: KeyOrder = {
  keys: ['code', 'description', 'contractId', 'deviceId', 'partyId', 'quantity', 'unitAmountCents', 'amountCents', 'explanation'],
  nested: { explanation: { keys: ['rule', 'tier', 'eventCount', 'eventKeys', 'formula'] } },
};
const INVOICE_ORDER: KeyOrder = {
  keys: ['tenantId', 'period', 'timeZone', 'currency', 'periodStartMs', 'periodEndMs', 'lines', 'usage', 'totals'],
  nested: {
    lines: LINE_ORDER,
    usage: { keys: ['billableEvents', 'nonBillableEvents'] },
    totals: { keys: ['subtotalCents', 'taxCents', 'totalCents'] },
  },
};
const DOC_ORDER: KeyOrder = { keys: ['status', 'number', 'issuedAtMs', 'sha256', 'invoice'], nested: { invoice: INVOICE_ORDER } };

/** Known keys in their order, then any others sorted (fields added later are kept, not dropped). */
function ordered(v: unknown, order: KeyOrder | undefined): unknown {
  if (Array.isArray(v)) return v.map((x) => ordered(x, order));
  if (v === null || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  const known = order?.keys ?? [];
  const rest = Object.keys(o)
    .filter((k) => !known.includes(k))
    .sort();
  const out: Record<string, unknown> = {};
  for (const k of [...known, ...rest]) {
    if (!Object.hasOwn(o, k) || o[k] === undefined) continue;
    // defineProperty: a key named __proto__ stays data.
    Object.defineProperty(out, k, { value: ordered(o[k], order?.nested?.[k]), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** The document as canonical JSON: fixed key order, no spaces, one trailing newline. */
export function invoiceToJson(doc: InvoiceDocument): string {
  check(doc);
  return `${JSON.stringify(ordered(doc, DOC_ORDER))}\n`;
}

// ---------------------------------------------------------------------------------------------
// CSV

const CSV_COLUMNS = [
  'number',
  'status',
  'tenantId',
  'period',
  'code',
  'description',
  'contractId',
  'deviceId',
  'partyId',
  'quantity',
  'unitAmountCents',
  'amountCents',
  'amountEuro',
  'rule',
  'tier',
  'eventCount',
  'formula',
] as const;
type CsvRow = Partial<Record<(typeof CSV_COLUMNS)[number], string | number>>;

/**
 * A text cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP "CSV
 * injection"; the full-width forms too, which some spreadsheets normalise). Only text columns:
 * a negative number of cents must stay a number, and the euro column is ours (`-?\d+\.\d\d`).
 */
function safeText(s: string | undefined): string | undefined {
  return s !== undefined && /^[=+\-@\t\r\uFF1D\uFF0B\uFF0D\uFF20]/.test(s) ? `'${s}` : s;
}

/**
 * One row per invoice line (the tax line included, as in PRICING.md), then the SUBTOTAL, TAX and
 * TOTAL rows (their `rule` is empty). RFC 4180 with CRLF, header first.
 */
export function invoiceToCsv(doc: InvoiceDocument): string {
  const { inv, tax } = check(doc);
  const head: CsvRow = { number: safeText(doc.number), status: doc.status, tenantId: safeText(inv.tenantId), period: inv.period };
  const rows: CsvRow[] = inv.lines.map((l) => ({
    ...head,
    code: safeText(l.code),
    description: safeText(l.description),
    contractId: safeText(l.contractId),
    deviceId: safeText(l.deviceId),
    partyId: safeText(l.partyId),
    quantity: l.quantity,
    unitAmountCents: l.unitAmountCents,
    amountCents: l.amountCents,
    amountEuro: formatEuro(l.amountCents),
    rule: safeText(l.explanation.rule),
    tier: l.explanation.tier,
    eventCount: l.explanation.eventCount,
    formula: safeText(l.explanation.formula),
  }));
  const t = inv.totals;
  const total = (code: string, description: string, cents: Cents, formula: string): CsvRow => ({
    ...head,
    code,
    description: safeText(description),
    amountCents: cents,
    amountEuro: formatEuro(cents),
    formula: safeText(formula),
  });
  rows.push(
    total('SUBTOTAL', 'Subtotal', t.subtotalCents, `sum of ${inv.lines.length - 1} lines = ${t.subtotalCents}`),
    total('TAX', tax.description, t.taxCents, tax.explanation.formula),
    total('TOTAL', 'Total', t.totalCents, `${t.subtotalCents} + ${t.taxCents} = ${t.totalCents}`),
  );
  // quoted_match: csv-stringify quotes a field holding the record delimiter (CRLF) but not one
  // holding a lone CR or LF, which RFC 4180 readers would take for the end of the record.
  return stringify(rows, { header: true, columns: [...CSV_COLUMNS], record_delimiter: 'windows', quoted_match: /[\r\n]/ });
}

// ---------------------------------------------------------------------------------------------
// Dates in the tenant's zone

const zoned = (ms: number, tz: string): Temporal.ZonedDateTime => Temporal.Instant.fromEpochMilliseconds(ms).toZonedDateTimeISO(tz);

/** `2026-03-01T00:00:00+01:00`: FHIR dateTime with the tenant's offset. */
const isoWithOffset = (ms: number, tz: string): string => zoned(ms, tz).toString({ timeZoneName: 'never', smallestUnit: 'second' });

/** `2026-04-02 10:15`: wall-clock time in the tenant's zone, for people. */
const localMinute = (ms: number, tz: string): string => zoned(ms, tz).toPlainDateTime().toString({ smallestUnit: 'minute' }).replace('T', ' ');

/** First and last local date of the period. */
function periodDays(inv: Invoice): { first: string; last: string } {
  const first = Temporal.PlainDate.from(`${inv.period}-01`);
  return { first: first.toString(), last: first.add({ months: 1 }).subtract({ days: 1 }).toString() };
}

// ---------------------------------------------------------------------------------------------
// PDF

// pdfkit writes the standard fonts in WinAnsiEncoding and emits any other character as a
// broken multi-byte hex code: keep what WinAnsi has, spell the minus sign and the arrow that
// formulas use, replace the rest.
const WIN_ANSI_EXTRA = new Set([
  0x152, 0x153, 0x160, 0x161, 0x178, 0x17d, 0x17e, 0x192, 0x2c6, 0x2dc, 0x2013, 0x2014, 0x2018, 0x2019, 0x201a, 0x201c, 0x201d, 0x201e, 0x2020, 0x2021, 0x2022, 0x2026,
  0x2030, 0x2039, 0x203a, 0x20ac, 0x2122,
]);

function pdfText(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if ((c >= 0x20 && c < 0x7f) || (c >= 0xa0 && c <= 0xff) || WIN_ANSI_EXTRA.has(c)) out += ch;
    else if (c === 0x2212) out += '-';
    else if (c === 0x2192) out += '->';
    else if (c === 0x09 || c === 0x0a || c === 0x0d || c === 0x2009 || c === 0x202f) out += ' ';
    else out += '?';
  }
  return out;
}

const A4 = { width: 595.28, height: 841.89 };
const MARGIN = 50;
const FOOTER_HEIGHT = 34;
const CONTENT_BOTTOM = A4.height - MARGIN - FOOTER_HEIGHT;
const GREY = '#5a5a5a';
const RULE = '#b0b0b0';
// Code | Description | Qty | Unit EUR | Amount EUR: 495 pt between the margins.
const COLS = { code: { x: MARGIN, w: 140 }, desc: { x: 196, w: 170 }, qty: { x: 370, w: 40 }, unit: { x: 414, w: 60 }, amount: { x: 478, w: 67.28 } };
const TABLE_WIDTH = A4.width - 2 * MARGIN;
const SIZE = { code: 7.5, body: 8, formula: 7, header: 8 };

type Doc = PDFKit.PDFDocument;

/** Text in a box that never starts a page by itself (the height bounds pdfkit's wrapper). */
function put(pdf: Doc, text: string, x: number, y: number, opts: { width: number; height?: number; align?: 'left' | 'right' | 'center' }): void {
  pdf.text(text, x, y, { width: opts.width, height: opts.height ?? pdf.heightOfString(text, { width: opts.width }) + 2, align: opts.align ?? 'left', lineGap: 0 });
}

function tableHeader(pdf: Doc, y: number): number {
  pdf.font('Helvetica-Bold').fontSize(SIZE.header).fillColor('black');
  put(pdf, 'Code', COLS.code.x, y, { width: COLS.code.w });
  put(pdf, 'Description', COLS.desc.x, y, { width: COLS.desc.w });
  put(pdf, 'Qty', COLS.qty.x, y, { width: COLS.qty.w, align: 'right' });
  put(pdf, 'Unit EUR', COLS.unit.x, y, { width: COLS.unit.w, align: 'right' });
  put(pdf, 'Amount EUR', COLS.amount.x, y, { width: COLS.amount.w, align: 'right' });
  const bottom = y + SIZE.header + 4;
  pdf.moveTo(MARGIN, bottom).lineTo(MARGIN + TABLE_WIDTH, bottom).lineWidth(0.6).strokeColor('black').stroke();
  return bottom + 4;
}

interface RowText {
  readonly code: string;
  readonly desc: string;
  readonly qty: string;
  readonly unit: string;
  readonly amount: string;
  readonly formula: string;
}

function rowHeights(pdf: Doc, r: RowText): { main: number; formula: number } {
  pdf.font('Helvetica').fontSize(SIZE.code);
  const code = pdf.heightOfString(r.code, { width: COLS.code.w });
  pdf.fontSize(SIZE.body);
  const desc = pdf.heightOfString(r.desc, { width: COLS.desc.w });
  pdf.fontSize(SIZE.formula);
  const formula = pdf.heightOfString(r.formula, { width: TABLE_WIDTH - 8 });
  return { main: Math.max(code, desc), formula };
}

function drawRow(pdf: Doc, r: RowText, y: number, h: { main: number; formula: number }): number {
  pdf.font('Helvetica').fontSize(SIZE.code).fillColor('black');
  put(pdf, r.code, COLS.code.x, y, { width: COLS.code.w });
  pdf.fontSize(SIZE.body);
  put(pdf, r.desc, COLS.desc.x, y, { width: COLS.desc.w });
  put(pdf, r.qty, COLS.qty.x, y, { width: COLS.qty.w, align: 'right' });
  put(pdf, r.unit, COLS.unit.x, y, { width: COLS.unit.w, align: 'right' });
  put(pdf, r.amount, COLS.amount.x, y, { width: COLS.amount.w, align: 'right' });
  const fy = y + h.main + 1;
  pdf.fontSize(SIZE.formula).fillColor(GREY);
  put(pdf, r.formula, MARGIN + 8, fy, { width: TABLE_WIDTH - 8 });
  const bottom = fy + h.formula + 2;
  pdf.moveTo(MARGIN, bottom).lineTo(MARGIN + TABLE_WIDTH, bottom).lineWidth(0.3).strokeColor(RULE).stroke();
  return bottom + 3;
}

function drawHeader(pdf: Doc, c: Checked): number {
  const { inv, doc } = c;
  pdf.font('Helvetica-Bold').fontSize(20).fillColor('black');
  put(pdf, 'Eco3D', MARGIN, MARGIN, { width: 200 });
  const title = c.issued ? 'Invoice' : 'Invoice preview (open period, not issued)';
  pdf.fontSize(c.issued ? 16 : 12);
  put(pdf, title, MARGIN + 200, MARGIN + (c.issued ? 2 : 5), { width: TABLE_WIDTH - 200, align: 'right' });
  pdf.font('Helvetica').fontSize(8).fillColor(GREY);
  put(pdf, 'Robotic 3D ultrasound, Imaging-as-a-Service (pay per scan)', MARGIN, MARGIN + 24, { width: TABLE_WIDTH });
  const { first, last } = periodDays(inv);
  const meta: [string, string][] = [
    ...(c.issued ? ([['Number', doc.number!]] as [string, string][]) : []),
    ['Tenant', inv.tenantId],
    ['Period', `${inv.period} (${first} to ${last})`],
    ['Time zone', inv.timeZone],
    c.issued ? ['Issued', `${localMinute(doc.issuedAtMs!, inv.timeZone)} (${inv.timeZone})`] : ['Issued', 'not yet: the period is open and its amounts can still change'],
    ['Scans', `${inv.usage.billableEvents} billable, ${inv.usage.nonBillableEvents} not billable`],
    ['Currency', 'EUR'],
  ];
  let y = MARGIN + 44;
  pdf.fontSize(9);
  for (const [k, v] of meta) {
    pdf.font('Helvetica-Bold').fillColor('black');
    put(pdf, `${k}:`, MARGIN, y, { width: 70 });
    pdf.font('Helvetica');
    const text = pdfText(v);
    const h = pdf.heightOfString(text, { width: TABLE_WIDTH - 75 });
    put(pdf, text, MARGIN + 75, y, { width: TABLE_WIDTH - 75 });
    y += Math.max(h, 11) + 1;
  }
  return y + 12;
}

function drawTotals(pdf: Doc, c: Checked, y: number): number {
  const t = c.inv.totals;
  const rows: [string, string, boolean][] = [
    ['Subtotal', formatEuro(t.subtotalCents), false],
    [`Tax: ${pdfText(c.tax.description)}`, formatEuro(t.taxCents), false],
    ['Total EUR', formatEuro(t.totalCents), true],
  ];
  let at = y + 6;
  for (const [label, amount, bold] of rows) {
    pdf.font(bold ? 'Helvetica-Bold' : 'Helvetica').fontSize(bold ? 11 : 9).fillColor('black');
    const h = Math.max(pdf.heightOfString(label, { width: 260 }), bold ? 13 : 11);
    put(pdf, label, COLS.unit.x + COLS.unit.w - 260 - 80, at, { width: 260, align: 'right' });
    put(pdf, amount, COLS.amount.x - 20, at, { width: COLS.amount.w + 20, align: 'right' });
    at += h + 3;
  }
  return at;
}

/** Space the totals need, measured as drawn. */
function totalsHeight(pdf: Doc, c: Checked): number {
  pdf.font('Helvetica').fontSize(9);
  return 6 + 11 + 3 + Math.max(pdf.heightOfString(`Tax: ${pdfText(c.tax.description)}`, { width: 260 }), 11) + 3 + 13 + 3 + 4;
}

function drawFooters(pdf: Doc, c: Checked): void {
  const range = pdf.bufferedPageRange();
  const label = c.issued ? `Invoice ${c.doc.number!}` : `Invoice preview ${c.inv.tenantId} ${c.inv.period}`;
  for (let i = 0; i < range.count; i++) {
    pdf.switchToPage(range.start + i);
    // Writing below the bottom margin would make pdfkit start a new page.
    const bottomMargin = pdf.page.margins.bottom;
    pdf.page.margins.bottom = 0;
    const y = A4.height - MARGIN - FOOTER_HEIGHT + 8;
    pdf.moveTo(MARGIN, y - 4).lineTo(MARGIN + TABLE_WIDTH, y - 4).lineWidth(0.3).strokeColor(RULE).stroke();
    pdf.font('Helvetica').fontSize(6.5).fillColor(GREY);
    put(pdf, ROUNDING_NOTE, MARGIN, y, { width: TABLE_WIDTH - 90 });
    put(pdf, `Page ${i + 1} of ${range.count}`, MARGIN + TABLE_WIDTH - 90, y, { width: 90, align: 'right' });
    put(pdf, pdfText(label), MARGIN, y + 9, { width: TABLE_WIDTH });
    if (c.doc.sha256 !== undefined) put(pdf, `SHA-256 of the issued invoice JSON: ${c.doc.sha256}`, MARGIN, y + 18, { width: TABLE_WIDTH });
    pdf.page.margins.bottom = bottomMargin;
  }
}

/**
 * The invoice as an A4 PDF in the standard Helvetica (no font files): header, the lines with
 * their formulas, totals, and on every page the rounding rule, the page number and (issued) the
 * SHA-256. Paginated by measuring each row before drawing it. Deterministic: the creation date
 * is the issue date (the period end for a preview), and pdfkit derives the file ID from the
 * document info, so the same document gives the same bytes.
 */
export function invoiceToPdf(doc: InvoiceDocument): Promise<Buffer> {
  const c = check(doc);
  const { inv } = c;
  const title = c.issued ? `Invoice ${doc.number!}` : `Invoice preview ${inv.tenantId} ${inv.period}`;
  const pdf = new PDFDocument({
    size: 'A4',
    margins: { top: MARGIN, left: MARGIN, right: MARGIN, bottom: MARGIN + FOOTER_HEIGHT },
    bufferPages: true,
    info: {
      Title: pdfText(title),
      Author: 'Eco3D',
      Subject: pdfText(`${inv.tenantId} ${inv.period} (${inv.timeZone})`),
      Creator: 'Eco3D billing',
      CreationDate: new Date(c.issued ? doc.issuedAtMs! : inv.periodEndMs),
    },
  });
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    pdf.on('data', (b: Buffer) => chunks.push(b));
    pdf.on('end', () => resolve(Buffer.concat(chunks)));
    pdf.on('error', reject);
  });

  let y = tableHeader(pdf, drawHeader(pdf, c));
  const atTop = (): boolean => y <= MARGIN + SIZE.header + 9;
  for (const l of inv.lines) {
    const r: RowText = {
      code: pdfText(l.code),
      desc: pdfText(l.description),
      qty: String(l.quantity),
      unit: l.unitAmountCents === undefined ? '' : formatEuro(l.unitAmountCents),
      amount: formatEuro(l.amountCents),
      formula: pdfText(l.explanation.formula),
    };
    const h = rowHeights(pdf, r);
    if (y + h.main + h.formula + 6 > CONTENT_BOTTOM && !atTop()) {
      pdf.addPage();
      y = tableHeader(pdf, MARGIN);
    }
    y = drawRow(pdf, r, y, h);
  }
  if (y + totalsHeight(pdf, c) > CONTENT_BOTTOM) {
    pdf.addPage();
    y = MARGIN;
  }
  drawTotals(pdf, c, y);
  drawFooters(pdf, c);
  pdf.end();
  return done;
}

// ---------------------------------------------------------------------------------------------
// FHIR R4

const SAFE_ID = /^[A-Za-z0-9.-]+$/;
const sha256Hex = (s: string): string => createHash('sha256').update(s).digest('hex');

/**
 * `inv-<tenant>-<period>` when the tenant id is made of FHIR id characters and short enough;
 * otherwise `invh-<sanitised prefix>-<hash>-<period>` (tenant ids may hold `_ : @ /` and run to
 * 128 characters). The two forms cannot collide: they differ in their first word.
 */
function invoiceId(tenantId: string, period: string): string {
  const readable = `inv-${tenantId}-${period}`;
  if (SAFE_ID.test(tenantId) && readable.length <= 64) return readable;
  const prefix = tenantId.replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 26);
  return `invh-${prefix}-${sha256Hex(`${tenantId}\n${period}`).slice(0, 24)}-${period}`;
}

/** Stable across previews and issue: a line's ChargeItem is updated, never duplicated. */
const chargeItemId = (tenantId: string, period: string, code: string): string => `ci-${sha256Hex(`${tenantId}\n${period}\n${code}`).slice(0, 40)}`;

const money = (cents: Cents): Money => ({ value: centsToDecimal(cents), currency: 'EUR' });

function checkBaseUrl(baseUrl: string | undefined): string | undefined {
  if (baseUrl === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw bad('opts.baseUrl', `not an absolute URL: ${JSON.stringify(baseUrl)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad('opts.baseUrl', `must be http(s), got ${url.protocol}`);
  return url.toString().replace(/\/+$/, '');
}

/**
 * The invoice as a FHIR R4 Invoice (`draft` while open, `issued` once issued) and one ChargeItem
 * per line but the tax line; tax is a `tax` price component of the totals, so the lines' base
 * amounts add up to totalNet. No patient data: the tenant is the recipient (Organization) and
 * the ChargeItems' subject (Group), both as logical references by `urn:eco3d:tenant`.
 * `baseUrl` makes the ChargeItem references absolute.
 */
export function invoiceToFhir(doc: InvoiceDocument, opts: { baseUrl?: string } = {}): { invoice: FhirInvoice; chargeItems: FhirChargeItem[] } {
  const c = check(doc);
  const { inv } = c;
  const base = checkBaseUrl(opts.baseUrl);
  const tenant = { system: SYSTEM_TENANT, value: inv.tenantId };
  const occurrencePeriod: FhirPeriod = {
    start: isoWithOffset(inv.periodStartMs, inv.timeZone),
    // FHIR period ends are inclusive at their precision: the period's last second.
    end: isoWithOffset(inv.periodEndMs - 1000, inv.timeZone),
  };
  const chargeItems: ChargeItem[] = [];
  const lineItem: InvoiceLineItem[] = [];
  c.charges.forEach((l, i) => {
    const id = chargeItemId(inv.tenantId, inv.period, l.code);
    const note: Annotation[] = [];
    if (l.description.trim() !== '') note.push({ text: l.description });
    note.push({ text: `Formula (cents): ${l.explanation.formula}` });
    chargeItems.push({
      resourceType: 'ChargeItem',
      id,
      status: c.issued ? 'billed' : 'billable',
      code: { coding: [{ system: SYSTEM_RULE, code: l.explanation.rule }], text: `${l.code} (${l.explanation.rule})` },
      subject: { type: 'Group', identifier: tenant, display: `Tenant ${inv.tenantId}` },
      occurrencePeriod,
      quantity: { value: l.quantity },
      priceOverride: money(l.amountCents),
      note,
    });
    const ref: Reference<ChargeItem> = { reference: `${base === undefined ? '' : `${base}/`}ChargeItem/${id}` };
    lineItem.push({ sequence: i + 1, chargeItemReference: ref, priceComponent: [{ type: 'base', amount: money(l.amountCents) }] });
  });
  const t = inv.totals;
  const { first, last } = periodDays(inv);
  const notes: Annotation[] = [
    { text: `Period ${inv.period} (${first} to ${last}, ${inv.timeZone}); ${inv.usage.billableEvents} billable scans, ${inv.usage.nonBillableEvents} not billable.` },
    { text: `${ROUNDING_NOTE}. Tax: ${c.tax.explanation.formula}.` },
  ];
  if (!c.issued) notes.push({ text: 'Preview of an open period, not issued: amounts can still change.' });
  if (doc.sha256 !== undefined) notes.push({ text: `SHA-256 of the issued invoice JSON: ${doc.sha256}` });
  const invoice: FhirInvoice = {
    resourceType: 'Invoice',
    id: invoiceId(inv.tenantId, inv.period),
    ...(c.issued ? { identifier: [{ system: SYSTEM_INVOICE, value: doc.number! }] } : {}),
    status: c.issued ? 'issued' : 'draft',
    recipient: { type: 'Organization', identifier: tenant, display: `Tenant ${inv.tenantId}` },
    ...(c.issued ? { date: fhirInstant(doc.issuedAtMs!) } : {}),
    ...(lineItem.length > 0 ? { lineItem } : {}),
    totalPriceComponent: [
      { type: 'base', code: { text: 'Subtotal' }, amount: money(t.subtotalCents) },
      { type: 'tax', code: { text: c.tax.description.trim() === '' ? 'Tax' : c.tax.description }, amount: money(t.taxCents) },
    ],
    totalNet: money(t.subtotalCents),
    totalGross: money(t.totalCents),
    note: notes,
  };
  return { invoice, chargeItems };
}

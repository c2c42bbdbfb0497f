// The billing dashboard's pure pieces: money text from integer cents, the days of a period, the
// risk-sharing corridor test, and the two inline-SVG charts (stacked scans per day, cumulative
// scans against the pro-rata forecast corridor). No chart library: the charts are small, and
// each has a table next to it that carries the exact numbers (the charts only illustrate).

const SVG_NS = 'http://www.w3.org/2000/svg';

// ---- money and periods ----------------------------------------------------------------------

/**
 * "1,234.56 €" from integer cents, by string slicing: no division, so no float ever touches an
 * amount. Credits are negative ("-10.00 €"). Anything but a safe integer is shown as invalid
 * rather than rounded into something plausible.
 */
export function formatCents(cents: number): string {
  if (!Number.isSafeInteger(cents)) return 'invalid amount';
  const digits = String(Math.abs(cents)).padStart(3, '0');
  const euros = digits.slice(0, -2).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${cents < 0 ? '-' : ''}${euros}.${digits.slice(-2)} €`;
}

export const PERIOD_RE = /^(\d{4})-(0[1-9]|1[0-2])$/;

/** Days in a "YYYY-MM" period (0 when the period is malformed). */
export function daysInPeriod(period: string): number {
  const m = PERIOD_RE.exec(period);
  if (m === null) return 0;
  // Day 0 of the next month is the last day of this one; UTC keeps DST out of it.
  return new Date(Date.UTC(Number(m[1]), Number(m[2]), 0)).getUTCDate();
}

/** Day of the month of a "YYYY-MM-DD" inside `period`, else null. */
export function dayOfPeriod(date: string, period: string): number | null {
  if (!date.startsWith(`${period}-`)) return null;
  const d = Number(date.slice(8, 10));
  return Number.isInteger(d) && d >= 1 && d <= daysInPeriod(period) ? d : null;
}

// ---- risk-sharing corridor -------------------------------------------------------------------

export type CorridorStatus = 'below' | 'within' | 'above';

/**
 * Where `actual` cumulative scans at the end of `day` stand against the corridor pro-rata,
 * (forecast ± band) × day / days. Compared cross-multiplied, in integers, so a count exactly on
 * the edge is within, with no rounding to argue about.
 */
export function corridorStatus(actual: number, day: number, days: number, forecast: number, band: number): CorridorStatus {
  if (actual * days < (forecast - band) * day) return 'below';
  if (actual * days > (forecast + band) * day) return 'above';
  return 'within';
}

export const corridorWords: Record<CorridorStatus, string> = { below: 'below the band', within: 'within the band', above: 'above the band' };

// ---- SVG helpers -----------------------------------------------------------------------------

type SvgAttrs = Record<string, string | number>;

function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: SvgAttrs = {}, ...children: (Node | string)[]): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, typeof v === 'number' ? String(round2(v)) : v);
  e.append(...children);
  return e;
}

const round2 = (v: number): number => Math.round(v * 100) / 100;

let idSeq = 0;

/** An accessible chart root: role img, named by its <title>, described by its <desc>. */
function chartRoot(width: number, height: number, title: string, desc: string, cls: string): SVGSVGElement {
  const id = `billing-chart-${++idSeq}`;
  return s(
    'svg',
    { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-labelledby': `${id}-title ${id}-desc`, class: `billing-chart ${cls}`, preserveAspectRatio: 'xMidYMid meet' },
    s('title', { id: `${id}-title` }, title),
    s('desc', { id: `${id}-desc` }, desc),
  );
}

/** A round top for a y axis over [0, max] and its integer tick step (scan counts are integers). */
export function yScale(max: number, maxTicks = 5): { top: number; step: number } {
  if (!(max > 0)) return { top: maxTicks, step: 1 };
  const raw = max / maxTicks;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(1, [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= raw && Number.isInteger(c)) ?? 10 * p);
  return { top: Math.ceil(max / step) * step, step };
}

interface Frame {
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

/** Gridlines and labels of the y axis, the x axis line and day labels. */
function axes(svg: SVGSVGElement, f: Frame, yTop: number, yStep: number, days: number, xOfDay: (d: number) => number): void {
  const y = (v: number): number => f.top + f.height - (v / yTop) * f.height;
  const g = s('g', { class: 'billing-axes', 'aria-hidden': 'true' });
  for (let v = 0; v <= yTop; v += yStep) {
    g.append(
      s('line', { x1: f.left, x2: f.left + f.width, y1: y(v), y2: y(v), class: v === 0 ? 'billing-axis' : 'billing-grid' }),
      s('text', { x: f.left - 5, y: y(v) + 3.5, 'text-anchor': 'end', class: 'billing-tick' }, String(v)),
    );
  }
  for (let d = 1; d <= days; d++) {
    if (d !== 1 && d % 5 !== 0 && d !== days) continue;
    // The last day's label would crowd the 30th's in a 31-day month.
    if (d === days && d % 5 !== 0 && d % 5 < 2) continue;
    g.append(s('text', { x: xOfDay(d), y: f.top + f.height + 14, 'text-anchor': 'middle', class: 'billing-tick' }, String(d)));
  }
  svg.append(g);
}

// ---- scans per device and day ----------------------------------------------------------------

export interface DayScans {
  readonly day: number;
  readonly date: string;
  readonly billable: number;
  readonly nonBillable: number;
}

/** Stacked bars per day of the month: billable at the bottom, not billable on top. */
export function scansChart(label: string, period: string, rows: readonly DayScans[]): SVGSVGElement {
  const days = daysInPeriod(period);
  const W = 640;
  const H = 170;
  const f: Frame = { left: 34, top: 10, width: W - 34 - 8, height: H - 10 - 24 };
  const billable = rows.reduce((a, r) => a + r.billable, 0);
  const nonBillable = rows.reduce((a, r) => a + r.nonBillable, 0);
  const svg = chartRoot(W, H, `Scans per day, ${label}, ${period}`, `${billable} billable and ${nonBillable} not billable scans over ${rows.length} day(s); the table below lists them.`, 'billing-scans-chart');
  const { top, step } = yScale(Math.max(0, ...rows.map((r) => r.billable + r.nonBillable)));
  const slot = f.width / Math.max(1, days);
  const xOfDay = (d: number): number => f.left + (d - 0.5) * slot;
  axes(svg, f, top, step, days, xOfDay);
  const h = (v: number): number => (v / top) * f.height;
  const base = f.top + f.height;
  const bw = Math.max(2, slot * 0.7);
  const bars = s('g', { class: 'billing-bars' });
  for (const r of rows) {
    const x = xOfDay(r.day) - bw / 2;
    const g = s('g', { 'data-date': r.date }, s('title', {}, `${r.date}: ${r.billable} billable, ${r.nonBillable} not billable`));
    if (r.billable > 0) g.append(s('rect', { x, y: base - h(r.billable), width: bw, height: h(r.billable), class: 'billing-bar-billable' }));
    if (r.nonBillable > 0) g.append(s('rect', { x, y: base - h(r.billable + r.nonBillable), width: bw, height: h(r.nonBillable), class: 'billing-bar-nonbillable' }));
    bars.append(g);
  }
  svg.append(bars);
  return svg;
}

// ---- risk-sharing corridor chart -------------------------------------------------------------

export interface RiskPoint {
  readonly day: number;
  readonly actualCumulative: number;
}

export interface RiskChartInput {
  readonly label: string;
  readonly forecastScans: number;
  readonly bandScans: number;
  readonly actualScans: number;
  readonly daysInPeriod: number;
  /** Sorted by day. */
  readonly points: readonly RiskPoint[];
}

/**
 * x = day of the month (0 = the period's start), y = cumulative scans: the forecast pro-rata
 * (a straight line to forecastScans on the last day), the corridor ± bandScans shaded around it,
 * and the actual cumulative count, each segment and point coloured by where it ends (below,
 * within, above the corridor).
 */
export function riskChart(r: RiskChartInput, status: CorridorStatus | null): SVGSVGElement {
  const D = Math.max(1, r.daysInPeriod);
  const W = 640;
  const H = 220;
  const f: Frame = { left: 40, top: 10, width: W - 40 - 12, height: H - 10 - 24 };
  const maxActual = Math.max(r.actualScans, ...r.points.map((p) => p.actualCumulative));
  const { top, step } = yScale(Math.max(r.forecastScans + r.bandScans, maxActual) * 1.05);
  const x = (d: number): number => f.left + (d / D) * f.width;
  const y = (v: number): number => f.top + f.height - (Math.max(0, v) / top) * f.height;
  const svg = chartRoot(
    W,
    H,
    `Risk-sharing ${r.label}: cumulative scans against the forecast`,
    `${r.actualScans} of ${r.forecastScans} forecast scans (band ±${r.bandScans}) over ${D} days${status === null ? '' : `; so far ${corridorWords[status]}`}. The table under the chart gives the numbers per day.`,
    'billing-risk-svg',
  );
  axes(svg, f, top, step, D, x);
  const low = Math.max(0, r.forecastScans - r.bandScans);
  const high = r.forecastScans + r.bandScans;
  svg.append(
    s('polygon', { points: `${x(0)},${y(0)} ${x(D)},${y(high)} ${x(D)},${y(low)}`, class: 'billing-band' }, s('title', {}, `band: ${low}–${high} scans by the end of the period, pro-rata`)),
    s('line', { x1: x(0), y1: y(0), x2: x(D), y2: y(r.forecastScans), class: 'billing-forecast' }, s('title', {}, `forecast: ${r.forecastScans} scans pro-rata`)),
  );
  const g = s('g', { class: 'billing-actual' });
  let prev: RiskPoint = { day: 0, actualCumulative: 0 };
  for (const p of r.points) {
    const st = corridorStatus(p.actualCumulative, p.day, D, r.forecastScans, r.bandScans);
    g.append(s('line', { x1: x(prev.day), y1: y(prev.actualCumulative), x2: x(p.day), y2: y(p.actualCumulative), class: `billing-seg billing-${st}` }));
    prev = p;
  }
  for (const p of r.points) {
    const st = corridorStatus(p.actualCumulative, p.day, D, r.forecastScans, r.bandScans);
    g.append(s('circle', { cx: x(p.day), cy: y(p.actualCumulative), r: 3, class: `billing-dot billing-${st}` }, s('title', {}, `day ${p.day}: ${p.actualCumulative} scans, ${corridorWords[st]}`)));
  }
  svg.append(g);
  return svg;
}

// The billing dashboard (admins): scans per device and day, revenue per tenant, risk-sharing
// corridors and invoices of one period, from GET /api/billing/dashboard?period=YYYY-MM (no
// period: the current month in the tenant's zone). A tenant admin sees their tenant, a platform
// admin every tenant. `?period=YYYY-MM` in the page's URL opens that month.
//
// It refreshes every 10 s while the page is visible: one request at a time (the next is
// scheduled when the previous has answered), none while hidden.
import './style.css';
import { api, ApiError, isAdmin, requireAccount, type Account } from './api.ts';
import {
  corridorStatus,
  corridorWords,
  dayOfPeriod,
  daysInPeriod,
  formatCents,
  PERIOD_RE,
  riskChart,
  scansChart,
  type CorridorStatus,
  type DayScans,
  type RiskPoint,
} from './billing-charts.ts';
import { $, clearErrors, el, fmtTime, setText, showError } from './ui.ts';

// ---- the dashboard's answer ------------------------------------------------------------------

interface TenantInfo {
  readonly tenantId: string;
  readonly timeZone: string;
}
interface ScansRow {
  readonly tenantId: string;
  readonly deviceId: string;
  readonly date: string;
  readonly billable: number;
  readonly nonBillable: number;
}
/** `status: 'error'` (e.g. usage that no contract prices) comes with `error` instead of amounts. */
type RevenueRow =
  | { readonly tenantId: string; readonly period: string; readonly status: 'open' | 'issued'; readonly subtotalCents: number; readonly taxCents: number; readonly totalCents: number }
  | { readonly tenantId: string; readonly period: string; readonly status: 'error'; readonly error?: { readonly code?: string; readonly message?: string } };
interface RiskRow {
  readonly tenantId: string;
  readonly contractId: string;
  readonly deviceId: string;
  readonly forecastScans: number;
  readonly bandScans: number;
  readonly actualScans: number;
  readonly daysInPeriod: number;
  readonly daily: readonly { readonly date: string; readonly actualCumulative: number }[];
}
interface InvoiceRow {
  readonly tenantId: string;
  readonly period: string;
  readonly status: string;
  readonly number?: string | null;
  readonly totalCents: number;
  readonly issuedAtMs?: number | null;
}
interface Dashboard {
  readonly period: string;
  readonly generatedAtMs: number;
  readonly tenants: readonly TenantInfo[];
  readonly scansPerDeviceDay: readonly ScansRow[];
  readonly revenueByTenant: readonly RevenueRow[];
  readonly riskSharing: readonly RiskRow[];
  readonly invoices: readonly InvoiceRow[];
}

const arr = <T>(v: unknown): readonly T[] => (Array.isArray(v) ? (v as T[]) : []);

/** The answer with every list present (an older or partial server may leave some out). */
function normalise(raw: unknown): Dashboard {
  const o = (typeof raw === 'object' && raw !== null ? raw : {}) as Partial<Record<keyof Dashboard, unknown>>;
  if (typeof o.period !== 'string' || !PERIOD_RE.test(o.period)) {
    throw new ApiError('ECO3D_ERR_BAD_RESPONSE', 'the billing dashboard answered without a valid period', 502);
  }
  return {
    period: o.period,
    generatedAtMs: typeof o.generatedAtMs === 'number' ? o.generatedAtMs : Date.now(),
    tenants: arr(o.tenants),
    scansPerDeviceDay: arr(o.scansPerDeviceDay),
    revenueByTenant: arr(o.revenueByTenant),
    riskSharing: arr(o.riskSharing),
    invoices: arr(o.invoices),
  };
}

async function getDashboard(period: string | null): Promise<Dashboard> {
  return normalise(await api<unknown>('GET', period === null ? '/api/billing/dashboard' : `/api/billing/dashboard?period=${encodeURIComponent(period)}`));
}

/** The server's own documents of one invoice (issued, or the open period's draft). */
const invoiceUrl = (i: InvoiceRow, format: 'pdf' | 'csv' | 'json' | 'fhir'): string =>
  `/api/billing/invoices/${encodeURIComponent(i.tenantId)}/${encodeURIComponent(i.period)}?format=${format}`;

const REFRESH_MS = 10_000;
const FOR_ADMINS = 'this page is for administrators';

// ---- rendering -------------------------------------------------------------------------------

const numCell = (v: number): HTMLTableCellElement => el('td', { class: 'billing-num' }, String(v));

function moneyCell(cents: number, col: string): HTMLTableCellElement {
  return el('td', { class: 'billing-num billing-money', 'data-col': col, 'data-cents': String(cents) }, formatCents(cents));
}

function statusBadge(status: string): HTMLSpanElement {
  return el('span', { class: 'billing-status', 'data-status': status }, status);
}

function generatedText(d: Dashboard): string {
  // One tenant: its own clock, as its invoices count days; several: the reader's.
  const tz = d.tenants.length === 1 ? d.tenants[0]?.timeZone : undefined;
  if (tz !== undefined) {
    try {
      return `${new Date(d.generatedAtMs).toLocaleString(undefined, { timeZone: tz })} (${tz})`;
    } catch {
      // An unknown zone in this browser: the local time below.
    }
  }
  return fmtTime(d.generatedAtMs);
}

function renderScans(d: Dashboard, multiTenant: boolean): void {
  const rows = [...d.scansPerDeviceDay].sort(
    (a, b) => a.tenantId.localeCompare(b.tenantId) || a.deviceId.localeCompare(b.deviceId) || a.date.localeCompare(b.date),
  );
  const empty = rows.length === 0;
  $('scans-empty').classList.toggle('hidden', !empty);
  $('scans-legend').classList.toggle('hidden', empty);
  $('scans-table').classList.toggle('hidden', empty);

  $('scans-head').replaceChildren(
    el(
      'tr',
      {},
      el('th', { scope: 'col' }, 'device'),
      el('th', { scope: 'col' }, 'date'),
      el('th', { scope: 'col', class: 'billing-num' }, 'billable'),
      el('th', { scope: 'col', class: 'billing-num' }, 'not billable'),
      // Last, so the first four columns are the same for both kinds of admin.
      ...(multiTenant ? [el('th', { scope: 'col' }, 'tenant')] : []),
    ),
  );
  $('scans-rows').replaceChildren(
    ...rows.map((r) =>
      el(
        'tr',
        { 'data-tenant': r.tenantId, 'data-device': r.deviceId, 'data-date': r.date, 'data-billable': String(r.billable), 'data-non-billable': String(r.nonBillable) },
        el('td', {}, r.deviceId),
        el('td', {}, r.date),
        numCell(r.billable),
        numCell(r.nonBillable),
        ...(multiTenant ? [el('td', {}, r.tenantId)] : []),
      ),
    ),
  );

  const byDevice = new Map<string, { tenantId: string; deviceId: string; days: DayScans[] }>();
  for (const r of rows) {
    const day = dayOfPeriod(r.date, d.period);
    if (day === null) continue;
    const key = `${r.tenantId}\u0000${r.deviceId}`;
    let g = byDevice.get(key);
    if (g === undefined) byDevice.set(key, (g = { tenantId: r.tenantId, deviceId: r.deviceId, days: [] }));
    g.days.push({ day, date: r.date, billable: r.billable, nonBillable: r.nonBillable });
  }
  $('scans-charts').replaceChildren(
    ...Array.from(byDevice.values(), (g) => {
      const label = multiTenant ? `${g.deviceId} (${g.tenantId})` : g.deviceId;
      const billable = g.days.reduce((a, x) => a + x.billable, 0);
      const nonBillable = g.days.reduce((a, x) => a + x.nonBillable, 0);
      return el(
        'figure',
        { class: 'billing-figure', 'data-testid': 'scans-chart', 'data-tenant': g.tenantId, 'data-device': g.deviceId },
        el('figcaption', {}, el('strong', {}, label), ` — ${billable} billable, ${nonBillable} not billable`),
        scansChart(label, d.period, g.days),
      );
    }),
  );
}

function renderRevenue(d: Dashboard): void {
  const rows = [...d.revenueByTenant].sort((a, b) => a.tenantId.localeCompare(b.tenantId));
  $('revenue-empty').classList.toggle('hidden', rows.length > 0);
  $('revenue-table').classList.toggle('hidden', rows.length === 0);
  $('revenue-rows').replaceChildren(
    ...rows.map((r) =>
      el(
        'tr',
        { 'data-tenant': r.tenantId, 'data-period': r.period, 'data-status': r.status },
        el('td', {}, r.tenantId),
        el('td', {}, statusBadge(r.status)),
        ...(r.status === 'error'
          ? [el('td', { colspan: '3', class: 'bad', 'data-code': r.error?.code ?? '' }, `cannot rate this period: ${r.error?.code ?? 'error'}: ${r.error?.message ?? ''}`)]
          : [moneyCell(r.subtotalCents, 'subtotal'), moneyCell(r.taxCents, 'tax'), moneyCell(r.totalCents, 'total')]),
      ),
    ),
  );
  // All tenants together (platform admins): integer sums, exact below 2^53. A tenant in error
  // has no amounts, so the row says the sum leaves it out.
  const priced = rows.filter((r) => r.status !== 'error');
  const sum = (k: 'subtotalCents' | 'taxCents' | 'totalCents'): number => priced.reduce((a, r) => a + r[k], 0);
  const label = priced.length === rows.length ? 'all tenants' : `all tenants but ${rows.length - priced.length} in error`;
  $('revenue-foot').replaceChildren(
    ...(rows.length > 1
      ? [el('tr', { 'data-total': 'all' }, el('th', { scope: 'row', colspan: '2' }, label), moneyCell(sum('subtotalCents'), 'subtotal'), moneyCell(sum('taxCents'), 'tax'), moneyCell(sum('totalCents'), 'total'))]
      : []),
  );
}

function renderInvoices(d: Dashboard): void {
  const rows = [...d.invoices].sort((a, b) => b.period.localeCompare(a.period) || a.tenantId.localeCompare(b.tenantId));
  $('invoices-empty').classList.toggle('hidden', rows.length > 0);
  $('invoices-table').classList.toggle('hidden', rows.length === 0);
  $('invoices-rows').replaceChildren(
    ...rows.map((i) => {
      const what = `${i.status === 'open' ? 'draft invoice' : 'invoice'} ${i.number ?? ''} ${i.tenantId} ${i.period}`.replace(/\s+/g, ' ');
      const link = (format: 'pdf' | 'csv' | 'json' | 'fhir', text: string): HTMLAnchorElement =>
        el('a', { href: invoiceUrl(i, format), download: '', 'data-format': format, 'aria-label': `${what}, ${text}` }, text);
      return el(
        'tr',
        { 'data-tenant': i.tenantId, 'data-period': i.period, 'data-status': i.status },
        el('td', {}, i.tenantId),
        el('td', {}, i.period),
        el('td', {}, statusBadge(i.status)),
        el('td', {}, i.number ?? (i.status === 'open' ? 'not issued yet' : '—')),
        moneyCell(i.totalCents, 'total'),
        el('td', {}, typeof i.issuedAtMs === 'number' ? fmtTime(i.issuedAtMs) : '—'),
        el('td', { class: 'billing-downloads' }, link('pdf', 'PDF'), link('csv', 'CSV'), link('json', 'JSON'), link('fhir', 'FHIR')),
      );
    }),
  );
}

const zoneOf = (d: Dashboard, tenantId: string): string | undefined => d.tenants.find((t) => t.tenantId === tenantId)?.timeZone;

/** "YYYY-MM-DD" of an instant in a zone (the browser's when the zone is unknown to it). */
function localDate(ms: number, timeZone: string | undefined): string {
  const opts: Intl.DateTimeFormatOptions = { year: 'numeric', month: '2-digit', day: '2-digit' };
  let parts: Intl.DateTimeFormatPart[];
  try {
    parts = new Intl.DateTimeFormat('en-CA', { ...opts, timeZone }).formatToParts(ms);
  } catch {
    parts = new Intl.DateTimeFormat('en-CA', opts).formatToParts(ms);
  }
  const part = (type: string): string => parts.find((p) => p.type === type)?.value ?? '';
  return `${part('year')}-${part('month')}-${part('day')}`;
}

const oneDecimal = (v: number): string => (Math.round(v * 10) / 10).toFixed(1);

function renderRisk(d: Dashboard, multiTenant: boolean, openDetails: ReadonlySet<string>): void {
  const contracts = [...d.riskSharing].sort((a, b) => a.tenantId.localeCompare(b.tenantId) || a.contractId.localeCompare(b.contractId));
  $('risk-empty').classList.toggle('hidden', contracts.length > 0);
  $('risk-charts').replaceChildren(
    ...contracts.map((c) => {
      const D = c.daysInPeriod > 0 ? c.daysInPeriod : daysInPeriod(d.period);
      // The answer runs to the period's last day; days after today have no scans yet, only a
      // flat line that would read as falling behind the forecast.
      const today = localDate(d.generatedAtMs, zoneOf(d, c.tenantId));
      const points: RiskPoint[] = c.daily
        .filter((p) => p.date <= today)
        .map((p) => ({ day: dayOfPeriod(p.date, d.period), actualCumulative: p.actualCumulative }))
        .filter((p): p is RiskPoint => p.day !== null)
        .sort((a, b) => a.day - b.day);
      const last = points.at(-1);
      const status: CorridorStatus | null = last === undefined ? null : corridorStatus(last.actualCumulative, last.day, D, c.forecastScans, c.bandScans);
      const label = `${c.contractId} · ${c.deviceId}${multiTenant ? ` · ${c.tenantId}` : ''}`;
      const key = `${c.tenantId}\u0000${c.contractId}`;
      const details = el(
        'details',
        { class: 'billing-risk-numbers' },
        el('summary', {}, 'numbers per day'),
        el(
          'table',
          { class: 'list billing-table', 'data-testid': 'risk-table' },
          el(
            'thead',
            {},
            el('tr', {}, ...['day', 'actual (cumulative)', 'forecast pro-rata', 'band pro-rata', ''].map((h) => el('th', { scope: 'col' }, h))),
          ),
          el(
            'tbody',
            {},
            ...points.map((p) => {
              const st = corridorStatus(p.actualCumulative, p.day, D, c.forecastScans, c.bandScans);
              return el(
                'tr',
                { 'data-day': String(p.day), 'data-status': st },
                el('td', {}, String(p.day)),
                numCell(p.actualCumulative),
                el('td', { class: 'billing-num' }, oneDecimal((c.forecastScans * p.day) / D)),
                el('td', { class: 'billing-num' }, `${oneDecimal((Math.max(0, c.forecastScans - c.bandScans) * p.day) / D)}–${oneDecimal(((c.forecastScans + c.bandScans) * p.day) / D)}`),
                el('td', { class: `billing-${st}` }, corridorWords[st]),
              );
            }),
          ),
        ),
      );
      details.open = openDetails.has(key);
      details.dataset.key = key;
      return el(
        'figure',
        { class: 'billing-figure billing-risk', 'data-testid': 'risk-chart', 'data-contract': c.contractId, 'data-tenant': c.tenantId, 'data-device': c.deviceId, 'data-status': status ?? 'none' },
        el(
          'figcaption',
          {},
          el('strong', {}, label),
          ' — ',
          el('span', { 'data-testid': 'risk-caption' }, `${c.actualScans} of ${c.forecastScans} forecast (band ±${c.bandScans})`),
          ' ',
          el('span', { class: `billing-risk-status billing-${status ?? 'none'}` }, status === null ? 'no scans yet' : corridorWords[status]),
        ),
        riskChart({ label, forecastScans: c.forecastScans, bandScans: c.bandScans, actualScans: c.actualScans, daysInPeriod: D, points }, status),
        el(
          'div',
          { class: 'billing-legend', 'aria-hidden': 'true' },
          el('span', {}, el('i', { class: 'billing-swatch billing-swatch-forecast' }), 'forecast pro-rata'),
          el('span', {}, el('i', { class: 'billing-swatch billing-swatch-band' }), `band ±${c.bandScans}`),
          el('span', {}, el('i', { class: 'billing-swatch billing-swatch-within' }), 'actual, within'),
          el('span', {}, el('i', { class: 'billing-swatch billing-swatch-below' }), 'below'),
          el('span', {}, el('i', { class: 'billing-swatch billing-swatch-above' }), 'above'),
        ),
        details,
      );
    }),
  );
}

/** The rendered answer, less its timestamp: an unchanged dashboard is not rebuilt every 10 s. */
let shownKey = '';

function render(d: Dashboard): void {
  const time = $('billing-generated');
  time.textContent = generatedText(d);
  time.setAttribute('datetime', new Date(d.generatedAtMs).toISOString());
  time.dataset.ms = String(d.generatedAtMs);
  document.body.dataset.period = d.period;
  const key = JSON.stringify({ ...d, generatedAtMs: 0 });
  if (key === shownKey) return;
  shownKey = key;
  const openDetails = new Set(Array.from(document.querySelectorAll<HTMLDetailsElement>('details.billing-risk-numbers[open]'), (e) => e.dataset.key ?? ''));
  const tenantIds = new Set([...d.tenants.map((t) => t.tenantId), ...d.scansPerDeviceDay.map((r) => r.tenantId), ...d.revenueByTenant.map((r) => r.tenantId)]);
  const multiTenant = tenantIds.size > 1;
  renderScans(d, multiTenant);
  renderRevenue(d);
  renderInvoices(d);
  renderRisk(d, multiTenant, openDetails);
  $('billing-content').classList.remove('hidden');
}

type PageState = 'loading' | 'loaded' | 'error' | 'forbidden';

function setState(state: PageState, text: string, title = ''): void {
  const e = $('billing-state');
  e.dataset.state = state;
  setText('billing-state', text, state === 'loaded' ? 'muted' : state === 'loading' ? 'muted' : 'bad');
  e.title = title;
}

/** 403 from the server or a non-admin account: one plain sentence, the server's own words kept. */
function forbidden(e: ApiError): ApiError {
  return new ApiError(e.code, e.message === FOR_ADMINS ? FOR_ADMINS : `${FOR_ADMINS} (${e.message})`, 403);
}

// ---- the page --------------------------------------------------------------------------------

async function main(): Promise<void> {
  const account: Account = await requireAccount(() => true);
  setText('who', `${account.username} (${account.role}, ${account.tenantId})`);
  const input = $<HTMLInputElement>('billing-period');
  if (!isAdmin(account.role)) {
    // The server refuses anyway; asking it would only add a 403 to its log.
    input.disabled = true;
    $<HTMLButtonElement>('billing-current').disabled = true;
    setState('forbidden', FOR_ADMINS);
    showError(new ApiError('ECO3D_ERR_FORBIDDEN', FOR_ADMINS, 403), 'billing');
    return;
  }

  const fromUrl = new URLSearchParams(location.search).get('period');
  /** null: the current month, which the server picks in the tenant's zone. */
  let selected: string | null = fromUrl !== null && PERIOD_RE.test(fromUrl) ? fromUrl : null;
  if (selected !== null) input.value = selected;

  let inFlight = false;
  let again = false;
  let stopped = false;
  let timer: number | undefined;

  function schedule(): void {
    window.clearTimeout(timer);
    timer = undefined;
    if (stopped || document.hidden) return;
    timer = window.setTimeout(refresh, REFRESH_MS);
  }

  /** Fetches now, or right after the request in flight (whose answer is then dropped if stale). */
  function refresh(): void {
    if (stopped) return;
    if (inFlight) {
      again = true;
      return;
    }
    window.clearTimeout(timer);
    timer = undefined;
    inFlight = true;
    const wanted = selected;
    if (shownKey === '') setState('loading', 'loading…');
    getDashboard(wanted)
      .then(
        (d) => {
          if (wanted !== selected) return;
          render(d);
          if (document.activeElement !== input) input.value = d.period;
          setState('loaded', document.hidden ? 'paused (page hidden)' : `refreshing every ${REFRESH_MS / 1000} s`);
          clearErrors('billing');
        },
        (e: unknown) => {
          if (wanted !== selected) return;
          if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
            // Polling cannot fix a missing session or role.
            stopped = true;
            const shown = e.status === 403 ? forbidden(e) : e;
            setState(e.status === 403 ? 'forbidden' : 'error', e.status === 403 ? FOR_ADMINS : 'not signed in: sign in again from the home page', e.message);
            showError(shown, 'billing');
            return;
          }
          setState('error', shownKey === '' ? 'cannot load the dashboard' : 'refresh failed: showing the last answer', e instanceof Error ? e.message : '');
          showError(e, 'billing');
        },
      )
      .finally(() => {
        inFlight = false;
        if (again) {
          again = false;
          refresh();
        } else schedule();
      });
  }

  function choose(period: string | null): void {
    selected = period;
    const url = new URL(location.href);
    if (period === null) url.searchParams.delete('period');
    else url.searchParams.set('period', period);
    history.replaceState(null, '', url);
    shownKey = '';
    refresh();
  }

  /** The picker's value, when it names another month than the one shown (browsers without a month picker give a text box). */
  function apply(): void {
    const v = input.value.trim();
    if (v === '') {
      if (selected !== null) choose(null);
    } else if (!PERIOD_RE.test(v)) {
      showError(new ApiError('ECO3D_ERR_BAD_REQUEST', `"${v}" is not a month: expected YYYY-MM`, 400), 'billing period');
    } else if (v !== selected) {
      clearErrors('billing period');
      choose(v);
    }
  }
  input.addEventListener('change', apply);
  $('billing-period-form').addEventListener('submit', (e) => {
    e.preventDefault();
    apply();
  });
  $('billing-current').addEventListener('click', () => {
    input.value = '';
    choose(null);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      window.clearTimeout(timer);
      timer = undefined;
      if (!stopped && $('billing-state').dataset.state === 'loaded') setState('loaded', 'paused (page hidden)');
    } else refresh();
  });
  refresh();
}

main().catch((e: unknown) => {
  // Not signed in: requireAccount is already taking us to the login page.
  if (e instanceof ApiError && e.status === 401) return;
  setState('error', 'the page failed to start');
  showError(e, 'billing');
});

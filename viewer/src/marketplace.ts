// A hospital's plugin marketplace (tenant-admin; docs/marketplace-api.md): the published
// plugins side by side (vendor, kind, tier and certificate, the permissions each requests in
// plain words, the price in the contract currency, whether it is enabled here), Enable after a
// dialog showing exactly those permissions and that price (which are then sent back as what
// the admin accepted: a catalog that changed meanwhile is refused by the server, 409), Disable
// after a confirmation (then what it revoked, cut and canceled), client credentials for an
// enabled plugin (the secret shown once), and the tenant's work items with every attempt, so a
// failed or killed plugin run is seen with its reason.
//
// The work items refresh every 10 s while the page is visible (one request at a time).
import './style.css';
import { api, ApiError, requireAccount, type Account } from './api.ts';
import { confirmDialog, isAuthError, priceText, scopeList, tierText, type Certificate, type Pricing, type Vendor } from './marketplace-view.ts';
import { $, clearErrors, el, fmtTime, run, setText, showError } from './ui.ts';

interface CatalogEntry {
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly vendor: Vendor;
  readonly description: string;
  readonly kind: string;
  readonly tier: string;
  readonly certificate?: Certificate;
  readonly scopes: readonly string[];
  readonly pricing: Pricing;
  readonly enabled: boolean;
  readonly enabledVersion?: string;
}
interface Enablement {
  readonly id: string;
  readonly pluginId: string;
  readonly version: string;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly pricing: Pricing;
  readonly enabledBy: string;
  readonly enabledAtMs: number;
  readonly disabledAtMs?: number;
}
interface DisableAnswer {
  readonly enablement: Enablement;
  readonly revokedTokens: number;
  readonly revokedClients?: number;
  readonly cutStreams: number;
  readonly canceledWorkItems: number;
}
interface Run {
  readonly status: 'completed' | 'failed';
  readonly reason?: string;
  readonly detail?: string;
  readonly wallMs: number;
  readonly cpuMs: number;
  readonly peakRssMb: number;
  readonly atMs: number;
}
interface WorkItem {
  readonly id: string;
  readonly pluginId: string;
  readonly version: string;
  readonly acquisitionUid: string;
  readonly state: string;
  readonly attempts: number;
  readonly createdAtMs: number;
  readonly finishedAtMs?: number;
  readonly outcome?: Record<string, unknown>;
  readonly runs: readonly Run[];
}

const REFRESH_MS = 10_000;
const enc = encodeURIComponent;
const KIND_WORDS: Readonly<Record<string, string>> = { analysis: 'analysis (after the scan, on a de-identified copy)', live: 'live (during the scan)' };

type PageState = 'loading' | 'loaded' | 'error' | 'forbidden';
function setState(state: PageState, text: string): void {
  $('mkt-state').dataset.state = state;
  setText('mkt-state', text, state === 'error' || state === 'forbidden' ? 'bad' : 'muted');
}

let catalog: readonly CatalogEntry[] = [];
let enablements: readonly Enablement[] = [];

// ---- the catalog -----------------------------------------------------------------------------

async function loadCatalog(): Promise<void> {
  const [p, e] = await Promise.all([
    api<{ plugins: CatalogEntry[] }>('GET', '/api/marketplace/plugins'),
    api<{ enablements: Enablement[] }>('GET', '/api/marketplace/enablements'),
  ]);
  catalog = p.plugins;
  enablements = e.enablements;
  renderCatalog();
}

function vendorCell(v: Vendor): HTMLTableCellElement {
  return el(
    'td',
    { 'data-testid': 'vendor' },
    v.url === undefined ? v.name : el('a', { href: v.url, target: '_blank', rel: 'noopener noreferrer' }, v.name),
    v.email === undefined ? '' : el('small', { class: 'muted mkt-block' }, v.email),
  );
}

function stateCell(p: CatalogEntry, active: Enablement | undefined): HTMLTableCellElement {
  if (!p.enabled) return el('td', { 'data-testid': 'enabled-state', 'data-enabled': 'false', class: 'muted' }, 'not enabled');
  const at = p.enabledVersion ?? active?.version ?? p.version;
  return el(
    'td',
    { 'data-testid': 'enabled-state', 'data-enabled': 'true', 'data-enabled-version': at, class: 'ok' },
    `enabled (${at})`,
    active === undefined ? '' : el('small', { class: 'muted mkt-block' }, `by ${active.enabledBy}, ${fmtTime(active.enabledAtMs)}`),
    at === p.version ? '' : el('small', { class: 'warn mkt-block' }, `version ${p.version} is available`),
  );
}

function renderCatalog(): void {
  const kind = $<HTMLSelectElement>('catalog-kind').value;
  const tier = $<HTMLSelectElement>('catalog-tier').value;
  const enabledOnly = $<HTMLInputElement>('catalog-enabled-only').checked;
  const shown = [...catalog]
    .filter((p) => (kind === '' || p.kind === kind) && (tier === '' || p.tier === tier) && (!enabledOnly || p.enabled))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  $('catalog-empty').textContent = catalog.length === 0 ? 'no plugin published yet' : 'no plugin matches these filters';
  $('catalog-empty').classList.toggle('hidden', shown.length > 0);
  $('catalog-table').classList.toggle('hidden', shown.length === 0);
  $('catalog-rows').replaceChildren(
    ...shown.map((p) => {
      const active = enablements.find((e) => e.pluginId === p.id && e.disabledAtMs === undefined);
      const enabledVersion = p.enabled ? (p.enabledVersion ?? active?.version ?? p.version) : undefined;
      const actions: HTMLElement[] = [];
      if (enabledVersion !== p.version) {
        const b = el('button', { type: 'button', 'data-testid': 'enable', 'aria-label': `enable ${p.name} ${p.version}` }, p.enabled ? `Enable ${p.version}` : 'Enable');
        b.addEventListener('click', () => run(() => enable(p), 'enable'));
        actions.push(b);
      }
      if (p.enabled) {
        const d = el('button', { type: 'button', 'data-testid': 'disable', 'aria-label': `disable ${p.name}` }, 'Disable');
        d.addEventListener('click', () => run(() => disable(p), 'disable'));
        const c = el('button', { type: 'button', 'data-testid': 'create-client', 'aria-label': `create client credentials for ${p.name}` }, 'Client credentials');
        c.addEventListener('click', () => run(() => createClient(p, c), 'client credentials'));
        actions.push(d, c);
      }
      return el(
        'tr',
        { 'data-testid': 'catalog-row', 'data-plugin': p.id, 'data-version': p.version, 'data-enabled': String(p.enabled), 'data-kind': p.kind, 'data-tier': p.tier },
        el('td', {}, el('strong', {}, p.name), ` ${p.version}`, el('small', { class: 'muted mkt-block' }, p.id), el('small', { class: 'mkt-block mkt-description' }, p.description)),
        vendorCell(p.vendor),
        el('td', {}, KIND_WORDS[p.kind] ?? p.kind),
        el('td', { 'data-testid': 'tier', class: p.tier === 'diagnostic' ? 'ok' : 'warn' }, tierText(p.tier, p.certificate)),
        el('td', {}, scopeList(p.scopes, 'scopes')),
        el('td', { 'data-testid': 'price', 'data-model': p.pricing.model, class: 'mkt-num' }, priceText(p.pricing)),
        stateCell(p, active),
        el('td', { class: 'mkt-actions' }, ...actions),
      );
    }),
  );
}

/** The dialog shows exactly what is sent back as accepted: these scopes, this price, this version. */
async function enable(p: CatalogEntry): Promise<void> {
  setText('enable-name', p.name);
  setText('enable-version', p.version);
  setText('enable-vendor', p.vendor.name);
  setText('enable-tier', tierText(p.tier, p.certificate));
  setText('enable-price', priceText(p.pricing));
  $('enable-price').dataset.model = p.pricing.model;
  $('enable-scopes').replaceChildren(scopeList(p.scopes, 'enable-scopes'));
  const dialog = $<HTMLDialogElement>('enable-dialog');
  dialog.dataset.plugin = p.id;
  dialog.dataset.version = p.version;
  if (!(await confirmDialog(dialog, $<HTMLButtonElement>('enable-confirm')))) return;
  try {
    await api('PUT', `/api/marketplace/enablements/${enc(p.id)}`, { version: p.version, acceptScopes: [...p.scopes], acceptPricing: p.pricing });
  } catch (e) {
    // 409: the terms changed since the page loaded; show the new ones.
    if (e instanceof ApiError && e.status === 409) await loadCatalog();
    throw e;
  }
  hideNotices();
  await loadCatalog();
}

async function disable(p: CatalogEntry): Promise<void> {
  setText('disable-name', p.name);
  const dialog = $<HTMLDialogElement>('disable-dialog');
  dialog.dataset.plugin = p.id;
  if (!(await confirmDialog(dialog, $<HTMLButtonElement>('disable-confirm')))) return;
  const r = await api<DisableAnswer>('DELETE', `/api/marketplace/enablements/${enc(p.id)}`);
  hideNotices();
  const box = $('disable-result');
  box.dataset.plugin = p.id;
  box.dataset.revokedTokens = String(r.revokedTokens);
  box.dataset.revokedClients = String(r.revokedClients ?? 0);
  box.dataset.cutStreams = String(r.cutStreams);
  box.dataset.canceledWorkItems = String(r.canceledWorkItems);
  const n = (count: number, one: string, many: string): string => `${count} ${count === 1 ? one : many}`;
  box.textContent =
    `${p.name} disabled: ${n(r.revokedTokens, 'token', 'tokens')} revoked, ${n(r.revokedClients ?? 0, 'client credential', 'client credentials')} revoked, ` +
    `${n(r.cutStreams, 'live stream', 'live streams')} cut, ${n(r.canceledWorkItems, 'work item', 'work items')} canceled.`;
  box.className = 'mkt-result ok';
  await Promise.all([loadCatalog(), loadWorkItems()]);
}

async function createClient(p: CatalogEntry, button: HTMLButtonElement): Promise<void> {
  button.disabled = true;
  try {
    const c = await api<{ clientId: string; clientSecret: string }>('POST', `/api/marketplace/enablements/${enc(p.id)}/clients`);
    hideNotices();
    setText('client-plugin', p.name);
    setText('client-id', c.clientId);
    setText('client-secret', c.clientSecret);
    const box = $('client-credentials');
    box.dataset.plugin = p.id;
    box.classList.remove('hidden');
  } finally {
    button.disabled = false;
  }
}

/** The one-time secret and the last disable summary leave the page once something else is done. */
function hideNotices(): void {
  $('disable-result').classList.add('hidden');
  $('client-credentials').classList.add('hidden');
  setText('client-secret', '');
  setText('client-id', '');
}

// ---- work items ------------------------------------------------------------------------------

function outcomeCell(w: WorkItem): HTMLTableCellElement {
  const o = w.outcome;
  if (o === undefined) return el('td', { class: 'muted', 'data-testid': 'work-item-outcome' }, w.state === 'SCHEDULED' ? 'waiting' : w.state === 'IN PROGRESS' ? 'running' : '—');
  const status = typeof o.status === 'string' ? o.status : '';
  if (status === 'completed') {
    const ms = Array.isArray(o.measurements) ? (o.measurements as { name?: unknown; value?: unknown; unit?: unknown }[]) : [];
    const text = ms.map((m) => `${String(m.name)} ${String(m.value)} ${String(m.unit)}`).join('; ');
    const findings = typeof o.findings === 'number' ? `, ${o.findings} finding${o.findings === 1 ? '' : 's'}` : '';
    return el('td', { class: 'ok', 'data-testid': 'work-item-outcome', 'data-status': status }, `completed${findings}`, text === '' ? '' : el('small', { class: 'mkt-block' }, text));
  }
  const reason = typeof o.reason === 'string' ? o.reason : 'unknown';
  const detail = typeof o.detail === 'string' ? o.detail : '';
  return el('td', { class: 'bad', 'data-testid': 'work-item-outcome', 'data-status': status, 'data-reason': reason }, `${status || 'failed'}: ${reason}`, detail === '' ? '' : el('small', { class: 'mkt-block' }, detail));
}

function runList(runs: readonly Run[]): HTMLElement {
  if (runs.length === 0) return el('span', { class: 'muted' }, 'no run yet');
  return el(
    'ol',
    { class: 'mkt-run-list' },
    ...runs.map((r) =>
      el(
        'li',
        { 'data-testid': 'work-item-run', 'data-status': r.status, 'data-reason': r.reason ?? '' },
        el('span', { class: r.status === 'completed' ? 'ok' : 'bad' }, r.status === 'completed' ? 'completed' : `failed: ${r.reason ?? '?'}`),
        ` ${fmtTime(r.atMs)} — wall ${Math.round(r.wallMs)} ms, CPU ${Math.round(r.cpuMs)} ms, peak ${Math.round(r.peakRssMb)} MB`,
        r.detail === undefined ? '' : el('small', { class: 'mkt-block' }, r.detail),
      ),
    ),
  );
}

async function loadWorkItems(): Promise<void> {
  const { workItems } = await api<{ workItems: WorkItem[] }>('GET', '/api/marketplace/work-items?limit=50');
  $('work-empty').classList.toggle('hidden', workItems.length > 0);
  $('work-table').classList.toggle('hidden', workItems.length === 0);
  const nameOf = (id: string): string => catalog.find((p) => p.id === id)?.name ?? enablements.find((e) => e.pluginId === id)?.name ?? id;
  $('work-rows').replaceChildren(
    ...workItems.map((w) =>
      el(
        'tr',
        { 'data-testid': 'work-item-row', 'data-work-item': w.id, 'data-plugin': w.pluginId, 'data-state': w.state, 'data-attempts': String(w.attempts) },
        el('td', {}, fmtTime(w.createdAtMs), w.finishedAtMs === undefined ? '' : el('small', { class: 'muted mkt-block' }, `finished ${fmtTime(w.finishedAtMs)}`)),
        el('td', {}, nameOf(w.pluginId), el('small', { class: 'muted mkt-block' }, `${w.pluginId} ${w.version}`)),
        el('td', {}, el('code', { class: 'mkt-uid' }, w.acquisitionUid)),
        el('td', { 'data-testid': 'work-item-state', class: w.state === 'COMPLETED' ? 'ok' : w.state === 'CANCELED' ? 'bad' : 'warn' }, w.state),
        el('td', { class: 'mkt-num' }, String(w.attempts)),
        outcomeCell(w),
        el('td', {}, runList(w.runs)),
      ),
    ),
  );
}

function workItemPoller(): void {
  let inFlight = false;
  let stopped = false;
  let timer: number | undefined;
  const tick = (): void => {
    window.clearTimeout(timer);
    timer = undefined;
    if (stopped || inFlight || document.hidden) return;
    inFlight = true;
    loadWorkItems()
      .then(
        () => clearErrors('work items'),
        (e: unknown) => {
          if (isAuthError(e)) stopped = true;
          showError(e, 'work items');
        },
      )
      .finally(() => {
        inFlight = false;
        if (!stopped && !document.hidden) timer = window.setTimeout(tick, REFRESH_MS);
      });
  };
  document.addEventListener('visibilitychange', tick);
  tick();
}

// ---- the page --------------------------------------------------------------------------------

async function main(): Promise<void> {
  const account: Account = await requireAccount(() => true);
  setText('who', `${account.username} (${account.role}, ${account.tenantId})`);
  document.body.dataset.role = account.role;
  if (account.role !== 'tenant-admin') {
    setState('forbidden', "for a hospital's admin");
    showError(new ApiError('ECO3D_ERR_FORBIDDEN', `the marketplace is for a hospital's admin, not the role ${account.role}`, 403), 'marketplace');
    return;
  }
  try {
    await loadCatalog();
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      setState('forbidden', 'not a hospital tenant');
      showError(e, 'marketplace');
      return;
    }
    throw e;
  }
  for (const id of ['catalog-kind', 'catalog-tier', 'catalog-enabled-only']) $(id).addEventListener('change', renderCatalog);
  $('client-done').addEventListener('click', hideNotices);
  $('mkt-content').classList.remove('hidden');
  workItemPoller();
  setState('loaded', 'ready');
}

main().catch((e: unknown) => {
  // Not signed in: requireAccount is already taking us to the login page.
  if (e instanceof ApiError && e.status === 401) return;
  setState('error', 'the page failed to load');
  showError(e, 'marketplace');
});

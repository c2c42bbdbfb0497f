// The developer portal (docs/marketplace-api.md). A developer tenant's admin: their developer
// record and revenue share, signing keys (register by pasting the public key, revoke), version
// submission (the signed .zip as application/zip), their plugins with each version's status,
// validation report and review note, usage and money, payout statements, and the sandbox
// tenant's demo studies. The platform's admin: the Review section (publish, or reject with a note).
//
// While a version is submitted or validating, the plugin list is polled every 2 s (one request
// at a time, none while the page is hidden) until every version has left those states.
import './style.css';
import { api, ApiError, requireAccount, type Account } from './api.ts';
import { formatCents } from './billing-charts.ts';
import { confirmDialog, isAuthError, priceText, scopeList, statusBadge, tierText, validationReport, type VersionView } from './marketplace-view.ts';
import { $, clearErrors, el, fmtTime, run, setText, showError } from './ui.ts';

interface Developer {
  readonly tenantId: string;
  readonly name: string;
  readonly shareBps: number;
}
interface DeveloperKey {
  readonly id: string;
  readonly name: string;
  readonly fingerprint: string;
  readonly createdAtMs: number;
  readonly revokedAtMs?: number;
}
interface Usage {
  readonly runs: number;
  readonly completed: number;
  readonly failed: number;
  readonly chargedCents: number;
  readonly developerCents: number;
}
interface PluginEntry {
  readonly id: string;
  readonly versions: readonly VersionView[];
  readonly usage: Usage;
}
interface Statement {
  readonly period: string;
  readonly totalCents: number;
  readonly issuedAtMs: number;
}
interface DemoStudy {
  readonly ref: string;
  readonly description: string;
  readonly dims: readonly number[];
  readonly spacingMm: readonly number[];
  readonly sizeBytes: number;
}

const POLL_MS = 2000;
/** Uploads can be large (64 MiB): more time than the JSON calls' 30 s. */
const UPLOAD_TIMEOUT_MS = 300_000;
const PENDING = new Set(['submitted', 'validating']);
const enc = encodeURIComponent;

type PageState = 'loading' | 'loaded' | 'error' | 'forbidden';
function setState(state: PageState, text: string): void {
  $('dev-state').dataset.state = state;
  setText('dev-state', text, state === 'error' || state === 'forbidden' ? 'bad' : 'muted');
}

/** Asks before an action that cannot be undone; true when confirmed. */
function confirmAction(title: string, text: string, ok: string): Promise<boolean> {
  setText('confirm-title', title);
  setText('confirm-text', text);
  const button = $<HTMLButtonElement>('confirm-ok');
  button.textContent = ok;
  return confirmDialog($<HTMLDialogElement>('confirm-dialog'), button);
}

// ---- the developer ---------------------------------------------------------------------------

function renderDeveloper(d: Developer): void {
  setText('dev-name', d.name);
  setText('dev-tenant', d.tenantId);
  const share = $('dev-share');
  share.textContent = `${(d.shareBps / 100).toFixed(2).replace(/\.00$/, '')} % of each charge`;
  share.dataset.bps = String(d.shareBps);
}

// ---- keys ------------------------------------------------------------------------------------

async function loadKeys(): Promise<void> {
  const { keys } = await api<{ keys: DeveloperKey[] }>('GET', '/api/marketplace/developer/keys');
  $('keys-empty').classList.toggle('hidden', keys.some((k) => k.revokedAtMs === undefined));
  $('keys-table').classList.toggle('hidden', keys.length === 0);
  $('keys-rows').replaceChildren(
    ...[...keys]
      .sort((a, b) => b.createdAtMs - a.createdAtMs)
      .map((k) => {
        const revoked = k.revokedAtMs !== undefined;
        const revoke = el('button', { type: 'button', 'data-testid': 'key-revoke', 'aria-label': `revoke key ${k.name}` }, 'Revoke');
        revoke.disabled = revoked;
        revoke.addEventListener('click', () =>
          run(async () => {
            if (!(await confirmAction('Revoke this key?', `Key "${k.name}" (${k.fingerprint}) will no longer be accepted for new submissions. Versions already submitted are kept.`, 'Revoke'))) return;
            await api('DELETE', `/api/marketplace/developer/keys/${enc(k.id)}`);
            await loadKeys();
          }, 'revoke key'),
        );
        return el(
          'tr',
          { 'data-testid': 'key-row', 'data-key-id': k.id, 'data-fingerprint': k.fingerprint, 'data-revoked': String(revoked) },
          el('td', {}, k.name),
          el('td', {}, el('code', {}, k.fingerprint)),
          el('td', {}, fmtTime(k.createdAtMs)),
          el('td', { 'data-testid': 'key-status', class: revoked ? 'bad' : 'ok' }, revoked ? `revoked ${fmtTime(k.revokedAtMs ?? null)}` : 'active'),
          el('td', {}, revoke),
        );
      }),
  );
}

function wireKeyForm(): void {
  const form = $<HTMLFormElement>('key-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $<HTMLInputElement>('key-name').value.trim();
    const publicKey = $<HTMLTextAreaElement>('key-public').value.trim();
    const button = $<HTMLButtonElement>('key-add');
    button.disabled = true;
    run(async () => {
      try {
        await api('POST', '/api/marketplace/developer/keys', { name, publicKey });
        form.reset();
        await loadKeys();
      } finally {
        button.disabled = false;
      }
    }, 'register key');
  });
}

// ---- submission ------------------------------------------------------------------------------

/** POST the package bytes as they are (the JSON helper would not do). */
async function uploadPackage(file: File): Promise<{ version: VersionView }> {
  let res: Response;
  try {
    res = await fetch('/api/marketplace/developer/versions', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/zip', accept: 'application/json' },
      body: file,
      signal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS),
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'TimeoutError') throw new ApiError('ECO3D_ERR_TIMEOUT', `the upload did not finish within ${UPLOAD_TIMEOUT_MS / 1000} s`, 504);
    throw new ApiError('ECO3D_ERR_NETWORK', `cannot reach the server (${(e as Error).message})`, 0);
  }
  const text = await res.text();
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    data = null;
  }
  if (!res.ok) {
    const d = (data ?? {}) as { code?: unknown; message?: unknown; details?: { reason?: unknown } };
    const reason = typeof d.details?.reason === 'string' ? ` (${d.details.reason})` : '';
    throw new ApiError(typeof d.code === 'string' ? d.code : `HTTP_${res.status}`, `${typeof d.message === 'string' ? d.message : res.statusText}${reason}`, res.status);
  }
  return data as { version: VersionView };
}

function wireSubmitForm(refreshPlugins: () => void): void {
  const form = $<HTMLFormElement>('submit-form');
  const input = $<HTMLInputElement>('package-file');
  const result = $('submit-result');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const file = input.files?.[0];
    if (file === undefined) return;
    const button = $<HTMLButtonElement>('package-submit');
    button.disabled = true;
    result.dataset.state = 'uploading';
    result.className = 'mkt-result muted';
    result.textContent = `uploading ${file.name} (${file.size} bytes)…`;
    uploadPackage(file)
      .then(
        ({ version: v }) => {
          result.dataset.state = 'submitted';
          result.dataset.plugin = v.pluginId;
          result.dataset.version = v.version;
          result.className = 'mkt-result ok';
          result.textContent = `${v.name} ${v.version} (${v.pluginId}) submitted: it is validated on the demo studies now.`;
          form.reset();
          clearErrors('submit');
          refreshPlugins();
        },
        (err: unknown) => {
          result.dataset.state = 'refused';
          delete result.dataset.plugin;
          delete result.dataset.version;
          result.className = 'mkt-result bad';
          const code = err instanceof ApiError ? err.code : 'ECO3D_ERR_CLIENT';
          result.dataset.code = code;
          result.textContent = `refused: ${code}: ${err instanceof Error ? err.message : String(err)}`;
        },
      )
      .finally(() => {
        button.disabled = false;
      });
  });
}

// ---- plugins ---------------------------------------------------------------------------------

function reviewCell(v: VersionView): HTMLTableCellElement {
  if (v.reviewedAtMs === undefined && v.reviewNote === undefined) return el('td', { class: 'muted', 'data-testid': 'review-note' }, '—');
  return el(
    'td',
    { 'data-testid': 'review-note' },
    v.reviewNote === undefined ? el('span', { class: 'muted' }, 'no note') : el('q', {}, v.reviewNote),
    el('small', { class: 'muted mkt-block' }, `${v.reviewedBy ?? ''} ${v.reviewedAtMs === undefined ? '' : fmtTime(v.reviewedAtMs)}`.trim()),
  );
}

function usageList(id: string, u: Usage): HTMLElement {
  const item = (label: string, value: string, key: string): HTMLElement => el('div', { 'data-key': key }, el('small', {}, label), el('span', {}, value));
  return el(
    'div',
    {
      class: 'mkt-usage',
      'data-testid': 'usage',
      'data-plugin': id,
      'data-runs': String(u.runs),
      'data-completed': String(u.completed),
      'data-failed': String(u.failed),
      'data-charged-cents': String(u.chargedCents),
      'data-developer-cents': String(u.developerCents),
    },
    item('runs at hospitals', String(u.runs), 'runs'),
    item('completed', String(u.completed), 'completed'),
    item('failed', String(u.failed), 'failed'),
    item('charged', formatCents(u.chargedCents), 'charged'),
    item('your share', formatCents(u.developerCents), 'developer'),
  );
}

function renderPlugins(plugins: readonly PluginEntry[]): void {
  $('plugins-empty').classList.toggle('hidden', plugins.length > 0);
  // Keep open validation reports open across a poll.
  const open = new Set(Array.from(document.querySelectorAll<HTMLElement>('#plugins tr[data-version]'), (tr) => (tr.querySelector('details[open]') === null ? '' : `${tr.dataset.plugin}@${tr.dataset.version}`)));
  $('plugins').replaceChildren(
    ...plugins.map((p) => {
      const versions = [...p.versions].sort((a, b) => b.submittedAtMs - a.submittedAtMs);
      const newest = versions[0];
      return el(
        'article',
        { class: 'mkt-plugin', 'data-testid': 'plugin', 'data-plugin': p.id },
        el('h3', {}, newest?.name ?? p.id, ' ', el('small', { class: 'muted' }, p.id)),
        usageList(p.id, p.usage),
        el(
          'table',
          { class: 'list mkt-table', 'data-testid': 'versions-table' },
          el(
            'thead',
            {},
            el('tr', {}, el('th', { scope: 'col' }, 'version'), el('th', { scope: 'col' }, 'submitted'), el('th', { scope: 'col' }, 'status'), el('th', { scope: 'col' }, 'validation'), el('th', { scope: 'col' }, 'review')),
          ),
          el(
            'tbody',
            {},
            ...versions.map((v) => {
              const report = validationReport(v.validation);
              if (report instanceof HTMLDetailsElement && open.has(`${v.pluginId}@${v.version}`)) report.open = true;
              return el(
                'tr',
                { 'data-testid': 'version-row', 'data-plugin': v.pluginId, 'data-version': v.version, 'data-status': v.status },
                el('td', {}, v.version, el('small', { class: 'muted mkt-block' }, `${v.kind}, ${tierText(v.tier)}, ${priceText(v.pricing)}`)),
                el('td', {}, fmtTime(v.submittedAtMs), el('small', { class: 'muted mkt-block' }, v.submittedBy ?? '')),
                el('td', {}, statusBadge(v.status, 'version-status')),
                el('td', {}, report),
                reviewCell(v),
              );
            }),
          ),
        ),
      );
    }),
  );
}

// ---- payouts, demo studies -------------------------------------------------------------------

async function loadPayouts(): Promise<void> {
  const { statements } = await api<{ statements: Statement[] }>('GET', '/api/marketplace/developer/payouts');
  $('payouts-empty').classList.toggle('hidden', statements.length > 0);
  $('payouts-table').classList.toggle('hidden', statements.length === 0);
  $('payouts-rows').replaceChildren(
    ...statements.map((s) => {
      const link = (ext: 'json' | 'csv'): HTMLAnchorElement =>
        el('a', { href: `/api/marketplace/developer/payouts/${enc(s.period)}.${ext}`, download: `eco3d-payout-${s.period}.${ext}`, 'data-format': ext, 'aria-label': `statement ${s.period}, ${ext.toUpperCase()}` }, ext.toUpperCase());
      return el(
        'tr',
        { 'data-testid': 'payout-row', 'data-period': s.period, 'data-total-cents': String(s.totalCents) },
        el('td', {}, s.period),
        el('td', { class: 'mkt-num' }, formatCents(s.totalCents)),
        el('td', {}, fmtTime(s.issuedAtMs)),
        el('td', { class: 'mkt-links' }, link('json'), link('csv')),
      );
    }),
  );
}

const mib = (bytes: number): string => (bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`);

async function loadDemoStudies(): Promise<void> {
  const { studies } = await api<{ studies: DemoStudy[] }>('GET', '/api/marketplace/demo-studies');
  $('demo-empty').classList.toggle('hidden', studies.length > 0);
  $('demo-table').classList.toggle('hidden', studies.length === 0);
  $('demo-rows').replaceChildren(
    ...studies.map((s) =>
      el(
        'tr',
        { 'data-testid': 'demo-study-row', 'data-ref': s.ref },
        el('td', {}, el('code', {}, s.ref)),
        el('td', {}, s.description),
        el('td', {}, s.dims.join(' × ')),
        el('td', {}, s.spacingMm.map((x) => String(x)).join(' × ')),
        el('td', { class: 'mkt-num' }, mib(s.sizeBytes)),
        el('td', {}, el('a', { href: `/api/marketplace/demo-studies/${enc(s.ref)}.dcm`, download: `${s.ref}.dcm`, 'data-testid': 'demo-study-download' }, 'download .dcm')),
      ),
    ),
  );
}

// ---- review (platform) -----------------------------------------------------------------------

async function loadReview(): Promise<void> {
  const { versions } = await api<{ versions: VersionView[] }>('GET', '/api/marketplace/review');
  $('review-empty').classList.toggle('hidden', versions.length > 0);
  $('review-table').classList.toggle('hidden', versions.length === 0);
  $('review-rows').replaceChildren(
    ...versions.map((v) => {
      const note = el('textarea', { 'data-testid': 'review-note-input', rows: '2', maxlength: '2000', placeholder: 'note for the developer (required to reject)', 'aria-label': `review note for ${v.name} ${v.version}` });
      const publish = el('button', { type: 'button', 'data-testid': 'review-publish' }, 'Publish');
      const reject = el('button', { type: 'button', 'data-testid': 'review-reject' }, 'Reject');
      const decide = (decision: 'publish' | 'reject'): void =>
        run(async () => {
          const text = note.value.trim();
          if (decision === 'reject' && text === '') {
            note.focus();
            throw new ApiError('ECO3D_ERR_BAD_REQUEST', 'a rejection needs a note telling the developer why', 400);
          }
          const what = `${v.name} ${v.version} (${v.pluginId})`;
          const ok = await confirmAction(
            decision === 'publish' ? 'Publish this version?' : 'Reject this version?',
            decision === 'publish' ? `${what} becomes available to every hospital's admin.` : `${what} is rejected with your note: "${text}".`,
            decision === 'publish' ? 'Publish' : 'Reject',
          );
          if (!ok) return;
          publish.disabled = reject.disabled = true;
          try {
            await api('POST', `/api/marketplace/review/${enc(v.pluginId)}/${enc(v.version)}`, text === '' ? { decision } : { decision, note: text });
          } finally {
            publish.disabled = reject.disabled = false;
          }
          await loadReview();
        }, 'review');
      publish.addEventListener('click', () => decide('publish'));
      reject.addEventListener('click', () => decide('reject'));
      return el(
        'tr',
        { 'data-testid': 'review-row', 'data-plugin': v.pluginId, 'data-version': v.version, 'data-status': v.status },
        el('td', {}, el('strong', {}, v.name), ` ${v.version}`, el('small', { class: 'muted mkt-block' }, v.pluginId), v.description === undefined ? '' : el('small', { class: 'mkt-block' }, v.description)),
        el('td', {}, v.vendor?.name ?? v.developerTenantId ?? '—', el('small', { class: 'muted mkt-block' }, v.developerTenantId ?? '')),
        el('td', {}, `${v.kind} / ${tierText(v.tier)}`),
        el('td', {}, scopeList(v.scopes, 'review-scopes')),
        el('td', {}, priceText(v.pricing)),
        el('td', {}, validationReport(v.validation)),
        el('td', { class: 'mkt-decision' }, note, el('div', {}, publish, reject)),
      );
    }),
  );
}

// ---- the page --------------------------------------------------------------------------------

/** The plugin list, and its polling while a version waits for validation. */
function pluginPoller(): { refresh: () => void } {
  let inFlight = false;
  let again = false;
  let stopped = false;
  let timer: number | undefined;
  let pending = false;
  const schedule = (): void => {
    window.clearTimeout(timer);
    timer = undefined;
    if (!stopped && pending && !document.hidden) timer = window.setTimeout(refresh, POLL_MS);
  };
  function refresh(): void {
    if (stopped) return;
    if (inFlight) {
      again = true;
      return;
    }
    window.clearTimeout(timer);
    timer = undefined;
    inFlight = true;
    api<{ plugins: PluginEntry[] }>('GET', '/api/marketplace/developer/plugins')
      .then(
        ({ plugins }) => {
          renderPlugins(plugins);
          pending = plugins.some((p) => p.versions.some((v) => PENDING.has(v.status)));
          $('plugins').dataset.polling = String(pending);
          clearErrors('plugins');
        },
        (e: unknown) => {
          if (isAuthError(e)) stopped = true;
          showError(e, 'plugins');
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
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && pending) refresh();
  });
  return { refresh };
}

async function developerPortal(): Promise<boolean> {
  let developer: Developer;
  try {
    developer = await api<Developer>('GET', '/api/marketplace/developer');
  } catch (e) {
    if (e instanceof ApiError && e.status === 403) {
      setState('forbidden', 'not a developer tenant');
      showError(new ApiError(e.code, `this tenant is not registered as a developer: a hospital's admin enables plugins on the marketplace page (${e.message})`, 403), 'developer');
      return false;
    }
    throw e;
  }
  renderDeveloper(developer);
  $('dev-content').classList.remove('hidden');
  const plugins = pluginPoller();
  wireKeyForm();
  wireSubmitForm(plugins.refresh);
  plugins.refresh();
  await Promise.all([loadKeys(), loadPayouts(), loadDemoStudies()]);
  return true;
}

async function main(): Promise<void> {
  const account: Account = await requireAccount(() => true);
  setText('who', `${account.username} (${account.role}, ${account.tenantId})`);
  document.body.dataset.role = account.role;
  if (account.role === 'platform-admin') {
    $('review').classList.remove('hidden');
    $('review-refresh').addEventListener('click', () => run(loadReview, 'review'));
    await loadReview();
    setState('loaded', 'review');
    return;
  }
  if (account.role !== 'tenant-admin') {
    setState('forbidden', 'for developers and the platform only');
    showError(new ApiError('ECO3D_ERR_FORBIDDEN', `the developer portal is for a developer tenant's admin and the platform's admin, not the role ${account.role}`, 403), 'developer');
    return;
  }
  if (await developerPortal()) setState('loaded', 'ready');
}

main().catch((e: unknown) => {
  // Not signed in: requireAccount is already taking us to the login page.
  if (e instanceof ApiError && e.status === 401) return;
  setState('error', 'the page failed to load');
  showError(e, 'developer');
});

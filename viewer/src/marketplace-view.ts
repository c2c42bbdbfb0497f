// What the developer portal (developer.ts) and a hospital's marketplace page (marketplace.ts)
// both show of a plugin: the API's shapes (docs/marketplace-api.md), each scope in plain words,
// prices in the contract currency, the tier and certificate, a version's status.
import { ApiError } from './api.ts';
import { formatCents } from './billing-charts.ts';
import { el } from './ui.ts';

export type Pricing = { readonly model: 'per-use'; readonly amountCents: number } | { readonly model: 'subscription'; readonly monthlyAmountCents: number };
export interface Certificate {
  readonly authority: string;
  readonly reference: string;
}
export interface Vendor {
  readonly name: string;
  readonly url?: string;
  readonly email?: string;
}

export type VersionStatus = 'submitted' | 'validating' | 'validation-failed' | 'in-review' | 'published' | 'rejected';

export interface ValidationRunView {
  readonly study: string;
  readonly status: 'completed' | 'failed';
  readonly reason?: string;
  readonly detail?: string;
  readonly wallMs: number;
  readonly measurements?: readonly { readonly name: string; readonly value: number; readonly unit: string }[];
}
export interface ValidationView {
  readonly ok: boolean;
  readonly runs: readonly ValidationRunView[];
  readonly srValid?: boolean;
  readonly problems: readonly string[];
}

export interface VersionView {
  readonly pluginId: string;
  readonly version: string;
  readonly developerTenantId?: string;
  readonly name: string;
  readonly kind: string;
  readonly tier: string;
  readonly scopes: readonly string[];
  readonly pricing: Pricing;
  readonly status: VersionStatus;
  readonly submittedBy?: string;
  readonly submittedAtMs: number;
  readonly validation?: ValidationView;
  readonly reviewedBy?: string;
  readonly reviewNote?: string;
  readonly reviewedAtMs?: number;
  readonly vendor?: Vendor;
  readonly description?: string;
}

/** What each scope lets a plugin do, for the admin who grants it (the server's meaning: server/auth.ts, marketplace/manifest.ts). */
const SCOPE_WORDS: Readonly<Record<string, string>> = {
  'live:video': 'Watch the live ultrasound video of your scans while they happen.',
  'live:pose': 'Follow the live position of the probe and the robot arm during scans.',
  'live:volume': 'Receive the 3D volume as it is being built during a scan.',
  'study:deidentified:read':
    'Read the 3D volume of each completed scan, de-identified: no name, patient ID, dates or other identifiers, and nothing that links it back to the patient.',
  'results:write': 'Add its results to the study: measurements and findings that Eco3D stores as a DICOM structured report and FHIR Observations next to the study.',
};

export const scopeWords = (scope: string): string => SCOPE_WORDS[scope] ?? 'A permission this page does not know: ask the platform before enabling.';

/** The scopes as a list: the scope's name, then what it allows. */
export function scopeList(scopes: readonly string[], testid: string): HTMLUListElement {
  return el(
    'ul',
    { class: 'mkt-scopes', 'data-testid': testid },
    ...scopes.map((s) => el('li', { 'data-scope': s }, el('code', {}, s), el('span', { class: 'mkt-scope-words' }, scopeWords(s)))),
  );
}

/** The price in the contract currency (amounts from integer cents, exactly). */
export function priceText(p: Pricing): string {
  if (p.model === 'per-use') return p.amountCents === 0 ? 'free' : `${formatCents(p.amountCents)} per use`;
  return p.monthlyAmountCents === 0 ? 'free' : `${formatCents(p.monthlyAmountCents)} per month`;
}

export const pricingCents = (p: Pricing): number => (p.model === 'per-use' ? p.amountCents : p.monthlyAmountCents);

export function tierText(tier: string, certificate?: Certificate): string {
  if (tier === 'diagnostic') return certificate === undefined ? 'diagnostic' : `diagnostic — ${certificate.authority} certificate ${certificate.reference}`;
  return tier === 'research' ? 'research only (not for diagnosis)' : tier;
}

export const STATUS_WORDS: Readonly<Record<VersionStatus, string>> = {
  submitted: 'submitted: waiting for validation',
  validating: 'validating: running on the demo studies',
  'validation-failed': 'validation failed',
  'in-review': 'in review by the platform',
  published: 'published',
  rejected: 'rejected',
};

export function statusBadge(status: string, testid: string): HTMLSpanElement {
  return el('span', { class: 'mkt-status', 'data-status': status, 'data-testid': testid }, STATUS_WORDS[status as VersionStatus] ?? status);
}

/** The validation report: one row per demo study, then the problems. */
export function validationReport(v: ValidationView | undefined): HTMLElement {
  if (v === undefined) return el('span', { class: 'muted', 'data-testid': 'validation' }, 'not validated yet');
  const runs = el(
    'table',
    { class: 'list mkt-runs' },
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'demo study'), el('th', { scope: 'col' }, 'run'), el('th', { scope: 'col' }, 'time'), el('th', { scope: 'col' }, 'measurements'))),
    el(
      'tbody',
      {},
      ...v.runs.map((r) =>
        el(
          'tr',
          { 'data-study': r.study, 'data-status': r.status },
          el('td', {}, r.study),
          el('td', { class: r.status === 'completed' ? 'ok' : 'bad' }, r.status === 'completed' ? 'completed' : `failed: ${r.reason ?? '?'}${r.detail === undefined ? '' : ` — ${r.detail}`}`),
          el('td', { class: 'mkt-num' }, `${Math.round(r.wallMs)} ms`),
          el('td', {}, (r.measurements ?? []).map((m) => `${m.name} ${m.value} ${m.unit}`).join('; ') || '—'),
        ),
      ),
    ),
  );
  const verdict = el('div', { class: v.ok ? 'ok' : 'bad' }, v.ok ? 'passed' : 'failed', v.srValid === undefined ? '' : v.srValid ? ' — the result reports are valid DICOM' : ' — a result report is not valid DICOM');
  const problems =
    v.problems.length === 0
      ? el('div', { class: 'muted' }, 'no problems')
      : el('ul', { class: 'mkt-problems', 'data-testid': 'validation-problems' }, ...v.problems.map((p) => el('li', { class: 'bad' }, p)));
  return el('details', { class: 'mkt-validation', 'data-testid': 'validation', 'data-ok': String(v.ok) }, el('summary', {}, `validation: ${v.ok ? 'passed' : 'failed'} (${v.runs.length} run${v.runs.length === 1 ? '' : 's'})`), verdict, runs, problems);
}

/** A modal confirmation: resolves true on the confirm button, false on cancel or Escape. */
export function confirmDialog(dialog: HTMLDialogElement, confirm: HTMLButtonElement): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean): void => {
      confirm.removeEventListener('click', yes);
      dialog.removeEventListener('close', no);
      if (dialog.open) dialog.close();
      resolve(ok);
    };
    const yes = (): void => done(true);
    const no = (): void => done(false);
    confirm.addEventListener('click', yes);
    dialog.addEventListener('close', no);
    dialog.showModal();
  });
}

/** A 401 or 403: polling or retrying cannot fix it. */
export const isAuthError = (e: unknown): e is ApiError => e instanceof ApiError && (e.status === 401 || e.status === 403);

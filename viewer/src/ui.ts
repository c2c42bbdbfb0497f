// Small DOM helpers shared by the pages: lookups, element building, the error banner, masking.
import { ApiError } from './api.ts';

/** The element with this id; throws when the page lacks it (a programming error). */
export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) throw new Error(`#${id} missing from the page`);
  return e as T;
}

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

export function setText(id: string, text: string, cls?: string): void {
  const e = document.getElementById(id);
  if (e === null) return;
  if (e.textContent !== text) e.textContent = text;
  if (cls !== undefined && e.className !== cls) e.className = cls;
}

/** `{code, message}` of anything thrown. */
export function describeError(e: unknown): { code: string; message: string } {
  if (e instanceof ApiError) return { code: e.code, message: e.message };
  if (typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string') {
    const message = (e as { message?: unknown }).message;
    return { code: (e as { code: string }).code, message: typeof message === 'string' ? message : '' };
  }
  return { code: 'ECO3D_ERR_CLIENT', message: e instanceof Error ? e.message : String(e) };
}

/**
 * Shows an error to the user in the page's `#errors` banner (newest on top, each dismissable,
 * gone by itself after a while).
 */
export function showError(e: unknown, context?: string): void {
  const { code, message } = describeError(e);
  const box = document.getElementById('errors');
  console.warn(context ?? '', code, message);
  if (box === null) return;
  const text = `${context === undefined ? '' : `${context}: `}${code}: ${message}`;
  // Repeats (a jog refused 10 times a second) refresh one line instead of stacking.
  for (const c of Array.from(box.children)) {
    if ((c as HTMLElement).dataset.text === text) c.remove();
  }
  const line = el('div', { class: 'error-line', 'data-code': code }, text, el('button', { class: 'dismiss', 'aria-label': 'dismiss' }, '×'));
  line.dataset.text = text;
  line.dataset.context = context ?? '';
  line.querySelector('button')!.addEventListener('click', () => line.remove());
  box.prepend(line);
  while (box.children.length > 5) box.lastElementChild!.remove();
  setTimeout(() => line.remove(), 15_000);
}

/** Runs an async UI action, showing its failure instead of leaving a floating promise. */
export function run(action: () => Promise<unknown>, context?: string): void {
  action().then(
    () => clearErrors(context),
    (e: unknown) => showError(e, context),
  );
}

/** Removes the banner lines of one context (its action has just succeeded). */
export function clearErrors(context: string | undefined): void {
  if (context === undefined) return;
  for (const c of Array.from(document.getElementById('errors')?.children ?? [])) {
    if ((c as HTMLElement).dataset.context === context) c.remove();
  }
}

/** Masks an identifier for display: keeps the first letter of each word (names) or the last 2 characters (ids). */
export function maskName(s: string | null | undefined): string {
  if (s === null || s === undefined || s === '') return '—';
  return s
    .split(/([\s^,]+)/)
    .map((w) => (/^[\s^,]+$/.test(w) || w.length === 0 ? w : `${w[0]}${'•'.repeat(Math.max(2, Math.min(6, w.length - 1)))}`))
    .join('');
}

export function maskId(s: string | null | undefined): string {
  if (s === null || s === undefined || s === '') return '—';
  return s.length <= 2 ? '••' : `${'•'.repeat(Math.min(8, s.length - 2))}${s.slice(-2)}`;
}

export const fmtTime = (ms: number | null): string => (ms === null ? '—' : new Date(ms).toLocaleString());

/** A number without the "-0.0" that sensor noise produces. */
export const fmt = (v: number, digits = 1): string => (Math.abs(v) < 0.5 * 10 ** -digits ? 0 : v).toFixed(digits);

export function wsUrl(path: string): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;
}

// The admin area of the home page: mint a scoped token for a plugin (POST /api/auth/tokens
// {name, scopes, ttlSeconds}), list and revoke tokens (GET, DELETE /api/auth/tokens/:id).
import { LIVE_SCOPES } from '../../protocols/live.ts';
import { listTokens, mintToken, revokeToken, type ScopedToken } from './api.ts';
import { $, el, fmtTime, run } from './ui.ts';

let wired = false;

function timeOf(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    return Number.isFinite(t) ? t : null;
  }
  return null;
}

function statusOf(t: ScopedToken): string {
  if (typeof t.status === 'string') return t.status;
  if (t.revokedAtMs !== undefined && t.revokedAtMs !== null) return 'revoked';
  if (t.revoked === true || typeof t.revokedAt === 'string') return 'revoked';
  const exp = timeOf(t.expiresAtMs ?? t.expiresAt);
  return exp !== null && exp < Date.now() ? 'expired' : 'active';
}

async function refresh(): Promise<void> {
  const tokens = await listTokens();
  const body = $('tokens');
  if (tokens.length === 0) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: '6', class: 'muted' }, 'no tokens')));
    return;
  }
  body.replaceChildren(
    ...tokens.map((t) => {
      const st = statusOf(t);
      const revoke = el('button', { 'data-revoke': t.id }, 'Revoke');
      if (st !== 'active') revoke.setAttribute('disabled', '');
      revoke.addEventListener('click', () =>
        run(async () => {
          await revokeToken(t.id);
          await refresh();
        }, 'revoke token'),
      );
      return el(
        'tr',
        { 'data-token-id': t.id },
        el('td', {}, t.name),
        el('td', {}, typeof t.tenantId === 'string' ? t.tenantId : '—'),
        el('td', {}, (t.scopes ?? []).join(', ')),
        el('td', {}, fmtTime(timeOf(t.expiresAtMs ?? t.expiresAt))),
        el('td', { class: st === 'active' ? 'ok' : 'muted' }, st),
        el('td', {}, revoke),
      );
    }),
  );
}

export function wireAdmin(): void {
  if (wired) return;
  wired = true;
  $('token-scopes').replaceChildren(
    ...LIVE_SCOPES.map((s) => el('label', {}, el('input', { type: 'checkbox', name: 'scope', value: s, id: `scope-${s.replace(':', '-')}`, ...(s === 'live:video' || s === 'live:pose' ? { checked: '' } : {}) }), ` ${s}`)),
  );
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const scopes = Array.from(document.querySelectorAll<HTMLInputElement>('input[name=scope]:checked')).map((i) => i.value);
    const name = $<HTMLInputElement>('token-name').value.trim();
    const ttlSeconds = Math.round(Number($<HTMLInputElement>('token-ttl').value) || 86400);
    run(async () => {
      const r = await mintToken(name, scopes, ttlSeconds);
      $('token-value').textContent = r.token;
      $<HTMLAnchorElement>('token-ar-link').href = `ar-example.html?token=${encodeURIComponent(r.token)}`;
      $('token-result').classList.remove('hidden');
      await refresh();
    }, 'mint token');
  });
  run(refresh, 'tokens');
}

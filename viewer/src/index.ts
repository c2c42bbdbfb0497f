// The login page and role-aware navigation: sonographers and admins → console, bedside staff →
// bedside panel; admins also mint and revoke scoped plugin tokens. `?next=page.html` comes back
// to a page that sent us here to sign in.
import './style.css';
import { canOperate, canReadStudies, isAdmin, login, logout, me, type Account } from './api.ts';
import { wireAdmin } from './admin.ts';
import { $, describeError, run, setText, showError } from './ui.ts';

function nextPage(): string | null {
  const n = new URLSearchParams(location.search).get('next');
  // Only our own pages: a bare file name with an optional query.
  return n !== null && /^[a-z0-9-]+\.html(\?.*)?$/i.test(n) ? n : null;
}

function show(a: Account | null): void {
  $('login-card').classList.toggle('hidden', a !== null);
  $('nav-card').classList.toggle('hidden', a === null);
  $('logout').classList.toggle('hidden', a === null);
  $('admin').classList.toggle('hidden', a === null || !isAdmin(a.role));
  setText('who', a === null ? '' : `${a.username} (${a.role}, ${a.tenantId})`);
  if (a === null) return;
  document.body.dataset.role = a.role;
  $('nav-console').classList.toggle('hidden', !canOperate(a.role));
  $('nav-bedside').classList.toggle('hidden', a.role !== 'bedside');
  $('nav-studies').classList.toggle('hidden', !canReadStudies(a.role));
  $('nav-ar').classList.toggle('hidden', !isAdmin(a.role));
  if (isAdmin(a.role)) wireAdmin();
}

async function main(): Promise<void> {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setText('login-error', '');
    const username = $<HTMLInputElement>('username').value.trim();
    const password = $<HTMLInputElement>('password').value;
    login(username, password).then(
      ({ account }) => {
        const next = nextPage();
        if (next !== null) location.assign(next);
        else show(account);
      },
      (err: unknown) => {
        const { code, message } = describeError(err);
        setText('login-error', `${code}: ${message}`);
        $<HTMLInputElement>('password').select();
      },
    );
  });
  $('logout').addEventListener('click', () =>
    run(async () => {
      await logout();
      location.replace('index.html');
    }, 'sign out'),
  );
  const a = await me();
  const next = nextPage();
  if (a !== null && next !== null) {
    location.replace(next);
    return;
  }
  show(a);
}

main().catch((e: unknown) => showError(e));

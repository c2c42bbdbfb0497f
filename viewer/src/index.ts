// The login page and role-aware navigation: sonographers and admins → console, bedside staff →
// bedside panel; admins also mint and revoke scoped plugin tokens. The plugin pages: a hospital's
// admin → the marketplace, a developer tenant's admin → the developer portal, the platform's
// admin → the developer portal's review. `?next=page.html` comes back to a page that sent us
// here to sign in.
import './style.css';
import { api, ApiError, canOperate, canReadStudies, isAdmin, login, logout, me, type Account } from './api.ts';
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
  pluginLinks(a).catch((e: unknown) => showError(e, 'plugin pages'));
}

/**
 * A tenant admin's tenant is a hospital or a developer, which the account does not say: the
 * developer endpoint answers 200 for a developer tenant and 403 for any other.
 */
async function pluginLinks(a: Account): Promise<void> {
  const developer = $('nav-developer');
  const marketplace = $('nav-marketplace');
  developer.classList.add('hidden');
  marketplace.classList.add('hidden');
  if (a.role === 'platform-admin') {
    developer.textContent = 'Plugin review';
    developer.classList.remove('hidden');
    return;
  }
  if (a.role !== 'tenant-admin') return;
  try {
    await api('GET', '/api/marketplace/developer');
    developer.classList.remove('hidden');
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    // 403: a hospital. Anything else (a server without the marketplace): neither page works.
    if (e.status === 403) marketplace.classList.remove('hidden');
  }
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

// Tenants (hospitals), accounts, login sessions and devices: what auth and demo mode need.
// Passwords arrive already hashed (server/ owns the hashing); session ids are hashes of the
// bearer token, never the token itself.
import { randomUUID } from 'node:crypto';
import type { Queryable } from './database.ts';
import { badRequest, finiteMs, iso, msOrUndefined, rethrowConstraint } from './util.ts';

export type Role = 'platform-admin' | 'tenant-admin' | 'sonographer' | 'bedside' | 'physician';
export const ROLES: readonly Role[] = ['platform-admin', 'tenant-admin', 'sonographer', 'bedside', 'physician'];

export interface Tenant {
  readonly id: string;
  readonly name: string;
  readonly createdAtMs: number;
}

export interface Account {
  readonly id: string;
  readonly tenantId: string;
  readonly username: string;
  readonly role: Role;
  readonly disabled: boolean;
  readonly createdAtMs: number;
}

/** Only the login path needs the hash. */
export interface AccountWithPasswordHash extends Account {
  readonly passwordHash: string;
}

export interface Session {
  readonly tokenHash: string;
  readonly accountId: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly revokedAtMs?: number;
}

export interface Device {
  readonly tenantId: string;
  readonly id: string;
  readonly model: string;
  readonly serial?: string;
  readonly createdAtMs: number;
}

// --- tenants -----------------------------------------------------------------------------------

const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Creates the tenant unless it exists (demo mode runs this at every start). */
export async function ensureTenant(q: Queryable, t: { id: string; name: string }): Promise<{ tenant: Tenant; created: boolean }> {
  if (!TENANT_ID.test(t.id)) throw badRequest(`bad tenant id ${JSON.stringify(t.id)}: lower-case letters, digits and -`);
  const inserted = await q.query<{ id: string; name: string; created_at: Date }>(
    'INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING *',
    [t.id, t.name],
  );
  const row = inserted[0] ?? (await q.query<{ id: string; name: string; created_at: Date }>('SELECT * FROM tenants WHERE id = $1', [t.id]))[0];
  if (row === undefined) throw badRequest(`tenant ${t.id} could not be created`);
  return { tenant: { id: row.id, name: row.name, createdAtMs: row.created_at.getTime() }, created: inserted.length > 0 };
}

export async function getTenant(q: Queryable, id: string): Promise<Tenant | undefined> {
  const row = (await q.query<{ id: string; name: string; created_at: Date }>('SELECT * FROM tenants WHERE id = $1', [id]))[0];
  return row === undefined ? undefined : { id: row.id, name: row.name, createdAtMs: row.created_at.getTime() };
}

// --- accounts ----------------------------------------------------------------------------------

interface AccountRow {
  id: string;
  tenant_id: string;
  username: string;
  role: Role;
  password_hash: string;
  disabled: boolean;
  created_at: Date;
}

const toAccount = (r: AccountRow): Account => ({
  id: r.id,
  tenantId: r.tenant_id,
  username: r.username,
  role: r.role,
  disabled: r.disabled,
  createdAtMs: r.created_at.getTime(),
});

/** Usernames are case-insensitive: stored and looked up lower-case. */
const normaliseUsername = (username: string): string => username.trim().toLowerCase();

export async function createAccount(
  q: Queryable,
  a: { tenantId: string; username: string; role: Role; passwordHash: string },
): Promise<Account> {
  const username = normaliseUsername(a.username);
  if (username.length < 1 || username.length > 64) throw badRequest('a username has 1 to 64 characters');
  if (!ROLES.includes(a.role)) throw badRequest(`unknown role ${String(a.role)}`);
  if (a.passwordHash === '') throw badRequest('an account needs a password hash');
  try {
    const rows = await q.query<AccountRow>(
      'INSERT INTO accounts (id, tenant_id, username, role, password_hash) VALUES ($1, $2, $3, $4, $5) RETURNING *',
      [randomUUID(), a.tenantId, username, a.role, a.passwordHash],
    );
    return toAccount(rows[0]!);
  } catch (err) {
    return rethrowConstraint(err, { duplicate: `username ${username} is taken`, missingParent: `tenant ${a.tenantId} does not exist` });
  }
}

export async function findAccountByUsername(q: Queryable, username: string): Promise<AccountWithPasswordHash | undefined> {
  const row = (await q.query<AccountRow>('SELECT * FROM accounts WHERE username = $1', [normaliseUsername(username)]))[0];
  return row === undefined ? undefined : { ...toAccount(row), passwordHash: row.password_hash };
}

export async function getAccount(q: Queryable, id: string): Promise<Account | undefined> {
  const row = (await q.query<AccountRow>('SELECT * FROM accounts WHERE id = $1', [id]))[0];
  return row === undefined ? undefined : toAccount(row);
}

// --- sessions ----------------------------------------------------------------------------------

interface SessionRow {
  id: string;
  account_id: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
}

const toSession = (r: SessionRow): Session => ({
  tokenHash: r.id,
  accountId: r.account_id,
  createdAtMs: r.created_at.getTime(),
  expiresAtMs: r.expires_at.getTime(),
  ...(r.revoked_at === null ? {} : { revokedAtMs: msOrUndefined(r.revoked_at) }),
});

export async function createSession(
  q: Queryable,
  s: { tokenHash: string; accountId: string; createdAtMs: number; expiresAtMs: number },
): Promise<Session> {
  if (s.tokenHash.length < 32) throw badRequest('a session id is a hash of the token (at least 32 characters)');
  if (finiteMs('expiresAtMs', s.expiresAtMs) <= finiteMs('createdAtMs', s.createdAtMs)) throw badRequest('a session must expire after it starts');
  try {
    const rows = await q.query<SessionRow>(
      'INSERT INTO sessions (id, account_id, created_at, expires_at) VALUES ($1, $2, $3::timestamptz, $4::timestamptz) RETURNING *',
      [s.tokenHash, s.accountId, iso(s.createdAtMs), iso(s.expiresAtMs)],
    );
    return toSession(rows[0]!);
  } catch (err) {
    return rethrowConstraint(err, { duplicate: 'session id collision', missingParent: `account ${s.accountId} does not exist` });
  }
}

/** The session and its account when the session is usable at `nowMs`: not expired, not revoked, account enabled. */
export async function findActiveSession(
  q: Queryable,
  tokenHash: string,
  nowMs: number,
): Promise<{ session: Session; account: Account } | undefined> {
  const row = (
    await q.query<SessionRow & { a_tenant_id: string; a_username: string; a_role: Role; a_disabled: boolean; a_created_at: Date }>(
      `SELECT s.*, a.tenant_id AS a_tenant_id, a.username AS a_username, a.role AS a_role, a.disabled AS a_disabled, a.created_at AS a_created_at
       FROM sessions s JOIN accounts a ON a.id = s.account_id
       WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2::timestamptz AND NOT a.disabled`,
      [tokenHash, iso(finiteMs('nowMs', nowMs))],
    )
  )[0];
  if (row === undefined) return undefined;
  return {
    session: toSession(row),
    account: {
      id: row.account_id,
      tenantId: row.a_tenant_id,
      username: row.a_username,
      role: row.a_role,
      disabled: row.a_disabled,
      createdAtMs: row.a_created_at.getTime(),
    },
  };
}

/** True when an active session was revoked (false: unknown or already revoked). */
export async function revokeSession(q: Queryable, tokenHash: string, atMs: number): Promise<boolean> {
  const rows = await q.query('UPDATE sessions SET revoked_at = $2::timestamptz WHERE id = $1 AND revoked_at IS NULL RETURNING id', [
    tokenHash,
    iso(finiteMs('atMs', atMs)),
  ]);
  return rows.length > 0;
}

/** Log out everywhere (password change, account disabled). Returns how many were revoked. */
export async function revokeAccountSessions(q: Queryable, accountId: string, atMs: number): Promise<number> {
  const rows = await q.query('UPDATE sessions SET revoked_at = $2::timestamptz WHERE account_id = $1 AND revoked_at IS NULL RETURNING id', [
    accountId,
    iso(finiteMs('atMs', atMs)),
  ]);
  return rows.length;
}

// --- devices -----------------------------------------------------------------------------------

interface DeviceRow {
  tenant_id: string;
  id: string;
  model: string;
  serial: string | null;
  created_at: Date;
}

const toDevice = (r: DeviceRow): Device => ({
  tenantId: r.tenant_id,
  id: r.id,
  model: r.model,
  ...(r.serial === null ? {} : { serial: r.serial }),
  createdAtMs: r.created_at.getTime(),
});

/** Registers the device unless it exists; an existing one keeps its stored model and serial. */
export async function ensureDevice(
  q: Queryable,
  d: { tenantId: string; id: string; model: string; serial?: string },
): Promise<{ device: Device; created: boolean }> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(d.id)) throw badRequest(`bad device id ${JSON.stringify(d.id)}: letters, digits, . _ -`);
  try {
    const inserted = await q.query<DeviceRow>(
      'INSERT INTO devices (tenant_id, id, model, serial) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING *',
      [d.tenantId, d.id, d.model, d.serial ?? null],
    );
    const row = inserted[0] ?? (await q.query<DeviceRow>('SELECT * FROM devices WHERE tenant_id = $1 AND id = $2', [d.tenantId, d.id]))[0];
    if (row === undefined) throw badRequest(`device ${d.tenantId}/${d.id} could not be registered`);
    return { device: toDevice(row), created: inserted.length > 0 };
  } catch (err) {
    return rethrowConstraint(err, { missingParent: `tenant ${d.tenantId} does not exist` });
  }
}

export async function listDevices(q: Queryable, tenantId: string): Promise<Device[]> {
  return (await q.query<DeviceRow>('SELECT * FROM devices WHERE tenant_id = $1 ORDER BY id', [tenantId])).map(toDevice);
}

// Tenants, accounts, sessions, devices, the audit log and robot availability.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import {
  createAccount,
  createSession,
  ensureDevice,
  ensureTenant,
  findAccountByUsername,
  findActiveSession,
  getAccount,
  getTenant,
  listDevices,
  revokeAccountSessions,
  revokeSession,
} from './accounts.ts';
import { appendAudit, listAudit } from './audit.ts';
import { listAvailability, recordAvailability } from './availability.ts';
import { forEachDatabase, seedAcquisition } from './testing.ts';

const T0 = Date.UTC(2026, 4, 1);
const HOUR_MS = 3_600_000;

const eco3dError = (code: string, includes?: string) => (err: unknown) => {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code);
  if (includes !== undefined) assert.ok(err.message.includes(includes), `"${err.message}" should mention ${includes}`);
  return true;
};

const tokenHash = (): string => createHash('sha256').update(randomBytes(32)).digest('hex');

forEachDatabase('tenants, accounts, sessions, devices', (ctx) => {
  void test('tenants and devices are ensured idempotently; device ids are per tenant', async () => {
    const first = await ensureTenant(ctx.db, { id: 'demo', name: 'Demo hospital' });
    const second = await ensureTenant(ctx.db, { id: 'demo', name: 'Renamed?' });
    assert.deepEqual([first.created, second.created, second.tenant.name], [true, false, 'Demo hospital']);
    assert.equal((await getTenant(ctx.db, 'demo'))?.name, 'Demo hospital');
    await assert.rejects(ensureTenant(ctx.db, { id: 'Bad Id', name: 'x' }), eco3dError('ECO3D_ERR_BAD_REQUEST'));

    await ensureTenant(ctx.db, { id: 'north', name: 'North' });
    const d1 = await ensureDevice(ctx.db, { tenantId: 'demo', id: 'sim-1', model: 'simulator' });
    const d2 = await ensureDevice(ctx.db, { tenantId: 'north', id: 'sim-1', model: 'UR5e', serial: 'SN9' });
    const d1again = await ensureDevice(ctx.db, { tenantId: 'demo', id: 'sim-1', model: 'other' });
    assert.deepEqual([d1.created, d2.created, d1again.created, d1again.device.model], [true, true, false, 'simulator']);
    assert.deepEqual(
      (await listDevices(ctx.db, 'north')).map((d) => [d.id, d.model, d.serial]),
      [['sim-1', 'UR5e', 'SN9']],
    );
    await assert.rejects(ensureDevice(ctx.db, { tenantId: 'nowhere', id: 'x', model: 'm' }), eco3dError('ECO3D_ERR_NOT_FOUND', 'nowhere'));
  });

  void test('accounts: unique case-insensitive usernames, role checked, hash only on the login path', async () => {
    await ensureTenant(ctx.db, { id: 'acc-tenant', name: 'Accounts' });
    const alice = await createAccount(ctx.db, { tenantId: 'acc-tenant', username: 'Alice', role: 'sonographer', passwordHash: 'scrypt$abc' });
    assert.equal(alice.username, 'alice');
    assert.equal('passwordHash' in alice, false);
    await assert.rejects(
      createAccount(ctx.db, { tenantId: 'acc-tenant', username: 'ALICE', role: 'bedside', passwordHash: 'h' }),
      eco3dError('ECO3D_ERR_CONFLICT', 'alice'),
    );
    await assert.rejects(
      createAccount(ctx.db, { tenantId: 'acc-tenant', username: 'bob', role: 'root' as never, passwordHash: 'h' }),
      eco3dError('ECO3D_ERR_BAD_REQUEST', 'role'),
    );
    await assert.rejects(
      createAccount(ctx.db, { tenantId: 'no-tenant', username: 'carol', role: 'bedside', passwordHash: 'h' }),
      eco3dError('ECO3D_ERR_NOT_FOUND', 'no-tenant'),
    );
    const found = await findAccountByUsername(ctx.db, ' aLiCe ');
    assert.equal(found?.id, alice.id);
    assert.equal(found?.passwordHash, 'scrypt$abc');
    assert.equal(await findAccountByUsername(ctx.db, 'nobody'), undefined);
    assert.deepEqual(await getAccount(ctx.db, alice.id), alice);
  });

  void test('sessions: active until expiry or revocation; revoking all of an account', async () => {
    await ensureTenant(ctx.db, { id: 'sess-tenant', name: 'Sessions' });
    const acc = await createAccount(ctx.db, { tenantId: 'sess-tenant', username: 'sess-user', role: 'tenant-admin', passwordHash: 'h' });
    const [h1, h2, h3] = [tokenHash(), tokenHash(), tokenHash()];
    await createSession(ctx.db, { tokenHash: h1, accountId: acc.id, createdAtMs: T0, expiresAtMs: T0 + HOUR_MS });
    await createSession(ctx.db, { tokenHash: h2, accountId: acc.id, createdAtMs: T0, expiresAtMs: T0 + HOUR_MS });
    await createSession(ctx.db, { tokenHash: h3, accountId: acc.id, createdAtMs: T0, expiresAtMs: T0 + 8 * HOUR_MS });

    const active = await findActiveSession(ctx.db, h1, T0 + 1000);
    assert.equal(active?.account.id, acc.id);
    assert.equal(active?.account.role, 'tenant-admin');
    assert.equal(active?.session.expiresAtMs, T0 + HOUR_MS);
    assert.equal(await findActiveSession(ctx.db, h1, T0 + HOUR_MS), undefined, 'expired at expiresAt');
    assert.equal(await findActiveSession(ctx.db, tokenHash(), T0), undefined, 'unknown');

    assert.equal(await revokeSession(ctx.db, h1, T0 + 10), true);
    assert.equal(await revokeSession(ctx.db, h1, T0 + 20), false, 'already revoked');
    assert.equal(await findActiveSession(ctx.db, h1, T0 + 30), undefined);
    assert.equal(await revokeAccountSessions(ctx.db, acc.id, T0 + 40), 2);
    assert.equal(await findActiveSession(ctx.db, h3, T0 + 50), undefined);

    await assert.rejects(
      createSession(ctx.db, { tokenHash: 'short', accountId: acc.id, createdAtMs: T0, expiresAtMs: T0 + 1 }),
      eco3dError('ECO3D_ERR_BAD_REQUEST', 'hash'),
    );
    await assert.rejects(
      createSession(ctx.db, { tokenHash: tokenHash(), accountId: 'ghost', createdAtMs: T0, expiresAtMs: T0 + 1 }),
      eco3dError('ECO3D_ERR_NOT_FOUND', 'ghost'),
    );
  });

  void test('a disabled account has no active session', async () => {
    await ensureTenant(ctx.db, { id: 'dis-tenant', name: 'Disabled' });
    const acc = await createAccount(ctx.db, { tenantId: 'dis-tenant', username: 'dis-user', role: 'bedside', passwordHash: 'h' });
    const h = tokenHash();
    await createSession(ctx.db, { tokenHash: h, accountId: acc.id, createdAtMs: T0, expiresAtMs: T0 + HOUR_MS });
    await ctx.db.query('UPDATE accounts SET disabled = true WHERE id = $1', [acc.id]);
    assert.equal(await findActiveSession(ctx.db, h, T0 + 1), undefined);
  });
});

forEachDatabase('audit log and robot availability', (ctx) => {
  void test('the audit log appends and lists newest first, per tenant or all', async () => {
    const a = await appendAudit(ctx.db, { tenantId: 'audit-t', actor: 'acc-1', action: 'auth.login', detail: { ip: '10.0.0.7' } });
    const b = await appendAudit(ctx.db, { actor: 'system', action: 'platform.start' });
    assert.ok(b.id > a.id);
    assert.deepEqual(a.detail, { ip: '10.0.0.7' });
    assert.ok(Math.abs(a.atMs - Date.now()) < 60_000, 'stamped by the database clock');
    assert.deepEqual(
      (await listAudit(ctx.db, { tenantId: 'audit-t' })).map((e) => e.action),
      ['auth.login'],
    );
    assert.deepEqual(
      (await listAudit(ctx.db, { limit: 2 })).map((e) => e.action),
      ['platform.start', 'auth.login'],
    );
  });

  void test('the audit log, transition history and availability refuse UPDATE, DELETE and TRUNCATE', async () => {
    // Row triggers fire only on rows: give each table one.
    await appendAudit(ctx.db, { actor: 'acc-2', action: 'account.create', target: 'acc-3' });
    const seeded = await seedAcquisition(ctx.db, { uid: '2.25.1001' });
    await recordAvailability(ctx.db, { tenantId: seeded.tenantId, deviceId: seeded.deviceId, up: false, reason: 'estop', atMs: T0 });
    for (const sql of [
      `UPDATE audit_log SET actor = 'someone-else'`,
      'DELETE FROM audit_log',
      'TRUNCATE audit_log',
      'DELETE FROM acquisition_transitions',
      'UPDATE robot_availability SET up = true',
      'TRUNCATE robot_availability',
    ]) {
      await assert.rejects(ctx.db.query(sql), /append-only/, sql);
    }
    assert.ok((await listAudit(ctx.db)).some((e) => e.target === 'acc-3'));
  });

  void test('availability history: the window, preceded by the state at its start', async () => {
    await ensureTenant(ctx.db, { id: 'avail-t', name: 'Availability' });
    await ensureDevice(ctx.db, { tenantId: 'avail-t', id: 'arm-1', model: 'UR5e' });
    const rec = (up: boolean, reason: string, atMs: number) =>
      recordAvailability(ctx.db, { tenantId: 'avail-t', deviceId: 'arm-1', up, reason, atMs });
    await rec(true, 'connected', T0);
    await rec(false, 'link-lost', T0 + 1 * HOUR_MS);
    await rec(true, 'reconnected', T0 + 3 * HOUR_MS);
    await rec(false, 'fault', T0 + 30 * HOUR_MS);

    const window = await listAvailability(ctx.db, { tenantId: 'avail-t', deviceId: 'arm-1', fromMs: T0 + 2 * HOUR_MS, toMs: T0 + 24 * HOUR_MS });
    assert.deepEqual(
      window.map((w) => [w.up, w.reason, (w.atMs - T0) / HOUR_MS]),
      [
        [false, 'link-lost', 1],
        [true, 'reconnected', 3],
      ],
    );
    assert.deepEqual(await listAvailability(ctx.db, { tenantId: 'avail-t', deviceId: 'arm-1', fromMs: T0 - HOUR_MS, toMs: T0 }), []);
    await assert.rejects(rec(true, 'x', Number.POSITIVE_INFINITY), eco3dError('ECO3D_ERR_NOT_FINITE'));
    await assert.rejects(
      recordAvailability(ctx.db, { tenantId: 'avail-t', deviceId: 'ghost', up: true, reason: 'x', atMs: T0 }),
      eco3dError('ECO3D_ERR_NOT_FOUND', 'ghost'),
    );
  });
});

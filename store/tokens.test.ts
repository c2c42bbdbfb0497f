// Scoped API tokens: stored by hash, found while active, listed without secrets, revoked at once.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { rejectsWith } from '../protocols/testing.ts';
import { ensureTenant } from './accounts.ts';
import { forEachDatabase } from './testing.ts';
import { createApiToken, findActiveApiToken, listApiTokens, revokeApiToken } from './tokens.ts';

const T0 = Date.UTC(2026, 4, 1);
const HOUR_MS = 3_600_000;
const hashOf = (token: string): string => createHash('sha256').update(token).digest('hex');
const newToken = (): string => `e3t_${randomBytes(32).toString('base64url')}`;

forEachDatabase('scoped API tokens', (ctx) => {
  void test('a token is found by the hash of its secret while active, never by the secret itself', async () => {
    await ensureTenant(ctx.db, { id: 'tok-a', name: 'A' });
    const secret = newToken();
    const t = await createApiToken(ctx.db, {
      tokenHash: hashOf(secret),
      tenantId: 'tok-a',
      name: ' AR plugin ',
      scopes: ['live:video', 'live:pose', 'live:video'],
      createdBy: 'admin-a',
      createdAtMs: T0,
      expiresAtMs: T0 + HOUR_MS,
    });
    assert.equal(t.name, 'AR plugin');
    assert.deepEqual(t.scopes, ['live:video', 'live:pose'], 'duplicates dropped, order kept');
    assert.equal('tokenHash' in t, false);
    assert.deepEqual(await findActiveApiToken(ctx.db, hashOf(secret), T0 + 1), t);
    assert.equal(await findActiveApiToken(ctx.db, secret, T0 + 1), undefined, 'the secret itself is stored nowhere');
    assert.equal(await findActiveApiToken(ctx.db, hashOf(newToken()), T0 + 1), undefined);
    assert.equal(await findActiveApiToken(ctx.db, hashOf(secret), T0 + HOUR_MS), undefined, 'expired at expiresAtMs');
    const stored = await ctx.db.query<Record<string, unknown>>('SELECT * FROM api_tokens WHERE id = $1', [t.id]);
    assert.ok(!JSON.stringify(stored).includes(secret));
  });

  void test('revocation is at once, per tenant, and idempotent', async () => {
    await ensureTenant(ctx.db, { id: 'tok-b', name: 'B' });
    await ensureTenant(ctx.db, { id: 'tok-c', name: 'C' });
    const secret = newToken();
    const base = { tenantId: 'tok-b', scopes: ['live:volume'], createdBy: 'admin-b', createdAtMs: T0, expiresAtMs: T0 + 24 * HOUR_MS };
    const t = await createApiToken(ctx.db, { ...base, tokenHash: hashOf(secret), name: 'first' });
    const other = await createApiToken(ctx.db, { ...base, tokenHash: hashOf(newToken()), name: 'second', createdAtMs: T0 + 1000 });

    assert.equal(await revokeApiToken(ctx.db, { tenantId: 'tok-c', id: t.id, revokedBy: 'admin-c', atMs: T0 + 5 }), undefined, "another tenant's token reads as absent");
    assert.ok((await findActiveApiToken(ctx.db, hashOf(secret), T0 + 10)) !== undefined);

    const r = await revokeApiToken(ctx.db, { tenantId: 'tok-b', id: t.id, revokedBy: 'admin-b', atMs: T0 + 10 });
    assert.equal(r?.revoked, true);
    assert.equal(r.token.revokedAtMs, T0 + 10);
    assert.equal(r.token.revokedBy, 'admin-b');
    assert.equal(await findActiveApiToken(ctx.db, hashOf(secret), T0 + 11), undefined);
    const again = await revokeApiToken(ctx.db, { tenantId: 'tok-b', id: t.id, revokedBy: 'someone', atMs: T0 + 20 });
    assert.deepEqual([again?.revoked, again?.token.revokedAtMs, again?.token.revokedBy], [false, T0 + 10, 'admin-b'], 'the first revocation stands');
    assert.equal(await revokeApiToken(ctx.db, { tenantId: 'tok-b', id: 'no-such-id', revokedBy: 'admin-b', atMs: T0 }), undefined);

    const listed = await listApiTokens(ctx.db, 'tok-b');
    assert.deepEqual(
      listed.map((x) => [x.name, x.revokedAtMs]),
      [
        ['second', undefined],
        ['first', T0 + 10],
      ],
    );
    assert.equal(listed[0]?.id, other.id);
    assert.deepEqual(await listApiTokens(ctx.db, 'tok-c'), []);
  });

  void test('bad tokens are refused before they are stored', async () => {
    await ensureTenant(ctx.db, { id: 'tok-d', name: 'D' });
    const ok = { tokenHash: hashOf(newToken()), tenantId: 'tok-d', name: 'n', scopes: ['live:video'], createdBy: 'x', createdAtMs: T0, expiresAtMs: T0 + 1000 };
    await rejectsWith(createApiToken(ctx.db, { ...ok, tokenHash: 'short' }), 'ECO3D_ERR_BAD_REQUEST', /hash/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, scopes: [] }), 'ECO3D_ERR_BAD_REQUEST', /scope/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, scopes: ['Live Video'] }), 'ECO3D_ERR_BAD_REQUEST', /Live Video/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, name: '   ' }), 'ECO3D_ERR_BAD_REQUEST', /name/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, name: 'x'.repeat(101) }), 'ECO3D_ERR_BAD_REQUEST', /name/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, expiresAtMs: T0 }), 'ECO3D_ERR_BAD_REQUEST', /expire/);
    await rejectsWith(createApiToken(ctx.db, { ...ok, expiresAtMs: NaN }), 'ECO3D_ERR_NOT_FINITE');
    await rejectsWith(createApiToken(ctx.db, { ...ok, tenantId: 'nowhere' }), 'ECO3D_ERR_NOT_FOUND', /nowhere/);
    await createApiToken(ctx.db, ok);
    await rejectsWith(createApiToken(ctx.db, { ...ok, name: 'same hash' }), 'ECO3D_ERR_CONFLICT');
  });
});

// Principals of sessions and scoped tokens: what each may do (roles, scopes, live grants).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { throwsWith, rejectsWith } from '../protocols/testing.ts';
import type { ApiToken } from '../store/index.ts';
import { isScopedToken, newScopedToken, scopedTokenHash } from './auth-crypto.ts';
import { AuthService, TOKEN_SCOPES, liveGrantsFor, requireRole, requireRoleOrScope, requireScope, viewerTierFor, type AuthRepo, type Principal } from './auth.ts';

const session = (role: Principal['role']): Principal => ({
  accountId: `acc-${role}`,
  username: role,
  tenantId: 'demo',
  role,
  sessionId: 's',
  kind: 'session',
  scopes: null,
});
const token = (scopes: string[]): Principal => ({
  accountId: 'token:t1',
  username: 'token:t1',
  tenantId: 'demo',
  role: 'service',
  sessionId: 't1',
  kind: 'token',
  scopes,
});

/** An in-memory AuthRepo holding tokens only. */
function tokenRepo(): AuthRepo & { tokens: Map<string, ApiToken & { hash: string }> } {
  const tokens = new Map<string, ApiToken & { hash: string }>();
  return {
    tokens,
    findAccountByUsername: () => Promise.resolve(null),
    createSession: () => Promise.resolve(),
    findActiveSession: () => Promise.resolve(null),
    revokeSession: () => Promise.resolve(),
    createScopedToken: (t) => {
      const rec = { id: `id-${tokens.size}`, tenantId: t.tenantId, name: t.name, scopes: t.scopes, createdBy: t.createdBy, createdAtMs: t.createdAtMs, expiresAtMs: t.expiresAtMs };
      tokens.set(rec.id, { ...rec, hash: t.tokenHash });
      return Promise.resolve(rec);
    },
    findActiveScopedToken: (hash, nowMs) => {
      const t = [...tokens.values()].find((x) => x.hash === hash && x.revokedAtMs === undefined && x.expiresAtMs > nowMs);
      return Promise.resolve(t ?? null);
    },
    listScopedTokens: (tenantId) => Promise.resolve([...tokens.values()].filter((t) => t.tenantId === tenantId)),
    revokeScopedToken: (r) => {
      const t = tokens.get(r.id);
      if (t === undefined || t.tenantId !== r.tenantId) return Promise.resolve(null);
      const revoked = { ...t, revokedAtMs: r.atMs, revokedBy: r.revokedBy };
      tokens.set(r.id, revoked);
      return Promise.resolve({ token: revoked, revoked: true });
    },
  };
}

describe('principals, scopes and live grants', () => {
  test('the allowed scopes, in one list: the live streams, DICOMweb, FHIR, usage ingestion and the data lake', () => {
    assert.deepEqual([...TOKEN_SCOPES], ['live:video', 'live:pose', 'live:volume', 'dicomweb:read', 'dicomweb:write', 'fhir:read', 'fhir:write', 'usage:write', 'lake:read']);
  });

  test('live grants: the full set for the sonographer and admins, no teleop for the bedside, scopes for tokens', () => {
    const all = { video: true, telemetry: true, volume: true, call: true, teleop: true };
    for (const role of ['sonographer', 'tenant-admin', 'platform-admin'] as const) {
      assert.deepEqual(liveGrantsFor(session(role)), all, role);
      assert.equal(viewerTierFor(session(role)), 'operator');
    }
    assert.deepEqual(liveGrantsFor(session('bedside')), { ...all, teleop: false });
    assert.equal(viewerTierFor(session('bedside')), 'bedside');
    assert.deepEqual(liveGrantsFor(token(['live:video'])), { video: true, telemetry: false, volume: false, call: false, teleop: false });
    assert.deepEqual(liveGrantsFor(token(['live:pose', 'live:volume'])), { video: false, telemetry: true, volume: true, call: false, teleop: false });
    assert.deepEqual(liveGrantsFor(token([])), { video: false, telemetry: false, volume: false, call: false, teleop: false });
    assert.equal(viewerTierFor(token(['live:video'])), 'plugin');
  });

  test('a token passes no role check; requireScope wants a token with the scope', () => {
    throwsWith(() => requireRole(token(['live:video']), ['sonographer', 'tenant-admin', 'platform-admin', 'bedside']), 'ECO3D_ERR_FORBIDDEN', 'scoped token');
    throwsWith(() => requireRole(null, ['bedside']), 'ECO3D_ERR_UNAUTHENTICATED');
    assert.equal(requireRole(session('bedside'), ['bedside']).username, 'bedside');
    assert.equal(requireScope(token(['live:video']), 'live:video').kind, 'token');
    throwsWith(() => requireScope(token(['live:video']), 'live:volume'), 'ECO3D_ERR_FORBIDDEN', 'live:volume');
    throwsWith(() => requireScope(session('platform-admin'), 'live:video'), 'ECO3D_ERR_FORBIDDEN', 'live:video');
    throwsWith(() => requireScope(null, 'live:video'), 'ECO3D_ERR_UNAUTHENTICATED');
    assert.equal(requireRoleOrScope(session('sonographer'), ['sonographer'], 'live:video').kind, 'session');
    assert.equal(requireRoleOrScope(token(['live:video']), ['sonographer'], 'live:video').kind, 'token');
    throwsWith(() => requireRoleOrScope(token(['live:pose']), ['sonographer'], 'live:video'), 'ECO3D_ERR_FORBIDDEN');
    throwsWith(() => requireRoleOrScope(session('bedside'), ['sonographer'], 'live:video'), 'ECO3D_ERR_FORBIDDEN');
  });

  test('minting checks scopes and lifetime; the token authenticates until revoked or expired', async () => {
    let now = 1_000_000;
    const repo = tokenRepo();
    const auth = new AuthService(repo, 's'.repeat(32), () => now);
    const admin = session('tenant-admin');
    await rejectsWith(auth.mintToken(admin, { name: 'x', scopes: ['live:video', 'results:write'] }), 'ECO3D_ERR_BAD_REQUEST', /"results:write"/);
    await rejectsWith(auth.mintToken(admin, { name: 'x', scopes: [] }), 'ECO3D_ERR_BAD_REQUEST', /at least one scope/);
    await rejectsWith(auth.mintToken(admin, { name: 'x', scopes: ['live:video'], ttlSeconds: 30 * 24 * 3600 + 1 }), 'ECO3D_ERR_BAD_REQUEST', /ttlSeconds/);
    await rejectsWith(auth.mintToken(admin, { name: 'x', scopes: ['live:video'], ttlSeconds: 59 }), 'ECO3D_ERR_BAD_REQUEST', /ttlSeconds/);
    await rejectsWith(auth.mintToken(admin, { name: 'x', scopes: ['live:video'], ttlSeconds: 100.5 }), 'ECO3D_ERR_BAD_REQUEST', /ttlSeconds/);
    assert.equal(repo.tokens.size, 0);

    const { token: secret, record } = await auth.mintToken(admin, { name: 'AR', scopes: ['live:pose', 'live:pose'] });
    assert.ok(isScopedToken(secret));
    assert.deepEqual(record.scopes, ['live:pose']);
    assert.equal(record.expiresAtMs, now + 3600 * 1000, 'one hour by default');
    assert.equal(record.tenantId, 'demo');
    assert.equal(repo.tokens.get(record.id)?.hash, scopedTokenHash(secret), 'stored as its hash');

    const p = await auth.authenticate(secret);
    assert.deepEqual(p, { accountId: `token:${record.id}`, username: `token:${record.id}`, tenantId: 'demo', role: 'service', sessionId: record.id, kind: 'token', scopes: ['live:pose'] });
    assert.equal(await auth.authenticate(newScopedToken()), null, 'an unknown token');
    assert.equal(await auth.authenticate(`${secret}x`), null, 'a malformed token');

    now += 3600 * 1000;
    assert.equal(await auth.authenticate(secret), null, 'expired');
    now -= 1;
    assert.notEqual(await auth.authenticate(secret), null);
    await rejectsWith(auth.revokeToken({ ...admin, tenantId: 'other' }, record.id), 'ECO3D_ERR_NOT_FOUND');
    await auth.revokeToken(admin, record.id);
    assert.equal(await auth.authenticate(secret), null, 'revoked: at once');
  });
});

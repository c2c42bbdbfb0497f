import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { hashPassword, signToken, verifyPassword, verifyToken } from './auth-crypto.ts';

describe('passwords and tokens', () => {
  test('scrypt hashes verify, are salted, and refuse wrong passwords and junk', async () => {
    const a = await hashPassword('correct horse');
    const b = await hashPassword('correct horse');
    assert.notEqual(a, b);
    assert.equal(await verifyPassword('correct horse', a), true);
    assert.equal(await verifyPassword('correct hors', a), false);
    assert.equal(await verifyPassword('correct horse', 'md5$abc'), false);
    assert.equal(await verifyPassword('x', ''), false);
  });

  test('tokens verify only when well signed and unexpired', () => {
    const secret = 's'.repeat(32);
    const tok = signToken({ sid: 'abc', exp: 2000 }, secret);
    assert.deepEqual(verifyToken(tok, secret, 1000), { sid: 'abc', exp: 2000 });
    assert.equal(verifyToken(tok, secret, 2000), null, 'expired');
    assert.equal(verifyToken(tok, 't'.repeat(32), 1000), null, 'other secret');
    const [p, body, mac] = tok.split('.') as [string, string, string];
    const forged = Buffer.from(JSON.stringify({ sid: 'admin', exp: 9e15 })).toString('base64url');
    assert.equal(verifyToken(`${p}.${forged}.${mac}`, secret, 1000), null, 'tampered body');
    assert.equal(verifyToken(`${p}.${body}.${mac.slice(0, -2)}`, secret, 1000), null, 'truncated mac');
    for (const junk of ['', 'e3', 'e3..', 'x.y.z', 'e3.%%%.%%%', 'a'.repeat(10_000)]) assert.equal(verifyToken(junk, secret, 1000), null);
  });
});

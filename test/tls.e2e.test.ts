// HTTPS/WSS with a generated self-signed certificate, and the browser's way in: the HttpOnly
// session cookie on both the API and the WebSocket upgrade.
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { DEMO_PASSWORD, startTestServer, type TestServer } from './harness.ts';

function httpsJson(url: string, init: { method?: string; body?: unknown; cookie?: string }): Promise<{ status: number; body: any; setCookie: string[] }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: init.method ?? 'GET',
        rejectUnauthorized: false, // self-signed on purpose
        headers: {
          ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(init.cookie === undefined ? {} : { cookie: init.cookie }),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), setCookie: res.headers['set-cookie'] ?? [] }));
      },
    );
    req.on('error', reject);
    req.end(init.body === undefined ? undefined : JSON.stringify(init.body));
  });
}

describe('HTTPS/WSS with a self-signed certificate and cookie sessions', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ tlsSelfSigned: 'true' });
  });
  after(async () => {
    await t.close();
  });

  test('serves HTTPS, keeps the certificate in the data directory, and sets a Secure HttpOnly cookie', async () => {
    assert.match(t.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.ok(existsSync(join(t.dataDir, 'tls', 'self-signed.crt')));
    const login = await httpsJson(`${t.url}/api/auth/login`, { method: 'POST', body: { username: 'demo-bedside', password: DEMO_PASSWORD } });
    assert.equal(login.status, 200);
    const cookie = login.setCookie.find((c) => c.startsWith('eco3d_session='));
    assert.ok(cookie !== undefined);
    assert.match(cookie, /HttpOnly/i);
    assert.match(cookie, /Secure/i);
    assert.match(cookie, /SameSite=Strict/i);
    const pair = cookie.split(';')[0]!;
    const me = await httpsJson(`${t.url}/api/auth/me`, { cookie: pair });
    assert.equal(me.status, 200);
    assert.equal(me.body.username, 'demo-bedside');

    // A browser's WebSocket carries the cookie, not a Bearer header.
    const ws = new WebSocket(`${t.url.replace(/^https/, 'wss')}/ws/bedside`, { headers: { cookie: pair }, rejectUnauthorized: false });
    const hello = await new Promise<any>((resolve, reject) => {
      ws.once('message', (d) => resolve(JSON.parse((d as Buffer).toString('utf8'))));
      ws.once('error', reject);
    });
    assert.equal(hello.type, 'hello');
    assert.equal(hello.channel, 'bedside');
    ws.terminate();

    // After logout the same cookie opens nothing.
    const out = await httpsJson(`${t.url}/api/auth/logout`, { method: 'POST', cookie: pair });
    assert.equal(out.status, 200);
    const again = await httpsJson(`${t.url}/api/auth/me`, { cookie: pair });
    assert.equal(again.status, 401);
    assert.equal(again.body.code, 'ECO3D_ERR_UNAUTHENTICATED');
  });
});

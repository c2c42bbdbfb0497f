// The HTTP APIs of the browser apps and plugins, end to end on a real server: scoped tokens,
// the current exam (masked in demo mode), research consent and caliper measurements.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { databasesUnderTest, seedAcquisition } from '../store/testing.ts';
import { ADMIN_PASSWORD, errorCode, randomId, startTestServer, type TestServer } from './harness.ts';

const DAY_S = 24 * 3600;
const EXAM = { patientId: 'PAT-0042', patientName: 'Doe Richard', birthDate: '1980-04-12', sex: 'M', description: 'Liver 3D', accessionNumber: 'ACC-77' };

for (const database of databasesUnderTest()) describe(`tokens, exams, consent and measurements over HTTP (${database})`, () => {
  let t: TestServer;
  let admin: string; // platform admin (tenant `platform`)
  let tenantAdmin: string; // of tenant `demo`
  let sonographer: string;
  let bedside: string;

  type AuditRow = { action: string; actor: string; target?: string; detail: Record<string, unknown> };
  const auditActions = async (): Promise<AuditRow[]> => {
    const r = await t.api('/api/audit?limit=1000', { token: tenantAdmin });
    assert.equal(r.status, 200);
    return r.body.audit as AuditRow[];
  };

  before(async () => {
    t = await startTestServer({}, database);
    admin = await t.login('admin', ADMIN_PASSWORD);
    sonographer = await t.login('demo-sonographer');
    bedside = await t.login('demo-bedside');
    const created = await t.api('/api/accounts', {
      method: 'POST',
      token: admin,
      body: { tenantId: 'demo', username: 'demo-admin', role: 'tenant-admin', password: 'tenant-admin-password' },
    });
    assert.equal(created.status, 201);
    tenantAdmin = await t.login('demo-admin', 'tenant-admin-password');
  });
  afterEach(async () => {
    await t.killClients();
  });
  after(async () => {
    await t.close();
  });

  test('a tenant admin mints a scoped token, shown once; it reaches no user route; revoked, it is refused at once', async () => {
    const before = Date.now();
    const minted = await t.api('/api/auth/tokens', { method: 'POST', token: tenantAdmin, body: { name: 'AR overlay', scopes: ['live:video', 'live:pose'] } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    assert.deepEqual(Object.keys(minted.body).sort(), ['expiresAtMs', 'id', 'name', 'scopes', 'tenantId', 'token']);
    const { id, token } = minted.body as { id: string; token: string };
    assert.match(token, /^e3t_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual([minted.body.name, minted.body.scopes, minted.body.tenantId], ['AR overlay', ['live:video', 'live:pose'], 'demo']);
    assert.ok(minted.body.expiresAtMs >= before + 3600_000 && minted.body.expiresAtMs <= Date.now() + 3600_000, 'one hour by default');

    // Listed without the secret (nor its hash).
    const list = await t.api('/api/auth/tokens', { token: tenantAdmin });
    assert.equal(list.status, 200);
    const listed = (list.body.tokens as Record<string, unknown>[]).find((x) => x.id === id);
    assert.equal(listed?.status, 'active');
    assert.equal(listed.createdBy, 'demo-admin');
    assert.ok(!JSON.stringify(list.body).includes(token.slice(4)), 'no secret in the list');
    assert.ok(!Object.keys(listed).some((k) => /hash|token/i.test(k)));

    // The token authenticates (403: known, but not for this), and never passes a role check.
    for (const [method, path] of [
      ['GET', '/api/acquisitions'],
      ['GET', '/api/auth/me'],
      ['GET', '/api/exam'],
      ['GET', '/api/auth/tokens'],
      ['POST', '/api/auth/tokens'],
      ['GET', '/api/audit'],
      ['POST', '/api/auth/logout'],
    ] as const) {
      const r = await t.api(path, { method, token, ...(method === 'POST' ? { body: { name: 'x', scopes: ['live:video'] } } : {}) });
      assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, 'ECO3D_ERR_FORBIDDEN');
      assert.match(r.body.message, /scoped token/);
    }

    // Another tenant's admin cannot revoke it; the tenant admin can, effective at once.
    const foreign = await t.api(`/api/auth/tokens/${id}`, { method: 'DELETE', token: admin });
    assert.equal(foreign.status, 404);
    const revoked = await t.api(`/api/auth/tokens/${id}`, { method: 'DELETE', token: tenantAdmin });
    assert.equal(revoked.status, 200);
    assert.equal(revoked.body.status, 'revoked');
    assert.equal(revoked.body.revokedBy, 'demo-admin');
    const after = await t.api('/api/acquisitions', { token });
    assert.equal(after.status, 401);
    assert.equal(after.body.code, 'ECO3D_ERR_UNAUTHENTICATED');
    assert.equal((await t.api(`/api/auth/tokens/${id}`, { method: 'DELETE', token: tenantAdmin })).status, 200, 'revoking twice is harmless');
    assert.equal((await t.api('/api/auth/tokens/no-such-token', { method: 'DELETE', token: tenantAdmin })).status, 404);

    const audit = await auditActions();
    assert.equal(audit.filter((e) => e.action === 'token.mint' && e.target === id).length, 1);
    assert.equal(audit.filter((e) => e.action === 'token.revoke' && e.target === id).length, 1, 'one revocation audited');
    assert.ok(!JSON.stringify(audit).includes(token.slice(4)), 'no secret in the audit log');
  });

  test('token minting: admins only; unknown scopes, bad lifetimes and bad bodies are refused', async () => {
    const mint = (token: string | undefined, body: unknown) => t.api('/api/auth/tokens', { method: 'POST', ...(token === undefined ? {} : { token }), body });
    const ok = { name: 'plugin', scopes: ['live:volume'] };
    for (const who of [sonographer, bedside]) {
      const r = await mint(who, ok);
      assert.equal(r.status, 403);
      assert.equal(r.body.code, 'ECO3D_ERR_FORBIDDEN');
    }
    assert.equal((await mint(undefined, ok)).status, 401);
    assert.equal((await t.api('/api/auth/tokens', { token: sonographer })).status, 403);

    const unknown = await mint(tenantAdmin, { name: 'p', scopes: ['live:video', 'study:everything'] });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.body.code, 'ECO3D_ERR_BAD_REQUEST');
    assert.match(unknown.body.message, /study:everything/);
    for (const body of [
      { ...ok, ttlSeconds: 30 * DAY_S + 1 },
      { ...ok, ttlSeconds: 0 },
      { ...ok, ttlSeconds: 1.5e3 + 0.5 },
      { ...ok, ttlSeconds: '3600' },
      { ...ok, scopes: [] },
      { name: '', scopes: ['live:video'] },
      { scopes: ['live:video'] },
      { ...ok, extra: true },
    ]) {
      const r = await mint(tenantAdmin, body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.code, 'ECO3D_ERR_BAD_REQUEST');
    }
    const longest = await mint(tenantAdmin, { ...ok, ttlSeconds: 30 * DAY_S });
    assert.equal(longest.status, 201);
    assert.ok(Math.abs(longest.body.expiresAtMs - (Date.now() + 30 * DAY_S * 1000)) < 60_000);
    // A platform admin's tokens carry its own tenant.
    const platform = await mint(admin, ok);
    assert.equal(platform.status, 201);
    assert.equal(platform.body.tenantId, 'platform');
  });

  test('the current exam: masked in demo mode, revealed on request (audited), linked to new acquisitions', async () => {
    const put = await t.api('/api/exam', { method: 'PUT', token: bedside, body: EXAM });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const examId = put.body.id as string;
    assert.deepEqual(
      [put.body.patientName, put.body.patientId, put.body.birthDate, put.body.sex, put.body.description, put.body.accessionNumber, put.body.masked],
      ['D*** R***', 'P***', '1980', 'M', 'Liver 3D', 'ACC-77', true],
    );
    assert.equal(put.body.tenantId, 'demo');
    assert.equal(put.body.deviceId, 'sim-1');
    assert.equal(put.body.startedBy, 'demo-bedside');

    const got = await t.api('/api/exam', { token: sonographer });
    assert.equal(got.status, 200);
    assert.equal(got.body.exam.id, examId);
    assert.equal(got.body.exam.patientName, 'D*** R***');
    assert.ok(!JSON.stringify(got.body).includes('Richard') && !JSON.stringify(got.body).includes('0042') && !JSON.stringify(got.body).includes('04-12'));

    const revealed = await t.api('/api/exam?reveal=true', { token: sonographer });
    assert.deepEqual(
      [revealed.body.exam.patientName, revealed.body.exam.patientId, revealed.body.exam.birthDate, revealed.body.exam.masked],
      ['Doe Richard', 'PAT-0042', '1980-04-12', false],
    );
    const reveals = (await auditActions()).filter((e) => e.action === 'patient.reveal' && e.target === `exam:${examId}`);
    assert.equal(reveals.length, 1);
    assert.equal(reveals[0]?.actor, 'demo-sonographer');
    assert.ok(!JSON.stringify(reveals).includes('Richard'), 'the audit log names no patient');
    assert.ok((await auditActions()).some((e) => e.action === 'exam.start' && e.target === examId && e.actor === 'demo-bedside'));

    // An acquisition started now belongs to this exam.
    const bs = await t.connect('bedside', bedside);
    const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 30, speedMmPerS: 15 };
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
    const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
    const uid = running.acquisition.uid!;
    try {
      let rec = await t.api(`/api/acquisitions/${uid}`, { token: sonographer });
      for (let i = 0; i < 50 && rec.body.exam === null; i++) {
        await new Promise<void>((r) => setTimeout(r, 100));
        rec = await t.api(`/api/acquisitions/${uid}`, { token: sonographer });
      }
      assert.equal(rec.status, 200);
      assert.equal(rec.body.exam?.id, examId);
      assert.equal(rec.body.exam.patientName, 'D*** R***');
      const clear = await t.api(`/api/acquisitions/${uid}?reveal=true`, { token: sonographer });
      assert.equal(clear.body.exam.patientName, 'Doe Richard');
      assert.ok((await auditActions()).some((e) => e.action === 'patient.reveal' && e.target === `acquisition:${uid}`));
    } finally {
      await bs.request({ type: 'sweep-abort' }).catch(() => undefined);
      await bs.status((s) => s.acquisition.state === 'aborted' || s.acquisition.state === 'completed', 10_000, 'acquisition over').catch(() => undefined);
    }

    // A new exam replaces it; ending it leaves none.
    const next = await t.api('/api/exam', { method: 'PUT', token: sonographer, body: { patientId: 'P-2', patientName: 'Roe', description: 'Thyroid' } });
    assert.equal(next.status, 201);
    assert.equal((await t.api('/api/exam', { token: bedside })).body.exam.id, next.body.id);
    const ended = await t.api('/api/exam', { method: 'DELETE', token: bedside });
    assert.equal(ended.status, 200);
    assert.equal(ended.body.exam.id, next.body.id);
    assert.equal(typeof ended.body.exam.endedAtMs, 'number');
    assert.deepEqual((await t.api('/api/exam', { token: bedside })).body, { exam: null });
    const again = await t.api('/api/exam', { method: 'DELETE', token: bedside });
    assert.equal(again.status, 404);
    assert.equal(again.body.code, 'ECO3D_ERR_NOT_FOUND');
    assert.ok((await auditActions()).some((e) => e.action === 'exam.end' && e.target === next.body.id));
  });

  test('exam inputs are checked', async () => {
    for (const body of [
      { ...EXAM, birthDate: '1980-02-30' },
      { ...EXAM, birthDate: '12.04.1980' },
      { ...EXAM, birthDate: '2999-01-01' },
      { ...EXAM, sex: 'X' },
      { ...EXAM, accessionNumber: 'A'.repeat(17) },
      { ...EXAM, patientName: 'Doe\\Richard' },
      { ...EXAM, patientName: '' },
      { ...EXAM, ward: 7 },
      { patientName: 'Doe', description: 'x' },
    ]) {
      const r = await t.api('/api/exam', { method: 'PUT', token: bedside, body });
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.code, 'ECO3D_ERR_BAD_REQUEST');
    }
    assert.equal((await t.api('/api/exam', { method: 'PUT', body: EXAM })).status, 401);
  });

  test('research consent: recorded at the bedside for the current exam, append-only history, newest first', async () => {
    const noExam = await t.api('/api/consents', { method: 'POST', token: bedside, body: { decision: 'yes' } });
    assert.equal(noExam.status, 409);
    assert.equal(noExam.body.code, 'ECO3D_ERR_CONFLICT');
    assert.equal((await t.api('/api/consents', { token: bedside })).status, 409);

    const exam = await t.api('/api/exam', { method: 'PUT', token: bedside, body: { ...EXAM, patientId: 'CONSENT-1' } });
    assert.equal(exam.status, 201);
    const yes = await t.api('/api/consents', { method: 'POST', token: bedside, body: { decision: 'yes' } });
    assert.equal(yes.status, 201, JSON.stringify(yes.body));
    assert.deepEqual(
      [yes.body.patientId, yes.body.examId, yes.body.decision, yes.body.recordedBy, typeof yes.body.recordedAtMs, typeof yes.body.id],
      ['C***', exam.body.id, 'yes', 'demo-bedside', 'number', 'string'],
    );
    const revoked = await t.api('/api/consents', { method: 'POST', token: tenantAdmin, body: { decision: 'revoked' } });
    assert.equal(revoked.status, 201);
    assert.equal(revoked.body.recordedBy, 'demo-admin');
    const other = await t.api('/api/consents', { method: 'POST', token: bedside, body: { decision: 'no', patientId: 'CONSENT-2' } });
    assert.equal(other.status, 201);
    assert.equal(other.body.examId, null, 'not the current exam’s patient');

    for (const who of [sonographer, admin]) {
      const r = await t.api('/api/consents', { method: 'POST', token: who, body: { decision: 'yes' } });
      assert.equal(r.status, 403);
    }
    for (const body of [{ decision: 'maybe' }, {}, { decision: 'yes', patientId: '' }, { decision: 'yes', note: 'x' }]) {
      assert.equal((await t.api('/api/consents', { method: 'POST', token: bedside, body })).status, 400, JSON.stringify(body));
    }

    const history = await t.api('/api/consents', { token: sonographer });
    assert.equal(history.status, 200);
    assert.equal(history.body.current, 'revoked');
    assert.equal(history.body.patientId, 'C***');
    assert.deepEqual(
      (history.body.consents as { id: string; decision: string }[]).map((c) => [c.id, c.decision]),
      [
        [revoked.body.id, 'revoked'],
        [yes.body.id, 'yes'],
      ],
    );
    const clear = await t.api('/api/consents?patientId=CONSENT-2&reveal=true', { token: tenantAdmin });
    assert.equal(clear.body.patientId, 'CONSENT-2');
    assert.equal(clear.body.current, 'no');
    assert.equal(clear.body.consents[0].patientId, 'CONSENT-2');
    const none = await t.api('/api/consents?patientId=NOBODY', { token: tenantAdmin });
    assert.deepEqual([none.body.current, none.body.consents], [null, []]);

    const audit = await auditActions();
    for (const id of [yes.body.id, revoked.body.id, other.body.id]) assert.ok(audit.some((e) => e.action === 'consent.record' && e.target === id), id);
    assert.ok(audit.some((e) => e.action === 'patient.reveal' && e.actor === 'demo-admin' && e.target === 'consents'));
    // The table refuses edits, whoever asks.
    await assert.rejects(t.server.db.query(`UPDATE consents SET decision = 'yes' WHERE id = $1`, [revoked.body.id]), /append-only/);
    await assert.rejects(t.server.db.query('DELETE FROM consents WHERE id = $1', [yes.body.id]), /append-only/);
    assert.equal((await t.api('/api/exam', { method: 'DELETE', token: bedside })).status, 200);
  });

  test('measurements: the server computes the value; bad points, roles and tenants are refused', async () => {
    const uid = `2.25.${Date.now()}${randomId().replace(/\D/g, '')}`;
    await seedAcquisition(t.server.db, { tenantId: 'demo', deviceId: 'sim-1', uid });
    const url = `/api/acquisitions/${uid}/measurements`;
    const post = (token: string, body: unknown) => t.api(url, { method: 'POST', token, body });

    const d = await post(sonographer, { kind: 'distance', label: 'lesion', plane: 'axial', pointsMm: [{ x: 10, y: 20, z: 5 }, { x: 13, y: 24, z: 5 }], valueMm: 999 });
    assert.equal(d.status, 400, 'a client-given value is not even accepted');
    const dist = await post(sonographer, { kind: 'distance', label: 'lesion', plane: 'axial', pointsMm: [{ x: 10, y: 20, z: 5 }, { x: 13, y: 24, z: 5 }] });
    assert.equal(dist.status, 201, JSON.stringify(dist.body));
    assert.deepEqual([dist.body.kind, dist.body.valueMm, dist.body.label, dist.body.plane, dist.body.acquisitionUid, dist.body.createdBy], ['distance', 5, 'lesion', 'axial', uid, 'demo-sonographer']);
    const area = await post(tenantAdmin, { kind: 'area', plane: 'sagittal', pointsMm: [{ x: 400, y: 0, z: 0 }, { x: 400, y: 12, z: 0 }, { x: 400, y: 12, z: 5 }, { x: 400, y: 0, z: 5 }] });
    assert.equal(area.status, 201, JSON.stringify(area.body));
    assert.equal(area.body.valueMm2, 60);
    assert.equal(area.body.valueMm, undefined);

    const list = await t.api(url, { token: bedside });
    assert.equal(list.status, 200);
    assert.deepEqual(
      (list.body.measurements as { id: string }[]).map((m) => m.id),
      [dist.body.id, area.body.id],
    );

    const two = [{ x: 0, y: 0, z: 0 }, { x: 1, y: 0, z: 0 }];
    const refused: [unknown, number, string][] = [
      [{ kind: 'distance', plane: 'axial', pointsMm: [{ x: 0, y: 0, z: 0 }] }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'area', plane: 'axial', pointsMm: two }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'area', plane: 'axial', pointsMm: [...two, { x: 0, y: 1, z: 3 }] }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'distance', plane: 'axial', pointsMm: [{ x: 1e5, y: 0, z: 0 }, two[1]] }, 422, 'ECO3D_ERR_NOT_FINITE'],
      [{ kind: 'distance', plane: 'axial', pointsMm: [{ x: 0, y: -10000, z: 0 }, two[1]] }, 422, 'ECO3D_ERR_NOT_FINITE'],
      [{ kind: 'distance', plane: 'axial', pointsMm: [{ x: 0, y: '1', z: 0 }, two[1]] }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'distance', plane: 'axial', pointsMm: [{ x: 0, y: 0 }, two[1]] }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'distance', plane: 'oblique', pointsMm: two }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      [{ kind: 'angle', plane: 'axial', pointsMm: two }, 400, 'ECO3D_ERR_BAD_REQUEST'],
      // Not JSON at all, and a number JSON.parse turns into Infinity.
      ['{"kind":"distance","plane":"axial","pointsMm":[{"x":NaN,"y":0,"z":0},{"x":1,"y":0,"z":0}]}', 400, 'ECO3D_ERR_BAD_REQUEST'],
      ['{"kind":"distance","plane":"axial","pointsMm":[{"x":1e999,"y":0,"z":0},{"x":1,"y":0,"z":0}]}', 422, 'ECO3D_ERR_NOT_FINITE'],
    ];
    for (const [body, status, code] of refused) {
      const r = await post(sonographer, body);
      assert.deepEqual([r.status, r.body.code], [status, code], `${JSON.stringify(body)} → ${JSON.stringify(r.body)}`);
    }
    const byBedside = await post(bedside, { kind: 'distance', plane: 'axial', pointsMm: two });
    assert.equal(byBedside.status, 403);
    assert.equal(byBedside.body.code, 'ECO3D_ERR_FORBIDDEN');
    const unknown = await t.api('/api/acquisitions/2.25.404/measurements', { method: 'POST', token: sonographer, body: { kind: 'distance', plane: 'axial', pointsMm: two } });
    assert.equal(unknown.status, 404);
    const foreign = await post(admin, { kind: 'distance', plane: 'axial', pointsMm: two });
    assert.equal(foreign.status, 404, "another tenant's acquisition reads as absent");
    assert.equal((await t.api(url, { token: admin })).status, 404);
    assert.equal((await t.api(url, { token: sonographer })).body.measurements.length, 2, 'nothing refused was stored');

    const audit = await auditActions();
    assert.equal(audit.filter((e) => e.action === 'measurement.create' && e.target === uid).length, 2);
  });

  test('the OpenAPI document describes the new routes', async () => {
    const doc = await t.api('/api/openapi.json');
    const paths = Object.keys(doc.body.paths as Record<string, unknown>);
    for (const p of ['/api/auth/tokens', '/api/auth/tokens/{id}', '/api/exam', '/api/consents', '/api/acquisitions/{uid}/measurements', '/api/worklist', '/api/studies/{study}/report', '/api/studies/{study}/report/sign', '/api/studies/{study}/report/amend']) {
      assert.ok(paths.includes(p), p);
    }
    assert.deepEqual(doc.body.paths['/api/auth/tokens'].post.requestBody.content['application/json'].schema.properties.scopes.items.enum, [
      'live:video',
      'live:pose',
      'live:volume',
      'dicomweb:read',
      'dicomweb:write',
      'fhir:read',
      'fhir:write',
      'usage:write',
      'lake:read',
    ]);
  });
});

describe('outside demo mode, patient identity is answered in clear', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ tenant: 'north' });
  });
  after(async () => {
    await t.close();
  });

  test('the exam comes back unmasked, and nothing is audited as a reveal', async () => {
    const admin = await t.login('admin', ADMIN_PASSWORD);
    const put = await t.api('/api/exam', { method: 'PUT', token: admin, body: EXAM });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    assert.deepEqual([put.body.patientName, put.body.patientId, put.body.birthDate, put.body.masked, put.body.tenantId], ['Doe Richard', 'PAT-0042', '1980-04-12', false, 'north']);
    const got = await t.api('/api/exam?reveal=true', { token: admin });
    assert.equal(got.body.exam.patientName, 'Doe Richard');
    const audit = await t.api('/api/audit?limit=1000', { token: admin });
    assert.ok(!(audit.body.audit as { action: string }[]).some((e) => e.action === 'patient.reveal'));
  });
});

// A second DICOMweb over a second archive (the research data lake): a content-addressed archive
// that announces nothing, mounted read-only at /lake/dicom-web with an access check that grants
// one study of two, next to the ordinary /dicom-web in the same app. And the archive's erasure
// (deleteStudy) in both layouts. Real database (PGlite), real files, fastify inject.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { newUid } from '../protocols/dicom-us.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { ensureTenant } from '../store/accounts.ts';
import { forEachDatabase } from '../store/testing.ts';
import type { DicomJsonDataset } from './dicom-json.ts';
import { DicomArchive } from './dicom-store.ts';
import { registerDicomWeb, type DicomWebAccess, type DicomWebAuditEntry, type DicomWebPrincipal } from './dicomweb.ts';
import { parseQido } from './qido.ts';
import { inlineRenderer } from './render.ts';
import { datasetOf, rewrapMeta, srReport, usMultiframe, type BuiltInstance } from './testing.ts';

const HOSPITAL = 'hospital-scoped';
const LAKE = 'eco3d-lake';
const PARTNER = 'partner-acme';
const SOURCE = { kind: 'acquisition', acquisitionUid: '2.25.777' } as const;
const LAKE_PREFIX = '/lake/dicom-web';
// Granted by the licence but not in the lake (withdrawn, say): the reference "not there" answer.
const GHOST_STUDY = newUid();

const PRINCIPALS: Record<string, DicomWebPrincipal> = {
  physician: { username: 'dr-scoped', tenantId: HOSPITAL, role: 'physician', kind: 'session', scopes: null },
  partner: { username: 'token:acme', tenantId: PARTNER, role: 'service', kind: 'token', scopes: ['lake:read'] },
  partnerNoScope: { username: 'token:acme-2', tenantId: PARTNER, role: 'service', kind: 'token', scopes: ['dicomweb:read'] },
};

const sha256Of = (bytes: Uint8Array): string => createHash('sha256').update(datasetOf(bytes)).digest('hex');
const v = (ds: DicomJsonDataset, tag: string): unknown => ds[tag]?.Value?.[0];

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) await walk(join(d, e.name));
      else out.push(relative(dir, join(d, e.name)));
    }
  };
  await walk(dir);
  return out.sort();
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

forEachDatabase('DICOMweb: a scoped, read-only mount over the lake', (ctx) => {
  let root: string;
  let hospital: DicomArchive;
  let lake: DicomArchive;
  let app: FastifyInstance;
  const audits: DicomWebAuditEntry[] = [];
  const accessCalls: ('read' | 'write')[] = [];
  // Lake study A (granted): two series; lake study B (not granted); hospital study H.
  let a1: BuiltInstance;
  let a2: BuiltInstance;
  let b1: BuiltInstance;
  let h1: BuiltInstance;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eco3d-dicomweb-scoped-'));
    for (const t of [HOSPITAL, LAKE, PARTNER]) await ensureTenant(ctx.db, { id: t, name: t });
    hospital = new DicomArchive({ root: join(root, 'archive'), db: ctx.db });
    lake = new DicomArchive({ root: join(root, 'lake'), db: ctx.db, layout: 'content-addressed', announce: false });
    a1 = usMultiframe({ patientName: 'Lake^A', patientId: 'PSEUDO-A', studyDateTime: '2026-03-10T10:00:00.000+01:00' }, { frames: 3 });
    a2 = srReport({ studyInstanceUid: a1.studyInstanceUid, patientName: 'Lake^A', patientId: 'PSEUDO-A' });
    b1 = usMultiframe({ patientName: 'Lake^B', patientId: 'PSEUDO-B', studyDateTime: '2026-03-11T10:00:00.000+01:00' }, { frames: 2, seed: 5 });
    h1 = usMultiframe({ patientName: 'Hospital^H', patientId: 'P-H' }, { frames: 2, seed: 9 });
    for (const i of [a1, a2, b1]) assert.equal((await lake.storeInstance(LAKE, i.bytes, SOURCE)).status, 'stored');
    assert.equal((await hospital.storeInstance(HOSPITAL, h1.bytes, SOURCE)).status, 'stored');

    app = Fastify();
    app.decorateRequest('principal', null);
    app.addHook('onRequest', async (req) => {
      const who = req.headers['x-test-principal'];
      (req as unknown as { principal: DicomWebPrincipal | null }).principal = typeof who === 'string' ? (PRINCIPALS[who] ?? null) : null;
    });
    const audit = async (e: DicomWebAuditEntry): Promise<void> => {
      audits.push(e);
    };
    await registerDicomWeb(app, { archive: hospital, audit, maxStowBytes: 4 << 20, renderer: inlineRenderer });
    await registerDicomWeb(app, {
      archive: lake,
      audit,
      maxStowBytes: 4 << 20,
      renderer: inlineRenderer,
      prefix: `${LAKE_PREFIX}/`,
      readOnly: true,
      auditPrefix: 'lake.dicomweb',
      access: async (_req, principal, need): Promise<DicomWebAccess> => {
        accessCalls.push(need);
        if (principal === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'a partner token is needed');
        if (!(principal.scopes ?? []).includes('lake:read')) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'this token has no lake licence');
        return { tenantId: LAKE, actor: principal.username, studies: new Set([a1.studyInstanceUid, GHOST_STUDY]), auditDetail: { licenceId: 'lic-42' }, auditTenantId: principal.tenantId };
      },
    });
    await app.ready();
  });
  after(async () => {
    await app.close();
    await rm(root, { recursive: true, force: true });
  });

  const get = (path: string, who: keyof typeof PRINCIPALS | null = 'partner', accept?: string) =>
    app.inject({ url: path, headers: { ...(who === null ? {} : { 'x-test-principal': who }), ...(accept === undefined ? {} : { accept }) } });
  const instPath = (i: BuiltInstance): string => `/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}/instances/${i.sopInstanceUid}`;

  test('QIDO-RS on the lake finds the granted study only, at every level, audited with the licence under the partner', async () => {
    const studies = await get(`${LAKE_PREFIX}/studies`);
    assert.equal(studies.statusCode, 200, studies.body);
    const st = studies.json<DicomJsonDataset[]>();
    assert.deepEqual(
      st.map((d) => v(d, '0020000D')),
      [a1.studyInstanceUid],
    );
    assert.equal(v(st[0]!, '00201208'), 2, 'the granted study is whole: both its instances');
    // No baseUrl option: the request's host plus the prefix.
    assert.equal(v(st[0]!, '00081190'), `http://localhost:80${LAKE_PREFIX}/studies/${a1.studyInstanceUid}`);
    const a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.tenantId, a.target, a.detail?.results, a.detail?.licenceId, a.detail?.denied], ['lake.dicomweb.qido', 'token:acme', PARTNER, '/studies', 1, 'lic-42', undefined]);

    const series = await get(`${LAKE_PREFIX}/series`);
    assert.equal(series.statusCode, 200);
    assert.deepEqual(series.json<DicomJsonDataset[]>().map((d) => v(d, '0020000E')).sort(), [a1.seriesInstanceUid, a2.seriesInstanceUid].sort());
    const instances = await get(`${LAKE_PREFIX}/instances`);
    assert.equal(instances.statusCode, 200);
    assert.deepEqual(instances.json<DicomJsonDataset[]>().map((d) => v(d, '00080018')).sort(), [a1.sopInstanceUid, a2.sopInstanceUid].sort());

    // Asking for the other study by key, or under it, finds nothing (204) ...
    assert.equal((await get(`${LAKE_PREFIX}/studies?StudyInstanceUID=${b1.studyInstanceUid}`)).statusCode, 204);
    assert.equal((await get(`${LAKE_PREFIX}/instances?PatientID=PSEUDO-B`)).statusCode, 204);
    for (const path of [`/studies/${b1.studyInstanceUid}/series`, `/studies/${b1.studyInstanceUid}/instances`, `/studies/${b1.studyInstanceUid}/series/${b1.seriesInstanceUid}/instances`]) {
      assert.equal((await get(`${LAKE_PREFIX}${path}`)).statusCode, 204, path);
      // ... and under it, it is recorded as refused.
      const d = audits.at(-1)!;
      assert.deepEqual([d.action, d.target, d.detail?.results, d.detail?.denied, typeof d.detail?.reason, d.detail?.licenceId], ['lake.dicomweb.qido', path, 0, true, 'string', 'lic-42']);
    }
    // The filter is in the query: paging counts granted studies only (no "more results" warning).
    const paged = await get(`${LAKE_PREFIX}/studies?limit=1`);
    assert.equal(paged.statusCode, 200);
    assert.equal(paged.headers.warning, undefined);
  });

  test('archive.search with allowed study UIDs: an empty set finds nothing, a set restricts', async () => {
    const q = parseQido({});
    assert.deepEqual(await lake.search(LAKE, 'study', {}, q, 'https://x', []), { results: [], more: false });
    const only = await lake.search(LAKE, 'instance', {}, q, 'https://x', new Set([b1.studyInstanceUid]));
    assert.deepEqual(
      only.results.map((d) => v(d, '00080018')),
      [b1.sopInstanceUid],
    );
    assert.equal((await lake.search(LAKE, 'study', {}, q, 'https://x')).results.length, 2, 'without the parameter: every study of the tenant');
  });

  test('WADO-RS of the granted study works, with the bytes served in the audit', async () => {
    const one = await get(`${LAKE_PREFIX}${instPath(a1)}`, 'partner', 'application/dicom');
    assert.equal(one.statusCode, 200);
    assert.deepEqual(new Uint8Array(one.rawPayload), a1.bytes);
    let a = audits.at(-1)!;
    assert.deepEqual([a.action, a.tenantId, a.detail?.kind, a.detail?.bytes, a.detail?.licenceId], ['lake.dicomweb.wado', PARTNER, 'instances', a1.bytes.byteLength, 'lic-42']);

    const md = await get(`${LAKE_PREFIX}/studies/${a1.studyInstanceUid}/metadata`);
    assert.equal(md.statusCode, 200);
    const mds = md.json<DicomJsonDataset[]>();
    assert.equal(mds.length, 2);
    const bulk = mds.map((d) => d['7FE00010']?.BulkDataURI).find((u) => u !== undefined);
    assert.equal(bulk, `http://localhost:80${LAKE_PREFIX}${instPath(a1)}/bulkdata/7FE00010`);
    a = audits.at(-1)!;
    assert.deepEqual([a.detail?.kind, a.detail?.bytes], ['metadata', md.rawPayload.length]);

    const frames = await get(`${LAKE_PREFIX}${instPath(a1)}/frames/1,3`);
    assert.equal(frames.statusCode, 200);
    a = audits.at(-1)!;
    assert.deepEqual([a.detail?.kind, a.detail?.bytes], ['frames', 2 * a1.rows! * a1.columns!]);

    const png = await get(`${LAKE_PREFIX}${instPath(a1)}/rendered`, 'partner', 'image/png');
    assert.equal(png.statusCode, 200);
    a = audits.at(-1)!;
    assert.deepEqual([a.detail?.kind, a.detail?.bytes], ['rendered', png.rawPayload.length]);

    const px = await get(`${LAKE_PREFIX}${instPath(a1)}/bulkdata/7FE00010`);
    assert.equal(px.statusCode, 200);
    a = audits.at(-1)!;
    assert.deepEqual([a.detail?.kind, a.detail?.bytes], ['bulkdata', a1.pixels!.length]);
  });

  test('WADO-RS of the other study is 404 exactly as for a study that is not there, and audited denied with the licence', async () => {
    const unknown = { studyInstanceUid: GHOST_STUDY, seriesInstanceUid: newUid(), sopInstanceUid: newUid() } as BuiltInstance;
    const paths = (i: BuiltInstance): string[] => [
      `/studies/${i.studyInstanceUid}`,
      `/studies/${i.studyInstanceUid}/metadata`,
      `/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}`,
      `/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}/metadata`,
      instPath(i),
      `${instPath(i)}/metadata`,
      `${instPath(i)}/frames/1`,
      `${instPath(i)}/rendered`,
      `${instPath(i)}/frames/1/rendered`,
      `${instPath(i)}/bulkdata/7FE00010`,
    ];
    const denied = paths(b1);
    const absent = paths(unknown);
    for (let k = 0; k < denied.length; k++) {
      const res = await get(`${LAKE_PREFIX}${denied[k]!}`);
      const ref = await get(`${LAKE_PREFIX}${absent[k]!}`);
      assert.equal(res.statusCode, 404, denied[k]);
      assert.equal(ref.statusCode, 404, absent[k]);
      // The same answer, the UIDs aside.
      const norm = (body: string, i: BuiltInstance): string =>
        body.replaceAll(i.studyInstanceUid, '<study>').replaceAll(i.seriesInstanceUid, '<series>').replaceAll(i.sopInstanceUid, '<instance>');
      assert.equal(norm(res.body, b1), norm(ref.body, unknown), denied[k]);
      assert.equal(res.headers['content-type'], ref.headers['content-type']);
      // The refusal is audited (the look-up of the absent one is audited too, not as denied).
      const [d, r] = audits.slice(-2);
      assert.deepEqual([d!.action, d!.actor, d!.tenantId, d!.target, d!.detail?.denied, d!.detail?.found, d!.detail?.licenceId], ['lake.dicomweb.wado', 'token:acme', PARTNER, denied[k], true, false, 'lic-42']);
      assert.match(String(d!.detail?.reason), /not among the studies this access grants/);
      assert.deepEqual([r!.target, r!.detail?.denied, r!.detail?.found], [absent[k], undefined, false]);
    }
    // Whatever else is wrong with the request, the two answer alike (here: a bad frame number, an Accept).
    for (const [tail, accept, status] of [
      ['/frames/0', undefined, 400],
      ['/metadata', 'image/png', 406],
    ] as const) {
      const res = await get(`${LAKE_PREFIX}${instPath(b1)}${tail}`, 'partner', accept);
      const ref = await get(`${LAKE_PREFIX}${instPath(unknown)}${tail}`, 'partner', accept);
      assert.deepEqual([res.statusCode, ref.statusCode, res.json().code], [status, status, ref.json().code], tail);
    }
  });

  test('a refused principal: 401 with none (not audited), 403 without the licence scope (audited denied under its tenant)', async () => {
    const n = audits.length;
    const anon = await get(`${LAKE_PREFIX}/studies`, null);
    assert.equal(anon.statusCode, 401);
    assert.equal(anon.json().code, 'ECO3D_ERR_UNAUTHENTICATED');
    assert.equal(audits.length, n);
    const noScope = await get(`${LAKE_PREFIX}/studies/${a1.studyInstanceUid}/metadata`, 'partnerNoScope');
    assert.equal(noScope.statusCode, 403);
    assert.equal(noScope.json().code, 'ECO3D_ERR_FORBIDDEN');
    const a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.tenantId, a.detail?.denied, a.detail?.reason], ['lake.dicomweb.wado', 'token:acme-2', PARTNER, true, 'this token has no lake licence']);
    // A hospital account is not a partner either: the access check decides, not the roles.
    assert.equal((await get(`${LAKE_PREFIX}/studies`, 'physician')).statusCode, 403);
  });

  test('no STOW-RS on the read-only mount: a POST is 404, nothing stored, the access check never asked for write', async () => {
    const before = (await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM dicom_instances WHERE tenant_id = $1', [LAKE]))[0]!.n;
    const x = usMultiframe();
    const boundary = 'b-lake';
    const payload = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), Buffer.from(x.bytes), Buffer.from(`\r\n--${boundary}--\r\n`)]);
    for (const url of [`${LAKE_PREFIX}/studies`, `${LAKE_PREFIX}/studies/${x.studyInstanceUid}`]) {
      const res = await app.inject({ method: 'POST', url, payload, headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, 'x-test-principal': 'partner' } });
      assert.equal(res.statusCode, 404, url);
    }
    assert.equal((await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM dicom_instances WHERE tenant_id = $1', [LAKE]))[0]!.n, before);
    assert.ok(!accessCalls.includes('write'));
  });

  test('the ordinary /dicom-web in the same app is unaffected: its roles, its tenant, its audit actions, STOW-RS', async () => {
    const st = await get('/dicom-web/studies', 'physician');
    assert.equal(st.statusCode, 200);
    assert.deepEqual(
      st.json<DicomJsonDataset[]>().map((d) => v(d, '0020000D')),
      [h1.studyInstanceUid],
    );
    assert.equal(v(st.json<DicomJsonDataset[]>()[0]!, '00081190'), `http://localhost:80/dicom-web/studies/${h1.studyInstanceUid}`);
    let a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.tenantId, a.target, a.detail?.licenceId], ['dicomweb.qido', 'dr-scoped', HOSPITAL, '/studies', undefined]);
    assert.equal((await get(`/dicom-web${instPath(h1)}`, 'physician')).statusCode, 200);
    // The partner's token is no clinician: the built-in check refuses it here.
    assert.equal((await get('/dicom-web/studies', 'partner')).statusCode, 403);
    a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.detail?.denied], ['dicomweb.qido', 'token:acme', true]);

    const x = usMultiframe({ patientName: 'Stow^Here' });
    const boundary = 'b-main';
    const payload = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), Buffer.from(x.bytes), Buffer.from(`\r\n--${boundary}--\r\n`)]);
    const res = await app.inject({
      method: 'POST',
      url: '/dicom-web/studies',
      payload,
      headers: { 'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, 'x-test-principal': 'physician' },
    });
    assert.equal(res.statusCode, 200, res.body);
    a = audits.at(-1)!;
    assert.deepEqual([a.action, a.tenantId, a.target, a.detail?.stored], ['dicomweb.stow', HOSPITAL, '/studies', 1]);
    assert.ok((await hospital.instanceFile(HOSPITAL, x.sopInstanceUid)) !== null);
    assert.equal(await lake.instanceFile(LAKE, x.sopInstanceUid), null);
    // The hospital archive announces; the lake does not.
    const events = async (tenant: string, sop: string): Promise<number> =>
      (await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE idempotency_key = $1', [`DicomInstanceStored/${tenant}/${sop}`]))[0]!.n;
    assert.equal(await events(HOSPITAL, x.sopInstanceUid), 1);
    assert.equal(await events(HOSPITAL, h1.sopInstanceUid), 1);
    for (const i of [a1, a2, b1]) assert.equal(await events(LAKE, i.sopInstanceUid), 0, 'announce: false inserts no DicomInstanceStored');
  });

  test('bad mount options are refused', async () => {
    const other = Fastify();
    try {
      for (const prefix of ['lake', '/', '/a b', '/a/../b?x']) {
        await assert.rejects(registerDicomWeb(other, { archive: lake, audit: async () => undefined, maxStowBytes: 1, prefix, readOnly: true }), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_CONFIG', prefix);
      }
      await assert.rejects(registerDicomWeb(other, { archive: lake, audit: async () => undefined, maxStowBytes: 1, auditPrefix: 'a b' }), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_CONFIG');
    } finally {
      await other.close();
    }
  });
});

forEachDatabase('DICOM archive: content-addressed layout, announce, deleteStudy', (ctx) => {
  let root: string;
  let ca: DicomArchive;
  let hier: DicomArchive;
  const T = 'lake-ca';
  const H = 'hospital-del';

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eco3d-archive-ca-'));
    for (const t of [T, H]) await ensureTenant(ctx.db, { id: t, name: t });
    ca = new DicomArchive({ root: join(root, 'lake'), db: ctx.db, layout: 'content-addressed', announce: false });
    hier = new DicomArchive({ root: join(root, 'archive'), db: ctx.db });
  });
  after(async () => rm(root, { recursive: true, force: true }));

  const caPath = (sha: string): string => join(ca.root, T, 'objects', sha.slice(0, 2), sha.slice(2, 4), `${sha}.dcm`);
  const outbox = async (tenant: string, sop: string): Promise<number> =>
    (await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE idempotency_key = $1', [`DicomInstanceStored/${tenant}/${sop}`]))[0]!.n;

  test('the file path is the data set hash; a duplicate (even with another File Meta) is one file; no outbox event', async () => {
    const us = usMultiframe({}, { frames: 2 });
    const sha = sha256Of(us.bytes);
    const r = await ca.storeInstance(T, us.bytes, SOURCE);
    assert.deepEqual([r.status, r.sha256], ['stored', sha]);
    const path = await ca.instanceFile(T, us.sopInstanceUid);
    assert.equal(path, caPath(sha));
    assert.deepEqual(new Uint8Array(await readFile(path)), us.bytes);
    assert.equal((await ca.storeInstance(T, us.bytes, SOURCE)).status, 'duplicate');
    const rewrapped = rewrapMeta(us.bytes, { classUid: '1.2.3.4.5', versionName: 'OTHER_SCU' });
    assert.notDeepEqual(rewrapped, us.bytes);
    assert.equal((await ca.storeInstance(T, rewrapped, SOURCE)).status, 'duplicate');
    assert.deepEqual(new Uint8Array(await readFile(path)), us.bytes, 'the stored file is kept as it was');
    const objects = (await filesUnder(join(ca.root, T))).filter((f) => f.includes(sha.slice(0, 12)));
    assert.deepEqual(objects, [relative(join(ca.root, T), path)]);
    assert.equal(await outbox(T, us.sopInstanceUid), 0);
  });

  test('storeFile (copy and move) lands at the hash path too', async () => {
    const src = join(root, 'in');
    await rm(src, { recursive: true, force: true });
    await mkdir(src, { recursive: true });
    const copied = usMultiframe({}, { frames: 1 });
    const moved = usMultiframe({}, { frames: 1, seed: 3 });
    await writeFile(join(src, 'c.dcm'), copied.bytes);
    await writeFile(join(src, 'm.dcm'), moved.bytes);
    assert.equal((await ca.storeFile(T, join(src, 'c.dcm'), SOURCE, { move: false })).status, 'stored');
    assert.equal((await ca.storeFile(T, join(src, 'm.dcm'), SOURCE, { move: true })).status, 'stored');
    assert.equal(await ca.instanceFile(T, copied.sopInstanceUid), caPath(sha256Of(copied.bytes)));
    assert.equal(await ca.instanceFile(T, moved.sopInstanceUid), caPath(sha256Of(moved.bytes)));
    assert.deepEqual(new Uint8Array(await readFile(caPath(sha256Of(moved.bytes)))), moved.bytes);
    assert.ok(await exists(join(src, 'c.dcm')), 'a copied source stays');
    assert.ok(!(await exists(join(src, 'm.dcm'))), 'a moved source is gone');
    // A second copy of the same file: a duplicate, nothing written.
    await writeFile(join(src, 'c2.dcm'), copied.bytes);
    assert.equal((await ca.storeFile(T, join(src, 'c2.dcm'), SOURCE, { move: true })).status, 'duplicate');
  });

  test('concurrent stores of one instance with different File Meta: one stored, one file, its index describes that file', async () => {
    const us = usMultiframe({}, { frames: 3, seed: 11 });
    const other = rewrapMeta(us.bytes, { classUid: '1.2.3.4.5.6', versionName: 'A_MUCH_LONGER_NAME' });
    assert.notEqual(other.byteLength, us.bytes.byteLength, 'the File Metas differ in length: the offsets would differ too');
    const results = await Promise.all([ca.storeInstance(T, us.bytes, SOURCE), ca.storeInstance(T, other, SOURCE), ca.storeInstance(T, us.bytes, SOURCE), ca.storeInstance(T, other, SOURCE)]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['duplicate', 'duplicate', 'duplicate', 'stored']);
    const sha = sha256Of(us.bytes);
    const dir = join(ca.root, T, 'objects', sha.slice(0, 2), sha.slice(2, 4));
    assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith(sha)), [`${sha}.dcm`], 'one file, no temporary left');
    const [rec] = await ca.findInstances(T, { study: us.studyInstanceUid, instance: us.sopInstanceUid });
    const file = await readFile(rec!.path);
    assert.equal(file.length, rec!.sizeBytes);
    // The indexed pixel offset points at this file's pixels, whichever copy won.
    assert.deepEqual(new Uint8Array(file.subarray(rec!.pixelData!.offset, rec!.pixelData!.offset + us.pixels.length)), us.pixels);
  });

  test('an unindexed file at the hash path (a crash leftover) is replaced', async () => {
    const us = usMultiframe({}, { frames: 1, seed: 21 });
    const path = caPath(sha256Of(us.bytes));
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, 'left over by a crash');
    assert.equal((await ca.storeInstance(T, us.bytes, SOURCE)).status, 'stored');
    assert.deepEqual(new Uint8Array(await readFile(path)), us.bytes);
  });

  test('deleteStudy removes the rows at three levels and the files, leaves other studies, and is idempotent (content-addressed)', async () => {
    const study = newUid();
    const i1 = usMultiframe({ studyInstanceUid: study }, { frames: 2, seed: 31 });
    const i2 = usMultiframe({ studyInstanceUid: study }, { frames: 1, seed: 32, seriesInstanceUid: i1.seriesInstanceUid, instanceNumber: 2 });
    const i3 = srReport({ studyInstanceUid: study });
    const keep = usMultiframe({}, { frames: 1, seed: 33 });
    for (const i of [i1, i2, i3, keep]) await ca.storeInstance(T, i.bytes, SOURCE);
    const paths = await Promise.all([i1, i2, i3].map(async (i) => (await ca.instanceFile(T, i.sopInstanceUid))!));
    const deleted = await ca.deleteStudy(T, study);
    assert.deepEqual(deleted, { instances: 3, bytes: i1.bytes.byteLength + i2.bytes.byteLength + i3.bytes.byteLength });
    for (const table of ['dicom_instances', 'dicom_series', 'dicom_studies']) {
      assert.equal((await ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE tenant_id = $1 AND study_uid = $2`, [T, study]))[0]!.n, 0, table);
    }
    for (const p of paths) assert.ok(!(await exists(p)), p);
    assert.ok(await exists((await ca.instanceFile(T, keep.sopInstanceUid))!), 'another study is kept');
    assert.deepEqual(await ca.deleteStudy(T, study), { instances: 0, bytes: 0 });
    assert.deepEqual(await ca.deleteStudy(T, newUid()), { instances: 0, bytes: 0 });
    // Stored again after an erasure: a new instance like any other.
    assert.equal((await ca.storeInstance(T, i1.bytes, SOURCE)).status, 'stored');
    assert.deepEqual(new Uint8Array(await readFile(paths[0]!)), i1.bytes);
  });

  test('deleteStudy in the hierarchical layout removes the files and the UID-named directories; the study can be stored again', async () => {
    const i1 = usMultiframe({}, { frames: 1, seed: 41 });
    const i2 = srReport({ studyInstanceUid: i1.studyInstanceUid });
    for (const i of [i1, i2]) await hier.storeInstance(H, i.bytes, SOURCE);
    assert.equal(await outbox(H, i1.sopInstanceUid), 1, 'the default archive announces');
    const studyDir = join(hier.root, H, i1.studyInstanceUid);
    assert.ok(await exists(studyDir));
    assert.deepEqual(await hier.deleteStudy(H, i1.studyInstanceUid), { instances: 2, bytes: i1.bytes.byteLength + i2.bytes.byteLength });
    assert.ok(!(await exists(studyDir)), 'no directory named by the study UID is left');
    assert.equal(await hier.instanceFile(H, i1.sopInstanceUid), null);
    assert.deepEqual(await hier.findInstances(H, { study: i1.studyInstanceUid }), []);
    assert.equal((await hier.storeInstance(H, i1.bytes, SOURCE)).status, 'stored');
    assert.deepEqual(new Uint8Array(await readFile((await hier.instanceFile(H, i1.sopInstanceUid))!)), i1.bytes);
  });

  test('deleteStudy refuses what is not a UID (it would name a directory)', async () => {
    for (const bad of ['..', '1.2/../3', '']) {
      await assert.rejects(hier.deleteStudy(H, bad), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST', bad);
    }
  });
});

// DICOMweb over HTTP (fastify inject) on a real database and real files: STOW-RS, QIDO-RS and
// WADO-RS answers checked against PS3.18 (status codes, media types, the DICOM JSON Model, the
// Store Instances Response Module), multipart bodies read back with a third-party parser, pixels
// compared with what was encoded, rendered images decoded with pngjs and jpeg-js.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import { getMultipartBoundary, parseMultipart } from '@mjackson/multipart-parser';
import Fastify, { type FastifyInstance } from 'fastify';
import { decode as decodeJpeg } from 'jpeg-js';
import { PNG } from 'pngjs';
import { newUid } from '../protocols/dicom-us.ts';
import { ensureTenant } from '../store/accounts.ts';
import { forEachDatabase } from '../store/testing.ts';
import type { DicomJsonDataset } from './dicom-json.ts';
import { DicomArchive, FAILURE_REASON } from './dicom-store.ts';
import { registerDicomWeb, type DicomWebAuditEntry, type DicomWebPrincipal } from './dicomweb.ts';
import { inlineRenderer } from './render.ts';
import { gray16, srReport, usMultiframe, usVolume, type BuiltInstance } from './testing.ts';

const T = 'hospital-web';
const OTHER = 'hospital-other';
const Q = 'hospital-qido'; // a tenant whose content the QIDO tests fix, for exact answers
const BASE = 'https://pacs.example/dicom-web';
const MAX_STOW = 4 * 1024 * 1024;

const PRINCIPALS: Record<string, DicomWebPrincipal> = {
  physician: { username: 'dr-house', tenantId: T, role: 'physician', kind: 'session', scopes: null },
  sonographer: { username: 'sono', tenantId: T, role: 'sonographer', kind: 'session', scopes: null },
  bedside: { username: 'nurse', tenantId: T, role: 'bedside', kind: 'session', scopes: null },
  platformAdmin: { username: 'admin', tenantId: T, role: 'platform-admin', kind: 'session', scopes: null },
  reader: { username: 'token:r1', tenantId: T, role: 'service', kind: 'token', scopes: ['dicomweb:read'] },
  writer: { username: 'token:w1', tenantId: T, role: 'service', kind: 'token', scopes: ['dicomweb:write'] },
  liveToken: { username: 'token:l1', tenantId: T, role: 'service', kind: 'token', scopes: ['live:video'] },
  other: { username: 'dr-other', tenantId: OTHER, role: 'physician', kind: 'session', scopes: null },
  qido: { username: 'dr-q', tenantId: Q, role: 'physician', kind: 'session', scopes: null },
};

const as = (who: keyof typeof PRINCIPALS): Record<string, string> => ({ 'x-test-principal': who });

function stowBody(parts: readonly { bytes: Uint8Array | string; type?: string | null }[], boundary = 'stow-boundary-1'): { payload: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    chunks.push(Buffer.from(`--${boundary}\r\n${p.type === null ? '' : `Content-Type: ${p.type ?? 'application/dicom'}\r\n`}\r\n`));
    chunks.push(typeof p.bytes === 'string' ? Buffer.from(p.bytes) : Buffer.from(p.bytes));
    chunks.push(Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { payload: Buffer.concat(chunks), contentType: `multipart/related; type="application/dicom"; boundary=${boundary}` };
}

function multipartParts(contentType: string, body: Buffer): { type: string | undefined; bytes: Buffer }[] {
  const boundary = getMultipartBoundary(contentType);
  assert.ok(boundary !== null, `a multipart answer needs a boundary: ${contentType}`);
  return [...parseMultipart(new Uint8Array(body), { boundary, maxFileSize: 64 << 20 })].map((p) => ({ type: p.headers.get('content-type') ?? undefined, bytes: Buffer.from(p.bytes) }));
}

const v = (ds: DicomJsonDataset, tag: string): unknown => ds[tag]?.Value?.[0];
const ctype = (res: { headers: Record<string, unknown> }): string => {
  const t = res.headers['content-type'];
  return typeof t === 'string' ? t : '';
};
const seq = (ds: DicomJsonDataset, tag: string): DicomJsonDataset[] => (ds[tag]?.Value ?? []) as DicomJsonDataset[];

forEachDatabase('DICOMweb', (ctx) => {
  let root: string;
  let archive: DicomArchive;
  let app: FastifyInstance;
  const audits: DicomWebAuditEntry[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eco3d-dicomweb-'));
    for (const t of [T, OTHER, Q]) await ensureTenant(ctx.db, { id: t, name: t });
    archive = new DicomArchive({ root, db: ctx.db });
    app = Fastify();
    app.decorateRequest('principal', null);
    // Stands in for the app's session/token hook.
    app.addHook('onRequest', async (req) => {
      const who = req.headers['x-test-principal'];
      (req as unknown as { principal: DicomWebPrincipal | null }).principal = typeof who === 'string' ? (PRINCIPALS[who] ?? null) : null;
    });
    // A route of the app itself: the plugin's own body handling must not leak out of its scope.
    app.post('/echo', async (req) => ({ got: req.body }));
    await registerDicomWeb(app, {
      archive,
      audit: async (e) => {
        audits.push(e);
      },
      maxStowBytes: MAX_STOW,
      baseUrl: `${BASE}/`,
      renderer: inlineRenderer,
      spoolThresholdBytes: 64 * 1024, // small, so that the spool-to-file path is taken too
    });
    await app.ready();
  });
  after(async () => {
    await app.close();
    await rm(root, { recursive: true, force: true });
  });

  const stow = async (parts: Parameters<typeof stowBody>[0], who: keyof typeof PRINCIPALS = 'physician', url = '/dicom-web/studies') => {
    const { payload, contentType } = stowBody(parts);
    return app.inject({ method: 'POST', url, payload, headers: { 'content-type': contentType, ...as(who) } });
  };
  const outboxCount = async (sop: string): Promise<number> =>
    (await ctx.db.query<{ n: number }>('SELECT count(*) AS n FROM outbox WHERE idempotency_key = $1', [`DicomInstanceStored/${T}/${sop}`]))[0]!.n;

  // --- STOW-RS ------------------------------------------------------------------------------

  test('STOW-RS: a study of two instances is stored (200) with the Store Instances Response Module', async () => {
    const us = usMultiframe({ patientName: 'Stow^Two' }, { frames: 3 });
    const sr = srReport({ studyInstanceUid: us.studyInstanceUid, patientName: 'Stow^Two' });
    const res = await stow([{ bytes: us.bytes }, { bytes: sr.bytes, type: 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1' }]);
    assert.equal(res.statusCode, 200, res.body);
    assert.match(ctype(res), /^application\/dicom\+json/);
    const body = res.json<DicomJsonDataset>();
    assert.deepEqual(body['00081190'], { vr: 'UR', Value: [`${BASE}/studies/${us.studyInstanceUid}`] });
    assert.equal(body['00081198'], undefined, 'no FailedSOPSequence when nothing failed');
    const refs = seq(body, '00081199');
    assert.deepEqual(
      refs.map((r) => [v(r, '00081150'), v(r, '00081155'), v(r, '00081190')]),
      [us, sr].map((i) => [i.sopClassUid, i.sopInstanceUid, `${BASE}/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}/instances/${i.sopInstanceUid}`]),
    );
    assert.equal(refs[0]!['00081150']?.vr, 'UI');
    assert.equal(refs[0]!['00081190']?.vr, 'UR');
    assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, us.sopInstanceUid))!)), us.bytes);
    const a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.tenantId, a.target, a.detail?.stored, a.detail?.failed], ['dicomweb.stow', 'dr-house', T, '/studies', 2, 0]);
  });

  test('STOW-RS: bad parts fail one by one (202): not DICOM, truncated, wrong Content-Type; the good one is stored', async () => {
    const good = usMultiframe();
    const truncated = usMultiframe();
    const res = await stow([
      { bytes: 'this is not a DICOM file at all'.repeat(10) },
      { bytes: truncated.bytes.subarray(0, truncated.bytes.byteLength - 50) },
      { bytes: good.bytes },
      { bytes: usMultiframe().bytes, type: 'image/jpeg' },
    ]);
    assert.equal(res.statusCode, 202, res.body);
    const body = res.json<DicomJsonDataset>();
    const failed = seq(body, '00081198');
    assert.deepEqual(failed.map((f) => v(f, '00081197')), [FAILURE_REASON.cannotUnderstand, FAILURE_REASON.cannotUnderstand, FAILURE_REASON.cannotUnderstand]);
    assert.equal(failed[0]!['00081197']?.vr, 'US');
    assert.deepEqual(seq(body, '00081199').map((r) => v(r, '00081155')), [good.sopInstanceUid]);
    const warnings = ([] as string[]).concat(res.headers.warning ?? []);
    assert.equal(warnings.length, 3);
    assert.match(warnings[0]!, /^299 https:\/\/pacs\.example\/dicom-web: part 1: not a readable DICOM Part-10 file/);
    assert.match(warnings[1]!, /part 2: .*truncated/);
    assert.match(warnings[2]!, /part 4: Content-Type "image\/jpeg"/);
    assert.equal(await archive.instanceFile(T, truncated.sopInstanceUid), null);
    assert.deepEqual(await readdir(join(root, '.incoming')).catch(() => []), [], 'no spooled part left behind');
  });

  test('STOW-RS: nothing stored is 409; a UID clash keeps the stored file; the same instance twice is 200 with one event', async () => {
    const allBad = await stow([{ bytes: 'garbage' }, { bytes: 'more garbage' }]);
    assert.equal(allBad.statusCode, 409);
    assert.equal(seq(allBad.json(), '00081198').length, 2);
    assert.equal(seq(allBad.json(), '00081199').length, 0);

    const first = usMultiframe({}, { seed: 1 });
    assert.equal((await stow([{ bytes: first.bytes }])).statusCode, 200);
    const again = await stow([{ bytes: first.bytes }], 'sonographer');
    assert.equal(again.statusCode, 200, 'a duplicate is a success');
    assert.deepEqual(seq(again.json(), '00081199').map((r) => v(r, '00081155')), [first.sopInstanceUid]);
    assert.equal(await outboxCount(first.sopInstanceUid), 1);

    const clash = usMultiframe({ studyInstanceUid: first.studyInstanceUid }, { sopInstanceUid: first.sopInstanceUid, seriesInstanceUid: first.seriesInstanceUid, seed: 2 });
    const res = await stow([{ bytes: clash.bytes }]);
    assert.equal(res.statusCode, 409);
    const [f] = seq(res.json(), '00081198');
    assert.equal(v(f!, '00081197'), FAILURE_REASON.duplicateSopInstance);
    assert.equal(v(f!, '00081155'), first.sopInstanceUid);
    assert.equal(v(f!, '00081150'), first.sopClassUid);
    assert.match(String(res.headers.warning), /already stored with different content/);
    assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, first.sopInstanceUid))!)), first.bytes);
  });

  test('STOW-RS to /studies/{study}: an instance of another study fails (C409H), the rest is stored', async () => {
    const a = usMultiframe();
    const b = usMultiframe(); // another study
    const res = await stow([{ bytes: a.bytes }, { bytes: b.bytes }], 'physician', `/dicom-web/studies/${a.studyInstanceUid}`);
    assert.equal(res.statusCode, 202);
    const body = res.json<DicomJsonDataset>();
    assert.equal(v(body, '00081190'), `${BASE}/studies/${a.studyInstanceUid}`);
    assert.deepEqual(seq(body, '00081198').map((f) => [v(f, '00081155'), v(f, '00081197')]), [[b.sopInstanceUid, FAILURE_REASON.studyInstanceUidMismatch]]);
    assert.equal(await archive.instanceFile(T, b.sopInstanceUid), null);
  });

  test('STOW-RS: a part larger than the spool threshold goes through a file and is stored byte for byte', async () => {
    const big = usMultiframe({}, { frames: 8, width: 128, height: 96 }); // ~100 kB > 64 kB threshold
    const res = await stow([{ bytes: big.bytes }, { bytes: usMultiframe().bytes, type: null }]);
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, big.sopInstanceUid))!)), big.bytes);
    assert.deepEqual(await readdir(join(root, '.incoming')), []);
  });

  test('STOW-RS request errors: 415, 400, 413', async () => {
    const us = usMultiframe();
    const { payload } = stowBody([{ bytes: us.bytes }]);
    const post = (headers: Record<string, string>, body: Buffer | Readable = payload) => app.inject({ method: 'POST', url: '/dicom-web/studies', payload: body, headers: { ...as('physician'), ...headers } });
    const json = await post({ 'content-type': 'application/json' }, Buffer.from('{}'));
    assert.equal(json.statusCode, 415);
    assert.equal(json.json().code, 'ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE');
    const jsonParts = await post({ 'content-type': 'multipart/related; type="application/dicom+json"; boundary=stow-boundary-1' });
    assert.equal(jsonParts.statusCode, 415);
    const noBoundary = await post({ 'content-type': 'multipart/related; type="application/dicom"' });
    assert.equal(noBoundary.statusCode, 400);
    assert.match(noBoundary.json().message, /no boundary/);
    const wrongBoundary = await post({ 'content-type': 'multipart/related; type="application/dicom"; boundary=another-boundary' });
    assert.equal(wrongBoundary.statusCode, 400);
    assert.equal(wrongBoundary.json().code, 'ECO3D_ERR_BAD_REQUEST');
    assert.match(wrongBoundary.json().message, /unparseable multipart\/related body: .*another-boundary/);
    const cut = await post({ 'content-type': 'multipart/related; type="application/dicom"; boundary=stow-boundary-1' }, payload.subarray(0, payload.length - 30));
    assert.equal(cut.statusCode, 400);
    assert.match(cut.json().message, /ends before its close delimiter/);
    const big = Buffer.alloc(MAX_STOW + 1);
    const tooLarge = await post({ 'content-type': 'multipart/related; type="application/dicom"; boundary=x' }, big);
    assert.equal(tooLarge.statusCode, 413);
    assert.equal(tooLarge.json().code, 'ECO3D_ERR_PAYLOAD_TOO_LARGE');
    // Without a Content-Length (chunked): counted while reading.
    const chunks = Array.from({ length: 5 }, () => Buffer.alloc(MAX_STOW / 4, 0x41));
    const streamed = await post({ 'content-type': 'multipart/related; type="application/dicom"; boundary=x' }, Readable.from(chunks));
    assert.equal(streamed.statusCode, 413);
    assert.equal(await archive.instanceFile(T, us.sopInstanceUid), null);
  });

  test('STOW-RS auth: 401 without credentials, 403 for the bedside, an admin or a token without dicomweb:write', async () => {
    const us = usMultiframe();
    assert.equal((await app.inject({ method: 'POST', url: '/dicom-web/studies', payload: stowBody([{ bytes: us.bytes }]).payload, headers: { 'content-type': stowBody([]).contentType } })).statusCode, 401);
    for (const who of ['bedside', 'platformAdmin', 'reader', 'liveToken'] as const) {
      const res = await stow([{ bytes: us.bytes }], who);
      assert.equal(res.statusCode, 403, who);
      assert.equal(res.json().code, 'ECO3D_ERR_FORBIDDEN');
    }
    assert.equal(await archive.instanceFile(T, us.sopInstanceUid), null);
    const denied = audits.filter((a) => a.detail?.denied === true && a.action === 'dicomweb.stow').map((a) => a.actor);
    assert.deepEqual(denied.slice(-4), ['nurse', 'admin', 'token:r1', 'token:l1'], 'refused attempts are audited');
    assert.equal((await stow([{ bytes: us.bytes }], 'writer')).statusCode, 200);
  });

  test('STOW-RS over a real socket: a chunked upload is stored; one over the limit gets its 413 (not a reset)', async () => {
    const url = new URL(await app.listen({ host: '127.0.0.1', port: 0 }));
    const send = (chunks: AsyncIterable<Buffer> | Iterable<Buffer>, contentType: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = request({ host: url.hostname, port: url.port, method: 'POST', path: '/dicom-web/studies', headers: { 'content-type': contentType, ...as('physician') } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        void (async () => {
          for await (const c of chunks) {
            if (req.destroyed || req.writableEnded) return;
            // Stop writing once the server has answered (it closes the connection after a 413).
            if (!req.write(c)) await new Promise<void>((r) => req.once('drain', r));
          }
          req.end();
        })().catch(() => undefined);
      });
    const a = usMultiframe();
    const b = srReport({ studyInstanceUid: a.studyInstanceUid });
    const { payload, contentType } = stowBody([{ bytes: a.bytes }, { bytes: b.bytes }]);
    const pieces = Array.from({ length: Math.ceil(payload.length / 333) }, (_, i) => payload.subarray(i * 333, (i + 1) * 333));
    const ok = await send(pieces, contentType);
    assert.equal(ok.status, 200, ok.body);
    assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, b.sopInstanceUid))!)), b.bytes);

    async function* endless(): AsyncGenerator<Buffer> {
      yield Buffer.from('--x\r\nContent-Type: application/dicom\r\n\r\n');
      for (let i = 0; i < 40; i++) {
        yield Buffer.alloc(256 * 1024, 0x41);
        await new Promise((r) => setImmediate(r));
      }
    }
    const over = await send(endless(), 'multipart/related; type="application/dicom"; boundary=x');
    assert.equal(over.status, 413);
    assert.equal((JSON.parse(over.body) as { code: string }).code, 'ECO3D_ERR_PAYLOAD_TOO_LARGE');
  });

  test("the plugin's body handling stays in its scope: the app's JSON routes still parse JSON", async () => {
    const res = await app.inject({ method: 'POST', url: '/echo', payload: { a: 1 } });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { got: { a: 1 } });
  });

  // --- QIDO-RS ------------------------------------------------------------------------------

  // Tenant Q holds exactly: study 1 (US 3 frames + US 2 frames in one series, an SR series), study 2 (a 16-bit image).
  let q1: { us1: BuiltInstance; us2: BuiltInstance; sr: BuiltInstance };
  let q2: BuiltInstance;
  const qido = async (url: string, who: keyof typeof PRINCIPALS = 'qido', headers: Record<string, string> = {}) => app.inject({ url: `/dicom-web${url}`, headers: { ...as(who), ...headers } });
  const studyUids = (res: { statusCode: number; json<T>(): T }): string[] => (res.statusCode === 204 ? [] : res.json<DicomJsonDataset[]>().map((s) => v(s, '0020000D') as string));

  test('QIDO-RS setup: two studies in tenant Q', async () => {
    const study = { patientName: 'Müller^Anna^Maria', patientId: 'Q-1', studyDateTime: '2026-02-14T09:15:00.000+01:00', accessionNumber: 'ACC-Q1', referringPhysicianName: 'Who^Doctor' };
    const us1 = usMultiframe(study, { frames: 3, instanceNumber: 1 });
    const us2 = usMultiframe({ ...study, studyInstanceUid: us1.studyInstanceUid }, { seriesInstanceUid: us1.seriesInstanceUid, frames: 2, instanceNumber: 2 });
    const sr = srReport({ ...study, studyInstanceUid: us1.studyInstanceUid });
    q1 = { us1, us2, sr };
    q2 = gray16({ rows: 10, columns: 12, frames: 2, window: { center: 2000, width: 1000 } });
    const res = await stow([{ bytes: us1.bytes }, { bytes: us2.bytes }, { bytes: sr.bytes }, { bytes: q2.bytes }], 'qido');
    assert.equal(res.statusCode, 200, res.body);
  });

  test('QIDO-RS studies: required attributes, computed counts, RetrieveURL, in the DICOM JSON Model', async () => {
    const res = await qido(`/studies?StudyInstanceUID=${q1.us1.studyInstanceUid}`);
    assert.equal(res.statusCode, 200);
    assert.match(ctype(res), /^application\/dicom\+json/);
    const [s] = res.json<DicomJsonDataset[]>();
    assert.ok(s !== undefined);
    assert.deepEqual(s['00100010'], { vr: 'PN', Value: [{ Alphabetic: 'Müller^Anna^Maria' }] });
    assert.deepEqual(s['00080090'], { vr: 'PN', Value: [{ Alphabetic: 'Who^Doctor' }] });
    assert.deepEqual(s['00100020'], { vr: 'LO', Value: ['Q-1'] });
    assert.deepEqual(s['00080020'], { vr: 'DA', Value: ['20260214'] });
    assert.deepEqual(s['00080030'], { vr: 'TM', Value: ['091500.000000'] });
    assert.deepEqual(s['00080050'], { vr: 'SH', Value: ['ACC-Q1'] });
    assert.deepEqual(s['00080061'], { vr: 'CS', Value: ['SR', 'US'] });
    assert.deepEqual(s['00201206'], { vr: 'IS', Value: [2] });
    assert.deepEqual(s['00201208'], { vr: 'IS', Value: [3] });
    assert.deepEqual(s['00080056'], { vr: 'CS', Value: ['ONLINE'] });
    assert.deepEqual(s['00081190'], { vr: 'UR', Value: [`${BASE}/studies/${q1.us1.studyInstanceUid}`] });
    for (const t of ['00100030', '00100040', '00200010']) assert.ok(s[t] !== undefined, `type R attribute ${t} present`);
    assert.deepEqual(Object.keys(s), Object.keys(s).sort(), 'attributes in tag order');
    const a = audits.at(-1)!;
    assert.deepEqual([a.action, a.actor, a.tenantId, a.target, a.detail?.results], ['dicomweb.qido', 'dr-q', Q, '/studies', 1]);
  });

  test('QIDO-RS matching: wildcards, case-insensitive names, tags, date and time ranges, lists, relational keys, fuzzy', async () => {
    const s1 = q1.us1.studyInstanceUid;
    const s2 = q2.studyInstanceUid;
    const cases: [string, string[]][] = [
      ['/studies?PatientName=müller*', [s1]],
      ['/studies?PatientName=M?LLER*', [s1]],
      ['/studies?PatientName=Müller', []],
      ['/studies?PatientName=anna&fuzzymatching=true', [s1]],
      ['/studies?00100020=Q-1', [s1]],
      ['/studies?PatientID=Q-*', [s1]],
      ['/studies?PatientID=q-1', []],
      ['/studies?StudyDate=20260101-20261231', [s1]],
      ['/studies?StudyDate=-20251231', [s2]],
      ['/studies?StudyDate=20260214-', [s1]],
      ['/studies?StudyDate=20260214', [s1]],
      ['/studies?StudyDate=20260215-', []],
      ['/studies?StudyTime=09-0915', [s1]],
      ['/studies?StudyTime=0916-', []],
      ['/studies?StudyTime=08', [s2]],
      ['/studies?ModalitiesInStudy=SR', [s1]],
      ['/studies?ModalitiesInStudy=OT', [s2]],
      ['/studies?Modality=US', [s1]],
      ['/studies?SOPClassUID=1.2.840.10008.5.1.4.1.1.88.34', [s1]],
      [`/studies?StudyInstanceUID=${s1},${s2}`, [s1, s2]],
      ['/studies?Manufacturer=Eco3D', [s1]],
      ['/studies?AccessionNumber=&PatientName=*', [s1, s2]],
    ];
    for (const [url, want] of cases) {
      const res = await qido(url);
      assert.deepEqual(studyUids(res).sort(), [...want].sort(), url);
      if (want.length === 0) assert.equal(res.statusCode, 204, `${url}: no match is 204`);
    }
  });

  test('QIDO-RS paging and includefield', async () => {
    const page1 = await qido('/studies?limit=1');
    assert.equal(page1.statusCode, 200);
    assert.equal(page1.json().length, 1);
    assert.match(String(page1.headers.warning), /^299 https:\/\/pacs\.example\/dicom-web: There are additional results that can be requested/);
    const page2 = await qido('/studies?limit=1&offset=1');
    assert.equal(page2.json().length, 1);
    assert.equal(page2.headers.warning, undefined);
    assert.notDeepEqual(studyUids(page1), studyUids(page2));
    assert.equal((await qido('/studies?offset=2')).statusCode, 204);

    const inc = await qido(`/studies?StudyInstanceUID=${q1.us1.studyInstanceUid}&includefield=Manufacturer,00101010&includefield=StudyDescription`);
    const [s] = inc.json<DicomJsonDataset[]>();
    assert.deepEqual(s!['00080070'], { vr: 'LO', Value: ['Eco3D'] });
    assert.deepEqual(s!['00101010'], { vr: 'AS' }, 'asked for, absent: present without a value');
    assert.deepEqual(s!['00081030'], { vr: 'LO', Value: ['Robotic 3D US abdomen'] });
    const all = (await qido(`/studies/${q1.us1.studyInstanceUid}/series/${q1.us1.seriesInstanceUid}/instances?includefield=all`)).json<DicomJsonDataset[]>();
    assert.deepEqual(all.map((i) => v(i, '00080018')), [q1.us1.sopInstanceUid, q1.us2.sopInstanceUid]);
    assert.deepEqual(all[0]!['00181065'], { vr: 'DS', Value: [0, 33.3, 33.3] }, 'includefield=all returns the instance attributes');
    assert.equal(all[0]!['7FE00010'], undefined, 'never bulk data');
  });

  test('QIDO-RS series and instances: levels, relational scope, all-series with study attributes', async () => {
    const s1 = q1.us1.studyInstanceUid;
    const series = (await qido(`/studies/${s1}/series`)).json<DicomJsonDataset[]>();
    assert.deepEqual(
      series.map((s) => [v(s, '00080060'), v(s, '0020000E'), v(s, '00201209')]),
      [
        ['US', q1.us1.seriesInstanceUid, 2],
        ['SR', q1.sr.seriesInstanceUid, 1],
      ],
    );
    assert.equal(v(series[0]!, '00081190'), `${BASE}/studies/${s1}/series/${q1.us1.seriesInstanceUid}`);
    assert.equal(series[0]!['00100010'], undefined, 'series in a study: no study attributes');
    const allSeries = (await qido('/series?Modality=SR')).json<DicomJsonDataset[]>();
    assert.equal(allSeries.length, 1);
    assert.deepEqual(allSeries[0]!['00100010'], { vr: 'PN', Value: [{ Alphabetic: 'Müller^Anna^Maria' }] }, 'all series: with the study attributes');
    assert.equal(v(allSeries[0]!, '00201206'), 2);

    const inst = (await qido(`/studies/${s1}/series/${q1.us1.seriesInstanceUid}/instances?InstanceNumber=2`)).json<DicomJsonDataset[]>();
    assert.equal(inst.length, 1);
    const i = inst[0]!;
    assert.deepEqual(
      ['00080016', '00080018', '00200013', '00280010', '00280011', '00280100', '00280008'].map((t) => v(i, t)),
      [q1.us2.sopClassUid, q1.us2.sopInstanceUid, 2, q1.us2.rows, q1.us2.columns, 8, 2],
    );
    assert.equal(i['00280008']?.vr, 'IS');
    assert.equal(v(i, '00081190'), `${BASE}/studies/${s1}/series/${q1.us1.seriesInstanceUid}/instances/${q1.us2.sopInstanceUid}`);
    const studyInstances = (await qido(`/studies/${s1}/instances`)).json<DicomJsonDataset[]>();
    assert.equal(studyInstances.length, 3);
    assert.ok(studyInstances.every((x) => x['0020000E'] !== undefined && x['00080060'] !== undefined), 'a study’s instances carry their series attributes');
    const all = (await qido('/instances?Rows=10')).json<DicomJsonDataset[]>();
    assert.deepEqual(all.map((x) => v(x, '00080018')), [q2.sopInstanceUid]);
    assert.deepEqual(all[0]!['00100010'], { vr: 'PN', Value: [{ Alphabetic: 'Roe^Richard' }] });
  });

  test('QIDO-RS errors: malformed dates, unknown attributes (400, naming the parameter), Accept (406), auth', async () => {
    const badDate = await qido('/studies?StudyDate=2026-02-14');
    assert.equal(badDate.statusCode, 400);
    assert.deepEqual(badDate.json(), {
      code: 'ECO3D_ERR_BAD_REQUEST',
      message: 'query parameter "StudyDate": malformed date "2026-02-14": expected YYYYMMDD, or a range YYYYMMDD-YYYYMMDD with either end open',
      details: { parameter: 'StudyDate' },
    });
    const unknown = await qido('/studies?PatientNmae=Doe');
    assert.equal(unknown.statusCode, 400);
    assert.match(unknown.json().message, /"PatientNmae": unknown attribute/);
    assert.equal((await qido('/studies/not-a-uid/series')).statusCode, 400);
    const xml = await qido('/studies', 'qido', { accept: 'multipart/related; type="application/dicom+xml"' });
    assert.equal(xml.statusCode, 406);
    assert.equal(xml.json().code, 'ECO3D_ERR_NOT_ACCEPTABLE');
    assert.equal((await qido('/studies', 'qido', { accept: 'application/json' })).statusCode, 200);
    assert.equal((await app.inject({ url: '/dicom-web/studies' })).statusCode, 401);
    assert.equal((await qido('/studies', 'bedside')).statusCode, 403);
    assert.equal((await qido('/studies', 'reader')).statusCode, 200);
  });

  test('tenants see nothing of each other (and the attempts are audited)', async () => {
    const s1 = q1.us1.studyInstanceUid;
    assert.equal((await qido('/studies', 'other')).statusCode, 204);
    assert.equal((await qido(`/studies?StudyInstanceUID=${s1}`, 'physician')).statusCode, 204);
    assert.equal((await qido(`/studies/${s1}/series`, 'other')).statusCode, 204);
    for (const path of [`/studies/${s1}`, `/studies/${s1}/metadata`, `/studies/${s1}/series/${q1.us1.seriesInstanceUid}/instances/${q1.us1.sopInstanceUid}/frames/1`]) {
      const res = await qido(path, 'other');
      assert.equal(res.statusCode, 404, path);
      assert.equal(res.json().code, 'ECO3D_ERR_NOT_FOUND');
      const a = audits.at(-1)!;
      assert.deepEqual([a.action, a.actor, a.tenantId, a.target, a.detail?.found], ['dicomweb.wado', 'dr-other', OTHER, path, false]);
    }
  });

  // --- WADO-RS ------------------------------------------------------------------------------

  const instPath = (i: BuiltInstance): string => `/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}/instances/${i.sopInstanceUid}`;

  test('WADO-RS instance, series and study: multipart/related application/dicom, bytes as stored', async () => {
    const one = await qido(instPath(q1.us1));
    assert.equal(one.statusCode, 200);
    assert.match(ctype(one), /^multipart\/related; type="application\/dicom"; boundary=/);
    assert.equal(Number(one.headers['content-length']), one.rawPayload.length);
    const parts = multipartParts(ctype(one), one.rawPayload);
    assert.equal(parts.length, 1);
    assert.equal(parts[0]!.type, 'application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
    assert.deepEqual(new Uint8Array(parts[0]!.bytes), q1.us1.bytes);

    const series = await qido(`/studies/${q1.us1.studyInstanceUid}/series/${q1.us1.seriesInstanceUid}`, 'qido', { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' });
    assert.deepEqual(multipartParts(ctype(series), series.rawPayload).map((p) => new Uint8Array(p.bytes)), [q1.us1.bytes, q1.us2.bytes]);
    const study = await qido(`/studies/${q1.us1.studyInstanceUid}`);
    assert.equal(multipartParts(ctype(study), study.rawPayload).length, 3);

    const single = await qido(instPath(q1.sr), 'qido', { accept: 'application/dicom' });
    assert.equal(single.statusCode, 200);
    assert.match(ctype(single), /^application\/dicom; transfer-syntax=/);
    assert.deepEqual(new Uint8Array(single.rawPayload), q1.sr.bytes);

    const jpegTs = await qido(instPath(q1.us1), 'qido', { accept: 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50' });
    assert.equal(jpegTs.statusCode, 406);
    assert.match(jpegTs.json().message, /does not transcode/);
    assert.equal((await qido(instPath(q1.us1), 'qido', { accept: 'image/png' })).statusCode, 406);
    assert.equal((await qido(`/studies/${q1.us1.studyInstanceUid}`, 'qido', { accept: 'application/dicom' })).statusCode, 406, 'a bare application/dicom only for one instance');
    assert.equal((await qido(`/studies/${q1.us1.studyInstanceUid}/series/${newUid()}`)).statusCode, 404);
    assert.equal((await app.inject({ url: `/dicom-web${instPath(q1.us1)}` })).statusCode, 401);
    const a = audits.at(-1)!;
    assert.equal(a.action, 'dicomweb.wado');
  });

  test('WADO-RS metadata: DICOM JSON per instance, Pixel Data as a BulkDataURI that retrieves the pixels', async () => {
    const res = await qido(`/studies/${q1.us1.studyInstanceUid}/metadata`);
    assert.equal(res.statusCode, 200);
    assert.match(ctype(res), /^application\/dicom\+json/);
    const md = res.json<DicomJsonDataset[]>();
    assert.equal(md.length, 3);
    const us = md.find((m) => v(m, '00080018') === q1.us1.sopInstanceUid)!;
    assert.deepEqual(us['7FE00010'], { vr: 'OB', BulkDataURI: `${BASE}${instPath(q1.us1)}/bulkdata/7FE00010` });
    assert.deepEqual(us['00100010'], { vr: 'PN', Value: [{ Alphabetic: 'Müller^Anna^Maria' }] });
    assert.deepEqual(us['00280009'], { vr: 'AT', Value: ['00181065'] });
    assert.equal(us['00280008']?.Value?.[0], 3);
    const sr = md.find((m) => v(m, '00080018') === q1.sr.sopInstanceUid)!;
    assert.equal(sr['7FE00010'], undefined);
    assert.equal(sr['0040A730']?.vr, 'SQ');
    const one = (await qido(`${instPath(q2)}/metadata`)).json<DicomJsonDataset[]>();
    assert.equal(one.length, 1);
    assert.deepEqual(one[0]!['7FE00010']?.vr, 'OW');

    const bulk = await qido(`${instPath(q1.us1)}/bulkdata/7FE00010`);
    assert.equal(bulk.statusCode, 200);
    assert.match(ctype(bulk), /^multipart\/related; type="application\/octet-stream"/);
    assert.deepEqual(new Uint8Array(multipartParts(ctype(bulk), bulk.rawPayload)[0]!.bytes), q1.us1.pixels);
    assert.equal((await qido(`${instPath(q1.us1)}/bulkdata/00100010`)).statusCode, 404);
  });

  test('WADO-RS frames: 1-based byte ranges identical to the pixel data slices; 400/404/406', async () => {
    const us = q1.us1;
    const fb = us.rows! * us.columns!;
    const res = await qido(`${instPath(us)}/frames/3,1`);
    assert.equal(res.statusCode, 200);
    assert.match(ctype(res), /^multipart\/related; type="application\/octet-stream"; boundary=/);
    const parts = multipartParts(ctype(res), res.rawPayload);
    assert.deepEqual(
      parts.map((p) => new Uint8Array(p.bytes)),
      [us.pixels!.subarray(2 * fb, 3 * fb), us.pixels!.subarray(0, fb)],
    );
    assert.equal(parts[0]!.type, 'application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1');
    const g = await qido(`${instPath(q2)}/frames/2`);
    assert.deepEqual(new Uint8Array(multipartParts(ctype(g), g.rawPayload)[0]!.bytes), q2.pixels!.subarray(240, 480), '16-bit frames too');

    const outOfRange = await qido(`${instPath(us)}/frames/4`);
    assert.equal(outOfRange.statusCode, 404);
    assert.match(outOfRange.json().message, /has 3 frames; no frame 4/);
    assert.equal((await qido(`${instPath(us)}/frames/0`)).statusCode, 400);
    assert.equal((await qido(`${instPath(us)}/frames/1-2`)).statusCode, 400);
    assert.equal((await qido(`${instPath(q1.sr)}/frames/1`)).statusCode, 400, 'an SR has no frames');
    assert.equal((await qido(`${instPath(us)}/frames/1`, 'qido', { accept: 'multipart/related; type="image/jpeg"' })).statusCode, 406);
  });

  test('an Enhanced US Volume: stored, its z-slices served as frames and rendered, its functional groups in the metadata', async () => {
    const vol = usVolume({}, { dims: [12, 10, 6] });
    assert.equal((await stow([{ bytes: vol.bytes }], 'qido')).statusCode, 200);
    const slice = 12 * 10;
    const res = await qido(`${instPath(vol)}/frames/6,2`);
    assert.deepEqual(
      multipartParts(ctype(res), res.rawPayload).map((p) => new Uint8Array(p.bytes)),
      [vol.pixels.subarray(5 * slice, 6 * slice), vol.pixels.subarray(slice, 2 * slice)],
    );
    const png = PNG.sync.read((await qido(`${instPath(vol)}/frames/4/rendered`)).rawPayload);
    assert.deepEqual([png.width, png.height], [12, 10]);
    for (let i = 0; i < slice; i++) assert.equal(png.data[i * 4], vol.pixels[3 * slice + i]);
    const [md] = (await qido(`${instPath(vol)}/metadata`)).json<DicomJsonDataset[]>();
    assert.equal(md!['52009230']?.Value?.length, 6, 'one Per-frame Functional Groups item per frame');
    assert.equal(md!['00280008']?.Value?.[0], 6);
    const [inst] = (await qido(`/studies/${vol.studyInstanceUid}/instances`)).json<DicomJsonDataset[]>();
    assert.deepEqual(['00280010', '00280011', '00280008'].map((t) => v(inst!, t)), [10, 12, 6]);
  });

  test('WADO-RS rendered: PNG by default, JPEG when asked, the right size and pixels, windowed 16-bit', async () => {
    const us = q1.us1;
    const png = await qido(`${instPath(us)}/rendered`);
    assert.equal(png.statusCode, 200);
    assert.equal(ctype(png), 'image/png');
    const img = PNG.sync.read(png.rawPayload);
    assert.deepEqual([img.width, img.height], [us.columns, us.rows]);
    for (let i = 0; i < us.rows! * us.columns!; i++) assert.equal(img.data[i * 4], us.pixels![i], `frame 1 pixel ${i}`);

    const third = PNG.sync.read((await qido(`${instPath(us)}/frames/3/rendered`)).rawPayload);
    const fb = us.rows! * us.columns!;
    for (let i = 0; i < fb; i++) assert.equal(third.data[i * 4], us.pixels![2 * fb + i]);

    const jpeg = await qido(`${instPath(us)}/frames/2/rendered?quality=80`, 'qido', { accept: 'image/jpeg' });
    assert.equal(ctype(jpeg), 'image/jpeg');
    const decoded = decodeJpeg(jpeg.rawPayload, { useTArray: true });
    assert.deepEqual([decoded.width, decoded.height], [us.columns, us.rows]);

    const g = PNG.sync.read((await qido(`${instPath(q2)}/rendered?window=100,50`)).rawPayload);
    assert.deepEqual([g.width, g.height], [12, 10]);
    assert.equal(g.data[0], 0); // value 0 is below the window
    assert.equal((await qido(`${instPath(us)}/rendered`, 'qido', { accept: 'image/gif' })).statusCode, 406);
    assert.equal((await qido(`${instPath(us)}/rendered?quality=0`)).statusCode, 400);
    assert.equal((await qido(`${instPath(us)}/rendered?window=1,2,sigmoid`)).statusCode, 400);
    assert.equal((await qido(`${instPath(us)}/frames/9/rendered`)).statusCode, 404);
    assert.equal((await qido(`${instPath(q1.sr)}/rendered`)).statusCode, 406);
  });
});

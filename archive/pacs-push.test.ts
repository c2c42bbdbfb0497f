// The STOW-RS client and the pacs-push outbox consumer against a real local HTTP server (node:http)
// playing a PACS: it parses what arrives (multipart with a third-party parser, DICOM with dcmjs)
// and answers as told: errors, silence, refusals, acceptance. The consumer runs under a real
// OutboxDispatcher on a real database with a virtual clock for the back-off.
// The same client against a real Orthanc: test/orthanc.e2e.test.ts.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getMultipartBoundary, parseMultipart } from '@mjackson/multipart-parser/node';
import dcmjs from 'dcmjs';
import { encodeMeasurementReport, type MeasurementReportInput } from '../protocols/dicom-sr.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID, newUid } from '../protocols/dicom-us.ts';
import { Eco3dError } from '../protocols/errors.ts';
import type { DicomInstanceStoredV1 } from '../protocols/events.ts';
import type { Database } from '../store/database.ts';
import { migrate } from '../store/migrate.ts';
import { OutboxDispatcher, insertOutboxEvent, outboxBacklog, type DeliveryContext } from '../store/outbox.ts';
import { forEachDatabase } from '../store/testing.ts';
import { pacsPushConsumer, parsePacsTarget, type PacsPushLog } from './pacs-push.ts';
import { describeFailureReason, dicomWebTarget, parseStoreInstancesResponse, stowInstances } from './stow-client.ts';

// --- a PACS on loopback ---------------------------------------------------------------------

interface ReceivedPart {
  readonly contentType: string | undefined;
  readonly bytes: Uint8Array;
}

interface ReceivedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  /** Undefined when the behaviour answered before reading the body. */
  readonly parts: readonly ReceivedPart[] | undefined;
}

/** What the PACS does with one request. `parts` is undefined when it answers before reading. */
type Behaviour =
  | { readonly kind: 'status'; readonly status: number; readonly body?: string; readonly contentType?: string }
  | { readonly kind: 'hang' }
  | { readonly kind: 'accept' }
  | { readonly kind: 'accept-other' }
  | { readonly kind: 'fail-all'; readonly status: number; readonly reason: number }
  | { readonly kind: 'answer-early'; readonly status: number };

interface FakePacs {
  readonly baseUrl: string;
  readonly requests: ReceivedRequest[];
  /** Queue behaviours; without one, a request is accepted. */
  next(...b: Behaviour[]): void;
  /** Resolves once `n` requests have arrived. */
  requestCount(n: number): Promise<void>;
  close(): Promise<void>;
}

function uidsOf(bytes: Uint8Array): { sopClassUid: string; sopInstanceUid: string } {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  const dict = dcmjs.data.DicomMessage.readFile(ab).dict;
  return { sopClassUid: String(dict['00080016']?.Value?.[0]), sopInstanceUid: String(dict['00080018']?.Value?.[0]) };
}

function storeResponse(parts: readonly ReceivedPart[], baseUrl: string, mode: 'accept' | 'accept-other' | { failure: number }): string {
  const items = parts.map((p) => uidsOf(p.bytes)).map((u) => (mode === 'accept-other' ? { ...u, sopInstanceUid: '2.25.1' } : u));
  const ref = (u: { sopClassUid: string; sopInstanceUid: string }) => ({
    '00081150': { vr: 'UI', Value: [u.sopClassUid] },
    '00081155': { vr: 'UI', Value: [u.sopInstanceUid] },
    '00081190': { vr: 'UR', Value: [`${baseUrl}/studies/x/series/y/instances/${u.sopInstanceUid}`] },
  });
  if (typeof mode === 'object') {
    return JSON.stringify({
      '00081198': { vr: 'SQ', Value: items.map((u) => ({ '00081150': { vr: 'UI', Value: [u.sopClassUid] }, '00081155': { vr: 'UI', Value: [u.sopInstanceUid] }, '00081197': { vr: 'US', Value: [mode.failure] } })) },
    });
  }
  return JSON.stringify({ '00081190': { vr: 'UR', Value: [`${baseUrl}/studies/x`] }, '00081199': { vr: 'SQ', Value: items.map(ref) } });
}

async function readParts(req: IncomingMessage): Promise<ReceivedPart[]> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const body = Buffer.concat(chunks);
  assert.equal(body.length, Number(req.headers['content-length']), 'Content-Length matches the body');
  const boundary = getMultipartBoundary(String(req.headers['content-type']));
  assert.ok(boundary !== null, 'a boundary in the content type');
  return [...parseMultipart(body, { boundary, maxFileSize: 1 << 30 })].map((p) => ({ contentType: p.headers.get('content-type') ?? undefined, bytes: p.bytes }));
}

async function startFakePacs(): Promise<FakePacs> {
  const queue: Behaviour[] = [];
  const requests: ReceivedRequest[] = [];
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  let baseUrl = '';
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const b = queue.shift() ?? { kind: 'accept' };
    const record = (parts: ReceivedPart[] | undefined): void => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, parts });
      for (const w of waiters.filter((x) => requests.length >= x.n)) w.resolve();
    };
    if (b.kind === 'answer-early') {
      record(undefined);
      res.writeHead(b.status, { 'content-type': 'text/plain', connection: 'close' }).end('no credentials');
      return;
    }
    const parts = await readParts(req);
    record(parts);
    switch (b.kind) {
      case 'hang':
        return; // never answers; the socket is destroyed at close()
      case 'status':
        res.writeHead(b.status, b.contentType === undefined ? {} : { 'content-type': b.contentType }).end(b.body ?? '');
        return;
      case 'accept':
      case 'accept-other':
        res.writeHead(200, { 'content-type': 'application/dicom+json' }).end(storeResponse(parts, baseUrl, b.kind));
        return;
      case 'fail-all':
        res.writeHead(b.status, { 'content-type': 'application/dicom+json' }).end(storeResponse(parts, baseUrl, { failure: b.reason }));
        return;
    }
  };
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(599).end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  baseUrl = `http://127.0.0.1:${address.port}/dicom-web`;
  return {
    baseUrl,
    requests,
    next: (...b) => queue.push(...b),
    requestCount: (n) => (requests.length >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// --- fixtures -------------------------------------------------------------------------------

function report(sopInstanceUid = newUid(), studyInstanceUid = newUid()): { bytes: Uint8Array; sopInstanceUid: string; studyInstanceUid: string } {
  const input: MeasurementReportInput = {
    patient: { name: 'Doe^Jane', id: 'P-0042' },
    study: { studyInstanceUid, studyId: 'S1', accessionNumber: 'ACC-7', studyDateTime: '2024-05-01T10:20:30Z' },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d test'] },
    seriesInstanceUid: newUid(),
    seriesNumber: 100,
    sopInstanceUid,
    instanceNumber: 1,
    contentDateTime: '2024-05-01T10:30:00Z',
    deviceObserverUid: newUid(),
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: newUid(), seriesInstanceUid: newUid(), frameOfReferenceUid: newUid() },
    measurements: [{ kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 1, y: 2, z: 3 }, { x: 13.5, y: 2, z: 3 }] }],
  };
  return { bytes: encodeMeasurementReport(input), sopInstanceUid, studyInstanceUid };
}

let dir = '';
let pacs: FakePacs;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eco3d-pacs-push-'));
  pacs = await startFakePacs();
});
after(async () => {
  await pacs.close();
  await rm(dir, { recursive: true, force: true });
});

async function fileOf(bytes: Uint8Array, name = `${newUid()}.dcm`): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, bytes);
  return file;
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<Eco3dError> {
  const err = await p.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof Eco3dError, `an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
  return err;
}

// --- the client -----------------------------------------------------------------------------

void describe('STOW-RS client against a local HTTP PACS', () => {
  void test('files and buffers go as one multipart/related body, byte for byte, with Basic auth; the answer is parsed', async () => {
    const a = report();
    const b = report();
    const c = report();
    const from = pacs.requests.length;
    const result = await stowInstances(pacs.baseUrl, [await fileOf(a.bytes), b.bytes, await fileOf(c.bytes)], {
      auth: { kind: 'basic', username: 'modality', password: 'pä:ss' },
    });
    const got = pacs.requests[from]!;
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/dicom-web/studies');
    assert.match(String(got.headers['content-type']), /^multipart\/related; type="application\/dicom"; boundary=/);
    assert.equal(got.headers['transfer-encoding'], undefined, 'not chunked');
    assert.equal(got.headers.authorization, `Basic ${Buffer.from('modality:pä:ss').toString('base64')}`);
    assert.match(String(got.headers.accept), /application\/dicom\+json/);
    assert.deepEqual(got.parts?.map((p) => p.contentType), ['application/dicom', 'application/dicom', 'application/dicom']);
    assert.deepEqual(got.parts?.map((p) => Buffer.from(p.bytes)), [a, b, c].map((x) => Buffer.from(x.bytes)));
    assert.equal(result.httpStatus, 200);
    assert.equal(result.hasResponseBody, true);
    assert.deepEqual(result.stored.map((s) => s.sopInstanceUid), [a, b, c].map((x) => x.sopInstanceUid));
    assert.ok(result.stored.every((s) => s.sopClassUid === '1.2.840.10008.5.1.4.1.1.88.34' && s.warningReason === undefined));
    assert.equal(result.retrieveUrl, `${pacs.baseUrl}/studies/x`);
  });

  void test('a bearer token; credentials in the URL become Basic auth and leave the URL', async () => {
    const from = pacs.requests.length;
    await stowInstances(pacs.baseUrl, [report().bytes], { auth: { kind: 'bearer', token: 'tok-123' }, studyInstanceUid: '2.25.77' });
    assert.equal(pacs.requests[from]!.headers.authorization, 'Bearer tok-123');
    assert.equal(pacs.requests[from]!.url, '/dicom-web/studies/2.25.77');
    const target = dicomWebTarget(pacs.baseUrl.replace('http://', 'http://us%40er:p%3Ass@') + '/');
    assert.equal(target.baseUrl, pacs.baseUrl);
    assert.deepEqual(target.auth, { kind: 'basic', username: 'us@er', password: 'p:ss' });
    await stowInstances(target.baseUrl, [report().bytes], { auth: target.auth });
    assert.equal(pacs.requests[from + 1]!.headers.authorization, `Basic ${Buffer.from('us@er:p:ss').toString('base64')}`);
    assert.throws(() => dicomWebTarget('ftp://pacs/'), /http or https/);
  });

  void test('a 202 with a Failed SOP Sequence is an upstream error naming the instance and the reason', async () => {
    const a = report();
    pacs.next({ kind: 'fail-all', status: 202, reason: 0xa900 });
    const err = await rejectsWith(stowInstances(pacs.baseUrl, [a.bytes]), 'ECO3D_ERR_UPSTREAM', /HTTP 202/);
    assert.ok(err.message.includes(`${a.sopInstanceUid}: 0xA900 data set does not match SOP class`), err.message);
    assert.deepEqual(err.details, { httpStatus: 202, failed: [{ sopInstanceUid: a.sopInstanceUid, failureReason: 0xa900 }], stored: [] });
  });

  void test('a non-2xx answer is an upstream error with the status and what the PACS said', async () => {
    pacs.next({ kind: 'status', status: 503, body: 'storage area full', contentType: 'text/plain' });
    await rejectsWith(stowInstances(pacs.baseUrl, [report().bytes]), 'ECO3D_ERR_UPSTREAM', /HTTP 503 Service Unavailable to STOW-RS at http:\/\/127\.0\.0\.1:\d+\/dicom-web\/studies: storage area full/);
    // Orthanc's way: a 409 Store Instances Response without a content type.
    pacs.next({ kind: 'status', status: 409, body: JSON.stringify({ '00081198': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: ['2.25.5'] }, '00081197': { vr: 'US', Value: [272] } }] } }) });
    await rejectsWith(stowInstances(pacs.baseUrl, [report().bytes]), 'ECO3D_ERR_UPSTREAM', /HTTP 409 Conflict .*2\.25\.5: 0x0110 processing failure/);
  });

  void test('a PACS that answers the headers first (401) while the body is still going up: its status, not a broken pipe', async () => {
    pacs.next({ kind: 'answer-early', status: 401 });
    const big = new Uint8Array(32 << 20); // more than the socket buffers take before the answer
    await rejectsWith(stowInstances(pacs.baseUrl, [big]), 'ECO3D_ERR_UPSTREAM', /HTTP 401 Unauthorized .*no credentials/);
  });

  void test('silence: ECO3D_ERR_TIMEOUT after timeoutMs; the caller can abort with its own reason', async () => {
    pacs.next({ kind: 'hang' });
    const t0 = Date.now();
    await rejectsWith(stowInstances(pacs.baseUrl, [report().bytes], { timeoutMs: 300 }), 'ECO3D_ERR_TIMEOUT', /no answer within 300 ms/);
    assert.ok(Date.now() - t0 >= 290, 'not before the timeout');
    pacs.next({ kind: 'hang' });
    const abort = new AbortController();
    const from = pacs.requests.length;
    const pending = stowInstances(pacs.baseUrl, [report().bytes], { signal: abort.signal });
    await pacs.requestCount(from + 1);
    abort.abort(new Eco3dError('ECO3D_ERR_TIMEOUT', 'the dispatcher gave up'));
    await rejectsWith(pending, 'ECO3D_ERR_TIMEOUT', /the dispatcher gave up/);
  });

  void test('nobody listening: an upstream error; a missing file: ENOENT before anything is sent', async () => {
    await rejectsWith(stowInstances('http://127.0.0.1:1/dicom-web', [report().bytes], { timeoutMs: 5000 }), 'ECO3D_ERR_UPSTREAM', /ECONNREFUSED/);
    const from = pacs.requests.length;
    await assert.rejects(stowInstances(pacs.baseUrl, [join(dir, 'nope.dcm')]), { code: 'ENOENT' });
    assert.equal(pacs.requests.length, from);
  });

  void test('the response parser and the failure reasons', () => {
    assert.deepEqual(parseStoreInstancesResponse(null), { retrieveUrl: undefined, stored: [], failed: [], otherFailures: [] });
    const r = parseStoreInstancesResponse({
      '00081199': { vr: 'SQ', Value: [{ '00081155': { vr: 'UI', Value: ['2.25.1'] }, '00081196': { vr: 'US', Value: [0xb000] } }, { junk: 1 }] },
      '0008119A': { vr: 'SQ', Value: [{ '00081197': { vr: 'US', Value: [0xa700] } }] },
    });
    assert.deepEqual(r.stored, [{ sopClassUid: undefined, sopInstanceUid: '2.25.1', retrieveUrl: undefined, warningReason: 0xb000 }]);
    assert.deepEqual(r.otherFailures, [0xa700]);
    assert.equal(describeFailureReason(0xc00f), '0xC00F cannot understand');
    assert.equal(describeFailureReason(0x1234), '0x1234');
  });
});

void test('--pacs values: a DICOMweb root (credentials split off) or a DICOM C-STORE SCP', () => {
  assert.deepEqual(parsePacsTarget('https://pacs.example/dicom-web/'), { baseUrl: 'https://pacs.example/dicom-web', auth: undefined });
  assert.deepEqual(parsePacsTarget('http://u:p%40ss@pacs:8042/dicom-web'), { baseUrl: 'http://pacs:8042/dicom-web', auth: { kind: 'basic', username: 'u', password: 'p@ss' } });
  assert.deepEqual(parsePacsTarget('dicom://ORTHANC@pacs.local:4242'), { dimse: { calledAet: 'ORTHANC', host: 'pacs.local', port: 4242 } });
  assert.deepEqual(parsePacsTarget('DICOM://MAIN%20PACS@[::1]:104/?calling=ECO3D-EDGE'), { dimse: { calledAet: 'MAIN PACS', host: '::1', port: 104, callingAet: 'ECO3D-EDGE' } });
  for (const bad of ['dicom://pacs:104', 'dicom://AET@pacs', 'dicom://AET@pacs:70000', 'dicom://A_TITLE_FAR_TOO_LONG@pacs:104', 'ftp://pacs/', 'not a url']) {
    assert.throws(() => parsePacsTarget(bad), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_CONFIG', bad);
  }
});

// --- the consumer under a real dispatcher ---------------------------------------------------

function clock(startMs = Date.UTC(2026, 5, 1)): { nowMs: () => number; advance: (ms: number) => void } {
  let t = startMs;
  return { nowMs: () => t, advance: (ms) => (t += ms) };
}

function storedEvent(tenantId: string, r: { sopInstanceUid: string; studyInstanceUid: string }): DicomInstanceStoredV1 {
  return {
    type: 'DicomInstanceStored',
    version: 1,
    idempotencyKey: `DicomInstanceStored/${tenantId}/${r.sopInstanceUid}`,
    tenantId,
    occurredAt: new Date().toISOString(),
    studyInstanceUid: r.studyInstanceUid,
    seriesInstanceUid: newUid(),
    sopInstanceUid: r.sopInstanceUid,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.88.34',
    source: { kind: 'stow', actor: 'test' },
  };
}

function memoryLog(): PacsPushLog & { lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  return { lines, info: (obj, msg) => lines.push({ level: 'info', obj, msg }), warn: (obj, msg) => lines.push({ level: 'warn', obj, msg }) };
}

forEachDatabase('pacs-push consumer', (ctx) => {
  async function freshDb(): Promise<Database> {
    const db = await (await ctx.newStorage()).open();
    await migrate(db);
    return db;
  }
  const delivery = async (db: Database, key: string) =>
    (await db.query<{ attempts: number; last_error: string | null; next_attempt_at: Date | null; delivered_at: Date | null }>(
      `SELECT d.attempts, d.last_error, d.next_attempt_at, d.delivered_at FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id
       WHERE d.consumer = 'pacs-push' AND o.idempotency_key = $1`,
      [key],
    ))[0]!;

  void test('PACS answers 500, then never answers, then accepts: three attempts with back-off, and the instance arrives intact', async () => {
    const db = await freshDb();
    const c = clock();
    const errors: Array<{ err: unknown; context: DeliveryContext }> = [];
    const r = report();
    const file = await fileOf(r.bytes);
    const files = new Map([[r.sopInstanceUid, file]]);
    const log = memoryLog();
    const d = new OutboxDispatcher(db, { nowMs: c.nowMs, baseBackoffMs: 1000, onError: (err, context) => errors.push({ err, context }) });
    d.register(pacsPushConsumer({ baseUrl: pacs.baseUrl, timeoutMs: 400, instanceFile: (_t, uid) => files.get(uid) ?? null, log }));
    const event = storedEvent('hospital-a', r);
    await db.transaction((tx) => insertOutboxEvent(tx, event));
    const from = pacs.requests.length;

    pacs.next({ kind: 'status', status: 500, body: 'database locked', contentType: 'text/plain' }, { kind: 'hang' });
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 });
    let row = await delivery(db, event.idempotencyKey);
    assert.equal(row.attempts, 1);
    assert.match(row.last_error ?? '', /HTTP 500 .*database locked/);
    assert.equal(row.next_attempt_at?.getTime(), c.nowMs() + 1000);

    c.advance(999);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 0 }, 'not due yet');
    c.advance(1);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 }, 'the silent PACS times out');
    row = await delivery(db, event.idempotencyKey);
    assert.equal(row.attempts, 2);
    assert.match(row.last_error ?? '', /no answer within 400 ms/);
    assert.equal((errors.at(-1)?.err as Eco3dError).code, 'ECO3D_ERR_TIMEOUT');
    assert.equal(row.next_attempt_at?.getTime(), c.nowMs() + 2000, 'back-off doubled');

    c.advance(2000);
    assert.deepEqual(await d.deliverDue(), { delivered: 1, failed: 0 });
    row = await delivery(db, event.idempotencyKey);
    assert.equal(row.attempts, 3);
    assert.equal(row.delivered_at?.getTime(), c.nowMs());
    assert.equal(pacs.requests.length - from, 3, 'one request per attempt');
    for (const req of pacs.requests.slice(from)) {
      assert.equal(req.parts?.length, 1);
      assert.ok(Buffer.from(req.parts[0]!.bytes).equals(Buffer.from(r.bytes)), 'the instance arrives intact, every time');
    }
    assert.deepEqual(await outboxBacklog(db), []);
    assert.ok(log.lines.some((l) => l.level === 'info' && l.obj.sopInstanceUid === r.sopInstanceUid && /stored/.test(l.msg)));
    c.advance(3_600_000);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 0 }, 'nothing more to do');
  });

  void test('an instance gone from the archive is logged and dropped, not retried; other tenants are not pushed', async () => {
    const db = await freshDb();
    const log = memoryLog();
    const r = report();
    const other = report();
    const file = await fileOf(other.bytes);
    const d = new OutboxDispatcher(db, { onError: () => undefined });
    d.register(pacsPushConsumer({ baseUrl: pacs.baseUrl, tenantIds: ['hospital-a'], instanceFile: (_t, uid) => (uid === other.sopInstanceUid ? file : null), log }));
    const gone = storedEvent('hospital-a', r);
    const foreign = storedEvent('hospital-b', other);
    await db.transaction(async (tx) => {
      await insertOutboxEvent(tx, gone);
      await insertOutboxEvent(tx, foreign);
    });
    const from = pacs.requests.length;
    assert.deepEqual(await d.deliverDue(), { delivered: 2, failed: 0 });
    assert.equal(pacs.requests.length, from, 'nothing sent');
    assert.equal((await delivery(db, gone.idempotencyKey)).attempts, 1);
    assert.ok(log.lines.some((l) => l.level === 'warn' && l.obj.sopInstanceUid === r.sopInstanceUid && /no longer in the archive/.test(l.msg)));
  });

  void test('a file deleted between the lookup and the push is dropped; one missing behind the index is retried', async () => {
    const db = await freshDb();
    const log = memoryLog();
    const deleted = report();
    const broken = report();
    let lookups = 0;
    const d = new OutboxDispatcher(db, { onError: () => undefined });
    d.register(
      pacsPushConsumer({
        baseUrl: pacs.baseUrl,
        log,
        // `deleted`: indexed at the first lookup, gone at the second. `broken`: always indexed, no file.
        instanceFile: (_t, uid) => (uid === deleted.sopInstanceUid ? (++lookups === 1 ? join(dir, 'deleted.dcm') : null) : join(dir, 'broken.dcm')),
      }),
    );
    await db.transaction(async (tx) => {
      await insertOutboxEvent(tx, storedEvent('hospital-a', deleted));
      await insertOutboxEvent(tx, storedEvent('hospital-a', broken));
    });
    assert.deepEqual(await d.deliverDue(), { delivered: 1, failed: 1 });
    assert.ok(log.lines.some((l) => l.obj.sopInstanceUid === deleted.sopInstanceUid && /deleted while being pushed/.test(l.msg)));
    assert.match((await delivery(db, storedEvent('hospital-a', broken).idempotencyKey)).last_error ?? '', /ENOENT/);
  });

  void test('a 200 that does not list the instance is not taken as stored', async () => {
    const db = await freshDb();
    const r = report();
    const file = await fileOf(r.bytes);
    const c = clock();
    const d = new OutboxDispatcher(db, { nowMs: c.nowMs, onError: () => undefined });
    d.register(pacsPushConsumer({ baseUrl: pacs.baseUrl, instanceFile: () => file }));
    const event = storedEvent('hospital-a', r);
    await db.transaction((tx) => insertOutboxEvent(tx, event));
    pacs.next({ kind: 'accept-other' });
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 });
    assert.match((await delivery(db, event.idempotencyKey)).last_error ?? '', /without listing instance/);
    c.advance(1000);
    assert.deepEqual(await d.deliverDue(), { delivered: 1, failed: 0 });
  });
});

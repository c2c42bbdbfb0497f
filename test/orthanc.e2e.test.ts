// PACS push end to end against a REAL Orthanc process (Debian `orthanc` + `orthanc-dicomweb`,
// started by test/orthanc.ts on free loopback ports, HTTP Basic auth on). Never skipped: a missing
// Orthanc fails the run (scripts/test.sh installs it).
//
// A study as an acquisition makes it (Enhanced US Volume, Ultrasound Multi-frame, Comprehensive
// 3D SR) is stored in our DicomArchive (PGlite in a temporary directory), which writes one
// DicomInstanceStored outbox row per instance; a real OutboxDispatcher delivers them to the real
// pacs-push consumer, which STOWs each to Orthanc. Then Orthanc is asked over its own QIDO-RS and
// WADO-RS: the UIDs are found, the metadata matches ours, and the pixel data and the data sets it
// returns are byte-identical to ours. Orthanc is then stopped: the push fails, is retried with
// back-off, and lands once Orthanc is back.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { getMultipartBoundary, parseMultipart } from '@mjackson/multipart-parser/node';
import dcmjs from 'dcmjs';
import { DicomArchive, pacsPushConsumer, parsePacsTarget, type PacsPushLog } from '../archive/index.ts';
import type { DicomInstanceStoredV1 } from '../protocols/events.ts';
import { ensureTenant, migrate, outboxBacklog, OutboxDispatcher, type Database } from '../store/index.ts';
import type { DeliveryContext } from '../store/outbox.ts';
import { createTestStorage, type TestStorage } from '../store/testing.ts';
import { buildTestStudy, startOrthanc, type RunningOrthanc, type TestInstance, type TestStudy } from './orthanc.ts';

const TENANT = 'hospital-a';

type Json = Record<string, any>;

/** The first value of a DICOM JSON attribute, person names as their alphabetic group, numbers as strings. */
function first(ds: Json, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'object' && 'Alphabetic' in v) return String(v.Alphabetic);
  return String(v);
}

/** Waits for `check` to hold, polling the real state (database, PACS) every 50 ms. */
async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

void describe('PACS push to a real Orthanc process (DICOMweb STOW-RS, QIDO-RS, WADO-RS; DIMSE C-STORE)', () => {
  let orthanc: RunningOrthanc;
  let storage: TestStorage;
  let db: Database;
  let dir: string;
  let archive: DicomArchive;
  const errors: Array<{ err: unknown; context: DeliveryContext }> = [];
  const logged: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const log: PacsPushLog = { info: (obj, msg) => logged.push({ level: 'info', obj, msg }), warn: (obj, msg) => logged.push({ level: 'warn', obj, msg }) };

  before(async () => {
    orthanc = await startOrthanc();
    dir = await mkdtemp(join(tmpdir(), 'eco3d-orthanc-e2e-'));
    storage = await createTestStorage('pglite');
    db = await storage.open();
    await migrate(db);
    await ensureTenant(db, { id: TENANT, name: 'Hospital A' });
    archive = new DicomArchive({ root: join(dir, 'archive'), db });
  });
  after(async () => {
    await orthanc?.close();
    await storage?.dispose();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  const consumer = () =>
    pacsPushConsumer({
      baseUrl: orthanc.dicomWebUrl,
      auth: { kind: 'basic', username: orthanc.credentials!.username, password: orthanc.credentials!.password },
      timeoutMs: 20_000,
      instanceFile: (tenantId, uid) => archive.instanceFile(tenantId, uid),
      tenantIds: [TENANT],
      log,
    });

  /** The event the archive wrote for `inst`, as a redelivery would bring it again. */
  function storedEvent(study: TestStudy, inst: TestInstance): DicomInstanceStoredV1 {
    return {
      type: 'DicomInstanceStored',
      version: 1,
      idempotencyKey: `DicomInstanceStored/${TENANT}/${inst.sopInstanceUid}`,
      tenantId: TENANT,
      occurredAt: new Date().toISOString(),
      studyInstanceUid: study.studyInstanceUid,
      seriesInstanceUid: inst.seriesInstanceUid,
      sopInstanceUid: inst.sopInstanceUid,
      sopClassUid: inst.sopClassUid,
      source: { kind: 'acquisition', acquisitionUid: study.studyInstanceUid },
    };
  }

  async function storeStudy(study: TestStudy): Promise<void> {
    for (const inst of study.instances) {
      const r = await archive.storeInstance(TENANT, inst.bytes, { kind: 'acquisition', acquisitionUid: study.studyInstanceUid });
      assert.equal(r.status, 'stored');
    }
  }

  async function dicomWeb(path: string, accept: string): Promise<{ status: number; contentType: string; body: Buffer }> {
    const res = await orthanc.request(`/dicom-web${path}`, { headers: { accept } });
    return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: Buffer.from(await res.arrayBuffer()) };
  }

  async function qido(path: string): Promise<Json[]> {
    const r = await dicomWeb(path, 'application/dicom+json');
    assert.equal(r.status, 200, `QIDO-RS ${path}: ${r.body.toString()}`);
    return JSON.parse(r.body.toString('utf8')) as Json[];
  }

  function parts(r: { contentType: string; body: Buffer }): Buffer[] {
    const boundary = getMultipartBoundary(r.contentType);
    assert.ok(boundary !== null, `multipart answer, got ${r.contentType}`);
    return [...parseMultipart(r.body, { boundary, maxFileSize: 1 << 30 })].map((p) => Buffer.from(p.bytes));
  }

  /** The data set of a Part-10 file: the bytes after the File Meta Information group. */
  function dataset(bytes: Uint8Array): Buffer {
    const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    assert.equal(b.toString('latin1', 128, 132), 'DICM');
    return b.subarray(144 + b.readUInt32LE(140));
  }

  /** Everything Orthanc says about the study agrees with what we built and what our archive holds. */
  async function assertInOrthanc(study: TestStudy, arrived: 'as sent' | 'reencoded' = 'as sent'): Promise<void> {
    const s = study.studyInstanceUid;
    const [found] = await qido(`/studies?StudyInstanceUID=${s}`);
    assert.ok(found !== undefined, 'QIDO-RS finds the study');
    assert.equal(first(found, '0020000D'), s);
    assert.equal(first(found, '00100020'), study.patientId);
    assert.equal(first(found, '00100010'), study.patientName);
    assert.equal(first(found, '00080050'), study.accessionNumber);
    assert.equal(first(found, '00201208'), String(study.instances.length), 'Number of Study Related Instances');
    const byPatient = await qido(`/studies?PatientID=${study.patientId}`);
    assert.deepEqual(byPatient.map((x) => first(x, '0020000D')), [s], 'QIDO-RS by Patient ID');

    const series = await qido(`/studies/${s}/series`);
    assert.deepEqual(series.map((x) => first(x, '0020000E')).sort(), [...new Set(study.instances.map((i) => i.seriesInstanceUid))].sort());

    for (const inst of study.instances) {
      const listed = await qido(`/studies/${s}/series/${inst.seriesInstanceUid}/instances`);
      assert.ok(listed.some((x) => first(x, '00080018') === inst.sopInstanceUid), `QIDO-RS lists ${inst.kind} ${inst.sopInstanceUid}`);

      const base = `/studies/${s}/series/${inst.seriesInstanceUid}/instances/${inst.sopInstanceUid}`;
      const [theirs] = JSON.parse((await dicomWeb(`${base}/metadata`, 'application/dicom+json')).body.toString('utf8')) as Json[];
      assert.ok(theirs !== undefined, `WADO-RS metadata of ${inst.kind}`);
      // Ours: the attributes of the file in our archive, read by dcmjs.
      const file = await archive.instanceFile(TENANT, inst.sopInstanceUid);
      assert.ok(file !== null, `our archive holds ${inst.kind}`);
      const ourBytes = await readFile(file);
      const mine: Json = dcmjs.data.DicomMessage.readFile(ourBytes.buffer.slice(ourBytes.byteOffset, ourBytes.byteOffset + ourBytes.byteLength)).dict;
      // SOP Class/Instance, Study/Series, Patient, Modality, Series/Instance Number, Rows,
      // Columns, Number of Frames, Bits Allocated, Photometric Interpretation, Content Date/Time.
      for (const tag of ['00080016', '00080018', '0020000D', '0020000E', '00100010', '00100020', '00080060', '00200011', '00200013', '00280010', '00280011', '00280008', '00280100', '00280004', '00080023', '00080033']) {
        assert.equal(first(theirs, tag), first(mine, tag), `${inst.kind} ${tag}: Orthanc vs our archive`);
        if (['00080016', '00080018', '0020000D', '0020000E', '00100020'].includes(tag)) assert.ok(first(mine, tag) !== undefined, `${tag} present`);
      }
      assert.equal(first(theirs, '00080016'), inst.sopClassUid);
      if (inst.pixelData !== undefined) {
        assert.equal(first(theirs, '00280008'), String(inst.numberOfFrames));
        assert.equal(first(theirs, '00280010'), String(inst.rows));
        assert.equal(first(theirs, '00280011'), String(inst.columns));
        await assertPixelsInOrthanc(base, inst);
      }
      // The whole instance, retrieved: our data set, byte for byte.
      const retrieved = parts(await dicomWeb(base, 'multipart/related; type="application/dicom"'));
      assert.equal(retrieved.length, 1);
      if (arrived === 'as sent') {
        assert.ok(dataset(retrieved[0]!).equals(dataset(ourBytes)), `${inst.kind}: WADO-RS data set identical to our file's`);
      } else {
        // Orthanc's C-STORE SCP (DCMTK) rewrites sequences with explicit lengths: same elements, same values.
        const theirsFile = retrieved[0]!;
        const parsed = dcmjs.data.DicomMessage.readFile(theirsFile.buffer.slice(theirsFile.byteOffset, theirsFile.byteOffset + theirsFile.byteLength) as ArrayBuffer).dict;
        assert.deepEqual(parsed, mine, `${inst.kind}: WADO-RS data set has our elements and values`);
      }
    }
  }

  async function assertPixelsInOrthanc(base: string, inst: TestInstance): Promise<void> {
    const n = inst.numberOfFrames!;
    const list = Array.from({ length: n }, (_, i) => i + 1).join(',');
    const frames = parts(await dicomWeb(`${base}/frames/${list}`, 'multipart/related; type="application/octet-stream"'));
    assert.equal(frames.length, n, `${inst.kind}: ${n} frames from WADO-RS`);
    const frameBytes = inst.rows! * inst.columns!;
    frames.forEach((f, i) => assert.ok(f.equals(Buffer.from(inst.pixelData!.subarray(i * frameBytes, (i + 1) * frameBytes))), `${inst.kind} frame ${i + 1} byte-identical`));
  }

  void test('a study stored in our archive is pushed through the outbox to Orthanc, found by QIDO-RS, and retrieved by WADO-RS byte for byte', async () => {
    const study = buildTestStudy({ volumes: [[48, 40, 32]], multiframes: [{ frames: 8, width: 64, height: 48 }], reports: 1 });
    const dispatcher = new OutboxDispatcher(db, { onError: (err, context) => errors.push({ err, context }) });
    dispatcher.register(consumer());
    await storeStudy(study);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 3, failed: 0 }, `errors: ${errors.map((e) => String(e.err)).join('; ')}`);
    assert.deepEqual(await outboxBacklog(db), []);
    assert.equal(logged.filter((l) => l.msg.includes('stored')).length, 3);
    await assertInOrthanc(study);

    // At least once: the same event delivered again (a crash before the bookkeeping) is harmless,
    // Orthanc answers 200 with the instance referenced and keeps one copy.
    const volume = study.instances[0]!;
    const again = storedEvent(study, volume);
    await consumer().handle(again, new AbortController().signal);
    const [after] = await qido(`/studies?StudyInstanceUID=${study.studyInstanceUid}`);
    assert.equal(first(after!, '00201208'), '3', 'still three instances');
  });

  void test('Orthanc stopped: the push fails and is retried with back-off by the running dispatcher; it lands once Orthanc is back', async () => {
    const study = buildTestStudy({ volumes: [[32, 32, 16]], multiframes: [{ frames: 4, width: 32, height: 24 }], reports: 1 });
    const dispatcher = new OutboxDispatcher(db, { pollIntervalMs: 100, baseBackoffMs: 100, maxBackoffMs: 800, onError: (err, context) => errors.push({ err, context }) });
    dispatcher.register(consumer());
    await orthanc.stop();
    assert.equal(orthanc.pid, undefined);
    try {
      await dispatcher.start();
      await storeStudy(study);
      dispatcher.kick();
      // Real failures, recorded in the outbox: every instance tried at least twice.
      const attempts = async () =>
        db.query<{ attempts: number; last_error: string | null }>(
          `SELECT d.attempts, d.last_error FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id
           WHERE d.consumer = 'pacs-push' AND d.delivered_at IS NULL AND o.payload->>'studyInstanceUid' = $1`,
          [study.studyInstanceUid],
        );
      await eventually('three deliveries failing, each tried twice', async () => {
        const rows = await attempts();
        return rows.length === 3 && rows.every((r) => r.attempts >= 2 && r.last_error !== null);
      });
      for (const r of await attempts()) assert.match(r.last_error ?? '', /STOW-RS to http:\/\/127\.0\.0\.1:\d+\/dicom-web\/studies failed: .*ECONNREFUSED/);
      assert.deepEqual((await outboxBacklog(db)).map((b) => [b.consumer, b.pending, b.failing]), [['pacs-push', 3, 3]]);

      await orthanc.start();
      await eventually('the backlog drains once Orthanc is back', async () => (await outboxBacklog(db)).length === 0);
    } finally {
      await dispatcher.stop();
    }
    await assertInOrthanc(study);
  });

  void test('DIMSE C-STORE to Orthanc’s DICOM port (a PACS without DICOMweb), through the same consumer: the study lands the same, a re-push is harmless', async () => {
    const study = buildTestStudy({ volumes: [[40, 24, 20]], multiframes: [{ frames: 3, width: 40, height: 30 }], reports: 1 });
    const target = parsePacsTarget(`dicom://${orthanc.aet}@127.0.0.1:${orthanc.dicomPort}?calling=ECO3D-E2E`);
    const dimse = pacsPushConsumer({ ...target, timeoutMs: 20_000, instanceFile: (tenantId, uid) => archive.instanceFile(tenantId, uid), tenantIds: [TENANT], log });
    const dispatcher = new OutboxDispatcher(db, { onError: (err, context) => errors.push({ err, context }) });
    dispatcher.register(dimse);
    await storeStudy(study);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 3, failed: 0 }, `errors: ${errors.map((e) => String(e.err)).join('; ')}`);
    await assertInOrthanc(study, 'reencoded');
    const volume = study.instances[0]!;
    await dimse.handle(storedEvent(study, volume), new AbortController().signal);
    const [again] = await qido(`/studies?StudyInstanceUID=${study.studyInstanceUid}`);
    assert.equal(first(again!, '00201208'), '3', 'still three instances');
  });
});

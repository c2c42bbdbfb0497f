// The archive on a real database (PGlite, and PostgreSQL when DATABASE_URL is set) and real files:
// atomic stores, the index, the outbox event, duplicates and conflicts, big files by stream.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, test } from 'node:test';
import { newUid } from '../protocols/dicom-us.ts';
import { Eco3dError, type ErrorCode } from '../protocols/errors.ts';
import type { DicomInstanceStoredV1 } from '../protocols/events.ts';
import { ensureTenant } from '../store/accounts.ts';
import { forEachDatabase } from '../store/testing.ts';
import { probeHeader } from './dicom-header.ts';
import { DicomArchive, FAILURE_REASON, failureReasonOf } from './dicom-store.ts';
import { datasetOf, rewrapMeta, srReport, usMultiframe } from './testing.ts';

const SOURCE = { kind: 'acquisition', acquisitionUid: '2.25.555' } as const;

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

async function rejectsStore(p: Promise<unknown>, code: ErrorCode, reason: number, re?: RegExp): Promise<Eco3dError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof Eco3dError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(failureReasonOf(err), reason, `failure reason of: ${err.message}`);
    if (re !== undefined) assert.match(err.message, re);
    return err;
  }
  assert.fail(`expected ${code}`);
}

forEachDatabase('DICOM archive', (ctx) => {
  let root: string;
  let archive: DicomArchive;
  const T = 'hospital-a';
  const OTHER = 'hospital-b';

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eco3d-archive-'));
    archive = new DicomArchive({ root, db: ctx.db, nowMs: () => Date.UTC(2026, 2, 10, 12) });
    await ensureTenant(ctx.db, { id: T, name: T });
    await ensureTenant(ctx.db, { id: OTHER, name: OTHER });
  });
  after(async () => rm(root, { recursive: true, force: true }));

  const events = async (sop: string): Promise<DicomInstanceStoredV1[]> =>
    (await ctx.db.query<{ payload: DicomInstanceStoredV1 }>('SELECT payload FROM outbox WHERE idempotency_key LIKE $1', [`DicomInstanceStored/%/${sop}`])).map((r) => r.payload);

  test('an instance is stored byte for byte, indexed at three levels, and announced once', async () => {
    const us = usMultiframe({ patientName: 'Doe^Jane' }, { frames: 4, width: 16, height: 12 });
    const r = await archive.storeInstance(T, us.bytes, SOURCE);
    assert.equal(r.status, 'stored');
    assert.equal(r.sopInstanceUid, us.sopInstanceUid);
    assert.equal(r.sizeBytes, us.bytes.byteLength);
    const path = await archive.instanceFile(T, us.sopInstanceUid);
    assert.ok(path !== null && path.startsWith(root));
    assert.deepEqual(new Uint8Array(await readFile(path)), us.bytes);

    const [rec] = await archive.findInstances(T, { study: us.studyInstanceUid, series: us.seriesInstanceUid, instance: us.sopInstanceUid });
    assert.ok(rec !== undefined);
    assert.equal(rec.numberOfFrames, 4);
    assert.equal(rec.rows, 12);
    assert.equal(rec.columns, 16);
    assert.equal(rec.bitsAllocated, 8);
    // The recorded pixel offset reads exactly the frames back.
    const px = rec.pixelData!;
    assert.equal(px.length, us.pixels.length);
    assert.deepEqual(new Uint8Array(await readFile(path)).subarray(px.offset, px.offset + us.pixels.length), us.pixels);

    const summary = await archive.studyInstances(T, us.studyInstanceUid);
    assert.deepEqual(
      summary.map((s) => [s.sopInstanceUid, s.seriesInstanceUid, s.modality, s.numberOfFrames, s.sizeBytes]),
      [[us.sopInstanceUid, us.seriesInstanceUid, 'US', 4, us.bytes.byteLength]],
    );
    const ev = await events(us.sopInstanceUid);
    assert.equal(ev.length, 1);
    assert.deepEqual(ev[0], {
      type: 'DicomInstanceStored',
      version: 1,
      idempotencyKey: `DicomInstanceStored/${T}/${us.sopInstanceUid}`,
      tenantId: T,
      occurredAt: '2026-03-10T12:00:00.000Z',
      studyInstanceUid: us.studyInstanceUid,
      seriesInstanceUid: us.seriesInstanceUid,
      sopInstanceUid: us.sopInstanceUid,
      sopClassUid: us.sopClassUid,
      source: SOURCE,
    });
    const study = await ctx.db.query<{ patient_name: string; study_date: string; study_time: string }>('SELECT patient_name, study_date, study_time FROM dicom_studies WHERE tenant_id = $1 AND study_uid = $2', [
      T,
      us.studyInstanceUid,
    ]);
    assert.deepEqual(study, [{ patient_name: 'Doe^Jane', study_date: '20260310', study_time: '102030.123000' }]);
  });

  test('the same instance again, even under another File Meta, is a duplicate: nothing rewritten, no second event', async () => {
    const us = usMultiframe();
    await archive.storeInstance(T, us.bytes, SOURCE);
    const files = await filesUnder(root);
    const path = (await archive.instanceFile(T, us.sopInstanceUid))!;
    const before = await stat(path);
    const again = await archive.storeInstance(T, us.bytes, { kind: 'stow', actor: 'someone' });
    const otherSender = rewrapMeta(us.bytes, { classUid: '1.2.826.0.1.3680043.2.1143.107.104.103.115.2.8.4', versionName: 'GDCM 3.0.10' });
    assert.notDeepEqual(otherSender, us.bytes);
    const third = await archive.storeInstance(T, otherSender, { kind: 'stow', actor: 'someone' });
    assert.equal(again.status, 'duplicate');
    assert.equal(third.status, 'duplicate');
    assert.equal(third.sizeBytes, us.bytes.byteLength, 'the stored size, not the re-sent one');
    assert.deepEqual(await filesUnder(root), files);
    assert.deepEqual(new Uint8Array(await readFile(path)), us.bytes);
    assert.equal((await stat(path)).mtimeMs, before.mtimeMs);
    assert.equal((await events(us.sopInstanceUid)).length, 1);
  });

  test('a UID clash with other content is a conflict with its reason, and the stored instance stays byte-identical', async () => {
    const sop = newUid();
    const first = usMultiframe({}, { sopInstanceUid: sop, seed: 1 });
    const clash = usMultiframe({ studyInstanceUid: first.studyInstanceUid }, { sopInstanceUid: sop, seriesInstanceUid: first.seriesInstanceUid, seed: 2 });
    await archive.storeInstance(T, first.bytes, SOURCE);
    const path = (await archive.instanceFile(T, sop))!;
    const files = await filesUnder(root);
    const err = await rejectsStore(archive.storeInstance(T, clash.bytes, SOURCE), 'ECO3D_ERR_CONFLICT', FAILURE_REASON.duplicateSopInstance, /already stored with different content/);
    assert.equal(err.httpStatus, 409);
    assert.equal(err.details?.sopInstanceUid, sop);
    assert.deepEqual(new Uint8Array(await readFile(path)), first.bytes);
    assert.deepEqual(await filesUnder(root), files, 'no file left behind');
    assert.equal((await events(sop)).length, 1);
    // The same clash through storeFile.
    const tmp = join(root, '..', `clash-${randomBytes(4).toString('hex')}.dcm`);
    await writeFile(tmp, clash.bytes);
    await rejectsStore(archive.storeFile(T, tmp, SOURCE, { move: true }), 'ECO3D_ERR_CONFLICT', FAILURE_REASON.duplicateSopInstance);
    assert.deepEqual(new Uint8Array(await readFile(tmp)), clash.bytes, 'the source file is where it was');
    await rm(tmp);
  });

  test('two concurrent stores of one UID: one stored, the other a duplicate or a conflict by content; one event', async () => {
    const sop = newUid();
    const a = usMultiframe({}, { sopInstanceUid: sop, seed: 3 });
    const same = await Promise.allSettled([archive.storeInstance(T, a.bytes, SOURCE), archive.storeInstance(T, a.bytes, SOURCE)]);
    assert.deepEqual(same.map((s) => (s.status === 'fulfilled' ? s.value.status : 'rejected')).sort(), ['duplicate', 'stored']);
    const sop2 = newUid();
    const b1 = usMultiframe({}, { sopInstanceUid: sop2, seed: 4 });
    const b2 = usMultiframe({ studyInstanceUid: b1.studyInstanceUid }, { sopInstanceUid: sop2, seriesInstanceUid: b1.seriesInstanceUid, seed: 5 });
    const clash = await Promise.allSettled([archive.storeInstance(T, b1.bytes, SOURCE), archive.storeInstance(T, b2.bytes, SOURCE)]);
    const won = clash.findIndex((s) => s.status === 'fulfilled');
    assert.ok(won >= 0);
    const lost = clash[1 - won]!;
    assert.ok(lost.status === 'rejected');
    assert.equal((lost.reason as Eco3dError).code, 'ECO3D_ERR_CONFLICT');
    assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, sop2))!)), [b1, b2][won]!.bytes);
    assert.equal((await events(sop)).length, 1);
    assert.equal((await events(sop2)).length, 1);
    const dir = join(root, T, b1.studyInstanceUid, b1.seriesInstanceUid);
    assert.deepEqual((await readdir(dir)).length, 1, 'the loser removed its own file only');
  });

  test('bad inputs: not DICOM, truncated, required attributes missing; nothing is left on disk', async () => {
    const files = await filesUnder(root);
    await rejectsStore(archive.storeInstance(T, new TextEncoder().encode('<html>not dicom</html>'.repeat(20)), SOURCE), 'ECO3D_ERR_BAD_FILE', FAILURE_REASON.cannotUnderstand, /not a readable DICOM/);
    const us = usMultiframe();
    await rejectsStore(archive.storeInstance(T, us.bytes.subarray(0, us.bytes.byteLength - 100), SOURCE), 'ECO3D_ERR_BAD_FILE', FAILURE_REASON.cannotUnderstand, /truncated/);
    // An SR whose SOP Instance UID was blanked (same length, so the file stays well-formed).
    const sr = srReport();
    const bytes = new Uint8Array(sr.bytes);
    const h = probeHeader(bytes);
    assert.equal(h.kind, 'header');
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const at = text.indexOf(Buffer.from(sr.sopInstanceUid, 'latin1'), (h as { header: { datasetOffset: number } }).header.datasetOffset);
    text.fill(0x20, at, at + sr.sopInstanceUid.length);
    await rejectsStore(archive.storeInstance(T, bytes, SOURCE), 'ECO3D_ERR_INVALID_RESOURCE', FAILURE_REASON.dataSetDoesNotMatchSopClass, /SOP Instance UID \(0008,0018\) is missing/);
    await rejectsStore(archive.storeInstance(T, usMultiframe({ studyInstanceUid: newUid() }).bytes, SOURCE, { expectedStudyInstanceUid: '1.2.3' }), 'ECO3D_ERR_CONFLICT', FAILURE_REASON.studyInstanceUidMismatch);
    assert.deepEqual(await filesUnder(root), files);
  });

  test('when the index transaction fails, the file is removed', async () => {
    const files = await filesUnder(root);
    const us = usMultiframe();
    // No such tenant: the study row's foreign key fails inside the transaction.
    const err = await rejectsStore(archive.storeInstance('no-such-tenant', us.bytes, SOURCE), 'ECO3D_ERR_NOT_FOUND', FAILURE_REASON.processingFailure);
    assert.match(err.message, /no tenant/);
    assert.deepEqual((await filesUnder(root)).filter((f) => !f.startsWith('no-such-tenant/')), files);
    assert.deepEqual((await filesUnder(join(root, 'no-such-tenant'))).length, 0);
    assert.equal((await events(us.sopInstanceUid)).length, 0);
  });

  test('a series claimed by two studies is refused', async () => {
    const a = usMultiframe();
    await archive.storeInstance(T, a.bytes, SOURCE);
    const b = usMultiframe({ studyInstanceUid: newUid() }, { seriesInstanceUid: a.seriesInstanceUid });
    await rejectsStore(archive.storeInstance(T, b.bytes, SOURCE), 'ECO3D_ERR_CONFLICT', FAILURE_REASON.processingFailure, /is stored in study/);
    assert.equal(await archive.instanceFile(T, b.sopInstanceUid), null);
  });

  test('tenants are isolated: the same UID may exist in two tenants, and neither sees the other', async () => {
    const us = usMultiframe();
    await archive.storeInstance(T, us.bytes, SOURCE);
    assert.equal(await archive.instanceFile(OTHER, us.sopInstanceUid), null);
    assert.deepEqual(await archive.studyInstances(OTHER, us.studyInstanceUid), []);
    assert.deepEqual(await archive.findInstances(OTHER, { study: us.studyInstanceUid }), []);
    const other = await archive.storeInstance(OTHER, us.bytes, SOURCE);
    assert.equal(other.status, 'stored');
    assert.notEqual(await archive.instanceFile(OTHER, us.sopInstanceUid), await archive.instanceFile(T, us.sopInstanceUid));
    await assert.rejects(archive.storeInstance('../etc', us.bytes, SOURCE), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_REQUEST');
  });

  test('storeFile copies or moves; the copy leaves the source, the move takes it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'eco3d-pipeline-'));
    try {
      const a = usMultiframe({}, { frames: 6 });
      const pa = join(dir, 'a.dcm');
      await writeFile(pa, a.bytes);
      const ra = await archive.storeFile(T, pa, SOURCE, { move: false });
      assert.equal(ra.status, 'stored');
      assert.deepEqual(new Uint8Array(await readFile(pa)), a.bytes);
      assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, a.sopInstanceUid))!)), a.bytes);

      // Moved from inside the archive's file system (the pipeline writes under the data directory).
      const b = usMultiframe({}, { frames: 6 });
      const pb = join(root, `pipeline-${randomBytes(4).toString('hex')}.dcm`);
      await writeFile(pb, b.bytes);
      const rb = await archive.storeFile(T, pb, SOURCE, { move: true });
      assert.equal(rb.status, 'stored');
      await assert.rejects(stat(pb), /ENOENT/);
      assert.deepEqual(new Uint8Array(await readFile((await archive.instanceFile(T, b.sopInstanceUid))!)), b.bytes);
      // Same hash whichever way it was stored.
      assert.equal(rb.sha256, (await archive.storeInstance(T, b.bytes, SOURCE)).sha256);
      assert.equal((await events(b.sopInstanceUid)).length, 1);
      await rejectsStore(archive.storeFile(T, join(dir, 'missing.dcm'), SOURCE, { move: true }), 'ECO3D_ERR_BAD_FILE', FAILURE_REASON.cannotUnderstand);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a 600 MB multi-frame file is stored by stream: header from a prefix, memory stays small', async () => {
    // 1800 frames of 640 × 480 would be 553 MB: the header of a real 1-frame instance, then a
    // Pixel Data element announcing 1800 frames, in a sparse file (no 553 MB write needed).
    const frameBytes = 640 * 480;
    const frames = 1800;
    const one = usMultiframe({}, { frames: 1, width: 640, height: 480 });
    const h = probeHeader(one.bytes);
    assert.equal(h.kind, 'header');
    const px = (h as { header: { pixelData: { tagOffset: number } } }).header.pixelData;
    const head = one.bytes.subarray(0, px.tagOffset);
    const el = Buffer.alloc(12);
    el.writeUInt16LE(0x7fe0, 0);
    el.writeUInt16LE(0x0010, 2);
    el.write('OB', 4, 'latin1');
    el.writeUInt32LE(frameBytes * frames, 8);
    const path = join(root, `big-${randomBytes(4).toString('hex')}.dcm`);
    const fh = await open(path, 'w');
    await fh.write(head);
    await fh.write(el);
    const marker = Buffer.from('last frame, last bytes');
    const size = head.length + el.length + frameBytes * frames;
    await fh.write(marker, 0, marker.length, size - marker.length);
    await fh.close();
    assert.equal((await stat(path)).size, size);

    const baseline = process.memoryUsage().arrayBuffers;
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    }, 5);
    let r;
    try {
      r = await archive.storeFile(T, path, SOURCE, { move: true });
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    assert.equal(r.status, 'stored');
    assert.equal(r.sizeBytes, size);
    assert.ok(peak - baseline < 64 * 1024 * 1024, `array buffers grew by ${Math.round((peak - baseline) / 1e6)} MB while storing a ${Math.round(size / 1e6)} MB file`);
    const [rec] = await archive.findInstances(T, { study: one.studyInstanceUid, instance: one.sopInstanceUid });
    assert.equal(rec!.pixelData!.length, frameBytes * frames);
    assert.equal(rec!.pixelData!.offset, px.tagOffset + 12);
    // The stored file is the same file (renamed), with its last bytes.
    const stored = await open(rec!.path, 'r');
    const tail = Buffer.alloc(marker.length);
    await stored.read(tail, 0, tail.length, size - marker.length);
    await stored.close();
    assert.deepEqual(tail, marker);
    assert.equal(r.sha256.length, 64);
    await rm(rec!.path); // 600 MB of (sparse) test data need not outlive the test
  });

  test('the data set hash is what identifies content (same data set, other File Meta: same hash)', async () => {
    const us = usMultiframe();
    const a = await archive.storeInstance(T, us.bytes, SOURCE);
    const { createHash } = await import('node:crypto');
    assert.equal(a.sha256, createHash('sha256').update(datasetOf(us.bytes)).digest('hex'));
  });
});

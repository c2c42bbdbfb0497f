// The header walker: where the data set and Pixel Data start, read from a prefix of the file, and
// what it refuses. Offsets are checked against the pixels the writer put in, and against dcmdump.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import dcmjs from 'dcmjs';
import { DicomHeaderError, IMPLICIT_VR_LITTLE_ENDIAN, probeHeader, type DicomHeader } from './dicom-header.ts';
import { gray16, rewrapMeta, srReport, usMultiframe } from './testing.ts';

const dir = mkdtempSync(join(tmpdir(), 'eco3d-dicom-header-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function header(bytes: Uint8Array, fileSize = bytes.byteLength): DicomHeader {
  const p = probeHeader(bytes, fileSize);
  assert.equal(p.kind, 'header');
  return (p as { header: DicomHeader }).header;
}

test('Pixel Data is located exactly: the value bytes are the frames the writer was given', () => {
  const us = usMultiframe({}, { frames: 5, width: 20, height: 10 });
  const h = header(us.bytes);
  assert.equal(h.transferSyntaxUid, '1.2.840.10008.1.2.1');
  assert.ok(h.pixelData !== null);
  assert.equal(h.pixelData.vr, 'OB');
  assert.equal(h.pixelData.encapsulated, false);
  assert.equal(h.pixelData.length, us.pixels.length);
  assert.deepEqual(us.bytes.subarray(h.pixelData.valueOffset, h.pixelData.valueOffset + us.pixels.length), us.pixels);
  // The data set is what follows the File Meta (dcmdump agrees on the meta group length).
  const file = join(dir, 'us.dcm');
  writeFileSync(file, us.bytes);
  const dump = spawnSync('dcmdump', ['+P', '0002,0000', file], { encoding: 'utf8' });
  assert.equal(dump.error, undefined, 'dcmdump must be installed');
  const groupLength = Number(/\(0002,0000\) UL (\d+)/.exec(dump.stdout)?.[1]);
  assert.equal(h.datasetOffset, 132 + 12 + groupLength);
  // The parsed data set stops before Pixel Data and has the attributes before it.
  assert.equal(h.dataset['7FE00010'], undefined);
  assert.equal(h.dataset['00080018']?.Value?.[0], us.sopInstanceUid);
  assert.equal(h.dataset['00280008']?.Value?.[0], 5);
});

test('16-bit pixels are OW; an SR has no Pixel Data and is parsed whole (nested sequences included)', () => {
  const g = gray16({ frames: 3 });
  const hg = header(g.bytes);
  assert.equal(hg.pixelData?.vr, 'OW');
  const px = hg.pixelData;
  assert.ok(px !== null);
  assert.deepEqual(g.bytes.subarray(px.valueOffset, px.valueOffset + g.pixels.length), g.pixels);
  const sr = srReport();
  const hs = header(sr.bytes);
  assert.equal(hs.pixelData, null);
  assert.ok(Array.isArray(hs.dataset['0040A730']?.Value), 'Content Sequence parsed');
});

test('a short prefix asks for more, and the answer from a long enough prefix is the same as from the whole file', () => {
  const us = usMultiframe({}, { frames: 3 });
  const whole = header(us.bytes);
  let n = 64;
  let asked = 0;
  for (;;) {
    const p = probeHeader(us.bytes.subarray(0, n), us.bytes.byteLength);
    if (p.kind === 'header') {
      assert.equal(p.header.pixelData?.valueOffset, whole.pixelData?.valueOffset);
      assert.equal(p.header.datasetOffset, whole.datasetOffset);
      break;
    }
    assert.ok(p.bytes > n && p.bytes <= us.bytes.byteLength, `asks for more than it has (${p.bytes} > ${n})`);
    n = p.bytes;
    asked++;
  }
  assert.ok(asked >= 1);
  // Only the header is needed, not the pixels.
  assert.ok(n <= whole.pixelData!.valueOffset + 64 * 1024 + 1);
});

test('an implicit VR little endian file with an undefined-length sequence is walked', () => {
  // dcmjs writes the data set in the transfer syntax its meta names.
  const ds = {
    SOPClassUID: '1.2.840.10008.5.1.4.1.1.7',
    SOPInstanceUID: '2.25.77',
    StudyInstanceUID: '2.25.78',
    SeriesInstanceUID: '2.25.79',
    ReferencedSeriesSequence: [{ SeriesInstanceUID: '2.25.80' }, { SeriesInstanceUID: '2.25.81' }],
    Rows: 2,
    Columns: 2,
    BitsAllocated: 8,
    SamplesPerPixel: 1,
    PixelData: new Uint8Array([1, 2, 3, 4]).buffer,
    _vrMap: { PixelData: 'OW' },
  };
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: ds.SOPClassUID,
    MediaStorageSOPInstanceUID: ds.SOPInstanceUID,
    TransferSyntaxUID: IMPLICIT_VR_LITTLE_ENDIAN,
    ImplementationClassUID: '2.25.1',
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(ds);
  const bytes = new Uint8Array(dict.write());
  const h = header(bytes);
  assert.equal(h.transferSyntaxUid, IMPLICIT_VR_LITTLE_ENDIAN);
  assert.deepEqual([...bytes.subarray(h.pixelData!.valueOffset, h.pixelData!.valueOffset + 4)], [1, 2, 3, 4]);
  assert.equal((h.dataset['00081115']?.Value as unknown[]).length, 2);
});

test('another File Meta, same data set: same data set bytes, another offset', () => {
  const us = usMultiframe();
  const other = rewrapMeta(us.bytes, { classUid: '1.2.826.0.1.3680043.2.1143.107.104.103.115.2.8.4', versionName: 'GDCM 3.0.10' });
  const a = header(us.bytes);
  const b = header(other);
  assert.notEqual(a.datasetOffset, b.datasetOffset);
  assert.deepEqual(us.bytes.subarray(a.datasetOffset), other.subarray(b.datasetOffset));
});

test('refused: not DICOM, truncated, corrupt', () => {
  const us = usMultiframe();
  const refuse = (bytes: Uint8Array, re: RegExp): void => {
    assert.throws(() => probeHeader(bytes, bytes.byteLength), (e: unknown) => e instanceof DicomHeaderError && re.test(e.message));
  };
  refuse(new TextEncoder().encode('this is a text file, not a DICOM file at all, '.repeat(10)), /no DICM prefix/);
  refuse(new Uint8Array(50), /too short/);
  refuse(us.bytes.subarray(0, us.bytes.byteLength - 10), /truncated/);
  const h = header(us.bytes);
  // Cut inside a value (the SOP Instance UID) and inside an element's header. A cut at a fixed
  // byte could land on an element boundary, which is a valid end of a data set (the UIDs are
  // random, so their lengths move the boundaries).
  const uidAt = Buffer.from(us.bytes).indexOf(Buffer.from(us.sopInstanceUid, 'latin1'), h.datasetOffset);
  assert.ok(uidAt > 0);
  refuse(us.bytes.subarray(0, uidAt + 5), /truncated/);
  refuse(us.bytes.subarray(0, h.pixelData!.valueOffset - 5), /truncated/);
  const corrupt = new Uint8Array(us.bytes);
  // An element's VR bytes overwritten with binary garbage.
  corrupt[h.datasetOffset + 4] = 0x01;
  refuse(corrupt, /corrupt/);
});

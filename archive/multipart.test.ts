// The multipart/related reader: parts come out whole whatever the chunking, RFC 2046 framing
// (preamble, padding, epilogue, empty headers), and malformed bodies are refused by name. The
// writer's output is read back by a third-party parser (@mjackson/multipart-parser).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseMultipart } from '@mjackson/multipart-parser';
import { closeDelimiter, MultipartRelatedParser, MultipartSyntaxError, parseAccept, parseMediaType, partHead, PART_TAIL, type MultipartEvent } from './multipart.ts';

interface Part {
  headers: Map<string, string>;
  body: Buffer;
}

function collect(events: MultipartEvent[], parts: Part[]): void {
  for (const e of events) {
    if (e.kind === 'part-start') parts.push({ headers: new Map(e.headers), body: Buffer.alloc(0) });
    else if (e.kind === 'part-data') parts[parts.length - 1]!.body = Buffer.concat([parts[parts.length - 1]!.body, e.data]);
  }
}

function parseIn(body: Buffer, boundary: string, chunkSizes: (i: number) => number): Part[] {
  const p = new MultipartRelatedParser(boundary);
  const parts: Part[] = [];
  let off = 0;
  let i = 0;
  while (off < body.length) {
    const n = Math.max(1, chunkSizes(i++));
    collect(p.write(body.subarray(off, off + n)), parts);
    off += n;
  }
  collect(p.end(), parts);
  return parts;
}

// Part bodies that contain near-misses of the delimiter: CRLF, "--", the boundary without CRLF.
const BOUNDARY = 'b0undary';
const BODIES = [
  Buffer.from('first\r\n--b0undar\r\n-- b0undary'),
  Buffer.alloc(0),
  Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 13) & 0xff)),
  Buffer.from('\r\n\r\n--'),
];

function message(): Buffer {
  return Buffer.concat([
    Buffer.from('This is the preamble, ignored.\r\n'),
    ...BODIES.flatMap((b, i) => [partHead(BOUNDARY, { 'Content-Type': 'application/dicom', 'X-Part': String(i + 1) }), b, PART_TAIL]),
    closeDelimiter(BOUNDARY),
    Buffer.from('epilogue, ignored too'),
  ]);
}

test('parts are read whole and exact, for every chunking', () => {
  const body = message();
  // Sizes around the delimiter's length (12) too: a delimiter cut at every offset of a chunk.
  const chunkings: ((i: number) => number)[] = [() => body.length, () => 1, () => 7, () => 11, () => 12, () => 13, (i) => (i * 37) % 101, (i) => [3, 12, 40][i % 3]!, () => 4096];
  for (const c of chunkings) {
    const parts = parseIn(body, BOUNDARY, c);
    assert.equal(parts.length, BODIES.length);
    parts.forEach((p, i) => {
      assert.deepEqual(p.body, BODIES[i], `part ${i + 1}`);
      assert.equal(p.headers.get('content-type'), 'application/dicom');
      assert.equal(p.headers.get('x-part'), String(i + 1));
    });
  }
});

test('a first boundary at byte 0, transport padding, an empty header block', () => {
  const body = Buffer.from(`--${BOUNDARY}  \t\r\n\r\nno headers\r\n--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nx\r\n--${BOUNDARY}--`);
  const parts = parseIn(body, BOUNDARY, () => 5);
  assert.equal(parts.length, 2);
  assert.equal(parts[0]!.headers.size, 0);
  assert.equal(parts[0]!.body.toString(), 'no headers');
  assert.equal(parts[1]!.body.toString(), 'x');
});

test('malformed bodies are MultipartSyntaxErrors', () => {
  const refuse = (body: string, re: RegExp, boundary = BOUNDARY): void => {
    assert.throws(
      () => parseIn(Buffer.from(body), boundary, () => 3),
      (e: unknown) => e instanceof MultipartSyntaxError && re.test(e.message),
      body,
    );
  };
  refuse(`--other\r\n\r\nx\r\n--other--`, /no part delimited by the boundary/);
  refuse(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\nnever closed`, /ends before its close delimiter/);
  refuse(`--${BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--${BOUNDARY}--`, /malformed header line/);
  refuse(`--${BOUNDARY}xyz\r\n\r\nx\r\n--${BOUNDARY}--`, /followed by other text/);
  assert.throws(() => new MultipartRelatedParser('bad boundary '), MultipartSyntaxError);
  assert.throws(() => new MultipartRelatedParser('x'.repeat(201)), MultipartSyntaxError);
  assert.throws(() => new MultipartRelatedParser('bad"quote'), MultipartSyntaxError);
  // Longer than RFC 2046's 70, as Orthanc sends: accepted.
  const orthancStyle = 'e9b9518b-bef2-403c-80b6-19fc2cdfba8c-e9b9518b-bef2-403c-80b6-19fc2cdfba8c';
  assert.equal(parseIn(Buffer.from(`--${orthancStyle}\r\n\r\nx\r\n--${orthancStyle}--`), orthancStyle, () => 9)[0]!.body.toString(), 'x');
});

test('the writer framing is read back by a third-party parser', () => {
  const body = Buffer.concat([...BODIES.flatMap((b) => [partHead(BOUNDARY, { 'Content-Type': 'application/octet-stream' }), b, PART_TAIL]), closeDelimiter(BOUNDARY)]);
  const parts = [...parseMultipart(new Uint8Array(body), { boundary: BOUNDARY, maxFileSize: 1 << 20 })];
  assert.equal(parts.length, BODIES.length);
  parts.forEach((p, i) => assert.deepEqual(Buffer.from(p.bytes), BODIES[i]));
});

test('media types and Accept headers', () => {
  const m = parseMediaType('Multipart/Related; type="application/dicom"; boundary="a b;c"; transfer-syntax=*');
  assert.equal(m?.type, 'multipart/related');
  assert.equal(m?.params.get('type'), 'application/dicom');
  assert.equal(m?.params.get('boundary'), 'a b;c');
  assert.equal(m?.params.get('transfer-syntax'), '*');
  assert.equal(parseMediaType('not a media type'), null);
  const a = parseAccept('image/jpeg;q=0.5, image/png, multipart/related; type="application/dicom", text/html;q=0');
  assert.deepEqual(
    a.map((e) => [e.type, e.q]),
    [
      ['image/png', 1],
      ['multipart/related', 1],
      ['image/jpeg', 0.5],
    ],
  );
  assert.deepEqual(parseAccept(undefined).map((e) => e.type), ['*/*']);
});

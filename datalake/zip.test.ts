// The streaming zip writer, checked by a real reader: Debian's Info-ZIP `unzip` tests, lists and
// extracts what we write (several entries from disk and memory; 70 000 entries; an entry over
// 4 GiB and offsets past 4 GiB, on sparse files so that the test needs no disk space). Without
// unzip the tests fail and say how to install it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import fc from 'fast-check';
import { Eco3dError } from '../protocols/errors.ts';
import { throwsWith } from '../protocols/testing.ts';
import { crc32Fallback, validateZipEntryName, zipSizeBytes, zipStream, type ZipEntry } from './zip.ts';

const run = promisify(execFile);
let dir = '';

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'eco3d-zip-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs Debian's unzip; a missing unzip fails the test with the fix. */
async function unzip(...args: string[]): Promise<{ stdout: string; stdoutBytes: Buffer }> {
  try {
    const r = await run('unzip', args, { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
    return { stdout: r.stdout.toString('utf8'), stdoutBytes: r.stdout };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') assert.fail('unzip is not installed: apt-get install unzip (Info-ZIP UnZip 6, with Zip64)');
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    assert.fail(`unzip ${args.join(' ')} failed: ${String(err)}\n${e.stdout?.toString() ?? ''}\n${e.stderr?.toString() ?? ''}`);
  }
}

async function collect(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

const ZEROS = Buffer.alloc(4 * 1024 * 1024);

/**
 * Writes a stream to `file`, leaving holes where chunks are all zeros; returns the length. A
 * Writable (flowing mode, as an HTTP response takes it), not for-await: that concatenates
 * buffered chunks, copying gigabytes.
 */
async function writeSparse(s: Readable, file: string): Promise<number> {
  const fh = await open(file, 'w');
  let pos = 0;
  try {
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done): void {
        const at = pos;
        pos += chunk.length;
        const zero = chunk.length <= ZEROS.length && chunk.equals(ZEROS.subarray(0, chunk.length));
        if (zero) done();
        else fh.write(chunk, 0, chunk.length, at).then(() => done(), done);
      },
    });
    await pipeline(s, sink);
    await fh.truncate(pos);
  } finally {
    await fh.close();
  }
  return pos;
}

async function* slowly<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const x of items) {
    await Promise.resolve();
    yield x;
  }
}

async function streamError(s: Readable): Promise<Eco3dError> {
  try {
    await collect(s);
  } catch (err) {
    assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
    return err;
  }
  assert.fail('the stream did not fail');
}

const count = (buf: Buffer, sig: number): number => {
  const needle = Buffer.alloc(4);
  needle.writeUInt32LE(sig);
  let n = 0;
  for (let i = buf.indexOf(needle); i !== -1; i = buf.indexOf(needle, i + 1)) n++;
  return n;
};

void test('entries from disk and memory: unzip tests, lists and extracts them byte for byte', async () => {
  const onDisk = randomBytes(3 * 1024 * 1024 + 17);
  const diskFile = join(dir, 'instance.dcm');
  writeFileSync(diskFile, onDisk);
  const emptyFile = join(dir, 'empty.bin');
  writeFileSync(emptyFile, '');
  const manifest = Buffer.from(JSON.stringify({ version: 3, cases: 2 }));
  const mid = randomBytes(100 * 1024);
  const entries: ZipEntry[] = [
    { name: 'manifest.json', bytes: manifest },
    { name: 'cases/c1/1.2.840.99/instance.dcm', path: diskFile, sizeBytes: onDisk.length },
    { name: 'cases/c1/empty-file.bin', path: emptyFile },
    { name: 'cases/c2/séries é/vol.dcm', bytes: mid },
    { name: 'cases/c2/empty.txt', bytes: new Uint8Array(0) },
  ];
  const zipFile = join(dir, 'several.zip');
  const modifiedAt = new Date(Date.UTC(2026, 2, 1, 12, 34, 56));
  const len = await writeSparse(zipStream(slowly(entries), { modifiedAt, readChunkBytes: 256 * 1024 }), zipFile);
  assert.equal(len, statSync(zipFile).size);
  assert.equal(len, zipSizeBytes(entries.map((e) => ({ name: e.name, sizeBytes: e.bytes?.length ?? statSync(e.path!).size }))));

  const t = await unzip('-t', zipFile);
  assert.match(t.stdout, /No errors detected in compressed data/);
  const l = await unzip('-l', zipFile);
  for (const e of entries) assert.ok(l.stdout.includes(e.name), `${e.name} not listed:\n${l.stdout}`);
  assert.match(l.stdout, new RegExp(`\\s${onDisk.length}\\s+2026-03-01 12:34\\s+cases/c1/1\\.2\\.840\\.99/instance\\.dcm`));
  assert.match(l.stdout, /5 files/);
  // Stored, not deflated (zipinfo's method column).
  const z = await unzip('-Z', '-v', zipFile);
  assert.equal((z.stdout.match(/compression method:\s+none \(stored\)/g) ?? []).length, 5);
  // Byte for byte.
  assert.ok((await unzip('-p', zipFile, 'cases/c1/1.2.840.99/instance.dcm')).stdoutBytes.equals(onDisk));
  assert.ok((await unzip('-p', zipFile, 'manifest.json')).stdoutBytes.equals(manifest));
  assert.ok((await unzip('-p', zipFile, 'cases/c2/séries é/vol.dcm')).stdoutBytes.equals(mid));
  // A small archive is plain zip: no Zip64 end records.
  const bytes = readFileSync(zipFile);
  assert.equal(count(bytes.subarray(bytes.length - 22), 0x06054b50), 1);
  assert.equal(count(bytes, 0x06064b50), 0);
});

void test('70 000 entries: Zip64 end records, every entry listed and tested', async () => {
  const n = 70_000;
  const entries = function* (): Generator<ZipEntry> {
    for (let i = 0; i < n; i++) yield { name: `cases/${i % 97}/${i}.dcm`, bytes: Buffer.from(`instance ${i}\n`) };
  };
  const zipFile = join(dir, 'many.zip');
  const t0 = performance.now();
  const len = await writeSparse(zipStream(entries()), zipFile);
  const writeMs = performance.now() - t0;
  assert.equal(len, zipSizeBytes([...entries()].map((e) => ({ name: e.name, sizeBytes: e.bytes!.length }))));
  const bytes = readFileSync(zipFile);
  // Zip64 end record, its locator, then the classic end record with the 0xFFFF marker.
  assert.equal(bytes.readUInt32LE(len - 22 - 20 - 56), 0x06064b50);
  assert.equal(bytes.readBigUInt64LE(len - 22 - 20 - 56 + 32), BigInt(n));
  assert.equal(bytes.readUInt32LE(len - 22 - 20), 0x07064b50);
  assert.equal(bytes.readUInt16LE(len - 22 + 10), 0xffff);
  const t = await unzip('-t', zipFile);
  assert.match(t.stdout, /No errors detected in compressed data/);
  assert.equal((t.stdout.match(/ {4}testing: /g) ?? []).length, n);
  const l = await unzip('-l', zipFile);
  assert.match(l.stdout, new RegExp(`\\s${n} files\\s*$`));
  assert.equal((await unzip('-p', zipFile, `cases/${69_851 % 97}/69851.dcm`)).stdout, 'instance 69851\n');
  assert.ok(writeMs < 30_000, `${writeMs.toFixed(0)} ms to write`);
});

void test('an entry over 4 GiB and offsets past 4 GiB (Zip64 fields), on sparse files', async () => {
  const bigFile = join(dir, 'big.raw');
  const bigSize = 4 * 1024 ** 3 + 5 * 1024 * 1024 + 3;
  // A sparse file: zeros cost no disk; a tail of data so the CRC is not that of zeros alone.
  writeFileSync(bigFile, '');
  truncateSync(bigFile, bigSize - 4);
  appendFileSync(bigFile, 'tail');
  assert.equal(statSync(bigFile).size, bigSize);
  const entries: ZipEntry[] = [
    { name: 'first.txt', bytes: Buffer.from('first\n') },
    { name: 'volume/big.raw', path: bigFile },
    { name: 'after.txt', bytes: Buffer.from('after the big one\n') },
  ];
  const zipFile = join(dir, 'big.zip');
  const len = await writeSparse(zipStream(entries), zipFile);
  assert.equal(len, zipSizeBytes([
    { name: 'first.txt', sizeBytes: 6 },
    { name: 'volume/big.raw', sizeBytes: bigSize },
    { name: 'after.txt', sizeBytes: 18 },
  ]));
  // Where things are: first.txt's header (30 + 9) and data (6) and descriptor (16); the big
  // entry's header with its Zip64 field (30 + 14 + 20), data, 24-byte descriptor; then after.txt.
  const bigHeaderAt = 30 + 9 + 6 + 16;
  const bigDataAt = bigHeaderAt + 30 + 14 + 20;
  const afterAt = bigDataAt + bigSize + 24;
  assert.ok(afterAt > 2 ** 32);

  // unzip finds the entry past 4 GiB through the Zip64 offset, and tests it.
  assert.match((await unzip('-t', zipFile, 'first.txt', 'after.txt')).stdout, /No errors detected in .* for the 2 files tested/);
  assert.equal((await unzip('-p', zipFile, 'after.txt')).stdout, 'after the big one\n');
  const l = await unzip('-l', zipFile);
  assert.match(l.stdout, new RegExp(`\\s${bigSize}\\s.*volume/big\\.raw`));
  const after = await unzip('-Z', '-v', zipFile, 'after.txt');
  assert.match(after.stdout, new RegExp(`offset of local header from start of archive:\\s+${afterAt}\\s`));
  // The big entry: Zip64, its CRC as computed independently from the file, and the 8-byte
  // descriptor right after its data. (A full `unzip -t` of 4 GiB takes Info-ZIP ~40 s; the
  // checks above cover what it would.)
  const big = await unzip('-Z', '-v', zipFile, 'volume/big.raw');
  assert.match(big.stdout, /minimum software version required to extract:\s+4\.5/);
  assert.match(big.stdout, new RegExp(`uncompressed size:\\s+${bigSize} bytes`));
  const crc = /32-bit CRC value \(hex\):\s+([0-9a-f]{8})/.exec(big.stdout)?.[1];
  const fh = await open(bigFile, 'r');
  let expectedCrc = 0;
  try {
    const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
    for (let pos = 0; pos < bigSize; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      expectedCrc = zlib.crc32(buf.subarray(0, bytesRead), expectedCrc);
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  assert.equal(crc, expectedCrc.toString(16).padStart(8, '0'));
  const zh = await open(zipFile, 'r');
  try {
    const d = Buffer.alloc(24);
    await zh.read(d, 0, 24, bigDataAt + bigSize);
    assert.deepEqual([d.readUInt32LE(0), d.readUInt32LE(4), d.readBigUInt64LE(8), d.readBigUInt64LE(16)], [0x08074b50, expectedCrc, BigInt(bigSize), BigInt(bigSize)]);
    const tail = Buffer.alloc(4);
    await zh.read(tail, 0, 4, bigDataAt + bigSize - 4);
    assert.equal(tail.toString(), 'tail');
  } finally {
    await zh.close();
  }
});

void test('names: relative, forward slashes, no dot segments; duplicates and file/folder clashes refused', async () => {
  for (const bad of ['', '/etc/passwd', '../up.dcm', 'a/../../b', 'a/./b', 'a//b', 'a/', 'a\\b', 'C:/x', 'c:x', 'a\u0000b', 'new\nline', '\ud800x', 'x'.repeat(70_000)]) {
    throwsWith(() => validateZipEntryName(bad), 'ECO3D_ERR_BAD_REQUEST', 'zip entry name');
  }
  for (const good of ['a', 'a/b/c.dcm', 'é/ü.dcm', '..a/b..', '.hidden', 'a b/c']) assert.equal(validateZipEntryName(good), good);

  const bytes = Buffer.from('x');
  const e1 = await streamError(zipStream([{ name: 'a.dcm', bytes }, { name: '../a.dcm', bytes }]));
  assert.equal(e1.code, 'ECO3D_ERR_BAD_REQUEST');
  assert.match(e1.message, /"\.\.\/a\.dcm": has a '\.\.' segment/);
  assert.match((await streamError(zipStream([{ name: 'a.dcm', bytes }, { name: 'a.dcm', bytes }]))).message, /appears twice/);
  assert.match((await streamError(zipStream([{ name: 'a/b', bytes }, { name: 'a', bytes }]))).message, /is also a folder/);
  assert.match((await streamError(zipStream([{ name: 'a', bytes }, { name: 'a/b', bytes }]))).message, /inside "a", which is a file/);
  assert.match((await streamError(zipStream([{ name: 'a', bytes, path: '/etc/hostname' }]))).message, /exactly one of path and bytes/);
  assert.match((await streamError(zipStream([{ name: 'a' }]))).message, /exactly one of path and bytes/);
  throwsWith(() => zipSizeBytes([{ name: 'a', sizeBytes: 1 }, { name: 'a', sizeBytes: 1 }]), 'ECO3D_ERR_BAD_REQUEST', 'appears twice');
  throwsWith(() => zipSizeBytes([{ name: 'a', sizeBytes: -1 }]), 'ECO3D_ERR_BAD_REQUEST', 'sizeBytes');
});

void test('a file that is missing, of the wrong size, or changes while exported fails the stream', async () => {
  const missing = await streamError(zipStream([{ name: 'gone.dcm', path: join(dir, 'no-such-file') }]));
  assert.equal(missing.code, 'ECO3D_ERR_BAD_FILE');
  assert.equal(missing.message, 'zip entry "gone.dcm": its file cannot be opened (ENOENT)');
  const f = join(dir, 'sized.bin');
  writeFileSync(f, randomBytes(1000));
  const wrong = await streamError(zipStream([{ name: 's.bin', path: f, sizeBytes: 999 }]));
  assert.deepEqual([wrong.code, wrong.message], ['ECO3D_ERR_BAD_FILE', 'zip entry "s.bin": is 1000 bytes, expected 999']);
  assert.equal((await streamError(zipStream([{ name: 's.bin', bytes: new Uint8Array(3), sizeBytes: 4 }]))).code, 'ECO3D_ERR_BAD_FILE');
  assert.equal((await streamError(zipStream([{ name: 'dir', path: dir }]))).code, 'ECO3D_ERR_BAD_FILE');

  // The file changes after its first chunk went out (the stream reads ahead only ~16 KiB).
  const change = async (how: (file: string) => void): Promise<Eco3dError> => {
    const file = join(dir, 'changing.bin');
    writeFileSync(file, randomBytes(1024 * 1024));
    const s = zipStream([{ name: 'c.bin', path: file }], { readChunkBytes: 1024 });
    let changed = false;
    try {
      for await (const _ of s) {
        if (!changed) {
          how(file);
          changed = true;
        }
      }
    } catch (err) {
      assert.ok(err instanceof Eco3dError);
      return err;
    }
    assert.fail('the stream did not fail');
  };
  assert.match((await change((file) => appendFileSync(file, 'more'))).message, /grew while it was exported/);
  assert.match((await change((file) => truncateSync(file, 500_000))).message, /shrank while it was exported \(500000 of 1048576 bytes\)/);
});

void test('entries are pulled only as the consumer reads; destroying the stream stops the source', async () => {
  let pulled = 0;
  let sourceClosed!: () => void;
  const closed = new Promise<void>((resolve) => (sourceClosed = resolve));
  const source = async function* (): AsyncGenerator<ZipEntry> {
    try {
      for (let i = 0; i < 1000; i++) {
        pulled++;
        yield { name: `e${i}.bin`, bytes: new Uint8Array(1024 * 1024) };
      }
    } finally {
      sourceClosed();
    }
  };
  const s = zipStream(source());
  let chunks = 0;
  for await (const _ of s) {
    chunks++;
    // 1 MiB entries against a 16 KiB read-ahead: at most the entry being sent and the next.
    assert.ok(pulled <= 2, `pulled ${pulled} entries for chunk ${chunks}`);
    if (chunks === 1) break; // destroys the stream
  }
  await closed;
  assert.ok(s.destroyed);
  assert.equal(pulled, 1);
});

void test('property: zipSizeBytes is the length written, and unzip tests every archive', async () => {
  const arbEntries = fc.uniqueArray(
    fc.record({
      name: fc.stringMatching(/^[a-z0-9é]{1,8}(\/[a-z0-9 ]{1,8}){0,2}$/),
      size: fc.oneof(fc.constant(0), fc.nat({ max: 300 }), fc.nat({ max: 200_000 })),
    }),
    { selector: (e) => e.name.split('/')[0]!, maxLength: 12 },
  );
  let k = 0;
  await fc.assert(
    fc.asyncProperty(arbEntries, async (list) => {
      const entries = list.map((e) => ({ name: e.name, bytes: randomBytes(e.size) }));
      const out = await collect(zipStream(entries));
      assert.equal(out.length, zipSizeBytes(list.map((e) => ({ name: e.name, sizeBytes: e.size }))));
      if (entries.length === 0) return; // unzip calls an empty archive a warning
      const file = join(dir, `p${k++}.zip`);
      writeFileSync(file, out);
      assert.match((await unzip('-t', file)).stdout, /No errors detected/);
      for (const e of entries.slice(0, 2)) assert.ok((await unzip('-p', file, e.name)).stdoutBytes.equals(e.bytes));
      rmSync(file);
    }),
    { numRuns: 25 },
  );
});

void test('the JavaScript CRC-32 fallback agrees with zlib, chunk by chunk', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 5 }), (chunks) => {
      let a = 0;
      let b = 0;
      for (const c of chunks) {
        a = crc32Fallback(c, a);
        b = zlib.crc32(c, b);
      }
      assert.equal(a, b);
    }),
  );
  assert.equal(crc32Fallback(Buffer.from('123456789'), 0), 0xcbf43926); // the standard check value
});

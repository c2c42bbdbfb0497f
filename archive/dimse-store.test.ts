// The C-STORE SCU against dcmtk's storescp (Debian `dcmtk`, required: a missing tool fails, never
// skips), in bit-preserving mode so that what it writes is our data set byte for byte.
// Against Orthanc's SCP: test/orthanc.e2e.test.ts.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { buildTestStudy, freePort } from '../test/orthanc.ts';
import { cStoreInstances } from './dimse-store.ts';

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eco3d-dimse-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface StoreScp {
  readonly port: number;
  readonly outDir: string;
  log(): string;
  stop(): Promise<void>;
}

/** storescp on a free port; resolves once it accepts TCP connections. */
async function startStoreScp(name: string, extra: string[] = []): Promise<StoreScp> {
  const outDir = join(dir, name);
  await mkdir(outDir);
  const port = await freePort();
  let log = '';
  const p: ChildProcess = spawn('storescp', ['-od', outDir, '+B', '-aet', 'STORESCP', ...extra, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout?.on('data', (c: Buffer) => (log += c.toString()));
  p.stderr?.on('data', (c: Buffer) => (log += c.toString()));
  const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
  const spawnError = new Promise<never>((_resolve, reject) => p.once('error', (err) => reject(new Error(`storescp could not run (is dcmtk installed?): ${err.message}`))));
  spawnError.catch(() => undefined);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await Promise.race([
      new Promise<boolean>((resolve) => {
        const s: Socket = connect({ host: '127.0.0.1', port });
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      }),
      spawnError,
    ]);
    if (up) break;
    if (p.exitCode !== null || Date.now() > deadline) throw new Error(`storescp did not start:\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    port,
    outDir,
    log: () => log,
    stop: async () => {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
      await exited;
    },
  };
}

/** The data set of a Part-10 file: what follows the File Meta Information group. */
function dataset(bytes: Uint8Array): Buffer {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.equal(b.toString('latin1', 128, 132), 'DICM');
  assert.equal(b.readUInt32LE(132), 0x00000002, '(0002,0000) first'); // group 2, element 0
  return b.subarray(144 + b.readUInt32LE(140));
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await p.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof Eco3dError, `an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.match(err.message, message);
}

test('C-STORE to storescp: a volume, B-mode frames and a report in one association, fragmented to a 4 kB PDU, stored byte for byte', async () => {
  const scp = await startStoreScp('ok', ['-pdu', '4096']);
  try {
    const study = buildTestStudy({ volumes: [[48, 40, 32]], multiframes: [{ frames: 5, width: 40, height: 30 }], reports: 1 });
    const files: Array<string | Uint8Array> = [];
    for (const [i, inst] of study.instances.entries()) {
      // Files and buffers both.
      if (i % 2 === 0) {
        const f = join(dir, `${inst.sopInstanceUid}.dcm`);
        await writeFile(f, inst.bytes);
        files.push(f);
      } else {
        files.push(inst.bytes);
      }
    }
    const results = await cStoreInstances({ host: '127.0.0.1', port: scp.port, calledAet: 'STORESCP', callingAet: 'ECO3D-TEST' }, files);
    assert.deepEqual(results.map((r) => [r.sopInstanceUid, r.status]), study.instances.map((i) => [i.sopInstanceUid, 0]));
    const written = await readdir(scp.outDir);
    for (const inst of study.instances) {
      const name = written.find((w) => w.endsWith(`.${inst.sopInstanceUid}`));
      assert.ok(name !== undefined, `storescp wrote ${inst.sopInstanceUid} (has ${written.join(', ')})`);
      assert.ok(dataset(await readFile(join(scp.outDir, name))).equals(dataset(inst.bytes)), `the data set of ${inst.kind} arrives byte for byte`);
    }
  } finally {
    await scp.stop();
  }
});

test('an unsupported SOP class is refused at negotiation and named; a refused association and an abort are upstream errors', async () => {
  const scp = await startStoreScp('strict');
  const refusing = await startStoreScp('refuse', ['--refuse']);
  const aborting = await startStoreScp('abort', ['--abort-after']);
  try {
    const sr = buildTestStudy({ volumes: [[8, 8, 2]], multiframes: [], reports: 1 }).instances.find((i) => i.kind === 'sr')!;
    // Same length as the Comprehensive 3D SR class UID, so that the file stays well-formed.
    const unknownClass = '1.2.826.0.1.3680043.9.7777.88';
    assert.equal(unknownClass.length, '1.2.840.10008.5.1.4.1.1.88.34'.length);
    const odd = Buffer.from(Buffer.from(sr.bytes).toString('latin1').replaceAll('1.2.840.10008.5.1.4.1.1.88.34', unknownClass), 'latin1');
    await rejectsWith(
      cStoreInstances({ host: '127.0.0.1', port: scp.port, calledAet: 'STORESCP' }, [odd]),
      'ECO3D_ERR_UPSTREAM',
      new RegExp(`instance ${sr.sopInstanceUid.replaceAll('.', '\\.')} not sent: SOP class ${unknownClass.replaceAll('.', '\\.')} .* refused \\(abstract-syntax-not-supported\\)`),
    );
    await rejectsWith(cStoreInstances({ host: '127.0.0.1', port: refusing.port, calledAet: 'STORESCP' }, [sr.bytes]), 'ECO3D_ERR_UPSTREAM', /association rejected/);
    await rejectsWith(cStoreInstances({ host: '127.0.0.1', port: aborting.port, calledAet: 'STORESCP' }, [sr.bytes]), 'ECO3D_ERR_UPSTREAM', new RegExp(`the peer aborted the association while storing ${sr.sopInstanceUid.replaceAll('.', '\\.')}`));
  } finally {
    await Promise.all([scp.stop(), refusing.stop(), aborting.stop()]);
  }
});

test('a peer that never answers: ECO3D_ERR_TIMEOUT; nobody listening: upstream; not DICOM: bad file', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((s) => sockets.push(s));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const port = (silent.address() as { port: number }).port;
  try {
    const sr = buildTestStudy({ volumes: [[8, 8, 2]], multiframes: [], reports: 1 }).instances.find((i) => i.kind === 'sr')!;
    await rejectsWith(cStoreInstances({ host: '127.0.0.1', port, calledAet: 'PACS' }, [sr.bytes], { timeoutMs: 300 }), 'ECO3D_ERR_TIMEOUT', /not done within 300 ms/);
    await rejectsWith(cStoreInstances({ host: '127.0.0.1', port: 1, calledAet: 'PACS' }, [sr.bytes]), 'ECO3D_ERR_UPSTREAM', /ECONNREFUSED/);
    await rejectsWith(cStoreInstances({ host: '127.0.0.1', port, calledAet: 'PACS' }, [new Uint8Array(200)]), 'ECO3D_ERR_BAD_FILE', /no DICM prefix/);
    const before = sockets.length;
    await assert.rejects(cStoreInstances({ host: '127.0.0.1', port, calledAet: 'PACS' }, [join(dir, 'gone.dcm')]), { code: 'ENOENT' });
    assert.equal(sockets.length, before, 'nothing sent for a missing file');
    await assert.rejects(cStoreInstances({ host: '127.0.0.1', port, calledAet: 'A\\B' }, [sr.bytes]), /AE title/);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  }
});

// Signed plugin packages: a round trip, then every way a package can be tampered with or crafted
// to attack the unpacker, each refused with its code and a reason that names the problem.
// Hostile ZIPs are built by hand with fflate (zipSync, or the streaming Zip for duplicates) and
// by patching header fields, so each test exercises exactly one defect.
// Duplicate plugin versions are the registry's business (a later brick), not the package's.
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { strToU8, unzipSync, Zip, ZipPassThrough, zipSync, type Zippable } from 'fflate';
import { Eco3dError, type ErrorCode } from '../protocols/index.ts';
import type { PluginManifestInput } from './manifest.ts';
import { digestList, generateDeveloperKey, normalizePublicKey, packagePathProblem, packPlugin, PACKAGE_LIMITS, verifyPackage } from './package.ts';

const MANIFEST: PluginManifestInput = {
  id: 'com.example.lesion-volume',
  name: 'Lesion volume',
  version: '1.0.0',
  vendor: { name: 'Example Medical' },
  description: 'Segments the largest hypoechoic lesion.',
  kind: 'analysis',
  tier: 'research',
  scopes: ['study:deidentified:read', 'results:write'],
  pricing: { model: 'per-use', amountCents: 250 },
  entry: 'dist/main.mjs',
};
const MAIN = 'export default async function run(input) { return { volumeMl: 1.5 }; }\n';

let work: string;
let pluginDir: string;
let key: { publicKey: string; privateKeyPem: string };
let privateKey: KeyObject;
let packed: Uint8Array;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'eco3d-pkg-'));
  pluginDir = await makePluginDir('plugin');
  key = generateDeveloperKey();
  privateKey = createPrivateKey(key.privateKeyPem);
  packed = await packPlugin(pluginDir, privateKey);
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function makePluginDir(name: string, manifest: unknown = MANIFEST): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(path.join(dir, 'dist'), { recursive: true });
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  await writeFile(path.join(dir, 'dist', 'main.mjs'), MAIN);
  await writeFile(path.join(dir, 'README.md'), '# Lesion volume\n');
  return dir;
}

/** Unpacks with fflate (for tests: our verifier never trusts this view) and rezips after `edit`. */
function repack(bytes: Uint8Array, edit: (files: Record<string, Uint8Array>) => void): Uint8Array {
  const files = fflateUnzip(bytes);
  edit(files);
  return zipSync(files);
}
/** fflate's own reader: fine for rebuilding our own valid packages in tests. */
function fflateUnzip(bytes: Uint8Array): Record<string, Uint8Array> {
  return unzipSync(bytes);
}

/** A package signed properly over `files` (so only the defect under test is present). */
function signedZip(files: Record<string, Uint8Array>, signer: KeyObject = privateKey): Zippable {
  const map = new Map(Object.entries(files));
  const signature = sign(null, Buffer.from(digestList(map), 'utf8'), signer);
  const spki = createPublicKey(signer).export({ format: 'der', type: 'spki' });
  const sig = { algorithm: 'ed25519', publicKey: spki.subarray(12).toString('base64'), signature: signature.toString('base64') };
  return { ...files, 'SIGNATURE.json': strToU8(JSON.stringify(sig)) };
}
function baseFiles(): Record<string, Uint8Array> {
  return { 'manifest.json': strToU8(JSON.stringify(MANIFEST)), 'dist/main.mjs': strToU8(MAIN) };
}

function assertRefused(fn: () => unknown, code: ErrorCode, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof Eco3dError, `not an Eco3dError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, reason);
    return true;
  });
}

test('round trip: pack, verify, content and identity come back', () => {
  const v = verifyPackage(packed, { trustedKeys: [key.publicKey] });
  assert.equal(v.manifest.id, 'com.example.lesion-volume');
  assert.equal(v.manifest.limits.memoryMb, 256);
  assert.deepEqual([...v.files.keys()].sort(), ['README.md', 'dist/main.mjs', 'manifest.json']);
  assert.equal(new TextDecoder().decode(v.files.get('dist/main.mjs')), MAIN);
  assert.equal(v.publicKey, key.publicKey);
  assert.match(v.digest, /^[0-9a-f]{64}$/);
  assert.equal(Buffer.from(key.publicKey, 'base64').length, 32);
});

test('packing is reproducible, and the digest does not depend on the ZIP container', async () => {
  const again = await packPlugin(pluginDir, privateKey);
  assert.deepEqual(Buffer.from(again), Buffer.from(packed));
  // The same files stored instead of deflated: a different ZIP, the same signed content.
  const files = fflateUnzip(packed);
  const stored: Zippable = {};
  for (const [p, d] of Object.entries(files)) stored[p] = [d, { level: 0 }];
  const restored = zipSync(stored);
  assert.notDeepEqual(Buffer.from(restored), Buffer.from(packed));
  assert.equal(verifyPackage(restored).digest, verifyPackage(packed).digest);
});

test('a trusted key may be given in SPKI form; an untrusted key is refused', () => {
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(key.publicKey, 'base64')]).toString('base64');
  assert.equal(normalizePublicKey(spki), key.publicKey);
  assert.equal(verifyPackage(packed, { trustedKeys: [spki] }).publicKey, key.publicKey);
  const other = generateDeveloperKey();
  assertRefused(() => verifyPackage(packed, { trustedKeys: [other.publicKey] }), 'ECO3D_ERR_FORBIDDEN', /not a trusted key/);
  assertRefused(() => verifyPackage(packed, { trustedKeys: [] }), 'ECO3D_ERR_FORBIDDEN', /not a trusted key/);
});

test('tampering after signing is refused as a bad signature', () => {
  const cases: Array<[string, (f: Record<string, Uint8Array>) => void]> = [
    ['a changed byte in a file', (f) => { const d = f['dist/main.mjs']!.slice(); d[0] = d[0]! ^ 1; f['dist/main.mjs'] = d; }],
    ['an added file', (f) => { f['dist/extra.mjs'] = strToU8('fetch("https://evil.example")'); }],
    ['a removed file', (f) => { delete f['README.md']; }],
    ['a renamed file', (f) => { f['docs.md'] = f['README.md']!; delete f['README.md']; }],
    ['a changed manifest (a higher price)', (f) => { f['manifest.json'] = strToU8(JSON.stringify({ ...MANIFEST, pricing: { model: 'per-use', amountCents: 99_999 } })); }],
  ];
  for (const [label, edit] of cases) {
    const bytes = repack(packed, edit);
    assert.throws(() => verifyPackage(bytes), (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_FORBIDDEN' && /signature does not match/.test(err.message), label);
  }
});

test('a signature made with another key than the one it names is refused', () => {
  const { privateKey: otherKey } = generateKeyPairSync('ed25519');
  const forged = repack(packed, (f) => {
    const sig = JSON.parse(new TextDecoder().decode(f['SIGNATURE.json'])) as Record<string, string>;
    sig.signature = sign(null, Buffer.from(digestList(new Map(Object.entries(f))), 'utf8'), otherKey).toString('base64');
    f['SIGNATURE.json'] = strToU8(JSON.stringify(sig));
  });
  assertRefused(() => verifyPackage(forged), 'ECO3D_ERR_FORBIDDEN', /signature does not match/);
  // Re-signed whole by another key: valid, but not the developer's, so trust refuses it.
  const resigned = zipSync(signedZip(baseFiles(), otherKey));
  assert.doesNotThrow(() => verifyPackage(resigned));
  assertRefused(() => verifyPackage(resigned, { trustedKeys: [key.publicKey] }), 'ECO3D_ERR_FORBIDDEN', /not a trusted key/);
});

test('a missing or malformed SIGNATURE.json is refused', () => {
  assertRefused(() => verifyPackage(repack(packed, (f) => { delete f['SIGNATURE.json']; })), 'ECO3D_ERR_FORBIDDEN', /unsigned/);
  assertRefused(() => verifyPackage(repack(packed, (f) => { f['SIGNATURE.json'] = strToU8('{'); })), 'ECO3D_ERR_FORBIDDEN', /not valid JSON/);
  assertRefused(
    () => verifyPackage(repack(packed, (f) => { f['SIGNATURE.json'] = strToU8(JSON.stringify({ algorithm: 'rsa', publicKey: key.publicKey, signature: 'x' })); })),
    'ECO3D_ERR_FORBIDDEN',
    /SIGNATURE\.json\.algorithm/,
  );
});

test('a truncated or corrupt ZIP is refused as a bad file', () => {
  assertRefused(() => verifyPackage(packed.subarray(0, packed.length - 10)), 'ECO3D_ERR_BAD_FILE', /not a valid ZIP/);
  assertRefused(() => verifyPackage(packed.subarray(0, Math.floor(packed.length / 2))), 'ECO3D_ERR_BAD_FILE', /not a valid ZIP/);
  assertRefused(() => verifyPackage(new Uint8Array(0)), 'ECO3D_ERR_BAD_FILE', /not a valid ZIP/);
  // Flip a byte inside the first entry's compressed data: the inflater or the CRC catches it.
  const damaged = packed.slice();
  damaged[40] = damaged[40]! ^ 0xff;
  assertRefused(() => verifyPackage(damaged), 'ECO3D_ERR_BAD_FILE', /deflate|CRC|inflates|ZIP/);
});

test('entries whose path escapes the package are refused, naming the reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['../x', /escapes the package/],
    ['dist/../../x', /escapes the package/],
    ['/etc/passwd', /is absolute/],
    ['a\\b', /backslash/],
    ['C:/Windows/x.js', /drive letter/],
    ['a\0b', /NUL/],
    ['.env', /hidden/],
    ['dist/', /directory entry/],
    ['caf\u00e9.js', /not a portable path/],
  ];
  for (const [name, reason] of cases) {
    const bytes = zipSync(signedZip({ ...baseFiles(), [name]: strToU8('x') }));
    assert.throws(() => verifyPackage(bytes), (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_FILE' && reason.test(err.message), JSON.stringify(name));
  }
  assert.equal(packagePathProblem('dist/main.mjs'), undefined);
});

test('duplicate entries, also differing only in case, are refused', () => {
  const zipWith = (names: string[]): Uint8Array => {
    const chunks: Uint8Array[] = [];
    const z = new Zip((err, chunk) => {
      if (err !== null) throw err;
      chunks.push(chunk);
    });
    const files = signedZip(baseFiles());
    for (const [p, d] of Object.entries(files)) {
      const f = new ZipPassThrough(p);
      z.add(f);
      f.push(d as Uint8Array, true);
    }
    for (const n of names) {
      const f = new ZipPassThrough(n);
      z.add(f);
      f.push(strToU8('shadow'), true);
    }
    z.end();
    return Buffer.concat(chunks);
  };
  assertRefused(() => verifyPackage(zipWith(['dist/main.mjs'])), 'ECO3D_ERR_BAD_FILE', /duplicate entry dist\/main\.mjs/);
  assertRefused(() => verifyPackage(zipWith(['Manifest.json'])), 'ECO3D_ERR_BAD_FILE', /differ only in case/);
});

test('a symlink entry is refused', () => {
  const S_IFLNK = 0o120000;
  const files = signedZip(baseFiles()) as Record<string, Uint8Array>;
  const bytes = zipSync({ ...files, 'dist/link.mjs': [strToU8('/etc/passwd'), { os: 3, attrs: ((S_IFLNK | 0o777) << 16) >>> 0 }] });
  assertRefused(() => verifyPackage(bytes), 'ECO3D_ERR_BAD_FILE', /dist\/link\.mjs is a symlink/);
});

test('an oversized package and too many files are refused', () => {
  assertRefused(() => verifyPackage(new Uint8Array(PACKAGE_LIMITS.maxBytes + 1)), 'ECO3D_ERR_BAD_FILE', /above the 52428800-byte limit/);
  assertRefused(() => verifyPackage(packed, { maxBytes: packed.length - 1 }), 'ECO3D_ERR_BAD_FILE', /above the/);
  const many: Record<string, Uint8Array> = baseFiles();
  for (let i = 0; i < PACKAGE_LIMITS.maxFiles; i++) many[`data/f${i}.txt`] = strToU8(String(i));
  assertRefused(() => verifyPackage(zipSync(signedZip(many), { level: 0 })), 'ECO3D_ERR_BAD_FILE', /2003 files, above the limit of 2000/);
  assertRefused(() => verifyPackage(packed, { maxFiles: 2 }), 'ECO3D_ERR_BAD_FILE', /4 files, above the limit of 2/);
});

/** Offsets of the central directory headers (signature PK\1\2). */
function centralHeaders(bytes: Uint8Array): number[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 4 <= bytes.length; i++) if (dv.getUint32(i, true) === 0x02014b50) out.push(i);
  return out;
}
function nameAt(bytes: Uint8Array, cd: number): string {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return new TextDecoder().decode(bytes.subarray(cd + 46, cd + 46 + dv.getUint16(cd + 28, true)));
}

test('zip bombs: the total inflated size is capped, and an entry may not inflate past its declared size', () => {
  // 8 MiB of zeros compress to a few KiB.
  const zeros = new Uint8Array(8 * 1024 * 1024);
  const bomb = zipSync(signedZip({ ...baseFiles(), 'model.bin': zeros }));
  assert.ok(bomb.length < 64 * 1024, `bomb is ${bomb.length} bytes`);
  assertRefused(() => verifyPackage(bomb, { maxUncompressedBytes: 4 * 1024 * 1024 }), 'ECO3D_ERR_BAD_FILE', /would inflate to \d+ bytes, above the 4194304-byte limit/);
  assert.doesNotThrow(() => verifyPackage(bomb)); // under the default cap it is just a big file

  // Declared 4 GiB - 1 against the default cap: refused before anything is inflated.
  const huge = bomb.slice();
  const dv = new DataView(huge.buffer);
  const cdModel = centralHeaders(huge).find((o) => nameAt(huge, o) === 'model.bin')!;
  dv.setUint32(cdModel + 24, 0xffffffff - 1, true);
  assertRefused(() => verifyPackage(huge), 'ECO3D_ERR_BAD_FILE', /above the 268435456-byte limit/);

  // Declared 1 KiB, actually 8 MiB: the inflater stops at the declared size.
  const liar = bomb.slice();
  new DataView(liar.buffer).setUint32(cdModel + 24, 1024, true);
  assertRefused(() => verifyPackage(liar), 'ECO3D_ERR_BAD_FILE', /model\.bin inflates beyond its declared 1024 bytes/);
});

test('overlapping entries (one stored region claimed by two entries) and disagreeing names are refused', () => {
  const make = (): Uint8Array => zipSync(signedZip({ ...baseFiles(), 'a.bin': strToU8('aaaa'), 'b.bin': strToU8('bbbb') }), { level: 0 });
  const find = (bytes: Uint8Array, name: string): number => centralHeaders(bytes).find((o) => nameAt(bytes, o) === name)!;
  // a's declared (stored) size grows to swallow b's local header: the regions overlap.
  const grown = make();
  const dv = new DataView(grown.buffer);
  const a = find(grown, 'a.bin');
  const b = find(grown, 'b.bin');
  const span = dv.getUint32(b + 42, true) - dv.getUint32(a + 42, true);
  dv.setUint32(a + 20, span, true);
  dv.setUint32(a + 24, span, true);
  assertRefused(() => verifyPackage(grown), 'ECO3D_ERR_BAD_FILE', /entries a\.bin and b\.bin overlap/);
  // b's central entry pointed at a's local header: the two headers name different files.
  const pointed = make();
  const dv2 = new DataView(pointed.buffer);
  dv2.setUint32(find(pointed, 'b.bin') + 42, dv2.getUint32(find(pointed, 'a.bin') + 42, true), true);
  assertRefused(() => verifyPackage(pointed), 'ECO3D_ERR_BAD_FILE', /differs from "b\.bin"/);
});

test('a missing manifest, an invalid manifest, an unknown scope, a missing entry module', () => {
  const files = baseFiles();
  delete files['manifest.json'];
  assertRefused(() => verifyPackage(zipSync(signedZip(files))), 'ECO3D_ERR_BAD_FILE', /manifest\.json is missing/);
  const withManifest = (m: unknown): Uint8Array => zipSync(signedZip({ ...baseFiles(), 'manifest.json': strToU8(JSON.stringify(m)) }));
  assertRefused(() => verifyPackage(withManifest({ ...MANIFEST, scopes: ['study:identified:read'] })), 'ECO3D_ERR_BAD_REQUEST', /manifest\.scopes\.0/);
  assertRefused(() => verifyPackage(withManifest({ ...MANIFEST, tier: 'diagnostic' })), 'ECO3D_ERR_BAD_REQUEST', /manifest\.certificate/);
  assertRefused(() => verifyPackage(withManifest({ ...MANIFEST, shellCommand: 'rm -rf /' })), 'ECO3D_ERR_BAD_REQUEST', /manifest/);
  assertRefused(() => verifyPackage(withManifest({ ...MANIFEST, entry: 'dist/other.mjs' })), 'ECO3D_ERR_BAD_FILE', /entry module dist\/other\.mjs .* is missing/);
  assertRefused(() => verifyPackage(zipSync(signedZip({ ...baseFiles(), 'manifest.json': strToU8('not json') }))), 'ECO3D_ERR_BAD_FILE', /manifest\.json is not valid/);
});

test('packPlugin refuses symlinks, hidden files, a signature of its own, a bad manifest and a wrong key', async () => {
  const withLink = await makePluginDir('with-link');
  await symlink('/etc/passwd', path.join(withLink, 'dist', 'passwd'));
  await assert.rejects(packPlugin(withLink, privateKey), (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_FILE' && /dist\/passwd: symlinks/.test(err.message));

  const withDirLink = await makePluginDir('with-dir-link');
  await symlink('/etc', path.join(withDirLink, 'etc'));
  await assert.rejects(packPlugin(withDirLink, privateKey), /etc: symlinks/);

  const withEnv = await makePluginDir('with-env');
  await writeFile(path.join(withEnv, '.env'), 'SECRET=1');
  await assert.rejects(packPlugin(withEnv, privateKey), /\.env: has a hidden/);

  const withSig = await makePluginDir('with-sig');
  await writeFile(path.join(withSig, 'SIGNATURE.json'), '{}');
  await assert.rejects(packPlugin(withSig, privateKey), /SIGNATURE\.json is written by the packer/);

  const badManifest = await makePluginDir('bad-manifest', { ...MANIFEST, kind: 'live' });
  await assert.rejects(packPlugin(badManifest, privateKey), (err: unknown) => err instanceof Eco3dError && err.code === 'ECO3D_ERR_BAD_REQUEST');

  const noEntry = await makePluginDir('no-entry', { ...MANIFEST, entry: 'main.mjs' });
  await assert.rejects(packPlugin(noEntry, privateKey), /entry module main\.mjs/);

  const { privateKey: rsa } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  await assert.rejects(packPlugin(pluginDir, rsa), /Ed25519 private key/);
});

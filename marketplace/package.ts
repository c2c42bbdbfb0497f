// Signed plugin packages (issue 8): `packPlugin` turns a developer's directory into one signed
// file; `verifyPackage` is the gate a package passes before the registry stores it or a runner
// loads it. Nothing here writes to disk: a verified package is a Map of path → bytes.
//
// The format, version 1:
// - One ZIP file (stored or deflate entries only; no ZIP64, no encryption, no directory
//   entries, no symlinks or other special files) holding `manifest.json` at the root, the
//   plugin's files, and `SIGNATURE.json`.
// - Every path follows PACKAGE_PATH_PATTERN: relative, `/`-separated, segments of
//   [A-Za-z0-9._-] that do not start with a dot, at most 255 characters. Two paths that differ
//   only in case are duplicates (they would collide when unpacked on a case-insensitive disk).
// - SIGNATURE.json is `{"algorithm":"ed25519","publicKey":B64,"signature":B64}`; publicKey is
//   the raw 32-byte Ed25519 key or its SPKI DER form, both base64. The signature is Ed25519 over
//   the UTF-8 bytes of the *digest list*:
//       ECO3D-PLUGIN-PACKAGE/1\n
//       <sha256 hex>  <path>\n        one line per file except SIGNATURE.json, sorted by path
//   The header line binds the signature to this purpose and version (a developer key signs
//   nothing else that could be replayed as a package). Signing names and contents, not the ZIP
//   bytes, means any added, removed, renamed or changed file breaks the signature, while the ZIP
//   container itself (compression, timestamps) carries no trust.
// - A package's `digest` is the sha256 hex of its digest list: its identity in the registry.
//
// Verification order, and the error each step raises:
//  1. container (ECO3D_ERR_BAD_FILE): size limit, central directory, path rule, duplicates,
//     entry types, file count, declared and actual uncompressed sizes (zip bombs), CRC-32,
//     overlapping entries, manifest.json present;
//  2. signature (ECO3D_ERR_FORBIDDEN): SIGNATURE.json present and well-formed, Ed25519 valid
//     over the digest list, key in `trustedKeys` when given. A tampered file or manifest fails
//     here, before its content is parsed;
//  3. manifest (ECO3D_ERR_BAD_REQUEST from parseManifest, naming the field: a bad field or an
//     unknown scope), then the entry module present (ECO3D_ERR_BAD_FILE).
// Duplicate versions of a plugin are the registry's business, not the package's.
//
// The ZIP reader is our own (~150 lines) rather than fflate's `unzipSync`: unzipSync returns an
// object keyed by name, so duplicate entries silently collapse to one, and it exposes neither
// the external attributes (symlinks) nor a bound on inflated size. fflate still does the
// inflating (streamed in slices so a bomb is stopped after its declared size, not after it has
// filled memory) and the writing (zipSync).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { crc32 } from 'crc';
import { Inflate, zipSync, type Zippable } from 'fflate';
import { z } from 'zod';
import { Eco3dError } from '../protocols/index.ts';
import { entryModulePath, PACKAGE_PATH_PATTERN, parseManifest, type PluginManifest } from './manifest.ts';

export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'SIGNATURE.json';
export const DIGEST_LIST_HEADER = 'ECO3D-PLUGIN-PACKAGE/1';

export const PACKAGE_LIMITS = {
  /** The package file itself. */
  maxBytes: 50 * 1024 * 1024,
  maxFiles: 2000,
  /** All files inflated together: the zip-bomb cap. */
  maxUncompressedBytes: 256 * 1024 * 1024,
} as const;

export interface VerifyPackageOptions {
  /** Accepted developer keys (raw or SPKI, base64); when given, any other key is refused. */
  trustedKeys?: readonly string[];
  maxBytes?: number;
  maxFiles?: number;
  maxUncompressedBytes?: number;
}

export interface VerifiedPackage {
  manifest: PluginManifest;
  /** Every file of the package except SIGNATURE.json (manifest.json included), by path. */
  files: Map<string, Uint8Array>;
  /** The signer's raw 32-byte Ed25519 public key, base64. */
  publicKey: string;
  /** sha256 hex of the signed digest list. */
  digest: string;
}

// --- paths ---------------------------------------------------------------------------------

const PATH_RE = new RegExp(PACKAGE_PATH_PATTERN, 'u');
const MAX_PATH_CHARS = 255;

/** Why `name` is not an acceptable package path, or undefined when it is. */
export function packagePathProblem(name: string): string | undefined {
  // The specific reasons first, so the error says what the attack or mistake was.
  if (name.includes('\0')) return 'contains a NUL character';
  if (name.includes('\\')) return 'contains a backslash';
  if (/^[A-Za-z]:/u.test(name)) return 'starts with a drive letter';
  if (name.startsWith('/')) return 'is absolute';
  if (name.split('/').some((s) => s === '..')) return 'escapes the package (..)';
  if (name.endsWith('/')) return 'is a directory entry (the format has none)';
  if (name.length === 0 || name.length > MAX_PATH_CHARS) return `must have 1..${MAX_PATH_CHARS} characters`;
  if (name.split('/').some((s) => s.startsWith('.'))) return 'has a hidden (dot) segment';
  if (!PATH_RE.test(name)) return 'is not a portable path (segments of A-Z a-z 0-9 . _ -)';
  return undefined;
}

// --- keys ----------------------------------------------------------------------------------

// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE, AlgorithmIdentifier
// 1.3.101.112, BIT STRING of 32 bytes. Raw key = SPKI minus these 12 bytes.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

function forbidden(message: string, details?: Record<string, unknown>): Eco3dError {
  return new Eco3dError('ECO3D_ERR_FORBIDDEN', message, details === undefined ? undefined : { details });
}

/** Normalizes a base64 raw or SPKI Ed25519 public key to base64 raw, or undefined if it is neither. */
export function normalizePublicKey(b64: string): string | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/u.test(b64)) return undefined;
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length === 32) return bytes.toString('base64');
  if (bytes.length === 44 && bytes.subarray(0, 12).equals(ED25519_SPKI_PREFIX)) return bytes.subarray(12).toString('base64');
  return undefined;
}

function publicKeyObject(rawB64: string): KeyObject {
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(rawB64, 'base64')]), format: 'der', type: 'spki' });
}

function rawPublicKey(key: KeyObject): string {
  const spki = key.export({ format: 'der', type: 'spki' });
  return spki.subarray(ED25519_SPKI_PREFIX.length).toString('base64');
}

/** A new developer signing key: the public half (base64 raw) and the private half (PKCS#8 PEM). */
export function generateDeveloperKey(): { publicKey: string; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return { publicKey: rawPublicKey(publicKey), privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
}

/** Loads a PEM private key written by generateDeveloperKey. */
export function loadDeveloperKey(privateKeyPem: string): KeyObject {
  return createPrivateKey(privateKeyPem);
}

// --- the digest list -----------------------------------------------------------------------

function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The canonical text the signature covers (see the header). */
export function digestList(files: ReadonlyMap<string, Uint8Array>): string {
  const paths = [...files.keys()].filter((p) => p !== SIGNATURE_FILE).sort();
  return [DIGEST_LIST_HEADER, ...paths.map((p) => `${sha256Hex(files.get(p)!)}  ${p}`)].join('\n') + '\n';
}

// --- packing -------------------------------------------------------------------------------

// A fixed timestamp makes packing reproducible: the same directory and key give the same bytes.
const ZIP_MTIME = new Date('2000-01-01T00:00:00Z');

/**
 * Packs and signs the plugin in `dir`. Refuses (ECO3D_ERR_BAD_FILE) symlinks and special files,
 * paths that break the package path rule (hidden files such as .env or .git included), a
 * SIGNATURE.json of the developer's own, more than maxFiles files or maxUncompressedBytes bytes,
 * a missing manifest or entry module; an invalid manifest with ECO3D_ERR_BAD_REQUEST.
 */
export async function packPlugin(dir: string, privateKey: KeyObject): Promise<Uint8Array> {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'packPlugin needs an Ed25519 private key');
  }
  const root = path.resolve(dir);
  const files = new Map<string, Uint8Array>();
  let totalBytes = 0;
  const walk = async (rel: string): Promise<void> => {
    const entries = await readdir(path.join(root, rel), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const relPath = rel === '' ? e.name : `${rel}/${e.name}`;
      const abs = path.join(root, relPath);
      // lstat, not the dirent type alone: a symlink must be refused, never followed out of dir.
      const st = await lstat(abs);
      if (st.isSymbolicLink()) throw badFile(`${relPath}: symlinks are not allowed in a plugin package`);
      if (st.isDirectory()) {
        const problem = packagePathProblem(`${relPath}/x`);
        if (problem !== undefined) throw badFile(`${relPath}/: ${problem}`);
        await walk(relPath);
        continue;
      }
      if (!st.isFile()) throw badFile(`${relPath}: only regular files can be packed`);
      const problem = packagePathProblem(relPath);
      if (problem !== undefined) throw badFile(`${relPath}: ${problem}`);
      if (relPath === SIGNATURE_FILE) throw badFile(`${SIGNATURE_FILE} is written by the packer; remove it from ${dir}`);
      if (files.size >= PACKAGE_LIMITS.maxFiles) throw badFile(`more than ${PACKAGE_LIMITS.maxFiles} files`);
      totalBytes += st.size;
      if (totalBytes > PACKAGE_LIMITS.maxUncompressedBytes) throw badFile(`files total more than ${PACKAGE_LIMITS.maxUncompressedBytes} bytes`);
      files.set(relPath, new Uint8Array(await readFile(abs)));
    }
  };
  await walk('');
  checkCaseDuplicates([...files.keys()]);
  const manifestBytes = files.get(MANIFEST_FILE);
  if (manifestBytes === undefined) throw badFile(`${dir} has no ${MANIFEST_FILE}`);
  const manifest = parseManifest(parseJson(manifestBytes, MANIFEST_FILE));
  checkEntry(manifest, files);

  const list = digestList(files);
  const signature = sign(null, Buffer.from(list, 'utf8'), privateKey);
  const sigJson = { algorithm: 'ed25519', publicKey: rawPublicKey(createPublicKey(privateKey)), signature: signature.toString('base64') };
  const zippable: Zippable = {};
  for (const [p, data] of files) zippable[p] = [data, { mtime: ZIP_MTIME }];
  zippable[SIGNATURE_FILE] = [new TextEncoder().encode(JSON.stringify(sigJson, null, 2) + '\n'), { mtime: ZIP_MTIME }];
  const zip = zipSync(zippable, { level: 6 });
  if (zip.length > PACKAGE_LIMITS.maxBytes) throw badFile(`the package is ${zip.length} bytes, above the ${PACKAGE_LIMITS.maxBytes}-byte limit`);
  return zip;
}

// --- verifying -----------------------------------------------------------------------------

function badFile(message: string, details?: Record<string, unknown>): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_FILE', `plugin package: ${message}`, details === undefined ? undefined : { details });
}

function parseJson(bytes: Uint8Array, name: string): unknown {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown;
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `plugin package: ${name} is not valid UTF-8 JSON`, { cause: err });
  }
}

function checkCaseDuplicates(paths: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const p of paths) {
    const folded = p.toLowerCase();
    const prior = seen.get(folded);
    if (prior !== undefined) throw badFile(prior === p ? `duplicate entry ${p}` : `entries ${prior} and ${p} differ only in case`);
    seen.set(folded, p);
  }
}

function checkEntry(manifest: PluginManifest, files: ReadonlyMap<string, Uint8Array>): void {
  const entry = entryModulePath(manifest);
  if (entry !== undefined && !files.has(entry)) throw badFile(`the entry module ${entry} named in ${MANIFEST_FILE} is missing`);
}

const signatureSchema = z.strictObject({
  algorithm: z.literal('ed25519'),
  publicKey: z.string().max(100),
  signature: z.string().regex(/^[A-Za-z0-9+/]{86}==$/u, 'must be a base64 64-byte signature'),
});

/**
 * Verifies a package and returns its content; throws an Eco3dError with the reason otherwise
 * (codes per step: see the header). Synchronous and bounded: at most maxUncompressedBytes are
 * ever inflated.
 */
export function verifyPackage(bytes: Uint8Array, opts: VerifyPackageOptions = {}): VerifiedPackage {
  const maxBytes = opts.maxBytes ?? PACKAGE_LIMITS.maxBytes;
  const maxFiles = opts.maxFiles ?? PACKAGE_LIMITS.maxFiles;
  const maxUncompressedBytes = opts.maxUncompressedBytes ?? PACKAGE_LIMITS.maxUncompressedBytes;
  if (bytes.length > maxBytes) throw badFile(`the package is ${bytes.length} bytes, above the ${maxBytes}-byte limit`, { sizeBytes: bytes.length, maxBytes });

  // 1. the container
  const entries = readCentralDirectory(bytes, maxFiles);
  checkCaseDuplicates(entries.map((e) => e.name));
  let declared = 0;
  for (const e of entries) declared += e.uncompressedSize;
  if (declared > maxUncompressedBytes) {
    throw badFile(`files would inflate to ${declared} bytes, above the ${maxUncompressedBytes}-byte limit`, { declaredBytes: declared, maxUncompressedBytes });
  }
  checkNoOverlap(entries);
  const all = new Map<string, Uint8Array>();
  for (const e of entries) all.set(e.name, extract(bytes, e));
  if (!all.has(MANIFEST_FILE)) throw badFile(`${MANIFEST_FILE} is missing`);

  // 2. the signature
  const sigBytes = all.get(SIGNATURE_FILE);
  if (sigBytes === undefined) throw forbidden(`plugin package: unsigned (${SIGNATURE_FILE} is missing)`);
  all.delete(SIGNATURE_FILE);
  let sigRaw: unknown;
  try {
    sigRaw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(sigBytes));
  } catch {
    throw forbidden(`plugin package: ${SIGNATURE_FILE} is not valid JSON`);
  }
  const sig = signatureSchema.safeParse(sigRaw);
  if (!sig.success) throw forbidden(`plugin package: ${SIGNATURE_FILE}.${sig.error.issues[0]!.path.join('.')}: ${sig.error.issues[0]!.message}`);
  const publicKey = normalizePublicKey(sig.data.publicKey);
  if (publicKey === undefined) throw forbidden(`plugin package: ${SIGNATURE_FILE}.publicKey is not a base64 Ed25519 key (raw 32 bytes or SPKI)`);
  const list = digestList(all);
  let valid: boolean;
  try {
    valid = verify(null, Buffer.from(list, 'utf8'), publicKeyObject(publicKey), Buffer.from(sig.data.signature, 'base64'));
  } catch {
    valid = false; // a key that is not a point on the curve
  }
  if (!valid) throw forbidden('plugin package: the signature does not match its files (a file was added, removed or changed after signing, or it was signed with another key)', { publicKey });
  if (opts.trustedKeys !== undefined) {
    const trusted = new Set(opts.trustedKeys.map((k) => normalizePublicKey(k)).filter((k) => k !== undefined));
    if (!trusted.has(publicKey)) throw forbidden(`plugin package: signed by key ${publicKey}, which is not a trusted key of this developer`, { publicKey });
  }

  // 3. the manifest
  const manifest = parseManifest(parseJson(all.get(MANIFEST_FILE)!, MANIFEST_FILE));
  checkEntry(manifest, all);
  return { manifest, files: all, publicKey, digest: sha256Hex(Buffer.from(list, 'utf8')) };
}

// --- a minimal, strict ZIP reader ----------------------------------------------------------
// APPNOTE.TXT 6.3: end of central directory (EOCD), central directory headers, local headers.

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  uncompressedSize: number;
  localOffset: number;
  /** Where the entry's data starts (after its local header), and ends. */
  dataStart: number;
  dataEnd: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const HOST_UNIX = 3;

function corrupt(why: string): Eco3dError {
  return badFile(`not a valid ZIP file (${why})`);
}

function readCentralDirectory(bytes: Uint8Array, maxFiles: number): ZipEntry[] {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // The EOCD is 22 bytes plus a comment of at most 65535: search backwards.
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 0xffff); i--) {
    if (dv.getUint32(i, true) === SIG_EOCD && i + 22 + dv.getUint16(i + 20, true) === bytes.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw corrupt('no end-of-central-directory record; truncated?');
  const disk = dv.getUint16(eocd + 4, true);
  const cdDisk = dv.getUint16(eocd + 6, true);
  const countHere = dv.getUint16(eocd + 8, true);
  const count = dv.getUint16(eocd + 10, true);
  const cdSize = dv.getUint32(eocd + 12, true);
  const cdOffset = dv.getUint32(eocd + 16, true);
  if (disk !== 0 || cdDisk !== 0 || countHere !== count) throw corrupt('multi-disk archives are not supported');
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) throw corrupt('ZIP64 is not supported');
  if (count > maxFiles) throw badFile(`${count} files, above the limit of ${maxFiles}`, { files: count, maxFiles });
  if (cdOffset + cdSize > eocd) throw corrupt('central directory outside the file');

  const entries: ZipEntry[] = [];
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdOffset + cdSize || dv.getUint32(p, true) !== SIG_CENTRAL) throw corrupt(`central directory entry ${i} is damaged`);
    const madeBy = dv.getUint16(p + 4, true);
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    const compressedSize = dv.getUint32(p + 20, true);
    const uncompressedSize = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    const externalAttrs = dv.getUint32(p + 38, true);
    const localOffset = dv.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdOffset + cdSize) throw corrupt(`central directory entry ${i} runs past the directory`);
    const name = decodeName(bytes.subarray(p + 46, p + 46 + nameLen));
    p = end;

    const problem = packagePathProblem(name);
    if (problem !== undefined) throw badFile(`entry ${JSON.stringify(name)} ${problem}`, { entry: name });
    const fileType = (externalAttrs >>> 16) & S_IFMT;
    if (madeBy >> 8 === HOST_UNIX && fileType === S_IFLNK) throw badFile(`entry ${name} is a symlink`, { entry: name });
    if (madeBy >> 8 === HOST_UNIX && fileType !== 0 && fileType !== S_IFREG) throw badFile(`entry ${name} is not a regular file`, { entry: name });
    if ((flags & 1) !== 0) throw badFile(`entry ${name} is encrypted`, { entry: name });
    if (method !== 0 && method !== 8) throw badFile(`entry ${name} uses compression method ${method} (only stored and deflate)`, { entry: name });
    if (method === 0 && compressedSize !== uncompressedSize) throw corrupt(`stored entry ${name} has different sizes`);

    if (localOffset + 30 > bytes.length || dv.getUint32(localOffset, true) !== SIG_LOCAL) throw corrupt(`local header of ${name} is missing`);
    const localNameLen = dv.getUint16(localOffset + 26, true);
    const localExtraLen = dv.getUint16(localOffset + 28, true);
    // Tools that read local headers and tools that read the central directory must see the same
    // name, or a reviewer and the runner could be shown different files.
    const localName = decodeName(bytes.subarray(localOffset + 30, localOffset + 30 + localNameLen));
    if (localName !== name) throw corrupt(`local header name ${JSON.stringify(localName)} differs from ${JSON.stringify(name)}`);
    const dataStart = localOffset + 30 + localNameLen + localExtraLen;
    const dataEnd = dataStart + compressedSize;
    if (dataEnd > cdOffset) throw corrupt(`data of ${name} runs past the end of the file`);
    entries.push({ name, method, crc, compressedSize, uncompressedSize, localOffset, dataStart, dataEnd });
  }
  return entries;
}

function decodeName(raw: Uint8Array): string {
  // Non-UTF-8 names are decoded loosely; the path rule (ASCII only) then refuses them by name.
  return new TextDecoder('utf-8').decode(raw);
}

/** Entries whose data overlap are a known way to build a bomb out of one compressed stream. */
function checkNoOverlap(entries: readonly ZipEntry[]): void {
  const sorted = [...entries].sort((a, b) => a.localOffset - b.localOffset);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.localOffset < sorted[i - 1]!.dataEnd) throw badFile(`entries ${sorted[i - 1]!.name} and ${sorted[i]!.name} overlap`);
  }
}

// Deflate expands at most ~1032:1, so a slice of this size inflates to at most ~8.5 MiB before
// the declared-size check can stop it.
const INFLATE_SLICE_BYTES = 8 * 1024;

function extract(bytes: Uint8Array, e: ZipEntry): Uint8Array {
  const data = bytes.subarray(e.dataStart, e.dataEnd);
  let out: Uint8Array;
  if (e.method === 0) {
    out = data.slice(); // a copy: the caller's buffer may change after verification
  } else {
    out = new Uint8Array(e.uncompressedSize);
    let written = 0;
    let done = false;
    const inflater = new Inflate((chunk, final) => {
      if (written + chunk.length > e.uncompressedSize) {
        throw badFile(`entry ${e.name} inflates beyond its declared ${e.uncompressedSize} bytes (zip bomb?)`, { entry: e.name });
      }
      out.set(chunk, written);
      written += chunk.length;
      if (final) done = true;
    });
    try {
      for (let off = 0; off < data.length; off += INFLATE_SLICE_BYTES) {
        inflater.push(data.subarray(off, Math.min(off + INFLATE_SLICE_BYTES, data.length)), off + INFLATE_SLICE_BYTES >= data.length);
      }
      if (data.length === 0) inflater.push(data, true);
    } catch (err) {
      if (err instanceof Eco3dError) throw err;
      throw new Eco3dError('ECO3D_ERR_BAD_FILE', `plugin package: entry ${e.name} is not valid deflate data`, { cause: err, details: { entry: e.name } });
    }
    if (!done || written !== e.uncompressedSize) {
      throw badFile(`entry ${e.name} inflates to ${written} bytes, not its declared ${e.uncompressedSize}`, { entry: e.name });
    }
  }
  if (crc32(Buffer.from(out.buffer, out.byteOffset, out.byteLength)) >>> 0 !== e.crc) throw badFile(`entry ${e.name} fails its CRC-32 check`, { entry: e.name });
  return out;
}

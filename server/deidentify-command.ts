// `eco3d deidentify IN… --out DIR`: offline de-identification of any DICOM Part-10 files (ours or
// not) by PS3.15 Annex E, the Basic Profile with the Options below (protocols/deid.ts).
//
//   eco3d deidentify IN… --out DIR [--key-file F] [--retain-device-identity] [--no-date-shift]
//                    [--no-patient-characteristics] [--no-clean-descriptors] [--mask-config F]
//
// IN are files or directories (recursed; the output directory is skipped). Each output is named
// by its new UIDs only, DIR/<study>/<series>/<sop>.dcm: input paths often carry patient names and
// are never copied. Each file is written to a temporary name, synced, then renamed, so a crash
// leaves no half-written .dcm.
//
// The key (HMAC secret for the UID remap and the per-patient date shift) comes from --key-file
// (created with 32 random bytes, mode 0600, when it does not exist), else ECO3D_DEID_KEY (hex or
// base64, ≥ 16 bytes), else a random key for this run only (a warning: its UIDs match no other
// run). The same key gives the same UIDs and date offsets, so runs on parts of a study fit together.
//
// Defaults (each Option recorded in the output's De-identification Method Code Sequence): dates
// shifted per patient (patientDateShiftDays of the key and the original Patient ID), Retain Patient
// Characteristics, Clean Descriptors, Clean Structured Content; with --mask-config, Clean Pixel
// Data by device model. An instance with Burned In Annotation YES and no mask is refused.
//
// Exit status: 0 when every file was de-identified; 2 when some failed (each reported on stderr
// as "eco3d deidentify: CODE: PATH: message", the others written); 1 on a usage error (nothing
// done). stdout: one JSON summary line {filesIn, filesOut, filesFailed, mbIn, mbOut, seconds}.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Eco3dError, deidentifyPart10Prefix, parseBurnedInMasks, patientDateShiftDays, toEco3dError, type BurnedInMask, type DeidOptions, type DeidReport, type ErrorCode } from '../protocols/index.ts';

export interface DeidentifyArgs {
  /** Files or directories (recursed). */
  readonly inputs: readonly string[];
  readonly outDir: string;
  readonly keyFile?: string | undefined;
  readonly retainDeviceIdentity?: boolean;
  /** Shift dates per patient (default); false: dates removed or dummied by the Basic Profile. */
  readonly dateShift?: boolean;
  /** Retain Patient Characteristics (default true). */
  readonly patientCharacteristics?: boolean;
  /** Clean Descriptors (default true); false: descriptors removed by the Basic Profile. */
  readonly cleanDescriptors?: boolean;
  /** JSON file: an array of BurnedInMask. */
  readonly maskConfigFile?: string | undefined;
  /** Where ECO3D_DEID_KEY is read from. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Notes, warnings and per-file failures (stderr). */
  readonly warn: (line: string) => void;
}

export interface DeidentifyFailure {
  readonly path: string;
  readonly code: ErrorCode;
  readonly message: string;
}

export interface DeidentifySummary {
  readonly filesIn: number;
  readonly filesOut: number;
  readonly filesFailed: number;
  readonly mbIn: number;
  readonly mbOut: number;
  readonly seconds: number;
}

export interface DeidentifyResult {
  readonly summary: DeidentifySummary;
  readonly failures: readonly DeidentifyFailure[];
}

function usage(message: string, cause?: unknown): Eco3dError {
  return new Eco3dError('ECO3D_ERR_CONFIG', message, cause === undefined ? undefined : { cause });
}

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code;

/** The secret: key file (created when missing), else ECO3D_DEID_KEY, else random for this run. */
async function resolveKey(a: DeidentifyArgs): Promise<Buffer> {
  if (a.keyFile !== undefined) {
    const file = resolve(a.keyFile);
    let key: Buffer;
    try {
      key = await readFile(file);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw usage(`--key-file ${a.keyFile}: ${(err as Error).message}`, err);
      key = randomBytes(32);
      try {
        // wx: never overwrite a key another process made meanwhile (it would change every UID).
        await writeFile(file, key, { mode: 0o600, flag: 'wx' });
      } catch (werr) {
        throw usage(`--key-file ${a.keyFile}: cannot create it: ${(werr as Error).message}`, werr);
      }
      a.warn(`created key file ${file} (32 random bytes, mode 0600): keep it secret and keep it; the same key gives the same UIDs and date shifts in later runs`);
      return key;
    }
    if (key.length < 16) throw usage(`--key-file ${a.keyFile}: ${key.length} bytes; at least 16 bytes of secret are required`);
    if (((await stat(file)).mode & 0o077) !== 0) a.warn(`key file ${file} is readable by others (chmod 600 it): whoever has it can link the pseudonymous UIDs back`);
    return key;
  }
  const env = a.env['ECO3D_DEID_KEY']?.trim();
  if (env !== undefined && env !== '') {
    let key: Buffer;
    if (/^(?:[0-9a-fA-F]{2})+$/.test(env)) key = Buffer.from(env, 'hex');
    else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(env)) key = Buffer.from(env, 'base64');
    else throw usage('ECO3D_DEID_KEY: expected hex or base64');
    if (key.length < 16) throw usage(`ECO3D_DEID_KEY: ${key.length} bytes; at least 16 bytes of secret are required`);
    return key;
  }
  a.warn('no --key-file and no ECO3D_DEID_KEY: using a random key for this run only; its UIDs and date shifts will not match those of any other run');
  return randomBytes(32);
}

async function readMasks(file: string): Promise<readonly BurnedInMask[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(resolve(file), 'utf8'));
  } catch (err) {
    throw usage(`--mask-config ${file}: ${(err as Error).message}`, err);
  }
  try {
    return parseBurnedInMasks(json);
  } catch (err) {
    throw usage(`--mask-config ${file}: ${(err as Error).message}`, err);
  }
}

/** Every regular file under the inputs, in a stable order, the output directory left out. */
async function listFiles(inputs: readonly string[], outDir: string): Promise<string[]> {
  const files: string[] = [];
  const seen = new Set<string>();
  const add = (p: string): void => {
    if (!seen.has(p)) {
      seen.add(p);
      files.push(p);
    }
  };
  const walk = async (dir: string): Promise<void> => {
    if (dir === outDir) return;
    const entries = (await readdir(dir, { withFileTypes: true })).sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) add(p);
      // A link to a file is followed; links to directories are not (no cycles).
      else if (e.isSymbolicLink() && (await stat(p).then((s) => s.isFile(), () => false))) add(p);
    }
  };
  for (const input of inputs) {
    const p = resolve(input);
    let s;
    try {
      s = await stat(p);
    } catch (err) {
      throw usage(`${input}: ${errnoOf(err) === 'ENOENT' ? 'no such file or directory' : (err as Error).message}`, err);
    }
    if (s.isDirectory()) await walk(p);
    else if (s.isFile()) add(p);
    else throw usage(`${input}: not a file or directory`);
  }
  return files;
}

const UID_PATH = /^[0-9]+(\.[0-9]+)*$/;

let tmpCounter = 0;

/** Writes `target` through `write` into a synced temporary file in the same directory, then a rename. */
async function writeAtomic(target: string, write: (fh: FileHandle) => Promise<void>): Promise<void> {
  const tmp = `${target}.${process.pid}.${++tmpCounter}.tmp`;
  const fh = await open(tmp, 'wx', 0o644);
  try {
    try {
      await write(fh);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch((uerr: unknown) => {
      if (errnoOf(uerr) !== 'ENOENT') throw uerr;
    });
    throw err;
  }
}

// The first read of each file: a small file whole, a large one its header (and a little more).
const FIRST_READ_BYTES = 1 << 20;
// Pixel data goes file to file through one buffer per lane, reused: allocating a buffer the size
// of a large volume for each file costs more (page faults) than the copy itself.
const COPY_BUFFER_BYTES = 4 << 20;

/** The first `n` bytes of the file, in a buffer of their own (dcmjs reads an ArrayBuffer from its start). */
async function readPrefix(fh: FileHandle, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, got);
    if (bytesRead === 0) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `the file ended at byte ${got} while being read (${n} expected): changed while read?`, { details: { file: 'DICOM' } });
    got += bytesRead;
  }
  return buf;
}

/** Copies `length` bytes at `offset` of `from` to the end of what was written to `to`. */
async function copyRange(from: FileHandle, to: FileHandle, offset: number, length: number, buffer: Uint8Array): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await from.read(buffer, 0, Math.min(buffer.byteLength, length - done), offset + done);
    if (bytesRead === 0) throw new Eco3dError('ECO3D_ERR_BAD_FILE', 'the file ended while its pixel data was copied: changed while read?', { details: { file: 'DICOM' } });
    await to.write(buffer, 0, bytesRead);
    done += bytesRead;
  }
}

/**
 * Runs the de-identification of a file's header in memory and writes nothing: the same checks
 * and refusals as `deidentifyFile` (a truncated or corrupt file, a burned-in annotation without
 * its mask), for callers that pass on only the pixel data and never a header (a plugin's voxels).
 */
export async function deidentifyHeader(path: string, options: DeidOptions): Promise<DeidReport> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let prefix = await readPrefix(fh, Math.min(size, FIRST_READ_BYTES));
    let r = deidentifyPart10Prefix(prefix, size, options);
    while (r.kind === 'need') {
      prefix = await readPrefix(fh, r.bytes);
      r = deidentifyPart10Prefix(prefix, size, options);
    }
    return r.report;
  } finally {
    await fh.close();
  }
}

/**
 * De-identifies one Part-10 file into the path `targetOf` names from its new UIDs, written whole
 * or not at all. Only the header is held in memory and de-identified (synchronously: a few ms);
 * the pixel data goes file to file, so a 500 MB volume never blocks the event loop. Failures are
 * Eco3dErrors (ECO3D_ERR_BAD_FILE for a truncated or corrupt file, ECO3D_ERR_BURNED_IN_ANNOTATION).
 */
export async function deidentifyFile(
  path: string,
  options: DeidOptions,
  targetOf: (uids: { study: string; series: string; sop: string }) => Promise<string>,
  copyBuffer: Uint8Array = new Uint8Array(COPY_BUFFER_BYTES),
): Promise<{ target: string; bytesIn: number; bytesOut: number; report: DeidReport }> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let prefix = await readPrefix(fh, Math.min(size, FIRST_READ_BYTES));
    let r = deidentifyPart10Prefix(prefix, size, options);
    while (r.kind === 'need') {
      prefix = await readPrefix(fh, r.bytes);
      r = deidentifyPart10Prefix(prefix, size, options);
    }
    const { head, tail, report } = r;
    const { study, series, sop } = report.instanceUids;
    if (study === undefined || series === undefined || sop === undefined || ![study, series, sop].every((u) => UID_PATH.test(u))) {
      throw new Eco3dError('ECO3D_ERR_BAD_FILE', 'no valid Study, Series and SOP Instance UID to name the output by', { details: { file: 'DICOM' } });
    }
    const target = await targetOf({ study, series, sop });
    await writeAtomic(target, async (out) => {
      await out.write(head);
      if (tail === null) return;
      // The pixel element: from the prefix when it holds it, else file to file.
      if (tail.offset + tail.length <= prefix.byteLength) await out.write(prefix.subarray(tail.offset, tail.offset + tail.length));
      else await copyRange(fh, out, tail.offset, tail.length, copyBuffer);
    });
    return { target, bytesIn: size, bytesOut: head.byteLength + (tail?.length ?? 0), report };
  } finally {
    await fh.close();
  }
}

/**
 * Runs the command. Throws ECO3D_ERR_CONFIG on a usage error (before any output); a file that
 * fails is reported through `warn` and in `failures`, and the others go on.
 */
export async function runDeidentify(a: DeidentifyArgs): Promise<DeidentifyResult> {
  const t0 = performance.now();
  if (a.inputs.length === 0) throw usage('no input: give files or directories');
  const outDir = resolve(a.outDir);
  const masks = a.maskConfigFile === undefined ? undefined : await readMasks(a.maskConfigFile);
  const files = await listFiles(a.inputs, outDir);
  if (files.length === 0) throw usage(`no files under ${a.inputs.join(', ')}`);
  try {
    await mkdir(outDir, { recursive: true });
  } catch (err) {
    throw usage(`--out ${a.outDir}: ${(err as Error).message}`, err);
  }
  const key = await resolveKey(a);
  const options: DeidOptions = {
    uidKey: key,
    cleanStructuredContent: true,
    ...(a.retainDeviceIdentity === true ? { retainDeviceIdentity: true } : {}),
    ...(a.patientCharacteristics === false ? {} : { retainPatientCharacteristics: true }),
    ...(a.cleanDescriptors === false ? {} : { cleanDescriptors: true }),
    ...(a.dateShift === false ? {} : { dateShiftDaysForPatient: (patientId: string) => patientDateShiftDays(key, patientId) }),
    ...(masks === undefined ? {} : { burnedInMasks: masks }),
  };

  const failures: DeidentifyFailure[] = [];
  const written = new Map<string, string>();
  const madeDirs = new Set<string>();
  let bytesIn = 0;
  let bytesOut = 0;
  const one = async (path: string, copyBuffer: Uint8Array): Promise<void> => {
    try {
      const r = await deidentifyFile(
        path,
        options,
        async ({ study, series, sop }) => {
          const dir = join(outDir, study, series);
          const target = join(dir, `${sop}.dcm`);
          const earlier = written.get(target);
          if (earlier !== undefined) a.warn(`${path}: same SOP Instance UID as ${earlier}; its output replaces the earlier one`);
          written.set(target, path);
          if (!madeDirs.has(dir)) {
            await mkdir(dir, { recursive: true });
            madeDirs.add(dir);
          }
          return target;
        },
        copyBuffer,
      );
      bytesIn += r.bytesIn;
      bytesOut += r.bytesOut;
    } catch (err) {
      const e = toEco3dError(err);
      failures.push({ path, code: e.code, message: e.message });
      a.warn(`${e.code}: ${path}: ${e.message}`);
    }
  };
  // Files in flight: one is de-identified (synchronous) while the others are read, written or synced.
  const inFlight = 6;
  let next = 0;
  const lane = async (): Promise<void> => {
    let copyBuffer: Uint8Array | undefined;
    while (next < files.length) {
      const path = files[next++]!;
      await one(path, (copyBuffer ??= new Uint8Array(COPY_BUFFER_BYTES)));
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, files.length) }, lane));

  const mb = (n: number): number => Math.round(n / 1e3) / 1e3;
  return {
    summary: {
      filesIn: files.length,
      filesOut: files.length - failures.length,
      filesFailed: failures.length,
      mbIn: mb(bytesIn),
      mbOut: mb(bytesOut),
      seconds: Math.round(performance.now() - t0) / 1e3,
    },
    failures,
  };
}

// The data-directory lock: one process owns `./eco3d-data` at a time (ARCHITECTURE.md, CLI
// contract). Two processes on one PGlite directory would corrupt it, and PGlite cannot recover.
//
// `<dir>/eco3d.lock` holds JSON {pid, hostname, startedAt, procStartTicks, nonce}. It is created
// atomically with link(2) from a fully written and fsynced temporary file, which fails with
// EEXIST like O_EXCL but never exposes a half-written lock. A lock whose process is gone (dead
// pid, or a pid since reused by another process: its start time differs) is stale and is taken
// over; the caller logs `tookOver`. A lock from another host cannot be checked and is refused.
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Eco3dError } from '../protocols/errors.ts';

export const LOCK_FILE_NAME = 'eco3d.lock';

export interface LockOwner {
  readonly pid: number;
  readonly hostname: string;
  /** ISO 8601. */
  readonly startedAt: string;
  /** Linux: the process start time in clock ticks since boot (/proc/PID/stat), to detect pid reuse. */
  readonly procStartTicks?: string;
  readonly nonce: string;
}

export interface DataDirLock {
  readonly path: string;
  readonly owner: LockOwner;
  /** Set when a stale lock was taken over: worth a line in the log. */
  readonly tookOver?: LockOwner;
  /** Removes the lock file if it is still ours. Idempotent. */
  release(): Promise<void>;
}

async function procStartTicks(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the command name (field 2) may contain spaces and parentheses, so count after ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined; // not Linux, or no such process
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockOwner>;
    if (typeof v.pid === 'number' && typeof v.hostname === 'string' && typeof v.startedAt === 'string' && typeof v.nonce === 'string') {
      return v as LockOwner;
    }
  } catch {
    // unparseable: handled by the caller
  }
  return undefined;
}

type Liveness = 'alive' | 'dead' | 'unknown-host';

async function liveness(owner: LockOwner): Promise<Liveness> {
  if (owner.hostname !== hostname()) return 'unknown-host';
  if (!pidAlive(owner.pid)) return 'dead';
  if (owner.procStartTicks !== undefined) {
    const now = await procStartTicks(owner.pid);
    if (now !== undefined && now !== owner.procStartTicks) return 'dead'; // the pid was reused
  }
  return 'alive';
}

const errnoCode = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** Takes the lock on `dataDir`, creating the directory if missing. */
export async function acquireDataDirLock(dataDir: string): Promise<DataDirLock> {
  try {
    await mkdir(dataDir, { recursive: true });
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_DATA_DIR', `cannot create the data directory ${dataDir}: ${(err as Error).message}`, { cause: err });
  }
  const lockPath = join(dataDir, LOCK_FILE_NAME);
  const owner: LockOwner = {
    pid: process.pid,
    hostname: hostname(),
    startedAt: new Date().toISOString(),
    nonce: randomBytes(8).toString('hex'),
    ...(await procStartTicks(process.pid).then((t) => (t === undefined ? {} : { procStartTicks: t }))),
  };
  const ownText = `${JSON.stringify(owner)}\n`;
  const tmpPath = `${lockPath}.${process.pid}.${owner.nonce}.tmp`;
  const file = await open(tmpPath, 'wx');
  try {
    await file.writeFile(ownText);
    await file.sync();
  } finally {
    await file.close();
  }

  let tookOver: LockOwner | undefined;
  try {
    // A few rounds: each lost race against another starting process is re-examined.
    for (let round = 0; round < 5; round += 1) {
      try {
        await link(tmpPath, lockPath);
        return makeLock(lockPath, owner, ownText, tookOver);
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const text = await readFile(lockPath, 'utf8').catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined; // released meanwhile: try again
        throw err;
      });
      if (text === undefined) continue;
      const holder = parseOwner(text);
      if (holder === undefined) {
        throw new Eco3dError(
          'ECO3D_ERR_DATA_DIR_LOCKED',
          `the lock file ${lockPath} is unreadable; if no eco3d process uses ${dataDir}, delete ${lockPath} and start again`,
        );
      }
      const state = await liveness(holder);
      if (state === 'alive') {
        throw new Eco3dError(
          'ECO3D_ERR_DATA_DIR_LOCKED',
          `the data directory ${dataDir} is in use by eco3d process ${holder.pid} on ${holder.hostname} (since ${holder.startedAt}); ` +
            'stop that process or choose another directory with --data',
          { details: { pid: holder.pid, hostname: holder.hostname, dataDir } },
        );
      }
      if (state === 'unknown-host') {
        throw new Eco3dError(
          'ECO3D_ERR_DATA_DIR_LOCKED',
          `the data directory ${dataDir} is locked by process ${holder.pid} on another host, ${holder.hostname}; ` +
            `if no eco3d runs there on this directory, delete ${lockPath}`,
          { details: { pid: holder.pid, hostname: holder.hostname, dataDir } },
        );
      }
      if (await removeIfStill(lockPath, text)) tookOver = holder;
    }
    throw new Eco3dError('ECO3D_ERR_DATA_DIR_LOCKED', `could not take the lock ${lockPath}: other processes keep racing for it`);
  } finally {
    await unlink(tmpPath).catch(() => undefined); // the link, if made, keeps the content alive
  }
}

// Moves the stale lock aside under a name of our own, then checks that what we moved is the
// stale lock we judged, not a fresh one another process linked in meanwhile (then it goes back).
async function removeIfStill(lockPath: string, staleText: string): Promise<boolean> {
  const aside = `${lockPath}.stale.${process.pid}.${randomBytes(4).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
  const moved = await readFile(aside, 'utf8');
  if (moved === staleText) {
    await unlink(aside);
    return true;
  }
  await link(aside, lockPath).catch((err: unknown) => {
    if (errnoCode(err) !== 'EEXIST') throw err;
  });
  await unlink(aside);
  return false;
}

function makeLock(lockPath: string, owner: LockOwner, ownText: string, tookOver: LockOwner | undefined): DataDirLock {
  let released: Promise<void> | undefined;
  const release = async (): Promise<void> => {
    // Only our own lock: after a (mistaken) takeover by someone else, theirs stays.
    const text = await readFile(lockPath, 'utf8').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (text === ownText) await unlink(lockPath);
  };
  return {
    path: lockPath,
    owner,
    ...(tookOver === undefined ? {} : { tookOver }),
    release: () => (released ??= release()),
  };
}

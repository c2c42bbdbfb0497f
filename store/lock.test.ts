import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { LOCK_FILE_NAME, acquireDataDirLock } from './lock.ts';

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const LOCK_MODULE = new URL('./lock.ts', import.meta.url).href;

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'eco3d-lock-'));
  dirs.push(d);
  return d;
}

/** Runs `code` (ESM, with tsx) in a real second node process. */
function node(code: string): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: REPO_ROOT,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
}

/** The first stdout line of `child`; fails if it exits first or after `timeoutMs`. */
function firstLine(child: ChildProcess, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const finish = (outcome: () => void): void => {
      clearTimeout(timer);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
      outcome();
    };
    const onData = (chunk: string): void => {
      buffered += chunk;
      const nl = buffered.indexOf('\n');
      if (nl >= 0) finish(() => resolve(buffered.slice(0, nl)));
    };
    const onExit = (code: number | null): void =>
      finish(() => reject(new Error(`the child process exited (${code}) before printing a line: ${JSON.stringify(buffered)}`)));
    const timer = setTimeout(() => finish(() => reject(new Error(`no line from the child process within ${timeoutMs} ms`))), timeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', onData);
    child.on('exit', onExit);
  });
}

const lockedError = (includes: string[]) => (err: unknown) => {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, 'ECO3D_ERR_DATA_DIR_LOCKED');
  for (const s of includes) assert.ok(err.message.includes(s), `"${err.message}" should mention ${s}`);
  return true;
};

void test('a second process is refused while the first holds the lock; a crashed holder\'s lock is taken over', async () => {
  const dataDir = join(await tempDir(), 'eco3d-data'); // does not exist yet: created by the lock
  const holder = node(`
    import { acquireDataDirLock } from ${JSON.stringify(LOCK_MODULE)};
    await acquireDataDirLock(${JSON.stringify(dataDir)});
    console.log('locked');
    process.stdin.resume(); // hold until killed
  `);
  try {
    assert.equal(await firstLine(holder), 'locked');
    await assert.rejects(acquireDataDirLock(dataDir), lockedError([`process ${holder.pid}`, dataDir, hostname()]));
  } finally {
    // SIGKILL: no chance to release, exactly like a crash or a power cut.
    const exited = once(holder, 'exit');
    holder.kill('SIGKILL');
    await exited;
  }
  const lock = await acquireDataDirLock(dataDir);
  assert.equal(lock.tookOver?.pid, holder.pid, 'the stale lock is reported for the log');
  assert.equal(lock.owner.pid, process.pid);
  await lock.release();
  await lock.release(); // idempotent
  await assert.rejects(stat(lock.path), /ENOENT/);
});

void test('the second process gets ECO3D_ERR_DATA_DIR_LOCKED naming the owner', async () => {
  const dataDir = await tempDir();
  const lock = await acquireDataDirLock(dataDir);
  try {
    const contender = node(`
      import { acquireDataDirLock } from ${JSON.stringify(LOCK_MODULE)};
      try {
        await acquireDataDirLock(${JSON.stringify(dataDir)});
        console.log(JSON.stringify({ got: 'lock' }));
      } catch (err) {
        console.log(JSON.stringify({ code: err.code, message: err.message }));
      }
    `);
    const line = await firstLine(contender);
    await once(contender, 'exit');
    const answer = JSON.parse(line) as { code?: string; message?: string };
    assert.equal(answer.code, 'ECO3D_ERR_DATA_DIR_LOCKED');
    assert.ok(answer.message?.includes(`process ${process.pid}`), answer.message);
    assert.ok(answer.message?.includes(dataDir), answer.message);
  } finally {
    await lock.release();
  }
  // Released: the next one gets it without a takeover.
  const next = await acquireDataDirLock(dataDir);
  assert.equal(next.tookOver, undefined);
  await next.release();
});

void test('a lock whose pid now belongs to another process (pid reuse after a reboot) is stale', { skip: process.platform !== 'linux' }, async () => {
  const dataDir = await tempDir();
  // Our own pid, alive, but with a start time that is not ours: another process's old lock.
  await writeFile(
    join(dataDir, LOCK_FILE_NAME),
    JSON.stringify({ pid: process.pid, hostname: hostname(), startedAt: '2020-01-01T00:00:00.000Z', procStartTicks: '1', nonce: 'old' }),
  );
  const lock = await acquireDataDirLock(dataDir);
  assert.equal(lock.tookOver?.nonce, 'old');
  await lock.release();
});

void test('within one process a second acquire is refused too', async () => {
  const dataDir = await tempDir();
  const lock = await acquireDataDirLock(dataDir);
  await assert.rejects(acquireDataDirLock(dataDir), lockedError([`process ${process.pid}`]));
  await lock.release();
});

void test('a lock from another host or an unreadable lock is refused with the remedy', async () => {
  const dataDir = await tempDir();
  const lockPath = join(dataDir, LOCK_FILE_NAME);
  await writeFile(lockPath, JSON.stringify({ pid: 1, hostname: 'scanner-room-2', startedAt: '2026-01-01T00:00:00.000Z', nonce: 'x' }));
  await assert.rejects(acquireDataDirLock(dataDir), lockedError(['scanner-room-2', `delete ${lockPath}`]));
  await writeFile(lockPath, '');
  await assert.rejects(acquireDataDirLock(dataDir), lockedError(['unreadable', `delete ${lockPath}`]));
});

void test('release leaves a lock that is no longer ours alone', async () => {
  const dataDir = await tempDir();
  const lock = await acquireDataDirLock(dataDir);
  const theirs = JSON.stringify({ pid: 1, hostname: 'elsewhere', startedAt: '2026-01-01T00:00:00.000Z', nonce: 'theirs' });
  await writeFile(lock.path, theirs);
  await lock.release();
  assert.equal(await readFile(lock.path, 'utf8'), theirs);
});

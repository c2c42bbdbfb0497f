import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { openPglite, openPostgres, type Queryable } from './database.ts';
import { forEachDatabase } from './testing.ts';

const isEco3dError = (code: string, includes?: string) => (err: unknown) => {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code);
  if (includes !== undefined) assert.ok(err.message.includes(includes), `"${err.message}" should mention ${includes}`);
  return true;
};

forEachDatabase('Database', (ctx) => {
  void test('a transaction commits, and rolls back when its callback throws', async () => {
    const db = ctx.db;
    await db.exec('CREATE TABLE t_tx (id integer PRIMARY KEY, note text)');
    const result = await db.transaction(async (tx) => {
      await tx.query('INSERT INTO t_tx VALUES ($1, $2)', [1, 'kept']);
      return 'ok';
    });
    assert.equal(result, 'ok');
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t_tx VALUES ($1, $2)', [2, 'rolled back']);
        throw new Error('boom');
      }),
      /boom/,
    );
    // A failing statement also rolls back the earlier ones of its transaction.
    await assert.rejects(
      db.transaction(async (tx) => {
        await tx.query('INSERT INTO t_tx VALUES ($1, $2)', [3, 'rolled back']);
        await tx.query('INSERT INTO t_tx VALUES ($1, $2)', [1, 'duplicate key']);
      }),
    );
    assert.deepEqual(await db.query('SELECT id, note FROM t_tx ORDER BY id'), [{ id: 1, note: 'kept' }]);
  });

  void test('rows look the same on both engines: int8 as number, timestamptz as Date, jsonb parsed', async () => {
    const [row] = await ctx.db.query<{ n: unknown; c: unknown; t: unknown; j: unknown }>(
      `SELECT 42::int8 AS n, count(*) AS c, '2026-01-01T00:00:00Z'::timestamptz AS t, $1::jsonb AS j FROM (VALUES (1), (2)) v(x)`,
      [JSON.stringify({ a: [1, 2] })],
    );
    assert.deepEqual(row, { n: 42, c: 2, t: new Date('2026-01-01T00:00:00Z'), j: { a: [1, 2] } });
  });

  void test('using the database instead of the transaction handle inside a transaction fails fast', async () => {
    // On PGlite this would wait for its own transaction forever.
    await assert.rejects(
      ctx.db.transaction(async () => ctx.db.query('SELECT 1')),
      isEco3dError('ECO3D_ERR_INTERNAL', 'transaction handle'),
    );
    // Work merely started inside a transaction is not refused once it has ended.
    let later: Promise<unknown> | undefined;
    await ctx.db.transaction(async () => {
      later = new Promise((resolve) => setImmediate(resolve)).then(() => ctx.db.query('SELECT 1 AS one'));
    });
    assert.deepEqual(await later, [{ one: 1 }]);
  });

  void test('a transaction handle kept past its transaction refuses to run', async () => {
    let leaked: Queryable | undefined;
    await ctx.db.transaction(async (tx) => {
      leaked = tx;
    });
    await assert.rejects(leaked!.query('SELECT 1'), /transaction/i);
  });

  void test('close is idempotent and a closed database refuses queries', async () => {
    const storage = await ctx.newStorage();
    const db = await storage.open();
    assert.equal(db.kind, ctx.kind);
    await Promise.all([db.close(), db.close()]);
    await db.close();
    assert.equal(db.closed, true);
    await assert.rejects(db.query('SELECT 1'), isEco3dError('ECO3D_ERR_CLOSED'));
    // Reopening the same storage works (PGlite: CHECKPOINT + close left it consistent).
    const again = await storage.open();
    assert.deepEqual(await again.query('SELECT 1 AS one'), [{ one: 1 }]);
  });

  if (ctx.kind === 'pglite') {
    void test('concurrent transactions on PGlite are queued, never interleaved', async () => {
      const db = ctx.db;
      const log: string[] = [];
      await Promise.all(
        [1, 2, 3].map((i) =>
          db.transaction(async (tx) => {
            log.push(`begin ${i}`);
            await tx.query('SELECT pg_sleep(0.01)');
            await new Promise((resolve) => setImmediate(resolve));
            log.push(`end ${i}`);
          }),
        ),
      );
      assert.deepEqual(log, ['begin 1', 'end 1', 'begin 2', 'end 2', 'begin 3', 'end 3']);
    });

    void test('a plain query waits for the open transaction instead of joining it', async () => {
      const db = ctx.db;
      await db.exec('CREATE TABLE t_wait (n integer)');
      let releaseTx!: () => void;
      const gate = new Promise<void>((resolve) => (releaseTx = resolve));
      const tx = db.transaction(async (q) => {
        await q.query('INSERT INTO t_wait VALUES (1)');
        await gate;
        throw new Error('roll back');
      });
      const outside = db.query<{ c: number }>('SELECT count(*) AS c FROM t_wait');
      releaseTx();
      await assert.rejects(tx, /roll back/);
      // Had it run inside the open transaction it would have counted the uncommitted row.
      assert.deepEqual(await outside, [{ c: 0 }]);
    });
  }
});

void test('a PGlite directory that cannot be opened is ECO3D_ERR_DATA_DIR with the remedy', async () => {
  const root = await mkdtemp(join(tmpdir(), 'eco3d-bad-db-'));
  try {
    const dbDir = join(root, 'db');
    await mkdir(dbDir);
    await writeFile(join(dbDir, 'PG_VERSION'), 'not a postgres directory\n');
    await assert.rejects(openPglite(dbDir), isEco3dError('ECO3D_ERR_DATA_DIR', `delete or move ${dbDir} or restore it from backup`));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

void test('an unreachable PostgreSQL server is ECO3D_ERR_DATA_DIR, without the password', async () => {
  // Port 1 on loopback: nothing listens there, the connection is refused at once.
  await assert.rejects(openPostgres('postgres://eco3d:s3cret@127.0.0.1:1/none'), (err: unknown) => {
    isEco3dError('ECO3D_ERR_DATA_DIR', '127.0.0.1:1')(err);
    assert.ok(!(err as Error).message.includes('s3cret'));
    return true;
  });
});

void test('a bad schema name is refused before connecting', async () => {
  await assert.rejects(openPostgres('postgres://127.0.0.1:1/none', { schema: 'x; DROP TABLE y' }), isEco3dError('ECO3D_ERR_CONFIG'));
});

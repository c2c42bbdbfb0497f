import assert from 'node:assert/strict';
import { appendFile, cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { MIGRATIONS_DIR, migrate } from './migrate.ts';
import { forEachDatabase } from './testing.ts';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** A private copy of the released migrations, free to edit. */
async function copyOfMigrations(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'eco3d-migrations-'));
  dirs.push(dir);
  await cp(MIGRATIONS_DIR, dir, { recursive: true });
  return dir;
}

const migrationError = (includes: string) => (err: unknown) => {
  assert.ok(err instanceof Eco3dError);
  assert.equal(err.code, 'ECO3D_ERR_MIGRATION');
  assert.ok(err.message.includes(includes), `"${err.message}" should mention ${includes}`);
  return true;
};

forEachDatabase('migrate', (ctx) => {
  void test('applies every migration once; running it again changes nothing', async () => {
    const db = await (await ctx.newStorage()).open();
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
    assert.deepEqual((await migrate(db)).applied, files);
    assert.deepEqual((await migrate(db)).applied, []);
    const rows = await db.query<{ version: number; name: string }>('SELECT version, name FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      rows.map((r) => r.name),
      files,
    );
    assert.equal(rows[0]?.version, 1);
  });

  void test('a released migration edited afterwards stops the start, naming the file', async () => {
    const dir = await copyOfMigrations();
    const db = await (await ctx.newStorage()).open();
    await migrate(db, { migrationsDir: dir });
    await appendFile(join(dir, '0001_init.sql'), '\n-- an innocent-looking edit\n');
    await assert.rejects(migrate(db, { migrationsDir: dir }), migrationError('0001_init.sql was edited after it was applied'));
    await assert.rejects(migrate(db, { migrationsDir: dir }), migrationError('add a new one'));
  });

  void test('a new migration is applied after the released ones; a failing one rolls back alone', async () => {
    const dir = await copyOfMigrations();
    const db = await (await ctx.newStorage()).open();
    await migrate(db, { migrationsDir: dir });
    // Versions past the released ones, whatever their number.
    const released = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).map((f) => Number(f.slice(0, 4)));
    await writeFile(join(dir, '0098_notes.sql'), 'CREATE TABLE notes (id integer PRIMARY KEY);\n');
    await writeFile(join(dir, '0099_broken.sql'), 'CREATE TABLE half_done (id integer);\nSELECT no_such_function();\n');
    await assert.rejects(migrate(db, { migrationsDir: dir }), migrationError('0099_broken.sql failed'));
    const applied = await db.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      applied.map((r) => r.version),
      [...released, 98],
    );
    const halfDone = await db.query(`SELECT 1 FROM information_schema.tables WHERE table_name = 'half_done' AND table_schema = current_schema()`);
    assert.equal(halfDone.length, 0);
  });

  void test('a database migrated by a newer build is refused', async () => {
    const dir = await copyOfMigrations();
    const db = await (await ctx.newStorage()).open();
    await migrate(db);
    await db.query(`INSERT INTO schema_migrations (version, name, checksum) VALUES (999, '0999_future.sql', 'x')`);
    await assert.rejects(migrate(db, { migrationsDir: dir }), migrationError('0999_future.sql'));
  });

  void test('badly named migration files are refused', async () => {
    const dir = await copyOfMigrations();
    await writeFile(join(dir, '2_oops.sql'), 'SELECT 1;\n');
    const db = await (await ctx.newStorage()).open();
    await assert.rejects(migrate(db, { migrationsDir: dir }), migrationError('2_oops.sql'));
  });

  void test('two processes migrating at once: each migration runs once', async () => {
    const storage = await ctx.newStorage();
    const a = await storage.open();
    // PostgreSQL: a second pool stands for a second process. PGlite: one process owns the
    // directory (the data-directory lock), so concurrency means concurrent calls on one Database;
    // two PGlite instances on one directory would not even see each other's writes.
    const b = ctx.kind === 'postgres' ? await storage.open() : a;
    const results = await Promise.all([migrate(a), migrate(b), migrate(a)]);
    const all = results.flatMap((r) => r.applied);
    assert.deepEqual([...all].sort(), [...new Set(all)].sort(), 'no migration applied twice');
    assert.equal(all.length, (await a.query('SELECT version FROM schema_migrations')).length);
  });
});

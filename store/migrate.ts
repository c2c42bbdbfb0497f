// Versioned SQL migrations (store/migrations/NNNN_name.sql), applied in order at start.
// Each runs in its own transaction together with its schema_migrations row, under an advisory
// lock, so two processes starting on one PostgreSQL database never migrate at once: the second
// waits, then finds the work done. A released file is never edited: its SHA-256 is recorded and
// a changed checksum stops the start.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from './database.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url));

const FILE_NAME = /^(\d{4})_([a-z0-9_]+)\.sql$/;

interface Migration {
  readonly version: number;
  readonly file: string;
  readonly checksum: string;
  readonly sql: string;
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

async function loadMigrations(dir: string): Promise<Migration[]> {
  const migrations: Migration[] = [];
  for (const file of (await readdir(dir)).sort()) {
    if (!file.endsWith('.sql')) continue;
    const match = FILE_NAME.exec(file);
    if (match === null) {
      throw new Eco3dError('ECO3D_ERR_MIGRATION', `migration file ${file} in ${dir} is not named NNNN_lower_case_name.sql`);
    }
    // Line endings normalised: a checkout with CRLF is the same migration.
    const sql = (await readFile(join(dir, file), 'utf8')).replace(/\r\n/g, '\n');
    const version = Number(match[1]);
    if (migrations.some((m) => m.version === version)) {
      throw new Eco3dError('ECO3D_ERR_MIGRATION', `two migration files in ${dir} have version ${match[1]}`);
    }
    migrations.push({ version, file, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return migrations;
}

// The lock is per schema, so test schemas on one server do not wait for each other.
async function lockMigrations(tx: Queryable): Promise<void> {
  await tx.query(`SELECT pg_advisory_xact_lock(hashtext('eco3d:migrate:' || current_schema()))`);
}

function checkReleased(applied: readonly AppliedRow[], migrations: readonly Migration[]): void {
  for (const row of applied) {
    const m = migrations.find((x) => x.version === row.version);
    if (m === undefined) {
      throw new Eco3dError(
        'ECO3D_ERR_MIGRATION',
        `the database has migration ${row.name}, which this build does not know: it was written by a newer eco3d; run that version or restore a backup`,
      );
    }
    if (m.checksum !== row.checksum) {
      throw new Eco3dError(
        'ECO3D_ERR_MIGRATION',
        `migration ${m.file} was edited after it was applied (checksum ${row.checksum.slice(0, 12)}… in the database, ` +
          `${m.checksum.slice(0, 12)}… on disk): migrations are never edited once released: add a new one`,
        { details: { file: m.file } },
      );
    }
  }
}

export interface MigrateResult {
  /** File names applied by this call, in order; empty when the schema was up to date. */
  readonly applied: readonly string[];
}

/** Brings the schema up to date. `migrationsDir` is for tests; the default is store/migrations. */
export async function migrate(db: Database, options: { readonly migrationsDir?: string } = {}): Promise<MigrateResult> {
  const migrations = await loadMigrations(options.migrationsDir ?? MIGRATIONS_DIR);
  const readApplied = (tx: Queryable): Promise<AppliedRow[]> =>
    tx.query<AppliedRow>('SELECT version, name, checksum FROM schema_migrations ORDER BY version');

  const pending = await db.transaction(async (tx) => {
    await lockMigrations(tx);
    await tx.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer PRIMARY KEY,
      name       text NOT NULL,
      checksum   text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const applied = await readApplied(tx);
    checkReleased(applied, migrations);
    return migrations.filter((m) => !applied.some((row) => row.version === m.version));
  });

  const done: string[] = [];
  for (const m of pending) {
    const ran = await db.transaction(async (tx) => {
      await lockMigrations(tx);
      // Another process may have applied it while this one waited for the lock.
      const applied = await readApplied(tx);
      checkReleased(applied, migrations);
      if (applied.some((row) => row.version === m.version)) return false;
      try {
        await tx.exec(m.sql);
      } catch (err) {
        throw new Eco3dError('ECO3D_ERR_MIGRATION', `migration ${m.file} failed: ${err instanceof Error ? err.message : String(err)}`, {
          cause: err,
          details: { file: m.file },
        });
      }
      await tx.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.file, m.checksum]);
      return true;
    });
    if (ran) done.push(m.file);
  }
  return { applied: done };
}

// The one database interface (ARCHITECTURE.md, "Real parts, embedded defaults"): embedded PGlite
// (Postgres 18 in WASM) by default, PostgreSQL through a `pg` pool in production. Same SQL, same
// code paths; the SQL in store/ is kept to what PostgreSQL 15 and PGlite 0.5 both accept.
//
// Rows look the same on both engines: timestamptz → Date, jsonb → parsed value, int8 (bigserial,
// count(*)) → number, or bigint past 2^53 (PGlite's own rule, copied into the pg pool below).
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PGlite, type Transaction as PgliteTransaction } from '@electric-sql/pglite';
import pg from 'pg';
import { Eco3dError } from '../protocols/errors.ts';
import { errorText, pgErrorCode } from './util.ts';

export type DatabaseKind = 'pglite' | 'postgres';

/** What repositories take: the database itself or an open transaction. */
export interface Queryable {
  /**
   * One statement with `$1…` parameters. The row type is the caller's claim, not checked.
   * Pass jsonb values as `JSON.stringify(v)` with a `::jsonb` cast: `pg` would turn a JS array
   * into a Postgres array literal.
   */
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** A script of several statements without parameters (migrations). */
  exec(sqlScript: string): Promise<void>;
}

export interface Database extends Queryable {
  readonly kind: DatabaseKind;
  readonly closed: boolean;
  /**
   * Runs `fn` in BEGIN … COMMIT; ROLLBACK when it throws (the error is rethrown). Not nestable.
   * Inside `fn` use `tx`, never this Database: on PGlite that would wait for the transaction it
   * is part of, forever, so it throws ECO3D_ERR_INTERNAL instead (on both engines, to keep the
   * code paths the same).
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>;
  /** Idempotent. PGlite: CHECKPOINT, then close. PostgreSQL: ends the pool. */
  close(): Promise<void>;
}

// Which Database's transaction the current async context runs in. `open` turns false at the
// end, so work merely started from inside a transaction (a timer, a kick) is not refused later.
const insideTransaction = new AsyncLocalStorage<{ db: Database; open: boolean }>();

function refuseIfInsideOwnTransaction(db: Database, what: string): void {
  const ctx = insideTransaction.getStore();
  if (ctx?.db === db && ctx.open) {
    throw new Eco3dError(
      'ECO3D_ERR_INTERNAL',
      `db.${what}() called inside db.transaction(): use the transaction handle passed to the callback`,
    );
  }
}

function refuseIfClosed(db: Database): void {
  if (db.closed) throw new Eco3dError('ECO3D_ERR_CLOSED', `the ${db.kind} database is closed`);
}

async function runInTransactionContext<T>(db: Database, fn: () => Promise<T>): Promise<T> {
  const ctx = { db, open: true };
  try {
    return await insideTransaction.run(ctx, fn);
  } finally {
    ctx.open = false;
  }
}

// ---------------------------------------------------------------------------------------------
// PGlite

function pgliteQueryable(tx: PgliteTransaction | PGlite): Queryable {
  return {
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      const result = await tx.query<T>(sql, params === undefined ? undefined : [...params]);
      return result.rows;
    },
    async exec(sqlScript: string): Promise<void> {
      await tx.exec(sqlScript);
    },
  };
}

class PgliteDatabase implements Database {
  readonly kind = 'pglite';
  readonly #pg: PGlite;
  readonly #direct: Queryable;
  #closing: Promise<void> | undefined;

  constructor(pglite: PGlite) {
    this.#pg = pglite;
    this.#direct = pgliteQueryable(pglite);
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  async query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'query');
    return this.#direct.query<T>(sql, params);
  }

  async exec(sqlScript: string): Promise<void> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'exec');
    await this.#direct.exec(sqlScript);
  }

  // PGlite 0.5 already queues: query(), exec() and transaction() all run under one mutex
  // (`_runExclusiveTransaction`), so transactions never interleave and a plain query waits for
  // the open transaction. store/database.test.ts checks this, so an upgrade that changes it fails.
  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'transaction');
    return this.#pg.transaction((tx) => runInTransactionContext(this, () => fn(pgliteQueryable(tx))));
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    // PGlite has no crash recovery in WASM: flush everything to the data directory first.
    try {
      await this.#pg.query('CHECKPOINT');
    } finally {
      await this.#pg.close();
    }
  }
}

/**
 * Opens (creating on first use) the embedded database in `dbDir` — the server passes
 * `<data>/db`. The caller holds the data-directory lock (store/lock.ts): two processes on one
 * PGlite directory corrupt it.
 */
export async function openPglite(dbDir: string): Promise<Database> {
  try {
    await mkdir(dirname(dbDir), { recursive: true });
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_DATA_DIR', `cannot create ${dirname(dbDir)}: ${errorText(err)}; check the path and its permissions`, {
      cause: err,
    });
  }
  let pglite: PGlite | undefined;
  try {
    pglite = await PGlite.create(dbDir);
    await pglite.query('SELECT 1');
  } catch (err) {
    if (pglite !== undefined && !pglite.closed) await pglite.close().catch(() => undefined); // the open error is the one to report
    throw new Eco3dError(
      'ECO3D_ERR_DATA_DIR',
      `cannot open the embedded database in ${dbDir} (${errorText(err)}): delete or move ${dbDir} or restore it from backup; ` +
        'PGlite cannot recover a crashed WASM database',
      { cause: err, details: { dbDir } },
    );
  }
  return new PgliteDatabase(pglite);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_INT8_OID = 20;

// Same int8 rule as PGlite: a number when exact, a bigint beyond 2^53.
function parseInt8(text: string): number | bigint {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : BigInt(text);
}

const pgTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown =>
    oid === PG_INT8_OID && format !== 'binary' ? parseInt8 : (pg.types.getTypeParser(oid, format) as unknown)) as typeof pg.types.getTypeParser,
};

function pgQueryable(client: pg.Pool | pg.PoolClient): Queryable {
  return {
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      const result: pg.QueryResult = await client.query(sql, params === undefined ? undefined : [...params]);
      return result.rows as T[];
    },
    async exec(sqlScript: string): Promise<void> {
      // No parameters ⇒ the simple query protocol, which accepts several statements.
      await client.query(sqlScript);
    },
  };
}

// A transaction handle kept past its transaction would, on pg, run on a pooled connection that
// by then belongs to someone else's transaction. PGlite refuses such use itself.
function closableQueryable(inner: Queryable): { queryable: Queryable; close: () => void } {
  let closed = false;
  const check = (): void => {
    if (closed) throw new Eco3dError('ECO3D_ERR_INTERNAL', 'a transaction handle was used after its transaction ended');
  };
  return {
    queryable: {
      query: async <T>(sql: string, params?: readonly unknown[]) => {
        check();
        return inner.query<T>(sql, params);
      },
      exec: async (sqlScript: string) => {
        check();
        await inner.exec(sqlScript);
      },
    },
    close: () => {
      closed = true;
    },
  };
}

class PostgresDatabase implements Database {
  readonly kind = 'postgres';
  readonly #pool: pg.Pool;
  readonly #direct: Queryable;
  #closing: Promise<void> | undefined;

  constructor(pool: pg.Pool) {
    this.#pool = pool;
    this.#direct = pgQueryable(pool);
  }

  get closed(): boolean {
    return this.#closing !== undefined;
  }

  async query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'query');
    return this.#direct.query<T>(sql, params);
  }

  async exec(sqlScript: string): Promise<void> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'exec');
    await this.#direct.exec(sqlScript);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    refuseIfClosed(this);
    refuseIfInsideOwnTransaction(this, 'transaction');
    const client = await this.#pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const tx = closableQueryable(pgQueryable(client));
      try {
        const result = await runInTransactionContext(this, () => fn(tx.queryable)).finally(tx.close);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch (rollbackErr) {
          // A connection that cannot roll back must not go back to the pool.
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        }
        throw err;
      }
    } finally {
      client.release(broken);
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#pool.end();
    return this.#closing;
  }
}

export interface PostgresOptions {
  /** Isolates this Database in its own schema (created if missing): the tests use one each. */
  readonly schema?: string;
  readonly maxConnections?: number;
  /**
   * An idle pooled connection failed (server restart, network). The pool drops it and the next
   * query reconnects; without a listener `pg` would crash the process. Default: process warning.
   */
  readonly onIdleClientError?: (err: Error) => void;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** Opens a pool on `url` and checks that it answers. */
export async function openPostgres(url: string, options: PostgresOptions = {}): Promise<Database> {
  const { schema } = options;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `bad schema name ${JSON.stringify(schema)}: use lower-case letters, digits and _`);
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: options.maxConnections ?? 10,
    types: pgTypes,
    // The startup packet sets search_path on every pooled connection before any query runs.
    ...(schema === undefined ? {} : { options: `-c search_path=${schema}` }),
  });
  const onIdleClientError = options.onIdleClientError ?? ((err: Error) => process.emitWarning(err));
  pool.on('error', onIdleClientError);
  try {
    if (schema !== undefined) await createSchemaIfMissing(pool, schema);
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => undefined); // the connection error is the one to report
    throw new Eco3dError('ECO3D_ERR_DATA_DIR', `cannot open the PostgreSQL database at ${redactUrl(url)}: ${errorText(err)}`, {
      cause: err,
    });
  }
  return new PostgresDatabase(pool);
}

async function createSchemaIfMissing(pool: pg.Pool, schema: string): Promise<void> {
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  } catch (err) {
    // Two processes creating it at once: IF NOT EXISTS is not atomic in PostgreSQL.
    if (pgErrorCode(err) !== '23505' && pgErrorCode(err) !== '42P06') throw err;
  }
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}


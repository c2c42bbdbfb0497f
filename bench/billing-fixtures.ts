// Helpers shared by the billing benchmarks (billing-ingest, billing-invoice): the PostgreSQL URL,
// a seeded random generator, cleanup on failure or Ctrl-C, and a Database wrapper that times
// every statement, so that a figure can be split into SQL and JavaScript.
import { performance } from 'node:perf_hooks';
import type { Database, Queryable } from '../store/index.ts';

/** The bench database when DATABASE_URL is unset (trust auth on this machine). */
export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/test';

/**
 * DATABASE_URL, or the default written into process.env: test/harness.ts and store/testing.ts
 * both read it from there.
 */
export function usePostgres(): string {
  if (process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === '') process.env.DATABASE_URL = DEFAULT_DATABASE_URL;
  return process.env.DATABASE_URL;
}

/** mulberry32: the same events in every run, so runs compare. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `main` with a list of cleanups that run in reverse order however it ends: normally, by
 * an error (then the exit code is 1), or by SIGINT/SIGTERM. A fresh schema must never outlive
 * the bench.
 */
export async function withCleanup(main: (onCleanup: (fn: () => Promise<void>) => void) => Promise<void>): Promise<void> {
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanAll = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (err) {
          console.error(`# cleanup failed: ${(err as Error).message}`);
        }
      }
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    console.error(`# ${signal}: cleaning up`);
    void cleanAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await main((fn) => cleanups.push(fn));
  } catch (err) {
    console.error(`# FAILED: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  } finally {
    await cleanAll();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** Milliseconds spent in the database (the wait for the answer, rows parsed), by kind of statement. */
export interface SqlTimes {
  readMs: number;
  writeMs: number;
  statements: number;
  rows: number;
}

const isWrite = (sql: string): boolean => /^\s*(INSERT|UPDATE|DELETE)\b/i.test(sql);

function timedQueryable(q: Queryable, times: SqlTimes): Queryable {
  return {
    async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
      const t0 = performance.now();
      const rows = await q.query<T>(sql, params);
      const ms = performance.now() - t0;
      if (isWrite(sql)) times.writeMs += ms;
      else times.readMs += ms;
      times.statements++;
      times.rows += rows.length;
      return rows;
    },
    exec: (script) => q.exec(script),
  };
}

/** The same database, timing each statement into `times` (transactions' BEGIN/COMMIT are not counted). */
export function timedDatabase(db: Database, times: SqlTimes): Database {
  const direct = timedQueryable(db, times);
  return {
    get kind() {
      return db.kind;
    },
    get closed() {
      return db.closed;
    },
    query: direct.query.bind(direct),
    exec: direct.exec.bind(direct),
    transaction: (fn) => db.transaction((tx) => fn(timedQueryable(tx, times))),
    close: () => db.close(),
  };
}

export const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

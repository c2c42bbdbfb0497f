// Test helper for every folder's database tests (ARCHITECTURE.md: the database tests run on
// PGlite always, and also on PostgreSQL when DATABASE_URL is set). Test files only.
//
//   forEachDatabase('billing ledger', (ctx) => {
//     test('books once', async () => { await doThing(ctx.db); … });
//   });
//
// registers one `describe` per engine; `ctx.db` is a migrated database shared by the block's tests
// (use unique ids per test). `ctx.newStorage()` gives an empty database of the same engine that
// can be closed and reopened (restart tests). Everything is closed and removed after the block:
// PGlite directories under the OS temp dir, PostgreSQL schemas (one fresh schema each).
import { after, before, describe } from 'node:test';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openPglite, openPostgres, type Database, type DatabaseKind } from './database.ts';
import type { DomainEvent } from '../protocols/events.ts';
import { ensureDevice, ensureTenant } from './accounts.ts';
import { recordAcquisitionTransition } from './acquisitions.ts';
import { migrate } from './migrate.ts';

/** The engines under test here: PGlite, plus PostgreSQL when DATABASE_URL is set. */
export function databasesUnderTest(): DatabaseKind[] {
  return process.env.DATABASE_URL === undefined || process.env.DATABASE_URL === '' ? ['pglite'] : ['pglite', 'postgres'];
}

export interface TestStorage {
  readonly kind: DatabaseKind;
  /** A PGlite directory or a PostgreSQL schema name. */
  readonly location: string;
  /** Opens it (again): same directory, same schema. Not migrated: call migrate() as needed. */
  open(): Promise<Database>;
  /** Closes what open() returned and removes the storage. */
  dispose(): Promise<void>;
}

// initdb takes ~3 s in WASM; copying a closed, freshly initialised directory takes ~0.1 s.
let pgliteTemplate: Promise<string> | undefined;

async function makePgliteTemplate(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'eco3d-pglite-template-'));
  process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  const dir = join(root, 'db');
  const db = await openPglite(dir);
  await db.close();
  return dir;
}

export async function createTestStorage(kind: DatabaseKind): Promise<TestStorage> {
  const opened: Database[] = [];
  const closeAll = async (): Promise<void> => {
    await Promise.all(opened.map((db) => db.close()));
  };
  if (kind === 'pglite') {
    pgliteTemplate ??= makePgliteTemplate();
    const template = await pgliteTemplate;
    const root = await mkdtemp(join(tmpdir(), 'eco3d-pglite-'));
    const dir = join(root, 'db');
    await cp(template, dir, { recursive: true });
    return {
      kind,
      location: dir,
      open: async () => {
        const db = await openPglite(dir);
        opened.push(db);
        return db;
      },
      dispose: async () => {
        await closeAll();
        await rm(root, { recursive: true, force: true });
      },
    };
  }
  const url = process.env.DATABASE_URL;
  if (url === undefined || url === '') throw new Error('PostgreSQL tests need DATABASE_URL');
  const schema = `eco3d_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  return {
    kind,
    location: schema,
    open: async () => {
      const db = await openPostgres(url, { schema, maxConnections: 5 });
      opened.push(db);
      return db;
    },
    dispose: async () => {
      await closeAll();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

export interface DatabaseTestContext {
  readonly kind: DatabaseKind;
  /** Migrated, shared by the block's tests; ready in the tests (not while registering them). */
  readonly db: Database;
  /** An empty storage of this engine, disposed after the block. */
  newStorage(): Promise<TestStorage>;
}

/** One `describe(\`${title} [engine]\`)` per engine under test. */
export function forEachDatabase(title: string, body: (ctx: DatabaseTestContext) => void): void {
  for (const kind of databasesUnderTest()) {
    // describe() returns a promise that node:test itself tracks.
    void describe(`${title} [${kind}]`, () => {
      const storages: TestStorage[] = [];
      let shared: Database | undefined;
      const ctx: DatabaseTestContext = {
        kind,
        get db(): Database {
          if (shared === undefined) throw new Error('ctx.db is ready inside tests, not while they are registered');
          return shared;
        },
        newStorage: async () => {
          const s = await createTestStorage(kind);
          storages.push(s);
          return s;
        },
      };
      before(async () => {
        const storage = await ctx.newStorage();
        shared = await storage.open();
        await migrate(shared);
      });
      after(async () => {
        await Promise.all(storages.map((s) => s.dispose()));
      });
      body(ctx);
    });
  }
}

// --- fixtures other folders' tests need ---------------------------------------------------------

export interface SeededAcquisition {
  readonly tenantId: string;
  readonly deviceId: string;
  readonly uid: string;
  /** The outbox event the terminal transition wrote. */
  readonly event: DomainEvent;
}

/**
 * Runs an acquisition through idle → positioning → scanning → completed (or → aborted), creating
 * the tenant and device if needed: the way billing, archive and data-lake tests get an event
 * into the outbox.
 */
export async function seedAcquisition(
  db: Database,
  a: { tenantId?: string; deviceId?: string; uid: string; startMs?: number; outcome?: 'completed' | 'aborted'; framesAcquired?: number },
): Promise<SeededAcquisition> {
  const tenantId = a.tenantId ?? 'test-hospital';
  const deviceId = a.deviceId ?? 'sim-1';
  const startMs = a.startMs ?? Date.UTC(2026, 0, 1);
  await ensureTenant(db, { id: tenantId, name: tenantId });
  await ensureDevice(db, { tenantId, id: deviceId, model: 'simulator' });
  const base = { acquisitionUid: a.uid, tenantId, deviceId, actor: 'test-operator' } as const;
  await recordAcquisitionTransition(db, {
    ...base,
    from: 'idle',
    to: 'positioning',
    event: 'start',
    atMs: startMs,
    sweep: { kind: 'linear', lengthMm: 60, tiltRangeRad: 0, speedMmPerS: 10, targetForceN: 5 },
  });
  await recordAcquisitionTransition(db, { ...base, from: 'positioning', to: 'scanning', event: 'reach-start', atMs: startMs + 2000 });
  const last =
    a.outcome === 'aborted'
      ? await recordAcquisitionTransition(db, {
          ...base,
          from: 'scanning',
          to: 'aborted',
          event: 'abort',
          atMs: startMs + 4000,
          abortReason: 'operator',
          detail: 'test abort',
        })
      : await recordAcquisitionTransition(db, {
          ...base,
          from: 'scanning',
          to: 'completed',
          event: 'finish',
          atMs: startMs + 8000,
          framesAcquired: a.framesAcquired ?? 180,
        });
  if (last.event === undefined) throw new Error('a terminal transition wrote no event');
  return { tenantId, deviceId, uid: a.uid, event: last.event };
}

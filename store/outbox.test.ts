import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DomainEvent, DomainEventType } from '../protocols/events.ts';
import type { Database } from './database.ts';
import { migrate } from './migrate.ts';
import { OutboxDispatcher, outboxBacklog, type DeliveryContext, type OutboxConsumer, type OutboxDispatcherOptions } from './outbox.ts';
import { forEachDatabase, seedAcquisition } from './testing.ts';

/** The acquisition an event is about (these tests only write acquisition events). */
const uidOf = (e: DomainEvent): string => ('acquisitionUid' in e ? e.acquisitionUid : e.idempotencyKey);

/** A consumer that records what it got and fails while `failWhen` says so. */
function recorder(
  name: string,
  eventTypes: readonly DomainEventType[] = ['AcquisitionCompleted', 'AcquisitionAborted'],
  failWhen: (event: DomainEvent, attempt: number) => boolean = () => false,
): OutboxConsumer & { readonly got: string[]; readonly attempts: Map<string, number> } {
  const got: string[] = [];
  const attempts = new Map<string, number>();
  return {
    name,
    eventTypes,
    got,
    attempts,
    async handle(event) {
      const n = (attempts.get(event.idempotencyKey) ?? 0) + 1;
      attempts.set(event.idempotencyKey, n);
      if (failWhen(event, n)) throw new Error(`${name} refuses ${uidOf(event)} (attempt ${n})`);
      got.push(uidOf(event));
    },
  };
}

/** A virtual clock: back-off and leases are decided by it, not by sleeping. */
function clock(startMs = Date.UTC(2026, 5, 1)): { nowMs: () => number; advance: (ms: number) => void } {
  let t = startMs;
  return { nowMs: () => t, advance: (ms) => (t += ms) };
}

/** Resolves when `predicate` holds, polling each tick; fails after `timeoutMs`. */
async function eventually(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

forEachDatabase('outbox dispatcher', (ctx) => {
  async function freshDb(): Promise<Database> {
    const db = await (await ctx.newStorage()).open();
    await migrate(db);
    return db;
  }
  const errors: Array<{ err: unknown; context: DeliveryContext }> = [];
  const options = (extra: OutboxDispatcherOptions = {}): OutboxDispatcherOptions => ({
    baseBackoffMs: 1000,
    maxBackoffMs: 60_000,
    onError: (err, context) => errors.push({ err, context }),
    ...extra,
  });

  void test('each consumer gets each subscribed event once, in outbox order, and a second pass has nothing', async () => {
    const db = await freshDb();
    const billing = recorder('billing', ['AcquisitionCompleted']);
    const archive = recorder('archive');
    const d = new OutboxDispatcher(db, options());
    d.register(billing);
    d.register(archive);
    // Before the first pass: registered consumers get fanned out at insert time…
    await d.deliverDue();
    await seedAcquisition(db, { uid: 'a-1' });
    await seedAcquisition(db, { uid: 'a-2', outcome: 'aborted' });
    await seedAcquisition(db, { uid: 'a-3' });
    assert.deepEqual(await d.deliverDue(), { delivered: 5, failed: 0 });
    assert.deepEqual(billing.got, ['a-1', 'a-3']);
    assert.deepEqual(archive.got, ['a-1', 'a-2', 'a-3']);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 0 });
    assert.deepEqual(await outboxBacklog(db), []);
    const rows = await db.query<{ n: number }>('SELECT count(*) AS n FROM outbox_deliveries WHERE delivered_at IS NOT NULL AND attempts = 1');
    assert.equal(rows[0]?.n, 5);
  });

  void test('a failing consumer is retried with exponential back-off, attempts and last error recorded', async () => {
    const db = await freshDb();
    const c = clock();
    const flaky = recorder('flaky', ['AcquisitionCompleted'], (_e, attempt) => attempt <= 3);
    const d = new OutboxDispatcher(db, options({ nowMs: c.nowMs }));
    d.register(flaky);
    await seedAcquisition(db, { uid: 'r-1' });
    const delivery = async () =>
      (await db.query<{ attempts: number; last_error: string | null; next_attempt_at: Date | null; delivered_at: Date | null }>(
        `SELECT attempts, last_error, next_attempt_at, delivered_at FROM outbox_deliveries WHERE consumer = 'flaky'`,
      ))[0]!;
    const start = c.nowMs();

    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 });
    let row = await delivery();
    assert.equal(row.attempts, 1);
    assert.match(row.last_error ?? '', /refuses r-1 \(attempt 1\)/);
    assert.equal(row.next_attempt_at?.getTime(), start + 1000);

    // Not due yet: nothing is tried.
    c.advance(999);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 0 });
    c.advance(1);
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 });
    row = await delivery();
    assert.equal(row.attempts, 2);
    assert.equal(row.next_attempt_at?.getTime(), c.nowMs() + 2000, 'doubled');

    c.advance(2000);
    await d.deliverDue();
    assert.equal((await delivery()).next_attempt_at?.getTime(), c.nowMs() + 4000, 'doubled again');
    assert.deepEqual((await outboxBacklog(db)).map((b) => [b.consumer, b.pending, b.failing]), [['flaky', 1, 1]]);

    c.advance(4000);
    assert.deepEqual(await d.deliverDue(), { delivered: 1, failed: 0 });
    row = await delivery();
    assert.equal(row.attempts, 4);
    assert.equal(row.delivered_at?.getTime(), c.nowMs());
    assert.deepEqual(flaky.got, ['r-1']);
    assert.ok(errors.some((e) => e.context.consumer === 'flaky' && e.context.attempts === 3));
  });

  void test('a poison event blocks neither the events after it nor the other consumers', async () => {
    const db = await freshDb();
    const c = clock();
    const picky = recorder('picky', undefined, (e) => uidOf(e) === 'p-poison');
    const calm = recorder('calm');
    const d = new OutboxDispatcher(db, options({ nowMs: c.nowMs, batchSize: 2 }));
    d.register(picky);
    d.register(calm);
    await seedAcquisition(db, { uid: 'p-poison' });
    for (const uid of ['p-2', 'p-3', 'p-4']) await seedAcquisition(db, { uid });
    assert.deepEqual(await d.deliverDue(), { delivered: 7, failed: 1 });
    assert.deepEqual(picky.got, ['p-2', 'p-3', 'p-4']);
    assert.deepEqual(calm.got, ['p-poison', 'p-2', 'p-3', 'p-4']);
    // Later events still flow while the poison one keeps failing, ever more rarely.
    await seedAcquisition(db, { uid: 'p-5' });
    c.advance(1000);
    assert.deepEqual(await d.deliverDue(), { delivered: 2, failed: 1 });
    assert.deepEqual(picky.got, ['p-2', 'p-3', 'p-4', 'p-5']);
  });

  void test('a restarted dispatcher delivers what was not delivered; a delivery cut short is redelivered after its lease', async () => {
    const storage = await ctx.newStorage();
    let db = await storage.open();
    await migrate(db);
    // Events committed before any dispatcher ever ran (e.g. a crash right after the commit).
    await seedAcquisition(db, { uid: 's-1' });
    await seedAcquisition(db, { uid: 's-2' });

    // Dispatcher #1 is "killed" mid-delivery of s-1: its consumer did the work, but the database
    // went away before the delivery was recorded.
    const c = clock();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inHandler = new Promise<void>((resolve) => (entered = resolve));
    const first: OutboxConsumer = {
      name: 'archive',
      eventTypes: ['AcquisitionCompleted'],
      async handle() {
        entered();
        await gate;
      },
    };
    const d1 = new OutboxDispatcher(db, options({ nowMs: c.nowMs, batchSize: 1, leaseMs: 120_000, handlerTimeoutMs: 60_000 }));
    d1.register(first);
    const pass = d1.deliverDue();
    await inHandler;
    await db.close();
    release();
    await pass; // its bookkeeping fails against the closed database and is reported, not thrown
    assert.ok(errors.some((e) => e.context.consumer === 'archive'));

    // Restart: new database handle, new dispatcher, same consumer name.
    db = await storage.open();
    const again = recorder('archive', ['AcquisitionCompleted']);
    const d2 = new OutboxDispatcher(db, options({ nowMs: c.nowMs, leaseMs: 120_000, handlerTimeoutMs: 60_000 }));
    d2.register(again);
    assert.deepEqual(await d2.deliverDue(), { delivered: 1, failed: 0 });
    assert.deepEqual(again.got, ['s-2'], 's-1 is still leased to the dead dispatcher');
    c.advance(120_000);
    assert.deepEqual(await d2.deliverDue(), { delivered: 1, failed: 0 });
    assert.deepEqual(again.got, ['s-2', 's-1'], 'at least once: s-1 delivered again after the lease');
    assert.deepEqual(await outboxBacklog(db), []);
  });

  void test('a consumer registered later gets the events already in the outbox', async () => {
    const db = await freshDb();
    const early = new OutboxDispatcher(db, options());
    early.register(recorder('billing', ['AcquisitionCompleted']));
    await early.deliverDue();
    await seedAcquisition(db, { uid: 'l-1' });
    const late = new OutboxDispatcher(db, options());
    const lake = recorder('datalake', ['AcquisitionCompleted']);
    late.register(lake);
    await late.deliverDue();
    assert.deepEqual(lake.got, ['l-1']);
  });

  void test('two dispatchers draining at once never deliver a row twice', async () => {
    const storage = await ctx.newStorage();
    const a = await storage.open();
    await migrate(a);
    // PostgreSQL: a second pool stands for a second process. PGlite has one owner per directory.
    const b = ctx.kind === 'postgres' ? await storage.open() : a;
    const seen: string[] = [];
    const consumer = (): OutboxConsumer => ({
      name: 'billing',
      eventTypes: ['AcquisitionCompleted'],
      async handle(event) {
        seen.push(uidOf(event));
        await new Promise((resolve) => setImmediate(resolve));
      },
    });
    for (let i = 0; i < 30; i += 1) await seedAcquisition(a, { uid: `c-${i}` });
    const d1 = new OutboxDispatcher(a, options({ batchSize: 3 }));
    const d2 = new OutboxDispatcher(b, options({ batchSize: 3 }));
    d1.register(consumer());
    d2.register(consumer());
    const [r1, r2] = await Promise.all([d1.deliverDue(), d2.deliverDue()]);
    assert.equal(r1.delivered + r2.delivered, 30);
    assert.equal(seen.length, 30);
    assert.equal(new Set(seen).size, 30);
  });

  void test('start, kick and stop: delivered right after a commit, stop waits for the delivery in flight', async () => {
    const db = await freshDb();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const got: string[] = [];
    let finished = false;
    const d = new OutboxDispatcher(db, options({ pollIntervalMs: 60_000 }));
    d.register({
      name: 'marketplace',
      eventTypes: ['AcquisitionCompleted'],
      async handle(event) {
        got.push(uidOf(event));
        await gate;
        finished = true;
      },
    });
    await d.start();
    await seedAcquisition(db, { uid: 'k-1' });
    d.kick(); // without it the next poll would be a minute away
    await eventually(() => got.length === 1);
    let stopped = false;
    const stopping = d.stop().then(() => (stopped = true));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stopped, false, 'stop() waits for the delivery in flight');
    release();
    await stopping;
    assert.equal(finished, true);
    assert.deepEqual(await outboxBacklog(db), []);
    await d.stop(); // idempotent
  });

  void test('a handler that hangs times out, is told to abort, and is retried later', async () => {
    const db = await freshDb();
    const c = clock();
    let aborted: unknown;
    let calls = 0;
    const d = new OutboxDispatcher(db, options({ nowMs: c.nowMs, handlerTimeoutMs: 20, leaseMs: 1000 }));
    d.register({
      name: 'pacs',
      eventTypes: ['AcquisitionCompleted'],
      async handle(_event, signal) {
        calls += 1;
        if (calls > 1) return; // the retry finds the PACS back
        await new Promise<void>((_resolve, reject) => {
          signal.addEventListener('abort', () => {
            aborted = signal.reason;
            reject(new Error('aborted by the dispatcher'));
          });
        });
      },
    });
    await seedAcquisition(db, { uid: 't-1' });
    assert.deepEqual(await d.deliverDue(), { delivered: 0, failed: 1 });
    assert.match(String(aborted), /did not finish within 20 ms/);
    const [row] = await db.query<{ last_error: string }>(`SELECT last_error FROM outbox_deliveries WHERE consumer = 'pacs'`);
    assert.match(row?.last_error ?? '', /did not finish within 20 ms/);
    c.advance(1000);
    assert.deepEqual(await d.deliverDue(), { delivered: 1, failed: 0 });
  });

  void test('configuration mistakes are refused', () => {
    assert.throws(() => new OutboxDispatcher(ctx.db, { handlerTimeoutMs: 1000, leaseMs: 1000 }), /leaseMs/);
    const d = new OutboxDispatcher(ctx.db, options());
    assert.throws(() => d.register(recorder('Bad Name')), /consumer name/);
    d.register(recorder('ok'));
    assert.throws(() => d.register(recorder('ok')), /twice/);
  });
});

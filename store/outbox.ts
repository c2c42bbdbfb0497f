// The transactional outbox and its dispatcher (ARCHITECTURE.md, "Exactly-once side effects").
//
// Writing: `insertOutboxEvent(tx, event)` inside the transaction that caused the event. It
// dedupes on the idempotency key and creates one outbox_deliveries row per registered consumer
// subscribed to the event type.
//
// Delivering: `OutboxDispatcher` runs one loop per consumer, so a slow or failing consumer delays
// nobody else. A loop claims due rows with one UPDATE … FOR UPDATE SKIP LOCKED that also sets a
// lease (next_attempt_at) and counts the attempt, calls the consumer outside any transaction
// (a PGlite transaction would block every other query meanwhile), then records success or
// schedules the retry with exponential back-off. Delivery is at least once: a crash between the
// consumer's success and the bookkeeping re-delivers after the lease, and the consumer dedupes on
// `event.idempotencyKey`. A second dispatcher process on the same PostgreSQL database never
// claims a row whose lease runs.
import type { DomainEvent, DomainEventType } from '../protocols/events.ts';
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from './database.ts';
import { errorText, iso } from './util.ts';

// Writers hold it shared, a consumer registration exclusive: a registration then waits for the
// writers in flight, and the backfill it runs sees their rows (no event slips between the two).
const fanOutLockSql = (mode: 'shared' | 'exclusive'): string =>
  `SELECT ${mode === 'shared' ? 'pg_advisory_xact_lock_shared' : 'pg_advisory_xact_lock'}(hashtext('eco3d:outbox:' || current_schema()))`;

/**
 * Adds `event` to the outbox in the caller's transaction. A replay (same idempotency key) is a
 * no-op and returns false.
 */
export async function insertOutboxEvent(tx: Queryable, event: DomainEvent): Promise<boolean> {
  await tx.query(fanOutLockSql('shared'));
  const inserted = await tx.query<{ id: number }>(
    `INSERT INTO outbox (event_type, idempotency_key, payload) VALUES ($1, $2, $3::jsonb)
     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`,
    [event.type, event.idempotencyKey, JSON.stringify(event)],
  );
  const row = inserted[0];
  if (row === undefined) return false;
  await tx.query(
    `INSERT INTO outbox_deliveries (outbox_id, consumer)
     SELECT $1, name FROM outbox_consumers WHERE $2 = ANY (event_types)`,
    [row.id, event.type],
  );
  return true;
}

export interface OutboxConsumer {
  /** Stable across releases: deliveries are tracked under it. Lower-case, digits, `-`, `.`. */
  readonly name: string;
  readonly eventTypes: readonly DomainEventType[];
  /**
   * Must be idempotent on `event.idempotencyKey`: delivery is at least once. Throwing schedules
   * a retry. `signal` aborts when the dispatcher gives up waiting (handlerTimeoutMs).
   */
  handle(event: DomainEvent, signal: AbortSignal): Promise<void>;
}

export interface OutboxDispatcherOptions {
  /** Upper bound on the wait between polls; `kick()` cuts it short. Default 1000. */
  readonly pollIntervalMs?: number;
  /** Rows claimed per round per consumer. Default 20. */
  readonly batchSize?: number;
  /** Retry n waits min(maxBackoffMs, baseBackoffMs · 2^(n-1)). Defaults 1 s and 15 min. */
  readonly baseBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** A handler still running after this counts as failed (and its signal aborts). Default 60 s. */
  readonly handlerTimeoutMs?: number;
  /** How long a claimed row stays invisible to other dispatchers. > handlerTimeoutMs. Default 2 min. */
  readonly leaseMs?: number;
  /** The clock behind leases and back-off; tests pass a virtual one. Default Date.now. */
  readonly nowMs?: () => number;
  /** A failed delivery or a failed poll (database down). Default: process warning. */
  readonly onError?: (err: unknown, context: DeliveryContext) => void;
}

export interface DeliveryContext {
  readonly consumer: string;
  /** Absent when the poll itself failed. */
  readonly idempotencyKey?: string;
  readonly attempts?: number;
  readonly nextAttemptAtMs?: number;
}

export interface DeliveryCounts {
  readonly delivered: number;
  readonly failed: number;
}

interface ClaimedRow {
  outbox_id: number;
  attempts: number;
  payload: unknown;
}

interface ConsumerLoop {
  readonly consumer: OutboxConsumer;
  kicked: boolean;
  wake: (() => void) | undefined;
}

const CONSUMER_NAME = /^[a-z0-9][a-z0-9.-]{0,62}$/;
const MAX_ERROR_CHARS = 2000;

export class OutboxDispatcher {
  readonly #db: Database;
  readonly #consumers: OutboxConsumer[] = [];
  readonly #pollIntervalMs: number;
  readonly #batchSize: number;
  readonly #baseBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #handlerTimeoutMs: number;
  readonly #leaseMs: number;
  readonly #nowMs: () => number;
  readonly #onError: (err: unknown, context: DeliveryContext) => void;
  #registered: Promise<void> | undefined;
  #loops: ConsumerLoop[] = [];
  #starting: Promise<void> | undefined;
  #running: Promise<void> | undefined;
  #stopping = false;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(db: Database, options: OutboxDispatcherOptions = {}) {
    this.#db = db;
    this.#pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.#batchSize = options.batchSize ?? 20;
    this.#baseBackoffMs = options.baseBackoffMs ?? 1000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 15 * 60_000;
    this.#handlerTimeoutMs = options.handlerTimeoutMs ?? 60_000;
    this.#leaseMs = options.leaseMs ?? 2 * this.#handlerTimeoutMs;
    this.#nowMs = options.nowMs ?? Date.now;
    this.#onError = options.onError ?? ((err: unknown) => process.emitWarning(err instanceof Error ? err : String(err)));
    // A lease shorter than the handler timeout would let a second dispatcher deliver concurrently.
    if (this.#leaseMs <= this.#handlerTimeoutMs) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `outbox leaseMs (${this.#leaseMs}) must exceed handlerTimeoutMs (${this.#handlerTimeoutMs})`);
    }
  }

  /** Adds a consumer. Only before the first start() or deliverDue(). */
  register(consumer: OutboxConsumer): void {
    if (this.#registered !== undefined) {
      throw new Eco3dError('ECO3D_ERR_CONFLICT', `register outbox consumer ${consumer.name} before the dispatcher starts`);
    }
    if (!CONSUMER_NAME.test(consumer.name)) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `bad outbox consumer name ${JSON.stringify(consumer.name)}: lower-case letters, digits, - and .`);
    }
    if (this.#consumers.some((c) => c.name === consumer.name)) {
      throw new Eco3dError('ECO3D_ERR_CONFIG', `outbox consumer ${consumer.name} is registered twice`);
    }
    this.#consumers.push(consumer);
  }

  /** Registers the consumers in the database (delivering past events to new ones), then polls. */
  start(): Promise<void> {
    if (this.#stopping) return Promise.reject(new Eco3dError('ECO3D_ERR_CLOSED', 'the outbox dispatcher was stopped'));
    this.#starting ??= this.#startOnce();
    return this.#starting;
  }

  async #startOnce(): Promise<void> {
    await this.#ensureRegistered();
    if (this.#stopping) return;
    this.#loops = this.#consumers.map((consumer) => ({ consumer, kicked: false, wake: undefined }));
    this.#running = Promise.all(this.#loops.map((loop) => this.#runLoop(loop))).then(() => undefined);
  }

  /** Deliver now instead of at the next poll: call it after committing an outbox row. */
  kick(): void {
    for (const loop of this.#loops) {
      loop.kicked = true;
      loop.wake?.();
    }
  }

  /**
   * One pass over everything due now for every consumer, whether or not the dispatcher runs
   * (tests drive it with a virtual clock; a CLI can flush before exit).
   */
  async deliverDue(): Promise<DeliveryCounts> {
    await this.#ensureRegistered();
    const pass = Promise.all(this.#consumers.map((c) => this.#drain(c)));
    this.#inFlight.add(pass);
    try {
      const counts = await pass;
      return counts.reduce((a, b) => ({ delivered: a.delivered + b.delivered, failed: a.failed + b.failed }), { delivered: 0, failed: 0 });
    } finally {
      this.#inFlight.delete(pass);
    }
  }

  /** Stops polling and waits for the deliveries in flight. Idempotent. */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.kick();
    await this.#starting?.catch(() => undefined); // a failed start has nothing to stop
    await this.#running;
    await Promise.allSettled([...this.#inFlight]);
  }

  #ensureRegistered(): Promise<void> {
    // A failed registration (database down) may be retried by the next call.
    this.#registered ??= this.#registerAll().catch((err: unknown) => {
      this.#registered = undefined;
      this.#starting = undefined;
      throw err;
    });
    return this.#registered;
  }

  async #registerAll(): Promise<void> {
    for (const c of this.#consumers) {
      await this.#db.transaction(async (tx) => {
        await tx.query(fanOutLockSql('exclusive'));
        const before = await tx.query<{ event_types: string[] }>('SELECT event_types FROM outbox_consumers WHERE name = $1', [c.name]);
        const known = before[0]?.event_types ?? [];
        const types = [...new Set(c.eventTypes)].sort();
        await tx.query(
          `INSERT INTO outbox_consumers (name, event_types) VALUES ($1, $2::text[])
           ON CONFLICT (name) DO UPDATE SET event_types = EXCLUDED.event_types`,
          [c.name, types],
        );
        const added = types.filter((t) => !known.includes(t));
        // A new consumer, or a new subscription, gets the events already in the outbox.
        if (added.length > 0) {
          await tx.query(
            `INSERT INTO outbox_deliveries (outbox_id, consumer)
             SELECT id, $1 FROM outbox WHERE event_type = ANY ($2::text[])
             ON CONFLICT (outbox_id, consumer) DO NOTHING`,
            [c.name, added],
          );
        }
      });
    }
  }

  async #runLoop(loop: ConsumerLoop): Promise<void> {
    while (!this.#stopping && !this.#db.closed) {
      const round = this.#deliverRound(loop.consumer);
      this.#inFlight.add(round);
      const { claimed } = await round; // never rejects
      this.#inFlight.delete(round);
      if (claimed < this.#batchSize) await this.#sleep(loop);
    }
  }

  #sleep(loop: ConsumerLoop): Promise<void> {
    if (loop.kicked || this.#stopping) {
      loop.kicked = false;
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        loop.wake = undefined;
        loop.kicked = false;
        resolve();
      };
      const timer = setTimeout(done, this.#pollIntervalMs);
      loop.wake = done;
    });
  }

  async #drain(consumer: OutboxConsumer): Promise<DeliveryCounts> {
    let delivered = 0;
    let failed = 0;
    for (;;) {
      const round = await this.#deliverRound(consumer);
      delivered += round.delivered;
      failed += round.failed;
      if (round.claimed < this.#batchSize || this.#stopping) return { delivered, failed };
    }
  }

  // Never rejects: a failed poll is reported and retried at the next round.
  async #deliverRound(consumer: OutboxConsumer): Promise<DeliveryCounts & { claimed: number }> {
    let rows: ClaimedRow[];
    try {
      rows = await this.#claim(consumer.name);
    } catch (err) {
      this.#onError(err, { consumer: consumer.name });
      return { claimed: 0, delivered: 0, failed: 0 };
    }
    let delivered = 0;
    for (const row of rows) {
      if (await this.#deliver(consumer, row)) delivered += 1;
    }
    return { claimed: rows.length, delivered, failed: rows.length - delivered };
  }

  #claim(consumerName: string): Promise<ClaimedRow[]> {
    const nowMs = this.#nowMs();
    return this.#db.query<ClaimedRow>(
      `UPDATE outbox_deliveries d
       SET attempts = d.attempts + 1, next_attempt_at = $3::timestamptz
       FROM (SELECT outbox_id FROM outbox_deliveries
             WHERE consumer = $1 AND delivered_at IS NULL AND (next_attempt_at IS NULL OR next_attempt_at <= $2::timestamptz)
             ORDER BY outbox_id LIMIT $4
             FOR UPDATE SKIP LOCKED) due,
            outbox o
       WHERE d.consumer = $1 AND d.outbox_id = due.outbox_id AND o.id = d.outbox_id
       RETURNING d.outbox_id, d.attempts, o.payload`,
      [consumerName, iso(nowMs), iso(nowMs + this.#leaseMs), this.#batchSize],
    );
  }

  /** True when delivered (or not for this consumer); false when a retry is scheduled. */
  async #deliver(consumer: OutboxConsumer, row: ClaimedRow): Promise<boolean> {
    const event = asDomainEvent(row.payload);
    const idempotencyKey = event?.idempotencyKey ?? `outbox#${row.outbox_id}`;
    try {
      if (event === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `outbox row ${row.outbox_id} holds no valid domain event`);
      // An event type this consumer no longer subscribes to (its list shrank): nothing to do.
      if (consumer.eventTypes.includes(event.type)) await this.#handleWithTimeout(consumer, event);
    } catch (err) {
      const delayMs = Math.min(this.#maxBackoffMs, this.#baseBackoffMs * 2 ** Math.max(0, row.attempts - 1));
      const nextAttemptAtMs = this.#nowMs() + delayMs;
      this.#onError(err, { consumer: consumer.name, idempotencyKey, attempts: row.attempts, nextAttemptAtMs });
      await this.#record(
        `UPDATE outbox_deliveries SET last_error = $3, next_attempt_at = $4::timestamptz
         WHERE outbox_id = $1 AND consumer = $2 AND delivered_at IS NULL`,
        [row.outbox_id, consumer.name, errorText(err).slice(0, MAX_ERROR_CHARS), iso(nextAttemptAtMs)],
        consumer.name,
        idempotencyKey,
      );
      return false;
    }
    await this.#record(
      'UPDATE outbox_deliveries SET delivered_at = $3::timestamptz WHERE outbox_id = $1 AND consumer = $2 AND delivered_at IS NULL',
      [row.outbox_id, consumer.name, iso(this.#nowMs())],
      consumer.name,
      idempotencyKey,
    );
    return true;
  }

  // Bookkeeping that fails (database gone) leaves the lease to expire: the row is retried.
  async #record(sql: string, params: unknown[], consumer: string, idempotencyKey: string): Promise<void> {
    try {
      await this.#db.query(sql, params);
    } catch (err) {
      this.#onError(err, { consumer, idempotencyKey });
    }
  }

  async #handleWithTimeout(consumer: OutboxConsumer, event: DomainEvent): Promise<void> {
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        const err = new Eco3dError('ECO3D_ERR_TIMEOUT', `outbox consumer ${consumer.name} did not finish within ${this.#handlerTimeoutMs} ms`);
        reject(err); // first, so that the timeout is the error recorded, not the handler's reaction
        abort.abort(err);
      }, this.#handlerTimeoutMs);
    });
    // race() subscribes to both, so a handler that rejects after the timeout is not unhandled.
    try {
      await Promise.race([consumer.handle(event, abort.signal), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function asDomainEvent(payload: unknown): DomainEvent | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const p = payload as Record<string, unknown>;
  if (typeof p.type !== 'string' || typeof p.idempotencyKey !== 'string' || typeof p.version !== 'number') return undefined;
  // The payload was written by insertOutboxEvent from a typed DomainEvent.
  return payload as DomainEvent;
}

export interface OutboxBacklog {
  readonly consumer: string;
  /** Deliveries not yet done. */
  readonly pending: number;
  /** Of those, the ones that failed at least once. */
  readonly failing: number;
  readonly oldestPendingAtMs: number;
}

/** Undelivered work per consumer, for health pages: a growing backlog means a consumer is stuck. */
export async function outboxBacklog(q: Queryable): Promise<OutboxBacklog[]> {
  const rows = await q.query<{ consumer: string; pending: number; failing: number; oldest: Date }>(
    `SELECT d.consumer, count(*) AS pending, count(d.last_error) AS failing, min(o.created_at) AS oldest
     FROM outbox_deliveries d JOIN outbox o ON o.id = d.outbox_id
     WHERE d.delivered_at IS NULL
     GROUP BY d.consumer ORDER BY d.consumer`,
  );
  return rows.map((r) => ({ consumer: r.consumer, pending: r.pending, failing: r.failing, oldestPendingAtMs: r.oldest.getTime() }));
}


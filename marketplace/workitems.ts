// Analysis plugins as AIW-I work items (IHE AI Workflow for Imaging: a Unified Procedure Step per
// study and algorithm). Each AcquisitionCompleted of a tenant creates one item per enabled
// analysis plugin (the outbox consumer below, idempotent on (tenant, acquisition, plugin)). A
// runner claims an item, gives the plugin the de-identified volume and an opaque study reference
// (`study_ref`, random: only this table maps it back), stores the results as SR in the real study,
// and completes the item — with its charge — in one transaction.
//
// State machine: SCHEDULED → IN PROGRESS → COMPLETED | CANCELED. A claim is a lease held by one
// runner: the completing UPDATE requires the item to be still IN PROGRESS and still this
// runner's, so an item claimed twice (a lease that ran out while its first runner was stalled)
// completes once, and its charge (keyed by the item) is booked once. A runner that dies leaves an
// IN PROGRESS item whose lease runs out; the next claim takes it and runs the plugin again (the
// SR's UIDs derive from the item, so a re-run stores the same instance).
//
// A plugin that crashes, hangs, exceeds a limit or returns bad output cancels its item (AIW-I:
// the step is CANCELED with a reason); every run, failed or not, is recorded for the admin. An
// infrastructure failure (study not archived yet, a database error) is retried after a back-off,
// at most MAX_ATTEMPTS times.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AcquisitionCompletedV1, DomainEvent } from '../protocols/events.ts';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import type { Database, OutboxConsumer, Queryable } from '../store/index.ts';
import { activeAnalysisEnablements } from './enablement.ts';
import type { PluginManifest } from './manifest.ts';
import { bookUse, meterSubscriptions, issuePayouts, type RecordCharge } from './revenue.ts';
import type { PluginInput, PluginOutput, PluginRunResult, RunPluginOptions, StartedPlugin } from './sandbox.ts';

export const WORK_ITEM_CONSUMER = 'marketplace-work-items';
export const WORK_ITEM_STATES = ['SCHEDULED', 'IN PROGRESS', 'COMPLETED', 'CANCELED'] as const;
export type WorkItemState = (typeof WORK_ITEM_STATES)[number];
/** Infrastructure attempts before an item is canceled. */
export const MAX_ATTEMPTS = 5;
/** How often the runner meters subscriptions and issues payout statements (both idempotent). */
const BOOKKEEPING_EVERY_MS = 60 * 60_000;
/** How long an item waits for its study to be archived before it is canceled. */
export const STUDY_WAIT_MS = 30 * 60_000;
/** Between two looks at a study not archived yet (a finished study also wakes the runner). */
const NOT_READY_RETRY_MS = 2000;

/** The item's study is not archived yet: not a failure, it waits (and costs no attempt). */
class NotReady extends Error {}

export interface WorkItem {
  readonly id: string;
  readonly tenantId: string;
  readonly enablementId: string;
  readonly pluginId: string;
  readonly version: string;
  readonly acquisitionUid: string;
  /** Opaque: what the plugin sees instead of any identifier of the study. */
  readonly studyRef: string;
  readonly state: WorkItemState;
  readonly attempts: number;
  readonly claimedBy?: string;
  readonly createdAtMs: number;
  readonly finishedAtMs?: number;
  readonly outcome?: Record<string, unknown>;
}

interface ItemRow {
  id: string;
  tenant_id: string;
  enablement_id: string;
  plugin_id: string;
  version: string;
  acquisition_uid: string;
  study_ref: string;
  state: WorkItemState;
  attempts: number;
  claimed_by: string | null;
  created_ms: string | number;
  finished_ms: string | number | null;
  outcome: Record<string, unknown> | null;
}
const ITEM_COLUMNS = `id, tenant_id, enablement_id, plugin_id, version, acquisition_uid, study_ref, state, attempts, claimed_by,
  (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, (extract(epoch FROM finished_at) * 1000)::int8 AS finished_ms, outcome`;
const toItem = (r: ItemRow): WorkItem => ({
  id: r.id,
  tenantId: r.tenant_id,
  enablementId: r.enablement_id,
  pluginId: r.plugin_id,
  version: r.version,
  acquisitionUid: r.acquisition_uid,
  studyRef: r.study_ref,
  state: r.state,
  attempts: r.attempts,
  ...(r.claimed_by === null ? {} : { claimedBy: r.claimed_by }),
  createdAtMs: Number(r.created_ms),
  ...(r.finished_ms === null ? {} : { finishedAtMs: Number(r.finished_ms) }),
  ...(r.outcome === null ? {} : { outcome: r.outcome }),
});

/** Creates the work items of one completed acquisition (one per enabled analysis plugin); idempotent. */
export async function scheduleWorkItems(db: Database, e: { tenantId: string; acquisitionUid: string; nowMs: number }): Promise<WorkItem[]> {
  const enabled = await activeAnalysisEnablements(db, e.tenantId);
  const made: WorkItem[] = [];
  for (const en of enabled) {
    const rows = await db.query<ItemRow>(
      `INSERT INTO marketplace_work_items (id, tenant_id, enablement_id, plugin_id, version, acquisition_uid, study_ref, state, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, 'SCHEDULED', $8::timestamptz) ON CONFLICT (tenant_id, acquisition_uid, plugin_id) DO NOTHING RETURNING ${ITEM_COLUMNS}`,
      [`W-${randomUUID()}`, e.tenantId, en.id, en.pluginId, en.version, e.acquisitionUid, `S-${randomBytes(10).toString('hex')}`, new Date(e.nowMs).toISOString()],
    );
    if (rows[0] !== undefined) made.push(toItem(rows[0]));
  }
  return made;
}

/** The outbox consumer: every completed acquisition gets its work items, then the runner is woken. */
export function workItemConsumer(o: { db: Database; kick: () => void; nowMs?: () => number }): OutboxConsumer {
  return {
    name: WORK_ITEM_CONSUMER,
    eventTypes: ['AcquisitionCompleted'],
    async handle(event: DomainEvent) {
      const e = event as AcquisitionCompletedV1;
      const made = await scheduleWorkItems(o.db, { tenantId: e.tenantId, acquisitionUid: e.acquisitionUid, nowMs: (o.nowMs ?? Date.now)() });
      if (made.length > 0) o.kick();
    },
  };
}

export async function getWorkItem(q: Queryable, id: string): Promise<WorkItem | undefined> {
  const r = (await q.query<ItemRow>(`SELECT ${ITEM_COLUMNS} FROM marketplace_work_items WHERE id = $1`, [id]))[0];
  return r === undefined ? undefined : toItem(r);
}

export interface RunRecord {
  readonly status: 'completed' | 'failed';
  readonly reason?: string;
  readonly detail?: string;
  readonly cpuMs: number;
  readonly wallMs: number;
  readonly peakRssMb: number;
  readonly atMs: number;
}

/** The tenant's work items, newest first, with every run of each. */
export async function listWorkItems(q: Queryable, tenantId: string, limit: number): Promise<(WorkItem & { runs: RunRecord[] })[]> {
  const items = (await q.query<ItemRow>(`SELECT ${ITEM_COLUMNS} FROM marketplace_work_items WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2`, [tenantId, limit])).map(toItem);
  if (items.length === 0) return [];
  const runs = await q.query<{ work_item_id: string; status: 'completed' | 'failed'; reason: string | null; detail: string | null; cpu_ms: number; wall_ms: number; peak_rss_mb: number; at_ms: string | number }>(
    `SELECT work_item_id, status, reason, detail, cpu_ms, wall_ms, peak_rss_mb, (extract(epoch FROM at) * 1000)::int8 AS at_ms FROM marketplace_runs
     WHERE work_item_id = ANY ($1::text[]) ORDER BY id`,
    [items.map((i) => i.id)],
  );
  return items.map((i) => ({
    ...i,
    runs: runs
      .filter((r) => r.work_item_id === i.id)
      .map((r) => ({
        status: r.status,
        ...(r.reason === null ? {} : { reason: r.reason }),
        ...(r.detail === null ? {} : { detail: r.detail }),
        cpuMs: r.cpu_ms,
        wallMs: r.wall_ms,
        peakRssMb: r.peak_rss_mb,
        atMs: Number(r.at_ms),
      })),
  }));
}

/**
 * Claims the oldest item that is SCHEDULED, or IN PROGRESS with its lease run out (its runner
 * died): → IN PROGRESS, this runner's, for `leaseMs`. Undefined when there is none.
 */
export async function claimWorkItem(db: Database, runnerId: string, nowMs: number, leaseMs: number): Promise<WorkItem | undefined> {
  const now = new Date(nowMs).toISOString();
  const rows = await db.query<ItemRow>(
    `UPDATE marketplace_work_items SET state = 'IN PROGRESS', claimed_by = $1, lease_until = $3::timestamptz, attempts = attempts + 1
     WHERE id = (SELECT id FROM marketplace_work_items
                 WHERE state = 'SCHEDULED' OR (state = 'IN PROGRESS' AND lease_until < $2::timestamptz)
                 ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
       AND (state = 'SCHEDULED' OR (state = 'IN PROGRESS' AND lease_until < $2::timestamptz))
     RETURNING ${ITEM_COLUMNS}`,
    [runnerId, now, new Date(nowMs + leaseMs).toISOString()],
  );
  return rows[0] === undefined ? undefined : toItem(rows[0]);
}

/** Still this runner's item: the lease is extended (a long plugin run keeps its claim). */
async function renewLease(db: Database, id: string, runnerId: string, untilMs: number): Promise<boolean> {
  const rows = await db.query("UPDATE marketplace_work_items SET lease_until = $3::timestamptz WHERE id = $1 AND claimed_by = $2 AND state = 'IN PROGRESS' RETURNING 1", [
    id,
    runnerId,
    new Date(untilMs).toISOString(),
  ]);
  return rows.length > 0;
}

/** IN PROGRESS (this runner's) → COMPLETED | CANCELED, in the caller's transaction. False if the item is no longer this runner's. */
async function finish(tx: Queryable, id: string, runnerId: string, state: 'COMPLETED' | 'CANCELED', outcome: Record<string, unknown>, nowMs: number): Promise<boolean> {
  const rows = await tx.query(
    `UPDATE marketplace_work_items SET state = $3, outcome = $4::jsonb, finished_at = $5::timestamptz, lease_until = NULL
     WHERE id = $1 AND claimed_by = $2 AND state = 'IN PROGRESS' RETURNING 1`,
    [id, runnerId, state, JSON.stringify(outcome), new Date(nowMs).toISOString()],
  );
  return rows.length > 0;
}

export async function recordRun(
  q: Queryable,
  r: { workItemId: string | null; pluginId: string; version: string; purpose: 'work-item' | 'validation'; result: PluginRunResult },
): Promise<void> {
  const res = r.result;
  await q.query(
    `INSERT INTO marketplace_runs (work_item_id, plugin_id, version, purpose, status, reason, detail, cpu_ms, wall_ms, peak_rss_mb) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
    [
      r.workItemId,
      r.pluginId,
      r.version,
      r.purpose,
      res.status,
      res.status === 'failed' ? res.reason : null,
      res.status === 'failed' ? res.detail.slice(0, 4000) : null,
      Math.round(res.cpuMs),
      Math.round(res.wallMs),
      Math.round(res.peakRssMb),
    ],
  );
}

/** What the runner needs from the rest of the platform (server/ wires the real ones). */
export interface RunnerDeps {
  readonly db: Database;
  /** The plugin's unpacked, verified package and its manifest. */
  readonly pluginFiles: (pluginId: string, version: string) => Promise<{ dir: string; manifest: PluginManifest }>;
  /**
   * The de-identified volume of the item's acquisition, written under `workDir`; null when its
   * study is not archived yet (the item is retried).
   */
  readonly prepareInput: (item: WorkItem, workDir: string, signal: AbortSignal) => Promise<PluginInput['volume'] | null>;
  /**
   * Stores the results in the real study (SR, FHIR Observations). Must be idempotent on the item
   * (same UIDs for a re-run). Runs before the completing transaction.
   */
  readonly storeResults: (item: WorkItem, manifest: PluginManifest, output: PluginOutput) => Promise<{ srSopInstanceUid: string; observationIds: readonly string[] }>;
  /** sandbox.ts startPlugin: the process starts while the input is being prepared. */
  readonly startPlugin: (o: Omit<RunPluginOptions, 'input'>) => Promise<StartedPlugin>;
  readonly recordCharge: RecordCharge;
  readonly log: { info(o: object, msg: string): void; warn(o: object, msg: string): void; error(o: object, msg: string): void };
  readonly nowMs?: () => number;
  /** Default 5 min: longer than any plugin's wall limit (the lease is renewed meanwhile). */
  readonly leaseMs?: number;
  readonly tmpRoot?: string;
}

/**
 * Claims and runs work items one at a time (a plugin run takes a core; the robot's control must
 * keep the other). `kick()` wakes it; an hourly tick (and the first round) also meters subscriptions and issues
 * payout statements.
 */
export class WorkItemRunner {
  readonly id = `runner-${randomBytes(6).toString('hex')}`;
  readonly #deps: RunnerDeps;
  readonly #leaseMs: number;
  readonly #running = new Map<string, AbortController>();
  #stopped = true;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #kicked = false;

  constructor(deps: RunnerDeps) {
    this.#deps = deps;
    this.#leaseMs = deps.leaseMs ?? 5 * 60_000;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#loop = this.#run();
  }

  kick(): void {
    this.#kicked = true;
    this.#wake?.();
  }

  /** Aborts the runs of these items (their plugin processes are killed; the items were canceled). */
  abort(workItemIds: readonly string[]): void {
    for (const id of workItemIds) this.#running.get(id)?.abort(new Eco3dError('ECO3D_ERR_CONFLICT', 'the work item was canceled'));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const c of this.#running.values()) c.abort(new Eco3dError('ECO3D_ERR_CLOSED', 'the runner is stopping'));
    this.#wake?.();
    await this.#loop;
  }

  /** Runs every claimable item now, then returns (tests, and `eco3d` one-shot use). */
  async drain(): Promise<number> {
    let n = 0;
    while (await this.runOne()) n++;
    return n;
  }

  async #run(): Promise<void> {
    const now = this.#deps.nowMs ?? Date.now;
    let lastTickMs = 0;
    while (!this.#stopped) {
      this.#kicked = false;
      try {
        if (now() - lastTickMs > BOOKKEEPING_EVERY_MS) {
          lastTickMs = now();
          await meterSubscriptions(this.#deps.db, this.#deps.recordCharge, now());
          await issuePayouts(this.#deps.db, now());
        }
        while (!this.#stopped && (await this.runOne()));
      } catch (err) {
        this.#deps.log.error({ err: toEco3dError(err).message }, 'marketplace runner: poll failed');
      }
      if (this.#stopped || this.#kicked) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 2000);
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Claims one item and takes it to its end (or back to the queue). False when there was none. */
  async runOne(): Promise<boolean> {
    const d = this.#deps;
    const now = d.nowMs ?? Date.now;
    const item = await claimWorkItem(d.db, this.id, now(), this.#leaseMs);
    if (item === undefined) return false;
    const ctl = new AbortController();
    this.#running.set(item.id, ctl);
    const workDir = await mkdtemp(join(d.tmpRoot ?? tmpdir(), 'eco3d-work-'));
    try {
      await this.#process(item, workDir, ctl.signal);
    } catch (err) {
      if (err instanceof NotReady && now() - item.createdAtMs < STUDY_WAIT_MS) {
        await d.db.query(
          "UPDATE marketplace_work_items SET attempts = attempts - 1, lease_until = $3::timestamptz WHERE id = $1 AND claimed_by = $2 AND state = 'IN PROGRESS'",
          [item.id, this.id, new Date(now() + NOT_READY_RETRY_MS).toISOString()],
        );
        return true;
      }
      const e = toEco3dError(err);
      if (item.attempts >= MAX_ATTEMPTS) {
        await finish(d.db, item.id, this.id, 'CANCELED', { status: 'failed', reason: 'gave-up', detail: `${e.code}: ${e.message}` }, now());
        d.log.error({ workItem: item.id, plugin: item.pluginId, err: e.message }, 'work item canceled after repeated failures');
      } else {
        // Back to the queue after a back-off: the lease is shortened to it.
        const backoffMs = Math.min(60_000, 1000 * 2 ** (item.attempts - 1));
        await renewLease(d.db, item.id, this.id, now() + backoffMs - 1);
        d.log.warn({ workItem: item.id, plugin: item.pluginId, err: e.message, retryInMs: backoffMs }, 'work item will be retried');
      }
    } finally {
      this.#running.delete(item.id);
      await rm(workDir, { recursive: true, force: true });
    }
    return true;
  }

  async #process(item: WorkItem, workDir: string, signal: AbortSignal): Promise<void> {
    const d = this.#deps;
    const now = d.nowMs ?? Date.now;
    const { dir, manifest } = await d.pluginFiles(item.pluginId, item.version);
    // The sandboxed process starts now and the input is prepared meanwhile: node's start-up in
    // its namespace is most of a run's overhead, and it overlaps the de-identification.
    const started = await d.startPlugin({ pluginDir: dir, entry: manifest.entry as string, limits: manifest.limits, signal, ...(d.tmpRoot === undefined ? {} : { tmpRoot: d.tmpRoot }) });
    let volume: PluginInput['volume'] | null;
    try {
      volume = await d.prepareInput(item, workDir, signal);
    } catch (err) {
      await started.cancel();
      throw err;
    }
    if (volume === null) {
      await started.cancel();
      throw new NotReady(`the study of acquisition ${item.acquisitionUid} is not archived yet`);
    }
    // Keep the claim while the plugin runs (its wall limit may exceed the lease).
    const renew = setInterval(() => {
      renewLease(d.db, item.id, this.id, now() + this.#leaseMs).catch(() => undefined);
    }, Math.max(1000, this.#leaseMs / 3));
    let result: PluginRunResult;
    try {
      result = await started.run({ volume, study: { ref: item.studyRef } });
    } finally {
      clearInterval(renew);
    }
    await recordRun(d.db, { workItemId: item.id, pluginId: item.pluginId, version: item.version, purpose: 'work-item', result });
    if (result.status === 'failed') {
      if (result.reason === 'canceled') return; // canceled by a disable: the item is already CANCELED
      const ok = await finish(d.db, item.id, this.id, 'CANCELED', { status: 'failed', reason: result.reason, detail: result.detail }, now());
      d.log.warn({ workItem: item.id, plugin: item.pluginId, reason: result.reason, detail: result.detail, ok }, 'plugin run failed: work item canceled');
      return;
    }
    let stored: Awaited<ReturnType<RunnerDeps['storeResults']>>;
    try {
      stored = await d.storeResults(item, manifest, result.output);
    } catch (err) {
      // Results no SR can hold (no value at all, a unit or a name out of bounds) are the plugin's
      // fault, like bad output: the item is canceled, not retried.
      if (!(err instanceof Eco3dError) || err.code !== 'ECO3D_ERR_BAD_REQUEST') throw err;
      await finish(d.db, item.id, this.id, 'CANCELED', { status: 'failed', reason: 'bad-output', detail: `the results cannot be stored: ${err.message}` }, now());
      d.log.warn({ workItem: item.id, plugin: item.pluginId, err: err.message }, 'plugin results refused: work item canceled');
      return;
    }
    const completed = await d.db.transaction(async (tx) => {
      const ok = await finish(
        tx,
        item.id,
        this.id,
        'COMPLETED',
        {
          status: 'completed',
          srSopInstanceUid: stored.srSopInstanceUid,
          observations: stored.observationIds,
          measurements: result.output.measurements,
          findings: result.output.findings.length,
        },
        now(),
      );
      if (!ok) return false;
      if (manifest.pricing.model === 'per-use') {
        await bookUse(tx, d.recordCharge, {
          workItemId: item.id,
          hospitalTenantId: item.tenantId,
          pluginId: item.pluginId,
          version: item.version,
          name: manifest.name,
          amountCents: manifest.pricing.amountCents,
          occurredAtMs: now(),
        });
      }
      return true;
    });
    if (completed) d.log.info({ workItem: item.id, plugin: item.pluginId, sr: stored.srSopInstanceUid, wallMs: Math.round(result.wallMs) }, 'work item completed');
    else d.log.warn({ workItem: item.id, plugin: item.pluginId }, 'work item was taken over or canceled meanwhile: this run is not counted');
  }
}

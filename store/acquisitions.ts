// Acquisitions: the current state of each one, its transition history, and — in the same
// transaction as a terminal transition — its AcquisitionCompleted / AcquisitionAborted event in
// the outbox (ARCHITECTURE.md, "Exactly-once side effects"). The controller owns the state
// machine; this layer refuses what would corrupt the record: a transition whose `from` is not the
// stored state, and any transition out of a terminal state.
import {
  ABORT_REASONS,
  ACQUISITION_STATES,
  acquisitionEventKey,
  isTerminalAcquisitionState,
  type AbortReason,
  type AcquisitionStateName,
  type AcquisitionTransition,
  type DomainEvent,
  type SweepSummary,
} from '../protocols/events.ts';
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from './database.ts';
import { insertOutboxEvent } from './outbox.ts';
import { badRequest, finiteMs, iso, rethrowConstraint } from './util.ts';

export interface AcquisitionRecord {
  readonly uid: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly state: AcquisitionStateName;
  readonly sweep?: SweepSummary;
  readonly operatorId: string;
  readonly startedAtMs: number;
  readonly endedAtMs?: number;
  readonly abortReason?: AbortReason;
  readonly framesAcquired?: number;
  /** Time of the last transition. */
  readonly updatedAtMs: number;
}

export interface TransitionResult {
  /** `replayed`: the same transition was already stored (a retry); nothing was written. */
  readonly outcome: 'recorded' | 'replayed';
  readonly acquisition: AcquisitionRecord;
  /** The event this call put in the outbox: kick the dispatcher after it. */
  readonly event?: DomainEvent;
}

interface AcquisitionRow {
  uid: string;
  tenant_id: string;
  device_id: string;
  state: AcquisitionStateName;
  sweep: SweepSummary | null;
  operator_id: string;
  started_at: Date;
  ended_at: Date | null;
  abort_reason: AbortReason | null;
  frames_acquired: number | null;
  updated_at: Date;
}

const toRecord = (r: AcquisitionRow): AcquisitionRecord => ({
  uid: r.uid,
  tenantId: r.tenant_id,
  deviceId: r.device_id,
  state: r.state,
  ...(r.sweep === null ? {} : { sweep: r.sweep }),
  operatorId: r.operator_id,
  startedAtMs: r.started_at.getTime(),
  ...(r.ended_at === null ? {} : { endedAtMs: r.ended_at.getTime() }),
  ...(r.abort_reason === null ? {} : { abortReason: r.abort_reason }),
  ...(r.frames_acquired === null ? {} : { framesAcquired: r.frames_acquired }),
  updatedAtMs: r.updated_at.getTime(),
});

function validate(t: AcquisitionTransition): void {
  for (const [name, value] of [
    ['acquisitionUid', t.acquisitionUid],
    ['tenantId', t.tenantId],
    ['deviceId', t.deviceId],
    ['event', t.event],
    ['actor', t.actor],
  ] as const) {
    if (typeof value !== 'string' || value === '') throw badRequest(`acquisition transition: ${name} must be a non-empty string`);
  }
  if (!ACQUISITION_STATES.includes(t.from) || !ACQUISITION_STATES.includes(t.to)) {
    throw badRequest(`acquisition transition ${String(t.from)} → ${String(t.to)}: unknown state`);
  }
  finiteMs('acquisition transition atMs', t.atMs);
  if (t.abortReason !== undefined && !ABORT_REASONS.includes(t.abortReason)) throw badRequest(`unknown abort reason ${String(t.abortReason)}`);
  if (t.to === 'aborted' && t.abortReason === undefined) throw badRequest('a transition to aborted needs an abortReason');
  if (t.to !== 'aborted' && t.abortReason !== undefined) throw badRequest(`an abortReason belongs to a transition to aborted, not to ${t.to}`);
  if (t.framesAcquired !== undefined && !(Number.isSafeInteger(t.framesAcquired) && t.framesAcquired >= 0)) {
    throw badRequest(`framesAcquired must be a non-negative integer, got ${t.framesAcquired}`);
  }
  // Billing counts frames: a completion without the count is a bug upstream, not a zero.
  if (t.to === 'completed' && t.framesAcquired === undefined) throw badRequest('a transition to completed needs framesAcquired');
  if (t.sweep !== undefined) validateSweep(t.sweep);
}

function validateSweep(s: SweepSummary): void {
  if (s.kind !== 'linear' && s.kind !== 'fan') throw badRequest(`unknown sweep kind ${String(s.kind)}`);
  for (const key of ['lengthMm', 'tiltRangeRad', 'speedMmPerS', 'targetForceN'] as const) {
    if (!Number.isFinite(s[key])) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `sweep.${key} must be finite, got ${s[key]}`);
  }
}

function conflict(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_CONFLICT', message);
}

/**
 * Stores one transition of the acquisition state machine, atomically with its outbox event when
 * `t.to` is terminal. Replaying the last stored transition (a retry after a lost reply) is a
 * no-op. The device must exist (ensureDevice).
 */
export async function recordAcquisitionTransition(db: Database, t: AcquisitionTransition): Promise<TransitionResult> {
  validate(t);
  try {
    return await db.transaction((tx) => applyTransition(tx, t));
  } catch (err) {
    return rethrowConstraint(err, { missingParent: `device ${t.deviceId} of tenant ${t.tenantId} is not registered` });
  }
}

const SELECT_FOR_UPDATE = 'SELECT * FROM acquisitions WHERE uid = $1 FOR UPDATE';

async function applyTransition(tx: Queryable, t: AcquisitionTransition): Promise<TransitionResult> {
  let row = (await tx.query<AcquisitionRow>(SELECT_FOR_UPDATE, [t.acquisitionUid]))[0];
  let updated: AcquisitionRow | undefined;
  if (row === undefined) {
    // No row yet: the acquisition is idle, and this is its first transition.
    if (t.from !== 'idle') throw conflict(`acquisition ${t.acquisitionUid} is unknown: its first transition leaves idle, not ${t.from}`);
    const terminal = isTerminalAcquisitionState(t.to);
    updated = (
      await tx.query<AcquisitionRow>(
        `INSERT INTO acquisitions (uid, tenant_id, device_id, state, sweep, operator_id, started_at, ended_at, abort_reason, frames_acquired, updated_at)
         VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::timestamptz, $8::timestamptz, $9, $10, $7::timestamptz)
         ON CONFLICT (uid) DO NOTHING RETURNING *`,
        [
          t.acquisitionUid,
          t.tenantId,
          t.deviceId,
          t.to,
          t.sweep === undefined ? null : JSON.stringify(t.sweep),
          t.actor,
          iso(t.atMs),
          terminal ? iso(t.atMs) : null,
          t.abortReason ?? null,
          t.framesAcquired ?? null,
        ],
      )
    )[0];
    // Lost a race with a concurrent first transition (PostgreSQL): judge against its row.
    if (updated === undefined) row = (await tx.query<AcquisitionRow>(SELECT_FOR_UPDATE, [t.acquisitionUid]))[0];
  }
  if (row !== undefined) {
    if (row.tenant_id !== t.tenantId || row.device_id !== t.deviceId) {
      throw conflict(`acquisition ${t.acquisitionUid} belongs to ${row.tenant_id}/${row.device_id}, not ${t.tenantId}/${t.deviceId}`);
    }
    if (row.state !== t.from || isTerminalAcquisitionState(row.state)) {
      if (await isReplayOfLast(tx, t)) return { outcome: 'replayed', acquisition: toRecord(row) };
      throw conflict(
        isTerminalAcquisitionState(row.state)
          ? `acquisition ${t.acquisitionUid} is ${row.state}: no transition leaves a terminal state (${t.event} refused)`
          : `acquisition ${t.acquisitionUid} is ${row.state}, not ${t.from}: ${t.event} refused`,
      );
    }
    const terminal = isTerminalAcquisitionState(t.to);
    updated = (
      await tx.query<AcquisitionRow>(
        `UPDATE acquisitions SET state = $2, sweep = COALESCE($3::jsonb, sweep), ended_at = $4::timestamptz, abort_reason = $5,
           frames_acquired = COALESCE($6, frames_acquired), updated_at = $7::timestamptz
         WHERE uid = $1 RETURNING *`,
        [
          t.acquisitionUid,
          t.to,
          t.sweep === undefined ? null : JSON.stringify(t.sweep),
          terminal ? iso(t.atMs) : null,
          t.abortReason ?? null,
          t.framesAcquired ?? null,
          iso(t.atMs),
        ],
      )
    )[0];
  }
  if (updated === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `acquisition ${t.acquisitionUid} vanished mid-transaction`);

  await tx.query(
    `INSERT INTO acquisition_transitions (acquisition_uid, from_state, to_state, event, actor, at, detail, abort_reason)
     VALUES ($1, $2, $3, $4, $5, $6::timestamptz, $7, $8)`,
    [t.acquisitionUid, t.from, t.to, t.event, t.actor, iso(t.atMs), t.detail ?? null, t.abortReason ?? null],
  );

  const acquisition = toRecord(updated);
  const event = terminalEvent(acquisition, t);
  if (event === undefined) return { outcome: 'recorded', acquisition };
  await insertOutboxEvent(tx, event);
  return { outcome: 'recorded', acquisition, event };
}

async function isReplayOfLast(tx: Queryable, t: AcquisitionTransition): Promise<boolean> {
  const last = (
    await tx.query<{ from_state: string; to_state: string; event: string; at: Date }>(
      'SELECT from_state, to_state, event, at FROM acquisition_transitions WHERE acquisition_uid = $1 ORDER BY id DESC LIMIT 1',
      [t.acquisitionUid],
    )
  )[0];
  return last !== undefined && last.from_state === t.from && last.to_state === t.to && last.event === t.event && last.at.getTime() === t.atMs;
}

function terminalEvent(a: AcquisitionRecord, t: AcquisitionTransition): DomainEvent | undefined {
  const base = {
    version: 1,
    acquisitionUid: a.uid,
    tenantId: a.tenantId,
    deviceId: a.deviceId,
    occurredAt: iso(t.atMs),
    startedAt: iso(a.startedAtMs),
  } as const;
  switch (t.to) {
    case 'completed': {
      if (a.sweep === undefined) throw badRequest(`acquisition ${a.uid} completed without a sweep: the first transition carries it`);
      return {
        ...base,
        type: 'AcquisitionCompleted',
        idempotencyKey: acquisitionEventKey('AcquisitionCompleted', a.tenantId, a.deviceId, a.uid),
        operatorId: a.operatorId,
        sweep: a.sweep,
        framesAcquired: t.framesAcquired ?? 0,
        durationMs: t.atMs - a.startedAtMs,
      };
    }
    case 'aborted':
      return {
        ...base,
        type: 'AcquisitionAborted',
        idempotencyKey: acquisitionEventKey('AcquisitionAborted', a.tenantId, a.deviceId, a.uid),
        reason: t.abortReason ?? 'fault',
        detail: t.detail ?? '',
      };
    case 'idle':
    case 'positioning':
    case 'scanning':
    case 'paused':
      return undefined;
  }
}

/** Scoped by tenant: a tenant never reads another's acquisition by guessing a UID. */
export async function getAcquisition(q: Queryable, tenantId: string, uid: string): Promise<AcquisitionRecord | undefined> {
  const row = (await q.query<AcquisitionRow>('SELECT * FROM acquisitions WHERE tenant_id = $1 AND uid = $2', [tenantId, uid]))[0];
  return row === undefined ? undefined : toRecord(row);
}

/** Newest first. */
export async function listAcquisitions(q: Queryable, tenantId: string, limit = 50): Promise<AcquisitionRecord[]> {
  const rows = await q.query<AcquisitionRow>('SELECT * FROM acquisitions WHERE tenant_id = $1 ORDER BY started_at DESC, uid LIMIT $2', [
    tenantId,
    Math.max(1, Math.min(1000, Math.trunc(limit))),
  ]);
  return rows.map(toRecord);
}

export interface StoredTransition {
  readonly from: AcquisitionStateName;
  readonly to: AcquisitionStateName;
  readonly event: string;
  readonly actor: string;
  readonly atMs: number;
  readonly detail?: string;
  readonly abortReason?: AbortReason;
}

/** The acquisition's history, oldest first. */
export async function listAcquisitionTransitions(q: Queryable, tenantId: string, uid: string): Promise<StoredTransition[]> {
  const rows = await q.query<{
    from_state: AcquisitionStateName;
    to_state: AcquisitionStateName;
    event: string;
    actor: string;
    at: Date;
    detail: string | null;
    abort_reason: AbortReason | null;
  }>(
    `SELECT t.from_state, t.to_state, t.event, t.actor, t.at, t.detail, t.abort_reason
     FROM acquisition_transitions t JOIN acquisitions a ON a.uid = t.acquisition_uid
     WHERE a.tenant_id = $1 AND t.acquisition_uid = $2 ORDER BY t.id`,
    [tenantId, uid],
  );
  return rows.map((r) => ({
    from: r.from_state,
    to: r.to_state,
    event: r.event,
    actor: r.actor,
    atMs: r.at.getTime(),
    ...(r.detail === null ? {} : { detail: r.detail }),
    ...(r.abort_reason === null ? {} : { abortReason: r.abort_reason }),
  }));
}

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Eco3dError } from '../protocols/errors.ts';
import { acquisitionEventKey, type AcquisitionTransition, type SweepSummary } from '../protocols/events.ts';
import { ensureDevice, ensureTenant } from './accounts.ts';
import { getAcquisition, listAcquisitions, listAcquisitionTransitions, recordAcquisitionTransition } from './acquisitions.ts';
import type { Queryable } from './database.ts';
import { forEachDatabase } from './testing.ts';

const T0 = Date.UTC(2026, 2, 1, 9, 0, 0);
const SWEEP: SweepSummary = { kind: 'linear', lengthMm: 80, tiltRangeRad: 0, speedMmPerS: 8, targetForceN: 4 };

const eco3dError = (code: string, includes?: string) => (err: unknown) => {
  assert.ok(err instanceof Eco3dError, `expected an Eco3dError, got ${String(err)}`);
  assert.equal(err.code, code);
  if (includes !== undefined) assert.ok(err.message.includes(includes), `"${err.message}" should mention ${includes}`);
  return true;
};

async function count(q: Queryable, sql: string, params: unknown[]): Promise<number> {
  const [row] = await q.query<{ n: number }>(`SELECT count(*) AS n FROM ${sql}`, params);
  return row?.n ?? -1;
}

forEachDatabase('acquisitions', (ctx) => {
  const tenantId = 'st-olav';
  const deviceId = 'robot-a';
  let prepared = false;
  async function newAcquisition(): Promise<{ uid: string; t: (x: Partial<AcquisitionTransition> & Pick<AcquisitionTransition, 'from' | 'to' | 'event'>) => AcquisitionTransition }> {
    if (!prepared) {
      await ensureTenant(ctx.db, { id: tenantId, name: 'St. Olav' });
      await ensureTenant(ctx.db, { id: 'other-hospital', name: 'Other' });
      await ensureDevice(ctx.db, { tenantId, id: deviceId, model: 'UR5e', serial: 'SN-1' });
      prepared = true;
    }
    const uid = `2.25.${BigInt(`0x${randomUUID().replace(/-/g, '')}`)}`;
    return { uid, t: (x) => ({ acquisitionUid: uid, tenantId, deviceId, actor: 'acc-1', atMs: T0, ...x }) };
  }

  async function scanning(): Promise<Awaited<ReturnType<typeof newAcquisition>>> {
    const a = await newAcquisition();
    await recordAcquisitionTransition(ctx.db, a.t({ from: 'idle', to: 'positioning', event: 'start', sweep: SWEEP }));
    await recordAcquisitionTransition(ctx.db, a.t({ from: 'positioning', to: 'scanning', event: 'reach-start', atMs: T0 + 1500 }));
    return a;
  }

  void test('a completed acquisition: state, history and one outbox event, written together', async () => {
    const a = await scanning();
    await recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'paused', event: 'pause', atMs: T0 + 3000 }));
    await recordAcquisitionTransition(ctx.db, a.t({ from: 'paused', to: 'scanning', event: 'resume', atMs: T0 + 4000 }));
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 0, 'no event before the end');

    const done = await recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'completed', event: 'finish', atMs: T0 + 9000, framesAcquired: 240 }));
    assert.equal(done.outcome, 'recorded');
    const key = acquisitionEventKey('AcquisitionCompleted', tenantId, deviceId, a.uid);
    assert.deepEqual(done.event, {
      version: 1,
      type: 'AcquisitionCompleted',
      idempotencyKey: key,
      acquisitionUid: a.uid,
      tenantId,
      deviceId,
      occurredAt: new Date(T0 + 9000).toISOString(),
      startedAt: new Date(T0).toISOString(),
      operatorId: 'acc-1',
      sweep: SWEEP,
      framesAcquired: 240,
      durationMs: 9000,
    });
    const outbox = await ctx.db.query<{ event_type: string; payload: unknown }>('SELECT event_type, payload FROM outbox WHERE idempotency_key = $1', [key]);
    assert.deepEqual(outbox, [{ event_type: 'AcquisitionCompleted', payload: done.event }]);

    assert.deepEqual(await getAcquisition(ctx.db, tenantId, a.uid), {
      uid: a.uid,
      tenantId,
      deviceId,
      state: 'completed',
      sweep: SWEEP,
      operatorId: 'acc-1',
      startedAtMs: T0,
      endedAtMs: T0 + 9000,
      framesAcquired: 240,
      updatedAtMs: T0 + 9000,
    });
    const history = await listAcquisitionTransitions(ctx.db, tenantId, a.uid);
    assert.deepEqual(
      history.map((h) => `${h.from}>${h.to}:${h.event}`),
      ['idle>positioning:start', 'positioning>scanning:reach-start', 'scanning>paused:pause', 'paused>scanning:resume', 'scanning>completed:finish'],
    );
  });

  void test('an aborted acquisition writes AcquisitionAborted with its reason', async () => {
    const a = await scanning();
    const r = await recordAcquisitionTransition(
      ctx.db,
      a.t({ from: 'scanning', to: 'aborted', event: 'abort', atMs: T0 + 5000, abortReason: 'link-lost', detail: 'serial port closed' }),
    );
    assert.equal(r.event?.type, 'AcquisitionAborted');
    assert.deepEqual(
      { reason: r.event?.type === 'AcquisitionAborted' ? r.event.reason : undefined, key: r.event?.idempotencyKey },
      { reason: 'link-lost', key: acquisitionEventKey('AcquisitionAborted', tenantId, deviceId, a.uid) },
    );
    const stored = await getAcquisition(ctx.db, tenantId, a.uid);
    assert.equal(stored?.state, 'aborted');
    assert.equal(stored?.abortReason, 'link-lost');
    // Abort straight from idle (before anything moved) also works and is recorded.
    const b = await newAcquisition();
    const early = await recordAcquisitionTransition(ctx.db, b.t({ from: 'idle', to: 'aborted', event: 'abort', abortReason: 'estop' }));
    assert.equal(early.event?.type, 'AcquisitionAborted');
  });

  void test('replaying the terminal transition is a no-op: one outbox row, one history row', async () => {
    const a = await scanning();
    const finish = a.t({ from: 'scanning', to: 'completed', event: 'finish', atMs: T0 + 7000, framesAcquired: 100 });
    await recordAcquisitionTransition(ctx.db, finish);
    const again = await recordAcquisitionTransition(ctx.db, finish);
    assert.equal(again.outcome, 'replayed');
    assert.equal(again.event, undefined);
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 1);
    assert.equal(await count(ctx.db, 'acquisition_transitions WHERE acquisition_uid = $1', [a.uid]), 3);
  });

  void test('refused: a stale `from`, anything out of a terminal state, an unknown acquisition not leaving idle', async () => {
    const a = await scanning();
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'positioning', to: 'scanning', event: 'reach-start', atMs: T0 + 9999 })),
      eco3dError('ECO3D_ERR_CONFLICT', 'is scanning, not positioning'),
    );
    await recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'completed', event: 'finish', atMs: T0 + 8000, framesAcquired: 10 }));
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'completed', to: 'scanning', event: 'resume', atMs: T0 + 9000 })),
      eco3dError('ECO3D_ERR_CONFLICT', 'no transition leaves a terminal state'),
    );
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'aborted', event: 'abort', atMs: T0 + 9000, abortReason: 'fault' })),
      eco3dError('ECO3D_ERR_CONFLICT', 'completed'),
    );
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 1, 'no abort event after completion');
    const b = await newAcquisition();
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, b.t({ from: 'scanning', to: 'completed', event: 'finish', framesAcquired: 1 })),
      eco3dError('ECO3D_ERR_CONFLICT', 'first transition leaves idle'),
    );
  });

  void test('bad input is refused before touching the database', async () => {
    const a = await scanning();
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'completed', event: 'finish' })),
      eco3dError('ECO3D_ERR_BAD_REQUEST', 'framesAcquired'),
    );
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'aborted', event: 'abort' })),
      eco3dError('ECO3D_ERR_BAD_REQUEST', 'abortReason'),
    );
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, a.t({ from: 'scanning', to: 'paused', event: 'pause', atMs: Number.NaN })),
      eco3dError('ECO3D_ERR_NOT_FINITE'),
    );
    const b = await newAcquisition();
    await assert.rejects(
      recordAcquisitionTransition(ctx.db, { ...b.t({ from: 'idle', to: 'positioning', event: 'start', sweep: SWEEP }), deviceId: 'no-such-robot' }),
      eco3dError('ECO3D_ERR_NOT_FOUND', 'no-such-robot'),
    );
  });

  void test('a failure mid-transaction leaves neither the completion nor its outbox row', async () => {
    const a = await scanning();
    // Make the outbox insert fail for this acquisition only, after the state update and the
    // history row were written in the same transaction.
    await ctx.db.exec(`
      CREATE FUNCTION test_fail_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.payload->>'acquisitionUid' = '${a.uid}' THEN RAISE EXCEPTION 'injected outbox failure'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER test_fail_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION test_fail_outbox();`);
    const finish = a.t({ from: 'scanning', to: 'completed', event: 'finish', atMs: T0 + 6000, framesAcquired: 50 });
    try {
      await assert.rejects(recordAcquisitionTransition(ctx.db, finish), /injected outbox failure/);
    } finally {
      await ctx.db.exec('DROP TRIGGER test_fail_outbox ON outbox; DROP FUNCTION test_fail_outbox();');
    }
    assert.equal((await getAcquisition(ctx.db, tenantId, a.uid))?.state, 'scanning');
    assert.equal(await count(ctx.db, 'acquisition_transitions WHERE acquisition_uid = $1', [a.uid]), 2);
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 0);
    // The controller's retry then succeeds, once.
    assert.equal((await recordAcquisitionTransition(ctx.db, finish)).outcome, 'recorded');
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 1);
  });

  void test('concurrent identical transitions: one wins, the other is a replay or a conflict, never a second event', async () => {
    const a = await scanning();
    const finish = a.t({ from: 'scanning', to: 'completed', event: 'finish', atMs: T0 + 6000, framesAcquired: 5 });
    const results = await Promise.allSettled([1, 2, 3].map(() => recordAcquisitionTransition(ctx.db, finish)));
    const outcomes = results.map((r) => (r.status === 'fulfilled' ? r.value.outcome : 'rejected'));
    assert.equal(outcomes.filter((o) => o === 'recorded').length, 1, outcomes.join());
    assert.equal(await count(ctx.db, 'outbox WHERE payload->>$1 = $2', ['acquisitionUid', a.uid]), 1);
    // The same for the first transition, which creates the row.
    const b = await newAcquisition();
    const start = b.t({ from: 'idle', to: 'positioning', event: 'start', sweep: SWEEP });
    const starts = await Promise.all([1, 2, 3].map(() => recordAcquisitionTransition(ctx.db, start)));
    assert.deepEqual(starts.map((r) => r.outcome).sort(), ['recorded', 'replayed', 'replayed']);
    assert.equal(await count(ctx.db, 'acquisition_transitions WHERE acquisition_uid = $1', [b.uid]), 1);
  });

  void test('reads are scoped by tenant; the list is newest first', async () => {
    const a = await scanning();
    assert.equal(await getAcquisition(ctx.db, 'other-hospital', a.uid), undefined);
    assert.deepEqual(await listAcquisitionTransitions(ctx.db, 'other-hospital', a.uid), []);
    const later = await newAcquisition();
    await recordAcquisitionTransition(ctx.db, later.t({ from: 'idle', to: 'positioning', event: 'start', sweep: SWEEP, atMs: T0 + 3_600_000 }));
    const list = await listAcquisitions(ctx.db, tenantId, 2);
    assert.equal(list.length, 2);
    assert.equal(list[0]?.uid, later.uid);
    assert.deepEqual(await listAcquisitions(ctx.db, 'other-hospital', 10), []);
  });
});

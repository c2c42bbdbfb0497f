// Research consent: an append-only history whose latest row is the current decision.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rejectsWith } from '../protocols/testing.ts';
import { ensureDevice, ensureTenant } from './accounts.ts';
import { currentConsent, listConsents, recordConsent } from './consents.ts';
import { startExam } from './exams.ts';
import { forEachDatabase } from './testing.ts';

forEachDatabase('research consent', (ctx) => {
  const by = { recordedBy: 'demo-bedside', recordedByAccountId: 'acc-1' };

  void test('decisions append; the latest is current; each keeps who, when and which exam', async () => {
    await ensureTenant(ctx.db, { id: 'con-a', name: 'A' });
    await ensureDevice(ctx.db, { tenantId: 'con-a', id: 'sim-1', model: 'simulator' });
    const { exam } = await ctx.db.transaction((tx) =>
      startExam(tx, { tenantId: 'con-a', deviceId: 'sim-1', patientId: 'P1', patientName: 'Doe', description: 'Liver', startedBy: 'b', atMs: Date.now() }),
    );
    assert.equal(await currentConsent(ctx.db, 'con-a', 'P1'), undefined);
    const yes = await recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P1', examId: exam.id, decision: 'yes', ...by });
    const revoked = await recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P1', decision: 'revoked', recordedBy: 'admin-a', recordedByAccountId: 'acc-2' });
    await recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P2', decision: 'no', ...by });
    assert.deepEqual(
      [yes.patientId, yes.examId, yes.decision, yes.purpose, yes.recordedBy, yes.recordedByAccountId],
      ['P1', exam.id, 'yes', 'research', 'demo-bedside', 'acc-1'],
    );
    assert.ok(Math.abs(yes.recordedAtMs - Date.now()) < 60_000, 'the database clock');
    assert.equal(revoked.examId, null);
    assert.deepEqual(
      (await listConsents(ctx.db, 'con-a', 'P1')).map((c) => [c.id, c.decision]),
      [
        [revoked.id, 'revoked'],
        [yes.id, 'yes'],
      ],
      'newest first',
    );
    assert.equal((await currentConsent(ctx.db, 'con-a', 'P1'))?.decision, 'revoked');
    assert.equal((await currentConsent(ctx.db, 'con-a', 'P2'))?.decision, 'no');
    assert.deepEqual(await listConsents(ctx.db, 'other', 'P1'), [], 'per tenant');

    await rejectsWith(recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P2', examId: exam.id, decision: 'yes', ...by }), 'ECO3D_ERR_BAD_REQUEST', /another patient/);
    await rejectsWith(recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P1', examId: 'no-exam', decision: 'yes', ...by }), 'ECO3D_ERR_NOT_FOUND', /no-exam/);
    await rejectsWith(recordConsent(ctx.db, { tenantId: 'con-a', patientId: 'P1', decision: 'maybe' as never, ...by }), 'ECO3D_ERR_BAD_REQUEST', /decision/);
    await rejectsWith(recordConsent(ctx.db, { tenantId: 'con-a', patientId: '', decision: 'yes', ...by }), 'ECO3D_ERR_BAD_REQUEST', /patientId/);
    await rejectsWith(recordConsent(ctx.db, { tenantId: 'nowhere', patientId: 'P1', decision: 'yes', ...by }), 'ECO3D_ERR_NOT_FOUND', /nowhere/);
  });

  void test('the consent table is append-only: UPDATE, DELETE and TRUNCATE are refused by the database', async () => {
    await ensureTenant(ctx.db, { id: 'con-b', name: 'B' });
    const c = await recordConsent(ctx.db, { tenantId: 'con-b', patientId: 'P9', decision: 'yes', ...by });
    for (const sql of [
      `UPDATE consents SET decision = 'no' WHERE id = '${c.id}'`,
      `UPDATE consents SET recorded_at = now() - interval '1 day'`,
      `DELETE FROM consents WHERE id = '${c.id}'`,
      'DELETE FROM consents',
      'TRUNCATE consents',
    ]) {
      await assert.rejects(ctx.db.query(sql), /append-only/, sql);
    }
    assert.equal((await currentConsent(ctx.db, 'con-b', 'P9'))?.decision, 'yes');
  });
});

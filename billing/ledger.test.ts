// The ledger, ingestion, contracts and invoices against the real engines (PGlite, and
// PostgreSQL when DATABASE_URL is set): exactly once, append-only, all-or-nothing batches,
// invoices issued once and reproduced from the ledger to the cent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AcquisitionAbortedV1, AcquisitionCompletedV1 } from '../protocols/events.ts';
import { rejectsWith } from '../protocols/testing.ts';
import { ensureDevice, ensureTenant, linkAcquisitionToExam, startExam, type Database } from '../store/index.ts';
import { forEachDatabase, seedAcquisition } from '../store/testing.ts';
import { putContract } from './contract-store.ts';
import { ingestBatch, parseBatch } from './ingest.ts';
import { issueInvoice, rerateIssued, viewInvoice } from './invoices.ts';
import { meterAcquisition, putBillingSettings, reverseEntry, usageKey } from './ledger.ts';

const T0 = Date.UTC(2026, 9, 5, 9); // 2026-10-05 11:00 Rome
const NOW = Date.UTC(2026, 11, 6, 12);
const flat = (tenantId: string, id: string, deviceId: string, unitPriceCents: number, validFrom = '2026-01-01', validTo: string | null = null) => ({
  id,
  tenantId,
  deviceId,
  validFrom,
  validTo,
  model: { kind: 'pay-per-scan', pricing: { scheme: 'flat', unitPriceCents } },
});

async function tenantWithDevice(db: Database, tenantId: string, deviceId = 'robot-1'): Promise<void> {
  await ensureTenant(db, { id: tenantId, name: tenantId });
  await ensureDevice(db, { tenantId, id: deviceId, model: 'test' });
}

const scan = (deviceId: string, acquisitionUid: string, occurredAtMs: number, extra: Record<string, unknown> = {}) => ({ type: 'scan', deviceId, acquisitionUid, occurredAtMs, ...extra });

forEachDatabase('billing ledger', (ctx) => {
  void test('a completed acquisition is metered once, however often it is delivered; an aborted one is not billable', async () => {
    const done = await seedAcquisition(ctx.db, { tenantId: 'led-a', uid: '2.25.61001', startMs: T0 });
    const first = await meterAcquisition(ctx.db, done.event as AcquisitionCompletedV1);
    const again = await meterAcquisition(ctx.db, done.event as AcquisitionCompletedV1);
    assert.equal(first.status, 'created');
    assert.equal(again.status, 'duplicate');
    assert.deepEqual(again.entry, first.entry);
    assert.equal(first.entry.idempotencyKey, usageKey('led-a', 'sim-1', '2.25.61001'));
    assert.equal(first.entry.billable, true);
    const aborted = await seedAcquisition(ctx.db, { tenantId: 'led-a', uid: '2.25.61002', startMs: T0, outcome: 'aborted' });
    const a = await meterAcquisition(ctx.db, aborted.event as AcquisitionAbortedV1);
    assert.deepEqual([a.entry.billable, a.entry.reason], [false, 'aborted:operator']);
    const rows = await ctx.db.query<{ n: number }>("SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = 'led-a'");
    assert.equal(rows[0]!.n, 2);
    const announced = await ctx.db.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox WHERE event_type = 'UsageRecorded' AND payload->>'tenantId' = 'led-a'");
    assert.equal(announced[0]!.n, 2, 'one UsageRecorded per metered scan, none for the duplicate');
  });

  void test('a repeat scan of the same patient inside the window is not billable; outside it, or another patient, is', async () => {
    const tenantId = 'led-repeat';
    const exam = async (patientId: string, uid: string, startMs: number) => {
      const a = await seedAcquisition(ctx.db, { tenantId, uid, startMs });
      const { exam: e } = await ctx.db.transaction((tx) =>
        startExam(tx, { tenantId, deviceId: 'sim-1', patientId, patientName: 'ROSSI^MARIA', description: 'thyroid', startedBy: 'sono', atMs: startMs - 1000 }),
      );
      await linkAcquisitionToExam(ctx.db, { tenantId, acquisitionUid: uid, examId: e.id });
      return meterAcquisition(ctx.db, a.event as AcquisitionCompletedV1);
    };
    await ensureTenant(ctx.db, { id: tenantId, name: tenantId });
    await putBillingSettings(ctx.db, tenantId, { tax: { kind: 'exempt', reason: 'art. 10 DPR 633/72' }, repeatScanWindowHours: 24 }, 'admin');
    const first = await exam('P-1', '2.25.62001', T0);
    const repeat = await exam('P-1', '2.25.62002', T0 + 3 * 3_600_000);
    const other = await exam('P-2', '2.25.62003', T0 + 4 * 3_600_000);
    const later = await exam('P-1', '2.25.62004', T0 + 30 * 3_600_000);
    assert.deepEqual(
      [first, repeat, other, later].map((r) => [r.entry.billable, r.entry.reason ?? null]),
      [
        [true, null],
        [false, 'repeat-scan:2.25.62001'],
        [true, null],
        [true, null],
      ],
    );
  });

  void test('the ledger and issued invoices are append-only: UPDATE, DELETE and TRUNCATE are refused', async () => {
    const a = await seedAcquisition(ctx.db, { tenantId: 'led-ro', uid: '2.25.63001', startMs: T0 });
    await meterAcquisition(ctx.db, a.event as AcquisitionCompletedV1);
    for (const sql of ["UPDATE usage_ledger SET billable = false WHERE tenant_id = 'led-ro'", "DELETE FROM usage_ledger WHERE tenant_id = 'led-ro'", 'TRUNCATE usage_ledger CASCADE']) {
      await assert.rejects(ctx.db.query(sql), /append-only/);
    }
    await putContract(ctx.db, 'led-ro', flat('led-ro', 'c-ro', 'sim-1', 2000), 'admin');
    await issueInvoice(ctx.db, 'led-ro', '2026-10', 'admin', NOW);
    await assert.rejects(ctx.db.query("UPDATE invoices SET total_cents = 1 WHERE tenant_id = 'led-ro'"), /append-only/);
    await assert.rejects(ctx.db.query("DELETE FROM invoices WHERE tenant_id = 'led-ro'"), /append-only/);
  });

  void test('ingestion: duplicates (in the batch and later) answer the original; one bad event and nothing is stored', async () => {
    const tenantId = 'led-ing';
    await tenantWithDevice(ctx.db, tenantId);
    const who = { tenantId, deviceId: 'robot-1', actor: 'token:t1' };
    const batch = { events: [scan('robot-1', '1.1', T0), scan('robot-1', '1.2', T0 + 1000), scan('robot-1', '1.1', T0 + 5000)] };
    const r1 = await ingestBatch(ctx.db, who, parseBatch(batch, who, NOW));
    assert.deepEqual([r1.created, r1.duplicates], [2, 1]);
    assert.equal(r1.results[2]!.entry.occurredAtMs, T0, 'the duplicate is answered with the original record');
    const r2 = await ingestBatch(ctx.db, who, parseBatch(batch, who, NOW));
    assert.deepEqual([r2.created, r2.duplicates], [0, 3]);
    assert.deepEqual(r2.results[0]!.entry, r1.results[0]!.entry);

    const count = async () => (await ctx.db.query<{ n: number }>('SELECT count(*)::int AS n FROM usage_ledger WHERE tenant_id = $1', [tenantId]))[0]!.n;
    const before = await count();
    const bad: [Record<string, unknown>, string, RegExp][] = [
      [scan('robot-1', '2.1', T0, { quantity: -1 }), 'ECO3D_ERR_BAD_REQUEST', /quantity must be 1/],
      [scan('robot-1', '2.1', T0, { quantity: 1e9 }), 'ECO3D_ERR_BAD_REQUEST', /quantity must be 1/],
      [scan('robot-1', '2.1', T0, { quantity: Number.NaN }), 'ECO3D_ERR_NOT_FINITE', /not a finite number/],
      [scan('robot-1', '2.1', NOW + 3_600_000), 'ECO3D_ERR_BAD_REQUEST', /in the future/],
      [scan('robot-1', '2.1', Date.UTC(1999, 0, 1)), 'ECO3D_ERR_BAD_REQUEST', /before 2020/],
      [scan('robot-1', '2.1', 1.5e12 + 0.5), 'ECO3D_ERR_BAD_REQUEST', /whole milliseconds/],
      [{ type: 'scan', deviceId: 'robot-1', acquisitionUid: '2.1', occurredAt: '2026-10-05T10:00:00' }, 'ECO3D_ERR_BAD_REQUEST', /with its zone/],
      [scan('robot-2', '2.1', T0), 'ECO3D_ERR_FORBIDDEN', /for device robot-1/],
      [scan('robot-1', '2.1', T0, { tenantId: 'other' }), 'ECO3D_ERR_FORBIDDEN', /tenant led-ing, not "other"/],
      [scan('robot-1', '2.1', T0, { billable: false }), 'ECO3D_ERR_BAD_REQUEST', /says why/],
      [scan('robot-1', '2.1', T0, { priceCents: 12.5 }), 'ECO3D_ERR_BAD_REQUEST', /unknown field/],
      [{ type: 'refund', deviceId: 'robot-1' }, 'ECO3D_ERR_BAD_REQUEST', /scan or outcome/],
    ];
    for (const [ev, code, message] of bad) {
      const e = await rejectsWith(
        (async () => ingestBatch(ctx.db, who, parseBatch({ events: [scan('robot-1', '2.0', T0), ev] }, who, NOW)))(),
        code as 'ECO3D_ERR_BAD_REQUEST',
        message,
      );
      assert.equal((e.details?.issues as { index: number }[])[0]!.index, 1, JSON.stringify(ev));
    }
    // A device token of no device, or an admin naming an unknown device: UNKNOWN_DEVICE, nothing stored.
    const admin = { tenantId, actor: 'admin' };
    await rejectsWith(ingestBatch(ctx.db, admin, parseBatch({ events: [scan('robot-1', '2.0', T0), scan('ghost', '2.2', T0)] }, admin, NOW)), 'ECO3D_ERR_UNKNOWN_DEVICE', /ghost/);
    await rejectsWith(ingestBatch(ctx.db, { tenantId: 'no-such-tenant', actor: 'x' }, parseBatch({ events: [scan('robot-1', '2.0', T0)] }, { tenantId: 'no-such-tenant', actor: 'x' }, NOW)), 'ECO3D_ERR_UNKNOWN_TENANT');
    assert.throws(() => parseBatch({ events: [] }, who, NOW), /1 to 10000 events/);
    assert.throws(() => parseBatch([scan('robot-1', '2.0', T0)], who, NOW), /"events"/);
    assert.equal(await count(), before, 'nothing was written by any refused batch');
  });

  void test('contracts: overlap, unknown device, non-integer money refused; a change inside an issued period is PERIOD_CLOSED', async () => {
    const tenantId = 'led-con';
    await tenantWithDevice(ctx.db, tenantId);
    await putContract(ctx.db, tenantId, flat(tenantId, 'c1', 'robot-1', 2000, '2026-01-01', '2026-10-31'), 'admin');
    await rejectsWith(putContract(ctx.db, tenantId, flat(tenantId, 'c2', 'robot-1', 2500, '2026-10-15'), 'admin'), 'ECO3D_ERR_CONFLICT', /overlap/);
    await rejectsWith(putContract(ctx.db, tenantId, flat(tenantId, 'c2', 'ghost', 2500, '2026-11-01'), 'admin'), 'ECO3D_ERR_UNKNOWN_DEVICE');
    await rejectsWith(putContract(ctx.db, tenantId, flat(tenantId, 'c2', 'robot-1', 25.5, '2026-11-01'), 'admin'), 'ECO3D_ERR_BAD_REQUEST', /unitPriceCents/);
    await rejectsWith(putContract(ctx.db, tenantId, flat('other', 'c2', 'robot-1', 2500, '2026-11-01'), 'admin'), 'ECO3D_ERR_FORBIDDEN');
    await putContract(ctx.db, tenantId, flat(tenantId, 'c2', 'robot-1', 2500, '2026-11-01'), 'admin');
    const who = { tenantId, actor: 'admin' };
    await ingestBatch(ctx.db, who, parseBatch({ events: [scan('robot-1', '3.1', T0)] }, who, NOW));
    await issueInvoice(ctx.db, tenantId, '2026-10', 'admin', NOW);
    await rejectsWith(putContract(ctx.db, tenantId, flat(tenantId, 'c1', 'robot-1', 1900, '2026-01-01', '2026-10-31'), 'admin'), 'ECO3D_ERR_PERIOD_CLOSED', /2026-10/);
    await rejectsWith(putContract(ctx.db, tenantId, flat(tenantId, 'c1', 'robot-1', 2000, '2026-01-01', '2026-10-20'), 'admin'), 'ECO3D_ERR_PERIOD_CLOSED');
    // Re-sending the same contract is a no-op; changing the next, open period is allowed.
    assert.equal((await putContract(ctx.db, tenantId, flat(tenantId, 'c1', 'robot-1', 2000, '2026-01-01', '2026-10-31'), 'admin')).created, false);
    await putContract(ctx.db, tenantId, flat(tenantId, 'c2', 'robot-1', 2400, '2026-11-01'), 'admin');
  });

  void test('invoices: issued once, late usage and reversals billed next month, every issued invoice re-rates to the cent', async () => {
    const tenantId = 'led-inv';
    await tenantWithDevice(ctx.db, tenantId);
    await putBillingSettings(ctx.db, tenantId, { tax: { kind: 'rate', rateBps: 2200, label: 'IVA' } }, 'admin');
    await putContract(ctx.db, tenantId, {
      id: 'c-grad',
      tenantId,
      deviceId: 'robot-1',
      validFrom: '2026-01-01',
      validTo: null,
      model: { kind: 'pay-per-scan', pricing: { scheme: 'graduated', tiers: [{ upTo: 3, unitPriceCents: 3000 }, { upTo: null, unitPriceCents: 2000 }] } },
    }, 'admin');
    const who = { tenantId, actor: 'admin' };
    const ingest = (events: unknown[]) => ingestBatch(ctx.db, who, parseBatch({ events }, who, NOW));
    await ingest([0, 1, 2, 3].map((i) => scan('robot-1', `4.${i}`, T0 + i * 3_600_000)));
    // Not over yet, and an earlier month with usage must be issued first.
    await rejectsWith(issueInvoice(ctx.db, tenantId, '2026-12', 'admin', NOW), 'ECO3D_ERR_CONFLICT', /not over/);
    await ingest([scan('robot-1', '4.9', Date.UTC(2026, 8, 30, 8))]);
    await rejectsWith(issueInvoice(ctx.db, tenantId, '2026-10', 'admin', NOW), 'ECO3D_ERR_CONFLICT', /issue 2026-09 first/);
    const sep = await issueInvoice(ctx.db, tenantId, '2026-09', 'admin', NOW);
    const oct = await issueInvoice(ctx.db, tenantId, '2026-10', 'admin', NOW);
    assert.equal(oct.created, true);
    // 3 × 3000 + 1 × 2000 = 11000, IVA 2420.
    assert.deepEqual(oct.issued.invoice.totals, { subtotalCents: 11_000, taxCents: 2420, totalCents: 13_420 });
    const octAgain = await issueInvoice(ctx.db, tenantId, '2026-10', 'admin', NOW + 1000);
    assert.equal(octAgain.created, false);
    assert.deepEqual(octAgain.issued, oct.issued);
    assert.equal((await issueInvoice(ctx.db, tenantId, '2026-09', 'admin', NOW)).created, false);

    // Late: one more October scan, and two October scans reversed: October is now 3 scans, all
    // tier 1 (9000 instead of 11000). November has one scan of its own.
    await ingest([scan('robot-1', '4.5', T0 + 10 * 3_600_000), scan('robot-1', '5.1', Date.UTC(2026, 10, 3, 9))]);
    await reverseEntry(ctx.db, { tenantId, idempotencyKey: usageKey(tenantId, 'robot-1', '4.0'), reason: 'test scan billed by mistake', by: 'admin' });
    await reverseEntry(ctx.db, { tenantId, idempotencyKey: usageKey(tenantId, 'robot-1', '4.1'), reason: 'phantom, not a patient', by: 'admin' });
    const again = await reverseEntry(ctx.db, { tenantId, idempotencyKey: usageKey(tenantId, 'robot-1', '4.0'), reason: 'twice', by: 'admin' });
    assert.equal(again.status, 'duplicate');
    const openNov = await viewInvoice(ctx.db, tenantId, '2026-11');
    assert.equal(openNov.status, 'open');
    const nov = await issueInvoice(ctx.db, tenantId, '2026-11', 'admin', NOW);
    const amounts = Object.fromEntries(nov.issued.invoice.lines.map((l) => [l.code, l.amountCents]));
    assert.deepEqual(amounts, { 'PPS/c-grad/tier-1': 3000, 'ADJ/2026-10/PPS/c-grad/tier-2': -2000, TAX: 220 });
    const adjOct = nov.issued.invoice.lines[1]!;
    assert.deepEqual(adjOct.explanation.eventKeys, ['4.0', '4.1', '4.5'].map((u) => usageKey(tenantId, 'robot-1', u)));
    assert.deepEqual(nov.issued.invoice, openNov.invoice, 'the open preview is what gets issued');
    for (const p of ['2026-09', '2026-10', '2026-11']) {
      const r = await rerateIssued(ctx.db, tenantId, p);
      assert.equal(r.matches, true, p);
      assert.deepEqual(r.rerated, r.issued.invoice, p);
    }
    assert.equal(sep.issued.invoice.totals.subtotalCents, 3000);

    // A late September scan after all that: September re-rated, billed in December's invoice.
    await ingest([scan('robot-1', '4.8', Date.UTC(2026, 8, 29, 8))]);
    const dec = await viewInvoice(ctx.db, tenantId, '2026-12');
    const adj = dec.invoice.lines.find((l) => l.code.startsWith('ADJ/2026-09/'));
    assert.deepEqual([adj?.amountCents, adj?.explanation.eventKeys], [3000, [usageKey(tenantId, 'robot-1', '4.8')]]);
  });
});

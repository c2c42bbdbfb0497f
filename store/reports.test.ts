// Report versions: draft, sign (final), amend (a new version, signed as amended); a signed
// version never changes, not even by a direct UPDATE.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rejectsWith } from '../protocols/testing.ts';
import { addMeasurement } from './measurements.ts';
import { amendReport, draftToSign, listReportVersions, saveReportDraft, signReport } from './reports.ts';
import { forEachDatabase, seedAcquisition } from './testing.ts';

forEachDatabase('reports', (ctx) => {
  const text = (findings: string, measurementIds: string[] = []) => ({ findings, conclusion: '', measurementIds });
  const sign = (studyUid: string, tenantId: string, sr: string) =>
    ctx.db.transaction(async (tx) => {
      const d = await draftToSign(tx, tenantId, studyUid);
      return signReport(tx, { id: d.id, signedBy: 'dr-house', signedByAccountId: 'acc-1', atMs: Date.UTC(2026, 11, 6, 10), srSeriesInstanceUid: `${sr}.1`, srSopInstanceUid: `${sr}.2` });
    });

  void test('draft, sign, amend, sign: versions 1 final and 2 amended, newest first', async () => {
    const a = await seedAcquisition(ctx.db, { tenantId: 'rep-a', uid: '2.25.8001' });
    const m = await addMeasurement(ctx.db, {
      tenantId: 'rep-a',
      acquisitionUid: a.uid,
      kind: 'distance',
      plane: 'axial',
      pointsMm: [
        { x: 0, y: 0, z: 0 },
        { x: 3, y: 4, z: 0 },
      ],
      createdBy: 'sono',
      createdByAccountId: 'acc-0',
    });
    const base = { tenantId: 'rep-a', studyInstanceUid: a.uid, acquisitionUid: a.uid, authoredBy: 'dr-house', atMs: Date.UTC(2026, 11, 6, 9) };
    const v1 = await ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('first draft') }));
    assert.equal(v1.version, 1);
    assert.equal(v1.status, 'preliminary');
    const v1b = await ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('  lesion 5 mm  ', [m.id]) }));
    assert.equal(v1b.id, v1.id, 'a draft is edited in place');
    assert.equal(v1b.findings, 'lesion 5 mm');
    assert.deepEqual(v1b.measurementIds, [m.id]);

    const signed = await sign(a.uid, 'rep-a', '2.25.9');
    assert.equal(signed.status, 'final');
    assert.equal(signed.signedBy, 'dr-house');
    assert.equal(signed.srSopInstanceUid, '2.25.9.2');
    await rejectsWith(ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('sneaky edit') })), 'ECO3D_ERR_CONFLICT', /amend/);
    await rejectsWith(sign(a.uid, 'rep-a', '2.25.10'), 'ECO3D_ERR_CONFLICT', /already signed/);
    // Not even the database lets a signed version change.
    await assert.rejects(ctx.db.query(`UPDATE reports SET findings = 'x' WHERE id = $1`, [signed.id]), /never changed/);
    await assert.rejects(ctx.db.query('DELETE FROM reports WHERE id = $1', [signed.id]), /never deleted/);

    const v2 = await ctx.db.transaction((tx) => amendReport(tx, base));
    assert.equal(v2.version, 2);
    assert.equal(v2.status, 'preliminary');
    assert.equal(v2.replacesId, signed.id);
    assert.equal(v2.findings, 'lesion 5 mm');
    await rejectsWith(ctx.db.transaction((tx) => amendReport(tx, base)), 'ECO3D_ERR_CONFLICT', /draft/);
    await ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('lesion 6 mm on review', [m.id]) }));
    const amended = await sign(a.uid, 'rep-a', '2.25.11');
    assert.equal(amended.status, 'amended');

    const versions = await listReportVersions(ctx.db, 'rep-a', a.uid);
    assert.deepEqual(
      versions.map((r) => [r.version, r.status, r.findings]),
      [
        [2, 'amended', 'lesion 6 mm on review'],
        [1, 'final', 'lesion 5 mm'],
      ],
    );
    assert.deepEqual(await listReportVersions(ctx.db, 'rep-other', a.uid), [], 'another tenant sees nothing');
  });

  void test('bad input: foreign measurements, empty report, nothing to sign or amend, control characters', async () => {
    const a = await seedAcquisition(ctx.db, { tenantId: 'rep-b', uid: '2.25.8002' });
    const base = { tenantId: 'rep-b', studyInstanceUid: a.uid, acquisitionUid: a.uid, authoredBy: 'dr-house', atMs: Date.UTC(2026, 11, 6, 9) };
    await rejectsWith(sign(a.uid, 'rep-b', '2.25.12'), 'ECO3D_ERR_NOT_FOUND', /save a draft/);
    await rejectsWith(ctx.db.transaction((tx) => amendReport(tx, base)), 'ECO3D_ERR_NOT_FOUND');
    await rejectsWith(ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('x', ['not-a-measurement']) })), 'ECO3D_ERR_INVALID_RESOURCE', /not-a-measurement/);
    await rejectsWith(ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('bell\u0007') })), 'ECO3D_ERR_BAD_REQUEST');
    await ctx.db.transaction((tx) => saveReportDraft(tx, { ...base, text: text('') }));
    await rejectsWith(sign(a.uid, 'rep-b', '2.25.13'), 'ECO3D_ERR_CONFLICT', /empty/);
  });
});

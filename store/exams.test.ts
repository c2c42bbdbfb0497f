// Exams: one current exam per device, acquisitions linked to it, demo-mode masking.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rejectsWith, throwsWith } from '../protocols/testing.ts';
import { ensureDevice, ensureTenant } from './accounts.ts';
import {
  checkBirthDate,
  currentExam,
  endCurrentExam,
  getExam,
  getExamOfAcquisition,
  linkAcquisitionToExam,
  maskBirthDate,
  maskExam,
  maskPatientId,
  maskPersonName,
  startExam,
  type NewExam,
} from './exams.ts';
import { forEachDatabase, seedAcquisition } from './testing.ts';

const T0 = Date.UTC(2026, 4, 1);

const exam = (tenantId: string, over: Partial<NewExam> = {}): NewExam => ({
  tenantId,
  deviceId: 'sim-1',
  patientId: 'PAT-0042',
  patientName: 'Doe^Jane',
  birthDate: '1980-04-12',
  sex: 'F',
  description: 'Abdominal 3D',
  accessionNumber: 'ACC-1',
  startedBy: 'demo-bedside',
  atMs: T0,
  ...over,
});

forEachDatabase('exams', (ctx) => {
  const setUp = async (tenantId: string): Promise<void> => {
    await ensureTenant(ctx.db, { id: tenantId, name: tenantId });
    await ensureDevice(ctx.db, { tenantId, id: 'sim-1', model: 'simulator' });
  };

  void test('starting an exam makes it current and ends the previous one; ending leaves none', async () => {
    await setUp('ex-a');
    assert.equal(await currentExam(ctx.db, 'ex-a', 'sim-1'), undefined);
    const first = await ctx.db.transaction((tx) => startExam(tx, exam('ex-a')));
    assert.equal(first.ended, undefined);
    assert.deepEqual(
      [first.exam.patientId, first.exam.patientName, first.exam.birthDate, first.exam.sex, first.exam.accessionNumber, first.exam.startedAtMs],
      ['PAT-0042', 'Doe^Jane', '1980-04-12', 'F', 'ACC-1', T0],
      'the birth date comes back as the same calendar day, whatever the time zone',
    );
    assert.deepEqual(await currentExam(ctx.db, 'ex-a', 'sim-1'), first.exam);

    const second = await ctx.db.transaction((tx) =>
      startExam(tx, exam('ex-a', { patientId: 'PAT-7', patientName: 'Roe Richard', birthDate: undefined, sex: undefined, accessionNumber: undefined, atMs: T0 + 1000 })),
    );
    assert.equal(second.ended?.id, first.exam.id);
    assert.equal(second.ended.endedAtMs, T0 + 1000);
    assert.equal(second.ended.endedBy, 'demo-bedside');
    assert.equal((await currentExam(ctx.db, 'ex-a', 'sim-1'))?.id, second.exam.id);
    assert.equal(second.exam.birthDate, undefined);
    assert.equal(second.exam.sex, undefined);
    assert.equal((await getExam(ctx.db, 'ex-a', first.exam.id))?.endedAtMs, T0 + 1000);
    assert.equal(await getExam(ctx.db, 'other', first.exam.id), undefined, "another tenant's exam reads as absent");

    const ended = await endCurrentExam(ctx.db, { tenantId: 'ex-a', deviceId: 'sim-1', endedBy: 'demo-sonographer', atMs: T0 + 2000 });
    assert.equal(ended?.id, second.exam.id);
    assert.equal(await currentExam(ctx.db, 'ex-a', 'sim-1'), undefined);
    assert.equal(await endCurrentExam(ctx.db, { tenantId: 'ex-a', deviceId: 'sim-1', endedBy: 'x', atMs: T0 + 3000 }), undefined);
  });

  void test('the database itself refuses two current exams on one device', async () => {
    await setUp('ex-b');
    await ctx.db.transaction((tx) => startExam(tx, exam('ex-b')));
    await assert.rejects(
      ctx.db.query(
        `INSERT INTO exams (id, tenant_id, device_id, patient_id, patient_name, description, started_by, started_at)
         VALUES ('dup', 'ex-b', 'sim-1', 'P', 'N', 'D', 'x', now())`,
      ),
      /exams_current|duplicate|unique/i,
    );
  });

  void test('bad exams are refused', async () => {
    await setUp('ex-c');
    const start = (over: Partial<NewExam>) => ctx.db.transaction((tx) => startExam(tx, exam('ex-c', over)));
    await rejectsWith(start({ birthDate: '2023-02-30' }), 'ECO3D_ERR_BAD_REQUEST', /birthDate/);
    await rejectsWith(start({ birthDate: '12/04/1980' }), 'ECO3D_ERR_BAD_REQUEST', /birthDate/);
    await rejectsWith(start({ birthDate: '2027-01-01' }), 'ECO3D_ERR_BAD_REQUEST', /out of range/);
    await rejectsWith(start({ accessionNumber: 'A'.repeat(17) }), 'ECO3D_ERR_BAD_REQUEST', /accessionNumber/);
    await rejectsWith(start({ patientName: 'Doe\\Jane' }), 'ECO3D_ERR_BAD_REQUEST', /backslash/);
    await rejectsWith(start({ patientId: ' ' }), 'ECO3D_ERR_BAD_REQUEST', /patientId/);
    await rejectsWith(start({ sex: 'X' as never }), 'ECO3D_ERR_BAD_REQUEST', /sex/);
    await rejectsWith(start({ deviceId: 'nope' }), 'ECO3D_ERR_NOT_FOUND', /nope/);
    assert.equal(await currentExam(ctx.db, 'ex-c', 'sim-1'), undefined);
  });

  void test('acquisitions link to an exam of their tenant, once', async () => {
    await setUp('ex-d');
    await setUp('ex-e');
    const { exam: e1 } = await ctx.db.transaction((tx) => startExam(tx, exam('ex-d')));
    const { exam: e2 } = await ctx.db.transaction((tx) => startExam(tx, exam('ex-d', { atMs: T0 + 1 })));
    const { exam: foreign } = await ctx.db.transaction((tx) => startExam(tx, exam('ex-e')));
    const a = await seedAcquisition(ctx.db, { tenantId: 'ex-d', uid: '2.25.9001' });
    assert.equal(await getExamOfAcquisition(ctx.db, 'ex-d', a.uid), undefined);
    await linkAcquisitionToExam(ctx.db, { tenantId: 'ex-d', acquisitionUid: a.uid, examId: e1.id });
    await linkAcquisitionToExam(ctx.db, { tenantId: 'ex-d', acquisitionUid: a.uid, examId: e1.id });
    assert.equal((await getExamOfAcquisition(ctx.db, 'ex-d', a.uid))?.id, e1.id);
    assert.equal(await getExamOfAcquisition(ctx.db, 'ex-e', a.uid), undefined, "another tenant's reads as absent");
    await rejectsWith(linkAcquisitionToExam(ctx.db, { tenantId: 'ex-d', acquisitionUid: a.uid, examId: e2.id }), 'ECO3D_ERR_CONFLICT', /already belongs/);
    await rejectsWith(linkAcquisitionToExam(ctx.db, { tenantId: 'ex-d', acquisitionUid: a.uid, examId: foreign.id }), 'ECO3D_ERR_NOT_FOUND', /exam/);
    await rejectsWith(linkAcquisitionToExam(ctx.db, { tenantId: 'ex-e', acquisitionUid: a.uid, examId: foreign.id }), 'ECO3D_ERR_NOT_FOUND', /acquisition/);
  });
});

void test('masking keeps first letters only, and the birth year', () => {
  assert.equal(maskPersonName('Doe^Jane'), 'D***^J***');
  assert.equal(maskPersonName('Jane Mary Doe-Smith'), 'J*** M*** D***-S***');
  assert.equal(maskPersonName('Émile Zola'), 'É*** Z***');
  assert.equal(maskPatientId('PAT-0042'), 'P***');
  assert.equal(maskBirthDate('1980-04-12'), '1980');
  const masked = maskExam({
    id: 'e',
    tenantId: 'demo',
    deviceId: 'sim-1',
    patientId: '12345',
    patientName: 'Doe Jane',
    birthDate: '1980-04-12',
    description: 'Liver',
    startedBy: 'b',
    startedAtMs: T0,
  });
  assert.deepEqual([masked.patientId, masked.patientName, masked.birthDate, masked.description], ['1***', 'D*** J***', '1980', 'Liver']);
  assert.equal(checkBirthDate('2000-02-29', T0), '2000-02-29');
  throwsWith(() => checkBirthDate('1900-02-29', T0), 'ECO3D_ERR_BAD_REQUEST', '1900-02-29');
});

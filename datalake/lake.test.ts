// The lake against a real database (both engines) and real DICOM objects: intake under consent,
// quality and duplicates; revocation during processing and after; the catalog, k-anonymity,
// versions, licences billed in the ledger, licence scopes; erasure and re-identification.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DicomArchive } from '../archive/index.ts';
import { usMultiframe, usVolume } from '../archive/testing.ts';
import { listCharges, recordCharge, viewInvoice } from '../billing/index.ts';
import { lakeDeidentifier } from '../server/lake.ts';
import { newUid } from '../protocols/index.ts';
import { linkAcquisitionToExam, recordConsent, startExam, type Database } from '../store/index.ts';
import { forEachDatabase, seedAcquisition } from '../store/testing.ts';
import {
  consentConsumer,
  createDataset,
  erasePatient,
  getCase,
  grantLicence,
  intake,
  intakeSummary,
  lakeKeysFrom,
  licenceScope,
  listAccess,
  logAccess,
  putLakeSettings,
  LAKE_TENANT,
  putPartner,
  queryCohort,
  reidentify,
  releaseVersion,
  revokeLicence,
  versionWithdrawals,
  type IntakeDeps,
  type LakeArchive,
} from './index.ts';

const keys = lakeKeysFrom(Buffer.alloc(32, 7));
const SWEEP = { kind: 'linear' as const, lengthMm: 60, tiltRangeRad: 0, speedMmPerS: 10, targetForceN: 5 };
const PHI = ['Rossi^Maria^Quintilia', 'MRN-LAKE-', 'ACC-LK'];

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'eco3d-lake-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

interface Site {
  readonly deps: IntakeDeps;
  readonly hospital: DicomArchive;
  readonly lake: DicomArchive;
}

function site(db: Database, name: string, lakeWrap?: (l: DicomArchive) => LakeArchive): Site {
  const hospital = new DicomArchive({ root: join(root, name, 'archive'), db });
  const lake = new DicomArchive({ root: join(root, name, 'lake'), db, layout: 'content-addressed', announce: false });
  const deps: IntakeDeps = {
    db,
    keys,
    archive: hospital,
    lake: lakeWrap === undefined ? lake : lakeWrap(lake),
    deidentifyFile: lakeDeidentifier(join(root, name, 'lake', '.deid')),
    acquisitionsDir: join(root, name, 'acquisitions'),
    studyDone: async () => undefined,
    log: { info: () => undefined, warn: () => undefined },
  };
  return { deps, hospital, lake };
}

/** An acquisition of `patientId` with its study archived, its manifest and its sweep-quality facts. */
async function scanOf(db: Database, s: Site, o: { tenantId: string; patientId: string; examId?: string; frames?: number; forceN?: number[] }): Promise<{ uid: string; examId: string }> {
  const uid = newUid();
  await seedAcquisition(db, { tenantId: o.tenantId, uid, framesAcquired: o.frames ?? 180 });
  let examId = o.examId;
  if (examId === undefined) {
    const { exam } = await db.transaction((tx) =>
      startExam(tx, { tenantId: o.tenantId, deviceId: 'sim-1', patientId: o.patientId, patientName: PHI[0]!, birthDate: '1980-02-29', sex: 'F', description: 'Abdomen', startedBy: 'nurse', atMs: Date.now() }),
    );
    examId = exam.id;
  }
  await linkAcquisitionToExam(db, { tenantId: o.tenantId, acquisitionUid: uid, examId });
  const fixture = { studyInstanceUid: uid, patientName: PHI[0], patientId: o.patientId, accessionNumber: 'ACC-LK1', studyDateTime: '2026-03-10T10:20:30.123+01:00' };
  const instances = [usMultiframe(fixture, { frames: 3 }), usVolume(fixture)];
  for (const i of instances) await s.hospital.storeInstance(o.tenantId, i.bytes, { kind: 'acquisition', acquisitionUid: uid });
  const dir = join(s.deps.acquisitionsDir, uid);
  mkdirSync(join(dir, 'study'), { recursive: true });
  writeFileSync(join(dir, 'study', 'manifest.json'), JSON.stringify({ studyInstanceUid: uid, instances: instances.map((i) => ({ sopInstanceUid: i.sopInstanceUid })) }));
  const frames = o.frames ?? 180;
  writeFileSync(join(dir, 'sweep-quality.json'), JSON.stringify({ framesAcquired: frames, droppedFrames: 0, frameRateHz: 30, sweepDurationMs: 6000, forceSamplesN: o.forceN ?? Array.from({ length: frames }, (_, k) => 5 + 0.2 * Math.sin(k)) }));
  return { uid, examId };
}

const consent = (db: Database, tenantId: string, patientId: string, decision: 'yes' | 'no' | 'revoked'): Promise<unknown> =>
  db.transaction((tx) => recordConsent(tx, { tenantId, patientId, decision, recordedBy: 'nurse', recordedByAccountId: 'acc-nurse' }));

const run = (s: Site, tenantId: string, uid: string, frames = 180): ReturnType<typeof intake> => intake(s.deps, tenantId, uid, { framesAcquired: frames, durationMs: 6000, sweep: SWEEP });

forEachDatabase('data lake', (ctx) => {
  test('a consenting patient\'s completed scan enters the lake de-identified, once', async () => {
    const s = site(ctx.db, `a-${ctx.kind}`);
    const { uid } = await scanOf(ctx.db, s, { tenantId: 'lake-h1', patientId: 'MRN-LAKE-1' });
    await consent(ctx.db, 'lake-h1', 'MRN-LAKE-1', 'yes');
    const r = await run(s, 'lake-h1', uid);
    assert.equal(r.outcome, 'copied');
    const again = await run(s, 'lake-h1', uid);
    assert.deepEqual(again, r, 'a second intake of the same acquisition finds the first');
    const c = (await getCase(ctx.db, r.outcome === 'copied' ? r.caseId : ''))!;
    assert.notEqual(c.studyInstanceUid, uid);
    assert.equal(c.ageBand, '045Y');
    assert.equal(c.sex, 'F');
    assert.equal(c.studyYear, 2026);
    assert.equal(c.bodyPart, 'Abdomen', 'from the Anatomic Region Sequence');
    assert.equal(c.instances, 2);
    const lakeInstances = await s.lake.studyInstances(LAKE_TENANT, c.studyInstanceUid);
    assert.equal(lakeInstances.length, 2);
    for (const i of lakeInstances) {
      const bytes = readFileSync((await s.lake.instanceFile(LAKE_TENANT, i.sopInstanceUid))!).toString('latin1');
      for (const phi of [...PHI, uid]) assert.ok(!bytes.includes(phi), `${phi} leaked into the lake`);
      assert.ok(bytes.includes('P-'), 'the copy carries the patient pseudonym');
    }
    assert.equal((await intakeSummary(ctx.db, 'lake-h1')).copied, 1);
  });

  test('no consent, a denied or a revoked consent: no copy, the reason recorded', async () => {
    const s = site(ctx.db, `b-${ctx.kind}`);
    const none = await scanOf(ctx.db, s, { tenantId: 'lake-h2', patientId: 'MRN-LAKE-2' });
    assert.deepEqual(await run(s, 'lake-h2', none.uid), { outcome: 'excluded', reason: 'no-consent' });
    const denied = await scanOf(ctx.db, s, { tenantId: 'lake-h2', patientId: 'MRN-LAKE-3' });
    await consent(ctx.db, 'lake-h2', 'MRN-LAKE-3', 'no');
    assert.deepEqual(await run(s, 'lake-h2', denied.uid), { outcome: 'excluded', reason: 'consent-denied' });
    const revoked = await scanOf(ctx.db, s, { tenantId: 'lake-h2', patientId: 'MRN-LAKE-4' });
    await consent(ctx.db, 'lake-h2', 'MRN-LAKE-4', 'yes');
    await consent(ctx.db, 'lake-h2', 'MRN-LAKE-4', 'revoked');
    assert.deepEqual(await run(s, 'lake-h2', revoked.uid), { outcome: 'excluded', reason: 'consent-revoked' });
    const summary = await intakeSummary(ctx.db, 'lake-h2');
    assert.equal(summary.copied, 0);
    assert.equal(summary.usableFraction, 0);
    assert.deepEqual(summary.byReason, { 'consent-denied': 1, 'consent-revoked': 1, 'no-consent': 1 });
  });

  test('a revocation while the copy is being made wins: nothing stays in the lake', async () => {
    let lakeRef: DicomArchive | undefined;
    const s = site(ctx.db, `c-${ctx.kind}`, (l) => {
      lakeRef = l;
      let revoked = false;
      return {
        storeFile: async (t, path, source, options) => {
          if (!revoked) {
            revoked = true;
            await consent(ctx.db, 'lake-h3', 'MRN-LAKE-5', 'revoked');
          }
          return l.storeFile(t, path, source, options);
        },
        deleteStudy: (t, uid) => l.deleteStudy(t, uid),
      };
    });
    const { uid } = await scanOf(ctx.db, s, { tenantId: 'lake-h3', patientId: 'MRN-LAKE-5' });
    await consent(ctx.db, 'lake-h3', 'MRN-LAKE-5', 'yes');
    assert.deepEqual(await run(s, 'lake-h3', uid), { outcome: 'excluded', reason: 'consent-revoked:during-processing' });
    const rows = await ctx.db.query<{ n: number }>(`SELECT count(*)::int AS n FROM dicom_instances WHERE tenant_id = $1 AND source->>'actor' = 'lake-intake' AND study_uid NOT IN (SELECT study_uid FROM lake_cases)`, [LAKE_TENANT]);
    assert.equal(Number(rows[0]!.n), 0, 'the partial copy was removed');
    assert.ok(lakeRef !== undefined);
  });

  test('quality gate and duplicates keep non-diagnostic and repeat scans out', async () => {
    const s = site(ctx.db, `d-${ctx.kind}`);
    const low = await scanOf(ctx.db, s, { tenantId: 'lake-h4', patientId: 'MRN-LAKE-6', frames: 60 });
    await consent(ctx.db, 'lake-h4', 'MRN-LAKE-6', 'yes');
    const r = await run(s, 'lake-h4', low.uid, 60);
    assert.equal(r.outcome, 'excluded');
    assert.match(r.outcome === 'excluded' ? r.reason : '', /^low-quality:.*low-coverage/);
    const shaky = await scanOf(ctx.db, s, { tenantId: 'lake-h4', patientId: 'MRN-LAKE-6', forceN: Array.from({ length: 180 }, (_, k) => (k % 2 === 0 ? 1 : 9)) });
    const rs = await run(s, 'lake-h4', shaky.uid);
    assert.match(rs.outcome === 'excluded' ? rs.reason : '', /^low-quality:.*unstable-contact/);
    const first = await scanOf(ctx.db, s, { tenantId: 'lake-h4', patientId: 'MRN-LAKE-6' });
    const one = await run(s, 'lake-h4', first.uid);
    assert.equal(one.outcome, 'copied');
    const repeat = await scanOf(ctx.db, s, { tenantId: 'lake-h4', patientId: 'MRN-LAKE-6', examId: first.examId });
    assert.deepEqual(await run(s, 'lake-h4', repeat.uid), { outcome: 'excluded', reason: `duplicate:${one.outcome === 'copied' ? one.caseId : ''}` });
    const summary = await intakeSummary(ctx.db, 'lake-h4');
    assert.equal(summary.considered, 4);
    assert.equal(summary.usableFraction, 0.25);
  });

  test('k-anonymity, versions, withdrawal on revocation, licences billed, licence scopes, erasure', async () => {
    const s = site(ctx.db, `e-${ctx.kind}`);
    const patients = ['MRN-LAKE-10', 'MRN-LAKE-11', 'MRN-LAKE-12'];
    const caseIds: string[] = [];
    for (const pid of patients) {
      const { uid } = await scanOf(ctx.db, s, { tenantId: 'lake-h5', patientId: pid });
      await consent(ctx.db, 'lake-h5', pid, 'yes');
      const r = await run(s, 'lake-h5', uid);
      assert.equal(r.outcome, 'copied');
      caseIds.push(r.outcome === 'copied' ? r.caseId : '');
    }
    const cohort = await queryCohort(ctx.db, { sexes: ['F'], ageBands: ['045Y'], minQuality: 0.5 });
    assert.ok(caseIds.every((id) => cohort.cases.some((c) => c.id === id)));

    // Three records in one group: refused at k = 5 with the offending group; released at k = 3.
    const ds = await createDataset(ctx.db, { name: `abdomen-${ctx.kind}`, cohort: { bodyParts: undefined, minQuality: 0.5 } }, 'curator');
    await assert.rejects(
      ctx.db.transaction((tx) => releaseVersion(tx, ds.id, { k: 50, by: 'curator', nowMs: Date.now() })),
      (e: Error & { code?: string; details?: Record<string, unknown> }) => e.code === 'ECO3D_ERR_K_ANONYMITY' && e.details !== undefined,
    );
    const v1 = await ctx.db.transaction((tx) => releaseVersion(tx, ds.id, { k: 2, by: 'curator', nowMs: Date.now() }));
    assert.ok(v1.cases >= 3);
    assert.ok(v1.manifest.cases.every((c) => c.instances.length === 2 && c.instances.every((i) => /^[0-9a-f]{64}$/.test(i.sha256))));
    await assert.rejects(ctx.db.query('UPDATE lake_dataset_versions SET k = 3 WHERE id = $1', [v1.id]), 'a released version is immutable');

    // Licences: each recorded once in the partner's ledger.
    await putPartner(ctx.db, `uni-${ctx.kind}`, { academic: true }, 'curator');
    await putPartner(ctx.db, `corp-${ctx.kind}`, { academic: false }, 'curator');
    const grant = (raw: unknown): ReturnType<typeof grantLicence> => ctx.db.transaction((tx) => grantLicence(tx, raw, { by: 'curator', nowMs: Date.now(), recordCharge }));
    const sample = await grant({ id: `s-${ctx.kind}`, partnerTenantId: `uni-${ctx.kind}`, versionId: v1.id, kind: 'sample', maxCases: 2 });
    assert.equal((await grant({ id: `s-${ctx.kind}`, partnerTenantId: `uni-${ctx.kind}`, versionId: v1.id, kind: 'sample', maxCases: 2 })).created, false);
    await assert.rejects(grant({ partnerTenantId: `corp-${ctx.kind}`, versionId: v1.id, kind: 'sample' }), { code: 'ECO3D_ERR_FORBIDDEN' });
    const perCase = await grant({ partnerTenantId: `corp-${ctx.kind}`, versionId: v1.id, kind: 'per-case', unitAmountCents: 1250 });
    assert.equal(perCase.licence.amountCents, 1250 * v1.cases);
    const annual = await grant({ partnerTenantId: `corp-${ctx.kind}`, versionId: v1.id, kind: 'annual', amountCents: 900_000 });
    const day = { fromMs: Date.now() - 86_400_000, toMs: Date.now() + 86_400_000 };
    assert.deepEqual((await listCharges(ctx.db, { tenantId: `uni-${ctx.kind}`, ...day })).map((c) => c.amountCents), [0]);
    assert.deepEqual((await listCharges(ctx.db, { tenantId: `corp-${ctx.kind}`, ...day })).map((c) => c.amountCents).sort((a, b) => a - b), [1250 * v1.cases, 900_000]);
    const invoice = await viewInvoice(ctx.db, `corp-${ctx.kind}`, new Date().toISOString().slice(0, 7));
    const charged = invoice.invoice.lines.filter((l) => l.explanation.rule === 'charge');
    assert.deepEqual(charged.map((l) => l.amountCents).sort((a, b) => a - b), [1250 * v1.cases, 900_000]);

    const sampleScope = await licenceScope(ctx.db, sample.licence.id, `uni-${ctx.kind}`, Date.now());
    assert.equal(sampleScope.studies.size, 2, 'a sample licence reaches its first N cases');
    await assert.rejects(licenceScope(ctx.db, sample.licence.id, `corp-${ctx.kind}`, Date.now()), { code: 'ECO3D_ERR_FORBIDDEN' });
    await assert.rejects(licenceScope(ctx.db, annual.licence.id, `corp-${ctx.kind}`, Date.now() + 400 * 86_400_000), { code: 'ECO3D_ERR_FORBIDDEN' });
    await revokeLicence(ctx.db, perCase.licence.id, 'curator');
    await assert.rejects(licenceScope(ctx.db, perCase.licence.id, `corp-${ctx.kind}`, Date.now()), /revoked/);

    // A revocation withdraws the patient's case: served no more, listed in the released version's audit, out of the next version.
    await consent(ctx.db, 'lake-h5', patients[0]!, 'revoked');
    const consumer = consentConsumer({ db: ctx.db, keys, log: { info: () => undefined } });
    const ev = (await ctx.db.query<{ payload: never }>(`SELECT payload FROM outbox WHERE event_type = 'ConsentRecorded' AND payload->>'tenantId' = 'lake-h5' AND payload->>'decision' = 'revoked'`))[0]!.payload;
    await consumer.handle(ev, new AbortController().signal);
    await consumer.handle(ev, new AbortController().signal);
    assert.deepEqual((await versionWithdrawals(ctx.db, v1.id)).map((w) => [w.caseId, w.reason]), [[caseIds[0], 'consent-revoked']]);
    const annualScope = await licenceScope(ctx.db, annual.licence.id, `corp-${ctx.kind}`, Date.now());
    assert.ok(!annualScope.studies.has(caseIds[0]!) && annualScope.withdrawn.includes(caseIds[0]!));
    const v2 = await ctx.db.transaction((tx) => releaseVersion(tx, ds.id, { k: 2, by: 'curator', nowMs: Date.now() }));
    assert.equal(v2.version, 2);
    assert.ok(!v2.manifest.cases.some((c) => c.id === caseIds[0]));

    // Re-identification by the hospital, then erasure: studies, pseudonym key gone; case withdrawn.
    const pseudonym = (await ctx.db.query<{ pseudonym_id: string }>('SELECT pseudonym_id FROM lake_cases WHERE id = $1', [caseIds[1]]))[0]!.pseudonym_id;
    assert.equal(await reidentify(ctx.db, keys, 'lake-h5', pseudonym), patients[1]);
    assert.equal(await reidentify(ctx.db, keys, 'lake-h1', pseudonym), undefined, 'another hospital cannot resolve it');
    await assert.rejects(erasePatient(ctx.db, keys, s.hospital, 'lake-h5', { patientId: patients[1], confirmPatientId: 'typo', requestReference: 'REQ-1' }, 'admin'), { code: 'ECO3D_ERR_BAD_REQUEST' });
    const erased = await erasePatient(ctx.db, keys, s.hospital, 'lake-h5', { patientId: patients[1], confirmPatientId: patients[1], requestReference: 'REQ-1' }, 'admin');
    assert.deepEqual({ studies: erased.studiesDeleted, instances: erased.instancesDeleted, cases: erased.casesWithdrawn, key: erased.pseudonymDeleted }, { studies: 1, instances: 2, cases: [caseIds[1]], key: true });
    assert.equal(await reidentify(ctx.db, keys, 'lake-h5', pseudonym), undefined);
    assert.equal((await ctx.db.query('SELECT 1 FROM dicom_studies WHERE tenant_id = $1 AND patient_id = $2', ['lake-h5', patients[1]])).length, 0);
    const twice = await erasePatient(ctx.db, keys, s.hospital, 'lake-h5', { patientId: patients[1], confirmPatientId: patients[1], requestReference: 'REQ-1' }, 'admin');
    assert.deepEqual({ studies: twice.studiesDeleted, cases: twice.casesWithdrawn.length }, { studies: 0, cases: 0 });
  });

  test('the access log flags a bulk download outside the licence\'s pattern, and a sample licence past its cases', async () => {
    const s = site(ctx.db, `f-${ctx.kind}`);
    const { uid } = await scanOf(ctx.db, s, { tenantId: 'lake-h6', patientId: 'MRN-LAKE-20' });
    await putLakeSettings(ctx.db, 'lake-h6', { siteRegion: 'IT-88' }, 'admin');
    await consent(ctx.db, 'lake-h6', 'MRN-LAKE-20', 'yes');
    const r = await run(s, 'lake-h6', uid);
    assert.equal(r.outcome, 'copied');
    // A twin case in the catalog, so that this site's cohort can be released at k = 2.
    await ctx.db.query(
      `INSERT INTO lake_cases (id, study_uid, pseudonym_id, source_tenant_id, body_part, probe, device_model, study_year, age_band, sex, site_region, quality_score, instances, size_bytes)
       SELECT 'C-' || substr(md5(id), 1, 20), study_uid || '.9', pseudonym_id, source_tenant_id, body_part, probe, device_model, study_year, age_band, sex, site_region, quality_score, instances, size_bytes
       FROM lake_cases WHERE id = $1`,
      [r.outcome === 'copied' ? r.caseId : ''],
    );
    const ds = await createDataset(ctx.db, { name: `anomaly-${ctx.kind}`, cohort: { siteRegions: ['IT-88'] } }, 'curator');
    const version = await ctx.db.transaction((tx) => releaseVersion(tx, ds.id, { k: 2, by: 'curator', nowMs: Date.now() }));
    await putPartner(ctx.db, `lab-${ctx.kind}`, { academic: true }, 'curator');
    const { licence } = await ctx.db.transaction((tx) => grantLicence(tx, { partnerTenantId: `lab-${ctx.kind}`, versionId: version.id, kind: 'sample', maxCases: 1 }, { by: 'curator', nowMs: Date.now(), recordCharge }));
    const scope = await licenceScope(ctx.db, licence.id, `lab-${ctx.kind}`, Date.now());
    const day = 86_400_000;
    const t0 = Date.now();
    const access = (atMs: number, sizeBytes: number, caseIds: string[]): ReturnType<typeof logAccess> =>
      logAccess(ctx.db, { licenceId: licence.id, partnerTenantId: `lab-${ctx.kind}`, actor: 'token:t1', action: 'lake.export', target: version.id, allowed: true, caseIds, instances: 2, sizeBytes }, { ...scope, versionSizeBytes: 50 * 1024 * 1024 }, atMs);
    const first = [...scope.studies.keys()];
    for (let d = 4; d >= 1; d--) assert.equal((await access(t0 - d * day, 10 * 1024 * 1024, first))?.flagged, false, 'a normal day');
    const same = await access(t0, 10 * 1024 * 1024, first);
    assert.equal(same?.flagged, false, 'the same case again is not a new case');
    const bulk = await access(t0 + 1, 200 * 1024 * 1024, first);
    assert.equal(bulk?.flagged, true);
    assert.ok(bulk.reasons.includes('bulk-download') && bulk.reasons.includes('repeated-full-download'), JSON.stringify(bulk.reasons));
    const beyond = await access(t0 + 2, 1024, ['C-00000000000000000000']);
    assert.ok(beyond?.reasons.includes('case-cap-exceeded'), 'a sample licence reaching a second case in a day');
    const flagged = await listAccess(ctx.db, { licenceId: licence.id, flaggedOnly: true, limit: 10 });
    assert.equal(flagged.length, 2);
  });
});

// The research data lake through the running server, on each database engine:
// - completed sweeps of consenting patients enter the lake de-identified; a patient without
//   consent does not, and the reason is recorded;
// - a dataset is built, refused at k = 5 with a report, released at k = 2, licensed to an
//   academic partner (a free sample, recorded in its ledger) and downloaded as a zip by the
//   partner's lake token; no PHI string is in any byte; dciodvfy finds no error the original
//   did not have;
// - /lake/dicom-web serves the licence's studies only: another licence's study is 404, a token
//   without a licence and a hospital session are 403; every access is in the access log;
// - a revocation withdraws the patient's case: the released version lists it, the lake stops
//   serving it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { periodOf } from '../billing/index.ts';
import { databasesUnderTest } from '../store/testing.ts';
import { ADMIN_PASSWORD, errorCode, startTestServer, waitFor, type TestServer } from './harness.ts';

const PATIENTS = [
  { patientId: 'MRN-LK-40001', patientName: 'Bianchi^Ottavia', birthDate: '1973-06-15', sex: 'F', description: 'Abdomen lake', accessionNumber: 'ACC-LK-1' },
  { patientId: 'MRN-LK-40002', patientName: 'Verdi^Serafina', birthDate: '1973-06-16', sex: 'F', description: 'Abdomen lake', accessionNumber: 'ACC-LK-2' },
  { patientId: 'MRN-LK-40003', patientName: 'Neri^Costanza', birthDate: '1973-01-05', sex: 'F', description: 'Abdomen lake', accessionNumber: 'ACC-LK-3' },
] as const;
const PHI = PATIENTS.flatMap((p) => [p.patientId, p.patientName.split('^')[0]!, p.accessionNumber, p.birthDate.replaceAll('-', '')]);

/** dciodvfy's error lines, without the file-specific parts. */
function dciodvfyErrors(file: string): string[] {
  const r = spawnSync('dciodvfy', ['-new', file], { encoding: 'utf8' });
  assert.ok(r.error === undefined, `dciodvfy: ${String(r.error)}`);
  return `${r.stdout}${r.stderr}`
    .split('\n')
    .filter((l) => l.startsWith('Error'))
    .map((l) => l.replace(/ - .*$/, '').trim())
    .sort();
}

for (const database of databasesUnderTest()) describe(`the data lake through the server (${database})`, () => {
  let t: TestServer;
  let admin: string;
  let hospitalAdmin: string;
  let work: string;
  before(async () => {
    t = await startTestServer({}, database);
    work = mkdtempSync(join(tmpdir(), 'eco3d-lake-e2e-'));
    admin = await t.login('admin', ADMIN_PASSWORD);
    assert.equal((await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId: 'demo', username: 'lake-hospital-admin', role: 'tenant-admin', password: 'hospital-admin-password' } })).status, 201);
    hospitalAdmin = await t.login('lake-hospital-admin', 'hospital-admin-password');
  });
  after(async () => {
    await t?.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('consenting patients\' sweeps → lake → k-anonymous version → licence → partner download', { timeout: 600_000 }, async () => {
    const bedside = await t.login('demo-bedside');
    const bs = await t.connect('bedside', bedside);
    const sweep = async (p: (typeof PATIENTS)[number], decision: 'yes' | 'no' | null): Promise<string> => {
      const exam = await t.api('/api/exam', { method: 'PUT', token: bedside, body: p });
      assert.equal(exam.status, 201, JSON.stringify(exam.body));
      if (decision !== null) assert.equal((await t.api('/api/consents', { method: 'POST', token: bedside, body: { decision } })).status, 201);
      const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 20, speedMmPerS: 20 };
      assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
      const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
      const uid = running.acquisition.uid!;
      await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 60_000, 'acquisition completed');
      return uid;
    };
    type Decision = { acquisitionUid: string; outcome: string; reason: string; caseId: string | null };
    const decisionOf = (uid: string): Promise<Decision> =>
      waitFor(`the lake's decision on ${uid}`, 180_000, async () => {
        const r = await t.api('/api/lake/intake', { token: hospitalAdmin });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return (r.body.decisions as Decision[]).find((d) => d.acquisitionUid === uid);
      });

    // The quality gate itself is tested in datalake/lake.test.ts. Here the site lowers its coverage
    // bar: on a loaded 2-core CI machine the simulated scanner drops frames of these 1 s sweeps.
    const settings = await t.api('/api/lake/settings', { method: 'PUT', token: hospitalAdmin, body: { siteRegion: 'IT-25', minCoverage: 0.1 } });
    assert.equal(settings.status, 200, JSON.stringify(settings.body));
    assert.equal((await t.api('/api/lake/settings', { method: 'PUT', token: hospitalAdmin, body: { siteRegion: 'Lombardy' } })).body.code, 'ECO3D_ERR_BAD_REQUEST');
    const uids = [await sweep(PATIENTS[0], 'yes'), await sweep(PATIENTS[1], 'yes'), await sweep(PATIENTS[2], null)];
    const decisions = [await decisionOf(uids[0]!), await decisionOf(uids[1]!), await decisionOf(uids[2]!)];
    assert.deepEqual(
      decisions.map((d) => [d.outcome, d.reason]),
      [
        ['copied', 'ok'],
        ['copied', 'ok'],
        ['excluded', 'no-consent'],
      ],
    );
    const intake = (await t.api('/api/lake/intake', { token: hospitalAdmin })).body as { summary: { considered: number; copied: number; usableFraction: number } };
    assert.deepEqual([intake.summary.considered, intake.summary.copied], [3, 2]);

    // The catalog; a dataset refused at k = 5, released at k = 2.
    const cohort = await t.api('/api/lake/cohort', { method: 'POST', token: admin, body: { cohort: { sexes: ['F'] } } });
    assert.equal(cohort.status, 200, JSON.stringify(cohort.body));
    assert.equal(cohort.body.total, 2);
    // Born a day apart: one 5-year band (the catalog keeps no finer age), this study year.
    const bands = (cohort.body.cases as Array<{ ageBand: string; studyYear: number }>).map((c) => [c.ageBand, c.studyYear]);
    assert.deepEqual(bands[0], bands[1]);
    for (const c of cohort.body.cases as Array<{ bodyPart: string | null; probe: string | null; deviceModel: string | null }>) {
      assert.equal(c.bodyPart, 'Abdomen');
      assert.match(String(c.probe), /probe/, 'the probe, from the frames\' Transducer Data');
      assert.ok(c.deviceModel !== null);
    }
    assert.match(String(bands[0]![0]), /^0[45]\dY$/);
    assert.equal((await t.api('/api/lake/cohort', { method: 'POST', token: hospitalAdmin, body: {} })).status, 403, 'the catalog is the curator\'s');
    const ds = await t.api('/api/lake/datasets', { method: 'POST', token: admin, body: { name: 'liver-3d', description: 'Robotic 3D US, abdomen', cohort: { sexes: ['F'], minQuality: 0.5 } } });
    assert.equal(ds.status, 201, JSON.stringify(ds.body));
    const refused = await t.api(`/api/lake/datasets/${ds.body.id}/versions`, { method: 'POST', token: admin, body: { k: 5 } });
    assert.equal(refused.status, 422);
    assert.equal(refused.body.code, 'ECO3D_ERR_K_ANONYMITY');
    assert.deepEqual(
      (refused.body.details.offending as Array<{ key: Record<string, string>; count: number }>).map((g) => [g.key.sex, g.key.siteRegion, g.count]),
      [['F', 'IT-25', 2]],
    );
    assert.ok((refused.body.details.suggestions as Array<{ description: string }>).length > 0, 'with suggested generalisations');
    const v1 = await t.api(`/api/lake/datasets/${ds.body.id}/versions`, { method: 'POST', token: admin, body: { k: 2 } });
    assert.equal(v1.status, 201, JSON.stringify(v1.body));
    assert.equal(v1.body.cases, 2);

    // Partners, licences (billed), tokens.
    for (const [tenant, academic] of [
      ['uni-lake', true],
      ['corp-lake', false],
    ] as const) {
      assert.equal((await t.api(`/api/lake/partners/${tenant}`, { method: 'PUT', token: admin, body: { name: tenant, academic } })).status, 200);
      assert.equal((await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId: tenant, username: `${tenant}-admin`, role: 'tenant-admin', password: `${tenant}-password` } })).status, 201);
    }
    const sample = await t.api('/api/lake/licences', { method: 'POST', token: admin, body: { id: 'lic-uni-1', partnerTenantId: 'uni-lake', versionId: v1.body.id, kind: 'sample', maxCases: 100 } });
    assert.equal(sample.status, 201, JSON.stringify(sample.body));
    assert.equal((await t.api('/api/lake/licences', { method: 'POST', token: admin, body: { id: 'lic-uni-1', partnerTenantId: 'uni-lake', versionId: v1.body.id, kind: 'sample', maxCases: 100 } })).status, 200, 'a re-sent grant is the same licence');
    assert.equal((await t.api('/api/lake/licences', { method: 'POST', token: admin, body: { partnerTenantId: 'corp-lake', versionId: v1.body.id, kind: 'sample' } })).body.code, 'ECO3D_ERR_FORBIDDEN');
    const annual = await t.api('/api/lake/licences', { method: 'POST', token: admin, body: { partnerTenantId: 'corp-lake', versionId: v1.body.id, kind: 'annual', amountCents: 1_200_000 } });
    assert.equal(annual.status, 201);
    const period = periodOf(Date.now());
    const corpInvoice = await t.api(`/api/billing/invoices/corp-lake/${period}`, { token: admin });
    assert.equal(corpInvoice.status, 200, JSON.stringify(corpInvoice.body));
    assert.deepEqual(
      (corpInvoice.body.invoice.lines as Array<{ code: string; amountCents: number }>).filter((l) => l.code.startsWith('CHG/')).map((l) => l.amountCents),
      [1_200_000],
    );
    const uniInvoice = await t.api(`/api/billing/invoices/uni-lake/${period}`, { token: admin });
    assert.deepEqual((uniInvoice.body.invoice.lines as Array<{ code: string }>).map((l) => l.code).filter((c) => c.startsWith('CHG/')), ['CHG/lake-licence/lic-uni-1']);

    const uniAdmin = await t.login('uni-lake-admin', 'uni-lake-password');
    const noLicence = await t.api('/api/auth/tokens', { method: 'POST', token: uniAdmin, body: { name: 'lake', scopes: ['lake:read'] } });
    assert.equal(noLicence.status, 400, 'a lake token names its licence');
    const notTheirs = await t.api('/api/auth/tokens', { method: 'POST', token: uniAdmin, body: { name: 'lake', scopes: ['lake:read'], licenceId: annual.body.id } });
    assert.equal(notTheirs.status, 404, "another partner's licence");
    const minted = await t.api('/api/auth/tokens', { method: 'POST', token: uniAdmin, body: { name: 'lake', scopes: ['lake:read'], licenceId: 'lic-uni-1' } });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const lakeToken = minted.body.token as string;

    // The partner's download: the zip, its manifest, no PHI, dciodvfy no worse than the original.
    const zip = await fetch(`${t.url}/api/lake/versions/${v1.body.id}/export.zip`, { headers: { authorization: `Bearer ${lakeToken}` } });
    assert.equal(zip.status, 200);
    const zipFile = join(work, 'v1.zip');
    const zipBytes = Buffer.from(await zip.arrayBuffer());
    writeFileSync(zipFile, zipBytes);
    assert.equal(spawnSync('unzip', ['-tq', zipFile], { encoding: 'utf8' }).status, 0);
    const out = join(work, 'v1');
    assert.equal(spawnSync('unzip', ['-q', zipFile, '-d', out]).status, 0);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { cases: Array<{ id: string; studyInstanceUid: string; instances: Array<{ path: string; sha256: string; sizeBytes: number }> }> };
    assert.equal(manifest.cases.length, 2);
    const files: string[] = [];
    const walk = (d: string): void => {
      for (const n of readdirSync(d)) {
        const f = join(d, n);
        if (statSync(f).isDirectory()) walk(f);
        else files.push(f);
      }
    };
    walk(out);
    for (const c of manifest.cases) for (const i of c.instances) assert.equal(statSync(join(out, i.path)).size, i.sizeBytes);
    for (const f of files) {
      const text = readFileSync(f).toString('latin1');
      for (const s of [...PHI, ...uids]) assert.ok(!text.includes(s), `${s} found in ${f}`);
    }
    const lakeVolume = join(out, manifest.cases[0]!.instances.reduce((a, b) => (a.sizeBytes > b.sizeBytes ? a : b)).path);
    const original = await fetch(`${t.url}/dicom-web/studies/${uids[0]}`, { headers: { authorization: `Bearer ${hospitalAdmin}`, accept: 'multipart/related; type="application/dicom"' } });
    assert.equal(original.status, 200);
    // The hospital's own copy of the same volume, for dciodvfy: the largest part of the study.
    const body = Buffer.from(await original.arrayBuffer());
    const boundary = /boundary=("?)([^";]+)\1/.exec(original.headers.get('content-type') ?? '')![2]!;
    const parts = body
      .toString('latin1')
      .split(`--${boundary}`)
      .map((p) => p.slice(p.indexOf('\r\n\r\n') + 4, p.lastIndexOf('\r\n')))
      .filter((p) => p.length > 200);
    const originalVolume = join(work, 'original.dcm');
    writeFileSync(originalVolume, Buffer.from(parts.reduce((a, b) => (a.length > b.length ? a : b)), 'latin1'));
    const added = dciodvfyErrors(lakeVolume).filter((e) => !dciodvfyErrors(originalVolume).includes(e));
    assert.deepEqual(added, [], 'de-identification added dciodvfy errors');

    // /lake/dicom-web, scoped to the licence.
    const lakeGet = (path: string, token: string, accept = 'application/dicom+json'): Promise<Response> => fetch(`${t.url}/lake/dicom-web${path}`, { headers: { authorization: `Bearer ${token}`, accept } });
    const studies = await lakeGet('/studies', lakeToken);
    assert.equal(studies.status, 200);
    const found = ((await studies.json()) as Array<Record<string, { Value: string[] }>>).map((s) => s['0020000D']!.Value[0]).sort();
    assert.deepEqual(found, manifest.cases.map((c) => c.studyInstanceUid).sort());
    assert.equal((await lakeGet(`/studies/${found[0]}/metadata`, lakeToken)).status, 200);
    assert.equal((await lakeGet(`/studies/${uids[0]}/metadata`, lakeToken)).status, 404, 'the original study is not in the lake');
    assert.equal((await lakeGet('/studies', hospitalAdmin)).status, 403, 'a hospital session has no licence');
    const dicomwebToken = await t.api('/api/auth/tokens', { method: 'POST', token: uniAdmin, body: { name: 'dw', scopes: ['dicomweb:read'] } });
    assert.equal((await lakeGet('/studies', dicomwebToken.body.token)).status, 403, 'dicomweb:read is not lake:read');
    // A licence on a one-case sample reaches that case only.
    const small = await t.api('/api/lake/licences', { method: 'POST', token: admin, body: { id: 'lic-uni-small', partnerTenantId: 'uni-lake', versionId: v1.body.id, kind: 'sample', maxCases: 1 } });
    assert.equal(small.status, 201);
    const smallToken = (await t.api('/api/auth/tokens', { method: 'POST', token: uniAdmin, body: { name: 'small', scopes: ['lake:read'], licenceId: 'lic-uni-small' } })).body.token as string;
    const outside = manifest.cases[1]!.studyInstanceUid;
    assert.equal((await lakeGet(`/studies/${outside}/metadata`, smallToken)).status, 404, 'a study outside the licence does not exist for it');
    assert.equal((await lakeGet(`/studies/${manifest.cases[0]!.studyInstanceUid}/metadata`, smallToken)).status, 200);

    const access = await t.api('/api/lake/access?licence=lic-uni-small', { token: admin });
    assert.equal(access.status, 200);
    const entries = access.body.access as Array<{ action: string; allowed: boolean; licenceId: string; actor: string }>;
    assert.ok(entries.some((e) => e.action === 'lake.dicomweb.wado' && !e.allowed));
    assert.ok(entries.some((e) => e.action === 'lake.dicomweb.wado' && e.allowed));
    assert.ok(entries.every((e) => e.licenceId === 'lic-uni-small' && e.actor.startsWith('token:')));

    // Revocation: the case is withdrawn, listed by the released version, no longer served.
    const withdrawnCase = decisions[0]!.caseId!;
    const examAgain = await t.api('/api/exam', { method: 'PUT', token: bedside, body: PATIENTS[0] });
    assert.equal(examAgain.status, 201);
    assert.equal((await t.api('/api/consents', { method: 'POST', token: bedside, body: { decision: 'revoked' } })).status, 201);
    const version = await waitFor('the withdrawal in the version', 60_000, async () => {
      const r = await t.api(`/api/lake/versions/${v1.body.id}`, { token: admin });
      const withdrawals = r.body.withdrawals as Array<{ caseId: string }>;
      return withdrawals.length > 0 ? { withdrawals } : undefined;
    });
    assert.deepEqual((version.withdrawals as Array<{ caseId: string; reason: string }>).map((w) => [w.caseId, w.reason]), [[withdrawnCase, 'consent-revoked']]);
    const withdrawnStudy = manifest.cases.find((c) => c.id === withdrawnCase)!.studyInstanceUid;
    assert.equal((await lakeGet(`/studies/${withdrawnStudy}/metadata`, lakeToken)).status, 404);
    const v2 = await t.api(`/api/lake/datasets/${ds.body.id}/versions`, { method: 'POST', token: admin, body: { k: 2 } });
    assert.equal(v2.body.code, 'ECO3D_ERR_K_ANONYMITY', 'one case left cannot be 2-anonymous');

    // Labels: by the hospital the case came from, not by a partner; a cohort can select on them.
    const keptCase = decisions[1]!.caseId!;
    const label = await t.api(`/api/lake/cases/${keptCase}/labels`, { method: 'POST', token: hospitalAdmin, body: { kind: 'pathology', code: 'SCT:197321007', display: 'Steatosis of liver' } });
    assert.equal(label.status, 201, JSON.stringify(label.body));
    assert.equal((await t.api(`/api/lake/cases/${keptCase}/labels`, { method: 'POST', token: uniAdmin, body: { kind: 'pathology', code: 'x' } })).status, 403);
    assert.equal((await t.api(`/api/lake/cases/${withdrawnCase}/labels`, { method: 'POST', token: admin, body: { kind: 'outcome', code: 'x' } })).body.code, 'ECO3D_ERR_CONFLICT');
    const labelled = await t.api('/api/lake/cohort', { method: 'POST', token: admin, body: { cohort: { labels: [{ kind: 'pathology', code: 'SCT:197321007' }] } } });
    assert.deepEqual((labelled.body.cases as Array<{ id: string }>).map((c) => c.id), [keptCase]);

    // The hospital re-identifies a pseudonym (audited), then erases the patient on request.
    const meta = (await (await lakeGet(`/studies/${manifest.cases.find((c) => c.id === keptCase)!.studyInstanceUid}/metadata`, lakeToken)).json()) as Array<Record<string, { Value?: unknown[] }>>;
    const pseudonym = String(meta[0]!['00100020']!.Value![0]);
    assert.match(pseudonym, /^P-[0-9a-f]{20}$/);
    assert.equal((await t.api('/api/lake/reidentify', { method: 'POST', token: uniAdmin, body: { pseudonymId: pseudonym, reason: 'curious' } })).status, 404, "another tenant's pseudonym does not exist for it");
    const who = await t.api('/api/lake/reidentify', { method: 'POST', token: hospitalAdmin, body: { pseudonymId: pseudonym, reason: 'incidental finding: recall the patient' } });
    assert.deepEqual(who.body, { pseudonymId: pseudonym, patientId: PATIENTS[1].patientId });
    const erased = await t.api('/api/lake/erasure', { method: 'POST', token: hospitalAdmin, body: { patientId: PATIENTS[1].patientId, confirmPatientId: PATIENTS[1].patientId, requestReference: 'DPO-2026-17' } });
    assert.equal(erased.status, 200, JSON.stringify(erased.body));
    assert.deepEqual([erased.body.studiesDeleted, erased.body.casesWithdrawn, erased.body.pseudonymDeleted], [1, [keptCase], true]);
    assert.equal((await fetch(`${t.url}/dicom-web/studies/${uids[1]}/metadata`, { headers: { authorization: `Bearer ${hospitalAdmin}` } })).status, 404, 'the archived study is gone');
    assert.equal((await t.api('/api/lake/reidentify', { method: 'POST', token: hospitalAdmin, body: { pseudonymId: pseudonym, reason: 'again' } })).status, 404, 'the key is gone');
    const audit = await t.api('/api/audit?limit=1000', { token: hospitalAdmin });
    const actions = audit.body.audit as Array<{ action: string }>;
    assert.ok(['lake.reidentify', 'lake.erasure', 'lake.label'].every((a) => actions.some((e) => e.action === a)), 'each is audited');
  });
});

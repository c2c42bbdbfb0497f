// Interoperability: a real Orthanc (DICOMweb plugin 1.7) as the DICOMweb *client* of our server,
// over real sockets. Orthanc STOWs a study to us, queries us (QIDO-RS), reads our metadata and
// retrieves the study back (WADO-RS) into its own store, where the files must be the ones it sent.
// Another implementation's multipart writer and reader, and its JSON parser, judge our framing.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Fastify, { type FastifyInstance } from 'fastify';
import { ensureTenant } from '../store/accounts.ts';
import { forEachDatabase } from '../store/testing.ts';
import { buildTestStudy, startOrthanc, type RunningOrthanc, type TestStudy } from '../test/orthanc.ts';
import { probeHeader } from './dicom-header.ts';
import { DicomArchive } from './dicom-store.ts';
import { registerDicomWeb, type DicomWebAuditEntry, type DicomWebPrincipal } from './dicomweb.ts';
import { inlineRenderer } from './render.ts';

const T = 'hospital-interop';
const TOKEN = 'interop-physician-token';

function datasetHash(bytes: Uint8Array): string {
  const p = probeHeader(bytes);
  assert.equal(p.kind, 'header');
  return createHash('sha256')
    .update(bytes.subarray((p as { header: { datasetOffset: number } }).header.datasetOffset))
    .digest('hex');
}

forEachDatabase('DICOMweb with Orthanc as the client', (ctx) => {
  let root: string;
  let archive: DicomArchive;
  let app: FastifyInstance;
  let orthanc: RunningOrthanc;
  let study: TestStudy;
  let ourUrl: string;
  const audits: DicomWebAuditEntry[] = [];

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'eco3d-interop-'));
    await ensureTenant(ctx.db, { id: T, name: T });
    archive = new DicomArchive({ root, db: ctx.db });
    app = Fastify();
    app.decorateRequest('principal', null);
    const physician: DicomWebPrincipal = { username: 'dr-interop', tenantId: T, role: 'physician', kind: 'session', scopes: null };
    app.addHook('onRequest', async (req) => {
      (req as unknown as { principal: DicomWebPrincipal | null }).principal = req.headers.authorization === `Bearer ${TOKEN}` ? physician : null;
    });
    await registerDicomWeb(app, { archive, audit: async (e) => void audits.push(e), maxStowBytes: 64 * 1024 * 1024, renderer: inlineRenderer });
    ourUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    orthanc = await startOrthanc({
      auth: 'none',
      config: {
        DicomWeb: {
          Enable: true,
          Root: '/dicom-web/',
          EnableWado: false,
          Ssl: false,
          Servers: { eco3d: { Url: `${ourUrl}/dicom-web/`, HttpHeaders: { Authorization: `Bearer ${TOKEN}` } } },
        },
      },
    });
    study = buildTestStudy({ volumes: [[24, 20, 12]], multiframes: [{ frames: 5, width: 32, height: 24 }], reports: 1 });
  });
  after(async () => {
    await orthanc?.close();
    await app?.close();
    await rm(root, { recursive: true, force: true });
  });

  const orthancPost = async (path: string, body: unknown): Promise<unknown> => {
    // /tools/lookup takes the bare UID as its body; the DICOMweb client routes take JSON.
    const res = await orthanc.request(path, { method: 'POST', body: typeof body === 'string' ? body : JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    const text = await res.text();
    assert.equal(res.status, 200, `Orthanc ${path}: HTTP ${res.status} ${text}\n${orthanc.logTail().slice(-3000)}`);
    return JSON.parse(text) as unknown;
  };

  test('Orthanc STOWs a study to us: every instance stored, data sets identical', async () => {
    for (const inst of study.instances) {
      const res = await orthanc.request('/instances', { method: 'POST', body: Buffer.from(inst.bytes) });
      assert.equal(res.status, 200, await res.text());
    }
    const found = (await orthancPost('/tools/lookup', study.studyInstanceUid)) as Array<{ ID: string; Type: string }>;
    const orthancStudy = found.find((f) => f.Type === 'Study')!.ID;
    await orthancPost('/dicom-web/servers/eco3d/stow', { Resources: [orthancStudy] });
    for (const inst of study.instances) {
      const path = await archive.instanceFile(T, inst.sopInstanceUid);
      assert.ok(path !== null, `${inst.kind} stored`);
      assert.equal(datasetHash(new Uint8Array(await readFile(path))), datasetHash(inst.bytes), `${inst.kind}: same data set`);
    }
    assert.ok(audits.some((a) => a.action === 'dicomweb.stow' && a.detail?.stored === study.instances.length));
  });

  test('Orthanc queries us (QIDO-RS) and reads our metadata', async () => {
    // Orthanc hands back what it parsed from our DICOM JSON in its own form: {Value, vr, Name}.
    type OrthancTags = Record<string, { Value?: unknown; vr?: string }>;
    const studies = (await orthancPost('/dicom-web/servers/eco3d/qido', { Uri: '/studies', Arguments: { PatientID: study.patientId } })) as OrthancTags[];
    assert.equal(studies.length, 1);
    const s = studies[0]!;
    assert.equal(s['0020000D']?.Value, study.studyInstanceUid);
    assert.equal(s['00100010']?.Value, study.patientName, 'PN read from {Alphabetic}');
    assert.equal(s['00100020']?.Value, study.patientId);
    assert.equal(s['00080050']?.Value, study.accessionNumber);
    assert.equal(s['00081190']?.Value, `${ourUrl}/dicom-web/studies/${study.studyInstanceUid}`);
    // (Orthanc 1.10's client drops IS values sent as JSON numbers, which PS3.18 F.2.3 allows, and
    // keeps only the first value of a multi-valued CS: so the counts are not compared here.)
    const series = (await orthancPost('/dicom-web/servers/eco3d/qido', { Uri: `/studies/${study.studyInstanceUid}/series` })) as unknown[];
    assert.equal(series.length, new Set(study.instances.map((i) => i.seriesInstanceUid)).size);
    const frames = study.instances.find((i) => i.kind === 'frames')!;
    const md = (await orthancPost('/dicom-web/servers/eco3d/get', { Uri: `/studies/${study.studyInstanceUid}/series/${frames.seriesInstanceUid}/instances/${frames.sopInstanceUid}/metadata` })) as Array<
      Record<string, { Value?: unknown[]; BulkDataURI?: string }>
    >;
    assert.equal(md[0]!['00080018']?.Value?.[0], frames.sopInstanceUid);
    assert.match(md[0]!['7FE00010']?.BulkDataURI ?? '', /\/bulkdata\/7FE00010$/);
  });

  test('Orthanc retrieves the study from us (WADO-RS) into a fresh store: the same instances come back', async () => {
    // Empty Orthanc, then pull everything back from us.
    const orthancStudies = (await (await orthanc.request('/studies')).json()) as string[];
    for (const id of orthancStudies) assert.equal((await orthanc.request(`/studies/${id}`, { method: 'DELETE' })).status, 200);
    await orthancPost('/dicom-web/servers/eco3d/retrieve', { Resources: [{ Study: study.studyInstanceUid }] });
    for (const inst of study.instances) {
      const found = (await orthancPost('/tools/lookup', inst.sopInstanceUid)) as Array<{ ID: string; Type: string }>;
      const id = found.find((f) => f.Type === 'Instance')?.ID;
      assert.ok(id !== undefined, `${inst.kind} retrieved into Orthanc`);
      const file = new Uint8Array(await (await orthanc.request(`/instances/${id}/file`)).arrayBuffer());
      assert.equal(datasetHash(file), datasetHash(inst.bytes), `${inst.kind}: the data set survived the round trip`);
    }
    assert.ok(audits.some((a) => a.action === 'dicomweb.wado' && a.detail?.kind === 'instances' && a.detail.instances === study.instances.length));
  });
});

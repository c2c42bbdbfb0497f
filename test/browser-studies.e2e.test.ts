// Reading and reporting end to end, in a real browser (Debian's Chromium, headless, niced, driven
// by playwright-core) against a real server (harness.ts: in this process, simulated robot,
// PGlite): one short sweep becomes a study in the archive; a physician signs in, finds it in the
// study browser (QIDO-RS), opens it (WADO-RS: the Enhanced US Volume in the vtk.js view and the
// MPR), measures a distance on a slice, writes findings citing it and signs; the report is final
// over HTTP and over FHIR, and its SR is in the study. Then Amend opens version 2.
//
// The first tests need no server: the page's DICOM reader (viewer/src/study-dicom.ts, DOM-free)
// on files our own writer makes, whole (Part 10 in multipart/related) and as metadata + frames.
//
// Needs the browser apps built (viewer/dist; scripts/test.sh builds them). Screenshots go to
// test-artifacts/studies-*.png.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import dcmjs from 'dcmjs';
import { PNG } from 'pngjs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID, UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID, encodeEnhancedUsVolume } from '../protocols/dicom-us.ts';
import {
  TAG,
  formatPersonName,
  multipartParts,
  studyQueryString,
  studySummary,
  volumeFromPart10,
  volumeGeometry,
  voxelsFromFrames,
  type DicomJson,
} from '../viewer/src/study-dicom.ts';
import { ADMIN_PASSWORD, errorCode, startTestServer, type TestServer } from './harness.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const VIEWPORT = { width: 1600, height: 1000 };
/** The volume view's background (volume-view.ts: vtk.js `background: [0.06, 0.08, 0.11]`). */
const VOLUME_BG = [15, 20, 28] as const;
const PHYSICIAN_PASSWORD = 'physician-password-for-browser-tests';

// ---- the page's DICOM reader, on our own writer's files ------------------------------------------

const NX = 6;
const NY = 5;
const NZ = 4;
const SPACING = { x: 0.3, y: 0.45, z: 0.6 };
const ORIGIN = { x: 431.5, y: -28.25, z: 12.5 };
const IDENTITY = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);

function testVolumeFile(): { bytes: Uint8Array; voxels: Uint8Array } {
  const voxels = new Uint8Array(NX * NY * NZ);
  // Each voxel's value depends on all three indices: a swapped axis or frame shows.
  for (let z = 0; z < NZ; z++) for (let y = 0; y < NY; y++) for (let x = 0; x < NX; x++) voxels[(z * NY + y) * NX + x] = (x * 7 + y * 13 + z * 29) & 0xff;
  const code = { value: '1', scheme: 'DCM', meaning: 'test' };
  const bytes = encodeEnhancedUsVolume({
    patient: { name: 'Doe^Jane', id: 'P-0042' },
    study: { studyInstanceUid: '2.25.1001', studyId: 'S1', accessionNumber: 'ACC-7', studyDateTime: '2024-05-01T10:20:30.123+02:00' },
    equipment: { manufacturer: 'Eco3D', modelName: 'test', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d test'] },
    seriesInstanceUid: '2.25.1002',
    seriesNumber: 2,
    sopInstanceUid: '2.25.1003',
    instanceNumber: 1,
    acquisitionDateTime: '2024-05-01T10:21:00Z',
    contentDateTime: '2024-05-01T10:22:00Z',
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
    volume: { grid: { dims: [NX, NY, NZ], spacingMm: SPACING, originMm: ORIGIN }, data: voxels.slice() },
    acquisitionDurationS: 2,
    frameOfReferenceUid: '2.25.1004',
    volumeFrameOfReferenceUid: '2.25.1005',
    dimensionOrganizationUid: '2.25.1006',
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: IDENTITY,
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: '2.25.1007',
    volumeToTable: IDENTITY,
    tableToPatient: IDENTITY,
    transducer: { description: 'test probe', scanPattern: code, geometry: code, beamSteering: [code], application: code },
    scan: { view: code, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 48 },
  });
  return { bytes, voxels };
}

/** A multipart/related body as a WADO-RS server sends it. */
function multipart(boundary: string, type: string, parts: readonly Uint8Array[]): Uint8Array {
  const enc = new TextEncoder();
  const chunks: Uint8Array[] = [];
  for (const p of parts) chunks.push(enc.encode(`--${boundary}\r\nContent-Type: ${type}\r\n\r\n`), p, enc.encode('\r\n'));
  chunks.push(enc.encode(`--${boundary}--\r\n`));
  return new Uint8Array(Buffer.concat(chunks));
}

/** The file's dataset as WADO-RS metadata (DICOM JSON) would carry it: no pixel data, through JSON. */
function metadataOf(bytes: Uint8Array): Record<string, any> {
  const dict = dcmjs.data.DicomMessage.readFile(bytes.slice().buffer).dict;
  const { [TAG.PixelData]: _pixels, ...rest } = dict;
  return JSON.parse(JSON.stringify(rest)) as Record<string, any>;
}

describe("the study page's DICOM reader (no browser)", () => {
  const file = testVolumeFile();
  const frames = Array.from({ length: NZ }, (_, k) => file.voxels.subarray(k * NX * NY, (k + 1) * NX * NY));

  test('a whole instance in multipart/related (Part 10, read with dcmjs): grid and voxels as written', () => {
    const body = multipart('b0und', 'application/dicom', [file.bytes]);
    const parts = multipartParts(body, 'multipart/related; type="application/dicom"; boundary=b0und');
    assert.equal(parts.length, 1);
    assert.equal(parts[0]!.contentType, 'application/dicom');
    const v = volumeFromPart10(parts[0]!.bytes, dcmjs.data.DicomMessage);
    assert.deepEqual(v.geometry.dims, [NX, NY, NZ]);
    assert.deepEqual(v.geometry.spacingMm.map((s) => +s.toFixed(6)), [SPACING.x, SPACING.y, SPACING.z]);
    assert.deepEqual(v.geometry.originMm, [ORIGIN.x, ORIGIN.y, ORIGIN.z]);
    assert.equal(v.geometry.frame, 'volume');
    assert.deepEqual(v.voxels, file.voxels);
  });

  test('metadata (DICOM JSON) plus frames in multipart/related: the same grid and voxels', () => {
    const meta = metadataOf(file.bytes);
    const geom = volumeGeometry(meta as DicomJson);
    assert.deepEqual(geom.dims, [NX, NY, NZ]);
    assert.deepEqual(geom.originMm, [ORIGIN.x, ORIGIN.y, ORIGIN.z]);
    const body = multipart('frames', 'application/octet-stream', frames);
    const parts = multipartParts(body, 'multipart/related; type="application/octet-stream"; boundary="frames"');
    assert.equal(parts.length, NZ);
    assert.deepEqual(voxelsFromFrames(geom, parts.map((p) => p.bytes)), file.voxels);
  });

  test('frames that run down z are put back in increasing z; a tilted volume is refused, naming why', () => {
    const meta = metadataOf(file.bytes);
    // The same volume written top slice first: frame k holds slice NZ-1-k.
    const perFrame = meta[TAG.PerFrameFunctionalGroupsSequence].Value as Record<string, any>[];
    perFrame.reverse();
    const geom = volumeGeometry(meta as DicomJson);
    assert.deepEqual(geom.originMm, [ORIGIN.x, ORIGIN.y, ORIGIN.z]);
    assert.deepEqual(geom.frameOrder, [4, 3, 2, 1]);
    assert.deepEqual(voxelsFromFrames(geom, [...frames].reverse()), file.voxels);

    const tilted = metadataOf(file.bytes);
    tilted[TAG.SharedFunctionalGroupsSequence].Value[0][TAG.PlaneOrientationVolumeSequence].Value[0][TAG.ImageOrientationVolume].Value = [0.8, 0.6, 0, -0.6, 0.8, 0];
    assert.throws(() => volumeGeometry(tilted as DicomJson), (e: { code?: string; message?: string }) => e.code === 'ECO3D_ERR_BAD_FILE' && /not axis-aligned/.test(e.message ?? ''));
    assert.throws(() => volumeFromPart10(file.bytes.subarray(0, 100), dcmjs.data.DicomMessage), (e: { code?: string }) => e.code === 'ECO3D_ERR_BAD_FILE');
  });

  test('QIDO-RS: the search query string, and a study read from DICOM JSON', () => {
    const q = new URLSearchParams(studyQueryString({ patientName: 'Doe', patientId: 'P-1', dateFrom: '2024-05-01', dateTo: '', limit: 25, offset: 50 }));
    assert.deepEqual(Object.fromEntries(q), { limit: '25', offset: '50', includefield: '00081030,00080061,00201208', PatientName: 'Doe*', PatientID: 'P-1', StudyDate: '20240501-' });
    assert.equal(new URLSearchParams(studyQueryString({ dateFrom: '2024-05-01', dateTo: '2024-05-01', limit: 10, offset: 0 })).get('StudyDate'), '20240501');
    const s = studySummary({
      '0020000D': { vr: 'UI', Value: ['2.25.9'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] },
      '00100020': { vr: 'LO', Value: ['P-0042'] },
      '00080020': { vr: 'DA', Value: ['20240501'] },
      '00080061': { vr: 'CS', Value: ['US', 'SR'] },
      '00201208': { vr: 'IS', Value: [3] },
    });
    assert.deepEqual(s, {
      studyInstanceUid: '2.25.9',
      patientName: 'Doe^Jane',
      patientId: 'P-0042',
      studyDate: '20240501',
      studyTime: '',
      accessionNumber: '',
      description: '',
      modalities: ['US', 'SR'],
      instances: 3,
    });
    assert.equal(formatPersonName(s.patientName), 'Doe, Jane');
  });
});

// ---- the page in Chromium --------------------------------------------------------------------

/** Chromium at a lower CPU priority (see browser.e2e.test.ts: it stands in for the reader's own computer). */
function nicedChromium(): string {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-chromium-'));
  const wrapper = join(dir, 'chromium');
  writeFileSync(wrapper, `#!/bin/sh\nexec nice -n 5 ${JSON.stringify(CHROMIUM)} "$@"\n`, { mode: 0o755 });
  return wrapper;
}

// The page functions below run in the browser; this file is type-checked without the DOM lib.
interface PageElement {
  readonly textContent: string | null;
  readonly dataset: Record<string, string | undefined>;
}
declare const document: { getElementById(id: string): PageElement | null; querySelector(sel: string): unknown };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('reading and reporting in the browser (Chromium)', { timeout: 300_000 }, () => {
  let t: TestServer;
  let browser: Browser;
  let physician: string;
  let ctx: BrowserContext | undefined;

  before(async () => {
    if (!existsSync(join(ROOT, 'viewer', 'dist', 'studies.html'))) {
      throw new Error('viewer/dist/studies.html is missing: build the browser apps first (node --import tsx scripts/build-viewer.ts; scripts/test.sh does)');
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    [t, browser] = await Promise.all([
      startTestServer(),
      chromium.launch({
        executablePath: nicedChromium(),
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      }),
    ]);
    const admin = await t.login('admin', ADMIN_PASSWORD);
    const created = await t.api('/api/accounts', { method: 'POST', token: admin, body: { tenantId: 'demo', username: 'demo-physician', role: 'physician', password: PHYSICIAN_PASSWORD } });
    assert.equal(created.status, 201, `POST /api/accounts (physician): ${JSON.stringify(created.body)}`);
    physician = await t.login('demo-physician', PHYSICIAN_PASSWORD);
  });

  after(async () => {
    await ctx?.close().catch(() => undefined);
    await browser?.close();
    await t?.close();
  });

  /** GET with the physician's token and an Accept header; the body parsed when it is JSON. */
  async function get(path: string, accept: string): Promise<{ status: number; body: any }> {
    const res = await fetch(`${t.url}${path}`, { headers: { authorization: `Bearer ${physician}`, accept }, signal: AbortSignal.timeout(20_000) });
    const text = await res.text();
    try {
      return { status: res.status, body: text === '' ? null : JSON.parse(text) };
    } catch {
      return { status: res.status, body: text };
    }
  }
  const qido = async (path: string): Promise<Record<string, any>[]> => {
    const r = await get(`/dicom-web${path}`, 'application/dicom+json');
    if (r.status === 204) return [];
    assert.equal(r.status, 200, `QIDO ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    assert.ok(Array.isArray(r.body), `QIDO ${path} answers a JSON array`);
    return r.body as Record<string, any>[];
  };
  const first = (ds: Record<string, any>, tag: string): unknown => ds[tag]?.Value?.[0];

  /** Polls `probe` until it returns a value (not undefined) or the deadline passes. */
  async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, everyMs = 500): Promise<T> {
    const end = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < end) {
      try {
        const v = await probe();
        if (v !== undefined) return v;
      } catch (e) {
        lastError = e;
      }
      await sleep(everyMs);
    }
    assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}${lastError === undefined ? '' : `; last error: ${lastError instanceof Error ? lastError.message : JSON.stringify(lastError)}`}`);
  }

  /** One short sweep from the bedside socket (no remote operator, no deadman); its acquisition UID. */
  async function sweep(): Promise<string> {
    const bs = await t.connect('bedside', await t.login('demo-bedside'));
    const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 30, speedMmPerS: 15 };
    // One retry for a sweep the state watchdog stopped on a saturated 2-core machine (as browser.e2e.test.ts).
    for (let attempt = 1; ; attempt++) {
      assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
      const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 10_000, 'acquisition running');
      const uid = running.acquisition.uid!;
      const done = await bs.status((s) => s.acquisition.uid === uid && ['completed', 'aborted'].includes(s.acquisition.state), 90_000, 'acquisition ended');
      if (done.acquisition.state === 'completed') {
        bs.kill();
        return uid;
      }
      if (attempt > 1) assert.fail(`the sweep did not complete twice: ${JSON.stringify(done.acquisition)}`);
    }
  }

  /** Pixels of an element's screenshot that differ from `bg` (sum of |Δrgb| > 24), a 4 px frame left out. */
  async function paintedPixels(page: Page, sel: string, bg: readonly [number, number, number]): Promise<{ painted: number; total: number; png: Buffer }> {
    const png = await page.locator(sel).screenshot();
    const img = PNG.sync.read(png);
    const m = 4;
    let painted = 0;
    for (let y = m; y < img.height - m; y++) {
      for (let x = m; x < img.width - m; x++) {
        const i = (y * img.width + x) * 4;
        if (Math.abs(img.data[i]! - bg[0]) + Math.abs(img.data[i + 1]! - bg[1]) + Math.abs(img.data[i + 2]! - bg[2]) > 24) painted++;
      }
    }
    return { painted, total: (img.width - 2 * m) * (img.height - 2 * m), png };
  }

  test('a physician opens the study of a sweep, measures on a slice, writes and signs the report; it is final over HTTP and FHIR, with an SR in the study; Amend opens v2', async () => {
    const uid = await sweep();

    // The study in the archive, with its volume (the archive consumer runs after completion).
    await until('the study in QIDO /dicom-web/studies', 120_000, async () => {
      const studies = await qido(`/studies?StudyInstanceUID=${encodeURIComponent(uid)}`);
      return studies.some((s) => first(s, '0020000D') === uid) ? true : undefined;
    });
    await until('the Enhanced US Volume in the study', 60_000, async () => {
      const instances = await qido(`/studies/${encodeURIComponent(uid)}/instances`);
      return instances.some((i) => first(i, '00080016') === ENHANCED_US_VOLUME_SOP_CLASS_UID) ? true : undefined;
    });

    ctx = await browser.newContext({ viewport: VIEWPORT });
    const page = await ctx.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    const shot = async (name: string): Promise<void> => writeFileSync(join(ARTIFACTS, `studies-${name}.png`), await page.screenshot({ fullPage: true }));
    try {
      // Sign in on the login page; it comes back to the study browser.
      await page.goto(`${t.url}/index.html?next=studies.html`);
      await page.fill('#username', 'demo-physician');
      await page.fill('#password', PHYSICIAN_PASSWORD);
      await page.click('#login');
      await page.waitForURL((u) => u.pathname.endsWith('/studies.html'), { timeout: 15_000 });
      assert.equal(await page.textContent('#who'), 'demo-physician (physician, demo)');

      // The study browser lists it; open it.
      const row = `#studies tr[data-study-uid="${uid}"]`;
      await page.waitForSelector(row, { timeout: 20_000 });
      await page.click(row);
      await page.waitForFunction(() => ['loaded', 'error', 'no-volume'].includes(document.getElementById('study-state')?.dataset.state ?? ''), undefined, { timeout: 90_000, polling: 200 });
      const state = await page.getAttribute('#study-state', 'data-state');
      assert.equal(state, 'loaded', `the volume loaded: ${await page.textContent('#study-state')}; errors: ${await page.textContent('#errors')}`);
      assert.equal(new URL(page.url()).searchParams.get('study'), uid, 'the address names the open study');
      assert.match((await page.textContent('#volume-info')) ?? '', /^\d+×\d+×\d+ @ /);

      // The volume on screen (software GL re-renders at most every 2 s).
      const canvas = '#volume-view canvas';
      let drawn = await paintedPixels(page, canvas, VOLUME_BG);
      for (const end = Date.now() + 30_000; drawn.painted < drawn.total * 0.01 && Date.now() < end; ) {
        await sleep(500);
        drawn = await paintedPixels(page, canvas, VOLUME_BG);
      }
      writeFileSync(join(ARTIFACTS, 'studies-volume.png'), drawn.png);
      assert.ok(drawn.painted > drawn.total * 0.01, `the volume view shows the study's volume: ${drawn.painted} of ${drawn.total} pixels drawn`);

      // A distance on the axial slice: two clicks either side of its centre, then save.
      await page.click('#caliper-distance');
      const box = (await page.locator('#mpr-axial').boundingBox())!;
      await page.mouse.click(box.x + box.width * 0.38, box.y + box.height * 0.5);
      await page.mouse.click(box.x + box.width * 0.62, box.y + box.height * 0.5);
      assert.match((await page.textContent('#caliper-value')) ?? '', /^\d+\.\d mm$/, 'the caliper shows a distance');
      await page.click('#caliper-save');
      const pick = '#report-measurements input[data-measurement-id]';
      await page.waitForSelector(pick, { timeout: 15_000 });
      const measurementId = (await page.getAttribute(pick, 'data-measurement-id'))!;
      const listed = await t.api(`/api/acquisitions/${encodeURIComponent(uid)}/measurements`, { token: physician });
      const m = (listed.body.measurements as { id: string; kind: string; valueMm?: number; createdBy: string }[]).find((x) => x.id === measurementId);
      assert.ok(m !== undefined && m.kind === 'distance' && (m.valueMm ?? 0) > 0 && m.createdBy === 'demo-physician', `the measurement is stored: ${JSON.stringify(listed.body)}`);

      // Findings citing the measurement; Sign saves the draft and signs it.
      assert.equal(await page.isVisible('#report-sign'), true, 'a physician sees Sign');
      const findings = `Homogeneous parenchyma. Lesion ${m.valueMm!.toFixed(1)} mm, measured on the axial slice.`;
      await page.fill('#report-findings', findings);
      await page.fill('#report-conclusion', 'No follow-up needed.');
      await page.check(pick);
      await shot('draft');
      await page.click('#report-sign');
      await page.waitForFunction(() => ['final', 'amended'].includes(document.getElementById('report-status')?.dataset.status ?? ''), undefined, { timeout: 30_000, polling: 200 });
      assert.equal(await page.getAttribute('#report-status', 'data-status'), 'final');
      assert.equal(await page.isDisabled('#report-findings'), true, 'a signed report is read-only');
      assert.equal(await page.isVisible('#report-amend'), true, 'a signed report offers Amend');
      await shot('signed');

      // Over HTTP: final, as written, citing the measurement, signed by the physician.
      const rep = await t.api(`/api/studies/${encodeURIComponent(uid)}/report`, { token: physician });
      assert.equal(rep.status, 200, JSON.stringify(rep.body));
      const signed = rep.body.current;
      assert.deepEqual(
        { status: signed.status, version: signed.version, findings: signed.findings, conclusion: signed.conclusion, measurementIds: signed.measurementIds, signedBy: signed.signedBy },
        { status: 'final', version: 1, findings, conclusion: 'No follow-up needed.', measurementIds: [measurementId], signedBy: 'demo-physician' },
      );

      // Over FHIR: the DiagnosticReport is final.
      const fhirId = await until('the report to carry its FHIR DiagnosticReport id', 30_000, async () => {
        const r = await t.api(`/api/studies/${encodeURIComponent(uid)}/report`, { token: physician });
        const id: unknown = r.body?.current?.fhirDiagnosticReportId;
        return typeof id === 'string' && id !== '' ? id : undefined;
      });
      const dr = await until('DiagnosticReport final over FHIR', 60_000, async () => {
        const r = await get(`/fhir/DiagnosticReport/${encodeURIComponent(fhirId)}`, 'application/fhir+json');
        return r.status === 200 && r.body?.status === 'final' ? (r.body as Record<string, unknown>) : undefined;
      });
      assert.equal(dr.resourceType, 'DiagnosticReport');

      // QIDO lists the SR in the study.
      const srSeries = await until('an SR series in the study', 60_000, async () => {
        const series = await qido(`/studies/${encodeURIComponent(uid)}/series?Modality=SR`);
        const sr = series.filter((s) => first(s, '00080060') === 'SR');
        return sr.length > 0 ? sr : undefined;
      });
      const srInstances = (
        await Promise.all(srSeries.map((s) => qido(`/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(String(first(s, '0020000E')))}/instances`)))
      ).flat();
      assert.ok(srInstances.length >= 1, 'the SR series has an instance');
      if (typeof signed.srSopInstanceUid === 'string') {
        assert.ok(
          srInstances.some((i) => first(i, '00080018') === signed.srSopInstanceUid),
          `the signed report's SR ${signed.srSopInstanceUid} is listed: ${JSON.stringify(srInstances.map((i) => first(i, '00080018')))}`,
        );
      }

      // Amend: a new draft version linked to the signed one, editable again.
      await page.click('#report-amend');
      await page.waitForFunction(() => document.getElementById('report-status')?.dataset.version === '2', undefined, { timeout: 15_000, polling: 200 });
      assert.equal(await page.getAttribute('#report-status', 'data-status'), 'preliminary');
      assert.equal(await page.isDisabled('#report-findings'), false, 'the amendment is editable');
      assert.equal(await page.inputValue('#report-findings'), findings, 'the amendment starts from the signed findings');
      assert.equal(await page.locator('#report-versions details').count(), 2, 'the history shows both versions');
      const afterAmend = await t.api(`/api/studies/${encodeURIComponent(uid)}/report`, { token: physician });
      assert.deepEqual(
        { status: afterAmend.body.current.status, version: afterAmend.body.current.version, replacesId: afterAmend.body.current.replacesId, versions: afterAmend.body.versions.length },
        { status: 'preliminary', version: 2, replacesId: signed.id, versions: 2 },
      );
      await shot('amending');

      assert.equal((await page.textContent('#errors')) ?? '', '', 'no error was shown');
      assert.deepEqual(errors, [], 'no uncaught errors in the page');
    } catch (e) {
      await shot('failure').catch(() => undefined);
      throw e;
    }
  });
});

// De-identification throughput, ours side by side with dcmtk's dcmodify doing the equivalent tag
// edits on copies of the same files.
//
// Ours is `runDeidentify`, the work of `eco3d deidentify` (read, PS3.15 Basic Profile with the CLI's
// default Options, atomic write with fsync), run in-process: the `eco3d` CLI's own start-up
// (it loads the whole server through server/cli.ts) is printed apart, as deid-cli-start. The
// in-memory figures are `deidentifyPart10` alone, bytes to bytes.
//
// dcmodify's edits are derived from what ours did to each file: every attribute removed (-e path,
// at any depth; -ep for private data), every value changed or added (-i path=value), so it does
// the same edits (not the same choices: it does no remapping, it writes the values we computed).
// Its UIDs differ per file, so each file needs its own dcmodify run (deid-small-dcmodify); as a
// lower bound of its cost we also time one dcmodify run applying one file's edits to all files
// (deid-small-dcmodify-batch), start-up paid once.
//
// Large: an Enhanced US Volume of 384³ voxels (56.6 MB) and a US Multi-frame of 200 frames of
// 640 × 480 (61.4 MB). Small: 400 single-frame US Multi-frame images of 256 × 256 (66 kB) and 100
// Comprehensive 3D SRs, 20 patients. MB = 10⁶ bytes of input.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import dcmjs, { type DenaturalizedDataset } from 'dcmjs';
import { deidentifyPart10, patientDateShiftDays, type DeidOptions } from '../protocols/deid.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID, UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID, encodeEnhancedUsVolume, encodeUsMultiframe, type DicomUsCommon } from '../protocols/dicom-us.ts';
import { encodeMeasurementReport } from '../protocols/dicom-sr.ts';
import { runDeidentify } from '../server/deidentify-command.ts';
import { bench } from './stats.ts';

const REPS_LARGE = 3;
const REPS_SMALL = 3;
const work = mkdtempSync(join(tmpdir(), 'eco3d-deid-bench-'));
const keyFile = join(work, 'deid.key');
const IDENTITY = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** A UID for patient p, kind k, instance n (components without leading zeros). */
const uid = (p: number, k: number, n = 0): string => `2.25.${p + 1}.${k}.${n + 1}`;

function common(p: number, n: number): DicomUsCommon {
  return {
    patient: { name: `Benchpatient^P${p}`, id: `BENCH-${p}`, birthDate: '1960-05-01', sex: p % 2 === 0 ? 'F' : 'M', sizeM: 1.7, weightKg: 70 },
    study: { studyInstanceUid: uid(p, 1), studyId: `S${p}`, accessionNumber: `ACC${p}`, studyDateTime: '2024-05-01T10:00:00Z', description: 'Liver', referringPhysicianName: 'Ref^Doc' },
    equipment: { manufacturer: 'Eco3D', modelName: 'bench', deviceSerialNumber: 'SN-1', softwareVersions: ['bench'], institutionName: 'Bench Hospital', stationName: 'STN1' },
    seriesInstanceUid: uid(p, 2),
    seriesNumber: 1,
    seriesDescription: 'B-mode',
    sopInstanceUid: uid(p, 3, n),
    instanceNumber: n + 1,
    acquisitionDateTime: '2024-05-01T10:00:00Z',
    contentDateTime: '2024-05-01T10:01:00Z',
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
  };
}

function volumeFile(n: number): Uint8Array {
  const data = new Uint8Array(n * n * n);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  return encodeEnhancedUsVolume({
    ...common(0, 0),
    volume: { grid: { dims: [n, n, n], spacingMm: { x: 0.25, y: 0.25, z: 0.25 }, originMm: { x: 0, y: 0, z: 0 } }, data },
    acquisitionDurationS: 10,
    frameOfReferenceUid: '2.25.904',
    volumeFrameOfReferenceUid: '2.25.905',
    dimensionOrganizationUid: '2.25.906',
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: IDENTITY,
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: '2.25.907',
    volumeToTable: IDENTITY,
    tableToPatient: IDENTITY,
    transducer: {
      description: 'bench',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: { view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' }, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 64 },
  });
}

function framesFile(p: number, n: number, count: number, width: number, height: number): Uint8Array {
  return encodeUsMultiframe({
    ...common(p, n),
    frames: Array.from({ length: count }, (_, k) => ({ index: k, tMs: k * 33, width, height, pixels: new Uint8Array(width * height).fill((k * 7 + n) & 0xff) })),
    pixelSpacingMm: { x: 0.1, y: 0.1 },
    frameOfReferenceUid: uid(p, 4),
  });
}

function reportFile(p: number, n: number): Uint8Array {
  const c = common(p, n);
  return encodeMeasurementReport({
    patient: c.patient,
    study: c.study,
    equipment: c.equipment,
    seriesInstanceUid: uid(p, 5),
    seriesNumber: 100,
    sopInstanceUid: uid(p, 6, n),
    instanceNumber: n + 1,
    contentDateTime: '2024-05-02T10:00:00Z',
    deviceObserverUid: '2.25.908',
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: uid(p, 3), seriesInstanceUid: uid(p, 2), frameOfReferenceUid: '2.25.905' },
    measurements: [{ kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 1, y: 2, z: 3 }, { x: 4, y: 5, z: 6 }], label: 'Lesion' }],
    findings: 'Free text of the report',
  });
}

// ---------------------------------------------------------------------------------------------
// dcmodify's equivalent edits

const hex = (k: string): string => `(${k.slice(0, 4)},${k.slice(4)})`;

function valueText(el: DenaturalizedDataset[string]): string {
  return (el.Value ?? [])
    .map((x: unknown) => (typeof x === 'object' && x !== null && 'Alphabetic' in x ? (typeof x.Alphabetic === 'string' ? x.Alphabetic : '') : typeof x === 'string' || typeof x === 'number' ? String(x) : ''))
    .join('\\');
}

const isPrivate = (k: string): boolean => parseInt(k.slice(0, 4), 16) % 2 === 1;

/** The dcmodify edits that turn `a` into `b` (attributes at any depth; private data by -ep). */
function edits(a: DenaturalizedDataset, b: DenaturalizedDataset, prefix = ''): string[] {
  const out: string[] = [];
  for (const [k, el] of Object.entries(a)) {
    if (isPrivate(k) || k === '7FE00010' || k.startsWith('0002')) continue;
    const next = b[k];
    if (next === undefined) out.push('-e', `${prefix}${hex(k)}`);
    else if (el.vr === 'SQ') {
      const items = (el.Value ?? []) as DenaturalizedDataset[];
      const nextItems = (next.Value ?? []) as DenaturalizedDataset[];
      if (nextItems.length < items.length) for (let i = items.length - 1; i >= nextItems.length; i--) out.push('-e', `${prefix}${hex(k)}[${i}]`);
      items.slice(0, nextItems.length).forEach((item, i) => out.push(...edits(item, nextItems[i]!, `${prefix}${hex(k)}[${i}].`)));
    } else if (valueText(el) !== valueText(next)) out.push('-i', `${prefix}${hex(k)}=${valueText(next)}`);
  }
  for (const [k, el] of Object.entries(b)) {
    if (a[k] !== undefined || k === '7FE00010') continue;
    if (el.vr === 'SQ') ((el.Value ?? []) as DenaturalizedDataset[]).forEach((item, i) => out.push(...edits({}, item, `${prefix}${hex(k)}[${i}].`)));
    else out.push('-i', `${prefix}${hex(k)}=${valueText(el)}`);
  }
  return out;
}

function dcmodifyArgs(input: Uint8Array, output: Uint8Array): string[] {
  const a = dcmjs.data.DicomMessage.readFile(new Uint8Array(input).buffer, { untilTag: '7FE00010', includeUntilTagValue: false, ignoreErrors: false, noCopy: false }).dict;
  const b = dcmjs.data.DicomMessage.readFile(new Uint8Array(output).buffer, { untilTag: '7FE00010', includeUntilTagValue: false, ignoreErrors: false, noCopy: false }).dict;
  return ['-nb', '-ie', '-imt', '-ep', ...edits(a, b)];
}

function dcmodify(args: string[], files: string[]): number {
  const t0 = performance.now();
  const r = spawnSync('dcmodify', [...args, ...files], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const ms = performance.now() - t0;
  if (r.error !== undefined) throw new Error(`dcmodify could not run (is dcmtk installed?): ${String(r.error)}`);
  if (r.status !== 0) throw new Error(`dcmodify failed (${r.status}): ${r.stderr.slice(0, 2000)}`);
  return ms;
}

// ---------------------------------------------------------------------------------------------

function writeSet(name: string, files: ReadonlyArray<readonly [string, Uint8Array]>): string {
  const d = join(work, name);
  mkdirSync(d, { recursive: true });
  for (const [f, bytes] of files) writeFileSync(join(d, f), bytes);
  return d;
}

function copySet(from: string, to: string): string[] {
  rmSync(to, { recursive: true, force: true });
  mkdirSync(to, { recursive: true });
  return readdirSync(from)
    .sort()
    .map((f) => {
      copyFileSync(join(from, f), join(to, f));
      return join(to, f);
    });
}

async function ours(inDir: string, outDir: string): Promise<number> {
  rmSync(outDir, { recursive: true, force: true });
  const r = await runDeidentify({ inputs: [inDir], outDir, keyFile, env: {}, warn: () => undefined });
  if (r.failures.length > 0) throw new Error(`ours failed: ${JSON.stringify(r.failures[0])}`);
  return r.summary.seconds * 1000;
}

const bytesOf = (dir: string): number => readdirSync(dir).reduce((s, f) => s + statSync(join(dir, f)).size, 0);

async function main(): Promise<void> {
  // The key, as the CLI would make it; the options as the CLI's defaults.
  await runDeidentify({ inputs: [writeSet('warm', [['w.dcm', reportFile(99, 0)]])], outDir: join(work, 'warm-out'), keyFile, env: {}, warn: () => undefined });
  const key = readFileSync(keyFile);
  const options: DeidOptions = { uidKey: key, cleanStructuredContent: true, retainPatientCharacteristics: true, cleanDescriptors: true, dateShiftDaysForPatient: (id) => patientDateShiftDays(key, id) };

  // Large volumes.
  const large = writeSet('large', [
    ['volume.dcm', volumeFile(384)],
    ['frames.dcm', framesFile(1, 0, 200, 640, 480)],
  ]);
  const largeBytes = bytesOf(large);
  console.error(`# large: ${readdirSync(large).map((f) => `${f} ${(statSync(join(large, f)).size / 1e6).toFixed(1)} MB`).join(', ')}`);
  const largeInputs = readdirSync(large).sort().map((f) => new Uint8Array(readFileSync(join(large, f))));
  const largeArgs = largeInputs.map((b) => dcmodifyArgs(b, deidentifyPart10(b, options).bytes));
  console.error(`# dcmodify edits per large file: ${largeArgs.map((a) => a.length / 2).join(', ')}`);
  const oursLarge: number[] = [];
  const memLarge: number[] = [];
  const theirsLarge: number[] = [];
  for (let r = 0; r < REPS_LARGE; r++) {
    oursLarge.push(await ours(large, join(work, 'large-out')));
    const t0 = performance.now();
    for (const b of largeInputs) deidentifyPart10(b, options);
    memLarge.push(performance.now() - t0);
    const copies = copySet(large, join(work, 'large-dcmodify'));
    theirsLarge.push(copies.reduce((ms, f, i) => ms + dcmodify(largeArgs[i]!, [f]), 0));
  }
  const mbps = (ms: number): number => largeBytes / 1e6 / (ms / 1000);
  bench('deid-large-mb-per-s', Math.round(mbps(median(oursLarge))), 'MB/s');
  bench('deid-large-dcmodify-mb-per-s', Math.round(mbps(median(theirsLarge))), 'MB/s');
  bench('deid-large-ratio', Math.round((median(theirsLarge) / median(oursLarge)) * 100) / 100, 'x');
  bench('deid-large-inmemory-mb-per-s', Math.round(mbps(median(memLarge))), 'MB/s');
  rmSync(join(work, 'large-out'), { recursive: true, force: true });
  rmSync(join(work, 'large-dcmodify'), { recursive: true, force: true });

  // Many small instances.
  const smallFiles: Array<readonly [string, Uint8Array]> = [];
  for (let i = 0; i < 400; i++) smallFiles.push([`us-${String(i).padStart(4, '0')}.dcm`, framesFile(i % 20, i, 1, 256, 256)]);
  for (let i = 0; i < 100; i++) smallFiles.push([`sr-${String(i).padStart(4, '0')}.dcm`, reportFile(i % 20, i)]);
  const small = writeSet('small', smallFiles);
  const n = smallFiles.length;
  console.error(`# small: ${n} files, ${(bytesOf(small) / 1e6).toFixed(1)} MB`);
  const smallInputs = readdirSync(small).sort().map((f) => new Uint8Array(readFileSync(join(small, f))));
  const smallArgs = smallInputs.map((b) => dcmodifyArgs(b, deidentifyPart10(b, options).bytes));
  const oursSmall: number[] = [];
  const memSmall: number[] = [];
  const theirsSmall: number[] = [];
  const theirsBatch: number[] = [];
  for (let r = 0; r < REPS_SMALL; r++) {
    oursSmall.push(await ours(small, join(work, 'small-out')));
    const t0 = performance.now();
    for (const b of smallInputs) deidentifyPart10(b, options);
    memSmall.push(performance.now() - t0);
    const copies = copySet(small, join(work, 'small-dcmodify'));
    theirsSmall.push(copies.reduce((ms, f, i) => ms + dcmodify(smallArgs[i]!, [f]), 0));
    // One run over all the US images with the first one's edits, then all the SRs likewise.
    const batch = copySet(small, join(work, 'small-batch'));
    const sr = batch.filter((f) => f.includes('/sr-'));
    const us = batch.filter((f) => f.includes('/us-'));
    theirsBatch.push(dcmodify(smallArgs[smallInputs.length - 1]!, us) + dcmodify(smallArgs[0]!, sr));
  }
  const ips = (ms: number): number => n / (ms / 1000);
  bench('deid-small-instances-per-s', Math.round(ips(median(oursSmall))), 'inst/s');
  bench('deid-small-dcmodify-instances-per-s', Math.round(ips(median(theirsSmall))), 'inst/s');
  bench('deid-small-dcmodify-batch-instances-per-s', Math.round(ips(median(theirsBatch))), 'inst/s');
  bench('deid-small-ratio', Math.round((median(theirsSmall) / median(oursSmall)) * 100) / 100, 'x');
  bench('deid-small-ratio-batch', Math.round((median(theirsBatch) / median(oursSmall)) * 100) / 100, 'x');
  bench('deid-small-inmemory-instances-per-s', Math.round(ips(median(memSmall))), 'inst/s');

  // The CLI's start-up, which a one-off `eco3d deidentify` pays on top (one SR).
  const bin = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));
  const one = writeSet('one', [['one.dcm', reportFile(98, 0)]]);
  const t0 = performance.now();
  const cli = spawnSync(process.execPath, [bin, 'deidentify', one, '--out', join(work, 'one-out'), '--key-file', keyFile], { encoding: 'utf8' });
  if (cli.status !== 0) throw new Error(`eco3d deidentify failed: ${cli.stderr}`);
  bench('deid-cli-start', Math.round((performance.now() - t0) / 10) / 100, 's');
}

try {
  await main();
} finally {
  rmSync(work, { recursive: true, force: true });
}

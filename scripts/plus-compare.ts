// Compares `eco3d reconstruct` with the PLUS toolkit's reference reconstructions.
//
//   node --import tsx scripts/plus-compare.ts <PlusLibData dir> [case …] [--keep <dir>] [--plus-rounding]
//   node --import tsx scripts/plus-compare.ts --oracle <dir> [case …] [--keep <dir>] [--plus-rounding]
//
// <PlusLibData dir> is a checkout (or extract) of PlusToolkit/PlusLibData holding
// ConfigFiles/Testing/*.xml and TestImages/*. PLUS's data is never committed here: fetch it
// yourself (e.g. `git clone https://github.com/PlusToolkit/PlusLibData`). Cases whose files are
// missing are reported as SKIP.
//
// The cases are PLUS's VolumeReconstructor regression tests (PlusLib
// src/PlusVolumeReconstruction/Testing/CMakeLists.txt: same config, input and flags, compared to
// TestImages/[Linux/]vtkVolumeReconstructorTest<OUT>volumeRef.mha) plus the older reference
// reconstructions kept in PlusLibData. For each case it runs our `runReconstruct`, reads PLUS's
// volume, reports the grid difference (origin, dims, spacing), resamples ours onto PLUS's grid
// (nearest voxel centre) if they differ, and prints:
//   dice  – Dice of the filled (non-zero) voxels of the two volumes;
//   corr  – Pearson correlation over the voxels both fill;
//   mad   – mean absolute difference over the voxels both fill;
//   exact – share of the voxels both fill that are equal;
//   same  – share of all voxels that are equal (0 = 0 included), and the largest |difference|;
// PASS when dice ≥ 0.9 and corr ≥ 0.95 (issue 3's thresholds). `--keep <dir>` keeps our volumes.
// Exit code 1 when a case that ran failed.
//
// `--plus-rounding` runs every MEAN case with `eco3d reconstruct --plus-rounding` (PLUS's
// per-insertion rounding of the running mean and weight instead of our exact sums); cases with
// other compounding modes, where the flag means nothing, are skipped.
//
// `--oracle <dir>` runs the cases of <dir>/cases.json instead: reference volumes made locally by
// running PLUS's own reconstruction code (e.g. a build of IGSIO's VolumeReconstructorTest) on
// configs that vary one option at a time, for the options PlusLibData has no reference volume for.
// cases.json is `{ "cases": [{ "name", "config", "sequence", "reference", "transform", "note"? }] }`,
// relative paths resolved against <dir>. Nothing of PLUS is kept in this repository. A case may add
// "unfilled" (PLUS's volume with FillHoles OFF) and "accumulation" (PLUS's accumulation buffer,
// `--output-volume-accumulation-file`): then our hole filling also runs alone on PLUS's unfilled
// volume, holes = voxels whose PLUS accumulation is 0, and the line `fill-only` reports how many
// of PLUS's holes we fill to a different value (and by how much at most).
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import {
  decodeMetaImage,
  decodeMetaImageVolume,
  metaElementReader,
  readMetaImageFileParts,
  readMetaImageVolumeFile,
  readPlusConfigFile,
  type Volume,
} from '../protocols/index.ts';
import { runReconstruct } from '../server/reconstruct-command.ts';
import { fillHoles } from '../streamer/index.ts';

interface Case {
  readonly name: string;
  readonly config: string;
  readonly sequence: string;
  /** Candidates, first existing wins (platform-specific folder first, as PLUS's CMake does). */
  readonly reference: readonly string[];
  readonly transform: string;
  /** Why the case cannot run here (feature we do not support). */
  readonly unsupported?: string;
  /**
   * Oracle hole-filling cases: PLUS's volume before hole filling and its accumulation buffer, so
   * our hole filling alone can be run on PLUS's own input and compared voxel for voxel.
   */
  readonly unfilled?: string;
  readonly accumulation?: string;
}

const T = 'ConfigFiles/Testing/PlusDeviceSet_VolumeReconstructionOnly_';
const ref = (out: string): string[] => [`TestImages/Linux/vtkVolumeReconstructorTest${out}volumeRef.mha`, `TestImages/vtkVolumeReconstructorTest${out}volumeRef.mha`];

const CASES: readonly Case[] = [
  { name: 'NNLATE', config: `${T}SonixRP_TRUS_D70mm_NN_LATE.xml`, sequence: 'TestImages/SpinePhantomFreehand.igs.mha', reference: ref('NNLATE'), transform: 'ImageToReference' },
  { name: 'NNMEAN', config: `${T}SpinePhantom_NN_MEAN.xml`, sequence: 'TestImages/SpinePhantomFreehand.igs.mha', reference: ref('NNMEAN'), transform: 'ImageToReference' },
  { name: 'NNMAXI', config: `${T}SpinePhantom_NN_MAXI.xml`, sequence: 'TestImages/SpinePhantomFreehand3FramesFloat.igs.mha', reference: ref('NNMAXI'), transform: 'ImageToReference' },
  { name: 'LNLATE', config: `${T}SpinePhantom_LN_LATE.xml`, sequence: 'TestImages/SpinePhantomFreehand3FramesFloat.igs.mha', reference: ref('LNLATE'), transform: 'ImageToReference' },
  { name: 'LNMEAN', config: `${T}SonixRP_TRUS_D70mm_LN_MEAN.xml`, sequence: 'TestImages/SpinePhantomFreehand.igs.mha', reference: ref('LNMEAN'), transform: 'ImageToReference' },
  { name: 'LNMAXI', config: `${T}SpinePhantom_LN_MAXI.xml`, sequence: 'TestImages/SpinePhantomFreehand.igs.mha', reference: ref('LNMAXI'), transform: 'ImageToReference' },
  ...(['LinearFull:IMLiF', 'LinearPartial:IMLiP', 'LinearNone:IMLiN', 'NNFull:IMNNF', 'NNPartial:IMNNP', 'NNNone:IMNNN'] as const).map((s) => {
    const [cfg, out] = s.split(':') as [string, string];
    return {
      name: out,
      config: `${T}ImportanceMask${cfg}.xml`,
      sequence: 'TestImages/ImportanceMaskInput.igs.mha',
      reference: ref(out),
      transform: 'ImageToReference',
      unsupported: 'IMPORTANCE_MASK compounding is not supported',
    };
  }),
  // Older reference reconstructions kept in PlusLibData (made by earlier PLUS versions).
  {
    name: 'SpineRecon',
    config: 'ConfigFiles/Testing/PlusDeviceSet_SpinePhantomFreehandReconstructionOnly.xml',
    sequence: 'TestImages/SpinePhantomFreehand.igs.mha',
    reference: ['TestImages/SpinePhantomFreehandReconstructed.mha'],
    transform: 'ImageToReference',
  },
  {
    name: 'NwireRecon',
    config: 'ConfigFiles/Testing/PlusDeviceSet_NwirePhantomFreehand_vtkVolumeReconstructorTest2.xml',
    sequence: 'TestImages/NwirePhantomFreehand.igs.mha',
    reference: ['TestImages/NwirePhantomFreehandReconstructed.mha'],
    transform: 'ImageToReference',
  },
];

/** The cases of an oracle directory's cases.json, paths made absolute. */
async function oracleCases(dir: string): Promise<Case[]> {
  const raw = JSON.parse(await readFile(join(dir, 'cases.json'), 'utf8')) as { cases?: unknown };
  if (!Array.isArray(raw.cases)) throw new Error(`${join(dir, 'cases.json')}: expected { "cases": [...] }`);
  const abs = (p: string): string => (isAbsolute(p) ? p : join(dir, p));
  return raw.cases.map((c: unknown, i: number): Case => {
    const o = c as Record<string, unknown>;
    for (const k of ['name', 'config', 'sequence', 'reference'] as const) {
      if (typeof o[k] !== 'string') throw new Error(`${join(dir, 'cases.json')}: case ${i} has no string "${k}"`);
    }
    return {
      name: o.name as string,
      config: abs(o.config as string),
      sequence: abs(o.sequence as string),
      reference: [abs(o.reference as string)],
      transform: typeof o.transform === 'string' ? o.transform : 'ImageToReference',
      ...(typeof o.unfilled === 'string' && typeof o.accumulation === 'string' ? { unfilled: abs(o.unfilled), accumulation: abs(o.accumulation) } : {}),
    };
  });
}

/** Our hole filling on PLUS's unfilled volume and accumulation buffer, against PLUS's filled volume. */
async function fillOnly(c: Case, configFile: string, plusFilled: Volume): Promise<string> {
  const unfilled = await readReference(c.unfilled!);
  const accImage = decodeMetaImage((await readMetaImageFileParts(c.accumulation!)).bytes, { source: c.accumulation! });
  const n = unfilled.data.length;
  if (accImage.dims.reduce((a, b) => a * b, 1) !== n || plusFilled.data.length !== n) return 'fill-only: grids differ, skipped';
  const read = metaElementReader(accImage.elementType, accImage.bytes);
  const accumulation = new Float32Array(n);
  const coverage = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    accumulation[i] = read(i);
    coverage[i] = accumulation[i]! > 0 ? 1 : 0;
  }
  const vr = (await readPlusConfigFile(configFile)).volumeReconstruction!;
  const ours = fillHoles(unfilled, coverage, vr.holeFilling, { accumulation }).volume.data;
  let holes = 0;
  let differ = 0;
  let maxDiff = 0;
  for (let i = 0; i < n; i++) {
    if (coverage[i] !== 0) continue;
    holes++;
    const d = Math.abs(ours[i]! - plusFilled.data[i]!);
    if (d > 0) differ++;
    if (d > maxDiff) maxDiff = d;
  }
  return `fill-only (ours on PLUS's unfilled volume): ${differ} of ${holes} holes differ, max |Δ| ${maxDiff}`;
}

const DICE_MIN = 0.9;
const CORR_MIN = 0.95;

async function exists(p: string): Promise<boolean> {
  try {
    const s = await stat(p);
    return s.isFile() && s.size > 0;
  } catch {
    return false;
  }
}

/** PLUS's volume as uint8 (float references are rounded and clamped). */
async function readReference(path: string): Promise<Volume> {
  const parts = await readMetaImageFileParts(path);
  return decodeMetaImageVolume(parts.bytes, { source: path, convert: 'clamp', ...(parts.dataFile === undefined ? {} : { dataFile: parts.dataFile }) });
}

/** Ours resampled onto `target`'s grid: the voxel whose centre is nearest (0 outside). */
function resample(src: Volume, target: Volume['grid']): Uint8Array {
  const [nx, ny, nz] = target.dims;
  const [sx, sy, sz] = src.grid.dims;
  const out = new Uint8Array(nx * ny * nz);
  const idx = (o: number, s: number, i: number, to: number, ts: number): number => Math.round((to + i * ts - o) / s);
  for (let z = 0; z < nz; z++) {
    const k = idx(src.grid.originMm.z, src.grid.spacingMm.z, z, target.originMm.z, target.spacingMm.z);
    if (k < 0 || k >= sz) continue;
    for (let y = 0; y < ny; y++) {
      const j = idx(src.grid.originMm.y, src.grid.spacingMm.y, y, target.originMm.y, target.spacingMm.y);
      if (j < 0 || j >= sy) continue;
      for (let x = 0; x < nx; x++) {
        const i = idx(src.grid.originMm.x, src.grid.spacingMm.x, x, target.originMm.x, target.spacingMm.x);
        if (i < 0 || i >= sx) continue;
        out[x + nx * (y + ny * z)] = src.data[i + sx * (j + sy * k)]!;
      }
    }
  }
  return out;
}

interface Figures {
  readonly gridMatch: boolean;
  readonly gridNote: string;
  readonly dice: number;
  readonly corr: number;
  readonly mad: number;
  readonly exact: number;
  /** Share of all voxels that are equal, and the largest |difference|. */
  readonly same: number;
  readonly maxDiff: number;
  readonly oursFilled: number;
  readonly plusFilled: number;
}

function fmt3(v: { x: number; y: number; z: number }): string {
  return `${v.x.toFixed(4)} ${v.y.toFixed(4)} ${v.z.toFixed(4)}`;
}

function compare(ours: Volume, plus: Volume): Figures {
  const g = ours.grid;
  const p = plus.grid;
  const dOrigin = Math.max(Math.abs(g.originMm.x - p.originMm.x), Math.abs(g.originMm.y - p.originMm.y), Math.abs(g.originMm.z - p.originMm.z));
  const dSpacing = Math.max(Math.abs(g.spacingMm.x - p.spacingMm.x), Math.abs(g.spacingMm.y - p.spacingMm.y), Math.abs(g.spacingMm.z - p.spacingMm.z));
  const sameDims = g.dims.every((d, i) => d === p.dims[i]);
  // PLUS writes the origin with 6 significant digits
  const gridMatch = sameDims && dOrigin < 1e-3 && dSpacing < 1e-6;
  const gridNote = gridMatch
    ? `dims ${g.dims.join('×')}`
    : `ours dims ${g.dims.join('×')} origin ${fmt3(g.originMm)} spacing ${fmt3(g.spacingMm)}; ` +
      `PLUS dims ${p.dims.join('×')} origin ${fmt3(p.originMm)} spacing ${fmt3(p.spacingMm)} (max |Δorigin| ${dOrigin.toFixed(4)} mm)`;
  const a = gridMatch ? ours.data : resample(ours, p);
  const b = plus.data;
  let na = 0;
  let nb = 0;
  let both = 0;
  let sa = 0;
  let sb = 0;
  let saa = 0;
  let sbb = 0;
  let sab = 0;
  let sad = 0;
  let eq = 0;
  let sameAll = 0;
  let maxDiff = 0;
  for (let i = 0; i < b.length; i++) {
    const va = a[i]!;
    const vb = b[i]!;
    const d = Math.abs(va - vb);
    if (d === 0) sameAll++;
    else if (d > maxDiff) maxDiff = d;
    if (va !== 0) na++;
    if (vb !== 0) nb++;
    if (va === 0 || vb === 0) continue;
    both++;
    sa += va;
    sb += vb;
    saa += va * va;
    sbb += vb * vb;
    sab += va * vb;
    sad += Math.abs(va - vb);
    if (va === vb) eq++;
  }
  const cov = sab / both - (sa / both) * (sb / both);
  const corr = cov / Math.sqrt((saa / both - (sa / both) ** 2) * (sbb / both - (sb / both) ** 2));
  return {
    gridMatch,
    gridNote,
    dice: (2 * both) / (na + nb),
    corr,
    mad: sad / both,
    exact: eq / both,
    same: sameAll / b.length,
    maxDiff,
    oursFilled: na,
    plusFilled: nb,
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let keep: string | undefined;
  let oracle: string | undefined;
  let plusRounding = false;
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--keep') keep = args[++i];
    else if (args[i] === '--oracle') oracle = args[++i];
    else if (args[i] === '--plus-rounding') plusRounding = true;
    else positional.push(args[i]!);
  }
  // oracle cases carry absolute paths, so join(root, p) leaves them as they are when root is '/'
  const root = oracle !== undefined ? '/' : positional[0];
  if (root === undefined || (oracle === undefined && positional.length === 0)) {
    console.error('usage: node --import tsx scripts/plus-compare.ts <PlusLibData dir> [case …] [--keep <dir>] [--plus-rounding]\n' +
      '       node --import tsx scripts/plus-compare.ts --oracle <dir> [case …] [--keep <dir>] [--plus-rounding]');
    process.exit(2);
  }
  const cases = oracle !== undefined ? await oracleCases(oracle) : CASES;
  const only = new Set(oracle !== undefined ? positional : positional.slice(1));
  if (keep !== undefined) await mkdir(keep, { recursive: true });
  const outDir = keep ?? (await mkdtemp(join(tmpdir(), 'eco3d-plus-compare-')));
  let failed = 0;
  const rows: string[] = [];
  const print = (row: string): void => {
    rows.push(row);
    console.log(row);
  };
  const pad = Math.max(10, ...cases.map((c) => c.name.length));
  console.log(`thresholds: dice ≥ ${DICE_MIN}, corr ≥ ${CORR_MIN}; MEAN ${plusRounding ? "with PLUS's per-insertion rounding (--plus-rounding)" : 'from exact sums (default)'}`);
  try {
    for (const c of cases) {
      if (only.size > 0 && !only.has(c.name)) continue;
      const cfg = join(root, c.config);
      const seq = join(root, c.sequence);
      let refPath: string | undefined;
      for (const r of c.reference) {
        if (await exists(join(root, r))) {
          refPath = join(root, r);
          break;
        }
      }
      if (c.unsupported !== undefined) {
        print(`${c.name.padEnd(pad)} SKIP  ${c.unsupported}`);
        continue;
      }
      const missing: string[] = [];
      for (const p of [cfg, seq]) if (!(await exists(p))) missing.push(p);
      if (refPath === undefined) missing.push(join(root, c.reference[c.reference.length - 1]!));
      if (missing.length > 0) {
        print(`${c.name.padEnd(pad)} SKIP  missing ${missing.join(', ')}`);
        continue;
      }
      if (plusRounding) {
        const mode = (await readPlusConfigFile(cfg)).volumeReconstruction?.compoundingMode;
        if (mode !== 'MEAN') {
          print(`${c.name.padEnd(pad)} SKIP  ${mode ?? 'no VolumeReconstruction'}: --plus-rounding applies to MEAN only`);
          continue;
        }
      }
      const out = join(outDir, `${c.name}.mha`);
      const t0 = performance.now();
      const rep = await runReconstruct({
        configFile: cfg,
        sourceSeqFile: seq,
        outputVolumeFile: out,
        imageToReferenceTransform: c.transform,
        disableCompression: true,
        ...(plusRounding ? { plusRounding: true } : {}),
      });
      const ms = performance.now() - t0;
      const ours = await readMetaImageVolumeFile(out);
      const plus = await readReference(refPath!);
      const f = compare(ours, plus);
      const fill = c.unfilled !== undefined && c.accumulation !== undefined ? `\n${' '.repeat(pad + 1)}${await fillOnly(c, cfg, plus)}` : '';
      const pass = f.dice >= DICE_MIN && f.corr >= CORR_MIN;
      if (!pass) failed++;
      print(
        `${c.name.padEnd(pad)} ${pass ? 'PASS' : 'FAIL'}  grid ${f.gridMatch ? 'same' : 'DIFF'}  dice ${f.dice.toFixed(4)}  corr ${f.corr.toFixed(4)}  ` +
          `mad ${f.mad.toFixed(2)}  exact ${(100 * f.exact).toFixed(1)}%  same ${(100 * f.same).toFixed(3)}% (max |Δ| ${f.maxDiff})  ` +
          `filled ours ${f.oursFilled} PLUS ${f.plusFilled}  ` +
          `(${rep.framesUsed} frames, ${ms.toFixed(0)} ms)\n${' '.repeat(pad + 1)}${f.gridNote}${fill}`,
      );
    }
  } finally {
    if (keep === undefined) await rm(outDir, { recursive: true, force: true });
  }
  const ran = rows.filter((r) => !r.includes(' SKIP ')).length;
  console.log(`\n${ran} compared, ${failed} failed, ${rows.length - ran} skipped`);
  if (failed > 0) process.exitCode = 1;
}

await main();

// Golden-data accuracy: the simulated robot sweeps the simulated phantom (force-controlled, over
// its real control path), the B-mode frames are reconstructed exactly as `eco3d reconstruct`
// does, and every lesion segmented from the volume by a threshold is compared with the
// phantom's ground-truth label map in world coordinates.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { readMetaImageVolumeFile, type Volume } from '../protocols/index.ts';
import { createPhantom, PHANTOM_LABELS, type PhantomStructure } from '../sim/index.ts';
import { createLogger } from '../server/log.ts';
import { runScan, type ScanResult } from '../server/scan.ts';

const SEED = 1;
const SPACING_MM = 0.25;

// Display mapping of the simulator (white = +20 dB, 50 dB range): level = 255·(dB + 30)/50.
// Thresholds halfway, in dB, between tissue (0 dB) and each lesion kind (−20 dB / +15.6 dB).
const levelOfDb = (db: number): number => (255 * (db + 30)) / 50;
const HYPO_BELOW = levelOfDb(-10);
const HYPER_ABOVE = levelOfDb(7.8);

interface Roi {
  readonly x0: number;
  readonly y0: number;
  readonly z0: number;
  readonly nx: number;
  readonly ny: number;
  readonly nz: number;
}

function roiAround(v: Volume, s: PhantomStructure, marginMm: number): Roi {
  const { originMm: o, spacingMm: d, dims } = v.grid;
  const r = s.boundingRadiusMm + marginMm;
  const lo = (c: number, oo: number, dd: number): number => Math.max(0, Math.floor((c - r - oo) / dd));
  const hi = (c: number, oo: number, dd: number, n: number): number => Math.min(n - 1, Math.ceil((c + r - oo) / dd));
  const x0 = lo(s.centerMm.x, o.x, d.x), y0 = lo(s.centerMm.y, o.y, d.y), z0 = lo(s.centerMm.z, o.z, d.z);
  return {
    x0, y0, z0,
    nx: hi(s.centerMm.x, o.x, d.x, dims[0]) - x0 + 1,
    ny: hi(s.centerMm.y, o.y, d.y, dims[1]) - y0 + 1,
    nz: hi(s.centerMm.z, o.z, d.z, dims[2]) - z0 + 1,
  };
}

/** 3×3×3 box mean: speckle is fixed to tissue, so it must be smoothed before a threshold. */
function smooth(v: Volume, roi: Roi): Float32Array {
  const [nx, ny, nz] = v.grid.dims;
  const out = new Float32Array(roi.nx * roi.ny * roi.nz);
  for (let k = 0; k < roi.nz; k++)
    for (let j = 0; j < roi.ny; j++)
      for (let i = 0; i < roi.nx; i++) {
        let sum = 0, n = 0;
        for (let dz = -1; dz <= 1; dz++)
          for (let dy = -1; dy <= 1; dy++)
            for (let dx = -1; dx <= 1; dx++) {
              const x = roi.x0 + i + dx, y = roi.y0 + j + dy, z = roi.z0 + k + dz;
              if (x < 0 || y < 0 || z < 0 || x >= nx || y >= ny || z >= nz) continue;
              sum += v.data[(z * ny + y) * nx + x]!;
              n++;
            }
        out[(k * roi.ny + j) * roi.nx + i] = sum / n;
      }
  return out;
}

/** The largest 6-connected component of `mask`. */
function largestComponent(mask: Uint8Array, roi: Roi): Uint8Array {
  const label = new Int32Array(mask.length);
  let best = 0, bestSize = 0, next = 0;
  const stack: number[] = [];
  for (let start = 0; start < mask.length; start++) {
    if (mask[start] === 0 || label[start] !== 0) continue;
    next++;
    let size = 0;
    label[start] = next;
    stack.push(start);
    while (stack.length > 0) {
      const p = stack.pop()!;
      size++;
      const i = p % roi.nx, j = Math.floor(p / roi.nx) % roi.ny, k = Math.floor(p / (roi.nx * roi.ny));
      for (const [di, dj, dk] of [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]] as const) {
        const a = i + di, b = j + dj, c = k + dk;
        if (a < 0 || b < 0 || c < 0 || a >= roi.nx || b >= roi.ny || c >= roi.nz) continue;
        const q = (c * roi.ny + b) * roi.nx + a;
        if (mask[q] === 1 && label[q] === 0) {
          label[q] = next;
          stack.push(q);
        }
      }
    }
    if (size > bestSize) {
      bestSize = size;
      best = next;
    }
  }
  return Uint8Array.from(label, (l) => (l === best && best !== 0 ? 1 : 0));
}

function centroidMm(mask: Uint8Array, roi: Roi, v: Volume): { x: number; y: number; z: number } {
  let sx = 0, sy = 0, sz = 0, n = 0;
  for (let p = 0; p < mask.length; p++) {
    if (mask[p] === 0) continue;
    sx += p % roi.nx;
    sy += Math.floor(p / roi.nx) % roi.ny;
    sz += Math.floor(p / (roi.nx * roi.ny));
    n++;
  }
  const { originMm: o, spacingMm: d } = v.grid;
  return { x: o.x + (roi.x0 + sx / n) * d.x, y: o.y + (roi.y0 + sy / n) * d.y, z: o.z + (roi.z0 + sz / n) * d.z };
}

describe('golden data: lesions reconstructed from a robotic sweep of the phantom', () => {
  let dir: string;
  let scan: ScanResult;
  let volume: Volume;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eco3d-golden-'));
    scan = await runScan({
      robot: { kind: 'sim' },
      outDir: dir,
      sweep: 'linear',
      lengthMm: 84,
      speedMmPerS: 12,
      tiltRangeDeg: 30,
      angularSpeedDegPerS: 10,
      targetForceN: 5,
      phantomSeed: SEED,
      outputSpacingMm: SPACING_MM,
      log: createLogger('silent'),
    });
    volume = await readMetaImageVolumeFile(join(dir, 'volume.mha'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('the sweep completed and was reconstructed', () => {
    assert.equal(scan.outcome, 'completed');
    assert.ok(scan.trackedFrames > 150, `${scan.trackedFrames} frames`);
    assert.equal(scan.volume?.framesUsed, scan.trackedFrames);
  });

  const phantom = createPhantom(SEED);
  const lesions = phantom.structures.filter((s) => s.label === PHANTOM_LABELS.hypoLesion || s.label === PHANTOM_LABELS.hyperLesion);

  test('the phantom has both kinds of lesion to find', () => {
    assert.ok(lesions.some((l) => l.label === PHANTOM_LABELS.hypoLesion));
    assert.ok(lesions.some((l) => l.label === PHANTOM_LABELS.hyperLesion));
  });

  for (const lesion of lesions) {
    const kind = lesion.label === PHANTOM_LABELS.hypoLesion ? 'hypo' : 'hyper';
    test(`lesion ${lesion.id} (${kind}-echoic, ~${(2 * lesion.boundingRadiusMm).toFixed(1)} mm): Dice ≥ 0.85, centroid error ≤ 1 mm`, (t) => {
      const roi = roiAround(volume, lesion, 2);
      const s = smooth(volume, roi);
      const seg = largestComponent(
        Uint8Array.from(s, (x) => (kind === 'hypo' ? (x < HYPO_BELOW ? 1 : 0) : x > HYPER_ABOVE ? 1 : 0)),
        roi,
      );
      // Ground truth: the phantom's own label at each voxel centre, within this lesion's
      // bounding sphere (bounding spheres of different structures never overlap).
      const { originMm: o, spacingMm: d } = volume.grid;
      const truth = new Uint8Array(seg.length);
      for (let k = 0; k < roi.nz; k++)
        for (let j = 0; j < roi.ny; j++)
          for (let i = 0; i < roi.nx; i++) {
            const p = { x: o.x + (roi.x0 + i) * d.x, y: o.y + (roi.y0 + j) * d.y, z: o.z + (roi.z0 + k) * d.z };
            const c = lesion.centerMm;
            if (Math.hypot(p.x - c.x, p.y - c.y, p.z - c.z) > lesion.boundingRadiusMm) continue;
            if (phantom.labelAt(p) === lesion.label) truth[(k * roi.ny + j) * roi.nx + i] = 1;
          }
      let both = 0, nSeg = 0, nTruth = 0;
      for (let p = 0; p < seg.length; p++) {
        nSeg += seg[p]!;
        nTruth += truth[p]!;
        both += seg[p]! & truth[p]!;
      }
      assert.ok(nTruth > 0, 'the lesion lies inside the reconstructed volume');
      const dice = (2 * both) / (nSeg + nTruth);
      const cs = centroidMm(seg, roi, volume);
      const ct = centroidMm(truth, roi, volume);
      const errMm = Math.hypot(cs.x - ct.x, cs.y - ct.y, cs.z - ct.z);
      t.diagnostic(`lesion ${lesion.id}: Dice ${dice.toFixed(3)}, centroid error ${errMm.toFixed(2)} mm`);
      assert.ok(dice >= 0.85, `Dice ${dice.toFixed(3)} (segmented ${nSeg}, truth ${nTruth} voxels)`);
      assert.ok(errMm <= 1, `centroid error ${errMm.toFixed(2)} mm`);
    });
  }
});

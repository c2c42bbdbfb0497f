// Reconstruction throughput: a deterministic 300-frame 640×480 uint8 freehand-like sweep
// (0.1 mm pixels, 60 mm along y with tilt, yaw and lateral wobble) into a 0.25 mm grid of
// 257×241×193 voxels, measured side by side in one run:
// - ours, NEAREST_NEIGHBOR + MEAN, 1 thread (VolumeReconstructor.pasteFrame in a loop);
// - ours, NEAREST_NEIGHBOR + MEAN, 2 workers (reconstructParallel over a warm worker pool;
//   the pool's start-up is reported on its own line);
// - ours, LINEAR + MEAN, 1 thread;
// - the native yardstick bench/native/recon_nn.c (same NN+MEAN loop, cc -O3 -march=native).
// Each timing covers allocating the accumulators, pasting all frames and producing the uint8
// volume; the median of several repetitions is reported. The native volume must be byte-equal
// to ours (checked by hash).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { TrackedFrame, VolumeGrid } from '../protocols/imaging.ts';
import { ReconstructionWorkerPool, VolumeReconstructor, reconstructParallel, type ReconstructionOptions } from '../streamer/reconstruct.ts';
import { bench } from './stats.ts';

const FRAMES = 300;
const W = 640;
const H = 480;
const PIXEL_MM = 0.1;
const REPS = 5;

const grid: VolumeGrid = { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 0.25, y: 0.25, z: 0.25 }, dims: [257, 241, 193] };
const nn: ReconstructionOptions = { outputSpacing: [0.25, 0.25, 0.25], interpolation: 'NEAREST_NEIGHBOR', compoundingMode: 'MEAN' };
const lin: ReconstructionOptions = { ...nn, interpolation: 'LINEAR' };

/** Frames: pixels in one SharedArrayBuffer (so workers share them without a copy). */
function makeSweep(): TrackedFrame[] {
  const all = new Uint8Array(new SharedArrayBuffer(FRAMES * W * H));
  let seed = 0x9e3779b9;
  const rand = (): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 4294967296;
  };
  const frames: TrackedFrame[] = [];
  for (let k = 0; k < FRAMES; k++) {
    const s = k / (FRAMES - 1);
    // pose: the probe face centre moves along y; small tilt (about x), yaw (about z), roll and lateral drift
    const tilt = (1.5 * Math.PI) / 180 * Math.sin(2 * Math.PI * s * 1.3);
    const yaw = (1.0 * Math.PI) / 180 * Math.sin(2 * Math.PI * s * 0.7 + 0.4);
    const cx = 32 + 0.5 * Math.sin(2 * Math.PI * s * 2.1);
    const cy = 1.5 + 57 * s + 0.2 * Math.sin(2 * Math.PI * s * 5);
    const cz = 0.2;
    // image axes in Reference: u → lateral (mostly x), v → depth (mostly z)
    const ux = Math.cos(yaw);
    const uy = Math.sin(yaw);
    const vx = 0;
    const vy = Math.sin(tilt);
    const vz = Math.cos(tilt);
    const m = new Float64Array(16);
    m[0] = ux * PIXEL_MM; m[1] = vx * PIXEL_MM; m[3] = cx - (W / 2) * ux * PIXEL_MM;
    m[4] = uy * PIXEL_MM; m[5] = vy * PIXEL_MM; m[7] = cy - (W / 2) * uy * PIXEL_MM;
    m[8] = 0; m[9] = vz * PIXEL_MM; m[11] = cz;
    // the third column (image z) is the plane normal; never used for pixels (z = 0)
    m[2] = uy * vz; m[6] = -ux * vz; m[10] = ux * vy;
    m[15] = 1;
    const px = all.subarray(k * W * H, (k + 1) * W * H);
    for (let v = 0; v < H; v++) {
      const atten = 1 - (0.6 * v) / H;
      for (let u = 0; u < W; u++) {
        const structure = (u - 320) ** 2 + (v - 240) ** 2 < 80 ** 2 ? 60 : 140;
        px[v * W + u] = Math.min(255, Math.floor(structure * atten * (0.3 + 1.4 * rand())));
      }
    }
    frames.push({ index: k, tMs: k * 33.3, width: W, height: H, pixels: px, imageToReference: m });
  }
  return frames;
}

function fnv1a(data: Uint8Array): number {
  let h = 2166136261;
  for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i]!, 16777619) >>> 0;
  return h >>> 0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function runOurs1(frames: TrackedFrame[], options: ReconstructionOptions): { ms: number; hash: number } {
  const t0 = performance.now();
  const r = new VolumeReconstructor(options, grid);
  for (const f of frames) r.pasteFrame(f);
  const vol = r.volume();
  const ms = performance.now() - t0;
  return { ms, hash: fnv1a(vol.data) };
}

async function runOursN(frames: TrackedFrame[], options: ReconstructionOptions, pool: ReconstructionWorkerPool): Promise<{ ms: number; hash: number }> {
  const t0 = performance.now();
  const r = await reconstructParallel(frames, options, pool, grid);
  const vol = r.volume();
  const ms = performance.now() - t0;
  return { ms, hash: fnv1a(vol.data) };
}

function runNative(frames: TrackedFrame[]): { ms: number; hash: number; wallMs: number } | null {
  const here = dirname(fileURLToPath(import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-recon-bench-'));
  try {
    const exe = join(dir, 'recon_nn');
    const cc = spawnSync('cc', ['-O3', '-march=native', '-ffp-contract=off', '-o', exe, join(here, 'native', 'recon_nn.c')], { encoding: 'utf8' });
    if (cc.status !== 0) {
      console.error(`# native yardstick not built: ${cc.error?.message ?? cc.stderr}`);
      return null;
    }
    // the input file
    const header = Buffer.alloc(6 * 4 + 6 * 8);
    [FRAMES, W, H, ...grid.dims].forEach((v, i) => header.writeInt32LE(v, 4 * i));
    [grid.originMm.x, grid.originMm.y, grid.originMm.z, grid.spacingMm.x, grid.spacingMm.y, grid.spacingMm.z].forEach((v, i) => header.writeDoubleLE(v, 24 + 8 * i));
    const mats = new Float64Array(16 * FRAMES);
    frames.forEach((f, i) => mats.set(f.imageToReference, 16 * i));
    const pix = new Uint8Array(FRAMES * W * H);
    frames.forEach((f, i) => pix.set(f.pixels, i * W * H));
    const input = join(dir, 'frames.bin');
    writeFileSync(input, Buffer.concat([header, Buffer.from(mats.buffer), pix]));
    const times: number[] = [];
    const walls: number[] = [];
    let hash = 0;
    for (let i = 0; i < REPS; i++) {
      const t0 = performance.now();
      const r = spawnSync(exe, [input], { encoding: 'utf8' });
      walls.push(performance.now() - t0);
      const m = /total_ms ([\d.]+) hash (\d+)/.exec(r.stdout);
      if (r.status !== 0 || m === null) {
        console.error(`# native yardstick failed: ${r.stderr}`);
        return null;
      }
      times.push(Number(m[1]));
      hash = Number(m[2]);
    }
    return { ms: median(times), hash, wallMs: median(walls) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const frames = makeSweep();

// warm-up (JIT) on a few frames of each mode
for (const o of [nn, lin]) {
  const r = new VolumeReconstructor(o, grid);
  for (let i = 0; i < 20; i++) r.pasteFrame(frames[i]!);
  r.volume();
}

const native = runNative(frames);

const nn1: number[] = [];
let nnHash = 0;
for (let i = 0; i < REPS; i++) {
  const r = runOurs1(frames, nn);
  nn1.push(r.ms);
  nnHash = r.hash;
}

const tPool = performance.now();
const pool = await ReconstructionWorkerPool.create(2);
const poolStartMs = performance.now() - tPool;
const nn2: number[] = [];
let nn2Hash = 0;
try {
  for (let i = 0; i < 3; i++) await runOursN(frames.slice(0, 100), nn, pool); // warm the workers' JIT
  for (let i = 0; i < REPS; i++) {
    const r = await runOursN(frames, nn, pool);
    nn2.push(r.ms);
    nn2Hash = r.hash;
  }
} finally {
  await pool.close();
}

const lin1: number[] = [];
for (let i = 0; i < 3; i++) lin1.push(runOurs1(frames, lin).ms);

const fps = (ms: number): number => (FRAMES * 1000) / ms;
bench('recon-nn-mean-fps', Math.round(fps(median(nn1))), 'frames/s');
bench('recon-nn-mean-2w-fps', Math.round(fps(median(nn2))), 'frames/s');
bench('recon-linear-mean-fps', Math.round(fps(median(lin1))), 'frames/s');
bench('recon-worker-pool-start-ms', Math.round(poolStartMs), 'ms');
if (native !== null) {
  bench('recon-native-nn-fps', Math.round(fps(native.ms)), 'frames/s');
  bench('recon-nn-vs-native-ratio', median(nn1) / native.ms, 'x');
  bench('recon-nn-2w-vs-native-ratio', median(nn2) / native.ms, 'x');
  bench('recon-linear-vs-nn-rate', median(nn1) / median(lin1), 'x');
  bench('recon-native-same-bytes', native.hash === nnHash && nn2Hash === nnHash ? 1 : 0, 'bool');
  console.error(`# times (median of ${REPS}): ours NN ${median(nn1).toFixed(1)} ms, 2 workers ${median(nn2).toFixed(1)} ms, LINEAR ${median(lin1).toFixed(1)} ms, native ${native.ms.toFixed(1)} ms (native process wall ${native.wallMs.toFixed(0)} ms incl. file reading)`);
}

// WADO-RS rendered resources (PS3.18 8.7.4 / 9.5): a frame of native pixel data → PNG or JPEG.
//
// Grayscale (MONOCHROME1/2, 8 or 16 bits allocated, signed or not): stored value → Modality LUT
// (Rescale Slope/Intercept) → VOI LUT (the linear Window Center/Width function of PS3.3
// C.11.2.1.2.1; the request's `window` parameter overrides the instance's) → 8-bit grey,
// inverted for MONOCHROME1. With no window at all, 8-bit unsigned pixels are shown as they are and
// anything else is stretched between the frame's minimum and maximum. Colour: 8-bit RGB
// (interleaved or planar) and YBR_FULL (converted to RGB, PS3.3 C.7.6.3.1.2).
//
// Encoding a 640×480 frame takes tens of milliseconds of pure JavaScript (jpeg-js, pngjs), and
// the main thread runs the robot's control loop: `RenderPool` does it in a worker thread.
import type { Worker } from 'node:worker_threads';
import { encode as encodeJpeg } from 'jpeg-js';
import { PNG } from 'pngjs';
import { Eco3dError } from '../protocols/errors.ts';
import { startTsWorker } from '../protocols/ts-worker.ts';
import { jsonNumber, jsonString, type DicomJsonDataset } from './dicom-json.ts';

export type RenderFormat = 'png' | 'jpeg';

/** The Image Pixel module values rendering needs (plain data: it crosses to the worker). */
export interface PixelModule {
  readonly rows: number;
  readonly columns: number;
  readonly samplesPerPixel: number;
  readonly photometric: 'MONOCHROME1' | 'MONOCHROME2' | 'RGB' | 'YBR_FULL';
  readonly bitsAllocated: number;
  readonly bitsStored: number;
  readonly pixelRepresentation: 0 | 1;
  readonly planarConfiguration: 0 | 1;
  readonly rescaleSlope: number;
  readonly rescaleIntercept: number;
  readonly window: VoiWindow | null;
}

export interface VoiWindow {
  readonly center: number;
  readonly width: number;
}

export interface RenderJob {
  readonly pixel: PixelModule;
  /** One frame's bytes, native little endian. */
  readonly frame: Uint8Array;
  readonly format: RenderFormat;
  /** JPEG quality 1-100. */
  readonly quality: number;
  /** Overrides the instance's window. */
  readonly window?: VoiWindow | undefined;
}

/** Reads the Image Pixel module from an instance's metadata; NOT_ACCEPTABLE for what we cannot render. */
export function pixelModuleOf(ds: DicomJsonDataset): PixelModule {
  const rows = jsonNumber(ds, '00280010');
  const columns = jsonNumber(ds, '00280011');
  const samplesPerPixel = jsonNumber(ds, '00280002') ?? 1;
  const photometric = jsonString(ds, '00280004') ?? (samplesPerPixel === 3 ? 'RGB' : 'MONOCHROME2');
  const bitsAllocated = jsonNumber(ds, '00280100');
  const bitsStored = jsonNumber(ds, '00280101') ?? bitsAllocated;
  const pixelRepresentation = jsonNumber(ds, '00280103') === 1 ? 1 : 0;
  const planarConfiguration = jsonNumber(ds, '00280006') === 1 ? 1 : 0;
  if (rows === undefined || columns === undefined || bitsAllocated === undefined || bitsStored === undefined) {
    throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', 'the instance has no image pixel description (Rows, Columns, Bits Allocated): it cannot be rendered');
  }
  const unsupported = (why: string): Eco3dError => new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `cannot render this instance: ${why}`);
  if (photometric === 'MONOCHROME1' || photometric === 'MONOCHROME2') {
    if (samplesPerPixel !== 1) throw unsupported(`${photometric} with ${samplesPerPixel} samples per pixel`);
    if (bitsAllocated !== 8 && bitsAllocated !== 16) throw unsupported(`${bitsAllocated} bits allocated (8 or 16 are rendered)`);
  } else if (photometric === 'RGB' || photometric === 'YBR_FULL') {
    if (samplesPerPixel !== 3 || bitsAllocated !== 8) throw unsupported(`${photometric} needs 3 samples of 8 bits, the instance has ${samplesPerPixel} of ${bitsAllocated}`);
  } else {
    throw unsupported(`photometric interpretation ${photometric} (MONOCHROME1, MONOCHROME2, RGB and YBR_FULL are rendered)`);
  }
  if (!(bitsStored >= 1 && bitsStored <= bitsAllocated)) throw unsupported(`Bits Stored ${bitsStored} with Bits Allocated ${bitsAllocated}`);
  // Window and rescale: the top level, else the Shared Functional Groups (enhanced objects).
  const shared = firstItem(ds, '52009229');
  const voi = shared === undefined ? undefined : firstItem(shared, '00289132');
  const transform = shared === undefined ? undefined : firstItem(shared, '00289145');
  const center = jsonNumber(ds, '00281050') ?? (voi === undefined ? undefined : jsonNumber(voi, '00281050'));
  const width = jsonNumber(ds, '00281051') ?? (voi === undefined ? undefined : jsonNumber(voi, '00281051'));
  const slope = jsonNumber(ds, '00281053') ?? (transform === undefined ? undefined : jsonNumber(transform, '00281053')) ?? 1;
  const intercept = jsonNumber(ds, '00281052') ?? (transform === undefined ? undefined : jsonNumber(transform, '00281052')) ?? 0;
  return {
    rows,
    columns,
    samplesPerPixel,
    photometric,
    bitsAllocated,
    bitsStored,
    pixelRepresentation,
    planarConfiguration,
    rescaleSlope: slope === 0 ? 1 : slope,
    rescaleIntercept: intercept,
    window: center !== undefined && width !== undefined && width >= 1 ? { center, width } : null,
  };
}

function firstItem(ds: DicomJsonDataset, tag: string): DicomJsonDataset | undefined {
  const v = ds[tag]?.Value?.[0];
  return typeof v === 'object' && v !== null ? (v as DicomJsonDataset) : undefined;
}

/** Bytes of one frame: rows × columns × samples × bits allocated / 8. */
export function frameBytes(p: Pick<PixelModule, 'rows' | 'columns' | 'samplesPerPixel' | 'bitsAllocated'>): number {
  return (p.rows * p.columns * p.samplesPerPixel * p.bitsAllocated) / 8;
}

/** Renders one frame synchronously (the worker calls this; tests may too). */
export function renderFrame(job: RenderJob): Buffer {
  const p = job.pixel;
  const n = p.rows * p.columns;
  if (job.frame.byteLength < frameBytes(p)) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `frame has ${job.frame.byteLength} bytes, ${frameBytes(p)} expected`);
  const color = p.photometric === 'RGB' || p.photometric === 'YBR_FULL';
  const out = Buffer.allocUnsafe(n * (color ? 3 : 1));
  if (color) toRgb(p, job.frame, out);
  else toGrey(p, job.frame, out, job.window ?? p.window);
  if (job.format === 'png') {
    const colorType = color ? 2 : 0;
    const png = new PNG({ width: p.columns, height: p.rows, colorType, inputColorType: colorType, inputHasAlpha: false, bitDepth: 8 });
    png.data = out;
    return PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: false, bitDepth: 8 });
  }
  const rgba = Buffer.allocUnsafe(n * 4);
  for (let i = 0; i < n; i++) {
    if (color) {
      rgba[i * 4] = out[i * 3]!;
      rgba[i * 4 + 1] = out[i * 3 + 1]!;
      rgba[i * 4 + 2] = out[i * 3 + 2]!;
    } else {
      const g = out[i]!;
      rgba[i * 4] = g;
      rgba[i * 4 + 1] = g;
      rgba[i * 4 + 2] = g;
    }
    rgba[i * 4 + 3] = 255;
  }
  return encodeJpeg({ data: rgba, width: p.columns, height: p.rows }, job.quality).data;
}

function toGrey(p: PixelModule, frame: Uint8Array, out: Buffer, window: VoiWindow | null): void {
  const n = p.rows * p.columns;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const mask = p.bitsStored >= 32 ? 0xffffffff : (1 << p.bitsStored) - 1;
  const signBit = 1 << (p.bitsStored - 1);
  const values = new Float64Array(n);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    let v = p.bitsAllocated === 8 ? frame[i]! : view.getUint16(i * 2, true);
    v &= mask;
    if (p.pixelRepresentation === 1 && (v & signBit) !== 0) v -= mask + 1;
    const x = v * p.rescaleSlope + p.rescaleIntercept;
    values[i] = x;
    if (x < min) min = x;
    if (x > max) max = x;
  }
  const identity = window === null && p.bitsStored <= 8 && p.pixelRepresentation === 0 && p.rescaleSlope === 1 && p.rescaleIntercept === 0;
  const invert = p.photometric === 'MONOCHROME1';
  for (let i = 0; i < n; i++) {
    const x = values[i]!;
    let y: number;
    if (identity) y = x;
    else if (window !== null) {
      // PS3.3 C.11.2.1.2.1, linear, output range 0-255.
      const c = window.center - 0.5;
      const w = window.width - 1;
      if (w <= 0) y = x <= c ? 0 : 255;
      else if (x <= c - w / 2) y = 0;
      else if (x > c + w / 2) y = 255;
      else y = ((x - c) / w + 0.5) * 255;
    } else y = max > min ? ((x - min) / (max - min)) * 255 : 0;
    // Quantised down: the window our own volumes carry (127.5/256) is then the identity.
    const g = Math.min(255, Math.max(0, identity ? y : Math.floor(y)));
    out[i] = invert ? 255 - g : g;
  }
}

function toRgb(p: PixelModule, frame: Uint8Array, out: Buffer): void {
  const n = p.rows * p.columns;
  for (let i = 0; i < n; i++) {
    let a: number;
    let b: number;
    let c: number;
    if (p.planarConfiguration === 0) {
      a = frame[i * 3]!;
      b = frame[i * 3 + 1]!;
      c = frame[i * 3 + 2]!;
    } else {
      a = frame[i]!;
      b = frame[n + i]!;
      c = frame[2 * n + i]!;
    }
    if (p.photometric === 'YBR_FULL') {
      const y = a;
      const cb = b - 128;
      const cr = c - 128;
      a = y + 1.402 * cr;
      b = y - 0.344136 * cb - 0.714136 * cr;
      c = y + 1.772 * cb;
    }
    out[i * 3] = clamp8(a);
    out[i * 3 + 1] = clamp8(b);
    out[i * 3 + 2] = clamp8(c);
  }
}

const clamp8 = (v: number): number => Math.min(255, Math.max(0, Math.round(v)));

// --- a worker thread for it -----------------------------------------------------------------

export interface FrameRenderer {
  render(job: RenderJob): Promise<Buffer>;
  close(): Promise<void>;
}

/** Renders on the calling thread (tests, tools). */
export const inlineRenderer: FrameRenderer = {
  render: async (job) => renderFrame(job),
  close: async () => undefined,
};

interface WorkerReply {
  readonly id: number;
  readonly ok: boolean;
  readonly bytes?: Uint8Array;
  readonly code?: string;
  readonly message?: string;
}

/**
 * One worker thread, started on first use, rendering jobs in order. A job that fails rejects with
 * the worker's error; a crashed worker rejects what it held and is replaced on the next job.
 */
export class RenderPool implements FrameRenderer {
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void }>();
  #closed = false;

  render(job: RenderJob): Promise<Buffer> {
    if (this.#closed) return Promise.reject(new Eco3dError('ECO3D_ERR_CLOSED', 'the render worker is closed'));
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.ref(); // held while jobs are pending, released when idle
      // A copy of the frame goes over; the caller's buffer stays usable.
      worker.postMessage({ id, job: { ...job, frame: new Uint8Array(job.frame) } });
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const w = this.#worker;
    this.#worker = undefined;
    if (w !== undefined) await w.terminate();
  }

  #ensureWorker(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const w = startTsWorker(new URL('./render-worker.ts', import.meta.url));
    w.on('message', (m: WorkerReply) => {
      const p = this.#pending.get(m.id);
      if (p === undefined) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) w.unref(); // an idle render worker never keeps the process alive
      if (m.ok && m.bytes !== undefined) p.resolve(Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength));
      else p.reject(new Eco3dError(m.code === 'ECO3D_ERR_BAD_FILE' ? 'ECO3D_ERR_BAD_FILE' : 'ECO3D_ERR_INTERNAL', m.message ?? 'rendering failed'));
    });
    const fail = (err: Error): void => {
      if (this.#worker === w) this.#worker = undefined;
      for (const p of this.#pending.values()) p.reject(new Eco3dError('ECO3D_ERR_INTERNAL', `the render worker failed: ${err.message}`, { cause: err }));
      this.#pending.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => {
      if (this.#pending.size > 0) fail(new Error(`exited with code ${code}`));
      if (this.#worker === w) this.#worker = undefined;
    });
    this.#worker = w;
    return w;
  }
}

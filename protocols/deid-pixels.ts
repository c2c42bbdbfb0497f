// Clean Pixel Data Option (PS3.15 E.3.1) by a per-device-model mask: many ultrasound devices burn
// the patient's name, the date and the site into fixed places of every image, so the lake is
// configured with the rectangles each device model writes to, and those pixels are zeroed.
//
// Only native (uncompressed) pixel data is masked: 8 or 16 bits allocated, 1 or 3 samples per
// pixel, either planar configuration, any number of frames. Zero is zero in either byte order,
// so the endianness of the transfer syntax does not matter. Encapsulated (compressed) pixel data
// would have to be decoded and re-encoded, which we do not do: it is refused (deid.ts), as are
// layouts whose samples are not one per pixel (YBR_*_422/420 subsampling, 1-bit, 32-bit).
//
// The input is never changed: masking returns a copy.
import type { DenaturalizedDataset } from 'dcmjs';
import { Eco3dError } from './errors.ts';

/** A rectangle in pixels, top-left origin (column x, row y), applied to every frame. */
export interface PixelRegion {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/**
 * Where a device model burns annotation into its images. Matched on Manufacturer's Model Name
 * (0008,1090) and, when given, Manufacturer (0008,0070), both trimmed and compared exactly.
 */
export interface BurnedInMask {
  readonly manufacturer?: string;
  readonly modelName: string;
  readonly regions: readonly PixelRegion[];
}

/** The shape of native pixel data, from the Image Pixel module. */
export interface NativePixelLayout {
  readonly rows: number;
  readonly columns: number;
  readonly frames: number;
  readonly samplesPerPixel: 1 | 3;
  readonly bitsAllocated: 8 | 16;
  /** 0: samples interleaved per pixel (RGBRGB…); 1: one plane per sample per frame (RR…GG…BB…). */
  readonly planarConfiguration: 0 | 1;
  /** Bytes of one frame. */
  readonly frameBytes: number;
}

function badRequest(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

const isNonNegativeInteger = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/**
 * Checks a mask configuration (e.g. parsed from JSON) and returns it typed. Throws
 * ECO3D_ERR_BAD_REQUEST naming the first bad entry: a region must have integer x, y ≥ 0 and
 * width, height ≥ 1; a model name is required.
 */
export function parseBurnedInMasks(value: unknown): readonly BurnedInMask[] {
  if (!Array.isArray(value)) throw badRequest('burned-in masks: expected an array of { manufacturer?, modelName, regions }');
  return value.map((m: unknown, i): BurnedInMask => {
    const where = `burned-in masks[${i}]`;
    if (m === null || typeof m !== 'object') throw badRequest(`${where}: not an object`);
    const { manufacturer, modelName, regions } = m as Record<string, unknown>;
    if (manufacturer !== undefined && typeof manufacturer !== 'string') throw badRequest(`${where}.manufacturer: expected a string`);
    if (typeof modelName !== 'string' || modelName.trim() === '') throw badRequest(`${where}.modelName: a non-empty string is required`);
    if (!Array.isArray(regions) || regions.length === 0) throw badRequest(`${where}.regions: a non-empty array is required`);
    const checked = regions.map((r: unknown, j): PixelRegion => {
      const rw = `${where}.regions[${j}]`;
      if (r === null || typeof r !== 'object') throw badRequest(`${rw}: not an object`);
      const { x, y, width, height } = r as Record<string, unknown>;
      if (!isNonNegativeInteger(x) || !isNonNegativeInteger(y)) throw badRequest(`${rw}: x and y must be integers ≥ 0, got ${JSON.stringify({ x, y })}`);
      if (!isNonNegativeInteger(width) || !isNonNegativeInteger(height) || width === 0 || height === 0) {
        throw badRequest(`${rw}: width and height must be integers ≥ 1, got ${JSON.stringify({ width, height })}`);
      }
      return { x, y, width, height };
    });
    return { ...(manufacturer === undefined ? {} : { manufacturer }), modelName, regions: checked };
  });
}

/**
 * The mask for an instance's device: the first whose model name (and manufacturer, when the
 * mask names one) equals the instance's, trimmed. A mask naming the manufacturer wins over one
 * that does not, so a generic entry can sit beside vendor-specific ones.
 */
export function findBurnedInMask(masks: readonly BurnedInMask[], manufacturer: string | undefined, modelName: string | undefined): BurnedInMask | undefined {
  const model = modelName?.trim() ?? '';
  if (model === '') return undefined;
  const maker = manufacturer?.trim();
  const byModel = masks.filter((m) => m.modelName.trim() === model);
  return byModel.find((m) => m.manufacturer !== undefined && m.manufacturer.trim() === maker) ?? byModel.find((m) => m.manufacturer === undefined);
}

function numberOf(ds: DenaturalizedDataset, tag: string): number | undefined {
  const v = ds[tag]?.Value?.[0];
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '') return Number(v);
  return undefined;
}

function badFile(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_FILE', message, { details: { file: 'DICOM', field: 'PixelData' } });
}

/**
 * The native pixel layout of a top-level dataset (Image Pixel module attributes). Throws
 * ECO3D_ERR_BAD_FILE for a layout this masker does not handle.
 */
export function nativePixelLayout(ds: DenaturalizedDataset): NativePixelLayout {
  const rows = numberOf(ds, '00280010');
  const columns = numberOf(ds, '00280011');
  const bitsAllocated = numberOf(ds, '00280100');
  const samplesPerPixel = numberOf(ds, '00280002') ?? 1;
  const planar = numberOf(ds, '00280006') ?? 0;
  const frames = numberOf(ds, '00280008') ?? 1;
  const pi: unknown = ds['00280004']?.Value?.[0];
  const photometric = typeof pi === 'string' ? pi.trim() : '';
  if (rows === undefined || columns === undefined || !Number.isInteger(rows) || !Number.isInteger(columns) || rows < 1 || columns < 1) {
    throw badFile('cannot mask the pixel data: Rows and Columns are missing or not positive integers');
  }
  if (bitsAllocated !== 8 && bitsAllocated !== 16) throw badFile(`cannot mask the pixel data: ${bitsAllocated ?? 'no'} bits allocated (8 or 16 are supported)`);
  if (samplesPerPixel !== 1 && samplesPerPixel !== 3) throw badFile(`cannot mask the pixel data: ${samplesPerPixel} samples per pixel (1 or 3 are supported)`);
  if (planar !== 0 && planar !== 1) throw badFile(`cannot mask the pixel data: planar configuration ${planar}`);
  if (!Number.isInteger(frames) || frames < 1) throw badFile(`cannot mask the pixel data: Number of Frames ${frames}`);
  // 4:2:2 and 4:2:0 share chroma between pixels: a pixel is not samplesPerPixel samples there.
  if (/^YBR_(FULL|PARTIAL)_42[20]$/.test(photometric)) throw badFile(`cannot mask the pixel data: photometric interpretation ${photometric} (subsampled chroma) is not supported`);
  const frameBytes = rows * columns * samplesPerPixel * (bitsAllocated / 8);
  return { rows, columns, frames, samplesPerPixel, bitsAllocated, planarConfiguration: planar, frameBytes };
}

/**
 * A copy of native `pixels` with every region zeroed in every frame and every sample (regions
 * past the image edge are clipped). `pixels` is not changed. Throws ECO3D_ERR_BAD_FILE when it
 * holds fewer bytes than the layout needs (truncated, or compressed data).
 */
export function maskPixels(pixels: Uint8Array, layout: NativePixelLayout, regions: readonly PixelRegion[]): Uint8Array {
  const { rows, columns, frames, samplesPerPixel: spp, bitsAllocated, planarConfiguration, frameBytes } = layout;
  const needed = frameBytes * frames;
  if (pixels.byteLength < needed) {
    throw badFile(`the pixel data holds ${pixels.byteLength} bytes, fewer than ${needed} for ${frames} frame(s) of ${rows}×${columns}×${spp} at ${bitsAllocated} bits: truncated or compressed`);
  }
  const out = new Uint8Array(pixels); // the copy
  const bytesPerSample = bitsAllocated / 8;
  const pixelStride = planarConfiguration === 0 ? spp * bytesPerSample : bytesPerSample;
  const rowBytes = columns * pixelStride;
  const planeBytes = planarConfiguration === 0 ? frameBytes : rows * columns * bytesPerSample;
  const planes = planarConfiguration === 0 ? 1 : spp;
  for (const r of regions) {
    const x0 = Math.min(r.x, columns);
    const x1 = Math.min(r.x + r.width, columns);
    const y0 = Math.min(r.y, rows);
    const y1 = Math.min(r.y + r.height, rows);
    if (x0 >= x1 || y0 >= y1) continue; // wholly outside the image
    for (let f = 0; f < frames; f++) {
      for (let p = 0; p < planes; p++) {
        const base = f * frameBytes + p * planeBytes;
        for (let y = y0; y < y1; y++) out.fill(0, base + y * rowBytes + x0 * pixelStride, base + y * rowBytes + x1 * pixelStride);
      }
    }
  }
  return out;
}

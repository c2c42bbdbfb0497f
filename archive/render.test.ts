// Rendering: decoded back with pngjs and jpeg-js, pixel values checked against the VOI LUT
// formula of PS3.3 C.11.2.1.2.1; and the worker thread gives the main thread's bytes.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { decode as decodeJpeg } from 'jpeg-js';
import { PNG } from 'pngjs';
import { Eco3dError } from '../protocols/errors.ts';
import { probeHeader } from './dicom-header.ts';
import { toDicomJson } from './dicom-json.ts';
import { pixelModuleOf, RenderPool, renderFrame, type PixelModule } from './render.ts';
import { gray16, rgb8, usMultiframe } from './testing.ts';

function moduleOf(bytes: Uint8Array): { pixel: PixelModule; pixelOffset: number } {
  const p = probeHeader(bytes);
  if (p.kind !== 'header' || p.header.pixelData === null) throw new Error('no pixel data');
  return { pixel: pixelModuleOf(toDicomJson(p.header.dataset)), pixelOffset: p.header.pixelData.valueOffset };
}

/** PS3.3 C.11.2.1.2.1, linear, to 0..255 (quantised down). */
function voi(x: number, c: number, w: number): number {
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return Math.floor(((x - (c - 0.5)) / (w - 1) + 0.5) * 255);
}

test('8-bit MONOCHROME2 without a window: PNG grey values are the stored pixels', () => {
  const us = usMultiframe({}, { frames: 3, width: 20, height: 10 });
  const { pixel } = moduleOf(us.bytes);
  const frame2 = us.pixels.subarray(200, 400);
  const png = PNG.sync.read(renderFrame({ pixel, frame: frame2, format: 'png', quality: 90 }));
  assert.equal(png.width, 20);
  assert.equal(png.height, 10);
  for (let i = 0; i < 200; i++) assert.equal(png.data[i * 4], frame2[i], `pixel ${i}`);
});

test('16-bit MONOCHROME2 with the instance window, and with a window from the request', () => {
  const g = gray16({ rows: 10, columns: 12, frames: 2, window: { center: 2000, width: 1000 } });
  const { pixel, pixelOffset } = moduleOf(g.bytes);
  assert.deepEqual(pixel.window, { center: 2000, width: 1000 });
  const frame = g.bytes.subarray(pixelOffset, pixelOffset + 240);
  const png = PNG.sync.read(renderFrame({ pixel, frame, format: 'png', quality: 90 }));
  assert.equal(png.width, 12);
  assert.equal(png.height, 10);
  for (let i = 0; i < 120; i++) assert.equal(png.data[i * 4], voi(g.values[i]!, 2000, 1000), `pixel ${i}`);
  const custom = PNG.sync.read(renderFrame({ pixel, frame, format: 'png', quality: 90, window: { center: 100, width: 50 } }));
  for (let i = 0; i < 120; i++) assert.equal(custom.data[i * 4], voi(g.values[i]!, 100, 50));
});

test('signed 16-bit without a window is stretched over the frame; JPEG decodes to the right size', () => {
  const g = gray16({ rows: 16, columns: 16, frames: 1, signed: true });
  const { pixel, pixelOffset } = moduleOf(g.bytes);
  assert.equal(pixel.pixelRepresentation, 1);
  const frame = g.bytes.subarray(pixelOffset, pixelOffset + 512);
  const png = PNG.sync.read(renderFrame({ pixel, frame, format: 'png', quality: 90 }));
  const values = [...g.values];
  const min = Math.min(...values);
  const max = Math.max(...values);
  for (let i = 0; i < 256; i++) assert.equal(png.data[i * 4], Math.floor(((values[i]! - min) / (max - min)) * 255));
  const jpg = decodeJpeg(renderFrame({ pixel, frame, format: 'jpeg', quality: 95 }), { useTArray: true });
  assert.equal(jpg.width, 16);
  assert.equal(jpg.height, 16);
});

test("our volumes' window (127.5/256) shows 8-bit voxels as they are", () => {
  const pixel: PixelModule = { rows: 1, columns: 256, samplesPerPixel: 1, photometric: 'MONOCHROME2', bitsAllocated: 8, bitsStored: 8, pixelRepresentation: 0, planarConfiguration: 0, rescaleSlope: 1, rescaleIntercept: 0, window: { center: 127.5, width: 256 } };
  const frame = Uint8Array.from({ length: 256 }, (_, i) => i);
  const png = PNG.sync.read(renderFrame({ pixel, frame, format: 'png', quality: 90 }));
  for (let i = 0; i < 256; i++) assert.equal(png.data[i * 4], i);
});

test('RGB interleaved and planar, and YBR_FULL, come out as RGB', () => {
  for (const planar of [false, true]) {
    const c = rgb8({ rows: 6, columns: 8, planar });
    const { pixel, pixelOffset } = moduleOf(c.bytes);
    const png = PNG.sync.read(renderFrame({ pixel, frame: c.bytes.subarray(pixelOffset, pixelOffset + 144), format: 'png', quality: 90 }));
    for (let i = 0; i < 48; i++) for (let k = 0; k < 3; k++) assert.equal(png.data[i * 4 + k], c.rgb[i * 3 + k], `planar=${planar} pixel ${i} channel ${k}`);
  }
  // Grey in YBR_FULL: Cb = Cr = 128 → R = G = B = Y.
  const ybr = rgb8({ rows: 2, columns: 2, photometric: 'YBR_FULL' });
  const { pixel } = moduleOf(ybr.bytes);
  const frame = new Uint8Array([10, 128, 128, 100, 128, 128, 200, 128, 128, 255, 128, 128]);
  const png = PNG.sync.read(renderFrame({ pixel, frame, format: 'png', quality: 90 }));
  assert.deepEqual([0, 1, 2, 3].map((i) => [png.data[i * 4], png.data[i * 4 + 1], png.data[i * 4 + 2]]), [[10, 10, 10], [100, 100, 100], [200, 200, 200], [255, 255, 255]]);
});

test('what cannot be rendered is ECO3D_ERR_NOT_ACCEPTABLE', () => {
  assert.throws(
    () => pixelModuleOf({ '00280010': { vr: 'US', Value: [2] }, '00280011': { vr: 'US', Value: [2] }, '00280100': { vr: 'US', Value: [8] }, '00280004': { vr: 'CS', Value: ['PALETTE COLOR'] } }),
    (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_NOT_ACCEPTABLE' && /PALETTE COLOR/.test(e.message),
  );
  assert.throws(() => pixelModuleOf({}), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_NOT_ACCEPTABLE');
});

const pool = new RenderPool();
after(() => pool.close());

test('the worker renders the same bytes as the main thread, concurrently, and reports failures', async () => {
  const us = usMultiframe({}, { frames: 2, width: 32, height: 24 });
  const { pixel } = moduleOf(us.bytes);
  const jobs = [0, 1].flatMap((k) => (['png', 'jpeg'] as const).map((format) => ({ pixel, frame: us.pixels.subarray(k * 768, (k + 1) * 768), format, quality: 80 })));
  const fromWorker = await Promise.all(jobs.map((j) => pool.render(j)));
  jobs.forEach((j, i) => assert.deepEqual(fromWorker[i], renderFrame(j)));
  await assert.rejects(pool.render({ pixel, frame: new Uint8Array(10), format: 'png', quality: 80 }), (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_BAD_FILE');
});

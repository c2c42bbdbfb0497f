// WADO-RS (PS3.18 10.4): content negotiation, frame lists, and the multipart bodies, streamed.
//
// Instances are served as stored, byte for byte: the archive does not transcode. Accept may ask
// for `transfer-syntax=*`, for the stored one, or leave it out (then the stored one is what comes);
// a different one is 406. Frames and bulk data come from native (uncompressed, little endian)
// pixel data only, read by byte range from the file; compressed pixel data is 406 for them.
import { open } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { Eco3dError } from '../protocols/errors.ts';
import { EXPLICIT_VR_BIG_ENDIAN } from './dicom-header.ts';
import type { InstanceRecord } from './dicom-store.ts';
import { closeDelimiter, parseAccept, partHead, PART_TAIL, type AcceptEntry } from './multipart.ts';
import type { RenderFormat } from './render.ts';

/** The transfer syntax UID that labels uncompressed frames and bulk data (PS3.18 8.7.3.3.2). */
export const UNCOMPRESSED_BULKDATA_TS = '1.2.840.10008.1.2.1';

function notAcceptable(accept: string | undefined, offered: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `Accept ${JSON.stringify(accept ?? '')} lists nothing this resource has: it is available as ${offered}`);
}

const isAny = (e: AcceptEntry): boolean => e.type === '*/*';

/** QIDO-RS and metadata answers: application/dicom+json (application/json is accepted as a synonym). */
export function negotiateJson(accept: string | undefined): void {
  const ok = parseAccept(accept).some((e) => isAny(e) || e.type === 'application/*' || e.type === 'application/dicom+json' || e.type === 'application/json');
  if (!ok) throw notAcceptable(accept, 'application/dicom+json');
}

/**
 * Instance retrieval. `single` when the client asked for a bare application/dicom (one instance,
 * no multipart wrapper). Refuses a transfer syntax other than the stored ones.
 */
export function negotiateInstances(accept: string | undefined, storedTransferSyntaxes: readonly string[], singleAllowed: boolean): { single: boolean } {
  const offered = 'multipart/related; type="application/dicom"' + (singleAllowed ? ' or application/dicom' : '');
  let tsRefused: string | undefined;
  for (const e of parseAccept(accept)) {
    if (isAny(e) || e.type === 'multipart/*') return { single: false };
    const multipart = e.type === 'multipart/related';
    const type = multipart ? (e.params.get('type') ?? 'application/dicom').toLowerCase() : e.type;
    if (type !== 'application/dicom') continue;
    if (!multipart && !singleAllowed) continue;
    const ts = e.params.get('transfer-syntax');
    if (ts !== undefined && ts !== '*' && !storedTransferSyntaxes.every((s) => s === ts)) {
      tsRefused = ts;
      continue;
    }
    return { single: !multipart };
  }
  if (tsRefused !== undefined) {
    throw new Eco3dError(
      'ECO3D_ERR_NOT_ACCEPTABLE',
      `transfer syntax ${tsRefused} was asked for; the archive serves instances as stored (${[...new Set(storedTransferSyntaxes)].join(', ')}) and does not transcode: ask for transfer-syntax=* or leave it out`,
    );
  }
  throw notAcceptable(accept, offered);
}

/** Frames and bulk data: multipart/related; type="application/octet-stream", uncompressed. */
export function negotiateOctetStream(accept: string | undefined): void {
  for (const e of parseAccept(accept)) {
    if (isAny(e) || e.type === 'multipart/*') return;
    if (e.type !== 'multipart/related') continue;
    if ((e.params.get('type') ?? 'application/octet-stream').toLowerCase() !== 'application/octet-stream') continue;
    const ts = e.params.get('transfer-syntax');
    if (ts === undefined || ts === '*' || ts === UNCOMPRESSED_BULKDATA_TS) return;
  }
  throw notAcceptable(accept, `multipart/related; type="application/octet-stream"; transfer-syntax=${UNCOMPRESSED_BULKDATA_TS}`);
}

/** Rendered: image/png unless JPEG is preferred. */
export function negotiateRendered(accept: string | undefined): RenderFormat {
  for (const e of parseAccept(accept)) {
    if (isAny(e) || e.type === 'image/*' || e.type === 'image/png') return 'png';
    if (e.type === 'image/jpeg') return 'jpeg';
  }
  throw notAcceptable(accept, 'image/png or image/jpeg');
}

/** `1,3,5` → [1, 3, 5] (1-based, in the order asked). */
export function parseFrameList(s: string): number[] {
  if (!/^\d+(,\d+)*$/.test(s)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame list ${JSON.stringify(s)}: expected frame numbers separated by commas, e.g. 1,3,5`);
  const frames = s.split(',').map(Number);
  if (frames.some((f) => f < 1 || !Number.isSafeInteger(f))) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame list ${JSON.stringify(s)}: frame numbers start at 1`);
  return frames;
}

export interface FrameGeometry {
  /** Offset of frame 1 in the file. */
  readonly offset: number;
  readonly frameBytes: number;
  readonly frames: number;
}

/**
 * Where the frames of a native instance are, or why they cannot be served: no pixel data (400),
 * compressed or big endian (406), a bit-packed layout (406).
 */
export function frameGeometry(r: InstanceRecord, samplesPerPixel: number): FrameGeometry {
  const px = r.pixelData;
  if (px === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `SOP Instance ${r.sopInstanceUid} has no pixel data`);
  if (px.encapsulated || px.length === null) {
    throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `SOP Instance ${r.sopInstanceUid} has compressed pixel data (transfer syntax ${r.transferSyntaxUid}); frames are served uncompressed only: retrieve the instance`);
  }
  if (r.transferSyntaxUid === EXPLICIT_VR_BIG_ENDIAN) throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `SOP Instance ${r.sopInstanceUid} is big endian; frames are served little endian only`);
  if (r.rows === null || r.columns === null || r.bitsAllocated === null || r.bitsAllocated % 8 !== 0) {
    throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `SOP Instance ${r.sopInstanceUid} has no byte-aligned pixel description (Rows, Columns, Bits Allocated ${r.bitsAllocated ?? '?'})`);
  }
  const frameBytes = (r.rows * r.columns * samplesPerPixel * r.bitsAllocated) / 8;
  const frames = r.numberOfFrames ?? 1;
  if (frameBytes * frames > px.length) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `SOP Instance ${r.sopInstanceUid}: Pixel Data has ${px.length} bytes, ${frames} frames of ${frameBytes} need ${frameBytes * frames}`);
  }
  return { offset: px.offset, frameBytes, frames };
}

export function checkFrames(r: InstanceRecord, g: FrameGeometry, wanted: readonly number[]): void {
  const missing = wanted.filter((f) => f > g.frames);
  if (missing.length > 0) {
    throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `SOP Instance ${r.sopInstanceUid} has ${g.frames} frame${g.frames === 1 ? '' : 's'}; no frame ${missing.join(', ')}`);
  }
}

/** Reads one frame (1-based) by byte range. */
export async function readFrame(path: string, g: FrameGeometry, frame: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(g.frameBytes);
    const { bytesRead } = await fh.read(buf, 0, g.frameBytes, g.offset + (frame - 1) * g.frameBytes);
    if (bytesRead !== g.frameBytes) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${path}: frame ${frame} is truncated`);
    return buf;
  } finally {
    await fh.close();
  }
}

// --- multipart bodies -----------------------------------------------------------------------

export interface MultipartBody {
  readonly contentLength: number;
  readonly chunks: AsyncIterable<Buffer>;
}

interface Part {
  readonly headers: Readonly<Record<string, string>>;
  readonly length: number;
  readonly body: () => AsyncIterable<Buffer>;
}

function multipart(boundary: string, parts: readonly Part[]): MultipartBody {
  const heads = parts.map((p) => partHead(boundary, { ...p.headers, 'Content-Length': String(p.length) }));
  const close = closeDelimiter(boundary);
  const contentLength = heads.reduce((s, h, i) => s + h.length + parts[i]!.length + PART_TAIL.length, 0) + close.length;
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let i = 0; i < parts.length; i++) {
      yield heads[i]!;
      let n = 0;
      for await (const c of parts[i]!.body()) {
        n += c.length;
        yield c;
      }
      // The Content-Length is already sent: a file that changed size would corrupt the body.
      if (n !== parts[i]!.length) throw new Eco3dError('ECO3D_ERR_INTERNAL', `part ${i + 1} had ${n} bytes, ${parts[i]!.length} announced`);
      yield PART_TAIL;
    }
    yield close;
  }
  return { contentLength, chunks: chunks() };
}

async function* fileRange(path: string, start: number, length: number): AsyncGenerator<Buffer> {
  if (length === 0) return;
  for await (const c of createReadStream(path, { start, end: start + length - 1, highWaterMark: 1024 * 1024 })) yield c as Buffer;
}

/** Whole Part-10 files, one part each (application/dicom). */
export function instancesBody(boundary: string, records: readonly InstanceRecord[]): MultipartBody {
  return multipart(
    boundary,
    records.map((r) => ({
      headers: { 'Content-Type': `application/dicom; transfer-syntax=${r.transferSyntaxUid}` },
      length: r.sizeBytes,
      body: () => fileRange(r.path, 0, r.sizeBytes),
    })),
  );
}

/** Frames by byte range, one part each (application/octet-stream). */
export function framesBody(boundary: string, r: InstanceRecord, g: FrameGeometry, frames: readonly number[]): MultipartBody {
  return multipart(
    boundary,
    frames.map((f) => ({
      headers: { 'Content-Type': `application/octet-stream; transfer-syntax=${UNCOMPRESSED_BULKDATA_TS}` },
      length: g.frameBytes,
      body: () => fileRange(r.path, g.offset + (f - 1) * g.frameBytes, g.frameBytes),
    })),
  );
}

/** A byte range of a file as one octet-stream part (bulk data). */
export function bulkBody(boundary: string, path: string, offset: number, length: number): MultipartBody {
  return multipart(boundary, [{ headers: { 'Content-Type': `application/octet-stream; transfer-syntax=${UNCOMPRESSED_BULKDATA_TS}` }, length, body: () => fileRange(path, offset, length) }]);
}

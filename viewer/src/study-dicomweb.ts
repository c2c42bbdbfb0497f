// eslint-disable-next-line @typescript-eslint/triple-slash-reference -- dcmjs ships no types; protocols/dcmjs.d.ts declares them, and viewer/tsconfig.json does not include protocols/
/// <reference path="../../protocols/dcmjs.d.ts" />
// The study browser's DICOMweb client (same origin, the session cookie): QIDO-RS searches
// (PS3.18 10.6, DICOM JSON answers) and the WADO-RS retrieval of an Enhanced US Volume, either
// as the whole instance (multipart/related; type="application/dicom", read with dcmjs, loaded on
// demand) or, when the server will not send that, as its metadata plus its frames
// (multipart/related; type="application/octet-stream"). Every request has a timeout.
import { ApiError } from './api.ts';
import {
  STUDY_INCLUDE_FIELDS,
  TAG,
  instanceRef,
  multipartParts,
  pickVolumeInstance,
  str,
  studyQueryString,
  studySummary,
  volumeFromPart10,
  volumeGeometry,
  voxelsFromFrames,
  type DicomJson,
  type InstanceRef,
  type StudyQuery,
  type StudySummary,
  type VolumeGeometry,
} from './study-dicom.ts';

export type { StudyQuery } from './study-dicom.ts';

const QIDO_TIMEOUT_MS = 20_000;
/** A whole volume (tens of MB) over a slow hospital link. */
const WADO_TIMEOUT_MS = 180_000;
/** Frames per frames/{list} request: keeps the URL short whatever the volume's depth. */
const FRAMES_PER_REQUEST = 64;

const DICOM_JSON = 'application/dicom+json';
const MULTIPART_DICOM = 'multipart/related; type="application/dicom"';
const MULTIPART_FRAMES = 'multipart/related; type="application/octet-stream"';

const enc = encodeURIComponent;

/** GET /dicom-web{path}; a failure becomes an ApiError with the server's {code, message} when it sent one. */
async function dicomweb(path: string, accept: string, timeoutMs: number): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(`/dicom-web${path}`, { headers: { accept }, credentials: 'same-origin', signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'TimeoutError') throw new ApiError('ECO3D_ERR_TIMEOUT', `the archive did not answer within ${timeoutMs / 1000} s`, 504);
    throw new ApiError('ECO3D_ERR_NETWORK', `cannot reach the server (${(e as Error).message})`, 0);
  }
  if (res.ok) return res;
  const text = await res.text().catch(() => '');
  let d: { code?: unknown; message?: unknown } = {};
  try {
    d = JSON.parse(text) as typeof d;
  } catch {
    /* not our JSON error body */
  }
  throw new ApiError(
    typeof d.code === 'string' ? d.code : `HTTP_${res.status}`,
    typeof d.message === 'string' ? d.message : `${res.status} ${res.statusText || 'request failed'} (GET /dicom-web${path})`,
    res.status,
  );
}

/** A QIDO-RS answer: an array of datasets; 204 or an empty body is no match. */
async function qido(path: string): Promise<DicomJson[]> {
  const res = await dicomweb(path, DICOM_JSON, QIDO_TIMEOUT_MS);
  const text = res.status === 204 ? '' : await res.text();
  if (text.trim() === '') return [];
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new ApiError('ECO3D_ERR_UPSTREAM', `the archive's answer to ${path} is not DICOM JSON`, 502);
  }
  if (!Array.isArray(data)) throw new ApiError('ECO3D_ERR_UPSTREAM', `the archive's answer to ${path} is not a JSON array of datasets`, 502);
  return data.filter((x): x is DicomJson => typeof x === 'object' && x !== null);
}

export async function searchStudies(q: StudyQuery): Promise<StudySummary[]> {
  return (await qido(`/studies?${studyQueryString(q)}`)).map(studySummary).filter((s) => s.studyInstanceUid !== '');
}

/** One study's summary (the header of an opened study), or null when the archive has no such study. */
export async function getStudy(studyUid: string): Promise<StudySummary | null> {
  const p = new URLSearchParams({ StudyInstanceUID: studyUid, includefield: STUDY_INCLUDE_FIELDS.join(',') });
  const found = (await qido(`/studies?${p.toString()}`)).map(studySummary).find((s) => s.studyInstanceUid === studyUid);
  return found ?? null;
}

/**
 * The study's Enhanced US Volume instance. A study-level instance search first; when its answer
 * lacks the Series Instance UID (not every server adds series attributes there), series by series.
 */
export async function findVolumeInstance(studyUid: string): Promise<InstanceRef | null> {
  const fields = [TAG.SOPClassUID, TAG.SeriesInstanceUID, TAG.InstanceNumber, TAG.Modality].join(',');
  const all = (await qido(`/studies/${enc(studyUid)}/instances?includefield=${fields}`)).map((d) => instanceRef(d, studyUid));
  const found = pickVolumeInstance(all);
  if (found !== undefined && found.seriesInstanceUid !== '') return found;
  const refs: InstanceRef[] = [];
  for (const series of await qido(`/studies/${enc(studyUid)}/series`)) {
    const seriesUid = str(series, TAG.SeriesInstanceUID);
    if (seriesUid === '' || str(series, TAG.Modality) === 'SR') continue;
    const list = await qido(`/studies/${enc(studyUid)}/series/${enc(seriesUid)}/instances?includefield=${fields}`);
    refs.push(...list.map((d) => instanceRef(d, studyUid, seriesUid)));
  }
  return pickVolumeInstance(refs) ?? null;
}

/** Bytes received so far and the total when the server said it. */
export type Progress = (receivedBytes: number, totalBytes: number | null) => void;

async function readBody(res: Response, onProgress: Progress | undefined): Promise<Uint8Array> {
  const total = Number(res.headers.get('content-length') ?? NaN);
  const totalBytes = Number.isFinite(total) && total > 0 ? total : null;
  if (res.body === null || onProgress === undefined) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    onProgress(received, totalBytes);
  }
  const out = new Uint8Array(received);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

export interface StudyVolume {
  readonly instance: InstanceRef;
  readonly geometry: VolumeGeometry;
  readonly voxels: Uint8Array;
  /** How it came: the whole instance, or metadata + frames. */
  readonly via: 'instance' | 'frames';
}

const instancePath = (i: InstanceRef): string => `/studies/${enc(i.studyInstanceUid)}/series/${enc(i.seriesInstanceUid)}/instances/${enc(i.sopInstanceUid)}`;

/** Retrieves the volume: the instance itself, or its metadata and frames when the server cannot send the instance (406). */
export async function loadVolume(instance: InstanceRef, onProgress?: Progress): Promise<StudyVolume> {
  let res: Response;
  try {
    res = await dicomweb(instancePath(instance), MULTIPART_DICOM, WADO_TIMEOUT_MS);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 406 || e.status === 415)) return loadVolumeByFrames(instance, onProgress);
    throw e;
  }
  const contentType = res.headers.get('content-type') ?? '';
  const body = await readBody(res, onProgress);
  // A server may answer a lone instance as application/dicom rather than a one-part multipart.
  const file = /^multipart\//i.test(contentType) ? multipartParts(body, contentType).find((p) => p.contentType === '' || /application\/dicom/i.test(p.contentType))?.bytes : body;
  if (file === undefined) throw new ApiError('ECO3D_ERR_UPSTREAM', 'the archive answered the instance with no application/dicom part', 502);
  const dcmjs = (await import('dcmjs')).default;
  dcmjs.log.setLevel('error');
  const { geometry, voxels } = volumeFromPart10(file, dcmjs.data.DicomMessage);
  return { instance, geometry, voxels, via: 'instance' };
}

async function loadVolumeByFrames(instance: InstanceRef, onProgress?: Progress): Promise<StudyVolume> {
  const res = await dicomweb(`${instancePath(instance)}/metadata`, DICOM_JSON, QIDO_TIMEOUT_MS);
  const meta = (await res.json()) as unknown;
  const ds = Array.isArray(meta) ? (meta[0] as DicomJson | undefined) : undefined;
  if (ds === undefined) throw new ApiError('ECO3D_ERR_UPSTREAM', 'the archive answered the metadata with no dataset', 502);
  const geometry = volumeGeometry(ds);
  const [nx, ny, nz] = geometry.dims;
  const frames: Uint8Array[] = [];
  let received = 0;
  for (let first = 1; first <= nz; first += FRAMES_PER_REQUEST) {
    const list = Array.from({ length: Math.min(FRAMES_PER_REQUEST, nz - first + 1) }, (_, k) => first + k);
    const r = await dicomweb(`${instancePath(instance)}/frames/${list.join(',')}`, MULTIPART_FRAMES, WADO_TIMEOUT_MS);
    const base = received;
    const body = await readBody(r, onProgress === undefined ? undefined : (n) => onProgress(base + n, nx * ny * nz));
    received += body.byteLength;
    const parts = multipartParts(body, r.headers.get('content-type') ?? '');
    if (parts.length !== list.length) throw new ApiError('ECO3D_ERR_UPSTREAM', `asked for ${list.length} frames, the archive sent ${parts.length}`, 502);
    frames.push(...parts.map((p) => p.bytes));
  }
  return { instance, geometry, voxels: voxelsFromFrames(geometry, frames), via: 'frames' };
}

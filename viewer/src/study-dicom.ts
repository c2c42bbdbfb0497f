// Reading DICOM for the study browser, with no DOM and no I/O (the Node tests run it too): the
// DICOM JSON model of PS3.18 Annex F (what QIDO-RS and WADO-RS metadata answer, and also the shape
// dcmjs gives a Part-10 file's elements: tag → {vr, Value}), the multipart/related bodies of
// WADO-RS, and the geometry of an Enhanced US Volume as protocols/dicom-us.ts writes it:
//   Columns = nx, Rows = ny, one frame per z-slice; shared Pixel Measures: Pixel Spacing
//   [row spacing (y), column spacing (x)], Spacing Between Slices / Slice Thickness (z);
//   Image Orientation (Volume) (1,0,0, 0,1,0); frame k's Image Position (Volume) = centre of
//   voxel (0,0,k). The Volume frame is the Reference frame, where measurements are made.
import { getMultipartBoundary, parseMultipart } from '@mjackson/multipart-parser';

export const ENHANCED_US_VOLUME_SOP_CLASS_UID = '1.2.840.10008.5.1.4.1.1.6.2';
const NATIVE_LITTLE_ENDIAN = ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2'];

/** Tags (upper-case hex, as DICOM JSON keys). */
export const TAG = {
  SpecificCharacterSet: '00080005',
  SOPClassUID: '00080016',
  SOPInstanceUID: '00080018',
  StudyDate: '00080020',
  StudyTime: '00080030',
  AccessionNumber: '00080050',
  ModalitiesInStudy: '00080061',
  Modality: '00080060',
  StudyDescription: '00081030',
  SeriesDescription: '0008103E',
  PatientName: '00100010',
  PatientID: '00100020',
  PatientBirthDate: '00100030',
  PatientSex: '00100040',
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  StudyID: '00200010',
  SeriesNumber: '00200011',
  InstanceNumber: '00200013',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  SamplesPerPixel: '00280002',
  NumberOfFrames: '00280008',
  Rows: '00280010',
  Columns: '00280011',
  PixelSpacing: '00280030',
  BitsAllocated: '00280100',
  PixelRepresentation: '00280103',
  SliceThickness: '00180050',
  SpacingBetweenSlices: '00180088',
  PixelMeasuresSequence: '00289110',
  PlanePositionSequence: '00209113',
  PlaneOrientationSequence: '00209116',
  ImagePositionPatient: '00200032',
  ImageOrientationPatient: '00200037',
  PlanePositionVolumeSequence: '0020930E',
  PlaneOrientationVolumeSequence: '0020930F',
  ImagePositionVolume: '00209301',
  ImageOrientationVolume: '00209302',
  SharedFunctionalGroupsSequence: '52009229',
  PerFrameFunctionalGroupsSequence: '52009230',
  PixelData: '7FE00010',
  TransferSyntaxUID: '00020010',
} as const;

export interface DicomJsonElement {
  readonly vr?: string;
  readonly Value?: readonly unknown[];
  readonly InlineBinary?: string;
  readonly BulkDataURI?: string;
}
/** One dataset in the DICOM JSON model: tag (8 hex digits) → element. */
export type DicomJson = Readonly<Record<string, DicomJsonElement | undefined>>;

/** An error with one of our codes (describeError in ui.ts shows `code: message`). */
export class StudyDataError extends Error {
  override readonly name = 'StudyDataError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const badFile = (what: string): StudyDataError => new StudyDataError('ECO3D_ERR_BAD_FILE', `Enhanced US Volume: ${what}`);

// ---- element access ---------------------------------------------------------------------------

function element(ds: DicomJson, tag: string): DicomJsonElement | undefined {
  return ds[tag] ?? ds[tag.toLowerCase()];
}

export function values(ds: DicomJson, tag: string): readonly unknown[] {
  return element(ds, tag)?.Value ?? [];
}

/** The first value as text ('' when absent). PN values give their Alphabetic group. */
export function str(ds: DicomJson, tag: string): string {
  const v = values(ds, tag)[0];
  if (typeof v === 'string') return v.trim();
  if (typeof v === 'number') return String(v);
  if (typeof v === 'object' && v !== null && typeof (v as { Alphabetic?: unknown }).Alphabetic === 'string') return (v as { Alphabetic: string }).Alphabetic.trim();
  return '';
}

/** Every value as text (multi-valued CS such as Modalities in Study). */
export function strs(ds: DicomJson, tag: string): string[] {
  return values(ds, tag)
    .map((v) => (typeof v === 'string' ? v.trim() : typeof v === 'number' ? String(v) : ''))
    .filter((s) => s !== '');
}

/** DS and IS come as JSON numbers (PS3.18 F.2.3) or, from some servers and from files, as text. */
function toNumber(v: unknown): number | undefined {
  const n = typeof v === 'string' ? (v.trim() === '' ? NaN : Number(v.trim())) : v;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
}

export function num(ds: DicomJson, tag: string): number | undefined {
  return toNumber(values(ds, tag)[0]);
}

export function nums(ds: DicomJson, tag: string): number[] | undefined {
  const out = values(ds, tag).map(toNumber);
  return out.length > 0 && out.every((n) => n !== undefined) ? out : undefined;
}

/** The items of a sequence. */
export function items(ds: DicomJson, tag: string): DicomJson[] {
  return values(ds, tag).filter((v): v is DicomJson => typeof v === 'object' && v !== null);
}

/** `Doe^Jane^^Dr` → `Doe, Jane`: family, given (and middle) names for display. */
export function formatPersonName(pn: string): string {
  if (pn === '') return '';
  const [family = '', given = '', middle = ''] = pn.split('=')[0]!.split('^');
  const first = [given, middle].filter((s) => s !== '').join(' ');
  return first === '' ? family : family === '' ? first : `${family}, ${first}`;
}

/** `20240501` → `2024-05-01` (anything else as it came). */
export function formatDicomDate(da: string): string {
  return /^\d{8}$/.test(da) ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : da;
}

/** `102030.123` → `10:20` (anything else as it came). */
export function formatDicomTime(tm: string): string {
  return /^\d{4}/.test(tm) ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : tm;
}

/** `2024-05-01` (an <input type=date> value) → `20240501`. */
export function toDicomDate(isoDate: string): string {
  return isoDate.replace(/-/g, '');
}

// ---- QIDO-RS answers ---------------------------------------------------------------------------

/** Study Description is not among the study-level attributes returned by default (PS3.18 Table 6.7.1-2a). */
export const STUDY_INCLUDE_FIELDS: readonly string[] = [TAG.StudyDescription, TAG.ModalitiesInStudy, TAG.NumberOfStudyRelatedInstances];

export interface StudyQuery {
  readonly patientName?: string;
  readonly patientId?: string;
  /** `YYYY-MM-DD` (an <input type=date> value), either end may be empty. */
  readonly dateFrom?: string;
  readonly dateTo?: string;
  readonly limit: number;
  readonly offset: number;
}

/** The QIDO-RS query string of a study search. */
export function studyQueryString(q: StudyQuery): string {
  const p = new URLSearchParams();
  p.set('limit', String(q.limit));
  p.set('offset', String(q.offset));
  p.set('includefield', STUDY_INCLUDE_FIELDS.join(','));
  const name = q.patientName?.trim() ?? '';
  // A name typed without wildcards matches names that start with it (PS3.4 C.2.2.2.4 wildcards).
  if (name !== '') p.set('PatientName', /[*?]/.test(name) ? name : `${name}*`);
  const id = q.patientId?.trim() ?? '';
  if (id !== '') p.set('PatientID', id);
  const from = q.dateFrom ?? '';
  const to = q.dateTo ?? '';
  if (from !== '' || to !== '') p.set('StudyDate', from !== '' && from === to ? toDicomDate(from) : `${toDicomDate(from)}-${toDicomDate(to)}`);
  return p.toString();
}

export interface StudySummary {
  readonly studyInstanceUid: string;
  readonly patientName: string;
  readonly patientId: string;
  readonly studyDate: string;
  readonly studyTime: string;
  readonly accessionNumber: string;
  readonly description: string;
  readonly modalities: readonly string[];
  readonly instances: number | undefined;
}

export function studySummary(ds: DicomJson): StudySummary {
  return {
    studyInstanceUid: str(ds, TAG.StudyInstanceUID),
    patientName: str(ds, TAG.PatientName),
    patientId: str(ds, TAG.PatientID),
    studyDate: str(ds, TAG.StudyDate),
    studyTime: str(ds, TAG.StudyTime),
    accessionNumber: str(ds, TAG.AccessionNumber),
    description: str(ds, TAG.StudyDescription),
    modalities: strs(ds, TAG.ModalitiesInStudy),
    instances: num(ds, TAG.NumberOfStudyRelatedInstances),
  };
}

export interface InstanceRef {
  readonly studyInstanceUid: string;
  /** '' when the answer did not carry it (a study-level instance query may not). */
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly modality: string;
  readonly instanceNumber: number;
}

export function instanceRef(ds: DicomJson, studyInstanceUid: string, seriesInstanceUid = ''): InstanceRef {
  return {
    studyInstanceUid: str(ds, TAG.StudyInstanceUID) || studyInstanceUid,
    seriesInstanceUid: str(ds, TAG.SeriesInstanceUID) || seriesInstanceUid,
    sopInstanceUid: str(ds, TAG.SOPInstanceUID),
    sopClassUid: str(ds, TAG.SOPClassUID),
    modality: str(ds, TAG.Modality),
    instanceNumber: num(ds, TAG.InstanceNumber) ?? 0,
  };
}

/** The volume to show among a study's instances: the Enhanced US Volume with the highest Instance Number. */
export function pickVolumeInstance(instances: readonly InstanceRef[]): InstanceRef | undefined {
  return instances.filter((i) => i.sopClassUid === ENHANCED_US_VOLUME_SOP_CLASS_UID && i.sopInstanceUid !== '').sort((a, b) => b.instanceNumber - a.instanceNumber)[0];
}

// ---- multipart/related (WADO-RS) ---------------------------------------------------------------

export interface BodyPart {
  readonly contentType: string;
  readonly bytes: Uint8Array;
}

/** The parts of a multipart/related body (RFC 2387), given the response's Content-Type. */
export function multipartParts(body: Uint8Array, contentType: string): BodyPart[] {
  const boundary = getMultipartBoundary(contentType);
  if (boundary === null) throw new StudyDataError('ECO3D_ERR_UPSTREAM', `expected a multipart answer with a boundary, got Content-Type "${contentType}"`);
  const parts: BodyPart[] = [];
  try {
    // maxFileSize: one part can be a whole volume (a 512³ one is 128 MiB).
    for (const p of parseMultipart(body, { boundary, maxFileSize: 1024 * 1024 * 1024 })) {
      parts.push({ contentType: p.headers.get('content-type') ?? '', bytes: p.bytes });
    }
  } catch (e) {
    throw new StudyDataError('ECO3D_ERR_UPSTREAM', `cannot parse the multipart answer: ${e instanceof Error ? e.message : String(e)}`);
  }
  return parts;
}

// ---- Enhanced US Volume ------------------------------------------------------------------------

export interface VolumeGeometry {
  /** Voxel counts along x (Columns), y (Rows), z (frames). */
  readonly dims: readonly [number, number, number];
  readonly spacingMm: readonly [number, number, number];
  /** Centre of voxel (0, 0, 0), mm, in the volume's frame. */
  readonly originMm: readonly [number, number, number];
  /** The frame of the coordinates: 'volume' (our Reference frame) or 'patient' (a fallback for volumes without Volume-frame attributes). */
  readonly frame: 'volume' | 'patient';
  /** Frame numbers (1-based) in the order of increasing z: [1..n] or [n..1]. */
  readonly frameOrder: readonly number[];
}

/** The first item of a functional-group macro's sequence, per frame then shared. */
function group(perFrame: DicomJson | undefined, shared: DicomJson | undefined, seq: string): DicomJson | undefined {
  return (perFrame === undefined ? undefined : items(perFrame, seq)[0]) ?? (shared === undefined ? undefined : items(shared, seq)[0]);
}

/**
 * The grid of an Enhanced US Volume from its dataset (WADO-RS metadata, or a Part-10 file's
 * elements). Only what the MPR can show: 8-bit single-sample pixels, frames that are axis-aligned
 * parallel planes at a regular spacing. Anything else is ECO3D_ERR_BAD_FILE naming the problem.
 */
export function volumeGeometry(ds: DicomJson): VolumeGeometry {
  const nx = num(ds, TAG.Columns);
  const ny = num(ds, TAG.Rows);
  const nz = num(ds, TAG.NumberOfFrames) ?? 1;
  if (nx === undefined || ny === undefined || ![nx, ny, nz].every((n) => Number.isInteger(n) && n >= 1)) {
    throw badFile(`size ${nx ?? '?'}×${ny ?? '?'}×${nz} is not a volume`);
  }
  const bits = num(ds, TAG.BitsAllocated);
  const samples = num(ds, TAG.SamplesPerPixel) ?? 1;
  if (bits !== 8 || samples !== 1) throw badFile(`${bits ?? '?'}-bit pixels with ${samples} samples: only 8-bit grey volumes are shown`);

  const shared = items(ds, TAG.SharedFunctionalGroupsSequence)[0];
  const perFrame = items(ds, TAG.PerFrameFunctionalGroupsSequence);
  const measures = group(perFrame[0], shared, TAG.PixelMeasuresSequence);
  const pixelSpacing = measures === undefined ? undefined : nums(measures, TAG.PixelSpacing);
  if (pixelSpacing?.length !== 2) throw badFile('no Pixel Spacing in the Pixel Measures functional group');
  const [sy, sx] = pixelSpacing as [number, number];

  // The Volume frame when the instance has it (ours does), else the patient frame.
  const volumeOrientation = group(perFrame[0], shared, TAG.PlaneOrientationVolumeSequence);
  const frame: VolumeGeometry['frame'] = volumeOrientation !== undefined ? 'volume' : 'patient';
  const orientation =
    frame === 'volume'
      ? nums(volumeOrientation!, TAG.ImageOrientationVolume)
      : (() => {
          const o = group(perFrame[0], shared, TAG.PlaneOrientationSequence);
          return o === undefined ? undefined : nums(o, TAG.ImageOrientationPatient);
        })();
  if (orientation?.length !== 6) throw badFile('no Image Orientation (Volume) or (Patient)');
  if (orientation.some((v, i) => Math.abs(v - [1, 0, 0, 0, 1, 0][i]!) > 1e-4)) {
    throw badFile(`Image Orientation ${orientation.join('\\')} is not axis-aligned; this viewer shows axis-aligned volumes only`);
  }
  const positionSeq = frame === 'volume' ? TAG.PlanePositionVolumeSequence : TAG.PlanePositionSequence;
  const positionTag = frame === 'volume' ? TAG.ImagePositionVolume : TAG.ImagePositionPatient;
  const positions: [number, number, number][] = [];
  for (let k = 0; k < nz; k++) {
    // A position in the shared groups fits a single frame only.
    const g = group(perFrame[k], nz === 1 ? shared : undefined, positionSeq);
    const p = g === undefined ? undefined : nums(g, positionTag);
    if (p?.length !== 3) throw badFile(`frame ${k + 1} has no Image Position (${frame === 'volume' ? 'Volume' : 'Patient'})`);
    positions.push(p as [number, number, number]);
  }
  let sz = nz > 1 ? positions[1]![2] - positions[0]![2] : (num(measures!, TAG.SpacingBetweenSlices) ?? num(measures!, TAG.SliceThickness) ?? 1);
  // Frames may run down z: show them in increasing z.
  const descending = sz < 0;
  const frameOrder = Array.from({ length: nz }, (_, k) => (descending ? nz - k : k + 1));
  const ordered = frameOrder.map((f) => positions[f - 1]!);
  sz = Math.abs(sz);
  const p0 = ordered[0]!;
  const tol = 1e-3 * Math.max(1, sz);
  ordered.forEach((p, k) => {
    if (Math.abs(p[0] - p0[0]) > tol || Math.abs(p[1] - p0[1]) > tol || Math.abs(p[2] - (p0[2] + k * sz)) > tol * Math.max(1, k)) {
      throw badFile(`frame ${frameOrder[k]} at ${p.join('\\')} is off the regular grid of the others`);
    }
  });
  if (![sx, sy, sz].every((s) => Number.isFinite(s) && s > 0)) throw badFile(`spacing ${sx}/${sy}/${sz} mm is not positive`);
  return { dims: [nx, ny, nz], spacingMm: [sx, sy, sz], originMm: p0, frame, frameOrder };
}

/** The voxels (x fastest, then y, then z) from the frames in frame-number order. */
export function voxelsFromFrames(geom: VolumeGeometry, frames: readonly Uint8Array[]): Uint8Array {
  const [nx, ny, nz] = geom.dims;
  const frameBytes = nx * ny;
  if (frames.length !== nz) throw badFile(`${frames.length} frames received, Number of Frames is ${nz}`);
  const out = new Uint8Array(frameBytes * nz);
  geom.frameOrder.forEach((f, k) => {
    const src = frames[f - 1]!;
    // A part may carry one byte of padding (even-length values).
    if (src.byteLength < frameBytes || src.byteLength > frameBytes + 1) throw badFile(`frame ${f} has ${src.byteLength} bytes, expected ${frameBytes}`);
    out.set(src.subarray(0, frameBytes), k * frameBytes);
  });
  return out;
}

/** The voxels from the whole Pixel Data of a native (uncompressed) instance. */
export function voxelsFromPixelData(geom: VolumeGeometry, pixelData: Uint8Array): Uint8Array {
  const [nx, ny, nz] = geom.dims;
  const frameBytes = nx * ny;
  if (pixelData.byteLength < frameBytes * nz) throw badFile(`Pixel Data has ${pixelData.byteLength} bytes, ${nx}×${ny}×${nz} needs ${frameBytes * nz}`);
  return voxelsFromFrames(
    geom,
    Array.from({ length: nz }, (_, k) => pixelData.subarray(k * frameBytes, (k + 1) * frameBytes)),
  );
}

/** The part of dcmjs used to read a Part-10 file (injected: the bundle loads dcmjs on demand). */
export interface Part10Reader {
  readFile(buffer: ArrayBuffer, options?: { noCopy?: boolean }): { meta: unknown; dict: unknown };
}

/** A volume read from a Part-10 Enhanced US Volume: its dataset (DICOM JSON shape), grid and voxels. */
export function volumeFromPart10(bytes: Uint8Array, reader: Part10Reader): { dataset: DicomJson; geometry: VolumeGeometry; voxels: Uint8Array } {
  if (bytes.byteLength < 132 || String.fromCharCode(...bytes.subarray(128, 132)) !== 'DICM') throw badFile('not a DICOM Part-10 file (no DICM prefix)');
  const ab = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? bytes.buffer : bytes.slice().buffer;
  let meta: DicomJson;
  let dataset: DicomJson;
  try {
    const f = reader.readFile(ab, { noCopy: true });
    meta = f.meta as DicomJson;
    dataset = f.dict as DicomJson;
  } catch (e) {
    throw badFile(`cannot parse the file: ${e instanceof Error ? e.message : String(e)}`);
  }
  const ts = str(meta, TAG.TransferSyntaxUID);
  if (!NATIVE_LITTLE_ENDIAN.includes(ts)) throw badFile(`transfer syntax ${ts || '(none)'}: only native little-endian pixel data is shown`);
  const sopClass = str(dataset, TAG.SOPClassUID);
  if (sopClass !== ENHANCED_US_VOLUME_SOP_CLASS_UID) throw badFile(`SOP Class ${sopClass || '(none)'} is not Enhanced US Volume`);
  const geometry = volumeGeometry(dataset);
  const px = values(dataset, TAG.PixelData);
  const chunks = px.map((v) => (v instanceof Uint8Array ? v : v instanceof ArrayBuffer ? new Uint8Array(v) : ArrayBuffer.isView(v) ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength) : null));
  if (chunks.length === 0 || chunks.some((c) => c === null)) throw badFile('no Pixel Data');
  const whole = chunks.length === 1 ? chunks[0]! : concat(chunks as Uint8Array[]);
  return { dataset, geometry, voxels: voxelsFromPixelData(geometry, whole) };
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

// DICOM inputs for the archive's tests (test files only): instances built with the product's own
// writers (protocols/dicom-us.ts, protocols/dicom-sr.ts), plus small grayscale-16 and colour
// images and a Part-10 re-wrapper for what those writers do not make.
import dcmjs, { type NaturalizedDataset } from 'dcmjs';
import { encodeMeasurementReport } from '../protocols/dicom-sr.ts';
import {
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  newUid,
  type DicomUsCommon,
} from '../protocols/dicom-us.ts';
import { writePart10 } from '../protocols/dicom-part10.ts';
import type { ImageFrame } from '../protocols/imaging.ts';
import { probeHeader } from './dicom-header.ts';

export interface BuiltInstance {
  readonly bytes: Uint8Array;
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  /** All frames' pixels, frame after frame (absent for an SR). */
  readonly pixels?: Uint8Array;
  readonly frames?: number;
  readonly rows?: number;
  readonly columns?: number;
}

export interface StudyFixture {
  readonly studyInstanceUid?: string;
  readonly patientName?: string;
  readonly patientId?: string;
  readonly birthDate?: string;
  readonly sex?: 'M' | 'F' | 'O';
  /** ISO 8601 with offset. */
  readonly studyDateTime?: string;
  readonly accessionNumber?: string;
  readonly description?: string;
  readonly referringPhysicianName?: string;
}

function common(s: StudyFixture, seriesInstanceUid: string, sopInstanceUid: string, seriesNumber: number, instanceNumber: number): DicomUsCommon {
  return {
    patient: { name: s.patientName ?? 'Doe^Jane', id: s.patientId ?? 'P-0042', birthDate: s.birthDate ?? '1980-02-29', sex: s.sex ?? 'F' },
    study: {
      studyInstanceUid: s.studyInstanceUid ?? newUid(),
      studyId: 'S1',
      accessionNumber: s.accessionNumber ?? 'ACC-7',
      studyDateTime: s.studyDateTime ?? '2026-03-10T10:20:30.123+01:00',
      description: s.description ?? 'Robotic 3D US abdomen',
      referringPhysicianName: s.referringPhysicianName,
    },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic US', deviceSerialNumber: 'sim-1', softwareVersions: ['eco3d 0.1.0'] },
    seriesInstanceUid,
    seriesNumber,
    seriesDescription: 'B-mode frames',
    sopInstanceUid,
    instanceNumber,
    acquisitionDateTime: '2026-03-10T10:21:00.000+01:00',
    contentDateTime: '2026-03-10T10:22:00.000+01:00',
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
  };
}

/** An Ultrasound Multi-frame Image: `frames` frames of width × height 8-bit pixels, each frame distinct. */
export function usMultiframe(
  s: StudyFixture = {},
  o: { seriesInstanceUid?: string; sopInstanceUid?: string; frames?: number; width?: number; height?: number; seriesNumber?: number; instanceNumber?: number; seed?: number } = {},
): BuiltInstance & { pixels: Uint8Array } {
  const width = o.width ?? 16;
  const height = o.height ?? 12;
  const count = o.frames ?? 4;
  const seed = o.seed ?? 0;
  const frames: ImageFrame[] = Array.from({ length: count }, (_, k) => {
    const pixels = new Uint8Array(width * height);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 7 + k * 31 + seed * 13) & 0xff;
    return { index: k, tMs: 1000 + k * 33.3, width, height, pixels };
  });
  const c = common(s, o.seriesInstanceUid ?? newUid(), o.sopInstanceUid ?? newUid(), o.seriesNumber ?? 1, o.instanceNumber ?? 1);
  const bytes = encodeUsMultiframe({ ...c, frames, pixelSpacingMm: { x: 0.2, y: 0.2 } });
  const pixels = new Uint8Array(width * height * count);
  frames.forEach((f, k) => pixels.set(f.pixels, k * width * height));
  return {
    bytes,
    studyInstanceUid: c.study.studyInstanceUid,
    seriesInstanceUid: c.seriesInstanceUid,
    sopInstanceUid: c.sopInstanceUid,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.3.1',
    pixels,
    frames: count,
    rows: height,
    columns: width,
  };
}

/** An Enhanced US Volume of nx × ny × nz 8-bit voxels (x fastest): each z-slice is a frame. */
export function usVolume(s: StudyFixture = {}, o: { seriesInstanceUid?: string; dims?: readonly [number, number, number] } = {}): BuiltInstance & { pixels: Uint8Array } {
  const [nx, ny, nz] = o.dims ?? [12, 10, 6];
  const data = new Uint8Array(nx * ny * nz);
  for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) data[(z * ny + y) * nx + x] = (x * 7 + y * 13 + z * 29) & 0xff;
  const c = common(s, o.seriesInstanceUid ?? newUid(), newUid(), 2, 1);
  const identity = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  const bytes = encodeEnhancedUsVolume({
    ...c,
    seriesDescription: 'Reconstructed volume',
    volume: { grid: { dims: [nx, ny, nz], spacingMm: { x: 0.3, y: 0.45, z: 0.6 }, originMm: { x: 431.5, y: -28.25, z: 12.5 } }, data },
    acquisitionDurationS: 8,
    frameOfReferenceUid: newUid(),
    volumeFrameOfReferenceUid: newUid(),
    dimensionOrganizationUid: newUid(),
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: new Float64Array([1, 0, 0, -435, 0, 0, -1, 30, 0, 1, 0, 24, 0, 0, 0, 1]),
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: newUid(),
    volumeToTable: identity,
    tableToPatient: identity,
    transducer: {
      description: 'Eco3D sim linear',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: {
      view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' },
      processingFunction: 'B-MODE ABDOMEN',
      mechanicalIndex: 0.8,
      boneThermalIndex: 0.2,
      cranialThermalIndex: 0.1,
      softTissueThermalIndex: 0.3,
      depthsOfFocusMm: [24],
      depthOfScanFieldMm: 48,
    },
  });
  return {
    bytes,
    studyInstanceUid: c.study.studyInstanceUid,
    seriesInstanceUid: c.seriesInstanceUid,
    sopInstanceUid: c.sopInstanceUid,
    sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID,
    pixels: data,
    frames: nz,
    rows: ny,
    columns: nx,
  };
}

/** A TID 1500 Comprehensive 3D SR about a (notional) volume of the study. */
export function srReport(s: StudyFixture = {}, o: { seriesInstanceUid?: string; sopInstanceUid?: string } = {}): BuiltInstance {
  const c = common(s, o.seriesInstanceUid ?? newUid(), o.sopInstanceUid ?? newUid(), 100, 1);
  const bytes = encodeMeasurementReport({
    patient: c.patient,
    study: c.study,
    equipment: c.equipment,
    seriesInstanceUid: c.seriesInstanceUid,
    seriesNumber: 100,
    seriesDescription: 'Measurements',
    sopInstanceUid: c.sopInstanceUid,
    instanceNumber: 1,
    contentDateTime: c.contentDateTime,
    deviceObserverUid: '2.25.2004',
    procedureReported: { value: '16310003', scheme: 'SCT', meaning: 'Ultrasonography' },
    referencedVolume: { sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, sopInstanceUid: newUid(), seriesInstanceUid: newUid(), frameOfReferenceUid: newUid() },
    measurements: [{ kind: 'distance', valueMm: 12.5, plane: 'axial', pointsMm: [{ x: 1, y: 2, z: 3 }, { x: 13.5, y: 2, z: 3 }], label: 'Cyst' }],
  });
  return { bytes, studyInstanceUid: c.study.studyInstanceUid, seriesInstanceUid: c.seriesInstanceUid, sopInstanceUid: c.sopInstanceUid, sopClassUid: '1.2.840.10008.5.1.4.1.1.88.34' };
}

const SC_GRAY16 = '1.2.840.10008.5.1.4.1.1.7.3'; // Multi-frame Grayscale Word Secondary Capture
const SC = '1.2.840.10008.5.1.4.1.1.7'; // Secondary Capture

function scBase(studyInstanceUid: string, sopClassUid: string, sopInstanceUid: string): NaturalizedDataset {
  return {
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClassUid,
    SOPInstanceUID: sopInstanceUid,
    PatientName: 'Roe^Richard',
    PatientID: 'P-0099',
    PatientBirthDate: '19700101',
    PatientSex: 'M',
    StudyInstanceUID: studyInstanceUid,
    StudyDate: '20250704',
    StudyTime: '083000',
    ReferringPhysicianName: '',
    StudyID: 'S9',
    AccessionNumber: 'ACC-9',
    Modality: 'OT',
    SeriesInstanceUID: newUid(),
    SeriesNumber: 7,
    InstanceNumber: 1,
    PatientOrientation: '',
    ConversionType: 'WSD',
    BurnedInAnnotation: 'NO',
  };
}

/** A 16-bit MONOCHROME2 multi-frame image (signed or not) with a window. */
export function gray16(o: { studyInstanceUid?: string; rows?: number; columns?: number; frames?: number; signed?: boolean; window?: { center: number; width: number } } = {}): BuiltInstance & { pixels: Uint8Array; values: Int32Array } {
  const rows = o.rows ?? 10;
  const columns = o.columns ?? 12;
  const frames = o.frames ?? 2;
  const studyInstanceUid = o.studyInstanceUid ?? newUid();
  const sopInstanceUid = newUid();
  const values = new Int32Array(rows * columns * frames);
  const pixels = new Uint8Array(values.length * 2);
  const view = new DataView(pixels.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = o.signed === true ? (i * 37) % 2000 - 1000 : (i * 97) % 4096;
    values[i] = v;
    view.setInt16(i * 2, v, true);
  }
  const ds: NaturalizedDataset = {
    ...scBase(studyInstanceUid, SC_GRAY16, sopInstanceUid),
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: rows,
    Columns: columns,
    BitsAllocated: 16,
    BitsStored: 12,
    HighBit: 11,
    PixelRepresentation: o.signed === true ? 1 : 0,
    NumberOfFrames: frames,
    FrameIncrementPointer: 0x00181063,
    FrameTime: 40,
    ...(o.window === undefined ? {} : { WindowCenter: o.window.center, WindowWidth: o.window.width }),
    RescaleIntercept: 0,
    RescaleSlope: 1,
    RescaleType: 'US',
    PresentationLUTShape: 'IDENTITY',
    PixelData: pixels.buffer,
    _vrMap: { PixelData: 'OW' },
  };
  // Bits Stored 12 would mask signed values; keep 16 for the signed case.
  if (o.signed === true) Object.assign(ds, { BitsStored: 16, HighBit: 15 });
  const bytes = writePart10(SC_GRAY16, sopInstanceUid, ds);
  return { bytes, studyInstanceUid, seriesInstanceUid: ds.SeriesInstanceUID as string, sopInstanceUid, sopClassUid: SC_GRAY16, pixels, frames, rows, columns, values };
}

/** An 8-bit RGB image (interleaved or planar). */
export function rgb8(o: { studyInstanceUid?: string; rows?: number; columns?: number; planar?: boolean; photometric?: 'RGB' | 'YBR_FULL' } = {}): BuiltInstance & { pixels: Uint8Array; rgb: Uint8Array } {
  const rows = o.rows ?? 6;
  const columns = o.columns ?? 8;
  const studyInstanceUid = o.studyInstanceUid ?? newUid();
  const sopInstanceUid = newUid();
  const n = rows * columns;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    rgb[i * 3] = (i * 5) & 0xff;
    rgb[i * 3 + 1] = (i * 11 + 60) & 0xff;
    rgb[i * 3 + 2] = (255 - i * 3) & 0xff;
  }
  const stored = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) stored[o.planar === true ? c * n + i : i * 3 + c] = rgb[i * 3 + c]!;
  const ds: NaturalizedDataset = {
    ...scBase(studyInstanceUid, SC, sopInstanceUid),
    SamplesPerPixel: 3,
    PhotometricInterpretation: o.photometric ?? 'RGB',
    PlanarConfiguration: o.planar === true ? 1 : 0,
    Rows: rows,
    Columns: columns,
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    PixelData: stored.buffer,
    _vrMap: { PixelData: 'OB' },
  };
  const bytes = writePart10(SC, sopInstanceUid, ds);
  return { bytes, studyInstanceUid, seriesInstanceUid: ds.SeriesInstanceUID as string, sopInstanceUid, sopClassUid: SC, pixels: stored, frames: 1, rows, columns, rgb };
}

/** The same data set under another File Meta Information (another sender's implementation). */
export function rewrapMeta(bytes: Uint8Array, implementation: { classUid: string; versionName: string }): Uint8Array {
  const probe = probeHeader(bytes);
  if (probe.kind !== 'header') throw new Error('rewrapMeta: not a whole file');
  const h = probe.header;
  const str = (tag: string): string => {
    const v = (h.meta[tag]?.Value ?? [])[0];
    return typeof v === 'string' ? v : '';
  };
  const meta = dcmjs.data.DicomMetaDictionary.denaturalizeDataset({
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: str('00020002'),
    MediaStorageSOPInstanceUID: str('00020003'),
    TransferSyntaxUID: h.transferSyntaxUid,
    ImplementationClassUID: implementation.classUid,
    ImplementationVersionName: implementation.versionName,
    SourceApplicationEntityTitle: 'OTHER_SENDER',
  });
  const dict = new dcmjs.data.DicomDict(meta);
  dict.dict = {};
  const head = new Uint8Array(dict.write());
  const out = new Uint8Array(head.length + bytes.length - h.datasetOffset);
  out.set(head);
  out.set(bytes.subarray(h.datasetOffset), head.length);
  return out;
}

/** The data set bytes (after the File Meta). */
export function datasetOf(bytes: Uint8Array): Uint8Array {
  const probe = probeHeader(bytes);
  if (probe.kind !== 'header') throw new Error('datasetOf: not a whole file');
  return bytes.subarray(probe.header.datasetOffset);
}

// DICOM objects for an ultrasound acquisition: the reconstructed volume as an Enhanced US Volume
// instance (PS3.3 A.59, SOP Class 1.2.840.10008.5.1.4.1.1.6.2) and the recorded B-mode frames as
// an Ultrasound Multi-frame Image instance (PS3.3 A.7, 1.2.840.10008.5.1.4.1.1.3.1) of the same
// study, both Explicit VR Little Endian Part-10 files; plus a reader for our own volumes.
//
// Built with dcmjs: a naturalized dataset (keywords → values) → `denaturalizeDataset` →
// `DicomDict.write()`. The encoders are pure: every UID, date and name is an input (`newUid()`
// makes UIDs for callers), so the same input always gives the same bytes.
//
// dcmjs pitfalls handled here (see ../shared/FACTS.md):
// - AT values (Dimension Index Pointer, Functional Group Pointer, Frame Increment Pointer) must
//   be numbers such as 0x0020930e; a hex string is silently written as garbage.
// - A DT value of odd length is padded with a space that reads back as part of the value, so
//   every DT here has the even-length form YYYYMMDDHHMMSS.FFFFFF&ZZXX (26 characters).
// - Pixel data is handed over as one ArrayBuffer (the volume's own buffer when it can be), never
//   as one buffer per frame, and read back with `noCopy`, so 16 MB volumes cost one copy each way.
//
// Geometry. The volume is the axis-aligned grid of imaging.ts (`Volume`, x fastest) in the
// Reference frame (mm). Each z-slice is one frame: Columns = nx, Rows = ny, so a frame's pixels
// are exactly the slice's bytes. The Volume Frame of Reference is the Reference frame itself:
// Image Orientation (Volume) is (1,0,0, 0,1,0) and frame k's Image Position (Volume) is the
// centre of voxel (0,0,k). The patient frame (Plane Position/Orientation (Patient)) comes from
// the equipment geometry the caller passes (Reference → robot base "table" → patient LPS).
import { randomUUID } from 'node:crypto';
import dcmjs, { type NaturalizedDataset } from 'dcmjs';
import { checkUid, code, dicomDateTime, ds, EXPLICIT_VR_LITTLE_ENDIAN_UID, patientAndStudy, writePart10 } from './dicom-part10.ts';
import { Eco3dError } from './errors.ts';

export { ECO3D_IMPLEMENTATION_CLASS_UID, EXPLICIT_VR_LITTLE_ENDIAN_UID } from './dicom-part10.ts';
import type { ImageFrame, Mat4, Volume } from './imaging.ts';

export const ENHANCED_US_VOLUME_SOP_CLASS_UID = '1.2.840.10008.5.1.4.1.1.6.2';
export const US_MULTIFRAME_SOP_CLASS_UID = '1.2.840.10008.5.1.4.1.1.3.1';
/** The Synchronization Frame of Reference UID meaning "synchronized to UTC" (PS3.3 C.7.4.2.1.1). */
export const UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID = '1.2.840.10008.15.1.1';

// Tags used as AT values: numbers, never strings (see the header).
const TAG = {
  FrameContentSequence: 0x00209111,
  TemporalPositionIndex: 0x00209128,
  PlanePositionVolumeSequence: 0x0020930e,
  ImagePositionVolume: 0x00209301,
  ImageDataTypeSequence: 0x00189807,
  DataType: 0x00189808,
  FrameTimeVector: 0x00181065,
} as const;

// ---------------------------------------------------------------------------------------------
// Inputs

/** A coded concept (PS3.3 Code Sequence Macro), e.g. `{ value: '125241', scheme: 'DCM', meaning: '…' }`. */
export interface CodedConcept {
  readonly value: string;
  readonly scheme: string;
  readonly meaning: string;
}

export interface DicomPatient {
  /** DICOM person name: `Family^Given^Middle^Prefix^Suffix`; empty when unknown. */
  readonly name: string;
  readonly id: string;
  /** `YYYY-MM-DD`, or undefined when unknown. */
  readonly birthDate?: string | undefined;
  readonly sex?: 'M' | 'F' | 'O' | undefined;
  /** Patient Study module (optional): size in metres and weight in kilograms. */
  readonly sizeM?: number | undefined;
  readonly weightKg?: number | undefined;
}

export interface DicomStudy {
  readonly studyInstanceUid: string;
  /** Short study id shown to staff (SH, ≤ 16 characters). */
  readonly studyId: string;
  readonly accessionNumber: string;
  /** When the study started, ISO 8601 with an offset: `2024-05-01T10:20:30.123+02:00` or `…Z`. */
  readonly studyDateTime: string;
  readonly description?: string | undefined;
  readonly referringPhysicianName?: string | undefined;
}

export interface DicomEquipment {
  readonly manufacturer: string;
  readonly modelName: string;
  readonly deviceSerialNumber: string;
  /** Software versions, most significant first (our release, the reconstructor's, …). */
  readonly softwareVersions: readonly string[];
  readonly institutionName?: string | undefined;
  readonly stationName?: string | undefined;
}

/** What every instance of the acquisition shares. */
export interface DicomUsCommon {
  readonly patient: DicomPatient;
  readonly study: DicomStudy;
  readonly equipment: DicomEquipment;
  readonly seriesInstanceUid: string;
  readonly seriesNumber: number;
  readonly seriesDescription?: string | undefined;
  readonly sopInstanceUid: string;
  readonly instanceNumber: number;
  /** When acquisition started (ISO 8601 with offset, as studyDateTime). */
  readonly acquisitionDateTime: string;
  /** When this instance's content was made (ISO 8601 with offset). */
  readonly contentDateTime: string;
  /** The region scanned (General Anatomy macro; SNOMED CT, CID 4031), e.g. SCT 818981001 "Abdomen". */
  readonly anatomicRegion: CodedConcept;
  /** Laterality of a paired body part (e.g. a breast); undefined for an unpaired region. */
  readonly laterality?: 'R' | 'L' | undefined;
}

/** The transducer as PS3.3 C.8.24.3.4 describes it: properties of the probe model, not of this scan. */
export interface UsTransducer {
  /** Transducer Data (0018,5010): free text, e.g. the probe model. */
  readonly description: string;
  /** CID 12032 (e.g. plane scan pattern for a 2D probe). */
  readonly scanPattern: CodedConcept;
  /** CID 12033 (linear, curved linear, sector, …). */
  readonly geometry: CodedConcept;
  /** CID 12034, one or more. */
  readonly beamSteering: readonly CodedConcept[];
  /** CID 12035 (external, transesophageal, …). */
  readonly application: CodedConcept;
}

/** Acoustic output and scan settings of the acquisition (Enhanced US Image module, all Type 1). */
export interface UsScanSettings {
  /**
   * View Code Sequence (0054,0220) of the Mandatory View and Slice Progression Direction macro:
   * the view the frames show.
   */
  readonly view: CodedConcept;
  /** Processing Function (0018,5020): the scanner preset, e.g. `B-MODE ABDOMEN`. */
  readonly processingFunction: string;
  readonly mechanicalIndex: number;
  readonly boneThermalIndex: number;
  readonly cranialThermalIndex: number;
  readonly softTissueThermalIndex: number;
  /** Depth(s) of the transmit focus below the transducer face, mm. */
  readonly depthsOfFocusMm: readonly number[];
  /** Depth of the field of view below the transducer face, mm (IS: rounded). */
  readonly depthOfScanFieldMm: number;
}

export interface EnhancedUsVolumeInput extends DicomUsCommon {
  readonly volume: Volume;
  /** Acquisition duration, s (the sweep). Each plane of the resampled volume spans all of it. */
  readonly acquisitionDurationS: number;
  /** Frame of Reference UID of the patient coordinate system (shared with other series of the scan). */
  readonly frameOfReferenceUid: string;
  /** Volume Frame of Reference UID: identifies the Reference frame the volume grid is aligned to. */
  readonly volumeFrameOfReferenceUid: string;
  /** Dimension Organization UID (one per instance unless several share its dimensions). */
  readonly dimensionOrganizationUid: string;
  /** Synchronization Frame of Reference UID: `UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID` when the clocks follow UTC. */
  readonly synchronizationFrameOfReferenceUid: string;
  /**
   * Volume to Transducer Mapping Matrix (0020,9309): the rigid 4×4, row-major, that maps a point
   * in the Volume frame (here the Reference frame, mm) to the Transducer frame of PS3.3
   * C.8.24.2.1.2: origin at the centre of the transducer face, +Y normal to the face into the
   * patient (the beam direction), +X toward the probe's orientation marker, Z = X × Y. It is the
   * inverse of the transducer's pose in the Reference frame at the nominal position (for a robot
   * sweep: the pose at mid-sweep), i.e. inverse(ProbeToReference) composed with the fixed
   * rotation from our probe axes (tool z along the beam) to the DICOM transducer axes. The
   * caller computes it from the real probe geometry; it must be rigid.
   */
  readonly volumeToTransducer: Mat4;
  /**
   * How the transducer moved relative to the volume (0020,930B). A robotic sweep translates (and
   * for a fan sweep tilts) the probe, so the matrix above is a nominal pose: POSITION_VAR,
   * ORIENTATION_VAR or POSITION_ORIENTATION_VAR; FIXED only for a probe that never moved.
   */
  readonly volumeToTransducerRelationship: 'FIXED' | 'POSITION_VAR' | 'ORIENTATION_VAR' | 'POSITION_ORIENTATION_VAR';
  /**
   * Equipment geometry. The "table" of PS3.3 C.8.24.2.1.3 is the robot base frame, the
   * equipment's own coordinate system: `volumeToTable` maps the Reference frame to it (identity
   * when the Reference frame is the robot base), `tableToPatient` maps it to the DICOM patient
   * coordinate system (LPS, mm) from the patient's registered position on the table. Both rigid.
   */
  readonly tableFrameOfReferenceUid: string;
  readonly volumeToTable: Mat4;
  readonly tableToPatient: Mat4;
  readonly transducer: UsTransducer;
  readonly scan: UsScanSettings;
}

export interface UsMultiframeInput extends DicomUsCommon {
  /** The B-mode frames in acquisition order: same size, 8-bit, `tMs` non-decreasing. */
  readonly frames: readonly ImageFrame[];
  /** Pixel size of the frames, mm: x along columns (lateral), y along rows (depth). */
  readonly pixelSpacingMm: { readonly x: number; readonly y: number };
  /** Frame of Reference UID (the patient frame shared with the volume), or omitted. */
  readonly frameOfReferenceUid?: string | undefined;
}

export interface DecodedUsVolume {
  readonly volume: Volume;
  readonly sopInstanceUid: string;
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
}

// ---------------------------------------------------------------------------------------------
// UIDs and value formatting

/**
 * A new UID of the form 2.25.<UUID as an unsigned decimal integer> (PS3.5 B.2): unique without a
 * registered root. At most 2 + 1 + 39 + 1 = 44 characters, under the 64 allowed.
 */
export function newUid(): string {
  return `2.25.${BigInt(`0x${randomUUID().replace(/-/g, '')}`).toString(10)}`;
}

/**
 * A direction in patient coordinates (LPS) as Patient Orientation letters (PS3.3 C.7.6.1.1.1):
 * the components that matter, largest first (L/R, P/A, H/F).
 */
function patientOrientationLetters(d: readonly number[]): string {
  const letters = [
    [d[0]!, 'L', 'R'],
    [d[1]!, 'P', 'A'],
    [d[2]!, 'H', 'F'],
  ] as const;
  return letters
    .filter(([c]) => Math.abs(c) > 1e-3)
    .sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]))
    .map(([c, pos, neg]) => (c > 0 ? pos : neg))
    .join('');
}

function matrixValues(name: string, m: Mat4): number[] {
  if (m.length !== 16 || !Array.from(m).every(Number.isFinite)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: expected 16 finite numbers`);
  const a = Array.from(m);
  // Rigid: orthonormal rotation part with determinant +1, last row 0 0 0 1 (PS3.3 C.8.24.2.2).
  const r = (i: number, j: number): number => a[i * 4 + j]!;
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      let dot = 0;
      for (let k = 0; k < 3; k++) dot += r(k, i) * r(k, j);
      if (Math.abs(dot - (i === j ? 1 : 0)) > 1e-6) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: not a rigid transform (rotation part is not orthonormal)`);
    }
  }
  const det = r(0, 0) * (r(1, 1) * r(2, 2) - r(1, 2) * r(2, 1)) - r(0, 1) * (r(1, 0) * r(2, 2) - r(1, 2) * r(2, 0)) + r(0, 2) * (r(1, 0) * r(2, 1) - r(1, 1) * r(2, 0));
  if (det < 0 || Math.abs(a[12]!) > 1e-9 || Math.abs(a[13]!) > 1e-9 || Math.abs(a[14]!) > 1e-9 || Math.abs(a[15]! - 1) > 1e-9) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: not a rigid transform (reflection or bad last row)`);
  }
  return a;
}

function apply(m: readonly number[], p: readonly [number, number, number], w: 0 | 1): [number, number, number] {
  return [0, 1, 2].map((i) => m[i * 4]! * p[0] + m[i * 4 + 1]! * p[1] + m[i * 4 + 2]! * p[2] + w * m[i * 4 + 3]!) as [number, number, number];
}

function mul(a: readonly number[], b: readonly number[]): number[] {
  const r = new Array<number>(16).fill(0);
  for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) for (let k = 0; k < 4; k++) r[i * 4 + j]! += a[i * 4 + k]! * b[k * 4 + j]!;
  return r;
}

/** Exactly `bytes` as an ArrayBuffer of even length (OB values must be even, PS3.5 7.1.1). */
function evenArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  if (bytes.byteLength % 2 === 0 && bytes.byteOffset === 0 && bytes.buffer instanceof ArrayBuffer && bytes.buffer.byteLength === bytes.byteLength) {
    return bytes.buffer; // the caller's own buffer: no copy
  }
  const out = new Uint8Array(bytes.byteLength + (bytes.byteLength % 2));
  out.set(bytes);
  return out.buffer;
}

// ---------------------------------------------------------------------------------------------
// Shared modules

function commonModules(input: DicomUsCommon, sopClassUid: string): NaturalizedDataset {
  const content = dicomDateTime('contentDateTime', input.contentDateTime);
  const p = input.patient;
  const ds0: NaturalizedDataset = {
    // SOP Common. UTF-8 so that any patient name survives (PS3.3 C.12.1.1.2).
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: sopClassUid,
    SOPInstanceUID: checkUid('sopInstanceUid', input.sopInstanceUid),
    InstanceCreationDate: content.da,
    InstanceCreationTime: content.tm,
    TimezoneOffsetFromUTC: content.offset,
    ...patientAndStudy(input),
    // General Series
    Modality: 'US',
    SeriesInstanceUID: checkUid('seriesInstanceUid', input.seriesInstanceUid),
    SeriesNumber: input.seriesNumber,
    // General Equipment / Enhanced General Equipment
    Manufacturer: input.equipment.manufacturer,
    ManufacturerModelName: input.equipment.modelName,
    DeviceSerialNumber: input.equipment.deviceSerialNumber,
    SoftwareVersions: input.equipment.softwareVersions.length === 1 ? input.equipment.softwareVersions[0] : [...input.equipment.softwareVersions],
    // Image: content time and instance number
    InstanceNumber: input.instanceNumber,
    ContentDate: content.da,
    ContentTime: content.tm,
  };
  // Type 2C, only for a paired body part (dciodvfy rejects it, even empty, for an unpaired one).
  if (input.laterality !== undefined) ds0.Laterality = input.laterality;
  if (input.study.description !== undefined) ds0.StudyDescription = input.study.description;
  if (input.seriesDescription !== undefined) ds0.SeriesDescription = input.seriesDescription;
  if (input.equipment.institutionName !== undefined) ds0.InstitutionName = input.equipment.institutionName;
  if (input.equipment.stationName !== undefined) ds0.StationName = input.equipment.stationName;
  // Patient Study (optional module)
  if (p.sizeM !== undefined) ds0.PatientSize = ds(p.sizeM);
  if (p.weightKg !== undefined) ds0.PatientWeight = ds(p.weightKg);
  return ds0;
}

// ---------------------------------------------------------------------------------------------
// Enhanced US Volume

/** Encodes a reconstructed volume as an Enhanced US Volume Part-10 file (one frame per z-slice). */
export function encodeEnhancedUsVolume(input: EnhancedUsVolumeInput): Uint8Array {
  const { grid, data } = input.volume;
  const [nx, ny, nz] = grid.dims;
  if (![nx, ny, nz].every((n) => Number.isInteger(n) && n >= 1 && n <= 65535)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `volume dims must be integers in 1..65535, got ${grid.dims.join('×')}`);
  if (data.length !== nx * ny * nz) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `volume has ${data.length} voxels, dims say ${nx * ny * nz}`);
  const { x: sx, y: sy, z: sz } = grid.spacingMm;
  if (![sx, sy, sz].every((s) => Number.isFinite(s) && s > 0)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'volume spacing must be finite and positive');
  const o = grid.originMm;
  if (![o.x, o.y, o.z].every(Number.isFinite)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', 'volume origin is not finite');

  const volumeToTransducer = matrixValues('volumeToTransducer', input.volumeToTransducer);
  const volumeToTable = matrixValues('volumeToTable', input.volumeToTable);
  const tableToPatient = matrixValues('tableToPatient', input.tableToPatient);
  const volumeToPatient = mul(tableToPatient, volumeToTable);
  const acq = dicomDateTime('acquisitionDateTime', input.acquisitionDateTime);
  const durationS = input.acquisitionDurationS;
  if (!Number.isFinite(durationS) || durationS < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'acquisitionDurationS must be finite and ≥ 0');

  // ORIGINAL: PS3.3 A.59.1 treats the Cartesian volume resampled from the acquisition geometry
  // as the acquisition's own product; VOLUME (value 3, C.8.16.1.3) since frames form a volume.
  const imageType = ['ORIGINAL', 'PRIMARY', 'VOLUME', 'NONE'];
  const orientationPatient = [...apply(volumeToPatient, [1, 0, 0], 0), ...apply(volumeToPatient, [0, 1, 0], 0)];

  const shared: NaturalizedDataset = {
    PixelMeasuresSequence: [{ PixelSpacing: [ds(sy), ds(sx)], SliceThickness: ds(sz), SpacingBetweenSlices: ds(sz) }],
    PlaneOrientationVolumeSequence: [{ ImageOrientationVolume: [1, 0, 0, 0, 1, 0] }],
    PlaneOrientationSequence: [{ ImageOrientationPatient: orientationPatient.map(ds) }],
    FrameVOILUTSequence: [{ WindowCenter: '127.5', WindowWidth: '256' }],
    ImageDataTypeSequence: [{ DataType: 'TISSUE_INTENSITY', AliasedDataType: 'NO' }],
    USImageDescriptionSequence: [{ FrameType: imageType, VolumetricProperties: 'VOLUME', VolumeBasedCalculationTechnique: 'NONE' }],
  };
  const perFrame: NaturalizedDataset[] = [];
  for (let k = 0; k < nz; k++) {
    const posVolume: [number, number, number] = [o.x, o.y, o.z + k * sz];
    perFrame.push({
      FrameContentSequence: [
        {
          // Every plane of a resampled volume draws on the whole sweep: same times for all.
          FrameAcquisitionDateTime: acq.dt,
          FrameReferenceDateTime: acq.dt,
          FrameAcquisitionDuration: durationS * 1000,
          TemporalPositionIndex: 1,
          DimensionIndexValues: [1, k + 1, 1],
        },
      ],
      PlanePositionVolumeSequence: [{ ImagePositionVolume: posVolume }],
      PlanePositionSequence: [{ ImagePositionPatient: apply(volumeToPatient, posVolume, 1).map(ds) }],
    });
  }

  const dataset: NaturalizedDataset = {
    ...commonModules(input, ENHANCED_US_VOLUME_SOP_CLASS_UID),
    // Frame of Reference + Ultrasound Frame of Reference (PS3.3 C.7.4.1, C.8.24.2)
    FrameOfReferenceUID: checkUid('frameOfReferenceUid', input.frameOfReferenceUid),
    PositionReferenceIndicator: '',
    VolumeFrameOfReferenceUID: checkUid('volumeFrameOfReferenceUid', input.volumeFrameOfReferenceUid),
    // PATIENT: the robot knows where the patient lies, so planes are placed in patient space.
    UltrasoundAcquisitionGeometry: 'PATIENT',
    VolumeToTransducerRelationship: input.volumeToTransducerRelationship,
    VolumeToTransducerMappingMatrix: volumeToTransducer,
    PatientFrameOfReferenceSource: 'TABLE',
    TableFrameOfReferenceUID: checkUid('tableFrameOfReferenceUid', input.tableFrameOfReferenceUid),
    VolumeToTableMappingMatrix: volumeToTable,
    // Synchronization (C.7.4.2)
    SynchronizationFrameOfReferenceUID: checkUid('synchronizationFrameOfReferenceUid', input.synchronizationFrameOfReferenceUid),
    SynchronizationTrigger: 'NO TRIGGER',
    AcquisitionTimeSynchronized: 'N',
    // Enhanced US Image (C.8.24.3)
    ImageType: imageType,
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    Rows: ny,
    Columns: nx,
    DimensionOrganizationType: '3D',
    AcquisitionDateTime: acq.dt,
    AcquisitionDuration: durationS,
    // The probe is held and moved by the robot arm, whose joint encoders give its position.
    PositionMeasuringDeviceUsed: 'RIGID',
    LossyImageCompression: '00',
    BurnedInAnnotation: 'NO',
    RecognizableVisualFeatures: 'NO',
    PresentationLUTShape: 'IDENTITY',
    // Pixel values are the stored echo intensities (Real World Value Mapping could say more).
    RescaleIntercept: '0',
    RescaleSlope: '1',
    AnatomicRegionSequence: [code(input.anatomicRegion)],
    ViewCodeSequence: [code(input.scan.view)],
    // General Image: the row and column directions as patient-orientation letters.
    PatientOrientation: [patientOrientationLetters(orientationPatient.slice(0, 3)), patientOrientationLetters(orientationPatient.slice(3, 6))],
    TransducerData: input.transducer.description,
    TransducerScanPatternCodeSequence: [code(input.transducer.scanPattern)],
    TransducerGeometryCodeSequence: [code(input.transducer.geometry)],
    TransducerBeamSteeringCodeSequence: input.transducer.beamSteering.map(code),
    TransducerApplicationCodeSequence: [code(input.transducer.application)],
    ProcessingFunction: input.scan.processingFunction,
    MechanicalIndex: ds(input.scan.mechanicalIndex),
    BoneThermalIndex: ds(input.scan.boneThermalIndex),
    CranialThermalIndex: ds(input.scan.cranialThermalIndex),
    SoftTissueThermalIndex: ds(input.scan.softTissueThermalIndex),
    DepthsOfFocus: [...input.scan.depthsOfFocusMm],
    DepthOfScanField: String(Math.round(input.scan.depthOfScanFieldMm)),
    // Acquisition Context (C.7.6.14): Type 2, nothing to say.
    AcquisitionContextSequence: [],
    // Multi-frame Dimension (C.7.6.17) with the three dimensions of PS3.3 C.8.24.3.3:
    // temporal position, Image Position (Volume), Data Type — in that order, even when (as for
    // one volume of one data type) the first and last are constant.
    DimensionOrganizationSequence: [{ DimensionOrganizationUID: checkUid('dimensionOrganizationUid', input.dimensionOrganizationUid) }],
    DimensionIndexSequence: [
      { DimensionOrganizationUID: input.dimensionOrganizationUid, DimensionIndexPointer: TAG.TemporalPositionIndex, FunctionalGroupPointer: TAG.FrameContentSequence, DimensionDescriptionLabel: 'Temporal Position' },
      { DimensionOrganizationUID: input.dimensionOrganizationUid, DimensionIndexPointer: TAG.ImagePositionVolume, FunctionalGroupPointer: TAG.PlanePositionVolumeSequence, DimensionDescriptionLabel: 'Image Position (Volume)' },
      { DimensionOrganizationUID: input.dimensionOrganizationUid, DimensionIndexPointer: TAG.DataType, FunctionalGroupPointer: TAG.ImageDataTypeSequence, DimensionDescriptionLabel: 'Data Type' },
    ],
    // Multi-frame Functional Groups (C.7.6.16)
    NumberOfFrames: nz,
    SharedFunctionalGroupsSequence: [shared],
    PerFrameFunctionalGroupsSequence: perFrame,
    // Image Pixel: the slices are the frames, so the voxels are the pixel data as they are.
    PixelData: evenArrayBuffer(data),
    // 8-bit pixels are OB in Explicit VR (PS3.5 8.2); dcmjs would guess OW.
    _vrMap: { PixelData: 'OB' },
  };
  return writePart10(ENHANCED_US_VOLUME_SOP_CLASS_UID, input.sopInstanceUid, dataset);
}

// ---------------------------------------------------------------------------------------------
// Ultrasound Multi-frame Image

/** Encodes the recorded B-mode frames as an Ultrasound Multi-frame Image Part-10 file. */
export function encodeUsMultiframe(input: UsMultiframeInput): Uint8Array {
  const frames = input.frames;
  const first = frames[0];
  if (first === undefined) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'no frames to encode');
  const { width, height } = first;
  if (!(Number.isInteger(width) && Number.isInteger(height) && width >= 1 && height >= 1 && width <= 65535 && height <= 65535)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `bad frame size ${width}×${height}`);
  }
  const frameBytes = width * height;
  const pixels = new Uint8Array(frameBytes * frames.length + ((frameBytes * frames.length) % 2));
  const frameTimeVectorMs: string[] = [];
  frames.forEach((f, i) => {
    if (f.width !== width || f.height !== height || f.pixels.length !== frameBytes) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${i}: ${f.width}×${f.height} (${f.pixels.length} bytes), expected ${width}×${height}`);
    }
    // Rounded to the microsecond: a difference of two float times carries noise (33.3 - 0 fine,
    // 138.3 - 100 = 38.30000000000001) that would otherwise fill the 16 DS characters.
    const dtMs = i === 0 ? 0 : Math.round((f.tMs - frames[i - 1]!.tMs) * 1000) / 1000;
    if (!Number.isFinite(dtMs) || dtMs < 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `frame ${i}: time goes backwards or is not finite`);
    // Frame Time Vector (C.7.6.5.1.2): first value 0, then the time since the previous frame, ms.
    frameTimeVectorMs.push(ds(dtMs));
    pixels.set(f.pixels, i * frameBytes);
  });
  const { x: pxMm, y: pyMm } = input.pixelSpacingMm;
  if (!(Number.isFinite(pxMm) && Number.isFinite(pyMm) && pxMm > 0 && pyMm > 0)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'pixelSpacingMm must be finite and positive');
  const acq = dicomDateTime('acquisitionDateTime', input.acquisitionDateTime);
  const spanMs = frames[frames.length - 1]!.tMs - first.tMs;

  const dataset: NaturalizedDataset = {
    ...commonModules(input, US_MULTIFRAME_SOP_CLASS_UID),
    // General Image (C.7.6.1); US frames have no patient orientation of their own.
    PatientOrientation: '',
    AcquisitionDateTime: acq.dt,
    BurnedInAnnotation: 'NO',
    // US Image (C.8.5.6): values 3 (exam type) and 4 (mode bit map) are optional; an empty
    // value 3 draws a dciodvfy warning, so both are left out.
    ImageType: ['ORIGINAL', 'PRIMARY'],
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    BitsAllocated: 8,
    BitsStored: 8,
    HighBit: 7,
    PixelRepresentation: 0,
    Rows: height,
    Columns: width,
    LossyImageCompression: '00',
    // Multi-frame (C.7.6.6) + Cine (C.7.6.5): tracked frames come at irregular times, so the
    // vector form, not a constant Frame Time.
    NumberOfFrames: frames.length,
    FrameIncrementPointer: TAG.FrameTimeVector,
    FrameTimeVector: frameTimeVectorMs,
    ActualFrameDuration: frames.length > 1 ? Math.round(spanMs / (frames.length - 1)) : 0,
    // US Region Calibration (C.8.5.5): one region over the whole frame carrying the pixel size.
    SequenceOfUltrasoundRegions: [
      {
        RegionSpatialFormat: 1, // 2D
        RegionDataType: 1, // tissue
        RegionFlags: 0,
        RegionLocationMinX0: 0,
        RegionLocationMinY0: 0,
        RegionLocationMaxX1: width - 1,
        RegionLocationMaxY1: height - 1,
        PhysicalUnitsXDirection: 3, // cm
        PhysicalUnitsYDirection: 3, // cm
        PhysicalDeltaX: pxMm / 10,
        PhysicalDeltaY: pyMm / 10,
      },
    ],
    AnatomicRegionSequence: [code(input.anatomicRegion)],
    PixelData: pixels.buffer,
    _vrMap: { PixelData: 'OB' },
  };
  if (input.frameOfReferenceUid !== undefined) {
    dataset.FrameOfReferenceUID = checkUid('frameOfReferenceUid', input.frameOfReferenceUid);
    dataset.PositionReferenceIndicator = '';
  }
  return writePart10(US_MULTIFRAME_SOP_CLASS_UID, input.sopInstanceUid, dataset);
}

// ---------------------------------------------------------------------------------------------
// Reading our Enhanced US Volumes back

function bad(problem: string, cause?: unknown): Eco3dError {
  const where = 'Enhanced US Volume';
  return new Eco3dError('ECO3D_ERR_BAD_FILE', `${where}: ${problem}`, cause === undefined ? { details: { file: where } } : { details: { file: where }, cause });
}

function num(v: unknown, what: string): number {
  const x = Array.isArray(v) ? (v as unknown[])[0] : v;
  const n = typeof x === 'string' ? Number(x.trim()) : x;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw bad(`${what} is missing or not a number`);
  return n;
}

function nums(v: unknown, count: number, what: string): number[] {
  if (!Array.isArray(v) || v.length !== count) throw bad(`${what} must have ${count} values`);
  return v.map((x, i) => num(x, `${what}[${i}]`));
}

function item(v: unknown, what: string): NaturalizedDataset {
  const first: unknown = Array.isArray(v) ? (v as unknown[])[0] : v;
  if (typeof first !== 'object' || first === null) throw bad(`${what} is missing`);
  return first as NaturalizedDataset;
}

function str(v: unknown): string {
  const x: unknown = Array.isArray(v) ? (v as unknown[])[0] : v;
  return typeof x === 'string' ? x.trim() : '';
}

/**
 * Reads an Enhanced US Volume written by `encodeEnhancedUsVolume` (8-bit, native, axis-aligned
 * frames) back into a Volume. Anything else — not DICOM, truncated, another SOP class, a layout
 * we do not write — is `ECO3D_ERR_BAD_FILE` naming what is wrong.
 */
export function decodeEnhancedUsVolume(bytes: Uint8Array): DecodedUsVolume {
  if (bytes.length < 132) throw bad(`${bytes.length} bytes: too short for a DICOM file`);
  if (bytes[128] !== 0x44 || bytes[129] !== 0x49 || bytes[130] !== 0x43 || bytes[131] !== 0x4d) throw bad('no DICM prefix: not a DICOM Part-10 file');
  // dcmjs reads from an ArrayBuffer; hand it exactly these bytes (no copy when they are a whole buffer).
  const ab = bytes.byteOffset === 0 && bytes.buffer instanceof ArrayBuffer && bytes.buffer.byteLength === bytes.byteLength ? bytes.buffer : bytes.slice().buffer;
  let ds0: NaturalizedDataset;
  let transferSyntax: string;
  try {
    const dict = dcmjs.data.DicomMessage.readFile(ab, { noCopy: true });
    transferSyntax = str(dict.meta['00020010']?.Value);
    ds0 = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  } catch (err) {
    throw bad(`cannot parse: ${err instanceof Error ? err.message : String(err)} (truncated or corrupt)`, err);
  }
  if (transferSyntax !== EXPLICIT_VR_LITTLE_ENDIAN_UID) throw bad(`transfer syntax ${transferSyntax || '(none)'}: only Explicit VR Little Endian is read`);
  const sopClass = str(ds0.SOPClassUID);
  if (sopClass !== ENHANCED_US_VOLUME_SOP_CLASS_UID) throw bad(`SOP Class ${sopClass || '(none)'} is not Enhanced US Volume`);
  if (num(ds0.BitsAllocated, 'Bits Allocated') !== 8 || num(ds0.SamplesPerPixel, 'Samples per Pixel') !== 1) throw bad('only 8-bit single-sample pixels are read');
  const nx = num(ds0.Columns, 'Columns');
  const ny = num(ds0.Rows, 'Rows');
  const nz = num(ds0.NumberOfFrames, 'Number of Frames');
  if (![nx, ny, nz].every((n) => Number.isInteger(n) && n >= 1)) throw bad(`bad size ${nx}×${ny}×${nz}`);

  const shared = item(ds0.SharedFunctionalGroupsSequence, 'Shared Functional Groups Sequence');
  const perFrame = ds0.PerFrameFunctionalGroupsSequence;
  if (!Array.isArray(perFrame) || perFrame.length !== nz) throw bad(`Per-frame Functional Groups Sequence has ${Array.isArray(perFrame) ? perFrame.length : 0} items, Number of Frames is ${nz}`);
  const measures = item(shared.PixelMeasuresSequence, 'Pixel Measures Sequence');
  const [rowSpacing, colSpacing] = nums(measures.PixelSpacing, 2, 'Pixel Spacing');
  const orientation = nums(item(shared.PlaneOrientationVolumeSequence, 'Plane Orientation (Volume) Sequence').ImageOrientationVolume, 6, 'Image Orientation (Volume)');
  if (orientation.some((v, i) => Math.abs(v - [1, 0, 0, 0, 1, 0][i]!) > 1e-9)) throw bad(`Image Orientation (Volume) ${orientation.join('\\')} is not axis-aligned`);
  const positions = (perFrame as unknown[]).map((f, k) =>
    nums(item(item(f, `frame ${k + 1}`).PlanePositionVolumeSequence, `frame ${k + 1}: Plane Position (Volume) Sequence`).ImagePositionVolume, 3, `frame ${k + 1}: Image Position (Volume)`),
  );
  const p0 = positions[0]!;
  let sz = num(measures.SpacingBetweenSlices ?? measures.SliceThickness, 'Spacing Between Slices');
  if (nz > 1) sz = positions[1]![2]! - p0[2]!;
  positions.forEach((p, k) => {
    if (Math.abs(p[0]! - p0[0]!) > 1e-6 || Math.abs(p[1]! - p0[1]!) > 1e-6 || Math.abs(p[2]! - (p0[2]! + k * sz)) > 1e-6 * Math.max(1, Math.abs(sz) * nz)) {
      throw bad(`frame ${k + 1}: Image Position (Volume) ${p.join('\\')} is off the regular grid`);
    }
  });
  if (!(sz > 0)) throw bad(`frames are not in increasing z (spacing ${sz} mm)`);

  const px = ds0.PixelData;
  // With noCopy dcmjs gives views into the file buffer, otherwise ArrayBuffers: accept both.
  const parts = (Array.isArray(px) ? (px as unknown[]) : [px]).flatMap((b) =>
    b instanceof ArrayBuffer ? [new Uint8Array(b)] : ArrayBuffer.isView(b) ? [new Uint8Array(b.buffer, b.byteOffset, b.byteLength)] : [],
  );
  const have = parts.reduce((s, b) => s + b.byteLength, 0);
  const need = nx * ny * nz;
  if (have < need) throw bad(`Pixel Data has ${have} bytes, ${nx}×${ny}×${nz} needs ${need} (truncated)`);
  // Copy out: the result must not alias the caller's file buffer (read with noCopy).
  const data = new Uint8Array(need);
  let off = 0;
  for (const b of parts) {
    if (off >= need) break;
    const n = Math.min(b.byteLength, need - off);
    data.set(b.subarray(0, n), off);
    off += n;
  }
  return {
    volume: {
      grid: { dims: [nx, ny, nz], spacingMm: { x: colSpacing!, y: rowSpacing!, z: sz }, originMm: { x: p0[0]!, y: p0[1]!, z: p0[2]! } },
      data,
    },
    sopInstanceUid: str(ds0.SOPInstanceUID),
    studyInstanceUid: str(ds0.StudyInstanceUID),
    seriesInstanceUid: str(ds0.SeriesInstanceUID),
  };
}

// Measurements made on a reconstructed volume, as a DICOM Structured Report: Comprehensive 3D SR
// Storage (PS3.3 A.35.13, SOP Class 1.2.840.10008.5.1.4.1.1.88.34) whose content follows PS3.16
// TID 1500 "Measurement Report", written as an Explicit VR Little Endian Part-10 file.
//
// Why Comprehensive 3D SR: our points live in the volume's 3D frame (mm), and only the 3D SR
// classes carry SCOORD3D, i.e. coordinates tied to a Frame of Reference rather than to pixels of
// one image. Each measurement becomes one Measurement Group (TID 1501) under "Imaging
// Measurements", holding one NUM (TID 300) with UCUM units, INFERRED FROM the SCOORD3D the user
// drew (TID 320): POLYLINE for a distance, closed POLYGON for an area.
//
// Like dicom-us.ts the encoder is pure: every UID and time is an input, so the same input gives
// the same bytes. The few value helpers of dicom-us.ts are private there (and that file is not
// ours to change here), so this file keeps its own small copies.
import type { NaturalizedDataset } from 'dcmjs';
import { checkUid, code, dicomDateTime, ds, patientAndStudy, writePart10 } from './dicom-part10.ts';
import type { CodedConcept, DicomUsCommon } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

export const COMPREHENSIVE_3D_SR_SOP_CLASS_UID = '1.2.840.10008.5.1.4.1.1.88.34';

// ---------------------------------------------------------------------------------------------
// Inputs

export interface PointMm {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

export type MeasurementPlane = 'axial' | 'sagittal' | 'coronal';

export type SrMeasurement =
  | {
      readonly kind: 'distance';
      /** The length, mm (the caller's value: a path length for a polyline of > 2 points). */
      readonly valueMm: number;
      readonly plane: MeasurementPlane;
      /** ≥ 2 points in the referenced Frame of Reference (mm), in drawing order. */
      readonly pointsMm: readonly PointMm[];
      readonly label?: string | undefined;
    }
  | {
      readonly kind: 'area';
      readonly valueMm2: number;
      readonly plane: MeasurementPlane;
      /** The outline, ≥ 3 distinct points (mm); closing it (last = first) is optional. */
      readonly pointsMm: readonly PointMm[];
      readonly label?: string | undefined;
    };

/** The Enhanced US Volume the measurements were made on. */
export interface SrReferencedVolume {
  readonly sopClassUid: string;
  readonly sopInstanceUid: string;
  readonly seriesInstanceUid: string;
  /**
   * The Frame of Reference the `pointsMm` are in, written as the SCOORD3D Referenced Frame of
   * Reference UID. Our points are in the volume grid's frame (the Reference frame), so for an
   * Eco3D volume this is its Volume Frame of Reference UID, not the patient Frame of Reference.
   */
  readonly frameOfReferenceUid: string;
}

/**
 * Study, patient, equipment and the SR's own series/instance (an SR is in a series of its own,
 * Modality SR). Acquisition-only fields of `DicomUsCommon` (region, laterality, acquisition time)
 * do not apply to a report.
 */
export interface MeasurementReportInput
  extends Pick<DicomUsCommon, 'patient' | 'study' | 'equipment' | 'seriesInstanceUid' | 'seriesNumber' | 'seriesDescription' | 'sopInstanceUid' | 'instanceNumber' | 'contentDateTime'> {
  /** Device Observer UID (TID 1004): identifies the Eco3D system that made the measurements. */
  readonly deviceObserverUid: string;
  /** Procedure reported (TID 1500 row 4), e.g. SCT 16310003 "Ultrasonography". */
  readonly procedureReported: CodedConcept;
  readonly referencedVolume: SrReferencedVolume;
  /** May be empty when the report carries findings. */
  readonly measurements: readonly SrMeasurement[];
  /** The reading physician's text (TID 1500 Qualitative Evaluations: Finding, Conclusion). */
  readonly findings?: string | undefined;
  readonly conclusion?: string | undefined;
  /** A signed report: VERIFIED, with its verifying observer (PS3.3 C.17.2). Absent: UNVERIFIED. */
  readonly verification?: { readonly observerName: string; readonly organization: string; readonly dateTime: string } | undefined;
  /** The SR this one amends (Predecessor Documents Sequence); it is in the same study. */
  readonly predecessor?: { readonly seriesInstanceUid: string; readonly sopInstanceUid: string } | undefined;
}

// ---------------------------------------------------------------------------------------------
// Codes (PS3.16)

const C = {
  measurementReport: { value: '126000', scheme: 'DCM', meaning: 'Imaging Measurement Report' },
  qualitativeEvaluations: { value: 'C0034375', scheme: 'UMLS', meaning: 'Qualitative Evaluations' },
  finding: { value: '121071', scheme: 'DCM', meaning: 'Finding' },
  conclusion: { value: '121077', scheme: 'DCM', meaning: 'Conclusion' },
  language: { value: '121049', scheme: 'DCM', meaning: 'Language of Content Item and Descendants' },
  english: { value: 'en-US', scheme: 'RFC5646', meaning: 'English (United States)' },
  observerType: { value: '121005', scheme: 'DCM', meaning: 'Observer Type' },
  device: { value: '121007', scheme: 'DCM', meaning: 'Device' },
  deviceObserverUid: { value: '121012', scheme: 'DCM', meaning: 'Device Observer UID' },
  deviceObserverName: { value: '121013', scheme: 'DCM', meaning: 'Device Observer Name' },
  deviceObserverManufacturer: { value: '121014', scheme: 'DCM', meaning: 'Device Observer Manufacturer' },
  deviceObserverModelName: { value: '121015', scheme: 'DCM', meaning: 'Device Observer Model Name' },
  deviceObserverSerialNumber: { value: '121016', scheme: 'DCM', meaning: 'Device Observer Serial Number' },
  procedureReported: { value: '121058', scheme: 'DCM', meaning: 'Procedure reported' },
  imagingMeasurements: { value: '126010', scheme: 'DCM', meaning: 'Imaging Measurements' },
  measurementGroup: { value: '125007', scheme: 'DCM', meaning: 'Measurement Group' },
  trackingIdentifier: { value: '112039', scheme: 'DCM', meaning: 'Tracking Identifier' },
  length: { value: '410668003', scheme: 'SCT', meaning: 'Length' },
  area: { value: '42798000', scheme: 'SCT', meaning: 'Area' },
  mm: { value: 'mm', scheme: 'UCUM', meaning: 'millimeter' },
  mm2: { value: 'mm2', scheme: 'UCUM', meaning: 'square millimeter' },
} as const satisfies Record<string, CodedConcept>;

// ---------------------------------------------------------------------------------------------
// Value checks (the conversions are dicom-part10.ts's)

function bad(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

// ---------------------------------------------------------------------------------------------
// Content items (PS3.3 C.17.3)

type Relationship = 'CONTAINS' | 'HAS OBS CONTEXT' | 'HAS CONCEPT MOD' | 'INFERRED FROM';

function codeItem(rel: Relationship, name: CodedConcept, value: CodedConcept): NaturalizedDataset {
  return { RelationshipType: rel, ValueType: 'CODE', ConceptNameCodeSequence: [code(name)], ConceptCodeSequence: [code(value)] };
}

function textItem(rel: Relationship, name: CodedConcept, value: string): NaturalizedDataset {
  return { RelationshipType: rel, ValueType: 'TEXT', ConceptNameCodeSequence: [code(name)], TextValue: value };
}

function uidItem(rel: Relationship, name: CodedConcept, uid: string): NaturalizedDataset {
  return { RelationshipType: rel, ValueType: 'UIDREF', ConceptNameCodeSequence: [code(name)], UID: uid };
}

function pointValues(name: string, points: readonly PointMm[]): number[] {
  const out: number[] = [];
  points.forEach((p, i) => {
    for (const v of [p?.x, p?.y, p?.z]) {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${name}: point ${i} is not three finite numbers`);
      // GraphicData is FL (float32): a coordinate beyond its range would be written as Infinity.
      if (Math.abs(v) > 3.4e38) throw bad(`${name}: point ${i} is out of the float32 range`);
      out.push(v);
    }
  });
  return out;
}

/** One measurement → a TID 1501 Measurement Group with a TID 300 NUM and its TID 320 SCOORD3D. */
function measurementGroup(m: SrMeasurement, index: number, frameOfReferenceUid: string): NaturalizedDataset {
  const name = `measurements[${index}]`;
  if (m === null || typeof m !== 'object') throw bad(`${name}: not an object`);
  if (!['axial', 'sagittal', 'coronal'].includes(m.plane)) throw bad(`${name}: plane must be axial, sagittal or coronal`);
  // Checked through an `unknown` copy: Array.isArray would narrow the readonly array to any[].
  const pointsIn: unknown = m.pointsMm;
  if (!Array.isArray(pointsIn)) throw bad(`${name}: pointsMm must be an array`);
  let value: number;
  let concept: CodedConcept;
  let units: CodedConcept;
  let graphicType: 'POLYLINE' | 'POLYGON';
  let points = pointValues(name, m.pointsMm);
  switch (m.kind) {
    case 'distance':
      value = m.valueMm;
      concept = C.length;
      units = C.mm;
      graphicType = 'POLYLINE';
      if (m.pointsMm.length < 2) throw bad(`${name}: a distance needs at least 2 points`);
      break;
    case 'area': {
      value = m.valueMm2;
      concept = C.area;
      units = C.mm2;
      graphicType = 'POLYGON';
      const first = m.pointsMm[0];
      const last = m.pointsMm[m.pointsMm.length - 1];
      const closed = first !== undefined && last !== undefined && m.pointsMm.length > 1 && first.x === last.x && first.y === last.y && first.z === last.z;
      // Three distinct vertices are the least that encloses an area.
      const distinct = new Set(m.pointsMm.map((p) => `${p.x},${p.y},${p.z}`)).size;
      if (distinct < 3) throw bad(`${name}: an area needs a polygon of at least 3 distinct points`);
      // PS3.3 C.18.9.1.2: a SCOORD3D POLYGON's first and last points are the same.
      if (!closed) points = [...points, ...points.slice(0, 3)];
      break;
    }
    default:
      throw bad(`${name}: kind must be distance or area`);
  }
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw bad(`${name}: the value must be a finite number ≥ 0`);

  const plane = m.plane;
  const label = m.label ?? `${m.kind} ${index + 1}`;
  if (typeof label !== 'string' || label.length === 0 || label.length > 1024) throw bad(`${name}: label must be 1..1024 characters`);
  return {
    RelationshipType: 'CONTAINS',
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code(C.measurementGroup)],
    ContinuityOfContent: 'SEPARATE',
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '1501' }],
    ContentSequence: [
      // The view plane has no code here yet, so it travels in the human-readable identifier.
      textItem('HAS OBS CONTEXT', C.trackingIdentifier, `${label} (${plane})`),
      {
        RelationshipType: 'CONTAINS',
        ValueType: 'NUM',
        ConceptNameCodeSequence: [code(concept)],
        MeasuredValueSequence: [{ NumericValue: ds(value), MeasurementUnitsCodeSequence: [code(units)] }],
        ContentSequence: [
          {
            // TID 320: the coordinates the value was computed from; no concept name (C.17.3.2.1
            // requires one only for CONTAINS/HAS OBS CONTEXT/HAS CONCEPT MOD/… relations).
            RelationshipType: 'INFERRED FROM',
            ValueType: 'SCOORD3D',
            ReferencedFrameOfReferenceUID: frameOfReferenceUid,
            GraphicType: graphicType,
            GraphicData: points,
          },
        ],
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// The report

/**
 * The modules every TID 1500 Comprehensive 3D SR of ours has around its content tree (the
 * physician's report here, a plugin's results in ai-results.ts): SOP Common, Patient and General
 * Study, SR Document Series, General and Enhanced General Equipment, SR Document General
 * (COMPLETE, UNVERIFIED) with the referenced volume as evidence, and the TID 1500 root container.
 * The caller adds its ContentSequence and anything of its own.
 */
export function srDocumentModules(
  input: Pick<MeasurementReportInput, 'patient' | 'study' | 'equipment' | 'seriesInstanceUid' | 'seriesNumber' | 'instanceNumber' | 'contentDateTime'> & {
    readonly sopInstanceUid: string;
    readonly seriesDescription?: string | undefined;
    readonly procedureReported: CodedConcept;
    readonly referencedVolume: Pick<SrReferencedVolume, 'sopClassUid' | 'sopInstanceUid' | 'seriesInstanceUid'>;
  },
): NaturalizedDataset {
  const content = dicomDateTime('contentDateTime', input.contentDateTime);
  const eq = input.equipment;
  const vol = input.referencedVolume;
  if (eq.softwareVersions.length === 0) throw bad('equipment.softwareVersions: at least one is required (Enhanced General Equipment, Type 1)');
  if (!Number.isInteger(input.instanceNumber) || !Number.isInteger(input.seriesNumber)) throw bad('seriesNumber and instanceNumber must be integers');
  const dataset: NaturalizedDataset = {
    // SOP Common. UTF-8 so that any patient name, label or finding survives.
    SpecificCharacterSet: 'ISO_IR 192',
    SOPClassUID: COMPREHENSIVE_3D_SR_SOP_CLASS_UID,
    SOPInstanceUID: checkUid('sopInstanceUid', input.sopInstanceUid),
    InstanceCreationDate: content.da,
    InstanceCreationTime: content.tm,
    TimezoneOffsetFromUTC: content.offset,
    // Patient and General Study: the volume's study (the evidence below is referenced within it).
    ...patientAndStudy(input),
    // SR Document Series (C.17.1): SR instances go in a series of their own.
    Modality: 'SR',
    SeriesInstanceUID: checkUid('seriesInstanceUid', input.seriesInstanceUid),
    SeriesNumber: input.seriesNumber,
    ReferencedPerformedProcedureStepSequence: [],
    // General + Enhanced General Equipment (the latter is mandatory in the 3D SR IODs).
    Manufacturer: eq.manufacturer,
    ManufacturerModelName: eq.modelName,
    DeviceSerialNumber: eq.deviceSerialNumber,
    SoftwareVersions: eq.softwareVersions.length === 1 ? eq.softwareVersions[0] : [...eq.softwareVersions],
    // SR Document General (C.17.2). COMPLETE/UNVERIFIED: the device (or algorithm) finished and
    // nobody has signed it off.
    InstanceNumber: input.instanceNumber,
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'UNVERIFIED',
    ContentDate: content.da,
    ContentTime: content.tm,
    PerformedProcedureCodeSequence: [code(input.procedureReported)],
    CurrentRequestedProcedureEvidenceSequence: [
      {
        StudyInstanceUID: input.study.studyInstanceUid,
        ReferencedSeriesSequence: [
          {
            SeriesInstanceUID: checkUid('referencedVolume.seriesInstanceUid', vol.seriesInstanceUid),
            ReferencedSOPSequence: [
              {
                ReferencedSOPClassUID: checkUid('referencedVolume.sopClassUid', vol.sopClassUid),
                ReferencedSOPInstanceUID: checkUid('referencedVolume.sopInstanceUid', vol.sopInstanceUid),
              },
            ],
          },
        ],
      },
    ],
    // SR Document Content (C.17.3): the root of TID 1500.
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: [code(C.measurementReport)],
    ContinuityOfContent: 'SEPARATE',
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '1500' }],
  };
  if (input.study.description !== undefined) dataset.StudyDescription = input.study.description;
  if (input.seriesDescription !== undefined) dataset.SeriesDescription = input.seriesDescription;
  if (eq.institutionName !== undefined) dataset.InstitutionName = eq.institutionName;
  if (eq.stationName !== undefined) dataset.StationName = eq.stationName;
  return dataset;
}

/** Encodes measurements on one volume as a TID 1500 Comprehensive 3D SR Part-10 file. */
export function encodeMeasurementReport(input: MeasurementReportInput): Uint8Array {
  const measurementsIn: unknown = input.measurements; // as for pointsMm above
  const findings = input.findings?.trim() ?? '';
  const conclusion = input.conclusion?.trim() ?? '';
  if (!Array.isArray(measurementsIn)) throw bad('measurements must be an array');
  if (input.measurements.length === 0 && findings === '' && conclusion === '') throw bad('a report needs at least one measurement, a finding or a conclusion');
  const vol = input.referencedVolume;
  const forUid = checkUid('referencedVolume.frameOfReferenceUid', vol.frameOfReferenceUid);
  const groups = input.measurements.map((m, i) => measurementGroup(m, i, forUid));
  const eq = input.equipment;
  const sopInstanceUid = checkUid('sopInstanceUid', input.sopInstanceUid);

  const observerContext: NaturalizedDataset[] = [
    // TID 1002/1004: the measurements come from the device (a person may verify them later).
    codeItem('HAS OBS CONTEXT', C.observerType, C.device),
    uidItem('HAS OBS CONTEXT', C.deviceObserverUid, checkUid('deviceObserverUid', input.deviceObserverUid)),
    textItem('HAS OBS CONTEXT', C.deviceObserverManufacturer, eq.manufacturer),
    textItem('HAS OBS CONTEXT', C.deviceObserverModelName, eq.modelName),
    textItem('HAS OBS CONTEXT', C.deviceObserverSerialNumber, eq.deviceSerialNumber),
  ];
  if (eq.stationName !== undefined) observerContext.push(textItem('HAS OBS CONTEXT', C.deviceObserverName, eq.stationName));

  const dataset: NaturalizedDataset = {
    ...srDocumentModules(input),
    ContentSequence: [
      codeItem('HAS CONCEPT MOD', C.language, C.english),
      ...observerContext,
      codeItem('HAS CONCEPT MOD', C.procedureReported, input.procedureReported),
      ...(groups.length === 0
        ? []
        : [{ RelationshipType: 'CONTAINS', ValueType: 'CONTAINER', ConceptNameCodeSequence: [code(C.imagingMeasurements)], ContinuityOfContent: 'SEPARATE', ContentSequence: groups }]),
      ...(findings === '' && conclusion === ''
        ? []
        : [
            {
              RelationshipType: 'CONTAINS',
              ValueType: 'CONTAINER',
              ConceptNameCodeSequence: [code(C.qualitativeEvaluations)],
              ContinuityOfContent: 'SEPARATE',
              ContentSequence: [
                ...(findings === '' ? [] : [textItem('CONTAINS', C.finding, findings)]),
                ...(conclusion === '' ? [] : [textItem('CONTAINS', C.conclusion, conclusion)]),
              ],
            },
          ]),
    ],
  };
  if (input.verification !== undefined) {
    // Signed by a physician: VERIFIED, and who, for which organisation, when (C.17.2).
    const v = input.verification;
    const at = dicomDateTime('verification.dateTime', v.dateTime);
    dataset.VerificationFlag = 'VERIFIED';
    dataset.VerifyingObserverSequence = [
      { VerifyingObserverName: v.observerName, VerifyingObserverIdentificationCodeSequence: [], VerifyingOrganization: v.organization, VerificationDateTime: at.dt },
    ];
  }
  if (input.predecessor !== undefined) {
    dataset.PredecessorDocumentsSequence = [
      {
        StudyInstanceUID: input.study.studyInstanceUid,
        ReferencedSeriesSequence: [
          {
            SeriesInstanceUID: checkUid('predecessor.seriesInstanceUid', input.predecessor.seriesInstanceUid),
            ReferencedSOPSequence: [{ ReferencedSOPClassUID: COMPREHENSIVE_3D_SR_SOP_CLASS_UID, ReferencedSOPInstanceUID: checkUid('predecessor.sopInstanceUid', input.predecessor.sopInstanceUid) }],
          },
        ],
      },
    ];
  }
  return writePart10(COMPREHENSIVE_3D_SR_SOP_CLASS_UID, sopInstanceUid, dataset);
}

// What an analysis plugin's results become, per IHE AI Results (AIR): a DICOM SR whose content
// follows PS3.16 TID 1500 "Measurement Report", stored in the study beside the volume the plugin
// analysed, and the same values as FHIR R4 Observations for the EHR side.
//
// SOP Class: Comprehensive 3D SR (1.2.840.10008.5.1.4.1.1.88.34), not Enhanced SR. A result
// without SCOORD3D would be valid DICOM as Enhanced SR (88.22) too, but AIR encodes analysis
// results in Comprehensive 3D SR and its Image Display and Image Manager actors are required to
// handle that class, not Enhanced SR; it is also the class of our physicians' measurement reports
// (dicom-sr.ts), so archive and viewer treat both alike, and a later plugin result with a region
// in the volume (SCOORD3D) changes no class. Its price is the Enhanced General Equipment module
// (Type 1 manufacturer, model, serial number and software versions), which `equipment` provides.
//
// The tree (PS3.16 row numbers of TID 1500 in brackets):
//   CONTAINER (126000, DCM, "Imaging Measurement Report")                           [1]
//     HAS CONCEPT MOD Language = en-US (TID 1204)                                   [2]
//     HAS OBS CONTEXT Observer Type = Device; TID 1004 Device Observer: UID,        [3]
//       Name = plugin name, Manufacturer = vendor, Model Name = plugin id. TID 1004 has no
//       version row: the version is in each group's Algorithm Version (TID 4019) and in the
//       Contributing Equipment Sequence.
//     HAS CONCEPT MOD Procedure reported = the imaging procedure analysed (AIR:     [4]
//       not the algorithm)
//     CONTAINS Image Library (TID 1600): one group, one IMAGE entry = the volume    [5]
//     CONTAINS Imaging Measurements: one Measurement Group (TID 1501) per value     [6]
//       HAS OBS CONTEXT Tracking Identifier (TEXT) and Tracking Unique Identifier (UIDREF)
//       HAS CONCEPT MOD Algorithm Name, Algorithm Version (TID 4019)
//       CONTAINS NUM (TID 300), UCUM units, with an Observation UID
//         INFERRED FROM IMAGE (121112, DCM, "Source of Measurement") = the volume (TID 320)
//     CONTAINS Qualitative Evaluations: TEXT Finding (121071, DCM) per finding      [12]
//
// Plus, outside the tree: the Patient and General Study modules copied from the real study
// (patientAndStudy), the SR's own series (Modality SR), COMPLETE/UNVERIFIED (an algorithm's
// output that nobody has signed), the volume in the Current Requested Procedure Evidence
// Sequence, the plugin in the Contributing Equipment Sequence (AIR describes each algorithm that
// produced the results there: manufacturer, model name, software version, device UID), and the
// private coding scheme 99ECO3D in the Coding Scheme Identification Sequence when it is used.
//
// Pure: every UID and time is an input; the few UIDs derived here (tracking and observation
// UIDs) are name-based (SHA-256) on the SR's SOP Instance UID, so the same input gives the same
// bytes and the runner can retry a run idempotently.
import { createHash } from 'node:crypto';
import type { NaturalizedDataset } from 'dcmjs';
import type { CodeableConcept, Coding, Identifier, ImagingStudy, Observation, Patient, Reference } from '@medplum/fhirtypes';
import { checkUid, code, dicomDateTime, ds, writePart10 } from './dicom-part10.ts';
import { COMPREHENSIVE_3D_SR_SOP_CLASS_UID, srDocumentModules, type MeasurementReportInput, type SrReferencedVolume } from './dicom-sr.ts';
import { ENHANCED_US_VOLUME_SOP_CLASS_UID, US_MULTIFRAME_SOP_CLASS_UID, type CodedConcept } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';
import { codingFromDicom, fhirInstant, FHIR_SYSTEMS } from './fhir.ts';

/** The private coding scheme of plugin measurement names that carry no standard concept. */
export const ECO3D_PRIVATE_CODING_SCHEME = '99ECO3D';
/** The same codes in FHIR (Coding.system). */
export const ECO3D_PLUGIN_MEASUREMENT_SYSTEM = 'urn:eco3d:plugin-measurement';
/** At most this many measurements (and findings) per result. */
export const MAX_ALGORITHM_MEASUREMENTS = 64;
export const MAX_FINDING_CHARS = 1024;

// ---------------------------------------------------------------------------------------------
// Inputs

/** One value a plugin computed. */
export interface AlgorithmMeasurement {
  /** What was measured, as the plugin names it, e.g. "Lesion volume". */
  readonly name: string;
  readonly value: number;
  /** UCUM, e.g. `ml`, `mm`, `mm2`, `%`, `1` (no units). */
  readonly unit: string;
  /** A standard concept for it (e.g. SCT 118565006 "Volume"); absent: a 99ECO3D code of `name`. */
  readonly concept?: CodedConcept | undefined;
}

export interface AlgorithmFinding {
  /** At most 1024 characters. */
  readonly text: string;
}

/** The plugin (from its manifest) that produced the results. */
export interface AlgorithmIdentity {
  /** Manifest id, e.g. `com.example.lesion-volume`. */
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly vendorName: string;
  /** Device Observer UID: deterministic from the plugin id (`pluginDeviceObserverUid`). */
  readonly deviceObserverUid: string;
}

export interface AlgorithmResultReportInput
  extends Pick<MeasurementReportInput, 'patient' | 'study' | 'equipment' | 'seriesInstanceUid' | 'seriesNumber' | 'sopInstanceUid' | 'instanceNumber' | 'contentDateTime'> {
  /** Default `AI: <plugin name>`. */
  readonly seriesDescription?: string | undefined;
  /** The imaging procedure analysed (AIR: not the algorithm), e.g. SCT 16310003 "Ultrasonography". */
  readonly procedureReported: CodedConcept;
  readonly plugin: AlgorithmIdentity;
  /** The reconstructed volume the plugin analysed (in `study`). */
  readonly referencedVolume: Pick<SrReferencedVolume, 'sopClassUid' | 'sopInstanceUid' | 'seriesInstanceUid'>;
  readonly measurements: readonly AlgorithmMeasurement[];
  readonly findings?: readonly AlgorithmFinding[] | undefined;
}

/**
 * The Observations of the same results: what the SR input has (its `sopInstanceUid` is the
 * SR's, which the Observations point back to) plus the FHIR references.
 */
export interface AlgorithmObservationsInput
  extends Pick<AlgorithmResultReportInput, 'plugin' | 'measurements' | 'findings' | 'sopInstanceUid' | 'contentDateTime'> {
  readonly subject: Reference<Patient>;
  readonly imagingStudy: Reference<ImagingStudy>;
}

// ---------------------------------------------------------------------------------------------
// Codes (PS3.16)

const C = {
  measurementReport: { value: '126000', scheme: 'DCM', meaning: 'Imaging Measurement Report' },
  language: { value: '121049', scheme: 'DCM', meaning: 'Language of Content Item and Descendants' },
  english: { value: 'en-US', scheme: 'RFC5646', meaning: 'English (United States)' },
  observerType: { value: '121005', scheme: 'DCM', meaning: 'Observer Type' },
  device: { value: '121007', scheme: 'DCM', meaning: 'Device' },
  deviceObserverUid: { value: '121012', scheme: 'DCM', meaning: 'Device Observer UID' },
  deviceObserverName: { value: '121013', scheme: 'DCM', meaning: 'Device Observer Name' },
  deviceObserverManufacturer: { value: '121014', scheme: 'DCM', meaning: 'Device Observer Manufacturer' },
  deviceObserverModelName: { value: '121015', scheme: 'DCM', meaning: 'Device Observer Model Name' },
  procedureReported: { value: '121058', scheme: 'DCM', meaning: 'Procedure reported' },
  imageLibrary: { value: '111028', scheme: 'DCM', meaning: 'Image Library' },
  imageLibraryGroup: { value: '126200', scheme: 'DCM', meaning: 'Image Library Group' },
  modality: { value: '121139', scheme: 'DCM', meaning: 'Modality' },
  ultrasound: { value: 'US', scheme: 'DCM', meaning: 'Ultrasound' },
  imagingMeasurements: { value: '126010', scheme: 'DCM', meaning: 'Imaging Measurements' },
  measurementGroup: { value: '125007', scheme: 'DCM', meaning: 'Measurement Group' },
  trackingIdentifier: { value: '112039', scheme: 'DCM', meaning: 'Tracking Identifier' },
  trackingUid: { value: '112040', scheme: 'DCM', meaning: 'Tracking Unique Identifier' },
  algorithmName: { value: '111001', scheme: 'DCM', meaning: 'Algorithm Name' },
  algorithmVersion: { value: '111003', scheme: 'DCM', meaning: 'Algorithm Version' },
  sourceOfMeasurement: { value: '121112', scheme: 'DCM', meaning: 'Source of Measurement' },
  qualitativeEvaluations: { value: 'C0034375', scheme: 'UMLS', meaning: 'Qualitative Evaluations' },
  finding: { value: '121071', scheme: 'DCM', meaning: 'Finding' },
  // CID 7005. AIR names a provisional IHE code ("Processing Algorithm", scheme 99IHE) for this
  // purpose; until the standard has one we use the standard "Processing Equipment".
  processingEquipment: { value: '109102', scheme: 'DCM', meaning: 'Processing Equipment' },
} as const satisfies Record<string, CodedConcept>;

/** UCUM units we name; any other UCUM string is written with itself as meaning. */
const UCUM_MEANINGS: Readonly<Record<string, string>> = {
  mm: 'millimeter',
  cm: 'centimeter',
  mm2: 'square millimeter',
  cm2: 'square centimeter',
  mm3: 'cubic millimeter',
  cm3: 'cubic centimeter',
  ml: 'milliliter',
  mL: 'milliliter',
  l: 'liter',
  L: 'liter',
  '%': 'percent',
  '1': 'no units',
  s: 'second',
  ms: 'millisecond',
  Hz: 'hertz',
  'mm/s': 'millimeter per second',
  'cm/s': 'centimeter per second',
  deg: 'degree',
  g: 'gram',
  dB: 'decibel',
};

// ---------------------------------------------------------------------------------------------
// Checks and derived values

function bad(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

// Control characters break LO/SH values and have no business in a name or code.
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/u;

function text(name: string, value: unknown, maxChars: number): string {
  if (typeof value !== 'string' || !/\S/u.test(value)) throw bad(`${name}: must be a non-empty string`);
  const t = value.trim();
  if ([...t].length > maxChars) throw bad(`${name}: at most ${maxChars} characters`);
  return t;
}

/** A value for an SH/LO element: no control characters, no backslash (the value separator). */
function shortString(name: string, value: unknown, maxChars: number): string {
  const t = text(name, value, maxChars);
  if (CONTROL_RE.test(t) || t.includes('\\')) throw bad(`${name}: no control characters or backslash`);
  return t;
}

/** The first `maxChars` characters (code points) of `s`, for LO values. */
function clip(s: string, maxChars: number): string {
  const chars = [...s];
  return chars.length <= maxChars ? s : chars.slice(0, maxChars).join('');
}

function sha256(...parts: string[]): Buffer {
  return createHash('sha256').update(parts.join('\u001f'), 'utf8').digest();
}

/**
 * A UID from names (PS3.5 B.2: 2.25 + a UUID as a decimal integer); the UUID is name-based:
 * SHA-256 of the parts, cut to 128 bits with the RFC 9562 version 8 and variant bits set.
 */
function nameBasedUid(...parts: string[]): string {
  const b = sha256(...parts).subarray(0, 16);
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x80;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  return `2.25.${BigInt(`0x${b.toString('hex')}`).toString(10)}`;
}

/** The Device Observer UID of a plugin: the same id always gives the same UID. */
export function pluginDeviceObserverUid(pluginId: string): string {
  return nameBasedUid('eco3d-plugin-device', text('pluginId', pluginId, 255));
}

/**
 * The 99ECO3D code of a measurement name: value = up to 7 letters/digits of the name, `-` and 8
 * hex digits of its SHA-256 (≤ 16 characters: SH), so that the code is readable and two names
 * differing anywhere get different codes; meaning = the name, cut to 64 characters (LO).
 */
export function privateMeasurementConcept(name: string): CodedConcept {
  const n = text('name', name, 1024);
  const slug = n.normalize('NFKD').toUpperCase().replace(/[^A-Z0-9]/g, '').slice(0, 7);
  const hash = sha256('eco3d-measurement-name', n).toString('hex').slice(0, 8).toUpperCase();
  return { value: `${slug === '' ? 'M' : slug}-${hash}`, scheme: ECO3D_PRIVATE_CODING_SCHEME, meaning: clip(n.replace(/\\/g, '/'), 64) };
}

function checkConcept(name: string, c: CodedConcept): CodedConcept {
  if (c === null || typeof c !== 'object') throw bad(`${name}: not a coded concept`);
  return { value: shortString(`${name}.value`, c.value, 16), scheme: shortString(`${name}.scheme`, c.scheme, 16), meaning: shortString(`${name}.meaning`, c.meaning, 64) };
}

interface CheckedMeasurement {
  readonly name: string;
  readonly value: number;
  /** The DS string written in the SR; the FHIR value is the same number. */
  readonly ds: string;
  readonly concept: CodedConcept;
  readonly units: CodedConcept;
}

// UCUM codes are printable ASCII without spaces; CodeValue (SH) holds 16 characters.
const UCUM_RE = /^[!-[\]-~]{1,16}$/;

function checkMeasurements(list: unknown): CheckedMeasurement[] {
  if (!Array.isArray(list)) throw bad('measurements must be an array');
  if (list.length > MAX_ALGORITHM_MEASUREMENTS) throw bad(`at most ${MAX_ALGORITHM_MEASUREMENTS} measurements, got ${list.length}`);
  return list.map((m: AlgorithmMeasurement, i): CheckedMeasurement => {
    const at = `measurements[${i}]`;
    if (m === null || typeof m !== 'object') throw bad(`${at}: not an object`);
    const name = text(`${at}.name`, m.name, 1024);
    if (CONTROL_RE.test(name)) throw bad(`${at}.name: no control characters`);
    if (typeof m.value !== 'number' || !Number.isFinite(m.value)) throw bad(`${at}.value: must be a finite number`);
    if (typeof m.unit !== 'string' || !UCUM_RE.test(m.unit)) throw bad(`${at}.unit: a UCUM code of 1 to 16 printable characters, got ${JSON.stringify(m.unit)}`);
    const value = ds(m.value);
    return {
      name,
      value: Number(value),
      ds: value,
      concept: m.concept === undefined ? privateMeasurementConcept(name) : checkConcept(`${at}.concept`, m.concept),
      units: { value: m.unit, scheme: 'UCUM', meaning: UCUM_MEANINGS[m.unit] ?? m.unit },
    };
  });
}

function checkFindings(list: unknown): string[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw bad('findings must be an array');
  if (list.length > MAX_ALGORITHM_MEASUREMENTS) throw bad(`at most ${MAX_ALGORITHM_MEASUREMENTS} findings, got ${list.length}`);
  return list.map((f: AlgorithmFinding, i) => text(`findings[${i}].text`, f?.text, MAX_FINDING_CHARS));
}

interface CheckedPlugin {
  readonly id: string;
  readonly name: string;
  readonly version: string;
  readonly vendorName: string;
  readonly deviceObserverUid: string;
}

function checkPlugin(p: AlgorithmIdentity): CheckedPlugin {
  if (p === null || typeof p !== 'object') throw bad('plugin: not an object');
  return {
    id: shortString('plugin.id', p.id, 255),
    name: shortString('plugin.name', p.name, 200),
    version: shortString('plugin.version', p.version, 256),
    vendorName: shortString('plugin.vendorName', p.vendorName, 200),
    deviceObserverUid: checkUid('plugin.deviceObserverUid', p.deviceObserverUid),
  };
}

function checkResults(input: Pick<AlgorithmResultReportInput, 'measurements' | 'findings'>): { measurements: CheckedMeasurement[]; findings: string[] } {
  const measurements = checkMeasurements(input.measurements);
  const findings = checkFindings(input.findings);
  if (measurements.length === 0 && findings.length === 0) throw bad('a result needs at least one measurement or finding');
  return { measurements, findings };
}

/** Tracking identifiers: the name, numbered when a name repeats (they identify the group to readers). */
function trackingIdentifiers(names: readonly string[]): string[] {
  const total = new Map<string, number>();
  for (const n of names) total.set(n, (total.get(n) ?? 0) + 1);
  const seen = new Map<string, number>();
  return names.map((n) => {
    const k = (seen.get(n) ?? 0) + 1;
    seen.set(n, k);
    return (total.get(n) ?? 0) > 1 ? `${n} (${k})` : n;
  });
}

const trackingUid = (srUid: string, index: number): string => nameBasedUid('eco3d-ai-tracking', srUid, String(index));
const observationUid = (srUid: string, index: number): string => nameBasedUid('eco3d-ai-observation', srUid, String(index));

// ---------------------------------------------------------------------------------------------
// Content items (PS3.3 C.17.3)

type Relationship = 'CONTAINS' | 'HAS OBS CONTEXT' | 'HAS CONCEPT MOD' | 'HAS ACQ CONTEXT' | 'INFERRED FROM';

const codeItem = (rel: Relationship, name: CodedConcept, value: CodedConcept): NaturalizedDataset => ({
  RelationshipType: rel,
  ValueType: 'CODE',
  ConceptNameCodeSequence: [code(name)],
  ConceptCodeSequence: [code(value)],
});

const textItem = (rel: Relationship, name: CodedConcept, value: string): NaturalizedDataset => ({
  RelationshipType: rel,
  ValueType: 'TEXT',
  ConceptNameCodeSequence: [code(name)],
  TextValue: value,
});

const uidItem = (rel: Relationship, name: CodedConcept, uid: string): NaturalizedDataset => ({
  RelationshipType: rel,
  ValueType: 'UIDREF',
  ConceptNameCodeSequence: [code(name)],
  UID: uid,
});

const container = (rel: Relationship, name: CodedConcept, items: NaturalizedDataset[]): NaturalizedDataset => ({
  RelationshipType: rel,
  ValueType: 'CONTAINER',
  ConceptNameCodeSequence: [code(name)],
  ContinuityOfContent: 'SEPARATE',
  ContentSequence: items,
});

type Volume = AlgorithmResultReportInput['referencedVolume'];

const imageReference = (v: Volume): NaturalizedDataset[] => [{ ReferencedSOPClassUID: v.sopClassUid, ReferencedSOPInstanceUID: v.sopInstanceUid }];

/** TID 1600 with one group holding the volume (TID 1601), its modality as descriptor (TID 1602). */
function imageLibrary(v: Volume): NaturalizedDataset {
  const entry: NaturalizedDataset = { RelationshipType: 'CONTAINS', ValueType: 'IMAGE', ReferencedSOPSequence: imageReference(v) };
  // Only classes known to be ultrasound get a modality; another class is listed without one.
  if (v.sopClassUid === ENHANCED_US_VOLUME_SOP_CLASS_UID || v.sopClassUid === US_MULTIFRAME_SOP_CLASS_UID) {
    entry.ContentSequence = [codeItem('HAS ACQ CONTEXT', C.modality, C.ultrasound)];
  }
  return container('CONTAINS', C.imageLibrary, [container('CONTAINS', C.imageLibraryGroup, [entry])]);
}

function measurementGroup(m: CheckedMeasurement, index: number, trackingId: string, plugin: CheckedPlugin, srUid: string, v: Volume): NaturalizedDataset {
  return {
    ...container('CONTAINS', C.measurementGroup, [
      textItem('HAS OBS CONTEXT', C.trackingIdentifier, trackingId),
      uidItem('HAS OBS CONTEXT', C.trackingUid, trackingUid(srUid, index)),
      // TID 4019, whose rows take the relationship of the including row (HAS CONCEPT MOD).
      textItem('HAS CONCEPT MOD', C.algorithmName, plugin.name),
      textItem('HAS CONCEPT MOD', C.algorithmVersion, plugin.version),
      {
        RelationshipType: 'CONTAINS',
        ValueType: 'NUM',
        ConceptNameCodeSequence: [code(m.concept)],
        // The FHIR Observation of this value carries the same UID as its identifier.
        ObservationUID: observationUid(srUid, index),
        MeasuredValueSequence: [{ NumericValue: m.ds, MeasurementUnitsCodeSequence: [code(m.units)] }],
        ContentSequence: [{ RelationshipType: 'INFERRED FROM', ValueType: 'IMAGE', ConceptNameCodeSequence: [code(C.sourceOfMeasurement)], ReferencedSOPSequence: imageReference(v) }],
      },
    ]),
    ContentTemplateSequence: [{ MappingResource: 'DCMR', TemplateIdentifier: '1501' }],
  };
}

// ---------------------------------------------------------------------------------------------
// The SR

/** An analysis plugin's results as a TID 1500 Comprehensive 3D SR Part-10 file (see the header). */
export function encodeAlgorithmResultReport(input: AlgorithmResultReportInput): Uint8Array {
  const plugin = checkPlugin(input.plugin);
  const { measurements, findings } = checkResults(input);
  const sopInstanceUid = checkUid('sopInstanceUid', input.sopInstanceUid);
  const v = input.referencedVolume;
  if (v === null || typeof v !== 'object') throw bad('referencedVolume: not an object');
  const vol: Volume = {
    sopClassUid: checkUid('referencedVolume.sopClassUid', v.sopClassUid),
    sopInstanceUid: checkUid('referencedVolume.sopInstanceUid', v.sopInstanceUid),
    seriesInstanceUid: checkUid('referencedVolume.seriesInstanceUid', v.seriesInstanceUid),
  };
  const content = dicomDateTime('contentDateTime', input.contentDateTime);
  const procedure = checkConcept('procedureReported', input.procedureReported);
  const seriesDescription = input.seriesDescription ?? clip(`AI: ${plugin.name}`, 64);

  const trackingIds = trackingIdentifiers(measurements.map((m) => m.name));
  const groups = measurements.map((m, i) => measurementGroup(m, i, trackingIds[i] ?? m.name, plugin, sopInstanceUid, vol));
  const usesPrivateScheme = measurements.some((m) => m.concept.scheme === ECO3D_PRIVATE_CODING_SCHEME);

  const dataset: NaturalizedDataset = {
    ...srDocumentModules({ ...input, sopInstanceUid, seriesDescription, procedureReported: procedure, referencedVolume: vol }),
    ...(usesPrivateScheme
      ? {
          CodingSchemeIdentificationSequence: [
            { CodingSchemeDesignator: ECO3D_PRIVATE_CODING_SCHEME, CodingSchemeName: 'Eco3D plugin measurement names', CodingSchemeResponsibleOrganization: 'Eco3D' },
          ],
        }
      : {}),
    // AIR: each algorithm that produced the results, as contributing equipment.
    ContributingEquipmentSequence: [
      {
        PurposeOfReferenceCodeSequence: [code(C.processingEquipment)],
        Manufacturer: clip(plugin.vendorName, 64),
        ManufacturerModelName: clip(plugin.name, 64),
        SoftwareVersions: clip(plugin.version, 64),
        DeviceUID: plugin.deviceObserverUid,
        ContributionDateTime: content.dt,
        ContributionDescription: clip(`Analysis plugin ${plugin.id} ${plugin.version}`, 64),
      },
    ],
    ContentSequence: [
      codeItem('HAS CONCEPT MOD', C.language, C.english),
      codeItem('HAS OBS CONTEXT', C.observerType, C.device),
      uidItem('HAS OBS CONTEXT', C.deviceObserverUid, plugin.deviceObserverUid),
      textItem('HAS OBS CONTEXT', C.deviceObserverName, plugin.name),
      textItem('HAS OBS CONTEXT', C.deviceObserverManufacturer, plugin.vendorName),
      textItem('HAS OBS CONTEXT', C.deviceObserverModelName, plugin.id),
      codeItem('HAS CONCEPT MOD', C.procedureReported, procedure),
      imageLibrary(vol),
      ...(groups.length === 0 ? [] : [container('CONTAINS', C.imagingMeasurements, groups)]),
      ...(findings.length === 0 ? [] : [container('CONTAINS', C.qualitativeEvaluations, findings.map((f) => textItem('CONTAINS', C.finding, f)))]),
    ],
  };
  return writePart10(COMPREHENSIVE_3D_SR_SOP_CLASS_UID, sopInstanceUid, dataset);
}

// ---------------------------------------------------------------------------------------------
// FHIR R4

const imagingCategory = (): CodeableConcept => ({ coding: [{ system: FHIR_SYSTEMS.observationCategory, code: 'imaging', display: 'Imaging' }] });

function conceptCoding(c: CodedConcept): Coding {
  // DCM, SCT, LN and UCUM map to their FHIR systems (fhir.ts); our private scheme to our URN.
  if (c.scheme === ECO3D_PRIVATE_CODING_SCHEME) return { system: ECO3D_PLUGIN_MEASUREMENT_SYSTEM, code: c.value, display: c.meaning };
  const { system, code: value, display } = codingFromDicom(c);
  return display === undefined ? { system, code: value } : { system, code: value, display };
}

const dicomUidIdentifier = (uid: string): Identifier => ({ system: FHIR_SYSTEMS.dicomUid, value: `urn:oid:${uid}` });

/**
 * One Observation per measurement, then one per finding, all `preliminary` (an algorithm's
 * result that no physician has verified), category imaging, `device` = the plugin.
 *
 * - code: the measurement's concept (its FHIR system), text = the plugin's name for it;
 *   valueQuantity: the value as written in the SR (DS), UCUM system and code.
 * - effectiveDateTime: the SR's content date/time, in UTC as fhir.ts writes every time.
 * - identifier: the NUM's Observation UID in the SR (`urn:dicom:uid`), so each Observation
 *   names the exact content item it mirrors.
 * - derivedFrom: the ImagingStudy, and the SR instance as a logical DocumentReference (by its
 *   SOP Instance UID): R4 has no resource for one DICOM instance.
 * - A finding is an Observation of its own with code DCM 121071 "Finding" and valueString = the
 *   text, as it is a TEXT Finding item in the SR; it is not folded into the measurements' notes
 *   because a finding need not concern any one measurement.
 * - ids: `ai-<16 hex of SHA-256(SR SOP Instance UID)>-m<n>` / `-f<n>`: the same results
 *   give the same ids, so a retried run overwrites rather than duplicates.
 */
export function buildAlgorithmObservations(input: AlgorithmObservationsInput): Observation[] {
  const plugin = checkPlugin(input.plugin);
  const { measurements, findings } = checkResults(input);
  const srUid = checkUid('sopInstanceUid', input.sopInstanceUid);
  dicomDateTime('contentDateTime', input.contentDateTime); // the SR's check, same message
  const effectiveMs = Date.parse(input.contentDateTime);
  if (!Number.isFinite(effectiveMs)) throw bad(`contentDateTime: not a date: ${JSON.stringify(input.contentDateTime)}`);
  if (input.subject?.reference === undefined && input.subject?.identifier === undefined) throw bad('subject: a Patient reference is required');
  if (input.imagingStudy?.reference === undefined && input.imagingStudy?.identifier === undefined) throw bad('imagingStudy: an ImagingStudy reference is required');

  const base = `ai-${sha256(srUid).toString('hex').slice(0, 16)}`;
  const common = (): Pick<Observation, 'status' | 'category' | 'subject' | 'effectiveDateTime' | 'device' | 'derivedFrom'> => ({
    status: 'preliminary',
    category: [imagingCategory()],
    subject: input.subject,
    effectiveDateTime: fhirInstant(effectiveMs),
    device: { type: 'Device', identifier: dicomUidIdentifier(plugin.deviceObserverUid), display: `${plugin.name} ${plugin.version}` },
    derivedFrom: [input.imagingStudy, { type: 'DocumentReference', identifier: dicomUidIdentifier(srUid), display: `DICOM SR AI: ${plugin.name}` }],
  });
  const out: Observation[] = measurements.map((m, i) => {
    const { status, category, subject, effectiveDateTime, device, derivedFrom } = common();
    // R4 element order (for readers only).
    return {
      resourceType: 'Observation',
      id: `${base}-m${i + 1}`,
      identifier: [dicomUidIdentifier(observationUid(srUid, i))],
      status,
      category,
      code: { coding: [conceptCoding(m.concept)], text: m.name },
      subject,
      effectiveDateTime,
      valueQuantity: { value: m.value, unit: m.units.value, system: FHIR_SYSTEMS.ucum, code: m.units.value },
      device,
      derivedFrom,
    };
  });
  findings.forEach((f, i) => {
    const { status, category, subject, effectiveDateTime, device, derivedFrom } = common();
    out.push({
      resourceType: 'Observation',
      id: `${base}-f${i + 1}`,
      status,
      category,
      code: { coding: [conceptCoding(C.finding)] },
      subject,
      effectiveDateTime,
      valueString: f,
      device,
      derivedFrom,
    });
  });
  return out;
}

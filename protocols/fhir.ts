// FHIR R4 (4.0.1) resources as Eco3D writes and reads them: pure builders and parsers, no I/O.
//
// Out, when a study is archived: an ImagingStudy whose UIDs are the DICOM UIDs, with an Endpoint
// (dicom-wado-rs) naming our DICOMweb base URL; a DiagnosticReport per report version; an
// Observation per caliper measurement. In, from the RIS: Patient and ServiceRequest (the worklist;
// the accession number is the ServiceRequest identifier typed v2-0203 `ACSN`). Both ways: the
// patient's research Consent, rendered from the append-only decisions of store/consents.ts.
//
// Every builder takes plain inputs (ids and times included), so the same input gives the same
// resource: archive/fhir-store.ts relies on it to write a new version only when content changed.
// Types come from @medplum/fhirtypes (type-only: erased at run time).
// Spec: https://hl7.org/fhir/R4/ (resource pages; DICOM mapping in imagingstudy.html).
import type {
  Attachment,
  Bundle,
  BundleEntry,
  CapabilityStatement,
  CapabilityStatementRestResource,
  CodeableConcept,
  Coding,
  Consent,
  DiagnosticReport,
  Endpoint,
  HumanName,
  Identifier,
  ImagingStudy,
  ImagingStudySeries,
  Observation,
  OperationOutcome,
  OperationOutcomeIssue,
  Patient,
  Practitioner,
  Reference,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';
import type { CodedConcept } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

export type {
  Bundle,
  CapabilityStatement,
  Consent,
  DiagnosticReport,
  Endpoint,
  ImagingStudy,
  Observation,
  OperationOutcome,
  Patient,
  Reference,
  Resource,
  ServiceRequest,
} from '@medplum/fhirtypes';

export const FHIR_VERSION = '4.0.1';
/** The FHIR JSON media type; `application/json` is accepted as a synonym. */
export const FHIR_JSON = 'application/fhir+json';

export const FHIR_SYSTEMS = {
  dicomUid: 'urn:dicom:uid',
  dicomDcm: 'http://dicom.nema.org/resources/ontology/DCM',
  rfc3986: 'urn:ietf:rfc:3986',
  identifierType: 'http://terminology.hl7.org/CodeSystem/v2-0203',
  diagnosticService: 'http://terminology.hl7.org/CodeSystem/v2-0074',
  endpointConnectionType: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
  observationCategory: 'http://terminology.hl7.org/CodeSystem/observation-category',
  consentScope: 'http://terminology.hl7.org/CodeSystem/consentscope',
  consentCategory: 'http://terminology.hl7.org/CodeSystem/consentcategorycodes',
  actCode: 'http://terminology.hl7.org/CodeSystem/v3-ActCode',
  actReason: 'http://terminology.hl7.org/CodeSystem/v3-ActReason',
  ucum: 'http://unitsofmeasure.org',
  snomed: 'http://snomed.info/sct',
  loinc: 'http://loinc.org',
  /** Our accounts (author, signer, performer): the value is the username. */
  eco3dAccount: 'urn:eco3d:account',
} as const;

/** DICOM coding schemes (PS3.16) → FHIR code systems. */
const SCHEME_SYSTEMS: Readonly<Record<string, string>> = {
  DCM: FHIR_SYSTEMS.dicomDcm,
  SCT: FHIR_SYSTEMS.snomed,
  LN: FHIR_SYSTEMS.loinc,
  UCUM: FHIR_SYSTEMS.ucum,
};

// ---------------------------------------------------------------------------------------------
// Small pieces

export interface CodingInput {
  readonly system: string;
  readonly code: string;
  readonly display?: string | undefined;
}

/** A DICOM coded concept (e.g. the anatomic region of dicom-us.ts) as a FHIR Coding. */
export function codingFromDicom(c: CodedConcept): Coding & CodingInput {
  const system = SCHEME_SYSTEMS[c.scheme] ?? `urn:dicom:coding-scheme:${c.scheme}`;
  return { system, code: c.value, display: c.meaning };
}

const coding = (c: CodingInput): Coding => (c.display === undefined ? { system: c.system, code: c.code } : { system: c.system, code: c.code, display: c.display });

/** An account of ours (sonographer, physician) as a logical reference: we hold no Practitioner resources. */
export interface PersonRef {
  readonly username: string;
  /** Shown to readers; the username when absent. */
  readonly display?: string | undefined;
}

export function practitionerReference(p: PersonRef): Reference<Practitioner> {
  return { type: 'Practitioner', identifier: { system: FHIR_SYSTEMS.eco3dAccount, value: p.username }, display: p.display ?? p.username };
}

export const fhirReference = <T extends Resource>(resourceType: T['resourceType'], id: string, display?: string): Reference<T> =>
  display === undefined ? { reference: `${resourceType}/${id}` } : { reference: `${resourceType}/${id}`, display };

/** FHIR instant / dateTime from ms since the epoch (UTC, ms precision). */
export function fhirInstant(ms: number): string {
  if (!Number.isFinite(ms)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `a FHIR time must be finite ms since the epoch, got ${ms}`);
  return new Date(ms).toISOString();
}

const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
export const isFhirId = (id: unknown): id is string => typeof id === 'string' && ID_RE.test(id);

function checkId(what: string, id: string): string {
  if (!isFhirId(id)) throw bad(`${what}: not a FHIR id (1-64 of A-Z a-z 0-9 - .): ${JSON.stringify(id)}`);
  return id;
}

const DICOM_UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;
function checkDicomUid(what: string, uid: string): string {
  if (typeof uid !== 'string' || uid.length > 64 || !DICOM_UID_RE.test(uid)) throw bad(`${what}: not a DICOM UID: ${JSON.stringify(uid)}`);
  return uid;
}

function bad(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

const nonEmpty = (s: string | undefined): s is string => s !== undefined && s.trim() !== '';

// ---------------------------------------------------------------------------------------------
// Identifiers: accession number, DICOM UIDs, patient id

export interface AccessionInput {
  readonly value: string;
  /** The issuer's namespace, when the RIS gave one. */
  readonly system?: string | undefined;
}

const ACSN_TYPE: CodeableConcept = { coding: [{ system: FHIR_SYSTEMS.identifierType, code: 'ACSN', display: 'Accession ID' }] };
const MR_TYPE: CodeableConcept = { coding: [{ system: FHIR_SYSTEMS.identifierType, code: 'MR', display: 'Medical record number' }] };

const hasTypeCode = (i: Identifier, code: string): boolean =>
  (i.type?.coding ?? []).some((c) => c.system === FHIR_SYSTEMS.identifierType && c.code === code);

export function accessionIdentifier(a: AccessionInput): Identifier {
  return a.system === undefined ? { type: ACSN_TYPE, value: a.value } : { type: ACSN_TYPE, system: a.system, value: a.value };
}

/** The accession number of a ServiceRequest (or ImagingStudy): its identifier typed v2-0203 ACSN. */
export function accessionOf(r: { identifier?: Identifier[] | undefined }): AccessionInput | undefined {
  const i = (r.identifier ?? []).find((x) => hasTypeCode(x, 'ACSN') && nonEmpty(x.value));
  if (i?.value === undefined) return undefined;
  return i.system === undefined ? { value: i.value } : { value: i.value, system: i.system };
}

/** `urn:dicom:uid` + `urn:oid:<uid>`: how FHIR carries a Study Instance UID (imagingstudy.html). */
export function studyUidIdentifier(studyInstanceUid: string): Identifier {
  return { system: FHIR_SYSTEMS.dicomUid, value: `urn:oid:${checkDicomUid('studyInstanceUid', studyInstanceUid)}` };
}

/**
 * The identifier that becomes the DICOM Patient ID: the one typed MR (medical record number),
 * else the first with a value.
 */
export function dicomPatientIdOf(p: Patient): AccessionInput | undefined {
  const ids = (p.identifier ?? []).filter((i) => nonEmpty(i.value));
  const i = ids.find((x) => hasTypeCode(x, 'MR')) ?? ids[0];
  if (i?.value === undefined) return undefined;
  return i.system === undefined ? { value: i.value } : { value: i.value, system: i.system };
}

// ---------------------------------------------------------------------------------------------
// Patient

export type DicomSex = 'F' | 'M' | 'O';

const GENDER_OF_SEX: Record<DicomSex, NonNullable<Patient['gender']>> = { F: 'female', M: 'male', O: 'other' };

export function dicomSexOf(p: Patient): DicomSex | undefined {
  switch (p.gender) {
    case 'female':
      return 'F';
    case 'male':
      return 'M';
    case 'other':
      return 'O';
    case 'unknown':
    case undefined:
      return undefined;
  }
}

/** The birth date when it is a full date (DICOM DA and our exams take nothing less). */
export function fullBirthDateOf(p: Patient): string | undefined {
  return p.birthDate !== undefined && /^\d{4}-\d{2}-\d{2}$/.test(p.birthDate) ? p.birthDate : undefined;
}

const preferredName = (p: Patient): HumanName | undefined => (p.name ?? []).find((n) => n.use === 'official') ?? p.name?.[0];

/** DICOM PN (`Family^Given^Middle^Prefix^Suffix`), at most 64 characters (PatientName is LO-sized). */
export function dicomPersonNameOf(p: Patient): string | undefined {
  const n = preferredName(p);
  if (n === undefined) return undefined;
  const clean = (s: string | undefined): string => (s ?? '').replace(/[\^\\=]/g, ' ').trim();
  const given = n.given ?? [];
  const parts = [clean(n.family), clean(given[0]), clean(given.slice(1).join(' ')), clean(n.prefix?.join(' ')), clean(n.suffix?.join(' '))];
  const pn = parts.join('^').replace(/\^+$/, '');
  if (pn !== '') return pn.slice(0, 64);
  const text = clean(n.text);
  return text === '' ? undefined : text.slice(0, 64);
}

/** "Given Family", for screens. */
export function displayNameOf(p: Patient): string | undefined {
  const n = preferredName(p);
  if (n === undefined) return undefined;
  if (nonEmpty(n.text)) return n.text.trim();
  const s = [...(n.given ?? []), n.family ?? ''].join(' ').trim();
  return s === '' ? undefined : s;
}

/** A DICOM PN (or plain text) as a HumanName. */
export function humanNameFromDicom(pn: string): HumanName {
  if (!pn.includes('^')) return { text: pn.trim() };
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = pn.split('^').map((s) => s.trim());
  const givens = [given, ...middle.split(/\s+/)].filter((s) => s !== '');
  const name: HumanName = {};
  if (family !== '') name.family = family;
  if (givens.length > 0) name.given = givens;
  if (prefix !== '') name.prefix = [prefix];
  if (suffix !== '') name.suffix = [suffix];
  name.text = [prefix, ...givens, family, suffix].filter((s) => s !== '').join(' ');
  return name;
}

export interface PatientInput {
  readonly id: string;
  /** The DICOM Patient ID, as entered at the bedside. */
  readonly patientId: string;
  /** Its issuer, when known. */
  readonly patientIdSystem?: string | undefined;
  /** DICOM PN or plain text. */
  readonly name: string;
  /** YYYY-MM-DD. */
  readonly birthDate?: string | undefined;
  readonly sex?: DicomSex | undefined;
}

/** The Patient of an exam entered at the bedside (no worklist entry named one). */
export function buildPatient(input: PatientInput): Patient {
  if (!nonEmpty(input.patientId)) throw bad('a Patient needs a patient id');
  const identifier: Identifier = { use: 'usual', type: MR_TYPE, value: input.patientId.trim() };
  if (input.patientIdSystem !== undefined) identifier.system = input.patientIdSystem;
  const p: Patient = { resourceType: 'Patient', id: checkId('Patient.id', input.id), identifier: [identifier] };
  if (nonEmpty(input.name)) p.name = [humanNameFromDicom(input.name)];
  if (input.sex !== undefined) p.gender = GENDER_OF_SEX[input.sex];
  if (input.birthDate !== undefined) {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(input.birthDate)) throw bad(`birthDate is YYYY-MM-DD, got ${JSON.stringify(input.birthDate)}`);
    p.birthDate = input.birthDate;
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Worklist (ServiceRequest in)

/** One open exam order, as the bedside panel lists it (the fields of an exam: store/exams.ts). */
export interface WorklistItem {
  readonly serviceRequestId: string;
  /** DICOM SH: at most 16 characters. */
  readonly accessionNumber: string;
  readonly accessionSystem?: string;
  /** At most 64 characters (DICOM StudyDescription). */
  readonly description: string;
  readonly priority?: string;
  /** occurrenceDateTime (or the period's start), when the RIS scheduled one. */
  readonly scheduledAtMs?: number;
  readonly authoredOnMs?: number;
  readonly patient: {
    readonly fhirId: string;
    /** The DICOM Patient ID (at most 64 characters). */
    readonly patientId: string;
    readonly patientIdSystem?: string;
    /** DICOM PN, at most 64 characters. */
    readonly name: string;
    readonly displayName: string;
    /** YYYY-MM-DD. */
    readonly birthDate?: string;
    readonly sex?: DicomSex;
  };
}

/** The exam description of an order: code.text, else its first coding's display. */
export function examDescriptionOf(sr: ServiceRequest): string | undefined {
  const text = sr.code?.text ?? sr.code?.coding?.find((c) => nonEmpty(c.display))?.display;
  return nonEmpty(text) ? text.trim().slice(0, 64) : undefined;
}

const msOf = (s: string | undefined): number | undefined => {
  if (s === undefined) return undefined;
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? ms : undefined;
};

/** The worklist entry of an order and its patient; undefined when either lacks what DICOM needs. */
export function worklistItemOf(sr: ServiceRequest, patient: Patient): WorklistItem | undefined {
  const accession = accessionOf(sr);
  const description = examDescriptionOf(sr);
  const pid = dicomPatientIdOf(patient);
  const name = dicomPersonNameOf(patient);
  if (sr.id === undefined || patient.id === undefined || accession === undefined || description === undefined || pid === undefined || name === undefined) {
    return undefined;
  }
  const birthDate = fullBirthDateOf(patient);
  const sex = dicomSexOf(patient);
  const scheduledAtMs = msOf(sr.occurrenceDateTime ?? sr.occurrencePeriod?.start);
  const authoredOnMs = msOf(sr.authoredOn);
  return {
    serviceRequestId: sr.id,
    accessionNumber: accession.value,
    ...(accession.system === undefined ? {} : { accessionSystem: accession.system }),
    description,
    ...(sr.priority === undefined ? {} : { priority: sr.priority }),
    ...(scheduledAtMs === undefined ? {} : { scheduledAtMs }),
    ...(authoredOnMs === undefined ? {} : { authoredOnMs }),
    patient: {
      fhirId: patient.id,
      patientId: pid.value.slice(0, 64),
      ...(pid.system === undefined ? {} : { patientIdSystem: pid.system }),
      name,
      displayName: displayNameOf(patient) ?? name,
      ...(birthDate === undefined ? {} : { birthDate }),
      ...(sex === undefined ? {} : { sex }),
    },
  };
}

/** The id in a reference `Type/id` (or `<base>/Type/id`) to a resource of `resourceType`; else undefined. */
export function localReferenceId(ref: Reference | undefined, resourceType: string, baseUrl?: string): string | undefined {
  const r = ref?.reference;
  if (r === undefined) return undefined;
  let rest = r;
  if (baseUrl !== undefined && r.startsWith(`${baseUrl.replace(/\/+$/, '')}/`)) rest = r.slice(baseUrl.replace(/\/+$/, '').length + 1);
  const m = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(rest);
  return m !== null && m[1] === resourceType ? m[2] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Endpoint and ImagingStudy (out)

export function buildDicomWebEndpoint(input: { id: string; address: string; name?: string }): Endpoint {
  let url: URL;
  try {
    url = new URL(input.address);
  } catch {
    throw bad(`the DICOMweb base URL is not an absolute URL: ${JSON.stringify(input.address)}`);
  }
  return {
    resourceType: 'Endpoint',
    id: checkId('Endpoint.id', input.id),
    status: 'active',
    connectionType: { system: FHIR_SYSTEMS.endpointConnectionType, code: 'dicom-wado-rs', display: 'DICOM WADO-RS' },
    name: input.name ?? 'Eco3D DICOMweb',
    payloadType: [{ text: 'DICOM WADO-RS' }],
    payloadMimeType: ['application/dicom'],
    // The base URL without a trailing slash: clients append /studies/{uid}.
    address: url.toString().replace(/\/+$/, ''),
  };
}

const MODALITY_DISPLAY: Readonly<Record<string, string>> = { US: 'Ultrasound', SR: 'SR Document' };
const modalityCoding = (m: string): Coding => {
  if (!/^[A-Z0-9]{1,16}$/.test(m)) throw bad(`not a DICOM modality: ${JSON.stringify(m)}`);
  const display = MODALITY_DISPLAY[m];
  return display === undefined ? { system: FHIR_SYSTEMS.dicomDcm, code: m } : { system: FHIR_SYSTEMS.dicomDcm, code: m, display };
};

export interface ImagingInstanceInput {
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  readonly number?: number | undefined;
  readonly title?: string | undefined;
}

export interface ImagingSeriesInput {
  readonly seriesInstanceUid: string;
  /** DICOM Modality (0008,0060), e.g. `US`, `SR`. */
  readonly modality: string;
  readonly number?: number | undefined;
  readonly description?: string | undefined;
  readonly startedMs?: number | undefined;
  readonly bodySite?: CodingInput | undefined;
  readonly laterality?: 'R' | 'L' | undefined;
  readonly instances: readonly ImagingInstanceInput[];
}

export interface ImagingStudyInput {
  readonly id: string;
  readonly studyInstanceUid: string;
  /** `available` once the archive holds it (the default). */
  readonly status?: 'registered' | 'available' | undefined;
  readonly subject: Reference<Patient>;
  readonly accession?: AccessionInput | undefined;
  /** The ServiceRequest(s) the study fulfils. */
  readonly basedOn?: readonly Reference<ServiceRequest>[] | undefined;
  /** The Endpoint resource (dicom-wado-rs) serving the study. */
  readonly endpointId: string;
  readonly startedMs?: number | undefined;
  readonly description?: string | undefined;
  readonly series: readonly ImagingSeriesInput[];
}

const LATERALITY: Record<'R' | 'L', Coding> = {
  R: { system: FHIR_SYSTEMS.snomed, code: '24028007', display: 'Right' },
  L: { system: FHIR_SYSTEMS.snomed, code: '7771000', display: 'Left' },
};

const positiveInt = (what: string, n: number | undefined): number | undefined => {
  if (n === undefined) return undefined;
  if (!Number.isInteger(n) || n < 0) throw bad(`${what} is a whole number ≥ 0, got ${n}`);
  return n;
};

export function buildImagingStudy(input: ImagingStudyInput): ImagingStudy {
  const studyUid = checkDicomUid('studyInstanceUid', input.studyInstanceUid);
  if (input.series.length === 0) throw bad('an ImagingStudy needs at least one series');
  const seenSeries = new Set<string>();
  const seenInstances = new Set<string>();
  const series: ImagingStudySeries[] = input.series.map((s, i) => {
    const uid = checkDicomUid(`series[${i}].seriesInstanceUid`, s.seriesInstanceUid);
    if (seenSeries.has(uid)) throw bad(`series UID ${uid} appears twice`);
    seenSeries.add(uid);
    const out: ImagingStudySeries = { uid, modality: modalityCoding(s.modality) };
    const number = positiveInt(`series[${i}].number`, s.number);
    if (number !== undefined) out.number = number;
    if (nonEmpty(s.description)) out.description = s.description;
    out.numberOfInstances = s.instances.length;
    out.endpoint = [fhirReference<Endpoint>('Endpoint', input.endpointId)];
    if (s.bodySite !== undefined) out.bodySite = coding(s.bodySite);
    if (s.laterality !== undefined) out.laterality = LATERALITY[s.laterality];
    if (s.startedMs !== undefined) out.started = fhirInstant(s.startedMs);
    if (s.instances.length > 0) {
      out.instance = s.instances.map((inst, j) => {
        const iuid = checkDicomUid(`series[${i}].instances[${j}].sopInstanceUid`, inst.sopInstanceUid);
        if (seenInstances.has(iuid)) throw bad(`instance UID ${iuid} appears twice`);
        seenInstances.add(iuid);
        const classUid = checkDicomUid(`series[${i}].instances[${j}].sopClassUid`, inst.sopClassUid);
        const o: NonNullable<ImagingStudySeries['instance']>[number] = { uid: iuid, sopClass: { system: FHIR_SYSTEMS.rfc3986, code: `urn:oid:${classUid}` } };
        const n = positiveInt(`series[${i}].instances[${j}].number`, inst.number);
        if (n !== undefined) o.number = n;
        if (nonEmpty(inst.title)) o.title = inst.title;
        return o;
      });
    }
    return out;
  });
  const modalities = [...new Set(input.series.map((s) => s.modality))];
  const study: ImagingStudy = {
    resourceType: 'ImagingStudy',
    id: checkId('ImagingStudy.id', input.id),
    identifier: [studyUidIdentifier(studyUid), ...(input.accession === undefined ? [] : [accessionIdentifier(input.accession)])],
    status: input.status ?? 'available',
    modality: modalities.map(modalityCoding),
    subject: input.subject,
  };
  if (input.startedMs !== undefined) study.started = fhirInstant(input.startedMs);
  if (input.basedOn !== undefined && input.basedOn.length > 0) study.basedOn = [...input.basedOn];
  study.endpoint = [fhirReference<Endpoint>('Endpoint', input.endpointId)];
  study.numberOfSeries = series.length;
  study.numberOfInstances = seenInstances.size;
  if (nonEmpty(input.description)) study.description = input.description;
  study.series = series;
  return study;
}

// ---------------------------------------------------------------------------------------------
// Observation (a caliper measurement) and DiagnosticReport

/** A caliper measurement, as store/measurements.ts computes it. */
export type MeasurementValue = { readonly kind: 'distance'; readonly valueMm: number } | { readonly kind: 'area'; readonly valueMm2: number };

// The same concepts as the DICOM SR (protocols/dicom-sr.ts): SNOMED CT Length and Area, UCUM units.
export const MEASUREMENT_CODES = {
  distance: { code: { system: FHIR_SYSTEMS.snomed, code: '410668003', display: 'Length' }, unit: 'mm', ucum: 'mm' },
  area: { code: { system: FHIR_SYSTEMS.snomed, code: '42798000', display: 'Area' }, unit: 'mm²', ucum: 'mm2' },
} as const;

export type ResultStatus = 'preliminary' | 'final' | 'amended';

export interface MeasurementObservationInput {
  readonly id: string;
  readonly status: ResultStatus;
  readonly measurement: MeasurementValue;
  /** The caliper's label, e.g. "left kidney length". */
  readonly label?: string | undefined;
  readonly subject: Reference<Patient>;
  readonly imagingStudyId: string;
  /** When it was measured. */
  readonly effectiveMs: number;
  readonly performer?: PersonRef | undefined;
  readonly bodySite?: CodingInput | undefined;
}

export function buildMeasurementObservation(input: MeasurementObservationInput): Observation {
  const m = input.measurement;
  const value = m.kind === 'distance' ? m.valueMm : m.valueMm2;
  if (!Number.isFinite(value) || value < 0) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `a measurement value must be finite and ≥ 0, got ${value}`);
  const spec = MEASUREMENT_CODES[m.kind];
  const code: CodeableConcept = { coding: [{ ...spec.code }] };
  if (nonEmpty(input.label)) code.text = input.label.trim();
  const obs: Observation = {
    resourceType: 'Observation',
    id: checkId('Observation.id', input.id),
    status: input.status,
    category: [{ coding: [{ system: FHIR_SYSTEMS.observationCategory, code: 'imaging', display: 'Imaging' }] }],
    code,
    subject: input.subject,
    effectiveDateTime: fhirInstant(input.effectiveMs),
  };
  if (input.performer !== undefined) obs.performer = [practitionerReference(input.performer)];
  // Micrometre precision: finer than any ultrasound caliper, and stable across JSON round trips.
  obs.valueQuantity = { value: Math.round(value * 1000) / 1000, unit: spec.unit, system: FHIR_SYSTEMS.ucum, code: spec.ucum };
  if (input.bodySite !== undefined) obs.bodySite = { coding: [coding(input.bodySite)] };
  obs.derivedFrom = [fhirReference<ImagingStudy>('ImagingStudy', input.imagingStudyId)];
  return obs;
}

export interface DiagnosticReportInput {
  readonly id: string;
  /** preliminary until a physician signs; final once signed; amended for a signed amendment. */
  readonly status: ResultStatus;
  readonly subject: Reference<Patient>;
  readonly imagingStudyId: string;
  readonly basedOn?: readonly Reference<ServiceRequest>[] | undefined;
  /** What was reported; default LOINC 18748-4 "Diagnostic imaging study". */
  readonly code?: CodingInput | undefined;
  /** When the imaging was done. */
  readonly effectiveMs?: number | undefined;
  /** When this version was made available. */
  readonly issuedMs: number;
  /** Who wrote it (the sonographer or physician). */
  readonly author: PersonRef;
  /** Who signed it: required for final and amended. */
  readonly signer?: PersonRef | undefined;
  readonly findings?: string | undefined;
  readonly conclusion?: string | undefined;
  /** The measurement Observations' ids. */
  readonly observationIds?: readonly string[] | undefined;
}

const DEFAULT_REPORT_CODE: CodingInput = { system: FHIR_SYSTEMS.loinc, code: '18748-4', display: 'Diagnostic imaging study' };

const escapeXml = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

export function buildDiagnosticReport(input: DiagnosticReportInput): DiagnosticReport {
  if (input.status !== 'preliminary' && input.signer === undefined) {
    throw bad(`a ${input.status} report needs its signer: only a signed report is final or amended`);
  }
  const findings = nonEmpty(input.findings) ? input.findings.trim() : undefined;
  const conclusion = nonEmpty(input.conclusion) ? input.conclusion.trim() : undefined;
  // Built in R4's element order (only for readers: JSON order carries no meaning).
  const report = { resourceType: 'DiagnosticReport', id: checkId('DiagnosticReport.id', input.id) } as DiagnosticReport;
  const sections = [
    ...(findings === undefined ? [] : [['Findings', findings] as const]),
    ...(conclusion === undefined ? [] : [['Conclusion', conclusion] as const]),
  ];
  if (sections.length > 0) {
    report.text = {
      status: 'generated',
      div: `<div xmlns="http://www.w3.org/1999/xhtml">${sections.map(([h, t]) => `<p><b>${h}</b>: ${escapeXml(t)}</p>`).join('')}</div>`,
    };
  }
  if (input.basedOn !== undefined && input.basedOn.length > 0) report.basedOn = [...input.basedOn];
  report.status = input.status;
  report.category = [{ coding: [{ system: FHIR_SYSTEMS.diagnosticService, code: 'RAD', display: 'Radiology' }] }];
  report.code = { coding: [coding(input.code ?? DEFAULT_REPORT_CODE)] };
  report.subject = input.subject;
  if (input.effectiveMs !== undefined) report.effectiveDateTime = fhirInstant(input.effectiveMs);
  report.issued = fhirInstant(input.issuedMs);
  report.performer = [practitionerReference(input.author)];
  if (input.signer !== undefined) report.resultsInterpreter = [practitionerReference(input.signer)];
  if (input.observationIds !== undefined && input.observationIds.length > 0) report.result = input.observationIds.map((id) => fhirReference<Observation>('Observation', id));
  report.imagingStudy = [fhirReference<ImagingStudy>('ImagingStudy', input.imagingStudyId)];
  if (conclusion !== undefined) report.conclusion = conclusion;
  if (sections.length > 0) {
    const text = sections.map(([h, t]) => `${h}:\n${t}`).join('\n\n');
    const form: Attachment = { contentType: 'text/plain; charset=utf-8', data: Buffer.from(text, 'utf8').toString('base64'), title: 'Report' };
    report.presentedForm = [form];
  }
  return report;
}

// ---------------------------------------------------------------------------------------------
// Consent (research), both ways

export type ConsentDecisionCode = 'yes' | 'no' | 'revoked';

/** One recorded decision (store/consents.ts ConsentRecord has these fields). */
export interface ConsentDecisionRecord {
  readonly id: string;
  readonly patientId: string;
  readonly decision: ConsentDecisionCode;
  readonly recordedAtMs: number;
}

const RESEARCH_SCOPE: CodeableConcept = { coding: [{ system: FHIR_SYSTEMS.consentScope, code: 'research', display: 'Research' }] };
const RESEARCH_CATEGORY: CodeableConcept = { coding: [{ system: FHIR_SYSTEMS.consentCategory, code: 'research', display: 'Research Information Access' }] };

/**
 * The patient's decisions (newest first, as listConsents returns them) as Consent resources, in
 * the same order. Rendering (R4 Consent.status): the latest decision, when yes or no, is `active`
 * (provision permit or deny); every earlier decision is `inactive` ("terminated or replaced"),
 * its provision period ending when the next one was recorded; a revocation is itself `inactive`
 * (a deny whose period starts then), so after one the patient has no active research consent.
 * Hence "may this patient's data be used for research" = an active Consent with a permit.
 */
export function consentResources(newestFirst: readonly ConsentDecisionRecord[], patient: Reference<Patient>): Consent[] {
  return newestFirst.map((r, i) => {
    const newer = i > 0 ? newestFirst[i - 1] : undefined;
    return buildConsent({ record: r, patient, supersededAtMs: newer?.recordedAtMs });
  });
}

export function buildConsent(input: { record: ConsentDecisionRecord; patient: Reference<Patient>; supersededAtMs?: number | undefined }): Consent {
  const r = input.record;
  const permit = r.decision === 'yes';
  const active = r.decision !== 'revoked' && input.supersededAtMs === undefined;
  const period: { start: string; end?: string } = { start: fhirInstant(r.recordedAtMs) };
  if (input.supersededAtMs !== undefined) period.end = fhirInstant(Math.max(input.supersededAtMs, r.recordedAtMs));
  return {
    resourceType: 'Consent',
    id: checkId('Consent.id', r.id),
    // Rendered from the append-only decisions: an earlier one turns inactive without a version of its own.
    meta: { lastUpdated: fhirInstant(input.supersededAtMs ?? r.recordedAtMs) },
    status: active ? 'active' : 'inactive',
    scope: RESEARCH_SCOPE,
    category: [RESEARCH_CATEGORY],
    patient: input.patient,
    dateTime: fhirInstant(r.recordedAtMs),
    performer: [input.patient],
    policyRule: { coding: [{ system: FHIR_SYSTEMS.actCode, code: permit ? 'OPTIN' : 'OPTOUT' }] },
    provision: {
      type: permit ? 'permit' : 'deny',
      period,
      purpose: [{ system: FHIR_SYSTEMS.actReason, code: 'HRESCH', display: 'healthcare research' }],
    },
  };
}

/** A problem found in an incoming resource, with the FHIRPath of the offending element. */
export interface FhirIssue {
  readonly severity: 'fatal' | 'error' | 'warning' | 'information';
  /** OperationOutcome issue type (http://hl7.org/fhir/issue-type). */
  readonly code: OperationOutcomeIssue['code'];
  readonly diagnostics: string;
  readonly expression?: readonly string[];
}

/**
 * What a POSTed Consent asks to record: `active` + provision permit → yes, `active` + deny → no,
 * `inactive` → revoked (the FHIR way to withdraw). Scope must be research. Issues when not.
 */
export function consentDecisionOf(c: Consent): { decision: ConsentDecisionCode } | { issues: FhirIssue[] } {
  const issues: FhirIssue[] = [];
  const research = (c.scope?.coding ?? []).some((x) => x.system === FHIR_SYSTEMS.consentScope && x.code === 'research');
  if (!research) {
    issues.push({ severity: 'error', code: 'not-supported', diagnostics: `only research consent is recorded here: scope must be ${FHIR_SYSTEMS.consentScope}#research`, expression: ['Consent.scope'] });
  }
  let decision: ConsentDecisionCode | undefined;
  if (c.status === 'inactive') decision = 'revoked';
  else if (c.status === 'active') {
    const type = c.provision?.type;
    if (type === 'permit') decision = 'yes';
    else if (type === 'deny') decision = 'no';
    else issues.push({ severity: 'error', code: 'required', diagnostics: 'an active research consent needs provision.type permit or deny', expression: ['Consent.provision.type'] });
  } else {
    issues.push({
      severity: 'error',
      code: 'not-supported',
      diagnostics: `status ${c.status} is not recorded: post active (permit or deny) to record a decision, inactive to revoke`,
      expression: ['Consent.status'],
    });
  }
  return issues.length > 0 || decision === undefined ? { issues } : { decision };
}

// ---------------------------------------------------------------------------------------------
// OperationOutcome, Bundle, CapabilityStatement

/** Our error codes (ECO3D_ERR_*) as a code system, in OperationOutcome.issue.details. */
export const ECO3D_ERROR_SYSTEM = 'urn:eco3d:error-code';

/** An OperationOutcome; `errorCode` (ECO3D_ERR_*) goes into each issue's details. */
export function buildOperationOutcome(issues: readonly FhirIssue[], opts: { errorCode?: string } = {}): OperationOutcome {
  const list = issues.length > 0 ? issues : [{ severity: 'information', code: 'informational', diagnostics: 'ok' } as const];
  return {
    resourceType: 'OperationOutcome',
    issue: list.map((i) => {
      const out: OperationOutcomeIssue = { severity: i.severity, code: i.code };
      if (opts.errorCode !== undefined) out.details = { coding: [{ system: ECO3D_ERROR_SYSTEM, code: opts.errorCode }] };
      out.diagnostics = i.diagnostics;
      if (i.expression !== undefined && i.expression.length > 0) out.expression = [...i.expression];
      return out;
    }),
  };
}

export interface SearchBundleInput {
  /** The FHIR base URL, for each entry's fullUrl. */
  readonly baseUrl: string;
  readonly resources: readonly Resource[];
  readonly total: number;
  readonly selfUrl: string;
  readonly nextUrl?: string | undefined;
  readonly previousUrl?: string | undefined;
}

export function buildSearchBundle(input: SearchBundleInput): Bundle {
  const base = input.baseUrl.replace(/\/+$/, '');
  const link: NonNullable<Bundle['link']> = [{ relation: 'self', url: input.selfUrl }];
  if (input.nextUrl !== undefined) link.push({ relation: 'next', url: input.nextUrl });
  if (input.previousUrl !== undefined) link.push({ relation: 'previous', url: input.previousUrl });
  const entry: BundleEntry[] = input.resources.map((r) => ({ fullUrl: `${base}/${r.resourceType}/${r.id ?? ''}`, resource: r, search: { mode: 'match' } }));
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', total: input.total, link };
  if (entry.length > 0) bundle.entry = entry;
  return bundle;
}

export type CapabilityInteraction = 'read' | 'vread' | 'search-type' | 'create';

export interface CapabilitySearchParam {
  readonly name: string;
  readonly type: 'token' | 'reference' | 'string' | 'date';
  /** The SearchParameter's canonical URL, when it is a standard one. */
  readonly definition?: string;
  readonly documentation?: string;
}

export interface CapabilityResource {
  readonly type: string;
  readonly interactions: readonly CapabilityInteraction[];
  readonly searchParams: readonly CapabilitySearchParam[];
  readonly versioning: 'no-version' | 'versioned';
  readonly conditionalCreate?: boolean;
  readonly documentation?: string;
}

export interface CapabilityStatementInput {
  readonly baseUrl: string;
  readonly softwareVersion: string;
  /** When this statement was made (the server's start). */
  readonly dateMs: number;
  readonly resources: readonly CapabilityResource[];
  readonly securityDescription: string;
}

export function buildCapabilityStatement(input: CapabilityStatementInput): CapabilityStatement {
  const resource: CapabilityStatementRestResource[] = input.resources.map((r) => {
    const out: CapabilityStatementRestResource = {
      type: r.type as CapabilityStatementRestResource['type'],
      profile: `http://hl7.org/fhir/StructureDefinition/${r.type}`,
    };
    if (r.documentation !== undefined) out.documentation = r.documentation;
    out.interaction = r.interactions.map((code) => ({ code }));
    out.versioning = r.versioning;
    out.readHistory = r.interactions.includes('vread');
    out.updateCreate = false;
    if (r.interactions.includes('create')) out.conditionalCreate = r.conditionalCreate ?? false;
    if (r.searchParams.length > 0) {
      out.searchParam = r.searchParams.map((p) => ({
        name: p.name,
        type: p.type,
        ...(p.definition === undefined ? {} : { definition: p.definition }),
        ...(p.documentation === undefined ? {} : { documentation: p.documentation }),
      }));
    }
    return out;
  });
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: fhirInstant(input.dateMs),
    publisher: 'Eco3D',
    kind: 'instance',
    software: { name: 'Eco3D', version: input.softwareVersion },
    implementation: { description: 'Eco3D FHIR R4 endpoint: worklist in, imaging results and research consent out', url: input.baseUrl.replace(/\/+$/, '') },
    fhirVersion: FHIR_VERSION,
    format: [FHIR_JSON, 'json'],
    rest: [{ mode: 'server', security: { description: input.securityDescription }, resource }],
  };
}

// What every DICOM object we write shares (dicom-us.ts, dicom-sr.ts): value checks and
// conversions (UID, DA/TM/DT from ISO 8601, DS, codes), the Patient and General Study
// attributes, and the Part-10 file with its meta header, written through dcmjs (naturalized
// dataset → denaturalizeDataset → DicomDict.write()).
import dcmjs, { type NaturalizedDataset } from 'dcmjs';
import type { CodedConcept, DicomUsCommon } from './dicom-us.ts';
import { Eco3dError } from './errors.ts';

export const EXPLICIT_VR_LITTLE_ENDIAN_UID = '1.2.840.10008.1.2.1';
/** Our Implementation Class UID (file meta); a fixed 2.25 UUID-derived UID. */
export const ECO3D_IMPLEMENTATION_CLASS_UID = '2.25.96735317232318465305131916453062474312';
const IMPLEMENTATION_VERSION_NAME = 'ECO3D_DCMJS052';

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

export function checkUid(name: string, uid: string): string {
  if (typeof uid !== 'string' || uid.length > 64 || !UID_RE.test(uid)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: not a DICOM UID: ${JSON.stringify(uid)}`);
  return uid;
}

export interface DicomDateTime {
  /** DA: YYYYMMDD */
  readonly da: string;
  /** TM: HHMMSS.FFFFFF */
  readonly tm: string;
  /** DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX, always 26 characters (even: dcmjs adds no pad byte, which would come back as a trailing space). */
  readonly dt: string;
  /** Timezone Offset From UTC (0008,0201): &ZZXX */
  readonly offset: string;
}

const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/;

/** ISO 8601 local time with offset → DICOM DA/TM/DT keeping the local wall-clock time. */
export function dicomDateTime(name: string, iso: string): DicomDateTime {
  const m = ISO_RE.exec(iso);
  if (m === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: expected ISO 8601 with an offset, e.g. 2024-05-01T10:20:30.123+02:00, got ${JSON.stringify(iso)}`);
  const [, y, mo, d, h, mi, s, frac, zone] = m as unknown as [string, string, string, string, string, string, string, string | undefined, string];
  const micro = (frac ?? '').padEnd(6, '0').slice(0, 6);
  const offset = zone === 'Z' ? '+0000' : zone.replace(':', '');
  return { da: `${y}${mo}${d}`, tm: `${h}${mi}${s}.${micro}`, dt: `${y}${mo}${d}${h}${mi}${s}.${micro}${offset}`, offset };
}

export function dicomDate(name: string, isoDate: string | undefined): string {
  if (isoDate === undefined) return '';
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(isoDate);
  if (m === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name}: expected YYYY-MM-DD, got ${JSON.stringify(isoDate)}`);
  return `${m[1]}${m[2]}${m[3]}`;
}

/** A number as a DS string (≤ 16 characters, PS3.5 6.2). */
export function ds(n: number): string {
  if (!Number.isFinite(n)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `DS value is not finite: ${n}`);
  for (let p = 16; p >= 1; p--) {
    const s = String(Number(n.toPrecision(p)));
    if (s.length <= 16) return s;
  }
  return n.toExponential(8);
}

export function code(c: CodedConcept): NaturalizedDataset {
  return { CodeValue: c.value, CodingSchemeDesignator: c.scheme, CodeMeaning: c.meaning };
}

/** The Patient and General Study module attributes every object of a study carries alike. */
export function patientAndStudy(input: Pick<DicomUsCommon, 'patient' | 'study'>): NaturalizedDataset {
  const p = input.patient;
  const study = dicomDateTime('study.studyDateTime', input.study.studyDateTime);
  return {
    PatientName: p.name,
    PatientID: p.id,
    PatientBirthDate: dicomDate('patient.birthDate', p.birthDate),
    PatientSex: p.sex ?? '',
    StudyInstanceUID: checkUid('study.studyInstanceUid', input.study.studyInstanceUid),
    StudyDate: study.da,
    StudyTime: study.tm,
    ReferringPhysicianName: input.study.referringPhysicianName ?? '',
    StudyID: input.study.studyId,
    AccessionNumber: input.study.accessionNumber,
  };
}

/** A Part-10 file (Explicit VR Little Endian) of `dataset`, with its File Meta Information. */
export function writePart10(sopClassUid: string, sopInstanceUid: string, dataset: NaturalizedDataset): Uint8Array {
  const meta: NaturalizedDataset = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: sopClassUid,
    MediaStorageSOPInstanceUID: sopInstanceUid,
    TransferSyntaxUID: EXPLICIT_VR_LITTLE_ENDIAN_UID,
    ImplementationClassUID: ECO3D_IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: IMPLEMENTATION_VERSION_NAME,
  };
  const { DicomDict, DicomMetaDictionary } = dcmjs.data;
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  return new Uint8Array(dict.write());
}

// The DICOM study of an offline scan (`eco3d scan`): the reconstructed volume as an Enhanced US
// Volume and the recorded B-mode frames as an Ultrasound Multi-frame image, one study, written
// from the files the scan already wrote (volume.mha, tracked-frames.igs.mha), so what is in the
// study is exactly what is on disk beside it.
//
// Geometry (see protocols/dicom-us.ts for what each matrix means):
// - the Volume frame is the Reference frame, the robot base (mm): volumeToTable is the identity;
// - the transducer frame follows PS3.3 C.8.24.2.1.2 (+Y along the beam, +X toward the marker):
//   our probe's tool z is the beam and tool x the array direction (sim/ultrasound.ts), so a
//   probe point (x, y, z) is (x, z, −y) in transducer axes; the nominal pose is mid-sweep;
// - the patient lies supine on the table, centred on the simulated torso, head toward base +y:
//   L = base +x, P = base −z, S = base +y (a convention of the simulator's scene, stated here).
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodePlusSequence,
  encodeEnhancedUsVolume,
  encodeUsMultiframe,
  ENHANCED_US_VOLUME_SOP_CLASS_UID,
  US_MULTIFRAME_SOP_CLASS_UID,
  mat4Invert,
  mat4Mul,
  newUid,
  readFileBytes,
  readMetaImageVolumeFile,
  UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  type DicomPatient,
  type DicomUsCommon,
  type ImageFrame,
  type Mat4,
} from '../protocols/index.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { PATIENT_TORSO } from '../protocols/scene.ts';
import { imageGeometry, type ProbeModel } from '../sim/index.ts';

export interface ScanStudyInput {
  readonly outDir: string;
  /** The acquisition's UID; it is also the Study Instance UID (one acquisition, one study). */
  readonly acquisitionUid: string;
  readonly startedAtMs: number;
  readonly finishedAtMs: number;
  readonly deviceId: string;
  readonly phantomSeed: number;
  readonly probe: ProbeModel;
  readonly sweep: 'linear' | 'fan';
  readonly softwareVersion: string;
  /** The patient of the exam; absent for an offline scan of the phantom (`eco3d scan`). */
  readonly patient?: DicomPatient | undefined;
  /** From the exam's worklist entry (the RIS's ServiceRequest); empty when none. */
  readonly accessionNumber?: string | undefined;
  readonly studyDescription?: string | undefined;
}

export interface ScanStudyInstance {
  /** File name under the study folder. */
  readonly file: string;
  readonly sopClassUid: string;
  readonly sopInstanceUid: string;
  readonly seriesInstanceUid: string;
}

export interface ScanStudy {
  readonly studyInstanceUid: string;
  /** The study folder: the instances and manifest.json. */
  readonly dir: string;
  /** Paths of the written instances. */
  readonly volumeFile: string;
  readonly framesFile: string;
  readonly instances: readonly ScanStudyInstance[];
  /** The grid frame the volume's (and the calipers') coordinates are in: an SR references it. */
  readonly volumeFrameOfReferenceUid: string;
  /** Patient, study and equipment as written: a report's SR repeats them. */
  readonly common: Pick<DicomUsCommon, 'patient' | 'study' | 'equipment'>;
}

const MANIFEST = 'manifest.json';

/** Our fixed series descriptions: no patient data in them, so the lake's Clean Descriptors keeps them. */
export const SERIES_DESCRIPTIONS = { volume: 'Reconstructed volume', frames: 'B-mode frames of the sweep' } as const;

/**
 * The study written before for this acquisition folder, if any. Writing a study is then
 * idempotent: a retry (the archive's outbox consumer after a crash) finds the same UIDs instead
 * of minting a second study with new ones.
 */
export function readScanStudy(outDir: string): ScanStudy | undefined {
  const dir = join(outDir, 'study');
  const file = join(dir, MANIFEST);
  if (!existsSync(file)) return undefined;
  const m = JSON.parse(readFileSync(file, 'utf8')) as Pick<ScanStudy, 'studyInstanceUid' | 'instances' | 'volumeFrameOfReferenceUid' | 'common'>;
  return { ...m, dir, volumeFile: join(dir, 'volume.dcm'), framesFile: join(dir, 'frames.dcm') };
}

const PROBE_TO_TRANSDUCER: Mat4 = new Float64Array([1, 0, 0, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 1]);
const IDENTITY: Mat4 = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
const c = PATIENT_TORSO.centerMm;
/** Robot base → DICOM patient (LPS, mm), origin at the torso's centre. */
const TABLE_TO_PATIENT: Mat4 = new Float64Array([1, 0, 0, -c.x, 0, 0, -1, c.z, 0, 1, 0, -c.y, 0, 0, 0, 1]);

export async function writeScanStudy(i: ScanStudyInput): Promise<ScanStudy> {
  const before = readScanStudy(i.outDir);
  if (before !== undefined) return before;
  const volume = await readMetaImageVolumeFile(join(i.outDir, 'volume.mha'));
  const seqFile = join(i.outDir, 'tracked-frames.igs.mha');
  const seq = decodePlusSequence(await readFileBytes(seqFile), { source: seqFile });
  if (seq.frames.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${seqFile}: no frames to put in the study`);
  const mid = seq.frames[Math.floor(seq.frames.length / 2)]!;
  const probeToReference = mid.transforms.get('ProbeToReference');
  const referenceToProbe = probeToReference === undefined ? null : mat4Invert(probeToReference);
  if (referenceToProbe === null) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${seqFile}: frame ${mid.index} has no usable ProbeToReference`);

  const iso = (ms: number): string => new Date(ms).toISOString();
  const common: DicomUsCommon = {
    // A simulated phantom, not a person: named as such so no one mistakes it for a patient.
    patient: i.patient ?? { name: 'Phantom^Eco3D', id: `phantom-${i.phantomSeed}` },
    study: {
      studyInstanceUid: i.acquisitionUid,
      studyId: i.acquisitionUid.slice(-16),
      accessionNumber: i.accessionNumber ?? '',
      studyDateTime: iso(i.startedAtMs),
      description: i.studyDescription ?? `Robotic 3D US, ${i.sweep} sweep (simulated)`,
    },
    equipment: { manufacturer: 'Eco3D', modelName: 'Eco3D robotic ultrasound (simulator)', deviceSerialNumber: i.deviceId, softwareVersions: [i.softwareVersion] },
    seriesInstanceUid: newUid(),
    seriesNumber: 1,
    sopInstanceUid: newUid(),
    instanceNumber: 1,
    acquisitionDateTime: iso(i.startedAtMs),
    contentDateTime: iso(i.finishedAtMs),
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
  };
  const frameOfReferenceUid = newUid();
  const linear = i.probe.kind === 'linear';
  const depthMm = linear ? i.probe.heightPx * i.probe.axialSpacingMm : i.probe.depthMm;
  const volumeUids = { seriesInstanceUid: newUid(), sopInstanceUid: newUid() };
  const volumeFrameOfReferenceUid = newUid();
  const volumeBytes = encodeEnhancedUsVolume({
    ...common,
    ...volumeUids,
    seriesNumber: 2,
    seriesDescription: SERIES_DESCRIPTIONS.volume,
    volume,
    acquisitionDurationS: (i.finishedAtMs - i.startedAtMs) / 1000,
    frameOfReferenceUid,
    volumeFrameOfReferenceUid,
    dimensionOrganizationUid: newUid(),
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: mat4Mul(PROBE_TO_TRANSDUCER, referenceToProbe),
    volumeToTransducerRelationship: i.sweep === 'linear' ? 'POSITION_VAR' : 'ORIENTATION_VAR',
    tableFrameOfReferenceUid: newUid(),
    volumeToTable: IDENTITY,
    tableToPatient: TABLE_TO_PATIENT,
    transducer: {
      description: linear ? `Eco3D simulated linear probe, ${i.probe.frequencyMHz} MHz` : `Eco3D simulated curvilinear probe, ${i.probe.frequencyMHz} MHz`,
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: linear ? { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' } : { value: '125253', scheme: 'DCM', meaning: 'Curved linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: {
      // The probe's image plane holds the array (base x) and the beam: across the torso's long axis.
      view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' },
      processingFunction: 'B-MODE',
      // A simulator emits no acoustic power.
      mechanicalIndex: 0,
      boneThermalIndex: 0,
      cranialThermalIndex: 0,
      softTissueThermalIndex: 0,
      depthsOfFocusMm: [depthMm / 2],
      depthOfScanFieldMm: depthMm,
    },
  });
  const frames: ImageFrame[] = seq.frames.map((f, k) => ({ index: k, tMs: (f.timestampS ?? 0) * 1000, width: f.width, height: f.height, pixels: f.pixels }));
  const g = imageGeometry(i.probe).spacingMm;
  const framesBytes = encodeUsMultiframe({ ...common, seriesDescription: SERIES_DESCRIPTIONS.frames, frames, pixelSpacingMm: { x: g.u, y: g.v }, frameOfReferenceUid });

  const dir = join(i.outDir, 'study');
  mkdirSync(dir, { recursive: true });
  const volumeFile = join(dir, 'volume.dcm');
  const framesFile = join(dir, 'frames.dcm');
  writeFileSync(volumeFile, volumeBytes);
  writeFileSync(framesFile, framesBytes);
  const instances: ScanStudyInstance[] = [
    { file: 'volume.dcm', sopClassUid: ENHANCED_US_VOLUME_SOP_CLASS_UID, ...volumeUids },
    { file: 'frames.dcm', sopClassUid: US_MULTIFRAME_SOP_CLASS_UID, seriesInstanceUid: common.seriesInstanceUid, sopInstanceUid: common.sopInstanceUid },
  ];
  // The manifest last, by rename: it exists only once both instances are complete on disk.
  const manifest = {
    studyInstanceUid: i.acquisitionUid,
    instances,
    volumeFrameOfReferenceUid,
    common: { patient: common.patient, study: common.study, equipment: common.equipment },
  };
  writeFileSync(join(dir, `${MANIFEST}.tmp`), `${JSON.stringify(manifest, null, 2)}\n`);
  renameSync(join(dir, `${MANIFEST}.tmp`), join(dir, MANIFEST));
  return { ...manifest, dir, volumeFile, framesFile };
}

// DICOM writer/reader cost for a 256³ uint8 volume (16 MiB, 256 frames): encode to an Enhanced
// US Volume Part-10 file, and decode it back to a Volume; the median of several runs each.
// Goal: ≤ 300 ms each. The first run of each is a warm-up (JIT, dictionary set-up) and not counted.
import { performance } from 'node:perf_hooks';
import { UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID, decodeEnhancedUsVolume, encodeEnhancedUsVolume, type EnhancedUsVolumeInput } from '../protocols/dicom-us.ts';
import { bench } from './stats.ts';

const N = 256;
const REPS = 5;

const data = new Uint8Array(N * N * N);
for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
const identity = new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
const input: EnhancedUsVolumeInput = {
  patient: { name: 'Bench^Patient', id: 'B1' },
  study: { studyInstanceUid: '2.25.1', studyId: 'B', accessionNumber: '', studyDateTime: '2024-05-01T10:00:00Z' },
  equipment: { manufacturer: 'Eco3D', modelName: 'bench', deviceSerialNumber: '0', softwareVersions: ['bench'] },
  seriesInstanceUid: '2.25.2',
  seriesNumber: 1,
  sopInstanceUid: '2.25.3',
  instanceNumber: 1,
  acquisitionDateTime: '2024-05-01T10:00:00Z',
  contentDateTime: '2024-05-01T10:01:00Z',
  anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
  volume: { grid: { dims: [N, N, N], spacingMm: { x: 0.25, y: 0.25, z: 0.25 }, originMm: { x: 400, y: -32, z: 0 } }, data },
  acquisitionDurationS: 10,
  frameOfReferenceUid: '2.25.4',
  volumeFrameOfReferenceUid: '2.25.5',
  dimensionOrganizationUid: '2.25.6',
  synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
  volumeToTransducer: identity,
  volumeToTransducerRelationship: 'POSITION_VAR',
  tableFrameOfReferenceUid: '2.25.7',
  volumeToTable: identity,
  tableToPatient: identity,
  transducer: {
    description: 'bench',
    scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
    geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
    beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
    application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
  },
  scan: { view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' }, processingFunction: 'B-MODE', mechanicalIndex: 0.8, boneThermalIndex: 0.2, cranialThermalIndex: 0.1, softTissueThermalIndex: 0.3, depthsOfFocusMm: [24], depthOfScanFieldMm: 64 },
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

let bytes = encodeEnhancedUsVolume(input);
decodeEnhancedUsVolume(bytes);
const encodeMs: number[] = [];
const decodeMs: number[] = [];
for (let r = 0; r < REPS; r++) {
  const t0 = performance.now();
  bytes = encodeEnhancedUsVolume(input);
  const t1 = performance.now();
  const back = decodeEnhancedUsVolume(bytes);
  const t2 = performance.now();
  if (back.volume.data.length !== data.length || back.volume.data[12345] !== data[12345]) throw new Error('round trip mismatch');
  encodeMs.push(t1 - t0);
  decodeMs.push(t2 - t1);
}
console.error(`# file ${(bytes.length / 1048576).toFixed(1)} MiB`);
bench('dicom-us-encode-256', Math.round(median(encodeMs) * 10) / 10, 'ms');
bench('dicom-us-decode-256', Math.round(median(decodeMs) * 10) / 10, 'ms');

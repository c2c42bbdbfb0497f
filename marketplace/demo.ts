// The sandbox tenant's demo studies (issue 8, "Developer sandbox"): synthetic Enhanced US Volumes
// a developer's analysis plugin runs on before review, each with the answer we know (the volume
// of its largest hypoechoic lesion). Obviously synthetic: patient DEMO^PHANTOM, manufacturer
// "Eco3D", model "Synthetic phantom", descriptions that say so; no real person's data.
//
// The phantom, per voxel (x lateral, y depth below the probe, z elevation; all in mm):
//   echogenicity (dB) = smooth tissue variation (±1.5 dB) + a hypoechoic subcutaneous fat layer
//   and a bright fascia line near the probe + the objects of the study (lesions at -14 dB, an
//   anechoic vessel, a bright nodule), and the B-mode value is that echogenicity times fully
//   developed speckle, log-compressed to 8 bits over a 60 dB dynamic range. Speckle: a complex
//   (I, Q) field, each the sum of 3 (x) × 2 (y) × 2 (z) uniform deviates (≈ Gaussian by the
//   central limit, speckle cells of about 3 × 2 × 2 voxels), whose magnitude is then Rayleigh
//   distributed as in real fully developed speckle.
// The known answer counts the voxels whose centre lies inside the lesion ellipsoid (the same test
// the generator paints with) times the voxel volume.
//
// Deterministic: a seeded PRNG (xorshift32) per study, fixed dates, UIDs derived from names in the
// layout of a name-based (version 5) UUID, so every run writes the same bytes. A study whose file
// is already there, complete, with the SOP Instance UID of this generator version, is left alone.
import { createHash } from 'node:crypto';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodeEnhancedUsVolume, UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID, type EnhancedUsVolumeInput } from '../protocols/dicom-us.ts';
import { IDENTITY_MAT4 } from '../protocols/imaging.ts';
import { readVolumeHeader } from './volume-input.ts';

export interface DemoStudy {
  /** Opaque reference a plugin sees (`input.study.ref`), e.g. `demo-1`. */
  readonly ref: string;
  /** The Part-10 file. */
  readonly path: string;
  readonly description: string;
  /** Voxels along x (columns), y (rows), z (frames). */
  readonly dims: readonly [number, number, number];
  readonly spacingMm: readonly [number, number, number];
  readonly sizeBytes: number;
  /** What the platform writes results against (the SR's patient, study and referenced volume). */
  readonly dicom: {
    readonly common: Pick<EnhancedUsVolumeInput, 'patient' | 'study' | 'equipment'>;
    readonly seriesInstanceUid: string;
    readonly sopInstanceUid: string;
  };
  readonly expected: {
    /** Volume of the largest hypoechoic lesion (voxel count × voxel volume, 0.01 mL), null when there is none. */
    readonly largestLesionVolumeMl: number | null;
  };
}

/** Bumped whenever the phantoms change: it is part of every UID, so old files are rewritten. */
const GENERATOR_VERSION = 2;
/** Namespace of the demo UIDs (a fixed random UUID). */
const UID_NAMESPACE = Buffer.from('6f0c1d4e8a2b4f7e9d3c5b1a0e2f4c6d', 'hex');

type Vec3 = readonly [number, number, number];
/** Ellipsoid (semi-axes in mm), rotated by `yawDeg` about the y (depth) axis. */
interface Ellipsoid {
  readonly kind: 'lesion' | 'nodule';
  readonly centreMm: Vec3;
  readonly semiAxesMm: Vec3;
  readonly yawDeg: number;
}
/** A vessel: a cylinder along x through the whole volume (it touches the volume's sides). */
interface Vessel {
  readonly kind: 'vessel';
  readonly yMm: number;
  readonly zMm: number;
  readonly radiusMm: number;
}
type PhantomObject = Ellipsoid | Vessel;

interface PhantomSpec {
  readonly ref: string;
  readonly description: string;
  readonly dims: readonly [number, number, number];
  readonly spacingMm: number;
  readonly seed: number;
  readonly objects: readonly PhantomObject[];
}

const LESION_DB = -14;
const NODULE_DB = 7;
const VESSEL_DB = -35;
const FAT_DB = -7;
const FASCIA_DB = 6;
/** Log compression: 0 dB (tissue power) sits at 36 dB above the black level of a 60 dB range. */
const DYNAMIC_RANGE_DB = 60;
const BLACK_LEVEL_DB = -36;

const PHANTOMS: readonly PhantomSpec[] = [
  {
    ref: 'demo-1',
    description: 'Synthetic phantom (not a patient): one hypoechoic lesion',
    dims: [112, 112, 96],
    spacingMm: 0.5,
    seed: 0x0de0_0001,
    objects: [{ kind: 'lesion', centreMm: [28, 29, 24], semiAxesMm: [10, 8, 7], yawDeg: 25 }],
  },
  {
    ref: 'demo-2',
    description: 'Synthetic phantom (not a patient): two hypoechoic lesions of different size',
    dims: [128, 112, 96],
    spacingMm: 0.5,
    seed: 0x0de0_0002,
    objects: [
      { kind: 'lesion', centreMm: [22, 30, 24], semiAxesMm: [11, 9, 8.5], yawDeg: -15 },
      { kind: 'lesion', centreMm: [47, 31, 23], semiAxesMm: [6.5, 6, 5.5], yawDeg: 40 },
    ],
  },
  {
    ref: 'demo-3',
    description: 'Synthetic phantom (not a patient): no lesion; a vessel and a bright nodule',
    dims: [112, 112, 96],
    spacingMm: 0.5,
    seed: 0x0de0_0003,
    objects: [
      { kind: 'vessel', yMm: 40, zMm: 14, radiusMm: 2.5 },
      { kind: 'nodule', centreMm: [30, 26, 30], semiAxesMm: [6, 5, 5], yawDeg: 0 },
    ],
  },
  {
    ref: 'demo-4',
    description: 'Synthetic phantom (not a patient): 256³ at 0.4 mm (16 MiB), two hypoechoic lesions and a vessel',
    dims: [256, 256, 256],
    spacingMm: 0.4,
    seed: 0x0de0_0004,
    objects: [
      { kind: 'lesion', centreMm: [52, 50, 48], semiAxesMm: [14, 11, 12], yawDeg: 30 },
      { kind: 'lesion', centreMm: [78, 34, 70], semiAxesMm: [6, 5, 5.5], yawDeg: 0 },
      { kind: 'vessel', yMm: 80, zMm: 30, radiusMm: 3 },
    ],
  },
];

/** A 2.25 UID from a name: SHA-1 of namespace and name in the layout of a version 5 UUID (RFC 9562). */
function demoUid(name: string): string {
  const h = createHash('sha1').update(UID_NAMESPACE).update(`eco3d-demo/v${GENERATOR_VERSION}/${name}`).digest().subarray(0, 16);
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  return `2.25.${BigInt(`0x${h.toString('hex')}`).toString(10)}`;
}

/** Point (mm) inside an ellipsoid: the one test used both to paint and to count. */
function insideEllipsoid(e: Ellipsoid, x: number, y: number, z: number): boolean {
  const c = Math.cos((e.yawDeg * Math.PI) / 180);
  const s = Math.sin((e.yawDeg * Math.PI) / 180);
  const dx = x - e.centreMm[0];
  const dy = y - e.centreMm[1];
  const dz = z - e.centreMm[2];
  // Rotation about y: the ellipsoid's own axes u (x-ish), v = y, w (z-ish).
  const u = c * dx + s * dz;
  const w = -s * dx + c * dz;
  return (u / e.semiAxesMm[0]) ** 2 + (dy / e.semiAxesMm[1]) ** 2 + (w / e.semiAxesMm[2]) ** 2 <= 1;
}

/** Voxel index range [lo, hi] along one axis covering the ellipsoid's bounding sphere. */
function span(centreMm: number, radiusMm: number, spacingMm: number, n: number): [number, number] {
  return [Math.max(0, Math.floor((centreMm - radiusMm) / spacingMm) - 1), Math.min(n - 1, Math.ceil((centreMm + radiusMm) / spacingMm) + 1)];
}

/**
 * Paints each object's echogenicity into `db` (dB, added to the tissue's). Lesions last, so that
 * each keeps every voxel the count of `lesionVoxelCounts` gives it.
 */
function paintObjects(spec: PhantomSpec, db: Int8Array): void {
  const [nx, ny, nz] = spec.dims;
  const h = spec.spacingMm;
  const ordered = [...spec.objects.filter((o) => o.kind !== 'lesion'), ...spec.objects.filter((o) => o.kind === 'lesion')];
  for (const o of ordered) {
    if (o.kind === 'vessel') {
      const [y0, y1] = span(o.yMm, o.radiusMm, h, ny);
      const [z0, z1] = span(o.zMm, o.radiusMm, h, nz);
      for (let k = z0; k <= z1; k++) {
        for (let j = y0; j <= y1; j++) {
          if ((j * h - o.yMm) ** 2 + (k * h - o.zMm) ** 2 > o.radiusMm ** 2) continue;
          for (let i = 0, p = (k * ny + j) * nx; i < nx; i++, p++) db[p] = VESSEL_DB;
        }
      }
      continue;
    }
    const r = Math.max(...o.semiAxesMm);
    const [i0, i1] = span(o.centreMm[0], r, h, nx);
    const [j0, j1] = span(o.centreMm[1], r, h, ny);
    const [k0, k1] = span(o.centreMm[2], r, h, nz);
    for (let k = k0; k <= k1; k++) {
      for (let j = j0; j <= j1; j++) {
        for (let i = i0; i <= i1; i++) {
          if (insideEllipsoid(o, i * h, j * h, k * h)) db[(k * ny + j) * nx + i] = o.kind === 'lesion' ? LESION_DB : NODULE_DB;
        }
      }
    }
  }
}

/** The B-mode volume of a phantom. */
function synthesize(spec: PhantomSpec): Uint8Array {
  const [nx, ny, nz] = spec.dims;
  const h = spec.spacingMm;
  // Objects' dB (0 = plain tissue) per voxel; the layers and the smooth variation are per axis.
  const objectsDb = new Int8Array(nx * ny * nz);
  paintObjects(spec, objectsDb);
  const xDb = Float32Array.from({ length: nx }, (_, i) => 1.5 * Math.sin((2 * Math.PI * i * h) / 37 + 0.4));
  const zDb = Float32Array.from({ length: nz }, (_, k) => Math.cos((2 * Math.PI * k * h) / 53 + 1.1));
  const yDb = Float32Array.from({ length: ny }, (_, j) => {
    const y = j * h;
    // Subcutaneous fat (hypoechoic) to 3 mm, a bright fascia line at 3.5–4.5 mm, a slight loss with depth the TGC left.
    return (y < 3 ? FAT_DB : y >= 3.5 && y < 4.5 ? FASCIA_DB : 0) - 0.02 * y;
  });

  // Speckle, one z-slice at a time: uniform deviates on a (nx + 2) × (ny + 1) grid, summed over 3
  // in x and 2 in y (a slice's "partial" field), then over 2 consecutive slices in z.
  const gx = nx + 2;
  const gy = ny + 1;
  const ui = new Float32Array(gx * gy);
  const uq = new Float32Array(gx * gy);
  let state = spec.seed >>> 0 || 1;
  const partial = (si: Float32Array, sq: Float32Array): void => {
    // xorshift32, inlined: this loop draws two deviates per voxel of a 16 MiB volume.
    let x = state;
    for (let p = 0; p < ui.length; p++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      ui[p] = (x >>> 0) * 2.3283064365386963e-10 - 0.5;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      uq[p] = (x >>> 0) * 2.3283064365386963e-10 - 0.5;
    }
    state = x;
    for (let j = 0; j < ny; j++) {
      for (let i = 0, a = j * gx, s = j * nx; i < nx; i++, a++, s++) {
        const b = a + gx;
        si[s] = ui[a]! + ui[a + 1]! + ui[a + 2]! + ui[b]! + ui[b + 1]! + ui[b + 2]!;
        sq[s] = uq[a]! + uq[a + 1]! + uq[a + 2]! + uq[b]! + uq[b + 1]! + uq[b + 2]!;
      }
    }
  };
  // I and Q are sums of 12 uniform deviates of variance 1/12: variance 1 each, so |I + jQ|² has mean 2.
  const toDb = 10 / Math.LN10;
  const grayPerDb = 255 / DYNAMIC_RANGE_DB;
  const voxels = new Uint8Array(nx * ny * nz);
  let prevI = new Float32Array(nx * ny);
  let prevQ = new Float32Array(nx * ny);
  let curI = new Float32Array(nx * ny);
  let curQ = new Float32Array(nx * ny);
  partial(prevI, prevQ);
  for (let k = 0; k < nz; k++) {
    partial(curI, curQ);
    for (let j = 0; j < ny; j++) {
      const rowDb = yDb[j]! - BLACK_LEVEL_DB;
      for (let i = 0, s = j * nx, p = (k * ny + j) * nx; i < nx; i++, s++, p++) {
        const vi = curI[s]! + prevI[s]!;
        const vq = curQ[s]! + prevQ[s]!;
        // Speckle power normalized to mean 1, in dB, plus the echogenicity, over the black level.
        const db = toDb * Math.log((vi * vi + vq * vq) * 0.5 + 1e-12) + xDb[i]! * zDb[k]! + rowDb + objectsDb[p]!;
        const g = Math.round(db * grayPerDb);
        voxels[p] = g < 0 ? 0 : g > 255 ? 255 : g;
      }
    }
    [prevI, curI] = [curI, prevI];
    [prevQ, curQ] = [curQ, prevQ];
  }
  return voxels;
}

function dicomInput(spec: PhantomSpec, n: number, voxels: Uint8Array): EnhancedUsVolumeInput {
  const uid = (what: string): string => demoUid(`${spec.ref}/${what}`);
  const h = spec.spacingMm;
  const day = String(n).padStart(2, '0');
  return {
    patient: { name: 'DEMO^PHANTOM', id: `DEMO-PHANTOM-${n}` },
    study: {
      studyInstanceUid: uid('study'),
      studyId: `DEMO${n}`,
      accessionNumber: `DEMO${n}`,
      studyDateTime: `2024-01-${day}T09:00:00Z`,
      // Study Description is LO (64 characters): the long description is the catalog's.
      description: `Synthetic phantom ${n} (not a patient)`,
    },
    equipment: { manufacturer: 'Eco3D', modelName: 'Synthetic phantom', deviceSerialNumber: 'DEMO', softwareVersions: [`eco3d-demo-phantom/${GENERATOR_VERSION}`] },
    seriesInstanceUid: uid('series'),
    seriesNumber: 1,
    seriesDescription: 'Synthetic phantom volume',
    sopInstanceUid: uid('sop'),
    instanceNumber: 1,
    acquisitionDateTime: `2024-01-${day}T09:01:00Z`,
    contentDateTime: `2024-01-${day}T09:02:00Z`,
    anatomicRegion: { value: '818981001', scheme: 'SCT', meaning: 'Abdomen' },
    volume: { grid: { dims: spec.dims, spacingMm: { x: h, y: h, z: h }, originMm: { x: 0, y: 0, z: 0 } }, data: voxels },
    acquisitionDurationS: 10,
    frameOfReferenceUid: uid('frame-of-reference'),
    volumeFrameOfReferenceUid: uid('volume-frame-of-reference'),
    dimensionOrganizationUid: uid('dimension-organization'),
    synchronizationFrameOfReferenceUid: UTC_SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    volumeToTransducer: IDENTITY_MAT4(),
    volumeToTransducerRelationship: 'POSITION_VAR',
    tableFrameOfReferenceUid: uid('table-frame-of-reference'),
    volumeToTable: IDENTITY_MAT4(),
    tableToPatient: IDENTITY_MAT4(),
    transducer: {
      description: 'Synthetic linear probe',
      scanPattern: { value: '125241', scheme: 'DCM', meaning: 'Plane scan pattern' },
      geometry: { value: '125252', scheme: 'DCM', meaning: 'Linear ultrasound transducer geometry' },
      beamSteering: [{ value: '125257', scheme: 'DCM', meaning: 'Fixed beam direction' }],
      application: { value: '125261', scheme: 'DCM', meaning: 'External Transducer' },
    },
    scan: {
      view: { value: '399214001', scheme: 'SCT', meaning: 'Transverse' },
      processingFunction: 'B-MODE SYNTHETIC',
      mechanicalIndex: 0.8,
      boneThermalIndex: 0.2,
      cranialThermalIndex: 0.1,
      softTissueThermalIndex: 0.3,
      depthsOfFocusMm: [30],
      depthOfScanFieldMm: spec.dims[1] * h,
    },
  };
}

/** The file is there, complete, and made by this generator version (its SOP Instance UID says so). */
async function alreadyWritten(path: string, sopInstanceUid: string): Promise<number | null> {
  try {
    const h = await readVolumeHeader(path);
    const pixelEnd = h.pixelDataOffset + h.voxelsBytes + (h.voxelsBytes % 2);
    return h.sopInstanceUid === sopInstanceUid && h.fileSizeBytes === pixelEnd ? h.fileSizeBytes : null;
  } catch {
    // Missing, truncated or not ours: (re)write it.
    return null;
  }
}

/** The known answer: the painting's voxel test over each lesion's box. */
function lesionVoxelCounts(spec: PhantomSpec): number[] {
  const [nx, ny, nz] = spec.dims;
  const h = spec.spacingMm;
  const out: number[] = [];
  for (const o of spec.objects) {
    if (o.kind !== 'lesion') continue;
    const r = Math.max(...o.semiAxesMm);
    const [i0, i1] = span(o.centreMm[0], r, h, nx);
    const [j0, j1] = span(o.centreMm[1], r, h, ny);
    const [k0, k1] = span(o.centreMm[2], r, h, nz);
    let count = 0;
    for (let k = k0; k <= k1; k++) for (let j = j0; j <= j1; j++) for (let i = i0; i <= i1; i++) if (insideEllipsoid(o, i * h, j * h, k * h)) count++;
    out.push(count);
  }
  return out;
}

/**
 * Writes the demo studies into `dir` (created when missing) as `<ref>.dcm` and describes them.
 * Idempotent: the same bytes every run, and a file already written by this generator version is
 * not rewritten (nor regenerated). Files are written to a temporary name, then renamed.
 */
export async function writeDemoStudies(dir: string): Promise<DemoStudy[]> {
  await mkdir(dir, { recursive: true });
  const out: DemoStudy[] = [];
  for (const [index, spec] of PHANTOMS.entries()) {
    const n = index + 1;
    const path = join(dir, `${spec.ref}.dcm`);
    const h = spec.spacingMm;
    const voxelMl = (h * h * h) / 1000;
    let sizeBytes = await alreadyWritten(path, demoUid(`${spec.ref}/sop`));
    if (sizeBytes === null) {
      const bytes = encodeEnhancedUsVolume(dicomInput(spec, n, synthesize(spec)));
      const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
      try {
        await writeFile(tmp, bytes, { mode: 0o644 });
        await rename(tmp, path);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      sizeBytes = bytes.byteLength;
    }
    const lesionVoxels = lesionVoxelCounts(spec);
    const largest = lesionVoxels.length === 0 ? null : Math.round(Math.max(...lesionVoxels) * voxelMl * 100) / 100;
    const header = dicomInput(spec, n, new Uint8Array(0));
    out.push({
      ref: spec.ref,
      path,
      description: spec.description,
      dims: spec.dims,
      spacingMm: [h, h, h],
      sizeBytes,
      dicom: { common: { patient: header.patient, study: header.study, equipment: header.equipment }, seriesInstanceUid: header.seriesInstanceUid, sopInstanceUid: header.sopInstanceUid },
      expected: { largestLesionVolumeMl: largest },
    });
  }
  return out;
}

// The analysis-plugin API of the SDK (issue 8): what `analyze` receives and returns, and a few
// helpers. An analysis plugin is an ES module exporting
//
//   export async function analyze(input: AnalysisInput): Promise<AnalysisOutput>
//
// run by the platform in a sandbox of its own after a scan (no network, no files outside the
// plugin's own folder, memory/CPU/wall-time limits from its manifest), on a de-identified volume.
// Everything it needs must be inside its package: the sandbox copies that folder and nothing
// else, so a plugin written in TypeScript against these types is bundled before packing (the
// example marketplace/examples/lesion-volume is plain JavaScript for that reason).
//
// These types mirror the runner's (marketplace/sandbox.ts, PluginInput/PluginOutput; the tests
// check both ways) without importing it: the SDK stays free of Node modules.

/** A coded concept (DICOM Code Sequence macro), e.g. SCT 118565006 "Volume". */
export interface CodedConcept {
  /** Code Value, e.g. `118565006`. */
  readonly value: string;
  /** Coding Scheme Designator, e.g. `SCT` (SNOMED CT), `DCM`, `LN`. */
  readonly scheme: string;
  /** Code Meaning, e.g. `Volume`. */
  readonly meaning: string;
}

/**
 * The volume: an axis-aligned grid of 8-bit B-mode echo intensities (0 black … 255 white, log
 * compressed as displayed; darker = less echogenic).
 */
export interface AnalysisVolume {
  /**
   * Voxels along x, y, z: x = image columns (lateral), y = image rows (depth below the probe,
   * increasing away from it), z = frames (elevation: the sweep direction).
   */
  readonly dims: readonly [number, number, number];
  /** Voxel size along x, y, z in millimetres (centre-to-centre distances). */
  readonly spacingMm: readonly [number, number, number];
  /**
   * dims[0] × dims[1] × dims[2] bytes, x fastest, then y, then z: voxel (i, j, k) is
   * `voxels[i + dims[0] * (j + dims[1] * k)]` (see `voxelIndex`). Read-only in spirit: it is the
   * plugin's own copy, but nothing reads it back.
   */
  readonly voxels: Uint8Array;
}

export interface AnalysisInput {
  readonly volume: AnalysisVolume;
  /**
   * Opaque reference of the study (e.g. `demo-1` in the sandbox): only the platform can map it
   * back to the real study. Use it in logs, never expect it to mean anything.
   */
  readonly study: { readonly ref: string };
}

export interface AnalysisMeasurement {
  /** Shown to clinicians, e.g. `Lesion volume`. */
  readonly name: string;
  /** A finite number, in `unit`. */
  readonly value: number;
  /** UCUM code (case-sensitive): `mm`, `mm2`, `ml`, `%`, `1` for a count or ratio. */
  readonly unit: string;
  /** What is measured, coded (the concept name in the DICOM SR), e.g. `VOLUME_CONCEPT`; without it the name is coded privately. */
  readonly concept?: CodedConcept;
}

export interface AnalysisFinding {
  /** One sentence of free text for the report. */
  readonly text: string;
}

/**
 * What `analyze` returns: plain JSON (no typed arrays, no BigInt, no cycles), within the
 * manifest's `limits.outputBytes`. No measurement and a finding saying so is a valid answer.
 */
export interface AnalysisOutput {
  readonly measurements: readonly AnalysisMeasurement[];
  readonly findings: readonly AnalysisFinding[];
}

/** The plugin's entry point (the runner awaits it, so a plain return works too). */
export type AnalyzeFunction = (input: AnalysisInput) => Promise<AnalysisOutput> | AnalysisOutput;

/** SNOMED CT 118565006 "Volume", the concept of a volume measurement. */
export const VOLUME_CONCEPT: CodedConcept = Object.freeze({ value: '118565006', scheme: 'SCT', meaning: 'Volume' });

/** Volume of one voxel in mL (1 mL = 1000 mm³): a region's volume is its voxel count times this. */
export function voxelVolumeMl(spacingMm: readonly [number, number, number]): number {
  return (spacingMm[0] * spacingMm[1] * spacingMm[2]) / 1000;
}

/** Index in `voxels` of voxel (i, j, k) (x, y, z). */
export function voxelIndex(dims: readonly [number, number, number], i: number, j: number, k: number): number {
  return i + dims[0] * (j + dims[1] * k);
}

/**
 * A measurement, checked here so that a bad one fails in the plugin with a clear message rather
 * than being refused as bad output after the run.
 */
export function measurement(name: string, value: number, unit: string, concept?: CodedConcept): AnalysisMeasurement {
  if (typeof name !== 'string' || name.trim() === '') throw new TypeError('measurement: name must be a non-empty string');
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new RangeError(`measurement "${name}": value must be a finite number (got ${String(value)})`);
  if (typeof unit !== 'string') throw new TypeError(`measurement "${name}": unit must be a UCUM code string`);
  if (concept === undefined) return { name, value, unit };
  // The runner's limits (DICOM: Long Code Value, Coding Scheme Designator SH, Code Meaning LO).
  for (const [k, max] of [['value', 64], ['scheme', 16], ['meaning', 64]] as const) {
    const v = concept[k];
    if (typeof v !== 'string' || v === '' || v.length > max) throw new TypeError(`measurement "${name}": concept.${k} must be a string of 1 to ${max} characters`);
  }
  return { name, value, unit, concept: { value: concept.value, scheme: concept.scheme, meaning: concept.meaning } };
}

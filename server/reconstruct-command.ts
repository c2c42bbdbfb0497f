// `eco3d reconstruct`: offline volume reconstruction, a drop-in for the PLUS toolkit's
// VolumeReconstructor (same flags, same file formats, same output-grid rule).
//
//   eco3d reconstruct --config-file C.xml --source-seq-file S.igs.mha --output-volume-file V.mha
//                     [--image-to-reference-transform ImageToReference] [--disable-compression]
//                     [--threads N] [--plus-rounding]
import { availableParallelism } from 'node:os';
import {
  Eco3dError,
  parseTransformName,
  readPlusConfigFile,
  readPlusSequenceFile,
  trackedFramesFromSequence,
  transformRepositoryFromConfig,
  writeMetaImageVolumeFile,
  type PlusReconstructionConfig,
  type Volume,
} from '../protocols/index.ts';
import { computeOutputGrid, fillHoles, reconstructParallel, VolumeReconstructor, type ReconstructionOptions } from '../streamer/index.ts';

export interface ReconstructArgs {
  readonly configFile: string;
  readonly sourceSeqFile: string;
  readonly outputVolumeFile: string;
  /** Like PLUS: `ImageToReference` unless the config's coordinate frames say otherwise. */
  readonly imageToReferenceTransform?: string;
  readonly disableCompression?: boolean;
  /** Overrides the config's NumberOfThreads (0 = as many as cores). */
  readonly threads?: number;
  /**
   * PLUS-exact MEAN compounding (`--plus-rounding`; ReconstructionOptions.plusRounding): PLUS's
   * running 8-bit mean and 1/256 weight, re-rounded at every insertion and saturating. Not a PLUS
   * config attribute (PLUS always does this), so it is a flag only. MEAN configs only.
   */
  readonly plusRounding?: boolean;
}

export interface ReconstructReport {
  readonly outputVolumeFile: string;
  readonly dims: readonly [number, number, number];
  readonly originMm: readonly [number, number, number];
  readonly spacingMm: readonly [number, number, number];
  readonly framesInFile: number;
  readonly framesUsed: number;
  readonly framesSkipped: readonly { index: number; reason: string }[];
  readonly filledVoxels: number;
  readonly workers: number;
  /** True when MEAN used PLUS's per-insertion rounding (`--plus-rounding`). */
  readonly plusRounding: boolean;
  readonly elapsedMs: number;
}

/** Maps a PLUS `VolumeReconstruction` element onto our options (the names are PLUS's). */
export function reconstructionOptionsFromPlus(vr: PlusReconstructionConfig): ReconstructionOptions {
  if (vr.enableFanAnglesAutoDetect) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', 'EnableFanAnglesAutoDetect is not supported yet: give FanAnglesDeg explicitly');
  }
  return {
    outputSpacing: vr.outputSpacing,
    ...(vr.outputOrigin === undefined ? {} : { outputOrigin: vr.outputOrigin }),
    ...(vr.outputExtent === undefined ? {} : { outputExtent: vr.outputExtent }),
    interpolation: vr.interpolation,
    compoundingMode: vr.compoundingMode,
    clipRectangleOrigin: vr.clipRectangleOrigin,
    clipRectangleSize: vr.clipRectangleSize,
    fanAnglesDeg: vr.fanAnglesDeg,
    fanOriginPixel: vr.fanOriginPixel,
    fanRadiusStartPixel: vr.fanRadiusStartPixel,
    fanRadiusStopPixel: vr.fanRadiusStopPixel,
    // OPENCL is PLUS's GPU port of the optimized path
    optimization: vr.optimization === 'OPENCL' ? 'FULL' : vr.optimization,
    ...(vr.pixelRejectionThreshold === undefined ? {} : { pixelRejectionThreshold: vr.pixelRejectionThreshold }),
    skipInterval: vr.skipInterval,
  };
}

export async function runReconstruct(a: ReconstructArgs): Promise<ReconstructReport> {
  const t0 = performance.now();
  const cfg = await readPlusConfigFile(a.configFile);
  const vr = cfg.volumeReconstruction;
  if (vr === undefined) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${a.configFile}: no VolumeReconstruction element`);
  let imageFrame = vr.imageCoordinateFrame ?? 'Image';
  let referenceFrame = vr.referenceCoordinateFrame ?? 'Reference';
  if (a.imageToReferenceTransform !== undefined) {
    const n = parseTransformName(a.imageToReferenceTransform);
    if (n === undefined) throw new Eco3dError('ECO3D_ERR_CONFIG', `--image-to-reference-transform: expected a name like ImageToReference, got "${a.imageToReferenceTransform}"`);
    imageFrame = n.from;
    referenceFrame = n.to;
  }
  const seq = await readPlusSequenceFile(a.sourceSeqFile);
  const tracked = trackedFramesFromSequence(seq, transformRepositoryFromConfig(cfg), imageFrame, referenceFrame);
  if (tracked.frames.length === 0) {
    throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${a.sourceSeqFile}: no frame has a valid image and ${imageFrame}To${referenceFrame} transform`);
  }
  if (a.plusRounding === true && vr.compoundingMode !== 'MEAN') {
    throw new Eco3dError(
      'ECO3D_ERR_CONFIG',
      `--plus-rounding applies to CompoundingMode MEAN only; ${a.configFile} sets CompoundingMode ${vr.compoundingMode}, where PLUS rounds nothing (drop the flag)`,
    );
  }
  const options: ReconstructionOptions = { ...reconstructionOptionsFromPlus(vr), ...(a.plusRounding === true ? { plusRounding: true } : {}) };
  // As PLUS's VolumeReconstructor application: the grid always comes from the frames' clipped
  // corners (OutputOrigin/OutputExtent are for live reconstruction into a fixed grid).
  const grid = computeOutputGrid(tracked.frames, options);
  const threadsWanted = a.threads ?? vr.numberOfThreads;
  const workers = Math.max(1, threadsWanted === 0 ? availableParallelism() : threadsWanted);
  let rec: VolumeReconstructor;
  if (workers === 1) {
    rec = new VolumeReconstructor(options, grid);
    for (const f of tracked.frames) rec.pasteFrame(f);
  } else {
    rec = await reconstructParallel(tracked.frames, options, workers, grid);
  }
  let volume: Volume = rec.volume();
  let filledVoxels = 0;
  if (vr.fillHoles && vr.holeFilling.length > 0) {
    const needsWeights = vr.holeFilling.some((e) => e.type === 'GAUSSIAN_ACCUMULATION');
    const filled = fillHoles(volume, rec.coverage(), vr.holeFilling, needsWeights ? { accumulation: rec.accumulationWeights() } : {});
    volume = filled.volume;
    filledVoxels = filled.filledVoxels;
  }
  await writeMetaImageVolumeFile(a.outputVolumeFile, volume, { compress: a.disableCompression !== true });
  const g = volume.grid;
  return {
    outputVolumeFile: a.outputVolumeFile,
    dims: [g.dims[0], g.dims[1], g.dims[2]],
    originMm: [g.originMm.x, g.originMm.y, g.originMm.z],
    spacingMm: [g.spacingMm.x, g.spacingMm.y, g.spacingMm.z],
    framesInFile: seq.frameCountInFile,
    framesUsed: rec.stats.framesUsed,
    framesSkipped: tracked.skipped,
    filledVoxels,
    workers,
    plusRounding: rec.options.plusRounding,
    elapsedMs: Math.round(performance.now() - t0),
  };
}

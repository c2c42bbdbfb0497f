// The imaging side of an acquisition, shared by `eco3d scan` and `eco3d start`: B-mode frames are
// sampled from the ultrasound simulator at the probe pose the robot reports (30 fps on the
// robot's clock) during the sweep phase, then written as PLUS files and reconstructed.
//
// Frames are recorded during the sweep phase only: approach, descent and lift-off images show
// air, and pasting them would darken the volume.
//
// Per acquisition, in its folder:
//   tracked-frames.igs.mha  the frames, PLUS sequence metafile, a ProbeToReference transform each
//   reconstruction.xml      a PLUS device-set config: the ImageToProbe calibration and the
//                           VolumeReconstruction options used
//   volume.mha              what `eco3d reconstruct --config-file reconstruction.xml
//                           --source-seq-file tracked-frames.igs.mha` produces (it runs that code)
//   sweep-quality.json      what the data lake's quality gate reads (SweepQualityRecord): frames
//                           kept and dropped, the sweep phase's duration, and the contact force at
//                           each kept frame
import { createWriteStream, mkdirSync, readdirSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { join } from 'node:path';
import { type Observable, type Subscription } from 'rxjs';
import { filter } from 'rxjs/operators';
import type { AcquisitionSnapshot } from '../controller/index.ts';
import { Eco3dError, HOME_POSE, mat4Invert, mat4Mul, writePlusSequenceFileFromRaw, type Mat4, type RobotState, type SpooledFrame, type TrackedFrame } from '../protocols/index.ts';
import { createPhantom, imageGeometry, imageToProbe, startRenderWorker, UltrasoundSimulator, workerUltrasoundFrames$ } from '../sim/index.ts';
import type { ReconstructArgs, ReconstructReport } from './reconstruct-command.ts';

export interface SweepImagingOptions {
  /** Voxel size of volume.mha. */
  readonly outputSpacingMm?: number;
  /**
   * Frames kept per acquisition (640×480 = 300 kB each; 1800 = 60 s at 30 fps ≈ 550 MB). Frames
   * past it are counted as dropped, never silently lost.
   */
  readonly maxFrames?: number;
  /** Compress tracked-frames.igs.mha (zlib, on libuv's thread pool). Off in the server: it would take CPU from the control loop. */
  readonly compressFrames?: boolean;
  /**
   * Where a sweep's pixels go as they come (a sweep is up to 550 MB: not for RAM). Spools left
   * by a process that died are removed at start.
   */
  readonly spoolDir: string;
  /** The probe's contact force now (wrench z, positive pressing), sampled at each kept frame; null when unknown. */
  readonly contactForceN?: () => number | null;
}

/** sweep-quality.json: the facts a quality score is computed from (datalake/quality.ts). */
export interface SweepQualityRecord {
  readonly framesAcquired: number;
  readonly droppedFrames: number;
  readonly frameRateHz: number;
  /** From the first to the last kept frame, on the robot's clock. */
  readonly sweepDurationMs: number;
  /** One per kept frame with a force reading, newtons, rounded to 0.01. */
  readonly forceSamplesN: readonly number[];
}

export const SWEEP_QUALITY_FILE = 'sweep-quality.json';

/** The simulated scanner's frame rate, on the robot's clock. */
export const FRAME_RATE_HZ = 30;

export interface SweepImagingResult {
  readonly frames: number;
  readonly droppedFrames: number;
  readonly volume: ReconstructReport | undefined;
}

/** Frames are recorded (and pasted live) in the sweep phase only. */
export const isSweeping = (s: AcquisitionSnapshot): boolean => s.state === 'scanning' && s.sweepPhase === 'sweep';

/**
 * The simulated scanner: one phantom per process. This object gives the probe's geometry and
 * calibration; its frames are rendered by a twin in a worker thread (scannerFrames$).
 */
export function simulatedScanner(phantomSeed = 1): UltrasoundSimulator {
  return new UltrasoundSimulator(createPhantom(phantomSeed));
}

/**
 * The scanner's B-mode frames at the robot's probe pose, 30 fps on the robot's clock, rendered in
 * a worker thread with the same phantom: a render costs 5 ms on a fast machine and 40 ms on a
 * slow one, and on the control loop's thread it delayed the robot's state stream (the sweep's
 * watchdog aborted scans on a loaded 2-core machine). The worker's first render warms it up.
 */
export async function scannerFrames$(
  phantomSeed: number,
  states$: Observable<RobotState>,
  onError: (err: unknown) => void,
): Promise<{ frames$: Observable<TrackedFrame>; close(): Promise<void> }> {
  const worker = await startRenderWorker(phantomSeed);
  await worker.render(HOME_POSE, 0);
  return { frames$: workerUltrasoundFrames$((pose, tMs) => worker.render(pose, tMs), states$, FRAME_RATE_HZ, onError), close: () => worker.close() };
}

/** The sweep being recorded: its frames' pixels go to a spool file as they come, the rest stays here. */
interface Recording {
  readonly uid: string;
  readonly spoolFile: string;
  readonly out: WriteStream;
  readonly frames: SpooledFrame[];
  readonly forceSamplesN: number[];
  dropped: number;
  failure: Error | undefined;
}

export class SweepImaging {
  private readonly probeFromImage: Mat4;
  private readonly maxFrames: number;
  private rec: Recording | null = null;
  /** The last acquisition finished or discarded. */
  private ended: string | null = null;
  private readonly sub: Subscription;

  constructor(
    /** The simulated scanner's frames (rendered by the caller; only sweep-phase frames are kept). */
    frames$: Observable<TrackedFrame>,
    /** The scanner that renders them (its calibration goes into reconstruction.xml). */
    readonly simulator: UltrasoundSimulator,
    /** The acquisition's current state (a function: the controller may be built after this). */
    snapshot: () => AcquisitionSnapshot,
    private readonly opts: SweepImagingOptions,
  ) {
    this.probeFromImage = mat4Invert(imageToProbe(this.simulator.probe))!;
    this.maxFrames = opts.maxFrames ?? 1800;
    mkdirSync(opts.spoolDir, { recursive: true });
    // Spools of a process that died mid-sweep: their acquisitions can no longer finish.
    for (const name of readdirSync(opts.spoolDir)) if (name.endsWith(SPOOL_SUFFIX)) rmSync(join(opts.spoolDir, name), { force: true });
    this.sub = frames$.pipe(filter(() => isSweeping(snapshot()))).subscribe((f) => {
      const uid = snapshot().acquisitionUid;
      // A frame rendered after its acquisition was finished or discarded is not kept.
      if (uid === null || uid === this.ended) return;
      if (this.rec?.uid !== uid) this.begin(uid);
      const rec = this.rec!;
      if (rec.frames.length >= this.maxFrames) {
        rec.dropped++;
        return;
      }
      // ProbeToReference = ImageToReference · ProbeToImage: what a tracker would have recorded.
      const probeToReference = mat4Mul(f.imageToReference, this.probeFromImage);
      rec.frames.push({ timestampS: f.tMs / 1000, transforms: new Map([['ProbeToReference', probeToReference]]) });
      const forceN = opts.contactForceN?.() ?? null;
      if (forceN !== null && Number.isFinite(forceN)) rec.forceSamplesN.push(Math.round(forceN * 100) / 100);
      // Asynchronous, in order; the stream holds the buffer until it is on disk.
      rec.out.write(f.pixels);
    });
  }

  private begin(uid: string): void {
    this.drop();
    const spoolFile = join(this.opts.spoolDir, `${uid}${SPOOL_SUFFIX}`);
    const out = createWriteStream(spoolFile);
    const rec: Recording = { uid, spoolFile, out, frames: [], forceSamplesN: [], dropped: 0, failure: undefined };
    out.on('error', (err) => {
      rec.failure ??= err;
    });
    this.rec = rec;
  }

  /** Forgets the current recording and removes its spool. */
  private drop(): void {
    const rec = this.rec;
    this.rec = null;
    if (rec === null) return;
    rec.out.destroy();
    rmSync(rec.spoolFile, { force: true });
  }

  /** Frames recorded so far for this acquisition (the acquisition's `framesAcquired`). */
  frameCount(acquisitionUid: string): number {
    return this.rec?.uid === acquisitionUid ? this.rec.frames.length : 0;
  }

  /**
   * Writes the acquisition's frames and config into `dir` and reconstructs them with `reconstruct`
   * (in-process for the CLI; a child process in the server, off the control loop). Removes the
   * spool.
   */
  async finish(
    acquisitionUid: string,
    dir: string,
    reconstruct: (args: ReconstructArgs) => Promise<ReconstructReport>,
  ): Promise<SweepImagingResult> {
    this.ended = acquisitionUid;
    const rec = this.rec?.uid === acquisitionUid ? this.rec : null;
    if (rec === null) return { frames: 0, droppedFrames: 0, volume: undefined };
    this.rec = null;
    try {
      rec.out.end();
      await finished(rec.out).catch((err: unknown) => {
        rec.failure ??= err as Error;
      });
      if (rec.failure !== undefined) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${rec.spoolFile}: the sweep's frames could not be spooled (${rec.failure.message})`, { cause: rec.failure });
      if (rec.frames.length === 0) return { frames: 0, droppedFrames: rec.dropped, volume: undefined };
      const g = imageGeometry(this.simulator.probe);
      const seqFile = join(dir, 'tracked-frames.igs.mha');
      const configFile = join(dir, 'reconstruction.xml');
      await writePlusSequenceFileFromRaw(seqFile, { width: g.widthPx, height: g.heightPx, frames: rec.frames }, rec.spoolFile, { compress: this.opts.compressFrames ?? true });
      writeFileSync(configFile, reconstructionConfigXml(this.simulator, this.opts.outputSpacingMm ?? 0.5));
      const quality: SweepQualityRecord = {
        framesAcquired: rec.frames.length,
        droppedFrames: rec.dropped,
        frameRateHz: FRAME_RATE_HZ,
        sweepDurationMs: Math.round(((rec.frames.at(-1)?.timestampS ?? 0) - (rec.frames[0]?.timestampS ?? 0)) * 1000),
        forceSamplesN: rec.forceSamplesN,
      };
      writeFileSync(join(dir, SWEEP_QUALITY_FILE), `${JSON.stringify(quality)}\n`);
      const volume = await reconstruct({ configFile, sourceSeqFile: seqFile, outputVolumeFile: join(dir, 'volume.mha') });
      return { frames: rec.frames.length, droppedFrames: rec.dropped, volume };
    } finally {
      rmSync(rec.spoolFile, { force: true });
    }
  }

  /** Drops the frames of an acquisition that will not be reconstructed (it aborted). */
  discard(acquisitionUid: string): void {
    this.ended = acquisitionUid;
    if (this.rec?.uid === acquisitionUid) this.drop();
  }

  close(): void {
    this.sub.unsubscribe();
    this.drop();
  }
}

const SPOOL_SUFFIX = '.frames.raw';

/** A PLUS device-set config with this probe's calibration and our default reconstruction. */
function reconstructionConfigXml(sim: UltrasoundSimulator, spacingMm: number): string {
  const fan = imageGeometry(sim.probe).fan;
  const clip =
    fan === null
      ? ''
      : `\n    FanAnglesDeg="${fan.anglesDeg[0]} ${fan.anglesDeg[1]}" FanOriginPixel="${fan.originPx.u} ${fan.originPx.v}" FanRadiusStartPixel="${fan.radiusStartPx}" FanRadiusStopPixel="${fan.radiusStopPx}"`;
  return `<PlusConfiguration version="2.1">
  <CoordinateDefinitions>
    <Transform From="Image" To="Probe" Matrix="${[...imageToProbe(sim.probe)].join(' ')}" />
  </CoordinateDefinitions>
  <VolumeReconstruction ImageCoordinateFrame="Image" ReferenceCoordinateFrame="Reference"
    OutputSpacing="${spacingMm} ${spacingMm} ${spacingMm}"
    Interpolation="NEAREST_NEIGHBOR" CompoundingMode="MEAN"${clip}
    FillHoles="ON" NumberOfThreads="1">
    <HoleFilling>
      <HoleFillingElement Type="STICK" StickLengthLimit="9" NumberOfSticksToUse="1" />
    </HoleFilling>
  </VolumeReconstruction>
</PlusConfiguration>
`;
}

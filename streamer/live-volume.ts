// The volume that grows while the robot scans: one VolumeReconstructor per acquisition, fed
// frame by frame through a ReconstructionPipeline (pipeline.ts), whose deltas name the bricks
// that changed. Viewers read brick CONTENT at send time (live-hub.ts), so a slow viewer always
// gets the newest voxels of a brick, never a stale copy.
//
// The grid is fixed when the sweep starts, from the plan: streaming needs a grid that does not
// move. `liveGridFor` sizes it to cover the whole planned sweep with the image's width and depth.
import { Subject, type Observable, type Subscription } from 'rxjs';
import type { TrackedFrame, VolumeGrid } from '../protocols/imaging.ts';
import { ReconstructionPipeline, type PipelineStats } from './pipeline.ts';
import { VolumeReconstructor, type BrickVoxels, type ReconstructionOptions } from './reconstruct.ts';

/** One update of the live volume: the bricks that changed since the previous one. */
export interface LiveVolumeUpdate {
  readonly gridId: number;
  readonly seq: number;
  readonly bricks: readonly number[];
  /** Frames pasted into this grid so far. */
  readonly framesPasted: number;
  /** Wall clock when the delta was cut. */
  readonly cutAtMs: number;
}

export interface LiveGridInfo {
  readonly gridId: number;
  readonly acquisitionUid: string;
  readonly grid: VolumeGrid;
  readonly brickSize: number;
}

/** What viewers need of the live volume (live-hub.ts). */
export interface LiveVolumeSource {
  /** The current grid, or null before the first sweep. */
  current(): LiveGridInfo | null;
  /** Bricks of the current grid that hold data (a joining viewer's snapshot). */
  touchedBricks(): readonly number[];
  /** Current content of one brick of the current grid. */
  brickVoxels(index: number): BrickVoxels;
  /** Hot: a new grid (a new acquisition's sweep began). */
  readonly grids$: Observable<LiveGridInfo>;
  /** Hot: deltas of the current grid. */
  readonly updates$: Observable<LiveVolumeUpdate>;
}

export interface LiveVolumeOptions {
  /** Cut a delta every N frames… */
  readonly everyFrames?: number;
  /** …or every T ms, whichever first. 2 frames / 33 ms keeps the lag under 100 ms at 30 fps (see README). */
  readonly everyMs?: number;
  readonly brickSize?: number;
  readonly interpolation?: ReconstructionOptions['interpolation'];
  readonly compoundingMode?: ReconstructionOptions['compoundingMode'];
  /** Refuse (ECO3D_ERR_…) grids above this; the default is the reconstructor's budget. */
  readonly memoryBudgetBytes?: number;
  readonly now?: () => number;
}

export class LiveVolume implements LiveVolumeSource {
  readonly #grids = new Subject<LiveGridInfo>();
  readonly #updates = new Subject<LiveVolumeUpdate>();
  readonly grids$ = this.#grids.asObservable();
  readonly updates$ = this.#updates.asObservable();
  #info: LiveGridInfo | null = null;
  #rec: VolumeReconstructor | null = null;
  #frames: Subject<TrackedFrame> | null = null;
  #pipeline: ReconstructionPipeline<number> | null = null;
  #sub: Subscription | null = null;
  readonly #touched = new Set<number>();
  #nextGridId = 1;
  #framesPasted = 0;

  constructor(private readonly opts: LiveVolumeOptions = {}) {}

  current(): LiveGridInfo | null {
    return this.#info;
  }

  touchedBricks(): readonly number[] {
    return [...this.#touched];
  }

  brickVoxels(index: number): BrickVoxels {
    if (this.#rec === null) throw new RangeError('no live volume');
    return this.#rec.brickVoxels(index);
  }

  /**
   * Starts a new grid for an acquisition (allocates; throws ECO3D_ERR_MEMORY_BUDGET-style errors
   * from the reconstructor when it does not fit). The previous grid, if any, ends.
   */
  begin(acquisitionUid: string, grid: VolumeGrid): LiveGridInfo {
    this.end();
    const brickSize = this.opts.brickSize ?? 32;
    const rec = new VolumeReconstructor(
      {
        outputSpacing: [grid.spacingMm.x, grid.spacingMm.y, grid.spacingMm.z],
        outputOrigin: [grid.originMm.x, grid.originMm.y, grid.originMm.z],
        outputExtent: [0, grid.dims[0] - 1, 0, grid.dims[1] - 1, 0, grid.dims[2] - 1],
        interpolation: this.opts.interpolation ?? 'NEAREST_NEIGHBOR',
        compoundingMode: this.opts.compoundingMode ?? 'MEAN',
        brickSize,
        ...(this.opts.memoryBudgetBytes === undefined ? {} : { memoryBudgetBytes: this.opts.memoryBudgetBytes }),
      },
      grid,
    );
    const info: LiveGridInfo = { gridId: this.#nextGridId++, acquisitionUid, grid: rec.grid, brickSize };
    const frames = new Subject<TrackedFrame>();
    const pipeline = new ReconstructionPipeline<number>(
      frames,
      { pasteFrame: (f) => rec.pasteFrame(f), takeChangedBricks: () => Array.from(rec.takeChangedBricks().indices) },
      { everyFrames: this.opts.everyFrames ?? 2, everyMs: this.opts.everyMs ?? 33 },
    );
    this.#rec = rec;
    this.#info = info;
    this.#frames = frames;
    this.#pipeline = pipeline;
    this.#touched.clear();
    this.#framesPasted = 0;
    const now = this.opts.now ?? Date.now;
    this.#sub = pipeline.deltas$.subscribe((d) => {
      for (const b of d.bricks) this.#touched.add(b);
      this.#framesPasted += d.framesPasted;
      this.#updates.next({ gridId: info.gridId, seq: d.seq, bricks: d.bricks, framesPasted: this.#framesPasted, cutAtMs: now() });
    });
    pipeline.start();
    this.#grids.next(info);
    return info;
  }

  /** Queues a frame for the current grid (ignored when none). Never blocks: the pipeline pastes in its own tasks. */
  push(frame: TrackedFrame): void {
    this.#frames?.next(frame);
  }

  /** Ends the current grid's input; its volume stays readable until the next begin(). */
  end(): void {
    this.#frames?.complete();
    this.#frames = null;
  }

  stats(): PipelineStats | null {
    return this.#pipeline?.stats() ?? null;
  }

  close(): void {
    this.end();
    this.#sub?.unsubscribe();
    this.#pipeline?.close();
    this.#grids.complete();
    this.#updates.complete();
  }
}

/** The image's extent in the probe frame, for sizing grids (mm). */
export interface ProbeImageExtent {
  readonly widthMm: number;
  readonly depthMm: number;
}

/** A linear sweep: start and end on the skin; a fan: the contact point and the tilt range. */
export type LiveSweepShape =
  | { readonly kind: 'linear'; readonly startMm: { x: number; y: number; z: number }; readonly endMm: { x: number; y: number; z: number }; readonly tiltRad: number }
  | { readonly kind: 'fan'; readonly contactMm: { x: number; y: number; z: number }; readonly maxTiltRad: number };

/**
 * A grid that covers a planned sweep: the path, widened by half the image width (any heading),
 * deepened by the image depth below the lowest skin point, plus a margin for force control and
 * tilt. Spacing starts at `spacingMm` and grows until the grid fits `maxVoxels`.
 */
export function liveGridFor(shape: LiveSweepShape, image: ProbeImageExtent, opts: { spacingMm?: number; maxVoxels?: number; marginMm?: number } = {}): VolumeGrid {
  const margin = opts.marginMm ?? 5;
  let lo: [number, number, number];
  let hi: [number, number, number];
  if (shape.kind === 'linear') {
    const reach = image.widthMm / 2 + image.depthMm * Math.abs(Math.sin(shape.tiltRad)) + margin;
    const a = shape.startMm;
    const b = shape.endMm;
    lo = [Math.min(a.x, b.x) - reach, Math.min(a.y, b.y) - reach, Math.min(a.z, b.z) - image.depthMm - margin];
    hi = [Math.max(a.x, b.x) + reach, Math.max(a.y, b.y) + reach, Math.max(a.z, b.z) + margin];
  } else {
    const c = shape.contactMm;
    const reach = Math.max(image.widthMm / 2, image.depthMm * Math.sin(Math.min(Math.PI / 2, Math.abs(shape.maxTiltRad))) + image.widthMm / 2) + margin;
    lo = [c.x - reach, c.y - reach, c.z - image.depthMm - margin];
    hi = [c.x + reach, c.y + reach, c.z + margin];
  }
  const maxVoxels = opts.maxVoxels ?? 256 ** 3;
  let s = opts.spacingMm ?? 0.5;
  const dimsAt = (sp: number): [number, number, number] => [0, 1, 2].map((i) => Math.max(1, Math.ceil((hi[i]! - lo[i]!) / sp) + 1)) as [number, number, number];
  let dims = dimsAt(s);
  while (dims[0] * dims[1] * dims[2] > maxVoxels) {
    s *= Math.cbrt((dims[0] * dims[1] * dims[2]) / maxVoxels) * 1.01;
    dims = dimsAt(s);
  }
  return { originMm: { x: lo[0], y: lo[1], z: lo[2] }, spacingMm: { x: s, y: s, z: s }, dims };
}

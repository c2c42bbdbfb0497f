// Transform chains by coordinate-frame name, as the PLUS toolkit's transform repository composes
// them (learned from IGSIO's vtkIGSIOTransformRepository and PLUS's docs
// docs/CoordinateSystemDefinitions.md; our own code).
//
// Names are `<From>To<To>`: `ImageToProbe` maps points in the Image frame into the Probe frame.
// The repository is a graph whose nodes are frame names and whose edges are the transforms given
// (from the config's CoordinateDefinitions and from a frame's `…Transform` fields) plus their
// inverses. `get('Image', 'Reference')` walks the one path between the two frames, e.g.
// ImageToReference = TrackerToReference · ProbeToTracker · ImageToProbe
// (ImageToProbe applied first), where TrackerToReference is the inverse of the recorded
// ReferenceToTracker.
//
// Like PLUS:
// - a transform whose inverse was given (ProbeToImage next to ImageToProbe), or one that would
//   close a loop (a second path between two frames), is refused;
// - a frame's transform replaces a config transform of the same name for that frame;
// - a transform whose status is not OK is part of the graph but cannot be used.
// Unlike PLUS:
// - a frame's transforms are NOT carried over to the next frame: `forFrame()` builds a fresh
//   view from the config transforms and that frame's own fields, so a frame that lacks a
//   transform never silently reuses the previous frame's value;
// - an invalid transform in the path is an error naming it (PLUS returns the matrix with a
//   combined non-OK status that its reconstructor then skips).
import { Eco3dError } from './errors.ts';
import { mat4Invert, mat4Mul, IDENTITY_MAT4, type Mat4, type TrackedFrame } from './imaging.ts';
import { badFileError } from './metaimage.ts';
import type { PlusFrame, PlusSequence } from './plus-sequence.ts';

export interface TransformName {
  readonly from: string;
  readonly to: string;
}

/**
 * Parses `ProbeToTracker` (or `ProbeToTrackerTransform`) into `{from: 'Probe', to: 'Tracker'}`
 * with PLUS's rule: exactly one "To" followed by an upper-case character (so the "To" in
 * `TestToolToTracker`'s "Tool" does not count); both names are capitalized. Returns undefined
 * for a name that does not parse.
 */
export function parseTransformName(name: string): TransformName | undefined {
  let text = name.trim();
  if (text.endsWith('Transform')) text = text.slice(0, -'Transform'.length);
  let at = -1;
  let matches = 0;
  for (let i = text.indexOf('To'); i !== -1; i = text.indexOf('To', i + 2)) {
    const next = text[i + 2];
    if (next !== undefined && next === next.toUpperCase()) {
      matches++;
      at = i;
    }
  }
  if (matches !== 1 || at <= 0 || at + 2 >= text.length) return undefined;
  const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
  return { from: cap(text.slice(0, at)), to: cap(text.slice(at + 2)) };
}

export function transformName(from: string, to: string): string {
  return `${from}To${to}`;
}

interface Edge {
  readonly matrix: Mat4;
  /** True for a transform that was given; false for the inverse we computed. */
  readonly original: boolean;
  /** 'OK', or the non-OK status (INVALID, MISSING, …): such an edge cannot be used. */
  readonly status: string;
  /** Where the given transform came from, for messages ("config", "frame"). */
  readonly origin: string;
}

export type TransformLookup =
  | { readonly ok: true; readonly matrix: Mat4; readonly path: readonly string[] }
  | { readonly ok: false; readonly kind: 'invalid' | 'no-path'; readonly reason: string; readonly invalid: readonly string[] };

export class TransformRepository {
  readonly #edges = new Map<string, Map<string, Edge>>();
  /** The file (config or sequence) this repository's transforms came from, for messages. */
  readonly source: string;
  /** The frame this view was made for (see `forFrame`), for messages. */
  readonly frameIndex: number | undefined;

  constructor(source = '<transforms>', frameIndex?: number) {
    this.source = source;
    this.frameIndex = frameIndex;
  }

  /**
   * Adds (or replaces) the transform `from`→`to`. Refused: a transform to itself, a non-finite
   * or singular matrix, a transform whose inverse was given, and one that would close a loop.
   */
  set(from: string, to: string, matrix: Mat4, opts: { status?: string; origin?: string } = {}): void {
    const name = transformName(from, to);
    const where = { file: this.source, frame: this.frameIndex, field: name };
    if (from === to) throw badFileError(where, 'a transform from a frame to itself is not allowed');
    const status = opts.status ?? 'OK';
    const origin = opts.origin ?? 'given';
    if (matrix.length !== 16 || !matrix.every((v) => Number.isFinite(v))) throw badFileError(where, 'the matrix has non-finite entries');
    const inverse = mat4Invert(matrix);
    if (inverse === null) throw badFileError(where, 'the matrix is singular (it has no inverse)');
    const existing = this.#edges.get(from)?.get(to);
    if (existing !== undefined && !existing.original) {
      throw badFileError(where, `cannot be set: its inverse ${transformName(to, from)} is already defined (${this.#edges.get(to)?.get(from)?.origin ?? 'given'})`);
    }
    if (existing === undefined) {
      const path = this.#findPath(from, to, false);
      if (path !== undefined) throw badFileError(where, `would close a loop: a path already exists (${path.join(' → ')})`);
    }
    this.#edge(from).set(to, { matrix: new Float64Array(matrix), original: true, status, origin });
    this.#edge(to).set(from, { matrix: inverse, original: false, status, origin });
  }

  /** A copy, for the given source and frame (used by `forFrame`). */
  clone(source = this.source, frameIndex = this.frameIndex): TransformRepository {
    const copy = new TransformRepository(source, frameIndex);
    for (const [from, m] of this.#edges) copy.#edges.set(from, new Map(m));
    return copy;
  }

  /**
   * A view for one frame: these transforms (the config's) plus the frame's own transforms, added
   * in name order as PLUS does. Its non-OK transforms are present but unusable.
   */
  forFrame(frame: Pick<PlusFrame, 'index' | 'transforms' | 'invalidTransforms'>, source = this.source): TransformRepository {
    const view = this.clone(source, frame.index);
    const names = [...new Set([...frame.transforms.keys(), ...frame.invalidTransforms.keys()])].sort();
    for (const name of names) {
      const parsed = parseTransformName(name);
      if (parsed === undefined) throw badFileError({ file: source, frame: frame.index, field: `${name}Transform` }, 'is not a <From>To<To> transform name');
      const m = frame.transforms.get(name);
      const status = m === undefined ? frame.invalidTransforms.get(name) ?? 'INVALID' : 'OK';
      view.set(parsed.from, parsed.to, m ?? IDENTITY_MAT4(), { status, origin: 'frame' });
    }
    return view;
  }

  /** The given (not computed) transforms, e.g. `ImageToProbe (config, OK)`. */
  describe(): string[] {
    const out: string[] = [];
    for (const [from, m] of this.#edges) for (const [to, e] of m) if (e.original) out.push(`${transformName(from, to)} (${e.origin}, ${e.status})`);
    return out.sort();
  }

  /** Looks `from`→`to` up without throwing. The identity when `from === to`. */
  tryGet(from: string, to: string): TransformLookup {
    if (from === to) return { ok: true, matrix: IDENTITY_MAT4(), path: [from] };
    const path = this.#findPath(from, to, true);
    if (path !== undefined) {
      let m = IDENTITY_MAT4();
      for (let i = 0; i + 1 < path.length; i++) m = mat4Mul(this.#edges.get(path[i]!)!.get(path[i + 1]!)!.matrix, m);
      return { ok: true, matrix: m, path };
    }
    const anyPath = this.#findPath(from, to, false);
    if (anyPath !== undefined) {
      const invalid: string[] = [];
      for (let i = 0; i + 1 < anyPath.length; i++) {
        const e = this.#edges.get(anyPath[i]!)!.get(anyPath[i + 1]!)!;
        if (e.status !== 'OK') invalid.push(e.original ? transformName(anyPath[i]!, anyPath[i + 1]!) : transformName(anyPath[i + 1]!, anyPath[i]!));
      }
      const what = invalid.map((n) => `${n} is ${this.#statusOf(n)}`).join(', ');
      return { ok: false, kind: 'invalid', invalid, reason: `the path ${anyPath.join(' → ')} needs ${what}${this.frameIndex === undefined ? '' : ' in this frame'}` };
    }
    const fromSide = this.#reachable(from);
    const toSide = this.#reachable(to);
    const known = this.describe();
    return {
      ok: false,
      kind: 'no-path',
      invalid: [],
      reason:
        `no transform path from ${from} to ${to}: ${from} reaches {${fromSide.join(', ')}}, ${to} reaches {${toSide.join(', ')}}; ` +
        `a transform linking the two groups is missing (from CoordinateDefinitions or the frame's fields). ` +
        `Known transforms: ${known.length === 0 ? 'none' : known.join(', ')}`,
    };
  }

  /** The transform `from`→`to` composed along the graph; a clear error when a link is missing or invalid. */
  get(from: string, to: string): Mat4 {
    const r = this.tryGet(from, to);
    if (r.ok) return r.matrix;
    throw badFileError({ file: this.source, frame: this.frameIndex, field: transformName(from, to) }, r.reason);
  }

  #statusOf(name: string): string {
    const p = parseTransformName(name);
    return p === undefined ? '?' : this.#edges.get(p.from)?.get(p.to)?.status ?? '?';
  }

  #edge(from: string): Map<string, Edge> {
    let m = this.#edges.get(from);
    if (m === undefined) {
      m = new Map();
      this.#edges.set(from, m);
    }
    return m;
  }

  #reachable(start: string): string[] {
    const seen = new Set([start]);
    const queue = [start];
    for (let q = queue.shift(); q !== undefined; q = queue.shift()) {
      for (const next of this.#edges.get(q)?.keys() ?? []) {
        if (!seen.has(next)) {
          seen.add(next);
          queue.push(next);
        }
      }
    }
    return [...seen].sort();
  }

  /** Breadth-first path of frame names from → to (over OK edges only when `validOnly`). */
  #findPath(from: string, to: string, validOnly: boolean): string[] | undefined {
    const parent = new Map<string, string>([[from, from]]);
    const queue = [from];
    for (let q = queue.shift(); q !== undefined; q = queue.shift()) {
      if (q === to) break;
      for (const [next, e] of this.#edges.get(q) ?? []) {
        if (parent.has(next) || (validOnly && e.status !== 'OK')) continue;
        parent.set(next, q);
        queue.push(next);
      }
    }
    if (!parent.has(to)) return undefined;
    const path = [to];
    while (path[0] !== from) path.unshift(parent.get(path[0]!)!);
    return path;
  }
}

/** Frames with their `imageToReference`, and the frames that were skipped and why. */
export interface TrackedSequence {
  readonly frames: TrackedFrame[];
  /** Frames whose transform chain had an invalid link in that frame (PLUS skips them too). */
  readonly skipped: ReadonlyArray<{ readonly index: number; readonly reason: string }>;
  /** Frames the sequence itself skipped (ImageStatus not OK), by index. */
  readonly invalidImages: readonly number[];
}

/**
 * Resolves every frame's Image→Reference transform: `base` (the config's CoordinateDefinitions)
 * plus the frame's own transforms. A frame whose chain has an invalid link (a tracker that lost
 * the probe) is skipped and listed; a chain with no path at all (a transform never recorded nor
 * configured) is an error naming the missing link and the frame. `tMs` is the frame's Timestamp
 * in ms (0 when the file has none); `index` is the frame's number in the file.
 */
export function trackedFramesFromSequence(seq: PlusSequence, base: TransformRepository, imageFrame: string, referenceFrame: string): TrackedSequence {
  if (imageFrame === '' || referenceFrame === '') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the image and reference coordinate frames must be named (ImageCoordinateFrame, ReferenceCoordinateFrame)');
  const frames: TrackedFrame[] = [];
  const skipped: Array<{ index: number; reason: string }> = [];
  for (const f of seq.frames) {
    const view = base.forFrame(f, seq.source);
    const r = view.tryGet(imageFrame, referenceFrame);
    if (!r.ok) {
      if (r.kind === 'invalid') {
        skipped.push({ index: f.index, reason: r.reason });
        continue;
      }
      throw badFileError({ file: seq.source, frame: f.index, field: transformName(imageFrame, referenceFrame) }, r.reason);
    }
    frames.push({ index: f.index, tMs: (f.timestampS ?? 0) * 1000, width: f.width, height: f.height, pixels: f.pixels, imageToReference: r.matrix });
  }
  return { frames, skipped, invalidImages: seq.skippedFrames };
}

// PLUS device-set configuration files (XML): the `CoordinateDefinitions` transforms and the
// `VolumeReconstruction` element with its `HoleFilling` children, as PLUS's VolumeReconstructor
// reads them. Attribute names, defaults and deprecated spellings follow IGSIO's
// vtkIGSIOVolumeReconstructor::ReadConfiguration and vtkIGSIOFillHolesInVolume::ReadConfiguration
// and PLUS's docs/algorithms/AlgorithmVolumeReconstruction.md (learned from, not copied).
//
// Stricter than PLUS, on purpose: PLUS logs a warning and carries on for an unknown attribute,
// an unknown option value or a vector with the wrong number of items; here each is an
// ECO3D_ERR_BAD_FILE error naming the file, the element and the attribute. Option values are
// case-insensitive, as in PLUS. `Error`, `Date`, `Persistent` and `Status` of a
// CoordinateDefinitions transform are ignored.
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { Mat4 } from './imaging.ts';
import { badFileError, parseNumbers, readFileBytes } from './metaimage.ts';
import { TransformRepository } from './plus-transforms.ts';

export type PlusInterpolation = 'NEAREST_NEIGHBOR' | 'LINEAR';
export type PlusCompoundingMode = 'MEAN' | 'MAXIMUM' | 'LATEST';
/** PLUS's paste-path switch; the results depend on it only at the fan edges (OPENCL is treated as FULL). */
export type PlusOptimization = 'NONE' | 'PARTIAL' | 'FULL' | 'OPENCL';

export type PlusHoleFillingElement =
  | { readonly type: 'STICK'; readonly stickLengthLimit: number; readonly numberOfSticksToUse: number }
  | { readonly type: 'GAUSSIAN' | 'GAUSSIAN_ACCUMULATION'; readonly size: number; readonly stdev: number; readonly minimumKnownVoxelsRatio: number }
  | { readonly type: 'NEAREST_NEIGHBOR' | 'DISTANCE_WEIGHT_INVERSE'; readonly size: number; readonly minimumKnownVoxelsRatio: number };

export type Vec2Tuple = readonly [number, number];
export type Vec3Tuple = readonly [number, number, number];

/** The `VolumeReconstruction` element. Comments give the XML attribute and PLUS's default. */
export interface PlusReconstructionConfig {
  /** ImageCoordinateFrame (optional; the `--image-to-reference-transform` flag can set it). */
  readonly imageCoordinateFrame: string | undefined;
  /** ReferenceCoordinateFrame (optional, likewise). */
  readonly referenceCoordinateFrame: string | undefined;
  /** OutputSpacing, mm (required). */
  readonly outputSpacing: Vec3Tuple;
  /** OutputOrigin, mm, centre of voxel (0,0,0) (PLUS default 0 0 0; undefined = not given). */
  readonly outputOrigin: Vec3Tuple | undefined;
  /** OutputExtent: xmin xmax ymin ymax zmin zmax voxel indices (undefined = not given). */
  readonly outputExtent: readonly [number, number, number, number, number, number] | undefined;
  /** ClipRectangleOrigin, px, MF orientation (default 0 0). */
  readonly clipRectangleOrigin: Vec2Tuple;
  /** ClipRectangleSize, px (default 0 0 = the whole frame). */
  readonly clipRectangleSize: Vec2Tuple;
  /** FanAnglesDeg (deprecated spelling FanAngles); 0 0 = no fan clipping. */
  readonly fanAnglesDeg: Vec2Tuple;
  /** FanOriginPixel (deprecated FanOrigin), px (default 0 0). */
  readonly fanOriginPixel: Vec2Tuple;
  /** FanRadiusStartPixel (default 0). */
  readonly fanRadiusStartPixel: number;
  /** FanRadiusStopPixel (deprecated FanDepth) (default 500). */
  readonly fanRadiusStopPixel: number;
  /** EnableFanAnglesAutoDetect TRUE/FALSE (default false). */
  readonly enableFanAnglesAutoDetect: boolean;
  /** FanAnglesAutoDetectBrightnessThreshold (default 30). */
  readonly fanAnglesAutoDetectBrightnessThreshold: number;
  /** FanAnglesAutoDetectFilterRadiusPixel (default 10). */
  readonly fanAnglesAutoDetectFilterRadiusPixel: number;
  /** PixelRejectionThreshold (undefined = no rejection). */
  readonly pixelRejectionThreshold: number | undefined;
  /** SkipInterval (default 1; values below 1 become 1, as in PLUS). */
  readonly skipInterval: number;
  /** Interpolation (default NEAREST_NEIGHBOR). */
  readonly interpolation: PlusInterpolation;
  /** Optimization (default FULL): selects PLUS's fan-clipping edge rule (see ReconstructionOptions.optimization). */
  readonly optimization: PlusOptimization;
  /**
   * CompoundingMode. When absent, PLUS's older attributes decide: Calculation = MAXIMUM →
   * MAXIMUM; Compounding = Off → LATEST; otherwise MEAN (PLUS's fallback too).
   */
  readonly compoundingMode: PlusCompoundingMode;
  /** NumberOfThreads (default 0 = as many as cores). */
  readonly numberOfThreads: number;
  /** FillHoles ON/OFF (default OFF). */
  readonly fillHoles: boolean;
  /** The HoleFillingElement children of HoleFilling (read when FillHoles = ON), tried in order. */
  readonly holeFilling: readonly PlusHoleFillingElement[];
  /** RecomputeOutputSpacing TRUE/FALSE (default false). */
  readonly recomputeOutputSpacing: boolean;
}

export interface PlusCoordinateDefinition {
  readonly from: string;
  readonly to: string;
  /** Row-major 4×4. */
  readonly matrix: Mat4;
}

export interface PlusDeviceSetConfig {
  /** The file name (for messages). */
  readonly source: string;
  readonly coordinateDefinitions: readonly PlusCoordinateDefinition[];
  /** The VolumeReconstruction element (a child of the root, or of a DataCollection Device); undefined when absent. */
  readonly volumeReconstruction: PlusReconstructionConfig | undefined;
}

// ---------------------------------------------------------------------------------------------
// XML plumbing (fast-xml-parser with preserveOrder: [{ Tag: children[], ':@': attrs }])

interface XmlElement {
  readonly name: string;
  readonly attrs: Readonly<Record<string, string>>;
  readonly children: readonly XmlElement[];
}

function toElements(nodes: unknown): XmlElement[] {
  if (!Array.isArray(nodes)) return [];
  const out: XmlElement[] = [];
  for (const node of nodes as unknown[]) {
    if (typeof node !== 'object' || node === null) continue;
    const rec = node as Record<string, unknown>;
    const name = Object.keys(rec).find((k) => k !== ':@');
    if (name === undefined || name === '#text' || name.startsWith('?') || name.startsWith('!')) continue;
    const rawAttrs = (rec[':@'] ?? {}) as Record<string, unknown>;
    const attrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(rawAttrs)) attrs[k] = typeof v === 'string' ? v : String(v);
    out.push({ name, attrs, children: toElements(rec[name]) });
  }
  return out;
}

function parseXml(xml: string, file: string): XmlElement {
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw badFileError({ file, field: `line ${valid.err.line}` }, `malformed XML: ${valid.err.msg}`);
  const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', preserveOrder: true, parseAttributeValue: false, parseTagValue: false, processEntities: true });
  const root = toElements(parser.parse(xml) as unknown)[0];
  if (root === undefined) throw badFileError({ file }, 'no root element');
  return root;
}

// ---------------------------------------------------------------------------------------------
// Parsing

const RECON_ATTRIBUTES = [
  'ImageCoordinateFrame', 'ReferenceCoordinateFrame', 'OutputSpacing', 'OutputOrigin', 'OutputExtent', 'ClipRectangleOrigin', 'ClipRectangleSize',
  'FanAngles', 'FanAnglesDeg', 'FanOrigin', 'FanOriginPixel', 'FanDepth', 'FanRadiusStartPixel', 'FanRadiusStopPixel', 'EnableFanAnglesAutoDetect',
  'FanAnglesAutoDetectBrightnessThreshold', 'FanAnglesAutoDetectFilterRadiusPixel', 'PixelRejectionThreshold', 'SkipInterval', 'Interpolation',
  'Optimization', 'CompoundingMode', 'Compounding', 'Calculation', 'NumberOfThreads', 'FillHoles', 'RecomputeOutputSpacing', 'ImportanceMaskFilename',
] as const;

const HOLE_ATTRIBUTES = ['Type', 'Size', 'Stdev', 'MinimumKnownVoxelsRatio', 'StickLengthLimit', 'NumberOfSticksToUse'] as const;

class AttrReader {
  constructor(
    private readonly el: XmlElement,
    private readonly file: string,
    private readonly label: string,
  ) {}

  where(attr: string): { file: string; field: string } {
    return { file: this.file, field: `${this.label} attribute ${attr}` };
  }

  has(attr: string): boolean {
    return this.el.attrs[attr] !== undefined;
  }

  string(attr: string): string | undefined {
    const v = this.el.attrs[attr];
    return v === undefined ? undefined : v.trim();
  }

  numbers(attr: string, count: number, kind: 'real' | 'int' = 'real'): number[] | undefined {
    const v = this.el.attrs[attr];
    if (v === undefined) return undefined;
    const n = parseNumbers(v, count, this.where(attr));
    if (kind === 'int' && !n.every(Number.isInteger)) throw badFileError(this.where(attr), `${JSON.stringify(v.trim())}: expected integers`);
    return n;
  }

  number(attr: string, kind: 'real' | 'int' = 'real'): number | undefined {
    return this.numbers(attr, 1, kind)?.[0];
  }

  choice<T extends string>(attr: string, options: readonly T[]): T | undefined {
    const v = this.string(attr);
    if (v === undefined) return undefined;
    const hit = options.find((o) => o.toUpperCase() === v.toUpperCase());
    if (hit === undefined) throw badFileError(this.where(attr), `unknown value ${JSON.stringify(v)} (expected ${options.join(', ')})`);
    return hit;
  }

  onlyKnown(known: readonly string[]): void {
    for (const name of Object.keys(this.el.attrs)) {
      if (!known.includes(name)) throw badFileError(this.where(name), `unknown attribute (known: ${known.join(', ')})`);
    }
  }
}

function tuple2(v: number[] | undefined, dflt: Vec2Tuple): Vec2Tuple {
  return v === undefined ? dflt : [v[0]!, v[1]!];
}

function parseReconstruction(el: XmlElement, file: string): PlusReconstructionConfig {
  const r = new AttrReader(el, file, 'VolumeReconstruction');
  r.onlyKnown(RECON_ATTRIBUTES);
  const spacing = r.numbers('OutputSpacing', 3);
  if (spacing === undefined) throw badFileError(r.where('OutputSpacing'), 'is required (3 numbers, mm)');
  if (!spacing.every((s) => s > 0)) throw badFileError(r.where('OutputSpacing'), `${spacing.join(' ')}: spacing must be positive`);
  const origin = r.numbers('OutputOrigin', 3);
  const extent = r.numbers('OutputExtent', 6, 'int');
  if (extent !== undefined && (extent[0]! > extent[1]! || extent[2]! > extent[3]! || extent[4]! > extent[5]!)) {
    throw badFileError(r.where('OutputExtent'), `${extent.join(' ')}: each min must not exceed its max`);
  }
  const clipOrigin = r.numbers('ClipRectangleOrigin', 2, 'int');
  const clipSize = r.numbers('ClipRectangleSize', 2, 'int');
  // Negative values occur in real PLUS configs (ClipRectangleOrigin="-1 -1"): kept as given.
  // Deprecated spellings first, then the current ones win (PLUS reads them in this order).
  const fanAngles = r.numbers('FanAnglesDeg', 2) ?? r.numbers('FanAngles', 2);
  const fanOrigin = r.numbers('FanOriginPixel', 2) ?? r.numbers('FanOrigin', 2);
  const fanStop = r.number('FanRadiusStopPixel') ?? r.number('FanDepth');
  const skip = r.number('SkipInterval', 'int') ?? 1;
  const threads = r.number('NumberOfThreads', 'int') ?? 0;
  if (threads < 0) throw badFileError(r.where('NumberOfThreads'), `${threads}: must not be negative`);
  const onOff = (attr: string): boolean | undefined => {
    const v = r.choice(attr, ['ON', 'OFF'] as const);
    return v === undefined ? undefined : v === 'ON';
  };
  const trueFalse = (attr: string): boolean | undefined => {
    const v = r.choice(attr, ['TRUE', 'FALSE'] as const);
    return v === undefined ? undefined : v === 'TRUE';
  };
  const modeText = r.choice('CompoundingMode', ['MEAN', 'MAXIMUM', 'LATEST', 'IMPORTANCE_MASK'] as const);
  if (modeText === 'IMPORTANCE_MASK') throw badFileError(r.where('CompoundingMode'), 'IMPORTANCE_MASK compounding is not supported (expected MEAN, MAXIMUM or LATEST)');
  const compounding = onOff('Compounding');
  const calculation = r.choice('Calculation', ['WEIGHTED_AVERAGE', 'MAXIMUM'] as const);
  const compoundingMode: PlusCompoundingMode = modeText ?? (calculation === 'MAXIMUM' ? 'MAXIMUM' : compounding === false ? 'LATEST' : 'MEAN');
  const fillHoles = onOff('FillHoles') ?? false;
  let holeFilling: PlusHoleFillingElement[] = [];
  if (fillHoles) {
    const hf = el.children.find((c) => c.name === 'HoleFilling');
    if (hf === undefined) throw badFileError({ file, field: 'VolumeReconstruction HoleFilling' }, 'FillHoles is ON but the HoleFilling element is missing');
    holeFilling = hf.children.filter((c) => c.name.toLowerCase() === 'holefillingelement').map((c, i) => parseHoleFillingElement(c, i, file));
  }
  return {
    imageCoordinateFrame: r.string('ImageCoordinateFrame') || undefined,
    referenceCoordinateFrame: r.string('ReferenceCoordinateFrame') || undefined,
    outputSpacing: [spacing[0]!, spacing[1]!, spacing[2]!],
    outputOrigin: origin === undefined ? undefined : [origin[0]!, origin[1]!, origin[2]!],
    outputExtent: extent === undefined ? undefined : [extent[0]!, extent[1]!, extent[2]!, extent[3]!, extent[4]!, extent[5]!],
    clipRectangleOrigin: tuple2(clipOrigin, [0, 0]),
    clipRectangleSize: tuple2(clipSize, [0, 0]),
    fanAnglesDeg: tuple2(fanAngles, [0, 0]),
    fanOriginPixel: tuple2(fanOrigin, [0, 0]),
    fanRadiusStartPixel: r.number('FanRadiusStartPixel') ?? 0,
    fanRadiusStopPixel: fanStop ?? 500,
    enableFanAnglesAutoDetect: trueFalse('EnableFanAnglesAutoDetect') ?? false,
    fanAnglesAutoDetectBrightnessThreshold: r.number('FanAnglesAutoDetectBrightnessThreshold') ?? 30,
    fanAnglesAutoDetectFilterRadiusPixel: r.number('FanAnglesAutoDetectFilterRadiusPixel', 'int') ?? 10,
    pixelRejectionThreshold: r.number('PixelRejectionThreshold'),
    skipInterval: skip < 1 ? 1 : skip,
    interpolation: r.choice('Interpolation', ['NEAREST_NEIGHBOR', 'LINEAR'] as const) ?? 'NEAREST_NEIGHBOR',
    optimization: r.choice('Optimization', ['NONE', 'PARTIAL', 'FULL', 'OPENCL'] as const) ?? 'FULL',
    compoundingMode,
    numberOfThreads: threads,
    fillHoles,
    holeFilling,
    recomputeOutputSpacing: trueFalse('RecomputeOutputSpacing') ?? false,
  };
}

function parseHoleFillingElement(el: XmlElement, i: number, file: string): PlusHoleFillingElement {
  const r = new AttrReader(el, file, `HoleFillingElement[${i}]`);
  r.onlyKnown(HOLE_ATTRIBUTES);
  const type = r.choice('Type', ['STICK', 'GAUSSIAN', 'GAUSSIAN_ACCUMULATION', 'NEAREST_NEIGHBOR', 'DISTANCE_WEIGHT_INVERSE'] as const);
  if (type === undefined) throw badFileError(r.where('Type'), 'is required (STICK, GAUSSIAN, GAUSSIAN_ACCUMULATION, NEAREST_NEIGHBOR or DISTANCE_WEIGHT_INVERSE)');
  const need = (attr: string, kind: 'real' | 'int', check: (v: number) => boolean, what: string): number => {
    const v = r.number(attr, kind);
    if (v === undefined) throw badFileError(r.where(attr), `is required for Type = ${type}`);
    if (!check(v)) throw badFileError(r.where(attr), `${v}: must be ${what}`);
    return v;
  };
  const positiveInt = (v: number): boolean => v >= 1;
  const ratio = (v: number): boolean => v >= 0 && v <= 1;
  switch (type) {
    case 'STICK':
      return { type, stickLengthLimit: need('StickLengthLimit', 'int', positiveInt, 'a positive integer'), numberOfSticksToUse: need('NumberOfSticksToUse', 'int', positiveInt, 'a positive integer') };
    case 'GAUSSIAN':
    case 'GAUSSIAN_ACCUMULATION':
      return {
        type,
        size: need('Size', 'int', positiveInt, 'a positive integer'),
        stdev: need('Stdev', 'real', (v) => v > 0, 'positive'),
        minimumKnownVoxelsRatio: need('MinimumKnownVoxelsRatio', 'real', ratio, 'between 0 and 1'),
      };
    case 'NEAREST_NEIGHBOR':
    case 'DISTANCE_WEIGHT_INVERSE':
      return { type, size: need('Size', 'int', positiveInt, 'a positive integer'), minimumKnownVoxelsRatio: need('MinimumKnownVoxelsRatio', 'real', ratio, 'between 0 and 1') };
  }
}

function parseCoordinateDefinitions(el: XmlElement | undefined, file: string): PlusCoordinateDefinition[] {
  if (el === undefined) return [];
  const out: PlusCoordinateDefinition[] = [];
  for (const t of el.children) {
    if (t.name.toLowerCase() !== 'transform') continue;
    const from = t.attrs.From?.trim();
    const to = t.attrs.To?.trim();
    const label = `CoordinateDefinitions Transform From=${JSON.stringify(from ?? '')} To=${JSON.stringify(to ?? '')}`;
    if (from === undefined || from === '' || to === undefined || to === '') throw badFileError({ file, field: label }, 'needs both From and To attributes');
    const where = { file, field: `${label} attribute Matrix` };
    const n = parseNumbers(t.attrs.Matrix, 16, where);
    if (Math.abs(n[12]!) > 1e-6 || Math.abs(n[13]!) > 1e-6 || Math.abs(n[14]!) > 1e-6 || Math.abs(n[15]! - 1) > 1e-6) {
      throw badFileError(where, `the last row is ${n.slice(12).join(' ')}, not 0 0 0 1`);
    }
    out.push({ from, to, matrix: new Float64Array(n) });
  }
  return out;
}

/**
 * Parses a PLUS device-set config. `VolumeReconstruction` is looked for as a child of the root
 * (VolumeReconstructor's configs) and then inside `DataCollection/Device` (PlusServer's
 * VirtualVolumeReconstructor device). The CoordinateDefinitions are checked as a transform graph
 * (no transform given with its inverse, no loops).
 */
export function parsePlusConfig(xml: string, opts: { source?: string } = {}): PlusDeviceSetConfig {
  const file = opts.source ?? '<config>';
  const root = parseXml(xml, file);
  const coordinateDefinitions = parseCoordinateDefinitions(root.children.find((c) => c.name === 'CoordinateDefinitions'), file);
  let recon = root.children.find((c) => c.name === 'VolumeReconstruction');
  if (recon === undefined) {
    for (const dc of root.children.filter((c) => c.name === 'DataCollection')) {
      for (const dev of dc.children.filter((c) => c.name === 'Device')) {
        recon ??= dev.children.find((c) => c.name === 'VolumeReconstruction');
      }
    }
  }
  const cfg: PlusDeviceSetConfig = { source: file, coordinateDefinitions, volumeReconstruction: recon === undefined ? undefined : parseReconstruction(recon, file) };
  transformRepositoryFromConfig(cfg); // validates the graph
  return cfg;
}

/** A transform repository holding the config's CoordinateDefinitions (origin "config"). */
export function transformRepositoryFromConfig(cfg: PlusDeviceSetConfig): TransformRepository {
  const repo = new TransformRepository(cfg.source);
  for (const t of cfg.coordinateDefinitions) repo.set(t.from, t.to, t.matrix, { origin: 'config' });
  return repo;
}

/** Reads and parses a config file (errors name the file). */
export async function readPlusConfigFile(path: string): Promise<PlusDeviceSetConfig> {
  const bytes = await readFileBytes(path);
  return parsePlusConfig(new TextDecoder('utf-8').decode(bytes), { source: path });
}

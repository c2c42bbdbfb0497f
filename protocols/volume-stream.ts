// The live volume stream: versioned binary messages on the reliable `volume` data channel.
// Specified in protocols/VOLUME-STREAM.md (plugins depend on it: change the version when the
// layout changes). Browser-safe: fflate is pure JavaScript.
import { deflateSync, inflateSync } from 'fflate';
import { Eco3dError } from './errors.ts';

export const VOLUME_STREAM_MAGIC = 0x53563345; // "E3VS" read as a little-endian u32
export const VOLUME_STREAM_VERSION = 1;
const HEADER_BYTES = 12;
const MAX_GRID_VOXELS = 1024 ** 3;
const MAX_UID_BYTES = 128;

export const VolumeMessageKind = { GRID: 1, BRICK: 2, COMMIT: 3 } as const;
export const BrickCodec = { RAW: 0, DEFLATE: 1 } as const;

/** A new volume: the viewer drops what it had and starts from zeros. */
export interface GridMessage {
  readonly kind: 'grid';
  readonly gridId: number;
  readonly dims: readonly [number, number, number];
  readonly spacingMm: readonly [number, number, number];
  /** World (Reference) position of voxel (0, 0, 0), mm. */
  readonly originMm: readonly [number, number, number];
  readonly brickSize: number;
  readonly acquisitionUid: string;
}

/** One brick's voxels (uint8, x fastest, then y, then z), replacing what the viewer had there. */
export interface BrickMessage {
  readonly kind: 'brick';
  readonly gridId: number;
  readonly index: number;
  readonly start: readonly [number, number, number];
  readonly dims: readonly [number, number, number];
  readonly voxels: Uint8Array;
}

/** Everything sent before it on this grid shows the volume as of pipeline delta `seq`. */
export interface CommitMessage {
  readonly kind: 'commit';
  readonly gridId: number;
  readonly seq: number;
  readonly framesPasted: number;
  readonly bricks: number;
  /** True on the commit that ends a joining viewer's snapshot. */
  readonly snapshotComplete: boolean;
  /** Server wall clock when the delta was cut, ms since the epoch. */
  readonly cutAtMs: number;
}

export type VolumeMessage = GridMessage | BrickMessage | CommitMessage;

function header(kind: number, gridId: number, bodyBytes: number): { buf: Uint8Array; view: DataView } {
  const buf = new Uint8Array(HEADER_BYTES + bodyBytes);
  const view = new DataView(buf.buffer);
  view.setUint32(0, VOLUME_STREAM_MAGIC, true);
  view.setUint8(4, VOLUME_STREAM_VERSION);
  view.setUint8(5, kind);
  view.setUint32(8, gridId >>> 0, true);
  return { buf, view };
}

export function encodeGrid(m: Omit<GridMessage, 'kind'>): Uint8Array {
  const uid = new TextEncoder().encode(m.acquisitionUid);
  if (uid.byteLength > MAX_UID_BYTES) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'acquisition UID too long for the volume stream');
  const { buf, view } = header(VolumeMessageKind.GRID, m.gridId, 66 + uid.byteLength);
  for (let i = 0; i < 3; i++) {
    view.setUint32(12 + 4 * i, m.dims[i]!, true);
    view.setFloat64(24 + 8 * i, m.spacingMm[i]!, true);
    view.setFloat64(48 + 8 * i, m.originMm[i]!, true);
  }
  view.setUint16(72, m.brickSize, true);
  view.setUint8(74, 1); // scalar type: uint8
  view.setUint16(76, uid.byteLength, true);
  buf.set(uid, 78);
  return buf;
}

/** Deflates the voxels when that makes them smaller (level 1: speed over ratio, it runs live). */
export function encodeBrick(m: Omit<BrickMessage, 'kind'>, opts: { compress?: boolean } = {}): Uint8Array {
  const n = m.dims[0] * m.dims[1] * m.dims[2];
  if (m.voxels.byteLength !== n) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `brick ${m.index}: ${m.voxels.byteLength} voxel bytes for dims ${m.dims.join('×')}`);
  let codec: number = BrickCodec.RAW;
  let payload = m.voxels;
  if (opts.compress ?? true) {
    const z = deflateSync(m.voxels, { level: 1 });
    if (z.byteLength < m.voxels.byteLength) {
      codec = BrickCodec.DEFLATE;
      payload = z;
    }
  }
  const { buf, view } = header(VolumeMessageKind.BRICK, m.gridId, 24 + payload.byteLength);
  view.setUint32(12, m.index, true);
  for (let i = 0; i < 3; i++) {
    view.setUint16(16 + 2 * i, m.start[i]!, true);
    view.setUint16(22 + 2 * i, m.dims[i]!, true);
  }
  view.setUint8(28, codec);
  view.setUint32(32, n, true);
  buf.set(payload, 36);
  return buf;
}

export function encodeCommit(m: Omit<CommitMessage, 'kind'>): Uint8Array {
  const { buf, view } = header(VolumeMessageKind.COMMIT, m.gridId, 24);
  view.setUint32(12, m.seq >>> 0, true);
  view.setUint32(16, m.framesPasted >>> 0, true);
  view.setUint32(20, m.bricks >>> 0, true);
  view.setUint8(24, m.snapshotComplete ? 1 : 0);
  view.setFloat64(28, m.cutAtMs, true);
  return buf;
}

const bad = (msg: string): Eco3dError => new Eco3dError('ECO3D_ERR_PROTOCOL', `volume stream: ${msg}`);

/** Decodes and checks one message. Throws ECO3D_ERR_PROTOCOL naming what is wrong. */
export function decodeVolumeMessage(data: ArrayBuffer | Uint8Array): VolumeMessage {
  const buf = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (buf.byteLength < HEADER_BYTES) throw bad(`message of ${buf.byteLength} bytes is shorter than the header`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (view.getUint32(0, true) !== VOLUME_STREAM_MAGIC) throw bad('bad magic (not an E3VS message)');
  const version = view.getUint8(4);
  if (version !== VOLUME_STREAM_VERSION) throw bad(`version ${version} is not supported (this reader speaks ${VOLUME_STREAM_VERSION})`);
  const kind = view.getUint8(5);
  const gridId = view.getUint32(8, true);
  const need = (n: number, what: string): void => {
    if (buf.byteLength < n) throw bad(`${what} message truncated: ${buf.byteLength} of ${n} bytes`);
  };
  const triple = (off: number, get: (o: number) => number, step: number): [number, number, number] => [get(off), get(off + step), get(off + 2 * step)];
  switch (kind) {
    case VolumeMessageKind.GRID: {
      need(78, 'grid');
      const dims = triple(12, (o) => view.getUint32(o, true), 4);
      const spacingMm = triple(24, (o) => view.getFloat64(o, true), 8);
      const originMm = triple(48, (o) => view.getFloat64(o, true), 8);
      const brickSize = view.getUint16(72, true);
      const uidBytes = view.getUint16(76, true);
      need(78 + uidBytes, 'grid');
      if (dims.some((d) => d < 1) || dims[0] * dims[1] * dims[2] > MAX_GRID_VOXELS) throw bad(`grid dims ${dims.join('×')} out of range`);
      if (spacingMm.some((s) => !(Number.isFinite(s) && s > 0)) || originMm.some((o) => !Number.isFinite(o))) throw bad('grid spacing/origin not finite and positive');
      if (brickSize < 1) throw bad('brick size 0');
      if (view.getUint8(74) !== 1) throw bad(`scalar type ${view.getUint8(74)} unknown (1 = uint8)`);
      const acquisitionUid = new TextDecoder().decode(buf.subarray(78, 78 + uidBytes));
      return { kind: 'grid', gridId, dims, spacingMm, originMm, brickSize, acquisitionUid };
    }
    case VolumeMessageKind.BRICK: {
      need(36, 'brick');
      const index = view.getUint32(12, true);
      const start = triple(16, (o) => view.getUint16(o, true), 2);
      const dims = triple(22, (o) => view.getUint16(o, true), 2);
      const codec = view.getUint8(28);
      const n = view.getUint32(32, true);
      if (n !== dims[0] * dims[1] * dims[2] || n === 0) throw bad(`brick ${index}: ${n} voxels for dims ${dims.join('×')}`);
      const payload = buf.subarray(36);
      let voxels: Uint8Array;
      if (codec === BrickCodec.RAW) voxels = payload;
      else if (codec === BrickCodec.DEFLATE) {
        try {
          voxels = inflateSync(payload, { out: new Uint8Array(n) });
        } catch (e) {
          throw bad(`brick ${index}: corrupt deflate payload (${(e as Error).message})`);
        }
      } else throw bad(`brick ${index}: unknown codec ${codec}`);
      if (voxels.byteLength !== n) throw bad(`brick ${index}: payload holds ${voxels.byteLength} of ${n} voxels`);
      return { kind: 'brick', gridId, index, start, dims, voxels };
    }
    case VolumeMessageKind.COMMIT: {
      need(36, 'commit');
      return {
        kind: 'commit',
        gridId,
        seq: view.getUint32(12, true),
        framesPasted: view.getUint32(16, true),
        bricks: view.getUint32(20, true),
        snapshotComplete: view.getUint8(24) === 1,
        cutAtMs: view.getFloat64(28, true),
      };
    }
    default:
      throw bad(`unknown message kind ${kind}`);
  }
}

/**
 * The viewer side: applies messages to a uint8 volume. `apply` returns what changed, so a
 * renderer can upload only the touched region at each commit.
 */
export class VolumeAssembler {
  grid: GridMessage | null = null;
  voxels: Uint8Array = new Uint8Array(0);
  /** The last commit applied on the current grid. */
  lastCommit: CommitMessage | null = null;
  bricksApplied = 0;
  /** Messages for another grid than the current one (late ones after a reset): ignored. */
  staleMessages = 0;

  apply(msg: VolumeMessage): 'grid' | 'brick' | 'commit' | 'stale' {
    if (msg.kind === 'grid') {
      this.grid = msg;
      this.voxels = new Uint8Array(msg.dims[0] * msg.dims[1] * msg.dims[2]);
      this.lastCommit = null;
      this.bricksApplied = 0;
      return 'grid';
    }
    const g = this.grid;
    if (g === null || msg.gridId !== g.gridId) {
      this.staleMessages++;
      return 'stale';
    }
    if (msg.kind === 'commit') {
      this.lastCommit = msg;
      return 'commit';
    }
    const [nx, ny] = g.dims;
    const [sx, sy, sz] = msg.start;
    const [dx, dy, dz] = msg.dims;
    if (sx + dx > g.dims[0] || sy + dy > g.dims[1] || sz + dz > g.dims[2]) throw bad(`brick ${msg.index} reaches outside the ${g.dims.join('×')} grid`);
    for (let z = 0; z < dz; z++) {
      for (let y = 0; y < dy; y++) {
        const src = (z * dy + y) * dx;
        this.voxels.set(msg.voxels.subarray(src, src + dx), ((sz + z) * ny + (sy + y)) * nx + sx);
      }
    }
    this.bricksApplied++;
    return 'brick';
  }
}

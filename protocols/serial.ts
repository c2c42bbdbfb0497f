// The robot serial link's wire format: a pure codec, no I/O. protocols/SERIAL.md is the spec
// (frame layout byte by byte, messages, sequence/ACK rules, handshake, heartbeat, watchdog,
// bandwidth budget); this file implements it and the two must change together.
//
// Frame (before COBS):  version u8 | type u8 | seq u16 | payloadLen u16 | payload | crc32 u32
// All multi-byte fields are little-endian. The frame is COBS-encoded and followed by one 0x00
// delimiter, so a receiver resynchronises at the next 0x00 after any garbage.
//
// The decoder never throws on input bytes: every input becomes a typed frame or a typed error.
import { crc32 } from 'crc';
import { Eco3dError, type ErrorCode } from './errors.ts';
import type { Joints6, Pose, RobotCommand, RobotFaultCode, RobotMode, RobotState, Vec3 } from './robot.ts';

// ---------------------------------------------------------------------------------------------
// Constants

/** The version this codec speaks (frame byte 0 of every frame it encodes). */
export const SERIAL_PROTOCOL_VERSION = 1;
/** The oldest version this codec can still decode. */
export const SERIAL_MIN_PROTOCOL_VERSION = 1;

export const SERIAL_HEADER_BYTES = 6;
export const SERIAL_CRC_BYTES = 4;
/** Header + CRC: the smallest valid frame (an empty payload). */
export const SERIAL_MIN_FRAME_BYTES = SERIAL_HEADER_BYTES + SERIAL_CRC_BYTES;
/**
 * Cap on one COBS-encoded frame (delimiter excluded). The largest message (a NACK with a full
 * detail, or a HELLO with a full id) is under 120 bytes; 512 leaves room for later versions
 * while bounding the decoder's memory when garbage arrives without any 0x00.
 */
export const SERIAL_MAX_FRAME_BYTES = 512;
/** Longest device / host id in HELLO, UTF-8 bytes. */
export const SERIAL_ID_MAX_BYTES = 64;
/** Longest NACK detail text, UTF-8 bytes (longer text is truncated on encode). */
export const SERIAL_NACK_DETAIL_MAX_BYTES = 96;

/** Both ends send a HEARTBEAT this often (SERIAL.md, "Heartbeat"). */
export const SERIAL_HEARTBEAT_PERIOD_MS = 50;
/** The host declares the link down after this long without any valid frame from the robot. */
export const SERIAL_LINK_TIMEOUT_MS = 250;
/** The robot stops itself after this long without any valid frame from the host. */
export const SERIAL_WATCHDOG_MS = 250;
/** Default STATE rate on the pseudo-terminal (SERIAL.md, "Bandwidth budget"). */
export const SERIAL_STATE_RATE_HZ = 250;
/** STATE rate we pick for real hardware at 115200 baud (SERIAL.md, "Bandwidth budget"). */
export const SERIAL_STATE_RATE_HZ_115200 = 50;

/** Wire type bytes. Values never change meaning once released. */
export const SERIAL_WIRE_TYPES = {
  hello: 0x01,
  'hello-ack': 0x02,
  heartbeat: 0x03,
  ack: 0x04,
  nack: 0x05,
  state: 0x10,
  'cmd-joint-target': 0x20,
  'cmd-cartesian-target': 0x21,
  'cmd-jog': 0x22,
  'cmd-stop': 0x23,
  'cmd-estop': 0x24,
  'cmd-reset': 0x25,
} as const;
export type SerialWireType = keyof typeof SERIAL_WIRE_TYPES;

const WIRE_TYPE_BY_BYTE: ReadonlyMap<number, SerialWireType> = new Map(
  (Object.entries(SERIAL_WIRE_TYPES) as [SerialWireType, number][]).map(([k, v]) => [v, k]),
);

/** One command message type per `RobotCommand` kind (1:1). */
const COMMAND_WIRE_TYPE = {
  'joint-target': 'cmd-joint-target',
  'cartesian-target': 'cmd-cartesian-target',
  jog: 'cmd-jog',
  stop: 'cmd-stop',
  estop: 'cmd-estop',
  reset: 'cmd-reset',
} as const satisfies Record<RobotCommand['kind'], SerialWireType>;

/** Mode byte in STATE. A Record so that a new RobotMode fails to compile until it has a byte. */
const MODE_BYTES: Readonly<Record<RobotMode, number>> = {
  idle: 0,
  moving: 1,
  jogging: 2,
  stopped: 3,
  estopped: 4,
  faulted: 5,
};
const MODE_BY_BYTE: ReadonlyMap<number, RobotMode> = new Map(
  (Object.entries(MODE_BYTES) as [RobotMode, number][]).map(([k, v]) => [v, k]),
);

/** Bit index of each fault in STATE's fault bitmask (explicit: never derived from array order). */
const FAULT_BITS: Readonly<Record<RobotFaultCode, number>> = {
  'over-force': 0,
  'joint-stuck': 1,
  'sensor-dropout': 2,
  'joint-limit': 3,
  unreachable: 4,
  watchdog: 5,
};
const FAULT_ORDER: readonly RobotFaultCode[] = (Object.entries(FAULT_BITS) as [RobotFaultCode, number][])
  .sort((a, b) => a[1] - b[1])
  .map(([k]) => k);
const KNOWN_FAULT_MASK = FAULT_ORDER.reduce((m, f) => m | (1 << FAULT_BITS[f]), 0);

const STATE_FLAG_WRENCH_PRESENT = 0x01;

// ---------------------------------------------------------------------------------------------
// NACK reasons

/** Why the robot refused a command. Each reason maps to the ErrorCode the robot's refusal means. */
export const SERIAL_NACK_REASONS = {
  estopped: { byte: 1, code: 'ECO3D_ERR_ESTOP_LATCHED' },
  faulted: { byte: 2, code: 'ECO3D_ERR_ROBOT_FAULT' },
  unreachable: { byte: 3, code: 'ECO3D_ERR_WORKSPACE' },
  'joint-limit': { byte: 4, code: 'ECO3D_ERR_JOINT_LIMIT' },
  'speed-limit': { byte: 5, code: 'ECO3D_ERR_SPEED_LIMIT' },
  'force-limit': { byte: 6, code: 'ECO3D_ERR_FORCE_LIMIT' },
  'bad-args': { byte: 7, code: 'ECO3D_ERR_BAD_REQUEST' },
  busy: { byte: 8, code: 'ECO3D_ERR_ROBOT_BUSY' },
  /** A command arrived before a successful HELLO (or after a version refusal). */
  'no-session': { byte: 9, code: 'ECO3D_ERR_PROTOCOL' },
  internal: { byte: 10, code: 'ECO3D_ERR_INTERNAL' },
} as const satisfies Record<string, { byte: number; code: ErrorCode }>;
export type SerialNackReason = keyof typeof SERIAL_NACK_REASONS;

const NACK_REASON_BY_BYTE: ReadonlyMap<number, SerialNackReason> = new Map(
  (Object.entries(SERIAL_NACK_REASONS) as [SerialNackReason, { byte: number }][]).map(([k, v]) => [v.byte, k]),
);

/** The robot side: which NACK reason a driver's refusal (an ErrorCode) becomes on the wire. */
export function nackReasonForErrorCode(code: ErrorCode): SerialNackReason {
  switch (code) {
    case 'ECO3D_ERR_ESTOP_LATCHED':
      return 'estopped';
    case 'ECO3D_ERR_ROBOT_FAULT':
      return 'faulted';
    case 'ECO3D_ERR_WORKSPACE':
      return 'unreachable';
    case 'ECO3D_ERR_JOINT_LIMIT':
      return 'joint-limit';
    case 'ECO3D_ERR_SPEED_LIMIT':
      return 'speed-limit';
    case 'ECO3D_ERR_FORCE_LIMIT':
      return 'force-limit';
    case 'ECO3D_ERR_BAD_REQUEST':
    case 'ECO3D_ERR_NOT_FINITE':
    case 'ECO3D_ERR_UNKNOWN_MESSAGE':
      return 'bad-args';
    case 'ECO3D_ERR_ROBOT_BUSY':
    case 'ECO3D_ERR_CONFLICT':
    case 'ECO3D_ERR_RATE_LIMITED':
      return 'busy';
    case 'ECO3D_ERR_PROTOCOL':
      return 'no-session';
    default:
      return 'internal';
  }
}

/** The host side: the ErrorCode a NACK reason stands for (carried in the error's details). */
export const errorCodeForNackReason = (reason: SerialNackReason): ErrorCode => SERIAL_NACK_REASONS[reason].code;

// ---------------------------------------------------------------------------------------------
// Messages

export interface SerialHelloFields {
  /** The sender's own (highest) protocol version. */
  readonly protocolVersion: number;
  /** The oldest version the sender still speaks. */
  readonly minProtocolVersion: number;
  /** How often the sender sends HEARTBEAT. */
  readonly heartbeatPeriodMs: number;
  /** Host: its link timeout; robot: its watchdog (silence ⇒ controlled stop). */
  readonly watchdogMs: number;
  /** Host or robot identity, printable UTF-8, at most SERIAL_ID_MAX_BYTES bytes. */
  readonly deviceId: string;
}

export type SerialMessage =
  | ({ readonly type: 'hello' } & SerialHelloFields)
  | ({ readonly type: 'hello-ack' } & SerialHelloFields)
  /** `clockMs`: the sender's monotonic clock, ms modulo 2^32 (for latency estimates only). */
  | { readonly type: 'heartbeat'; readonly clockMs: number }
  | { readonly type: 'ack'; readonly ackSeq: number }
  | { readonly type: 'nack'; readonly ackSeq: number; readonly reason: SerialNackReason; readonly detail: string }
  | { readonly type: 'state'; readonly state: RobotState }
  | { readonly type: 'command'; readonly command: RobotCommand };

export type SerialMessageType = SerialMessage['type'];

/** A decoded frame: the header fields a receiver needs and the typed message. */
export interface SerialFrame {
  readonly version: number;
  readonly seq: number;
  readonly msg: SerialMessage;
}

export type SerialDecodeErrorCode =
  | 'bad-cobs' // COBS code byte points past the end of the frame
  | 'crc-mismatch' // CRC-32 does not match: corrupted on the wire
  | 'bad-length' // too short, length field disagrees, or wrong payload size for the type
  | 'unknown-type' // CRC fine but the type byte is not one we know
  | 'unsupported-version' // CRC fine but the version byte is outside what we speak
  | 'replayed-seq' // sequence number not newer than the last accepted one
  | 'frame-too-long' // more than maxFrameBytes without a delimiter: discarded up to the next 0x00
  | 'bad-payload'; // right size but a field is invalid (NaN, unknown enum value, bad UTF-8)

export const SERIAL_DECODE_ERROR_CODES: readonly SerialDecodeErrorCode[] = [
  'bad-cobs',
  'crc-mismatch',
  'bad-length',
  'unknown-type',
  'unsupported-version',
  'replayed-seq',
  'frame-too-long',
  'bad-payload',
];

export interface SerialDecodeError {
  readonly code: SerialDecodeErrorCode;
  readonly detail: string;
  /**
   * Present once the CRC passed (the header is genuine): lets a robot NACK a command frame whose
   * payload is invalid, by its sequence number.
   */
  readonly seq?: number;
  readonly wireType?: SerialWireType;
}

export type SerialDecodeResult =
  | { readonly ok: true; readonly frame: SerialFrame }
  | { readonly ok: false; readonly error: SerialDecodeError };

// ---------------------------------------------------------------------------------------------
// Sequence numbers (16 bit, serial-number arithmetic as in RFC 1982)

export const SERIAL_SEQ_MODULUS = 0x10000;

export const seqNext = (seq: number): number => (seq + 1) & 0xffff;

/** a - b in the 16-bit sequence space, as a signed distance in [-32768, 32767]. */
export function seqDistance(a: number, b: number): number {
  const d = (a - b) & 0xffff;
  return d >= 0x8000 ? d - SERIAL_SEQ_MODULUS : d;
}

/** True when `a` comes after `b` (within half the sequence space). A distance of 0x8000 is not newer. */
export const seqNewer = (a: number, b: number): boolean => {
  const d = (a - b) & 0xffff;
  return d !== 0 && d < 0x8000;
};

// ---------------------------------------------------------------------------------------------
// COBS (Consistent Overhead Byte Stuffing, Cheshire & Baker 1999)

/** Worst-case encoded size of `n` bytes (without the 0x00 delimiter). */
export const cobsMaxEncodedLength = (n: number): number => n + Math.floor(n / 254) + 1;

/** Encodes `src` so that the output contains no 0x00. The delimiter is not appended. */
export function cobsEncode(src: Uint8Array): Uint8Array {
  const out = new Uint8Array(cobsMaxEncodedLength(src.length));
  let codeIdx = 0;
  let code = 1;
  let o = 1;
  for (let i = 0; i < src.length; i++) {
    const b = src[i]!;
    if (b === 0) {
      out[codeIdx] = code;
      codeIdx = o++;
      code = 1;
    } else {
      out[o++] = b;
      code++;
      if (code === 0xff) {
        out[codeIdx] = code;
        codeIdx = o++;
        code = 1;
      }
    }
  }
  out[codeIdx] = code;
  return out.subarray(0, o);
}

/** Decodes one COBS block (no 0x00 inside). Returns null when a code byte overruns the input. */
export function cobsDecode(src: Uint8Array): Uint8Array | null {
  const out = new Uint8Array(src.length);
  let o = 0;
  let i = 0;
  while (i < src.length) {
    const code = src[i]!;
    if (code === 0 || i + code > src.length) return null;
    out.set(src.subarray(i + 1, i + code), o);
    o += code - 1;
    i += code;
    if (code < 0xff && i < src.length) out[o++] = 0;
  }
  return out.subarray(0, o);
}

// ---------------------------------------------------------------------------------------------
// Encoding

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/** Little-endian writer over a fixed buffer. */
class Writer {
  readonly view: DataView;
  off = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(v: number): void {
    this.view.setUint8(this.off, v);
    this.off += 1;
  }
  u16(v: number): void {
    this.view.setUint16(this.off, v, true);
    this.off += 2;
  }
  u32(v: number): void {
    this.view.setUint32(this.off, v, true);
    this.off += 4;
  }
  f32(v: number): void {
    this.view.setFloat32(this.off, v, true);
    this.off += 4;
  }
  f64(v: number): void {
    this.view.setFloat64(this.off, v, true);
    this.off += 8;
  }
  raw(b: Uint8Array): void {
    this.bytes.set(b, this.off);
    this.off += b.length;
  }
}

function requireFinite(what: string, ...values: number[]): void {
  for (const v of values) {
    if (!Number.isFinite(v)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${what} is not a finite number`);
  }
}

function requireInt(what: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${what} must be an integer in [${min}, ${max}], got ${v}`);
  }
}

/** Truncates UTF-8 to at most maxBytes without splitting a character. */
function utf8Truncate(text: string, maxBytes: number): Uint8Array {
  const b = utf8Encoder.encode(text);
  if (b.length <= maxBytes) return b;
  let end = maxBytes;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // back up to a character boundary
  return b.subarray(0, end);
}

/** Payload sizes of fixed-size messages (bytes). */
export const SERIAL_PAYLOAD_BYTES = {
  heartbeat: 4,
  ack: 2,
  /** tMs f64, seq u32, mode u8, flags u8, faults u16, 6+6 f32 joints, 3+4 f32 pose, 6 f32 wrench. */
  state: 116,
  'cmd-joint-target': 56,
  'cmd-cartesian-target': 64,
  'cmd-jog': 48,
  'cmd-stop': 0,
  'cmd-estop': 0,
  'cmd-reset': 0,
} as const satisfies Partial<Record<SerialWireType, number>>;

const HELLO_FIXED_BYTES = 7; // version u8, minVersion u8, heartbeat u16, watchdog u16, idLen u8
const NACK_FIXED_BYTES = 4; // ackSeq u16, reason u8, detailLen u8

/** Wire bytes of one STATE frame: header + payload + CRC, plus COBS overhead and the delimiter. */
export const SERIAL_STATE_FRAME_WIRE_BYTES =
  cobsMaxEncodedLength(SERIAL_MIN_FRAME_BYTES + SERIAL_PAYLOAD_BYTES.state) + 1;

function encodePayload(msg: SerialMessage): { wireType: SerialWireType; payload: Uint8Array } {
  switch (msg.type) {
    case 'hello':
    case 'hello-ack': {
      requireInt('protocolVersion', msg.protocolVersion, 0, 255);
      requireInt('minProtocolVersion', msg.minProtocolVersion, 0, 255);
      requireInt('heartbeatPeriodMs', msg.heartbeatPeriodMs, 0, 0xffff);
      requireInt('watchdogMs', msg.watchdogMs, 0, 0xffff);
      const id = utf8Encoder.encode(msg.deviceId);
      if (id.length > SERIAL_ID_MAX_BYTES) {
        throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `deviceId longer than ${SERIAL_ID_MAX_BYTES} UTF-8 bytes`);
      }
      const w = new Writer(new Uint8Array(HELLO_FIXED_BYTES + id.length));
      w.u8(msg.protocolVersion);
      w.u8(msg.minProtocolVersion);
      w.u16(msg.heartbeatPeriodMs);
      w.u16(msg.watchdogMs);
      w.u8(id.length);
      w.raw(id);
      return { wireType: msg.type, payload: w.bytes };
    }
    case 'heartbeat': {
      requireFinite('heartbeat clockMs', msg.clockMs);
      const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES.heartbeat));
      w.u32(Math.floor(msg.clockMs) >>> 0);
      return { wireType: 'heartbeat', payload: w.bytes };
    }
    case 'ack': {
      requireInt('ackSeq', msg.ackSeq, 0, 0xffff);
      const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES.ack));
      w.u16(msg.ackSeq);
      return { wireType: 'ack', payload: w.bytes };
    }
    case 'nack': {
      requireInt('ackSeq', msg.ackSeq, 0, 0xffff);
      const detail = utf8Truncate(msg.detail, SERIAL_NACK_DETAIL_MAX_BYTES);
      const w = new Writer(new Uint8Array(NACK_FIXED_BYTES + detail.length));
      w.u16(msg.ackSeq);
      w.u8(SERIAL_NACK_REASONS[msg.reason].byte);
      w.u8(detail.length);
      w.raw(detail);
      return { wireType: 'nack', payload: w.bytes };
    }
    case 'state':
      return { wireType: 'state', payload: encodeState(msg.state) };
    case 'command':
      return encodeCommand(msg.command);
  }
}

function encodeState(s: RobotState): Uint8Array {
  const p = s.tcpPose.positionMm;
  const q = s.tcpPose.orientation;
  requireFinite('state.tMs', s.tMs);
  requireFinite('state joints', ...s.jointsRad, ...s.jointVelRadPerS);
  requireFinite('state tcpPose', p.x, p.y, p.z, q.x, q.y, q.z, q.w);
  if (s.wrench !== null) {
    const f = s.wrench.forceN;
    const t = s.wrench.torqueNm;
    requireFinite('state wrench', f.x, f.y, f.z, t.x, t.y, t.z);
  }
  requireInt('state.seq', s.seq, 0, 0xffffffff);
  let faults = 0;
  for (const f of s.faults) faults |= 1 << FAULT_BITS[f];
  const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES.state));
  w.f64(s.tMs);
  w.u32(s.seq);
  w.u8(MODE_BYTES[s.mode]);
  w.u8(s.wrench === null ? 0 : STATE_FLAG_WRENCH_PRESENT);
  w.u16(faults);
  for (const j of s.jointsRad) w.f32(j);
  for (const v of s.jointVelRadPerS) w.f32(v);
  w.f32(p.x);
  w.f32(p.y);
  w.f32(p.z);
  w.f32(q.x);
  w.f32(q.y);
  w.f32(q.z);
  w.f32(q.w);
  const f = s.wrench?.forceN ?? { x: 0, y: 0, z: 0 };
  const t = s.wrench?.torqueNm ?? { x: 0, y: 0, z: 0 };
  for (const v of [f.x, f.y, f.z, t.x, t.y, t.z]) w.f32(v);
  return w.bytes;
}

function encodeCommand(c: RobotCommand): { wireType: SerialWireType; payload: Uint8Array } {
  const wireType = COMMAND_WIRE_TYPE[c.kind];
  switch (c.kind) {
    case 'joint-target': {
      requireFinite('joint-target', ...c.jointsRad, c.speedScale);
      const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES['cmd-joint-target']));
      for (const j of c.jointsRad) w.f64(j);
      w.f64(c.speedScale);
      return { wireType, payload: w.bytes };
    }
    case 'cartesian-target': {
      const p = c.pose.positionMm;
      const q = c.pose.orientation;
      requireFinite('cartesian-target', p.x, p.y, p.z, q.x, q.y, q.z, q.w, c.speedMmPerS);
      const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES['cmd-cartesian-target']));
      for (const v of [p.x, p.y, p.z, q.x, q.y, q.z, q.w, c.speedMmPerS]) w.f64(v);
      return { wireType, payload: w.bytes };
    }
    case 'jog': {
      const l = c.linearMmPerS;
      const a = c.angularRadPerS;
      requireFinite('jog', l.x, l.y, l.z, a.x, a.y, a.z);
      const w = new Writer(new Uint8Array(SERIAL_PAYLOAD_BYTES['cmd-jog']));
      for (const v of [l.x, l.y, l.z, a.x, a.y, a.z]) w.f64(v);
      return { wireType, payload: w.bytes };
    }
    case 'stop':
    case 'estop':
    case 'reset':
      return { wireType, payload: new Uint8Array(0) };
  }
}

/**
 * Encodes one message as wire bytes: COBS(header | payload | crc32) followed by 0x00.
 * Throws Eco3dError (ECO3D_ERR_NOT_FINITE / ECO3D_ERR_BAD_REQUEST) for a message that must not
 * reach the robot, e.g. a NaN target: the caller's bug, caught before it is on the wire.
 */
export function encodeFrame(msg: SerialMessage, seq: number, version: number = SERIAL_PROTOCOL_VERSION): Buffer {
  requireInt('seq', seq, 0, 0xffff);
  requireInt('version', version, 0, 255);
  const { wireType, payload } = encodePayload(msg);
  const raw = new Uint8Array(SERIAL_MIN_FRAME_BYTES + payload.length);
  const w = new Writer(raw);
  w.u8(version);
  w.u8(SERIAL_WIRE_TYPES[wireType]);
  w.u16(seq);
  w.u16(payload.length);
  w.raw(payload);
  w.u32(crc32(Buffer.from(raw.buffer, raw.byteOffset, w.off)));
  const cobs = cobsEncode(raw);
  const out = Buffer.alloc(cobs.length + 1); // the trailing 0x00 is the delimiter
  out.set(cobs, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Little-endian reader; every read is bounds-checked by the caller's size check first. */
class Reader {
  readonly view: DataView;
  off = 0;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(): number {
    return this.view.getUint8(this.off++);
  }
  u16(): number {
    const v = this.view.getUint16(this.off, true);
    this.off += 2;
    return v;
  }
  u32(): number {
    const v = this.view.getUint32(this.off, true);
    this.off += 4;
    return v;
  }
  f32(): number {
    const v = this.view.getFloat32(this.off, true);
    this.off += 4;
    return v;
  }
  f64(): number {
    const v = this.view.getFloat64(this.off, true);
    this.off += 8;
    return v;
  }
  vec3f32(): Vec3 {
    return { x: this.f32(), y: this.f32(), z: this.f32() };
  }
  vec3f64(): Vec3 {
    return { x: this.f64(), y: this.f64(), z: this.f64() };
  }
  joints(read: () => number): Joints6 {
    return [read(), read(), read(), read(), read(), read()];
  }
  take(n: number): Uint8Array {
    const b = this.bytes.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }
}

type PayloadResult = { ok: true; msg: SerialMessage } | { ok: false; code: 'bad-length' | 'bad-payload'; detail: string };

const badLength = (detail: string): PayloadResult => ({ ok: false, code: 'bad-length', detail });
const badPayload = (detail: string): PayloadResult => ({ ok: false, code: 'bad-payload', detail });

const allFinite = (...v: number[]): boolean => v.every((x) => Number.isFinite(x));

function decodeUtf8(b: Uint8Array): string | null {
  try {
    return utf8Decoder.decode(b);
  } catch {
    return null; // invalid UTF-8 is a typed error for the caller, never an exception
  }
}

function decodePayload(wireType: SerialWireType, payload: Uint8Array): PayloadResult {
  const r = new Reader(payload);
  switch (wireType) {
    case 'hello':
    case 'hello-ack': {
      // Frozen layout for every version, so that any two versions can tell each other apart.
      // Bytes after the id are allowed (a later version may append fields).
      if (payload.length < HELLO_FIXED_BYTES) return badLength(`${wireType} payload ${payload.length} < ${HELLO_FIXED_BYTES}`);
      const protocolVersion = r.u8();
      const minProtocolVersion = r.u8();
      const heartbeatPeriodMs = r.u16();
      const watchdogMs = r.u16();
      const idLen = r.u8();
      if (idLen > SERIAL_ID_MAX_BYTES || HELLO_FIXED_BYTES + idLen > payload.length) {
        return badLength(`${wireType} id length ${idLen} does not fit`);
      }
      const deviceId = decodeUtf8(r.take(idLen));
      if (deviceId === null) return badPayload(`${wireType} id is not UTF-8`);
      return { ok: true, msg: { type: wireType, protocolVersion, minProtocolVersion, heartbeatPeriodMs, watchdogMs, deviceId } };
    }
    case 'nack': {
      if (payload.length < NACK_FIXED_BYTES) return badLength(`nack payload ${payload.length} < ${NACK_FIXED_BYTES}`);
      const ackSeq = r.u16();
      const reasonByte = r.u8();
      const detailLen = r.u8();
      if (detailLen > SERIAL_NACK_DETAIL_MAX_BYTES || NACK_FIXED_BYTES + detailLen !== payload.length) {
        return badLength(`nack detail length ${detailLen} does not match payload ${payload.length}`);
      }
      const reason = NACK_REASON_BY_BYTE.get(reasonByte);
      if (reason === undefined) return badPayload(`unknown nack reason ${reasonByte}`);
      const detail = decodeUtf8(r.take(detailLen));
      if (detail === null) return badPayload('nack detail is not UTF-8');
      return { ok: true, msg: { type: 'nack', ackSeq, reason, detail } };
    }
    default:
      break;
  }
  const expected = SERIAL_PAYLOAD_BYTES[wireType];
  if (payload.length !== expected) return badLength(`${wireType} payload ${payload.length} != ${expected}`);
  switch (wireType) {
    case 'heartbeat':
      return { ok: true, msg: { type: 'heartbeat', clockMs: r.u32() } };
    case 'ack':
      return { ok: true, msg: { type: 'ack', ackSeq: r.u16() } };
    case 'state':
      return decodeState(r);
    case 'cmd-joint-target': {
      const jointsRad = r.joints(() => r.f64());
      const speedScale = r.f64();
      if (!allFinite(...jointsRad, speedScale)) return badPayload('joint-target has a non-finite number');
      return { ok: true, msg: { type: 'command', command: { kind: 'joint-target', jointsRad, speedScale } } };
    }
    case 'cmd-cartesian-target': {
      const positionMm = r.vec3f64();
      const orientation = { x: r.f64(), y: r.f64(), z: r.f64(), w: r.f64() };
      const speedMmPerS = r.f64();
      const pose: Pose = { positionMm, orientation };
      if (!allFinite(positionMm.x, positionMm.y, positionMm.z, orientation.x, orientation.y, orientation.z, orientation.w, speedMmPerS)) {
        return badPayload('cartesian-target has a non-finite number');
      }
      return { ok: true, msg: { type: 'command', command: { kind: 'cartesian-target', pose, speedMmPerS } } };
    }
    case 'cmd-jog': {
      const linearMmPerS = r.vec3f64();
      const angularRadPerS = r.vec3f64();
      if (!allFinite(linearMmPerS.x, linearMmPerS.y, linearMmPerS.z, angularRadPerS.x, angularRadPerS.y, angularRadPerS.z)) {
        return badPayload('jog has a non-finite number');
      }
      return { ok: true, msg: { type: 'command', command: { kind: 'jog', linearMmPerS, angularRadPerS } } };
    }
    case 'cmd-stop':
      return { ok: true, msg: { type: 'command', command: { kind: 'stop' } } };
    case 'cmd-estop':
      return { ok: true, msg: { type: 'command', command: { kind: 'estop' } } };
    case 'cmd-reset':
      return { ok: true, msg: { type: 'command', command: { kind: 'reset' } } };
  }
}

function decodeState(r: Reader): PayloadResult {
  const tMs = r.f64();
  const seq = r.u32();
  const modeByte = r.u8();
  const flags = r.u8();
  const faultBits = r.u16();
  const jointsRad = r.joints(() => r.f32());
  const jointVelRadPerS = r.joints(() => r.f32());
  const positionMm = r.vec3f32();
  const orientation = { x: r.f32(), y: r.f32(), z: r.f32(), w: r.f32() };
  const forceN = r.vec3f32();
  const torqueNm = r.vec3f32();
  const mode = MODE_BY_BYTE.get(modeByte);
  if (mode === undefined) return badPayload(`unknown mode ${modeByte}`);
  if ((flags & ~STATE_FLAG_WRENCH_PRESENT) !== 0) return badPayload(`unknown state flags 0x${flags.toString(16)}`);
  if ((faultBits & ~KNOWN_FAULT_MASK) !== 0) return badPayload(`unknown fault bits 0x${faultBits.toString(16)}`);
  if (
    !allFinite(tMs, ...jointsRad, ...jointVelRadPerS, positionMm.x, positionMm.y, positionMm.z) ||
    !allFinite(orientation.x, orientation.y, orientation.z, orientation.w, forceN.x, forceN.y, forceN.z, torqueNm.x, torqueNm.y, torqueNm.z)
  ) {
    return badPayload('state has a non-finite number');
  }
  const wrenchPresent = (flags & STATE_FLAG_WRENCH_PRESENT) !== 0;
  const state: RobotState = {
    tMs,
    seq,
    mode,
    jointsRad,
    jointVelRadPerS,
    tcpPose: { positionMm, orientation },
    wrench: wrenchPresent ? { forceN, torqueNm } : null,
    faults: FAULT_ORDER.filter((f) => (faultBits & (1 << FAULT_BITS[f])) !== 0),
  };
  return { ok: true, msg: { type: 'state', state } };
}

export interface SerialFrameCheckOptions {
  /** Oldest frame version accepted (HELLO/HELLO_ACK are accepted at any version). */
  readonly minVersion?: number;
  /** Newest frame version accepted. */
  readonly maxVersion?: number;
}

/**
 * Decodes one COBS-encoded frame (delimiter removed). Pure: no sequence check (the streaming
 * decoder adds that). Checks run CRC first: until the CRC passes no header byte can be trusted,
 * so a corrupted frame is always reported as what it is.
 */
export function decodeFrame(cobsBytes: Uint8Array, opts: SerialFrameCheckOptions = {}): SerialDecodeResult {
  const minVersion = opts.minVersion ?? SERIAL_MIN_PROTOCOL_VERSION;
  const maxVersion = opts.maxVersion ?? SERIAL_PROTOCOL_VERSION;
  const raw = cobsDecode(cobsBytes);
  if (raw === null) return { ok: false, error: { code: 'bad-cobs', detail: 'COBS code byte overruns the frame' } };
  if (raw.length < SERIAL_MIN_FRAME_BYTES) {
    return { ok: false, error: { code: 'bad-length', detail: `frame of ${raw.length} bytes < ${SERIAL_MIN_FRAME_BYTES}` } };
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const body = raw.length - SERIAL_CRC_BYTES;
  const wantCrc = view.getUint32(body, true);
  const gotCrc = crc32(Buffer.from(raw.buffer, raw.byteOffset, body));
  if (wantCrc !== gotCrc) return { ok: false, error: { code: 'crc-mismatch', detail: 'CRC-32 mismatch' } };
  const version = view.getUint8(0);
  const typeByte = view.getUint8(1);
  const seq = view.getUint16(2, true);
  const payloadLen = view.getUint16(4, true);
  if (payloadLen !== body - SERIAL_HEADER_BYTES) {
    return { ok: false, error: { code: 'bad-length', detail: `length field ${payloadLen} != ${body - SERIAL_HEADER_BYTES}`, seq } };
  }
  const wireType = WIRE_TYPE_BY_BYTE.get(typeByte);
  if (wireType === undefined) {
    return { ok: false, error: { code: 'unknown-type', detail: `unknown type 0x${typeByte.toString(16)}`, seq } };
  }
  const isHello = wireType === 'hello' || wireType === 'hello-ack';
  if (!isHello && (version < minVersion || version > maxVersion)) {
    return {
      ok: false,
      error: { code: 'unsupported-version', detail: `frame version ${version} outside [${minVersion}, ${maxVersion}]`, seq, wireType },
    };
  }
  const p = decodePayload(wireType, raw.subarray(SERIAL_HEADER_BYTES, body));
  if (!p.ok) return { ok: false, error: { code: p.code, detail: p.detail, seq, wireType } };
  return { ok: true, frame: { version, seq, msg: p.msg } };
}

export interface SerialFrameDecoderOptions extends SerialFrameCheckOptions {
  /** Cap on one encoded frame; longer runs without 0x00 are discarded. */
  readonly maxFrameBytes?: number;
  /** Reject frames whose sequence number is not newer than the last accepted (default on). */
  readonly checkSequence?: boolean;
}

/**
 * Streaming decoder: push arbitrary chunks, get typed frames and typed errors back, in order.
 * Memory is bounded by maxFrameBytes whatever arrives.
 *
 * Sequence rule: a frame is accepted only if its seq is newer (serial-number arithmetic) than
 * the last accepted one; HELLO and HELLO_ACK start a new session and reset the window to
 * their own seq. Gaps are counted in `framesLost` (frames lost on the wire), not as errors.
 */
export class SerialFrameDecoder {
  private readonly buf: Uint8Array;
  private len = 0;
  /** True after an overlong run: drop bytes until the next delimiter. */
  private skipping = false;
  private lastSeq: number | null = null;
  private readonly counts: Record<SerialDecodeErrorCode, number>;
  private readonly opts: Required<SerialFrameDecoderOptions>;
  private lost = 0;
  private decoded = 0;

  constructor(opts: SerialFrameDecoderOptions = {}) {
    this.opts = {
      maxFrameBytes: opts.maxFrameBytes ?? SERIAL_MAX_FRAME_BYTES,
      checkSequence: opts.checkSequence ?? true,
      minVersion: opts.minVersion ?? SERIAL_MIN_PROTOCOL_VERSION,
      maxVersion: opts.maxVersion ?? SERIAL_PROTOCOL_VERSION,
    };
    this.buf = new Uint8Array(this.opts.maxFrameBytes);
    this.counts = Object.fromEntries(SERIAL_DECODE_ERROR_CODES.map((c) => [c, 0])) as Record<SerialDecodeErrorCode, number>;
  }

  /** Errors so far, by code. */
  errorCounts(): Readonly<Record<SerialDecodeErrorCode, number>> {
    return { ...this.counts };
  }

  /** Frames missing from the sequence (gaps between accepted frames). */
  get framesLost(): number {
    return this.lost;
  }

  /** Frames decoded and accepted. */
  get framesDecoded(): number {
    return this.decoded;
  }

  /** Forgets the partial frame and the sequence window (a new port, a new session). */
  reset(): void {
    this.len = 0;
    this.skipping = false;
    this.lastSeq = null;
  }

  push(chunk: Uint8Array): SerialDecodeResult[] {
    const out: SerialDecodeResult[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      const z = chunk.indexOf(0, pos);
      const end = z === -1 ? chunk.length : z;
      if (!this.skipping) {
        const n = end - pos;
        if (this.len + n > this.buf.length) {
          // Garbage without a delimiter (or a runaway sender): drop it all up to the next 0x00.
          this.skipping = true;
          this.len = 0;
          out.push(this.fail({ code: 'frame-too-long', detail: `more than ${this.buf.length} bytes without a delimiter` }));
        } else {
          this.buf.set(chunk.subarray(pos, end), this.len);
          this.len += n;
        }
      }
      if (z === -1) break;
      // A delimiter: complete the frame (empty frames are idle fill, not errors).
      if (!this.skipping && this.len > 0) out.push(this.finish(this.buf.subarray(0, this.len)));
      this.len = 0;
      this.skipping = false;
      pos = z + 1;
    }
    return out;
  }

  private fail(error: SerialDecodeError): SerialDecodeResult {
    this.counts[error.code]++;
    return { ok: false, error };
  }

  private finish(cobsBytes: Uint8Array): SerialDecodeResult {
    const r = decodeFrame(cobsBytes, this.opts);
    if (!r.ok) {
      this.counts[r.error.code]++;
      // A frame whose CRC passed is genuine even if unusable: it still moves the window, so the
      // next good frame is not miscounted as following a lost one.
      const seq = r.error.seq;
      if (this.opts.checkSequence && seq !== undefined && (this.lastSeq === null || seqNewer(seq, this.lastSeq))) {
        if (this.lastSeq !== null) this.lost += seqDistance(seq, this.lastSeq) - 1;
        this.lastSeq = seq;
      }
      return r;
    }
    const { seq, msg } = r.frame;
    if (this.opts.checkSequence) {
      if (msg.type === 'hello' || msg.type === 'hello-ack' || this.lastSeq === null) {
        this.lastSeq = seq;
      } else if (seqNewer(seq, this.lastSeq)) {
        this.lost += seqDistance(seq, this.lastSeq) - 1;
        this.lastSeq = seq;
      } else {
        return this.fail({ code: 'replayed-seq', detail: `seq ${seq} not newer than ${this.lastSeq}`, seq });
      }
    }
    this.decoded++;
    return r;
  }
}

/** Protocol versions two HELLO peers have in common, or null when they share none. */
export function negotiateVersion(a: SerialHelloFields, b: SerialHelloFields): number | null {
  const hi = Math.min(a.protocolVersion, b.protocolVersion);
  const lo = Math.max(a.minProtocolVersion, b.minProtocolVersion);
  return hi >= lo ? hi : null;
}

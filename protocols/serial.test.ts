import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 } from 'crc';
import { Eco3dError, ERROR_CODES, type ErrorCode } from './errors.ts';
import type { RobotCommand, RobotState } from './robot.ts';
import {
  cobsDecode,
  cobsEncode,
  decodeFrame,
  encodeFrame,
  errorCodeForNackReason,
  nackReasonForErrorCode,
  negotiateVersion,
  SERIAL_MAX_FRAME_BYTES,
  SERIAL_NACK_DETAIL_MAX_BYTES,
  SERIAL_NACK_REASONS,
  SERIAL_PROTOCOL_VERSION,
  SERIAL_STATE_FRAME_WIRE_BYTES,
  SERIAL_WIRE_TYPES,
  SerialFrameDecoder,
  seqDistance,
  seqNewer,
  seqNext,
  type SerialDecodeResult,
  type SerialMessage,
  type SerialNackReason,
} from './serial.ts';

const f = Math.fround; // STATE carries float32: compare with values float32 can hold exactly

const STATE: RobotState = {
  tMs: 123456.789,
  seq: 4_000_000_000,
  mode: 'moving',
  jointsRad: [f(0.1), f(-1.2), f(1.5), f(-0.3), f(1.57), f(3.1)],
  jointVelRadPerS: [f(0.01), 0, f(-0.02), 0, 0, f(0.5)],
  tcpPose: { positionMm: { x: f(450.25), y: f(-12.5), z: f(270.125) }, orientation: { x: 1, y: 0, z: 0, w: 0 } },
  wrench: { forceN: { x: f(0.5), y: f(-0.25), z: f(7.75) }, torqueNm: { x: f(0.01), y: 0, z: f(-0.02) } },
  faults: ['over-force', 'watchdog'],
};

const COMMANDS: RobotCommand[] = [
  { kind: 'joint-target', jointsRad: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], speedScale: 0.25 },
  { kind: 'cartesian-target', pose: { positionMm: { x: 450.1, y: 1e-9, z: 300 }, orientation: { x: 1, y: 0, z: 0, w: 0 } }, speedMmPerS: 20 },
  { kind: 'jog', linearMmPerS: { x: 1, y: -2, z: 3.5 }, angularRadPerS: { x: 0, y: 0.01, z: -0.01 } },
  { kind: 'stop' },
  { kind: 'estop' },
  { kind: 'reset' },
];

const MESSAGES: SerialMessage[] = [
  { type: 'hello', protocolVersion: 1, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'eco3d-host' },
  { type: 'hello-ack', protocolVersion: 3, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'robot-ü-1' },
  { type: 'heartbeat', clockMs: 4_294_967_295 },
  { type: 'ack', ackSeq: 0xffff },
  { type: 'nack', ackSeq: 7, reason: 'estopped', detail: 'e-stop latched' },
  { type: 'state', state: STATE },
  { type: 'state', state: { ...STATE, wrench: null, faults: [], mode: 'idle' } },
  ...COMMANDS.map((command): SerialMessage => ({ type: 'command', command })),
];

/** Builds a frame by hand (header, payload, CRC), to craft what encodeFrame refuses to make. */
function craft(opts: { version?: number; type: number; seq?: number; payload?: Uint8Array; lengthField?: number }): Buffer {
  const payload = opts.payload ?? new Uint8Array(0);
  const raw = Buffer.alloc(6 + payload.length + 4);
  raw.writeUInt8(opts.version ?? SERIAL_PROTOCOL_VERSION, 0);
  raw.writeUInt8(opts.type, 1);
  raw.writeUInt16LE(opts.seq ?? 0, 2);
  raw.writeUInt16LE(opts.lengthField ?? payload.length, 4);
  raw.set(payload, 6);
  raw.writeUInt32LE(crc32(raw.subarray(0, 6 + payload.length)), 6 + payload.length);
  return Buffer.concat([cobsEncode(raw), Buffer.from([0])]);
}

function onlyOk(results: SerialDecodeResult[]): SerialMessage[] {
  return results.flatMap((r) => (r.ok ? [r.frame.msg] : []));
}

function onlyErrors(results: SerialDecodeResult[]): string[] {
  return results.flatMap((r) => (r.ok ? [] : [r.error.code]));
}

void describe('COBS', () => {
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['one zero', new Uint8Array([0])],
    ['zeros', new Uint8Array(10)],
    ['no zeros 253', new Uint8Array(253).fill(7)],
    ['no zeros 254', new Uint8Array(254).fill(7)],
    ['no zeros 255', new Uint8Array(255).fill(7)],
    ['no zeros 600', new Uint8Array(600).fill(0xff)],
    ['254 then zero', Uint8Array.from([...new Array<number>(254).fill(1), 0])],
    ['mixed', Uint8Array.from([0x11, 0x22, 0x00, 0x33, 0x00, 0x00, 0x44])],
  ];
  for (const [name, src] of cases) {
    void test(`round trip: ${name}`, () => {
      const enc = cobsEncode(src);
      assert.equal(enc.includes(0), false, 'encoded bytes contain no delimiter');
      assert.ok(enc.length <= src.length + Math.ceil(src.length / 254) + 1);
      assert.deepEqual(cobsDecode(enc), src);
    });
  }

  void test('known vectors (Wikipedia)', () => {
    assert.deepEqual([...cobsEncode(Uint8Array.from([0x00]))], [0x01, 0x01]);
    assert.deepEqual([...cobsEncode(Uint8Array.from([0x00, 0x00]))], [0x01, 0x01, 0x01]);
    assert.deepEqual([...cobsEncode(Uint8Array.from([0x11, 0x22, 0x00, 0x33]))], [0x03, 0x11, 0x22, 0x02, 0x33]);
    assert.deepEqual([...cobsEncode(Uint8Array.from([0x11, 0x00, 0x00, 0x00]))], [0x02, 0x11, 0x01, 0x01, 0x01]);
  });

  void test('a code byte that overruns the input is rejected, not thrown', () => {
    assert.equal(cobsDecode(Uint8Array.from([0x05, 0x01, 0x02])), null);
  });
});

void describe('sequence numbers', () => {
  void test('serial-number arithmetic across the wrap', () => {
    assert.equal(seqNext(0xffff), 0);
    assert.equal(seqNewer(1, 0), true);
    assert.equal(seqNewer(0, 0xffff), true, '0 follows 65535');
    assert.equal(seqNewer(0xffff, 0), false);
    assert.equal(seqNewer(5, 5), false);
    assert.equal(seqNewer(0x8000, 0), false, 'half the space apart is ambiguous: not newer');
    assert.equal(seqNewer(0x7fff, 0), true);
    assert.equal(seqDistance(2, 0xfffe), 4);
    assert.equal(seqDistance(0xfffe, 2), -4);
  });
});

void describe('encodeFrame / decodeFrame', () => {
  for (const msg of MESSAGES) {
    const label = msg.type === 'command' ? `command ${msg.command.kind}` : msg.type;
    void test(`round trip: ${label}`, () => {
      const wire = encodeFrame(msg, 0x1234);
      assert.equal(wire.at(-1), 0, 'ends with the delimiter');
      assert.equal(wire.subarray(0, -1).includes(0), false, 'no 0x00 inside the frame');
      const r = decodeFrame(wire.subarray(0, -1));
      assert.ok(r.ok, r.ok ? '' : r.error.detail);
      assert.equal(r.frame.seq, 0x1234);
      assert.equal(r.frame.version, SERIAL_PROTOCOL_VERSION);
      assert.deepEqual(r.frame.msg, msg);
    });
  }

  void test('the CRC is the standard CRC-32 (cross-checked with zlib)', () => {
    const wire = encodeFrame({ type: 'heartbeat', clockMs: 1 }, 2);
    const raw = cobsDecode(wire.subarray(0, -1))!;
    const body = Buffer.from(raw.subarray(0, raw.length - 4));
    assert.equal(Buffer.from(raw).readUInt32LE(raw.length - 4), zlibCrc32(body));
  });

  void test('golden bytes of a heartbeat frame (SERIAL.md example)', () => {
    const wire = encodeFrame({ type: 'heartbeat', clockMs: 0x01020304 }, 0x0005);
    const raw = cobsDecode(wire.subarray(0, -1))!;
    // version 1, type 0x03, seq 0x0005 LE, len 4 LE, clock LE, then the CRC.
    assert.deepEqual([...raw.subarray(0, 10)], [0x01, 0x03, 0x05, 0x00, 0x04, 0x00, 0x04, 0x03, 0x02, 0x01]);
    // CRC-32 of those 10 bytes is 0x2ea108e5 (LE on the wire); COBS replaces the two 0x00.
    assert.equal(wire.toString('hex'), '04010305' + '0204' + '09040302' + '01e508a12e' + '00');
    assert.equal(wire.length, 16, '14 raw bytes + 1 COBS overhead + 1 delimiter');
  });

  void test('a STATE frame is 128 bytes on the wire (the bandwidth budget in SERIAL.md)', () => {
    assert.equal(SERIAL_STATE_FRAME_WIRE_BYTES, 128);
    assert.equal(encodeFrame({ type: 'state', state: STATE }, 1).length, 128);
  });

  void test('a HELLO at any version decodes, so that versions can be negotiated', () => {
    const wire = encodeFrame(
      { type: 'hello-ack', protocolVersion: 9, minProtocolVersion: 8, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'future' },
      0,
      9,
    );
    const r = decodeFrame(wire.subarray(0, -1));
    assert.ok(r.ok);
    assert.equal(r.frame.version, 9);
  });

  void test('negotiateVersion picks the newest common version or null', () => {
    const a = { protocolVersion: 3, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'a' };
    assert.equal(negotiateVersion(a, { ...a, protocolVersion: 2 }), 2);
    assert.equal(negotiateVersion(a, { ...a, protocolVersion: 5, minProtocolVersion: 4 }), null);
  });

  void test('the encoder refuses non-finite numbers before they reach the robot', () => {
    const bad: RobotCommand = { kind: 'joint-target', jointsRad: [0, 0, Number.NaN, 0, 0, 0], speedScale: 1 };
    assert.throws(
      () => encodeFrame({ type: 'command', command: bad }, 1),
      (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_NOT_FINITE',
    );
    assert.throws(
      () => encodeFrame({ type: 'state', state: { ...STATE, tMs: Number.POSITIVE_INFINITY } }, 1),
      (e: unknown) => e instanceof Eco3dError && e.code === 'ECO3D_ERR_NOT_FINITE',
    );
    assert.throws(() => encodeFrame({ type: 'ack', ackSeq: 1 }, 0x10000), Eco3dError);
  });

  void test('a long NACK detail is truncated on a character boundary', () => {
    const detail = 'é'.repeat(100); // 200 UTF-8 bytes
    const wire = encodeFrame({ type: 'nack', ackSeq: 1, reason: 'busy', detail }, 1);
    const r = decodeFrame(wire.subarray(0, -1));
    assert.ok(r.ok && r.frame.msg.type === 'nack');
    assert.equal(r.frame.msg.detail, 'é'.repeat(SERIAL_NACK_DETAIL_MAX_BYTES / 2));
  });
});

void describe('decode errors (typed, counted, never thrown)', () => {
  void test('bad COBS', () => {
    const d = new SerialFrameDecoder();
    assert.deepEqual(onlyErrors(d.push(Uint8Array.from([0x05, 0x01, 0x02, 0x00]))), ['bad-cobs']);
    assert.equal(d.errorCounts()['bad-cobs'], 1);
  });

  void test('CRC mismatch', () => {
    const wire = encodeFrame({ type: 'ack', ackSeq: 3 }, 1);
    wire[3] = wire[3]! ^ 0x40; // a header byte; 0x40 keeps it non-zero here
    assert.notEqual(wire[3], 0);
    const d = new SerialFrameDecoder();
    assert.deepEqual(onlyErrors(d.push(wire)), ['crc-mismatch']);
  });

  void test('bad length: too short, length field lies, wrong size for the type', () => {
    const d = new SerialFrameDecoder({ checkSequence: false });
    const tooShort = Buffer.concat([cobsEncode(Uint8Array.from([1, 3, 0, 0])), Buffer.from([0])]);
    const lies = craft({ type: SERIAL_WIRE_TYPES.ack, payload: Uint8Array.from([1, 0]), lengthField: 3 });
    const wrongSize = craft({ type: SERIAL_WIRE_TYPES.ack, payload: Uint8Array.from([1, 0, 0]) });
    assert.deepEqual(onlyErrors(d.push(Buffer.concat([tooShort, lies, wrongSize]))), ['bad-length', 'bad-length', 'bad-length']);
    assert.equal(d.errorCounts()['bad-length'], 3);
  });

  void test('unknown type', () => {
    const d = new SerialFrameDecoder();
    assert.deepEqual(onlyErrors(d.push(craft({ type: 0x7e }))), ['unknown-type']);
  });

  void test('unsupported version', () => {
    const d = new SerialFrameDecoder();
    const r = d.push(encodeFrame({ type: 'ack', ackSeq: 1 }, 1, 2));
    assert.deepEqual(onlyErrors(r), ['unsupported-version']);
  });

  void test('bad payload: unknown mode, NaN, unknown NACK reason — with the seq, so a robot can NACK it', () => {
    const d = new SerialFrameDecoder();
    const state = cobsDecode(encodeFrame({ type: 'state', state: STATE }, 1).subarray(0, -1))!;
    const badMode = Uint8Array.from(state.subarray(6, state.length - 4));
    badMode[12] = 99; // mode byte: tMs f64 (8) + seq u32 (4)
    const nanJoint = new Uint8Array(56);
    new DataView(nanJoint.buffer).setFloat64(0, Number.NaN, true);
    const r = d.push(
      Buffer.concat([
        craft({ type: SERIAL_WIRE_TYPES.state, payload: badMode, seq: 10 }),
        craft({ type: SERIAL_WIRE_TYPES['cmd-joint-target'], payload: nanJoint, seq: 11 }),
        craft({ type: SERIAL_WIRE_TYPES.nack, payload: Uint8Array.from([1, 0, 200, 0]), seq: 12 }),
      ]),
    );
    assert.deepEqual(onlyErrors(r), ['bad-payload', 'bad-payload', 'bad-payload']);
    const second = r[1]!;
    assert.ok(!second.ok);
    assert.equal(second.error.seq, 11);
    assert.equal(second.error.wireType, 'cmd-joint-target');
    assert.equal(d.framesLost, 0, 'genuine (CRC-valid) frames move the sequence window even when unusable');
  });

  void test('frame too long: garbage without delimiters is dropped, memory stays bounded, then it resyncs', () => {
    const d = new SerialFrameDecoder();
    const garbage = new Uint8Array(SERIAL_MAX_FRAME_BYTES * 10).fill(0x55);
    const r1 = d.push(garbage);
    assert.deepEqual(onlyErrors(r1), ['frame-too-long'], 'reported once per run, not per byte');
    const r2 = d.push(Buffer.concat([garbage, Buffer.from([0]), encodeFrame({ type: 'ack', ackSeq: 9 }, 1)]));
    assert.deepEqual(onlyOk(r2), [{ type: 'ack', ackSeq: 9 }]);
    assert.equal(d.errorCounts()['frame-too-long'], 1, 'the same run continued: no second report');
  });

  void test('replayed and old sequence numbers are rejected across the 16-bit wrap', () => {
    const d = new SerialFrameDecoder();
    const seqs = [0xfffe, 0xffff, 0, 1, 0xffff, 1, 3];
    const r = d.push(Buffer.concat(seqs.map((s) => encodeFrame({ type: 'heartbeat', clockMs: s }, s))));
    assert.deepEqual(
      r.map((x) => (x.ok ? x.frame.seq : x.error.code)),
      [0xfffe, 0xffff, 0, 1, 'replayed-seq', 'replayed-seq', 3],
    );
    assert.equal(d.framesLost, 1, 'seq 2 never arrived');
    assert.equal(d.errorCounts()['replayed-seq'], 2);
  });

  void test('HELLO starts a new session: the sequence window restarts at its seq', () => {
    const d = new SerialFrameDecoder();
    const hello: SerialMessage = { type: 'hello', protocolVersion: 1, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: 'h' };
    const r = d.push(
      Buffer.concat([
        encodeFrame({ type: 'heartbeat', clockMs: 0 }, 500),
        encodeFrame(hello, 0),
        encodeFrame({ type: 'heartbeat', clockMs: 0 }, 1),
      ]),
    );
    assert.deepEqual(onlyErrors(r), []);
    assert.equal(onlyOk(r).length, 3);
  });
});

void describe('SerialFrameDecoder streaming', () => {
  const wire = Buffer.concat(MESSAGES.map((m, i) => encodeFrame(m, i + 1)));

  void test('byte-by-byte chunks give the same messages as one chunk', () => {
    const whole = onlyOk(new SerialFrameDecoder({ checkSequence: false }).push(wire));
    const d = new SerialFrameDecoder({ checkSequence: false });
    const pieces: SerialMessage[] = [];
    for (const b of wire) pieces.push(...onlyOk(d.push(Uint8Array.of(b))));
    assert.deepEqual(pieces, whole);
    assert.deepEqual(whole, MESSAGES);
  });

  void test('resynchronises after garbage: loses at most the frame the garbage touched', () => {
    const d = new SerialFrameDecoder();
    const garbage = Buffer.from([0x13, 0x37, 0xde, 0xad, 0xbe, 0xef]);
    const r = d.push(Buffer.concat([garbage, encodeFrame({ type: 'ack', ackSeq: 1 }, 1), encodeFrame({ type: 'ack', ackSeq: 2 }, 2)]));
    // The garbage glues onto the first frame (no delimiter between them): that frame is lost.
    assert.deepEqual(onlyOk(r), [{ type: 'ack', ackSeq: 2 }]);
    assert.equal(onlyErrors(r).length, 1);
    const r2 = d.push(Buffer.concat([garbage, Buffer.from([0]), encodeFrame({ type: 'ack', ackSeq: 3 }, 3)]));
    assert.deepEqual(onlyOk(r2), [{ type: 'ack', ackSeq: 3 }], 'a leading 0x00 (what senders emit on connect) isolates the garbage');
  });

  void test('empty frames (consecutive delimiters) are idle fill, not errors', () => {
    const d = new SerialFrameDecoder();
    assert.deepEqual(d.push(Buffer.from([0, 0, 0])), []);
    assert.equal(Object.values(d.errorCounts()).reduce((a, b) => a + b, 0), 0);
  });
});

void describe('NACK reasons', () => {
  void test('bytes are unique and each reason maps back from its ErrorCode', () => {
    const entries = Object.entries(SERIAL_NACK_REASONS) as [SerialNackReason, { byte: number; code: ErrorCode }][];
    assert.equal(new Set(entries.map(([, v]) => v.byte)).size, entries.length);
    for (const [reason] of entries) {
      assert.ok(Object.hasOwn(ERROR_CODES, errorCodeForNackReason(reason)));
      assert.equal(nackReasonForErrorCode(errorCodeForNackReason(reason)), reason);
    }
    assert.equal(nackReasonForErrorCode('ECO3D_ERR_NOT_FINITE'), 'bad-args');
    assert.equal(nackReasonForErrorCode('ECO3D_ERR_CONFIG'), 'internal');
  });
});

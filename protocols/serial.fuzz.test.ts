// Fuzz tests of the serial decoder with a seeded PRNG (reproducible: a failure prints its seed).
// Properties: the decoder never throws whatever the bytes; it never yields a message that was
// not sent (every yielded frame re-encodes to the exact bytes of a frame that was sent, so no
// corrupted frame ever slips past the CRC); and it resynchronises (a damaged frame costs at
// most its neighbours, never the rest of the stream).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Joints6, RobotCommand, RobotFaultCode, RobotMode, RobotState } from './robot.ts';
import { ROBOT_FAULT_CODES, ROBOT_MODES } from './robot.ts';
import {
  encodeFrame,
  SERIAL_MAX_FRAME_BYTES,
  SERIAL_NACK_REASONS,
  SerialFrameDecoder,
  seqNewer,
  type SerialDecodeResult,
  type SerialFrame,
  type SerialMessage,
  type SerialNackReason,
} from './serial.ts';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_ec03);

/** mulberry32: tiny, fast, good enough for fuzzing. */
function prng(seed: number): { next: () => number; int: (n: number) => number; pick: <T>(a: readonly T[]) => T } {
  let s = seed >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  return { next, int, pick: <T>(a: readonly T[]): T => a[int(a.length)]! };
}
type Rng = ReturnType<typeof prng>;

const f32 = (r: Rng, scale: number): number => Math.fround((r.next() * 2 - 1) * scale);
const f64 = (r: Rng, scale: number): number => (r.next() * 2 - 1) * scale;
const joints = (g: () => number): Joints6 => [g(), g(), g(), g(), g(), g()];

function randomState(r: Rng): RobotState {
  const faults: RobotFaultCode[] = ROBOT_FAULT_CODES.filter(() => r.next() < 0.2);
  return {
    tMs: r.next() * 1e9,
    seq: r.int(0x1_0000_0000),
    mode: r.pick<RobotMode>(ROBOT_MODES),
    jointsRad: joints(() => f32(r, 6.3)),
    jointVelRadPerS: joints(() => f32(r, 2)),
    tcpPose: {
      positionMm: { x: f32(r, 900), y: f32(r, 900), z: f32(r, 900) },
      orientation: { x: f32(r, 1), y: f32(r, 1), z: f32(r, 1), w: f32(r, 1) },
    },
    wrench: r.next() < 0.8 ? { forceN: { x: f32(r, 50), y: f32(r, 50), z: f32(r, 50) }, torqueNm: { x: f32(r, 5), y: f32(r, 5), z: f32(r, 5) } } : null,
    faults,
  };
}

function randomCommand(r: Rng): RobotCommand {
  switch (r.int(6)) {
    case 0:
      return { kind: 'joint-target', jointsRad: joints(() => f64(r, 6)), speedScale: r.next() };
    case 1:
      return {
        kind: 'cartesian-target',
        pose: { positionMm: { x: f64(r, 900), y: f64(r, 900), z: f64(r, 900) }, orientation: { x: f64(r, 1), y: f64(r, 1), z: f64(r, 1), w: f64(r, 1) } },
        speedMmPerS: r.next() * 100,
      };
    case 2:
      return { kind: 'jog', linearMmPerS: { x: f64(r, 50), y: f64(r, 50), z: f64(r, 50) }, angularRadPerS: { x: f64(r, 1), y: f64(r, 1), z: f64(r, 1) } };
    case 3:
      return { kind: 'stop' };
    case 4:
      return { kind: 'estop' };
    default:
      return { kind: 'reset' };
  }
}

const REASONS = Object.keys(SERIAL_NACK_REASONS) as SerialNackReason[];

function randomMessage(r: Rng): SerialMessage {
  switch (r.int(8)) {
    case 0:
      return { type: 'heartbeat', clockMs: r.int(0x1_0000_0000) };
    case 1:
      return { type: 'ack', ackSeq: r.int(0x10000) };
    case 2:
      return { type: 'nack', ackSeq: r.int(0x10000), reason: r.pick(REASONS), detail: `reason ${r.int(1000)}` };
    case 3:
      return { type: 'command', command: randomCommand(r) };
    case 4:
      return { type: 'hello-ack', protocolVersion: 1, minProtocolVersion: 1, heartbeatPeriodMs: 50, watchdogMs: 250, deviceId: `dev-${r.int(100)}` };
    default:
      return { type: 'state', state: randomState(r) }; // the common case on the real link
  }
}

/** A stream of valid frames with increasing sequence numbers (wrapping), and their hex set. */
function validStream(r: Rng, count: number, firstSeq: number): { frames: Buffer[]; sent: Set<string> } {
  const frames: Buffer[] = [];
  for (let i = 0; i < count; i++) frames.push(encodeFrame(randomMessage(r), (firstSeq + i) & 0xffff));
  return { frames, sent: new Set(frames.map((b) => b.toString('hex'))) };
}

/** Feeds `bytes` in random-sized chunks, as a serial port delivers them. */
function feed(r: Rng, d: SerialFrameDecoder, bytes: Uint8Array): SerialDecodeResult[] {
  const out: SerialDecodeResult[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const n = 1 + r.int(r.next() < 0.5 ? 16 : 300);
    out.push(...d.push(bytes.subarray(pos, pos + n)));
    pos += n;
  }
  return out;
}

function framesOf(results: SerialDecodeResult[]): SerialFrame[] {
  return results.flatMap((x) => (x.ok ? [x.frame] : []));
}

/** The core property: a yielded frame is byte-for-byte a frame that was sent. */
function assertAllSent(frames: SerialFrame[], sent: Set<string>, ctx: string): void {
  for (const fr of frames) {
    const again = encodeFrame(fr.msg, fr.seq, fr.version).toString('hex');
    assert.ok(sent.has(again), `${ctx}: yielded a frame that was never sent: ${JSON.stringify(fr)}`);
  }
}

void describe(`serial decoder fuzz (seed 0x${SEED.toString(16)})`, () => {
  void test('random bytes: never throws, never yields a message, memory stays bounded', () => {
    const r = prng(SEED);
    const d = new SerialFrameDecoder();
    let total = 0;
    for (let i = 0; i < 20000; i++) {
      const n = r.int(r.next() < 0.1 ? 4 * SERIAL_MAX_FRAME_BYTES : 200);
      const bytes = new Uint8Array(n);
      // Half the runs are sparse in 0x00 (long frames), half dense (many tiny frames).
      const zeroP = r.next() < 0.5 ? 0.002 : 0.05;
      for (let k = 0; k < n; k++) bytes[k] = r.next() < zeroP ? 0 : 1 + r.int(255);
      const frames = framesOf(feed(r, d, bytes));
      assert.deepEqual(frames, [], `iteration ${i}`);
      total += n;
    }
    const errors = Object.values(d.errorCounts()).reduce((a, b) => a + b, 0);
    assert.ok(errors > 1000, `garbage was seen and counted (${errors} errors over ${total} bytes)`);
    assert.ok(d.errorCounts()['frame-too-long'] > 0, 'long runs without a delimiter were cut');
  });

  void test('random bit flips of valid frames: no corrupted frame passes, a flip costs at most two frames', () => {
    const r = prng(SEED + 1);
    for (let i = 0; i < 10000; i++) {
      const count = 2 + r.int(10);
      const { frames, sent } = validStream(r, count, r.int(0x10000));
      const wire = Buffer.concat(frames);
      const flips = 1 + r.int(r.next() < 0.8 ? 3 : 40);
      for (let k = 0; k < flips; k++) {
        const at = r.int(wire.length);
        wire[at] = wire[at]! ^ (1 << r.int(8));
      }
      const d = new SerialFrameDecoder();
      const got = framesOf(feed(r, d, wire));
      assertAllSent(got, sent, `iteration ${i}`);
      // A flip damages its own frame, or merges two frames by clearing a delimiter.
      assert.ok(got.length >= count - 2 * flips, `iteration ${i}: ${got.length} of ${count} frames after ${flips} flips`);
    }
  });

  void test('random truncations and splices: only sent frames come out, whole frames after a delimiter always do', () => {
    const r = prng(SEED + 2);
    for (let i = 0; i < 10000; i++) {
      const { frames, sent } = validStream(r, 8, 0);
      const pieces: Buffer[] = [];
      let expectedWhole = 0;
      let prevEndsWithDelimiter = true;
      for (let k = 0; k < 12; k++) {
        const src = r.pick(frames);
        let piece: Buffer;
        const kind = r.int(4);
        if (kind === 0) {
          piece = src; // whole frame (maybe a repeat: splices can replay)
          if (prevEndsWithDelimiter) expectedWhole++;
        } else if (kind === 1) {
          piece = src.subarray(0, r.int(src.length)); // truncated: lost tail (and delimiter)
        } else if (kind === 2) {
          piece = src.subarray(1 + r.int(src.length - 1)); // lost head, ends with the delimiter
        } else {
          const a = r.int(src.length);
          piece = src.subarray(a, a + r.int(src.length - a)); // a middle slice
        }
        if (piece.length > 0) prevEndsWithDelimiter = piece.at(-1) === 0;
        pieces.push(piece);
      }
      const d = new SerialFrameDecoder({ checkSequence: false });
      const got = framesOf(feed(r, d, Buffer.concat(pieces)));
      assertAllSent(got, sent, `iteration ${i}`);
      assert.ok(got.length >= expectedWhole, `iteration ${i}: ${got.length} < ${expectedWhole} whole frames`);
    }
  });

  void test('with the sequence check on, spliced replays never come out twice and seqs only move forward', () => {
    const r = prng(SEED + 3);
    for (let i = 0; i < 5000; i++) {
      const first = r.int(0x10000); // often near the wrap
      const { frames, sent } = validStream(r, 16, first);
      const order: Buffer[] = [];
      for (let k = 0; k < 24; k++) order.push(r.pick(frames));
      const d = new SerialFrameDecoder();
      const got = framesOf(feed(r, d, Buffer.concat(order)));
      assertAllSent(got, sent, `iteration ${i}`);
      for (let k = 1; k < got.length; k++) {
        const prev = got[k - 1]!;
        const cur = got[k]!;
        // hello-ack legitimately restarts the window.
        if (cur.msg.type !== 'hello-ack') assert.ok(seqNewer(cur.seq, prev.seq), `iteration ${i}: seq ${cur.seq} after ${prev.seq}`);
      }
    }
  });
});

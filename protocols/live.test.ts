import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { looksLikeSdp, parseLiveClientMessage, parseTelemetryPing } from './live.ts';
import { throwsWith } from './testing.ts';
import { readTimecodeLuma, stampTimecode, TIMECODE_ROWS, unwrapTimecode } from './video-timecode.ts';
import { decodeVolumeMessage, encodeBrick, encodeCommit, encodeGrid, VolumeAssembler, type BrickMessage } from './volume-stream.ts';

describe('signaling messages', () => {
  test('a join gets defaults; answers and candidates parse', () => {
    assert.deepEqual(parseLiveClientMessage('{"type":"join"}'), { type: 'join', want: { video: true, telemetry: true, volume: true, call: false } });
    const m = parseLiveClientMessage(JSON.stringify({ type: 'ice', candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 } }));
    assert.equal(m.type, 'ice');
  });

  test('bad messages get stable codes', () => {
    throwsWith(() => parseLiveClientMessage('{oops'), 'ECO3D_ERR_BAD_REQUEST', 'JSON');
    throwsWith(() => parseLiveClientMessage('[1]'), 'ECO3D_ERR_UNKNOWN_MESSAGE');
    throwsWith(() => parseLiveClientMessage('{"type":"offer","sdp":"v=0"}'), 'ECO3D_ERR_UNKNOWN_MESSAGE', 'offer');
    throwsWith(() => parseLiveClientMessage('{"type":"join","want":{"video":"yes"}}'), 'ECO3D_ERR_BAD_REQUEST', 'want.video');
    throwsWith(() => parseLiveClientMessage('{"type":"join","admin":true}'), 'ECO3D_ERR_BAD_REQUEST');
    throwsWith(() => parseLiveClientMessage('{"type":"answer","sdp":"x"}'), 'ECO3D_ERR_BAD_REQUEST', 'sdp');
    throwsWith(() => parseLiveClientMessage(`{"type":"answer","sdp":"${'v'.repeat(200_000)}"}`), 'ECO3D_ERR_BAD_REQUEST', 'larger');
  });

  test('SDP sniffing and telemetry pings', () => {
    assert.equal(looksLikeSdp('v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n'), true);
    assert.equal(looksLikeSdp('hello, I am not SDP'), false);
    assert.deepEqual(parseTelemetryPing('{"type":"ping","clientMs":12}'), { type: 'ping', clientMs: 12 });
    assert.equal(parseTelemetryPing('{"type":"ping","clientMs":"12"}'), null);
    assert.equal(parseTelemetryPing(new Uint8Array(3)), null);
  });
});

describe('video timecode', () => {
  test('round-trips at full size and survives a 2× downscale', () => {
    const w = 640;
    const h = 480;
    const y = new Uint8Array(w * h).fill(90);
    const now = 1_796_549_620_377;
    stampTimecode(y, w, h, now);
    const code = readTimecodeLuma(y, w, h);
    assert.notEqual(code, null);
    assert.equal(unwrapTimecode(code!, now + 50), now);
    // Only the bottom rows change.
    assert.ok(y.subarray(0, (h - TIMECODE_ROWS) * w).every((v) => v === 90));
    const half = new Uint8Array((w / 2) * (h / 2));
    for (let r = 0; r < h / 2; r++) for (let c = 0; c < w / 2; c++) half[r * (w / 2) + c] = y[2 * r * w + 2 * c]!;
    assert.equal(unwrapTimecode(readTimecodeLuma(half, w / 2, h / 2)!, now), now);
  });

  test('an unstamped frame has no code', () => {
    assert.equal(readTimecodeLuma(new Uint8Array(640 * 480).fill(200), 640, 480), null);
  });

  test('unwrapping picks the time nearest now across the 2^30 wrap', () => {
    const t = 2 ** 30 * 5 + 10;
    assert.equal(unwrapTimecode(t % 2 ** 30, t + 100), t);
    assert.equal(unwrapTimecode((t - 20) % 2 ** 30, t), t - 20);
  });
});

describe('volume stream', () => {
  const grid = { gridId: 7, dims: [40, 33, 20] as const, spacingMm: [0.5, 0.5, 0.5] as const, originMm: [400, -20, 60] as const, brickSize: 32, acquisitionUid: '2.25.1234' };

  test('grid, bricks and commits round-trip into an assembled volume', () => {
    const asm = new VolumeAssembler();
    assert.equal(asm.apply(decodeVolumeMessage(encodeGrid(grid))), 'grid');
    assert.deepEqual(asm.grid, { kind: 'grid', ...grid });
    // The far-corner brick is 8×1×20 (edges are smaller than 32).
    const voxels = new Uint8Array(8 * 1 * 20).map((_, i) => (i * 7) % 251);
    const brick = { gridId: 7, index: 3, start: [32, 32, 0] as const, dims: [8, 1, 20] as const, voxels };
    for (const compress of [true, false]) {
      const m = decodeVolumeMessage(encodeBrick(brick, { compress })) as BrickMessage;
      assert.deepEqual([...m.voxels], [...voxels]);
      assert.equal(asm.apply(m), 'brick');
    }
    assert.equal(asm.voxels[(0 * 33 + 32) * 40 + 32], voxels[0]);
    assert.equal(asm.voxels[(19 * 33 + 32) * 40 + 39], voxels[8 * 20 - 1]);
    const commit = decodeVolumeMessage(encodeCommit({ gridId: 7, seq: 12, framesPasted: 30, bricks: 1, snapshotComplete: true, cutAtMs: 1.5e12 }));
    assert.equal(asm.apply(commit), 'commit');
    assert.equal(asm.lastCommit?.snapshotComplete, true);
    // A late brick of an older grid is ignored, not applied.
    assert.equal(asm.apply(decodeVolumeMessage(encodeBrick({ ...brick, gridId: 6 }))), 'stale');
    assert.equal(asm.staleMessages, 1);
  });

  test('a mostly empty brick compresses to a fraction of its size', () => {
    const voxels = new Uint8Array(32 ** 3);
    voxels.fill(120, 1000, 1400);
    const bytes = encodeBrick({ gridId: 1, index: 0, start: [0, 0, 0], dims: [32, 32, 32], voxels });
    assert.ok(bytes.byteLength < 1000, `${bytes.byteLength} bytes`);
  });

  test('corrupt, truncated and foreign messages are refused with ECO3D_ERR_PROTOCOL', () => {
    const good = encodeBrick({ gridId: 1, index: 0, start: [0, 0, 0], dims: [4, 4, 4], voxels: new Uint8Array(64).fill(3) }, { compress: true });
    throwsWith(() => decodeVolumeMessage(good.subarray(0, 20)), 'ECO3D_ERR_PROTOCOL', 'truncated');
    throwsWith(() => decodeVolumeMessage(new Uint8Array(8)), 'ECO3D_ERR_PROTOCOL', 'shorter');
    const badMagic = good.slice();
    badMagic[0] = 0;
    throwsWith(() => decodeVolumeMessage(badMagic), 'ECO3D_ERR_PROTOCOL', 'magic');
    const v2 = good.slice();
    v2[4] = 2;
    throwsWith(() => decodeVolumeMessage(v2), 'ECO3D_ERR_PROTOCOL', 'version 2');
    const kind = good.slice();
    kind[5] = 9;
    throwsWith(() => decodeVolumeMessage(kind), 'ECO3D_ERR_PROTOCOL', 'kind 9');
    const corrupt = good.slice();
    corrupt.fill(0xff, 36);
    throwsWith(() => decodeVolumeMessage(corrupt), 'ECO3D_ERR_PROTOCOL', 'brick 0');
    const count = good.slice();
    new DataView(count.buffer).setUint32(32, 65, true);
    throwsWith(() => decodeVolumeMessage(count), 'ECO3D_ERR_PROTOCOL', '65 voxels');
    const g = encodeGrid(grid);
    new DataView(g.buffer).setFloat64(24, Number.NaN, true);
    throwsWith(() => decodeVolumeMessage(g), 'ECO3D_ERR_PROTOCOL', 'spacing');
    // A brick outside its grid.
    const asm = new VolumeAssembler();
    asm.apply(decodeVolumeMessage(encodeGrid({ ...grid, gridId: 1, dims: [4, 4, 4] })));
    const outside = decodeVolumeMessage(encodeBrick({ gridId: 1, index: 0, start: [2, 0, 0], dims: [4, 4, 4], voxels: new Uint8Array(64) }));
    throwsWith(() => asm.apply(outside), 'ECO3D_ERR_PROTOCOL', 'outside');
  });
});

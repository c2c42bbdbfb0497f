// The LiveHub's per-viewer back-pressure and peer bookkeeping, with a fake WebRTC that records
// what each viewer is sent. The real WebRTC is exercised end to end in test/live.e2e.test.ts
// (bad answers, abandoned peers, leak counts) against a real server.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Subject } from 'rxjs';
import type { LiveServerMessage } from '../protocols/live.ts';
import type { TeleopStatus } from '../protocols/teleop.ts';
import { decodeVolumeMessage, type VolumeMessage } from '../protocols/volume-stream.ts';
import { dataPolicy, LiveHub, videoPolicy, type LiveFrame } from './live-hub.ts';
import { LiveVolume } from './live-volume.ts';
import type { DataChannel, Wrtc } from './wrtc.ts';

const STATUS = { atMs: 0, link: { up: true, reason: '' }, robot: null, forceN: null, estopLatched: false, control: { holder: null }, acquisition: { uid: null, state: 'idle' }, problems: [] } satisfies TeleopStatus;
const IMAGING = { widthPx: 64, heightPx: 48, imageToProbe: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1] };
const FULL = { video: true, telemetry: true, volume: true, call: false, teleop: false };

class FakeChannel implements DataChannel {
  readyState: DataChannel['readyState'] = 'open';
  bufferedAmount = 0;
  bufferedAmountLowThreshold = 0;
  binaryType = 'arraybuffer';
  onopen: (() => void) | null = null;
  onclose: (() => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onbufferedamountlow: (() => void) | null = null;
  readonly sent: (string | Uint8Array)[] = [];
  constructor(readonly label: string) {
    // Like a real channel: open a moment after the peer connects (the hub sets its handlers first).
    setImmediate(() => this.onopen?.());
  }
  send(data: string | Uint8Array | ArrayBuffer): void {
    this.sent.push(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
  }
  close(): void {
    this.readyState = 'closed';
    this.onclose?.();
  }
  volumeMessages(): VolumeMessage[] {
    return this.sent.filter((d): d is Uint8Array => d instanceof Uint8Array).map((d) => decodeVolumeMessage(d));
  }
}

function fakeWrtc(): { wrtc: Wrtc; channels: FakeChannel[]; closed: () => number } {
  const channels: FakeChannel[] = [];
  let closed = 0;
  const track = { kind: 'video' as const, id: 't', stop: () => undefined };
  class FakePc {
    connectionState = 'new';
    iceConnectionState = 'new';
    localDescription = null;
    onicecandidate = null;
    onconnectionstatechange = null;
    ontrack = null;
    ondatachannel = null;
    readonly transceivers: { mid: string; sender: { track: typeof track; replaceTrack: () => Promise<void> }; receiver: { track: typeof track }; direction: string }[] = [];
    addTransceiver(): unknown {
      const t = { mid: String(this.transceivers.length), sender: { track, replaceTrack: async () => undefined }, receiver: { track }, direction: 'sendonly' };
      this.transceivers.push(t);
      return t;
    }
    addTrack(): unknown {
      return null;
    }
    getTransceivers(): unknown[] {
      return this.transceivers;
    }
    createDataChannel(label: string): DataChannel {
      const ch = new FakeChannel(label);
      channels.push(ch);
      return ch;
    }
    createOffer = async () => ({ type: 'offer' as const, sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\nm=video 9 x 96\r\n' });
    createAnswer = this.createOffer;
    setLocalDescription = async () => undefined;
    setRemoteDescription = async () => undefined;
    addIceCandidate = async () => undefined;
    close(): void {
      closed++;
    }
  }
  const wrtc = {
    RTCPeerConnection: FakePc as unknown as Wrtc['RTCPeerConnection'],
    MediaStream: class {} as unknown as Wrtc['MediaStream'],
    nonstandard: {
      RTCVideoSource: class {
        createTrack = () => track;
        onFrame = () => undefined;
      },
      RTCVideoSink: class {},
      RTCAudioSource: class {},
      RTCAudioSink: class {},
    } as unknown as Wrtc['nonstandard'],
  };
  return { wrtc, channels, closed: () => closed };
}

/** One frame of a probe looking straight down into the grid (image px → world mm). */
function frame(i: number, value: number): LiveFrame {
  const m = new Float64Array([0.5, 0, 0, 2, 0, 0, 0, 0, 0, 0.5, 0, 2, 0, 0, 0, 1]);
  m[7] = 4 + i * 0.5; // move along y
  return { index: i, tMs: i * 33, capturedAtMs: i * 33, width: 64, height: 48, pixels: new Uint8Array(64 * 48).fill(value), imageToReference: m };
}

describe('LiveHub with a fake WebRTC', () => {
  test('video policy: the operator always full rate; others degrade with the crowd', () => {
    assert.deepEqual(videoPolicy('operator', 20), { fps: 30, scale: 1 });
    assert.deepEqual(videoPolicy('observer', 3), { fps: 15, scale: 1 });
    assert.deepEqual(videoPolicy('observer', 8), { fps: 10, scale: 0.5 });
    assert.deepEqual(videoPolicy('plugin', 20), { fps: 5, scale: 0.5 });
  });

  test('a slow viewer gets every brick once with its newest content; a fast one is unaffected', async () => {
    const { wrtc, channels } = fakeWrtc();
    const volume = new LiveVolume({ everyFrames: 1, everyMs: 1000 });
    const hub = new LiveHub({ frames$: new Subject(), status: () => STATUS, volume, imaging: IMAGING }, { wrtc, telemetryHz: 1000 });
    const signals: LiveServerMessage[] = [];
    const identity = { actor: 'a', role: 'bedside', tier: 'bedside' as const, grants: FULL, want: { video: false, telemetry: false, volume: true, call: false } };
    await hub.join(identity, (m) => signals.push(m));
    await hub.join(identity, () => undefined);
    const [fast, slow] = channels.filter((c) => c.label === 'volume') as [FakeChannel, FakeChannel];
    volume.begin('2.25.1', { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [40, 40, 40] });
    // The slow viewer's channel is full: nothing more goes to it.
    slow.bufferedAmount = 10 * 1024 * 1024;
    for (let i = 0; i < 6; i++) {
      volume.push(frame(0, 10 * (i + 1))); // the same place, brighter each time
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 50));
    const fastBricks = fast.volumeMessages().filter((m) => m.kind === 'brick');
    assert.ok(fastBricks.length >= 6, `the fast viewer got every update (${fastBricks.length} bricks)`);
    assert.equal(slow.volumeMessages().filter((m) => m.kind === 'brick').length, 0);
    // The slow viewer drains: each dirty brick goes once, with the newest content.
    slow.bufferedAmount = 0;
    slow.onbufferedamountlow?.();
    const slowMsgs = slow.volumeMessages();
    const slowBricks = slowMsgs.filter((m) => m.kind === 'brick');
    assert.equal(new Set(slowBricks.map((b) => b.index)).size, slowBricks.length, 'no brick twice');
    const lastFast = new Map(fastBricks.map((b) => [b.index, b.voxels]));
    for (const b of slowBricks) assert.deepEqual([...b.voxels], [...lastFast.get(b.index)!], `brick ${b.index} carries the newest content`);
    assert.equal(slowMsgs.at(-1)?.kind, 'commit');
    const counters = hub.stats().perViewer.map((v) => v.volumeBricksCoalesced);
    assert.equal(counters[0], 0);
    assert.ok(counters[1]! > 0, 'the slow viewer’s superseded updates are counted');
    hub.close();
    volume.close();
  });

  test('observers get the volume in fewer commits as the audience grows; the operator every delta', async () => {
    assert.deepEqual(dataPolicy('operator', 20), { telemetryEveryTicks: 1, volumeCommitIntervalMs: 0 });
    assert.deepEqual(dataPolicy('bedside', 20), { telemetryEveryTicks: 1, volumeCommitIntervalMs: 0 });
    assert.deepEqual(dataPolicy('observer', 3), { telemetryEveryTicks: 1, volumeCommitIntervalMs: 200 });
    assert.deepEqual(dataPolicy('plugin', 20), { telemetryEveryTicks: 3, volumeCommitIntervalMs: 1000 });
    const { wrtc, channels } = fakeWrtc();
    let nowMs = 1_000_000;
    const volume = new LiveVolume({ everyFrames: 1, everyMs: 1000 });
    const hub = new LiveHub({ frames$: new Subject(), status: () => STATUS, volume, imaging: IMAGING }, { wrtc, telemetryHz: 1000, now: () => nowMs });
    const want = { video: false, telemetry: false, volume: true, call: false };
    await hub.join({ actor: 'op', role: 'sonographer', tier: 'operator', grants: FULL, want }, () => undefined);
    await hub.join({ actor: 'obs', role: 'admin', tier: 'observer', grants: FULL, want }, () => undefined);
    const [op, obs] = channels.filter((c) => c.label === 'volume') as [FakeChannel, FakeChannel];
    await new Promise((r) => setImmediate(r)); // the channels open before the sweep begins
    volume.begin('2.25.2', { originMm: { x: 0, y: 0, z: 0 }, spacingMm: { x: 1, y: 1, z: 1 }, dims: [40, 40, 40] });
    const commits = (c: FakeChannel): VolumeMessage[] => c.volumeMessages().filter((m) => m.kind === 'commit');
    // 10 deltas 50 ms apart (0.5 s): the operator commits each, the observer (200 ms) 3 of them.
    for (let i = 0; i < 10; i++) {
      volume.push(frame(i, 10 * (i + 1)));
      await new Promise((r) => setTimeout(r, 5));
      nowMs += 50;
    }
    await new Promise((r) => setTimeout(r, 20)); // the hub's ticks pump the held batch
    assert.equal(commits(op).length, 10);
    const obsCommits = commits(obs).length;
    assert.ok(obsCommits >= 2 && obsCommits <= 4, `the observer got ${obsCommits} commits for 10 deltas`);
    // What the observer holds after its last commit is what the operator holds: nothing is lost.
    nowMs += 1000;
    await new Promise((r) => setTimeout(r, 20));
    const last = (c: FakeChannel): Map<number, string> => new Map(c.volumeMessages().flatMap((m) => (m.kind === 'brick' ? [[m.index, Buffer.from(m.voxels).toString('hex')] as [number, string]] : [])));
    assert.deepEqual(last(obs), last(op));
    assert.equal(obs.volumeMessages().at(-1)?.kind, 'commit');
    hub.close();
    volume.close();
  });

  test('a viewer at a lower frame rate gets one frame per interval of capture time, whatever the wall clock', async () => {
    const { wrtc } = fakeWrtc();
    const frames$ = new Subject<LiveFrame>();
    // The wall clock runs far ahead of the capture clock (a scanner's own clock, or a busy robot
    // simulator): pacing must use the frames' capture times.
    let nowMs = 5_000_000;
    const hub = new LiveHub({ frames$, status: () => STATUS, volume: new LiveVolume(), imaging: IMAGING }, { wrtc, now: () => (nowMs += 1000) });
    const want = { video: true, telemetry: false, volume: false, call: false };
    await hub.join({ actor: 'op', role: 'sonographer', tier: 'operator', grants: FULL, want }, () => undefined);
    await hub.join({ actor: 'obs', role: 'admin', tier: 'observer', grants: FULL, want }, () => undefined);
    for (let i = 0; i < 60; i++) frames$.next(frame(i, 100)); // 2 s at 30 fps
    const [op, obs] = hub.stats().perViewer;
    assert.equal(op!.videoFramesSent, 60);
    // 15 fps for an observer among 2 viewers: every other frame.
    assert.ok(Math.abs(obs!.videoFramesSent - 30) <= 1, `the observer got ${obs!.videoFramesSent} of 60 frames at 15 fps`);
    hub.close();
  });

  test('telemetry is skipped, and counted, while a viewer’s channel is backed up', async () => {
    const { wrtc, channels } = fakeWrtc();
    const hub = new LiveHub({ frames$: new Subject(), status: () => STATUS, volume: new LiveVolume(), imaging: IMAGING }, { wrtc, telemetryHz: 200 });
    await hub.join({ actor: 'a', role: 'bedside', tier: 'bedside', grants: FULL, want: { video: false, telemetry: true, volume: false, call: false } }, () => undefined);
    const tel = channels.find((c) => c.label === 'telemetry')!;
    await new Promise((r) => setTimeout(r, 40));
    assert.ok(tel.sent.length > 0);
    const msg = JSON.parse(tel.sent[0] as string) as { type: string; status: TeleopStatus; seq: number };
    assert.equal(msg.type, 'telemetry');
    assert.equal(msg.status.acquisition.state, 'idle');
    tel.bufferedAmount = 1024 * 1024;
    const before = tel.sent.length;
    await new Promise((r) => setTimeout(r, 80)); // 16 ticks
    // The buffered amount is read every 10th message: at most 9 more go out, then none.
    const after = tel.sent.length;
    assert.ok(after - before < 10, `${after - before} messages after the channel backed up`);
    await new Promise((r) => setTimeout(r, 40));
    assert.equal(tel.sent.length, after);
    assert.ok(hub.stats().perViewer[0]!.telemetryDropped > 0);
    hub.close();
  });

  test('a viewer that never answers is told and closed; closing is idempotent', async () => {
    const { wrtc, closed } = fakeWrtc();
    const hub = new LiveHub({ frames$: new Subject(), status: () => STATUS, volume: new LiveVolume(), imaging: IMAGING }, { wrtc, answerTimeoutMs: 30 });
    const signals: LiveServerMessage[] = [];
    const v = await hub.join({ actor: 'a', role: 'bedside', tier: 'bedside', grants: FULL, want: { video: true, telemetry: true, volume: true, call: false } }, (m) => signals.push(m));
    assert.deepEqual(signals.map((s) => s.type), ['welcome', 'offer']);
    await new Promise((r) => setTimeout(r, 80));
    assert.deepEqual(signals.map((s) => s.type), ['welcome', 'offer', 'error', 'bye']);
    assert.equal((signals[2] as { code: string }).code, 'ECO3D_ERR_TIMEOUT');
    assert.equal(hub.stats().peersOpen, 0);
    v.close('again');
    assert.equal(closed(), 1);
    hub.close();
  });

  test('the hub refuses past its maximum of viewers', async () => {
    const { wrtc } = fakeWrtc();
    const hub = new LiveHub({ frames$: new Subject(), status: () => STATUS, volume: new LiveVolume(), imaging: IMAGING }, { wrtc, maxViewers: 1 });
    const id = { actor: 'a', role: 'bedside', tier: 'bedside' as const, grants: FULL, want: { video: false, telemetry: false, volume: true, call: false } };
    await hub.join(id, () => undefined);
    await assert.rejects(hub.join(id, () => undefined), (e: { code?: string }) => e.code === 'ECO3D_ERR_CONFLICT');
    hub.close();
  });
});

// Live streaming end to end in Node: a real `eco3d start` (in its own process: wrtc can live in
// one thread per process, and the server runs it in a worker), real WebRTC (@roamhq/wrtc) on both
// ends, the SDK's LiveClient, a real sweep of the simulated robot.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import type { LiveClient } from '../marketplace/sdk/live-client.ts';
import { TeleopClient } from './harness.ts';
import { connectNodeViewer, startChildServer, watchVideo, type ChildServer, type DecodedFrame } from './live-client.ts';

const SWEEP = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 30, speedMmPerS: 15 };

async function until<T>(what: string, timeoutMs: number, poll: () => T | undefined | null | false | Promise<T | undefined | null | false>): Promise<T> {
  const started = Date.now();
  for (;;) {
    const v = await poll();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A raw signaling socket, to send what a well-behaved client never would. */
async function rawSignaling(t: ChildServer, session?: string): Promise<{ ws: WebSocket; next: (what: string) => Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(`${t.url.replace(/^http/, 'ws')}/ws/live`, session === undefined ? {} : { headers: { authorization: `Bearer ${session}` } });
  const inbox: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  ws.on('message', (d) => {
    const m = JSON.parse((d as Buffer).toString('utf8')) as Record<string, unknown>;
    const w = waiters.shift();
    if (w !== undefined) w(m);
    else inbox.push(m);
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    ws,
    next: (what) =>
      inbox.length > 0
        ? Promise.resolve(inbox.shift()!)
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no ${what}`)), 15_000);
            waiters.push((m) => {
              clearTimeout(timer);
              resolve(m);
            });
          }),
  };
}

describe('live streams over WebRTC', () => {
  let t: ChildServer;
  let sonographer: string;
  let bedside: string;
  let admin: string;
  const clients: LiveClient[] = [];
  const peersOpen = async (): Promise<number> => (await liveStats()).peersOpen;
  const liveStats = async (): Promise<{ peersOpen: number; perViewer: { id: string; volumeBricksSent: number }[] }> => {
    const r = await fetch(`${t.url}/api/live`, { headers: { authorization: `Bearer ${admin}` } });
    assert.equal(r.status, 200);
    return (await r.json()) as { peersOpen: number; perViewer: { id: string; volumeBricksSent: number }[] };
  };

  before(async () => {
    t = await startChildServer();
    sonographer = await t.login('demo-sonographer');
    bedside = await t.login('demo-bedside');
    admin = await t.login('admin');
  });
  after(async () => {
    for (const c of clients) c.close();
    await t.stop();
    // libwebrtc's threads finish closing the peers asynchronously; exiting before they do
    // crashes the process in wrtc's teardown (a native HandleScope error).
    await new Promise((r) => setTimeout(r, 1000));
  });

  test('the console gets live B-mode video with a readable capture time, telemetry, and a round trip', async () => {
    const c = await connectNodeViewer(t.url, { session: sonographer });
    clients.push(c);
    assert.equal(c.welcome.tier, 'operator');
    assert.deepEqual(c.welcome.grants, { video: true, telemetry: true, volume: true, call: true, teleop: true });
    await until('connected', 15_000, () => c.state === 'connected');
    const stream = await until('video stream', 10_000, () => c.videoStream);
    const frames: DecodedFrame[] = [];
    const stop = watchVideo(stream, (f) => frames.push(f));
    await until('10 decoded frames', 15_000, () => frames.length >= 10);
    stop();
    const f = frames.at(-1)!;
    assert.equal(f.width, 640);
    assert.equal(f.height, 480);
    const ages = frames.filter((x) => x.capturedAtMs !== null).map((x) => x.receivedAtMs - x.capturedAtMs!);
    assert.ok(ages.length >= 5, `timecode readable in most frames (${ages.length} of ${frames.length})`);
    assert.ok(ages.every((a) => a >= 0 && a < 2000), `frame ages ${ages.join(', ')} ms`);

    const tel = await until('telemetry', 5000, () => c.telemetry);
    assert.equal(tel.type, 'telemetry');
    assert.equal(typeof (tel.status.robot as { tcpPose?: unknown }).tcpPose, 'object');
    assert.ok(tel.viewer.videoFramesSent > 0);
    await until('a measured round trip', 5000, () => c.rttMs() !== null);
    assert.ok(c.rttMs()! < 1000);
    c.close();
    await until('the server closed its peer', 5000, async () => (await peersOpen()) === 0);
  });

  test('a sweep grows the volume brick by brick; a viewer joining later gets the same volume as a snapshot', async () => {
    const early = await connectNodeViewer(t.url, { session: sonographer }, { want: { video: false } });
    clients.push(early);
    let commits = 0;
    early.on('volume', () => commits++);
    const bs = await TeleopClient.open(`${t.url.replace(/^http/, 'ws')}/ws/bedside`, bedside);
    const ack = await bs.request({ type: 'sweep-start', plan: SWEEP });
    assert.equal(ack.type, 'ack', JSON.stringify(ack));
    const grid = await until('a grid', 30_000, () => early.volume.grid);
    assert.ok(grid.dims.every((d) => d > 10));
    let lastStatus: unknown;
    await bs
      .status((s) => {
        lastStatus = { acquisition: s.acquisition, problems: s.problems, estop: s.estopLatched, link: s.link };
        return s.acquisition.state === 'completed';
      }, 60_000, 'sweep completed')
      .catch((err: unknown) => {
        throw new Error(`${(err as Error).message}; last status ${JSON.stringify(lastStatus)}`);
      });
    await until('commits', 5000, () => commits > 3);
    // Let the last delta drain.
    const settled = async (c: LiveClient): Promise<void> => {
      let last = -1;
      await until('the volume to settle', 10_000, () => {
        const n = c.volume.bricksApplied;
        const stable = n === last && c.volume.lastCommit !== null;
        last = n;
        return stable;
      });
    };
    await settled(early);
    const nonZero = early.volume.voxels.reduce((n, v) => n + (v > 0 ? 1 : 0), 0);
    assert.ok(nonZero > 10_000, `the sweep filled voxels (${nonZero})`);

    const late = await connectNodeViewer(t.url, { session: sonographer }, { want: { video: false, telemetry: false } });
    clients.push(late);
    await until('the late viewer snapshot', 15_000, () => late.volume.lastCommit?.snapshotComplete === true);
    assert.equal(late.volume.grid?.gridId, grid.gridId);
    assert.equal(late.volume.grid?.acquisitionUid, grid.acquisitionUid);
    assert.ok(Buffer.from(late.volume.voxels).equals(Buffer.from(early.volume.voxels)), 'snapshot equals the incrementally built volume');
    const stats = await liveStats();
    const earlyStats = stats.perViewer.find((v) => v.id === early.welcome.viewerId)!;
    assert.ok(earlyStats.volumeBricksSent > 0);
    bs.ws.close();
  });

  test('bad signaling gets coded errors and leaks no peer connection', async () => {
    const before = (await peersOpen());
    const s = await rawSignaling(t, sonographer);
    s.ws.send('{not json');
    assert.equal((await s.next('error')).code, 'ECO3D_ERR_BAD_REQUEST');
    s.ws.send(JSON.stringify({ type: 'dance' }));
    assert.equal((await s.next('error')).code, 'ECO3D_ERR_UNKNOWN_MESSAGE');
    s.ws.send(JSON.stringify({ type: 'answer', sdp: 'v=0 but not really an sdp' }));
    assert.equal((await s.next('error')).code, 'ECO3D_ERR_CONFLICT', 'an answer before join');
    s.ws.send(JSON.stringify({ type: 'join', want: { video: true, telemetry: true, volume: false, call: false } }));
    assert.equal((await s.next('welcome')).type, 'welcome');
    assert.equal((await s.next('offer')).type, 'offer');
    assert.equal((await peersOpen()), before + 1);
    s.ws.send(JSON.stringify({ type: 'answer', sdp: 'this is not SDP at all' }));
    let m = await s.next('error');
    while (m.type === 'ice' || m.type === 'bye') m = await s.next('error');
    assert.equal(m.code, 'ECO3D_ERR_BAD_REQUEST');
    assert.match(String(m.message), /not an SDP/);
    await until('the peer closed', 5000, async () => (await peersOpen()) === before);
    s.ws.close();

    // A socket that is closed mid-negotiation leaves no peer behind either.
    const s2 = await rawSignaling(t, sonographer);
    s2.ws.send(JSON.stringify({ type: 'join' }));
    await s2.next('welcome');
    s2.ws.terminate();
    await until('the abandoned peer closed', 5000, async () => (await peersOpen()) === before);

    // No credentials: refused.
    const anon = await rawSignaling(t);
    anon.ws.send(JSON.stringify({ type: 'join' }));
    assert.equal((await anon.next('error')).code, 'ECO3D_ERR_UNAUTHENTICATED');
    anon.ws.close();
  });
});

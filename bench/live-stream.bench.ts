// Live streaming over WebRTC: frame age at the viewer, brick-delta bandwidth, server CPU and RSS.
//
// The server is a real `eco3d start` in a child process (simulated robot, PGlite); the viewers
// are the SDK's LiveClient in this process, on @roamhq/wrtc, each decoding its video through an
// RTCVideoSink. The bedside runs linear sweeps back to back, so the video shows a moving scan and
// the volume grows, as in use.
//
// Frame age = decoded in the viewer − captured in the simulator (the capture time is burned into
// the frame's bottom rows: protocols/video-timecode.ts); both clocks are this machine's.
//
// Phases: 1 viewer (the operator), 5 viewers (operator + 4 observers), 20 viewers (operator +
// 19). Observers degrade (lower rate, then half resolution: streamer/live-hub.ts videoPolicy).
// The 20-viewer phase lasts LONG_S seconds; its first and last 10 s are compared for growth.
//
// Env: PHASE_S (default 15), LONG_S (default 60).
import { deflateSync } from 'node:zlib';
import WebSocket from 'ws';
import type { LiveClient } from '../marketplace/sdk/live-client.ts';
import { connectNodeViewer, procUsage, startChildServer, watchVideo } from '../test/live-client.ts';
import { bench, percentile } from './stats.ts';

const PHASE_S = Number(process.env.PHASE_S ?? 15);
const LONG_S = Number(process.env.LONG_S ?? 60);
const SWEEP = { kind: 'linear', startMm: { x: 450, y: -30 }, headingDeg: 0, lengthMm: 60, speedMmPerS: 10 };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Viewer {
  readonly client: LiveClient;
  /** [receivedAtMs, ageMs] per decoded frame. */
  readonly ages: [number, number][];
  stop(): void;
}

async function viewer(url: string, session: string): Promise<Viewer> {
  const client = await connectNodeViewer(url, { session }, { want: { video: true, telemetry: true, volume: false, call: false }, reconnect: false });
  const start = Date.now();
  while (client.videoStream === null) {
    if (Date.now() - start > 15_000) throw new Error('no video stream');
    await sleep(20);
  }
  const ages: [number, number][] = [];
  const stopVideo = watchVideo(client.videoStream, (f) => {
    if (f.capturedAtMs !== null) ages.push([f.receivedAtMs, f.receivedAtMs - f.capturedAtMs]);
  });
  return {
    client,
    ages,
    stop: () => {
      stopVideo();
      client.close();
    },
  };
}

/** Keeps the bedside running sweeps back to back until stopped. */
function sweepForever(url: string, session: string): { stop(): Promise<void> } {
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws/bedside`, { headers: { authorization: `Bearer ${session}` } });
  let running = true;
  let n = 0;
  ws.on('message', (d) => {
    const m = JSON.parse((d as Buffer).toString('utf8')) as { type: string; status?: { acquisition: { state: string } } };
    const st = m.status?.acquisition.state;
    if (running && m.type === 'status' && st !== undefined && ['idle', 'completed', 'aborted', 'failed'].includes(st)) {
      ws.send(JSON.stringify({ type: 'sweep-start', id: `s${n++}`, plan: { ...SWEEP, startMm: { x: 450, y: n % 2 === 0 ? -30 : -25 } } }));
    }
  });
  return {
    stop: async () => {
      running = false;
      ws.send(JSON.stringify({ type: 'sweep-abort' }));
      await sleep(200);
      ws.close();
    },
  };
}

function stats(ages: readonly number[]): { p50: number; p95: number; p99: number } {
  const s = [...ages].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99) };
}

async function phase(url: string, pid: number, sessions: { operator: string; observer: string }, n: number, seconds: number): Promise<{ operator: number[]; all: number[]; operatorSeries: [number, number][]; cpuPct: number; rssMb: number; fps: number }> {
  const viewers: Viewer[] = [await viewer(url, sessions.operator)];
  for (let i = 1; i < n; i++) viewers.push(await viewer(url, sessions.observer));
  await sleep(3000); // warm-up: ICE, first key frames, encoder ramp-up
  for (const v of viewers) v.ages.length = 0;
  const u0 = procUsage(pid);
  const t0 = Date.now();
  await sleep(seconds * 1000);
  const u1 = procUsage(pid);
  const t1 = Date.now();
  const operatorSeries = [...viewers[0]!.ages];
  const operator = operatorSeries.map(([, a]) => a);
  const all = viewers.flatMap((v) => v.ages.map(([, a]) => a));
  for (const v of viewers) v.stop();
  await sleep(1000);
  return { operator, all, operatorSeries, cpuPct: ((u1.cpuMs - u0.cpuMs) / (t1 - t0)) * 100, rssMb: u1.rssMb, fps: operator.length / ((t1 - t0) / 1000) };
}

async function volumeBandwidth(url: string, session: string, bedside: string): Promise<void> {
  const client = await connectNodeViewer(url, { session }, { want: { video: false, telemetry: false, volume: true, call: false }, reconnect: false });
  let commits = 0;
  client.on('volume', () => commits++);
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws/bedside`, { headers: { authorization: `Bearer ${bedside}` } });
  await new Promise((r) => ws.once('open', r));
  // Wait for the previous phase's sweep to end, then run one sweep and count.
  await new Promise<void>((resolve) => {
    let started = false;
    ws.on('message', (d) => {
      const m = JSON.parse((d as Buffer).toString('utf8')) as { type: string; status?: { acquisition: { state: string } } };
      const st = m.status?.acquisition.state;
      if (st === undefined) return;
      if (!started && ['idle', 'completed', 'aborted', 'failed'].includes(st)) {
        started = true;
        ws.send(JSON.stringify({ type: 'sweep-start', id: 'bw', plan: SWEEP }));
        client.volumeBytesReceived = 0;
        commits = 0;
      } else if (started && st === 'completed') resolve();
    });
  });
  await sleep(1500);
  ws.close();
  const full = client.volume.voxels;
  const fullDeflated = deflateSync(full, { level: 1 }).byteLength;
  bench('live-volume-delta-bytes', client.volumeBytesReceived, 'B');
  bench('live-volume-updates', commits, 'count');
  bench('live-volume-full-bytes-raw', full.byteLength, 'B');
  bench('live-volume-full-bytes-deflated', fullDeflated, 'B');
  bench('live-volume-delta-vs-full-raw', (100 * client.volumeBytesReceived) / (commits * full.byteLength), '%');
  bench('live-volume-delta-vs-full-deflated', (100 * client.volumeBytesReceived) / (commits * fullDeflated), '%');
  client.close();
}

const server = await startChildServer();
const pid = server.pid;
try {
  const operator = await server.login('demo-sonographer');
  const observer = await server.login('admin');
  const bedside = await server.login('demo-bedside');
  const idle = procUsage(pid);
  bench('live-server-rss-idle', idle.rssMb, 'MB');
  const sweeps = sweepForever(server.url, bedside);
  for (const n of [1, 5]) {
    const r = await phase(server.url, pid, { operator, observer }, n, PHASE_S);
    const o = stats(r.operator);
    bench(`live-frame-age-${n}-operator-p50`, o.p50, 'ms');
    bench(`live-frame-age-${n}-operator-p95`, o.p95, 'ms');
    bench(`live-frame-age-${n}-operator-p99`, o.p99, 'ms');
    if (n > 1) {
      const a = stats(r.all);
      bench(`live-frame-age-${n}-all-p50`, a.p50, 'ms');
      bench(`live-frame-age-${n}-all-p95`, a.p95, 'ms');
      bench(`live-frame-age-${n}-all-p99`, a.p99, 'ms');
    }
    bench(`live-operator-fps-${n}`, r.fps, 'fps');
    bench(`live-server-cpu-${n}`, r.cpuPct, '%');
    bench(`live-server-rss-${n}`, r.rssMb, 'MB');
  }
  const r20 = await phase(server.url, pid, { operator, observer }, 20, LONG_S);
  const o20 = stats(r20.operator);
  bench('live-frame-age-20-operator-p50', o20.p50, 'ms');
  bench('live-frame-age-20-operator-p95', o20.p95, 'ms');
  bench('live-frame-age-20-operator-p99', o20.p99, 'ms');
  const a20 = stats(r20.all);
  bench('live-frame-age-20-all-p95', a20.p95, 'ms');
  const tStart = r20.operatorSeries[0]?.[0] ?? 0;
  const tEnd = r20.operatorSeries.at(-1)?.[0] ?? 0;
  const first = r20.operatorSeries.filter(([t]) => t < tStart + 10_000).map(([, a]) => a);
  const last = r20.operatorSeries.filter(([t]) => t > tEnd - 10_000).map(([, a]) => a);
  bench('live-frame-age-20-operator-p95-first-10s', stats(first).p95, 'ms');
  bench('live-frame-age-20-operator-p95-last-10s', stats(last).p95, 'ms');
  bench('live-operator-fps-20', r20.fps, 'fps');
  bench('live-server-cpu-20', r20.cpuPct, '%');
  bench('live-server-rss-20', r20.rssMb, 'MB');
  await sweeps.stop();
  await volumeBandwidth(server.url, operator, bedside);
} finally {
  await server.stop();
}
process.exit(0);

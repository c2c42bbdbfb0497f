// The SDK's LiveClient in Node (for tests and benchmarks): @roamhq/wrtc for WebRTC, ws for the
// signaling socket, and an RTCVideoSink to read the decoded B-mode frames and their timecodes.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { LiveClient, type LiveClientOptions, type MediaStreamLike, type WebSocketLike } from '../marketplace/sdk/live-client.ts';
import { readTimecodeLuma, unwrapTimecode } from '../protocols/video-timecode.ts';
import { wrtc, type MediaTrack, type VideoSink } from '../streamer/index.ts';

export async function connectNodeViewer(url: string, auth: { session?: string; token?: string }, opts: Omit<LiveClientOptions, 'url' | 'RTCPeerConnection' | 'MediaStream' | 'createWebSocket'> = {}): Promise<LiveClient> {
  const rtc = wrtc();
  return LiveClient.connect({
    ...opts,
    url,
    ...(auth.token === undefined ? {} : { token: auth.token }),
    RTCPeerConnection: rtc.RTCPeerConnection as unknown as NonNullable<LiveClientOptions['RTCPeerConnection']>,
    MediaStream: rtc.MediaStream as unknown as NonNullable<LiveClientOptions['MediaStream']>,
    createWebSocket: (u) => new WebSocket(u, auth.session === undefined ? {} : { headers: { authorization: `Bearer ${auth.session}` } }) as unknown as WebSocketLike,
  });
}

export interface DecodedFrame {
  readonly width: number;
  readonly height: number;
  /** Capture time from the burned-in timecode, or null when unreadable. */
  readonly capturedAtMs: number | null;
  readonly receivedAtMs: number;
  readonly luma: Uint8Array;
}

/** Calls `onFrame` for each decoded video frame of a stream; returns the stop function. */
export function watchVideo(stream: MediaStreamLike, onFrame: (f: DecodedFrame) => void): () => void {
  const track = stream.getTracks().find((t) => t.kind === 'video') as unknown as MediaTrack | undefined;
  if (track === undefined) throw new Error('no video track');
  const sink: VideoSink = new (wrtc().nonstandard.RTCVideoSink)(track);
  sink.onframe = ({ frame }) => {
    const now = Date.now();
    const luma = frame.data.subarray(0, frame.width * frame.height);
    const code = readTimecodeLuma(luma, frame.width, frame.height);
    onFrame({ width: frame.width, height: frame.height, capturedAtMs: code === null ? null : unwrapTimecode(code, now), receivedAtMs: now, luma });
  };
  return () => sink.stop();
}

/** `eco3d start` in a child process (its CPU and memory are its own), on a free port. */
export interface ChildServer {
  readonly url: string;
  readonly pid: number;
  login(username: string): Promise<string>;
  stop(): Promise<void>;
}

export const CHILD_PASSWORD = 'child-server-password-123';

export async function startChildServer(): Promise<ChildServer> {
  const dir = mkdtempSync(join(tmpdir(), 'eco3d-child-'));
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
  const bin = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));
  const child = spawn(process.execPath, [bin, 'start', '--data', dir, '--port', String(port)], {
    env: { ...process.env, ECO3D_ADMIN_PASSWORD: CHILD_PASSWORD, ECO3D_DEMO_PASSWORD: CHILD_PASSWORD, LOG_LEVEL: process.env.CHILD_LOG_LEVEL ?? 'warn', ECO3D_VIEWER_BUILD: 'skip', DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('Eco3D is up')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`eco3d start exited with ${code}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: child.pid!,
    async login(username) {
      const r = await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password: CHILD_PASSWORD }) });
      if (r.status !== 200) throw new Error(`login ${username}: ${r.status}`);
      return ((await r.json()) as { token: string }).token;
    },
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A process's CPU time (utime + stime, ms) and resident memory (MB), from /proc. */
/** The pid of the server's streamer process (streamer/live-worker.ts), where the peers live. */
export function streamerPid(serverPid: number): number {
  const children = readFileSync(`/proc/${serverPid}/task/${serverPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  const pid = children.find((c) => {
    try {
      return readFileSync(`/proc/${c}/cmdline`, 'utf8').includes('live-worker');
    } catch {
      return false;
    }
  });
  if (pid === undefined) throw new Error(`no streamer process under ${serverPid}`);
  return pid;
}

/** CPU time and RSS of a process and all its descendants (the server and its streamer process). */
export function procUsage(pid: number): { cpuMs: number; rssMb: number } {
  let cpuMs = 0;
  let rssMb = 0;
  const visit = (p: number): void => {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      return; // exited meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    cpuMs += (Number(fields[11]) + Number(fields[12])) * 10;
    rssMb += (Number(fields[21]) * 4096) / 2 ** 20;
    let children = '';
    try {
      children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8');
    } catch {
      // no children file: no children to add
    }
    for (const c of children.trim().split(/\s+/).filter(Boolean)) visit(Number(c));
  };
  visit(pid);
  return { cpuMs, rssMb };
}

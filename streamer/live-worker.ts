// The streamer process: the live streams (WebRTC) and the live volume, apart from the server's
// control loop. libwebrtc's calls block the calling thread while they hop to its own threads (a
// video frame in, a data-channel send, even reading bufferedAmount): measured at 2–3 ms per video
// frame per viewer, and far longer when the machine is busy. On the server's thread that starved
// the robot's state stream and aborted sweeps; and a crash in native code would take the
// controller down with it. Here both stay in this process.
//
// It speaks the messages of live-remote.ts with the server over IPC.
import { Subject } from 'rxjs';
import { toEco3dError } from '../protocols/errors.ts';
import { watchEventLoop } from '../protocols/event-loop.ts';
import type { TeleopStatus } from '../protocols/teleop.ts';
import { LiveHub, type LiveFrame, type LiveViewer } from './live-hub.ts';
import type { FromLiveWorker, ToLiveWorker } from './live-remote.ts';
import { LiveVolume } from './live-volume.ts';

if (process.send === undefined) throw new Error('live-worker.ts runs as a child process with IPC (see live-remote.ts)');
const post = (m: FromLiveWorker): void => {
  if (process.connected) process.send!(m);
};

let hub: LiveHub | null = null;
let volume: LiveVolume | null = null;
const frames = new Subject<LiveFrame>();
let status: TeleopStatus | null = null;
const viewers = new Map<string, LiveViewer>();
let wantsVideo = false;

function reportWantsVideo(): void {
  const w = hub?.wantsVideo() ?? false;
  if (w !== wantsVideo) {
    wantsVideo = w;
    post({ t: 'wants-video', value: w });
  }
}

const log = {
  info: (obj: object, msg: string) => post({ t: 'log', level: 'info', obj, msg }),
  warn: (obj: object, msg: string) => post({ t: 'log', level: 'warn', obj, msg }),
};

async function handle(m: ToLiveWorker): Promise<void> {
  switch (m.t) {
    case 'init': {
      volume = new LiveVolume(m.volume);
      status = m.status;
      const current = m.status;
      hub = new LiveHub(
        {
          frames$: frames,
          status: () => status ?? current,
          volume,
          imaging: m.imaging,
        },
        { ...m.options, log },
      );
      setInterval(reportWantsVideo, 250);
      watchEventLoop((blockedMs) => log.warn({ blockedMs }, 'the streamer thread was blocked'));
      post({ t: 'ready' });
      return;
    }
    case 'frame':
      if (m.video) frames.next(m.frame);
      if (m.paste) volume?.push(m.frame);
      return;
    case 'status':
      status = m.status;
      return;
    case 'volume-begin':
      try {
        volume?.begin(m.acquisitionUid, m.grid);
        log.info({ acquisitionUid: m.acquisitionUid, dims: m.grid.dims, spacingMm: m.grid.spacingMm.x }, 'live volume started');
      } catch (err) {
        log.warn({ acquisitionUid: m.acquisitionUid, err: toEco3dError(err).message }, 'no live volume for this sweep');
      }
      return;
    case 'volume-end':
      volume?.end();
      return;
    case 'join':
      try {
        let id: string | null = null;
        const viewer = await hub!.join(m.identity, (msg) => {
          if (msg.type === 'welcome') id = msg.viewerId;
          else if (msg.type === 'bye' && id !== null) viewers.delete(id);
          post({ t: 'signal', join: m.req, msg });
        });
        viewers.set(viewer.id, viewer);
        reportWantsVideo();
        post({ t: 'reply', req: m.req, ok: true, value: viewer.id });
      } catch (err) {
        const e = toEco3dError(err);
        post({ t: 'reply', req: m.req, ok: false, code: e.code, message: e.message });
      }
      return;
    case 'answer':
    case 'ice':
      try {
        const v = viewers.get(m.viewerId);
        if (v === undefined) throw toEco3dError(new Error('viewer closed'), 'ECO3D_ERR_CLOSED');
        if (m.t === 'answer') await v.answer(m.sdp);
        else await v.addIceCandidate(m.candidate);
        post({ t: 'reply', req: m.req, ok: true });
      } catch (err) {
        const e = toEco3dError(err);
        post({ t: 'reply', req: m.req, ok: false, code: e.code, message: e.message });
      }
      return;
    case 'leave':
      viewers.get(m.viewerId)?.close(m.reason);
      viewers.delete(m.viewerId);
      reportWantsVideo();
      return;
    case 'stats':
      post({ t: 'reply', req: m.req, ok: true, value: hub?.stats() ?? null });
      return;
    case 'close':
      hub?.close();
      volume?.close();
      viewers.clear();
      // libwebrtc closes the peers on its own threads: give it that time before the thread ends.
      setTimeout(() => post({ t: 'reply', req: m.req, ok: true }), 300);
      return;
  }
}

process.on('message', (m: ToLiveWorker) => {
  handle(m).catch((err: unknown) => log.warn({ err: toEco3dError(err).message, message: m.t }, 'streamer message failed'));
});
// The server went away: no one to stream for.
process.on('disconnect', () => {
  hub?.close();
  setTimeout(() => process.exit(0), 300);
});
process.on('SIGTERM', () => {
  hub?.close();
  setTimeout(() => process.exit(0), 300);
});

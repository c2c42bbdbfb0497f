// Joining the live stream (LiveClient, /ws/live) from a signed-in page: retries until the server
// answers, then hands over the client (which reconnects by itself after a drop). Shows the
// connection state in #live-state.
import { LiveClient, type LiveClientOptions, type MediaStreamLike } from '../../marketplace/sdk/live-client.ts';
import { describeError, setText } from './ui.ts';

export async function connectLive(opts: LiveClientOptions, onClient: (c: LiveClient) => void): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    setText('live-state', attempt === 1 ? 'live: connecting…' : `live: connecting… (attempt ${attempt})`, 'warn');
    try {
      const client = await LiveClient.connect(opts);
      const show = (): void => setText('live-state', `live: ${client.state}`, client.state === 'connected' ? 'ok' : client.state === 'closed' ? 'bad' : 'warn');
      client.on('state', show);
      show();
      onClient(client);
      return;
    } catch (e) {
      const { code, message } = describeError(e);
      setText('live-state', `live: unavailable (${code}: ${message}) — retrying`, 'bad');
      // A refusal of our rights will not change by retrying.
      if (code === 'ECO3D_ERR_FORBIDDEN' || code === 'ECO3D_ERR_UNAUTHENTICATED') return;
      await new Promise((r) => setTimeout(r, Math.min(10_000, 1500 * attempt)));
    }
  }
}

/** The SDK types streams structurally (it also runs in Node); in a page they are MediaStreams. */
export const asMediaStream = (s: MediaStreamLike | null): MediaStream | null => s as unknown as MediaStream | null;

/** Shows a stream in a <video> (muted: the B-mode has no sound; the call's audio plays on callRemote). */
export function attachStream(video: HTMLVideoElement, stream: MediaStream | null, muted = true): void {
  if (video.srcObject === stream) return;
  video.srcObject = stream;
  video.muted = muted;
  video.playsInline = true;
  if (stream !== null) {
    video.play().catch(() => {
      // Autoplay with sound needs a user gesture: play muted, unmute on the next click.
      if (!muted) {
        video.muted = true;
        video.play().catch(() => {});
        addEventListener('pointerdown', () => (video.muted = false), { once: true });
      }
    });
  }
}

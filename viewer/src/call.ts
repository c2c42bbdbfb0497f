// The console ↔ bedside call: our camera and microphone (getUserMedia) go to the LiveClient as
// localMedia with want.call; the other side's stream arrives as LiveClient.callStream / a
// 'stream' event of kind 'call'. Elements: #callLocal (ourselves, muted), #callRemote, #call-state.
// The server offers the call tracks whether or not the other side is there, so "connected" means
// media is flowing: a video frame within the last 2 s, or unmuted audio.
import type { LiveClient } from '../../marketplace/sdk/live-client.ts';
import { asMediaStream, attachStream } from './live.ts';
import { $, setText } from './ui.ts';

const FRAME_STALE_MS = 2000;

/** Camera + microphone, or null (no device, refused, or not a secure context) with the reason shown. */
export async function startLocalMedia(): Promise<MediaStream | null> {
  const local = $<HTMLVideoElement>('callLocal');
  if (navigator.mediaDevices?.getUserMedia === undefined) {
    setText('call-state', 'no camera access here (needs HTTPS or localhost)', 'warn');
    return null;
  }
  try {
    const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    attachStream(local, s, true);
    return s;
  } catch (e) {
    setText('call-state', `camera/microphone unavailable: ${(e as Error).name}`, 'warn');
    return null;
  }
}

export function wireCall(client: LiveClient, peerName: string): void {
  const remote = $<HTMLVideoElement>('callRemote');
  const box = document.getElementById('call');
  let lastFrameAt = -Infinity;
  const onFrame = (): void => {
    lastFrameAt = performance.now();
    remote.requestVideoFrameCallback(onFrame);
  };
  if (typeof remote.requestVideoFrameCallback === 'function') remote.requestVideoFrameCallback(onFrame);
  else remote.addEventListener('timeupdate', () => (lastFrameAt = performance.now()));

  const refresh = (): void => {
    const s = remote.srcObject as MediaStream | null;
    const audio = s?.getAudioTracks().some((t) => t.readyState === 'live' && !t.muted) ?? false;
    const on = s !== null && (audio || performance.now() - lastFrameAt < FRAME_STALE_MS);
    box?.classList.toggle('active', on);
    remote.dataset.active = String(on);
    if (on) setText('call-state', `in call with the ${peerName}`, 'ok');
    else setText('call-state', client.welcome.grants.call ? `waiting for the ${peerName}…` : 'call not granted', '');
  };
  const show = (s: MediaStream | null): void => {
    attachStream(remote, s, false);
    refresh();
  };
  show(asMediaStream(client.callStream));
  client.on('stream', (e) => {
    if (e.kind === 'call') show(asMediaStream(e.stream));
  });
  setInterval(refresh, 1000);
}

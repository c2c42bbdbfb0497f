// The console's heads-up display, refreshed 4 times a second:
//   #hud-rtt        round trip over the telemetry channel (LiveClient.rttMs())
//   #hud-frame-age  capture → now of the frame on screen (its burned-in time code)
//   #hud-fps        frames presented by the <video> (requestVideoFrameCallback count per second)
//   #hud-dropped    frames the server did not send us + frames the decoder dropped
import type { LiveClient } from '../../marketplace/sdk/live-client.ts';
import { setText } from './ui.ts';

export class Hud {
  private client: LiveClient | null = null;
  private frames = 0;
  private fps: number | null = null;
  private windowStart = performance.now();

  constructor(private readonly video: HTMLVideoElement) {
    const count = (): void => {
      this.frames++;
      video.requestVideoFrameCallback(count);
    };
    if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(count);
    setInterval(() => this.refresh(), 250);
    this.refresh();
  }

  attach(client: LiveClient | null): void {
    this.client = client;
  }

  private refresh(): void {
    const now = performance.now();
    if (now - this.windowStart >= 1000) {
      this.fps = (this.frames * 1000) / (now - this.windowStart);
      this.frames = 0;
      this.windowStart = now;
    }
    const c = this.client;
    const rtt = c?.rttMs() ?? null;
    const playing = this.video.srcObject !== null && this.video.readyState >= 2;
    const age = c !== null && playing ? c.frameAgeMs(this.video) : null;
    setText('hud-rtt', rtt === null ? '—' : `${rtt.toFixed(0)} ms`);
    setText('hud-frame-age', age === null ? '—' : `${age.toFixed(0)} ms`, age === null ? '' : age > 250 ? 'bad' : age > 120 ? 'warn' : 'ok');
    setText('hud-fps', this.fps === null || !playing ? '—' : this.fps.toFixed(1));
    const server = c?.telemetry?.viewer.videoFramesDropped ?? null;
    const q = typeof this.video.getVideoPlaybackQuality === 'function' ? this.video.getVideoPlaybackQuality() : null;
    const decoder = q?.droppedVideoFrames ?? null;
    setText('hud-dropped', server === null && decoder === null ? '—' : `${server ?? '—'} server · ${decoder ?? '—'} decoder`);
    const scale = c?.telemetry?.viewer.videoScale;
    setText('hud-scale', scale === undefined ? '' : scale === 1 ? '' : `video ×${scale}`);
  }
}

// The remote sonographer's console: live B-mode, the 3D volume and its slices with calipers, the
// work cell in 3D, tele-operation (/ws/operator) with hold-to-move jog, sweeps, the HUD and the
// call with the bedside.
import './style.css';
import type { LiveClient } from '../../marketplace/sdk/live-client.ts';
import { toMat4 } from '../../marketplace/sdk/plugin.ts';
import type { TeleopStatus } from '../../protocols/teleop.ts';
import type { GridMessage } from '../../protocols/volume-stream.ts';
import { canOperate, requireAccount, type Account } from './api.ts';
import { Calipers } from './calipers.ts';
import { startLocalMedia, wireCall } from './call.ts';
import { softwareGl } from './gl.ts';
import { Hud } from './hud.ts';
import { JogController } from './jog.ts';
import { asMediaStream, attachStream, connectLive } from './live.ts';
import { MprView } from './mpr.ts';
import { startPluginLayers } from './plugin-layers.ts';
import { Scene3D } from './scene3d.ts';
import { renderStatus, robotOf, sweepRunning } from './status-view.ts';
import { wireSweep } from './sweep.ts';
import { TeleopSocket } from './teleop.ts';
import { $, run, setText, showError } from './ui.ts';
import { VolumeView, type PresetName } from './volume-view.ts';

async function main(): Promise<void> {
  let me: Account;
  try {
    me = await requireAccount(canOperate);
  } catch (e) {
    showError(e, 'console');
    if ((e as { code?: string }).code === 'ECO3D_ERR_FORBIDDEN') setText('who', 'this account cannot drive the robot — see the bedside panel', 'bad');
    return;
  }
  setText('who', `${me.username} (${me.role}, ${me.tenantId})`);

  // ---- tele-operation ----------------------------------------------------------------------
  const teleop = new TeleopSocket('operator');
  let status: TeleopStatus | null = null;
  const jog = new JogController(teleop, {
    speedMmPerS: () => Number($<HTMLInputElement>('jog-speed').value) || 10,
    onStop: () => stopAll(),
  });
  const scene = new Scene3D($('scene-view'));
  teleop.on('open', () => setText('teleop-state', 'teleop: connected', 'ok'));
  teleop.on('close', () => setText('teleop-state', 'teleop: disconnected — reconnecting', 'bad'));
  teleop.on('error', (e) => showError(e, 'robot'));
  teleop.on('status', (s) => {
    status = s;
    renderStatus(s, me.username);
    jog.setHolder(s.control.holder, me.username);
    scene.updatePose(robotOf(s)?.tcpPose ?? null);
  });

  $('take-control').addEventListener('click', () =>
    run(async () => {
      await teleop.command({ type: 'acquire-control' });
      jog.setMine(true);
    }, 'take control'),
  );
  $('release-control').addEventListener('click', () =>
    run(async () => {
      jog.setMine(false);
      await teleop.command({ type: 'release-control' });
    }, 'release control'),
  );
  $('home-robot').addEventListener('click', () => run(() => teleop.command({ type: 'home' }), 'home'));

  /** STOP: forget held inputs, stop the robot, abort a running sweep. */
  function stopAll(): void {
    jog.releaseAll();
    run(() => teleop.command({ type: 'stop' }), 'stop');
    if (sweepRunning(status)) run(() => teleop.command({ type: 'sweep-abort' }), 'sweep abort');
  }
  $('stop').addEventListener('click', stopAll);
  addEventListener('keydown', (e) => {
    if (e.key === 'Escape') stopAll();
  });
  wireSweep(teleop);

  // ---- volume, slices, calipers ------------------------------------------------------------
  const volume = new VolumeView($('volume-view'));
  const preset = $<HTMLSelectElement>('volume-preset');
  preset.addEventListener('change', () => volume.setPreset(preset.value as PresetName));
  const calipers = new Calipers();
  const mpr = new MprView($('mpr'), calipers);
  calipers.onRedraw(() => mpr.redraw());

  // The video texture costs a frame of software GL per video frame: off there by default.
  $<HTMLInputElement>('scene-video').checked = !softwareGl();
  const hud = new Hud($<HTMLVideoElement>('bmode'));
  // Third-party live plugins: each a sandboxed layer over the B-mode, off until turned on.
  run(() => startPluginLayers($('bmode').parentElement!, $('hud-scale')), 'plugins');
  // For end-to-end tests and debugging in the devtools console.
  (window as unknown as { eco3d: unknown }).eco3d = { teleop, jog, scene, volume, mpr, calipers, hud };

  // ---- live stream -------------------------------------------------------------------------
  const localMedia = await withTimeout(startLocalMedia(), 8000);
  await connectLive(
    { want: { video: true, telemetry: true, volume: true, call: true }, ...(localMedia === null ? {} : { localMedia }) },
    (client: LiveClient) => {
      hud.attach(client);
      const w = client.welcome;
      scene.setImaging(w.imaging);
      const bmode = $<HTMLVideoElement>('bmode');
      const onPlane = $<HTMLInputElement>('scene-video');
      const showVideo = (s: MediaStream | null): void => {
        attachStream(bmode, s);
        scene.setVideo(s === null || !onPlane.checked ? null : bmode);
      };
      onPlane.addEventListener('change', () => showVideo(bmode.srcObject as MediaStream | null));
      if (!w.grants.video) setText('hud-scale', 'no video granted to this account', 'warn');
      showVideo(asMediaStream(client.videoStream));
      client.on('stream', (e) => {
        if (e.kind === 'video') showVideo(asMediaStream(e.stream));
      });
      client.on('error', (e) => showError(e, 'live'));
      client.on('telemetry', (t) => {
        scene.updateImagePlane(t.frame === null ? null : toMat4(t.frame.imageToReference));
        // The teleop socket is the status source; telemetry stands in while it is down.
        if (!teleop.connected) {
          status = t.status;
          renderStatus(t.status, me.username);
          scene.updatePose(robotOf(t.status)?.tcpPose ?? null);
        }
      });
      // The event's grid (the assembler may apply it just after telling us).
      const onGrid = (g: GridMessage | null): void => {
        scene.setGrid(g);
        calipers.setAcquisition(g?.acquisitionUid ?? null);
        setText('volume-info', g === null ? '' : `${g.dims.join('×')} @ ${g.spacingMm.map((s) => s.toFixed(2)).join('/')} mm`);
        volume.follow(client.volume);
        mpr.follow(client.volume);
      };
      client.on('grid', (g) => onGrid(g));
      client.on('volume', () => {
        if (client.volume.grid?.acquisitionUid !== undefined) calipers.setAcquisition(client.volume.grid.acquisitionUid);
        volume.changed();
        mpr.changed();
      });
      onGrid(client.volume.grid);
      wireCall(client, 'bedside');
      addEventListener('pagehide', () => client.close());
    },
  );
  addEventListener('pagehide', () => teleop.close());
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  return Promise.race([p, new Promise<null>((r) => setTimeout(() => r(null), ms))]);
}

main().catch((e: unknown) => showError(e, 'console'));

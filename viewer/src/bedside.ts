// The bedside touch panel (/ws/bedside): the latched E-STOP and its reset, who holds remote
// control, probe force and robot state, sweeps, the exam and research consent, and the call with
// the remote sonographer.
import './style.css';
import type { TeleopStatus } from '../../protocols/teleop.ts';
import { requireAccount } from './api.ts';
import { startLocalMedia, wireCall } from './call.ts';
import { wireConsent } from './consent.ts';
import { loadExam, wireExam } from './exam.ts';
import { connectLive } from './live.ts';
import { renderStatus } from './status-view.ts';
import { wireSweep } from './sweep.ts';
import { TeleopSocket, type BedsideCommand } from './teleop.ts';
import { $, run, setText, showError } from './ui.ts';

const GAUGE_MAX_N = 20;

async function main(): Promise<void> {
  let me;
  try {
    me = await requireAccount((r) => r === 'bedside');
  } catch (e) {
    showError(e, 'bedside panel');
    if ((e as { code?: string }).code === 'ECO3D_ERR_FORBIDDEN') setText('who', 'the bedside panel needs a bedside account', 'bad');
    return;
  }
  setText('who', `${me.username} (${me.tenantId})`);

  const teleop = new TeleopSocket<BedsideCommand>('bedside');
  teleop.on('open', () => setText('teleop-state', 'connected', 'ok'));
  teleop.on('close', () => setText('teleop-state', 'DISCONNECTED — reconnecting (the e-stop needs this link)', 'bad'));
  teleop.on('error', (e) => showError(e, 'robot'));
  let lastAcq: string | null = null;
  teleop.on('status', (s: TeleopStatus) => {
    renderStatus(s, null);
    renderForce(s.forceN);
    const h = s.control.holder;
    setText('control-note', h === null ? 'nobody is driving the robot remotely' : `${h} is driving the robot remotely`);
    // A new acquisition may come with a new exam.
    if (s.acquisition.uid !== lastAcq) {
      lastAcq = s.acquisition.uid;
      run(loadExam, 'exam');
    }
  });

  // The e-stop goes out at once, acknowledged or not; a failure to send is shown loudly.
  $('estop').addEventListener('click', () => run(() => teleop.command({ type: 'estop' }), 'E-STOP'));
  $('estop-reset').addEventListener('click', () => run(() => teleop.command({ type: 'estop-reset' }), 'e-stop reset'));
  $('bedside-stop').addEventListener('click', () => run(() => teleop.command({ type: 'stop' }), 'stop'));
  wireSweep(teleop);
  wireExam();
  wireConsent();
  addEventListener('pagehide', () => teleop.close());

  const localMedia = await Promise.race([startLocalMedia(), new Promise<null>((r) => setTimeout(() => r(null), 8000))]);
  await connectLive({ want: { video: false, telemetry: false, volume: false, call: true }, ...(localMedia === null ? {} : { localMedia }) }, (client) => {
    client.on('error', (e) => showError(e, 'call'));
    wireCall(client, 'sonographer');
    addEventListener('pagehide', () => client.close());
  });
}

function renderForce(forceN: number | null): void {
  const fill = $('force-gauge').querySelector<HTMLElement>('.fill')!;
  const f = forceN === null ? 0 : Math.max(0, forceN);
  fill.style.width = `${Math.min(100, (f / GAUGE_MAX_N) * 100).toFixed(1)}%`;
  $('force-gauge').dataset.forceN = forceN === null ? '' : forceN.toFixed(2);
}

main().catch((e: unknown) => showError(e, 'bedside panel'));

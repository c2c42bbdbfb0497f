// Renders a TeleopStatus into the elements both the console and the bedside panel carry:
// #control-holder, #robot-mode, #estop-state, #acq-state, #link-state, #force, #tcp, #problems.
import type { RobotState } from '../../protocols/robot.ts';
import type { TeleopStatus } from '../../protocols/teleop.ts';
import { el, fmt, setText } from './ui.ts';

export const robotOf = (s: TeleopStatus): RobotState | null => (s.robot ?? null) as RobotState | null;

export function renderStatus(s: TeleopStatus, me: string | null): void {
  setText('link-state', s.link.up ? 'up' : `DOWN (${s.link.reason})`, s.link.up ? 'ok' : 'bad');
  const r = robotOf(s);
  const mode = document.getElementById('robot-mode');
  if (mode !== null) {
    const text = r === null ? '—' : `${r.mode}${r.faults.length > 0 ? ` — faults: ${r.faults.join(', ')}` : ''}`;
    setText('robot-mode', text, r === null ? '' : r.mode === 'faulted' || r.mode === 'estopped' ? 'bad' : r.mode === 'idle' || r.mode === 'stopped' ? '' : 'warn');
    mode.dataset.mode = r?.mode ?? '';
  }
  setText('force', s.forceN === null ? 'no sensor' : `${fmt(s.forceN)} N`);
  setText('tcp', r === null ? '—' : (['x', 'y', 'z'] as const).map((k) => fmt(r.tcpPose.positionMm[k])).join(', '));
  setText('estop-state', s.estopLatched ? 'LATCHED' : 'clear', s.estopLatched ? 'bad' : 'ok');
  const es = document.getElementById('estop-state');
  if (es !== null) es.dataset.latched = String(s.estopLatched);
  document.body.classList.toggle('estop-latched', s.estopLatched);

  const holder = s.control.holder;
  // The holder's name alone (tests read it); "(you)" goes beside it.
  setText('control-holder', holder ?? 'nobody', holder === null ? '' : holder === me ? 'ok' : 'warn');
  setText('control-you', holder !== null && holder === me ? '(you)' : '', 'ok');
  const ch = document.getElementById('control-holder');
  if (ch !== null) ch.dataset.holder = holder ?? '';

  const a = s.acquisition;
  const pct = a.progress === undefined ? '' : ` ${(a.progress * 100).toFixed(0)}%`;
  setText('acq-state', `${a.state}${a.abortReason === undefined ? '' : ` (${a.abortReason})`}${pct}`, a.state === 'aborted' ? 'bad' : a.state === 'completed' ? 'ok' : '');
  const acq = document.getElementById('acq-state');
  if (acq !== null) {
    acq.dataset.state = a.state;
    acq.title = a.uid ?? '';
  }
  const bar = document.getElementById('acq-progress') as HTMLProgressElement | null;
  if (bar !== null) bar.value = a.progress ?? 0;

  renderProblems(s);
}

let lastProblemsKey = '';
function renderProblems(s: TeleopStatus): void {
  const box = document.getElementById('problems');
  if (box === null) return;
  const key = s.problems.map((p) => `${p.id}|${p.severity}|${p.message}`).join('\n');
  if (key === lastProblemsKey) return;
  lastProblemsKey = key;
  box.dataset.count = String(s.problems.length);
  if (s.problems.length === 0) {
    box.replaceChildren(el('li', { class: 'none' }, 'no problems'));
    return;
  }
  box.replaceChildren(
    ...s.problems.map((p) =>
      el('li', { class: p.severity === 'error' ? 'bad' : p.severity === 'warning' ? 'warn' : '', 'data-problem': p.id }, `${p.code === undefined ? '' : `${p.code} `}${p.message}`),
    ),
  );
}

/** Whether a sweep is under way (so STOP also aborts it). */
export const sweepRunning = (s: TeleopStatus | null): boolean =>
  s !== null && (s.acquisition.state === 'positioning' || s.acquisition.state === 'scanning' || s.acquisition.state === 'paused');

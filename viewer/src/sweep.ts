// Robotic sweep controls, shared by the console (/ws/operator) and the bedside (/ws/bedside):
// #sweep-start (a linear plan from the small form), #sweep-pause, #sweep-resume, #sweep-abort.
import type { z } from 'zod';
import type { sweepRequestSchema } from '../../protocols/teleop.ts';
import { $, run } from './ui.ts';

type SweepPlan = z.input<typeof sweepRequestSchema>;
type SweepCommand =
  | { type: 'sweep-start'; plan: SweepPlan }
  | { type: 'sweep-pause' }
  | { type: 'sweep-resume' }
  | { type: 'sweep-abort' };

export interface SweepSink {
  command(msg: SweepCommand): Promise<void>;
}

/** The default plan (as the interim panel had): 120 mm head-to-foot over the torso's middle. */
export const DEFAULT_SWEEP = { x: 450, y: -60, headingDeg: 0, lengthMm: 120, speedMmPerS: 10, targetForceN: 5 };

function num(id: string, fallback: number): number {
  const e = document.getElementById(id) as HTMLInputElement | null;
  const v = e === null ? NaN : Number(e.value);
  return Number.isFinite(v) ? v : fallback;
}

export function linearPlanFromForm(): SweepPlan {
  const d = DEFAULT_SWEEP;
  return {
    kind: 'linear',
    startMm: { x: num('sweep-x', d.x), y: num('sweep-y', d.y) },
    headingDeg: num('sweep-heading', d.headingDeg),
    lengthMm: num('sweep-length', d.lengthMm),
    speedMmPerS: num('sweep-speed', d.speedMmPerS),
    targetForceN: num('sweep-force', d.targetForceN),
  };
}

export function wireSweep(sink: SweepSink): void {
  const plan = document.getElementById('sweep-plan');
  if (plan !== null && plan.childElementCount === 0) plan.innerHTML = sweepFormHtml();
  $('sweep-start').addEventListener('click', () => run(() => sink.command({ type: 'sweep-start', plan: linearPlanFromForm() }), 'sweep start'));
  $('sweep-pause').addEventListener('click', () => run(() => sink.command({ type: 'sweep-pause' }), 'sweep pause'));
  $('sweep-resume').addEventListener('click', () => run(() => sink.command({ type: 'sweep-resume' }), 'sweep resume'));
  $('sweep-abort').addEventListener('click', () => run(() => sink.command({ type: 'sweep-abort' }), 'sweep abort'));
}

/** The form's HTML (both pages include it the same way). */
export function sweepFormHtml(): string {
  const d = DEFAULT_SWEEP;
  const f = (id: string, label: string, v: number, unit: string): string =>
    `<label>${label} <input id="${id}" type="number" value="${v}" step="any"> ${unit}</label>`;
  return [
    f('sweep-x', 'start x', d.x, 'mm'),
    f('sweep-y', 'start y', d.y, 'mm'),
    f('sweep-heading', 'heading', d.headingDeg, '°'),
    f('sweep-length', 'length', d.lengthMm, 'mm'),
    f('sweep-speed', 'speed', d.speedMmPerS, 'mm/s'),
    f('sweep-force', 'force', d.targetForceN, 'N'),
  ].join('');
}

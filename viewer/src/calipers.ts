// Distance and area calipers on the MPR slices. Points are world mm (the MPR maps clicks through
// the grid: origin + index × spacing). A distance takes two clicks; an area takes three or more,
// closed with "close" or a double click. Saved with POST /api/acquisitions/:uid/measurements
// (uid = the current grid's acquisitionUid) and listed from the same resource.
import { listMeasurements, saveMeasurement, type Measurement, type Plane } from './api.ts';
import { PLANES, type MprHooks, type Overlay, type Vec3 } from './mpr.ts';
import { $, el, run, setText, showError } from './ui.ts';

type Mode = 'off' | 'distance' | 'area';
/** The server's limit (store/measurements.ts). */
const MAX_POLYGON_POINTS = 64;
const AXIS = ['x', 'y', 'z'] as const;

export function distanceMm(a: Vec3, b: Vec3): number {
  return Math.hypot(a.x - b.x, a.y - b.y, a.z - b.z);
}

/** Polygon area (shoelace) in the plane's two in-plane axes, mm². */
export function areaMm2(plane: Plane, pts: readonly Vec3[]): number {
  const { h, v } = PLANES[plane];
  let s = 0;
  for (let i = 0; i < pts.length; i++) {
    const p = pts[i]!;
    const q = pts[(i + 1) % pts.length]!;
    s += p[AXIS[h]] * q[AXIS[v]] - q[AXIS[h]] * p[AXIS[v]];
  }
  return Math.abs(s) / 2;
}

/** A saved measurement's value for display: `12.3 mm`, `45.6 mm²`. */
export function savedValueText(m: Measurement): string {
  if (m.kind === 'distance' && typeof m.valueMm === 'number') return `${m.valueMm.toFixed(1)} mm`;
  if (m.kind === 'area' && typeof m.valueMm2 === 'number') return `${m.valueMm2.toFixed(1)} mm²`;
  return valueText(m.kind, m.plane, m.pointsMm);
}

function valueText(kind: 'distance' | 'area', plane: Plane, pts: readonly Vec3[]): string {
  if (kind === 'distance') return pts.length < 2 ? '—' : `${distanceMm(pts[0]!, pts[1]!).toFixed(1)} mm`;
  return pts.length < 3 ? '—' : `${areaMm2(plane, pts).toFixed(1)} mm²`;
}

export class Calipers implements MprHooks {
  private mode: Mode = 'off';
  private current: { kind: 'distance' | 'area'; plane: Plane; points: Vec3[]; done: boolean } | null = null;
  private saved: Measurement[] = [];
  private uid: string | null = null;
  private redraw: () => void = () => {};
  private savedListeners: ((saved: readonly Measurement[]) => void)[] = [];

  constructor() {
    for (const m of ['distance', 'area'] as const) {
      $(`caliper-${m}`).addEventListener('click', () => this.setMode(this.mode === m ? 'off' : m));
    }
    $('caliper-finish').addEventListener('click', () => this.finishArea());
    $('caliper-clear').addEventListener('click', () => {
      this.current = null;
      this.show();
    });
    $('caliper-save').addEventListener('click', () => run(() => this.save(), 'save measurement'));
    this.show();
  }

  onRedraw(fn: () => void): void {
    this.redraw = fn;
  }

  /** Calls `fn` with the acquisition's saved measurements now and whenever that list changes (the report's pick-list). */
  onSaved(fn: (saved: readonly Measurement[]) => void): void {
    this.savedListeners.push(fn);
    fn(this.saved);
  }

  private savedChanged(): void {
    for (const fn of this.savedListeners) fn(this.saved);
  }

  /** The acquisition whose volume is shown (its measurements are listed). */
  setAcquisition(uid: string | null): void {
    if (uid === this.uid) return;
    this.uid = uid;
    this.current = null;
    this.saved = [];
    setText('measurements-uid', uid ?? 'no acquisition');
    this.show();
    this.savedChanged();
    if (uid !== null) run(() => this.reload(), 'measurements');
  }

  setMode(m: Mode): void {
    this.mode = m;
    if (m === 'off' || (this.current !== null && this.current.kind !== m)) this.current = null;
    for (const k of ['distance', 'area'] as const) $(`caliper-${k}`).classList.toggle('active', this.mode === k);
    document.getElementById('mpr')?.classList.toggle('measuring', m !== 'off');
    this.show();
  }

  onClick(plane: Plane, p: Vec3): void {
    if (this.mode === 'off') return;
    const c = this.current;
    if (c === null || c.done || c.plane !== plane || get(c.points[0]!, PLANES[plane].n) !== get(p, PLANES[plane].n)) {
      this.current = { kind: this.mode, plane, points: [p], done: false };
    } else if (c.points.length < MAX_POLYGON_POINTS) {
      c.points.push(p);
      if (c.kind === 'distance' && c.points.length === 2) c.done = true;
    }
    this.show();
  }

  onDoubleClick(): void {
    this.finishArea();
  }

  private finishArea(): void {
    const c = this.current;
    if (c === null || c.kind !== 'area') return;
    // A double click also delivered two clicks on the same spot: drop the duplicates.
    c.points = c.points.filter((p, i, a) => i === 0 || distanceMm(p, a[i - 1]!) > 1e-6);
    if (c.points.length >= 3) c.done = true;
    this.show();
  }

  overlays(plane: Plane): readonly Overlay[] {
    const out: Overlay[] = [];
    for (const m of this.saved) {
      if (m.plane !== plane || !Array.isArray(m.pointsMm)) continue;
      out.push({ points: m.pointsMm, closed: m.kind === 'area', color: '#7fd4ff', label: m.label ?? savedValueText(m) });
    }
    const c = this.current;
    if (c !== null && c.plane === plane) {
      out.push({ points: c.points, closed: c.kind === 'area' && c.done, color: '#ffd23f', label: valueText(c.kind, c.plane, c.points) });
    }
    return out;
  }

  private async save(): Promise<void> {
    const c = this.current;
    if (this.uid === null) throw Object.assign(new Error('no acquisition volume to measure yet'), { code: 'ECO3D_ERR_CONFLICT' });
    if (c === null || !c.done) throw Object.assign(new Error(c?.kind === 'area' ? 'close the polygon first (3 points or more)' : 'place two points first'), { code: 'ECO3D_ERR_BAD_REQUEST' });
    const label = $<HTMLInputElement>('caliper-label').value.trim();
    const saved = await saveMeasurement(this.uid, { kind: c.kind, plane: c.plane, pointsMm: c.points, ...(label === '' ? {} : { label }) });
    this.saved.push({ ...saved, kind: saved.kind ?? c.kind, plane: saved.plane ?? c.plane, pointsMm: saved.pointsMm ?? c.points });
    this.current = null;
    $<HTMLInputElement>('caliper-label').value = '';
    this.show();
    this.savedChanged();
    await this.reload().catch((e: unknown) => showError(e, 'measurements'));
  }

  private async reload(): Promise<void> {
    const uid = this.uid;
    if (uid === null) return;
    const list = await listMeasurements(uid);
    if (uid !== this.uid) return;
    this.saved = list.filter((m) => Array.isArray(m.pointsMm));
    this.show();
    this.savedChanged();
  }

  private show(): void {
    const c = this.current;
    const hint =
      this.mode === 'off'
        ? 'choose Distance or Area, then click on a slice'
        : c === null
          ? `click on a slice to start a${this.mode === 'area' ? 'n area' : ' distance'}`
          : c.done
            ? 'save it, or click to start another'
            : c.kind === 'distance'
              ? 'click the second point'
              : 'click more points; double-click or Close to finish';
    setText('caliper-hint', hint);
    setText('caliper-value', c === null ? '—' : valueText(c.kind, c.plane, c.points));
    const list = document.getElementById('measurements');
    if (list !== null) {
      list.replaceChildren(
        ...this.saved.map((m) =>
          el('li', { 'data-kind': m.kind, 'data-plane': m.plane }, `${m.kind} ${savedValueText(m)} — ${m.plane}${m.label === undefined ? '' : ` — ${m.label}`}`),
        ),
      );
      if (this.saved.length === 0) list.append(el('li', { class: 'none' }, 'no saved measurements'));
    }
    this.redraw();
  }
}

const get = (p: Vec3, a: 0 | 1 | 2): number => p[AXIS[a]];

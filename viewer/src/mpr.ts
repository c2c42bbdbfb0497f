// Three orthogonal slices (MPR) of the live volume, drawn on 2D canvases. The grid is axis-aligned
// in the world (Reference = robot base) frame, z up. Planes are named as the server's measurement
// store names them (DICOM patient-frame convention, store/measurements.ts):
//   axial    ⟂ z (x across, y up the screen: seen from above)
//   sagittal ⟂ x (y across, z up)
//   coronal  ⟂ y (x across, z up)
// A click maps canvas px → continuous voxel index → world mm (origin + index × spacing); the
// calipers use it. Redraws are throttled like the 3D view (≤ 5 Hz).
import type { GridMessage } from '../../protocols/volume-stream.ts';
import type { Plane } from './api.ts';
import type { VolumeSource } from './volume-view.ts';
import { el } from './ui.ts';

export type Vec3 = { x: number; y: number; z: number };
type Axis = 0 | 1 | 2;

interface PlaneAxes {
  /** Grid axis shown across (left → right). */
  readonly h: Axis;
  /** Grid axis shown up the screen (bottom → top). */
  readonly v: Axis;
  /** Grid axis normal to the slice. */
  readonly n: Axis;
  readonly title: string;
}

export const PLANES: Readonly<Record<Plane, PlaneAxes>> = {
  axial: { h: 0, v: 1, n: 2, title: 'axial ⟂z' },
  sagittal: { h: 1, v: 2, n: 0, title: 'sagittal ⟂x' },
  coronal: { h: 0, v: 2, n: 1, title: 'coronal ⟂y' },
};

const AXIS_NAMES = ['x', 'y', 'z'] as const;
const get = (p: Vec3, a: Axis): number => p[AXIS_NAMES[a]];

export interface Overlay {
  readonly points: readonly Vec3[];
  readonly closed: boolean;
  readonly color: string;
  readonly label?: string;
}

export interface MprHooks {
  onClick(plane: Plane, worldMm: Vec3, e: MouseEvent): void;
  onDoubleClick?(plane: Plane): void;
  overlays(plane: Plane): readonly Overlay[];
}

interface SliceView {
  readonly plane: Plane;
  readonly canvas: HTMLCanvasElement;
  readonly slider: HTMLInputElement;
  readonly label: HTMLElement;
  /** Slice index along the normal axis (null: follow the middle until the user moves it). */
  index: number | null;
  /** Where the image lands on the canvas, px. */
  rect: { x: number; y: number; w: number; h: number };
}

export class MprView {
  private readonly views: SliceView[] = [];
  private source: VolumeSource | null = null;
  private grid: GridMessage | null = null;
  private dirty = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastMs = 0;
  private scratch = document.createElement('canvas');

  constructor(
    container: HTMLElement,
    private readonly hooks: MprHooks,
  ) {
    for (const plane of ['axial', 'sagittal', 'coronal'] as const) {
      const canvas = el('canvas', { id: `mpr-${plane}`, 'data-plane': plane, width: '256', height: '256' });
      const slider = el('input', { id: `mpr-${plane}-slice`, type: 'range', min: '0', max: '0', value: '0' });
      const label = el('span', { class: 'mpr-pos' }, '—');
      const box = el('figure', { class: 'mpr', 'data-testid': `mpr-${plane}` }, el('figcaption', {}, PLANES[plane].title, ' ', label), canvas, slider);
      container.append(box);
      const v: SliceView = { plane, canvas, slider, label, index: null, rect: { x: 0, y: 0, w: 0, h: 0 } };
      this.views.push(v);
      slider.addEventListener('input', () => {
        v.index = Number(slider.value);
        this.draw(v);
      });
      canvas.addEventListener('click', (e) => {
        const w = this.toWorld(v, e);
        if (w !== null) this.hooks.onClick(plane, w, e);
      });
      canvas.addEventListener('dblclick', (e) => {
        e.preventDefault();
        this.hooks.onDoubleClick?.(plane);
      });
      canvas.addEventListener('wheel', (e) => {
        if (this.grid === null) return;
        e.preventDefault();
        v.index = this.sliceIndex(v) + (e.deltaY > 0 ? -1 : 1);
        this.draw(v);
      });
      new ResizeObserver(() => this.draw(v)).observe(canvas);
    }
  }

  follow(source: VolumeSource): void {
    this.source = source;
    this.changed();
  }

  changed(): void {
    this.dirty = true;
    if (this.timer !== null) return;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        if (!this.dirty) return;
        this.dirty = false;
        this.lastMs = performance.now();
        this.redraw();
      },
      Math.max(0, this.lastMs + 200 - performance.now()),
    );
  }

  /** Redraws every slice now (overlays changed, a new grid). */
  redraw(): void {
    const g = this.source?.grid ?? null;
    if (g !== this.grid) {
      this.grid = g;
      for (const v of this.views) v.index = null;
    }
    for (const v of this.views) this.draw(v);
  }

  get currentGrid(): GridMessage | null {
    return this.grid;
  }

  /** The world coordinate of a slice's plane (along its normal), mm. */
  slicePositionMm(plane: Plane): number | null {
    const v = this.views.find((x) => x.plane === plane)!;
    const g = this.grid;
    if (g === null) return null;
    const n = PLANES[plane].n;
    return g.originMm[n] + this.sliceIndex(v) * g.spacingMm[n];
  }

  private sliceIndex(v: SliceView): number {
    const g = this.grid;
    if (g === null) return 0;
    const max = g.dims[PLANES[v.plane].n] - 1;
    return Math.max(0, Math.min(max, v.index ?? Math.floor(max / 2)));
  }

  private draw(v: SliceView): void {
    const c = v.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(1, Math.round(c.clientWidth * dpr));
    const ch = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== cw || c.height !== ch) {
      c.width = cw;
      c.height = ch;
    }
    const ctx = c.getContext('2d')!;
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, cw, ch);
    const g = this.grid;
    const a = this.source;
    if (g === null || a === null || a.voxels.length !== g.dims[0] * g.dims[1] * g.dims[2]) {
      v.label.textContent = 'no volume yet';
      return;
    }
    const { h, v: va, n } = PLANES[v.plane];
    const nh = g.dims[h];
    const nv = g.dims[va];
    const k = this.sliceIndex(v);
    v.slider.max = String(g.dims[n] - 1);
    v.slider.value = String(k);
    v.label.textContent = `${AXIS_NAMES[n]} = ${(g.originMm[n] + k * g.spacingMm[n]).toFixed(1)} mm`;

    // The slice's pixels: voxel (ih, iv) at column ih, row nv-1-iv (up the screen is +v).
    const strides = [1, g.dims[0], g.dims[0] * g.dims[1]] as const;
    const img = new ImageData(nh, nv);
    const px = img.data;
    const vox = a.voxels;
    const base = k * strides[n];
    for (let iv = 0; iv < nv; iv++) {
      const row = nv - 1 - iv;
      const rowBase = base + iv * strides[va];
      for (let ih = 0; ih < nh; ih++) {
        const val = vox[rowBase + ih * strides[h]]!;
        const o = (row * nh + ih) * 4;
        px[o] = val;
        px[o + 1] = val;
        px[o + 2] = val;
        px[o + 3] = 255;
      }
    }
    if (this.scratch.width !== nh || this.scratch.height !== nv) {
      this.scratch.width = nh;
      this.scratch.height = nv;
    }
    this.scratch.getContext('2d')!.putImageData(img, 0, 0);
    // Fit the physical size (mm) into the canvas, aspect kept.
    const wMm = nh * g.spacingMm[h];
    const hMm = nv * g.spacingMm[va];
    const s = Math.min(cw / wMm, ch / hMm);
    v.rect = { x: (cw - wMm * s) / 2, y: (ch - hMm * s) / 2, w: wMm * s, h: hMm * s };
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.scratch, v.rect.x, v.rect.y, v.rect.w, v.rect.h);
    this.drawCrosshair(v, ctx, g);
    this.drawOverlays(v, ctx, g, dpr);
  }

  /** Where the two other slices cut this one. */
  private drawCrosshair(v: SliceView, ctx: CanvasRenderingContext2D, g: GridMessage): void {
    const { h, v: va } = PLANES[v.plane];
    ctx.save();
    ctx.strokeStyle = 'rgba(90, 170, 255, 0.45)';
    ctx.setLineDash([4, 4]);
    for (const other of this.views) {
      if (other === v) continue;
      const on = PLANES[other.plane].n;
      const mm = g.originMm[on] + this.sliceIndex(other) * g.spacingMm[on];
      const p = { x: 0, y: 0, z: 0 };
      p[AXIS_NAMES[on]] = mm;
      if (on === h) {
        const x = this.toCanvas(v, g, p).x;
        ctx.beginPath();
        ctx.moveTo(x, v.rect.y);
        ctx.lineTo(x, v.rect.y + v.rect.h);
        ctx.stroke();
      } else if (on === va) {
        const y = this.toCanvas(v, g, p).y;
        ctx.beginPath();
        ctx.moveTo(v.rect.x, y);
        ctx.lineTo(v.rect.x + v.rect.w, y);
        ctx.stroke();
      }
    }
    ctx.restore();
  }

  private drawOverlays(v: SliceView, ctx: CanvasRenderingContext2D, g: GridMessage, dpr: number): void {
    const n = PLANES[v.plane].n;
    const here = g.originMm[n] + this.sliceIndex(v) * g.spacingMm[n];
    for (const o of this.hooks.overlays(v.plane)) {
      // Only the measurements made on this slice (within half a voxel).
      if (o.points.length === 0 || Math.abs(get(o.points[0]!, n) - here) > g.spacingMm[n] / 2 + 1e-6) continue;
      const pts = o.points.map((p) => this.toCanvas(v, g, p));
      ctx.save();
      ctx.strokeStyle = o.color;
      ctx.fillStyle = o.color;
      ctx.lineWidth = 1.5 * dpr;
      ctx.beginPath();
      pts.forEach((p, i) => (i === 0 ? ctx.moveTo(p.x, p.y) : ctx.lineTo(p.x, p.y)));
      if (o.closed && pts.length > 2) ctx.closePath();
      ctx.stroke();
      for (const p of pts) {
        ctx.beginPath();
        ctx.arc(p.x, p.y, 3 * dpr, 0, 2 * Math.PI);
        ctx.fill();
      }
      if (o.label !== undefined) {
        const last = pts[pts.length - 1]!;
        ctx.font = `${12 * dpr}px system-ui, sans-serif`;
        ctx.fillText(o.label, last.x + 6 * dpr, last.y - 6 * dpr);
      }
      ctx.restore();
    }
  }

  /** World mm → canvas px on this slice. */
  private toCanvas(v: SliceView, g: GridMessage, p: Vec3): { x: number; y: number } {
    const { h, v: va } = PLANES[v.plane];
    const ih = (get(p, h) - g.originMm[h]) / g.spacingMm[h];
    const iv = (get(p, va) - g.originMm[va]) / g.spacingMm[va];
    // Voxel centres sit at the middle of their cells.
    return { x: v.rect.x + ((ih + 0.5) / g.dims[h]) * v.rect.w, y: v.rect.y + ((g.dims[va] - 0.5 - iv) / g.dims[va]) * v.rect.h };
  }

  /** Canvas click → world mm (origin + continuous index × spacing), or null outside the image. */
  private toWorld(v: SliceView, e: MouseEvent): Vec3 | null {
    const g = this.grid;
    if (g === null || v.rect.w === 0) return null;
    const b = v.canvas.getBoundingClientRect();
    const dpr = v.canvas.width / Math.max(1, b.width);
    const cx = (e.clientX - b.left) * dpr;
    const cy = (e.clientY - b.top) * dpr;
    const fx = (cx - v.rect.x) / v.rect.w;
    const fy = (cy - v.rect.y) / v.rect.h;
    if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return null;
    const { h, v: va, n } = PLANES[v.plane];
    const idx = [0, 0, 0];
    idx[h] = fx * g.dims[h] - 0.5;
    idx[va] = g.dims[va] - 0.5 - fy * g.dims[va];
    idx[n] = this.sliceIndex(v);
    return { x: g.originMm[0] + idx[0]! * g.spacingMm[0], y: g.originMm[1] + idx[1]! * g.spacingMm[1], z: g.originMm[2] + idx[2]! * g.spacingMm[2] };
  }
}

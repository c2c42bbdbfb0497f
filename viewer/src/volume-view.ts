// The live 3D volume: vtk.js GPU ray casting (vtkVolume + vtkVolumeMapper) of the assembled
// uint8 volume, in world millimetres (the grid's origin and spacing). Bricks land in the
// VolumeAssembler's buffer in place; this view re-uploads it at most every 200 ms (≤ 5 Hz),
// whatever the brick rate. Transfer-function presets: soft tissue, vessels, MIP.
import '@kitware/vtk.js/Rendering/Profiles/Volume';
import vtkDataArray from '@kitware/vtk.js/Common/Core/DataArray';
import vtkImageData from '@kitware/vtk.js/Common/DataModel/ImageData';
import vtkPiecewiseFunction from '@kitware/vtk.js/Common/DataModel/PiecewiseFunction';
import vtkColorTransferFunction from '@kitware/vtk.js/Rendering/Core/ColorTransferFunction';
import vtkVolume from '@kitware/vtk.js/Rendering/Core/Volume';
import vtkVolumeMapper from '@kitware/vtk.js/Rendering/Core/VolumeMapper';
import vtkGenericRenderWindow from '@kitware/vtk.js/Rendering/Misc/GenericRenderWindow';
import type { VolumeAssembler } from '../../protocols/volume-stream.ts';
import { softwareGl } from './gl.ts';

/** At most 5 uploads a second on a GPU; one every 2 s in software GL, where a ray-cast frame costs much more. */
export const MIN_UPDATE_INTERVAL_MS = softwareGl() ? 2000 : 200;

/** What the views read: the live stream's assembler, or a volume loaded from a study. */
export type VolumeSource = Pick<VolumeAssembler, 'grid' | 'voxels'>;

export interface Preset {
  readonly label: string;
  readonly blend: 'composite' | 'mip';
  /** [value, r, g, b] */
  readonly colors: readonly (readonly [number, number, number, number])[];
  /** [value, opacity] */
  readonly opacity: readonly (readonly [number, number])[];
}

// Values are 8-bit B-mode echo; 0 is also "no frame reached this voxel yet".
export const PRESETS = {
  'soft-tissue': {
    label: 'soft tissue',
    blend: 'composite',
    colors: [
      [0, 0, 0, 0],
      [60, 0.45, 0.3, 0.25],
      [140, 0.85, 0.7, 0.6],
      [255, 1, 1, 0.95],
    ],
    opacity: [
      [0, 0],
      [25, 0],
      [70, 0.03],
      [160, 0.15],
      [255, 0.45],
    ],
  },
  vessels: {
    label: 'vessels',
    // Anechoic lumen (dark but not empty) in red, bright vessel walls in white, tissue faint.
    blend: 'composite',
    colors: [
      [0, 0, 0, 0],
      [3, 0.8, 0.05, 0.05],
      [30, 0.9, 0.15, 0.1],
      [60, 0.3, 0.3, 0.3],
      [200, 0.9, 0.9, 0.9],
      [255, 1, 1, 1],
    ],
    opacity: [
      [0, 0],
      [2, 0],
      [6, 0.5],
      [28, 0.35],
      [45, 0],
      [190, 0],
      [255, 0.4],
    ],
  },
  mip: {
    label: 'MIP',
    blend: 'mip',
    colors: [
      [0, 0, 0, 0],
      [255, 1, 1, 1],
    ],
    opacity: [
      [0, 0],
      [255, 1],
    ],
  },
} as const satisfies Record<string, Preset>;

export type PresetName = keyof typeof PRESETS;

export class VolumeView {
  private readonly grw: ReturnType<typeof vtkGenericRenderWindow.newInstance>;
  private readonly mapper = vtkVolumeMapper.newInstance();
  private readonly actor = vtkVolume.newInstance();
  private image: ReturnType<typeof vtkImageData.newInstance> | null = null;
  private scalars: ReturnType<typeof vtkDataArray.newInstance> | null = null;
  private buffer: Uint8Array | null = null;
  private gridId: number | null = null;
  private dirty = false;
  private lastUpdateMs = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private source: VolumeSource | null = null;
  /** Uploads done (for the HUD and tests). */
  updates = 0;

  constructor(container: HTMLElement, preset: PresetName = 'soft-tissue') {
    this.grw = vtkGenericRenderWindow.newInstance({ background: [0.06, 0.08, 0.11], listenWindowResize: false });
    this.grw.setContainer(container);
    new ResizeObserver(() => this.grw.resize()).observe(container);
    this.mapper.setSampleDistance(softwareGl() ? 1.5 : 0.7);
    // In software GL, cast one ray per 3×3 pixels.
    if (softwareGl()) this.mapper.setImageSampleDistance(3);
    this.actor.setMapper(this.mapper);
    const prop = this.actor.getProperty();
    prop.setInterpolationTypeToLinear();
    prop.setShade(false);
    prop.setScalarOpacityUnitDistance(0, 2.5);
    this.setPreset(preset);
    this.grw.resize();
  }

  setPreset(name: PresetName): void {
    const p: Preset = PRESETS[name];
    const ctf = vtkColorTransferFunction.newInstance();
    for (const [v, r, g, b] of p.colors) ctf.addRGBPoint(v, r, g, b);
    const otf = vtkPiecewiseFunction.newInstance();
    for (const [v, o] of p.opacity) otf.addPoint(v, o);
    const prop = this.actor.getProperty();
    prop.setRGBTransferFunction(0, ctf);
    prop.setScalarOpacity(0, otf);
    if (p.blend === 'mip') this.mapper.setBlendModeToMaximumIntensity();
    else this.mapper.setBlendModeToComposite();
    this.render();
  }

  /** Follow this assembler: call `changed()` whenever bricks or a new grid arrived. */
  follow(source: VolumeSource): void {
    this.source = source;
    this.changed();
  }

  /** Marks the volume changed; the upload happens at most every MIN_UPDATE_INTERVAL_MS. */
  changed(): void {
    this.dirty = true;
    if (this.timer !== null) return;
    const wait = Math.max(0, this.lastUpdateMs + MIN_UPDATE_INTERVAL_MS - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
  }

  private flush(): void {
    if (!this.dirty) return;
    this.dirty = false;
    this.lastUpdateMs = performance.now();
    const a = this.source;
    const g = a?.grid ?? null;
    if (a === null || g === null || a.voxels.length !== g.dims[0] * g.dims[1] * g.dims[2]) return;
    if (this.gridId !== g.gridId || this.buffer !== a.voxels || this.image === null) {
      // A new grid (or a new buffer): new image data, camera framed on it.
      const image = vtkImageData.newInstance();
      image.setDimensions(g.dims[0], g.dims[1], g.dims[2]);
      image.setSpacing([g.spacingMm[0], g.spacingMm[1], g.spacingMm[2]]);
      image.setOrigin([g.originMm[0], g.originMm[1], g.originMm[2]]);
      const scalars = vtkDataArray.newInstance({ name: 'echo', numberOfComponents: 1, values: a.voxels });
      image.getPointData().setScalars(scalars);
      this.mapper.setInputData(image);
      const first = this.image === null;
      this.image = image;
      this.scalars = scalars;
      this.buffer = a.voxels;
      this.gridId = g.gridId;
      const ren = this.grw.getRenderer();
      if (first) ren.addVolume(this.actor);
      this.frame(g.originMm, g.dims, g.spacingMm);
    } else {
      // Same buffer, new bricks: a new scalars mtime makes the mapper re-upload the texture.
      this.scalars!.modified();
      this.image.modified();
    }
    this.updates++;
    this.render();
  }

  private frame(origin: readonly number[], dims: readonly number[], spacing: readonly number[]): void {
    const ren = this.grw.getRenderer();
    const cam = ren.getActiveCamera();
    const c = [0, 1, 2].map((i) => origin[i]! + ((dims[i]! - 1) * spacing[i]!) / 2);
    const size = Math.max(...[0, 1, 2].map((i) => dims[i]! * spacing[i]!));
    cam.setFocalPoint(c[0]!, c[1]!, c[2]!);
    // An oblique view from the patient's right and above, z up (the robot's base frame).
    cam.setPosition(c[0]! + size * 1.2, c[1]! - size * 1.6, c[2]! + size * 1.3);
    cam.setViewUp(0, 0, 1);
    ren.resetCamera();
  }

  render(): void {
    this.grw.getRenderWindow().render();
  }

  dispose(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.grw.delete();
  }
}

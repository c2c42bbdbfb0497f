// Example AR plugin: over the live B-mode video it draws the probe's image plane outline with a
// depth scale and a target marker (a world point: where it falls on the image, and how far it
// lies in front of or behind the plane); beside it, a small three.js view of the same geometry
// (image plane, probe, target, patient surface). Uses only the SDK (runArPlugin) and three.js.
//
//   const ar = await startImagePlaneAr({ token, video, overlay, view3d, onStatus });
//   ar.setTarget({ x: 455, y: 10, z: 90 });
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { PATIENT_TORSO, TABLE_TOP_Z_MM, torsoSkinHeightMm } from '../../../protocols/scene.ts';
import type { Mat4 } from '../../../protocols/imaging.ts';
import { imagePlaneCorners, runArPlugin, type ArFrameContext, type ArPluginHandle, type ArPluginStatus, type Vec3 } from '../plugin.ts';

/** 25 mm under the skin at the torso's middle: where the phantom's lesions are. */
export const DEFAULT_TARGET: Vec3 = { x: 450, y: 0, z: (torsoSkinHeightMm(450, 0) ?? 120) - 25 };
/** Closer than this to the image plane counts as "in plane". */
const IN_PLANE_MM = 2;

export interface ImagePlaneArOptions {
  readonly token?: string;
  readonly url?: string;
  readonly video: HTMLVideoElement;
  readonly overlay: HTMLCanvasElement;
  /** Where to put the 3D view (optional). */
  readonly view3d?: HTMLElement;
  readonly target?: Vec3;
  readonly onStatus?: (s: ArPluginStatus) => void;
}

export interface ImagePlaneAr extends ArPluginHandle {
  setTarget(t: Vec3): void;
}

export async function startImagePlaneAr(opts: ImagePlaneArOptions): Promise<ImagePlaneAr> {
  let target = opts.target ?? DEFAULT_TARGET;
  const view = opts.view3d === undefined ? null : new PlaneView3D(opts.view3d);
  const handle = await runArPlugin({
    ...(opts.token === undefined ? {} : { token: opts.token }),
    ...(opts.url === undefined ? {} : { url: opts.url }),
    video: opts.video,
    overlay: opts.overlay,
    want: { video: true, telemetry: true, volume: false, call: false },
    ...(opts.onStatus === undefined ? {} : { onStatus: opts.onStatus }),
    onFrame(ctx) {
      drawOverlay(ctx, target);
      view?.update(ctx, target);
    },
  });
  if (view !== null && handle.client.welcome.grants.video) view.setVideo(opts.video);
  return {
    client: handle.client,
    stop: () => {
      handle.stop();
      view?.dispose();
    },
    setTarget: (t) => {
      target = t;
    },
  };
}

// ---- 2D overlay -------------------------------------------------------------------------------

const columnLength = (m: Mat4, c: number): number => Math.hypot(m[c]!, m[4 + c]!, m[8 + c]!);

export function drawOverlay(ctx: ArFrameContext, target: Vec3): void {
  const g = ctx.draw;
  const m = ctx.imageToReference;
  g.font = '13px system-ui, sans-serif';
  // A dark halo keeps the marks readable on bright speckle.
  g.shadowColor = 'rgba(0, 0, 0, 0.85)';
  g.shadowBlur = 3;
  if (m === null) {
    g.fillStyle = '#ffd479';
    g.fillText('waiting for the probe pose…', 12, 22);
    return;
  }
  const { widthPx: w, heightPx: h } = ctx.imaging;
  // The image plane outline (the image's pixel edges, mapped through the same transform).
  const corners = [ctx.imageToOverlay(-0.5, -0.5), ctx.imageToOverlay(w - 0.5, -0.5), ctx.imageToOverlay(w - 0.5, h - 0.5), ctx.imageToOverlay(-0.5, h - 0.5)];
  g.strokeStyle = '#38c8ff';
  g.lineWidth = 2;
  g.beginPath();
  corners.forEach((p, i) => (i === 0 ? g.moveTo(p.x, p.y) : g.lineTo(p.x, p.y)));
  g.closePath();
  g.stroke();
  g.fillStyle = '#38c8ff';
  g.fillText('probe face', corners[0]!.x + 6, corners[0]!.y + 16);

  // Depth scale: a tick every 10 mm down the left edge.
  const mmPerPxV = columnLength(m, 1);
  if (mmPerPxV > 0) {
    for (let mm = 10, k = 1; mm / mmPerPxV < h; mm += 10, k++) {
      const p = ctx.imageToOverlay(-0.5, mm / mmPerPxV);
      g.beginPath();
      g.moveTo(p.x, p.y);
      g.lineTo(p.x + (k % 5 === 0 ? 14 : 8), p.y);
      g.stroke();
      if (k % 2 === 0) g.fillText(`${mm} mm`, p.x + 16, p.y + 4);
    }
  }

  // The target: its foot on the image plane, and how far off the plane it is.
  const t = ctx.project(target);
  if (t === null) return;
  const d = t.distanceMm;
  const inPlane = Math.abs(d) <= IN_PLANE_MM;
  const color = inPlane ? '#6dff8a' : '#ffa23a';
  const x = Math.min(Math.max(t.x, corners[0]!.x), corners[2]!.x);
  const y = Math.min(Math.max(t.y, corners[0]!.y), corners[2]!.y);
  g.strokeStyle = color;
  g.fillStyle = color;
  g.lineWidth = 2;
  if (t.inImage) {
    const r = inPlane ? 10 : Math.min(60, 10 + Math.abs(d) * 1.5);
    g.setLineDash(inPlane ? [] : [6, 5]);
    g.beginPath();
    g.arc(x, y, r, 0, 2 * Math.PI);
    g.stroke();
    g.setLineDash([]);
    g.beginPath();
    g.moveTo(x - 6, y);
    g.lineTo(x + 6, y);
    g.moveTo(x, y - 6);
    g.lineTo(x, y + 6);
    g.stroke();
    g.fillText(inPlane ? 'target in plane' : `target ${Math.abs(d).toFixed(1)} mm ${d > 0 ? 'in front of' : 'behind'} the plane`, x + r + 6, y + 4);
  } else {
    // Off the image: an arrow at the edge pointing towards it.
    const cx = (corners[0]!.x + corners[2]!.x) / 2;
    const cy = (corners[0]!.y + corners[2]!.y) / 2;
    const a = Math.atan2(t.y - cy, t.x - cx);
    g.save();
    g.translate(x, y);
    g.rotate(a);
    g.beginPath();
    g.moveTo(0, 0);
    g.lineTo(-16, -8);
    g.lineTo(-16, 8);
    g.closePath();
    g.fill();
    g.restore();
    g.fillText(`target off image (${Math.abs(d).toFixed(1)} mm off plane)`, Math.min(x, corners[2]!.x - 230), Math.max(y - 10, corners[0]!.y + 32));
  }
}

// ---- 3D view ----------------------------------------------------------------------------------

class PlaneView3D {
  private readonly renderer = new THREE.WebGLRenderer({ antialias: true });
  private readonly scene = new THREE.Scene();
  private readonly camera = new THREE.PerspectiveCamera(45, 1, 1, 10_000);
  private readonly controls: OrbitControls;
  private readonly plane: THREE.Mesh;
  private readonly planeMaterial = new THREE.MeshBasicMaterial({ color: 0x38c8ff, transparent: true, opacity: 0.35, side: THREE.DoubleSide, depthWrite: false });
  private readonly outline: THREE.LineLoop;
  private readonly probe: THREE.Mesh;
  private readonly targetMesh: THREE.Mesh;
  private readonly foot: THREE.Line;
  private framed = false;
  private dirty = true;
  private raf = 0;
  private lastRenderMs = 0;
  /** ≤ 30 Hz, and at most a quarter of the main thread (software GL renders are slow). */
  private minFrameMs = 33;
  private texture: THREE.VideoTexture | null = null;
  private readonly ro: ResizeObserver;

  constructor(private readonly container: HTMLElement) {
    container.append(this.renderer.domElement);
    this.scene.background = new THREE.Color(0x0d1218);
    this.camera.up.set(0, 0, 1);
    this.camera.position.set(750, -450, 420);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.target.set(DEFAULT_TARGET.x, DEFAULT_TARGET.y, DEFAULT_TARGET.z);
    this.controls.update();
    this.controls.addEventListener('change', () => (this.dirty = true));
    this.scene.add(new THREE.HemisphereLight(0xffffff, 0x222222, 2));

    const torsoGeo = new THREE.SphereGeometry(1, 40, 20, 0, 2 * Math.PI, 0, Math.PI / 2);
    torsoGeo.rotateX(Math.PI / 2);
    const torso = new THREE.Mesh(torsoGeo, new THREE.MeshBasicMaterial({ color: 0xd9a88a, wireframe: true, transparent: true, opacity: 0.25 }));
    torso.scale.set(PATIENT_TORSO.semiAxesMm.x, PATIENT_TORSO.semiAxesMm.y, PATIENT_TORSO.semiAxesMm.z);
    torso.position.set(PATIENT_TORSO.centerMm.x, PATIENT_TORSO.centerMm.y, PATIENT_TORSO.centerMm.z);
    const table = new THREE.Mesh(new THREE.PlaneGeometry(500, 900), new THREE.MeshBasicMaterial({ color: 0x39424c }));
    table.position.set(PATIENT_TORSO.centerMm.x, PATIENT_TORSO.centerMm.y, TABLE_TOP_Z_MM - 0.5);
    this.scene.add(torso, table);

    this.plane = new THREE.Mesh(new THREE.BufferGeometry(), this.planeMaterial);
    this.outline = new THREE.LineLoop(new THREE.BufferGeometry(), new THREE.LineBasicMaterial({ color: 0x38c8ff }));
    this.probe = new THREE.Mesh(new THREE.BoxGeometry(1, 1, 1), new THREE.MeshLambertMaterial({ color: 0xdddddd }));
    this.targetMesh = new THREE.Mesh(new THREE.SphereGeometry(4, 20, 14), new THREE.MeshBasicMaterial({ color: 0xff5a3a }));
    this.foot = new THREE.Line(new THREE.BufferGeometry().setFromPoints([new THREE.Vector3(), new THREE.Vector3()]), new THREE.LineDashedMaterial({ color: 0xffa23a, dashSize: 3, gapSize: 2 }));
    for (const o of [this.plane, this.outline, this.probe, this.foot]) o.visible = false;
    this.scene.add(this.plane, this.outline, this.probe, this.targetMesh, this.foot);

    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(container);
    this.resize();
    const loop = (): void => {
      this.raf = requestAnimationFrame(loop);
      const now = performance.now();
      if (!this.dirty || now - this.lastRenderMs < this.minFrameMs) return;
      this.dirty = false;
      this.lastRenderMs = now;
      this.renderer.render(this.scene, this.camera);
      this.minFrameMs = Math.max(33, 4 * (performance.now() - now));
    };
    this.raf = requestAnimationFrame(loop);
  }

  private resize(): void {
    const w = Math.max(1, this.container.clientWidth);
    const h = Math.max(1, this.container.clientHeight);
    this.renderer.setPixelRatio(window.devicePixelRatio || 1);
    this.renderer.setSize(w, h);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.dirty = true;
  }

  setVideo(video: HTMLVideoElement): void {
    this.texture = new THREE.VideoTexture(video);
    this.texture.colorSpace = THREE.SRGBColorSpace;
    this.planeMaterial.map = this.texture;
    this.planeMaterial.color.set(0xffffff);
    this.planeMaterial.opacity = 0.85;
    this.planeMaterial.needsUpdate = true;
  }

  update(ctx: ArFrameContext, target: Vec3): void {
    this.dirty = true;
    this.targetMesh.position.set(target.x, target.y, target.z);
    const m = ctx.imageToReference;
    if (m === null) return;
    const corners = imagePlaneCorners(m, ctx.imaging).map((c) => new THREE.Vector3(c.x, c.y, c.z));
    const [a, b, c, d] = corners as [THREE.Vector3, THREE.Vector3, THREE.Vector3, THREE.Vector3];
    // The plane as world-space geometry (its four corners), uv (0,1) at the image's top-left.
    const pos = new Float32Array([a, b, c, d].flatMap((p) => [p.x, p.y, p.z]));
    const geo = this.plane.geometry;
    if (geo.getAttribute('position') === undefined) {
      geo.setAttribute('position', new THREE.BufferAttribute(pos, 3));
      geo.setAttribute('uv', new THREE.BufferAttribute(new Float32Array([0, 1, 1, 1, 1, 0, 0, 0]), 2));
      geo.setIndex([0, 1, 2, 0, 2, 3]);
      this.outline.geometry.setAttribute('position', new THREE.BufferAttribute(pos.slice(), 3));
    } else {
      (geo.getAttribute('position') as THREE.BufferAttribute).copyArray(pos).needsUpdate = true;
      (this.outline.geometry.getAttribute('position') as THREE.BufferAttribute).copyArray(pos).needsUpdate = true;
    }
    geo.computeBoundingSphere();
    this.outline.geometry.computeBoundingSphere();
    // The probe: a box above the middle of the probe face, along the image's depth axis.
    const lateral = new THREE.Vector3().subVectors(b, a);
    const depth = new THREE.Vector3().subVectors(d, a).normalize();
    const face = new THREE.Vector3().addVectors(a, b).multiplyScalar(0.5);
    const width = lateral.length();
    const ex = lateral.clone().normalize();
    const ey = new THREE.Vector3().crossVectors(depth, ex).normalize();
    const basis = new THREE.Matrix4().makeBasis(ex, ey, depth);
    this.probe.quaternion.setFromRotationMatrix(basis);
    this.probe.scale.set(width + 8, 14, 90);
    this.probe.position.copy(face).addScaledVector(depth, -45);
    // The target's foot on the plane.
    const t = ctx.project(target);
    const footW = t === null ? null : ctx.imageToWorld(t.u, t.v);
    if (footW !== null) {
      this.foot.geometry.setFromPoints([new THREE.Vector3(target.x, target.y, target.z), new THREE.Vector3(footW.x, footW.y, footW.z)]);
      this.foot.computeLineDistances();
    }
    for (const o of [this.plane, this.outline, this.probe]) o.visible = true;
    this.foot.visible = footW !== null;
    if (!this.framed) {
      this.framed = true;
      const centre = new THREE.Vector3().addVectors(a, c).multiplyScalar(0.5);
      this.controls.target.copy(centre);
      this.camera.position.copy(centre).add(new THREE.Vector3(260, -200, 160));
      this.controls.update();
    }
  }

  dispose(): void {
    cancelAnimationFrame(this.raf);
    this.ro.disconnect();
    this.texture?.dispose();
    this.controls.dispose();
    this.renderer.dispose();
    this.renderer.domElement.remove();
  }
}

// The work cell in three.js, in the robot's base frame (mm, z up): table, patient torso (the
// half ellipsoid of protocols/scene.ts), the safety workspace box, a stylised arm reaching the
// probe (base → shoulder → elbow → wrist → flange, the elbow from a two-link fit), the probe at the
// TCP pose, the live image plane (image px → world mm through imageToReference, textured with the
// B-mode video when there is one) and the live volume's bounding box. Renders on demand.
import * as THREE from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';
import { toMat4 } from '../../marketplace/sdk/plugin.ts';
import { poseToMat4 } from '../../protocols/imaging-pose.ts';
import { mat4Mul, type Mat4 } from '../../protocols/imaging.ts';
import type { LiveImaging } from '../../protocols/live.ts';
import type { Pose, Vec3 } from '../../protocols/robot.ts';
import { DEFAULT_WORKSPACE, PATIENT_TORSO, PROBE_LENGTH_MM, TABLE_TOP_Z_MM } from '../../protocols/scene.ts';
import type { GridMessage } from '../../protocols/volume-stream.ts';
import { softwareGl } from './gl.ts';

const SHOULDER_Z_MM = 163;
const UPPER_ARM_MM = 425;
const FOREARM_MM = 392;
const WRIST_MM = 100;

const v3 = (p: Vec3): THREE.Vector3 => new THREE.Vector3(p.x, p.y, p.z);

/** Row-major Mat4 → three.js matrix (Matrix4.set takes row-major arguments). */
export function toThree(a: Mat4): THREE.Matrix4 {
  return new THREE.Matrix4().set(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, a[6]!, a[7]!, a[8]!, a[9]!, a[10]!, a[11]!, a[12]!, a[13]!, a[14]!, a[15]!);
}

/** A unit cylinder along +y, scaled and placed between two points. */
function placeLink(mesh: THREE.Mesh, a: THREE.Vector3, b: THREE.Vector3): void {
  const d = new THREE.Vector3().subVectors(b, a);
  const len = d.length();
  mesh.visible = len > 1e-3;
  if (!mesh.visible) return;
  mesh.position.copy(a).addScaledVector(d, 0.5);
  mesh.quaternion.setFromUnitVectors(new THREE.Vector3(0, 1, 0), d.divideScalar(len));
  mesh.scale.set(1, len, 1);
}

/** The elbow of a two-link arm from shoulder s to wrist w, bending upwards. */
export function elbowOf(s: THREE.Vector3, w: THREE.Vector3, l1 = UPPER_ARM_MM, l2 = FOREARM_MM): THREE.Vector3 {
  const sw = new THREE.Vector3().subVectors(w, s);
  const d = sw.length();
  if (d < 1e-6) return s.clone().add(new THREE.Vector3(0, 0, l1));
  const dir = sw.clone().divideScalar(d);
  if (d >= l1 + l2 || d <= Math.abs(l1 - l2)) return s.clone().addScaledVector(dir, (l1 / (l1 + l2)) * d);
  const a = (l1 * l1 - l2 * l2 + d * d) / (2 * d);
  const h = Math.sqrt(Math.max(0, l1 * l1 - a * a));
  const up = new THREE.Vector3(0, 0, 1).addScaledVector(dir, -dir.z);
  if (up.lengthSq() < 1e-9) up.set(1, 0, 0);
  up.normalize();
  return s.clone().addScaledVector(dir, a).addScaledVector(up, h);
}

export class Scene3D {
  readonly renderer: THREE.WebGLRenderer;
  private readonly scene = new THREE.Scene();
  private readonly camera = new THREE.PerspectiveCamera(40, 1, 10, 20_000);
  private readonly controls: OrbitControls;
  private readonly links: THREE.Mesh[] = [];
  private readonly joints: THREE.Mesh[] = [];
  private readonly probeBody: THREE.Mesh;
  private readonly probeHead: THREE.Mesh;
  private readonly plane: THREE.Mesh;
  private readonly planeOutline: THREE.LineLoop;
  private readonly planeMaterial: THREE.MeshBasicMaterial;
  private readonly gridBox: THREE.LineSegments;
  private imaging: LiveImaging | null = null;
  private needsRender = true;
  private videoTexture: THREE.VideoTexture | null = null;
  private planeFromFrame = false;
  private lastPoseKey = '';
  private lastRenderMs = 0;
  /**
   * Minimum time between renders: 30 Hz at most, and never more than a quarter of the main
   * thread (a frame that took 80 ms, as in software GL, waits 320 ms for the next).
   */
  private minFrameMs = 33;

  constructor(container: HTMLElement) {
    this.renderer = new THREE.WebGLRenderer({ antialias: !softwareGl() });
    this.renderer.setPixelRatio(softwareGl() ? 1 : window.devicePixelRatio || 1);
    container.append(this.renderer.domElement);
    this.scene.background = new THREE.Color(0x0d1218);
    this.camera.up.set(0, 0, 1);
    this.camera.position.set(1450, -1150, 900);
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.target.set(380, 0, 150);
    this.controls.update();
    this.controls.addEventListener('change', () => (this.needsRender = true));

    this.scene.add(new THREE.HemisphereLight(0xdde8ff, 0x202020, 1.6));
    const sun = new THREE.DirectionalLight(0xffffff, 1.8);
    sun.position.set(600, -800, 1500);
    this.scene.add(sun);

    // Table and patient.
    const table = new THREE.Mesh(new THREE.BoxGeometry(520, 1000, 20), new THREE.MeshStandardMaterial({ color: 0x5d6670, roughness: 0.9 }));
    table.position.set(PATIENT_TORSO.centerMm.x, PATIENT_TORSO.centerMm.y, TABLE_TOP_Z_MM - 10);
    this.scene.add(table);
    const torsoGeo = new THREE.SphereGeometry(1, 48, 24, 0, 2 * Math.PI, 0, Math.PI / 2);
    torsoGeo.rotateX(Math.PI / 2); // the dome (y ≥ 0) turns to z ≥ 0
    const torso = new THREE.Mesh(
      torsoGeo,
      new THREE.MeshStandardMaterial({ color: 0xd9a88a, roughness: 0.7, transparent: true, opacity: 0.55, depthWrite: false, side: THREE.DoubleSide }),
    );
    const a = PATIENT_TORSO.semiAxesMm;
    torso.scale.set(a.x, a.y, a.z);
    torso.position.copy(v3(PATIENT_TORSO.centerMm));
    torso.renderOrder = 2;
    this.scene.add(torso);

    // Safety workspace box.
    const ws = DEFAULT_WORKSPACE;
    const wsSize = new THREE.Vector3(ws.maxMm.x - ws.minMm.x, ws.maxMm.y - ws.minMm.y, ws.maxMm.z - ws.minMm.z);
    const wsBox = new THREE.LineSegments(new THREE.EdgesGeometry(new THREE.BoxGeometry(wsSize.x, wsSize.y, wsSize.z)), new THREE.LineBasicMaterial({ color: 0x35506b }));
    wsBox.position.set((ws.maxMm.x + ws.minMm.x) / 2, (ws.maxMm.y + ws.minMm.y) / 2, (ws.maxMm.z + ws.minMm.z) / 2);
    this.scene.add(wsBox);

    // Robot: base, column, links and joints (positions set from the TCP pose).
    const metal = new THREE.MeshStandardMaterial({ color: 0x9fb3c8, metalness: 0.3, roughness: 0.45 });
    const blue = new THREE.MeshStandardMaterial({ color: 0x2f6fb0, metalness: 0.2, roughness: 0.5 });
    const base = new THREE.Mesh(new THREE.CylinderGeometry(75, 85, 90, 32), metal);
    base.rotation.x = Math.PI / 2;
    base.position.set(0, 0, 45);
    this.scene.add(base);
    for (const r of [55, 45, 40, 35]) {
      const l = new THREE.Mesh(new THREE.CylinderGeometry(r, r, 1, 20), metal);
      this.links.push(l);
      this.scene.add(l);
    }
    for (let i = 0; i < 4; i++) {
      const j = new THREE.Mesh(new THREE.SphereGeometry(i === 0 ? 65 : 50 - i * 5, 20, 14), blue);
      this.joints.push(j);
      this.scene.add(j);
    }
    this.probeBody = new THREE.Mesh(new THREE.CylinderGeometry(16, 20, 1, 20), new THREE.MeshStandardMaterial({ color: 0xe8e8e8, roughness: 0.4 }));
    this.probeHead = new THREE.Mesh(new THREE.BoxGeometry(50, 14, 16), new THREE.MeshStandardMaterial({ color: 0x2a2a2a, roughness: 0.6 }));
    this.scene.add(this.probeBody, this.probeHead);

    // The image plane: a quad in image px, placed by imageToReference (set per frame).
    this.planeMaterial = new THREE.MeshBasicMaterial({ color: 0x3fa7ff, transparent: true, opacity: 0.35, side: THREE.DoubleSide, depthWrite: false });
    this.plane = new THREE.Mesh(new THREE.BufferGeometry(), this.planeMaterial);
    this.plane.matrixAutoUpdate = false;
    this.plane.visible = false;
    this.plane.renderOrder = 3;
    this.planeOutline = new THREE.LineLoop(new THREE.BufferGeometry(), new THREE.LineBasicMaterial({ color: 0x6fd0ff }));
    this.planeOutline.matrixAutoUpdate = false;
    this.planeOutline.visible = false;
    this.scene.add(this.plane, this.planeOutline);

    this.gridBox = new THREE.LineSegments(new THREE.EdgesGeometry(new THREE.BoxGeometry(1, 1, 1)), new THREE.LineBasicMaterial({ color: 0xffc94d }));
    this.gridBox.visible = false;
    this.scene.add(this.gridBox);

    new ResizeObserver(() => this.resize(container)).observe(container);
    this.resize(container);
    const loop = (): void => {
      requestAnimationFrame(loop);
      const now = performance.now();
      if (!this.needsRender || now - this.lastRenderMs < this.minFrameMs) return;
      this.lastRenderMs = now;
      this.needsRender = false;
      this.renderer.render(this.scene, this.camera);
      this.minFrameMs = Math.max(33, 4 * (performance.now() - now));
    };
    requestAnimationFrame(loop);
  }

  private resize(container: HTMLElement): void {
    const w = Math.max(1, container.clientWidth);
    const h = Math.max(1, container.clientHeight);
    this.renderer.setSize(w, h, false);
    this.renderer.domElement.style.width = '100%';
    this.renderer.domElement.style.height = '100%';
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
    this.needsRender = true;
  }

  setImaging(imaging: LiveImaging): void {
    this.imaging = imaging;
    const w = imaging.widthPx - 0.5;
    const h = imaging.heightPx - 0.5;
    // Corners in image px; uv (0,1) is the top-left of the video (row 0 = probe face).
    const pos = new Float32Array([-0.5, -0.5, 0, w, -0.5, 0, w, h, 0, -0.5, h, 0]);
    const geo = new THREE.BufferGeometry();
    geo.setAttribute('position', new THREE.BufferAttribute(pos, 3));
    geo.setAttribute('uv', new THREE.BufferAttribute(new Float32Array([0, 1, 1, 1, 1, 0, 0, 0]), 2));
    geo.setIndex([0, 1, 2, 0, 2, 3]);
    this.plane.geometry.dispose();
    this.plane.geometry = geo;
    const outline = new THREE.BufferGeometry();
    outline.setAttribute('position', new THREE.BufferAttribute(pos.slice(), 3));
    this.planeOutline.geometry.dispose();
    this.planeOutline.geometry = outline;
    this.needsRender = true;
  }

  /** Shows the live B-mode on the image plane. */
  setVideo(video: HTMLVideoElement | null): void {
    this.videoTexture?.dispose();
    this.videoTexture = null;
    if (video !== null) {
      this.videoTexture = new THREE.VideoTexture(video);
      this.videoTexture.colorSpace = THREE.SRGBColorSpace;
      this.planeMaterial.map = this.videoTexture;
      this.planeMaterial.color.set(0xffffff);
      this.planeMaterial.opacity = 0.9;
      const tick = (): void => {
        if (this.videoTexture === null) return;
        this.needsRender = true;
        if (typeof video.requestVideoFrameCallback === 'function') video.requestVideoFrameCallback(tick);
        else setTimeout(tick, 33);
      };
      tick();
    } else {
      this.planeMaterial.map = null;
      this.planeMaterial.color.set(0x3fa7ff);
      this.planeMaterial.opacity = 0.35;
    }
    this.planeMaterial.needsUpdate = true;
    this.needsRender = true;
  }

  /** The probe's TCP pose (the arm is fitted to it). */
  updatePose(tcp: Pose | null): void {
    const visible = tcp !== null;
    for (const o of [...this.links, ...this.joints, this.probeBody, this.probeHead]) o.visible = visible;
    if (tcp === null) return;
    // Status comes at 30 Hz; a robot at rest needs no new frame.
    const p = tcp.positionMm;
    const o = tcp.orientation;
    const key = [p.x, p.y, p.z, o.x, o.y, o.z, o.w].map((v) => v.toFixed(2)).join(',');
    if (key === this.lastPoseKey && (this.planeFromFrame || this.plane.visible)) return;
    this.lastPoseKey = key;
    const t = v3(tcp.positionMm);
    const q = new THREE.Quaternion(tcp.orientation.x, tcp.orientation.y, tcp.orientation.z, tcp.orientation.w);
    const toolZ = new THREE.Vector3(0, 0, 1).applyQuaternion(q);
    const flange = t.clone().addScaledVector(toolZ, -PROBE_LENGTH_MM);
    const wrist = flange.clone().addScaledVector(toolZ, -WRIST_MM);
    const base = new THREE.Vector3(0, 0, 90);
    const shoulder = new THREE.Vector3(0, 0, SHOULDER_Z_MM);
    const elbow = elbowOf(shoulder, wrist);
    const pts = [base, shoulder, elbow, wrist, flange];
    for (let i = 0; i < this.links.length; i++) placeLink(this.links[i]!, pts[i]!, pts[i + 1]!);
    [shoulder, elbow, wrist, flange].forEach((p, i) => this.joints[i]!.position.copy(p));
    placeLink(this.probeBody, flange, t.clone().addScaledVector(toolZ, -14));
    this.probeHead.position.copy(t).addScaledVector(toolZ, -8);
    this.probeHead.quaternion.copy(q);
    // Without a frame pose, place the image plane from the TCP and the calibration.
    const imageToProbe = this.imaging === null ? null : toMat4(this.imaging.imageToProbe);
    if (!this.planeFromFrame && imageToProbe !== null) this.placePlane(mat4Mul(poseToMat4(tcp), imageToProbe));
    this.needsRender = true;
  }

  /** The latest frame's image → world transform (null: follow the TCP instead). */
  updateImagePlane(imageToReference: Mat4 | null): void {
    this.planeFromFrame = imageToReference !== null;
    if (imageToReference === null) return;
    const key = Array.from(imageToReference, (v) => v.toFixed(3)).join(',');
    if (key === this.lastPlaneKey) return;
    this.lastPlaneKey = key;
    this.placePlane(imageToReference);
  }
  private lastPlaneKey = '';

  private placePlane(m: Mat4): void {
    if (this.imaging === null) return;
    const mm = toThree(m);
    this.plane.matrix.copy(mm);
    this.planeOutline.matrix.copy(mm);
    this.plane.matrixWorldNeedsUpdate = true;
    this.planeOutline.matrixWorldNeedsUpdate = true;
    this.plane.visible = true;
    this.planeOutline.visible = true;
    this.needsRender = true;
  }

  /** The live volume's extent (voxel centres ± half a voxel). */
  setGrid(g: GridMessage | null): void {
    this.gridBox.visible = g !== null;
    if (g !== null) {
      this.gridBox.scale.set(g.dims[0] * g.spacingMm[0], g.dims[1] * g.spacingMm[1], g.dims[2] * g.spacingMm[2]);
      const mid = (i: 0 | 1 | 2): number => g.originMm[i] + ((g.dims[i] - 1) * g.spacingMm[i]) / 2;
      this.gridBox.position.set(mid(0), mid(1), mid(2));
    }
    this.needsRender = true;
  }
}

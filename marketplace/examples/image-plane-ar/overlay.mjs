// Image plane AR (example live plugin): over the live B-mode video it draws the probe's image
// plane outline, a depth scale in millimetres and a target marker, from the probe pose that comes
// with each frame.
//
// A browser live plugin of the Eco3D marketplace is one ES module with no imports: the console
// runs it in a sandboxed frame (an opaque origin: no cookie, no API as the user) and hands it the
// SDK and a token scoped to what the hospital accepted (here live:video and live:pose).
//
//   export async function activate(ctx) → { stop() }
//   ctx = { sdk: { runArPlugin, imagePlaneCorners, projectToImage }, token, url, video, overlay, onStatus }

/** A point in the patient (world mm, robot base): 25 mm under the skin at the torso's middle. */
const TARGET_MM = Object.freeze({ x: 450, y: 0, z: 95 });
/** Within this distance of the image plane the target counts as in plane. */
const IN_PLANE_MM = 2;
const PLANE_COLOR = '#4cc3ff';
const IN_PLANE_COLOR = '#7dff9a';
const OFF_PLANE_COLOR = '#ffb347';

export async function activate(ctx) {
  const { runArPlugin, imagePlaneCorners } = ctx.sdk;
  const run = await runArPlugin({
    token: ctx.token,
    url: ctx.url,
    video: ctx.video,
    overlay: ctx.overlay,
    want: { video: true, telemetry: true, volume: false, call: false },
    onStatus: ctx.onStatus,
    onFrame: (frame) => drawFrame(frame, imagePlaneCorners),
  });
  return { stop: () => run.stop() };
}

const distance = (a, b) => Math.hypot(a.x - b.x, a.y - b.y, a.z - b.z);

function drawFrame(frame, imagePlaneCorners) {
  const g = frame.draw;
  g.font = '13px system-ui, sans-serif';
  g.lineJoin = 'round';
  // A dark halo keeps thin marks readable on bright speckle.
  g.shadowColor = 'rgba(0, 0, 0, 0.9)';
  g.shadowBlur = 3;
  const m = frame.imageToReference;
  if (m === null) {
    g.fillStyle = OFF_PLANE_COLOR;
    g.fillText('image plane AR: waiting for the probe pose…', 12, 22);
    return;
  }
  const { widthPx, heightPx } = frame.imaging;
  const right = widthPx - 0.5;
  const bottom = heightPx - 0.5;
  const box = [frame.imageToOverlay(-0.5, -0.5), frame.imageToOverlay(right, -0.5), frame.imageToOverlay(right, bottom), frame.imageToOverlay(-0.5, bottom)];
  const [topLeft, topRight, bottomRight] = box;

  // The image plane: its outline, and its size in the patient from the four world corners.
  g.strokeStyle = PLANE_COLOR;
  g.fillStyle = PLANE_COLOR;
  g.lineWidth = 2;
  g.beginPath();
  g.moveTo(box[3].x, box[3].y);
  for (const p of box) g.lineTo(p.x, p.y);
  g.stroke();
  const world = imagePlaneCorners(m, frame.imaging);
  const widthMm = distance(world[0], world[1]);
  const depthMm = distance(world[0], world[3]);
  g.fillText(`image plane ${widthMm.toFixed(0)} × ${depthMm.toFixed(0)} mm`, topLeft.x + 8, topLeft.y + 18);

  // Depth scale down the right edge: a tick every 5 mm, a longer one every 10, a label every 20.
  if (depthMm > 0) {
    const pxPerMm = heightPx / depthMm;
    g.textAlign = 'right';
    for (let mm = 5; mm < depthMm; mm += 5) {
      const p = frame.imageToOverlay(right, -0.5 + mm * pxPerMm);
      const len = mm % 10 === 0 ? 12 : 6;
      g.beginPath();
      g.moveTo(p.x, p.y);
      g.lineTo(p.x - len, p.y);
      g.stroke();
      if (mm % 20 === 0) g.fillText(`${mm}`, p.x - 16, p.y + 4);
    }
    g.fillText('depth mm', topRight.x - 8, topRight.y + 18);
    g.textAlign = 'left';
  }

  // The target: its foot on the image plane, and how far off the plane it is.
  const t = frame.project(TARGET_MM);
  if (t === null) return;
  const off = Math.abs(t.distanceMm);
  const inPlane = off <= IN_PLANE_MM;
  const side = t.distanceMm > 0 ? 'in front of' : 'behind';
  const color = inPlane ? IN_PLANE_COLOR : OFF_PLANE_COLOR;
  const x = Math.min(Math.max(t.x, topLeft.x), bottomRight.x);
  const y = Math.min(Math.max(t.y, topLeft.y), bottomRight.y);
  g.strokeStyle = color;
  g.fillStyle = color;
  g.lineWidth = 2;
  if (t.inImage) {
    // The ring shrinks onto the cross as the plane reaches the target.
    const r = 8 + Math.min(50, off * 2);
    g.setLineDash(inPlane ? [] : [5, 4]);
    g.beginPath();
    g.arc(x, y, r, 0, 2 * Math.PI);
    g.stroke();
    g.setLineDash([]);
    g.beginPath();
    g.moveTo(x - 7, y);
    g.lineTo(x + 7, y);
    g.moveTo(x, y - 7);
    g.lineTo(x, y + 7);
    g.stroke();
    g.fillText(inPlane ? 'target in plane' : `target ${off.toFixed(1)} mm ${side} the plane`, x + r + 6, y + 4);
    return;
  }
  // Outside the image: a chevron on the edge, pointing the way to the target.
  const cx = (topLeft.x + bottomRight.x) / 2;
  const cy = (topLeft.y + bottomRight.y) / 2;
  const a = Math.atan2(t.y - cy, t.x - cx);
  g.save();
  g.translate(x, y);
  g.rotate(a);
  g.beginPath();
  g.moveTo(0, 0);
  g.lineTo(-14, -9);
  g.lineTo(-9, 0);
  g.lineTo(-14, 9);
  g.closePath();
  g.fill();
  g.restore();
  // Its words inside the image, clear of the edges (the host labels the layer along the bottom).
  const label = inPlane ? 'target in plane, off the image' : `target off the image, ${off.toFixed(1)} mm ${side} the plane`;
  const lx = Math.max(topLeft.x + 8, Math.min(x - 120, bottomRight.x - g.measureText(label).width - 8));
  const ly = Math.max(topLeft.y + 38, Math.min(y + 24, bottomRight.y - 44));
  g.fillText(label, lx, ly);
}

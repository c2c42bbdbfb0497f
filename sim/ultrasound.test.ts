import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lastValueFrom, of, toArray } from 'rxjs';
import { quatFromAxisAngle, quatMul, rotate } from '../protocols/geometry.ts';
import { mat4Apply, mat4Invert, mat4Mul, type TrackedFrame } from '../protocols/imaging.ts';
import { poseToMat4 } from '../protocols/imaging-pose.ts';
import type { Pose, Quat, RobotState, Vec3 } from '../protocols/robot.ts';
import { HOME_POSE, PATIENT_TORSO } from '../protocols/scene.ts';
import { skinSurfaceAt } from './patient.ts';
import { createPhantom, PHANTOM_LABELS, type PhantomStructure, type VesselTube } from './phantom.ts';
import { curvilinearProbe, FrameClock, imageGeometry, imageToProbe, linearProbe, UltrasoundSimulator, type UltrasoundOptions } from './ultrasound.ts';
import { ultrasoundFrames$ } from './us-stream.ts';

const TOP_Z = PATIENT_TORSO.centerMm.z + PATIENT_TORSO.semiAxesMm.z;
const DOWN = HOME_POSE.orientation; // tool x = base x, tool y = −base y, tool z = −base z
const phantom = createPhantom(1);
const close = (a: number, b: number, tol: number, what: string): void => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);
const down = (x: number, y: number, z: number, q: Quat = DOWN): Pose => ({ positionMm: { x, y, z }, orientation: q });
/** The probe turned by angleRad about its own axis (tool z). */
const spun = (angleRad: number): Quat => quatMul(DOWN, quatFromAxisAngle({ x: 0, y: 0, z: 1 }, angleRad));
/** The probe tilted in its image plane (about tool y): the image stays in the same world plane. */
const tilted = (angleRad: number): Quat => quatMul(DOWN, quatFromAxisAngle({ x: 0, y: 1, z: 0 }, angleRad));
const px = (f: TrackedFrame, u: number, v: number): number => f.pixels[v * f.width + u]!;
const worldOf = (f: TrackedFrame, u: number, v: number): Vec3 => mat4Apply(f.imageToReference, { x: u, y: v, z: 0 });
const lesions = phantom.structures.filter((s): s is Exclude<PhantomStructure, VesselTube> => s.shape !== 'tube');

/** Mean over the pixels whose centre lies in [r0, r1) pixels of (cu, cv) and passes `keep`. */
function ringMean(f: TrackedFrame, cu: number, cv: number, r0: number, r1: number, keep: (u: number, v: number) => boolean = () => true): { mean: number; n: number } {
  let sum = 0, n = 0;
  for (let v = Math.max(0, Math.floor(cv - r1)); v <= Math.min(f.height - 1, Math.ceil(cv + r1)); v++) {
    for (let u = Math.max(0, Math.floor(cu - r1)); u <= Math.min(f.width - 1, Math.ceil(cu + r1)); u++) {
      const d = Math.hypot(u - cu, v - cv);
      if (d < r0 || d >= r1 || !keep(u, v)) continue;
      sum += px(f, u, v);
      n++;
    }
  }
  return { mean: sum / n, n };
}

void describe('imageToProbe (calibration)', () => {
  void it('puts a linear image under the face, centred on the probe axis, 0.1 mm pixels', () => {
    const m = imageToProbe(linearProbe());
    const top = mat4Apply(m, { x: 319.5, y: 0, z: 0 });
    close(top.x, 0, 1e-12, 'top centre x');
    close(top.y, 0, 1e-12, 'top centre y');
    close(top.z, 0.05, 1e-12, 'first row centre depth');
    const corner = mat4Apply(m, { x: 0, y: 479, z: 0 });
    close(corner.x, -31.95, 1e-9, 'left column');
    close(corner.z, 47.95, 1e-9, 'last row');
    const w = mat4Apply(m, { x: 319.5, y: 0, z: 1 });
    close(w.y, -0.1, 1e-12, 'w ↦ −tool y');
    const g = imageGeometry(linearProbe());
    assert.equal(g.maxDepthMm, 48);
    assert.equal(g.widthPx * g.spacingMm.u, 64);
  });

  void it('puts a fan apex radiusMm behind the face and its centre ray through the TCP', () => {
    const probe = curvilinearProbe();
    const g = imageGeometry(probe);
    const fan = g.fan!;
    const m = imageToProbe(probe);
    const apex = mat4Apply(m, { x: fan.originPx.u, y: fan.originPx.v, z: 0 });
    close(apex.x, 0, 1e-9, 'apex x');
    close(apex.z, -probe.radiusMm, 1e-9, 'apex z');
    const face = mat4Apply(m, { x: fan.originPx.u, y: fan.originPx.v + fan.radiusStartPx, z: 0 });
    close(face.z, 0, 1e-9, 'the centre ray leaves the array at the TCP');
    close(fan.radiusStopPx - fan.radiusStartPx, probe.depthMm / g.spacingMm.u, 1e-9, 'depth in pixels');
    assert.deepEqual(fan.anglesDeg, [-30, 30]);
    // The whole fan fits in the raster: its deepest corner rays end inside the image.
    for (const sign of [-1, 1]) {
      const a = (sign * probe.spanDeg * Math.PI) / 360;
      const u = fan.originPx.u + fan.radiusStopPx * Math.sin(a), v = fan.originPx.v + fan.radiusStopPx * Math.cos(a);
      assert.ok(u >= -0.5 - 1e-9 && u <= g.widthPx - 0.5 + 1e-9 && v <= g.heightPx - 0.5 + 1e-9, `fan corner (${u}, ${v}) inside the image`);
    }
  });

  void it('refuses bad probe parameters', () => {
    assert.throws(() => linearProbe({ widthPx: 0 }), { code: 'ECO3D_ERR_CONFIG' });
    assert.throws(() => linearProbe({ axialSpacingMm: Number.NaN }), { code: 'ECO3D_ERR_CONFIG' });
    assert.throws(() => curvilinearProbe({ spanDeg: 180 }), { code: 'ECO3D_ERR_CONFIG' });
    assert.throws(() => new UltrasoundSimulator(phantom, { tgc: [] }), { code: 'ECO3D_ERR_CONFIG' });
  });
});

void describe('UltrasoundSimulator.render', () => {
  const sim = new UltrasoundSimulator(phantom);

  void it('stamps frames and composes imageToReference = poseToMat4(pose) · imageToProbe', () => {
    const pose = down(450, 3, TOP_Z - 2);
    const f = sim.render(pose, 1234.5);
    const g = sim.render(pose, 1267.8);
    assert.equal(f.tMs, 1234.5);
    assert.equal(g.index, f.index + 1);
    assert.equal(f.width, 640);
    assert.equal(f.height, 480);
    assert.equal(f.pixels.length, 640 * 480);
    assert.deepEqual(f.imageToReference, mat4Mul(poseToMat4(pose), imageToProbe(linearProbe())));
    assert.notEqual(f.pixels, g.pixels, 'a new buffer per frame');
  });

  void it('is deterministic for a seed: same phantom seed, same pixels', () => {
    const pose = down(447, -12.3, TOP_Z - 3, tilted(0.2));
    const a = new UltrasoundSimulator(createPhantom(1)).render(pose, 0);
    const b = new UltrasoundSimulator(createPhantom(1)).render(pose, 0);
    const c = new UltrasoundSimulator(createPhantom(2)).render(pose, 0);
    assert.deepEqual(a.pixels, b.pixels);
    assert.notDeepEqual(a.pixels, c.pixels);
  });

  void it('shows each lesion where imageToReference⁻¹ projects its centre, darker or brighter than the tissue around', () => {
    for (const probe of [linearProbe(), curvilinearProbe()]) {
      const s = new UltrasoundSimulator(phantom, { probe });
      for (const l of lesions) {
        for (const [how, q] of [['down', DOWN], ['tilted', tilted(0.25)], ['turned', spun(Math.PI / 2)]] as const) {
          // The image plane through the lesion's centre (x = const once turned), pressed 2 mm in.
          const skin = skinSurfaceAt(l.centerMm.x, l.centerMm.y)!.zMm;
          const xMm = how === 'turned' ? l.centerMm.x : 450;
          const f = s.render(down(xMm, l.centerMm.y, skin - 2, q), 0);
          const inv = mat4Invert(f.imageToReference)!;
          const c = mat4Apply(inv, l.centerMm);
          close(c.z, 0, 1e-6, `lesion ${l.id} lies in the image plane`);
          assert.ok(c.x > 0 && c.x < f.width - 1 && c.y > 0 && c.y < f.height - 1, `lesion ${l.id} at (${c.x}, ${c.y}) is in the image`);
          const spacing = imageGeometry(probe).spacingMm.u;
          const minSemi = l.shape === 'sphere' ? l.radiusMm : Math.min(l.semiAxesMm.x, l.semiAxesMm.y, l.semiAxesMm.z);
          const inner = ringMean(f, c.x, c.y, 0, (0.6 * minSemi) / spacing);
          const around = ringMean(f, c.x, c.y, (l.boundingRadiusMm + 1.5) / spacing, (l.boundingRadiusMm + 5) / spacing, (u, v) => phantom.labelAt(worldOf(f, u, v)) === PHANTOM_LABELS.tissue);
          assert.ok(inner.n > 20 && around.n > 200, `lesion ${l.id}: enough pixels (${inner.n}, ${around.n})`);
          if (l.label === PHANTOM_LABELS.hypoLesion) assert.ok(inner.mean < around.mean - 60, `${probe.kind} ${how}, hypo lesion ${l.id}: ${inner.mean} vs ${around.mean}`);
          else assert.ok(inner.mean > around.mean + 40, `${probe.kind} ${how}, hyper lesion ${l.id}: ${inner.mean} vs ${around.mean}`);
        }
      }
    }
  });

  void it('agrees with labelAt pixel by pixel: black outside the body and in the lumen, dim in hypo lesions', () => {
    const lumen = (0 + 10.6 + 30 - 40) * (255 / 50); // brightest speckle in the lumen (−40 dB)
    const hypo = (0 + 10.6 + 30 - 20) * (255 / 50);
    const seen = new Set<number>();
    for (const probe of [linearProbe(), curvilinearProbe()]) {
      const s = new UltrasoundSimulator(phantom, { probe });
      for (const [i, q] of [DOWN, tilted(0.3), spun(0.4), spun(Math.PI / 2)].entries()) {
        const f = s.render(down(450 + i, -36 + 19 * i, TOP_Z - 1, q), 0);
        for (let v = 0; v < f.height; v += 2) {
          for (let u = 0; u < f.width; u += 2) {
            const label = phantom.labelAt(worldOf(f, u, v));
            seen.add(label);
            const p = px(f, u, v);
            if (label === PHANTOM_LABELS.outside) assert.equal(p, 0, `outside the body at (${u}, ${v})`);
            else if (label === PHANTOM_LABELS.vesselLumen) assert.ok(p <= lumen + 0.5, `lumen at (${u}, ${v}): ${p}`);
            else if (label === PHANTOM_LABELS.hypoLesion) assert.ok(p <= hypo + 0.5, `hypo lesion at (${u}, ${v}): ${p}`);
          }
        }
      }
    }
    for (const label of Object.values(PHANTOM_LABELS)) assert.ok(seen.has(label), `label ${label} was imaged`);
  });

  void it('keeps the speckle fixed to the tissue: the same world point looks the same from other poses', () => {
    const a = sim.render(down(450, 10, TOP_Z - 3), 0);
    // Turned 180° about its axis: the mirror image, pixel for pixel.
    const b = sim.render(down(450, 10, TOP_Z - 3, spun(Math.PI)), 0);
    // Moved 1 mm (10 columns) along the array.
    const c = sim.render(down(451, 10, TOP_Z - 3), 0);
    let same = 0, shifted = 0, textured = 0;
    for (let v = 0; v < a.height; v++) {
      for (let u = 0; u < a.width; u++) {
        if (px(a, u, v) === px(b, a.width - 1 - u, v)) same++;
        if (u + 10 < a.width && px(a, u + 10, v) === px(c, u, v)) shifted++;
        if (u > 0 && px(a, u, v) !== px(a, u - 1, v)) textured++;
      }
    }
    const n = a.width * a.height;
    assert.ok(same / n > 0.999, `mirrored: ${same} of ${n} equal`);
    assert.ok(shifted / (n - 10 * a.height) > 0.999, `shifted: ${shifted} equal`);
    assert.ok(textured / n > 0.3, 'there is speckle to compare');
    // Turned 25° in the image plane about the world point under pixel (u, v): that pixel is fixed.
    for (const [u, v] of [[100, 50], [320, 240], [500, 400], [33, 333]] as const) {
      const p = worldOf(a, u, v);
      const rot = quatFromAxisAngle({ x: 0, y: 1, z: 0 }, 0.43);
      const t = rotate(rot, { x: 450 - p.x, y: 10 - p.y, z: TOP_Z - 3 - p.z });
      const d = sim.render(down(p.x + t.x, p.y + t.y, p.z + t.z, quatMul(rot, DOWN)), 0);
      const q = worldOf(d, u, v);
      close(Math.hypot(q.x - p.x, q.y - p.y, q.z - p.z), 0, 1e-9, 'same world point');
      assert.equal(px(d, u, v), px(a, u, v), `pixel (${u}, ${v}) after turning about it`);
    }
  });

  void it('attenuates with depth, and the TGC compensates (auto), undercompensates (off) or overcompensates (steep)', () => {
    const plain = createPhantom(1, { lesionCount: 0, vessel: 'none' });
    const faceMeans: number[] = [];
    const bands = (opts: UltrasoundOptions): number[] => {
      const f = new UltrasoundSimulator(plain, opts).render(down(450, 0, TOP_Z - 3), 0);
      const out: number[] = [];
      let firstRows = 0;
      for (let i = 0; i < 4 * f.width; i++) firstRows += f.pixels[i]!;
      faceMeans.push(firstRows / (4 * f.width));
      for (let b = 0; b < 10; b++) {
        let s = 0;
        for (let v = b * 48; v < (b + 1) * 48; v++) for (let u = 0; u < f.width; u++) s += px(f, u, v);
        out.push(s / (48 * f.width));
      }
      return out;
    };
    const off = bands({ tgc: [0] });
    const auto = bands({});
    const steep = bands({ tgc: [0, 60] });
    const lossy = bands({ tgc: [0], attenuationDbPerCmMHz: 0.7 });
    for (let b = 1; b < 10; b++) {
      assert.ok(off[b]! < off[b - 1]! - 2, `TGC off: band ${b} darker (${off.map((x) => x.toFixed(1)).join(' ')})`);
      assert.ok(steep[b]! > steep[b - 1]!, `steep TGC: band ${b} brighter`);
      assert.ok(lossy[b]! < off[b]!, `more attenuation: band ${b} darker`);
    }
    assert.ok(Math.max(...auto) - Math.min(...auto) < 3, `auto TGC is flat: ${auto.map((x) => x.toFixed(1)).join(' ')}`);
    close(faceMeans[0]!, faceMeans[1]!, 1, 'TGC makes no difference at the face (first 0.4 mm)');
  });

  void it('blanks the fan outside its sector', () => {
    const probe = curvilinearProbe();
    const f = new UltrasoundSimulator(phantom, { probe }).render(down(450, 0, TOP_Z - 3), 0);
    const fan = imageGeometry(probe).fan!;
    let inside = 0, lit = 0;
    for (let v = 0; v < f.height; v++) {
      for (let u = 0; u < f.width; u++) {
        const du = u - fan.originPx.u, dv = v - fan.originPx.v;
        const r = Math.hypot(du, dv), angleDeg = (Math.atan2(du, dv) * 180) / Math.PI;
        const inFan = r >= fan.radiusStartPx && r <= fan.radiusStopPx && angleDeg >= fan.anglesDeg[0] && angleDeg <= fan.anglesDeg[1];
        if (!inFan) {
          if (px(f, u, v) !== 0) assert.fail(`pixel (${u}, ${v}) outside the fan is ${px(f, u, v)}`);
        } else if (r > fan.radiusStartPx + 2 && r < fan.radiusStopPx - 2 && Math.abs(angleDeg) < 29 && phantom.labelAt(worldOf(f, u, v)) !== 0) {
          inside++;
          if (px(f, u, v) !== 0) lit++;
        }
      }
    }
    assert.ok(inside > 100_000 && lit / inside > 0.97, `fan interior lit: ${lit} of ${inside}`);
    assert.equal(px(f, 0, 0), 0);
    assert.equal(px(f, f.width - 1, 0), 0);
  });

  void it('has no NaN and stays black away from the patient, and refuses a non-finite pose', () => {
    const fan = new UltrasoundSimulator(phantom, { probe: curvilinearProbe() });
    const poses = [
      down(450, 0, 500), // high above
      down(100, 900, 50), // beside the table
      down(450, 0, -50), // under the table
      down(450, 0, 60, quatFromAxisAngle({ x: 0, y: 1, z: 0 }, 1.2)), // sideways inside the body
      down(450, 0, TOP_Z - 2, { x: 2, y: 0, z: 0, w: 0 }), // an unnormalised quaternion
    ];
    for (const s of [sim, fan]) {
      for (const pose of poses) {
        const f = s.render(pose, 0);
        assert.ok(f.imageToReference.every(Number.isFinite), 'finite transform');
        if (pose.positionMm.z === 500 || pose.positionMm.y === 900 || pose.positionMm.z === -50) assert.ok(f.pixels.every((p) => p === 0), 'black away from the body');
      }
      assert.deepEqual(s.render(poses[4]!, 0).pixels, s.render(down(450, 0, TOP_Z - 2), 0).pixels, 'the quaternion is normalised');
      assert.throws(() => s.render(down(Number.NaN, 0, 0), 0), { code: 'ECO3D_ERR_NOT_FINITE' });
      assert.throws(() => s.render(down(450, 0, 100, { x: 0, y: 0, z: 0, w: 0 }), 0), { code: 'ECO3D_ERR_NOT_FINITE' });
      assert.throws(() => s.render(down(450, 0, 100), Number.POSITIVE_INFINITY), { code: 'ECO3D_ERR_NOT_FINITE' });
    }
  });
});

void describe('frame clock', () => {
  void it('gives 30 frames per second of 250 Hz robot states, on the 1/fps grid', () => {
    const clock = new FrameClock(30);
    const due: number[] = [];
    for (let t = 0; t < 1000; t += 4) if (clock.due(t)) due.push(t);
    assert.equal(due.length, 30);
    for (let i = 1; i < due.length; i++) {
      assert.ok(due[i]! >= (i * 1000) / 30 && due[i]! < (i * 1000) / 30 + 4, `frame ${i} at ${due[i]} ms`);
    }
  });

  void it('skips missed slots instead of catching up, and ignores time going backwards or NaN', () => {
    const clock = new FrameClock(10);
    assert.equal(clock.due(0), true);
    assert.equal(clock.due(50), false);
    assert.equal(clock.due(1000), true, 'after a gap');
    assert.equal(clock.due(1001), false, 'no burst of missed frames');
    assert.equal(clock.due(1099), false);
    assert.equal(clock.due(1100), true);
    assert.equal(clock.due(900), false);
    assert.equal(clock.due(Number.NaN), false);
    assert.throws(() => new FrameClock(0), { code: 'ECO3D_ERR_CONFIG' });
  });

  void it('ultrasoundFrames$ renders the states the clock picks, at their poses and times (cold)', async () => {
    const states: RobotState[] = [];
    for (let i = 0; i < 50; i++) {
      states.push({
        tMs: i * 4,
        seq: i,
        mode: 'moving',
        jointsRad: [0, 0, 0, 0, 0, 0],
        jointVelRadPerS: [0, 0, 0, 0, 0, 0],
        tcpPose: down(450, -20 + i * 0.2, TOP_Z - 2),
        wrench: null,
        faults: [],
      });
    }
    const sim = new UltrasoundSimulator(phantom, { probe: linearProbe({ widthPx: 64, heightPx: 48, lateralSpacingMm: 1, axialSpacingMm: 1 }) });
    const frames$ = ultrasoundFrames$(sim, of(...states), 30);
    const a = await lastValueFrom(frames$.pipe(toArray()));
    const b = await lastValueFrom(frames$.pipe(toArray()));
    assert.deepEqual(a.map((f) => f.tMs), [0, 36, 68, 100, 136, 168]);
    assert.deepEqual(b.map((f) => f.tMs), [0, 36, 68, 100, 136, 168], 'each subscription has its own clock');
    const s9 = states[9]!;
    assert.deepEqual(a[1]!.imageToReference, mat4Mul(poseToMat4(s9.tcpPose), sim.imageToProbe()));
    assert.throws(() => ultrasoundFrames$(sim, of(...states), -1), { code: 'ECO3D_ERR_CONFIG' });
  });
});

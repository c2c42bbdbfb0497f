import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mat4Invert, mat4Mul, type Mat4 } from './imaging.ts';
import { decodePlusSequence, encodePlusSequence } from './plus-sequence.ts';
import { parseTransformName, trackedFramesFromSequence, TransformRepository } from './plus-transforms.ts';
import { throwsWith } from './testing.ts';

const rigid = (angle: number, tx: number, ty: number, tz: number): Mat4 => {
  const c = Math.cos(angle), s = Math.sin(angle);
  return new Float64Array([c, -s, 0, tx, s, c, 0, ty, 0, 0, 1, tz, 0, 0, 0, 1]);
};
const close = (a: Mat4, b: Mat4): void => {
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-9, `entry ${i}: ${a[i]} vs ${b[i]}`);
};

const assertBadFile = (fn: () => unknown, ...fragments: string[]): void => {
  throwsWith(fn, 'ECO3D_ERR_BAD_FILE', ...fragments);
};

test('parseTransformName follows PLUS: exactly one "To" before an upper-case letter', () => {
  assert.deepEqual(parseTransformName('ProbeToTracker'), { from: 'Probe', to: 'Tracker' });
  assert.deepEqual(parseTransformName('ProbeToTrackerTransform'), { from: 'Probe', to: 'Tracker' });
  assert.deepEqual(parseTransformName('TestToolToTracker'), { from: 'TestTool', to: 'Tracker' });
  assert.deepEqual(parseTransformName('imageToReference'), { from: 'Image', to: 'Reference' });
  assert.equal(parseTransformName('ProbeToTrackerToReference'), undefined);
  assert.equal(parseTransformName('Probe'), undefined);
  assert.equal(parseTransformName('ToTracker'), undefined);
});

test('composes ImageToReference = TrackerToReference · ProbeToTracker · ImageToProbe, using inverses', () => {
  const imageToProbe = new Float64Array([0, 0.08, 0, 11, -0.08, 0, 0, 50, 0, 0, 0.08, 0, 0, 0, 0, 1]);
  const probeToTracker = rigid(0.3, 100, -20, 5);
  const referenceToTracker = rigid(-0.7, 40, 60, -10);
  const repo = new TransformRepository('C.xml');
  repo.set('Image', 'Probe', imageToProbe, { origin: 'config' });
  const frame = repo.forFrame({ index: 7, transforms: new Map([['ProbeToTracker', probeToTracker], ['ReferenceToTracker', referenceToTracker]]), invalidTransforms: new Map() }, 'S.igs.mha');
  const expected = mat4Mul(mat4Invert(referenceToTracker)!, mat4Mul(probeToTracker, imageToProbe));
  close(frame.get('Image', 'Reference'), expected);
  close(frame.get('Reference', 'Image'), mat4Invert(expected)!);
  close(frame.get('Probe', 'Probe'), new Float64Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]));
  const r = frame.tryGet('Image', 'Reference');
  assert.ok(r.ok);
  assert.deepEqual(r.path, ['Image', 'Probe', 'Tracker', 'Reference']);
  // the base repository is untouched by the frame view
  assert.equal(repo.tryGet('Image', 'Reference').ok, false);
});

test('a missing link names the transform, the frame and the file; an invalid one says so', () => {
  const repo = new TransformRepository('C.xml');
  repo.set('Image', 'Probe', rigid(0, 1, 2, 3));
  const f = repo.forFrame({ index: 12, transforms: new Map([['ReferenceToTracker', rigid(0.1, 0, 0, 0)]]), invalidTransforms: new Map() }, 'S.igs.mha');
  assertBadFile(() => f.get('Image', 'Reference'), 'S.igs.mha: frame 12: ImageToReference: no transform path from Image to Reference', 'Image reaches {Image, Probe}', 'Reference reaches {Reference, Tracker}', 'ImageToProbe (given, OK)', 'ReferenceToTracker (frame, OK)');
  const g = repo.forFrame({ index: 13, transforms: new Map([['ReferenceToTracker', rigid(0.1, 0, 0, 0)]]), invalidTransforms: new Map([['ProbeToTracker', 'INVALID']]) }, 'S.igs.mha');
  assertBadFile(() => g.get('Image', 'Reference'), 'S.igs.mha: frame 13: ImageToReference: the path Image → Probe → Tracker → Reference needs ProbeToTracker is INVALID in this frame');
  const r = g.tryGet('Image', 'Reference');
  assert.ok(!r.ok && r.kind === 'invalid');
  assert.deepEqual(!r.ok && r.invalid, ['ProbeToTracker']);
});

test('refuses what PLUS refuses: a transform with its inverse, a loop, a singular or NaN matrix', () => {
  const repo = new TransformRepository('C.xml');
  repo.set('Image', 'Probe', rigid(0, 1, 2, 3));
  assertBadFile(() => repo.set('Probe', 'Image', rigid(0, 0, 0, 0)), 'C.xml: ProbeToImage: cannot be set: its inverse ImageToProbe is already defined');
  repo.set('Probe', 'Tracker', rigid(0, 1, 2, 3));
  assertBadFile(() => repo.set('Image', 'Tracker', rigid(0, 0, 0, 0)), 'C.xml: ImageToTracker: would close a loop', 'Image → Probe → Tracker');
  assertBadFile(() => repo.set('A', 'B', new Float64Array(16)), 'AToB: the matrix is singular');
  assertBadFile(() => repo.set('A', 'B', new Float64Array([NaN, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1])), 'AToB: the matrix has non-finite entries');
  assertBadFile(() => repo.set('A', 'A', rigid(0, 0, 0, 0)), 'AToA: a transform from a frame to itself');
  // a frame's transform replaces a config transform of the same name, for that frame only
  const f = repo.forFrame({ index: 0, transforms: new Map([['ImageToProbe', rigid(0, 9, 9, 9)]]), invalidTransforms: new Map() });
  close(f.get('Image', 'Probe'), rigid(0, 9, 9, 9));
  close(repo.get('Image', 'Probe'), rigid(0, 1, 2, 3));
});

test('trackedFramesFromSequence: skips frames with an invalid link, fails on a structural gap', () => {
  const seq = decodePlusSequence(encodePlusSequence({
    width: 2,
    height: 2,
    frames: [0, 1, 2].map((i) => ({
      timestampS: 10 + i,
      pixels: new Uint8Array([i, i, i, i]),
      transforms: i === 1 ? new Map() : new Map([['ProbeToTracker', rigid(0, i, 0, 0)]]),
      invalidTransforms: i === 1 ? new Map([['ProbeToTracker', 'INVALID']]) : new Map(),
    })),
  }), { source: 'S.igs.mha' });
  const base = new TransformRepository('C.xml');
  base.set('Image', 'Probe', rigid(0, 0, 0, 0));
  const t = trackedFramesFromSequence(seq, base, 'Image', 'Tracker');
  assert.deepEqual(t.frames.map((f) => [f.index, f.tMs]), [[0, 10000], [2, 12000]]);
  assert.deepEqual(t.skipped.map((s) => s.index), [1]);
  close(t.frames[1]!.imageToReference, rigid(0, 2, 0, 0));
  assertBadFile(() => trackedFramesFromSequence(seq, base, 'Image', 'Reference'), 'S.igs.mha: frame 0: ImageToReference: no transform path from Image to Reference');
});

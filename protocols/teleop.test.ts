import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Eco3dError } from './errors.ts';
import { parseTeleopMessage } from './teleop.ts';

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof Eco3dError, `expected Eco3dError, got ${String(err)}`);
    return err.code;
  }
  assert.fail('expected a throw');
}

describe('parseTeleopMessage', () => {
  test('parses a jog and fills the default angular velocity', () => {
    const m = parseTeleopMessage('operator', '{"type":"jog","id":"7","linearMmPerS":{"x":1,"y":0,"z":-2}}');
    assert.deepEqual(m, { type: 'jog', id: '7', linearMmPerS: { x: 1, y: 0, z: -2 }, angularRadPerS: { x: 0, y: 0, z: 0 } });
  });

  test('bad JSON, non-objects and bad shapes are ECO3D_ERR_BAD_REQUEST', () => {
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{nope')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(codeOf(() => parseTeleopMessage('operator', '[1,2]')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(codeOf(() => parseTeleopMessage('operator', 'null')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"jog","linearMmPerS":{"x":"1","y":0,"z":0}}')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"stop","extra":1}')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(codeOf(() => parseTeleopMessage('operator', 'x'.repeat(20000))), 'ECO3D_ERR_BAD_REQUEST');
  });

  test('unknown types, and an e-stop on the operator channel, are ECO3D_ERR_UNKNOWN_MESSAGE', () => {
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"self-destruct"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"estop-reset"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
    assert.equal(codeOf(() => parseTeleopMessage('bedside', '{"type":"jog","linearMmPerS":{"x":0,"y":0,"z":0}}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
    assert.equal(codeOf(() => parseTeleopMessage('bedside', '{"kind":"estop"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
  });

  test('infinite and huge numbers are ECO3D_ERR_NOT_FINITE', () => {
    // JSON cannot spell NaN, but 1e400 parses to Infinity.
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"jog","linearMmPerS":{"x":1e400,"y":0,"z":0}}')), 'ECO3D_ERR_NOT_FINITE');
    assert.equal(codeOf(() => parseTeleopMessage('operator', '{"type":"jog","linearMmPerS":{"x":-1e9,"y":0,"z":0}}')), 'ECO3D_ERR_NOT_FINITE');
    assert.equal(
      codeOf(() => parseTeleopMessage('bedside', '{"type":"sweep-start","plan":{"kind":"linear","startMm":{"x":450,"y":-50},"headingDeg":0,"lengthMm":100,"speedMmPerS":500}}')),
      'ECO3D_ERR_NOT_FINITE',
    );
  });

  test('a sweep plan gets its defaults', () => {
    const m = parseTeleopMessage('bedside', '{"type":"sweep-start","plan":{"kind":"linear","startMm":{"x":450,"y":-50},"headingDeg":0,"lengthMm":100,"speedMmPerS":10}}');
    assert.equal(m.type, 'sweep-start');
    if (m.type === 'sweep-start') {
      assert.equal(m.plan.kind, 'linear');
      assert.equal(m.plan.targetForceN, 5);
    }
  });
});

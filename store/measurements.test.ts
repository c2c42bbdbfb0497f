// Caliper measurements: values computed here, points checked, scoped by tenant.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rejectsWith, throwsWith } from '../protocols/testing.ts';
import { addMeasurement, listMeasurements, measure } from './measurements.ts';
import { forEachDatabase, seedAcquisition } from './testing.ts';

const p = (x: number, y: number, z: number) => ({ x, y, z });

void test('distance: the Euclidean length between two points', () => {
  assert.equal(measure('distance', 'axial', [p(1, 2, 3), p(4, 6, 3)]).value, 5);
  assert.equal(measure('distance', 'sagittal', [p(0, 0, 0), p(0, 0, 0)]).value, 0);
  // A distance need not lie in its plane (the two points may be on different slices).
  assert.equal(measure('distance', 'coronal', [p(0, 0, 0), p(2, 3, 6)]).value, 7);
});

void test('area: half the norm of the summed cross products, for a polygon in its plane', () => {
  // A 10 × 20 mm rectangle in an axial plane (z constant), either winding.
  const rect = [p(0, 0, 5), p(10, 0, 5), p(10, 20, 5), p(0, 20, 5)];
  assert.equal(measure('area', 'axial', rect).value, 200);
  assert.equal(measure('area', 'axial', [...rect].reverse()).value, 200);
  // A right triangle in a sagittal plane (x constant): legs 3 and 4.
  assert.equal(measure('area', 'sagittal', [p(7, 0, 0), p(7, 3, 0), p(7, 0, 4)]).value, 6);
  // A coronal L-shape (concave): 3×3 minus 2×2 = 5.
  const l = [p(0, 1, 0), p(3, 1, 0), p(3, 1, 1), p(1, 1, 1), p(1, 1, 3), p(0, 1, 3)];
  assert.equal(measure('area', 'coronal', l).value, 5);
  // Far from the origin: exact still (computed relative to the first vertex).
  const far = rect.map((q) => p(q.x + 9989.5, q.y - 9979.25, q.z + 9000));
  assert.equal(measure('area', 'axial', far).value, 200);
  // A repeated closing vertex changes nothing.
  assert.equal(measure('area', 'axial', [...rect, rect[0]!]).value, 200);
});

void test('bad points: counts, plane, numbers, range', () => {
  throwsWith(() => measure('distance', 'axial', [p(0, 0, 0)]), 'ECO3D_ERR_BAD_REQUEST', 'exactly 2');
  throwsWith(() => measure('distance', 'axial', [p(0, 0, 0), p(1, 1, 1), p(2, 2, 2)]), 'ECO3D_ERR_BAD_REQUEST', 'exactly 2');
  throwsWith(() => measure('area', 'axial', [p(0, 0, 0), p(1, 0, 0)]), 'ECO3D_ERR_BAD_REQUEST', '3 to 64');
  throwsWith(() => measure('area', 'axial', Array.from({ length: 65 }, (_, i) => p(Math.cos(i), Math.sin(i), 0))), 'ECO3D_ERR_BAD_REQUEST', '3 to 64');
  throwsWith(() => measure('area', 'axial', [p(0, 0, 0), p(1, 0, 0), p(0, 1, 0.5)]), 'ECO3D_ERR_BAD_REQUEST', 'axial', 'z');
  throwsWith(() => measure('area', 'sagittal', [p(0, 0, 0), p(1, 0, 0), p(0, 1, 0)]), 'ECO3D_ERR_BAD_REQUEST', 'sagittal', 'x');
  throwsWith(() => measure('distance', 'axial', [p(0, 0, 0), p(NaN, 0, 0)]), 'ECO3D_ERR_NOT_FINITE', 'pointsMm.1.x');
  throwsWith(() => measure('distance', 'axial', [p(0, 0, Infinity), p(0, 0, 0)]), 'ECO3D_ERR_NOT_FINITE', 'pointsMm.0.z');
  throwsWith(() => measure('distance', 'axial', [p(0, -1e4, 0), p(0, 0, 0)]), 'ECO3D_ERR_NOT_FINITE', '10000');
  throwsWith(() => measure('distance', 'axial', [{ x: 0, y: '1', z: 0 }, p(0, 0, 0)]), 'ECO3D_ERR_BAD_REQUEST', 'pointsMm.0.y');
  throwsWith(() => measure('distance', 'axial', [null, p(0, 0, 0)]), 'ECO3D_ERR_BAD_REQUEST', 'pointsMm.0');
  throwsWith(() => measure('volume' as never, 'axial', []), 'ECO3D_ERR_BAD_REQUEST', 'kind');
  throwsWith(() => measure('distance', 'oblique' as never, []), 'ECO3D_ERR_BAD_REQUEST', 'plane');
});

forEachDatabase('measurements', (ctx) => {
  void test('stored with the computed value on an acquisition of the tenant, listed in order', async () => {
    const a = await seedAcquisition(ctx.db, { tenantId: 'meas-a', uid: '2.25.7001' });
    await seedAcquisition(ctx.db, { tenantId: 'meas-b', uid: '2.25.7002' });
    const by = { createdBy: 'demo-sonographer', createdByAccountId: 'acc-1' };
    const d = await addMeasurement(ctx.db, { tenantId: 'meas-a', acquisitionUid: a.uid, kind: 'distance', label: ' lesion ', plane: 'axial', pointsMm: [p(0, 0, 0), p(3, 4, 0)], ...by });
    const ar = await addMeasurement(ctx.db, {
      tenantId: 'meas-a',
      acquisitionUid: a.uid,
      kind: 'area',
      plane: 'coronal',
      pointsMm: [p(0, 2, 0), p(4, 2, 0), p(4, 2, 5)],
      ...by,
    });
    assert.equal(d.kind === 'distance' && d.valueMm, 5);
    assert.equal(d.label, 'lesion');
    assert.equal(ar.kind === 'area' && ar.valueMm2, 10);
    assert.equal(ar.label, undefined);
    assert.deepEqual(await listMeasurements(ctx.db, 'meas-a', a.uid), [d, ar]);
    assert.deepEqual(d.pointsMm, [p(0, 0, 0), p(3, 4, 0)]);

    await rejectsWith(
      addMeasurement(ctx.db, { tenantId: 'meas-b', acquisitionUid: a.uid, kind: 'distance', plane: 'axial', pointsMm: [p(0, 0, 0), p(1, 0, 0)], ...by }),
      'ECO3D_ERR_NOT_FOUND',
      /2\.25\.7001/,
    );
    await rejectsWith(listMeasurements(ctx.db, 'meas-b', a.uid), 'ECO3D_ERR_NOT_FOUND');
    await rejectsWith(
      addMeasurement(ctx.db, { tenantId: 'meas-a', acquisitionUid: a.uid, kind: 'distance', label: '\u0007', plane: 'axial', pointsMm: [p(0, 0, 0), p(1, 0, 0)], ...by }),
      'ECO3D_ERR_BAD_REQUEST',
      /label/,
    );
    assert.equal((await listMeasurements(ctx.db, 'meas-a', a.uid)).length, 2);
  });
});

// Caliper measurements on an acquisition's MPR slices (later stored as DICOM SR). The client sends
// the points; the value is always computed here, never taken from the client.
//
// Coordinates are millimetres in the acquisition volume's reference frame. The MPR planes are
// named as in DICOM's patient frame: an axial slice is perpendicular to z, a sagittal one to x, a
// coronal one to y; an area's polygon must lie in its plane (within PLANE_TOLERANCE_MM).
import { randomUUID } from 'node:crypto';
import { Eco3dError } from '../protocols/errors.ts';
import type { Queryable } from './database.ts';
import { badRequest } from './util.ts';

export type MeasurementKind = 'distance' | 'area';
export type MprPlane = 'axial' | 'sagittal' | 'coronal';
export const MEASUREMENT_KINDS: readonly MeasurementKind[] = ['distance', 'area'];
export const MPR_PLANES: readonly MprPlane[] = ['axial', 'sagittal', 'coronal'];

export interface PointMm {
  readonly x: number;
  readonly y: number;
  readonly z: number;
}

/** Coordinates must be finite with |v| below this (mm). */
export const MAX_COORDINATE_MM = 1e4;
/** How far (mm) an area's vertices may stray from their plane. */
export const PLANE_TOLERANCE_MM = 0.01;
export const MAX_POLYGON_POINTS = 64;

/** The axis each plane is perpendicular to. */
const PLANE_NORMAL_AXIS: Record<MprPlane, 'x' | 'y' | 'z'> = { axial: 'z', sagittal: 'x', coronal: 'y' };

interface MeasurementBase {
  readonly id: string;
  readonly tenantId: string;
  readonly acquisitionUid: string;
  readonly label?: string;
  readonly plane: MprPlane;
  readonly pointsMm: readonly PointMm[];
  /** Username of who measured. */
  readonly createdBy: string;
  readonly createdByAccountId: string;
  readonly createdAtMs: number;
}

export type Measurement =
  | (MeasurementBase & { readonly kind: 'distance'; readonly valueMm: number })
  | (MeasurementBase & { readonly kind: 'area'; readonly valueMm2: number });

/** Checks one point: numbers, finite, in range (ECO3D_ERR_NOT_FINITE otherwise). */
function checkPoint(p: unknown, i: number): PointMm {
  if (typeof p !== 'object' || p === null) throw badRequest(`pointsMm.${i} must be an object {x, y, z}`);
  const out: Record<'x' | 'y' | 'z', number> = { x: 0, y: 0, z: 0 };
  for (const axis of ['x', 'y', 'z'] as const) {
    const v = (p as Record<string, unknown>)[axis];
    if (typeof v !== 'number') throw badRequest(`pointsMm.${i}.${axis} must be a number`);
    if (!Number.isFinite(v) || Math.abs(v) >= MAX_COORDINATE_MM) {
      throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `pointsMm.${i}.${axis} must be finite with |v| < ${MAX_COORDINATE_MM} mm, got ${v}`);
    }
    out[axis] = v;
  }
  return out;
}

/**
 * Validates the points and computes the value: a distance between exactly 2 points (mm), or the
 * area of a closed polygon of 3..64 vertices lying in `plane` (mm²: half the norm of the sum of
 * the cross products of consecutive vertices, taken relative to the first for precision).
 */
export function measure(kind: MeasurementKind, plane: MprPlane, points: readonly unknown[]): { pointsMm: PointMm[]; value: number } {
  if (!MEASUREMENT_KINDS.includes(kind)) throw badRequest(`kind is one of ${MEASUREMENT_KINDS.join(', ')}`);
  if (!MPR_PLANES.includes(plane)) throw badRequest(`plane is one of ${MPR_PLANES.join(', ')}`);
  if (!Array.isArray(points)) throw badRequest('pointsMm must be an array');
  if (kind === 'distance' && points.length !== 2) throw badRequest(`a distance has exactly 2 points, got ${points.length}`);
  if (kind === 'area' && (points.length < 3 || points.length > MAX_POLYGON_POINTS)) {
    throw badRequest(`an area is a closed polygon of 3 to ${MAX_POLYGON_POINTS} points, got ${points.length}`);
  }
  const pts = points.map(checkPoint);
  const p0 = pts[0]!;
  if (kind === 'distance') {
    const p1 = pts[1]!;
    return { pointsMm: pts, value: Math.hypot(p1.x - p0.x, p1.y - p0.y, p1.z - p0.z) };
  }
  const axis = PLANE_NORMAL_AXIS[plane];
  const off = pts.find((p) => Math.abs(p[axis] - p0[axis]) > PLANE_TOLERANCE_MM);
  if (off !== undefined) {
    throw badRequest(`the points of an area on the ${plane} plane share one ${axis} (within ${PLANE_TOLERANCE_MM} mm): ${axis} = ${p0[axis]} and ${off[axis]}`);
  }
  let cx = 0;
  let cy = 0;
  let cz = 0;
  for (let i = 1; i < pts.length - 1; i++) {
    const a = pts[i]!;
    const b = pts[i + 1]!;
    const ax = a.x - p0.x;
    const ay = a.y - p0.y;
    const az = a.z - p0.z;
    const bx = b.x - p0.x;
    const by = b.y - p0.y;
    const bz = b.z - p0.z;
    cx += ay * bz - az * by;
    cy += az * bx - ax * bz;
    cz += ax * by - ay * bx;
  }
  return { pointsMm: pts, value: 0.5 * Math.hypot(cx, cy, cz) };
}

interface MeasurementRow {
  id: string;
  tenant_id: string;
  acquisition_uid: string;
  kind: MeasurementKind;
  label: string | null;
  plane: MprPlane;
  points_mm: PointMm[];
  value: number;
  created_by: string;
  created_by_account: string;
  created_at: Date;
}

function toMeasurement(r: MeasurementRow): Measurement {
  const base: MeasurementBase = {
    id: r.id,
    tenantId: r.tenant_id,
    acquisitionUid: r.acquisition_uid,
    ...(r.label === null ? {} : { label: r.label }),
    plane: r.plane,
    pointsMm: r.points_mm,
    createdBy: r.created_by,
    createdByAccountId: r.created_by_account,
    createdAtMs: r.created_at.getTime(),
  };
  // double precision comes back as a number from both engines; Number() guards a string driver.
  return r.kind === 'distance' ? { ...base, kind: 'distance', valueMm: Number(r.value) } : { ...base, kind: 'area', valueMm2: Number(r.value) };
}

async function requireAcquisition(q: Queryable, tenantId: string, uid: string): Promise<void> {
  const rows = await q.query('SELECT 1 FROM acquisitions WHERE tenant_id = $1 AND uid = $2', [tenantId, uid]);
  // Another tenant's acquisition reads as absent.
  if (rows.length === 0) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no acquisition ${uid}`);
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Stores a measurement on an acquisition of the tenant (ECO3D_ERR_NOT_FOUND otherwise), value computed by measure(). */
export async function addMeasurement(
  q: Queryable,
  m: {
    tenantId: string;
    acquisitionUid: string;
    kind: MeasurementKind;
    label?: string | undefined;
    plane: MprPlane;
    pointsMm: readonly unknown[];
    createdBy: string;
    createdByAccountId: string;
  },
): Promise<Measurement> {
  const { pointsMm, value } = measure(m.kind, m.plane, m.pointsMm);
  const label = m.label?.trim();
  if (label !== undefined && (label.length < 1 || label.length > 64 || CONTROL.test(label))) throw badRequest('a label has 1 to 64 printable characters');
  if (m.createdBy === '' || m.createdByAccountId === '') throw badRequest('a measurement needs who made it');
  await requireAcquisition(q, m.tenantId, m.acquisitionUid);
  const rows = await q.query<MeasurementRow>(
    `INSERT INTO measurements (id, tenant_id, acquisition_uid, kind, label, plane, points_mm, value, created_by, created_by_account)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) RETURNING *`,
    [randomUUID(), m.tenantId, m.acquisitionUid, m.kind, label ?? null, m.plane, JSON.stringify(pointsMm), value, m.createdBy, m.createdByAccountId],
  );
  return toMeasurement(rows[0]!);
}

/** An acquisition's measurements, oldest first (ECO3D_ERR_NOT_FOUND for an unknown or another tenant's acquisition). */
export async function listMeasurements(q: Queryable, tenantId: string, acquisitionUid: string): Promise<Measurement[]> {
  await requireAcquisition(q, tenantId, acquisitionUid);
  const rows = await q.query<MeasurementRow>('SELECT * FROM measurements WHERE tenant_id = $1 AND acquisition_uid = $2 ORDER BY seq', [
    tenantId,
    acquisitionUid,
  ]);
  return rows.map(toMeasurement);
}

// Robot availability: each up/down change of a device, the evidence behind uptime credits
// (billing reads it later). Append-only, like the audit log.
import type { Queryable } from './database.ts';
import { finiteMs, iso, rethrowConstraint } from './util.ts';

export interface AvailabilityChange {
  readonly tenantId: string;
  readonly deviceId: string;
  readonly up: boolean;
  /** Why, e.g. `link-lost`, `estop`, `fault`, `reconnected`. */
  readonly reason: string;
  readonly atMs: number;
}

export async function recordAvailability(q: Queryable, change: AvailabilityChange): Promise<void> {
  try {
    await q.query('INSERT INTO robot_availability (tenant_id, device_id, up, reason, at) VALUES ($1, $2, $3, $4, $5::timestamptz)', [
      change.tenantId,
      change.deviceId,
      change.up,
      change.reason,
      iso(finiteMs('atMs', change.atMs)),
    ]);
  } catch (err) {
    rethrowConstraint(err, { missingParent: `device ${change.deviceId} of tenant ${change.tenantId} is not registered` });
  }
}

/**
 * The changes in [fromMs, toMs), oldest first, preceded by the last change before fromMs when
 * there is one, so that the caller knows the state at the start of the window.
 */
export async function listAvailability(
  q: Queryable,
  w: { tenantId: string; deviceId: string; fromMs: number; toMs: number },
): Promise<AvailabilityChange[]> {
  const rows = await q.query<{ up: boolean; reason: string; at: Date }>(
    `SELECT up, reason, at FROM (
       (SELECT id, up, reason, at FROM robot_availability
        WHERE tenant_id = $1 AND device_id = $2 AND at < $3::timestamptz ORDER BY at DESC, id DESC LIMIT 1)
       UNION ALL
       (SELECT id, up, reason, at FROM robot_availability
        WHERE tenant_id = $1 AND device_id = $2 AND at >= $3::timestamptz AND at < $4::timestamptz)
     ) w ORDER BY at, id`,
    [w.tenantId, w.deviceId, iso(finiteMs('fromMs', w.fromMs)), iso(finiteMs('toMs', w.toMs))],
  );
  return rows.map((r) => ({ tenantId: w.tenantId, deviceId: w.deviceId, up: r.up, reason: r.reason, atMs: r.at.getTime() }));
}

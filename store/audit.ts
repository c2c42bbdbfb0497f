// The audit log: who did what to what, append-only (a trigger refuses UPDATE, DELETE and
// TRUNCATE). Write it in the same transaction as the change it records, so neither exists alone.
import type { Queryable } from './database.ts';
import { badRequest } from './util.ts';

export interface AuditEntry {
  /** Absent for platform-wide actions. */
  readonly tenantId?: string;
  /** Account id, or `system`. */
  readonly actor: string;
  /** Dotted verb, e.g. `auth.login`, `account.create`, `acquisition.export`. */
  readonly action: string;
  readonly target?: string;
  /** Never secrets or patient data beyond what the action needs. */
  readonly detail?: Readonly<Record<string, unknown>>;
}

export interface StoredAuditEntry extends AuditEntry {
  readonly id: number;
  /** The database clock at insert: not the caller's, which may be wrong or virtual. */
  readonly atMs: number;
}

interface AuditRow {
  id: number;
  at: Date;
  tenant_id: string | null;
  actor: string;
  action: string;
  target: string | null;
  detail: Record<string, unknown>;
}

const toEntry = (r: AuditRow): StoredAuditEntry => ({
  id: r.id,
  atMs: r.at.getTime(),
  ...(r.tenant_id === null ? {} : { tenantId: r.tenant_id }),
  actor: r.actor,
  action: r.action,
  ...(r.target === null ? {} : { target: r.target }),
  detail: r.detail,
});

export async function appendAudit(q: Queryable, entry: AuditEntry): Promise<StoredAuditEntry> {
  if (entry.actor === '' || entry.action === '') throw badRequest('an audit entry needs an actor and an action');
  const rows = await q.query<AuditRow>(
    'INSERT INTO audit_log (tenant_id, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING *',
    [entry.tenantId ?? null, entry.actor, entry.action, entry.target ?? null, JSON.stringify(entry.detail ?? {})],
  );
  return toEntry(rows[0]!);
}

/** Newest first. Without tenantId: every tenant's and the platform's entries (platform admins). */
export async function listAudit(q: Queryable, filter: { tenantId?: string; limit?: number } = {}): Promise<StoredAuditEntry[]> {
  const limit = Math.max(1, Math.min(1000, Math.trunc(filter.limit ?? 100)));
  const rows =
    filter.tenantId === undefined
      ? await q.query<AuditRow>('SELECT * FROM audit_log ORDER BY id DESC LIMIT $1', [limit])
      : await q.query<AuditRow>('SELECT * FROM audit_log WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2', [filter.tenantId, limit]);
  return rows.map(toEntry);
}

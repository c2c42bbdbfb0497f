// Per hospital: which published plugins its admin enabled, after seeing the scopes and the price
// (the request must repeat both: an admin never accepts what they were not shown), and the OAuth2
// client credentials of an enablement. Disabling takes effect at once, in one transaction: the
// enablement ends, its clients and tokens are revoked, its scheduled and running work items are
// canceled. The caller then cuts the live streams of those tokens and aborts the running plugins.
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from '../store/index.ts';
import type { PluginManifest } from './manifest.ts';
import { getVersion } from './registry.ts';

export interface Enablement {
  readonly id: string;
  readonly tenantId: string;
  readonly pluginId: string;
  readonly version: string;
  readonly name: string;
  readonly kind: PluginManifest['kind'];
  readonly scopes: readonly string[];
  readonly pricing: PluginManifest['pricing'];
  readonly enabledBy: string;
  readonly enabledAtMs: number;
  readonly disabledBy?: string;
  readonly disabledAtMs?: number;
}

interface EnablementRow {
  id: string;
  tenant_id: string;
  plugin_id: string;
  version: string;
  name: string;
  kind: PluginManifest['kind'];
  scopes: string[];
  pricing: PluginManifest['pricing'];
  enabled_by: string;
  enabled_ms: string | number;
  disabled_by: string | null;
  disabled_ms: string | number | null;
}
const SELECT = `SELECT e.id, e.tenant_id, e.plugin_id, e.version, v.manifest->>'name' AS name, v.manifest->>'kind' AS kind, e.scopes, e.pricing, e.enabled_by,
  (extract(epoch FROM e.enabled_at) * 1000)::int8 AS enabled_ms, e.disabled_by, (extract(epoch FROM e.disabled_at) * 1000)::int8 AS disabled_ms
  FROM marketplace_enablements e JOIN marketplace_versions v ON v.plugin_id = e.plugin_id AND v.version = e.version`;
const toEnablement = (r: EnablementRow): Enablement => ({
  id: r.id,
  tenantId: r.tenant_id,
  pluginId: r.plugin_id,
  version: r.version,
  name: r.name,
  kind: r.kind,
  scopes: r.scopes,
  pricing: r.pricing,
  enabledBy: r.enabled_by,
  enabledAtMs: Number(r.enabled_ms),
  ...(r.disabled_by === null ? {} : { disabledBy: r.disabled_by }),
  ...(r.disabled_ms === null ? {} : { disabledAtMs: Number(r.disabled_ms) }),
});

export async function activeEnablement(q: Queryable, tenantId: string, pluginId: string): Promise<Enablement | undefined> {
  const r = (await q.query<EnablementRow>(`${SELECT} WHERE e.tenant_id = $1 AND e.plugin_id = $2 AND e.disabled_at IS NULL`, [tenantId, pluginId]))[0];
  return r === undefined ? undefined : toEnablement(r);
}

export async function getEnablement(q: Queryable, id: string): Promise<Enablement | undefined> {
  const r = (await q.query<EnablementRow>(`${SELECT} WHERE e.id = $1`, [id]))[0];
  return r === undefined ? undefined : toEnablement(r);
}

/** The tenant's enablements, active first, newest first (history included). */
export async function listEnablements(q: Queryable, tenantId: string): Promise<Enablement[]> {
  return (await q.query<EnablementRow>(`${SELECT} WHERE e.tenant_id = $1 ORDER BY (e.disabled_at IS NULL) DESC, e.enabled_at DESC, e.id`, [tenantId])).map(toEnablement);
}

/** Active enablements of analysis plugins in a tenant (each completed scan gets a work item per one). */
export async function activeAnalysisEnablements(q: Queryable, tenantId: string): Promise<Enablement[]> {
  return (await q.query<EnablementRow>(`${SELECT} WHERE e.tenant_id = $1 AND e.disabled_at IS NULL AND v.manifest->>'kind' = 'analysis' ORDER BY e.plugin_id`, [tenantId])).map(
    toEnablement,
  );
}

/**
 * Enables a published version for a hospital tenant. `acceptScopes` and `acceptPricing` are what
 * the admin was shown: they must equal the version's (else CONFLICT, with the current ones in
 * the details). Enabling the version already enabled answers it (`created: false`); another
 * version replaces the active one (its tokens are revoked as on a disable).
 */
export async function enablePlugin(
  db: Database,
  e: { tenantId: string; pluginId: string; version: string; acceptScopes: readonly string[]; acceptPricing: unknown; by: string; nowMs: number },
): Promise<{ enablement: Enablement; created: boolean; replaced?: DisableResult }> {
  return db.transaction(async (tx) => {
    const reserved = await tx.query(
      "SELECT 1 WHERE $1 = 'eco3d-lake' OR EXISTS (SELECT 1 FROM marketplace_developers WHERE tenant_id = $1) OR EXISTS (SELECT 1 FROM lake_partners WHERE tenant_id = $1)",
      [e.tenantId],
    );
    if (reserved.length > 0) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'plugins are enabled by hospitals: this tenant is a developer, a data partner or reserved');
    const v = await getVersion(tx, e.pluginId, e.version);
    if (v === undefined || v.status !== 'published') throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no published version ${e.pluginId} ${e.version}`);
    const sameScopes = [...e.acceptScopes].sort().join(' ') === [...v.scopes].sort().join(' ') && new Set(e.acceptScopes).size === e.acceptScopes.length;
    if (!sameScopes || !isDeepStrictEqual(e.acceptPricing, v.pricing)) {
      throw new Eco3dError('ECO3D_ERR_CONFLICT', `the scopes or price accepted are not ${e.pluginId} ${e.version}'s: review them again`, {
        details: { scopes: v.scopes, pricing: v.pricing },
      });
    }
    const current = await activeEnablement(tx, e.tenantId, e.pluginId);
    if (current !== undefined && current.version === e.version) return { enablement: current, created: false };
    const replaced = current === undefined ? undefined : await disableInTx(tx, current, e.by, e.nowMs);
    const id = `E-${randomUUID()}`;
    await tx.query(
      `INSERT INTO marketplace_enablements (id, tenant_id, plugin_id, version, scopes, pricing, enabled_by, enabled_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::timestamptz)`,
      [id, e.tenantId, e.pluginId, e.version, JSON.stringify(v.scopes), JSON.stringify(v.pricing), e.by, new Date(e.nowMs).toISOString()],
    );
    return { enablement: (await getEnablement(tx, id))!, created: true, ...(replaced === undefined ? {} : { replaced }) };
  });
}

export interface DisableResult {
  readonly enablement: Enablement;
  /** Token ids revoked now (their live streams are to be cut). */
  readonly revokedTokenIds: readonly string[];
  readonly revokedClients: number;
  /** Work items canceled; those that were IN PROGRESS have a plugin process to kill. */
  readonly canceledWorkItemIds: readonly string[];
}

async function disableInTx(tx: Queryable, en: Enablement, by: string, nowMs: number): Promise<DisableResult> {
  const at = new Date(nowMs).toISOString();
  await tx.query('UPDATE marketplace_enablements SET disabled_at = $2::timestamptz, disabled_by = $3 WHERE id = $1 AND disabled_at IS NULL', [en.id, at, by]);
  const tokens = await tx.query<{ id: string }>('UPDATE api_tokens SET revoked_at = $2::timestamptz, revoked_by = $3 WHERE enablement_id = $1 AND revoked_at IS NULL RETURNING id', [en.id, at, by]);
  const clients = await tx.query('UPDATE marketplace_clients SET revoked_at = $2::timestamptz WHERE enablement_id = $1 AND revoked_at IS NULL RETURNING 1', [en.id, at]);
  const items = await tx.query<{ id: string }>(
    `UPDATE marketplace_work_items SET state = 'CANCELED', finished_at = $2::timestamptz, claimed_by = NULL, lease_until = NULL,
       outcome = jsonb_build_object('status', 'canceled', 'reason', 'plugin-disabled', 'detail', 'the plugin was disabled by ' || $3)
     WHERE enablement_id = $1 AND state IN ('SCHEDULED', 'IN PROGRESS') RETURNING id`,
    [en.id, at, by],
  );
  return {
    enablement: (await getEnablement(tx, en.id))!,
    revokedTokenIds: tokens.map((t) => t.id),
    revokedClients: clients.length,
    canceledWorkItemIds: items.map((i) => i.id),
  };
}

/** Disables the tenant's active enablement of a plugin (NOT_FOUND when none). */
export async function disablePlugin(db: Database, d: { tenantId: string; pluginId: string; by: string; nowMs: number }): Promise<DisableResult> {
  return db.transaction(async (tx) => {
    const en = await activeEnablement(tx, d.tenantId, d.pluginId);
    if (en === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `${d.pluginId} is not enabled`);
    return disableInTx(tx, en, d.by, d.nowMs);
  });
}

// --- OAuth2 client credentials ---------------------------------------------------------------

const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

/** New client credentials for the tenant's active enablement of a plugin; the secret is in the answer only. */
export async function createClient(db: Database, c: { tenantId: string; pluginId: string; by: string }): Promise<{ clientId: string; clientSecret: string; enablementId: string }> {
  const en = await activeEnablement(db, c.tenantId, c.pluginId);
  if (en === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `${c.pluginId} is not enabled`);
  const clientId = `plg_${randomBytes(12).toString('hex')}`;
  // 256 random bits: a fast hash is enough to store it (nothing to brute-force).
  const clientSecret = randomBytes(32).toString('base64url');
  await db.query('INSERT INTO marketplace_clients (client_id, enablement_id, secret_hash, created_by) VALUES ($1, $2, $3, $4)', [clientId, en.id, hashSecret(clientSecret), c.by]);
  return { clientId, clientSecret, enablementId: en.id };
}

/**
 * The enablement behind client credentials, when the client is unrevoked, the secret right and
 * the enablement active; else undefined (the caller answers `invalid_client` without saying which).
 */
export async function authenticateClient(q: Queryable, clientId: string, clientSecret: string): Promise<Enablement | undefined> {
  const row = (
    await q.query<{ secret_hash: string; enablement_id: string }>('SELECT secret_hash, enablement_id FROM marketplace_clients WHERE client_id = $1 AND revoked_at IS NULL', [clientId])
  )[0];
  const given = Buffer.from(hashSecret(clientSecret), 'hex');
  // Compare even for an unknown client, so the answer takes as long either way.
  const stored = Buffer.from(row?.secret_hash ?? hashSecret(randomBytes(16).toString('hex')), 'hex');
  if (!timingSafeEqual(given, stored) || row === undefined) return undefined;
  const en = await getEnablement(q, row.enablement_id);
  return en === undefined || en.disabledAtMs !== undefined ? undefined : en;
}

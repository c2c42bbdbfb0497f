// Scoped API tokens for plugins and devices (`POST /api/auth/tokens`). Only a hash of the token
// is stored: server/ generates the token, shows it once and hands this layer its hash. Which
// scopes exist is server/'s business; this layer checks their shape.
import { randomUUID } from 'node:crypto';
import type { Queryable } from './database.ts';
import { Eco3dError } from '../protocols/errors.ts';
import { badRequest, finiteMs, iso, pgErrorCode, rethrowConstraint } from './util.ts';

export interface ApiToken {
  readonly id: string;
  readonly tenantId: string;
  readonly name: string;
  readonly scopes: readonly string[];
  /** Who minted it (a username, for the record). */
  readonly createdBy: string;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly revokedAtMs?: number;
  readonly revokedBy?: string;
  /** A device token (usage ingestion): only this device's events are accepted with it. */
  readonly deviceId?: string;
  /** A lake token: bound to this data licence of its tenant (datalake/licences.ts). */
  readonly licenceId?: string;
  /** A plugin's token (OAuth2 client credentials): usable only while this enablement is active. */
  readonly enablementId?: string;
}

interface TokenRow {
  id: string;
  token_hash: string;
  tenant_id: string;
  name: string;
  scopes: string[];
  created_by: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_by: string | null;
  device_id: string | null;
  licence_id: string | null;
  enablement_id: string | null;
}

const toToken = (r: TokenRow): ApiToken => ({
  id: r.id,
  tenantId: r.tenant_id,
  name: r.name,
  scopes: r.scopes,
  createdBy: r.created_by,
  createdAtMs: r.created_at.getTime(),
  expiresAtMs: r.expires_at.getTime(),
  ...(r.revoked_at === null ? {} : { revokedAtMs: r.revoked_at.getTime() }),
  ...(r.revoked_by === null ? {} : { revokedBy: r.revoked_by }),
  ...(r.device_id === null ? {} : { deviceId: r.device_id }),
  ...(r.licence_id === null ? {} : { licenceId: r.licence_id }),
  ...(r.enablement_id === null ? {} : { enablementId: r.enablement_id }),
});

const SCOPE = /^[a-z][a-z0-9]*(:[a-z][a-z0-9-]*)+$/;
// Control characters, as in names shown in lists and audit entries.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Stores a new token. `tokenHash` is a hash of the token (at least 32 characters), never the token. */
export async function createApiToken(
  q: Queryable,
  t: { tokenHash: string; tenantId: string; name: string; scopes: readonly string[]; createdBy: string; createdAtMs: number; expiresAtMs: number; deviceId?: string | undefined; licenceId?: string | undefined; enablementId?: string | undefined },
): Promise<ApiToken> {
  if (t.tokenHash.length < 32) throw badRequest('a token is stored as its hash (at least 32 characters)');
  const name = t.name.trim();
  if (name.length < 1 || name.length > 100 || CONTROL.test(name)) throw badRequest('a token name has 1 to 100 printable characters');
  if (t.scopes.length === 0) throw badRequest('a token needs at least one scope');
  for (const s of t.scopes) if (!SCOPE.test(s)) throw badRequest(`bad scope ${JSON.stringify(s)}`);
  if (t.createdBy === '') throw badRequest('a token needs its creator');
  if (finiteMs('expiresAtMs', t.expiresAtMs) <= finiteMs('createdAtMs', t.createdAtMs)) throw badRequest('a token must expire after it is created');
  const scopes = [...new Set(t.scopes)];
  try {
    const rows = await q.query<TokenRow>(
      `INSERT INTO api_tokens (id, token_hash, tenant_id, name, scopes, created_by, created_at, expires_at, device_id, licence_id, enablement_id)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::timestamptz, $8::timestamptz, $9, $10, $11) RETURNING *`,
      [randomUUID(), t.tokenHash, t.tenantId, name, JSON.stringify(scopes), t.createdBy, iso(t.createdAtMs), iso(t.expiresAtMs), t.deviceId ?? null, t.licenceId ?? null, t.enablementId ?? null],
    );
    return toToken(rows[0]!);
  } catch (err) {
    if (t.licenceId !== undefined && pgErrorCode(err) === '23503' && /licence/.test(String((err as { constraint?: string }).constraint ?? (err as Error).message))) {
      throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `licence ${t.licenceId} is not one of tenant ${t.tenantId}'s`, { cause: err });
    }
    if (t.deviceId !== undefined && pgErrorCode(err) === '23503') {
      throw new Eco3dError('ECO3D_ERR_UNKNOWN_DEVICE', `device ${t.deviceId} is not registered in tenant ${t.tenantId}`, { cause: err });
    }
    return rethrowConstraint(err, { duplicate: 'token hash collision', missingParent: `tenant ${t.tenantId} does not exist` });
  }
}

/**
 * The token with this hash when usable at `nowMs` (not expired, not revoked, and for a plugin's
 * token its enablement still active: disabling revokes the tokens too, this is the second lock),
 * else undefined.
 */
export async function findActiveApiToken(q: Queryable, tokenHash: string, nowMs: number): Promise<ApiToken | undefined> {
  const row = (
    await q.query<TokenRow>(
      `SELECT t.* FROM api_tokens t WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2::timestamptz
         AND (t.enablement_id IS NULL OR EXISTS (SELECT 1 FROM marketplace_enablements e WHERE e.id = t.enablement_id AND e.disabled_at IS NULL))`,
      [tokenHash, iso(finiteMs('nowMs', nowMs))],
    )
  )[0];
  return row === undefined ? undefined : toToken(row);
}

/** The tenant's tokens, newest first, expired and revoked ones included (never a hash). */
export async function listApiTokens(q: Queryable, tenantId: string, limit = 200): Promise<ApiToken[]> {
  const rows = await q.query<TokenRow>('SELECT * FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at DESC, id LIMIT $2', [
    tenantId,
    Math.max(1, Math.min(1000, Math.trunc(limit))),
  ]);
  return rows.map(toToken);
}

/**
 * Revokes a token of the tenant. `revoked: false` when it was already revoked (the stored
 * revocation is kept); undefined when the tenant has no such token.
 */
export async function revokeApiToken(
  q: Queryable,
  r: { tenantId: string; id: string; revokedBy: string; atMs: number },
): Promise<{ token: ApiToken; revoked: boolean } | undefined> {
  if (r.revokedBy === '') throw badRequest('a revocation needs its author');
  const updated = (
    await q.query<TokenRow>(
      'UPDATE api_tokens SET revoked_at = $3::timestamptz, revoked_by = $4 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING *',
      [r.tenantId, r.id, iso(finiteMs('atMs', r.atMs)), r.revokedBy],
    )
  )[0];
  if (updated !== undefined) return { token: toToken(updated), revoked: true };
  const existing = (await q.query<TokenRow>('SELECT * FROM api_tokens WHERE tenant_id = $1 AND id = $2', [r.tenantId, r.id]))[0];
  return existing === undefined ? undefined : { token: toToken(existing), revoked: false };
}

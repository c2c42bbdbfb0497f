// Accounts, sessions, scoped tokens and request authentication.
//
// Every account belongs to a tenant (a hospital). A login creates a server-side session row and
// answers a signed token naming it; the same token rides in an HttpOnly cookie for browsers.
// A tenant admin mints scoped tokens for plugins and devices (POST /api/auth/tokens): their
// principal has the role `service`, which no route's role list admits, so a token reaches only
// what checks its scopes (requireScope, liveGrantsFor).
import { randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Eco3dError } from '../protocols/index.ts';
import { LIVE_SCOPES, type LiveGrants, type ViewerTier } from '../protocols/live.ts';
import { USAGE_WRITE_SCOPE } from '../billing/index.ts';
import { LAKE_READ_SCOPE } from '../datalake/index.ts';
import { PLUGIN_SCOPES } from '../marketplace/index.ts';
import { isScopedToken, newScopedToken, scopedTokenHash, signToken, verifyPassword, verifyToken } from './auth-crypto.ts';

import { ROLES, type ApiToken, type Role } from '../store/index.ts';

export { ROLES, type Role };

/**
 * Every scope a token can be granted: the one list `POST /api/auth/tokens` checks against.
 * Later issues add theirs here (`study:deidentified:read`, `results:write`).
 */
export const TOKEN_SCOPES: readonly string[] = [...LIVE_SCOPES, 'dicomweb:read', 'dicomweb:write', 'fhir:read', 'fhir:write', USAGE_WRITE_SCOPE, LAKE_READ_SCOPE];

/** A principal's role: an account's, or `service` for a scoped token (admitted by no role list). */
export type PrincipalRole = Role | 'service';

export interface Principal {
  /** The account; for a token `token:<id>`. */
  readonly accountId: string;
  /** The account's username; for a token `token:<id>` (the audit log's actor). */
  readonly username: string;
  /** The account's tenant; for a token the tenant it was minted in. */
  readonly tenantId: string;
  readonly role: PrincipalRole;
  /** The session id; for a token its id. */
  readonly sessionId: string;
  readonly kind: 'session' | 'token';
  /** A token's scopes; null for a user session (its role decides). */
  readonly scopes: readonly string[] | null;
  /** A device token's device (usage ingestion accepts only its events). */
  readonly deviceId?: string;
  /** A lake token's data licence (the lake serves only what it covers). */
  readonly licenceId?: string;
  /** A plugin's token: the enablement it works under (refused once that is disabled). */
  readonly enablementId?: string;
}

export interface AccountInfo {
  readonly id: string;
  readonly tenantId: string;
  readonly username: string;
  readonly role: Role;
  readonly disabled: boolean;
}

export interface AccountRecord extends AccountInfo {
  readonly passwordHash: string;
}

/** What auth needs from the store; server/runtime.ts adapts store/ to it. */
export interface AuthRepo {
  findAccountByUsername(username: string): Promise<AccountRecord | null>;
  createSession(s: { id: string; accountId: string; createdAtMs: number; expiresAtMs: number }): Promise<void>;
  /** The live (unexpired, unrevoked) session and its enabled account, or null. */
  findActiveSession(id: string, nowMs: number): Promise<AccountInfo | null>;
  revokeSession(id: string, atMs: number): Promise<void>;
  /** Stores a token (by hash) and its `token.mint` audit entry, in one transaction. */
  createScopedToken(t: {
    tokenHash: string;
    tenantId: string;
    name: string;
    scopes: readonly string[];
    createdBy: string;
    createdAtMs: number;
    expiresAtMs: number;
    deviceId?: string | undefined;
    licenceId?: string | undefined;
    enablementId?: string | undefined;
  }): Promise<ApiToken>;
  /** The unexpired, unrevoked token with this hash, or null. */
  findActiveScopedToken(tokenHash: string, nowMs: number): Promise<ApiToken | null>;
  listScopedTokens(tenantId: string): Promise<ApiToken[]>;
  /** Revokes (and audits `token.revoke`, in one transaction); null when the tenant has no such token. */
  revokeScopedToken(r: { tenantId: string; id: string; revokedBy: string; atMs: number }): Promise<{ token: ApiToken; revoked: boolean } | null>;
}

/** A token's lifetime: 1 hour unless asked, 60 s to 30 days. */
export const TOKEN_TTL_S = { default: 3600, min: 60, max: 30 * 24 * 3600 } as const;

export const SESSION_COOKIE = 'eco3d_session';
const SESSION_TTL_MS = 12 * 60 * 60 * 1000; // one clinical shift

// A dummy hash with the same cost, so an unknown username takes as long as a wrong password.
const TIMING_DUMMY_HASH =
  'scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

export class AuthService {
  constructor(
    private readonly repo: AuthRepo,
    private readonly secret: string,
    private readonly now: () => number = Date.now,
  ) {}

  async login(username: string, password: string): Promise<{ token: string; principal: Principal; expiresAtMs: number }> {
    const account = await this.repo.findAccountByUsername(username);
    const ok = await verifyPassword(password, account?.passwordHash ?? TIMING_DUMMY_HASH);
    if (account === null || !ok || account.disabled) {
      throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'wrong username or password');
    }
    const id = randomBytes(32).toString('base64url');
    const createdAtMs = this.now();
    const expiresAtMs = createdAtMs + SESSION_TTL_MS;
    await this.repo.createSession({ id, accountId: account.id, createdAtMs, expiresAtMs });
    return {
      token: signToken({ sid: id, exp: expiresAtMs }, this.secret),
      principal: sessionPrincipal(account, id),
      expiresAtMs,
    };
  }

  /**
   * The principal of a session token or a scoped token, or null when the token is bad, expired,
   * revoked or its account disabled. Checked against the database every time: a revocation
   * takes effect at once.
   */
  async authenticate(token: string): Promise<Principal | null> {
    if (isScopedToken(token)) {
      const t = await this.repo.findActiveScopedToken(scopedTokenHash(token), this.now());
      return t === null ? null : tokenPrincipal(t);
    }
    const claims = verifyToken(token, this.secret, this.now());
    if (claims === null) return null;
    const account = await this.repo.findActiveSession(claims.sid, this.now());
    if (account === null || account.disabled) return null;
    return sessionPrincipal(account, claims.sid);
  }

  /**
   * Mints a scoped token in the admin's tenant. The token is in the answer only: the database
   * keeps its hash. Unknown scopes and lifetimes out of TOKEN_TTL_S are ECO3D_ERR_BAD_REQUEST.
   */
  async mintToken(by: Principal, req: { name: string; scopes: readonly string[]; ttlSeconds?: number | undefined; deviceId?: string | undefined; licenceId?: string | undefined }): Promise<{ token: string; record: ApiToken }> {
    const unknown = req.scopes.filter((s) => !TOKEN_SCOPES.includes(s));
    if (unknown.length > 0) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `unknown scope ${unknown.map((s) => JSON.stringify(s)).join(', ')}: a token can have ${TOKEN_SCOPES.join(', ')}`);
    }
    if (req.scopes.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a token needs at least one scope of ${TOKEN_SCOPES.join(', ')}`);
    if (req.scopes.includes(USAGE_WRITE_SCOPE) && req.deviceId === undefined) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a ${USAGE_WRITE_SCOPE} token is a device's: give its deviceId`, { details: { field: 'deviceId' } });
    }
    if (req.scopes.includes(LAKE_READ_SCOPE) !== (req.licenceId !== undefined)) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a ${LAKE_READ_SCOPE} token is a data licence's: give its licenceId (and only for that scope)`, { details: { field: 'licenceId' } });
    }
    const ttlS = req.ttlSeconds ?? TOKEN_TTL_S.default;
    if (!Number.isInteger(ttlS) || ttlS < TOKEN_TTL_S.min || ttlS > TOKEN_TTL_S.max) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `ttlSeconds is a whole number from ${TOKEN_TTL_S.min} to ${TOKEN_TTL_S.max} (30 days), got ${ttlS}`);
    }
    const token = newScopedToken();
    const createdAtMs = this.now();
    const record = await this.repo.createScopedToken({
      tokenHash: scopedTokenHash(token),
      tenantId: by.tenantId,
      name: req.name,
      scopes: [...new Set(req.scopes)],
      createdBy: by.username,
      createdAtMs,
      expiresAtMs: createdAtMs + ttlS * 1000,
      ...(req.deviceId === undefined ? {} : { deviceId: req.deviceId }),
      ...(req.licenceId === undefined ? {} : { licenceId: req.licenceId }),
    });
    return { token, record };
  }

  /**
   * Mints a plugin's token (OAuth2 client credentials, marketplace/routes.ts): in the enabling
   * hospital's tenant, bound to the enablement (unusable once it is disabled), with a subset of
   * the scopes the hospital's admin accepted.
   */
  async mintPluginToken(t: { tenantId: string; enablementId: string; pluginId: string; clientId: string; scopes: readonly string[]; ttlSeconds: number }): Promise<{ token: string; record: ApiToken }> {
    const unknown = t.scopes.filter((s) => !(PLUGIN_SCOPES as readonly string[]).includes(s));
    if (unknown.length > 0 || t.scopes.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `a plugin token has scopes of ${PLUGIN_SCOPES.join(', ')}`);
    const token = newScopedToken();
    const createdAtMs = this.now();
    const record = await this.repo.createScopedToken({
      tokenHash: scopedTokenHash(token),
      tenantId: t.tenantId,
      name: `plugin ${t.pluginId} (${t.clientId})`.slice(0, 100),
      scopes: [...new Set(t.scopes)],
      createdBy: `client:${t.clientId}`,
      createdAtMs,
      expiresAtMs: createdAtMs + t.ttlSeconds * 1000,
      enablementId: t.enablementId,
    });
    return { token, record };
  }

  listTokens(by: Principal): Promise<ApiToken[]> {
    return this.repo.listScopedTokens(by.tenantId);
  }

  /** Revokes a token of the admin's tenant; another tenant's reads as absent (ECO3D_ERR_NOT_FOUND). */
  async revokeToken(by: Principal, id: string): Promise<{ token: ApiToken; revoked: boolean }> {
    const r = await this.repo.revokeScopedToken({ tenantId: by.tenantId, id, revokedBy: by.username, atMs: this.now() });
    if (r === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no token ${id}`);
    return r;
  }

  async logout(principal: Principal): Promise<void> {
    await this.repo.revokeSession(principal.sessionId, this.now());
  }

  /** Bearer header first (API and non-browser WebSocket clients), then the session cookie. */
  async fromRequest(req: FastifyRequest): Promise<Principal | null> {
    const header = req.headers.authorization;
    if (typeof header === 'string' && header.startsWith('Bearer ')) return this.authenticate(header.slice(7).trim());
    const cookie = req.cookies[SESSION_COOKIE];
    if (typeof cookie === 'string' && cookie !== '') return this.authenticate(cookie);
    return null;
  }
}

const sessionPrincipal = (account: AccountInfo, sessionId: string): Principal => ({
  accountId: account.id,
  username: account.username,
  tenantId: account.tenantId,
  role: account.role,
  sessionId,
  kind: 'session',
  scopes: null,
});

const tokenPrincipal = (t: ApiToken): Principal => ({
  accountId: `token:${t.id}`,
  username: `token:${t.id}`,
  tenantId: t.tenantId,
  role: 'service',
  sessionId: t.id,
  kind: 'token',
  scopes: t.scopes,
  ...(t.deviceId === undefined ? {} : { deviceId: t.deviceId }),
  ...(t.licenceId === undefined ? {} : { licenceId: t.licenceId }),
  ...(t.enablementId === undefined ? {} : { enablementId: t.enablementId }),
});

/** A signed-in account with one of `roles`. A scoped token never passes (its role is `service`). */
export function requireRole(p: Principal | null, roles: readonly Role[]): Principal {
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login)');
  if (p.kind !== 'session' || !(roles as readonly string[]).includes(p.role)) {
    throw new Eco3dError(
      'ECO3D_ERR_FORBIDDEN',
      p.kind === 'token' ? `a scoped token cannot use this; it needs an account with one of the roles: ${roles.join(', ')}` : `this needs one of the roles: ${roles.join(', ')}`,
    );
  }
  return p;
}

/** A scoped token holding `scope`. A user session does not pass: use requireRoleOrScope where accounts may too. */
export function requireScope(p: Principal | null, scope: string): Principal {
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first, or send a scoped token (Authorization: Bearer)');
  if (p.kind !== 'token') throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs a scoped token with the scope ${scope}`);
  if (!(p.scopes ?? []).includes(scope)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this token lacks the scope ${scope}`);
  return p;
}

/** An account with one of `roles`, or a scoped token holding `scope`. */
export function requireRoleOrScope(p: Principal | null, roles: readonly Role[], scope: string): Principal {
  if (p?.kind === 'token') return requireScope(p, scope);
  return requireRole(p, roles);
}

const NO_GRANTS: LiveGrants = { video: false, telemetry: false, volume: false, call: false, teleop: false };

/**
 * What a principal may receive from the live streams: the full set for the sonographer and the
 * admins, all but tele-operation for the bedside, and for a token exactly its scopes (video
 * ← live:video, telemetry ← live:pose, volume ← live:volume; never the call, never teleop).
 */
export function liveGrantsFor(p: Principal): LiveGrants {
  if (p.kind === 'token') {
    const s = p.scopes ?? [];
    return { video: s.includes('live:video'), telemetry: s.includes('live:pose'), volume: s.includes('live:volume'), call: false, teleop: false };
  }
  switch (p.role) {
    case 'sonographer':
    case 'tenant-admin':
    case 'platform-admin':
      return { video: true, telemetry: true, volume: true, call: true, teleop: true };
    case 'bedside':
      return { video: true, telemetry: true, volume: true, call: true, teleop: false };
    case 'physician':
      // A reading physician may watch and talk (a second opinion during the scan), never drive.
      return { video: true, telemetry: true, volume: true, call: true, teleop: false };
    case 'service':
      return NO_GRANTS;
  }
}

/** How the live streams serve a principal: tokens are plugins, who degrade first. */
export function viewerTierFor(p: Principal): ViewerTier {
  if (p.kind === 'token') return 'plugin';
  switch (p.role) {
    case 'sonographer':
    case 'tenant-admin':
    case 'platform-admin':
      return 'operator';
    case 'bedside':
      return 'bedside';
    case 'physician':
      return 'observer';
    case 'service':
      return 'plugin';
  }
}

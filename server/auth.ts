// Accounts, sessions and request authentication.
//
// Every account belongs to a tenant (a hospital). A login creates a server-side session row and
// answers a signed token naming it; the same token rides in an HttpOnly cookie for browsers.
import { randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { Eco3dError } from '../protocols/index.ts';
import { signToken, verifyPassword, verifyToken } from './auth-crypto.ts';

import { ROLES, type Role } from '../store/index.ts';

export { ROLES, type Role };

export interface Principal {
  readonly accountId: string;
  readonly username: string;
  readonly tenantId: string;
  readonly role: Role;
  readonly sessionId: string;
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
}

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
      principal: { accountId: account.id, username: account.username, tenantId: account.tenantId, role: account.role, sessionId: id },
      expiresAtMs,
    };
  }

  /** The principal of a token, or null when the token is bad, expired, revoked or its account disabled. */
  async authenticate(token: string): Promise<Principal | null> {
    const claims = verifyToken(token, this.secret, this.now());
    if (claims === null) return null;
    const account = await this.repo.findActiveSession(claims.sid, this.now());
    if (account === null || account.disabled) return null;
    return { accountId: account.id, username: account.username, tenantId: account.tenantId, role: account.role, sessionId: claims.sid };
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

export function requireRole(p: Principal | null, roles: readonly Role[]): Principal {
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login)');
  if (!roles.includes(p.role)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs one of the roles: ${roles.join(', ')}`);
  return p;
}

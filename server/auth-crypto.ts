// Password hashing (scrypt, node:crypto), signed session tokens (HMAC-SHA256) and scoped tokens.
//
// A token names a server-side session row, so logging out or disabling an account revokes it at
// once; the signature lets us refuse forged or tampered tokens before touching the database.
import { createHash, createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';

const scrypt = (password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    scryptCb(password, salt, keylen, opts, (err, key) => (err === null ? resolve(key) : reject(err)));
  });

// OWASP's scrypt floor (N=2^17, r=8, p=1) costs ~128 MiB and ~0.3 s here; N=2^15 keeps login
// at ~60 ms on the 2-core edge box while staying well above brute-force comfort. Stored in the
// hash string so it can be raised later without breaking old hashes.
const SCRYPT = { N: 1 << 15, r: 8, p: 1, keyLen: 32 } as const;

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.keyLen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 256 * 1024 * 1024 });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, keyB64] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(keyB64, 'base64url');
  const key = await scrypt(password, Buffer.from(saltB64, 'base64url'), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: 256 * 1024 * 1024,
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

export interface TokenClaims {
  /** Session id (a row in `sessions`). */
  readonly sid: string;
  /** Expiry, ms since the epoch. */
  readonly exp: number;
}

const PREFIX = 'e3';

export function signToken(claims: TokenClaims, secret: string): string {
  const body = Buffer.from(JSON.stringify({ sid: claims.sid, exp: claims.exp })).toString('base64url');
  const mac = createHmac('sha256', secret).update(`${PREFIX}.${body}`).digest('base64url');
  return `${PREFIX}.${body}.${mac}`;
}

/** Returns the claims of a well-signed, unexpired token, or null. Never throws on bad input. */
export function verifyToken(token: string, secret: string, nowMs: number): TokenClaims | null {
  if (token.length > 512) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== PREFIX) return null;
  const [, body, mac] = parts as [string, string, string];
  const expected = createHmac('sha256', secret).update(`${PREFIX}.${body}`).digest();
  const given = Buffer.from(mac, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (typeof claims !== 'object' || claims === null) return null;
  const { sid, exp } = claims as { sid?: unknown; exp?: unknown };
  if (typeof sid !== 'string' || typeof exp !== 'number' || exp <= nowMs) return null;
  return { sid, exp };
}

// --- scoped tokens -------------------------------------------------------------------------------
// A scoped token (plugins, devices) is 32 random bytes behind a recognisable prefix, so a leaked
// one is easy to spot and to tell from a session token. It names no row by itself: the database
// keeps only its SHA-256, and the token is shown once, at minting.

const SCOPED_PREFIX = 'e3t_';
const SCOPED_TOKEN = /^e3t_[A-Za-z0-9_-]{43}$/;

export const newScopedToken = (): string => `${SCOPED_PREFIX}${randomBytes(32).toString('base64url')}`;

/** True for a string shaped like a scoped token (checked before any database lookup). */
export const isScopedToken = (token: string): boolean => SCOPED_TOKEN.test(token);

/** What the database stores for a scoped token: hex SHA-256. */
export const scopedTokenHash = (token: string): string => createHash('sha256').update(token).digest('hex');

export const newSecret = (): string => randomBytes(32).toString('base64url');
export const generatePassword = (): string => randomBytes(12).toString('base64url');

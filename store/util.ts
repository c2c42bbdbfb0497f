// Small helpers shared by the repositories (not part of store's public surface).
import { Eco3dError } from '../protocols/errors.ts';

/** Times go to SQL as ISO strings cast with ::timestamptz: both engines parse them the same. */
export const iso = (ms: number): string => new Date(ms).toISOString();

export const msOrUndefined = (d: Date | null): number | undefined => (d === null ? undefined : d.getTime());

/** The SQLSTATE of a database error from either engine (both expose `code`). */
export function pgErrorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** A one-line description of anything thrown, including PGlite's emscripten ErrnoError objects. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message === '' ? err.name : err.message;
  if (typeof err === 'object' && err !== null) {
    const { name, errno, message } = err as { name?: unknown; errno?: unknown; message?: unknown };
    if (typeof message === 'string' && message !== '') return message;
    if (typeof name === 'string') return typeof errno === 'number' ? `${name} (errno ${errno})` : name;
  }
  return String(err);
}

export function badRequest(message: string): Eco3dError {
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', message);
}

/**
 * Turns the constraint violations a caller can cause into our codes; rethrows the rest as is.
 * `what` names the rows involved, for the message.
 */
export function rethrowConstraint(err: unknown, what: { duplicate?: string; missingParent?: string }): never {
  const code = pgErrorCode(err);
  if (code === '23505' && what.duplicate !== undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', what.duplicate, { cause: err });
  if (code === '23503' && what.missingParent !== undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', what.missingParent, { cause: err });
  throw err;
}

export function finiteMs(name: string, ms: number): number {
  if (!Number.isFinite(ms)) throw new Eco3dError('ECO3D_ERR_NOT_FINITE', `${name} must be a finite time in ms, got ${ms}`);
  return ms;
}

// Parsing JSON input with a zod schema into an Eco3dError that names the first bad field: the
// one way every layer turns a schema failure into a stable error code.
import type { z } from 'zod';
import { Eco3dError } from './errors.ts';

export function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/**
 * Parses `raw` with `schema`, or throws an Eco3dError naming the first bad field:
 * NOT_FINITE for a NaN or infinite number, BAD_REQUEST otherwise.
 */
export function parseWith<S extends z.ZodType>(schema: S, raw: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = [what, ...issue.path.map(String)].join('.');
  const value = valueAt(raw, issue.path);
  const code = typeof value === 'number' && !Number.isFinite(value) ? 'ECO3D_ERR_NOT_FINITE' : 'ECO3D_ERR_BAD_REQUEST';
  throw new Eco3dError(code, `${field}: ${issue.message}`, { details: { field, issues: r.error.issues.length } });
}

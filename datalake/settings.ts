// A hospital's lake settings (lake_settings): where the site is (a quasi-identifier, kept coarse),
// whether device identity is retained, the burned-in annotation masks per device model, the
// private tags known safe, and the quality gate's thresholds.
import { z } from 'zod';
import { parseWith, type BurnedInMask, type SafePrivateTag } from '../protocols/index.ts';
import type { Queryable } from '../store/index.ts';

export interface LakeSettings {
  /** ISO 3166-2 subdivision ('IT-25') or country ('IT'); null when unknown. */
  readonly siteRegion: string | null;
  /** Retain Device Identity Option (off by default: a serial number can single out a site). */
  readonly retainDeviceIdentity: boolean;
  readonly burnedInMasks: readonly BurnedInMask[];
  readonly safePrivateTags: readonly SafePrivateTag[];
  /** Quality gate: below these a scan is not diagnostic and stays out of the lake. */
  readonly minCoverage: number;
  readonly minForceInBandShare: number;
}

export const DEFAULT_LAKE_SETTINGS: LakeSettings = {
  siteRegion: null,
  retainDeviceIdentity: false,
  burnedInMasks: [],
  safePrivateTags: [],
  minCoverage: 0.8,
  minForceInBandShare: 0.7,
};

const region = z.strictObject({ x: z.number().int().min(0), y: z.number().int().min(0), width: z.number().int().min(1), height: z.number().int().min(1) });
const schema = z.strictObject({
  siteRegion: z
    .string()
    .regex(/^[A-Z]{2}(-[A-Z0-9]{1,3})?$/, 'an ISO 3166-2 code such as IT-25, or a country such as IT')
    .nullable()
    .optional(),
  retainDeviceIdentity: z.boolean().optional(),
  burnedInMasks: z
    .array(z.strictObject({ manufacturer: z.string().trim().min(1).max(64).optional(), modelName: z.string().trim().min(1).max(64), regions: z.array(region).min(1).max(64) }))
    .max(200)
    .optional(),
  safePrivateTags: z
    .array(z.strictObject({ group: z.number().int().min(9).max(0xffff), creator: z.string().trim().min(1).max(64), element: z.number().int().min(0).max(0xffff) }))
    .max(500)
    .optional(),
  minCoverage: z.number().min(0).max(1).optional(),
  minForceInBandShare: z.number().min(0).max(1).optional(),
});

export function parseLakeSettings(raw: unknown): LakeSettings {
  const s = parseWith(schema, raw, 'settings');
  for (const t of s.safePrivateTags ?? []) parseWith(z.literal(1), t.group % 2, 'settings.safePrivateTags.group (odd)');
  return { ...DEFAULT_LAKE_SETTINGS, ...Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)) };
}

export async function getLakeSettings(q: Queryable, tenantId: string): Promise<LakeSettings> {
  const r = (await q.query<{ settings: unknown }>('SELECT settings FROM lake_settings WHERE tenant_id = $1', [tenantId]))[0];
  return r === undefined ? DEFAULT_LAKE_SETTINGS : parseLakeSettings(r.settings);
}

export async function putLakeSettings(q: Queryable, tenantId: string, raw: unknown, by: string): Promise<LakeSettings> {
  const s = parseLakeSettings(raw);
  await q.query(
    `INSERT INTO lake_settings (tenant_id, settings, updated_by) VALUES ($1, $2::jsonb, $3)
     ON CONFLICT (tenant_id) DO UPDATE SET settings = EXCLUDED.settings, updated_by = EXCLUDED.updated_by, updated_at = now()`,
    [tenantId, JSON.stringify(s), by],
  );
  return s;
}

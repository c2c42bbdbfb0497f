// The plugin registry (issue 8): developers and their signing keys, submitted versions and their
// way to publication: submitted → validating → in-review → published (or validation-failed,
// rejected). Every state change is one conditional UPDATE, so two workers never move one version
// twice. Package bytes live in files named by their SHA-256; the database holds the manifest and
// the checksum.
import { createHash, createPublicKey, randomUUID } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from '../store/index.ts';
import { parseManifest, type PluginManifest } from './manifest.ts';
import { normalizePublicKey, verifyPackage } from './package.ts';

export const VERSION_STATUSES = ['submitted', 'validating', 'validation-failed', 'in-review', 'published', 'rejected'] as const;
export type VersionStatus = (typeof VERSION_STATUSES)[number];

/** The developer's share of each charge unless the platform admin sets another (the seed's 70/30). */
export const DEFAULT_DEVELOPER_SHARE_BPS = 7000;
/** Largest package accepted over HTTP. */
export const MAX_PACKAGE_BYTES = 64 * 1024 * 1024;

export interface Developer {
  readonly tenantId: string;
  readonly name: string;
  readonly shareBps: number;
  readonly createdAtMs: number;
}

export interface DeveloperKey {
  readonly id: string;
  readonly name: string;
  /** sha256 of the raw public key, hex, first 16 bytes (what `eco3d plugin keygen` prints). */
  readonly fingerprint: string;
  readonly createdAtMs: number;
  readonly revokedAtMs?: number;
}

export interface ValidationRun {
  readonly study: string;
  readonly status: 'completed' | 'failed';
  readonly reason?: string;
  readonly detail?: string;
  readonly wallMs: number;
  readonly measurements?: readonly { name: string; value: number; unit: string }[];
}
export interface ValidationReport {
  readonly ok: boolean;
  readonly runs: readonly ValidationRun[];
  /** Every SR built from the outputs passed dciodvfy (analysis plugins). */
  readonly srValid?: boolean;
  readonly problems: readonly string[];
}

export interface VersionView {
  readonly pluginId: string;
  readonly version: string;
  readonly developerTenantId: string;
  readonly name: string;
  readonly kind: PluginManifest['kind'];
  readonly tier: PluginManifest['tier'];
  readonly scopes: readonly string[];
  readonly pricing: PluginManifest['pricing'];
  readonly status: VersionStatus;
  readonly packageSha256: string;
  readonly submittedBy: string;
  readonly submittedAtMs: number;
  readonly validation?: ValidationReport;
  readonly reviewedBy?: string;
  readonly reviewNote?: string;
  readonly reviewedAtMs?: number;
  readonly manifest: PluginManifest;
}

interface VersionRow {
  plugin_id: string;
  version: string;
  developer_tenant_id: string;
  manifest: PluginManifest;
  package_sha256: string;
  status: VersionStatus;
  validation: ValidationReport | null;
  submitted_by: string;
  submitted_ms: string | number;
  reviewed_by: string | null;
  review_note: string | null;
  reviewed_ms: string | number | null;
}

const VERSION_SELECT = `SELECT v.plugin_id, v.version, p.developer_tenant_id, v.manifest, v.package_sha256, v.status, v.validation, v.submitted_by,
  (extract(epoch FROM v.submitted_at) * 1000)::int8 AS submitted_ms, v.reviewed_by, v.review_note,
  (extract(epoch FROM v.reviewed_at) * 1000)::int8 AS reviewed_ms
  FROM marketplace_versions v JOIN marketplace_plugins p ON p.id = v.plugin_id`;

export const toVersionView = (r: VersionRow): VersionView => ({
  pluginId: r.plugin_id,
  version: r.version,
  developerTenantId: r.developer_tenant_id,
  name: r.manifest.name,
  kind: r.manifest.kind,
  tier: r.manifest.tier,
  scopes: r.manifest.scopes,
  pricing: r.manifest.pricing,
  status: r.status,
  packageSha256: r.package_sha256,
  submittedBy: r.submitted_by,
  submittedAtMs: Number(r.submitted_ms),
  ...(r.validation === null ? {} : { validation: r.validation }),
  ...(r.reviewed_by === null ? {} : { reviewedBy: r.reviewed_by }),
  ...(r.review_note === null ? {} : { reviewNote: r.review_note }),
  ...(r.reviewed_ms === null ? {} : { reviewedAtMs: Number(r.reviewed_ms) }),
  manifest: r.manifest,
});

const bad = (message: string, details?: Record<string, unknown>): Eco3dError => new Eco3dError('ECO3D_ERR_BAD_REQUEST', message, details === undefined ? undefined : { details });

// --- developers ----------------------------------------------------------------------------

const TENANT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Registers a developer organisation (its tenant is created when missing). Idempotent; a given shareBps replaces the old one. */
export async function putDeveloper(db: Database, d: { tenantId: string; name: string; shareBps?: number | undefined; by: string }): Promise<{ developer: Developer; created: boolean }> {
  if (!TENANT_ID.test(d.tenantId)) throw bad('a developer tenant id is lower-case letters, digits and hyphens (1 to 63)', { field: 'tenantId' });
  const name = d.name.trim();
  if (name.length < 1 || name.length > 200) throw bad('a developer name has 1 to 200 characters', { field: 'name' });
  const shareBps = d.shareBps ?? DEFAULT_DEVELOPER_SHARE_BPS;
  if (!Number.isInteger(shareBps) || shareBps < 0 || shareBps > 10000) throw bad('shareBps is a whole number of basis points from 0 to 10000', { field: 'shareBps' });
  return db.transaction(async (tx) => {
    const hospital = await tx.query(
      `SELECT 1 FROM tenants t WHERE t.id = $1 AND (t.id = 'eco3d-lake' OR EXISTS (SELECT 1 FROM accounts a WHERE a.tenant_id = t.id AND a.role IN ('sonographer', 'bedside', 'physician'))
         OR EXISTS (SELECT 1 FROM lake_partners l WHERE l.tenant_id = t.id))`,
      [d.tenantId],
    );
    if (hospital.length > 0) throw new Eco3dError('ECO3D_ERR_CONFLICT', `tenant ${d.tenantId} is a hospital, a data partner or reserved: a developer has a tenant of its own`);
    await tx.query('INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [d.tenantId, name]);
    const inserted = await tx.query('INSERT INTO marketplace_developers (tenant_id, share_bps, created_by) VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING RETURNING 1', [
      d.tenantId,
      shareBps,
      d.by,
    ]);
    if (inserted.length === 0 && d.shareBps !== undefined) await tx.query('UPDATE marketplace_developers SET share_bps = $2 WHERE tenant_id = $1', [d.tenantId, shareBps]);
    const developer = await getDeveloper(tx, d.tenantId);
    return { developer: developer!, created: inserted.length > 0 };
  });
}

interface DeveloperRow {
  tenant_id: string;
  name: string;
  share_bps: number;
  created_ms: string | number;
}
const DEVELOPER_SELECT = `SELECT d.tenant_id, t.name, d.share_bps, (extract(epoch FROM d.created_at) * 1000)::int8 AS created_ms
  FROM marketplace_developers d JOIN tenants t ON t.id = d.tenant_id`;
const toDeveloper = (r: DeveloperRow): Developer => ({ tenantId: r.tenant_id, name: r.name, shareBps: r.share_bps, createdAtMs: Number(r.created_ms) });

export async function getDeveloper(q: Queryable, tenantId: string): Promise<Developer | undefined> {
  const r = (await q.query<DeveloperRow>(`${DEVELOPER_SELECT} WHERE d.tenant_id = $1`, [tenantId]))[0];
  return r === undefined ? undefined : toDeveloper(r);
}

export async function listDevelopers(q: Queryable): Promise<Developer[]> {
  return (await q.query<DeveloperRow>(`${DEVELOPER_SELECT} ORDER BY d.tenant_id`)).map(toDeveloper);
}

/** The developer of a tenant, or FORBIDDEN (the portal is for registered developers only). */
export async function requireDeveloper(q: Queryable, tenantId: string): Promise<Developer> {
  const d = await getDeveloper(q, tenantId);
  if (d === undefined) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `tenant ${tenantId} is not a registered plugin developer`);
  return d;
}

// --- signing keys --------------------------------------------------------------------------

/** Raw 32-byte Ed25519 key from base64 (raw or SPKI DER) or an SPKI PEM, else BAD_REQUEST. */
export function parsePublicKey(input: string): Buffer {
  const s = input.trim();
  let b64: string | undefined;
  if (s.startsWith('-----BEGIN')) {
    try {
      const der = createPublicKey(s).export({ format: 'der', type: 'spki' });
      b64 = normalizePublicKey(der.toString('base64'));
    } catch {
      b64 = undefined;
    }
  } else b64 = normalizePublicKey(s);
  if (b64 === undefined) throw bad('publicKey must be an Ed25519 public key: SPKI PEM, or the raw 32-byte key in base64', { field: 'publicKey' });
  return Buffer.from(b64, 'base64');
}

export const keyFingerprint = (raw: Uint8Array): string => createHash('sha256').update(raw).digest('hex').slice(0, 32);

interface KeyRow {
  id: string;
  name: string;
  public_key: Uint8Array;
  created_ms: string | number;
  revoked_ms: string | number | null;
}
const KEY_SELECT = `SELECT id, name, public_key, (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, (extract(epoch FROM revoked_at) * 1000)::int8 AS revoked_ms FROM marketplace_developer_keys`;
const toKey = (r: KeyRow): DeveloperKey => ({
  id: r.id,
  name: r.name,
  fingerprint: keyFingerprint(r.public_key),
  createdAtMs: Number(r.created_ms),
  ...(r.revoked_ms === null ? {} : { revokedAtMs: Number(r.revoked_ms) }),
});

export async function addDeveloperKey(q: Queryable, k: { developerTenantId: string; name: string; publicKey: string; by: string }): Promise<DeveloperKey> {
  const name = k.name.trim();
  if (name.length < 1 || name.length > 100) throw bad('a key name has 1 to 100 characters', { field: 'name' });
  const raw = parsePublicKey(k.publicKey);
  const rows = await q.query<KeyRow>(
    `INSERT INTO marketplace_developer_keys (id, developer_tenant_id, name, public_key, created_by) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (public_key) DO NOTHING RETURNING id, name, public_key, (extract(epoch FROM created_at) * 1000)::int8 AS created_ms, NULL::int8 AS revoked_ms`,
    [`K-${randomUUID()}`, k.developerTenantId, name, raw, k.by],
  );
  if (rows[0] === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'this public key is already registered');
  return toKey(rows[0]);
}

export async function listDeveloperKeys(q: Queryable, developerTenantId: string): Promise<DeveloperKey[]> {
  return (await q.query<KeyRow>(`${KEY_SELECT} WHERE developer_tenant_id = $1 ORDER BY created_at, id`, [developerTenantId])).map(toKey);
}

export async function revokeDeveloperKey(q: Queryable, developerTenantId: string, id: string): Promise<DeveloperKey> {
  await q.query('UPDATE marketplace_developer_keys SET revoked_at = now() WHERE developer_tenant_id = $1 AND id = $2 AND revoked_at IS NULL', [developerTenantId, id]);
  const r = (await q.query<KeyRow>(`${KEY_SELECT} WHERE developer_tenant_id = $1 AND id = $2`, [developerTenantId, id]))[0];
  if (r === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no key ${id}`);
  return toKey(r);
}

// --- submission ----------------------------------------------------------------------------

export const packagePath = (packagesDir: string, sha256: string): string => join(packagesDir, `${sha256}.zip`);

/**
 * Submits a signed package: verified against the developer's active keys (any other signer, a
 * bad signature, a tampered file, a bad manifest: refused with the reason), the plugin id must be
 * this developer's (or new), and the version new. The package is kept as `<sha256>.zip`.
 */
export async function submitVersion(db: Database, s: { developerTenantId: string; packageBytes: Uint8Array; by: string; packagesDir: string }): Promise<VersionView> {
  if (s.packageBytes.byteLength > MAX_PACKAGE_BYTES) throw new Eco3dError('ECO3D_ERR_PAYLOAD_TOO_LARGE', `a package is at most ${MAX_PACKAGE_BYTES} bytes`);
  const keys = await db.query<{ id: string; public_key: Uint8Array }>('SELECT id, public_key FROM marketplace_developer_keys WHERE developer_tenant_id = $1 AND revoked_at IS NULL', [
    s.developerTenantId,
  ]);
  if (keys.length === 0) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'register a signing key first (POST /api/marketplace/developer/keys)');
  const trusted = keys.map((k) => Buffer.from(k.public_key).toString('base64'));
  const pkg = verifyPackage(s.packageBytes, { trustedKeys: trusted, maxBytes: MAX_PACKAGE_BYTES });
  const keyId = keys.find((k) => Buffer.from(k.public_key).toString('base64') === pkg.publicKey)!.id;
  const manifest = pkg.manifest;
  const sha256 = createHash('sha256').update(s.packageBytes).digest('hex');
  // The bytes first (named by content: a retry writes the same file), then the row.
  await mkdir(s.packagesDir, { recursive: true });
  const file = packagePath(s.packagesDir, sha256);
  const tmp = `${file}.${randomUUID()}.tmp`;
  await writeFile(tmp, s.packageBytes, { mode: 0o600 });
  await rename(tmp, file);
  return db.transaction(async (tx) => {
    await tx.query('INSERT INTO marketplace_plugins (id, developer_tenant_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [manifest.id, s.developerTenantId]);
    const owner = (await tx.query<{ developer_tenant_id: string }>('SELECT developer_tenant_id FROM marketplace_plugins WHERE id = $1', [manifest.id]))[0]!;
    if (owner.developer_tenant_id !== s.developerTenantId) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `plugin id ${manifest.id} belongs to another developer`);
    const inserted = await tx.query(
      `INSERT INTO marketplace_versions (plugin_id, version, manifest, package_sha256, package_bytes, key_id, status, submitted_by)
       VALUES ($1, $2, $3::jsonb, $4, $5, $6, 'submitted', $7) ON CONFLICT (plugin_id, version) DO NOTHING RETURNING 1`,
      [manifest.id, manifest.version, JSON.stringify(manifest), sha256, s.packageBytes.byteLength, keyId, s.by],
    );
    if (inserted.length === 0) {
      throw new Eco3dError('ECO3D_ERR_CONFLICT', `${manifest.id} ${manifest.version} was already submitted: a version is submitted once (bump the version)`, {
        details: { pluginId: manifest.id, version: manifest.version },
      });
    }
    return (await getVersion(tx, manifest.id, manifest.version))!;
  });
}

export async function getVersion(q: Queryable, pluginId: string, version: string): Promise<VersionView | undefined> {
  const r = (await q.query<VersionRow>(`${VERSION_SELECT} WHERE v.plugin_id = $1 AND v.version = $2`, [pluginId, version]))[0];
  return r === undefined ? undefined : toVersionView({ ...r, manifest: parseManifest(r.manifest) });
}

export async function listVersions(q: Queryable, w: { developerTenantId?: string; status?: VersionStatus; pluginId?: string }): Promise<VersionView[]> {
  const rows = await q.query<VersionRow>(
    `${VERSION_SELECT} WHERE ($1::text IS NULL OR p.developer_tenant_id = $1) AND ($2::text IS NULL OR v.status = $2) AND ($3::text IS NULL OR v.plugin_id = $3)
     ORDER BY v.plugin_id, v.submitted_at`,
    [w.developerTenantId ?? null, w.status ?? null, w.pluginId ?? null],
  );
  return rows.map(toVersionView);
}

/** The package file of a version, and its manifest. */
export async function versionPackage(q: Queryable, packagesDir: string, pluginId: string, version: string): Promise<{ path: string; manifest: PluginManifest } | undefined> {
  const v = await getVersion(q, pluginId, version);
  return v === undefined ? undefined : { path: packagePath(packagesDir, v.packageSha256), manifest: v.manifest };
}

// --- validation and review -----------------------------------------------------------------

/** Takes the oldest submitted version for validation (submitted → validating), or undefined. */
export async function claimForValidation(db: Database): Promise<VersionView | undefined> {
  const r = (
    await db.query<{ plugin_id: string; version: string }>(
      `UPDATE marketplace_versions SET status = 'validating'
       WHERE (plugin_id, version) = (SELECT plugin_id, version FROM marketplace_versions WHERE status = 'submitted' ORDER BY submitted_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         AND status = 'submitted'
       RETURNING plugin_id, version`,
    )
  )[0];
  return r === undefined ? undefined : getVersion(db, r.plugin_id, r.version);
}

/** A process that stopped mid-validation left versions in `validating`: they go back to the queue. */
export async function requeueInterruptedValidations(db: Database): Promise<number> {
  return (await db.query("UPDATE marketplace_versions SET status = 'submitted' WHERE status = 'validating' RETURNING 1")).length;
}

/** validating → in-review (ok) or validation-failed, with the report. */
export async function finishValidation(db: Database, pluginId: string, version: string, report: ValidationReport): Promise<VersionView> {
  const next: VersionStatus = report.ok ? 'in-review' : 'validation-failed';
  const rows = await db.query("UPDATE marketplace_versions SET status = $3, validation = $4::jsonb WHERE plugin_id = $1 AND version = $2 AND status = 'validating' RETURNING 1", [
    pluginId,
    version,
    next,
    JSON.stringify(report),
  ]);
  if (rows.length === 0) throw new Eco3dError('ECO3D_ERR_CONFLICT', `${pluginId} ${version} is not being validated`);
  return (await getVersion(db, pluginId, version))!;
}

/** The platform admin's decision on an in-review version. */
export async function reviewVersion(db: Database, r: { pluginId: string; version: string; decision: 'publish' | 'reject'; note?: string | undefined; by: string }): Promise<VersionView> {
  const note = r.note?.trim();
  if (note !== undefined && note.length > 2000) throw bad('a review note has at most 2000 characters', { field: 'note' });
  if (r.decision === 'reject' && (note === undefined || note === '')) throw bad('a rejection needs a note for the developer', { field: 'note' });
  return db.transaction(async (tx) => {
    const v = await getVersion(tx, r.pluginId, r.version);
    if (v === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no version ${r.pluginId} ${r.version}`);
    if (v.status !== 'in-review') throw new Eco3dError('ECO3D_ERR_CONFLICT', `${r.pluginId} ${r.version} is ${v.status}, not in review`);
    if (r.decision === 'publish' && v.manifest.tier === 'diagnostic' && v.manifest.certificate === undefined) {
      throw new Eco3dError('ECO3D_ERR_CONFLICT', 'a diagnostic plugin is published only with its CE or FDA certificate reference');
    }
    await tx.query(
      "UPDATE marketplace_versions SET status = $3, reviewed_by = $4, review_note = $5, reviewed_at = now() WHERE plugin_id = $1 AND version = $2 AND status = 'in-review'",
      [r.pluginId, r.version, r.decision === 'publish' ? 'published' : 'rejected', r.by, note === '' ? null : (note ?? null)],
    );
    return (await getVersion(tx, r.pluginId, r.version))!;
  });
}

// --- the catalog ---------------------------------------------------------------------------

/** semver 2.0.0 precedence (build metadata ignored). */
export function compareSemver(a: string, b: string): number {
  const split = (v: string): [number[], string[]] => {
    const [core, pre] = v.split('+')[0]!.split(/-(.*)/s) as [string, string | undefined];
    return [core.split('.').map(Number), pre === undefined || pre === '' ? [] : pre.split('.')];
  };
  const [ca, pa] = split(a);
  const [cb, pb] = split(b);
  for (let i = 0; i < 3; i++) if (ca[i] !== cb[i]) return ca[i]! - cb[i]!;
  if (pa.length === 0 || pb.length === 0) return pb.length - pa.length;
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const x = pa[i]!;
    const y = pb[i]!;
    if (x === y) continue;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) return Number(x) - Number(y);
    if (nx !== ny) return nx ? -1 : 1;
    return x < y ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** Each published plugin's newest published version. */
export async function publishedCatalog(q: Queryable): Promise<VersionView[]> {
  const all = await listVersions(q, { status: 'published' });
  const newest = new Map<string, VersionView>();
  for (const v of all) {
    const cur = newest.get(v.pluginId);
    if (cur === undefined || compareSemver(v.version, cur.version) > 0) newest.set(v.pluginId, v);
  }
  return [...newest.values()].sort((a, b) => a.name.localeCompare(b.name));
}

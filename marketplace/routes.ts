// The marketplace's HTTP API (docs/marketplace-api.md): the developer portal, the platform's
// review, each hospital's marketplace (enable, disable, client credentials, work items), and the
// OAuth2 token endpoint for plugins (client credentials, RFC 6749 §4.4).
//
// Who may do what:
// - platform-admin: registers developers, reviews versions;
// - a developer tenant's tenant-admin: keys, submissions, its plugins' status and usage, payouts;
// - a hospital's tenant-admin: the catalog, enable and disable, clients, its work items;
// - a plugin: POST /api/oauth/token with its client credentials, then its token's scopes.
// Every change is audited.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Eco3dError, parseWith } from '../protocols/index.ts';
import type { Database } from '../store/index.ts';
import { entryModulePath, type PluginManifest } from './manifest.ts';
import { packagePathProblem } from './package.ts';
import { activeEnablement as activeEnablementOf, authenticateClient, createClient, disablePlugin, enablePlugin, getEnablement, listEnablements, type DisableResult, type Enablement } from './enablement.ts';
import {
  addDeveloperKey,
  getDeveloper,
  listDeveloperKeys,
  listDevelopers,
  listVersions,
  MAX_PACKAGE_BYTES,
  publishedCatalog,
  putDeveloper,
  requireDeveloper,
  reviewVersion,
  revokeDeveloperKey,
  submitVersion,
  type VersionView,
} from './registry.ts';
import { listPayouts, meterSubscriptions, payoutCsv, payoutStatement, type RecordCharge } from './revenue.ts';
import { listWorkItems } from './workitems.ts';

/** The parts of server/auth.ts's Principal the marketplace reads. */
export interface MarketplacePrincipal {
  readonly kind: 'session' | 'token';
  readonly role: string;
  readonly tenantId: string;
  readonly username: string;
  readonly scopes: readonly string[] | null;
  /** A plugin's token (OAuth2 client credentials). */
  readonly enablementId?: string;
}

/** Lifetime of a plugin's access token: short, the client asks again (RFC 6749 client credentials have no refresh token). */
export const PLUGIN_TOKEN_TTL_S = 900;

export interface MarketplaceRoutesOptions {
  readonly db: Database;
  /** Where submitted packages are kept (<data>/marketplace/packages). */
  readonly packagesDir: string;
  readonly audit: (e: { tenantId: string; actor: string; action: string; target?: string; detail?: Record<string, unknown> }) => Promise<void>;
  /** A submission arrived: the validation worker is woken. */
  readonly submitted: () => void;
  /** After a disable's transaction: cut the live streams of these tokens, kill these runs. */
  readonly disabled: (r: DisableResult) => Promise<{ cutStreams: number }>;
  /** Mints a plugin's token (server/auth.ts): its hash is stored with the enablement. */
  readonly mintPluginToken: (t: { enablement: Enablement; scopes: readonly string[]; ttlSeconds: number; clientId: string }) => Promise<{ token: string }>;
  /** The sandbox tenant's de-identified demo studies. */
  /** A version's unpacked, verified files (the console loads a live plugin's browser module from them). */
  readonly pluginFiles: (pluginId: string, version: string) => Promise<{ dir: string; manifest: PluginManifest }>;
  /** billing/'s recordCharge: a subscription's first month is charged when enabled. */
  readonly recordCharge: RecordCharge;
  readonly demoStudies: () => Promise<readonly { ref: string; path: string; description: string; dims: readonly number[]; spacingMm: readonly number[]; sizeBytes: number }[]>;
  readonly nowMs?: () => number;
}

const principalOf = (req: FastifyRequest): MarketplacePrincipal | null => (req as unknown as { principal?: MarketplacePrincipal | null }).principal ?? null;

function session(req: FastifyRequest, roles: readonly string[]): MarketplacePrincipal {
  const p = principalOf(req);
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login)');
  if (p.kind !== 'session' || !roles.includes(p.role)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs one of the roles: ${roles.join(', ')}`);
  return p;
}

const PLATFORM = ['platform-admin'];
const ADMIN = ['tenant-admin'];
/** Who sees the live plugins' layers on the console (the console's own users). */
const CONSOLE = ['sonographer', 'tenant-admin', 'physician'];
/** A console session's plugin token: long enough for a scan, renewed by the console. */
const SESSION_TOKEN_TTL_S = 900;
const MODULE_TYPES: Readonly<Record<string, string>> = { '.mjs': 'text/javascript; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.json': 'application/json', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml' };

const developerBody = z.strictObject({ name: z.string().min(1).max(200), shareBps: z.number().int().min(0).max(10000).optional() });
const keyBody = z.strictObject({ name: z.string().min(1).max(100), publicKey: z.string().min(1).max(4096) });
const reviewBody = z.strictObject({ decision: z.enum(['publish', 'reject']), note: z.string().max(2000).optional() });
const enableBody = z.strictObject({ version: z.string().min(1).max(256), acceptScopes: z.array(z.string().max(64)).min(1).max(16), acceptPricing: z.record(z.string(), z.unknown()) });
const limitQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(50) });
const tokenRequest = z.object({
  grant_type: z.string().optional(),
  client_id: z.string().max(200).optional(),
  client_secret: z.string().max(500).optional(),
  scope: z.string().max(1000).optional(),
});

/** What a hospital admin is shown of a version (no package internals). */
const catalogEntry = (v: VersionView, enabled: Enablement | undefined) => ({
  id: v.pluginId,
  name: v.name,
  version: v.version,
  vendor: v.manifest.vendor,
  description: v.manifest.description,
  kind: v.kind,
  tier: v.tier,
  ...(v.manifest.certificate === undefined ? {} : { certificate: v.manifest.certificate }),
  scopes: v.scopes,
  pricing: v.pricing,
  enabled: enabled !== undefined,
  ...(enabled === undefined ? {} : { enabledVersion: enabled.version }),
});

const versionView = (v: VersionView) => {
  const { manifest: _m, packageSha256: _s, ...rest } = v;
  return { ...rest, vendor: v.manifest.vendor, description: v.manifest.description };
};

/** RFC 6749 §5.2 error answer (with our code too). */
function oauthError(reply: FastifyReply, status: number, error: string, description: string) {
  return reply
    .status(status)
    .header('cache-control', 'no-store')
    .send({ error, error_description: description, code: status === 401 ? 'ECO3D_ERR_UNAUTHENTICATED' : 'ECO3D_ERR_BAD_REQUEST' });
}

export async function registerMarketplace(app: FastifyInstance, o: MarketplaceRoutesOptions): Promise<void> {
  const { db } = o;
  const now = o.nowMs ?? Date.now;
  const audit = (p: MarketplacePrincipal, action: string, target?: string, detail?: Record<string, unknown>): Promise<void> =>
    o.audit({ tenantId: p.tenantId, actor: p.username, action, ...(target === undefined ? {} : { target }), ...(detail === undefined ? {} : { detail }) });
  const developerOf = async (req: FastifyRequest) => {
    const p = session(req, ADMIN);
    return { p, developer: await requireDeveloper(db, p.tenantId) };
  };
  /** A hospital's admin: a developer tenant has no marketplace of its own. */
  const hospitalAdmin = async (req: FastifyRequest) => {
    const p = session(req, ADMIN);
    if ((await getDeveloper(db, p.tenantId)) !== undefined) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'a developer tenant does not enable plugins: that is a hospital admin’s');
    return p;
  };

  await app.register(async (scope) => {
    // Package uploads are raw zip bytes; the token endpoint takes the form encoding RFC 6749 requires.
    scope.addContentTypeParser('application/zip', { parseAs: 'buffer', bodyLimit: MAX_PACKAGE_BYTES }, (_req, body, done) => done(null, body));
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 16 * 1024 }, (_req, body, done) =>
      done(null, Object.fromEntries(new URLSearchParams(body as string))),
    );

    // --- developers (platform) ---------------------------------------------------------------
    scope.put<{ Params: { tenantId: string } }>('/api/marketplace/developers/:tenantId', async (req, reply) => {
      const p = session(req, PLATFORM);
      const b = parseWith(developerBody, req.body, 'body');
      const r = await putDeveloper(db, { tenantId: req.params.tenantId, name: b.name, shareBps: b.shareBps, by: p.username });
      await audit(p, 'marketplace.developer', r.developer.tenantId, { shareBps: r.developer.shareBps, created: r.created });
      return reply.status(r.created ? 201 : 200).send(r.developer);
    });
    scope.get('/api/marketplace/developers', async (req) => {
      session(req, PLATFORM);
      return { developers: await listDevelopers(db) };
    });

    // --- the developer portal ------------------------------------------------------------------
    scope.get('/api/marketplace/developer', async (req) => (await developerOf(req)).developer);
    scope.get('/api/marketplace/developer/keys', async (req) => {
      const { developer } = await developerOf(req);
      return { keys: await listDeveloperKeys(db, developer.tenantId) };
    });
    scope.post('/api/marketplace/developer/keys', async (req, reply) => {
      const { p, developer } = await developerOf(req);
      const b = parseWith(keyBody, req.body, 'body');
      const k = await addDeveloperKey(db, { developerTenantId: developer.tenantId, name: b.name, publicKey: b.publicKey, by: p.username });
      await audit(p, 'marketplace.key.add', k.id, { fingerprint: k.fingerprint });
      return reply.status(201).send(k);
    });
    scope.delete<{ Params: { id: string } }>('/api/marketplace/developer/keys/:id', async (req) => {
      const { p, developer } = await developerOf(req);
      const k = await revokeDeveloperKey(db, developer.tenantId, req.params.id);
      await audit(p, 'marketplace.key.revoke', k.id, { fingerprint: k.fingerprint });
      return { key: k };
    });
    scope.post('/api/marketplace/developer/versions', async (req, reply) => {
      const { p, developer } = await developerOf(req);
      if (!Buffer.isBuffer(req.body)) throw new Eco3dError('ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE', 'send the signed package as Content-Type: application/zip');
      try {
        const v = await submitVersion(db, { developerTenantId: developer.tenantId, packageBytes: new Uint8Array(req.body), by: p.username, packagesDir: o.packagesDir });
        await audit(p, 'marketplace.version.submit', `${v.pluginId}@${v.version}`, { sha256: v.packageSha256 });
        o.submitted();
        return reply.status(202).send({ version: versionView(v) });
      } catch (err) {
        // A refused package is audited too: repeated tampered uploads are worth seeing.
        if (err instanceof Eco3dError) await audit(p, 'marketplace.version.refused', undefined, { code: err.code, reason: err.message.slice(0, 500) });
        throw err;
      }
    });
    scope.get('/api/marketplace/developer/plugins', async (req) => {
      const { developer } = await developerOf(req);
      const versions = await listVersions(db, { developerTenantId: developer.tenantId });
      const usage = await db.query<{ plugin_id: string; runs: string | number; completed: string | number; failed: string | number }>(
        `SELECT r.plugin_id, count(*) AS runs, count(*) FILTER (WHERE r.status = 'completed') AS completed, count(*) FILTER (WHERE r.status = 'failed') AS failed
         FROM marketplace_runs r JOIN marketplace_plugins p ON p.id = r.plugin_id WHERE p.developer_tenant_id = $1 AND r.purpose = 'work-item' GROUP BY r.plugin_id`,
        [developer.tenantId],
      );
      const money = await db.query<{ plugin_id: string; gross: string | number; developer: string | number }>(
        `SELECT plugin_id, sum(amount_cents) AS gross, sum(amount_cents) FILTER (WHERE party = 'developer') AS developer FROM marketplace_revenue WHERE developer_tenant_id = $1 GROUP BY plugin_id`,
        [developer.tenantId],
      );
      const ids = [...new Set(versions.map((v) => v.pluginId))];
      return {
        plugins: ids.map((id) => {
          const u = usage.find((x) => x.plugin_id === id);
          const m = money.find((x) => x.plugin_id === id);
          return {
            id,
            versions: versions.filter((v) => v.pluginId === id).map(versionView),
            usage: {
              runs: Number(u?.runs ?? 0),
              completed: Number(u?.completed ?? 0),
              failed: Number(u?.failed ?? 0),
              chargedCents: Number(m?.gross ?? 0),
              developerCents: Number(m?.developer ?? 0),
            },
          };
        }),
      };
    });
    scope.get('/api/marketplace/developer/payouts', async (req) => {
      const { developer } = await developerOf(req);
      return { statements: await listPayouts(db, developer.tenantId) };
    });
    scope.get<{ Params: { file: string } }>('/api/marketplace/developer/payouts/:file', async (req, reply) => {
      const { developer } = await developerOf(req);
      const m = /^(\d{4}-\d{2})\.(json|csv)$/.exec(req.params.file);
      if (m === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'a statement is <YYYY-MM>.json or <YYYY-MM>.csv');
      const s = await payoutStatement(db, developer.tenantId, m[1]!);
      if (m[2] === 'json') return s;
      return reply
        .header('content-type', 'text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="eco3d-payout-${developer.tenantId}-${m[1]}.csv"`)
        .send(payoutCsv(s));
    });
    // The sandbox tenant: de-identified demo studies to develop against (any signed-in account of a developer).
    scope.get('/api/marketplace/demo-studies', async (req) => {
      await developerOf(req);
      return { studies: (await o.demoStudies()).map(({ path: _p, ...s }) => s) };
    });
    scope.get<{ Params: { file: string } }>('/api/marketplace/demo-studies/:file', async (req, reply) => {
      await developerOf(req);
      const s = (await o.demoStudies()).find((d) => `${d.ref}.dcm` === req.params.file);
      if (s === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no demo study ${req.params.file}`);
      return reply.header('content-type', 'application/dicom').header('content-length', s.sizeBytes).send(createReadStream(s.path));
    });

    // --- review (platform) ---------------------------------------------------------------------
    scope.get('/api/marketplace/review', async (req) => {
      session(req, PLATFORM);
      return { versions: (await listVersions(db, { status: 'in-review' })).map(versionView) };
    });
    scope.post<{ Params: { pluginId: string; version: string } }>('/api/marketplace/review/:pluginId/:version', async (req) => {
      const p = session(req, PLATFORM);
      const b = parseWith(reviewBody, req.body, 'body');
      const v = await reviewVersion(db, { pluginId: req.params.pluginId, version: req.params.version, decision: b.decision, note: b.note, by: p.username });
      await audit(p, `marketplace.version.${b.decision}`, `${v.pluginId}@${v.version}`, { note: b.note ?? null });
      return { version: versionView(v) };
    });

    // --- the hospital's marketplace ----------------------------------------------------------
    scope.get('/api/marketplace/plugins', async (req) => {
      const p = await hospitalAdmin(req);
      const enabled = await listEnablements(db, p.tenantId);
      return { plugins: (await publishedCatalog(db)).map((v) => catalogEntry(v, enabled.find((e) => e.pluginId === v.pluginId && e.disabledAtMs === undefined))) };
    });
    scope.get('/api/marketplace/enablements', async (req) => {
      const p = await hospitalAdmin(req);
      return { enablements: await listEnablements(db, p.tenantId) };
    });
    scope.put<{ Params: { pluginId: string } }>('/api/marketplace/enablements/:pluginId', async (req, reply) => {
      const p = await hospitalAdmin(req);
      const b = parseWith(enableBody, req.body, 'body');
      const r = await enablePlugin(db, { tenantId: p.tenantId, pluginId: req.params.pluginId, version: b.version, acceptScopes: b.acceptScopes, acceptPricing: b.acceptPricing, by: p.username, nowMs: now() });
      if (r.replaced !== undefined) await o.disabled(r.replaced);
      // A subscription's month starts now (idempotent: the same month is never charged twice).
      if (r.created && r.enablement.pricing.model === 'subscription') await meterSubscriptions(db, o.recordCharge, now(), { tenantId: p.tenantId, pluginId: r.enablement.pluginId });
      if (r.created) await audit(p, 'marketplace.enable', `${r.enablement.pluginId}@${r.enablement.version}`, { scopes: r.enablement.scopes, pricing: r.enablement.pricing });
      return reply.status(r.created ? 201 : 200).send({ enablement: r.enablement });
    });
    scope.delete<{ Params: { pluginId: string } }>('/api/marketplace/enablements/:pluginId', async (req) => {
      const p = await hospitalAdmin(req);
      const r = await disablePlugin(db, { tenantId: p.tenantId, pluginId: req.params.pluginId, by: p.username, nowMs: now() });
      const { cutStreams } = await o.disabled(r);
      const summary = { revokedTokens: r.revokedTokenIds.length, revokedClients: r.revokedClients, cutStreams, canceledWorkItems: r.canceledWorkItemIds.length };
      await audit(p, 'marketplace.disable', `${r.enablement.pluginId}@${r.enablement.version}`, summary);
      return { enablement: r.enablement, ...summary };
    });
    scope.post<{ Params: { pluginId: string } }>('/api/marketplace/enablements/:pluginId/clients', async (req, reply) => {
      const p = await hospitalAdmin(req);
      const c = await createClient(db, { tenantId: p.tenantId, pluginId: req.params.pluginId, by: p.username });
      await audit(p, 'marketplace.client.create', c.clientId, { plugin: req.params.pluginId });
      return reply.status(201).header('cache-control', 'no-store').send({ clientId: c.clientId, clientSecret: c.clientSecret });
    });
    scope.get('/api/marketplace/work-items', async (req) => {
      const p = await hospitalAdmin(req);
      const { limit } = parseWith(limitQuery, req.query, 'query');
      return { workItems: await listWorkItems(db, p.tenantId, limit) };
    });

    // --- live plugins on the console ------------------------------------------------------------
    // The tenant's enabled browser plugins, for the console's plugin layers.
    scope.get('/api/marketplace/live-plugins', async (req) => {
      const p = session(req, CONSOLE);
      const active = (await listEnablements(db, p.tenantId)).filter((e) => e.disabledAtMs === undefined && e.kind === 'live');
      const out = [];
      for (const e of active) {
        const { manifest } = await o.pluginFiles(e.pluginId, e.version);
        const module = entryModulePath(manifest);
        if (module === undefined) continue; // an external client: nothing runs in the console
        out.push({ pluginId: e.pluginId, name: e.name, version: e.version, vendor: manifest.vendor.name, scopes: e.scopes, moduleUrl: `/api/marketplace/plugins/${e.pluginId}/${e.version}/files/${module}` });
      }
      return { plugins: out };
    });
    // A file of an enabled plugin's package (the console's sandboxed frame imports the module).
    scope.get<{ Params: { pluginId: string; version: string; '*': string } }>('/api/marketplace/plugins/:pluginId/:version/files/*', async (req, reply) => {
      const p = session(req, CONSOLE);
      const en = await activeEnablementOf(db, p.tenantId, req.params.pluginId);
      if (en === undefined || en.version !== req.params.version) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `${req.params.pluginId} ${req.params.version} is not enabled here`);
      const rel = req.params['*'];
      if (packagePathProblem(rel) !== undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'no such file in the package');
      const { dir } = await o.pluginFiles(en.pluginId, en.version);
      const bytes = await readFile(join(dir, rel)).catch(() => undefined);
      if (bytes === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'no such file in the package');
      // Third-party code: never sniffed, never framed by others, run only where the console puts it.
      return reply
        .header('content-type', MODULE_TYPES[extname(rel)] ?? 'application/octet-stream')
        .header('x-content-type-options', 'nosniff')
        .header('cache-control', 'no-store')
        .send(bytes);
    });
    // A token for a live plugin running in this user's console (bound to the enablement).
    scope.post<{ Params: { pluginId: string } }>('/api/marketplace/enablements/:pluginId/session-token', async (req) => {
      const p = session(req, CONSOLE);
      const en = await activeEnablementOf(db, p.tenantId, req.params.pluginId);
      if (en === undefined || en.kind !== 'live') throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `${req.params.pluginId} is not an enabled live plugin`);
      const { token } = await o.mintPluginToken({ enablement: en, scopes: en.scopes.filter((s) => s.startsWith('live:')), ttlSeconds: SESSION_TOKEN_TTL_S, clientId: `console:${p.username}` });
      await audit(p, 'marketplace.session-token', en.pluginId, { scopes: en.scopes });
      return { token, expiresIn: SESSION_TOKEN_TTL_S, name: en.name, version: en.version };
    });

    // What a plugin's token is (the plugin checks its grant; refused once the plugin is disabled).
    scope.get('/api/marketplace/plugin/whoami', async (req) => {
      const p = principalOf(req);
      if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'send your plugin token (POST /api/oauth/token)');
      if (p.kind !== 'token' || p.enablementId === undefined) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'this is for plugin tokens');
      const en = await getEnablement(db, p.enablementId);
      if (en === undefined || en.disabledAtMs !== undefined) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'the plugin is disabled');
      return { pluginId: en.pluginId, version: en.version, tenantId: en.tenantId, scopes: p.scopes ?? [] };
    });

    // --- OAuth2 client credentials -------------------------------------------------------------
    scope.post('/api/oauth/token', async (req, reply) => {
      const body = tokenRequest.safeParse(req.body ?? {});
      if (!body.success) return oauthError(reply, 400, 'invalid_request', 'the body is grant_type, client_id, client_secret and optional scope');
      let { client_id: clientId, client_secret: clientSecret } = body.data;
      const basic = req.headers.authorization;
      if (typeof basic === 'string' && basic.startsWith('Basic ')) {
        const raw = Buffer.from(basic.slice(6), 'base64').toString('utf8');
        const i = raw.indexOf(':');
        if (i > 0) {
          clientId = decodeURIComponent(raw.slice(0, i));
          clientSecret = decodeURIComponent(raw.slice(i + 1));
        }
      }
      if (body.data.grant_type !== 'client_credentials') return oauthError(reply, 400, 'unsupported_grant_type', 'only grant_type=client_credentials is supported');
      if (clientId === undefined || clientSecret === undefined) return oauthError(reply, 401, 'invalid_client', 'client authentication failed');
      const enablement = await authenticateClient(db, clientId, clientSecret);
      if (enablement === undefined) return oauthError(reply, 401, 'invalid_client', 'client authentication failed (unknown client, wrong secret, or the plugin is disabled)');
      const asked = body.data.scope === undefined || body.data.scope.trim() === '' ? enablement.scopes : body.data.scope.trim().split(/\s+/);
      const outside = asked.filter((s) => !enablement.scopes.includes(s));
      if (outside.length > 0) return oauthError(reply, 400, 'invalid_scope', `not granted to this plugin: ${outside.join(' ')}`);
      const scopes = [...new Set(asked)];
      const { token } = await o.mintPluginToken({ enablement, scopes, ttlSeconds: PLUGIN_TOKEN_TTL_S, clientId });
      await o.audit({ tenantId: enablement.tenantId, actor: `client:${clientId}`, action: 'marketplace.token', target: enablement.pluginId, detail: { scopes } });
      return reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send({ access_token: token, token_type: 'Bearer', expires_in: PLUGIN_TOKEN_TTL_S, scope: scopes.join(' ') });
    });
  });
}

// The fastify application: HTTP API, tele-operation WebSockets and the viewer, under one origin.
// Everything it needs comes in through `AppContext` (wired in runtime.ts), so tests can build it
// with `inject()` and no port.
import { createReadStream, readFileSync } from 'node:fs';
import fastifyCookie from '@fastify/cookie';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Eco3dError, type TeleopChannel, type TeleopStatus } from '../protocols/index.ts';
import { hashPassword } from './auth-crypto.ts';
import { ROLES, SESSION_COOKIE, requireRole, type AuthService, type Principal, type Role } from './auth.ts';
import type { Logger } from './log.ts';
import { openApiDocument } from './openapi.ts';
import type { TlsMaterial } from './tls.ts';
import type { WebSocket } from 'ws';

/** The store operations the HTTP API uses (adapted from store/ in runtime.ts). */
export interface ApiRepo {
  createAccount(a: { tenantId: string; username: string; role: Role; passwordHash: string }): Promise<{ id: string }>;
  tenantExists(tenantId: string): Promise<boolean>;
  listAcquisitions(tenantId: string, limit: number): Promise<unknown[]>;
  getAcquisition(tenantId: string, uid: string): Promise<unknown>;
  /** Path of one of an acquisition's files (volume, frames, config), or null when absent. */
  acquisitionFile(tenantId: string, uid: string, name: AcquisitionFileName): Promise<string | null>;
  listAvailability(tenantId: string, limit: number): Promise<unknown[]>;
  listAudit(tenantId: string | null, limit: number): Promise<unknown[]>;
  audit(entry: { tenantId: string | null; actor: string; action: string; target?: string; detail?: Record<string, unknown> }): Promise<void>;
}

/** What a completed acquisition leaves in its folder (server/imaging.ts). */
export const ACQUISITION_FILES = {
  'volume.mha': 'application/octet-stream',
  'tracked-frames.igs.mha': 'application/octet-stream',
  'reconstruction.xml': 'application/xml',
} as const;
export type AcquisitionFileName = keyof typeof ACQUISITION_FILES;

export interface TeleopGateway {
  status(): TeleopStatus;
  /** Takes over an authenticated socket for its lifetime. */
  attach(socket: WebSocket, principal: Principal, channel: TeleopChannel): void;
}

export interface AppContext {
  readonly log: Logger;
  readonly auth: AuthService;
  readonly repo: ApiRepo;
  readonly teleop: TeleopGateway;
  readonly health: () => Promise<{ db: boolean; robotLinkUp: boolean }>;
  readonly tls?: TlsMaterial | undefined;
  /** Secure cookies when served over TLS. */
  readonly secureCookies: boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

const loginBody = z.object({ username: z.string().min(1).max(128), password: z.string().min(1).max(1024) }).strict();
const accountBody = z
  .object({
    tenantId: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/),
    username: z.string().regex(/^[A-Za-z0-9._-]{3,64}$/),
    role: z.enum(ROLES as [Role, ...Role[]]),
    password: z.string().min(10).max(1024),
  })
  .strict();
const limitQuery = z.object({ limit: z.coerce.number().int().min(1).max(1000).default(100) });

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${i?.path.join('.') ?? ''}: ${i?.message ?? 'invalid'}`.replace(/^: /, ''));
  }
  return r.data;
}

const ADMINS: readonly Role[] = ['platform-admin', 'tenant-admin'];
const EVERYONE: readonly Role[] = ROLES;

export async function buildApp(ctx: AppContext): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: ctx.log,
    bodyLimit: 1024 * 1024,
    ...(ctx.tls === undefined ? {} : { https: { cert: ctx.tls.cert, key: ctx.tls.key } }),
  }) as unknown as FastifyInstance;

  await app.register(fastifyCookie);
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });

  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req) => {
    req.principal = await ctx.auth.fromRequest(req);
  });

  // One error shape for every client: {code, message}. Never a stack trace.
  app.setErrorHandler((err, req, reply) => {
    if (err instanceof Eco3dError) return reply.status(err.httpStatus).send(err.toJSON());
    const e = err as { statusCode?: number; code?: string; message?: string; validation?: unknown };
    if (e.validation !== undefined || e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500)) {
      return reply.status(e.statusCode ?? 400).send({ code: 'ECO3D_ERR_BAD_REQUEST', message: e.message ?? 'bad request' });
    }
    req.log.error({ err }, 'unhandled error');
    return reply.status(500).send({ code: 'ECO3D_ERR_INTERNAL', message: 'internal error (logged)' });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send({ code: 'ECO3D_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` }),
  );

  app.get('/healthz', async (_req, reply) => {
    const h = await ctx.health();
    return reply.status(h.db ? 200 : 503).send({ status: h.db ? 'ok' : 'degraded', db: h.db ? 'up' : 'down', robotLink: h.robotLinkUp ? 'up' : 'down' });
  });

  app.get('/api/openapi.json', async () => openApiDocument());

  app.post('/api/auth/login', async (req, reply) => {
    const body = parse(loginBody, req.body);
    const { token, principal, expiresAtMs } = await ctx.auth.login(body.username, body.password).catch(async (err: unknown) => {
      await ctx.repo.audit({ tenantId: null, actor: body.username, action: 'auth.login-failed' });
      throw err;
    });
    await ctx.repo.audit({ tenantId: principal.tenantId, actor: principal.username, action: 'auth.login' });
    void reply.setCookie(SESSION_COOKIE, token, {
      httpOnly: true,
      sameSite: 'strict',
      secure: ctx.secureCookies,
      path: '/',
      expires: new Date(expiresAtMs),
    });
    return { token, account: publicPrincipal(principal) };
  });

  app.post('/api/auth/logout', async (req, reply) => {
    const p = requireRole(req.principal, EVERYONE);
    await ctx.auth.logout(p);
    await ctx.repo.audit({ tenantId: p.tenantId, actor: p.username, action: 'auth.logout' });
    void reply.clearCookie(SESSION_COOKIE, { path: '/' });
    return { ok: true };
  });

  app.get('/api/auth/me', async (req) => publicPrincipal(requireRole(req.principal, EVERYONE)));

  app.post('/api/accounts', async (req, reply) => {
    const p = requireRole(req.principal, ADMINS);
    const body = parse(accountBody, req.body);
    if (p.role === 'tenant-admin' && (body.tenantId !== p.tenantId || body.role === 'platform-admin')) {
      throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'a tenant admin creates accounts of its own tenant only, and no platform admins');
    }
    if (!(await ctx.repo.tenantExists(body.tenantId))) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no tenant ${body.tenantId}`);
    const { id } = await ctx.repo.createAccount({ tenantId: body.tenantId, username: body.username, role: body.role, passwordHash: await hashPassword(body.password) });
    await ctx.repo.audit({ tenantId: body.tenantId, actor: p.username, action: 'account.create', target: body.username, detail: { role: body.role } });
    return reply.status(201).send({ id, tenantId: body.tenantId, username: body.username, role: body.role });
  });

  app.get('/api/robot', async (req) => {
    requireRole(req.principal, EVERYONE);
    return ctx.teleop.status();
  });

  app.get('/api/acquisitions', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const { limit } = parse(limitQuery, req.query);
    return { acquisitions: await ctx.repo.listAcquisitions(p.tenantId, limit) };
  });

  app.get<{ Params: { uid: string } }>('/api/acquisitions/:uid', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const a = await ctx.repo.getAcquisition(p.tenantId, req.params.uid);
    if (a === null || a === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no acquisition ${req.params.uid}`);
    return a;
  });

  app.get<{ Params: { uid: string; name: string } }>('/api/acquisitions/:uid/files/:name', async (req, reply) => {
    const p = requireRole(req.principal, EVERYONE);
    const name = req.params.name;
    if (!Object.hasOwn(ACQUISITION_FILES, name)) {
      throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no file ${name}: an acquisition has ${Object.keys(ACQUISITION_FILES).join(', ')}`);
    }
    const path = await ctx.repo.acquisitionFile(p.tenantId, req.params.uid, name as AcquisitionFileName);
    if (path === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `acquisition ${req.params.uid} has no ${name} (yet)`);
    await ctx.repo.audit({ tenantId: p.tenantId, actor: p.username, action: 'acquisition.file-read', target: req.params.uid, detail: { name } });
    return reply
      .type(ACQUISITION_FILES[name as AcquisitionFileName])
      .header('content-disposition', `attachment; filename="${name}"`)
      .send(createReadStream(path));
  });

  app.get('/api/availability', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const { limit } = parse(limitQuery, req.query);
    return { availability: await ctx.repo.listAvailability(p.tenantId, limit) };
  });

  app.get('/api/audit', async (req) => {
    const p = requireRole(req.principal, ADMINS);
    const { limit } = parse(limitQuery, req.query);
    await ctx.repo.audit({ tenantId: p.tenantId, actor: p.username, action: 'audit.read' });
    return { audit: await ctx.repo.listAudit(p.role === 'platform-admin' ? null : p.tenantId, limit) };
  });

  // Tele-operation sockets. Authentication happens before the upgrade: a refused client gets an
  // HTTP 401/403 with a code, never a socket.
  const wsRoute = (path: string, channel: TeleopChannel, roles: readonly Role[]): void => {
    app.route({
      method: 'GET',
      url: path,
      preValidation: async (req: FastifyRequest) => {
        requireRole(req.principal, roles);
      },
      handler: async (_req, reply) => reply.status(426).send({ code: 'ECO3D_ERR_BAD_REQUEST', message: 'WebSocket upgrade required' }),
      wsHandler: (socket, req) => {
        ctx.teleop.attach(socket, req.principal!, channel);
      },
    });
  };
  wsRoute('/ws/operator', 'operator', ['sonographer', 'tenant-admin', 'platform-admin']);
  wsRoute('/ws/bedside', 'bedside', ['bedside']);

  const panel = readFileSync(new URL('../viewer/panel.html', import.meta.url), 'utf8');
  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(panel));

  return app;
}

const publicPrincipal = (p: Principal): Record<string, string> => ({
  id: p.accountId,
  username: p.username,
  tenantId: p.tenantId,
  role: p.role,
});

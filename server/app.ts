// The fastify application: HTTP API, tele-operation WebSockets and the viewer, under one origin.
// Everything it needs comes in through `AppContext` (wired in runtime.ts), so tests can build it
// with `inject()` and no port.
import { createReadStream } from 'node:fs';
import fastifyCookie from '@fastify/cookie';
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Eco3dError, type TeleopChannel, type TeleopStatus } from '../protocols/index.ts';
import { hashPassword } from './auth-crypto.ts';
import { ROLES, SESSION_COOKIE, requireRole, type AuthService, type Principal, type Role } from './auth.ts';
import {
  maskExam,
  maskPatientId,
  type ApiToken,
  type ConsentDecision,
  type ConsentRecord,
  type Exam,
  type Measurement,
  type MeasurementKind,
  type MprPlane,
  type NewExam,
  type Report,
  type ReportText,
} from '../store/index.ts';
import type { LiveSignaling } from './live-ws.ts';
import type { Logger } from './log.ts';
import { openApiDocument } from './openapi.ts';
import type { TlsMaterial } from './tls.ts';
import type { WebSocket } from 'ws';

/** The store operations the HTTP API uses (adapted from store/ in runtime.ts). */
export interface ApiRepo {
  createAccount(a: { tenantId: string; username: string; role: Role; passwordHash: string }): Promise<{ id: string }>;
  tenantExists(tenantId: string): Promise<boolean>;
  listAcquisitions(tenantId: string, limit: number): Promise<unknown[]>;
  /** The acquisition with its transitions, files and exam (null when not linked to one). */
  getAcquisition(tenantId: string, uid: string): Promise<(Record<string, unknown> & { exam: Exam | null }) | null>;
  /** Path of one of an acquisition's files (volume, frames, config), or null when absent. */
  acquisitionFile(tenantId: string, uid: string, name: AcquisitionFileName): Promise<string | null>;
  listAvailability(tenantId: string, limit: number): Promise<unknown[]>;
  listAudit(tenantId: string | null, limit: number): Promise<unknown[]>;
  audit(entry: { tenantId: string | null; actor: string; action: string; target?: string; detail?: Record<string, unknown> }): Promise<void>;
  /** Where this server's robot belongs, and whether patient identity is masked in answers (demo mode). */
  readonly site: { readonly tenantId: string; readonly deviceId: string; readonly maskPatientData: boolean };
  currentExam(tenantId: string, deviceId: string): Promise<Exam | null>;
  /** Starts the device's current exam (ending the previous one), audited `exam.start` in the same transaction. */
  startExam(e: NewExam): Promise<Exam>;
  /** Ends the device's current exam (audited `exam.end`); null when there is none. */
  endExam(e: { tenantId: string; deviceId: string; endedBy: string; atMs: number }): Promise<Exam | null>;
  /** Appends a consent decision, audited `consent.record` in the same transaction. */
  recordConsent(c: { tenantId: string; patientId: string; examId: string | null; decision: ConsentDecision; recordedBy: string; recordedByAccountId: string }): Promise<ConsentRecord>;
  /** Newest first. */
  listConsents(tenantId: string, patientId: string): Promise<ConsentRecord[]>;
  /** Computes and stores a measurement, audited `measurement.create`; ECO3D_ERR_NOT_FOUND for another tenant's acquisition. */
  addMeasurement(m: {
    tenantId: string;
    acquisitionUid: string;
    kind: MeasurementKind;
    label?: string | undefined;
    plane: MprPlane;
    pointsMm: readonly unknown[];
    createdBy: string;
    createdByAccountId: string;
  }): Promise<Measurement>;
  listMeasurements(tenantId: string, acquisitionUid: string): Promise<Measurement[]>;
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

export interface WorklistEntry {
  readonly serviceRequestId: string;
  readonly patientId: string;
  readonly patientName: string;
  readonly birthDate?: string | undefined;
  readonly sex?: 'F' | 'M' | 'O' | undefined;
  readonly description: string;
  readonly accessionNumber: string;
}

/** A report version as answered: with the id of its FHIR DiagnosticReport. */
export type ReportView = Report & { readonly fhirDiagnosticReportId: string };

/** The reading physician's report on a study (server/studies.ts). */
export interface ReportService {
  /** Newest first; an unknown study (or another tenant's) is ECO3D_ERR_NOT_FOUND. */
  versions(tenantId: string, studyUid: string): Promise<readonly ReportView[]>;
  saveDraft(p: Principal, studyUid: string, text: ReportText): Promise<ReportView>;
  amend(p: Principal, studyUid: string): Promise<ReportView>;
  /** Signs the draft: the SR goes into the study and the DiagnosticReport becomes final (or amended). */
  sign(p: Principal, studyUid: string): Promise<ReportView>;
}

export interface AppContext {
  readonly log: Logger;
  readonly reports?: ReportService | undefined;
  /** The tenant's scheduled exams from the RIS (FHIR ServiceRequests), for the bedside to pick. */
  readonly worklist?: ((tenantId: string) => Promise<readonly WorklistEntry[]>) | undefined;
  /** More routes under this origin: DICOMweb (/dicom-web), FHIR (/fhir). */
  readonly plugins?: readonly ((app: FastifyInstance) => Promise<void>)[] | undefined;
  readonly auth: AuthService;
  readonly repo: ApiRepo;
  readonly teleop: TeleopGateway;
  readonly live: LiveSignaling;
  /** The built browser apps (viewer/dist). */
  readonly viewerDir: string;
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
const tokenBody = z
  .object({
    name: z.string().trim().min(1).max(100),
    scopes: z.array(z.string().max(100)).max(32),
    ttlSeconds: z.number().optional(),
    deviceId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'a device id').optional(),
    licenceId: z.string().min(1).max(64).optional(),
  })
  .strict();
const examBody = z
  .object({
    patientId: z.string().trim().min(1).max(64),
    patientName: z.string().trim().min(1).max(64),
    birthDate: z.string().regex(/^\d{4}-\d{2}-\d{2}$/, 'a date YYYY-MM-DD').optional(),
    sex: z.enum(['F', 'M', 'O']).optional(),
    description: z.string().trim().min(1).max(64),
    accessionNumber: z.string().trim().min(1).max(16).optional(),
  })
  .strict();
const reportBody = z
  .object({
    findings: z.string().max(20000),
    conclusion: z.string().max(4000).optional(),
    measurementIds: z.array(z.string().min(1).max(64)).max(200),
  })
  .strict();
const revealQuery = z.object({ reveal: z.enum(['true', 'false']).optional() });
const consentBody = z.object({ decision: z.enum(['yes', 'no', 'revoked']), patientId: z.string().trim().min(1).max(64).optional() }).strict();
const consentQuery = z.object({ patientId: z.string().trim().min(1).max(64).optional(), reveal: z.enum(['true', 'false']).optional() });
// Coordinates are checked by the store (finite, in range: ECO3D_ERR_NOT_FINITE), not here.
const measurementBody = z
  .object({
    kind: z.enum(['distance', 'area']),
    label: z.string().trim().min(1).max(64).optional(),
    plane: z.enum(['axial', 'sagittal', 'coronal']),
    pointsMm: z.array(z.object({ x: z.unknown(), y: z.unknown(), z: z.unknown() }).strict()).max(1000),
  })
  .strict();

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
const CLINICIANS: readonly Role[] = ['sonographer', 'physician', 'tenant-admin', 'platform-admin'];
/** Who may write a report's text; only a physician signs. */
const REPORT_WRITERS: readonly Role[] = ['sonographer', 'physician'];
const SIGNERS: readonly Role[] = ['physician'];
const CONSENT_RECORDERS: readonly Role[] = ['bedside', 'tenant-admin'];

/** A token as listed: never its secret nor its hash. */
const tokenView = (t: ApiToken, nowMs: number): Record<string, unknown> => ({
  ...t,
  status: t.revokedAtMs !== undefined ? 'revoked' : t.expiresAtMs <= nowMs ? 'expired' : 'active',
});

/** Patient identity as answered: masked unless `clear` (demo mode masks unless ?reveal=true). */
const examView = (e: Exam, clear: boolean): Exam & { masked: boolean } => ({ ...(clear ? e : maskExam(e)), masked: !clear });
const consentView = (c: ConsentRecord, clear: boolean): Record<string, unknown> => ({
  id: c.id,
  patientId: clear ? c.patientId : maskPatientId(c.patientId),
  examId: c.examId,
  purpose: c.purpose,
  decision: c.decision,
  recordedBy: c.recordedBy,
  recordedAtMs: c.recordedAtMs,
});

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
    if (a === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no acquisition ${req.params.uid}`);
    if (a.exam === null) return a;
    const clear = await patientDataInClear(req, p, a.exam.tenantId, `acquisition:${req.params.uid}`);
    return { ...a, exam: examView(a.exam, clear) };
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

  // --- scoped tokens, exams, research consent, measurements -------------------------------------

  const site = ctx.repo.site;

  /**
   * Whether patient identity goes out in clear: always, unless the server masks it (demo mode);
   * then only with ?reveal=true, and every reveal is audited before the answer leaves.
   */
  const patientDataInClear = async (req: FastifyRequest, p: Principal, tenantId: string, target: string): Promise<boolean> => {
    const { reveal } = parse(revealQuery, req.query);
    if (!site.maskPatientData) return true;
    if (reveal !== 'true') return false;
    await ctx.repo.audit({ tenantId, actor: p.username, action: 'patient.reveal', target, detail: { route: `${req.method} ${req.routeOptions.url ?? ''}` } });
    return true;
  };

  /** The exam routes act on this server's robot: its tenant's accounts (and platform admins) only. */
  const siteTenantOf = (p: Principal): string => {
    if (p.role !== 'platform-admin' && p.tenantId !== site.tenantId) {
      throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this robot belongs to tenant ${site.tenantId}`);
    }
    return site.tenantId;
  };

  app.post('/api/auth/tokens', async (req, reply) => {
    const p = requireRole(req.principal, ADMINS);
    const body = parse(tokenBody, req.body);
    const { token, record } = await ctx.auth.mintToken(p, body);
    // The token is in this answer only: never cached, never stored in clear.
    return reply
      .status(201)
      .header('cache-control', 'no-store')
      .send({
        id: record.id,
        token,
        name: record.name,
        scopes: record.scopes,
        tenantId: record.tenantId,
        expiresAtMs: record.expiresAtMs,
        ...(record.deviceId === undefined ? {} : { deviceId: record.deviceId }),
        ...(record.licenceId === undefined ? {} : { licenceId: record.licenceId }),
      });
  });

  app.get('/api/auth/tokens', async (req) => {
    const p = requireRole(req.principal, ADMINS);
    const now = Date.now();
    return { tokens: (await ctx.auth.listTokens(p)).map((t) => tokenView(t, now)) };
  });

  app.delete<{ Params: { id: string } }>('/api/auth/tokens/:id', async (req) => {
    const p = requireRole(req.principal, ADMINS);
    const { token } = await ctx.auth.revokeToken(p, req.params.id);
    // A revocation takes effect at once on the live streams too, not at the next request.
    ctx.live.cutTokens([token.id]);
    return tokenView(token, Date.now());
  });

  app.put('/api/exam', async (req, reply) => {
    const p = requireRole(req.principal, EVERYONE);
    const tenantId = siteTenantOf(p);
    const body = parse(examBody, req.body);
    const exam = await ctx.repo.startExam({ ...body, tenantId, deviceId: site.deviceId, startedBy: p.username, atMs: Date.now() });
    const clear = await patientDataInClear(req, p, tenantId, `exam:${exam.id}`);
    return reply.status(201).send(examView(exam, clear));
  });

  app.get('/api/exam', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const tenantId = siteTenantOf(p);
    const exam = await ctx.repo.currentExam(tenantId, site.deviceId);
    if (exam === null) return { exam: null };
    return { exam: examView(exam, await patientDataInClear(req, p, tenantId, `exam:${exam.id}`)) };
  });

  app.delete('/api/exam', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const tenantId = siteTenantOf(p);
    const exam = await ctx.repo.endExam({ tenantId, deviceId: site.deviceId, endedBy: p.username, atMs: Date.now() });
    if (exam === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `device ${site.deviceId} has no current exam`);
    return { exam: examView(exam, await patientDataInClear(req, p, tenantId, `exam:${exam.id}`)) };
  });

  /** The current exam of this robot when the principal is of its tenant, else null. */
  const currentExamFor = async (p: Principal): Promise<Exam | null> =>
    p.tenantId === site.tenantId ? ctx.repo.currentExam(site.tenantId, site.deviceId) : null;

  app.post('/api/consents', async (req, reply) => {
    const p = requireRole(req.principal, CONSENT_RECORDERS);
    const body = parse(consentBody, req.body);
    const exam = await currentExamFor(p);
    const patientId = body.patientId ?? exam?.patientId;
    if (patientId === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'no current exam: start one (PUT /api/exam) or name the patientId');
    const record = await ctx.repo.recordConsent({
      tenantId: p.tenantId,
      patientId,
      examId: exam !== null && exam.patientId === patientId ? exam.id : null,
      decision: body.decision,
      recordedBy: p.username,
      recordedByAccountId: p.accountId,
    });
    const clear = await patientDataInClear(req, p, p.tenantId, `consent:${record.id}`);
    return reply.status(201).send(consentView(record, clear));
  });

  app.get('/api/consents', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    const q = parse(consentQuery, req.query);
    const patientId = q.patientId ?? (await currentExamFor(p))?.patientId;
    if (patientId === undefined) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'no current exam: name the patientId');
    const consents = await ctx.repo.listConsents(p.tenantId, patientId);
    const clear = await patientDataInClear(req, p, p.tenantId, 'consents');
    return {
      patientId: clear ? patientId : maskPatientId(patientId),
      current: consents[0]?.decision ?? null,
      consents: consents.map((c) => consentView(c, clear)),
    };
  });

  app.post<{ Params: { uid: string } }>('/api/acquisitions/:uid/measurements', async (req, reply) => {
    const p = requireRole(req.principal, CLINICIANS);
    const body = parse(measurementBody, req.body);
    const m = await ctx.repo.addMeasurement({
      tenantId: p.tenantId,
      acquisitionUid: req.params.uid,
      kind: body.kind,
      label: body.label,
      plane: body.plane,
      pointsMm: body.pointsMm,
      createdBy: p.username,
      createdByAccountId: p.accountId,
    });
    return reply.status(201).send(m);
  });

  app.get<{ Params: { uid: string } }>('/api/acquisitions/:uid/measurements', async (req) => {
    const p = requireRole(req.principal, EVERYONE);
    return { measurements: await ctx.repo.listMeasurements(p.tenantId, req.params.uid) };
  });

  // --- worklist and reports -----------------------------------------------------------------------

  app.get('/api/worklist', async (req) => {
    const p = requireRole(req.principal, ['bedside', 'sonographer', 'tenant-admin']);
    const entries = ctx.worklist === undefined ? [] : await ctx.worklist(p.tenantId);
    await ctx.repo.audit({ tenantId: p.tenantId, actor: p.username, action: 'worklist.read', detail: { entries: entries.length } });
    return { entries };
  });

  const reports = (): ReportService => {
    if (ctx.reports === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', 'reporting is not enabled on this server');
    return ctx.reports;
  };
  app.get<{ Params: { study: string } }>('/api/studies/:study/report', async (req) => {
    const p = requireRole(req.principal, CLINICIANS);
    const versions = await reports().versions(p.tenantId, req.params.study);
    return { current: versions[0] ?? null, versions };
  });
  app.put<{ Params: { study: string } }>('/api/studies/:study/report', async (req) => {
    const p = requireRole(req.principal, REPORT_WRITERS);
    const body = parse(reportBody, req.body);
    return reports().saveDraft(p, req.params.study, { findings: body.findings, conclusion: body.conclusion ?? '', measurementIds: body.measurementIds });
  });
  app.post<{ Params: { study: string } }>('/api/studies/:study/report/sign', async (req) => reports().sign(requireRole(req.principal, SIGNERS), req.params.study));
  app.post<{ Params: { study: string } }>('/api/studies/:study/report/amend', async (req) => reports().amend(requireRole(req.principal, SIGNERS), req.params.study));

  for (const plugin of ctx.plugins ?? []) await plugin(app);

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

  app.get('/api/live', async (req) => {
    requireRole(req.principal, ADMINS);
    return ctx.live.stats();
  });

  // Live-stream signaling. Browsers come with their session cookie; plugins may instead name a
  // scoped token in their `join` (a browser WebSocket cannot set an Authorization header), so
  // this socket authenticates in its first message, not before the upgrade.
  app.route({
    method: 'GET',
    url: '/ws/live',
    handler: async (_req, reply) => reply.status(426).send({ code: 'ECO3D_ERR_BAD_REQUEST', message: 'WebSocket upgrade required' }),
    wsHandler: (socket, req) => ctx.live.attach(socket, req.principal),
  });

  // The browser apps (viewer/, built by Vite into viewer/dist). Their built scripts are public and
  // readable from any origin: the console's plugin frame is sandboxed (an opaque origin, issue 8)
  // and a browser fetches module scripts with CORS, credentials left out.
  const assetsDir = `${ctx.viewerDir.replace(/\/$/, '')}/assets/`;
  await app.register(fastifyStatic, {
    root: ctx.viewerDir,
    index: ['index.html'],
    setHeaders: (reply, path) => {
      if (path.startsWith(assetsDir)) void reply.header('access-control-allow-origin', '*');
    },
  });

  return app;
}

const publicPrincipal = (p: Principal): Record<string, string> => ({
  id: p.accountId,
  username: p.username,
  tenantId: p.tenantId,
  role: p.role,
});

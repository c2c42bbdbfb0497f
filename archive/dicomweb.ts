// DICOMweb (PS3.18) under /dicom-web, as a fastify plugin: STOW-RS, QIDO-RS and WADO-RS over the
// archive. It can be mounted more than once, each over its own archive: under another prefix,
// read-only (no STOW-RS routes: a POST is the app's 404), and with its own access check.
//
// Auth (built in): reading needs a clinician account (sonographer, physician, tenant-admin) or a
// scoped token with `dicomweb:read`; storing needs the same roles or `dicomweb:write`. Every
// answer is limited to the principal's tenant: another tenant's study is simply not there
// (404 / 204). Every access is audited (dicomweb.stow, dicomweb.qido, dicomweb.wado) before the
// answer goes out.
//
// An `access` option replaces that check (the research data lake's licences): it names the tenant
// read, the actor, and optionally the only studies that exist for the request. QIDO-RS then
// filters in SQL; WADO-RS of any other study answers the same 404 as a study that is not there,
// and is audited `denied`. Its audit detail (a licence id) goes into every entry.
//
// The principal is the one the app's onRequest hook puts on `req.principal`; the role check is
// done here rather than with server/auth.ts, which a layer may not import (ARCHITECTURE.md).
//
// Errors are `{code, message}` JSON (Eco3dError), except the STOW-RS response, whose body
// PS3.18 defines (a Store Instances Response Module, Annex I, in application/dicom+json).
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Eco3dError } from '../protocols/errors.ts';
import { attr, isUid, type DicomJsonDataset } from './dicom-json.ts';
import { failureReasonOf, FAILURE_REASON, type DicomArchive, type InstanceRecord, type StoreResult } from './dicom-store.ts';
import { MultipartRelatedParser, MultipartSyntaxError, newBoundary, parseMediaType } from './multipart.ts';
import { parseQido, type QidoLevel, type QidoScope } from './qido.ts';
import { pixelModuleOf, RenderPool, type FrameRenderer } from './render.ts';
import {
  bulkBody,
  checkFrames,
  frameGeometry,
  framesBody,
  instancesBody,
  negotiateInstances,
  negotiateJson,
  negotiateOctetStream,
  negotiateRendered,
  parseFrameList,
  readFrame,
  type MultipartBody,
} from './wado.ts';

export const DICOMWEB_READ_SCOPE = 'dicomweb:read';
export const DICOMWEB_WRITE_SCOPE = 'dicomweb:write';
/** The account roles that may use DICOMweb (read and store). */
export const DICOMWEB_ROLES: readonly string[] = ['sonographer', 'physician', 'tenant-admin'];

export const DICOMWEB_PREFIX = '/dicom-web';

/** What the plugin needs to know of `req.principal` (server/auth.ts's Principal fits). */
export interface DicomWebPrincipal {
  readonly username: string;
  readonly tenantId: string;
  readonly role: string;
  readonly kind: 'session' | 'token';
  readonly scopes: readonly string[] | null;
}

/** `<auditPrefix>.stow|qido|wado`; with the default prefix: dicomweb.stow, dicomweb.qido, dicomweb.wado. */
export type DicomWebAuditAction = `${string}.stow` | `${string}.qido` | `${string}.wado`;

export interface DicomWebAuditEntry {
  readonly tenantId: string;
  readonly actor: string;
  readonly action: DicomWebAuditAction;
  /** The path under the prefix, e.g. /studies/1.2.3/metadata. */
  readonly target?: string;
  readonly detail?: Record<string, unknown>;
  /** The access's auditContext (DicomWebAccess), as it returned it: never serialized here. */
  readonly context?: unknown;
}

/** Who a request acts as and what it may reach: the answer of DicomWebOptions.access. */
export interface DicomWebAccess {
  /** The archive tenant read (and, for STOW-RS, written). */
  readonly tenantId: string;
  /** Audited as the actor, and the STOW-RS source's actor. */
  readonly actor: string;
  /**
   * When set, the only studies that exist for this request: QIDO-RS finds no other, WADO-RS of
   * another is 404 (as for a study that is not there) and audited `denied`.
   */
  readonly studies?: ReadonlySet<string> | undefined;
  /** Merged into every audit entry's detail (e.g. a licence id); the plugin's own keys win. */
  readonly auditDetail?: Readonly<Record<string, unknown>> | undefined;
  /** The tenant the audit entries are written under. Default: tenantId. */
  readonly auditTenantId?: string | undefined;
  /** Handed back with each audit entry of the request (what the access check resolved, so the audit need not resolve it again). */
  readonly auditContext?: unknown;
}

/**
 * Decides a request: resolves to the access, or throws an Eco3dError (ECO3D_ERR_UNAUTHENTICATED,
 * ECO3D_ERR_FORBIDDEN) to refuse it. `principal` is req.principal (null when none). A refusal of
 * a known principal is audited (denied) under the principal's tenant and username.
 */
export type DicomWebAccessCheck = (req: FastifyRequest, principal: DicomWebPrincipal | null, need: 'read' | 'write') => Promise<DicomWebAccess>;

export interface DicomWebOptions {
  readonly archive: DicomArchive;
  /** Appends an audit entry (who, what, when: the store's clock). */
  readonly audit: (entry: DicomWebAuditEntry) => Promise<void>;
  /** Largest STOW-RS request body, bytes (413 beyond). */
  readonly maxStowBytes: number;
  /**
   * The service root as clients reach it, e.g. `https://eco3d.example/dicom-web`, for the
   * RetrieveURLs and BulkDataURIs. Default: the request's protocol and Host, plus the prefix.
   */
  readonly baseUrl?: string | undefined;
  /** Renders frames to PNG/JPEG. Default: a worker thread, terminated when the app closes. */
  readonly renderer?: FrameRenderer | undefined;
  /** A STOW-RS part larger than this goes to a file under <archive>/.incoming, not memory. Default 32 MiB. */
  readonly spoolThresholdBytes?: number | undefined;
  /** Where the routes are mounted, e.g. /lake/dicom-web. Default /dicom-web (DICOMWEB_PREFIX). */
  readonly prefix?: string | undefined;
  /** No STOW-RS routes (a POST is then the app's 404). Default false. */
  readonly readOnly?: boolean | undefined;
  /** Replaces the built-in role and scope check (see DicomWebAccessCheck). */
  readonly access?: DicomWebAccessCheck | undefined;
  /** The audit actions' prefix, e.g. lake.dicomweb gives lake.dicomweb.qido. Default dicomweb. */
  readonly auditPrefix?: string | undefined;
}

/** Registers the DICOMweb routes under the prefix (an encapsulated plugin: own body parser and error handler). */
export async function registerDicomWeb(app: FastifyInstance, options: DicomWebOptions): Promise<void> {
  if (!(Number.isSafeInteger(options.maxStowBytes) && options.maxStowBytes > 0)) throw new Eco3dError('ECO3D_ERR_CONFIG', `maxStowBytes must be a positive whole number, got ${options.maxStowBytes}`);
  const prefix = (options.prefix ?? DICOMWEB_PREFIX).replace(/\/+$/, '');
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(prefix)) throw new Eco3dError('ECO3D_ERR_CONFIG', `the DICOMweb prefix must be a path such as /dicom-web, got ${JSON.stringify(options.prefix)}`);
  const auditPrefix = options.auditPrefix ?? 'dicomweb';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(auditPrefix)) throw new Eco3dError('ECO3D_ERR_CONFIG', `auditPrefix must be a name such as lake.dicomweb, got ${JSON.stringify(auditPrefix)}`);
  await app.register(async (scope) => routes(scope, options, prefix, auditPrefix), { prefix });
}

function principalOf(req: FastifyRequest): DicomWebPrincipal | null {
  return (req as unknown as { principal?: DicomWebPrincipal | null }).principal ?? null;
}

/** The principal allowed to `need`, or why not: ECO3D_ERR_UNAUTHENTICATED, or ECO3D_ERR_FORBIDDEN with the principal. */
function check(req: FastifyRequest, need: 'read' | 'write'): { principal: DicomWebPrincipal } | { principal: DicomWebPrincipal | null; error: Eco3dError } {
  const p = principalOf(req);
  const scope = need === 'read' ? DICOMWEB_READ_SCOPE : DICOMWEB_WRITE_SCOPE;
  if (p === null) return { principal: null, error: new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login), or send a scoped token (Authorization: Bearer)') };
  if (p.kind === 'token') {
    return (p.scopes ?? []).includes(scope) ? { principal: p } : { principal: p, error: new Eco3dError('ECO3D_ERR_FORBIDDEN', `this token lacks the scope ${scope}`) };
  }
  if (!DICOMWEB_ROLES.includes(p.role)) return { principal: p, error: new Eco3dError('ECO3D_ERR_FORBIDDEN', `DICOMweb needs one of the roles: ${DICOMWEB_ROLES.join(', ')}`) };
  return { principal: p };
}

type Service = 'stow' | 'qido' | 'wado';

/** QIDO-RS or WADO-RS, by the path (for auditing a refused read). */
function serviceOf(req: FastifyRequest): 'qido' | 'wado' {
  const path = req.url.split('?')[0]!;
  return /\/(studies|series|instances)$/.test(path) ? 'qido' : 'wado';
}

function notThere(where: UidParams): Eco3dError {
  const what = where.instance !== undefined ? `SOP Instance ${where.instance}` : where.series !== undefined ? `series ${where.series}` : `study ${where.study}`;
  return new Eco3dError('ECO3D_ERR_NOT_FOUND', `no ${what}${where.instance !== undefined || where.series !== undefined ? ` in study ${where.study}` : ''}`);
}

function uid(name: string, v: string): string {
  if (!isUid(v)) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `${name} ${JSON.stringify(v)} is not a UID`);
  return v;
}

interface UidParams {
  study: string;
  series?: string;
  instance?: string;
}

async function routes(app: FastifyInstance, o: DicomWebOptions, prefix: string, auditPrefix: string): Promise<void> {
  const { archive } = o;
  const renderer = o.renderer ?? new RenderPool();
  if (o.renderer === undefined) app.addHook('onClose', async () => renderer.close());
  const spoolThreshold = o.spoolThresholdBytes ?? 32 * 1024 * 1024;
  const spoolDir = join(archive.root, '.incoming');
  // One process owns the data directory (store/lock.ts): what a previous one left spooling is
  // an orphan of a request that never completed.
  if (o.readOnly !== true) await rm(spoolDir, { recursive: true, force: true });

  // STOW-RS bodies are streamed by the handler, whatever their type (it answers 415 itself).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof Eco3dError) return reply.status(err.httpStatus).send(err.toJSON());
    const e = err as { statusCode?: number; message?: string };
    if (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500) {
      const code = e.statusCode === 413 ? 'ECO3D_ERR_PAYLOAD_TOO_LARGE' : e.statusCode === 415 ? 'ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE' : 'ECO3D_ERR_BAD_REQUEST';
      return reply.status(e.statusCode).send({ code, message: e.message ?? 'bad request' });
    }
    req.log.error({ err }, 'DICOMweb: unhandled error');
    return reply.status(500).send({ code: 'ECO3D_ERR_INTERNAL', message: 'internal error (logged)' });
  });

  const baseUrl = (req: FastifyRequest): string => (o.baseUrl !== undefined ? o.baseUrl.replace(/\/+$/, '') : `${req.protocol}://${req.host}${prefix}`);
  const audit = (a: DicomWebAccess, service: Service, req: FastifyRequest, detail: Record<string, unknown>): Promise<void> =>
    o.audit({
      tenantId: a.auditTenantId ?? a.tenantId,
      actor: a.actor,
      action: `${auditPrefix}.${service}`,
      target: req.url.split('?')[0]!.slice(prefix.length) || '/',
      detail: a.auditDetail === undefined ? detail : { ...a.auditDetail, ...detail },
      ...(a.auditContext === undefined ? {} : { context: a.auditContext }),
    });
  // A refused attempt by a known principal is audited too (denied: true): who tried what, when.
  const authorize = async (req: FastifyRequest, need: 'read' | 'write'): Promise<DicomWebAccess> => {
    const service = need === 'write' ? 'stow' : serviceOf(req);
    if (o.access !== undefined) {
      const principal = principalOf(req);
      try {
        return await o.access(req, principal, need);
      } catch (err) {
        if (principal !== null && err instanceof Eco3dError) await audit({ tenantId: principal.tenantId, actor: principal.username }, service, req, { denied: true, reason: err.message });
        throw err;
      }
    }
    const r = check(req, need);
    if (!('error' in r)) return { tenantId: r.principal.tenantId, actor: r.principal.username };
    if (r.principal !== null) await audit({ tenantId: r.principal.tenantId, actor: r.principal.username }, service, req, { denied: true, reason: r.error.message });
    throw r.error;
  };
  const outsideScope = (a: DicomWebAccess, study: string): boolean => a.studies !== undefined && !a.studies.has(study);
  const OUTSIDE_SCOPE = 'the study is not among the studies this access grants';
  const warn = (req: FastifyRequest, texts: readonly string[]): string[] =>
    // As PS3.18 writes them (`299 <service>: <text>`, unquoted), printable ASCII only.
    texts.slice(0, 20).map((t) => `299 ${baseUrl(req)}: ${t.replace(/[^\x20-\x7e]/g, '?')}`);

  // --- STOW-RS ------------------------------------------------------------------------------

  const stow = async (req: FastifyRequest, reply: FastifyReply, studyInUrl: string | undefined): Promise<FastifyReply> => {
    const p = await authorize(req, 'write');
    const ct = req.headers['content-type'];
    const mt = ct === undefined ? null : parseMediaType(ct);
    if (mt === null || mt.type !== 'multipart/related') {
      throw new Eco3dError('ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE', `STOW-RS takes multipart/related; type="application/dicom", got ${JSON.stringify(ct ?? '(no Content-Type)')}`);
    }
    const rootType = mt.params.get('type')?.toLowerCase();
    if (rootType !== undefined && rootType !== 'application/dicom') {
      throw new Eco3dError('ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE', `STOW-RS here takes Part-10 files (type="application/dicom"), not type="${rootType}"`);
    }
    const boundary = mt.params.get('boundary');
    if (boundary === undefined || boundary === '') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the multipart/related Content-Type has no boundary parameter');
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > o.maxStowBytes) {
      reply.header('connection', 'close');
      throw new Eco3dError('ECO3D_ERR_PAYLOAD_TOO_LARGE', `the request body has ${declared} bytes; this server takes at most ${o.maxStowBytes} per STOW-RS request`);
    }
    let parser: MultipartRelatedParser;
    try {
      parser = new MultipartRelatedParser(boundary);
    } catch (err) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', (err as Error).message);
    }

    const stored: StoreResult[] = [];
    const failed: Failure[] = [];
    let sink: PartSink | null = null;
    let rejected: string | null = null; // why the current part is refused before reading it
    let received = 0;
    let syntaxError: string | undefined;
    const source = { kind: 'stow', actor: p.actor } as const;
    const storeOptions = studyInUrl === undefined ? {} : { expectedStudyInstanceUid: studyInUrl };

    let part = 0; // the part being read, 1-based
    const finishPart = async (): Promise<void> => {
      if (rejected !== null) {
        failed.push({ part, reason: FAILURE_REASON.cannotUnderstand, message: rejected });
        rejected = null;
        return;
      }
      const s = sink!;
      sink = null;
      const body = await s.finish();
      try {
        const r =
          body.kind === 'memory'
            ? await archive.storeInstance(p.tenantId, body.bytes, source, storeOptions)
            : await archive.storeFile(p.tenantId, body.path, source, { move: true, ...storeOptions, ...(body.precomputed === undefined ? {} : { precomputed: body.precomputed }) });
        stored.push(r);
      } catch (err) {
        if (!(err instanceof Eco3dError) || err.code === 'ECO3D_ERR_INTERNAL') req.log.error({ err, part }, 'STOW-RS: storing a part failed');
        const d = err instanceof Eco3dError ? err.details : undefined;
        failed.push({
          part,
          reason: failureReasonOf(err),
          message: err instanceof Error ? err.message : String(err),
          ...(typeof d?.sopInstanceUid === 'string' ? { sopInstanceUid: d.sopInstanceUid } : {}),
          ...(typeof d?.sopClassUid === 'string' ? { sopClassUid: d.sopClassUid } : {}),
        });
      } finally {
        if (body.kind === 'file') await unlink(body.path).catch(() => undefined); // moved, or left for us
      }
    };

    const body = req.body;
    // Leaving the loop early (413, a bad body) must not destroy the request: that would reset the
    // socket under the answer. The unread rest is dropped with the connection (connection: close).
    const stream: AsyncIterable<Buffer> = body instanceof Readable ? body.iterator({ destroyOnReturn: false }) : Readable.from([]);
    try {
      try {
        for await (const chunk of stream) {
          received += chunk.length;
          if (received > o.maxStowBytes) {
            reply.header('connection', 'close');
            throw new Eco3dError(
              'ECO3D_ERR_PAYLOAD_TOO_LARGE',
              `the request body exceeds ${o.maxStowBytes} bytes, the most this server takes per STOW-RS request` + (stored.length > 0 ? ` (${stored.length} instances before it were stored)` : ''),
            );
          }
          for (const ev of parser.write(chunk)) {
            if (ev.kind === 'part-start') {
              part++;
              const partType = ev.headers.get('content-type');
              const pt = partType === undefined ? null : parseMediaType(partType);
              // A part without Content-Type is taken as the root type (application/dicom).
              if (partType !== undefined && pt?.type !== 'application/dicom') {
                rejected = `Content-Type ${JSON.stringify(partType)}: STOW-RS parts must be application/dicom (a DICOM Part-10 file)`;
              } else sink = new PartSink(spoolDir, spoolThreshold);
            } else if (ev.kind === 'part-data') {
              if (sink !== null) await sink.write(ev.data);
            } else {
              await finishPart();
            }
          }
        }
        parser.end();
      } catch (err) {
        if (!(err instanceof MultipartSyntaxError)) throw err;
        syntaxError = err.message;
      }
    } catch (err) {
      if (received < declared || !Number.isFinite(declared)) reply.header('connection', 'close');
      throw err;
    } finally {
      const unfinished: PartSink | null = sink;
      if (unfinished !== null) await unfinished.discard();
    }
    const total = stored.length + failed.length;
    if (syntaxError !== undefined && stored.length === 0) {
      throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `unparseable multipart/related body: ${syntaxError}`);
    }
    if (total === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'the multipart/related body has no parts');

    const base = baseUrl(req);
    const studies = [...new Set(stored.map((r) => r.studyInstanceUid))];
    const studyUrl = studyInUrl ?? (studies.length === 1 ? studies[0] : undefined);
    const response: DicomJsonDataset = { '00081190': attr('UR', studyUrl === undefined ? undefined : `${base}/studies/${studyUrl}`) };
    if (failed.length > 0) {
      response['00081198'] = {
        vr: 'SQ',
        Value: failed.map((f) => ({
          ...(f.sopClassUid === undefined ? {} : { '00081150': attr('UI', f.sopClassUid) }),
          ...(f.sopInstanceUid === undefined ? {} : { '00081155': attr('UI', f.sopInstanceUid) }),
          '00081197': attr('US', f.reason),
        })),
      };
    }
    if (stored.length > 0) {
      response['00081199'] = {
        vr: 'SQ',
        Value: stored.map((r) => ({
          '00081150': attr('UI', r.sopClassUid),
          '00081155': attr('UI', r.sopInstanceUid),
          '00081190': attr('UR', `${base}/studies/${r.studyInstanceUid}/series/${r.seriesInstanceUid}/instances/${r.sopInstanceUid}`),
        })),
      };
    }
    // PS3.18 10.5.3: 200 all stored, 202 some stored and some not, 409 none stored.
    const status = failed.length === 0 && syntaxError === undefined ? 200 : stored.length > 0 ? 202 : 409;
    const warnings = [
      ...failed.map((f) => `part ${f.part}: ${f.message} (failure reason ${f.reason.toString(16).toUpperCase().padStart(4, '0')}H)`),
      ...(syntaxError === undefined ? [] : [`the body is malformed after the stored parts: ${syntaxError}`]),
    ];
    await audit(p, 'stow', req, {
      stored: stored.filter((r) => r.status === 'stored').length,
      duplicates: stored.filter((r) => r.status === 'duplicate').length,
      failed: failed.length,
      bytes: received,
      studies,
      sopInstanceUids: stored.slice(0, 100).map((r) => r.sopInstanceUid),
    });
    if (warnings.length > 0) reply.header('warning', warn(req, warnings));
    return reply.status(status).type('application/dicom+json').send(JSON.stringify(response));
  };

  if (o.readOnly !== true) {
    const stowRoute = { bodyLimit: o.maxStowBytes };
    app.post('/studies', stowRoute, async (req, reply) => stow(req, reply, undefined));
    app.post<{ Params: { study: string } }>('/studies/:study', stowRoute, async (req, reply) => stow(req, reply, uid('study', req.params.study)));
  }

  // --- QIDO-RS ------------------------------------------------------------------------------

  const qido = async (req: FastifyRequest, reply: FastifyReply, level: QidoLevel, scope: QidoScope): Promise<FastifyReply> => {
    const p = await authorize(req, 'read');
    const query = req.query as Record<string, unknown>;
    negotiateJson(typeof query.accept === 'string' ? query.accept : req.headers.accept);
    const parsed = parseQido(query);
    const { results, more } = await archive.search(p.tenantId, level, scope, parsed, baseUrl(req), p.studies);
    const warnings = [...parsed.warnings, ...(more ? ['There are additional results that can be requested.'] : [])];
    await audit(p, 'qido', req, {
      level,
      keys: parsed.matches.map((m) => m.attribute.keyword),
      results: results.length,
      fuzzymatching: parsed.fuzzy,
      // Under a study outside the access: answered as an unknown one (204), recorded as refused.
      ...(scope.study !== undefined && outsideScope(p, scope.study) ? { denied: true, reason: OUTSIDE_SCOPE } : {}),
    });
    if (warnings.length > 0) reply.header('warning', warn(req, warnings));
    // PS3.18 10.6.3.1: 204 when nothing matches.
    if (results.length === 0) return reply.status(204).send();
    return reply.type('application/dicom+json').send(JSON.stringify(results));
  };

  app.get('/studies', async (req, reply) => qido(req, reply, 'study', {}));
  app.get('/series', async (req, reply) => qido(req, reply, 'series', {}));
  app.get('/instances', async (req, reply) => qido(req, reply, 'instance', {}));
  app.get<{ Params: { study: string } }>('/studies/:study/series', async (req, reply) => qido(req, reply, 'series', { study: uid('study', req.params.study) }));
  app.get<{ Params: { study: string } }>('/studies/:study/instances', async (req, reply) => qido(req, reply, 'instance', { study: uid('study', req.params.study) }));
  app.get<{ Params: { study: string; series: string } }>('/studies/:study/series/:series/instances', async (req, reply) =>
    qido(req, reply, 'instance', { study: uid('study', req.params.study), series: uid('series', req.params.series) }),
  );

  // --- WADO-RS ------------------------------------------------------------------------------

  const ids = (params: { study: string; series?: string; instance?: string }): UidParams => ({
    study: uid('study', params.study),
    ...(params.series === undefined ? {} : { series: uid('series', params.series) }),
    ...(params.instance === undefined ? {} : { instance: uid('instance', params.instance) }),
  });

  // Every WADO-RS answer that serves anything goes through here. A study outside the access is
  // refused at the very point where a missing one is found missing, so that whatever the request
  // (a bad frame list, an Accept), both get the same answer; the refusal is audited as denied.
  const find = async (req: FastifyRequest, p: DicomWebAccess, where: UidParams, metadata?: 'all' | 'pixel'): Promise<InstanceRecord[]> => {
    if (outsideScope(p, where.study)) {
      await audit(p, 'wado', req, { found: false, denied: true, reason: OUTSIDE_SCOPE });
      throw notThere(where);
    }
    const records = await archive.findInstances(p.tenantId, where, metadata === undefined ? {} : { metadata });
    if (records.length === 0) {
      await audit(p, 'wado', req, { found: false });
      throw notThere(where);
    }
    return records;
  };

  const instanceUrl = (base: string, r: InstanceRecord): string => `${base}/studies/${r.studyInstanceUid}/series/${r.seriesInstanceUid}/instances/${r.sopInstanceUid}`;

  const sendMultipart = (reply: FastifyReply, type: string, boundary: string, body: MultipartBody): FastifyReply =>
    reply
      .header('content-type', `multipart/related; type="${type}"; boundary=${boundary}`)
      .header('content-length', String(body.contentLength))
      .send(Readable.from(body.chunks));

  const retrieve = async (req: FastifyRequest<{ Params: { study: string; series?: string; instance?: string } }>, reply: FastifyReply): Promise<FastifyReply> => {
    const p = await authorize(req, 'read');
    const where = ids(req.params);
    const records = await find(req, p, where);
    const { single } = negotiateInstances(
      req.headers.accept,
      records.map((r) => r.transferSyntaxUid),
      where.instance !== undefined,
    );
    await audit(p, 'wado', req, { kind: 'instances', instances: records.length, bytes: records.reduce((s, r) => s + r.sizeBytes, 0) });
    if (single) {
      const r = records[0]!;
      return reply.header('content-type', `application/dicom; transfer-syntax=${r.transferSyntaxUid}`).header('content-length', String(r.sizeBytes)).send(createReadStream(r.path));
    }
    const boundary = newBoundary();
    return sendMultipart(reply, 'application/dicom', boundary, instancesBody(boundary, records));
  };
  app.get('/studies/:study', retrieve);
  app.get('/studies/:study/series/:series', retrieve);
  app.get('/studies/:study/series/:series/instances/:instance', retrieve);

  const metadata = async (req: FastifyRequest<{ Params: { study: string; series?: string; instance?: string } }>, reply: FastifyReply): Promise<FastifyReply> => {
    const p = await authorize(req, 'read');
    negotiateJson(req.headers.accept);
    const records = await find(req, p, ids(req.params), 'all');
    const base = baseUrl(req);
    const out = records.map((r) => {
      const md: DicomJsonDataset = { ...r.metadata };
      if (r.pixelData !== null) md['7FE00010'] = { vr: r.pixelData.vr, BulkDataURI: `${instanceUrl(base, r)}/bulkdata/7FE00010` };
      return md;
    });
    const body = JSON.stringify(out);
    await audit(p, 'wado', req, { kind: 'metadata', instances: records.length, bytes: Buffer.byteLength(body) });
    return reply.type('application/dicom+json').send(body);
  };
  app.get('/studies/:study/metadata', metadata);
  app.get('/studies/:study/series/:series/metadata', metadata);
  app.get('/studies/:study/series/:series/instances/:instance/metadata', metadata);

  app.get<{ Params: { study: string; series: string; instance: string; frames: string } }>('/studies/:study/series/:series/instances/:instance/frames/:frames', async (req, reply) => {
    const p = await authorize(req, 'read');
    const where = ids(req.params);
    const wanted = parseFrameList(req.params.frames);
    const r = (await find(req, p, where, 'pixel'))[0]!;
    const g = frameGeometry(r, samplesPerPixel(r));
    checkFrames(r, g, wanted);
    negotiateOctetStream(req.headers.accept);
    await audit(p, 'wado', req, { kind: 'frames', frames: wanted.length, bytes: wanted.length * g.frameBytes });
    const boundary = newBoundary();
    return sendMultipart(reply, 'application/octet-stream', boundary, framesBody(boundary, r, g, wanted));
  });

  const rendered = async (req: FastifyRequest<{ Params: { study: string; series: string; instance: string; frame?: string } }>, reply: FastifyReply): Promise<FastifyReply> => {
    const p = await authorize(req, 'read');
    const where = ids(req.params);
    const frame = req.params.frame === undefined ? 1 : parseFrameList(req.params.frame);
    if (Array.isArray(frame) && frame.length !== 1) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'a rendered frame is one frame number');
    const n = Array.isArray(frame) ? frame[0]! : frame;
    const format = negotiateRendered(req.headers.accept);
    const q = req.query as Record<string, unknown>;
    const quality = renderQuality(q.quality);
    const window = renderWindow(q.window);
    const r = (await find(req, p, where, 'pixel'))[0]!;
    const pixel = pixelModuleOf(r.metadata ?? {});
    const g = frameGeometry(r, pixel.samplesPerPixel);
    checkFrames(r, g, [n]);
    const bytes = await renderer.render({ pixel, frame: await readFrame(r.path, g, n), format, quality, window });
    await audit(p, 'wado', req, { kind: 'rendered', frame: n, format, bytes: bytes.length });
    return reply.type(format === 'png' ? 'image/png' : 'image/jpeg').send(bytes);
  };
  app.get('/studies/:study/series/:series/instances/:instance/rendered', rendered);
  app.get('/studies/:study/series/:series/instances/:instance/frames/:frame/rendered', rendered);

  app.get<{ Params: { study: string; series: string; instance: string; tag: string } }>('/studies/:study/series/:series/instances/:instance/bulkdata/:tag', async (req, reply) => {
    const p = await authorize(req, 'read');
    const where = ids(req.params);
    if (req.params.tag.toUpperCase() !== '7FE00010') throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no bulk data ${req.params.tag}: only Pixel Data (7FE00010) is served as bulk data`);
    const r = (await find(req, p, where))[0]!;
    const px = r.pixelData;
    if (px === null) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `SOP Instance ${r.sopInstanceUid} has no pixel data`);
    if (px.encapsulated || px.length === null) throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `SOP Instance ${r.sopInstanceUid} has compressed pixel data: retrieve the instance`);
    negotiateOctetStream(req.headers.accept);
    await audit(p, 'wado', req, { kind: 'bulkdata', tag: '7FE00010', bytes: px.length });
    const boundary = newBoundary();
    return sendMultipart(reply, 'application/octet-stream', boundary, bulkBody(boundary, r.path, px.offset, px.length));
  });
}

function samplesPerPixel(r: InstanceRecord): number {
  const v = r.metadata?.['00280002']?.Value?.[0];
  return typeof v === 'number' && v >= 1 ? v : 1;
}

function renderQuality(v: unknown): number {
  if (v === undefined) return 90;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d{1,3}$/.test(v) || n < 1 || n > 100) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `quality ${JSON.stringify(v)}: expected a whole number from 1 to 100`);
  return n;
}

/** PS3.18 8.3.5.1.4 `window=center,width,function` (linear only). */
function renderWindow(v: unknown): { center: number; width: number } | undefined {
  if (v === undefined) return undefined;
  const parts = typeof v === 'string' ? v.split(',') : [];
  const [c, w, fn] = parts;
  const center = Number(c);
  const width = Number(w);
  if (parts.length < 2 || parts.length > 3 || c === '' || w === '' || !Number.isFinite(center) || !Number.isFinite(width) || width < 1) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `window ${JSON.stringify(v)}: expected center,width[,function] with width ≥ 1`);
  }
  if (fn !== undefined && fn.toLowerCase() !== 'linear') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `window function ${JSON.stringify(fn)}: only linear is supported`);
  return { center, width };
}

interface Failure {
  readonly part: number;
  readonly reason: number;
  readonly message: string;
  readonly sopInstanceUid?: string;
  readonly sopClassUid?: string;
}

/**
 * One STOW-RS part's bytes: in memory up to a threshold, then in a file under the archive's
 * .incoming directory (same file system: the archive renames it into place). A spooled part's
 * data set hash is computed as it is written, so the archive need not read it again.
 */
class PartSink {
  readonly #dir: string;
  readonly #threshold: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #file: { fh: FileHandle; path: string; hash: Hash | null; from: number } | undefined;

  constructor(dir: string, thresholdBytes: number) {
    this.#dir = dir;
    this.#threshold = thresholdBytes;
  }

  async write(data: Buffer): Promise<void> {
    this.#size += data.length;
    if (this.#file !== undefined) {
      this.#file.hash?.update(data);
      await this.#file.fh.write(data);
      return;
    }
    this.#chunks.push(data);
    if (this.#size > this.#threshold) await this.#spill();
  }

  async #spill(): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const path = join(this.#dir, `${randomBytes(12).toString('hex')}.part`);
    const fh = await open(path, 'wx');
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [];
    const from = datasetOffsetFromGroupLength(all);
    const hash = from === null ? null : createHash('sha256').update(all.subarray(from));
    this.#file = { fh, path, hash, from: from ?? -1 };
    await fh.write(all);
  }

  async finish(): Promise<{ kind: 'memory'; bytes: Buffer } | { kind: 'file'; path: string; precomputed?: { sha256: string; fromOffset: number } }> {
    const f = this.#file;
    if (f === undefined) {
      const bytes = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
      this.#chunks = [];
      return { kind: 'memory', bytes };
    }
    this.#file = undefined;
    await f.fh.close();
    return f.hash === null ? { kind: 'file', path: f.path } : { kind: 'file', path: f.path, precomputed: { sha256: f.hash.digest('hex'), fromOffset: f.from } };
  }

  async discard(): Promise<void> {
    this.#chunks = [];
    const f = this.#file;
    this.#file = undefined;
    if (f !== undefined) {
      await f.fh.close().catch(() => undefined);
      await unlink(f.path).catch(() => undefined);
    }
  }
}

/** The data set offset a File Meta Information Group Length (0002,0000) announces, if it leads. */
function datasetOffsetFromGroupLength(b: Buffer): number | null {
  if (b.length < 144 || b.toString('latin1', 128, 132) !== 'DICM') return null;
  if (b.readUInt16LE(132) !== 0x0002 || b.readUInt16LE(134) !== 0x0000 || b.toString('latin1', 136, 138) !== 'UL' || b.readUInt16LE(138) !== 4) return null;
  return 144 + b.readUInt32LE(140);
}

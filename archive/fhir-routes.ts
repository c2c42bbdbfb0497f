// FHIR R4 REST at /fhir (https://hl7.org/fhir/R4/http.html): the fastify plugin.
//
// What it serves is one table, FHIR_RESOURCES: the routes are registered from it and
// GET /fhir/metadata (the CapabilityStatement) is built from it, so the statement cannot claim
// an interaction or search parameter that has no route, nor miss one that has.
//
// Every answer is `application/fhir+json` (or `application/json` when that is all the client
// accepts); every error is an OperationOutcome: 400 unparseable JSON or a wrong resourceType,
// 422 a resource that fails validation (both official validators, archive/fhir-validate.ts, plus
// our own checks), 404 an unknown id, 415 a body that is not FHIR JSON, 406 an Accept (or
// _format) we cannot serve. Reads and searches answer within the principal's tenant only.
import { createRequire } from 'node:module';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  Eco3dError,
  FHIR_JSON,
  buildCapabilityStatement,
  buildOperationOutcome,
  buildSearchBundle,
  dicomPatientIdOf,
  isFhirId,
  localReferenceId,
  type CapabilityResource,
  type Consent,
  type ErrorCode,
  type FhirIssue,
  type Patient,
  type Resource,
  type ServiceRequest,
} from '../protocols/index.ts';
import type { Database } from '../store/index.ts';
import {
  consentsForPatient,
  createFhirService,
  createPatient,
  createServiceRequest,
  fhirIssuesOf,
  invalidResource,
  readConsent,
  readFhirResource,
  recordFhirConsent,
  searchFhirResources,
  type FhirSearch,
  type FhirService,
  type StoredFhirResource,
  type TokenQuery,
} from './fhir-store.ts';
import { createFhirValidator, isBlocking, type FhirValidator } from './fhir-validate.ts';

/** The scopes a token needs (server/auth.ts TOKEN_SCOPES grants them). */
export const FHIR_SCOPES = { read: 'fhir:read', write: 'fhir:write' } as const;

/** Who is asking: server/auth.ts's Principal fits (archive/ does not import server/). */
export interface FhirPrincipal {
  readonly accountId: string;
  readonly username: string;
  readonly tenantId: string;
  readonly role: string;
  readonly kind: 'session' | 'token';
  /** A token's scopes; null for an account (its role decides). */
  readonly scopes: readonly string[] | null;
}

export interface FhirAuditEntry {
  readonly tenantId: string;
  /** The username (a token's `token:<id>`). */
  readonly actor: string;
  readonly action: 'fhir.read' | 'fhir.search' | 'fhir.create';
  readonly target?: string;
  readonly detail?: Record<string, unknown>;
}

export interface FhirPluginOptions {
  readonly db: Database;
  /** This endpoint's public base URL, e.g. `https://edge.hospital.example/fhir` (fullUrl, Location). */
  readonly baseUrl: string;
  /** Our DICOMweb base URL (the ImagingStudy Endpoint's address). */
  readonly dicomWebBaseUrl: string;
  /** Awaited before the answer leaves: a failed audit fails the request. */
  readonly audit: (entry: FhirAuditEntry) => Promise<void>;
  /** Default: both official validators, in a worker thread, loaded on the first POST. */
  readonly validator?: FhirValidator;
  /** Default: `req.principal` (set by the server's onRequest hook). */
  readonly principalOf?: (req: FastifyRequest) => FhirPrincipal | null;
  readonly nowMs?: () => number;
  /** Default `/fhir`. */
  readonly prefix?: string;
}

// ---------------------------------------------------------------------------------------------
// What we serve

const CLINICIANS = ['sonographer', 'physician', 'tenant-admin'] as const;
const WITH_BEDSIDE = [...CLINICIANS, 'bedside'] as const;

type ParamName = '_id' | 'identifier' | 'status' | 'patient';

interface ResourceSpec extends CapabilityResource {
  readonly type: 'Patient' | 'ServiceRequest' | 'ImagingStudy' | 'DiagnosticReport' | 'Observation' | 'Endpoint' | 'Consent';
  readonly readRoles: readonly string[];
  /** Accounts that may create (tokens need fhir:write). */
  readonly writeRoles: readonly string[];
  readonly searchParams: readonly (CapabilityResource['searchParams'][number] & { readonly name: ParamName })[];
}

const SP = 'http://hl7.org/fhir/SearchParameter/';
const ID_PARAM = { name: '_id', type: 'token', definition: `${SP}Resource-id` } as const;
const PATIENT_PARAM = { name: 'patient', type: 'reference', definition: `${SP}clinical-patient`, documentation: 'Patient/<id> or <id>' } as const;
const IDENTIFIER_PARAM = { name: 'identifier', type: 'token', definition: `${SP}clinical-identifier`, documentation: '[system|]value, or system|' } as const;

export const FHIR_RESOURCES: readonly ResourceSpec[] = [
  {
    type: 'Patient',
    interactions: ['read', 'vread', 'search-type', 'create'],
    searchParams: [ID_PARAM, { name: 'identifier', type: 'token', definition: `${SP}Patient-identifier`, documentation: '[system|]value, or system|' }],
    versioning: 'versioned',
    conditionalCreate: true,
    documentation: 'From the RIS. Needs an identifier (type MR preferred: the DICOM Patient ID) and a name.',
    readRoles: WITH_BEDSIDE,
    writeRoles: ['tenant-admin'],
  },
  {
    type: 'ServiceRequest',
    interactions: ['read', 'vread', 'search-type', 'create'],
    searchParams: [ID_PARAM, IDENTIFIER_PARAM, { name: 'status', type: 'token', definition: `${SP}ServiceRequest-status` }, PATIENT_PARAM],
    versioning: 'versioned',
    conditionalCreate: true,
    documentation:
      'The worklist: status active = open. Needs an identifier typed v2-0203 ACSN (the accession number, at most 16 characters, unique), ' +
      'code.text (the exam description) and a subject Patient of this server. Completed by the server when its study is archived.',
    readRoles: WITH_BEDSIDE,
    writeRoles: ['tenant-admin'],
  },
  {
    type: 'ImagingStudy',
    interactions: ['read', 'vread', 'search-type'],
    searchParams: [ID_PARAM, { ...IDENTIFIER_PARAM, documentation: 'urn:dicom:uid|urn:oid:<Study Instance UID>, or the accession number' }, PATIENT_PARAM],
    versioning: 'versioned',
    documentation: 'One per archived study; UIDs are the DICOM UIDs; the Endpoint is our DICOMweb (WADO-RS) base.',
    readRoles: CLINICIANS,
    writeRoles: [],
  },
  {
    type: 'DiagnosticReport',
    interactions: ['read', 'vread', 'search-type'],
    searchParams: [ID_PARAM, PATIENT_PARAM, { name: 'status', type: 'token', definition: `${SP}DiagnosticReport-status` }],
    versioning: 'versioned',
    documentation: 'preliminary until a physician signs, final once signed, amended for a signed amendment (each a version).',
    readRoles: CLINICIANS,
    writeRoles: [],
  },
  {
    type: 'Observation',
    interactions: ['read', 'vread', 'search-type'],
    searchParams: [ID_PARAM, PATIENT_PARAM],
    versioning: 'versioned',
    documentation: 'Caliper measurements: distance (mm) and area (mm2), derived from the ImagingStudy.',
    readRoles: CLINICIANS,
    writeRoles: [],
  },
  {
    type: 'Endpoint',
    interactions: ['read', 'vread'],
    searchParams: [],
    versioning: 'versioned',
    readRoles: CLINICIANS,
    writeRoles: [],
  },
  {
    type: 'Consent',
    interactions: ['read', 'search-type', 'create'],
    searchParams: [
      { ...PATIENT_PARAM, documentation: 'Patient/<id>, <id>, or with :identifier the patient identifier value (required)' },
      { name: 'status', type: 'token', definition: `${SP}Consent-status` },
    ],
    versioning: 'no-version',
    documentation:
      'Research consent, one Consent per recorded decision (append-only). The latest decision is active (provision permit or deny); ' +
      'earlier ones and revocations are inactive. POST active+permit/deny records yes/no; POST inactive revokes.',
    readRoles: WITH_BEDSIDE,
    writeRoles: ['tenant-admin', 'bedside'],
  },
];

// ---------------------------------------------------------------------------------------------
// Errors as OperationOutcome

const ISSUE_CODE: Partial<Record<ErrorCode, FhirIssue['code']>> = {
  ECO3D_ERR_BAD_REQUEST: 'invalid',
  ECO3D_ERR_INVALID_RESOURCE: 'invalid',
  ECO3D_ERR_UNAUTHENTICATED: 'login',
  ECO3D_ERR_FORBIDDEN: 'forbidden',
  ECO3D_ERR_NOT_FOUND: 'not-found',
  ECO3D_ERR_CONFLICT: 'conflict',
  ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE: 'not-supported',
  ECO3D_ERR_NOT_ACCEPTABLE: 'not-supported',
  ECO3D_ERR_PAYLOAD_TOO_LARGE: 'too-costly',
  ECO3D_ERR_TIMEOUT: 'timeout',
};

/** fastify's own client errors, by their code. */
const FASTIFY_ERRORS: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'ECO3D_ERR_PAYLOAD_TOO_LARGE',
};

function badRequest(diagnostics: string, code: FhirIssue['code'] = 'invalid', expression?: string): Eco3dError {
  const issue: FhirIssue = { severity: 'error', code, diagnostics, ...(expression === undefined ? {} : { expression: [expression] }) };
  return new Eco3dError('ECO3D_ERR_BAD_REQUEST', diagnostics, { details: { issues: [issue] } });
}

// ---------------------------------------------------------------------------------------------
// Content negotiation

type FhirMediaType = typeof FHIR_JSON | 'application/json';

/** The media type to answer in, from _format (which wins, as R4 says) or Accept. */
function negotiate(req: FastifyRequest): FhirMediaType {
  const rawFormat = (req.query as Record<string, unknown> | undefined)?._format;
  if (rawFormat !== undefined) {
    const format = typeof rawFormat === 'string' ? rawFormat : JSON.stringify(rawFormat);
    const f = format.split(';')[0]!.trim().toLowerCase();
    if (f === 'json' || f === FHIR_JSON || f === 'application/json+fhir') return FHIR_JSON;
    if (f === 'application/json') return 'application/json';
    throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `_format ${JSON.stringify(format)}: this server speaks JSON only (_format=json)`);
  }
  const accept = req.headers.accept;
  if (accept === undefined || accept.trim() === '') return FHIR_JSON;
  let best: { type: FhirMediaType; q: number } | undefined;
  for (const part of accept.split(',')) {
    const [rawType = '', ...params] = part.split(';').map((s) => s.trim());
    const qParam = params.find((p) => /^q=/i.test(p));
    const q = qParam === undefined ? 1 : Number(qParam.slice(2));
    if (!(q > 0)) continue;
    const t = rawType.toLowerCase();
    const type: FhirMediaType | undefined =
      t === FHIR_JSON || t === 'application/json+fhir' || t === 'application/*' || t === '*/*' ? FHIR_JSON : t === 'application/json' ? 'application/json' : undefined;
    if (type !== undefined && (best === undefined || q > best.q)) best = { type, q };
  }
  if (best === undefined) throw new Eco3dError('ECO3D_ERR_NOT_ACCEPTABLE', `cannot answer in ${accept}: this server answers ${FHIR_JSON} (or application/json)`);
  return best.type;
}

const BODY_TYPES = new Set([FHIR_JSON, 'application/json', 'application/json+fhir']);

/** A POSTed resource of `type`, parsed (400 when not JSON or not that type; 415 when not JSON at all). */
function parseResourceBody(req: FastifyRequest, type: string): Record<string, unknown> {
  const mediaType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (!BODY_TYPES.has(mediaType)) {
    throw new Eco3dError('ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE', `send the resource as ${FHIR_JSON} (or application/json), not ${mediaType === '' ? 'no Content-Type' : mediaType}`);
  }
  const raw = typeof req.body === 'string' ? req.body : Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch (err) {
    throw badRequest(`the body is not JSON: ${err instanceof Error ? err.message : String(err)}`, 'structure');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the body must be a JSON object (a FHIR resource)', 'structure');
  const rt = (body as { resourceType?: unknown }).resourceType;
  if (rt !== type) throw badRequest(`resourceType must be ${type} at this URL, got ${JSON.stringify(rt ?? null)}`, 'invalid', 'resourceType');
  return body as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Search parameters

interface ParsedSearch {
  readonly search: Omit<FhirSearch, 'count' | 'offset'>;
  /** Consent: the patient identifier value (patient:identifier). */
  readonly patientIdentifier?: string;
  readonly count: number;
  readonly offset: number;
  /** The parameters applied, for the self link and the audit. */
  readonly applied: [string, string][];
}

const COUNT_DEFAULT = 50;
const COUNT_MAX = 200;
const RESULT_PARAMS = new Set(['_count', '_offset', '_format', '_pretty', '_summary', '_elements', '_total', '_sort', '_include', '_revinclude']);

function splitList(v: string): string[] {
  // Commas separate alternatives; `\,` is a literal comma (R4 search escaping).
  return v
    .split(/(?<!\\),/)
    .map((s) => s.replace(/\\([,|$\\])/g, '$1').trim())
    .filter((s) => s !== '');
}

function tokenOf(v: string): TokenQuery {
  const i = v.search(/(?<!\\)\|/);
  if (i < 0) return { value: v.replace(/\\\|/g, '|') };
  const system = v.slice(0, i);
  const value = v.slice(i + 1).replace(/\\\|/g, '|');
  if (system === '') throw badRequest(`token |${value}: an identifier without a system is not searchable here; give system|value or value`, 'not-supported');
  return value === '' ? { system } : { system, value };
}

function parseSearch(spec: ResourceSpec, query: Record<string, unknown>, baseUrl: string, strict: boolean): ParsedSearch {
  const search: { -readonly [K in keyof FhirSearch]?: FhirSearch[K] } = {};
  const applied: [string, string][] = [];
  let patientIdentifier: string | undefined;
  let count = COUNT_DEFAULT;
  let offset = 0;
  for (const [key, rawValue] of Object.entries(query)) {
    if (Array.isArray(rawValue)) throw badRequest(`${key} is given ${rawValue.length} times: give each parameter once (a comma list means OR)`, 'not-supported');
    const value = String(rawValue);
    const [name = '', modifier] = key.split(':');
    if (name === '_count' || name === '_offset') {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) throw badRequest(`${name} is a whole number ≥ 0, got ${JSON.stringify(value)}`, 'value');
      if (name === '_count') count = Math.min(n, COUNT_MAX);
      else offset = n;
      continue;
    }
    if (RESULT_PARAMS.has(name)) {
      // Not supported (besides _count, _offset, _format): ignored, as R4 allows, unless strict.
      if (strict && name !== '_format' && name !== '_pretty') throw badRequest(`${name} is not supported`, 'not-supported');
      continue;
    }
    const param = spec.searchParams.find((p) => p.name === name);
    if (param === undefined) {
      if (strict) throw badRequest(`${spec.type} has no search parameter ${name} here (see /metadata)`, 'not-supported');
      continue;
    }
    const isPatientIdentifier = spec.type === 'Consent' && name === 'patient' && modifier === 'identifier';
    if (modifier !== undefined && !isPatientIdentifier) throw badRequest(`the modifier :${modifier} is not supported on ${name}`, 'not-supported');
    const values = splitList(value);
    if (values.length === 0) throw badRequest(`${key} has no value`, 'value');
    applied.push([key, value]);
    switch (param.name) {
      case '_id':
        search.ids = values;
        break;
      case 'identifier':
        search.identifiers = values.map(tokenOf);
        break;
      case 'status':
        search.statuses = values;
        break;
      case 'patient':
        if (isPatientIdentifier) {
          if (values.length !== 1) throw badRequest('patient:identifier takes one value', 'not-supported');
          patientIdentifier = tokenOf(values[0]!).value;
          if (patientIdentifier === undefined) throw badRequest('patient:identifier needs a value', 'value');
        } else {
          search.subjects = values.map((v) => {
            const id = localReferenceId({ reference: v.includes('/') ? v : `Patient/${v}` }, 'Patient', baseUrl);
            if (id === undefined) throw badRequest(`patient=${v}: not a Patient reference (Patient/<id> or <id>)`, 'value');
            return `Patient/${id}`;
          });
        }
        break;
    }
  }
  return { search, count, offset, applied, ...(patientIdentifier === undefined ? {} : { patientIdentifier }) };
}

// ---------------------------------------------------------------------------------------------
// The plugin

/** The default principalOf: what the server's onRequest hook put on the request. */
const requestPrincipal = (req: FastifyRequest): FhirPrincipal | null => (req as unknown as { principal?: FhirPrincipal | null }).principal ?? null;

function authorize(p: FhirPrincipal | null, roles: readonly string[], scope: string): FhirPrincipal {
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first, or send a scoped token (Authorization: Bearer)');
  if (p.kind === 'token') {
    if (!(p.scopes ?? []).includes(scope)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this token lacks the scope ${scope}`);
    return p;
  }
  if (!roles.includes(p.role)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs one of the roles ${roles.join(', ')} (or a token with ${scope})`);
  return p;
}

const packageVersion = (): string => {
  try {
    return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
};

/**
 * Registers FHIR R4 at `prefix` (default /fhir) in its own fastify scope (own body parsing and
 * error handler: OperationOutcome). Returns the service the server calls on completion.
 */
export async function registerFhir(app: FastifyInstance, opts: FhirPluginOptions): Promise<FhirService> {
  try {
    new URL(opts.baseUrl);
  } catch {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `the FHIR base URL must be absolute (it is in fullUrl and Location): ${JSON.stringify(opts.baseUrl)}`);
  }
  const baseUrl = opts.baseUrl.replace(/\/+$/, '');
  const now = opts.nowMs ?? Date.now;
  const validator = opts.validator ?? createFhirValidator();
  // A validator we made is ours to stop; one passed in is the caller's.
  if (opts.validator === undefined) app.addHook('onClose', () => validator.close());
  const principalOf = opts.principalOf ?? requestPrincipal;
  const service = createFhirService({ db: opts.db, dicomWebBaseUrl: opts.dicomWebBaseUrl, nowMs: now });
  const { db } = opts;
  const capability = buildCapabilityStatement({
    baseUrl,
    softwareVersion: packageVersion(),
    dateMs: now(),
    resources: FHIR_RESOURCES,
    securityDescription:
      `Authorization: Bearer (an Eco3D session or a scoped token). Reads: sonographer, physician, tenant-admin (bedside too for Patient, ServiceRequest, Consent) ` +
      `or a token with ${FHIR_SCOPES.read}; creates: tenant-admin or a token with ${FHIR_SCOPES.write} (bedside too for Consent). Answers are scoped to the caller's tenant.`,
  });

  await app.register(
    async (scope) => {
      // Bodies arrive as text: the handler answers unparseable JSON with a 400 OperationOutcome
      // and a wrong media type with 415, both in FHIR's terms rather than fastify's.
      scope.removeAllContentTypeParsers();
      scope.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));

      scope.decorateRequest('fhirMediaType', FHIR_JSON);
      scope.addHook('onRequest', async (req) => {
        (req as FastifyRequest & { fhirMediaType: FhirMediaType }).fhirMediaType = negotiate(req);
      });

      const send = (req: FastifyRequest, reply: FastifyReply, status: number, body: unknown): FastifyReply => {
        const type = (req as FastifyRequest & { fhirMediaType?: FhirMediaType }).fhirMediaType ?? FHIR_JSON;
        return reply.status(status).type(`${type}; charset=utf-8`).send(JSON.stringify(body));
      };

      scope.setErrorHandler((err, req, reply) => {
        let e: Eco3dError;
        if (err instanceof Eco3dError) e = err;
        else {
          const f = err as { statusCode?: number; code?: string; message?: string };
          const mapped = f.code === undefined ? undefined : FASTIFY_ERRORS[f.code];
          if (mapped !== undefined) e = new Eco3dError(mapped, f.message ?? 'bad request');
          else if (f.statusCode !== undefined && f.statusCode >= 400 && f.statusCode < 500) e = new Eco3dError('ECO3D_ERR_BAD_REQUEST', f.message ?? 'bad request');
          else {
            req.log.error({ err }, 'unhandled error in /fhir');
            e = new Eco3dError('ECO3D_ERR_INTERNAL', 'internal error (logged)');
          }
        }
        const issues = fhirIssuesOf(e) ?? [{ severity: 'error', code: ISSUE_CODE[e.code] ?? 'exception', diagnostics: e.message } as const];
        if (e.code === 'ECO3D_ERR_UNAUTHENTICATED') void reply.header('www-authenticate', 'Bearer');
        return send(req, reply, e.httpStatus, buildOperationOutcome(issues, { errorCode: e.code }));
      });
      scope.setNotFoundHandler((req, reply) =>
        send(
          req,
          reply,
          404,
          buildOperationOutcome(
            [{ severity: 'error', code: 'not-found', diagnostics: `no FHIR interaction ${req.method} ${req.url.split('?')[0]}: see ${baseUrl}/metadata for what this server supports` }],
            { errorCode: 'ECO3D_ERR_NOT_FOUND' },
          ),
        ),
      );

      const sendStored = (req: FastifyRequest, reply: FastifyReply, status: number, s: StoredFhirResource): FastifyReply => {
        void reply.header('etag', `W/"${s.versionId}"`).header('last-modified', new Date(s.lastUpdatedMs).toUTCString());
        return send(req, reply, status, s.resource);
      };

      const audit = (p: FhirPrincipal, action: FhirAuditEntry['action'], target: string, detail?: Record<string, unknown>): Promise<void> =>
        opts.audit({ tenantId: p.tenantId, actor: p.username, action, target, ...(detail === undefined ? {} : { detail }) });

      scope.get('/metadata', async (req, reply) => send(req, reply, 200, capability));

      for (const spec of FHIR_RESOURCES) {
        const type = spec.type;
        const canRead = (req: FastifyRequest): FhirPrincipal => authorize(principalOf(req), spec.readRoles, FHIR_SCOPES.read);
        const canWrite = (req: FastifyRequest): FhirPrincipal => authorize(principalOf(req), spec.writeRoles, FHIR_SCOPES.write);
        const notFound = (what: string): Eco3dError => new Eco3dError('ECO3D_ERR_NOT_FOUND', `no ${what}`);

        if (spec.interactions.includes('read')) {
          scope.get<{ Params: { id: string } }>(`/${type}/:id`, async (req, reply) => {
            const p = canRead(req);
            const { id } = req.params;
            if (type === 'Consent') {
              const c = isFhirId(id) ? await readConsent(db, p.tenantId, id) : undefined;
              if (c === undefined) throw notFound(`Consent/${id}`);
              await audit(p, 'fhir.read', `Consent/${id}`);
              return send(req, reply, 200, c);
            }
            const s = await readFhirResource(db, p.tenantId, type, id);
            if (s === undefined) throw notFound(`${type}/${id}`);
            await audit(p, 'fhir.read', `${type}/${id}`);
            return sendStored(req, reply, 200, s);
          });
        }

        if (spec.interactions.includes('vread')) {
          scope.get<{ Params: { id: string; vid: string } }>(`/${type}/:id/_history/:vid`, async (req, reply) => {
            const p = canRead(req);
            const { id, vid } = req.params;
            const version = /^[1-9][0-9]{0,8}$/.test(vid) ? Number(vid) : undefined;
            const s = version === undefined ? undefined : await readFhirResource(db, p.tenantId, type, id, version);
            if (s === undefined) throw notFound(`${type}/${id}/_history/${vid}`);
            await audit(p, 'fhir.read', `${type}/${id}/_history/${vid}`);
            return sendStored(req, reply, 200, s);
          });
        }

        if (spec.interactions.includes('search-type')) {
          const handler = async (req: FastifyRequest, reply: FastifyReply, query: Record<string, unknown>): Promise<FastifyReply> => {
            const p = canRead(req);
            const strict = /handling\s*=\s*strict/i.test(String(req.headers.prefer ?? ''));
            const parsed = parseSearch(spec, query, baseUrl, strict);
            let total: number;
            let resources: Resource[];
            if (type === 'Consent') ({ total, resources } = await searchConsents(p.tenantId, parsed));
            else {
              const found = await searchFhirResources(db, p.tenantId, type, { ...parsed.search, count: parsed.count, offset: parsed.offset });
              total = found.total;
              resources = found.resources.map((r) => r.resource);
            }
            const link = (offset: number): string => {
              const qs = new URLSearchParams(parsed.applied);
              qs.set('_count', String(parsed.count));
              if (offset > 0) qs.set('_offset', String(offset));
              return `${baseUrl}/${type}?${qs.toString()}`;
            };
            const bundle = buildSearchBundle({
              baseUrl,
              resources,
              total,
              selfUrl: link(parsed.offset),
              nextUrl: parsed.count > 0 && parsed.offset + parsed.count < total ? link(parsed.offset + parsed.count) : undefined,
              previousUrl: parsed.offset > 0 && parsed.count > 0 ? link(Math.max(0, parsed.offset - parsed.count)) : undefined,
            });
            await audit(p, 'fhir.search', type, { params: Object.fromEntries(parsed.applied), total });
            return send(req, reply, 200, bundle);
          };
          scope.get(`/${type}`, async (req, reply) => handler(req, reply, req.query as Record<string, unknown>));
          scope.post(`/${type}/_search`, async (req, reply) => {
            const mediaType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
            if (mediaType !== 'application/x-www-form-urlencoded') {
              throw new Eco3dError('ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE', 'POST _search takes application/x-www-form-urlencoded parameters');
            }
            const merged: Record<string, unknown> = { ...(req.query as Record<string, unknown>) };
            for (const [k, v] of new URLSearchParams(typeof req.body === 'string' ? req.body : '')) {
              const prev = merged[k];
              merged[k] = prev === undefined ? v : Array.isArray(prev) ? [...(prev as unknown[]), v] : [prev, v];
            }
            return handler(req, reply, merged);
          });
        }

        if (spec.interactions.includes('create')) {
          scope.post(`/${type}`, async (req, reply) => {
            const p = canWrite(req);
            const body = parseResourceBody(req, type);
            // R4 create: the server assigns id and meta; a client's are ignored.
            const { id: _id, meta: _meta, ...resource } = body;
            const issues = await validator.validate(resource);
            const blocking = issues.filter(isBlocking);
            if (blocking.length > 0) throw invalidResource(blocking);
            const nowMs = now();
            if (type === 'Consent') {
              const consent = await recordFhirConsent(db, p.tenantId, resource as unknown as Consent, { username: p.username, accountId: p.accountId });
              await audit(p, 'fhir.create', `Consent/${consent.id ?? ''}`, { decision: consent.status === 'inactive' ? 'revoked' : consent.provision?.type });
              void reply.header('location', `${baseUrl}/Consent/${consent.id ?? ''}`);
              return send(req, reply, 201, consent);
            }
            const ifNoneExist = conditionalCriteria(spec, req.headers['if-none-exist'], baseUrl);
            const result =
              type === 'Patient'
                ? await createPatient(db, p.tenantId, resource as unknown as Patient, { nowMs, ifNoneExist })
                : await createServiceRequest(db, p.tenantId, resource as unknown as ServiceRequest, { nowMs, ifNoneExist });
            const s = result.stored;
            if (!result.created) return sendStored(req, reply, 200, s);
            await audit(p, 'fhir.create', `${type}/${s.id}`);
            void reply.header('location', `${baseUrl}/${type}/${s.id}/_history/${s.versionId}`);
            return sendStored(req, reply, 201, s);
          });
        }
      }

      /** Consent search: rendered from the consents table for one patient (the parameter is required). */
      async function searchConsents(tenantId: string, parsed: ParsedSearch): Promise<{ total: number; resources: Resource[] }> {
        let patientIds: string[];
        if (parsed.patientIdentifier !== undefined) patientIds = [parsed.patientIdentifier];
        else if (parsed.search.subjects !== undefined) {
          patientIds = [];
          for (const ref of parsed.search.subjects) {
            const patient = await readFhirResource<Patient>(db, tenantId, 'Patient', ref.slice('Patient/'.length));
            const pid = patient === undefined ? undefined : dicomPatientIdOf(patient.resource);
            if (pid !== undefined) patientIds.push(pid.value);
          }
        } else throw badRequest('a Consent search needs patient (Patient/<id>) or patient:identifier (the patient id)', 'required');
        const all: Consent[] = [];
        for (const pid of new Set(patientIds)) all.push(...(await consentsForPatient(db, tenantId, pid)));
        const statuses = parsed.search.statuses;
        const matching = statuses === undefined ? all : all.filter((c) => statuses.includes(c.status));
        return { total: matching.length, resources: matching.slice(parsed.offset, parsed.offset + parsed.count) };
      }
    },
    { prefix: opts.prefix ?? '/fhir' },
  );
  return service;
}

/** If-None-Exist (`identifier=…` in query form) as search criteria; undefined when absent. */
function conditionalCriteria(spec: ResourceSpec, header: string | string[] | undefined, baseUrl: string): Omit<FhirSearch, 'count' | 'offset'> | undefined {
  if (header === undefined) return undefined;
  const text = Array.isArray(header) ? header.join('&') : header;
  const query: Record<string, unknown> = {};
  for (const [k, v] of new URLSearchParams(text.replace(/^.*\?/, ''))) {
    const prev = query[k];
    query[k] = prev === undefined ? v : [prev, v];
  }
  const parsed = parseSearch(spec, query, baseUrl, true);
  if (parsed.applied.length === 0) throw badRequest('If-None-Exist names no search parameter of this type', 'invalid');
  return parsed.search;
}


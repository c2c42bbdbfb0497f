// fetch wrappers for the product's JSON API. Every failure becomes an ApiError carrying the
// server's stable {code, message} (or a local code for network trouble), which the pages show.

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export type Role = 'platform-admin' | 'tenant-admin' | 'sonographer' | 'bedside' | 'physician';

export interface Account {
  readonly id: string;
  readonly username: string;
  readonly tenantId: string;
  readonly role: Role;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** Every JSON API call gives up after this long (the house rule: every network call has a timeout). */
export const API_TIMEOUT_MS = 30_000;

export async function api<T>(method: Method, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch (e) {
    if (e instanceof DOMException && e.name === 'TimeoutError') throw new ApiError('ECO3D_ERR_TIMEOUT', `${method} ${path}: no answer within ${API_TIMEOUT_MS / 1000} s`, 504);
    throw new ApiError('ECO3D_ERR_NETWORK', `cannot reach the server (${(e as Error).message})`, 0);
  }
  const text = await res.text();
  let data: unknown = null;
  if (text !== '') {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const d = (data ?? {}) as { code?: unknown; message?: unknown };
    throw new ApiError(
      typeof d.code === 'string' ? d.code : `HTTP_${res.status}`,
      typeof d.message === 'string' ? d.message : res.statusText || 'request failed',
      res.status,
    );
  }
  return data as T;
}

export const login = (username: string, password: string): Promise<{ token: string; account: Account }> =>
  api('POST', '/api/auth/login', { username, password });

export const logout = (): Promise<unknown> => api('POST', '/api/auth/logout');

/** The signed-in account, or null when not signed in. */
export async function me(): Promise<Account | null> {
  try {
    return await api<Account>('GET', '/api/auth/me');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.code === 'ECO3D_ERR_UNAUTHENTICATED')) return null;
    throw e;
  }
}

export const isAdmin = (r: Role): boolean => r === 'platform-admin' || r === 'tenant-admin';
export const canOperate = (r: Role): boolean => r === 'sonographer' || isAdmin(r);
/** Who opens the study browser: the reading physician, the sonographers, the admins. */
export const canReadStudies = (r: Role): boolean => r === 'physician' || canOperate(r);

/**
 * For pages that need a signed-in account: the account, or a redirect to the login page that
 * comes back here afterwards.
 */
export async function requireAccount(allowed: (r: Role) => boolean): Promise<Account> {
  const a = await me();
  if (a === null) {
    const next = location.pathname.split('/').pop() ?? '';
    location.replace(`index.html?next=${encodeURIComponent(next + location.search)}`);
    throw new ApiError('ECO3D_ERR_UNAUTHENTICATED', 'not signed in', 401);
  }
  if (!allowed(a.role)) throw new ApiError('ECO3D_ERR_FORBIDDEN', `this page is not for the role ${a.role}`, 403);
  return a;
}

// ---- scoped tokens (admins) -------------------------------------------------------------------

export interface ScopedToken {
  readonly id: string;
  readonly name: string;
  readonly scopes: readonly string[];
  readonly createdAtMs?: number;
  readonly expiresAtMs?: number;
  readonly revokedAtMs?: number | null;
  readonly [k: string]: unknown;
}

export const mintToken = (name: string, scopes: readonly string[], ttlSeconds: number): Promise<{ token: string } & Partial<ScopedToken>> =>
  api('POST', '/api/auth/tokens', { name, scopes, ttlSeconds });

export async function listTokens(): Promise<ScopedToken[]> {
  const r = await api<unknown>('GET', '/api/auth/tokens');
  return listOf<ScopedToken>(r, 'tokens');
}

export const revokeToken = (id: string): Promise<unknown> => api('DELETE', `/api/auth/tokens/${encodeURIComponent(id)}`);

// ---- exam, consent ----------------------------------------------------------------------------

export interface Exam {
  readonly id?: string;
  /** The server masked the identifiers (demo mode); `?reveal=true` (audited) gets them in clear. */
  readonly masked?: boolean;
  readonly patientId: string;
  readonly patientName: string;
  readonly birthDate?: string | null;
  readonly sex?: string | null;
  readonly description: string;
  readonly accessionNumber?: string | null;
  readonly [k: string]: unknown;
}

export interface ExamInput {
  patientId: string;
  patientName: string;
  birthDate?: string;
  sex?: string;
  description: string;
  accessionNumber?: string;
}

export async function getExam(reveal = false): Promise<Exam | null> {
  const r = await api<{ exam?: Exam | null } | null>('GET', reveal ? '/api/exam?reveal=true' : '/api/exam');
  return r?.exam ?? null;
}

export async function putExam(e: ExamInput): Promise<Exam | null> {
  const r = await api<{ exam?: Exam | null } | Exam | null>('PUT', '/api/exam', e);
  if (r !== null && 'exam' in r) return (r.exam ?? null) as Exam | null;
  return r as Exam | null;
}

export type ConsentDecision = 'yes' | 'no' | 'revoked';

export interface ConsentRecord {
  readonly decision: string;
  readonly by: string | null;
  readonly atMs: number | null;
}

/** Reads a consent record whatever the server names its fields (decision, actor/by, atMs/at…). */
function toConsent(v: unknown): ConsentRecord | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.decision !== 'string') return null;
  const by = [o.by, o.actor, o.recordedBy, o.username, o.createdBy].find((x): x is string => typeof x === 'string');
  const atRaw = [o.atMs, o.recordedAtMs, o.createdAtMs, o.at, o.recordedAt, o.createdAt, o.decidedAt].find((x) => typeof x === 'number' || typeof x === 'string');
  const atMs = typeof atRaw === 'number' ? atRaw : typeof atRaw === 'string' ? Date.parse(atRaw) : NaN;
  return { decision: o.decision, by: by ?? null, atMs: Number.isFinite(atMs) ? atMs : null };
}

export async function getConsent(): Promise<ConsentRecord | null> {
  const r = await api<unknown>('GET', '/api/consents');
  if (typeof r !== 'object' || r === null) return null;
  if (Array.isArray(r)) return toConsent(r[0]);
  // {patientId, current: decision | null, consents: [newest first]}
  const o = r as Record<string, unknown>;
  if (Array.isArray(o.consents) && o.consents.length > 0) return toConsent(o.consents[0]);
  if (typeof o.current === 'string') return { decision: o.current, by: null, atMs: null };
  if (typeof o.current === 'object' && o.current !== null) return toConsent(o.current);
  return toConsent(r);
}

export const postConsent = (decision: ConsentDecision): Promise<unknown> => api('POST', '/api/consents', { decision });

// ---- measurements -----------------------------------------------------------------------------

export type Plane = 'axial' | 'sagittal' | 'coronal';

export interface MeasurementInput {
  kind: 'distance' | 'area';
  plane: Plane;
  pointsMm: { x: number; y: number; z: number }[];
  label?: string;
}

export interface Measurement extends MeasurementInput {
  readonly id?: string;
  readonly valueMm?: number;
  readonly valueMm2?: number;
  readonly value?: number;
  readonly createdBy?: string;
  readonly [k: string]: unknown;
}

export const saveMeasurement = (uid: string, m: MeasurementInput): Promise<Measurement> =>
  api('POST', `/api/acquisitions/${encodeURIComponent(uid)}/measurements`, m);

export async function listMeasurements(uid: string): Promise<Measurement[]> {
  const r = await api<unknown>('GET', `/api/acquisitions/${encodeURIComponent(uid)}/measurements`);
  return listOf<Measurement>(r, 'measurements');
}

/** `[...]` or `{<key>: [...]}` → the array. */
function listOf<T>(r: unknown, key: string): T[] {
  if (Array.isArray(r)) return r as T[];
  if (typeof r === 'object' && r !== null && Array.isArray((r as Record<string, unknown>)[key])) return (r as Record<string, T[]>)[key]!;
  return [];
}

// ---- reports (GET/PUT /api/studies/:studyUid/report, …/sign, …/amend) -----------------------

/** preliminary: a draft; final: signed; amended: a signed version that replaces an earlier signed one. */
export type ReportStatus = 'preliminary' | 'final' | 'amended';

export interface Report {
  readonly id: string;
  readonly studyInstanceUid: string;
  readonly acquisitionUid: string | null;
  readonly version: number;
  readonly status: ReportStatus;
  readonly findings: string;
  readonly conclusion?: string | null;
  readonly measurementIds: readonly string[];
  readonly authoredBy: string;
  readonly updatedAtMs: number;
  readonly signedBy?: string | null;
  readonly signedAtMs?: number | null;
  readonly replacesId?: string | null;
  readonly srSopInstanceUid?: string | null;
  readonly fhirDiagnosticReportId?: string | null;
}

export interface ReportInput {
  findings: string;
  conclusion?: string;
  measurementIds: string[];
}

export interface ReportHistory {
  readonly current: Report | null;
  /** Newest first. */
  readonly versions: readonly Report[];
}

/** Signed: the version is final or amended (a draft is preliminary). */
export const isSigned = (r: Report): boolean => r.status !== 'preliminary';

const reportPath = (studyUid: string): string => `/api/studies/${encodeURIComponent(studyUid)}/report`;

export async function getReport(studyUid: string): Promise<ReportHistory> {
  const r = await api<Partial<ReportHistory> | null>('GET', reportPath(studyUid));
  return { current: r?.current ?? null, versions: r?.versions ?? [] };
}

/** Creates or updates the draft (409 ECO3D_ERR_CONFLICT when the current version is signed: amend first). */
export const saveReportDraft = (studyUid: string, input: ReportInput): Promise<Report> => api('PUT', reportPath(studyUid), input);

/** Signs the draft (physicians only; 409 when there is no draft). */
export const signReport = (studyUid: string): Promise<Report> => api('POST', `${reportPath(studyUid)}/sign`);

/** A new draft version copying the signed one (physicians only). */
export const amendReport = (studyUid: string): Promise<Report> => api('POST', `${reportPath(studyUid)}/amend`);

// The lake's HTTP API under /api/lake (described in openapi.ts), and the access check of the
// de-identified DICOMweb at /lake/dicom-web (mounted by server/ with archive/'s plugin).
//
// Who may do what:
// - a hospital's tenant admin: its lake settings, its intake decisions, re-identification of its
//   own pseudonyms, erasure requests for its own patients;
// - the platform admin (the lake's curator): the catalog, cohorts, labels, datasets and their
//   versions, partners, licences, the access log;
// - a physician or tenant admin of the hospital a case came from: labels on that case;
// - a partner's tenant admin: its licences, and lake tokens for them (POST /api/auth/tokens with
//   scopes ["lake:read"] and the licenceId);
// - a lake token: its licence's version (manifest, zip export, DICOMweb), nothing else.
// Every change and every re-identification is audited; every data access is in lake_access_log.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Eco3dError, parseWith } from '../protocols/index.ts';
import type { Database } from '../store/index.ts';
import { addLabel, caseSourceTenant, createDataset, getCase, getDataset, getVersion, listDatasets, parseCohort, queryCohort, releaseVersion, versionWithdrawals } from './catalog.ts';
import type { LakeKeys } from './keys.ts';
import { getLicence, grantLicence, LAKE_READ_SCOPE, licenceScope, listAccess, listLicences, logAccess, putPartner, revokeLicence, type LicenceScope, type RecordCharge } from './licences.ts';
import { erasePatient, intakeSummary, listIntake, type ErasableArchive } from './privacy.ts';
import { reidentify } from './pseudonyms.ts';
import { getLakeSettings, putLakeSettings } from './settings.ts';
import { zipSizeBytes, zipStream } from './zip.ts';

/** The parts of server/auth.ts's Principal the lake reads. */
export interface LakePrincipal {
  readonly kind: 'session' | 'token';
  readonly role: string;
  readonly tenantId: string;
  readonly username: string;
  readonly scopes: readonly string[] | null;
  readonly licenceId?: string;
}

export interface LakeRoutesOptions {
  readonly db: Database;
  readonly keys: LakeKeys;
  /** The hospital's archive (erasure deletes the patient's studies there). */
  readonly archive: ErasableArchive;
  /** The lake's instance files, by lake SOP Instance UID (the zip export reads them). */
  readonly lakeInstanceFile: (sopInstanceUid: string) => Promise<string | null>;
  readonly recordCharge: RecordCharge;
  readonly audit: (e: { tenantId: string; actor: string; action: string; target?: string; detail?: Record<string, unknown> }) => Promise<void>;
  readonly log: { warn(o: object, msg: string): void };
  readonly nowMs?: () => number;
}

const principalOf = (req: FastifyRequest): LakePrincipal | null => (req as unknown as { principal?: LakePrincipal | null }).principal ?? null;

function session(req: FastifyRequest, roles: readonly string[]): LakePrincipal {
  const p = principalOf(req);
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login)');
  if (p.kind !== 'session' || !roles.includes(p.role)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs one of the roles: ${roles.join(', ')}`);
  return p;
}

const CURATOR = ['platform-admin'];
const HOSPITAL_ADMIN = ['tenant-admin'];

const limitQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(100) });
const cohortBody = z.strictObject({ cohort: z.unknown().optional(), limit: z.number().int().min(0).max(10_000).default(100), offset: z.number().int().min(0).default(0) });
const releaseBody = z.strictObject({ k: z.number().int().min(2).max(1000).optional() });
const reidentifyBody = z.strictObject({ pseudonymId: z.string().regex(/^P-[0-9a-f]{20}$/, 'a pseudonym (P-…)'), reason: z.string().trim().min(1).max(500) });
const accessQuery = z.strictObject({ licence: z.string().max(64).optional(), partner: z.string().max(63).optional(), flagged: z.enum(['true', 'false']).optional(), limit: z.coerce.number().int().min(1).max(10_000).default(200) });

/**
 * The scope a lake token may reach now, or why not (UNAUTHENTICATED / FORBIDDEN). Shared by the
 * routes below and the /lake/dicom-web mount.
 */
export async function lakeTokenScope(db: Database, p: LakePrincipal | null, nowMs: number): Promise<LicenceScope> {
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'send a lake token (Authorization: Bearer), minted for a licence');
  if (p.kind !== 'token' || !(p.scopes ?? []).includes(LAKE_READ_SCOPE)) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `lake data is read with a token holding ${LAKE_READ_SCOPE}, bound to a licence`);
  return licenceScope(db, p.licenceId, p.tenantId, nowMs);
}

export async function registerLake(app: FastifyInstance, o: LakeRoutesOptions): Promise<void> {
  const { db } = o;
  const now = o.nowMs ?? Date.now;
  const audit = (p: LakePrincipal, action: string, target?: string, detail?: Record<string, unknown>): Promise<void> =>
    o.audit({ tenantId: p.tenantId, actor: p.username, action, ...(target === undefined ? {} : { target }), ...(detail === undefined ? {} : { detail }) });

  // --- The hospital's side ------------------------------------------------------------------

  app.get('/api/lake/settings', async (req) => getLakeSettings(db, session(req, HOSPITAL_ADMIN).tenantId));
  app.put('/api/lake/settings', async (req) => {
    const p = session(req, HOSPITAL_ADMIN);
    const s = await putLakeSettings(db, p.tenantId, req.body, p.username);
    await audit(p, 'lake.settings', p.tenantId, { settings: s });
    return s;
  });

  app.get('/api/lake/intake', async (req) => {
    const p = session(req, HOSPITAL_ADMIN);
    const { limit } = parseWith(limitQuery, req.query, 'query');
    return { summary: await intakeSummary(db, p.tenantId), decisions: await listIntake(db, p.tenantId, limit) };
  });

  app.post('/api/lake/reidentify', async (req) => {
    const p = session(req, HOSPITAL_ADMIN);
    const b = parseWith(reidentifyBody, req.body, 'body');
    const patientId = await reidentify(db, o.keys, p.tenantId, b.pseudonymId);
    // Audited whether or not it resolves: the attempt itself is what the audit must show.
    await audit(p, 'lake.reidentify', b.pseudonymId, { reason: b.reason, found: patientId !== undefined });
    if (patientId === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no pseudonym ${b.pseudonymId} in tenant ${p.tenantId}`);
    return { pseudonymId: b.pseudonymId, patientId };
  });

  app.post('/api/lake/erasure', async (req) => {
    const p = session(req, HOSPITAL_ADMIN);
    const r = await erasePatient(db, o.keys, o.archive, p.tenantId, req.body, p.username);
    await audit(p, 'lake.erasure', r.id, { studiesDeleted: r.studiesDeleted, instancesDeleted: r.instancesDeleted, casesWithdrawn: r.casesWithdrawn, pseudonymDeleted: r.pseudonymDeleted });
    return r;
  });

  // --- The catalog (curator) ----------------------------------------------------------------

  app.post('/api/lake/cohort', async (req) => {
    session(req, CURATOR);
    const b = parseWith(cohortBody, req.body ?? {}, 'body');
    return queryCohort(db, parseCohort(b.cohort), b.limit, b.offset);
  });

  app.get<{ Params: { id: string } }>('/api/lake/cases/:id', async (req) => {
    session(req, CURATOR);
    const c = await getCase(db, req.params.id);
    if (c === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no case ${req.params.id}`);
    return c;
  });

  app.post<{ Params: { id: string } }>('/api/lake/cases/:id/labels', async (req, reply) => {
    const p = session(req, ['platform-admin', 'physician', 'tenant-admin']);
    if (p.role !== 'platform-admin') {
      // An annotator of the hospital the case came from.
      const source = await caseSourceTenant(db, req.params.id);
      if (source === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no case ${req.params.id}`);
      if (source !== p.tenantId) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'labels are added by the platform or by the hospital the case came from');
    }
    const l = await addLabel(db, req.params.id, req.body, p.username);
    await audit(p, 'lake.label', req.params.id, { kind: l.kind, code: l.code });
    return reply.status(201).send(l);
  });

  app.get('/api/lake/datasets', async (req) => {
    session(req, CURATOR);
    return { datasets: await listDatasets(db) };
  });
  app.post('/api/lake/datasets', async (req, reply) => {
    const p = session(req, CURATOR);
    const d = await createDataset(db, req.body, p.username);
    await audit(p, 'lake.dataset.create', d.id, { name: d.name });
    return reply.status(201).send(d);
  });
  app.get<{ Params: { id: string } }>('/api/lake/datasets/:id', async (req) => {
    session(req, CURATOR);
    const d = await getDataset(db, req.params.id);
    if (d === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no dataset ${req.params.id}`);
    return d;
  });
  app.post<{ Params: { id: string } }>('/api/lake/datasets/:id/versions', async (req, reply) => {
    const p = session(req, CURATOR);
    const b = parseWith(releaseBody, req.body ?? {}, 'body');
    try {
      const v = await db.transaction((tx) => releaseVersion(tx, req.params.id, { ...(b.k === undefined ? {} : { k: b.k }), by: p.username, nowMs: now() }));
      await audit(p, 'lake.version.release', v.id, { dataset: v.datasetId, version: v.version, cases: v.cases, k: v.k, manifestSha256: v.manifestSha256 });
      const { manifest: _m, ...summary } = v;
      return reply.status(201).send(summary);
    } catch (err) {
      if (err instanceof Eco3dError && err.code === 'ECO3D_ERR_K_ANONYMITY') await audit(p, 'lake.version.refused', req.params.id, { reason: err.message });
      throw err;
    }
  });

  // A version: its manifest and the withdrawals since; for the curator, or a token of a licence on it.
  app.get<{ Params: { id: string } }>('/api/lake/versions/:id', async (req) => {
    const p = principalOf(req);
    if (p?.kind === 'token') {
      const scope = await lakeTokenScope(db, p, now());
      if (scope.licence.versionId !== req.params.id) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${scope.licence.id} is for version ${scope.licence.versionId}`);
      await logAccess(db, { licenceId: scope.licence.id, partnerTenantId: p.tenantId, actor: p.username, action: 'lake.manifest', target: req.params.id, allowed: true }, scope, now());
    } else session(req, CURATOR);
    const v = await getVersion(db, req.params.id);
    if (v === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no dataset version ${req.params.id}`);
    return { ...v, withdrawals: await versionWithdrawals(db, v.id) };
  });

  // The zip export of a licence's version: manifest.json (as released), withdrawals.json, and the
  // instances the licence covers now, under <case>/<series>/<sop>.dcm.
  app.get<{ Params: { id: string } }>('/api/lake/versions/:id/export.zip', async (req, reply) => {
    const p = principalOf(req);
    let scope: LicenceScope;
    try {
      scope = await lakeTokenScope(db, p, now());
      if (scope.licence.versionId !== req.params.id) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `licence ${scope.licence.id} is for version ${scope.licence.versionId}, not ${req.params.id}`);
    } catch (err) {
      if (p !== null) await logAccess(db, { licenceId: p.licenceId ?? null, partnerTenantId: p.tenantId, actor: p.username, action: 'lake.export', target: req.params.id, allowed: false, detail: { reason: (err as Error).message } }, undefined, now());
      throw err;
    }
    const v = (await getVersion(db, req.params.id))!;
    const allowed = new Set(scope.studies.keys());
    const cases = v.manifest.cases.filter((c) => allowed.has(c.id));
    const files: Array<{ name: string; path: string; sizeBytes: number }> = [];
    for (const c of cases) {
      for (const i of c.instances) {
        const path = await o.lakeInstanceFile(i.sopInstanceUid);
        if (path === null) throw new Eco3dError('ECO3D_ERR_INTERNAL', `lake instance ${i.sopInstanceUid} of case ${c.id} is missing from the lake store`);
        files.push({ name: i.path, path, sizeBytes: i.sizeBytes });
      }
    }
    const sizeBytes = files.reduce((s, f) => s + f.sizeBytes, 0);
    const anomaly = await logAccess(
      db,
      { licenceId: scope.licence.id, partnerTenantId: p!.tenantId, actor: p!.username, action: 'lake.export', target: req.params.id, allowed: true, caseIds: cases.map((c) => c.id), instances: files.length, sizeBytes },
      scope,
      now(),
    );
    if (anomaly?.flagged === true) o.log.warn({ licence: scope.licence.id, reasons: anomaly.reasons, evidence: anomaly.evidence }, 'unusual lake access (flagged in the access log)');
    const withdrawals = (await versionWithdrawals(db, v.id)).filter((w) => scope.licence.maxCases === null || v.manifest.cases.slice(0, scope.licence.maxCases).some((c) => c.id === w.caseId));
    const head = [
      { name: 'manifest.json', bytes: Buffer.from(JSON.stringify(v.manifest)) },
      { name: 'withdrawals.json', bytes: Buffer.from(JSON.stringify({ versionId: v.id, licenceId: scope.licence.id, withdrawals }, null, 2)) },
    ];
    const entries = [...head.map((h) => ({ ...h, sizeBytes: h.bytes.byteLength })), ...files.map((f) => ({ name: f.name, path: f.path, sizeBytes: f.sizeBytes }))];
    return reply
      .header('content-type', 'application/zip')
      .header('content-length', String(zipSizeBytes(entries)))
      .header('content-disposition', `attachment; filename="${v.id}.zip"`)
      .header('x-eco3d-manifest-sha256', v.manifestSha256)
      // Dated at the release: the same licence gets the same bytes each time.
      .send(zipStream(entries, { modifiedAt: new Date(v.releasedAtMs) }));
  });

  // --- Partners and licences -----------------------------------------------------------------

  app.put<{ Params: { tenantId: string } }>('/api/lake/partners/:tenantId', async (req) => {
    const p = session(req, CURATOR);
    const partner = await putPartner(db, req.params.tenantId, req.body, p.username);
    await audit(p, 'lake.partner', partner.tenantId, { academic: partner.academic });
    return partner;
  });

  app.post('/api/lake/licences', async (req, reply) => {
    const p = session(req, CURATOR);
    const { licence, created } = await db.transaction((tx) => grantLicence(tx, req.body, { by: p.username, nowMs: now(), recordCharge: o.recordCharge }));
    if (created) await audit(p, 'lake.licence.grant', licence.id, { partner: licence.partnerTenantId, version: licence.versionId, kind: licence.kind, amountCents: licence.amountCents });
    return reply.status(created ? 201 : 200).send(licence);
  });

  app.get('/api/lake/licences', async (req) => {
    const p = session(req, ['platform-admin', 'tenant-admin']);
    return { licences: await listLicences(db, p.role === 'platform-admin' ? undefined : p.tenantId) };
  });

  app.delete<{ Params: { id: string } }>('/api/lake/licences/:id', async (req) => {
    const p = session(req, CURATOR);
    if ((await getLicence(db, req.params.id)) === undefined) throw new Eco3dError('ECO3D_ERR_NOT_FOUND', `no licence ${req.params.id}`);
    const l = (await revokeLicence(db, req.params.id, p.username))!;
    await audit(p, 'lake.licence.revoke', l.id);
    return l;
  });

  app.get('/api/lake/access', async (req) => {
    session(req, CURATOR);
    const q = parseWith(accessQuery, req.query, 'query');
    return {
      access: await listAccess(db, {
        ...(q.licence === undefined ? {} : { licenceId: q.licence }),
        ...(q.partner === undefined ? {} : { partnerTenantId: q.partner }),
        flaggedOnly: q.flagged === 'true',
        limit: q.limit,
      }),
    };
  });
}

// Billing's HTTP API under /api/billing (described in server/openapi.ts).
//
// Who may do what: a tenant admin acts on their own tenant; a platform admin on any (`?tenant=`
// or the path's tenant); a device token with `usage:write` only posts its own device's usage.
// Every change (settings, contract, reversal, issue) is audited.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { Eco3dError } from '../protocols/errors.ts';
import { ensureDevice, listDevices, type Database } from '../store/index.ts';
import { listContracts, putContract } from './contract-store.ts';
import { parseWith } from './contracts.ts';
import { dashboard } from './dashboard.ts';
import { invoiceToCsv, invoiceToFhir, invoiceToJson, invoiceToPdf, type InvoiceDocument } from './export.ts';
import { ingestBatch, parseBatch, USAGE_WRITE_SCOPE } from './ingest.ts';
import { billableTenants, issueInvoice, listIssuedInvoices, rerateIssued, viewInvoice } from './invoices.ts';
import { getBillingSettings, listEntries, putBillingSettings, reverseEntry } from './ledger.ts';
import { parsePeriod, periodBounds, periodOf } from './periods.ts';

/** The parts of server/auth.ts's Principal that billing reads. */
export interface BillingPrincipal {
  readonly kind: 'session' | 'token';
  readonly role: string;
  readonly tenantId: string;
  readonly username: string;
  readonly scopes: readonly string[] | null;
  readonly deviceId?: string;
}

export interface BillingRoutesOptions {
  readonly db: Database;
  readonly audit: (e: { tenantId: string; actor: string; action: string; target?: string; detail?: Record<string, unknown> }) => Promise<void>;
  /** The clock (tests pass a fixed one). Default Date.now. */
  readonly nowMs?: () => number;
  /** This server's URL: the FHIR export's fullUrls are under <publicUrl>/fhir. */
  readonly publicUrl: string;
}

export const INVOICE_FORMATS = ['json', 'csv', 'pdf', 'fhir'] as const;
export type InvoiceFormat = (typeof INVOICE_FORMATS)[number];
const MEDIA: Record<InvoiceFormat, string> = { json: 'application/json', csv: 'text/csv; charset=utf-8', pdf: 'application/pdf', fhir: 'application/fhir+json' };

const TENANT = /^[a-z0-9][a-z0-9-]{0,62}$/;
const PERIOD = /^\d{4}-\d{2}$/;
const tenantQuery = z.strictObject({ tenant: z.string().regex(TENANT, 'a tenant id').optional(), period: z.string().regex(PERIOD, 'YYYY-MM').optional() });
const usageQuery = tenantQuery.extend({ limit: z.coerce.number().int().min(1).max(10_000).optional() });
const invoiceQuery = z.strictObject({ format: z.enum(INVOICE_FORMATS).optional() });
const reversalBody = z.strictObject({ idempotencyKey: z.string().min(1).max(512), reason: z.string().min(1).max(500) });
const runBody = z.strictObject({ period: z.string().regex(PERIOD, 'YYYY-MM') });
const deviceBody = z.strictObject({ model: z.string().trim().min(1).max(64), serial: z.string().trim().min(1).max(64).optional() });

const principalOf = (req: FastifyRequest): BillingPrincipal | null => (req as unknown as { principal?: BillingPrincipal | null }).principal ?? null;

function admin(req: FastifyRequest): BillingPrincipal {
  const p = principalOf(req);
  if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first (POST /api/auth/login)');
  if (p.kind !== 'session' || (p.role !== 'tenant-admin' && p.role !== 'platform-admin')) {
    throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'billing is for administrators (tenant-admin, platform-admin)');
  }
  return p;
}

/** The tenant a request acts on: the admin's own, or any for a platform admin. */
function tenantFor(p: BillingPrincipal, requested: string | undefined): string {
  if (requested === undefined || requested === p.tenantId) return p.tenantId;
  if (p.role === 'platform-admin') return requested;
  throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `you administer tenant ${p.tenantId}, not ${requested}`);
}

/**
 * The chaos test's failpoint (test/billing-chaos.e2e.test.ts): ECO3D_FAILPOINT=ingest-after-commit:N:SIGNAL
 * makes the Nth ingestion whose batch committed drop its connection unanswered and signal this
 * process: the crash between commit and acknowledgement, on demand. Unset in production.
 */
function ingestFailpoint(): ((req: FastifyRequest) => boolean) | undefined {
  const m = /^ingest-after-commit:(\d+):(SIGKILL|SIGTERM)$/.exec(process.env.ECO3D_FAILPOINT ?? '');
  if (m === null) return undefined;
  let left = Number(m[1]);
  const signal = m[2] as NodeJS.Signals;
  return (req) => {
    if (--left !== 0) return false;
    req.raw.socket.destroy();
    process.kill(process.pid, signal);
    return true;
  };
}

export async function registerBilling(app: FastifyInstance, o: BillingRoutesOptions): Promise<void> {
  const db = o.db;
  const failpoint = ingestFailpoint();
  const now = o.nowMs ?? Date.now;
  const currentPeriod = async (tenantId: string): Promise<string> => periodOf(now(), (await getBillingSettings(db, tenantId)).timeZone);

  // Devices of a tenant: a cloud instance registers its edges' robots before minting their tokens.
  app.get('/api/devices', async (req) => {
    const p = admin(req);
    return { devices: await listDevices(db, tenantFor(p, parseWith(tenantQuery, req.query, 'query').tenant)) };
  });

  app.put<{ Params: { id: string } }>('/api/devices/:id', async (req, reply) => {
    const p = admin(req);
    const tenantId = tenantFor(p, parseWith(tenantQuery, req.query, 'query').tenant);
    const body = parseWith(deviceBody, req.body ?? {}, 'body');
    const { device, created } = await ensureDevice(db, { tenantId, id: req.params.id, model: body.model, ...(body.serial === undefined ? {} : { serial: body.serial }) });
    if (created) await o.audit({ tenantId, actor: p.username, action: 'device.register', target: device.id, detail: { model: body.model } });
    return reply.status(created ? 201 : 200).send(device);
  });

  app.get('/api/billing/settings', async (req) => {
    const p = admin(req);
    const q = parseWith(tenantQuery, req.query, 'query');
    return getBillingSettings(db, tenantFor(p, q.tenant));
  });

  app.put('/api/billing/settings', async (req) => {
    const p = admin(req);
    const tenantId = tenantFor(p, parseWith(tenantQuery, req.query, 'query').tenant);
    const settings = await putBillingSettings(db, tenantId, req.body, p.username);
    await o.audit({ tenantId, actor: p.username, action: 'billing.settings', detail: { settings } });
    return settings;
  });

  app.get('/api/billing/contracts', async (req) => {
    const p = admin(req);
    return { contracts: await listContracts(db, tenantFor(p, parseWith(tenantQuery, req.query, 'query').tenant)) };
  });

  app.put<{ Params: { id: string } }>('/api/billing/contracts/:id', async (req, reply) => {
    const p = admin(req);
    const body = req.body as { id?: unknown; tenantId?: unknown } | null;
    if (body === null || typeof body !== 'object') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'a contract object is required');
    if (body.id !== undefined && body.id !== req.params.id) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `id: ${JSON.stringify(body.id)} is not the path's ${req.params.id}`, { details: { field: 'id' } });
    const tenantId = tenantFor(p, typeof body.tenantId === 'string' ? body.tenantId : undefined);
    const { contract, created } = await putContract(db, tenantId, { ...body, id: req.params.id, tenantId }, p.username);
    await o.audit({ tenantId, actor: p.username, action: created ? 'billing.contract.create' : 'billing.contract.update', target: contract.id, detail: { contract } });
    return reply.status(created ? 201 : 200).send(contract);
  });

  // Batches from edge devices (a device token) or corrections by an admin (scans, outcomes).
  app.post('/api/billing/usage-events', { bodyLimit: 8 * 1024 * 1024 }, async (req, reply) => {
    const p = principalOf(req);
    if (p === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', `send a device token with the scope ${USAGE_WRITE_SCOPE} (Authorization: Bearer)`);
    let who: { tenantId: string; deviceId?: string; actor: string };
    if (p.kind === 'token') {
      if (!(p.scopes ?? []).includes(USAGE_WRITE_SCOPE) || p.deviceId === undefined) {
        throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this needs a device token with the scope ${USAGE_WRITE_SCOPE}`);
      }
      who = { tenantId: p.tenantId, deviceId: p.deviceId, actor: p.username };
    } else {
      const a = admin(req);
      who = { tenantId: tenantFor(a, parseWith(tenantQuery, req.query, 'query').tenant), actor: a.username };
    }
    const entries = parseBatch(req.body, who, now());
    const r = await ingestBatch(db, who, entries);
    if (failpoint?.(req) === true) return reply.hijack();
    return {
      created: r.created,
      duplicates: r.duplicates,
      results: r.results.map((x) => ({ status: x.status, entry: x.entry })),
    };
  });

  app.get('/api/billing/usage', async (req) => {
    const p = admin(req);
    const q = parseWith(usageQuery, req.query, 'query');
    const tenantId = tenantFor(p, q.tenant);
    const period = q.period ?? (await currentPeriod(tenantId));
    const { startMs, endMs } = periodBounds(period, (await getBillingSettings(db, tenantId)).timeZone);
    return { tenantId, period, entries: await listEntries(db, { tenantId, fromMs: startMs, toMs: endMs, limit: q.limit ?? 1000 }) };
  });

  app.post('/api/billing/usage/reversals', async (req, reply) => {
    const p = admin(req);
    const tenantId = tenantFor(p, parseWith(tenantQuery, req.query, 'query').tenant);
    const body = parseWith(reversalBody, req.body, 'body');
    const r = await reverseEntry(db, { tenantId, idempotencyKey: body.idempotencyKey, reason: body.reason, by: p.username });
    if (r.status === 'created') await o.audit({ tenantId, actor: p.username, action: 'billing.reversal', target: body.idempotencyKey, detail: { reason: body.reason } });
    return reply.status(r.status === 'created' ? 201 : 200).send(r);
  });

  app.get('/api/billing/invoices', async (req) => {
    const p = admin(req);
    const q = parseWith(tenantQuery, req.query, 'query');
    const all = p.role === 'platform-admin' && q.tenant === undefined;
    const issued = await listIssuedInvoices(db, all ? null : tenantFor(p, q.tenant));
    return {
      invoices: issued.map((i) => ({ tenantId: i.tenantId, period: i.period, status: 'issued', number: i.number, totalCents: i.invoice.totals.totalCents, issuedAtMs: i.issuedAtMs, sha256: i.sha256 })),
    };
  });

  app.get<{ Params: { tenant: string; period: string } }>('/api/billing/invoices/:tenant/:period', async (req, reply) => {
    const p = admin(req);
    const tenantId = tenantFor(p, req.params.tenant);
    parsePeriod(req.params.period);
    const format = parseWith(invoiceQuery, req.query, 'query').format ?? formatFromAccept(req.headers.accept);
    const view = await viewInvoice(db, tenantId, req.params.period);
    return sendInvoice(reply, view, format, o.publicUrl);
  });

  app.post<{ Params: { tenant: string; period: string } }>('/api/billing/invoices/:tenant/:period/issue', async (req, reply) => {
    const p = admin(req);
    const tenantId = tenantFor(p, req.params.tenant);
    const { issued, created } = await issueInvoice(db, tenantId, req.params.period, p.username, now());
    if (created) await o.audit({ tenantId, actor: p.username, action: 'billing.invoice.issue', target: issued.number, detail: { totalCents: issued.invoice.totals.totalCents, sha256: issued.sha256 } });
    return reply.status(created ? 201 : 200).send({ status: 'issued', number: issued.number, issuedAtMs: issued.issuedAtMs, sha256: issued.sha256, invoice: issued.invoice });
  });

  app.get<{ Params: { tenant: string; period: string } }>('/api/billing/invoices/:tenant/:period/rerate', async (req) => {
    const p = admin(req);
    const r = await rerateIssued(db, tenantFor(p, req.params.tenant), req.params.period);
    return { number: r.issued.number, matches: r.matches, issuedTotals: r.issued.invoice.totals, reratedTotals: r.rerated.totals };
  });

  // The month's run: every tenant with a contract or usage (platform admin).
  app.post('/api/billing/invoice-runs', async (req) => {
    const p = admin(req);
    if (p.role !== 'platform-admin') throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'an invoice run is for platform admins');
    const { period } = parseWith(runBody, req.body, 'body');
    return runInvoices(db, period, p.username, now(), o.audit);
  });

  app.get('/api/billing/dashboard', async (req) => {
    const p = admin(req);
    const q = parseWith(tenantQuery, req.query, 'query');
    const tenants = p.role === 'platform-admin' && q.tenant === undefined ? await billableTenants(db) : [tenantFor(p, q.tenant)];
    const period = q.period ?? (await currentPeriod(tenants[0] ?? p.tenantId));
    parsePeriod(period);
    return dashboard(db, tenants.length === 0 ? [p.tenantId] : tenants, period, now());
  });
}

/** Issues the period's invoice of every billable tenant; one tenant's failure does not stop the others. */
export async function runInvoices(
  db: Database,
  period: string,
  by: string,
  nowMs: number,
  audit?: BillingRoutesOptions['audit'],
): Promise<{ period: string; issued: number; existing: number; failed: { tenantId: string; code: string; message: string }[] }> {
  parsePeriod(period);
  let issued = 0;
  let existing = 0;
  const failed: { tenantId: string; code: string; message: string }[] = [];
  const queue = await billableTenants(db);
  // Two at a time (each its own transaction and lock): one tenant's rating in this process
  // overlaps the next one's reads in PostgreSQL. More is slower on 2 cores; PGlite serialises.
  const worker = async (): Promise<void> => {
    for (let tenantId = queue.shift(); tenantId !== undefined; tenantId = queue.shift()) {
      try {
        const r = await issueInvoice(db, tenantId, period, by, nowMs);
        if (r.created) {
          issued++;
          await audit?.({ tenantId, actor: by, action: 'billing.invoice.issue', target: r.issued.number, detail: { totalCents: r.issued.invoice.totals.totalCents, sha256: r.issued.sha256 } });
        } else existing++;
      } catch (err) {
        const e = err instanceof Eco3dError ? err : new Eco3dError('ECO3D_ERR_INTERNAL', (err as Error).message);
        failed.push({ tenantId, code: e.code, message: e.message });
      }
    }
  };
  await Promise.all([worker(), worker()]);
  failed.sort((a, b) => (a.tenantId < b.tenantId ? -1 : 1));
  return { period, issued, existing, failed };
}

function formatFromAccept(accept: string | undefined): InvoiceFormat {
  if (accept === undefined) return 'json';
  for (const f of ['pdf', 'csv', 'fhir'] as const) if (accept.includes(MEDIA[f].split(';')[0]!)) return f;
  return 'json';
}

export async function renderInvoice(view: InvoiceDocument, format: InvoiceFormat, publicUrl: string): Promise<Buffer | string> {
  switch (format) {
    case 'json':
      return invoiceToJson(view);
    case 'csv':
      return invoiceToCsv(view);
    case 'pdf':
      return invoiceToPdf(view);
    case 'fhir': {
      const base = `${publicUrl}/fhir`;
      const { invoice, chargeItems } = invoiceToFhir(view, { baseUrl: base });
      // A collection Bundle: the Invoice and the ChargeItems it references (ChargeItem/<id>).
      const bundle = {
        resourceType: 'Bundle',
        type: 'collection',
        entry: [invoice, ...chargeItems].map((r) => ({ fullUrl: `${base}/${r.resourceType}/${r.id ?? ''}`, resource: r })),
      };
      return `${JSON.stringify(bundle)}\n`;
    }
  }
}

async function sendInvoice(reply: FastifyReply, view: InvoiceDocument, format: InvoiceFormat, publicUrl: string): Promise<FastifyReply> {
  const body = await renderInvoice(view, format, publicUrl);
  const name = `${view.number ?? `preview-${view.invoice.tenantId}-${view.invoice.period}`}.${format === 'fhir' ? 'fhir.json' : format}`;
  return reply
    .header('content-type', MEDIA[format])
    .header('content-disposition', `${format === 'json' ? 'inline' : 'attachment'}; filename="${name}"`)
    // An open preview changes with every scan; an issued invoice never does.
    .header('cache-control', view.status === 'issued' ? 'private, max-age=86400, immutable' : 'no-store')
    .send(body);
}

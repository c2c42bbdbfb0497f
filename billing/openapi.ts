// The OpenAPI paths of billing's HTTP API (billing/routes.ts), merged into GET /api/openapi.json.
const str = { type: 'string' };
const int = { type: 'integer' };
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const error = { $ref: '#/components/schemas/Error' };
const err = (status: string, description: string) => ({ [status]: { description, ...json(error) } });
const common = { ...err('400', 'Bad request'), ...err('401', 'Not signed in'), ...err('403', 'Not an administrator of this tenant') };
const tenantQ = { name: 'tenant', in: 'query', schema: str, description: "Platform admins: the tenant (default: the caller's)" };
const periodQ = { name: 'period', in: 'query', schema: { type: 'string', pattern: '^\\d{4}-\\d{2}$' }, description: "YYYY-MM, in the tenant's zone (default: the current month)" };
const tenantP = { name: 'tenant', in: 'path', required: true, schema: str };
const periodP = { name: 'period', in: 'path', required: true, schema: { type: 'string', pattern: '^\\d{4}-\\d{2}$' } };
const cents = { type: 'integer', description: 'euro cents' };

const usageEvent = {
  type: 'object',
  required: ['type', 'deviceId', 'acquisitionUid'],
  additionalProperties: false,
  properties: {
    type: { enum: ['scan', 'outcome'] },
    tenantId: { type: 'string', description: "optional; must be the credentials' tenant" },
    deviceId: str,
    acquisitionUid: { type: 'string', maxLength: 128 },
    occurredAt: { type: 'string', format: 'date-time', description: 'with its zone; or occurredAtMs' },
    occurredAtMs: int,
    billable: { type: 'boolean', description: 'scan: default true' },
    reason: { type: 'string', description: 'scan not billable: why (aborted:estop, repeat-scan, …)' },
    quantity: { const: 1, description: 'scan: one acquisition is one scan' },
    outcome: { type: 'string', description: 'outcome: e.g. avoided-ct (bonus under risk-sharing)' },
  },
};
const entry = {
  type: 'object',
  properties: {
    id: int,
    kind: { enum: ['usage', 'outcome', 'reversal'] },
    idempotencyKey: { type: 'string', description: 'usage/<tenant>/<device>/<acquisition UID>' },
    tenantId: str,
    deviceId: str,
    acquisitionUid: str,
    occurredAtMs: int,
    billable: { type: 'boolean' },
    reason: str,
    outcome: str,
    reverses: int,
    source: { enum: ['local', 'ingest', 'admin'] },
    recordedBy: str,
    recordedAtMs: int,
  },
};
const invoiceDoc = {
  type: 'object',
  description: 'rate() output (billing/pricing.ts): lines with code, description, quantity, unitAmountCents, amountCents and explanation {rule, tier, eventCount, eventKeys, formula}; totals {subtotalCents, taxCents, totalCents}',
};

export function billingOpenApiPaths(): Record<string, unknown> {
  return {
    '/api/devices': { get: { summary: "The tenant's devices (admins)", parameters: [tenantQ], responses: { '200': { description: '{devices}' }, ...common } } },
    '/api/devices/{id}': {
      put: {
        summary: 'Register a device (admins): 201 new, 200 already there. A cloud registers its edges before minting their usage:write tokens',
        parameters: [{ name: 'id', in: 'path', required: true, schema: str }, tenantQ],
        requestBody: json({ type: 'object', required: ['model'], properties: { model: str, serial: str } }),
        responses: { '200': { description: 'the device' }, '201': { description: 'registered' }, ...common },
      },
    },
    '/api/billing/settings': {
      get: { summary: "The tenant's billing settings: time zone, tax, repeat-scan window", parameters: [tenantQ], responses: { '200': { description: 'settings' }, ...common } },
      put: {
        summary: 'Set them (audited)',
        parameters: [tenantQ],
        requestBody: json({
          type: 'object',
          required: ['tax'],
          properties: {
            timeZone: { type: 'string', description: 'IANA zone, default Europe/Rome' },
            tax: { oneOf: [{ type: 'object', properties: { kind: { const: 'rate' }, rateBps: int, label: str } }, { type: 'object', properties: { kind: { const: 'exempt' }, reason: str } }] },
            repeatScanWindowHours: { type: 'integer', minimum: 0, description: '0: off' },
          },
        }),
        responses: { '200': { description: 'settings' }, ...common, ...err('422', 'Unknown tenant') },
      },
    },
    '/api/billing/contracts': { get: { summary: "The tenant's contracts", parameters: [tenantQ], responses: { '200': { description: '{contracts}' }, ...common } } },
    '/api/billing/contracts/{id}': {
      put: {
        summary: 'Create or replace a contract (billing/PRICING.md for the models; audited). Refused: overlapping validity (409 CONFLICT), unknown device (422), a change inside an invoiced period (409 PERIOD_CLOSED)',
        parameters: [{ name: 'id', in: 'path', required: true, schema: str }],
        requestBody: json({ type: 'object', required: ['tenantId', 'deviceId', 'validFrom', 'validTo', 'model'] }),
        responses: { '200': { description: 'replaced' }, '201': { description: 'created' }, ...common, ...err('409', 'Overlap or period closed'), ...err('422', 'Unknown device, or a number out of range') },
      },
    },
    '/api/billing/usage-events': {
      post: {
        summary:
          'Ingest usage in batches (1 to 10,000 events): a device token (scope usage:write, bound to its device) or a tenant admin. All or nothing: one bad event and nothing is stored (details.issues lists each). A duplicate, at any time, is answered with the original entry',
        security: [{ bearer: [] }],
        requestBody: json({ type: 'object', required: ['events'], properties: { events: { type: 'array', minItems: 1, maxItems: 10000, items: usageEvent } } }),
        responses: {
          '200': {
            description: 'stored',
            ...json({ type: 'object', properties: { created: int, duplicates: int, results: { type: 'array', items: { type: 'object', properties: { status: { enum: ['created', 'duplicate'] }, entry } } } } }),
          },
          ...common,
          ...err('409', 'An outcome inside an invoiced period'),
          ...err('422', 'Unknown device or tenant, or a number not finite'),
        },
      },
    },
    '/api/billing/usage': { get: { summary: 'Ledger entries of a period, newest first', parameters: [tenantQ, periodQ, { name: 'limit', in: 'query', schema: int }], responses: { '200': { description: '{entries}', ...json({ type: 'object', properties: { entries: { type: 'array', items: entry } } }) }, ...common } } },
    '/api/billing/usage/reversals': {
      post: {
        summary: 'Reverse an entry (a new entry, never an edit; audited). In an invoiced period it is billed next month as an adjustment. Twice: the first reversal (200)',
        parameters: [tenantQ],
        requestBody: json({ type: 'object', required: ['idempotencyKey', 'reason'], properties: { idempotencyKey: str, reason: str } }),
        responses: { '201': { description: 'reversed' }, '200': { description: 'already reversed' }, ...common, ...err('404', 'No such entry') },
      },
    },
    '/api/billing/invoices': { get: { summary: 'Issued invoices (platform admins: of every tenant)', parameters: [tenantQ], responses: { '200': { description: '{invoices}' }, ...common } } },
    '/api/billing/invoices/{tenant}/{period}': {
      get: {
        summary: 'The issued invoice, or the open preview of the period. ?format= (or Accept) json, csv, pdf, fhir (a Bundle of Invoice + ChargeItems)',
        parameters: [tenantP, periodP, { name: 'format', in: 'query', schema: { enum: ['json', 'csv', 'pdf', 'fhir'] } }],
        responses: {
          '200': {
            description: 'the invoice',
            content: {
              'application/json': { schema: { type: 'object', properties: { status: { enum: ['open', 'issued'] }, number: str, issuedAtMs: int, sha256: str, invoice: invoiceDoc } } },
              'text/csv': { schema: str },
              'application/pdf': { schema: { type: 'string', format: 'binary' } },
              'application/fhir+json': { schema: { type: 'object' } },
            },
          },
          ...common,
          ...err('422', 'Unknown tenant'),
        },
      },
    },
    '/api/billing/invoices/{tenant}/{period}/issue': {
      post: {
        summary: 'Issue the invoice of a period that is over (idempotent: 201 issued now, 200 already issued, same invoice). 409 for a period not over, or while an earlier period with usage is not issued',
        parameters: [tenantP, periodP],
        responses: { '201': { description: 'issued' }, '200': { description: 'already issued' }, ...common, ...err('409', 'Not over, or an earlier period first') },
      },
    },
    '/api/billing/invoices/{tenant}/{period}/rerate': {
      get: {
        summary: 'Re-rate an issued invoice from the ledger: matches is true when it reproduces it to the cent',
        parameters: [tenantP, periodP],
        responses: { '200': { description: '{number, matches, issuedTotals, reratedTotals}' }, ...common, ...err('404', 'Not issued') },
      },
    },
    '/api/billing/invoice-runs': {
      post: {
        summary: "Issue a period's invoice for every tenant with a contract or usage (platform admins)",
        requestBody: json({ type: 'object', required: ['period'], properties: { period: str } }),
        responses: { '200': { description: '{period, issued, existing, failed}' }, ...common },
      },
    },
    '/api/billing/dashboard': {
      get: {
        summary: 'The admin dashboard: scans per device and day, revenue per tenant, risk-sharing forecast against actual, open and issued invoices',
        parameters: [tenantQ, periodQ],
        responses: { '200': { description: 'dashboard', ...json({ type: 'object', properties: { period: str, scansPerDeviceDay: { type: 'array' }, revenueByTenant: { type: 'array' }, riskSharing: { type: 'array' }, invoices: { type: 'array', items: { type: 'object', properties: { totalCents: cents } } } } }) }, ...common },
      },
    },
  };
}

// The OpenAPI paths of the marketplace's HTTP API (marketplace/routes.ts, docs/marketplace-api.md),
// merged into GET /api/openapi.json.
const str = { type: 'string' };
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const error = { $ref: '#/components/schemas/Error' };
const err = (status: string, description: string) => ({ [status]: { description, ...json(error) } });
const common = { ...err('400', 'Bad request'), ...err('401', 'Not signed in'), ...err('403', 'Role refused, or not a developer / hospital tenant') };
const id = (name: string) => ({ name, in: 'path', required: true, schema: str });
const obj = (description: string) => ({ description, ...json({ type: 'object' }) });
const body = (description: string) => ({ required: true, ...json({ type: 'object', description }) });

export function marketplaceOpenApiPaths(): Record<string, unknown> {
  return {
    '/api/marketplace/developers': { get: { summary: 'Registered developers (platform-admin)', responses: { '200': obj('{developers}'), ...common } } },
    '/api/marketplace/developers/{tenantId}': {
      put: { summary: 'Register a developer organisation, its tenant created (platform-admin); shareBps defaults to 7000', parameters: [id('tenantId')], requestBody: body('{name, shareBps?}'), responses: { '200': obj('Developer'), '201': obj('Developer'), ...common } },
    },
    '/api/marketplace/developer': { get: { summary: "The signed-in developer's organisation", responses: { '200': obj('Developer'), ...common } } },
    '/api/marketplace/developer/keys': {
      get: { summary: 'Signing keys', responses: { '200': obj('{keys}'), ...common } },
      post: { summary: 'Register an Ed25519 public key (SPKI PEM or raw base64)', requestBody: body('{name, publicKey}'), responses: { '201': obj('DeveloperKey'), ...err('409', 'Key already registered'), ...common } },
    },
    '/api/marketplace/developer/keys/{id}': { delete: { summary: 'Revoke a signing key', parameters: [id('id')], responses: { '200': obj('{key}'), ...common } } },
    '/api/marketplace/developer/versions': {
      post: {
        summary: 'Submit a signed package (application/zip); validation starts',
        requestBody: { required: true, content: { 'application/zip': { schema: { type: 'string', format: 'binary' } } } },
        responses: { '202': obj('{version}'), ...err('409', 'Version already submitted, or no signing key'), ...err('413', 'Package too large'), ...err('422', 'Bad package (details.reason)'), ...common },
      },
    },
    '/api/marketplace/developer/plugins': { get: { summary: "The developer's plugins: versions, validation reports, review, usage", responses: { '200': obj('{plugins}'), ...common } } },
    '/api/marketplace/developer/payouts': { get: { summary: 'Issued payout statements', responses: { '200': obj('{statements}'), ...common } } },
    '/api/marketplace/developer/payouts/{file}': { get: { summary: 'A statement: <YYYY-MM>.json or .csv (the open month as running figures)', parameters: [id('file')], responses: { '200': obj('PayoutStatement'), ...common } } },
    '/api/marketplace/demo-studies': { get: { summary: "The sandbox tenant's de-identified demo studies", responses: { '200': obj('{studies}'), ...common } } },
    '/api/marketplace/demo-studies/{file}': { get: { summary: 'A demo study (<ref>.dcm, application/dicom)', parameters: [id('file')], responses: { '200': { description: 'Part-10 file' }, ...common } } },
    '/api/marketplace/review': { get: { summary: 'Versions in review (platform-admin)', responses: { '200': obj('{versions}'), ...common } } },
    '/api/marketplace/review/{pluginId}/{version}': {
      post: { summary: 'Publish or reject (with a note) a version in review (platform-admin)', parameters: [id('pluginId'), id('version')], requestBody: body('{decision: publish|reject, note?}'), responses: { '200': obj('{version}'), ...err('409', 'Not in review'), ...common } },
    },
    '/api/marketplace/plugins': { get: { summary: 'The catalog: each published plugin, its scopes and price (hospital tenant-admin)', responses: { '200': obj('{plugins}'), ...common } } },
    '/api/marketplace/enablements': { get: { summary: "The hospital's enablements, history included (tenant-admin)", responses: { '200': obj('{enablements}'), ...common } } },
    '/api/marketplace/enablements/{pluginId}': {
      put: { summary: 'Enable a published version; acceptScopes and acceptPricing must be its own', parameters: [id('pluginId')], requestBody: body('{version, acceptScopes, acceptPricing}'), responses: { '200': obj('{enablement}'), '201': obj('{enablement}'), ...err('409', 'Scopes or price differ from the version'), ...common } },
      delete: { summary: 'Disable at once: clients and tokens revoked, live streams cut, work items canceled', parameters: [id('pluginId')], responses: { '200': obj('{enablement, revokedTokens, revokedClients, cutStreams, canceledWorkItems}'), ...err('404', 'Not enabled'), ...common } },
    },
    '/api/marketplace/enablements/{pluginId}/clients': { post: { summary: 'New OAuth2 client credentials (the secret is shown once)', parameters: [id('pluginId')], responses: { '201': obj('{clientId, clientSecret}'), ...common } } },
    '/api/marketplace/enablements/{pluginId}/session-token': { post: { summary: "A live plugin's token for this user's console (sonographer, physician, tenant-admin)", parameters: [id('pluginId')], responses: { '200': obj('{token, expiresIn, name, version}'), ...common } } },
    '/api/marketplace/live-plugins': { get: { summary: "The tenant's enabled browser live plugins, for the console's layers", responses: { '200': obj('{plugins}'), ...common } } },
    '/api/marketplace/plugins/{pluginId}/{version}/files/{path}': { get: { summary: "A file of an enabled plugin's package (the console's sandboxed frame imports the module)", parameters: [id('pluginId'), id('version'), id('path')], responses: { '200': { description: 'The file' }, ...common } } },
    '/api/marketplace/work-items': {
      get: { summary: "The hospital's work items (AIW-I) with every plugin run, failures included", parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer' } }], responses: { '200': obj('{workItems}'), ...common } },
    },
    '/api/marketplace/plugin/whoami': { get: { summary: "A plugin token's plugin, version, tenant and scopes (refused once disabled)", responses: { '200': obj('{pluginId, version, tenantId, scopes}'), ...common } } },
    '/api/oauth/token': {
      post: {
        summary: 'OAuth2 client credentials (RFC 6749 §4.4): a 15-minute plugin token; errors per §5.2',
        requestBody: { required: true, content: { 'application/x-www-form-urlencoded': { schema: { type: 'object', properties: { grant_type: str, client_id: str, client_secret: str, scope: str } } } } },
        responses: { '200': obj('{access_token, token_type, expires_in, scope}'), '400': obj('{error, error_description}'), '401': obj('{error: invalid_client}') },
      },
    },
  };
}

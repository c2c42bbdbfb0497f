// The OpenAPI 3.1 document of the product's own JSON API (`GET /api/openapi.json`).
// DICOMweb and FHIR follow their own standards and are not described here.

const error = { $ref: '#/components/schemas/Error' };
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errors = {
  '400': { description: 'Bad request', ...json(error) },
  '401': { description: 'Not signed in', ...json(error) },
  '403': { description: 'Missing role', ...json(error) },
};

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: { title: 'Eco3D API', version: '0.1.0', description: 'Robotic 3D ultrasound platform. Errors are {code, message}; codes are listed in README.md.' },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        cookie: { type: 'apiKey', in: 'cookie', name: 'eco3d_session' },
      },
      schemas: {
        Error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string', pattern: '^ECO3D_ERR_' }, message: { type: 'string' } } },
        Account: { type: 'object', properties: { id: { type: 'string' }, username: { type: 'string' }, tenantId: { type: 'string' }, role: { enum: ['platform-admin', 'tenant-admin', 'sonographer', 'bedside'] } } },
      },
    },
    security: [{ bearer: [] }, { cookie: [] }],
    paths: {
      '/healthz': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'up' }, '503': { description: 'degraded' } } } },
      '/api/auth/login': {
        post: {
          summary: 'Sign in; answers a token and sets an HttpOnly session cookie',
          security: [],
          requestBody: json({ type: 'object', required: ['username', 'password'], properties: { username: { type: 'string' }, password: { type: 'string' } } }),
          responses: { '200': { description: 'signed in', ...json({ type: 'object', properties: { token: { type: 'string' }, account: { $ref: '#/components/schemas/Account' } } }) }, ...errors },
        },
      },
      '/api/auth/logout': { post: { summary: 'Revoke the session', responses: { '200': { description: 'signed out' }, ...errors } } },
      '/api/auth/me': { get: { summary: 'The signed-in account', responses: { '200': { description: 'account', ...json({ $ref: '#/components/schemas/Account' }) }, ...errors } } },
      '/api/accounts': {
        post: {
          summary: 'Create an account (platform admin: any tenant; tenant admin: own tenant)',
          requestBody: json({ type: 'object', required: ['tenantId', 'username', 'role', 'password'] }),
          responses: { '201': { description: 'created' }, ...errors, '404': { description: 'no such tenant', ...json(error) } },
        },
      },
      '/api/robot': { get: { summary: 'Latest robot, link, safety, control and acquisition status', responses: { '200': { description: 'status' }, ...errors } } },
      '/api/acquisitions': { get: { summary: 'The tenant’s acquisition log, newest first', parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', maximum: 1000 } }], responses: { '200': { description: 'list' }, ...errors } } },
      '/api/acquisitions/{uid}': { get: { summary: 'One acquisition with its transitions', parameters: [{ name: 'uid', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: 'acquisition' }, '404': { description: 'not found', ...json(error) }, ...errors } } },
      '/api/acquisitions/{uid}/files/{name}': {
        get: {
          summary: 'A completed acquisition’s volume.mha, tracked-frames.igs.mha or reconstruction.xml (audited)',
          parameters: [
            { name: 'uid', in: 'path', required: true, schema: { type: 'string' } },
            { name: 'name', in: 'path', required: true, schema: { enum: ['volume.mha', 'tracked-frames.igs.mha', 'reconstruction.xml'] } },
          ],
          responses: { '200': { description: 'the file' }, '404': { description: 'no such acquisition or file (yet)', ...json(error) }, ...errors },
        },
      },
      '/api/availability': { get: { summary: 'Robot up/down history', responses: { '200': { description: 'list' }, ...errors } } },
      '/api/audit': { get: { summary: 'Audit log (admins); reading it is itself audited', responses: { '200': { description: 'list' }, ...errors } } },
      '/ws/operator': { get: { summary: 'Tele-operation WebSocket (sonographer); messages in protocols/teleop.ts', responses: { '101': { description: 'upgraded' }, ...errors } } },
      '/ws/bedside': { get: { summary: 'Bedside WebSocket (bedside staff): e-stop, reset, stop, sweeps', responses: { '101': { description: 'upgraded' }, ...errors } } },
    },
  };
}

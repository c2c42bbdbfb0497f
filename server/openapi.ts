// The OpenAPI 3.1 document of the product's own JSON API (`GET /api/openapi.json`).
// DICOMweb and FHIR follow their own standards and are not described here.
import { billingOpenApiPaths } from '../billing/index.ts';
import { lakeOpenApiPaths } from '../datalake/index.ts';
import { marketplaceOpenApiPaths } from '../marketplace/index.ts';
import { TOKEN_SCOPES } from './auth.ts';

const error = { $ref: '#/components/schemas/Error' };
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errors = {
  '400': { description: 'Bad request', ...json(error) },
  '401': { description: 'Not signed in', ...json(error) },
  '403': { description: 'Missing role', ...json(error) },
};
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const str = { type: 'string' };
const ms = { type: 'number', description: 'ms since the epoch' };
const notFound = (what: string) => ({ '404': { description: what, ...json(error) } });
const conflict = (what: string) => ({ '409': { description: what, ...json(error) } });
const reveal = {
  name: 'reveal',
  in: 'query',
  schema: { enum: ['true', 'false'] },
  description: 'Demo mode masks patient name, id and birth date (first letters, birth year); reveal=true answers them in clear and is audited (patient.reveal).',
};
const uidParam = { name: 'uid', in: 'path', required: true, schema: str };
const studyParam = { name: 'study', in: 'path', required: true, schema: str, description: 'Study Instance UID (for our studies, the acquisition UID)' };
const point = { type: 'object', required: ['x', 'y', 'z'], additionalProperties: false, properties: { x: { type: 'number' }, y: { type: 'number' }, z: { type: 'number' } } };
const newExam = {
  type: 'object',
  required: ['patientId', 'patientName', 'description'],
  additionalProperties: false,
  properties: {
    patientId: { type: 'string', minLength: 1, maxLength: 64 },
    patientName: { type: 'string', minLength: 1, maxLength: 64, description: 'No backslash or control characters (DICOM PN)' },
    birthDate: { type: 'string', format: 'date', description: 'YYYY-MM-DD, 1900 to today' },
    sex: { enum: ['F', 'M', 'O'] },
    description: { type: 'string', minLength: 1, maxLength: 64 },
    accessionNumber: { type: 'string', minLength: 1, maxLength: 16 },
  },
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
        MintedToken: {
          type: 'object',
          required: ['id', 'token', 'name', 'scopes', 'tenantId', 'expiresAtMs'],
          properties: { id: str, token: { type: 'string', description: 'e3t_…: shown once, stored only as a hash' }, name: str, scopes: { type: 'array', items: str }, tenantId: str, expiresAtMs: ms, deviceId: str, licenceId: str },
        },
        Token: {
          type: 'object',
          required: ['id', 'name', 'scopes', 'tenantId', 'createdBy', 'createdAtMs', 'expiresAtMs', 'status'],
          properties: {
            id: str,
            name: str,
            scopes: { type: 'array', items: str },
            tenantId: str,
            createdBy: str,
            createdAtMs: ms,
            expiresAtMs: ms,
            revokedAtMs: ms,
            revokedBy: str,
            status: { enum: ['active', 'expired', 'revoked'] },
          },
        },
        Exam: {
          type: 'object',
          required: ['id', 'tenantId', 'deviceId', 'patientId', 'patientName', 'description', 'startedBy', 'startedAtMs', 'masked'],
          properties: {
            id: str,
            tenantId: str,
            deviceId: str,
            patientId: { type: 'string', description: 'masked: first character + "***"' },
            patientName: { type: 'string', description: 'masked: first letter of each name part + "***", e.g. "D*** R***"' },
            birthDate: { type: 'string', description: 'YYYY-MM-DD; masked: YYYY' },
            sex: { enum: ['F', 'M', 'O'] },
            description: str,
            accessionNumber: str,
            startedBy: str,
            startedAtMs: ms,
            endedBy: str,
            endedAtMs: ms,
            masked: { type: 'boolean', description: 'true when patient identity is masked (demo mode without reveal=true)' },
          },
        },
        Consent: {
          type: 'object',
          required: ['id', 'patientId', 'examId', 'purpose', 'decision', 'recordedBy', 'recordedAtMs'],
          properties: {
            id: str,
            patientId: { type: 'string', description: 'masked like Exam.patientId' },
            examId: { type: ['string', 'null'], description: 'the exam during which it was recorded' },
            purpose: { enum: ['research'] },
            decision: { enum: ['yes', 'no', 'revoked'] },
            recordedBy: { type: 'string', description: 'username' },
            recordedAtMs: ms,
          },
        },
        Measurement: {
          type: 'object',
          required: ['id', 'tenantId', 'acquisitionUid', 'kind', 'plane', 'pointsMm', 'createdBy', 'createdAtMs'],
          properties: {
            id: str,
            tenantId: str,
            acquisitionUid: str,
            kind: { enum: ['distance', 'area'] },
            label: str,
            plane: { enum: ['axial', 'sagittal', 'coronal'] },
            pointsMm: { type: 'array', items: point },
            valueMm: { type: 'number', description: 'kind distance: computed by the server' },
            valueMm2: { type: 'number', description: 'kind area: computed by the server' },
            createdBy: { type: 'string', description: 'username' },
            createdByAccountId: str,
            createdAtMs: ms,
          },
        },
        Report: {
          type: 'object',
          required: ['id', 'studyInstanceUid', 'version', 'status', 'findings', 'conclusion', 'measurementIds', 'authoredBy', 'updatedAtMs', 'fhirDiagnosticReportId'],
          properties: {
            id: str,
            studyInstanceUid: str,
            acquisitionUid: { type: ['string', 'null'] },
            version: { type: 'integer', minimum: 1 },
            status: { enum: ['preliminary', 'final', 'amended'], description: 'preliminary until a physician signs; a signed version never changes' },
            findings: str,
            conclusion: str,
            measurementIds: { type: 'array', items: str },
            authoredBy: { type: 'string', description: 'username' },
            updatedAtMs: ms,
            signedBy: { type: 'string', description: 'username of the signing physician' },
            signedAtMs: ms,
            replacesId: { type: 'string', description: 'the signed version an amendment replaces' },
            srSeriesInstanceUid: str,
            srSopInstanceUid: { type: 'string', description: 'the SR that carries the signed version in the study' },
            fhirDiagnosticReportId: { type: 'string', description: 'GET /fhir/DiagnosticReport/{id}' },
          },
        },
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
      '/api/auth/tokens': {
        post: {
          summary: 'Mint a scoped token for a plugin or device in the admin’s tenant (tenant or platform admin; audited token.mint). Use it as Authorization: Bearer; it never passes a role check.',
          requestBody: json({
            type: 'object',
            required: ['name', 'scopes'],
            additionalProperties: false,
            properties: {
              name: { type: 'string', minLength: 1, maxLength: 100 },
              scopes: { type: 'array', minItems: 1, items: { enum: [...TOKEN_SCOPES] } },
              ttlSeconds: { type: 'integer', minimum: 60, maximum: 2592000, default: 3600 },
              deviceId: { type: 'string', description: 'binds the token to a registered device; required with usage:write' },
              licenceId: { type: 'string', description: "binds the token to one of this tenant's data licences; required with lake:read, and only with it" },
            },
          }),
          responses: { '201': { description: 'minted; the token is in this answer only', ...json(ref('MintedToken')) }, ...errors },
        },
        get: { summary: 'The tenant’s tokens, newest first (never a secret)', responses: { '200': { description: 'list', ...json({ type: 'object', properties: { tokens: { type: 'array', items: ref('Token') } } }) }, ...errors } },
      },
      '/api/auth/tokens/{id}': {
        delete: {
          summary: 'Revoke a token of the tenant, effective at once (audited token.revoke); revoking twice keeps the first revocation',
          parameters: [{ name: 'id', in: 'path', required: true, schema: str }],
          responses: { '200': { description: 'revoked', ...json(ref('Token')) }, ...notFound('no such token in the tenant'), ...errors },
        },
      },
      '/api/exam': {
        put: {
          summary: 'Start an exam on this server’s robot and make it the device’s current exam, ending the previous one (all roles of the robot’s tenant; audited exam.start)',
          parameters: [reveal],
          requestBody: json(newExam),
          responses: { '201': { description: 'the exam', ...json(ref('Exam')) }, ...errors },
        },
        get: {
          summary: 'The robot’s current exam',
          parameters: [reveal],
          responses: { '200': { description: 'exam or null', ...json({ type: 'object', required: ['exam'], properties: { exam: { oneOf: [ref('Exam'), { type: 'null' }] } } }) }, ...errors },
        },
        delete: {
          summary: 'End the current exam (audited exam.end)',
          parameters: [reveal],
          responses: { '200': { description: 'the ended exam', ...json({ type: 'object', properties: { exam: ref('Exam') } }) }, ...notFound('no current exam'), ...errors },
        },
      },
      '/api/consents': {
        post: {
          summary: 'Record a research consent decision (bedside, tenant admin; append-only; audited consent.record). patientId defaults to the current exam’s patient.',
          parameters: [reveal],
          requestBody: json({
            type: 'object',
            required: ['decision'],
            additionalProperties: false,
            properties: { decision: { enum: ['yes', 'no', 'revoked'] }, patientId: { type: 'string', minLength: 1, maxLength: 64 } },
          }),
          responses: { '201': { description: 'recorded', ...json(ref('Consent')) }, ...conflict('no patientId and no current exam'), ...errors },
        },
        get: {
          summary: 'A patient’s consent history, newest first, and the current decision (patientId defaults to the current exam’s patient)',
          parameters: [{ name: 'patientId', in: 'query', schema: str }, reveal],
          responses: {
            '200': {
              description: 'history',
              ...json({
                type: 'object',
                properties: { patientId: str, current: { enum: ['yes', 'no', 'revoked', null] }, consents: { type: 'array', items: ref('Consent') } },
              }),
            },
            ...conflict('no patientId and no current exam'),
            ...errors,
          },
        },
      },
      '/api/auth/me': { get: { summary: 'The signed-in account', responses: { '200': { description: 'account', ...json({ $ref: '#/components/schemas/Account' }) }, ...errors } } },
      '/api/accounts': {
        post: {
          summary: 'Create an account (platform admin: any tenant; tenant admin: own tenant)',
          requestBody: json({ type: 'object', required: ['tenantId', 'username', 'role', 'password'] }),
          responses: { '201': { description: 'created' }, ...errors, '404': { description: 'no such tenant', ...json(error) } },
        },
      },
      '/api/live': { get: { summary: 'Live streams: viewers, open peer connections, per-viewer counters (admins)', responses: { '200': { description: 'stats' }, ...errors } } },
      '/api/robot': { get: { summary: 'Latest robot, link, safety, control and acquisition status', responses: { '200': { description: 'status' }, ...errors } } },
      '/api/acquisitions': { get: { summary: 'The tenant’s acquisition log, newest first', parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer', maximum: 1000 } }], responses: { '200': { description: 'list' }, ...errors } } },
      '/api/acquisitions/{uid}': {
        get: {
          summary: 'One acquisition with its transitions, files and exam (null when it has none; masked like GET /api/exam)',
          parameters: [uidParam, reveal],
          responses: { '200': { description: 'acquisition' }, '404': { description: 'not found', ...json(error) }, ...errors },
        },
      },
      '/api/acquisitions/{uid}/measurements': {
        post: {
          summary:
            'Add a caliper measurement on an MPR slice (sonographer, admins; audited measurement.create). The server computes valueMm (distance: exactly 2 points) or valueMm2 ' +
            '(area: a closed polygon of 3..64 vertices in its plane — axial ⟂ z, sagittal ⟂ x, coronal ⟂ y, within 0.01 mm — half the norm of the summed cross products). ' +
            'Coordinates in mm, finite, |v| < 10000 (else ECO3D_ERR_NOT_FINITE, 422).',
          parameters: [uidParam],
          requestBody: json({
            type: 'object',
            required: ['kind', 'plane', 'pointsMm'],
            additionalProperties: false,
            properties: {
              kind: { enum: ['distance', 'area'] },
              label: { type: 'string', minLength: 1, maxLength: 64 },
              plane: { enum: ['axial', 'sagittal', 'coronal'] },
              pointsMm: { type: 'array', minItems: 2, maxItems: 64, items: point },
            },
          }),
          responses: {
            '201': { description: 'stored', ...json(ref('Measurement')) },
            '422': { description: 'a coordinate is not finite or out of range', ...json(error) },
            ...notFound('no such acquisition in the tenant'),
            ...errors,
          },
        },
        get: {
          summary: 'The acquisition’s measurements, oldest first',
          parameters: [uidParam],
          responses: { '200': { description: 'list', ...json({ type: 'object', properties: { measurements: { type: 'array', items: ref('Measurement') } } }) }, ...notFound('no such acquisition in the tenant'), ...errors },
        },
      },
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
      '/api/worklist': {
        get: {
          summary: 'The RIS’s open orders (FHIR ServiceRequests with an accession number), for the bedside to start an exam from (bedside, sonographer, tenant admin; audited)',
          responses: {
            '200': {
              description: 'entries',
              ...json({
                type: 'object',
                properties: {
                  entries: {
                    type: 'array',
                    items: {
                      type: 'object',
                      required: ['serviceRequestId', 'patientId', 'patientName', 'description', 'accessionNumber'],
                      properties: { serviceRequestId: str, patientId: str, patientName: str, birthDate: str, sex: { enum: ['F', 'M', 'O'] }, description: str, accessionNumber: str },
                    },
                  },
                },
              }),
            },
            ...errors,
          },
        },
      },
      '/api/studies/{study}/report': {
        get: {
          summary: 'The report’s versions on a study, newest first (clinicians)',
          parameters: [studyParam],
          responses: { '200': { description: 'versions', ...json({ type: 'object', properties: { current: ref('Report'), versions: { type: 'array', items: ref('Report') } } }) }, ...notFound('no such study in the tenant'), ...errors },
        },
        put: {
          summary: 'Create or edit the draft (sonographer, physician); 409 when the newest version is signed (amend it first)',
          parameters: [studyParam],
          requestBody: json({
            type: 'object',
            required: ['findings', 'measurementIds'],
            additionalProperties: false,
            properties: { findings: { type: 'string', maxLength: 20000 }, conclusion: { type: 'string', maxLength: 4000 }, measurementIds: { type: 'array', maxItems: 200, items: str } },
          }),
          responses: { '200': { description: 'the draft', ...json(ref('Report')) }, '422': { description: 'a measurement is not one of this study', ...json(error) }, ...notFound('no such study in the tenant'), ...errors },
        },
      },
      '/api/studies/{study}/report/sign': {
        post: {
          summary: 'Sign the draft (physician): a verified DICOM SR goes into the study; the DiagnosticReport becomes final (amended for an amendment)',
          parameters: [studyParam],
          responses: { '200': { description: 'the signed version', ...json(ref('Report')) }, '409': { description: 'no draft, an empty one, or already signed', ...json(error) }, ...errors },
        },
      },
      '/api/studies/{study}/report/amend': {
        post: {
          summary: 'Open an amendment of the signed report (physician): a new draft version that replaces it once signed',
          parameters: [studyParam],
          responses: { '200': { description: 'the new draft', ...json(ref('Report')) }, '409': { description: 'the newest version is a draft', ...json(error) }, ...errors },
        },
      },
      '/api/availability': { get: { summary: 'Robot up/down history', responses: { '200': { description: 'list' }, ...errors } } },
      '/api/audit': { get: { summary: 'Audit log (admins); reading it is itself audited', responses: { '200': { description: 'list' }, ...errors } } },
      '/ws/operator': { get: { summary: 'Tele-operation WebSocket (sonographer); messages in protocols/teleop.ts', responses: { '101': { description: 'upgraded' }, ...errors } } },
      '/ws/bedside': { get: { summary: 'Bedside WebSocket (bedside staff): e-stop, reset, stop, sweeps', responses: { '101': { description: 'upgraded' }, ...errors } } },
      ...billingOpenApiPaths(),
      ...lakeOpenApiPaths(),
      ...marketplaceOpenApiPaths(),
    },
  };
}

// The OpenAPI paths of the lake's HTTP API (datalake/routes.ts), merged into GET /api/openapi.json.
// /lake/dicom-web is standard DICOMweb (QIDO-RS, WADO-RS; read-only), described by PS3.18.
const str = { type: 'string' };
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const error = { $ref: '#/components/schemas/Error' };
const err = (status: string, description: string) => ({ [status]: { description, ...json(error) } });
const common = { ...err('400', 'Bad request'), ...err('401', 'Not signed in'), ...err('403', 'Role, scope or licence refused') };
const id = (name: string) => ({ name, in: 'path', required: true, schema: str });
const obj = (description: string) => ({ description, ...json({ type: 'object' }) });
const body = (description: string) => ({ required: true, ...json({ type: 'object', description }) });

export function lakeOpenApiPaths(): Record<string, unknown> {
  return {
    '/api/lake/settings': {
      get: { summary: "The hospital's lake settings (tenant-admin)", responses: { '200': obj('LakeSettings'), ...common } },
      put: {
        summary: "Set the hospital's lake settings (tenant-admin): siteRegion (ISO 3166-2), retainDeviceIdentity, burnedInMasks [{manufacturer?, modelName, regions}], safePrivateTags, minCoverage, minForceInBandShare",
        requestBody: body('LakeSettings'),
        responses: { '200': obj('LakeSettings'), ...common },
      },
    },
    '/api/lake/intake': {
      get: {
        summary: 'Why each completed acquisition did or did not reach the lake, and the usable fraction (tenant-admin)',
        parameters: [{ name: 'limit', in: 'query', schema: { type: 'integer' } }],
        responses: { '200': obj('{summary: {considered, copied, usableFraction, byReason}, decisions}'), ...common },
      },
    },
    '/api/lake/reidentify': {
      post: { summary: 'Re-identify a pseudonym of this hospital (tenant-admin; audited with its reason)', requestBody: body('{pseudonymId, reason}'), responses: { '200': obj('{pseudonymId, patientId}'), ...err('404', 'No such pseudonym in this tenant'), ...common } },
    },
    '/api/lake/erasure': {
      post: {
        summary: "Execute a verified erasure request (tenant-admin): the patient's archived studies and pseudonym key are deleted, their lake cases withdrawn",
        requestBody: body('{patientId, confirmPatientId, requestReference}'),
        responses: { '200': obj('{id, studiesDeleted, instancesDeleted, casesWithdrawn, pseudonymDeleted}'), ...common },
      },
    },
    '/api/lake/cohort': { post: { summary: 'Cohort query over the catalog (platform-admin)', requestBody: body('{cohort, limit, offset}'), responses: { '200': obj('{total, cases}'), ...common } } },
    '/api/lake/cases/{id}': { get: { summary: 'A case of the catalog (platform-admin)', parameters: [id('id')], responses: { '200': obj('LakeCase'), ...err('404', 'No such case'), ...common } } },
    '/api/lake/cases/{id}/labels': {
      post: {
        summary: "Label a case (platform-admin, or a physician / tenant-admin of the case's hospital)",
        parameters: [id('id')],
        requestBody: body('{kind: pathology|outcome|finding, code, display?}'),
        responses: { '201': obj('{id, kind, code}'), ...err('409', 'The case is withdrawn'), ...common },
      },
    },
    '/api/lake/datasets': {
      get: { summary: 'Datasets and their versions (platform-admin)', responses: { '200': obj('{datasets}'), ...common } },
      post: { summary: 'Create a dataset from a cohort (platform-admin)', requestBody: body('{name, description?, cohort}'), responses: { '201': obj('Dataset'), ...err('409', 'The name is taken'), ...common } },
    },
    '/api/lake/datasets/{id}': { get: { summary: 'A dataset (platform-admin)', parameters: [id('id')], responses: { '200': obj('Dataset'), ...common } } },
    '/api/lake/datasets/{id}/versions': {
      post: {
        summary: 'Release the next immutable version (platform-admin), after the k-anonymity check over age band, sex, site region and study year',
        parameters: [id('id')],
        requestBody: { ...json({ type: 'object', properties: { k: { type: 'integer', minimum: 2, default: 5 } } }) },
        responses: { '201': obj('DatasetVersion (without its manifest)'), ...err('422', 'ECO3D_ERR_K_ANONYMITY: details.report lists offending groups and suggested generalisations'), ...err('409', 'Empty cohort'), ...common },
      },
    },
    '/api/lake/versions/{id}': {
      get: { summary: 'A version: its manifest (checksums) and the withdrawals since its release (platform-admin, or a lake token of a licence on it)', parameters: [id('id')], responses: { '200': obj('DatasetVersion & {withdrawals}'), ...common } },
    },
    '/api/lake/versions/{id}/export.zip': {
      get: {
        summary: "Zip export of the licence's cases of this version (lake token): manifest.json, withdrawals.json, <case>/<series>/<sop>.dcm",
        parameters: [id('id')],
        responses: { '200': { description: 'application/zip', content: { 'application/zip': {} } }, ...common },
      },
    },
    '/api/lake/partners/{tenantId}': {
      put: { summary: 'Register a data partner, creating its tenant (platform-admin)', parameters: [id('tenantId')], requestBody: body('{name?, academic}'), responses: { '200': obj('{tenantId, academic}'), ...common } },
    },
    '/api/lake/licences': {
      get: { summary: 'Licences (platform-admin: all; a partner tenant-admin: its own)', responses: { '200': obj('{licences}'), ...common } },
      post: {
        summary: "Grant a licence (platform-admin); its price is recorded as a charge in the partner's billing ledger",
        requestBody: body('{id?, partnerTenantId, versionId, kind: sample|annual|per-case, amountCents? (annual), unitAmountCents? (per-case), maxCases? (sample), validFrom?}'),
        responses: { '201': obj('Licence'), '200': obj('The same licence, re-sent'), ...err('409', 'The id exists with other terms'), ...common },
      },
    },
    '/api/lake/licences/{id}': { delete: { summary: 'Revoke a licence (platform-admin)', parameters: [id('id')], responses: { '200': obj('Licence'), ...common } } },
    '/api/lake/access': {
      get: {
        summary: 'The lake access log: who, what, when, under which licence, and the anomaly flags (platform-admin)',
        parameters: [
          { name: 'licence', in: 'query', schema: str },
          { name: 'partner', in: 'query', schema: str },
          { name: 'flagged', in: 'query', schema: { enum: ['true', 'false'] } },
          { name: 'limit', in: 'query', schema: { type: 'integer' } },
        ],
        responses: { '200': obj('{access}'), ...common },
      },
    },
  };
}

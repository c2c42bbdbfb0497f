// The public surface of datalake/: the research data lake — consent-gated intake of de-identified
// copies (PS3.15 Annex E, protocols/deid.ts), the pseudonym key, the catalog, cohorts, datasets
// and their immutable versions under k-anonymity, licences billed in the ledger, and audited access.
export { intakeConsumer, intake, intakeOutcome, ageBandAt, StudyGate, LAKE_INTAKE_CONSUMER, LAKE_TENANT } from './intake.ts';
export type { IntakeDeps, IntakeOutcome, HospitalArchive, LakeArchive, DeidentifyFile } from './intake.ts';
export { loadLakeKeys, lakeKeysFrom, patientHash } from './keys.ts';
export type { LakeKeys } from './keys.ts';
export { pseudonymFor, findPseudonym, reidentify } from './pseudonyms.ts';
export type { Pseudonym } from './pseudonyms.ts';
export { getLakeSettings, putLakeSettings, parseLakeSettings, DEFAULT_LAKE_SETTINGS } from './settings.ts';
export type { LakeSettings } from './settings.ts';
export { queryCohort, parseCohort, getCase, addLabel, createDataset, getDataset, listDatasets, releaseVersion, getVersion, versionWithdrawals, withdrawPseudonym, manifestJson, DEFAULT_K } from './catalog.ts';
export type { Cohort, LakeCase, Dataset, DatasetVersion, Manifest } from './catalog.ts';
export { putPartner, grantLicence, getLicence, listLicences, revokeLicence, licenceScope, logAccess, listAccess, LAKE_READ_SCOPE, LICENCE_KINDS, DEFAULT_SAMPLE_CASES } from './licences.ts';
export type { Licence, LicenceKind, LicenceScope, RecordCharge, AccessRecord, AccessLogEntry } from './licences.ts';
export { consentConsumer, erasePatient, intakeSummary, listIntake, LAKE_CONSENT_CONSUMER } from './privacy.ts';
export type { ErasureResult, ErasableArchive } from './privacy.ts';
export { registerLake, lakeTokenScope } from './routes.ts';
export { lakeOpenApiPaths } from './openapi.ts';
export type { LakePrincipal, LakeRoutesOptions } from './routes.ts';
export { checkKAnonymity, kAnonymityError, generalise } from './kanon.ts';
export type { KAnonymityReport, QuasiIdentifiers } from './kanon.ts';
export { qualityScore } from './quality.ts';
export type { QualityAssessment, QualityInput } from './quality.ts';
export { detectAccessAnomaly } from './anomaly.ts';
export { zipStream } from './zip.ts';

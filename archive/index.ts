// The public surface of archive/: the DICOM store and DICOMweb (PS3.18).
export { DicomArchive, FAILURE_REASON, failureReasonOf } from './dicom-store.ts';
export type { DeletedStudy, DicomArchiveLayout, DicomArchiveOptions, DicomSource, InstanceRecord, InstanceSummary, StoreFileOptions, StoreOptions, StoreResult } from './dicom-store.ts';
export { registerDicomWeb, DICOMWEB_PREFIX, DICOMWEB_READ_SCOPE, DICOMWEB_WRITE_SCOPE, DICOMWEB_ROLES } from './dicomweb.ts';
export type { DicomWebAccess, DicomWebAccessCheck, DicomWebAuditAction, DicomWebAuditEntry, DicomWebOptions, DicomWebPrincipal } from './dicomweb.ts';
export { RenderPool, inlineRenderer } from './render.ts';
export type { FrameRenderer } from './render.ts';
// Push to an external PACS: the pacs-push outbox consumer (STOW-RS), the STOW-RS client, and a
// DIMSE C-STORE SCU for a PACS without DICOMweb.
export { pacsPushConsumer, parsePacsTarget, PACS_PUSH_CONSUMER } from './pacs-push.ts';
export type { PacsPushOptions, PacsPushLog, PacsTarget } from './pacs-push.ts';
export { stowInstances, dicomWebTarget, parseStoreInstancesResponse, describeFailureReason } from './stow-client.ts';
export type { StowAuth, StowOptions, StowResult, StowSource, StowStoredInstance, StowFailedInstance, StoreInstancesResponse } from './stow-client.ts';
export { cStoreInstances, isCStoreSuccess } from './dimse-store.ts';
export type { CStoreTarget, CStoreOptions, CStoreInstanceResult } from './dimse-store.ts';
// FHIR R4 at /fhir: the plugin, the service the server calls on completion (worklist, study,
// report, consent), the versioned store, the push to an external FHIR server, the validators.
export { registerFhir, FHIR_RESOURCES, FHIR_SCOPES } from './fhir-routes.ts';
export type { FhirAuditEntry, FhirPluginOptions, FhirPrincipal } from './fhir-routes.ts';
export {
  createFhirService,
  listWorklist,
  publishStudy,
  publishReport,
  completeServiceRequest,
  markServiceRequestCompleted,
  findServiceRequestByAccession,
  consentsForPatient,
  readFhirResource,
  searchFhirResources,
  imagingStudyIdFor,
  observationIdFor,
  diagnosticReportIdFor,
} from './fhir-store.ts';
export type {
  FhirService,
  StudyCompletion,
  ReportVersion,
  StudyPublication,
  ReportPublication,
  PublishedStudy,
  PublishedReport,
  ExamPatient,
  MeasurementForFhir,
  StoredFhirResource,
  WriteResult,
} from './fhir-store.ts';
export { fhirPushConsumer } from './fhir-push.ts';
export type { FhirPushOptions } from './fhir-push.ts';
export { createFhirValidator, FHIR_VALIDATOR_KINDS } from './fhir-validate.ts';
export type { FhirValidator, FhirValidatorKind, FhirValidatorOptions, FhirValidatorTimings, FhirValidationIssue } from './fhir-validate.ts';

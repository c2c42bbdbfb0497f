// The public surface of store/: the one database layer.
export { openPglite, openPostgres } from './database.ts';
export type { Database, Queryable, DatabaseKind } from './database.ts';
export { migrate } from './migrate.ts';
export { acquireDataDirLock } from './lock.ts';
export type { DataDirLock } from './lock.ts';
export {
  ensureTenant,
  getTenant,
  createAccount,
  findAccountByUsername,
  getAccount,
  createSession,
  findActiveSession,
  revokeSession,
  revokeAccountSessions,
  ensureDevice,
  listDevices,
} from './accounts.ts';
export { ROLES } from './accounts.ts';
export type { Tenant, Account, Device, Role } from './accounts.ts';
export { appendAudit, listAudit } from './audit.ts';
export type { AuditEntry, StoredAuditEntry } from './audit.ts';
export { recordAvailability, listAvailability } from './availability.ts';
export type { AvailabilityChange } from './availability.ts';
export { recordAcquisitionTransition, getAcquisition, listAcquisitions, listAcquisitionTransitions } from './acquisitions.ts';
export type { AcquisitionRecord } from './acquisitions.ts';
export { OutboxDispatcher, insertOutboxEvent, outboxBacklog } from './outbox.ts';
export type { OutboxConsumer, OutboxDispatcherOptions } from './outbox.ts';
export { createApiToken, findActiveApiToken, listApiTokens, revokeApiToken } from './tokens.ts';
export type { ApiToken } from './tokens.ts';
export {
  startExam,
  endCurrentExam,
  currentExam,
  getExam,
  linkAcquisitionToExam,
  getExamOfAcquisition,
  checkBirthDate,
  maskExam,
  maskPersonName,
  maskPatientId,
  maskBirthDate,
  SEXES,
} from './exams.ts';
export type { Exam, NewExam, Sex } from './exams.ts';
export { recordConsent, listConsents, currentConsent, CONSENT_DECISIONS } from './consents.ts';
export type { ConsentRecord, ConsentDecision } from './consents.ts';
export {
  addMeasurement,
  listMeasurements,
  measure,
  MEASUREMENT_KINDS,
  MPR_PLANES,
  MAX_COORDINATE_MM,
  MAX_POLYGON_POINTS,
  PLANE_TOLERANCE_MM,
} from './measurements.ts';
export type { Measurement, MeasurementKind, MprPlane, PointMm } from './measurements.ts';
export { listReportVersions, saveReportDraft, amendReport, draftToSign, signReport } from './reports.ts';
export type { Report, ReportStatus, ReportText } from './reports.ts';

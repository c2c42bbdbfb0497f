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

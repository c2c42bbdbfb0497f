// Domain events and the acquisition's states. Events are versioned; each carries a stable
// idempotency key so that every consumer can dedupe (ARCHITECTURE.md, exactly-once side effects).

/** The acquisition state machine's states (controller/acquisition.ts owns the transitions). */
export type AcquisitionStateName = 'idle' | 'positioning' | 'scanning' | 'paused' | 'completed' | 'aborted';

export const ACQUISITION_STATES: readonly AcquisitionStateName[] = [
  'idle',
  'positioning',
  'scanning',
  'paused',
  'completed',
  'aborted',
];

export const isTerminalAcquisitionState = (s: AcquisitionStateName): boolean => s === 'completed' || s === 'aborted';

export type AbortReason = 'operator' | 'estop' | 'fault' | 'link-lost';

export const ABORT_REASONS: readonly AbortReason[] = ['operator', 'estop', 'fault', 'link-lost'];

export type SweepKind = 'linear' | 'fan';

/** What was asked of the robot, recorded with the acquisition. */
export interface SweepSummary {
  readonly kind: SweepKind;
  /** Linear: sweep length; fan: 0. */
  readonly lengthMm: number;
  /** Fan: total tilt range; linear: 0. */
  readonly tiltRangeRad: number;
  readonly speedMmPerS: number;
  readonly targetForceN: number;
}

/** One persisted transition of an acquisition. Written by the controller, stored by `store/`. */
export interface AcquisitionTransition {
  readonly acquisitionUid: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly from: AcquisitionStateName;
  readonly to: AcquisitionStateName;
  /** The transition's name, e.g. `start`, `reach-start`, `pause`, `resume`, `finish`, `abort`. */
  readonly event: string;
  /** Wall clock, ms since the epoch. */
  readonly atMs: number;
  /** Account id of who caused it, or `system`. */
  readonly actor: string;
  readonly abortReason?: AbortReason;
  readonly detail?: string;
  /** Present on the first transition (idle → positioning). */
  readonly sweep?: SweepSummary;
  /** Present on the terminal transition. */
  readonly framesAcquired?: number;
}

interface EventBase {
  readonly version: 1;
  /** Stable across retries and restarts; consumers dedupe on it. */
  readonly idempotencyKey: string;
  readonly acquisitionUid: string;
  readonly tenantId: string;
  readonly deviceId: string;
  /** ISO 8601 UTC. */
  readonly occurredAt: string;
}

export interface AcquisitionCompletedV1 extends EventBase {
  readonly type: 'AcquisitionCompleted';
  readonly startedAt: string;
  readonly operatorId: string;
  readonly sweep: SweepSummary;
  readonly framesAcquired: number;
  readonly durationMs: number;
}

export interface AcquisitionAbortedV1 extends EventBase {
  readonly type: 'AcquisitionAborted';
  readonly startedAt: string;
  readonly reason: AbortReason;
  readonly detail: string;
}

/** A DICOM instance newly stored in the archive (not a replay of one already there). */
export interface DicomInstanceStoredV1 {
  readonly type: 'DicomInstanceStored';
  readonly version: 1;
  /** `DicomInstanceStored/<tenant>/<SOP Instance UID>`. */
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly occurredAt: string;
  readonly studyInstanceUid: string;
  readonly seriesInstanceUid: string;
  readonly sopInstanceUid: string;
  readonly sopClassUid: string;
  /** Who stored it: an acquisition of ours, or a STOW-RS client (its username). */
  readonly source: { readonly kind: 'acquisition'; readonly acquisitionUid: string } | { readonly kind: 'stow'; readonly actor: string };
}

/** A FHIR resource version created or updated by us (to announce to an external FHIR server). */
export interface FhirResourceChangedV1 {
  readonly type: 'FhirResourceChanged';
  readonly version: 1;
  /** `FhirResourceChanged/<tenant>/<resourceType>/<id>/<versionId>`. */
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly occurredAt: string;
  readonly resourceType: string;
  readonly id: string;
  readonly versionId: string;
}

/** A scan metered by this instance (billing/ledger.ts): what an edge forwards to its cloud. */
export interface UsageRecordedV1 {
  readonly type: 'UsageRecorded';
  readonly version: 1;
  /** `UsageRecorded/<ledger idempotency key>`. */
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly deviceId: string;
  readonly acquisitionUid: string;
  /** When the acquisition ended, ISO 8601 UTC. */
  readonly occurredAt: string;
  readonly billable: boolean;
  /** Why not billable (`aborted:estop`, `repeat-scan:<uid>`). */
  readonly reason?: string;
}

/** A completed acquisition's de-identified copy entered the research data lake as a case. */
export interface StudyDeidentifiedV1 {
  readonly type: 'StudyDeidentified';
  readonly version: 1;
  /** `StudyDeidentified/<case id>`. */
  readonly idempotencyKey: string;
  /** The hospital the case came from. */
  readonly tenantId: string;
  readonly occurredAt: string;
  readonly caseId: string;
  /** The de-identified Study Instance UID (in the lake; never the original). */
  readonly studyInstanceUid: string;
  readonly instances: number;
}

/** A patient's research consent decision was recorded (the lake withdraws on no / revoked). */
export interface ConsentRecordedV1 {
  readonly type: 'ConsentRecorded';
  readonly version: 1;
  /** `ConsentRecorded/<tenant>/<consent id>`. */
  readonly idempotencyKey: string;
  readonly tenantId: string;
  readonly occurredAt: string;
  /** The consents row; the patient is found through it (no patient id in the event). */
  readonly consentId: string;
  readonly decision: 'yes' | 'no' | 'revoked';
}

export type DomainEvent =
  | AcquisitionCompletedV1
  | AcquisitionAbortedV1
  | DicomInstanceStoredV1
  | FhirResourceChangedV1
  | UsageRecordedV1
  | StudyDeidentifiedV1
  | ConsentRecordedV1;
export type DomainEventType = DomainEvent['type'];

/** tenant + device + acquisition UID + event type: unique per acquisition outcome. */
export function acquisitionEventKey(type: DomainEventType, tenantId: string, deviceId: string, acquisitionUid: string): string {
  return `${type}/${tenantId}/${deviceId}/${acquisitionUid}`;
}

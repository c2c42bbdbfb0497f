// The error taxonomy: one stable code per failure a client or operator can see.
// Codes never change meaning once released; README.md lists them all (keep it in sync:
// test/error-codes.test.ts checks).

export const ERROR_CODES = {
  // configuration and process
  ECO3D_ERR_CONFIG: { httpStatus: 500, summary: 'A flag or environment variable has a bad value' },
  ECO3D_ERR_DATA_DIR_LOCKED: { httpStatus: 500, summary: 'Another process owns the data directory' },
  ECO3D_ERR_DATA_DIR: { httpStatus: 500, summary: 'The data directory or its database cannot be opened' },
  ECO3D_ERR_MIGRATION: { httpStatus: 500, summary: 'A database migration failed or was edited after release' },
  ECO3D_ERR_INTERNAL: { httpStatus: 500, summary: 'Unexpected internal error (logged with details)' },
  // requests
  ECO3D_ERR_BAD_REQUEST: { httpStatus: 400, summary: 'The request or message does not match its schema' },
  ECO3D_ERR_UNKNOWN_MESSAGE: { httpStatus: 400, summary: 'Unknown message type' },
  ECO3D_ERR_BAD_FILE: { httpStatus: 422, summary: 'An input file (image, sequence, config) is truncated, corrupt or inconsistent (file, frame and field in the message)' },
  ECO3D_ERR_UNAUTHENTICATED: { httpStatus: 401, summary: 'Missing, expired or invalid credentials' },
  ECO3D_ERR_FORBIDDEN: { httpStatus: 403, summary: 'The account or token lacks the role or scope' },
  ECO3D_ERR_NOT_FOUND: { httpStatus: 404, summary: 'No such resource' },
  ECO3D_ERR_CONFLICT: { httpStatus: 409, summary: 'The resource is in a state that does not allow this' },
  ECO3D_ERR_RATE_LIMITED: { httpStatus: 429, summary: 'Too many commands or requests' },
  ECO3D_ERR_UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, summary: 'The request body has a media type (or multipart part type) this endpoint does not take' },
  ECO3D_ERR_NOT_ACCEPTABLE: { httpStatus: 406, summary: 'None of the media types in Accept can be produced' },
  ECO3D_ERR_PAYLOAD_TOO_LARGE: { httpStatus: 413, summary: 'The request body is larger than the configured limit' },
  ECO3D_ERR_INVALID_RESOURCE: { httpStatus: 422, summary: 'A FHIR resource or DICOM object is well-formed but invalid (details in the OperationOutcome or failure reason)' },
  // billing
  ECO3D_ERR_UNKNOWN_TENANT: { httpStatus: 422, summary: 'The tenant named in the request does not exist' },
  ECO3D_ERR_UNKNOWN_DEVICE: { httpStatus: 422, summary: 'The device named in the request is not registered in its tenant' },
  ECO3D_ERR_PERIOD_CLOSED: { httpStatus: 409, summary: 'The billing period is invoiced: the change would alter an issued invoice' },
  // data lake
  ECO3D_ERR_BURNED_IN_ANNOTATION: { httpStatus: 422, summary: 'The image has burned-in annotation and no pixel mask is configured for its device model' },
  ECO3D_ERR_K_ANONYMITY: { httpStatus: 422, summary: 'A dataset release is refused: a group of quasi-identifiers holds fewer than k records (report in details)' },
  // external systems
  ECO3D_ERR_UPSTREAM: { httpStatus: 502, summary: 'An external system (PACS, FHIR server, cloud) failed or answered an error' },
  // tele-operation and safety
  ECO3D_ERR_NOT_IN_CONTROL: { httpStatus: 409, summary: 'Another operator holds the control lock, or none is held' },
  ECO3D_ERR_ESTOP_LATCHED: { httpStatus: 409, summary: 'The e-stop is latched; only bedside staff can reset it' },
  ECO3D_ERR_WORKSPACE: { httpStatus: 422, summary: 'Target outside the safety workspace box' },
  ECO3D_ERR_JOINT_LIMIT: { httpStatus: 422, summary: 'Target outside the joint limits' },
  ECO3D_ERR_SPEED_LIMIT: { httpStatus: 422, summary: 'Commanded speed above the safety limit' },
  ECO3D_ERR_FORCE_LIMIT: { httpStatus: 409, summary: 'Contact force above the limit: the probe retracted and stopped' },
  ECO3D_ERR_NOT_FINITE: { httpStatus: 422, summary: 'A number is NaN, infinite or out of range' },
  ECO3D_ERR_DEADMAN: { httpStatus: 409, summary: 'Operator heartbeat missing: controlled stop' },
  ECO3D_ERR_ROBOT_FAULT: { httpStatus: 409, summary: 'The robot reports a fault' },
  ECO3D_ERR_ROBOT_BUSY: { httpStatus: 409, summary: 'The robot or acquisition is in a state that refuses this command' },
  // robot link
  ECO3D_ERR_LINK_LOST: { httpStatus: 503, summary: 'The link to the robot is down' },
  ECO3D_ERR_TIMEOUT: { httpStatus: 504, summary: 'The robot did not acknowledge in time' },
  ECO3D_ERR_NACK: { httpStatus: 409, summary: 'The robot refused the command (reason in the message)' },
  ECO3D_ERR_CLOSED: { httpStatus: 503, summary: 'The driver or session is closed' },
  ECO3D_ERR_PROTOCOL: { httpStatus: 502, summary: 'The robot link sent an invalid frame or message' },
  ECO3D_ERR_VERSION: { httpStatus: 502, summary: 'The robot speaks an incompatible protocol version' },
} as const satisfies Record<string, { httpStatus: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

export class Eco3dError extends Error {
  override readonly name = 'Eco3dError';
  readonly code: ErrorCode;
  readonly httpStatus: number;
  /** Machine-readable details safe to show a client (never a stack). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, opts?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.httpStatus = ERROR_CODES[code].httpStatus;
    this.details = opts?.details;
  }

  /** The shape every client gets: a code and a message. */
  toJSON(): { code: ErrorCode; message: string; details?: Readonly<Record<string, unknown>> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

/** Wraps anything thrown into an Eco3dError, keeping codes that are already ours. */
export function toEco3dError(err: unknown, fallback: ErrorCode = 'ECO3D_ERR_INTERNAL'): Eco3dError {
  if (err instanceof Eco3dError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new Eco3dError(fallback, message, { cause: err });
}

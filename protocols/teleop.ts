// Tele-operation WebSocket messages (`/ws/operator`, `/ws/bedside`), tagged on `type` and parsed
// at the edge: `unknown` comes in, a typed message or a typed error goes out. The server answers
// every client message that carries an `id` with `ack` or `error` echoing that id.
import { z } from 'zod';
import { Eco3dError } from './errors.ts';

/** Bounds every number a client may send: finite, and far from anything a robot could mean. */
const num = z.number().finite().min(-1e6).max(1e6);
const vec3 = z.object({ x: num, y: num, z: num }).strict();
const quat = z.object({ x: num, y: num, z: num, w: num }).strict();
const id = z.string().max(64).optional();

export const sweepRequestSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('linear'),
      /** Where the sweep starts on the skin (x, y); the probe finds the surface itself. */
      startMm: z.object({ x: num, y: num }).strict(),
      /** Direction of travel in the table plane, degrees from +y (head-foot axis). */
      headingDeg: num,
      lengthMm: num.min(1).max(400),
      speedMmPerS: num.min(0.5).max(50),
      /** Probe tilt about the sweep's lateral axis. */
      tiltDeg: num.min(-30).max(30).default(0),
      targetForceN: num.min(1).max(15).default(5),
    })
    .strict(),
  z
    .object({
      kind: z.literal('fan'),
      startMm: z.object({ x: num, y: num }).strict(),
      headingDeg: num,
      tiltRangeDeg: num.min(1).max(80),
      angularSpeedDegPerS: num.min(0.5).max(28),
      targetForceN: num.min(1).max(15).default(5),
    })
    .strict(),
]);
export type SweepRequest = z.infer<typeof sweepRequestSchema>;

export const operatorMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('acquire-control'), id }).strict(),
  z.object({ type: z.literal('release-control'), id }).strict(),
  z.object({ type: z.literal('heartbeat'), id }).strict(),
  z.object({ type: z.literal('jog'), id, linearMmPerS: vec3, angularRadPerS: vec3.default({ x: 0, y: 0, z: 0 }) }).strict(),
  z.object({ type: z.literal('move-to'), id, pose: z.object({ positionMm: vec3, orientation: quat }).strict(), speedMmPerS: num }).strict(),
  z.object({ type: z.literal('home'), id }).strict(),
  z.object({ type: z.literal('stop'), id }).strict(),
  z.object({ type: z.literal('sweep-start'), id, plan: sweepRequestSchema }).strict(),
  z.object({ type: z.literal('sweep-pause'), id }).strict(),
  z.object({ type: z.literal('sweep-resume'), id }).strict(),
  z.object({ type: z.literal('sweep-abort'), id }).strict(),
]);
export type OperatorMessage = z.infer<typeof operatorMessageSchema>;

export const bedsideMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('estop'), id }).strict(),
  z.object({ type: z.literal('estop-reset'), id }).strict(),
  z.object({ type: z.literal('stop'), id }).strict(),
  z.object({ type: z.literal('sweep-start'), id, plan: sweepRequestSchema }).strict(),
  z.object({ type: z.literal('sweep-pause'), id }).strict(),
  z.object({ type: z.literal('sweep-resume'), id }).strict(),
  z.object({ type: z.literal('sweep-abort'), id }).strict(),
]);
export type BedsideMessage = z.infer<typeof bedsideMessageSchema>;

const OPERATOR_TYPES = new Set<string>(operatorMessageSchema.options.map((o) => o.shape.type.value));
const BEDSIDE_TYPES = new Set<string>(bedsideMessageSchema.options.map((o) => o.shape.type.value));

export type TeleopChannel = 'operator' | 'bedside';

/**
 * Parses one WebSocket text frame. Throws Eco3dError: ECO3D_ERR_BAD_REQUEST for bad JSON or a
 * bad shape, ECO3D_ERR_UNKNOWN_MESSAGE for a type this channel does not know (an e-stop sent on
 * the operator channel is unknown there: the latched e-stop belongs to the bedside).
 */
export function parseTeleopMessage(channel: 'operator', raw: string): OperatorMessage;
export function parseTeleopMessage(channel: 'bedside', raw: string): BedsideMessage;
export function parseTeleopMessage(channel: TeleopChannel, raw: string): OperatorMessage | BedsideMessage {
  if (raw.length > 16_384) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'message larger than 16 KiB');
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'message is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'message must be a JSON object');
  }
  const type = (value as { type?: unknown }).type;
  const known = channel === 'operator' ? OPERATOR_TYPES : BEDSIDE_TYPES;
  if (typeof type !== 'string' || !known.has(type)) {
    throw new Eco3dError('ECO3D_ERR_UNKNOWN_MESSAGE', `unknown message type ${JSON.stringify(type)} on the ${channel} channel`);
  }
  const schema = channel === 'operator' ? operatorMessageSchema : bedsideMessageSchema;
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue === undefined ? '' : `${issue.path.join('.')}: `;
    // A number that is there but infinite or out of range gets its own code: it is the input a
    // robot must never see, and the operator should know it was a number problem.
    const notFinite = r.error.issues.some((i) => typeof valueAt(value, i.path) === 'number');
    throw new Eco3dError(notFinite ? 'ECO3D_ERR_NOT_FINITE' : 'ECO3D_ERR_BAD_REQUEST', `${where}${issue?.message ?? 'invalid message'}`, {
      details: { issues: r.error.issues.slice(0, 5).map((i) => ({ path: i.path.join('.'), message: i.message })) },
    });
  }
  return r.data;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const k of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** Server → client messages. */
export type TeleopServerMessage =
  | { type: 'hello'; channel: TeleopChannel; actor: string; role: string; tenantId: string; deviceId: string }
  | { type: 'ack'; id: string }
  | { type: 'error'; id?: string; code: string; message: string }
  | { type: 'status'; status: TeleopStatus };

export interface TeleopProblem {
  readonly id: string;
  readonly severity: 'info' | 'warning' | 'error';
  readonly code?: string;
  readonly message: string;
  readonly sinceMs: number;
}

/** The broadcast every connected UI gets at 30 Hz or more. */
export interface TeleopStatus {
  readonly atMs: number;
  readonly link: { readonly up: boolean; readonly reason: string };
  readonly robot: unknown; // RobotState | null, kept opaque here to stay serialisable
  readonly forceN: number | null;
  readonly estopLatched: boolean;
  readonly control: { readonly holder: string | null };
  readonly acquisition: { readonly uid: string | null; readonly state: string; readonly abortReason?: string; readonly progress?: number };
  readonly problems: readonly TeleopProblem[];
}

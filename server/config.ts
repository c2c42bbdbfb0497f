// Configuration from flags and the environment, validated once at start. Every bad value gets
// its own clear message naming the flag or variable; the process refuses to start.
import { resolve } from 'node:path';
import { z } from 'zod';
import { Eco3dError } from '../protocols/index.ts';

/** Where the robot is: the in-process simulator, a serial device, or a rosbridge URL. */
export type RobotTarget =
  | { readonly kind: 'sim' }
  | { readonly kind: 'serial'; readonly path: string; readonly baudRate: number }
  | { readonly kind: 'ros'; readonly url: string };

export function parseRobotTarget(spec: string): RobotTarget {
  if (spec === 'sim') return { kind: 'sim' };
  if (spec.startsWith('serial:')) {
    // serial:/dev/ttyUSB0 or serial:/dev/ttyUSB0@115200
    const rest = spec.slice('serial:'.length);
    const at = rest.lastIndexOf('@');
    const path = at > 0 ? rest.slice(0, at) : rest;
    const baudRate = at > 0 ? Number(rest.slice(at + 1)) : 115200;
    if (!path.startsWith('/')) throw new Error(`serial path must be absolute, got "${path}"`);
    if (!Number.isInteger(baudRate) || baudRate <= 0) throw new Error(`bad baud rate in "${spec}"`);
    return { kind: 'serial', path, baudRate };
  }
  if (spec.startsWith('ros:')) {
    const url = spec.slice('ros:'.length);
    if (!/^wss?:\/\/[^/\s]+/.test(url)) throw new Error(`ros target must be ros:ws://host:port, got "${spec}"`);
    return { kind: 'ros', url };
  }
  throw new Error(`expected sim, serial:/dev/PATH or ros:ws://HOST:PORT, got "${spec}"`);
}

const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export interface ServerConfig {
  readonly dataDir: string;
  readonly host: string;
  readonly port: number;
  readonly robot: RobotTarget;
  readonly databaseUrl: string | undefined;
  /** PostgreSQL schema (ECO3D_DB_SCHEMA), so several instances or test runs can share a database. */
  readonly databaseSchema: string | undefined;
  readonly tls: { readonly certFile: string; readonly keyFile: string } | 'self-signed' | undefined;
  readonly adminPassword: string | undefined;
  readonly logLevel: (typeof logLevels)[number];
  readonly deadmanTimeoutMs: number;
  readonly broadcastHz: number;
  /** The secret that signs session tokens; from ECO3D_SECRET, else kept in the data directory. */
  readonly secret: string | undefined;
  /** The hospital this robot belongs to, and the robot's device id. Demo mode: demo / sim-1. */
  readonly tenantId: string;
  readonly deviceId: string;
  /** Password of the demo accounts on first start (else generated and printed once). */
  readonly demoPassword: string | undefined;
  /** STUN/TURN servers for the live WebRTC streams across networks (none: host candidates, LAN and loopback). */
  /** Build the browser apps at start when stale (ECO3D_VIEWER_BUILD=skip turns it off: tests, prebuilt installs). */
  readonly viewerBuild: boolean;
  readonly iceServers: readonly { readonly urls: string | readonly string[]; readonly username?: string; readonly credential?: string }[];
  /**
   * The URL clients reach this server at (ECO3D_PUBLIC_URL), for links we hand out: DICOMweb
   * RetrieveURLs and the FHIR Endpoint. Default: the URL the server listens on.
   */
  readonly publicUrl: string | undefined;
  /** An external PACS/VNA to push every stored study to: its DICOMweb base URL (STOW-RS), or dicom://AET@host:port (C-STORE). */
  readonly pacs: ExternalEndpoint | undefined;
  /** An external FHIR R4 server to send our resources to (its base URL). */
  readonly fhirServer: ExternalEndpoint | undefined;
  /** Edge → cloud: forward every scan metered here to this cloud instance, with a device token. */
  readonly uplink: { readonly url: string; readonly token: string } | undefined;
}

/** Credentials come from the environment only: flags show up in `ps`. */
export type ExternalAuth = { readonly kind: 'basic'; readonly username: string; readonly password: string } | { readonly kind: 'bearer'; readonly token: string };

export interface ExternalEndpoint {
  readonly url: string;
  readonly auth: ExternalAuth | undefined;
}

function externalEndpoint(
  input: ConfigInput,
  flag: string,
  prefix: string,
  problems: string[],
  allowDimse = false,
): ExternalEndpoint | undefined {
  const url = pick(input, flag, `${prefix}_URL`);
  const user = input.env[`${prefix}_USER`];
  const password = input.env[`${prefix}_PASSWORD`];
  const token = input.env[`${prefix}_TOKEN`];
  const has = (v: string | undefined): v is string => v !== undefined && v !== '';
  if (url.value === undefined) {
    if (has(user) || has(token)) problems.push(`${prefix}_USER/${prefix}_TOKEN given without ${url.source}`);
    return undefined;
  }
  let parsed: URL | undefined;
  try {
    parsed = new URL(url.value);
  } catch {
    // reported below
  }
  if (allowDimse && /^dicom:\/\/[^@/\s]+@[^/\s]+:\d{1,5}\/?(\?calling=[^&\s]+)?$/i.test(url.value)) {
    // A C-STORE SCP (dicom://CALLED_AET@host:port): DIMSE has no credentials of its own.
    if (has(user) || has(token)) problems.push(`${prefix}_USER/${prefix}_TOKEN: a dicom:// target takes no credentials`);
    return { url: url.value, auth: undefined };
  }
  if (parsed === undefined || !/^https?:$/.test(parsed.protocol) || parsed.username !== '' || parsed.password !== '') {
    problems.push(`${url.source}: expected an http(s) URL without credentials in it${allowDimse ? ', or dicom://CALLED_AET@host:port' : ''}, got "${url.value}"`);
    return undefined;
  }
  if (has(user) !== has(password)) problems.push(`${prefix}_USER and ${prefix}_PASSWORD go together: give both`);
  if (has(user) && has(token)) problems.push(`${prefix}_USER/${prefix}_PASSWORD and ${prefix}_TOKEN exclude each other`);
  const auth: ExternalAuth | undefined = has(token) ? { kind: 'bearer', token } : has(user) && has(password) ? { kind: 'basic', username: user, password } : undefined;
  return { url: url.value.replace(/\/+$/, ''), auth };
}

const iceServersSchema = z
  .array(
    z
      .object({
        urls: z.union([z.string().regex(/^(stun|stuns|turn|turns):/), z.array(z.string().regex(/^(stun|stuns|turn|turns):/)).min(1)]),
        username: z.string().optional(),
        credential: z.string().optional(),
      })
      .strict(),
  )
  .max(8);

/** Raw inputs: flags win over the environment. */
export interface ConfigInput {
  readonly flags: Readonly<Record<string, string | boolean | undefined>>;
  readonly env: Readonly<Record<string, string | undefined>>;
}

function pick(input: ConfigInput, flag: string, envName: string): { value: string | undefined; source: string } {
  const f = input.flags[flag];
  if (typeof f === 'string') return { value: f, source: `--${kebab(flag)}` };
  const e = input.env[envName];
  if (e !== undefined && e !== '') return { value: e, source: envName };
  return { value: undefined, source: `--${kebab(flag)}` };
}

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function intIn(name: string, raw: string | undefined, dflt: number, min: number, max: number, problems: string[]): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    problems.push(`${name}: expected an integer from ${min} to ${max}, got "${raw}"`);
    return dflt;
  }
  return n;
}

/** Builds and validates the configuration; throws ECO3D_ERR_CONFIG listing every bad value. */
export function loadConfig(input: ConfigInput): ServerConfig {
  const problems: string[] = [];

  const data = pick(input, 'data', 'ECO3D_DATA');
  const dataDir = resolve(data.value ?? './eco3d-data');

  const port = pick(input, 'port', 'PORT');
  const host = pick(input, 'host', 'ECO3D_HOST');
  const hostValue = host.value ?? '127.0.0.1';
  if (!z.union([z.ipv4(), z.ipv6(), z.literal('localhost')]).safeParse(hostValue).success) {
    problems.push(`${host.source}: expected an IP address to bind, got "${hostValue}"`);
  }

  const robot = pick(input, 'robot', 'ECO3D_ROBOT');
  let robotTarget: RobotTarget = { kind: 'sim' };
  try {
    robotTarget = parseRobotTarget(robot.value ?? 'sim');
  } catch (err) {
    problems.push(`${robot.source}: ${(err as Error).message}`);
  }

  const databaseUrl = input.env['DATABASE_URL'];
  if (databaseUrl !== undefined && databaseUrl !== '' && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push(`DATABASE_URL: expected postgres://user@host:port/db, got "${databaseUrl}"`);
  }

  const schema = input.env['ECO3D_DB_SCHEMA'];
  if (schema !== undefined && schema !== '' && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    problems.push(`ECO3D_DB_SCHEMA: lower-case letters, digits and _, got "${schema}"`);
  }

  const cert = pick(input, 'tlsCert', 'ECO3D_TLS_CERT');
  const key = pick(input, 'tlsKey', 'ECO3D_TLS_KEY');
  const selfSigned = input.flags['tlsSelfSigned'] === true || input.flags['tlsSelfSigned'] === 'true' || input.env['ECO3D_TLS_SELF_SIGNED'] === '1';
  let tls: ServerConfig['tls'];
  if (cert.value !== undefined || key.value !== undefined) {
    if (cert.value === undefined || key.value === undefined) problems.push('--tls-cert and --tls-key go together: give both');
    else tls = { certFile: resolve(cert.value), keyFile: resolve(key.value) };
    if (selfSigned) problems.push('--tls-self-signed and --tls-cert/--tls-key exclude each other');
  } else if (selfSigned) {
    tls = 'self-signed';
  }

  const level = pick(input, 'logLevel', 'LOG_LEVEL');
  const logLevel = (level.value ?? 'info') as ServerConfig['logLevel'];
  if (!logLevels.includes(logLevel)) problems.push(`${level.source}: expected one of ${logLevels.join(', ')}, got "${level.value}"`);

  const deadman = pick(input, 'deadmanMs', 'ECO3D_DEADMAN_MS');
  const broadcast = pick(input, 'broadcastHz', 'ECO3D_BROADCAST_HZ');

  const adminPassword = input.env['ECO3D_ADMIN_PASSWORD'];
  if (adminPassword !== undefined && adminPassword !== '' && adminPassword.length < 8) {
    problems.push('ECO3D_ADMIN_PASSWORD: at least 8 characters');
  }
  const secret = input.env['ECO3D_SECRET'];
  if (secret !== undefined && secret !== '' && secret.length < 32) problems.push('ECO3D_SECRET: at least 32 characters');

  const tenant = pick(input, 'tenant', 'ECO3D_TENANT');
  const device = pick(input, 'device', 'ECO3D_DEVICE');
  const tenantId = tenant.value ?? 'demo';
  const deviceId = device.value ?? 'sim-1';
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(tenantId)) problems.push(`${tenant.source}: lower-case letters, digits and -, got "${tenantId}"`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(deviceId)) problems.push(`${device.source}: letters, digits, . _ -, got "${deviceId}"`);
  const demoPassword = input.env['ECO3D_DEMO_PASSWORD'];
  if (demoPassword !== undefined && demoPassword !== '' && demoPassword.length < 8) problems.push('ECO3D_DEMO_PASSWORD: at least 8 characters');

  const ice = pick(input, 'iceServers', 'ECO3D_ICE_SERVERS');
  let iceServers: ServerConfig['iceServers'] = [];
  if (ice.value !== undefined && ice.value !== '') {
    try {
      const r = iceServersSchema.safeParse(JSON.parse(ice.value));
      if (r.success) iceServers = r.data;
      else problems.push(`${ice.source}: expected a JSON array of {urls: "stun:…"|"turn:…", username?, credential?}: ${r.error.issues[0]?.message ?? ''}`);
    } catch {
      problems.push(`${ice.source}: not valid JSON`);
    }
  }

  const publicUrl = pick(input, 'publicUrl', 'ECO3D_PUBLIC_URL');
  if (publicUrl.value !== undefined && !/^https?:\/\/[^/\s]+(\/[^\s]*)?$/.test(publicUrl.value)) {
    problems.push(`${publicUrl.source}: expected http(s)://host[:port][/path], got "${publicUrl.value}"`);
  }
  const pacs = externalEndpoint(input, 'pacs', 'ECO3D_PACS', problems, true);
  const fhirServer = externalEndpoint(input, 'fhirServer', 'ECO3D_FHIR_SERVER', problems);
  // The flag is --uplink-token; ECO3D_UPLINK_TOKEN is the better home (flags show in ps).
  const uplinkUrl = pick(input, 'uplink', 'ECO3D_UPLINK_URL');
  const uplinkToken = pick(input, 'uplinkToken', 'ECO3D_UPLINK_TOKEN');
  let uplink: ServerConfig['uplink'];
  if (uplinkUrl.value !== undefined) {
    if (!/^https?:\/\/[^/\s]+(\/[^\s]*)?$/.test(uplinkUrl.value)) problems.push(`${uplinkUrl.source}: expected the cloud instance's http(s)://host[:port], got "${uplinkUrl.value}"`);
    else if (uplinkToken.value === undefined || !uplinkToken.value.startsWith('e3t_')) problems.push(`${uplinkToken.source}: --uplink needs the device's usage:write token (e3t_…) minted by the cloud`);
    else uplink = { url: uplinkUrl.value.replace(/\/+$/, ''), token: uplinkToken.value };
  } else if (uplinkToken.value !== undefined) {
    problems.push(`${uplinkToken.source}: an uplink token without --uplink URL`);
  }

  const cfg: ServerConfig = {
    publicUrl: publicUrl.value?.replace(/\/+$/, ''),
    pacs,
    fhirServer,
    uplink,
    viewerBuild: input.env['ECO3D_VIEWER_BUILD'] !== 'skip',
    iceServers,
    tenantId,
    deviceId,
    demoPassword: demoPassword === '' ? undefined : demoPassword,
    dataDir,
    host: hostValue,
    port: intIn(port.source, port.value, 8080, 0, 65535, problems),
    robot: robotTarget,
    databaseUrl: databaseUrl === '' ? undefined : databaseUrl,
    databaseSchema: schema === '' ? undefined : schema,
    tls,
    adminPassword: adminPassword === '' ? undefined : adminPassword,
    logLevel,
    deadmanTimeoutMs: intIn(deadman.source, deadman.value, 300, 50, 5000, problems),
    broadcastHz: intIn(broadcast.source, broadcast.value, 30, 1, 120, problems),
    secret: secret === '' ? undefined : secret,
  };
  if (problems.length > 0) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `invalid configuration:\n  - ${problems.join('\n  - ')}`, { details: { problems } });
  }
  return cfg;
}

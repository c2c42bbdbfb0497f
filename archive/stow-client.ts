// A STOW-RS client (DICOM PS3.18 §10.5 "Store Transaction"): posts Part-10 instances to a
// DICOMweb origin server (a PACS, a VNA, the cloud lake) as
// `multipart/related; type="application/dicom"`, and turns the Store Instances Response
// (PS3.18 §10.5.3: Referenced SOP Sequence, Failed SOP Sequence with Failure Reason) into a typed
// result, or an Eco3dError carrying the server's status and reasons.
//
// The body is streamed from the files with a Content-Length computed up front (file sizes from
// stat): a 256³ volume is 16 MiB and a study several of them, so no whole-request buffer, and no
// chunked transfer encoding either, which some DICOMweb servers refuse.
//
// Seen with Orthanc 1.10 + DICOMweb plugin 1.7 (test/orthanc.e2e.test.ts): an instance already
// stored is answered 200 with the instance in the Referenced SOP Sequence (a re-push is
// harmless); a part that is not DICOM gets 400 (not 202) with an empty Failed SOP Sequence; an
// instance of another study than the one in the URL gets 409 with Failure Reason 0x0110.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Eco3dError } from '../protocols/errors.ts';

/** How the client authenticates to the PACS. */
export type StowAuth =
  | { readonly kind: 'basic'; readonly username: string; readonly password: string }
  | { readonly kind: 'bearer'; readonly token: string };

/** One instance to store: the path of a Part-10 file, or its bytes. */
export type StowSource = string | Uint8Array;

export interface StowOptions {
  readonly auth?: StowAuth | undefined;
  /** The whole exchange (connect, upload, answer). Default 60 s. */
  readonly timeoutMs?: number | undefined;
  /** Aborts the request (e.g. the outbox dispatcher giving up on a handler). */
  readonly signal?: AbortSignal | undefined;
  /** Post to `/studies/{uid}`: the server then refuses instances of another study. */
  readonly studyInstanceUid?: string | undefined;
}

export interface StowStoredInstance {
  readonly sopClassUid: string | undefined;
  readonly sopInstanceUid: string;
  readonly retrieveUrl: string | undefined;
  /** Warning Reason (0008,1196), e.g. 0xB000 coercion of data elements; undefined when clean. */
  readonly warningReason: number | undefined;
}

export interface StowFailedInstance {
  readonly sopClassUid: string | undefined;
  /** Undefined when the server could not even read the instance's UID. */
  readonly sopInstanceUid: string | undefined;
  /** Failure Reason (0008,1197), PS3.18 Table 10.5.3-1 / PS3.4 Annex GG. */
  readonly failureReason: number | undefined;
}

/** The Store Instances Response, parsed. */
export interface StoreInstancesResponse {
  /** Retrieve URL (0008,1190) of the study, when the server gives one. */
  readonly retrieveUrl: string | undefined;
  readonly stored: readonly StowStoredInstance[];
  readonly failed: readonly StowFailedInstance[];
  /** Other Failures Sequence (0008,119A): failures not tied to an instance. */
  readonly otherFailures: readonly number[];
}

export interface StowResult extends StoreInstancesResponse {
  readonly httpStatus: number;
  /** False when the server answered 2xx without a (JSON) Store Instances Response. */
  readonly hasResponseBody: boolean;
  /** Bytes of the request body sent. */
  readonly bodyBytes: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const MAX_RESPONSE_BYTES = 16 << 20;
const READ_CHUNK_BYTES = 1 << 20;

// PS3.18 Table 10.5.3-1 and PS3.4 Table GG.4-1 (C-STORE statuses, which STOW-RS reuses).
const FAILURE_REASONS: Readonly<Record<number, string>> = {
  0x0110: 'processing failure',
  0x0112: 'no such SOP instance',
  0x0117: 'invalid SOP instance',
  0x0122: 'SOP class not supported',
  0x0124: 'refused: not authorized',
  0xa700: 'out of resources',
  0xa7ff: 'out of resources',
  0xa900: 'data set does not match SOP class',
  0xa9ff: 'data set does not match SOP class',
  0xc000: 'cannot understand',
  0xc122: 'referenced transfer syntax not supported',
  0xc123: 'transfer syntax not supported',
};

/** `0x0110 processing failure`, for messages. */
export function describeFailureReason(code: number | undefined): string {
  if (code === undefined) return 'no reason given';
  const hex = `0x${code.toString(16).toUpperCase().padStart(4, '0')}`;
  const name = FAILURE_REASONS[code] ?? ((code & 0xf000) === 0xc000 ? 'cannot understand' : undefined);
  return name === undefined ? hex : `${hex} ${name}`;
}

/**
 * Stores `instances` at the DICOMweb service `baseUrl` (e.g. `http://pacs:8042/dicom-web`) in one
 * request. Resolves when the server stored all of them (2xx without failures; warnings are kept in
 * the result). Rejects with ECO3D_ERR_UPSTREAM on a non-2xx answer, on any failed instance or on
 * a network error, and with ECO3D_ERR_TIMEOUT when `timeoutMs` passes; a missing file rejects
 * with its fs error (ENOENT) before anything is sent.
 */
export async function stowInstances(baseUrl: string, instances: readonly StowSource[], options: StowOptions = {}): Promise<StowResult> {
  if (instances.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'STOW-RS: no instance to store');
  const target = stowUrl(baseUrl, options.studyInstanceUid);
  const shown = redact(target);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const sizes = await Promise.all(instances.map(async (s) => (typeof s === 'string' ? (await stat(s)).size : s.byteLength)));
  // 32 hex digits: a chance collision with the binary content is out of reach (RFC 2046 §5.1.1).
  const boundary = `eco3d-${randomBytes(16).toString('hex')}`;
  const partHead = Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1');
  const crlf = Buffer.from('\r\n', 'latin1');
  const tail = Buffer.from(`--${boundary}--\r\n`, 'latin1');
  const bodyBytes = sizes.reduce((sum, n) => sum + partHead.length + n + crlf.length, tail.length);

  async function* body(): AsyncGenerator<Buffer | Uint8Array> {
    for (const [i, source] of instances.entries()) {
      yield partHead;
      if (typeof source === 'string') {
        let read = 0;
        for await (const chunk of createReadStream(source, { highWaterMark: READ_CHUNK_BYTES })) {
          read += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        // The Content-Length was promised from stat: a file that changed meanwhile would corrupt the body.
        if (read !== sizes[i]) throw new Error(`${source} changed size while being sent (${sizes[i]} → ${read} bytes)`);
      } else {
        yield source;
      }
      yield crlf;
    }
    yield tail;
  }

  const headers: Record<string, string> = {
    'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`,
    'content-length': String(bodyBytes),
    accept: 'application/dicom+json, application/json;q=0.9, */*;q=0.1',
  };
  const authorization = authHeader(options.auth, target);
  if (authorization !== undefined) headers.authorization = authorization;

  const { status, statusMessage, contentType, text } = await exchange(target, headers, body, timeoutMs, options.signal, shown);
  const parsed = parseJsonBody(text, contentType);
  const response = parsed === undefined ? undefined : parseStoreInstancesResponse(parsed);
  const ok = status >= 200 && status < 300;
  if (!ok || (response !== undefined && (response.failed.length > 0 || response.otherFailures.length > 0))) {
    throw new Eco3dError('ECO3D_ERR_UPSTREAM', failureMessage(shown, status, statusMessage, response, text, instances.length), {
      details: {
        httpStatus: status,
        failed: (response?.failed ?? []).map((f) => ({ sopInstanceUid: f.sopInstanceUid, failureReason: f.failureReason })),
        stored: (response?.stored ?? []).map((s) => s.sopInstanceUid),
      },
    });
  }
  return {
    httpStatus: status,
    hasResponseBody: response !== undefined,
    bodyBytes,
    retrieveUrl: response?.retrieveUrl,
    stored: response?.stored ?? [],
    failed: [],
    otherFailures: [],
  };
}

/** Parses a Store Instances Response in the DICOM JSON model (PS3.18 F.2). Lenient on absent parts. */
export function parseStoreInstancesResponse(json: unknown): StoreInstancesResponse {
  const ds = asObject(json) ?? {};
  const stored: StowStoredInstance[] = [];
  for (const item of sequence(ds['00081199'])) {
    const sopInstanceUid = firstString(item['00081155']);
    if (sopInstanceUid === undefined) continue;
    stored.push({
      sopClassUid: firstString(item['00081150']),
      sopInstanceUid,
      retrieveUrl: firstString(item['00081190']),
      warningReason: firstNumber(item['00081196']),
    });
  }
  const failed: StowFailedInstance[] = sequence(ds['00081198']).map((item) => ({
    sopClassUid: firstString(item['00081150']),
    sopInstanceUid: firstString(item['00081155']),
    failureReason: firstNumber(item['00081197']),
  }));
  const otherFailures = sequence(ds['0008119A'] ?? ds['0008119a']).map((item) => firstNumber(item['00081197']) ?? 0);
  return { retrieveUrl: firstString(ds['00081190']), stored, failed, otherFailures };
}

/**
 * Splits `http://user:password@pacs/dicom-web` into the URL without its credentials and Basic
 * auth (the `--pacs` flag can carry them; Node's HTTP client would not send them by itself).
 */
export function dicomWebTarget(url: string): { baseUrl: string; auth: StowAuth | undefined } {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `not a URL: ${JSON.stringify(url)}`, { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Eco3dError('ECO3D_ERR_CONFIG', `a DICOMweb URL is http or https, not ${u.protocol}`);
  const auth: StowAuth | undefined =
    u.username === '' ? undefined : { kind: 'basic', username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = '';
  u.password = '';
  return { baseUrl: u.toString().replace(/\/+$/, ''), auth };
}

// ---------------------------------------------------------------------------------------------

function stowUrl(baseUrl: string, studyInstanceUid: string | undefined): URL {
  let u: URL;
  try {
    u = new URL(baseUrl);
  } catch (err) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `STOW-RS: not a URL: ${JSON.stringify(redactText(baseUrl))}`, { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Eco3dError('ECO3D_ERR_CONFIG', `STOW-RS: http or https, not ${u.protocol}`);
  if (studyInstanceUid !== undefined && !/^[0-9.]{1,64}$/.test(studyInstanceUid)) {
    throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', `STOW-RS: bad Study Instance UID ${JSON.stringify(studyInstanceUid)}`);
  }
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/studies${studyInstanceUid === undefined ? '' : `/${studyInstanceUid}`}`;
  return u;
}

function authHeader(auth: StowAuth | undefined, target: URL): string | undefined {
  if (auth?.kind === 'bearer') return `Bearer ${auth.token}`;
  if (auth?.kind === 'basic') return `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}`;
  // Credentials written in the URL itself.
  if (target.username !== '') return `Basic ${Buffer.from(`${decodeURIComponent(target.username)}:${decodeURIComponent(target.password)}`, 'utf8').toString('base64')}`;
  return undefined;
}

/** The URL for messages and logs: never the password. */
function redact(u: URL): string {
  const c = new URL(u);
  c.username = '';
  c.password = '';
  return c.toString();
}

function redactText(s: string): string {
  return s.replace(/\/\/[^/@]*@/, '//');
}

interface Answer {
  status: number;
  statusMessage: string;
  contentType: string;
  text: string;
}

/**
 * One POST with a streamed body. The answer can come before the upload ends (401, 413): it wins
 * over the upload's broken pipe. Every path settles: the timer and the caller's signal destroy
 * the request, and the request's errors reject.
 */
function exchange(
  target: URL,
  headers: Record<string, string>,
  body: () => AsyncGenerator<Buffer | Uint8Array>,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  shown: string,
): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const aborted = (): Eco3dError => {
      const reason: unknown = signal?.reason;
      return reason instanceof Eco3dError ? reason : new Eco3dError('ECO3D_ERR_UPSTREAM', `STOW-RS to ${shown} aborted: ${errorMessage(reason)}`, { cause: reason });
    };
    if (signal?.aborted === true) {
      reject(aborted());
      return;
    }
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    // Credentials travel in the Authorization header, never in the request line.
    const url = new URL(target);
    url.username = '';
    url.password = '';
    const req = send(url, { method: 'POST', headers });
    let settled = false;
    const finish = (err: unknown, answer?: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (answer !== undefined) {
        resolve(answer);
        // An early answer (401, 413) ends the upload too.
        if (!req.writableFinished) req.destroy();
        return;
      }
      reject(err instanceof Eco3dError ? err : new Eco3dError('ECO3D_ERR_UPSTREAM', `STOW-RS to ${shown} failed: ${errorMessage(err)}`, { cause: err }));
      req.destroy(); // stops the upload and frees the socket
    };
    const timer = setTimeout(() => finish(new Eco3dError('ECO3D_ERR_TIMEOUT', `STOW-RS to ${shown}: no answer within ${timeoutMs} ms`)), timeoutMs);
    const onAbort = (): void => finish(aborted());
    signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => finish(err));
    req.on('response', (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          finish(new Eco3dError('ECO3D_ERR_UPSTREAM', `STOW-RS to ${shown}: answer larger than ${MAX_RESPONSE_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (err) => finish(err));
      res.on('close', () => {
        if (!res.complete) finish(new Error('the connection closed in the middle of the answer'));
      });
      res.on('end', () =>
        finish(undefined, {
          status: res.statusCode ?? 0,
          statusMessage: res.statusMessage ?? '',
          contentType: String(res.headers['content-type'] ?? ''),
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    // An upload cut short by an early answer is not a failure; any other upload error is.
    pipeline(Readable.from(body(), { objectMode: false }), req).catch((err: unknown) => {
      if (!settled && !req.writableFinished) {
        // Let an answer already on its way win (it arrives on the same socket).
        setImmediate(() => finish(err));
      }
    });
  });
}

function parseJsonBody(text: string, contentType: string): unknown {
  if (text.trim() === '') return undefined;
  // Orthanc sends its error answers without a content type: try JSON whatever the header says,
  // unless it claims to be XML or HTML.
  if (/xml|html/i.test(contentType)) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function failureMessage(
  shown: string,
  status: number,
  statusMessage: string,
  response: StoreInstancesResponse | undefined,
  text: string,
  sent: number,
): string {
  const head = `PACS answered HTTP ${status}${statusMessage === '' ? '' : ` ${statusMessage}`} to STOW-RS at ${shown}`;
  if (response === undefined) {
    const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 300);
    return snippet === '' ? head : `${head}: ${snippet}`;
  }
  const reasons = response.failed.map((f) => `${f.sopInstanceUid ?? '(unreadable instance)'}: ${describeFailureReason(f.failureReason)}`);
  for (const o of response.otherFailures) reasons.push(`other failure: ${describeFailureReason(o)}`);
  const unaccounted = sent - response.stored.length - response.failed.length;
  if (reasons.length === 0 && unaccounted > 0) reasons.push(`${unaccounted} of ${sent} instance(s) neither stored nor listed as failed`);
  const storedNote = response.stored.length > 0 ? ` (${response.stored.length} of ${sent} stored)` : '';
  return reasons.length === 0 ? `${head}${storedNote}` : `${head}${storedNote}: ${reasons.join('; ')}`;
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

type Json = Record<string, unknown>;

function asObject(v: unknown): Json | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : undefined;
}

function values(element: unknown): unknown[] {
  const e = asObject(element);
  return Array.isArray(e?.Value) ? (e.Value as unknown[]) : [];
}

function sequence(element: unknown): Json[] {
  return values(element)
    .map(asObject)
    .filter((x): x is Json => x !== undefined);
}

function firstString(element: unknown): string | undefined {
  const v = values(element)[0];
  return typeof v === 'string' ? v : undefined;
}

function firstNumber(element: unknown): number | undefined {
  const v = values(element)[0];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  return undefined;
}

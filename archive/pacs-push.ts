// Push to the hospital PACS (ARCHITECTURE.md, "the edge": studies pushed to the hospital PACS over
// DICOMweb). An outbox consumer: each `DicomInstanceStored` event is one STOW-RS of that instance
// (or one C-STORE, for a PACS without DICOMweb).
//
// Durability comes from the outbox, not from here: the event row is written in the transaction
// that stored the instance, and a delivery that throws is retried by the dispatcher with
// exponential back-off, across restarts, until the PACS takes it. So a PACS that is down, slow or
// refusing loses no study; it only grows the `pacs-push` backlog (outboxBacklog), which is the
// operator's signal. Delivery is at least once, and a re-push is harmless: a PACS answers a
// SOP Instance it already holds as stored (Orthanc: STOW-RS 200 with the instance referenced,
// C-STORE status 0000; both checked in test/orthanc.e2e.test.ts).
//
// One instance per request: the event is per instance, a failure then names one instance and
// blocks nothing else, and no request is larger than its instance.
import { Eco3dError } from '../protocols/errors.ts';
import type { DomainEvent, DicomInstanceStoredV1 } from '../protocols/events.ts';
import type { OutboxConsumer } from '../store/index.ts';
import { cStoreInstances, type CStoreTarget } from './dimse-store.ts';
import { dicomWebTarget, stowInstances, type StowAuth } from './stow-client.ts';

export const PACS_PUSH_CONSUMER = 'pacs-push';

/** The slice of a pino logger this consumer uses. */
export interface PacsPushLog {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** Where instances go: a DICOMweb service (STOW-RS) or a DICOM C-STORE SCP. */
export type PacsTarget =
  | {
      /** The PACS's DICOMweb root, e.g. `http://pacs:8042/dicom-web` (STOW-RS posts to `<baseUrl>/studies`). */
      readonly baseUrl: string;
      readonly auth?: StowAuth | undefined;
    }
  | { readonly dimse: CStoreTarget };

export type PacsPushOptions = PacsTarget & {
  /**
   * Per push: connect, upload, answer. Default 50 s, under the dispatcher's default handler
   * timeout (60 s), so that the error recorded is ours with the PACS's address in it.
   */
  readonly timeoutMs?: number | undefined;
  /**
   * The stored Part-10 file of an instance, or null when the archive no longer holds it
   * (`DicomArchive.instanceFile`).
   */
  readonly instanceFile: (tenantId: string, sopInstanceUid: string) => Promise<string | null> | string | null;
  /**
   * Only these tenants' instances are pushed (an edge serves one hospital; a shared server must
   * not send one hospital's studies to another's PACS). Default: every tenant.
   */
  readonly tenantIds?: readonly string[] | undefined;
  readonly log?: PacsPushLog | undefined;
};

const DEFAULT_TIMEOUT_MS = 50_000;

/**
 * Reads a `--pacs` value: `http(s)://[user:password@]host[:port]/path` is a DICOMweb root (the
 * credentials become Basic auth; a bearer token is set in code), `dicom://CALLED_AET@host:port`
 * (optionally `?calling=OUR_AET`) a C-STORE SCP.
 */
export function parsePacsTarget(url: string): PacsTarget {
  if (!/^dicom:/i.test(url)) return dicomWebTarget(url);
  const m = /^dicom:\/\/([^@/]+)@(\[[0-9a-f:.]+\]|[^:/?]+):(\d{1,5})\/?(?:\?calling=([^&]+))?$/i.exec(url);
  const port = m === null ? NaN : Number(m[3]);
  const aeOk = (ae: string | undefined): boolean => ae === undefined || (/^[\x20-\x7e]{1,16}$/.test(ae) && ae.trim() !== '' && !ae.includes('\\'));
  if (m === null || !(port >= 1 && port <= 65535) || !aeOk(decodeURIComponent(m[1]!)) || !aeOk(m[4] === undefined ? undefined : decodeURIComponent(m[4]))) {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `bad DICOM target ${JSON.stringify(url)}: dicom://CALLED_AET@host:port[?calling=OUR_AET]`);
  }
  const calling = m[4] === undefined ? undefined : decodeURIComponent(m[4]);
  return { dimse: { calledAet: decodeURIComponent(m[1]!), host: m[2]!.replace(/^\[|\]$/g, ''), port, ...(calling === undefined ? {} : { callingAet: calling }) } };
}

/** The `pacs-push` outbox consumer. Register it on the server's `OutboxDispatcher`. */
export function pacsPushConsumer(options: PacsPushOptions): OutboxConsumer {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const log = options.log;
  const tenants = options.tenantIds === undefined ? undefined : new Set(options.tenantIds);
  const pacs = 'dimse' in options ? `dicom://${options.dimse.calledAet}@${options.dimse.host}:${options.dimse.port}` : shownUrl(options.baseUrl);

  /** Sends one file; resolves when the PACS confirmed that very instance. */
  async function send(event: DicomInstanceStoredV1, file: string, signal: AbortSignal): Promise<Record<string, unknown>> {
    if ('dimse' in options) {
      const [r] = await cStoreInstances(options.dimse, [file], { timeoutMs, signal });
      if (r?.sopInstanceUid !== event.sopInstanceUid) {
        throw new Eco3dError('ECO3D_ERR_UPSTREAM', `the file of ${event.sopInstanceUid} holds instance ${r?.sopInstanceUid ?? '(none)'}: not pushed`);
      }
      return r.status === 0 ? {} : { status: r.status };
    }
    const result = await stowInstances(options.baseUrl, [file], { auth: options.auth, timeoutMs, signal });
    const mine = result.stored.find((s) => s.sopInstanceUid === event.sopInstanceUid);
    // A PACS that answered with a Store Instances Response must name our instance in it.
    if (result.hasResponseBody && mine === undefined) {
      throw new Eco3dError('ECO3D_ERR_UPSTREAM', `PACS at ${pacs} answered HTTP ${result.httpStatus} to STOW-RS without listing instance ${event.sopInstanceUid} as stored`);
    }
    return { bytes: result.bodyBytes, ...(mine?.warningReason === undefined ? {} : { warningReason: mine.warningReason }) };
  }

  async function push(event: DicomInstanceStoredV1, signal: AbortSignal): Promise<void> {
    if (tenants !== undefined && !tenants.has(event.tenantId)) return;
    const where = { tenantId: event.tenantId, studyInstanceUid: event.studyInstanceUid, sopInstanceUid: event.sopInstanceUid, pacs };
    const file = await options.instanceFile(event.tenantId, event.sopInstanceUid);
    if (file === null) {
      // Deleted since (or never committed): retrying cannot bring it back.
      log?.warn(where, 'PACS push: the instance is no longer in the archive; not pushed');
      return;
    }
    let extra: Record<string, unknown>;
    try {
      extra = await send(event, file, signal);
    } catch (err) {
      if (isMissingFile(err) && (await options.instanceFile(event.tenantId, event.sopInstanceUid)) === null) {
        log?.warn(where, 'PACS push: the instance was deleted while being pushed; not pushed');
        return;
      }
      // Anything else (PACS down, refusing, timing out; a file missing behind the archive's
      // index) is retried with back-off: the dispatcher records this error as last_error.
      throw err;
    }
    log?.info({ ...where, ...extra }, 'PACS push: instance stored');
  }

  return {
    name: PACS_PUSH_CONSUMER,
    eventTypes: ['DicomInstanceStored'],
    async handle(event: DomainEvent, signal: AbortSignal): Promise<void> {
      if (event.type !== 'DicomInstanceStored') return;
      await push(event, signal);
    },
  };
}

function isMissingFile(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `PACS push: not a URL: ${JSON.stringify(url.replace(/\/\/[^/@]*@/, '//'))}`);
  }
}

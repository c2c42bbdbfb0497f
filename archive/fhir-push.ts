// Push to an external FHIR server: an outbox consumer of FhirResourceChanged that PUTs the
// resource to `{base}/{type}/{id}` (update-as-create: the id is ours, so a replay overwrites
// instead of duplicating). A non-2xx answer, a network error or a timeout throws, and the outbox
// dispatcher retries with back-off (store/outbox.ts): delivery survives restarts and outages.
//
// Order: a retried old version must not overwrite a newer one that got through meanwhile, so the
// consumer always reads the resource's current version, and skips an event whose version is no
// longer current (the newer version's own event carries it).
import { Eco3dError } from '../protocols/errors.ts';
import type { DomainEvent } from '../protocols/events.ts';
import { FHIR_JSON, type Resource } from '../protocols/fhir.ts';
import type { OutboxConsumer } from '../store/index.ts';

export interface FhirPushOptions {
  /** The external server's FHIR base URL, e.g. `https://fhir.hospital.example/r4`. */
  readonly baseUrl: string;
  /** Sent with every request, e.g. `{ authorization: 'Bearer …' }`. */
  readonly headers?: Readonly<Record<string, string>>;
  /** One PUT, answer included. Default 10 s. */
  readonly timeoutMs?: number;
  /** The resource's current version (createFhirService(…).readResource fits). */
  readonly readResource: (tenantId: string, resourceType: string, id: string) => Promise<{ readonly versionId: number; readonly resource: Resource } | undefined>;
  /** Only these tenants' resources (an edge pushes its own hospital's). Default: every tenant's. */
  readonly tenantIds?: readonly string[];
  /** The outbox consumer's name (deliveries are tracked under it). Default `fhir-push`. */
  readonly name?: string;
  /** For tests. Default: the global fetch. */
  readonly fetch?: typeof fetch;
}

/** Keys delivered by this process, newest last: a replay after a lost acknowledgement is not re-sent. */
const REMEMBERED_KEYS = 1000;

export function fhirPushConsumer(opts: FhirPushOptions): OutboxConsumer {
  let base: URL;
  try {
    base = new URL(opts.baseUrl);
  } catch {
    throw new Eco3dError('ECO3D_ERR_CONFIG', `the FHIR push base URL is not an absolute URL: ${JSON.stringify(opts.baseUrl)}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Eco3dError('ECO3D_ERR_CONFIG', `the FHIR push base URL must be http(s): ${opts.baseUrl}`);
  const baseUrl = base.toString().replace(/\/+$/, '');
  const timeoutMs = opts.timeoutMs ?? 10_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Eco3dError('ECO3D_ERR_CONFIG', `FHIR push timeoutMs must be > 0, got ${timeoutMs}`);
  const doFetch = opts.fetch ?? fetch;
  const delivered = new Set<string>();

  const remember = (key: string): void => {
    delivered.add(key);
    if (delivered.size > REMEMBERED_KEYS) delivered.delete(delivered.values().next().value!);
  };

  return {
    name: opts.name ?? 'fhir-push',
    eventTypes: ['FhirResourceChanged'],
    async handle(event: DomainEvent, signal: AbortSignal): Promise<void> {
      if (event.type !== 'FhirResourceChanged') return;
      if (opts.tenantIds !== undefined && !opts.tenantIds.includes(event.tenantId)) return;
      if (delivered.has(event.idempotencyKey)) return;
      const current = await opts.readResource(event.tenantId, event.resourceType, event.id);
      if (current === undefined) throw new Eco3dError('ECO3D_ERR_INTERNAL', `${event.resourceType}/${event.id} is not in the FHIR store`);
      if (current.versionId > Number(event.versionId)) {
        remember(event.idempotencyKey); // superseded: the newer version's event sends it
        return;
      }
      const url = `${baseUrl}/${encodeURIComponent(event.resourceType)}/${encodeURIComponent(event.id)}`;
      const timeout = AbortSignal.timeout(timeoutMs);
      let res: Response;
      try {
        res = await doFetch(url, {
          method: 'PUT',
          headers: { ...opts.headers, 'content-type': `${FHIR_JSON}; charset=utf-8`, accept: FHIR_JSON },
          body: JSON.stringify(forRemote(current.resource)),
          signal: AbortSignal.any([signal, timeout]),
        });
      } catch (err) {
        if (timeout.aborted) throw new Eco3dError('ECO3D_ERR_TIMEOUT', `PUT ${url}: no answer within ${timeoutMs} ms`, { cause: err });
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Eco3dError('ECO3D_ERR_TIMEOUT', `PUT ${url} aborted`, { cause: err });
        throw new Eco3dError('ECO3D_ERR_UPSTREAM', `PUT ${url} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      let text: string;
      try {
        text = await res.text();
      } catch (err) {
        // The body stalled past the deadline: the outcome is unknown, so the PUT is retried.
        throw new Eco3dError(timeout.aborted ? 'ECO3D_ERR_TIMEOUT' : 'ECO3D_ERR_UPSTREAM', `PUT ${url}: the answer did not arrive whole`, { cause: err });
      }
      if (!res.ok) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `PUT ${url} answered ${res.status}${outcomeText(text)}`, { details: { status: res.status } });
      remember(event.idempotencyKey);
    },
  };
}

/** The remote keeps its own version ids and times: ours would only confuse it. */
function forRemote(r: Resource): Resource {
  const { meta, ...rest } = r as Resource & { meta?: Record<string, unknown> };
  if (meta === undefined) return r;
  const { versionId: _v, lastUpdated: _l, ...otherMeta } = meta;
  return Object.keys(otherMeta).length === 0 ? rest : { ...rest, meta: otherMeta };
}

/** The diagnostics of an OperationOutcome answer, or the start of the body. */
function outcomeText(body: string): string {
  if (body.trim() === '') return '';
  try {
    const o = JSON.parse(body) as { resourceType?: unknown; issue?: Array<{ diagnostics?: unknown; details?: { text?: unknown } }> };
    if (o.resourceType === 'OperationOutcome' && Array.isArray(o.issue)) {
      const msgs = o.issue.map((i) => (typeof i.diagnostics === 'string' ? i.diagnostics : typeof i.details?.text === 'string' ? i.details.text : '')).filter((s) => s !== '');
      if (msgs.length > 0) return `: ${msgs.join('; ').slice(0, 500)}`;
    }
  } catch {
    // not JSON: quote it
  }
  return `: ${body.slice(0, 200)}`;
}

// Billing's outbox consumers (store/outbox.ts: at least once, retried with back-off, durable).
//
// - `billing` meters every finished acquisition into the ledger. Redelivery is harmless: the
//   ledger's unique key answers the original entry.
// - `billing-uplink` (an edge instance started with --uplink) forwards each scan metered here to
//   the cloud instance's ingestion endpoint, with the device's token. The cloud dedupes on the
//   same key, so a retry after a lost answer, or after the cloud was down, counts once.
import { Eco3dError } from '../protocols/errors.ts';
import type { DomainEvent } from '../protocols/events.ts';
import type { Database, OutboxConsumer } from '../store/index.ts';
import { meterAcquisition } from './ledger.ts';

export const BILLING_CONSUMER = 'billing';
export const UPLINK_CONSUMER = 'billing-uplink';
export const USAGE_EVENTS_PATH = '/api/billing/usage-events';

export function billingConsumer(db: Database, options: { onMetered?: () => void } = {}): OutboxConsumer {
  return {
    name: BILLING_CONSUMER,
    eventTypes: ['AcquisitionCompleted', 'AcquisitionAborted'],
    handle: async (event: DomainEvent) => {
      if (event.type !== 'AcquisitionCompleted' && event.type !== 'AcquisitionAborted') return;
      const r = await meterAcquisition(db, event);
      if (r.status === 'created') options.onMetered?.();
    },
  };
}

export interface UplinkOptions {
  /** The cloud instance's base URL (its /api/billing/usage-events takes the batch). */
  readonly url: string;
  /** A `usage:write` token minted in the cloud for this device. */
  readonly token: string;
  /** Per request; the outbox retries a timeout. Default 30 s. */
  readonly timeoutMs?: number;
}

export function uplinkConsumer(o: UplinkOptions): OutboxConsumer {
  const endpoint = new URL(USAGE_EVENTS_PATH, o.url.endsWith('/') ? o.url : `${o.url}/`).toString();
  const timeoutMs = o.timeoutMs ?? 30_000;
  return {
    name: UPLINK_CONSUMER,
    eventTypes: ['UsageRecorded'],
    handle: async (event: DomainEvent, signal: AbortSignal) => {
      if (event.type !== 'UsageRecorded') return;
      const body = {
        events: [
          {
            type: 'scan',
            deviceId: event.deviceId,
            acquisitionUid: event.acquisitionUid,
            occurredAt: event.occurredAt,
            billable: event.billable,
            ...(event.reason === undefined ? {} : { reason: event.reason }),
          },
        ],
      };
      let res: Response;
      try {
        res = await fetch(endpoint, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${o.token}` },
          body: JSON.stringify(body),
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
        });
      } catch (err) {
        throw new Eco3dError('ECO3D_ERR_UPSTREAM', `uplink ${endpoint} unreachable: ${(err as Error).message}`, { cause: err });
      }
      const text = await res.text();
      // 2xx: stored now or before (a duplicate is the original record: done either way). Anything
      // else is retried; a 4xx will keep failing until someone fixes the token or the device.
      if (!res.ok) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `uplink ${endpoint} answered ${res.status}: ${text.slice(0, 500)}`, { details: { status: res.status } });
    },
  };
}

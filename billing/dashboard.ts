// The admin dashboard's one answer (viewer/billing.html): scans per device and day, revenue per
// tenant, forecast against actual for risk-sharing contracts, open and issued invoices.
import { toEco3dError } from '../protocols/errors.ts';
import type { Queryable } from '../store/index.ts';
import { listContracts } from './contract-store.ts';
import { getBillingSettings, LEDGER_COLUMNS, toEntry, type LedgerRow } from './ledger.ts';
import { listIssuedInvoices, viewInvoice } from './invoices.ts';
import { dayStartMs, daysOfPeriod, type Period, periodBounds } from './periods.ts';

export interface Dashboard {
  readonly period: Period;
  readonly generatedAtMs: number;
  readonly tenants: { tenantId: string; timeZone: string }[];
  readonly scansPerDeviceDay: { tenantId: string; deviceId: string; date: string; billable: number; nonBillable: number }[];
  readonly revenueByTenant: (
    | { tenantId: string; period: Period; status: 'open' | 'issued'; subtotalCents: number; taxCents: number; totalCents: number }
    | { tenantId: string; period: Period; status: 'error'; error: { code: string; message: string } }
  )[];
  readonly riskSharing: {
    tenantId: string;
    contractId: string;
    deviceId: string;
    forecastScans: number;
    bandScans: number;
    actualScans: number;
    daysInPeriod: number;
    daily: { date: string; actualCumulative: number }[];
  }[];
  readonly invoices: { tenantId: string; period: Period; status: 'open' | 'issued'; number?: string; totalCents: number; issuedAtMs?: number }[];
}

export async function dashboard(q: Queryable, tenantIds: readonly string[], period: Period, nowMs: number): Promise<Dashboard> {
  const out: Dashboard = { period, generatedAtMs: nowMs, tenants: [], scansPerDeviceDay: [], revenueByTenant: [], riskSharing: [], invoices: [] };
  for (const tenantId of tenantIds) {
    const { timeZone } = await getBillingSettings(q, tenantId);
    out.tenants.push({ tenantId, timeZone });
    const { startMs, endMs } = periodBounds(period, timeZone);
    const days = daysOfPeriod(period);
    const starts = days.map((d) => dayStartMs(d, timeZone));
    const dayIndex = (ms: number): number => {
      let i = 0;
      while (i + 1 < starts.length && starts[i + 1]! <= ms) i++;
      return i;
    };
    const scans = (
      await q.query<LedgerRow>(
        `SELECT ${LEDGER_COLUMNS} FROM usage_ledger u WHERE tenant_id = $1 AND kind = 'usage' AND occurred_at >= $2::timestamptz AND occurred_at < $3::timestamptz
         AND NOT EXISTS (SELECT 1 FROM usage_ledger r WHERE r.reverses = u.id) ORDER BY occurred_at, id`,
        [tenantId, new Date(startMs).toISOString(), new Date(endMs).toISOString()],
      )
    ).map(toEntry);
    const cells = new Map<string, { deviceId: string; day: number; billable: number; nonBillable: number }>();
    for (const s of scans) {
      const day = dayIndex(s.occurredAtMs);
      const k = `${s.deviceId}\u0000${day}`;
      const c = cells.get(k) ?? { deviceId: s.deviceId, day, billable: 0, nonBillable: 0 };
      if (s.billable) c.billable++;
      else c.nonBillable++;
      cells.set(k, c);
    }
    for (const c of [...cells.values()].sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : a.day - b.day))) {
      out.scansPerDeviceDay.push({ tenantId, deviceId: c.deviceId, date: days[c.day]!, billable: c.billable, nonBillable: c.nonBillable });
    }

    for (const c of await listContracts(q, tenantId)) {
      if (c.model.kind !== 'risk-sharing') continue;
      if (c.validFrom > days[days.length - 1]! || (c.validTo !== null && c.validTo < days[0]!)) continue;
      const perDay = new Array<number>(days.length).fill(0);
      for (const s of scans) {
        if (s.billable && s.deviceId === c.deviceId) perDay[dayIndex(s.occurredAtMs)]!++;
      }
      let cumulative = 0;
      const daily = days.map((date, i) => ({ date, actualCumulative: (cumulative += perDay[i]!) }));
      out.riskSharing.push({
        tenantId,
        contractId: c.id,
        deviceId: c.deviceId,
        forecastScans: c.model.forecastScans,
        bandScans: c.model.bandScans,
        actualScans: cumulative,
        daysInPeriod: days.length,
        daily,
      });
    }

    try {
      const v = await viewInvoice(q, tenantId, period);
      out.revenueByTenant.push({ tenantId, period, status: v.status, ...v.invoice.totals });
      if (v.status === 'open') out.invoices.push({ tenantId, period, status: 'open', totalCents: v.invoice.totals.totalCents });
    } catch (err) {
      // Usage no contract prices, say: shown, not hidden behind a failed page.
      const e = toEco3dError(err);
      out.revenueByTenant.push({ tenantId, period, status: 'error', error: { code: e.code, message: e.message } });
    }
    for (const i of await listIssuedInvoices(q, tenantId, 24)) {
      out.invoices.push({ tenantId, period: i.period, status: 'issued', number: i.number, totalCents: i.invoice.totals.totalCents, issuedAtMs: i.issuedAtMs });
    }
  }
  out.invoices.sort((a, b) => (a.period < b.period ? 1 : a.period > b.period ? -1 : a.tenantId < b.tenantId ? -1 : 1));
  return out;
}

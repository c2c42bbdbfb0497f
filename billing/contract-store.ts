// Contracts in the database (billing_contracts). Validation is billing/contracts.ts's; here a
// contract is checked against the tenant's others (overlap) and against what is already
// invoiced: a change that would move the days it covers inside an issued period is refused
// (ECO3D_ERR_PERIOD_CLOSED), so a closed invoice always re-rates to the same cents. Ending a
// contract after the last issued period, or any change to periods not yet issued, is allowed.
import { Eco3dError } from '../protocols/errors.ts';
import type { Database, Queryable } from '../store/index.ts';
import { type Contract, parseContract, parseContracts } from './contracts.ts';
import { lockTenantLedger } from './ledger.ts';
import { daysOfPeriod, type Period } from './periods.ts';

export async function listContracts(q: Queryable, tenantId: string): Promise<Contract[]> {
  const rows = await q.query<{ contract: Contract }>('SELECT contract FROM billing_contracts WHERE tenant_id = $1 ORDER BY device_id, valid_from, id', [tenantId]);
  return rows.map((r) => r.contract);
}

export async function issuedPeriods(q: Queryable, tenantId: string): Promise<Period[]> {
  return (await q.query<{ period: string }>('SELECT period FROM invoices WHERE tenant_id = $1 ORDER BY period', [tenantId])).map((r) => r.period);
}

/** The days of `period` a contract covers, as [first, last], or null. Dates compare as strings. */
function coverage(c: Pick<Contract, 'validFrom' | 'validTo'> | undefined, period: Period): string | null {
  if (c === undefined) return null;
  const days = daysOfPeriod(period);
  const first = c.validFrom > days[0]! ? c.validFrom : days[0]!;
  const last = c.validTo !== null && c.validTo < days[days.length - 1]! ? c.validTo : days[days.length - 1]!;
  return first > last ? null : `${first}..${last}`;
}

/**
 * Creates or replaces a contract of `tenantId`. Returns it and whether it was new.
 * Errors: BAD_REQUEST / NOT_FINITE (the field), CONFLICT (overlap; another tenant's id),
 * UNKNOWN_DEVICE, PERIOD_CLOSED.
 */
export async function putContract(db: Database, tenantId: string, raw: unknown, by: string): Promise<{ contract: Contract; created: boolean }> {
  const contract = parseContract(raw);
  if (contract.tenantId !== tenantId) {
    throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `contract ${contract.id} names tenant ${contract.tenantId}; you act for ${tenantId}`, { details: { field: 'contract.tenantId' } });
  }
  return db.transaction(async (tx) => {
    // Exclusive: no invoice is issued and no other contract written meanwhile.
    await lockTenantLedger(tx, tenantId, 'exclusive');
    const device = await tx.query('SELECT 1 FROM devices WHERE tenant_id = $1 AND id = $2', [tenantId, contract.deviceId]);
    if (device.length === 0) {
      throw new Eco3dError('ECO3D_ERR_UNKNOWN_DEVICE', `device ${contract.deviceId} is not registered in tenant ${tenantId}`, { details: { field: 'contract.deviceId' } });
    }
    const owner = (await tx.query<{ tenant_id: string; contract: Contract }>('SELECT tenant_id, contract FROM billing_contracts WHERE id = $1', [contract.id]))[0];
    if (owner !== undefined && owner.tenant_id !== tenantId) throw new Eco3dError('ECO3D_ERR_CONFLICT', `contract id ${contract.id} is taken`, { details: { field: 'contract.id' } });
    const old = owner?.contract;
    if (old !== undefined && JSON.stringify(old) === JSON.stringify(contract)) return { contract, created: false };
    for (const period of await issuedPeriods(tx, tenantId)) {
      const same = old !== undefined && old.deviceId === contract.deviceId && JSON.stringify(old.model) === JSON.stringify(contract.model);
      const before = coverage(old, period);
      const after = coverage(contract, period);
      if (before !== after || (!same && (before !== null || after !== null))) {
        throw new Eco3dError('ECO3D_ERR_PERIOD_CLOSED', `contract ${contract.id}: period ${period} is invoiced, and this change would alter what it priced there (${before ?? 'nothing'} → ${after ?? 'nothing'})`, {
          details: { field: 'contract', period },
        });
      }
    }
    const others = (await listContracts(tx, tenantId)).filter((c) => c.id !== contract.id);
    parseContracts([...others, contract]);
    await tx.query(
      `INSERT INTO billing_contracts (id, tenant_id, device_id, valid_from, valid_to, contract, created_by) VALUES ($1, $2, $3, $4::date, $5::date, $6::jsonb, $7)
       ON CONFLICT (id) DO UPDATE SET device_id = EXCLUDED.device_id, valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to, contract = EXCLUDED.contract`,
      [contract.id, tenantId, contract.deviceId, contract.validFrom, contract.validTo, JSON.stringify(contract), by],
    );
    return { contract, created: old === undefined };
  });
}

// Billing (billing/PRICING.md): the pure core (money, periods, contracts, rating), the usage
// ledger, ingestion, invoices and their exports, the outbox consumers and the HTTP API.
export {
  type Cents,
  BPS_DENOMINATOR,
  MAX_AMOUNT_CENTS,
  MAX_QUANTITY,
  formatEuro,
  prorate,
  ratedCents,
  requireCents,
  requireInteger,
  requireSignedCents,
  roundHalfUp,
  splitByWeights,
  sumCents,
} from './money.ts';
export {
  type LocalDate,
  type Period,
  DEFAULT_TIME_ZONE,
  dayOf,
  dayStartMs,
  daysOfPeriod,
  nextPeriod,
  parsePeriod,
  periodBounds,
  periodOf,
  requireTimeZone,
  weekdayOf,
} from './periods.ts';
export {
  type Contract,
  type ContractInput,
  type PricingModel,
  type PricingModelKind,
  type ScanPricing,
  type Tax,
  type TenantBilling,
  type TenantBillingInput,
  ContractSchema,
  PRICING_MODELS,
  TenantBillingSchema,
  parseContract,
  parseContracts,
  parseTenantBilling,
} from './contracts.ts';
export {
  type AvailabilityChange,
  type Invoice,
  type InvoiceLine,
  type LateUsage,
  type LineExplanation,
  type LineRule,
  type OutcomeEvent,
  type RateInput,
  type UsageEvent,
  MAX_EXPLAINED_KEYS,
  rate,
  scanPricingAmount,
  uptime,
} from './pricing.ts';
export { USAGE_WRITE_SCOPE, MAX_BATCH_EVENTS, parseBatch, ingestBatch } from './ingest.ts';
export { billingConsumer, uplinkConsumer, BILLING_CONSUMER, UPLINK_CONSUMER, USAGE_EVENTS_PATH } from './consumers.ts';
export { meterAcquisition, reverseEntry, getBillingSettings, putBillingSettings, usageKey, recordCharge, listCharges, type LedgerEntry, type ChargeEntry } from './ledger.ts';
export { listContracts, putContract } from './contract-store.ts';
export { issueInvoice, viewInvoice, rerateIssued, listIssuedInvoices, billableTenants, type InvoiceView, type IssuedInvoice } from './invoices.ts';
export { registerBilling, renderInvoice, runInvoices, INVOICE_FORMATS, type InvoiceFormat, type BillingPrincipal } from './routes.ts';
export { invoiceToCsv, invoiceToFhir, invoiceToJson, invoiceToPdf, type InvoiceDocument } from './export.ts';
export { billingOpenApiPaths } from './openapi.ts';

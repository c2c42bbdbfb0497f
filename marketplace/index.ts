// The public surface of marketplace/: plugin manifests, signed plugin packages, the isolated
// runner of analysis plugins, the registry and its review, per-hospital enablement, work items
// and the revenue split. The browser
// SDK is marketplace/sdk/ (its own surface; browser code imports it, not this file).
export {
  entryModulePath,
  MANIFEST_LIMITS,
  MAX_PRICE_CENTS,
  parseManifest,
  PLUGIN_KINDS,
  PLUGIN_MANIFEST_JSON_SCHEMA,
  PLUGIN_SCOPES,
  PLUGIN_TIERS,
  pluginManifestSchema,
  SCOPES_BY_KIND,
  type PluginCertificate,
  type PluginEntry,
  type PluginKind,
  type PluginLimits,
  type PluginManifest,
  type PluginManifestInput,
  type PluginPricing,
  type PluginScope,
  type PluginTier,
  type PluginVendor,
} from './manifest.ts';
export {
  digestList,
  generateDeveloperKey,
  loadDeveloperKey,
  MANIFEST_FILE,
  normalizePublicKey,
  PACKAGE_LIMITS,
  packagePathProblem,
  packPlugin,
  SIGNATURE_FILE,
  verifyPackage,
  type VerifiedPackage,
  type VerifyPackageOptions,
} from './package.ts';
export { runPlugin, startPlugin, checkSandboxSupport, parsePluginOutput, DEFAULT_PLUGIN_LIMITS } from './sandbox.ts';
export type { StartedPlugin, PluginInput, PluginOutput, PluginMeasurement, PluginFinding, PluginFailureReason, PluginRunResult, RunPluginOptions } from './sandbox.ts';
export { readVolumeInput, readVolumeHeader, type VolumeHeader } from './volume-input.ts';
export { writeDemoStudies, type DemoStudy } from './demo.ts';
export {
  addDeveloperKey,
  claimForValidation,
  compareSemver,
  DEFAULT_DEVELOPER_SHARE_BPS,
  finishValidation,
  getDeveloper,
  getVersion,
  keyFingerprint,
  listVersions,
  MAX_PACKAGE_BYTES,
  publishedCatalog,
  putDeveloper,
  requeueInterruptedValidations,
  reviewVersion,
  submitVersion,
  versionPackage,
  VERSION_STATUSES,
  type Developer,
  type DeveloperKey,
  type ValidationReport,
  type VersionStatus,
  type VersionView,
} from './registry.ts';
export { activeEnablement, authenticateClient, createClient, disablePlugin, enablePlugin, listEnablements, type DisableResult, type Enablement } from './enablement.ts';
export { bookPluginCharge, issuePayouts, meterSubscriptions, payoutCsv, payoutStatement, periodOf, reconcile, splitCents, type PayoutStatement, type Reconciliation, type RecordCharge } from './revenue.ts';
export { claimWorkItem, getWorkItem, listWorkItems, MAX_ATTEMPTS, recordRun, scheduleWorkItems, WORK_ITEM_CONSUMER, workItemConsumer, WorkItemRunner, type RunnerDeps, type WorkItem, type WorkItemState } from './workitems.ts';
export { dciodvfyErrors, unpackedPackage, validatePlugin, type ValidationDeps } from './validation.ts';
export { registerMarketplace, PLUGIN_TOKEN_TTL_S, type MarketplacePrincipal, type MarketplaceRoutesOptions } from './routes.ts';
export { marketplaceOpenApiPaths } from './openapi.ts';

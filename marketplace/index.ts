// The public surface of marketplace/: plugin manifests, signed plugin packages and the isolated
// runner of analysis plugins. The browser
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
export { runPlugin, checkSandboxSupport, parsePluginOutput, DEFAULT_PLUGIN_LIMITS } from './sandbox.ts';
export type { PluginInput, PluginOutput, PluginMeasurement, PluginFinding, PluginFailureReason, PluginRunResult, RunPluginOptions } from './sandbox.ts';

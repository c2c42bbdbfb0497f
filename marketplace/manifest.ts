// The plugin manifest (issue 8): what a plugin is, what it may touch, what it costs, and how it
// runs. `parseManifest` is the one gate every manifest passes (packing, verifying a package,
// publishing); `PLUGIN_MANIFEST_JSON_SCHEMA` is the same contract as a JSON Schema 2020-12
// document for developers' editors and tools (manifest.test.ts checks the two agree).
//
// Choices (the issue leaves them open):
// - id: lower-case reverse DNS with at least three labels (the developer's domain, then the
//   plugin), e.g. `com.example.lesion-volume`. Labels are DNS-like: a-z, 0-9 and inner hyphens.
// - version: strict semver 2.0.0 (the regex suggested on semver.org), no leading `v`, no ranges.
// - scopes by kind: an analysis plugin works on a de-identified study after the scan, so it may
//   not ask for the live streams (`live:*`); a live plugin runs during the scan on the streams,
//   so it may not ask for `study:deidentified:read` (least privilege: reading a whole study is
//   the analysis runner's job). Both may ask for `results:write`.
// - tier: `diagnostic` requires `certificate` {authority CE|FDA, reference}; a `research` plugin
//   may not carry one (a certificate on a research plugin would be shown to admins as a claim
//   the platform never checked).
// - paths in the manifest (the entry module) use the package path rule of package.ts: relative,
//   `/`-separated, segments of [A-Za-z0-9._-] not starting with a dot.
// - pricing is in integer cents of the contract currency (billing owns currencies); 0 is free.
// - limits: defaults are filled in by the parser; they bind analysis runs (the runner's
//   watchdog) and are ignored for external live clients, which run on the developer's machines.
// - unknown fields are refused everywhere, so a typo (`scope` for `scopes`) is an error, not a
//   silently ignored permission request.
import { z } from 'zod';
import { parseWith } from '../protocols/index.ts';
import { LIVE_SCOPES } from '../protocols/live.ts';

/** Live scopes are the streaming layer's (same strings its tokens carry). */
export const PLUGIN_SCOPES = [
  ...LIVE_SCOPES,
  'study:deidentified:read',
  'results:write',
] as const;
export type PluginScope = (typeof PLUGIN_SCOPES)[number];

export const PLUGIN_KINDS = ['analysis', 'live'] as const;
export type PluginKind = (typeof PLUGIN_KINDS)[number];
export const PLUGIN_TIERS = ['research', 'diagnostic'] as const;
export type PluginTier = (typeof PLUGIN_TIERS)[number];

/** Scopes a plugin of each kind may request (see the header for why). */
export const SCOPES_BY_KIND: Readonly<Record<PluginKind, readonly PluginScope[]>> = {
  analysis: ['study:deidentified:read', 'results:write'],
  live: ['live:video', 'live:pose', 'live:volume', 'results:write'],
};

export const MANIFEST_LIMITS = {
  memoryMb: { min: 16, max: 2048, default: 256 },
  cpuTimeMs: { min: 100, max: 600_000, default: 60_000 },
  wallTimeMs: { min: 100, max: 600_000, default: 120_000 },
  outputBytes: { min: 1, max: 64 * 1024 * 1024, default: 16 * 1024 * 1024 },
} as const;
export const MAX_PRICE_CENTS = 10_000_000;

// Regexes shared verbatim by zod and the JSON Schema (ECMAScript syntax, valid with the `u` flag
// that JSON Schema validators use), so the two cannot drift apart.
/** semver.org's suggested regex for semver 2.0.0. */
export const SEMVER_PATTERN =
  '^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(?:-((?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\\.(?:0|[1-9]\\d*|\\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\\+([0-9a-zA-Z-]+(?:\\.[0-9a-zA-Z-]+)*))?$';
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
export const PLUGIN_ID_PATTERN = `^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\\.${LABEL}){2,}$`;
/** A path inside a package: relative, `/`-separated, portable segments, no dot-files, no `.`/`..`. */
export const PACKAGE_PATH_PATTERN = '^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$';
const MODULE_PATH_PATTERN = '^[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*\\.(?:mjs|js)$';
const HTTPS_URL_PATTERN = '^https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:[/?#][^\\s]*)?$';
const EMAIL_PATTERN = '^[^\\s@]+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)+$';
const MAX_PATH_CHARS = 255;

const re = (p: string): RegExp => new RegExp(p, 'u');
/** Non-empty text with something besides white space. */
const text = (max: number) => z.string().min(1).max(max).regex(/\S/u, 'must not be blank');
const intIn = (min: number, max: number) => z.number().int().min(min).max(max);
const limit = (k: keyof typeof MANIFEST_LIMITS) =>
  intIn(MANIFEST_LIMITS[k].min, MANIFEST_LIMITS[k].max).default(MANIFEST_LIMITS[k].default);
const modulePath = z.string().max(MAX_PATH_CHARS).regex(re(MODULE_PATH_PATTERN), 'must be a relative path to a .mjs or .js file inside the package');

const vendorSchema = z.strictObject({
  name: text(200),
  url: z.string().max(2048).regex(re(HTTPS_URL_PATTERN), 'must be an https:// URL').optional(),
  email: z.string().max(254).regex(re(EMAIL_PATTERN), 'must be an e-mail address').optional(),
});

const certificateSchema = z.strictObject({
  authority: z.enum(['CE', 'FDA']),
  reference: text(200),
});

const pricingSchema = z.discriminatedUnion('model', [
  z.strictObject({ model: z.literal('per-use'), amountCents: intIn(0, MAX_PRICE_CENTS) }),
  z.strictObject({ model: z.literal('subscription'), monthlyAmountCents: intIn(0, MAX_PRICE_CENTS) }),
]);

const liveEntrySchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('browser'), module: modulePath }),
  z.strictObject({ kind: z.literal('external') }),
]);

const limitsSchema = z.strictObject({
  memoryMb: limit('memoryMb'),
  cpuTimeMs: limit('cpuTimeMs'),
  wallTimeMs: limit('wallTimeMs'),
  outputBytes: limit('outputBytes'),
});

export const pluginManifestSchema = z
  .strictObject({
    id: z.string().max(MAX_PATH_CHARS).regex(re(PLUGIN_ID_PATTERN), 'must be lower-case reverse DNS with at least three labels, e.g. com.example.lesion-volume'),
    name: text(100),
    version: z.string().max(256).regex(re(SEMVER_PATTERN), 'must be a semver 2.0.0 version such as 1.2.3'),
    vendor: vendorSchema,
    description: text(4000),
    kind: z.enum(PLUGIN_KINDS),
    tier: z.enum(PLUGIN_TIERS),
    certificate: certificateSchema.optional(),
    scopes: z.array(z.enum(PLUGIN_SCOPES)).min(1).max(PLUGIN_SCOPES.length),
    pricing: pricingSchema,
    entry: z.union([modulePath, liveEntrySchema]),
    limits: limitsSchema.prefault({}),
  })
  .superRefine((m, ctx) => {
    if (m.tier === 'diagnostic' && m.certificate === undefined) {
      ctx.addIssue({ code: 'custom', path: ['certificate'], message: 'a diagnostic plugin needs its CE or FDA certificate reference' });
    }
    if (m.tier === 'research' && m.certificate !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['certificate'], message: 'only a diagnostic plugin carries a certificate' });
    }
    const seen = new Set<string>();
    m.scopes.forEach((s, i) => {
      if (seen.has(s)) ctx.addIssue({ code: 'custom', path: ['scopes', i], message: `scope ${s} is listed twice` });
      seen.add(s);
      if (!SCOPES_BY_KIND[m.kind].includes(s)) {
        ctx.addIssue({ code: 'custom', path: ['scopes', i], message: `a ${m.kind} plugin may not request ${s} (allowed: ${SCOPES_BY_KIND[m.kind].join(', ')})` });
      }
    });
    if (m.kind === 'analysis' && typeof m.entry !== 'string') {
      ctx.addIssue({ code: 'custom', path: ['entry'], message: 'an analysis plugin entry is a relative path to its ES module' });
    }
    if (m.kind === 'live' && typeof m.entry === 'string') {
      ctx.addIssue({ code: 'custom', path: ['entry'], message: 'a live plugin entry is {kind: "browser", module} or {kind: "external"}' });
    }
  });

/** A manifest as a developer writes it (limits and their fields optional). */
export type PluginManifestInput = z.input<typeof pluginManifestSchema>;
/** A parsed manifest: defaults filled in. */
export type PluginManifest = z.output<typeof pluginManifestSchema>;
export type PluginVendor = PluginManifest['vendor'];
export type PluginCertificate = z.output<typeof certificateSchema>;
export type PluginPricing = PluginManifest['pricing'];
export type PluginEntry = PluginManifest['entry'];
export type PluginLimits = PluginManifest['limits'];

/**
 * Validates a manifest (already JSON-parsed). Throws ECO3D_ERR_BAD_REQUEST naming the first bad
 * field, e.g. `manifest.scopes.1: a live plugin may not request study:deidentified:read`.
 */
export function parseManifest(raw: unknown): PluginManifest {
  return parseWith(pluginManifestSchema, raw, 'manifest');
}

/** The package path of the module a runner or browser loads, or undefined for an external client. */
export function entryModulePath(m: PluginManifest): string | undefined {
  if (typeof m.entry === 'string') return m.entry;
  return m.entry.kind === 'browser' ? m.entry.module : undefined;
}

// --- the JSON Schema document -------------------------------------------------------------

const limitJson = (k: keyof typeof MANIFEST_LIMITS) => ({
  type: 'integer',
  minimum: MANIFEST_LIMITS[k].min,
  maximum: MANIFEST_LIMITS[k].max,
  default: MANIFEST_LIMITS[k].default,
});
const textJson = (maxLength: number) => ({ type: 'string', minLength: 1, maxLength, pattern: '\\S' });
const modulePathJson = { type: 'string', maxLength: MAX_PATH_CHARS, pattern: MODULE_PATH_PATTERN };
const centsJson = { type: 'integer', minimum: 0, maximum: MAX_PRICE_CENTS };

/** JSON Schema 2020-12 for manifest.json, written by hand to mirror `pluginManifestSchema`. */
export const PLUGIN_MANIFEST_JSON_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: 'https://eco3d.invalid/schemas/plugin-manifest.json',
  title: 'Eco3D plugin manifest',
  type: 'object',
  additionalProperties: false,
  required: ['id', 'name', 'version', 'vendor', 'description', 'kind', 'tier', 'scopes', 'pricing', 'entry'],
  properties: {
    id: { type: 'string', maxLength: MAX_PATH_CHARS, pattern: PLUGIN_ID_PATTERN, description: 'Lower-case reverse DNS, e.g. com.example.lesion-volume' },
    name: textJson(100),
    version: { type: 'string', maxLength: 256, pattern: SEMVER_PATTERN, description: 'Semver 2.0.0' },
    vendor: {
      type: 'object',
      additionalProperties: false,
      required: ['name'],
      properties: {
        name: textJson(200),
        url: { type: 'string', maxLength: 2048, pattern: HTTPS_URL_PATTERN },
        email: { type: 'string', maxLength: 254, pattern: EMAIL_PATTERN },
      },
    },
    description: textJson(4000),
    kind: { enum: [...PLUGIN_KINDS] },
    tier: { enum: [...PLUGIN_TIERS] },
    certificate: {
      type: 'object',
      additionalProperties: false,
      required: ['authority', 'reference'],
      properties: { authority: { enum: ['CE', 'FDA'] }, reference: textJson(200) },
    },
    scopes: { type: 'array', minItems: 1, maxItems: PLUGIN_SCOPES.length, uniqueItems: true, items: { enum: [...PLUGIN_SCOPES] } },
    pricing: {
      oneOf: [
        { type: 'object', additionalProperties: false, required: ['model', 'amountCents'], properties: { model: { const: 'per-use' }, amountCents: centsJson } },
        { type: 'object', additionalProperties: false, required: ['model', 'monthlyAmountCents'], properties: { model: { const: 'subscription' }, monthlyAmountCents: centsJson } },
      ],
    },
    entry: {
      oneOf: [
        modulePathJson,
        { type: 'object', additionalProperties: false, required: ['kind', 'module'], properties: { kind: { const: 'browser' }, module: modulePathJson } },
        { type: 'object', additionalProperties: false, required: ['kind'], properties: { kind: { const: 'external' } } },
      ],
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: {
        memoryMb: limitJson('memoryMb'),
        cpuTimeMs: limitJson('cpuTimeMs'),
        wallTimeMs: limitJson('wallTimeMs'),
        outputBytes: limitJson('outputBytes'),
      },
    },
  },
  allOf: [
    { if: { required: ['tier'], properties: { tier: { const: 'diagnostic' } } }, then: { required: ['certificate'] } },
    { if: { required: ['tier'], properties: { tier: { const: 'research' } } }, then: { not: { required: ['certificate'] } } },
    {
      if: { required: ['kind'], properties: { kind: { const: 'analysis' } } },
      then: { properties: { scopes: { items: { enum: [...SCOPES_BY_KIND.analysis] } }, entry: { type: 'string' } } },
    },
    {
      if: { required: ['kind'], properties: { kind: { const: 'live' } } },
      then: { properties: { scopes: { items: { enum: [...SCOPES_BY_KIND.live] } }, entry: { type: 'object' } } },
    },
  ],
} as const;

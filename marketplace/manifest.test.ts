// The manifest gate: valid manifests parse with defaults filled in, each bad field is refused with
// ECO3D_ERR_BAD_REQUEST naming it, and the hand-written JSON Schema agrees with the zod parser.
// The agreement check uses ajv 8 (2020-12 dialect), which is already in node_modules through
// fastify (@fastify/ajv-compiler); it is not a dependency of ours, so if fastify ever drops it
// this import fails loudly rather than skipping.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { Eco3dError } from '../protocols/index.ts';
import { MANIFEST_LIMITS, parseManifest, PLUGIN_MANIFEST_JSON_SCHEMA, PLUGIN_SCOPES, type PluginManifestInput } from './manifest.ts';

const analysis = (): PluginManifestInput => ({
  id: 'com.example.lesion-volume',
  name: 'Lesion volume',
  version: '1.2.3',
  vendor: { name: 'Example Medical', url: 'https://example.com/plugins', email: 'dev@example.com' },
  description: 'Segments the largest hypoechoic lesion and reports its volume in mL.',
  kind: 'analysis',
  tier: 'research',
  scopes: ['study:deidentified:read', 'results:write'],
  pricing: { model: 'per-use', amountCents: 250 },
  entry: 'dist/main.mjs',
});

const live = (): PluginManifestInput => ({
  id: 'org.example.ar.image-plane',
  name: 'Image plane AR',
  version: '0.1.0-beta.2+build.7',
  vendor: { name: 'Example AR' },
  description: 'Shows the image plane over the camera view.',
  kind: 'live',
  tier: 'diagnostic',
  certificate: { authority: 'CE', reference: 'CE 0123 / MDR-2024-0042' },
  scopes: ['live:video', 'live:pose'],
  pricing: { model: 'subscription', monthlyAmountCents: 0 },
  entry: { kind: 'browser', module: 'plugin.js' },
  limits: { memoryMb: 512 },
});

/** Applies `edit` to a fresh copy of `base()` (a JSON round trip so edits cannot leak). */
function variant(base: () => PluginManifestInput, edit: (m: Record<string, any>) => void): unknown {
  const m = JSON.parse(JSON.stringify(base())) as Record<string, any>;
  edit(m);
  return m;
}

const VALID: Array<[string, unknown]> = [
  ['analysis, research, per use', analysis()],
  ['live, diagnostic, browser entry, partial limits', live()],
  ['live external client', variant(live, (m) => { m.entry = { kind: 'external' }; m.scopes = ['live:volume', 'results:write']; })],
  ['FDA certificate', variant(live, (m) => { m.certificate = { authority: 'FDA', reference: 'K231234' }; })],
  ['free per use, .js entry in a folder', variant(analysis, (m) => { m.pricing = { model: 'per-use', amountCents: 0 }; m.entry = 'lib/a_b/index.js'; })],
  ['top price', variant(analysis, (m) => { m.pricing = { model: 'subscription', monthlyAmountCents: 10_000_000 }; })],
  ['limits at their bounds', variant(analysis, (m) => { m.limits = { memoryMb: 16, cpuTimeMs: 600_000, wallTimeMs: 100, outputBytes: 64 * 1024 * 1024 }; })],
  ['vendor name only', variant(analysis, (m) => { m.vendor = { name: 'Solo' }; })],
  ['long id', variant(analysis, (m) => { m.id = 'io.github.some-dev.plugins.lesion2'; })],
];

// [label, manifest, the field the error must name]
const INVALID: Array<[string, unknown, string]> = [
  ['not an object', 'hello', 'manifest'],
  ['unknown top-level field', variant(analysis, (m) => { m.scope = ['results:write']; }), 'manifest'],
  ['unknown vendor field', variant(analysis, (m) => { m.vendor.phone = '123'; }), 'manifest.vendor'],
  ['missing id', variant(analysis, (m) => { delete m.id; }), 'manifest.id'],
  ['upper-case id', variant(analysis, (m) => { m.id = 'com.Example.lesion'; }), 'manifest.id'],
  ['two-label id', variant(analysis, (m) => { m.id = 'example.lesion'; }), 'manifest.id'],
  ['id with trailing hyphen label', variant(analysis, (m) => { m.id = 'com.example.lesion-'; }), 'manifest.id'],
  ['id with empty label', variant(analysis, (m) => { m.id = 'com..example'; }), 'manifest.id'],
  ['version with v', variant(analysis, (m) => { m.version = 'v1.2.3'; }), 'manifest.version'],
  ['version with leading zero', variant(analysis, (m) => { m.version = '1.02.3'; }), 'manifest.version'],
  ['version with two parts', variant(analysis, (m) => { m.version = '1.2'; }), 'manifest.version'],
  ['prerelease with leading zero', variant(analysis, (m) => { m.version = '1.2.3-01'; }), 'manifest.version'],
  ['empty name', variant(analysis, (m) => { m.name = ''; }), 'manifest.name'],
  ['blank description', variant(analysis, (m) => { m.description = '   '; }), 'manifest.description'],
  ['http vendor url', variant(analysis, (m) => { m.vendor.url = 'http://example.com'; }), 'manifest.vendor.url'],
  ['bad email', variant(analysis, (m) => { m.vendor.email = 'not-an-email'; }), 'manifest.vendor.email'],
  ['unknown kind', variant(analysis, (m) => { m.kind = 'ar'; }), 'manifest.kind'],
  ['unknown tier', variant(analysis, (m) => { m.tier = 'clinical'; }), 'manifest.tier'],
  ['diagnostic without certificate', variant(live, (m) => { delete m.certificate; }), 'manifest.certificate'],
  ['research with certificate', variant(analysis, (m) => { m.certificate = { authority: 'CE', reference: 'x' }; }), 'manifest.certificate'],
  ['unknown authority', variant(live, (m) => { m.certificate.authority = 'TGA'; }), 'manifest.certificate.authority'],
  ['empty scopes', variant(analysis, (m) => { m.scopes = []; }), 'manifest.scopes'],
  ['unknown scope', variant(analysis, (m) => { m.scopes = ['study:read']; }), 'manifest.scopes.0'],
  ['duplicate scope', variant(analysis, (m) => { m.scopes = ['results:write', 'results:write']; }), 'manifest.scopes.1'],
  ['analysis asks for live video', variant(analysis, (m) => { m.scopes = ['results:write', 'live:video']; }), 'manifest.scopes.1'],
  ['live asks for the study', variant(live, (m) => { m.scopes = ['study:deidentified:read']; }), 'manifest.scopes.0'],
  ['negative price', variant(analysis, (m) => { m.pricing.amountCents = -1; }), 'manifest.pricing.amountCents'],
  ['fractional cents', variant(analysis, (m) => { m.pricing.amountCents = 1.5; }), 'manifest.pricing.amountCents'],
  ['price above the cap', variant(analysis, (m) => { m.pricing.amountCents = 10_000_001; }), 'manifest.pricing.amountCents'],
  ['price as a string', variant(analysis, (m) => { m.pricing.amountCents = '250'; }), 'manifest.pricing.amountCents'],
  ['subscription with per-use field', variant(analysis, (m) => { m.pricing = { model: 'subscription', amountCents: 5 }; }), 'manifest.pricing.monthlyAmountCents'],
  ['unknown pricing model', variant(analysis, (m) => { m.pricing = { model: 'free' }; }), 'manifest.pricing.model'],
  ['analysis entry absolute', variant(analysis, (m) => { m.entry = '/main.mjs'; }), 'manifest.entry'],
  ['analysis entry escapes', variant(analysis, (m) => { m.entry = '../main.mjs'; }), 'manifest.entry'],
  ['analysis entry dot segment', variant(analysis, (m) => { m.entry = './main.mjs'; }), 'manifest.entry'],
  ['analysis entry not a module', variant(analysis, (m) => { m.entry = 'main.ts'; }), 'manifest.entry'],
  ['analysis entry backslash', variant(analysis, (m) => { m.entry = 'dist\\main.mjs'; }), 'manifest.entry'],
  ['analysis entry as an object', variant(analysis, (m) => { m.entry = { kind: 'external' }; }), 'manifest.entry'],
  ['live entry as a path', variant(live, (m) => { m.entry = 'plugin.js'; }), 'manifest.entry'],
  ['live browser entry without module', variant(live, (m) => { m.entry = { kind: 'browser' }; }), 'manifest.entry'],
  ['live external entry with module', variant(live, (m) => { m.entry = { kind: 'external', module: 'x.js' }; }), 'manifest.entry'],
  ['memory below range', variant(analysis, (m) => { m.limits = { memoryMb: 8 }; }), 'manifest.limits.memoryMb'],
  ['cpu time above range', variant(analysis, (m) => { m.limits = { cpuTimeMs: 600_001 }; }), 'manifest.limits.cpuTimeMs'],
  ['wall time below range', variant(analysis, (m) => { m.limits = { wallTimeMs: 99 }; }), 'manifest.limits.wallTimeMs'],
  ['output above 64 MiB', variant(analysis, (m) => { m.limits = { outputBytes: 64 * 1024 * 1024 + 1 }; }), 'manifest.limits.outputBytes'],
  ['unknown limit', variant(analysis, (m) => { m.limits = { gpuMb: 1 }; }), 'manifest.limits'],
];

test('valid manifests parse, with default limits filled in', () => {
  for (const [label, raw] of VALID) {
    assert.doesNotThrow(() => parseManifest(raw), label);
  }
  const a = parseManifest(analysis());
  assert.deepEqual(a.limits, { memoryMb: 256, cpuTimeMs: 60_000, wallTimeMs: 120_000, outputBytes: 16 * 1024 * 1024 });
  assert.deepEqual(a.scopes, ['study:deidentified:read', 'results:write']);
  const l = parseManifest(live());
  assert.equal(l.limits.memoryMb, 512);
  assert.equal(l.limits.cpuTimeMs, MANIFEST_LIMITS.cpuTimeMs.default);
  assert.deepEqual(l.certificate, { authority: 'CE', reference: 'CE 0123 / MDR-2024-0042' });
});

test('each invalid manifest is refused with ECO3D_ERR_BAD_REQUEST naming the field', () => {
  for (const [label, raw, field] of INVALID) {
    assert.throws(
      () => parseManifest(raw),
      (err: unknown) => {
        assert.ok(err instanceof Eco3dError, label);
        assert.equal(err.code, 'ECO3D_ERR_BAD_REQUEST', label);
        assert.equal(err.details?.field, field, `${label}: ${err.message}`);
        return true;
      },
      label,
    );
  }
});

test('the scope-by-kind refusal says which scopes are allowed', () => {
  assert.throws(() => parseManifest(variant(live, (m) => { m.scopes = ['study:deidentified:read']; })), /a live plugin may not request study:deidentified:read/);
  assert.deepEqual([...PLUGIN_SCOPES], ['live:video', 'live:pose', 'live:volume', 'study:deidentified:read', 'results:write']);
});

test('the JSON Schema document agrees with the parser on every valid and invalid manifest', () => {
  const ajv = new Ajv2020({ strict: true, strictTypes: false, strictRequired: false, allErrors: true });
  const validate = ajv.compile(PLUGIN_MANIFEST_JSON_SCHEMA);
  assert.equal(PLUGIN_MANIFEST_JSON_SCHEMA.$schema, 'https://json-schema.org/draft/2020-12/schema');
  for (const [label, raw] of VALID) {
    assert.equal(validate(raw), true, `${label}: ${ajv.errorsText(validate.errors)}`);
  }
  for (const [label, raw] of INVALID) {
    assert.equal(validate(raw), false, `JSON Schema accepts what the parser refuses: ${label}`);
  }
});

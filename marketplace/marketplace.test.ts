// The marketplace against a real database (both engines): developers, keys and submissions
// (tampered, foreign key, duplicate version, another developer's id), review, enablement (what the
// admin saw, disable cutting tokens and clients at once), work items (claimed twice, a runner that
// dies mid-item, plugin failures, infrastructure retries) and the money: every charge split to the
// cent, the reconciliation, subscriptions once a month, payout statements.
// The plugin runs here are a fake runPlugin (the sandbox has its own tests, and the server's
// end-to-end test runs real plugins).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { listCharges, recordCharge } from '../billing/index.ts';
import { Eco3dError } from '../protocols/index.ts';
import { createApiToken, findActiveApiToken, type Database } from '../store/index.ts';
import { forEachDatabase, seedAcquisition } from '../store/testing.ts';
import {
  addDeveloperKey,
  authenticateClient,
  claimForValidation,
  claimWorkItem,
  createClient,
  disablePlugin,
  enablePlugin,
  finishValidation,
  generateDeveloperKey,
  getWorkItem,
  issuePayouts,
  listWorkItems,
  loadDeveloperKey,
  MAX_ATTEMPTS,
  meterSubscriptions,
  packPlugin,
  payoutCsv,
  payoutStatement,
  publishedCatalog,
  putDeveloper,
  reconcile,
  reviewVersion,
  scheduleWorkItems,
  splitCents,
  submitVersion,
  WorkItemRunner,
  type PluginManifestInput,
  type PluginRunResult,
  type RunnerDeps,
} from './index.ts';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'eco3d-market-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

const HOSPITAL = 'mk-hospital';
const figures = { cpuMs: 5, wallMs: 20, peakRssMb: 40 };

function manifest(over: Partial<PluginManifestInput> = {}): PluginManifestInput {
  return {
    id: 'com.acme.lesion',
    name: 'Acme Lesion',
    version: '1.0.0',
    vendor: { name: 'Acme AI' },
    description: 'Finds lesions.',
    kind: 'analysis',
    tier: 'research',
    scopes: ['study:deidentified:read', 'results:write'],
    pricing: { model: 'per-use', amountCents: 333 },
    entry: 'index.mjs',
    ...over,
  };
}

async function pack(m: PluginManifestInput, pem: string, extra: Record<string, string> = {}): Promise<Uint8Array> {
  const dir = mkdtempSync(join(root, 'plugin-'));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
  writeFileSync(join(dir, 'index.mjs'), 'export async function analyze() { return { measurements: [], findings: [] }; }\n');
  for (const [f, c] of Object.entries(extra)) writeFileSync(join(dir, f), c);
  return packPlugin(dir, loadDeveloperKey(pem));
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof Eco3dError, String(err));
    return err.code;
  }
  return 'no error';
}

/** A developer with a registered key, and a published version of `m`. */
async function published(db: Database, dev: string, m: PluginManifestInput): Promise<{ pem: string }> {
  await putDeveloper(db, { tenantId: dev, name: dev, by: 'platform' });
  const key = generateDeveloperKey();
  await addDeveloperKey(db, { developerTenantId: dev, name: 'ci', publicKey: key.publicKey, by: 'dev' });
  await submitVersion(db, { developerTenantId: dev, packageBytes: await pack(m, key.privateKeyPem), by: 'dev', packagesDir: join(root, 'packages') });
  // Earlier tests may have left versions in the queue: they are validated (failed) out of the way.
  for (let v = await claimForValidation(db); v?.pluginId !== m.id; v = await claimForValidation(db)) {
    assert.ok(v !== undefined, `${m.id} never reached validation`);
    await finishValidation(db, v.pluginId, v.version, { ok: false, runs: [], problems: ['not this test'] });
  }
  await finishValidation(db, m.id, m.version, { ok: true, runs: [], problems: [] });
  await reviewVersion(db, { pluginId: m.id, version: m.version, decision: 'publish', by: 'platform' });
  return { pem: key.privateKeyPem };
}

test('the split is whole cents that add up, floor to the developer, for any amount and share', () => {
  for (let i = 0; i < 20_000; i++) {
    const amount = Math.floor(Math.random() * 10 ** (1 + (i % 9)));
    const bps = Math.floor(Math.random() * 10_001);
    const { developerCents, platformCents } = splitCents(amount, bps);
    assert.ok(Number.isInteger(developerCents) && Number.isInteger(platformCents));
    assert.equal(developerCents + platformCents, amount);
    assert.equal(developerCents, Math.floor((amount * bps) / 10000));
  }
  assert.deepEqual(splitCents(333, 7000), { developerCents: 233, platformCents: 100 });
  assert.throws(() => splitCents(1.5, 7000), /whole cents/);
  assert.throws(() => splitCents(100, 10001), /basis points/);
});

forEachDatabase('marketplace', (ctx) => {
  test('submissions: signed by a registered key, once per version, the id stays its developer’s', async () => {
    const db = ctx.db;
    await putDeveloper(db, { tenantId: 'dev-sub', name: 'Dev Sub', by: 'platform' });
    await putDeveloper(db, { tenantId: 'dev-other', name: 'Dev Other', by: 'platform' });
    const key = generateDeveloperKey();
    const stranger = generateDeveloperKey();
    const pkgDir = join(root, `packages-${ctx.kind}`);
    const m = manifest({ id: 'com.devsub.tool' });
    // No key registered yet.
    assert.equal(await code(submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: await pack(m, key.privateKeyPem), by: 'd', packagesDir: pkgDir })), 'ECO3D_ERR_CONFLICT');
    const k = await addDeveloperKey(db, { developerTenantId: 'dev-sub', name: 'laptop', publicKey: key.publicKey, by: 'd' });
    assert.equal(k.fingerprint.length, 32);
    assert.equal(await code(addDeveloperKey(db, { developerTenantId: 'dev-other', name: 'copy', publicKey: key.publicKey, by: 'd' })), 'ECO3D_ERR_CONFLICT');
    // Signed by a key this developer never registered.
    assert.equal(await code(submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: await pack(m, stranger.privateKeyPem), by: 'd', packagesDir: pkgDir })), 'ECO3D_ERR_FORBIDDEN');
    // Tampered after signing: a byte of the archive flipped (package.test.ts tampers file by file).
    const good = await pack(m, key.privateKeyPem);
    const tampered = Buffer.from(good);
    tampered[Math.floor(tampered.length / 3)]! ^= 0x20;
    assert.equal(await code(submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: tampered, by: 'd', packagesDir: pkgDir })), 'ECO3D_ERR_BAD_FILE');
    // Not a zip at all.
    assert.equal(await code(submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: Buffer.from('not a package'), by: 'd', packagesDir: pkgDir })), 'ECO3D_ERR_BAD_FILE');
    const v = await submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: good, by: 'd', packagesDir: pkgDir });
    assert.equal(v.status, 'submitted');
    // The same version again, even re-signed: refused.
    assert.equal(await code(submitVersion(db, { developerTenantId: 'dev-sub', packageBytes: await pack(m, key.privateKeyPem, { 'x.txt': 'x' }), by: 'd', packagesDir: pkgDir })), 'ECO3D_ERR_CONFLICT');
    // Another developer cannot publish under this id.
    const otherKey = generateDeveloperKey();
    await addDeveloperKey(db, { developerTenantId: 'dev-other', name: 'k', publicKey: otherKey.publicKey, by: 'o' });
    assert.equal(
      await code(submitVersion(db, { developerTenantId: 'dev-other', packageBytes: await pack({ ...m, version: '9.0.0' }, otherKey.privateKeyPem), by: 'o', packagesDir: pkgDir })),
      'ECO3D_ERR_FORBIDDEN',
    );
  });

  test('review: only in-review versions; a rejection says why; the catalog shows the newest published', async () => {
    const db = ctx.db;
    const m = manifest({ id: 'com.review.tool' });
    const { pem } = await published(db, 'dev-review', m);
    assert.equal(await code(reviewVersion(db, { pluginId: m.id, version: '1.0.0', decision: 'publish', by: 'p' })), 'ECO3D_ERR_CONFLICT');
    await submitVersion(db, { developerTenantId: 'dev-review', packageBytes: await pack({ ...m, version: '1.1.0' }, pem), by: 'd', packagesDir: join(root, 'packages') });
    await claimForValidation(db);
    await finishValidation(db, m.id, '1.1.0', { ok: false, runs: [], problems: ['crashed'] });
    assert.equal(await code(reviewVersion(db, { pluginId: m.id, version: '1.1.0', decision: 'publish', by: 'p' })), 'ECO3D_ERR_CONFLICT');
    await submitVersion(db, { developerTenantId: 'dev-review', packageBytes: await pack({ ...m, version: '1.10.0' }, pem), by: 'd', packagesDir: join(root, 'packages') });
    await claimForValidation(db);
    await finishValidation(db, m.id, '1.10.0', { ok: true, runs: [], problems: [] });
    assert.equal(await code(reviewVersion(db, { pluginId: m.id, version: '1.10.0', decision: 'reject', by: 'p' })), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal((await publishedCatalog(db)).find((v) => v.pluginId === m.id)?.version, '1.0.0');
    await reviewVersion(db, { pluginId: m.id, version: '1.10.0', decision: 'publish', note: 'ok', by: 'p' });
    // 1.10.0 > 1.1.0 > 1.0.0 in semver (not in string order).
    assert.equal((await publishedCatalog(db)).find((v) => v.pluginId === m.id)?.version, '1.10.0');
  });

  test('enablement: exactly what the admin saw; disabling revokes tokens and clients at once', async () => {
    const db = ctx.db;
    const m = manifest({ id: 'com.enable.tool', pricing: { model: 'per-use', amountCents: 250 } });
    await published(db, 'dev-enable', m);
    await seedAcquisition(db, { tenantId: HOSPITAL, uid: '2.25.71000' });
    const base = { tenantId: HOSPITAL, pluginId: m.id, version: '1.0.0', by: 'admin', nowMs: Date.now() };
    assert.equal(await code(enablePlugin(db, { ...base, acceptScopes: ['results:write'], acceptPricing: m.pricing })), 'ECO3D_ERR_CONFLICT');
    assert.equal(await code(enablePlugin(db, { ...base, acceptScopes: m.scopes, acceptPricing: { model: 'per-use', amountCents: 1 } })), 'ECO3D_ERR_CONFLICT');
    assert.equal(await code(enablePlugin(db, { ...base, tenantId: 'dev-enable', acceptScopes: m.scopes, acceptPricing: m.pricing })), 'ECO3D_ERR_FORBIDDEN');
    const first = await enablePlugin(db, { ...base, acceptScopes: [...m.scopes].reverse(), acceptPricing: m.pricing });
    assert.equal(first.created, true);
    const again = await enablePlugin(db, { ...base, acceptScopes: m.scopes, acceptPricing: m.pricing });
    assert.equal(again.created, false);
    assert.equal(again.enablement.id, first.enablement.id);

    const client = await createClient(db, { tenantId: HOSPITAL, pluginId: m.id, by: 'admin' });
    assert.equal((await authenticateClient(db, client.clientId, client.clientSecret))?.id, first.enablement.id);
    assert.equal(await authenticateClient(db, client.clientId, `${client.clientSecret}x`), undefined);
    assert.equal(await authenticateClient(db, 'plg_nope', client.clientSecret), undefined);
    const now = Date.now();
    const token = await createApiToken(db, { tokenHash: 'h'.repeat(64), tenantId: HOSPITAL, name: 'plugin', scopes: ['results:write'], createdBy: 'client', createdAtMs: now, expiresAtMs: now + 900_000, enablementId: first.enablement.id });
    assert.equal((await findActiveApiToken(db, 'h'.repeat(64), now + 1))?.id, token.id);

    // The second lock: a token whose enablement ended is refused even before it is revoked.
    await db.query('UPDATE marketplace_enablements SET disabled_at = now(), disabled_by = $2 WHERE id = $1', [first.enablement.id, 'test']);
    assert.equal(await findActiveApiToken(db, 'h'.repeat(64), now + 1), undefined);
    await db.query('UPDATE marketplace_enablements SET disabled_at = NULL, disabled_by = NULL WHERE id = $1', [first.enablement.id]);

    const d = await disablePlugin(db, { tenantId: HOSPITAL, pluginId: m.id, by: 'admin', nowMs: Date.now() });
    assert.deepEqual(d.revokedTokenIds, [token.id]);
    assert.equal(d.revokedClients, 1);
    assert.equal(await findActiveApiToken(db, 'h'.repeat(64), now + 1), undefined);
    assert.equal(await authenticateClient(db, client.clientId, client.clientSecret), undefined);
    assert.equal(await code(disablePlugin(db, { tenantId: HOSPITAL, pluginId: m.id, by: 'admin', nowMs: Date.now() })), 'ECO3D_ERR_NOT_FOUND');
  });

  test('work items: claimed twice, a runner killed mid-item, failures: each completes or cancels once, charged once', async () => {
    const db = ctx.db;
    const m = manifest({ id: 'com.work.tool', pricing: { model: 'per-use', amountCents: 333 } });
    await published(db, 'dev-work', m);
    const tenantId = 'mk-work-hospital';
    await seedAcquisition(db, { tenantId, uid: '2.25.72000' });
    await enablePlugin(db, { tenantId, pluginId: m.id, version: '1.0.0', acceptScopes: m.scopes, acceptPricing: m.pricing, by: 'admin', nowMs: Date.now() });
    let clock = Date.UTC(2026, 10, 20, 10);
    const made = await scheduleWorkItems(db, { tenantId, acquisitionUid: '2.25.72000', nowMs: clock });
    assert.equal(made.length, 1);
    assert.equal((await scheduleWorkItems(db, { tenantId, acquisitionUid: '2.25.72000', nowMs: clock })).length, 0, 'a redelivered event makes no second item');
    assert.match(made[0]!.studyRef, /^S-[0-9a-f]{20}$/);

    let release: (() => void) | undefined;
    let runs = 0;
    let canceled = 0;
    const output = { measurements: [{ name: 'Lesion volume', value: 4.2, unit: 'ml' }], findings: [] };
    const stored: string[] = [];
    const deps = (behaviour: 'hang' | 'ok' | 'crash' | 'infra' | 'unstorable'): RunnerDeps => ({
      db,
      pluginFiles: async () => ({ dir: root, manifest: { ...m, limits: { memoryMb: 64, cpuTimeMs: 1000, wallTimeMs: 1000, outputBytes: 1000 } } }),
      prepareInput: async () => {
        if (behaviour === 'infra') throw new Eco3dError('ECO3D_ERR_CONFLICT', 'study not archived');
        return { dims: [2, 2, 2], spacingMm: [1, 1, 1], voxels: new Uint8Array(8) };
      },
      storeResults: async (item) => {
        if (behaviour === 'unstorable') throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'a result with no measurements and no findings');
        stored.push(item.id);
        return { srSopInstanceUid: '2.25.1', observationIds: ['o1'] };
      },
      startPlugin: async () => ({
        run: async (): Promise<PluginRunResult> => {
          runs++;
          if (behaviour === 'hang') await new Promise<void>((r) => (release = r));
          if (behaviour === 'crash') return { status: 'failed', reason: 'crashed', detail: 'TypeError: boom', ...figures };
          return { status: 'completed', output, ...figures };
        },
        cancel: async () => {
          canceled++;
        },
      }),
      recordCharge,
      log: { info: () => undefined, warn: () => undefined, error: () => undefined },
      nowMs: () => clock,
      leaseMs: 60_000,
    });

    // Runner A claims the item and stalls in the plugin run (killed, as far as anyone can tell).
    const a = new WorkItemRunner(deps('hang'));
    const aDone = a.runOne();
    while (release === undefined) await new Promise((r) => setTimeout(r, 5));
    assert.equal((await getWorkItem(db, made[0]!.id))?.state, 'IN PROGRESS');
    // While its lease holds, nobody else takes it.
    assert.equal(await claimWorkItem(db, 'runner-x', clock + 1000, 60_000), undefined);
    // The lease runs out: runner B takes it over and completes it.
    clock += 61_000;
    const b = new WorkItemRunner(deps('ok'));
    assert.equal(await b.runOne(), true);
    const done = await getWorkItem(db, made[0]!.id);
    assert.equal(done?.state, 'COMPLETED');
    assert.equal(done?.attempts, 2);
    // A wakes up and finishes its run: it is no longer its item, nothing changes, no second charge.
    release();
    assert.equal(await aDone, true);
    assert.equal((await getWorkItem(db, made[0]!.id))?.state, 'COMPLETED');
    const charges = (await listCharges(db, { tenantId, fromMs: 0, toMs: Date.UTC(2100, 0) })).filter((c) => c.item === `plugin:${m.id}`);
    assert.equal(charges.length, 1);
    assert.equal(charges[0]!.amountCents, 333);
    assert.equal(runs, 2);
    assert.equal(await b.runOne(), false, 'nothing left');

    // A crashing plugin cancels its item, with the run recorded for the admin; no charge.
    await seedAcquisition(db, { tenantId, uid: '2.25.72001' });
    const [crashItem] = await scheduleWorkItems(db, { tenantId, acquisitionUid: '2.25.72001', nowMs: clock });
    assert.equal(await new WorkItemRunner(deps('crash')).runOne(), true);
    const listed = (await listWorkItems(db, tenantId, 10)).find((i) => i.id === crashItem!.id)!;
    assert.equal(listed.state, 'CANCELED');
    assert.equal(listed.outcome?.['reason'], 'crashed');
    assert.equal(listed.runs.length, 1);
    assert.equal(listed.runs[0]!.reason, 'crashed');

    // Results no SR can hold are the plugin's fault: canceled at once, not retried, not charged.
    await seedAcquisition(db, { tenantId, uid: '2.25.72003' });
    const [badItem] = await scheduleWorkItems(db, { tenantId, acquisitionUid: '2.25.72003', nowMs: clock });
    assert.equal(await new WorkItemRunner(deps('unstorable')).runOne(), true);
    const bad = await getWorkItem(db, badItem!.id);
    assert.deepEqual([bad?.state, bad?.outcome?.['reason']], ['CANCELED', 'bad-output']);

    // An infrastructure failure is retried after a back-off, then canceled after MAX_ATTEMPTS.
    await seedAcquisition(db, { tenantId, uid: '2.25.72002' });
    const [infraItem] = await scheduleWorkItems(db, { tenantId, acquisitionUid: '2.25.72002', nowMs: clock });
    const infra = new WorkItemRunner(deps('infra'));
    for (let i = 1; i <= MAX_ATTEMPTS; i++) {
      assert.equal(await infra.runOne(), true);
      assert.equal(await infra.runOne(), false, 'backing off');
      clock += 61_000;
    }
    assert.equal(canceled, MAX_ATTEMPTS, 'each attempt’s sandboxed process was stopped, its input never came');
    const gaveUp = await getWorkItem(db, infraItem!.id);
    assert.equal(gaveUp?.state, 'CANCELED');
    assert.equal(gaveUp?.outcome?.['reason'], 'gave-up');
    assert.equal(gaveUp?.attempts, MAX_ATTEMPTS);

    // The whole month reconciles: hospital charges = developer + platform, key by key.
    const r = await reconcile(db, { fromMs: 0, toMs: Date.UTC(2100, 0) });
    assert.deepEqual(r.mismatches, []);
    assert.equal(r.hospitalCents, r.developerCents + r.platformCents);
  });

  test('money: many charges at different shares reconcile exactly; subscriptions once a month; payouts for closed months', async () => {
    const db = ctx.db;
    const sub = manifest({ id: 'com.money.sub', pricing: { model: 'subscription', monthlyAmountCents: 9999 } });
    await published(db, 'dev-money', sub);
    await putDeveloper(db, { tenantId: 'dev-money', name: 'Dev Money', shareBps: 6667, by: 'platform' });
    const tenantId = 'mk-money-hospital';
    await seedAcquisition(db, { tenantId, uid: '2.25.73000' });
    const nov = Date.UTC(2026, 10, 15);
    await enablePlugin(db, { tenantId, pluginId: sub.id, version: '1.0.0', acceptScopes: sub.scopes, acceptPricing: sub.pricing, by: 'admin', nowMs: nov });
    assert.equal(await meterSubscriptions(db, recordCharge, nov), 1);
    assert.equal(await meterSubscriptions(db, recordCharge, nov + 86_400_000), 0, 'the same month is charged once');
    assert.equal(await meterSubscriptions(db, recordCharge, Date.UTC(2026, 11, 1, 0, 0, 1)), 1, 'December is due');

    // Per-use charges at odd prices: the split never loses a cent.
    const use = manifest({ id: 'com.money.use', pricing: { model: 'per-use', amountCents: 1 } });
    await published(db, 'dev-money-2', use);
    await putDeveloper(db, { tenantId: 'dev-money-2', name: 'Dev Money 2', shareBps: 7000, by: 'platform' });
    const { bookPluginCharge } = await import('./revenue.ts');
    let expectDev = 0;
    for (let i = 0; i < 60; i++) {
      const amount = (i * 7919) % 1237;
      expectDev += Math.floor((amount * 7000) / 10000);
      await db.transaction((tx) =>
        bookPluginCharge(tx, recordCharge, { idempotencyKey: `plugin-use/money-${i}`, hospitalTenantId: tenantId, pluginId: use.id, version: '1.0.0', amountCents: amount, description: 'use', occurredAtMs: nov + i }),
      );
    }
    // A re-sent charge books nothing more.
    const again = await db.transaction((tx) =>
      bookPluginCharge(tx, recordCharge, { idempotencyKey: 'plugin-use/money-3', hospitalTenantId: tenantId, pluginId: use.id, version: '1.0.0', amountCents: 5000, description: 'use', occurredAtMs: nov }),
    );
    assert.equal(again.created, false);
    const r = await reconcile(db, { fromMs: Date.UTC(2026, 10, 1), toMs: Date.UTC(2027, 0, 1) });
    assert.deepEqual(r.mismatches, []);
    assert.equal(r.hospitalCents, r.developerCents + r.platformCents);

    // Payout statements: November is closed on December 2nd; December is still open.
    // (the work-item test's developer has November charges too)
    assert.ok((await issuePayouts(db, Date.UTC(2026, 11, 2))) >= 2);
    assert.equal(await issuePayouts(db, Date.UTC(2026, 11, 3)), 0, 'issued once');
    const s = await payoutStatement(db, 'dev-money-2', '2026-11');
    assert.equal(s.totalCents, expectDev);
    assert.ok(s.issuedAtMs !== undefined);
    const subStmt = await payoutStatement(db, 'dev-money', '2026-11');
    assert.equal(subStmt.totalCents, Math.floor((9999 * 6667) / 10000));
    assert.equal((await payoutStatement(db, 'dev-money', '2026-12')).issuedAtMs, undefined, 'the open month is a running figure');
    const csv = payoutCsv(s).trim().split('\n');
    assert.equal(csv[0], 'period,plugin,hospital,charges,gross,share_percent,developer_amount');
    assert.match(csv.at(-1)!, new RegExp(`^2026-11,TOTAL,,60,.*,${(expectDev / 100).toFixed(2)}$`));
    await assert.rejects(db.query("UPDATE marketplace_payouts SET total_cents = 0 WHERE developer_tenant_id = 'dev-money-2'"));
    await assert.rejects(db.query("DELETE FROM marketplace_revenue WHERE plugin_id = 'com.money.use'"));
  });
});


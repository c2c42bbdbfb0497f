// Push to an external FHIR server, through the real outbox dispatcher, against a real HTTP server
// on loopback that first fails (500), then never answers, then accepts: the resource arrives once.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type { FhirResourceChangedV1, Patient } from '../protocols/index.ts';
import { rejectsWith } from '../protocols/testing.ts';
import { OutboxDispatcher, ensureTenant, migrate, outboxBacklog, type Database } from '../store/index.ts';
import { forEachDatabase } from '../store/testing.ts';
import { fhirPushConsumer } from './fhir-push.ts';
import { createFhirService, createPatient, putFhirResource, readFhirResource } from './fhir-store.ts';

interface Received {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

type Behaviour = 'fail' | 'hang' | 'accept';

/** A FHIR server stand-in: answers each request as the next behaviour says (accept when none left). */
class FakeFhirServer {
  readonly received: Received[] = [];
  readonly accepted: Received[] = [];
  readonly #server: Server;
  readonly #hanging: ServerResponse[] = [];
  behaviours: Behaviour[] = [];

  constructor() {
    this.#server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
        this.received.push(r);
        const b = this.behaviours.shift() ?? 'accept';
        if (b === 'hang') {
          this.#hanging.push(res);
          return;
        }
        if (b === 'fail') {
          res.writeHead(500, { 'content-type': 'application/fhir+json' });
          res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: 'database is down' }] }));
          return;
        }
        this.accepted.push(r);
        res.writeHead(201, { 'content-type': 'application/fhir+json' });
        res.end(r.body);
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/fhir`;
  }

  async close(): Promise<void> {
    for (const res of this.#hanging) res.destroy();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

forEachDatabase('FHIR push to an external server', (ctx) => {
  const server = new FakeFhirServer();
  let baseUrl: string;
  before(async () => {
    baseUrl = await server.listen();
  });
  after(() => server.close());

  /** A database of its own: a new consumer is also handed every event already in the outbox. */
  async function freshDb(): Promise<Database> {
    const db = await (await ctx.newStorage()).open();
    await migrate(db);
    await ensureTenant(db, { id: 'hosp', name: 'Hospital' });
    await ensureTenant(db, { id: 'other', name: 'Other' });
    return db;
  }

  function setup(db: Database, extra: Partial<Parameters<typeof fhirPushConsumer>[0]> = {}) {
    let nowMs = Date.UTC(2026, 4, 1);
    const errors: string[] = [];
    const fhir = createFhirService({ db, dicomWebBaseUrl: 'http://127.0.0.1:8080/dicom-web' });
    const consumer = fhirPushConsumer({ baseUrl, headers: { authorization: 'Bearer push-token' }, timeoutMs: 300, readResource: fhir.readResource, tenantIds: ['hosp'], ...extra });
    const dispatcher = new OutboxDispatcher(db, {
      nowMs: () => nowMs,
      baseBackoffMs: 1000,
      handlerTimeoutMs: 5000,
      onError: (err) => errors.push(err instanceof Error ? err.message : String(err)),
    });
    dispatcher.register(consumer);
    return {
      consumer,
      dispatcher,
      errors,
      advance: (ms: number) => {
        nowMs += ms;
      },
    };
  }

  test('500, then no answer, then accepted: the resource arrives, once', async () => {
    const db = await freshDb();
    const { dispatcher, errors, advance } = setup(db);
    const p = (await createPatient(db, 'hosp', { resourceType: 'Patient', identifier: [{ value: 'MRN-1' }], name: [{ family: 'Doe' }] }, { nowMs: Date.UTC(2026, 4, 1) })).stored;
    server.received.length = 0;
    server.accepted.length = 0;
    server.behaviours = ['fail', 'hang', 'accept'];

    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 0, failed: 1 });
    assert.match(errors.at(-1) ?? '', /answered 500: database is down/);
    advance(1000);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 0, failed: 1 });
    assert.match(errors.at(-1) ?? '', /no answer within 300 ms/);
    // Back-off: the next attempt is not due before 2 s more.
    advance(1000);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 0, failed: 0 });
    advance(1000);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 1, failed: 0 });
    advance(60_000);
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 0, failed: 0 });

    assert.equal(server.received.length, 3);
    assert.equal(server.accepted.length, 1);
    const got = server.accepted[0]!;
    assert.equal(got.method, 'PUT');
    assert.equal(got.url, `/fhir/Patient/${p.id}`);
    assert.match(String(got.headers['content-type']), /^application\/fhir\+json/);
    assert.equal(got.headers.authorization, 'Bearer push-token');
    const sent = JSON.parse(got.body) as Patient;
    // Our version id and time stay home: the remote keeps its own.
    const { meta: _meta, ...expected } = p.resource;
    assert.deepEqual(sent, expected);
    assert.deepEqual(await outboxBacklog(db), []);
  });

  test('an old version that failed is not re-sent over a newer one', async () => {
    const db = await freshDb();
    const { dispatcher } = setup(db);
    const v1 = (await createPatient(db, 'hosp', { resourceType: 'Patient', identifier: [{ value: 'MRN-2' }], name: [{ family: 'Roe' }] }, { nowMs: Date.UTC(2026, 4, 1) })).stored;
    await db.transaction((tx) => putFhirResource(tx, 'hosp', { ...v1.resource, gender: 'male' }, { nowMs: Date.UTC(2026, 4, 2) }));
    server.received.length = 0;
    server.accepted.length = 0;
    server.behaviours = [];
    // Both versions' events are due; only the current version goes out.
    assert.deepEqual(await dispatcher.deliverDue(), { delivered: 2, failed: 0 });
    assert.equal(server.received.length, 1);
    assert.equal((JSON.parse(server.received[0]!.body) as Patient).gender, 'male');
  });

  test('a replayed event is not re-sent; other tenants are not pushed; failures are typed', async () => {
    const db = await freshDb();
    const { consumer } = setup(db);
    const p = (await createPatient(db, 'hosp', { resourceType: 'Patient', identifier: [{ value: 'MRN-3' }], name: [{ family: 'Poe' }] }, { nowMs: Date.UTC(2026, 4, 1) })).stored;
    const event: FhirResourceChangedV1 = {
      type: 'FhirResourceChanged',
      version: 1,
      idempotencyKey: `FhirResourceChanged/hosp/Patient/${p.id}/1`,
      tenantId: 'hosp',
      occurredAt: new Date().toISOString(),
      resourceType: 'Patient',
      id: p.id,
      versionId: '1',
    };
    server.received.length = 0;
    server.behaviours = [];
    const signal = new AbortController().signal;
    await consumer.handle(event, signal);
    await consumer.handle(event, signal);
    assert.equal(server.received.length, 1);
    const o = (await createPatient(db, 'other', { resourceType: 'Patient', identifier: [{ value: 'MRN-4' }], name: [{ family: 'Other' }] }, { nowMs: 0 })).stored;
    await consumer.handle({ ...event, tenantId: 'other', id: o.id, idempotencyKey: `FhirResourceChanged/other/Patient/${o.id}/1` }, signal);
    assert.equal(server.received.length, 1);
    await rejectsWith(consumer.handle({ ...event, id: 'gone', idempotencyKey: 'k-gone' }, signal), 'ECO3D_ERR_INTERNAL');
    assert.ok((await readFhirResource(db, 'hosp', 'Patient', p.id)) !== undefined);

    // Nobody listening: an upstream error, retried by the dispatcher.
    const closed = new FakeFhirServer();
    const deadUrl = await closed.listen();
    await closed.close();
    const dead = fhirPushConsumer({ baseUrl: deadUrl, timeoutMs: 2000, readResource: createFhirService({ db, dicomWebBaseUrl: 'http://x/dicom-web' }).readResource });
    await rejectsWith(dead.handle({ ...event, idempotencyKey: 'k-dead' }, signal), 'ECO3D_ERR_UPSTREAM');
    assert.throws(() => fhirPushConsumer({ baseUrl: 'fhir.example', readResource: async () => undefined }), /absolute URL/);
  });
});

// Losing the robot link mid-scan, over the real transports: the serial device vanishes (socat
// killed, as when a cable is pulled) and rosbridge closes. The acquisition must abort with
// reason link-lost, never complete (so it is never billed), the robot must end stopped, and the
// driver must reconnect when the link returns.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { firstValueFrom } from 'rxjs';
import { filter, timeout } from 'rxjs/operators';
import { serveRosbridge, SimRobotDriver, startSerialServer, type RosbridgeServerHandle, type SerialServerHandle } from '../sim/index.ts';
import { assertMeteredNotBillable, errorCode, robotOf, startTestServer, type TestServer } from './harness.ts';

const SWEEP = { kind: 'linear', startMm: { x: 450, y: -30 }, headingDeg: 0, lengthMm: 60, speedMmPerS: 10 };

async function robotAtRest(sim: SimRobotDriver, timeoutMs: number): Promise<void> {
  await firstValueFrom(
    sim.state$.pipe(
      filter((s) => s.jointVelRadPerS.every((v) => Math.abs(v) < 1e-6)),
      timeout(timeoutMs),
    ),
  );
}

async function assertAbortedLinkLost(t: TestServer, uid: string): Promise<void> {
  const token = await t.login('demo-sonographer');
  const rec = await t.api(`/api/acquisitions/${uid}`, { token });
  assert.equal(rec.status, 200);
  assert.equal(rec.body.state, 'aborted');
  assert.equal(rec.body.abortReason, 'link-lost');
  const events = await t.server.db.query<{ event_type: string }>("SELECT event_type FROM outbox WHERE payload->>'acquisitionUid' = $1 AND event_type LIKE 'Acquisition%'", [uid]);
  assert.deepEqual(events.map((e) => e.event_type), ['AcquisitionAborted'], 'an aborted acquisition yields no AcquisitionCompleted');
  await assertMeteredNotBillable(t, uid, 'aborted:link-lost');
  const avail = await t.api('/api/availability', { token });
  assert.ok((avail.body.availability as { up: boolean }[]).some((a) => !a.up), 'the link loss is in the availability log');
}

describe('serial device disappears mid-scan', () => {
  let dir: string;
  let sim: SimRobotDriver;
  let serial: SerialServerHandle;
  let t: TestServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eco3d-serial-e2e-'));
    sim = new SimRobotDriver();
    await sim.connect();
    serial = await startSerialServer(sim, { path: join(dir, 'robot-tty') });
    t = await startTestServer({ robot: `serial:${serial.path}` });
  });
  after(async () => {
    await t?.close();
    await serial?.close();
    await sim?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the acquisition aborts (link-lost), the robot stops, and the driver reconnects', async () => {
    const bs = await t.connect('bedside', await t.login('demo-bedside'));
    await bs.status((s) => s.link.up, 10_000, 'serial link up');
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan: SWEEP })), 'ack');
    const scanning = await bs.status((s) => s.acquisition.state === 'scanning', 20_000, 'scanning');
    const uid = scanning.acquisition.uid!;
    await serial.pullCable();
    const aborted = await bs.status((s) => s.acquisition.state === 'aborted' && s.acquisition.abortReason !== undefined, 5000, 'aborted');
    assert.equal(aborted.acquisition.abortReason, 'link-lost');
    assert.equal(aborted.link.up, false);
    // The robot on the far side of the pulled cable stops by its own host watchdog.
    await robotAtRest(sim, 3000);
    await assertAbortedLinkLost(t, uid);
    // Plug the cable back in: the driver finds the device again by itself.
    await serial.plugIn();
    const back = await bs.status((s) => s.link.up, 10_000, 'serial link back up');
    assert.equal(back.link.up, true);
    assert.ok(robotOf(back).mode !== 'moving');
  });
});

describe('rosbridge closes mid-scan and mid-jog', () => {
  let sim: SimRobotDriver;
  let ros: RosbridgeServerHandle;
  let t: TestServer;

  before(async () => {
    sim = new SimRobotDriver();
    await sim.connect();
    ros = await serveRosbridge(sim, { port: 0 });
    t = await startTestServer({ robot: `ros:${ros.url}` });
  });
  after(async () => {
    await t?.close();
    await ros?.close();
    await sim?.close();
  });

  test('a sweep aborts with link-lost and the robot stops', async () => {
    const bs = await t.connect('bedside', await t.login('demo-bedside'));
    await bs.status((s) => s.link.up, 10_000, 'ros link up');
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan: SWEEP })), 'ack');
    const scanning = await bs.status((s) => s.acquisition.state === 'scanning', 20_000, 'scanning');
    ros.dropAllClients();
    const aborted = await bs.status((s) => s.acquisition.state === 'aborted' && s.acquisition.abortReason !== undefined, 5000, 'aborted');
    assert.equal(aborted.acquisition.abortReason, 'link-lost');
    await robotAtRest(sim, 3000);
    await assertAbortedLinkLost(t, scanning.acquisition.uid!);
    await bs.status((s) => s.link.up, 10_000, 'ros link back up');
    bs.kill();
  });

  test('a jog stops when rosbridge closes', async () => {
    const op = await t.connect('operator', await t.login('demo-sonographer'));
    await op.status((s) => s.link.up, 10_000, 'ros link up');
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    const jog = { type: 'jog', linearMmPerS: { x: 0, y: 10, z: 0 } };
    const hb = setInterval(() => {
      op.send({ type: 'heartbeat' });
      op.send(jog);
    }, 50);
    try {
      await firstValueFrom(sim.state$.pipe(filter((s) => s.mode === 'jogging'), timeout(3000)));
      ros.dropAllClients();
      await robotAtRest(sim, 2000);
      const down = await op.status((s) => !s.link.up || s.problems.some((p) => p.code === 'ECO3D_ERR_LINK_LOST'), 3000, 'link down seen');
      assert.ok(down);
    } finally {
      clearInterval(hb);
      op.kill();
    }
  });
});

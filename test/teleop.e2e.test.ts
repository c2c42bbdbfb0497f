// Tele-operation end to end: a real server with the in-process simulator, real HTTP and
// WebSockets. Each fault of the robot-control issue that lives at this level has a test here.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { decodeMetaImageVolume } from '../protocols/index.ts';
import type { SimRobotDriver } from '../sim/index.ts';
import { databasesUnderTest } from '../store/testing.ts';
import { assertMeteredNotBillable, errorCode, robotOf, startTestServer, type TestServer } from './harness.ts';

const speed = (v: number[]): number => Math.max(...v.map(Math.abs));

for (const database of databasesUnderTest()) describe(`tele-operation over WebSockets (simulated robot, ${database})`, () => {
  let t: TestServer;
  let sonographer: string;
  let bedside: string;

  before(async () => {
    t = await startTestServer({ deadmanMs: '300' }, database);
    sonographer = await t.login('demo-sonographer');
    bedside = await t.login('demo-bedside');
  });
  afterEach(async () => {
    await t.killClients();
  });
  after(async () => {
    await t.close();
  });

  test('sockets and APIs refuse the unauthenticated and the wrong role', async () => {
    await assert.rejects(() => t.connect('operator', 'e3.forged.token'), /HTTP 401/);
    await assert.rejects(() => t.connect('bedside', sonographer), /HTTP 403/);
    const r = await t.api('/api/robot');
    assert.equal(r.status, 401);
    assert.equal(r.body.code, 'ECO3D_ERR_UNAUTHENTICATED');
    const bad = await t.api('/api/auth/login', { method: 'POST', body: { username: 'demo-sonographer', password: 'nope' } });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.code, 'ECO3D_ERR_UNAUTHENTICATED');
    const junk = await t.api('/api/auth/login', { method: 'POST', body: '{"username":' });
    assert.equal(junk.status, 400);
    assert.equal(junk.body.code, 'ECO3D_ERR_BAD_REQUEST');
  });

  test('status is broadcast at 30 Hz or more to every UI', async () => {
    const op = await t.connect('operator', sonographer);
    const bs = await t.connect('bedside', bedside);
    await op.status(() => true);
    const startOp = op.messages.length;
    const startBs = bs.messages.length;
    const t0 = Date.now();
    await new Promise<void>((resolve) => setTimeout(resolve, 1000));
    const elapsedS = (Date.now() - t0) / 1000;
    const rateOp = op.messages.slice(startOp).filter((m) => m.type === 'status').length / elapsedS;
    const rateBs = bs.messages.slice(startBs).filter((m) => m.type === 'status').length / elapsedS;
    assert.ok(rateOp >= 27, `operator status rate ${rateOp.toFixed(1)} Hz`); // 30 Hz nominal, timer jitter allowed
    assert.ok(rateBs >= 27, `bedside status rate ${rateBs.toFixed(1)} Hz`);
    op.kill();
    bs.kill();
  });

  test('bad messages get a code and leave the robot untouched', async () => {
    const op = await t.connect('operator', sonographer);
    const before = robotOf(await op.status((s) => s.robot !== null));
    assert.equal(errorCode(await op.raw('{not json')), 'ECO3D_ERR_BAD_REQUEST');
    assert.equal(errorCode(await op.raw('{"type":"warp-drive","id":"x"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
    assert.equal(errorCode(await op.raw('{"type":"estop","id":"x"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE'); // the e-stop is the bedside's
    assert.equal(errorCode(await op.request({ type: 'jog', linearMmPerS: { x: 5, y: 0, z: 0 } })), 'ECO3D_ERR_NOT_IN_CONTROL');
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    op.send({ type: 'heartbeat' });
    assert.equal(errorCode(await op.raw('{"type":"jog","id":"n1","linearMmPerS":{"x":1e400,"y":0,"z":0}}')), 'ECO3D_ERR_NOT_FINITE');
    assert.equal(errorCode(await op.request({ type: 'jog', linearMmPerS: { x: 1e7, y: 0, z: 0 } })), 'ECO3D_ERR_NOT_FINITE');
    assert.equal(errorCode(await op.request({ type: 'jog', linearMmPerS: { x: 500, y: 0, z: 0 } })), 'ECO3D_ERR_SPEED_LIMIT');
    assert.equal(
      errorCode(await op.request({ type: 'move-to', pose: { positionMm: { x: 2000, y: 0, z: 300 }, orientation: { x: 1, y: 0, z: 0, w: 0 } }, speedMmPerS: 10 })),
      'ECO3D_ERR_WORKSPACE',
    );
    assert.equal(
      errorCode(await op.request({ type: 'move-to', pose: { positionMm: { x: 450, y: 0, z: 300 }, orientation: { x: 0, y: 0, z: 0, w: 0 } }, speedMmPerS: 10 })),
      'ECO3D_ERR_BAD_REQUEST', // not a unit quaternion
    );
    const now = robotOf(await op.status(() => true));
    assert.equal(now.mode, before.mode);
    assert.ok(speed(now.jointVelRadPerS) < 1e-6, 'the robot did not move');
    assert.deepEqual(now.tcpPose.positionMm, before.tcpPose.positionMm);
    assert.equal(errorCode(await op.request({ type: 'release-control' })), 'ack');
    op.kill();
  });

  test('one operator holds control; a second is refused until it is released', async () => {
    const a = await t.connect('operator', sonographer);
    const b = await t.connect('operator', sonographer);
    assert.equal(errorCode(await a.request({ type: 'acquire-control' })), 'ack');
    assert.equal(errorCode(await b.request({ type: 'acquire-control' })), 'ECO3D_ERR_NOT_IN_CONTROL');
    await b.status((s) => s.control.holder === 'demo-sonographer');
    a.kill(); // the holder's connection dies: the lock is released
    await b.status((s) => s.control.holder === null, 3000, 'lock released');
    assert.equal(errorCode(await b.request({ type: 'acquire-control' })), 'ack');
    assert.equal(errorCode(await b.request({ type: 'release-control' })), 'ack');
    b.kill();
  });

  test('the deadman stops a jog when heartbeats stop, even while jogs keep coming', async () => {
    const op = await t.connect('operator', sonographer);
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    const jog = { type: 'jog', linearMmPerS: { x: 0, y: 10, z: 0 } };
    op.send({ type: 'heartbeat' });
    assert.equal(errorCode(await op.request(jog)), 'ack');
    for (let i = 0; i < 4; i++) {
      await new Promise<void>((r) => setTimeout(r, 80));
      op.send({ type: 'heartbeat' });
      op.send(jog);
    }
    await op.status((s) => speed(robotOf(s).jointVelRadPerS) > 1e-3, 2000, 'robot moving');
    // The person lets go: heartbeats stop, but a stuck UI keeps sending jogs (each within the
    // robot's own jog watchdog). Only the deadman can stop this.
    const silentAt = Date.now();
    const jogs = setInterval(() => op.send(jog), 50);
    try {
      const stopped = await op.status((s) => s.problems.some((p) => p.code === 'ECO3D_ERR_DEADMAN'), 2000, 'deadman problem');
      const latencyMs = Date.now() - silentAt;
      assert.ok(latencyMs <= 300 + 150, `deadman reported ${latencyMs} ms after the last heartbeat`);
      assert.ok(stopped.problems.some((p) => p.code === 'ECO3D_ERR_DEADMAN'));
      await op.status((s) => speed(robotOf(s).jointVelRadPerS) < 1e-6, 2000, 'robot at rest');
      assert.equal(errorCode(await op.request(jog)), 'ECO3D_ERR_DEADMAN');
    } finally {
      clearInterval(jogs);
    }
  });

  test('the operator socket dying mid-jog stops the robot', async () => {
    const op = await t.connect('operator', sonographer);
    const watcher = await t.connect('bedside', bedside);
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    const jog = { type: 'jog', linearMmPerS: { x: 0, y: -10, z: 0 } };
    op.send({ type: 'heartbeat' });
    assert.equal(errorCode(await op.request(jog)), 'ack');
    await watcher.status((s) => speed(robotOf(s).jointVelRadPerS) > 1e-3, 2000, 'robot moving');
    const killedAt = Date.now();
    op.kill();
    await watcher.status((s) => speed(robotOf(s).jointVelRadPerS) < 1e-6, 2000, 'robot at rest');
    assert.ok(Date.now() - killedAt <= 300 + 300, 'stopped within the deadman timeout (plus deceleration)');
    watcher.kill();
  });

  test('e-stop during a sweep: motion stops, the acquisition aborts, only the bedside can reset', async () => {
    const op = await t.connect('operator', sonographer);
    const bs = await t.connect('bedside', bedside);
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    op.send({ type: 'heartbeat' });
    const hb = setInterval(() => op.send({ type: 'heartbeat' }), 100);
    try {
      const plan = { kind: 'linear', startMm: { x: 450, y: -30 }, headingDeg: 0, lengthMm: 60, speedMmPerS: 10 };
      assert.equal(errorCode(await op.request({ type: 'sweep-start', plan })), 'ack');
      const scanning = await bs.status((s) => s.acquisition.state === 'positioning' || s.acquisition.state === 'scanning', 5000, 'acquisition running');
      const uid = scanning.acquisition.uid;
      assert.ok(uid !== null && uid.startsWith('2.25.'));
      assert.equal(errorCode(await bs.request({ type: 'estop' })), 'ack');
      const aborted = await bs.status((s) => s.acquisition.state === 'aborted' && s.acquisition.abortReason !== undefined, 3000, 'acquisition aborted');
      assert.equal(aborted.acquisition.abortReason, 'estop');
      assert.equal(aborted.estopLatched, true);
      const still = await bs.status((s) => robotOf(s).mode === 'estopped', 2000, 'robot e-stopped');
      assert.ok(speed(robotOf(still).jointVelRadPerS) < 1e-6);
      // The operator can neither move nor reset.
      op.send({ type: 'heartbeat' });
      assert.equal(errorCode(await op.request({ type: 'jog', linearMmPerS: { x: 1, y: 0, z: 0 } })), 'ECO3D_ERR_ESTOP_LATCHED');
      assert.equal(errorCode(await op.raw('{"type":"estop-reset","id":"r"}')), 'ECO3D_ERR_UNKNOWN_MESSAGE');
      assert.equal(errorCode(await op.request({ type: 'sweep-start', plan })), 'ECO3D_ERR_ESTOP_LATCHED');
      // The bedside can.
      assert.equal(errorCode(await bs.request({ type: 'estop-reset' })), 'ack');
      await bs.status((s) => !s.estopLatched && robotOf(s).mode !== 'estopped', 3000, 'e-stop cleared');
      // The aborted acquisition is in the log with its reason, and its outbox event exists.
      const rec = await t.api(`/api/acquisitions/${uid}`, { token: sonographer });
      assert.equal(rec.status, 200);
      assert.equal(rec.body.state, 'aborted');
      assert.equal(rec.body.abortReason, 'estop');
      const outbox = await t.server.db.query<{ event_type: string }>("SELECT event_type FROM outbox WHERE payload->>'acquisitionUid' = $1 AND event_type LIKE 'Acquisition%'", [uid]);
      assert.deepEqual(outbox.map((r) => r.event_type), ['AcquisitionAborted']);
      await assertMeteredNotBillable(t, uid, 'aborted:estop');
    } finally {
      clearInterval(hb);
      await op.request({ type: 'release-control' }).catch(() => undefined);
      op.kill();
      bs.kill();
    }
  });

  test('over-force during a sweep: the probe retracts and the acquisition aborts', async () => {
    const op = await t.connect('operator', sonographer);
    assert.equal(errorCode(await op.request({ type: 'acquire-control' })), 'ack');
    op.send({ type: 'heartbeat' });
    const hb = setInterval(() => op.send({ type: 'heartbeat' }), 100);
    try {
      const plan = { kind: 'linear', startMm: { x: 450, y: -30 }, headingDeg: 0, lengthMm: 60, speedMmPerS: 10 };
      assert.equal(errorCode(await op.request({ type: 'sweep-start', plan })), 'ack');
      const contact = await op.status((s) => s.acquisition.state === 'scanning' && (s.forceN ?? 0) > 3, 15_000, 'in contact');
      const zBefore = robotOf(contact).tcpPose.positionMm.z;
      (t.server.driver as SimRobotDriver).simulator.injectFault({ kind: 'over-force', extraForceN: 30 });
      const aborted = await op.status((s) => s.acquisition.state === 'aborted' && s.acquisition.abortReason !== undefined, 3000, 'acquisition aborted');
      assert.equal(aborted.acquisition.abortReason, 'fault');
      assert.ok(aborted.problems.some((p) => p.code === 'ECO3D_ERR_FORCE_LIMIT'), JSON.stringify(aborted.problems));
      (t.server.driver as SimRobotDriver).simulator.clearFault('over-force');
      const retracted = await op.status((s) => robotOf(s).tcpPose.positionMm.z > zBefore + 5, 5000, 'probe retracted');
      assert.ok(robotOf(retracted).tcpPose.positionMm.z > zBefore + 5);
    } finally {
      clearInterval(hb);
      (t.server.driver as SimRobotDriver).simulator.clearFault('over-force');
      await op.request({ type: 'release-control' }).catch(() => undefined);
      op.kill();
    }
  });

  test('a completed sweep yields its tracked frames and a reconstructed volume, served per tenant', async () => {
    const bs = await t.connect('bedside', bedside);
    const plan = { kind: 'linear', startMm: { x: 450, y: -15 }, headingDeg: 0, lengthMm: 30, speedMmPerS: 15 };
    assert.equal(errorCode(await bs.request({ type: 'sweep-start', plan })), 'ack');
    const running = await bs.status((s) => s.acquisition.uid !== null && s.acquisition.state !== 'idle', 5000, 'acquisition running');
    const uid = running.acquisition.uid!;
    await bs.status((s) => s.acquisition.uid === uid && s.acquisition.state === 'completed', 30_000, 'acquisition completed');
    // The reconstruction runs in a child process after completion: wait for its files.
    let rec = await t.api(`/api/acquisitions/${uid}`, { token: sonographer });
    for (let i = 0; i < 100 && !(rec.body.files as string[]).includes('volume.mha'); i++) {
      await new Promise<void>((r) => setTimeout(r, 200));
      rec = await t.api(`/api/acquisitions/${uid}`, { token: sonographer });
    }
    assert.deepEqual([...(rec.body.files as string[])].sort(), ['reconstruction.xml', 'tracked-frames.igs.mha', 'volume.mha']);
    assert.ok(rec.body.framesAcquired > 20, `framesAcquired ${rec.body.framesAcquired}`);
    const res = await fetch(`${t.url}/api/acquisitions/${uid}/files/volume.mha`, { headers: { authorization: `Bearer ${sonographer}` } });
    assert.equal(res.status, 200);
    const volume = decodeMetaImageVolume(new Uint8Array(await res.arrayBuffer()), { source: 'volume.mha' });
    assert.ok(volume.grid.dims.every((n) => n > 10), `dims ${volume.grid.dims.join('×')}`);
    assert.ok(volume.data.some((v) => v > 0), 'the volume has data');
    // Another hospital's account cannot read it, and an unknown file name is refused.
    const admin = await t.login('admin', 'admin-password-for-tests');
    const other = await t.api(`/api/acquisitions/${uid}/files/volume.mha`, { token: admin });
    assert.equal(other.status, 404);
    const bad = await t.api(`/api/acquisitions/${uid}/files/..%2Fsecret.key`, { token: sonographer });
    assert.equal(bad.status, 404);
    assert.equal(bad.body.code, 'ECO3D_ERR_NOT_FOUND');
  });

  test('every control action is in the audit log', async () => {
    const admin = await t.login('admin', 'admin-password-for-tests');
    const r = await t.api('/api/audit?limit=1000', { token: admin });
    assert.equal(r.status, 200);
    const actions = new Set((r.body.audit as { action: string }[]).map((e) => e.action));
    for (const a of ['auth.login', 'teleop.control-acquire', 'teleop.control-release', 'teleop.jog', 'teleop.sweep-start', 'teleop.estop', 'teleop.estop-reset']) {
      assert.ok(actions.has(a), `audit log lacks ${a}; has ${[...actions].join(', ')}`);
    }
  });
});

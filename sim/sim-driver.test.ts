import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import type { LinkStatus, RobotCommand, RobotState } from '../protocols/robot.ts';
import { SimRobotDriver } from './sim-driver.ts';
import { rejectsWith } from '../protocols/testing.ts';

const JOG: RobotCommand = { kind: 'jog', linearMmPerS: { x: 0, y: 20, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } };

function record(driver: SimRobotDriver): { states: RobotState[]; links: LinkStatus[]; done: { state: boolean; link: boolean } } {
  const states: RobotState[] = [];
  const links: LinkStatus[] = [];
  const done = { state: false, link: false };
  driver.state$.subscribe({ next: (s) => states.push(s), complete: () => (done.state = true) });
  driver.link$.subscribe({ next: (l) => links.push(l), complete: () => (done.link = true) });
  return { states, links, done };
}


/** Virtual time: node's mock timers (the driver's default clock is Date.now). */
function virtualTime(t: TestContext): void {
  t.mock.timers.enable({ apis: ['setInterval', 'setTimeout', 'Date'], now: 1_000_000 });
}

/** Advances virtual time one 4 ms period at a time (Node 20 moves Date once per tick() call). */
function advance(t: TestContext, ms: number): void {
  for (let done = 0; done < ms; done += 4) t.mock.timers.tick(Math.min(4, ms - done));
}

void describe('SimRobotDriver', () => {
  void it('manual clock: connect replays link up and the first state; tick steps and emits', async () => {
    const driver = new SimRobotDriver({ clock: 'manual' });
    const rec = record(driver);
    assert.deepEqual(rec.links.map((l) => l.up), [false], 'link$ replays the current status: down before connect');
    assert.equal(rec.states.length, 0);
    await driver.connect();
    await driver.connect(); // idempotent
    assert.equal(rec.links.at(-1)!.up, true);
    assert.equal(rec.states.length, 1);
    assert.equal(rec.states[0]!.mode, 'idle');
    driver.tick(100);
    assert.equal(rec.states.length, 1 + 25, 'one state per 4 ms step');
    assert.deepEqual(rec.states.map((s) => s.seq), Array.from({ length: 26 }, (_, i) => i));
    assert.equal(rec.states.at(-1)!.tMs, 100);
    // A late subscriber gets the latest state at once.
    const late: RobotState[] = [];
    driver.state$.subscribe((s) => late.push(s)).unsubscribe();
    assert.equal(late.length, 1);
    assert.equal(late[0]!.seq, 25);
    assert.equal(driver.stats().statesReceived, 26);
    await driver.close();
  });

  void it('send acks accepted commands and rejects refused ones with the robot’s NACK', async () => {
    const driver = new SimRobotDriver({ clock: 'manual' });
    await driver.connect();
    await driver.send(JOG);
    driver.tick(100);
    assert.equal(driver.simulator.state.mode, 'jogging');
    await driver.send({ kind: 'estop' });
    await rejectsWith(driver.send(JOG), 'ECO3D_ERR_NACK', /e-stop is latched/);
    await rejectsWith(driver.send(JOG, 0), 'ECO3D_ERR_BAD_REQUEST');
    await driver.send({ kind: 'reset' });
    assert.deepEqual(driver.stats(), { statesReceived: 26, commandsSent: 4, commandsFailed: 2, errors: {} });
    await driver.close();
  });

  void it('timer clock: steps at 250 Hz with the measured elapsed time (mock timers)', async (t) => {
    virtualTime(t);
    const driver = new SimRobotDriver();
    const rec = record(driver);
    await driver.connect();
    advance(t, 1000);
    assert.equal(rec.states.length, 1 + 250);
    assert.equal(driver.simulator.state.tMs, 1000);
    await driver.close();
    advance(t, 1000);
    assert.equal(driver.simulator.state.tMs, 1000, 'the timer is gone after close');
  });

  void it('caps one step when the event loop stalls', async (t) => {
    virtualTime(t);
    let stallMs = 0;
    const driver = new SimRobotDriver({ now: () => Date.now() + stallMs, maxStepMs: 20 });
    await driver.connect();
    advance(t, 40);
    assert.equal(driver.simulator.state.tMs, 40);
    stallMs = 1000; // the next timer firing measures a 1 s gap
    advance(t, 4);
    assert.equal(driver.simulator.state.tMs, 60, 'stepped by the 20 ms cap, not 1 s');
    await driver.close();
  });

  void it('ack latency: acks arrive after the latency; slower than the timeout ⇒ TIMEOUT (the robot still gets it)', async (t) => {
    virtualTime(t);
    const driver = new SimRobotDriver({ ackLatencyMs: 30 });
    await driver.connect();
    let acked = false;
    const p = driver.send(JOG).then(() => (acked = true));
    advance(t, 28);
    await Promise.resolve();
    assert.equal(acked, false, 'not before the latency');
    assert.equal(driver.simulator.state.mode, 'idle');
    advance(t, 4);
    await p;
    assert.equal(acked, true);
    advance(t, 8);
    assert.equal(driver.simulator.state.mode, 'jogging');
    driver.setAckLatencyMs(600);
    const slow = driver.send({ kind: 'estop' }, 500);
    advance(t, 500);
    await rejectsWith(slow, 'ECO3D_ERR_TIMEOUT', /estop: no acknowledgement within 500 ms/);
    advance(t, 108);
    assert.equal(driver.simulator.state.mode, 'estopped', 'the late command still reached the robot');
    await driver.close();
  });

  void it('dropLink: link$ down with the reason, in-flight and new sends fail LINK_LOST, the robot stops itself', async (t) => {
    virtualTime(t);
    const driver = new SimRobotDriver();
    const rec = record(driver);
    await driver.connect();
    await driver.send(JOG);
    advance(t, 200);
    assert.equal(driver.simulator.state.mode, 'jogging');
    driver.setAckLatencyMs(10);
    const inFlight = driver.send(JOG);
    driver.dropLink('cable pulled');
    assert.deepEqual(rec.links.at(-1), { up: false, atMs: Date.now(), reason: 'cable pulled' });
    await rejectsWith(inFlight, 'ECO3D_ERR_LINK_LOST', /cable pulled/);
    await rejectsWith(driver.send(JOG), 'ECO3D_ERR_LINK_LOST', /cable pulled/);
    const statesBefore = rec.states.length;
    advance(t, 500);
    assert.equal(rec.states.length, statesBefore, 'no states while the link is down');
    assert.equal(driver.simulator.state.mode, 'stopped', 'the robot made a controlled stop by itself');
    assert.ok(driver.simulator.state.jointVelRadPerS.every((v) => v === 0));
    driver.restoreLink();
    assert.equal(rec.links.at(-1)!.up, true);
    assert.equal(rec.states.length, statesBefore + 1, 'the latest state at once on restore');
    assert.equal(rec.states.at(-1)!.mode, 'stopped');
    const ok = driver.send(JOG);
    advance(t, 12);
    await ok;
    await driver.close();
  });

  void it('close is idempotent, rejects pending sends with CLOSED and completes both streams', async (t) => {
    virtualTime(t);
    const driver = new SimRobotDriver({ ackLatencyMs: 50 });
    const rec = record(driver);
    await driver.connect();
    const pending = driver.send(JOG);
    const closing = driver.close();
    await rejectsWith(pending, 'ECO3D_ERR_CLOSED');
    await closing;
    await driver.close();
    assert.equal(driver.closed, true);
    assert.deepEqual(rec.done, { state: true, link: true });
    assert.deepEqual(rec.links.at(-1)!.up, false);
    await rejectsWith(driver.send(JOG), 'ECO3D_ERR_CLOSED');
    await rejectsWith(driver.connect(), 'ECO3D_ERR_CLOSED');
    advance(t, 100);
    // Nothing steps a closed driver's simulator; step it by hand to see what the robot got.
    assert.equal(driver.simulator.step(4).mode, 'stopped', 'the lost jog never arrived; the robot stopped when its host went away');
  });

  void it('sends before connect fail with LINK_LOST (not connected)', async () => {
    const driver = new SimRobotDriver({ clock: 'manual' });
    await rejectsWith(driver.send(JOG), 'ECO3D_ERR_LINK_LOST', /not connected/);
    await driver.close();
  });

  void it('exposes the simulator for fault injection; faults show in state$', async () => {
    const driver = new SimRobotDriver({ clock: 'manual' });
    const rec = record(driver);
    await driver.connect();
    driver.simulator.injectFault({ kind: 'sensor-dropout' });
    driver.tick(4);
    const s = rec.states.at(-1)!;
    assert.equal(s.wrench, null);
    assert.deepEqual(s.faults, ['sensor-dropout']);
    await rejectsWith(driver.send(JOG), 'ECO3D_ERR_NACK', /faulted/);
    await driver.close();
  });
});

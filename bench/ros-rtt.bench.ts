// ROS command round trip over rosbridge on loopback: RosRobotDriver.send({kind: 'stop'}) is a
// std_srvs/Trigger call on /stop through roslib → ws → the simulator's rosbridge server → the
// simulated robot (SimRobotDriver, 250 Hz) behind it, and back. /joint_states etc. stream at
// 125 Hz meanwhile, as in use. Server and client share this process (and its event loop).
// Goal: p99 ≤ 20 ms. Also: jog publish → command at the robot (one way, same clock).
// BENCH_RTT_N (default 2000) calls after 200 warm-up calls.
import { RosRobotDriver } from '../controller/ros-driver.ts';
import type { RobotCommand, RobotDriver } from '../protocols/robot.ts';
import { serveRosbridge } from '../sim/rosbridge-server.ts';
import { SimRobotDriver } from '../sim/sim-driver.ts';
import { bench, percentile } from './stats.ts';

const n = Number(process.env.BENCH_RTT_N ?? 2000);
const sim = new SimRobotDriver();
await sim.connect();
// The simulator, with a hook that sees every command the bridge forwards, and when.
let onCommand: (cmd: RobotCommand, atMs: number) => void = () => undefined;
const robot: RobotDriver = {
  kind: sim.kind,
  state$: sim.state$,
  link$: sim.link$,
  connect: () => sim.connect(),
  send: (cmd, timeoutMs) => {
    onCommand(cmd, performance.now());
    return sim.send(cmd, timeoutMs);
  },
  stats: () => sim.stats(),
  close: () => sim.close(),
};
const server = await serveRosbridge(robot);
const driver = new RosRobotDriver({ url: server.url });
try {
  await driver.connect();
  for (let i = 0; i < 200; i++) await driver.send({ kind: 'stop' });

  const rttMs: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await driver.send({ kind: 'stop' });
    rttMs.push(performance.now() - t0);
  }
  rttMs.sort((a, b) => a - b);
  bench('ros-stop-rtt-p50', percentile(rttMs, 50), 'ms');
  bench('ros-stop-rtt-p99', percentile(rttMs, 99), 'ms');
  bench('ros-stop-rtt-max', rttMs.at(-1)!, 'ms');
  if (percentile(rttMs, 99) > 20) console.error('# ros-rtt: p99 above the 20 ms goal');

  // Jog: one way, from send() to the robot driver behind the bridge, at a 50 Hz jog rate.
  const jogMs: number[] = [];
  let sentAt = 0;
  let arrived: () => void = () => undefined;
  onCommand = (cmd, atMs) => {
    if (cmd.kind === 'jog') {
      jogMs.push(atMs - sentAt);
      arrived();
    }
  };
  for (let i = 0; i < Math.min(n, 500); i++) {
    const got = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('a jog did not reach the robot within 1 s')), 1000);
      arrived = () => {
        clearTimeout(t);
        resolve();
      };
    });
    sentAt = performance.now();
    await driver.send({ kind: 'jog', linearMmPerS: { x: 1, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } });
    await got;
    await new Promise((r) => setTimeout(r, 20));
  }
  jogMs.sort((a, b) => a - b);
  bench('ros-jog-latency-p50', percentile(jogMs, 50), 'ms');
  bench('ros-jog-latency-p99', percentile(jogMs, 99), 'ms');
} finally {
  await driver.close();
  await server.close();
  await sim.close();
}

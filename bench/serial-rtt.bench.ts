// Serial command round trip over a real PTY: SerialRobotDriver.send({kind: 'stop'}) → COBS frame
// → socat → the simulator's serial server → the robot → ACK frame back. STATE frames stream at
// 250 Hz meanwhile, as in use. Goal: p99 ≤ 5 ms.
// BENCH_RTT_N (default 2000) commands after 200 warm-up commands, one at a time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SerialRobotDriver } from '../controller/serial-driver.ts';
import { startSerialServer } from '../sim/serial-server.ts';
import { SerialBenchRobot } from './serial-fake-robot.ts';
import { bench, percentile } from './stats.ts';

const n = Number(process.env.BENCH_RTT_N ?? 2000);
const dir = mkdtempSync(join(tmpdir(), 'eco3d-bench-serial-'));
const path = join(dir, 'robot.tty');
const robot = new SerialBenchRobot();
const server = await startSerialServer(robot, { path });
const driver = new SerialRobotDriver({ path });
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
  bench('serial-cmd-rtt-p50', percentile(rttMs, 50), 'ms');
  bench('serial-cmd-rtt-p99', percentile(rttMs, 99), 'ms');
  bench('serial-cmd-rtt-max', rttMs.at(-1)!, 'ms');
  if (percentile(rttMs, 99) > 5) console.error('# serial-rtt: p99 above the 5 ms goal');

  // A 64-byte cartesian target instead of an empty stop: the payload size hardly matters on a PTY.
  const cartMs: number[] = [];
  const target = { kind: 'cartesian-target', pose: { positionMm: { x: 450, y: 0, z: 260 }, orientation: { x: 1, y: 0, z: 0, w: 0 } }, speedMmPerS: 10 } as const;
  for (let i = 0; i < Math.min(n, 1000); i++) {
    const t0 = performance.now();
    await driver.send(target);
    cartMs.push(performance.now() - t0);
  }
  cartMs.sort((a, b) => a - b);
  bench('serial-cartesian-rtt-p50', percentile(cartMs, 50), 'ms');
  bench('serial-cartesian-rtt-p99', percentile(cartMs, 99), 'ms');
  const st = driver.stats();
  bench('serial-rtt-commands-failed', st.commandsFailed, 'commands');
} finally {
  await driver.close();
  await server.close();
  await robot.close();
  rmSync(dir, { recursive: true, force: true });
}

// Deadman latency with real timers: the time from the operator's last heartbeat to the stop
// command being handed to the driver, with a realistic event-loop load (robot states at 250 Hz,
// operator jogs at 50 Hz). Goal: stop within deadmanTimeoutMs + 20 ms.
//
//   BENCH deadman-stop-latency-p50 / -p99 / -max   (ms, last heartbeat → stop sent)
//   BENCH deadman-overshoot-p99                     (ms beyond the timeout)
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SafetySupervisor, type CommandSource } from '../controller/safety.ts';
import { FakeRobotDriver } from '../controller/testing/fake-driver.ts';
import type { RobotCommand } from '../protocols/robot.ts';
import { bench, percentile } from './stats.ts';

const TRIALS = Number(process.env['DEADMAN_TRIALS'] ?? 50);
const TIMEOUT_MS = 300;
const GOAL_OVERSHOOT_MS = 20;
const OPERATOR: CommandSource = { role: 'operator', actor: 'bench-operator' };
const JOG: RobotCommand = { kind: 'jog', linearMmPerS: { x: 1, y: 0, z: 0 }, angularRadPerS: { x: 0, y: 0, z: 0 } };
const nowMs = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A fake driver that timestamps the stop with the same clock as the supervisor. */
class TimedDriver extends FakeRobotDriver {
  stopAtMs: number | null = null;
  override send(cmd: RobotCommand, timeoutMs?: number): Promise<void> {
    if (cmd.kind === 'stop' && this.stopAtMs === null) this.stopAtMs = nowMs();
    return super.send(cmd, timeoutMs);
  }
}

async function trial(): Promise<{ latencyMs: number; independentMs: number }> {
  const driver = new TimedDriver();
  const sup = new SafetySupervisor(driver, { deadmanTimeoutMs: TIMEOUT_MS });
  let deadmanLatencyMs: number | null = null;
  const sub = sup.events$.subscribe((e) => {
    if (e.type === 'deadman-stop') deadmanLatencyMs = e.latencyMs;
  });
  // Background load: state reports and a jogging console.
  const states = setInterval(() => driver.pushState({ mode: 'jogging' }), 4);
  let lastHeartbeatAtMs = nowMs();
  sup.heartbeat(OPERATOR);
  await sup.command(JOG, OPERATOR);
  const jogs = setInterval(() => {
    if (nowMs() - lastHeartbeatAtMs < TIMEOUT_MS - 20) void sup.command(JOG, OPERATOR).catch(() => undefined /* refusals expected at the end */);
  }, 20);
  // A few heartbeats at the console's 50 ms period, then the console goes silent.
  const beats = 2 + Math.floor(Math.random() * 3);
  for (let i = 0; i < beats; i++) {
    await sleep(50);
    lastHeartbeatAtMs = nowMs();
    sup.heartbeat(OPERATOR);
  }
  while (driver.stopAtMs === null && nowMs() - lastHeartbeatAtMs < TIMEOUT_MS * 3) await sleep(5);
  clearInterval(states);
  clearInterval(jogs);
  sub.unsubscribe();
  sup.close();
  await driver.close();
  if (driver.stopAtMs === null || deadmanLatencyMs === null) throw new Error('deadman never fired');
  return { latencyMs: deadmanLatencyMs, independentMs: driver.stopAtMs - lastHeartbeatAtMs };
}

// Event-loop delay over the run tells a slow supervisor apart from a busy machine.
const loopDelay = monitorEventLoopDelay({ resolution: 5 });
loopDelay.enable();
const latencies: number[] = [];
let maxDisagreementMs = 0;
for (let i = 0; i < TRIALS; i++) {
  const { latencyMs, independentMs } = await trial();
  latencies.push(latencyMs);
  maxDisagreementMs = Math.max(maxDisagreementMs, Math.abs(latencyMs - independentMs));
}
loopDelay.disable();
latencies.sort((a, b) => a - b);
const p99 = percentile(latencies, 99);
bench('deadman-stop-latency-p50', percentile(latencies, 50), 'ms');
bench('deadman-stop-latency-p99', p99, 'ms');
bench('deadman-stop-latency-max', latencies.at(-1)!, 'ms');
bench('deadman-overshoot-p99', p99 - TIMEOUT_MS, 'ms');
console.error(
  `# ${TRIALS} trials, timeout ${TIMEOUT_MS} ms; supervisor vs driver-side timing differ by ≤ ${maxDisagreementMs.toFixed(3)} ms; ` +
    `goal overshoot ≤ ${GOAL_OVERSHOOT_MS} ms: ${p99 - TIMEOUT_MS <= GOAL_OVERSHOOT_MS ? 'met' : 'MISSED'}; ` +
    `event-loop delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ms, max ${(loopDelay.max / 1e6).toFixed(1)} ms`,
);

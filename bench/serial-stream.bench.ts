// Sustained STATE stream over a real PTY at 250 Hz for BENCH_DURATION_S seconds (default 60):
// the simulator's serial server samples a ~1 kHz robot, SerialRobotDriver decodes. Reports the
// achieved rate, the worst inter-arrival gap, and a backlog indicator: the latency from the
// robot's tMs to receipt (same process, same clock) in the first vs the last 10 s. A stream that
// queued instead of sampling would show the last window's latency growing past the first's.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Subscription } from 'rxjs';
import { SerialRobotDriver } from '../controller/serial-driver.ts';
import { SERIAL_STATE_FRAME_WIRE_BYTES } from '../protocols/serial.ts';
import { startSerialServer } from '../sim/serial-server.ts';
import { SerialBenchRobot } from './serial-fake-robot.ts';
import { bench, percentile } from './stats.ts';

const durationS = Number(process.env.BENCH_DURATION_S ?? 60);
const rateHz = 250;
const windowS = Math.min(10, durationS / 2);
const warmupMs = 1000;

const dir = mkdtempSync(join(tmpdir(), 'eco3d-bench-serial-'));
const path = join(dir, 'robot.tty');
const robot = new SerialBenchRobot();
const server = await startSerialServer(robot, { path, stateRateHz: rateHz });
const driver = new SerialRobotDriver({ path });
try {
  await driver.connect();
  const arrivalsMs: number[] = [];
  const latenciesMs: number[] = [];
  let startMs = Number.NaN;
  const subs: Subscription[] = [];
  const done = new Promise<void>((resolve, reject) => {
    const t0 = performance.now();
    subs.push(driver.state$.subscribe((s) => {
      const now = performance.now();
      if (now - t0 < warmupMs) return;
      if (Number.isNaN(startMs)) startMs = now;
      arrivalsMs.push(now);
      latenciesMs.push(now - s.tMs);
      if (now - startMs >= durationS * 1000) resolve();
    }));
    subs.push(
      driver.link$.subscribe((l) => {
        if (!l.up) reject(new Error(`link went down during the benchmark: ${l.reason}`));
      }),
    );
  });
  try {
    await done;
  } finally {
    for (const sub of subs) sub.unsubscribe();
  }

  const elapsedS = (arrivalsMs.at(-1)! - arrivalsMs[0]!) / 1000;
  const rate = (arrivalsMs.length - 1) / elapsedS;
  let maxGapMs = 0;
  const gaps: number[] = [];
  for (let i = 1; i < arrivalsMs.length; i++) {
    const g = arrivalsMs[i]! - arrivalsMs[i - 1]!;
    gaps.push(g);
    if (g > maxGapMs) maxGapMs = g;
  }
  gaps.sort((a, b) => a - b);
  const windowOf = (fromMs: number, toMs: number): number[] =>
    latenciesMs.filter((_, i) => arrivalsMs[i]! - startMs >= fromMs && arrivalsMs[i]! - startMs < toMs).sort((a, b) => a - b);
  const first = windowOf(0, windowS * 1000);
  const last = windowOf((durationS - windowS) * 1000, Number.POSITIVE_INFINITY);

  bench('serial-state-rate', rate, 'states/s');
  bench('serial-state-gap-max', maxGapMs, 'ms');
  bench('serial-state-gap-p99', percentile(gaps, 99), 'ms');
  bench('serial-state-latency-first-p50', percentile(first, 50), 'ms');
  bench('serial-state-latency-first-max', first.at(-1)!, 'ms');
  bench('serial-state-latency-last-p50', percentile(last, 50), 'ms');
  bench('serial-state-latency-last-max', last.at(-1)!, 'ms');
  bench('serial-state-bandwidth', rate * SERIAL_STATE_FRAME_WIRE_BYTES, 'bytes/s');
  const st = driver.stats();
  const errors = Object.values(st.errors).reduce((a, b) => a + b, 0);
  bench('serial-state-transport-errors', errors, 'errors');
  const ss = server.stats();
  bench('serial-state-frames-dropped', ss.framesDropped, 'frames');
  console.error(`# ${arrivalsMs.length} states in ${elapsedS.toFixed(1)} s; driver errors ${JSON.stringify(st.errors)}; server ${JSON.stringify(ss)}`);
} finally {
  await driver.close();
  await server.close();
  await robot.close();
  rmSync(dir, { recursive: true, force: true });
}

// Sustained /joint_states through a plain roslib client (a ROS user's code) for
// BENCH_DURATION_S seconds (default 60): achieved rate, longest gap, and a backlog indicator.
// Backlog: latency = receipt wall clock − header stamp (the server's sampling time). A server or
// client that queues instead of dropping shows a latency that grows over the run, so we print
// the mean latency of the first and of the last 10 s, and their difference.
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Ros, Topic } from 'roslib';
import { serveRosbridge } from '../sim/rosbridge-server.ts';
import { SimRobotDriver } from '../sim/sim-driver.ts';
import { bench, percentile } from './stats.ts';

const durationS = Number(process.env.BENCH_DURATION_S ?? 60);
const windowS = Math.min(10, durationS / 3);
const wallNowMs = (): number => performance.timeOrigin + performance.now();

type JointStateMsg = { header: { stamp: { sec: number; nanosec: number } } };

// The simulated robot (250 Hz) behind the bridge, server and client in this one process.
const robot = new SimRobotDriver();
await robot.connect();
const server = await serveRosbridge(robot);
const ros = new Ros({ url: server.url });
try {
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('roslib did not connect')), 5000);
    ros.on('connection', () => {
      clearTimeout(t);
      resolve();
    });
  });
  const arrivalsMs: number[] = [];
  const latencyMs: number[] = [];
  const topic = new Topic<JointStateMsg>({ ros, name: '/joint_states', messageType: 'sensor_msgs/msg/JointState' });
  topic.subscribe((m) => {
    const now = wallNowMs();
    arrivalsMs.push(now);
    latencyMs.push(now - (m.header.stamp.sec * 1000 + m.header.stamp.nanosec / 1e6));
  });
  // Gaps that the event loop itself caused (GC, a busy host) are not the bridge's doing: measure them.
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  await new Promise((r) => setTimeout(r, durationS * 1000));
  loopDelay.disable();
  topic.unsubscribe();

  const t0 = arrivalsMs[0]!;
  const tEnd = arrivalsMs.at(-1)!;
  let maxGapMs = 0;
  for (let i = 1; i < arrivalsMs.length; i++) maxGapMs = Math.max(maxGapMs, arrivalsMs[i]! - arrivalsMs[i - 1]!);
  const inWindow = (from: number, to: number): number[] =>
    latencyMs.filter((_, i) => arrivalsMs[i]! >= from && arrivalsMs[i]! < to).sort((a, b) => a - b);
  const first = inWindow(t0, t0 + windowS * 1000);
  const last = inWindow(tEnd - windowS * 1000, tEnd + 1);
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

  bench('ros-joint-states-rate', (arrivalsMs.length - 1) / ((tEnd - t0) / 1000), 'Hz');
  bench('ros-joint-states-max-gap', maxGapMs, 'ms');
  bench('ros-joint-states-latency-first-mean', mean(first), 'ms');
  bench('ros-joint-states-latency-last-mean', mean(last), 'ms');
  bench('ros-joint-states-latency-last-p99', percentile(last, 99), 'ms');
  bench('ros-joint-states-backlog-growth', mean(last) - mean(first), 'ms');
  bench('ros-joint-states-dropped', server.stats().messagesDropped, 'messages');
  bench('ros-bridge-ticks-skipped', server.stats().ticksSkipped, 'ticks');
  bench('ros-stream-event-loop-delay-max', loopDelay.max / 1e6, 'ms');
} finally {
  ros.close();
  await server.close();
  await robot.close();
}

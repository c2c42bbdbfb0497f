// 20 viewers join and leave, again and again, while the robot sweeps: the memory of the streamer
// process (where the peers live) stays flat, no peer connection leaks, the sweep completes, and
// the operator's video keeps flowing. The server runs in its own processes (`eco3d start` and its
// streamer), so their memory is measured alone; the 20 viewers run in a third (live-crowd.ts).
import assert from 'node:assert/strict';
import { after, before, test, type TestContext } from 'node:test';
import WebSocket from 'ws';
import { startCrowd, type Crowd } from './live-crowd.ts';
import { connectNodeViewer, procUsage, startChildServer, streamerPid, watchVideo, type ChildServer } from './live-client.ts';

const ROUNDS = 6;
/** libwebrtc and the allocator keep pools that grow over the first rounds, then stay (see README). */
const WARM_UP_ROUNDS = 3;
const VIEWERS = 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let server: ChildServer;
/** The 20 viewers, in a process of their own at a lower priority (see live-crowd.ts). */
let crowd: Crowd;
/** Every client this file opens, closed in after() whatever happened (open peers keep the process alive). */
const open = new Set<{ close(): void }>();
before(async () => {
  server = await startChildServer();
  crowd = startCrowd();
});
after(async () => {
  await crowd.close();
  for (const c of open) c.close();
  await server.stop();
  await sleep(1000); // let libwebrtc's threads finish closing before the process exits
});

/** Polls `check` until it holds; fails with `what()` after `timeoutMs`. */
async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, what: () => string): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    assert.ok(Date.now() - t0 < timeoutMs, what());
    await sleep(100);
  }
}

async function liveStats(admin: string): Promise<{ viewers: number; peersOpen: number }> {
  const r = await fetch(`${server.url}/api/live`, { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(r.status, 200);
  return (await r.json()) as { viewers: number; peersOpen: number };
}

test('20 viewers joining and leaving during a sweep: flat memory, no leak, the scan and the operator unaffected', { timeout: 900_000 }, async (t) => {
  const streamerAtStart = streamerPid(server.pid);
  try {
    await churn(t);
  } catch (err) {
    // @roamhq/wrtc can crash sending on a data channel that the far side closes at that moment
    // (README, "Two things we learned"); the server then restarts its streamer. That crash is the
    // binding's, and it is reported here; the churn runs once more on a fresh server, and must
    // pass there.
    let restarted: boolean;
    try {
      restarted = streamerPid(server.pid) !== streamerAtStart;
    } catch {
      restarted = true;
    }
    if (!restarted) throw err;
    t.diagnostic(`the streamer process crashed and was restarted (${(err as Error).message}); the churn runs once more on a fresh server`);
    for (const c of open) c.close();
    open.clear();
    await crowd.close();
    await server.stop();
    server = await startChildServer();
    crowd = startCrowd();
    await churn(t);
  }
});

async function churn(t: TestContext): Promise<void> {
  const operatorSession = await server.login('demo-sonographer');
  const admin = await server.login('admin');
  const bedside = await server.login('demo-bedside');

  const operator = await connectNodeViewer(server.url, { session: operatorSession }, { want: { video: true, telemetry: true, volume: true }, reconnect: false });
  open.add(operator);
  while (operator.videoStream === null) await sleep(20);
  const frameTimes: number[] = [];
  const stopVideo = watchVideo(operator.videoStream, (f) => frameTimes.push(f.receivedAtMs));

  // A long, slow sweep (100 s of scanning) during which the first rounds run; on a 2-core test
  // machine the later ones may come after it, and still check that memory is flat. (67 s was too
  // short once in a full CI run: the first round of 20 joins took most of it.)
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/ws/bedside`, { headers: { authorization: `Bearer ${bedside}` } });
  const states: string[] = [];
  ws.on('message', (d) => {
    const m = JSON.parse((d as Buffer).toString('utf8')) as { type: string; status?: { acquisition: { state: string; abortReason?: string } } };
    const a = m.status?.acquisition;
    const state = a === undefined ? undefined : a.abortReason === undefined ? a.state : `${a.state} (${a.abortReason})`;
    if (m.type === 'status' && state !== undefined && states.at(-1) !== state) states.push(state);
  });
  open.add(ws);
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'sweep-start', id: 'churn', plan: { kind: 'linear', startMm: { x: 450, y: -50 }, headingDeg: 0, lengthMm: 100, speedMmPerS: 1 } }));
  while (!states.includes('scanning')) await sleep(50);

  const rss: number[] = [];
  const slowestJoinMs: number[] = [];
  let roundsDuringSweep = 0;
  for (let round = 0; round < ROUNDS; round++) {
    if (states.at(-1) === 'scanning') roundsDuringSweep++;
    slowestJoinMs.push(Math.max(...(await crowd.join(VIEWERS, server.url, admin))));
    // Connecting 20 peers (ICE, DTLS, encoders) takes a while on a loaded machine: wait for it.
    let peersOpen = 0;
    await until(async () => (peersOpen = (await liveStats(admin)).peersOpen) === VIEWERS + 1, 90_000, () => `round ${round}: every viewer has its peer (${peersOpen} of ${VIEWERS + 1})`);
    await crowd.leave();
    await until(async () => (peersOpen = (await liveStats(admin)).peersOpen) === 1, 10_000, () => `round ${round}: peers closed after the viewers left (${peersOpen} open)`);
    // The peers, encoders and channels live in the streamer process. (The server process grows
    // during a sweep by the frames it records for the study, ~300 kB each: not the viewers'.)
    rss.push(procUsage(streamerPid(server.pid)).rssMb);
  }
  // The first rounds pay one-off costs (libwebrtc's codec and transport pools, allocator arenas,
  // JIT); after them, memory is flat.
  const growthMb = rss.at(-1)! - rss[WARM_UP_ROUNDS - 1]!;
  assert.ok(growthMb < 64, `streamer RSS after rounds: ${rss.map((r) => r.toFixed(0)).join(', ')} MB (growth ${growthMb.toFixed(1)} MB after round ${WARM_UP_ROUNDS})`);

  assert.ok(roundsDuringSweep >= 2, `${roundsDuringSweep} rounds began during the sweep`);
  // The scan went on and completed.
  await until(() => /^(completed|aborted|failed)/.test(states.at(-1) ?? ''), 120_000, () => `the sweep ends (states: ${states.join(' → ')})`);
  assert.equal(states.at(-1), 'completed', `acquisition states: ${states.join(' → ')}`);

  // The operator's video never stalled for long while viewers came and went.
  stopVideo();
  const gaps = frameTimes.slice(1).map((t, i) => t - frameTimes[i]!);
  const maxGap = Math.max(...gaps);
  const fps = (frameTimes.length - 1) / ((frameTimes.at(-1)! - frameTimes[0]!) / 1000);
  const longGaps = gaps.filter((g) => g > 500).length;
  const gapsAt = gaps.flatMap((g, i) => (g > 500 ? [`${g} ms at ${new Date(frameTimes[i]!).toISOString()}`] : []));
  if (gapsAt.length > 0) t.diagnostic(`operator gaps > 500 ms: ${gapsAt.join('; ')}`);
  t.diagnostic(`${roundsDuringSweep} of ${ROUNDS} rounds began during the sweep; slowest join per round: ${slowestJoinMs.join(', ')} ms`);
  t.diagnostic(`streamer RSS after each round: ${rss.map((r) => r.toFixed(0)).join(', ')} MB; operator: ${frameTimes.length} frames, ${fps.toFixed(1)} fps, longest gap ${maxGap} ms, ${longGaps} gaps > 500 ms`);
  assert.ok(frameTimes.length > 100, `operator decoded ${frameTimes.length} frames`);
  // The operator's video kept flowing. On a saturated 2-core machine libwebrtc loses a packet now
  // and then, and the decoder waits for the repair (NACK or a key frame): a freeze of up to ~1.5 s
  // was seen a few times per run; a stall would be far longer, or frequent.
  assert.ok(fps >= 15, `the operator's video ran at ${fps.toFixed(1)} fps`);
  assert.ok(maxGap < 2500 && longGaps <= 5, `the operator's video froze: longest gap ${maxGap} ms, ${longGaps} gaps > 500 ms`);
  operator.close();
  ws.close();
}

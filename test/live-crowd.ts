// A crowd of Node WebRTC viewers in a process of their own: on a small test machine they stand in
// for viewers on other computers, and the server's processes are measured apart from them. They
// run at the streamer's priority (nice 2, below the control loop's): at a lower one they were
// starved on 2 cores and took too long to answer the server's offers; at the control
// loop's, they starved it. Every viewer takes video and telemetry,
// every tenth the volume too (assembling it is the costly part of a Node viewer). Driven over
// stdin/stdout, one JSON per line:
//   → {"join": N, "url": U, "session": S}    ← {"joined": N, "joinMs": [...]}  (every LiveClient answered)
//   → {"leave": true}                          ← {"left": N}
//   → {"exit": true}                           the process closes its viewers and exits
// Used by test/live-churn.e2e.test.ts through `startCrowd()`.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LiveClient } from '../marketplace/sdk/live-client.ts';
import { connectNodeViewer } from './live-client.ts';

export interface Crowd {
  /** Resolves with the time each viewer took to connect (WebSocket to answered offer), ms. */
  join(n: number, url: string, session: string): Promise<number[]>;
  leave(): Promise<void>;
  close(): Promise<void>;
}

export function startCrowd(): Crowd {
  const self = fileURLToPath(import.meta.url);
  const child = spawn('nice', ['-n', '5', process.execPath, '--import', 'tsx', self], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const waiting: ((m: Record<string, unknown>) => void)[] = [];
  lines.on('line', (l) => waiting.shift()?.(JSON.parse(l) as Record<string, unknown>));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ask = (m: object): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null) {
        reject(new Error('the crowd process has exited'));
        return;
      }
      waiting.push((r) => (typeof r.error === 'string' ? reject(new Error(r.error)) : resolve(r)));
      child.stdin.write(`${JSON.stringify(m)}\n`);
    });
  return {
    join: async (n, url, session) => (await ask({ join: n, url, session })).joinMs as number[],
    leave: async () => {
      await ask({ leave: true });
    },
    close: async () => {
      if (child.exitCode === null) child.stdin.write('{"exit":true}\n');
      const killer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

// --- the child ----------------------------------------------------------------------------------

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const viewers: LiveClient[] = [];
  const joinMs: number[] = [];
  const reply = (m: object): void => {
    process.stdout.write(`${JSON.stringify(m)}\n`);
  };
  const closeAll = (): number => {
    const n = viewers.length;
    for (const v of viewers.splice(0)) v.close();
    return n;
  };
  const rl = createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  rl.on('line', (line) => {
    queue = queue.then(async () => {
      const m = JSON.parse(line) as { join?: number; url?: string; session?: string; leave?: boolean; exit?: boolean };
      try {
        if (m.join !== undefined) {
          for (let i = 0; i < m.join; i++) {
            const t0 = Date.now();
            viewers.push(await connectNodeViewer(m.url!, { session: m.session! }, { want: { video: true, telemetry: true, volume: i % 10 === 0 }, reconnect: false }));
            joinMs.push(Date.now() - t0);
          }
          reply({ joined: viewers.length, joinMs: joinMs.splice(0) });
        } else if (m.leave === true) {
          reply({ left: closeAll() });
        } else if (m.exit === true) {
          closeAll();
          // The viewers leave politely (the server answers bye, or LiveClient gives up after 5 s),
          // then libwebrtc's threads finish.
          setTimeout(() => process.exit(0), 6500);
        }
      } catch (err) {
        reply({ error: (err as Error).message });
      }
    });
  });
  rl.on('close', () => {
    closeAll();
    setTimeout(() => process.exit(0), 6500);
  });
}

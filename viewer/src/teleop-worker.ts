// The tele-operation WebSocket lives in this worker so that the deadman heartbeat keeps its
// 100 ms beat while the page's main thread is busy for a moment (a first WebGL shader compile, a
// volume upload). The page still proves it is alive: it posts `alive` every 100 ms, and the
// worker stops heartbeating once the page has been silent for LIVENESS_MS — a hung page stops
// the robot (the server's deadman fires 300 ms after the last heartbeat). Jog refreshes stay on
// the main thread, so a busy page never keeps a jog going (the robot's jog watchdog stops it).
export type ToWorker =
  | { op: 'connect'; url: string }
  | { op: 'send'; data: string }
  | { op: 'heartbeat'; on: boolean }
  | { op: 'alive' }
  | { op: 'close' };
export type FromWorker = { ev: 'open' } | { ev: 'message'; data: string } | { ev: 'close'; code: number; reason: string };

const HEARTBEAT_MS = 100;
/** How long the page may be silent before heartbeats stop. */
export const LIVENESS_MS = 1000;

// A dedicated worker's global scope, typed without the WebWorker lib (this project compiles with DOM).
const scope = self as unknown as { postMessage(m: FromWorker): void; onmessage: ((e: MessageEvent<ToWorker>) => void) | null };

let ws: WebSocket | null = null;
let armed = false;
let lastAliveMs = 0;

setInterval(() => {
  if (!armed || ws === null || ws.readyState !== WebSocket.OPEN) return;
  if (performance.now() - lastAliveMs > LIVENESS_MS) return;
  ws.send('{"type":"heartbeat"}');
}, HEARTBEAT_MS);

scope.onmessage = (e) => {
  const m = e.data;
  switch (m.op) {
    case 'connect': {
      ws?.close(1000, 'reconnect');
      const s = new WebSocket(m.url);
      ws = s;
      s.onopen = () => scope.postMessage({ ev: 'open' });
      s.onmessage = (ev: MessageEvent) => {
        if (typeof ev.data === 'string') scope.postMessage({ ev: 'message', data: ev.data });
      };
      s.onclose = (ev: CloseEvent) => {
        if (ws === s) ws = null;
        scope.postMessage({ ev: 'close', code: ev.code, reason: ev.reason });
      };
      break;
    }
    case 'send':
      if (ws !== null && ws.readyState === WebSocket.OPEN) ws.send(m.data);
      break;
    case 'heartbeat':
      armed = m.on;
      lastAliveMs = performance.now();
      if (armed && ws !== null && ws.readyState === WebSocket.OPEN) ws.send('{"type":"heartbeat"}');
      break;
    case 'alive':
      lastAliveMs = performance.now();
      break;
    case 'close':
      armed = false;
      ws?.close(1000, 'page closed');
      ws = null;
      break;
  }
};

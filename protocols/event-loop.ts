// A watch on the event loop: warns when the thread that runs it was blocked. The server's
// control loop and the streamer each run one, so a stall (a long synchronous task) shows in the
// log with its length, instead of only as its symptoms (a frozen video, a state watchdog abort).

/** Calls `onBlocked(ms)` when a tick comes `thresholdMs` or more late; returns the stop function. */
export function watchEventLoop(onBlocked: (blockedMs: number) => void, thresholdMs = 500, everyMs = 100): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const lateMs = now - last - everyMs;
    last = now;
    if (lateMs >= thresholdMs) onBlocked(Math.round(lateMs));
  }, everyMs);
  timer.unref?.();
  return () => clearInterval(timer);
}

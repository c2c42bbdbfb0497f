// Structured logging (pino, JSON lines on stderr). Stdout stays free for what a command prints
// for a person or a script (the simulator's PTY path, a scan's output folder).
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({ level, base: { svc: 'eco3d' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
}

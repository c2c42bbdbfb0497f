// Carries the tele-operation session over WebSockets: parses every frame at the edge, answers
// `ack` or `error` with a code, and broadcasts the status to every connected UI at a fixed rate.
// A slow UI drops status frames (drop, not block): it never slows the others or the robot.
import { randomUUID } from 'node:crypto';
import type { RawData, WebSocket } from 'ws';
import { Eco3dError, parseTeleopMessage, toEco3dError, type TeleopChannel, type TeleopServerMessage, type TeleopStatus } from '../protocols/index.ts';
import type { TeleopParticipant, TeleopSession } from '../controller/index.ts';
import type { TeleopGateway } from './app.ts';
import type { Principal } from './auth.ts';
import type { Logger } from './log.ts';

/** Above this many unsent bytes a UI gets no status frames until it catches up. */
const MAX_BUFFERED_BYTES = 256 * 1024;
/** Raw frames per second a socket may send before being refused (the supervisor limits motion commands separately). */
const MAX_FRAMES_PER_S = 200;
const PING_INTERVAL_MS = 5000;

interface Client {
  readonly socket: WebSocket;
  readonly participant: TeleopParticipant;
  readonly principal: Principal;
  frameWindowStartMs: number;
  framesInWindow: number;
  alive: boolean;
  droppedStatus: number;
}

export class TeleopWsGateway implements TeleopGateway {
  private readonly clients = new Set<Client>();
  private readonly broadcastTimer: NodeJS.Timeout;
  private readonly pingTimer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly session: TeleopSession,
    private readonly log: Logger,
    private readonly meta: { tenantId: string; deviceId: string },
    broadcastHz: number,
  ) {
    this.broadcastTimer = setInterval(() => this.broadcast(), Math.max(1, Math.round(1000 / broadcastHz)));
    this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_MS);
  }

  status(): TeleopStatus {
    return this.session.status();
  }

  get clientCount(): number {
    return this.clients.size;
  }

  attach(socket: WebSocket, principal: Principal, channel: TeleopChannel): void {
    if (this.closed) {
      socket.close(1001, 'server shutting down');
      return;
    }
    // One robot per server for now: a client of another tenant must not drive this one.
    if (principal.role !== 'platform-admin' && principal.tenantId !== this.meta.tenantId) {
      send(socket, { type: 'error', code: 'ECO3D_ERR_FORBIDDEN', message: `this robot belongs to tenant ${this.meta.tenantId}` });
      socket.close(1008, 'forbidden');
      return;
    }
    const client: Client = {
      socket,
      participant: { connId: randomUUID(), actor: principal.username, channel },
      principal,
      frameWindowStartMs: Date.now(),
      framesInWindow: 0,
      alive: true,
      droppedStatus: 0,
    };
    this.clients.add(client);
    this.log.info({ actor: principal.username, channel, connId: client.participant.connId }, 'teleop client connected');
    send(socket, { type: 'hello', channel, actor: principal.username, role: principal.role, tenantId: this.meta.tenantId, deviceId: this.meta.deviceId });
    send(socket, { type: 'status', status: this.session.status() });

    socket.on('pong', () => {
      client.alive = true;
    });
    socket.on('message', (data, isBinary) => {
      void this.onFrame(client, isBinary ? null : rawText(data));
    });
    socket.on('close', () => {
      this.clients.delete(client);
      this.log.info({ actor: principal.username, channel, droppedStatus: client.droppedStatus }, 'teleop client disconnected');
      this.session.leave(client.participant).catch((err: unknown) => {
        this.log.error({ err: toEco3dError(err).message }, 'stopping after a disconnect failed');
      });
    });
    socket.on('error', (err) => this.log.warn({ err: err.message }, 'teleop socket error'));
  }

  private async onFrame(client: Client, raw: string | null): Promise<void> {
    let id: string | undefined;
    try {
      const now = Date.now();
      if (now - client.frameWindowStartMs >= 1000) {
        client.frameWindowStartMs = now;
        client.framesInWindow = 0;
      }
      if (++client.framesInWindow > MAX_FRAMES_PER_S) throw new Eco3dError('ECO3D_ERR_RATE_LIMITED', `more than ${MAX_FRAMES_PER_S} messages per second`);
      if (raw === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'binary frames are not accepted; send JSON text');
      id = peekId(raw);
      const msg = client.participant.channel === 'operator' ? parseTeleopMessage('operator', raw) : parseTeleopMessage('bedside', raw);
      await this.session.handle(client.participant, msg);
      if (id !== undefined) send(client.socket, { type: 'ack', id });
    } catch (err) {
      const e = toEco3dError(err);
      if (e.code === 'ECO3D_ERR_INTERNAL') this.log.error({ err: e, cause: e.cause }, 'teleop message failed');
      send(client.socket, { type: 'error', ...(id === undefined ? {} : { id }), code: e.code, message: e.message });
    }
  }

  private broadcast(): void {
    if (this.clients.size === 0) return;
    const frame = JSON.stringify({ type: 'status', status: this.session.status() } satisfies TeleopServerMessage);
    for (const c of this.clients) {
      if (c.socket.readyState !== c.socket.OPEN) continue;
      if (c.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        c.droppedStatus++;
        continue;
      }
      c.socket.send(frame);
    }
  }

  private ping(): void {
    for (const c of this.clients) {
      if (!c.alive) {
        c.socket.terminate();
        continue;
      }
      c.alive = false;
      c.socket.ping();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.broadcastTimer);
    clearInterval(this.pingTimer);
    for (const c of this.clients) c.socket.close(1001, 'server shutting down');
  }
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

function send(socket: WebSocket, msg: TeleopServerMessage): void {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(msg));
}

/** The request id, if the frame has one, so that even a malformed message gets a matching error. */
function peekId(raw: string): string | undefined {
  const m = /"id"\s*:\s*"([^"\\]{1,64})"/.exec(raw.slice(0, 4096));
  return m?.[1];
}

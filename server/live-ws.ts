// The signaling WebSocket of the live streams (`/ws/live`): authenticates the viewer (session
// cookie, Bearer header, or a scoped token in its `join`), asks the LiveHub for a peer, and
// carries the offer/answer/ICE exchange. Every bad message is answered with a coded error; a
// viewer's peer is closed when its socket closes, so none outlives its viewer.
import type { RawData, WebSocket } from 'ws';
import { Eco3dError, toEco3dError } from '../protocols/errors.ts';
import { parseLiveClientMessage, type LiveServerMessage } from '../protocols/live.ts';
import type { LiveHubStats, LiveService, LiveViewerHandle } from '../streamer/index.ts';
import { liveGrantsFor, viewerTierFor, type AuthService, type Principal } from './auth.ts';
import type { Logger } from './log.ts';

/** A socket must send its `join` within this time. */
const JOIN_TIMEOUT_MS = 5000;
const MAX_MESSAGES_PER_S = 100;
/** After a client's leave, how long its signaling socket may stay open for the server's bye. */
const LEAVE_GRACE_MS = 2000;

export interface LiveSignaling {
  attach(socket: WebSocket, principal: Principal | null): void;
  /** Viewers, open peers and per-viewer counters (GET /api/live). */
  stats(): Promise<LiveHubStats>;
  /**
   * Cuts at once the streams joined with these tokens (revoked, or their plugin disabled): the
   * viewer's peer is closed and its socket closed with 1008. Returns how many were cut.
   */
  cutTokens(tokenIds: readonly string[]): number;
  close(): void;
}

export function liveSignaling(hub: LiveService, auth: AuthService, log: Logger, meta: { tenantId: string }): LiveSignaling {
  const sockets = new Set<WebSocket>();
  /** The sockets that joined with a scoped token, and what cuts them. */
  const tokenSockets = new Map<WebSocket, { tokenId: string; cut: () => void }>();
  return {
    attach(socket, sessionPrincipal) {
      sockets.add(socket);
      let viewer: LiveViewerHandle | null = null;
      let joining = false;
      let windowStartMs = Date.now();
      let inWindow = 0;
      const send = (m: LiveServerMessage): void => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(m));
      };
      const fail = (err: unknown): void => {
        const e = toEco3dError(err);
        if (e.code === 'ECO3D_ERR_INTERNAL') log.error({ err: e, cause: e.cause }, 'live signaling failed');
        send({ type: 'error', code: e.code, message: e.message });
      };
      const joinTimer = setTimeout(() => {
        if (viewer !== null || joining) return;
        send({ type: 'error', code: 'ECO3D_ERR_TIMEOUT', message: `no join within ${JOIN_TIMEOUT_MS} ms` });
        socket.close(1008, 'no join');
      }, JOIN_TIMEOUT_MS);

      const onMessage = async (raw: string | null): Promise<void> => {
        const now = Date.now();
        if (now - windowStartMs >= 1000) {
          windowStartMs = now;
          inWindow = 0;
        }
        if (++inWindow > MAX_MESSAGES_PER_S) throw new Eco3dError('ECO3D_ERR_RATE_LIMITED', `more than ${MAX_MESSAGES_PER_S} signaling messages per second`);
        if (raw === null) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'binary frames are not accepted; send JSON text');
        const msg = parseLiveClientMessage(raw);
        switch (msg.type) {
          case 'join': {
            if (viewer !== null || joining) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'already joined');
            joining = true;
            try {
              const principal = msg.token !== undefined ? await auth.authenticate(msg.token) : sessionPrincipal;
              if (principal === null) throw new Eco3dError('ECO3D_ERR_UNAUTHENTICATED', 'sign in first, or join with a valid scoped token');
              if (principal.role !== 'platform-admin' && principal.tenantId !== meta.tenantId) {
                throw new Eco3dError('ECO3D_ERR_FORBIDDEN', `this robot's streams belong to tenant ${meta.tenantId}`);
              }
              const grants = liveGrantsFor(principal);
              if (!grants.video && !grants.telemetry && !grants.volume) throw new Eco3dError('ECO3D_ERR_FORBIDDEN', 'no live scope granted (live:video, live:pose or live:volume)');
              clearTimeout(joinTimer);
              viewer = await hub.join({ actor: principal.username, role: principal.role, tier: viewerTierFor(principal), grants, want: msg.want }, send);
              if (principal.kind === 'token') {
                tokenSockets.set(socket, {
                  tokenId: principal.sessionId,
                  cut: () => {
                    send({ type: 'error', code: 'ECO3D_ERR_UNAUTHENTICATED', message: 'the token was revoked (or its plugin disabled): the stream is cut' });
                    viewer?.close('token revoked');
                    socket.close(1008, 'token revoked');
                  },
                });
              }
              if (socket.readyState !== socket.OPEN) viewer.close('signaling closed');
              else if (left) viewer.close('left');
            } catch (err) {
              const e = toEco3dError(err);
              fail(e);
              if (e.code === 'ECO3D_ERR_UNAUTHENTICATED' || e.code === 'ECO3D_ERR_FORBIDDEN') socket.close(1008, e.code);
            } finally {
              joining = false;
            }
            return;
          }
          case 'answer':
            if (viewer === null) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'join first');
            await viewer.answer(msg.sdp);
            return;
          case 'ice':
            if (viewer === null) throw new Eco3dError('ECO3D_ERR_CONFLICT', 'join first');
            await viewer.addIceCandidate(msg.candidate);
            return;
          case 'leave':
            leave();
            return;
        }
      };

      // The streamer closes its end and answers `bye` on this socket; the client closes its peer
      // on that `bye` (see LiveClient). Closing the socket now would let the client close first,
      // and wrtc can crash sending on a channel the far side is closing. The socket goes after a
      // grace period in case the client never does.
      let left = false;
      const leave = (): void => {
        if (left) return;
        left = true;
        viewer?.close('left');
        setTimeout(() => socket.close(1000, 'left'), LEAVE_GRACE_MS).unref();
      };

      // One message at a time, in order: an ICE candidate must not overtake the answer it follows.
      // A `leave` does not wait behind them: the client is waiting to close its peer after ours.
      let tail: Promise<void> = Promise.resolve();
      socket.on('message', (data, isBinary) => {
        const raw = isBinary ? null : rawText(data);
        if (raw !== null && isLeave(raw)) {
          leave();
          return;
        }
        tail = tail.then(() => onMessage(raw)).catch(fail);
      });
      socket.on('close', () => {
        clearTimeout(joinTimer);
        sockets.delete(socket);
        tokenSockets.delete(socket);
        viewer?.close('signaling closed');
      });
      socket.on('error', (err) => log.warn({ err: err.message }, 'live signaling socket error'));
    },
    stats: () => hub.stats(),
    cutTokens(tokenIds) {
      const ids = new Set(tokenIds);
      let cut = 0;
      for (const [socket, t] of tokenSockets) {
        if (!ids.has(t.tokenId)) continue;
        tokenSockets.delete(socket);
        t.cut();
        cut++;
      }
      return cut;
    },
    close() {
      for (const s of sockets) s.close(1001, 'server shutting down');
    },
  };
}

/** A well-formed `leave` (anything else goes through the checks of parseLiveClientMessage). */
function isLeave(raw: string): boolean {
  try {
    return (JSON.parse(raw) as { type?: unknown } | null)?.type === 'leave';
  } catch {
    return false;
  }
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

// roslib's transport on the `ws` package, handed to roslib through its transport factory option
// (`new Ros({ transportFactory })`), so that library code never touches `globalThis.WebSocket`.
//
// Why our own rather than roslib's default factory: the default picks the global WebSocket when
// one exists (Node ≥ 22, browsers) and `ws` otherwise, so the same code would behave differently
// by Node version; it has no handshake timeout (a black-holed host hangs a connect attempt for
// the OS TCP timeout); and its close() waits for the close handshake, up to ws's 30 s, which
// keeps a process alive after the driver closed.
import { AbstractTransport, type ITransportFactory, type RosbridgeMessage } from 'roslib';
import { WebSocket, type RawData } from 'ws';

export interface WsTransportOptions {
  /** The WebSocket opening handshake must finish within this; default 2000 ms. */
  readonly handshakeTimeoutMs?: number;
  /** close() waits this long for the close handshake, then drops the socket; default 500 ms. */
  readonly closeTimeoutMs?: number;
}

/** What the transport reports with its `close` event. */
export interface WsCloseEvent {
  readonly code: number;
  readonly reason: string;
}

function rawToText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

export class WsTransport extends AbstractTransport {
  readonly #socket: WebSocket;
  readonly #closeTimeoutMs: number;
  #closeTimer: NodeJS.Timeout | undefined;

  constructor(socket: WebSocket, closeTimeoutMs = 500) {
    super();
    this.#socket = socket;
    this.#closeTimeoutMs = closeTimeoutMs;
    socket.on('open', () => this.emit('open', undefined));
    socket.on('close', (code: number, reason: Buffer) => {
      if (this.#closeTimer !== undefined) clearTimeout(this.#closeTimer);
      this.#closeTimer = undefined;
      const ev: WsCloseEvent = { code, reason: reason.toString('utf8') };
      this.emit('close', ev);
    });
    // ws always follows 'error' with 'close'; the listener also keeps an error from being uncaught.
    socket.on('error', (err: Error) => this.emit('error', err));
    socket.on('message', (data: RawData, isBinary: boolean) => {
      // Text frames are JSON; binary ones (CBOR when a client asks for it) go to roslib as bytes.
      if (isBinary) {
        const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
        this.handleRawMessage(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      } else {
        this.handleRawMessage(rawToText(data));
      }
    });
  }

  /** Bytes queued in user space and the kernel's socket buffer, not yet on the wire. */
  get bufferedAmount(): number {
    return this.#socket.bufferedAmount;
  }

  send(message: RosbridgeMessage): void {
    this.#socket.send(JSON.stringify(message));
  }

  /** Starts the close handshake, and drops the socket if the peer does not answer in time. */
  close(): void {
    if (this.#socket.readyState === WebSocket.CLOSED || this.#closeTimer !== undefined) return;
    this.#socket.close(1000, 'client closing');
    this.#closeTimer = setTimeout(() => this.#socket.terminate(), this.#closeTimeoutMs);
  }

  /** Drops the connection at once (no close handshake). */
  terminate(): void {
    this.#socket.terminate();
  }

  isConnecting(): boolean {
    return this.#socket.readyState === WebSocket.CONNECTING;
  }
  isOpen(): boolean {
    return this.#socket.readyState === WebSocket.OPEN;
  }
  isClosing(): boolean {
    return this.#socket.readyState === WebSocket.CLOSING;
  }
  isClosed(): boolean {
    return this.#socket.readyState === WebSocket.CLOSED;
  }
}

/** A roslib transport factory on `ws`: `new Ros({ transportFactory: wsTransportFactory() })`. */
export function wsTransportFactory(opts: WsTransportOptions = {}): ITransportFactory {
  const handshakeTimeout = opts.handshakeTimeoutMs ?? 2000;
  return async (url: string) =>
    // perMessageDeflate off: our messages are small, and compression costs latency on every one.
    new WsTransport(new WebSocket(url, { handshakeTimeout, perMessageDeflate: false }), opts.closeTimeoutMs);
}

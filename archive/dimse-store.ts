// A DICOM C-STORE SCU (PS3.7 §9.1.1 C-STORE, over the PS3.8 upper layer on TCP), for a PACS that
// does not speak DICOMweb. One association per call: the instances' (SOP class, transfer syntax)
// pairs are proposed as presentation contexts, each instance goes as one C-STORE-RQ whose data set
// is streamed from the file in P-DATA fragments no larger than the peer's maximum PDU, and the
// association is released at the end (aborted on any error).
//
// No transcoding: each instance is proposed in its own transfer syntax only (ours are Explicit VR
// Little Endian, which every Storage SCP takes); a peer that refuses it fails that instance.
// Tested against dcmtk's storescp and Orthanc's SCP (archive/dimse-store.test.ts).
import { open, type FileHandle } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { Eco3dError } from '../protocols/errors.ts';

export interface CStoreTarget {
  readonly host: string;
  readonly port: number;
  /** The PACS's AE title. */
  readonly calledAet: string;
  /** Ours. Default `ECO3D`. */
  readonly callingAet?: string | undefined;
}

export interface CStoreOptions {
  /** The whole association: connect, negotiate, every store, release. Default 60 s. */
  readonly timeoutMs?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface CStoreInstanceResult {
  readonly sopClassUid: string;
  readonly sopInstanceUid: string;
  /** DIMSE status: 0x0000 success, 0xB000/0xB006/0xB007 warnings. */
  readonly status: number;
}

/** The implementation identity we announce in the A-ASSOCIATE-RQ (PS3.7 D.3.3.2). */
const IMPLEMENTATION_CLASS_UID = '2.25.96735317232318465305131916453062474312';
const IMPLEMENTATION_VERSION_NAME = 'ECO3D_010';
const APPLICATION_CONTEXT = '1.2.840.10008.3.1.1.1';
/** The largest P-DATA-TF PDU we accept (we only receive C-STORE responses). */
const OUR_MAX_PDU_BYTES = 65_536;
/** Cap on what we send when the peer announces no limit (0). */
const MAX_SEND_PDU_BYTES = 1 << 20;
const READ_CHUNK_BYTES = 1 << 20;
const DEFAULT_TIMEOUT_MS = 60_000;

// PDU types (PS3.8 §9.3)
const ASSOCIATE_RQ = 0x01;
const ASSOCIATE_AC = 0x02;
const ASSOCIATE_RJ = 0x03;
const P_DATA_TF = 0x04;
const RELEASE_RQ = 0x05;
const RELEASE_RP = 0x06;
const ABORT = 0x07;

const PC_RESULTS = ['acceptance', 'user-rejection', 'no-reason', 'abstract-syntax-not-supported', 'transfer-syntaxes-not-supported'];

/** Status names for messages (PS3.4 Table B.2-1). */
function describeStatus(status: number): string {
  const hex = `0x${status.toString(16).toUpperCase().padStart(4, '0')}`;
  const names: Record<number, string> = {
    0x0000: 'success',
    0xb000: 'coercion of data elements',
    0xb006: 'elements discarded',
    0xb007: 'data set does not match SOP class (warning)',
    0x0122: 'SOP class not supported',
    0x0124: 'not authorized',
    0x0211: 'unrecognized operation',
    0xa700: 'out of resources',
    0xa900: 'data set does not match SOP class',
    0xc000: 'cannot understand',
  };
  const name = names[status] ?? ((status & 0xff00) === 0xa700 ? 'out of resources' : (status & 0xf000) === 0xc000 ? 'cannot understand' : undefined);
  return name === undefined ? hex : `${hex} ${name}`;
}

export const isCStoreSuccess = (status: number): boolean => status === 0x0000 || status === 0xb000 || status === 0xb006 || status === 0xb007;

// ---------------------------------------------------------------------------------------------
// Part-10 file: where the data set starts, and what the meta header says

interface Part10Source {
  readonly sopClassUid: string;
  readonly sopInstanceUid: string;
  readonly transferSyntaxUid: string;
  readonly datasetOffset: number;
  readonly size: number;
  /** Reads [offset, offset+length) of the file or buffer. */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

const LONG_LENGTH_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV']);

function parseMeta(head: Uint8Array, what: string): { sopClassUid: string; sopInstanceUid: string; transferSyntaxUid: string; datasetOffset: number } | 'need-more' {
  const bad = (why: string): Eco3dError => new Eco3dError('ECO3D_ERR_BAD_FILE', `${what}: not a Part-10 DICOM file (${why})`);
  if (head.length < 132) throw bad('shorter than the preamble');
  if (Buffer.from(head.subarray(128, 132)).toString('latin1') !== 'DICM') throw bad('no DICM prefix');
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const values = new Map<number, string>();
  let pos = 132;
  for (;;) {
    if (pos + 8 > head.length) return 'need-more';
    const group = view.getUint16(pos, true);
    if (group !== 0x0002) break;
    const element = view.getUint16(pos + 2, true);
    const vr = String.fromCharCode(head[pos + 4]!, head[pos + 5]!);
    let length: number;
    let valueAt: number;
    if (LONG_LENGTH_VRS.has(vr)) {
      if (pos + 12 > head.length) return 'need-more';
      length = view.getUint32(pos + 8, true);
      valueAt = pos + 12;
    } else {
      length = view.getUint16(pos + 6, true);
      valueAt = pos + 8;
    }
    if (length === 0xffffffff) throw bad('undefined length in the meta header');
    if (valueAt + length > head.length) return 'need-more';
    if (vr === 'UI') values.set(element, Buffer.from(head.subarray(valueAt, valueAt + length)).toString('latin1').replace(/[\0 ]+$/, ''));
    pos = valueAt + length;
  }
  const sopClassUid = values.get(0x0002);
  const sopInstanceUid = values.get(0x0003);
  const transferSyntaxUid = values.get(0x0010);
  if (sopClassUid === undefined || sopInstanceUid === undefined || transferSyntaxUid === undefined) throw bad('meta header lacks SOP class, SOP instance or transfer syntax');
  return { sopClassUid, sopInstanceUid, transferSyntaxUid, datasetOffset: pos };
}

async function openSource(source: string | Uint8Array): Promise<Part10Source> {
  if (typeof source !== 'string') {
    const meta = parseMeta(source, 'instance');
    if (meta === 'need-more') throw new Eco3dError('ECO3D_ERR_BAD_FILE', 'instance: truncated meta header');
    return { ...meta, size: source.byteLength, read: async (o, n) => source.subarray(o, o + n), close: async () => undefined };
  }
  const fh: FileHandle = await open(source, 'r');
  try {
    const size = (await fh.stat()).size;
    let want = 4096;
    for (;;) {
      const n = Math.min(want, size);
      const head = new Uint8Array(n);
      await fh.read(head, 0, n, 0);
      const meta = parseMeta(head, source);
      if (meta !== 'need-more') {
        return {
          ...meta,
          size,
          read: async (o, len) => {
            const buf = new Uint8Array(len);
            const { bytesRead } = await fh.read(buf, 0, len, o);
            if (bytesRead !== len) throw new Error(`${source}: short read at ${o} (${bytesRead} of ${len} bytes)`);
            return buf;
          },
          close: () => fh.close(),
        };
      }
      if (n === size) throw new Eco3dError('ECO3D_ERR_BAD_FILE', `${source}: truncated meta header`);
      want *= 4;
    }
  } catch (err) {
    await fh.close();
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// PDU encoding

function aeTitle(name: string, ae: string): Buffer {
  if (!/^[\x20-\x7e]{1,16}$/.test(ae) || ae.trim() === '' || ae.includes('\\')) throw new Eco3dError('ECO3D_ERR_CONFIG', `bad ${name} AE title ${JSON.stringify(ae)}: 1–16 printable characters`);
  return Buffer.from(ae.padEnd(16, ' '), 'latin1');
}

function item(type: number, content: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt8(type, 0);
  head.writeUInt16BE(content.length, 2);
  return Buffer.concat([head, content]);
}

function pdu(type: number, content: Buffer): Buffer {
  const head = Buffer.alloc(6);
  head.writeUInt8(type, 0);
  head.writeUInt32BE(content.length, 2);
  return Buffer.concat([head, content]);
}

interface ProposedContext {
  readonly id: number;
  readonly abstractSyntax: string;
  readonly transferSyntax: string;
}

function associateRq(calledAet: string, callingAet: string, contexts: readonly ProposedContext[]): Buffer {
  const fixed = Buffer.alloc(68);
  fixed.writeUInt16BE(1, 0); // protocol version
  aeTitle('called', calledAet).copy(fixed, 4);
  aeTitle('calling', callingAet).copy(fixed, 20);
  const items = [item(0x10, Buffer.from(APPLICATION_CONTEXT, 'latin1'))];
  for (const c of contexts) {
    const head = Buffer.from([c.id, 0, 0, 0]);
    items.push(item(0x20, Buffer.concat([head, item(0x30, Buffer.from(c.abstractSyntax, 'latin1')), item(0x40, Buffer.from(c.transferSyntax, 'latin1'))])));
  }
  const maxLength = Buffer.alloc(4);
  maxLength.writeUInt32BE(OUR_MAX_PDU_BYTES, 0);
  items.push(item(0x50, Buffer.concat([item(0x51, maxLength), item(0x52, Buffer.from(IMPLEMENTATION_CLASS_UID, 'latin1')), item(0x55, Buffer.from(IMPLEMENTATION_VERSION_NAME, 'latin1'))])));
  return pdu(ASSOCIATE_RQ, Buffer.concat([fixed, ...items]));
}

interface Accepted {
  /** Presentation context id → accepted transfer syntax; absent when refused (with the reason). */
  readonly contexts: Map<number, { transferSyntax: string } | { refused: string }>;
  /** Largest P-DATA-TF PDU the peer takes (0 = no limit). */
  readonly peerMaxPdu: number;
}

function parseAssociateAc(body: Buffer): Accepted {
  const contexts = new Map<number, { transferSyntax: string } | { refused: string }>();
  let peerMaxPdu = 0;
  let pos = 68;
  while (pos + 4 <= body.length) {
    const type = body.readUInt8(pos);
    const len = body.readUInt16BE(pos + 2);
    const content = body.subarray(pos + 4, pos + 4 + len);
    if (type === 0x21) {
      const id = content.readUInt8(0);
      const result = content.readUInt8(2);
      let ts = '';
      if (content.length >= 8 && content.readUInt8(4) === 0x40) ts = content.subarray(8, 8 + content.readUInt16BE(6)).toString('latin1').replace(/[\0 ]+$/, '');
      contexts.set(id, result === 0 ? { transferSyntax: ts } : { refused: PC_RESULTS[result] ?? `result ${result}` });
    } else if (type === 0x50) {
      let p = 0;
      while (p + 4 <= content.length) {
        const sub = content.readUInt8(p);
        const subLen = content.readUInt16BE(p + 2);
        if (sub === 0x51 && subLen === 4) peerMaxPdu = content.readUInt32BE(p + 4);
        p += 4 + subLen;
      }
    }
    pos += 4 + len;
  }
  return { contexts, peerMaxPdu };
}

// Command sets are always Implicit VR Little Endian (PS3.7 §6.3.1).
function element(tag: number, value: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt16LE(tag >>> 16, 0);
  head.writeUInt16LE(tag & 0xffff, 2);
  head.writeUInt32LE(value.length, 4);
  return Buffer.concat([head, value]);
}
const ui = (uid: string): Buffer => Buffer.from(uid.length % 2 === 1 ? `${uid}\0` : uid, 'latin1');
const us = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n, 0);
  return b;
};

function cStoreRq(messageId: number, sopClassUid: string, sopInstanceUid: string): Buffer {
  const rest = Buffer.concat([
    element(0x00000002, ui(sopClassUid)),
    element(0x00000100, us(0x0001)), // C-STORE-RQ
    element(0x00000110, us(messageId)),
    element(0x00000700, us(0x0000)), // priority medium
    element(0x00000800, us(0x0000)), // a data set follows
    element(0x00001000, ui(sopInstanceUid)),
  ]);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(rest.length, 0);
  return Buffer.concat([element(0x00000000, groupLength), rest]);
}

function parseCommand(bytes: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  let pos = 0;
  while (pos + 8 <= bytes.length) {
    const tag = ((bytes.readUInt16LE(pos) << 16) | bytes.readUInt16LE(pos + 2)) >>> 0;
    const len = bytes.readUInt32LE(pos + 4);
    out.set(tag, bytes.subarray(pos + 8, pos + 8 + len));
    pos += 8 + len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The association

/** Reads whole PDUs off a socket, one at a time. */
class PduReader {
  #buffered: Buffer[] = [];
  #bytes = 0;
  #waiter: (() => void) | undefined;
  #ended: Error | undefined;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buffered.push(chunk);
      this.#bytes += chunk.length;
      this.#waiter?.();
    });
    const end = (err: Error): void => {
      this.#ended ??= err;
      this.#waiter?.();
    };
    socket.on('end', () => end(new Error('the peer closed the connection')));
    socket.on('close', () => end(new Error('the connection closed')));
    socket.on('error', (err) => end(err));
  }

  async next(): Promise<{ type: number; body: Buffer }> {
    for (;;) {
      if (this.#bytes >= 6) {
        const all = this.#buffered.length === 1 ? this.#buffered[0]! : Buffer.concat(this.#buffered);
        this.#buffered = [all];
        const length = all.readUInt32BE(2);
        if (all.length >= 6 + length) {
          const rest = all.subarray(6 + length);
          this.#buffered = rest.length > 0 ? [rest] : [];
          this.#bytes = rest.length;
          return { type: all.readUInt8(0), body: all.subarray(6, 6 + length) };
        }
      }
      if (this.#ended !== undefined) throw this.#ended;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
      this.#waiter = undefined;
    }
  }
}

function writeAll(socket: Socket, data: Buffer | Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Stores `instances` (Part-10 file paths or bytes) at the C-STORE SCP `target` in one
 * association. Resolves with each instance's status when all succeeded (warnings included);
 * rejects with ECO3D_ERR_UPSTREAM on a refused association or context, a failure status, an
 * abort or a network error (the message names the instance and the status), ECO3D_ERR_TIMEOUT
 * after `timeoutMs`, ECO3D_ERR_BAD_FILE for an input that is not Part-10; a file that cannot be
 * opened rejects with its fs error (ENOENT) before anything is sent.
 */
export async function cStoreInstances(target: CStoreTarget, instances: readonly (string | Uint8Array)[], options: CStoreOptions = {}): Promise<CStoreInstanceResult[]> {
  if (instances.length === 0) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'C-STORE: no instance to store');
  const callingAet = target.callingAet ?? 'ECO3D';
  aeTitle('called', target.calledAet);
  aeTitle('calling', callingAet);
  const peer = `${target.calledAet}@${target.host}:${target.port}`;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const sources: Part10Source[] = [];
  let socket: Socket | undefined;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(new Eco3dError('ECO3D_ERR_TIMEOUT', `C-STORE to ${peer}: not done within ${timeoutMs} ms`)), timeoutMs);
  const onCallerAbort = (): void => abort.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onCallerAbort, { once: true });
  if (options.signal?.aborted === true) onCallerAbort();
  // Any abort ends the socket at once, which wakes whatever waits on it.
  abort.signal.addEventListener('abort', () => socket?.destroy(), { once: true });
  const failure = (err: unknown): Eco3dError => {
    if (abort.signal.aborted) {
      const reason: unknown = abort.signal.reason;
      return reason instanceof Eco3dError ? reason : new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer} aborted: ${String(reason)}`, { cause: reason });
    }
    if (err instanceof Eco3dError) return err;
    return new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  };

  try {
    for (const s of instances) sources.push(await openSource(s));
  } catch (err) {
    // A file that cannot be read is not the peer's fault: its own error (ENOENT…), as is.
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onCallerAbort);
    await Promise.all(sources.map((s) => s.close()));
    throw err;
  }

  try {
    // One presentation context per (SOP class, transfer syntax); ids are odd, 1..255.
    const contexts: ProposedContext[] = [];
    for (const s of sources) {
      if (!contexts.some((c) => c.abstractSyntax === s.sopClassUid && c.transferSyntax === s.transferSyntaxUid)) {
        if (contexts.length === 128) throw new Eco3dError('ECO3D_ERR_BAD_REQUEST', 'C-STORE: more than 128 (SOP class, transfer syntax) pairs in one association');
        contexts.push({ id: 2 * contexts.length + 1, abstractSyntax: s.sopClassUid, transferSyntax: s.transferSyntaxUid });
      }
    }
    if (abort.signal.aborted) throw abort.signal.reason;
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: target.host, port: target.port });
      socket = s;
      s.once('connect', () => resolve(s));
      s.once('error', reject);
      s.once('close', () => reject(new Error('the connection closed')));
    });
    sock.setNoDelay(true);
    const reader = new PduReader(sock);

    await writeAll(sock, associateRq(target.calledAet, callingAet, contexts));
    const answer = await reader.next();
    if (answer.type === ASSOCIATE_RJ) {
      const [result, source, reason] = [answer.body.readUInt8(1), answer.body.readUInt8(2), answer.body.readUInt8(3)];
      const why = source === 1 && reason === 7 ? 'called AE title not recognized' : source === 1 && reason === 3 ? 'calling AE title not recognized' : `result ${result}, source ${source}, reason ${reason}`;
      throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: association rejected (${why})`);
    }
    if (answer.type !== ASSOCIATE_AC) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: expected A-ASSOCIATE-AC, got PDU type ${answer.type}`);
    const accepted = parseAssociateAc(answer.body);
    const maxPdu = accepted.peerMaxPdu === 0 ? MAX_SEND_PDU_BYTES : Math.min(accepted.peerMaxPdu, MAX_SEND_PDU_BYTES);
    // A PDV item: 4 bytes length, 1 context id, 1 control header; a PDU header: 6 bytes.
    const maxFragment = maxPdu - 6;
    if (maxFragment < 2) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: peer maximum PDU ${accepted.peerMaxPdu} too small`);

    const sendPdv = async (contextId: number, control: number, data: Uint8Array): Promise<void> => {
      const head = Buffer.alloc(12);
      head.writeUInt8(P_DATA_TF, 0);
      head.writeUInt32BE(6 + data.length, 2);
      head.writeUInt32BE(2 + data.length, 6);
      head.writeUInt8(contextId, 10);
      head.writeUInt8(control, 11);
      await writeAll(sock, head);
      await writeAll(sock, data);
    };

    const results: CStoreInstanceResult[] = [];
    for (const [i, s] of sources.entries()) {
      const context = contexts.find((c) => c.abstractSyntax === s.sopClassUid && c.transferSyntax === s.transferSyntaxUid)!;
      const outcome = accepted.contexts.get(context.id);
      if (outcome === undefined || 'refused' in outcome) {
        throw new Eco3dError(
          'ECO3D_ERR_UPSTREAM',
          `C-STORE to ${peer}: instance ${s.sopInstanceUid} not sent: SOP class ${s.sopClassUid} in transfer syntax ${s.transferSyntaxUid} refused (${outcome === undefined ? 'no answer' : outcome.refused})`,
        );
      }
      const messageId = (i % 0xffff) + 1;
      const command = cStoreRq(messageId, s.sopClassUid, s.sopInstanceUid);
      for (let o = 0; o < command.length; o += maxFragment) {
        const last = o + maxFragment >= command.length;
        await sendPdv(context.id, last ? 0x03 : 0x01, command.subarray(o, o + maxFragment));
      }
      // The data set, streamed from the file; an empty one is still one (last) fragment.
      const chunk = Math.max(maxFragment, 2) - (maxFragment % 2); // even fragments keep pairs of bytes together
      let o = s.datasetOffset;
      do {
        const n = Math.min(chunk, s.size - o, READ_CHUNK_BYTES);
        const data = await s.read(o, n);
        o += n;
        await sendPdv(context.id, o >= s.size ? 0x02 : 0x00, data);
      } while (o < s.size);

      // The response: command fragments until the last one.
      const parts: Buffer[] = [];
      for (;;) {
        const p = await reader.next();
        if (p.type === ABORT) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: the peer aborted the association while storing ${s.sopInstanceUid}`);
        if (p.type !== P_DATA_TF) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: unexpected PDU type ${p.type} while storing ${s.sopInstanceUid}`);
        let pos = 0;
        let done = false;
        while (pos + 6 <= p.body.length) {
          const len = p.body.readUInt32BE(pos);
          const control = p.body.readUInt8(pos + 5);
          parts.push(p.body.subarray(pos + 6, pos + 4 + len));
          if ((control & 0x01) === 1 && (control & 0x02) === 2) done = true;
          pos += 4 + len;
        }
        if (done) break;
      }
      const rsp = parseCommand(Buffer.concat(parts));
      const field = rsp.get(0x00000100)?.readUInt16LE(0);
      const status = rsp.get(0x00000900)?.readUInt16LE(0);
      if (field !== 0x8001 || status === undefined) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: not a C-STORE-RSP for ${s.sopInstanceUid}`);
      if (!isCStoreSuccess(status)) {
        const comment = rsp.get(0x00000902)?.toString('latin1').replace(/[\0 ]+$/, '');
        throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: instance ${s.sopInstanceUid} failed with status ${describeStatus(status)}${comment ? `: ${comment}` : ''}`, {
          details: { sopInstanceUid: s.sopInstanceUid, status, stored: results.map((r) => r.sopInstanceUid) },
        });
      }
      results.push({ sopClassUid: s.sopClassUid, sopInstanceUid: s.sopInstanceUid, status });
    }

    await writeAll(sock, pdu(RELEASE_RQ, Buffer.alloc(4)));
    const released = await reader.next();
    if (released.type !== RELEASE_RP) throw new Eco3dError('ECO3D_ERR_UPSTREAM', `C-STORE to ${peer}: expected A-RELEASE-RP, got PDU type ${released.type}`);
    sock.end();
    return results;
  } catch (err) {
    const e = failure(err);
    // A-ABORT (source: service user), best effort, then drop the connection.
    const s = socket;
    if (s !== undefined && !s.destroyed) {
      s.end(pdu(ABORT, Buffer.alloc(4)));
      setTimeout(() => s.destroy(), 1000).unref();
    }
    throw e;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onCallerAbort);
    await Promise.all(sources.map((s) => s.close()));
  }
}

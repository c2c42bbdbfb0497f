// multipart/related (RFC 2387 over RFC 2046 5.1) both ways, and media-type headers.
//
// Reading: a push parser fed the request body chunk by chunk. It yields each part's headers, its
// body in pieces, and its end, so a part of hundreds of MB streams to disk instead of into memory
// (@mjackson/multipart-parser keeps every part whole in memory and refuses a preamble, which
// RFC 2046 allows, hence this small parser). Boundary search is Buffer.indexOf, native.
//
// Writing: the framing bytes around parts whose bodies the caller streams (WADO-RS retrieve).
import { randomBytes } from 'node:crypto';

export class MultipartSyntaxError extends Error {
  override readonly name = 'MultipartSyntaxError';
}

export type MultipartEvent =
  | { readonly kind: 'part-start'; readonly headers: ReadonlyMap<string, string> }
  | { readonly kind: 'part-data'; readonly data: Buffer }
  | { readonly kind: 'part-end' };

type State = 'preamble' | 'after-delimiter' | 'headers' | 'body' | 'epilogue';

const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');

export class MultipartRelatedParser {
  readonly #delimiter: Buffer;
  readonly #maxHeaderBytes: number;
  #state: State = 'preamble';
  // The stream is parsed as if it began with CRLF, so that a first boundary at byte 0 is found
  // by the same search as every later delimiter (CRLF "--" boundary).
  #buf: Buffer = CRLF;
  #parts = 0;

  constructor(boundary: string, options: { maxHeaderBytes?: number } = {}) {
    // RFC 2046 5.1.1: 1 to 70 characters from a restricted set, not ending in a space. The length
    // is not enforced: Orthanc 1.10's DICOMweb client sends 73 (two UUIDs joined by '-').
    if (!/^[0-9A-Za-z'()+_,\-./:=? ]{0,199}[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)) {
      throw new MultipartSyntaxError(`invalid boundary ${JSON.stringify(boundary)}: RFC 2046 allows characters of [0-9A-Za-z'()+_,-./:=? ], not ending in a space (we take up to 200)`);
    }
    this.#delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
    this.#maxHeaderBytes = options.maxHeaderBytes ?? 16 * 1024;
  }

  /** Parts whose headers were read so far. */
  get parts(): number {
    return this.#parts;
  }

  write(chunk: Buffer): MultipartEvent[] {
    const events: MultipartEvent[] = [];
    if (chunk.length === 0) return events;
    if (this.#state === 'epilogue') return events; // RFC 2046: the epilogue is ignored
    const tail = this.#buf;
    if (this.#state === 'body' && tail.length > 0 && tail.length < this.#delimiter.length && chunk.length >= this.#delimiter.length) {
      // Only a delimiter cut by the chunk boundary could start in the tail, and it would end within
      // the chunk's first bytes; when that junction holds none, the tail is body data and the
      // chunk is searched as it is (not copied).
      const junction = Buffer.concat([tail, chunk.subarray(0, this.#delimiter.length - 1)]);
      if (junction.indexOf(this.#delimiter) < 0) {
        events.push({ kind: 'part-data', data: tail });
        this.#buf = chunk;
        this.#run(events);
        return events;
      }
    }
    this.#buf = tail.length === 0 ? chunk : Buffer.concat([tail, chunk]);
    this.#run(events);
    return events;
  }

  /** Call at the end of the body; throws MultipartSyntaxError when the message is incomplete. */
  end(): MultipartEvent[] {
    if (this.#state === 'epilogue') return [];
    if (this.#state === 'preamble') {
      throw new MultipartSyntaxError(`the body has no part delimited by the boundary "${this.#delimiter.subarray(4).toString('latin1')}" from the Content-Type header`);
    }
    throw new MultipartSyntaxError(`the multipart body ends before its close delimiter (part ${this.#parts} is incomplete)`);
  }

  #run(events: MultipartEvent[]): void {
    for (;;) {
      const buf = this.#buf;
      switch (this.#state) {
        case 'preamble': {
          const i = buf.indexOf(this.#delimiter);
          if (i < 0) {
            this.#keepTail(buf, this.#delimiter.length - 1);
            return;
          }
          this.#buf = buf.subarray(i + this.#delimiter.length);
          this.#state = 'after-delimiter';
          break;
        }
        case 'after-delimiter': {
          // Either "--" (close delimiter) or transport padding (spaces, tabs) then CRLF.
          if (buf.length < 2) return;
          if (buf[0] === 0x2d && buf[1] === 0x2d) {
            this.#state = 'epilogue';
            this.#buf = Buffer.alloc(0);
            return;
          }
          const eol = buf.indexOf(CRLF);
          if (eol < 0) {
            if (buf.length > 1024) throw new MultipartSyntaxError('a boundary line does not end with CRLF');
            return;
          }
          if (!/^[ \t]*$/.test(buf.subarray(0, eol).toString('latin1'))) {
            throw new MultipartSyntaxError('a boundary line is followed by other text: the boundary occurs inside a part, or the body is not multipart');
          }
          this.#buf = buf.subarray(eol + 2);
          this.#state = 'headers';
          break;
        }
        case 'headers': {
          // An empty header block is a bare CRLF.
          let headerBytes: Buffer;
          if (buf.length >= 2 && buf[0] === 0x0d && buf[1] === 0x0a) {
            headerBytes = Buffer.alloc(0);
            this.#buf = buf.subarray(2);
          } else {
            const i = buf.indexOf(HEADER_END);
            if (i < 0) {
              if (buf.length > this.#maxHeaderBytes) throw new MultipartSyntaxError(`the headers of part ${this.#parts + 1} exceed ${this.#maxHeaderBytes} bytes`);
              return;
            }
            if (i > this.#maxHeaderBytes) throw new MultipartSyntaxError(`the headers of part ${this.#parts + 1} exceed ${this.#maxHeaderBytes} bytes`);
            headerBytes = buf.subarray(0, i);
            this.#buf = buf.subarray(i + 4);
          }
          this.#parts++;
          events.push({ kind: 'part-start', headers: parseHeaderBlock(headerBytes, this.#parts) });
          this.#state = 'body';
          break;
        }
        case 'body': {
          const i = buf.indexOf(this.#delimiter);
          if (i < 0) {
            const keep = this.#delimiter.length - 1;
            if (buf.length > keep) events.push({ kind: 'part-data', data: buf.subarray(0, buf.length - keep) });
            this.#keepTail(buf, keep);
            return;
          }
          if (i > 0) events.push({ kind: 'part-data', data: buf.subarray(0, i) });
          events.push({ kind: 'part-end' });
          this.#buf = buf.subarray(i + this.#delimiter.length);
          this.#state = 'after-delimiter';
          break;
        }
        case 'epilogue':
          this.#buf = Buffer.alloc(0);
          return;
      }
    }
  }

  // Keeps the last bytes that could begin a delimiter cut by the chunk boundary. A copy, so the
  // (possibly large) chunk behind it is not retained.
  #keepTail(buf: Buffer, keep: number): void {
    this.#buf = buf.length <= keep ? Buffer.from(buf) : Buffer.from(buf.subarray(buf.length - keep));
  }
}

function parseHeaderBlock(bytes: Buffer, part: number): Map<string, string> {
  const headers = new Map<string, string>();
  if (bytes.length === 0) return headers;
  // Folded lines (obsolete, RFC 5322 3.2.2) are unfolded first.
  const text = bytes.toString('latin1').replace(/\r\n[ \t]+/g, ' ');
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new MultipartSyntaxError(`part ${part}: malformed header line ${JSON.stringify(line.slice(0, 80))}`);
    headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return headers;
}

// --- writing ----------------------------------------------------------------------------------

export function newBoundary(): string {
  return `eco3d-${randomBytes(16).toString('hex')}`;
}

/** The bytes before a part's body: delimiter line and headers. */
export function partHead(boundary: string, headers: Readonly<Record<string, string>>): Buffer {
  let s = `--${boundary}\r\n`;
  for (const [k, v] of Object.entries(headers)) s += `${k}: ${v}\r\n`;
  return Buffer.from(`${s}\r\n`, 'latin1');
}

/** The CRLF that ends a part's body (it belongs to the next delimiter, RFC 2046). */
export const PART_TAIL = CRLF;

export function closeDelimiter(boundary: string): Buffer {
  return Buffer.from(`--${boundary}--\r\n`, 'latin1');
}

// --- media types ------------------------------------------------------------------------------

export interface MediaType {
  /** Lower-case `type/subtype`. */
  readonly type: string;
  /** Lower-case names; values unquoted. */
  readonly params: ReadonlyMap<string, string>;
}

/** Parses `type/subtype; name=value; name="quoted"`; null when it is not a media type. */
export function parseMediaType(header: string): MediaType | null {
  const parts = splitOutsideQuotes(header, ';');
  const type = parts[0]?.trim().toLowerCase() ?? '';
  if (!/^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+*-]+$/.test(type) && type !== '*/*') return null;
  const params = new Map<string, string>();
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=');
    if (eq <= 0) continue;
    const name = p.slice(0, eq).trim().toLowerCase();
    let value = p.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    params.set(name, value);
  }
  return { type, params };
}

export interface AcceptEntry extends MediaType {
  readonly q: number;
}

/** The media ranges of an Accept header, best first (q, then order). An absent header is `*\/*`. */
export function parseAccept(header: string | undefined): AcceptEntry[] {
  if (header === undefined || header.trim() === '') return [{ type: '*/*', params: new Map(), q: 1 }];
  const entries: { e: AcceptEntry; i: number }[] = [];
  splitOutsideQuotes(header, ',').forEach((raw, i) => {
    const m = parseMediaType(raw);
    if (m === null) return;
    const qText = m.params.get('q');
    const q = qText === undefined ? 1 : Number(qText);
    const params = new Map(m.params);
    params.delete('q');
    if (Number.isFinite(q) && q > 0) entries.push({ e: { type: m.type, params, q: Math.min(1, q) }, i });
  });
  return entries.sort((a, b) => b.e.q - a.e.q || a.i - b.i).map((x) => x.e);
}

function splitOutsideQuotes(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"') quoted = !quoted;
    if (c === '\\' && quoted && i + 1 < s.length) {
      cur += c + s[++i]!;
      continue;
    }
    if (c === sep && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.filter((x) => x.trim() !== '');
}

// A FrameSource on a ROS sensor_msgs/Image topic, over rosbridge v2 with roslib 2.x.
//
// - HOT (see sources.ts): one rosbridge connection and topic subscription while anyone listens;
//   the connection closes when the last subscriber leaves.
// - A lost or refused connection ERRORS frames$ with ECO3D_ERR_LINK_LOST; the consumer chooses
//   the policy (`retry({ delay: 1000 })` reconnects: share() resets on error). No frame is
//   queued across connections (a fresh roslib `Ros` per connection, as controller/ros-driver.ts
//   does, so nothing stale is replayed).
// - Image encodings: mono8 (and its OpenCV spelling 8UC1); any other encoding, a malformed
//   message or a data size that does not match width/height/step is rejected and counted by
//   reason in `stats().rejected`, never guessed at.
// - `uint8[] data` arrives base64-encoded in rosbridge's JSON (its convention for byte arrays);
//   a plain number array or a Uint8Array (CBOR) is accepted too. Rows padded to `step` are
//   unpadded.
// - Frame time is header.stamp in ms (ROS time). Poses from controller/ros-driver.ts are stamped
//   the same way (/joint_states header), so frames and poses share one clock.
import { Observable } from 'rxjs';
import { Ros, Topic, type ITransportFactory } from 'roslib';
import { Eco3dError } from '../protocols/errors.ts';
import type { ImageFrame } from '../protocols/imaging.ts';
import { ROS_TOPIC_US_IMAGE, ROS_TYPE_IMAGE, rosTimeToMs } from '../protocols/rosbridge.ts';
import { SourceBase, type FrameSource } from './sources.ts';


export type ImageRejectReason = 'malformed' | 'unsupported-encoding' | 'size-mismatch';

export interface RosImageSourceOptions {
  /** rosbridge URL, ws://host:port. */
  readonly url: string;
  /** Default /us/image. */
  readonly topic?: string;
  /**
   * How roslib reaches the server. Default: roslib's own (`ws` on Node 20). On Node, pass
   * controller/ros-transport.ts's `wsTransportFactory()` for its handshake and close timeouts.
   */
  readonly transportFactory?: ITransportFactory;
  /** rosbridge throttle_rate, ms between messages (0 = every message). Default 0. */
  readonly throttleMs?: number;
}

type ParsedImage = { readonly ok: true; readonly frame: Omit<ImageFrame, 'index'> } | { readonly ok: false; readonly reason: ImageRejectReason; readonly detail: string };

const MONO8_ENCODINGS: ReadonlySet<string> = new Set(['mono8', '8UC1']);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
const isUint = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

function stampMs(header: unknown): number | undefined {
  if (!isRecord(header) || !isRecord(header.stamp)) return undefined;
  const s = header.stamp;
  // ROS 2 {sec, nanosec}; ROS 1 {secs, nsecs}.
  const sec = s.sec ?? s.secs;
  const nanosec = s.nanosec ?? s.nsecs;
  if (typeof sec !== 'number' || !Number.isInteger(sec) || !isUint(nanosec) || nanosec > 999_999_999) return undefined;
  return rosTimeToMs({ sec, nanosec });
}

function bytesOf(data: unknown): Uint8Array | undefined {
  if (typeof data === 'string') return new Uint8Array(Buffer.from(data, 'base64'));
  if (data instanceof Uint8Array) return data;
  if (Array.isArray(data) && data.every((b) => isUint(b) && b <= 255)) return Uint8Array.from(data as number[]);
  return undefined;
}

/** sensor_msgs/Image (as rosbridge delivers it) → an image, or why not. */
export function parseRosImage(msg: unknown): ParsedImage {
  if (!isRecord(msg)) return { ok: false, reason: 'malformed', detail: 'not an object' };
  const tMs = stampMs(msg.header);
  if (tMs === undefined) return { ok: false, reason: 'malformed', detail: 'header.stamp missing or invalid' };
  const { width, height, step, encoding } = msg;
  if (!isUint(width) || !isUint(height) || width === 0 || height === 0) return { ok: false, reason: 'malformed', detail: 'width/height must be positive integers' };
  if (typeof encoding !== 'string') return { ok: false, reason: 'malformed', detail: 'encoding missing' };
  if (!MONO8_ENCODINGS.has(encoding)) return { ok: false, reason: 'unsupported-encoding', detail: `encoding "${encoding}" (only mono8)` };
  const stride = step === undefined ? width : step;
  if (!isUint(stride) || stride < width) return { ok: false, reason: 'size-mismatch', detail: `step ${String(step)} < width ${width}` };
  const bytes = bytesOf(msg.data);
  if (bytes === undefined) return { ok: false, reason: 'malformed', detail: 'data is not base64, a byte array or bytes' };
  // The last row may omit its padding.
  if (bytes.length !== stride * height && bytes.length !== stride * (height - 1) + width) {
    return { ok: false, reason: 'size-mismatch', detail: `${bytes.length} bytes for ${width}×${height} step ${stride}` };
  }
  let pixels: Uint8Array;
  if (stride === width) pixels = bytes.length === width * height ? bytes : bytes.subarray(0, width * height);
  else {
    pixels = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) pixels.set(bytes.subarray(y * stride, y * stride + width), y * width);
  }
  return { ok: true, frame: { tMs, width, height, pixels } };
}

/** HOT frame source on a rosbridge sensor_msgs/Image topic (mono8). */
export function rosImageFrameSource(opts: RosImageSourceOptions): FrameSource {
  if (!/^wss?:\/\/[^/\s]+/.test(opts.url)) throw new Eco3dError('ECO3D_ERR_CONFIG', `rosbridge URL must be ws://host:port or wss://…, got "${opts.url}"`);
  const topicName = opts.topic ?? ROS_TOPIC_US_IMAGE;
  let index = 0;
  const upstream = new Observable<ImageFrame>((sub) => {
    const ros = opts.transportFactory === undefined ? new Ros({}) : new Ros({ transportFactory: opts.transportFactory });
    let lastError = '';
    const topic = new Topic<unknown>({
      ros,
      name: topicName,
      messageType: ROS_TYPE_IMAGE,
      throttle_rate: opts.throttleMs ?? 0,
      // Newest frame only if the bridge queues: an old image is worth less than a new one.
      queue_length: 1,
      reconnect_on_close: false,
    });
    const lost = (why: string): void => sub.error(new Eco3dError('ECO3D_ERR_LINK_LOST', `rosbridge image link ${opts.url}${topicName}: ${why}`));
    ros.on('error', (ev: unknown) => {
      lastError = ev instanceof Error ? ev.message : isRecord(ev) && typeof ev.message === 'string' ? ev.message : 'transport error';
    });
    ros.on('close', () => lost(`connection closed${lastError === '' ? '' : ` (${lastError})`}`));
    topic.subscribe((m) => {
      const p = parseRosImage(m);
      if (!p.ok) {
        src.reject(p.reason);
        return;
      }
      src.framesEmitted++;
      sub.next({ ...p.frame, index: index++ });
    });
    ros.connect(opts.url).catch((err: unknown) => lost(`cannot connect: ${err instanceof Error ? err.message : String(err)}`));
    return () => {
      // Listeners off first: our own close() must not read as a lost link.
      ros.removeAllListeners();
      topic.removeAllListeners();
      if (ros.isConnected) topic.unsubscribe();
      // roslib creates the transport asynchronously: a close() before that is a no-op, so a
      // connection that opens after teardown is closed as soon as it opens.
      ros.once('connection', () => ros.close());
      ros.close();
    };
  });
  const src = new SourceBase('ros', 'hot', upstream);
  return src;
}

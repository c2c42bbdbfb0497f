// roslib 2.1 ships its declarations, but its entry `dist/RosLib.d.ts` says
// `export * from './src/RosLib'` without a file extension, which NodeNext resolution (ours, for
// ESM) cannot follow: every named import from 'roslib' is then "not exported" (TS2305). The
// declarations below it are fine, so this augmentation re-exposes the part we use from them,
// with roslib's own types (nothing re-typed by hand). Delete it once roslib fixes its entry.
import type RosT from '../node_modules/roslib/dist/src/core/Ros.ts';
import type ServiceT from '../node_modules/roslib/dist/src/core/Service.ts';
import type TopicT from '../node_modules/roslib/dist/src/core/Topic.ts';
import type {
  AbstractTransport as AbstractTransportT,
  ITransport as ITransportT,
  ITransportFactory as ITransportFactoryT,
  TransportEvent as TransportEventT,
} from '../node_modules/roslib/dist/src/core/transport/Transport.ts';
import type { RosbridgeMessage as RosbridgeMessageT } from '../node_modules/roslib/dist/src/types/protocol.ts';

declare module 'roslib' {
  export const Ros: typeof RosT;
  export type Ros = RosT;
  export const Topic: typeof TopicT;
  export type Topic<T = unknown> = TopicT<T>;
  export const Service: typeof ServiceT;
  export type Service<TRequest = unknown, TResponse = unknown> = ServiceT<TRequest, TResponse>;
  export const AbstractTransport: typeof AbstractTransportT;
  export type AbstractTransport = AbstractTransportT;
  export type ITransport = ITransportT;
  export type ITransportFactory = ITransportFactoryT;
  export type TransportEvent = TransportEventT;
  export type RosbridgeMessage = RosbridgeMessageT;
}

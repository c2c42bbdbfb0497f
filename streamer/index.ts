// The public surface of streamer/: frame sources, pose/frame sync, volume reconstruction (PLUS's
// algorithm, our code), hole filling, and the RxJS pipeline that turns frames into volume deltas.
export {
  VolumeReconstructor,
  reconstructParallel,
  ReconstructionWorkerPool,
  computeOutputGrid,
  gridFromExtent,
  outputGridFor,
  estimateReconstructionBytes,
  resolveReconstructionOptions,
  DEFAULT_BRICK_SIZE,
  DEFAULT_MEMORY_BUDGET_BYTES,
} from './reconstruct.ts';
export type {
  ReconstructionOptions,
  ResolvedReconstructionOptions,
  Interpolation,
  CompoundingMode,
  PasteResult,
  ChangedBricks,
  BrickVoxels,
  ReconstructionStats,
  MemoryEstimate,
} from './reconstruct.ts';
export { fillHoles } from './holefill.ts';
export type { HoleFillingElement, HoleFillOptions, HoleFillResult } from './holefill.ts';
export { simulatorFrameSource, playbackFrameSource } from './sources.ts';
export type { FrameSource, FrameSourceKind, FrameSourceStats, Temperature, SimulatorSourceOptions, PlaybackSourceOptions } from './sources.ts';
export { rosImageFrameSource, parseRosImage } from './sources-ros.ts';
export type { RosImageSourceOptions, ImageRejectReason } from './sources-ros.ts';
export { FrameSync, SYNC_DROP_REASONS } from './sync.ts';
export type { FrameSyncOptions, SyncStats, SyncDropReason, TimedPose } from './sync.ts';
export {
  ReconstructionPipeline,
  brickSink,
  volumeDeltas,
  dropOldest,
  latestOnly,
  concatMapDropOldest,
  mergeVolumeDeltas,
} from './pipeline.ts';
export type { PipelineStats, ConsumerStats, ConsumerOptions, VolumeDelta, FrameSink, VolumeDeltaOptions } from './pipeline.ts';
export { LiveHub, LiveViewer, videoPolicy } from './live-hub.ts';
export type { LiveFrame, LiveHubSources, LiveHubOptions, LiveHubStats, ViewerIdentity, Signal } from './live-hub.ts';
export { LiveVolume, liveGridFor } from './live-volume.ts';
export type { LiveVolumeSource, LiveVolumeUpdate, LiveGridInfo, LiveVolumeOptions, LiveSweepShape, ProbeImageExtent } from './live-volume.ts';
export { wrtc } from './wrtc.ts';
export type { Wrtc, PeerConnection, IceServer, MediaTrack, VideoSink } from './wrtc.ts';
export { RemoteLiveHub, forkTs } from './live-remote.ts';
export type { LiveService, LiveViewerHandle, RemoteLiveHubOptions } from './live-remote.ts';
export { isosurface, computeVertexNormals, DEFAULT_ISOSURFACE_BUDGET_BYTES } from './isosurface.ts';
export type { IsosurfaceOptions } from './isosurface.ts';

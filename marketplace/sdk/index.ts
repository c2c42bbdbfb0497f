// The Eco3D browser SDK: the live client (video, telemetry, volume, call) and the AR plugin API.
// Browser-safe: it imports only the browser-safe protocol files, never protocols/index.ts.
export { LiveClient } from './live-client.ts';
export type { LiveClientEvents, LiveClientOptions, LiveConnectionState, Telemetry, WelcomeMessage } from './live-client.ts';
export {
  imagePlaneCorners,
  imagePointToWorld,
  NO_VIDEO_MESSAGE,
  projectToImage,
  runArPlugin,
  toMat4,
  type ArFrameContext,
  type ArPluginHandle,
  type ArPluginOptions,
  type ArPluginStatus,
  type ImageProjection,
  type Vec3,
} from './plugin.ts';
export { LIVE_SCOPES } from '../../protocols/live.ts';
export type { LiveGrants, LiveImaging, LiveScope, LiveWant, TelemetryMessage, ViewerCounters, ViewerTier } from '../../protocols/live.ts';
export { VolumeAssembler, decodeVolumeMessage } from '../../protocols/volume-stream.ts';
export type { BrickMessage, CommitMessage, GridMessage, VolumeMessage } from '../../protocols/volume-stream.ts';
export type { TeleopProblem, TeleopStatus } from '../../protocols/teleop.ts';
export type { Mat4 } from '../../protocols/imaging.ts';
// Analysis plugins (they run in the platform's sandbox, not in a browser): types and helpers.
export { measurement, voxelIndex, voxelVolumeMl, VOLUME_CONCEPT } from './analysis.ts';
export type { AnalysisFinding, AnalysisInput, AnalysisMeasurement, AnalysisOutput, AnalysisVolume, AnalyzeFunction, CodedConcept } from './analysis.ts';

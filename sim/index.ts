// The public surface of sim/: the robot simulator in-process, as a serial device on a PTY, and
// as a rosbridge v2 server.
export { SimRobotDriver } from './sim-driver.ts';
export type { SimRobotDriverOptions } from './sim-driver.ts';
export { RobotSimulator } from './robot-sim.ts';
export { startSerialServer } from './serial-server.ts';
export type { SerialServerHandle, SerialServerOptions } from './serial-server.ts';
export { serveRosbridge } from './rosbridge-server.ts';
export type { RosbridgeServerHandle, RosbridgeServerOptions } from './rosbridge-server.ts';
export { createPhantom, labelVolume, PHANTOM_LABELS } from './phantom.ts';
export type { ProceduralPhantom, PhantomOptions, PhantomStructure, PhantomLabel } from './phantom.ts';
export { UltrasoundSimulator, FrameClock, linearProbe, curvilinearProbe, imageToProbe, imageGeometry } from './ultrasound.ts';
export type { ProbeModel, LinearProbe, CurvilinearProbe, UltrasoundOptions, ImageGeometry, FanGeometry } from './ultrasound.ts';
export { ultrasoundFrames$, workerUltrasoundFrames$ } from './us-stream.ts';
export { startRenderWorker } from './worker-render.ts';
export type { WorkerRenderer } from './worker-render.ts';

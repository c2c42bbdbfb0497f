// The public surface of controller/: robot drivers (serial, ROS), the safety supervisor, scan
// trajectories, the acquisition state machine and the tele-operation session.
export { SafetySupervisor, DEFAULT_SAFETY_CONFIG, resolveSafetyConfig } from './safety.ts';
export type { SafetyConfig, SafetyStatus, SafetyEvent, CommandSource, Problem } from './safety.ts';
export { AcquisitionController, newAcquisitionUid } from './acquisition.ts';
export type { AcquisitionRecorder, AcquisitionPlan, AcquisitionResult, AcquisitionSnapshot, AcquisitionProgress } from './acquisition.ts';
export type { SweepPlan, LinearSweepPlan, FanSweepPlan } from './trajectory.ts';
export { TeleopSession, sweepPlanFromRequest } from './teleop-session.ts';
export type { TeleopParticipant, TeleopAuditEntry } from './teleop-session.ts';
export { SerialRobotDriver } from './serial-driver.ts';
export type { SerialRobotDriverOptions } from './serial-driver.ts';
export { RosRobotDriver } from './ros-driver.ts';
export type { RosDriverOptions } from './ros-driver.ts';

// The public surface of protocols/: pure wire formats, schemas and shared types. No I/O.
export * from './robot.ts';
export * from './errors.ts';
export * from './geometry.ts';
export * from './scene.ts';
export * from './events.ts';
export * from './teleop.ts';
export * from './rosbridge.ts';
export * from './serial.ts';
export * from './imaging.ts';

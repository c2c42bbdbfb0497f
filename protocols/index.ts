// The public surface of protocols/: pure wire formats, schemas and shared types. No I/O.
export * from './robot.ts';
export * from './errors.ts';
export * from './geometry.ts';
export * from './scene.ts';
export * from './events.ts';
export * from './event-loop.ts';
export * from './ts-worker.ts';
export * from './teleop.ts';
export * from './rosbridge.ts';
export * from './serial.ts';
export * from './imaging.ts';
// PLUS toolkit formats (Node only: they use node:zlib and node:fs; browser code imports the
// browser-safe protocol files directly, not this barrel).
export * from './metaimage.ts';
export * from './plus-sequence.ts';
export * from './plus-config.ts';
export * from './plus-transforms.ts';
export * from './imaging-pose.ts';
export * from './nrrd.ts';
export * from './mesh.ts';
export * from './dicom-us.ts';
export * from './dicom-sr.ts';
export * from './ai-results.ts';
export * from './fhir.ts';
export * from './deid.ts';
export { parseWith } from './parse.ts';

// `eco3d scan`: a headless robotic acquisition (a linear or fan sweep) to files. Offline by design: no database, no
// outbox, nothing billed. The robot is driven through the same SafetySupervisor and acquisition
// state machine as in `eco3d start`.
//
// The B-mode frames come from the ultrasound simulator, sampled at the probe pose the robot
// reports, whatever transport the robot is on (server/imaging.ts).
//
// Output:
//   acquisition.json        uid, outcome, every transition, the sweep
//   tracked-poses.csv       the probe pose and contact force at every robot state while scanning, with the sweep phase
//   tracked-frames.igs.mha, reconstruction.xml, volume.mha   see server/imaging.ts
//   study/volume.dcm, study/frames.dcm   the DICOM study, see server/scan-dicom.ts
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { combineLatest, firstValueFrom, throwError } from 'rxjs';
import { filter, timeout } from 'rxjs/operators';
import { AcquisitionController, SafetySupervisor, sweepPlanFromRequest, type CommandSource } from '../controller/index.ts';
import { Eco3dError, toEco3dError, type AcquisitionTransition } from '../protocols/index.ts';
import { isSweeping, scannerFrames$, simulatedScanner, SweepImaging } from './imaging.ts';
import { runReconstruct, type ReconstructReport } from './reconstruct-command.ts';
import type { RobotTarget } from './config.ts';
import { createDriver } from './drivers.ts';
import type { Logger } from './log.ts';
import { writeScanStudy } from './scan-dicom.ts';

export interface ScanOptions {
  readonly robot: RobotTarget;
  readonly outDir: string;
  readonly sweep: 'linear' | 'fan';
  /** Linear sweep. */
  readonly lengthMm: number;
  readonly speedMmPerS: number;
  /** Fan sweep, about the start point. */
  readonly tiltRangeDeg: number;
  readonly angularSpeedDegPerS: number;
  readonly targetForceN: number;
  /** Seed of the simulated phantom the B-mode frames are sampled from. */
  readonly phantomSeed?: number;
  /** Output voxel size of volume.mha. */
  readonly outputSpacingMm?: number;
  readonly log: Logger;
  /** Robot connection limit. */
  readonly connectTimeoutMs?: number;
}

export interface ScanResult {
  readonly outcome: 'completed' | 'aborted';
  readonly acquisitionUid: string;
  readonly reason?: string;
  readonly outDir: string;
  readonly trackedPoses: number;
  readonly trackedFrames: number;
  /** Present when the sweep completed and frames were recorded. */
  readonly volume?: ReconstructReport;
  /** The DICOM study (study/volume.dcm, study/frames.dcm), with the volume. */
  readonly study?: { readonly volume: string; readonly frames: string };
}

export const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

// No remote operator watches a headless scan, so no deadman applies; the robot's own watchdogs
// and every other safety check still do.
const SCAN_SOURCE: CommandSource = { role: 'system', actor: 'eco3d-scan' };

export async function runScan(o: ScanOptions): Promise<ScanResult> {
  for (const [name, v, min, max] of [
    ['--length-mm', o.lengthMm, 1, 400],
    ['--speed-mm-per-s', o.speedMmPerS, 0.5, 50],
    ['--force-n', o.targetForceN, 1, 15],
    ['--tilt-range-deg', o.tiltRangeDeg, 1, 80],
    ['--angular-speed-deg-per-s', o.angularSpeedDegPerS, 0.5, 28],
  ] as const) {
    if (!Number.isFinite(v) || v < min || v > max) throw new Eco3dError('ECO3D_ERR_CONFIG', `${name}: expected ${min}..${max}, got ${v}`);
  }
  mkdirSync(o.outDir, { recursive: true });
  const driver = createDriver(o.robot, o.log);
  const safety = new SafetySupervisor(driver);
  const transitions: AcquisitionTransition[] = [];
  const writeLog = (extra: Record<string, unknown> = {}): void =>
    writeFileSync(join(o.outDir, 'acquisition.json'), `${JSON.stringify({ robot: o.robot, transitions, ...extra }, null, 2)}\n`);
  // The imaging reads the acquisition's state, and the acquisition reads the frame count back.
  const scanner = simulatedScanner(o.phantomSeed);
  const rendering = await scannerFrames$(o.phantomSeed ?? 1, driver.state$.pipe(filter(() => isSweeping(acquisition.snapshot))), (err) =>
    o.log.warn({ err: toEco3dError(err).message }, 'a B-mode frame could not be rendered'),
  );
  const imaging: SweepImaging = new SweepImaging(
    rendering.frames$,
    scanner,
    () => acquisition.snapshot,
    { spoolDir: o.outDir, ...(o.outputSpacingMm === undefined ? {} : { outputSpacingMm: o.outputSpacingMm }) },
  );
  const acquisition: AcquisitionController = new AcquisitionController({
    driver,
    safety,
    framesAcquired: (uid) => imaging.frameCount(uid),
    recorder: {
      record: async (t) => {
        transitions.push(t);
        writeLog();
      },
    },
    logger: o.log,
  });
  const csv = createWriteStream(join(o.outDir, 'tracked-poses.csv'));
  csv.write('t_ms,x_mm,y_mm,z_mm,qx,qy,qz,qw,force_n,phase\n');
  let trackedPoses = 0;
  // The sweep runner's phase (descend, sweep, paused, lift-off): force tracking is judged on 'sweep'.
  let phase = '';
  const phaseSub = acquisition.progress$.subscribe((p) => {
    phase = p.phase;
  });
  const sub = driver.state$.subscribe((s) => {
    if (acquisition.snapshot.state !== 'scanning') return;
    const p = s.tcpPose.positionMm;
    const q = s.tcpPose.orientation;
    csv.write(`${s.tMs},${p.x},${p.y},${p.z},${q.x},${q.y},${q.z},${q.w},${s.wrench?.forceN.z ?? ''},${phase}\n`);
    trackedPoses++;
  });
  try {
    await connectWithin(driver, o.connectTimeoutMs ?? 10_000);
    // connect() resolves on the handshake; the supervisor admits motion once it has seen the
    // link up and a fresh state.
    await firstValueFrom(
      combineLatest([safety.status$, driver.state$]).pipe(
        filter(([s]) => s.linkUp),
        timeout({ first: o.connectTimeoutMs ?? 10_000, with: () => throwError(() => new Eco3dError('ECO3D_ERR_LINK_LOST', 'no robot state after connecting')) }),
      ),
    );
    const sweep = sweepPlanFromRequest(
      o.sweep === 'linear'
        ? { kind: 'linear', startMm: { x: 450, y: -o.lengthMm / 2 }, headingDeg: 0, lengthMm: o.lengthMm, speedMmPerS: o.speedMmPerS, tiltDeg: 0, targetForceN: o.targetForceN }
        : { kind: 'fan', startMm: { x: 450, y: 0 }, headingDeg: 0, tiltRangeDeg: o.tiltRangeDeg, angularSpeedDegPerS: o.angularSpeedDegPerS, targetForceN: o.targetForceN },
    );
    const uid = await acquisition.start({ tenantId: 'offline', deviceId: o.robot.kind, sweep }, SCAN_SOURCE);
    o.log.info({ uid }, 'scan started');
    const result = await acquisition.whenDone();
    writeLog({ result });
    if (result.outcome !== 'completed') {
      return { outcome: 'aborted', acquisitionUid: uid, reason: `${result.reason}: ${result.detail}`, outDir: o.outDir, trackedPoses, trackedFrames: imaging.frameCount(uid) };
    }
    const images = await imaging.finish(uid, o.outDir, runReconstruct);
    const study =
      images.volume === undefined
        ? undefined
        : await writeScanStudy({
            outDir: o.outDir,
            acquisitionUid: uid,
            startedAtMs: transitions[0]?.atMs ?? Date.now(),
            finishedAtMs: transitions.at(-1)?.atMs ?? Date.now(),
            deviceId: o.robot.kind,
            phantomSeed: o.phantomSeed ?? 1,
            probe: scanner.probe,
            sweep: o.sweep,
            softwareVersion: `eco3d ${PACKAGE_VERSION}`,
          });
    return {
      outcome: 'completed',
      acquisitionUid: uid,
      outDir: o.outDir,
      trackedPoses,
      trackedFrames: images.frames,
      ...(images.volume === undefined ? {} : { volume: images.volume }),
      ...(study === undefined ? {} : { study: { volume: study.volumeFile, frames: study.framesFile } }),
    };
  } finally {
    imaging.close();
    await rendering.close();
    sub.unsubscribe();
    phaseSub.unsubscribe();
    await new Promise<void>((resolve) => csv.end(resolve));
    await acquisition.close().catch((err: unknown) => o.log.error({ err: toEco3dError(err).message }, 'closing the acquisition failed'));
    safety.close();
    await driver.close();
  }
}

async function connectWithin(driver: { connect(): Promise<void> }, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      driver.connect(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Eco3dError('ECO3D_ERR_LINK_LOST', `robot not reachable within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

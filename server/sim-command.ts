// `eco3d sim`: one simulated robot, served as a serial device on a PTY and as a rosbridge v2
// server at the same time, for a controller started separately (`eco3d start --robot ...`).
import { join } from 'node:path';
import { SimRobotDriver, serveRosbridge, startSerialServer } from '../sim/index.ts';
import { toEco3dError } from '../protocols/index.ts';
import type { Logger } from './log.ts';

export interface RunningSimulator {
  readonly serialPath: string;
  readonly rosbridgeUrl: string;
  close(): Promise<void>;
}

export async function runSimulator(o: { dir: string; rosHost: string; rosPort: number; stateRateHz: number; log: Logger }): Promise<RunningSimulator> {
  const driver = new SimRobotDriver();
  await driver.connect();
  const closers: (() => Promise<void>)[] = [() => driver.close()];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) await c().catch((err: unknown) => o.log.error({ err: toEco3dError(err).message }, 'simulator shutdown step failed'));
  };
  try {
    const serial = await startSerialServer(driver, { path: join(o.dir, 'robot-tty'), stateRateHz: o.stateRateHz });
    closers.push(() => serial.close());
    const ros = await serveRosbridge(driver, { host: o.rosHost, port: o.rosPort });
    closers.push(() => ros.close());
    o.log.info({ serial: serial.path, rosbridge: ros.url }, 'simulator up');
    let closing: Promise<void> | null = null;
    return { serialPath: serial.path, rosbridgeUrl: ros.url, close: () => (closing ??= closeAll()) };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

// Builds the RobotDriver a configuration names. The only place that knows every transport.
import { RosRobotDriver, SerialRobotDriver } from '../controller/index.ts';
import type { RobotDriver } from '../protocols/index.ts';
import { SimRobotDriver } from '../sim/index.ts';
import type { RobotTarget } from './config.ts';
import type { Logger } from './log.ts';

export function createDriver(target: RobotTarget, log: Logger): RobotDriver {
  switch (target.kind) {
    case 'sim':
      return new SimRobotDriver();
    case 'serial':
      log.info({ path: target.path, baudRate: target.baudRate }, 'robot over serial');
      return new SerialRobotDriver({ path: target.path, baudRate: target.baudRate });
    case 'ros':
      log.info({ url: target.url }, 'robot over rosbridge');
      return new RosRobotDriver({ url: target.url });
  }
}

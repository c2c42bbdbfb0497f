// The `eco3d` command line: start, sim, scan, study, reconstruct, export. Configuration errors and refusals print one clear
// message with its code and exit 1; what a person or script needs (URLs, paths) goes to stdout,
// logs go to stderr.
import { mkdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { Eco3dError, toEco3dError } from '../protocols/index.ts';
import { loadConfig, parseRobotTarget } from './config.ts';
import { createLogger, type Logger } from './log.ts';
import { startServer } from './runtime.ts';
import { runDeidentify } from './deidentify-command.ts';
import { demoCacheDir, pluginInit, pluginKeygen, pluginPack, pluginPublish, pluginTest } from './plugin-command.ts';
import { runExport } from './export-command.ts';
import { runInvoice } from './invoice-command.ts';
import { runReconstruct } from './reconstruct-command.ts';
import { runScan } from './scan.ts';
import { writeScanStudy, type ScanStudyInput } from './scan-dicom.ts';
import { runSimulator } from './sim-command.ts';

/**
 * Starts the work, runs it until SIGINT/SIGTERM, then its close(), then exits. A signal that
 * arrives while starting is kept and acted on once started: dying mid-start would leave PGlite
 * unclosed (it has no crash recovery). A second signal exits at once.
 */
async function runUntilSignal<T extends { close(): Promise<void> }>(log: Logger, start: () => Promise<T>): Promise<T> {
  const started: { work?: T } = {};
  let early: NodeJS.Signals | undefined;
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    const work = started.work;
    if (work === undefined) {
      early ??= sig;
      return;
    }
    if (stopping) {
      log.warn({ sig }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    log.info({ sig }, 'shutting down');
    work.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err: toEco3dError(err).message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const work = await start();
  started.work = work;
  if (early !== undefined) onSignal(early);
  return work;
}

function fail(err: unknown): never {
  const e = toEco3dError(err);
  process.stderr.write(`eco3d: ${e.code}: ${e.message}\n`);
  process.exit(1);
}

const program = new Command();
program.name('eco3d').description('Eco3D: open platform for robotic 3D ultrasound').showHelpAfterError();

program
  .command('start')
  .description('run everything in one process (simulated robot, embedded database by default)')
  .option('--data <dir>', 'data directory (ECO3D_DATA; default ./eco3d-data)')
  .option('--port <n>', 'HTTP port (PORT; default 8080)')
  .option('--host <ip>', 'address to bind (ECO3D_HOST; default 127.0.0.1)')
  .option('--robot <target>', 'sim | serial:/dev/PATH[@baud] | ros:ws://HOST:PORT (ECO3D_ROBOT)')
  .option('--tenant <id>', 'tenant (hospital) of this robot (ECO3D_TENANT; default demo)')
  .option('--device <id>', 'device id of this robot (ECO3D_DEVICE; default sim-1)')
  .option('--tls-cert <file>', 'PEM certificate for HTTPS/WSS')
  .option('--tls-key <file>', 'PEM private key for HTTPS/WSS')
  .option('--tls-self-signed', 'generate (once) a self-signed certificate in the data directory')
  .option('--deadman-ms <n>', 'operator heartbeat timeout (ECO3D_DEADMAN_MS; default 300)')
  .option('--ice-servers <json>', 'STUN/TURN servers for the live streams, a JSON array of {urls, username?, credential?} (ECO3D_ICE_SERVERS; default none: LAN and loopback)')
  .option('--public-url <url>', 'the URL clients reach this server at, for DICOMweb and FHIR links (ECO3D_PUBLIC_URL; default the listening URL)')
  .option('--pacs <url>', 'push every stored study to this PACS/VNA: a DICOMweb base URL (STOW-RS) or dicom://AET@host:port (C-STORE) (ECO3D_PACS_URL; credentials ECO3D_PACS_USER + ECO3D_PACS_PASSWORD, or ECO3D_PACS_TOKEN)')
  .option('--fhir-server <url>', 'send our FHIR resources to this FHIR R4 base URL (ECO3D_FHIR_SERVER_URL; credentials ECO3D_FHIR_SERVER_USER + _PASSWORD, or _TOKEN)')
  .option('--uplink <url>', 'edge → cloud: forward every metered scan to this cloud instance (ECO3D_UPLINK_URL)')
  .option('--uplink-token <token>', "the device's usage:write token minted by the cloud (ECO3D_UPLINK_TOKEN, preferred: flags show in ps)")
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (LOG_LEVEL)')
  .action(async (flags: Record<string, string | boolean | undefined>) => {
    let cfg;
    try {
      cfg = loadConfig({ flags, env: process.env });
    } catch (err) {
      fail(err);
    }
    const log = createLogger(cfg.logLevel);
    try {
      const server = await runUntilSignal(log, () => startServer(cfg, log, (line) => process.stdout.write(`${line}\n`)));
      process.stdout.write(`Eco3D is up at ${server.url} (robot: ${cfg.robot.kind}, database: ${server.db.kind}, data: ${cfg.dataDir})\n`);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('sim')
  .description('run the robot simulator alone: a serial device on a PTY and a rosbridge server')
  .option('--dir <dir>', 'where to make the stable serial device link', './eco3d-sim')
  .option('--ros-port <n>', 'rosbridge WebSocket port', '9090')
  .option('--ros-host <ip>', 'rosbridge bind address', '127.0.0.1')
  .addOption(new Option('--state-hz <n>', 'serial STATE rate').default('250'))
  .option('--log-level <level>', 'log level', 'info')
  .action(async (flags: { dir: string; rosPort: string; rosHost: string; stateHz: string; logLevel: string }) => {
    const log = createLogger(flags.logLevel);
    try {
      const rosPort = Number(flags.rosPort);
      const stateRateHz = Number(flags.stateHz);
      if (!Number.isInteger(rosPort) || rosPort < 0 || rosPort > 65535) throw new Eco3dError('ECO3D_ERR_CONFIG', `--ros-port: expected 0..65535, got "${flags.rosPort}"`);
      if (!Number.isFinite(stateRateHz) || stateRateHz < 1 || stateRateHz > 1000) throw new Eco3dError('ECO3D_ERR_CONFIG', `--state-hz: expected 1..1000, got "${flags.stateHz}"`);
      const dir = resolve(flags.dir);
      mkdirSync(dir, { recursive: true });
      const sim = await runUntilSignal(log, () => runSimulator({ dir, rosHost: flags.rosHost, rosPort, stateRateHz, log }));
      process.stdout.write(`serial: ${sim.serialPath}\nrosbridge: ${sim.rosbridgeUrl}\n`);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('scan')
  .description('a headless robotic acquisition (linear or fan sweep) to files; no database, bills nothing')
  .requiredOption('--out <dir>', 'output directory')
  .option('--robot <target>', 'sim | serial:/dev/PATH | ros:ws://HOST:PORT', 'sim')
  .addOption(new Option('--sweep <kind>', 'sweep kind').choices(['linear', 'fan']).default('linear'))
  .option('--length-mm <n>', 'linear sweep length', '80')
  .option('--speed-mm-per-s <n>', 'linear sweep speed', '10')
  .option('--tilt-range-deg <n>', 'fan sweep total tilt', '30')
  .option('--angular-speed-deg-per-s <n>', 'fan sweep tilt speed', '10')
  .option('--force-n <n>', 'target contact force', '5')
  .option('--phantom-seed <n>', 'seed of the simulated phantom the B-mode frames come from', '1')
  .option('--output-spacing-mm <n>', 'voxel size of volume.mha', '0.5')
  .option('--log-level <level>', 'log level', 'warn')
  .action(async (flags: { out: string; robot: string; sweep: 'linear' | 'fan'; lengthMm: string; speedMmPerS: string; tiltRangeDeg: string; angularSpeedDegPerS: string; forceN: string; phantomSeed: string; outputSpacingMm: string; logLevel: string }) => {
    const log = createLogger(flags.logLevel);
    try {
      let robot;
      try {
        robot = parseRobotTarget(flags.robot);
      } catch (err) {
        throw new Eco3dError('ECO3D_ERR_CONFIG', `--robot: ${(err as Error).message}`);
      }
      const result = await runScan({
        robot,
        outDir: resolve(flags.out),
        sweep: flags.sweep,
        lengthMm: Number(flags.lengthMm),
        speedMmPerS: Number(flags.speedMmPerS),
        tiltRangeDeg: Number(flags.tiltRangeDeg),
        angularSpeedDegPerS: Number(flags.angularSpeedDegPerS),
        targetForceN: Number(flags.forceN),
        phantomSeed: Number(flags.phantomSeed),
        outputSpacingMm: Number(flags.outputSpacingMm),
        log,
      });
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(result.outcome === 'completed' ? 0 : 2);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('export')
  .description('a volume (.mha or .nrrd) to NRRD or MetaImage, or its iso-surface to STL or OBJ (format from the extension)')
  .argument('<volume>', 'input volume: .mha, .mhd or .nrrd')
  .requiredOption('--out <file>', 'output: .nrrd, .mha, .stl or .obj')
  .option('--threshold <level>', 'iso-level for a mesh: voxels ≥ level are inside (e.g. 127.5)')
  .action(async (input: string, flags: { out: string; threshold?: string }) => {
    try {
      const level = flags.threshold === undefined ? undefined : Number(flags.threshold);
      if (level !== undefined && !(Number.isFinite(level) && level > 0 && level <= 255)) {
        throw new Eco3dError('ECO3D_ERR_CONFIG', `--threshold: expected a level in (0, 255], got "${flags.threshold}"`);
      }
      const report = await runExport({ inputFile: resolve(input), outputFile: resolve(flags.out), ...(level === undefined ? {} : { thresholdLevel: level }) });
      process.stdout.write(`${JSON.stringify(report)}\n`);
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('invoice')
  .description("a tenant's invoice of a month: the issued one, or the open period's preview (from the data directory's database, or DATABASE_URL)")
  .requiredOption('--tenant <id>', 'tenant (hospital or consortium)')
  .requiredOption('--period <YYYY-MM>', "the month, in the tenant's time zone")
  .addOption(new Option('--format <format>', 'output format').choices(['json', 'csv', 'pdf', 'fhir']).default('json'))
  .option('--issue', 'issue it first (a month that is over; idempotent: an issued invoice never changes)')
  .option('--out <file>', 'write to this file instead of stdout')
  .option('--data <dir>', 'data directory (ECO3D_DATA; default ./eco3d-data)')
  .action(async (flags: { tenant: string; period: string; format: 'json' | 'csv' | 'pdf' | 'fhir'; issue?: boolean; out?: string; data?: string }) => {
    try {
      const cfg = loadConfig({ flags: flags.data === undefined ? {} : { data: flags.data }, env: process.env });
      const r = await runInvoice(cfg, { tenantId: flags.tenant, period: flags.period, format: flags.format, issue: flags.issue === true, outFile: flags.out === undefined ? undefined : resolve(flags.out) });
      if (flags.out !== undefined) process.stdout.write(`${JSON.stringify(r)}\n`);
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('study')
  .description("write the DICOM study (Enhanced US Volume + US Multi-frame) of an acquisition folder holding volume.mha and tracked-frames.igs.mha; idempotent")
  .argument('<dir>', 'the acquisition folder')
  .requiredOption('--meta <file>', 'JSON: acquisitionUid, startedAtMs, finishedAtMs, deviceId, phantomSeed, probe, sweep, softwareVersion, patient?, accessionNumber?, studyDescription?')
  .action(async (dir: string, flags: { meta: string }) => {
    try {
      const meta = JSON.parse(readFileSync(resolve(flags.meta), 'utf8')) as Omit<ScanStudyInput, 'outDir'>;
      const study = await writeScanStudy({ ...meta, outDir: resolve(dir) });
      process.stdout.write(`${JSON.stringify(study)}\n`);
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('reconstruct')
  .description("offline volume reconstruction, a drop-in for PLUS's VolumeReconstructor")
  .requiredOption('--config-file <file>', 'PLUS device-set config with a VolumeReconstruction element')
  .requiredOption('--source-seq-file <file>', 'PLUS sequence metafile (.igs.mha, .mha, .igs.nrrd)')
  .requiredOption('--output-volume-file <file>', 'output MetaImage volume (.mha)')
  .option('--image-to-reference-transform <name>', 'transform to use, e.g. ImageToReference')
  .option('--disable-compression', 'write the volume uncompressed')
  .option('--threads <n>', 'worker threads (overrides NumberOfThreads; 0 = all cores)')
  .option('--plus-rounding', "MEAN compounding bit-compatible with PLUS: its running 8-bit mean and 1/256 weight, re-rounded per insertion (saturates, as PLUS); default: exact sums")
  .action(async (flags: { configFile: string; sourceSeqFile: string; outputVolumeFile: string; imageToReferenceTransform?: string; disableCompression?: boolean; threads?: string; plusRounding?: boolean }) => {
    try {
      const threads = flags.threads === undefined ? undefined : Number(flags.threads);
      if (threads !== undefined && (!Number.isInteger(threads) || threads < 0 || threads > 64)) {
        throw new Eco3dError('ECO3D_ERR_CONFIG', `--threads: expected 0..64, got "${flags.threads}"`);
      }
      const report = await runReconstruct({
        configFile: resolve(flags.configFile),
        sourceSeqFile: resolve(flags.sourceSeqFile),
        outputVolumeFile: resolve(flags.outputVolumeFile),
        ...(flags.imageToReferenceTransform === undefined ? {} : { imageToReferenceTransform: flags.imageToReferenceTransform }),
        disableCompression: flags.disableCompression === true,
        ...(threads === undefined ? {} : { threads }),
        ...(flags.plusRounding === true ? { plusRounding: true } : {}),
      });
      process.stdout.write(`${JSON.stringify(report)}\n`);
      process.exit(0);
    } catch (err) {
      fail(err);
    }
  });

program
  .command('deidentify')
  .description('de-identify DICOM Part-10 files (PS3.15 Annex E Basic Profile and Options) into OUT/<study>/<series>/<sop>.dcm, named by the new UIDs; offline. Exit 0: all done; 2: some files failed (each on stderr, the others written); 1: usage error')
  .argument('<in...>', 'DICOM files or directories (recursed)')
  .requiredOption('--out <dir>', 'output directory')
  .option('--key-file <file>', 'secret for the UID remap and date shift (created with 32 random bytes, mode 0600, if missing; else ECO3D_DEID_KEY, hex or base64; else a random key for this run)')
  .option('--retain-device-identity', 'keep device serial numbers, station names and device UIDs (Retain Device Identity Option)')
  .option('--no-date-shift', 'remove or dummy dates (Basic Profile) instead of shifting them per patient')
  .option('--no-patient-characteristics', 'remove sex, size, weight and age (default: kept, age as a 5-year band)')
  .option('--no-clean-descriptors', 'remove descriptions (default: kept cleaned, Clean Descriptors Option)')
  .option('--mask-config <file>', 'JSON array of burned-in masks [{ manufacturer?, modelName, regions: [{ x, y, width, height }] }]')
  .action(async (inputs: string[], flags: { out: string; keyFile?: string; retainDeviceIdentity?: boolean; dateShift: boolean; patientCharacteristics: boolean; cleanDescriptors: boolean; maskConfig?: string }) => {
    try {
      const r = await runDeidentify({
        inputs,
        outDir: flags.out,
        keyFile: flags.keyFile,
        retainDeviceIdentity: flags.retainDeviceIdentity === true,
        dateShift: flags.dateShift,
        patientCharacteristics: flags.patientCharacteristics,
        cleanDescriptors: flags.cleanDescriptors,
        maskConfigFile: flags.maskConfig,
        env: process.env,
        warn: (line) => process.stderr.write(`eco3d deidentify: ${line}\n`),
      });
      process.stdout.write(`${JSON.stringify(r.summary)}\n`);
      process.exit(r.failures.length === 0 ? 0 : 2);
    } catch (err) {
      fail(err);
    }
  });

const plugin = program.command('plugin').description('develop, test, sign and publish a marketplace plugin (see README, "Writing a plugin")');
plugin
  .command('init')
  .description('make a new plugin folder: manifest.json and a working index.mjs')
  .argument('<dir>')
  .requiredOption('--id <id>', 'reverse-DNS plugin id, e.g. com.example.lesion-volume')
  .requiredOption('--name <name>', 'the name hospitals see')
  .addOption(new Option('--kind <kind>', 'analysis (runs on each completed scan) or live (AR on the streams)').choices(['analysis', 'live']).default('analysis'))
  .option('--vendor <name>', 'your organisation', 'Example Vendor')
  .action(async (dir: string, flags: { id: string; name: string; kind: 'analysis' | 'live'; vendor: string }) => {
    try {
      for (const f of await pluginInit({ dir, id: flags.id, name: flags.name, kind: flags.kind, vendor: flags.vendor })) process.stdout.write(`${f}\n`);
    } catch (err) {
      fail(err);
    }
  });
plugin
  .command('keygen')
  .description('make an Ed25519 signing key (private key PEM, mode 0600); prints the public key to register in the developer portal')
  .requiredOption('--out <file>', 'where the private key goes (keep it out of the plugin folder)')
  .action(async (flags: { out: string }) => {
    try {
      process.stdout.write(`${JSON.stringify(await pluginKeygen(flags.out))}\n`);
    } catch (err) {
      fail(err);
    }
  });
plugin
  .command('test')
  .description('run the plugin in the sandbox on the demo studies, exactly as the platform validates it (exit 2 if it fails)')
  .argument('<dir>')
  .action(async (dir: string) => {
    try {
      const r = await pluginTest({ dir, demoDir: demoCacheDir(process.env) });
      process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
      process.exit(r.ok ? 0 : 2);
    } catch (err) {
      fail(err);
    }
  });
plugin
  .command('pack')
  .description('sign the plugin folder into a package (zip with SIGNATURE.json)')
  .argument('<dir>')
  .requiredOption('--key <file>', 'your private key (eco3d plugin keygen)')
  .option('--out <file>', 'default <id>-<version>.zip')
  .action(async (dir: string, flags: { key: string; out?: string }) => {
    try {
      process.stdout.write(`${JSON.stringify(await pluginPack({ dir, keyFile: flags.key, out: flags.out }))}\n`);
    } catch (err) {
      fail(err);
    }
  });
plugin
  .command('publish')
  .description('submit a signed package; waits for the automated validation (then a platform admin reviews it). Auth: ECO3D_TOKEN, or --user and ECO3D_PASSWORD')
  .argument('<package>')
  .requiredOption('--server <url>', 'the Eco3D server, e.g. https://eco3d.example.org')
  .option('--user <username>', 'sign in as this developer account (password from ECO3D_PASSWORD)')
  .option('--wait-s <seconds>', 'how long to follow validation', '300')
  .action(async (file: string, flags: { server: string; user?: string; waitS: string }) => {
    try {
      const v = await pluginPublish({
        file,
        server: flags.server,
        token: process.env['ECO3D_TOKEN'],
        user: flags.user,
        password: process.env['ECO3D_PASSWORD'],
        waitMs: Number(flags.waitS) * 1000,
        progress: (line) => process.stderr.write(`eco3d plugin publish: ${line}\n`),
      });
      process.stdout.write(`${JSON.stringify(v)}\n`);
      process.exit(v.status === 'validation-failed' || v.status === 'rejected' ? 2 : 0);
    } catch (err) {
      fail(err);
    }
  });

program.parseAsync(process.argv).catch(fail);

// The `eco3d` command as a user runs it: separate processes, real PTY, real rosbridge, a real
// independent roslib client, and the data-directory lock between two `eco3d start`s.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Ros, Topic } from 'roslib';
import { decodeNrrdVolume, readMetaImageVolumeFile } from '../protocols/index.ts';

const BIN = fileURLToPath(new URL('../bin/eco3d.mjs', import.meta.url));

interface Proc {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<number | null>;
  /** Resolves with the first match of `re` on stdout (already printed or future). */
  line(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
}

function run(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const p: Proc = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.on('exit', (code) => resolve(code))),
    line: (re, timeoutMs) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = re.exec(p.stdout);
          if (m !== null) {
            clearTimeout(timer);
            child.stdout.off('data', check);
            resolve(m);
            return true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          child.stdout.off('data', check);
          reject(new Error(`no ${re} on stdout within ${timeoutMs} ms; stdout: ${p.stdout}; stderr: ${p.stderr.slice(-2000)}`));
        }, timeoutMs);
        if (!check()) child.stdout.on('data', check);
      }),
  };
  child.stdout.setEncoding('utf8').on('data', (d: string) => (p.stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (p.stderr += d));
  return p;
}

async function stop(p: Proc): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  return p.exited;
}

describe('eco3d sim + eco3d scan over serial and ROS', () => {
  let dir: string;
  let sim: Proc;
  let serialPath: string;
  let rosUrl: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eco3d-cli-'));
    sim = run(['sim', '--dir', join(dir, 'sim'), '--ros-port', '0']);
    serialPath = (await sim.line(/^serial: (\S+)$/m, 20_000))[1]!;
    rosUrl = (await sim.line(/^rosbridge: (\S+)$/m, 20_000))[1]!;
  });
  after(async () => {
    await stop(sim);
    await rm(dir, { recursive: true, force: true });
  });

  test('eco3d sim prints a stable serial path and a rosbridge URL', () => {
    assert.ok(serialPath.endsWith('/robot-tty'));
    assert.ok(existsSync(serialPath));
    assert.match(rosUrl, /^ws:\/\/127\.0\.0\.1:\d+$/);
  });

  test('an independent roslib client subscribes to /joint_states and jogs the robot', async () => {
    const ros = new Ros({ url: rosUrl });
    try {
      await new Promise<void>((resolve, reject) => {
        ros.on('connection', () => resolve());
        ros.on('error', (e) => reject(new Error(String(e))));
      });
      const joints = new Topic<{ name: string[]; position: number[] }>({ ros, name: '/joint_states', messageType: 'sensor_msgs/JointState' });
      const pose = new Topic<{ pose: { position: { x: number; y: number; z: number } } }>({ ros, name: '/tcp_pose', messageType: 'geometry_msgs/PoseStamped' });
      const jog = new Topic({ ros, name: '/jog', messageType: 'geometry_msgs/TwistStamped' });
      let jointMsgs = 0;
      joints.subscribe((m) => {
        jointMsgs++;
        assert.equal(m.name.length, 6);
      });
      const firstY = await new Promise<number>((resolve) => {
        const cb = (m: { pose: { position: { y: number } } }): void => {
          pose.unsubscribe(cb);
          resolve(m.pose.position.y);
        };
        pose.subscribe(cb);
      });
      const t0 = Date.now();
      // Jog +y at 20 mm/s (ROS speaks metres) for ~0.6 s.
      while (Date.now() - t0 < 600) {
        jog.publish({ header: { frame_id: 'base', stamp: { sec: 0, nanosec: 0 } }, twist: { linear: { x: 0, y: 0.02, z: 0 }, angular: { x: 0, y: 0, z: 0 } } });
        await new Promise<void>((r) => setTimeout(r, 50));
      }
      const hz = jointMsgs / ((Date.now() - t0) / 1000);
      assert.ok(hz >= 80, `/joint_states at ${hz.toFixed(0)} Hz`); // 125 Hz nominal; loaded CI machines stall
      const lastY = await new Promise<number>((resolve) => {
        const cb = (m: { pose: { position: { y: number } } }): void => {
          pose.unsubscribe(cb);
          resolve(m.pose.position.y);
        };
        pose.subscribe(cb);
      });
      assert.ok(lastY - firstY > 0.004, `the robot moved ${((lastY - firstY) * 1000).toFixed(1)} mm along +y`);
      joints.unsubscribe();
    } finally {
      ros.close();
    }
  });

  for (const kind of ['serial', 'ros', 'sim'] as const) {
    test(`eco3d scan --robot ${kind} completes a sweep`, async () => {
      const target = kind === 'serial' ? `serial:${serialPath}` : kind === 'ros' ? `ros:${rosUrl}` : 'sim';
      const out = join(dir, `scan-${kind}`);
      const p = run(['scan', '--robot', target, '--out', out, '--length-mm', '30', '--speed-mm-per-s', '15']);
      const code = await p.exited;
      assert.equal(code, 0, `exit ${code}; stdout ${p.stdout}; stderr ${p.stderr.slice(-3000)}`);
      const result = JSON.parse(p.stdout.trim().split('\n').pop()!) as { outcome: string; trackedPoses: number; acquisitionUid: string };
      assert.equal(result.outcome, 'completed');
      assert.ok(result.trackedPoses > 50, `${result.trackedPoses} tracked poses`);
      const log = JSON.parse(readFileSync(join(out, 'acquisition.json'), 'utf8')) as { transitions: { to: string }[] };
      assert.deepEqual(
        log.transitions.map((x) => x.to),
        ['positioning', 'scanning', 'completed'],
      );
      const csv = readFileSync(join(out, 'tracked-poses.csv'), 'utf8').trim().split('\n');
      assert.equal(csv.length, result.trackedPoses + 1);
      assert.equal(csv[0], 't_ms,x_mm,y_mm,z_mm,qx,qy,qz,qw,force_n,phase');
      // Force tracking is judged while sweeping (not during the descent or the lift-off).
      const sweeping = csv.slice(1).map((l) => l.split(',')).filter((c) => c[9] === 'sweep');
      assert.ok(sweeping.length > 50, `${sweeping.length} samples while sweeping`);
      const forces = sweeping.map((c) => Number(c[8]));
      const inBand = forces.filter((f) => f >= 4 && f <= 6).length / forces.length;
      assert.ok(inBand >= 0.9, `${(inBand * 100).toFixed(0)}% of sweep samples within 5 ± 1 N (min ${Math.min(...forces).toFixed(2)}, max ${Math.max(...forces).toFixed(2)})`);
    });
  }

  test('eco3d scan writes a DICOM study: an Enhanced US Volume and the B-mode frames, dciodvfy-clean, one study', async () => {
    const out = join(dir, 'scan-sim');
    const result = JSON.parse(readFileSync(join(out, 'acquisition.json'), 'utf8')) as { result: { acquisitionUid: string } };
    const uid = result.result.acquisitionUid;
    for (const [file, iod] of [
      ['volume.dcm', 'EnhancedUltrasoundVolume'],
      ['frames.dcm', 'USMultiFrameImage'],
    ] as const) {
      const path = join(out, 'study', file);
      const v = spawnSync('dciodvfy', [path], { encoding: 'utf8' });
      assert.equal(v.error, undefined, 'dciodvfy runs (dicom3tools is installed by the test command)');
      const report = `${v.stdout}${v.stderr}`;
      assert.equal(v.status, 0, report);
      assert.match(report, new RegExp(iod));
      assert.deepEqual(report.split('\n').filter((l) => /Error/.test(l)), [], report);
      const d = spawnSync('dcmdump', ['+P', 'StudyInstanceUID', '+P', 'Modality', path], { encoding: 'utf8' });
      assert.equal(d.status, 0, d.stderr);
      assert.ok(d.stdout.includes(`[${uid}]`), `the study is the acquisition: ${d.stdout}`);
      assert.match(d.stdout, /\[US\]/);
    }
  });

  test('eco3d export: the scan\'s volume as NRRD (same voxels and grid), its iso-surface as STL and OBJ; bad requests refused', async () => {
    const volumeFile = join(dir, 'scan-sim', 'volume.mha');
    writeFileSync(join(dir, 'garbage.nrrd'), 'NRRD0004\ntype: uint8\nsizes: 9 9\n\n');
    assert.ok(existsSync(volumeFile), 'the sim scan wrote its volume');
    const mha = await readMetaImageVolumeFile(volumeFile);
    const nrrdFile = join(dir, 'export.nrrd');
    const p = run(['export', volumeFile, '--out', nrrdFile]);
    assert.equal(await p.exited, 0, p.stderr);
    const nrrd = decodeNrrdVolume(readFileSync(nrrdFile));
    assert.deepEqual(nrrd.grid, mha.grid);
    assert.ok(Buffer.from(nrrd.data).equals(Buffer.from(mha.data)), 'the same voxels');
    const stlFile = join(dir, 'export.stl');
    const s = run(['export', nrrdFile, '--out', stlFile, '--threshold', '127.5']);
    assert.equal(await s.exited, 0, s.stderr);
    const report = JSON.parse(s.stdout.trim()) as { triangles: number; vertices: number };
    assert.ok(report.triangles > 100, `${report.triangles} triangles`);
    const stl = readFileSync(stlFile);
    assert.equal(stl.readUInt32LE(80), report.triangles);
    assert.equal(stl.length, 84 + 50 * report.triangles);
    const objFile = join(dir, 'export.obj');
    const o = run(['export', volumeFile, '--out', objFile, '--threshold', '127.5']);
    assert.equal(await o.exited, 0, o.stderr);
    const lines = readFileSync(objFile, 'utf8').split('\n');
    assert.equal(lines.filter((l) => l.startsWith('v ')).length, report.vertices);
    assert.equal(lines.filter((l) => l.startsWith('f ')).length, report.triangles);
    for (const [args, re] of [
      [['export', volumeFile, '--out', join(dir, 'x.stl')], /ECO3D_ERR_CONFIG: a mesh needs --threshold/],
      [['export', volumeFile, '--out', join(dir, 'x.png')], /ECO3D_ERR_CONFIG: .*extension/],
      [['export', volumeFile, '--out', join(dir, 'x.obj'), '--threshold', 'abc'], /ECO3D_ERR_CONFIG: --threshold/],
      [['export', join(dir, 'scan-sim', 'acquisition.json'), '--out', join(dir, 'x.nrrd')], /ECO3D_ERR_CONFIG: cannot read/],
      [['export', join(dir, 'garbage.nrrd'), '--out', join(dir, 'x.mha')], /ECO3D_ERR_BAD_FILE: .*garbage\.nrrd/],
    ] as const) {
      const bad = run([...args]);
      assert.equal(await bad.exited, 1, `${args.join(' ')}: ${bad.stderr}`);
      assert.match(bad.stderr, re);
    }
  });

  test('eco3d scan --sweep fan tilts the probe through its range while keeping contact', async () => {
    const out = join(dir, 'scan-fan');
    const p = run(['scan', '--robot', 'sim', '--sweep', 'fan', '--tilt-range-deg', '30', '--angular-speed-deg-per-s', '15', '--out', out]);
    assert.equal(await p.exited, 0, p.stderr.slice(-3000));
    const rows = readFileSync(join(out, 'tracked-poses.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',').map(Number));
    // Tilt of the probe axis from straight down (tool z = R·(0,0,1); straight down is (0,0,-1)).
    const tiltDeg = rows.map(([, , , , qx, qy]) => {
      const zz = 1 - 2 * (qx! * qx! + qy! * qy!);
      return (Math.acos(Math.min(1, Math.max(-1, -zz))) * 180) / Math.PI;
    });
    const maxTilt = Math.max(...tiltDeg);
    assert.ok(maxTilt > 12 && maxTilt < 18, `max tilt ${maxTilt.toFixed(1)}° for a ±15° fan`);
    const inBand = rows.filter((r) => r[8]! >= 4 && r[8]! <= 6).length / rows.length;
    assert.ok(inBand > 0.6, `${(inBand * 100).toFixed(0)}% of samples within 5 ± 1 N`);
  });

  test('eco3d reconstruct reproduces the scan volume from its PLUS files, with 1 or 2 threads, and names bad files', async () => {
    const out = join(dir, 'scan-sim');
    assert.ok(existsSync(join(out, 'volume.mha')), 'the sim scan above wrote a volume');
    const original = await readMetaImageVolumeFile(join(out, 'volume.mha'));
    for (const threads of ['1', '2']) {
      const target = join(dir, `again-${threads}.mha`);
      const p = run(['reconstruct', '--config-file', join(out, 'reconstruction.xml'), '--source-seq-file', join(out, 'tracked-frames.igs.mha'), '--output-volume-file', target, '--threads', threads]);
      assert.equal(await p.exited, 0, p.stderr.slice(-2000));
      const again = await readMetaImageVolumeFile(target);
      assert.deepEqual(again.grid, original.grid);
      assert.ok(Buffer.from(again.data).equals(Buffer.from(original.data)), `same voxels with ${threads} thread(s)`);
    }
    // A truncated sequence file: a clear error naming the file, exit 1.
    const bytes = readFileSync(join(out, 'tracked-frames.igs.mha'));
    const cut = join(dir, 'cut.igs.mha');
    writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const bad = run(['reconstruct', '--config-file', join(out, 'reconstruction.xml'), '--source-seq-file', cut, '--output-volume-file', join(dir, 'x.mha')]);
    assert.equal(await bad.exited, 1);
    assert.match(bad.stderr, /ECO3D_ERR_BAD_FILE: .*cut\.igs\.mha/);
    const missing = run(['reconstruct', '--config-file', join(dir, 'nope.xml'), '--source-seq-file', cut, '--output-volume-file', join(dir, 'x.mha')]);
    assert.equal(await missing.exited, 1);
    assert.match(missing.stderr, /ECO3D_ERR_NOT_FOUND: .*nope\.xml/);
  });

  test('eco3d scan refuses a bad robot target with a clear error', async () => {
    const p = run(['scan', '--robot', 'telnet:robot', '--out', join(dir, 'bad')]);
    assert.equal(await p.exited, 1);
    assert.match(p.stderr, /ECO3D_ERR_CONFIG: --robot: expected sim, serial:\/dev\/PATH or ros:ws:\/\/HOST:PORT/);
  });
});

describe('eco3d start owns its data directory', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eco3d-start-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a second start on the same directory refuses; SIGTERM shuts down cleanly and a restart works', async () => {
    const env = { ECO3D_ADMIN_PASSWORD: 'admin-password-1', ECO3D_DEMO_PASSWORD: 'demo-password-1' };
    const a = run(['start', '--data', dir, '--port', '0'], env);
    try {
      const [, url] = await a.line(/Eco3D is up at (http:\/\/\S+)/, 60_000);
      const health = await fetch(`${url}/healthz`);
      assert.equal(health.status, 200);
      const b = run(['start', '--data', dir, '--port', '0'], env);
      assert.equal(await b.exited, 1);
      assert.match(b.stderr, /ECO3D_ERR_DATA_DIR_LOCKED: .*in use by eco3d process \d+/);
      assert.equal(await stop(a), 0);
      assert.equal(existsSync(join(dir, 'eco3d.lock')), false, 'the lock is released on shutdown');
    } finally {
      await stop(a);
    }
    // The embedded database was checkpointed and closed: it opens again with its data.
    const c = run(['start', '--data', dir, '--port', '0'], env);
    try {
      const [, url] = await c.line(/Eco3D is up at (http:\/\/\S+)/, 60_000);
      const login = await fetch(`${url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'demo-sonographer', password: 'demo-password-1' }),
      });
      assert.equal(login.status, 200);
      assert.match(login.headers.get('set-cookie') ?? '', /eco3d_session=.*HttpOnly/i);
    } finally {
      assert.equal(await stop(c), 0);
    }
  });

  test('a bad configuration value stops the start with ECO3D_ERR_CONFIG naming it', async () => {
    const p = run(['start', '--data', dir, '--port', '99999', '--robot', 'serial:relative/path'], { ECO3D_DEADMAN_MS: 'soon' });
    assert.equal(await p.exited, 1);
    assert.match(p.stderr, /ECO3D_ERR_CONFIG/);
    assert.match(p.stderr, /--port: expected an integer from 0 to 65535, got "99999"/);
    assert.match(p.stderr, /--robot: serial path must be absolute/);
    assert.match(p.stderr, /ECO3D_DEADMAN_MS: expected an integer/);
  });
});

// The plugin side of a sandboxed run (see sandbox.ts). The parent copies this file, the plugin's
// files and the input into a fresh directory, then starts node on this file inside an empty
// network namespace, as an unprivileged user, with the permission model limited to reading that
// directory. Plain .mjs so that no loader (tsx) has to start: node's start-up is most of the cost.
//
// The process starts before its input is in place: it waits for a line on stdin, then reads it.
// Layout of the run directory (everything read-only to us):
//   runner.mjs      this file
//   input.json      { dims, spacingMm, voxelsBytes, studyRef, entry }
//   voxels.raw      the volume, raw bytes (a 16 MB volume as JSON would cost more than the spawn)
//   plugin/         the plugin's files; `entry` is relative to it
//
// The result goes out on fd 3 (stdout and stderr belong to the plugin, as logs), as one JSON
// document: { ok: true, output, usage } or { ok: false, error: { code, message }, usage }.
import { readFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const RESULT_FD = 3;
const here = dirname(fileURLToPath(import.meta.url));
let reported = false;

/** Writes the whole text to fd 3; the pipe may be non-blocking, so EAGAIN means "wait a little". */
function writeAll(text) {
  const buf = Buffer.from(text, 'utf8');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(RESULT_FD, buf, off, buf.length - off);
    } catch (err) {
      if (err && err.code === 'EAGAIN') Atomics.wait(pause, 0, 0, 1);
      else throw err;
    }
  }
}

function report(doc, exitCode) {
  if (reported) return;
  reported = true;
  let text;
  try {
    // Exact CPU time, and the RSS now: getrusage's peak would count the parent's pages of the pre-exec fork.
    const cpu = process.cpuUsage();
    const usage = { cpuMs: (cpu.user + cpu.system) / 1000, maxRssKb: Math.round(process.memoryUsage.rss() / 1024) };
    text = JSON.stringify({ ...doc, usage });
  } catch (err) {
    // A cycle or a BigInt in the output: the parent classifies this as bad output.
    text = JSON.stringify({ ok: false, error: { code: 'ECO3D_PLUGIN_OUTPUT_NOT_JSON', message: String(err && err.message) } });
    exitCode = 1;
  }
  try {
    writeAll(text);
  } finally {
    // Exit at once: a plugin's leftover timers or sockets must not keep the process (and the run) alive.
    process.exit(exitCode);
  }
}

function fail(err) {
  const code = err && typeof err === 'object' && typeof err.code === 'string' ? err.code : undefined;
  const message = err instanceof Error ? err.message : String(err);
  report({ ok: false, error: { code, message: message.slice(0, 2000) } }, 1);
}

// Errors thrown outside analyze()'s promise (a timer callback, an 'error' event) are the plugin's too.
process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);

try {
  // Started ahead of its input (sandbox.ts startPlugin): the parent writes a line once it is in place.
  await new Promise((res) => {
    process.stdin.once('data', res);
    process.stdin.once('end', res);
  });
  process.stdin.destroy();
  const header = JSON.parse(readFileSync(join(here, 'input.json'), 'utf8'));
  const raw = readFileSync(join(here, 'voxels.raw'));
  const voxels = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  if (voxels.length !== header.voxelsBytes) throw new Error(`voxels.raw holds ${voxels.length} bytes, expected ${header.voxelsBytes}`);
  const pluginDir = join(here, 'plugin');
  const entryPath = resolve(pluginDir, header.entry);
  if (!entryPath.startsWith(pluginDir + sep)) throw new Error(`entry "${header.entry}" is outside the plugin`);
  const mod = await import(pathToFileURL(entryPath).href);
  if (typeof mod.analyze !== 'function') throw new Error(`the plugin's entry does not export a function "analyze"`);
  const input = {
    volume: { dims: header.dims, spacingMm: header.spacingMm, voxels },
    study: { ref: header.studyRef },
  };
  const output = await mod.analyze(input);
  report({ ok: true, output }, 0);
} catch (err) {
  fail(err);
}

// The host page of one browser live plugin (viewer/plugin-frame.html). The console embeds it as
// <iframe sandbox="allow-scripts"> with no allow-same-origin: the page gets an opaque origin, so
// the third-party module it runs can never send the clinician's session cookie nor call our API
// as the user. Everything it may reach comes from the console by postMessage: the module's text
// and a session token scoped to what the hospital accepted (live:video, live:pose…).
//
// The plugin contract (a plain ES module with no imports):
//   export async function activate(ctx) → { stop() }   (or the handle itself, not a promise)
//   ctx = { sdk: { runArPlugin, imagePlaneCorners, projectToImage }, token, url, video, overlay, onStatus }
//
// Messages (both sides check the sender: here the parent window at the URL's origin; there this
// frame's window at the opaque origin "null"):
//   frame → console  {type: 'eco3d-plugin:ready'} once listening, then {type: 'eco3d-plugin:status', …}
//   console → frame  {type: 'eco3d-plugin:start', moduleSource, token, expiresIn, url, name}
//                    {type: 'eco3d-plugin:token', token, expiresIn}   (renewed before expiry)
//                    {type: 'eco3d-plugin:stop'}
import { imagePlaneCorners, projectToImage, runArPlugin, type ArPluginStatus } from '../../marketplace/sdk/index.ts';

export type PluginFrameState = 'loading' | 'connecting' | 'connected' | 'reconnecting' | 'closed' | 'error';

export type HostToFrameMessage =
  | { readonly type: 'eco3d-plugin:start'; readonly moduleSource: string; readonly token: string; readonly expiresIn: number; readonly url: string; readonly name: string }
  | { readonly type: 'eco3d-plugin:token'; readonly token: string; readonly expiresIn: number }
  | { readonly type: 'eco3d-plugin:stop' };

export type FrameToHostMessage =
  | { readonly type: 'eco3d-plugin:ready' }
  | { readonly type: 'eco3d-plugin:status'; readonly state: PluginFrameState; readonly message: string; readonly code?: string; readonly video?: boolean };

/** What a plugin's activate(ctx) gets. */
export interface PluginContext {
  readonly sdk: { readonly runArPlugin: typeof runArPlugin; readonly imagePlaneCorners: typeof imagePlaneCorners; readonly projectToImage: typeof projectToImage };
  readonly token: string;
  readonly url: string;
  readonly video: HTMLVideoElement;
  readonly overlay: HTMLCanvasElement;
  readonly onStatus: (s: ArPluginStatus) => void;
}

interface PluginHandle {
  stop(): void;
}

interface PluginModule {
  activate(ctx: PluginContext): PluginHandle | Promise<PluginHandle>;
}

const SDK = Object.freeze({ runArPlugin, imagePlaneCorners, projectToImage });
/** The console's origin: this page's URL is ours even though its (sandboxed) origin is opaque. */
const CONSOLE_ORIGIN = location.origin;
const video = document.getElementById('plugin-video') as HTMLVideoElement;
const overlay = document.getElementById('plugin-overlay') as HTMLCanvasElement;

let plugin: PluginModule | null = null;
let url = CONSOLE_ORIGIN;
let handle: PluginHandle | null = null;
/** Each (re)start; a status or an activation of an older one is stale. */
let generation = 0;
let state: PluginFrameState = 'loading';
let latestToken = '';
let runToken = '';

function post(msg: FrameToHostMessage): void {
  window.parent.postMessage(msg, CONSOLE_ORIGIN);
}

function report(next: PluginFrameState, message: string, extra: { code?: string; video?: boolean } = {}): void {
  state = next;
  post({ type: 'eco3d-plugin:status', state: next, message: message.slice(0, 300), ...extra });
}

const codeOf = (e: unknown): string => {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' && /^ECO3D_ERR_[A-Z_]+$/.test(c) ? c : 'ECO3D_ERR_PLUGIN';
};

/** The SDK's status, relayed; its errors read "<code>: <message>". */
function relay(s: ArPluginStatus): void {
  const video = s.grants === null ? {} : { video: s.grants.video };
  if (s.state === 'error') {
    const m = /^(ECO3D_ERR_[A-Z_]+): ([\s\S]*)$/.exec(s.message);
    report('error', m === null ? s.message : m[2]!, { code: m === null ? 'ECO3D_ERR_PLUGIN' : m[1]!, ...video });
    return;
  }
  report(s.state, s.message, video);
}

function stopRun(): void {
  generation++;
  const h = handle;
  handle = null;
  try {
    h?.stop();
  } catch {
    // a plugin failing to stop is gone anyway: the frame is what the console removes
  }
}

async function startRun(): Promise<void> {
  const p = plugin;
  if (p === null) return;
  stopRun();
  const gen = generation;
  runToken = latestToken;
  report('connecting', 'starting the plugin…');
  try {
    const h = await p.activate({
      sdk: SDK,
      token: runToken,
      url,
      video,
      overlay,
      onStatus: (s) => {
        if (gen === generation) relay(s);
      },
    });
    if (typeof h !== 'object' || h === null || typeof h.stop !== 'function') throw Object.assign(new Error('activate(ctx) must return { stop() }'), { code: 'ECO3D_ERR_PLUGIN' });
    // Superseded while it connected (a new token, or stopped): this run is not wanted.
    if (gen !== generation) {
      h.stop();
      return;
    }
    handle = h;
  } catch (e) {
    if (gen !== generation) return;
    report('error', e instanceof Error ? e.message : String(e), { code: codeOf(e) });
  }
}

async function load(moduleSource: string): Promise<PluginModule> {
  // A Blob URL of this (opaque) origin: the module never comes from a URL a session could open.
  const blobUrl = URL.createObjectURL(new Blob([moduleSource], { type: 'text/javascript' }));
  try {
    const mod = (await import(/* @vite-ignore */ blobUrl)) as Partial<PluginModule>;
    if (typeof mod.activate !== 'function') throw Object.assign(new Error('the plugin module exports no activate(ctx)'), { code: 'ECO3D_ERR_PLUGIN' });
    return mod as PluginModule;
  } finally {
    URL.revokeObjectURL(blobUrl);
  }
}

async function onMessage(m: HostToFrameMessage): Promise<void> {
  switch (m.type) {
    case 'eco3d-plugin:start': {
      if (plugin !== null || state !== 'loading') return; // one plugin per frame, started once
      state = 'connecting';
      latestToken = m.token;
      url = m.url;
      document.title = `Plugin: ${m.name}`;
      try {
        plugin = await load(m.moduleSource);
      } catch (e) {
        report('error', `cannot load the plugin: ${e instanceof Error ? e.message : String(e)}`, { code: codeOf(e) });
        return;
      }
      await startRun();
      return;
    }
    case 'eco3d-plugin:token':
      latestToken = m.token;
      // A connected stream keeps going (the token is checked when joining); a run that lost its
      // stream, or whose token was refused, starts again with the new one.
      if (plugin !== null && state !== 'connected' && runToken !== latestToken) await startRun();
      return;
    case 'eco3d-plugin:stop':
      stopRun();
      report('closed', 'stopped');
      return;
  }
}

/** A message of the console's shape (anything else is dropped). */
function parseHostMessage(d: unknown): HostToFrameMessage | null {
  if (typeof d !== 'object' || d === null) return null;
  const m = d as Record<string, unknown>;
  const str = (k: string): boolean => typeof m[k] === 'string';
  const num = (k: string): boolean => typeof m[k] === 'number' && Number.isFinite(m[k]);
  switch (m.type) {
    case 'eco3d-plugin:start':
      return str('moduleSource') && str('token') && num('expiresIn') && str('url') && str('name') ? (m as unknown as HostToFrameMessage) : null;
    case 'eco3d-plugin:token':
      return str('token') && num('expiresIn') ? (m as unknown as HostToFrameMessage) : null;
    case 'eco3d-plugin:stop':
      return { type: 'eco3d-plugin:stop' };
    default:
      return null;
  }
}

addEventListener('message', (e: MessageEvent) => {
  // Only the console that embeds this frame, at our own origin (not another page framing it).
  if (e.source !== window.parent || e.origin !== CONSOLE_ORIGIN || window.parent === window) return;
  const m = parseHostMessage(e.data);
  if (m === null) return;
  onMessage(m).catch((err: unknown) => report('error', err instanceof Error ? err.message : String(err), { code: codeOf(err) }));
});
addEventListener('pagehide', () => stopRun());
post({ type: 'eco3d-plugin:ready' });

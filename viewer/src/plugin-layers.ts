// The console's live plugin layers (issue 8): each live browser plugin the hospital enabled gets a
// toggle, labelled with its name and vendor; on, its layer is a sandboxed frame over the live
// B-mode (plugin-frame.html, <iframe sandbox="allow-scripts">: an opaque origin, no cookie, no
// API of ours). The console, with its session, fetches the plugin's module and a session token
// for it and hands both to the frame by postMessage; it renews the token before it expires, and
// when the server cuts the plugin's stream (the plugin was disabled) the layer says so and stops.
//
// Nothing runs until the clinician turns a layer on; off, its frame is removed (and its stream
// with it). Whatever the frame posts is the plugin's word: checked, shown as text, never obeyed.
import './plugin-layers.css';
import { api, API_TIMEOUT_MS, ApiError } from './api.ts';
import type { FrameToHostMessage, HostToFrameMessage, PluginFrameState } from './plugin-frame.ts';
import { describeError, el } from './ui.ts';

/** GET /api/marketplace/live-plugins */
export interface LivePlugin {
  readonly pluginId: string;
  readonly name: string;
  readonly version: string;
  readonly vendor: string;
  readonly scopes: readonly string[];
  readonly moduleUrl: string;
}

interface SessionToken {
  readonly token: string;
  readonly expiresIn: number;
}

export type PluginLayerState = PluginFrameState | 'off' | 'cut';

const FRAME_PAGE = 'plugin-frame.html';
/** A sandboxed frame's messages come from the opaque origin, serialized "null". */
const FRAME_ORIGIN = 'null';
const FRAME_READY_TIMEOUT_MS = 15_000;
/** A plugin's "token refused" makes the console ask again, at most this often. */
const MIN_CHECK_INTERVAL_MS = 5_000;
/** After a failed renewal (network), the next try. */
const RENEW_RETRY_MS = 30_000;
const FRAME_STATES: ReadonlySet<string> = new Set<PluginFrameState>(['loading', 'connecting', 'connected', 'reconnecting', 'closed', 'error']);

/** Shows the tenant's enabled live plugins under `after`, their layers over `stage` (the B-mode box). */
export async function startPluginLayers(stage: HTMLElement, after: HTMLElement): Promise<PluginLayer[]> {
  let plugins: LivePlugin[];
  try {
    plugins = (await api<{ plugins: LivePlugin[] }>('GET', '/api/marketplace/live-plugins')).plugins;
  } catch (e) {
    // An account without a hospital marketplace (the platform's) has no plugin layers.
    if (e instanceof ApiError && e.status === 403) return [];
    throw e;
  }
  if (plugins.length === 0) return [];
  const layers = plugins.map((p) => new PluginLayer(p, stage));
  const panel = el('div', { id: 'plugin-layers', 'data-testid': 'plugin-layers' }, el('h3', {}, 'Plugin layers — third-party'), ...layers.map((l) => l.row));
  after.after(panel);
  return layers;
}

export class PluginLayer {
  readonly row: HTMLElement;
  private readonly toggle: HTMLInputElement;
  private readonly status: HTMLElement;
  private layer: HTMLElement | null = null;
  private frame: HTMLIFrameElement | null = null;
  /** Each turn on/off; an answer of an older one is dropped. */
  private session = 0;
  private renewTimer: ReturnType<typeof setTimeout> | undefined;
  private readyWaiter: (() => void) | null = null;
  private checking = false;
  private lastCheckMs = 0;
  private lastError = '';
  private readonly onMessage = (e: MessageEvent): void => this.received(e);

  constructor(
    readonly plugin: LivePlugin,
    private readonly stage: HTMLElement,
  ) {
    this.toggle = el('input', { type: 'checkbox', 'data-testid': 'plugin-layer-toggle' });
    this.status = el('span', { class: 'plugin-status', 'data-testid': 'plugin-layer-status', 'data-state': 'off' }, 'off');
    this.row = el(
      'div',
      { class: 'plugin-row', 'data-testid': 'plugin-layer-row', 'data-plugin': plugin.pluginId, 'data-version': plugin.version, 'data-state': 'off' },
      el('label', { title: `A third-party plugin, run sandboxed. Access: ${plugin.scopes.join(', ')}` }, this.toggle, el('strong', { 'data-testid': 'plugin-layer-name' }, `Plugin: ${plugin.name}`)),
      el('span', { class: 'muted', 'data-testid': 'plugin-layer-vendor' }, `by ${plugin.vendor} · v${plugin.version} · third-party`),
      this.status,
    );
    this.toggle.addEventListener('change', () => {
      if (this.toggle.checked) void this.on();
      else this.off('off', 'off');
    });
  }

  get state(): PluginLayerState {
    return this.row.dataset.state as PluginLayerState;
  }

  private setStatus(state: PluginLayerState, message: string, video?: boolean): void {
    this.row.dataset.state = state;
    this.status.dataset.state = state;
    if (video === undefined) delete this.status.dataset.video;
    else this.status.dataset.video = String(video);
    this.status.textContent = message;
    const label = this.layer?.querySelector('.plugin-layer-label');
    if (label) label.textContent = `Plugin: ${this.plugin.name} — third-party (${this.plugin.vendor}) · ${state}`;
  }

  private post(msg: HostToFrameMessage): void {
    // A sandboxed frame's origin is opaque: it cannot be named as the target, hence "*". The frame
    // is ours (plugin-frame.html), created here, and every message goes to its window only.
    this.frame?.contentWindow?.postMessage(msg, '*');
  }

  private async on(): Promise<void> {
    this.off('loading', 'loading the plugin…');
    const session = this.session;
    const frame = el('iframe', { sandbox: 'allow-scripts', src: FRAME_PAGE, title: `Plugin: ${this.plugin.name} (third-party)`, referrerpolicy: 'no-referrer', 'data-testid': 'plugin-frame' });
    const layer = el('div', { class: 'plugin-layer', 'data-testid': 'plugin-layer', 'data-plugin': this.plugin.pluginId }, frame, el('div', { class: 'plugin-layer-label', 'data-testid': 'plugin-layer-label' }));
    const ready = new Promise<void>((resolve, reject) => {
      this.readyWaiter = resolve;
      setTimeout(() => reject(new ApiError('ECO3D_ERR_TIMEOUT', `the plugin frame did not start within ${FRAME_READY_TIMEOUT_MS / 1000} s`, 0)), FRAME_READY_TIMEOUT_MS);
    });
    this.frame = frame;
    this.layer = layer;
    addEventListener('message', this.onMessage);
    this.stage.append(layer);
    this.setStatus('loading', 'loading the plugin…');
    try {
      const [moduleSource, t] = await Promise.all([this.fetchModule(), this.sessionToken(), ready]);
      if (session !== this.session) return;
      this.post({ type: 'eco3d-plugin:start', moduleSource, token: t.token, expiresIn: t.expiresIn, url: location.origin, name: this.plugin.name });
      this.scheduleRenewal(t.expiresIn);
    } catch (e) {
      if (session !== this.session) return;
      if (notEnabled(e)) this.cut();
      else {
        const { code, message } = describeError(e);
        this.setStatus('error', `cannot start the plugin: ${code}: ${message}`);
      }
    }
  }

  /** Removes the frame (its plugin is asked to stop first) and shows `state`. */
  private off(state: PluginLayerState, message: string): void {
    this.session++;
    clearTimeout(this.renewTimer);
    this.readyWaiter = null;
    removeEventListener('message', this.onMessage);
    this.post({ type: 'eco3d-plugin:stop' });
    const layer = this.layer;
    this.layer = null;
    this.frame = null;
    if (layer !== null) {
      // Gone from sight now; removed (which ends its stream for sure) once it had a moment to leave.
      layer.classList.add('hidden');
      setTimeout(() => layer.remove(), 1000);
    }
    this.setStatus(state, message);
  }

  /** The server cut the plugin's stream and will not give it another token: it is disabled. */
  private cut(): void {
    const why = this.lastError === '' ? '' : ` (${this.lastError})`;
    this.off('cut', `stream cut by the server${why}: ${this.plugin.name} is no longer enabled for this hospital`);
    this.toggle.checked = false;
    this.toggle.disabled = true;
  }

  private received(e: MessageEvent): void {
    if (this.frame === null || e.source !== this.frame.contentWindow || e.origin !== FRAME_ORIGIN) return;
    const m = parseFrameMessage(e.data);
    if (m === null) return;
    if (m.type === 'eco3d-plugin:ready') {
      const w = this.readyWaiter;
      this.readyWaiter = null;
      w?.();
      return;
    }
    this.setStatus(m.state, m.message, m.video);
    if (m.state === 'error') this.lastError = m.code === undefined ? m.message : `${m.code}: ${m.message}`;
    // A refused token: expired (then a new one helps) or revoked with the plugin (then none comes).
    if (m.code === 'ECO3D_ERR_UNAUTHENTICATED') void this.renew(false);
  }

  private scheduleRenewal(expiresIn: number): void {
    clearTimeout(this.renewTimer);
    // A minute before it runs out (a fifth of a short lifetime).
    const inMs = Math.max(5, expiresIn - Math.min(60, expiresIn / 5)) * 1000;
    this.renewTimer = setTimeout(() => void this.renew(true), inMs);
  }

  /** A new session token for the running plugin; none (404) means the plugin was disabled. */
  private async renew(scheduled: boolean): Promise<void> {
    const now = Date.now();
    if (this.checking || (!scheduled && now - this.lastCheckMs < MIN_CHECK_INTERVAL_MS)) return;
    this.checking = true;
    this.lastCheckMs = now;
    const session = this.session;
    try {
      const t = await this.sessionToken();
      if (session !== this.session) return;
      this.post({ type: 'eco3d-plugin:token', token: t.token, expiresIn: t.expiresIn });
      this.scheduleRenewal(t.expiresIn);
    } catch (e) {
      if (session !== this.session) return;
      if (notEnabled(e)) this.cut();
      else {
        const { code, message } = describeError(e);
        this.setStatus('error', `cannot renew the plugin's token: ${code}: ${message}`);
        clearTimeout(this.renewTimer);
        this.renewTimer = setTimeout(() => void this.renew(true), RENEW_RETRY_MS);
      }
    } finally {
      this.checking = false;
    }
  }

  private sessionToken(): Promise<SessionToken> {
    return api<SessionToken>('POST', `/api/marketplace/enablements/${encodeURIComponent(this.plugin.pluginId)}/session-token`);
  }

  /** The module's text, read with the console's session (the frame has none). */
  private async fetchModule(): Promise<string> {
    const url = this.plugin.moduleUrl;
    if (!url.startsWith('/api/marketplace/plugins/')) throw new ApiError('ECO3D_ERR_BAD_REQUEST', `unexpected module URL ${url}`, 0);
    let res: Response;
    try {
      res = await fetch(url, { credentials: 'same-origin', signal: AbortSignal.timeout(API_TIMEOUT_MS) });
    } catch (e) {
      throw new ApiError('ECO3D_ERR_NETWORK', `cannot fetch the plugin module (${(e as Error).message})`, 0);
    }
    const text = await res.text();
    if (!res.ok) {
      let code = `HTTP_${res.status}`;
      let message = res.statusText || 'request failed';
      try {
        const d = JSON.parse(text) as { code?: unknown; message?: unknown };
        if (typeof d.code === 'string') code = d.code;
        if (typeof d.message === 'string') message = d.message;
      } catch {
        // not JSON: the status says enough
      }
      throw new ApiError(code, message, res.status);
    }
    return text;
  }
}

const notEnabled = (e: unknown): boolean => e instanceof ApiError && e.status === 404;

/** A frame's message of the known shape (a plugin can post anything: the rest is dropped). */
function parseFrameMessage(d: unknown): FrameToHostMessage | null {
  if (typeof d !== 'object' || d === null) return null;
  const m = d as Record<string, unknown>;
  if (m.type === 'eco3d-plugin:ready') return { type: 'eco3d-plugin:ready' };
  if (m.type !== 'eco3d-plugin:status' || typeof m.state !== 'string' || !FRAME_STATES.has(m.state) || typeof m.message !== 'string') return null;
  return {
    type: 'eco3d-plugin:status',
    state: m.state as PluginFrameState,
    message: m.message.slice(0, 300),
    ...(typeof m.code === 'string' && /^ECO3D_ERR_[A-Z_]{1,60}$/.test(m.code) ? { code: m.code } : {}),
    ...(typeof m.video === 'boolean' ? { video: m.video } : {}),
  };
}

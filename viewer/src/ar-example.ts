// Hosts the example AR plugin (marketplace/sdk/examples/image-plane-ar.ts): the scoped token
// comes from ?token= or the text box (empty: the signed-in session), the plugin does the rest.
import './style.css';
import { DEFAULT_TARGET, startImagePlaneAr, type ImagePlaneAr } from '../../marketplace/sdk/examples/image-plane-ar.ts';
import { $, describeError, setText } from './ui.ts';

let running: ImagePlaneAr | null = null;

function target(): { x: number; y: number; z: number } {
  const n = (id: string, d: number): number => {
    const v = Number($<HTMLInputElement>(id).value);
    return $<HTMLInputElement>(id).value.trim() === '' || !Number.isFinite(v) ? d : v;
  };
  return { x: n('target-x', DEFAULT_TARGET.x), y: n('target-y', DEFAULT_TARGET.y), z: n('target-z', DEFAULT_TARGET.z) };
}

async function connect(token: string): Promise<void> {
  running?.stop();
  running = null;
  const status = $('ar-status');
  setText('ar-status', 'connecting…', 'warn');
  try {
    running = await startImagePlaneAr({
      ...(token === '' ? {} : { token }),
      video: $<HTMLVideoElement>('ar-video'),
      overlay: $<HTMLCanvasElement>('ar-overlay'),
      view3d: $('ar-3d'),
      target: target(),
      onStatus: (s) => {
        setText('ar-status', s.message, s.state === 'error' || s.state === 'closed' ? 'bad' : s.grants !== null && !s.grants.video ? 'warn' : s.state === 'connected' ? 'ok' : 'warn');
        status.dataset.state = s.state;
        status.dataset.video = s.grants === null ? '' : String(s.grants.video);
      },
    });
    $<HTMLButtonElement>('ar-disconnect').disabled = false;
  } catch (e) {
    const { code, message } = describeError(e);
    setText('ar-status', `cannot connect: ${code}: ${message}`, 'bad');
    status.dataset.state = 'error';
  }
}

function main(): void {
  const t = DEFAULT_TARGET;
  $<HTMLInputElement>('target-x').value = String(t.x);
  $<HTMLInputElement>('target-y').value = String(t.y);
  $<HTMLInputElement>('target-z').value = t.z.toFixed(1);
  $('target-form').addEventListener('submit', (e) => {
    e.preventDefault();
    running?.setTarget(target());
  });
  $('ar-form').addEventListener('submit', (e) => {
    e.preventDefault();
    void connect($<HTMLInputElement>('ar-token').value.trim());
  });
  $('ar-disconnect').addEventListener('click', () => {
    running?.stop();
    running = null;
    $<HTMLButtonElement>('ar-disconnect').disabled = true;
  });
  // A token is a credential: masked like a password, so that it stays out of screenshots too.
  $<HTMLInputElement>('ar-token').type = 'password';
  const fromUrl = new URLSearchParams(location.search).get('token');
  if (fromUrl !== null && fromUrl !== '') {
    $<HTMLInputElement>('ar-token').value = fromUrl;
    // Keep the token out of the address bar (and of screenshots and history) once read.
    history.replaceState(null, '', location.pathname);
    void connect(fromUrl);
  }
}

main();

// Whether WebGL runs in software (SwiftShader, llvmpipe: headless Chromium, VMs without a GPU).
// There every frame costs tens of milliseconds of main-thread time, which would starve the
// teleop heartbeat (the server's deadman stops the robot after 300 ms without one), so the
// views render less often and at lower quality.
let cached: boolean | null = null;

export function softwareGl(): boolean {
  if (cached !== null) return cached;
  const forced = new URLSearchParams(location.search).get('gl');
  if (forced === 'software' || forced === 'hardware') return (cached = forced === 'software');
  try {
    const c = document.createElement('canvas');
    const gl = c.getContext('webgl2') ?? c.getContext('webgl');
    if (gl === null) return (cached = true);
    const ext = gl.getExtension('WEBGL_debug_renderer_info');
    const name = String(ext === null ? gl.getParameter(gl.RENDERER) : gl.getParameter(ext.UNMASKED_RENDERER_WEBGL));
    gl.getExtension('WEBGL_lose_context')?.loseContext();
    cached = /swiftshader|llvmpipe|softpipe|software|microsoft basic render/i.test(name);
  } catch {
    cached = true;
  }
  return cached;
}

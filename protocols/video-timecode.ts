// A capture-time code burned into the bottom rows of each LIVE video frame, so a viewer can
// measure frame age (capture → decoded) without any side channel: WebRTC does not carry a
// capture timestamp that both the browser and a Node client can read.
//
// Layout: the last TIMECODE_ROWS rows of the frame, cut into 32 equal blocks across the width.
// Block 0 is white and block 31 black (guards: a frame without them has no code); blocks 1…30
// hold the capture wall-clock time in ms modulo 2^30 (≈ 12.4 days), most significant bit first,
// white = 1. Blocks are wide and tall so that they survive the video codec and a 2× downscale.
// The recorded frames (tracked-frames.igs.mha, the volume, DICOM) are never stamped: only the
// copy sent as live video is. At the default 0.1 mm/px the code covers the deepest 1.6 mm.
// Browser-safe: no imports.

export const TIMECODE_ROWS = 16;
const BLOCKS = 32;
const DATA_BITS = 30;
const MODULUS = 2 ** DATA_BITS;
const WHITE = 235;
const BLACK = 16;

/** Stamps `capturedAtMs` into an 8-bit luma plane (row-major, `width` per row), in place. */
export function stampTimecode(luma: Uint8Array, width: number, height: number, capturedAtMs: number): void {
  if (height < TIMECODE_ROWS || width < BLOCKS) return;
  const code = Math.floor(capturedAtMs) % MODULUS;
  for (let b = 0; b < BLOCKS; b++) {
    const bit = b === 0 ? 1 : b === BLOCKS - 1 ? 0 : (code >>> (DATA_BITS - b)) & 1;
    const x0 = Math.floor((b * width) / BLOCKS);
    const x1 = Math.floor(((b + 1) * width) / BLOCKS);
    const v = bit === 1 ? WHITE : BLACK;
    for (let y = height - TIMECODE_ROWS; y < height; y++) luma.fill(v, y * width + x0, y * width + x1);
  }
}

/**
 * Reads the code from a frame, given its luma at (x, y). Null when the guards are missing (not a
 * stamped frame). The value is the capture time modulo 2^30: `unwrapTimecode` restores it.
 */
export function readTimecode(lumaAt: (x: number, y: number) => number, width: number, height: number): number | null {
  if (height < TIMECODE_ROWS || width < BLOCKS) return null;
  // Three rows up from the bottom: inside the code at full size and at a 2× or 4× downscale,
  // and away from the frame edge, where codecs blur most.
  const y = height - 3;
  const bitAt = (b: number): number => {
    const x = Math.floor(((b + 0.5) * width) / BLOCKS);
    return lumaAt(x, y) >= (WHITE + BLACK) / 2 ? 1 : 0;
  };
  if (bitAt(0) !== 1 || bitAt(BLOCKS - 1) !== 0) return null;
  let code = 0;
  for (let b = 1; b < BLOCKS - 1; b++) code = code * 2 + bitAt(b);
  return code;
}

/** Reads the code from an RGBA image (a canvas), using the green channel as luma. */
export function readTimecodeRgba(rgba: Uint8Array | Uint8ClampedArray, width: number, height: number): number | null {
  return readTimecode((x, y) => rgba[(y * width + x) * 4 + 1]!, width, height);
}

/** Reads the code from an I420 frame's Y plane. */
export function readTimecodeLuma(y: Uint8Array, width: number, height: number): number | null {
  return readTimecode((x, yy) => y[yy * width + x]!, width, height);
}

/** The full wall-clock time nearest `nowMs` whose value modulo 2^30 is `code`. */
export function unwrapTimecode(code: number, nowMs: number): number {
  const base = nowMs - (nowMs % MODULUS);
  let best = base + code;
  for (const c of [best - MODULUS, best + MODULUS]) if (Math.abs(c - nowMs) < Math.abs(best - nowMs)) best = c;
  return best;
}

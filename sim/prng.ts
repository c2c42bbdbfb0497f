// A small seeded pseudo-random generator, so that every simulated noise source is reproducible
// for a seed (tests compare runs; a bug report can name its seed).
//
// Public API: createPrng(seed) → { next(): [0, 1), gaussian(): N(0, 1) }.
// The generator is sfc32 (Chris Doty-Humphrey's "small fast counting" generator, as in PractRand),
// seeded through splitmix32 so that nearby seeds give unrelated streams.

export interface Prng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Standard normal (Box–Muller, the spare value cached). */
  gaussian(): number;
}

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export function createPrng(seed: number): Prng {
  const init = splitmix32(seed);
  let a = init(), b = init(), c = init(), d = init();
  const nextU32 = (): number => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 12; i++) nextU32(); // discard the warm-up outputs
  let spare: number | null = null;
  const next = (): number => nextU32() / 4294967296;
  return {
    next,
    gaussian(): number {
      if (spare !== null) {
        const s = spare;
        spare = null;
        return s;
      }
      // 1 − u keeps the logarithm's argument in (0, 1].
      const r = Math.sqrt(-2 * Math.log(1 - next()));
      const theta = 2 * Math.PI * next();
      spare = r * Math.sin(theta);
      return r * Math.cos(theta);
    },
  };
}

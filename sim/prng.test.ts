import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createPrng } from './prng.ts';

void describe('createPrng', () => {
  void it('repeats its sequence for a seed, and differs between seeds', () => {
    const a = createPrng(123), b = createPrng(123), c = createPrng(124);
    const sa = Array.from({ length: 50 }, () => a.next());
    assert.deepEqual(sa, Array.from({ length: 50 }, () => b.next()));
    assert.notDeepEqual(sa, Array.from({ length: 50 }, () => c.next()));
  });

  void it('is uniform on [0, 1) and its gaussian() is standard normal', () => {
    const p = createPrng(1);
    const n = 100_000;
    let sum = 0, min = 1, max = 0;
    const bins = new Array<number>(10).fill(0);
    for (let i = 0; i < n; i++) {
      const u = p.next();
      sum += u;
      min = Math.min(min, u);
      max = Math.max(max, u);
      bins[Math.floor(u * 10)]!++;
    }
    assert.ok(min >= 0 && max < 1, `range [${min}, ${max}]`);
    assert.ok(Math.abs(sum / n - 0.5) < 0.005, `mean ${sum / n}`);
    for (const b of bins) assert.ok(Math.abs(b / n - 0.1) < 0.005, `bin share ${b / n}`);
    let gs = 0, gs2 = 0;
    for (let i = 0; i < n; i++) {
      const g = p.gaussian();
      gs += g;
      gs2 += g * g;
    }
    assert.ok(Math.abs(gs / n) < 0.02, `gaussian mean ${gs / n}`);
    assert.ok(Math.abs(gs2 / n - 1) < 0.02, `gaussian variance ${gs2 / n}`);
  });
});

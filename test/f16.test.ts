// Host f16 conversion (ir/f16.ts) against an independent reference: the nearest of all 63,488 finite
// f16 values found by search, ties to the even bit pattern. Exact: no tolerance.

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { f16Bits, f16Value, roundF16 } from '../ir/f16.ts';

/** Every non-negative finite f16 value, ascending (bit patterns 0x0000..0x7bff are in value order). */
const POSITIVE = Array.from({ length: 0x7c00 }, (_, h) => f16Value(h));

/** The reference: nearest by search, ties to the even pattern, past the top halfway point infinity. */
function nearest(x: number): number {
  const a = Math.abs(Math.fround(x));
  const sign = Math.fround(x) < 0 || Object.is(Math.fround(x), -0) ? 0x8000 : 0;
  const max = POSITIVE[0x7bff];
  if (a >= max + 2 ** 4) return sign | 0x7c00; // 65520: half an ulp (32) past 65504 rounds up to infinity
  let lo = 0;
  let hi = 0x7bff;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POSITIVE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const [dl, dh] = [a - POSITIVE[lo], POSITIVE[hi] - a];
  return sign | (dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi);
}

describe('f16 on the host', () => {
  it('maps every f16 bit pattern to its value and back (both zeros, subnormals, infinities)', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue; // NaNs: checked below
      expect(f16Bits(f16Value(h))).toBe(h);
    }
  });

  it('rounds every halfway point between neighbours to the even pattern, and a hair either side to the nearer', () => {
    const up = (x: number) => x + Math.abs(x) * 2 ** -23;
    for (let h = 0; h < 0x7bff; h++) {
      const [a, b] = [f16Value(h), f16Value(h + 1)];
      const mid = (a + b) / 2; // exact in f32: one bit more than f16
      expect(f16Bits(mid)).toBe(h % 2 === 0 ? h : h + 1);
      expect(f16Bits(-mid)).toBe(0x8000 | (h % 2 === 0 ? h : h + 1));
      if (mid > 0) expect(f16Bits(Math.fround(up(mid)))).toBe(h + 1);
    }
  });

  it('overflows to infinity from 65520 up, keeps 65519 finite, and keeps NaN a NaN', () => {
    expect(f16Bits(65504)).toBe(0x7bff);
    expect(f16Bits(65519)).toBe(0x7bff);
    expect(f16Bits(65520)).toBe(0x7c00);
    expect(f16Bits(-1e6)).toBe(0xfc00);
    expect(Number.isNaN(roundF16(NaN))).toBe(true);
    expect(f16Bits(2 ** -25)).toBe(0); // half the smallest subnormal: ties to even, zero
    expect(f16Bits(Math.fround(2 ** -25 * (1 + 2 ** -10)))).toBe(1);
  });

  it('equals the search reference on random f32 values of every magnitude (fast-check)', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true }), (x) => {
        expect(f16Bits(x)).toBe(nearest(x));
      }),
      { numRuns: 20000 },
    );
  });
});

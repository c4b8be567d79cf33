// IEEE 754 binary16 on the host. Node 20 has no Float16Array, so kiln converts by hand: the CPU
// reference rounds to f16 exactly as a GPU's f16 stores do (round to nearest, ties to even; overflow to
// infinity; subnormals kept), so f16 kernels can be compared with it bit for bit. Written by hand
// because no maintained dependency-free package does only this (the step before f16 as a dtype).

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The f16 bit pattern nearest to `x` (taken as an f32 first, as a GPU holds it), ties to even. */
export function f16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf, or NaN (quiet, payload kept where it fits)
  const e = exp - 127 + 15; // the f16 exponent field, if normal
  if (e >= 0x1f) return sign | 0x7c00; // too large: infinity
  if (e <= 0) {
    // Subnormal (or zero): the value is m * 2^-24, m the 10-bit mantissa field; shift the full 24-bit significand into it.
    if (e < -10) return sign; // below half the smallest subnormal: zero (exactly half rounds to even, zero)
    const significand = mant | 0x800000;
    const shift = 14 - e; // 24-bit significand to 10 bits, more for each step below the normal range
    return sign | roundShift(significand, shift);
  }
  // Normal: keep 10 of 23 mantissa bits; a carry out of the mantissa bumps the exponent (to infinity at the top), as it should.
  return sign | ((e << 10) + roundShift(mant, 13));
}

/** `value >> shift`, rounded to nearest, ties to even. */
function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

/** The value of an f16 bit pattern. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** `x` rounded to the nearest f16 value (what an f16 store keeps), as a number. */
export function roundF16(x: number): number {
  return f16Value(f16Bits(x));
}

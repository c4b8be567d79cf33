// The WGSL column of the dtype table (ir/dtypes.ts holds the backend-neutral facts, keyed by the same
// names): how each dtype is stored in a buffer, what type a loaded value has, the conversions between
// the two, and how a constant of it is written.

import { DTYPE_INFO, type DType } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';

export interface WgslDType {
  /** The element type of its storage buffers (bool: a u32 holding 0 or 1; f16 needs `enable f16;`, see needsF16). */
  readonly storage: 'f32' | 'f16' | 'i32' | 'u32';
  /**
   * The WGSL type of a value once loaded. f16 values are f32 in registers (what torch's Inductor does,
   * `upcast_to_fp32`): products of f16s are exact in f32, sums and statistics accumulate in f32, and a
   * store rounds once, to nearest even. For +, -, *, / and sqrt that is the correctly rounded f16 result
   * (f32 has more than 2 * 11 + 2 significant bits, so rounding twice cannot differ).
   */
  readonly value: 'f32' | 'i32' | 'bool';
  /** A stored element (an expression of the storage type) as a value. */
  readonly load: (stored: string) => string;
  /** A value as what its buffer stores. */
  readonly store: (value: string) => string;
  /** The stored zero (what tril/triu write outside their triangle). */
  readonly zero: string;
  /** A literal of a finite value in range (wgslLiteral checks and clamps first). */
  readonly literal: (v: number) => string;
}

const floatLiteral = (v: number) => (/[.eE]/.test(String(v)) ? String(v) : `${v}.0`);

export const WGSL_DTYPES: Readonly<Record<DType, WgslDType>> = {
  f32: { storage: 'f32', value: 'f32', load: (x) => x, store: (x) => x, zero: '0.0', literal: floatLiteral },
  f16: { storage: 'f16', value: 'f32', load: (x) => `f32(${x})`, store: (x) => `f16(${x})`, zero: '0.0h', literal: floatLiteral },
  i32: {
    storage: 'i32', value: 'i32', load: (x) => x, store: (x) => x, zero: '0',
    literal: (v) => (v === DTYPE_INFO.i32.min ? `(${v + 1} - 1)` : `${v}`), // -2147483648 alone is out of range before the minus
  },
  bool: {
    storage: 'u32', value: 'bool', load: (x) => `(${x} != 0u)`, store: (x) => `select(0u, 1u, ${x})`, zero: '0u',
    literal: (v) => (v ? 'true' : 'false'),
  },
};

/** How a dtype is stored in a buffer: bool is a u32 holding 0 or 1. */
export function storageType(dtype: DType): WgslDType['storage'] {
  return WGSL_DTYPES[dtype].storage;
}

/** The WGSL type of a value of this dtype once loaded. */
export function valueType(dtype: DType): WgslDType['value'] {
  return WGSL_DTYPES[dtype].value;
}

/** The zero a buffer of this dtype stores. */
export function zeroLiteral(dtype: DType): string {
  return WGSL_DTYPES[dtype].zero;
}

/** A WGSL literal of a dtype; floats clamp infinities to their finite range (f32FromBits writes a real one), integers must fit. */
export function wgslLiteral(v: number, dtype: DType): string {
  if (Number.isNaN(v)) throw new KilnError('KILN_E011', 'a NaN constant cannot be lowered to WGSL');
  const info = DTYPE_INFO[dtype];
  if (info.isInt) {
    const i = Math.trunc(v);
    if (i < info.min || i > info.max) throw new KilnError('KILN_E011', `the constant ${v} does not fit in ${dtype}`);
    return WGSL_DTYPES[dtype].literal(i);
  }
  return WGSL_DTYPES[dtype].literal(info.isFloat ? Math.min(Math.max(v, info.min), info.max) : v);
}

/** Reads element `index` of binding `name` as a value of `dtype`. */
export function load(name: string, dtype: DType, index: string): string {
  return WGSL_DTYPES[dtype].load(`${name}[${index}]`);
}

/** Converts a value of `dtype` to what its buffer stores. */
export function store(dtype: DType, value: string): string {
  return WGSL_DTYPES[dtype].store(value);
}

/**
 * `kiln_round_f16(x)`: x rounded to the nearest f16 value, ties to even, kept in f32 (what an f16 store
 * keeps, and what ir/f16.ts's roundF16 gives). A conversion to f16 and back in registers need not round:
 * lavapipe keeps such values in f32 (f32(f16(x)) == x there) and rounds only when it stores them. So the
 * rounding is quantizeToF16's, which does round, with f16's two ends done here: quantizeToF16 flushes
 * f16's subnormals (multiples of 2^-24 below 2^-14) to zero and leaves values past 65504 undefined.
 */
export const ROUND_F16_WGSL = `fn kiln_round_f16(x: vec4<f32>) -> vec4<f32> {
  let subnormal = round(x * 16777216.0) * 5.9604644775390625e-8; // to a multiple of 2^-24, ties to even
  let inf = bitcast<vec4<f32>>((bitcast<vec4<u32>>(x) & vec4<u32>(0x80000000u)) | vec4<u32>(0x7f800000u));
  return select(select(quantizeToF16(x), subnormal, abs(x) < vec4<f32>(6.103515625e-5)), inf, abs(x) >= vec4<f32>(65520.0));
}
/** The same for one value. */
fn kiln_round_f16_1(x: f32) -> f32 {
  return kiln_round_f16(vec4<f32>(x)).x;
}`;

/** `x` (an f32 expression) rounded to f16's nearest value and kept in f32: needs ROUND_F16_WGSL declared. */
export function roundF16Wgsl(x: string): string {
  return `kiln_round_f16_1(${x})`;
}

/** The directive a module with f16 storage (or f16 values anywhere) needs first. */
export const ENABLE_F16 = 'enable f16;';

/** Whether WGSL text uses the f16 type, so needs ENABLE_F16 (and a device with `shader-f16`). */
export function usesF16(text: string): boolean {
  return /\bf16\b|\d\.?\d*h\b/.test(text);
}

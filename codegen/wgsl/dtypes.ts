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

/** The directive a module with f16 storage (or f16 values anywhere) needs first. */
export const ENABLE_F16 = 'enable f16;';

/** Whether WGSL text uses the f16 type, so needs ENABLE_F16 (and a device with `shader-f16`). */
export function usesF16(text: string): boolean {
  return /\bf16\b|\d\.?\d*h\b/.test(text);
}

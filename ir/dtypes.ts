// The dtype table: what kiln knows about each element type, backend-neutral (tinygrad's dtype.py holds
// the same facts as rows). Code asks this table instead of spelling 'f32'; the WGSL column (storage and
// value types, literals, loads and stores) is codegen/wgsl/dtypes.ts, keyed by the same names. Adding a
// dtype is adding a row here and there, plus what is truly specific to it.

/** Every dtype, in the order the IR text lists them. */
export const DTYPES = ['f32', 'f16', 'i32', 'bool'] as const;
export type DType = (typeof DTYPES)[number];

/** A host array kind: what the CPU reference, checkpoints and readbacks hold a dtype's elements in. */
export type HostArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export interface DTypeInfo {
  /** Its name in the IR text (`f32[2,3]`), in attrs (`{dtype="i32"}`) and in the public API. */
  readonly name: DType;
  /** Bytes an element takes in a device buffer (bool is stored as a 4-byte word: WGSL has no 1-byte storage type). */
  readonly bytes: number;
  /**
   * A host array of n elements; floats at the requested precision (f64 for the reference interpreter).
   * f16 has no typed array in Node 20: its elements live in a Float32Array (every f16 is an f32), rounded
   * to f16 values after each op at 'f32' precision (ir/host.ts roundOutput), unrounded at 'f64'.
   */
  readonly hostArray: (n: number, precision: 'f32' | 'f64') => HostArray;
  readonly isFloat: boolean;
  readonly isInt: boolean;
  /** The finite range of its values. */
  readonly min: number;
  readonly max: number;
  /** What a masked-out element is filled with before a max or softmax: -inf where the dtype has it, else its lowest value. */
  readonly lowest: number;
  /** Its name in a safetensors header (what kiln writes it as; runtime/safetensors.ts reads more). */
  readonly safetensors: 'F32' | 'F16' | 'I32' | 'BOOL';
}

/** The largest finite f32. */
export const F32_MAX = 3.4028234663852886e38;
/** The largest finite f16. */
export const F16_MAX = 65504;

const floatHost = (n: number, precision: 'f32' | 'f64') => (precision === 'f64' ? new Float64Array(n) : new Float32Array(n));

export const DTYPE_INFO: Readonly<Record<DType, DTypeInfo>> = {
  f32: {
    name: 'f32', bytes: 4, isFloat: true, isInt: false, min: -F32_MAX, max: F32_MAX, lowest: -Infinity, safetensors: 'F32', hostArray: floatHost,
  },
  f16: {
    name: 'f16', bytes: 2, isFloat: true, isInt: false, min: -F16_MAX, max: F16_MAX, lowest: -Infinity, safetensors: 'F16', hostArray: floatHost,
  },
  i32: { name: 'i32', bytes: 4, isFloat: false, isInt: true, min: -2147483648, max: 2147483647, lowest: -2147483648, safetensors: 'I32', hostArray: (n) => new Int32Array(n) },
  bool: { name: 'bool', bytes: 4, isFloat: false, isInt: false, min: 0, max: 1, lowest: 0, safetensors: 'BOOL', hostArray: (n) => new Uint8Array(n) },
};

export function dtypeInfo(dtype: DType): DTypeInfo {
  return DTYPE_INFO[dtype];
}

export function isDType(s: string): s is DType {
  return (DTYPES as readonly string[]).includes(s);
}

/** The float dtypes, in table order. */
export const FLOAT_DTYPES: readonly DType[] = DTYPES.filter((d) => DTYPE_INFO[d].isFloat);

/**
 * Bytes a device buffer of n elements of this dtype takes: whole 4-byte words (WebGPU copies and writes
 * move multiples of 4 bytes; an odd count of f16s is padded), at least one (WebGPU has no empty buffers).
 */
export function bufferBytes(dtype: DType, n: number): number {
  return Math.max(4, Math.ceil((n * DTYPE_INFO[dtype].bytes) / 4) * 4);
}

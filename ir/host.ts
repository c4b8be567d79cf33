// Host tensors: data in JS typed arrays. The CPU reference runs on these, checkpoints load into them.

import { DTYPE_INFO, type HostArray } from './dtypes.ts';
import { roundF16 } from './f16.ts';
import { type DType, type Shape, type TensorType, numel, formatType } from './types.ts';

/** Floats are Float32Array (f32 precision) or Float64Array (the f64 reference); bool is 0/1 bytes. */
export type HostData = HostArray;

/**
 * 'f32': as the device computes: f32 values, and f16 ones rounded to f16 after each op (roundOutput).
 * 'f64': the reference: every float in f64, f16 ones too, unrounded.
 */
export type Precision = 'f32' | 'f64';

export interface HostTensor {
  readonly type: TensorType;
  readonly data: HostData;
}

export function allocData(dtype: DType, n: number, precision: Precision): HostData {
  return DTYPE_INFO[dtype].hostArray(n, precision);
}

export function hostTensor(dtype: DType, shape: Shape, data: HostData): HostTensor {
  if (data.length !== numel(shape)) {
    throw new Error(`host tensor ${formatType({ dtype, shape })} given ${data.length} elements`);
  }
  return { type: { dtype, shape: [...shape] }, data };
}

/** The same values at another float precision (integers and bools are shared, not copied); f16 at 'f32' is rounded to f16. */
export function withPrecision(t: HostTensor, precision: Precision): HostTensor {
  const info = DTYPE_INFO[t.type.dtype];
  if (!info.isFloat || info.hostArray(0, precision).constructor === t.data.constructor) return t;
  const data = info.hostArray(t.data.length, precision);
  data.set(t.data);
  return { type: t.type, data: roundOutput(t.type.dtype, data, precision) };
}

/**
 * An op's output as the device stores it: at 'f32' precision an f16 output is rounded to f16 (to
 * nearest, ties to even), in place, as a kernel's f16 store rounds the f32 it computed. Every CPU
 * reference result passes through here, so each op rounds once, where its kernel stores.
 */
export function roundOutput(dtype: DType, data: HostData, precision: Precision): HostData {
  if (dtype === 'f16' && precision === 'f32') for (let i = 0; i < data.length; i++) data[i] = roundF16(data[i]);
  return data;
}

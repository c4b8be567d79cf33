// Host tensors: data in JS typed arrays. The CPU reference runs on these, checkpoints load into them.

import { DTYPE_INFO, type HostArray } from './dtypes.ts';
import { type DType, type Shape, type TensorType, numel, formatType } from './types.ts';

/** Floats are Float32Array (f32 precision) or Float64Array (the f64 reference); bool is 0/1 bytes. */
export type HostData = HostArray;

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

/** The same values at another float precision (integers and bools are shared, not copied). */
export function withPrecision(t: HostTensor, precision: Precision): HostTensor {
  const info = DTYPE_INFO[t.type.dtype];
  if (!info.isFloat || info.hostArray(0, precision).constructor === t.data.constructor) return t;
  const data = info.hostArray(t.data.length, precision);
  data.set(t.data);
  return { type: t.type, data };
}

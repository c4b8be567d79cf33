// Host tensors: data in JS typed arrays. The CPU reference runs on these, checkpoints load into them.

import { type DType, type Shape, type TensorType, numel, formatType } from './types.ts';

/** Floats are Float32Array (f32 precision) or Float64Array (the f64 reference); bool is 0/1 bytes. */
export type HostData = Float32Array | Float64Array | Int32Array | Uint8Array;

export type Precision = 'f32' | 'f64';

export interface HostTensor {
  readonly type: TensorType;
  readonly data: HostData;
}

export function allocData(dtype: DType, n: number, precision: Precision): HostData {
  if (dtype === 'i32') return new Int32Array(n);
  if (dtype === 'bool') return new Uint8Array(n);
  return precision === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

export function hostTensor(dtype: DType, shape: Shape, data: HostData): HostTensor {
  if (data.length !== numel(shape)) {
    throw new Error(`host tensor ${formatType({ dtype, shape })} given ${data.length} elements`);
  }
  return { type: { dtype, shape: [...shape] }, data };
}

/** The same values at another float precision (integers and bools are shared, not copied). */
export function withPrecision(t: HostTensor, precision: Precision): HostTensor {
  if (t.type.dtype !== 'f32') return t;
  const want = precision === 'f64' ? Float64Array : Float32Array;
  if (t.data instanceof want) return t;
  return { type: t.type, data: want.from(t.data as ArrayLike<number>) };
}

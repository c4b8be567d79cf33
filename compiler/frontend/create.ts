// Tensors from JS data: the eager entry point (inputs, fixtures, generated tokens).

import { KilnError } from '../../ir/errors.ts';
import type { HostData, HostTensor } from '../../ir/host.ts';
import { type DType, type Shape, numel } from '../../ir/types.ts';
import { Tensor } from './tensor.ts';

/** A tensor over the given flat data (copied), e.g. tensor([1, 2, 3, 4], [2, 2], 'i32'). */
export function tensor(data: ArrayLike<number>, shape: Shape = [data.length], dtype: DType = 'f32'): Tensor {
  if (numel(shape) !== data.length) throw new KilnError('KILN_E001', `tensor data has ${data.length} elements, shape [${shape.join(',')}] needs ${numel(shape)}`);
  const typed: HostData = dtype === 'f32' ? Float32Array.from(data) : dtype === 'i32' ? Int32Array.from(data) : Uint8Array.from(data, (v) => (v ? 1 : 0));
  return new Tensor({ dtype, shape: [...shape] }, { host: { type: { dtype, shape: [...shape] }, data: typed } });
}

/** A tensor over a host tensor's data (not copied). */
export function fromHost(host: HostTensor): Tensor {
  return new Tensor(host.type, { host });
}

// Tensors from JS data: the eager entry point (inputs, fixtures, generated tokens).

import { KilnError } from '../../ir/errors.ts';
import { dtypeInfo } from '../../ir/dtypes.ts';
import type { HostData, HostTensor } from '../../ir/host.ts';
import { type DType, type Shape, numel } from '../../ir/types.ts';
import { Tensor } from './tensor.ts';

/** A tensor over the given flat data (copied), e.g. tensor([1, 2, 3, 4], [2, 2], 'i32'). */
export function tensor(data: ArrayLike<number>, shape: Shape = [data.length], dtype: DType = 'f32'): Tensor {
  if (numel(shape) !== data.length) throw new KilnError('KILN_E001', `tensor data has ${data.length} elements, shape [${shape.join(',')}] needs ${numel(shape)}`);
  const info = dtypeInfo(dtype);
  const typed: HostData = info.hostArray(data.length, 'f32');
  // A truth value (neither float nor int) stores 1 for any nonzero number.
  for (let i = 0; i < data.length; i++) typed[i] = info.isFloat || info.isInt ? data[i] : data[i] ? 1 : 0;
  return new Tensor({ dtype, shape: [...shape] }, { host: { type: { dtype, shape: [...shape] }, data: typed } });
}

/** A tensor over a host tensor's data (not copied). */
export function fromHost(host: HostTensor): Tensor {
  return new Tensor(host.type, { host });
}

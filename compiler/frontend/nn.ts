// torch.nn layers nanoGPT uses, with PyTorch's default initialization.

import { dtypeInfo } from '../../ir/dtypes.ts';
import { type DType, type Shape, numel } from '../../ir/types.ts';
import * as F from './functional.ts';
import { Module, Parameter } from './module.ts';
import { randn, random } from './random.ts';
import type { Tensor } from './tensor.ts';

/** A parameter filled by `init(i)` for each element. */
export function parameter(shape: Shape, init: (i: number) => number, dtype: DType = 'f32'): Parameter {
  const data = dtypeInfo(dtype).hostArray(numel(shape), 'f32');
  for (let i = 0; i < data.length; i++) data[i] = init(i);
  return new Parameter({ type: { dtype, shape: [...shape] }, data });
}

export const normalInit = (std: number, mean = 0) => () => mean + std * randn();
export const uniformInit = (bound: number) => () => (2 * random() - 1) * bound;
export const constantInit = (value: number) => () => value;

export class Linear extends Module {
  weight: Parameter;
  bias: Parameter | null;
  constructor(inFeatures: number, outFeatures: number, bias = true) {
    super();
    const bound = 1 / Math.sqrt(inFeatures); // kaiming_uniform(a=sqrt(5)) as torch's default
    this.weight = parameter([outFeatures, inFeatures], uniformInit(bound));
    this.bias = bias ? parameter([outFeatures], uniformInit(bound)) : null;
  }
  forward(x: Tensor): Tensor {
    return F.linear(x, this.weight, this.bias);
  }
}

/** LayerNorm over the last dim, with an optional bias (nanoGPT's own LayerNorm). */
export class LayerNorm extends Module {
  weight: Parameter;
  bias: Parameter | null;
  constructor(ndim: number, bias = true, readonly eps = 1e-5) {
    super();
    this.weight = parameter([ndim], constantInit(1));
    this.bias = bias ? parameter([ndim], constantInit(0)) : null;
  }
  forward(x: Tensor): Tensor {
    return F.layerNorm(x, this.weight, this.bias, this.eps);
  }
}

export class Embedding extends Module {
  weight: Parameter;
  constructor(numEmbeddings: number, embeddingDim: number) {
    super();
    this.weight = parameter([numEmbeddings, embeddingDim], normalInit(1));
  }
  forward(idx: Tensor): Tensor {
    return F.embedding(idx, this.weight);
  }
}

export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
  }
  forward(x: Tensor): Tensor {
    return F.dropout(x, this.p, this.training);
  }
}

/** Exact GELU (erf form), nanoGPT's choice. */
export class GELU extends Module {
  forward(x: Tensor): Tensor {
    return F.gelu(x);
  }
}

export { Module, ModuleDict, ModuleList, Parameter } from './module.ts';

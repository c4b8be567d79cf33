// WGSL lowerings of the ops that move data without arithmetic (ir/ops/shape.ts): permute and
// transpose, slice, tril/triu. reshape is an alias and gets no kernel.

import { intAttr, dimAttr } from '../../ir/ops/check.ts';
import { permutationOf, sliceBounds } from '../../ir/ops/shape.ts';
import { type TensorType, stridesOf } from '../../ir/types.ts';
import { constDecl, generateKernel, stridedCopyKernel, zeroLiteral } from './helpers.ts';
import type { Lowering } from './plan.ts';

const permute = (op: 'permute' | 'transpose'): Lowering => (req) => {
  const x = req.inputs[0] as TensorType;
  const strides = stridesOf(x.shape);
  return stridedCopyKernel(req, permutationOf(op, req.attrs, x.shape.length).map((p) => strides[p]), 0);
};

const triangle = (op: 'tril' | 'triu'): Lowering => ({ attrs, out }) => {
  const [rows, cols] = out.shape.slice(-2);
  const lines = [
    'let row = i32((gid / params.cols) % params.rows);',
    'let col = i32(gid % params.cols);',
    `out[gid] = select(${zeroLiteral(out.dtype)}, x[gid], ${op === 'tril' ? 'col - row <= DIAGONAL' : 'col - row >= DIAGONAL'});`,
  ];
  return generateKernel(out, { rows, cols }, ['x'], constDecl('DIAGONAL', 'i32', intAttr(op, attrs, 'diagonal', 0)), lines);
};

export const shapeLowerings: Record<string, Lowering> = {
  transpose: permute('transpose'),
  permute: permute('permute'),
  slice(req) {
    const x = req.inputs[0] as TensorType;
    const dim = dimAttr('slice', req.attrs, 'dim', x.shape.length);
    const { start, step } = sliceBounds(req.attrs, x.shape[dim]);
    const strides = stridesOf(x.shape);
    const src = [...strides];
    src[dim] *= step;
    return stridedCopyKernel(req, src, start * strides[dim]);
  },
  tril: triangle('tril'),
  triu: triangle('triu'),
};

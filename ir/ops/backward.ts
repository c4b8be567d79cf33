// Ops that gradients make: scatters that no forward op composes, and concat.

import { checkIndices } from '../bounds.ts';
import { KilnError } from '../errors.ts';
import { type HostTensor, allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import { type TensorType, formatType, numel, sameShape, stridesOf } from '../types.ts';
import { arity, dimAttr, expectDType, floatDType, intAttr, intListAttr, tensorArg, tensorData } from './check.ts';
import { embeddingIndices } from './linalg.ts';
import { sliceBounds } from './shape.ts';

// embedding_backward(grad[..., C], idx[...]) {num}: [num, C] of grad's dtype, row r = sum of grad rows whose
// index is r (scatter-add), in token order. At 'f32' precision the sums run in the f32 host array, as
// the kernel sums in f32, and an f16 result is rounded once at the end (roundOutput), as it stores.
registerOp({
  name: 'embedding_backward',
  infer(inputs, attrs) {
    arity('embedding_backward', inputs, 2);
    const grad = tensorArg('embedding_backward', inputs, 0);
    const idx = tensorArg('embedding_backward', inputs, 1);
    const dtype = floatDType('embedding_backward', grad);
    expectDType('embedding_backward', idx, 'i32');
    const num = intAttr('embedding_backward', attrs, 'num');
    if (!sameShape(grad.shape.slice(0, -1), idx.shape)) {
      throw new KilnError('KILN_E001', `embedding_backward grad ${formatType(grad)} does not match indices ${formatType(idx)}`);
    }
    return { dtype, shape: [num, grad.shape[grad.shape.length - 1]] };
  },
  cpu(inputs, _attrs, out, precision) {
    const grad = tensorData(inputs[0]);
    const idx = tensorData(inputs[1]);
    const [rows, c] = out.shape;
    checkIndices(idx, embeddingIndices(rows, (inputs[1] as HostTensor).type));
    const result = allocData(out.dtype, numel(out.shape), precision);
    for (let i = 0; i < idx.length; i++) {
      const r = idx[i];
      for (let j = 0; j < c; j++) result[r * c + j] += grad[i * c + j];
    }
    return result;
  },
  indices: (inputs, attrs) => embeddingIndices(intAttr('embedding_backward', attrs, 'num'), inputs[1]),
});

// slice_backward(grad) {shape, dim, start, end, step}: zeros of `shape` with `grad` written where slice(x) {dim, start, end, step} read.
registerOp({
  name: 'slice_backward',
  infer(inputs, attrs) {
    arity('slice_backward', inputs, 1);
    const grad = tensorArg('slice_backward', inputs, 0);
    const shape = intListAttr('slice_backward', attrs, 'shape');
    const dim = dimAttr('slice_backward', attrs, 'dim', shape.length);
    const { start, end, step } = sliceBounds(attrs, shape[dim]);
    const sliced = shape.map((d, i) => (i === dim ? Math.ceil((end - start) / step) : d));
    if (!sameShape(sliced, grad.shape)) {
      throw new KilnError('KILN_E001', `slice_backward grad ${formatType(grad)} is not the slice's shape [${sliced.join(',')}]`);
    }
    return { dtype: grad.dtype, shape: [...shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const grad = tensorData(inputs[0]);
    const dim = dimAttr('slice_backward', attrs, 'dim', out.shape.length);
    const { start, step } = sliceBounds(attrs, out.shape[dim]);
    const strides = stridesOf(out.shape);
    const gradShape = (inputs[0] as { type: TensorType }).type.shape;
    const result = allocData(out.dtype, numel(out.shape), precision);
    const rank = gradShape.length;
    const idx = new Array<number>(rank).fill(0);
    for (let i = 0; i < grad.length; i++) {
      let dst = 0;
      for (let d = 0; d < rank; d++) dst += (d === dim ? start + idx[d] * step : idx[d]) * strides[d];
      result[dst] = grad[i];
      for (let d = rank - 1; d >= 0; d--) {
        if (++idx[d] < gradShape[d]) break;
        idx[d] = 0;
      }
    }
    return result;
  },
  flops: () => 0, // a scatter into zeros: computes nothing
});

/** Most operands one concat kernel binds (WebGPU guarantees 8 storage buffers a stage, the output included). */
export const MAX_CONCAT_INPUTS = 6;

// concat(x0, ..., xn) {dim}: torch.cat. Autograd makes it where the gradients of disjoint slices that
// tile a tensor meet (nanoGPT's q, k, v split of c_attn's output): one kernel writing each part once,
// instead of a zero-padded tensor per slice and their sum.
registerOp({
  name: 'concat',
  infer(inputs, attrs) {
    arity('concat', inputs, 1, MAX_CONCAT_INPUTS);
    const first = tensorArg('concat', inputs, 0);
    const dim = dimAttr('concat', attrs, 'dim', first.shape.length);
    let size = 0;
    for (let i = 0; i < inputs.length; i++) {
      const t = tensorArg('concat', inputs, i);
      const same = t.dtype === first.dtype && t.shape.length === first.shape.length && t.shape.every((d, k) => k === dim || d === first.shape[k]);
      if (!same) throw new KilnError('KILN_E001', `concat along dim ${dim}: ${formatType(t)} does not match ${formatType(first)}`);
      size += t.shape[dim];
    }
    return { dtype: first.dtype, shape: first.shape.map((d, k) => (k === dim ? size : d)) };
  },
  cpu(inputs, attrs, out, precision) {
    const dim = dimAttr('concat', attrs, 'dim', out.shape.length);
    const result = allocData(out.dtype, numel(out.shape), precision);
    const outer = numel(out.shape.slice(0, dim));
    const inner = numel(out.shape.slice(dim + 1));
    let offset = 0;
    for (const x of inputs) {
      const t = x as { type: TensorType; data: ArrayLike<number> };
      const rows = t.type.shape[dim] * inner;
      for (let o = 0; o < outer; o++) {
        for (let k = 0; k < rows; k++) result[o * out.shape[dim] * inner + offset + k] = t.data[o * rows + k];
      }
      offset += rows;
    }
    return result;
  },
  flops: () => 0,
  // Each input's gradient is its part of the output's.
  grad: (ctx) => {
    const dim = ctx.node.attrs.dim as number;
    let start = 0;
    return ctx.node.inputs.map((x, k) => {
      const size = (x as { type: TensorType }).type.shape[dimAttr('concat', ctx.node.attrs, 'dim', ctx.node.type.shape.length)];
      const part = ctx.needs(k) ? ctx.add('slice', [ctx.grad], { dim, start, end: start + size, step: 1 }) : null;
      start += size;
      return part;
    });
  },
});

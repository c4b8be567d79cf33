// Ops that only gradients make: scatters that no forward op composes.

import { KilnError } from '../errors.ts';
import { allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import { type TensorType, formatType, numel, sameShape, stridesOf } from '../types.ts';
import { arity, dimAttr, expectDType, intAttr, intListAttr, tensorArg, tensorData } from './check.ts';
import { sliceBounds } from './shape.ts';
import { embeddingBackwardKernel, sliceBackwardKernel } from './backward.wgsl.ts';

// embedding_backward(grad[..., C], idx[...]) {num}: f32[num, C], row r = sum of grad rows whose index is r (scatter-add).
registerOp({
  name: 'embedding_backward',
  infer(inputs, attrs) {
    arity('embedding_backward', inputs, 2);
    const grad = tensorArg('embedding_backward', inputs, 0);
    const idx = tensorArg('embedding_backward', inputs, 1);
    expectDType('embedding_backward', grad, 'f32');
    expectDType('embedding_backward', idx, 'i32');
    const num = intAttr('embedding_backward', attrs, 'num');
    if (!sameShape(grad.shape.slice(0, -1), idx.shape)) {
      throw new KilnError('KILN_E001', `embedding_backward grad ${formatType(grad)} does not match indices ${formatType(idx)}`);
    }
    return { dtype: 'f32', shape: [num, grad.shape[grad.shape.length - 1]] };
  },
  cpu(inputs, _attrs, out, precision) {
    const grad = tensorData(inputs[0]);
    const idx = tensorData(inputs[1]);
    const [rows, c] = out.shape;
    const result = allocData('f32', numel(out.shape), precision);
    for (let i = 0; i < idx.length; i++) {
      const r = idx[i];
      if (r < 0 || r >= rows) throw new KilnError('KILN_E011', `embedding index ${r} is outside [0, ${rows})`);
      for (let j = 0; j < c; j++) result[r * c + j] += grad[i * c + j];
    }
    return result;
  },
  wgsl: (req) => embeddingBackwardKernel(req),
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
  wgsl(req) {
    const dim = dimAttr('slice_backward', req.attrs, 'dim', req.out.shape.length);
    const { start, step } = sliceBounds(req.attrs, req.out.shape[dim]);
    return sliceBackwardKernel(req, dim, start, step);
  },
});

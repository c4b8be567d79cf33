// Ops that move data without arithmetic: reshape (an alias), permute and transpose, slice, tril/triu.

import type { GradContext } from '../autograd.ts';
import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { type HostData, allocData } from '../host.ts';
import { type CpuOperand, registerOp } from '../registry.ts';
import { type Shape, type TensorType, formatType, normalizeDim, numel, stridesOf } from '../types.ts';
import { arity, dimAttr, intAttr, intListAttr, tensorArg } from './check.ts';

function input0(inputs: readonly CpuOperand[]): { type: TensorType; data: HostData } {
  const x = inputs[0];
  if (typeof x === 'number') throw new Error('expected a tensor');
  return x;
}

// reshape(x) {shape}: same elements, another shape; storage is shared (torch view/reshape).
registerOp({
  name: 'reshape',
  alias: () => true,
  infer(inputs, attrs) {
    arity('reshape', inputs, 1);
    const x = tensorArg('reshape', inputs, 0);
    const shape = intListAttr('reshape', attrs, 'shape');
    if (shape.some((d) => d < 0) || numel(shape) !== numel(x.shape)) {
      throw new KilnError('KILN_E001', `cannot reshape ${formatType(x)} to [${shape.join(',')}]: ${numel(x.shape)} elements vs ${numel(shape)}`);
    }
    return { dtype: x.dtype, shape };
  },
  cpu: (inputs) => input0(inputs).data,
  flops: () => 0, // a view: no kernel at all
  grad: (ctx) => [ctx.needs(0) ? ctx.add('reshape', [ctx.grad], { shape: [...inputType(ctx).shape] }) : null],
});

function inputType(ctx: GradContext): TensorType {
  return (ctx.node.inputs[0] as { type: TensorType }).type;
}

/** The permutation a `permute` or `transpose` node applies. */
export function permutationOf(op: 'permute' | 'transpose', attrs: Attrs, rank: number): number[] {
  if (op === 'permute') {
    const dims = intListAttr(op, attrs, 'dims').map((d) => normalizeDim(d, rank));
    if (dims.length !== rank || dims.some((d) => d === null) || new Set(dims).size !== rank) {
      throw new KilnError('KILN_E011', `permute dims ${JSON.stringify(attrs.dims)} are not a permutation of ${rank} dims`);
    }
    return dims as number[];
  }
  const a = dimAttr(op, attrs, 'dim0', rank);
  const b = dimAttr(op, attrs, 'dim1', rank);
  const perm = [...Array(rank).keys()];
  [perm[a], perm[b]] = [perm[b], perm[a]];
  return perm;
}

/** Copies `x` into the layout of `out`, where out index i reads x at sum(idx[d] * srcStrides[d]) + offset. */
export function stridedCopy(x: HostData, outShape: Shape, srcStrides: readonly number[], offset: number, out: HostData): void {
  const rank = outShape.length;
  const n = numel(outShape);
  const idx = new Array<number>(rank).fill(0);
  let src = offset;
  for (let i = 0; i < n; i++) {
    out[i] = x[src];
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      src += srcStrides[d];
      if (idx[d] < outShape[d]) break;
      src -= srcStrides[d] * idx[d];
      idx[d] = 0;
    }
  }
}

function permuteOp(op: 'permute' | 'transpose'): void {
  registerOp({
    name: op,
    infer(inputs, attrs) {
      arity(op, inputs, 1);
      const x = tensorArg(op, inputs, 0);
      const perm = permutationOf(op, attrs, x.shape.length);
      return { dtype: x.dtype, shape: perm.map((p) => x.shape[p]) };
    },
    cpu(inputs, attrs, out, precision) {
      const x = input0(inputs);
      const perm = permutationOf(op, attrs, x.type.shape.length);
      const strides = stridesOf(x.type.shape);
      const result = allocData(out.dtype, numel(out.shape), precision);
      stridedCopy(x.data, out.shape, perm.map((p) => strides[p]), 0, result);
      return result;
    },
    flops: () => 0, // a copy: moves data, computes nothing
    // The gradient moves back by the inverse permutation.
    grad(ctx) {
      if (!ctx.needs(0)) return [null];
      const perm = permutationOf(op, ctx.node.attrs, ctx.node.type.shape.length);
      return [ctx.add('permute', [ctx.grad], { dims: perm.map((_, i) => perm.indexOf(i)) })];
    },
  });
}
permuteOp('transpose'); // {dim0, dim1}
permuteOp('permute'); // {dims}

/** Start, end and step of a slice node, clamped as Python slices are. */
export function sliceBounds(attrs: Attrs, size: number): { start: number; end: number; step: number } {
  const step = intAttr('slice', attrs, 'step', 1);
  if (step < 1) throw new KilnError('KILN_E011', `slice step must be positive, got ${step}`);
  const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + size : v, 0), size);
  const start = clamp(intAttr('slice', attrs, 'start', 0));
  const end = Math.max(clamp(intAttr('slice', attrs, 'end', size)), start);
  return { start, end, step };
}

// slice(x) {dim, start, end, step}: x[..., start:end:step, ...] along one dim (split, narrow, indexing).
registerOp({
  name: 'slice',
  infer(inputs, attrs) {
    arity('slice', inputs, 1);
    const x = tensorArg('slice', inputs, 0);
    const dim = dimAttr('slice', attrs, 'dim', x.shape.length);
    const { start, end, step } = sliceBounds(attrs, x.shape[dim]);
    const shape = [...x.shape];
    shape[dim] = Math.ceil((end - start) / step);
    return { dtype: x.dtype, shape };
  },
  cpu(inputs, attrs, out, precision) {
    const x = input0(inputs);
    const dim = dimAttr('slice', attrs, 'dim', x.type.shape.length);
    const { start, step } = sliceBounds(attrs, x.type.shape[dim]);
    const strides = stridesOf(x.type.shape);
    const src = [...strides];
    src[dim] *= step;
    const result = allocData(out.dtype, numel(out.shape), precision);
    stridedCopy(x.data, out.shape, src, start * strides[dim], result);
    return result;
  },
  flops: () => 0, // a copy: moves data, computes nothing
  // The gradient goes back where the slice read, zeros elsewhere.
  grad: (ctx) => [ctx.needs(0) ? ctx.add('slice_backward', [ctx.grad], { ...ctx.node.attrs, shape: [...inputType(ctx).shape] }) : null],
});

// tril(x) {diagonal} / triu(x) {diagonal}: keep the lower (upper) triangle of the last two dims, zero the rest.
function triangleOp(op: 'tril' | 'triu'): void {
  const keep = (row: number, col: number, k: number) => (op === 'tril' ? col - row <= k : col - row >= k);
  registerOp({
    name: op,
    infer(inputs, attrs) {
      arity(op, inputs, 1);
      const x = tensorArg(op, inputs, 0);
      intAttr(op, attrs, 'diagonal', 0);
      if (x.shape.length < 2) throw new KilnError('KILN_E001', `${op} needs at least 2 dims, got ${formatType(x)}`);
      return { dtype: x.dtype, shape: [...x.shape] };
    },
    cpu(inputs, attrs, out, precision) {
      const x = input0(inputs);
      const k = intAttr(op, attrs, 'diagonal', 0);
      const [rows, cols] = out.shape.slice(-2);
      const result = allocData(out.dtype, numel(out.shape), precision);
      for (let i = 0; i < result.length; i++) {
        const col = i % cols;
        const row = Math.floor(i / cols) % rows;
        result[i] = keep(row, col, k) ? x.data[i] : 0;
      }
      return result;
    },
    flops: () => 0, // a copy that zeroes a triangle: computes nothing
    grad: (ctx) => [ctx.needs(0) ? ctx.add(op, [ctx.grad], ctx.node.attrs) : null],
  });
}
triangleOp('tril');
triangleOp('triu');

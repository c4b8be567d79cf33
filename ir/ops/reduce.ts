// Reductions and row-wise ops: sum, mean, amax over dims; softmax; layer_norm; cross_entropy.

import { type GradContext, type GradRule, broadcastTo, inputGrad } from '../autograd.ts';
import { type IndexRange, checkIndices } from '../bounds.ts';
import { KilnError } from '../errors.ts';
import type { Attrs, Node } from '../graph.ts';
import { type HostData, allocData } from '../host.ts';
import { type CpuOperand, type OperandType, getOp, registerOp } from '../registry.ts';
import { type TensorType, formatType, normalizeDim, numel, sameShape } from '../types.ts';
import { arity, boolAttr, dimAttr, expectDType, floatDType, intAttr, numAttr, splitAround, tensorArg } from './check.ts';
import { FLOAT_DTYPES } from '../dtypes.ts';

function tensorIn(inputs: readonly CpuOperand[], i: number): { type: TensorType; data: HostData } {
  const x = inputs[i];
  if (typeof x === 'number') throw new Error('expected a tensor');
  return x;
}

/** Reduced dims of a sum/mean/amax node, normalized and sorted. */
export function reducedDims(op: string, attrs: Attrs, rank: number): number[] {
  const raw = attrs.dims;
  if (!Array.isArray(raw) || raw.length === 0) throw new KilnError('KILN_E011', `${op} needs a non-empty dims list`);
  const dims = raw.map((d) => normalizeDim(d, rank));
  if (dims.some((d) => d === null)) throw new KilnError('KILN_E011', `${op} dims ${JSON.stringify(raw)} out of range for rank ${rank}`);
  return [...new Set(dims as number[])].sort((a, b) => a - b);
}

function reduceOp(name: string, init: number, combine: (acc: number, x: number) => number, finish: (acc: number, n: number) => number, grad?: GradRule): void {
  registerOp({
    name,
    grad,
    infer(inputs, attrs) {
      arity(name, inputs, 1);
      const x = tensorArg(name, inputs, 0);
      expectDType(name, x, ...FLOAT_DTYPES, 'i32');
      const dims = reducedDims(name, attrs, x.shape.length);
      const keep = boolAttr(name, attrs, 'keepdim', false);
      const shape = keep ? x.shape.map((d, i) => (dims.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !dims.includes(i));
      return { dtype: name === 'mean' && x.dtype === 'i32' ? 'f32' : x.dtype, shape }; // f16 sums accumulate in f32
    },
    cpu(inputs, attrs, out, precision) {
      const x = tensorIn(inputs, 0);
      const shape = x.type.shape;
      const dims = reducedDims(name, attrs, shape.length);
      const result = allocData(out.dtype, numel(out.shape), precision);
      const acc = new Float64Array(result.length).fill(init);
      const count = dims.reduce((n, d) => n * shape[d], 1);
      // Output index of each input element: drop the reduced dims' coordinates.
      const idx = new Array<number>(shape.length).fill(0);
      for (let i = 0; i < x.data.length; i++) {
        let o = 0;
        for (let d = 0; d < shape.length; d++) if (!dims.includes(d)) o = o * shape[d] + idx[d];
        acc[o] = combine(acc[o], x.data[i]);
        for (let d = shape.length - 1; d >= 0; d--) {
          if (++idx[d] < shape[d]) break;
          idx[d] = 0;
        }
      }
      for (let o = 0; o < result.length; o++) result[o] = finish(acc[o], count);
      return result;
    },
    flops: (inputs) => numel((inputs[0] as TensorType).shape), // one combine per input element
  });
}
// sum and mean spread the gradient back over the reduced dims (mean divides it by their size).
reduceOp('sum', 0, (a, x) => a + x, (a) => a, (ctx) => [inputGrad(ctx, 0, () => spreadOverReduced(ctx, 1))]); // {dims, keepdim}
reduceOp('mean', 0, (a, x) => a + x, (a, n) => a / n, (ctx) => [inputGrad(ctx, 0, () => spreadOverReduced(ctx, 1 / reducedCount(ctx)))]);
reduceOp('amax', -Infinity, (a, x) => Math.max(a, x), (a) => a);

function reducedCount(ctx: GradContext): number {
  const x = (ctx.node.inputs[0] as Node).type;
  return reducedDims(ctx.node.op, ctx.node.attrs, x.shape.length).reduce((n, d) => n * x.shape[d], 1);
}

/** A reduction's output gradient, times `factor`, stretched back to the input's shape. */
function spreadOverReduced(ctx: GradContext, factor: number): Node {
  const x = (ctx.node.inputs[0] as Node).type;
  const dims = reducedDims(ctx.node.op, ctx.node.attrs, x.shape.length);
  const kept = ctx.add('reshape', [ctx.grad], { shape: x.shape.map((d, i) => (dims.includes(i) ? 1 : d)) });
  return broadcastTo(ctx, factor === 1 ? kept : ctx.add('mul', [kept, factor]), x.shape);
}

// softmax(x) {dim}: exp(x - max) / sum, along any dim.
registerOp({
  name: 'softmax',
  infer(inputs, attrs) {
    arity('softmax', inputs, 1);
    const x = tensorArg('softmax', inputs, 0);
    const dtype = floatDType('softmax', x);
    dimAttr('softmax', attrs, 'dim', x.shape.length);
    return { dtype, shape: [...x.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const x = tensorIn(inputs, 0);
    const dim = dimAttr('softmax', attrs, 'dim', x.type.shape.length);
    const { outer, size, inner } = splitAround(x.type.shape, dim);
    const result = allocData(out.dtype, numel(out.shape), precision);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        const at = (k: number) => o * size * inner + k * inner + j;
        let max = -Infinity;
        for (let k = 0; k < size; k++) max = Math.max(max, x.data[at(k)]);
        let sum = 0;
        for (let k = 0; k < size; k++) sum += Math.exp(x.data[at(k)] - max);
        for (let k = 0; k < size; k++) result[at(k)] = Math.exp(x.data[at(k)] - max) / sum;
      }
    }
    return result;
  },
  // dx = y * (g - sum(g * y)) along dim
  grad: (ctx) => [inputGrad(ctx, 0, () => softmaxBackward(ctx, ctx.node, ctx.grad, ctx.node.attrs.dim as number))],
  flops: (_inputs, _attrs, out) => 5 * numel(out.shape), // max, subtract, exp, sum, divide per element
});

// layer_norm(x, weight, bias?) {eps}: normalize over the last dim (nanoGPT's LayerNorm, bias optional).
registerOp({
  name: 'layer_norm',
  infer(inputs, attrs) {
    arity('layer_norm', inputs, 2, 3);
    const x = tensorArg('layer_norm', inputs, 0);
    const dtype = floatDType('layer_norm', x);
    numAttr('layer_norm', attrs, 'eps');
    const c = x.shape[x.shape.length - 1];
    for (let i = 1; i < inputs.length; i++) {
      const p = tensorArg('layer_norm', inputs, i);
      floatDType('layer_norm', x, p);
      if (!sameShape(p.shape, [c])) throw new KilnError('KILN_E001', `layer_norm ${i === 1 ? 'weight' : 'bias'} is ${formatType(p)}, expected ${dtype}[${c}] for input ${formatType(x)}`);
    }
    return { dtype, shape: [...x.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const x = tensorIn(inputs, 0);
    const w = tensorIn(inputs, 1).data;
    const b = inputs.length > 2 ? tensorIn(inputs, 2).data : null;
    const eps = attrs.eps as number;
    const c = x.type.shape[x.type.shape.length - 1];
    const result = allocData(out.dtype, numel(out.shape), precision);
    for (let r = 0; r < result.length / c; r++) {
      let mean = 0;
      for (let k = 0; k < c; k++) mean += x.data[r * c + k];
      mean /= c;
      let variance = 0;
      for (let k = 0; k < c; k++) variance += (x.data[r * c + k] - mean) ** 2;
      variance /= c;
      const inv = 1 / Math.sqrt(variance + eps);
      for (let k = 0; k < c; k++) result[r * c + k] = (x.data[r * c + k] - mean) * inv * w[k] + (b ? b[k] : 0);
    }
    return result;
  },
  grad: layerNormGrad,
  flops: (_inputs, _attrs, out) => 8 * numel(out.shape), // mean, variance (sub, square, sum), normalize, scale, shift
});

// layer_norm_backward(x, weight, g) {eps}: layer_norm's input gradient in one pass per row. With
// xhat = (x - mean) * rstd and gy = g * weight: dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)).
// Only gradients make it (layerNormGrad); the weight's and bias's gradients are column sums.
registerOp({
  name: 'layer_norm_backward',
  infer(inputs, attrs) {
    arity('layer_norm_backward', inputs, 3);
    const [x, w, g] = [0, 1, 2].map((i) => tensorArg('layer_norm_backward', inputs, i));
    const dtype = floatDType('layer_norm_backward', x, w, g);
    numAttr('layer_norm_backward', attrs, 'eps');
    const c = x.shape[x.shape.length - 1];
    if (!sameShape(w.shape, [c]) || !sameShape(g.shape, x.shape)) {
      throw new KilnError('KILN_E001', `layer_norm_backward needs weight ${dtype}[${c}] and a gradient of ${formatType(x)}, got ${formatType(w)} and ${formatType(g)}`);
    }
    return { dtype, shape: [...x.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const [x, w, g] = [0, 1, 2].map((i) => tensorIn(inputs, i).data);
    const eps = attrs.eps as number;
    const c = out.shape[out.shape.length - 1];
    const result = allocData(out.dtype, numel(out.shape), precision);
    for (let r = 0; r < result.length / c; r++) {
      const at = r * c;
      let mean = 0;
      for (let k = 0; k < c; k++) mean += x[at + k];
      mean /= c;
      let variance = 0;
      for (let k = 0; k < c; k++) variance += (x[at + k] - mean) ** 2;
      const rstd = 1 / Math.sqrt(variance / c + eps);
      let gyMean = 0;
      let gyXhatMean = 0;
      for (let k = 0; k < c; k++) {
        const gy = g[at + k] * w[k];
        gyMean += gy;
        gyXhatMean += gy * (x[at + k] - mean) * rstd;
      }
      gyMean /= c;
      gyXhatMean /= c;
      for (let k = 0; k < c; k++) result[at + k] = rstd * (g[at + k] * w[k] - gyMean - (x[at + k] - mean) * rstd * gyXhatMean);
    }
    return result;
  },
  flops: (_inputs, _attrs, out) => 14 * numel(out.shape),
});

/** Row r's -log softmax at target t, in f64 (the CPU reference of both cross-entropy ops; they check the targets first). */
function rowLoss(logits: HostData, r: number, c: number, t: number): number {
  let max = -Infinity;
  for (let k = 0; k < c; k++) max = Math.max(max, logits[r * c + k]);
  let sum = 0;
  for (let k = 0; k < c; k++) sum += Math.exp(logits[r * c + k] - max);
  return Math.log(sum) + max - logits[r * c + t];
}

/** Both cross-entropy ops' targets: classes of the logits' rows, or the ignoreIndex. */
function crossEntropyIndices(inputs: readonly OperandType[], attrs: Attrs): IndexRange {
  const [logits, targets] = inputs as TensorType[];
  return { op: 'cross_entropy', noun: 'target', operand: 1, size: logits.shape[1], shape: targets.shape, ignore: intAttr('cross_entropy', attrs, 'ignoreIndex', -100) };
}

// cross_entropy(logits[N,C], targets[N]) {ignoreIndex}: mean of -log softmax at the target, over kept rows.
registerOp({
  name: 'cross_entropy',
  infer(inputs, attrs) {
    arity('cross_entropy', inputs, 2);
    const logits = tensorArg('cross_entropy', inputs, 0);
    const targets = tensorArg('cross_entropy', inputs, 1);
    if (logits.dtype !== 'f32') throw new KilnError('KILN_E002', `cross_entropy computes the loss in f32 and takes f32 logits, got ${formatType(logits)}; cast them with .float() (autocast does)`);
    expectDType('cross_entropy', targets, 'i32');
    intAttr('cross_entropy', attrs, 'ignoreIndex', -100);
    if (logits.shape.length !== 2 || targets.shape.length !== 1 || logits.shape[0] !== targets.shape[0]) {
      throw new KilnError('KILN_E001', `cross_entropy expects logits [N,C] and targets [N], got ${formatType(logits)} and ${formatType(targets)}`);
    }
    return { dtype: 'f32', shape: [] };
  },
  cpu(inputs, attrs, _out, precision) {
    const logits = tensorIn(inputs, 0);
    const targets = tensorIn(inputs, 1).data;
    const ignore = intAttr('cross_entropy', attrs, 'ignoreIndex', -100);
    const [n, c] = logits.type.shape;
    checkIndices(targets, crossEntropyIndices([logits.type, tensorIn(inputs, 1).type], attrs));
    let total = 0;
    let kept = 0;
    for (let r = 0; r < n; r++) {
      const t = targets[r];
      if (t === ignore) continue;
      total += rowLoss(logits.data, r, c, t);
      kept++;
    }
    const result = allocData('f32', 1, precision);
    result[0] = total / kept; // NaN when every target is ignored, as PyTorch
    return result;
  },
  indices: crossEntropyIndices,
  grad: crossEntropyGrad,
  flops: (inputs) => 5 * numel((inputs[0] as TensorType).shape), // a log-softmax over each row of logits [N, C]
});

// cross_entropy_rows(logits[N,C], targets[N]) {ignoreIndex}: each row's -log softmax at its target,
// 0 where the target is ignored. What the cross_entropy_rows pass turns a big cross_entropy into
// (with the mean over kept rows as a sum and a count), so the rows spread over the GPU.
registerOp({
  name: 'cross_entropy_rows',
  infer(inputs, attrs) {
    const loss = getOp('cross_entropy').infer(inputs, attrs);
    if (loss.shape.length !== 0) throw new Error('cross_entropy gave a non-scalar');
    return { dtype: 'f32', shape: [(inputs[1] as TensorType).shape[0]] };
  },
  cpu(inputs, attrs, _out, precision) {
    const logits = tensorIn(inputs, 0);
    const targets = tensorIn(inputs, 1).data;
    const ignore = intAttr('cross_entropy_rows', attrs, 'ignoreIndex', -100);
    const [n, c] = logits.type.shape;
    checkIndices(targets, crossEntropyIndices([logits.type, tensorIn(inputs, 1).type], attrs));
    const result = allocData('f32', n, precision);
    for (let r = 0; r < n; r++) {
      const t = targets[r];
      if (t === ignore) continue;
      result[r] = rowLoss(logits.data, r, c, t);
    }
    return result;
  },
  indices: crossEntropyIndices,
  flops: (inputs) => 5 * numel((inputs[0] as TensorType).shape),
});

/** The gradient of softmax's input from its output `y` and the output gradient `g`, along `dim`. */
export function softmaxBackward(ctx: GradContext, y: Node, g: Node, dim: number): Node {
  const dot = ctx.add('sum', [ctx.add('mul', [g, y])], { dims: [dim], keepdim: true });
  return ctx.add('mul', [y, ctx.add('sub', [g, dot])]);
}

// With xhat = (x - mean) * rstd over the last dim and gy = g * weight:
// dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)), dweight = sum(g * xhat), dbias = sum(g).
// dx is one layer_norm_backward kernel; dweight = sum(g * xhat) over rows, xhat = layer_norm(x, ones);
// dbias = sum(g) over rows (the sums are inputGrad's unbroadcast).
function layerNormGrad(ctx: GradContext): (Node | null)[] {
  const [x, weight] = ctx.node.inputs as Node[];
  const eps = ctx.node.attrs.eps as number;
  const g = ctx.grad;
  const xhat = () => ctx.add('layer_norm', [x, ctx.add('full', [], { value: 1, dtype: x.type.dtype, shape: [...weight.type.shape] })], { eps });
  return [
    inputGrad(ctx, 0, () => ctx.add('layer_norm_backward', [x, weight, g], { eps })),
    inputGrad(ctx, 1, () => ctx.add('mul', [g, xhat()])),
    inputGrad(ctx, 2, () => g),
  ];
}

// dlogits = (softmax(logits) - onehot(targets)) * kept / count(kept) * g, where kept rows are those not ignored.
function crossEntropyGrad(ctx: GradContext): (Node | null)[] {
  const [logits, targets] = ctx.node.inputs as Node[];
  const [n, c] = logits.type.shape;
  const ignore = intAttr('cross_entropy', ctx.node.attrs, 'ignoreIndex', -100);
  const make = () => {
    const column = ctx.add('reshape', [targets], { shape: [n, 1] });
    const classes = ctx.add('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [c] });
    const onehot = ctx.add('cast', [ctx.add('eq', [column, classes])], { dtype: 'f32' });
    const kept = ctx.add('cast', [ctx.add('ne', [column, ignore])], { dtype: 'f32' });
    const count = ctx.add('sum', [kept], { dims: [0, 1], keepdim: false });
    const probs = ctx.add('softmax', [logits], { dim: 1 });
    const perRow = ctx.add('div', [ctx.add('mul', [ctx.add('sub', [probs, onehot]), kept]), count]);
    return ctx.add('mul', [perRow, ctx.grad]);
  };
  return [inputGrad(ctx, 0, make), null];
}

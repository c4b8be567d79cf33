// Fused linear + cross-entropy (Liger-Kernel's FusedLinearCrossEntropy): the loss of lm_head's logits
// x @ w^T against the targets, without the [N, V] logits. passes/linear-ce.ts makes the forward node
// from matmul -> cross_entropy; its gradient rule gives one node per input gradient; in the lowered
// stage the same pass unrolls all three over chunks of rows (what the kernels run). The references
// here compute each row's logits in f64 and are the meaning of the ops.
//
//   fused_linear_cross_entropy(x[N,C], w[V,C], targets[N]) {ignoreIndex} -> f32[]  mean over kept rows
//   fused_linear_cross_entropy_dx(x, w, targets, g[]) {ignoreIndex} -> dx [N,C]: (softmax - onehot) @ w * g / kept
//   fused_linear_cross_entropy_dw(x, w, targets, g[]) {ignoreIndex} -> dw [V,C]: (softmax - onehot)^T @ x * g / kept
//   logsumexp_rows(logits[n,V]) -> f32[n]                              one chunk's per-row log-sum-exp
//   accumulate(acc f32, part f32|f16) -> f32                           dw's running sum over chunks
//   kept_targets(targets[N]) {ignoreIndex, classes} -> f32[]           the count the mean divides by

import { type GradContext, inputGrad } from '../autograd.ts';
import { type IndexRange, checkIndices } from '../bounds.ts';
import { DTYPE_INFO } from '../dtypes.ts';
import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { type HostData, allocData } from '../host.ts';
import { type CpuOperand, type OperandType, registerOp } from '../registry.ts';
import { type TensorType, formatType, numel } from '../types.ts';
import { arity, expectDType, floatDType, intAttr, tensorArg } from './check.ts';

export const LINEAR_CE_OPS = {
  loss: 'fused_linear_cross_entropy',
  dx: 'fused_linear_cross_entropy_dx',
  dw: 'fused_linear_cross_entropy_dw',
} as const;

/** nanoGPT's ignore_index is -1; PyTorch's default is -100. */
const DEFAULT_IGNORE = -100;

export function ignoreIndexOf(op: string, attrs: Attrs): number {
  return intAttr(op, attrs, 'ignoreIndex', DEFAULT_IGNORE);
}

/** The shapes of x [N, C], w [V, C], targets [N] (and g [] for the gradients), checked; N, C, V and the float dtype. */
export function linearCeDims(op: string, inputs: readonly OperandType[], withGrad: boolean): { n: number; c: number; v: number; x: TensorType; w: TensorType } {
  arity(op, inputs, withGrad ? 4 : 3);
  const [x, w, targets] = [0, 1, 2].map((i) => tensorArg(op, inputs, i));
  floatDType(op, x, w);
  expectDType(op, targets, 'i32');
  const fits = x.shape.length === 2 && w.shape.length === 2 && targets.shape.length === 1 && x.shape[1] === w.shape[1] && targets.shape[0] === x.shape[0];
  if (!fits) throw new KilnError('KILN_E001', `${op} expects x [N,C], w [V,C] and targets [N], got ${formatType(x)}, ${formatType(w)} and ${formatType(targets)}`);
  if (withGrad) {
    const g = tensorArg(op, inputs, 3);
    if (g.dtype !== 'f32' || g.shape.length !== 0) throw new KilnError('KILN_E001', `${op} takes the loss's gradient as f32[], got ${formatType(g)}`);
  }
  return { n: x.shape[0], c: x.shape[1], v: w.shape[0], x, w };
}

function indexRange(op: string) {
  return (inputs: readonly OperandType[], attrs: Attrs): IndexRange => {
    const [, w, targets] = inputs as TensorType[];
    return { op: 'cross_entropy', noun: 'target', operand: 2, size: w.shape[0], shape: targets.shape, ignore: ignoreIndexOf(op, attrs) };
  };
}

const dataOf = (inputs: readonly CpuOperand[], i: number): HostData => {
  const t = inputs[i];
  if (typeof t === 'number') throw new Error('expected a tensor');
  return t.data;
};

/**
 * Calls `visit(r, logits, lse)` for each kept row with its logits x[r] @ w^T and log-sum-exp in f64,
 * after checking the targets; returns the number of kept rows.
 */
function eachKeptRow(op: string, inputs: readonly CpuOperand[], attrs: Attrs, visit: (r: number, logits: Float64Array, lse: number, target: number) => void): number {
  const { n, c, v } = linearCeDims(op, inputs.map((t) => (typeof t === 'number' ? t : t.type)), inputs.length === 4);
  const [x, w, targets] = [0, 1, 2].map((i) => dataOf(inputs, i));
  const ignore = ignoreIndexOf(op, attrs);
  checkIndices(targets, indexRange(op)(inputs.map((t) => (typeof t === 'number' ? t : t.type)), attrs));
  const logits = new Float64Array(v);
  let kept = 0;
  for (let r = 0; r < n; r++) {
    const t = targets[r];
    if (t === ignore) continue;
    let max = -Infinity;
    for (let j = 0; j < v; j++) {
      let dot = 0;
      for (let k = 0; k < c; k++) dot += x[r * c + k] * w[j * c + k];
      logits[j] = dot;
      max = Math.max(max, dot);
    }
    let sum = 0;
    for (let j = 0; j < v; j++) sum += Math.exp(logits[j] - max);
    visit(r, logits, Math.log(sum) + max, t);
    kept++;
  }
  return kept;
}

/** d loss / d logits of row r, times g / kept: (softmax - onehot) * scale, written over `logits`. */
function rowGradient(logits: Float64Array, lse: number, target: number, scale: number): Float64Array {
  for (let j = 0; j < logits.length; j++) logits[j] = (Math.exp(logits[j] - lse) - (j === target ? 1 : 0)) * scale;
  return logits;
}

/** The scale of every kept row's gradient: g / the number of kept rows. */
function gradScale(op: string, inputs: readonly CpuOperand[], attrs: Attrs): number {
  const ignore = ignoreIndexOf(op, attrs);
  const kept = Array.prototype.filter.call(dataOf(inputs, 2), (t: number) => t !== ignore).length;
  return dataOf(inputs, 3)[0] / kept; // NaN when every row is ignored, as PyTorch
}

const linearFlops = (inputs: readonly OperandType[]) => {
  const [x, w] = inputs as TensorType[];
  return 2 * x.shape[0] * x.shape[1] * w.shape[0];
};

registerOp({
  name: LINEAR_CE_OPS.loss,
  operands: ['x', 'w', 'targets'],
  infer(inputs, attrs) {
    linearCeDims(LINEAR_CE_OPS.loss, inputs, false);
    ignoreIndexOf(LINEAR_CE_OPS.loss, attrs);
    return { dtype: 'f32', shape: [] };
  },
  cpu(inputs, attrs, _out, precision) {
    let total = 0;
    const kept = eachKeptRow(LINEAR_CE_OPS.loss, inputs, attrs, (_r, logits, lse, t) => (total += lse - logits[t]));
    const result = allocData('f32', 1, precision);
    result[0] = total / kept; // NaN when every target is ignored, as PyTorch
    return result;
  },
  indices: indexRange(LINEAR_CE_OPS.loss),
  grad: linearCrossEntropyGrad,
  flops: (inputs) => linearFlops(inputs) + 5 * (inputs[0] as TensorType).shape[0] * (inputs[1] as TensorType).shape[0],
});

/**
 * dx or dw: each kept row's d = (softmax - onehot) * g / kept, times w into dx's row r (dx = d @ w), or
 * times x's row r into dw (dw = d^T @ x). The result has x's or w's type.
 */
function registerGradient(name: string, wrt: 'x' | 'w'): void {
  registerOp({
    name,
    operands: ['x', 'w', 'targets', 'g'],
    infer(inputs, attrs) {
      const dims = linearCeDims(name, inputs, true);
      ignoreIndexOf(name, attrs);
      return { dtype: dims[wrt].dtype, shape: [...dims[wrt].shape] };
    },
    cpu(inputs, attrs, out, precision) {
      const scale = gradScale(name, inputs, attrs);
      const other = dataOf(inputs, wrt === 'x' ? 1 : 0); // dx reads w, dw reads x
      const c = out.shape[1];
      const acc = new Float64Array(numel(out.shape));
      eachKeptRow(name, inputs, attrs, (r, logits, lse, t) => {
        const d = rowGradient(logits, lse, t, scale);
        for (let j = 0; j < d.length; j++) {
          for (let k = 0; k < c; k++) {
            if (wrt === 'x') acc[r * c + k] += d[j] * other[j * c + k];
            else acc[j * c + k] += d[j] * other[r * c + k];
          }
        }
      });
      const result = allocData(out.dtype, acc.length, precision);
      result.set(acc);
      return result;
    },
    indices: indexRange(name),
    flops: (inputs) => 2 * linearFlops(inputs), // the logits again, then one product with d
  });
}
registerGradient(LINEAR_CE_OPS.dx, 'x');
registerGradient(LINEAR_CE_OPS.dw, 'w');

// The gradients of x and w, each one node (the lowered stage unrolls them over chunks of rows together);
// targets get none.
function linearCrossEntropyGrad(ctx: GradContext) {
  const [x, w, targets] = ctx.node.inputs;
  const attrs = { ignoreIndex: ignoreIndexOf(ctx.node.op, ctx.node.attrs) };
  return [
    inputGrad(ctx, 0, () => ctx.add(LINEAR_CE_OPS.dx, [x, w, targets, ctx.grad], attrs)),
    inputGrad(ctx, 1, () => ctx.add(LINEAR_CE_OPS.dw, [x, w, targets, ctx.grad], attrs)),
    null,
  ];
}

// logsumexp_rows(logits[n,V]) -> f32[n]: log(sum(exp(row))), max-shifted; what a chunk's backward
// needs to turn its recomputed logits into probabilities without another pass over the row.
registerOp({
  name: 'logsumexp_rows',
  infer(inputs) {
    arity('logsumexp_rows', inputs, 1);
    const logits = tensorArg('logsumexp_rows', inputs, 0);
    expectDType('logsumexp_rows', logits, 'f32');
    if (logits.shape.length !== 2) throw new KilnError('KILN_E001', `logsumexp_rows expects logits [n,V], got ${formatType(logits)}`);
    return { dtype: 'f32', shape: [logits.shape[0]] };
  },
  cpu(inputs, _attrs, out, precision) {
    const logits = dataOf(inputs, 0);
    const [n, v] = (inputs[0] as { type: TensorType }).type.shape;
    const result = allocData(out.dtype, n, precision);
    for (let r = 0; r < n; r++) {
      let max = -Infinity;
      for (let j = 0; j < v; j++) max = Math.max(max, logits[r * v + j]);
      let sum = 0;
      for (let j = 0; j < v; j++) sum += Math.exp(logits[r * v + j] - max);
      result[r] = Math.log(sum) + max;
    }
    return result;
  },
  flops: (inputs) => 4 * numel((inputs[0] as TensorType).shape),
});

// accumulate(acc, part) -> acc + part, f32 of acc's shape, the part f32 or f16 (widened, so autocast's
// f16 parts of dw sum in f32 without a cast kernel each): the chunked dw's running sum. An add would do
// the same, but elementwise fusion would join the chain of adds into kernels of up to six partial dw's,
// each [V, C], all alive at once; this op is no elementwise op, so each partial dies once it is added.
registerOp({
  name: 'accumulate',
  operands: ['acc', 'part'],
  infer(inputs) {
    arity('accumulate', inputs, 2);
    const [acc, part] = [0, 1].map((i) => tensorArg('accumulate', inputs, i));
    expectDType('accumulate', acc, 'f32');
    if (!DTYPE_INFO[part.dtype].isFloat || part.shape.length !== acc.shape.length || part.shape.some((d, i) => d !== acc.shape[i])) {
      throw new KilnError('KILN_E001', `accumulate adds a float part of the sum's shape ${formatType(acc)}, got ${formatType(part)}`);
    }
    return { dtype: 'f32', shape: [...acc.shape] };
  },
  cpu(inputs, _attrs, out, precision) {
    const [acc, part] = [dataOf(inputs, 0), dataOf(inputs, 1)];
    const result = allocData(out.dtype, acc.length, precision);
    for (let i = 0; i < acc.length; i++) result[i] = acc[i] + part[i];
    return result;
  },
  flops: (inputs) => numel((inputs[0] as TensorType).shape),
});

// kept_targets(targets[N]) {ignoreIndex, classes} -> f32[]: how many targets are not ignored, the
// chunked loss's divisor. It reads the whole targets tensor and checks it (`indices`), so a target
// outside [0, classes) fed from the host stops the step before any kernel runs (compiler/index-checks.ts),
// as the unfused cross_entropy does; the chunks' cross_entropy_rows read slices of it.
function keptTargetsRange(inputs: readonly OperandType[], attrs: Attrs): IndexRange {
  const targets = inputs[0] as TensorType;
  return { op: 'cross_entropy', noun: 'target', operand: 0, size: intAttr('kept_targets', attrs, 'classes'), shape: targets.shape, ignore: ignoreIndexOf('kept_targets', attrs) };
}

registerOp({
  name: 'kept_targets',
  operands: ['targets'],
  infer(inputs, attrs) {
    arity('kept_targets', inputs, 1);
    const targets = tensorArg('kept_targets', inputs, 0);
    expectDType('kept_targets', targets, 'i32');
    if (targets.shape.length !== 1) throw new KilnError('KILN_E001', `kept_targets expects targets [N], got ${formatType(targets)}`);
    keptTargetsRange(inputs, attrs);
    return { dtype: 'f32', shape: [] };
  },
  cpu(inputs, attrs, out, precision) {
    const targets = dataOf(inputs, 0);
    checkIndices(targets, keptTargetsRange([(inputs[0] as { type: TensorType }).type], attrs));
    const ignore = ignoreIndexOf('kept_targets', attrs);
    const result = allocData(out.dtype, 1, precision);
    result[0] = Array.prototype.filter.call(targets, (t: number) => t !== ignore).length;
    return result;
  },
  indices: keptTargetsRange,
  flops: (inputs) => numel((inputs[0] as TensorType).shape),
});

// The flash-attention backward (FlashAttention-2's): gradients of fused_attention and of sdpa
// without dropout that never hold the B*H*L*S probabilities. Two ops and one gradient rule:
// - attention_lse(q, k, mask?) {causal, scale, scaling, fill, emptyRows}: f32[..., L, 2], each query
//   row's log-sum-exp of its scaled, masked scores in two parts, base 2 (what exp2 wants): the row's
//   largest score times log2(e), M, and log2 of sum_j 2^(score_j log2(e) - M). Kept apart, they hold
//   a row whose scores are all near -1e30 (a finite fill): M + log2(S) would round to M. The forward
//   kernel computes them on the way, but a node has one output, so a second kernel recomputes them
//   (one pass over k, no v: about a third of the forward's work).
// - fused_attention_backward(q, k, v, mask?, grad_out, lse, delta, rng?) {causal, scale, scaling, fill, emptyRows, dropoutP, seed, wrt}:
//   the gradient with respect to q, k or v (`wrt`), one node each, with the probabilities
//   recomputed tile by tile as P = 2^((S log2(e) - M) - L); wrt "kv" gives dk and dv side by side, f32[..., S, D + Dv],
//   from one pass (P and dS computed once for both), which the rule slices apart. delta[..., L] = rowsum(grad_out * out) is made by
//   the rule from `mul` and `sum` (FlashAttention-2's preprocessing step): computed once for both
//   gradients that need it instead of once per tile in each kernel, and the kernels read no `out`.
// A row whose every score is -inf has M = L = -inf. With emptyRows "nan" its P is NaN, as the
// chain's softmax, and the gradients are the chain's: NaN in dV (and, through an additive mask, in dQ
// and dK); with "zero" (sdpa) P = 0, the gradient of the forward's zeros. A key the bool mask or
// causality drops passes no gradient to the scores (the chain's masked_fill): dS = 0 there, whatever P.
// The maths: dP = dO V^T, dS = P * (dP - delta),
// dQ = scale * dS K, dK = scale * dS^T Q, dV = P^T dO ("pre_qk" gives the same scores, so the same).
// In f16 (always "pre_qk") the kernels use the forward's f16-rounded sqrt(scale) q and sqrt(scale) k,
// so P is the forward's: dQ = sqrt(scale) dS f16(sqrt(scale) K), and so on. lse and delta stay f32
// (the rule casts dO and O to f32 for delta), every sum accumulates in f32, and the gradients are
// stored in f16.
// With dropout (the forward's dropoutP, seed and rng), Z the kept-and-scaled factor of each weight
// (0 or 1/(1-p), redrawn from the same hash): dV = (P Z)^T dO and dP = (dO V^T) Z; delta = rowsum(dO O)
// still equals rowsum(P dP).

import { type GradContext, inputGrad } from '../autograd.ts';
import { KilnError } from '../errors.ts';
import type { Attrs, Node } from '../graph.ts';
import { type HostData, type HostTensor, type Precision, allocData } from '../host.ts';
import { namedOperands, operandsByName } from '../operands.ts';
import { type OperandType, getOp, registerOp } from '../registry.ts';
import { type DType, type Shape, type TensorType, formatType, numel, sameShape } from '../types.ts';
import { roundF16 } from '../f16.ts';
import { type AttentionDropout, type AttentionSpec, attentionBackward, attentionDims, attentionDropout, attentionOperands, checkAttentionScaling, dropoutUniform, effectiveDropoutSeed, rngOperand, scoreReader } from './attention.ts';
import { flashBackwardFits } from './attention_backward.tiling.ts';
import { arity, expectDType, floatDType, tensorArg } from './check.ts';
import { attentionDropoutP, attentionSpec, checkAttentionMask } from './fused_attention.ts';

/** Which input a fused_attention_backward node gives the gradient of; "kv": k's and v's, concatenated along the last dim. */
export type AttentionWrt = 'q' | 'k' | 'v' | 'kv';

/** The `wrt` attr of a fused_attention_backward node. */
export function attentionWrt(attrs: Attrs): AttentionWrt {
  const wrt = attrs.wrt;
  if (wrt !== 'q' && wrt !== 'k' && wrt !== 'v' && wrt !== 'kv') throw new KilnError('KILN_E011', `fused_attention_backward wrt must be "q", "k", "v" or "kv", got ${String(wrt)}`);
  return wrt;
}

/** The operands of a fused_attention_backward node by name (`q, k, v, mask?, grad_out, lse, delta, rng?`; ir/operands.ts). */
export function backwardOperands<T>(all: readonly T[], attrs: Attrs): { q: T; k: T; v: T; mask?: T; gradOut: T; lse: T; delta: T; rng?: T } {
  const { q, k, v, mask, grad_out, lse, delta, rng } = operandsByName(getOp('fused_attention_backward'), all, attrs);
  return { q: q!, k: k!, v: v!, mask, gradOut: grad_out!, lse: lse!, delta: delta!, rng };
}


/** A score in base 2, in the interpreter's precision: the backward subtracts M from it, so both must round alike. */
function base2Score(precision: Precision): (x: number) => number {
  return precision === 'f32' ? (x) => Math.fround(x * Math.LOG2E) : (x) => x * Math.LOG2E;
}

/** Per query row, [M, L]: the largest score times log2(e), and log2(sum_j 2^(score_j log2(e) - M)); [-inf, -inf] where every score is -inf. */
function lseReference(q: HostTensor, k: HostTensor, mask: HostTensor | undefined, spec: AttentionSpec, precision: Precision): HostData {
  const [l, s] = [q.type.shape.at(-2)!, k.type.shape.at(-2)!];
  const batch = q.type.shape.slice(0, -2);
  const scores = scoreReader(q, k, mask, spec, precision, batch, l);
  const result = allocData('f32', numel(batch) * l * 2, precision);
  const row = new Float64Array(s);
  const base2 = base2Score(precision);
  for (let b = 0; b < numel(batch); b++) {
    for (let i = 0; i < l; i++) {
      scores(b, i, row);
      const max = row.reduce((a, x) => Math.max(a, base2(x)), -Infinity);
      let sum = 0;
      if (max > -Infinity) for (const x of row) sum += 2 ** (base2(x) - max);
      result.set([max, Math.log2(sum)], (b * l + i) * 2);
    }
  }
  return result;
}

/** The gradient `wrt` q, k or v (or k and v side by side), computed directly from P = exp(score - lse) row by row; `dropout` drops weight (b, i, j) as the forward did. */
function backwardReference(inputs: HostTensor[], attrs: Attrs, spec: AttentionSpec, wrt: AttentionWrt, precision: Precision, dropout?: { p: number; seed: number }): HostData {
  if (wrt === 'kv') {
    const [dk, dv] = [backwardReference(inputs, attrs, spec, 'k', precision, dropout), backwardReference(inputs, attrs, spec, 'v', precision, dropout)];
    const [d, w] = [inputs[1].type.shape.at(-1)!, inputs[2].type.shape.at(-1)!];
    const result = allocData('f32', dk.length + dv.length, precision);
    for (let row = 0; row < dk.length / d; row++) {
      result.set(dk.subarray(row * d, (row + 1) * d), row * (d + w));
      result.set(dv.subarray(row * w, (row + 1) * w), row * (d + w) + d);
    }
    return result;
  }
  const { q, k, v, mask, gradOut, lse, delta } = backwardOperands(inputs, attrs);
  const { batch, l, s, d, dv } = attentionDims(q.type, k.type, v.type);
  // Z: 0 where dropout dropped the weight, 1/(1-p) where it kept it
  const keep = (b: number, i: number, j: number) => (!dropout ? 1 : dropoutUniform(dropout.seed, (b * l + i) * s + j) < dropout.p ? 0 : 1 / (1 - dropout.p));
  const scores = scoreReader(q, k, mask, spec, precision, batch, l);
  const width = wrt === 'v' ? dv : d;
  const grad = new Float64Array(numel(batch) * (wrt === 'q' ? l : s) * width);
  const row = new Float64Array(s);
  const dropped = new Uint8Array(s);
  const base2 = base2Score(precision);
  // dS times scale times k (or q): in f16 at 'f32' precision, as the kernels weigh them, sqrt(scale)
  // times the forward's f16-rounded sqrt(scale) k.
  const root = Math.sqrt(spec.scale);
  const [dsScale, weigh] = spec.scaling === 'pre_qk' && q.type.dtype === 'f16' && precision === 'f32'
    ? [root, (x: number) => roundF16(x * Math.fround(root))]
    : [spec.scale, (x: number) => x];
  for (let b = 0; b < numel(batch); b++) {
    for (let i = 0; i < l; i++) {
      scores(b, i, row, dropped);
      const qi = b * l + i;
      const [max, logSum] = [lse.data[2 * qi], lse.data[2 * qi + 1]];
      for (let j = 0; j < s; j++) {
        // A -inf score weighs 0, but in a row of nothing else P is NaN (emptyRows "nan") or 0 ("zero").
        if (row[j] === -Infinity && (max > -Infinity || spec.emptyRows !== 'nan')) continue;
        const p = 2 ** (base2(row[j]) - max - logSum);
        const z = keep(b, i, j);
        const kj = b * s + j;
        if (wrt === 'v') {
          if (z !== 0) for (let c = 0; c < dv; c++) grad[kj * dv + c] += p * z * gradOut.data[qi * dv + c];
          continue;
        }
        if (dropped[j]) continue; // masked_fill passes the scores no gradient there
        let dp = 0;
        for (let c = 0; c < dv; c++) dp += gradOut.data[qi * dv + c] * v.data[kj * dv + c];
        dp *= z;
        const ds = p * (dp - delta.data[qi]) * dsScale;
        const [to, from, src] = wrt === 'q' ? [qi, kj, k] : [kj, qi, q];
        for (let c = 0; c < d; c++) grad[to * d + c] += ds * weigh(src.data[from * d + c]);
      }
    }
  }
  const result = allocData('f32', grad.length, precision);
  result.set(grad);
  return result;
}

/** 2·L·S·D per batch entry and product over D or Dv: q k^T for lse; q k^T, dO v^T and one update for the gradients. */
function lseFlops(inputs: readonly OperandType[], causal: boolean): number {
  const [q, k] = inputs as TensorType[];
  const [l, d] = q.shape.slice(-2);
  return (2 * numel(q.shape.slice(0, -2)) * l * k.shape.at(-2)! * d) / (causal ? 2 : 1);
}

function backwardFlops(inputs: readonly OperandType[], causal: boolean, wrt: AttentionWrt): number {
  const [q, k, v] = inputs as TensorType[]; // always the first three
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  const perPair = { q: 2 * d + dv, k: 2 * d + dv, v: d + dv, kv: 2 * (d + dv) }[wrt];
  return (2 * numel(batch) * l * s * perPair) / (causal ? 2 : 1);
}

function expectShape(op: string, what: string, t: TensorType, shape: Shape, dtype: DType = 'f32'): void {
  expectDType(op, t, dtype);
  if (!sameShape(t.shape, shape)) throw new KilnError('KILN_E001', `${op} ${what} ${formatType(t)} should be ${dtype}[${shape.join(',')}]`);
}

function checkMask(op: string, spec: AttentionSpec, mask: TensorType | undefined, scores: number[]): void {
  if (!mask) return;
  if (spec.causal) throw new KilnError('KILN_E011', `a causal ${op} reads no mask`);
  checkAttentionMask(op, mask, scores);
}

registerOp({
  name: 'attention_lse',
  operands: ['q', 'k', 'mask?'],
  flops: (inputs, attrs) => lseFlops(inputs, attrs.causal === true),
  infer(inputs, attrs) {
    arity('attention_lse', inputs, 2, 3);
    const [q, k] = [0, 1].map((i) => tensorArg('attention_lse', inputs, i));
    const { batch, l, s } = attentionDims(q, k, k);
    const dtype = floatDType('attention_lse', q, k); // the statistics are f32 whatever q and k are
    checkAttentionScaling('attention_lse', dtype, attentionSpec(attrs));
    checkMask('attention_lse', attentionSpec(attrs), inputs.length === 3 ? tensorArg('attention_lse', inputs, 2) : undefined, [...batch, l, s]);
    return { dtype: 'f32', shape: [...batch, l, 2] };
  },
  cpu(inputs, attrs, _out, precision) {
    const [q, k, mask] = inputs;
    if (typeof q === 'number' || typeof k === 'number' || typeof mask === 'number') throw new Error('attention_lse of a scalar');
    return lseReference(q, k, mask, attentionSpec(attrs), precision);
  },
});

registerOp({
  name: 'fused_attention_backward',
  operands: ['q', 'k', 'v', 'mask?', 'grad_out', 'lse', 'delta', 'rng?'],
  flops: (inputs, attrs) => backwardFlops(inputs, attrs.causal === true, attentionWrt(attrs)),
  infer(inputs, attrs) {
    const op = 'fused_attention_backward';
    arity(op, inputs, 6, 8);
    const { q, k, v, mask, gradOut, lse, delta, rng } = backwardOperands(inputs.map((_, i) => tensorArg(op, inputs, i)), attrs);
    const dropoutP = attentionDropoutP(op, attrs);
    if (rng) rngOperand(op, inputs, inputs.length - 1, dropoutP > 0);
    const dtype = floatDType(op, q, k, v);
    checkAttentionScaling(op, dtype, attentionSpec(attrs));
    const { batch, l, s, dv } = attentionDims(q, k, v);
    checkMask(op, attentionSpec(attrs), mask, [...batch, l, s]);
    expectShape(op, 'grad_out', gradOut, [...batch, l, dv], dtype);
    expectShape(op, 'lse', lse, [...batch, l, 2]);
    expectShape(op, 'delta', delta, [...batch, l]);
    const wrt = attentionWrt(attrs);
    if (wrt === 'kv') return { dtype, shape: [...batch, s, k.shape.at(-1)! + dv] };
    return { dtype, shape: [...{ q, k, v }[wrt].shape] };
  },
  cpu(inputs, attrs, _out, precision) {
    if (inputs.some((x) => typeof x === 'number')) throw new Error('fused_attention_backward of a scalar');
    const p = attentionDropoutP('fused_attention_backward', attrs);
    const { rng } = backwardOperands(inputs as HostTensor[], attrs);
    return backwardReference(inputs as HostTensor[], attrs, attentionSpec(attrs), attentionWrt(attrs), precision, p > 0 ? { p, seed: effectiveDropoutSeed(attrs, rng) } : undefined);
  },
});

/**
 * Gradients of q, k, v (and null for the mask) of an attention node whose output is softmax(q k^T
 * * scale + mask) v: attention_lse, delta, and one fused_attention_backward node per gradient
 * asked for. Head dims too wide for the backward kernels at WebGPU's default limits (the rule
 * cannot know the device) take the composed attentionBackward instead.
 */
export function flashAttentionBackward(ctx: GradContext, spec: AttentionSpec): (Node | null)[] {
  const [q, k, v] = ctx.node.inputs as Node[];
  const mask = attentionOperands(ctx.node.op as 'sdpa' | 'fused_attention', ctx.node.inputs, ctx.node.attrs).mask as Node | undefined;
  const dropout: AttentionDropout | undefined = attentionDropout(ctx.node);
  const { d, dv } = attentionDims(q.type, k.type, v.type);
  if (!flashBackwardFits(d, dv, q.type.dtype)) return attentionBackward(ctx, spec, dropout);
  // What a masked key scores and what a row of -inf gives, as the forward: the same P.
  const rows: Attrs = { ...(Number.isFinite(spec.fill) ? { fill: spec.fill! } : {}), ...(spec.emptyRows === 'nan' ? { emptyRows: 'nan' } : {}) };
  const attrs = { causal: spec.causal, scale: spec.scale, scaling: spec.scaling, ...rows };
  // The backward kernels redraw the forward's dropout bits: the same p, seed and rng.
  const dropAttrs: Attrs = dropout ? { dropoutP: dropout.attrs.p, seed: dropout.attrs.seed } : {};
  // delta is f32 whatever the dtype: an f16 dO and O are cast first, so the statistics stay f32.
  const f32 = (x: Node) => (x.type.dtype === 'f32' ? x : ctx.add('cast', [x], { dtype: 'f32' }));
  let operands: { inputs: Node[]; attrs: Attrs } | undefined;
  const backward = (wrt: AttentionWrt) => {
    operands ??= namedOperands(getOp('fused_attention_backward'), {
      q, k, v, mask, grad_out: ctx.grad,
      lse: ctx.add('attention_lse', mask ? [q, k, mask] : [q, k], attrs),
      delta: ctx.add('sum', [ctx.add('mul', [f32(ctx.grad), f32(ctx.node)])], { dims: [-1], keepdim: false }),
      rng: dropout?.rng[0],
    }, { ...attrs, ...dropAttrs });
    return ctx.add('fused_attention_backward', operands.inputs, { ...operands.attrs, wrt });
  };
  // dk and dv from one kernel when both are asked for (P and dS computed once), sliced apart.
  let kv: Node | undefined;
  const gradient = (wrt: AttentionWrt) => () => {
    if (wrt === 'q' || !ctx.needs(1) || !ctx.needs(2)) return backward(wrt);
    kv ??= backward('kv');
    return ctx.add('slice', [kv], wrt === 'k' ? { dim: -1, start: 0, end: d } : { dim: -1, start: d, end: d + dv });
  };
  return [inputGrad(ctx, 0, gradient('q')), inputGrad(ctx, 1, gradient('k')), inputGrad(ctx, 2, gradient('v')), null];
}

// scaled_dot_product_attention as one op (torch.nn.functional.scaled_dot_product_attention), and dropout.
// Both draw dropout bits from one counter-based hash, identical in JS and WGSL, so CPU and GPU agree.
// A site's bits follow from its `seed` attr alone (eager), or, given the graph's `rng` leaf as an
// operand (traced), from the seed mixed with that call's rng value, so compiled calls differ.

import { type GradContext, inputGrad } from '../autograd.ts';
import { KilnError } from '../errors.ts';
import type { Attrs, Node } from '../graph.ts';
import { FLOAT_DTYPES } from '../dtypes.ts';
import { roundF16 } from '../f16.ts';
import { type HostTensor, type Precision, allocData } from '../host.ts';
import { operandsByName } from '../operands.ts';
import { type CpuOperand, type OperandType, getOp, registerOp } from '../registry.ts';
import { type DType, type Shape, type TensorType, broadcastShapes, formatType, numel, sameShape, sameType } from '../types.ts';
import { arity, boolAttr, broadcastIndex, expectDType, floatDType, intAttr, numAttr, tensorArg } from './check.ts';
import { RNG_TYPE } from './leaf.ts';
import { softmaxBackward } from './reduce.ts';
import { flashAttentionBackward } from './attention_backward.ts';

/** A uniform number in [0, 1) from (seed, index): PCG hash of the pair. Its WGSL twin is codegen/wgsl/attention.ts's DROPOUT_HASH_WGSL. */
export function dropoutUniform(seed: number, index: number): number {
  let h = (Math.imul(index >>> 0, 747796405) + Math.imul(seed >>> 0, 2891336453) + 2891336453) >>> 0;
  const word = Math.imul((h >>> (((h >>> 28) + 4) & 31)) ^ h, 277803737) >>> 0;
  h = ((word >>> 22) ^ word) >>> 0;
  return h / 4294967296;
}

/**
 * The seed a site draws with when given the graph's rng value: a PCG hash of its `seed` attr xor the
 * rng value times the golden ratio, in u32 arithmetic. Its WGSL twin is codegen/wgsl/attention.ts's DROPOUT_MIX_WGSL.
 */
export function mixDropoutSeed(seed: number, rng: number): number {
  const state = (Math.imul((seed ^ Math.imul(rng, 0x9e3779b9)) >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> (((state >>> 28) + 4) & 31)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The seed a dropout site draws its bits with: its `seed` attr, mixed with the rng operand's value when it has one. */
export function effectiveDropoutSeed(attrs: Attrs, rng: CpuOperand | undefined): number {
  const seed = attrs.seed as number;
  if (rng === undefined) return seed;
  if (typeof rng === 'number') throw new Error('the rng operand must be a tensor');
  return mixDropoutSeed(seed, rng.data[0]);
}

/** Dropout acts only in training with p > 0; otherwise it is the identity. */
export function dropoutActive(attrs: Attrs): boolean {
  return attrs.training === true && typeof attrs.p === 'number' && attrs.p > 0;
}

/** Checks an operand given as the graph's rng: i32[], and only where dropout is active. */
export function rngOperand(op: string, inputs: readonly OperandType[], i: number, active: boolean): void {
  const rng = tensorArg(op, inputs, i);
  if (!sameType(rng, RNG_TYPE)) throw new KilnError('KILN_E011', `${op}'s rng operand must be ${formatType(RNG_TYPE)}, got ${formatType(rng)}`);
  if (!active) throw new KilnError('KILN_E011', `${op} takes an rng operand only while its dropout is active`);
}

// dropout(x, rng?) {p, training, seed}: zero with probability p, scale the rest by 1/(1-p). Element i
// is dropped when dropoutUniform(seed', i) < p, seed' the effective seed (effectiveDropoutSeed).
registerOp({
  name: 'dropout',
  operands: ['x', 'rng?'],
  alias: (attrs) => !dropoutActive(attrs),
  random: dropoutActive,
  infer(inputs, attrs) {
    arity('dropout', inputs, 1, 2);
    const x = tensorArg('dropout', inputs, 0);
    const p = numAttr('dropout', attrs, 'p');
    if (p < 0 || p >= 1) throw new KilnError('KILN_E011', `dropout p must be in [0, 1), got ${p}`);
    boolAttr('dropout', attrs, 'training');
    if (dropoutActive(attrs)) intAttr('dropout', attrs, 'seed');
    if (inputs.length === 2) rngOperand('dropout', inputs, 1, dropoutActive(attrs));
    return { dtype: floatDType('dropout', x), shape: [...x.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const [x, rng] = inputs;
    if (typeof x === 'number') throw new Error('dropout of a scalar');
    if (!dropoutActive(attrs)) return x.data;
    const p = attrs.p as number;
    const seed = effectiveDropoutSeed(attrs, rng);
    const result = allocData('f32', numel(out.shape), precision);
    for (let i = 0; i < result.length; i++) result[i] = dropoutUniform(seed, i) < p ? 0 : x.data[i] / (1 - p);
    return result;
  },
  // The same mask (same attrs, same rng, same element index) scales the gradient; inactive dropout passes it through.
  grad: (ctx) => [ctx.needs(0) ? (dropoutActive(ctx.node.attrs) ? ctx.add('dropout', [ctx.grad, ...ctx.node.inputs.slice(1)], ctx.node.attrs) : ctx.grad) : null],
});

export interface AttentionDims {
  batch: number[];
  l: number;
  s: number;
  d: number;
  dv: number;
}

/** q [..., L, D], k [..., S, D], v [..., S, Dv], batch dims equal. */
export function attentionDims(q: TensorType, k: TensorType, v: TensorType): AttentionDims {
  const rank = q.shape.length;
  const bad = () => new KilnError('KILN_E001', `attention shapes do not match: q ${formatType(q)}, k ${formatType(k)}, v ${formatType(v)}`);
  if (rank < 2 || k.shape.length !== rank || v.shape.length !== rank) throw bad();
  const batch = q.shape.slice(0, -2);
  if (!sameShape(batch, k.shape.slice(0, -2)) || !sameShape(batch, v.shape.slice(0, -2))) throw bad();
  const [l, d] = q.shape.slice(-2);
  const [s, dk] = k.shape.slice(-2);
  const [sv, dv] = v.shape.slice(-2);
  if (d !== dk || s !== sv) throw bad();
  return { batch: [...batch], l, s, d, dv };
}

/** q k^T (2·L·S·D) and p v (2·L·S·Dv) per batch entry; half of it when causal. */
export function attentionFlops(inputs: readonly OperandType[], causal: boolean): number {
  const [q, k, v] = inputs as TensorType[];
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  return (2 * numel(batch) * l * s * (d + dv)) / (causal ? 2 : 1);
}

/** The optional operands of an sdpa or fused_attention node (`q, k, v, mask?, rng?`), by name (ir/operands.ts). */
export function attentionOperands<T>(op: 'sdpa' | 'fused_attention', inputs: readonly T[], attrs: Attrs): { mask?: T; rng?: T } {
  const { mask, rng } = operandsByName(getOp(op), inputs, attrs);
  return { mask, rng };
}


/** The scale an sdpa node applies: its `scale` attr, or 1/sqrt(D) when null. */
export function attentionScale(attrs: Attrs, d: number): number {
  return typeof attrs.scale === 'number' ? attrs.scale : 1 / Math.sqrt(d);
}

export type AttentionScaling = 'post' | 'pre_qk';

/**
 * The scaling an attention of `dtype` uses. f16 always takes "pre_qk": q and k are each multiplied by
 * sqrt(scale) and rounded to f16 before q k^T, as PyTorch's kernels do, so scores that fit once
 * scaled cannot overflow f16's 65504 on the way (the unscaled q k^T of a d = 64 head reaches it
 * with entries near 32). A negative scale has no square root: it stays "post". f32 keeps `asked`.
 */
export function attentionScalingFor(dtype: DType, scale: number, asked: AttentionScaling): AttentionScaling {
  return dtype === 'f16' && scale >= 0 ? 'pre_qk' : asked;
}

/** The type rule's half of attentionScalingFor: an f16 attention node must say "pre_qk" (kiln dump shows what the kernel does). */
export function checkAttentionScaling(op: string, dtype: DType, spec: AttentionSpec): void {
  const want = attentionScalingFor(dtype, spec.scale, spec.scaling);
  if (spec.scaling !== want) throw new KilnError('KILN_E011', `${op} in ${dtype} needs scaling "${want}" (q and k each scaled by sqrt(scale) and rounded to ${dtype} before q k^T, so the scores cannot overflow), got "${spec.scaling}"`);
}

/**
 * How the kernels round a scaled q or k element where they keep it, in the interpreter's precision:
 * to f16 in an f16 attention (what makes "pre_qk" an overflow guard, and what PyTorch rounds), to f32
 * at 'f32' precision, not at all at 'f64'. The f16 kernels scale by sqrt(scale) as an f32 constant.
 */
function scaledQk(dtype: DType, precision: Precision, root: number): (x: number) => number {
  if (precision === 'f64') return (x) => x * root;
  if (dtype === 'f16') {
    const root32 = Math.fround(root);
    return (x) => roundF16(x * root32);
  }
  return (x) => Math.fround(x * root);
}

/**
 * What a query row whose every score is -inf (no key kept) gives: "nan", softmax's answer and so the
 * answer of the chain attention fusion replaced; or "zero", sdpa's (PyTorch's _safe_softmax). docs/masked-rows.md.
 */
export type EmptyRows = 'nan' | 'zero';

export interface AttentionSpec {
  causal: boolean;
  scale: number;
  scaling: AttentionScaling;
  /** The score of a key a bool mask drops: -inf (the default), or the finite value the fused chain's masked_fill wrote. */
  fill?: number;
  /** Default "zero". */
  emptyRows?: EmptyRows;
}

/**
 * Reads row (b, i) of the scaled, masked scores into `row`: -Infinity where masked (the fill where a bool
 * mask drops a key); `dropped`, when given, gets 1 where the bool mask or causality drops the key (the
 * chain's masked_fill, which passes no gradient there), else 0.
 */
export function scoreReader(q: HostTensor, k: HostTensor, mask: HostTensor | undefined, spec: AttentionSpec, precision: Precision, batch: Shape, l: number): (b: number, i: number, row: Float64Array, dropped?: Uint8Array) => void {
  const [s, d] = k.type.shape.slice(-2);
  const maskMap = mask ? broadcastIndex([...batch, l, s], mask.type.shape) : null;
  const additive = mask !== undefined && mask.type.dtype !== 'bool';
  const [qScale, post] = spec.scaling === 'pre_qk' ? [Math.sqrt(spec.scale), 1] : [1, spec.scale];
  const scaled = scaledQk(q.type.dtype, precision, qScale);
  const fill = precision === 'f32' ? Math.fround(spec.fill ?? -Infinity) : (spec.fill ?? -Infinity);
  return (b, i, row, dropped) => {
    for (let j = 0; j < s; j++) {
      const m = maskMap && mask ? mask.data[maskMap[(b * l + i) * s + j]] : 0;
      const filled = Boolean(mask && !additive && !m);
      const keep = spec.causal ? j <= i : !filled;
      if (dropped) dropped[j] = Number(!keep);
      let x = filled ? fill : -Infinity;
      if (keep) {
        x = 0;
        for (let c = 0; c < d; c++) x += scaled(q.data[(b * l + i) * d + c]) * scaled(k.data[(b * s + j) * d + c]);
        x = x * post + (additive ? m : 0);
      }
      row[j] = x;
    }
  };
}

/** The reference both attention ops share, in the interpreter's precision. */
export function attentionReference(q: HostTensor, k: HostTensor, v: HostTensor, mask: HostTensor | undefined, spec: AttentionSpec, precision: Precision, dropout?: { p: number; seed: number }): ReturnType<typeof allocData> {
  const { batch, l, s, dv } = attentionDims(q.type, k.type, v.type);
  const read = scoreReader(q, k, mask, spec, precision, batch, l);
  const result = allocData('f32', numel([...batch, l, dv]), precision);
  const scores = new Float64Array(s);
  for (let b = 0; b < numel(batch); b++) {
    for (let i = 0; i < l; i++) {
      read(b, i, scores);
      const max = scores.reduce((a, x) => Math.max(a, x), -Infinity);
      if (max === -Infinity) {
        // No key kept: NaN as softmax gives, or zeros as sdpa gives (nothing to sum over when S = 0).
        if (spec.emptyRows === 'nan') result.fill(NaN, (b * l + i) * dv, (b * l + i + 1) * dv);
        continue;
      }
      let sum = 0;
      for (let j = 0; j < s; j++) sum += scores[j] = Math.exp(scores[j] - max);
      const row = (b * l + i) * dv;
      for (let j = 0; j < s; j++) {
        let p = scores[j] / sum;
        if (dropout) p = dropoutUniform(dropout.seed, (b * l + i) * s + j) < dropout.p ? 0 : p / (1 - dropout.p);
        if (p === 0) continue;
        for (let c = 0; c < dv; c++) result[row + c] += p * v.data[(b * s + j) * dv + c];
      }
    }
  }
  return result;
}

// sdpa(q, k, v, mask?, rng?) {isCausal, scale, dropoutP, seed}: softmax(q k^T * scale + mask) v.
// A bool mask keeps where true; a float mask is added. Causal is top-left aligned, as PyTorch.
// In f16, q and k are each scaled by sqrt(scale) and rounded to f16 before q k^T (attentionScalingFor).
// A row that keeps no key (every score -inf) gives zeros, as PyTorch's sdpa does since 2.5 (its
// _safe_softmax); a plain softmax of that row would be NaN (docs/masked-rows.md).
// With dropoutP > 0, probability (b, i, j) is dropped as dropout's element (b*L+i)*S+j with the same
// effective seed; the rng operand (i32[], the graph's `rng` leaf) is told from the mask by its dtype.
registerOp({
  name: 'sdpa',
  operands: ['q', 'k', 'v', 'mask?', 'rng?'],
  flops: (inputs, attrs) => attentionFlops(inputs, attrs.isCausal === true),
  random: (attrs) => typeof attrs.dropoutP === 'number' && attrs.dropoutP > 0,
  infer(inputs, attrs) {
    arity('sdpa', inputs, 3, 5);
    const [q, k, v] = [0, 1, 2].map((i) => tensorArg('sdpa', inputs, i));
    const dtype = floatDType('sdpa', q, k, v);
    const dims = attentionDims(q, k, v);
    const causal = boolAttr('sdpa', attrs, 'isCausal', false);
    const dropoutP = numAttr('sdpa', attrs, 'dropoutP', 0);
    if (dropoutP < 0 || dropoutP >= 1) throw new KilnError('KILN_E011', `sdpa dropoutP must be in [0, 1), got ${dropoutP}`);
    if (dropoutP > 0) intAttr('sdpa', attrs, 'seed');
    if (attrs.scale !== null && attrs.scale !== undefined) numAttr('sdpa', attrs, 'scale');
    for (let i = 3; i < inputs.length; i++) tensorArg('sdpa', inputs, i);
    const { mask: maskOperand, rng } = attentionOperands('sdpa', inputs, attrs);
    if (rng) rngOperand('sdpa', inputs, inputs.length - 1, dropoutP > 0);
    if (maskOperand) {
      const mask = maskOperand as TensorType;
      if (causal) throw new KilnError('KILN_E011', 'sdpa takes either a mask or isCausal, not both (as PyTorch)');
      expectDType('sdpa', mask, 'bool', ...FLOAT_DTYPES);
      const full = [...dims.batch, dims.l, dims.s];
      const b = broadcastShapes(full, mask.shape);
      if (!b || !sameShape(b, full)) throw new KilnError('KILN_E001', `sdpa mask ${formatType(mask)} does not broadcast to the scores [${full.join(',')}]`);
    }
    return { dtype, shape: [...dims.batch, dims.l, dims.dv] };
  },
  cpu(inputs, attrs, _out, precision) {
    const [q, k, v] = inputs;
    const { mask, rng } = attentionOperands('sdpa', inputs, attrs);
    if (typeof q === 'number' || typeof k === 'number' || typeof v === 'number' || typeof mask === 'number') throw new Error('sdpa of a scalar');
    const spec = sdpaSpec(attrs, q.type);
    const p = typeof attrs.dropoutP === 'number' ? attrs.dropoutP : 0;
    return attentionReference(q, k, v, mask, spec, precision, p > 0 ? { p, seed: effectiveDropoutSeed(attrs, rng) } : undefined);
  },
  grad(ctx) {
    return flashAttentionBackward(ctx, sdpaSpec(ctx.node.attrs, (ctx.node.inputs[0] as Node).type));
  },
});

/** The attention an sdpa node with these attrs and query `q` computes: scaled after q k^T, but in f16 (attentionScalingFor). */
export function sdpaSpec(attrs: Attrs, q: TensorType): AttentionSpec {
  const scale = attentionScale(attrs, q.shape[q.shape.length - 1]);
  return { causal: attrs.isCausal === true, scale, scaling: attentionScalingFor(q.dtype, scale, 'post'), emptyRows: 'zero' };
}

/** Dropout on the probabilities, as a dropout node redraws it: its attrs and its rng operand, if any. */
export interface AttentionDropout {
  attrs: Attrs;
  rng: Node[];
}

/** An attention node's dropout (sdpa's, fused_attention's: attrs dropoutP and seed) as a dropout op on its [..., L, S] probabilities; undefined without dropout. */
export function attentionDropout(node: Node): AttentionDropout | undefined {
  const p = numAttr(node.op, node.attrs, 'dropoutP', 0);
  if (p === 0) return undefined;
  const { rng } = attentionOperands(node.op as 'sdpa' | 'fused_attention', node.inputs, node.attrs);
  return { attrs: { p, training: true, seed: node.attrs.seed as number }, rng: rng ? [rng as Node] : [] };
}

/**
 * Gradients of q, k, v for dropout(softmax(q k^T * scale + mask)) v, composed from registered ops; the
 * probabilities are recomputed from q and k (a fused backward kernel is a later step). The mask
 * and rng operands take no gradient. A row that keeps no key makes gradients NaN here, as in the
 * chain (emptyRows "nan"); also for an sdpa, whose forward gives zeros there.
 * Dropout redraws the forward's mask: element (b, i, j) of the probabilities has the forward's index (b*L+i)*S+j.
 */
export function attentionBackward(ctx: GradContext, spec: AttentionSpec, dropout?: AttentionDropout): (Node | null)[] {
  const [q, k, v] = ctx.node.inputs as Node[];
  const mask = attentionOperands(ctx.node.op as 'sdpa' | 'fused_attention', ctx.node.inputs, ctx.node.attrs).mask as Node | undefined;
  const g = ctx.grad;
  const add = (op: string, inputs: (Node | number)[], attrs: Attrs = {}) => ctx.add(op, inputs, attrs);
  const matmul = (a: Node, b: Node, transposeA: boolean, transposeB: boolean) => add('matmul', [a, b], { transposeA, transposeB });
  // "pre_qk" scales q and k by sqrt(scale) each: the same scores as "post". In f16 it is done first,
  // as the forward does it, so the recomputed scores cannot overflow either.
  const root = Math.sqrt(spec.scale);
  let scores = spec.scaling === 'pre_qk' && q.type.dtype === 'f16'
    ? matmul(add('mul', [q, root]), add('mul', [k, root]), false, true)
    : add('mul', [matmul(q, k, false, true), spec.scale]);
  // Where a bool mask drops a key, masked_fill passes its scores no gradient: it matters where P is not 0
  // there, a row with no key (NaN) or a finite fill. (Causal rows always keep a key, and fill with -inf.)
  let dropped: Node | undefined;
  if (spec.causal) {
    const [l, s] = scores.type.shape.slice(-2);
    const rows = add('reshape', [add('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [l] })], { shape: [l, 1] });
    const cols = add('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [s] });
    scores = add('masked_fill', [scores, add('gt', [cols, rows]), -Infinity]);
  } else if (mask && mask.type.dtype === 'bool') {
    dropped = add('logical_not', [mask]);
    scores = add('masked_fill', [scores, dropped, spec.fill ?? -Infinity]);
  } else if (mask) {
    scores = add('add', [scores, mask]);
  }
  const probs = add('softmax', [scores], { dim: -1 });
  // Dropout's gradient is dropout with the same mask, so one helper serves both directions.
  const drop = (x: Node) => (dropout ? add('dropout', [x, ...dropout.rng], dropout.attrs) : x);
  let dScoresNode: Node | undefined;
  const throughMask = (d: Node) => (dropped ? add('masked_fill', [d, dropped, 0]) : d);
  const dScores = () => (dScoresNode ??= add('mul', [throughMask(softmaxBackward(ctx, probs, drop(matmul(g, v, false, true)), -1)), spec.scale]));
  return [
    inputGrad(ctx, 0, () => matmul(dScores(), k, false, false)),
    inputGrad(ctx, 1, () => matmul(dScores(), q, true, false)),
    inputGrad(ctx, 2, () => matmul(drop(probs), g, true, false)),
    null,
  ];
}

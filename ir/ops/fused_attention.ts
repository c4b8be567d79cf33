// fused_attention(q, k, v, mask?, rng?) {causal, scale, scaling, fill, emptyRows, dropoutP, seed, kernel, rule, reason}:
// what the attention fusion pass makes of a matched chain; lowered to one flash-style kernel. Same
// maths as sdpa: dropout(softmax(q k^T * scale + mask)) v, where `mask` is a bool keep-mask or an
// additive f32 mask, and causal keeps j <= i (top-left aligned). A key the bool mask drops scores
// `fill` (default -inf; a chain's finite masked_fill value otherwise). A row whose every score is
// -inf gives NaN with emptyRows "nan" (softmax's answer: the chain's), zeros with "zero" (the
// default, sdpa's); docs/masked-rows.md says why.
// With dropoutP > 0 (default 0), probability (b, i, j) is dropped as dropout's element (b*L+i)*S+j
// of the [..., L, S] weights, with the seed mixed with the rng operand (i32[], last) as dropout does:
// the same bits as the unfused chain, recomputed by the backward kernels instead of stored.
// scaling "pre_qk" multiplies q and k each by sqrt(scale) before q k^T (the overflow guard of
// PyTorch's kernels); "post" scales the scores. An f16 node always says "pre_qk", and its kernels
// round the scaled q and k to f16 before q k^T, as PyTorch does: the scores, the online softmax and
// P v accumulate in f32, and only the output is stored in f16 (attentionScalingFor).

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { registerOp } from '../registry.ts';
import { type TensorType, broadcastShapes, formatType, sameShape } from '../types.ts';
import { type AttentionSpec, attentionBackward, attentionDims, attentionDropout, attentionFlops, attentionOperands, attentionReference, checkAttentionScaling, effectiveDropoutSeed, rngOperand } from './attention.ts';
import { flashAttentionBackward } from './attention_backward.ts';

export type { AttentionScaling, AttentionSpec } from './attention.ts';
import { arity, boolAttr, expectDType, floatDType, intAttr, numAttr, tensorArg } from './check.ts';
import { FLOAT_DTYPES } from '../dtypes.ts';

export function attentionSpec(attrs: Attrs): AttentionSpec {
  const scaling = attrs.scaling ?? 'post';
  if (scaling !== 'post' && scaling !== 'pre_qk') throw new KilnError('KILN_E011', `fused_attention scaling must be "post" or "pre_qk", got ${String(scaling)}`);
  const scale = numAttr('fused_attention', attrs, 'scale');
  if (scaling === 'pre_qk' && scale < 0) throw new KilnError('KILN_E011', `fused_attention scaling "pre_qk" multiplies q and k by sqrt(scale), so it needs scale >= 0, got ${scale}`);
  const emptyRows = attrs.emptyRows ?? 'zero';
  if (emptyRows !== 'nan' && emptyRows !== 'zero') throw new KilnError('KILN_E011', `fused_attention emptyRows must be "nan" or "zero", got ${String(emptyRows)}`);
  const fill = numAttr('fused_attention', attrs, 'fill', -Infinity);
  return { causal: boolAttr('fused_attention', attrs, 'causal'), scale, scaling, fill, emptyRows };
}

/** Checks a mask against the scores' shape [..., L, S]: bool keeps where true, a float one (f32, or q's dtype) is added. */
export function checkAttentionMask(op: string, mask: TensorType, scores: number[]): void {
  expectDType(op, mask, 'bool', ...FLOAT_DTYPES);
  const b = broadcastShapes(scores, mask.shape);
  if (!b || !sameShape(b, scores)) throw new KilnError('KILN_E001', `${op} mask ${formatType(mask)} does not broadcast to the scores [${scores.join(',')}]`);
}

/** The dropout probability of a fused attention node (0: none); checks it and, when active, the seed. */
export function attentionDropoutP(op: string, attrs: Attrs): number {
  const p = numAttr(op, attrs, 'dropoutP', 0);
  if (p < 0 || p >= 1) throw new KilnError('KILN_E011', `${op} dropoutP must be in [0, 1), got ${p}`);
  if (p > 0) intAttr(op, attrs, 'seed');
  return p;
}

registerOp({
  name: 'fused_attention',
  operands: ['q', 'k', 'v', 'mask?', 'rng?'],
  flops: (inputs, attrs) => attentionFlops(inputs, attrs.causal === true),
  random: (attrs) => typeof attrs.dropoutP === 'number' && attrs.dropoutP > 0,
  infer(inputs, attrs) {
    arity('fused_attention', inputs, 3, 5);
    const [q, k, v] = [0, 1, 2].map((i) => tensorArg('fused_attention', inputs, i));
    const dtype = floatDType('fused_attention', q, k, v);
    const dims = attentionDims(q, k, v);
    const spec = attentionSpec(attrs);
    checkAttentionScaling('fused_attention', dtype, spec);
    const dropoutP = attentionDropoutP('fused_attention', attrs);
    for (let i = 3; i < inputs.length; i++) tensorArg('fused_attention', inputs, i);
    const { mask, rng } = attentionOperands('fused_attention', inputs, attrs);
    if (rng) rngOperand('fused_attention', inputs, inputs.length - 1, dropoutP > 0);
    if (mask) {
      if (spec.causal) throw new KilnError('KILN_E011', 'a causal fused_attention reads no mask');
      checkAttentionMask('fused_attention', mask as TensorType, [...dims.batch, dims.l, dims.s]);
    }
    return { dtype, shape: [...dims.batch, dims.l, dims.dv] };
  },
  cpu(inputs, attrs, _out, precision) {
    const [q, k, v] = inputs;
    const { mask, rng } = attentionOperands('fused_attention', inputs, attrs);
    if (typeof q === 'number' || typeof k === 'number' || typeof v === 'number' || typeof mask === 'number') throw new Error('fused_attention of a scalar');
    const p = attentionDropoutP('fused_attention', attrs);
    return attentionReference(q, k, v, mask, attentionSpec(attrs), precision, p > 0 ? { p, seed: effectiveDropoutSeed(attrs, rng) } : undefined);
  },
  // The flash backward (ir/ops/attention_backward.ts); the composed one where its kernels do not fit.
  // autotune: the composed one also where it was measured faster on this device (compiler/autotune-attention.ts sets meta.backward).
  grad: (ctx) =>
    ctx.node.meta?.backward === 'composed'
      ? attentionBackward(ctx, attentionSpec(ctx.node.attrs), attentionDropout(ctx.node))
      : flashAttentionBackward(ctx, attentionSpec(ctx.node.attrs)),
});

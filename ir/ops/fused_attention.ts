// fused_attention(q, k, v, mask?) {causal, scale, scaling, kernel, rule, reason}: what the attention
// fusion pass makes of a matched chain; lowered to one flash-style kernel. Same maths as sdpa:
// softmax(q k^T * scale + mask) v, where `mask` is a bool keep-mask or an additive f32 mask, and
// causal keeps j <= i (top-left aligned). A fully masked row gives zeros.
// scaling "pre_qk" multiplies q and k each by sqrt(scale) before q k^T (the overflow guard of
// PyTorch's kernels); "post" scales the scores.

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { type HostTensor, type Precision, allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import { type TensorType, broadcastShapes, formatType, numel, sameShape } from '../types.ts';
import { type AttentionSpec, attentionDims, attentionFlops, attentionReference } from './attention.ts';
import { flashAttentionBackward } from './attention_backward.ts';

export type { AttentionScaling, AttentionSpec } from './attention.ts';
import { arity, boolAttr, broadcastIndex, expectDType, numAttr, tensorArg } from './check.ts';
import { flashAttentionKernel } from './fused_attention.wgsl.ts';

export function attentionSpec(attrs: Attrs): AttentionSpec {
  const scaling = attrs.scaling ?? 'post';
  if (scaling !== 'post' && scaling !== 'pre_qk') throw new KilnError('KILN_E011', `fused_attention scaling must be "post" or "pre_qk", got ${String(scaling)}`);
  const scale = numAttr('fused_attention', attrs, 'scale');
  if (scaling === 'pre_qk' && scale < 0) throw new KilnError('KILN_E011', `fused_attention scaling "pre_qk" multiplies q and k by sqrt(scale), so it needs scale >= 0, got ${scale}`);
  return { causal: boolAttr('fused_attention', attrs, 'causal'), scale, scaling };
}

/** Checks a mask against the scores' shape [..., L, S]: bool keeps where true, f32 is added. */
export function checkAttentionMask(op: string, mask: TensorType, scores: number[]): void {
  expectDType(op, mask, 'bool', 'f32');
  const b = broadcastShapes(scores, mask.shape);
  if (!b || !sameShape(b, scores)) throw new KilnError('KILN_E001', `${op} mask ${formatType(mask)} does not broadcast to the scores [${scores.join(',')}]`);
}

registerOp({
  name: 'fused_attention',
  flops: (inputs, attrs) => attentionFlops(inputs, attrs.causal === true),
  infer(inputs, attrs) {
    arity('fused_attention', inputs, 3, 4);
    const [q, k, v] = [0, 1, 2].map((i) => tensorArg('fused_attention', inputs, i));
    for (const t of [q, k, v]) expectDType('fused_attention', t, 'f32');
    const dims = attentionDims(q, k, v);
    const spec = attentionSpec(attrs);
    if (inputs.length === 4) {
      if (spec.causal) throw new KilnError('KILN_E011', 'a causal fused_attention reads no mask');
      checkAttentionMask('fused_attention', tensorArg('fused_attention', inputs, 3), [...dims.batch, dims.l, dims.s]);
    }
    return { dtype: 'f32', shape: [...dims.batch, dims.l, dims.dv] };
  },
  cpu(inputs, attrs, _out, precision) {
    const [q, k, v, mask] = inputs;
    if (typeof q === 'number' || typeof k === 'number' || typeof v === 'number' || typeof mask === 'number') throw new Error('fused_attention of a scalar');
    return attentionReference(q, k, v, mask, attentionSpec(attrs), precision);
  },
  wgsl: (req) => flashAttentionKernel(req, attentionSpec(req.attrs)),
  // The flash backward (ir/ops/attention_backward.ts); the composed one where its kernels do not fit.
  grad: (ctx) => flashAttentionBackward(ctx, attentionSpec(ctx.node.attrs)),
});

// The optimizer's ops, what compiler/train-step.ts appends after the backward: AdamW's update, and
// torch.amp.GradScaler's two kernels (the overflow check and the scale update). Each keeps its state on
// the device, so a training step needs no host round trip.
//
// adamw_update(p, g, m, v, hypers, scalars) {beta1, beta2, eps}: one AdamW step of one parameter in one
// kernel. It gives the new parameter and both new moments stacked, f32[3, ...p.shape] = [p', m', v'], so
// one kernel reads each of p, g, m, v once and writes all three (a node has one output; the training
// step copies the three parts back into the parameter's and moments' own buffers). PyTorch's AdamW
// (torch/optim/adamw.py), as its fused kernel takes it (`_fused_adamw_` with grad_scale and found_inf):
//   g <- g * grad_scale;  m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g^2
//   p' = p * decay - lr / (1 - b1^t) * m' / (sqrt(v') / sqrt(1 - b2^t) + eps)
// and p' = p, m' = m, v' = v when `skip` is set (GradScaler found an inf or NaN gradient).
//   hypers = f32[2] [lr, decay] of the parameter's group (decay = 1 - lr * weight_decay): the host's,
//     an input per step, so one compilation serves every step of a schedule;
//   scalars = f32[3] [t, grad_scale, skip]: the device's, computed by the step. t is the step count this
//     update makes (the bias corrections come from it here, as torch's fused and capturable AdamW keep
//     `step` on the device: a skipped step does not count); grad_scale is clip_grad_norm_'s coefficient
//     times 1 / the loss scale. Six storage bindings, within WebGPU's guaranteed eight.
//
// found_inf(x): 1 when any element of x is inf or NaN, else 0 (f32[], torch's `found_inf`). The step
// gives it the sum of squares the gradient norm reads, which is non-finite when any gradient is.
//
// amp_update_scale(scale, growth_tracker, found_inf) {growth_factor, backoff_factor, growth_interval}:
// torch's `_amp_update_scale_`, stacked f32[2] = [scale', growth_tracker'] for the step to write back:
//   found_inf: scale' = scale * backoff, tracker' = 0
//   otherwise: tracker + 1 good steps; at growth_interval scale' = scale * growth (kept when that is
//   not finite) and tracker' = 0, else tracker' = tracker + 1.

import { KilnError } from '../errors.ts';
import { allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import type { OperandType } from '../registry.ts';
import { type TensorType, formatType, numel, sameShape } from '../types.ts';
import { arity, expectDType, intAttr, numAttr, tensorArg, tensorData } from './check.ts';

/** hypers[i]: what the host feeds each group, every step. */
export const ADAMW_HYPERS = ['lr', 'decay'] as const;
/** scalars[i]: what the step computes on the device, shared by every parameter. */
export const ADAMW_SCALARS = ['step', 'grad_scale', 'skip'] as const;

/** Each operand f32 of the shape given (null: any shape); the op's output type follows. */
function expectF32(op: string, inputs: readonly OperandType[], shapes: readonly (readonly number[] | null)[]): TensorType[] {
  arity(op, inputs, shapes.length);
  return shapes.map((shape, i) => {
    const t = tensorArg(op, inputs, i);
    expectDType(op, t, 'f32');
    if (shape && !sameShape(t.shape, shape)) throw new KilnError('KILN_E001', `${op} operand ${i} is ${formatType(t)}, expected f32[${shape.join(',')}]`);
    return t;
  });
}

registerOp({
  name: 'adamw_update',
  operands: ['p', 'g', 'm', 'v', 'hypers', 'scalars'],
  infer(inputs, attrs) {
    for (const name of ['beta1', 'beta2', 'eps']) numAttr('adamw_update', attrs, name);
    const p = tensorArg('adamw_update', inputs, 0);
    expectF32('adamw_update', inputs, [p.shape, p.shape, p.shape, p.shape, [ADAMW_HYPERS.length], [ADAMW_SCALARS.length]]);
    return { dtype: 'f32', shape: [3, ...p.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const [p, g, m, v, hypers, scalars] = inputs.map(tensorData);
    const [lr, decay] = hypers;
    const [t, gradScale, skip] = scalars;
    const [b1, b2, eps] = [attrs.beta1, attrs.beta2, attrs.eps] as number[];
    const stepSize = lr / (1 - b1 ** t);
    const bias2Sqrt = Math.sqrt(1 - b2 ** t);
    const n = p.length;
    const result = allocData('f32', numel(out.shape), precision);
    for (let i = 0; i < n; i++) {
      if (skip !== 0) {
        [result[i], result[n + i], result[2 * n + i]] = [p[i], m[i], v[i]];
        continue;
      }
      const grad = g[i] * gradScale;
      const m1 = b1 * m[i] + (1 - b1) * grad;
      const v1 = b2 * v[i] + (1 - b2) * grad * grad;
      result[i] = p[i] * decay - (stepSize * m1) / (Math.sqrt(v1) / bias2Sqrt + eps);
      result[n + i] = m1;
      result[2 * n + i] = v1;
    }
    return result;
  },
  flops: (_inputs, _attrs, out) => 12 * (numel(out.shape) / 3),
});

registerOp({
  name: 'found_inf',
  operands: ['x'],
  infer(inputs) {
    expectF32('found_inf', inputs, [null]);
    return { dtype: 'f32', shape: [] };
  },
  cpu(inputs, _attrs, _out, precision) {
    const x = tensorData(inputs[0]);
    const result = allocData('f32', 1, precision);
    result[0] = x.every(Number.isFinite) ? 0 : 1;
    return result;
  },
});

registerOp({
  name: 'amp_update_scale',
  operands: ['scale', 'growth_tracker', 'found_inf'],
  infer(inputs, attrs) {
    for (const name of ['growth_factor', 'backoff_factor']) numAttr('amp_update_scale', attrs, name);
    intAttr('amp_update_scale', attrs, 'growth_interval');
    expectF32('amp_update_scale', inputs, [[], [], []]);
    return { dtype: 'f32', shape: [2] };
  },
  cpu(inputs, attrs, _out, precision) {
    const [[scale], [tracker], [found]] = inputs.map(tensorData);
    const [growth, backoff, interval] = [attrs.growth_factor, attrs.backoff_factor, attrs.growth_interval] as number[];
    const result = allocData('f32', 2, precision);
    const f32 = Math.fround; // the scale is an f32 on the device: growing it can overflow there
    if (found !== 0) {
      [result[0], result[1]] = [scale * backoff, 0];
    } else if (tracker + 1 === interval) {
      const grown = f32(scale * growth);
      [result[0], result[1]] = [Number.isFinite(grown) ? grown : scale, 0];
    } else {
      [result[0], result[1]] = [scale, tracker + 1];
    }
    return result;
  },
});

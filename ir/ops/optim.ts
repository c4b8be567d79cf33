// adamw_update(p, g, m, v, hypers, clip?) {beta1, beta2, eps}: one AdamW
// step of one parameter in one kernel, what compiler/train-step.ts appends after the backward. It
// gives the new parameter and both new moments stacked, f32[3, ...p.shape] = [p', m', v'], so one
// kernel reads each of p, g, m, v once and writes all three (a node has one output; the training
// step copies the three parts back into the parameter's and moments' own buffers).
//
// PyTorch's AdamW (torch/optim/adamw.py, single-tensor path), with g scaled by `clip` first when the
// clip operand is given (clip_grad_norm_'s coefficient, a 0-d tensor computed in the graph):
//   m' = b1 m + (1 - b1) g;  v' = b2 v + (1 - b2) g^2
//   p' = p * decay - step_size * m' / (sqrt(v') * inv_bias2_sqrt + eps)
// hypers = f32[3] [step_size, inv_bias2_sqrt, decay]: step_size = lr / (1 - b1^t), inv_bias2_sqrt =
// 1 / sqrt(1 - b2^t), decay = 1 - lr * weight_decay, an input per step, so one compilation serves every
// step of a schedule (and six storage bindings stay within WebGPU's guaranteed eight).

import { KilnError } from '../errors.ts';
import { allocData } from '../host.ts';
import { registerOp } from '../registry.ts';
import { formatType, numel, sameShape } from '../types.ts';
import { arity, expectDType, numAttr, tensorArg, tensorData } from './check.ts';

/** hypers[i]: what the training step feeds. */
export const ADAMW_HYPERS = ['step_size', 'inv_bias2_sqrt', 'decay'] as const;

registerOp({
  name: 'adamw_update',
  infer(inputs, attrs) {
    arity('adamw_update', inputs, 5, 6);
    for (const name of ['beta1', 'beta2', 'eps']) numAttr('adamw_update', attrs, name);
    const p = tensorArg('adamw_update', inputs, 0);
    const want = [p.shape, p.shape, p.shape, p.shape, [ADAMW_HYPERS.length], []];
    for (let i = 0; i < inputs.length; i++) {
      const t = tensorArg('adamw_update', inputs, i);
      expectDType('adamw_update', t, 'f32');
      if (!sameShape(t.shape, want[i])) throw new KilnError('KILN_E001', `adamw_update operand ${i} is ${formatType(t)}, expected f32[${want[i].join(',')}]`);
    }
    return { dtype: 'f32', shape: [3, ...p.shape] };
  },
  cpu(inputs, attrs, out, precision) {
    const [p, g, m, v, hypers] = [0, 1, 2, 3, 4].map((i) => tensorData(inputs[i]));
    const [stepSize, invBias2Sqrt, decayBy] = hypers;
    const clipBy = inputs.length > 5 ? tensorData(inputs[5])[0] : 1;
    const [b1, b2, eps] = [attrs.beta1, attrs.beta2, attrs.eps] as number[];
    const n = p.length;
    const result = allocData('f32', numel(out.shape), precision);
    for (let i = 0; i < n; i++) {
      const grad = g[i] * clipBy;
      const m1 = b1 * m[i] + (1 - b1) * grad;
      const v1 = b2 * v[i] + (1 - b2) * grad * grad;
      result[i] = p[i] * decayBy - (stepSize * m1) / (Math.sqrt(v1) * invBias2Sqrt + eps);
      result[n + i] = m1;
      result[2 * n + i] = v1;
    }
    return result;
  },
  flops: (_inputs, _attrs, out) => 12 * (numel(out.shape) / 3),
});

// WGSL lowering of adamw_update (ir/ops/optim.ts says what it computes): one AdamW step of one
// parameter, reading p, g, m, v once and writing [p', m', v'].

import { numAttr } from '../../ir/ops/check.ts';
import { numel } from '../../ir/types.ts';
import { constDecl, groupsFor, indent } from './helpers.ts';
import type { Lowering } from './plan.ts';

const GROUP = 256;

export const optimLowerings: Record<string, Lowering> = {
  adamw_update(req) {
    const clip = req.inputs.length > 5;
    const n = numel(req.out.shape) / 3;
    const [b1, b2, eps] = ['beta1', 'beta2', 'eps'].map((name) => numAttr('adamw_update', req.attrs, name));
    const lines = [
      'if (gid >= params.n) { return; }',
      `let grad = g[gid]${clip ? ' * clip[0]' : ''};`,
      'let m1 = B1 * m[gid] + (1.0 - B1) * grad;',
      'let v1 = B2 * v[gid] + (1.0 - B2) * grad * grad;',
      '// hypers: step size, 1 / sqrt(1 - b2^t), decay',
      'out[gid] = p[gid] * hypers[2] - hypers[0] * m1 / (sqrt(v1) * hypers[1] + EPS);',
      'out[params.n + gid] = m1;',
      'out[2u * params.n + gid] = v1;',
    ];
    return {
      inputNames: ['p', 'g', 'm', 'v', 'hypers', ...(clip ? ['clip'] : [])],
      params: { n },
      decls: [constDecl('B1', 'f32', b1), constDecl('B2', 'f32', b2), constDecl('EPS', 'f32', eps)].join('\n'),
      body: indent(lines),
      workgroupSize: GROUP,
      workgroups: groupsFor(n, GROUP),
    };
  },
};

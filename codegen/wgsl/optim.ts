// WGSL lowerings of the optimizer's ops (ir/ops/optim.ts says what they compute): AdamW's update of one
// parameter, reading p, g, m, v once and writing [p', m', v']; GradScaler's overflow check and scale
// update, one invocation each.

import { intAttr, numAttr } from '../../ir/ops/check.ts';
import { numel } from '../../ir/types.ts';
import { constDecl, groupsFor, indent } from './helpers.ts';
import type { Lowering } from './plan.ts';

const GROUP = 256;

/**
 * Whether an f32 is finite, from its bits: WGSL lets a compiler assume no infinity or NaN reaches
 * arithmetic or comparisons (`x - x == 0` may fold to true), but a bit pattern is only a u32.
 */
const IS_FINITE_WGSL = 'fn kiln_is_finite(value: f32) -> bool { return (bitcast<u32>(value) & 0x7f800000u) != 0x7f800000u; }';

/**
 * 1 - b^t for a whole t, in f32 without cancellation: binary exponentiation carrying (b^k, 1 - b^k), since
 * 1 - b^(j+k) = (1 - b^j) + b^j (1 - b^k) adds positive terms; `one_minus_b` comes from the host in f64.
 * (1.0 - pow(b, t) loses digits to cancellation where b^t is near 1, and WGSL's exp and pow may be
 * off by several ulps.) At most 25 rounds for a t below 2^24, the same in every invocation.
 */
const ONE_MINUS_POW_WGSL = `fn kiln_one_minus_pow(b: f32, one_minus_b: f32, t: u32) -> f32 {
  var p = b;
  var s = one_minus_b;
  var result_p = 1.0;
  var result_s = 0.0;
  for (var n = t; n != 0u; n = n >> 1u) {
    if ((n & 1u) != 0u) {
      result_s = result_s + result_p * s;
      result_p = result_p * p;
    }
    s = s + p * s;
    p = p * p;
  }
  return result_s;
}`;

export const optimLowerings: Record<string, Lowering> = {
  adamw_update(req) {
    const n = numel(req.out.shape) / 3;
    const [b1, b2, eps] = ['beta1', 'beta2', 'eps'].map((name) => numAttr('adamw_update', req.attrs, name));
    const lines = [
      'if (gid >= params.n) { return; }',
      '// hypers: lr, decay; scalars: step t, gradient scale, skip',
      'let t = u32(scalars[0]);',
      'var p1 = p[gid];',
      'var m1 = m[gid];',
      'var v1 = v[gid];',
      'if (scalars[2] == 0.0) {',
      '  let grad = g[gid] * scalars[1];',
      '  m1 = B1 * m1 + (1.0 - B1) * grad;',
      '  v1 = B2 * v1 + (1.0 - B2) * grad * grad;',
      '  let step_size = hypers[0] / kiln_one_minus_pow(B1, ONE_MINUS_B1, t);',
      '  p1 = p1 * hypers[1] - step_size * m1 / (sqrt(v1) / sqrt(kiln_one_minus_pow(B2, ONE_MINUS_B2, t)) + EPS);',
      '}',
      'out[gid] = p1;',
      'out[params.n + gid] = m1;',
      'out[2u * params.n + gid] = v1;',
    ];
    return {
      inputNames: ['p', 'g', 'm', 'v', 'hypers', 'scalars'],
      params: { n },
      decls: [
        constDecl('B1', 'f32', b1), constDecl('ONE_MINUS_B1', 'f32', 1 - b1), constDecl('B2', 'f32', b2), constDecl('ONE_MINUS_B2', 'f32', 1 - b2), constDecl('EPS', 'f32', eps), ONE_MINUS_POW_WGSL,
      ].join('\n'),
      body: indent(lines),
      workgroupSize: GROUP,
      workgroups: groupsFor(n, GROUP),
    };
  },

  found_inf(req) {
    const lines = [
      'if (gid > 0u) { return; }',
      'var found = 0.0;',
      'for (var i = 0u; i < params.n; i++) {',
      '  if (!kiln_is_finite(x[i])) { found = 1.0; }',
      '}',
      'out[0] = found;',
    ];
    const x = req.inputs[0];
    return { inputNames: ['x'], params: { n: typeof x === 'number' ? 1 : numel(x.shape) }, decls: IS_FINITE_WGSL, body: indent(lines), workgroupSize: 1, workgroups: 1 };
  },

  amp_update_scale(req) {
    const [growth, backoff] = ['growth_factor', 'backoff_factor'].map((name) => numAttr('amp_update_scale', req.attrs, name));
    const interval = intAttr('amp_update_scale', req.attrs, 'growth_interval');
    const lines = [
      'if (gid > 0u) { return; }',
      'var next = scale[0];',
      'var tracker = 0.0;',
      'if (found_inf[0] != 0.0) {',
      '  next = next * BACKOFF;',
      '} else if (growth_tracker[0] + 1.0 == INTERVAL) {',
      '  let grown = next * GROWTH;',
      '  if (kiln_is_finite(grown)) { next = grown; } // not past f32\'s range to inf',
      '} else {',
      '  tracker = growth_tracker[0] + 1.0;',
      '}',
      'out[0] = next;',
      'out[1] = tracker;',
    ];
    const decls = [constDecl('GROWTH', 'f32', growth), constDecl('BACKOFF', 'f32', backoff), constDecl('INTERVAL', 'f32', interval), IS_FINITE_WGSL];
    return { inputNames: ['scale', 'growth_tracker', 'found_inf'], params: {}, decls: decls.join('\n'), body: indent(lines), workgroupSize: 1, workgroups: 1 };
  },
};

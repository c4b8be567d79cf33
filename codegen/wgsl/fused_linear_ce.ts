// WGSL lowerings of the fused linear + cross-entropy's kernels of its own (ir/ops/fused_linear_ce.ts):
// logsumexp_rows, a workgroup per row of a chunk's logits; accumulate, dw's running sum; kept_targets,
// the count of kept rows, which checks every target. The rest of the chunked algorithm is matmuls,
// cross_entropy_rows and one fused elementwise kernel (passes/linear-ce.ts unrolls it).

import { type TensorType, numel } from '../../ir/types.ts';
import { intAttr } from '../../ir/ops/check.ts';
import { ELEMENTWISE_GROUP, F32_MAX, constDecl, groupsFor, indent, reduceDecl, reportBadIndex, wgslLiteral, workgroupReduce } from './helpers.ts';
import type { KernelPlan, KernelRequest, Lowering } from './plan.ts';

const GROUP = 256;

/**
 * One pass over the row: each invocation keeps an online max m and sum s of exp(x - m) over its
 * strided elements (s rescaled when m grows, as flash attention does); the workgroup then takes the
 * max M of the m's and sums s * exp(m - M). f32 throughout.
 */
export function logsumexpRowsKernel(req: KernelRequest): KernelPlan {
  const [rows, v] = (req.inputs[0] as TensorType).shape;
  const lowest = wgslLiteral(-F32_MAX, 'f32');
  const body = [
    'let base = wid * params.v;',
    `var m = ${lowest};`,
    'var s = 0.0;',
    `for (var e = lid; e < params.v; e = e + ${GROUP}u) {`,
    '  let x = logits[base + e];',
    '  if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s = s + exp(x - m); }',
    '}',
    workgroupReduce('partial', GROUP, 'm', (a, b) => `max(${a}, ${b})`, 'row_max'),
    workgroupReduce('partial', GROUP, 's * exp(m - row_max)', (a, b) => `(${a} + ${b})`, 'row_sum'),
    'if (lid == 0u) { out[wid] = log(row_sum) + row_max; }',
  ];
  return {
    inputNames: ['logits'],
    params: { v },
    decls: reduceDecl('partial', 'f32', GROUP),
    body: indent(body),
    workgroupSize: GROUP,
    workgroups: rows,
  };
}

/** accumulate: one element per invocation, acc + part. */
export function accumulateKernel(req: KernelRequest): KernelPlan {
  const n = numel(req.out.shape);
  return {
    inputNames: ['acc', 'part'],
    params: { n },
    body: indent(['if (gid >= params.n) { return; }', 'out[gid] = acc[gid] + part[gid];']),
    workgroupSize: ELEMENTWISE_GROUP,
    workgroups: groupsFor(n, ELEMENTWISE_GROUP),
  };
}

/** kept_targets: one workgroup strides over the targets, counting the kept ones and reporting any outside [0, classes). */
export function keptTargetsKernel(req: KernelRequest): KernelPlan {
  const [n] = (req.inputs[0] as TensorType).shape;
  const body = [
    'var kept = 0.0;',
    `for (var row = lid; row < params.n; row = row + ${GROUP}u) {`,
    '  let label = targets[row];',
    `  ${reportBadIndex('label', 'params.classes', 'row', 'label != IGNORE_INDEX')}`,
    '  kept = kept + select(1.0, 0.0, label == IGNORE_INDEX);',
    '}',
    workgroupReduce('partial', GROUP, 'kept', (a, b) => `(${a} + ${b})`, 'kept_all'),
    'if (lid == 0u) { out[0] = kept_all; }',
  ];
  return {
    inputNames: ['targets'],
    params: { n, classes: intAttr('kept_targets', req.attrs, 'classes') },
    decls: [constDecl('IGNORE_INDEX', 'i32', intAttr('kept_targets', req.attrs, 'ignoreIndex', -100)), reduceDecl('partial', 'f32', GROUP)].join('\n'),
    body: indent(body),
    workgroupSize: GROUP,
    workgroups: 1,
  };
}

export const fusedLinearCeLowerings: Record<string, Lowering> = {
  logsumexp_rows: logsumexpRowsKernel,
  accumulate: accumulateKernel,
  kept_targets: keptTargetsKernel,
};

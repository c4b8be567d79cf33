// WGSL lowerings of the fused linear + cross-entropy's kernels of its own (ir/ops/fused_linear_ce.ts):
// logsumexp_rows, a workgroup per row of a chunk's logits; accumulate, dw's running sum; kept_targets,
// the count of kept rows, which checks every target. The rest of the chunked algorithm is matmuls,
// cross_entropy_rows and one fused elementwise kernel (passes/linear-ce.ts unrolls it); the fused op and
// its gradients lower only to a coded error saying that the unrolling pass is off.

import { KilnError } from '../../ir/errors.ts';
import { LINEAR_CE_OPS } from '../../ir/ops/fused_linear_ce.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import { intAttr } from '../../ir/ops/check.ts';
import { load } from './dtypes.ts';
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

/** accumulate: one element per invocation, acc + part (an f16 part widened to f32). */
export function accumulateKernel(req: KernelRequest): KernelPlan {
  const n = numel(req.out.shape);
  const part = req.inputs[1] as TensorType;
  return {
    inputNames: ['acc', 'part'],
    params: { n },
    body: indent(['if (gid >= params.n) { return; }', `out[gid] = acc[gid] + ${load('part', part.dtype, 'gid')};`]),
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

/**
 * The fused op and its gradients have no kernel of their own: chunk_linear_cross_entropy unrolls them
 * into the kernels above, matmuls and elementwise ones. With that pass switched off and the fusion on,
 * say so, instead of E011's generic "no WGSL lowering".
 */
const needsChunking = (op: string): Lowering => () => {
  throw new KilnError(
    'KILN_E011',
    `${op} runs on WebGPU only in chunks of rows, which the pass chunk_linear_cross_entropy makes, and it is switched off; turn it back on, or switch off fuse_linear_cross_entropy too (passes: { fuse_linear_cross_entropy: false }) to keep lm_head's matmul and cross_entropy unfused`,
  );
};

export const fusedLinearCeLowerings: Record<string, Lowering> = {
  logsumexp_rows: logsumexpRowsKernel,
  accumulate: accumulateKernel,
  kept_targets: keptTargetsKernel,
  ...Object.fromEntries(Object.values(LINEAR_CE_OPS).map((op) => [op, needsChunking(op)])),
};

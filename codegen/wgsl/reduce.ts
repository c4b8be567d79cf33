// WGSL lowerings of the reductions and row ops (the entries live in reduce.ts). Each output element
// (or row) gets one workgroup; its invocations stride over the reduced elements and combine through
// a workgroup tree reduction, accumulating in f32 (i32 for integer sum/amax). f16 operands load as f32
// and f16 outputs round once, at their store (load and store from ./dtypes.ts): every statistic (sums,
// maxima, softmax's max and sum of exp, layer_norm's mean and variance) is f32 whatever the dtype.

import type { KernelPlan, KernelRequest } from './plan.ts';
import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { type DType, type TensorType, numel, stridesOf } from '../../ir/types.ts';
import { dimAttr, intAttr, numAttr, splitAround } from '../../ir/ops/check.ts';
import { reducedDims } from '../../ir/ops/reduce.ts';
import { F32_BITS_WGSL, F32_MAX, constDecl, coordLines, f32FromBits, indent, listParams, load, offsetExpr, reduceDecl, reportBadIndex, store, valueType, wgslLiteral, workgroupReduce } from './helpers.ts';
import type { Lowering } from './plan.ts';

/** Big rows get 256 invocations, short ones 64 (fewer idle lanes). */
function groupFor(size: number): number {
  return size >= 1024 ? 256 : 64;
}

/** Adjacent dims of equal kind (kept or reduced) merged into one; size-1 dims dropped. */
function mergeDims(shape: readonly number[], reduced: readonly number[]): { kept: Dim[]; red: Dim[] } {
  const strides = stridesOf(shape);
  const kept: Dim[] = [];
  const red: Dim[] = [];
  let last: Dim[] | null = null;
  shape.forEach((size, d) => {
    if (size === 1) return;
    const list = reduced.includes(d) ? red : kept;
    const prev = list[list.length - 1];
    // Dims are contiguous within a group when nothing of the other kind sat between them.
    if (last === list && prev) list[list.length - 1] = { size: prev.size * size, stride: strides[d] };
    else list.push({ size, stride: strides[d] });
    last = list;
  });
  return { kept, red };
}
interface Dim {
  size: number;
  stride: number;
}

interface Reduction {
  acc: DType;
  init: string;
  combine: (a: string, b: string) => string;
  finish: (total: string) => string;
}

function reduction(op: string, inDType: DType): Reduction {
  // Integers sum and compare in their own type; a mean, and every float, in f32.
  const acc: DType = op !== 'mean' && DTYPE_INFO[inDType].isInt ? inDType : 'f32';
  if (op === 'amax') return { acc, init: wgslLiteral(DTYPE_INFO[acc].lowest, acc), combine: (a, b) => `max(${a}, ${b})`, finish: (t) => t };
  const finish = op === 'mean' ? (t: string) => `${t} / f32(params.count)` : (t: string) => t;
  return { acc, init: wgslLiteral(0, acc), combine: (a, b) => `(${a} + ${b})`, finish };
}

/**
 * What a fused reduction reads instead of one input `x`: several inputs of the reduced shape, combined
 * per element by `value` (WGSL of the element at index `at`), with its helper declarations.
 */
export interface ReducedOperands {
  readonly names: string[];
  readonly value: (at: string) => string;
  readonly decls?: string;
}

/** Reductions of at most this many elements per output, with at least SERIAL_MIN_OUTPUTS outputs, run one invocation per output. */
const SERIAL_MAX_COUNT = 64;
const SERIAL_MIN_OUTPUTS = 4096;

/**
 * sum/mean/amax over any dims: one workgroup per output element, its invocations striding over the
 * reduced elements. Short reductions with many outputs (split-K partial products summed over their
 * splits) instead give each invocation one output and a serial loop: a workgroup per output would
 * leave most of its invocations idle.
 */
export function reduceKernel(op: string, operands?: ReducedOperands): (req: KernelRequest) => KernelPlan {
  return (req) => {
    const x = req.inputs[0] as TensorType;
    const { kept, red } = mergeDims(x.shape, reducedDims(op, req.attrs, x.shape.length));
    const r = reduction(op, x.dtype);
    const count = numel(red.map((d) => d.size));
    const read = operands ? operands.value('at') : r.acc === x.dtype ? 'x[at]' : `f32(x[at])`;
    const inputNames = operands?.names ?? ['x'];
    const params = {
      count,
      ...listParams('kept_shape', kept.map((d) => d.size)),
      ...listParams('kept_stride', kept.map((d) => d.stride)),
      ...listParams('red_shape', red.map((d) => d.size)),
      ...listParams('red_stride', red.map((d) => d.stride)),
    };
    const outputs = numel(req.out.shape);
    if (count <= SERIAL_MAX_COUNT && outputs >= SERIAL_MIN_OUTPUTS) {
      const body = [
        'if (gid >= params.outputs) { return; }',
        ...coordLines('gid', kept.length, 'kept_shape', 'k'),
        `let base = ${offsetExpr(kept.length, 'k', 'kept_stride')};`,
        `var acc: ${valueType(r.acc)} = ${r.init};`,
        'for (var e = 0u; e < params.count; e = e + 1u) {',
        indent(coordLines('e', red.length, 'red_shape', 'r')),
        `  let at = base + ${offsetExpr(red.length, 'r', 'red_stride')};`,
        `  acc = ${r.combine('acc', read)};`,
        '}',
        `out[gid] = ${store(req.out.dtype, r.finish('acc'))};`,
      ];
      return { inputNames, params: { ...params, outputs }, decls: operands?.decls, body: indent(body), workgroupSize: 256, workgroups: Math.ceil(outputs / 256) };
    }
    const inner = kept[kept.length - 1];
    if (inner && inner.stride === 1 && inner.size >= COLUMN_TILE / 2 && red.every((d) => d.stride >= inner.size)) {
      return columnReduce(r, read, req.out.dtype, inputNames, operands?.decls, kept, red, params);
    }
    const group = groupFor(count);
    const body = [
      ...coordLines('wid', kept.length, 'kept_shape', 'k'),
      `let base = ${offsetExpr(kept.length, 'k', 'kept_stride')};`,
      `var acc: ${valueType(r.acc)} = ${r.init};`,
      `for (var e = lid; e < params.count; e = e + ${group}u) {`,
      indent(coordLines('e', red.length, 'red_shape', 'r')),
      `  let at = base + ${offsetExpr(red.length, 'r', 'red_stride')};`,
      `  acc = ${r.combine('acc', read)};`,
      '}',
      workgroupReduce('partial', group, 'acc', r.combine, 'total'),
      `if (lid == 0u) { out[wid] = ${store(req.out.dtype, r.finish('total'))}; }`,
    ];
    return {
      inputNames,
      params,
      decls: [operands?.decls, reduceDecl('partial', valueType(r.acc), group)].filter(Boolean).join('\n'),
      body: indent(body),
      workgroupSize: group,
      workgroups: numel(req.out.shape),
    };
  };
}

/** Columns (adjacent outputs) per workgroup of the column path, and the invocations sharing each column's rows. */
const COLUMN_TILE = 64;
const COLUMN_LANES = 4;

/**
 * Reductions over outer dims, keeping the innermost one (bias and LayerNorm-weight gradients: a
 * [rows, C] gradient summed over its rows): a workgroup takes COLUMN_TILE adjacent outputs, its
 * invocations reading adjacent elements of each row (coalesced), COLUMN_LANES of them per column
 * striding over the rows, then summing their lanes. The per-output path would read each column
 * with a stride of C. autograd's unbroadcast splits long row ranges first, so there are enough
 * workgroups (ir/autograd.ts).
 */
function columnReduce(r: Reduction, read: string, outDType: DType, inputNames: string[], decls: string | undefined, kept: Dim[], red: Dim[], params: Record<string, number>): KernelPlan {
  const inner = kept[kept.length - 1];
  const outerKept = kept.slice(0, -1);
  const tiles = Math.ceil(inner.size / COLUMN_TILE);
  const body = [
    `let tile = wid % ${tiles}u;`,
    `let col = tile * ${COLUMN_TILE}u + lid % ${COLUMN_TILE}u;`,
    `let lane = lid / ${COLUMN_TILE}u;`,
    `let outer = wid / ${tiles}u;`,
    ...coordLines('outer', outerKept.length, 'kept_shape', 'k'),
    `let base = ${outerKept.length > 0 ? `${offsetExpr(outerKept.length, 'k', 'kept_stride')} + ` : ''}min(col, params.inner - 1u);`,
    `var acc: ${valueType(r.acc)} = ${r.init};`,
    `for (var e = lane; e < params.count; e = e + ${COLUMN_LANES}u) {`,
    indent(coordLines('e', red.length, 'red_shape', 'r')),
    `  let at = base + ${offsetExpr(red.length, 'r', 'red_stride')};`,
    `  acc = ${r.combine('acc', read)};`,
    '}',
    'lanes[lid] = acc;',
    'workgroupBarrier();',
    `if (lane == 0u && col < params.inner) {`,
    `  var total = acc;`,
    `  for (var l = 1u; l < ${COLUMN_LANES}u; l = l + 1u) { total = ${r.combine('total', `lanes[lid + l * ${COLUMN_TILE}u]`)}; }`,
    `  out[outer * params.inner + col] = ${store(outDType, r.finish('total'))};`,
    '}',
  ];
  return {
    inputNames,
    params: { ...params, inner: inner.size },
    decls: [decls, `var<workgroup> lanes: array<${valueType(r.acc)}, ${COLUMN_TILE * COLUMN_LANES}>;`].filter(Boolean).join('\n'),
    body: indent(body),
    workgroupSize: COLUMN_TILE * COLUMN_LANES,
    workgroups: Math.max(1, numel(outerKept.map((d) => d.size))) * tiles,
  };
}

const SENTINEL = wgslLiteral(-F32_MAX, 'f32');

/** softmax along any dim: one workgroup per row; max, sum of exp, then the normalized write. */
export function softmaxKernel(req: KernelRequest): KernelPlan {
  const x = req.inputs[0] as TensorType;
  const { outer, size, inner } = splitAround(x.shape, dimAttr('softmax', req.attrs, 'dim', x.shape.length));
  const group = groupFor(size);
  const loop = (stmt: string) => `for (var e = lid; e < params.size; e = e + ${group}u) { ${stmt} }`;
  const xAt = (at: string) => load('x', x.dtype, at);
  const body = [
    '// Row wid: elements base + e * inner for e < size.',
    'let base = (wid / params.inner) * params.size * params.inner + wid % params.inner;',
    `var row_max = ${SENTINEL};`,
    loop(`row_max = max(row_max, ${xAt('base + e * params.inner')});`),
    workgroupReduce('partial', group, 'row_max', (a, b) => `max(${a}, ${b})`, 'max_all'),
    'var row_sum = 0.0;',
    loop(`row_sum = row_sum + exp(${xAt('base + e * params.inner')} - max_all);`),
    workgroupReduce('partial', group, 'row_sum', (a, b) => `(${a} + ${b})`, 'sum_all'),
    '// Only a row of -inf sums to 0: it gives NaN, as softmax does on the CPU and in PyTorch.',
    `let nan = ${f32FromBits(NaN)};`,
    loop(`let at = base + e * params.inner; out[at] = ${store(req.out.dtype, `select(exp(${xAt('at')} - max_all) / sum_all, nan, sum_all == 0.0)`)};`),
  ];
  return {
    inputNames: ['x'],
    params: { size, inner },
    decls: [F32_BITS_WGSL, reduceDecl('partial', 'f32', group)].join('\n'),
    body: indent(body),
    workgroupSize: group,
    workgroups: outer * inner,
  };
}

/** A layer_norm row's `mean` and `rstd` (1 / sqrt(variance + EPS)) over x[base .. base + c), in two passes, f32. */
function rowStatsLines(group: number, loop: (stmt: string) => string, dtype: DType): string[] {
  const add = (a: string, b: string) => `(${a} + ${b})`;
  return [
    'let base = wid * params.c;',
    'var part = 0.0;',
    loop(`part = part + ${load('x', dtype, 'base + e')};`),
    workgroupReduce('partial', group, 'part', add, 'total'),
    'let mean = total / f32(params.c);',
    'var part_sq = 0.0;',
    loop(`let d = ${load('x', dtype, 'base + e')} - mean; part_sq = part_sq + d * d;`),
    workgroupReduce('partial', group, 'part_sq', add, 'total_sq'),
    'let rstd = inverseSqrt(total_sq / f32(params.c) + EPS);',
  ];
}

/** layer_norm over the last dim: one workgroup per row, mean then variance (two passes, f32). */
export function layerNormKernel(req: KernelRequest): KernelPlan {
  const x = req.inputs[0] as TensorType;
  const c = x.shape[x.shape.length - 1];
  const hasBias = req.inputs.length > 2;
  const group = groupFor(c);
  const loop = (stmt: string) => `for (var e = lid; e < params.c; e = e + ${group}u) { ${stmt} }`;
  const at = (name: string, index: string) => load(name, x.dtype, index); // weight and bias share x's dtype
  const body = [
    ...rowStatsLines(group, loop, x.dtype),
    loop(`out[base + e] = ${store(req.out.dtype, `(${at('x', 'base + e')} - mean) * rstd * ${at('weight', 'e')}${hasBias ? ` + ${at('bias', 'e')}` : ''}`)};`),
  ];
  return {
    inputNames: hasBias ? ['x', 'weight', 'bias'] : ['x', 'weight'],
    params: { c },
    decls: [constDecl('EPS', 'f32', numAttr('layer_norm', req.attrs, 'eps')), reduceDecl('partial', 'f32', group)].join('\n'),
    body: indent(body),
    workgroupSize: group,
    workgroups: c === 0 ? 0 : numel(x.shape) / c,
  };
}

/** layer_norm_backward: one workgroup per row; mean, variance, the two gradient means, then dx. */
export function layerNormBackwardKernel(req: KernelRequest): KernelPlan {
  const x = req.inputs[0] as TensorType;
  const c = x.shape[x.shape.length - 1];
  const group = groupFor(c);
  const loop = (stmt: string) => `for (var e = lid; e < params.c; e = e + ${group}u) { ${stmt} }`;
  const add = (a: string, b: string) => `(${a} + ${b})`;
  const at = (name: string, index: string) => load(name, x.dtype, index); // x, weight and g share one dtype
  const body = [
    ...rowStatsLines(group, loop, x.dtype),
    '// gy = g * weight; the means of gy and of gy * xhat',
    'var part_gy = 0.0;',
    'var part_gyx = 0.0;',
    loop(`let gy = ${at('g', 'base + e')} * ${at('weight', 'e')}; part_gy = part_gy + gy; part_gyx = part_gyx + gy * (${at('x', 'base + e')} - mean) * rstd;`),
    workgroupReduce('partial', group, 'part_gy', add, 'total_gy'),
    workgroupReduce('partial', group, 'part_gyx', add, 'total_gyx'),
    'let gy_mean = total_gy / f32(params.c);',
    'let gyx_mean = total_gyx / f32(params.c);',
    loop(`let xhat = (${at('x', 'base + e')} - mean) * rstd; out[base + e] = ${store(req.out.dtype, `rstd * (${at('g', 'base + e')} * ${at('weight', 'e')} - gy_mean - xhat * gyx_mean)`)};`),
  ];
  return {
    inputNames: ['x', 'weight', 'g'],
    params: { c },
    decls: [constDecl('EPS', 'f32', numAttr('layer_norm_backward', req.attrs, 'eps')), reduceDecl('partial', 'f32', group)].join('\n'),
    body: indent(body),
    workgroupSize: group,
    workgroups: c === 0 ? 0 : numel(x.shape) / c,
  };
}

/** cross_entropy_rows: one workgroup per row; max, sum of exp, then the row's loss (0 when ignored). */
export function crossEntropyRowsKernel(req: KernelRequest): KernelPlan {
  const [rows, c] = (req.inputs[0] as TensorType).shape;
  const group = groupFor(c);
  const loop = (stmt: string) => `for (var e = lid; e < params.c; e = e + ${group}u) { ${stmt} }`;
  const body = [
    'let base = wid * params.c;',
    `var row_max = ${SENTINEL};`,
    loop('row_max = max(row_max, logits[base + e]);'),
    workgroupReduce('partial', group, 'row_max', (a, b) => `max(${a}, ${b})`, 'max_all'),
    'var row_sum = 0.0;',
    loop('row_sum = row_sum + exp(logits[base + e] - max_all);'),
    workgroupReduce('partial', group, 'row_sum', (a, b) => `(${a} + ${b})`, 'sum_all'),
    'let label = targets[wid];',
    'if (lid == 0u) {',
    `  ${reportBadIndex('label', 'params.c', 'wid', 'label != IGNORE_INDEX')}`,
    '  let picked = logits[base + u32(clamp(label, 0, i32(params.c) - 1))];',
    '  out[wid] = select(log(sum_all) + max_all - picked, 0.0, label == IGNORE_INDEX);',
    '}',
  ];
  return {
    inputNames: ['logits', 'targets'],
    params: { c },
    decls: [constDecl('IGNORE_INDEX', 'i32', intAttr('cross_entropy_rows', req.attrs, 'ignoreIndex', -100)), reduceDecl('partial', 'f32', group)].join('\n'),
    body: indent(body),
    workgroupSize: group,
    workgroups: rows,
  };
}

const CE_GROUP = 256;

/**
 * cross_entropy in one workgroup: each invocation takes rows lid, lid + 256, ..., computes their
 * logsumexp serially, and the workgroup sums losses and kept-row counts. Fine for small vocabularies;
 * a row-parallel pair of kernels is the follow-up for GPT-2-sized ones.
 */
export function crossEntropyKernel(req: KernelRequest): KernelPlan {
  const [rows, c] = (req.inputs[0] as TensorType).shape;
  const add = (a: string, b: string) => `(${a} + ${b})`;
  const body = [
    'var loss = 0.0;',
    'var kept = 0.0;',
    `for (var row = lid; row < params.rows; row = row + ${CE_GROUP}u) {`,
    '  let label = targets[row];',
    '  if (label != IGNORE_INDEX) {',
    `    ${reportBadIndex('label', 'params.c', 'row')}`,
    '    let base = row * params.c;',
    `    var row_max = ${SENTINEL};`,
    '    for (var e = 0u; e < params.c; e = e + 1u) { row_max = max(row_max, logits[base + e]); }',
    '    var row_sum = 0.0;',
    '    for (var e = 0u; e < params.c; e = e + 1u) { row_sum = row_sum + exp(logits[base + e] - row_max); }',
    '    let picked = logits[base + u32(clamp(label, 0, i32(params.c) - 1))];',
    '    loss = loss + log(row_sum) + row_max - picked;',
    '    kept = kept + 1.0;',
    '  }',
    '}',
    workgroupReduce('partial', CE_GROUP, 'loss', add, 'loss_all'),
    workgroupReduce('partial', CE_GROUP, 'kept', add, 'kept_all'),
    '// Every row ignored: 0 / 0, which PyTorch reports as NaN; WGSL promises no NaN, so do not rely on it.',
    'if (lid == 0u) { out[0] = loss_all / kept_all; }',
  ];
  return {
    inputNames: ['logits', 'targets'],
    params: { rows, c },
    decls: [constDecl('IGNORE_INDEX', 'i32', intAttr('cross_entropy', req.attrs, 'ignoreIndex', -100)), reduceDecl('partial', 'f32', CE_GROUP)].join('\n'),
    body: indent(body),
    workgroupSize: CE_GROUP,
    workgroups: 1,
  };
}

export const reduceLowerings: Record<string, Lowering> = {
  sum: reduceKernel('sum'),
  mean: reduceKernel('mean'),
  amax: reduceKernel('amax'),
  softmax: softmaxKernel,
  layer_norm: layerNormKernel,
  layer_norm_backward: layerNormBackwardKernel,
  cross_entropy: crossEntropyKernel,
  cross_entropy_rows: crossEntropyRowsKernel,
};

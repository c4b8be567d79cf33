// WGSL for the ops only gradients make. Each output element gathers what lands on it, so no atomics:
// slice_backward reads the gradient where the slice read, zero elsewhere; embedding_backward sums the
// gradient rows whose index is its row, a workgroup per row (see its comment).

import type { KernelPlan, KernelRequest } from './plan.ts';
import { type TensorType, numel, stridesOf } from '../../ir/types.ts';
import { coordLines, generateKernel, indent, listParams, load, reportBadIndex, storageType, store, valueType, wgslLiteral } from './helpers.ts';
import { dimAttr } from '../../ir/ops/check.ts';
import { sliceBounds } from '../../ir/ops/shape.ts';
import type { Lowering } from './plan.ts';

export function sliceBackwardKernel(req: KernelRequest, dim: number, start: number, step: number): KernelPlan {
  const grad = req.inputs[0] as TensorType;
  const rank = req.out.shape.length;
  const terms = [...Array(rank).keys()].map((d) => `${d === dim ? 'j' : `i${d}`} * params.g_stride${d}`);
  const lines = [
    ...coordLines('gid', rank, 'shape', 'i'),
    `// The slice read x at start + j * step along dim ${dim}: write grad there, zero elsewhere.`,
    `let from_start = i${dim} - params.start;`,
    `let j = from_start / params.step;`,
    `let hit = i${dim} >= params.start && from_start % params.step == 0u && j < params.g_len;`,
    `out[gid] = select(${store(req.out.dtype, zero(req.out.dtype))}, ${store(req.out.dtype, load('grad', grad.dtype, `select(0u, ${terms.join(' + ')}, hit)`))}, hit);`,
  ];
  const params = { start, step, g_len: grad.shape[dim], ...listParams('shape', req.out.shape), ...listParams('g_stride', stridesOf(grad.shape)) };
  return generateKernel(req.out, params, ['grad'], '', lines);
}

function zero(dtype: TensorType['dtype']): string {
  return wgslLiteral(0, dtype);
}

const EMBED_GROUP = 256;

/**
 * embedding_backward: one workgroup per weight row r. It walks the indices in chunks of 256: each
 * invocation tests one index against r, a prefix sum over the workgroup orders the hits, and the
 * invocations (one per column, striding over the row) add the hits' gradient rows in token order.
 * Only this workgroup writes row r, so no atomics, and the sums come out the same on every run.
 * Cost: rows x tokens index tests (GPT-2: 50304 x 8192, about a millisecond on an H100), plus one
 * read of each gradient row per token; the gather of the first version read all tokens per element.
 * An f32 row sums in place in `out`. An f16 one sums in f32 registers, one per column the
 * invocation owns (COLS of them: the row's width over 256, the one shape fact in the text), and is
 * stored rounded once at the end, as every f16 kernel accumulates; the CPU reference, summing into
 * f32 in token order, gives the same bits.
 */
export function embeddingBackwardKernel(req: KernelRequest): KernelPlan {
  const idx = req.inputs[1] as TensorType;
  const grad = req.inputs[0] as TensorType;
  const [rows, c] = req.out.shape;
  const inPlace = storageType(req.out.dtype) === valueType(req.out.dtype); // f32 sums in `out`; f16 in registers
  const cols = Math.max(1, Math.ceil(c / EMBED_GROUP));
  const decls = [
    `const GROUP: u32 = ${EMBED_GROUP}u;`,
    ...(inPlace ? [] : [`const COLS: u32 = ${cols}u; // columns per invocation: ceil(dim / GROUP)`]),
    'var<workgroup> scan: array<u32, GROUP>; // inclusive prefix sums of the hit flags',
    'var<workgroup> hits: array<u32, GROUP>; // the chunk\'s tokens with index r, in token order',
  ].join('\n');
  const gradAt = (at: string) => load('grad', grad.dtype, at);
  const body = [
    'let r = wid;',
    ...(inPlace
      ? ['for (var col = lid; col < params.dim; col += GROUP) { out[r * params.dim + col] = 0.0; }']
      : ['var acc: array<f32, COLS>; // column lid + k * GROUP sums in acc[k]']),
    'for (var base = 0u; base < params.tokens; base += GROUP) {',
    '  let t = base + lid;',
    '  let id = idx[min(t, params.tokens - 1u)];',
    `  ${reportBadIndex('id', 'params.num', 't', 'r == 0u && t < params.tokens')} // every row reads every index: row 0 reports`,
    '  let hit = t < params.tokens && id == i32(r);',
    '  scan[lid] = select(0u, 1u, hit);',
    '  workgroupBarrier();',
    '  for (var step = 1u; step < GROUP; step = step * 2u) {',
    '    let add = select(0u, scan[lid - min(lid, step)], lid >= step);',
    '    workgroupBarrier();',
    '    scan[lid] += add;',
    '    workgroupBarrier();',
    '  }',
    '  if (hit) { hits[scan[lid] - 1u] = t; }',
    '  let count = workgroupUniformLoad(&scan[GROUP - 1u]);',
    ...(inPlace
      ? [
        '  for (var col = lid; col < params.dim; col += GROUP) {',
        '    var acc = out[r * params.dim + col];',
        `    for (var h = 0u; h < count; h++) { acc += ${gradAt('hits[h] * params.dim + col')}; }`,
        '    out[r * params.dim + col] = acc;',
        '  }',
      ]
      : [
        '  for (var k = 0u; k < COLS; k++) {',
        '    let col = lid + k * GROUP;',
        '    if (col >= params.dim) { break; }',
        `    for (var h = 0u; h < count; h++) { acc[k] += ${gradAt('hits[h] * params.dim + col')}; }`,
        '  }',
      ]),
    '  workgroupBarrier(); // scan and hits are rewritten by the next chunk',
    '}',
    ...(inPlace ? [] : [`for (var k = 0u; k < COLS; k++) { let col = lid + k * GROUP; if (col < params.dim) { out[r * params.dim + col] = ${store(req.out.dtype, 'acc[k]')}; } }`]),
  ];
  return { inputNames: ['grad', 'idx'], params: { dim: c, tokens: numel(idx.shape), num: rows }, decls, body: indent(body), workgroupSize: EMBED_GROUP, workgroups: rows };
}

/** concat: each output element reads the input whose range along `dim` holds its coordinate there. */
export function concatKernel(req: KernelRequest, dim: number, sizes: readonly number[]): KernelPlan {
  const rank = req.out.shape.length;
  const names = sizes.map((_, k) => `x${k}`);
  const lines = [...coordLines('gid', rank, 'shape', 'i')];
  let start = 0;
  const reads: string[] = [];
  const params: Record<string, number> = { ...listParams('shape', req.out.shape) };
  sizes.forEach((size, k) => {
    const inShape = req.out.shape.map((d, j) => (j === dim ? size : d));
    Object.assign(params, listParams(`s${k}_`, stridesOf(inShape)), { [`start${k}`]: start });
    const terms = [...Array(rank).keys()].map((d) => (d === dim ? `(i${d} - params.start${k}) * params.s${k}_${d}` : `i${d} * params.s${k}_${d}`));
    const read = `out[gid] = ${store(req.out.dtype, load(names[k], req.out.dtype, terms.join(' + ')))};`;
    reads.push(read);
    start += size;
  });
  // The parts in order: the first whose range ends past the coordinate.
  reads.forEach((read, k) => {
    const last = k === reads.length - 1;
    const test = `i${dim} < params.start${k + 1}`;
    lines.push(reads.length === 1 ? read : k === 0 ? `if (${test}) { ${read} }` : last ? `else { ${read} }` : `else if (${test}) { ${read} }`);
  });
  return generateKernel(req.out, params, names, '', lines);
}

export const backwardLowerings: Record<string, Lowering> = {
  embedding_backward: (req) => embeddingBackwardKernel(req),
  slice_backward(req) {
    const dim = dimAttr('slice_backward', req.attrs, 'dim', req.out.shape.length);
    const { start, step } = sliceBounds(req.attrs, req.out.shape[dim]);
    return sliceBackwardKernel(req, dim, start, step);
  },
  concat(req) {
    const dim = dimAttr('concat', req.attrs, 'dim', req.out.shape.length);
    const sizes = (req.inputs as TensorType[]).map((t) => t.shape[dim]);
    return concatKernel(req, dim, sizes);
  },
};

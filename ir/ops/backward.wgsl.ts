// WGSL for the ops only gradients make. Each output element gathers what lands on it, so no atomics:
// slice_backward reads the gradient where the slice read, zero elsewhere; embedding_backward sums the
// gradient rows whose index is its row (a loop over all indices: O(rows x dim x tokens), simple and
// exact, fine for char-level vocabularies; a sorted or atomic scatter is the fast path for 50k rows).

import type { KernelPlan, KernelRequest } from '../kernel.ts';
import { type TensorType, numel, stridesOf } from '../types.ts';
import { coordLines, generateKernel, listParams, load, store } from './wgsl.ts';

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
  return dtype === 'bool' ? 'false' : dtype === 'i32' ? '0' : '0.0';
}

export function embeddingBackwardKernel(req: KernelRequest): KernelPlan {
  const idx = req.inputs[1] as TensorType;
  const [, c] = req.out.shape;
  const lines = [
    'let row = i32(gid / params.dim);',
    'let col = gid % params.dim;',
    'var acc = 0.0;',
    'for (var t = 0u; t < params.tokens; t++) {',
    '  if (idx[t] == row) { acc += grad[t * params.dim + col]; }',
    '}',
    'out[gid] = acc;',
  ];
  return generateKernel(req.out, { dim: c, tokens: numel(idx.shape) }, ['grad', 'idx'], '', lines);
}

// WGSL lowerings of matmul and embedding (the entries live in linalg.ts).

import type { KernelPlan, KernelRequest } from '../kernel.ts';
import { type TensorType, numel } from '../types.ts';
import { matmulDims } from './linalg.ts';
import { broadcastStrides, coordLines, generateKernel, indent, listParams, offsetExpr } from './wgsl.ts';

// Each workgroup computes a 64x64 output tile; each of its 256 invocations a 4x4 block of it,
// stepping through K 16 at a time with both operand tiles staged in workgroup memory (8 KiB).
const TILE = 64;
const TILE_K = 16;
const GROUP = 256;

/**
 * Batched matmul. Batch dims broadcast through per-operand batch strides (0 where broadcast);
 * transposes are handled in the tile loads, which read along each operand's contiguous dim.
 */
export function matmulKernel(req: KernelRequest): KernelPlan {
  const [a, b] = req.inputs as TensorType[];
  const transposeA = req.attrs.transposeA === true;
  const transposeB = req.attrs.transposeB === true;
  const { batch, m, k, n } = matmulDims(a, b, transposeA, transposeB);
  const rank = batch.length;
  const tilesM = Math.ceil(m / TILE);
  const tilesN = Math.ceil(n / TILE);
  const aStrides = broadcastStrides(batch, a.shape.slice(0, -2)).map((s) => s * m * k);
  const bStrides = broadcastStrides(batch, b.shape.slice(0, -2)).map((s) => s * k * n);

  // Tile element e (0..1023) of this invocation's share: which (row/col, k) it loads, contiguous dim fastest.
  const loadA = transposeA
    ? ['let mm = e % 64u;', 'let kk = e / 64u;', 'let index = a_base + (k0 + kk) * params.m + row0 + mm;']
    : ['let kk = e % 16u;', 'let mm = e / 16u;', 'let index = a_base + (row0 + mm) * params.k + k0 + kk;'];
  const loadB = transposeB
    ? ['let kk = e % 16u;', 'let nn = e / 16u;', 'let index = b_base + (col0 + nn) * params.k + k0 + kk;']
    : ['let nn = e % 64u;', 'let kk = e / 64u;', 'let index = b_base + (k0 + kk) * params.n + col0 + nn;'];

  const body = [
    'let tile_n = wid % params.tiles_n;',
    'let tile_m = (wid / params.tiles_n) % params.tiles_m;',
    'let batch = wid / (params.tiles_n * params.tiles_m);',
    ...coordLines('batch', rank, 'batch_shape', 'i'),
    `let a_base = ${offsetExpr(rank, 'i', 'a_batch_stride')};`,
    `let b_base = ${offsetExpr(rank, 'i', 'b_batch_stride')};`,
    `let row0 = tile_m * ${TILE}u;`,
    `let col0 = tile_n * ${TILE}u;`,
    'let tx = lid % 16u;',
    'let ty = lid / 16u;',
    'var acc: array<array<f32, 4>, 4>;',
    `for (var k0 = 0u; k0 < params.k; k0 = k0 + ${TILE_K}u) {`,
    '  for (var t = 0u; t < 4u; t = t + 1u) {',
    `    let e = lid + t * ${GROUP}u;`,
    '    {',
    indent(loadA, '      '),
    '      let inside = row0 + mm < params.m && k0 + kk < params.k;',
    '      a_tile[kk * 64u + mm] = select(0.0, a[select(0u, index, inside)], inside);',
    '    }',
    '    {',
    indent(loadB, '      '),
    '      let inside = col0 + nn < params.n && k0 + kk < params.k;',
    '      b_tile[kk * 64u + nn] = select(0.0, b[select(0u, index, inside)], inside);',
    '    }',
    '  }',
    '  workgroupBarrier();',
    `  for (var kk = 0u; kk < ${TILE_K}u; kk = kk + 1u) {`,
    '    var a_reg: array<f32, 4>;',
    '    var b_reg: array<f32, 4>;',
    '    for (var i = 0u; i < 4u; i = i + 1u) { a_reg[i] = a_tile[kk * 64u + ty * 4u + i]; }',
    '    for (var j = 0u; j < 4u; j = j + 1u) { b_reg[j] = b_tile[kk * 64u + tx * 4u + j]; }',
    '    for (var i = 0u; i < 4u; i = i + 1u) {',
    '      for (var j = 0u; j < 4u; j = j + 1u) { acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]); }',
    '    }',
    '  }',
    '  workgroupBarrier();',
    '}',
    'let out_base = batch * params.m * params.n;',
    'for (var i = 0u; i < 4u; i = i + 1u) {',
    '  for (var j = 0u; j < 4u; j = j + 1u) {',
    '    let row = row0 + ty * 4u + i;',
    '    let col = col0 + tx * 4u + j;',
    '    if (row < params.m && col < params.n) { out[out_base + row * params.n + col] = acc[i][j]; }',
    '  }',
    '}',
  ];
  return {
    inputNames: ['a', 'b'],
    params: {
      m, n, k,
      tiles_m: tilesM,
      tiles_n: tilesN,
      ...listParams('batch_shape', batch),
      ...listParams('a_batch_stride', aStrides),
      ...listParams('b_batch_stride', bStrides),
    },
    decls: [`// ${transposeA ? 'a is [K, M]' : 'a is [M, K]'}, ${transposeB ? 'b is [N, K]' : 'b is [K, N]'}; tiles are stored k-major.`,
      `var<workgroup> a_tile: array<f32, ${TILE * TILE_K}>;`, `var<workgroup> b_tile: array<f32, ${TILE * TILE_K}>;`].join('\n'),
    body: indent(body),
    workgroupSize: GROUP,
    workgroups: numel(batch) * tilesM * tilesN,
  };
}

/** embedding: out[r, c] = weight[idx[r], c]; an index outside the table is clamped (the CPU reference throws). */
export function embeddingKernel(req: KernelRequest): KernelPlan {
  const [weight] = req.inputs as TensorType[];
  const [rows, c] = weight.shape;
  return generateKernel(req.out, { c, rows }, ['weight', 'idx'], '', [
    'let r = gid / params.c;',
    'let row = u32(clamp(idx[r], 0, i32(params.rows) - 1));',
    'out[gid] = weight[row * params.c + gid % params.c];',
  ]);
}

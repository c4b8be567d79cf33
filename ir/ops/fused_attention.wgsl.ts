// The flash-attention kernel that fused_attention and sdpa (without dropout) lower to.
//
// Design (FlashAttention-2's forward pass, in plain WGSL without subgroups):
// - A workgroup takes ROWS query rows of one batch-head. Each row belongs to SLICES invocations;
//   each owns every SLICES-th vec4 of the head dims, and keeps its share of q (scaled once on load)
//   and of the output accumulator in registers.
// - Keys go by in tiles of KEYS: the whole workgroup stages k and v rows in workgroup memory
//   (zero-padded past the head dim and the last key), then every invocation scores its row
//   against the tile. With SLICES > 1 the slices' partial dot products meet in workgroup memory.
// - Online softmax in f32: a running max and sum per row; the accumulator is rescaled when the
//   max grows. Masked scores sit at a finite sentinel (WGSL does not promise infinities) and count
//   for nothing; a row that saw no key writes zeros.
// - Causal: the key loop stops at the last tile the workgroup's rows can see; only the diagonal
//   tile masks per element.
// Shapes (L, S, head dims, batch, mask strides) live in params; the text depends only on the
// tiling (chosen from the head dims), the scale, causal, scaling and the mask's dtype and rank.

import { KilnError } from '../errors.ts';
import type { KernelPlan, KernelRequest } from '../kernel.ts';
import { type TensorType, numel } from '../types.ts';
import { attentionDims } from './attention.ts';
import type { AttentionSpec } from './fused_attention.ts';
import { broadcastStrides, constDecl, coordLines, indent, listParams, offsetExpr } from './wgsl.ts';

/** How the work is cut: see the file comment. */
export interface FlashTiling {
  /** Invocations per query row, each owning every SLICES-th vec4 of the head dims: 1, 2 or 4. */
  readonly slices: number;
  /** Query rows per workgroup. */
  readonly rows: number;
  /** Keys per K/V tile staged in workgroup memory. */
  readonly keys: number;
  /** vec4s of q (and of each staged k row) one invocation owns. */
  readonly qVec4: number;
  /** vec4s of v (and of the output row) one invocation owns. */
  readonly oVec4: number;
  readonly workgroupSize: number;
  readonly workgroupBytes: number;
}

// WebGPU's default maxComputeWorkgroupStorageSize: every device has at least this much.
const WORKGROUP_BYTES = 16384;
const ROWS = 64;
// At most 32 head dims (8 vec4) per invocation keeps q and the accumulator in registers up to D = 128.
const DIMS_PER_SLICE = 32;
const MAX_KEYS = 16;
const MIN_KEYS = 4;

/** The tiling for head dims d (q, k) and dv (v, out); null when even MIN_KEYS keys do not fit in workgroup memory. */
export function flashTiling(d: number, dv: number): FlashTiling | null {
  const widest = Math.max(d, dv);
  const slices = widest <= DIMS_PER_SLICE ? 1 : widest <= 2 * DIMS_PER_SLICE ? 2 : 4;
  const qVec4 = Math.max(1, Math.ceil(Math.ceil(d / 4) / slices));
  const oVec4 = Math.max(1, Math.ceil(Math.ceil(dv / 4) / slices));
  const bytes = (keys: number) => keys * slices * (qVec4 + oVec4) * 16 + (slices > 1 ? keys * ROWS * slices * 4 : 0);
  let keys = MAX_KEYS;
  while (keys > MIN_KEYS && bytes(keys) > WORKGROUP_BYTES) keys /= 2;
  if (bytes(keys) > WORKGROUP_BYTES) return null;
  return { slices, rows: ROWS, keys, qVec4, oVec4, workgroupSize: ROWS * slices, workgroupBytes: bytes(keys) };
}

/** The flash kernel for q, k, v (and an optional bool or additive f32 mask) in req.inputs. */
export function flashAttentionKernel(req: KernelRequest, spec: AttentionSpec): KernelPlan {
  const [q, k, v, mask] = req.inputs as (TensorType | undefined)[] as TensorType[];
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  const tiling = flashTiling(d, dv);
  if (!tiling) throw new KilnError('KILN_E011', `fused_attention head dims ${d} and ${dv} do not fit the flash kernel's workgroup memory (${WORKGROUP_BYTES} bytes)`);
  const rowTiles = Math.ceil(l / tiling.rows);
  const params: Record<string, number> = { l, s, d, dv, row_tiles: rowTiles };
  if (mask) {
    const strides = broadcastStrides([...batch, l, s], mask.shape);
    Object.assign(params, listParams('batch_shape', batch), listParams('mask_stride', strides.slice(0, -2)));
    params.mask_row_stride = strides[batch.length];
    params.mask_col_stride = strides[batch.length + 1];
  }
  return {
    inputNames: mask ? ['q', 'k', 'v', 'mask'] : ['q', 'k', 'v'],
    params,
    decls: flashDecls(tiling, spec),
    body: indent(flashBody(tiling, spec, mask, batch.length)).replace(/^\s+$/gm, ''),
    workgroupSize: tiling.workgroupSize,
    workgroups: numel(batch) * rowTiles,
  };
}

function flashDecls(t: FlashTiling, spec: AttentionSpec): string {
  const [qScale, kScale] = spec.scaling === 'pre_qk' ? [Math.sqrt(spec.scale), Math.sqrt(spec.scale)] : [spec.scale, 1];
  const lines = [
    `const ROWS: u32 = ${t.rows}u; // query rows per workgroup`,
    `const SLICES: u32 = ${t.slices}u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims`,
    `const KEYS: u32 = ${t.keys}u; // keys per K/V tile in workgroup memory`,
    `const Q_VEC4: u32 = ${t.qVec4}u; // vec4s of q (and of each k row) per invocation`,
    `const O_VEC4: u32 = ${t.oVec4}u; // vec4s of v (and of the output row) per invocation`,
    `const K_ROW: u32 = SLICES * Q_VEC4; // vec4s per staged k row: the head dim, zero-padded`,
    `const V_ROW: u32 = SLICES * O_VEC4;`,
    `const WORKGROUP: u32 = ROWS * SLICES;`,
    `${constDecl('Q_SCALE', 'f32', qScale)} // applied once as q is loaded (${spec.scaling === 'pre_qk' ? 'sqrt(scale), "pre_qk"' : 'the softmax scale, "post"'})`,
    ...(spec.scaling === 'pre_qk' ? [`${constDecl('K_SCALE', 'f32', kScale)} // applied as k is staged: q and k each carry sqrt(scale)`] : []),
    '// A masked score: finite, as WGSL does not promise infinities. Scores and additive mask values',
    '// at or below MASKED_BELOW (-inf included) are masked.',
    'const MASKED: f32 = -3.0e38;',
    'const MASKED_BELOW: f32 = -1.0e30;',
    'var<workgroup> k_tile: array<vec4<f32>, KEYS * K_ROW>; // key c at c * K_ROW',
    'var<workgroup> v_tile: array<vec4<f32>, KEYS * V_ROW>;',
    ...(t.slices > 1 ? [`var<workgroup> partial_dots: array<vec${t.slices}<f32>, KEYS * ROWS>; // [key][row]: component s is slice s's share of q.k`] : []),
    '',
    ...['q', 'k', 'v'].map((name) => rowLoader(name, name === 'v' ? 'dv' : 'd')),
  ];
  return lines.join('\n');
}

/** `load_x(row, col)`: four elements of row `row` of x from `col` on, zero past the row's end (head dims need not be a multiple of 4). */
function rowLoader(name: string, len: 'd' | 'dv'): string {
  return `fn load_${name}(row: u32, col: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (col + c < params.${len}) { x[c] = ${name}[row * params.${len} + col + c]; }
  }
  return x;
}`;
}

/** The score of key j for this row from its dot product `dot` (q already scaled): mask applied, MASKED if masked. */
function scoreLines(mask: TensorType | undefined): string[] {
  if (!mask) return ['score = dots[c];'];
  const at = 'mask[mask_row + j * params.mask_col_stride]';
  if (mask.dtype === 'bool') return [`if (${at} != 0u) { score = dots[c]; }`];
  return [`let bias = ${at};`, 'if (bias > MASKED_BELOW) { score = dots[c] + bias; }'];
}

function flashBody(t: FlashTiling, spec: AttentionSpec, mask: TensorType | undefined, batchRank: number): string[] {
  const kScale = spec.scaling === 'pre_qk' ? ' * K_SCALE' : '';
  const ones = `vec${t.slices}<f32>(1.0)`;
  const exchange = t.slices > 1
    ? [
      '  // Each slice holds part of every q.k: add the parts up through workgroup memory.',
      '  for (var c = 0u; c < KEYS; c = c + 1u) { partial_dots[c * ROWS + row][slice] = dots[c]; }',
      '  workgroupBarrier();',
      `  for (var c = 0u; c < KEYS; c = c + 1u) { dots[c] = dot(partial_dots[c * ROWS + row], ${ones}); }`,
    ]
    : [];
  const maskRow = mask
    ? [...coordLines('bh', batchRank, 'batch_shape', 'b'),
      `let mask_row = ${offsetExpr(batchRank, 'b', 'mask_stride')} + i * params.mask_row_stride;`]
    : [];
  return [
    ...(spec.causal ? ['// Causal row tiles go longest first, so the short ones fill in at the end.'] : []),
    'let bh = wid / params.row_tiles;',
    `let row_tile = ${spec.causal ? 'params.row_tiles - 1u - wid % params.row_tiles' : 'wid % params.row_tiles'};`,
    'let row0 = row_tile * ROWS;',
    'let row = lid / SLICES;',
    'let slice = lid % SLICES;',
    'let i = row0 + row;',
    'let row_valid = i < params.l;',
    'let q_row = bh * params.l + i;',
    'let kv_row0 = bh * params.s;',
    ...maskRow,
    '',
    'var q_own: array<vec4<f32>, Q_VEC4>;',
    'if (row_valid) {',
    '  for (var u = 0u; u < Q_VEC4; u = u + 1u) { q_own[u] = load_q(q_row, (u * SLICES + slice) * 4u) * Q_SCALE; }',
    '}',
    'var acc: array<vec4<f32>, O_VEC4>;',
    'var run_max = MASKED;',
    'var run_sum = 0.0;',
    // key_end is uniform over the workgroup (barriers inside the loop); row_end is this row's own.
    spec.causal
      ? '// Causal: tiles wholly above the diagonal are never loaded; the diagonal tile masks per key.\nlet key_end = min(params.s, row0 + ROWS);\nlet row_end = select(0u, min(key_end, i + 1u), row_valid);'
      : 'let key_end = params.s;\nlet row_end = select(0u, key_end, row_valid);',
    '',
    'for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {',
    '  // Stage KEYS rows of k and v, zero past the last key.',
    '  for (var e = lid; e < KEYS * K_ROW; e = e + WORKGROUP) {',
    '    let j = j0 + e / K_ROW;',
    '    var x = vec4<f32>(0.0);',
    `    if (j < params.s) { x = load_k(kv_row0 + j, (e % K_ROW) * 4u)${kScale}; }`,
    '    k_tile[e] = x;',
    '  }',
    '  for (var e = lid; e < KEYS * V_ROW; e = e + WORKGROUP) {',
    '    let j = j0 + e / V_ROW;',
    '    var x = vec4<f32>(0.0);',
    '    if (j < params.s) { x = load_v(kv_row0 + j, (e % V_ROW) * 4u); }',
    '    v_tile[e] = x;',
    '  }',
    '  workgroupBarrier();',
    '',
    '  var dots: array<f32, KEYS>;',
    '  for (var c = 0u; c < KEYS; c = c + 1u) {',
    '    var sum4 = vec4<f32>(0.0);',
    '    for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], k_tile[c * K_ROW + u * SLICES + slice], sum4); }',
    '    dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;',
    '  }',
    ...exchange,
    '',
    '  // Scores, then the online softmax: rescale what came before when the running max grows.',
    '  var tile_max = MASKED;',
    '  for (var c = 0u; c < KEYS; c = c + 1u) {',
    '    let j = j0 + c;',
    '    var score = MASKED;',
    '    if (j < row_end) {',
    ...indent(scoreLines(mask), '      ').split('\n'),
    '    }',
    '    dots[c] = score;',
    '    tile_max = max(tile_max, score);',
    '  }',
    '  let new_max = max(run_max, tile_max);',
    '  // Until a key is seen the accumulator and sum are zero, and the sentinel must not enter exp.',
    '  let alpha = select(0.0, exp(run_max - new_max), run_max > MASKED_BELOW);',
    '  run_sum = run_sum * alpha;',
    '  for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = acc[u] * alpha; }',
    '  for (var c = 0u; c < KEYS; c = c + 1u) {',
    '    let p = select(0.0, exp(dots[c] - new_max), dots[c] > MASKED_BELOW);',
    '    run_sum = run_sum + p;',
    '    for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = fma(vec4<f32>(p), v_tile[c * V_ROW + u * SLICES + slice], acc[u]); }',
    '  }',
    '  run_max = new_max;',
    '  // The next tile overwrites k_tile, v_tile (and partial_dots) only after every row is done with them.',
    '  workgroupBarrier();',
    '}',
    '',
    'if (row_valid) {',
    '  // A row with no kept key has run_sum 0: it writes zeros.',
    '  let inv_sum = select(0.0, 1.0 / run_sum, run_sum > 0.0);',
    '  for (var u = 0u; u < O_VEC4; u = u + 1u) {',
    '    let col = (u * SLICES + slice) * 4u;',
    '    let value = acc[u] * inv_sum;',
    '    for (var c = 0u; c < 4u; c = c + 1u) {',
    '      if (col + c < params.dv) { out[q_row * params.dv + col + c] = value[c]; }',
    '    }',
    '  }',
    '}',
  ];
}

// The kernels of the flash-attention backward (ir/ops/attention_backward.ts): attention_lse and
// fused_attention_backward wrt q, k and v. One generator writes all four; they differ in which rows
// a workgroup owns and which stream past it in tiles (FlashAttention-2's split):
//   mode  owns (in registers)     streams (tiles in workgroup memory)    accumulates
//   lse   q rows                  k                                      running max and sum
//   q     q, grad_out rows        k, v                                   dq += dS k
//   k     k, v rows               q, grad_out, lse, delta                dk += dS^T q
//   v     k rows                  q, grad_out, lse                       dv += P^T grad_out
//   kv    k, v rows               q, grad_out, lse, delta                dk and dv at once, written side by side
// Layout as in the forward kernel (fused_attention.ts, whose comments say what ran fast on the
// H100): ROWS owned rows per workgroup, SLICES invocations per row each owning every SLICES-th vec4
// of the head dims, the next tile loaded into registers while this one is worked through, the
// slices' partial dot products added up through workgroup memory, scores in base 2 (log2(e) folded
// into the owned row's scale, additive mask values converted as they are read; lse is base 2 already).
// P = exp2((score - M) - L) is recomputed per (row, streamed row) pair and never stored; the only
// O(L*S) work is arithmetic. Causal: query-owning kernels stop at the diagonal tile, key-owning
// kernels start their query loop at their first key (tiles wholly above the diagonal are never
// loaded), and rows skip the arithmetic of tiles they cannot see. Masked scores are -inf, scored as
// the forward kernel scores them (maskedScore), and weigh nothing, but in a row of nothing else,
// where P is NaN (emptyRows "nan") or 0 ("zero"); a key the bool mask drops gets dS = 0.
// Dropout (the forward's dropoutP, seed, rng): each pair's keep factor Z (0, or 1/(1-p)) is redrawn
// from dropout's hash at the forward's index (b*L+i)*S+j; dP and the dV update take it.
// f16 (always "pre_qk"): the owned and streamed q and k rows are multiplied by sqrt(scale) and rounded
// to f16 as they are loaded, as the forward kernel rounds them (so P is the forward's); the tiles hold
// f16, values are f32 once read (lse, delta, dot products, dS, the accumulators), and the gradients are
// stored in f16.
// Shapes live in params; the text depends on the mode, tiling, scale, scaling, causal, dropout, the dtype, and the mask's dtype and rank.

import { KilnError } from '../../ir/errors.ts';
import { DEFAULT_KERNEL_LIMITS, type KernelPlan, type KernelRequest } from './plan.ts';
import { type DType, type TensorType, numel } from '../../ir/types.ts';
import { type AttentionSpec, attentionDims } from '../../ir/ops/attention.ts';
import { type AttentionWrt, backwardOperands } from '../../ir/ops/attention_backward.ts';
import { type BackwardMode, type BackwardTiling, ROLES, backwardTiling, stagedScalars } from '../../ir/ops/attention_backward.tiling.ts';
import { ROUND_F16_WGSL, dropoutDecls, roundsQk, seedLine } from './attention.ts';
import { type KernelDropout, additiveMask, fromTile, kernelDropout, maskDecls, maskedScore, ownedQk, rowLoader, scaledQk, tileVec4, toTile } from './fused_attention.ts';
import { load, store } from './dtypes.ts';
import { F32_BITS_WGSL, broadcastStrides, constDecl, coordLines, f32FromBits, indent, listParams, offsetExpr } from './helpers.ts';
import { attentionSpec } from '../../ir/ops/fused_attention.ts';
import { attentionWrt } from '../../ir/ops/attention_backward.ts';
import type { Lowering } from './plan.ts';

const LOG2E = Math.LOG2E;

/** attention_lse(q, k, mask?): the kernel. */
export function attentionLseKernel(req: KernelRequest, spec: AttentionSpec, tiling?: BackwardTiling): KernelPlan {
  const [q, k, mask] = req.inputs as (TensorType | undefined)[] as TensorType[];
  return backwardKernel('lse', { q, k, v: k, mask }, req, spec, tiling);
}

/** fused_attention_backward(q, k, v, mask?, grad_out, lse, delta) {wrt}: the kernel. */
export function attentionBackwardKernel(req: KernelRequest, spec: AttentionSpec, wrt: AttentionWrt, tiling?: BackwardTiling): KernelPlan {
  const { q, k, v, mask } = backwardOperands(req.inputs as TensorType[], req.attrs);
  return backwardKernel(wrt, { q, k, v, mask }, req, spec, tiling);
}

function backwardKernel(mode: BackwardMode, io: { q: TensorType; k: TensorType; v: TensorType; mask?: TensorType }, req: KernelRequest, spec: AttentionSpec, tiling?: BackwardTiling): KernelPlan {
  const { q, k, v, mask } = io;
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  const r = ROLES[mode];
  const limits = req.limits ?? DEFAULT_KERNEL_LIMITS;
  const dtype = q.dtype;
  const t = tiling ?? backwardTiling(mode, d, dv, limits, dtype);
  if (!t) throw new KilnError('KILN_E011', `attention backward (${mode}) head dims ${d} and ${dv} do not fit workgroup memory (${limits.maxComputeWorkgroupStorageSize} bytes)`);
  const [ownRows, streamRows] = r.own === 'query' ? [l, s] : [s, l];
  const tiles = Math.ceil(ownRows / t.rows);
  const params: Record<string, number> = { own_rows: ownRows, stream_rows: streamRows, d, dv, tiles };
  // Elements per output row: dk and dv side by side for kv.
  if (mode !== 'lse') params.out_row = (r.acc.includes('x') ? d : 0) + (r.acc.includes('y') ? dv : 0);
  if (mask) {
    const strides = broadcastStrides([...batch, l, s], mask.shape);
    const [rowStride, colStride] = strides.slice(-2);
    Object.assign(params, listParams('batch_shape', batch), listParams('mask_stride', strides.slice(0, -2)));
    params.mask_own_stride = r.own === 'query' ? rowStride : colStride;
    params.mask_stream_stride = r.own === 'query' ? colStride : rowStride;
  }
  const maskName = mask ? ['mask'] : [];
  const dropout = mode === 'lse' ? null : kernelDropout(req, 'fused_attention_backward');
  const inputNames = mode === 'lse' ? ['q', 'k', ...maskName] : ['q', 'k', 'v', ...maskName, 'grad_out', 'lse', 'delta', ...(dropout?.rng ? ['rng'] : [])];
  return {
    inputNames,
    params,
    decls: [backwardDecls(mode, t, spec, dtype, d, dv, mask), ...(dropout ? [dropoutDecls(dropout.p, dropout.seed, dropout.rng)] : [])].join('\n'),
    body: indent(backwardBody(mode, t, spec, dtype, mask, batch.length, dropout)).replace(/^\s+$/gm, ''),
    workgroupSize: t.workgroupSize,
    workgroups: numel(batch) * tiles,
  };
}

/** vec4s of the x and y tiles each invocation loads per tile. */
function fetchCounts(t: BackwardTiling): { x: number; y: number } {
  return { x: Math.ceil((t.tile * t.slices * t.aVec4) / t.workgroupSize), y: Math.ceil((t.tile * t.slices * t.bVec4) / t.workgroupSize) };
}

function backwardDecls(mode: BackwardMode, t: BackwardTiling, spec: AttentionSpec, dtype: DType, d: number, dv: number, mask: TensorType | undefined): string {
  const r = ROLES[mode];
  const root = Math.sqrt(spec.scale);
  const preQk = spec.scaling === 'pre_qk';
  // f16 "pre_qk" rounds the owned row times sqrt(scale) (X_SCALE) to f16 first, as the streamed ones, then takes log2(e).
  const rounds = roundsQk(dtype, spec);
  const fetches = fetchCounts(t);
  const exchange = (name: string) => `var<workgroup> ${name}: array<vec${t.slices}<f32>, TILE * ROWS>; // [streamed row][owned row]: component s is slice s's share`;
  const loaders = [[r.a, 'd', d], [r.x, 'd', d], ...(r.b ? [[r.b, 'dv', dv]] : []), ...(r.y ? [[r.y, 'dv', dv]] : [])] as [string, 'd' | 'dv', number][];
  return [
    `// ${r.own === 'query' ? 'Query' : 'Key'} rows are owned; ${r.own === 'query' ? 'keys' : 'queries'} stream past in tiles.`,
    `const ROWS: u32 = ${t.rows}u; // owned rows per workgroup`,
    `const SLICES: u32 = ${t.slices}u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims`,
    `const TILE: u32 = ${t.tile}u; // streamed rows per tile in workgroup memory`,
    `const A_VEC4: u32 = ${t.aVec4}u; // vec4s of a D-wide row per invocation`,
    `const B_VEC4: u32 = ${t.bVec4}u; // vec4s of a Dv-wide row per invocation`,
    'const X_ROW: u32 = SLICES * A_VEC4; // vec4s per staged D-wide row, zero-padded',
    ...(r.y ? ['const Y_ROW: u32 = SLICES * B_VEC4;'] : []),
    'const WORKGROUP: u32 = ROWS * SLICES;',
    `const X_FETCHES: u32 = ${fetches.x}u; // vec4s of each ${r.x} tile one invocation loads`,
    ...(r.y ? [`const Y_FETCHES: u32 = ${fetches.y}u;`] : []),
    `${constDecl('A_SCALE', 'f32', (rounds ? 1 : preQk ? root : spec.scale) * LOG2E)} // on the owned ${r.a} row: ${rounds ? 'log2(e) for exp2, after X_SCALE and the rounding to f16' : `${preQk ? 'sqrt(scale), "pre_qk"' : 'the softmax scale, "post"'}, times log2(e) for exp2`}`,
    ...(preQk ? [`${constDecl('X_SCALE', 'f32', root)} // on the streamed ${r.x} rows${rounds ? ' (and the owned one), each rounded to f16 then, as the forward does' : ''}: q and k each carry sqrt(scale)`] : []),
    ...(r.acc.includes('x') ? [`${constDecl('ACC_SCALE', 'f32', preQk ? root : spec.scale)} // dS times the scale, less what the staged ${r.x} rows carry`] : []),
    constDecl('LOG2E', 'f32', LOG2E),
    ...maskDecls(spec, mask),
    '// A masked score is -inf, made at run time (WGSL has no literal for it).',
    F32_BITS_WGSL,
    ...(rounds ? [ROUND_F16_WGSL] : []),
    `var<workgroup> x_tile: array<${tileVec4(dtype)}, TILE * X_ROW>; // ${r.x} row c at c * X_ROW`,
    ...(r.y ? [`var<workgroup> y_tile: array<${tileVec4(dtype)}, TILE * Y_ROW>; // ${r.y}`] : []),
    ...(stagedScalars(r) > 0 ? ['var<workgroup> lse_tile: array<vec2<f32>, TILE>; // M and L of each streamed row, base 2'] : []),
    ...(stagedScalars(r) > 2 ? ['var<workgroup> delta_tile: array<f32, TILE>;'] : []),
    ...(t.slices > 1 ? [exchange('partial_s'), ...(r.b ? [exchange('partial_dp')] : [])] : []),
    '',
    ...loaders.map(([name, len, n]) => rowLoader(name, len, n, dtype)),
  ].join('\n');
}

/** Lines that load this invocation's share of the tile at streamed row `t0` into registers: zero past the last row. */
function fetchLines(mode: BackwardMode, t: BackwardTiling, dtype: DType, spec: AttentionSpec, t0: string): string[] {
  const r = ROLES[mode];
  const counts = fetchCounts(t);
  const at = (n: number) => (n === 0 ? 'lid' : `(lid + ${n}u * WORKGROUP)`);
  const lines: string[] = [];
  const load = (tile: 'x' | 'y', binding: string, rowLen: string, count: number, scaled: boolean) => {
    for (let n = 0; n < count; n++) {
      const loaded = `load_${binding}(stream0 + min(${tile}_row${n}, params.stream_rows - 1u), (${at(n)} % ${rowLen}) * 4u)`;
      lines.push(`let ${tile}_row${n} = ${t0} + ${at(n)} / ${rowLen};`);
      lines.push(`next_${tile}[${n}] = select(${tileVec4(dtype)}(0.0), ${toTile(dtype, scaled ? scaledQk(dtype, spec, loaded, 'X_SCALE') : loaded)}, ${tile}_row${n} < params.stream_rows);`);
    }
  };
  load('x', r.x, 'X_ROW', counts.x, spec.scaling === 'pre_qk');
  if (r.y) load('y', r.y, 'Y_ROW', counts.y, false);
  if (stagedScalars(r) > 0) {
    lines.push(`let scalar_at = stream0 + min(${t0} + lid, params.stream_rows - 1u);`);
    lines.push('next_lse = vec2<f32>(lse[2u * scalar_at], lse[2u * scalar_at + 1u]);');
    if (stagedScalars(r) > 2) lines.push('next_delta = delta[scalar_at];');
  }
  return lines;
}

/** Lines that write the loaded share into the tiles (the last of each share may run past the tile's end). */
function stageLines(mode: BackwardMode, t: BackwardTiling): string[] {
  const r = ROLES[mode];
  const counts = fetchCounts(t);
  const at = (n: number) => (n === 0 ? 'lid' : `lid + ${n}u * WORKGROUP`);
  const store = (tile: 'x' | 'y', n: number, total: number) =>
    (n + 1) * t.workgroupSize > total ? `if (${at(n)} < ${total}u) { ${tile}_tile[${at(n)}] = next_${tile}[${n}]; }` : `${tile}_tile[${at(n)}] = next_${tile}[${n}];`;
  return [
    ...Array.from({ length: counts.x }, (_, n) => store('x', n, t.tile * t.slices * t.aVec4)),
    ...(r.y ? Array.from({ length: counts.y }, (_, n) => store('y', n, t.tile * t.slices * t.bVec4)) : []),
    ...(stagedScalars(r) > 0 ? [`if (lid < TILE) { lse_tile[lid] = next_lse;${stagedScalars(r) > 2 ? ' delta_tile[lid] = next_delta;' : ''} }`] : []),
  ];
}

/** `score = ...`: the base-2 score of pair (owned row, streamed row n) from s_dots[c], as the forward scores it; a bool mask's flag goes to `kept`. */
function scoreLines(mask: TensorType | undefined, spec: AttentionSpec): string[] {
  const index = 'mask_own + n * params.mask_stream_stride';
  const at = `mask[${index}]`;
  if (mask && additiveMask(mask)) return [`let bias = ${load('mask', mask.dtype, index)};`, `score = ${maskedScore(mask, spec, 's_dots[c]', 'bias')};`];
  if (mask?.dtype === 'bool') return [`kept = ${at} != 0u;`, `score = ${maskedScore(mask, spec, 's_dots[c]', 'kept')};`];
  return ['score = s_dots[c];'];
}

/** The per-tile update once s_dots (and dp_dots) hold this row's dot products with the tile. */
function updateLines(mode: BackwardMode, spec: AttentionSpec, dtype: DType, mask: TensorType | undefined, dropout: KernelDropout | null): string[] {
  const inRange = 'n >= row_begin && n < row_end';
  const bool = mask?.dtype === 'bool';
  if (mode === 'lse') {
    return [
      'var tile_max = masked;',
      'for (var c = 0u; c < TILE; c = c + 1u) {',
      '  let n = t0 + c;',
      '  var score = masked;',
      ...(bool ? ['  var kept = false;'] : []),
      `  if (${inRange}) {`,
      ...indent(scoreLines(mask, spec), '    ').split('\n'),
      '  }',
      '  s_dots[c] = score;',
      '  tile_max = max(tile_max, score);',
      '}',
      'let new_max = max(run_max, tile_max);',
      'if (new_max > masked) {',
      '  // Until a score above -inf is seen the sum is zero, and -inf - -inf must not enter exp2.',
      '  run_sum = select(0.0, run_sum * exp2(run_max - new_max), run_max > masked);',
      '  for (var c = 0u; c < TILE; c = c + 1u) { run_sum = run_sum + select(0.0, exp2(s_dots[c] - new_max), s_dots[c] > masked); }',
      '  run_max = new_max;',
      '}',
    ];
  }
  const r = ROLES[mode];
  const lse = r.own === 'query' ? 'lse_own' : 'lse_tile[c]';
  const delta = r.own === 'query' ? 'delta_own' : 'delta_tile[c]';
  const p = `exp2((score - ${lse}.x) - ${lse}.y)`;
  // Dropout drops a weight by select, as the dropout op does: a NaN weight (a row with no key) dropped is 0.
  const accumulate = (tile: 'x' | 'y') => {
    const [coef, row, vec4s] = tile === 'x' ? ['ds', 'X_ROW', 'A_VEC4'] : [dropout ? 'select(p * z, 0.0, z == 0.0)' : 'p', 'Y_ROW', 'B_VEC4'];
    return `  for (var u = 0u; u < ${vec4s}; u = u + 1u) { acc_${tile}[u] = fma(vec4<f32>(${coef}), ${fromTile(dtype, `${tile}_tile[c * ${row} + u * SLICES + slice]`)}, acc_${tile}[u]); }`;
  };
  const ds = `p * (dp_dots[c]${dropout ? ' * z' : ''} - ${delta})`;
  return [
    'for (var c = 0u; c < TILE; c = c + 1u) {',
    '  let n = t0 + c;',
    '  var p = 0.0; // the probability, recomputed',
    ...(bool ? ['  var kept = false;'] : []),
    `  if (${inRange}) {`,
    '    var score = masked;',
    ...indent(scoreLines(mask, spec), '    ').split('\n'),
    spec.emptyRows === 'nan'
      ? `    p = select(nan, ${p}, ${lse}.x > masked); // NaN where every score of the row is -inf (M = -inf), as the chain's softmax`
      : `    p = select(0.0, ${p}, score > masked); // 0 where every score of the row is -inf (emptyRows "zero")`,
    '  }',
    ...(dropout ? [`  let z = select(1.0 / KEEP_P, 0.0, kiln_uniform(seed, ${r.own === 'query' ? 'own_at * params.stream_rows + n' : '(stream0 + n) * params.own_rows + me'}) < DROP_P); // the forward's dropout`] : []),
    ...(r.b ? [bool ? `  let ds = select(0.0, ${ds}, kept); // dS = P * (dP - delta); a dropped key's is 0 (masked_fill's gradient)` : `  let ds = ${ds}; // dS = P * (dP - delta)`] : []),
    ...r.acc.map(accumulate),
    '}',
  ];
}

function backwardBody(mode: BackwardMode, t: BackwardTiling, spec: AttentionSpec, dtype: DType, mask: TensorType | undefined, batchRank: number, dropout: KernelDropout | null): string[] {
  const r = ROLES[mode];
  const ownsQueries = r.own === 'query';
  const dot = (own: string, tile: string, row: string, vec4s: string, into: string) => [
    '  var sum4 = vec4<f32>(0.0);',
    `  for (var u = 0u; u < ${vec4s}; u = u + 1u) { sum4 = fma(${own}[u], ${fromTile(dtype, `${tile}[c * ${row} + u * SLICES + slice]`)}, sum4); }`,
    `  ${into}[c] = sum4.x + sum4.y + sum4.z + sum4.w;`,
  ];
  const dots = [
    'for (var c = 0u; c < TILE; c = c + 1u) {',
    ...dot('a_own', 'x_tile', 'X_ROW', 'A_VEC4', 's_dots'),
    ...(r.b ? ['}', 'for (var c = 0u; c < TILE; c = c + 1u) {', ...dot('b_own', 'y_tile', 'Y_ROW', 'B_VEC4', 'dp_dots')] : []),
    '}',
  ];
  const sums = r.b ? ['s_dots', 'dp_dots'] : ['s_dots'];
  const exchange = t.slices === 1
    ? []
    : [
      '  // Each slice holds part of every dot product: add the parts up through workgroup memory.',
      '  for (var c = 0u; c < TILE; c = c + 1u) {',
      ...sums.map((x) => `    partial_${x.slice(0, -5)}[c * ROWS + row][slice] = ${x}[c];`),
      '  }',
      '}',
      'workgroupBarrier();',
      'if (live) {',
      '  for (var c = 0u; c < TILE; c = c + 1u) {',
      ...sums.map((x) => `    ${x}[c] = dot(partial_${x.slice(0, -5)}[c * ROWS + row], vec${t.slices}<f32>(1.0));`),
      '  }',
    ];
  const range = ownsQueries
    ? spec.causal
      ? ['// Causal: key tiles past the diagonal of the last owned row are never loaded.', 'let stream_begin = 0u;', 'let stream_end = min(params.stream_rows, own0 + ROWS);', 'let row_begin = 0u;', 'let row_end = select(0u, min(stream_end, me + 1u), own_valid);']
      : ['let stream_begin = 0u;', 'let stream_end = params.stream_rows;', 'let row_begin = 0u;', 'let row_end = select(0u, stream_end, own_valid);']
    : spec.causal
      ? ['// Causal: query tiles above the first owned key are never loaded; a key is seen from its own query on.', 'let stream_begin = min(own0, params.stream_rows);', 'let stream_end = params.stream_rows;', 'let row_begin = me;', 'let row_end = select(0u, stream_end, own_valid);']
      : ['let stream_begin = 0u;', 'let stream_end = params.stream_rows;', 'let row_begin = 0u;', 'let row_end = select(0u, stream_end, own_valid);'];
  const maskOwn = mask
    ? [...coordLines('bh', batchRank, 'batch_shape', 'b'), `let mask_own = ${offsetExpr(batchRank, 'b', 'mask_stride')} + me * params.mask_own_stride;`]
    : [];
  const ownLoad = (name: string, binding: string, vec4s: string, scaled: boolean) => {
    const loaded = `load_${binding}(own_at, (u * SLICES + slice) * 4u)`;
    return [
      `var ${name}: array<vec4<f32>, ${vec4s}>;`,
      `for (var u = 0u; u < ${vec4s}; u = u + 1u) { ${name}[u] = select(vec4<f32>(0.0), ${scaled ? ownedQk(dtype, spec, loaded, 'A_SCALE', 'X_SCALE') : loaded}, own_valid); }`,
    ];
  };
  const accVec4 = (tile: 'x' | 'y') => (tile === 'x' ? 'A_VEC4' : 'B_VEC4');
  const writeAcc = (tile: 'x' | 'y') => [
    `  for (var u = 0u; u < ${accVec4(tile)}; u = u + 1u) {`,
    '    let col = (u * SLICES + slice) * 4u;',
    `    let value = acc_${tile}[u]${tile === 'x' ? ' * ACC_SCALE' : ''};`,
    '    for (var c = 0u; c < 4u; c = c + 1u) {',
    `      if (col + c < params.${tile === 'x' ? 'd' : 'dv'}) { out[own_at * params.out_row + ${tile === 'y' && r.acc.length > 1 ? 'params.d + ' : ''}col + c] = ${store(dtype, 'value[c]')}; }`,
    '    }',
    '  }',
  ];
  const write = mode === 'lse'
    ? ['if (own_valid && slice == 0u) {', '  // M and L, base 2; [-inf, -inf] for a row whose every score is -inf.', '  out[own_at * 2u] = run_max;', '  out[own_at * 2u + 1u] = select(masked, log2(run_sum), run_sum > 0.0);', '}']
    : ['if (own_valid) {', ...r.acc.flatMap(writeAcc), '}'];
  return [
    ...(spec.causal ? [`// Causal tiles go longest first (${ownsQueries ? 'the last query rows see the most keys' : 'the first keys are seen by the most queries'}).`] : []),
    'let bh = wid / params.tiles;',
    `let tile = ${spec.causal && ownsQueries ? 'params.tiles - 1u - wid % params.tiles' : 'wid % params.tiles'};`,
    'let own0 = tile * ROWS;',
    'let row = lid / SLICES;',
    'let slice = lid % SLICES;',
    `let me = own0 + row; // this invocation's ${ownsQueries ? 'query' : 'key'} row`,
    'let own_valid = me < params.own_rows;',
    'let own_at = bh * params.own_rows + min(me, params.own_rows - 1u);',
    'let stream0 = bh * params.stream_rows;',
    ...maskOwn,
    ...(dropout ? [seedLine(dropout.rng)] : []),
    '',
    ...ownLoad('a_own', r.a, 'A_VEC4', true),
    ...(r.b ? ownLoad('b_own', r.b, 'B_VEC4', false) : []),
    'let masked = kiln_f32_bits(0xff800000u); // -inf',
    ...(mode !== 'lse' && spec.emptyRows === 'nan' ? [`let nan = ${f32FromBits(NaN)}; // made, not left to exp2 of NaN, which WGSL does not define`] : []),
    ...(mode === 'lse'
      ? ['var run_max = masked;', 'var run_sum = 0.0;']
      : r.acc.flatMap((tile) => [`var acc_${tile}: array<vec4<f32>, ${accVec4(tile)}>;`, `for (var u = 0u; u < ${accVec4(tile)}; u = u + 1u) { acc_${tile}[u] = vec4<f32>(0.0); }`])),
    ...(mode === 'q' ? ['let lse_own = vec2<f32>(lse[own_at * 2u], lse[own_at * 2u + 1u]); // M and L, base 2', 'let delta_own = delta[own_at];'] : []),
    // The stream range is uniform over the workgroup (barriers inside the loop); row_begin and row_end are this row's own.
    ...range,
    '',
    `var next_x: array<${tileVec4(dtype)}, X_FETCHES>; // this invocation's share of the next tile`,
    ...(r.y ? [`var next_y: array<${tileVec4(dtype)}, Y_FETCHES>;`] : []),
    ...(stagedScalars(r) > 0 ? ['var next_lse = vec2<f32>(0.0);'] : []),
    ...(stagedScalars(r) > 2 ? ['var next_delta = 0.0;'] : []),
    'if (stream_begin < stream_end) {',
    ...indent(fetchLines(mode, t, dtype, spec, 'stream_begin')).split('\n'),
    '}',
    'for (var t0 = stream_begin; t0 < stream_end; t0 = t0 + TILE) {',
    '  // Every invocation is done with the last tile: put the loaded one in its place.',
    '  workgroupBarrier();',
    ...indent(stageLines(mode, t)).split('\n'),
    '  workgroupBarrier();',
    '  // Load the next tile: its loads are in flight while this one is worked through.',
    '  if (t0 + TILE < stream_end) {',
    ...indent(fetchLines(mode, t, dtype, spec, 't0 + TILE'), '    ').split('\n'),
    '  }',
    '',
    '  // A row that cannot see this tile (causal, past the end) skips its arithmetic.',
    '  let live = t0 < row_end && t0 + TILE > row_begin;',
    '  var s_dots: array<f32, TILE>; // base-2 scores, before the mask',
    ...(r.b ? ['  var dp_dots: array<f32, TILE>; // dP = grad_out . v'] : []),
    '  if (live) {',
    ...indent(dots, '    ').split('\n'),
    ...(exchange.length > 0 ? indent(exchange).split('\n') : []),
    ...indent(updateLines(mode, spec, dtype, mask, dropout), '    ').split('\n'),
    '  }',
    '}',
    '',
    ...write,
  ];
}

export const attentionBackwardLowerings: Record<string, Lowering> = {
  attention_lse: (req) => attentionLseKernel(req, attentionSpec(req.attrs)),
  fused_attention_backward: (req) => attentionBackwardKernel(req, attentionSpec(req.attrs), attentionWrt(req.attrs)),
};

// The flash-attention kernel that fused_attention and sdpa lower to.
//
// Design (FlashAttention-2's forward pass, in plain WGSL without subgroups):
// - A workgroup takes ROWS query rows of one batch-head. Each row belongs to SLICES invocations;
//   each owns every SLICES-th vec4 of the head dims, and keeps its share of q (scaled once on load)
//   and of the output accumulator in registers.
// - Keys go by in tiles of KEYS: the whole workgroup stages k and v rows in workgroup memory
//   (zero-padded past the head dim and the last key), then every invocation scores its row
//   against the tile. With SLICES > 1 the slices' partial dot products meet in workgroup memory.
//   Each invocation loads its share of the next tile into registers before working through this
//   one, so the loads' latency hides behind the arithmetic.
// - Online softmax in f32, in base 2: log2(e) is folded into q's scale (and into additive mask
//   values), so each weight is one exp2. A running max and sum per row; the accumulator is
//   rescaled only when a tile's max passes the running max by more than MAX_SLACK (so the weights
//   stay below 2^MAX_SLACK), which after the first keys is rare. A masked score is -inf, as in the
//   chain, and weighs nothing; every finite score takes part, however low (a finite masked_fill value,
//   an additive -1e30), so a row of those averages v as softmax does. A row whose every score is -inf
//   writes NaN (emptyRows "nan", the chain's softmax) or zeros ("zero", sdpa's): docs/masked-rows.md.
// - Causal: the key loop stops at the last tile the workgroup's rows can see; rows that end before
//   a tile skip its arithmetic; only tiles across a row's end mask per key.
// - Dropout (dropoutP > 0): each weight that multiplies v is kept or dropped by the hash dropout
//   uses, element (b*L+i)*S+j of the weights, and kept ones are divided by 1 - p; the running sum
//   (the softmax's denominator) takes the weights before dropout.
// - f16 (always scaling "pre_qk"): q and k are multiplied by sqrt(scale) and rounded to f16 as they
//   are loaded (PyTorch's overflow guard: the scaled q k^T fits where the unscaled one would not), the
//   k and v tiles hold f16 (half the workgroup memory), and every value is f32 once read: dot products,
//   the running max and sum and the accumulator are f32, and only the output is stored in f16.
// Shapes (L, S, head dims, batch, mask strides) live in params; the text depends only on the
// tiling (chosen from the head dims and the device's workgroup memory), the scale, causal,
// scaling, the dtype and the mask's dtype and rank.
//
// Measured on an H100 through Dawn/Vulkan (test/bench/ATTENTION_NOTES.md): several rows per
// invocation, bigger tiles, q in workgroup memory and two-product layouts all ran slower than this
// one-row-per-invocation shape; the loop over a tile's keys must stay small enough for the
// driver to unroll (16 keys with 8 vec4 each did; 32 did not).

import { KilnError } from '../../ir/errors.ts';
import { DEFAULT_KERNEL_LIMITS, type KernelLimits, type KernelPlan, type KernelRequest } from './plan.ts';
import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { type DType, type TensorType, numel } from '../../ir/types.ts';
import { attentionDims, attentionOperands, sdpaSpec } from '../../ir/ops/attention.ts';
import { operandsByName } from '../../ir/operands.ts';
import { getOp } from '../../ir/registry.ts';
import { ROUND_F16_WGSL, dropoutDecls, roundsQk, sdpaKernel, seedLine } from './attention.ts';
import type { AttentionSpec } from '../../ir/ops/fused_attention.ts';
import { F32_BITS_WGSL, F32_MAX, broadcastStrides, constDecl, coordLines, f32FromBits, indent, listParams, offsetExpr } from './helpers.ts';
import { load, store } from './dtypes.ts';
import { attentionSpec } from '../../ir/ops/fused_attention.ts';
import type { Lowering } from './plan.ts';
import { flashTensorCoreKernel, flashTensorCoresFit } from './flash_tc.ts';

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

/** What a tiling is chosen by; the rest follows from it and the head dims. */
export type FlashShape = Pick<FlashTiling, 'slices' | 'rows' | 'keys'>;

const ROWS = 64;
const LOG2E = Math.LOG2E;
// More keys per tile means fewer barriers, but the loops over a tile's keys and an invocation's
// vec4s must stay small enough for the driver to unroll them and keep dots[] in registers: 16 keys
// x 8 vec4 ran well on the H100, 32 x 8 ran 1.7x slower, 16 x 16 a little slower than 8 x 16.
const MAX_KEYS = 16;
const MAX_KEY_VEC4S = 128;
const MIN_KEYS = 4;

/** Invocations per row: one up to D = 32, two up to 128 (q and the accumulator, 16 vec4 each, stay in registers), then four. */
function slicesFor(widest: number): number {
  return widest <= 32 ? 1 : widest <= 128 ? 2 : 4;
}

/** The sizes that follow from a tiling's shape for head dims d and dv; the k and v tiles hold vec4s of `dtype` (tileVec4). */
export function flashTilingOf(d: number, dv: number, shape: FlashShape, dtype: DType = 'f32'): FlashTiling {
  const { slices, rows, keys } = shape;
  const qVec4 = Math.max(1, Math.ceil(Math.ceil(d / 4) / slices));
  const oVec4 = Math.max(1, Math.ceil(Math.ceil(dv / 4) / slices));
  const bytes = keys * slices * (qVec4 + oVec4) * 4 * DTYPE_INFO[dtype].bytes + (slices > 1 ? keys * rows * slices * 4 : 0);
  return { ...shape, qVec4, oVec4, workgroupSize: rows * slices, workgroupBytes: bytes };
}

/** The tiling for head dims d (q, k) and dv (v, out) of `dtype` on a device with these limits; null when even MIN_KEYS keys do not fit. */
export function flashTiling(d: number, dv: number, limits: KernelLimits = DEFAULT_KERNEL_LIMITS, dtype: DType = 'f32'): FlashTiling | null {
  const slices = slicesFor(Math.max(d, dv));
  if (ROWS * slices > limits.maxComputeInvocationsPerWorkgroup) return null;
  for (let keys = MAX_KEYS; keys >= MIN_KEYS; keys /= 2) {
    const t = flashTilingOf(d, dv, { slices, rows: ROWS, keys }, dtype);
    const unrolled = keys * Math.max(t.qVec4, t.oVec4) <= MAX_KEY_VEC4S || keys === MIN_KEYS;
    if (unrolled && t.workgroupBytes <= limits.maxComputeWorkgroupStorageSize) return t;
  }
  return null;
}

/**
 * A staged tile's vec4 type: f16 attention stages its rows in f16, half the workgroup memory (values
 * that are f16 already: v and dO, and the scaled q and k after kiln_round_f16); anything else in f32.
 */
export function tileVec4(dtype: DType): string {
  return dtype === 'f16' ? 'vec4<f16>' : 'vec4<f32>';
}

/** A vec4<f32> value as a tile element (exact: an f16 tile is given f16 values only), and a tile element as a vec4<f32> value. */
export function toTile(dtype: DType, value: string): string {
  return dtype === 'f16' ? `vec4<f16>(${value})` : value;
}
export function fromTile(dtype: DType, element: string): string {
  return dtype === 'f16' ? `vec4<f32>(${element})` : element;
}

/** A loaded q or k vec4 times `root` (sqrt(scale)), rounded to f16 where roundsQk (the overflow guard, as PyTorch rounds). */
export function scaledQk(dtype: DType, spec: AttentionSpec, loaded: string, root: string): string {
  return roundsQk(dtype, spec) ? `kiln_round_f16(${loaded} * ${root})` : `${loaded} * ${root}`;
}

/**
 * An owned q (or k) row's share as a base-2 score factor: times `scale`, sqrt(scale) or the softmax
 * scale with log2(e) folded in, or in f16 "pre_qk" times `root` and rounded to f16 first, as the
 * staged rows are, and then times `scale`, log2(e).
 */
export function ownedQk(dtype: DType, spec: AttentionSpec, loaded: string, scale: string, root: string): string {
  return roundsQk(dtype, spec) ? `${scaledQk(dtype, spec, loaded, root)} * ${scale}` : `${loaded} * ${scale}`;
}

/** Dropout in an attention kernel: attrs dropoutP and seed (fused_attention's and sdpa's), and whether the rng operand is bound. */
export interface KernelDropout {
  readonly p: number;
  readonly seed: number;
  readonly rng: boolean;
}

/** The dropout a request's attrs and its `rng` operand (of fused_attention or its backward, `op`) ask for; null without. */
export function kernelDropout(req: KernelRequest, op: 'fused_attention' | 'fused_attention_backward' = 'fused_attention'): KernelDropout | null {
  const p = typeof req.attrs.dropoutP === 'number' ? req.attrs.dropoutP : 0;
  if (p <= 0) return null;
  const { rng } = operandsByName(getOp(op), req.inputs, req.attrs);
  return { p, seed: req.attrs.seed as number, rng: rng !== undefined };
}

/** The flash kernel for q, k, v (and an optional bool or additive f32 mask, and the rng) in req.inputs; `tiling` overrides the choice (tests, benchmarks). */
export function flashAttentionKernel(req: KernelRequest, spec: AttentionSpec, tiling?: FlashTiling): KernelPlan {
  const [q, k, v] = req.inputs as TensorType[];
  const mask = attentionOperands('fused_attention', req.inputs, req.attrs).mask as TensorType | undefined;
  const dropout = kernelDropout(req);
  // f16 on a device with tensor cores, no mask or dropout: q k^T and P v on subgroup matrices (flash_tc.ts).
  if (!tiling && flashTensorCoresFit(req, mask !== undefined, dropout !== null)) return flashTensorCoreKernel(req, spec);
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  const limits = req.limits ?? DEFAULT_KERNEL_LIMITS;
  const t = tiling ?? flashTiling(d, dv, limits, q.dtype);
  if (!t) throw new KilnError('KILN_E011', `fused_attention head dims ${d} and ${dv} do not fit the flash kernel's workgroup memory (${limits.maxComputeWorkgroupStorageSize} bytes)`);
  const rowTiles = Math.ceil(l / t.rows);
  const params: Record<string, number> = { l, s, d, dv, row_tiles: rowTiles };
  if (mask) {
    const strides = broadcastStrides([...batch, l, s], mask.shape);
    Object.assign(params, listParams('batch_shape', batch), listParams('mask_stride', strides.slice(0, -2)));
    params.mask_row_stride = strides[batch.length];
    params.mask_col_stride = strides[batch.length + 1];
  }
  return {
    inputNames: ['q', 'k', 'v', ...(mask ? ['mask'] : []), ...(dropout?.rng ? ['rng'] : [])],
    params,
    decls: [flashDecls(t, spec, q.dtype, d, dv, mask), ...(dropout ? [dropoutDecls(dropout.p, dropout.seed, dropout.rng)] : [])].join('\n'),
    body: indent(flashBody(t, spec, q.dtype, mask, batch.length, dropout)).replace(/^\s+$/gm, ''),
    workgroupSize: t.workgroupSize,
    workgroups: numel(batch) * rowTiles,
  };
}

/** `inv_sum`, 1 / run_sum, or what a row gives whose every score was -inf (run_sum 0: any finite score weighs at least 1). */
function emptyRowLines(spec: AttentionSpec): string[] {
  if (spec.emptyRows !== 'nan') return ['  // A row whose every score is -inf has run_sum 0: it writes zeros (sdpa\'s answer).', '  let inv_sum = select(0.0, 1.0 / run_sum, run_sum > 0.0);'];
  return [
    '  // A row whose every score is -inf has run_sum 0: it writes NaN, as the chain\'s softmax does (with no key at all, S = 0, zeros).',
    `  let no_key = select(${f32FromBits(NaN)}, 0.0, params.s == 0u);`,
    '  let inv_sum = select(no_key, 1.0 / run_sum, run_sum > 0.0);',
  ];
}

/** vec4s of k and of v each invocation stages per tile. */
function fetchCounts(t: FlashTiling): { k: number; v: number } {
  return { k: Math.ceil((t.keys * t.slices * t.qVec4) / t.workgroupSize), v: Math.ceil((t.keys * t.slices * t.oVec4) / t.workgroupSize) };
}

function flashDecls(t: FlashTiling, spec: AttentionSpec, dtype: DType, d: number, dv: number, mask: TensorType | undefined): string {
  const root = Math.sqrt(spec.scale);
  // f16 "pre_qk" rounds q times sqrt(scale) (K_SCALE) to f16 first, as k, then takes log2(e).
  const rounds = roundsQk(dtype, spec);
  const qScale = (rounds ? 1 : spec.scaling === 'pre_qk' ? root : spec.scale) * LOG2E;
  const fetches = fetchCounts(t);
  return [
    `const ROWS: u32 = ${t.rows}u; // query rows per workgroup`,
    `const SLICES: u32 = ${t.slices}u; // invocations per row; slice s owns vec4s s, s + SLICES, ... of the head dims`,
    `const KEYS: u32 = ${t.keys}u; // keys per K/V tile in workgroup memory`,
    `const Q_VEC4: u32 = ${t.qVec4}u; // vec4s of q (and of each k row) per invocation`,
    `const O_VEC4: u32 = ${t.oVec4}u; // vec4s of v (and of the output row) per invocation`,
    'const K_ROW: u32 = SLICES * Q_VEC4; // vec4s per staged k row: the head dim, zero-padded',
    'const V_ROW: u32 = SLICES * O_VEC4;',
    'const WORKGROUP: u32 = ROWS * SLICES;',
    `const K_FETCHES: u32 = ${fetches.k}u; // vec4s of each k tile one invocation loads`,
    `const V_FETCHES: u32 = ${fetches.v}u;`,
    `${constDecl('Q_SCALE', 'f32', qScale)} // applied once as q is loaded: ${rounds ? 'log2(e) for exp2, after K_SCALE and the rounding to f16' : `${spec.scaling === 'pre_qk' ? 'sqrt(scale), "pre_qk"' : 'the softmax scale, "post"'}, times log2(e) for exp2`}`,
    ...(spec.scaling === 'pre_qk' ? [`${constDecl('K_SCALE', 'f32', root)} // applied as k is loaded${rounds ? ' (and q), each rounded to f16 then: the scores cannot overflow where the scaled ones fit' : ''}: q and k each carry sqrt(scale)`] : []),
    ...(additiveMask(mask) ? [`${constDecl('LOG2E', 'f32', LOG2E)} // additive mask values join the scores in base 2`] : []),
    ...maskDecls(spec, mask),
    '// A masked score is -inf, made at run time (WGSL has no literal for it).',
    F32_BITS_WGSL,
    ...(rounds ? [ROUND_F16_WGSL] : []),
    '// The running max moves only when a tile\'s max passes it by more than this (base 2), so the',
    '// accumulator is rescaled a few times per row rather than on most tiles (as FlashAttention-4 does);',
    '// weights stay below 2^8, and dividing by the running sum at the end gives the same result.',
    'const MAX_SLACK: f32 = 8.0;',
    `var<workgroup> k_tile: array<${tileVec4(dtype)}, KEYS * K_ROW>; // key c at c * K_ROW`,
    `var<workgroup> v_tile: array<${tileVec4(dtype)}, KEYS * V_ROW>;`,
    ...(t.slices > 1 ? [`var<workgroup> partial_dots: array<vec${t.slices}<f32>, KEYS * ROWS>; // [key][row]: component s is slice s's share of q.k`] : []),
    '',
    rowLoader('q', 'd', d, dtype),
    rowLoader('k', 'd', d, dtype),
    rowLoader('v', 'dv', dv, dtype),
  ].join('\n');
}

/** `load_<name>(row, col)`: four elements of row `row` of binding `name` (of `dtype`) from `col` on, as f32, zero past the row's end (the backward kernels share it). */
export function rowLoader(name: string, len: 'd' | 'dv', n: number, dtype: DType = 'f32'): string {
  if (n % 4 === 0) {
    // Whole vec4s: one bounds check for the four (the padding past the head dim is whole vec4s too).
    const at = ['at', 'at + 1u', 'at + 2u', 'at + 3u'].map((i) => load(name, dtype, i));
    return `fn load_${name}(row: u32, col: u32) -> vec4<f32> {
  if (col >= params.${len}) { return vec4<f32>(0.0); }
  let at = row * params.${len} + col;
  return vec4<f32>(${at.join(', ')});
}`;
  }
  return `fn load_${name}(row: u32, col: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c = c + 1u) {
    if (col + c < params.${len}) { x[c] = ${load(name, dtype, `row * params.${len} + col + c`)}; }
  }
  return x;
}`;
}

/** Lines that load this invocation's share of the tile at key `j0` into next_k, next_v: zero past the last key. */
function fetchLines(t: FlashTiling, dtype: DType, spec: AttentionSpec, j0: string): string[] {
  const { k, v } = fetchCounts(t);
  const at = (n: number) => (n === 0 ? 'lid' : `(lid + ${n}u * WORKGROUP)`);
  const key = (n: number, row: string) => `${j0 === '0u' ? '' : `${j0} + `}${at(n)} / ${row}`;
  const lines: string[] = [];
  for (let n = 0; n < k; n++) {
    lines.push(`let j_k${n} = ${key(n, 'K_ROW')};`);
    const loaded = `load_k(kv_row0 + min(j_k${n}, params.s - 1u), (${at(n)} % K_ROW) * 4u)`;
    lines.push(`next_k[${n}] = select(${tileVec4(dtype)}(0.0), ${toTile(dtype, spec.scaling === 'pre_qk' ? scaledQk(dtype, spec, loaded, 'K_SCALE') : loaded)}, j_k${n} < params.s);`);
  }
  for (let n = 0; n < v; n++) {
    lines.push(`let j_v${n} = ${key(n, 'V_ROW')};`);
    lines.push(`next_v[${n}] = select(${tileVec4(dtype)}(0.0), ${toTile(dtype, `load_v(kv_row0 + min(j_v${n}, params.s - 1u), (${at(n)} % V_ROW) * 4u)`)}, j_v${n} < params.s);`);
  }
  return lines;
}

/** Lines that write next_k, next_v into the tile (the last of each share may run past the tile's end). */
function stageLines(t: FlashTiling): string[] {
  const { k, v } = fetchCounts(t);
  const at = (n: number) => (n === 0 ? 'lid' : `lid + ${n}u * WORKGROUP`);
  const store = (tile: string, n: number, total: number, src: string) =>
    (n + 1) * t.workgroupSize > total ? `if (${at(n)} < ${total}u) { ${tile}[${at(n)}] = ${src}; }` : `${tile}[${at(n)}] = ${src};`;
  return [
    ...Array.from({ length: k }, (_, n) => store('k_tile', n, t.keys * t.slices * t.qVec4, `next_k[${n}]`)),
    ...Array.from({ length: v }, (_, n) => store('v_tile', n, t.keys * t.slices * t.oVec4, `next_v[${n}]`)),
  ];
}

/** Whether the mask is added to the scores (f32, or f16 read as f32), not a bool keep-mask. */
export function additiveMask(mask: TensorType | undefined): boolean {
  return mask !== undefined && DTYPE_INFO[mask.dtype].isFloat;
}

/** FILL, the base-2 score of a key a bool mask drops when the chain filled with a finite value; LOWEST, where additive values stop. */
export function maskDecls(spec: AttentionSpec, mask: TensorType | undefined): string[] {
  const lowest = `${constDecl('LOWEST', 'f32', -F32_MAX)} // a finite value times log2(e) stops here rather than become -inf`;
  if (additiveMask(mask)) return [lowest];
  const fill = spec.fill ?? -Infinity;
  if (mask?.dtype !== 'bool' || !Number.isFinite(fill)) return [];
  return [`${constDecl('FILL', 'f32', Math.max(fill * LOG2E, -F32_MAX))} // the chain's masked_fill value ${fill}, in base 2: a score like any other`];
}

/**
 * A key's base-2 score from its dot product `dot` (q already scaled) and `value`, a bool mask's keep
 * flag or an additive mask's value (times log2(e): -inf stays -inf, a finite value stops at LOWEST).
 * `masked` is -inf (the kernels' `let`); the backward kernels share this.
 */
export function maskedScore(mask: TensorType | undefined, spec: AttentionSpec, dot: string, value: string): string {
  if (!mask) return dot;
  if (mask.dtype === 'bool') return `select(${Number.isFinite(spec.fill ?? -Infinity) ? 'FILL' : 'masked'}, ${dot}, ${value})`;
  return `${dot} + select(max(${value} * LOG2E, LOWEST), ${value}, ${value} < LOWEST)`;
}

/** `score = ...` for key j of this row, reading mask element `at` once. */
function scoreLines(mask: TensorType | undefined, spec: AttentionSpec, at: string): string[] {
  if (mask && additiveMask(mask)) return [`let bias = ${load('mask', mask.dtype, at)};`, `score = ${maskedScore(mask, spec, 'dots[c]', 'bias')};`];
  return [`score = ${maskedScore(mask, spec, 'dots[c]', `mask[${at}] != 0u`)};`];
}

function flashBody(t: FlashTiling, spec: AttentionSpec, dtype: DType, mask: TensorType | undefined, batchRank: number, dropout: KernelDropout | null): string[] {
  const exchange = t.slices > 1
    ? [
      '    // Each slice holds part of every q.k: add the parts up through workgroup memory.',
      '    for (var c = 0u; c < KEYS; c = c + 1u) { partial_dots[c * ROWS + row][slice] = dots[c]; }',
      '  }',
      '  workgroupBarrier();',
      '  if (live) {',
      `    for (var c = 0u; c < KEYS; c = c + 1u) { dots[c] = dot(partial_dots[c * ROWS + row], vec${t.slices}<f32>(1.0)); }`,
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
    ...(dropout ? [seedLine(dropout.rng), 'let drop_row = q_row * params.s; // dropout\'s index of weight (i, 0)'] : []),
    '',
    'var q_own: array<vec4<f32>, Q_VEC4>;',
    'for (var u = 0u; u < Q_VEC4; u = u + 1u) {',
    '  q_own[u] = vec4<f32>(0.0);',
    `  if (row_valid) { q_own[u] = ${ownedQk(dtype, spec, 'load_q(q_row, (u * SLICES + slice) * 4u)', 'Q_SCALE', 'K_SCALE')}; }`,
    '}',
    'var acc: array<vec4<f32>, O_VEC4>;',
    'for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = vec4<f32>(0.0); }',
    'let masked = kiln_f32_bits(0xff800000u); // -inf',
    'var run_max = masked;',
    'var run_sum = 0.0;',
    // key_end is uniform over the workgroup (barriers inside the loop); row_end is this row's own.
    spec.causal
      ? '// Causal: tiles wholly above the diagonal are never loaded; the diagonal tile masks per key.\nlet key_end = min(params.s, row0 + ROWS);\nlet row_end = select(0u, min(key_end, i + 1u), row_valid);'
      : 'let key_end = params.s;\nlet row_end = select(0u, key_end, row_valid);',
    '',
    `var next_k: array<${tileVec4(dtype)}, K_FETCHES>; // this invocation's share of the next tile`,
    `var next_v: array<${tileVec4(dtype)}, V_FETCHES>;`,
    ...fetchLines(t, dtype, spec, '0u'),
    'for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {',
    '  // Every invocation is done with the last tile: put the loaded one in its place.',
    '  workgroupBarrier();',
    ...stageLines(t).map((l) => '  ' + l),
    '  workgroupBarrier();',
    '  // Load the next tile: its loads are in flight while this one is worked through.',
    '  if (j0 + KEYS < key_end) {',
    ...fetchLines(t, dtype, spec, 'j0 + KEYS').map((l) => '    ' + l),
    '  }',
    '',
    '  // A row that ends before this tile (past the diagonal, past L) skips its arithmetic.',
    '  let live = j0 < row_end;',
    '  var dots: array<f32, KEYS>;',
    '  if (live) {',
    '    for (var c = 0u; c < KEYS; c = c + 1u) {',
    '      var sum4 = vec4<f32>(0.0);',
    `      for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], ${fromTile(dtype, 'k_tile[c * K_ROW + u * SLICES + slice]')}, sum4); }`,
    '      dots[c] = sum4.x + sum4.y + sum4.z + sum4.w;',
    '    }',
    ...exchange,
    '',
    '    // Scores, then the online softmax.',
    '    var tile_max = masked;',
    '    for (var c = 0u; c < KEYS; c = c + 1u) {',
    '      let j = j0 + c;',
    '      var score = masked;',
    '      if (j < row_end) {',
    ...indent(scoreLines(mask, spec, 'mask_row + j * params.mask_col_stride'), '        ').split('\n'),
    '      }',
    '      dots[c] = score;',
    '      tile_max = max(tile_max, score);',
    '    }',
    '    let new_max = select(run_max, tile_max, tile_max > run_max + MAX_SLACK);',
    '    // Until a score above -inf is seen the accumulator and sum are zero, and -inf - -inf must not enter exp2.',
    '    let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);',
    '    if (alpha != 1.0) {',
    '      run_sum = run_sum * alpha;',
    '      for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = acc[u] * alpha; }',
    '    }',
    '    run_max = new_max;',
    '    for (var c = 0u; c < KEYS; c = c + 1u) {',
    '      let p = select(0.0, exp2(dots[c] - new_max), dots[c] > masked);',
    '      run_sum = run_sum + p;',
    ...(dropout ? ['      let weight = select(p / KEEP_P, 0.0, kiln_uniform(seed, drop_row + j0 + c) < DROP_P); // dropout'] : []),
    `      for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[u] = fma(vec4<f32>(${dropout ? 'weight' : 'p'}), ${fromTile(dtype, 'v_tile[c * V_ROW + u * SLICES + slice]')}, acc[u]); }`,
    '    }',
    '  }',
    '}',
    '',
    'if (row_valid) {',
    ...emptyRowLines(spec),
    '  for (var u = 0u; u < O_VEC4; u = u + 1u) {',
    '    let col = (u * SLICES + slice) * 4u;',
    '    let value = acc[u] * inv_sum;',
    '    for (var c = 0u; c < 4u; c = c + 1u) {',
    `      if (col + c < params.dv) { out[q_row * params.dv + col + c] = ${store(dtype, 'value[c]')}; }`,
    '    }',
    '  }',
    '}',
  ];
}

export const fusedAttentionLowerings: Record<string, Lowering> = {
  fused_attention: (req) => flashAttentionKernel(req, attentionSpec(req.attrs)),
  // sdpa runs on the flash kernel (dropout included); with head dims too wide for it, on the simple one.
  sdpa(req) {
    const [q, k, v] = req.inputs as TensorType[];
    const { d, dv } = attentionDims(q, k, v);
    if (!flashTiling(d, dv, req.limits, q.dtype)) return sdpaKernel(req);
    return flashAttentionKernel(req, sdpaSpec(req.attrs, q));
  },
};

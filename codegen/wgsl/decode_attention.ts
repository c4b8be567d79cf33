// The decode-attention kernels (flash-decoding): one query row per (b, h) against a KV cache, the
// meaning in ir/ops/decode_attention.ts. decode_attention lowers to the whole kernel (one workgroup
// per (b, h) row, every key); passes/decode-split.ts turns a long cache into decode_attention_partial
// (a workgroup per (b, h) row and split) and decode_attention_merge.
//
// Design:
// - pos is read from its buffer on the device: the number of keys (pos + 1) is a run-time value,
//   uniform over the workgroup, so the key loop (with its barriers) runs to it. A pos outside
//   [0, S) is reported once through the index-error record (the run raises KILN_E011) and clamped so
//   the reads stay inside the cache. Split s covers keys [s * chunk, (s + 1) * chunk) of the S a
//   step can see, clipped to [0, pos]; a split past pos runs no tile and writes the neutral partial
//   (o = 0, m = -inf, l = 0), so one dispatch grid serves every pos.
// - Keys go by in tiles of KEYS, one key per invocation: each scores its key against q (held in
//   registers, scaled once on load with log2(e) folded in, so each weight is one exp2), the tile's
//   max comes from workgroup memory, and each invocation writes its key's weight there. Then every
//   invocation accumulates the tile's weighted v rows for the head dims it owns (lid, lid + KEYS,
//   ...): adjacent invocations read adjacent values of a v row. Key pos is k_new and v_new (the new
//   token's own); keys below it are cache rows j * (B*H) + (b, h) of the position-major cache.
// - Online softmax in f32 with the exact running max (no slack: a partial's m is its keys' max,
//   as the CPU reference has it, and a tile's rescale is one multiply per owned dim).
// - f16 ("pre_qk"): q and k are multiplied by sqrt(scale) and rounded to f16 as they are loaded, as
//   fused_attention's kernels do; scores, softmax and the accumulator are f32, and only the whole
//   kernel's output is stored in f16 (partials are f32).
// - The merge takes one output element per invocation: M = max over splits of m, then
//   sum 2^(m_s - M) o_s / sum 2^(m_s - M) l_s.
// - q, k_new and v_new are read at row packed_row(r, offset) of D elements (heads, row_stride and the
//   offsets q_row, k_row, v_row in params): plain operands [B, H, 1, D] have row r at r; packed ones
//   (attr columns: slices of c_attn's output row, ir/ops/decode_attention.ts) at their head block, so
//   no kernel copies q, k and v out of it. Both forms are the same text.
// Shapes (rows, S, D, splits, chunk, the packed layout) live in params; the text depends only on ceil(D / 4) and
// ceil(D / KEYS) (the registers q and the accumulator take), D % 4, the dtype, scale and scaling, and
// whether the kernel writes partials: one pipeline serves every pos and every S.

import type { AttentionSpec } from '../../ir/ops/attention.ts';
import { decodeChunk, decodeDims, decodeSpec } from '../../ir/ops/decode_attention.ts';
import type { DType, TensorType } from '../../ir/types.ts';
import { ROUND_F16_WGSL, roundsQk } from './attention.ts';
import { load, store } from './dtypes.ts';
import { ownedQk, rowLoader, scaledQk } from './fused_attention.ts';
import { ELEMENTWISE_GROUP, F32_BITS_WGSL, constDecl, groupsFor, indent, reportBadIndex } from './helpers.ts';
import type { KernelPlan, KernelRequest, Lowering } from './plan.ts';

/** Keys per tile, one per invocation: the workgroup size. */
export const DECODE_KEYS = 64;

/** What a decode kernel writes: the normalized output (decode_attention), or a split's partial. */
type DecodeForm = 'whole' | 'partial';

function decodeKernel(req: KernelRequest, form: DecodeForm): KernelPlan {
  const op = form === 'whole' ? 'decode_attention' : 'decode_attention_partial';
  const { rows, s, d, layout } = decodeDims(op, req.inputs, req.attrs);
  const dtype = (req.inputs[0] as TensorType).dtype;
  const spec = decodeSpec(op, req.attrs, dtype);
  // The whole kernel is the one-split form: whatever `splits` asks, it is passes/decode-split.ts that splits.
  const splits = form === 'whole' ? 1 : spec.splits;
  const attention: AttentionSpec = { causal: false, scale: spec.scale, scaling: spec.scaling };
  return {
    inputNames: ['q', 'k_cache', 'v_cache', 'k_new', 'v_new', 'pos'],
    params: { rows, s, d, splits, chunk: decodeChunk(s, splits), heads: layout.heads, row_stride: layout.stride, q_row: layout.q, k_row: layout.k, v_row: layout.v },
    decls: decodeDecls(attention, dtype, d),
    body: indent(decodeBody(attention, dtype, form)).replace(/^\s+$/gm, ''),
    workgroupSize: DECODE_KEYS,
    workgroups: rows * splits,
  };
}

function decodeDecls(spec: AttentionSpec, dtype: DType, d: number): string {
  const rounds = roundsQk(dtype, spec);
  const root = Math.sqrt(spec.scale);
  const qScale = (rounds ? 1 : spec.scaling === 'pre_qk' ? root : spec.scale) * Math.LOG2E;
  return [
    `const KEYS: u32 = ${DECODE_KEYS}u; // keys per tile, one per invocation`,
    `const Q_VEC4: u32 = ${Math.ceil(d / 4)}u; // vec4s of the head dim (q in registers, zero-padded)`,
    `const V_OWN: u32 = ${Math.ceil(d / DECODE_KEYS)}u; // output dims per invocation: lid, lid + KEYS, ...`,
    `${constDecl('Q_SCALE', 'f32', qScale)} // applied once as q is loaded: ${rounds ? 'log2(e) for exp2, after K_SCALE and the rounding to f16' : `${spec.scaling === 'pre_qk' ? 'sqrt(scale), "pre_qk"' : 'the softmax scale, "post"'}, times log2(e) for exp2`}`,
    ...(spec.scaling === 'pre_qk' ? [`${constDecl('K_SCALE', 'f32', root)} // applied as k is loaded${rounds ? ' (and q), each rounded to f16 then' : ''}: q and k each carry sqrt(scale)`] : []),
    '// -inf, made at run time (WGSL has no literal for it).',
    F32_BITS_WGSL,
    ...(rounds ? [ROUND_F16_WGSL] : []),
    'var<workgroup> scores: array<f32, KEYS>; // the tile\'s base-2 scores',
    'var<workgroup> weights: array<f32, KEYS>; // and their weights 2^(score - max)',
    '',
    rowLoader('q', 'd', d, dtype),
    rowLoader('k_cache', 'd', d, dtype),
    rowLoader('k_new', 'd', d, dtype),
    '',
    '// The row of D elements holding (b, h) row r of q, k_new or v_new, whose rows start at `offset`: r itself',
    '// for [B, H, 1, D] operands, the head block of a packed row [B, 1, W] (B = r / heads) otherwise.',
    'fn packed_row(r: u32, offset: u32) -> u32 {',
    '  return (r / params.heads) * params.row_stride + offset + r % params.heads;',
    '}',
    '',
    '// Four dims of key j of row r from col on, as the scores take them: cache row j * rows + r below `cached` (pos), k_new at it.',
    'fn key_at(j: u32, cached: u32, r: u32, col: u32) -> vec4<f32> {',
    `  if (j < cached) { return ${spec.scaling === 'pre_qk' ? scaledQk(dtype, spec, 'load_k_cache(j * params.rows + r, col)', 'K_SCALE') : 'load_k_cache(j * params.rows + r, col)'}; }`,
    `  return ${spec.scaling === 'pre_qk' ? scaledQk(dtype, spec, 'load_k_new(packed_row(r, params.k_row), col)', 'K_SCALE') : 'load_k_new(packed_row(r, params.k_row), col)'};`,
    '}',
    '',
    '// Dim c of value j of row r.',
    'fn value_at(j: u32, cached: u32, r: u32, c: u32) -> f32 {',
    `  if (j < cached) { return ${load('v_cache', dtype, '(j * params.rows + r) * params.d + c')}; }`,
    `  return ${load('v_new', dtype, 'packed_row(r, params.v_row) * params.d + c')};`,
    '}',
  ].join('\n');
}

function decodeBody(spec: AttentionSpec, dtype: DType, form: DecodeForm): string[] {
  const output = form === 'whole'
    ? [
      '// Key pos scores its own max at worst, weight 1: run_sum >= 1.',
      'let inv_sum = 1.0 / run_sum;',
      'for (var v = 0u; v < V_OWN; v = v + 1u) {',
      '  let col = lid + v * KEYS;',
      `  if (col < params.d) { out[r * params.d + col] = ${store(dtype, 'acc[v] * inv_sum')}; }`,
      '}',
    ]
    : [
      '// The partial [o (D), m, l]: o unnormalized, relative to m; an empty split writes 0, -inf, 0.',
      'let at = wid * (params.d + 2u);',
      'for (var v = 0u; v < V_OWN; v = v + 1u) {',
      '  let col = lid + v * KEYS;',
      '  if (col < params.d) { out[at + col] = acc[v]; }',
      '}',
      'if (lid == 0u) {',
      '  out[at + params.d] = run_max;',
      '  out[at + params.d + 1u] = run_sum;',
      '}',
    ];
  return [
    'let r = wid / params.splits; // the (b, h) row',
    'let split = wid % params.splits;',
    '// pos outside [0, S): reported once, then clamped so every read stays in the cache.',
    'let pos_value = pos[0];',
    reportBadIndex('pos_value', 'params.s', '0u', 'wid == 0u && lid == 0u'),
    'let cached = u32(clamp(pos_value, 0, i32(params.s) - 1)); // keys below it are cache rows; key `cached` is the new one',
    'let begin = split * params.chunk;',
    'let end = min(begin + params.chunk, cached + 1u);',
    '',
    'var q_own: array<vec4<f32>, Q_VEC4>;',
    `for (var u = 0u; u < Q_VEC4; u = u + 1u) { q_own[u] = ${ownedQk(dtype, spec, 'load_q(packed_row(r, params.q_row), u * 4u)', 'Q_SCALE', 'K_SCALE')}; }`,
    'var acc: array<f32, V_OWN>;',
    'for (var v = 0u; v < V_OWN; v = v + 1u) { acc[v] = 0.0; }',
    'let masked = kiln_f32_bits(0xff800000u); // -inf',
    'var run_max = masked;',
    'var run_sum = 0.0;',
    '',
    '// begin and end are the same for the whole workgroup: the barriers below are in uniform control flow.',
    'for (var j0 = begin; j0 < end; j0 = j0 + KEYS) {',
    '  let j = j0 + lid;',
    '  var score = masked;',
    '  if (j < end) {',
    '    var sum4 = vec4<f32>(0.0);',
    '    for (var u = 0u; u < Q_VEC4; u = u + 1u) { sum4 = fma(q_own[u], key_at(j, cached, r, u * 4u), sum4); }',
    '    score = sum4.x + sum4.y + sum4.z + sum4.w;',
    '  }',
    '  scores[lid] = score;',
    '  workgroupBarrier();',
    '  var tile_max = masked;',
    '  for (var c = 0u; c < KEYS; c = c + 1u) { tile_max = max(tile_max, scores[c]); }',
    '  // Key j0 is in the tile, so new_max is finite; before the first tile, the sum and accumulator are 0.',
    '  let new_max = max(run_max, tile_max);',
    '  let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);',
    '  weights[lid] = select(0.0, exp2(score - new_max), j < end);',
    '  workgroupBarrier();',
    '  run_sum = run_sum * alpha;',
    '  for (var v = 0u; v < V_OWN; v = v + 1u) { acc[v] = acc[v] * alpha; }',
    '  let keys = min(KEYS, end - j0);',
    '  for (var c = 0u; c < keys; c = c + 1u) {',
    '    let w = weights[c];',
    '    run_sum = run_sum + w;',
    '    for (var v = 0u; v < V_OWN; v = v + 1u) {',
    '      let col = lid + v * KEYS;',
    '      if (col < params.d) { acc[v] = fma(w, value_at(j0 + c, cached, r, col), acc[v]); }',
    '    }',
    '  }',
    '  run_max = new_max;',
    '}',
    '',
    ...output,
  ];
}

/** decode_attention_merge: one output element per invocation, over the splits of its row. */
function mergeKernel(req: KernelRequest): KernelPlan {
  const p = req.inputs[0] as TensorType;
  const [splits, width] = p.shape.slice(-2);
  const n = req.out.shape.reduce((a, b) => a * b, 1);
  const lines = [
    'if (gid >= params.n) { return; }',
    'let r = gid / params.d;',
    'let c = gid % params.d;',
    'let width = params.d + 2u; // a partial: [o (D), m, l]',
    'let row0 = r * params.splits * width;',
    'let masked = kiln_f32_bits(0xff800000u); // -inf',
    'var max_m = masked;',
    'for (var s = 0u; s < params.splits; s = s + 1u) { max_m = max(max_m, partials[row0 + s * width + params.d]); }',
    'var sum = 0.0;',
    'var acc = 0.0;',
    'for (var s = 0u; s < params.splits; s = s + 1u) {',
    '  let at = row0 + s * width;',
    '  let m = partials[at + params.d];',
    '  // An empty split (m = -inf) weighs nothing.',
    '  let w = select(0.0, exp2(m - max_m), m > masked);',
    '  sum = fma(w, partials[at + params.d + 1u], sum);',
    '  acc = fma(w, partials[at + c], acc);',
    '}',
    '// No key in any split (never in a decode step, which has its own key): zeros.',
    `out[gid] = ${store(req.out.dtype, 'select(0.0, acc / sum, sum > 0.0)')};`,
  ];
  return {
    inputNames: ['partials'],
    params: { n, d: width - 2, splits },
    decls: F32_BITS_WGSL,
    body: indent(lines),
    workgroupSize: ELEMENTWISE_GROUP,
    workgroups: groupsFor(n, ELEMENTWISE_GROUP),
  };
}

export const decodeAttentionLowerings: Record<string, Lowering> = {
  decode_attention: (req) => decodeKernel(req, 'whole'),
  decode_attention_partial: (req) => decodeKernel(req, 'partial'),
  decode_attention_merge: mergeKernel,
};

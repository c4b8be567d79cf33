// f16 flash attention forward on tensor cores: q k^T and P v as 16x16x16 subgroup-matrix products
// (Dawn's `chromium-experimental-subgroup-matrix`), the online softmax in f32 between them. Chosen by
// flashAttentionKernel (fused_attention.ts) for f16 attention without a mask operand or dropout, head
// dims of 16 to 64 in steps of 16 (q, k and v alike), on a device whose subgroups are 32 wide; the SIMT
// flash kernel takes everything else. Checked on the GPU only (test/tensor-core-cases.ts), as matmul_tc.ts.
//
// Design (FlashAttention-2's forward, cut for subgroup matrices, as llama.cpp's WebGPU flash_attn does):
// - A workgroup takes 64 query rows of one batch-head on 4 subgroups, 16 rows each. Its q rows are
//   scaled by sqrt(scale) and rounded to f16 (kiln's f16 "pre_qk" scaling, the CPU reference's), staged
//   once, and kept as D/16 left matrices for the whole key loop.
// - Keys go by 64 at a time. k (scaled and rounded the same way) and v tiles are staged in workgroup
//   memory as f16; the next tile is read into registers while this one is worked through.
// - Scores: each subgroup multiplies its q matrices by the k tile's, 4 result matrices of 16 keys (f32
//   sums), and stores them to its own f32 scratch. Its 32 lanes then take 2 a row, the even and the odd
//   keys, and run the online softmax in base 2 (scores times log2(e)): the tile's row max through a
//   shuffle with the partner lane, weights p = exp2(score - max) in f32 summed into the running sum,
//   and p rounded to f16 into the subgroup's P tile (what the tensor cores multiply, as PyTorch's flash
//   kernel rounds P; the CPU reference keeps p in f32, so the f16 tolerance has a term for it).
// - P v: D/16 fresh result matrices over the tile's 64 keys, stored to the scratch; each lane rescales
//   its share of the output row (registers, D/2 values a lane) by exp2(old max - new max) and adds its
//   part of the tile's. Subgroup matrices cannot be scaled per row, so the running output lives in
//   registers and each tile's P v starts from zero.
// - Causal: tiles past the workgroup's last row are never loaded, the diagonal tile masks per key, and
//   row tiles go longest first. Rows past L and keys past S are zero-filled and masked.
// The output is written once, divided by the running sum and rounded to f16.

import type { AttentionSpec } from '../../ir/ops/fused_attention.ts';
import { attentionDims } from '../../ir/ops/attention.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import { ROUND_F16_WGSL } from './attention.ts';
import { F32_BITS_WGSL, constDecl, indent } from './helpers.ts';
import type { KernelPlan, KernelRequest } from './plan.ts';
import { tensorCoresUsable } from './matmul_tc.ts';

const ROWS = 64; // query rows a workgroup
const KEYS = 64; // keys a tile
const SUBGROUPS = 4; // 16 rows each
const THREADS = SUBGROUPS * 32;
const PAD = 8; // halves of padding per f16 tile row
const S_ROW = KEYS + 4; // floats per scratch row: rows start 4 banks apart

/** Workgroup bytes for head dim d: the k and v tiles (f16), the f32 scratch and the P tiles (f16). */
export function flashTensorCoreBytes(d: number): number {
  return 2 * KEYS * (d + PAD) * 2 + SUBGROUPS * 16 * S_ROW * 4 + SUBGROUPS * 16 * (KEYS + PAD) * 2;
}

/** Whether the tensor-core flash kernel takes this request (f16, no mask, no dropout, d = dv in 16..64, 32-wide subgroups). */
export function flashTensorCoresFit(req: KernelRequest, hasMask: boolean, hasDropout: boolean): boolean {
  const [q, k, v] = req.inputs as TensorType[];
  if (hasMask || hasDropout || q.dtype !== 'f16' || !tensorCoresUsable(req.limits)) return false;
  const { s, d, dv } = attentionDims(q, k, v);
  return d === dv && d % 16 === 0 && d <= 64 && s >= 1 && flashTensorCoreBytes(d) <= req.limits!.maxComputeWorkgroupStorageSize;
}

export function flashTensorCoreKernel(req: KernelRequest, spec: AttentionSpec): KernelPlan {
  const [q, k, v] = req.inputs as TensorType[];
  const { batch, l, s, d } = attentionDims(q, k, v);
  if (spec.scaling !== 'pre_qk') throw new Error('f16 attention takes "pre_qk" scaling');
  const dd = d / 16; // 16-wide slices of the head dim
  const vecsPerRow = d / 8; // vec4<u32> reads of 8 halves per row
  const perThread = (KEYS * vecsPerRow) / THREADS; // of each tile (and of q's 64 rows)
  const ld = d + PAD; // halves per staged k, v or q row
  const ldp = KEYS + PAD; // halves per P row
  const rowTiles = Math.ceil(l / ROWS);
  const oPer = d / 2; // output values a lane keeps: its row's even or odd columns

  // Invocation lid's share of a 64-row tile of `x` from row `first`: vec e = lid + n * THREADS is row e / vecsPerRow.
  const fetch = (x: 'q' | 'k' | 'v', regs: string, first: string, limit: string, base: string) =>
    [...Array(perThread).keys()].flatMap((n) => {
      const e = `(lid + ${n * THREADS}u)`;
      return [
        `let ${x}_r${n} = ${first} + ${e} / ${vecsPerRow}u;`,
        `${regs}[${n}] = select(vec4<u32>(0u), ${x}[(${base} + min(${x}_r${n}, ${limit} - 1u)) * ${vecsPerRow}u + ${e} % ${vecsPerRow}u], ${x}_r${n} < ${limit});`,
      ];
    });
  const stage = (tile: 'k' | 'v', regs: string) =>
    [...Array(perThread).keys()].map((n) => {
      const e = `(lid + ${n * THREADS}u)`;
      return `put8_${tile}((${e} / ${vecsPerRow}u) * ${ld}u + (${e} % ${vecsPerRow}u) * 8u, ${regs}[${n}]);`;
    });

  // S = q k^T for this subgroup's 16 rows: 4 result matrices of 16 keys, dd steps of 16 head dims.
  const scores: string[] = [];
  for (let j = 0; j < KEYS / 16; j++) {
    scores.push(`var s${j}: subgroup_matrix_result<f32, 16, 16>;`);
    for (let u = 0; u < dd; u++) {
      scores.push(`s${j} = subgroupMatrixMultiplyAccumulate(q${u}, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&k_tile, ${j * 16 * ld + u * 16}u, true, ${ld}u), s${j});`);
    }
    scores.push(`subgroupMatrixStore(&s_tile, scratch + ${j * 16}u, s${j}, false, ${S_ROW}u);`);
  }
  // O_tile = P v: dd result matrices of 16 head dims, 4 steps of 16 keys.
  const pv: string[] = [];
  for (let u = 0; u < dd; u++) {
    pv.push(`var o${u}: subgroup_matrix_result<f32, 16, 16>;`);
    for (let j = 0; j < KEYS / 16; j++) {
      pv.push(`o${u} = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&p_tile, p_base + ${j * 16}u, false, ${ldp}u), subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&v_tile, ${j * 16 * ld + u * 16}u, false, ${ld}u), o${u});`);
    }
    pv.push(`subgroupMatrixStore(&s_tile, scratch + ${u * 16}u, o${u}, false, ${S_ROW}u);`);
  }

  const body = [
    'let bh = wid / params.row_tiles;',
    `let row_tile = ${spec.causal ? 'params.row_tiles - 1u - wid % params.row_tiles' : 'wid % params.row_tiles'};`,
    'let row0 = row_tile * ROWS;',
    'let sg = lid / 32u; // this subgroup: rows sg * 16 .. + 15 of the tile',
    'let lane = lid % 32u;',
    'let r = lane / 2u; // this lane\'s row within the subgroup\'s 16',
    'let odd = lane % 2u; // and its keys (and output columns): the even ones (0) or the odd ones (1)',
    'let i = row0 + sg * 16u + r; // its query row',
    'let scratch = sg * 16u * S_ROW;',
    `let p_base = sg * 16u * ${ldp}u;`,
    'let kv_row0 = bh * params.s;',
    'let masked = kiln_f32_bits(0xff800000u); // -inf',
    '',
    '// q: scaled, rounded to f16 and staged (in the k tile), then kept as left matrices.',
    `var regs_k: array<vec4<u32>, ${perThread}>;`,
    `var regs_v: array<vec4<u32>, ${perThread}>;`,
    ...fetch('q', 'regs_k', 'row0', 'params.l', 'bh * params.l'),
    ...stage('k', 'regs_k'),
    'workgroupBarrier();',
    ...[...Array(dd).keys()].map((u) => `let q${u} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&k_tile, sg * ${16 * ld}u + ${u * 16}u, false, ${ld}u);`),
    '',
    `var o_row: array<f32, ${oPer}>; // this lane's output columns 2c + half, unnormalized`,
    'var run_max = masked;',
    'var run_sum = 0.0;',
    spec.causal
      ? '// Causal: key tiles past the workgroup\'s last row are never loaded; row i sees keys 0..i.\nlet key_end = min(params.s, row0 + ROWS);\nlet row_end = min(key_end, i + 1u);'
      : 'let key_end = params.s;\nlet row_end = key_end;',
    ...fetch('k', 'regs_k', '0u', 'params.s', 'kv_row0'),
    ...fetch('v', 'regs_v', '0u', 'params.s', 'kv_row0'),
    'for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {',
    '  workgroupBarrier(); // everyone is done with the last tiles and the scratch',
    indent([...stage('k', 'regs_k'), ...stage('v', 'regs_v')], '  '),
    '  workgroupBarrier();',
    '  if (j0 + KEYS < key_end) {',
    indent([...fetch('k', 'regs_k', 'j0 + KEYS', 'params.s', 'kv_row0'), ...fetch('v', 'regs_v', 'j0 + KEYS', 'params.s', 'kv_row0')], '    '),
    '  }',
    indent(scores, '  '),
    '  workgroupBarrier();',
    '  // Online softmax over this lane\'s 32 keys of its row, in base 2; the partner lane has the other 32.',
    `  var sc: array<f32, ${KEYS / 2}>;`,
    '  var tile_max = masked;',
    `  for (var c = 0u; c < ${KEYS / 2}u; c = c + 1u) {`,
    '    let j = j0 + 2u * c + odd;',
    '    sc[c] = select(masked, s_tile[scratch + r * S_ROW + 2u * c + odd] * LOG2E, j < row_end);',
    '    tile_max = max(tile_max, sc[c]);',
    '  }',
    '  tile_max = max(tile_max, subgroupShuffleXor(tile_max, 1u));',
    '  let new_max = max(run_max, tile_max);',
    '  // Until a score above -inf is seen the output and sum are zero, and -inf - -inf must not enter exp2.',
    '  let alpha = select(0.0, exp2(run_max - new_max), run_max > masked);',
    '  var tile_sum = 0.0;',
    `  for (var c = 0u; c < ${KEYS / 2}u; c = c + 1u) {`,
    '    let p = select(0.0, exp2(sc[c] - new_max), sc[c] > masked);',
    '    tile_sum = tile_sum + p;',
    `    p_tile[p_base + r * ${ldp}u + 2u * c + odd] = f16(p);`,
    '  }',
    '  run_sum = run_sum * alpha + tile_sum + subgroupShuffleXor(tile_sum, 1u);',
    '  run_max = new_max;',
    '  workgroupBarrier();',
    indent(pv, '  '),
    '  workgroupBarrier();',
    `  for (var c = 0u; c < ${oPer}u; c = c + 1u) { o_row[c] = o_row[c] * alpha + s_tile[scratch + r * S_ROW + 2u * c + odd]; }`,
    '}',
    '',
    'if (i < params.l) {',
    '  let inv_sum = 1.0 / run_sum; // > 0: every row sees at least one key',
    `  for (var c = 0u; c < ${oPer}u; c = c + 1u) { out[(bh * params.l + i) * ${d}u + 2u * c + odd] = f16(o_row[c] * inv_sum); }`,
    '}',
  ];

  const decls = [
    `// q, k, v are [..., L or S, ${d}] f16, read 8 halves at a time. Each workgroup takes ${ROWS} query rows of one`,
    `// batch-head on ${SUBGROUPS} subgroups of 16 rows; keys go by ${KEYS} a tile.`,
    `const ROWS: u32 = ${ROWS}u;`,
    `const KEYS: u32 = ${KEYS}u;`,
    `const S_ROW: u32 = ${S_ROW}u; // floats per scratch row`,
    `${constDecl('QK_SCALE', 'f32', Math.sqrt(spec.scale))} // sqrt(scale): q and k each carry it, rounded to f16 ("pre_qk")`,
    `${constDecl('LOG2E', 'f32', Math.LOG2E)} // scores to base 2, for exp2`,
    F32_BITS_WGSL,
    ROUND_F16_WGSL,
    `var<workgroup> k_tile: array<f16, ${KEYS * ld}>; // [key][d], rows padded by ${PAD}; q's rows at the start`,
    `var<workgroup> v_tile: array<f16, ${KEYS * ld}>; // [key][d]`,
    `var<workgroup> s_tile: array<f32, ${SUBGROUPS * 16 * S_ROW}>; // per subgroup [16][S_ROW]: scores, then P v`,
    `var<workgroup> p_tile: array<f16, ${SUBGROUPS * 16 * ldp}>; // per subgroup [16][${ldp}]: the weights`,
    '',
    '// Eight halves into the k tile from one vec4<u32> read, times sqrt(scale) and rounded to f16 (q and k).',
    'fn put8_k(at: u32, x: vec4<u32>) {',
    '  for (var w = 0u; w < 4u; w = w + 1u) {',
    '    let h = bitcast<vec2<f16>>(x[w]);',
    '    k_tile[at + 2u * w] = f16(kiln_round_f16_1(f32(h.x) * QK_SCALE));',
    '    k_tile[at + 2u * w + 1u] = f16(kiln_round_f16_1(f32(h.y) * QK_SCALE));',
    '  }',
    '}',
    '// Eight halves into the v tile as they are.',
    'fn put8_v(at: u32, x: vec4<u32>) {',
    '  for (var w = 0u; w < 4u; w = w + 1u) {',
    '    let h = bitcast<vec2<f16>>(x[w]);',
    '    v_tile[at + 2u * w] = h.x;',
    '    v_tile[at + 2u * w + 1u] = h.y;',
    '  }',
    '}',
  ];
  return {
    inputNames: ['q', 'k', 'v'],
    directives: ['enable f16;', 'enable subgroups;', 'enable chromium_experimental_subgroup_matrix;'],
    bindingTypes: { q: 'vec4<u32>', k: 'vec4<u32>', v: 'vec4<u32>' },
    params: { l, s, row_tiles: rowTiles },
    decls: decls.join('\n'),
    body: indent(body),
    workgroupSize: THREADS,
    workgroups: numel(batch) * rowTiles,
  };
}

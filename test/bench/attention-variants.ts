// Experimental layouts of the flash-attention forward, for test/bench/attention-sweep.ts to time beside
// the kernel kiln uses (codegen/wgsl/fused_attention.ts). Causal or not, no mask, "post" scaling: the
// benchmark's cases. What differs from kiln's kernel:
// - ROW_BLOCK query rows per invocation (register blocking): each k and v vec4 read from workgroup
//   memory serves ROW_BLOCK rows, so the reads per multiply-add drop by that factor;
// - the slices' partial dots meet through subgroup shuffles (`exchange: 'subgroup'`, which assumes
//   that a 1-D workgroup's invocations fill subgroups in local-index order) instead of workgroup memory;
// - `unroll`: the tile's loops (keys, rows, vec4s) written out by the generator instead of left to the driver.

import type { KernelPlan, KernelRequest } from '../../codegen/wgsl/plan.ts';
import type { AttentionSpec } from '../../ir/ops/attention.ts';
import { attentionDims } from '../../ir/ops/attention.ts';
import { rowLoader } from '../../codegen/wgsl/fused_attention.ts';
import { constDecl } from '../../codegen/wgsl/helpers.ts';
import { type TensorType, numel } from '../../ir/types.ts';

export interface VariantShape {
  readonly slices: number;
  /** Query rows per invocation. */
  readonly rowBlock: number;
  /** Invocations per slice of the workgroup: the workgroup has invRows * slices invocations and invRows * rowBlock rows. */
  readonly invRows: number;
  readonly keys: number;
  readonly exchange: 'workgroup' | 'subgroup';
  readonly unroll: boolean;
}

export function variantName(v: VariantShape): string {
  return `S${v.slices} R${v.rowBlock} inv${v.invRows} K${v.keys} ${v.exchange === 'subgroup' ? 'sg' : 'wg'}${v.unroll ? ' unrolled' : ''}`;
}

/** `for` over 0..n with variable `name`, or the body written n times with the index as a literal. */
function rep(name: string, n: number, unroll: boolean, body: (i: string) => string[]): string[] {
  if (!unroll) return [`for (var ${name} = 0u; ${name} < ${n}u; ${name} = ${name} + 1u) {`, ...body(name).map((l) => '  ' + l), '}'];
  return Array.from({ length: n }, (_, i) => ['{', ...body(`${i}u`).map((l) => '  ' + l), '}']).flat();
}

export function variantKernel(req: KernelRequest, spec: AttentionSpec, v: VariantShape): KernelPlan {
  const [q, k, vt] = req.inputs as TensorType[];
  const { batch, l, s, d, dv } = attentionDims(q, k, vt);
  const S = v.slices;
  const R = v.rowBlock;
  const K = v.keys;
  const QV = Math.ceil(Math.ceil(d / 4) / S);
  const OV = Math.ceil(Math.ceil(dv / 4) / S);
  const WG = v.invRows * S;
  const ROWS = v.invRows * R;
  const kFetch = Math.ceil((K * S * QV) / WG);
  const vFetch = Math.ceil((K * S * OV) / WG);
  const rowTiles = Math.ceil(l / ROWS);
  const U = v.unroll;
  const at = (n: number) => (n === 0 ? 'lid' : `(lid + ${n}u * WORKGROUP)`);
  const fetch = (j0: string) => [
    ...Array.from({ length: kFetch }, (_, n) => [
      `let j_k${n} = ${j0} + ${at(n)} / K_ROW;`,
      `next_k[${n}] = select(vec4<f32>(0.0), load_k(kv_row0 + min(j_k${n}, params.s - 1u), (${at(n)} % K_ROW) * 4u), j_k${n} < params.s);`,
    ]).flat(),
    ...Array.from({ length: vFetch }, (_, n) => [
      `let j_v${n} = ${j0} + ${at(n)} / V_ROW;`,
      `next_v[${n}] = select(vec4<f32>(0.0), load_v(kv_row0 + min(j_v${n}, params.s - 1u), (${at(n)} % V_ROW) * 4u), j_v${n} < params.s);`,
    ]).flat(),
  ];
  const store = (tile: string, n: number, total: number, src: string) =>
    (n + 1) * WG > total ? `if (${at(n)} < ${total}u) { ${tile}[${at(n)}] = ${src}; }` : `${tile}[${at(n)}] = ${src};`;
  const stage = [
    ...Array.from({ length: kFetch }, (_, n) => store('k_tile', n, K * S * QV, `next_k[${n}]`)),
    ...Array.from({ length: vFetch }, (_, n) => store('v_tile', n, K * S * OV, `next_v[${n}]`)),
  ];
  const sg = v.exchange === 'subgroup' && S > 1;
  const wgExchange = v.exchange === 'workgroup' && S > 1;
  const decls = [
    `const ROWS: u32 = ${ROWS}u;`,
    `const ROW_BLOCK: u32 = ${R}u;`,
    `const SLICES: u32 = ${S}u;`,
    `const KEYS: u32 = ${K}u;`,
    `const Q_VEC4: u32 = ${QV}u;`,
    `const O_VEC4: u32 = ${OV}u;`,
    'const K_ROW: u32 = SLICES * Q_VEC4;',
    'const V_ROW: u32 = SLICES * O_VEC4;',
    `const WORKGROUP: u32 = ${WG}u;`,
    constDecl('Q_SCALE', 'f32', spec.scale * Math.LOG2E),
    'const MASKED: f32 = -3.0e38;',
    'const MASKED_BELOW: f32 = -1.0e30;',
    'const MAX_SLACK: f32 = 8.0;',
    'var<workgroup> k_tile: array<vec4<f32>, KEYS * K_ROW>;',
    'var<workgroup> v_tile: array<vec4<f32>, KEYS * V_ROW>;',
    ...(wgExchange ? [`var<workgroup> partial_dots: array<vec${S}<f32>, KEYS * ROWS>;`] : []),
    rowLoader('q', 'd', d),
    rowLoader('k', 'd', d),
    rowLoader('v', 'dv', dv),
  ].join('\n');

  // dots[r * KEYS + c]: row r's score against key c of the tile.
  const dotLines = rep('c', K, U, (c) => [
    ...rep('r', R, U, (r) => [`sums[${r}] = vec4<f32>(0.0);`]),
    ...rep('u', QV, U, (u) => [`let kk = k_tile[${c} * K_ROW + ${u} * SLICES + slice];`, ...rep('r', R, U, (r) => [`sums[${r}] = fma(q_own[${r} * Q_VEC4 + ${u}], kk, sums[${r}]);`])]),
    ...rep('r', R, U, (r) => [`dots[${r} * KEYS + ${c}] = sums[${r}].x + sums[${r}].y + sums[${r}].z + sums[${r}].w;`]),
  ]);
  const shuffles = sg ? rep('x', R * K, U, (x) => [
    `dots[${x}] = dots[${x}] + subgroupShuffleXor(dots[${x}], 1u);`,
    ...(S === 4 ? [`dots[${x}] = dots[${x}] + subgroupShuffleXor(dots[${x}], 2u);`] : []),
  ]) : [];
  const exchange = wgExchange
    ? [
      ...rep('c', K, U, (c) => rep('r', R, U, (r) => [`partial_dots[${c} * ROWS + inv * ROW_BLOCK + ${r}][slice] = dots[${r} * KEYS + ${c}];`])),
      '}',
      'workgroupBarrier();',
      'if (live) {',
      ...rep('c', K, U, (c) => rep('r', R, U, (r) => [`dots[${r} * KEYS + ${c}] = dot(partial_dots[${c} * ROWS + inv * ROW_BLOCK + ${r}], vec${S}<f32>(1.0));`])),
    ]
    : [];
  const softmax = rep('r', R, U, (r) => [
    '{',
    '  var tile_max = MASKED;',
    ...rep('c', K, U, (c) => [
      `let sc = select(MASKED, dots[${r} * KEYS + ${c}], j0 + ${c} < row_end[${r}]);`,
      `dots[${r} * KEYS + ${c}] = sc;`,
      'tile_max = max(tile_max, sc);',
    ]).map((x) => '  ' + x),
    `  let new_max = select(run_max[${r}], tile_max, tile_max > run_max[${r}] + MAX_SLACK);`,
    `  let alpha = select(0.0, exp2(run_max[${r}] - new_max), run_max[${r}] > MASKED_BELOW);`,
    '  if (alpha != 1.0) {',
    `    run_sum[${r}] = run_sum[${r}] * alpha;`,
    ...rep('u', OV, U, (u) => [`acc[${r} * O_VEC4 + ${u}] = acc[${r} * O_VEC4 + ${u}] * alpha;`]).map((x) => '    ' + x),
    '  }',
    `  run_max[${r}] = new_max;`,
    ...rep('c', K, U, (c) => [`dots[${r} * KEYS + ${c}] = select(0.0, exp2(dots[${r} * KEYS + ${c}] - new_max), dots[${r} * KEYS + ${c}] > MASKED_BELOW);`, `run_sum[${r}] = run_sum[${r}] + dots[${r} * KEYS + ${c}];`]).map((x) => '  ' + x),
    '}',
  ]);
  const pv = rep('c', K, U, (c) => rep('u', OV, U, (u) => [
    `let vv = v_tile[${c} * V_ROW + ${u} * SLICES + slice];`,
    ...rep('r', R, U, (r) => [`acc[${r} * O_VEC4 + ${u}] = fma(vec4<f32>(dots[${r} * KEYS + ${c}]), vv, acc[${r} * O_VEC4 + ${u}]);`]),
  ]));

  const body = [
    'let bh = wid / params.row_tiles;',
    `let row_tile = ${spec.causal ? 'params.row_tiles - 1u - wid % params.row_tiles' : 'wid % params.row_tiles'};`,
    'let row0 = row_tile * ROWS;',
    'let inv = lid / SLICES;',
    'let slice = lid % SLICES;',
    'let kv_row0 = bh * params.s;',
    `let key_end = ${spec.causal ? 'min(params.s, row0 + ROWS)' : 'params.s'};`,
    'var q_own: array<vec4<f32>, ROW_BLOCK * Q_VEC4>;',
    'var acc: array<vec4<f32>, ROW_BLOCK * O_VEC4>;',
    'var run_max: array<f32, ROW_BLOCK>;',
    'var run_sum: array<f32, ROW_BLOCK>;',
    'var row_end: array<u32, ROW_BLOCK>;',
    'var inv_end = 0u;',
    'for (var r = 0u; r < ROW_BLOCK; r = r + 1u) {',
    '  let i = row0 + inv * ROW_BLOCK + r;',
    '  let valid = i < params.l;',
    `  row_end[r] = select(0u, ${spec.causal ? 'min(key_end, i + 1u)' : 'key_end'}, valid);`,
    '  inv_end = max(inv_end, row_end[r]);',
    '  run_max[r] = MASKED;',
    '  run_sum[r] = 0.0;',
    '  for (var u = 0u; u < Q_VEC4; u = u + 1u) {',
    '    q_own[r * Q_VEC4 + u] = vec4<f32>(0.0);',
    '    if (valid) { q_own[r * Q_VEC4 + u] = load_q(bh * params.l + i, (u * SLICES + slice) * 4u) * Q_SCALE; }',
    '  }',
    '  for (var u = 0u; u < O_VEC4; u = u + 1u) { acc[r * O_VEC4 + u] = vec4<f32>(0.0); }',
    '}',
    `var next_k: array<vec4<f32>, ${kFetch}>;`,
    `var next_v: array<vec4<f32>, ${vFetch}>;`,
    ...fetch('0u'),
    'for (var j0 = 0u; j0 < key_end; j0 = j0 + KEYS) {',
    '  workgroupBarrier();',
    ...stage.map((x) => '  ' + x),
    '  workgroupBarrier();',
    '  if (j0 + KEYS < key_end) {',
    ...fetch('j0 + KEYS').map((x) => '    ' + x),
    '  }',
    '  let live = j0 < inv_end;',
    '  var dots: array<f32, ROW_BLOCK * KEYS>;',
    '  var sums: array<vec4<f32>, ROW_BLOCK>;',
    '  if (live) {',
    ...[...dotLines, ...shuffles].map((x) => '    ' + x),
    ...exchange.map((x) => (x === '}' || x === 'workgroupBarrier();' || x === 'if (live) {' ? '  ' + x : '    ' + x)),
    ...[...softmax, ...pv].map((x) => '    ' + x),
    '  }',
    '}',
    'for (var r = 0u; r < ROW_BLOCK; r = r + 1u) {',
    '  let i = row0 + inv * ROW_BLOCK + r;',
    '  if (i < params.l) {',
    '    let inv_sum = select(0.0, 1.0 / run_sum[r], run_sum[r] > 0.0);',
    '    for (var u = 0u; u < O_VEC4; u = u + 1u) {',
    '      let col = (u * SLICES + slice) * 4u;',
    '      let value = acc[r * O_VEC4 + u] * inv_sum;',
    '      for (var c = 0u; c < 4u; c = c + 1u) {',
    '        if (col + c < params.dv) { out[(bh * params.l + i) * params.dv + col + c] = value[c]; }',
    '      }',
    '    }',
    '  }',
    '}',
  ];
  return {
    inputNames: ['q', 'k', 'v'],
    params: { l, s, d, dv, row_tiles: rowTiles },
    decls,
    body: body.map((x) => '  ' + x).join('\n'),
    workgroupSize: WG,
    workgroups: numel(batch) * rowTiles,
    ...(sg ? { directives: ['enable subgroups;', 'diagnostic(off, subgroup_uniformity);'] } : {}),
  };
}

// WGSL lowerings of dropout (when active) and sdpa (the entries live in attention.ts). Given the rng
// operand, a kernel mixes its value into the site's seed once per invocation (kiln_mix_seed).

import type { KernelPlan, KernelRequest } from './plan.ts';
import { type DType, type TensorType, numel } from '../../ir/types.ts';
import { type AttentionSpec, attentionDims, attentionOperands, sdpaSpec } from '../../ir/ops/attention.ts';
import { ROUND_F16_WGSL, load, store } from './dtypes.ts';

export { ROUND_F16_WGSL } from './dtypes.ts';
import { F32_MAX, broadcastStrides, constDecl, coordLines, generateKernel, indent, listParams, offsetExpr, wgslLiteral } from './helpers.ts';
import type { Lowering } from './plan.ts';

/** The dropout hash in WGSL: ir/ops/attention.ts's dropoutUniform, bit for bit. */
export const DROPOUT_HASH_WGSL = `fn kiln_uniform(seed: u32, index: u32) -> f32 {
  let h = index * 747796405u + seed * 2891336453u + 2891336453u;
  let word = ((h >> (((h >> 28u) + 4u) & 31u)) ^ h) * 277803737u;
  return f32((word >> 22u) ^ word) / 4294967296.0;
}`;

/** The seed mixer in WGSL: ir/ops/attention.ts's mixDropoutSeed, bit for bit. */
export const DROPOUT_MIX_WGSL = `fn kiln_mix_seed(seed: u32, rng: u32) -> u32 {
  let state = (seed ^ (rng * 0x9e3779b9u)) * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}`;

/** Dropout's constants: the seed, p, and 1 - p; the bits come from the hash shared with the CPU (and its seed mixer, with an rng). */
export function dropoutDecls(p: number, seed: number, rng: boolean): string {
  return [DROPOUT_HASH_WGSL, ...(rng ? [DROPOUT_MIX_WGSL] : []), `const SEED: u32 = ${seed >>> 0}u;`, constDecl('DROP_P', 'f32', p), constDecl('KEEP_P', 'f32', 1 - p)].join('\n');
}

/** The line that defines `seed`, the effective seed: SEED, mixed with the rng binding's value when there is one. */
export function seedLine(rng: boolean): string {
  return rng ? 'let seed = kiln_mix_seed(SEED, bitcast<u32>(rng[0]));' : 'let seed = SEED;';
}

export function dropoutKernel(req: KernelRequest): KernelPlan {
  const rng = req.inputs.length === 2;
  const decls = dropoutDecls(req.attrs.p as number, req.attrs.seed as number, rng);
  const dtype = req.out.dtype; // f16: computed in f32 registers, rounded at the store
  const lines = [seedLine(rng), `out[gid] = ${store(dtype, `select(${load('x', dtype, 'gid')} / KEEP_P, 0.0, kiln_uniform(seed, gid) < DROP_P)`)};`];
  return generateKernel(req.out, {}, rng ? ['x', 'rng'] : ['x'], decls, lines);
}


/** Whether an attention kernel rounds its scaled q and k to f16 (f16 "pre_qk"): then it needs ROUND_F16_WGSL. */
export function roundsQk(dtype: DType, spec: AttentionSpec): boolean {
  return dtype === 'f16' && spec.scaling === 'pre_qk';
}

const GROUP = 64;

/**
 * sdpa: one workgroup per query row. Keys go by in chunks of 64: each invocation scores one key
 * (q row staged in workgroup memory), then every invocation folds the chunk into an online softmax
 * and accumulates the output dims it owns (lid, lid + 64, ...). Masked scores sit at a finite sentinel,
 * never -inf; a row with no kept key writes zeros. Dropout draws the same bits as the CPU reference.
 * f16 ("pre_qk", sdpaSpec): q and k are multiplied by sqrt(scale) and rounded to f16 as they are read,
 * as the flash kernel does; everything after is f32, and the output is stored in f16.
 */
export function sdpaKernel(req: KernelRequest): KernelPlan {
  const [q, k, v] = req.inputs as TensorType[];
  const { mask, rng } = attentionOperands('sdpa', req.inputs as TensorType[], req.attrs);
  const { batch, l, s, d, dv } = attentionDims(q, k, v);
  const spec = sdpaSpec(req.attrs, q);
  const causal = spec.causal;
  // f16 "pre_qk": q and k each times sqrt(scale) (ROOT), rounded to f16; the scores need no SCALE then.
  const rounds = roundsQk(q.dtype, spec);
  const qk = (name: string, index: string) => (rounds ? `kiln_round_f16(vec4<f32>(${load(name, q.dtype, index)} * ROOT)).x` : load(name, q.dtype, index));
  const dropoutP = typeof req.attrs.dropoutP === 'number' ? req.attrs.dropoutP : 0;
  const perInvocation = Math.max(1, Math.ceil(dv / GROUP));
  const params: Record<string, number> = { l, s, d, dv };
  const maskLines: string[] = [];
  let scoreLine = 'score = dot * SCALE;';
  if (mask) {
    const strides = broadcastStrides([...batch, l, s], mask.shape);
    Object.assign(params, listParams('batch_shape', batch), listParams('mask_stride', strides.slice(0, -2)));
    params.mask_row_stride = strides[batch.length];
    params.mask_col_stride = strides[batch.length + 1];
    maskLines.push(...coordLines('bh', batch.length, 'batch_shape', 'b'),
      `let mask_base = ${offsetExpr(batch.length, 'b', 'mask_stride')} + i * params.mask_row_stride;`);
    const at = 'mask[mask_base + j * params.mask_col_stride]';
    scoreLine = mask.dtype === 'bool' ? `score = select(MASKED, dot * SCALE, ${at} != 0u);` : `score = dot * SCALE + ${load('mask', mask.dtype, 'mask_base + j * params.mask_col_stride')};`;
  }
  // Probability (row wid, key j) is dropout's element wid * S + j, as in the CPU reference.
  const dropout = dropoutP > 0
    ? ['let weight = select(p / KEEP_P, 0.0, kiln_uniform(seed, wid * params.s + j0 + t) < DROP_P);']
    : ['let weight = p;'];
  const body = [
    'let i = wid % params.l;',
    'let bh = wid / params.l;',
    'let kv_row = bh * params.s;',
    `for (var c = lid; c < params.d; c = c + 64u) { q_row[c] = ${qk('q', 'wid * params.d + c')}; }`,
    'workgroupBarrier();',
    ...maskLines,
    ...(dropoutP > 0 ? [seedLine(rng !== undefined)] : []),
    `let key_end = ${causal ? 'min(params.s, i + 1u)' : 'params.s'};`,
    'var run_max = MASKED;',
    'var run_sum = 0.0;',
    `var acc: array<f32, ${perInvocation}>;`,
    `for (var j0 = 0u; j0 < key_end; j0 = j0 + ${GROUP}u) {`,
    '  let j = j0 + lid;',
    '  var score = MASKED;',
    '  if (j < key_end) {',
    '    var dot = 0.0;',
    `    for (var c = 0u; c < params.d; c = c + 1u) { dot = fma(q_row[c], ${qk('k', '(kv_row + j) * params.d + c')}, dot); }`,
    `    ${scoreLine}`,
    '  }',
    '  // An additive -inf (or anything at the sentinel) counts as masked.',
    '  scores[lid] = select(MASKED, score, score > MASKED_BELOW);',
    '  workgroupBarrier();',
    `  let chunk = min(${GROUP}u, key_end - j0);`,
    '  var chunk_max = MASKED;',
    '  for (var t = 0u; t < chunk; t = t + 1u) { chunk_max = max(chunk_max, scores[t]); }',
    '  let new_max = max(run_max, chunk_max);',
    '  let alpha = select(0.0, exp(run_max - new_max), run_max > MASKED_BELOW);',
    '  run_sum = run_sum * alpha;',
    `  for (var u = 0u; u < ${perInvocation}u; u = u + 1u) { acc[u] = acc[u] * alpha; }`,
    '  for (var t = 0u; t < chunk; t = t + 1u) {',
    '    let st = scores[t];',
    '    if (st > MASKED_BELOW) {',
    '      let p = exp(st - new_max);',
    '      run_sum = run_sum + p;',
    ...dropout.map((line) => `      ${line}`),
    '      let v_row = (kv_row + j0 + t) * params.dv;',
    `      for (var u = 0u; u < ${perInvocation}u; u = u + 1u) {`,
    `        let col = lid + u * ${GROUP}u;`,
    `        if (col < params.dv) { acc[u] = fma(weight, ${load('v', q.dtype, 'v_row + col')}, acc[u]); }`,
    '      }',
    '    }',
    '  }',
    '  run_max = new_max;',
    '  workgroupBarrier();',
    '}',
    `for (var u = 0u; u < ${perInvocation}u; u = u + 1u) {`,
    `  let col = lid + u * ${GROUP}u;`,
    `  if (col < params.dv) { out[wid * params.dv + col] = ${store(q.dtype, 'select(0.0, acc[u] / run_sum, run_sum > 0.0)')}; }`,
    '}',
  ];
  const decls = [
    constDecl('SCALE', 'f32', rounds ? 1 : spec.scale),
    ...(rounds ? [`${constDecl('ROOT', 'f32', Math.sqrt(spec.scale))} // sqrt(scale), on q and k before they are rounded to f16`, ROUND_F16_WGSL] : []),
    constDecl('MASKED', 'f32', -F32_MAX),
    `const MASKED_BELOW: f32 = ${wgslLiteral(-1e38, 'f32')}; // scores at or below this are masked`,
    `var<workgroup> q_row: array<f32, ${Math.max(d, 1)}>;`,
    `var<workgroup> scores: array<f32, ${GROUP}>;`,
    ...(dropoutP > 0 ? [dropoutDecls(dropoutP, req.attrs.seed as number, rng !== undefined)] : []),
  ];
  return {
    inputNames: ['q', 'k', 'v', ...(mask ? ['mask'] : []), ...(rng ? ['rng'] : [])],
    params,
    decls: decls.join('\n'),
    body: indent(body),
    workgroupSize: GROUP,
    workgroups: numel(batch) * l,
  };
}

export const attentionLowerings: Record<string, Lowering> = { dropout: dropoutKernel };

// sample's kernel (ir/ops/sample.ts): one workgroup of SAMPLE_CHUNKS invocations per row of logits.
// Greedy: each invocation's argmax over a strided slice, then a tree reduction keeping the larger
// value and, on ties, the lower id. Otherwise: the row's max; with top_k, the k-th largest scaled
// logit by a radix select over its order-preserving u32 key (four passes of 8 bits, a 256-bin
// histogram in workgroup memory); then invocation c sums the weights of chunk c in order, and
// invocation 0 sums the chunk sums in order and walks them to the drawn id, as the CPU reference does.

import { SAMPLE_CHUNKS, sampleSpec } from '../../ir/ops/sample.ts';
import type { TensorType } from '../../ir/types.ts';
import { DROPOUT_HASH_WGSL, DROPOUT_MIX_WGSL } from './attention.ts';
import { F32_BITS_WGSL, constDecl, f32FromBits, indent, load, workgroupReduce } from './helpers.ts';
import type { KernelPlan, KernelRequest, Lowering } from './plan.ts';

/** u32 keys that order as the f32 values do (negatives flipped whole, positives with the sign bit set), and back. */
const ORDER_KEY_WGSL = `fn order_key(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}
fn key_value(key: u32) -> f32 {
  return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}`;

function greedyBody(logits: TensorType): string[] {
  const at = (i: string) => load('logits', logits.dtype, `base + ${i}`);
  return [
    'let base = wid * params.v;',
    `var best = ${f32FromBits(-Infinity)};`,
    'var best_id = 0xffffffffu;',
    `for (var e = lid; e < params.v; e = e + GROUP) { let x = ${at('e')}; if (x > best || (x == best && e < best_id)) { best = x; best_id = e; } }`,
    'best_value[lid] = best;',
    'best_index[lid] = best_id;',
    'workgroupBarrier();',
    'for (var stride = GROUP / 2u; stride > 0u; stride = stride >> 1u) {',
    '  if (lid < stride) {',
    '    let x = best_value[lid + stride];',
    '    let i = best_index[lid + stride];',
    '    if (x > best_value[lid] || (x == best_value[lid] && i < best_index[lid])) { best_value[lid] = x; best_index[lid] = i; }',
    '  }',
    '  workgroupBarrier();',
    '}',
    'if (lid == 0u) { out[wid] = i32(best_index[0]); }',
  ];
}

function drawBody(logits: TensorType, topK: boolean): string[] {
  const x = (i: string) => `(${load('logits', logits.dtype, `base + ${i}`)} * INV_TEMPERATURE)`;
  const select = [
    '// The k-th largest scaled logit, counting repeats: 8 bits of its key per pass, from the top.',
    'var prefix = 0u;',
    'var mask = 0u;',
    'var want = TOP_K;',
    'for (var round = 0u; round < 4u; round = round + 1u) {',
    '  let shift = 24u - 8u * round;',
    '  atomicStore(&histogram[lid], 0u);',
    '  workgroupBarrier();',
    `  for (var e = lid; e < params.v; e = e + GROUP) { let key = order_key(${x('e')}); if ((key & mask) == prefix) { atomicAdd(&histogram[(key >> shift) & 255u], 1u); } }`,
    '  workgroupBarrier();',
    '  if (lid == 0u) {',
    '    var above = 0u;',
    '    var bin = 255u;',
    '    loop {',
    '      let count = atomicLoad(&histogram[bin]);',
    '      if (above + count >= want || bin == 0u) { break; }',
    '      above = above + count;',
    '      bin = bin - 1u;',
    '    }',
    '    select_state = vec3<u32>(prefix | (bin << shift), mask | (255u << shift), want - above);',
    '  }',
    '  workgroupBarrier();',
    '  let state = select_state;',
    '  prefix = state.x;',
    '  mask = state.y;',
    '  want = state.z;',
    '  workgroupBarrier();',
    '}',
    'let threshold = key_value(prefix);',
  ];
  return [
    'let base = wid * params.v;',
    `var row_max = ${f32FromBits(-Infinity)};`,
    `for (var e = lid; e < params.v; e = e + GROUP) { row_max = max(row_max, ${x('e')}); }`,
    workgroupReduce('chunk_sum', SAMPLE_CHUNKS, 'row_max', (a, b) => `max(${a}, ${b})`, 'max_all'),
    ...(topK ? select : [`let threshold = ${f32FromBits(-Infinity)};`]),
    '// Chunk lid: ids [lid * chunk, (lid + 1) * chunk), summed in order.',
    'let first = lid * params.chunk;',
    'let last = min(first + params.chunk, params.v);',
    'var sum = 0.0;',
    `for (var i = first; i < last; i = i + 1u) { let xi = ${x('i')}; if (xi >= threshold) { sum = sum + exp(xi - max_all); } }`,
    'chunk_sum[lid] = sum;',
    'workgroupBarrier();',
    'if (lid == 0u) {',
    '  var total = 0.0;',
    '  for (var c = 0u; c < GROUP; c = c + 1u) { total = total + chunk_sum[c]; }',
    '  let seed = kiln_mix_seed(SEED, bitcast<u32>(counter[0]));',
    '  let goal = kiln_uniform(seed, wid) * total;',
    '  var picked = 0xffffffffu;',
    '  var before = 0.0;',
    '  for (var c = 0u; c < GROUP; c = c + 1u) {',
    '    if (before + chunk_sum[c] <= goal) { before = before + chunk_sum[c]; continue; }',
    '    var running = before;',
    '    for (var i = c * params.chunk; i < min((c + 1u) * params.chunk, params.v); i = i + 1u) {',
    `      let xi = ${x('i')};`,
    '      if (xi >= threshold) { running = running + exp(xi - max_all); }',
    '      if (running > goal) { picked = i; break; }',
    '    }',
    '    break;',
    '  }',
    '  // Rounding that leaves the target unpassed: the last id with weight.',
    '  if (picked == 0xffffffffu) {',
    '    picked = 0u;',
    `    for (var i = params.v; i > 0u; i = i - 1u) { let xi = ${x('i - 1u')}; if (xi >= threshold && exp(xi - max_all) > 0.0) { picked = i - 1u; break; } }`,
    '  }',
    '  out[wid] = i32(picked);',
    '}',
  ];
}

export function sampleKernel(req: KernelRequest): KernelPlan {
  const logits = req.inputs[0] as TensorType;
  const spec = sampleSpec(req.attrs);
  const v = logits.shape[logits.shape.length - 1];
  const rows = logits.shape.slice(0, -1).reduce((n, d) => n * d, 1);
  const topK = spec.topK > 0 && spec.topK < v;
  const group = `const GROUP: u32 = ${SAMPLE_CHUNKS}u;`;
  const decls = spec.greedy
    ? [group, F32_BITS_WGSL, `var<workgroup> best_value: array<f32, ${SAMPLE_CHUNKS}>;`, `var<workgroup> best_index: array<u32, ${SAMPLE_CHUNKS}>;`]
    : [
        group,
        F32_BITS_WGSL,
        DROPOUT_HASH_WGSL,
        DROPOUT_MIX_WGSL,
        ORDER_KEY_WGSL,
        constDecl('INV_TEMPERATURE', 'f32', Math.fround(1 / spec.temperature)),
        `const TOP_K: u32 = ${topK ? spec.topK : 0}u;`,
        `const SEED: u32 = ${spec.seed >>> 0}u;`,
        `var<workgroup> chunk_sum: array<f32, ${SAMPLE_CHUNKS}>;`,
        ...(topK ? [`var<workgroup> histogram: array<atomic<u32>, 256>;`, 'var<workgroup> select_state: vec3<u32>;'] : []),
      ];
  return {
    inputNames: spec.greedy ? ['logits'] : ['logits', 'counter'],
    params: { v, chunk: Math.ceil(v / SAMPLE_CHUNKS) },
    decls: decls.join('\n'),
    body: indent(spec.greedy ? greedyBody(logits) : drawBody(logits, topK)),
    workgroupSize: SAMPLE_CHUNKS,
    workgroups: rows,
  };
}

export const sampleLowerings: Readonly<Record<string, Lowering>> = { sample: sampleKernel };

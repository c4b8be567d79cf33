// The generated WGSL of one representative node per op, kept as files under __snapshots__/wgsl/
// and reviewed like code. A change to a kernel shows up here as a diff.

import { describe, expect, it } from 'vitest';
import { lowerNode, needsNoKernel } from '../codegen/index.ts';
import { loweringOf, lowerings } from '../codegen/wgsl/index.ts';
import { Graph, type Node, type Operand } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { allOps } from '../ir/registry.ts';
import { LINEAR_CE_OPS } from '../ir/ops/fused_linear_ce.ts';
import type { DType } from '../ir/types.ts';

const loc = (line: number) => ({ file: 'model.ts', line, col: 5 });

/** One graph; `t()` adds an input leaf, `node()` the node under test. */
function build(): { g: Graph; t: (dtype: DType, shape: number[]) => Node } {
  const g = new Graph();
  let count = 0;
  return { g, t: (dtype, shape) => g.add('input', [], { name: `x${count++}`, dtype, shape }) };
}

/** The representative node of each op: typical nanoGPT shapes, small. */
const cases: Record<string, () => Node> = {};
function node(op: string, inputs: (g: ReturnType<typeof build>['t']) => Operand[], attrs: Record<string, unknown> = {}): void {
  cases[op] = () => {
    const { g, t } = build();
    return g.add(op, inputs(t), attrs as never, loc(10));
  };
}

for (const op of ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum']) node(op, (t) => [t('f32', [2, 4, 8]), t('f32', [8])]);
node('mul', (t) => [t('f32', [2, 4, 8]), 0.125]);
for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge']) node(op, (t) => [t('i32', [4, 8]), t('i32', [4, 1])]);
for (const op of ['neg', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'relu', 'erf', 'gelu']) node(op, (t) => [t('f32', [4, 8])]);
node('logical_not', (t) => [t('bool', [8, 8])]);
node('logical_and', (t) => [t('bool', [8, 8]), t('bool', [8, 8])]);
node('where', (t) => [t('bool', [1, 8, 8]), t('f32', [2, 8, 8]), 0]);
node('masked_fill', (t) => [t('f32', [2, 4, 8, 8]), t('bool', [8, 8]), -Infinity]);
node('cast', (t) => [t('bool', [8])], { dtype: 'f32' });
node('full', () => [], { value: 1, dtype: 'f32', shape: [8, 8] });
node('arange', () => [], { start: 0, step: 1, dtype: 'i32', shape: [24] });
node('transpose', (t) => [t('f32', [2, 24, 4, 16])], { dim0: 1, dim1: 2 });
node('permute', (t) => [t('f32', [2, 24, 4, 16])], { dims: [0, 2, 1, 3] });
node('slice', (t) => [t('f32', [2, 24, 192])], { dim: 2, start: 64, end: 128, step: 1 });
node('tril', (t) => [t('f32', [24, 24])], { diagonal: 0 });
node('triu', (t) => [t('bool', [24, 24])], { diagonal: 1 });
node('matmul', (t) => [t('f32', [2, 4, 24, 16]), t('f32', [2, 4, 24, 16])], { transposeA: false, transposeB: true });
// c_proj with its bias and the residual add as its epilogue (passes/matmul-epilogue.ts): the residual read at the output's shape, the bias broadcast along rows.
node('matmul_epilogue', (t) => [t('f32', [2, 24, 64]), t('f32', [128, 64]), t('f32', [2, 24, 128]), t('f32', [128])], { transposeA: false, transposeB: true, expr: 'add($1, add($0, $2))' });
node('embedding', (t) => [t('f32', [65, 64]), t('i32', [2, 24])]);
node('sum', (t) => [t('f32', [2, 24, 64])], { dims: [0, 1], keepdim: false });
node('mean', (t) => [t('f32', [2, 24, 64])], { dims: [-1], keepdim: true });
node('amax', (t) => [t('f32', [2, 24, 64])], { dims: [-1], keepdim: false });
node('softmax', (t) => [t('f32', [2, 4, 24, 24])], { dim: -1 });
node('layer_norm', (t) => [t('f32', [2, 24, 64]), t('f32', [64]), t('f32', [64])], { eps: 1e-5 });
node('fused_reduce', (t) => [t('f32', [2, 24, 64]), t('f32', [2, 24, 64])], { op: 'sum', expr: 'mul($0, $1)', dims: [2], keepdim: false });
node('cross_entropy_rows', (t) => [t('f32', [48, 96]), t('i32', [48])], { ignoreIndex: -100 });
// The fused linear + cross-entropy's own kernels (passes/linear-ce.ts): one chunk's log-sum-exp, dw's running sum, the kept-row count.
node('logsumexp_rows', (t) => [t('f32', [8, 96])]);
node('accumulate', (t) => [t('f32', [96, 32]), t('f32', [96, 32])]);
node('kept_targets', (t) => [t('i32', [48])], { ignoreIndex: -1, classes: 96 });
node('concat', (t) => [t('f32', [2, 24, 32]), t('f32', [2, 24, 32]), t('f32', [2, 24, 32])], { dim: 2 });
node('adamw_update', (t) => [t('f32', [64, 32]), t('f32', [64, 32]), t('f32', [64, 32]), t('f32', [64, 32]), t('f32', [2]), t('f32', [3])], { beta1: 0.9, beta2: 0.99, eps: 1e-8 });
node('found_inf', (t) => [t('f32', [])]);
node('amp_update_scale', (t) => [t('f32', []), t('f32', []), t('f32', [])], { growth_factor: 2, backoff_factor: 0.5, growth_interval: 2000 });
node('layer_norm_backward', (t) => [t('f32', [2, 24, 64]), t('f32', [64]), t('f32', [2, 24, 64])], { eps: 1e-5 });
node('fused_elementwise', (t) => [t('f32', [2, 24, 128]), t('f32', [128])], { expr: 'gelu(add($0, $1))' });
node('slice_backward', (t) => [t('f32', [2, 24, 32])], { shape: [2, 24, 96], dim: 2, start: 32, end: 64, step: 1 });
node('embedding_backward', (t) => [t('f32', [2, 24, 32]), t('i32', [2, 24])], { num: 96 });
node('cross_entropy', (t) => [t('f32', [48, 65]), t('i32', [48])], { ignoreIndex: -1 });
node('dropout', (t) => [t('f32', [2, 24, 64])], { p: 0.1, training: true, seed: 42 });
node('sdpa', (t) => [t('f32', [2, 4, 24, 16]), t('f32', [2, 4, 24, 16]), t('f32', [2, 4, 24, 16])], { isCausal: true, scale: null, dropoutP: 0 });
node('fused_attention', (t) => [t('f32', [2, 4, 24, 64]), t('f32', [2, 4, 24, 64]), t('f32', [2, 4, 24, 64])], { causal: true, scale: 0.125, scaling: 'post' });
node('attention_lse', (t) => [t('f32', [2, 4, 24, 64]), t('f32', [2, 4, 24, 64])], { causal: true, scale: 0.125, scaling: 'post' });
// The dk kernel: the one that stages the most (q, grad_out, lse and delta tiles).
node('fused_attention_backward', (t) => [...[0, 1, 2, 3].map(() => t('f32', [2, 4, 24, 64])), t('f32', [2, 4, 24, 2]), t('f32', [2, 4, 24])], { causal: true, scale: 0.125, scaling: 'post', wrt: 'kv' });
// One decode step (issue 18): GPT-2's heads against a 1024-position cache, and the split pair passes/decode-split.ts makes of it.
const decodeOperands = (dtype: DType) => (t: ReturnType<typeof build>['t']) => [t(dtype, [1, 12, 1, 64]), t(dtype, [1024, 1, 12, 64]), t(dtype, [1024, 1, 12, 64]), t(dtype, [1, 12, 1, 64]), t(dtype, [1, 12, 1, 64]), t('i32', [])];
node('decode_attention', decodeOperands('f32'), { scale: 0.125, scaling: 'post' });
node('decode_attention_partial', decodeOperands('f32'), { scale: 0.125, scaling: 'post', splits: 16 });
node('decode_attention_merge', (t) => [t('f32', [1, 12, 16, 66])], { dtype: 'f32' });
// Sampling the next token in the graph (issue 18): GPT-2's vocabulary, top_k's radix select, the counter-based draw.
node('sample', (t) => [t('f32', [2, 50304]), t('i32', [])], { temperature: 0.8, topK: 200, seed: 1337 });

/**
 * f16 versions of the kernels mixed precision runs (issue 16): f16 storage, f32 values in registers,
 * one rounding at each store, and `enable f16;` added by codegen. Kept under __snapshots__/wgsl/f16/.
 */
const f16Cases: Record<string, () => Node> = {};
function f16Node(name: string, op: string, inputs: (g: ReturnType<typeof build>['t']) => Operand[], attrs: Record<string, unknown> = {}): void {
  f16Cases[name] = () => {
    const { g, t } = build();
    return g.add(op, inputs(t), attrs as never, loc(10));
  };
}
f16Node('cast', 'cast', (t) => [t('f32', [8])], { dtype: 'f16' });
// A linear's epilogue under autocast: the f16 product cast up, the f32 bias added, GELU, cast down for the next matmul.
f16Node('fused_elementwise', 'fused_elementwise', (t) => [t('f16', [2, 24, 128]), t('f32', [128])], { expr: 'f16(gelu(add(f32($0), $1)))' });
f16Node('matmul', 'matmul', (t) => [t('f16', [48, 64]), t('f16', [192, 64])], { transposeA: false, transposeB: true });
// c_fc under autocast with its epilogue: the f16 product rounded once, cast up, the f32 bias added, GELU, the store's cast down.
f16Node('matmul_epilogue', 'matmul_epilogue', (t) => [t('f16', [48, 64]), t('f16', [192, 64]), t('f32', [192])], { transposeA: false, transposeB: true, expr: 'f16(gelu(add(f32($0), $1)))' });
f16Node('embedding', 'embedding', (t) => [t('f16', [65, 64]), t('i32', [2, 24])]);
f16Node('softmax', 'softmax', (t) => [t('f16', [2, 4, 24, 24])], { dim: -1 });
f16Node('layer_norm', 'layer_norm', (t) => [t('f16', [2, 24, 64]), t('f16', [64]), t('f16', [64])], { eps: 1e-5 });
f16Node('sum', 'sum', (t) => [t('f16', [2, 24, 64])], { dims: [0, 1], keepdim: false });
// Fused attention in f16 scales q and k by d^-1/4 each and rounds them to f16 before q k^T (pre_qk).
f16Node('fused_attention', 'fused_attention', (t) => [t('f16', [2, 4, 24, 64]), t('f16', [2, 4, 24, 64]), t('f16', [2, 4, 24, 64])], { causal: true, scale: 0.125, scaling: 'pre_qk' });
f16Node('fused_attention_backward', 'fused_attention_backward', (t) => [...[0, 1, 2, 3].map(() => t('f16', [2, 4, 24, 64])), t('f32', [2, 4, 24, 2]), t('f32', [2, 4, 24])], { causal: true, scale: 0.125, scaling: 'pre_qk', wrt: 'kv' });
f16Node('decode_attention', 'decode_attention', decodeOperands('f16'), { scale: 0.125, scaling: 'pre_qk' });

describe('generated WGSL', () => {
  it('has a representative node for every op with a kernel', () => {
    // The fused linear + cross-entropy ops have no kernel: their lowering refuses, saying chunk_linear_cross_entropy must unroll them.
    expect(Object.keys(lowerings).filter((name) => !cases[name])).toEqual(Object.values(LINEAR_CE_OPS));
  });

  it('has a lowering, keyed by op name, for every op that computes (reshape only aliases its input)', () => {
    expect(allOps().filter((op) => !op.leaf && !Object.hasOwn(lowerings, op.name)).map((op) => op.name)).toEqual(['reshape']);
  });

  it('names the op and where lowerings live when an op has none', () => {
    expect(() => loweringOf('reshape', 'test')).toThrow(/KILN_E011.*reshape has no WGSL lowering.*codegen\/wgsl/);
  });

  for (const [op, make] of Object.entries(cases)) {
    it(`for ${op} matches its snapshot`, async () => {
      const n = make();
      expect(needsNoKernel(n)).toBe(false);
      const kernel = lowerNode(n)!;
      expect(kernel.code.startsWith(`// %${n.id} = ${op}(`)).toBe(true);
      await expect(kernel.code).toMatchFileSnapshot(`./__snapshots__/wgsl/${op}.wgsl`);
    });
  }

  for (const [name, make] of Object.entries(f16Cases)) {
    it(`for ${name} in f16 matches its snapshot`, async () => {
      const kernel = lowerNode(make())!;
      expect(kernel.code.split('\n')[1]).toBe('enable f16;');
      await expect(kernel.code).toMatchFileSnapshot(`./__snapshots__/wgsl/f16/${name}.wgsl`);
    });
  }

  it('gives leaves and aliases no kernel', () => {
    const { g, t } = build();
    const x = t('f32', [2, 3]);
    expect(lowerNode(x)).toBeNull();
    expect(lowerNode(g.add('reshape', [x], { shape: [6] }))).toBeNull();
    expect(lowerNode(g.add('dropout', [x], { p: 0.1, training: false }))).toBeNull();
  });

  it('keeps shapes out of the text, so equal ranks share a pipeline', () => {
    const a = build();
    const b = build();
    const k1 = lowerNode(a.g.add('softmax', [a.t('f32', [3, 7])], { dim: -1 }))!;
    const k2 = lowerNode(b.g.add('softmax', [b.t('f32', [5, 9])], { dim: -1 }))!;
    expect(k1.key).toBe(k2.key);
    expect(k1.code).not.toBe(k2.code); // the header names each node
    expect(k1.params).not.toEqual(k2.params);
  });

  it('derives bindings from the shader: params uniform, read-only inputs, read_write out', () => {
    const { g, t } = build();
    const kernel = lowerNode(g.add('layer_norm', [t('f32', [4, 8]), t('f32', [8])], { eps: 1e-5 }))!;
    expect(kernel.bindings).toEqual([
      { binding: 0, name: 'params', kind: 'uniform' },
      { binding: 1, name: 'x', kind: 'read' },
      { binding: 2, name: 'weight', kind: 'read' },
      { binding: 3, name: 'out', kind: 'read_write' },
    ]);
  });
});

// When kiln lowers an f16 matmul (codegen/wgsl/matmul_tc.ts) or f16 flash attention (flash_tc.ts) to
// tensor cores, and the text it emits, without a GPU: no CPU driver has subgroup matrices, so the kernels themselves are checked on the GPU
// machine (test/tensor-core-cases.ts, run there by test/bench/tensor-core-check.ts).

import { describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { reflectBindings } from '../codegen/reflect.ts';
import { TENSOR_CORE_TILINGS, chooseTensorCoreTiling, tensorCoreInvocations, tensorCoreWorkgroupBytes, tensorCoresUsable } from '../codegen/wgsl/matmul_tc.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { Graph } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import type { DType } from '../ir/types.ts';
import { H100_LIMITS } from './matmul-cases.ts';

/** What Dawn reports on the H100/H200 with allow_unsafe_apis: 32-wide subgroups, f16 x f16 -> f32 at 16x16x16, 16x8x16, 16x8x8. */
const TC_LIMITS: KernelLimits = {
  ...H100_LIMITS,
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  subgroupMatrix: [{ m: 16, n: 16, k: 16 }, { m: 16, n: 8, k: 16 }, { m: 16, n: 8, k: 8 }],
};

function matmul(a: number[], b: number[], transposeA: boolean, transposeB: boolean, dtype: DType = 'f16') {
  const graph = new Graph();
  const x = graph.add('input', [], { name: 'a', dtype, shape: a });
  const w = graph.add('input', [], { name: 'b', dtype, shape: b });
  const node = graph.add('matmul', [x, w], { transposeA, transposeB });
  graph.setOutputs([{ name: 'c', node }]);
  return { graph, node };
}

const code = (g: Graph, limits: KernelLimits = TC_LIMITS) => lowerGraph(g, limits).kernels[0].code;
const onTensorCores = (text: string) => text.includes('subgroupMatrixMultiplyAccumulate');

describe('the tensor-core matmul', () => {
  it('lowers f16 products whose tiles divide them, on a device with 16x16x16 subgroup matrices and 32-wide subgroups', () => {
    const { graph, node } = matmul([4096, 4096], [4096, 4096], false, true);
    const text = code(graph);
    expect(onTensorCores(text)).toBe(true);
    expect(text).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(text).toContain('var<storage, read> a: array<vec4<u32>>;');
    expect(text).toContain('var<storage, read_write> out: array<f16>;');
    // wgsl_reflect cannot parse subgroup-matrix types: reflection sees stand-ins and still finds every binding.
    expect(reflectBindings(text, node).map((b) => `${b.binding} ${b.name} ${b.kind}`)).toEqual(['0 params uniform', '1 a read', '2 b read', '3 out read_write']);
  });

  it('leaves everything else to the SIMT kernel', () => {
    expect(onTensorCores(code(matmul([4096, 4096], [4096, 4096], false, true, 'f32').graph))).toBe(false); // f32
    expect(onTensorCores(code(matmul([256, 768], [65, 768], false, true).graph))).toBe(false); // N = 65: no tile divides it
    expect(onTensorCores(code(matmul([256, 40], [40, 256], false, false).graph))).toBe(false); // K = 40
    expect(onTensorCores(code(matmul([4096, 4096], [4096, 4096], false, true).graph, H100_LIMITS))).toBe(false); // no subgroup matrices
    expect(onTensorCores(code(matmul([4096, 4096], [4096, 4096], false, true).graph, { ...TC_LIMITS, subgroupMinSize: 8 }))).toBe(false); // subgroups of 8 to 32
    expect(onTensorCores(code(matmul([4096, 4096], [4096, 4096], false, true).graph, { ...TC_LIMITS, subgroupMatrix: [{ m: 16, n: 8, k: 8 }] }))).toBe(false);
    expect(tensorCoresUsable(undefined)).toBe(false);
  });

  it('chooses the largest tile whose grid still gives ~132 SMs two workgroups each, else the smallest that divides', () => {
    const dims = (m: number, k: number, n: number, batch: number[] = []) => ({ batch, m, k, n });
    expect(chooseTensorCoreTiling(dims(4096, 4096, 4096), false, true, TC_LIMITS)).toBe(TENSOR_CORE_TILINGS.large);
    expect(chooseTensorCoreTiling(dims(8192, 768, 3072), false, true, TC_LIMITS)).toBe(TENSOR_CORE_TILINGS.large); // GPT-2's MLP at B8
    expect(chooseTensorCoreTiling(dims(1024, 768, 768), false, true, TC_LIMITS)).toBe(TENSOR_CORE_TILINGS.small); // 8x6 large tiles: too few
    expect(chooseTensorCoreTiling(dims(256, 64, 256, [12, 12]), false, true, TC_LIMITS)).toBe(TENSOR_CORE_TILINGS.large); // q k^T: 144 heads x 4 tiles
    expect(chooseTensorCoreTiling(dims(256, 64, 192), false, true, TC_LIMITS)).toBe(TENSOR_CORE_TILINGS.small); // N = 192: only 64 divides
    expect(chooseTensorCoreTiling(dims(4096, 4096, 4096), false, true, { ...TC_LIMITS, maxComputeWorkgroupStorageSize: 16384 })).toBe(TENSOR_CORE_TILINGS.small);
  });

  it('fits every tiling in 48 KiB of workgroup memory and 256 invocations, in every layout', () => {
    for (const t of Object.values(TENSOR_CORE_TILINGS)) {
      for (const ta of [false, true]) for (const tb of [false, true]) expect(tensorCoreWorkgroupBytes(t, ta, tb)).toBeLessThanOrEqual(49152);
      expect(tensorCoreInvocations(t)).toBeLessThanOrEqual(256);
    }
  });

  it('reads each operand along its contiguous dim and loads the tile column-major where the operand is transposed', () => {
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      const text = code(matmul(ta ? [512, 256] : [256, 512], tb ? [384, 512] : [512, 384], ta, tb).graph);
      expect(onTensorCores(text)).toBe(true);
      expect(text).toMatch(new RegExp(`subgroup_matrix_left<f16, 16, 16>>\\(&a_tile, [^;]*, ${ta}, `));
      expect(text).toMatch(new RegExp(`subgroup_matrix_right<f16, 16, 16>>\\(&b_tile, [^;]*, ${tb}, `));
    }
  });

  it("emits GPT-2's MLP product x @ W^T in f16 as this", async () => {
    await expect(code(matmul([8192, 768], [3072, 768], false, true).graph)).toMatchFileSnapshot('./__snapshots__/wgsl/f16/matmul-tensor-cores-gpt2-mlp.wgsl');
  });
});

function attention(l: number, s: number, d: number, extra: { mask?: boolean; dropout?: boolean; dtype?: DType; dv?: number } = {}) {
  const graph = new Graph();
  const dtype = extra.dtype ?? 'f16';
  const q = graph.add('input', [], { name: 'q', dtype, shape: [2, 12, l, d] });
  const k = graph.add('input', [], { name: 'k', dtype, shape: [2, 12, s, d] });
  const v = graph.add('input', [], { name: 'v', dtype, shape: [2, 12, s, extra.dv ?? d] });
  const mask = extra.mask ? [graph.add('input', [], { name: 'm', dtype: 'bool', shape: [l, s] })] : [];
  const attrs = { causal: !extra.mask, scale: 1 / Math.sqrt(d), scaling: dtype === 'f16' ? 'pre_qk' : 'post', ...(extra.dropout ? { dropoutP: 0.1, seed: 3 } : {}) };
  const node = graph.add('fused_attention', [q, k, v, ...mask], attrs as never);
  graph.setOutputs([{ name: 'o', node }]);
  return { graph, node };
}

describe('the tensor-core flash attention forward', () => {
  it('lowers f16 attention without a mask or dropout, head dims 16 to 64, on subgroup matrices', () => {
    const { graph, node } = attention(1024, 1024, 64);
    const text = code(graph);
    expect(onTensorCores(text)).toBe(true);
    expect(text).toContain('subgroupShuffleXor');
    expect(reflectBindings(text, node).map((b) => b.name)).toEqual(['params', 'q', 'k', 'v', 'out']);
    for (const d of [16, 32, 48]) expect(onTensorCores(code(attention(200, 200, d).graph))).toBe(true);
  });

  it('leaves the rest to the SIMT flash kernel', () => {
    expect(onTensorCores(code(attention(256, 256, 64, { dtype: 'f32' }).graph))).toBe(false);
    expect(onTensorCores(code(attention(256, 256, 64, { mask: true }).graph))).toBe(false);
    expect(onTensorCores(code(attention(256, 256, 128).graph))).toBe(false); // tiles past 48 KiB
    expect(onTensorCores(code(attention(256, 256, 40).graph))).toBe(false); // not a multiple of 16
    expect(onTensorCores(code(attention(256, 256, 64, { dv: 32 }).graph))).toBe(false);
    expect(onTensorCores(code(attention(256, 256, 64).graph, H100_LIMITS))).toBe(false);
  });

  it("emits GPT-2's causal attention in f16 as this", async () => {
    await expect(code(attention(1024, 1024, 64).graph)).toMatchFileSnapshot('./__snapshots__/wgsl/f16/fused_attention-tensor-cores.wgsl');
  });
});

// Which matmul tiling kiln chooses for a shape and a device's limits, and the kernel text it emits,
// without a GPU (the kernels against the f64 reference: matmul.gpu.test.ts).

import { describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { MATMUL_TILINGS, chooseMatmulTiling } from '../codegen/wgsl/linalg.ts';
import { H100_LIMITS, matmulGraph, planOf } from './matmul-cases.ts';

describe('the tiled matmul kernel', () => {
  it('is the kernel lowerGraph emits for the device limits it is given', () => {
    const { graph, node } = matmulGraph([4096, 4096], [4096, 4096], false, true);
    expect(planOf(node, undefined, H100_LIMITS)).toMatchObject({ workgroupSize: 256, workgroups: 32 * 32 });
    // WebGPU's default 16 KiB of workgroup memory is under the 16.5 KiB of 128x128 tiles: 128x64 ones.
    expect(planOf(node)).toMatchObject({ workgroupSize: 128, workgroups: 32 * 64 });
    expect(lowerGraph(graph, H100_LIMITS).kernels[0].code).toContain('a 128x128 output tile');
    expect(lowerGraph(graph).kernels[0].code).toContain('a 128x64 output tile');
  });
});

describe('choosing a matmul tiling', () => {
  const { large, largeK8, medium, small: smallTiles } = MATMUL_TILINGS;
  const dims = (m: number, k: number, n: number, batch: number[] = []) => ({ batch, m, k, n });
  const SWIFTSHADER: KernelLimits = { maxComputeWorkgroupStorageSize: 32768, maxComputeInvocationsPerWorkgroup: 256 };

  it('takes 128x128 tiles for long K where their grid fills the GPU as well as 128x64 tiles would', () => {
    expect(chooseMatmulTiling(dims(4096, 4096, 4096), H100_LIMITS)).toBe(large);
    expect(chooseMatmulTiling(dims(2048, 2048, 2048), H100_LIMITS)).toBe(large); // 256 workgroups: one round of 264
    expect(chooseMatmulTiling(dims(4001, 4005, 4003), H100_LIMITS)).toBe(largeK8); // K steps of 16 lost 14% on a ragged K
    expect(chooseMatmulTiling(dims(4096, 4096, 4096), SWIFTSHADER)).toBe(largeK8); // 33 KiB do not fit in 32
  });

  it('takes 128x64 tiles for GPT-2\'s products, grids that would leave 128x128 rounds half empty, and default limits', () => {
    expect(chooseMatmulTiling(dims(1024, 768, 3072, [12]), H100_LIMITS)).toBe(medium); // MLP up: K too short
    expect(chooseMatmulTiling(dims(1024, 3072, 768, [12]), H100_LIMITS)).toBe(medium); // MLP down: 576 workgroups, 2.2 rounds of 264
    expect(chooseMatmulTiling(dims(1024, 1024, 64, [144]), H100_LIMITS)).toBe(medium); // attention's p @ v
    expect(chooseMatmulTiling(dims(1024, 1024, 1024), H100_LIMITS)).toBe(medium);
    expect(chooseMatmulTiling(dims(4096, 4096, 4096))).toBe(medium);
  });

  it('takes 64x64 tiles where a 128-row or 64-column tile would be mostly padding', () => {
    expect(chooseMatmulTiling(dims(1, 4096, 4096), H100_LIMITS)).toBe(smallTiles);
    expect(chooseMatmulTiling(dims(4096, 4096, 16), H100_LIMITS)).toBe(smallTiles);
    expect(chooseMatmulTiling(dims(24, 16, 24, [2, 4]))).toBe(smallTiles);
  });

  it('keeps the generated text of the H100\'s two main kernels reviewed as snapshots', async () => {
    const mlp = matmulGraph([12, 1024, 768], [3072, 768], false, true).graph; // GPT-2's MLP: x @ W^T
    await expect(lowerGraph(mlp, H100_LIMITS).kernels[0].code).toMatchFileSnapshot('./__snapshots__/wgsl/matmul-gpt2-mlp-h100.wgsl');
    const square = matmulGraph([4096, 4096], [4096, 4096], false, false).graph;
    await expect(lowerGraph(square, H100_LIMITS).kernels[0].code).toMatchFileSnapshot('./__snapshots__/wgsl/matmul-4096-h100.wgsl');
  });
});

// The flash attention kernel's tiling, checked without a GPU: it fits WebGPU's default limits for every
// head dim kiln lowers, and shapes stay out of the kernel text. Its numbers: fused-attention.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { lowerNode } from '../codegen/index.ts';
import { flashTiling } from '../codegen/wgsl/fused_attention.ts';
import { Graph } from '../ir/graph.ts';
import '../ir/ops/index.ts';

describe('flash tiling', () => {
  it('fits WebGPU\'s default 16 KiB of workgroup memory for head dims up to 256', () => {
    for (let d = 1; d <= 256; d++) {
      const t = flashTiling(d, d)!;
      expect(t.workgroupBytes).toBeLessThanOrEqual(16384);
      expect(t.workgroupSize).toBeLessThanOrEqual(256);
      expect(t.slices * t.qVec4 * 4).toBeGreaterThanOrEqual(d);
    }
  });

  it('keeps shapes out of the text: one pipeline for every L, S and batch of a head dim', () => {
    const kernel = (b: number, l: number, s: number) => {
      const g = new Graph();
      const t = (n: number) => g.add('input', [], { name: `x${g.nodes.length}`, dtype: 'f32', shape: [b, 4, n, 64] });
      return lowerNode(g.add('fused_attention', [t(l), t(s), t(s)], { causal: true, scale: 0.125, scaling: 'post' }))!;
    };
    expect(kernel(1, 7, 7).key).toBe(kernel(12, 1024, 1024).key);
  });
});

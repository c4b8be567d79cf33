// The matmul graphs and plans shared by matmul.gpu.test.ts (the kernel against the reference) and
// matmul-tiling.test.ts (which tiling kiln chooses, no GPU).

import type { KernelLimits, KernelPlan } from '../codegen/wgsl/plan.ts';
import { type MatmulTiling, matmulKernel } from '../codegen/wgsl/linalg.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';

/** What the H100 reports through Dawn (SwiftShader: 32 KiB, 256 invocations). */
export const H100_LIMITS: KernelLimits = { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024 };

/** A graph of a @ b (output `c`) on input leaves of these shapes. */
export function matmulGraph(aShape: number[], bShape: number[], ta: boolean, tb: boolean): { graph: Graph; node: Node } {
  const graph = new Graph();
  const x = graph.add('input', [], { name: 'a', dtype: 'f32', shape: aShape });
  const w = graph.add('input', [], { name: 'b', dtype: 'f32', shape: bShape });
  const node = graph.add('matmul', [x, w], { transposeA: ta, transposeB: tb });
  graph.setOutputs([{ name: 'c', node }]);
  return { graph, node };
}

/** The plan for a matmul node, in one tiling or else kiln's choice for `limits`. */
export function planOf(node: Node, tiling?: MatmulTiling, limits?: KernelLimits): KernelPlan {
  const [a, b] = node.inputs as Node[];
  return matmulKernel({ inputs: [a.type, b.type], attrs: node.attrs, out: node.type, limits }, tiling);
}

// kiln's own variants for each benchmark case: graphs built from IR nodes and run by the Executor on
// GPU-resident inputs, so the numbers are GPU time per run, not host overhead.

import { lowerGraph } from '../../codegen/index.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import '../../ir/ops/index.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import { Executor, type Feed, type KilnDevice, upload } from '../../runtime/webgpu/index.ts';
import { type Timing, measure } from './measure.ts';

export function randomHost(type: TensorType, seed: number, scale = 1): HostTensor {
  let s = seed >>> 0;
  const data = new Float32Array(numel(type.shape));
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return { type, data };
}

/** Compiles `graph` for the GPU and times one run of all its kernels, inputs already uploaded. */
export async function timeGraph(kdev: KilnDevice, graph: Graph, budgetMs?: number): Promise<{ timing: Timing; kernels: number }> {
  const program = lowerGraph(graph);
  const exec = await Executor.create(kdev, program);
  const feeds = new Map<Node, Feed>();
  let seed = 1;
  for (const n of graph.nodes.filter((x) => x.op === 'input')) feeds.set(n, upload(kdev, n.type.dtype === 'bool' ? causalFill(n.type) : randomHost(n.type, seed++, 0.5)));
  const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), { budgetMs });
  exec.destroy();
  for (const b of feeds.values()) (b as GPUBuffer).destroy();
  return { timing, kernels: program.kernels.length };
}

/** A [.., T, T] bool mask that is true above the diagonal: what masked_fill fills in causal attention. */
function causalFill(type: TensorType): HostTensor {
  const t = type.shape[type.shape.length - 1];
  const data = new Uint8Array(numel(type.shape));
  for (let i = 0; i < data.length; i++) data[i] = i % t > Math.floor(i / t) % t ? 1 : 0;
  return { type, data };
}

const f32 = (shape: number[]): TensorType => ({ dtype: 'f32', shape });

/** Causal attention [B,H,T,D]: fused (one kernel) or nanoGPT's unfused chain. */
export function attentionGraph(b: number, h: number, t: number, d: number, fused: boolean): Graph {
  const g = new Graph();
  const [q, k, v] = ['q', 'k', 'v'].map((name) => g.add('input', [], { name, dtype: 'f32', shape: [b, h, t, d] }));
  const scale = 1 / Math.sqrt(d);
  let y: Node;
  if (fused) {
    y = g.add('fused_attention', [q, k, v], { causal: true, scale, scaling: 'post', kernel: 'flash_causal', rule: 'bench', reason: 'bench' });
  } else {
    const s = g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), scale]);
    const mask = g.add('input', [], { name: 'mask', dtype: 'bool', shape: [t, t] });
    const p = g.add('softmax', [g.add('masked_fill', [s, mask, -Infinity])], { dim: -1 });
    y = g.add('matmul', [p, v], { transposeA: false, transposeB: false });
  }
  g.setOutputs([{ name: 'y', node: y }]);
  return g;
}

export function matmulGraph(m: number, n: number, k: number): Graph {
  const g = new Graph();
  const a = g.add('input', [], { name: 'a', dtype: 'f32', shape: [m, k] });
  const b = g.add('input', [], { name: 'b', dtype: 'f32', shape: [k, n] });
  g.setOutputs([{ name: 'c', node: g.add('matmul', [a, b], { transposeA: false, transposeB: false }) }]);
  return g;
}

export { f32 };

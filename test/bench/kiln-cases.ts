// kiln's own variants for each benchmark case: graphs built from IR nodes and run by the Executor on
// GPU-resident inputs, so the numbers are GPU time per run, not host overhead. Inputs are seeded by
// name, so the peers can be fed the same values and checked against kiln's output.

import { lowerGraph } from '../../codegen/index.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import '../../ir/ops/index.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import { gpuMemory, releaseBuffer, resetPeakGpuMemory } from '../../runtime/webgpu/buffers.ts';
import { Executor, type Feed, type KilnDevice, readback, upload } from '../../runtime/webgpu/index.ts';
import { type MeasureOptions, type Timing, measure } from './measure.ts';

export function randomHost(type: TensorType, seed: number, scale = 1): HostTensor {
  let s = seed >>> 0;
  const data = new Float32Array(numel(type.shape));
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return { type, data };
}

/** A seed from an input's name: the same name gets the same values in every graph and every peer. */
function seedOf(name: string): number {
  let h = 2166136261;
  for (const c of name) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
  return h >>> 0;
}

/** Values for every input of `graph`, by name: floats in [-0.5, 0.5), bool inputs as the causal mask. */
export function inputsOf(graph: Graph): Map<string, HostTensor> {
  const inputs = new Map<string, HostTensor>();
  for (const n of graph.nodes.filter((x) => x.op === 'input')) {
    const name = String(n.attrs.name);
    inputs.set(name, n.type.dtype === 'bool' ? causalFill(n.type) : randomHost(n.type, seedOf(name), 0.5));
  }
  return inputs;
}

function uploadInputs(kdev: KilnDevice, graph: Graph): Map<Node, Feed> {
  const hosts = inputsOf(graph);
  return new Map(graph.nodes.filter((n) => n.op === 'input').map((n) => [n, upload(kdev, hosts.get(String(n.attrs.name))!)]));
}

export interface GraphTiming {
  readonly timing: Timing;
  readonly kernels: number;
  /** Most GPU bytes kiln held at once for this graph: inputs, every intermediate, the output. */
  readonly peakBytes: number;
}

/** Compiles `graph` for the GPU and times one run of all its kernels, inputs already uploaded. */
export async function timeGraph(kdev: KilnDevice, graph: Graph, opts: MeasureOptions = {}): Promise<GraphTiming> {
  return withPeakBytes(async () => {
    const program = lowerGraph(graph, kdev.limits);
    const exec = await Executor.create(kdev, program);
    const feeds = uploadInputs(kdev, graph);
    try {
      const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), opts);
      return { timing, kernels: program.kernels.length };
    } finally {
      exec.destroy();
      for (const b of feeds.values()) releaseBuffer(b as GPUBuffer);
    }
  });
}

/** Runs `fn` and adds the most GPU bytes kiln allocated while it ran (above what was held before). */
export async function withPeakBytes<T extends object>(fn: () => Promise<T>): Promise<T & { peakBytes: number }> {
  resetPeakGpuMemory();
  const before = gpuMemory().currentBytes;
  const result = await fn();
  return { ...result, peakBytes: gpuMemory().peakBytes - before };
}

/** The graph's (first) output for `inputsOf(graph)`, read back: the reference the peers are checked against. */
export async function graphOutput(kdev: KilnDevice, graph: Graph): Promise<Float32Array> {
  const exec = await Executor.create(kdev, lowerGraph(graph, kdev.limits));
  const feeds = uploadInputs(kdev, graph);
  try {
    const out = graph.outputs[0];
    return (await readback(kdev, exec.run(feeds).get(out.name)!, out.node.type)) as Float32Array;
  } finally {
    exec.destroy();
    for (const b of feeds.values()) releaseBuffer(b as GPUBuffer);
  }
}

/** A [.., T, T] bool mask that is true above the diagonal: what masked_fill fills in causal attention. */
function causalFill(type: TensorType): HostTensor {
  const t = type.shape[type.shape.length - 1];
  const data = new Uint8Array(numel(type.shape));
  for (let i = 0; i < data.length; i++) data[i] = i % t > Math.floor(i / t) % t ? 1 : 0;
  return { type, data };
}

const f32 = (shape: number[]): TensorType => ({ dtype: 'f32', shape });

/** Causal attention on q, k, v of [B,H,T,D]: fused (one kernel) or nanoGPT's unfused chain. */
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

/** C = A @ B with A of [m,k] (input "a") and B of [k,n] (input "b"). */
export function matmulGraph(m: number, n: number, k: number): Graph {
  const g = new Graph();
  const a = g.add('input', [], { name: 'a', dtype: 'f32', shape: [m, k] });
  const b = g.add('input', [], { name: 'b', dtype: 'f32', shape: [k, n] });
  g.setOutputs([{ name: 'c', node: g.add('matmul', [a, b], { transposeA: false, transposeB: false }) }]);
  return g;
}

export { f32 };

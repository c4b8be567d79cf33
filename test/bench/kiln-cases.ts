// kiln's own variants for each benchmark case: graphs built from IR nodes and run by the Executor on
// GPU-resident inputs, so the numbers are GPU time per run, not host overhead. Inputs are seeded by
// name, so the peers can be fed the same values and checked against kiln's output. Every float input
// holds f16 values, in f32 graphs too: a case's f16 variant and its f32 one compute on the same numbers
// and differ only in how they compute.

import { lowerGraph } from '../../codegen/index.ts';
import { type DType, DTYPE_INFO } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import { roundF16 } from '../../ir/f16.ts';
import type { GradContext } from '../../ir/autograd.ts';
import { type Attrs, Graph, type Node, type Operand } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import '../../ir/ops/index.ts';
import { attentionBackward } from '../../ir/ops/attention.ts';
import { flashAttentionBackward } from '../../ir/ops/attention_backward.ts';
import { type TensorType, numel } from '../../ir/types.ts';
import { DEFAULT_PIPELINE, runPasses } from '../../passes/index.ts';
import { gpuMemory, releaseBuffer, resetPeakGpuMemory } from '../../runtime/webgpu/buffers.ts';
import { Executor, type Feed, type KilnDevice, readback, upload } from '../../runtime/webgpu/index.ts';
import { type MeasureOptions, type Timing, measure } from './measure.ts';
import { type BenchDtype, NO_SHADER_F16, type VariantResult, oneLine } from './results.ts';

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

/**
 * Values for every input of `graph`, by name: floats in [-0.5, 0.5] rounded to f16 values (whatever the
 * input's dtype), bool inputs as a causal mask: `keep` true on and below the diagonal (fused attention's
 * keep-mask), any other true above it (what masked_fill fills).
 */
export function inputsOf(graph: Graph): Map<string, HostTensor> {
  const inputs = new Map<string, HostTensor>();
  for (const n of graph.nodes.filter((x) => x.op === 'input')) {
    const name = String(n.attrs.name);
    if (n.type.dtype === 'bool') {
      inputs.set(name, causalFill(n.type, name === 'keep'));
      continue;
    }
    const host = randomHost(n.type, seedOf(name), 0.5);
    if (DTYPE_INFO[n.type.dtype].isFloat) for (let i = 0; i < host.data.length; i++) host.data[i] = roundF16(host.data[i]);
    inputs.set(name, host);
  }
  return inputs;
}

/** The least bytes a run of `graph` moves: every input read once and every output written once, at its dtype's element size. */
export function minTraffic(graph: Graph): number {
  const bytes = (t: TensorType) => numel(t.shape) * DTYPE_INFO[t.dtype].bytes;
  return graph.nodesOf('input').reduce((a, n) => a + bytes(n.type), 0) + graph.outputs.reduce((a, o) => a + bytes(o.node.type), 0);
}

/**
 * Runs one variant of a case: an f16 one on a device without shader-f16 is skipped, saying so (kiln would
 * raise KILN_E021 there: no silent f32 fallback), as is one whose kernels raise KILN_E021 anyway; any
 * other error is the variant's `failed` line. `run` returns everything but the name and dtype.
 */
export async function runVariant(
  kdev: KilnDevice,
  name: string,
  dtype: BenchDtype,
  run: () => Promise<Omit<VariantResult, 'name' | 'dtype'>>,
  f32Variant?: string,
): Promise<VariantResult> {
  const head = { name, dtype, ...(dtype === 'f16' && f32Variant !== undefined ? { f32Variant } : {}) };
  if (dtype === 'f16' && !kdev.f16) return { ...head, skipped: NO_SHADER_F16 };
  try {
    return { ...head, ...(await run()) };
  } catch (e) {
    if (e instanceof KilnError && e.code === 'KILN_E021') return { ...head, skipped: NO_SHADER_F16 };
    return { ...head, failed: oneLine(e) };
  }
}

/** The graph after kiln's passes, as compile() would run them (but constant folding: timeGraph feeds inputs only, as a compiled step feeds its causal mask). */
export function optimized(graph: Graph): Graph {
  return runPasses(graph, DEFAULT_PIPELINE.filter((p) => p.name !== 'constant_fold')).graph;
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
  /** The first output of one more run, read back (with `output: true`). */
  readonly output?: Float32Array;
}

/** Compiles `graph` for the GPU and times one run of all its kernels, inputs already uploaded; `output` also reads the first output back. */
export async function timeGraph(kdev: KilnDevice, graph: Graph, opts: MeasureOptions & { output?: boolean } = {}): Promise<GraphTiming> {
  return withPeakBytes(async () => {
    const program = lowerGraph(graph, kdev.limits);
    const exec = await Executor.create(kdev, program);
    const feeds = uploadInputs(kdev, graph);
    try {
      const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), opts);
      if (!opts.output) return { timing, kernels: program.kernels.length };
      const out = graph.outputs[0];
      const output = (await readback(kdev, exec.run(feeds).get(out.name)!, out.node.type)) as Float32Array;
      return { timing, kernels: program.kernels.length, output };
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

/** A [.., T, T] causal bool mask: `keep` true on and below the diagonal, else true above it (what masked_fill fills). */
function causalFill(type: TensorType, keep = false): HostTensor {
  const t = type.shape[type.shape.length - 1];
  const data = new Uint8Array(numel(type.shape));
  for (let i = 0; i < data.length; i++) data[i] = (i % t > Math.floor(i / t) % t) !== keep ? 1 : 0;
  return { type, data };
}

const f32 = (shape: number[]): TensorType => ({ dtype: 'f32', shape });

/**
 * How a benchmark attention computes: `fused` is fused_attention with causal set (the flash_causal kernel),
 * `masked` the same with the causal mask given as a bool keep-mask tensor (flash_masked: what a model's
 * explicit mask gets), `unfused` nanoGPT's chain softmax(masked_fill(q k^T * scale, mask, -inf)) v.
 */
export const ATTENTION_KINDS = ['fused', 'masked', 'unfused'] as const;
export type AttentionKind = (typeof ATTENTION_KINDS)[number];

/** Causal attention on q, k, v of [B,H,T,D] in `dtype`, computed as `kind` says. */
export function attentionGraph(b: number, h: number, t: number, d: number, kind: AttentionKind, dtype: DType = 'f32'): Graph {
  const g = new Graph();
  const [q, k, v] = ['q', 'k', 'v'].map((name) => g.add('input', [], { name, dtype, shape: [b, h, t, d] }));
  const scale = 1 / Math.sqrt(d);
  // f16 attention takes "pre_qk" scaling (ir/ops/attention.ts attentionScalingFor: the overflow guard), f32 "post".
  const scaling = dtype === 'f16' ? 'pre_qk' : 'post';
  let y: Node;
  if (kind === 'fused') {
    y = g.add('fused_attention', [q, k, v], { causal: true, scale, scaling, kernel: 'flash_causal', rule: 'bench', reason: 'bench' });
  } else if (kind === 'masked') {
    const keep = g.add('input', [], { name: 'keep', dtype: 'bool', shape: [t, t] });
    y = g.add('fused_attention', [q, k, v, keep], { causal: false, scale, scaling, kernel: 'flash_masked', rule: 'bench', reason: 'bench' });
  } else {
    const s = g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), scale]);
    const mask = g.add('input', [], { name: 'mask', dtype: 'bool', shape: [t, t] });
    const p = g.add('softmax', [g.add('masked_fill', [s, mask, -Infinity])], { dim: -1 });
    y = g.add('matmul', [p, v], { transposeA: false, transposeB: false });
  }
  g.setOutputs([{ name: 'y', node: y }]);
  return g;
}

/** How the backward of fused attention is computed: the flash kernels (attention_lse, dq, a merged dk/dv) or the composed chain (matmul, softmax, ...). */
export type BackwardRule = 'flash' | 'composed';

/**
 * Causal attention's forward and backward on q, k, v and the output's gradient `dout`, all [B,H,T,D] in
 * `dtype`: fused_attention and the gradients `rule` builds for it (outputs dq, dk, dv), before kiln's passes.
 * The forward is part of it (the backward reads its output), as in a training step.
 */
export function attentionBackwardGraph(b: number, h: number, t: number, d: number, rule: BackwardRule, dtype: DType = 'f32'): Graph {
  const g = new Graph();
  const [q, k, v, dout] = ['q', 'k', 'v', 'dout'].map((name) => g.add('input', [], { name, dtype, shape: [b, h, t, d] }));
  // f16 attention takes "pre_qk" scaling (ir/ops/attention.ts attentionScalingFor: the overflow guard), f32 "post".
  const spec = { causal: true, scale: 1 / Math.sqrt(d), scaling: dtype === 'f16' ? ('pre_qk' as const) : ('post' as const) };
  const node = g.add('fused_attention', [q, k, v], { ...spec, kernel: 'flash_causal', rule: 'bench', reason: 'bench' });
  const ctx: GradContext = { node, grad: dout, add: (op: string, inputs: readonly Operand[], attrs: Attrs = {}) => g.add(op, inputs, attrs), needs: (i) => i < 3 };
  const [dq, dk, dv] = (rule === 'flash' ? flashAttentionBackward(ctx, spec) : attentionBackward(ctx, spec)) as Node[];
  g.setOutputs([{ name: 'dq', node: dq }, { name: 'dk', node: dk }, { name: 'dv', node: dv }]);
  return g;
}

/** C = A @ B in `dtype` with A of [m,k] (input "a") and B of [k,n] (input "b"). */
export function matmulGraph(m: number, n: number, k: number, dtype: DType = 'f32'): Graph {
  return productGraph([m, k], [k, n], false, dtype);
}

/** C = A @ B, or A @ B^T with `transposeB` (nn.Linear's x @ W^T), of inputs "a" and "b" in `dtype`; output "c" (f16 in, f16 out). */
export function productGraph(aShape: number[], bShape: number[], transposeB: boolean, dtype: DType = 'f32'): Graph {
  const g = new Graph();
  const a = g.add('input', [], { name: 'a', dtype, shape: aShape });
  const b = g.add('input', [], { name: 'b', dtype, shape: bShape });
  g.setOutputs([{ name: 'c', node: g.add('matmul', [a, b], { transposeA: false, transposeB }) }]);
  return g;
}

export { f32 };

// Cases of the fused linear + cross-entropy tests (fused-linear-ce.test.ts on the cpu,
// fused-linear-ce.gpu.test.ts on SwiftShader and lavapipe): nanoGPT's lm_head and loss as a small graph,
//   logits = h @ w^T  ([B, T, V]);  loss = cross_entropy(logits.view(-1, V), targets, ignore_index=-1)
// with h a parameter (or, tied, h = x + wte[idx] with w = wte), and the training pipeline around it:
// the fused stage, autograd, then every stage again, as compileTrainStep runs them.

import { differentiate } from '../ir/autograd.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { DEFAULT_PIPELINE, type Decision, runPasses } from '../passes/index.ts';
import { rng } from './helpers.ts';

export interface LmHeadCase {
  B: number;
  T: number;
  C: number;
  V: number;
  /** w is also an embedding table that h reads (nanoGPT's wte tied to lm_head). */
  tied?: boolean;
  /** forward() also returns the logits (inference does). */
  returnLogits?: boolean;
  /** Something else reads the logits (a softmax summed into a second output). */
  otherUse?: boolean;
  /** Every `ignoreEvery`-th target is -1. */
  ignoreEvery?: number;
  /** h and w cast to f16 before the matmul, its logits cast back to f32, as autocast does. */
  f16?: boolean;
}

export const IGNORE = -1;

/** The traced (unfused) graph of one case: outputs `loss` (and `logits` when asked). */
export function lmHeadGraph(c: LmHeadCase): Graph {
  const g = new Graph();
  const N = c.B * c.T;
  const h0 = g.add('param', [], { name: 'h', dtype: 'f32', shape: [c.B, c.T, c.C] });
  const w = g.add('param', [], { name: 'w', dtype: 'f32', shape: [c.V, c.C] });
  const targets = g.add('input', [], { name: 'targets', dtype: 'i32', shape: [N] });
  const h = c.tied ? g.add('add', [h0, g.add('embedding', [w, g.add('input', [], { name: 'idx', dtype: 'i32', shape: [c.B, c.T] })])]) : h0;
  const half = (x: Node) => (c.f16 ? g.add('cast', [x], { dtype: 'f16' }) : x);
  const product = g.add('matmul', [half(h), half(w)], { transposeA: false, transposeB: true });
  const logits = c.f16 ? g.add('cast', [product], { dtype: 'f32' }) : product;
  const loss = g.add('cross_entropy', [g.add('reshape', [logits], { shape: [N, c.V] }), targets], { ignoreIndex: IGNORE });
  const outputs = [{ name: 'loss', node: loss }];
  if (c.returnLogits) outputs.push({ name: 'logits', node: logits });
  if (c.otherUse) outputs.push({ name: 'mass', node: g.add('sum', [g.add('softmax', [logits], { dim: -1 })], { dims: [0, 1, 2], keepdim: false }) });
  g.setOutputs(outputs);
  return g;
}

/** Values for the case's leaves: h ~ U(-1, 1), w ~ U(-0.5, 0.5) (f16-exact when c.f16), targets in [0, V) with some ignored. */
export function lmHeadFeeds(c: LmHeadCase, seed = 1): Map<string, HostTensor> {
  const r = rng(seed);
  const f16Exact = (x: number) => (c.f16 ? Math.round(x * 1024) / 1024 : x); // 10 fraction bits: exact in f16 for |x| < 1
  const floats = (n: number, scale: number) => Float32Array.from({ length: n }, () => f16Exact((r() * 2 - 1) * scale));
  const N = c.B * c.T;
  const targets = Int32Array.from({ length: N }, (_, i) => (c.ignoreEvery && i % c.ignoreEvery === 1 ? IGNORE : Math.floor(r() * c.V)));
  return new Map<string, HostTensor>([
    ['h', { type: { dtype: 'f32', shape: [c.B, c.T, c.C] }, data: floats(N * c.C, 1) }],
    ['w', { type: { dtype: 'f32', shape: [c.V, c.C] }, data: floats(c.V * c.C, 0.5) }],
    ['targets', { type: { dtype: 'i32', shape: [N] }, data: targets }],
    ['idx', { type: { dtype: 'i32', shape: [c.B, c.T] }, data: Int32Array.from({ length: N }, (_, i) => (i * 7) % c.V) }],
  ]);
}

export const feedOf = (feeds: Map<string, HostTensor>) => (node: Node) => feeds.get(String(node.attrs.name))!;

/** The graph with the gradients of its loss for every parameter (grad.h, grad.w). */
export function withGradients(graph: Graph): Graph {
  const loss = graph.outputs.find((o) => o.name === 'loss')!.node;
  return differentiate(graph, loss, graph.nodesOf('param'));
}

/** As compileTrainStep: the fused stage (passes up to fused), autograd, then the whole pipeline again. */
export function trainingPipeline(traced: Graph, autocast?: 'f16', passes: Record<string, boolean> = {}): { fused: Graph; lowered: Graph; decisions: readonly Decision[] } {
  const forwardPasses = DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered');
  // The forward is given the switches of its own passes (as compileTrainStep does); the whole step gets them all.
  const forwardSwitches = Object.fromEntries(Object.entries(passes).filter(([name]) => forwardPasses.some((p) => p.name === name)));
  const forward = runPasses(traced, forwardPasses, { autocast, passes: forwardSwitches });
  const step = runPasses(withGradients(forward.graph), DEFAULT_PIPELINE, { passes: { ...passes, fuse_attention: false } });
  return { fused: forward.graph, lowered: step.graph, decisions: forward.decisions.filter((d) => d.pass === 'fuse_linear_cross_entropy') };
}

/** The outputs every numeric test compares: the loss and both gradients. */
export const COMPARED = ['loss', 'grad.h', 'grad.w'] as const;

// Attention cases shared by the flash-backward tests (attention-backward.test.ts on the CPU,
// attention-backward.gpu.test.ts on the GPU): random inputs, and a graph holding fused_attention
// and the gradients one backward rule builds for it.

import type { GradContext } from '../ir/autograd.ts';
import { type Attrs, Graph, type Node, type Operand } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { type AttentionSpec, attentionBackward, attentionDropout } from '../ir/ops/attention.ts';
import { type Shape, numel } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { rng } from './helpers.ts';

/** One attention case: shapes [B, H, L or S, D], a mask of `maskShape` (broadcast to [B, H, L, S]) or causal. */
export interface BackwardCase {
  b: number;
  h: number;
  l: number;
  s: number;
  d: number;
  dv?: number;
  causal: boolean;
  scaling: 'post' | 'pre_qk';
  mask?: 'bool' | 'additive';
  maskShape?: Shape;
  /** Query rows (of every leading index of the mask) that the mask blanks out entirely. */
  blankRows?: number[];
  /** What an additive mask holds on the blank rows (default -inf; a finite value keeps them scores). */
  blankValue?: number;
  /** fused_attention's fill (a bool mask's dropped keys) and emptyRows: defaults -inf and "zero". */
  fill?: number;
  emptyRows?: 'nan' | 'zero';
  /** Dropout p on the weights (drawn with seed 7 and an rng operand of value 12345). */
  dropout?: number;
  seed: number;
}

export interface CaseData {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
  mask?: HostTensor;
  dout: HostTensor;
  spec: AttentionSpec;
  /** fused_attention's dropout attrs, and its rng operand's value. */
  dropout?: { attrs: Attrs; rng: HostTensor };
}

/** Random inputs in [-2, 2] for a case; bool masks keep about 70%, additive ones are in [-2, 1] with a fifth -inf. */
export function caseData(c: BackwardCase): CaseData {
  const r = rng(c.seed);
  const dv = c.dv ?? c.d;
  const f32 = (shape: Shape) => hostTensor('f32', shape, Float32Array.from({ length: numel(shape) }, () => 4 * r() - 2));
  const data: CaseData = {
    q: f32([c.b, c.h, c.l, c.d]),
    k: f32([c.b, c.h, c.s, c.d]),
    v: f32([c.b, c.h, c.s, dv]),
    dout: f32([c.b, c.h, c.l, dv]),
    spec: { causal: c.causal, scale: 1 / Math.sqrt(c.d), scaling: c.scaling, ...(c.fill !== undefined ? { fill: c.fill } : {}), ...(c.emptyRows ? { emptyRows: c.emptyRows } : {}) },
    ...(c.dropout ? { dropout: { attrs: { dropoutP: c.dropout, seed: 7 }, rng: hostTensor('i32', [], Int32Array.of(12345)) } } : {}),
  };
  if (!c.mask) return data;
  const shape = c.maskShape ?? [c.l, c.s];
  const additive = c.mask === 'additive';
  const values = Array.from({ length: numel(shape) }, () => (additive ? (r() < 0.2 ? -Infinity : -2 + 3 * r()) : Number(r() < 0.7)));
  const cols = shape.at(-1)!;
  // Every row keeps key 0, so only blankRows are fully masked.
  for (let e = 0; e < values.length; e += cols) values[e] = additive ? 0 : 1;
  const rowsPer = (shape.at(-2) ?? 1) * cols;
  for (let base = 0; base < values.length; base += rowsPer) {
    for (const i of c.blankRows ?? []) for (let j = 0; j < cols; j++) values[base + i * cols + j] = additive ? (c.blankValue ?? -Infinity) : 0;
  }
  data.mask = additive ? hostTensor('f32', shape, Float32Array.from(values)) : hostTensor('bool', shape, Uint8Array.from(values));
  return data;
}

/** A graph with q, k, v (, mask) and dout as inputs, fused_attention of them, and the gradients `backward` builds, as outputs dq, dk, dv. */
export function backwardGraph(data: CaseData, backward: (ctx: GradContext, spec: AttentionSpec) => (Node | null)[]): { graph: Graph; feeds: Map<string, HostTensor> } {
  const g = new Graph();
  const feeds = new Map<string, HostTensor>();
  const input = (name: string, t: HostTensor) => {
    feeds.set(name, t);
    return g.add('input', [], { name, dtype: t.type.dtype, shape: [...t.type.shape] });
  };
  const [q, k, v] = [input('q', data.q), input('k', data.k), input('v', data.v)];
  const mask = data.mask ? [input('mask', data.mask)] : [];
  const rng = data.dropout ? [input('rng', data.dropout.rng)] : [];
  const dout = input('dout', data.dout);
  // An rng without a mask before it: the node names its optional operands (ir/operands.ts).
  const node = g.add('fused_attention', [q, k, v, ...mask, ...rng], { ...data.spec, ...data.dropout?.attrs, ...(rng.length && !mask.length ? { optional: 'rng' } : {}) });
  const ctx: GradContext = { node, grad: dout, add: (op: string, inputs: readonly Operand[], attrs: Attrs = {}) => g.add(op, inputs, attrs), needs: (i) => i < 3 };
  const [dq, dk, dv] = backward(ctx, data.spec) as Node[];
  g.setOutputs([{ name: 'dq', node: dq }, { name: 'dk', node: dk }, { name: 'dv', node: dv }]);
  return { graph: g, feeds };
}

/** dq, dk, dv from one of the two backward rules, in f64 on the interpreter. */
export function cpuGradients(data: CaseData, backward: (ctx: GradContext, spec: AttentionSpec) => (Node | null)[]): Map<string, HostTensor> {
  const { graph, feeds } = backwardGraph(data, backward);
  return interpret(graph, (n) => feeds.get(String(n.attrs.name))!, 'f64');
}

/** The composed backward (matmul, softmax, ...), with the forward's dropout redrawn: the yardstick of the flash one. */
export function composedBackward(ctx: GradContext, spec: AttentionSpec): (Node | null)[] {
  return attentionBackward(ctx, spec, attentionDropout(ctx.node));
}

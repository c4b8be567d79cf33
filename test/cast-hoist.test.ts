// Cast hoisting (passes/cast-hoist.ts) without a GPU: on nanoGPT under autocast f16 the casts of q, k
// and v climb the slices, reshapes and transposes into c_attn's bias-add kernel (kernels counted before
// and after, the forward and the training step), with bit-identical results; and the rule's edges on
// small graphs (a move something else reads in f32 stays, graph outputs stay, casts up are not hoisted,
// duplicates merge, a concat of casts up cancels).

import { describe, expect, it } from 'vitest';
import createModel from '../examples/nanogpt/model.ts';
import { lowerGraph } from '../codegen/index.ts';
import { AdamW, Graph, type Node, type Tensor, compile, compileTrainStep, interpret, manualSeed, tensor, verifyGraph } from '../index.ts';
import { isNode } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { MOVE_OPS, hoistCasts } from '../passes/cast-hoist.ts';
import { SMALL_GPT } from './cli-capture.ts';

function tokens(b: number, t: number, vocab: number, salt = 0): Tensor {
  return tensor(Array.from({ length: b * t }, (_, i) => (i * 7919 + salt * 31 + 3) % vocab), [b, t], 'i32');
}

const [idx, targets] = [tokens(2, 8, 96), tokens(2, 8, 96, 1)];

/** nanoGPT's eval forward under autocast f16, with and without the pass: the lowered graphs, one model. */
async function forwards() {
  manualSeed(1337);
  const model = createModel({ ...SMALL_GPT, flash: true }).eval();
  const lower = (on: boolean) => compile(model, { backend: 'cpu', autocast: 'f16', passes: { hoist_casts: on } }).lower(idx, targets);
  const [off, on] = [await lower(false), await lower(true)];
  const params = new Map(model.namedParameters().map(([name, p]) => [name, p.readHost()!]));
  const inputs = new Map<string, HostTensor>([['idx', idx.readHost()!], ['targets', targets.readHost()!]]);
  const feed = (n: Node): HostTensor => (n.op === 'param' ? params : inputs).get(String(n.attrs.name))!;
  return { off: off.passes, on: on.passes, feed };
}

/** What an attention operand is read from: the first node above it that is not a move. */
function sourceOf(x: Node, moves: Node[] = []): { source: Node; moves: Node[] } {
  return MOVE_OPS.has(x.op) && x.op !== 'concat' ? sourceOf(x.inputs[0] as Node, [...moves, x]) : { source: x, moves };
}

describe('cast hoisting on nanoGPT under autocast f16', () => {
  it('folds the casts of q, k and v into c_attn\'s bias-add kernel: 3 kernels fewer a block, the slices and transposes in f16', async () => {
    const { off, on } = await forwards();
    const [before, after] = [lowerGraph(off.graph).kernels.length, lowerGraph(on.graph).kernels.length];
    // 2 blocks x 3 standalone casts (q, k, v); both with each block's 4 matmuls' bias, GELU and residual chains in the matmuls' kernels (passes/matmul-epilogue.ts: 64, 58 without)
    expect([before, after]).toEqual([56, 50]);
    expect(off.graph.nodesOf('cast').length - on.graph.nodesOf('cast').length).toBe(6);
    verifyGraph(on.graph, 'test');
    const attention = on.graph.nodesOf('fused_attention');
    expect(attention).toHaveLength(2);
    for (const a of attention) {
      const producers = new Set<Node>();
      for (const x of a.inputs.slice(0, 3) as Node[]) {
        const { source, moves } = sourceOf(x);
        expect(moves.map((m) => m.op)).toEqual(['transpose', 'reshape', 'slice']);
        expect(moves.every((m) => m.type.dtype === 'f16')).toBe(true); // half the bytes moved
        producers.add(source);
      }
      // One producer, c_attn's matmul with its bias add as its epilogue (passes/matmul-epilogue.ts), writing
      // f16 itself: no standalone cast between it and the attention.
      expect(producers.size).toBe(1);
      const [bias] = producers;
      expect(bias.op).toBe('matmul_epilogue');
      expect(bias.attrs.expr).toBe('f16(add(f32($0), $1))');
    }
    // Without the pass the same attention reads three cast kernels of f32 moves.
    for (const a of off.graph.nodesOf('fused_attention')) expect((a.inputs.slice(0, 3) as Node[]).map((x) => x.op)).toEqual(['cast', 'cast', 'cast']);
  });

  it('changes no bit of the logits or the loss (interpret at f32, which rounds as the device does)', async () => {
    const { off, on, feed } = await forwards();
    const [a, b] = [interpret(off.graph, feed, 'f32'), interpret(on.graph, feed, 'f32')];
    for (const name of ['logits', 'loss']) {
      expect(b.get(name)!.type).toEqual(a.get(name)!.type);
      expect(Array.from(b.get(name)!.data)).toEqual(Array.from(a.get(name)!.data));
    }
  });

  it('runs in the training step too: the backward\'s moves of dq, dk, dv stay f16 and one step updates every parameter bit for bit as without it', async () => {
    const run = async (on: boolean) => {
      manualSeed(1337);
      const model = createModel({ ...SMALL_GPT, flash: true, dropout: 0 });
      const step = compileTrainStep(model, new AdamW(model, { lr: 1e-3 }), { backend: 'cpu', autocast: 'f16', passes: { hoist_casts: on } });
      const { loss } = await step(idx, targets);
      const graph = step.last!.step.graph;
      return { graph, loss: Array.from(loss.readHost()!.data), params: model.namedParameters().map(([name, p]) => [name, Array.from(p.readHost()!.data)]) };
    };
    const [off, on] = [await run(false), await run(true)];
    const [before, after] = [lowerGraph(off.graph).kernels.length, lowerGraph(on.graph).kernels.length];
    // lm_head and the loss in 2 chunks (passes/linear-ce.ts), their products in f16 as autocast's: each forward
    // chunk casts its f16 logits up in a kernel of its own and dw's first part is cast to the f32 running sum,
    // where the f32 chunks (294/282) cast x and w up and dx back down.
    // Matmul epilogues (passes/matmul-epilogue.ts) take 27 kernels from both (292, 280 without): the forward's
    // 8 bias, GELU and residual chains, and the backward's elementwise chains that follow a matmul alone.
    expect([before, after]).toEqual([265, 253]);
    verifyGraph(on.graph, 'test');
    // The attention backward's gradients are moved and concatenated in f16, and c_attn's input-gradient
    // and weight-gradient matmuls read that concat (or its reshape) directly: the cast up for the bias
    // gradient and the cast back down for the matmuls cancel.
    for (const b of on.graph.nodesOf('fused_attention_backward')) expect(b.type.dtype).toBe('f16');
    const fromAttention = (c: Node) => c.inputs.every((x) => isNode(x) && sourceOf(x).source.op === 'fused_attention_backward');
    const concats = on.graph.nodesOf('concat').filter(fromAttention); // dq, dk, dv back into c_attn's output
    expect(concats.map((c) => c.type.dtype)).toEqual(['f16', 'f16']);
    expect(off.graph.nodesOf('concat').filter(fromAttention)).toEqual([]); // without: casts up to f32 before the moves
    // (a matmul_epilogue where a gradient sum follows the product: passes/matmul-epilogue.ts)
    expect(on.graph.nodes.filter((n) => n.op === 'matmul' || n.op === 'matmul_epilogue').filter((m) => m.inputs.slice(0, 2).some((x) => isNode(x) && concats.includes(sourceOf(x).source)))).toHaveLength(4); // 2 blocks x (input, weight) gradients
    expect(on.loss).toEqual(off.loss);
    expect(on.params).toEqual(off.params);
  });
});

describe('cast hoisting, the rule', () => {
  const f32 = (g: Graph, name: string, shape: number[]) => g.add('input', [], { name, dtype: 'f32', shape });
  const ops = (g: Graph) => g.nodes.filter((n) => n.op !== 'input').map((n) => `${n.op}:${n.type.dtype}`);
  const feed = (n: Node): HostTensor => ({ type: n.type, data: Float32Array.from({ length: n.type.shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.fround(1 / (i + 3)) * (n.type.dtype === 'f16' ? 1 : 1.0001)) });
  const same = (a: Graph, b: Graph) => {
    const [x, y] = [interpret(a, feed, 'f32'), interpret(b, feed, 'f32')];
    for (const [name, t] of x) expect(Array.from(y.get(name)!.data), name).toEqual(Array.from(t.data));
  };

  it('climbs a chain of moves to the value, merging the casts of its slices into one', () => {
    const g = new Graph();
    const x = g.add('exp', [f32(g, 'x', [4, 6])]);
    const parts = [0, 3].map((start) => g.add('cast', [g.add('transpose', [g.add('slice', [x], { dim: 1, start, end: start + 3 })], { dim0: 0, dim1: 1 })], { dtype: 'f16' }));
    g.setOutputs(parts.map((node, i) => ({ name: `y${i}`, node })));
    const h = hoistCasts(g);
    expect(ops(h)).toEqual(['exp:f32', 'cast:f16', 'slice:f16', 'transpose:f16', 'slice:f16', 'transpose:f16']);
    verifyGraph(h, 'test');
    same(g, h);
  });

  it('leaves a move that something else reads in f32, a move that is an output, and casts up', () => {
    const g = new Graph();
    const x = f32(g, 'x', [4, 6]);
    const t = g.add('transpose', [x], { dim0: 0, dim1: 1 });
    const r = g.add('reshape', [x], { shape: [24] });
    const h16 = g.add('cast', [f32(g, 'z', [4, 6])], { dtype: 'f16' });
    const up = g.add('cast', [g.add('transpose', [h16], { dim0: 0, dim1: 1 })], { dtype: 'f32' });
    g.setOutputs([
      { name: 'a', node: g.add('cast', [t], { dtype: 'f16' }) },
      { name: 'b', node: g.add('exp', [t]) }, // t is read in f32 too: hoisting would move x twice
      { name: 'c', node: g.add('cast', [r], { dtype: 'f16' }) },
      { name: 'r', node: r }, // an output in f32
      { name: 'up', node: up }, // a cast up would move more bytes
    ]);
    expect(hoistCasts(g)).toBe(g);
  });

  it('merges casts of one value, and cancels a cast down of a cast up (a concat of casts up from f16 concatenates the f16 parts)', () => {
    const g = new Graph();
    const h = (name: string) => g.add('cast', [f32(g, name, [2, 3])], { dtype: 'f16' });
    const [a, b] = [h('a'), h('b')];
    const cat = g.add('concat', [g.add('cast', [a], { dtype: 'f32' }), g.add('cast', [b], { dtype: 'f32' })], { dim: 0 });
    const x = f32(g, 'x', [2, 3]);
    g.setOutputs([
      { name: 'cat', node: g.add('cast', [cat], { dtype: 'f16' }) },
      { name: 'x1', node: g.add('cast', [x], { dtype: 'f16' }) },
      { name: 'x2', node: g.add('cast', [x], { dtype: 'f16' }) },
    ]);
    const out = hoistCasts(g);
    expect(ops(out)).toEqual(['cast:f16', 'cast:f16', 'concat:f16', 'cast:f16']);
    expect(out.outputs.find((o) => o.name === 'x1')!.node).toBe(out.outputs.find((o) => o.name === 'x2')!.node);
    verifyGraph(out, 'test');
    same(g, out);
  });
});

// Elementwise fusion: chains of f32 elementwise ops become one fused_elementwise kernel, with the same
// numbers as the chain, on the CPU reference (on the GPU: elementwise-fusion.gpu.test.ts).

import { describe, expect, it } from 'vitest';
import { Module, compile, tensor, type Tensor } from '../index.ts';
import createModel from '../examples/nanogpt/model.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { interpret } from '../runtime/interpreter.ts';
import { relError, rng } from './helpers.ts';

const small = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11, flash: false };

function randomTensor(shape: number[], seed: number): Tensor {
  const r = rng(seed);
  return tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 4 - 2), shape);
}

describe('elementwise fusion', () => {
  it('fuses nanoGPT’s bias + GELU and bias + residual adds, one kernel each, with the same outputs', async () => {
    const model = createModel(small).eval();
    const idx = tensor(Array.from({ length: 16 }, (_, i) => i % 11), [2, 8], 'i32');
    const fused = compile(model, { backend: 'cpu' });
    const plain = compile(model, { backend: 'cpu', passes: { fuse_elementwise: false } });
    const a = await fused(idx, idx);
    const b = await plain(idx, idx);
    const lowered = fused.stage('lowered')!;
    const exprs = lowered.nodesOf('fused_elementwise').map((n) => n.attrs.expr);
    expect(exprs.filter((e) => e === 'gelu(add($0, $1))')).toHaveLength(small.n_layer);
    expect(exprs.filter((e) => e === 'add($0, add($1, $2))')).toHaveLength(2 * small.n_layer);
    expect(lowered.nodesOf('gelu')).toHaveLength(0);
    // The chain is computed in one expression (f64 inside, one rounding) instead of rounding every step.
    expect(relError(await a.logits.data(), await b.logits.data())).toBeLessThan(1e-6);
  });

  it('leaves a value alone when it has other users, is an output, or is broadcast into its user', () => {
    class M extends Module {
      forward(x: Tensor, y: Tensor) {
        const shared = x.add(1); // two users: stays
        const e = shared.exp().add(shared.mul(2));
        const small = y.mul(3); // [4] broadcast into [3,4]: stays
        return { e, z: e.add(small), out: x.tanh() };
      }
    }
    const g = compile(new M(), { backend: 'cpu' });
    return g.lower(randomTensor([3, 4], 1), randomTensor([4], 2)).then((c) => {
      const lowered = c.passes.stages.get('lowered')!;
      const ops = lowered.nodes.filter((n) => !getOp(n.op).leaf).map((n) => n.op + (n.attrs.expr ? ` ${String(n.attrs.expr)}` : ''));
      expect(ops).toEqual(['add', 'fused_elementwise add(exp($0), mul($0, 2))', 'mul', 'add', 'tanh']);
    });
  });

  it('cuts a chain of more operands than a kernel binds into kernels of at most six, and computes it right', () => {
    const g = new Graph();
    const xs = Array.from({ length: 20 }, (_, i) => g.add('input', [], { name: `x${i}`, dtype: 'f32', shape: [5] }));
    let acc: Node = xs[0];
    for (const x of xs.slice(1)) acc = g.add('add', [acc, x]);
    g.setOutputs([{ name: 'y', node: acc }]);
    const fused = fuseElementwise(g);
    const kernels = fused.nodes.filter((n) => n.op !== 'input');
    expect(kernels.every((n) => n.op === 'fused_elementwise' && n.inputs.length <= 6)).toBe(true);
    expect(kernels).toHaveLength(4); // 6 + 5 + 5 + 5 new operands: 19 adds in 4 kernels
    const feed = (n: Node) => ({ type: n.type, data: Float64Array.from({ length: 5 }, (_, k) => Number(String(n.attrs.name).slice(1)) + k) });
    expect(Array.from(interpret(fused, feed, 'f64').get('y')!.data)).toEqual(Array.from(interpret(g, feed, 'f64').get('y')!.data));
  });

});

// Elementwise fusion: chains of elementwise ops (and the float casts beside them) become one
// fused_elementwise kernel, with the same numbers as the chain on the CPU reference for f32 chains;
// f16 chains keep their intermediates in f32 (on the GPU: elementwise-fusion.gpu.test.ts, f16-ops.gpu.test.ts).

import { describe, expect, it } from 'vitest';
import { Module, compile, tensor, type Tensor } from '../index.ts';
import createModel from '../examples/nanogpt/model.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { formatExpr, parseExpr } from '../ir/ops/fused_elementwise.ts';
import type { DType } from '../ir/types.ts';
import { fuseElementwise, fuseReductions } from '../passes/elementwise.ts';
import { interpret } from '../runtime/interpreter.ts';
import { rng } from './helpers.ts';

const small = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11, flash: false };

function randomTensor(shape: number[], seed: number): Tensor {
  const r = rng(seed);
  return tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => r() * 4 - 2), shape);
}

describe('elementwise fusion', () => {
  it('fuses nanoGPT’s bias + GELU and bias + residual adds, one kernel each, with the same outputs', async () => {
    const model = createModel(small).eval();
    const idx = tensor(Array.from({ length: 16 }, (_, i) => i % 11), [2, 8], 'i32');
    // Matmul epilogues off: they would take these chains into the matmuls' kernels (matmul-epilogue.test.ts).
    const fused = compile(model, { backend: 'cpu', passes: { fuse_matmul_epilogue: false } });
    const plain = compile(model, { backend: 'cpu', passes: { fuse_elementwise: false, fuse_matmul_epilogue: false } });
    const a = await fused(idx, idx);
    const b = await plain(idx, idx);
    const lowered = fused.stage('lowered')!;
    const exprs = lowered.nodesOf('fused_elementwise').map((n) => n.attrs.expr);
    expect(exprs.filter((e) => e === 'gelu(add($0, $1))')).toHaveLength(small.n_layer);
    expect(exprs.filter((e) => e === 'add($0, add($1, $2))')).toHaveLength(2 * small.n_layer);
    expect(lowered.nodesOf('gelu')).toHaveLength(0);
    // At 'f32' precision the chain computes as its kernel does, each value in an f32 register: the
    // same f32 roundings as the unfused ops, so the same logits to the bit.
    expect(Array.from(await a.logits.data())).toEqual(Array.from(await b.logits.data()));
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

describe('elementwise fusion of f16 chains and casts', () => {
  /** A graph of inputs (name -> type) and the nodes `build` adds; its output is `y`. */
  function graphOf(inputs: Record<string, [DType, number[]]>, build: (g: Graph, x: Record<string, Node>) => Node): Graph {
    const g = new Graph();
    const x = Object.fromEntries(Object.entries(inputs).map(([name, [dtype, shape]]) => [name, g.add('input', [], { name, dtype, shape })]));
    g.setOutputs([{ name: 'y', node: build(g, x) }]);
    return g;
  }
  const run = (g: Graph, data: Record<string, number[]>) =>
    Array.from(interpret(g, (n) => ({ type: n.type, data: Float32Array.from(data[String(n.attrs.name)]) }), 'f32').get('y')!.data);
  const kernels = (g: Graph) => g.nodes.filter((n) => !getOp(n.op).leaf).map((n) => `${n.op}${n.attrs.expr ? ` ${String(n.attrs.expr)}` : ''} : ${n.type.dtype}`);

  it('fuses a matmul epilogue across its casts: cast up, bias add, GELU, cast down is one node reading f16 and f32, giving f16', () => {
    const g = graphOf({ x: ['f16', [4, 8]], b: ['f32', [8]] }, (g, { x, b }) =>
      g.add('cast', [g.add('gelu', [g.add('add', [g.add('cast', [x], { dtype: 'f32' }), b])])], { dtype: 'f16' }));
    const fused = fuseElementwise(g);
    expect(kernels(fused)).toEqual(['fused_elementwise f16(gelu(add(f32($0), $1))) : f16']);
    expect(fused.nodesOf('fused_elementwise')[0].inputs.map((n) => (n as Node).attrs.name)).toEqual(['x', 'b']);
    // The expr is the IR's text: it prints and parses back with its casts.
    expect(formatExpr(parseExpr('f16(gelu(add(f32($0), $1)))'))).toBe('f16(gelu(add(f32($0), $1)))');
  });

  it('keeps a fused f16 chain\'s intermediates in f32 and rounds once, where the unfused ops round each step', () => {
    // 1 + 2^-11 is a tie between f16 neighbours 1 and 1 + 2^-10: each unfused add rounds it down to 1 (to even).
    const g = graphOf({ a: ['f16', [1]], b: ['f16', [1]], c: ['f16', [1]] }, (g, { a, b, c }) => g.add('add', [g.add('add', [a, b]), c]));
    const fused = fuseElementwise(g);
    expect(kernels(fused)).toEqual(['fused_elementwise add(add($0, $1), $2) : f16']);
    const data = { a: [1], b: [2 ** -11], c: [2 ** -11] };
    expect(run(g, data)).toEqual([1]);
    expect(run(fused, data)).toEqual([1 + 2 ** -10]);
  });

  it('rounds at an explicit cast to f16 inside a chain, as the unfused cast does', () => {
    const g = graphOf({ x: ['f32', [3]] }, (g, { x }) => g.add('mul', [g.add('cast', [g.add('cast', [x], { dtype: 'f16' })], { dtype: 'f32' }), 3]));
    const fused = fuseElementwise(g);
    expect(kernels(fused)).toEqual(['fused_elementwise mul(f32(f16($0)), 3) : f32']);
    const data = { x: [1 + 2 ** -12, 70000, 2 ** -26] }; // rounds to 1, overflows to inf, underflows to 0
    expect(run(fused, data)).toEqual([3, Infinity, 0]);
    expect(run(fused, data)).toEqual(run(g, data));
  });

  it('leaves casts from bool or i32 alone (relu\'s gradient mask stays its own node), and f16 chains out of fused sums', () => {
    const g = graphOf({ x: ['f32', [4, 8]], g: ['f32', [4, 8]] }, (g, { x, g: grad }) => g.add('mul', [grad, g.add('cast', [g.add('gt', [x, 0])], { dtype: 'f32' })]));
    expect(kernels(fuseElementwise(g))).toEqual(['gt : bool', 'cast : f32', 'mul : f32']);
    const h = graphOf({ a: ['f16', [4, 8]], b: ['f16', [4, 8]] }, (g, { a, b }) => g.add('sum', [g.add('mul', [a, b])], { dims: [1] }));
    expect(kernels(fuseReductions(fuseElementwise(h)))).toEqual(['mul : f16', 'sum : f16']);
  });

  it('refuses an expr that mixes f16 and f32 in one op without a cast', () => {
    const g = graphOf({ a: ['f16', [2]], b: ['f32', [2]] }, (g, { a, b }) => g.add('fused_elementwise', [a, b], { expr: 'add(f32($0), $1)' }));
    expect(g.outputs[0].node.type.dtype).toBe('f32');
    expect(() => graphOf({ a: ['f16', [2]], b: ['f32', [2]] }, (g, { a, b }) => g.add('fused_elementwise', [a, b], { expr: 'add($0, $1)' }))).toThrow(/KILN_E002.*different dtypes/);
  });
});

// Elementwise fusion: chains of f32 elementwise ops become one fused_elementwise kernel, with the same
// numbers as the chain, on the CPU reference and on the GPU.

import { afterAll, describe, expect, it } from 'vitest';
import { Module, compile, tensor, type Tensor } from '../index.ts';
import { lowerGraph } from '../codegen/index.ts';
import createModel from '../examples/nanogpt/model.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { relError, rng } from './helpers.ts';

afterAll(releaseDevice);

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

  it('runs on the GPU as the f64 reference computes it, with broadcasting and a bool mask', async () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [3, 37] });
    const bias = g.add('input', [], { name: 'b', dtype: 'f32', shape: [37] });
    const mask = g.add('input', [], { name: 'm', dtype: 'bool', shape: [3, 37] });
    const y = g.add('fused_elementwise', [x, bias, mask], { expr: 'masked_fill(gelu(add($0, $1)), $2, -inf)' });
    g.setOutputs([{ name: 'y', node: y }]);
    const r = rng(7);
    const host = (n: Node, make: () => number) => ({ type: n.type, data: n.type.dtype === 'bool' ? Uint8Array.from({ length: 111 }, make) : Float32Array.from({ length: n.type.shape.reduce((a, b) => a * b, 1) }, make) });
    const feeds = new Map([
      [x, host(x, () => r() * 6 - 3)],
      [bias, host(bias, () => r() - 0.5)],
      [mask, host(mask, () => (r() < 0.2 ? 1 : 0))],
    ]);
    const kdev = await getDevice();
    const exec = await Executor.create(kdev, lowerGraph(g));
    const got = await readback(kdev, exec.run(feeds).get('y')!, y.type);
    const want = getOp('fused_elementwise').cpu([...feeds.values()], y.attrs, y.type, 'f64');
    for (let i = 0; i < want.length; i++) {
      // -inf is lowered to the finite sentinel -f32max; elsewhere gelu's erf is within 1.5e-7 absolute (A&S 7.1.26).
      if (want[i] === -Infinity) expect(got[i]).toBeLessThan(-3e38);
      else expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(want[i])));
    }
    exec.destroy();
  });

  it('fuses an elementwise chain into the sum or mean that alone reads it, on every reduce path, as the reference computes it', async () => {
    const g = new Graph();
    const a = g.add('input', [], { name: 'a', dtype: 'f32', shape: [300, 40] });
    const b = g.add('input', [], { name: 'b', dtype: 'f32', shape: [300, 40] });
    const prod = g.add('mul', [a, b]);
    const rows = g.add('sum', [prod], { dims: [1], keepdim: false }); // a workgroup per row
    const sq = g.add('mul', [g.add('add', [a, 1]), b]);
    const cols = g.add('mean', [sq], { dims: [0], keepdim: true }); // the column path
    const shared = g.add('mul', [a, a]); // also an output: stays a kernel of its own
    const kept = g.add('sum', [shared], { dims: [0, 1], keepdim: false });
    g.setOutputs([{ name: 'rows', node: rows }, { name: 'cols', node: cols }, { name: 'shared', node: shared }, { name: 'kept', node: kept }]);
    const fused = fuseElementwise(g);
    const { fuseReductions } = await import('../passes/elementwise.ts');
    const both = fuseReductions(fused);
    expect(both.nodesOf('fused_reduce').map((n) => n.attrs.expr)).toEqual(['mul($0, $1)', 'mul(add($0, 1), $1)']);
    expect(both.nodesOf('mul').length).toBe(1);
    const r = rng(3);
    const values = new Map([a, b].map((n) => [n, { type: n.type, data: Float32Array.from({ length: 12000 }, () => r() * 2 - 1) }]));
    const want = interpret(g, (n) => values.get(n)!, 'f64');
    const cpu = interpret(both, (n) => values.get(n)!, 'f64');
    const kdev = await getDevice();
    const exec = await Executor.create(kdev, lowerGraph(both));
    const buffers = exec.run(new Map([...values].map(([n, t]) => [both.nodes.find((m) => m.attrs.name === n.attrs.name)!, t])));
    for (const o of both.outputs) {
      expect(relError(cpu.get(o.name)!.data, want.get(o.name)!.data)).toBeLessThan(1e-12);
      // f32 sums of up to 12000 terms of |x| <= 2: the accumulation tolerance of ops.gpu.test.ts.
      expect(relError(await readback(kdev, buffers.get(o.name)!, o.node.type), want.get(o.name)!.data), o.name).toBeLessThan(2e-5);
    }
    exec.destroy();
  });
});

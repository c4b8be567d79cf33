// Elementwise fusion on the GPU: a fused_elementwise kernel, and elementwise chains fused into the
// reductions that alone read them, as the f64 reference computes them (the passes: elementwise-fusion.test.ts).

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { getOp } from '../ir/registry.ts';
import { fuseElementwise, fuseReductions } from '../passes/elementwise.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { relError, rng } from './helpers.ts';

afterAll(releaseDevice);

describe('elementwise fusion', () => {
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
      // -inf stays a real -inf (the kernel makes it from its bits); elsewhere gelu is within f32 rounding
      // plus its erfc fit's 1.2e-7 relative error (codegen/wgsl/elementwise.ts).
      if (want[i] === -Infinity) expect(got[i]).toBe(-Infinity);
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
    const both = fuseReductions(fuseElementwise(g));
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

// The matmul epilogue pass (passes/matmul-epilogue.ts) and its op's CPU reference: where it fires and
// where it declines, and that the fused node computes bit for bit what the unfused matmul and chain do
// (interpret 'f32', as the device rounds: f16 products rounded once, inner casts to f16 too), and the
// same values as they do in f64. Kernels: matmul-epilogue.gpu.test.ts (f32), matmul-epilogue-f16.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { reflectBindings } from '../codegen/reflect.ts';
import { splitKernel } from '../codegen/split.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { Graph, type Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { getOp } from '../ir/registry.ts';
import type { Decision } from '../passes/manager.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { fuseMatmulEpilogues } from '../passes/matmul-epilogue.ts';
import { interpret } from '../runtime/interpreter.ts';
import { thrown } from './helpers.ts';
import { compileGenerator } from '../compiler/generate.ts';
import { browserModel } from './generate-cases.ts';
import { epilogueCases } from './matmul-epilogue-cases.ts';
import { H100_LIMITS } from './matmul-cases.ts';

const fused = (g: Graph, decisions?: Decision[]) => fuseMatmulEpilogues(fuseElementwise(g), decisions);

describe('matmul epilogues', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    for (const c of epilogueCases(dtype)) {
      it(`${dtype}: ${c.name}: one matmul_epilogue node, bit for bit the unfused graph at f32, equal in f64`, () => {
        const g = fused(c.graph);
        expect(g.nodes.filter((n) => !getOp(n.op).leaf).map((n) => n.op)).toEqual(['matmul_epilogue']);
        const [node] = g.nodesOf('matmul_epilogue');
        expect(node.attrs.expr).toBe(c.expr);
        expect(node.type).toEqual(c.graph.outputs[0].node.type);
        const byName = new Map([...c.feeds].map(([n, t]) => [n.attrs.name, t]));
        const feed = (n: Node) => byName.get(n.attrs.name)!;
        for (const precision of ['f32', 'f64'] as const) {
          const want = interpret(c.graph, feed, precision).get('y')!.data;
          const got = interpret(g, feed, precision).get('y')!.data;
          expect(Array.from(got), precision).toEqual(Array.from(want)); // same operations in the same order: identical
        }
      });
    }
  }

  it('declines a product used twice, a product that is an output, a chain that broadcasts it bigger, and too many operands, saying why', () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [8, 16] });
    const w = g.add('input', [], { name: 'w', dtype: 'f32', shape: [16, 16] });
    const mm = () => g.add('matmul', [x, w], { transposeA: false, transposeB: false });
    const twice = mm();
    const a = g.add('gelu', [twice]);
    const b = g.add('tanh', [twice]);
    const output = mm();
    const relu = g.add('relu', [output]);
    const big = g.add('add', [mm(), g.add('input', [], { name: 'z', dtype: 'f32', shape: [3, 8, 16] })]);
    const many = [...'pqrst'].map((name) => g.add('input', [], { name, dtype: 'f32', shape: [16] }));
    let chain = mm();
    for (const t of many) chain = g.add('add', [chain, t]);
    g.setOutputs([{ name: 'a', node: a }, { name: 'b', node: b }, { name: 'o', node: output }, { name: 'r', node: relu }, { name: 'big', node: big }, { name: 'many', node: chain }]);
    const decisions: Decision[] = [];
    expect(fused(g, decisions).nodesOf('matmul_epilogue')).toEqual([]);
    // The product used twice has no chain to speak of: no decision.
    expect(decisions.map((d) => d.reason)).toEqual(['the product is a graph output', 'its user broadcasts it to a bigger shape', 'the chain reads 5 more tensors, past 4']);
    expect(decisions.every((d) => !d.applied)).toBe(true);
  });

  it('has type rules with coded errors', () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [8, 16] });
    const w = g.add('input', [], { name: 'w', dtype: 'f32', shape: [16, 4] });
    const z = g.add('input', [], { name: 'z', dtype: 'f32', shape: [2, 8, 4] });
    expect(g.add('matmul_epilogue', [x, w], { expr: 'relu($0)' }).type).toEqual({ dtype: 'f32', shape: [8, 4] });
    expect(thrown(() => g.add('matmul_epilogue', [x, w, z], { expr: 'add($0, $1)' })).message).toMatch(/^KILN_E001 matmul_epilogue chain add\(\$0, \$1\) gives f32\[2,8,4\], not the product's shape f32\[8,4\]/);
    expect(thrown(() => g.add('matmul_epilogue', [x, w, 2], { expr: 'add($0, $1)' })).code).toBe('KILN_E002');
    expect(thrown(() => g.add('matmul_epilogue', [x], { expr: 'relu($0)' })).code).toBe('KILN_E002');
  });

  it('splits past the binding limit with its bias whole and its residual in windows, and refuses a partly broadcast operand', () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [4, 64, 16] });
    const w = g.add('input', [], { name: 'w', dtype: 'f32', shape: [40, 16] });
    const bias = g.add('input', [], { name: 'bias', dtype: 'f32', shape: [40] });
    const residual = g.add('input', [], { name: 'residual', dtype: 'f32', shape: [4, 64, 40] });
    const rows = g.add('input', [], { name: 'rows', dtype: 'f32', shape: [64, 40] });
    const y = g.add('matmul_epilogue', [x, w, bias, residual], { transposeA: false, transposeB: true, expr: 'add(add($0, $1), $2)' });
    const z = g.add('matmul_epilogue', [x, w, rows], { transposeA: false, transposeB: true, expr: 'add($0, $1)' });
    g.setOutputs([{ name: 'y', node: y }, { name: 'z', node: z }]);
    const [ky, kz] = lowerGraph(g).kernels;
    const parts = splitKernel(ky, { maxBytes: 12 * 1024, offsetAlignment: 256 })!;
    // x's rows are 64 bytes, y's and the residual's 160: 72 rows a window keep every offset 256-aligned.
    expect(parts.map((p) => p.windows!.map((v) => v && `${v.offset}+${v.size}`))).toEqual(
      [[0, 72], [72, 72], [144, 72], [216, 40]].map(([r0, r]) => [`${r0 * 64}+${r * 64}`, undefined, undefined, `${r0 * 160}+${r * 160}`, `${r0 * 160}+${r * 160}`]),
    );
    expect(thrown(() => splitKernel(kz, { maxBytes: 12 * 1024, offsetAlignment: 256 })).message).toMatch(/^KILN_E009 .*cannot split it: its epilogue operand %\d+ .*broadcasts along some of the rows/);
  });

  it('puts the chain in the tensor-core kernel\'s store (write8), its operands bound after a and b; a plain matmul keeps write_half8', () => {
    // What Dawn reports on the H100/H200 (test/tensor-cores.test.ts): the kernel itself runs on the GPU machine only.
    const limits: KernelLimits = { ...H100_LIMITS, subgroupMinSize: 32, subgroupMaxSize: 32, subgroupMatrix: [{ m: 16, n: 16, k: 16 }] };
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f16', shape: [256, 768] });
    const w = g.add('input', [], { name: 'w', dtype: 'f16', shape: [3072, 768] });
    const bias = g.add('input', [], { name: 'bias', dtype: 'f32', shape: [3072] });
    const residual = g.add('input', [], { name: 'residual', dtype: 'f32', shape: [256, 3072] });
    const fc = g.add('matmul_epilogue', [x, w, bias], { transposeA: false, transposeB: true, expr: 'f16(gelu(add(f32($0), $1)))' });
    const proj = g.add('matmul_epilogue', [x, w, bias, residual], { transposeA: false, transposeB: true, expr: 'add($2, add(f32($0), $1))' });
    const plain = g.add('matmul', [x, w], { transposeA: false, transposeB: true });
    g.setOutputs([{ name: 'fc', node: fc }, { name: 'proj', node: proj }, { name: 'plain', node: plain }]);
    const [kFc, kProj, kPlain] = lowerGraph(g, limits).kernels;
    for (const k of [kFc, kProj, kPlain]) expect(k.code).toContain('subgroupMatrixMultiplyAccumulate');
    // The f16 product rounded once as the matmul stores it, then the chain in f32; the final cast to f16 is the store's.
    expect(kFc.code).toContain('let p = kiln_round_f16_1(v);');
    expect(kFc.code).toContain('return kiln_gelu((f32(p) + e1[e1_base + row * params.e1_stride0 + col * params.e1_stride1]));'); // no batch: strides 0, 1 are the row's and column's
    expect(kFc.code).toContain('out[at + e] = f16(epilogue(row, col + e, c_tile[from + e]));');
    expect(kProj.code).toContain('var<storage, read_write> out: array<f32>;');
    expect(kProj.code).toContain('out[at + e] = epilogue(row, col + e, c_tile[from + e]);');
    expect(reflectBindings(kProj.code, proj).map((b) => `${b.binding} ${b.name} ${b.kind}`)).toEqual(['0 params uniform', '1 a read', '2 b read', '3 e1 read', '4 e2 read', '5 out read_write']);
    expect(kPlain.code).toContain('fn write_half8(at: u32, from: u32)');
    expect(kPlain.code).not.toContain('epilogue');
  });

  it('takes each layer\'s residual adds and GELU into their matmuls in the browser model\'s decode step: 12 kernels fewer a token', async () => {
    // The 4-layer checkpoint has no biases: c_proj's residual add (twice a layer) and c_fc's GELU are the chains.
    // kernelsPerToken(1), measured with and without the pass: 62 -> 50 before issue 18's decode attention work, 46 -> 34 with it.
    const gen = await compileGenerator(browserModel().model, { backend: 'cpu' });
    const step = await gen.decodeStage(1);
    expect(step.nodesOf('matmul_epilogue').map((n) => n.attrs.expr)).toEqual(Array(4).fill(['add($1, $0)', 'gelu($0)', 'add($1, $0)']).flat());
    expect(step.nodes.filter((n) => n.op === 'gelu' || n.op === 'fused_elementwise')).toEqual([]);
    expect(await gen.kernelsPerToken(1)).toBe(lowerGraph(step).kernels.length);
  });
});

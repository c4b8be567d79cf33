// matmul_epilogue kernels in f32 on SwiftShader: the SIMT matmul with each chain of
// matmul-epilogue-cases.ts (bias, GELU, residual, broadcast operands, a literal; the chain with an inner
// f16 rounding needs shader-f16: lavapipe) applied before its store, on tiles ragged in M, N and K and on
// aligned ones, against the CPU reference as the device
// rounds ('f32') and in f64; split into windows past the binding limit bit for bit as unsplit.
//
// Tolerance: each output is a K <= 64 term f32 dot product of values in [-1, 1) (error at most
// K u sum|x w| <= 64 * 2^-24 * 64 < 2.5e-4 absolute, u = 2^-24), then a chain of at most 4 f32 ops and one
// GELU (its erfc fit: 1.2e-7 relative) whose derivatives are at most ~1.2 in magnitude. So |gpu - ref|
// <= 3e-4 * max(1, |ref|) holds, while a wrong operand, stride or column offset moves an
// output by O(0.1).

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import '../ir/ops/index.ts';
import type { Node } from '../ir/graph.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { fuseMatmulEpilogues } from '../passes/matmul-epilogue.ts';
import { interpret } from '../runtime/interpreter.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { epilogueCase, epilogueCases, runOnDevice } from './matmul-epilogue-cases.ts';

afterAll(() => {
  delete process.env.KILN_MAX_STORAGE_BINDING;
  return releaseDevice();
});

describe('matmul epilogue kernels (f32)', () => {
  // Chains that round to f16 inside need shader-f16, which SwiftShader lacks: matmul-epilogue-f16.gpu.test.ts runs them on lavapipe.
  for (const c of epilogueCases('f32').filter((x) => !x.expr.includes('f16('))) {
    it(`${c.name}: one kernel, as the CPU reference computes it`, async () => {
      const g = fuseMatmulEpilogues(fuseElementwise(c.graph));
      expect(lowerGraph(g).kernels.map((k) => k.node.op)).toEqual(['matmul_epilogue']);
      const got = await runOnDevice(g, c.feeds);
      const byName = new Map([...c.feeds].map(([n, t]) => [n.attrs.name, t]));
      const feed = (n: Node) => byName.get(n.attrs.name)!;
      for (const precision of ['f32', 'f64'] as const) {
        const want = interpret(c.graph, feed, precision).get('y')!.data;
        let worst = 0;
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (3e-4 * Math.max(1, Math.abs(want[i]))));
        expect(worst, precision).toBeLessThanOrEqual(1);
      }
    });
  }

  it('splits into windows of rows past the binding limit, bit for bit as unsplit', async () => {
    // x [4, 64, 16] @ W^T [16, 40] + bias [40] + residual [4, 64, 40]: y and the residual are 40 KiB, 160 bytes a row.
    const c = epilogueCase('c_proj', 'f32', [4], [64, 16, 40], (g, p, leaf) => g.add('add', [g.add('add', [p, leaf('bias', 'f32', [40])]), leaf('residual', 'f32', [4, 64, 40])]), 'add(add($0, $1), $2)');
    const g = fuseMatmulEpilogues(fuseElementwise(c.graph));
    expect(g.nodesOf('matmul_epilogue').map((n) => n.attrs.expr)).toEqual([c.expr]);
    const whole = await runOnDevice(g, c.feeds);
    process.env.KILN_MAX_STORAGE_BINDING = String(12 * 1024); // windows of 72 rows (test/split.gpu.test.ts: the same sizes)
    try {
      expect(Array.from(await runOnDevice(g, c.feeds))).toEqual(Array.from(whole));
    } finally {
      delete process.env.KILN_MAX_STORAGE_BINDING;
    }
  });
});

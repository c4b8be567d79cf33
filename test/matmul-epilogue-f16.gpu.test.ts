// matmul_epilogue kernels under autocast's dtypes on lavapipe (shader-f16): f16 products, casts up to an
// f32 chain (bias, GELU, residual, broadcast operands, an inner cast that rounds to f16) and down to the
// f16 or f32 store, on tiles ragged in M, N and K, against the CPU reference as the device rounds ('f32')
// and in f64. lavapipe has no subgroup matrices: this is the SIMT kernel; the tensor-core kernel's epilogue
// text is checked in matmul-epilogue.test.ts and runs on the GPU machine.
//
// Tolerance, per output, from p the exact product there (f64) and y the reference output. The kernel's
// f32 sum is within K^2 u < 2.5e-4 of p (K <= 64 terms of |x w| < 1, u = 2^-24), under one ulp16(|p| + 1)
// >= 2^-10, and is rounded to f16 once,
// as the unfused matmul stores it: on either side of a tie the GPU and the CPU may pick neighbouring
// f16s, one ulp16(|p|) apart; the chain's derivative is at most ~1.2 (GELU's 1.13, tanh's 1, the 0.125
// scale times |plane| < 1); an inner cast to f16 may differ by one ulp16 again; the f16 store by one
// ulp16(|y|). So |gpu - ref| <= 2.2 ulp16(|p| + 1) + ulp16(|y|) + 1e-4 max(1, |y|), 1e-4 for f32 ops and
// GELU's erfc fit. Products here are below ~8 (ulp16 = 2^-8): an indexing or stride error moves an
// output by O(0.1) or more.

import { HAS_LAVAPIPE } from './lavapipe.ts'; // first: points this file's Dawn at lavapipe
import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { f16Bits } from '../ir/f16.ts';
import type { Node } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { getOp } from '../ir/registry.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { fuseMatmulEpilogues } from '../passes/matmul-epilogue.ts';
import { interpret } from '../runtime/interpreter.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { epilogueCases, runOnDevice } from './matmul-epilogue-cases.ts';

afterAll(releaseDevice);

/** The spacing of f16 values at |v| (2^-24 in the subnormals; past 65504, that of the largest binade). */
function ulp16(v: number): number {
  const exponent = Math.min((f16Bits(Math.min(Math.abs(v), 65504)) >>> 10) & 0x1f, 30);
  return 2 ** (Math.max(exponent, 1) - 25);
}

describe.skipIf(!HAS_LAVAPIPE)('matmul epilogue kernels (f16 products) on lavapipe', () => {
  for (const c of epilogueCases('f16')) {
    it(`${c.name}: one kernel, as the CPU reference computes it`, async () => {
      const g = fuseMatmulEpilogues(fuseElementwise(c.graph));
      const [node] = g.nodesOf('matmul_epilogue');
      expect(lowerGraph(g).kernels.map((k) => k.node.op)).toEqual(['matmul_epilogue']);
      const got = await runOnDevice(g, c.feeds);
      const byName = new Map([...c.feeds].map(([n, t]) => [n.attrs.name, t]));
      const feed = (n: Node) => byName.get(n.attrs.name)!;
      const [x, w] = [byName.get('x')!, byName.get('w')!];
      const product = getOp('matmul').cpu([x, w], node.attrs, getOp('matmul').infer([x.type, w.type], node.attrs), 'f64');
      for (const precision of ['f32', 'f64'] as const) {
        const want = interpret(c.graph, feed, precision).get('y')!.data;
        let worst = 0;
        for (let i = 0; i < want.length; i++) {
          const tolerance = 2.2 * ulp16(Math.abs(product[i]) + 1) + ulp16(want[i]) + 1e-4 * Math.max(1, Math.abs(want[i]));
          worst = Math.max(worst, Math.abs(got[i] - want[i]) / tolerance);
        }
        expect(worst, precision).toBeLessThanOrEqual(1);
      }
    });
  }
});

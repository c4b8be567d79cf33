// decode_attention in f16 on lavapipe against the CPU reference in f16 (interpret at 'f32' precision:
// q and k scaled by sqrt(scale) and rounded to f16 where the kernels round them, the output stored in
// f16), the whole kernel and the split form.
//
// Tolerance, per element: the kernels and the reference read the same f16 inputs and round the same
// scaled q and k to f16 (kiln_round_f16 rounds as roundF16 does), so before the output is stored they
// differ only by the f32 arithmetic of the kernels: at most the f32 bound of decode-attention.gpu.test.ts
// (f32Bound, on the f16 values). Each then rounds its value to f16, moving it by at most half an f16
// ulp; two values b apart round to f16 values at most b + one ulp apart. So |gpu - ref| <= f32Bound +
// ulp16(|ref|). The split form's partials are f32 and its merge stores f16: the same bound holds.

import './lavapipe.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { Graph } from '../ir/graph.ts';
import '../ir/ops/index.ts';
import { decodeSplits } from '../ir/ops/decode_attention.ts';
import { splitDecodeAttention } from '../passes/decode-split.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { decodeInputs, decodeOperands, f32Bound } from './decode-attention-cases.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';

afterAll(releaseDevice);

/** One f16 ulp of |x| (normal range; the subnormal spacing below it). */
function ulp16(x: number): number {
  const a = Math.abs(x);
  return a < 2 ** -14 ? 2 ** -24 : 2 ** (Math.floor(Math.log2(a)) - 10);
}

describe.skipIf(!HAS_LAVAPIPE)('decode attention in f16 on lavapipe against the CPU f16 reference', () => {
  let seed = 100;
  for (const d of [16, 64]) {
    for (const keys of [1, 65, 1000]) {
      const s = keys + 3;
      for (const asked of [1, 7, 0]) {
        const splits = decodeSplits(6, s, asked);
        const caseSeed = ++seed;
        it(`D ${d}, 6 (b, h) rows, pos + 1 = ${keys} keys, ${asked === 0 ? 'kiln\'s choice of ' : ''}${splits} split${splits === 1 ? '' : 's'}`, async () => {
          const x = decodeInputs({ batch: [2, 3], d, s, pos: keys - 1, dtype: 'f16', seed: caseSeed }, 2);
          const scale = 1 / Math.sqrt(d);
          const g = new Graph();
          const leaves = decodeOperands(x).map((t, i) => g.add('input', [], { name: `x${i}`, dtype: t.type.dtype, shape: [...t.type.shape] }));
          g.setOutputs([{ name: 'y', node: g.add('decode_attention', leaves, { scale, scaling: 'pre_qk', splits: asked }) }]);
          const graph = splitDecodeAttention(g);
          const feeds = new Map(graph.nodesOf('input').map((n, i) => [n, decodeOperands(x)[i]]));
          const kdev = await getDevice();
          expect(kdev.f16, 'lavapipe offers shader-f16').toBe(true);
          const exec = await Executor.create(kdev, lowerGraph(graph));
          const outs = exec.run(feeds);
          const got = await readback(kdev, outs.get('y')!, graph.outputs[0].node.type);
          exec.destroy();
          const ref = interpret(graph, (n) => feeds.get(n)!, 'f32').get('y')!.data;
          const b = f32Bound(x, scale, splits);
          let worst = 0;
          for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Number.isFinite(got[i]) ? Math.abs(got[i] - ref[i]) / (b + ulp16(ref[i])) : Infinity);
          expect(worst, 'max |gpu - ref| / (f32 bound + one f16 ulp)').toBeLessThanOrEqual(1);
        });
      }
    }
  }
});

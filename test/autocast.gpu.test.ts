// nanoGPT's forward under autocast f16 on lavapipe (shader-f16, bit-exact f16) against the f64 reference
// (the f32 graph interpreted at 'f64' on the same weights) and against the cpu backend's autocast forward.
import './lavapipe.ts';

import { afterAll, describe, expect, it } from 'vitest';
import { autocast, compile, interpret, noGrad, tensor, useBackend } from '../index.ts';
import type { Tensor } from '../index.ts';
import { leafFeeder, stateTensors } from '../compiler/leaves.ts';
import { roundF16 } from '../ir/f16.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';
import { ATTENTION_VARIANTS, fixtureModel, relError } from './helpers.ts';

const U = 2 ** -11; // f16's unit roundoff

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

function tokens(b: number, t: number, vocab: number, salt = 0): Tensor {
  return tensor(Array.from({ length: b * t }, (_, i) => (i * 7919 + salt * 31 + 3) % vocab), [b, t], 'i32');
}

/**
 * Tolerances. The logits' deepest path through the fixture's 2-layer model meets 31 f16 roundings (per
 * block: ln_1's output, c_attn's weight and result, q/k/v, q and k scaled for pre_qk, the attention's
 * result, c_proj's weight and result; ln_2's output, c_fc's weight and result, GELU's output, mlp
 * c_proj's weight and result; then ln_f's output, lm_head's weight and result: 14 x 2 + 3). To first
 * order each adds at most u relative to the values it rounds and the layer norms renormalize, so the
 * errors add: within 31 u (~0.015) of the logits' scale from the f64 result. The loss, computed in f32
 * from the logits, is within the same bound. Unfused, the manual chain rounds 5 times per block instead of
 * 3 (q/k/v, the scores, the scaled scores, the probabilities cast down for att @ v, the result): 35 u.
 * Against the cpu backend's autocast forward (the same graph, rounded at the same places) the only
 * difference is the order of the f32 sums inside the kernels: it moves a sum by a few f32 ulps, which
 * flips an f16 rounding to the neighbouring value (2u apart) only where the sum lies that close to a
 * halfway point. Bounded by 2u per flipped rounding on the path, 62 u in the worst case (70 u unfused).
 * Measured (2 x 24 tokens): vs f64 6.7e-4 fused, 7.8e-4 unfused; vs the cpu 4.7e-4, one f16 ulp of the
 * largest logit; the loss vs f64 5.6e-6 fused, 1.8e-5 unfused.
 */
const CASES = [
  ...ATTENTION_VARIANTS.map(([label, override]) => ({ label, override, fuse: true, roundings: 31 })),
  { label: 'manual attention, not fused', override: { flash: false }, fuse: false, roundings: 35 },
];

describe.skipIf(!HAS_LAVAPIPE)('nanoGPT under autocast f16 on lavapipe', async () => {
  const [idx, targets] = [tokens(2, 24, 96), tokens(2, 24, 96, 1)];
  for (const { label, override, fuse, roundings } of CASES) {
    const model = await fixtureModel(override);
    const [TOL_F64, TOL_CPU] = [roundings * U, 2 * roundings * U];
    it(`${label}: logits and loss within ${roundings} u of the f64 reference and within ${2 * roundings} u of the cpu's autocast forward`, async () => {
      const passes = { fuse_attention: fuse };
      // The f64 reference: the f32 graph (no autocast), interpreted without rounding.
      const plain = await compile(model, { backend: 'cpu' }).lower(idx, targets);
      const leaf = leafFeeder(plain.passes.graph, stateTensors(model), plain.trace.argNames, [idx, targets]);
      const ref = interpret(plain.passes.graph, (n) => leaf(n).readHost()!, 'f64');
      const cpu = await compile(model, { backend: 'cpu', autocast: 'f16', passes })(idx, targets);
      const gpu = await compile(model, { backend: 'webgpu', autocast: 'f16', passes })(idx, targets);
      const logits = await gpu.logits.data();
      expect(gpu.logits.dtype).toBe('f16');
      expect(Array.from(logits).every((x) => roundF16(x) === x)).toBe(true);
      const errF64 = relError(logits, ref.get('logits')!.data);
      const errCpu = relError(logits, await cpu.logits.data());
      const lossF64 = Math.abs((await gpu.loss!.item()) - ref.get('loss')!.data[0]);
      console.log(`${label}: logits vs f64 ${errF64.toExponential(2)} (tol ${TOL_F64.toExponential(2)}), vs cpu autocast ${errCpu.toExponential(2)} (tol ${TOL_CPU.toExponential(2)}), loss vs f64 ${lossF64.toExponential(2)}`);
      expect(errF64).toBeLessThanOrEqual(TOL_F64);
      expect(errCpu).toBeLessThanOrEqual(TOL_CPU);
      expect(lossF64).toBeLessThanOrEqual(TOL_F64);
    });
  }

  it("eager autocast('f16', forward) on lavapipe: the manual chain op by op, within 35 u of the f64 reference", async () => {
    const model = await fixtureModel({ flash: false });
    const plain = await compile(model, { backend: 'cpu' }).lower(idx, targets);
    const leaf = leafFeeder(plain.passes.graph, stateTensors(model), plain.trace.argNames, [idx, targets]);
    const ref = interpret(plain.passes.graph, (n) => leaf(n).readHost()!, 'f64');
    await useBackend('webgpu');
    try {
      const { logits } = noGrad(() => autocast('f16', () => model.forward(idx, targets)));
      expect(logits.dtype).toBe('f16');
      // Eager runs the unfused chain (no attention fusion): the 35 roundings of the unfused case above.
      const err = relError(await logits.data(), ref.get('logits')!.data);
      console.log(`eager: logits vs f64 ${err.toExponential(2)} (tol ${(35 * U).toExponential(2)})`);
      expect(err).toBeLessThanOrEqual(35 * U);
    } finally {
      await useBackend('cpu');
    }
  });
});

// Compiled dropout on the webgpu backend (SwiftShader in CI): the rng leaf is uploaded on every call,
// and the GPU's masks (dropout and sdpa's) are the CPU reference's, bit for bit, for the same manualSeed.

import { afterAll, describe, expect, it } from 'vitest';
import { F, Module, Parameter, type Tensor, compile, manualSeed, tensor } from '../index.ts';
import { hostTensor } from '../ir/host.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { relError, rng } from './helpers.ts';

afterAll(releaseDevice);

const [ROWS, COLS] = [24, 40];

/** dropout(x * w), then sdpa with dropout over it as [2 heads, 12 rows, 40 dims]. */
class Dropper extends Module {
  w = new Parameter(hostTensor('f32', [ROWS, COLS], Float32Array.from({ length: ROWS * COLS }, rng(5))));
  forward(x: Tensor) {
    const h = F.dropout(x.mul(this.w), 0.3, true);
    const q = h.view(2, ROWS / 2, COLS);
    return { h, att: F.scaledDotProductAttention(q, q, q, { dropoutP: 0.2, isCausal: true }) };
  }
}

const ones = () => tensor(new Array(ROWS * COLS).fill(1), [ROWS, COLS]);

async function run(forward: (x: Tensor) => Promise<unknown>): Promise<{ h: Float32Array; att: Float32Array }> {
  const { h, att } = (await forward(ones())) as { h: Tensor; att: Tensor };
  return { h: (await h.data()) as Float32Array, att: (await att.data()) as Float32Array };
}

const zeros = (d: Float32Array) => Array.from(d, (x) => x === 0);

describe('compiled dropout on the webgpu backend', () => {
  it('drops the same elements as the cpu backend for the same manualSeed, call after call', async () => {
    const model = new Dropper();
    const [cpu, gpu] = [compile(model, { backend: 'cpu' }), compile(model, { backend: 'webgpu' })];
    for (const seed of [1, 2]) {
      manualSeed(seed);
      const expected = [await run(cpu), await run(cpu)];
      manualSeed(seed);
      const got = [await run(gpu), await run(gpu)];
      for (let call = 0; call < 2; call++) {
        expect(zeros(got[call].h)).toEqual(zeros(expected[call].h));
        expect(relError(got[call].h, expected[call].h)).toBeLessThan(1e-6);
        // sdpa's dropped probabilities are not visible in its output: a different mask would move it by O(1).
        expect(relError(got[call].att, expected[call].att)).toBeLessThan(1e-5);
      }
      expect(zeros(got[1].h)).not.toEqual(zeros(got[0].h));
      expect(relError(got[1].att, got[0].att)).toBeGreaterThan(1e-2);
    }
  });
});

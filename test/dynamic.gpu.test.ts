// compile(model, { dynamic: true }) on the webgpu backend (SwiftShader in CI): one trace serves every
// length, each length's logits equal to a static webgpu compile at that length. Equal, not close: the
// instantiated graph is the graph a trace at T gives, so the same WGSL runs with the same grids and the
// same sizes, and each thread sums in the same order. Kernels take their sizes as uniforms, so lengths
// share pipelines (runtime/webgpu/pipelines.ts caches them by WGSL text).

import { afterAll, describe, expect, it } from 'vitest';
import { type Tensor, compile, tensor, useBackend } from '../index.ts';
import { lowerGraph } from '../codegen/index.ts';
import { getDevice, releaseDevice } from '../runtime/webgpu/index.ts';
import { fixtureModel, rng } from './helpers.ts';

afterAll(async () => {
  await useBackend('cpu');
  await releaseDevice();
});

function tokens(t: number): Tensor {
  const r = rng(t);
  return tensor(Array.from({ length: 2 * t }, () => Math.floor(r() * 96)), [2, t], 'i32');
}

describe('dynamic length on the webgpu backend', () => {
  for (const [label, override] of [['manual attention', { flash: false }], ['sdpa isCausal', { flash: true }]] as const) {
    it(`${label}: T = 1, 5 and block_size 32 from one trace, each equal to a static webgpu compile`, async () => {
      const model = await fixtureModel(override);
      const dynamic = compile(model, { backend: 'webgpu', dynamic: true });
      const keys = new Map<number, Set<string>>();
      const limits = (await getDevice()).limits;
      for (const t of [5, 1, 32]) {
        const got = await (await dynamic(tokens(t))).logits.data();
        const want = await (await compile(model, { backend: 'webgpu', dynamic: false })(tokens(t))).logits.data();
        expect(got).toEqual(want);
        keys.set(t, new Set(lowerGraph(dynamic.last!.passes.graph, limits).kernels.map((k) => k.key)));
      }
      expect(dynamic.stats).toEqual({ traces: 1, recompiles: 0, cacheHits: 2 });
      // Every length runs the same pipelines (11 here): a new length compiles no shader.
      const all = new Set([...keys.values()].flatMap((s) => [...s]));
      expect(all).toEqual(keys.get(5));
    });
  }
});

// A query row that keeps no key, on the GPU (docs/masked-rows.md): webgpu eager, compiled unfused and
// fused all give NaN there, as the cpu and PyTorch's softmax do, and the cpu's answer elsewhere;
// sdpa gives zeros. The gradients, fused (the flash backward) or not, are the cpu chain's: NaN in
// the same weights. The cpu paths: masked-rows.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { type Tensor, manualSeed, randn, tensor, useBackend } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { B, type Body, D, EMPTY_ROW, GRADIENT_CASES, H, KEEP, Masked, MaskedLayer, T, additiveChain, chain, compiled, expectSameAnswer, layerGradients, qkv, rowOf, sdpa } from './masked-rows-cases.ts';

afterAll(async () => {
  await useBackend('cpu');
  releaseDevice();
});

describe('a query row with no key, on the GPU', () => {
  const args = qkv();
  const cases: [string, Body, (x: number) => boolean, Tensor?][] = [
    ['masked_fill(-inf), constant mask', chain(-Infinity), Number.isNaN],
    ['masked_fill(-inf), mask given at run time', chain(-Infinity), Number.isNaN, tensor(KEEP, [T, T], 'bool')],
    ['additive 0 / -inf mask', additiveChain, Number.isNaN],
    ['masked_fill(-1e30): a finite fill averages v', chain(-1e30), Number.isFinite],
    ['sdpa with a bool mask: zeros', sdpa, (x) => x === 0],
  ];
  for (const [what, body, onEmptyRow, mask] of cases) {
    it(`webgpu eager, compiled and fused give the cpu's answer: ${what}`, async () => {
      const model = new Masked(body);
      const all = mask ? [...args, mask] : args;
      const cpu = await compiled(model, all, 'cpu', false);
      await useBackend('webgpu');
      const eager = Array.from(await model.forward(...(all as [Tensor, Tensor, Tensor])).data());
      await useBackend('cpu');
      expectSameAnswer(eager, cpu.out);
      expectSameAnswer((await compiled(model, all, 'webgpu', false)).out, cpu.out);
      const fused = await compiled(model, all, 'webgpu', true);
      expect(fused.c.passes.graph.nodesOf('fused_attention')).toHaveLength(1);
      expectSameAnswer(fused.out, cpu.out);
      expect(rowOf(cpu.out, EMPTY_ROW).every(onEmptyRow)).toBe(true);
    });
  }
});

describe('the gradient through a query row with no key, on the GPU', () => {
  manualSeed(5);
  const x = tensor(Array.from({ length: B * T * H * D }, () => randn()), [B, T, H * D]);
  for (const [what, body, nan, runtime] of GRADIENT_CASES) {
    it(`is the cpu chain's, fused (the flash backward) as unfused: ${what}`, async () => {
      manualSeed(6);
      const model = new MaskedLayer(body);
      const args = runtime ? [x, tensor(KEEP, [T, T], 'bool')] : [x];
      const cpu = await layerGradients(model, args, 'cpu', false);
      for (const fuse of [false, true]) {
        const gpu = await layerGradients(model, args, 'webgpu', fuse);
        expect(gpu.fused).toBe(fuse ? 1 : 0);
        for (const [name, want] of cpu.grads) {
          expect(want.some(Number.isNaN), name).toBe(nan.includes(name));
          expectSameAnswer(gpu.grads.get(name)!, want, 1e-4);
        }
      }
    });
  }
});

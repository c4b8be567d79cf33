// A query row that keeps no key, on the GPU (docs/masked-rows.md): webgpu eager, compiled unfused and
// fused all give NaN there, as the cpu and PyTorch's softmax do, and the cpu's answer elsewhere;
// sdpa gives zeros. The cpu paths: masked-rows.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { type Tensor, tensor, useBackend } from '../index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { type Body, EMPTY_ROW, KEEP, Masked, T, additiveChain, chain, compiled, expectSameAnswer, qkv, rowOf, sdpa } from './masked-rows-cases.ts';

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

// A query row that keeps no key (docs/masked-rows.md): the manual chain q @ k^T * scale, masked,
// softmax, @ v gives NaN there on every path, as PyTorch's softmax does, fused or not; sdpa gives
// zeros, as PyTorch's sdpa does; a finite masked_fill value keeps the row a softmax over the filled
// scores (a uniform average of v) in the fused kernel too. The GPU paths: masked-rows.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { type Compilation, type Tensor, manualSeed, randn, tensor, useBackend } from '../index.ts';
import type { Node } from '../ir/graph.ts';
import { B, type Body, D, EMPTY_ROW, GRADIENT_CASES, H, KEEP, Masked, MaskedLayer, T, additiveChain, chain, compiled, expectSameAnswer, layerGradients, qkv, rowOf, sdpa } from './masked-rows-cases.ts';

const fusedNode = (c: Compilation): Node => {
  const nodes = c.passes.graph.nodesOf('fused_attention');
  expect(nodes).toHaveLength(1);
  return nodes[0];
};
const decision = (c: Compilation) => c.passes.decisions.find((d) => d.pass === 'fuse_attention')!;

describe('a query row with no key, on the cpu', () => {
  const args = qkv();
  const runtimeKeep = tensor(KEEP, [T, T], 'bool');

  const nanCases: [string, Body, Tensor?][] = [
    ['masked_fill(-inf) with a constant mask', chain(-Infinity)],
    ['masked_fill(-inf) with a mask given at run time', chain(-Infinity), runtimeKeep],
    ['an additive mask of 0 and -inf', additiveChain],
  ];
  for (const [what, body, mask] of nanCases) {
    it(`gives NaN on that row in eager mode, compiled, and fused, and the same answer elsewhere: ${what}`, async () => {
      const model = new Masked(body);
      const all = mask ? [...args, mask] : args;
      await useBackend('cpu');
      const eager = Array.from(await model.forward(...(all as [Tensor, Tensor, Tensor])).data());
      expect(rowOf(eager, EMPTY_ROW).every(Number.isNaN)).toBe(true);
      expect([0, 2, 3].every((r) => rowOf(eager, r).every(Number.isFinite))).toBe(true);
      const unfused = await compiled(model, all, 'cpu', false);
      const fused = await compiled(model, all, 'cpu', true);
      expectSameAnswer(unfused.out, eager, 0);
      expectSameAnswer(fused.out, eager);
      expect(fusedNode(fused.c).attrs).toMatchObject({ causal: false, emptyRows: 'nan' });
      expect(fusedNode(fused.c).meta).toMatchObject({ kernel: 'flash_masked' });
    });
  }

  it('says which row a constant mask leaves with no key, in kiln explain\'s reason', async () => {
    const { c } = await compiled(new Masked(chain(-Infinity)), args, 'cpu', true);
    expect(decision(c)).toMatchObject({ applied: true, kernel: 'flash_masked' });
    expect(decision(c).reason).toMatch(/mask %\d+ leaves query row 1 with no key: NaN there, as the chain's softmax gives/);
  });

  it('keeps a finite fill a score: a row of filled keys averages v, fused as unfused', async () => {
    for (const fill of [-1e30, -3.4028234663852886e38]) {
      const model = new Masked(chain(fill));
      const unfused = await compiled(model, args, 'cpu', false);
      const fused = await compiled(model, args, 'cpu', true);
      expect(fusedNode(fused.c).attrs).toMatchObject({ fill, emptyRows: 'nan' });
      expect(decision(fused.c).reason).not.toMatch(/no key/);
      const v = Array.from(await args[2].data());
      const mean = rowOf(v, 0).map((_, e) => [0, 1, 2, 3].reduce((sum, j) => sum + rowOf(v, j)[e], 0) / T);
      expectSameAnswer(rowOf(unfused.out, EMPTY_ROW), mean);
      expectSameAnswer(fused.out, unfused.out);
    }
  });

  it('leaves sdpa\'s answer zeros on that row, as PyTorch\'s sdpa, eager, compiled and fused', async () => {
    const model = new Masked(sdpa);
    await useBackend('cpu');
    const eager = Array.from(await model.forward(...(args as [Tensor, Tensor, Tensor])).data());
    expect(rowOf(eager, EMPTY_ROW).every((x) => x === 0)).toBe(true);
    const fused = await compiled(model, args, 'cpu', true);
    expectSameAnswer((await compiled(model, args, 'cpu', false)).out, eager, 0);
    expectSameAnswer(fused.out, eager);
    expect(fusedNode(fused.c).attrs.emptyRows).toBeUndefined();
    expect(decision(fused.c).reason).toMatch(/leaves query row 1 with no key: 0 there, as sdpa gives/);
  });
});

describe('the gradient through a query row with no key, on the cpu', () => {
  manualSeed(5);
  const x = tensor(Array.from({ length: B * T * H * D }, () => randn()), [B, T, H * D]);
  for (const [what, body, nan, runtime] of GRADIENT_CASES) {
    it(`is the chain's, fused as unfused: ${what}`, async () => {
      manualSeed(6);
      const model = new MaskedLayer(body);
      const args = runtime ? [x, tensor(KEEP, [T, T], 'bool')] : [x];
      const unfused = await layerGradients(model, args, 'cpu', false);
      const fused = await layerGradients(model, args, 'cpu', true);
      expect([unfused.fused, fused.fused]).toEqual([0, 1]);
      for (const [name, want] of unfused.grads) {
        expect(want.some(Number.isNaN), name).toBe(nan.includes(name));
        expectSameAnswer(fused.grads.get(name)!, want);
      }
    });
  }
});

// Autocast without a GPU: the pass's placement of f16 and f32 on nanoGPT (torch.autocast's lists), its
// casts (one per value and dtype, none to a value's own dtype), compile()'s autocast option and state,
// eager autocast('f16', fn), and the CPU backend's autocast forward against the f32 one.

import { describe, expect, it } from 'vitest';
import createModel from '../examples/nanogpt/model.ts';
import { F, Module, type Node, type Tensor, autocast, autocastGraph, autocastState, compile, manualSeed, nn, tensor, traceModule, verifyGraph } from '../index.ts';
import { roundF16 } from '../ir/f16.ts';
import { isNode } from '../ir/graph.ts';
import { DEFAULT_PIPELINE, autocastPlan } from '../passes/index.ts';
import { SMALL_GPT } from './cli-capture.ts';
import { fixtureModel, relError } from './helpers.ts';

const U = 2 ** -11; // f16's unit roundoff

/** Token ids [b, t] below `vocab`, the same every run. */
function tokens(b: number, t: number, vocab: number, salt = 0): Tensor {
  return tensor(Array.from({ length: b * t }, (_, i) => (i * 7919 + salt * 31 + 3) % vocab), [b, t], 'i32');
}

/** nanoGPT (SMALL_GPT) compiled for the cpu with autocast f16, lowered for [2, 8]: its compilation. */
async function lowered(flash: boolean, passes?: Record<string, boolean>) {
  manualSeed(1337);
  const model = createModel({ ...SMALL_GPT, flash }).eval();
  const forward = compile(model, { backend: 'cpu', autocast: 'f16', passes });
  return forward.lower(tokens(2, 8, 96), tokens(2, 8, 96, 1));
}

const operandTypes = (n: Node) => n.inputs.filter(isNode).map((x) => x.type.dtype);
const autocastCasts = (nodes: readonly Node[]) => nodes.filter((n) => n.op === 'cast' && n.meta?.rule === 'autocast');

describe('the autocast pass on nanoGPT', () => {
  for (const flash of [false, true]) {
    it(`runs every matmul and the fused attention in f16, layer_norm and cross_entropy in f32 (${flash ? 'sdpa' : 'manual attention'})`, async () => {
      const c = await lowered(flash);
      const g = c.passes.stages.get('fused')!;
      const byOp = (op: string) => g.nodes.filter((n) => n.op === op);
      expect(byOp('matmul')).toHaveLength(9); // c_attn, c_proj, c_fc and mlp c_proj in each of 2 blocks, and lm_head
      for (const n of [...byOp('matmul'), ...byOp('fused_attention')]) {
        expect([n.type.dtype, ...operandTypes(n)].every((d) => d === 'f16'), `%${n.id} ${n.op}`).toBe(true);
      }
      expect(byOp('fused_attention')).toHaveLength(2);
      // In f16 the fused kernel scales q and k by d^-1/4 each first: the overflow guard.
      for (const n of byOp('fused_attention')) expect(n.attrs.scaling).toBe('pre_qk');
      for (const n of [...byOp('layer_norm'), ...byOp('cross_entropy')]) {
        expect([n.type.dtype, ...operandTypes(n).filter((d) => d !== 'i32')].every((d) => d === 'f32'), `%${n.id} ${n.op}`).toBe(true);
      }
      // The residual stream stays f32: each bias add takes the matmul's f16 result cast up (promotion).
      for (const n of byOp('add')) expect(n.type.dtype).toBe('f32');
      expect(c.autocast).toBe('f16');
      verifyGraph(g, 'test');
    });
  }

  it('runs softmax in f32 where attention is not fused, and the matmuls around it in f16', async () => {
    const g = (await lowered(false, { fuse_attention: false })).passes.stages.get('fused')!;
    const softmax = g.nodes.filter((n) => n.op === 'softmax');
    expect(softmax).toHaveLength(2);
    for (const s of softmax) {
      expect([s.type.dtype, ...operandTypes(s)]).toEqual(['f32', 'f32']);
      const cast = s.inputs[0] as Node; // the f16 scores (q k^T, scaled, masked) cast up
      expect([cast.op, operandTypes(cast)]).toEqual(['cast', ['f16']]);
    }
    expect(g.nodes.filter((n) => n.op === 'matmul').every((n) => n.type.dtype === 'f16')).toBe(true);
  });

  it('runs before elementwise fusion and after attention fusion, which still fuses the manual chain', async () => {
    const names = DEFAULT_PIPELINE.map((p) => p.name);
    expect(names.indexOf('autocast')).toBeGreaterThan(names.indexOf('fuse_attention'));
    expect(names.indexOf('autocast')).toBeLessThan(names.indexOf('fuse_elementwise'));
    const c = await lowered(false);
    expect(c.passes.stages.get('canonical')!.nodes.some((n) => n.op === 'cast')).toBe(false);
    expect(c.passes.stages.get('fused')!.nodes.filter((n) => n.op === 'fused_attention')).toHaveLength(2);
  });

  it('casts each value at most once per dtype, never to the dtype it has, and shares the tied weight’s cast', async () => {
    const g = (await lowered(false)).passes.stages.get('fused')!;
    const casts = autocastCasts(g.nodes);
    expect(casts.length).toBeGreaterThan(0);
    const keys = casts.map((c) => `%${(c.inputs[0] as Node).id}->${String(c.attrs.dtype)}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const c of casts) expect((c.inputs[0] as Node).type.dtype).not.toBe(c.attrs.dtype);
    // wte's weight is read by the embedding (in f32, uncast) and by lm_head's matmul (one f16 cast).
    const wte = g.nodes.find((n) => n.op === 'param' && n.attrs.name === 'transformer.wte.weight')!;
    const readers = g.nodes.filter((n) => n.inputs.includes(wte)).map((n) => n.op);
    expect(readers.sort()).toEqual(['cast', 'embedding']);
  });

  it('shares one cast of a value read by two matmuls, and of a weight used twice', async () => {
    class TwoProjections extends Module {
      a = new nn.Linear(4, 4);
      b = new nn.Linear(4, 4);
      forward(x: Tensor, y: Tensor) {
        const w = this.a.weight;
        return this.a.forward(x).add(this.b.forward(x)).add(x.matmul(w).mul(y.matmul(w)));
      }
    }
    manualSeed(3);
    const m = new TwoProjections();
    const traced = traceModule(m, [tensor(new Array(8).fill(0.5), [2, 4]), tensor(new Array(8).fill(0.25), [2, 4])]).graph;
    const g = autocastGraph(traced, 'f16');
    verifyGraph(g, 'test');
    const casts = autocastCasts(g.nodes);
    const castsOf = (name: string) => casts.filter((c) => (c.inputs[0] as Node).attrs.name === name);
    expect(castsOf('x')).toHaveLength(1); // x feeds a, b and x @ w: one f16 copy
    expect(castsOf('a.weight')).toHaveLength(1); // a's weight feeds a and both x @ w and y @ w
    expect(g.nodes.filter((n) => n.op === 'matmul').every((n) => operandTypes(n).every((d) => d === 'f16'))).toBe(true);
  });

  it('records a decision per op it placed, naming the casts', async () => {
    const c = await lowered(false);
    const placed = c.passes.decisions.filter((d) => d.pass === 'autocast');
    const count = (rule: string, op: string) => placed.filter((d) => d.rule === rule && d.site.op === op).length;
    expect([count('f16', 'matmul'), count('f16', 'fused_attention'), count('f32', 'cross_entropy'), count('promote', 'add')]).toEqual([9, 2, 1, 8]);
    const lmHead = placed.find((d) => d.site.scope === 'lm_head')!;
    expect(lmHead.reason).toMatch(/^matmul is on autocast's f16 list: cast to f16 %\d+ -> %\d+, %3 -> %\d+$/);
    expect(lmHead.site.loc?.text).toBe('logits = this.lm_head.forward(x);');
  });

  it('leaves the graph alone without autocast', async () => {
    manualSeed(1337);
    const c = await compile(createModel({ ...SMALL_GPT, flash: false }).eval(), { backend: 'cpu' }).lower(tokens(2, 8, 96), tokens(2, 8, 96, 1));
    expect(c.autocast).toBeUndefined();
    expect(c.passes.stages.get('fused')!.nodes.some((n) => n.op === 'cast')).toBe(false);
    expect(c.passes.decisions.some((d) => d.pass === 'autocast')).toBe(false);
  });
});

describe("autocast's lists, op by op", () => {
  const f32 = (...shape: number[]) => ({ dtype: 'f32' as const, shape });
  const f16 = (...shape: number[]) => ({ dtype: 'f16' as const, shape });
  it('casts matmul operands to f16 and layer_norm, softmax, sum and exp operands to f32', () => {
    expect(autocastPlan('matmul', [f32(2, 3), f32(3, 4)], {}, 'f16')).toEqual({ rule: 'f16', targets: ['f16', 'f16'] });
    expect(autocastPlan('layer_norm', [f16(2, 3), f32(3), f32(3)], { eps: 1e-5 }, 'f16')).toEqual({ rule: 'f32', targets: ['f32', 'f32', 'f32'] });
    for (const op of ['softmax', 'sum', 'mean', 'exp', 'log', 'rsqrt']) expect(autocastPlan(op, [f16(2, 3)], {}, 'f16').targets).toEqual(['f32']);
  });

  it("casts attention's q, k and v to f16 and leaves its mask, bool or f32, as it is", () => {
    const bool = { dtype: 'bool' as const, shape: [4, 4] };
    expect(autocastPlan('sdpa', [f32(1, 4, 8), f32(1, 4, 8), f32(1, 4, 8), bool], {}, 'f16').targets).toEqual(['f16', 'f16', 'f16', undefined]);
    expect(autocastPlan('fused_attention', [f32(1, 4, 8), f32(1, 4, 8), f32(1, 4, 8), f32(4, 4)], {}, 'f16').targets).toEqual(['f16', 'f16', 'f16', undefined]);
  });

  it('promotes mixed float operands of an elementwise op to f32, and leaves ops on no list in their dtype', () => {
    expect(autocastPlan('add', [f16(2, 3), f32(3)], {}, 'f16')).toEqual({ rule: 'promote', targets: ['f32', 'f32'] });
    expect(autocastPlan('masked_fill', [f16(2, 3), { dtype: 'bool', shape: [2, 3] }, -Infinity], {}, 'f16')).toEqual({ rule: null, targets: [undefined, undefined, undefined] });
    expect(autocastPlan('gelu', [f16(2, 3)], {}, 'f16').rule).toBeNull();
    expect(autocastPlan('mul', [f16(2, 3), 0.5], {}, 'f16').rule).toBeNull();
    expect(autocastPlan('embedding', [f32(10, 4), { dtype: 'i32', shape: [3] }], {}, 'f16').rule).toBeNull();
  });
});

describe('compile() with autocast on the cpu backend', () => {
  it("gives nanoGPT's forward within the rounding bound of the f32 forward, and not equal to it", async () => {
    const model = await fixtureModel({ flash: false });
    const [idx, targets] = [tokens(2, 24, 96), tokens(2, 24, 96, 1)];
    const exact = await compile(model, { backend: 'cpu' })(idx, targets);
    const mixed = await compile(model, { backend: 'cpu', autocast: 'f16' })(idx, targets);
    const [a, b] = [await exact.logits.data(), await mixed.logits.data()];
    expect(mixed.logits.dtype).toBe('f16'); // lm_head's matmul is on the f16 list, as in torch
    expect(Array.from(b).every((x) => roundF16(x) === x)).toBe(true);
    // The logits' deepest path through the 2-layer model meets 31 f16 roundings (per block: ln_1's output,
    // c_attn's weight and result, q/k/v, q and k scaled for pre_qk, the attention's result, c_proj's weight
    // and result; ln_2's output, c_fc's weight and result, GELU's output, mlp c_proj's weight and result;
    // then ln_f's output, lm_head's weight and result: 14 x 2 + 3). To first order each adds at most u
    // relative to the values it rounds, and the layer norms renormalize, so errors add: <= 31 u ~ 0.015 of
    // the logits' scale. Measured: 6.7e-4 (1.4 u); the loss 1.4e-6. Identical graphs on the cpu would agree exactly, so a
    // difference of more than f32's own noise (1e-5 here) shows the f16 rounding happened.
    const err = relError(b, a);
    expect(err).toBeLessThanOrEqual(31 * U);
    expect(err).toBeGreaterThan(1e-5);
    // The loss is computed in f32 from the logits: its error is the logits' error averaged, < the same bound.
    expect(Math.abs((await mixed.loss!.item()) - (await exact.loss!.item()))).toBeLessThanOrEqual(31 * U);
    expect(mixed.loss!.dtype).toBe('f32');
  });

  it("compiles with autocast for calls inside autocast('f16', fn) and without for calls outside, a guarded compilation each", async () => {
    manualSeed(1337);
    const forward = compile(createModel({ ...SMALL_GPT, flash: true }).eval(), { backend: 'cpu' });
    const idx = tokens(1, 8, 96);
    const plain = await forward(idx);
    expect(forward.last?.autocast).toBeUndefined();
    const mixed = await autocast('f16', () => forward(idx));
    expect(forward.last?.autocast).toBe('f16');
    expect([plain.logits.dtype, mixed.logits.dtype]).toEqual(['f32', 'f16']);
    await forward(idx);
    await autocast('f16', () => forward(idx));
    expect(forward.stats).toEqual({ traces: 2, recompiles: 1, cacheHits: 2 });
  });

  it('autocast: false compiles without autocast even inside a region, and autocast: "bf16" is refused', async () => {
    manualSeed(1337);
    const forward = compile(createModel({ ...SMALL_GPT, flash: true }).eval(), { backend: 'cpu', autocast: false });
    const out = await autocast('f16', () => forward(tokens(1, 8, 96)));
    expect(out.logits.dtype).toBe('f32');
    expect(() => compile(createModel(SMALL_GPT), { autocast: 'bf16' as never })).toThrow(/KILN_E011 compile\(\) option autocast takes 'f16', got "bf16": kiln has no bf16 compute/);
  });
});

describe("eager autocast('f16', fn)", () => {
  const x = () => tensor([0.1, -0.2, 0.3, 0.4, 0.5, -0.6], [2, 3]);
  const w = () => tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [3, 4]);

  it('runs matmul in f16, layer_norm and softmax in f32, and promotes a mixed add to f32', () => {
    autocast('f16', () => {
      const y = x().matmul(w());
      expect(y.dtype).toBe('f16');
      expect(F.softmax(y, -1).dtype).toBe('f32');
      expect(F.layerNorm(y, tensor([1, 1, 1, 1], [4]), null).dtype).toBe('f32');
      expect(y.add(tensor([1, 2, 3, 4], [4])).dtype).toBe('f32');
      expect(y.mul(2).dtype).toBe('f16'); // on no list: its operand's dtype
    });
    expect(x().matmul(w()).dtype).toBe('f32');
  });

  it('gives the f16 product: the operands rounded to f16, the f32 sum rounded once', async () => {
    const y = await autocast('f16', () => x().matmul(w())).data();
    const xs = [0.1, -0.2, 0.3, 0.4, 0.5, -0.6].map(roundF16);
    const expected = [0, 1].flatMap((i) => [0, 1, 2, 3].map((j) => roundF16(Math.fround([0, 1, 2].reduce((s, k) => s + xs[i * 3 + k] * (1 + k * 4 + j), 0)))));
    expect(Array.from(y)).toEqual(expected);
  });

  it('restores the state it found when fn returns, throws, nests, or settles', async () => {
    expect(autocastState()).toBeUndefined();
    expect(() => autocast('f16', () => {
      expect(autocastState()).toBe('f16');
      autocast(false, () => expect(autocastState()).toBeUndefined());
      expect(autocastState()).toBe('f16');
      throw new Error('inside');
    })).toThrow('inside');
    expect(autocastState()).toBeUndefined();
    const pending = autocast('f16', async () => {
      await Promise.resolve();
      return x().matmul(w()).dtype;
    });
    expect(autocastState()).toBe('f16'); // until the promise settles, as noGrad()
    expect(await pending).toBe('f16');
    expect(autocastState()).toBeUndefined();
    await expect(autocast('f16', async () => { throw new Error('later'); })).rejects.toThrow('later');
    expect(autocastState()).toBeUndefined();
    expect(() => autocast('bfloat16' as never, () => 0)).toThrow(/KILN_E011 autocast\(\) takes 'f16', got "bfloat16": kiln has no bf16 compute/);
  });

  it("casts a weight once per region and reuses the copy, as torch's weight cache", () => {
    manualSeed(5);
    const lin = new nn.Linear(3, 4, false);
    autocast('f16', () => {
      const a = lin.forward(x());
      const b = lin.forward(x());
      expect(a.gradFn!.inputs![1]).toBe(b.gradFn!.inputs![1]); // the same f16 copy of the weight
      expect((a.gradFn!.inputs![1] as Tensor).dtype).toBe('f16');
    });
    const c = autocast('f16', () => lin.forward(x()));
    const d = autocast('f16', () => lin.forward(x()));
    expect(c.gradFn!.inputs![1]).not.toBe(d.gradFn!.inputs![1]); // a new region casts again
  });

  it('sends f32 gradients to f32 weights through the casts', async () => {
    manualSeed(5);
    const lin = new nn.Linear(3, 4);
    const loss = autocast('f16', () => lin.forward(x()).sum());
    expect(loss.dtype).toBe('f32');
    loss.backward();
    expect([lin.weight.grad?.dtype, lin.bias!.grad?.dtype]).toEqual(['f32', 'f32']);
    // d sum / d W[j, k] = sum_i x[i, k], with x rounded to f16 on the way in.
    const xs = [0.1, -0.2, 0.3, 0.4, 0.5, -0.6].map(roundF16);
    const colSums = [0, 1, 2].map((k) => roundF16(xs[k] + xs[3 + k]));
    expect(Array.from(await lin.weight.grad!.data())).toEqual([0, 1, 2, 3].flatMap(() => colSums));
  });

  it("runs nanoGPT's forward eagerly within the rounding bound of the compiled autocast forward", async () => {
    const model = await fixtureModel({ flash: false });
    const [idx, targets] = [tokens(2, 24, 96), tokens(2, 24, 96, 1)];
    const compiled = await compile(model, { backend: 'cpu', autocast: 'f16' })(idx, targets);
    const eager = autocast('f16', () => model.forward(idx, targets));
    expect(eager.logits.dtype).toBe('f16');
    // Both are within 31 u of the f32 logits (the test above); eager runs the manual chain in f16 where
    // compiled fuses it (pre_qk), so they differ by rounding, not by policy: within 2 x 31 u of each other. Measured: 8.3e-4.
    expect(relError(await eager.logits.data(), await compiled.logits.data())).toBeLessThanOrEqual(2 * 31 * U);
  });
});


// Attention fusion on the cpu backend: every spelling of causal attention becomes one causal
// fused_attention node; every near miss is refused (or fused with the mask) with a reason in plain
// words; and fused and unfused compilations compute the same numbers.

import { beforeAll, describe, expect, it } from 'vitest';
import { type Compilation, F, Module, Tensor, compile, manualSeed, nn, printGraph, randn, random, tensor } from '../index.ts';
import createModel, { type GPT, type GPTConfig } from '../examples/nanogpt/model.ts';
import { graphStructure } from '../ir/equal.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { Decision } from '../passes/index.ts';
import { relError } from './helpers.ts';

// Fusion reorders float sums, so fused and unfused agree to f32 rounding, not bit for bit.
const TOL = 1e-5;

// ---- helpers ----

/** Random f32 values from kiln's seeded generator, so every run sees the same numbers. */
function randomTensor(shape: readonly number[], std = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tensor(Array.from({ length: n }, () => randn() * std), shape);
}

/** Every tensor forward() returned (a tensor, an array, or an object like nanoGPT's {logits, loss}), in order. */
function tensorsOf(result: unknown): Tensor[] {
  if (result instanceof Tensor) return [result];
  if (result && typeof result === 'object') return Object.values(result).flatMap(tensorsOf);
  return [];
}

type AnyModule = Module & { forward: (...args: never[]) => unknown };

/**
 * Compiles `model` with and without attention fusion, runs both on `args`, and checks they agree.
 * Where a query attends to no key, both give NaN, the unfused softmax's answer (as PyTorch's);
 * `fullyMaskedRows` expects such rows to be there.
 */
async function compileBothWays(model: AnyModule, args: unknown[], opts: { fullyMaskedRows?: boolean } = {}): Promise<Compilation> {
  const fused = compile(model, { backend: 'cpu' });
  const unfused = compile(model, { backend: 'cpu', passes: { fuse_attention: false } });
  const call = (f: typeof fused) => (f as unknown as (...a: unknown[]) => Promise<unknown>)(...args);
  const [a, b] = [tensorsOf(await call(fused)), tensorsOf(await call(unfused))];
  expect(a).toHaveLength(b.length);
  for (let i = 0; i < a.length; i++) {
    const [got, want] = [Array.from(await a[i].data()), Array.from(await b[i].data())];
    const masked = want.flatMap((x, j) => (Number.isNaN(x) ? [j] : []));
    expect(got.flatMap((x, j) => (Number.isNaN(x) ? [j] : []))).toEqual(masked);
    if (opts.fullyMaskedRows) expect(masked.length).toBeGreaterThan(0);
    for (const j of masked) got[j] = want[j] = 0;
    expect(relError(got, want)).toBeLessThan(TOL);
  }
  expect(unfused.last!.passes.graph.nodesOf('fused_attention')).toHaveLength(0);
  return fused.last!;
}

const fusedStage = (c: Compilation): Graph => c.passes.stages.get('fused')!;
const attentionDecisions = (c: Compilation): Decision[] => c.passes.decisions.filter((d) => d.pass === 'fuse_attention');

// ---- 1. nanoGPT's three attention variants ----

const SMALL: Partial<GPTConfig> = { block_size: 16, vocab_size: 11, n_layer: 2, n_head: 2, n_embd: 8, dropout: 0, bias: true };
const NANOGPT_VARIANTS: [string, Partial<GPTConfig>][] = [
  ['manual attention (flash false)', { flash: false }],
  ['sdpa with an explicit mask (sdpa_mask)', { flash: true, sdpa_mask: true }],
  ['sdpa isCausal (flash true)', { flash: true }],
];

/** A small nanoGPT with weights larger than its init, so attention is far from uniform. */
function nanoGPT(override: Partial<GPTConfig>): GPT {
  manualSeed(7);
  const model = createModel({ ...SMALL, ...override }).eval();
  for (const [, p] of model.namedParameters()) p.assign({ type: p.type, data: randomTensor(p.shape, 0.5).host!.data });
  return model;
}

function tokens(b: number, t: number, vocab = 11): Tensor {
  return tensor(Array.from({ length: b * t }, () => Math.floor(random() * vocab)), [b, t], 'i32');
}

describe('nanoGPT: manual attention, sdpa with a mask and sdpa isCausal give one fused IR', () => {
  manualSeed(3);
  const [idx, targets] = [tokens(2, 6), tokens(2, 6)];
  const headScale = 1 / Math.sqrt(SMALL.n_embd! / SMALL.n_head!);
  const compiled = new Map<string, Compilation>();
  beforeAll(async () => {
    for (const [label, override] of NANOGPT_VARIANTS) compiled.set(label, await compile(nanoGPT(override), { backend: 'cpu' }).lower(idx, targets));
  });

  for (const [label, override] of NANOGPT_VARIANTS) {
    it(`${label}: the fused stage has one causal fused_attention per layer and no softmax or sdpa`, () => {
      const c = compiled.get(label)!;
      const attention = fusedStage(c).nodesOf('fused_attention');
      expect(attention).toHaveLength(SMALL.n_layer!);
      for (const n of attention) {
        expect(n.attrs).toMatchObject({ causal: true, scale: headScale, scaling: 'post' });
        expect(n.meta).toMatchObject({ kernel: 'flash_causal' });
      }
      expect(fusedStage(c).nodesOf('softmax')).toHaveLength(0);
      expect(fusedStage(c).nodesOf('sdpa')).toHaveLength(0);
      expect(attentionDecisions(c).map((d) => d.applied)).toEqual(Array(SMALL.n_layer!).fill(true));
    });

    it(`${label}: fused and unfused logits and loss agree within ${TOL} on random weights`, async () => {
      await compileBothWays(nanoGPT(override), [idx, targets]);
    });
  }

  it('the three fused graphs are structurally identical (ids, locations and meta aside)', () => {
    const [manual, masked, causal] = NANOGPT_VARIANTS.map(([label]) => graphStructure(fusedStage(compiled.get(label)!)));
    expect(manual.filter((line) => line.startsWith('fused_attention('))).toHaveLength(SMALL.n_layer!);
    expect(masked).toEqual(manual);
    expect(causal).toEqual(manual);
  });
});

describe('nanoGPT training with dropout 0.2: attention dropout fuses, drawn in the kernel', () => {
  for (const [label, override] of NANOGPT_VARIANTS) {
    it(`${label}: one causal fused_attention per layer with dropoutP and the rng, matching the unfused graph`, async () => {
      const model = nanoGPT({ ...override, dropout: 0.2 });
      model.train();
      manualSeed(3);
      const args = [tokens(2, 6), tokens(2, 6)];
      const run = async (fuse: boolean) => {
        const f = compile(model, { backend: 'cpu', passes: { fuse_attention: fuse } });
        manualSeed(11); // the same rng value for both: the same dropout masks
        return { out: tensorsOf(await (f as unknown as (...a: unknown[]) => Promise<unknown>)(...args)), c: f.last! };
      };
      const [fused, unfused] = [await run(true), await run(false)];
      const attention = fusedStage(fused.c).nodesOf('fused_attention');
      expect(attention).toHaveLength(SMALL.n_layer!);
      for (const n of attention) {
        expect(n.attrs).toMatchObject({ causal: true, dropoutP: 0.2 });
        expect((n.inputs.at(-1) as Node).op).toBe('rng');
      }
      expect(attentionDecisions(fused.c).map((d) => d.applied)).toEqual(Array(SMALL.n_layer!).fill(true));
      for (const d of attentionDecisions(fused.c)) expect(d.reason).toMatch(/dropout p=0\.2 on the weights, drawn in the kernel/);
      for (let i = 0; i < fused.out.length; i++) expect(relError(Array.from(await fused.out[i].data()), Array.from(await unfused.out[i].data()))).toBeLessThan(TOL);
    });
  }
});

// ---- 2. IR snapshots before and after fusion ----

describe('nanoGPT IR text before and after fusion (snapshots under __snapshots__/ir/)', () => {
  for (const [name, flash] of [['manual', false], ['flash', true]] as const) {
    it(`flash ${flash}: the traced and fused stages print as their snapshots`, async () => {
      const model = nanoGPT({ flash });
      const c = await compile(model, { backend: 'cpu' }).lower(tokens(2, 6));
      await expect(printGraph(c.passes.stages.get('traced')!)).toMatchFileSnapshot(`./__snapshots__/ir/nanogpt_${name}.traced.ir`);
      await expect(printGraph(fusedStage(c))).toMatchFileSnapshot(`./__snapshots__/ir/nanogpt_${name}.fused.ir`);
    });
  }
});

// ---- small attention modules ----

const [B, H, T, D] = [2, 2, 6, 8];
const BLOCK = 8; // buffers are [BLOCK, BLOCK], sliced to [:T, :T] as nanoGPT slices its `bias`
const SCALE = 1 / Math.sqrt(D);

/** A [n, n] f32 buffer: 1 on and below the diagonal (nanoGPT's `bias`), with `edit` applied. */
function lowerTriangle(n: number, edit: (data: Float32Array) => void = () => {}): Tensor {
  const data = new Float32Array(n * n).map((_, idx) => (idx % n <= Math.floor(idx / n) ? 1 : 0));
  edit(data);
  return tensor(data, [n, n]);
}

/** An additive [n, n] mask: 0 where attending, -inf above the diagonal. */
function additiveCausal(n: number): Tensor {
  return tensor(Array.from({ length: n * n }, (_, idx) => (idx % n <= Math.floor(idx / n) ? 0 : -Infinity)), [n, n]);
}

type Body = (m: Attention, q: Tensor, k: Tensor, v: Tensor, extra?: Tensor) => Tensor | Tensor[];

/** A module whose forward is `body`, with a causal `bias` buffer, an additive twin and an eval-mode dropout. */
class Attention extends Module {
  declare bias: Tensor;
  declare additive: Tensor;
  attn_dropout = new nn.Dropout(0.1);

  constructor(
    private readonly body: Body,
    bias: Tensor = lowerTriangle(BLOCK),
  ) {
    super();
    this.registerBuffer('bias', bias);
    this.registerBuffer('additive', additiveCausal(BLOCK));
    this.eval();
  }

  forward(q: Tensor, k: Tensor, v: Tensor, extra?: Tensor): Tensor | Tensor[] {
    return this.body(this, q, k, v, extra);
  }
}

/** nanoGPT's mask: true (masked out) above the diagonal, from the `bias` buffer sliced to [:T, :T]. */
const causalFill = (m: Attention) => m.bias.slice(0, 0, T).slice(1, 0, T).eq(0);

/** Runs `body` on random q, k, v [B, H, T, D] (and `extra`), fused and unfused; returns the compilation. */
async function attend(body: Body, opts: { bias?: Tensor; extra?: Tensor; fullyMaskedRows?: boolean } = {}): Promise<Compilation> {
  manualSeed(11);
  const args: unknown[] = [randomTensor([B, H, T, D]), randomTensor([B, H, T, D]), randomTensor([B, H, T, D])];
  if (opts.extra) args.push(opts.extra);
  return compileBothWays(new Attention(body, opts.bias), args, opts);
}

/** One causal fused_attention with this scale, reading no mask, and nothing of the chain left. */
function expectCausalFusion(c: Compilation, scale: number, scaling: 'post' | 'pre_qk' = 'post'): void {
  const fused = fusedStage(c);
  const attention = fused.nodesOf('fused_attention');
  expect(attention).toHaveLength(1);
  expect(attention[0].attrs).toMatchObject({ causal: true, scaling });
  expect(attention[0].meta).toMatchObject({ kernel: 'flash_causal' });
  expect(attention[0].attrs.scale).toBeCloseTo(scale, 12);
  expect(attention[0].inputs).toHaveLength(3);
  for (const op of ['softmax', 'sdpa', 'masked_fill', 'matmul']) expect(fused.nodesOf(op)).toHaveLength(0);
  expect(attentionDecisions(c)).toMatchObject([{ applied: true }]);
}

/** No causal fused_attention: either fused with the mask as an input, or not fused; the decision says `why`. */
function expectNotCausal(c: Compilation, why: RegExp, outcome: 'fused with the mask' | 'not fused'): void {
  const attention = fusedStage(c).nodesOf('fused_attention');
  const [decision] = attentionDecisions(c);
  expect(decision.reason).toMatch(why);
  if (outcome === 'not fused') {
    expect(attention).toHaveLength(0);
    expect(decision.applied).toBe(false);
  } else {
    expect(attention).toHaveLength(1);
    expect(attention[0].attrs).toMatchObject({ causal: false });
    expect(attention[0].meta).toMatchObject({ kernel: 'flash_masked' });
    expect(attention[0].inputs).toHaveLength(4);
    expect(decision.applied).toBe(true);
  }
}

// ---- 3. spellings that fuse into causal attention ----

describe('every spelling of causal attention fuses into one causal fused_attention', () => {
  it('scale written as * 1/sqrt(d)', async () => {
    const c = await attend((m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).mul(1 / Math.sqrt(D));
      return F.softmax(att.maskedFill(causalFill(m), -Infinity), -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('scale written as / sqrt(d)', async () => {
    const c = await attend((m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).div(Math.sqrt(D));
      return F.softmax(att.maskedFill(causalFill(m), -Infinity), -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('scale applied to q before the matmul', async () => {
    const c = await attend((m, q, k, v) => {
      const att = q.mul(SCALE).matmul(k.transpose(-2, -1));
      return F.softmax(att.maskedFill(causalFill(m), -Infinity), -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('q and k each scaled by d^-1/4 gives scaling "pre_qk" with the product as the scale', async () => {
    const quarter = Math.pow(D, -0.25);
    const c = await attend((m, q, k, v) => {
      // k's scale written after the transpose: canonicalization moves it next to k.
      const att = q.mul(quarter).matmul(k.transpose(-2, -1).mul(quarter));
      return F.softmax(att.maskedFill(causalFill(m), -Infinity), -1).matmul(v);
    });
    expectCausalFusion(c, quarter * quarter, 'pre_qk');
  });

  it('mask as F.where(keep, scores, -inf) with keep read from the buffer', async () => {
    const c = await attend((m, q, k, v) => {
      const keep = m.bias.slice(0, 0, T).slice(1, 0, T).ne(0);
      const att = F.where(keep, q.matmul(k.transpose(-2, -1)).mul(SCALE), -Infinity);
      return F.softmax(att, -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('mask as F.where(fill, -inf, scores): the fill value in the true branch', async () => {
    const c = await attend((m, q, k, v) => {
      const att = F.where(causalFill(m), -Infinity, q.matmul(k.transpose(-2, -1)).mul(SCALE));
      return F.softmax(att, -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('mask added: an f32 buffer of 0 and -inf above the diagonal', async () => {
    const c = await attend((m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).mul(SCALE).add(m.additive.slice(0, 0, T).slice(1, 0, T));
      return F.softmax(att, -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('mask built inside forward from F.tril(F.ones([T, T]))', async () => {
    const c = await attend((_m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(F.tril(F.ones([T, T])).eq(0), -Infinity);
      return F.softmax(att, -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('mask built inside forward from arange comparisons (i >= j)', async () => {
    const c = await attend((_m, q, k, v) => {
      const keep = F.arange(T).view(T, 1).ge(F.arange(T).view(1, T));
      const att = F.where(keep, q.matmul(k.transpose(-2, -1)).mul(SCALE), -Infinity);
      return F.softmax(att, -1).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('dropout with p = 0 (in training mode) between softmax and @ v', async () => {
    const c = await attend((m, q, k, v) => {
      const att = F.softmax(q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(causalFill(m), -Infinity), -1);
      return F.dropout(att, 0, true).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  it('dropout with p > 0 in eval mode between softmax and @ v', async () => {
    const c = await attend((m, q, k, v) => {
      const att = F.softmax(q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(causalFill(m), -Infinity), -1);
      return m.attn_dropout.forward(att).matmul(v);
    });
    expectCausalFusion(c, SCALE);
  });

  const kTransposes: [string, (k: Tensor) => Tensor][] = [
    ['transpose(-2, -1)', (k) => k.transpose(-2, -1)],
    ['permute(0, 1, 3, 2)', (k) => k.permute(0, 1, 3, 2)],
  ];
  for (const [spelling, transposed] of kTransposes) {
    it(`k transposed by ${spelling}`, async () => {
      const c = await attend((m, q, k, v) => {
        const att = q.matmul(transposed(k)).mul(SCALE).maskedFill(causalFill(m), -Infinity);
        return F.softmax(att, -1).matmul(v);
      });
      expectCausalFusion(c, SCALE);
    });
  }

  it('scaledDotProductAttention with isCausal', async () => {
    const c = await attend((_m, q, k, v) => F.scaledDotProductAttention(q, k, v, { isCausal: true }));
    expectCausalFusion(c, SCALE);
  });

  it('scaledDotProductAttention with an explicit bool mask, proved causal', async () => {
    const c = await attend((m, q, k, v) => F.scaledDotProductAttention(q, k, v, { attnMask: m.bias.slice(0, 0, T).slice(1, 0, T).ne(0) }));
    expectCausalFusion(c, SCALE);
    expect(attentionDecisions(c)[0].reason).toMatch(/proved lower-triangular over \[6,6\]/);
  });

  it('scaledDotProductAttention with an additive mask, proved causal', async () => {
    const c = await attend((m, q, k, v) => F.scaledDotProductAttention(q, k, v, { attnMask: m.additive.slice(0, 0, T).slice(1, 0, T), scale: 0.3 }));
    expectCausalFusion(c, 0.3);
  });
});

// ---- 4. near misses: never causal, and the decision says why ----

describe('attention that is not causal is never fused as causal, and the reason says why', () => {
  /** softmax(q k^T * scale, masked where `fill` is true) @ v. */
  const maskedAttention = (fill: (m: Attention, extra?: Tensor) => Tensor): Body => (m, q, k, v, extra) => {
    const att = q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(fill(m, extra), -Infinity);
    return F.softmax(att, -1).matmul(v);
  };

  it('a triu mask (attend to the future) is fused with the mask, naming the first wrong element', async () => {
    const c = await attend(maskedAttention(() => F.triu(F.ones([T, T])).eq(0)));
    expectNotCausal(c, /is not causal: element \[0, 1\] is 0, so query 0 attends to key 1 \(a later position\)/, 'fused with the mask');
  });

  it('tril with diagonal 1 (one step into the future) is fused with the mask', async () => {
    const c = await attend(maskedAttention(() => F.tril(F.ones([T, T]), 1).eq(0)));
    expectNotCausal(c, /is not causal: element \[0, 1\] is 0, so query 0 attends to key 1 \(a later position\)/, 'fused with the mask');
  });

  // Query 0 attends to no key: the unfused softmax gives NaN there, and so does fused_attention.
  it('tril with diagonal -1 (not even the current token) is fused with the mask', async () => {
    const c = await attend(maskedAttention(() => F.tril(F.ones([T, T]), -1).eq(0)), { fullyMaskedRows: true });
    expectNotCausal(c, /is not causal: element \[0, 0\] is 1, so query 0 does not attend to key 0 \(its own position\)/, 'fused with the mask');
  });

  it('one flipped element of the buffer is named in the reason', async () => {
    const flipped = lowerTriangle(BLOCK, (data) => (data[3 * BLOCK + 5] = 1));
    const c = await attend(maskedAttention(causalFill), { bias: flipped });
    expectNotCausal(c, /is not causal: element \[3, 5\] is 0, so query 3 attends to key 5 \(a later position\)/, 'fused with the mask');
  });

  it('a mask given to forward() at run time cannot be proved causal', async () => {
    const runtimeMask = tensor(Array.from({ length: T * T }, (_, idx) => (idx % T > Math.floor(idx / T) ? 1 : 0)), [T, T], 'bool');
    const c = await attend(maskedAttention((_m, mask) => mask!), { extra: runtimeMask });
    expectNotCausal(c, /mask %\d+ = input is only known at run time, so it cannot be proved causal/, 'fused with the mask');
  });

  it('softmax over dim -2 is not attention and is not fused', async () => {
    const c = await attend((m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(causalFill(m), -Infinity);
      return F.softmax(att, -2).matmul(v);
    });
    expectNotCausal(c, /expected softmax over the last dim but %\d+ = softmax has dim=-2/, 'not fused');
  });

  it('a scale that is a tensor, not a constant number, is not fused', async () => {
    const c = await attend(
      (m, q, k, v, scale) => {
        const att = q.matmul(k.transpose(-2, -1)).mul(scale!).maskedFill(causalFill(m), -Infinity);
        return F.softmax(att, -1).matmul(v);
      },
      { extra: tensor([SCALE], [1]) },
    );
    expectNotCausal(c, /the scale is %\d+ \(input\), not a constant number/, 'not fused');
  });

  it('attention weights also returned from forward() are an interior value used elsewhere: not fused', async () => {
    const c = await attend((m, q, k, v) => {
      const att = F.softmax(q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(causalFill(m), -Infinity), -1);
      return [att.matmul(v), att];
    });
    expectNotCausal(c, /interior value %\d+ = softmax is also used by a graph output/, 'not fused');
  });
});

// ---- regressions: chains the fused kernel cannot take are left alone, not miscompiled ----

describe('attention the fused kernel cannot express is compiled correctly', () => {
  // Before the fix, compile threw KILN_E001 from fused_attention's type rule.
  it('a mask that broadcasts the scores to more dims is not fused', async () => {
    const wide = tensor(Array.from({ length: 2 * T * T }, (_, idx) => (idx % T > Math.floor(idx / T) % T ? 1 : 0)), [2, 1, 1, T, T], 'bool');
    const c = await attend(
      (_m, q, k, v, mask) => F.softmax(q.matmul(k.transpose(-2, -1)).mul(SCALE).maskedFill(mask!, -Infinity), -1).matmul(v),
      { extra: wide },
    );
    expectNotCausal(c, /mask bool\[2,1,1,6,6\] does not broadcast to the scores \[2,2,6,6\]/, 'not fused');
  });

  // Before the fix, compile threw KILN_E011: the number became fused_attention's mask operand.
  it('a number added to the scores is not taken for a mask', async () => {
    const c = await attend((_m, q, k, v) => {
      const att = q.matmul(k.transpose(-2, -1)).mul(SCALE).add(1);
      return F.softmax(att, -1).matmul(v);
    });
    expectNotCausal(c, /the mask is the number 1, not a tensor/, 'not fused');
  });

  // Before the fix, the fused kernel took sqrt of the negative product: every output was NaN.
  it('q and k scaled by factors of opposite sign fuse with scaling "post" (pre_qk would take sqrt of a negative scale)', async () => {
    const quarter = Math.pow(D, -0.25);
    const c = await attend((m, q, k, v) => {
      const att = q.mul(-quarter).matmul(k.transpose(-2, -1).mul(quarter));
      return F.softmax(att.maskedFill(causalFill(m), -Infinity), -1).matmul(v);
    });
    expectCausalFusion(c, -quarter * quarter, 'post');
  });

  it('fused_attention refuses scaling "pre_qk" with a negative scale (KILN_E011)', () => {
    const g = new Graph();
    const [q, k, v] = ['q', 'k', 'v'].map((name) => g.add('input', [], { name, dtype: 'f32', shape: [T, D] }));
    expect(() => g.add('fused_attention', [q, k, v], { causal: true, scale: -0.5, scaling: 'pre_qk' })).toThrow(/KILN_E011.*needs scale >= 0/);
  });
});

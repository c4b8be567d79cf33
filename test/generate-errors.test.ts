// compileGenerator's refusals, one test each: bad generate() input, and models whose decode step kiln
// cannot prove exact (passes/kv-cache.ts), each a coded one-line error naming the source line.

import { describe, expect, it } from 'vitest';
import { compileGenerator } from '../compiler/generate.ts';
import nearMiss from '../examples/near-miss/model.ts';
import { F, Module, type Tensor, manualSeed, nn } from '../index.ts';
import { tinyModel } from './generate-cases.ts';

/** The KilnError message a promise rejects with. */
async function rejection(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  expect(e, 'expected a rejection').toBeInstanceOf(Error);
  return (e as Error).message;
}

/** One attention layer over token and position embeddings; `positions` and `attend` say how. */
class OneLayer extends Module {
  wte = new nn.Embedding(11, 8);
  wpe = new nn.Embedding(8, 8);
  head = new nn.Linear(8, 11, false);
  config = { block_size: 8, vocab_size: 11 };
  declare table: Tensor;
  constructor(
    readonly positions: 'arange' | 'buffer',
    readonly causal = true,
  ) {
    super();
    this.registerBuffer('table', F.arange(0, 8));
  }
  forward(idx: Tensor): Tensor {
    const [, t] = idx.size();
    const pos = this.positions === 'arange' ? F.arange(0, t) : this.table.slice(0, 0, t);
    const x = this.wte.forward(idx).add(this.wpe.forward(pos)).view(idx.size(0), 1, t, 8);
    const y = F.scaledDotProductAttention(x, x, x, { isCausal: this.causal });
    return this.head.forward(y.view(idx.size(0), t, 8));
  }
}

describe('compileGenerator refuses', () => {
  it('an empty prompt', async () => {
    const gen = await compileGenerator(tinyModel(), { backend: 'cpu' });
    expect(await rejection(gen.generate([], { maxNewTokens: 1 }))).toMatch(/^KILN_E011 the prompt is empty; give at least one token id/);
  });

  it('a token id outside the vocabulary', async () => {
    const gen = await compileGenerator(tinyModel(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1, 11], { maxNewTokens: 1 }))).toBe('KILN_E011 prompt token 1 is 11, outside the vocabulary [0, 11)');
    expect(await rejection(gen.generate([[1], [-1]], { maxNewTokens: 1 }))).toBe('KILN_E011 prompt token 0 of row 1 is -1, outside the vocabulary [0, 11)');
  });

  it('a negative number of new tokens', async () => {
    const gen = await compileGenerator(tinyModel(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1], { maxNewTokens: -1 }))).toBe('KILN_E011 max new tokens must be an integer >= 0, got -1');
  });

  it('a prompt longer than the cache, and a cache longer than block_size', async () => {
    const gen = await compileGenerator(tinyModel(), { backend: 'cpu', maxTokens: 4 });
    expect(await rejection(gen.generate([1, 2, 3, 4, 5], { maxNewTokens: 1 }))).toMatch(/^KILN_E011 the prompt has 5 tokens and the cache holds 4 \(maxTokens\); raise maxTokens up to block_size 8/);
    expect(await rejection(compileGenerator(tinyModel(), { backend: 'cpu', maxTokens: 9 }))).toMatch(/^KILN_E011 maxTokens must be an integer in \[1, block_size 8\], got 9/);
  });

  it('attention that was not fused (its scores relate positions), naming the line', async () => {
    manualSeed(0);
    const gen = await compileGenerator(nearMiss({ block_size: 8 }).eval(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1, 2], { maxNewTokens: 2 }))).toMatch(/^KILN_E011 examples\/near-miss\/model\.ts:\d+:\d+: kiln cannot derive a KV-cached decode step: %\d+ \w+ holds 2 position dims/);
  });

  it('positions that do not come from F.arange(0, T), naming the line', async () => {
    const gen = await compileGenerator(new OneLayer('buffer').eval(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1, 2], { maxNewTokens: 2 }))).toMatch(/^KILN_E011 test\/generate-errors\.test\.ts:\d+:\d+: kiln cannot derive a KV-cached decode step: %\d+ constant \(i32\[2\]\) depends on the sequence length but comes from neither the token ids nor F\.arange\(0, T\)/);
    // (the buffer's slice is folded into a constant at the line that sliced it.) The same model with its positions from arange generates, with and without the cache alike.
    const ok = await compileGenerator(new OneLayer('arange').eval(), { backend: 'cpu' });
    const a = await ok.generate([1, 2], { maxNewTokens: 4, greedy: true });
    expect(a.tokens).toEqual((await ok.generate([1, 2], { maxNewTokens: 4, greedy: true, cache: false })).tokens);
  });

  it('attention that is not causal', async () => {
    const gen = await compileGenerator(new OneLayer('arange', false).eval(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1, 2], { maxNewTokens: 2 }))).toMatch(/^KILN_E011 test\/generate-errors\.test\.ts:\d+:\d+: kiln cannot derive a KV-cached decode step: %\d+ fused_attention is attention that is not causal/);
  });

  it('a model in training mode with dropout on', async () => {
    const gen = await compileGenerator(tinyModel(1, { dropout: 0.1 }).train(), { backend: 'cpu' });
    expect(await rejection(gen.generate([1, 2], { maxNewTokens: 2 }))).toMatch(/^KILN_E011 examples\/nanogpt\/model\.ts:\d+:\d+: kiln cannot derive a KV-cached decode step: .*call model\.eval\(\) before generating/);
  });
});

// compileGenerator on the cpu backend: the KV-cached decode derived from nanoGPT's forward() against
// recomputing the window (tokens exactly, logits within 1e-5), and its refusals.

import { describe, expect, it } from 'vitest';
import { compileGenerator } from '../compiler/generate.ts';
import { expectCacheMatchesRecompute, run, tinyModel } from './generate-cases.ts';

// f32 throughout: the cached step sums the same products as the full forward, in another order (1e-6 at most seen; 1e-5 the bound).
const TOL = 1e-5;

describe('compileGenerator on the cpu', () => {
  it('greedy tokens with the cache equal recomputing, logits within 1e-5, for a prompt shorter than block_size', async () => {
    const steps = await expectCacheMatchesRecompute('cpu', tinyModel(), [1, 2, 3], 5, TOL);
    expect(steps.map((s) => s.kind)).toEqual(['prefill', 'decode', 'decode', 'decode', 'decode']);
  });

  it('a prompt as long as block_size, and one longer (cropped to its last block_size tokens), run fresh prefills of the window', async () => {
    const equal = await expectCacheMatchesRecompute('cpu', tinyModel(2), [1, 2, 3, 4, 5, 6, 7, 8], 3, TOL);
    expect(equal.map((s) => s.kind)).toEqual(['prefill', 'window', 'window']);
    const longer = await expectCacheMatchesRecompute('cpu', tinyModel(3), [9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 0], 3, TOL);
    expect(longer.map((s) => s.kind)).toEqual(['prefill', 'window', 'window']);
  });

  it('the window grows through the decode steps and past block_size, 2 rows at once', async () => {
    const steps = await expectCacheMatchesRecompute('cpu', tinyModel(4), [[1, 2], [3, 4]], 9, TOL);
    expect(steps.map((s) => s.kind).join(' ')).toBe('prefill decode decode decode decode decode decode window window');
  });

  it('one symbolic trace for every prompt length (dynamic, the default) gives the graphs, so the logits, of a trace per length, bit for bit', async () => {
    const model = tinyModel(5);
    const dynamic = await run(await compileGenerator(model, { backend: 'cpu' }), [3, 1, 4, 1, 5], { maxNewTokens: 6, greedy: true });
    const fixed = await run(await compileGenerator(model, { backend: 'cpu', dynamic: false }), [3, 1, 4, 1, 5], { maxNewTokens: 6, greedy: true });
    expect(dynamic.tokens).toEqual(fixed.tokens);
    for (const [i, s] of dynamic.steps.entries()) expect([...s.logits!], `step ${i}`).toEqual([...fixed.steps[i].logits!]);
  });

  it('a seed repeats its draws, another seed draws others (top_k 5, temperature 1.5), with and without the cache', async () => {
    const gen = await compileGenerator(tinyModel(6), { backend: 'cpu' });
    const draw = async (seed: number, cache = true) => (await gen.generate([1, 2, 3], { maxNewTokens: 12, topK: 5, temperature: 1.5, seed, cache })).tokens;
    const first = await draw(1);
    expect(await draw(1)).toEqual(first);
    expect(await draw(1, false)).toEqual(first);
    expect(await draw(2)).not.toEqual(first);
  });
});

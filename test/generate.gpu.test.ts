// compileGenerator on WebGPU (SwiftShader): the KV-cached decode (decode_attention, caches on the GPU,
// in-graph sampling) against recomputing the window, and the decode step's kernel count.

import { afterAll, describe, expect, it } from 'vitest';
import { compileGenerator } from '../compiler/generate.ts';
import { lowerGraph } from '../codegen/index.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { browserModel, expectCacheMatchesRecompute, run, tinyModel } from './generate-cases.ts';

afterAll(releaseDevice);

// f32: the decode kernel sums the keys in another order than the flash prefill kernel; 1e-5 is the bound.
const TOL = 1e-5;

describe('compileGenerator on webgpu', () => {
  it('greedy tokens with the cache equal recomputing, logits within 1e-5, for prompts shorter than, equal to and longer than block_size', async () => {
    const shorter = await expectCacheMatchesRecompute('webgpu', tinyModel(), [1, 2, 3], 7, TOL);
    expect(shorter.map((s) => s.kind).join(' ')).toBe('prefill decode decode decode decode decode window');
    await expectCacheMatchesRecompute('webgpu', tinyModel(2), [1, 2, 3, 4, 5, 6, 7, 8], 2, TOL);
    await expectCacheMatchesRecompute('webgpu', tinyModel(3), [[9, 1, 2, 3, 4, 5, 6, 7, 8, 10, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]], 2, TOL);
  });

  it('the browser checkpoint generates the same text with and without the cache, and as on the cpu', async () => {
    const { model, chars } = browserModel();
    const prompt = [...'ROMEO:\n'].map((c) => chars.indexOf(c));
    const steps = await expectCacheMatchesRecompute('webgpu', model, prompt, 12, TOL);
    const cpu = await run(await compileGenerator(model, { backend: 'cpu' }), prompt, { maxNewTokens: 12, greedy: true });
    expect(steps.map((s) => s.tokens[0])).toEqual(cpu.tokens[0]);
  });

  it('draws the same tokens with and without the cache for the same seed (top_k 10, temperature 0.8)', async () => {
    const { model } = browserModel();
    const gen = await compileGenerator(model, { backend: 'webgpu' });
    const options = { maxNewTokens: 10, temperature: 0.8, topK: 10, seed: 42 };
    const a = await gen.generate([[0, 13, 14], [20, 21, 22]], options);
    const b = await gen.generate([[0, 13, 14], [20, 21, 22]], { ...options, cache: false });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.decodeTokensPerS).toBeGreaterThan(0);
  });

  // Per layer before issue 18's fusions: layer_norm, c_attn, 3 slices (q, k, v), decode_attention (partial + merge), c_proj, add, layer_norm, c_fc,
  // gelu, c_proj, add; then 2 embeddings, add, ln_f, lm_head, sample: 62. decode_attention reads q, k and v in place from c_attn's output
  // (passes/kv-cache.ts readPackedQkv): no slice runs; a cache of 128 is 2 tiles of keys, one kernel (decodeSplits): at most 10 per layer.
  // Epilogue fusions (passes/matmul-epilogue.ts) lower it further.
  it('a decode step of the 4-layer browser model copies no q, k, v and merges no splits: at most 10 kernels per layer and 6 more', async () => {
    const { model } = browserModel();
    const gen = await compileGenerator(model, { backend: 'webgpu' });
    const kernels = await gen.kernelsPerToken(1, { greedy: true });
    console.log(`kernels per decoded token (browser model, batch 1, greedy): ${kernels}`);
    const ops = lowerGraph(await gen.decodeStage(1, { greedy: true })).kernels.map((k) => k.node.op);
    expect(ops.length).toBe(kernels);
    expect(ops.filter((op) => op === 'slice')).toEqual([]);
    expect(ops.filter((op) => op.startsWith('decode_attention'))).toEqual(['decode_attention', 'decode_attention', 'decode_attention', 'decode_attention']);
    expect(kernels).toBeLessThanOrEqual(4 * 10 + 6);
  });
});

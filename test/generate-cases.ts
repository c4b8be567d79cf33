// The generator tests' cases (generate.test.ts on the cpu, generate.gpu.test.ts on WebGPU): a tiny
// random nanoGPT, the shipped browser checkpoint, and greedy generation with the KV cache against the
// same generation recomputing the window (cache: false), token for token and logits step by step.

import { readFileSync } from 'node:fs';
import { expect } from 'vitest';
import { loadCheckpointBytes } from '../compiler/checkpoint.ts';
import { type GenerateOptions, type GeneratedStep, type Generator, compileGenerator } from '../compiler/generate.ts';
import type { BackendName } from '../compiler/backends.ts';
import createModel, { type GPT, manualSeed } from '../examples/nanogpt/model.ts';
import { relError } from './helpers.ts';

/** 2 layers, 2 heads, n_embd 16, block_size 8, vocab 11: prompts of 3, 8 and 11 tokens are shorter than, equal to and longer than the block. */
export const TINY = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 8, vocab_size: 11, bias: true, dropout: 0 };

export function tinyModel(seed = 1, config: Record<string, unknown> = {}): GPT {
  manualSeed(seed);
  return createModel({ ...TINY, ...config }).eval() as GPT;
}

/** The browser page's char-level Shakespeare model (4 layers, n_embd 128, block 128, vocab 65). */
export function browserModel(): { model: GPT; chars: string[] } {
  const bytes = readFileSync(new URL('../examples/browser/checkpoint.safetensors', import.meta.url));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true)))));
  const model = createModel(JSON.parse(header.__metadata__.config)) as GPT;
  loadCheckpointBytes(model, bytes, 'checkpoint.safetensors');
  return { model: model.eval() as GPT, chars: JSON.parse(header.__metadata__.chars) };
}

export async function run(gen: Generator, prompt: number[] | number[][], options: GenerateOptions): Promise<{ tokens: number[][]; steps: GeneratedStep[] }> {
  const steps: GeneratedStep[] = [];
  const result = await gen.generate(prompt, { ...options, keepLogits: true, onToken: (s) => void steps.push(s) });
  return { tokens: result.tokens, steps };
}

/** Greedy with the cache gives the tokens of cache: false exactly, and each step's logits within `tol` (relError: max abs error over max abs value). */
export async function expectCacheMatchesRecompute(backend: BackendName, model: GPT, prompt: number[] | number[][], maxNewTokens: number, tol: number): Promise<GeneratedStep[]> {
  const gen = await compileGenerator(model, { backend });
  const cached = await run(gen, prompt, { maxNewTokens, greedy: true });
  const recomputed = await run(gen, prompt, { maxNewTokens, greedy: true, cache: false });
  expect(cached.tokens).toEqual(recomputed.tokens);
  for (const [i, s] of cached.steps.entries()) expect(relError(s.logits!, recomputed.steps[i].logits!), `step ${i} (${s.kind})`).toBeLessThan(tol);
  return cached.steps;
}

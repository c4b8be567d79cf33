// kiln generate on the cpu backend: --json output, the cache against --no-cache, prompts as text and as
// ids, streamed text from the launcher, and its usage errors.

import { describe, expect, it } from 'vitest';
import { dumpCommand } from '../compiler/cli/dump.ts';
import { explainCommand } from '../compiler/cli/explain.ts';
import { generateCommand } from '../compiler/cli/generate.ts';
import { KilnError } from '../ir/errors.ts';
import { NANOGPT, NEAR_MISS, printed, runNode } from './cli-capture.ts';

const WEIGHTS = 'examples/browser/checkpoint.safetensors';
const base = [NANOGPT, '--weights', WEIGHTS, '--device', 'cpu', '--json'];

async function json(argv: string[]): Promise<{ tokens: number[]; prefill_tokens_per_s: number; decode_tokens_per_s: number; kernels_per_token: number }> {
  return JSON.parse(await printed(generateCommand, [...base, ...argv]));
}

async function failure(argv: string[]): Promise<string> {
  const e = await printed(generateCommand, [...base, ...argv]).then(() => undefined, (err: unknown) => err);
  expect(e).toBeInstanceOf(KilnError);
  return (e as KilnError).message;
}

describe('kiln generate', () => {
  it('--json gives the tokens, prefill and decode tokens/s and the decode step`s kernels; --no-cache the same greedy tokens', async () => {
    const cached = await json(['--prompt', 'ROMEO:', '--max-new-tokens', '8', '--greedy']);
    expect(cached.tokens).toHaveLength(8);
    expect(cached.prefill_tokens_per_s).toBeGreaterThan(0);
    expect(cached.decode_tokens_per_s).toBeGreaterThan(0);
    // The 4-layer browser model: 62 with q, k, v copied out of c_attn's output and split attention, at most 46 without (test/generate.gpu.test.ts counts them).
    expect(cached.kernels_per_token).toBeGreaterThan(4);
    expect(cached.kernels_per_token).toBeLessThanOrEqual(46);
    const recomputed = await json(['--prompt', 'ROMEO:', '--max-new-tokens', '8', '--greedy', '--no-cache']);
    expect(recomputed.tokens).toEqual(cached.tokens);
  });

  it('--prompt-ids is the same prompt as its characters; a seed repeats a sampled run', async () => {
    const text = await json(['--prompt', 'AB', '--max-new-tokens', '4', '--seed', '7', '--top-k', '5']);
    const ids = await json(['--prompt-ids', '13,14', '--max-new-tokens', '4', '--seed', '7', '--top-k', '5']); // 'A' is 13, 'B' 14 in the checkpoint's chars
    expect(ids.tokens).toEqual(text.tokens);
  });

  it('streams the text after the prompt and ends with the rates, from the launcher', async () => {
    const { code, stdout } = await runNode(['bin/kiln.mjs', 'generate', NANOGPT, '--weights', WEIGHTS, '--device', 'cpu', '--prompt', 'ROMEO:', '--max-new-tokens', '5', '--greedy']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^ROMEO:[^]{5}\n\nprefill: [\d.]+ tokens\/s \(6 tokens, [\d.]+ ms\)\ndecode: [\d.]+ tokens\/s \(4 tokens, [\d.]+ ms; \d+ kernels per token; KV cache of 128 positions; device cpu\)\n$/);
  });

  it('refuses bad flags with one coded line each', async () => {
    expect(await failure(['--prompt', 'é'])).toMatch(/^KILN_E015 kiln generate: --prompt has "é", which is not in the checkpoint's 65 characters/);
    expect(await failure(['--prompt', 'A', '--prompt-ids', '1'])).toMatch(/^KILN_E015 kiln generate: give --prompt or --prompt-ids, not both/);
    expect(await failure(['--prompt-ids', '1,x'])).toMatch(/^KILN_E015 kiln generate: --prompt-ids takes comma-separated integers/);
    expect(await failure(['--max-new-tokens', '-1'])).toMatch(/^KILN_E015 kiln generate: --max-new-tokens must be an integer >= 0, got "-1"/);
    expect(await failure(['--temperature', '0'])).toMatch(/^KILN_E015 kiln generate: --temperature must be a positive number, got "0"/);
    expect(await failure(['--prompt-ids', '1,65'])).toBe('KILN_E011 prompt token 1 is 65, outside the vocabulary [0, 65)');
    expect(await failure(['--prompt', ''])).toMatch(/^KILN_E011 the prompt is empty/);
  });

  it('kiln dump --stage decode prints the decode step: the position pos, decode_attention against each layer`s cache, in-graph sampling', async () => {
    const text = await printed(dumpCommand, [NANOGPT, '--weights', WEIGHTS, '--stage', 'decode', '--batch', '1']);
    expect(text).toMatch(/^%0 = input\(\) \{name="idx"\} : i32\[1,1\]\n/);
    expect(text).toMatch(/%(\d+) = input\(\) \{name="pos"\} : i32\[\]\n%\d+ = reshape\(%\1\) \{shape=\[1\]\} : i32\[1\]  # examples\/nanogpt\/model\.ts:\d+:\d+  const pos = F\.arange\(0, t\);/);
    for (const layer of [0, 1, 2, 3]) expect(text).toContain(`= input() {name="k_cache.${layer}"} : f32[128,1,4,32]`);
    // S = 128 is 2 tiles of keys: the whole kernel, no split (decodeSplits); q, k, v read in place from c_attn's output (columns).
    expect(text.match(/= decode_attention\(%(\d+), %\d+, %\d+, %\1, %\1, %\d+\) \{scale=[\d.]+, scaling="post", columns=\[0,128,256\]\}/g)).toHaveLength(4);
    expect(text).not.toMatch(/= slice\(|= decode_attention_merge\(/);
    expect(text).not.toMatch(/= fused_attention\(|= transpose\(/); // attention reads the cache; at T = 1 the transposes are views
    expect(text).toMatch(/= sample\(%\d+\) \{greedy=true\} : i32\[1\]/);
  });

  it('kiln explain --decode lists each decode attention site, or why a model has none', async () => {
    const text = await printed(explainCommand, [NANOGPT, '--weights', WEIGHTS, '--batch', '1', '--decode']);
    expect(text).toContain('Decode (kiln generate, 1 row): 4 attention sites read a KV cache; positions from examples/nanogpt/model.ts:206:19 become the new token\'s position (pos)');
    expect(text).toMatch(/DECODE {5}transformer\.h\.3\.attn {2}examples\/nanogpt\/model\.ts:91:13 {2}decode_attention against k_cache\.3, v_cache\.3 f32\[128,1,4,32\]/);
    expect(Number(text.match(/(\d+) kernels per decoded token/)?.[1])).toBeLessThanOrEqual(46);
    const refused = JSON.parse(await printed(explainCommand, [NEAR_MISS, '--decode', '--json'])).decode;
    expect(refused).toMatchObject({ derived: false, sites: [], kernelsPerToken: null });
    expect(refused.reason).toMatch(/^KILN_E011 examples\/near-miss\/model\.ts:\d+:\d+: kiln cannot derive a KV-cached decode step: %\d+ matmul holds 2 position dims/);
  });
});

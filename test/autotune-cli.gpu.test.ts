// `kiln kernels --autotune` and `kiln explain --autotune` on SwiftShader: each matmul kernel lists every
// candidate tiling with its measured time, the pick (the fastest) and the rule's pick. The second
// command reuses the first's picks (same device, same products).

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AutotuneReport } from '../compiler/cli/autotune-report.ts';
import { explainCommand } from '../compiler/cli/explain.ts';
import { type KernelReport, kernelsCommand } from '../compiler/cli/kernels.ts';
import { releaseDevice } from '../runtime/webgpu/index.ts';
import { tempAutotuneCache } from './autotune-cache.ts';
import { NANOGPT, printed } from './cli-capture.ts';

const CONFIG = JSON.stringify({ n_layer: 1, n_head: 2, n_embd: 32, block_size: 32, vocab_size: 96 });
const model = [NANOGPT, '--config', CONFIG, '--batch', '2', '--seq', '8', '--autotune'];
let cache: ReturnType<typeof tempAutotuneCache>;
beforeAll(() => (cache = tempAutotuneCache()));
afterAll(async () => {
  cache.remove();
  await releaseDevice();
});

/** The pick is the fastest candidate, every candidate was timed, and the rule's pick is one of them. */
function expectMeasured(r: AutotuneReport) {
  expect(r.candidates.map((c) => c.name)).toEqual(['largeK8', 'medium', 'small']); // SwiftShader's 32 KiB leave out the 33 KiB large tiles
  const times = r.candidates.map((c) => c.us!);
  expect(times.every((t) => t > 0)).toBe(true);
  expect(r.choice).toBe(r.candidates[times.indexOf(Math.min(...times))].name);
  expect(r.rule).toBe('small'); // 16 rows: the rule's 64x64 tiles
}

describe('kiln kernels --autotune and kiln explain --autotune', () => {
  it('kernels: every matmul shows its candidates\' times, the pick and the rule\'s, text and json', async () => {
    const listing = JSON.parse(await printed(kernelsCommand, [...model, '--json'])) as { kernels: KernelReport[] };
    // lm_head's matmul, and the 4 that carry their bias, GELU or residual chain as an epilogue (passes/matmul-epilogue.ts): each measured with it.
    const matmuls = listing.kernels.filter((k) => k.op === 'matmul' || k.op === 'matmul_epilogue');
    expect(matmuls).toHaveLength(5);
    for (const k of matmuls) expectMeasured(k.autotune!);
    expect(listing.kernels.filter((k) => k.autotune)).toHaveLength(5);
    expect(matmuls[0].autotune!.measured).toMatch(/^(timestamp-query|wall-clock)$/); // SwiftShader here has timestamps
    const text = await printed(kernelsCommand, model);
    expect(text.match(/^ {4}autotune: picked \w+: largeK8 [\d.]+ us, medium [\d.]+ us, small [\d.]+ us \(rule: small; (timestamp-query|wall-clock)\)$/gm)).toHaveLength(5);
  });

  it('explain: a section listing each kernel with alternatives, its source line and its choice', async () => {
    const json = JSON.parse(await printed(explainCommand, [...model, '--json'])) as { autotune: AutotuneReport[] };
    expect(json.autotune.map((r) => r.source)).toEqual([
      'let [q, k, v] = this.c_attn.forward(x).split(this.n_embd, 2);',
      'y = this.resid_dropout.forward(this.c_proj.forward(y));',
      'x = this.c_fc.forward(x);',
      'x = this.c_proj.forward(x);',
      'logits = this.lm_head.forward(x);',
    ]);
    for (const r of json.autotune) expectMeasured(r);
    const text = await printed(explainCommand, model);
    expect(text).toContain('Kernel choices (autotune on ');
    expect(text).toMatch(/^5 kernels with alternatives; measurement changed the rule's pick in [0-5]$/m);
  });

  it('explain --train: the attention\'s backward, flash or composed, measured before the step\'s products', async () => {
    const json = JSON.parse(await printed(explainCommand, [...model, '--train', '--json'])) as { autotune: AutotuneReport[] };
    const [attention, ...products] = json.autotune;
    expect(attention.op).toBe('fused_attention backward');
    expect(attention.source).toContain('F.scaledDotProductAttention(q, k, v');
    expect(attention.candidates.map((c) => c.name)).toEqual(['flash', 'composed']);
    const times = attention.candidates.map((c) => c.us!);
    expect(attention.choice).toBe(attention.candidates[times.indexOf(Math.min(...times))].name);
    expect(attention.rule).toBe('flash');
    // The step's forward and backward products (dx = dy @ W, dW = dy^T @ x): more than the forward's 5, each measured.
    expect(products.length).toBeGreaterThan(5);
    expect(products.every((r) => (r.op === 'matmul' || r.op === 'matmul_epilogue') && r.candidates.every((c) => c.us !== null) && r.choice === r.candidates.reduce((a, b) => (b.us! < a.us! ? b : a)).name)).toBe(true);
  });
});

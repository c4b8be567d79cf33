// `kiln explain` lists the loss site after the attention sites: fused into chunks in the training step
// (--train), left alone with its reason when forward() returns the logits, at the user's source line.

import { describe, expect, it } from 'vitest';
import { explainCommand } from '../compiler/cli/explain.ts';
import type { SiteReport } from '../compiler/cli/explain.ts';
import { NANOGPT, SMALL_GPT, printed } from './cli-capture.ts';

const explain = (...flags: string[]) => printed(explainCommand, [NANOGPT, '--config', JSON.stringify({ ...SMALL_GPT, flash: true }), '--batch', '2', '--seq', '8', ...flags]);
const lossSites = async (...flags: string[]) => (JSON.parse(await explain(...flags, '--json')) as { lossSites: SiteReport[] }).lossSites;

describe('kiln explain: the fused linear + cross-entropy site', () => {
  it('--train: lm_head and the loss fused into chunks, at nanoGPT\'s loss line', async () => {
    const [site, ...rest] = await lossSites('--train');
    expect(rest).toEqual([]);
    expect([site.fused, site.rule, site.kernel, site.op, site.function]).toEqual([true, 'linear_cross_entropy', 'chunked', 'cross_entropy', 'GPT.forward']);
    expect(site.loc).toMatch(/examples\/nanogpt\/model\.ts:220:\d+$/);
    expect(site.reason).toMatch(/^logits %\d+ \[16, \d+\] \([\d.]+ MiB in f32\) are never stored: 2 chunks of 8 rows/);
    const text = await explain('--train');
    expect(text).toMatch(/FUSED +\(top level\) +examples\/nanogpt\/model\.ts:220:\d+ +rule linear_cross_entropy -> chunked: logits/);
    expect(text).toMatch(/> 220 \| +loss = F\.crossEntropy\(logits\.view/);
    expect(text).toContain('1 loss site (linear + cross-entropy): 1 fused, 0 not fused');
  });

  it('the forward (which returns the logits): declined, saying why', async () => {
    const [site] = await lossSites();
    expect([site.fused, site.rule]).toEqual([false, 'linear_cross_entropy']);
    expect(site.reason).toMatch(/^the logits \(%\d+\) are also used by a graph output, so they must exist in full/);
    expect(await explain()).toContain('1 loss site (linear + cross-entropy): 0 fused, 1 not fused');
  });
});

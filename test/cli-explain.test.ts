// `kiln explain`: golden reports for nanoGPT (sdpa and manual attention) and the near-miss model, and one
// test per near miss that it is reported with its plain-words reason at its own source line.

import { describe, expect, it } from 'vitest';
import { type SiteReport, explainCommand, formatSite } from '../compiler/cli/explain.ts';
import { sourceContext } from '../compiler/cli/source.ts';
import { NANOGPT, NEAR_MISS, SMALL_GPT, printed } from './cli-capture.ts';

const SHAPE = ['--batch', '2', '--seq', '8'];
const nanogpt = (flash: boolean, ...flags: string[]) => printed(explainCommand, [NANOGPT, '--config', JSON.stringify({ ...SMALL_GPT, flash }), ...SHAPE, ...flags]);
const nearMiss = (...flags: string[]) => printed(explainCommand, [NEAR_MISS, ...SHAPE, ...flags]);

interface Report {
  sites: SiteReport[];
  fused: number;
  notFused: number;
}
const report = async (text: Promise<string>): Promise<Report> => JSON.parse(await text) as Report;

describe('kiln explain on nanoGPT', () => {
  for (const [label, flash] of [['flash', true], ['manual', false]] as const) {
    it(`prints the golden report for ${label} attention, text and json`, async () => {
      await expect(await nanogpt(flash)).toMatchFileSnapshot(`./__snapshots__/cli/explain.nanogpt-${label}.txt`);
      await expect(await nanogpt(flash, '--json')).toMatchFileSnapshot(`./__snapshots__/cli/explain.nanogpt-${label}.json`);
    });
  }

  it('fuses sdpa(isCausal) in both blocks onto the causal kernel', async () => {
    const r = await report(nanogpt(true, '--json'));
    expect(r.sites.map((s) => [s.module, s.op, s.fused, s.rule, s.kernel, s.reason])).toEqual([
      ['transformer.h.0.attn', 'sdpa', true, 'sdpa', 'flash_causal', 'isCausal=true'],
      ['transformer.h.1.attn', 'sdpa', true, 'sdpa', 'flash_causal', 'isCausal=true'],
    ]);
    expect([r.fused, r.notFused]).toEqual([2, 0]);
  });

  it('fuses the manual chain onto the causal kernel by proving the mask buffer lower-triangular', async () => {
    const r = await report(nanogpt(false, '--json'));
    for (const s of r.sites) {
      expect([s.op, s.rule, s.kernel, s.function]).toEqual(['softmax', 'attention_chain', 'flash_causal', 'CausalSelfAttention.forward']);
      expect(s.reason).toMatch(/^mask %\d+ proved lower-triangular over \[8,8\]$/);
      expect(s.loc).toMatch(/^examples\/nanogpt\/model\.ts:\d+:\d+$/);
    }
  });

  it('shows the source line of each site with two lines either side and a > marker', async () => {
    const text = await nanogpt(false);
    expect(text).toMatch(/^FUSED {6}transformer\.h\.0\.attn {2}examples\/nanogpt\/model\.ts:\d+:\d+ {2}rule attention_chain -> flash_causal: mask %\d+ proved lower-triangular over \[8,8\]$/m);
    expect(text).toMatch(/^ {2}> +\d+ \| att = F\.softmax\(att, -1\);$/m);
    expect(text.trimEnd().split('\n').at(-1)).toBe('2 attention sites: 2 fused (2 causal), 0 not fused');
  });
});

describe('kiln explain --dtype float16', () => {
  interface MixedReport extends Report {
    mixedPrecision: { autocast: string; f16Nodes: Record<string, number>; casts: number; ops: { rule: string; op: string; dtype: string; reason: string; loc: string; module: string; source: string }[] };
    device: { backend: string; f16: boolean; note: string };
  }

  it('prints the golden report for manual attention with a mixed-precision section, text and json', async () => {
    await expect(await nanogpt(false, '--dtype', 'float16')).toMatchFileSnapshot('./__snapshots__/cli/explain.nanogpt-manual-f16.txt');
    await expect(await nanogpt(false, '--dtype', 'float16', '--json')).toMatchFileSnapshot('./__snapshots__/cli/explain.nanogpt-manual-f16.json');
  });

  it('says which nodes compute in f16 and where autocast put each cast, with the source line', async () => {
    const r = JSON.parse(await nanogpt(false, '--dtype', 'float16', '--json')) as MixedReport;
    const m = r.mixedPrecision;
    expect(m.autocast).toBe('f16');
    expect([m.f16Nodes.matmul, m.f16Nodes.fused_attention]).toEqual([9, 2]);
    expect(m.f16Nodes.layer_norm).toBeUndefined();
    const ce = m.ops.find((o) => o.op === 'cross_entropy')!;
    expect([ce.rule, ce.dtype, ce.source]).toEqual(['f32', 'f32', "loss = F.crossEntropy(logits.view(-1, logits.size(-1)), targets.view(-1), { ignoreIndex: -1 });"]);
    expect(ce.reason).toMatch(/^cross_entropy is on autocast's f32 list: cast to f32 %\d+ -> %\d+$/);
    const attn = m.ops.filter((o) => o.op === 'fused_attention');
    expect(attn.map((o) => [o.rule, o.dtype, o.module])).toEqual([['f16', 'f16', 'transformer.h.0.attn'], ['f16', 'f16', 'transformer.h.1.attn']]);
    expect(attn[0].reason).toMatch(/q and k scaled by d\^-1\/4 each before q k\^T \(pre_qk\)/);
    // Every cast autocast made is named once; hoist_casts then merges the three casts of q, k and v of
    // each block into one of c_attn's output, 2 fewer a block.
    expect(m.casts).toBe(m.ops.reduce((n, o) => n + (o.reason.match(/ -> %/g) ?? []).length, 0) - 2 * SMALL_GPT.n_layer);
    expect(r.device).toMatchObject({ backend: 'cpu', f16: true });
  });

  it('has no mixed-precision section without --dtype float16', async () => {
    expect(await nanogpt(false)).not.toMatch(/Mixed precision/);
    expect((JSON.parse(await nanogpt(false, '--json')) as MixedReport).mixedPrecision).toBeNull();
  });
});

describe('kiln explain on the near-miss model', () => {
  it('prints the golden report, text and json', async () => {
    await expect(await nearMiss()).toMatchFileSnapshot('./__snapshots__/cli/explain.near-miss.txt');
    await expect(await nearMiss('--json')).toMatchFileSnapshot('./__snapshots__/cli/explain.near-miss.json');
  });

  // [module, fused, kernel, reason, the site's enclosing method]
  const expected: [string, boolean, string | null, RegExp, string][] = [
    ['transformer.h.0.attn', true, 'flash_causal', /^mask %\d+ proved lower-triangular over \[8,8\]$/, 'SelfAttention.forward'],
    ['transformer.h.1.attn', false, null, /^interior value %\d+ = softmax is also used by a graph output$/, 'ReturnsWeights.forward'],
    ['transformer.h.2.attn', true, 'flash_masked', /^mask %\d+ is not causal: element \[3, 1\] .* query 3 does not attend to key 1/, 'SelfAttention.forward'],
    ['transformer.h.3.attn', false, null, /^expected softmax over the last dim but %\d+ = softmax has dim=-2$/, 'SoftmaxOverQueries.forward'],
    ['transformer.h.4.attn', false, null, /^the masked_fill value is -10000, not -inf$/, 'FiniteFill.forward'],
  ];
  for (const [module, fused, kernel, reason, fn] of expected) {
    it(`reports ${module} as ${fused ? `fused onto ${kernel}` : 'not fused'}, saying why, in ${fn}`, async () => {
      const r = await report(nearMiss('--json'));
      const site = r.sites.find((s) => s.module === module)!;
      expect([site.fused, site.kernel, site.rule, site.function]).toEqual([fused, kernel, 'attention_chain', fn]);
      expect(site.reason).toMatch(reason);
    });
  }

  it('prints each refusal with its reason and the source line it points at', async () => {
    const text = await nearMiss();
    const blocks = text.trimEnd().split('\n\n');
    const refusals = blocks.filter((b) => b.startsWith('NOT FUSED'));
    expect(refusals).toHaveLength(3);
    for (const b of refusals) {
      const [head, , ...context] = b.split('\n');
      expect(head).toMatch(/^NOT FUSED {2}transformer\.h\.\d\.attn {2}examples\/near-miss\/model\.ts:\d+:\d+ {2}rule attention_chain declined: /);
      expect(context).toHaveLength(5);
      expect(context.filter((l) => l.startsWith('  >'))).toHaveLength(1);
      expect(context[2]).toMatch(/^ {2}> +\d+ \| +const weights = F\.softmax\(/);
    }
    expect(blocks.at(-1)).toBe('5 attention sites: 2 fused (1 causal), 3 not fused');
  });
});

describe('source context', () => {
  it('is absent where the model file cannot be read, and the site is still reported', async () => {
    const loc = { file: 'no/such/model.ts', line: 3, col: 5 };
    expect(await sourceContext(loc)).toBeNull();
    const site: SiteReport = { fused: false, rule: null, kernel: null, reason: 'q, k and v must be tensors', loc: 'no/such/model.ts:3:5', module: 'attn', op: 'softmax', node: 7, function: null };
    expect(formatSite(site, null)).toBe('NOT FUSED  attn  no/such/model.ts:3:5  q, k and v must be tensors\n  %7 softmax');
  });

  it('clips the window at the start of the file', async () => {
    const ctx = await sourceContext({ file: NANOGPT, line: 1, col: 1 });
    expect(ctx!.lines.map((l) => l.slice(0, 6))).toEqual(['> 1 | ', '  2 | ', '  3 | ']);
    expect(ctx!.enclosing).toBeUndefined();
  });
});

// kiln explain: for each attention site (each softmax or sdpa of the graph attention fusion saw), whether
// it was fused, by which rule, onto which kernel and why, or the first constraint that failed, with the
// user's source line and the lines around it.

import { formatLoc } from '../../ir/errors.ts';
import type { Decision } from '../../passes/index.ts';
import type { Command } from './main.ts';
import { MODEL_FLAGS, modelSession } from './model.ts';
import { type SourceContext, sourceContext } from './source.ts';

/** One attention site as `kiln explain --json` reports it. */
export interface SiteReport {
  readonly fused: boolean;
  /** The rule that fused the site, or the rule that got furthest before it declined (null when none applied). */
  readonly rule: string | null;
  /** The kernel the picker chose (flash_causal, flash_masked, flash); null when not fused. */
  readonly kernel: string | null;
  /** Why that kernel, or why not fused: the first constraint that failed. */
  readonly reason: string;
  /** `FILE:LINE:COL` of the site, as `kiln dump --format json` writes locs; null when unknown. */
  readonly loc: string | null;
  /** The module whose forward() holds the site, by state-dict prefix (`transformer.h.0.attn`). */
  readonly module: string | null;
  readonly op: string;
  /** The site's node id in the graph before fusion (`kiln dump --stage canonical`). */
  readonly node: number;
  /** The function or method around the site's line, when the source could be read. */
  readonly function: string | null;
}

export const explainCommand: Command = {
  spec: {
    name: 'explain',
    summary: 'say for each attention site whether it was fused, onto which kernel and why, with its source line',
    usage: 'kiln explain MODEL.ts [--weights W.safetensors] [--config JSON] [--batch B] [--seq T] [--json]',
    example: `kiln explain examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96,"flash":false}' --batch 2 --seq 8`,
    positionals: ['MODEL.ts'],
    flags: [...MODEL_FLAGS, { name: 'json', kind: 'boolean', help: 'print {"sites": [...], "fused": n, "notFused": m} instead of text' }],
  },

  async run(args, mod) {
    // The cpu backend: explaining needs the passes' decisions, not a GPU.
    const session = await modelSession('explain', args, mod, { backend: 'cpu' });
    const decisions = session.compilation.passes.decisions.filter((d) => d.pass === 'fuse_attention');
    const contexts = await Promise.all(decisions.map((d) => (d.site.loc ? sourceContext(d.site.loc) : null)));
    const sites = decisions.map((d, i) => siteReport(d, contexts[i]));
    if (args.flags.get('json')) {
      console.log(JSON.stringify({ sites, fused: sites.filter((s) => s.fused).length, notFused: sites.filter((s) => !s.fused).length }, null, 2));
      return;
    }
    for (const [i, site] of sites.entries()) console.log(formatSite(site, contexts[i]) + '\n');
    console.log(summary(sites));
  },
};

export function siteReport(d: Decision, context: SourceContext | null): SiteReport {
  return {
    fused: d.applied,
    rule: d.rule ?? null,
    kernel: d.kernel ?? null,
    reason: d.reason,
    loc: d.site.loc ? formatLoc(d.site.loc) : null,
    module: d.site.scope ?? null,
    op: d.site.op,
    node: d.site.id,
    function: context?.enclosing ?? null,
  };
}

/** `FUSED      transformer.h.0.attn  model.ts:96:15  rule attention_chain -> flash_causal: mask %31 ...`, then the source. */
export function formatSite(site: SiteReport, context: SourceContext | null): string {
  const verdict = site.fused
    ? `rule ${site.rule} -> ${site.kernel ?? 'fused_attention'}: ${site.reason}`
    : site.rule
      ? `rule ${site.rule} declined: ${site.reason}`
      : site.reason;
  const lines = [`${(site.fused ? 'FUSED' : 'NOT FUSED').padEnd(9)}  ${site.module ?? '(top level)'}  ${site.loc ?? '(no source line)'}  ${verdict}`];
  lines.push(`  %${site.node} ${site.op}${site.function ? ` in ${site.function}` : ''}`);
  if (context) lines.push(...context.lines.map((l) => `  ${l}`));
  return lines.join('\n');
}

/** `2 attention sites: 2 fused (2 causal), 0 not fused`. */
export function summary(sites: readonly SiteReport[]): string {
  const fused = sites.filter((s) => s.fused);
  const causal = fused.filter((s) => s.kernel === 'flash_causal').length;
  const noun = sites.length === 1 ? 'site' : 'sites';
  return `${sites.length} attention ${noun}: ${fused.length} fused (${causal} causal), ${sites.length - fused.length} not fused`;
}

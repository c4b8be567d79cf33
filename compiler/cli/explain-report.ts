// What `kiln explain` says about each attention site, as data and as text. Browser-safe: it reads no
// files (compiler/cli/source.ts does that, with ts-morph, for the CLI).

import { formatLoc } from '../../ir/errors.ts';
import type { Decision } from '../../passes/index.ts';
import type { SourceContext } from './source.ts';

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

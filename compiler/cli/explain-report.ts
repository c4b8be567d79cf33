// What `kiln explain` says about each attention site and about mixed precision, as data and as text.
// Browser-safe: it reads no files (compiler/cli/source.ts does that, with ts-morph, for the CLI).

import { formatLoc } from '../../ir/errors.ts';
import type { Graph } from '../../ir/graph.ts';
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

/** One op autocast placed (`kiln explain --json`'s mixedPrecision.ops): the dtype it runs in, why, and the casts made for it. */
export interface AutocastSiteReport {
  /** f16 or f32: autocast's list the op is on; promote: mixed float operands run in the widest. */
  readonly rule: string;
  readonly op: string;
  /** The node's id in the `fused` stage (`kiln dump --stage fused`). */
  readonly node: number;
  readonly dtype: string;
  readonly reason: string;
  readonly loc: string | null;
  readonly module: string | null;
  /** The user's source line, trimmed, when it could be read. */
  readonly source: string | null;
}

/** What `kiln explain` says about mixed precision: which nodes compute in f16, and each op autocast placed. */
export interface MixedPrecisionReport {
  readonly autocast: string;
  /** Nodes with an f16 result, by op (casts and leaves not counted), in the `fused` stage. */
  readonly f16Nodes: Readonly<Record<string, number>>;
  /** Cast nodes autocast inserted, as they stand after hoist_casts merged some. */
  readonly casts: number;
  /** Data movements (slice, reshape, transpose, ...) hoist_casts moved a cast above, so they move f16. */
  readonly hoisted: number;
  readonly ops: readonly AutocastSiteReport[];
}

/** The mixed-precision report of a graph after the passes (the `fused` stage) and autocast's decisions. */
export function mixedPrecisionReport(autocast: string, graph: Graph, decisions: readonly Decision[]): MixedPrecisionReport {
  const f16Nodes: Record<string, number> = {};
  let casts = 0;
  for (const n of graph.nodes) {
    if (n.op === 'cast' && n.meta?.rule === 'autocast') casts++;
    else if (n.type.dtype === 'f16' && n.inputs.length > 0 && n.op !== 'cast') f16Nodes[n.op] = (f16Nodes[n.op] ?? 0) + 1;
  }
  const ops = decisions
    .filter((d) => d.pass === 'autocast')
    .map((d) => ({
      rule: d.rule ?? '',
      op: d.site.op,
      node: d.site.id,
      dtype: d.site.type.dtype,
      reason: d.reason,
      loc: d.site.loc ? formatLoc(d.site.loc) : null,
      module: d.site.scope ?? null,
      source: d.site.loc?.text ?? null,
    }));
  const hoisted = decisions.filter((d) => d.pass === 'hoist_casts').length;
  return { autocast, f16Nodes, casts, hoisted, ops };
}

/**
 * `Mixed precision (autocast f16): 9 nodes compute in f16 (matmul x5, ...), 17 casts`, then one line
 * per op autocast placed, with its source line.
 */
export function formatMixedPrecision(r: MixedPrecisionReport): string {
  const counts = Object.entries(r.f16Nodes).sort((a, b) => b[1] - a[1]);
  const total = counts.reduce((n, [, c]) => n + c, 0);
  const lines = [`Mixed precision (autocast ${r.autocast}): ${total} nodes compute in f16 (${counts.map(([op, c]) => `${op} x${c}`).join(', ') || 'none'}), ${r.casts} casts inserted`];
  if (r.hoisted > 0) {
    lines.push(`  hoist_casts moved casts above ${r.hoisted} data movements (merging them), so those move f16 and the casts fold into their producers' kernels; the cast ids below are autocast's, before the move`);
  }
  for (const o of r.ops) {
    lines.push(`  ${o.dtype.padEnd(3)}  %${o.node} ${o.op}  ${o.module ?? '(top level)'}  ${o.loc ?? '(no source line)'}  ${o.reason}`);
    if (o.source) lines.push(`         ${o.source}`);
  }
  return lines.join('\n');
}

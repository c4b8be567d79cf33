// What `kiln kernels --autotune` and `kiln explain --autotune` say about the kernels with alternatives:
// for each node whose lowering has candidates (codegen/autotune.ts), the candidates, the time measured
// for each on this machine's adapter, the pick and the rule's pick (runtime/webgpu/autotune.ts); with
// --train also each attention's backward, flash or composed (compiler/autotune-attention.ts).

import { tuningSiteOf } from '../../codegen/autotune.ts';
import { type Pick, picksOf, tuningKey } from '../../codegen/tuning.ts';
import { formatLoc } from '../../ir/errors.ts';
import { type Graph, type Node, isNode } from '../../ir/graph.ts';
import type { KernelLimits } from '../../ir/limits.ts';

/** One node's kernel choice, as the --json outputs report it. */
export interface AutotuneReport {
  readonly node: number;
  readonly op: string;
  readonly loc: string | null;
  readonly source: string | null;
  /** Every candidate, with its measured time in microseconds (null: not measured). */
  readonly candidates: readonly { readonly name: string; readonly us: number | null }[];
  /** What the kernel uses: the fastest when measured, else the rule's pick. */
  readonly choice: string;
  readonly rule: string;
  /** `timestamp-query` or `wall-clock` (and whether read from the disk cache); why not, when not measured. */
  readonly measured: string;
}

/** The choice of one node under these limits (tuned: runtime/webgpu/autotune.ts's), or null when its op has no alternatives. */
export function autotuneReport(node: Node, limits: KernelLimits | undefined): AutotuneReport | null {
  const site = tuningSiteOf(node.op);
  if (!site) return null;
  const req = { inputs: node.inputs.map((x) => (isNode(x) ? x.type : x)), attrs: node.attrs, out: node.type, limits };
  const candidates = site.candidates(req);
  if (candidates.length === 0) return null;
  const pick: Pick | undefined = picksOf(limits).get(tuningKey(site.op, req));
  const rule = site.rule(req);
  return {
    node: node.id,
    op: node.op,
    loc: node.loc ? formatLoc(node.loc) : null,
    source: node.loc?.text ?? null,
    candidates: candidates.map((c) => ({ name: c.name, us: pick?.ns[c.name] !== undefined ? Math.round(pick.ns[c.name] / 100) / 10 : null })),
    choice: pick?.choice ?? rule,
    rule,
    measured: pick ? `${pick.clock}${pick.from === 'disk cache' ? ', from the disk cache' : ''}` : candidates.length < 2 ? 'one candidate' : 'not measured (past one binding, or autotune off): the rule picks',
  };
}

export function autotuneReports(graph: Graph, limits: KernelLimits | undefined): AutotuneReport[] {
  return graph.nodes.map((n) => autotuneReport(n, limits)).filter((r): r is AutotuneReport => r !== null);
}

/** A training step's attention backward, flash or composed, as measured (compiler/autotune-attention.ts). */
export function attentionBackwardReport(node: Node, pick: Pick): AutotuneReport {
  return {
    node: node.id,
    op: 'fused_attention backward',
    loc: node.loc ? formatLoc(node.loc) : null,
    source: node.loc?.text ?? null,
    candidates: Object.entries(pick.ns).map(([name, ns]) => ({ name, us: Math.round(ns / 100) / 10 })),
    choice: pick.choice,
    rule: pick.rule,
    measured: `${pick.clock}${pick.from === 'disk cache' ? ', from the disk cache' : ''}; forward and backward timed together`,
  };
}

/** `picked medium: largeK8 8312.1 us, medium 6454.4 us, small 9259.3 us (rule: small; timestamp-query)` */
export function formatChoice(r: AutotuneReport): string {
  const times = r.candidates.map((c) => `${c.name} ${c.us === null ? '-' : `${c.us} us`}`).join(', ');
  return `picked ${r.choice}: ${times} (rule: ${r.rule}; ${r.measured})`;
}

/** explain's section: one line per node with alternatives. */
export function formatAutotune(reports: readonly AutotuneReport[], device: string): string {
  const lines = [`Kernel choices (autotune on ${device}):`];
  for (const r of reports) lines.push(`  %${r.node} ${r.op}${r.loc ? ` at ${r.loc}` : ''}${r.source ? `  ${r.source}` : ''}`, `    ${formatChoice(r)}`);
  if (reports.length === 0) lines.push('  no kernel here has alternatives');
  const changed = reports.filter((r) => r.choice !== r.rule).length;
  lines.push(`${reports.length} kernels with alternatives; measurement changed the rule's pick in ${changed}`);
  return lines.join('\n');
}

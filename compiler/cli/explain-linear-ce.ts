// What `kiln explain` says about the loss: each cross_entropy the fused linear + cross-entropy rule saw
// (passes/linear-ce.ts), whether lm_head and the loss were fused into chunks (and how many), or why not.
// Reported as the attention sites are (explain-report.ts's SiteReport), after them.

import type { Decision } from '../../passes/index.ts';
import { type SiteReport, formatSite, siteReport } from './explain-report.ts';
import { type SourceContext, sourceContext } from './source.ts';

export const LINEAR_CE_PASS = 'fuse_linear_cross_entropy';

export interface LossSites {
  readonly sites: readonly SiteReport[];
  readonly contexts: readonly (SourceContext | null)[];
}

/** The pass's decisions as site reports, with their source lines read. */
export async function lossSites(decisions: readonly Decision[]): Promise<LossSites> {
  const mine = decisions.filter((d) => d.pass === LINEAR_CE_PASS);
  const contexts = await Promise.all(mine.map((d) => (d.site.loc ? sourceContext(d.site.loc) : null)));
  return { sites: mine.map((d, i) => siteReport(d, contexts[i])), contexts };
}

/** The sites, then `1 loss site (linear + cross-entropy): 1 fused, 0 not fused`; nothing when the graph has no loss. */
export function formatLossSites({ sites, contexts }: LossSites): string | null {
  if (sites.length === 0) return null;
  const fused = sites.filter((s) => s.fused).length;
  const noun = sites.length === 1 ? 'site' : 'sites';
  return [...sites.map((s, i) => formatSite(s, contexts[i]) + '\n'), `${sites.length} loss ${noun} (linear + cross-entropy): ${fused} fused, ${sites.length - fused} not fused`].join('\n');
}

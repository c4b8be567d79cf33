// kiln explain: for each attention site (each softmax or sdpa of the graph attention fusion saw), whether
// it was fused, by which rule, onto which kernel and why, or the first constraint that failed, with the
// user's source line and the lines around it.

import type { Command } from './main.ts';
import { MODEL_FLAGS, modelSession } from './model.ts';
import { formatSite, siteReport, summary } from './explain-report.ts';
import { sourceContext } from './source.ts';

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


export { formatSite, siteReport, summary, type SiteReport } from './explain-report.ts';

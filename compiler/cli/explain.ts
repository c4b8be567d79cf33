// kiln explain: for each attention site (each softmax or sdpa of the graph attention fusion saw), whether
// it was fused, by which rule, onto which kernel and why, or the first constraint that failed, with the
// user's source line and the lines around it. With --dtype float16, which nodes compute in f16 and
// where autocast put its casts; and whether the device can run f16 at all. With --decode, each site's
// KV-cached decode step (`kiln generate`), or why the model has none (./explain-decode.ts). Before the
// attention sites, each loss site: lm_head and cross_entropy fused into chunks, or why not
// (./explain-linear-ce.ts); --train explains the training step, where the logits are not returned. With
// --autotune, each kernel with alternatives timed on the adapter, and the pick (./autotune-report.ts).

import { stringFlag } from './args.ts';
import { decodeReport, formatDecode } from './explain-decode.ts';
import { formatLossSites, lossSites } from './explain-linear-ce.ts';
import type { Command } from './main.ts';
import { DTYPE_FLAG, MODEL_FLAGS, TRAIN_FLAG, modelSession, positiveInt } from './model.ts';
import { type MixedPrecisionReport, formatMixedPrecision, formatSite, mixedPrecisionReport, siteReport, summary } from './explain-report.ts';
import { sourceContext } from './source.ts';
import { type AutotuneReport, attentionBackwardReport, autotuneReports, formatAutotune } from './autotune-report.ts';
import type { Graph } from '../../ir/graph.ts';

/** What the device does with f16 (`kiln explain --json`'s device). */
interface DeviceReport {
  readonly backend: 'cpu' | 'webgpu';
  readonly description: string;
  /** Whether f16 kernels can run (webgpu: the device has shader-f16). */
  readonly f16: boolean;
  readonly note: string;
}

export const explainCommand: Command = {
  spec: {
    name: 'explain',
    summary: 'say for each attention site whether it was fused, onto which kernel and why, with its source line; with --dtype float16, where autocast runs what',
    usage: 'kiln explain MODEL.ts [--weights W.safetensors] [--config JSON|gpt2] [--batch B] [--seq T] [--dtype float16|float32] [--device cpu|webgpu] [--decode] [--train] [--autotune] [--json]',
    example: `kiln explain examples/nanogpt/model.ts --config '{"n_layer":2,"n_head":2,"n_embd":32,"block_size":32,"vocab_size":96,"flash":false}' --batch 2 --seq 8 --dtype float16`,
    positionals: ['MODEL.ts'],
    flags: [
      ...MODEL_FLAGS,
      DTYPE_FLAG,
      TRAIN_FLAG,
      { name: 'device', kind: 'string', choices: ['cpu', 'webgpu'], default: 'cpu', help: "cpu: the passes' decisions only, no GPU opened; webgpu: also open the adapter and say whether it has shader-f16" },
      { name: 'autotune', kind: 'boolean', help: "also each kernel with alternatives (matmul tilings): every candidate timed on this machine's adapter, the pick and the rule's pick (opens the GPU; picks cached as compile({ autotune: true }) caches them)" },
      { name: 'decode', kind: 'boolean', help: 'also each attention site\'s KV-cached decode step (kiln generate): decode_attention, its splits and caches, where positions come from, kernels per decoded token; or why the model has none' },
      { name: 'json', kind: 'boolean', help: 'print {"sites": [...], "fused": n, "notFused": m, "mixedPrecision": {...} or null, "device": {...}, "lossSites": [...]} instead of text; with --decode also "decode": {"derived", "reason", "batch", "positions", "sites": [...], "kernelsPerToken"}' },
    ],
  },

  async run(args, mod) {
    // Compiled for the cpu backend: explaining needs the passes' decisions, not a GPU.
    const session = await modelSession('explain', args, mod, { backend: 'cpu' });
    const { passes, autocast } = session.compilation;
    const decisions = passes.decisions.filter((d) => d.pass === 'fuse_attention');
    const contexts = await Promise.all(decisions.map((d) => (d.site.loc ? sourceContext(d.site.loc) : null)));
    const sites = decisions.map((d, i) => siteReport(d, contexts[i]));
    const loss = await lossSites(passes.decisions);
    const mixed: MixedPrecisionReport | null = autocast ? mixedPrecisionReport(autocast, passes.stages.get('fused')!, passes.decisions) : null;
    const device = await deviceReport(stringFlag(args, 'device') === 'webgpu');
    const decode = args.flags.get('decode') ? await decodeReport(session.model, positiveInt('explain', args, 'batch'), autocast) : undefined;
    const tuned = args.flags.get('autotune') ? await explainAutotune(passes.stages.get('lowered')!, args.flags.get('train') ? passes.stages.get('fused') : undefined) : undefined;
    if (args.flags.get('json')) {
      console.log(JSON.stringify({ sites, fused: sites.filter((s) => s.fused).length, notFused: sites.filter((s) => !s.fused).length, mixedPrecision: mixed, device, lossSites: loss.sites, ...(decode ? { decode } : {}), ...(tuned ? { autotune: tuned.reports } : {}) }, null, 2));
      return;
    }
    // The loss site first: the attention sites' summary stays the report's last line before the other sections.
    const lossText = formatLossSites(loss);
    if (lossText) console.log(lossText + '\n');
    for (const [i, site] of sites.entries()) console.log(formatSite(site, contexts[i]) + '\n');
    console.log(summary(sites));
    if (mixed) console.log('\n' + formatMixedPrecision(mixed));
    if (mixed || device.backend === 'webgpu') console.log(`\nDevice: ${device.description}: ${device.note}`);
    if (decode) console.log('\n' + formatDecode(decode));
    if (tuned) console.log('\n' + formatAutotune(tuned.reports, tuned.device));
  },
};

/** Each kernel with alternatives, measured on this machine's adapter (runtime/webgpu/autotune.ts); with a training forward, each attention's backward too. */
async function explainAutotune(graph: Graph, trainingForward?: Graph): Promise<{ reports: AutotuneReport[]; device: string }> {
  const { getDevice } = await import('../../runtime/webgpu/index.ts');
  const { autotuneGraph } = await import('../../runtime/webgpu/autotune.ts');
  const { attentionBackwardPicks } = await import('../autotune-attention.ts');
  const kdev = await getDevice();
  const attention = trainingForward ? [...(await attentionBackwardPicks(trainingForward))].map(([node, pick]) => attentionBackwardReport(node, pick)) : [];
  return { reports: [...attention, ...autotuneReports(graph, await autotuneGraph(kdev, graph))], device: kdev.description };
}

/** The device's f16 support: the cpu reference always emulates it; a WebGPU device needs shader-f16. */
async function deviceReport(webgpu: boolean): Promise<DeviceReport> {
  if (!webgpu) {
    return { backend: 'cpu', description: 'cpu reference', f16: true, note: 'emulates f16: every f16 result is rounded to nearest even, as a GPU stores it (--device webgpu asks the adapter)' };
  }
  const { getDevice } = await import('../../runtime/webgpu/index.ts');
  const kdev = await getDevice();
  const note = kdev.f16 ? 'has shader-f16: f16 kernels run' : 'has no shader-f16: f16 kernels fail with KILN_E021; use --dtype float32 here';
  return { backend: 'webgpu', description: kdev.description, f16: kdev.f16, note };
}

export { formatSite, siteReport, summary, type SiteReport } from './explain-report.ts';

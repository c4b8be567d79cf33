// The attention backward as a measured choice (issue 19: on an H100 at T 256 the flash backward took
// 0.96 ms a layer, the composed one 0.72 ms). The candidates are whole subgraphs, not one kernel each:
// `flash` (attention_lse, delta and the fused_attention_backward kernels, ir/ops/attention_backward.ts)
// and `composed` (the recomputed softmax chain of matmuls and elementwise ops, ir/ops/attention.ts's
// attentionBackward). For each distinct fused_attention of a training step's forward, both are built
// by autograd from a one-node graph at its real shapes, run through the training step's passes, lowered
// and timed on this device (the forward kernel, the same in both, included); the faster goes into the
// node's meta.backward, which its gradient rule reads. Without autotune the rule picks flash wherever
// its kernels fit. Picks share the kernel autotuner's caches (runtime/webgpu/autotune.ts).
// This ties autograd, passes, codegen and the runtime together, so it lives in compiler/.

import { lowerGraph } from '../codegen/index.ts';
import { type Pick, tuningKey } from '../codegen/tuning.ts';
import { differentiate } from '../ir/autograd.ts';
import { Graph, type Node, isNode, rebuildGraph } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { DTYPE_INFO } from '../ir/dtypes.ts';
import type { KernelLimits } from '../ir/limits.ts';
import { log } from '../ir/log.ts';
import { attentionDims } from '../ir/ops/attention.ts';
import { flashBackwardFits } from '../ir/ops/attention_backward.tiling.ts';
import { getOp } from '../ir/registry.ts';
import { numel } from '../ir/types.ts';
import { DEFAULT_PIPELINE } from '../passes/index.ts';
import { runPasses } from '../passes/manager.ts';
import { devicePicks, savePicks } from '../runtime/webgpu/autotune.ts';
import { Executor, type KilnDevice, getDevice } from '../runtime/webgpu/index.ts';
import { KernelTimer } from '../runtime/webgpu/timing.ts';

/** The two backwards, the rule's first. */
export const ATTENTION_BACKWARDS = ['flash', 'composed'] as const;
export type AttentionBackward = (typeof ATTENTION_BACKWARDS)[number];

const ROUNDS = 3;

/** The pick's key: what the forward node computes, at which types. */
export function attentionBackwardKey(node: Node, limits?: KernelLimits): string {
  return tuningKey('attention_backward', { inputs: node.inputs.map((x) => (isNode(x) ? x.type : x)), attrs: node.attrs, out: node.type, limits });
}

/** Each fused_attention of the graph with its measured backward (measured now, or earlier on this device). */
export async function attentionBackwardPicks(graph: Graph): Promise<Map<Node, Pick>> {
  const chosen = new Map<Node, Pick>();
  const attention = graph.nodesOf('fused_attention');
  if (attention.length === 0) return chosen;
  const kdev = await getDevice();
  const { picks } = await devicePicks(kdev);
  let measured = 0;
  for (const node of attention) {
    const key = attentionBackwardKey(node);
    let pick = picks.get(key);
    if (!pick) {
      const made = await measureAttentionBackward(kdev, node);
      if (!made) continue;
      picks.set(key, (pick = made));
      measured++;
    }
    chosen.set(node, pick);
  }
  if (measured > 0) await savePicks(kdev);
  return chosen;
}

/** The forward graph with each fused_attention's measured backward in its meta (`backward`), for autograd to follow. */
export async function tuneAttentionBackward(graph: Graph): Promise<Graph> {
  const chosen = await attentionBackwardPicks(graph);
  if (chosen.size === 0) return graph;
  return rebuildGraph(graph, (node, r) => {
    const pick = chosen.get(node);
    return pick ? r.out.addRaw({ ...node, inputs: node.inputs.map(r.mapped), meta: { ...node.meta, backward: pick.choice } }) : undefined;
  });
}

/** Both backwards of one attention node timed on this device; null where only the composed one fits. */
export async function measureAttentionBackward(kdev: KilnDevice, node: Node): Promise<Pick | null> {
  const [q, k, v] = node.inputs as Node[];
  const { d, dv } = attentionDims(q.type, k.type, v.type);
  if (!flashBackwardFits(d, dv, q.type.dtype)) return null;
  const ns: number[] = [];
  for (const choice of ATTENTION_BACKWARDS) ns.push(await timeBackward(kdev, node, choice));
  const times = Object.fromEntries(ATTENTION_BACKWARDS.map((c, i) => [c, ns[i]]));
  const choice = ATTENTION_BACKWARDS[ns.indexOf(Math.min(...ns))];
  const clock = kdev.device.features.has('timestamp-query') ? 'timestamp-query' : 'wall-clock';
  log('autotune', `picked the ${choice} attention backward for %${node.id} fused_attention`, { rule: 'flash', clock, ...Object.fromEntries(Object.entries(times).map(([c, t]) => [c, `${(t / 1000).toFixed(1)}us`])) });
  return { choice, rule: 'flash', ns: times, clock, from: 'measured' };
}

/** Best-of-ROUNDS nanoseconds of the forward and one backward of `node`, as the training step's passes lower them. */
async function timeBackward(kdev: KilnDevice, node: Node, choice: AttentionBackward): Promise<number> {
  const g = new Graph();
  const leaves = node.inputs.map((x, i) => (isNode(x) ? g.add('input', [], { name: `x${i}`, dtype: x.type.dtype, shape: [...x.type.shape] }) : x));
  const y = g.add('fused_attention', leaves, node.attrs, node.loc, node.scope, { backward: choice });
  const gradOut = g.add('input', [], { name: 'grad_out', dtype: y.type.dtype, shape: [...y.type.shape] });
  const loss = g.add('sum', [g.add('mul', [y, gradOut])], { dims: y.type.shape.map((_, i) => i), keepdim: false });
  g.setOutputs([{ name: 'loss', node: loss }]);
  const step = runPasses(differentiate(g, loss, leaves.slice(0, 3) as Node[]), DEFAULT_PIPELINE, { passes: { fuse_attention: false } }).graph;
  const exec = await Executor.create(kdev, lowerGraph(step, kdev.limits));
  // Inputs get scratch values; constants (constant folding's) their folded ones.
  const feeds = new Map<Node, HostTensor>(step.nodes.filter((n) => getOp(n.op).leaf).map((n) => [n, step.constants.get(String(n.attrs.name)) ?? scratch(n)]));
  const timer = new KernelTimer(kdev);
  let best = Infinity;
  try {
    for (let round = 0; round <= ROUNDS; round++) {
      exec.run(feeds, timer);
      const total = (await timer.collect()).reduce((sum, t) => sum + t.ns, 0);
      if (round > 0) best = Math.min(best, total);
      log('autotune', `measured the ${choice} attention backward for %${node.id} fused_attention`, { round, us: (total / 1000).toFixed(1), warmup: round === 0 || undefined });
    }
  } finally {
    timer.destroy();
    exec.destroy();
  }
  return best;
}

/** Values to time with: floats in [-1, 1) (no NaN paths), everything else 1 (a bool mask keeps every key). */
function scratch(n: Node): HostTensor {
  const info = DTYPE_INFO[n.type.dtype];
  const data = info.hostArray(numel(n.type.shape), 'f32');
  let seed = 12345;
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    data[i] = info.isFloat ? seed / 2 ** 31 - 1 : 1;
  }
  return { type: n.type, data };
}

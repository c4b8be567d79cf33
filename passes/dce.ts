// Dead-code elimination: keep only nodes that an output depends on. Ids are kept, so dumps diff cleanly.

import { Graph, type Node, isNode } from '../ir/graph.ts';
import type { Pass } from './manager.ts';

export function eliminateDeadCode(graph: Graph): Graph {
  const live = new Set<Node>();
  const stack = graph.outputs.map((o) => o.node);
  while (stack.length) {
    const n = stack.pop()!;
    if (live.has(n)) continue;
    live.add(n);
    for (const x of n.inputs) if (isNode(x)) stack.push(x);
  }
  if (live.size === graph.nodes.length) return graph;
  const out = new Graph(graph.nextFreeId());
  for (const n of graph.nodes) {
    if (!live.has(n)) continue;
    out.addRaw(n);
    if (n.op === 'constant') out.constants.set(String(n.attrs.name), graph.constants.get(String(n.attrs.name))!);
  }
  out.setOutputs(graph.outputs);
  return out;
}

/** DCE runs at the end of the canonical stage (so fusion sees true use counts) and after fusion; `dce` switches both off. */
export const deadCodeElimination = (stage: Pass['stage']): Pass => ({
  name: 'dce',
  stage,
  description: 'removes nodes no output depends on',
  run: eliminateDeadCode,
});

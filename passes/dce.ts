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
  const out = new Graph();
  for (const n of graph.nodes) if (live.has(n)) out.addRaw(n);
  out.setOutputs(graph.outputs);
  return out;
}

export const deadCodeElimination: Pass = {
  name: 'dce',
  stage: 'canonical',
  description: 'removes nodes no output depends on',
  run: eliminateDeadCode,
};

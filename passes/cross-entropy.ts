// A big cross_entropy runs row-parallel: cross_entropy_rows gives each row's loss (a workgroup per
// row), and the mean over kept rows becomes a sum divided by a count. The cross_entropy kernel itself
// is one workgroup walking every row: fine for the small losses tests and the CPU use, 470 ms for
// GPT-2's [8192, 50304] logits on an H100. Runs in the lowered stage, after autograd has used
// cross_entropy's own gradient rule.

import { type Graph, type Node, isNode, rebuildGraph } from '../ir/graph.ts';
import { numel } from '../ir/types.ts';
import type { Pass } from './manager.ts';

/** Logits at least this big (rows x classes) go row-parallel. */
export const ROW_PARALLEL_ELEMENTS = 1 << 16;

export function rowParallelCrossEntropy(graph: Graph): Graph {
  const big = (n: Node) => n.op === 'cross_entropy' && isNode(n.inputs[0]) && numel(n.inputs[0].type.shape) >= ROW_PARALLEL_ELEMENTS;
  if (!graph.nodes.some(big)) return graph;
  return rebuildGraph(graph, (node, { out, mapped }) => {
    if (!big(node)) return undefined;
    const [logits, targets] = node.inputs.map(mapped) as Node[];
    const add = (op: string, xs: (Node | number)[], attrs = {}) => out.add(op, xs, attrs, node.loc, node.scope);
    const ignore = typeof node.attrs.ignoreIndex === 'number' ? node.attrs.ignoreIndex : -100;
    const rows = add('cross_entropy_rows', [logits, targets], { ignoreIndex: ignore });
    const kept = add('cast', [add('ne', [targets, ignore])], { dtype: 'f32' });
    // Mean over kept rows; 0 / 0 (every row ignored) is NaN, as PyTorch.
    return add('div', [add('sum', [rows], { dims: [0], keepdim: false }), add('sum', [kept], { dims: [0], keepdim: false })]);
  });
}

export const crossEntropyRows: Pass = {
  name: 'cross_entropy_rows',
  stage: 'lowered',
  description: 'runs a big cross_entropy row-parallel: a loss per row, then their mean over kept rows',
  run: (graph) => rowParallelCrossEntropy(graph),
};

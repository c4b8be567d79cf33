// A big cross_entropy runs row-parallel: cross_entropy_rows gives each row's loss (a workgroup per
// row), and the mean over kept rows becomes a sum divided by a count. The cross_entropy kernel itself
// is one workgroup walking every row: fine for the small losses tests and the CPU use, 470 ms for
// GPT-2's [8192, 50304] logits on an H100. Runs in the lowered stage, after autograd has used
// cross_entropy's own gradient rule. One rule, run by the rewrite engine.

import type { Graph } from '../ir/graph.ts';
import { numel } from '../ir/types.ts';
import type { Pass } from './manager.ts';
import { type Rule, capture, op, rewriteGraph } from './pattern.ts';

/** Logits at least this big (rows x classes) go row-parallel. */
export const ROW_PARALLEL_ELEMENTS = 1 << 16;

export const ROW_PARALLEL_CROSS_ENTROPY: Rule = {
  name: 'row_parallel_cross_entropy',
  description: 'cross_entropy(logits, targets) over big logits becomes sum(cross_entropy_rows) / count of kept rows',
  pattern: op('cross_entropy', [capture('logits'), capture('targets')], { name: 'loss' }),
  where: (m) => {
    const logits = m.node('logits');
    return numel(logits.type.shape) >= ROW_PARALLEL_ELEMENTS ? true : `the logits have ${numel(logits.type.shape)} elements, fewer than ${ROW_PARALLEL_ELEMENTS}`;
  },
  build: (m, b) => {
    const attrs = m.node('loss').attrs;
    const [logits, targets] = [m.operand('logits'), m.operand('targets')];
    const ignore = typeof attrs.ignoreIndex === 'number' ? attrs.ignoreIndex : -100;
    const rows = b.add('cross_entropy_rows', [logits, targets], { ignoreIndex: ignore });
    const kept = b.add('cast', [b.add('ne', [targets, ignore])], { dtype: 'f32' });
    // Mean over kept rows; 0 / 0 (every row ignored) is NaN, as PyTorch.
    return b.add('div', [b.add('sum', [rows], { dims: [0], keepdim: false }), b.add('sum', [kept], { dims: [0], keepdim: false })]);
  },
};

export function rowParallelCrossEntropy(graph: Graph): Graph {
  return rewriteGraph(graph, [ROW_PARALLEL_CROSS_ENTROPY]).graph;
}

export const crossEntropyRows: Pass = {
  name: 'cross_entropy_rows',
  stage: 'lowered',
  description: 'runs a big cross_entropy row-parallel: a loss per row, then their mean over kept rows',
  run: (graph) => rowParallelCrossEntropy(graph),
};

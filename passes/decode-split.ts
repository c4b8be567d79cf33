// Flash-decoding: a decode_attention over a long cache is split across workgroups. kiln lowers one
// op to one kernel, so the split form is two ops (ir/ops/decode_attention.ts): decode_attention_partial
// (a workgroup per (b, h) row and split, each writing its keys' max, sum and weighted v) and
// decode_attention_merge (the log-sum-exp rescaling). The split count is the node's `splits` attr, or
// where absent or 0 decodeSplits' choice from S and the number of (b, h) rows; with one split the node
// stays, and runs as the whole kernel. Runs in the lowered stage; one rule, run by the rewrite engine.

import type { Graph } from '../ir/graph.ts';
import { decodeDims, decodeSpec, decodeSplits } from '../ir/ops/decode_attention.ts';
import type { Pass } from './manager.ts';
import { type Rule, capture, op, rewriteGraph } from './pattern.ts';

const OPERANDS = ['q', 'k_cache', 'v_cache', 'k_new', 'v_new', 'pos'];

/** The split count of a decode_attention node: as asked, or chosen. */
function splitsOf(node: Graph['nodes'][number]): number {
  const { rows, s } = decodeDims('decode_attention', node.inputs.map((x) => (typeof x === 'number' ? x : x.type)), node.attrs);
  return decodeSplits(rows, s, decodeSpec('decode_attention', node.attrs, node.type.dtype).splits);
}

export const SPLIT_DECODE_ATTENTION: Rule = {
  name: 'split_decode_attention',
  description: 'decode_attention over a long cache becomes decode_attention_partial (a workgroup per row and split) + decode_attention_merge',
  pattern: op('decode_attention', OPERANDS.map((name) => capture(name)), { name: 'attention' }),
  where: (m) => {
    const splits = splitsOf(m.node('attention'));
    return splits > 1 ? true : 'one split: the whole kernel runs it';
  },
  build: (m, b) => {
    const node = m.node('attention');
    const spec = decodeSpec('decode_attention', node.attrs, node.type.dtype);
    const splits = splitsOf(node);
    const partial = b.add('decode_attention_partial', OPERANDS.map((name) => m.operand(name)), { scale: spec.scale, scaling: spec.scaling, splits, ...(node.attrs.columns ? { columns: node.attrs.columns } : {}) });
    return b.add('decode_attention_merge', [partial], { dtype: node.type.dtype });
  },
};

export function splitDecodeAttention(graph: Graph): Graph {
  return rewriteGraph(graph, [SPLIT_DECODE_ATTENTION]).graph;
}

export const decodeSplit: Pass = {
  name: 'decode_split',
  stage: 'lowered',
  description: 'splits a decode attention over a long KV cache across workgroups (flash-decoding): partial softmaxes, then a merge',
  run: (graph) => splitDecodeAttention(graph),
};

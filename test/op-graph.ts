// The per-op GPU tests' case (ops.gpu.test.ts, f16-ops.gpu.test.ts): one op node over input leaves,
// with the host tensors that feed them.

import { Graph, type Node, type Operand } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';

export interface OpCase {
  graph: Graph;
  feeds: Map<Node, HostTensor>;
}

/** A graph of input leaves (one per tensor operand; numbers stay scalar literals) and one `op` node as output `y`. */
export function singleOp(op: string, operands: (HostTensor | number)[], attrs: Record<string, unknown> = {}): OpCase & { node: Node } {
  const graph = new Graph();
  const feeds = new Map<Node, HostTensor>();
  const inputs: Operand[] = operands.map((x, i) => {
    if (typeof x === 'number') return x;
    const leaf = graph.add('input', [], { name: `x${i}`, dtype: x.type.dtype, shape: [...x.type.shape] });
    feeds.set(leaf, x);
    return leaf;
  });
  const node = graph.add(op, inputs, attrs as never);
  graph.setOutputs([{ name: 'y', node }]);
  return { graph, feeds, node };
}

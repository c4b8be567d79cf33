// The CPU reference interpreter: runs a graph node by node with each op's CPU reference, in f32 or f64.
// It is the test oracle and the `cpu` backend (the torch.fx Interpreter, for kiln's IR).

import { KilnError, formatLoc } from '../ir/errors.ts';
import { type Graph, type Node, isNode } from '../ir/graph.ts';
import { type HostTensor, type Precision, roundOutput, withPrecision } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { formatType, sameType } from '../ir/types.ts';

/** Values for leaf nodes: inputs by name, parameters and buffers by state-dict key. */
export type LeafFeed = (node: Node) => HostTensor;

export function interpret(graph: Graph, feed: LeafFeed, precision: Precision = 'f32'): Map<string, HostTensor> {
  const values = new Map<Node, HostTensor>();
  for (const node of graph.nodes) {
    const def = getOp(node.op, node.loc);
    if (def.leaf) {
      const value = feed(node);
      if (!sameType(value.type, node.type)) {
        throw new KilnError('KILN_E014', `${node.op} "${String(node.attrs.name)}" was given ${formatType(value.type)}, the graph expects ${formatType(node.type)}`, node.loc);
      }
      values.set(node, withPrecision(value, precision));
      continue;
    }
    const args = node.inputs.map((x) => (isNode(x) ? values.get(x)! : x));
    try {
      values.set(node, { type: node.type, data: roundOutput(node.type.dtype, def.cpu(args, node.attrs, node.type, precision), precision) });
    } catch (e) {
      if (e instanceof KilnError) throw e.at(node.loc);
      const where = node.loc ? ` at ${formatLoc(node.loc)}` : '';
      throw new Error(`CPU reference of ${node.op}${where} failed: ${(e as Error).message}`);
    }
  }
  return new Map(graph.outputs.map((o) => [o.name, values.get(o.node)!]));
}

// When two nodes, or two graphs, compute the same thing: op, operands and attrs. Ids, source
// locations, module scopes and meta (the rule, kernel and reason a pass recorded) are left out, so CSE
// merges nodes that differ only in those and graphs built by different rules compare equal.

import { type Graph, type Node, type Operand, isNode } from './graph.ts';
import { formatAttr } from './text.ts';

/** What a node computes, as a string: equal keys, equal values. `ref` names a node operand. */
export function computeKey(node: Node, ref: (x: Node) => string = (x) => `%${x.id}`, inputs: readonly Operand[] = node.inputs): string {
  const operands = inputs.map((x) => (isNode(x) ? ref(x) : formatAttr(x))).join(', ');
  const attrs = Object.entries(node.attrs).map(([k, v]) => `${k}=${formatAttr(v)}`).join(', ');
  return `${node.op}(${operands}) {${attrs}} : ${node.type.dtype}[${node.type.shape.join(',')}]`;
}

/** A graph line by line with nodes named by position (#0, #1, ...): equal lists, the same computation. */
export function graphStructure(graph: Graph): string[] {
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  const ref = (x: Node) => `#${position.get(x)}`;
  return [...graph.nodes.map((n) => computeKey(n, ref)), `output ${graph.outputs.map((o) => `${o.name}=${ref(o.node)}`).join(', ')}`];
}

/** Two graphs compute the same outputs the same way, whatever their ids, locations and meta. */
export function sameGraph(a: Graph, b: Graph): boolean {
  const [x, y] = [graphStructure(a), graphStructure(b)];
  return x.length === y.length && x.every((line, i) => line === y[i]);
}

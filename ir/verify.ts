// The verifier, run after tracing and between passes: every use defined above it (so no cycles),
// ids unique, types re-inferred from the registry and equal to the recorded ones, outputs present.

import { KilnError } from './errors.ts';
import { type Graph, type Node, isNode } from './graph.ts';
import { checkOperands } from './operands.ts';
import { getOp } from './registry.ts';
import { printNode } from './text.ts';
import { formatType, sameType } from './types.ts';

export function verifyGraph(graph: Graph, after = 'trace'): void {
  const defined = new Set<Node>();
  const ids = new Set<number>();
  const leafNames = new Map<string, Node>();
  const bad = (node: Node, why: string): never => {
    throw new KilnError('KILN_E012', `IR invalid after ${after}: ${why}, at ${printNode(node)}`, node.loc);
  };
  for (const node of graph.nodes) {
    if (ids.has(node.id)) bad(node, `value %${node.id} is defined twice`);
    ids.add(node.id);
    const def = getOp(node.op, node.loc);
    for (const x of node.inputs) {
      if (isNode(x) && !defined.has(x)) bad(node, `input %${x.id} is not defined before its use`);
      if (!isNode(x) && typeof x !== 'number') bad(node, 'an input is neither a value nor a number');
    }
    const count = checkOperands(def, node.inputs.length, node.attrs);
    if (count !== true) bad(node, count);
    let inferred;
    try {
      inferred = def.infer(node.inputs.map((x) => (isNode(x) ? x.type : x)), node.attrs);
    } catch (e) {
      if (e instanceof KilnError) bad(node, e.detail);
      throw e;
    }
    if (!sameType(inferred, node.type)) bad(node, `recorded type ${formatType(node.type)} but the op gives ${formatType(inferred)}`);
    if (def.leaf) {
      const key = `${node.op}:${String(node.attrs.name)}`;
      if (leafNames.has(key)) bad(node, `${node.op} "${String(node.attrs.name)}" appears twice`);
      leafNames.set(key, node);
    }
    defined.add(node);
  }
  if (graph.outputs.length === 0) throw new KilnError('KILN_E012', `IR invalid after ${after}: the graph has no outputs`);
  const names = new Set<string>();
  for (const o of graph.outputs) {
    if (!defined.has(o.node)) throw new KilnError('KILN_E012', `IR invalid after ${after}: output ${o.name} reads %${o.node.id}, which is not in the graph`);
    if (names.has(o.name)) throw new KilnError('KILN_E012', `IR invalid after ${after}: output name ${o.name} is used twice`);
    names.add(o.name);
  }
}

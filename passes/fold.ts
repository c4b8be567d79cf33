// Constant folding and common-subexpression elimination.
// Registered buffers (nanoGPT's causal `bias`) are compile-time constants, so `bias[:, :, :T, :T] == 0`
// folds to one constant mask that the attention fusion can then prove causal.

import { computeKey } from '../ir/equal.ts';
import { type Graph, type Node, isNode, rebuildGraph } from '../ir/graph.ts';
import { type HostTensor, roundOutput } from '../ir/host.ts';
import { getOp } from '../ir/registry.ts';
import { numel } from '../ir/types.ts';
import type { Pass, PassContext } from './manager.ts';

/** Folding larger values would trade a cheap kernel for a big upload; 16M elements covers T = 4096 masks. */
const MAX_FOLDED_ELEMENTS = 1 << 24;

/** The compile-time value of a node, if it has one: buffers, folded constants, and ops over them (by their CPU reference). */
export function constantValues(graph: Graph, bufferValue: PassContext['bufferValue']): (node: Node) => HostTensor | undefined {
  const known = new Map<Node, HostTensor | null>();
  const valueOf = (node: Node): HostTensor | undefined => {
    if (known.has(node)) return known.get(node) ?? undefined;
    const def = getOp(node.op);
    let value: HostTensor | undefined;
    if (node.op === 'buffer') value = bufferValue(String(node.attrs.name));
    else if (node.op === 'constant') value = graph.constants.get(String(node.attrs.name));
    else if (!def.leaf && numel(node.type.shape) <= MAX_FOLDED_ELEMENTS) {
      const args = node.inputs.map((x) => (isNode(x) ? valueOf(x) : x));
      if (args.every((a) => a !== undefined)) {
        value = { type: node.type, data: roundOutput(node.type.dtype, def.cpu(args as (HostTensor | number)[], node.attrs, node.type, 'f32'), 'f32') };
      }
    }
    known.set(node, value ?? null);
    return value;
  };
  return valueOf;
}

export function foldConstants(graph: Graph, ctx: PassContext): Graph {
  const valueOf = constantValues(graph, ctx.bufferValue);
  return rebuildGraph(
    graph,
    (node, { out }) => {
      // Fold ops that read other constants; factories alone (full, arange) stay: a kernel is cheaper than an upload.
      const readsTensors = node.inputs.some(isNode);
      const value = readsTensors && !getOp(node.op).leaf ? valueOf(node) : undefined;
      if (!value) return undefined;
      const name = `c${node.id}`;
      out.constants.set(name, value);
      return out.addRaw({ id: node.id, op: 'constant', inputs: [], attrs: { name, dtype: node.type.dtype, shape: [...node.type.shape] }, type: node.type, loc: node.loc });
    },
    new Map(graph.constants),
  );
}

/** Nodes with the same op, operands and attrs compute the same value (meta aside): keep the first. */
export function eliminateCommonSubexpressions(graph: Graph): Graph {
  const seen = new Map<string, Node>();
  return rebuildGraph(graph, (node, { mapped, keep }) => {
    const key = computeKey(node, undefined, node.inputs.map(mapped));
    const twin = seen.get(key);
    if (twin) return twin;
    const kept = keep(node);
    seen.set(key, kept);
    return kept;
  });
}

export const constantFolding: Pass = {
  name: 'constant_fold',
  stage: 'canonical',
  description: 'computes at compile time what depends only on buffers and constants (e.g. the causal mask)',
  run: foldConstants,
};

export const commonSubexpressions: Pass = {
  name: 'cse',
  stage: 'canonical',
  description: 'merges nodes that compute the same value',
  run: (graph) => eliminateCommonSubexpressions(graph),
};

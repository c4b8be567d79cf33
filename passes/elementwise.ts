// Elementwise fusion: a chain of float elementwise ops whose intermediate values have one user each
// becomes one fused_elementwise node, one kernel instead of one per op (nanoGPT: the bias add and
// GELU of the MLP, the bias add and residual add after each projection). Casts between floats join
// chains too, so under autocast a matmul's f16 result is cast up, has its bias added and GELU
// applied, and is cast down for the next matmul in one kernel: the casts stay visible in the IR
// (in the chain's expr) but cost no kernel of their own. Inside the chain values are f32.

import { DTYPE_INFO } from '../ir/dtypes.ts';
import { type Graph, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { type Expr, exprOpOf, formatExpr, parseExpr } from '../ir/ops/fused_elementwise.ts';
import { getOp } from '../ir/registry.ts';
import { sameShape } from '../ir/types.ts';
import type { Pass } from './manager.ts';

/** A kernel binds its inputs and its output as storage buffers; WebGPU guarantees 8 a stage. */
const MAX_FUSED_INPUTS = 6;

const isFloat = (x: Operand): boolean => isNode(x) && DTYPE_INFO[x.type.dtype].isFloat;

/** Float elementwise ops, casts from one float dtype to another, and chains already fused can join a chain. */
function fusible(node: Node): boolean {
  if (!isFloat(node)) return false;
  if (node.op === 'cast') return isFloat(node.inputs[0]);
  return getOp(node.op).scalar !== undefined || node.op === 'fused_elementwise';
}

/** The chain rooted at `root` as an expression over its leaf operands (`$i` is leaves[i]). */
function chainOf(root: Node, absorbed: Set<Node>): { expr: Expr; leaves: Node[] } {
  const leaves: Node[] = [];
  const leaf = (n: Node): Expr => {
    const i = leaves.indexOf(n);
    return { operand: i >= 0 ? i : leaves.push(n) - 1 };
  };
  const build = (n: Node): Expr => {
    const args = n.inputs.map((x: Operand): Expr => (isNode(x) ? (absorbed.has(x) ? build(x) : leaf(x)) : { literal: x }));
    if (n.op !== 'fused_elementwise') return { op: exprOpOf(n), args };
    // Splice an already fused chain: its $i stand for its own operands.
    const substitute = (e: Expr): Expr => ('operand' in e ? args[e.operand] : 'literal' in e ? e : { op: e.op, args: e.args.map(substitute) });
    return substitute(parseExpr(String(n.attrs.expr)));
  };
  return { expr: build(root), leaves };
}

export function fuseElementwise(graph: Graph): Graph {
  const users = graph.users();
  const outputs = new Set(graph.outputs.map((o) => o.node));
  // A node is absorbed into its one user when both can join a chain and it is not broadcast there
  // (a broadcast value would be recomputed for every element it reaches), as long as the user's chain
  // keeps to MAX_FUSED_INPUTS operands: decided at each user, in graph order, so a long chain is cut
  // into kernels that fit instead of left unfused.
  const absorbable = (node: Node): boolean => {
    const us = users.get(node) ?? [];
    return fusible(node) && !outputs.has(node) && us.length === 1 && fusible(us[0]) && sameShape(node.type.shape, us[0].type.shape);
  };
  const absorbed = new Set<Node>();
  const operandsOf = new Map<Node, Set<Node>>(); // the leaf operands of the chain rooted at a node
  for (const node of graph.nodes) {
    if (!fusible(node)) continue;
    const operands = new Set<Node>();
    for (const x of node.inputs) {
      if (!isNode(x)) continue;
      const inner = absorbable(x) ? operandsOf.get(x) : undefined;
      if (inner && new Set([...operands, ...inner]).size + remainingLeaves(node, x, operands) <= MAX_FUSED_INPUTS) {
        absorbed.add(x);
        inner.forEach((o) => operands.add(o));
      } else {
        operands.add(x);
      }
    }
    operandsOf.set(node, operands);
  }
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  return rebuildGraph(graph, (node, { out, mapped, keep }) => {
    if (absorbed.has(node)) return null;
    const hasChain = fusible(node) && node.inputs.some((x) => isNode(x) && absorbed.has(x));
    const chain = hasChain ? chainOf(node, absorbed) : null;
    if (chain && chain.leaves.length <= MAX_FUSED_INPUTS) {
      return out.add('fused_elementwise', chain.leaves.map(mapped), { expr: formatExpr(chain.expr) }, node.loc, node.scope);
    }
    // Too many operands for one kernel: keep this node, and emit the nodes it would have absorbed.
    if (chain) for (const n of absorbedInto(node, absorbed, position)) keep(n);
    return undefined;
  });
}

/** Operands of `node` after `x` that will be leaves for sure (not absorbable chains): they need room too. */
function remainingLeaves(node: Node, x: Node, taken: Set<Node>): number {
  const after = node.inputs.slice(node.inputs.indexOf(x) + 1).filter(isNode);
  return new Set(after.filter((y) => !taken.has(y) && y !== x)).size;
}

/** The absorbed nodes under `root`, in graph order (inputs before users). */
function absorbedInto(root: Node, absorbed: Set<Node>, position: Map<Node, number>): Node[] {
  const found = new Set<Node>();
  const visit = (n: Node) => {
    for (const x of n.inputs) if (isNode(x) && absorbed.has(x) && !found.has(x)) (visit(x), found.add(x));
  };
  visit(root);
  return [...found].sort((a, b) => position.get(a)! - position.get(b)!);
}

/** The chain a node computes, as an expression over its tensor operands (literals inline). */
function exprOfNode(node: Node): { expr: Expr; operands: Node[] } {
  const operands = node.inputs.filter(isNode);
  if (node.op === 'fused_elementwise') return { expr: parseExpr(String(node.attrs.expr)), operands };
  let k = 0;
  return { expr: { op: exprOpOf(node), args: node.inputs.map((x): Expr => (isNode(x) ? { operand: k++ } : { literal: x })) }, operands };
}

/**
 * A sum or mean whose input is an f32 elementwise chain used nowhere else, with f32 operands of the
 * chain's own shape (no broadcasting), becomes one fused_reduce: the chain is computed as the reduction reads.
 */
export function fuseReductions(graph: Graph): Graph {
  const users = graph.users();
  const outputs = new Set(graph.outputs.map((o) => o.node));
  const into = new Map<Node, Node>(); // reduction -> the chain it takes in
  for (const node of graph.nodes) {
    if (node.op !== 'sum' && node.op !== 'mean') continue;
    const x = node.inputs[0];
    if (!isNode(x) || !fusible(x) || x.type.dtype !== 'f32' || outputs.has(x) || (users.get(x) ?? []).length !== 1) continue;
    const operands = x.inputs.filter(isNode);
    if (operands.length === 0 || operands.length > MAX_FUSED_INPUTS || !operands.every((o) => o.type.dtype === 'f32' && sameShape(o.type.shape, x.type.shape))) continue;
    into.set(node, x);
  }
  if (into.size === 0) return graph;
  const chains = new Set(into.values());
  return rebuildGraph(graph, (node, { out, mapped }) => {
    if (chains.has(node)) return null;
    const chain = into.get(node);
    if (!chain) return undefined;
    const { expr, operands } = exprOfNode(chain);
    return out.add('fused_reduce', operands.map(mapped), { op: node.op, expr: formatExpr(expr), dims: node.attrs.dims ?? null, keepdim: node.attrs.keepdim ?? false }, node.loc, node.scope);
  });
}

export const elementwiseFusion: Pass = {
  name: 'fuse_elementwise',
  stage: 'lowered',
  description: 'fuses chains of elementwise ops and float casts (bias + GELU, bias + residual, the casts beside them) into one kernel each, and f32 chains into the sums that read them',
  run: (graph) => fuseReductions(fuseElementwise(graph)),
};

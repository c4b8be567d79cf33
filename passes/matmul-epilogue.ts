// Matmul epilogues: a matmul whose one user is an elementwise chain of the product's shape (after
// elementwise fusion: nanoGPT's c_fc -> bias + GELU, c_proj -> bias + residual, the attention's
// c_attn -> bias) becomes one matmul_epilogue node: the kernel applies the chain to each product in
// registers before its one store, so the product never goes to memory and the chain has no kernel.
// Lowered stage, after differentiation: no gradient ever meets the fused node.

import { DTYPE_INFO } from '../ir/dtypes.ts';
import { type Graph, type Node, isNode, rebuildGraph } from '../ir/graph.ts';
import { type Expr, exprOpOf, formatExpr, parseExpr } from '../ir/ops/fused_elementwise.ts';
import { getOp } from '../ir/registry.ts';
import { sameShape } from '../ir/types.ts';
import type { Decision, Pass } from './manager.ts';

/** Storage bindings beside a, b and out: the 8 WebGPU guarantees a stage, less one kept as fused_elementwise keeps it. */
const MAX_EPILOGUE_OPERANDS = 4;

const isFloat = (n: Node): boolean => DTYPE_INFO[n.type.dtype].isFloat;

/** An elementwise node that can be an epilogue: a fused chain, a float cast, or a float elementwise op. */
function chainNode(node: Node): boolean {
  if (!isFloat(node)) return false;
  if (node.op === 'cast') return isNode(node.inputs[0]) && isFloat(node.inputs[0]);
  return node.op === 'fused_elementwise' || getOp(node.op).scalar !== undefined;
}

/** The chain `user` computes, rewritten over $0 = `product` and $1.. = its other tensor operands (literals inline). */
function epilogueOf(user: Node, product: Node): { expr: Expr; operands: Node[] } {
  const operands: Node[] = [product];
  const slot = (x: Node): Expr => {
    const i = operands.indexOf(x);
    return { operand: i >= 0 ? i : operands.push(x) - 1 };
  };
  if (user.op !== 'fused_elementwise') {
    return { expr: { op: exprOpOf(user), args: user.inputs.map((x): Expr => (isNode(x) ? slot(x) : { literal: x })) }, operands };
  }
  const leaves = user.inputs.map((x) => (isNode(x) ? slot(x) : { literal: x }));
  const substitute = (e: Expr): Expr => ('operand' in e ? leaves[e.operand] : 'literal' in e ? e : { op: e.op, args: e.args.map(substitute) });
  return { expr: substitute(parseExpr(String(user.attrs.expr))), operands };
}

/** Why `product`'s user cannot be its epilogue, or undefined when it can. */
function declined(product: Node, users: Node[], outputs: Set<Node>): string | undefined {
  if (outputs.has(product)) return 'the product is a graph output';
  if (users.length !== 1) return `the product has ${users.length} users`;
  const [user] = users;
  if (!chainNode(user)) return `its user ${user.op} is not a float elementwise chain`;
  if (!sameShape(user.type.shape, product.type.shape)) return 'its user broadcasts it to a bigger shape';
  const { operands } = epilogueOf(user, product);
  if (operands.length - 1 > MAX_EPILOGUE_OPERANDS) return `the chain reads ${operands.length - 1} more tensors, past ${MAX_EPILOGUE_OPERANDS}`;
  if (!operands.every(isFloat)) return 'the chain reads a tensor that is not float';
  return undefined;
}

export function fuseMatmulEpilogues(graph: Graph, decisions?: Decision[]): Graph {
  const users = graph.users();
  const outputs = new Set(graph.outputs.map((o) => o.node));
  const epilogueOfUser = new Map<Node, Node>(); // user -> the matmul it absorbs
  for (const node of graph.nodes) {
    if (node.op !== 'matmul') continue;
    const us = users.get(node) ?? [];
    const why = declined(node, us, outputs);
    if (why === undefined) epilogueOfUser.set(us[0], node);
    // Recorded where a chain follows the product (applied or a near miss); other matmuls have nothing to say.
    if (us.length === 1 && chainNode(us[0])) decisions?.push({ pass: matmulEpilogue.name, site: node, applied: why === undefined, reason: why ?? `its user ${us[0]?.op} %${us[0]?.id} runs in the matmul's kernel` });
  }
  if (epilogueOfUser.size === 0) return graph;
  const absorbed = new Set(epilogueOfUser.values());
  return rebuildGraph(graph, (node, { out, mapped }) => {
    if (absorbed.has(node)) return null;
    const product = epilogueOfUser.get(node);
    if (!product) return undefined;
    const { expr, operands } = epilogueOf(node, product);
    const [a, b] = product.inputs;
    const attrs = { transposeA: product.attrs.transposeA ?? false, transposeB: product.attrs.transposeB ?? false, expr: formatExpr(expr) };
    // The kernel is the matmul's, at its source line (c_fc's, not GELU's): where `kiln kernels` lists it.
    return out.add('matmul_epilogue', [a, b, ...operands.slice(1)].map(mapped), attrs, product.loc, product.scope);
  });
}

export const matmulEpilogue: Pass = {
  name: 'fuse_matmul_epilogue',
  stage: 'lowered',
  description: 'runs the elementwise chain a matmul feeds (bias, GELU, residual add, the casts between) in the matmul\'s kernel, before its one store',
  run: (graph, ctx) => fuseMatmulEpilogues(graph, ctx.decisions),
};

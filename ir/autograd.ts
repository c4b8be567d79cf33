// Reverse-mode autograd as a graph transformation: the forward graph plus backward nodes.
// Each op's gradient rule lives in its registry entry (`OpDef.grad`); this file only walks the graph
// backwards, sums the gradients that meet at a node, and names the results `grad.<param name>`.

import { KilnError } from './errors.ts';
import { type Attrs, Graph, type Node, type Operand, isNode } from './graph.ts';
import { getOp } from './registry.ts';
import { DTYPE_INFO } from './dtypes.ts';
import { type Shape, formatType, sameShape, sameType } from './types.ts';

/** What a gradient rule sees: the forward node, the gradient of its output, and a builder for new nodes. */
export interface GradContext {
  /** The forward node whose inputs' gradients are asked for. */
  readonly node: Node;
  /** The gradient of the loss with respect to `node`'s output (same shape as the output). */
  readonly grad: Node;
  /** Appends a backward node, tagged with the forward node's source line and module. */
  add(op: string, inputs: readonly Operand[], attrs?: Attrs): Node;
  /** Whether input #k needs a gradient (a float tensor that depends on a `wrt` leaf); rules skip the rest. */
  needs(k: number): boolean;
}

/** Gradient rule of one op: the gradient of each input, null where the input is not differentiable. */
export type GradRule = (ctx: GradContext) => (Operand | null)[];

/** Sums a gradient over the dims that broadcasting added or stretched, back to the input's `shape`. */
export function unbroadcast(ctx: GradContext, grad: Node, shape: Shape): Node {
  const from = grad.type.shape;
  if (sameShape(from, shape)) return grad;
  const lead = from.length - shape.length;
  const dims = from.map((_, i) => i).filter((i) => i < lead || (shape[i - lead] === 1 && from[i] !== 1));
  const summed = dims.length === 0 ? grad : ctx.add('sum', [grad], { dims, keepdim: false });
  return sameShape(summed.type.shape, shape) ? summed : ctx.add('reshape', [summed], { shape: [...shape] });
}

/** Input #k's gradient, made by `make` only when needed and summed back to the input's shape. */
export function inputGrad(ctx: GradContext, k: number, make: () => Node): Node | null {
  const x = ctx.node.inputs[k];
  return ctx.needs(k) && isNode(x) ? unbroadcast(ctx, make(), x.type.shape) : null;
}

/** Stretches `value` (whose shape broadcasts to `shape`) to exactly `shape`, by adding zeros. */
export function broadcastTo(ctx: GradContext, value: Node, shape: Shape): Node {
  if (sameShape(value.type.shape, shape)) return value;
  return ctx.add('add', [value, ctx.add('full', [], { value: 0, dtype: value.type.dtype, shape: [...shape] })]);
}

/** The gradient of a tensor operand, null for scalar literals and non-float tensors. */
export function differentiable(x: Operand): x is Node {
  return isNode(x) && DTYPE_INFO[x.type.dtype].isFloat;
}

/**
 * Returns a new graph: `graph`'s nodes, then the backward nodes of d`loss`/d`wrt`; its outputs are
 * `graph`'s outputs, then `grad.<name>` for each leaf in `wrt` (zeros where the loss does not depend on it).
 * Gradients reaching a node from several users are summed, so tied weights get their total gradient.
 */
export function differentiate(graph: Graph, loss: Node, wrt: readonly Node[]): Graph {
  if (!DTYPE_INFO[loss.type.dtype].isFloat) throw new KilnError('KILN_E011', `differentiate needs a float loss, got ${formatType(loss.type)}`, loss.loc);
  const out = new Graph(graph.nextFreeId());
  for (const node of graph.nodes) out.addRaw(node);
  out.constants = new Map(graph.constants);

  // Only nodes downstream of a `wrt` leaf carry gradients worth building.
  const dependsOnWrt = new Set<Node>(wrt);
  for (const node of graph.nodes) {
    if (node.inputs.some((x) => isNode(x) && dependsOnWrt.has(x))) dependsOnWrt.add(node);
  }

  const pending = new Map<Node, Node[]>([[loss, [out.add('full', [], { value: 1, dtype: loss.type.dtype, shape: [...loss.type.shape] }, loss.loc)]]]);
  const total = (node: Node): Node | undefined => {
    const parts = pending.get(node);
    if (!parts) return undefined;
    // Slices tiling their input (q, k, v) meet as a concat: passes/gradient-rules.ts rewrites this sum.
    const sum = parts.reduce((acc, g) => out.add('add', [acc, g], {}, node.loc, node.scope));
    pending.set(node, [sum]);
    return sum;
  };

  const position = graph.nodes.indexOf(loss);
  if (position < 0) throw new KilnError('KILN_E011', 'differentiate: the loss node is not in the graph');
  for (let i = position; i >= 0; i--) {
    const node = graph.nodes[i];
    const def = getOp(node.op);
    if (def.leaf || !dependsOnWrt.has(node)) continue;
    const grad = total(node);
    if (!grad) continue;
    if (!def.grad) throw new KilnError('KILN_E011', `autograd: op ${node.op} has no gradient rule yet (its registry entry has no grad)`, node.loc);
    const ctx: GradContext = {
      node,
      grad,
      add: (op, inputs, attrs = {}) => out.add(op, inputs, attrs, node.loc, node.scope),
      needs: (k) => k < node.inputs.length && differentiable(node.inputs[k]) && dependsOnWrt.has(node.inputs[k] as Node),
    };
    const grads = def.grad(ctx);
    node.inputs.forEach((x, k) => {
      const g = grads[k];
      if (g === null || g === undefined || !ctx.needs(k) || !isNode(x)) return;
      if (!isNode(g) || !sameType(g.type, x.type)) {
        const got = isNode(g) ? formatType(g.type) : `the scalar ${g}`;
        throw new Error(`autograd: ${node.op}'s gradient rule gave ${got} for input #${k} of type ${formatType(x.type)}`);
      }
      pending.set(x, [...(pending.get(x) ?? []), g]);
    });
  }

  const grads = wrt.map((leaf) => ({
    name: `grad.${String(leaf.attrs.name)}`,
    node: total(leaf) ?? out.add('full', [], { value: 0, dtype: leaf.type.dtype, shape: [...leaf.type.shape] }, leaf.loc),
  }));
  out.setOutputs([...graph.outputs, ...grads]);
  return out;
}

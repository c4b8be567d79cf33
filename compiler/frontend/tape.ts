// Eager autograd, as torch's: `backward()` walks the records grad mode hung on each result
// (grad-mode.ts) back from the loss, rebuilds them into one IR graph whose leaves are the saved values,
// differentiates it with ir/autograd.ts and runs only the backward nodes, op by op, on the eager backend.

import { differentiate } from '../../ir/autograd.ts';
import { KilnError, type SourceLoc } from '../../ir/errors.ts';
import { Graph, type Node, isNode } from '../../ir/graph.ts';
import { formatType, sameShape } from '../../ir/types.ts';
import { runEager } from './dispatch.ts';
import { callerLoc } from './loc.ts';
import type { Tensor } from './tensor.ts';

/** The tensors `root` depends on through records, inputs before their users. */
function tapeOrder(root: Tensor, loc: SourceLoc | undefined): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative post-order: a deep model must not overflow the JS stack.
  const stack: [Tensor, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [t, expanded] = stack.pop()!;
    if (expanded) {
      order.push(t);
      continue;
    }
    if (visited.has(t)) continue;
    visited.add(t);
    stack.push([t, true]);
    const inputs = t.gradFn ? t.gradFn.inputs : [];
    if (!inputs) {
      throw new KilnError('KILN_E011', 'backward() through a graph that an earlier backward() freed; run the forward again, or pass { retainGraph: true } to the first backward()', loc);
    }
    for (const x of inputs) if (typeof x !== 'number' && !visited.has(x)) stack.push([x, false]);
  }
  return order;
}

/**
 * d`root`/d(every requires-grad leaf it depends on), added into each leaf's `.grad` (torch semantics:
 * gradients accumulate until zeroed). `grad` seeds a non-scalar root; a 0-d root is seeded with 1.
 * The records are freed afterwards unless `retainGraph`.
 */
export function backward(root: Tensor, grad?: Tensor, options: { retainGraph?: boolean } = {}): void {
  const loc = callerLoc();
  if (root.node) throw new KilnError('KILN_E011', 'backward() on a traced tensor; call it on the loss of an eager forward, or use gradients(model, args) for a compiled one', loc);
  if (!root.requiresGrad) {
    throw new KilnError('KILN_E011', `backward() on ${root.toString()}, which does not require grad: it depends on no parameter or tensor with requiresGrad (or was made under noGrad)`, loc);
  }
  if (grad === undefined && root.ndim !== 0) {
    throw new KilnError('KILN_E011', `backward() without a gradient needs a 0-d tensor, got ${formatType(root.type)}; reduce it with .sum() or .mean(), or pass backward(grad)`, loc);
  }
  if (grad !== undefined && (grad.dtype !== 'f32' || !sameShape(grad.shape, root.shape))) {
    throw new KilnError('KILN_E001', `backward(grad): grad is ${formatType(grad.type)}, the tensor is ${formatType(root.type)}`, loc);
  }

  // One IR graph of the tape: recorded ops become nodes, every other tensor an `input` leaf.
  const graph = new Graph();
  const saved = new Map<Node, Tensor>();
  const nodeOf = new Map<Tensor, Node>();
  const wrt: Node[] = [];
  const order = tapeOrder(root, loc);
  for (const t of order) {
    const record = t.gradFn;
    const node = record
      ? graph.add(record.op, record.inputs!.map((x) => (typeof x === 'number' ? x : nodeOf.get(x)!)), record.attrs, record.loc)
      : graph.add('input', [], { name: `t${nodeOf.size}`, dtype: t.dtype, shape: [...t.shape] });
    if (!record && t.requiresGrad) wrt.push(node);
    nodeOf.set(t, node);
    saved.set(node, t);
  }
  // An explicit grad g seeds the root through sum(root * g), whose gradient for root is g.
  let loss = nodeOf.get(root)!;
  if (grad) {
    const seed = graph.add('input', [], { name: 'seed', dtype: 'f32', shape: [...grad.shape] });
    saved.set(seed, grad);
    loss = graph.add('mul', [loss, seed]);
    if (grad.ndim > 0) loss = graph.add('sum', [loss], { dims: grad.shape.map((_, i) => i), keepdim: false });
  }
  const withGrads = differentiate(graph, loss, wrt);
  const outputs = withGrads.outputs.map((o) => o.node);
  const values = runBackward(withGrads, outputs, saved);

  wrt.forEach((leaf, i) => {
    const t = saved.get(leaf)!;
    const g = values.get(outputs[i])!;
    t.grad = t.grad ? runEager('add', [t.grad, g], {}, loc) : g;
  });
  if (!options.retainGraph) for (const t of order) if (t.gradFn) t.gradFn.inputs = null;
}

/**
 * Runs the nodes `outputs` need that have no saved value, in graph order, each as one eager op;
 * forward values are never recomputed. A value is dropped after its last reader, to bound memory.
 */
function runBackward(graph: Graph, outputs: readonly Node[], saved: ReadonlyMap<Node, Tensor>): Map<Node, Tensor> {
  const needed = new Set<Node>();
  const stack = [...outputs];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (needed.has(node)) continue;
    needed.add(node);
    if (!saved.has(node)) for (const x of node.inputs) if (isNode(x)) stack.push(x);
  }
  const steps = graph.nodes.filter((n) => needed.has(n) && !saved.has(n));
  const lastReader = new Map<Node, Node>();
  for (const n of steps) for (const x of n.inputs) if (isNode(x)) lastReader.set(x, n);
  const keep = new Set(outputs);

  const values = new Map(saved);
  for (const node of steps) {
    values.set(node, runEager(node.op, node.inputs.map((x) => (isNode(x) ? values.get(x)! : x)), node.attrs, node.loc));
    for (const x of node.inputs) if (isNode(x) && lastReader.get(x) === node && !keep.has(x)) values.delete(x);
  }
  return values;
}

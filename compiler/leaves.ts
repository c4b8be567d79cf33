// What feeds a graph's leaves when kiln runs it for a model: `input` leaves are forward()'s arguments
// (by parameter name), `param` and `buffer` leaves the model's tensors (by state-dict key),
// `constant` leaves what constant folding computed, and the `rng` leaf a fresh value each call, drawn
// from manualSeed's stream (as eager dropout draws its seeds). compile(), gradients() and the profiler share it.

import { KilnError } from '../ir/errors.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { RNG_TYPE } from '../ir/ops/leaf.ts';
import type { Module } from './frontend/module.ts';
import { nextSeed } from './frontend/random.ts';
import { Tensor } from './frontend/tensor.ts';

const constantTensors = new WeakMap<HostTensor, Tensor>();

/** One Tensor per folded constant, so a backend can keep its upload across calls. */
function constantTensor(host: HostTensor): Tensor {
  let t = constantTensors.get(host);
  if (!t) constantTensors.set(host, (t = new Tensor(host.type, { host })));
  return t;
}

/** The model's parameters and buffers by state-dict key. */
export function stateTensors(model: Module): Map<string, Tensor> {
  return new Map<string, Tensor>([...model.namedParameters(), ...model.namedBuffers().map(([name, t]) => [name, t] as const)]);
}

/** Leaves whose value changes every call (forward's arguments, the rng): a backend writes them into a buffer it keeps, not one per tensor. */
export function fedPerCall(node: Node): boolean {
  return node.op === 'input' || node.op === 'rng';
}

/** A function giving the tensor for each leaf of `graph`, for one call with `args`. */
export function leafFeeder(graph: Graph, state: ReadonlyMap<string, Tensor>, argNames: readonly string[], args: readonly unknown[]): (node: Node) => Tensor {
  const byName = new Map(argNames.map((n, i) => [n, args[i]]));
  // Drawn on first use, once per call: a graph without dropout leaves the random stream alone.
  let rng: Tensor | undefined;
  return (node) => {
    const name = String(node.attrs.name);
    if (node.op === 'rng') return (rng ??= new Tensor(RNG_TYPE, { host: { type: RNG_TYPE, data: Int32Array.of(nextSeed()) } }));
    const folded = node.op === 'constant' ? graph.constants.get(name) : undefined;
    if (folded) return constantTensor(folded);
    // An argument forward() has no name for is traced as `arg<i>`.
    const value = node.op === 'input' ? (byName.get(name) ?? args[Number(name.replace(/^arg/, ''))]) : state.get(name);
    if (!(value instanceof Tensor)) throw new KilnError('KILN_E014', `no tensor for ${node.op} "${name}"`);
    return value;
  };
}

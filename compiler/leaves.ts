// What feeds a graph's leaves when kiln runs it for a model: `input` leaves are forward()'s arguments
// (by parameter name), `param` and `buffer` leaves the model's tensors (by state-dict key), and
// `constant` leaves what constant folding computed. compile(), gradients() and the profiler share it.

import { KilnError } from '../ir/errors.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import type { Module } from './frontend/module.ts';
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

/** A function giving the tensor for each leaf of `graph`, for one call with `args`. */
export function leafFeeder(graph: Graph, state: ReadonlyMap<string, Tensor>, argNames: readonly string[], args: readonly unknown[]): (node: Node) => Tensor {
  const byName = new Map(argNames.map((n, i) => [n, args[i]]));
  return (node) => {
    const name = String(node.attrs.name);
    const folded = node.op === 'constant' ? graph.constants.get(name) : undefined;
    if (folded) return constantTensor(folded);
    // An argument forward() has no name for is traced as `arg<i>`.
    const value = node.op === 'input' ? (byName.get(name) ?? args[Number(name.replace(/^arg/, ''))]) : state.get(name);
    if (!(value instanceof Tensor)) throw new KilnError('KILN_E014', `no tensor for ${node.op} "${name}"`);
    return value;
  };
}

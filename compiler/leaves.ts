// What feeds a graph's leaves when kiln runs it for a model, one entry per leaf kind (the leaf ops of
// ir/ops/leaf.ts). compile(), gradients(), the training step, the backends and the profiler read it here.

import { KilnError } from '../ir/errors.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { RNG_TYPE } from '../ir/ops/leaf.ts';
import type { Module } from './frontend/module.ts';
import { nextSeed } from './frontend/random.ts';
import { Tensor } from './frontend/tensor.ts';

/** One call's sources: the graph (its folded constants), the model's tensors, forward()'s arguments, the call's seed. */
interface LeafSources {
  readonly graph: Graph;
  readonly state: ReadonlyMap<string, Tensor>;
  /** forward()'s argument by parameter name; one forward() has no name for is traced as `arg<i>`. */
  arg(name: string): unknown;
  /** The call's rng value, drawn on first use. */
  rng(): Tensor;
}

export interface LeafKind {
  /** The value changes every call: a backend writes it into a buffer it keeps, not one per tensor. */
  readonly fedPerCall: boolean;
  /** The value for the leaf named `name` on this call (undefined: nothing feeds it, an error). */
  feed(name: string, sources: LeafSources): unknown;
}

export const LEAF_KINDS: Readonly<Record<string, LeafKind>> = {
  input: { fedPerCall: true, feed: (name, s) => s.arg(name) }, // forward()'s argument
  param: { fedPerCall: false, feed: (name, s) => s.state.get(name) }, // the model's parameter, by state-dict key
  buffer: { fedPerCall: false, feed: (name, s) => s.state.get(name) }, // the model's buffer, by state-dict key
  constant: { fedPerCall: false, feed: (name, s) => constantTensor(s.graph.constants.get(name)) }, // what constant folding computed
  rng: { fedPerCall: true, feed: (_, s) => s.rng() }, // a fresh seed from manualSeed's stream, as eager dropout draws its seeds
};

/** How this leaf is fed. */
export function leafKind(node: Node): LeafKind {
  const kind = Object.hasOwn(LEAF_KINDS, node.op) ? LEAF_KINDS[node.op] : undefined;
  if (!kind) throw new KilnError('KILN_E014', `no tensor for ${node.op} "${String(node.attrs.name)}": kiln does not feed ${node.op} leaves`);
  return kind;
}

const constantTensors = new WeakMap<HostTensor, Tensor>();

/** One Tensor per folded constant, so a backend can keep its upload across calls. */
function constantTensor(host: HostTensor | undefined): Tensor | undefined {
  if (!host) return undefined;
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
  // Drawn on first use, once per call: a graph without dropout leaves the random stream alone.
  let rng: Tensor | undefined;
  const sources: LeafSources = {
    graph,
    state,
    arg: (name) => byName.get(name) ?? args[Number(name.replace(/^arg/, ''))],
    rng: () => (rng ??= new Tensor(RNG_TYPE, { host: { type: RNG_TYPE, data: Int32Array.of(nextSeed()) } })),
  };
  return (node) => {
    const name = String(node.attrs.name);
    const value = leafKind(node).feed(name, sources);
    if (!(value instanceof Tensor)) throw new KilnError('KILN_E014', `no tensor for ${node.op} "${name}"`);
    return value;
  };
}

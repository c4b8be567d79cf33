// The IR: an SSA graph of nodes in topological order, in the spirit of torch.fx.
// A node has an op, inputs (other nodes or scalar literals), attrs, a type and the user's source line.
// Attrs are what the node computes; meta (torch.fx's Node.meta) is what a pass says about it (the rule
// that fired, the kernel it picked, why): printed, but no part of CSE keys or graph equality (ir/equal.ts).

import type { SourceLoc } from './errors.ts';
import { KilnError } from './errors.ts';
import type { HostTensor } from './host.ts';
import type { TensorType } from './types.ts';
import { getOp } from './registry.ts';

export type AttrValue = number | boolean | string | readonly number[] | null;
export type Attrs = Readonly<Record<string, AttrValue>>;

/**
 * What a pass recorded about a node, beside what it computes: the fusion `rule` that made it, the
 * `kernel` it picked and the `reason` (`kiln explain`, `kiln dump`, KILN_LOG=fusion read them).
 * Printed as `meta{...}` after the type; never read by an op's type rule, CPU reference or lowering.
 */
export type Meta = Readonly<Record<string, AttrValue>>;

/** A node input: another node's value, or a scalar literal (`mul(%12, 0.25)`). */
export type Operand = Node | number;

export interface Node {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly Operand[];
  readonly attrs: Attrs;
  readonly type: TensorType;
  readonly loc?: SourceLoc;
  /** The module whose forward() made it, by state-dict prefix (`transformer.h.0.attn`); not in the text form. */
  readonly scope?: string;
  /** Provenance and decisions, not semantics (see Meta); absent when a pass recorded nothing. */
  readonly meta?: Meta;
}

export interface GraphOutput {
  readonly name: string;
  readonly node: Node;
}

export function isNode(x: Operand): x is Node {
  return typeof x !== 'number';
}

export class Graph {
  readonly nodes: Node[] = [];
  outputs: GraphOutput[] = [];
  /** Values of `constant` leaves by name: what constant folding computed at compile time. */
  constants = new Map<string, HostTensor>();
  private nextId: number;

  /** `firstId`: where fresh ids start, so a rebuilt graph can keep the old ids and add new ones. */
  constructor(firstId = 0) {
    this.nextId = firstId;
  }

  /** The smallest id no node of this graph has used. */
  nextFreeId(): number {
    return this.nextId;
  }

  /** Appends a node; its type is inferred by the op's registry entry. Shape errors carry `loc`. */
  add(op: string, inputs: readonly Operand[], attrs: Attrs = {}, loc?: SourceLoc, scope?: string, meta?: Meta): Node {
    const def = getOp(op, loc);
    let type: TensorType;
    try {
      type = def.infer(inputs.map((x) => (isNode(x) ? x.type : x)), attrs);
    } catch (e) {
      throw e instanceof KilnError ? e.at(loc) : e;
    }
    return this.push({ id: this.nextId++, op, inputs: [...inputs], attrs: { ...attrs }, type, loc, ...(scope ? { scope } : {}), ...(meta ? { meta: { ...meta } } : {}) });
  }

  /** Appends a node whose id and type are already known (the parser uses this; the verifier checks it). */
  addRaw(node: Node): Node {
    this.nextId = Math.max(this.nextId, node.id + 1);
    return this.push(node);
  }

  private push(node: Node): Node {
    this.nodes.push(node);
    return node;
  }

  setOutputs(outputs: GraphOutput[]): void {
    this.outputs = outputs;
  }

  /** Nodes that read each node, in graph order. */
  users(): Map<Node, Node[]> {
    const users = new Map<Node, Node[]>(this.nodes.map((n) => [n, []]));
    for (const n of this.nodes) {
      for (const x of n.inputs) if (isNode(x)) users.get(x)?.push(n);
    }
    return users;
  }

  /** Nodes of one op kind, e.g. all `input` nodes. */
  nodesOf(op: string): Node[] {
    return this.nodes.filter((n) => n.op === op);
  }
}

/** What rebuildGraph gives its visitor: the graph being built, and the old-to-new mapping so far. */
export interface Rebuild {
  readonly out: Graph;
  /** An operand's value in the new graph (scalars and unmapped nodes as they are). */
  mapped(x: Operand): Operand;
  /** Copies `node` with its inputs mapped (the node itself when none changed) and records the mapping. */
  keep(node: Node): Node;
}

/**
 * A graph rebuilt node by node, in order, the way passes rewrite: `visit` returns the node's value in
 * the new graph (a node it added, an earlier one, or a scalar its users then read: x * 0 -> 0), null
 * to leave the node out, or undefined to keep it as it is with its inputs mapped. Outputs follow their
 * nodes (an output replaced by a scalar keeps its node); ids are kept, new ones come after.
 */
export function rebuildGraph(graph: Graph, visit: (node: Node, r: Rebuild) => Operand | null | undefined, constants = graph.constants): Graph {
  const out = new Graph(graph.nextFreeId());
  out.constants = constants;
  const remap = new Map<Node, Operand>();
  const mapped = (x: Operand): Operand => (isNode(x) ? (remap.get(x) ?? x) : x);
  const keep = (node: Node): Node => {
    const inputs = node.inputs.map(mapped);
    const kept = inputs.every((x, i) => x === node.inputs[i]) ? out.addRaw(node) : out.addRaw({ ...node, inputs });
    remap.set(node, kept);
    return kept;
  };
  const mappedNode = (x: Operand | undefined) => (x !== undefined && isNode(x) ? x : undefined);
  const r: Rebuild = { out, mapped, keep };
  for (const node of graph.nodes) {
    const value = visit(node, r);
    if (value === undefined) keep(node);
    else if (value !== null) remap.set(node, value);
  }
  out.setOutputs(graph.outputs.map((o) => ({ name: o.name, node: mappedNode(remap.get(o.node)) ?? o.node })));
  return out;
}

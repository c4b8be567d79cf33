// The tracer: calls forward() on symbolic tensors and records every op as an IR node.
// Parameters and buffers become `param`/`buffer` leaves named by their state-dict keys.
// Ops that draw random bits (active dropout) read the graph's `rng` leaf, fed fresh on every call.

import { KilnError, type SourceLoc } from '../ir/errors.ts';
import { type Attrs, Graph, type GraphOutput, type Node, type Operand } from '../ir/graph.ts';
import { RNG_TYPE } from '../ir/ops/leaf.ts';
import { namedOperands, operandsByName } from '../ir/operands.ts';
import { getOp } from '../ir/registry.ts';
import { verifyGraph } from '../ir/verify.ts';
import { type Arg, type TraceHook, setTracer } from './frontend/dispatch.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';

/** Where each output of forward() goes when rebuilding its return value. */
export type OutputTree = { kind: 'tensor'; name: string } | { kind: 'const'; value: unknown } | { kind: 'array'; items: OutputTree[] } | { kind: 'object'; entries: [string, OutputTree][] };

export interface Trace {
  graph: Graph;
  tree: OutputTree;
  /** forward()'s parameter names, which name the `input` leaves. */
  argNames: string[];
}

/** Where a bundler renamed forward's parameters (esbuild: `forward(q, k, v)` -> `forward(q3, k3, v3)`), the names the user wrote. */
export type SourceArgNames = (fn: (...args: never[]) => unknown, bundled: readonly string[]) => string[] | undefined;
let sourceArgNames: SourceArgNames | undefined;

/** The Node CLI, which bundles the user's model, reads the names back from the bundle's source map (compiler/cli/arg-names.ts). */
export function useSourceArgNames(lookup: SourceArgNames | undefined): void {
  sourceArgNames = lookup;
}

/** forward's parameter names, read from its source text (`forward(idx, targets = null)` -> idx, targets). */
export function forwardArgNames(fn: (...args: never[]) => unknown): string[] {
  const m = /^[^(]*\(([^)]*)\)/.exec(fn.toString());
  if (!m) return [];
  const names = m[1]
    .split(',')
    .map((p) => p.replace(/[=:].*$/s, '').replace(/[?\s]/g, ''))
    .filter((p) => p.length > 0);
  return sourceArgNames?.(fn, names) ?? names;
}

class Recorder implements TraceHook {
  readonly graph = new Graph();
  private readonly leaves = new Map<Tensor, Node>();
  private readonly own = new Set<Node>();
  /** The graph's `rng` leaf, made when the first random op is recorded. */
  private rng: Node | undefined;
  /** Random ops recorded so far: the next one's `seed` attr. */
  private randomSites = 0;
  /** The first value read while tracing, if any. */
  refusal: KilnError | undefined;

  constructor(private readonly stateNames: Map<Tensor, { op: 'param' | 'buffer'; name: string }>) {}

  input(name: string, t: Tensor): Tensor {
    const node = this.graph.add('input', [], { name, dtype: t.dtype, shape: [...t.shape] });
    this.own.add(node);
    return new Tensor(node.type, { node });
  }

  private operand(x: Arg, loc: SourceLoc | undefined): Operand {
    if (typeof x === 'number') return x;
    if (!(x instanceof Tensor)) throw new KilnError('KILN_E011', `an op was given ${String(x)}, expected a tensor or a number`, loc);
    if (x.node) {
      if (!this.own.has(x.node)) throw new KilnError('KILN_E011', 'a tensor from another trace was used; do not keep tensors from forward() between calls', loc);
      return x.node;
    }
    const known = this.leaves.get(x);
    if (known) return known;
    const state = this.stateNames.get(x);
    if (!state) {
      // x.toString(), not ${x}: a template literal calls Symbol.toPrimitive, which throws for tensors
      throw new KilnError('KILN_E011', `forward() used a tensor ${x.toString()} that is neither an input nor a parameter or buffer of the model; register it with registerBuffer() or make it inside forward()`, loc);
    }
    const node = this.graph.add(state.op, [], { name: state.name, dtype: x.dtype, shape: [...x.shape] });
    this.own.add(node);
    this.leaves.set(x, node);
    return node;
  }

  refused(e: KilnError): void {
    this.refusal ??= e;
  }

  /** Module paths of the forward() calls under way, innermost last. */
  readonly scopes: string[] = [];

  record(op: string, inputs: readonly Arg[], attrs: Attrs, loc: SourceLoc | undefined): Tensor {
    let operands = inputs.map((x) => this.operand(x, loc));
    const def = getOp(op, loc);
    if (def.random?.(attrs)) {
      // The site's bits are seed (its number in this trace) mixed with the call's rng value: the
      // trace itself draws nothing, so a cached trace and a fresh one follow manualSeed alike.
      // The rng is the op's operand named `rng` (ir/operands.ts), whatever optional operands come before it.
      const named = namedOperands(def, { ...operandsByName(def, operands, attrs), rng: this.rngLeaf() }, attrs);
      [operands, attrs] = [named.inputs, { ...named.attrs, seed: this.randomSites++ }];
    }
    const node = this.graph.add(op, operands, attrs, loc, this.scopes.at(-1));
    this.own.add(node);
    return new Tensor(node.type, { node });
  }

  private rngLeaf(): Node {
    if (!this.rng) {
      this.rng = this.graph.add('rng', [], { name: 'rng', dtype: RNG_TYPE.dtype, shape: [...RNG_TYPE.shape] });
      this.own.add(this.rng);
    }
    return this.rng;
  }

  /** Turns forward's return value into graph outputs and a tree to rebuild it. */
  outputs(value: unknown): { tree: OutputTree; outputs: GraphOutput[] } {
    const outputs: GraphOutput[] = [];
    const walk = (v: unknown, path: string): OutputTree => {
      if (v instanceof Tensor) {
        const node = this.operand(v, undefined) as Node;
        outputs.push({ name: path || 'output', node });
        return { kind: 'tensor', name: path || 'output' };
      }
      if (Array.isArray(v)) return { kind: 'array', items: v.map((x, i) => walk(x, path ? `${path}.${i}` : String(i))) };
      if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
        return { kind: 'object', entries: Object.entries(v).map(([k, x]) => [k, walk(x, path ? `${path}.${k}` : k)]) };
      }
      return { kind: 'const', value: v };
    };
    const tree = walk(value, '');
    return { tree, outputs };
  }
}

/**
 * While tracing, each submodule's forward() pushes its state-dict path, so nodes know their module
 * (`transformer.h.0.attn`) for dumps grouped by module. Returns the undo.
 */
function scopeSubmodules(model: Module, scopes: string[]): () => void {
  const restore: (() => void)[] = [];
  for (const [path, m] of model.namedModules()) {
    const forward = (m as { forward?: unknown }).forward;
    if (!path || typeof forward !== 'function') continue;
    const own = Object.prototype.hasOwnProperty.call(m, 'forward');
    Object.defineProperty(m, 'forward', {
      configurable: true,
      writable: true,
      enumerable: false,
      value: (...a: unknown[]) => {
        scopes.push(path);
        try {
          return (forward as (...a: unknown[]) => unknown).apply(m, a);
        } finally {
          scopes.pop();
        }
      },
    });
    restore.push(() => (own ? Object.defineProperty(m, 'forward', { value: forward, writable: true, configurable: true }) : delete (m as { forward?: unknown }).forward));
  }
  return () => restore.forEach((undo) => undo());
}

/** Traces model.forward(...args): tensors become inputs, everything else is a constant of this trace. */
export function traceModule(model: Module & { forward: (...args: never[]) => unknown }, args: readonly unknown[]): Trace {
  const stateNames = new Map<Tensor, { op: 'param' | 'buffer'; name: string }>();
  for (const [name, p] of model.namedParameters()) stateNames.set(p, { op: 'param', name });
  for (const [name, b] of model.namedBuffers()) if (!stateNames.has(b)) stateNames.set(b, { op: 'buffer', name });
  const argNames = forwardArgNames(model.forward);
  const rec = new Recorder(stateNames);
  const symbolic = args.map((a, i) => (a instanceof Tensor ? rec.input(argNames[i] ?? `arg${i}`, a) : a));
  const before = setTracer(rec);
  const unscope = scopeSubmodules(model, rec.scopes);
  let result: unknown;
  try {
    result = (model.forward as (...a: unknown[]) => unknown)(...symbolic);
  } finally {
    unscope();
    setTracer(before);
  }
  if (result instanceof Promise) result.catch(() => {}); // its failure is reported below, not left unhandled
  if (rec.refusal) throw rec.refusal;
  if (result instanceof Promise) throw new KilnError('KILN_E011', 'forward() returned a Promise; kiln traces forward() synchronously, so make it a plain (not async) function');
  const { tree, outputs } = rec.outputs(result);
  if (outputs.length === 0) throw new KilnError('KILN_E011', 'forward() returned no tensors; return a tensor, an array or an object of tensors');
  rec.graph.setOutputs(outputs);
  verifyGraph(rec.graph, 'trace');
  return { graph: rec.graph, tree, argNames };
}

/** Rebuilds forward's return value from named output tensors. */
export function rebuildOutputs(tree: OutputTree, values: ReadonlyMap<string, Tensor>): unknown {
  switch (tree.kind) {
    case 'tensor':
      return values.get(tree.name);
    case 'array':
      return tree.items.map((t) => rebuildOutputs(t, values));
    case 'object':
      return Object.fromEntries(tree.entries.map(([k, t]) => [k, rebuildOutputs(t, values)]));
    case 'const':
      return tree.value;
  }
}

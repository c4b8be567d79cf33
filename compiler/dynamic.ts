// Dynamic sequence length: one traced graph for every length T of one dim (torch.compile's dynamic
// shapes). torch traces once with a symbolic size; a JS number cannot be symbolic, so kiln traces
// forward() at three lengths instead (the call's own and two others, avoiding T = 1, where a size-1 dim
// may broadcast differently), checks the three graphs are one graph (same ops, same operand wiring, same
// non-integer attrs, same outputs), and writes every integer that differs (an attr, a list attr's entry,
// a scalar operand, a shape entry) as a*T + b, fitted on two traces and checked on the third. A graph
// whose structure depends on T, or an integer not affine in T, is refused with the node's source line
// (the caller then compiles per length). That is the symbolic trace.
//
// A call at length T instantiates it: T substituted, every type re-inferred by the op registry and
// checked against the fitted shapes; the result is the graph a trace at T gives (same ids, attrs, lines),
// so the passes, kernels and results are those of a static compile at T. The passes run per T (folding
// reads `bias[:, :, :T, :T]` at that T) and each instantiation is cached (compile.ts keeps a few); the
// WGSL of a kernel does not depend on its sizes (they are uniforms), so pipelines are shared across T.
// Guards check T against a range, not a value: [1, the largest T every slice of a fixed-size dim and
// every arange indexing an embedding allows], else the model's config.block_size, else unbounded.
// Not seen: a branch in forward() on T (`if (T > 16)`) that the three traced lengths fall on one side of;
// torch guards such branches, kiln cannot see them.
// The causal mask: each instantiation's attention pass proves its own mask [:T, :T] by value, so a mask
// causal only for small T keeps the causal kernel only there. causalRanges proves every T at once (the
// slice rule, passes/causal.ts causalPrefix) and records up to which T each sliced mask is causal: what
// a KV cache needs to know (every position sees only earlier ones, at every length up to the cache's).

import { KilnError, type SourceLoc, formatLoc } from '../ir/errors.ts';
import { type AttrValue, Graph, type Node, type Operand, isNode } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { attentionOperands } from '../ir/ops/attention.ts';
import { getOp } from '../ir/registry.ts';
import { formatType, normalizeDim, sameShape, type TensorType } from '../ir/types.ts';
import { verifyGraph } from '../ir/verify.ts';
import { causalPrefix } from '../passes/causal.ts';
import { constantValues } from '../passes/fold.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
import { fingerprint, guardedValue } from './guards.ts';
import { type Trace, traceModule } from './tracer.ts';

/** An integer of the graph as a function of the length: a*T + b. */
export interface Affine {
  readonly a: number;
  readonly b: number;
}
const valueAt = (f: Affine, t: number) => f.a * t + f.b;
const CONSTANT = (b: number): Affine => ({ a: 0, b });

/** Where an integer that depends on T sits: node `node`'s attr `key` (entry `entry` of a list), or its scalar operand `operand`. */
type Slot = { readonly node: number; readonly f: Affine } & ({ readonly key: string; readonly entry?: number } | { readonly operand: number });

/** The lengths one symbolic trace serves, and what bounds them. */
export interface LengthRange {
  readonly min: number;
  readonly max: number;
  readonly why: string;
}

/** For a mask sliced out of a buffer as [:T, :T]: the largest T for which it is proved causal. */
export interface CausalRange {
  /** The attention site (masked_fill or sdpa) that reads the mask. */
  readonly site: number;
  readonly loc?: SourceLoc;
  readonly upTo: number;
  readonly reason: string;
}

/** forward()'s graph for every length T of dim `dim` of its tensor arguments. */
export interface SymbolicTrace {
  /** The trace at lengths[0], whose integers `slots` rewrite. */
  readonly trace: Trace;
  readonly dim: number;
  /** The lengths forward() was traced at: fitted on the first two, checked on the third. */
  readonly lengths: readonly number[];
  readonly slots: readonly Slot[];
  /** Each node's shape, entry by entry. */
  readonly shapes: readonly (readonly Affine[])[];
  readonly range: LengthRange;
}

/** The length of a call: dim `dim` of every tensor argument that has it (they must agree). */
export function callLength(args: readonly unknown[], argNames: readonly string[], dim: number): number {
  const sized = args.map((a, i) => [a, argNames[i] ?? `arg${i}`] as const).filter((p): p is [Tensor, string] => p[0] instanceof Tensor && p[0].shape.length > dim);
  if (sized.length === 0) throw new KilnError('KILN_E014', `dynamic compilation varies dim ${dim} of forward()'s tensor arguments, and none has that dim (${args.map((a) => guardedValue(a)).join(', ')}); pass { dynamic: false } or a tensor with a sequence dim`);
  const [first, name] = sized[0];
  for (const [t, other] of sized.slice(1)) {
    if (t.shape[dim] !== first.shape[dim]) throw new KilnError('KILN_E014', `dynamic compilation needs one length in dim ${dim}: ${name} is ${formatType(first.type)} but ${other} is ${formatType(t.type)}; give them the same length`);
  }
  return first.shape[dim];
}

/** The call's arguments at another length: tensors of the same dtype with dim `dim` set to `t`, for tracing (which reads no values). */
function argsAt(args: readonly unknown[], dim: number, t: number): unknown[] {
  return args.map((a) => (a instanceof Tensor && a.shape.length > dim ? new Tensor({ dtype: a.dtype, shape: a.shape.map((d, i) => (i === dim ? t : d)) }, {}) : a));
}

/**
 * The dim in which this call's tensor arguments differ from the last call's, when they differ in one
 * dim only and by one length (torch's automatic_dynamic_shapes: a size seen to change becomes dynamic).
 */
export function changedDim(before: readonly unknown[], after: readonly unknown[]): number | undefined {
  if (before.length !== after.length) return undefined;
  const dims = new Set<number>();
  const lengths = new Set<string>();
  for (const [i, x] of after.entries()) {
    const y = before[i];
    if (!(x instanceof Tensor) || !(y instanceof Tensor)) {
      if (guardedValue(x) !== guardedValue(y)) return undefined;
      continue;
    }
    if (x.dtype !== y.dtype || x.shape.length !== y.shape.length) return undefined;
    x.shape.forEach((d, k) => {
      if (d !== y.shape[k]) [dims.add(k), lengths.add(`${y.shape[k]}->${d}`)];
    });
  }
  return dims.size === 1 && lengths.size === 1 ? [...dims][0] : undefined;
}

/** The lengths to trace: the known good ones first, then others up to `upper`, preferring T >= 2. */
function lengthsToTrace(known: readonly number[], upper: number): number[] {
  const picks: number[] = [];
  const take = (t: number) => Number.isInteger(t) && t >= 1 && t <= upper && !picks.includes(t) && picks.length < 3 && picks.push(t);
  for (const t of known) if (t >= 2) take(t);
  for (const t of [upper, Math.floor((upper + 2) / 2), 2, 3, upper - 1]) if (t >= 2) take(t);
  take(1);
  return picks;
}

/** The model's config.block_size, when it has one: how far to trace dim 1, and its range when nothing in the graph bounds it. */
function configLength(model: Module): number | undefined {
  const n = (model as { config?: { block_size?: unknown } }).config?.block_size;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 ? n : undefined;
}

/** The lengths traceSymbolic would trace at: fewer than three (every call so far at T <= 2, no config.block_size) means not yet. */
export function tracingLengths(model: Module, dim: number, known: readonly number[]): number[] {
  const hint = dim === 1 ? configLength(model) : undefined; // block_size speaks of the sequence dim
  return lengthsToTrace(known, Math.max(...known, hint ?? 0));
}

/**
 * forward() traced at three lengths and fitted into one graph for every length, or the reason it is not
 * one graph (a KilnError naming the node's source line).
 */
export function traceSymbolic(model: Module & { forward: (...args: never[]) => unknown }, args: readonly unknown[], dim: number, known: readonly number[]): SymbolicTrace {
  const lengths = tracingLengths(model, dim, known);
  if (lengths.length < 3) throw new Error(`dynamic compilation needs three lengths to trace, and only ${lengths.join(', ')} are known to be valid`);
  const traces = lengths.map((t) => {
    // At the call's own length forward() fails as a static compile would; elsewhere its failure refuses.
    if (t === known[0]) return traceModule(model, argsAt(args, dim, t));
    try {
      return traceModule(model, argsAt(args, dim, t));
    } catch (e) {
      const why = e instanceof KilnError ? e.message : `${(e as Error).message}`;
      throw new KilnError('KILN_E011', `dynamic compilation traced forward() at length ${t} and it failed (${why})`);
    }
  });
  const { slots, shapes } = fitTraces(traces.map((trace, i) => ({ trace, length: lengths[i] })));
  const range = lengthRange(traces[0].graph, slots, shapes, dim === 1 ? configLength(model) : undefined);
  return { trace: traces[0], dim, lengths, slots, shapes, range };
}

/** The integers in which traces at different lengths differ, each fitted as a*T + b; throws where they are not one graph. */
function fitTraces(traces: readonly { trace: Trace; length: number }[]): { slots: Slot[]; shapes: Affine[][] } {
  const [base, ...others] = traces;
  const nodes = traces.map((t) => t.trace.graph.nodes);
  const position = new Map(base.trace.graph.nodes.map((n, i) => [n, i]));
  const refuse = (i: number, what: string): never => {
    const node = nodes[0][Math.min(i, nodes[0].length - 1)];
    throw new KilnError('KILN_E011', `forward() is not one graph for every length: ${what}; dynamic compilation needs every size that depends on T to be a*T + b and everything else the same (compile with { dynamic: false } to compile each length)`, node?.loc);
  };
  const at = (k: number) => `T=${traces[k].length}`;
  /** Fits one integer seen in every trace (values[k] in trace k); undefined when it is the same everywhere. */
  const fit = (values: readonly AttrValue[], i: number, what: string): Affine | undefined => {
    const differs = values.findIndex((v) => !sameValue(v, values[0]));
    if (differs < 0) return undefined;
    if (!values.every((v) => typeof v === 'number' && Number.isInteger(v))) refuse(i, `${what} is ${JSON.stringify(values[0])} at ${at(0)} but ${JSON.stringify(values[differs])} at ${at(differs)}`);
    const [v0, v1] = values as number[];
    const a = (v1 - v0) / (traces[1].length - base.length);
    const f = { a, b: v0 - a * base.length };
    const off = (values as number[]).findIndex((v, k) => valueAt(f, traces[k].length) !== v);
    if (!Number.isInteger(f.a) || !Number.isInteger(f.b) || off >= 0) {
      refuse(i, `${what} is ${values.map((v, k) => `${v} at ${at(k)}`).join(', ')}, not a*T + b`);
    }
    return f;
  };
  if (others.some((o) => o.trace.graph.nodes.length !== nodes[0].length)) {
    const k = nodes.findIndex((n) => n.length !== nodes[0].length);
    const i = nodes[0].findIndex((n, j) => nodes[k][j]?.op !== n.op);
    refuse(i < 0 ? nodes[0].length - 1 : i, `it records ${nodes[0].length} nodes at ${at(0)} and ${nodes[k].length} at ${at(k)}${i >= 0 ? ` (node #${i} is ${nodes[0][i].op} at ${at(0)}, ${nodes[k][i]?.op ?? 'absent'} at ${at(k)})` : ''}`);
  }
  const slots: Slot[] = [];
  const shapes: Affine[][] = [];
  for (const [i, node] of nodes[0].entries()) {
    const twins = nodes.map((n) => n[i]);
    const name = `%${node.id} = ${node.op}`;
    if (twins.some((t) => t.op !== node.op)) refuse(i, `node #${i} is ${node.op} at ${at(0)} and ${twins.find((t) => t.op !== node.op)!.op} elsewhere`);
    if (twins.some((t) => t.inputs.length !== node.inputs.length)) refuse(i, `${name} has ${node.inputs.length} operands at ${at(0)} and a different number elsewhere`);
    for (const [k, x] of node.inputs.entries()) {
      const xs = twins.map((t) => t.inputs[k]);
      if (isNode(x)) {
        if (xs.some((y, j) => y === undefined || !isNode(y) || nodes[j].indexOf(y) !== position.get(x))) refuse(i, `${name} reads other operands at different lengths`);
      } else {
        if (xs.some((y) => y === undefined || isNode(y))) refuse(i, `${name} reads other operands at different lengths`);
        const f = fit(xs as number[], i, `${name}'s operand ${k}`);
        if (f) slots.push({ node: i, operand: k, f });
      }
    }
    const keys = Object.keys(node.attrs).sort().join(',');
    if (twins.some((t) => Object.keys(t.attrs).sort().join(',') !== keys)) refuse(i, `${name} has other attributes at different lengths`);
    for (const [key, v] of Object.entries(node.attrs)) {
      const vs = twins.map((t) => t.attrs[key]);
      if (Array.isArray(v) && vs.every((w) => Array.isArray(w) && w.length === v.length)) {
        for (const e of v.keys()) {
          const f = fit(vs.map((w) => (w as number[])[e]), i, `${name}'s ${key}[${e}]`);
          if (f) slots.push({ node: i, key, entry: e, f });
        }
      } else {
        const f = fit(vs, i, `${name}'s ${key}`);
        if (f) slots.push({ node: i, key, f });
      }
    }
    if (twins.some((t) => t.type.dtype !== node.type.dtype || t.type.shape.length !== node.type.shape.length)) refuse(i, `${name} has another dtype or rank at different lengths`);
    shapes.push(node.type.shape.map((d, e) => fit(twins.map((t) => t.type.shape[e]), i, `${name}'s dim ${e}`) ?? CONSTANT(d)));
  }
  const outputs = (t: Trace) => `${t.graph.outputs.map((o) => `${o.name}=${t.graph.nodes.indexOf(o.node)}`).join(',')} ${JSON.stringify(t.tree)}`;
  const constants = (g: Graph) => [...g.constants].map(([k, v]) => `${k}:${fingerprint(v)}`).join(',');
  for (const [k, o] of traces.entries()) {
    if (outputs(o.trace) !== outputs(base.trace)) refuse(nodes[0].length - 1, `forward() returns other outputs at ${at(k)} than at ${at(0)}`);
    if (constants(o.trace.graph) !== constants(base.trace.graph)) refuse(0, `forward() makes other constant tensors at ${at(k)} than at ${at(0)}`);
  }
  return { slots, shapes };
}

/** Attr values equal as the graph means them (-inf and NaN included, which JSON cannot tell apart). */
function sameValue(v: AttrValue | undefined, w: AttrValue | undefined): boolean {
  if (Array.isArray(v) && Array.isArray(w)) return v.length === w.length && v.every((x, e) => Object.is(x, w[e]));
  return Object.is(v, w);
}

/** Where a node is, for range reasons. */
const where = (node: Node) => (node.loc ? ` at ${formatLoc(node.loc)}` : '');

/**
 * The lengths the graph is valid for: the fitted shapes must stay non-negative, a slice of a fixed-size
 * dim must not reach past it (Python slices clamp: past it, the shape stops following T), and an arange
 * indexing an embedding must stay within its rows. Nothing of that: the model's config.block_size.
 */
function lengthRange(graph: Graph, slots: readonly Slot[], shapes: readonly (readonly Affine[])[], hint: number | undefined): LengthRange {
  let range: LengthRange = { min: 1, max: Infinity, why: 'nothing in the graph bounds T' };
  const below = (max: number, why: string) => {
    if (max < range.max) range = { ...range, max, why };
  };
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  const attrF = (i: number, key: string) => slots.find((s) => s.node === i && 'key' in s && s.key === key && s.entry === undefined)?.f;
  for (const [i, node] of graph.nodes.entries()) {
    for (const f of shapes[i]) {
      if (f.a > 0 && f.b < 0) range = { ...range, min: Math.max(range.min, Math.ceil(-f.b / f.a)) };
      if (f.a < 0) below(Math.floor(f.b / -f.a), `%${node.id} = ${node.op}${where(node)} has a dim ${f.b} - ${-f.a}T`);
    }
    const x = node.inputs[0];
    if (node.op === 'slice' && isNode(x)) {
      const dim = normalizeDim(Number(node.attrs.dim), x.type.shape.length) ?? 0;
      const size = shapes[position.get(x)!][dim];
      const end = attrF(i, 'end');
      const leaf = getOp(x.op).leaf ? ` (${x.op} ${String(x.attrs.name)})` : '';
      if (size.a === 0 && end && end.a > 0) below(Math.floor((size.b - end.b) / end.a), `the slice${where(node)} ends at ${end.a === 1 ? '' : end.a}T${end.b ? (end.b > 0 ? ` + ${end.b}` : ` - ${-end.b}`) : ''} in a dim of ${size.b}${leaf}`);
    }
    const range_ = getOp(node.op).indices?.(node.inputs.map((y) => (isNode(y) ? y.type : y)), node.attrs);
    const idx = range_ && node.inputs[range_.operand];
    if (idx && isNode(idx) && idx.op === 'arange' && idx.attrs.step === 1 && typeof idx.attrs.start === 'number') {
      const n = shapes[position.get(idx)!][0];
      if (n.a > 0) below(Math.floor((range_.size - idx.attrs.start - n.b) / n.a), `positions arange(${idx.attrs.start}, T)${where(idx)} index ${node.op}${where(node)}, which has ${range_.size} rows`);
    }
  }
  if (range.max === Infinity && hint !== undefined) range = { ...range, max: hint, why: `the model's config.block_size is ${hint}` };
  return range;
}

/** The symbolic trace at length t: forward()'s graph as a trace at t gives it. Throws E014 outside the range. */
export function instantiate(sym: SymbolicTrace, t: number, argName = 'the input'): Trace {
  const { range } = sym;
  if (!Number.isInteger(t) || t < range.min || t > range.max) {
    throw new KilnError('KILN_E014', `${argName} has length ${t} in dim ${sym.dim}, outside [${range.min}, ${range.max}], the lengths this compiled model serves (${range.why}); pass between ${range.min} and ${range.max} positions`);
  }
  const src = sym.trace.graph;
  const attrs = src.nodes.map((n) => ({ ...n.attrs }) as Record<string, AttrValue>);
  const operands = src.nodes.map((n) => [...n.inputs]);
  for (const s of sym.slots) {
    const v = valueAt(s.f, t);
    if ('operand' in s) operands[s.node][s.operand] = v;
    else if (s.entry === undefined) attrs[s.node][s.key] = v;
    else attrs[s.node][s.key] = (attrs[s.node][s.key] as number[]).map((w, e) => (e === s.entry ? v : w));
  }
  const out = new Graph(src.nextFreeId());
  out.constants = src.constants;
  const mapped = new Map<Node, Node>();
  for (const [i, node] of src.nodes.entries()) {
    const inputs: Operand[] = operands[i].map((x) => (isNode(x) ? mapped.get(x)! : x));
    let type: TensorType;
    try {
      type = getOp(node.op).infer(inputs.map((x) => (isNode(x) ? x.type : x)), attrs[i]);
    } catch (e) {
      throw e instanceof KilnError ? e.at(node.loc) : e;
    }
    const want = sym.shapes[i].map((f) => valueAt(f, t));
    if (!sameShape(type.shape, want)) throw new KilnError('KILN_E011', `at length ${t}, %${node.id} = ${node.op} is [${type.shape.join(',')}] where the traces at ${sym.lengths.join(', ')} say [${want.join(',')}]; compile with { dynamic: false }`, node.loc);
    mapped.set(node, out.addRaw({ ...node, inputs, attrs: attrs[i], type }));
  }
  out.setOutputs(src.outputs.map((o) => ({ name: o.name, node: mapped.get(o.node)! })));
  verifyGraph(out, `instantiating length ${t}`);
  return { graph: out, tree: sym.trace.tree, argNames: sym.trace.argNames };
}

/**
 * Each attention mask cut from a buffer as [:T, :T] (through elementwise ops: `bias[:, :, :T, :T] == 0`),
 * with the largest T it is causal for, proved once on the mask at the largest length (causalPrefix).
 */
export function causalRanges(sym: SymbolicTrace, bufferValue: (name: string) => HostTensor | undefined): CausalRange[] {
  if (!Number.isFinite(sym.range.max)) return [];
  const graph = sym.trace.graph;
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  const isT = (f: Affine | undefined) => f?.a === 1 && f.b === 0;
  const endOf = (i: number) => sym.slots.find((s) => s.node === i && 'key' in s && s.key === 'end')?.f;
  /** Depends on T only through leading-square slices [0:T] of its last two dims, elementwise. */
  const slicedSquare = (x: Operand): boolean => {
    if (!isNode(x)) return true;
    const i = position.get(x)!;
    if (sym.shapes[i].every((f) => f.a === 0)) return true;
    const rank = x.type.shape.length;
    if (x.op === 'slice') {
      const dim = normalizeDim(Number(x.attrs.dim), rank);
      return (dim === rank - 1 || dim === rank - 2) && x.attrs.start === 0 && x.attrs.step === 1 && isT(endOf(i)) && slicedSquare(x.inputs[0]);
    }
    return getOp(x.op).scalar !== undefined && x.inputs.every(slicedSquare);
  };
  const full = instantiate(sym, sym.range.max).graph;
  const valueOf = constantValues(full, bufferValue);
  const found: CausalRange[] = [];
  for (const [i, node] of graph.nodes.entries()) {
    const mask = node.op === 'masked_fill' ? node.inputs[1] : node.op === 'sdpa' ? attentionOperands('sdpa', node.inputs, node.attrs).mask : undefined;
    if (!mask || !isNode(mask)) continue;
    const m = position.get(mask)!;
    const square = sym.shapes[m].slice(-2);
    if (square.length < 2 || !square.every(isT) || !slicedSquare(mask)) continue;
    const value = valueOf(full.nodes[m]);
    if (!value) continue;
    const kind = node.op === 'masked_fill' ? 'fill' : mask.type.dtype === 'bool' ? 'keep' : 'additive';
    const proof = causalPrefix(value, kind, `%${mask.id}`);
    found.push({ site: graph.nodes[i].id, loc: node.loc, upTo: Math.min(proof.rows, sym.range.max), reason: proof.reason });
  }
  return found;
}

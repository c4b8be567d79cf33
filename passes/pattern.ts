// A declarative pattern matcher, in the spirit of tinygrad's PatternMatcher and Inductor's patterns:
// a rule is data (a named pattern of ops with captures, constraints, a replacement builder) and one
// engine applies any list of rules to a fixed point. The engine knows nothing about attention.
//
//   const rule: Rule = {
//     name: 'div_by_constant',
//     pattern: op('div', [capture('x'), scalar('c')]),
//     build: (m, b) => b.add('mul', [m.operand('x'), 1 / m.scalar('c')]),
//   };

import { type AttrValue, type Attrs, type Graph, type Meta, type Node, type Operand, isNode, rebuildGraph } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';

/** An attribute constraint: an exact value, or a predicate over the node's attrs and type. */
export type AttrTest = AttrValue | ((value: AttrValue | undefined, node: Node) => boolean);

export type Pattern =
  | { kind: 'capture'; name: string; test?: (x: Operand) => boolean; what?: string }
  | { kind: 'scalar'; name: string; what: string }
  | { kind: 'op'; op: string; inputs: Pattern[]; attrs: Record<string, AttrTest>; name?: string; what: string }
  | { kind: 'oneOf'; options: Pattern[] };

/** Any operand (a node or a scalar literal), bound to `name`; the same name twice must bind the same value. */
export const capture = (name: string, opts: { test?: (x: Operand) => boolean; what?: string } = {}): Pattern => ({ kind: 'capture', name, ...opts });
/** A scalar literal operand, bound to `name`. `what` names it in refusals ("the scale"). */
export const scalar = (name: string, what = name): Pattern => ({ kind: 'scalar', name, what });
/** A node of `op` whose operands match `inputs` (either order for commutative ops); `name` binds the node. */
export function op(opName: string, inputs: Pattern[], opts: { attrs?: Record<string, AttrTest>; name?: string; what?: string } = {}): Pattern {
  return { kind: 'op', op: opName, inputs, attrs: opts.attrs ?? {}, name: opts.name, what: opts.what ?? opName };
}
/** The first option that matches. Put the most specific first. */
export const oneOf = (...options: Pattern[]): Pattern => ({ kind: 'oneOf', options });

export interface Match {
  readonly root: Node;
  /** Every op node the pattern matched, root included. */
  readonly nodes: readonly Node[];
  readonly bindings: ReadonlyMap<string, Operand>;
  operand(name: string): Operand;
  node(name: string): Node;
  scalar(name: string): number;
  has(name: string): boolean;
}

/** Why a pattern did not match, and how far it got (the deepest failure is the most telling). */
export interface Miss {
  readonly depth: number;
  readonly reason: string;
  readonly at: Node;
  /** The nodes whose op the pattern recognised on the way to the miss, root first. */
  readonly trail: readonly Node[];
}

export interface Rule {
  readonly name: string;
  readonly description: string;
  /** The op whose nodes the rule's decisions are about (an attention chain's softmax): misses are recorded per such node. */
  readonly anchor?: string;
  readonly pattern: Pattern;
  /** Extra constraints; a string is the reason the rule declines (kept for `kiln explain`). */
  readonly where?: (m: Match, ctx: RewriteContext) => true | string;
  /** Builds the replacement in the new graph; its value replaces the root. */
  readonly build: (m: Match, b: Builder, ctx: RewriteContext) => Operand;
}

export interface RewriteContext {
  /** Users of each node in the graph being matched. */
  readonly users: ReadonlyMap<Node, readonly Node[]>;
  readonly graph: Graph;
}

type Bindings = Map<string, Operand>;
type Result = { ok: true; nodes: Node[] } | { ok: false; miss: Miss };

/** The op nodes recognised so far on the path being matched: each miss keeps a copy. */
type Trail = Node[];

function fail(depth: number, at: Node, reason: string, trail: Trail): Result {
  return { ok: false, miss: { depth, at, reason, trail: [...trail] } };
}

function describe(x: Operand): string {
  return isNode(x) ? `%${x.id} (${x.op})` : String(x);
}

function matchAt(p: Pattern, x: Operand, b: Bindings, depth: number, parent: Node, trail: Trail): Result {
  switch (p.kind) {
    case 'capture': {
      const bound = b.get(p.name);
      if (bound !== undefined && bound !== x) return fail(depth, parent, `${p.name} is ${describe(bound)} in one place and ${describe(x)} in another`, trail);
      if (p.test && !p.test(x)) return fail(depth, parent, `expected ${p.what ?? p.name} but found ${describe(x)}`, trail);
      b.set(p.name, x);
      return { ok: true, nodes: [] };
    }
    case 'scalar':
      if (isNode(x)) return fail(depth, parent, `${p.what} is ${describe(x)}, not a constant number`, trail);
      b.set(p.name, x);
      return { ok: true, nodes: [] };
    case 'oneOf': {
      let best: Miss | null = null;
      for (const option of p.options) {
        const trial = new Map(b);
        const r = matchAt(option, x, trial, depth, parent, trail);
        if (r.ok) {
          for (const [k, v] of trial) b.set(k, v);
          return r;
        }
        if (!best || r.miss.depth > best.depth) best = r.miss;
      }
      return { ok: false, miss: best! };
    }
    case 'op':
      if (!isNode(x) || x.op !== p.op) return matchOp(p, x, b, depth, parent, trail);
      trail.push(x);
      try {
        return matchOp(p, x, b, depth, parent, trail);
      } finally {
        trail.pop();
      }
  }
}

function matchOp(p: Extract<Pattern, { kind: 'op' }>, x: Operand, b: Bindings, depth: number, parent: Node, trail: Trail): Result {
  if (!isNode(x)) return fail(depth, parent, `expected ${p.what} but found the number ${x}`, trail);
  if (x.op !== p.op) return fail(depth, x, `expected ${p.what} but found %${x.id} = ${x.op}`, trail);
  for (const [key, test] of Object.entries(p.attrs)) {
    const ok = typeof test === 'function' ? test(x.attrs[key], x) : JSON.stringify(x.attrs[key]) === JSON.stringify(test);
    if (!ok) return fail(depth + 1, x, `expected ${p.what} but %${x.id} = ${x.op} has ${key}=${JSON.stringify(x.attrs[key])}`, trail);
  }
  if (x.inputs.length !== p.inputs.length) return fail(depth + 1, x, `%${x.id} = ${x.op} has ${x.inputs.length} operands, the pattern ${p.inputs.length}`, trail);
  const orders = getOp(x.op).commutative && x.inputs.length === 2 ? [[0, 1], [1, 0]] : [[...p.inputs.keys()]];
  let best: Miss | null = null;
  for (const order of orders) {
    const trial = new Map(b);
    const nodes: Node[] = [x];
    let miss: Miss | null = null;
    for (let i = 0; i < p.inputs.length && !miss; i++) {
      const r = matchAt(p.inputs[i], x.inputs[order[i]], trial, depth + 1 + nodes.length, x, trail);
      if (r.ok) nodes.push(...r.nodes);
      else miss = r.miss;
    }
    if (!miss) {
      for (const [k, v] of trial) b.set(k, v);
      if (p.name) b.set(p.name, x);
      return { ok: true, nodes };
    }
    if (!best || miss.depth > best.depth) best = miss;
  }
  return { ok: false, miss: best! };
}

function makeMatch(root: Node, nodes: Node[], bindings: Bindings): Match {
  const get = (name: string) => {
    const v = bindings.get(name);
    if (v === undefined) throw new Error(`pattern bound no "${name}"`);
    return v;
  };
  return {
    root,
    nodes,
    bindings,
    operand: get,
    has: (name) => bindings.has(name),
    node(name) {
      const v = get(name);
      if (!isNode(v)) throw new Error(`"${name}" is a number, not a node`);
      return v;
    },
    scalar(name) {
      const v = get(name);
      if (isNode(v)) throw new Error(`"${name}" is a node, not a number`);
      return v;
    },
  };
}

/** Matches `pattern` rooted at `root`; interior nodes (all matched nodes but the root) must have no other users. */
export function matchRule(rule: Rule, root: Node, ctx: RewriteContext): { match: Match } | { miss: Miss } {
  const bindings: Bindings = new Map();
  const r = matchAt(rule.pattern, root, bindings, 0, root, []);
  if (!r.ok) return { miss: r.miss };
  const matched = new Set(r.nodes);
  for (const n of r.nodes) {
    if (n === root) continue;
    const outside = (ctx.users.get(n) ?? []).find((u) => !matched.has(u));
    const isOutput = ctx.graph.outputs.some((o) => o.node === n);
    if (outside || isOutput) {
      const who = outside ? `%${outside.id} = ${outside.op}` : 'a graph output';
      return { miss: { depth: 1000, at: n, reason: `interior value %${n.id} = ${n.op} is also used by ${who}`, trail: r.nodes } };
    }
  }
  const match = makeMatch(root, r.nodes, bindings);
  const verdict = rule.where?.(match, ctx) ?? true;
  if (verdict !== true) return { miss: { depth: 2000, at: root, reason: verdict, trail: r.nodes } };
  return { match };
}

/** Adds nodes to the graph being rebuilt; operands are nodes of the old graph, remapped. */
export interface Builder {
  /** `meta`: what the rule records about the node (ir/graph.ts Meta), apart from its attrs. */
  add(op: string, inputs: readonly Operand[], attrs?: Attrs, meta?: Meta): Node;
}

export interface RewriteEvent {
  readonly rule: string;
  readonly root: Node;
  /** Every node the rule matched, root included (the graph before this sweep). */
  readonly matched: readonly Node[];
  readonly replacement: Operand;
}

/** The deepest miss of any rule at one anchor node, and the rule that got that far. */
export type RuleMiss = Miss & { readonly rule: string };

export interface RewriteResult {
  readonly graph: Graph;
  readonly events: RewriteEvent[];
  /**
   * Why no rule fired, per anchor node of the input graph (a rule's `anchor` op, e.g. each softmax):
   * the deepest miss over every root tried whose path reached that node. What `kiln explain` reads.
   */
  readonly misses: ReadonlyMap<Node, RuleMiss>;
}

/**
 * Applies rules to a fixed point. Each sweep matches on the current graph, takes every non-overlapping
 * match (first rule wins per root), then rebuilds the graph with the replacements; node ids of kept
 * nodes stay, new nodes get fresh ids. Interior nodes left dead are removed by DCE.
 */
export function rewriteGraph(graph: Graph, rules: readonly Rule[], maxSweeps = 100): RewriteResult {
  const events: RewriteEvent[] = [];
  const misses = new Map<Node, RuleMiss>();
  let g = graph;
  for (let sweep = 0; sweep < maxSweeps; sweep++) {
    const ctx: RewriteContext = { users: g.users(), graph: g };
    const chosen = new Map<Node, { rule: Rule; match: Match }>();
    const consumed = new Set<Node>();
    for (const node of g.nodes) {
      for (const rule of rules) {
        const r = matchRule(rule, node, ctx);
        if (!('match' in r)) {
          if (sweep === 0) recordMiss(misses, rule, r.miss);
          continue;
        }
        if (r.match.nodes.some((n) => consumed.has(n))) continue;
        chosen.set(node, { rule, match: r.match });
        for (const n of r.match.nodes) consumed.add(n);
        break;
      }
    }
    if (chosen.size === 0) return { graph: g, events, misses };
    g = rebuildGraph(g, (node, { out, mapped }) => {
      const hit = chosen.get(node);
      if (!hit) return undefined;
      const builder: Builder = { add: (op, inputs, attrs = {}, meta) => out.add(op, inputs.map(mapped), attrs, node.loc, node.scope, meta) };
      const replacement = mapped(hit.rule.build(hit.match, builder, ctx));
      events.push({ rule: hit.rule.name, root: node, matched: hit.match.nodes, replacement });
      return replacement;
    });
  }
  throw new Error(`rewrite did not reach a fixed point in ${maxSweeps} sweeps (rules: ${rules.map((r) => r.name).join(', ')})`);
}

/** Keeps the deepest miss per anchor: the node of the rule's anchor op that the miss's path went through. */
function recordMiss(misses: Map<Node, RuleMiss>, rule: Rule, miss: Miss): void {
  const anchor = rule.anchor && miss.trail.find((n) => n.op === rule.anchor);
  if (!anchor) return;
  const best = misses.get(anchor);
  if (!best || miss.depth > best.depth) misses.set(anchor, { ...miss, rule: rule.name });
}

export { type AttrValue };

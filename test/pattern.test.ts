// The pattern engine on its own: rules are data, the matcher knows nothing about attention.
// Graphs are built by hand so each test shows exactly the IR it matches.

import { describe, expect, it } from 'vitest';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { CANONICAL_RULES } from '../passes/canonicalize.ts';
import { eliminateDeadCode } from '../passes/dce.ts';
import { eliminateCommonSubexpressions, foldConstants } from '../passes/fold.ts';
import type { PassContext } from '../passes/manager.ts';
import { type Rule, capture, matchRule, op, rewriteGraph, scalar } from '../passes/pattern.ts';

/** An f32 (or other dtype) input leaf named `name`. */
const input = (g: Graph, name: string, shape = [4], dtype: 'f32' | 'bool' = 'f32') => g.add('input', [], { name, dtype, shape });

/** Why `rule` does not match at `root`, or 'matched'. */
function verdict(rule: Rule, root: Node, g: Graph): string {
  const r = matchRule(rule, root, { users: g.users(), graph: g });
  return 'match' in r ? 'matched' : r.miss.reason;
}

const doubleNegation: Rule = {
  name: 'double_negation',
  description: '-(-x) is x',
  pattern: op('neg', [op('neg', [capture('x')])]),
  build: (m) => m.operand('x'),
};

describe('a rule fires where its pattern matches, and its near misses do not', () => {
  it('neg(neg(x)) rewrites to x', () => {
    const g = new Graph();
    const x = input(g, 'x');
    g.setOutputs([{ name: 'y', node: g.add('neg', [g.add('neg', [x])]) }]);
    const { graph, events } = rewriteGraph(g, [doubleNegation]);
    expect(events.map((e) => e.rule)).toEqual(['double_negation']);
    expect(graph.outputs[0].node).toBe(x);
  });

  it('neg(exp(x)) is a near miss: the inner op differs, and the reason names it', () => {
    const g = new Graph();
    const root = g.add('neg', [g.add('exp', [input(g, 'x')])]);
    g.setOutputs([{ name: 'y', node: root }]);
    expect(rewriteGraph(g, [doubleNegation]).events).toEqual([]);
    expect(verdict(doubleNegation, root, g)).toBe('expected neg but found %1 = exp');
  });

  it('an attribute constraint turns away a node with another value', () => {
    const lastDimSoftmax: Rule = { name: 'softmax_last', description: '', pattern: op('softmax', [capture('x')], { attrs: { dim: -1 }, what: 'softmax over the last dim' }), build: (m) => m.operand('x') };
    const g = new Graph();
    const x = input(g, 'x', [2, 4]);
    const first = g.add('softmax', [x], { dim: 0 });
    const last = g.add('softmax', [x], { dim: -1 });
    expect(verdict(lastDimSoftmax, first, g)).toBe('expected softmax over the last dim but %1 = softmax has dim=0');
    expect(verdict(lastDimSoftmax, last, g)).toBe('matched');
  });

  it('a scalar pattern turns away a tensor operand, saying it is not a constant number', () => {
    const timesConstant: Rule = { name: 'times_constant', description: '', pattern: op('mul', [capture('x'), scalar('c', 'the factor')]), build: (m) => m.operand('x') };
    const g = new Graph();
    const x = input(g, 'x');
    const byTensor = g.add('mul', [x, input(g, 'y')]);
    const byNumber = g.add('mul', [x, 3]);
    expect(verdict(timesConstant, byTensor, g)).toBe('the factor is %1 (input), not a constant number');
    expect(verdict(timesConstant, byNumber, g)).toBe('matched');
  });
});

describe('commutative ops match their operands in either order', () => {
  const plusConstant: Rule = { name: 'plus_constant', description: '', pattern: op('add', [scalar('c'), capture('x')]), build: (m) => m.operand('x') };
  const minusConstant: Rule = { name: 'minus_constant', description: '', pattern: op('sub', [capture('x'), scalar('c')]), build: (m) => m.operand('x') };

  it('a pattern add(c, x) matches both add(x, 2) and add(2, x), binding the same x and c', () => {
    const g = new Graph();
    const x = input(g, 'x');
    for (const node of [g.add('add', [x, 2]), g.add('add', [2, x])]) {
      const r = matchRule(plusConstant, node, { users: g.users(), graph: g });
      expect('match' in r && [r.match.operand('x'), r.match.scalar('c')]).toEqual([x, 2]);
    }
  });

  it('a non-commutative op (sub) matches only in the written order', () => {
    const g = new Graph();
    const x = input(g, 'x');
    expect(verdict(minusConstant, g.add('sub', [x, 2]), g)).toBe('matched');
    expect(verdict(minusConstant, g.add('sub', [2, x]), g)).toBe('c is %0 (input), not a constant number');
  });
});

describe('a capture bound twice must bind the same value', () => {
  const square: Rule = { name: 'square', description: 'x * x', pattern: op('mul', [capture('x'), capture('x')]), build: (m, b) => b.add('pow', [m.operand('x'), 2]) };

  it('mul(a, a) matches and mul(a, b) does not, naming both values', () => {
    const g = new Graph();
    const [a, b] = [input(g, 'a'), input(g, 'b')];
    expect(verdict(square, g.add('mul', [a, a]), g)).toBe('matched');
    expect(verdict(square, g.add('mul', [a, b]), g)).toMatch(/^x is %[01] \(input\) in one place and %[01] \(input\) in another$/);
  });
});

describe('interior nodes with other users block a match', () => {
  it('neg(neg(x)) is left alone when the inner neg is also read by another node', () => {
    const g = new Graph();
    const inner = g.add('neg', [input(g, 'x')]);
    const outer = g.add('neg', [inner]);
    g.setOutputs([{ name: 'y', node: g.add('add', [outer, inner]) }]);
    expect(rewriteGraph(g, [doubleNegation]).events).toEqual([]);
    expect(verdict(doubleNegation, outer, g)).toBe('interior value %1 = neg is also used by %3 = add');
  });

  it('neg(neg(x)) is left alone when the inner neg is also a graph output', () => {
    const g = new Graph();
    const inner = g.add('neg', [input(g, 'x')]);
    const outer = g.add('neg', [inner]);
    g.setOutputs([
      { name: 'y', node: outer },
      { name: 'inner', node: inner },
    ]);
    expect(rewriteGraph(g, [doubleNegation]).events).toEqual([]);
    expect(verdict(doubleNegation, outer, g)).toBe('interior value %1 = neg is also used by a graph output');
  });
});

describe('rewriteGraph', () => {
  it('reaches a fixed point: ((x * 2) * 3) * 4 becomes x * 24 over two sweeps', () => {
    const g = new Graph();
    const x = input(g, 'x');
    g.setOutputs([{ name: 'y', node: g.add('mul', [g.add('mul', [g.add('mul', [x, 2]), 3]), 4]) }]);
    const { graph, events } = rewriteGraph(g, CANONICAL_RULES);
    const live = eliminateDeadCode(graph);
    expect(events.map((e) => e.rule)).toEqual(['fold_scalar_muls', 'fold_scalar_muls']);
    expect(live.nodesOf('mul')).toHaveLength(1);
    expect(live.nodesOf('mul')[0].inputs).toEqual([x, 24]);
    expect(rewriteGraph(graph, CANONICAL_RULES).events).toEqual([]);
  });

  it('keeps the ids of untouched nodes and gives replacements fresh ids', () => {
    const g = new Graph();
    const x = input(g, 'x'); // %0
    const e = g.add('exp', [x]); // %1
    const d = g.add('div', [e, 4]); // %2: becomes mul(%1, 0.25)
    const t = g.add('tanh', [d]); // %3: its operand changes, its id does not
    g.setOutputs([{ name: 'y', node: t }]);
    const graph = eliminateDeadCode(rewriteGraph(g, CANONICAL_RULES).graph);
    expect(graph.nodes.map((n) => [n.id, n.op])).toEqual([
      [0, 'input'],
      [1, 'exp'],
      [4, 'mul'],
      [3, 'tanh'],
    ]);
    expect(graph.nodes[0]).toBe(x);
    expect(graph.nodes[1]).toBe(e);
    expect(graph.nodes[2].inputs).toEqual([e, 0.25]);
  });

  it('stops a rule that always fires again, with an error naming it', () => {
    const swap: Rule = { name: 'swap_add', description: '', pattern: op('add', [capture('x'), scalar('c')]), build: (m, b) => b.add('add', [m.scalar('c'), m.operand('x')]) };
    const g = new Graph();
    g.setOutputs([{ name: 'y', node: g.add('add', [input(g, 'x'), 1]) }]);
    expect(() => rewriteGraph(g, [swap], 5)).toThrow(/did not reach a fixed point in 5 sweeps \(rules: swap_add\)/);
  });
});

describe('common-subexpression elimination', () => {
  it('merges nodes with the same op, operands and attrs, and keeps ones whose attrs differ', () => {
    const g = new Graph();
    const x = input(g, 'x', [2, 4]);
    const [e1, e2] = [g.add('exp', [x]), g.add('exp', [x])];
    const [s1, s2] = [g.add('softmax', [x], { dim: -1 }), g.add('softmax', [x], { dim: 0 })];
    g.setOutputs([
      { name: 'sum', node: g.add('add', [e1, e2]) },
      { name: 'both', node: g.add('add', [s1, s2]) },
    ]);
    const out = eliminateCommonSubexpressions(g);
    expect(out.nodesOf('exp')).toEqual([e1]);
    expect(out.nodesOf('add')[0].inputs).toEqual([e1, e1]);
    expect(out.nodesOf('softmax')).toHaveLength(2);
  });
});

describe('constant folding', () => {
  const n = 4;
  const T = 3;
  const bias: HostTensor = { type: { dtype: 'f32', shape: [n, n] }, data: new Float32Array(n * n).map((_, i) => (i % n <= Math.floor(i / n) ? 1 : 0)) };
  const ctx = (known: boolean): PassContext => ({ bufferValue: (name) => (known && name === 'bias' ? bias : undefined), attentionScaling: 'post', decisions: [] });

  /** masked_fill(x, bias[:T, :T] == 0, -inf): nanoGPT's mask, over a [n, n] buffer. */
  function maskedScores(): Graph {
    const g = new Graph();
    const x = input(g, 'x', [T, T]);
    const buffer = g.add('buffer', [], { name: 'bias', dtype: 'f32', shape: [n, n] });
    const sliced = g.add('slice', [g.add('slice', [buffer], { dim: 0, start: 0, end: T, step: 1 })], { dim: 1, start: 0, end: T, step: 1 });
    g.setOutputs([{ name: 'y', node: g.add('masked_fill', [x, g.add('eq', [sliced, 0]), -Infinity]) }]);
    return g;
  }

  it('folds eq(slice(buffer), 0) into one constant node holding the mask', () => {
    const out = eliminateDeadCode(foldConstants(maskedScores(), ctx(true)));
    const [mask] = out.nodesOf('constant');
    expect(out.nodesOf('constant')).toHaveLength(1);
    for (const gone of ['buffer', 'slice', 'eq']) expect(out.nodesOf(gone)).toEqual([]);
    expect(out.nodesOf('masked_fill')[0].inputs[1]).toBe(mask);
    const value = out.constants.get(String(mask.attrs.name))!;
    expect(value.type).toEqual({ dtype: 'bool', shape: [T, T] });
    expect(Array.from(value.data)).toEqual([0, 1, 1, 0, 0, 1, 0, 0, 0]);
  });

  it('leaves the chain alone when the buffer has no known value', () => {
    const out = foldConstants(maskedScores(), ctx(false));
    expect(out.nodesOf('constant')).toEqual([]);
    expect(out.nodesOf('eq')).toHaveLength(1);
  });
});

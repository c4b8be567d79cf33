// Canonicalization: rewrite equivalent spellings into one form, so later patterns match one shape.
// Each rule is one entry: a pattern, and what it becomes.

import type { Node } from '../ir/graph.ts';
import { permutationOf } from '../ir/ops/shape.ts';
import type { Pass } from './manager.ts';
import { type Rule, capture, op, rewriteGraph, scalar } from './pattern.ts';

/** A transpose/permute that swaps the last two dims and keeps the rest in place. */
function swapsLastTwo(_v: unknown, node: Node): boolean {
  const rank = node.type.shape.length;
  const perm = permutationOf(node.op as 'transpose' | 'permute', node.attrs, rank);
  return rank >= 2 && perm.every((p, i) => (i < rank - 2 ? p === i : p === (i === rank - 2 ? rank - 1 : rank - 2)));
}

const lastTwoSwap = (name: string) => [
  op('transpose', [capture(name)], { attrs: { dim0: swapsLastTwo }, what: `a transpose of the last two dims` }),
  op('permute', [capture(name)], { attrs: { dims: swapsLastTwo }, what: `a permute of the last two dims` }),
];

const flip = (v: unknown) => !(v === true);

export const CANONICAL_RULES: readonly Rule[] = [
  {
    name: 'drop_identity_dropout',
    description: 'dropout in eval or with p = 0 is the identity',
    pattern: op('dropout', [capture('x')], { attrs: { training: (t, n) => !(t === true && typeof n.attrs.p === 'number' && n.attrs.p > 0) } }),
    build: (m) => m.operand('x'),
  },
  {
    name: 'div_by_constant',
    description: 'x / c becomes x * (1/c)',
    pattern: op('div', [capture('x'), scalar('c')]),
    build: (m, b) => b.add('mul', [m.operand('x'), 1 / m.scalar('c')]),
  },
  {
    name: 'fold_scalar_muls',
    description: '(x * a) * b becomes x * (a*b)',
    pattern: op('mul', [op('mul', [capture('x'), scalar('a')]), scalar('b')]),
    build: (m, b) => b.add('mul', [m.operand('x'), m.scalar('a') * m.scalar('b')]),
  },
  ...(['transpose', 'permute'] as const).map(
    (kind): Rule => ({
      name: `scale_before_${kind}`,
      description: `${kind}(x) * c becomes ${kind}(x * c), so a scale on k sits next to k`,
      pattern: op('mul', [op(kind, [capture('x')], { name: 't' }), scalar('c')]),
      build: (m, b) => b.add(kind, [b.add('mul', [m.operand('x'), m.scalar('c')])], m.node('t').attrs),
    }),
  ),
  ...lastTwoSwap('b').map(
    (transposed): Rule => ({
      name: `fold_${transposed.kind === 'op' ? transposed.op : ''}_into_matmul_b`,
      description: 'a @ b.transpose(-2, -1) becomes matmul(a, b) {transposeB}',
      pattern: op('matmul', [capture('a'), transposed], { name: 'mm' }),
      build: (m, b) => b.add('matmul', [m.operand('a'), m.operand('b')], { ...m.node('mm').attrs, transposeB: flip(m.node('mm').attrs.transposeB) }),
    }),
  ),
  ...lastTwoSwap('a').map(
    (transposed): Rule => ({
      name: `fold_${transposed.kind === 'op' ? transposed.op : ''}_into_matmul_a`,
      description: 'a.transpose(-2, -1) @ b becomes matmul(a, b) {transposeA}',
      pattern: op('matmul', [transposed, capture('b')], { name: 'mm' }),
      build: (m, b) => b.add('matmul', [m.operand('a'), m.operand('b')], { ...m.node('mm').attrs, transposeA: flip(m.node('mm').attrs.transposeA) }),
    }),
  ),
  {
    name: 'where_to_masked_fill',
    description: 'where(keep, x, c) becomes masked_fill(x, !keep, c)',
    pattern: op('where', [capture('keep'), capture('x'), scalar('c')]),
    where: (m) => (typeof m.operand('x') !== 'number' ? true : 'both branches are numbers'),
    build: (m, b) => b.add('masked_fill', [m.operand('x'), b.add('logical_not', [m.operand('keep')]), m.scalar('c')]),
  },
  {
    name: 'where_fill_to_masked_fill',
    description: 'where(fill, c, x) becomes masked_fill(x, fill, c)',
    pattern: op('where', [capture('fill'), scalar('c'), capture('x')]),
    where: (m) => (typeof m.operand('x') !== 'number' ? true : 'both branches are numbers'),
    build: (m, b) => b.add('masked_fill', [m.operand('x'), m.operand('fill'), m.scalar('c')]),
  },
];

export const canonicalize: Pass = {
  name: 'canonicalize',
  stage: 'canonical',
  description: 'one spelling per computation: identity dropout removed, x/c as x*(1/c), transposes folded into matmul, where as masked_fill',
  run: (graph) => rewriteGraph(graph, CANONICAL_RULES).graph,
};

// fused_elementwise(x0, x1, ...) {expr}: a chain of f32 elementwise ops computed in one kernel, made by
// the elementwise fusion pass (bias + GELU, bias + residual add). `expr` is the chain as text over the
// operands $0, $1, ... and number literals, e.g. "gelu(add($0, $1))"; each op's own scalar function
// (its registry entry) computes it in JS for the CPU reference; codegen/wgsl/elementwise.ts composes
// the ops' WGSL expressions for the kernel.

import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { allocData } from '../host.ts';
import { type ScalarFn, getOp, registerOp } from '../registry.ts';
import { NUMBER, formatNumber, parseNumber } from '../text.ts';
import { type TensorType, numel, sameShape } from '../types.ts';
import { broadcastIndex } from './check.ts';
import { inferElementwise } from './elementwise.ts';

/** An expression tree: an operand, a literal, or an op applied to subtrees. */
export type Expr = { operand: number } | { literal: number } | { op: string; args: Expr[] };

export function formatExpr(e: Expr): string {
  if ('operand' in e) return `$${e.operand}`;
  if ('literal' in e) return formatNumber(e.literal);
  return `${e.op}(${e.args.map(formatExpr).join(', ')})`;
}

export function parseExpr(text: string): Expr {
  let pos = 0;
  const fail = (): never => {
    throw new KilnError('KILN_E011', `fused_elementwise expr "${text}" is malformed at column ${pos + 1}`);
  };
  const skip = () => {
    while (text[pos] === ' ') pos++;
  };
  const expr = (): Expr => {
    skip();
    const operand = /^\$(\d+)/.exec(text.slice(pos));
    if (operand) return (pos += operand[0].length), { operand: Number(operand[1]) };
    const name = /^[a-z_][a-z0-9_]*(?=\()/.exec(text.slice(pos));
    if (!name) {
      const literal = new RegExp(`^${NUMBER.source}`).exec(text.slice(pos)) ?? fail();
      pos += literal[0].length;
      return { literal: parseNumber(literal[0]) };
    }
    pos += name[0].length + 1;
    const args: Expr[] = [];
    for (skip(); text[pos] !== ')'; skip()) {
      if (args.length) (text[pos] === ',' ? pos++ : fail());
      args.push(expr());
    }
    pos++;
    return { op: name[0], args };
  };
  const e = expr();
  skip();
  if (pos !== text.length) fail();
  return e;
}

export function exprOf(attrs: Attrs): Expr {
  if (typeof attrs.expr !== 'string') throw new KilnError('KILN_E011', 'fused_elementwise needs an expr attribute');
  return parseExpr(attrs.expr);
}

/** The scalar function of the whole chain, composed from each op's own (codegen/wgsl/elementwise.ts composes its WGSL). */
export function composeScalar(e: Expr): ScalarFn {
  const walk = (x: Expr): void => {
    if ('op' in x) {
      if (!getOp(x.op).scalar) throw new KilnError('KILN_E011', `fused_elementwise: ${x.op} is not elementwise`);
      x.args.forEach(walk);
    }
  };
  walk(e);
  const js = (x: Expr, args: number[]): number =>
    'operand' in x ? args[x.operand] : 'literal' in x ? x.literal : getOp(x.op).scalar!.js(...x.args.map((a) => js(a, args)));
  return { js: (...args) => js(e, args) };
}

registerOp({
  name: 'fused_elementwise',
  flops: (_inputs, attrs, out) => numel(out.shape) * Math.max(1, (String(attrs.expr).match(/\(/g) ?? []).length),
  infer(inputs, attrs) {
    composeScalar(exprOf(attrs)); // every op exists and is elementwise
    const t = inferElementwise('fused_elementwise', inputs, () => 'f32');
    return t;
  },
  cpu(inputs, attrs, out, precision) {
    const scalar = composeScalar(exprOf(attrs));
    const n = numel(out.shape);
    const reads = inputs.map((x) => {
      if (typeof x === 'number') return () => x;
      const map = broadcastIndex(out.shape, x.type.shape);
      return (i: number) => x.data[map[i]];
    });
    const result = allocData('f32', n, precision);
    const args = new Array<number>(inputs.length);
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < args.length; a++) args[a] = reads[a](i);
      result[i] = scalar.js(...args);
    }
    return result;
  },
});

// fused_reduce(x0, x1, ...) {op, expr, dims, keepdim}: a sum or mean over `dims` of an elementwise
// chain of operands that all have the reduced shape, in one kernel: the chain is computed as each
// element is read (sum(g * g) for the gradient norm, sum(g * xhat) for LayerNorm's weight), so the
// product never goes to memory. Made by the elementwise fusion pass.
registerOp({
  name: 'fused_reduce',
  flops: (inputs, attrs) => 2 * numel((inputs[0] as TensorType).shape) * Math.max(1, (String(attrs.expr).match(/\(/g) ?? []).length),
  infer(inputs, attrs) {
    const op = reduceOpOf(attrs);
    composeScalar(exprOf(attrs));
    if (inputs.length === 0) throw new KilnError('KILN_E011', 'fused_reduce needs operands');
    const first = inputs[0];
    for (const x of inputs) {
      if (typeof x === 'number' || typeof first === 'number' || x.dtype !== 'f32' || !sameShape(x.shape, first.shape)) {
        throw new KilnError('KILN_E011', 'fused_reduce operands must be f32 tensors of one shape');
      }
    }
    return getOp(op).infer([first], attrs);
  },
  cpu(inputs, attrs, out, precision) {
    const scalar = composeScalar(exprOf(attrs));
    const tensors = inputs.map((x) => { if (typeof x === 'number') throw new Error('fused_reduce of a scalar'); return x; });
    const n = numel(tensors[0].type.shape);
    const values = allocData('f32', n, precision);
    const args = new Array<number>(tensors.length);
    for (let i = 0; i < n; i++) {
      for (let a = 0; a < args.length; a++) args[a] = tensors[a].data[i];
      values[i] = scalar.js(...args);
    }
    return getOp(reduceOpOf(attrs)).cpu([{ type: tensors[0].type, data: values }], attrs, out, precision);
  },
});

export function reduceOpOf(attrs: Attrs): 'sum' | 'mean' {
  if (attrs.op !== 'sum' && attrs.op !== 'mean') throw new KilnError('KILN_E011', `fused_reduce op must be sum or mean, got ${String(attrs.op)}`);
  return attrs.op;
}

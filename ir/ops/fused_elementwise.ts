// fused_elementwise(x0, x1, ...) {expr}: a chain of elementwise ops computed in one kernel, made by
// the elementwise fusion pass (bias + GELU, bias + residual add; under autocast the casts around
// them too). `expr` is the chain as text over the operands $0, $1, ... and number literals, e.g.
// "gelu(add($0, $1))"; a cast is written as its target dtype, `f16(gelu(add(f32($0), $1)))`. Each
// op's own scalar function (its registry entry) computes it in JS for the CPU reference;
// codegen/wgsl/elementwise.ts composes the ops' WGSL expressions for the kernel.
//
// Inside the kernel every value is f32, as torch's Inductor computes a fused f16 chain: an op of f16
// type does not round its result to f16 there (an explicit cast to f16 does), only the node's output
// store does. So a fused chain of f16 ops can differ from the same ops unfused, each of which rounds.

import { DTYPE_INFO } from '../dtypes.ts';
import { KilnError } from '../errors.ts';
import type { Attrs, Node } from '../graph.ts';
import { type HostData, type Precision, allocData } from '../host.ts';
import { roundF16 } from '../f16.ts';
import { type CpuOperand, type OperandType, type ScalarFn, getOp, registerOp } from '../registry.ts';
import { NUMBER, formatNumber, parseNumber } from '../text.ts';
import { type DType, type Shape, type TensorType, isDType, numel, sameShape } from '../types.ts';
import { broadcastIndex } from './check.ts';
import { convert, inferElementwise, literalValue } from './elementwise.ts';

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

/** The op of a chain node as an expr writes it: a cast is its target dtype (`f16(...)`), any other op its name. */
export function exprOpOf(node: Pick<Node, 'op' | 'attrs'>): string {
  return node.op === 'cast' ? String(node.attrs.dtype) : node.op;
}

/** The dtype an expr op converts to, when it is a cast (written as its target dtype). */
export function castTarget(op: string): DType | undefined {
  return isDType(op) ? op : undefined;
}

/** The elementwise op an expr names, or a clear error. */
function scalarOp(op: string): ScalarFn {
  const scalar = getOp(op).scalar;
  if (!scalar) throw new KilnError('KILN_E011', `fused_elementwise: ${op} is not elementwise`);
  return scalar;
}

/** The type of an expr's value, each op's own type rule applied to its arguments (shapes aside: the node broadcasts them). */
export function exprDType(e: Expr, operands: readonly OperandType[]): DType {
  const typeOf = (x: Expr): OperandType => {
    if ('literal' in x) return x.literal;
    if ('operand' in x) {
      const t = operands[x.operand];
      if (t === undefined) throw new KilnError('KILN_E011', `fused_elementwise reads $${x.operand} of ${operands.length} operands`);
      return typeof t === 'number' ? t : { dtype: t.dtype, shape: [] };
    }
    const args = x.args.map(typeOf);
    const to = castTarget(x.op);
    if (to) return getOp('cast').infer(args, { dtype: to });
    scalarOp(x.op);
    return getOp(x.op).infer(args, {});
  };
  const t = typeOf(e);
  if (typeof t === 'number') throw new KilnError('KILN_E011', 'fused_elementwise expr has no operand');
  return t.dtype;
}

/**
 * The scalar function of the whole chain, composed from each op's own (codegen/wgsl/elementwise.ts
 * composes its WGSL). At 'f32' precision it computes as the kernel does: every value in an f32
 * register (literals and results rounded to f32), an explicit cast to f16 rounding to f16; at 'f64'
 * nothing is rounded.
 */
export function composeScalar(e: Expr, precision: Precision = 'f64'): ScalarFn {
  const inRegister = precision === 'f32' ? Math.fround : (v: number) => v;
  const js = (x: Expr, args: number[]): number => {
    if ('operand' in x) return args[x.operand];
    if ('literal' in x) return literalValue(x.literal, 'f32', precision);
    const values = x.args.map((a) => js(a, args));
    const to = castTarget(x.op);
    if (!to) return inRegister(scalarOp(x.op).js(...values));
    const v = convert(values[0], to);
    return to === 'f16' && precision === 'f32' ? roundF16(v) : DTYPE_INFO[to].isFloat ? inRegister(v) : v;
  };
  const check = (x: Expr): void => {
    if (!('op' in x)) return;
    if (!castTarget(x.op)) scalarOp(x.op);
    x.args.forEach(check);
  };
  check(e);
  return { js: (...args) => js(e, args) };
}

/** The chain's value at each element of `shape`, its operands broadcast into it (the CPU reference of both ops). */
function evaluate(scalar: ScalarFn, inputs: readonly CpuOperand[], shape: Shape, result: HostData): HostData {
  const reads = inputs.map((x) => {
    if (typeof x === 'number') return () => x;
    const map = broadcastIndex(shape, x.type.shape);
    return (i: number) => x.data[map[i]];
  });
  const args = new Array<number>(inputs.length);
  for (let i = 0; i < result.length; i++) {
    for (let a = 0; a < args.length; a++) args[a] = reads[a](i);
    result[i] = scalar.js(...args);
  }
  return result;
}

registerOp({
  name: 'fused_elementwise',
  flops: (_inputs, attrs, out) => numel(out.shape) * Math.max(1, (String(attrs.expr).match(/\(/g) ?? []).length),
  infer(inputs, attrs) {
    const e = exprOf(attrs);
    composeScalar(e); // every op exists and is elementwise
    const { shape } = inferElementwise('fused_elementwise', inputs, () => 'f32');
    return { dtype: exprDType(e, inputs), shape };
  },
  cpu(inputs, attrs, out, precision) {
    return evaluate(composeScalar(exprOf(attrs), precision), inputs, out.shape, allocData(out.dtype, numel(out.shape), precision));
  },
});

// fused_reduce(x0, x1, ...) {op, expr, dims, keepdim}: a sum or mean over `dims` of an elementwise
// chain of operands that all have the reduced shape, in one kernel: the chain is computed as each
// element is read (sum(g * g) for the gradient norm, sum(g * xhat) for LayerNorm's weight), so the
// product never goes to memory. Made by the elementwise fusion pass, for f32 chains.
registerOp({
  name: 'fused_reduce',
  flops: (inputs, attrs) => 2 * numel((inputs[0] as TensorType).shape) * Math.max(1, (String(attrs.expr).match(/\(/g) ?? []).length),
  infer(inputs, attrs) {
    const op = reduceOpOf(attrs);
    const e = exprOf(attrs);
    composeScalar(e);
    if (inputs.length === 0) throw new KilnError('KILN_E011', 'fused_reduce needs operands');
    const first = inputs[0];
    for (const x of inputs) {
      if (typeof x === 'number' || typeof first === 'number' || x.dtype !== 'f32' || !sameShape(x.shape, first.shape)) {
        throw new KilnError('KILN_E011', 'fused_reduce operands must be f32 tensors of one shape');
      }
    }
    if (exprDType(e, inputs) !== 'f32') throw new KilnError('KILN_E011', 'fused_reduce reduces an f32 chain');
    return getOp(op).infer([first], attrs);
  },
  cpu(inputs, attrs, out, precision) {
    const tensors = inputs.map((x) => { if (typeof x === 'number') throw new Error('fused_reduce of a scalar'); return x; });
    const { shape } = tensors[0].type;
    const values = evaluate(composeScalar(exprOf(attrs), precision), tensors, shape, allocData('f32', numel(shape), precision));
    return getOp(reduceOpOf(attrs)).cpu([{ type: tensors[0].type, data: values }], attrs, out, precision);
  },
});

export function reduceOpOf(attrs: Attrs): 'sum' | 'mean' {
  if (attrs.op !== 'sum' && attrs.op !== 'mean') throw new KilnError('KILN_E011', `fused_reduce op must be sum or mean, got ${String(attrs.op)}`);
  return attrs.op;
}

// Elementwise ops with NumPy broadcasting. Each is its scalar function in JS, a dtype rule and a gradient;
// `elementwiseOp` builds the type rule and the CPU reference from them. Their WGSL expressions are a
// table keyed by op name in codegen/wgsl/elementwise.ts, beside the one kernel that lowers them all.

import { type GradContext, type GradRule, inputGrad } from '../autograd.ts';
import { DTYPES, DTYPE_INFO, F32_MAX, FLOAT_DTYPES } from '../dtypes.ts';
import { KilnError } from '../errors.ts';
import { type Precision, allocData } from '../host.ts';
import type { Node, Operand } from '../graph.ts';
import { type OpDef, type OperandType, type ScalarFn, registerOp } from '../registry.ts';
import { type DType, type TensorType, broadcastShapes, formatType, isDType, numel } from '../types.ts';
import { broadcastIndex } from './check.ts';
import { erf, gelu } from './math.ts';

/** How the output dtype follows from the operands (scalar literals take their tensor's dtype). */
type DTypeRule = (op: string, inputs: readonly OperandType[]) => DType;

const sameNumeric: DTypeRule = (op, inputs) => allSame(op, tensorDTypes(inputs), [...FLOAT_DTYPES, 'i32']);
const sameFloat: DTypeRule = (op, inputs) => allSame(op, tensorDTypes(inputs), FLOAT_DTYPES);
const sameAnyToBool: DTypeRule = (op, inputs) => (allSame(op, tensorDTypes(inputs), DTYPES), 'bool');
const boolOnly: DTypeRule = (op, inputs) => allSame(op, tensorDTypes(inputs), ['bool']);

/** where(cond, a, b) and masked_fill(x, mask, value): operand `cond` is bool, the values share a dtype. */
function selectRule(condIndex: number): DTypeRule {
  return (op, inputs) => {
    const cond = inputs[condIndex];
    if (typeof cond === 'number' || cond.dtype !== 'bool') {
      const got = typeof cond === 'number' ? `the scalar ${cond}` : formatType(cond);
      throw new KilnError('KILN_E002', `${op} needs a bool mask, got ${got}; compare it first (e.g. mask == 0)`);
    }
    const values = inputs.filter((_, i) => i !== condIndex);
    const dtypes = tensorDTypes(values);
    return dtypes.length === 0 ? 'f32' : allSame(op, dtypes, DTYPES);
  };
}

function tensorDTypes(inputs: readonly OperandType[]): DType[] {
  return inputs.filter((x): x is TensorType => typeof x !== 'number').map((t) => t.dtype);
}

function allSame(op: string, dtypes: DType[], allowed: readonly DType[]): DType {
  const first = dtypes[0];
  for (const d of dtypes) {
    if (d !== first) throw new KilnError('KILN_E002', `${op} operands have different dtypes ${dtypes.join(' and ')}; cast one with .to()`);
  }
  if (!allowed.includes(first)) throw new KilnError('KILN_E002', `${op} does not take ${first} operands (it takes ${allowed.join(', ')})`);
  return first;
}

/** Type rule shared by elementwise ops: broadcast tensor shapes, scalar literals adopt the tensor dtype. */
export function inferElementwise(op: string, inputs: readonly OperandType[], rule: DTypeRule): TensorType {
  const tensors = inputs.filter((x): x is TensorType => typeof x !== 'number');
  if (tensors.length === 0) throw new KilnError('KILN_E011', `${op} needs at least one tensor operand`);
  let shape: number[] = [...tensors[0].shape];
  for (const t of tensors.slice(1)) {
    const b = broadcastShapes(shape, t.shape);
    if (!b) {
      const shown = tensors.map(formatType).join(' and ');
      throw new KilnError('KILN_E001', `${op} cannot broadcast ${shown}`);
    }
    shape = b;
  }
  return { dtype: rule(op, inputs), shape };
}

/** The dtype a scalar literal operand takes: the output's, or the tensors' for ops giving bool (compares). */
export function scalarDType(inputs: readonly OperandType[], out: DType): DType {
  if (out !== 'bool') return out;
  const t = inputs.find((x): x is TensorType => typeof x !== 'number');
  return t ? t.dtype : 'bool';
}

/**
 * A scalar literal as a kernel holds it: float values (f16's too) live in f32 registers, so at 'f32'
 * precision a float literal is an f32 constant, clamped to f32's finite range as codegen writes it
 * (infinities stay infinite). Computing with it in f64 and rounding once then gives the kernel's f32
 * result exactly for + - * / (f64 holds the exact result of two f32 operands to round from).
 */
export function literalValue(v: number, dtype: DType, precision: Precision): number {
  if (precision !== 'f32' || !DTYPE_INFO[dtype].isFloat || !Number.isFinite(v)) return v;
  return Math.fround(Math.min(Math.max(v, -F32_MAX), F32_MAX));
}

interface ElementwiseSpec {
  name: string;
  arity: number;
  scalar: ScalarFn;
  dtype: DTypeRule;
  commutative?: boolean;
  /** Arithmetic per output element, for `kiln kernels`; 1 unless given (an estimate for erf and gelu). */
  flopsPerElement?: number;
  grad?: GradRule;
}

export function elementwiseOp(spec: ElementwiseSpec): OpDef {
  const { name, arity, scalar } = spec;
  return registerOp({
    name,
    scalar,
    commutative: spec.commutative,
    grad: spec.grad,
    infer(inputs) {
      if (inputs.length !== arity) throw new KilnError('KILN_E011', `${name} takes ${arity} operands, got ${inputs.length}`);
      return inferElementwise(name, inputs, spec.dtype);
    },
    cpu(inputs, _attrs, out, precision) {
      const n = numel(out.shape);
      const result = allocData(out.dtype, n, precision);
      const literalDType = scalarDType(inputs.map((x) => (typeof x === 'number' ? x : x.type)), out.dtype);
      const reads = inputs.map((x) => {
        if (typeof x === 'number') {
          const v = literalValue(x, literalDType, precision);
          return () => v;
        }
        const map = broadcastIndex(out.shape, x.type.shape);
        const data = x.data;
        return (i: number) => data[map[i]];
      });
      const args = new Array<number>(arity);
      for (let i = 0; i < n; i++) {
        for (let a = 0; a < arity; a++) args[a] = reads[a](i);
        result[i] = scalar.js(...args);
      }
      return result;
    },
    flops: (_inputs, _attrs, out) => (spec.flopsPerElement ?? 1) * numel(out.shape),
  });
}

const binary = (name: string, js: ScalarFn['js'], commutative = false, dtype = sameNumeric, grad?: GradRule) =>
  elementwiseOp({ name, arity: 2, scalar: { js }, dtype, commutative, grad });
const unaryFloat = (name: string, js: ScalarFn['js'], grad: GradRule, flopsPerElement?: number) =>
  elementwiseOp({ name, arity: 1, scalar: { js }, dtype: sameFloat, flopsPerElement, grad });
const compare = (name: string, js: (a: number, b: number) => boolean, commutative = false) =>
  elementwiseOp({ name, arity: 2, scalar: { js: (a, b) => Number(js(a, b)) }, dtype: sameAnyToBool, commutative });

/** A gradient rule from one formula per input, `(ctx, g, x0, x1, ...) => d loss / d x_k` (null: a mask, no gradient), summed back over broadcasting. */
const gradOf =
  (...formulas: (((ctx: GradContext, g: Node, ...xs: Operand[]) => Node) | null)[]): GradRule =>
  (ctx) =>
    formulas.map((f, k) => (f ? inputGrad(ctx, k, () => f(ctx, ctx.grad, ...ctx.node.inputs)) : null));
/** Shorthand for building backward nodes inside formulas. */
const op = (ctx: GradContext, name: string, ...inputs: Operand[]) => ctx.add(name, inputs);

binary('add', (a, b) => a + b, true, sameNumeric, gradOf((_, g) => g, (_, g) => g));
binary('sub', (a, b) => a - b, false, sameNumeric, gradOf((_, g) => g, (c, g) => op(c, 'neg', g)));
binary('mul', (a, b) => a * b, true, sameNumeric, gradOf((c, g, _a, b) => op(c, 'mul', g, b), (c, g, a) => op(c, 'mul', g, a)));
// d(a/b)/db = -a/b^2 = -out/b
binary('div', (a, b) => a / b, false, sameFloat, gradOf(
  (c, g, _a, b) => op(c, 'div', g, b),
  (c, g, _a, b) => op(c, 'neg', op(c, 'div', op(c, 'mul', g, c.node), b)),
));
// d(a^b)/da = b a^(b-1); d(a^b)/db = a^b log a
binary('pow', (a, b) => Math.pow(a, b), false, sameFloat, gradOf(
  (c, g, a, b) => op(c, 'mul', g, op(c, 'mul', op(c, 'pow', a, typeof b === 'number' ? b - 1 : op(c, 'sub', b, 1)), b)),
  (c, g, a) => op(c, 'mul', g, op(c, 'mul', c.node, op(c, 'log', a))),
));
binary('maximum', (a, b) => Math.max(a, b), true);
binary('minimum', (a, b) => Math.min(a, b), true);

compare('eq', (a, b) => a === b, true);
compare('ne', (a, b) => a !== b, true);
compare('lt', (a, b) => a < b);
compare('le', (a, b) => a <= b);
compare('gt', (a, b) => a > b);
compare('ge', (a, b) => a >= b);

elementwiseOp({ name: 'neg', arity: 1, scalar: { js: (a) => -a }, dtype: sameNumeric, grad: gradOf((c, g) => op(c, 'neg', g)) });
elementwiseOp({ name: 'logical_not', arity: 1, scalar: { js: (a) => Number(!a) }, dtype: boolOnly });
elementwiseOp({ name: 'logical_and', arity: 2, scalar: { js: (a, b) => Number(a && b) }, dtype: boolOnly, commutative: true });

unaryFloat('exp', Math.exp, gradOf((c, g) => op(c, 'mul', g, c.node)));
unaryFloat('log', Math.log, gradOf((c, g, a) => op(c, 'div', g, a)));
unaryFloat('sqrt', Math.sqrt, gradOf((c, g) => op(c, 'div', op(c, 'mul', g, 0.5), c.node)));
// d rsqrt(a) = -1/2 a^(-3/2) = -1/2 out^3
unaryFloat('rsqrt', (a) => 1 / Math.sqrt(a), gradOf((c, g) => op(c, 'mul', op(c, 'mul', g, -0.5), op(c, 'mul', c.node, op(c, 'mul', c.node, c.node)))));
unaryFloat('tanh', Math.tanh, gradOf((c, g) => op(c, 'mul', g, op(c, 'sub', 1, op(c, 'mul', c.node, c.node)))));
unaryFloat('relu', (a) => Math.max(a, 0), gradOf((c, g, a) => op(c, 'mul', g, c.add('cast', [op(c, 'gt', a, 0)], { dtype: c.node.type.dtype }))));
// FLOPs estimated from the WGSL erf (codegen/wgsl/elementwise.ts): about 25 operations for erfc's polynomial, division and exp, 5 more for gelu around it.
// d erf(a) = 2/sqrt(pi) exp(-a^2); d gelu(a) = Phi(a) + a phi(a), the exact (erf) GELU's derivative.
unaryFloat('erf', erf, gradOf((c, g, a) => op(c, 'mul', g, op(c, 'mul', op(c, 'exp', op(c, 'mul', op(c, 'mul', a, a), -1)), 2 / Math.sqrt(Math.PI)))), 25);
unaryFloat('gelu', gelu, gradOf((c, g, a) => op(c, 'mul', g, geluDerivative(c, a))), 30);

function geluDerivative(c: GradContext, a: Operand): Node {
  const cdf = op(c, 'mul', op(c, 'add', op(c, 'erf', op(c, 'mul', a, Math.SQRT1_2)), 1), 0.5);
  const pdf = op(c, 'mul', op(c, 'exp', op(c, 'mul', op(c, 'mul', a, a), -0.5)), 1 / Math.sqrt(2 * Math.PI));
  return op(c, 'add', cdf, op(c, 'mul', a, pdf));
}

// where(cond, a, b): a where cond is true, else b.
elementwiseOp({
  name: 'where',
  arity: 3,
  scalar: { js: (c, a, b) => (c ? a : b) },
  dtype: selectRule(0),
  grad: gradOf(
    null,
    (c, g, cond) => c.add('where', [cond, g, 0]),
    (c, g, cond) => c.add('where', [cond, 0, g]),
  ),
});

// masked_fill(x, mask, value): value where mask is true, else x (torch.Tensor.masked_fill).
elementwiseOp({
  name: 'masked_fill',
  arity: 3,
  scalar: { js: (x, m, v) => (m ? v : x) },
  dtype: selectRule(1),
  // x's gradient is zero where the mask filled; a tensor fill value gets the gradient of the filled places.
  grad: gradOf(
    (c, g, _x, mask) => c.add('masked_fill', [g, mask, 0]),
    null,
    (c, g, _x, mask) => c.add('masked_fill', [g, c.add('logical_not', [mask]), 0]),
  ),
});

/** A value converted to `to` as cast does: floats keep it (the store rounds), integers truncate toward zero, bool is 0/1. */
export function convert(v: number, to: DType): number {
  const info = DTYPE_INFO[to];
  return info.isFloat ? v : info.isInt ? Math.trunc(v) : Number(v !== 0);
}

// cast(x) {dtype}: numeric conversion; bool is 0/1.
registerOp({
  name: 'cast',
  infer(inputs, attrs) {
    const t = inputs[0];
    const to = attrs.dtype;
    if (inputs.length !== 1 || typeof t === 'number') throw new KilnError('KILN_E011', 'cast takes one tensor');
    if (typeof to !== 'string' || !isDType(to)) throw new KilnError('KILN_E011', `cast needs a dtype attribute, got ${String(to)}`);
    return { dtype: to, shape: [...t.shape] };
  },
  cpu(inputs, _attrs, out, precision) {
    const x = inputs[0];
    if (typeof x === 'number') throw new Error('cast of a scalar');
    const result = allocData(out.dtype, numel(out.shape), precision);
    for (let i = 0; i < result.length; i++) result[i] = convert(x.data[i], out.dtype);
    return result;
  },
  // Between floats (autocast's f32 <-> f16) the gradient is cast back to the operand's dtype; integer and bool operands take none.
  grad: (ctx) => {
    const x = ctx.node.inputs[0];
    if (!ctx.needs(0) || typeof x === 'number') return [null];
    return [x.type.dtype === ctx.grad.type.dtype ? ctx.grad : ctx.add('cast', [ctx.grad], { dtype: x.type.dtype })];
  },
});


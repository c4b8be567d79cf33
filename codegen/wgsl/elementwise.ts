// Elementwise ops in WGSL: each op's expression, keyed by op name (its meaning, JS twin and gradient
// are its entry in ir/ops/elementwise.ts), and the one kernel that lowers them all, with NumPy
// broadcasting. fused_elementwise and fused_reduce compose the same expressions over their chains.
// Adding an elementwise op: its entry in ir/ops/elementwise.ts, and its line in SCALAR_WGSL.

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import { scalarDType } from '../../ir/ops/elementwise.ts';
import { type Expr, castTarget, exprOf, reduceOpOf } from '../../ir/ops/fused_elementwise.ts';
import { formatNumber } from '../../ir/text.ts';
import { type DType, type TensorType, numel, sameShape } from '../../ir/types.ts';
import { ELEMENTWISE_GROUP, F32_BITS_WGSL, broadcastStrides, constDecl, coordLines, f32FromBits, groupsFor, indent, listParams, load, offsetExpr, storageType, store, valueType, wgslLiteral } from './helpers.ts';
import { ROUND_F16_WGSL, roundF16Wgsl } from './dtypes.ts';
import type { KernelPlan, KernelRequest, Lowering } from './plan.ts';
import { reduceKernel } from './reduce.ts';

/** One element of an elementwise op in WGSL: an expression over the argument expressions, and the module-scope WGSL it needs. */
export interface ScalarWgsl {
  readonly expr: (...args: string[]) => string;
  readonly decls?: string;
}

// erf, erfc and GELU in f32 with small *relative* error everywhere, so an f16 result is within 1 ULP of
// the correctly rounded one (Abramowitz & Stegun 7.1.26, used before, has absolute error 1.5e-7: up to
// 6 f16 ULP for erf near 0, 2 for GELU's left tail, where 1 + erf(x / sqrt 2) cancels). erfc is
// Numerical Recipes' erfcc (a Chebyshev fit, relative error below 1.2e-7 for z >= 0); erf uses its
// Taylor series below 0.5 and 1 - erfc above; GELU is x * erfc(-x / sqrt 2) / 2, no cancellation.
const ERF_WGSL = `fn kiln_erfc(z: f32) -> f32 { // z >= 0
  let t = 1.0 / (1.0 + 0.5 * z);
  let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
  return t * exp(p - z * z);
}
fn kiln_erf(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let x2 = x * x; // 2 / sqrt(pi) * sum of (-1)^n x^(2n+1) / (n! (2n + 1)), n <= 6
    return x * (1.1283791670955126 + x2 * (-0.37612638903183754 + x2 * (0.11283791670955126 + x2 * (-0.026866170645131252 + x2 * (0.005223977625442188 + x2 * (-0.0008548327023450852 + x2 * 0.00012055332981789664))))));
  }
  return sign(x) * (1.0 - kiln_erfc(abs(x)));
}
fn kiln_gelu(x: f32) -> f32 {
  let z = -x * ${Math.SQRT1_2}; // Phi(x) = erfc(z) / 2
  let c = kiln_erfc(abs(z));
  return 0.5 * x * select(2.0 - c, c, z >= 0.0);
}`;

const binaryOp = (op: string): ScalarWgsl => ({ expr: (a, b) => `(${a} ${op} ${b})` });
const call = (fn: string): ScalarWgsl => ({ expr: (...args) => `${fn}(${args.join(', ')})` });

/** Each elementwise op's WGSL, by op name. */
export const SCALAR_WGSL: Readonly<Record<string, ScalarWgsl>> = {
  add: binaryOp('+'),
  sub: binaryOp('-'),
  mul: binaryOp('*'),
  div: binaryOp('/'),
  pow: call('pow'),
  maximum: call('max'),
  minimum: call('min'),
  eq: binaryOp('=='),
  ne: binaryOp('!='),
  lt: binaryOp('<'),
  le: binaryOp('<='),
  gt: binaryOp('>'),
  ge: binaryOp('>='),
  neg: { expr: (a) => `(-${a})` },
  logical_not: { expr: (a) => `(!${a})` },
  logical_and: binaryOp('&&'),
  exp: call('exp'),
  log: call('log'),
  sqrt: call('sqrt'),
  rsqrt: call('inverseSqrt'),
  tanh: call('tanh'),
  relu: { expr: (a) => `max(${a}, 0.0)` },
  erf: { expr: (a) => `kiln_erf(${a})`, decls: ERF_WGSL },
  gelu: { expr: (a) => `kiln_gelu(${a})`, decls: ERF_WGSL },
  where: { expr: (c, a, b) => `select(${b}, ${a}, ${c})` },
  masked_fill: { expr: (x, m, v) => `select(${x}, ${v}, ${m})` },
};

/** The WGSL of an op inside a fused chain (a cast is written as its target dtype), or a clear error for one that has none. */
function scalarWgsl(op: string): ScalarWgsl {
  const to = castTarget(op);
  if (to) return { expr: (x) => convertWgsl(to, x), decls: narrowFloat(to) ? ROUND_F16_WGSL : undefined };
  const s = SCALAR_WGSL[op];
  if (!s) throw new KilnError('KILN_E011', `${op} has no WGSL expression (codegen/wgsl/elementwise.ts SCALAR_WGSL)`);
  return s;
}

/** The WGSL of a fused chain, composed from each op's own; infinite literals are made from their bits, as in masked_fill's own kernel. */
export function composeWgsl(e: Expr): ScalarWgsl {
  const ops = new Set<string>();
  let special = false;
  const walk = (x: Expr): void => {
    if ('literal' in x) special ||= !Number.isFinite(x.literal);
    if ('op' in x) {
      ops.add(x.op);
      x.args.forEach(walk);
    }
  };
  walk(e);
  const literal = (v: number) => (Number.isFinite(v) ? wgslLiteral(v, 'f32') : f32FromBits(v));
  const expr = (x: Expr, args: string[]): string =>
    'operand' in x ? args[x.operand] : 'literal' in x ? literal(x.literal) : scalarWgsl(x.op).expr(...x.args.map((a) => expr(a, args)));
  const decls = [...new Set([...ops].map((op) => scalarWgsl(op).decls).filter(Boolean)), ...(special ? [F32_BITS_WGSL] : [])].join('\n');
  return { expr: (...args) => expr(e, args), decls: decls || undefined };
}

/** A float stored narrower than its register (f16, held in f32). */
const narrowFloat = (to: DType) => DTYPE_INFO[to].isFloat && storageType(to) !== valueType(to);

/**
 * A value converted to dtype `to` inside a chain, held as `to`'s register type: a float stored
 * narrower than its register (f16) is rounded to it there and stays an f32 (kiln_round_f16_1: a
 * conversion pair `f32(f16(x))` need not round in registers, and on lavapipe does not); the others
 * convert (`f32(x)`, `i32(x)`, `bool(x)`).
 */
function convertWgsl(to: DType, x: string): string {
  return narrowFloat(to) ? roundF16Wgsl(x) : `${valueType(to)}(${x})`;
}

/** A chain whose last op is a cast to the output's dtype needs no cast: the output's store is it. */
function withoutFinalCast(e: Expr, out: DType): Expr {
  return 'op' in e && castTarget(e.op) === out && DTYPE_INFO[out].isFloat ? e.args[0] : e;
}

const OPERAND_NAMES = ['a', 'b', 'c', 'd', 'e', 'f'];

/**
 * An elementwise kernel with NumPy broadcasting: one invocation per output element. Operands of the
 * output's shape read at `gid`; broadcast ones through strides in params; scalars are named consts.
 */
export function elementwiseKernel(req: KernelRequest, scalar: ScalarWgsl): KernelPlan {
  const { out } = req;
  const rank = out.shape.length;
  const inputNames: string[] = [];
  const consts: string[] = [];
  const lines: string[] = [];
  const params: Record<string, number> = { n: numel(out.shape) };
  const strided: Record<string, number> = {};
  // A literal is a constant of its dtype's register type: f16 values compute in f32 (ir/ops/elementwise.ts literalValue).
  const literalDType = valueType(scalarDType(req.inputs, out.dtype));
  const args = req.inputs.map((x, i) => {
    const name = OPERAND_NAMES[i];
    if (typeof x === 'number' && DTYPE_INFO[literalDType].isFloat && !Number.isFinite(x)) {
      // -inf stays -inf (masked_fill's usual fill): softmax of a row of it is NaN, as on the CPU.
      if (!consts.includes(F32_BITS_WGSL)) consts.push(F32_BITS_WGSL);
      lines.push(`let ${name} = ${f32FromBits(x)}; // ${formatNumber(x)}`);
      return name;
    }
    if (typeof x === 'number') {
      consts.push(constDecl(name, literalDType, x));
      return name;
    }
    inputNames.push(name);
    if (sameShape(x.shape, out.shape)) return load(name, x.dtype, 'gid');
    Object.assign(strided, listParams(`${name}_stride`, broadcastStrides(out.shape, x.shape)));
    lines.push(`let ${name}_at = ${offsetExpr(rank, 'i', `${name}_stride`)};`);
    return load(name, x.dtype, `${name}_at`);
  });
  if (lines.length > 0) {
    Object.assign(params, listParams('shape', out.shape), strided);
    lines.unshift(...coordLines('gid', rank, 'shape', 'i'));
  }
  lines.push(`out[gid] = ${store(out.dtype, scalar.expr(...args))};`);
  return {
    inputNames,
    params,
    decls: [...consts, scalar.decls ?? ''].filter(Boolean).join('\n'),
    body: `  if (gid >= params.n) { return; }\n${indent(lines)}`,
    workgroupSize: ELEMENTWISE_GROUP,
    workgroups: groupsFor(numel(out.shape), ELEMENTWISE_GROUP),
  };
}

/** Lowerings of every elementwise op, cast, and the fused chains. */
export const elementwiseLowerings: Record<string, Lowering> = {
  ...Object.fromEntries(Object.entries(SCALAR_WGSL).map(([op, scalar]) => [op, (req: KernelRequest) => elementwiseKernel(req, scalar)])),
  cast: (req) => elementwiseKernel(req, { expr: (a) => `${valueType(req.out.dtype)}(${a})` }),
  fused_elementwise: (req) => elementwiseKernel(req, composeWgsl(withoutFinalCast(exprOf(req.attrs), req.out.dtype))),
  fused_reduce(req) {
    const scalar = composeWgsl(exprOf(req.attrs));
    const names = req.inputs.map((_, i) => `x${i}`);
    const dtypes = (req.inputs as TensorType[]).map((t) => t.dtype);
    return reduceKernel(reduceOpOf(req.attrs), { names, value: (at) => scalar.expr(...names.map((n, i) => load(n, dtypes[i], at))), decls: scalar.decls })(req);
  },
};

// Elementwise ops in WGSL: each op's expression, keyed by op name (its meaning, JS twin and gradient
// are its entry in ir/ops/elementwise.ts), and the one kernel that lowers them all, with NumPy
// broadcasting. fused_elementwise and fused_reduce compose the same expressions over their chains.
// Adding an elementwise op: its entry in ir/ops/elementwise.ts, and its line in SCALAR_WGSL.

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { KilnError } from '../../ir/errors.ts';
import { type Expr, exprOf, reduceOpOf } from '../../ir/ops/fused_elementwise.ts';
import { formatNumber } from '../../ir/text.ts';
import { type DType, type TensorType, numel, sameShape } from '../../ir/types.ts';
import { ELEMENTWISE_GROUP, F32_BITS_WGSL, broadcastStrides, constDecl, coordLines, f32FromBits, groupsFor, indent, listParams, load, offsetExpr, store, valueType, wgslLiteral } from './helpers.ts';
import type { KernelPlan, KernelRequest, Lowering } from './plan.ts';
import { reduceKernel } from './reduce.ts';

/** One element of an elementwise op in WGSL: an expression over the argument expressions, and the module-scope WGSL it needs. */
export interface ScalarWgsl {
  readonly expr: (...args: string[]) => string;
  readonly decls?: string;
}

// erf in f32, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, under f32's own rounding of gelu).
const ERF_WGSL = `fn kiln_erf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
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
  gelu: { expr: (a) => `(0.5 * ${a} * (1.0 + kiln_erf(${a} * ${Math.SQRT1_2})))`, decls: ERF_WGSL },
  where: { expr: (c, a, b) => `select(${b}, ${a}, ${c})` },
  masked_fill: { expr: (x, m, v) => `select(${x}, ${v}, ${m})` },
};

/** The WGSL of an op inside a fused chain, or a clear error for one that has none. */
function scalarWgsl(op: string): ScalarWgsl {
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

const OPERAND_NAMES = ['a', 'b', 'c', 'd', 'e', 'f'];

/** The dtype of a scalar literal operand: the value dtype, or the tensors' dtype for ops giving bool. */
function scalarDType(req: KernelRequest): DType {
  if (req.out.dtype !== 'bool') return req.out.dtype;
  const t = req.inputs.find((x): x is TensorType => typeof x !== 'number');
  return t ? t.dtype : 'bool';
}

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
  const args = req.inputs.map((x, i) => {
    const name = OPERAND_NAMES[i];
    if (typeof x === 'number' && DTYPE_INFO[scalarDType(req)].isFloat && !Number.isFinite(x)) {
      // -inf stays -inf (masked_fill's usual fill): softmax of a row of it is NaN, as on the CPU.
      if (!consts.includes(F32_BITS_WGSL)) consts.push(F32_BITS_WGSL);
      lines.push(`let ${name} = ${f32FromBits(x)}; // ${formatNumber(x)}`);
      return name;
    }
    if (typeof x === 'number') {
      consts.push(constDecl(name, scalarDType(req), x));
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
  fused_elementwise: (req) => elementwiseKernel(req, composeWgsl(exprOf(req.attrs))),
  fused_reduce(req) {
    const scalar = composeWgsl(exprOf(req.attrs));
    const names = req.inputs.map((_, i) => `x${i}`);
    return reduceKernel(reduceOpOf(req.attrs), { names, value: (at) => scalar.expr(...names.map((n) => `${n}[${at}]`)), decls: scalar.decls })(req);
  },
};

// Elementwise ops with NumPy broadcasting. Each is its scalar function (JS and WGSL) plus a dtype rule;
// `elementwiseOp` builds the type rule, the CPU reference and (in codegen) the kernel from it.

import { KilnError } from '../errors.ts';
import { allocData } from '../host.ts';
import { type OpDef, type OperandType, type ScalarFn, registerOp } from '../registry.ts';
import { type DType, type TensorType, broadcastShapes, formatType, isDType, numel } from '../types.ts';
import { broadcastIndex } from './check.ts';
import { erf, gelu } from './math.ts';
import { elementwiseKernel } from './wgsl.ts';

/** How the output dtype follows from the operands (scalar literals take their tensor's dtype). */
type DTypeRule = (op: string, inputs: readonly OperandType[]) => DType;

const sameNumeric: DTypeRule = (op, inputs) => allSame(op, tensorDTypes(inputs), ['f32', 'i32']);
const sameFloat: DTypeRule = (op, inputs) => allSame(op, tensorDTypes(inputs), ['f32']);
const sameAnyToBool: DTypeRule = (op, inputs) => (allSame(op, tensorDTypes(inputs), ['f32', 'i32', 'bool']), 'bool');
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
    return dtypes.length === 0 ? 'f32' : allSame(op, dtypes, ['f32', 'i32', 'bool']);
  };
}

function tensorDTypes(inputs: readonly OperandType[]): DType[] {
  return inputs.filter((x): x is TensorType => typeof x !== 'number').map((t) => t.dtype);
}

function allSame(op: string, dtypes: DType[], allowed: DType[]): DType {
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

interface ElementwiseSpec {
  name: string;
  arity: number;
  scalar: ScalarFn;
  dtype: DTypeRule;
  commutative?: boolean;
  /** Arithmetic per output element, for `kiln kernels`; 1 unless given (an estimate for erf and gelu). */
  flopsPerElement?: number;
}

export function elementwiseOp(spec: ElementwiseSpec): OpDef {
  const { name, arity, scalar } = spec;
  return registerOp({
    name,
    scalar,
    commutative: spec.commutative,
    infer(inputs) {
      if (inputs.length !== arity) throw new KilnError('KILN_E011', `${name} takes ${arity} operands, got ${inputs.length}`);
      return inferElementwise(name, inputs, spec.dtype);
    },
    cpu(inputs, _attrs, out, precision) {
      const n = numel(out.shape);
      const result = allocData(out.dtype, n, precision);
      const reads = inputs.map((x) => {
        if (typeof x === 'number') return () => x;
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
    wgsl: (req) => elementwiseKernel(req, scalar),
    flops: (_inputs, _attrs, out) => (spec.flopsPerElement ?? 1) * numel(out.shape),
  });
}

const binary = (name: string, js: ScalarFn['js'], wgsl: ScalarFn['wgsl'], commutative = false, dtype = sameNumeric) =>
  elementwiseOp({ name, arity: 2, scalar: { js, wgsl }, dtype, commutative });
const unaryFloat = (name: string, js: ScalarFn['js'], wgsl: ScalarFn['wgsl'], decls?: string, flopsPerElement?: number) =>
  elementwiseOp({ name, arity: 1, scalar: { js, wgsl, decls }, dtype: sameFloat, flopsPerElement });
const compare = (name: string, js: (a: number, b: number) => boolean, wgslOp: string, commutative = false) =>
  elementwiseOp({ name, arity: 2, scalar: { js: (a, b) => Number(js(a, b)), wgsl: (a, b) => `(${a} ${wgslOp} ${b})` }, dtype: sameAnyToBool, commutative });

binary('add', (a, b) => a + b, (a, b) => `(${a} + ${b})`, true);
binary('sub', (a, b) => a - b, (a, b) => `(${a} - ${b})`);
binary('mul', (a, b) => a * b, (a, b) => `(${a} * ${b})`, true);
binary('div', (a, b) => a / b, (a, b) => `(${a} / ${b})`, false, sameFloat);
binary('pow', (a, b) => Math.pow(a, b), (a, b) => `pow(${a}, ${b})`, false, sameFloat);
binary('maximum', (a, b) => Math.max(a, b), (a, b) => `max(${a}, ${b})`, true);
binary('minimum', (a, b) => Math.min(a, b), (a, b) => `min(${a}, ${b})`, true);

compare('eq', (a, b) => a === b, '==', true);
compare('ne', (a, b) => a !== b, '!=', true);
compare('lt', (a, b) => a < b, '<');
compare('le', (a, b) => a <= b, '<=');
compare('gt', (a, b) => a > b, '>');
compare('ge', (a, b) => a >= b, '>=');

elementwiseOp({ name: 'neg', arity: 1, scalar: { js: (a) => -a, wgsl: (a) => `(-${a})` }, dtype: sameNumeric });
elementwiseOp({ name: 'logical_not', arity: 1, scalar: { js: (a) => Number(!a), wgsl: (a) => `(!${a})` }, dtype: boolOnly });
elementwiseOp({ name: 'logical_and', arity: 2, scalar: { js: (a, b) => Number(a && b), wgsl: (a, b) => `(${a} && ${b})` }, dtype: boolOnly, commutative: true });

unaryFloat('exp', Math.exp, (a) => `exp(${a})`);
unaryFloat('log', Math.log, (a) => `log(${a})`);
unaryFloat('sqrt', Math.sqrt, (a) => `sqrt(${a})`);
unaryFloat('rsqrt', (a) => 1 / Math.sqrt(a), (a) => `inverseSqrt(${a})`);
unaryFloat('tanh', Math.tanh, (a) => `tanh(${a})`);
unaryFloat('relu', (a) => Math.max(a, 0), (a) => `max(${a}, 0.0)`);
// FLOPs estimated from kiln_erf: about 15 operations for the polynomial and exp, 5 more for gelu around it.
unaryFloat('erf', erf, (a) => `kiln_erf(${a})`, ERF_WGSL(), 15);
unaryFloat('gelu', gelu, (a) => `(0.5 * ${a} * (1.0 + kiln_erf(${a} * ${Math.SQRT1_2})))`, ERF_WGSL(), 20);

// erf in f32, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, under f32's own rounding of gelu).
function ERF_WGSL(): string {
  return `fn kiln_erf(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}`;
}

// where(cond, a, b): a where cond is true, else b.
elementwiseOp({
  name: 'where',
  arity: 3,
  scalar: { js: (c, a, b) => (c ? a : b), wgsl: (c, a, b) => `select(${b}, ${a}, ${c})` },
  dtype: selectRule(0),
});

// masked_fill(x, mask, value): value where mask is true, else x (torch.Tensor.masked_fill).
elementwiseOp({
  name: 'masked_fill',
  arity: 3,
  scalar: { js: (x, m, v) => (m ? v : x), wgsl: (x, m, v) => `select(${x}, ${v}, ${m})` },
  dtype: selectRule(1),
});

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
    for (let i = 0; i < result.length; i++) {
      const v = x.data[i];
      result[i] = out.dtype === 'bool' ? Number(v !== 0) : out.dtype === 'i32' ? Math.trunc(v) : v;
    }
    return result;
  },
  wgsl: (req) => elementwiseKernel(req, castScalar(req.out.dtype)),
});

function castScalar(to: DType): ScalarFn {
  const wgslType = to === 'bool' ? 'bool' : to;
  return { js: (a) => a, wgsl: (a) => `${wgslType}(${a})` };
}


// The functional API (torch.nn.functional and torch.* ops nanoGPT uses). Each function is one
// `apply` of a registered op; traced, it becomes one IR node; eager, it runs one kernel.

import { KilnError } from '../../ir/errors.ts';
import type { Attrs } from '../../ir/graph.ts';
import { type DType, type Shape, formatType, numel } from '../../ir/types.ts';
import { type Arg, apply, isTracing } from './dispatch.ts';
import { callerLoc } from './loc.ts';
import { nextSeed } from './random.ts';
import type { Tensor } from './tensor.ts';

type Operand = Tensor | number;

// ---- shape ----

/** view/reshape; one dim may be -1 and is inferred. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const known = shape.filter((d) => d !== -1);
  const holes = shape.length - known.length;
  if (holes > 1) throw new KilnError('KILN_E011', `view/reshape takes at most one -1, got [${shape.join(',')}]`, callerLoc());
  const rest = numel(known);
  const resolved = holes === 1 ? shape.map((d) => (d === -1 ? (rest === 0 ? 0 : x.numel() / rest) : d)) : [...shape];
  if (resolved.some((d) => !Number.isInteger(d))) {
    throw new KilnError('KILN_E001', `cannot view ${formatType(x.type)} as [${shape.join(',')}]`, callerLoc());
  }
  return apply('reshape', [x], { shape: resolved });
}

export const transpose = (x: Tensor, dim0: number, dim1: number) => apply('transpose', [x], { dim0, dim1 });
export const permute = (x: Tensor, dims: readonly number[]) => apply('permute', [x], { dims: [...dims] });

/** x[..., start:end:step, ...] along `dim`, Python slice rules (negative and open ends). */
export function slice(x: Tensor, dim: number, start = 0, end?: number, step = 1): Tensor {
  const attrs: Attrs = end === undefined ? { dim, start, step } : { dim, start, end, step };
  return apply('slice', [x], attrs);
}

/** torch.split with one chunk size: the last chunk may be smaller. */
export function split(x: Tensor, splitSize: number, dim = 0): Tensor[] {
  const d = dim < 0 ? dim + x.ndim : dim;
  const size = x.shape[d];
  if (!(splitSize > 0) || size === undefined) {
    throw new KilnError('KILN_E011', `split(${splitSize}, dim=${dim}) is invalid for ${formatType(x.type)}`, callerLoc());
  }
  const parts: Tensor[] = [];
  for (let start = 0; start < size; start += splitSize) parts.push(slice(x, d, start, Math.min(start + splitSize, size)));
  return parts;
}

export const cast = (x: Tensor, dtype: DType) => apply('cast', [x], { dtype });

// ---- elementwise ----

export const add = (a: Operand, b: Operand) => apply('add', [a, b]);
export const sub = (a: Operand, b: Operand) => apply('sub', [a, b]);
export const mul = (a: Operand, b: Operand) => apply('mul', [a, b]);
export const div = (a: Operand, b: Operand) => apply('div', [a, b]);
export const pow = (a: Operand, b: Operand) => apply('pow', [a, b]);
export const maximum = (a: Operand, b: Operand) => apply('maximum', [a, b]);
export const minimum = (a: Operand, b: Operand) => apply('minimum', [a, b]);
export const eq = (a: Operand, b: Operand) => apply('eq', [a, b]);
export const ne = (a: Operand, b: Operand) => apply('ne', [a, b]);
export const lt = (a: Operand, b: Operand) => apply('lt', [a, b]);
export const le = (a: Operand, b: Operand) => apply('le', [a, b]);
export const gt = (a: Operand, b: Operand) => apply('gt', [a, b]);
export const ge = (a: Operand, b: Operand) => apply('ge', [a, b]);
export const neg = (x: Tensor) => apply('neg', [x]);
export const exp = (x: Tensor) => apply('exp', [x]);
export const log = (x: Tensor) => apply('log', [x]);
export const sqrt = (x: Tensor) => apply('sqrt', [x]);
export const rsqrt = (x: Tensor) => apply('rsqrt', [x]);
export const tanh = (x: Tensor) => apply('tanh', [x]);
export const relu = (x: Tensor) => apply('relu', [x]);
export const erf = (x: Tensor) => apply('erf', [x]);
export const logicalNot = (x: Tensor) => apply('logical_not', [x]);
export const logicalAnd = (a: Tensor, b: Tensor) => apply('logical_and', [a, b]);
/** Exact GELU (erf form), as nanoGPT's nn.GELU(). */
export const gelu = (x: Tensor) => apply('gelu', [x]);
/** torch.where(cond, a, b). */
export const where = (cond: Tensor, a: Operand, b: Operand) => apply('where', [cond, a, b]);
/** Tensor.masked_fill(mask, value): value where mask is true. */
export const maskedFill = (x: Tensor, mask: Tensor, value: number) => apply('masked_fill', [x, mask, value]);

// ---- reductions and row ops ----

function reduceDims(x: Tensor, dim: number | number[] | undefined): number[] {
  if (dim === undefined) return [...x.shape.keys()];
  return Array.isArray(dim) ? dim : [dim];
}
export const sum = (x: Tensor, dim?: number | number[], keepdim = false) => apply('sum', [x], { dims: reduceDims(x, dim), keepdim });
export const mean = (x: Tensor, dim?: number | number[], keepdim = false) => apply('mean', [x], { dims: reduceDims(x, dim), keepdim });
export const amax = (x: Tensor, dim?: number | number[], keepdim = false) => apply('amax', [x], { dims: reduceDims(x, dim), keepdim });
export const softmax = (x: Tensor, dim: number) => apply('softmax', [x], { dim });

export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor | null, eps = 1e-5): Tensor {
  return apply('layer_norm', bias ? [x, weight, bias] : [x, weight], { eps });
}

/** Mean cross-entropy of logits [N, C] against class indices [N]; rows whose target is ignoreIndex are skipped. */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: { ignoreIndex?: number } = {}): Tensor {
  return apply('cross_entropy', [logits, targets], { ignoreIndex: opts.ignoreIndex ?? -100 });
}

// ---- linear algebra, lookup ----

export const matmul = (a: Tensor, b: Tensor) => apply('matmul', [a, b], { transposeA: false, transposeB: false });

/** F.linear: x @ weight^T + bias, the transpose folded into the matmul. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const y = apply('matmul', [x, weight], { transposeA: false, transposeB: true });
  return bias ? add(y, bias) : y;
}

/** F.embedding(input, weight): rows of weight gathered by the indices in input. */
export const embedding = (input: Tensor, weight: Tensor) => apply('embedding', [weight, input]);

// ---- dropout and attention ----

/**
 * A fresh seed for an eager dropout site. Traced, there is none to draw: the tracer numbers the site
 * and gives it the graph's `rng` operand, drawn per call (compiler/tracer.ts), so tracing draws nothing.
 */
function eagerSeed(): Attrs {
  return isTracing() ? {} : { seed: nextSeed() };
}

export function dropout(x: Tensor, p = 0.5, training = true): Tensor {
  const attrs: Attrs = training && p > 0 ? { p, training, ...eagerSeed() } : { p, training };
  return apply('dropout', [x], attrs);
}

export interface SdpaOptions {
  /** Bool (true keeps) or additive float mask, broadcast to [..., L, S]. */
  attnMask?: Tensor | null;
  isCausal?: boolean;
  dropoutP?: number;
  /** Defaults to 1/sqrt(head dim). */
  scale?: number | null;
}

/** F.scaled_dot_product_attention: softmax(q k^T * scale + mask) v. */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: SdpaOptions = {}): Tensor {
  const dropoutP = opts.dropoutP ?? 0;
  const attrs = { isCausal: opts.isCausal ?? false, scale: opts.scale ?? null, dropoutP, ...(dropoutP > 0 ? eagerSeed() : {}) };
  const inputs: Arg[] = opts.attnMask ? [q, k, v, opts.attnMask] : [q, k, v];
  return apply('sdpa', inputs, attrs);
}

// ---- factories ----

export const full = (shape: Shape, value: number, dtype: DType = 'f32') => apply('full', [], { value, dtype, shape: [...shape] });
export const ones = (shape: Shape, dtype: DType = 'f32') => full(shape, 1, dtype);
export const zeros = (shape: Shape, dtype: DType = 'f32') => full(shape, 0, dtype);

/** torch.arange(end) or arange(start, end, step); integers give i32. */
export function arange(startOrEnd: number, end?: number, step = 1, dtype?: DType): Tensor {
  const [start, stop] = end === undefined ? [0, startOrEnd] : [startOrEnd, end];
  const n = Math.max(0, Math.ceil((stop - start) / step));
  const dt = dtype ?? ([start, stop, step].every(Number.isInteger) ? 'i32' : 'f32');
  return apply('arange', [], { start, step, dtype: dt, shape: [n] });
}

export const tril = (x: Tensor, diagonal = 0) => apply('tril', [x], { diagonal });
export const triu = (x: Tensor, diagonal = 0) => apply('triu', [x], { diagonal });

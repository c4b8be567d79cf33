// Tensor types: a dtype (ir/dtypes.ts) and a static shape. Every IR value has one.

import type { DType } from './dtypes.ts';

export { DTYPES, isDType, type DType } from './dtypes.ts';
export type Shape = readonly number[];

export interface TensorType {
  readonly dtype: DType;
  readonly shape: Shape;
}

export function tensorType(dtype: DType, shape: Shape): TensorType {
  return { dtype, shape: [...shape] };
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a contiguous tensor. */
export function stridesOf(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function sameType(a: TensorType, b: TensorType): boolean {
  return a.dtype === b.dtype && sameShape(a.shape, b.shape);
}

/** `f32[2,4,24,24]`, the form the IR text and error messages use. */
export function formatType(t: TensorType): string {
  return `${t.dtype}[${t.shape.join(',')}]`;
}

/** NumPy broadcasting of two shapes; null when they do not broadcast. */
export function broadcastShapes(a: Shape, b: Shape): number[] | null {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) return null;
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/** Resolves a possibly negative dim against a rank, or returns null when out of range. */
export function normalizeDim(dim: number, rank: number): number | null {
  const d = dim < 0 ? dim + rank : dim;
  return Number.isInteger(d) && d >= 0 && d < rank ? d : null;
}

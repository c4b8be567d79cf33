// Shared checks and index helpers for op type rules and CPU references.

import { DTYPE_INFO, FLOAT_DTYPES } from '../dtypes.ts';
import { KilnError } from '../errors.ts';
import type { Attrs, AttrValue } from '../graph.ts';
import type { HostData } from '../host.ts';
import type { CpuOperand, OperandType } from '../registry.ts';
import { type DType, type Shape, type TensorType, formatType, normalizeDim, stridesOf } from '../types.ts';

export function tensorArg(op: string, inputs: readonly OperandType[], i: number): TensorType {
  const t = inputs[i];
  if (t === undefined) throw new KilnError('KILN_E011', `${op} expects an input #${i}, got ${inputs.length} inputs`);
  if (typeof t === 'number') throw new KilnError('KILN_E011', `${op} input #${i} must be a tensor, got the scalar ${t}`);
  return t;
}

export function arity(op: string, inputs: readonly OperandType[], min: number, max = min): void {
  if (inputs.length < min || inputs.length > max) {
    const want = min === max ? `${min}` : `${min} to ${max}`;
    throw new KilnError('KILN_E011', `${op} takes ${want} inputs, got ${inputs.length}`);
  }
}

export function numAttr(op: string, attrs: Attrs, name: string, fallback?: number): number {
  const v = attrs[name] ?? fallback;
  if (typeof v !== 'number') throw new KilnError('KILN_E011', `${op} needs a numeric attribute ${name}, got ${show(v)}`);
  return v;
}

export function intAttr(op: string, attrs: Attrs, name: string, fallback?: number): number {
  const v = numAttr(op, attrs, name, fallback);
  if (!Number.isInteger(v)) throw new KilnError('KILN_E011', `${op} attribute ${name} must be an integer, got ${v}`);
  return v;
}

export function boolAttr(op: string, attrs: Attrs, name: string, fallback?: boolean): boolean {
  const v = attrs[name] ?? fallback;
  if (typeof v !== 'boolean') throw new KilnError('KILN_E011', `${op} needs a boolean attribute ${name}, got ${show(v)}`);
  return v;
}

export function intListAttr(op: string, attrs: Attrs, name: string): number[] {
  const v = attrs[name];
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) {
    throw new KilnError('KILN_E011', `${op} needs an integer list attribute ${name}, got ${show(v)}`);
  }
  return [...v];
}

export function dimAttr(op: string, attrs: Attrs, name: string, rank: number): number {
  const raw = intAttr(op, attrs, name);
  const d = normalizeDim(raw, rank);
  if (d === null) throw new KilnError('KILN_E011', `${op} dim ${raw} is out of range for a tensor of rank ${rank}`);
  return d;
}

function show(v: AttrValue | undefined): string {
  return v === undefined ? 'nothing' : JSON.stringify(v);
}

export function expectDType(op: string, t: TensorType, ...allowed: TensorType['dtype'][]): void {
  if (!allowed.includes(t.dtype)) {
    throw new KilnError('KILN_E002', `${op} expects ${allowed.join(' or ')}, got ${formatType(t)}`);
  }
}

/**
 * The one float dtype of an op's float operands (f32 or f16): each must be a float, all the same. The op
 * computes in it (accumulating in f32) and, unless its rule says otherwise, returns it.
 */
export function floatDType(op: string, ...ts: TensorType[]): DType {
  const first = ts[0].dtype;
  for (const t of ts) {
    if (!DTYPE_INFO[t.dtype].isFloat) throw new KilnError('KILN_E002', `${op} expects ${FLOAT_DTYPES.join(' or ')}, got ${formatType(t)}`);
    if (t.dtype !== first) throw new KilnError('KILN_E002', `${op} operands have different dtypes ${ts.map((x) => x.dtype).join(' and ')}; cast one with .to()`);
  }
  return first;
}

export function tensorData(x: CpuOperand): HostData {
  if (typeof x === 'number') throw new Error('expected a tensor operand');
  return x.data;
}

/**
 * For an output shape and an input shape broadcast into it, the input's flat offset of each
 * output element. Precomputed once per call; the CPU reference is not the fast path.
 */
export function broadcastIndex(outShape: Shape, inShape: Shape): Int32Array {
  const n = outShape.reduce((a, b) => a * b, 1);
  const map = new Int32Array(n);
  const rank = outShape.length;
  const inStrides = stridesOf(inShape);
  const eff = outShape.map((_, i) => {
    const j = i - (rank - inShape.length);
    return j < 0 || inShape[j] === 1 ? 0 : inStrides[j];
  });
  const idx = new Array<number>(rank).fill(0);
  let off = 0;
  for (let k = 0; k < n; k++) {
    map[k] = off;
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      off += eff[d];
      if (idx[d] < outShape[d]) break;
      off -= eff[d] * idx[d];
      idx[d] = 0;
    }
  }
  return map;
}

/** Splits a shape around `dim` into (outer, size, inner) for reductions and row ops. */
export function splitAround(shape: Shape, dim: number): { outer: number; size: number; inner: number } {
  let outer = 1;
  let inner = 1;
  for (let i = 0; i < dim; i++) outer *= shape[i];
  for (let i = dim + 1; i < shape.length; i++) inner *= shape[i];
  return { outer, size: shape[dim], inner };
}

// WGSL text helpers shared by the op lowerings: literals, typed loads and stores, index arithmetic
// from shapes in the `params` uniform, workgroup reductions, and the generic one-element-per-invocation
// kernels (strided copy, generators; the elementwise one is in ./elementwise.ts). Pure string builders:
// nothing here touches a GPU.

import { DTYPE_INFO } from '../../ir/dtypes.ts';
import { valueType, wgslLiteral } from './dtypes.ts';
import type { KernelPlan, KernelRequest } from './plan.ts';
import { type DType, type Shape, type TensorType, numel, stridesOf } from '../../ir/types.ts';

// The dtype table's WGSL column (./dtypes.ts), re-exported for the lowerings that import their helpers from here.
export { F32_MAX } from '../../ir/dtypes.ts';
export { load, storageType, store, valueType, wgslLiteral, zeroLiteral } from './dtypes.ts';

/**
 * WGSL has no literal for an infinity or NaN, and a constant expression may not evaluate to one; a
 * function's result never is a constant expression, so kiln_f32_bits makes them at run time.
 */
export const F32_BITS_WGSL = 'fn kiln_f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }';

/** A WGSL expression for an f32 no literal writes (an infinity or NaN), from its bits; it needs F32_BITS_WGSL. */
export function f32FromBits(v: number): string {
  const bits = Number.isNaN(v) ? 0x7fc00000 : v > 0 ? 0x7f800000 : 0xff800000;
  return `kiln_f32_bits(0x${bits.toString(16)}u)`;
}

export function constDecl(name: string, dtype: DType, v: number): string {
  const info = DTYPE_INFO[dtype];
  const clamped = info.isFloat && !Number.isNaN(v) && Math.abs(v) > info.max;
  return `const ${name}: ${valueType(dtype)} = ${wgslLiteral(v, dtype)};${clamped ? ` // ${v}, clamped to the finite ${dtype} range` : ''}`;
}

/**
 * Reports the index `value` at flat `position` when it lies outside [0, size) and `when` holds (call it
 * once per index). `report_bad_index` is codegen's (./plan.ts); a negative i32 is a huge u32, so one
 * compare tests both ends. The kernel must still clamp the index it reads with.
 */
export function reportBadIndex(value: string, size: string, position: string, when?: string): string {
  return `if (${when ? `${when} && ` : ''}bitcast<u32>(${value}) >= ${size}) { report_bad_index(${position}, ${value}); }`;
}

/** Params `${prefix}0..` holding each entry of `values` (shapes, strides). */
export function listParams(prefix: string, values: readonly number[]): Record<string, number> {
  return Object.fromEntries(values.map((v, d) => [`${prefix}${d}`, v]));
}

/**
 * Lines that split the flat index `index` into coordinates `${coord}0..` over the shape held in
 * params `${shape}0..` (row-major, last dim fastest).
 */
export function coordLines(index: string, rank: number, shape: string, coord: string): string[] {
  if (rank === 0) return [];
  if (rank === 1) return [`let ${coord}0 = ${index};`];
  const lines = [`var ${coord}_rest = ${index};`];
  for (let d = rank - 1; d > 0; d--) {
    lines.push(`let ${coord}${d} = ${coord}_rest % params.${shape}${d};`, `${coord}_rest = ${coord}_rest / params.${shape}${d};`);
  }
  lines.push(`let ${coord}0 = ${coord}_rest;`);
  return lines;
}

/** `c0 * params.s0 + c1 * params.s1 ...`, or `0u` for rank 0. */
export function offsetExpr(rank: number, coord: string, stride: string): string {
  if (rank === 0) return '0u';
  return [...Array(rank).keys()].map((d) => `${coord}${d} * params.${stride}${d}`).join(' + ');
}

/** Strides that read `inShape` broadcast into `outShape` (0 along broadcast dims). */
export function broadcastStrides(outShape: Shape, inShape: Shape): number[] {
  const strides = stridesOf(inShape);
  const lead = outShape.length - inShape.length;
  return outShape.map((_, d) => (d < lead || inShape[d - lead] === 1 ? 0 : strides[d - lead]));
}

export function groupsFor(n: number, workgroupSize: number): number {
  return Math.ceil(n / workgroupSize);
}

/** Workgroup memory for `workgroupReduce`. */
export function reduceDecl(name: string, type: string, size: number): string {
  return `var<workgroup> ${name}: array<${type}, ${size}>;`;
}

/**
 * A tree reduction of each invocation's `value` over a power-of-two workgroup; every invocation
 * gets the result in `let ${result}`. Barriers sit in uniform control flow; `scratch` is reusable after.
 */
export function workgroupReduce(scratch: string, size: number, value: string, combine: (a: string, b: string) => string, result: string): string {
  if (size & (size - 1)) throw new Error(`workgroup reductions need a power-of-two size, got ${size}`);
  return [
    `${scratch}[lid] = ${value};`,
    'workgroupBarrier();',
    `for (var stride = ${size / 2}u; stride > 0u; stride = stride >> 1u) {`,
    `  if (lid < stride) { ${scratch}[lid] = ${combine(`${scratch}[lid]`, `${scratch}[lid + stride]`)}; }`,
    '  workgroupBarrier();',
    '}',
    `let ${result} = ${scratch}[0];`,
    'workgroupBarrier();',
  ].join('\n');
}

/** Indents every line of a block of statements (entries may hold several lines) for a readable body. */
export function indent(lines: readonly string[], by = '  '): string {
  return lines.flatMap((l) => l.split('\n')).map((l) => by + l).join('\n');
}

/** Invocations a workgroup of the one-per-element kernels (elementwise, copies, generators) has. */
export const ELEMENTWISE_GROUP = 256;

/**
 * Copies input `x` into the output's layout: output element at coordinates i reads x at
 * `offset + sum(i[d] * srcStrides[d])` (transpose, permute, slice). Elements copy as stored: f16 bit
 * patterns as they are, bools as their u32 words.
 */
export function stridedCopyKernel(req: KernelRequest, srcStrides: readonly number[], offset: number): KernelPlan {
  const rank = req.out.shape.length;
  const lines = [
    ...coordLines('gid', rank, 'shape', 'i'),
    `out[gid] = x[params.offset + ${offsetExpr(rank, 'i', 'src_stride')}];`,
  ];
  const n = numel(req.out.shape);
  return {
    inputNames: ['x'],
    params: { n, offset, ...listParams('shape', req.out.shape), ...listParams('src_stride', srcStrides) },
    body: `  if (gid >= params.n) { return; }\n${indent(lines)}`,
    workgroupSize: ELEMENTWISE_GROUP,
    workgroups: groupsFor(n, ELEMENTWISE_GROUP),
  };
}

/** A kernel that writes each output element from its index alone (full, arange, tril/triu masks). */
export function generateKernel(out: TensorType, params: Record<string, number>, inputNames: string[], decls: string, lines: string[]): KernelPlan {
  const n = numel(out.shape);
  return {
    inputNames,
    params: { n, ...params },
    decls,
    body: `  if (gid >= params.n) { return; }\n${indent(lines)}`,
    workgroupSize: ELEMENTWISE_GROUP,
    workgroups: groupsFor(n, ELEMENTWISE_GROUP),
  };
}

// Kernels over tensors bigger than one storage binding (maxStorageBufferBindingSize, 2 GiB on most GPUs;
// GPT-2's inference logits at B12 T1024 are 2.47 GB). The buffer itself may be that big (maxBufferSize);
// only a binding may not. A kernel whose work is independent per row of its output runs as several
// dispatches, each over a window of rows: its row-indexed operands and `out` are bound at byte offsets,
// its other operands whole. Each window's kernel is the op's own lowering for a node of the window's
// shape (meta `window` says which rows), so every element is computed by the same code as unsplit.
// A kernel that cannot be split this way fails with KILN_E009 naming the tensor, its size and the limit.
//
// The split rules are data: one entry per op (or family), saying which output dims flatten into rows
// and how each operand follows them. Adding a splittable op is adding one entry. Not split (E009):
// reductions (sum, mean: a window with fewer rows may take another summation path), operands read
// transposed or broadcast along the rows, random ops, and rows too small for the 256-byte offset
// alignment to fall on a row boundary within the limit.

import { DTYPE_INFO, bufferBytes } from '../ir/dtypes.ts';
import { KilnError } from '../ir/errors.ts';
import { type Node, isNode } from '../ir/graph.ts';
import type { KernelLimits } from '../ir/limits.ts';
import { getOp } from '../ir/registry.ts';
import { type TensorType, numel } from '../ir/types.ts';
import { type Kernel, describeNode, kernelFromPlan } from './index.ts';
import { matmulKernel, pickedMatmulTiling } from './wgsl/linalg.ts';
import { loweringOf } from './wgsl/index.ts';
import type { KernelPlan, KernelRequest } from './wgsl/plan.ts';

/** How one operand follows the rows: `rows` (its leading `dims` dims are the output's rows), or `whole` (bound entire, at `shape`). */
type OperandRole = { readonly role: 'rows'; readonly dims: number } | { readonly role: 'whole'; readonly shape: readonly number[] };

/** An op's split of one node: output dims [0, rowDims) flatten into rows; each tensor operand's role. */
interface RowSplit {
  readonly rowDims: number;
  readonly operands: readonly OperandRole[];
  /** Attrs of a window's node when they name dims (softmax's dim moves to 1). */
  readonly attrs?: Node['attrs'];
  /** The window's kernel, when it must not be the op's plain lowering for the window's shape. */
  readonly lower?: (req: KernelRequest) => KernelPlan;
}

/** A split rule: the split of a node, or why it has none. */
type SplitRule = (node: Node) => RowSplit | string;

const tensorsOf = (node: Node): Node[] => node.inputs.filter(isNode);

/**
 * Elementwise (NumPy broadcasting): the most leading output dims such that each operand either matches
 * them exactly (rows) or is 1 along all of them (whole, those dims dropped).
 */
const elementwise: SplitRule = (node) => {
  const out = node.type.shape;
  for (let p = out.length; p >= 1; p--) {
    const roles: OperandRole[] = [];
    for (const x of tensorsOf(node)) {
      const missing = out.length - x.type.shape.length;
      const lead = [...Array<number>(missing).fill(1), ...x.type.shape].slice(0, p);
      if (lead.every((d) => d === 1)) roles.push({ role: 'whole', shape: x.type.shape.slice(Math.max(0, p - missing)) });
      else if (lead.every((d, i) => d === out[i])) roles.push({ role: 'rows', dims: p - missing });
      else break;
    }
    if (roles.length === tensorsOf(node).length) return { rowDims: p, operands: roles };
  }
  return 'an operand broadcasts along the leading dims';
};

/** Ops whose first operand and output go row by row over all but the last dim; `rowOperands` are the other row-indexed operands. */
const lastDimRows =
  (...rowOperands: number[]): SplitRule =>
  (node) => ({
    rowDims: node.type.shape.length - 1,
    operands: tensorsOf(node).map((x, i) => (i === 0 || rowOperands.includes(i) ? { role: 'rows', dims: x.type.shape.length - 1 } : { role: 'whole', shape: x.type.shape })),
  });

// The window's product uses the whole product's tiling, so each element sums over K exactly as unsplit.
// A matmul_epilogue's chain operands follow the rows (a residual of the output's shape) or are read
// whole by every window (a bias broadcast along all of them).
const matmul: SplitRule = (node) => {
  const [a, b, ...extras] = tensorsOf(node);
  const { transposeA = false } = node.attrs as { transposeA?: boolean };
  if (transposeA) return 'its left operand is read transposed (its rows are not contiguous)';
  if (b.type.shape.slice(0, -2).some((d) => d !== 1)) return 'its right operand is batched';
  if (a.type.shape.length !== node.type.shape.length) return 'its left operand broadcasts over the batch';
  const rowDims = node.type.shape.length - 1;
  const extraRoles: OperandRole[] = [];
  for (const x of extras) {
    const missing = node.type.shape.length - x.type.shape.length;
    const lead = [...Array<number>(missing).fill(1), ...x.type.shape].slice(0, rowDims);
    if (lead.every((d) => d === 1)) extraRoles.push({ role: 'whole', shape: x.type.shape.slice(Math.max(0, rowDims - missing)) });
    else if (missing === 0 && lead.every((d, i) => d === node.type.shape[i])) extraRoles.push({ role: 'rows', dims: rowDims });
    else return `its epilogue operand ${describeNode(x)} broadcasts along some of the rows`;
  }
  const whole: KernelRequest = { inputs: tensorsOf(node).map((x) => x.type), attrs: node.attrs, out: node.type };
  return {
    rowDims,
    operands: [{ role: 'rows', dims: a.type.shape.length - 1 }, { role: 'whole', shape: b.type.shape.slice(-2) }, ...extraRoles],
    lower: (req) => (a.type.dtype === 'f16' ? loweringOf(node.op, describeNode(node))(req) : matmulKernel(req, pickedMatmulTiling({ ...whole, limits: req.limits }))),
  };
};

// softmax along dim d: rows are the dims before d (d moves to 1 in the window's node).
const softmax: SplitRule = (node) => {
  const rank = node.type.shape.length;
  const d = ((node.attrs.dim as number) + rank) % rank;
  if (d === 0) return 'it normalizes along the leading dim';
  return { rowDims: d, operands: [{ role: 'rows', dims: d }], attrs: { ...node.attrs, dim: 1 } };
};

/** Split rules by op name; elementwise ops (those with a scalar function) are found by their entry. */
const SPLIT_RULES: Readonly<Record<string, SplitRule>> = {
  cast: elementwise,
  fused_elementwise: elementwise,
  matmul,
  matmul_epilogue: matmul,
  softmax,
  cross_entropy_rows: () => ({ rowDims: 1, operands: [{ role: 'rows', dims: 1 }, { role: 'rows', dims: 1 }] }), // logits [N, C], targets [N] -> [N]
  embedding: (node) => {
    const [weight, idx] = tensorsOf(node); // rows of the output are ids: each window reads its ids and the whole table
    return { rowDims: idx.type.shape.length, operands: [{ role: 'whole', shape: weight.type.shape }, { role: 'rows', dims: idx.type.shape.length }] };
  },
  layer_norm: lastDimRows(),
  layer_norm_backward: lastDimRows(2), // x, weight, g
};

function splitRuleOf(node: Node): SplitRule | undefined {
  const def = getOp(node.op, node.loc);
  if (def.random?.(node.attrs)) return undefined; // random bits are drawn by element index: a window would redraw them
  return Object.hasOwn(SPLIT_RULES, node.op) ? SPLIT_RULES[node.op] : def.scalar ? elementwise : undefined;
}

/** A byte range of a buffer one binding sees. */
export interface BindingWindow {
  readonly offset: number;
  readonly size: number;
}

/** One dispatch of a split kernel: its kernel, and the window of each tensor binding (inputs in order, then out). */
export interface KernelPart {
  readonly kernel: Kernel;
  /** Absent, or undefined for one binding: bound whole. */
  readonly windows?: readonly (BindingWindow | undefined)[];
}

/** What a binding may see: at most `maxBytes`, at offsets that are multiples of `offsetAlignment`. */
export interface BindingLimits {
  readonly maxBytes: number;
  readonly offsetAlignment: number;
}

/** `%12 = matmul(...) : f32[...] needs 2.5 GiB, more than this GPU's <limit> of 2.0 GiB[, and why]`: the one E009 for a tensor too big (here and runtime/webgpu/buffers.ts). */
export function tooBigError(tensor: Node, bytes: number, limitName: string, limit: number, why?: string): KilnError {
  return new KilnError('KILN_E009', `${describeNode(tensor)} needs ${formatBytes(bytes)}, more than this GPU's ${limitName} of ${formatBytes(limit)}${why ? `, and ${why}` : ''}; use a smaller batch or shorter sequence`, tensor.loc);
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

const bytesOf = (t: TensorType) => bufferBytes(t.dtype, numel(t.shape));

/**
 * The dispatches a kernel needs under these binding limits: null when every binding fits whole,
 * else one part per window of output rows. KILN_E009 when some binding is too big and cannot be split.
 * A kernel that checks indices gives each window a slot of its own in the error record (`nextSlot`),
 * so the first bad index is reported at its position in the whole tensor.
 */
export function splitKernel(kernel: Kernel, binding: BindingLimits, limits?: KernelLimits, nextSlot?: () => number): KernelPart[] | null {
  const { node } = kernel;
  const tensors = [...kernel.inputs, node];
  const oversized = tensors.find((t) => bytesOf(t.type) > binding.maxBytes);
  if (!oversized) return null;
  const refuse = (why: string) => tooBigError(oversized, bytesOf(oversized.type), 'maxStorageBufferBindingSize', binding.maxBytes, `the kernel of ${describeNode(node)} (${node.loc ? `${node.loc.file}:${node.loc.line}` : 'no source line'}) cannot split it: ${why}`);
  const rule = splitRuleOf(node);
  if (!rule) throw refuse(`${node.op} has no split rule (codegen/split.ts)`);
  const split = rule(node);
  if (typeof split === 'string') throw refuse(split);
  const rows = numel(node.type.shape.slice(0, split.rowDims));
  const roles: OperandRole[] = [...split.operands, { role: 'rows', dims: split.rowDims }];
  // Bytes of one row of each row-indexed binding (0: bound whole); rows per window keep every offset aligned and every window within the limit.
  const rowBytes = tensors.map((t, i) => (roles[i].role === 'rows' ? (numel(t.type.shape) / rows) * DTYPE_INFO[t.type.dtype].bytes : 0));
  for (const [i, x] of kernel.inputs.entries()) {
    if (split.operands[i].role === 'whole' && bytesOf(x.type) > binding.maxBytes) throw refuse(`${describeNode(x)} is read whole by every row`);
  }
  let step = 1;
  for (const b of rowBytes) if (b > 0) step = lcm(step, binding.offsetAlignment / gcd(b, binding.offsetAlignment));
  const perWindow = Math.floor(Math.min(...rowBytes.filter((b) => b > 0).map((b) => binding.maxBytes / b)) / step) * step;
  if (perWindow < 1) throw refuse(`no whole number of rows fits one binding at offsets aligned to ${binding.offsetAlignment} bytes`);
  const parts: KernelPart[] = [];
  for (let r0 = 0; r0 < rows; r0 += perWindow) {
    const r = Math.min(perWindow, rows - r0);
    const windowType = (t: TensorType, role: OperandRole): TensorType => ({ dtype: t.dtype, shape: role.role === 'rows' ? [r, ...t.shape.slice(role.dims)] : role.shape });
    let operand = 0;
    const inputs = node.inputs.map((x) => (isNode(x) ? stand(x, windowType(x.type, roles[operand++])) : x));
    const windowNode: Node = { ...node, inputs, attrs: split.attrs ?? node.attrs, type: windowType(node.type, roles[roles.length - 1]), meta: { ...node.meta, window: `rows ${r0}..${r0 + r} of ${rows}` } };
    const req: KernelRequest = { inputs: inputs.map((x) => (isNode(x) ? x.type : x)), attrs: windowNode.attrs, out: windowNode.type, limits };
    const plan = (split.lower ?? loweringOf(node.op, describeNode(node), node.loc))(req);
    const check = kernel.indexCheck;
    const slot = check ? (nextSlot?.() ?? check.slot) : undefined;
    const part = kernelFromPlan(windowNode, plan, { errorSlot: slot, checkBounds: check !== undefined });
    const windows = rowBytes.map((b) => (b > 0 ? { offset: r0 * b, size: Math.max(4, Math.ceil((r * b) / 4) * 4) } : undefined));
    const indexCheck = check && { ...check, slot: slot!, firstPosition: r0 * (numel(check.indices.type.shape) / rows) };
    // The part reads and writes the program's nodes (their buffers); only its text and params are the window's.
    parts.push({ kernel: { ...part, node, label: kernel.label, inputs: kernel.inputs, indexCheck }, windows });
  }
  return parts;
}

/** A stand-in operand of a window's node: the same value, seen at the window's shape. */
const stand = (x: Node, type: TensorType): Node => ({ ...x, inputs: [], type });

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}

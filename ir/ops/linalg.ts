// matmul (batched, batch dims broadcast, operand transposes as attrs) and embedding (row gather).

import { type GradContext, inputGrad } from '../autograd.ts';
import { type IndexRange, checkIndices } from '../bounds.ts';
import { KilnError } from '../errors.ts';
import type { Node } from '../graph.ts';
import { type HostTensor, allocData } from '../host.ts';
import { type OperandType, registerOp } from '../registry.ts';
import { type Shape, type TensorType, broadcastShapes, formatType, numel } from '../types.ts';
import { arity, boolAttr, broadcastIndex, expectDType, floatDType, tensorArg, tensorData } from './check.ts';

export interface MatmulDims {
  batch: number[];
  m: number;
  k: number;
  n: number;
}

/** matmul(a, b) {transposeA, transposeB}: a is [..., M, K] (or [..., K, M] transposed), b is [..., K, N] (or [..., N, K]). */
export function matmulDims(a: TensorType, b: TensorType, transposeA: boolean, transposeB: boolean): MatmulDims {
  if (a.shape.length < 2 || b.shape.length < 2) {
    throw new KilnError('KILN_E001', `matmul needs operands of rank 2 or more, got ${formatType(a)} and ${formatType(b)}`);
  }
  const [a0, a1] = a.shape.slice(-2);
  const [b0, b1] = b.shape.slice(-2);
  const [m, ka] = transposeA ? [a1, a0] : [a0, a1];
  const [kb, n] = transposeB ? [b1, b0] : [b0, b1];
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2));
  if (ka !== kb || !batch) {
    const ta = transposeA ? ' (transposed)' : '';
    const tb = transposeB ? ' (transposed)' : '';
    throw new KilnError('KILN_E001', `matmul shapes do not match: ${formatType(a)}${ta} @ ${formatType(b)}${tb}`);
  }
  return { batch, m, k: ka, n };
}

registerOp({
  name: 'matmul',
  infer(inputs, attrs) {
    arity('matmul', inputs, 2);
    const a = tensorArg('matmul', inputs, 0);
    const b = tensorArg('matmul', inputs, 1);
    const dtype = floatDType('matmul', a, b); // f16 operands accumulate in f32, round once at the store
    const { batch, m, n } = matmulDims(a, b, boolAttr('matmul', attrs, 'transposeA', false), boolAttr('matmul', attrs, 'transposeB', false));
    return { dtype, shape: [...batch, m, n] };
  },
  cpu(inputs, attrs, out, precision) {
    const [a, b] = inputs;
    if (typeof a === 'number' || typeof b === 'number') throw new Error('matmul of a scalar');
    const ta = boolAttr('matmul', attrs, 'transposeA', false);
    const tb = boolAttr('matmul', attrs, 'transposeB', false);
    const { batch, m, k, n } = matmulDims(a.type, b.type, ta, tb);
    const nb = numel(batch);
    // Offset of each batch's matrix in a and b, by broadcasting batch indices.
    const aBatch = broadcastIndex(batch, a.type.shape.slice(0, -2) as Shape);
    const bBatch = broadcastIndex(batch, b.type.shape.slice(0, -2) as Shape);
    const result = allocData(out.dtype, numel(out.shape), precision);
    const ad = a.data;
    const bd = b.data;
    const [aRow, aCol] = ta ? [1, m] : [k, 1];
    const [bRow, bCol] = tb ? [1, k] : [n, 1];
    const row = new Float64Array(n);
    for (let p = 0; p < nb; p++) {
      const ao = aBatch[p] * m * k;
      const bo = bBatch[p] * k * n;
      for (let i = 0; i < m; i++) {
        row.fill(0);
        for (let kk = 0; kk < k; kk++) {
          const av = ad[ao + i * aRow + kk * aCol];
          if (av === 0) continue;
          const bBase = bo + kk * bRow;
          for (let j = 0; j < n; j++) row[j] += av * bd[bBase + j * bCol];
        }
        result.set(row, (p * m + i) * n);
      }
    }
    return result;
  },
  // A multiply and an add per (row, column, k) of every batch matrix: 2 * batch * M * N * K.
  flops(inputs, attrs) {
    const [a, b] = inputs as TensorType[];
    const { batch, m, k, n } = matmulDims(a, b, boolAttr('matmul', attrs, 'transposeA', false), boolAttr('matmul', attrs, 'transposeB', false));
    return 2 * numel(batch) * m * n * k;
  },
  // out = A' @ B' with A' = A or A^T, B' = B or B^T: dA' = g @ B'^T and dB' = A'^T @ g, transposed back
  // where the operand was; batch dims that broadcast are summed back by inputGrad.
  grad(ctx) {
    const [a, b] = ctx.node.inputs;
    const ta = boolAttr('matmul', ctx.node.attrs, 'transposeA', false);
    const tb = boolAttr('matmul', ctx.node.attrs, 'transposeB', false);
    const g = ctx.grad;
    const matmul = (x: typeof a, y: typeof b, transposeA: boolean, transposeB: boolean) => ctx.add('matmul', [x, y], { transposeA, transposeB });
    return [
      inputGrad(ctx, 0, () => (ta ? matmul(b, g, tb, true) : matmul(g, b, false, !tb))),
      inputGrad(ctx, 1, () => sharedWeightGrad(ctx, a as Node, b as Node, ta, tb) ?? (tb ? matmul(g, a, true, ta) : matmul(a, g, !ta, false))),
    ];
  },
});

/**
 * The gradient of a 2-D `b` that a batched `a` shares (nn.Linear: x [B, T, C] @ W^T): the batch rows
 * folded into one product, g [B*T, N]^T @ x [B*T, K], instead of a [B, N, K] product summed over B.
 * Null when the shapes are not of that kind.
 */
function sharedWeightGrad(ctx: GradContext, a: Node, b: Node, ta: boolean, tb: boolean): Node | null {
  if (ta || b.type.shape.length !== 2 || a.type.shape.length <= 2) return null;
  const rows = numel(a.type.shape.slice(0, -1));
  const k = a.type.shape[a.type.shape.length - 1];
  const n = ctx.grad.type.shape[ctx.grad.type.shape.length - 1];
  // Split-K: the rows are the product's reduction; cut them into `splits` batches so the small
  // [N, K] output still spreads over the whole GPU, then sum the partial products.
  const splits = splitKFactor(rows, n * k);
  const shape = (cols: number) => (splits > 1 ? [splits, rows / splits, cols] : [rows, cols]);
  const a2 = ctx.add('reshape', [a], { shape: shape(k) });
  const g2 = ctx.add('reshape', [ctx.grad], { shape: shape(n) });
  // b is [N, K] when transposed (its gradient g^T a), else [K, N] (a^T g).
  const product = tb ? ctx.add('matmul', [g2, a2], { transposeA: true, transposeB: false }) : ctx.add('matmul', [a2, g2], { transposeA: true, transposeB: false });
  return splits > 1 ? ctx.add('sum', [product], { dims: [0], keepdim: false }) : product;
}

/** Output tiles a matmul workgroup takes on a large GPU (128 x 128), and the workgroups worth having (two per SM of an H100). */
const SPLIT_K_TILE = 128 * 128;
const SPLIT_K_WORKGROUPS = 264;
/** Rows each split keeps at least: below this the partial sums cost more than the parallelism gains. */
const SPLIT_K_MIN_ROWS = 1024;

/**
 * How many batches to split a product's `rows`-long reduction into, for an output of `outputs`
 * elements: the fewest (a power of two, at most 16, dividing rows) giving SPLIT_K_WORKGROUPS tiles.
 * Measured on an H100 (shakespeare-char's weight gradients, K = B*T = 16384, outputs of 384 x 1536
 * and smaller): unsplit they ran at about 5 TFLOP/s, a quarter of the GPU's workgroups busy.
 */
export function splitKFactor(rows: number, outputs: number): number {
  const tiles = Math.ceil(outputs / SPLIT_K_TILE);
  let splits = 1;
  while (tiles * splits < SPLIT_K_WORKGROUPS && splits < 16 && rows % (splits * 2) === 0 && rows / (splits * 2) >= SPLIT_K_MIN_ROWS) splits *= 2;
  return splits;
}

/** embedding's and embedding_backward's indices: rows of a [rows, C] table. */
export function embeddingIndices(rows: number, idx: OperandType): IndexRange {
  return { op: 'embedding', noun: 'index', operand: 1, size: rows, shape: (idx as TensorType).shape };
}

// embedding(weight[V, C], idx[...]): weight rows gathered by index, shape [..., C].
registerOp({
  name: 'embedding',
  infer(inputs) {
    arity('embedding', inputs, 2);
    const w = tensorArg('embedding', inputs, 0);
    const idx = tensorArg('embedding', inputs, 1);
    const dtype = floatDType('embedding', w);
    expectDType('embedding', idx, 'i32');
    if (w.shape.length !== 2) throw new KilnError('KILN_E001', `embedding weight must be [num, dim], got ${formatType(w)}`);
    return { dtype, shape: [...idx.shape, w.shape[1]] };
  },
  cpu(inputs, _attrs, out, precision) {
    const w = inputs[0];
    if (typeof w === 'number') throw new Error('embedding of a scalar');
    const idx = tensorData(inputs[1]);
    const [rows, c] = w.type.shape;
    checkIndices(idx, embeddingIndices(rows, (inputs[1] as HostTensor).type));
    const result = allocData('f32', numel(out.shape), precision);
    for (let i = 0; i < idx.length; i++) {
      const r = idx[i];
      for (let j = 0; j < c; j++) result[i * c + j] = w.data[r * c + j];
    }
    return result;
  },
  indices: (inputs) => embeddingIndices((inputs[0] as TensorType).shape[0], inputs[1]),
  flops: () => 0, // a gather: moves rows, computes nothing
  // The weight's gradient is the output gradient's rows scatter-added at their indices.
  grad: (ctx) => {
    const [w, idx] = ctx.node.inputs as Node[];
    return [ctx.needs(0) ? ctx.add('embedding_backward', [ctx.grad, idx], { num: w.type.shape[0] }) : null, null];
  },
});

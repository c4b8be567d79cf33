// Decode-attention cases shared by the CPU and GPU tests: random inputs for one step, and the answer
// computed directly in f64 (a plain softmax over the pos + 1 keys), independent of kiln's references.

import { type HostTensor, hostTensor } from '../ir/host.ts';
import { roundF16 } from '../ir/f16.ts';
import type { DType } from '../ir/types.ts';
import { singleOp } from './op-graph.ts';
import { rng } from './helpers.ts';

export interface DecodeCase {
  /** [B, H] of q [B, H, 1, D]. */
  batch: [number, number];
  d: number;
  /** Cache capacity. */
  s: number;
  pos: number;
  dtype: DType;
  seed: number;
}

export interface DecodeInputs {
  q: HostTensor;
  kCache: HostTensor;
  vCache: HostTensor;
  kNew: HostTensor;
  vNew: HostTensor;
  pos: HostTensor;
}

/** Uniform values in [-spread, spread), rounded to f16 for an f16 case (so every backend reads the same numbers). */
export function decodeInputs(c: DecodeCase, spread = 1): DecodeInputs {
  const next = rng(c.seed);
  const [b, h] = c.batch;
  const make = (shape: number[]) => {
    const data = Float32Array.from({ length: shape.reduce((x, y) => x * y, 1) }, () => (next() * 2 - 1) * spread);
    return hostTensor(c.dtype, shape, c.dtype === 'f16' ? data.map(roundF16) : data);
  };
  return {
    q: make([b, h, 1, c.d]),
    kCache: make([c.s, b, h, c.d]),
    vCache: make([c.s, b, h, c.d]),
    kNew: make([b, h, 1, c.d]),
    vNew: make([b, h, 1, c.d]),
    pos: hostTensor('i32', [], Int32Array.of(c.pos)),
  };
}

/** The operands of decode_attention in order. */
export function decodeOperands(x: DecodeInputs): HostTensor[] {
  return [x.q, x.kCache, x.vCache, x.kNew, x.vNew, x.pos];
}

/** softmax_j(scale * q . key_j) value_j over keys cache[0:pos] and the new one, in f64, written out directly. */
export function naiveDecode(x: DecodeInputs, scale: number): Float64Array {
  const [b, h, , d] = x.q.type.shape;
  const rows = b * h;
  const pos = x.pos.data[0];
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const keys: number[][] = [];
    const values: number[][] = [];
    for (let j = 0; j < pos; j++) {
      keys.push(Array.from(x.kCache.data.subarray((j * rows + r) * d, (j * rows + r + 1) * d) as ArrayLike<number>));
      values.push(Array.from(x.vCache.data.subarray((j * rows + r) * d, (j * rows + r + 1) * d) as ArrayLike<number>));
    }
    keys.push(Array.from(x.kNew.data.subarray(r * d, (r + 1) * d) as ArrayLike<number>));
    values.push(Array.from(x.vNew.data.subarray(r * d, (r + 1) * d) as ArrayLike<number>));
    const q = Array.from(x.q.data.subarray(r * d, (r + 1) * d) as ArrayLike<number>);
    const e = keys.map((k) => Math.exp(scale * k.reduce((acc, kc, c) => acc + kc * q[c], 0)));
    const total = e.reduce((a, y) => a + y, 0);
    for (let c = 0; c < d; c++) out[r * d + c] = values.reduce((acc, v, j) => acc + (e[j] / total) * v[c], 0);
  }
  return out;
}

/** One decode_attention node over input leaves fed with `x`. */
export function decodeOp(x: DecodeInputs, attrs: Record<string, unknown>, op = 'decode_attention'): ReturnType<typeof singleOp> {
  return singleOp(op, decodeOperands(x), attrs);
}

/** f32's unit roundoff. */
const U32 = 2 ** -24;

/**
 * The f32 kernels' error bound on max |out - ref| for case x at this scale and split count, derived in
 * decode-attention.gpu.test.ts's file comment.
 */
export function f32Bound(x: DecodeInputs, scale: number, splits: number): number {
  const [b, h, , d] = x.q.type.shape;
  const rows = b * h;
  const n = x.pos.data[0] + 1;
  let dScore = 0;
  let spread = 0;
  let maxV = 0;
  for (let r = 0; r < rows; r++) {
    const scores: number[] = [];
    for (let j = 0; j < n; j++) {
      const [k, v] = j < n - 1 ? [x.kCache, x.vCache] : [x.kNew, x.vNew];
      const at = j < n - 1 ? (j * rows + r) * d : r * d;
      let abs = 0;
      let dot = 0;
      for (let c = 0; c < d; c++) {
        abs += Math.abs(x.q.data[r * d + c] * k.data[at + c]);
        dot += x.q.data[r * d + c] * k.data[at + c];
        maxV = Math.max(maxV, Math.abs(v.data[at + c]));
      }
      dScore = Math.max(dScore, (d + 2) * U32 * abs * scale * Math.LOG2E);
      scores.push(dot * scale * Math.LOG2E);
    }
    spread = Math.max(spread, Math.max(...scores) - Math.min(...scores));
  }
  const sums = 2 * (n + n / 64 + 2 + 2 * splits) * U32;
  const weights = 2 * (2 * Math.LN2 * dScore + (3 + 2 * spread) * 2 * U32);
  return maxV * (sums + weights);
}

/**
 * The packed form of `x` (decode_attention's attr columns): one tensor [B, 1, W] holding, in each batch
 * row b, q's heads from column columns[0], k_new's from columns[1] and v_new's from columns[2] (each
 * H * D wide), W = width; every other column NaN, so a kernel that reads one there writes NaN.
 */
export function packDecodeInputs(x: DecodeInputs, columns: readonly [number, number, number], width: number): HostTensor {
  const [b, h, , d] = x.q.type.shape;
  const data = new Float32Array(b * width).fill(NaN);
  for (const [i, t] of [x.q, x.kNew, x.vNew].entries()) {
    for (let row = 0; row < b; row++) {
      for (let e = 0; e < h * d; e++) data[row * width + columns[i] + e] = t.data[row * h * d + e];
    }
  }
  return hostTensor(x.q.type.dtype, [b, 1, width], data);
}

// decode_attention(q, k_cache, v_cache, k_new, v_new, pos) {scale, scaling?, splits?}: one decode step's
// attention against a KV cache, for the generator (issue 18). The new token's query q [B, H, 1, D]
// attends to the pos cached keys k_cache[0:pos] and to its own key k_new (pos + 1 keys in all, as a
// causal row attends to itself):
//   out[b, h, 0, :] = softmax_j(scale * q . key_j) value_j,  key_j = k_cache[j, b, h] (j < pos), k_new[b, h, 0] (j = pos)
// The caches are position-major, [S, B, H, D] (S the capacity), so one step's new rows for every
// (b, h) are one contiguous [B, H, D] block: the generator appends k_new and v_new at row pos with one
// buffer copy each. pos is an i32[] tensor, read on the device, so one compiled graph serves every
// step; 0 <= pos < S, checked as an index (`indices`: the CPU throws, the kernel reports it).
// scaling "pre_qk" (always in f16) scales q and k by sqrt(scale) each and rounds them to f16 first,
// as fused_attention does (ir/ops/attention.ts attentionScalingFor); "post" (f32's default) scales
// the scores.
//
// Flash-decoding: `splits` workgroups share one (b, h)'s keys (absent or 0: decodeSplits chooses).
// As kiln lowers one op to one kernel, the split form is two ops that passes/decode-split.ts makes
// of a decode_attention in the lowered stage:
//   decode_attention_partial(q, k_cache, v_cache, k_new, v_new, pos) {scale, scaling, splits}
//     -> f32[B, H, splits, D + 2]: split s covers keys [s * chunk, (s + 1) * chunk) of the S a step
//        can see (pos < S; chunk = ceil(S / splits)), clipped to [0, pos]; its row holds
//        o = sum_j 2^(t_j - m) value_j (D values), m = max_j t_j, l = sum_j 2^(t_j - m), with
//        t_j = scale * q . key_j * log2(e), the score in base 2. An empty split holds o = 0, m = -inf, l = 0.
//   decode_attention_merge(partials) {dtype} -> dtype[B, H, 1, D]: M = max_s m_s,
//        out = sum_s 2^(m_s - M) o_s / sum_s 2^(m_s - M) l_s (the log-sum-exp rescaling).
// Packed q, k_new, v_new (attr `columns`, set by passes/kv-cache.ts): at T = 1 nanoGPT's q, k and v are
// slices of one row of c_attn's output [B, 1, 3C]; copying them out would cost three kernels. With
// columns = [cq, ck, cv], q, k_new and v_new are such packed rows [..., 1, W] (the batch dims but the
// last, the heads H) and head h of batch row b of q is q[b, 0, cq + h * D : cq + (h + 1) * D] (ck, cv
// for k_new, v_new); W and the columns are multiples of D, so a head block is row
// (b * W + c) / D + h of the operand seen as rows of D. The same tensor is usually all three operands.
// Inference only: no gradient rule (a coded error says so).

import { checkIndices, type IndexRange } from '../bounds.ts';
import { DTYPE_INFO } from '../dtypes.ts';
import { KilnError } from '../errors.ts';
import type { Attrs } from '../graph.ts';
import { roundF16 } from '../f16.ts';
import { type HostData, type HostTensor, type Precision, allocData } from '../host.ts';
import { type CpuOperand, type OperandType, registerOp } from '../registry.ts';
import { type DType, type TensorType, formatType, numel, sameShape } from '../types.ts';
import { type AttentionScaling, attentionScalingFor } from './attention.ts';
import { arity, expectDType, floatDType, intAttr, numAttr, tensorArg } from './check.ts';

/** The operands of decode_attention and decode_attention_partial, in order. */
export const DECODE_OPERANDS = ['q', 'k_cache', 'v_cache', 'k_new', 'v_new', 'pos'] as const;

export interface DecodeDims {
  /** The batch dims of q ([B, H] for nanoGPT), and their product: the (b, h) rows. */
  batch: number[];
  rows: number;
  /** The cache's capacity: positions 0..S-1. */
  s: number;
  /** The head dim. */
  d: number;
  /** Where row r of q, k_new and v_new starts, in rows of D: (r / heads) * stride + offset + r % heads. */
  layout: PackedRows;
}

/** How q, k_new and v_new hold their (b, h) rows, in units of D elements (a row of one head). */
export interface PackedRows {
  /** The last batch dim (the heads): rows r and r + 1 of one batch row are adjacent. */
  heads: number;
  /** Rows of D from one batch row to the next. */
  stride: number;
  /** The first row of q, k_new and v_new: column / D. */
  q: number;
  k: number;
  v: number;
}

/** The row of D elements holding (b, h) row r of an operand whose rows start at `offset` (see PackedRows). */
export function packedRow(layout: PackedRows, r: number, offset: number): number {
  return Math.floor(r / layout.heads) * layout.stride + offset + (r % layout.heads);
}

/** What a decode attention node computes with: its scale and scaling, and its split count as asked (0: let decodeSplits choose). */
export interface DecodeSpec {
  scale: number;
  scaling: AttentionScaling;
  splits: number;
}

/** q, k_new, v_new [..., 1, D] (or packed rows [..., 1, W] with attr columns); k_cache, v_cache [S, ..., D]; pos i32[]. */
export function decodeDims(op: string, inputs: readonly OperandType[], attrs: Attrs = {}): DecodeDims {
  arity(op, inputs, 6);
  const [q, kCache, vCache, kNew, vNew, pos] = DECODE_OPERANDS.map((_, i) => tensorArg(op, inputs, i));
  floatDType(op, q, kCache, vCache, kNew, vNew);
  const shapes = `q ${formatType(q)}, k_cache ${formatType(kCache)}, v_cache ${formatType(vCache)}, k_new ${formatType(kNew)}, v_new ${formatType(vNew)}`;
  if (attrs.columns !== undefined && attrs.columns !== null) return packedDims(op, [q, kCache, vCache, kNew, vNew, pos], attrs.columns, shapes);
  const rank = q.shape.length;
  if (rank < 2 || q.shape[rank - 2] !== 1) throw new KilnError('KILN_E001', `${op} takes one query row per head, q [..., 1, D]: got ${shapes}`);
  const batch = q.shape.slice(0, -2);
  const d = q.shape[rank - 1];
  const s = kCache.shape[0];
  if (!sameShape(kNew.shape, q.shape) || !sameShape(vNew.shape, q.shape)) throw new KilnError('KILN_E001', `${op} needs k_new and v_new shaped as q [..., 1, D]: got ${shapes}`);
  const cache = [s, ...batch, d];
  if (kCache.shape.length !== rank || !sameShape(kCache.shape, cache) || !sameShape(vCache.shape, cache)) {
    throw new KilnError('KILN_E001', `${op} needs position-major caches [S, ${[...batch, d].join(', ')}] for q [${q.shape.join(', ')}]: got ${shapes}`);
  }
  if (s < 1) throw new KilnError('KILN_E001', `${op} needs a cache of at least one position, got S = ${s}`);
  checkPos(op, pos);
  const rows = numel(batch);
  return { batch, rows, s, d, layout: { heads: Math.max(rows, 1), stride: rows, q: 0, k: 0, v: 0 } };
}

function checkPos(op: string, pos: TensorType): void {
  expectDType(op, pos, 'i32');
  if (pos.shape.length !== 0) throw new KilnError('KILN_E001', `${op} pos must be a 0-d i32 tensor (the number of cached positions), got ${formatType(pos)}`);
}

/** The packed form: the batch dims and D from the caches, q, k_new, v_new [...batch but the heads, 1, W]. */
function packedDims(op: string, [q, kCache, vCache, kNew, vNew, pos]: TensorType[], columns: unknown, shapes: string): DecodeDims {
  if (!Array.isArray(columns) || columns.length !== 3 || columns.some((c) => !Number.isInteger(c) || c < 0)) {
    throw new KilnError('KILN_E011', `${op} columns must be three non-negative integers (where q, k_new and v_new start in each packed row), got ${JSON.stringify(columns)}`);
  }
  const rank = kCache.shape.length;
  if (rank < 3 || !sameShape(vCache.shape, kCache.shape)) throw new KilnError('KILN_E001', `${op} with packed q, k, v needs caches [S, ..., H, D] of one shape: got ${shapes}`);
  const [s, d] = [kCache.shape[0], kCache.shape[rank - 1]];
  const batch = kCache.shape.slice(1, -1);
  const heads = batch[batch.length - 1];
  const w = q.shape[q.shape.length - 1];
  const packed = [...batch.slice(0, -1), 1, w];
  if ([q, kNew, vNew].some((x) => !sameShape(x.shape, packed))) throw new KilnError('KILN_E001', `${op} with packed q, k, v needs each of them [${packed.join(', ')}] (rows of the caches' batch but the heads): got ${shapes}`);
  if (w % d !== 0 || columns.some((c: number) => c % d !== 0 || c + heads * d > w)) {
    throw new KilnError('KILN_E001', `${op} packed rows of ${w} must hold ${heads} heads of ${d} from columns ${columns.join(', ')}, each a multiple of ${d}: got ${shapes}`);
  }
  if (s < 1) throw new KilnError('KILN_E001', `${op} needs a cache of at least one position, got S = ${s}`);
  checkPos(op, pos);
  const [cq, ck, cv] = columns as number[];
  return { batch, rows: numel(batch), s, d, layout: { heads, stride: w / d, q: cq / d, k: ck / d, v: cv / d } };
}

/** A node's scale, scaling (default "post"; f16 must say "pre_qk") and splits (default 0). */
export function decodeSpec(op: string, attrs: Attrs, dtype: DType): DecodeSpec {
  const scale = numAttr(op, attrs, 'scale');
  const scaling = attrs.scaling ?? 'post';
  if (scaling !== 'post' && scaling !== 'pre_qk') throw new KilnError('KILN_E011', `${op} scaling must be "post" or "pre_qk", got ${String(scaling)}`);
  if (scaling === 'pre_qk' && scale < 0) throw new KilnError('KILN_E011', `${op} scaling "pre_qk" multiplies q and k by sqrt(scale), so it needs scale >= 0, got ${scale}`);
  const want = attentionScalingFor(dtype, scale, scaling);
  if (scaling !== want) throw new KilnError('KILN_E011', `${op} in ${dtype} needs scaling "${want}" (q and k each scaled by sqrt(scale) and rounded to ${dtype}, so the scores cannot overflow), got "${scaling}"`);
  const splits = intAttr(op, attrs, 'splits', 0);
  if (splits < 0) throw new KilnError('KILN_E011', `${op} splits must be >= 0 (0: kiln chooses), got ${splits}`);
  return { scale, scaling, splits };
}

/** Workgroups that keep a GPU of ~132 multiprocessors busy (two each), and the keys of one tile (the kernels' workgroup, codegen DECODE_KEYS): the fewest worth a split of their own. */
export const DECODE_TARGET_WORKGROUPS = 264;
export const DECODE_MIN_SPLIT_KEYS = 64;
/**
 * Caches of at most this many tiles run the whole kernel: a split would save at most one tile of the
 * whole kernel's two (and only at steps past the first 64 keys), and always costs the merge's dispatch;
 * decode at batch 1 is dispatch-bound (issue 18). An estimate, to be measured on the GPU (bench's
 * generate suite) against asking splits: 2 on the browser model's S = 128.
 */
export const DECODE_WHOLE_TILES = 2;

/**
 * The split count a decode attention over `rows` (b, h) rows and a cache of `s` positions runs with:
 * `asked` when given (at most S, one key each: a step sees pos + 1 <= S keys); else the fewest splits
 * that bring each split's serial tiles of DECODE_MIN_SPLIT_KEYS keys as low as DECODE_TARGET_WORKGROUPS
 * workgroups allow; a cache of at most DECODE_WHOLE_TILES tiles, or rows that fill the target alone, get
 * one split (the whole kernel, no merge). nanoGPT at batch 1: the browser model (4 heads, S 128) the whole
 * kernel (2 tiles), shakespeare-char (6 heads, S 256) 4 splits of one tile (whole: 4), GPT-2 (12 heads,
 * S 1024) 16 of one (whole: 16); with 300 rows one split.
 */
export function decodeSplits(rows: number, s: number, asked = 0): number {
  if (asked > 0) return Math.min(asked, s);
  if (s <= DECODE_WHOLE_TILES * DECODE_MIN_SPLIT_KEYS) return 1;
  const tiles = Math.ceil(s / DECODE_MIN_SPLIT_KEYS); // the whole kernel's tiles at the longest step
  const most = Math.max(1, Math.min(tiles, Math.ceil(DECODE_TARGET_WORKGROUPS / Math.max(rows, 1))));
  const tilesPerSplit = Math.ceil(tiles / most);
  return Math.ceil(tiles / tilesPerSplit);
}

/** Keys per split: the S a step can see at most (pos < S), cut into `splits` runs; kiln's own choice (decodeSplits) gives whole tiles, or fewer keys. */
export function decodeChunk(s: number, splits: number): number {
  return Math.ceil(s / splits);
}

/** pos indexes the cache: [0, S). */
function posRange(inputs: readonly OperandType[]): IndexRange {
  return { op: 'decode_attention cache', noun: 'index', operand: 5, size: (inputs[1] as TensorType).shape[0], shape: [] };
}

/** How a kernel keeps a scaled q or k element, in the interpreter's precision (as ir/ops/attention.ts rounds for fused_attention). */
function qkRounder(dtype: DType, precision: Precision, root: number): (x: number) => number {
  if (precision === 'f64') return (x) => x * root;
  if (dtype === 'f16') return (x) => roundF16(x * Math.fround(root));
  return (x) => Math.fround(x * root);
}

/** The scores of one step, row by row: scores(r) is f64[pos + 1], scale * q . key_j, and value(r, j, c) reads value_j. */
function decodeScores(inputs: readonly CpuOperand[], attrs: Attrs, precision: Precision, op: string) {
  const [q, kCache, vCache, kNew, vNew, posT] = inputs as HostTensor[];
  const { rows, s, d, layout } = decodeDims(op, inputs.map((x) => (x as HostTensor).type), attrs);
  checkIndices(posT.data, posRange([q.type, kCache.type]));
  const pos = posT.data[0];
  const spec = decodeSpec(op, attrs, q.type.dtype);
  const [root, post] = spec.scaling === 'pre_qk' ? [Math.sqrt(spec.scale), 1] : [1, spec.scale];
  const round = qkRounder(q.type.dtype, precision, root);
  const at = (r: number, offset: number) => packedRow(layout, r, offset) * d;
  const key = (r: number, j: number, c: number) => (j < pos ? kCache.data[(j * rows + r) * d + c] : kNew.data[at(r, layout.k) + c]);
  const value = (r: number, j: number, c: number) => (j < pos ? vCache.data[(j * rows + r) * d + c] : vNew.data[at(r, layout.v) + c]);
  const scores = (r: number) => {
    const row = new Float64Array(pos + 1);
    for (let j = 0; j <= pos; j++) {
      let x = 0;
      for (let c = 0; c < d; c++) x += round(q.data[at(r, layout.q) + c]) * round(key(r, j, c));
      row[j] = x * post;
    }
    return row;
  };
  return { rows, s, d, pos, spec, scores, value };
}

/** The references take tensors only (the type rule has checked them). */
function noScalars(op: string, inputs: readonly CpuOperand[]): void {
  if (inputs.some((x) => typeof x === 'number')) throw new Error(`${op} of a scalar`);
}

/** 2 * (S + 1) * D for q . k and as much for p v, per (b, h) row: a bound on what a step does (pos = S - 1: S keys). */
function decodeFlops(inputs: readonly OperandType[], attrs: Attrs = {}): number {
  const { rows, s, d } = decodeDims('decode_attention', inputs, attrs);
  return 4 * rows * (s + 1) * d;
}

const inferenceOnly = (op: string) => (): never => {
  throw new KilnError('KILN_E011', `${op} is inference only (the KV-cache decode step): it has no gradient; differentiate the model's forward, which uses fused_attention`);
};

registerOp({
  name: 'decode_attention',
  operands: [...DECODE_OPERANDS],
  indices: posRange,
  flops: decodeFlops,
  infer(inputs, attrs) {
    const { batch, d } = decodeDims('decode_attention', inputs, attrs);
    const q = inputs[0] as TensorType;
    decodeSpec('decode_attention', attrs, q.dtype);
    return { dtype: q.dtype, shape: [...batch, 1, d] };
  },
  cpu(inputs, attrs, out, precision) {
    noScalars('decode_attention', inputs);
    const { rows, d, scores, value } = decodeScores(inputs, attrs, precision, 'decode_attention');
    const result = allocData('f32', numel(out.shape), precision);
    for (let r = 0; r < rows; r++) {
      const t = scores(r);
      const max = t.reduce((a, x) => Math.max(a, x), -Infinity);
      let sum = 0;
      for (let j = 0; j < t.length; j++) sum += t[j] = Math.exp(t[j] - max);
      for (let c = 0; c < d; c++) {
        let acc = 0;
        for (let j = 0; j < t.length; j++) acc += t[j] * value(r, j, c);
        result[r * d + c] = acc / sum;
      }
    }
    return result;
  },
  grad: inferenceOnly('decode_attention'),
});

registerOp({
  name: 'decode_attention_partial',
  operands: [...DECODE_OPERANDS],
  indices: posRange,
  flops: decodeFlops,
  infer(inputs, attrs) {
    const { batch, d } = decodeDims('decode_attention_partial', inputs, attrs);
    const { splits } = decodeSpec('decode_attention_partial', attrs, (inputs[0] as TensorType).dtype);
    if (splits < 1) throw new KilnError('KILN_E011', `decode_attention_partial needs splits >= 1 (passes/decode-split.ts chooses them), got ${splits}`);
    return { dtype: 'f32', shape: [...batch, splits, d + 2] };
  },
  cpu(inputs, attrs, out, precision) {
    noScalars('decode_attention_partial', inputs);
    const { rows, s, d, pos, spec, scores, value } = decodeScores(inputs, attrs, precision, 'decode_attention_partial');
    const chunk = decodeChunk(s, spec.splits);
    const result: HostData = allocData('f32', numel(out.shape), precision);
    for (let r = 0; r < rows; r++) {
      const t = scores(r).map((x) => x * Math.LOG2E);
      for (let split = 0; split < spec.splits; split++) {
        const at = (r * spec.splits + split) * (d + 2);
        const [begin, end] = [split * chunk, Math.min((split + 1) * chunk, pos + 1)];
        let max = -Infinity;
        for (let j = begin; j < end; j++) max = Math.max(max, t[j]);
        let sum = 0;
        for (let j = begin; j < end; j++) {
          const p = 2 ** (t[j] - max);
          sum += p;
          for (let c = 0; c < d; c++) result[at + c] += p * value(r, j, c);
        }
        result[at + d] = max;
        result[at + d + 1] = sum;
      }
    }
    return result;
  },
  grad: inferenceOnly('decode_attention_partial'),
});

/** The merge's partials f32[..., splits, D + 2]. */
function mergeDims(inputs: readonly OperandType[]): { batch: number[]; splits: number; d: number } {
  arity('decode_attention_merge', inputs, 1);
  const p = tensorArg('decode_attention_merge', inputs, 0);
  expectDType('decode_attention_merge', p, 'f32');
  if (p.shape.length < 2 || p.shape[p.shape.length - 1] < 3) throw new KilnError('KILN_E001', `decode_attention_merge takes partials [..., splits, D + 2] (D >= 1), got ${formatType(p)}`);
  const [splits, width] = p.shape.slice(-2);
  if (splits < 1) throw new KilnError('KILN_E001', `decode_attention_merge needs at least one split, got ${formatType(p)}`);
  return { batch: p.shape.slice(0, -2), splits, d: width - 2 };
}

registerOp({
  name: 'decode_attention_merge',
  operands: ['partials'],
  flops: (inputs) => {
    const { batch, splits, d } = mergeDims(inputs);
    return 2 * numel(batch) * splits * (d + 1);
  },
  infer(inputs, attrs) {
    const { batch, d } = mergeDims(inputs);
    const dtype = attrs.dtype;
    if (typeof dtype !== 'string' || !(dtype in DTYPE_INFO) || !DTYPE_INFO[dtype as DType].isFloat) throw new KilnError('KILN_E011', `decode_attention_merge needs the float dtype of its output as attribute dtype, got ${JSON.stringify(dtype)}`);
    return { dtype: dtype as DType, shape: [...batch, 1, d] };
  },
  cpu(inputs, _attrs, out, precision) {
    noScalars('decode_attention_merge', inputs);
    const p = inputs[0] as HostTensor;
    const { batch, splits, d } = mergeDims([p.type]);
    const result = allocData('f32', numel(out.shape), precision);
    for (let r = 0; r < numel(batch); r++) {
      const at = (split: number) => (r * splits + split) * (d + 2);
      let max = -Infinity;
      for (let split = 0; split < splits; split++) max = Math.max(max, p.data[at(split) + d]);
      if (max === -Infinity) continue; // no key in any split: zeros (a decode step always has its own key)
      let sum = 0;
      for (let split = 0; split < splits; split++) {
        const w = 2 ** (p.data[at(split) + d] - max);
        sum += w * p.data[at(split) + d + 1];
        for (let c = 0; c < d; c++) result[r * d + c] += w * p.data[at(split) + c];
      }
      for (let c = 0; c < d; c++) result[r * d + c] /= sum;
    }
    return result;
  },
  grad: inferenceOnly('decode_attention_merge'),
});

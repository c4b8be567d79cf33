// decode_attention without a GPU: its CPU reference against a softmax written out in f64, the split
// form (decode_attention_partial + decode_attention_merge) against the whole, the split choice, and
// the coded errors for bad shapes, dtypes, a pos past the cache, and a gradient asked of it.
// Its kernels' numbers: decode-attention.gpu.test.ts (f32) and decode-attention-f16.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { differentiate } from '../ir/autograd.ts';
import { Graph } from '../ir/graph.ts';
import { hostTensor } from '../ir/host.ts';
import { DECODE_MIN_SPLIT_KEYS, DECODE_TARGET_WORKGROUPS, decodeChunk, decodeSplits } from '../ir/ops/decode_attention.ts';
import '../ir/ops/index.ts';
import type { DType } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { type DecodeCase, decodeInputs, decodeOp, decodeOperands, naiveDecode, packDecodeInputs } from './decode-attention-cases.ts';
import { relError, thrown } from './helpers.ts';
import { singleOp } from './op-graph.ts';
import { DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';
import { splitDecodeAttention } from '../passes/decode-split.ts';

const run = (c: ReturnType<typeof decodeOp>, precision: 'f32' | 'f64' = 'f64') => interpret(c.graph, (n) => c.feeds.get(n)!, precision).get('y')!;
const base: DecodeCase = { batch: [2, 3], d: 16, s: 70, pos: 65, dtype: 'f32', seed: 1 };

describe('the decode_attention CPU reference', () => {
  for (const pos of [0, 1, 63, 64, 65, 69]) {
    it(`matches a plain f64 softmax over pos + 1 = ${pos + 1} keys`, () => {
      const x = decodeInputs({ ...base, pos, seed: pos + 1 }, 2);
      const got = run(decodeOp(x, { scale: 0.25 }));
      // Both sum the same f64 terms in different orders: a few ulps of f64.
      expect(relError(got.data, naiveDecode(x, 0.25))).toBeLessThan(1e-12);
    });
  }

  it('with scaling "pre_qk" computes the same scores in f64 (sqrt(scale) on q and on k)', () => {
    const x = decodeInputs(base, 2);
    expect(relError(run(decodeOp(x, { scale: 0.3, scaling: 'pre_qk' })).data, naiveDecode(x, 0.3))).toBeLessThan(1e-12);
  });

  it('reads cache rows past pos not at all: changing them changes nothing', () => {
    const x = decodeInputs(base);
    const before = run(decodeOp(x, { scale: 0.25 })).data;
    const rowBytes = 2 * 3 * 16;
    x.kCache.data.fill(1e30, base.pos * rowBytes);
    x.vCache.data.fill(NaN, base.pos * rowBytes);
    expect(Array.from(run(decodeOp(x, { scale: 0.25 })).data)).toEqual(Array.from(before));
  });

  it('in f16 at f32 precision rounds the scaled q and k to f16 and the output too, within f16 of the f64 answer', () => {
    const x = decodeInputs({ ...base, dtype: 'f16' }, 2);
    const got = run(decodeOp(x, { scale: 0.25, scaling: 'pre_qk' }), 'f32');
    expect(Array.from(got.data).every((v) => Math.fround(v) === v && Number.isFinite(v))).toBe(true);
    // q, k rounded to f16 after scaling by 0.5 (2^-11 relative each) move scores of size <= 16 * 1 by
    // about 16 * 2^-10 = 0.016 at most, the weights by that relative, plus the output's own 2^-11.
    expect(relError(got.data, naiveDecode(x, 0.25))).toBeLessThan(0.03);
    expect(relError(got.data, naiveDecode(x, 0.25))).toBeGreaterThan(0); // it did round
  });
});

describe('packed q, k_new, v_new (attr columns: in place in c_attn\'s output row)', () => {
  const packedOp = (x: ReturnType<typeof decodeInputs>, columns: [number, number, number], width: number, attrs: Record<string, unknown>, op = 'decode_attention') => {
    const p = packDecodeInputs(x, columns, width);
    return singleOp(op, [p, x.kCache, x.vCache, p, p, x.pos], { ...attrs, columns });
  };

  // Columns out of order and a wider row (NaN in the unused columns): the reference must follow the columns, not assume q, k, v.
  for (const precision of ['f64', 'f32'] as const) {
    it(`reads each head from its columns: the same numbers as the unpacked operands, bit for bit (${precision} precision)`, () => {
      const x = decodeInputs(base, 2);
      const c = 3 * 16;
      const packed = run(packedOp(x, [2 * c, 0, 4 * c], 5 * c, { scale: 0.25 }), precision);
      expect(packed.type.shape).toEqual([2, 3, 1, 16]);
      expect(Array.from(packed.data)).toEqual(Array.from(run(decodeOp(x, { scale: 0.25 }), precision).data));
      expect(relError(run(packedOp(x, [0, c, 2 * c], 3 * c, { scale: 0.25 })).data, naiveDecode(x, 0.25))).toBeLessThan(1e-12);
    });
  }

  it('the split form packed: partial then merge equals the unpacked partial bit for bit', () => {
    const x = decodeInputs(base, 2);
    const c = 48;
    const got = run(packedOp(x, [0, c, 2 * c], 3 * c, { scale: 0.25, splits: 3 }, 'decode_attention_partial'));
    expect(Array.from(got.data)).toEqual(Array.from(run(decodeOp(x, { scale: 0.25, splits: 3 }, 'decode_attention_partial')).data));
  });

  it('refuses columns that are not three multiples of D inside the row, and packed rows of the wrong shape', () => {
    const x = decodeInputs(base, 2);
    const p = packDecodeInputs(x, [0, 48, 96], 144);
    const infer = (q: typeof p, columns: unknown) => thrown(() => singleOp('decode_attention', [q, x.kCache, x.vCache, q, q, x.pos], { scale: 0.25, columns })).message;
    expect(infer(p, [0, 48])).toMatch(/^KILN_E011 decode_attention columns must be three non-negative integers/);
    expect(infer(p, [0, 40, 96])).toMatch(/^KILN_E001 decode_attention packed rows of 144 must hold 3 heads of 16 from columns 0, 40, 96, each a multiple of 16/);
    expect(infer(p, [0, 48, 112])).toMatch(/^KILN_E001 decode_attention packed rows of 144 must hold 3 heads/);
    expect(infer(hostTensor('f32', [2, 144], new Float32Array(288)), [0, 48, 96])).toMatch(/^KILN_E001 decode_attention with packed q, k, v needs each of them \[2, 1, 144\]/);
  });
});

describe('the split form', () => {
  for (const splits of [1, 2, 7, 71]) {
    it(`partial with ${splits} splits, then merge, gives decode_attention's answer`, () => {
      const x = decodeInputs(base, 2);
      const g = new Graph();
      const leaves = decodeOperands(x).map((t, i) => g.add('input', [], { name: `x${i}`, dtype: t.type.dtype, shape: [...t.type.shape] }));
      const partial = g.add('decode_attention_partial', leaves, { scale: 0.25, scaling: 'post', splits });
      const merged = g.add('decode_attention_merge', [partial], { dtype: 'f32' });
      g.setOutputs([{ name: 'y', node: merged }, { name: 'partial', node: partial }]);
      const feeds = new Map(leaves.map((n, i) => [n, decodeOperands(x)[i]]));
      const out = interpret(g, (n) => feeds.get(n)!, 'f64');
      expect(relError(out.get('y')!.data, naiveDecode(x, 0.25))).toBeLessThan(1e-12);
      expect(out.get('partial')!.type.shape).toEqual([2, 3, splits, 18]);
      // Splits past pos + 1 = 66 keys (chunk = ceil(S / splits), S = 70) hold the neutral partial.
      const chunk = Math.ceil(70 / splits);
      for (let split = Math.ceil(66 / chunk); split < splits; split++) {
        const row = out.get('partial')!.data.subarray(split * 18, (split + 1) * 18);
        expect([row[16], row[17], Math.max(...Array.from(row.subarray(0, 16), Math.abs))]).toEqual([-Infinity, 0, 0]);
      }
    });
  }
});

describe('the split count kiln chooses', () => {
  // Each split runs whole tiles of 64 keys (the kernels' workgroup), the fewest splits for the fewest serial tiles the target workgroups allow.
  it('fills the target workgroups with splits of whole tiles; none for a cache of DECODE_WHOLE_TILES tiles or fewer', () => {
    expect(decodeSplits(1, 1023)).toBe(16); // 1023 keys: 16 tiles, one each
    expect(decodeSplits(12, 1024)).toBe(16); // GPT-2 at batch 1: 16 <= ceil(264 / 12) = 22
    expect(decodeSplits(6, 256)).toBe(4); // shakespeare-char at batch 1
    expect(decodeSplits(4, 128)).toBe(1); // the browser model at batch 1: 2 tiles, DECODE_WHOLE_TILES
    expect(decodeSplits(4, 129)).toBe(3); // 3 tiles: one each
    expect(decodeSplits(96, 1023)).toBe(3); // at most ceil(264 / 96) = 3 splits: 6, 6 and 4 tiles
    expect(decodeSplits(80, 1024)).toBe(4); // ceil(264 / 80) = 4 splits of 4 tiles each
    expect(decodeSplits(200, 1024)).toBe(2); // 2 splits of 8 tiles
    expect(decodeSplits(6, 64)).toBe(1); // one tile: the whole kernel
    expect(decodeSplits(12, 127)).toBe(1);
    expect(decodeSplits(300, 4096)).toBe(1); // 300 rows fill the GPU already
    for (const [rows, s] of [[1, 1023], [12, 1024], [6, 256], [4, 129], [96, 1023], [80, 1024], [7, 1000], [1, 65], [12, 127], [3, 130]]) {
      const splits = decodeSplits(rows, s);
      const tiles = (n: number) => Math.ceil(decodeChunk(s, n) / DECODE_MIN_SPLIT_KEYS);
      expect(rows * splits, `${rows} rows, S ${s}`).toBeLessThanOrEqual(Math.max(rows, DECODE_TARGET_WORKGROUPS + rows));
      expect(tiles(splits - 1 || 1) > tiles(splits) || splits === 1, `${rows} rows, S ${s}: ${splits} splits, the fewest for ${tiles(splits)} tiles each`).toBe(true);
    }
  });
  it('takes the split count asked, at most one key per split', () => {
    expect(decodeSplits(6, 64, 7)).toBe(7);
    expect(decodeSplits(6, 3, 7)).toBe(3);
  });
});

describe('the decode_split pass', () => {
  /** A decode_attention graph of [1, 12, 1, 64] heads against a cache of S positions, with these attrs. */
  const graph = (s: number, attrs: Record<string, unknown>) => decodeOp(decodeInputs({ batch: [1, 12], d: 64, s, pos: 0, dtype: 'f32', seed: 3 }), attrs).graph;
  const ops = (g: Graph) => g.nodes.filter((n) => !n.op.startsWith('input')).map((n) => `${n.op}${n.attrs.splits ? ` splits=${n.attrs.splits}` : ''}`);

  it('splits a long cache as decodeSplits chooses: partial, then merge', () => {
    expect(ops(splitDecodeAttention(graph(1023, { scale: 0.125 })))).toEqual(['decode_attention_partial splits=16', 'decode_attention_merge']);
  });
  it('takes the splits asked', () => {
    expect(ops(splitDecodeAttention(graph(63, { scale: 0.125, splits: 3 })))).toEqual(['decode_attention_partial splits=3', 'decode_attention_merge']);
  });
  it('leaves a node of one split alone (the whole kernel runs it)', () => {
    expect(ops(splitDecodeAttention(graph(1023, { scale: 0.125, splits: 1 })))).toEqual(['decode_attention splits=1']);
    expect(ops(splitDecodeAttention(graph(100, { scale: 0.125 })))).toEqual(['decode_attention']);
  });
  it('runs in the default pipeline\'s lowered stage, keeping pos a tensor operand', () => {
    const result = runPasses(graph(1023, { scale: 0.125 }), DEFAULT_PIPELINE);
    expect(result.ran).toContain('decode_split');
    expect(ops(result.stages.get('fused')!)).toEqual(['decode_attention']);
    const partial = result.graph.nodes.find((n) => n.op === 'decode_attention_partial')!;
    expect((partial.inputs[5] as Graph['nodes'][number]).type).toEqual({ dtype: 'i32', shape: [] });
    expect(result.graph.outputs[0].node.op).toBe('decode_attention_merge');
  });
});

describe('coded errors', () => {
  const x = decodeInputs({ ...base, s: 8, pos: 3 });
  const t = (dtype: DType, shape: number[]) => hostTensor(dtype, shape, dtype === 'i32' ? new Int32Array(shape.reduce((a, b) => a * b, 1)) : new Float32Array(shape.reduce((a, b) => a * b, 1)));
  const withOperand = (i: number, v: ReturnType<typeof t>) => decodeOperands(x).map((y, j) => (j === i ? v : y));
  it('a query of more than one row', () => {
    expect(thrown(() => singleOp('decode_attention', withOperand(0, t('f32', [2, 3, 2, 16])), { scale: 1 })).message).toMatch(/^KILN_E001 .*one query row per head/);
  });
  it('a cache that is not position-major [S, B, H, D]', () => {
    expect(thrown(() => singleOp('decode_attention', withOperand(1, t('f32', [2, 3, 8, 16])), { scale: 1 })).message).toMatch(/^KILN_E001 .*position-major caches \[S, 2, 3, 16\]/);
  });
  it('k_new of another shape than q', () => {
    expect(thrown(() => singleOp('decode_attention', withOperand(3, t('f32', [2, 3, 1, 8])), { scale: 1 })).message).toMatch(/^KILN_E001 .*k_new and v_new shaped as q/);
  });
  it('mixed float dtypes', () => {
    expect(thrown(() => singleOp('decode_attention', withOperand(2, t('f16', [8, 2, 3, 16])), { scale: 1 })).message).toMatch(/^KILN_E002 .*different dtypes/);
  });
  it('a pos that is not i32[]', () => {
    expect(thrown(() => singleOp('decode_attention', withOperand(5, t('f32', []) ), { scale: 1 })).message).toMatch(/^KILN_E002 .*expects i32/);
    expect(thrown(() => singleOp('decode_attention', withOperand(5, t('i32', [1])), { scale: 1 })).message).toMatch(/^KILN_E001 .*pos must be a 0-d i32/);
  });
  it('f16 with scaling "post"', () => {
    const h = decodeInputs({ ...base, dtype: 'f16' });
    expect(thrown(() => decodeOp(h, { scale: 0.25 })).message).toMatch(/^KILN_E011 .*in f16 needs scaling "pre_qk"/);
  });
  it('a pos past the cache, and a negative one, on the CPU', () => {
    for (const pos of [8, -1]) {
      const bad = decodeInputs({ ...base, s: 8, pos });
      expect(thrown(() => run(decodeOp(bad, { scale: 1 }))).message).toBe(`KILN_E011 decode_attention cache index ${pos} at [] is outside [0, 8)`);
    }
  });
  it('a gradient', () => {
    const c = decodeOp(x, { scale: 1 });
    const loss = c.graph.add('sum', [c.node], { dims: [0, 1, 2, 3], keepdim: false });
    const q = c.graph.nodes[0];
    expect(thrown(() => differentiate(c.graph, loss, [q])).message).toMatch(/^KILN_E011 decode_attention is inference only/);
  });
});

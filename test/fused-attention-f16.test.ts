// f16 attention without a GPU (issue 16): the type rule that an f16 attention node scales q and k first
// ("pre_qk"), the fusion pass choosing it for the user's manual chain, the CPU reference rounding the
// scaled q and k to f16 as the kernels do, and what the f16 kernels' text holds. Their numbers on
// lavapipe: f16-attention.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { lowerNode } from '../codegen/index.ts';
import { flashTiling, flashTilingOf } from '../codegen/wgsl/fused_attention.ts';
import { KilnError, type Tensor, compile, tensor } from '../index.ts';
import { roundF16 } from '../ir/f16.ts';
import { type Attrs, Graph, type Node } from '../ir/graph.ts';
import { hostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import type { DType } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { ManualAttention } from './manual-attention.ts';

const input = (g: Graph, name: string, dtype: DType, shape: number[]) => g.add('input', [], { name, dtype, shape });

/** fused_attention of three [1, 2, 5, 16] inputs of `dtype` with these attrs. */
function attention(dtype: DType, attrs: Attrs, op = 'fused_attention'): Node {
  const g = new Graph();
  const [q, k, v] = ['q', 'k', 'v'].map((name) => input(g, name, dtype, [1, 2, 5, 16]));
  return g.add(op, op === 'attention_lse' ? [q, k] : [q, k, v], attrs);
}

describe('an f16 attention node scales q and k before q k^T', () => {
  for (const op of ['fused_attention', 'attention_lse']) {
    it(`${op} in f16 with scaling "post" is refused, naming "pre_qk"`, () => {
      const e = (() => {
        try {
          attention('f16', { causal: true, scale: 0.25, scaling: 'post' }, op);
        } catch (err) {
          return err;
        }
      })();
      expect(e).toBeInstanceOf(KilnError);
      expect((e as KilnError).message).toMatch(/KILN_E011.*in f16 needs scaling "pre_qk"/);
    });
  }

  it('f32 keeps "post"; f16 takes "pre_qk"; a negative scale, which has no square root, stays "post" in f16', () => {
    expect(attention('f32', { causal: true, scale: 0.25, scaling: 'post' }).attrs.scaling).toBe('post');
    expect(attention('f16', { causal: true, scale: 0.25, scaling: 'pre_qk' }).type.dtype).toBe('f16');
    expect(attention('f16', { causal: true, scale: -0.25, scaling: 'post' }).type.dtype).toBe('f16');
  });
});

describe('attention fusion in f16', () => {
  const qkv = (dtype: DType) => [0, 1, 2].map((i) => tensor(Array.from({ length: 2 * 6 * 8 }, (_, e) => roundF16(Math.sin(e + 10 * i))), [1, 2, 6, 8], dtype));

  for (const attentionScaling of ['post', 'pre_qk'] as const) {
    it(`gives the user's manual chain scaling "pre_qk" in f16 (attentionScaling "${attentionScaling}"), and says why; f32 keeps the option's`, async () => {
      const fused = async (dtype: DType) => {
        const model = new ManualAttention(8).eval();
        if (dtype === 'f16') model.half();
        const c = await compile(model, { backend: 'cpu', attentionScaling }).lower(...(qkv(dtype) as [Tensor, Tensor, Tensor]));
        const [node] = c.passes.stages.get('fused')!.nodesOf('fused_attention');
        return node;
      };
      const [half, full] = [await fused('f16'), await fused('f32')];
      expect(half.attrs).toMatchObject({ causal: true, scaling: 'pre_qk' });
      expect(full.attrs).toMatchObject({ causal: true, scaling: attentionScaling });
      expect(String(half.meta?.reason)).toMatch(/f16: q and k each scaled by sqrt\(scale\) and rounded to f16 before q k\^T/);
      expect(String(full.meta?.reason)).not.toMatch(/f16:/);
    });
  }
});

describe('the CPU reference of f16 attention', () => {
  // d = 64, q = k = 40 everywhere: q.k = 102400 overflows f16; q and k scaled by 64^-1/4 each round to
  // f16(14.142...) = 14.140625, and the scores, 64 * 14.140625^2 = 12797, fit.
  const [l, d] = [3, 64];
  const run = (precision: 'f32' | 'f64', rounds: 'fused' | 'chain') => {
    const g = new Graph();
    const [q, k, v] = ['q', 'k', 'v'].map((name) => input(g, name, 'f16', [1, 1, l, d]));
    const out = rounds === 'fused'
      ? g.add('fused_attention', [q, k, v], { causal: false, scale: 1 / 8, scaling: 'pre_qk' })
      : g.add('matmul', [g.add('softmax', [g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), 1 / 8])], { dim: -1 }), v], { transposeA: false, transposeB: false });
    g.setOutputs([{ name: 'o', node: out }]);
    const values = (name: string) => Float32Array.from({ length: l * d }, (_, e) => (name === 'v' ? roundF16(Math.cos(e)) : 40));
    return interpret(g, (n) => hostTensor('f16', [1, 1, l, d], values(String(n.attrs.name))), precision).get('o')!.data;
  };

  it('rounds sqrt(scale) q and sqrt(scale) k to f16 at \'f32\' (finite where the unscaled f16 chain overflows), and not at \'f64\'', () => {
    const chain = run('f32', 'chain');
    expect(Array.from(chain).every(Number.isNaN)).toBe(true); // inf scores, inf - inf in softmax
    const [f16, f64] = [run('f32', 'fused'), run('f64', 'fused')];
    // Every score is equal, so each output is the mean of v's column: exact at 'f64', rounded once to f16 at 'f32'.
    for (let c = 0; c < d; c++) {
      let mean = 0;
      for (let j = 0; j < l; j++) mean += roundF16(Math.cos(j * d + c)) / l;
      expect(f64[c]).toBeCloseTo(mean, 12);
      expect(f16[c]).toBe(roundF16(f64[c]));
    }
  });
});

describe('the f16 kernels\' text', () => {
  const f16Kernel = (op: string, attrs: Attrs) => lowerNode(attention('f16', attrs, op))!.code;

  it('rounds the scaled q and k with kiln_round_f16, stages f16 tiles, and stores f16', () => {
    const forward = f16Kernel('fused_attention', { causal: true, scale: 0.25, scaling: 'pre_qk' });
    expect(forward).toMatch(/^enable f16;$/m);
    expect(forward).toContain('var<workgroup> k_tile: array<vec4<f16>, KEYS * K_ROW>;');
    expect(forward).toContain('q_own[u] = kiln_round_f16(load_q(q_row, (u * SLICES + slice) * 4u) * K_SCALE) * Q_SCALE;');
    expect(forward).toMatch(/next_k\[0\] = select\(vec4<f16>\(0\.0\), vec4<f16>\(kiln_round_f16\(load_k\(.*\) \* K_SCALE\)\)/);
    expect(forward).toContain('= f16(value[c]);');
    const lse = f16Kernel('attention_lse', { causal: true, scale: 0.25, scaling: 'pre_qk' });
    expect(lse).toContain('kiln_round_f16(');
    expect(lse).toContain('out[own_at * 2u] = run_max;'); // the statistics stay f32
  });

  it('takes half the workgroup memory for its k and v tiles', () => {
    const shape = { slices: 2, rows: 64, keys: 16 };
    const [f32, f16] = [flashTilingOf(64, 64, shape), flashTilingOf(64, 64, shape, 'f16')];
    const exchange = 16 * 64 * 2 * 4;
    expect(f16.workgroupBytes - exchange).toBe((f32.workgroupBytes - exchange) / 2);
    // d = 256 fits 8 keys a tile in f16 where f32 fits 4.
    expect([flashTiling(256, 256)!.keys, flashTiling(256, 256, undefined, 'f16')!.keys]).toEqual([4, 8]);
  });
});

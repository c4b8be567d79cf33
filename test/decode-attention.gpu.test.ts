// decode_attention's kernels on WebGPU (SwiftShader, f32) against a softmax written out in f64: the
// whole kernel (one split) and the split form (passes/decode-split.ts: partial + merge) across cache
// lengths pos + 1 in {1, 2, 63, 64, 65, 1000} (around the 64-key tile), split counts {1, 2, 7, the
// one kiln chooses}, (b, h) rows {1, 6} and head dims {16, 64}; one compiled program over many pos;
// cache rows at and past pos never read (they hold NaN); a pos past the cache reported as on the CPU.
//
// Tolerance, derived for f32 with u = 2^-24 (error bounds of recursive sums, Higham ch. 3), as a
// bound on max |out - ref| over max |v|:
// - scores: a D-term dot product of q (scaled once, log2(e) folded in) and k: error at most
//   (D + 2) u sum_c |q_c k_c| * scale * log2(e) in base 2; call its max over keys dScore.
// - weights 2^(t_j - m): WGSL's exp2 is accurate to 3 + 2|x| ULP (spec), x = t_j - m; a weight w's
//   relative error is at most ln(2) dScore * 2 (t_j and m both off) + (3 + 2 X) 2u, X = max |t_j - m|.
// - the sums over n = pos + 1 keys, of the weights and of the weighted v (rescaled at most once a tile,
//   one more rounding each): relative to max|v| sum w, at most (n + n / 64 + 2) u each.
// - the merge of the splits: a few roundings more per split; and the output division, u.
// A relative error e on every weight moves the normalized output by at most 2 e max|v|. So
// bound = max|v| (2 (n + n/64 + 2 + 2 * splits) u + 2 (2 ln(2) dScore + (3 + 2 X) 2u)).
// Measured errors sit well under it (they add as random walks, the bound as worst cases): see the
// ratio printed with each failure.

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { decodeSplits } from '../ir/ops/decode_attention.ts';
import { splitDecodeAttention } from '../passes/decode-split.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { type DecodeInputs, decodeInputs, decodeOperands, f32Bound, naiveDecode, packDecodeInputs } from './decode-attention-cases.ts';

afterAll(releaseDevice);

/** A decode_attention graph over input leaves x0..x5, split by the pass as `splits` asks. */
function decodeGraph(x: DecodeInputs, attrs: Record<string, unknown>): { graph: Graph; leaves: Node[] } {
  const g = new Graph();
  const leaves = decodeOperands(x).map((t, i) => g.add('input', [], { name: `x${i}`, dtype: t.type.dtype, shape: [...t.type.shape] }));
  g.setOutputs([{ name: 'y', node: g.add('decode_attention', leaves, attrs as never) }]);
  const graph = splitDecodeAttention(g);
  return { graph, leaves: graph.nodesOf('input') };
}

/** Cache rows pos..S-1 set to NaN: a kernel that reads one there writes NaN. */
function poisonPastPos(x: DecodeInputs): void {
  const [b, h, , d] = x.q.type.shape;
  const from = x.pos.data[0] * b * h * d;
  x.kCache.data.fill(NaN, from);
  x.vCache.data.fill(NaN, from);
}

async function runOnGpu(graph: Graph, leaves: Node[], x: DecodeInputs): Promise<Float32Array> {
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(graph));
  const outs = exec.run(new Map(leaves.map((n, i) => [n, decodeOperands(x)[i]])));
  const y = await readback(kdev, outs.get('y')!, graph.outputs[0].node.type);
  exec.destroy();
  return y as Float32Array;
}

function maxAbsError(got: ArrayLike<number>, ref: ArrayLike<number>): number {
  let e = 0;
  for (let i = 0; i < ref.length; i++) e = Math.max(e, Number.isFinite(got[i]) ? Math.abs(got[i] - ref[i]) : Infinity);
  return e;
}

describe('decode attention on WebGPU (f32) against an f64 softmax', () => {
  const seeds = { n: 0 };
  for (const d of [16, 64]) {
    for (const batch of [[1, 1], [2, 3]] as [number, number][]) {
      for (const keys of [1, 2, 63, 64, 65, 1000]) {
        // S >= keys, with three spare rows past pos (NaN: never read).
        const s = keys + 3;
        const rows = batch[0] * batch[1];
        const chosen = decodeSplits(rows, s);
        for (const asked of [1, 2, 7, 0]) {
          const splits = decodeSplits(rows, s, asked);
          const seed = ++seeds.n;
          it(`D ${d}, ${rows} (b, h) rows, pos + 1 = ${keys} keys of S = ${s}, ${asked === 0 ? `kiln's choice of ${chosen}` : splits} split${splits === 1 ? '' : 's'}`, async () => {
            const x = decodeInputs({ batch, d, s, pos: keys - 1, dtype: 'f32', seed }, 2);
            poisonPastPos(x);
            const scale = 1 / Math.sqrt(d);
            const { graph, leaves } = decodeGraph(x, { scale, splits: asked });
            expect(graph.nodes.map((n) => n.op).filter((op) => op.startsWith('decode'))).toEqual(splits > 1 ? ['decode_attention_partial', 'decode_attention_merge'] : ['decode_attention']);
            const got = await runOnGpu(graph, leaves, x);
            const err = maxAbsError(got, naiveDecode(x, scale));
            const bound = f32Bound(x, scale, splits);
            expect(err, `error ${err.toExponential(2)}, ${(err / bound).toFixed(3)} of the bound ${bound.toExponential(2)}`).toBeLessThanOrEqual(bound);
          });
        }
      }
    }
  }
});

describe('packed q, k_new, v_new (attr columns) on WebGPU', () => {
  // One leaf bound as q, k_new and v_new, as the decode step binds c_attn's output; columns out of
  // order in a wider row whose other columns are NaN (read one and the output is NaN). The same
  // kernel text as the unpacked form, its rows found by params: so the unpacked run's answer, bit for
  // bit (the same loads in the same order), and within the f32 bound of the f64 softmax.
  for (const [splits, keys] of [[1, 40], [3, 130]]) {
    it(`reads each head from its columns, ${splits} split${splits > 1 ? 's' : ''}, pos + 1 = ${keys}: bit-equal to the unpacked operands`, async () => {
      const x = decodeInputs({ batch: [2, 3], d: 16, s: keys + 2, pos: keys - 1, dtype: 'f32', seed: 70 + splits }, 2);
      poisonPastPos(x);
      const c = 3 * 16;
      const packed = packDecodeInputs(x, [2 * c, 0, 4 * c], 5 * c);
      const g = new Graph();
      const [p, kCache, vCache, pos] = [packed, x.kCache, x.vCache, x.pos].map((t, i) => g.add('input', [], { name: `p${i}`, dtype: t.type.dtype, shape: [...t.type.shape] }));
      g.setOutputs([{ name: 'y', node: g.add('decode_attention', [p, kCache, vCache, p, p, pos], { scale: 0.25, splits, columns: [2 * c, 0, 4 * c] }) }]);
      const graph = splitDecodeAttention(g);
      expect(graph.nodes.filter((n) => n.op.startsWith('decode_attention')).map((n) => n.attrs.columns ?? null)).toEqual(splits > 1 ? [[2 * c, 0, 4 * c], null] : [[2 * c, 0, 4 * c]]);
      const kdev = await getDevice();
      const exec = await Executor.create(kdev, lowerGraph(graph));
      const feeds = [packed, x.kCache, x.vCache, x.pos];
      const outs = exec.run(new Map(graph.nodesOf('input').map((n) => [n, feeds[Number(String(n.attrs.name).slice(1))]])));
      const got = await readback(kdev, outs.get('y')!, graph.outputs[0].node.type);
      exec.destroy();
      const unpacked = decodeGraph(x, { scale: 0.25, splits });
      expect(Array.from(got)).toEqual(Array.from(await runOnGpu(unpacked.graph, unpacked.leaves, x)));
      expect(maxAbsError(got, naiveDecode(x, 0.25))).toBeLessThanOrEqual(f32Bound(x, 0.25, splits));
    });
  }
});

describe('one compiled decode program', () => {
  it('serves every pos: the same kernels, pos read on the device', async () => {
    const base = { batch: [2, 3] as [number, number], d: 16, s: 130, dtype: 'f32' as const, seed: 99 };
    const x = decodeInputs({ ...base, pos: 0 }, 2);
    const { graph, leaves } = decodeGraph(x, { scale: 0.25, splits: 3 });
    const kdev = await getDevice();
    const exec = await Executor.create(kdev, lowerGraph(graph));
    for (const pos of [0, 1, 43, 44, 64, 129]) {
      const step: DecodeInputs = { ...x, pos: hostTensor('i32', [], Int32Array.of(pos)) };
      const outs = exec.run(new Map(leaves.map((n, i) => [n, decodeOperands(step)[i]])));
      const got = await readback(kdev, outs.get('y')!, graph.outputs[0].node.type);
      expect(maxAbsError(got, naiveDecode(step, 0.25)), `pos ${pos}`).toBeLessThanOrEqual(f32Bound(step, 0.25, 3));
    }
    exec.destroy();
  });

  it('reports a pos past the cache as the CPU reference does, once', async () => {
    const x = decodeInputs({ batch: [2, 3], d: 16, s: 20, pos: 20, dtype: 'f32', seed: 5 });
    const { graph, leaves } = decodeGraph(x, { scale: 0.25, splits: 4 });
    const kdev = await getDevice();
    const exec = await Executor.create(kdev, lowerGraph(graph));
    exec.run(new Map(leaves.map((n, i) => [n, decodeOperands(x)[i]])));
    const gpu = await exec.readIndexErrors();
    exec.destroy();
    let cpu: unknown;
    try {
      interpret(graph, (n) => decodeOperands(x)[leaves.indexOf(n)] as HostTensor, 'f32');
    } catch (e) {
      cpu = e;
    }
    expect(gpu?.message).toBe('KILN_E011 decode_attention cache index 20 at [] is outside [0, 20)');
    expect((cpu as Error).message).toBe(gpu?.message);
  });
});

// Dropout inside the flash-attention forward kernel (fused_attention with dropoutP) on the GPU
// (SwiftShader in CI), against the unfused chain softmax -> dropout -> @ v run as separate kernels
// from the same seed and rng. With v the identity (Dv = S) the output is the dropped weights
// themselves, so the two masks can be compared bit for bit: the same zeros, the same kept values
// within f32 rounding. The backward kernels' dropout is checked in attention-backward.gpu.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { numel } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { asNumbers, rng } from './helpers.ts';

afterAll(releaseDevice);

const DROPOUT = { p: 0.3, seed: 5 };
const RNG_VALUE = 777;

interface Case { b: number; h: number; t: number; d: number; causal: boolean }

/** Inputs q, k (random), v (the identity, so out = the dropped weights), the causal fill mask and the rng. */
function inputs(c: Case): Map<string, HostTensor> {
  const r = rng(c.t * 31 + c.d);
  const random = (n: number) => Float32Array.from({ length: n }, () => 4 * r() - 2);
  const eye = new Float32Array(c.b * c.h * c.t * c.t);
  for (let m = 0; m < c.b * c.h; m++) for (let j = 0; j < c.t; j++) eye[(m * c.t + j) * c.t + j] = 1;
  const fill = Uint8Array.from({ length: c.t * c.t }, (_, e) => Number(e % c.t > Math.floor(e / c.t)));
  return new Map([
    ['q', hostTensor('f32', [c.b, c.h, c.t, c.d], random(c.b * c.h * c.t * c.d))],
    ['k', hostTensor('f32', [c.b, c.h, c.t, c.d], random(c.b * c.h * c.t * c.d))],
    ['v', hostTensor('f32', [c.b, c.h, c.t, c.t], eye)],
    ['fill', hostTensor('bool', [c.t, c.t], fill)],
    ['rng', hostTensor('i32', [], Int32Array.of(RNG_VALUE))],
  ]);
}

/** fused_attention with dropout, or the chain it fuses: matmul, mul, masked_fill, softmax, dropout, matmul. */
function graphOf(c: Case, values: Map<string, HostTensor>, fused: boolean): Graph {
  const g = new Graph();
  const input = (name: string) => g.add('input', [], { name, dtype: values.get(name)!.type.dtype, shape: [...values.get(name)!.type.shape] });
  const [q, k, v, r] = ['q', 'k', 'v', 'rng'].map(input);
  const scale = 1 / Math.sqrt(c.d);
  let out: Node;
  if (fused) {
    out = g.add('fused_attention', [q, k, v, r], { causal: c.causal, scale, scaling: 'post', dropoutP: DROPOUT.p, seed: DROPOUT.seed, optional: 'rng' });
  } else {
    let scores = g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), scale]);
    if (c.causal) scores = g.add('masked_fill', [scores, input('fill'), -Infinity]);
    const weights = g.add('dropout', [g.add('softmax', [scores], { dim: -1 }), r], { p: DROPOUT.p, training: true, seed: DROPOUT.seed });
    out = g.add('matmul', [weights, v], { transposeA: false, transposeB: false });
  }
  g.setOutputs([{ name: 'out', node: out }]);
  return g;
}

async function onGpu(g: Graph, values: Map<string, HostTensor>, limits?: KernelLimits): Promise<Float64Array> {
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(g, limits));
  const outs = exec.run(new Map(g.nodesOf('input').map((n) => [n, values.get(String(n.attrs.name))!])));
  const out = asNumbers(await readback(kdev, outs.get('out')!, g.outputs[0].node.type));
  exec.destroy();
  return out;
}

describe('fused_attention with dropout on the GPU', () => {
  for (const c of [
    { b: 2, h: 2, t: 24, d: 16, causal: true },
    { b: 1, h: 3, t: 70, d: 64, causal: true },
    { b: 2, h: 1, t: 33, d: 8, causal: false },
  ] satisfies Case[]) {
    it(`drops the same weights as the unfused chain, bit for bit: B${c.b} H${c.h} T${c.t} D${c.d}${c.causal ? ' causal' : ''}`, async () => {
      const values = inputs(c);
      const { limits } = await getDevice();
      const fused = await onGpu(graphOf(c, values, true), values, limits);
      const chain = await onGpu(graphOf(c, values, false), values);
      const reference = asNumbers(interpret(graphOf(c, values, true), (n) => values.get(String(n.attrs.name))!, 'f64').get('out')!.data);
      expect(fused.length).toBe(numel([c.b, c.h, c.t, c.t]));
      const zeros = (x: Float64Array) => Array.from(x).flatMap((y, e) => (y === 0 ? [e] : []));
      expect(zeros(fused)).toEqual(zeros(chain));
      expect(zeros(fused)).toEqual(zeros(reference));
      // Some weights dropped, some kept: the mask did something.
      const kept = fused.filter((x) => x !== 0).length;
      expect(kept).toBeGreaterThan(0);
      expect(zeros(fused).length).toBeGreaterThan(c.causal ? (c.b * c.h * c.t * (c.t - 1)) / 2 : 0);
      for (let e = 0; e < fused.length; e++) expect(Math.abs(fused[e] - chain[e])).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(chain[e])));
    });
  }
});

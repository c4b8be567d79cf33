// The flash-attention backward's kernels on the GPU (SwiftShader in CI) against f64.
//
// Yardstick, as for the forward (fused-attention.gpu.test.ts): the composed backward (matmul,
// softmax, softmax's backward, ... as kiln's separate f32 kernels) run on the same GPU from the same
// inputs. Its error against f64 is what f32 arithmetic costs this computation without any fusion;
// the flash kernels may be at most twice as far from f64, plus a floor of FLOOR_ULPS units in the
// last place of one term of the gradient's sum (scale * |dP| * |k| for dq, where dP = dO . v is
// bounded by the rows' norms; |dO| for dv). The floor matters where the composed error is near
// zero: a row that sees one key has P = 1 and dS = P (dP - delta) = 0 exactly, which the composed
// softmax gets exactly, while the flash kernels recompute P = exp2(s - lse) and delta = dO . O in f32,
// a few ulps off (measured: 2 ulps of |dO| in dv for L = S = D = 1).
// Fully masked rows are checked against f64 directly, with TOL relative to the largest finite
// gradient entry: with emptyRows "zero" (sdpa's) the flash backward gives zeros there where the
// composed one gives NaN; with "nan" (the chain's) both give NaN, in the same places.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { flashAttentionBackward } from '../ir/ops/attention_backward.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { type BackwardCase, type CaseData, backwardGraph, caseData, composedBackward, cpuGradients } from './attention-cases.ts';
import { asNumbers } from './helpers.ts';

afterAll(releaseDevice);

const GRADS = ['dq', 'dk', 'dv'] as const;
// Against f64 where no yardstick exists (fully masked rows): the flash error measured 3e-7 of the
// largest gradient entry there (see the log line); 2e-5 leaves room for other seeds without hiding
// a wrong P (a wrong row or a missed key is off by 1e-2 or more).
const TOL = 2e-5;
const FLOOR_ULPS = 4;

/** dq, dk, dv of `backward` run on the GPU. */
async function gpuGradients(data: CaseData, backward: typeof flashAttentionBackward, limits?: KernelLimits): Promise<Map<string, Float64Array>> {
  const { graph, feeds } = backwardGraph(data, backward);
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(graph, limits));
  const outs = exec.run(new Map(graph.nodesOf('input').map((n) => [n, feeds.get(String(n.attrs.name))!])));
  const result = new Map<string, Float64Array>();
  for (const o of graph.outputs) result.set(o.name, asNumbers(await readback(kdev, outs.get(o.name)!, o.node.type)));
  exec.destroy();
  return result;
}

const worst = { flash: 0, flashCase: '', composed: 0, ratio: 0, masked: 0 };
afterAll(() => {
  console.log(`attention backward: largest |flash - f64| / max|grad| ${worst.flash.toExponential(2)} (${worst.flashCase}), composed ${worst.composed.toExponential(2)}, ` +
    `largest flash/composed ratio ${worst.ratio.toFixed(2)}; with fully masked rows ${worst.masked.toExponential(2)}`);
});

/** Max |a - ref| over max |ref| for one gradient; NaN must stand where the reference has NaN. */
function relative(a: Float64Array, ref: HostTensor['data']): { err: number; scale: number } {
  let err = 0;
  let scale = 0;
  for (let e = 0; e < ref.length; e++) {
    if (Number.isNaN(ref[e]) && Number.isNaN(a[e])) continue;
    if (!Number.isFinite(a[e]) || Number.isNaN(ref[e])) return { err: Infinity, scale: 1 };
    err = Math.max(err, Math.abs(a[e] - ref[e]));
    scale = Math.max(scale, Math.abs(ref[e]));
  }
  return { err, scale: scale || 1 };
}

function describeCase(c: BackwardCase): string {
  return `B${c.b} H${c.h} L${c.l} S${c.s} D${c.d}${c.dv ? ` Dv${c.dv}` : ''} causal=${c.causal} ${c.scaling}${c.mask ? ` ${c.mask} mask [${c.maskShape}]` : ''}${c.blankRows?.length ? ' with a blank row' : ''}`;
}

/** max over rows of the Euclidean norm of rows `width` long. */
function maxRowNorm(t: HostTensor): number {
  const width = t.type.shape.at(-1)!;
  let best = 0;
  for (let r = 0; r < t.data.length; r += width) {
    let sum = 0;
    for (let c = 0; c < width; c++) sum += t.data[r + c] ** 2;
    best = Math.max(best, Math.sqrt(sum));
  }
  return best;
}

const maxAbs = (t: HostTensor) => asNumbers(t.data).reduce((m, x) => Math.max(m, Math.abs(x)), 0);

/** FLOOR_ULPS ulps of the size of one term of each gradient's sum: see the file comment. */
function floors(data: CaseData): Record<(typeof GRADS)[number], number> {
  const dp = maxRowNorm(data.dout) * maxRowNorm(data.v);
  // Kept weights are scaled by 1/(1-p): so is every term.
  const ulp = (FLOOR_ULPS * 2 ** -23) / (1 - Number(data.dropout?.attrs.dropoutP ?? 0));
  return { dq: ulp * data.spec.scale * dp * maxAbs(data.k), dk: ulp * data.spec.scale * dp * maxAbs(data.q), dv: ulp * maxAbs(data.dout) };
}

/** The 2x rule against the composed backward on the GPU, or TOL against f64 where rows are fully masked. */
async function expectAccurate(c: BackwardCase, limits?: KernelLimits): Promise<void> {
  const data = caseData(c);
  const ref = cpuGradients(data, flashAttentionBackward);
  const flash = await gpuGradients(data, flashAttentionBackward, limits);
  const blank = (c.blankRows?.length ?? 0) > 0;
  const composed = blank ? undefined : await gpuGradients(data, composedBackward);
  for (const name of GRADS) {
    const f = relative(flash.get(name)!, ref.get(name)!.data);
    const what = `${describeCase(c)}: ${name}`;
    if (!composed) {
      expect(f.err / f.scale, what).toBeLessThanOrEqual(TOL);
      worst.masked = Math.max(worst.masked, f.err / f.scale);
      continue;
    }
    const u = relative(composed.get(name)!, ref.get(name)!.data);
    const floor = floors(data)[name];
    expect(f.err, `${what}: flash error ${f.err} vs composed ${u.err} (floor ${floor})`).toBeLessThanOrEqual(2 * u.err + floor);
    if (f.err / f.scale > worst.flash) [worst.flash, worst.flashCase] = [f.err / f.scale, what];
    worst.composed = Math.max(worst.composed, u.err / u.scale);
    if (u.err > floor) worst.ratio = Math.max(worst.ratio, f.err / u.err);
  }
}

const HEAD_DIMS = [1, 8, 16, 59, 64];

describe('fused_attention_backward on the GPU', () => {
  it('covers every listed head dim, causal and not, with L != S', async () => {
    for (const [n, d] of HEAD_DIMS.entries()) {
      await expectAccurate({ b: 1, h: 2, l: 9 + 7 * n, s: 23, d, causal: n % 2 === 0, scaling: n % 3 === 0 ? 'pre_qk' : 'post', seed: 10 + n });
    }
  });

  it('handles bool and additive masks, broadcast over batch and heads', async () => {
    await expectAccurate({ b: 2, h: 2, l: 13, s: 19, d: 16, causal: false, scaling: 'post', mask: 'bool', maskShape: [13, 19], seed: 21 });
    await expectAccurate({ b: 2, h: 2, l: 11, s: 7, d: 59, causal: false, scaling: 'pre_qk', mask: 'additive', maskShape: [2, 1, 11, 7], seed: 22 });
  });

  it('gives rows a mask blanks out zero gradients, never NaN', async () => {
    for (const mask of ['bool', 'additive'] as const) {
      await expectAccurate({ b: 1, h: 3, l: 9, s: 21, d: 16, causal: false, scaling: 'post', mask, maskShape: [1, 9, 21], blankRows: [0, 4], seed: 31 });
    }
  });

  it('gives rows with no key the chain\'s gradient with emptyRows "nan": NaN where it has NaN, and a finite fill\'s rows a softmax', async () => {
    for (const mask of ['bool', 'additive'] as const) {
      await expectAccurate({ b: 1, h: 3, l: 9, s: 21, d: 16, causal: false, scaling: 'post', mask, maskShape: [1, 9, 21], blankRows: [0, 4], emptyRows: 'nan', seed: 32 });
    }
    await expectAccurate({ b: 1, h: 2, l: 9, s: 21, d: 16, causal: false, scaling: 'pre_qk', mask: 'bool', maskShape: [9, 21], blankRows: [3], fill: -1e30, emptyRows: 'nan', seed: 33 });
    await expectAccurate({ b: 1, h: 2, l: 9, s: 21, d: 59, causal: false, scaling: 'post', mask: 'additive', maskShape: [9, 21], blankRows: [3], blankValue: -3.4028234663852886e38, emptyRows: 'nan', seed: 34 });
  });

  it('is causal across several tiles of owned and streamed rows', async () => {
    await expectAccurate({ b: 1, h: 1, l: 150, s: 150, d: 16, causal: true, scaling: 'post', seed: 41 });
    await expectAccurate({ b: 1, h: 1, l: 70, s: 100, d: 8, causal: true, scaling: 'pre_qk', seed: 42 });
  });

  it('stays right with the tiling of a device with more workgroup memory (the H100\'s limits)', async () => {
    const { limits } = await getDevice();
    await expectAccurate({ b: 1, h: 2, l: 40, s: 37, d: 64, causal: true, scaling: 'post', seed: 51 }, limits);
  });

  it('redraws the forward\'s dropout: within 2x of the composed backward with the same mask', async () => {
    await expectAccurate({ b: 2, h: 2, l: 37, s: 37, d: 64, causal: true, scaling: 'post', dropout: 0.2, seed: 71 });
    await expectAccurate({ b: 1, h: 2, l: 19, s: 26, d: 16, causal: false, scaling: 'pre_qk', mask: 'bool', maskShape: [19, 26], dropout: 0.5, seed: 72 });
    const { limits } = await getDevice();
    await expectAccurate({ b: 1, h: 3, l: 40, s: 40, d: 59, causal: true, scaling: 'post', dropout: 0.1, seed: 73 }, limits);
  });

  it('stays within 2x of the composed backward\'s error across shapes, masks and scalings (fast-check)', async () => {
    const cases = fc.record({
      b: fc.integer({ min: 1, max: 2 }),
      h: fc.integer({ min: 1, max: 2 }),
      l: fc.integer({ min: 1, max: 40 }),
      s: fc.integer({ min: 1, max: 40 }),
      d: fc.constantFrom(...HEAD_DIMS),
      causal: fc.boolean(),
      scaling: fc.constantFrom<'post' | 'pre_qk'>('post', 'pre_qk'),
      mask: fc.constantFrom<'bool' | 'additive' | undefined>(undefined, 'bool', 'additive'),
      blank: fc.boolean(),
      seed: fc.integer({ min: 1, max: 1 << 30 }),
    }).map(({ mask, blank, ...c }): BackwardCase => (c.causal || !mask
      ? c
      : { ...c, mask, maskShape: [c.l, c.s], blankRows: blank && c.l > 1 ? [c.l - 1] : [] }));
    await fc.assert(fc.asyncProperty(cases, (c) => expectAccurate(c)), { numRuns: 15, seed: 20261201 });
  });
});

// The register-tiled matmul kernel against the f64 CPU reference, in every tiling kiln may choose and
// in both forms (exact tiles without bounds checks, ragged edges), on random shapes with transposes and
// broadcast batch dims. Each run poisons the output with NaN first, so an element left unwritten fails.
//
// Tolerance: |gpu - ref| <= 2e-5 * sqrt(K) * max|a| * max|b|. A sum of K products of size up to
// T = max|a| max|b| accumulated in f32 picks up one rounding (u = 6e-8 relative) per step, on partial sums
// that grow like sqrt(k) * T for random signs: about u * T * K / 2 in all, at most 4.5 sigma of it over
// the outputs. For K <= 1024 that is under 2e-5 * sqrt(K) * T by a factor of 5 or more (at K = 257, 30x),
// while any indexing or staging error moves an output by O(T): the bound separates the two.
// Which tiling kiln chooses, and the kernel text, need no GPU: matmul-tiling.test.ts.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { kernelFromPlan } from '../codegen/index.ts';
import type { Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import '../ir/ops/index.ts';
import { matmulDims } from '../ir/ops/linalg.ts';
import { MATMUL_TILINGS, type MatmulTiling, chooseMatmulTiling, matmulWorkgroupBytes } from '../codegen/wgsl/linalg.ts';
import { getOp } from '../ir/registry.ts';
import { numel } from '../ir/types.ts';
import { getDevice, readback, releaseDevice, runKernel, upload } from '../runtime/webgpu/index.ts';
import { rng } from './helpers.ts';
import { H100_LIMITS, matmulGraph, planOf } from './matmul-cases.ts';

afterAll(releaseDevice);

interface Problem {
  node: Node;
  a: HostTensor;
  b: HostTensor;
}

function randomMatrix(shape: number[], seed: number): HostTensor {
  const r = rng(seed);
  return { type: { dtype: 'f32', shape }, data: Float32Array.from({ length: numel(shape) }, () => r() * 4 - 2) };
}

/** a @ b with random operands: a of batch shape aBatch, b of bBatch (broadcast against each other), transposed as asked. */
function problem(m: number, k: number, n: number, aBatch: number[], bBatch: number[], ta: boolean, tb: boolean, seed: number): Problem {
  const aShape = [...aBatch, ...(ta ? [k, m] : [m, k])];
  const bShape = [...bBatch, ...(tb ? [n, k] : [k, n])];
  return { node: matmulGraph(aShape, bShape, ta, tb).node, a: randomMatrix(aShape, seed), b: randomMatrix(bShape, seed + 1) };
}

/** The kernel run on an output poisoned with NaN. */
async function runGpu(p: Problem, tiling?: MatmulTiling, limits?: KernelLimits): Promise<Float32Array> {
  const kdev = await getDevice();
  const kernel = kernelFromPlan(p.node, planOf(p.node, tiling, limits));
  const inputs = [upload(kdev, p.a), upload(kdev, p.b)];
  const out = upload(kdev, { type: p.node.type, data: new Float32Array(numel(p.node.type.shape)).fill(NaN) });
  runKernel(kdev, kernel, inputs, out);
  const result = (await readback(kdev, out, p.node.type)) as Float32Array;
  for (const buf of [...inputs, out]) buf.destroy();
  return result;
}

const worst = new Map<string, { err: number; ratio: number; cases: number }>();
afterAll(() => {
  const rows = [...worst].map(([name, w]) => `  ${name.padEnd(26)} ${String(w.cases).padStart(3)} cases, largest error ${w.err.toExponential(2)} (${(w.ratio * 100).toFixed(2)}% of the tolerance)`);
  console.log(`matmul against the f64 reference:\n${rows.join('\n')}`);
});

async function expectMatches(label: string, p: Problem, tiling?: MatmulTiling, limits?: KernelLimits): Promise<void> {
  const gpu = await runGpu(p, tiling, limits);
  const ref = getOp('matmul').cpu([p.a, p.b], p.node.attrs, p.node.type, 'f64');
  const { k } = matmulDims(p.a.type, p.b.type, p.node.attrs.transposeA === true, p.node.attrs.transposeB === true);
  const maxAbs = (d: Float32Array) => d.reduce((acc, v) => Math.max(acc, Math.abs(v)), 0);
  const tol = 2e-5 * Math.sqrt(Math.max(k, 1)) * maxAbs(p.a.data as Float32Array) * maxAbs(p.b.data as Float32Array);
  expect(gpu.length).toBe(ref.length);
  let err = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(gpu[i] - ref[i]);
    if (!(e <= tol)) expect.fail(`${label} ${JSON.stringify(p.node.type.shape)}: element ${i} is ${gpu[i]}, reference ${ref[i]} (tolerance ${tol})`);
    err = Math.max(err, e);
  }
  const w = worst.get(label) ?? { err: 0, ratio: 0, cases: 0 };
  worst.set(label, { err: Math.max(w.err, err), ratio: Math.max(w.ratio, tol > 0 ? err / tol : 0), cases: w.cases + 1 });
}

const name = (t: MatmulTiling) => `${t.bm}x${t.bn} tiles, ${t.tm}x${t.tn} a thread, K steps of ${t.bk}`;
const seed = fc.integer({ min: 0, max: 2 ** 31 - 1 });
/** Batch shapes for a and b that broadcast: [], [3], [2, 3] and [2, 1] against [3] or [1, 3] and so on. */
const batches = fc.constantFrom<[number[], number[]]>([[], []], [[3], [3]], [[2, 3], [3]], [[2, 1], [1, 3]], [[], [2]], [[2], []]);
/** SwiftShader multiplies at ~0.3 GFLOP/s: keep each case under ~0.1 s. */
const small = (m: number, k: number, n: number, [ab, bb]: [number[], number[]]) => numel(ab.length > bb.length ? ab : bb) * m * n * k <= 2 ** 24;
const fitsDevice = (t: MatmulTiling, limits: KernelLimits) => matmulWorkgroupBytes(t) <= limits.maxComputeWorkgroupStorageSize;

// Every tiling kiln may choose, and K steps of 16 on 128x64 tiles: the large tiling's 33 KiB exceed
// SwiftShader's 32 KiB, so there it is covered by its two halves (128x128 tiles in K steps of 8, K steps
// of 16 on 128x64) and on the H100 by test/bench/matmul-sweep.ts, which checks it against the reference.
const TILINGS_UNDER_TEST: MatmulTiling[] = [...Object.values(MATMUL_TILINGS), { ...MATMUL_TILINGS.medium, bk: 16 }];

describe('the tiled matmul kernel', () => {
  for (const tiling of TILINGS_UNDER_TEST) {
    /** Runs `body` where the test device holds the tiling; elsewhere checks that kiln would not choose it there. */
    const onDevice = async (body: () => Promise<void>) => {
      const { limits } = await getDevice();
      if (fitsDevice(tiling, limits)) return body();
      expect(chooseMatmulTiling({ batch: [], m: 4096, n: 4096, k: 4096 }, limits)).not.toEqual(tiling);
    };

    it(`matches the reference with ${name(tiling)} on ragged, odd and size-1 shapes`, () => onDevice(async () => {
      // Odd sizes and multiples of 8 and 64 mixed: every combination of M, N and K edges turns up.
      const size = fc.constantFrom(1, 7, 8, 37, 64, 65, 128, 129, 136, 257);
      await fc.assert(fc.asyncProperty(size, size, size, batches, fc.boolean(), fc.boolean(), seed, async (m, k, n, batch, ta, tb, s) => {
        fc.pre(small(m, k, n, batch) && (m % tiling.bm !== 0 || n % tiling.bn !== 0 || k % tiling.bk !== 0));
        await expectMatches(`${name(tiling)}, ragged`, problem(m, k, n, batch[0], batch[1], ta, tb, s), tiling);
      }), { numRuns: 12 });
    }));

    it(`matches the reference with ${name(tiling)} on tiles that divide exactly (no bounds checks)`, () => onDevice(async () => {
      const times = fc.constantFrom(1, 2, 3);
      await fc.assert(fc.asyncProperty(times, times, fc.constantFrom(16, 48, 144, 256), batches, fc.boolean(), fc.boolean(), seed, async (i, j, k, batch, ta, tb, s) => {
        const [m, n] = [i * tiling.bm, j * tiling.bn];
        fc.pre(small(m, k, n, batch));
        const p = problem(m, k, n, batch[0], batch[1], ta, tb, s);
        expect(planOf(p.node, tiling).decls).toContain('nothing is bounds-checked');
        await expectMatches(`${name(tiling)}, exact`, p, tiling);
      }), { numRuns: 8 });
    }));
  }

  it('multiplies x @ W^T as nn.Linear does, W shared by every batch', async () => {
    const p = problem(200, 96, 136, [2, 3], [], false, true, 11);
    await expectMatches('kiln\'s choice, H100 limits', p, undefined, H100_LIMITS);
    await expectMatches('kiln\'s choice, default limits', p);
  });

  it('gives the K = 1 and M = N = 1 products their single term', async () => {
    await expectMatches('kiln\'s choice, H100 limits', problem(129, 1, 65, [], [], false, false, 3), undefined, H100_LIMITS);
    await expectMatches('kiln\'s choice, H100 limits', problem(1, 257, 1, [2], [2], true, true, 4), undefined, H100_LIMITS);
  });

});

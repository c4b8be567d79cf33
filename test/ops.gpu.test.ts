// Every op's WebGPU kernel against its f64 CPU reference, on random shapes (odd sizes included).
// Runs on whatever adapter getDevice() finds; in CI that is SwiftShader, so shapes stay small.
// With no adapter at all these tests fail with KILN_E007: they never skip.
//
// Tolerances, as |gpu - ref| <= atol + rtol * |ref| (ref in f64 from the same f32 inputs):
// - data movement (copies, gathers, full, compare/select, casts): exact.
// - + - * / max min: rtol 1e-6 (one f32 rounding, 6e-8, plus broadcast reads that are exact).
// - exp log sqrt tanh pow erf gelu: rtol 1e-5, atol 1e-6: WGSL allows several ULP for these
//   builtins, and erf/gelu use an erfc fit of relative error below 1.2e-7 (codegen/wgsl/elementwise.ts).
// - matmul, sum, mean, softmax, layer_norm, sdpa, cross_entropy: atol 2e-5 * (max |ref| or the sum
//   of |terms|), rtol 1e-5: accumulation over K terms in f32 grows like sqrt(K) * 6e-8 of the terms'
//   magnitude; 2e-5 covers K up to a few thousand with margin, and catches any indexing bug (O(1) errors).
// The largest error seen per family is printed at the end (the report quotes it).

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { dispatchShape, lowerGraph, lowerNode } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { type HostData, type HostTensor, withPrecision } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { getOp } from '../ir/registry.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { Executor, getDevice, readback, releaseDevice, runKernel, upload } from '../runtime/webgpu/index.ts';
import { relError, rng } from './helpers.ts';
import { type OpCase as Case, singleOp } from './op-graph.ts';
import { rowParallelCrossEntropy } from '../passes/cross-entropy.ts';

afterAll(releaseDevice);

// ---- data ----


interface Fill {
  lo?: number;
  hi?: number;
  /** i32 in [lo, hi); bool with P(true) = 0.5. */
}

function randomTensor(dtype: DType, shape: Shape, seed: number, fill: Fill = {}): HostTensor {
  const r = rng(seed);
  const n = numel(shape);
  const lo = fill.lo ?? -2;
  const hi = fill.hi ?? 2;
  if (dtype === 'bool') return { type: { dtype, shape }, data: Uint8Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0)) };
  if (dtype === 'i32') return { type: { dtype, shape }, data: Int32Array.from({ length: n }, () => Math.floor(lo + r() * (hi - lo))) };
  return { type: { dtype, shape }, data: Float32Array.from({ length: n }, () => lo + r() * (hi - lo)) };
}

// ---- running one graph both ways ----


async function runGpu({ graph, feeds }: Case): Promise<Map<string, HostData>> {
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(graph));
  const outs = exec.run(feeds);
  const result = new Map<string, HostData>();
  for (const o of graph.outputs) result.set(o.name, await readback(kdev, outs.get(o.name)!, o.node.type));
  exec.destroy();
  return result;
}

/** The f64 CPU reference of every node in order (leaves from feeds). */
function runCpu({ graph, feeds }: Case): Map<string, HostData> {
  const values = new Map<Node, HostTensor>();
  for (const node of graph.nodes) {
    const feed = feeds.get(node);
    if (feed) {
      values.set(node, withPrecision(feed, 'f64'));
      continue;
    }
    const args = node.inputs.map((x) => (typeof x === 'number' ? x : values.get(x)!));
    values.set(node, { type: node.type, data: getOp(node.op).cpu(args, node.attrs, node.type, 'f64') });
  }
  return new Map(graph.outputs.map((o) => [o.name, values.get(o.node)!.data]));
}

const worst = new Map<string, number>();
afterAll(() => {
  const rows = [...worst].map(([family, err]) => `  ${family.padEnd(16)} ${err.toExponential(2)}`);
  console.log(`largest |gpu - f64 ref| per family:\n${rows.join('\n')}`);
});

interface Tolerance {
  rtol: number;
  atol: number;
}
const EXACT: Tolerance = { rtol: 0, atol: 0 };
const ARITH: Tolerance = { rtol: 1e-6, atol: 0 };
const TRANSCENDENTAL: Tolerance = { rtol: 1e-5, atol: 1e-6 };

/** Accumulations: atol scales with the largest reference magnitude (at least 1). */
/** Per row of length c: layer_norm's rstd (eps 1e-5) and the row's largest |x|, what its rounding error scales with. */
function rowConditioning(x: HostData, c: number): { rstd: number; xMax: number }[] {
  const rows = [];
  for (let r = 0; r < x.length / c; r++) {
    const row = Array.from(x.slice(r * c, (r + 1) * c));
    const mean = row.reduce((a, b) => a + b, 0) / c;
    rows.push({ rstd: 1 / Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / c + 1e-5), xMax: Math.max(...row.map(Math.abs)) });
  }
  return rows;
}

function accumulated(ref: HostData, scale = 1): Tolerance {
  let max = 1;
  for (const v of ref) if (Number.isFinite(v)) max = Math.max(max, Math.abs(v));
  return { rtol: 1e-5, atol: 2e-5 * max * scale };
}

function expectClose(family: string, gpu: HostData, ref: HostData, tol: Tolerance, what = ''): void {
  expect(gpu.length, `${family} ${what} length`).toBe(ref.length);
  let worstAbs = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i];
    const g = gpu[i];
    // Infinities and NaN are real on the GPU, as on the CPU: they match exactly.
    if (!Number.isFinite(r) || !Number.isFinite(g)) {
      if (!Object.is(g, r) && !(Number.isNaN(g) && Number.isNaN(r))) expect.fail(`${family} ${what}: element ${i} is ${g}, reference ${r}`);
      continue;
    }
    const err = Math.abs(g - r);
    if (!(err <= tol.atol + tol.rtol * Math.abs(r))) {
      expect.fail(`${family} ${what}: element ${i} is ${g}, reference ${r} (err ${err}, allowed ${tol.atol + tol.rtol * Math.abs(r)})`);
    }
    worstAbs = Math.max(worstAbs, err);
  }
  worst.set(family, Math.max(worst.get(family) ?? 0, worstAbs));
}

async function check(family: string, c: Case, tol: Tolerance | ((ref: HostData) => Tolerance)): Promise<void> {
  const gpu = (await runGpu(c)).get('y')!;
  const ref = runCpu(c).get('y')!;
  expectClose(family, gpu, ref, typeof tol === 'function' ? tol(ref) : tol, JSON.stringify(c.graph.outputs[0].node.type.shape));
}

// ---- shapes ----

const DIM = fc.constantFrom(1, 2, 3, 5, 7, 37, 65);
/** Shapes of rank lo..hi with at most `cap` elements (SwiftShader is slow). */
const shape = (lo: number, hi: number, cap = 4096) => fc.array(DIM, { minLength: lo, maxLength: hi }).filter((s) => numel(s) <= cap);
const seed = fc.integer({ min: 0, max: 2 ** 31 - 1 });
const RUNS = { numRuns: 15 };

/** A shape that broadcasts into `out`: some dims set to 1, some leading dims dropped. */
function broadcastFrom(out: Shape, r: () => number): number[] {
  const drop = Math.floor(r() * (out.length + 1));
  return out.slice(drop).map((d) => (r() < 0.3 ? 1 : d));
}

describe('elementwise kernels match the CPU reference', () => {
  const arith: [string, Tolerance, Fill][] = [
    ['add', ARITH, {}], ['sub', ARITH, {}], ['mul', ARITH, {}], ['div', ARITH, { lo: 0.5, hi: 3 }],
    ['maximum', EXACT, {}], ['minimum', EXACT, {}], ['pow', TRANSCENDENTAL, { lo: 0.1, hi: 3 }],
  ];
  for (const [op, tol, fill] of arith) {
    it(`${op} broadcasts operands of different shapes`, async () => {
      await fc.assert(fc.asyncProperty(shape(0, 4), seed, async (out, s) => {
        const r = rng(s);
        const a = randomTensor('f32', broadcastFrom(out, r), s + 1, fill);
        const b = randomTensor('f32', r() < 0.5 ? [...out] : broadcastFrom(out, r), s + 2, fill);
        await check('elementwise', singleOp(op, [a, b]), tol);
      }), RUNS);
    });
  }

  it('scalar operands become named consts, on either side', async () => {
    const x = randomTensor('f32', [7, 5], 3, { lo: 0.5, hi: 2 });
    await check('elementwise', singleOp('mul', [x, 0.25]), ARITH);
    await check('elementwise', singleOp('sub', [2, x]), ARITH);
    await check('elementwise', singleOp('pow', [x, 2]), TRANSCENDENTAL);
    await check('elementwise', singleOp('add', [randomTensor('i32', [37], 4, { lo: -50, hi: 50 }), 3]), EXACT);
    await check('elementwise', singleOp('maximum', [x, -Infinity]), EXACT);
  });

  const unary: [string, Fill][] = [
    ['exp', {}], ['log', { lo: 0.01, hi: 5 }], ['sqrt', { lo: 0, hi: 5 }], ['rsqrt', { lo: 0.05, hi: 5 }],
    ['tanh', {}], ['relu', {}], ['erf', { lo: -4, hi: 4 }], ['gelu', { lo: -4, hi: 4 }], ['neg', {}],
  ];
  for (const [op, fill] of unary) {
    it(`${op} matches on random data`, async () => {
      await fc.assert(fc.asyncProperty(shape(1, 3), seed, async (out, s) => {
        await check('elementwise', singleOp(op, [randomTensor('f32', out, s, fill)]), op === 'relu' || op === 'neg' ? EXACT : TRANSCENDENTAL);
      }), { numRuns: 3 });
    });
  }

  for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge']) {
    it(`${op} gives bool outputs for f32 and i32 operands`, async () => {
      await fc.assert(fc.asyncProperty(shape(1, 3), seed, async (out, s) => {
        const r = rng(s);
        // Small integers make ties common, so eq and le are exercised on equal values.
        const a = randomTensor('i32', out, s, { lo: -2, hi: 3 });
        const b = randomTensor('i32', broadcastFrom(out, r), s + 1, { lo: -2, hi: 3 });
        await check('compare', singleOp(op, [a, b]), EXACT);
        const af = { type: { dtype: 'f32' as const, shape: a.type.shape }, data: Float32Array.from(a.data) };
        await check('compare', singleOp(op, [af, 0]), EXACT);
      }), { numRuns: 3 });
    });
  }

  it('logical_not, logical_and, where and masked_fill handle bools', async () => {
    const m = randomTensor('bool', [5, 7], 1);
    const n = randomTensor('bool', [7], 2);
    const x = randomTensor('f32', [5, 7], 3);
    await check('select', singleOp('logical_not', [m]), EXACT);
    await check('select', singleOp('logical_and', [m, n]), EXACT);
    await check('select', singleOp('where', [n, x, randomTensor('f32', [5, 1], 4)]), EXACT);
    await check('select', singleOp('where', [m, x, 0]), EXACT);
    await check('select', singleOp('where', [m, n, randomTensor('bool', [1, 7], 5)]), EXACT);
    // -inf fills with a real -inf (WGSL has no literal for it: the kernel makes it from its bits).
    await check('select', singleOp('masked_fill', [x, n, -Infinity]), EXACT);
    await check('select', singleOp('where', [m, x, -Infinity]), EXACT);
    await check('select', singleOp('masked_fill', [randomTensor('i32', [3, 5, 7], 6), m, 9]), EXACT);
  });

  it('cast converts between every pair of dtypes', async () => {
    const sources = [randomTensor('f32', [65], 1, { lo: -3, hi: 3 }), randomTensor('i32', [65], 2, { lo: -3, hi: 3 }), randomTensor('bool', [65], 3)];
    for (const x of sources) for (const to of ['f32', 'i32', 'bool']) await check('cast', singleOp('cast', [x], { dtype: to }), EXACT);
  });
});

describe('constants and data movement', () => {
  it('full and arange fill from attrs', async () => {
    await check('fill', singleOp('full', [], { value: 0.5, dtype: 'f32', shape: [3, 7] }), EXACT);
    await check('fill', singleOp('full', [], { value: 1, dtype: 'bool', shape: [5] }), EXACT);
    await check('fill', singleOp('full', [], { value: -7, dtype: 'i32', shape: [2, 2, 2] }), EXACT);
    await check('fill', singleOp('full', [], { value: -Infinity, dtype: 'f32', shape: [4] }), EXACT);
    await check('fill', singleOp('arange', [], { start: 3, step: 2, dtype: 'i32', shape: [37] }), EXACT);
    await check('fill', singleOp('arange', [], { start: -1, step: 0.25, dtype: 'f32', shape: [65] }), EXACT);
  });

  it('transpose and permute move every element', async () => {
    await fc.assert(fc.asyncProperty(shape(2, 4), seed, fc.constantFrom<DType>('f32', 'i32', 'bool'), async (s0, s, dtype) => {
      const x = randomTensor(dtype, s0, s);
      const rank = s0.length;
      const r = rng(s);
      const dims = [...Array(rank).keys()].sort(() => r() - 0.5);
      await check('copy', singleOp('permute', [x], { dims }), EXACT);
      await check('copy', singleOp('transpose', [x], { dim0: 0, dim1: -1 }), EXACT);
    }), RUNS);
  });

  it('slice takes start:end:step along any dim', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 3), seed, async (s0, s) => {
      const r = rng(s);
      const dim = Math.floor(r() * s0.length);
      const start = Math.floor(r() * s0[dim]) - (r() < 0.3 ? s0[dim] : 0);
      const step = 1 + Math.floor(r() * 3);
      await check('copy', singleOp('slice', [randomTensor('f32', s0, s)], { dim, start, end: s0[dim], step }), EXACT);
    }), RUNS);
  });

  it('tril and triu keep a triangle of the last two dims', async () => {
    for (const diagonal of [-1, 0, 2]) {
      await check('copy', singleOp('tril', [randomTensor('f32', [2, 5, 7], 1)], { diagonal }), EXACT);
      await check('copy', singleOp('triu', [randomTensor('bool', [7, 5], 2)], { diagonal }), EXACT);
    }
  });

  it('embedding gathers rows by index', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 2, 64), DIM, DIM, seed, async (idxShape, rows, c, s) => {
      const w = randomTensor('f32', [rows, c], s);
      const idx = randomTensor('i32', idxShape, s + 1, { lo: 0, hi: rows });
      await check('copy', singleOp('embedding', [w, idx]), EXACT);
    }), RUNS);
  });
});

describe('gradient-only ops', () => {
  it('embedding_backward sums the gradient rows of each index, across 256-token chunks and rows wider than a workgroup', async () => {
    // Index counts past 256 take several chunks; dims past 256 make each invocation own several columns.
    const tokens = fc.constantFrom(1, 7, 255, 256, 257, 600);
    const dim = fc.constantFrom(1, 5, 64, 300);
    const rowsOf = fc.constantFrom(1, 3, 65);
    await fc.assert(fc.asyncProperty(tokens, dim, rowsOf, seed, async (n, c, rows, s) => {
      const grad = randomTensor('f32', [n, c], s);
      const idx = randomTensor('i32', [n], s + 1, { lo: 0, hi: rows });
      // Sums of up to 600 terms in f32: the accumulation tolerance of the header.
      await check('sum', singleOp('embedding_backward', [grad, idx], { num: rows }), (ref) => accumulated(ref));
    }), RUNS);
  });
});

describe('concat', () => {
  it('concatenates two to six tensors along any dim, exactly', async () => {
    const dims = fc.constantFrom(1, 3, 8);
    await fc.assert(fc.asyncProperty(fc.array(dims, { minLength: 2, maxLength: 6 }), fc.integer({ min: 0, max: 2 }), seed, async (sizes, dim, s) => {
      const parts = sizes.map((size, k) => randomTensor('f32', [2, 3, 4].map((d, j) => (j === dim ? size : d)), s + k));
      await check('copy', singleOp('concat', parts, { dim }), EXACT);
    }), RUNS);
  });
});

describe('matmul', () => {
  it('matches on batched, broadcast, transposed operands of odd sizes', async () => {
    const size = fc.constantFrom(1, 7, 37, 65);
    const batchDim = fc.constantFrom(1, 2, 3);
    await fc.assert(fc.asyncProperty(size, size, size, fc.array(batchDim, { maxLength: 2 }), fc.boolean(), fc.boolean(), seed,
      async (m, k, n, batch, ta, tb, s) => {
        const r = rng(s);
        const aShape = [...broadcastFrom(batch, r), ...(ta ? [k, m] : [m, k])];
        const bShape = [...broadcastFrom(batch, r), ...(tb ? [n, k] : [k, n])];
        const c = singleOp('matmul', [randomTensor('f32', aShape, s), randomTensor('f32', bShape, s + 1)], { transposeA: ta, transposeB: tb });
        await check('matmul', c, () => ({ rtol: 1e-5, atol: 2e-5 * 4 * Math.sqrt(k) })); // |terms| <= 4 each
      }), { numRuns: 30 });
  });
});

describe('reductions and row ops', () => {
  it('sum, mean and amax reduce any set of dims, with and without keepdim', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 4), seed, fc.constantFrom('sum', 'mean', 'amax'), fc.boolean(), async (s0, s, op, keepdim) => {
      const r = rng(s);
      const dims = [...Array(s0.length).keys()].filter(() => r() < 0.5);
      if (dims.length === 0) dims.push(s0.length - 1);
      const x = randomTensor('f32', s0, s);
      await check('reduce', singleOp(op, [x], { dims, keepdim }), op === 'amax' ? EXACT : () => ({ rtol: 1e-5, atol: 2e-5 * 2 * Math.sqrt(numel(s0)) }));
    }), { numRuns: 25 });
  });

  it('short reductions with many outputs (split-K partial sums) take the one-invocation-per-output path', async () => {
    for (const [op, dims] of [['sum', [0]], ['mean', [0]], ['amax', [1]], ['sum', [0, 2]]] as const) {
      const x = randomTensor('f32', [8, 70, 65], 11);
      await check('sum', singleOp(op, [x], { dims: [...dims], keepdim: false }), (ref) => accumulated(ref));
    }
  });

  it('reductions over outer dims keeping the innermost (bias gradients) take the column path', async () => {
    const cases: [string, number[], number[]][] = [['sum', [300, 100], [0]], ['mean', [4, 70, 65], [0, 1]], ['amax', [3, 50, 40], [1]], ['sum', [3, 50, 40], [1]], ['sum', [7, 33], [0]]];
    for (const [op, shape, dims] of cases) {
      await check('sum', singleOp(op, [randomTensor('f32', shape, 5)], { dims, keepdim: false }), (ref) => accumulated(ref));
    }
    const ints = randomTensor('i32', [300, 40], 6, { lo: -1000, hi: 1000 });
    await check('copy', singleOp('sum', [ints], { dims: [0], keepdim: false }), EXACT);
  });

  it('sum and amax of i32 stay exact', async () => {
    const x = randomTensor('i32', [5, 37, 3], 7, { lo: -100, hi: 100 });
    await check('reduce', singleOp('sum', [x], { dims: [0, 2] }), EXACT);
    await check('reduce', singleOp('amax', [x], { dims: [1], keepdim: true }), EXACT);
    await check('reduce', singleOp('mean', [x], { dims: [0, 1, 2] }), ARITH);
  });

  it('softmax normalizes along any dim', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 3), seed, async (s0, s) => {
      const dim = Math.floor(rng(s)() * s0.length);
      await check('softmax', singleOp('softmax', [randomTensor('f32', s0, s, { lo: -5, hi: 5 })], { dim }), accumulated);
    }), RUNS);
  });

  it('softmax of a row of -inf is NaN, as on the CPU and in PyTorch; -inf among finite values weighs 0', async () => {
    const x = randomTensor('f32', [4, 37], 5, { lo: -5, hi: 5 });
    const data = x.data as Float32Array;
    for (let j = 0; j < 37; j++) data[37 + j] = -Infinity; // row 1: all -inf
    for (let j = 0; j < 37; j += 2) data[2 * 37 + j] = -Infinity; // row 2: every other one
    const gpu = (await runGpu(singleOp('softmax', [x], { dim: -1 }))).get('y')!;
    expect(Array.from(gpu.slice(37, 74)).every(Number.isNaN)).toBe(true);
    expect(Array.from(gpu.slice(2 * 37, 3 * 37)).filter((_, j) => j % 2 === 0).every((p) => p === 0)).toBe(true);
    await check('softmax', singleOp('softmax', [x], { dim: -1 }), accumulated);
    // masked_fill(-inf) then softmax, fused into one elementwise kernel first as in a compiled chain.
    const g = singleOp('fused_elementwise', [randomTensor('f32', [3, 7], 6), { type: { dtype: 'bool', shape: [3, 1] }, data: Uint8Array.of(0, 1, 0) }], { expr: 'masked_fill(mul($0, 0.5), $1, -inf)' });
    const y = g.graph.add('softmax', [g.node], { dim: -1 });
    g.graph.setOutputs([{ name: 'y', node: y }]);
    await check('softmax', g, accumulated);
  });

  it('layer_norm_backward gives the input gradient row by row', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 3), seed, async (s0, s) => {
      const c = s0[s0.length - 1];
      const args = [randomTensor('f32', s0, s, { lo: -3, hi: 5 }), randomTensor('f32', [c], s + 1), randomTensor('f32', s0, s + 2)];
      // dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat)) is a difference of terms of size rstd * |gy|
      // that cancel (exactly, up to eps, for rows of 2), and xhat = (x - mean) * rstd carries the f32
      // rounding of the mean (ulps of |x|) times rstd. So a row's error is about ulps of
      // rstd * |gy| * (1 + rstd * |x|): the tolerance is 2e-6 of the largest (about 30 ulps); a wrong
      // index errs by a whole term.
      const [x, w, g] = args.map((t) => t.data);
      let scale = 1;
      for (const [r, { rstd, xMax }] of rowConditioning(x, c).entries()) {
        for (let k = 0; k < c; k++) scale = Math.max(scale, rstd * Math.abs(g[r * c + k] * w[k]) * (1 + rstd * xMax));
      }
      await check('layer_norm', singleOp('layer_norm_backward', args, { eps: 1e-5 }), { rtol: 1e-5, atol: 2e-6 * scale });
    }), RUNS);
  });

  it('layer_norm normalizes the last dim, with and without bias', async () => {
    await fc.assert(fc.asyncProperty(shape(1, 3), seed, fc.boolean(), async (s0, s, bias) => {
      const c = s0[s0.length - 1];
      const args = [randomTensor('f32', s0, s, { lo: -3, hi: 5 }), randomTensor('f32', [c], s + 1), ...(bias ? [randomTensor('f32', [c], s + 2)] : [])];
      // (x - mean) * rstd carries the f32 rounding of the mean (ulps of |x|) times rstd, which is large
      // for a row of nearly equal values (rows of 2 met it in CI): on top of the accumulation tolerance,
      // 2e-6 (about 30 ulps) of the largest rstd * |x| * |weight|.
      const scale = Math.max(...rowConditioning(args[0].data, c).map((r) => r.rstd * r.xMax)) * Math.max(...Array.from(args[1].data, Math.abs));
      await check('layer_norm', singleOp('layer_norm', args, { eps: 1e-5 }), (ref) => {
        const tol = accumulated(ref);
        return { rtol: tol.rtol, atol: tol.atol + 2e-6 * scale };
      });
    }), { ...RUNS, examples: [[[65, 2], 2147483519, false]] }); // the rows of 2 CI met
  });

  it('cross_entropy averages over kept rows and skips ignored ones', async () => {
    await fc.assert(fc.asyncProperty(DIM, DIM, seed, async (n, c, s) => {
      const targets = randomTensor('i32', [n], s + 1, { lo: 0, hi: c });
      if (n > 1) (targets.data as Int32Array)[n - 1] = -100;
      await check('cross_entropy', singleOp('cross_entropy', [randomTensor('f32', [n, c], s, { lo: -4, hi: 4 }), targets], { ignoreIndex: -100 }), accumulated);
    }), RUNS);
  });
});

describe('row-parallel cross entropy', () => {
  it('a big cross_entropy becomes cross_entropy_rows, a sum and a count, with the same loss on the GPU', async () => {
    const [n, c] = [1100, 65]; // 71500 logits: past ROW_PARALLEL_ELEMENTS
    const logits = randomTensor('f32', [n, c], 21, { lo: -4, hi: 4 });
    const targets = randomTensor('i32', [n], 22, { lo: 0, hi: c });
    for (let i = 0; i < n; i += 7) (targets.data as Int32Array)[i] = -100; // ignored rows
    const single = singleOp('cross_entropy', [logits, targets], { ignoreIndex: -100 });
    const graph = rowParallelCrossEntropy(single.graph);
    expect(graph.nodesOf('cross_entropy')).toEqual([]);
    expect(graph.nodesOf('cross_entropy_rows')).toHaveLength(1);
    const feeds = new Map([...single.feeds].map(([node, t]) => [graph.nodes.find((m) => m.id === node.id)!, t]));
    const want = runCpu(single).get('y')!;
    expect(relError(runCpu({ graph, feeds }).get('y')!, want)).toBeLessThan(1e-12);
    // A mean of 943 kept row losses, each a logsumexp of 65 terms, in f32.
    await check('cross_entropy', { graph, feeds }, accumulated);
  });
});

describe('dropout and attention', () => {
  it('active dropout draws the same bits as the CPU', async () => {
    await check('dropout', singleOp('dropout', [randomTensor('f32', [37, 65], 1)], { p: 0.3, training: true, seed: 1234 }), ARITH);
  });

  const attention = (batch: number[], l: number, s: number, d: number, dv: number, seedValue: number) => [
    randomTensor('f32', [...batch, l, d], seedValue),
    randomTensor('f32', [...batch, s, d], seedValue + 1),
    randomTensor('f32', [...batch, s, dv], seedValue + 2),
  ];

  it('sdpa matches without a mask and causally, across odd sizes', async () => {
    const size = fc.constantFrom(1, 7, 37, 65);
    await fc.assert(fc.asyncProperty(size, size, fc.constantFrom(1, 8, 37, 64), fc.constantFrom(1, 16, 65), fc.boolean(), seed, async (l, s, d, dv, causal, sd) => {
      await check('sdpa', singleOp('sdpa', attention([2], l, s, d, dv, sd), { isCausal: causal, scale: null, dropoutP: 0 }), accumulated);
    }), RUNS);
  });

  it('sdpa takes head dims up to 128', async () => {
    await check('sdpa', singleOp('sdpa', attention([1, 2], 5, 70, 128, 128, 9), { isCausal: true, scale: 0.125, dropoutP: 0 }), accumulated);
  });

  it('sdpa broadcasts bool masks and gives zeros for fully masked rows', async () => {
    const [q, k, v] = attention([2, 3], 7, 37, 16, 16, 11);
    const mask = randomTensor('bool', [3, 7, 37], 12);
    for (let j = 0; j < 37; j++) (mask.data as Uint8Array)[2 * 37 + j] = 0; // row 2 of every head: fully masked
    await check('sdpa', singleOp('sdpa', [q, k, v, mask], { isCausal: false, scale: null, dropoutP: 0 }), accumulated);
    const rowMask = randomTensor('bool', [37], 13);
    await check('sdpa', singleOp('sdpa', [q, k, v, rowMask], { isCausal: false, scale: null, dropoutP: 0 }), accumulated);
  });

  it('sdpa adds float masks, -inf included, and a row of -inf gives zeros', async () => {
    const [q, k, v] = attention([2], 7, 65, 8, 5, 21);
    const mask = randomTensor('f32', [7, 65], 22, { lo: -1, hi: 1 });
    const data = mask.data as Float32Array;
    for (let i = 0; i < data.length; i += 3) data[i] = -Infinity;
    for (let j = 0; j < 65; j++) data[4 * 65 + j] = -Infinity;
    await check('sdpa', singleOp('sdpa', [q, k, v, mask], { isCausal: false, scale: null, dropoutP: 0 }), accumulated);
  });

  it('sdpa dropout matches the CPU bits', async () => {
    await check('sdpa', singleOp('sdpa', attention([2], 7, 37, 8, 8, 31), { isCausal: true, scale: null, dropoutP: 0.2, seed: 77 }), accumulated);
  });
});

describe('programs and dispatch', () => {
  it('runs one kernel eagerly on buffers the caller holds', async () => {
    const kdev = await getDevice();
    const c = singleOp('matmul', [randomTensor('f32', [3, 7, 5], 1), randomTensor('f32', [5, 37], 2)], { transposeA: false, transposeB: false });
    const kernel = lowerNode(c.node)!;
    const inputs = kernel.inputs.map((x) => upload(kdev, c.feeds.get(x)!));
    const out = runKernel(kdev, kernel, inputs);
    expectClose('matmul', await readback(kdev, out, c.node.type), runCpu(c).get('y')!, { rtol: 1e-5, atol: 2e-5 * 4 * Math.sqrt(5) });
    for (const b of [...inputs, out]) b.destroy();
  });

  it('spreads more than 65535 workgroups over x and y', async () => {
    expect(dispatchShape(10)).toEqual([10, 1, 1]);
    expect(dispatchShape(65535)).toEqual([65535, 1, 1]);
    const [x, y] = dispatchShape(65536 * 3 + 7);
    expect(x).toBeLessThanOrEqual(65535);
    expect(x * y).toBeGreaterThanOrEqual(65536 * 3 + 7);
    // A real dispatch past the limit: one workgroup per output row, 70001 rows.
    const c = singleOp('sum', [randomTensor('f32', [70001, 65], 5)], { dims: [1] }); // 65 elements each: past the serial path's 64
    expect(lowerGraph(c.graph).kernels[0].workgroups[1]).toBe(2);
    await check('reduce', c, (ref) => accumulated(ref));
  });

  it('runs a chain with reshapes as shared storage and feeds outputs to later kernels', async () => {
    const graph = new Graph();
    const x = graph.add('input', [], { name: 'x', dtype: 'f32', shape: [6, 7] });
    const w = graph.add('param', [], { name: 'w', dtype: 'f32', shape: [7, 5] });
    const h = graph.add('matmul', [x, w]);
    const r = graph.add('reshape', [h], { shape: [2, 3, 5] });
    const r2 = graph.add('reshape', [r], { shape: [30] });
    const d = graph.add('dropout', [r2], { p: 0.1, training: false });
    const y = graph.add('softmax', [graph.add('gelu', [d])], { dim: 0 });
    graph.setOutputs([{ name: 'y', node: y }, { name: 'h', node: r }]);
    const program = lowerGraph(graph);
    expect(program.kernels.map((k) => k.node.op)).toEqual(['matmul', 'gelu', 'softmax']);
    expect(program.storageOf(d)).toBe(h);
    const c = { graph, feeds: new Map([[x, randomTensor('f32', [6, 7], 1)], [w, randomTensor('f32', [7, 5], 2)]]) };
    const gpu = await runGpu(c);
    const ref = runCpu(c);
    expectClose('matmul', gpu.get('h')!, ref.get('h')!, accumulated(ref.get('h')!, 4));
    expectClose('softmax', gpu.get('y')!, ref.get('y')!, accumulated(ref.get('y')!));
  });
});

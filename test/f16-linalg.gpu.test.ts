// matmul and the reductions (sum, mean, amax, softmax, layer_norm, layer_norm_backward) in f16 on
// lavapipe, against the CPU reference as the device rounds (interpret 'f32': f16 output rounded once)
// and the ideal one (interpret 'f64'). Inputs are random f16 values; shapes have odd sizes, ragged
// matmul tiles, broadcast batches, transposes and reduction lengths from 1 to a few thousand.
// cross_entropy keeps f32 logits (its type rule): it runs here on logits cast up from an f16 matmul.
//
// Tolerances. Each kernel computes an f32 value a (f16 inputs are exact in f32, products of two f16s
// too) and stores fl16(a), one f16 rounding. E bounds |a - y| for the exact result y: a first-order
// error analysis of the kernel's f32 arithmetic (u = 2^-24 a rounding; WGSL's builtins in f32 ULPs,
// one ULP at most 2^-23 relative), derived per op below from the f64 inputs. Then, with ulp16(v) the
// f16 spacing at v (2^-24 in the subnormals) and |fl16(v) - v| <= ulp16(fl16(v)) / 2:
// - vs the CPU f16 reference c = fl16(fl32(y)):  |gpu - c| <= ulp16(gpu) / 2 + ulp16(c) / 2 + E + u|y|,
//   i.e. one f16 ULP (the two roundings may fall on either side when the f32 sums differ by order), plus E.
// - vs the f64 reference y:                       |gpu - y| <= ulp16(gpu) / 2 + E   (ulp16 / 2 <= 2^-11 |gpu|).
// E is far below an f16 ULP except in long sums and outputs that cancel, while any indexing, staging or
// store error moves an output by O(its terms): the bound separates the two. amax is exact (the max of
// f16s is an f16). Against f64 the f16 rounding of the result alone takes up to all of ulp16 / 2, so
// ratios near 100% there say the kernel rounds no worse than an f16 result must.
// Overflow: an f16 output whose f32 value passes 65504 is +-inf (a store rounds once, after the sum).
// The largest error per op, as a fraction of its tolerance and in f16 ULPs, is printed at the end.

import { type OpCase, singleOp } from './op-graph.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts'; // first: points this file's Dawn at lavapipe
import { afterAll, describe, expect, it } from 'vitest';
import { kernelFromPlan, lowerGraph } from '../codegen/index.ts';
import { MATMUL_TILINGS, type MatmulTiling, matmulInvocations } from '../codegen/wgsl/linalg.ts';
import { roundF16 } from '../ir/f16.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostData, HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { splitAround } from '../ir/ops/check.ts';
import { getOp } from '../ir/registry.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { Executor, getDevice, readback, releaseDevice, runKernel, upload } from '../runtime/webgpu/index.ts';
import { interpret } from '../runtime/interpreter.ts';
import { rowParallelCrossEntropy } from '../passes/cross-entropy.ts';
import { randomF16, ulp16 } from './helpers.ts';
import { planOf } from './matmul-cases.ts';

afterAll(releaseDevice);

const U = 2 ** -24; // f32 unit roundoff
const ULP32 = 2 ** -23; // one f32 ULP, relative, at most

// ---- data and graphs ----

const abs = (t: HostTensor): HostTensor => ({ type: t.type, data: Float64Array.from(t.data, Math.abs) });
const f64 = (d: HostData) => Float64Array.from(d as ArrayLike<number>);

type Case = OpCase & { node: Node };

async function runGraph(c: Case): Promise<Float64Array> {
  const kdev = await getDevice();
  const exec = await Executor.create(kdev, lowerGraph(c.graph, kdev.limits));
  const outs = exec.run(c.feeds);
  const out = c.graph.outputs[0];
  const data = await readback(kdev, outs.get(out.name)!, out.node.type);
  exec.destroy();
  return f64(data);
}

/** The matmul node's kernel in one tiling, on an output poisoned with NaN (an element left unwritten fails). */
async function runMatmul(c: Case, tiling: MatmulTiling): Promise<Float64Array> {
  const kdev = await getDevice();
  const [a, b] = c.node.inputs as Node[];
  const kernel = kernelFromPlan(c.node, planOf(c.node, tiling));
  const inputs = [upload(kdev, c.feeds.get(a)!), upload(kdev, c.feeds.get(b)!)];
  const out = upload(kdev, { type: c.node.type, data: new Float32Array(numel(c.node.type.shape)).fill(NaN) });
  runKernel(kdev, kernel, inputs, out);
  const data = await readback(kdev, out, c.node.type);
  for (const buf of [...inputs, out]) buf.destroy();
  return f64(data);
}

function references(c: Case): { cpu16: Float64Array; exact: Float64Array } {
  const feed = (n: Node) => c.feeds.get(n)!;
  return { cpu16: f64(interpret(c.graph, feed, 'f32').get('y')!.data), exact: f64(interpret(c.graph, feed, 'f64').get('y')!.data) };
}

// ---- the comparison ----

interface Worst {
  cases: number;
  elements: number;
  vsCpu16: number; // largest |gpu - cpu16| / tolerance
  ulps: number; // largest |gpu - cpu16| in f16 ULPs
  pastOneUlp: number; // elements more than one f16 ULP from cpu16 (outputs that cancel, where E allows it)
  vsF64: number; // largest |gpu - f64| / tolerance
  errF64: number; // largest |gpu - f64| / max(|f64|, 1)
}
const NO_ERRORS: Worst = { cases: 0, elements: 0, vsCpu16: 0, ulps: 0, pastOneUlp: 0, vsF64: 0, errF64: 0 };
const worst = new Map<string, Worst>();
afterAll(() => {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`.padStart(6);
  const rows = [...worst].map(([op, w]) => `  ${op.padEnd(23)} ${String(w.cases).padStart(2)} cases ${String(w.elements).padStart(6)} values | vs cpu f16: ${pct(w.vsCpu16)} of tol, ${w.ulps.toFixed(1)} ulp, ${w.pastOneUlp} past 1 ulp | vs f64: ${pct(w.vsF64)} of tol, ${w.errF64.toExponential(2)} rel`);
  if (rows.length) console.log(`f16 kernels on lavapipe, largest errors (fraction of each tolerance):\n${rows.join('\n')}`);
});

/**
 * Checks gpu against both references with the f32 error bound `bound[i]` (E above). Non-finite
 * results must match the CPU f16 reference exactly (overflow to inf, NaN where it gives NaN).
 */
function expectWithin(op: string, what: string, gpu: Float64Array, ref: { cpu16: Float64Array; exact: Float64Array }, bound: ArrayLike<number>): void {
  const { cpu16, exact } = ref;
  expect(gpu.length, `${op} ${what}: length`).toBe(cpu16.length);
  const w = { ...(worst.get(op) ?? NO_ERRORS) };
  for (let i = 0; i < gpu.length; i++) {
    const [g, c, y] = [gpu[i], cpu16[i], exact[i]];
    if (!Number.isFinite(g) || !Number.isFinite(c)) {
      if (!Object.is(g, c)) expect.fail(`${op} ${what}: element ${i} is ${g}, the CPU f16 reference ${c}`);
      continue;
    }
    const e = bound[i];
    const err16 = Math.abs(g - c);
    const tol16 = ulp16(g) / 2 + ulp16(c) / 2 + e + U * Math.abs(y);
    if (!(err16 <= tol16)) expect.fail(`${op} ${what}: element ${i} is ${g}, the CPU f16 reference ${c} (err ${err16}, tolerance ${tol16}; f64 ${y})`);
    const err64 = Math.abs(g - y);
    const tol64 = ulp16(g) / 2 + e;
    if (!(err64 <= tol64)) expect.fail(`${op} ${what}: element ${i} is ${g}, the f64 reference ${y} (err ${err64}, tolerance ${tol64})`);
    w.vsCpu16 = Math.max(w.vsCpu16, err16 / tol16);
    const ulps = err16 / ulp16(Math.max(Math.abs(g), Math.abs(c)));
    w.ulps = Math.max(w.ulps, ulps);
    if (ulps > 1) w.pastOneUlp++;
    w.vsF64 = Math.max(w.vsF64, err64 / tol64);
    w.errF64 = Math.max(w.errF64, err64 / Math.max(Math.abs(y), 1));
  }
  w.cases++;
  w.elements += gpu.length;
  worst.set(op, w);
}

/** Calls f(at, size) for each row along `dim` of `shape`: element k of the row is at(k). */
function forEachRow(shape: Shape, dim: number, f: (at: (k: number) => number, size: number) => void): void {
  const { outer, size, inner } = splitAround(shape, dim);
  for (let o = 0; o < outer; o++) for (let j = 0; j < inner; j++) f((k) => (o * size + k) * inner + j, size);
}

// ---- error bounds E (see the header), one per op ----

/** A sum of n terms in f32 in any order (sequential or a tree, path length <= n): n u sum|terms|; 2u a step covers the second order and the reference's f32 store. */
const sumBound = (n: number, absSum: number) => 2 * n * U * absSum;

/** matmul: K fused multiply-adds of exact products: sumBound(K, sum_k |a_ik b_kj|), the latter |a| @ |b| in f64. */
function matmulBound(c: Case, k: number): Float64Array {
  const [a, b] = (c.node.inputs as Node[]).map((n) => abs(c.feeds.get(n)!));
  return f64(getOp('matmul').cpu([a, b], c.node.attrs, c.node.type, 'f64')).map((s) => sumBound(k, s));
}

/** sum: sumBound over the reduced elements; mean: that over n, plus the division's 2.5 ULP. */
function reduceBound(c: Case, op: string, n: number, exact: Float64Array): Float64Array {
  const x = abs(c.feeds.get(c.node.inputs[0] as Node)!);
  const absSums = f64(getOp('sum').cpu([x], c.node.attrs, c.node.type, 'f64'));
  if (op === 'amax') return absSums.map(() => 0);
  return absSums.map((s, i) => (op === 'sum' ? sumBound(n, s) : sumBound(n, s) / n + 3 * ULP32 * Math.abs(exact[i])));
}

/**
 * softmax, per row of n with R = max - min: d = x - max rounds (u R, which exp turns into a relative
 * u R), exp is within 3 + 2|d| ULP, the sum of n positive terms adds n u, the division 2.5 ULP; y's
 * relative error is at most twice exp's plus those.
 */
function softmaxBound(x: HostTensor, dim: number, exact: Float64Array): Float64Array {
  const e = new Float64Array(exact.length);
  forEachRow(x.type.shape, dim, (at, n) => {
    let [max, min] = [-Infinity, Infinity];
    for (let k = 0; k < n; k++) if (x.data[at(k)] > -Infinity) [max, min] = [Math.max(max, x.data[at(k)]), Math.min(min, x.data[at(k)])];
    const r = max > min ? max - min : 0; // -inf entries give exp(-inf) = 0 exactly
    const rel = (n + 2 * r + 2) * U + (2 * (3 + 2 * r) + 2.5) * ULP32;
    for (let k = 0; k < n; k++) e[at(k)] = rel * exact[at(k)];
  });
  return e;
}

/** A layer_norm row's statistics in f64 and the f32 errors of the kernel's mean, x - mean and rstd. */
function rowStats(x: ArrayLike<number>, base: number, c: number, eps: number) {
  let [sum, absSum] = [0, 0];
  for (let k = 0; k < c; k++) [sum, absSum] = [sum + x[base + k], absSum + Math.abs(x[base + k])];
  const mean = sum / c;
  let sq = 0;
  for (let k = 0; k < c; k++) sq += (x[base + k] - mean) ** 2;
  const rstd = 1 / Math.sqrt(sq / c + eps);
  // mean: sumBound over c, / c, the division's 2.5 ULP.
  const meanErr = sumBound(c, absSum) / c + 2.5 * ULP32 * Math.abs(mean);
  // d_k = x_k - mean: the mean's error and one rounding.
  const dErr = (k: number) => meanErr + U * (Math.abs(x[base + k]) + Math.abs(mean));
  // The sum of d^2: each d^2 off by 2|d| dErr + u d^2, then sumBound; / c and + eps round twice more.
  let sqErr = sumBound(c, sq);
  for (let k = 0; k < c; k++) sqErr += 2 * Math.abs(x[base + k] - mean) * dErr(k) + U * (x[base + k] - mean) ** 2;
  const varRel = sq > 0 ? sqErr / sq + 4.5 * ULP32 : 4.5 * ULP32;
  // rstd = inverseSqrt(var + eps): half the variance's relative error (less where eps dominates), 2 ULP of its own.
  const rstdRel = (0.5 * varRel * (sq / c)) / (sq / c + eps) + 2 * ULP32;
  // xhat_k = d_k * rstd: errors of d and rstd, one rounding.
  const xhat = (k: number) => (x[base + k] - mean) * rstd;
  const xhatErr = (k: number) => rstd * dErr(k) + Math.abs(xhat(k)) * (rstdRel + U);
  return { mean, rstd, xhat, xhatErr, rstdRel };
}

/** layer_norm: out = xhat * w + b, xhat's error times |w| and two more roundings. */
function layerNormBound(x: HostTensor, w: HostData, b: HostData | null, eps: number): Float64Array {
  const c = x.type.shape[x.type.shape.length - 1];
  const e = new Float64Array(x.data.length);
  for (let base = 0; base < e.length; base += c) {
    const s = rowStats(x.data, base, c, eps);
    for (let k = 0; k < c; k++) e[base + k] = Math.abs(w[k]) * s.xhatErr(k) + 2 * U * (Math.abs(s.xhat(k) * w[k]) + (b ? Math.abs(b[k]) : 0));
  }
  return e;
}

/**
 * layer_norm_backward: dx = rstd (gy - G - xhat H), gy = g w (exact), G = mean(gy), H = mean(gy xhat).
 * G: sumBound; H: its terms' errors (|gy| xhat's error, two roundings) plus sumBound; then the three
 * terms' errors, two subtractions and one product, and rstd's relative error on the result.
 */
function layerNormBackwardBound(x: HostTensor, w: HostData, g: HostData, eps: number): Float64Array {
  const c = x.type.shape[x.type.shape.length - 1];
  const e = new Float64Array(x.data.length);
  for (let base = 0; base < e.length; base += c) {
    const s = rowStats(x.data, base, c, eps);
    const gy = (k: number) => g[base + k] * w[k];
    let [gMean, hMean, gAbs, hAbs, hTermErr] = [0, 0, 0, 0, 0];
    for (let k = 0; k < c; k++) {
      gMean += gy(k) / c;
      hMean += (gy(k) * s.xhat(k)) / c;
      gAbs += Math.abs(gy(k));
      hAbs += Math.abs(gy(k) * s.xhat(k));
      hTermErr += Math.abs(gy(k)) * s.xhatErr(k) + 2 * U * Math.abs(gy(k) * s.xhat(k));
    }
    const gErr = sumBound(c, gAbs) / c + 2.5 * ULP32 * Math.abs(gMean);
    const hErr = (hTermErr + sumBound(c, hAbs)) / c + 2.5 * ULP32 * Math.abs(hMean);
    for (let k = 0; k < c; k++) {
      const terms = Math.abs(gy(k)) + Math.abs(gMean) + Math.abs(s.xhat(k) * hMean);
      const inner = gErr + Math.abs(hMean) * s.xhatErr(k) + Math.abs(s.xhat(k)) * hErr + 3 * U * terms;
      e[base + k] = s.rstd * inner + s.rstd * terms * (s.rstdRel + U);
    }
  }
  return e;
}

// ---- the tests ----

describe.skipIf(!HAS_LAVAPIPE)('f16 matmul and reductions on lavapipe, against the CPU f16 and f64 references', () => {
  // [batch of a, batch of b, m, k, n, transposeA, transposeB, tiling]. The f32 kernel is tested in every
  // tiling on many shapes (matmul.gpu.test.ts); f16 changes only its loads and stores, so each case here
  // takes one tiling, together covering both operand layouts, clamped and unclamped loads, the zeros past
  // K and both forms of the store. Mostly 4x4-a-thread tiles: lavapipe compiles an 8x8 one for 5-15 s.
  // 'large' (33 KiB) exceeds lavapipe's 32 KiB of workgroup memory; its halves are 'largeK8' and 'medium'.
  const MATMULS: [number[], number[], number, number, number, boolean, boolean, keyof typeof MATMUL_TILINGS][] = [
    [[], [], 1, 1, 1, false, false, 'small'],
    [[], [], 7, 1, 5, false, true, 'small'],
    [[], [], 37, 65, 29, true, false, 'largeK8'],
    [[], [], 64, 64, 64, true, true, 'small'], // tiles divide exactly: no bounds checks
    [[], [], 128, 16, 128, false, false, 'medium'], // the same
    [[3], [3], 9, 130, 17, false, false, 'small'],
    [[2, 1], [1, 3], 33, 257, 40, false, true, 'small'],
    [[2, 3], [3], 65, 48, 70, true, true, 'small'],
    [[], [2], 129, 8, 136, true, false, 'small'],
  ];
  for (const [ab, bb, m, k, n, ta, tb, tilingName] of MATMULS) {
    const label = `${JSON.stringify(ab)}[${ta ? `${k},${m}` : `${m},${k}`}]${ta ? '^T' : ''} @ ${JSON.stringify(bb)}[${tb ? `${n},${k}` : `${k},${n}`}]${tb ? '^T' : ''}`;
    it(`matmul ${label}, K = ${k}, in ${tilingName} tiles`, async () => {
      const c = singleOp('matmul', [randomF16([...ab, ...(ta ? [k, m] : [m, k])], m * 31 + k), randomF16([...bb, ...(tb ? [n, k] : [k, n])], n * 17 + k + 1)], { transposeA: ta, transposeB: tb });
      expect(c.node.type.dtype).toBe('f16');
      const t = MATMUL_TILINGS[tilingName];
      expect(planOf(c.node, t).decls?.includes('nothing is bounds-checked')).toBe(m % t.bm === 0 && n % t.bn === 0 && k % t.bk === 0);
      expectWithin('matmul', `${label} ${tilingName}`, await runMatmul(c, t), references(c), matmulBound(c, k));
    });
  }

  it('matmul x @ W^T, W shared by the batch, K = 300, in the tiling kiln chooses (128x64, ragged in M, N and K)', async () => {
    const c = singleOp('matmul', [randomF16([2, 130, 300], 1), randomF16([66, 300], 2)], { transposeA: false, transposeB: true });
    expect(planOf(c.node, undefined, (await getDevice()).limits).workgroupSize).toBe(matmulInvocations(MATMUL_TILINGS.medium));
    expectWithin('matmul', 'x @ W^T', await runGraph(c), references(c), matmulBound(c, 300));
  });

  it('matmul: a sum past 65504 is inf in f16 though every product fits (q k^T of the unscaled attention chain)', async () => {
    // q [2, 8, 64] with entries 40 and k the same: each q k^T entry sums 64 products of 1600, 102400 > 65504.
    // Rows alternate the sign of k, so both infinities appear; the f32 product of the same values is finite.
    const d = 64;
    const q: HostTensor = { type: { dtype: 'f16', shape: [2, 8, d] }, data: new Float32Array(2 * 8 * d).fill(40) };
    const k: HostTensor = { type: { dtype: 'f16', shape: [2, 8, d] }, data: Float32Array.from({ length: 2 * 8 * d }, (_, i) => (Math.floor(i / d) % 2 ? -40 : 40)) };
    const c = singleOp('matmul', [q, k], { transposeA: false, transposeB: true });
    const gpu = await runGraph(c);
    const { cpu16, exact } = references(c);
    expect(exact[0]).toBe(102400);
    expect([...new Set(gpu)].sort()).toEqual([-Infinity, Infinity]);
    expect([...gpu]).toEqual([...cpu16]);
    const asF32 = (t: HostTensor): HostTensor => ({ type: { dtype: 'f32', shape: t.type.shape }, data: t.data });
    const f32 = await runGraph(singleOp('matmul', [asF32(q), asF32(k)], { transposeA: false, transposeB: true }));
    expect(f32.every((v) => Math.abs(v) === 102400)).toBe(true);
  });

  // [shape, dims, keepdim]: the workgroup path (long and short), the serial path (count <= 64 with 4096+
  // outputs), the column path (the inner dim kept, outer dims reduced) and non-contiguous reduced dims.
  const REDUCTIONS: [number[], number[], boolean][] = [
    [[3, 5, 7], [1], false],
    [[2, 37, 129], [1, 2], true],
    [[1031], [0], false],
    [[6, 2000], [1], false],
    [[5000, 7], [1], false],
    [[300, 67], [0], false],
    [[4, 9, 70], [0, 1], true],
    [[3, 400, 5], [0, 2], false],
  ];
  for (const op of ['sum', 'mean', 'amax']) {
    for (const [shape, dims, keepdim] of REDUCTIONS) {
      it(`${op} of f16${JSON.stringify(shape)} over ${JSON.stringify(dims)}${keepdim ? ', keepdim' : ''}`, async () => {
        const x = randomF16(shape, numel(shape) + dims.length, -2, 2);
        const c = singleOp(op, [x], { dims, keepdim });
        expect(c.node.type.dtype).toBe('f16');
        const ref = references(c);
        const gpu = await runGraph(c);
        const n = dims.reduce((p, d) => p * shape[d], 1);
        if (op === 'amax') expect([...gpu]).toEqual([...ref.cpu16]); // exact: the max of f16 values is one of them
        expectWithin(op, JSON.stringify(shape), gpu, ref, reduceBound(c, op, n, ref.exact));
      });
    }
  }

  it('sum overflows f16 to inf where its f32 value passes 65504; mean of the same values does not (it accumulates in f32)', async () => {
    const x: HostTensor = { type: { dtype: 'f16', shape: [2, 1000] }, data: Float32Array.from({ length: 2000 }, (_, i) => (i < 1000 ? 60000 : -60000)) };
    const sum = await runGraph(singleOp('sum', [x], { dims: [1], keepdim: false }));
    expect([...sum]).toEqual([Infinity, -Infinity]);
    const mean = await runGraph(singleOp('mean', [x], { dims: [1], keepdim: false }));
    expect([...mean]).toEqual([60000, -60000]);
  });

  // [shape, dim, value range]: short and long rows (64 and 256 invocations), a strided dim, size 1, wide values.
  const SOFTMAXES: [number[], number, number][] = [
    [[7, 13], -1, 4],
    [[3, 1030], 1, 4],
    [[4, 37, 5], 1, 4],
    [[2, 1, 9], 1, 4],
    [[300, 3], 0, 4],
    [[5, 77], 1, 12],
  ];
  for (const [shape, dim, range] of SOFTMAXES) {
    it(`softmax of f16${JSON.stringify(shape)} along ${dim}, values in [-${range}, ${range}]`, async () => {
      const x = randomF16(shape, numel(shape) + 7, -range, range);
      const c = singleOp('softmax', [x], { dim });
      const ref = references(c);
      const d = dim < 0 ? dim + shape.length : dim;
      expectWithin('softmax', JSON.stringify(shape), await runGraph(c), ref, softmaxBound(x, d, ref.exact));
    });
  }

  it('softmax of f16 rows with -inf entries (masked): those give 0, and a row of only -inf gives NaN, as on the CPU', async () => {
    const x = randomF16([3, 33], 5, -4, 4);
    for (let k = 0; k < 33; k++) {
      if (k % 2) x.data[33 + k] = -Infinity;
      x.data[66 + k] = -Infinity;
    }
    const c = singleOp('softmax', [x], { dim: 1 });
    const ref = references(c);
    const gpu = await runGraph(c);
    expect(gpu.slice(66).every(Number.isNaN)).toBe(true);
    expect([...gpu.slice(33, 66)].filter((_, k) => k % 2)).toEqual(new Array(16).fill(0));
    expectWithin('softmax', 'masked', gpu, ref, softmaxBound(x, 1, ref.exact));
  });

  const ROWS: number[][] = [[5, 1], [3, 7], [4, 64], [2, 3, 129], [3, 1100]];
  for (const shape of ROWS) {
    const c = shape[shape.length - 1];
    for (const bias of [true, false]) {
      it(`layer_norm of f16${JSON.stringify(shape)}${bias ? ' with' : ' without'} bias`, async () => {
        const x = randomF16(shape, numel(shape), -2, 3); // a mean away from 0, as activations have
        const w = randomF16([c], c + 1, -1.5, 1.5);
        const b = randomF16([c], c + 2, -1, 1);
        const node = singleOp('layer_norm', bias ? [x, w, b] : [x, w], { eps: 1e-5 });
        const ref = references(node);
        expectWithin('layer_norm', JSON.stringify(shape), await runGraph(node), ref, layerNormBound(x, w.data, bias ? b.data : null, 1e-5));
      });
    }
    it(`layer_norm_backward of f16${JSON.stringify(shape)}`, async () => {
      const x = randomF16(shape, numel(shape) + 3, -2, 3);
      const w = randomF16([c], c + 4, -1.5, 1.5);
      const g = randomF16(shape, numel(shape) + 5, -1, 1);
      const node = singleOp('layer_norm_backward', [x, w, g], { eps: 1e-5 });
      const ref = references(node);
      expectWithin('layer_norm_backward', JSON.stringify(shape), await runGraph(node), ref, layerNormBackwardBound(x, w.data, g.data, 1e-5));
    });
  }

  // cross_entropy takes f32 logits only; under autocast the f16 logits are cast up first. Both of its
  // kernels (one workgroup; a workgroup per row once the logits are big) on logits from an f16 matmul.
  // Tolerance: a row's loss logsumexp(z) - z_t moves by at most 2 max|dz| when the logits move by dz, and
  // the f16 logits are within the matmul bound (one f16 ULP of each other, half of f64, plus E). The f32
  // loss adds, per row (R = max - min): S = sum exp(z - max) off by (c + 2R + 2) u and twice exp's
  // 3 + 2R ULP, relative; log within 2^-21 absolute or 3 ULP; two roundings of the terms. The mean over
  // the kept rows adds sumBound of the losses and a division's 2.5 ULP.
  for (const [rows, classes] of [[6, 11], [64, 1031]]) {
    it(`cross_entropy of f32 logits cast from an f16 matmul, [${rows}, ${classes}]${rows * classes >= 1 << 16 ? ', row-parallel' : ''}`, async () => {
      const inputs = new Map<string, HostTensor>([
        ['h', randomF16([rows, 16], rows, -1, 1)],
        ['wte', randomF16([classes, 16], classes, -1, 1)],
        ['targets', { type: { dtype: 'i32', shape: [rows] }, data: Int32Array.from({ length: rows }, (_, i) => (i % 5 === 3 ? -100 : (i * 7) % classes)) }],
      ]);
      let graph = new Graph();
      const [h, wte, targets] = [...inputs].map(([name, t]) => graph.add('input', [], { name, dtype: t.type.dtype, shape: [...t.type.shape] }));
      const logits16 = graph.add('matmul', [h, wte], { transposeA: false, transposeB: true });
      graph.setOutputs([
        { name: 'y', node: graph.add('cross_entropy', [graph.add('cast', [logits16], { dtype: 'f32' }), targets], { ignoreIndex: -100 }) },
        { name: 'logits', node: logits16 },
      ]);
      const feed = (n: Node) => inputs.get(n.attrs.name as string)!;
      const [cpu16, exact] = [interpret(graph, feed, 'f32'), interpret(graph, feed, 'f64')];
      graph = rowParallelCrossEntropy(graph);
      expect(graph.nodes.some((n) => n.op === 'cross_entropy_rows')).toBe(rows * classes >= 1 << 16);
      const feeds = new Map(graph.nodes.filter((n) => n.op === 'input').map((n) => [n, feed(n)]));
      const gpu = (await runGraph({ graph, node: graph.outputs[0].node, feeds }))[0];

      const z = exact.get('logits')!.data;
      const zBound = matmulBound(singleOp('matmul', [inputs.get('h')!, inputs.get('wte')!], { transposeA: false, transposeB: true }), 16);
      let [dz, rowErr, absLoss, kept] = [0, 0, 0, 0];
      for (let r = 0; r < rows; r++) {
        const row = Array.from(z.slice(r * classes, (r + 1) * classes));
        for (let j = 0; j < classes; j++) dz = Math.max(dz, ulp16(roundF16(row[j])) + zBound[r * classes + j]);
        const [max, min] = [Math.max(...row), Math.min(...row)];
        const logS = Math.log(row.reduce((acc, v) => acc + Math.exp(v - max), 0));
        const t = inputs.get('targets')!.data[r];
        if (t === -100) continue;
        const range = max - min;
        const sRel = (classes + 2 * range + 2) * U + 2 * (3 + 2 * range) * ULP32;
        rowErr = Math.max(rowErr, sRel + 2 ** -21 + 3 * ULP32 * Math.abs(logS) + 2 * U * (Math.abs(logS) + Math.abs(max) + Math.abs(row[t])));
        absLoss += Math.abs(logS + max - row[t]);
        kept++;
      }
      const y = exact.get('y')!.data[0];
      const bound = 2 * dz + rowErr + sumBound(kept, absLoss) / kept + 2.5 * ULP32 * Math.abs(y);
      const ref = { cpu16: Float64Array.of(cpu16.get('y')!.data[0]), exact: Float64Array.of(y) };
      for (const [name, want] of [['cpu f16', ref.cpu16[0]], ['f64', y]] as const) {
        if (!(Math.abs(gpu - want) <= bound)) expect.fail(`cross_entropy ${gpu}, ${name} reference ${want} (tolerance ${bound})`);
      }
      const w = worst.get('cross_entropy (f32 loss)') ?? NO_ERRORS;
      worst.set('cross_entropy (f32 loss)', {
        ...w, cases: w.cases + 1, elements: w.elements + 1,
        vsCpu16: Math.max(w.vsCpu16, Math.abs(gpu - ref.cpu16[0]) / bound),
        vsF64: Math.max(w.vsF64, Math.abs(gpu - y) / bound),
        errF64: Math.max(w.errF64, Math.abs(gpu - y) / Math.max(1, Math.abs(y))),
      });
    });
  }
});

describe('the f16 type rules of these ops', () => {
  it('cross_entropy refuses f16 logits (the loss is f32; autocast casts them up)', () => {
    const graph = new Graph();
    const logits = graph.add('input', [], { name: 'l', dtype: 'f16' as DType, shape: [4, 8] });
    const targets = graph.add('input', [], { name: 't', dtype: 'i32', shape: [4] });
    expect(() => graph.add('cross_entropy', [logits, targets], { ignoreIndex: -100 })).toThrow(/KILN_E002.*f32 logits/);
    expect(() => graph.add('cross_entropy_rows', [logits, targets], { ignoreIndex: -100 })).toThrow(/KILN_E002/);
  });

  it('f16 matmul, sum, softmax and layer_norm give f16; mixing f16 with f32 operands is refused', () => {
    const graph = new Graph();
    const x = graph.add('input', [], { name: 'x', dtype: 'f16', shape: [4, 8] });
    const w32 = graph.add('input', [], { name: 'w', dtype: 'f32', shape: [8] });
    expect(graph.add('matmul', [x, x], { transposeA: false, transposeB: true }).type.dtype).toBe('f16');
    expect(graph.add('sum', [x], { dims: [1], keepdim: false }).type.dtype).toBe('f16');
    expect(graph.add('softmax', [x], { dim: 1 }).type.dtype).toBe('f16');
    expect(() => graph.add('layer_norm', [x, w32], { eps: 1e-5 })).toThrow(/KILN_E002/);
  });
});

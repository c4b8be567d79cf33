// Every elementwise, data-movement, leaf and embedding op's f16 kernel on lavapipe against the CPU
// f16 reference of the same graph (interpret(graph, feed, 'f32'): f16 values rounded where the kernel
// stores them), and the fused f16 chains the elementwise fusion pass makes.
//
// What must agree, and why:
// - bit for bit (f16 bit patterns; any NaN equals any NaN): data movement, compares, select, casts,
//   full/arange, neg, relu, + - * /, maximum, minimum, sqrt, embedding_backward's f32 sums, and fused
//   chains of those. A kernel computes in f32 and rounds once when it stores; for + - * / and sqrt of
//   f16 operands (or an f16 and an f32 constant) f32's 24 bits are at least 2 * 11 + 2, so that equals
//   the CPU's f64 result rounded to f32 then f16, and lavapipe's f32 arithmetic is IEEE.
// - within 1 f16 ULP, and bit-exact for over 99% of ordinary values: exp, log, tanh, pow, rsqrt, erf,
//   gelu. WGSL's f32 builtins are not correctly rounded (exp may be off by 3 + 2|x| f32 ULP), so when
//   the exact value lies within a few f32 ULP of an f16 rounding boundary the kernel can round to the
//   other f16 neighbour: 1 f16 ULP, never more, and rarely (an f32 ULP is 2^-13 of an f16 one). erf
//   and gelu are kiln's own WGSL (codegen/wgsl/elementwise.ts), accurate relative to the result for
//   that reason. The counts are printed at the end.

import './lavapipe.ts';
import { afterAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import { f16Bits, f16Value } from '../ir/f16.ts';
import type { HostData, HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { fuseElementwise } from '../passes/elementwise.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { HAS_LAVAPIPE } from './lavapipe.ts';
import { rng } from './helpers.ts';
import { type OpCase as Case, singleOp } from './op-graph.ts';
import { tensor, useBackend } from '../index.ts';

afterAll(releaseDevice);

// ---- f16 data: ordinary values, and the special ones each op should meet ----

const SUBNORMAL_MIN = 2 ** -24;
const F16_MAX = 65504;

/** Special f16 values by kind: both zeros, subnormals, values near the top of the range, infinities. */
const SPECIALS = {
  zero: () => [0, -0],
  subnormal: (r: () => number) => [1, -1, 1023, -1023, 1 + Math.floor(r() * 1022)].map((k) => k * SUBNORMAL_MIN),
  large: (r: () => number) => [F16_MAX, -F16_MAX, 32768, f16Value(f16Bits(40000 + r() * 25000)), -f16Value(f16Bits(40000 + r() * 25000))],
  inf: () => [Infinity, -Infinity],
};
type Special = keyof typeof SPECIALS;

interface Fill {
  lo?: number;
  hi?: number;
  /** Kinds of special value mixed in, about one element in five. */
  specials?: Special[];
  /** Drop the negative specials (log, sqrt, rsqrt, pow's base). */
  positive?: boolean;
}

function randomTensor(dtype: DType, shape: Shape, seed: number, fill: Fill = {}): HostTensor {
  const r = rng(seed);
  const n = numel(shape);
  const { lo = -4, hi = 4 } = fill;
  if (dtype === 'bool') return { type: { dtype, shape }, data: Uint8Array.from({ length: n }, () => (r() < 0.5 ? 1 : 0)) };
  if (dtype === 'i32') return { type: { dtype, shape }, data: Int32Array.from({ length: n }, () => Math.floor(lo + r() * (hi - lo))) };
  const pool = (fill.specials ?? []).flatMap((kind) => SPECIALS[kind](r)).filter((v) => !fill.positive || v > 0 || Object.is(v, 0));
  const value = () => (pool.length > 0 && r() < 0.2 ? pool[Math.floor(r() * pool.length)] : lo + r() * (hi - lo));
  // f16 inputs hold f16 values; f32 ones any f32.
  return { type: { dtype, shape }, data: Float32Array.from({ length: n }, () => (dtype === 'f16' ? f16Value(f16Bits(value())) : value())) };
}

const f16 = (shape: Shape, seed: number, fill: Fill = {}) => randomTensor('f16', shape, seed, fill);
const ALL: Special[] = ['zero', 'subnormal', 'large', 'inf'];

// ---- one graph, on lavapipe and on the CPU reference ----

async function runGpu({ graph, feeds }: Case): Promise<HostData> {
  const kdev = await getDevice();
  expect(kdev.f16, 'the device has shader-f16 (lavapipe)').toBe(true);
  const exec = await Executor.create(kdev, lowerGraph(graph));
  try {
    const out = graph.outputs[0];
    return await readback(kdev, exec.run(feeds).get(out.name)!, out.node.type);
  } finally {
    exec.destroy();
  }
}

function runCpu({ graph, feeds }: Case): HostData {
  return interpret(graph, (n) => feeds.get(n)!, 'f32').get(graph.outputs[0].name)!.data;
}

/** Where two results differ as f16 bit patterns (or, for i32 and bool, as numbers); any NaN equals any NaN. */
function differences(dtype: DType, gpu: HostData, ref: HostData, zerosEqual = false): number[] {
  const same = (g: number, r: number) => {
    if (dtype !== 'f16' && dtype !== 'f32') return g === r;
    if (Number.isNaN(g) || Number.isNaN(r)) return Number.isNaN(g) && Number.isNaN(r);
    if (zerosEqual && g === 0 && r === 0) return true;
    return dtype === 'f16' ? f16Bits(g) === f16Bits(r) : Object.is(g, r);
  };
  return [...Array(ref.length).keys()].filter((i) => !same(gpu[i], ref[i]));
}

const worst = new Map<string, { ulp: number; differing: number; total: number }>();
afterAll(() => {
  if (worst.size === 0) return;
  const rows = [...worst].map(([op, w]) => `  ${op.padEnd(22)} max ${w.ulp} ULP, ${w.differing} of ${w.total} elements differ (${((100 * w.differing) / w.total).toFixed(3)}%)`);
  console.log(`f16 kernels vs the CPU f16 reference, ops allowed 1 ULP:\n${rows.join('\n')}`);
});

/** Runs a case on both sides; the output must agree bit for bit. */
/** `zerosEqual`: +0 and -0 count as the same (max and min of the two zeros; see the test). */
async function expectExact(c: Case, zerosEqual = false): Promise<void> {
  const gpu = await runGpu(c);
  const ref = runCpu(c);
  const out = c.graph.outputs[0].node;
  expect(gpu.length).toBe(ref.length);
  const bad = differences(out.type.dtype, gpu, ref, zerosEqual);
  const shown = bad.slice(0, 5).map((i) => `[${i}] gpu ${gpu[i]} ref ${ref[i]}`);
  expect(shown, `${out.op} : ${out.type.dtype}[${out.type.shape}]: ${bad.length} of ${ref.length} differ`).toEqual([]);
}

/** f16 bit patterns in value order (-0 next to +0), so the distance between two is their ULP distance. */
function ordered(v: number): number {
  const h = f16Bits(v);
  return h & 0x8000 ? -(h & 0x7fff) : h;
}

const ulps = (a: number, b: number) => (Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b)) ? 0 : Number.isNaN(a) || Number.isNaN(b) ? Infinity : Math.abs(ordered(a) - ordered(b)));

/**
 * Runs a case whose op's WGSL builtin is not correctly rounded: every element within 1 f16 ULP of the
 * reference and, on ordinary data (`fraction`), fewer than 1% of them off by that ULP. Records the counts.
 */
async function expectWithinUlp(label: string, c: Case, { fraction = true } = {}): Promise<void> {
  const gpu = await runGpu(c);
  const ref = runCpu(c);
  let differing = 0;
  let maxUlp = 0;
  const bad: string[] = [];
  for (let i = 0; i < ref.length; i++) {
    const d = ulps(gpu[i], ref[i]);
    if (d === 0) continue;
    differing++;
    maxUlp = Math.max(maxUlp, d);
    if (d > 1 && bad.length < 5) bad.push(`[${i}] gpu ${gpu[i]} ref ${ref[i]} (${d} ULP)`);
  }
  const w = worst.get(label) ?? { ulp: 0, differing: 0, total: 0 };
  worst.set(label, { ulp: Math.max(w.ulp, maxUlp), differing: w.differing + differing, total: w.total + ref.length });
  expect(bad, `${label}: elements more than 1 ULP off`).toEqual([]);
  if (fraction) expect(differing / ref.length, `${label}: ${differing} of ${ref.length} elements 1 ULP off`).toBeLessThan(0.01);
}

/** A shape that broadcasts into `out`: some dims set to 1, some leading dims dropped. */
function broadcastFrom(out: Shape, r: () => number): number[] {
  const drop = Math.floor(r() * (out.length + 1));
  return out.slice(drop).map((d) => (r() < 0.3 ? 1 : d));
}

const SHAPES: Shape[] = [[37], [5, 7], [3, 5, 65], [2, 1, 7, 9], [1025]];

describe.skipIf(!HAS_LAVAPIPE)('f16 elementwise kernels equal the CPU f16 reference', () => {
  const exact: [string, Fill][] = [
    ['add', { specials: ALL }], ['sub', { specials: ALL }], ['mul', { lo: -300, hi: 300, specials: ALL }],
    ['div', { specials: ALL }], ['maximum', { specials: ALL }], ['minimum', { specials: ALL }],
  ];
  for (const [op, fill] of exact) {
    it(`${op} of f16 operands, broadcast, with zeros, subnormals, overflow and infinities: bit-exact`, async () => {
      for (const [k, out] of SHAPES.entries()) {
        const r = rng(k);
        const a = f16(broadcastFrom(out, r), 10 * k + 1, fill);
        const b = f16(r() < 0.5 ? [...out] : broadcastFrom(out, r), 10 * k + 2, fill);
        await expectExact(singleOp(op, [a, b]), op === 'maximum' || op === 'minimum');
      }
    });
  }

  it('maximum, minimum and relu of +0 and -0 give a zero, of either sign', async () => {
    // WGSL's max(e1, e2) is e1 unless e1 < e2, so max(+0, -0) = +0, but lavapipe (LLVM's maxnum) gives
    // -0 there, as IEEE 754-2008 maxNum allows; JS's Math.max gives +0. Every other value is bit-exact.
    const zeros = (values: number[]): HostTensor => ({ type: { dtype: 'f16', shape: [values.length] }, data: Float32Array.from(values) });
    const [a, b] = [zeros([0, -0, 0, -0, 1, -1]), zeros([-0, 0, 0, -0, -0, 0])];
    for (const op of ['maximum', 'minimum']) await expectExact(singleOp(op, [a, b]), true);
    await expectExact(singleOp('relu', [b]), true);
  });

  it('f16 ops with scalar literals: the literal is an f32 constant, and a result past 65504 overflows to inf', async () => {
    const x = f16([5, 65], 3, { specials: ALL });
    await expectExact(singleOp('mul', [x, 0.1]));
    await expectExact(singleOp('mul', [x, 3000]));
    await expectExact(singleOp('sub', [2.5, x]));
    await expectExact(singleOp('add', [x, 1e5]));
    await expectExact(singleOp('div', [x, 3]));
    await expectExact(singleOp('maximum', [x, -Infinity]));
  });

  const unaryExact: [string, Fill][] = [
    ['neg', { specials: ALL }], ['relu', { specials: ALL }], ['sqrt', { lo: 0, hi: 1000, specials: ALL, positive: true }],
  ];
  for (const [op, fill] of unaryExact) {
    it(`${op} of f16: bit-exact`, async () => {
      for (const [k, shape] of SHAPES.entries()) await expectExact(singleOp(op, [f16(shape, k, fill)]), op === 'relu');
    });
  }

  // Each on 8191 ordinary values (under 1% may be 1 ULP off), then on the shapes above with special
  // values mixed in (each within 1 ULP; the counts are printed, not bounded: lavapipe's tanh, for one,
  // is 1 ULP off on most subnormals, tanh(2^-24) giving 2^-23).
  const transcendental: [string, Fill, Special[]][] = [
    ['exp', { lo: -18, hi: 12 }, ['zero', 'subnormal', 'inf']], // past 11.09 overflows, below -9.7 subnormal
    ['log', { lo: 0, hi: 100, positive: true }, ['zero', 'subnormal', 'large', 'inf']],
    ['tanh', { lo: -5, hi: 5 }, ['zero', 'subnormal', 'inf']],
    ['rsqrt', { lo: 0, hi: 100, positive: true }, ['subnormal', 'large', 'inf']],
    ['erf', { lo: -4, hi: 4 }, ['zero', 'subnormal', 'inf']],
    ['gelu', { lo: -8, hi: 8 }, ['zero', 'subnormal', 'large']],
  ];
  for (const [op, fill, specials] of transcendental) {
    it(`${op} of f16: within 1 ULP, and bit-exact for over 99% of ordinary values`, async () => {
      await expectWithinUlp(op, singleOp(op, [f16([8191], 1, fill)]));
      for (const [k, shape] of SHAPES.entries()) await expectWithinUlp(`${op} (special values)`, singleOp(op, [f16(shape, k, { ...fill, specials })]), { fraction: false });
    });
  }

  // Dropout of an f16 tensor (training under autocast with dropout on): the same kept elements as the CPU
  // reference (the shared hash), each scaled by 1 / (1 - p) in f32 and rounded once. WGSL's f32 division
  // is not correctly rounded (2.5 ULP) and KEEP_P is 1 - p rounded to f32, hence 1 ULP.
  it('dropout of f16 (p 0.1, training): the same elements dropped, the kept ones within 1 ULP', async () => {
    await expectWithinUlp('dropout', singleOp('dropout', [f16([64, 129], 3, { lo: -8, hi: 8 })], { p: 0.1, training: true, seed: 42 }));
  });

  it('pow of f16 bases and exponents, and to a literal power: within 1 ULP, and bit-exact for over 99%', async () => {
    const base = f16([64, 127], 1, { lo: 0.05, hi: 8 });
    await expectWithinUlp('pow', singleOp('pow', [base, f16([127], 2, { lo: -3, hi: 3 })]));
    await expectWithinUlp('pow', singleOp('pow', [base, 2]));
    for (const [k, shape] of SHAPES.entries()) {
      const special = f16(shape, k, { lo: 0.05, hi: 8, specials: ['subnormal', 'large'], positive: true });
      await expectWithinUlp('pow (special values)', singleOp('pow', [special, f16([shape[shape.length - 1]], k + 7, { lo: -3, hi: 3 })]), { fraction: false });
    }
  });

  for (const op of ['eq', 'ne', 'lt', 'le', 'gt', 'ge']) {
    it(`${op} of f16 operands (ties, both zeros, infinities) and of an f16 and a literal: exact bools`, async () => {
      for (const [k, out] of SHAPES.entries()) {
        const r = rng(k);
        // Small integers and specials make ties common.
        const a = f16(out, 3 * k, { lo: -2, hi: 3, specials: ALL });
        const b = f16(broadcastFrom(out, r), 3 * k + 1, { lo: -2, hi: 3, specials: ALL });
        for (const t of [a, b]) t.data.set(t.data.map(Math.trunc));
        await expectExact(singleOp(op, [a, b]));
        await expectExact(singleOp(op, [a, 0.1]));
      }
    });
  }

  it('where and masked_fill select f16 values, f16 literals and a real -inf', async () => {
    const m = randomTensor('bool', [5, 7], 1);
    const n = randomTensor('bool', [7], 2);
    const x = f16([5, 7], 3, { specials: ALL });
    await expectExact(singleOp('where', [n, x, f16([5, 1], 4, { specials: ALL })]));
    await expectExact(singleOp('where', [m, x, 0]));
    await expectExact(singleOp('where', [m, 0.1, x]));
    await expectExact(singleOp('masked_fill', [x, n, -Infinity]));
    await expectExact(singleOp('masked_fill', [x, m, 1e5])); // past f16's range: stored as inf, as the CPU rounds it
    await expectExact(singleOp('masked_fill', [x, m, f16([], 5)]));
  });

  it('cast converts f16 to and from f32, i32 and bool exactly (f32 to f16 rounds to nearest even, overflows to inf)', async () => {
    // f32 values of every size f16 meets: ties, subnormals, underflow to zero, overflow.
    const r = rng(9);
    const wide = Float32Array.from({ length: 4099 }, (_, i) => (i % 2 ? -1 : 1) * 2 ** (r() * 48 - 30) * (1 + r()));
    wide.set([65504, 65519, 65520, 1e6, 2 ** -25, 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, Infinity, -Infinity, NaN, -0]);
    await expectExact(singleOp('cast', [{ type: { dtype: 'f32', shape: [wide.length] }, data: wide }], { dtype: 'f16' }));
    const x = f16([3, 65], 2, { lo: -300, hi: 300, specials: ['zero', 'subnormal', 'large'] });
    for (const to of ['f32', 'i32', 'bool']) await expectExact(singleOp('cast', [x], { dtype: to }));
    await expectExact(singleOp('cast', [f16([65], 3, { specials: ['inf'] })], { dtype: 'f32' }));
    await expectExact(singleOp('cast', [randomTensor('i32', [1000], 4, { lo: -70000, hi: 70000 })], { dtype: 'f16' }));
    await expectExact(singleOp('cast', [randomTensor('bool', [65], 5)], { dtype: 'f16' }));
  });
});

describe.skipIf(!HAS_LAVAPIPE)('f16 leaves and data movement equal the CPU f16 reference bit for bit', () => {
  it('full and arange make f16 tensors; a fill past 65504 is inf, as the CPU rounds it', async () => {
    for (const value of [0.1, 3, -2.5e-7, 65504, 65519, 70000, -Infinity, 1e-9]) {
      await expectExact(singleOp('full', [], { value, dtype: 'f16', shape: [5, 7] }));
    }
    await expectExact(singleOp('arange', [], { start: -3, step: 0.25, dtype: 'f16', shape: [65] }));
    await expectExact(singleOp('arange', [], { start: 2000, step: 1, dtype: 'f16', shape: [200] })); // past 2048 integers round to even
  });

  it('permute, transpose, slice, tril and triu move every f16 bit pattern', async () => {
    const x = f16([3, 5, 7, 9], 1, { specials: ALL });
    await expectExact(singleOp('permute', [x], { dims: [2, 0, 3, 1] }));
    await expectExact(singleOp('transpose', [x], { dim0: 1, dim1: -1 }));
    await expectExact(singleOp('slice', [x], { dim: 2, start: 1, end: 7, step: 2 }));
    await expectExact(singleOp('slice', [x], { dim: 3, start: -4, end: 9, step: 1 }));
    for (const diagonal of [-1, 0, 2]) {
      await expectExact(singleOp('tril', [x], { diagonal }));
      await expectExact(singleOp('triu', [x], { diagonal }));
    }
  });

  it('reshape is a view: a kernel after it reads the f16 buffer as the new shape', async () => {
    const c = singleOp('reshape', [f16([6, 35], 2, { specials: ALL })], { shape: [5, 42] });
    const y = c.graph.add('transpose', [c.node], { dim0: 0, dim1: 1 });
    c.graph.setOutputs([{ name: 'y', node: y }]);
    await expectExact(c);
  });

  it('concat and slice_backward place f16 parts exactly', async () => {
    const parts = [3, 1, 8].map((size, k) => f16([2, size, 5], k, { specials: ALL }));
    await expectExact(singleOp('concat', parts, { dim: 1 }));
    await expectExact(singleOp('slice_backward', [f16([4, 3, 5], 4, { specials: ALL })], { shape: [4, 7, 5], dim: 1, start: 1, end: 7, step: 2 }));
  });

  it('embedding gathers rows of an f16 table', async () => {
    const w = f16([37, 65], 1, { specials: ALL });
    const idx = randomTensor('i32', [7, 9], 2, { lo: 0, hi: 37 });
    await expectExact(singleOp('embedding', [w, idx]));
  });

  it('embedding_backward sums f16 gradient rows in f32, in token order, and rounds once (chunks of 256 tokens, rows wider than a workgroup)', async () => {
    for (const [tokens, dim, rows] of [[7, 5, 3], [600, 300, 5], [257, 513, 2], [1, 1, 1]]) {
      // Many tokens on few rows: a sum of ~100 to 300 terms, where rounding each step to f16 would show.
      const grad = f16([tokens, dim], tokens + dim, { lo: -1, hi: 1, specials: ['zero', 'subnormal'] });
      const idx = randomTensor('i32', [tokens], tokens, { lo: 0, hi: rows });
      await expectExact(singleOp('embedding_backward', [grad, idx], { num: rows }));
    }
  });
});

describe.skipIf(!HAS_LAVAPIPE)('fused f16 chains', () => {
  /** x f16 [rows, c] (a matmul's output), bias f32 [c]: cast up, add the bias, `act`, cast down, as autocast leaves an MLP's epilogue. */
  function epilogue(act: (g: Graph, x: Node) => Node, seed: number): Case & { fused: Graph } {
    const graph = new Graph();
    const x = graph.add('input', [], { name: 'x', dtype: 'f16', shape: [33, 65] });
    const bias = graph.add('input', [], { name: 'b', dtype: 'f32', shape: [65] });
    const up = graph.add('cast', [x], { dtype: 'f32' });
    const y = graph.add('cast', [act(graph, graph.add('add', [up, bias]))], { dtype: 'f16' });
    graph.setOutputs([{ name: 'y', node: y }]);
    const feeds = new Map([[x, f16([33, 65], seed, { lo: -6, hi: 6, specials: ['zero', 'subnormal', 'large'] })], [bias, randomTensor('f32', [65], seed + 1, { lo: -1, hi: 1 })]]);
    const fused = fuseElementwise(graph);
    const byName = (n: Node) => fused.nodes.find((m) => m.op === 'input' && m.attrs.name === n.attrs.name)!;
    return { graph: fused, feeds: new Map([...feeds].map(([n, t]) => [byName(n), t])), fused };
  }

  it('cast -> add bias -> gelu -> cast is one kernel reading f16 and f32, writing f16, within 1 ULP of its CPU reference', async () => {
    const c = epilogue((g, x) => g.add('gelu', [x]), 1);
    const kernels = lowerGraph(c.fused).kernels;
    expect(kernels.map((k) => k.node.op)).toEqual(['fused_elementwise']);
    expect(kernels[0].node.attrs.expr).toBe('f16(gelu(add(f32($0), $1)))');
    expect(kernels[0].node.type.dtype).toBe('f16');
    expect(kernels[0].code).toMatch(/var<storage, read> a: array<f16>/);
    expect(kernels[0].code).toMatch(/var<storage, read> b: array<f32>/);
    expect(kernels[0].code).toMatch(/var<storage, read_write> out: array<f16>/);
    await expectWithinUlp('fused gelu epilogue', c);
  });

  it('cast -> add bias -> relu -> scale -> cast is one kernel, bit-exact (f32 inside, one rounding to f16)', async () => {
    const c = epilogue((g, x) => g.add('mul', [g.add('relu', [x]), 0.3]), 2);
    expect(lowerGraph(c.fused).kernels.map((k) => k.node.op)).toEqual(['fused_elementwise']);
    await expectExact(c);
  });

  it('a chain of f16 ops keeps its intermediates in f32 and rounds once: bit-exact to the fused graph\'s reference', async () => {
    const graph = new Graph();
    const [a, b, d] = ['a', 'b', 'd'].map((name) => graph.add('input', [], { name, dtype: 'f16', shape: [7, 129] }));
    const y = graph.add('div', [graph.add('sub', [graph.add('mul', [a, b]), d]), 3]);
    graph.setOutputs([{ name: 'y', node: y }]);
    const fused = fuseElementwise(graph);
    expect(fused.nodesOf('fused_elementwise').map((n) => [n.attrs.expr, n.type.dtype])).toEqual([['div(sub(mul($0, $1), $2), 3)', 'f16']]);
    const feeds = new Map(fused.nodes.filter((n) => n.op === 'input').map((n, k) => [n, f16([7, 129], k, { lo: -200, hi: 200, specials: ALL })]));
    await expectExact({ graph: fused, feeds });
  });
});

describe.skipIf(!HAS_LAVAPIPE)('a cast to f16 inside a fused chain', () => {
  // x * c -> f16 -> f32 -> * 3 in f32 storage: the inner cast must round in registers. lavapipe keeps
  // f32(f16(x)) unrounded (it rounds only at stores), so codegen rounds with kiln_round_f16
  // (codegen/wgsl/dtypes.ts); a plain conversion pair failed 1018 of 1024 elements here.
  it('rounds to nearest even in registers, subnormals and overflow included: bit-exact', async () => {
    const graph = new Graph();
    const x = graph.add('input', [], { name: 'x', dtype: 'f32', shape: [4, 257] });
    const down = graph.add('cast', [graph.add('mul', [x, 1.0001])], { dtype: 'f16' });
    const y = graph.add('mul', [graph.add('cast', [down], { dtype: 'f32' }), 3]);
    graph.setOutputs([{ name: 'y', node: y }]);
    const fused = fuseElementwise(graph);
    expect(fused.nodesOf('fused_elementwise').map((n) => n.attrs.expr)).toEqual(['mul(f32(f16(mul($0, 1.0001))), 3)']);
    const input = fused.nodes.find((n) => n.op === 'input')!;
    const r = rng(11);
    const data = Float32Array.from({ length: 4 * 257 }, (_, i) =>
      i % 8 === 0 ? (r() - 0.5) * 2 ** -20 : i % 8 === 1 ? (r() - 0.5) * 2 ** 18 : (r() - 0.5) * 2 ** (r() * 30 - 15));
    await expectExact({ graph: fused, feeds: new Map([[input, { type: input.type, data }]]) });
  });
});

describe.skipIf(!HAS_LAVAPIPE)('eager f16 on the webgpu backend', () => {
  it('runs f16 ops op by op with the same bits as the cpu backend', async () => {
    const r = rng(5);
    const data = Array.from({ length: 5 * 37 }, () => r() * 8 - 4);
    const bias = Array.from({ length: 37 }, () => r() - 0.5);
    const compute = () => {
      const h = tensor(data, [5, 37]).half().mul(tensor(bias, [37]).half()).add(0.1);
      return h.maskedFill(h.lt(0), 0).float().sqrt().half().transpose(0, 1);
    };
    await useBackend('cpu');
    const want = await compute().data();
    await useBackend('webgpu');
    try {
      const y = compute();
      expect(y.dtype).toBe('f16');
      const got = await y.data();
      expect(differences('f16', got, want)).toEqual([]);
    } finally {
      await useBackend('cpu');
    }
  });
});

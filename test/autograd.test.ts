import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gradients } from '../compiler/autograd.ts';
import { fromHost, traceModule } from '../index.ts';
import { differentiate } from '../ir/autograd.ts';
import { parseGraph, printGraph } from '../ir/text.ts';
import { verifyGraph } from '../ir/verify.ts';
import { type Attrs, Graph, type Node, type Operand } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { splitKFactor } from '../ir/ops/linalg.ts';
import { CONCAT_SLICE_GRADIENTS, TWO_STEP_ROW_SUM } from '../passes/gradient-rules.ts';
import { rewriteGraph } from '../passes/pattern.ts';
import { ATTENTION_VARIANTS, asNumbers, centralDifferences, fixtureModel, loadFixture, relError, rng } from './helpers.ts';

// ---- per-op gradients against central finite differences, in f64 on the CPU interpreter ----

/** A small graph builder for gradient cases: `op('mul', a, b)`. */
type Build = (op: (name: string, inputs: Operand[], attrs?: Attrs) => Node, params: Record<string, Node>, inputs: Record<string, Node>) => Node;

interface GradCase {
  params: Record<string, Shape>;
  /** Fixed non-parameter inputs (indices, masks, targets). */
  inputs?: Record<string, HostTensor>;
  build: Build;
}

/**
 * Builds loss = sum(y * probe) (a random probe weighs every output element differently), differentiates
 * it with respect to every parameter, and returns the largest relative error of the analytic gradient
 * against central differences.
 */
function gradError({ params, inputs = {}, build }: GradCase, seed = 1): number {
  const g = new Graph();
  const leaf = (op: 'param' | 'input', name: string, dtype: DType, shape: Shape) => g.add(op, [], { name, dtype, shape: [...shape] });
  const paramNodes = Object.fromEntries(Object.entries(params).map(([name, shape]) => [name, leaf('param', name, 'f32', shape)]));
  const inputNodes = Object.fromEntries(Object.entries(inputs).map(([name, t]) => [name, leaf('input', name, t.type.dtype, t.type.shape)]));
  const y = build((name, xs, attrs) => g.add(name, xs, attrs), paramNodes, inputNodes);
  const probe = leaf('input', 'probe', 'f32', y.type.shape);
  const weighted = g.add('mul', [y, probe]);
  const loss = y.type.shape.length === 0 ? weighted : g.add('sum', [weighted], { dims: y.type.shape.map((_, i) => i) });
  g.setOutputs([{ name: 'loss', node: loss }]);
  // With the rewrites kiln runs on backward graphs (the q/k/v concat, the two-step row sum), so their results are checked too.
  const withGrads = rewriteGraph(differentiate(g, loss, Object.values(paramNodes)), [CONCAT_SLICE_GRADIENTS, TWO_STEP_ROW_SUM]).graph;

  const random = rng(seed);
  const values = new Map<string, HostTensor>(Object.entries(inputs));
  const randomTensor = (shape: Shape) => hostTensor('f32', shape, Float64Array.from({ length: numel(shape) }, () => 2 * random() - 1));
  for (const [name, shape] of Object.entries(params)) values.set(name, randomTensor(shape));
  values.set('probe', randomTensor(y.type.shape));
  const feed = (node: Node) => values.get(String(node.attrs.name))!;
  const analytic = interpret(withGrads, feed, 'f64');

  const h = 1e-5;
  let worst = 0;
  for (const name of Object.keys(params)) {
    const numeric = centralDifferences(values.get(name)!.data, () => interpret(g, feed, 'f64').get('loss')!.data[0], h);
    worst = Math.max(worst, relError(asNumbers(analytic.get(`grad.${name}`)!.data), numeric));
  }
  return worst;
}

const TOL = 1e-6;
const bools = (shape: Shape, values: number[]) => hostTensor('bool', shape, Uint8Array.from(values));
const ints = (shape: Shape, values: number[]) => hostTensor('i32', shape, Int32Array.from(values));
// A positive denominator/argument built from a parameter: x^2 + 0.5.
const positive = (op: Parameters<Build>[0], x: Node) => op('add', [op('mul', [x, x]), 0.5]);
/** A lower-triangular bool keep-mask [n, n] (every row keeps its diagonal). */
const lowerTriangle = (n: number) => bools([n, n], Array.from({ length: n * n }, (_, i) => Number(i % n <= Math.floor(i / n))));

const cases: Record<string, GradCase> = {
  'add broadcasts [2,3] + [3]': { params: { a: [2, 3], b: [3] }, build: (op, p) => op('add', [p.a, p.b]) },
  'add broadcasts [2,1,3] + [4,1]': { params: { a: [2, 1, 3], b: [4, 1] }, build: (op, p) => op('add', [p.a, p.b]) },
  'sub with a scalar first': { params: { a: [3, 2] }, build: (op, p) => op('sub', [1.5, p.a]) },
  'sub broadcasts [3,1] - [1,4]': { params: { a: [3, 1], b: [1, 4] }, build: (op, p) => op('sub', [p.a, p.b]) },
  'mul broadcasts [3,1] * [1,4]': { params: { a: [3, 1], b: [1, 4] }, build: (op, p) => op('mul', [p.a, p.b]) },
  'mul by a scalar': { params: { a: [4] }, build: (op, p) => op('mul', [p.a, -2.5]) },
  'a value used twice sums both gradients (mul(x, x))': { params: { a: [5] }, build: (op, p) => op('mul', [p.a, p.a]) },
  'div broadcasts [2,3] / [2,1]': { params: { a: [2, 3], b: [2, 1] }, build: (op, p) => op('div', [p.a, positive(op, p.b)]) },
  'div of a scalar by a tensor': { params: { a: [3] }, build: (op, p) => op('div', [2, positive(op, p.a)]) },
  'div by a scalar': { params: { a: [3] }, build: (op, p) => op('div', [p.a, 3]) },
  neg: { params: { a: [2, 2] }, build: (op, p) => op('neg', [p.a]) },
  exp: { params: { a: [2, 3] }, build: (op, p) => op('exp', [p.a]) },
  log: { params: { a: [4] }, build: (op, p) => op('log', [positive(op, p.a)]) },
  sqrt: { params: { a: [4] }, build: (op, p) => op('sqrt', [positive(op, p.a)]) },
  rsqrt: { params: { a: [4] }, build: (op, p) => op('rsqrt', [positive(op, p.a)]) },
  tanh: { params: { a: [2, 3] }, build: (op, p) => op('tanh', [p.a]) },
  'gelu (exact erf)': { params: { a: [3, 4] }, build: (op, p) => op('gelu', [op('mul', [p.a, 3])]) },
  erf: { params: { a: [5] }, build: (op, p) => op('erf', [p.a]) },
  'pow by a scalar and by a tensor': { params: { a: [3], b: [3] }, build: (op, p) => op('add', [op('pow', [positive(op, p.a), 3]), op('pow', [positive(op, p.a), p.b])]) },
  reshape: { params: { a: [2, 6] }, build: (op, p) => op('exp', [op('reshape', [p.a], { shape: [3, 4] })]) },
  transpose: { params: { a: [2, 3, 4] }, build: (op, p) => op('transpose', [p.a], { dim0: 0, dim1: -1 }) },
  permute: { params: { a: [2, 3, 4] }, build: (op, p) => op('permute', [p.a], { dims: [1, 2, 0] }) },
  'slice with a start and a step pads with zeros': { params: { a: [3, 7] }, build: (op, p) => op('slice', [p.a], { dim: 1, start: 1, end: 6, step: 2 }) },
  tril: { params: { a: [3, 3] }, build: (op, p) => op('tril', [p.a], { diagonal: 0 }) },
  // 2048 rows of x share W: its gradient is split over the rows in two batches and summed (split-K).
  'matmul x @ W^T with W shared by 2048 rows (split-K)': {
    params: { w: [5, 3] },
    inputs: { x: hostTensor('f32', [2, 1024, 3], Float64Array.from({ length: 6144 }, (_, k) => Math.sin(k * 0.37))) },
    build: (op, p, i) => op('matmul', [i.x, p.w], { transposeA: false, transposeB: true }),
  },
  // 1024 rows share b: its gradient sums blocks of 256 rows, then the blocks.
  'a bias added to 1024 rows (two-step row sum)': {
    params: { b: [3] },
    inputs: { x: hostTensor('f32', [4, 256, 3], Float64Array.from({ length: 3072 }, (_, k) => Math.cos(k))) },
    build: (op, p, i) => op('mul', [op('add', [i.x, p.b]), op('add', [i.x, p.b])]),
  },
  'slices tiling a dim meet as one concat': {
    params: { a: [2, 6] },
    build: (op, p) => {
      const part = (start: number) => op('slice', [p.a], { dim: 1, start, end: start + 2, step: 1 });
      return op('add', [op('mul', [part(0), part(2)]), op('exp', [part(4)])]);
    },
  },
  'concat along the last dim': { params: { a: [2, 3], b: [2, 2] }, build: (op, p) => op('exp', [op('concat', [p.a, p.b], { dim: 1 })]) },
  'embedding scatter-adds repeated rows': { params: { w: [5, 3] }, inputs: { idx: ints([2, 3], [0, 4, 4, 1, 0, 4]) }, build: (op, p, i) => op('embedding', [p.w, i.idx]) },
  'layer_norm (input, weight, bias)': { params: { x: [2, 3, 5], w: [5], b: [5] }, build: (op, p) => op('layer_norm', [p.x, p.w, p.b], { eps: 1e-5 }) },
  'layer_norm without bias': { params: { x: [4, 6], w: [6] }, build: (op, p) => op('layer_norm', [p.x, p.w], { eps: 1e-5 }) },
  'softmax along the last dim': { params: { a: [3, 5] }, build: (op, p) => op('softmax', [p.a], { dim: -1 }) },
  'softmax along dim 0': { params: { a: [3, 5] }, build: (op, p) => op('softmax', [p.a], { dim: 0 }) },
  'masked_fill with a value (grad to x is masked)': { params: { a: [2, 3] }, inputs: { m: bools([3], [1, 0, 1]) }, build: (op, p, i) => op('masked_fill', [p.a, i.m, 2]) },
  'masked_fill with -inf under softmax': { params: { a: [2, 4, 4] }, inputs: { m: bools([4, 4], Array.from({ length: 16 }, (_, k) => Number(k % 4 > Math.floor(k / 4)))) }, build: (op, p, i) => op('softmax', [op('masked_fill', [p.a, i.m, -Infinity])], { dim: -1 }) },
  'where routes the gradient by the condition': { params: { a: [2, 3], b: [3] }, inputs: { c: bools([2, 3], [1, 0, 0, 1, 1, 0]) }, build: (op, p, i) => op('where', [i.c, p.a, p.b]) },
  'dropout, inactive, is the identity': { params: { a: [6] }, build: (op, p) => op('dropout', [p.a], { p: 0.5, training: false }) },
  'dropout, active, reuses its mask': { params: { a: [4, 8] }, build: (op, p) => op('dropout', [p.a], { p: 0.3, training: true, seed: 7 }) },
  'cross_entropy gives ignored rows zero': { params: { l: [4, 5] }, inputs: { t: ints([4], [2, -1, 0, 4]) }, build: (op, p, i) => op('cross_entropy', [p.l, i.t], { ignoreIndex: -1 }) },
  'sum over dims [0,2]': { params: { a: [2, 3, 4] }, build: (op, p) => op('sum', [p.a], { dims: [0, 2], keepdim: false }) },
  'sum with keepdim': { params: { a: [2, 3, 4] }, build: (op, p) => op('sum', [p.a], { dims: [1], keepdim: true }) },
  'mean over the last dim': { params: { a: [3, 4] }, build: (op, p) => op('mean', [p.a], { dims: [-1], keepdim: false }) },
  'mean of everything to a 0-d value': { params: { a: [3, 4] }, build: (op, p) => op('mean', [p.a], { dims: [0, 1] }) },
  'sdpa causal': { params: { q: [2, 4, 3], k: [2, 4, 3], v: [2, 4, 2] }, build: (op, p) => op('sdpa', [p.q, p.k, p.v], { isCausal: true, scale: null, dropoutP: 0 }) },
  'sdpa with a bool mask and a scale': { params: { q: [2, 3, 4], k: [2, 3, 4], v: [2, 3, 2] }, inputs: { m: lowerTriangle(3) }, build: (op, p, i) => op('sdpa', [p.q, p.k, p.v, i.m], { isCausal: false, scale: 0.7, dropoutP: 0 }) },
  'sdpa with an additive f32 mask (L != S)': { params: { q: [3, 2], k: [4, 2], v: [4, 3] }, inputs: { m: hostTensor('f32', [4], Float64Array.from([0, -1, 0.5, -3])) }, build: (op, p, i) => op('sdpa', [p.q, p.k, p.v, i.m], { isCausal: false, scale: null, dropoutP: 0 }) },
  'fused_attention causal, pre_qk scaling': { params: { q: [1, 2, 4, 3], k: [1, 2, 4, 3], v: [1, 2, 4, 3] }, build: (op, p) => op('fused_attention', [p.q, p.k, p.v], { causal: true, scale: 0.5, scaling: 'pre_qk' }) },
  'fused_attention with a bool mask': { params: { q: [2, 3, 2], k: [2, 3, 2], v: [2, 3, 2] }, inputs: { m: lowerTriangle(3) }, build: (op, p, i) => op('fused_attention', [p.q, p.k, p.v, i.m], { causal: false, scale: 0.9, scaling: 'post' }) },
};

describe('every gradient rule matches central finite differences in f64', () => {
  for (const [name, c] of Object.entries(cases)) {
    it(name, () => expect(gradError(c)).toBeLessThan(TOL));
  }

  const dim = fc.integer({ min: 1, max: 3 });
  it('elementwise gradients sum back over any broadcast (fast-check)', () => {
    // Two shapes that broadcast: each dim of b is the matching dim of a or 1, with leading dims maybe dropped.
    const shapes = fc.array(fc.tuple(dim, fc.boolean()), { minLength: 1, maxLength: 3 }).chain((dims) =>
      fc.tuple(fc.constant(dims.map(([d]) => d)), fc.constant(dims.map(([d, one]) => (one ? 1 : d))), fc.integer({ min: 0, max: dims.length - 1 })),
    );
    fc.assert(
      fc.property(shapes, fc.constantFrom('add', 'sub', 'mul', 'div'), fc.boolean(), fc.integer(), ([a, b, drop], opName, swap, seed) => {
        const bShape = b.slice(drop);
        const c: GradCase = {
          params: { a, b: bShape },
          build: (op, p) => {
            const right = opName === 'div' ? positive(op, p.b) : p.b;
            return op(opName, swap && opName !== 'div' ? [right, p.a] : [p.a, right]);
          },
        };
        expect(gradError(c, seed)).toBeLessThan(TOL);
      }),
      { numRuns: 25 },
    );
  });

  it('matmul gradients hold for every transpose and batch broadcast (fast-check)', () => {
    fc.assert(
      fc.property(dim, dim, dim, fc.boolean(), fc.boolean(), fc.constantFrom('same', 'a-only', 'b-one', 'none'), fc.integer(), (m, k, n, ta, tb, batch, seed) => {
        const [ba, bb] = { same: [[2], [2]], 'a-only': [[2, 3], []], 'b-one': [[2], [1]], none: [[], []] }[batch];
        const c: GradCase = {
          params: { a: [...ba, ...(ta ? [k, m] : [m, k])], b: [...bb, ...(tb ? [n, k] : [k, n])] },
          build: (op, p) => op('matmul', [p.a, p.b], { transposeA: ta, transposeB: tb }),
        };
        expect(gradError(c, seed)).toBeLessThan(TOL);
      }),
      { numRuns: 30 },
    );
  });

  it('a weight shared by many rows gets its gradient as split-K partial products summed over the splits', () => {
    expect(splitKFactor(2048, 15)).toBe(2);
    expect(splitKFactor(16384, 384 * 1536)).toBe(8); // shakespeare-char's MLP weight: 36 tiles -> 288
    expect(splitKFactor(16384, 50304 * 384)).toBe(1); // enough tiles already
    expect(splitKFactor(1000, 15)).toBe(1); // too few rows to split
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [2, 1024, 3] });
    const w = g.add('param', [], { name: 'w', dtype: 'f32', shape: [5, 3] });
    const loss = g.add('sum', [g.add('matmul', [x, w], { transposeA: false, transposeB: true })], { dims: [0, 1, 2] });
    g.setOutputs([{ name: 'loss', node: loss }]);
    const grad = differentiate(g, loss, [w]).outputs.find((o) => o.name === 'grad.w')!.node;
    expect(grad.op).toBe('sum');
    expect((grad.inputs[0] as Node).type.shape).toEqual([2, 5, 3]);
  });

  it('the gradients of q, k and v split from one tensor meet as a concat (the concat_slice_gradients rule), not a sum of zero-padded slices', () => {
    const g = new Graph();
    const x = g.add('param', [], { name: 'x', dtype: 'f32', shape: [2, 9] });
    const parts = [0, 3, 6].map((start) => g.add('slice', [x], { dim: -1, start, end: start + 3, step: 1 }));
    const loss = g.add('sum', [g.add('mul', [g.add('mul', [parts[0], parts[1]]), parts[2]])], { dims: [0, 1] });
    g.setOutputs([{ name: 'loss', node: loss }]);
    const grad = rewriteGraph(differentiate(g, loss, [x]), [CONCAT_SLICE_GRADIENTS]).graph.outputs.find((o) => o.name === 'grad.x')!.node;
    expect(grad.op).toBe('concat');
    expect(grad.inputs).toHaveLength(3);
  });

  it('a bias gradient over 1024 rows sums blocks of 256 rows first, then the blocks (the two_step_row_sum rule)', () => {
    const g = new Graph();
    const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [4, 256, 3] });
    const b = g.add('param', [], { name: 'b', dtype: 'f32', shape: [3] });
    const loss = g.add('sum', [g.add('exp', [g.add('add', [x, b])])], { dims: [0, 1, 2] });
    g.setOutputs([{ name: 'loss', node: loss }]);
    const grad = rewriteGraph(differentiate(g, loss, [b]), [TWO_STEP_ROW_SUM]).graph.outputs.find((o) => o.name === 'grad.b')!.node;
    const first = grad.inputs[0] as Node;
    expect([grad.op, grad.attrs.dims, first.op, first.attrs.dims, (first.inputs[0] as Node).type.shape]).toEqual(['sum', [0], 'sum', [1], [4, 256, 3]]);
  });

  it('an op without a gradient rule is refused with its name', () => {
    const c: GradCase = { params: { a: [3] }, build: (op, p) => op('amax', [p.a], { dims: [0] }) };
    expect(() => gradError(c)).toThrow(/amax has no gradient rule/);
  });

  it('a parameter the loss does not use gets a zero gradient', () => {
    const g = new Graph();
    const a = g.add('param', [], { name: 'a', dtype: 'f32', shape: [2] });
    const unused = g.add('param', [], { name: 'unused', dtype: 'f32', shape: [3] });
    const loss = g.add('sum', [a], { dims: [0] });
    g.setOutputs([{ name: 'loss', node: loss }]);
    const out = interpret(differentiate(g, loss, [a, unused]), (n) => hostTensor('f32', n.type.shape, new Float32Array(numel(n.type.shape)).fill(1)));
    expect([...out.get('grad.a')!.data]).toEqual([1, 1]);
    expect([...out.get('grad.unused')!.data]).toEqual([0, 0, 0]);
  });
});

// ---- nanoGPT gradients against PyTorch's (test/fixtures/README.md: within 1e-3 relative in float32) ----

const FIXTURE_TOL = 1e-3;

describe('nanoGPT gradients on the cpu backend match PyTorch', async () => {
  const fx = await loadFixture();
  const idx = fromHost(fx.expected.get('idx')!);
  const targets = fromHost(fx.expected.get('targets')!);
  const expectedGrads = [...fx.expected.keys()].filter((k) => k.startsWith('grad.'));

  for (const [label, override] of ATTENTION_VARIANTS) {
    it(`${label}: differentiate() gives every grad.<param> within ${FIXTURE_TOL}`, async () => {
      const model = await fixtureModel(override);
      const { graph } = traceModule(model, [idx, targets]);
      const loss = graph.outputs.find((o) => o.name === 'loss')!.node;
      const withGrads = differentiate(graph, loss, graph.nodesOf('param'));
      verifyGraph(withGrads, 'autograd');
      const text = printGraph(withGrads);
      expect(printGraph(parseGraph(text)), 'the backward graph reads back from its text form').toBe(text);
      const buffers = new Map([...model.namedBuffers()].map(([name, t]) => [name, t.host!]));
      const feed = (node: Node): HostTensor => {
        const name = String(node.attrs.name);
        if (node.op === 'input') return fx.expected.get(name)!;
        return (node.op === 'param' ? fx.weights.get(name) : buffers.get(name))!;
      };
      const out = interpret(withGrads, feed, 'f32');
      const errors = Object.fromEntries(expectedGrads.map((k) => [k, relError(asNumbers(out.get(k)!.data), fx.expected.get(k)!.data)]));
      const worst = Math.max(...Object.values(errors));
      console.log(`${label}: largest gradient error ${worst.toExponential(2)} (${Object.entries(errors).find(([, e]) => e === worst)![0]})`);
      expect(expectedGrads.length).toBe(graph.nodesOf('param').length);
      for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(FIXTURE_TOL);
    });
  }

  it('gradients(model, [idx, targets]) returns every parameter gradient by name', async () => {
    const model = await fixtureModel({ flash: true });
    const grads = await gradients(model, [idx, targets]);
    expect([...grads.keys()].sort()).toEqual(expectedGrads.map((k) => k.slice('grad.'.length)).sort());
    const wte = grads.get('transformer.wte.weight')!;
    expect(relError(asNumbers(wte.data), fx.expected.get('grad.transformer.wte.weight')!.data)).toBeLessThan(FIXTURE_TOL);
  });
});

// Fused linear + cross-entropy on the cpu (passes/linear-ce.ts, ir/ops/fused_linear_ce.ts): the rule
// fires on lm_head + loss in training and declines, with its reason, where the logits are needed; the
// fused op's f64 reference and gradient rule equal the unfused graph's; the chunked lowering matches
// the f64 reference of the unfused graph without any [N, V] tensor; nanoGPT's gradients with the
// rewrite on match PyTorch's fixture. Under autocast f16: fused-linear-ce-autocast.test.ts.

import { describe, expect, it } from 'vitest';
import { compile, fromHost } from '../index.ts';
import { traceModule } from '../compiler/tracer.ts';
import { compileTrainStep } from '../compiler/train-step.ts';
import { lowerGraph } from '../codegen/index.ts';
import type { Graph, Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { numel } from '../ir/types.ts';
import { DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';
import { chunkRows } from '../passes/linear-ce.ts';
import { interpret } from '../runtime/interpreter.ts';
import { COMPARED, type LmHeadCase, feedOf, lmHeadFeeds, lmHeadGraph, trainingPipeline, withGradients } from './fused-linear-ce-cases.ts';
import { batch, fresh } from './train-step-cases.ts';
import { asNumbers, fixtureModel, loadFixture, relError } from './helpers.ts';

// 20 rows, 16 features, 50 classes: chunkRows gives 8 rows, so chunks of 8, 8 and 4 (a ragged last one).
const BASE: LmHeadCase = { B: 2, T: 10, C: 16, V: 50 };
const CASES: Record<string, LmHeadCase> = {
  'plain lm_head': BASE,
  'every third target ignored (-1)': { ...BASE, ignoreEvery: 3 },
  'w tied to an embedding the hidden state reads (wte)': { ...BASE, tied: true, ignoreEvery: 4 },
  'one chunk (4 rows; V <= C, so Liger takes every row at once)': { B: 1, T: 4, C: 16, V: 12 },
};

/**
 * f32 against f64: each logit is a C-term dot product, each row's log-sum-exp and gradient a V-term sum,
 * dw an N-term sum: at most (C + V + N) u = 86 x 6e-8 = 5e-6 relative to the largest value, first order.
 */
const TOL_F32 = 1e-5;
/** The fused op's f64 references against the unfused graph's f64 autograd: only the order of f64 sums differs. */
const TOL_F64 = 1e-12;

const run = (graph: Graph, c: LmHeadCase, precision: 'f32' | 'f64') => interpret(graph, feedOf(lmHeadFeeds(c)), precision);
const worstError = (got: Map<string, HostTensor>, want: Map<string, HostTensor>) =>
  Object.fromEntries(COMPARED.map((k) => [k, relError(asNumbers(got.get(k)!.data), asNumbers(want.get(k)!.data))]));

/** Nodes of rows by V classes bigger than one chunk's logits: the [N, V] logits the rewrite removes, or their softmax. */
const biggerThanChunk = (graph: Graph, c: LmHeadCase, rows: number) =>
  graph.nodes.filter((n) => n.type.shape.length >= 2 && n.type.shape[n.type.shape.length - 1] === c.V && numel(n.type.shape) > rows * c.V);

describe('fuse_linear_cross_entropy in training', () => {
  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: the fused op's f64 reference and gradient rule equal the unfused graph's autograd`, () => {
      const { fused, decisions } = trainingPipeline(lmHeadGraph(c));
      expect(decisions.map((d) => d.applied)).toEqual([true]);
      expect(fused.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
      const errors = worstError(run(withGradients(fused), c, 'f64'), run(withGradients(lmHeadGraph(c)), c, 'f64'));
      for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(TOL_F64);
    });

    it(`${name}: the chunked lowering in f32 matches the unfused f64 reference, with no [N, V] tensor`, () => {
      const { lowered } = trainingPipeline(lmHeadGraph(c));
      const reference = run(withGradients(lmHeadGraph(c)), c, 'f64');
      const errors = worstError(run(lowered, c, 'f32'), reference);
      console.log(`${name}: ${JSON.stringify(errors)}`);
      for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(TOL_F32);
      const rows = chunkRows(c.B * c.T, c.V, c.C);
      expect(biggerThanChunk(lowered, c, rows).map((n) => `%${n.id} ${n.op}`)).toEqual([]);
      // Every chunk's logits, once in the forward and once in the backward (a matmul_epilogue where the
      // elementwise chain after the product runs in its kernel: passes/matmul-epilogue.ts).
      const chunkLogits = lowered.nodes.filter((n) => (n.op === 'matmul' || n.op === 'matmul_epilogue') && n.type.shape[1] === c.V && n.attrs.transposeB === true);
      expect(chunkLogits).toHaveLength(2 * Math.ceil((c.B * c.T) / rows));
      expect(Math.max(...chunkLogits.map((n) => n.type.shape[0]))).toBe(rows);
    });
  }

  it('chunks as Liger-Kernel sizes them: GPT-2 at B12 T1024 gets 48 chunks of 256 rows (51 MB of f32 logits each); a huge vocabulary is capped at 256 MiB a chunk', () => {
    expect(chunkRows(12 * 1024, 50304, 768)).toBe(256);
    expect(chunkRows(4, 12, 16)).toBe(4);
    expect(chunkRows(20, 50, 16)).toBe(8);
    expect(chunkRows(65536, 1 << 22, 4096) * 4 * (1 << 22)).toBeLessThanOrEqual(256 * 2 ** 20);
  });
});

describe('fuse_linear_cross_entropy declines, with its reason', () => {
  it('when forward() also returns the logits (inference)', () => {
    const { fused, decisions } = trainingPipeline(lmHeadGraph({ ...BASE, returnLogits: true }));
    expect(fused.nodesOf('fused_linear_cross_entropy')).toEqual([]);
    expect(decisions).toHaveLength(1);
    expect(decisions[0].applied).toBe(false);
    expect(decisions[0].reason).toMatch(/^the logits \(%\d+\) are also used by a graph output, so they must exist in full/);
  });

  it('when something else reads the logits', () => {
    const { fused, decisions } = trainingPipeline(lmHeadGraph({ ...BASE, otherUse: true }));
    expect(fused.nodesOf('fused_linear_cross_entropy')).toEqual([]);
    expect(decisions[0].reason).toMatch(/are also used by %\d+ = softmax/);
  });

  it('when the weight is stored [C, V] (a matmul without transposeB)', () => {
    const g = lmHeadGraph(BASE);
    const stored = g.add('param', [], { name: 'w_cv', dtype: 'f32', shape: [BASE.C, BASE.V] });
    const logits = g.add('matmul', [g.nodesOf('param')[0], stored], { transposeA: false, transposeB: false });
    g.setOutputs([{ name: 'loss', node: g.add('cross_entropy', [g.add('reshape', [logits], { shape: [20, BASE.V] }), g.nodesOf('input')[0]], { ignoreIndex: -1 }) }]);
    const { decisions } = trainingPipeline(g);
    expect(decisions.find((d) => !d.applied)?.reason).toMatch(/has transposeB=false/);
  });

  it('compile() of nanoGPT with targets keeps its logits (they are returned) and says so; without targets there is no loss to fuse', async () => {
    const { model } = fresh();
    const [idx, targets] = batch(0);
    const withLoss = await compile(model, { backend: 'cpu' }).lower(idx, targets);
    const sites = withLoss.passes.decisions.filter((d) => d.pass === 'fuse_linear_cross_entropy');
    expect(sites.map((d) => [d.applied, d.site.op])).toEqual([[false, 'cross_entropy']]);
    expect(sites[0].reason).toMatch(/used by a graph output/);
    const inference = await compile(model, { backend: 'cpu' }).lower(idx);
    expect(inference.passes.decisions.filter((d) => d.pass === 'fuse_linear_cross_entropy')).toEqual([]);
  });
});

describe('nanoGPT training with the rewrite on', () => {
  it("compileTrainStep fuses nanoGPT's lm_head (tied to wte) with the loss, and the step has no [B*T, V] tensor", async () => {
    const { model, optimizer } = fresh();
    const step = compileTrainStep(model, optimizer, { backend: 'cpu' });
    await step(...batch(0));
    const last = step.last!;
    expect(last.forward.graph.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
    const [B, T] = batch(0)[0].shape;
    const V = model.config.vocab_size;
    expect(last.step.graph.nodes.filter((n) => n.type.shape.length >= 2 && numel(n.type.shape) >= B * T * V && n.type.shape[n.type.shape.length - 1] === V).map((n) => n.op)).toEqual([]);
  });

  it("with chunk_linear_cross_entropy off the cpu runs the fused op unchunked, and lowering to WGSL says which pass it needs, at the loss's line", () => {
    const unchunked = (traced: Graph) => {
      const forward = runPasses(traced, DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered')).graph;
      return runPasses(withGradients(forward), DEFAULT_PIPELINE, { passes: { fuse_attention: false, chunk_linear_cross_entropy: false } }).graph;
    };
    const step = unchunked(lmHeadGraph(BASE));
    expect(step.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
    const errors = worstError(run(step, BASE, 'f32'), run(withGradients(lmHeadGraph(BASE)), BASE, 'f64'));
    for (const [k, e] of Object.entries(errors)) expect(e, k).toBeLessThan(TOL_F32);
    const { graph } = traceModule(fresh().model, batch(0));
    graph.setOutputs(graph.outputs.filter((o) => o.name === 'loss'));
    expect(() => lowerGraph(unchunked(graph))).toThrow(
      /^KILN_E011 .*model\.ts:220\b.*fused_linear_cross_entropy runs on WebGPU only in chunks of rows, which the pass chunk_linear_cross_entropy makes, and it is switched off; turn it back on, or switch off fuse_linear_cross_entropy too/,
    );
  });

  // test/fixtures/README.md: gradients within 1e-3 relative in float32 (autograd.test.ts's bound).
  it("the fixture's loss and every grad.<param> match PyTorch within 1e-3 through the fused, chunked graph", async () => {
    const fx = await loadFixture();
    const model = await fixtureModel({ flash: true });
    const { graph } = traceModule(model, [fromHost(fx.expected.get('idx')!), fromHost(fx.expected.get('targets')!)]);
    graph.setOutputs(graph.outputs.filter((o) => o.name === 'loss'));
    const { fused, lowered } = trainingPipeline(graph);
    expect(fused.nodesOf('fused_linear_cross_entropy')).toHaveLength(1);
    const buffers = new Map([...model.namedBuffers()].map(([name, t]) => [name, t.host!]));
    const feed = (node: Node): HostTensor => {
      const name = String(node.attrs.name);
      if (node.op === 'input') return fx.expected.get(name)!;
      return (node.op === 'param' ? fx.weights.get(name) : buffers.get(name))!;
    };
    const out = interpret(lowered, feed, 'f32');
    expect(relError(asNumbers(out.get('loss')!.data), fx.expected.get('loss')!.data)).toBeLessThan(1e-4);
    const expected = [...fx.expected.keys()].filter((k) => k.startsWith('grad.'));
    expect(expected.length).toBe(graph.nodesOf('param').length);
    for (const k of expected) expect(relError(asNumbers(out.get(k)!.data), fx.expected.get(k)!.data), k).toBeLessThan(1e-3);
  });
});

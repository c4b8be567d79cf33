// Dropout in compiled graphs: traced sites read the graph's `rng` leaf, fed a fresh value per call
// from manualSeed's stream, so every call draws a new mask and manualSeed makes runs repeat. The
// masks in gradients (dropout's and sdpa's) are the forward's. Eager dropout keeps its seed attrs.

import { describe, expect, it } from 'vitest';
import { F, KilnError, Module, Parameter, type Tensor, compile, gradients, manualSeed, parseGraph, printGraph, tensor, traceModule, verifyGraph } from '../index.ts';
import { nextSeed } from '../compiler/frontend/random.ts';
import { differentiate } from '../ir/autograd.ts';
import { type Attrs, Graph, type Node, type Operand } from '../ir/graph.ts';
import { type HostTensor, hostTensor } from '../ir/host.ts';
import { dropoutUniform, mixDropoutSeed } from '../ir/ops/attention.ts';
import { type Shape, numel } from '../ir/types.ts';
import { interpret } from '../runtime/interpreter.ts';
import { centralDifferences, rng as seeded } from './helpers.ts';

const P = 0.5;

/** forward(x) = dropout(x * w) and sdpa with dropout over it: two random sites, one parameter. */
class Dropper extends Module {
  w = new Parameter(hostTensor('f32', [4, 8], Float32Array.from({ length: 32 }, (_, i) => 0.1 + i / 32)));
  forward(x: Tensor) {
    const h = F.dropout(x.mul(this.w), P, true);
    const q = h.view(1, 4, 8);
    const att = F.scaledDotProductAttention(q, q, q, { dropoutP: 0.3 });
    return { h, att, loss: att.sum() };
  }
}

const ones = () => tensor(new Array(32).fill(1), [4, 8]);

async function values(out: unknown): Promise<number[][]> {
  const { h, att } = out as { h: Tensor; att: Tensor };
  return [Array.from(await h.data()), Array.from(await att.data())];
}

describe('tracing a random op', () => {
  it('gives the graph one rng leaf, read by every active site, with sites numbered 0, 1, ...', () => {
    const { graph } = traceModule(new Dropper(), [ones()]);
    const [rng] = graph.nodesOf('rng');
    expect(graph.nodesOf('rng')).toHaveLength(1);
    expect(rng.type).toEqual({ dtype: 'i32', shape: [] });
    const sites = [...graph.nodesOf('dropout'), ...graph.nodesOf('sdpa')];
    expect(sites.map((n) => [n.inputs.at(-1), n.attrs.seed])).toEqual([[rng, 0], [rng, 1]]);
  });

  it('draws nothing from the random stream, so manualSeed alone decides the masks', () => {
    manualSeed(9);
    traceModule(new Dropper(), [ones()]);
    const after = nextSeed();
    manualSeed(9);
    expect(nextSeed()).toBe(after);
  });

  it('leaves inactive dropout alone: no rng operand, no rng leaf', () => {
    const m = Object.assign(new Module(), { forward: (x: Tensor) => F.dropout(F.dropout(x, P, false), 0, true) });
    const { graph } = traceModule(m, [ones()]);
    expect(graph.nodesOf('rng')).toEqual([]);
    expect(graph.nodesOf('dropout').every((n) => n.inputs.length === 1 && n.attrs.seed === undefined)).toBe(true);
  });

  it('prints the rng leaf in the IR text form, which parses back and verifies', () => {
    const { graph } = traceModule(new Dropper(), [ones()]);
    const text = printGraph(graph);
    expect(text).toMatch(/^%\d+ = rng\(\) \{name="rng"\} : i32\[\]$/m);
    expect(text).toMatch(/= dropout\(%\d+, %\d+\) \{p=0\.5, training=true, seed=0\} : f32\[4,8\]/);
    const parsed = parseGraph(text);
    verifyGraph(parsed, 'parse');
    expect(printGraph(parsed)).toBe(text);
  });
});

describe('a compiled model with dropout', () => {
  it('draws a new mask on every call, and the same masks again after the same manualSeed', async () => {
    const forward = compile(new Dropper(), { backend: 'cpu' });
    manualSeed(42);
    const first = await values(await forward(ones())); // traces
    const second = await values(await forward(ones())); // cached
    expect(forward.stats.traces).toBe(1);
    expect(second[0]).not.toEqual(first[0]);
    expect(second[1]).not.toEqual(first[1]);
    manualSeed(42);
    expect(await values(await forward(ones()))).toEqual(first);
    expect(await values(await forward(ones()))).toEqual(second);
  });

  it('drops each element with the mask of dropoutUniform(mixDropoutSeed(site, rng), index)', async () => {
    const forward = compile(new Dropper(), { backend: 'cpu' });
    manualSeed(3);
    const [h] = await values(await forward(ones()));
    manualSeed(3);
    const seed = mixDropoutSeed(0, nextSeed());
    const w = new Dropper().w.host!.data;
    expect(h).toEqual(Array.from(w, (x, i) => (dropoutUniform(seed, i) < P ? 0 : Math.fround(x / (1 - P)))));
  });

  it('keeps sites that differ only by seed apart through constant folding and CSE', async () => {
    // Two dropouts of one constant buffer: CSE must not merge them, folding must not fix their masks.
    class Twice extends Module {
      constructor() {
        super();
        this.registerBuffer('c', tensor(new Array(64).fill(1), [64]));
      }
      forward(x: Tensor) {
        const c = (this as unknown as { c: Tensor }).c;
        return { a: F.dropout(c, P, true).add(x), b: F.dropout(c, P, true).add(x) };
      }
    }
    const forward = compile(new Twice(), { backend: 'cpu' });
    manualSeed(1);
    const { a, b } = (await forward(tensor([0]))) as { a: Tensor; b: Tensor };
    const canonical = forward.stage('canonical')!;
    expect(canonical.nodesOf('dropout')).toHaveLength(2);
    expect(canonical.nodesOf('rng')).toHaveLength(1);
    expect(Array.from(await a.data())).not.toEqual(Array.from(await b.data()));
    const { a: again } = (await forward(tensor([0]))) as { a: Tensor };
    expect(Array.from(await again.data())).not.toEqual(Array.from(await a.data()));
  });
});

describe('attention fusion and sdpa with dropout', () => {
  for (const withMask of [false, true]) {
    it(`fuses sdpa(q, k, v, ${withMask ? 'mask, ' : ''}rng), its dropout drawn in the kernel with the same bits as unfused`, async () => {
      const m = Object.assign(new Module(), { forward: (q: Tensor, mask: Tensor) => F.scaledDotProductAttention(q, q, q, { dropoutP: 0.2, attnMask: withMask ? mask : null }) });
      const inputs: [Tensor, Tensor] = [tensor(Array.from({ length: 24 }, (_, i) => Math.sin(i)), [2, 3, 4]), tensor([1, 0, 1, 1, 1, 1, 0, 1, 1], [3, 3], 'bool')];
      const c = await compile(m, { backend: 'cpu' }).lower(...inputs);
      const [fused] = c.passes.stages.get('fused')!.nodesOf('fused_attention');
      expect(fused.attrs).toMatchObject({ dropoutP: 0.2, seed: 0 });
      expect(fused.inputs.map((x) => (x as Node).op)).toEqual(['input', 'input', 'input', ...(withMask ? ['input'] : []), 'rng']);
      expect(c.passes.decisions.filter((d) => d.pass === 'fuse_attention').map((d) => d.reason)).toEqual([expect.stringMatching(/; dropout p=0\.2 on the weights, drawn in the kernel$/)]);
      const run = async (fuse: boolean) => {
        manualSeed(5);
        return Array.from(await ((await compile(m, { backend: 'cpu', passes: { fuse_attention: fuse } })(...inputs)) as Tensor).data());
      };
      const [fusedOut, unfusedOut] = [await run(true), await run(false)];
      fusedOut.forEach((x, i) => expect(x).toBeCloseTo(unfusedOut[i], 5));
    });
  }
});

describe('eager dropout is unchanged', () => {
  it('draws a seed attr per call from the random stream and no rng', async () => {
    manualSeed(11);
    const y = Array.from(await F.dropout(ones(), P, true).data());
    manualSeed(11);
    const seed = nextSeed();
    expect(y).toEqual(Array.from({ length: 32 }, (_, i) => (dropoutUniform(seed, i) < P ? 0 : 2)));
  });
});

// ---- gradients: the backward redraws the forward's mask ----

/** A graph with param leaves, an `rng` leaf, and loss = sum(build(...) * probe). */
function lossGraph(params: Record<string, Shape>, build: (op: (name: string, inputs: Operand[], attrs?: Attrs) => Node, p: Record<string, Node>, rng: Node) => Node) {
  const g = new Graph();
  const p = Object.fromEntries(Object.entries(params).map(([name, shape]) => [name, g.add('param', [], { name, dtype: 'f32', shape: [...shape] })]));
  const rng = g.add('rng', [], { name: 'rng', dtype: 'i32', shape: [] });
  const y = build((name, xs, attrs) => g.add(name, xs, attrs), p, rng);
  const probe = g.add('input', [], { name: 'probe', dtype: 'f32', shape: [...y.type.shape] });
  const loss = g.add('sum', [g.add('mul', [y, probe])], { dims: y.type.shape.map((_, i) => i) });
  g.setOutputs([{ name: 'y', node: y }, { name: 'loss', node: loss }]);
  return { g, loss, params: Object.values(p) };
}

/** Random values in [-1, 1) for each param and the probe, and the rng value. */
function feeds(g: Graph, rngValue: number, seed = 1): Map<string, HostTensor> {
  const random = seeded(seed);
  const values = new Map<string, HostTensor>([['rng', hostTensor('i32', [], Int32Array.of(rngValue))]]);
  for (const n of g.nodes.filter((n) => n.op === 'param' || n.op === 'input')) {
    values.set(String(n.attrs.name), hostTensor('f32', n.type.shape, Float64Array.from({ length: numel(n.type.shape) }, () => 2 * random() - 1)));
  }
  return values;
}

/** Largest relative error of differentiate()'s gradients against central differences, in f64. */
function gradError(g: Graph, loss: Node, params: Node[], values: Map<string, HostTensor>): number {
  const feed = (node: Node) => values.get(String(node.attrs.name))!;
  const analytic = interpret(differentiate(g, loss, params), feed, 'f64');
  const h = 1e-5;
  let worst = 0;
  for (const p of params) {
    const name = String(p.attrs.name);
    const grad = analytic.get(`grad.${name}`)!.data;
    const numeric = centralDifferences(values.get(name)!.data, () => interpret(g, feed, 'f64').get('loss')!.data[0], h);
    for (let i = 0; i < grad.length; i++) worst = Math.max(worst, Math.abs(grad[i] - numeric[i]) / Math.max(1, Math.abs(grad[i])));
  }
  return worst;
}

const DROP: Attrs = { p: 0.4, training: true, seed: 3 };

describe('gradients through random ops use the forward mask', () => {
  it('dropout(x, rng): the gradient is zero exactly where the output is, and scaled by 1/(1-p) elsewhere', () => {
    const { g, loss, params } = lossGraph({ a: [6, 7] }, (op, p, rng) => op('dropout', [p.a, rng], DROP));
    const values = feeds(g, 12345);
    const out = interpret(differentiate(g, loss, params), (n) => values.get(String(n.attrs.name))!, 'f64');
    const [a, probe, y, grad] = [values.get('a')!.data, values.get('probe')!.data, out.get('y')!.data, out.get('grad.a')!.data];
    for (let i = 0; i < a.length; i++) expect(grad[i]).toBeCloseTo(y[i] === 0 ? 0 : probe[i] / (1 - 0.4), 12);
    expect(gradError(g, loss, params, values)).toBeLessThan(1e-6);
  });

  for (const [label, causal, withMask] of [['sdpa', false, false], ['sdpa causal', true, false], ['sdpa with a bool mask', false, true]] as const) {
    it(`${label} with dropout: gradients of q, k, v match finite differences with the rng value fixed`, () => {
      const { g, loss, params } = lossGraph({ q: [2, 3, 4], k: [2, 5, 4], v: [2, 5, 3] }, (op, p, rng) => {
        const mask = withMask ? [op('gt', [op('arange', [], { start: 0, step: 1, dtype: 'i32', shape: [5] }), 1])] : [];
        // Without a mask the rng follows v directly: the node names it (ir/operands.ts).
        return op('sdpa', [p.q, p.k, p.v, ...mask, rng], { isCausal: causal, scale: null, dropoutP: 0.3, seed: 8, ...(withMask ? {} : { optional: 'rng' }) });
      });
      expect(gradError(g, loss, params, feeds(g, 777))).toBeLessThan(1e-6);
    });
  }

  it('sdpa with dropout equals softmax -> dropout -> @ v with the same seed and rng', () => {
    const g = new Graph();
    const leaf = (name: string, shape: Shape) => g.add('param', [], { name, dtype: 'f32', shape });
    const [q, k, v] = [leaf('q', [2, 3, 6, 4]), leaf('k', [2, 3, 7, 4]), leaf('v', [2, 3, 7, 5])];
    const rng = g.add('rng', [], { name: 'rng', dtype: 'i32', shape: [] });
    const fused = g.add('sdpa', [q, k, v, rng], { isCausal: false, scale: 0.3, dropoutP: 0.25, seed: 4, optional: 'rng' });
    const scores = g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), 0.3]);
    const dropped = g.add('dropout', [g.add('softmax', [scores], { dim: -1 }), rng], { p: 0.25, training: true, seed: 4 });
    const chain = g.add('matmul', [dropped, v], { transposeA: false, transposeB: false });
    g.setOutputs([{ name: 'fused', node: fused }, { name: 'chain', node: chain }, { name: 'probs', node: dropped }]);
    const values = feeds(g, 99);
    const out = interpret(g, (n) => values.get(String(n.attrs.name))!, 'f64');
    const [a, b] = [out.get('fused')!.data, out.get('chain')!.data];
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(b[i], 12);
    expect(Array.from(out.get('probs')!.data).filter((x) => x === 0).length).toBeGreaterThan(10); // the mask did drop
  });

  it('gradients() of a model draws the same mask as the compiled forward after the same manualSeed', async () => {
    const model = Object.assign(new Dropper(), {
      forward(this: Dropper, x: Tensor) {
        return F.dropout(x.mul(this.w), P, true).sum();
      },
    });
    manualSeed(5);
    const y = Array.from(await ((await compile(model, { backend: 'cpu' })(ones())) as Tensor).data());
    expect(y).toHaveLength(1);
    manualSeed(5);
    const seed = mixDropoutSeed(0, nextSeed());
    manualSeed(5);
    const grad = Array.from((await gradients(model, [ones()])).get('w')!.data);
    expect(grad).toEqual(Array.from({ length: 32 }, (_, i) => (dropoutUniform(seed, i) < P ? 0 : 2)));
  });
});

describe('type rules for the rng operand', () => {
  const g = new Graph();
  const x = g.add('input', [], { name: 'x', dtype: 'f32', shape: [2, 3, 4] });
  const rng = g.add('rng', [], { name: 'rng', dtype: 'i32', shape: [] });
  const wide = g.add('input', [], { name: 'wide', dtype: 'i32', shape: [3, 3] });
  const scalar = g.add('input', [], { name: 'scalar', dtype: 'i32', shape: [] });
  const mask = g.add('input', [], { name: 'mask', dtype: 'bool', shape: [3, 3] });
  const sdpa = (inputs: Node[], attrs: Attrs = {}) => () => g.add('sdpa', [x, x, x, ...inputs], { isCausal: false, scale: null, dropoutP: 0.1, seed: 1, ...attrs });
  const fails = (f: () => unknown, message: RegExp) => expect(f).toThrow(message);

  const withRng = { optional: 'rng' }; // the rng without a mask before it: the node names its optional operands

  it('accepts sdpa(q, k, v, rng) and sdpa(q, k, v, mask, rng) with dropout', () => {
    expect(sdpa([rng], withRng)().type.shape).toEqual([2, 3, 4]);
    expect(sdpa([mask, rng])().type.shape).toEqual([2, 3, 4]);
  });

  it('refuses an rng without dropout, an rng of another type, a mask of another type, and operands the optional attr does not name', () => {
    fails(sdpa([rng], { dropoutP: 0, ...withRng }), /sdpa takes an rng operand only while its dropout is active/);
    fails(() => g.add('dropout', [x, rng], { p: 0.1, training: false }), /dropout takes an rng operand only while its dropout is active/);
    fails(() => g.add('dropout', [x, x], { p: 0.1, training: true, seed: 1 }), /dropout's rng operand must be i32\[\], got f32\[2,3,4\]/);
    fails(sdpa([wide]), /sdpa expects bool or f32 or f16, got i32\[3,3\]/);
    fails(sdpa([mask, mask]), /sdpa's rng operand must be i32\[\], got bool\[3,3\]/);
    fails(sdpa([rng, rng]), /sdpa expects bool or f32 or f16, got i32\[\]/);
    fails(sdpa([rng]), /sdpa expects bool or f32 or f16, got i32\[\]/); // unnamed, a fourth operand is the mask
    fails(sdpa([rng], { optional: 'mask,rng' }), /sdpa takes q, k, v, mask\?, rng\? \(3 to 5 operands\), got 4 with optional="mask,rng"/);
    expect(sdpa([scalar], withRng)().inputs).toHaveLength(4); // any i32[] value may serve as the rng
  });

  it('refuses an rng leaf that is not i32[]', () => {
    fails(() => g.add('rng', [], { name: 'rng2', dtype: 'f32', shape: [] }), /rng is i32\[\], got f32\[\]/);
    expect(() => g.add('rng', [], { name: 'rng3', dtype: 'i32', shape: [1] })).toThrow(KilnError);
  });
});

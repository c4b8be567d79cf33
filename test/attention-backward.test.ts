// The flash-attention backward (ir/ops/attention_backward.ts) on the CPU: its ops' references in f64
// against the composed attentionBackward graph (matmul, softmax, ...) run by the f64 interpreter,
// and against central finite differences of the forward; fully masked rows; that the rule builds
// only what is asked for; and a fused nanoGPT's backward without any [..., L, S] tensor.

import { describe, expect, it } from 'vitest';
import { traceModule } from '../compiler/tracer.ts';
import { fromHost } from '../index.ts';
import { differentiate } from '../ir/autograd.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { flashAttentionBackward } from '../ir/ops/attention_backward.ts';
import { backwardTiling, flashBackwardFits } from '../ir/ops/attention_backward.tiling.ts';
import { verifyGraph } from '../ir/verify.ts';
import { DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';
import { interpret } from '../runtime/interpreter.ts';
import { type BackwardCase, type CaseData, caseData, composedBackward, cpuGradients } from './attention-cases.ts';
import { asNumbers, centralDifferences, fixtureModel, loadFixture, relError } from './helpers.ts';

const GRADS = ['dq', 'dk', 'dv'] as const;

/** The largest relative error (max |a - b| / max |b|) over dq, dk, dv. */
function worstError(a: Map<string, HostTensor>, b: Map<string, HostTensor>): number {
  return Math.max(...GRADS.map((name) => relError(asNumbers(a.get(name)!.data), b.get(name)!.data)));
}

const base = { b: 1, h: 2, seed: 1 } as const;
// Cases the composed graph can check: no fully masked row (it gives NaN there, the forward zeros).
const composedCases: Record<string, BackwardCase> = {
  'non-causal, L = S, D = 16': { ...base, l: 9, s: 9, d: 16, causal: false, scaling: 'post' },
  'causal, D = 8': { ...base, l: 11, s: 11, d: 8, causal: true, scaling: 'post' },
  'causal with L < S, "pre_qk"': { ...base, l: 5, s: 13, d: 16, causal: true, scaling: 'pre_qk' },
  'causal with L > S': { ...base, l: 13, s: 6, d: 8, causal: true, scaling: 'post' },
  'bool mask [L, S], L != S, D = 1': { ...base, l: 7, s: 12, d: 1, causal: false, scaling: 'post', mask: 'bool', maskShape: [7, 12] },
  'additive mask broadcast over heads, D = 59': { ...base, b: 2, l: 6, s: 10, d: 59, causal: false, scaling: 'pre_qk', mask: 'additive', maskShape: [2, 1, 6, 10] },
  'bool mask [S] on every row, D = 64, Dv = 24': { ...base, l: 8, s: 5, d: 64, dv: 24, causal: false, scaling: 'post', mask: 'bool', maskShape: [5] },
  'causal with dropout 0.3 on the weights': { ...base, l: 12, s: 12, d: 8, causal: true, scaling: 'post', dropout: 0.3 },
  'additive mask and dropout 0.5, Dv != D': { ...base, l: 6, s: 9, d: 4, dv: 5, causal: false, scaling: 'pre_qk', mask: 'additive', maskShape: [6, 9], dropout: 0.5 },
};

describe('fused_attention_backward and attention_lse on the CPU', () => {
  for (const [name, c] of Object.entries(composedCases)) {
    it(`match the composed backward in f64: ${name}`, () => {
      const data = caseData(c);
      expect(worstError(cpuGradients(data, flashAttentionBackward), cpuGradients(data, composedBackward))).toBeLessThan(1e-12);
    });
  }

  it('give fully masked rows zero gradients and add nothing to k and v from them, as finite differences say', () => {
    for (const mask of ['bool', 'additive'] as const) {
      const c: BackwardCase = { b: 1, h: 2, l: 4, s: 5, d: 3, causal: false, scaling: 'post', mask, maskShape: [4, 5], blankRows: [1], seed: 3 };
      const data = caseData(c);
      const flash = cpuGradients(data, flashAttentionBackward);
      const dq = flash.get('dq')!.data;
      for (let h = 0; h < 2; h++) for (let x = 0; x < 3; x++) expect(dq[(h * 4 + 1) * 3 + x]).toBe(0);
      for (const name of GRADS) expect(flash.get(name)!.data.every((x) => Number.isFinite(x))).toBe(true);
      expect(finiteDifferenceError(data, flash)).toBeLessThan(1e-7);
    }
  });

  for (const [name, c] of Object.entries({
    'causal, "pre_qk", L != S': { b: 1, h: 1, l: 3, s: 4, d: 2, causal: true, scaling: 'pre_qk', seed: 5 },
    'bool mask, D = 1': { b: 2, h: 1, l: 3, s: 3, d: 1, causal: false, scaling: 'post', mask: 'bool', maskShape: [2, 1, 3, 3], seed: 6 },
    'additive mask with -inf, Dv != D': { b: 1, h: 1, l: 3, s: 4, d: 2, dv: 3, causal: false, scaling: 'post', mask: 'additive', maskShape: [3, 4], seed: 7 },
    'causal with dropout 0.4 (the mask fixed by seed and rng)': { b: 1, h: 2, l: 4, s: 4, d: 2, causal: true, scaling: 'post', dropout: 0.4, seed: 8 },
    'bool mask with dropout 0.25, L != S': { b: 1, h: 1, l: 3, s: 5, d: 3, causal: false, scaling: 'pre_qk', mask: 'bool', maskShape: [3, 5], dropout: 0.25, seed: 9 },
  } satisfies Record<string, BackwardCase>)) {
    it(`match central finite differences of the forward in f64: ${name}`, () => {
      const data = caseData(c);
      expect(finiteDifferenceError(data, cpuGradients(data, flashAttentionBackward))).toBeLessThan(1e-7);
    });
  }

  it('write the lse as its max and log-sum, base 2: [-inf, -inf] for a row that keeps no key', () => {
    const data = caseData({ b: 1, h: 1, l: 3, s: 4, d: 2, causal: false, scaling: 'post', mask: 'bool', maskShape: [3, 4], blankRows: [2], seed: 2 });
    const g = new Graph();
    const [q, k, mask] = (['q', 'k', 'mask'] as const).map((name) => g.add('input', [], { name, dtype: data[name]!.type.dtype, shape: [...data[name]!.type.shape] }));
    g.setOutputs([{ name: 'lse', node: g.add('attention_lse', [q, k, mask], { ...data.spec }) }]);
    const lse = interpret(g, (n) => data[String(n.attrs.name) as 'q']!, 'f64').get('lse')!.data;
    expect([lse[4], lse[5]]).toEqual([-Infinity, -Infinity]);
    expect(Array.from(lse.slice(0, 4)).every(Number.isFinite)).toBe(true);
    expect(lse[1]).toBeGreaterThanOrEqual(0); // log2 of a sum whose largest term is 1
  });

  // A query row with no key under the chain's semantics (docs/masked-rows.md): NaN where the composed
  // chain has NaN, its numbers elsewhere; and a finite fill's row of filled keys, a uniform softmax.
  const chainCases: Record<string, BackwardCase> = {
    'bool mask, emptyRows "nan": NaN in dv, dq of the row 0, dk untouched': { b: 1, h: 2, l: 5, s: 6, d: 4, causal: false, scaling: 'post', mask: 'bool', maskShape: [5, 6], blankRows: [1, 3], emptyRows: 'nan', seed: 4 },
    'additive -inf mask, emptyRows "nan": NaN in dq, dk and dv': { b: 1, h: 1, l: 4, s: 5, d: 3, causal: false, scaling: 'pre_qk', mask: 'additive', maskShape: [4, 5], blankRows: [2], emptyRows: 'nan', seed: 5 },
    'bool mask with dropout, emptyRows "nan": dropped weights are 0, not NaN': { b: 1, h: 2, l: 4, s: 7, d: 3, causal: false, scaling: 'post', mask: 'bool', maskShape: [4, 7], blankRows: [0], emptyRows: 'nan', dropout: 0.3, seed: 6 },
    'bool mask filled with -1e30': { b: 1, h: 2, l: 5, s: 6, d: 4, causal: false, scaling: 'post', mask: 'bool', maskShape: [5, 6], blankRows: [1], fill: -1e30, emptyRows: 'nan', seed: 7 },
    'bool mask filled with finfo.min': { b: 1, h: 1, l: 4, s: 9, d: 8, causal: false, scaling: 'post', mask: 'bool', maskShape: [4, 9], blankRows: [0, 3], fill: -3.4028234663852886e38, emptyRows: 'nan', seed: 8 },
    'additive mask of -1e30 on a whole row': { b: 1, h: 2, l: 4, s: 5, d: 3, causal: false, scaling: 'post', mask: 'additive', maskShape: [4, 5], blankRows: [2], blankValue: -1e30, emptyRows: 'nan', seed: 9 },
  };
  for (const [name, c] of Object.entries(chainCases)) {
    it(`give the composed chain's gradient on rows with no key: ${name}`, () => {
      const data = caseData(c);
      const [flash, composed] = [cpuGradients(data, flashAttentionBackward), cpuGradients(data, composedBackward)];
      let nans = 0;
      for (const g of GRADS) {
        const [got, want] = [asNumbers(flash.get(g)!.data), asNumbers(composed.get(g)!.data)];
        expect(Array.from(got, Number.isNaN), g).toEqual(Array.from(want, Number.isNaN));
        nans += want.filter(Number.isNaN).length;
        expect(relError(got.map((x) => (Number.isNaN(x) ? 0 : x)), want.map((x) => (Number.isNaN(x) ? 0 : x))), g).toBeLessThan(1e-12);
      }
      expect(nans > 0).toBe(c.fill === undefined && c.blankValue === undefined);
    });
  }
});

/**
 * The largest relative error of `grads` against central differences of loss = sum(fused_attention(q, k, v) * dout),
 * whose gradient with respect to the output is dout.
 */
function finiteDifferenceError(data: CaseData, grads: Map<string, HostTensor>): number {
  const g = new Graph();
  const values = new Map<string, HostTensor>([['q', data.q], ['k', data.k], ['v', data.v]].map(([name, t]) => [name as string, { type: (t as HostTensor).type, data: Float64Array.from((t as HostTensor).data) }]));
  if (data.mask) values.set('mask', data.mask);
  if (data.dropout) values.set('rng', data.dropout.rng);
  const inputs = [...values].map(([name, t]) => g.add('input', [], { name, dtype: t.type.dtype, shape: [...t.type.shape] }));
  g.setOutputs([{ name: 'out', node: g.add('fused_attention', inputs, { ...data.spec, ...data.dropout?.attrs, ...(data.dropout && !data.mask ? { optional: 'rng' } : {}) }) }]);
  const loss = () => {
    const out = interpret(g, (n) => values.get(String(n.attrs.name))!, 'f64').get('out')!.data;
    return asNumbers(out).reduce((acc, x, e) => acc + x * data.dout.data[e], 0);
  };
  const h = 1e-6;
  let worst = 0;
  for (const name of ['q', 'k', 'v'] as const) {
    const numeric = centralDifferences(values.get(name)!.data, loss, h);
    worst = Math.max(worst, relError(asNumbers(grads.get(`d${name}`)!.data), numeric));
  }
  return worst;
}

describe('the flash backward rule', () => {
  const nodeOps = (data: CaseData, needs: (i: number) => boolean) => {
    const g = new Graph();
    const [q, k, v] = (['q', 'k', 'v'] as const).map((name) => g.add('input', [], { name, dtype: 'f32', shape: [...data[name].type.shape] }));
    const node = g.add('fused_attention', [q, k, v], { ...data.spec });
    const grad = g.add('input', [], { name: 'dout', dtype: 'f32', shape: [...node.type.shape] });
    const before = g.nodes.length;
    flashAttentionBackward({ node, grad, add: (op, inputs, attrs = {}) => g.add(op, inputs, attrs), needs }, data.spec);
    return g.nodes.slice(before).map((n) => (n.op === 'fused_attention_backward' ? `${n.op}:${String(n.attrs.wrt)}` : n.op));
  };

  it('makes only the gradients asked for, and lse and delta once, dk and dv from one kernel', () => {
    const data = caseData({ b: 1, h: 1, l: 4, s: 4, d: 8, causal: true, scaling: 'post', seed: 1 });
    expect(nodeOps(data, (i) => i === 2)).toEqual(['attention_lse', 'mul', 'sum', 'fused_attention_backward:v']);
    expect(nodeOps(data, (i) => i !== 1)).toEqual(['attention_lse', 'mul', 'sum', 'fused_attention_backward:q', 'fused_attention_backward:v']);
    expect(nodeOps(data, (i) => i < 3)).toEqual(['attention_lse', 'mul', 'sum', 'fused_attention_backward:q', 'fused_attention_backward:kv', 'slice', 'slice']);
    expect(nodeOps(data, () => false)).toEqual([]);
  });

  it('falls back to the composed backward for head dims its kernels cannot hold at the default limits', () => {
    expect(flashBackwardFits(256, 256)).toBe(true);
    expect(flashBackwardFits(512, 512)).toBe(false);
    const data = caseData({ b: 1, h: 1, l: 2, s: 2, d: 512, causal: false, scaling: 'post', seed: 1 });
    const ops = nodeOps(data, () => true);
    expect(ops).toContain('softmax');
    expect(ops.some((op) => op.startsWith('fused_attention_backward'))).toBe(false);
  });

  it('tiles by the device: more streamed rows a tile at the H100\'s 48 KiB than at the default 16 KiB', () => {
    const h100 = { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024 };
    for (const mode of ['lse', 'q', 'k', 'v', 'kv'] as const) {
      for (let d = 1; d <= 256; d++) {
        const t = backwardTiling(mode, d, d)!;
        expect(t.workgroupBytes).toBeLessThanOrEqual(16384);
        expect(t.workgroupSize).toBeLessThanOrEqual(256);
        expect(backwardTiling(mode, d, d, h100)!.tile).toBeGreaterThanOrEqual(t.tile);
      }
    }
    expect(backwardTiling('kv', 128, 128)!.tile).toBe(4);
    expect(backwardTiling('kv', 128, 128, h100)!.tile).toBe(8);
    // What the driver unrolls caps the tile, not the memory: kv reads and updates 32 vec4s a row at D = 64.
    expect(backwardTiling('kv', 64, 64, h100)!.tile).toBe(8);
  });
});

describe('a fused nanoGPT differentiates without any [..., T, T] tensor in its backward', async () => {
  const fx = await loadFixture();
  const [idx, targets] = [fromHost(fx.expected.get('idx')!), fromHost(fx.expected.get('targets')!)];

  it('and its gradients match the unfused graph\'s composed ones', async () => {
    const model = await fixtureModel({ flash: false });
    const { graph } = traceModule(model, [idx, targets]);
    const buffers = new Map([...model.namedBuffers()].map(([name, t]) => [name, t.host!]));
    const fused = runPasses(graph, DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered'), { bufferValue: (name) => buffers.get(name) }).graph;
    expect(fused.nodes.filter((n) => n.op === 'fused_attention').length).toBe(Number(fx.config.n_layer));
    const grads = (g: Graph) => {
      const loss = g.outputs.find((o) => o.name === 'loss')!.node;
      const withGrads = differentiate(g, loss, g.nodesOf('param'));
      verifyGraph(withGrads, 'autograd');
      return withGrads;
    };
    const flash = grads(fused);
    const t = Number(idx.shape.at(-1));
    const backward = flash.nodes.slice(fused.nodes.length);
    const square = backward.filter((n) => n.type.shape.length >= 2 && n.type.shape.at(-1) === t && n.type.shape.at(-2) === t);
    expect(square.map((n) => `%${n.id} ${n.op}`)).toEqual([]);
    expect(backward.filter((n) => n.op === 'fused_attention_backward').length).toBe(2 * Number(fx.config.n_layer)); // dq, and dk with dv

    const feed = (node: Node): HostTensor => {
      const name = String(node.attrs.name);
      if (node.op === 'input') return fx.expected.get(name)!;
      return (node.op === 'param' ? fx.weights.get(name) : buffers.get(name))!;
    };
    const [ours, composed] = [flash, grads(graph)].map((g) => interpret(g, feed, 'f64'));
    const names = [...ours.keys()].filter((k) => k.startsWith('grad.'));
    expect(names.length).toBe(graph.nodesOf('param').length);
    for (const name of names) expect(relError(asNumbers(ours.get(name)!.data), composed.get(name)!.data), name).toBeLessThan(1e-12);
  });
});

// The attention backward as an autotuned choice (compiler/autotune-attention.ts) on SwiftShader: both
// candidates' gradients against the f64 reference, the pick is the faster of the two as measured, and a
// training step compiled with autotune carries the pick into its fused_attention's meta and backward.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lowerGraph } from '../codegen/index.ts';
import { ATTENTION_BACKWARDS, attentionBackwardPicks, measureAttentionBackward } from '../compiler/autotune-attention.ts';
import { differentiate } from '../ir/autograd.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import { DEFAULT_PIPELINE } from '../passes/index.ts';
import { runPasses } from '../passes/manager.ts';
import { interpret } from '../runtime/interpreter.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import type { Tensor } from '../index.ts';
import { tempAutotuneCache } from './autotune-cache.ts';
import { relError, rng } from './helpers.ts';

let cache: ReturnType<typeof tempAutotuneCache>;
beforeAll(() => (cache = tempAutotuneCache()));
afterAll(async () => {
  cache.remove();
  await releaseDevice();
});

/** A causal fused_attention over [2, 2, 32, 16] q, k, v, with its backward chosen by `backward`. */
function attentionGraph(backward?: string) {
  const g = new Graph();
  const [q, k, v] = ['q', 'k', 'v'].map((name) => g.add('input', [], { name, dtype: 'f32', shape: [2, 2, 32, 16] }));
  const y = g.add('fused_attention', [q, k, v], { causal: true, scale: 0.25, scaling: 'post' }, { file: 'model.ts', line: 91, col: 13 }, undefined, backward ? { backward } : undefined);
  const gradOut = g.add('input', [], { name: 'grad_out', dtype: 'f32', shape: [2, 2, 32, 16] });
  const loss = g.add('sum', [g.add('mul', [y, gradOut])], { dims: [0, 1, 2, 3], keepdim: false });
  g.setOutputs([{ name: 'loss', node: loss }]);
  return { g, y, loss, wrt: [q, k, v], leaves: [q, k, v, gradOut] };
}

describe('the attention backward, flash or composed, chosen by measurement', () => {
  const r = rng(11);
  const values = [0, 1, 2, 3].map(() => Float32Array.from({ length: 2 * 2 * 32 * 16 }, () => r() * 2 - 1));

  it('gives dq, dk and dv within 2e-5 of the f64 reference with either backward', async () => {
    const kdev = await getDevice();
    const reference = (() => {
      const { g, loss, wrt, leaves } = attentionGraph('composed');
      const dg = differentiate(g, loss, wrt);
      return interpret(dg, (n) => ({ type: n.type, data: values[leaves.indexOf(n)] }), 'f64');
    })();
    for (const backward of ATTENTION_BACKWARDS) {
      const { g, loss, wrt, leaves } = attentionGraph(backward);
      const step = runPasses(differentiate(g, loss, wrt), DEFAULT_PIPELINE, { passes: { fuse_attention: false } }).graph;
      // The flash backward has fused_attention_backward kernels; the composed one none.
      expect(step.nodesOf('fused_attention_backward').length > 0, backward).toBe(backward === 'flash');
      const exec = await Executor.create(kdev, lowerGraph(step, kdev.limits));
      const byName = new Map(leaves.map((n, i) => [String(n.attrs.name), values[i]]));
      const feed = (n: Node): HostTensor => step.constants.get(String(n.attrs.name)) ?? { type: n.type, data: byName.get(String(n.attrs.name))! };
      const feeds = new Map<Node, HostTensor>(step.nodes.filter((n) => n.op === 'input' || n.op === 'constant').map((n) => [n, feed(n)]));
      const outs = exec.run(feeds);
      for (const name of ['grad.q', 'grad.k', 'grad.v']) {
        const node = step.outputs.find((o) => o.name === name)!.node;
        // f32 kernels against f64: the tolerance of attention-backward.gpu.test.ts.
        expect(relError(await readback(kdev, outs.get(name)!, node.type), reference.get(name)!.data), `${backward} ${name}`).toBeLessThan(2e-5);
      }
      exec.destroy();
    }
  });

  it('picks the faster of the two as measured, and a training graph\'s attention takes the pick into its meta', async () => {
    const kdev = await getDevice();
    const { g, y } = attentionGraph();
    const pick = (await measureAttentionBackward(kdev, y))!;
    expect(Object.keys(pick.ns)).toEqual(['flash', 'composed']);
    expect(pick.ns[pick.choice]).toBe(Math.min(pick.ns.flash, pick.ns.composed));
    expect(pick.rule).toBe('flash');
    const picks = await attentionBackwardPicks(g);
    expect([...picks.values()].map((p) => p.from)).toEqual(['measured']);
  });

  it('compileTrainStep({ autotune: true }) differentiates each attention with its measured backward', async () => {
    const { AdamW, F, Module, Parameter, compileTrainStep, fromHost } = await import('../index.ts');
    const r2 = rng(3);
    const param = () => new Parameter({ type: { dtype: 'f32', shape: [1, 2, 32, 16] }, data: Float32Array.from({ length: 1024 }, () => r2() - 0.5) });
    // Attention alone (no linear layers): the step has no matmul whose tilings autotune would also time.
    class Attention extends Module {
      q = param();
      k = param();
      v = param();
      forward(scale: Tensor) {
        return F.scaledDotProductAttention(this.q.mul(scale), this.k, this.v, { isCausal: true }).sum();
      }
    }
    const model = new Attention();
    const step = compileTrainStep(model, new AdamW(model), { backend: 'webgpu', autotune: true });
    const scale = fromHost({ type: { dtype: 'f32', shape: [1] }, data: Float32Array.of(1) });
    const c = await step.lower(scale);
    const attention = c.step.graph.nodesOf('fused_attention');
    expect(attention).toHaveLength(1);
    const chosen = attention[0].meta?.backward as string;
    expect(ATTENTION_BACKWARDS).toContain(chosen);
    expect(c.step.graph.nodesOf('fused_attention_backward').length > 0).toBe(chosen === 'flash');
    const { loss } = await step(scale);
    expect(Number.isFinite((await loss.data())[0])).toBe(true);
  });
});

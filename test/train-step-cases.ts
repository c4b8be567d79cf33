// The compiled training step (compiler/train-step.ts) against the host path it replaces, on one backend:
// shared by train-step.test.ts (cpu) and train-step.gpu.test.ts (webgpu). The host path is gradients()
// on the traced, unfused graph, clipGradNorm and AdamW.step on the host in f64, step by step.

import { expect, it } from 'vitest';
import type { BackendName } from '../compiler/backends.ts';
import { Tensor, manualSeed } from '../index.ts';
import type { Graph } from '../ir/graph.ts';
import { lossAndGradients } from '../compiler/autograd.ts';
import { AdamW, clipGradNorm } from '../compiler/optim.ts';
import { compileTrainStep } from '../compiler/train-step.ts';
import createModel, { type GPT } from '../examples/nanogpt/model.ts';
import { relError } from './helpers.ts';

export const config = { n_layer: 2, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 32, bias: true, dropout: 0, flash: false };
const B = 2;
const T = 12;

export function batch(step: number): [Tensor, Tensor] {
  const ints = (salt: number) => Int32Array.from({ length: B * T }, (_, i) => (i * i * 7 + i * salt + step * 13) % config.vocab_size);
  const t = (data: Int32Array) => new Tensor({ dtype: 'i32', shape: [B, T] }, { host: { type: { dtype: 'i32', shape: [B, T] }, data } });
  return [t(ints(3)), t(ints(5))];
}

export function fresh(): { model: GPT; optimizer: AdamW } {
  manualSeed(42);
  const model = createModel(config);
  return { model, optimizer: new AdamW(model, { lr: 1e-2, betas: [0.9, 0.99], weightDecay: 0.1 }) };
}

/** Nodes whose value is attention-score shaped, [B, H, T, T]. */
export const scoreShaped = (graph: Graph) => graph.nodes.filter((n) => n.type.shape.length === 4 && n.type.shape[2] === T && n.type.shape[3] === T);

const LRS = [1e-2, 6e-3, 3e-3];

const initial = new Map(fresh().model.namedParameters().map(([n, p]) => [n, p.host!.data as Float32Array]));
const update = (name: string, p: ArrayLike<number>) => Float64Array.from(p, (x, i) => x - initial.get(name)![i]);

async function hostRun(): Promise<{ losses: number[]; params: Map<string, Float32Array> }> {
  const { model, optimizer } = fresh();
  const losses: number[] = [];
  for (const [k, lr] of LRS.entries()) {
    optimizer.lr = lr;
    const { loss, grads } = await lossAndGradients(model, batch(k));
    clipGradNorm(grads, 0.5);
    optimizer.step(grads);
    losses.push(loss);
  }
  return { losses, params: new Map(model.namedParameters().map(([n, p]) => [n, p.host!.data as Float32Array])) };
}

/** Three AdamW steps with clipping on `backend`, against the host path. */
export function matchesHostPath(backend: BackendName): void {
  it(`on ${backend}: three AdamW steps with clipping match the host path`, async () => {
    const reference = await hostRun();
    const { model, optimizer } = fresh();
    const step = compileTrainStep(model, optimizer, { backend, gradClip: 0.5 });
    const losses: number[] = [];
    for (const [k, lr] of LRS.entries()) {
      optimizer.lr = lr;
      const { loss } = await step(...batch(k));
      losses.push(await loss.item());
    }
    // On the GPU the parameters stay there between steps: no host copy until sync().
    if (backend === 'webgpu') expect(model.namedParameters().every(([, p]) => p.host === undefined)).toBe(true);
    await step.sync();
    let worst = 0;
    for (const [name, p] of model.namedParameters()) {
      worst = Math.max(worst, relError(update(name, p.host!.data), update(name, reference.params.get(name)!)));
    }
    console.log(`${backend}: losses ${losses.join(', ')} (host ${reference.losses.join(', ')}); worst update error ${worst.toExponential(2)}`);
    // The losses differ by f32 rounding only (fused attention against the unfused chain).
    expect(relError(losses, reference.losses)).toBeLessThan(1e-5);
    // AdamW's update m / sqrt(v) is scale-free: a gradient element 1000x below its tensor's largest
    // carries the f32 noise of the largest into its update at 1e-3. Measured 9.3e-5 (cpu), 2.4e-4 (webgpu).
    expect(worst).toBeLessThan(1e-3);
    expect(step.last!.forward.graph.nodesOf('fused_attention').length).toBe(config.n_layer);
    // Forward and backward attention both ran without a [B, H, T, T] tensor.
    expect(scoreShaped(step.last!.step.graph)).toEqual([]);
    expect(optimizer.stepCount).toBe(LRS.length);
  });
}

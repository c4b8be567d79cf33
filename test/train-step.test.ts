// The compiled training step (compiler/train-step.ts) against the host path it replaces, on the cpu,
// and its options; on webgpu: train-step.gpu.test.ts. See train-step-cases.ts.

import { describe, expect, it } from 'vitest';
import { manualSeed } from '../index.ts';
import { lowerGraph } from '../codegen/index.ts';
import { AdamW } from '../compiler/optim.ts';
import { compileTrainStep } from '../compiler/train-step.ts';
import createModel from '../examples/nanogpt/model.ts';
import { batch, config, fresh, matchesHostPath, scoreShaped } from './train-step-cases.ts';

describe('compileTrainStep', () => {
  matchesHostPath('cpu');
});

describe('compileTrainStep options', () => {
  it('trains the unfused graph with fuse_attention off, and says what forward() must return', async () => {
    const { model, optimizer } = fresh();
    const step = compileTrainStep(model, optimizer, { backend: 'cpu', passes: { fuse_attention: false } });
    await step(...batch(0));
    expect(step.last!.step.graph.nodesOf('fused_attention')).toEqual([]);
    expect(scoreShaped(step.last!.step.graph).filter((n) => n.op === 'softmax').length).toBe(config.n_layer);
    const [x] = batch(0);
    await expect(step(x)).rejects.toThrow(/KILN_E011 .*model.ts:\d+:\d+: compileTrainStep needs a 0-d f32 loss; forward\(\) returned logits as f32\[2,1,32\]/);
    expect(() => compileTrainStep(model, optimizer, { passes: { fuse_atention: false } })).toThrow(/unknown pass "fuse_atention"/);
    // A lowered-stage pass (run on the whole step, not on the forward alone) can be switched too.
    const unfusedElementwise = compileTrainStep(model, optimizer, { backend: 'cpu', passes: { fuse_elementwise: false } });
    await unfusedElementwise(...batch(0));
    expect(unfusedElementwise.last!.step.graph.nodesOf('fused_elementwise')).toEqual([]);
    expect(step.last!.step.graph.nodesOf('fused_elementwise').length).toBeGreaterThan(0);
    // Guards as compile()'s: the same arguments in eval mode, or with a buffer given new values, compile anew.
    const before = step.last!;
    await step(...batch(1));
    expect(step.last).toBe(before);
    model.eval();
    await step(...batch(1));
    expect(step.last).not.toBe(before);
    model.train();
    const mask = model.namedBuffers()[0][1];
    mask.host = { ...mask.host!, data: mask.host!.data.slice() }; // new data, the same values: the compilation holds
    await step(...batch(1));
    expect(step.last).toBe(before);
    mask.host!.data[1] = 1; // a key above the diagonal
    await step(...batch(1));
    expect(step.last).not.toBe(before);
  });

  it('compiles the manual-attention and SDPA models, dropout included, to the same kernels', async () => {
    const keys = [];
    for (const flash of [false, true]) {
      manualSeed(42);
      const model = createModel({ ...config, flash, dropout: 0.2 });
      const step = compileTrainStep(model, new AdamW(model), { backend: 'cpu', gradClip: 1 });
      const c = await step.lower(...batch(0));
      expect(c.step.graph.nodesOf('fused_attention')).toHaveLength(config.n_layer);
      keys.push(lowerGraph(c.step.graph).kernels.map((k) => k.key));
    }
    expect(keys[1]).toEqual(keys[0]);
  });
});

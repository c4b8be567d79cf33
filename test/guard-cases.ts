// Compiled code is never stale: each way of changing a model's state after compile(), on one backend.
// Shared by compile-guards.test.ts (cpu) and compile-guards.gpu.test.ts (webgpu). After every change
// the compiled model must give what eager gives, within the nanoGPT tests' 1e-5 (fused vs unfused
// attention in f32 over a tiny model: reassociation only).

import { describe, expect, it } from 'vitest';
import type { BackendName } from '../compiler/backends.ts';
import { AdamW, KilnError, Parameter, type Tensor, compile, compileTrainStep, manualSeed, noGrad, random, tensor, useBackend } from '../index.ts';
import createModel, { type GPT, type GPTConfig } from '../examples/nanogpt/model.ts';
import { relError } from './helpers.ts';

export const GUARD_TOL = 1e-5;
const SMALL: Partial<GPTConfig> = { block_size: 8, vocab_size: 11, n_layer: 2, n_head: 2, n_embd: 8, dropout: 0, bias: true, flash: false };

export function smallGPT(): GPT {
  manualSeed(3);
  return createModel(SMALL).eval();
}

export function tokens(b: number, t: number): Tensor {
  return tensor(Array.from({ length: b * t }, () => Math.floor(random() * 11)), [b, t], 'i32');
}

/** The lower triangle of an n x n mask as f32[1,1,n,n], with `edit` applied to its data. */
export function maskOf(n: number, edit: (data: Float32Array) => void = () => {}): Tensor {
  const data = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) data[i * n + j] = 1;
  edit(data);
  return tensor(Array.from(data), [1, 1, n, n], 'f32');
}

/** A mask that is not causal: one key above the diagonal kept. */
export const leakyMask = (n: number) => maskOf(n, (d) => (d[1 * n + 5] = 1));

/** Eager logits on the cpu backend: the reference every compiled call is held to. */
export async function eagerLogits(model: GPT, idx: Tensor): Promise<Float32Array> {
  await useBackend('cpu');
  return (await noGrad(() => model.forward(idx)).logits.data()) as Float32Array;
}

/** The attention kernels the compiled model's last compilation chose, in order. */
export function kernels(forward: { stage(name: 'fused'): { nodesOf(op: string): { meta?: Record<string, unknown> }[] } | undefined }): string[] {
  return (forward.stage('fused')?.nodesOf('fused_attention') ?? []).map((n) => String(n.meta?.kernel));
}

export function guardCases(backend: BackendName): void {
  async function check(model: GPT, forward: ReturnType<typeof compile<GPT>>, idx: Tensor): Promise<void> {
    const { logits } = await forward(idx);
    expect(relError(await logits.data(), await eagerLogits(model, idx))).toBeLessThan(GUARD_TOL);
  }

  describe(`compiled nanoGPT on ${backend} follows every change to its state`, () => {
    const idx = tokens(2, 8);

    it('a write into the mask buffer through its host data retraces and drops the causal kernel', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      expect(kernels(forward)).toEqual(['flash_causal', 'flash_causal']);
      model.transformer.h.at(0).attn.bias.host!.data[1 * 8 + 5] = 1;
      await check(model, forward, idx);
      expect(forward.stats.recompiles).toBe(1);
      expect(kernels(forward)).toEqual(['flash_masked', 'flash_causal']);
    });

    it('registerBuffer with a new mask retraces with the new mask', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      model.transformer.h.at(1).attn.registerBuffer('bias', leakyMask(8));
      await check(model, forward, idx);
      expect(kernels(forward)).toEqual(['flash_causal', 'flash_masked']);
    });

    it('assigning a new tensor to the buffer attribute retraces, and assigning the causal one back reuses the first compilation', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const attn = model.transformer.h.at(0).attn;
      const causal = attn.bias;
      attn.bias = leakyMask(8);
      await check(model, forward, idx);
      expect(kernels(forward)[0]).toBe('flash_masked');
      attn.bias = causal;
      await check(model, forward, idx);
      expect(kernels(forward)[0]).toBe('flash_causal');
      expect(forward.stats.traces).toBe(2);
    });

    it('reading the mask, or writing the same values, does not retrace', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const bias = model.transformer.h.at(0).attn.bias;
      const data = bias.host!.data;
      data[0] = data[0];
      await check(model, forward, idx);
      expect(forward.stats.traces).toBe(1);
    });

    it('a replaced Parameter is fed as it is now, without a retrace', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const fc = model.transformer.h.at(0).mlp.c_fc;
      fc.weight = new Parameter({ type: fc.weight.type, data: Float32Array.from(fc.weight.host!.data, (x) => -2 * x) });
      await check(model, forward, idx);
      expect(forward.stats.traces).toBe(1);
    });

    it('a Parameter of a new shape retraces', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const wpe = model.transformer.wpe;
      wpe.weight = new Parameter({ type: { dtype: 'f32', shape: [16, 8] }, data: Float32Array.from({ length: 128 }, () => random() - 0.5) });
      await check(model, forward, idx);
      expect(forward.stats.traces).toBe(2);
    });

    it('an in-place edit of a Parameter through its host data is used at the next call', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const w = model.lm_head.weight.host!.data;
      for (let i = 0; i < w.length; i += 3) w[i] += 0.5;
      await check(model, forward, idx);
    });

    it('loadStateDict with other weights and a non-causal mask is followed', async () => {
      const model = smallGPT();
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      const other = createModel(SMALL);
      const state = other.stateDict();
      state.set('transformer.h.1.attn.bias', leakyMask(8).readHost()!);
      model.loadStateDict(state);
      await check(model, forward, idx);
      expect(kernels(forward)).toEqual(['flash_causal', 'flash_masked']);
    });

    it('a model built after useBackend("webgpu") still gets the causal kernel', async () => {
      await useBackend(backend);
      let model: GPT;
      try {
        model = smallGPT();
      } finally {
        await useBackend('cpu');
      }
      const forward = compile(model, { backend });
      await check(model, forward, idx);
      expect(kernels(forward)).toEqual(['flash_causal', 'flash_causal']);
    });

    it('a training step follows a mask write and a loaded state, and refuses a replaced parameter', async () => {
      const model = smallGPT().train();
      const opt = new AdamW(model, { lr: 1e-3 });
      const step = compileTrainStep(model, opt, { backend });
      const targets = tokens(2, 8);
      await step(idx, targets);
      model.transformer.h.at(0).attn.bias.host!.data[1 * 8 + 5] = 1;
      await step(idx, targets);
      expect(step.last!.forward.graph.nodesOf('fused_attention').map((n) => String(n.meta?.kernel))).toEqual(['flash_masked', 'flash_causal']);
      // The loss the step reports is the forward on the state as it is before the step.
      await step.sync();
      const fresh = createModel(SMALL).train();
      model.loadStateDict(fresh.stateDict());
      await useBackend('cpu');
      const want = await noGrad(() => model.forward(idx, targets)).loss!.item();
      const { loss } = await step(idx, targets);
      expect(Math.abs((await loss.item()) - want)).toBeLessThan(GUARD_TOL * Math.abs(want));
      const fc = model.transformer.h.at(0).mlp.c_fc;
      fc.weight = new Parameter({ type: fc.weight.type, data: new Float32Array(fc.weight.numel()) });
      await expect(step(idx, targets)).rejects.toThrow(KilnError);
      await expect(step(idx, targets)).rejects.toThrow(/KILN_E011 compileTrainStep: parameter transformer\.h\.0\.mlp\.c_fc\.weight was replaced/);
    });
  });
}

// Mixed-precision training in the compiled step (compiler/train-step.ts) on the cpu backend: GradScaler's
// state machine as torch.amp.GradScaler runs it, unscaling before the clip, a forced f16 overflow skipped
// without a trace, and its two kernels' CPU references. The issue's 200-iteration run: amp.gpu.test.ts.

import { describe, expect, it } from 'vitest';
import { AdamW, GradScaler, Graph, KilnError, Module, type Parameter, type Tensor, compileTrainStep, interpret, nn, tensor } from '../index.ts';
import { F32_MAX } from '../ir/dtypes.ts';
import type { GPT } from '../examples/nanogpt/model.ts';
import type { Node } from '../ir/graph.ts';
import { chunkRows } from '../passes/linear-ce.ts';
import { batch, config, fresh } from './train-step-cases.ts';

/** A 2-D weight and a bias whose loss is mean((x W^T + b)^2): an inf or NaN in x makes every gradient non-finite. */
class Probe extends Module {
  weight: Parameter = nn.parameter([3, 4], (i) => Math.sin(i + 1) / 2);
  bias: Parameter = nn.parameter([3], (i) => 0.1 * (i - 1));
  forward(x: Tensor): Tensor {
    return x.matmul(this.weight.transpose(0, 1)).add(this.bias).pow(2).mean();
  }
}

const probeBatch = (k: number, poison?: number) => tensor(Array.from({ length: 8 }, (_, i) => (i === 5 && poison !== undefined ? poison : Math.cos(i * 0.7 + k))), [2, 4]);

/** torch's _amp_update_scale_ (aten/src/ATen/native/cuda/AmpKernels.cu), written out: the scale and tracker after one step. */
function torchUpdateScale(scale: number, tracker: number, foundInf: boolean, growth: number, backoff: number, interval: number): [number, number] {
  if (foundInf) return [scale * backoff, 0];
  const successful = tracker + 1;
  if (successful === interval) {
    const grown = Math.fround(scale * growth);
    return [Number.isFinite(grown) ? grown : scale, 0];
  }
  return [scale, successful];
}

/** Everything a step may change: parameters, moments, step count (copies of the host values). */
function snapshot(model: Module, optimizer: AdamW): number[][] {
  const params = model.namedParameters();
  const moments = params.flatMap(([name]) => [optimizer.stateOf(name).expAvg, optimizer.stateOf(name).expAvgSq]);
  return [...params.map(([, p]) => p as Tensor), ...moments].map((t) => Array.from(t.readHost()!.data)).concat([[optimizer.stepCount]]);
}

const scalarOf = async (t: Tensor | undefined) => (await t!.data())[0];

describe('GradScaler in the compiled training step (cpu)', () => {
  it('skips a step with an inf or NaN gradient (parameters, moments and step count unchanged, scale halved) and grows the scale after growth_interval good steps, as torch does', async () => {
    const model = new Probe();
    const optimizer = new AdamW(model, { lr: 0.05 });
    const scaler = new GradScaler({ growthInterval: 3 });
    const step = compileTrainStep(model, optimizer, { backend: 'cpu', gradClip: 1, scaler });
    expect(step.scaler).toBe(scaler);
    // The same run without a scaler, given only the good batches: what the scaled run must equal.
    const plainModel = new Probe();
    const plainOptimizer = new AdamW(plainModel, { lr: 0.05 });
    const plain = compileTrainStep(plainModel, plainOptimizer, { backend: 'cpu', gradClip: 1 });

    const poisons = [undefined, undefined, Infinity, undefined, undefined, undefined, NaN, undefined, -Infinity];
    let [scale, tracker] = [2 ** 16, 0];
    const scales: number[] = [];
    for (const [k, poison] of poisons.entries()) {
      const before = snapshot(model, optimizer);
      const r = await step(probeBatch(k, poison));
      const bad = poison !== undefined;
      [scale, tracker] = torchUpdateScale(scale, tracker, bad, 2, 0.5, 3);
      expect(await scalarOf(r.skipped)).toBe(bad ? 1 : 0);
      expect(await scalarOf(r.scale)).toBe(scale);
      scales.push(scale);
      expect(scaler.growthTracker.readHost()!.data[0]).toBe(tracker);
      if (bad) {
        expect(snapshot(model, optimizer)).toEqual(before);
        continue;
      }
      await plain(probeBatch(k));
      // The scale is a power of two, which commutes with every rounding: the scaled, unscaled and clipped step is the plain one, bit for bit.
      expect(snapshot(model, optimizer)).toEqual(snapshot(plainModel, plainOptimizer));
    }
    // Halved at each bad batch, doubled after the three good ones at k = 3, 4, 5.
    expect(scales.map(Math.log2)).toEqual([16, 16, 15, 15, 15, 16, 15, 15, 14]);
    expect(optimizer.stepCount).toBe(6);
    expect(scaler.stateMetadata()).toEqual({ 'amp.scale': String(2 ** 14), 'amp.growth_tracker': '0' });
  });

  it('unscales before clipping: with the scaler on and no overflow, three clipped nanoGPT steps equal the unscaled ones bit for bit', async () => {
    const runs = [];
    for (const scaler of [new GradScaler(), false as const]) {
      const { model, optimizer } = fresh();
      const step = compileTrainStep(model, optimizer, { backend: 'cpu', gradClip: 0.5, scaler });
      const norms = [];
      for (const k of [0, 1, 2]) {
        const r = await step(...batch(k));
        norms.push(await r.gradNorm.item());
        if (scaler) expect(await scalarOf(r.skipped)).toBe(0);
      }
      runs.push({ norms, state: snapshot(model, optimizer) });
    }
    // The norms are the unscaled gradients' and above 0.5, so the clip is at work: clipping the scaled
    // gradients (a norm 2^16 times larger) would give another update.
    expect(Math.min(...runs[1].norms)).toBeGreaterThan(1);
    expect(runs[0].norms).toEqual(runs[1].norms);
    expect(runs[0].state).toEqual(runs[1].state);
  });

  describe('under autocast f16', () => {
    /** Steps on one batch from a fresh nanoGPT: each step's skipped flag and scale after it. */
    async function run(initScale: number, steps: number): Promise<{ model: GPT; optimizer: AdamW; skipped: number[]; scales: number[]; graphF16Matmuls: number; graphF32Matmuls: number }> {
      const { model, optimizer } = fresh();
      const step = compileTrainStep(model, optimizer, { backend: 'cpu', gradClip: 1, autocast: 'f16', scaler: new GradScaler({ initScale }) });
      const [skipped, scales] = [[] as number[], [] as number[]];
      for (let k = 0; k < steps; k++) {
        const r = await step(...batch(0));
        skipped.push(await scalarOf(r.skipped));
        scales.push(await scalarOf(r.scale));
      }
      // Each product's dtype: a matmul's own, or, where its elementwise chain runs as its epilogue (passes/matmul-epilogue.ts), its operands'.
      const products = step.last!.step.graph.nodes.flatMap((n) => (n.op === 'matmul' ? [n.type.dtype] : n.op === 'matmul_epilogue' ? [(n.inputs[0] as Node).type.dtype] : []));
      const graphF16Matmuls = products.filter((d) => d === 'f16').length;
      const graphF32Matmuls = products.filter((d) => d === 'f32').length;
      return { model, optimizer, skipped, scales, graphF16Matmuls, graphF32Matmuls };
    }

    it('skips a forced overflow (initial scale 2^40: the f16 gradients overflow), halving the scale until they fit, and then trains as if it had started at that scale', async () => {
      const forced = await run(2 ** 40, 26);
      const good = forced.skipped.indexOf(0);
      // Each skip halves the scale, the first good step finds it low enough, and no later step overflows.
      expect(good).toBeGreaterThan(10); // measured 22: 2^18 is the first scale whose gradients fit in f16
      expect(forced.skipped).toEqual(forced.skipped.map((_, k) => (k < good ? 1 : 0)));
      expect(forced.scales.slice(0, good)).toEqual(forced.scales.slice(0, good).map((_, k) => 2 ** (39 - k)));
      expect(forced.optimizer.stepCount).toBe(26 - good);
      const fitting = forced.scales[good - 1];
      const direct = await run(fitting, 26 - good);
      expect(direct.skipped.every((s) => s === 0)).toBe(true);
      // The skipped steps changed nothing but the scale: parameters, moments and step count bit for bit.
      expect(snapshot(forced.model, forced.optimizer)).toEqual(snapshot(direct.model, direct.optimizer));
      // The master weights stayed f32; the backward ran in f16 too: every matmul of the step is f16, none f32.
      // Each linear layer has the forward's one (8: four a block) and the backward's two (input and weight
      // gradients). lm_head and the loss run as fused_linear_cross_entropy in chunks of rows (passes/linear-ce.ts),
      // each chunk's products in f16 as the unfused autocast graph's: the logits in the forward, and in the
      // backward the logits again (recomputed, not stored), dx and dw; the unfused graph had those 3 once (27).
      expect(forced.model.namedParameters().every(([, p]) => p.dtype === 'f32')).toBe(true);
      const [B, T] = batch(0)[0].shape;
      const chunks = Math.ceil((B * T) / chunkRows(B * T, config.vocab_size, config.n_embd));
      expect(chunks).toBe(2);
      expect([forced.graphF16Matmuls, forced.graphF32Matmuls]).toEqual([3 * 8 + 4 * chunks, 0]);
    });
  });
});

describe('GradScaler', () => {
  it('refuses factors torch refuses, and a growth interval the f32 tracker cannot count', () => {
    const bad = [{ growthFactor: 1 }, { backoffFactor: 1 }, { backoffFactor: 0 }, { growthInterval: 2.5 }, { growthInterval: 0 }, { growthInterval: 2 ** 25 }, { initScale: 0 }, { initScale: Infinity }, { initScale: 2 ** 128 }];
    for (const opts of bad) expect(() => new GradScaler(opts), JSON.stringify(opts)).toThrow(KilnError);
    expect(() => new GradScaler({ growthFactor: 0.5 })).toThrow(/KILN_E011 GradScaler: growthFactor must be above 1, got 0.5/);
  });

  it('saves its scale and growth tracker as metadata and restores them, refusing bad values and changing nothing then', async () => {
    const a = new GradScaler({ initScale: 1024, growthInterval: 10 });
    a.growthTracker.host = { type: a.growthTracker.type, data: Float32Array.of(7) };
    const saved = a.stateMetadata();
    expect(saved).toEqual({ 'amp.scale': '1024', 'amp.growth_tracker': '7' });
    const b = new GradScaler({ growthInterval: 10 });
    b.loadState(saved);
    expect(await b.getScale()).toBe(1024);
    expect(b.growthTracker.readHost()!.data[0]).toBe(7);
    const c = new GradScaler({ growthInterval: 10 });
    expect(() => c.loadState({ ...saved, 'amp.growth_tracker': '10' }, 'ckpt')).toThrow(/KILN_E006 ckpt: metadata "amp.growth_tracker" is "10", expected a whole number of good steps below 10/);
    expect(() => c.loadState({ 'amp.growth_tracker': '1' }, 'ckpt')).toThrow(/"amp.scale" is undefined/);
    expect(await c.getScale()).toBe(2 ** 16);
  });
});

describe('GradScaler kernels, CPU reference', () => {
  /** One node over f32 scalar inputs, interpreted. */
  function evaluate(op: string, values: number[][], attrs = {}): number[] {
    const g = new Graph();
    const inputs = values.map((v, i) => g.add('input', [], { name: `x${i}`, dtype: 'f32', shape: v.length === 1 ? [] : [v.length] }));
    g.setOutputs([{ name: 'out', node: g.add(op, inputs, attrs) }]);
    const out = interpret(g, (node) => {
      const v = values[Number(String(node.attrs.name).slice(1))];
      return { type: node.type, data: Float32Array.from(v) };
    });
    return Array.from(out.get('out')!.data);
  }

  it('found_inf is 1 exactly when some element is inf or NaN, f32 max included as finite', () => {
    expect(evaluate('found_inf', [[1, -2, F32_MAX, -F32_MAX]])).toEqual([0]);
    for (const bad of [Infinity, -Infinity, NaN]) expect(evaluate('found_inf', [[1, bad, 3]])).toEqual([1]);
  });

  it('amp_update_scale backs off, counts, grows, and does not grow past f32', () => {
    const attrs = { growth_factor: 2, backoff_factor: 0.5, growth_interval: 4 };
    expect(evaluate('amp_update_scale', [[1024], [3], [1]], attrs)).toEqual([512, 0]);
    expect(evaluate('amp_update_scale', [[1024], [2], [0]], attrs)).toEqual([1024, 3]);
    expect(evaluate('amp_update_scale', [[1024], [3], [0]], attrs)).toEqual([2048, 0]);
    expect(evaluate('amp_update_scale', [[2 ** 127], [3], [0]], attrs)).toEqual([2 ** 127, 0]);
  });
});


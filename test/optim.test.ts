import { describe, expect, it } from 'vitest';
import { KilnError, type HostTensor, Module, type Parameter, manualSeed, nn } from '../index.ts';
import { hostTensors } from '../compiler/checkpoint.ts';
import { AdamW, OPTIM_STEP_KEY, clipGradNorm, learningRate } from '../compiler/optim.ts';
import createModel from '../examples/nanogpt/model.ts';
import { type StTensorInput, parseSafetensors, serializeSafetensors } from '../runtime/safetensors.ts';

/** A 2-D weight (decays) and a 1-D bias (does not), with fixed values. */
class Tiny extends Module {
  weight: Parameter = nn.parameter([2, 3], (i) => [0.5, -1.25, 2, 0.1, -0.3, 0.75][i]);
  bias: Parameter = nn.parameter([3], (i) => [0.2, -0.4, 1.5][i]);
}

const f32 = (shape: number[], values: number[]): HostTensor => ({ type: { dtype: 'f32', shape }, data: Float32Array.from(values) });

/** Gradients for Tiny at step s (1-based): fixed, varied in sign and size, one exactly zero. */
const tinyGrads = (s: number) =>
  new Map([
    ['weight', f32([2, 3], [0.3 * s, -0.02, 1.5 / s, 0, -4 + s, 0.001 * s])],
    ['bias', f32([3], [-0.7, 0.25 * s, 2 - s])],
  ]);

/**
 * PyTorch's AdamW (torch/optim/adamw.py, _single_tensor_adamw) written out independently in f64:
 * param.mul_(1 - lr*wd); exp_avg.lerp_(g, 1-b1); exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2);
 * denom = exp_avg_sq.sqrt() / sqrt(1 - b2^t) + eps; param.addcdiv_(exp_avg, denom, -lr / (1 - b1^t)).
 */
function torchAdamW(p0: number[], grads: number[][], lrs: number[], b1: number, b2: number, eps: number, wd: number) {
  const p = [...p0];
  const m = p.map(() => 0);
  const v = p.map(() => 0);
  grads.forEach((g, k) => {
    const t = k + 1;
    const lr = lrs[k];
    for (let i = 0; i < p.length; i++) {
      p[i] = p[i] * (1 - lr * wd);
      m[i] = m[i] + (g[i] - m[i]) * (1 - b1);
      v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i];
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - b2 ** t) + eps;
      p[i] = p[i] - (lr / (1 - b1 ** t)) * (m[i] / denom);
    }
  });
  return { p, m, v };
}

describe('AdamW', () => {
  it('matches PyTorch AdamW formulas over four steps, decaying 2-D weights only (tolerance 2e-6 abs)', () => {
    const model = new Tiny();
    const w0 = Array.from(model.weight.host!.data);
    const b0 = Array.from(model.bias.host!.data);
    const opt = new AdamW(model, { lr: 0.01, betas: [0.9, 0.95], weightDecay: 0.1 });
    const lrs = [0.01, 0.02, 0.005, 0.03]; // changed between steps, as train.py does with get_lr
    const steps = lrs.map((_, k) => tinyGrads(k + 1));
    steps.forEach((g, k) => {
      opt.lr = lrs[k];
      opt.step(g);
    });
    const grad = (name: string) => steps.map((g) => Array.from(g.get(name)!.data));
    const wantW = torchAdamW(w0, grad('weight'), lrs, 0.9, 0.95, 1e-8, 0.1);
    const wantB = torchAdamW(b0, grad('bias'), lrs, 0.9, 0.95, 1e-8, 0);
    // The parameters are stored in f32 after every step, as PyTorch's are: a few ulps of drift.
    Array.from(model.weight.host!.data).forEach((x, i) => expect(Math.abs(x - wantW.p[i])).toBeLessThan(2e-6));
    Array.from(model.bias.host!.data).forEach((x, i) => expect(Math.abs(x - wantB.p[i])).toBeLessThan(2e-6));
    // and the moments saved with the state match too
    const { tensors, metadata } = opt.stateTensors();
    expect(metadata[OPTIM_STEP_KEY]).toBe('4');
    Array.from(tensors.get('optim.weight.exp_avg')!.data as Float32Array).forEach((x, i) => expect(x).toBeCloseTo(wantW.m[i], 6));
    Array.from(tensors.get('optim.bias.exp_avg_sq')!.data as Float32Array).forEach((x, i) => expect(x).toBeCloseTo(wantB.v[i], 6));
  });

  it('uses beta2 0.99 and a custom eps when given (shakespeare_char)', () => {
    const model = new Tiny();
    const b0 = Array.from(model.bias.host!.data);
    const opt = new AdamW(model, { lr: 1e-3, betas: [0.9, 0.99], eps: 1e-3, weightDecay: 0.1 });
    for (let s = 1; s <= 3; s++) opt.step(tinyGrads(s));
    const want = torchAdamW(b0, [1, 2, 3].map((s) => Array.from(tinyGrads(s).get('bias')!.data)), [1e-3, 1e-3, 1e-3], 0.9, 0.99, 1e-3, 0);
    Array.from(model.bias.host!.data).forEach((x, i) => expect(Math.abs(x - want.p[i])).toBeLessThan(2e-6));
  });

  it('replaces each parameter through Parameter.assign with a new Float32Array', () => {
    const model = new Tiny();
    const before = model.weight.host!.data;
    const version = model.weight.version;
    new AdamW(model).step(tinyGrads(1));
    expect(model.weight.version).toBe(version + 1);
    expect(model.weight.host!.data).not.toBe(before);
    expect(model.weight.host!.data).toBeInstanceOf(Float32Array);
    expect(before[0]).toBe(0.5); // the old array is untouched
  });

  it('groups a GPT as nanoGPT configure_optimizers: Linear and Embedding weights decay, LayerNorm weights and biases do not', () => {
    manualSeed(1);
    const model = createModel({ n_layer: 2, n_head: 2, n_embd: 8, block_size: 8, vocab_size: 16 });
    const opt = new AdamW(model, { weightDecay: 0.1 });
    const [decay, noDecay] = opt.groups;
    expect(decay.weightDecay).toBe(0.1);
    expect(noDecay.weightDecay).toBe(0);
    const block = (i: number, keys: string[]) => keys.map((k) => `transformer.h.${i}.${k}`);
    const decayKeys = ['attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight'];
    const noDecayKeys = ['ln_1.weight', 'ln_1.bias', 'attn.c_attn.bias', 'attn.c_proj.bias', 'ln_2.weight', 'ln_2.bias', 'mlp.c_fc.bias', 'mlp.c_proj.bias'];
    // lm_head.weight is tied to transformer.wte.weight: one parameter, under its first name
    expect(decay.params.map(([n]) => n)).toEqual(['transformer.wte.weight', 'transformer.wpe.weight', ...block(0, decayKeys), ...block(1, decayKeys)]);
    expect(noDecay.params.map(([n]) => n)).toEqual([...block(0, noDecayKeys), ...block(1, noDecayKeys), 'transformer.ln_f.weight', 'transformer.ln_f.bias']);
    // every parameter is in exactly one group
    const total = [...decay.params, ...noDecay.params].reduce((s, [, p]) => s + p.numel(), 0);
    expect(total).toBe(model.getNumParams(false));
  });

  it('refuses a missing gradient, a wrongly shaped one and one for an unknown name, changing nothing', () => {
    const model = new Tiny();
    const opt = new AdamW(model);
    const before = Array.from(model.bias.host!.data);
    const missing = new Map([['weight', tinyGrads(1).get('weight')!]]);
    expect(() => opt.step(missing)).toThrow(/no gradient for parameter bias/);
    const wrong = new Map([...tinyGrads(1), ['bias', f32([2], [1, 2])]]);
    expect(() => opt.step(wrong)).toThrow(KilnError);
    const extra = new Map([...tinyGrads(1), ['lm_head.weight', f32([1], [1])]]);
    expect(() => opt.step(extra)).toThrow(/lm_head.weight/);
    expect(opt.stepCount).toBe(0);
    expect(Array.from(model.bias.host!.data)).toEqual(before);
  });

  it('saves and restores its state through safetensors, giving identical next steps', () => {
    const a = new Tiny();
    const optA = new AdamW(a, { lr: 0.01 });
    optA.step(tinyGrads(1));
    optA.step(tinyGrads(2));
    const bytes = optA.saveStateBytes();
    const afterTwo = a.stateDict(); // assign replaces host tensors, so this keeps the step-2 values

    // resume: a fresh model given the same weights, a fresh optimizer given the saved state
    const b = new Tiny();
    b.loadStateDict(a.stateDict());
    const optB = new AdamW(b, { lr: 0.01 });
    const file = parseSafetensors(bytes, 'optim.safetensors');
    expect([...file.tensors.keys()].sort()).toEqual(['optim.bias.exp_avg', 'optim.bias.exp_avg_sq', 'optim.weight.exp_avg', 'optim.weight.exp_avg_sq']);
    optB.loadState(hostTensors(file, 'optim.safetensors'), file.metadata);
    expect(optB.stepCount).toBe(2);

    optA.step(tinyGrads(3));
    optB.step(tinyGrads(3));
    expect(Array.from(b.weight.host!.data)).toEqual(Array.from(a.weight.host!.data));
    expect(Array.from(b.bias.host!.data)).toEqual(Array.from(a.bias.host!.data));

    // without the restore, step 3 differs (the moments and the bias correction start over)
    const fresh = new Tiny();
    fresh.loadStateDict(afterTwo);
    new AdamW(fresh, { lr: 0.01 }).step(tinyGrads(3));
    expect(Array.from(fresh.weight.host!.data)).not.toEqual(Array.from(a.weight.host!.data));
  });

  it('restores from a checkpoint that also holds the model, ignoring the non-optim keys', () => {
    const a = new Tiny();
    const optA = new AdamW(a);
    optA.step(tinyGrads(1));
    const { tensors, metadata } = optA.stateTensors();
    const model = [...a.stateDict()].map(([k, t]): [string, StTensorInput] => [k, { dtype: 'F32', shape: [...t.type.shape], data: t.data }]);
    const bytes = serializeSafetensors(new Map([...model, ...tensors]), { ...metadata, config: '{}' });
    const file = parseSafetensors(bytes, 'ckpt.safetensors');
    const optB = new AdamW(new Tiny());
    optB.loadState(hostTensors(file, 'ckpt.safetensors'), file.metadata);
    expect(optB.stepCount).toBe(1);
    expect(optB.stateTensors().tensors.get('optim.weight.exp_avg')!.data).toEqual(tensors.get('optim.weight.exp_avg')!.data);
  });

  it('refuses state with a missing moment, an unknown optim key or no step, loading nothing', () => {
    const opt = new AdamW(new Tiny());
    const saved = new AdamW(new Tiny());
    saved.step(tinyGrads(1));
    const { tensors, metadata } = saved.stateTensors();
    const host = hostTensors(parseSafetensors(serializeSafetensors(tensors, metadata), 's'), 's');
    const without = new Map(host);
    without.delete('optim.bias.exp_avg_sq');
    expect(() => opt.loadState(without, metadata, 's')).toThrow(/KILN_E006.*missing key "optim.bias.exp_avg_sq"/);
    const unknown = new Map([...host, ['optim.other.exp_avg', f32([1], [0])]]);
    expect(() => opt.loadState(unknown, metadata, 's')).toThrow(/unexpected key "optim.other.exp_avg"/);
    expect(() => opt.loadState(host, {}, 's')).toThrow(/optim.step/);
    const reshaped = new Map([...host, ['optim.weight.exp_avg', f32([6], [0, 0, 0, 0, 0, 0])]]);
    expect(() => opt.loadState(reshaped, metadata, 's')).toThrow(/optim.weight.exp_avg/);
    expect(opt.stepCount).toBe(0);
  });
});

describe('clipGradNorm', () => {
  const grads = () => new Map([['a', f32([2, 2], [3, -1, 0.5, 2])], ['b', f32([3], [-4, 0, 1.25])]]);
  const directNorm = Math.sqrt(3 * 3 + 1 + 0.25 + 4 + 16 + 0 + 1.25 * 1.25);

  it('returns the global L2 norm and leaves gradients alone when it is at most maxNorm', () => {
    const g = grads();
    expect(clipGradNorm(g, 100)).toBeCloseTo(directNorm, 12);
    expect(Array.from(g.get('a')!.data)).toEqual([3, -1, 0.5, 2]);
  });

  it('scales every gradient in place by maxNorm / (norm + 1e-6) when above maxNorm, returning the norm before clipping', () => {
    const g = grads();
    expect(clipGradNorm(g, 1)).toBeCloseTo(directNorm, 12);
    const coef = 1 / (directNorm + 1e-6);
    Array.from(g.get('a')!.data).forEach((x, i) => expect(x).toBeCloseTo([3, -1, 0.5, 2][i] * coef, 6));
    Array.from(g.get('b')!.data).forEach((x, i) => expect(x).toBeCloseTo([-4, 0, 1.25][i] * coef, 6));
    expect(clipGradNorm(g, 100)).toBeCloseTo(1, 5);
  });
});

describe('learningRate', () => {
  // train.py's get_lr, transcribed; config/train_shakespeare_char.py's values
  const cfg = { learningRate: 1e-3, warmupIters: 100, lrDecayIters: 5000, minLr: 1e-4 };
  function getLr(it: number): number {
    if (it < 100) return (1e-3 * (it + 1)) / (100 + 1);
    if (it > 5000) return 1e-4;
    const decayRatio = (it - 100) / (5000 - 100);
    return 1e-4 + 0.5 * (1.0 + Math.cos(Math.PI * decayRatio)) * (1e-3 - 1e-4);
  }

  it('warms up linearly from lr / (warmup + 1)', () => {
    expect(learningRate(0, cfg)).toBeCloseTo(1e-3 / 101, 15);
    expect(learningRate(49, cfg)).toBeCloseTo(getLr(49), 15);
    expect(learningRate(99, cfg)).toBeCloseTo(1e-3 * 100 / 101, 15);
  });

  it('decays on a cosine from the peak at the end of warm-up to min_lr', () => {
    expect(learningRate(100, cfg)).toBeCloseTo(1e-3, 15);
    expect(learningRate(2550, cfg)).toBeCloseTo(5.5e-4, 15); // half-way: min_lr + (lr - min_lr) / 2
    for (const it of [101, 1234, 4000, 4999]) expect(learningRate(it, cfg)).toBeCloseTo(getLr(it), 15);
    expect(learningRate(5000, cfg)).toBeCloseTo(1e-4, 15);
  });

  it('stays at min_lr after lr_decay_iters', () => {
    expect(learningRate(5001, cfg)).toBe(1e-4);
    expect(learningRate(100_000, cfg)).toBe(1e-4);
  });
});

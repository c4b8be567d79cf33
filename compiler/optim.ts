// Training's optimizer side, as nanoGPT's train.py sets it up: AdamW with two parameter groups
// (model.configure_optimizers), gradient clipping (torch.nn.utils.clip_grad_norm_), the
// learning-rate schedule (get_lr) and, for f16 training, torch.amp.GradScaler's loss scaling (its
// state; compiler/train-step.ts applies it). Gradients come in by state-dict name (compiler/autograd.ts).
//
// Saved optimizer state is safetensors tensors `optim.<param>.exp_avg` and `optim.<param>.exp_avg_sq`
// (F32, the parameter's shape) plus `__metadata__["optim.step"]`, the number of steps taken as a
// decimal string. They can live in their own file or beside the model's tensors in one checkpoint.
// GradScaler's state is metadata too: `amp.scale` and `amp.growth_tracker`.

import { KilnError } from '../ir/errors.ts';
import type { HostTensor } from '../ir/host.ts';
import { formatType, sameShape } from '../ir/types.ts';
import { type StTensorInput, serializeSafetensors } from '../runtime/safetensors.ts';
import type { Module, Parameter } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
import { hostCopy } from './guards.ts';

export interface AdamWOptions {
  /** The learning rate; nanoGPT overwrites it every iteration with get_lr (see `learningRate`). */
  lr?: number;
  /** (beta1, beta2): nanoGPT's default (0.9, 0.95); its shakespeare_char config uses beta2 0.99. */
  betas?: [number, number];
  eps?: number;
  /** Applied to the decay group only (every parameter with 2 or more dims). */
  weightDecay?: number;
}

export interface ParamGroup {
  weightDecay: number;
  params: [string, Parameter][];
}

/** A parameter's moments. Tensors, so a compiled training step can keep them on the GPU (compiler/train-step.ts). */
export interface ParamState {
  readonly expAvg: Tensor;
  readonly expAvgSq: Tensor;
}

const STEP_TYPE = { dtype: 'f32' as const, shape: [] };
/** The largest count an f32 holds exactly, one by one: step counts and GradScaler's growth tracker are f32 on the device. */
const F32_COUNT_MAX = 2 ** 24;
const zerosLike = (p: Parameter): Tensor => new Tensor(p.type, { host: { type: p.type, data: new Float32Array(p.numel()) } });

/** A parameter's or moment's host values; after a compiled step they live on the device until TrainStep.sync(). */
function hostValues(t: Tensor, what: string): Float32Array {
  const host = t.readHost();
  if (!host) throw new KilnError('KILN_E011', `${what} lives on the GPU after a compiled training step; call await step.sync() first`);
  return host.data as Float32Array;
}

/** Metadata key of the step count in saved optimizer state. */
export const OPTIM_STEP_KEY = 'optim.step';
const expAvgKey = (name: string) => `optim.${name}.exp_avg`;
const expAvgSqKey = (name: string) => `optim.${name}.exp_avg_sq`;

/**
 * torch.optim.AdamW over a model's parameters, grouped as nanoGPT's configure_optimizers: weight decay
 * on every parameter with 2 or more dims (Linear and Embedding weights), none on 1-D ones (biases,
 * LayerNorm weights). Tied weights are one parameter (namedParameters dedupes them).
 */
export class AdamW {
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly groups: [decay: ParamGroup, noDecay: ParamGroup];
  /**
   * Steps taken so far (PyTorch's state[p]['step'], the same for every parameter here), as torch keeps
   * it: a 0-d f32 tensor. A compiled training step counts on the device (a step GradScaler skips does
   * not count) and the bias corrections come from it there; read `stepCount` after `step.sync()`.
   */
  readonly steps: Tensor = new Tensor(STEP_TYPE, { host: { type: STEP_TYPE, data: new Float32Array(1) } });
  private readonly state = new Map<string, ParamState>();

  constructor(model: Module, opts: AdamWOptions = {}) {
    this.lr = opts.lr ?? 1e-3; // torch.optim.AdamW's default; nanoGPT passes its own
    this.betas = opts.betas ?? [0.9, 0.95];
    this.eps = opts.eps ?? 1e-8;
    const params = model.namedParameters();
    for (const [name, p] of params) {
      if (p.dtype !== 'f32') throw new KilnError('KILN_E011', `AdamW: parameter ${name} is ${formatType(p.type)}; only f32 parameters can be trained`);
    }
    this.groups = [
      { weightDecay: opts.weightDecay ?? 0.1, params: params.filter(([, p]) => p.shape.length >= 2) },
      { weightDecay: 0, params: params.filter(([, p]) => p.shape.length < 2) },
    ];
    for (const [name, p] of params) this.state.set(name, { expAvg: zerosLike(p), expAvgSq: zerosLike(p) });
  }

  /** Steps taken so far; after a compiled training step, once `step.sync()` has brought the count back. */
  get stepCount(): number {
    return hostValues(this.steps, 'AdamW: the step count')[0];
  }
  set stepCount(n: number) {
    this.steps.host = { type: STEP_TYPE, data: Float32Array.of(n) };
  }

  /** The moments of one parameter, by state-dict name. */
  stateOf(name: string): ParamState {
    const s = this.state.get(name);
    if (!s) throw new KilnError('KILN_E011', `AdamW: no parameter named ${name}`);
    return s;
  }

  /**
   * One AdamW step, PyTorch's formulas (torch/optim/adamw.py, single-tensor path):
   *   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
   *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
   * Every parameter needs a gradient of its shape; each is replaced through Parameter.assign (a new
   * Float32Array), so compiled models re-upload it. Arithmetic is f64 per element, stored as f32.
   */
  step(grads: ReadonlyMap<string, HostTensor>): void {
    for (const group of this.groups) {
      for (const [name, p] of group.params) {
        const g = grads.get(name);
        if (!g) throw new KilnError('KILN_E011', `AdamW.step: no gradient for parameter ${name}`);
        if (!sameShape(g.type.shape, p.shape)) throw new KilnError('KILN_E001', `AdamW.step: gradient of ${name} is ${formatType(g.type)}, the parameter is ${formatType(p.type)}`);
      }
    }
    const known = new Set(this.state.keys());
    for (const name of grads.keys()) {
      if (!known.has(name)) throw new KilnError('KILN_E011', `AdamW.step: gradient for "${name}", which is no parameter of the model (a tied weight goes under its first name)`);
    }

    const t = (this.stepCount += 1);
    const [beta1, beta2] = this.betas;
    const lr = this.lr;
    const stepSize = lr / (1 - beta1 ** t);
    const bias2Sqrt = Math.sqrt(1 - beta2 ** t);
    for (const group of this.groups) {
      const decay = 1 - lr * group.weightDecay;
      for (const [name, p] of group.params) {
        const g = grads.get(name)!.data;
        const s = this.state.get(name)!;
        const [expAvg, expAvgSq] = [hostValues(s.expAvg, `AdamW: the optimizer state of ${name}`), hostValues(s.expAvgSq, `AdamW: the optimizer state of ${name}`)];
        const old = hostValues(p, `AdamW: parameter ${name}`);
        const next = new Float32Array(old.length);
        for (let i = 0; i < old.length; i++) {
          const m = (expAvg[i] = beta1 * expAvg[i] + (1 - beta1) * g[i]);
          const v = (expAvgSq[i] = beta2 * expAvgSq[i] + (1 - beta2) * g[i] * g[i]);
          next[i] = old[i] * decay - (stepSize * m) / (Math.sqrt(v) / bias2Sqrt + this.eps);
        }
        p.assign({ type: p.type, data: next });
        s.expAvg.markWritten('host'); // changed in place on the host: device copies are stale
        s.expAvgSq.markWritten('host');
      }
    }
  }

  /** The state as safetensors tensors (`optim.<param>.exp_avg`, `.exp_avg_sq`; copies) and metadata (`optim.step`). */
  stateTensors(): { tensors: Map<string, StTensorInput>; metadata: Record<string, string> } {
    const tensors = new Map<string, StTensorInput>();
    for (const group of this.groups) {
      for (const [name, p] of group.params) {
        const s = this.state.get(name)!;
        tensors.set(expAvgKey(name), { dtype: 'F32', shape: [...p.shape], data: hostValues(s.expAvg, `AdamW: the optimizer state of ${name}`).slice() });
        tensors.set(expAvgSqKey(name), { dtype: 'F32', shape: [...p.shape], data: hostValues(s.expAvgSq, `AdamW: the optimizer state of ${name}`).slice() });
      }
    }
    return { tensors, metadata: { [OPTIM_STEP_KEY]: String(this.stepCount) } };
  }

  /** The state as a standalone safetensors file. */
  saveStateBytes(): Uint8Array {
    const { tensors, metadata } = this.stateTensors();
    return serializeSafetensors(tensors, metadata);
  }

  /**
   * Restores saved state (e.g. `hostTensors(parseSafetensors(bytes))` and the file's metadata). Keys
   * outside `optim.` (the model's own tensors in a shared checkpoint) are ignored. Every parameter's
   * moments must be present with its shape, no unknown `optim.` keys; checks everything before
   * changing anything.
   */
  loadState(tensors: ReadonlyMap<string, HostTensor>, metadata: Readonly<Record<string, string>>, source = 'optimizer state'): void {
    const bad = (detail: string) => new KilnError('KILN_E006', `${source}: ${detail}`);
    const rawStep = metadata[OPTIM_STEP_KEY];
    if (rawStep === undefined || !/^\d+$/.test(rawStep) || Number(rawStep) > F32_COUNT_MAX) throw bad(`metadata "${OPTIM_STEP_KEY}" is ${JSON.stringify(rawStep)}, not a step count (a whole number up to 2^24, counted in f32 as torch counts it)`);
    const wanted = new Map<string, Parameter>();
    for (const group of this.groups) for (const [name, p] of group.params) wanted.set(expAvgKey(name), p).set(expAvgSqKey(name), p);
    for (const key of tensors.keys()) {
      if (key.startsWith('optim.') && !wanted.has(key)) throw bad(`unexpected key "${key}" (the model has no such parameter)`);
    }
    for (const [key, p] of wanted) {
      const t = tensors.get(key);
      if (!t) throw bad(`missing key "${key}"`);
      if (t.type.dtype !== 'f32' || !sameShape(t.type.shape, p.shape)) throw bad(`key "${key}" is ${formatType(t.type)}, the parameter is ${formatType(p.type)}`);
    }
    this.stepCount = Number(rawStep);
    for (const [name, s] of this.state) {
      for (const [t, key] of [[s.expAvg, expAvgKey(name)], [s.expAvgSq, expAvgSqKey(name)]] as const) {
        t.host = { type: t.type, data: Float32Array.from(tensors.get(key)!.data) };
      }
    }
  }
}

export interface GradScalerOptions {
  /** The loss scale to start from; torch's default 2^16. */
  initScale?: number;
  /** The scale is multiplied by this after `growthInterval` good steps in a row (default 2)... */
  growthFactor?: number;
  /** ...and by this at a step with an inf or NaN gradient, which is skipped (default 0.5). */
  backoffFactor?: number;
  growthInterval?: number;
}

/** Metadata keys of GradScaler's state in a checkpoint (torch's state_dict() "scale" and "_growth_tracker"). */
export const SCALER_SCALE_KEY = 'amp.scale';
export const SCALER_TRACKER_KEY = 'amp.growth_tracker';

/**
 * torch.amp.GradScaler, for compileTrainStep's `scaler` option: the step multiplies the loss by `scale`
 * before the backward (small f16 gradients stay above f16's smallest value), divides the gradients by it
 * before clipping, skips the AdamW update (parameters, moments and step count unchanged) when a
 * gradient is inf or NaN, and updates the scale as scaler.update() does: times `backoffFactor` at such a
 * step, times `growthFactor` after `growthInterval` good steps in a row. All of it on the device:
 * `scale` and `growthTracker` are 0-d f32 tensors that stay there between steps, like AdamW's moments.
 */
export class GradScaler {
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  /** The loss scale the next step uses. */
  readonly scale: Tensor;
  /** Good steps since the scale last changed (torch's _growth_tracker). */
  readonly growthTracker: Tensor;

  constructor(opts: GradScalerOptions = {}) {
    const initScale = opts.initScale ?? 2 ** 16;
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    const refuse = (what: string, v: number) => new KilnError('KILN_E011', `GradScaler: ${what}, got ${v}`);
    if (!(initScale > 0 && Math.fround(initScale) < Infinity)) throw refuse('initScale must be positive and finite in f32', initScale);
    if (!(this.growthFactor > 1 && Number.isFinite(this.growthFactor))) throw refuse('growthFactor must be above 1', this.growthFactor);
    if (!(this.backoffFactor > 0 && this.backoffFactor < 1)) throw refuse('backoffFactor must lie between 0 and 1', this.backoffFactor);
    if (!(Number.isInteger(this.growthInterval) && this.growthInterval >= 1 && this.growthInterval <= F32_COUNT_MAX)) {
      throw refuse('growthInterval must be a whole number from 1 to 2^24 (the tracker counts in f32)', this.growthInterval);
    }
    const scalar = (v: number) => new Tensor(STEP_TYPE, { host: { type: STEP_TYPE, data: Float32Array.of(v) } });
    this.scale = scalar(initScale);
    this.growthTracker = scalar(0);
  }

  /** The scale now (torch's get_scale()); after a compiled step it is read from the device. */
  async getScale(): Promise<number> {
    return (await hostCopy(this.scale)).data[0];
  }

  /** The state as checkpoint metadata (decimal strings); after a compiled step, once `step.sync()` has brought it back. */
  stateMetadata(): Record<string, string> {
    return {
      [SCALER_SCALE_KEY]: String(hostValues(this.scale, 'GradScaler: the loss scale')[0]),
      [SCALER_TRACKER_KEY]: String(hostValues(this.growthTracker, 'GradScaler: the growth tracker')[0]),
    };
  }

  /** Restores `stateMetadata()`'s keys, checking both before changing either. */
  loadState(metadata: Readonly<Record<string, string>>, source = 'GradScaler state'): void {
    const read = (key: string, ok: (v: number) => boolean, expected: string): number => {
      const raw = metadata[key];
      const v = raw === undefined || raw.trim() === '' ? NaN : Number(raw);
      if (!ok(v)) throw new KilnError('KILN_E006', `${source}: metadata "${key}" is ${JSON.stringify(raw)}, expected ${expected}`);
      return v;
    };
    const scale = read(SCALER_SCALE_KEY, (v) => v > 0 && Math.fround(v) < Infinity, 'a positive loss scale');
    const tracker = read(SCALER_TRACKER_KEY, (v) => Number.isInteger(v) && v >= 0 && v < this.growthInterval, `a whole number of good steps below ${this.growthInterval}`);
    this.scale.host = { type: STEP_TYPE, data: Float32Array.of(scale) };
    this.growthTracker.host = { type: STEP_TYPE, data: Float32Array.of(tracker) };
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: the L2 norm over all gradients together; when it exceeds maxNorm every
 * gradient is scaled in place by maxNorm / (norm + 1e-6). Returns the norm before clipping.
 */
export function clipGradNorm(grads: ReadonlyMap<string, HostTensor>, maxNorm: number): number {
  for (const [name, g] of grads) {
    if (g.type.dtype !== 'f32') throw new KilnError('KILN_E011', `clipGradNorm: gradient of ${name} is ${formatType(g.type)}, not f32`);
  }
  let sumSq = 0;
  for (const g of grads.values()) for (let i = 0; i < g.data.length; i++) sumSq += g.data[i] * g.data[i];
  const norm = Math.sqrt(sumSq);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads.values()) for (let i = 0; i < g.data.length; i++) g.data[i] *= coef;
  return norm;
}

export interface LearningRateSchedule {
  learningRate: number;
  warmupIters: number;
  lrDecayIters: number;
  minLr: number;
}

/** nanoGPT's get_lr: linear warm-up from 0, cosine decay to minLr until lrDecayIters, minLr after. */
export function learningRate(iter: number, s: LearningRateSchedule): number {
  // 1) linear warmup for warmup_iters steps
  if (iter < s.warmupIters) return (s.learningRate * (iter + 1)) / (s.warmupIters + 1);
  // 2) if it > lr_decay_iters, return min learning rate
  if (iter > s.lrDecayIters) return s.minLr;
  // 3) in between, use cosine decay down to min learning rate
  const decayRatio = (iter - s.warmupIters) / (s.lrDecayIters - s.warmupIters);
  const coeff = 0.5 * (1.0 + Math.cos(Math.PI * decayRatio)); // coeff ranges 0..1
  return s.minLr + coeff * (s.learningRate - s.minLr);
}

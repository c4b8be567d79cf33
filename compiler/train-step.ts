// A compiled training step: forward, backward, gradient clipping and AdamW as one graph, run as one
// submission. What torch.compile gives a training loop, for kiln:
//
//   traced forward --passes (canonical, fused; autocast last)--> fused forward (attention chains ->
//     fused_attention; with autocast 'f16', casts so matmul and attention run in f16)
//     --differentiate--> + backward (each op's grad rule; fused_attention's is the flash backward; a cast's
//     gradient casts back, so the f32 parameters get f32 gradients from an f16 backward)
//     --+ optimizer--> + loss scaling, global-norm clip, AdamW update of every parameter and moment
//     --passes (all but attention fusion and autocast)--> lowered (elementwise chains fused) --> one Runner
//
// The parameters, the optimizer's moments and step count and the GradScaler's state are leaves the step
// reads and outputs it writes back into the same tensors (RunOptions.writeBack): on the GPU they stay
// on the GPU from step to step, and only the loss comes back when asked for. Hyperparameters that change
// per step (the learning rate, through lr and the decay) are inputs too, so one compilation serves the
// whole run. `sync()` brings the state back to the host (checkpoints).
//
// The update is PyTorch's AdamW (torch/optim/adamw.py) in f32, as optimizer.step() computes it on the
// host, with the step count t on the device as torch's fused AdamW keeps it:
//   p <- p * (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// With a GradScaler (torch.amp.GradScaler, torch/amp/grad_scaler.py), as scaler.scale(loss).backward(),
// scaler.unscale_(optimizer), clip_grad_norm_, scaler.step(optimizer), scaler.update() do it:
//   the backward starts from loss * scale; the norm is the unscaled gradients' (the scaled norm / scale)
//   and AdamW takes g * clip_coef / scale; a non-finite gradient (found_inf) leaves the parameters,
//   moments and step count as they were, and the scale goes down by backoff_factor; growth_interval good
//   steps in a row multiply it by growth_factor (ir/ops/optim.ts amp_update_scale).

import { differentiate } from '../ir/autograd.ts';
import { KilnError } from '../ir/errors.ts';
import { type Graph, type GraphOutput, type Node, rebuildGraph } from '../ir/graph.ts';
import { log } from '../ir/log.ts';
import { ADAMW_HYPERS } from '../ir/ops/optim.ts';
import { formatType } from '../ir/types.ts';
import { DEFAULT_PIPELINE, type Pass, type PassResult, checkPassOptions, runPasses } from '../passes/index.ts';
import type { Runner } from './backend.ts';
import { type BackendName, loadBackend } from './backends.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
import { BufferReader, GuardedCache, guardKey, hostCopy } from './guards.ts';
import { leafFeeder, stateTensors } from './leaves.ts';
import { checkAutocastDType } from './frontend/autocast.ts';
import { type AdamW, GradScaler } from './optim.ts';
import { type Trace, forwardArgNames, traceModule } from './tracer.ts';
import { tuneAttentionBackward } from './autotune-attention.ts';
import { autotuneFromEnv } from '../runtime/webgpu/autotune.ts';

export interface TrainStepOptions {
  /** Where the step runs; default webgpu. */
  backend?: BackendName;
  /** Pass name -> on/off, as compile()'s: `{ fuse_attention: false }` trains the unfused graph. */
  passes?: Record<string, boolean>;
  pipeline?: readonly Pass[];
  attentionScaling?: 'post' | 'pre_qk';
  /** Clip the gradients to this global L2 norm first (torch.nn.utils.clip_grad_norm_); 0 or absent: no clipping. */
  gradClip?: number;
  /** As compile()'s: token ids and targets checked on the GPU too (default true). */
  checkBounds?: boolean;
  /** As compile()'s: kernels with alternatives chosen by measuring them on this GPU (default: KILN_AUTOTUNE=1). */
  autotune?: boolean;
  /**
   * Mixed precision, as torch.autocast (passes/autocast.ts): 'f16' runs matmul and attention in f16 in
   * the forward and so in the backward; the parameters (master weights), their gradients and AdamW's
   * state stay f32.
   */
  autocast?: 'f16';
  /**
   * Dynamic loss scaling (GradScaler, torch.amp.GradScaler). With autocast 'f16' a default GradScaler()
   * unless given, or `false` for none; without autocast none unless given (it works in f32 too).
   */
  scaler?: GradScaler | false;
}

/** What one step gives back: device tensors, read only when asked (`await loss.item()`). */
export interface StepResult {
  /** The loss before the update (not scaled). */
  readonly loss: Tensor;
  /** The gradients' global L2 norm before clipping (of the unscaled gradients). */
  readonly gradNorm: Tensor;
  /** With a scaler: 1 when a gradient was inf or NaN and the step skipped the update, else 0 (f32[]). */
  readonly skipped?: Tensor;
  /** With a scaler: the loss scale after this step's update, which the next step uses (f32[]). */
  readonly scale?: Tensor;
}

/** One compilation of the step, for one input signature. */
export interface TrainingCompilation {
  readonly signature: string;
  readonly trace: Trace;
  /** The passes over the forward graph (attention fusion decisions are here). */
  readonly forward: PassResult;
  /** The passes over the whole step: forward, backward and optimizer. */
  readonly step: PassResult;
  readonly run: Runner;
}

type ForwardModule = Module & { forward: (...args: never[]) => unknown };

export type TrainStep<M extends ForwardModule> = ((...args: Parameters<M['forward']>) => Promise<StepResult>) & {
  /** Compiles for these arguments without running. */
  lower(...args: Parameters<M['forward']>): Promise<TrainingCompilation>;
  readonly last: TrainingCompilation | undefined;
  /** Copies parameters, optimizer state and the scaler's state back to the host (before stateDict(), checkpoints, optimizer.step()). */
  sync(): Promise<void>;
  /** The loss scaler the step updates, if any. */
  readonly scaler: GradScaler | undefined;
};

const OUTPUT_LOSS = 'loss';
const OUTPUT_NORM = 'grad_norm';
const OUTPUT_SKIPPED = 'skipped';
const OUTPUT_SCALE = 'scale';
/** The output holding [p', m', v'] of one parameter. */
const nextState = (name: string) => `next.${name}`;
const momentInput = (name: string, which: 'exp_avg' | 'exp_avg_sq') => `optim.${name}.${which}`;
/** A parameter group's f32[2] of this step: lr, decay (ADAMW_HYPERS). */
const hypersInput = (group: number) => `optim.hypers.${group}`;
/** AdamW's step count (f32[]) and the output of the next, written back into it. */
const STEP_INPUT = 'optim.step';
const STEP_OUTPUT = 'optim.next_step';
/** GradScaler's scale and growth tracker (f32[] each), and the output stacking their next values. */
const SCALE_INPUT = 'amp.scale';
const TRACKER_INPUT = 'amp.growth_tracker';
const SCALER_OUTPUT = 'amp.next_state';
/** Operands of one fused elementwise kernel (passes/elementwise.ts fuses up to 6). */
const FUSED_SUM_OPERANDS = 6;

/**
 * Compiles `model`'s training step with `optimizer` (an AdamW over the same model). Each call takes
 * forward()'s arguments (forward must return a 0-d `loss`, or only it), takes one AdamW step at
 * `optimizer.lr`, and returns the loss and the gradient norm as device tensors (with a scaler, also
 * whether the step was skipped and the scale).
 */
export function compileTrainStep<M extends ForwardModule>(model: M, optimizer: AdamW, options: TrainStepOptions = {}): TrainStep<M> {
  const pipeline = options.pipeline ?? DEFAULT_PIPELINE;
  checkPassOptions(pipeline, options);
  const gradClip = options.gradClip ?? 0;
  if (!(gradClip >= 0)) throw new KilnError('KILN_E011', `compileTrainStep: gradClip must be >= 0, got ${gradClip}`);
  const autocast = options.autocast === undefined ? undefined : checkAutocastDType(options.autocast, 'compileTrainStep() option autocast');
  // torch pairs autocast to f16 with a GradScaler: without one, gradients below f16's smallest value flush to zero.
  const scaler = options.scaler === false ? undefined : (options.scaler ?? (autocast === 'f16' ? new GradScaler() : undefined));
  const params = optimizer.groups.flatMap((g) => g.params);
  const cache = new GuardedCache<TrainingCompilation>();
  let last: TrainingCompilation | undefined;
  const argNames = forwardArgNames(model.forward);

  // Optimizer and scaler state is fed and written back by leaf name; hyperparameters are fresh tensors per step.
  const fedState = new Map<string, Tensor>([[STEP_INPUT, optimizer.steps]]);
  const writeBack = new Map<string, Tensor | readonly Tensor[]>([[STEP_OUTPUT, optimizer.steps]]);
  for (const [name, p] of params) {
    const s = optimizer.stateOf(name);
    fedState.set(momentInput(name, 'exp_avg'), s.expAvg).set(momentInput(name, 'exp_avg_sq'), s.expAvgSq);
    writeBack.set(nextState(name), [p, s.expAvg, s.expAvgSq]);
  }
  if (scaler) {
    fedState.set(SCALE_INPUT, scaler.scale).set(TRACKER_INPUT, scaler.growthTracker);
    writeBack.set(SCALER_OUTPUT, [scaler.scale, scaler.growthTracker]);
  }

  async function lower(...args: unknown[]): Promise<TrainingCompilation> {
    return lowerFor(args, currentState());
  }

  /** The model's tensors as they are now; its parameters must still be the optimizer's, which the step updates. */
  function currentState(): Map<string, Tensor> {
    const state = stateTensors(model);
    for (const [name, p] of params) {
      if (state.get(name) !== p) {
        throw new KilnError('KILN_E011', `compileTrainStep: parameter ${name} was replaced after the optimizer was built, so the step would update the old one; load new values with loadStateDict() or Parameter.assign(), or build a new AdamW and training step`);
      }
    }
    return state;
  }

  /** Guarded as compile() guards (compiler/guards.ts): arguments, training flags, the state's layout and the buffers folded in. */
  async function lowerFor(args: readonly unknown[], state: ReadonlyMap<string, Tensor>): Promise<TrainingCompilation> {
    const key = guardKey(model, state, args, argNames);
    const found = await cache.find(key, state);
    if ('hit' in found) return (last = found.hit);
    if (found.miss) log('recompiles', `retracing the training step: ${found.miss}`);
    const buffers = await BufferReader.of(state, model);
    const trace = traceModule(model, args);
    const passOptions = { passes: options.passes, attentionScaling: options.attentionScaling, bufferValue: buffers.value };
    // Autocast runs last in the fused stage, after attention fusion, so the backward differentiates its casts.
    // The step reads only the loss: with the logits no longer an output, fuse_linear_cross_entropy can take lm_head and the loss together.
    // The forward runs the fused stages only: a switch of a lowered-stage pass is for the step below.
    const forwardPipeline = pipeline.filter((p) => p.stage !== 'lowered');
    const forwardSwitches = Object.fromEntries(Object.entries(options.passes ?? {}).filter(([name]) => forwardPipeline.some((p) => p.name === name)));
    const forward = runPasses(lossOnly(trace.graph), forwardPipeline, { ...passOptions, passes: forwardSwitches, autocast });
    // autotune (webgpu): each attention's backward is the one measured faster here, flash or composed (compiler/autotune-attention.ts).
    const tune = (options.backend ?? 'webgpu') === 'webgpu' && (options.autotune ?? autotuneFromEnv());
    const withStep = appendOptimizer(tune ? await tuneAttentionBackward(forward.graph) : forward.graph, optimizer, { gradClip, scaler });
    const step = runPasses(withStep, pipeline, { ...passOptions, passes: { ...options.passes, fuse_attention: false } });
    const signature = key.args.join(', ');
    log('graph', `training step: ${trace.graph.nodes.length} traced nodes -> ${step.graph.nodes.length} in the step`, { signature });
    const backend = await loadBackend(options.backend ?? 'webgpu');
    const compilation: TrainingCompilation = { signature, trace, forward, step, run: await backend.prepare(step.graph, { checkBounds: options.checkBounds, autotune: options.autotune }) };
    cache.add(key, compilation, buffers);
    return (last = compilation);
  }

  async function call(...args: unknown[]): Promise<StepResult> {
    const state = currentState();
    const c = await lowerFor(args, state);
    const hypers = hyperparameters(optimizer);
    const base = leafFeeder(c.step.graph, state, c.trace.argNames, args);
    const leaf = (node: Node): Tensor => {
      const name = String(node.attrs.name);
      if (node.op !== 'input') return base(node);
      return fedState.get(name) ?? hypers.get(name) ?? base(node);
    };
    const outputs = await c.run(leaf, { writeBack });
    const result = { loss: outputs.get(OUTPUT_LOSS)!, gradNorm: outputs.get(OUTPUT_NORM)! };
    return scaler ? { ...result, skipped: outputs.get(OUTPUT_SKIPPED)!, scale: outputs.get(OUTPUT_SCALE)! } : result;
  }

  async function sync(): Promise<void> {
    const tensors = [...params.map(([, p]) => p as Tensor), ...fedState.values()];
    await Promise.all(tensors.map(hostCopy));
  }

  const step = Object.assign(call, { lower, sync, scaler });
  Object.defineProperty(step, 'last', { get: () => last });
  return step as unknown as TrainStep<M>;
}

/** This step's hyperparameter inputs, one f32[2] per parameter group: lr, decay (the bias corrections come from the step count on the device). */
function hyperparameters(optimizer: AdamW): Map<string, Tensor> {
  const type = { dtype: 'f32' as const, shape: [ADAMW_HYPERS.length] };
  const values = (weightDecay: number) => Float32Array.of(optimizer.lr, 1 - optimizer.lr * weightDecay);
  return new Map(optimizer.groups.map((g, i) => [hypersInput(i), new Tensor(type, { host: { type, data: values(g.weightDecay) } })]));
}

/** A copy of the traced forward whose only output is its loss (nanoGPT's forward also returns the logits). */
function lossOnly(graph: Graph): Graph {
  const loss = lossOutput(graph);
  const copy = rebuildGraph(graph, () => undefined);
  copy.setOutputs([loss]);
  return copy;
}

/** The loss output of a traced forward: `loss`, or its only output. */
function lossOutput(graph: Graph): GraphOutput {
  const found = graph.outputs.find((o) => o.name === OUTPUT_LOSS) ?? (graph.outputs.length === 1 ? graph.outputs[0] : undefined);
  if (!found) {
    throw new KilnError('KILN_E011', `compileTrainStep needs forward() to return a "loss" tensor (or a single tensor); it returned ${graph.outputs.map((o) => o.name).join(', ')}`);
  }
  if (found.node.type.shape.length !== 0 || found.node.type.dtype !== 'f32') {
    throw new KilnError('KILN_E011', `compileTrainStep needs a 0-d f32 loss; forward() returned ${found.name} as ${formatType(found.node.type)} (reduce it with .mean(), or pass the targets)`, found.node.loc);
  }
  return found;
}

/** What appendOptimizer adds besides AdamW: clip_grad_norm_'s max norm (0: none) and a loss scaler. */
export interface StepOptions {
  readonly gradClip: number;
  readonly scaler?: GradScaler;
}

/**
 * The forward graph with its backward, the global-norm clip and the AdamW update appended (and with a
 * scaler, loss scaling). Outputs: `loss`, `grad_norm`, `next.<param>`: f32[3, ...] stacking the
 * parameter's and its moments' new values, `optim.next_step`; with a scaler `amp.next_state` (the
 * scale and growth tracker), `skipped` and `scale`.
 */
export function appendOptimizer(forward: Graph, optimizer: AdamW, { gradClip, scaler }: StepOptions): Graph {
  const loss = lossOutput(forward);
  const withLeaves = rebuildGraph(forward, () => undefined); // a copy: the forward's own graph stays as its passes left it
  const leafInput = (g: Graph, name: string, shape: readonly number[]) => g.add('input', [], { name, dtype: 'f32', shape: [...shape] }, undefined, 'optim');
  const byName = new Map(withLeaves.nodesOf('param').map((n) => [String(n.attrs.name), n]));
  const groups = optimizer.groups.map((g) => g.params.map(([name, p]) => {
    // A parameter forward() never read still decays: give it a leaf (its gradient is zeros).
    const leaf = byName.get(name) ?? withLeaves.add('param', [], { name, dtype: p.dtype, shape: [...p.shape] });
    return { name, leaf };
  }));
  const leaves = groups.flat();
  // scaler.scale(loss).backward(): the backward starts from loss * scale, so every gradient comes out scaled.
  const scale = scaler ? leafInput(withLeaves, SCALE_INPUT, []) : null;
  const seed = scale ? withLeaves.add('mul', [loss.node, scale], {}, loss.node.loc, 'optim') : loss.node;
  const graph = differentiate(withLeaves, seed, leaves.map((l) => l.leaf));
  const gradOf = new Map(graph.outputs.filter((o) => o.name.startsWith('grad.')).map((o) => [o.name.slice('grad.'.length), o.node]));
  const add = (op: string, inputs: (Node | number)[], attrs = {}) => graph.add(op, inputs, attrs, undefined, 'optim');
  const input = (name: string, shape: readonly number[]) => leafInput(graph, name, shape);
  const scalar = (value: number) => add('full', [], { value, dtype: 'f32', shape: [] });

  // clip_grad_norm_: the L2 norm of all gradients together. Each tensor is summed a row at a time
  // first (one workgroup per row), then its row sums: a reduction over a whole big weight in one
  // workgroup would be slow.
  const squares = leaves.map(({ name }) => {
    const g = gradOf.get(name)!;
    const sq = add('mul', [g, g]);
    const rank = sq.type.shape.length;
    if (rank === 0) return sq;
    const rows = rank >= 2 ? add('sum', [sq], { dims: [rank - 1], keepdim: false }) : sq;
    return add('sum', [rows], { dims: rows.type.shape.map((_, i) => i), keepdim: false });
  });
  // Summed in groups a fused elementwise kernel can take at once (a chain of every square would be too many operands to fuse at all).
  const sumAll = (xs: Node[]): Node => {
    if (xs.length === 1) return xs[0];
    const groups: Node[] = [];
    for (let i = 0; i < xs.length; i += FUSED_SUM_OPERANDS) groups.push(xs.slice(i, i + FUSED_SUM_OPERANDS).reduce((a, b) => add('add', [a, b])));
    return sumAll(groups);
  };
  const sumOfSquares = sumAll(squares);
  // scaler.unscale_(): torch divides each gradient by the scale and then takes the norm; the scaled norm
  // divided by the scale is the same (exactly, for a power-of-two scale) without a pass over every gradient.
  const invScale = scale ? add('div', [1, scale]) : null;
  const norm = invScale ? add('mul', [add('sqrt', [sumOfSquares]), invScale]) : add('sqrt', [sumOfSquares]);
  // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1 (clamped to 1).
  const clipCoef = gradClip > 0 ? add('minimum', [add('div', [gradClip, add('add', [norm, 1e-6])]), 1]) : null;
  // What AdamW multiplies each (scaled) gradient by: the clip coefficient over the scale.
  const gradScale = invScale && clipCoef ? add('mul', [clipCoef, invScale]) : (invScale ?? clipCoef ?? scalar(1));
  // found_inf: a gradient that is inf or NaN makes the sum of squares so. torch checks each gradient; this
  // also counts finite gradients whose squares sum past f32's range (a scaled norm above 1.8e19, which
  // f16 gradients of at most 65504 each do not reach) and needs no second pass over them.
  const found = scaler ? add('found_inf', [sumOfSquares]) : scalar(0);
  // The step count this update makes: one more, unless it is skipped (torch's fused AdamW: step += 1 - found_inf).
  const nextStep = add('add', [input(STEP_INPUT, []), scaler ? add('sub', [1, found]) : 1]);
  // [t, grad_scale, skip] in one tensor: one binding of every adamw_update kernel (ir/ops/optim.ts).
  const scalars = add('concat', [nextStep, gradScale, found].map((x) => add('reshape', [x], { shape: [1] })), { dim: 0 });

  const outputs: GraphOutput[] = [
    { name: OUTPUT_LOSS, node: loss.node },
    { name: OUTPUT_NORM, node: norm },
    { name: STEP_OUTPUT, node: nextStep },
  ];
  if (scaler && scale) {
    // scaler.update(): [scale', growth_tracker'], written back; the new scale also comes back on its own.
    const { growthFactor, backoffFactor, growthInterval } = scaler;
    const next = add('amp_update_scale', [scale, input(TRACKER_INPUT, []), found], { growth_factor: growthFactor, backoff_factor: backoffFactor, growth_interval: growthInterval });
    const nextScale = add('reshape', [add('slice', [next], { dim: 0, start: 0, end: 1, step: 1 })], { shape: [] });
    outputs.push({ name: SCALER_OUTPUT, node: next }, { name: OUTPUT_SKIPPED, node: found }, { name: OUTPUT_SCALE, node: nextScale });
  }
  const [beta1, beta2] = optimizer.betas;
  optimizer.groups.forEach((_, gi) => {
    const hypers = input(hypersInput(gi), [ADAMW_HYPERS.length]);
    for (const { name, leaf } of groups[gi]) {
      const m = input(momentInput(name, 'exp_avg'), leaf.type.shape);
      const v = input(momentInput(name, 'exp_avg_sq'), leaf.type.shape);
      // One kernel per parameter: [p', m', v'] stacked (ir/ops/optim.ts), copied back into p, m and v.
      const update = add('adamw_update', [leaf, gradOf.get(name)!, m, v, hypers, scalars], { beta1, beta2, eps: optimizer.eps });
      outputs.push({ name: nextState(name), node: update });
    }
  });
  graph.setOutputs(outputs);
  return graph;
}

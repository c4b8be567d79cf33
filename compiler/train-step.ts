// A compiled training step: forward, backward, gradient clipping and AdamW as one graph, run as one
// submission. What torch.compile gives a training loop, for kiln:
//
//   traced forward --passes (canonical, fused)--> fused forward (attention chains -> fused_attention)
//     --differentiate--> + backward (each op's grad rule; fused_attention's is the flash backward)
//     --+ optimizer--> + global-norm clip + AdamW update of every parameter and moment
//     --passes (all but attention fusion)--> lowered (elementwise chains fused) --> one Runner
//
// The parameters and the optimizer's moments are leaves the step reads and outputs it writes back
// into the same tensors (RunOptions.writeBack): on the GPU they stay on the GPU from step to step,
// and only the loss comes back when asked for. Hyperparameters that change per step (the learning
// rate through the step size and decay, the bias corrections) are inputs too, so one compilation
// serves the whole run. `sync()` brings parameters and moments back to the host (checkpoints).
//
// The update is PyTorch's AdamW (torch/optim/adamw.py) in f32, as optimizer.step() computes it on the host:
//   p <- p * (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

import { differentiate } from '../ir/autograd.ts';
import { KilnError } from '../ir/errors.ts';
import type { Graph, GraphOutput, Node } from '../ir/graph.ts';
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
import type { AdamW } from './optim.ts';
import { type Trace, forwardArgNames, traceModule } from './tracer.ts';

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
}

/** What one step gives back: device tensors, read only when asked (`await loss.item()`). */
export interface StepResult {
  /** The loss before the update. */
  readonly loss: Tensor;
  /** The gradients' global L2 norm before clipping. */
  readonly gradNorm: Tensor;
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
  /** Copies parameters and optimizer moments back to the host (before stateDict(), checkpoints, optimizer.step()). */
  sync(): Promise<void>;
};

const OUTPUT_LOSS = 'loss';
const OUTPUT_NORM = 'grad_norm';
/** The output holding [p', m', v'] of one parameter. */
const nextState = (name: string) => `next.${name}`;
const momentInput = (name: string, which: 'exp_avg' | 'exp_avg_sq') => `optim.${name}.${which}`;
/** A parameter group's f32[3] of this step: step size, 1 / sqrt(1 - b2^t), decay (ADAMW_HYPERS). */
const hypersInput = (group: number) => `optim.hypers.${group}`;
/** Operands of one fused elementwise kernel (passes/elementwise.ts fuses up to 6). */
const FUSED_SUM_OPERANDS = 6;

/**
 * Compiles `model`'s training step with `optimizer` (an AdamW over the same model). Each call takes
 * forward()'s arguments (forward must return a 0-d `loss`, or only it), takes one AdamW step at
 * `optimizer.lr`, and returns the loss and the gradient norm as device tensors.
 */
export function compileTrainStep<M extends ForwardModule>(model: M, optimizer: AdamW, options: TrainStepOptions = {}): TrainStep<M> {
  const pipeline = options.pipeline ?? DEFAULT_PIPELINE;
  checkPassOptions(pipeline, options);
  const gradClip = options.gradClip ?? 0;
  if (!(gradClip >= 0)) throw new KilnError('KILN_E011', `compileTrainStep: gradClip must be >= 0, got ${gradClip}`);
  const params = optimizer.groups.flatMap((g) => g.params);
  const cache = new GuardedCache<TrainingCompilation>();
  let last: TrainingCompilation | undefined;
  const argNames = forwardArgNames(model.forward);

  // Optimizer moments are fed and written back by leaf name; hyperparameters are fresh tensors per step.
  const moments = new Map<string, Tensor>();
  for (const [name] of params) {
    const s = optimizer.stateOf(name);
    moments.set(momentInput(name, 'exp_avg'), s.expAvg).set(momentInput(name, 'exp_avg_sq'), s.expAvgSq);
  }
  const writeBack = new Map<string, readonly Tensor[]>();
  for (const [name, p] of params) {
    const s = optimizer.stateOf(name);
    writeBack.set(nextState(name), [p, s.expAvg, s.expAvgSq]);
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
    const forward = runPasses(trace.graph, pipeline.filter((p) => p.stage !== 'lowered'), passOptions);
    const withStep = appendOptimizer(forward.graph, optimizer, gradClip);
    const step = runPasses(withStep, pipeline, { ...passOptions, passes: { ...options.passes, fuse_attention: false } });
    const signature = key.args.join(', ');
    log('graph', `training step: ${trace.graph.nodes.length} traced nodes -> ${step.graph.nodes.length} in the step`, { signature });
    const backend = await loadBackend(options.backend ?? 'webgpu');
    const compilation: TrainingCompilation = { signature, trace, forward, step, run: await backend.prepare(step.graph, { checkBounds: options.checkBounds }) };
    cache.add(key, compilation, buffers);
    return (last = compilation);
  }

  async function call(...args: unknown[]): Promise<StepResult> {
    const state = currentState();
    const c = await lowerFor(args, state);
    const hypers = hyperparameters(optimizer, optimizer.stepCount + 1);
    const base = leafFeeder(c.step.graph, state, c.trace.argNames, args);
    const leaf = (node: Node): Tensor => {
      const name = String(node.attrs.name);
      if (node.op !== 'input') return base(node);
      return moments.get(name) ?? hypers.get(name) ?? base(node);
    };
    const outputs = await c.run(leaf, { writeBack });
    optimizer.stepCount++; // counted once the step is queued: a step that failed to run did not happen
    return { loss: outputs.get(OUTPUT_LOSS)!, gradNorm: outputs.get(OUTPUT_NORM)! };
  }

  async function sync(): Promise<void> {
    const tensors = [...params.map(([, p]) => p as Tensor), ...moments.values()];
    await Promise.all(tensors.map(hostCopy));
  }

  const step = Object.assign(call, { lower, sync });
  Object.defineProperty(step, 'last', { get: () => last });
  return step as unknown as TrainStep<M>;
}

/** Step t's hyperparameter inputs (t counts from 1), one f32[3] per parameter group. */
function hyperparameters(optimizer: AdamW, t: number): Map<string, Tensor> {
  const [beta1, beta2] = optimizer.betas;
  const type = { dtype: 'f32' as const, shape: [ADAMW_HYPERS.length] };
  const values = (weightDecay: number) => Float32Array.of(optimizer.lr / (1 - beta1 ** t), 1 / Math.sqrt(1 - beta2 ** t), 1 - optimizer.lr * weightDecay);
  return new Map(optimizer.groups.map((g, i) => [hypersInput(i), new Tensor(type, { host: { type, data: values(g.weightDecay) } })]));
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

/**
 * The forward graph with its backward, the global-norm clip and the AdamW update appended. Outputs:
 * `loss`, `grad_norm`, and `next.<param>`: f32[3, ...] stacking the parameter's and its moments' new values.
 */
export function appendOptimizer(forward: Graph, optimizer: AdamW, gradClip: number): Graph {
  const loss = lossOutput(forward);
  const byName = new Map(forward.nodesOf('param').map((n) => [String(n.attrs.name), n]));
  const groups = optimizer.groups.map((g) => g.params.map(([name, p]) => {
    // A parameter forward() never read still decays: give it a leaf (its gradient is zeros).
    const leaf = byName.get(name) ?? forward.add('param', [], { name, dtype: p.dtype, shape: [...p.shape] });
    return { name, leaf };
  }));
  const leaves = groups.flat();
  const graph = differentiate(forward, loss.node, leaves.map((l) => l.leaf));
  const gradOf = new Map(graph.outputs.filter((o) => o.name.startsWith('grad.')).map((o) => [o.name.slice('grad.'.length), o.node]));
  const add = (op: string, inputs: (Node | number)[], attrs = {}) => graph.add(op, inputs, attrs, undefined, 'optim');
  const input = (name: string, shape: readonly number[]) => graph.add('input', [], { name, dtype: 'f32', shape: [...shape] }, undefined, 'optim');

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
  const norm = add('sqrt', [sumAll(squares)]);
  // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1 (clamped to 1).
  const clipCoef = gradClip > 0 ? add('minimum', [add('div', [gradClip, add('add', [norm, 1e-6])]), 1]) : null;

  const [beta1, beta2] = optimizer.betas;
  const outputs: GraphOutput[] = [
    { name: OUTPUT_LOSS, node: loss.node },
    { name: OUTPUT_NORM, node: norm },
  ];
  optimizer.groups.forEach((_, gi) => {
    const hypers = input(hypersInput(gi), [ADAMW_HYPERS.length]);
    for (const { name, leaf } of groups[gi]) {
      const m = input(momentInput(name, 'exp_avg'), leaf.type.shape);
      const v = input(momentInput(name, 'exp_avg_sq'), leaf.type.shape);
      // One kernel per parameter: [p', m', v'] stacked (ir/ops/optim.ts), copied back into p, m and v.
      const update = add('adamw_update', [leaf, gradOf.get(name)!, m, v, hypers, ...(clipCoef ? [clipCoef] : [])], { beta1, beta2, eps: optimizer.eps });
      outputs.push({ name: nextState(name), node: update });
    }
  });
  graph.setOutputs(outputs);
  return graph;
}

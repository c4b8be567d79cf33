// compile(model): trace forward() per input signature, run the passes, prepare a backend, and call it.
// Guards (compiler/guards.ts): the arguments' types, the training flags, the state's layout and the
// buffers folded in pick a cached compilation; a change retraces. Parameters are fed as they are at each call.

import { formatLoc } from '../ir/errors.ts';
import type { Graph } from '../ir/graph.ts';
import { log } from '../ir/log.ts';
import { type AutocastDType, DEFAULT_PIPELINE, type Pass, type PassResult, checkPassOptions, runPasses, type Stage } from '../passes/index.ts';
import type { Runner } from './backend.ts';
import { type BackendName, loadBackend } from './backends.ts';
import { autocastState, checkAutocastDType } from './frontend/autocast.ts';
import type { Module } from './frontend/module.ts';
import type { Tensor } from './frontend/tensor.ts';
import { BufferReader, GuardedCache, guardKey } from './guards.ts';
import { leafFeeder, stateTensors } from './leaves.ts';
import { type Trace, forwardArgNames, rebuildOutputs, traceModule } from './tracer.ts';

export interface CompileOptions {
  /** Where compiled graphs run; default webgpu. */
  backend?: BackendName;
  /** Pass name -> on/off (see passes/index.ts); unnamed passes stay on. */
  passes?: Record<string, boolean>;
  /** The pass pipeline; the default is kiln's. */
  pipeline?: readonly Pass[];
  /** Fused attention scales the scores ("post", default) or q and k each by sqrt(scale) first ("pre_qk", guards against overflow). */
  attentionScaling?: 'post' | 'pre_qk';
  /**
   * Check token ids and targets against their ranges on the GPU too (default true): a bad one raises
   * KILN_E011 before any result is returned, as on the cpu. false skips the check (and its cost).
   */
  checkBounds?: boolean;
  /**
   * Mixed precision as torch.autocast (passes/autocast.ts): 'f16' runs matmul and attention in f16,
   * layer_norm, softmax, losses and sums in f32. Unset: a call inside `autocast('f16', fn)` autocasts
   * and one outside does not (each state its own compilation); false: never.
   */
  autocast?: AutocastDType | false;
}

type ForwardModule = Module & { forward: (...args: never[]) => unknown };
type Forward<M> = M extends { forward: (...args: infer A) => infer R } ? (...args: A) => Promise<R> : never;

/** One compilation: a trace for one input signature, its stages, and a prepared runner. */
export interface Compilation {
  readonly signature: string;
  readonly trace: Trace;
  readonly passes: PassResult;
  readonly run: Runner;
  /** The autocast dtype it was compiled with, if any. */
  readonly autocast: AutocastDType | undefined;
}

export interface CompileStats {
  traces: number;
  /** Traces after the first: each one a guard that failed. */
  recompiles: number;
  cacheHits: number;
}

export type CompiledModel<M> = Forward<M> & {
  readonly stats: CompileStats;
  /** The compilation used by the last call, for dumps and explain. */
  readonly last: Compilation | undefined;
  /** Compiles for these arguments without running (what the CLI's dump and kernels use). */
  lower(...args: Parameters<Forward<M>>): Promise<Compilation>;
  stage(name: Stage): Graph | undefined;
};

/** One fusion line per decision a pass recorded: what it fused or declined, where, and why. */
function logDecisions(result: PassResult): void {
  for (const d of result.decisions) {
    if (d.pass === 'autocast' || d.pass === 'hoist_casts') continue; // not fusions: kiln explain reports them
    const where = d.site.loc ? ` at ${formatLoc(d.site.loc)}` : '';
    log('fusion', `${d.applied ? 'fused' : 'declined'} %${d.site.id} ${d.site.op}${where}`, { pass: d.pass, rule: d.rule, kernel: d.kernel, reason: d.reason });
  }
}

export function compile<M extends ForwardModule>(model: M, options: CompileOptions = {}): CompiledModel<M> {
  const backendName = options.backend ?? 'webgpu';
  const pipeline = options.pipeline ?? DEFAULT_PIPELINE;
  checkPassOptions(pipeline, { passes: options.passes }); // at compile(), where the options came in, not at the first call
  if (options.autocast !== undefined && options.autocast !== false) checkAutocastDType(options.autocast, 'compile() option autocast');
  // One cache per autocast state: the state at the call is part of the guard, as torch.compile guards on it.
  const caches = new Map<AutocastDType | undefined, GuardedCache<Compilation>>();
  const stats: CompileStats = { traces: 0, recompiles: 0, cacheHits: 0 };
  let last: Compilation | undefined;
  const argNames = forwardArgNames(model.forward);

  /** Compiles for these arguments without running (the CLI's dump and kernels). */
  async function lower(...args: unknown[]): Promise<Compilation> {
    return lowerFor(args, stateTensors(model));
  }

  /** The compilation for these arguments and the model's state as it is now: a cached one whose guards hold, or a new trace. */
  async function lowerFor(args: readonly unknown[], state: ReadonlyMap<string, Tensor>): Promise<Compilation> {
    const autocast = options.autocast === false ? undefined : (options.autocast ?? autocastState());
    const cache = caches.get(autocast) ?? caches.set(autocast, new GuardedCache<Compilation>()).get(autocast)!;
    const key = guardKey(model, state, args, argNames);
    const shown = `forward(${key.args.map((g, i) => `${key.argNames[i]}: ${g}`).join(', ')})${autocast ? ` under autocast ${autocast}` : ''}`;
    const found = await cache.find(key, state);
    log('guards', `check ${shown} -> ${'hit' in found ? 'hit' : 'miss'}`, { cached: cache.size });
    if ('hit' in found) {
      stats.cacheHits++;
      return (last = found.hit);
    }
    if (found.miss) log('recompiles', `retracing forward(): ${found.miss}`, { traces: stats.traces + 1 });
    // Registered buffers are compile-time constants (nanoGPT's causal mask): folding and causal proofs
    // read them, and the reader records what they read, so a later write to one is a new graph.
    const buffers = await BufferReader.of(state, model);
    const trace = traceModule(model, args);
    stats.traces++;
    if (stats.traces > 1) stats.recompiles++;
    log('graph', `traced ${shown}: ${trace.graph.nodes.length} nodes`, { outputs: trace.graph.outputs.length });
    const passes = runPasses(trace.graph, pipeline, { passes: options.passes, attentionScaling: options.attentionScaling, bufferValue: buffers.value, autocast });
    logDecisions(passes);
    const backend = await loadBackend(backendName);
    const run = await backend.prepare(passes.graph, { checkBounds: options.checkBounds });
    const compilation = { signature: key.args.join(', '), trace, passes, run, autocast };
    cache.add(key, compilation, buffers);
    return (last = compilation);
  }

  async function call(...args: unknown[]): Promise<unknown> {
    // The model's current tensors: a parameter or buffer replaced since the last call is fed (or guarded) as it is now.
    const state = stateTensors(model);
    const c = await lowerFor(args, state);
    const leaf = leafFeeder(c.passes.graph, state, c.trace.argNames, args);
    const outputs = await c.run(leaf);
    return rebuildOutputs(c.trace.tree, outputs);
  }

  const compiled = Object.assign(call, { stats, lower, stage: (name: Stage) => last?.passes.stages.get(name) });
  Object.defineProperty(compiled, 'last', { get: () => last });
  return compiled as unknown as CompiledModel<M>;
}

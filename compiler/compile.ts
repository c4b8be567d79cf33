// compile(model): trace forward() per input signature, run the passes, prepare a backend, and call it.
// Guards (compiler/guards.ts): the arguments' types, the training flags, the state's layout and the
// buffers folded in pick a cached compilation; a change retraces. Parameters are fed as they are at each call.
// Dynamic length (compiler/dynamic.ts): one symbolic trace serves every length T of one dim, guarded by
// range; each length is instantiated from it (passes and backend per T, no trace) and a few are kept.

import { KilnError, formatLoc } from '../ir/errors.ts';
import type { Graph } from '../ir/graph.ts';
import { log } from '../ir/log.ts';
import { type AutocastDType, DEFAULT_PIPELINE, type Pass, type PassResult, checkPassOptions, runPasses, type Stage } from '../passes/index.ts';
import type { Runner } from './backend.ts';
import { type BackendName, loadBackend } from './backends.ts';
import { autocastState, checkAutocastDType } from './frontend/autocast.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
import { type CausalRange, type SymbolicTrace, callLength, causalRanges, changedDim, instantiate, traceSymbolic, tracingLengths } from './dynamic.ts';
import { BufferReader, GuardedCache, type GuardKey, guardKey, keyText } from './guards.ts';
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
  /**
   * The sequence length as a dynamic dim (torch.compile's dynamic): true traces one graph for every
   * length T of dim 1 of forward()'s tensor arguments (nanoGPT's idx [B, T]), T from 1 to the largest
   * the graph allows (its mask buffer's rows, else config.block_size); { dim } names another dim.
   * false compiles each length on its own. Unset (the default): the first length compiles on its own,
   * and a call that changes one dim's length makes that dim dynamic (one recompile, logged under
   * KILN_LOG=recompiles), as torch's automatic_dynamic_shapes does.
   */
  dynamic?: boolean | { dim: number };
  /**
   * Choose kernels by measuring them (torch.compile's mode="max-autotune"): where a lowering has
   * alternatives (matmul tilings), each is timed once on this GPU at the real shapes and the fastest
   * kept, cached per device and shape in memory and on disk (runtime/webgpu/autotune.ts). Default:
   * KILN_AUTOTUNE=1 turns it on; otherwise kiln's fixed rules pick. webgpu only.
   */
  autotune?: boolean;
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
  /** For a length instantiated from a dynamic trace: the symbolic trace, this length, and the causal proofs for every length. */
  readonly dynamic?: DynamicCompilation;
}

export interface DynamicCompilation {
  readonly symbolic: SymbolicTrace;
  readonly length: number;
  readonly causal: readonly CausalRange[];
}

export interface CompileStats {
  /** forward() graphs traced: a dynamic one counts once, though forward() runs at three lengths to make it. */
  traces: number;
  /** Traces after the first: each one a guard that failed. */
  recompiles: number;
  /** Calls whose guards held; a length new to a dynamic trace is one too (it is instantiated, not traced). */
  cacheHits: number;
}

/** How many lengths of one dynamic trace stay compiled (least recently used first out). */
const INSTANCES_KEPT = 4;

/** A dynamic trace and the lengths made from it, most recently used last. */
interface DynamicEntry {
  readonly symbolic: SymbolicTrace;
  readonly causal: readonly CausalRange[];
  readonly buffers: BufferReader;
  readonly instances: Map<number, Compilation>;
}

/** The compilations of one autocast state: per length, per dynamic trace, and what the last static call was. */
interface Lane {
  readonly fixed: GuardedCache<Compilation>;
  readonly dynamic: GuardedCache<DynamicEntry>;
  /** The dynamic dim: from the option, or found when a call changed one dim's length. */
  dim: number | undefined;
  /** Dynamic keys forward() is not one graph for: those compile per length. */
  readonly refused: Set<string>;
  last?: { key: GuardKey; args: readonly unknown[] };
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
  // One lane per autocast state: the state at the call is part of the guard, as torch.compile guards on it.
  const lanes = new Map<AutocastDType | undefined, Lane>();
  const stats: CompileStats = { traces: 0, recompiles: 0, cacheHits: 0 };
  let last: Compilation | undefined;
  const argNames = forwardArgNames(model.forward);
  const optionDim = options.dynamic === true ? 1 : typeof options.dynamic === 'object' ? options.dynamic.dim : undefined;

  /** Compiles for these arguments without running (the CLI's dump and kernels). */
  async function lower(...args: unknown[]): Promise<Compilation> {
    return lowerFor(args, stateTensors(model));
  }

  const shownCall = (key: GuardKey, autocast: AutocastDType | undefined) => `forward(${key.args.map((g, i) => `${key.argNames[i]}: ${g}`).join(', ')})${autocast ? ` under autocast ${autocast}` : ''}`;

  /** The compilation for these arguments and the model's state as it is now: a cached one whose guards hold, or a new trace. */
  async function lowerFor(args: readonly unknown[], state: ReadonlyMap<string, Tensor>): Promise<Compilation> {
    const autocast = options.autocast === false ? undefined : (options.autocast ?? autocastState());
    const lane = lanes.get(autocast) ?? lanes.set(autocast, { fixed: new GuardedCache(), dynamic: new GuardedCache(), dim: optionDim, refused: new Set() }).get(autocast)!;
    const key = guardKey(model, state, args, argNames);
    // Per-length compilations are looked up first (exact guards); a dynamic lane has none unless refused.
    const fixed = await lane.fixed.find(key, state);
    if (lane.dim === undefined || lane.fixed.size > 0) log('guards', `check ${shownCall(key, autocast)} -> ${'hit' in fixed ? 'hit' : 'miss'}`, { cached: lane.fixed.size });
    if ('hit' in fixed) {
      stats.cacheHits++;
      lane.last = { key, args };
      return (last = fixed.hit);
    }
    // A length changed and nothing else did: that dim becomes dynamic (automatic dynamic shapes).
    const changed = options.dynamic === undefined && lane.dim === undefined && lane.last && keyText({ ...lane.last.key, args: [] }) === keyText({ ...key, args: [] }) ? changedDim(lane.last.args, args) : undefined;
    if (changed !== undefined) {
      const was = lane.last!.key.args.map((g, i) => (g !== key.args[i] ? `${key.argNames[i]}: ${g} -> ${key.args[i]}` : '')).filter(Boolean);
      log('recompiles', `dim ${changed} of forward()'s arguments changed length (${was.join(', ')}): marking it dynamic, one graph for every length`, { traces: stats.traces + 1 });
      lane.dim = changed;
    }
    const known = changed !== undefined ? [lane.last!.args] : [];
    if (lane.dim !== undefined && options.dynamic !== false) {
      const found = await lowerDynamic(lane, lane.dim, args, state, autocast, known);
      if (found) return (last = found);
    }
    if (fixed.miss) log('recompiles', `retracing forward(): ${fixed.miss}`, { traces: stats.traces + 1 });
    // Registered buffers are compile-time constants (nanoGPT's causal mask): folding and causal proofs
    // read them, and the reader records what they read, so a later write to one is a new graph.
    const buffers = await BufferReader.of(state, model);
    const trace = traceModule(model, args);
    stats.traces++;
    if (stats.traces > 1) stats.recompiles++;
    log('graph', `traced ${shownCall(key, autocast)}: ${trace.graph.nodes.length} nodes`, { outputs: trace.graph.outputs.length });
    const compilation = await prepared(trace, key.args.join(', '), buffers, autocast);
    lane.fixed.add(key, compilation, buffers);
    lane.last = { key, args };
    return (last = compilation);
  }

  /** Runs the passes and prepares the backend for one trace. */
  async function prepared(trace: Trace, signature: string, buffers: BufferReader, autocast: AutocastDType | undefined, dynamic?: DynamicCompilation): Promise<Compilation> {
    const passes = runPasses(trace.graph, pipeline, { passes: options.passes, attentionScaling: options.attentionScaling, bufferValue: buffers.value, autocast });
    logDecisions(passes);
    const backend = await loadBackend(backendName);
    const run = await backend.prepare(passes.graph, { checkBounds: options.checkBounds, autotune: options.autotune });
    return { signature, trace, passes, run, autocast, ...(dynamic ? { dynamic } : {}) };
  }

  /**
   * The call's length instantiated from a dynamic trace whose guards hold (traced now if none does), or
   * undefined when forward() is not one graph for every length (then each length compiles on its own).
   */
  async function lowerDynamic(lane: Lane, dim: number, args: readonly unknown[], state: ReadonlyMap<string, Tensor>, autocast: AutocastDType | undefined, known: readonly (readonly unknown[])[]): Promise<Compilation | undefined> {
    const key = guardKey(model, state, args, argNames, dim);
    if (lane.refused.has(keyText(key))) return undefined;
    const t = callLength(args, argNames, dim);
    const found = await lane.dynamic.find(key, state);
    log('guards', `check ${shownCall(key, autocast)} with T=${t} -> ${'hit' in found ? 'hit' : 'miss'}`, { cached: lane.dynamic.size });
    let entry = 'hit' in found ? found.hit : undefined;
    if (entry) stats.cacheHits++;
    else {
      if ('miss' in found && found.miss) log('recompiles', `retracing forward(): ${found.miss}`, { traces: stats.traces + 1 });
      const lengths = [t, ...known.map((a) => callLength(a, argNames, dim))];
      if (tracingLengths(model, dim, lengths).length < 3) {
        log('recompiles', `compiling length ${t} on its own: one graph for every length is traced at three lengths, and none above 2 is known yet (no config.block_size)`, { traces: stats.traces + 1 });
        return undefined;
      }
      const buffers = await BufferReader.of(state, model);
      let symbolic: SymbolicTrace;
      try {
        symbolic = traceSymbolic(model, args, dim, lengths);
      } catch (e) {
        if (!(e instanceof KilnError) || e.code !== 'KILN_E011') throw e;
        lane.refused.add(keyText(key));
        log('recompiles', `not one graph for every length, compiling each length on its own: ${e.message}`, { traces: stats.traces + 1 });
        return undefined;
      }
      stats.traces++;
      if (stats.traces > 1) stats.recompiles++;
      const { range } = symbolic;
      log('graph', `traced ${shownCall(key, autocast)} at T=${symbolic.lengths.join(', ')}: ${symbolic.trace.graph.nodes.length} nodes for T in [${range.min}, ${range.max}] (${range.why})`, { outputs: symbolic.trace.graph.outputs.length });
      const causal = causalRanges(symbolic, buffers.value);
      for (const c of causal) log('fusion', `causal for T <= ${c.upTo}: %${c.site}${c.loc ? ` at ${formatLoc(c.loc)}` : ''}`, { reason: c.reason });
      entry = { symbolic, causal, buffers, instances: new Map() };
      lane.dynamic.add(key, entry, buffers);
    }
    const kept = entry.instances.get(t);
    entry.instances.delete(t);
    if (kept) return entry.instances.set(t, kept).get(t);
    const named = args.findIndex((a) => a instanceof Tensor && a.shape.length > dim);
    let trace: Trace;
    try {
      trace = instantiate(entry.symbolic, t, argNames[named] ?? `arg${named}`);
    } catch (e) {
      // Outside the range: the caller's error. Inside it but not instantiable: a kiln refusal; compile this length on its own.
      if (!(e instanceof KilnError) || e.code === 'KILN_E014') throw e;
      log('recompiles', `length ${t} does not instantiate the graph traced at T=${entry.symbolic.lengths.join(', ')}, compiling it on its own: ${e.message}`, { traces: stats.traces + 1 });
      return undefined;
    }
    log('graph', `instantiated forward() at T=${t}: ${trace.graph.nodes.length} nodes`, { kept: entry.instances.size + 1 });
    const compilation = await prepared(trace, guardKey(model, state, args, argNames).args.join(', '), entry.buffers, autocast, { symbolic: entry.symbolic, length: t, causal: entry.causal });
    entry.instances.set(t, compilation);
    if (entry.instances.size > INSTANCES_KEPT) entry.instances.delete(entry.instances.keys().next().value!);
    return compilation;
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

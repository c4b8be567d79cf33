// compile(model): trace forward() per input signature, run the passes, prepare a backend, and call it.
// Guards: input dtypes and shapes (and non-tensor arguments) pick a cached compilation; a change retraces.

import { KilnError, formatLoc } from '../ir/errors.ts';
import type { Graph } from '../ir/graph.ts';
import type { HostTensor } from '../ir/host.ts';
import { log } from '../ir/log.ts';
import { formatType } from '../ir/types.ts';
import { DEFAULT_PIPELINE, type Pass, type PassResult, checkPassOptions, runPasses, type Stage } from '../passes/index.ts';
import { type BackendName, type ExecutionBackend, type Runner, cpuBackend } from './backends.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
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
}

type ForwardModule = Module & { forward: (...args: never[]) => unknown };
type Forward<M> = M extends { forward: (...args: infer A) => infer R } ? (...args: A) => Promise<R> : never;

/** One compilation: a trace for one input signature, its stages, and a prepared runner. */
export interface Compilation {
  readonly signature: string;
  readonly trace: Trace;
  readonly passes: PassResult;
  readonly run: Runner;
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

const backends = new Map<BackendName, () => Promise<ExecutionBackend>>([['cpu', async () => cpuBackend]]);

/** Backends other than cpu register here (compiler/webgpu.ts), so the core never imports WebGPU. */
export function registerBackend(name: BackendName, load: () => Promise<ExecutionBackend>): void {
  backends.set(name, load);
}

export async function loadBackend(name: BackendName): Promise<ExecutionBackend> {
  const load = backends.get(name);
  if (!load) throw new KilnError('KILN_E011', `unknown backend "${name}"; use cpu or webgpu`);
  return load();
}

/** The guard key: dtype and shape of each tensor argument, the value of every other argument. */
export function signatureOf(args: readonly unknown[]): string {
  return guardedValues(args).join(', ');
}

function guardedValues(args: readonly unknown[]): string[] {
  return args.map((a) => (a instanceof Tensor ? formatType(a.type) : JSON.stringify(a) ?? 'undefined'));
}

/** `idx: i32[2,24] -> i32[2,12]`: the arguments whose guarded value differs, for the recompiles log. */
function changedArguments(before: readonly string[], after: readonly string[], names: readonly string[]): string {
  const changed = [];
  for (let i = 0; i < Math.max(before.length, after.length); i++) {
    if (before[i] !== after[i]) changed.push(`${names[i] ?? `arg${i}`}: ${before[i] ?? 'absent'} -> ${after[i] ?? 'absent'}`);
  }
  return changed.join('; ');
}

/** One fusion line per decision a pass recorded: what it fused or declined, where, and why. */
function logDecisions(result: PassResult): void {
  for (const d of result.decisions) {
    const where = d.site.loc ? ` at ${formatLoc(d.site.loc)}` : '';
    log('fusion', `${d.applied ? 'fused' : 'declined'} %${d.site.id} ${d.site.op}${where}`, { pass: d.pass, rule: d.rule, kernel: d.kernel, reason: d.reason });
  }
}

const hostIds = new WeakMap<HostTensor, number>();
let nextHostId = 1;

/** A number per host tensor object: buffers are guarded by which data they hold. */
function hostId(host: HostTensor): number {
  let id = hostIds.get(host);
  if (id === undefined) hostIds.set(host, (id = nextHostId++));
  return id;
}

/** Which data each registered buffer holds: buffers are folded in as constants, so new data is a new graph. */
export function buffersVersion(model: Module): string {
  return model.namedBuffers().map(([, b]) => (b.host ? hostId(b.host) : 0)).join(',');
}

/** `tte`: each module's training flag, in module order. Dropout's behaviour is traced in, so it is guarded. */
export function trainingModes(model: Module): string {
  return [...model.namedModules()].map(([, m]) => (m.training ? 't' : 'e')).join('');
}

export function compile<M extends ForwardModule>(model: M, options: CompileOptions = {}): CompiledModel<M> {
  const backendName = options.backend ?? 'webgpu';
  const pipeline = options.pipeline ?? DEFAULT_PIPELINE;
  checkPassOptions(pipeline, options); // at compile(), where the options came in, not at the first call
  const cache = new Map<string, Compilation>();
  const stats: CompileStats = { traces: 0, recompiles: 0, cacheHits: 0 };
  let last: Compilation | undefined;

  const state = stateTensors(model);


  const argNames = forwardArgNames(model.forward);
  /** The guarded values of the last compilation used, to say which argument changed when a guard fails. */
  let lastGuarded: string[] | undefined;

  async function lower(...args: unknown[]): Promise<Compilation> {
    const guarded = guardedValues(args);
    const signature = guarded.join(', ');
    // Buffers are folded in as constants, so a buffer given new values (a loaded checkpoint) is a new graph.
    // So is train() / eval(): dropout is traced in as active or as the identity.
    const key = `${signature} | buffers ${buffersVersion(model)} | modes ${trainingModes(model)}`;
    const hit = cache.get(key);
    const shown = `forward(${guarded.map((g, i) => `${argNames[i] ?? `arg${i}`}: ${g}`).join(', ')})`;
    log('guards', `check ${shown} -> ${hit ? 'hit' : 'miss'}`, { cached: cache.size });
    if (hit) {
      stats.cacheHits++;
      lastGuarded = guarded;
      return (last = hit);
    }
    if (lastGuarded) log('recompiles', `retracing forward(): ${changedArguments(lastGuarded, guarded, argNames)}`, { traces: stats.traces + 1 });
    const trace = traceModule(model, args);
    stats.traces++;
    if (stats.traces > 1) stats.recompiles++;
    log('graph', `traced ${shown}: ${trace.graph.nodes.length} nodes`, { outputs: trace.graph.outputs.length });
    const passes = runPasses(trace.graph, pipeline, {
      passes: options.passes,
      attentionScaling: options.attentionScaling,
      // Registered buffers are compile-time constants (nanoGPT's causal mask): folding and causal proofs read them.
      bufferValue: (name) => state.get(name)?.host,
    });
    logDecisions(passes);
    const backend = await loadBackend(backendName);
    const run = await backend.prepare(passes.graph);
    const compilation = { signature, trace, passes, run };
    cache.set(key, compilation);
    lastGuarded = guarded;
    return (last = compilation);
  }

  async function call(...args: unknown[]): Promise<unknown> {
    const c = await lower(...args);
    const leaf = leafFeeder(c.passes.graph, state, c.trace.argNames, args);
    const outputs = await c.run(leaf);
    return rebuildOutputs(c.trace.tree, outputs);
  }

  const compiled = Object.assign(call, { stats, lower, stage: (name: Stage) => last?.passes.stages.get(name) });
  Object.defineProperty(compiled, 'last', { get: () => last });
  return compiled as unknown as CompiledModel<M>;
}

// compileGenerator(model): nanoGPT's generate() with a KV cache, derived from the user's unchanged
// forward() (passes/kv-cache.ts). A prompt runs once through a prefill graph (forward() at its length,
// fused causal attention, writing each layer's k and v into cache tensors the generator owns, on the
// device it runs on); each further token runs one decode graph (forward() at T = 1 against the caches,
// decode_attention). Sampling runs in the graph (ir/ops/sample.ts): per token only the sampled ids come
// back to the host.
//
// nanoGPT's semantics: the model sees the last block_size tokens. A prompt longer than block_size is
// cropped to its last block_size tokens; once the context outgrows the cache (block_size positions,
// or maxTokens), each token runs a fresh prefill of the last `capacity` tokens, since with learned
// absolute positions every cached key would move to another position. `cache: false` recomputes the
// window for every token (nanoGPT's loop, with the same in-graph sampling).

import { lowerGraph } from '../codegen/index.ts';
import { KilnError } from '../ir/errors.ts';
import type { Graph } from '../ir/graph.ts';
import { allocData } from '../ir/host.ts';
import { mixDropoutSeed } from '../ir/ops/attention.ts';
import type { TensorType } from '../ir/types.ts';
import { type AutocastDType, DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';
import { type CacheRows, type KvCachePlan, type SampleAttrs, cacheRowsOf, checkSameGraph, decodeGraph, planKvCache, prefillGraph } from '../passes/kv-cache.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import type { Runner } from './backend.ts';
import { type BackendName, loadBackend } from './backends.ts';
import { type SymbolicTrace, instantiate, traceSymbolic } from './dynamic.ts';
import { autocastState, checkAutocastDType } from './frontend/autocast.ts';
import type { Module } from './frontend/module.ts';
import { Tensor } from './frontend/tensor.ts';
import { BufferReader } from './guards.ts';
import { leafFeeder, stateTensors } from './leaves.ts';
import { type Trace, traceModule } from './tracer.ts';

export interface GeneratorOptions {
  /** Where the graphs run; default webgpu. */
  backend?: BackendName;
  /** Cache capacity in positions; default (and at most) the model's config.block_size. */
  maxTokens?: number;
  /** Mixed precision as compile()'s option: 'f16' runs matmul and attention (and the caches) in f16. */
  autocast?: AutocastDType | false;
  /** One symbolic trace for every prompt length (compiler/dynamic.ts), default true; false traces each length. */
  dynamic?: boolean;
}

export interface GenerateOptions {
  maxNewTokens: number;
  /** Default 1.0. */
  temperature?: number;
  /** Keep the k largest logits (nanoGPT's top_k); null or 0: all. */
  topK?: number | null;
  /** The argmax instead of a draw. */
  greedy?: boolean;
  /** Seeds the draws: token i of a run draws with (seed, i), on every backend and with or without the cache; a new seed compiles nothing. */
  seed?: number;
  /** false: recompute the whole window for every token (no KV cache). Default true. */
  cache?: boolean;
  /** Called after each sampled token (all rows), before the next step runs. */
  onToken?: (step: GeneratedStep) => void | Promise<void>;
  /** Read each step's logits back too (tests; costs a readback per token). */
  keepLogits?: boolean;
}

export interface GeneratedStep {
  /** 0 for the first new token. */
  readonly index: number;
  /** One id per prompt row. */
  readonly tokens: readonly number[];
  /** With keepLogits: the logits the tokens were drawn from, [rows, V] row-major. */
  readonly logits?: Float32Array;
  /** How the step ran: the prompt's prefill, a decode step, or a fresh prefill of the cropped window. */
  readonly kind: 'prefill' | 'decode' | 'window';
}

export interface GenerateResult {
  /** The new tokens of each row (the prompt not included). */
  readonly tokens: number[][];
  /** The prompt's tokens (per row) over the first step's time. */
  readonly prefillTokensPerS: number;
  /** The tokens after the first (per row) over their time; NaN when there were none. */
  readonly decodeTokensPerS: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  /** Kernels (dispatches) the last step's graph ran: the decode step's with the cache; the cache copies are not kernels. */
  readonly kernelsPerToken: number;
}

export interface Generator {
  readonly capacity: number;
  readonly blockSize: number;
  readonly vocabSize: number;
  generate(prompt: readonly number[] | readonly (readonly number[])[], options: GenerateOptions): Promise<GenerateResult>;
  /** The decode step's graph after the lowered passes (what `kiln dump --stage decode` prints), for `batch` rows. */
  decodeStage(batch: number, sampling?: Partial<SampleAttrs>): Promise<Graph>;
  /** The derivation's findings: positions, attention sites, logits (what `kiln explain` lists). */
  plan(batch: number): Promise<{ plan: KvCachePlan; fused: Graph }>;
  /** Kernels (dispatches) one decode step runs, for `batch` rows; the cache copies (2 per layer) are not kernels. */
  kernelsPerToken(batch: number, sampling?: Partial<SampleAttrs>): Promise<number>;
}

/** One step's rows for one cache: `count` elements of `rows` from element `from` on go into `cache` from element `offset` on. */
export interface CacheWrite {
  readonly cache: Tensor;
  readonly rows: Tensor;
  readonly offset: number;
  readonly from: number;
  readonly count: number;
}

/** Where cache tensors live and how a step's rows get into them (compiler/generate-webgpu.ts on the GPU). */
export interface CacheStorage {
  zeros(type: TensorType, label: string): Promise<Tensor>;
  /** Makes the writes, after everything already queued (on the GPU: one submit of copies). */
  writeRows(writes: readonly CacheWrite[]): void;
}

const hostStorage: CacheStorage = {
  async zeros(type) {
    return new Tensor(type, { host: { type, data: allocData(type.dtype, type.shape.reduce((a, b) => a * b, 1), 'f32') } });
  },
  writeRows(writes) {
    for (const w of writes) w.cache.readHost()!.data.set(w.rows.readHost()!.data.subarray(w.from, w.from + w.count), w.offset);
  },
};

const FUSED_PIPELINE = DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered');
const LOWERED_PIPELINE = DEFAULT_PIPELINE.filter((p) => p.stage === 'lowered');

/**
 * The copies that put a decode step's new rows into a cache at position `pos`: output `rows` [R, W] holds
 * row r's `count` elements from column `column` (passes/kv-cache.ts cacheRowsOf), and the cache [S, R...]
 * takes them at (pos * R + r) * count: one copy when the rows are whole (W = count), else one per row.
 */
function rowWrites(cache: Tensor, out: ReadonlyMap<string, Tensor>, where: CacheRows, pos: number): CacheWrite[] {
  const rows = out.get(where.output)!;
  const width = rows.type.shape[rows.type.shape.length - 1];
  const r = rows.type.shape.reduce((a, b) => a * b, 1) / width;
  if (width === where.count) return [{ cache, rows, offset: pos * r * width, from: 0, count: r * width }];
  return Array.from({ length: r }, (_, i) => ({ cache, rows, offset: (pos * r + i) * where.count, from: i * width + where.column, count: where.count }));
}

type ForwardModule = Module & { forward: (...args: never[]) => unknown };

function fail(detail: string): never {
  throw new KilnError('KILN_E011', detail);
}

function samplingOf(options: Partial<GenerateOptions>): SampleAttrs {
  const greedy = options.greedy === true;
  const temperature = options.temperature ?? 1;
  const topK = options.topK ?? 0;
  const seed = options.seed ?? 0;
  if (!greedy && !(temperature > 0 && Number.isFinite(temperature))) fail(`temperature must be a positive number, got ${temperature}; use greedy for the argmax`);
  if (!Number.isInteger(topK) || topK < 0) fail(`top_k must be a positive integer (or 0/null for all), got ${topK}`);
  if (!Number.isInteger(seed)) fail(`seed must be an integer, got ${seed}`);
  return { greedy, temperature, topK, seed };
}

/** Rows of the prompt: one list of ids, or equally long lists (one per batch row). */
function promptRows(prompt: readonly number[] | readonly (readonly number[])[], vocab: number): number[][] {
  const rows = (prompt.length > 0 && Array.isArray(prompt[0]) ? prompt : [prompt]) as readonly (readonly number[])[];
  if (rows.length === 0 || rows.some((r) => r.length === 0)) fail('the prompt is empty; give at least one token id (nanoGPT starts from "\\n", id 0 in the char vocabulary)');
  if (rows.some((r) => r.length !== rows[0].length)) fail(`prompt rows have different lengths (${rows.map((r) => r.length).join(', ')}); give every row the same number of tokens`);
  for (const [b, r] of rows.entries()) {
    const bad = r.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad >= 0) fail(`prompt token ${bad}${rows.length > 1 ? ` of row ${b}` : ''} is ${r[bad]}, outside the vocabulary [0, ${vocab})`);
  }
  return rows.map((r) => [...r]);
}

export async function compileGenerator(model: ForwardModule, options: GeneratorOptions = {}): Promise<Generator> {
  const backendName = options.backend ?? 'webgpu';
  const config = (model as { config?: { block_size?: unknown; vocab_size?: unknown } }).config ?? {};
  const blockSize = typeof config.block_size === 'number' ? config.block_size : options.maxTokens;
  if (blockSize === undefined) fail('compileGenerator needs the model\'s config.block_size (or the maxTokens option): how many positions the model has');
  const capacity = options.maxTokens ?? blockSize;
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > blockSize) fail(`maxTokens must be an integer in [1, block_size ${blockSize}], got ${capacity}: positions past block_size have no embedding`);
  if (options.autocast !== undefined && options.autocast !== false) checkAutocastDType(options.autocast, 'compileGenerator() option autocast');
  const autocast = options.autocast === false ? undefined : (options.autocast ?? autocastState());
  const state = stateTensors(model);
  const buffers = await BufferReader.of(state, model);
  const backend = await loadBackend(backendName);
  const storage: CacheStorage & { limits?: KernelLimits } = backendName === 'webgpu' ? await (await import('./generate-webgpu.ts')).gpuCacheStorage() : hostStorage;
  const dynamic = options.dynamic !== false;

  const ids = (batch: number, t: number) => new Tensor({ dtype: 'i32', shape: [batch, t] }, { host: { type: { dtype: 'i32', shape: [batch, t] }, data: new Int32Array(batch * t) } });
  const symbolic = new Map<number, SymbolicTrace>();
  function traceAt(batch: number, t: number): Trace {
    if (!dynamic) return traceModule(model, [ids(batch, t)]);
    let sym = symbolic.get(batch);
    if (!sym) symbolic.set(batch, (sym = traceSymbolic(model, [ids(batch, Math.min(2, blockSize!))], 1, [Math.min(2, blockSize!)])));
    return instantiate(sym, t, 'the prompt');
  }
  const fusedGraphs = new Map<string, Graph>();
  function fusedAt(batch: number, t: number): Graph {
    const key = `${batch}x${t}`;
    let g = fusedGraphs.get(key);
    if (!g) fusedGraphs.set(key, (g = runPasses(traceAt(batch, t).graph, FUSED_PIPELINE, { bufferValue: buffers.value, autocast }).graph));
    return g;
  }
  const lowered = (g: Graph) => runPasses(g, LOWERED_PIPELINE, { bufferValue: buffers.value, autocast }).graph;

  const plans = new Map<number, { plan: KvCachePlan; fused: Graph }>();
  async function plan(batch: number) {
    let p = plans.get(batch);
    if (!p) {
      if (blockSize! < 3) fail(`the KV cache is derived from forward() at lengths 2 and 3, and block_size is ${blockSize}; generate with cache: false`);
      const fused = fusedAt(batch, 1);
      const two = fusedAt(batch, 2);
      const found = planKvCache(two, fusedAt(batch, 3));
      checkSameGraph(fused, two, 'T = 1 and T = 2');
      plans.set(batch, (p = { plan: found, fused }));
    }
    return p;
  }

  const vocabSize = typeof config.vocab_size === 'number' ? config.vocab_size : fusedAt(1, 1).outputs[0].node.type.shape.at(-1)!;

  interface Prepared {
    graph: Graph;
    run: Runner;
    kernels?: number;
  }
  const kernelsOf = (p: Prepared) => (p.kernels ??= lowerGraph(p.graph, storage.limits).kernels.length);
  const prepared = new Map<string, Promise<Prepared>>();
  function prepare(key: string, make: () => Promise<Graph>): Promise<Prepared> {
    let p = prepared.get(key);
    if (!p) {
      p = make().then(async (graph) => ({ graph, run: await backend.prepare(graph) }));
      p.catch(() => prepared.delete(key));
      prepared.set(key, p);
    }
    return p;
  }
  const samplingKey = (s: SampleAttrs, keep: boolean) => `${s.greedy ? 'greedy' : `t${s.temperature}k${s.topK}`}${keep ? '+logits' : ''}`;
  async function decodeStage(batch: number, sampling: SampleAttrs, keepLogits: boolean): Promise<Graph> {
    const { plan: p, fused } = await plan(batch);
    return lowered(decodeGraph(fused, p, capacity, { sampling, keepLogits }));
  }
  const decodeFor = (batch: number, s: SampleAttrs, keep: boolean) => prepare(`decode:${batch}:${samplingKey(s, keep)}`, () => decodeStage(batch, s, keep));
  const prefillFor = (batch: number, t: number, s: SampleAttrs, keep: boolean, rows: boolean) =>
    prepare(`prefill:${batch}:${t}:${rows}:${samplingKey(s, keep)}`, async () => {
      const p = rows ? (await plan(batch)).plan : planWithoutCache(batch);
      return lowered(prefillGraph(fusedAt(batch, t), p, { sampling: s, keepLogits: keep, cacheRows: rows }));
    });
  /** Without the cache only the logits output matters: no proof of the decode step is needed. */
  function planWithoutCache(batch: number): KvCachePlan {
    const g = fusedAt(batch, 1);
    const logits = g.outputs.find((o) => o.name === 'logits') ?? (g.outputs.length === 1 ? g.outputs[0] : undefined);
    if (!logits) fail(`kiln cannot find the logits among forward()'s outputs (${g.outputs.map((o) => o.name).join(', ')}); return them as the only tensor or as \`logits\``);
    return { positions: [], sites: [], logits: { name: logits.name, lastOnly: false } };
  }

  const caches = new Map<string, Tensor[]>();
  async function cachesFor(batch: number, graph: Graph): Promise<Map<string, Tensor>> {
    const leaves = graph.nodes.filter((n) => n.op === 'input' && /^[kv]_cache\.\d+$/.test(String(n.attrs.name)));
    const key = `${batch}`;
    let list = caches.get(key);
    if (!list) caches.set(key, (list = await Promise.all(leaves.map((n) => storage.zeros(n.type, String(n.attrs.name))))));
    return new Map(leaves.map((n, i) => [String(n.attrs.name), list![i]]));
  }

  const scalar = (v: number) => new Tensor({ dtype: 'i32', shape: [] }, { host: { type: { dtype: 'i32', shape: [] }, data: Int32Array.of(v) } });
  const idsOf = (rows: readonly (readonly number[])[]) => new Tensor({ dtype: 'i32', shape: [rows.length, rows[0].length] }, { host: { type: { dtype: 'i32', shape: [rows.length, rows[0].length] }, data: Int32Array.from(rows.flat()) } });

  async function step(p: Prepared, inputs: Record<string, Tensor>, keepLogits: boolean) {
    const names = Object.keys(inputs);
    const leaf = leafFeeder(p.graph, state, names, names.map((n) => inputs[n]));
    const out = await p.run(leaf);
    const tokens = Array.from((await out.get('tokens')!.data()) as Int32Array);
    const logits = keepLogits ? Float32Array.from((await out.get('logits')!.data()) as ArrayLike<number>) : undefined;
    return { out, tokens, logits };
  }

  async function generate(prompt: readonly number[] | readonly (readonly number[])[], o: GenerateOptions): Promise<GenerateResult> {
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) fail(`max new tokens must be an integer >= 0, got ${o.maxNewTokens}`);
    // The seed reaches the graphs through the counter (token i draws with mixDropoutSeed(seed, i)), so one
    // compiled graph serves every seed; the graphs' own seed attr stays 0.
    const asked = samplingOf(o);
    const sampling = { ...asked, seed: 0 };
    const keep = o.keepLogits === true;
    const useCache = o.cache !== false;
    // nanoGPT crops the context to its last block_size tokens; a prompt that still does not fit the cache is refused.
    const rows = promptRows(prompt, vocabSize).map((r) => r.slice(-blockSize!));
    const batch = rows.length;
    if (useCache && rows[0].length > capacity) fail(`the prompt has ${rows[0].length} tokens and the cache holds ${capacity} (maxTokens); raise maxTokens up to block_size ${blockSize}, or crop the prompt`);
    const window = useCache ? capacity : blockSize!;
    const produced: number[][] = rows.map(() => []);
    const context = rows.map((r) => [...r]);
    let prefillMs = 0;
    let decodeMs = 0;
    let last: Prepared | undefined;
    const counter = (i: number): Record<string, Tensor> => (sampling.greedy ? {} : { counter: scalar(mixDropoutSeed(asked.seed, i) | 0) });
    // Compiled before the clock starts: the rates measure running, not tracing and pipeline creation.
    if (o.maxNewTokens > 0) await prefillFor(batch, Math.min(context[0].length, window), sampling, keep, useCache);
    if (useCache && o.maxNewTokens > 1) await decodeFor(batch, sampling, keep);
    for (let i = 0; i < o.maxNewTokens; i++) {
      const start = performance.now();
      const length = context[0].length;
      let result: Awaited<ReturnType<typeof step>>;
      let kind: GeneratedStep['kind'];
      if (!useCache || i === 0 || length > window) {
        // A prefill: the prompt, each token without the cache, or the cropped window once the context outgrows the cache.
        const win = context.map((r) => r.slice(-window));
        const p = await prefillFor(batch, win[0].length, sampling, keep, useCache);
        result = await step((last = p), { idx: idsOf(win), ...counter(i) }, keep);
        if (useCache) {
          const kv = await cachesFor(batch, (await decodeFor(batch, sampling, keep)).graph);
          storage.writeRows(
            [...kv].map(([name, cache]) => {
              const rows = result.out.get(name.replace('_cache', ''))!;
              return { cache, rows, offset: 0, from: 0, count: rows.type.shape.reduce((a, b) => a * b, 1) };
            }),
          );
        }
        kind = i === 0 ? 'prefill' : useCache ? 'window' : 'decode';
      } else {
        // One decode step: the newest token at position length - 1 against the length - 1 cached ones.
        const p = await decodeFor(batch, sampling, keep);
        const kv = await cachesFor(batch, p.graph);
        const pos = length - 1;
        result = await step((last = p), { idx: idsOf(context.map((r) => [r[pos]])), pos: scalar(pos), ...counter(i), ...Object.fromEntries(kv) }, keep);
        storage.writeRows([...kv].flatMap(([name, cache]) => rowWrites(cache, result.out, cacheRowsOf(p.graph, name), pos)));
        kind = 'decode';
      }
      const ms = performance.now() - start;
      if (i === 0) prefillMs = ms;
      else decodeMs += ms;
      for (const [b, id] of result.tokens.entries()) {
        produced[b].push(id);
        context[b].push(id);
      }
      await o.onToken?.({ index: i, tokens: result.tokens, ...(result.logits ? { logits: result.logits } : {}), kind });
    }
    return {
      tokens: produced,
      prefillTokensPerS: o.maxNewTokens > 0 ? (Math.min(rows[0].length, window) * 1000) / prefillMs : NaN,
      decodeTokensPerS: o.maxNewTokens > 1 ? ((o.maxNewTokens - 1) * 1000) / decodeMs : NaN,
      prefillMs,
      decodeMs,
      kernelsPerToken: last ? kernelsOf(last) : 0,
    };
  }

  return {
    capacity,
    blockSize,
    vocabSize,
    generate,
    plan,
    decodeStage: (batch, sampling = {}) => decodeStage(batch, samplingOf(sampling), false),
    kernelsPerToken: async (batch, sampling = {}) => lowerGraph(await decodeStage(batch, samplingOf(sampling), false), storage.limits).kernels.length,
  };
}

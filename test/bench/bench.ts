// kiln's benchmark: `npm run bench -- --suite attention|matmul|nanogpt|train|generate|all (or a comma list) [--json OUT] [--smoke] [--no-peers]
// [--dtype f32,f16] [--train-small | --train-gpt2] [--autotune]`.
// Every case times its variants in this one process, on whatever adapter kiln finds: kiln's own first,
// each kind in f32 and in f16 (f16 inputs, or autocast for the models), then the peers (onnxruntime-web,
// tfjs-webgpu, jax-js, in f32) on the same adapter, each checked against kiln's output. It prints each
// median with its spread, its ratio to kiln's first variant and an f16 variant's ratio to its f32
// counterpart, and kiln's peak GPU bytes; `--json OUT` keeps every number with the date and the adapter
// (report.ts makes BENCHMARKS.md, PyTorch's records of the same GPU call merged in). On a device without
// shader-f16 the f16 variants are listed as skipped, saying why.

import { type CompileOptions, compile } from '../../compiler/compile.ts';
import { tensor } from '../../compiler/frontend/create.ts';
import type { Tensor } from '../../compiler/frontend/tensor.ts';
import { AdamW } from '../../compiler/optim.ts';
import { type StepResult, type TrainStepOptions, compileTrainStep } from '../../compiler/train-step.ts';
import { manualSeed } from '../../compiler/frontend/random.ts';
import { compileGenerator } from '../../compiler/generate.ts';
import createModel, { type GPTConfig } from '../../examples/nanogpt/model.ts';
import type { Graph } from '../../ir/graph.ts';
import { numel } from '../../ir/types.ts';
import { writeFileAtomic } from '../../runtime/files.ts';
import { type KilnDevice, getDevice, releaseDevice } from '../../runtime/webgpu/index.ts';
import {
  ATTENTION_KINDS, type AttentionKind, type BackwardRule, attentionBackwardGraph, attentionGraph, graphOutput, inputsOf, matmulGraph, minTraffic, optimized,
  productGraph, runVariant, timeGraph, withPeakBytes,
} from './kiln-cases.ts';
import { measure, measureInterleaved, setMeasureDefaults } from './measure.ts';
import { jaxAttention } from './peers/jax.ts';
import { ortAttention } from './peers/ort.ts';
import { type AttentionShape, type PeerVariant, sharePeersKilnGpu, timePeer, unsharePeersKilnGpu } from './peers/peer.ts';
import { tfjsAttention, tfjsMatmul } from './peers/tfjs.ts';
import {
  BENCH_DTYPES, type BenchDtype, type BenchReport, type CaseResult, type VariantResult, flagValue, formatBandwidth, formatCase, formatRate, oneLine,
} from './results.ts';

export type { BenchReport, CaseResult, VariantResult } from './results.ts';

interface SuiteOptions {
  readonly smoke: boolean;
  /** The dtypes kiln's variants run in (`--dtype`, default f32 and f16). */
  readonly dtypes: readonly BenchDtype[];
}
type Suite = (kdev: KilnDevice, opts: SuiteOptions) => Promise<CaseResult[]>;

const ATTENTION_PEERS: PeerVariant<AttentionShape>[] = [ortAttention, tfjsAttention, jaxAttention];
const MATMUL_PEERS: PeerVariant<number>[] = [tfjsMatmul];
const ALL_PEERS = [...ATTENTION_PEERS, ...MATMUL_PEERS];

/** f16's unit roundoff 2^-11: the largest relative error of rounding a value to f16. */
const U16 = 2 ** -11;

/** What an f16 model variant says where compile()/compileTrainStep() made no f16 node of `autocast: 'f16'` (the option is not in this build). */
export const AUTOCAST_UNAVAILABLE = "not available: autocast: 'f16' made no f16 node (no autocast in this build)";

/** The float inputs of a kiln graph by name, as the peers take them. */
function floatInputs(graph: Graph): Map<string, Float32Array> {
  return new Map([...inputsOf(graph)].filter(([, t]) => t.type.dtype === 'f32').map(([name, t]) => [name, t.data as Float32Array]));
}

function maxAbs(x: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]));
  return m;
}

/** max |got - ref| (NaN and inf count as infinite), over `scale`: the normwise difference of an f16 output from its f32 counterpart's. */
function relativeDiff(got: ArrayLike<number>, ref: ArrayLike<number>, scale: number): number {
  if (got.length !== ref.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const diff = Math.abs(got[i] - ref[i]);
    if (!(diff <= worst)) worst = Number.isFinite(diff) ? diff : Infinity; // NaN counts as the worst
  }
  return worst / (scale || 1);
}

/**
 * The check of an f16 output against the same kind's f32 output (same inputs, same process): `max |diff| vs f32 r of what`,
 * `WRONG: ...` past `tolerance` (relative to the same scale) when there is one.
 */
function checkF16(got: ArrayLike<number>, ref: ArrayLike<number>, scale: number, what: string, tolerance?: number): string {
  const r = relativeDiff(got, ref, scale);
  const text = `max |diff| vs f32 ${r.toExponential(1)} of ${what}${tolerance === undefined ? '' : ` (tolerance ${tolerance.toExponential(1)})`}`;
  return tolerance === undefined ? (Number.isFinite(r) ? text : `WRONG: ${text}`) : r <= tolerance ? text : `WRONG: ${text}`;
}

/** Outputs larger than this (elements) are not read back for the f16 check (GPT-2's q @ k^T would be 1.2 GB of host arrays). */
const CHECK_LIMIT = 2 ** 26;

const ATTENTION_NAMES: Record<AttentionKind, string> = { fused: 'kiln fused', masked: 'kiln fused masked', unfused: 'kiln unfused' };
const BACKWARD_NAMES: Record<BackwardRule, string> = { flash: 'kiln flash backward', composed: 'kiln composed backward' };

const attention = (peers: boolean): Suite => async (kdev, { smoke, dtypes }) => {
  // Smoke keeps T < 32: onnxruntime-web's flash kernel is wrong there on SwiftShader's 4-wide subgroups.
  // GPT-2 124M's attention, shakespeare-char's, and a D = 128 head (LLaMA-style) at GPT-2's length.
  const shapes = smoke ? [[1, 2, 16, 8]] : [[12, 12, 1024, 64], [64, 6, 256, 64], [12, 12, 1024, 128]];
  const out: CaseResult[] = [];
  for (const [b, h, t, d] of shapes) {
    const usefulFlops = 2 * b * h * t * t * d; // q@k^T and p@v over the causal half
    const variants: VariantResult[] = [];
    const f32Out = new Map<AttentionKind, Float32Array>();
    for (const dtype of dtypes) {
      for (const kind of ATTENTION_KINDS) {
        const name = `${ATTENTION_NAMES[kind]} ${dtype}`;
        const graph = attentionGraph(b, h, t, d, kind, dtype);
        variants.push(await runVariant(kdev, name, dtype, async () => {
          const r = await timeGraph(kdev, graph, { output: true });
          const rate = formatRate(usefulFlops, r.timing.medianMs);
          const bandwidth = formatBandwidth(minTraffic(graph), r.timing.medianMs);
          if (dtype === 'f32') f32Out.set(kind, r.output!);
          const ref = f32Out.get(kind);
          let check: string | undefined;
          if (dtype === 'f16' && ref) {
            // y = sum_j p_j v_j with sum_j p_j = 1. f16 rounds q and k (scaled by sqrt(scale), "pre_qk") or the
            // scores q k^T and their scaling (the unfused chain): each score moves by at most 3u S, S = D max|q|
            // max|k| scale the largest |score|; a softmax weight then moves by at most twice that, relatively
            // (6u S), and so y by 6u S max|v|; storing p and y in f16 adds u max|v| each: (6S + 2) u max|v|.
            const hosts = inputsOf(graph);
            const [mq, mk, mv] = ['q', 'k', 'v'].map((x) => maxAbs(hosts.get(x)!.data));
            check = checkF16(r.output!, ref, mv, 'max |v|', (6 * d * mq * mk / Math.sqrt(d) + 2) * U16);
          }
          return { timing: r.timing, rate, bandwidth, kernels: r.kernels, peakBytes: r.peakBytes, ...(check ? { check } : {}) };
        }, `${ATTENTION_NAMES[kind]} f32`));
      }
    }
    if (peers) {
      const graph = attentionGraph(b, h, t, d, 'fused');
      const [inputs, reference] = [floatInputs(graph), await graphOutput(kdev, graph)];
      for (const peer of ATTENTION_PEERS) {
        const v = await timePeer(peer, { b, h, t, d }, inputs, reference, { smoke });
        variants.push(v.timing ? { ...v, rate: formatRate(usefulFlops, v.timing.medianMs) } : v);
      }
    }
    out.push({ suite: 'attention', name: `causal attention B${b} H${h} T${t} D${d}`, variants });
    out.push(await attentionBackward(kdev, b, h, t, d, dtypes));
  }
  return out;
};

/**
 * Causal attention's forward and backward (dq, dk, dv from the output's gradient), through kiln's passes
 * as a compiled training step's would be: the flash backward kernels against the composed chain, each in
 * f32 and f16. The forward is included (the backward reads its output). test/bench/attention-backward.ts
 * times the same graphs from the command line, kernel by kernel with --sweep.
 */
async function attentionBackward(kdev: KilnDevice, b: number, h: number, t: number, d: number, dtypes: readonly BenchDtype[]): Promise<CaseResult> {
  // Useful FLOPs: the forward's two products and the backward's four (dV = P^T dO, dP = dO V^T, dQ = dS K,
  // dK = dS^T Q), each 2 B H T T D over the causal half.
  const usefulFlops = 6 * b * h * t * t * d;
  const variants: VariantResult[] = [];
  const f32Out = new Map<BackwardRule, Float32Array>();
  for (const dtype of dtypes) {
    for (const rule of ['flash', 'composed'] as const) {
      variants.push(await runVariant(kdev, `${BACKWARD_NAMES[rule]} ${dtype}`, dtype, async () => {
        const graph = optimized(attentionBackwardGraph(b, h, t, d, rule, dtype));
        const big = b * h * t * d > CHECK_LIMIT;
        const r = await timeGraph(kdev, graph, { output: !big });
        if (dtype === 'f32' && r.output) f32Out.set(rule, r.output);
        const ref = f32Out.get(rule);
        // dq's difference from f32's, reported without a verdict: the composed chain's dS = P (dP - delta)
        // cancels, so no bound follows from f16's u alone. A NaN or inf still reads WRONG.
        const check = dtype === 'f16' && ref && r.output ? checkF16(r.output, ref, maxAbs(ref), 'max |dq|') : undefined;
        return { timing: r.timing, rate: formatRate(usefulFlops, r.timing.medianMs), kernels: r.kernels, peakBytes: r.peakBytes, ...(check ? { check } : {}) };
      }, `${BACKWARD_NAMES[rule]} f32`));
    }
  }
  return { suite: 'attention', name: `causal attention backward B${b} H${h} T${t} D${d} (forward included)`, variants };
}

const matmul: Suite = async (kdev, { smoke, dtypes }) => {
  // [name, a's shape, b's shape, b transposed]: square products, then the shapes GPT-2 (B12 T1024) multiplies.
  const cases: [string, number[], number[], boolean][] = smoke
    ? [['matmul 64^3', [64, 64], [64, 64], false], ['x @ W^T [2,24,64] x [48,64]', [2, 24, 64], [48, 64], true]]
    : [
        ['matmul 4096^3', [4096, 4096], [4096, 4096], false],
        ['x @ W^T 4096^3 (nn.Linear)', [4096, 4096], [4096, 4096], true],
        ['GPT-2 MLP x @ W^T [12,1024,768] x [3072,768]', [12, 1024, 768], [3072, 768], true],
        ['GPT-2 MLP x @ W^T [12,1024,3072] x [768,3072]', [12, 1024, 3072], [768, 3072], true],
        ['GPT-2 attention q @ k^T [144,1024,64] x [144,1024,64]', [144, 1024, 64], [144, 1024, 64], true],
      ];
  const out: CaseResult[] = [];
  for (const [name, aShape, bShape, transposeB] of cases) {
    const variants: VariantResult[] = [];
    let f32Out: Float32Array | undefined;
    for (const dtype of dtypes) {
      const g = productGraph(aShape, bShape, transposeB, dtype);
      const c = g.outputs[0].node;
      const flops = 2 * numel(c.type.shape) * aShape[aShape.length - 1];
      variants.push(await runVariant(kdev, `kiln ${dtype}`, dtype, async () => {
        const r = await timeGraph(kdev, g, { output: numel(c.type.shape) <= CHECK_LIMIT });
        if (dtype === 'f32') f32Out = r.output;
        // Same f16 inputs; both accumulate in f32, f16 rounds once when it stores: u max|c|, and u more for
        // the two kernels' different f32 summation orders (about sqrt(K) 2^-24 of the terms' size, far below u).
        const check = dtype === 'f16' && f32Out && r.output ? checkF16(r.output, f32Out, maxAbs(f32Out), 'max |c|', 2 * U16) : undefined;
        return {
          timing: r.timing, rate: formatRate(flops, r.timing.medianMs), bandwidth: formatBandwidth(minTraffic(g), r.timing.medianMs), peakBytes: r.peakBytes,
          ...(check ? { check } : {}),
        };
      }, 'kiln f32'));
    }
    out.push({ suite: 'matmul', name, variants });
  }
  return out;
};

/** Whether a compiled graph computes anything in f16: how an autocast variant tells that the option did something. */
function hasF16(graph: Graph | undefined): boolean {
  return graph?.nodes.some((n) => n.type.dtype === 'f16') ?? false;
}

type CompileWithAutocast = CompileOptions & { autocast?: 'f16' };
type TrainWithAutocast = TrainStepOptions & { autocast?: 'f16' };

/** How an f16 model variant makes its model f16: torch.autocast's mixed precision, or model.half() (pure f16 inference). */
type F16Mode = 'autocast' | 'half';

const nanogpt: Suite = async (kdev, { smoke, dtypes }) => {
  const configs: [string, Partial<GPTConfig>, number, number][] = smoke
    ? [['tiny', { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11 }, 1, 8]]
    : [
        ['GPT-2 124M', {}, 12, 1024],
        ['shakespeare-char', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65 }, 64, 256],
      ];
  const kinds = [['compiled manual, fused', false, true], ['compiled sdpa, fused', true, true], ['compiled manual, unfused', false, false]] as const;
  // f32, then each kind under autocast f16, then the manual model made f16 by model.half().
  const runs: [string, (typeof kinds)[number], BenchDtype, F16Mode?][] = [
    ...(dtypes.includes('f32') ? kinds.map((k) => [`${k[0]} f32`, k, 'f32'] as [string, (typeof kinds)[number], BenchDtype]) : []),
    ...(dtypes.includes('f16')
      ? [...kinds.map((k) => [`${k[0]}, autocast f16`, k, 'f16', 'autocast'] as [string, (typeof kinds)[number], BenchDtype, F16Mode]),
        [`${kinds[0][0]}, model.half() f16`, kinds[0], 'f16', 'half'] as [string, (typeof kinds)[number], BenchDtype, F16Mode]]
      : []),
  ];
  const out: CaseResult[] = [];
  for (const [label, config, B, T] of configs) {
    const variants: VariantResult[] = [];
    const f32Logits = new Map<string, ArrayLike<number>>();
    for (const [name, [kind, flash, fused], dtype, mode] of runs) {
      variants.push(await runVariant(kdev, name, dtype, async () => {
        manualSeed(1);
        const model = createModel({ ...config, flash, dropout: 0 }).eval();
        if (mode === 'half') model.half();
        const vocab = model.config.vocab_size;
        const idx = tensor(Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab), [B, T], 'i32');
        const options: CompileWithAutocast = { backend: 'webgpu', passes: { fuse_attention: fused }, ...(mode === 'autocast' ? { autocast: 'f16' as const } : {}), ...(autotune ? { autotune: true } : {}) };
        // Peak bytes: the weights (uploaded on the first call) and the executor's buffers for every intermediate.
        const forward = compile(model, options);
        const { timing, peakBytes, logits } = await withPeakBytes(async () => {
          // Inference forward (no targets): logits for the last position only, as nanoGPT's generate; with targets,
          // GPT-2's [12,1024,50304] logits are 2.3 GiB, past WebGPU's 2 GiB binding limit.
          const first = await forward(idx);
          if (mode === 'autocast' && !hasF16(forward.last?.passes.graph)) return { logits: undefined, timing: undefined };
          return { logits: await (first.logits as Tensor).data(), timing: await measure(() => forward(idx), () => kdev.device.queue.onSubmittedWorkDone()) };
        });
        if (!timing) return { skipped: AUTOCAST_UNAVAILABLE };
        if (dtype === 'f32') f32Logits.set(kind, logits!);
        const ref = f32Logits.get(kind);
        // The logits' difference from f32's, reported without a verdict (the issue's autocast tests hold the bound against f64).
        const check = dtype === 'f16' && ref ? checkF16(logits!, ref, maxAbs(ref), 'max |logit|') : undefined;
        return { timing, peakBytes, ...(check ? { check } : {}) };
      }, `${kind} f32`));
    }
    out.push({ suite: 'nanogpt', name: `nanoGPT ${label} forward B${B} T${T}`, variants });
  }
  return out;
};

/** One more step, its loss read: a finite number, so the timed steps trained. Returns `peakBytes` for chaining. */
async function finiteLoss(step: () => Promise<StepResult>, peakBytes: number): Promise<number> {
  const loss = await (await step()).loss.item();
  if (!Number.isFinite(loss)) throw new Error(`the loss is ${loss} after the timed steps`);
  return peakBytes;
}

/** `--train-small`: the train suite without GPT-2 (its compilations take most of the suite's time); `--train-gpt2`: GPT-2 alone. */
let skipGpt2 = false;
let onlyGpt2 = false;
/** `--autotune`: every compile and training step measures its kernels' candidates first (compile's `autotune` option). */
let autotune = false;

/**
 * Time per training batch: forward, backward, clipping and AdamW as one compiled step
 * (compiler/train-step.ts), the parameters staying on the GPU; f16 variants under autocast with dynamic
 * loss scaling, f32 master weights (compileTrainStep's `autocast: 'f16'`). Dropout 0, and shakespeare-char
 * also with its config's 0.2 (a fresh mask each step, as training draws them). GPT-2 at B8 and at nanoGPT's B12,
 * whose [12,1024,50304] logits (2.3 GiB, past WebGPU's 2 GiB binding limit) the fused linear + cross-entropy
 * (passes/linear-ce.ts) never makes whole.
 */
const train: Suite = async (kdev, { smoke, dtypes }) => {
  const configs: [string, Partial<GPTConfig>, number, number][] = smoke
    ? [['tiny', { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11 }, 2, 8]]
    : [
        ['shakespeare-char', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false, dropout: 0 }, 64, 256],
        // train_shakespeare_char.py as it trains: dropout 0.2 on the embeddings, attention weights and residuals
        ['shakespeare-char, dropout 0.2', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false, dropout: 0.2 }, 64, 256],
        ['GPT-2 124M', { dropout: 0 }, 8, 1024],
        ['GPT-2 124M B12', { dropout: 0 }, 12, 1024],
      ].filter(([label]) => (String(label).startsWith('GPT-2 124M') ? !skipGpt2 : !onlyGpt2)) as [string, Partial<GPTConfig>, number, number][];
  const out: CaseResult[] = [];
  const kinds = [['manual, fused', false, true], ['sdpa, fused', true, true], ['manual, unfused', false, false], ['sdpa, unfused', true, false]] as const;
  for (const [label, config, B, T] of configs) {
    // GPT-2's variants do not fit the GPU together: they run one after another. The smaller ones are
    // built first and timed in interleaved rounds, so drift of the machine falls on all alike.
    const together = !label.startsWith('GPT-2 124M');
    const built: { name: string; step: () => Promise<StepResult>; peakBytes: number; head: VariantResult }[] = [];
    const variants: VariantResult[] = [];
    const firstLoss = new Map<string, number>();
    for (const dtype of dtypes) {
      for (const [kind, flash, fused] of kinds) {
        const name = `train step ${kind} ${dtype}`;
        const f32Name = `train step ${kind} f32`;
        let step: (() => Promise<StepResult>) | undefined;
        let warm = { loss: NaN, peakBytes: 0 };
        const v = await runVariant(kdev, name, dtype, async () => {
          manualSeed(1);
          const model = createModel({ dropout: 0, ...config, flash });
          const vocab = model.config.vocab_size;
          const idx = tensor(Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab), [B, T], 'i32');
          const targets = tensor(Array.from({ length: B * T }, (_, i) => (i * 104729 + 3) % vocab), [B, T], 'i32');
          const optimizer = new AdamW(model, { lr: 1e-4, betas: [0.9, 0.99], weightDecay: 0.1 });
          const options: TrainWithAutocast = { backend: 'webgpu', gradClip: 1, passes: { fuse_attention: fused }, ...(dtype === 'f16' ? { autocast: 'f16' as const } : {}), ...(autotune ? { autotune: true } : {}) };
          const compiled = compileTrainStep(model, optimizer, options);
          const s = () => compiled(idx, targets);
          const { peakBytes, loss } = await withPeakBytes(async () => ({ loss: await (await s()).loss.item() }));
          if (dtype === 'f16' && !hasF16(compiled.last?.step.graph)) return { skipped: AUTOCAST_UNAVAILABLE };
          if (dtype === 'f32') firstLoss.set(kind, loss);
          const ref = firstLoss.get(kind);
          // The first step's loss (same initial weights and batch) against f32's, reported without a verdict.
          const check = dtype === 'f16' && ref !== undefined ? checkF16([loss], [ref], Math.abs(ref), 'the first loss') : undefined;
          warm = { loss, peakBytes };
          step = s;
          if (together) return { peakBytes, ...(check ? { check } : {}) }; // timed below, with the others
          const timing = await measure(s, () => kdev.device.queue.onSubmittedWorkDone(), { minBatches: smoke ? 3 : 5 });
          return { timing, peakBytes: await finiteLoss(s, peakBytes), ...(check ? { check } : {}) };
        }, f32Name);
        if (together && step && !v.failed && !v.skipped) built.push({ name, step, peakBytes: warm.peakBytes, head: v });
        else variants.push(v);
      }
    }
    if (built.length > 0) {
      const timings = await measureInterleaved(built.map((b) => b.step), () => kdev.device.queue.onSubmittedWorkDone(), { minBatches: smoke ? 3 : 7, budgetMs: smoke ? 40 : 2000 * built.length });
      for (const [i, b] of built.entries()) {
        try {
          variants.push({ ...b.head, timing: timings[i], peakBytes: await finiteLoss(b.step, b.peakBytes) });
        } catch (e) {
          variants.push({ ...b.head, failed: oneLine(e) });
        }
      }
    }
    // kiln's order (f32 kinds, then f16), whichever were timed together.
    const order = dtypes.flatMap((dtype) => kinds.map(([kind]) => `train step ${kind} ${dtype}`));
    variants.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    out.push({ suite: 'train', name: `nanoGPT ${label} training step B${B} T${T}`, variants });
  }
  return out;
};

/**
 * The matmul suite times kiln's variants; tfjs's matMul (f32) joins each of its cases (named `matmul N^3`),
 * fed the same inputs as kiln's f32 matmul graph and checked against its output.
 */
const withMatmulPeers = (suite: Suite): Suite => async (kdev, opts) => {
  const cases = await suite(kdev, opts);
  for (const c of cases) {
    const n = Number(/^matmul (\d+)\^3/.exec(c.name)?.[1]);
    if (!n) continue;
    const graph = matmulGraph(n, n, n);
    const [inputs, reference] = [floatInputs(graph), await graphOutput(kdev, graph)];
    for (const peer of MATMUL_PEERS) {
      const v = await timePeer(peer, n, inputs, reference, { smoke: opts.smoke });
      c.variants.push(v.timing ? { ...v, rate: formatRate(2 * n ** 3, v.timing.medianMs) } : v);
    }
  }
  return cases;
};

/**
 * Generation with a KV cache (compiler/generate.ts): prefill and decode tokens per second for
 * shakespeare-char and GPT-2 124M (random weights: speed does not depend on them) at batch 1 and 8,
 * greedy. Variants: the cache with one dynamic trace (the default), the cache with a trace per prompt
 * length (`dynamic: false`), and `cache: false` (the whole window recomputed per token, as nanoGPT's
 * generate does), in f32 and under autocast f16. The timing is the decode time per token (median over
 * rounds of one generate() each), `rate` the prefill and decode tokens per second (all rows), `kernels`
 * the dispatches of one decode step; an f16 variant's check compares the first token's logits with its f32
 * counterpart's (no verdict: autocast's f16 matmuls, layer after layer). The prompt and length match
 * torch_anchor.py's transformers case for GPT-2 (prompt 128, 256 new tokens).
 */
const generate: Suite = async (_kdev, { smoke, dtypes }) => {
  const configs: [string, Partial<GPTConfig>, number, number][] = smoke
    ? [['tiny', { n_layer: 1, n_head: 2, n_embd: 16, block_size: 32, vocab_size: 11 }, 4, 8]]
    : [
        ['shakespeare-char', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false }, 64, 128],
        ['GPT-2 124M', {}, 128, 256],
      ];
  const batches = smoke ? [1, 2] : [1, 8];
  const kinds = [['cached', { cache: true, dynamic: true }], ['cached, static', { cache: true, dynamic: false }], ['no cache', { cache: false, dynamic: true }]] as const;
  const rounds = smoke ? 2 : 3;
  const out: CaseResult[] = [];
  for (const [label, config, promptLength, newTokens] of configs) {
    for (const B of batches) {
      const variants: VariantResult[] = [];
      const firstLogits = new Map<string, Float32Array>();
      for (const dtype of dtypes) {
        for (const [kind, how] of kinds) {
          const name = `kiln generate ${kind} ${dtype}`;
          let logits: Float32Array | undefined;
          // GPT-2 without the cache recomputes up to 384 positions per token: 256 tokens of it at B8 take minutes; once is enough to compare.
          const slow = kind === 'no cache' && label === 'GPT-2 124M';
          variants.push(await runVariant(_kdev, name, dtype, async () => {
            manualSeed(1);
            const model = createModel({ dropout: 0, ...config }).eval();
            const vocab = model.config.vocab_size;
            const gen = await compileGenerator(model, { backend: 'webgpu', dynamic: how.dynamic, ...(dtype === 'f16' ? { autocast: 'f16' as const } : {}) });
            const prompt = Array.from({ length: B }, (_, b) => Array.from({ length: promptLength }, (_, i) => (i * 7919 + b * 31) % vocab));
            const run = () => gen.generate(prompt, { maxNewTokens: slow ? Math.min(newTokens, 32) : newTokens, greedy: true, cache: how.cache });
            // The first token's logits (one step, read back): compiles and warms the pipelines, and gives the f16 check.
            await gen.generate(prompt, { maxNewTokens: 1, greedy: true, cache: how.cache, keepLogits: true, onToken: (st) => { logits = st.logits; } });
            const ref = firstLogits.get(kind);
            if (dtype === 'f32' && logits) firstLogits.set(kind, logits);
            const check = dtype === 'f16' && ref && logits ? checkF16(logits, ref, ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0), "the first token's logits") : undefined;
            await run();
            const results = [];
            for (let r = 0; r < (slow ? 1 : rounds); r++) results.push(await run());
            const perToken = results.map((x) => x.decodeMs / Math.max(1, x.tokens[0].length - 1)).sort((a, b) => a - b);
            const median = perToken[Math.floor(perToken.length / 2)];
            const best = results.reduce((a, b) => (b.decodeTokensPerS > a.decodeTokensPerS ? b : a));
            return {
              timing: { medianMs: median, p10Ms: perToken[0], p90Ms: perToken[perToken.length - 1], batches: results.length, runsPerBatch: 1 },
              rate: `prefill ${Math.round(best.prefillTokensPerS * B)} tok/s, decode ${Math.round(best.decodeTokensPerS * B)} tok/s`,
              kernels: best.kernelsPerToken,
              ...(check ? { check } : {}),
            };
          }, `kiln generate ${kind} f32`));
        }
      }
      out.push({ suite: 'generate', name: `${label} generate B${B} prompt ${promptLength} new ${newTokens}`, variants });
    }
  }
  return out;
};

function suites(peers: boolean): Record<string, Suite> {
  return { attention: attention(peers), matmul: peers ? withMatmulPeers(matmul) : matmul, nanogpt, train, generate };
}

/** Runs the suites named by argv, prints a table per case, writes `--json OUT`; returns what it measured. */
export async function main(argv: string[]): Promise<BenchReport> {
  const suite = flagValue(argv, 'suite') ?? 'all';
  const smoke = argv.includes('--smoke');
  const peers = !argv.includes('--no-peers');
  skipGpt2 = argv.includes('--train-small');
  onlyGpt2 = argv.includes('--train-gpt2');
  autotune = argv.includes('--autotune');
  const dtypes = (flagValue(argv, 'dtype') ?? BENCH_DTYPES.join(',')).split(',') as BenchDtype[];
  for (const d of dtypes) if (!BENCH_DTYPES.includes(d)) throw new Error(`unknown dtype ${d}; dtypes: ${BENCH_DTYPES.join(', ')}`);
  const available = suites(peers);
  const names = suite === 'all' ? Object.keys(available) : suite.split(',');
  for (const n of names) if (!available[n]) throw new Error(`unknown suite ${n}; suites: ${Object.keys(available).join(', ')}, all`);
  // Smoke sizes check that every variant runs; a few batches of a few runs are enough for that.
  const measureDefaults = setMeasureDefaults(smoke ? { budgetMs: 40, minBatches: 3 } : {});
  const kdev = await getDevice();
  const results: CaseResult[] = [];
  try {
    if (peers) await sharePeersKilnGpu();
    console.log(`adapter: ${kdev.description}${kdev.f16 ? '' : ' (no shader-f16: f16 variants skipped)'}${smoke ? '  (smoke sizes: the times say nothing about speed)' : ''}`);
    for (const n of names) {
      let cases: CaseResult[];
      try {
        cases = await available[n](kdev, { smoke, dtypes });
      } catch (e) {
        // A suite that dies (a kiln error, a lost device) still leaves the others' numbers and the JSON.
        cases = [{ suite: n, name: `${n} suite`, variants: [{ name: 'kiln', failed: oneLine(e) }] }];
      }
      for (const c of cases) {
        results.push(c);
        console.log(`\n${formatCase(c)}`);
      }
    }
  } finally {
    setMeasureDefaults(measureDefaults);
    unsharePeersKilnGpu();
    await releaseDevice();
  }
  const versions = [...new Set(ALL_PEERS.map((p) => p.version()).filter((v): v is string => v !== undefined))];
  const report: BenchReport = { date: new Date().toISOString(), adapter: kdev.description, f16: kdev.f16, smoke, node: process.version, peers: versions, results };
  const json = flagValue(argv, 'json');
  if (json) {
    await writeFileAtomic(json, JSON.stringify(report, null, 2) + '\n');
    console.log(`\nwrote ${json}`);
  }
  return report;
}

if (process.argv[1] && /bench\.(ts|mjs)$/.test(process.argv[1])) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (e) => {
      console.error(e instanceof Error ? e.message : e);
      process.exit(1);
    },
  );
}

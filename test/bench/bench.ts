// kiln's benchmark: `npm run bench -- --suite attention|matmul|nanogpt|train|all (or a comma list) [--json OUT] [--smoke] [--no-peers]`.
// Every case times its variants in this one process, on whatever adapter kiln finds: kiln's own first,
// then the peers (onnxruntime-web, tfjs-webgpu, jax-js) on the same adapter, each checked against
// kiln's output. It prints each median with its spread and its ratio to kiln's, and kiln's peak GPU
// bytes; `--json OUT` keeps every number with the date and the adapter (report.ts makes BENCHMARKS.md).

import { compile } from '../../compiler/compile.ts';
import { tensor } from '../../compiler/frontend/create.ts';
import { AdamW } from '../../compiler/optim.ts';
import { type StepResult, compileTrainStep } from '../../compiler/train-step.ts';
import { manualSeed } from '../../compiler/frontend/random.ts';
import createModel, { type GPTConfig } from '../../examples/nanogpt/model.ts';
import { Graph } from '../../ir/graph.ts';
import { numel } from '../../ir/types.ts';
import { writeFileAtomic } from '../../runtime/files.ts';
import { type KilnDevice, getDevice, releaseDevice } from '../../runtime/webgpu/index.ts';
import { attentionGraph, graphOutput, inputsOf, matmulGraph, timeGraph, withPeakBytes } from './kiln-cases.ts';
import { measure, measureInterleaved, setMeasureDefaults } from './measure.ts';
import { jaxAttention } from './peers/jax.ts';
import { ortAttention } from './peers/ort.ts';
import { type AttentionShape, type PeerVariant, sharePeersKilnGpu, timePeer, unsharePeersKilnGpu } from './peers/peer.ts';
import { tfjsAttention, tfjsMatmul } from './peers/tfjs.ts';
import { type BenchReport, type CaseResult, type VariantResult, flagValue, formatCase, formatRate, oneLine } from './results.ts';

export type { BenchReport, CaseResult, VariantResult } from './results.ts';

type Suite = (kdev: KilnDevice, smoke: boolean) => Promise<CaseResult[]>;

const ATTENTION_PEERS: PeerVariant<AttentionShape>[] = [ortAttention, tfjsAttention, jaxAttention];
const MATMUL_PEERS: PeerVariant<number>[] = [tfjsMatmul];
const ALL_PEERS = [...ATTENTION_PEERS, ...MATMUL_PEERS];

/** The float inputs of a kiln graph by name, as the peers take them. */
function floatInputs(graph: Graph): Map<string, Float32Array> {
  return new Map([...inputsOf(graph)].filter(([, t]) => t.type.dtype === 'f32').map(([name, t]) => [name, t.data as Float32Array]));
}

const attention = (peers: boolean): Suite => async (kdev, smoke) => {
  // Smoke keeps T < 32: onnxruntime-web's flash kernel is wrong there on SwiftShader's 4-wide subgroups.
  // GPT-2 124M's attention, shakespeare-char's, and a D = 128 head (LLaMA-style) at GPT-2's length.
  const shapes = smoke ? [[1, 2, 16, 8]] : [[12, 12, 1024, 64], [64, 6, 256, 64], [12, 12, 1024, 128]];
  const out: CaseResult[] = [];
  for (const [b, h, t, d] of shapes) {
    const usefulFlops = 2 * b * h * t * t * d; // q@k^T and p@v over the causal half
    const variants: VariantResult[] = [];
    for (const fused of [true, false]) {
      const r = await timeGraph(kdev, attentionGraph(b, h, t, d, fused));
      variants.push({ name: fused ? 'kiln fused' : 'kiln unfused', timing: r.timing, rate: formatRate(usefulFlops, r.timing.medianMs), kernels: r.kernels, peakBytes: r.peakBytes });
    }
    if (peers) {
      const graph = attentionGraph(b, h, t, d, true);
      const [inputs, reference] = [floatInputs(graph), await graphOutput(kdev, graph)];
      for (const peer of ATTENTION_PEERS) {
        const v = await timePeer(peer, { b, h, t, d }, inputs, reference, { smoke });
        variants.push(v.timing ? { ...v, rate: formatRate(usefulFlops, v.timing.medianMs) } : v);
      }
    }
    out.push({ suite: 'attention', name: `causal attention B${b} H${h} T${t} D${d}`, variants });
  }
  return out;
};

const matmul: Suite = async (kdev, smoke) => {
  // [name, a's shape, b's shape, b transposed]: square products, then the shapes GPT-2 (B12 T1024) multiplies.
  const cases: [string, number[], number[], boolean][] = smoke
    ? [['matmul 64^3 f32', [64, 64], [64, 64], false], ['x @ W^T [2,24,64] x [48,64]', [2, 24, 64], [48, 64], true]]
    : [
        ['matmul 4096^3 f32', [4096, 4096], [4096, 4096], false],
        ['x @ W^T 4096^3 f32 (nn.Linear)', [4096, 4096], [4096, 4096], true],
        ['GPT-2 MLP x @ W^T [12,1024,768] x [3072,768]', [12, 1024, 768], [3072, 768], true],
        ['GPT-2 MLP x @ W^T [12,1024,3072] x [768,3072]', [12, 1024, 3072], [768, 3072], true],
        ['GPT-2 attention q @ k^T [144,1024,64] x [144,1024,64]', [144, 1024, 64], [144, 1024, 64], true],
      ];
  const out: CaseResult[] = [];
  for (const [name, aShape, bShape, transposeB] of cases) {
    const g = new Graph();
    const a = g.add('input', [], { name: 'a', dtype: 'f32', shape: aShape });
    const b = g.add('input', [], { name: 'b', dtype: 'f32', shape: bShape });
    const c = g.add('matmul', [a, b], { transposeA: false, transposeB });
    g.setOutputs([{ name: 'c', node: c }]);
    const r = await timeGraph(kdev, g);
    const flops = 2 * numel(c.type.shape) * aShape[aShape.length - 1];
    out.push({ suite: 'matmul', name, variants: [{ name: 'kiln', timing: r.timing, rate: formatRate(flops, r.timing.medianMs), peakBytes: r.peakBytes }] });
  }
  return out;
};

const nanogpt: Suite = async (kdev, smoke) => {
  const configs: [string, Partial<GPTConfig>, number, number][] = smoke
    ? [['tiny', { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11 }, 1, 8]]
    : [
        ['GPT-2 124M', {}, 12, 1024],
        ['shakespeare-char', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65 }, 64, 256],
      ];
  const out: CaseResult[] = [];
  for (const [label, config, B, T] of configs) {
    const variants: VariantResult[] = [];
    for (const [name, flash, fused] of [['compiled manual, fused', false, true], ['compiled sdpa, fused', true, true], ['compiled manual, unfused', false, false]] as const) {
      manualSeed(1);
      const model = createModel({ ...config, flash, dropout: 0 }).eval();
      const vocab = model.config.vocab_size;
      const idx = tensor(Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab), [B, T], 'i32');
      // Peak bytes: the weights (uploaded on the first call) and the executor's buffers for every intermediate.
      const { timing, peakBytes } = await withPeakBytes(async () => {
        const forward = compile(model, { backend: 'webgpu', passes: { fuse_attention: fused } });
        // Inference forward (no targets): logits for the last position only, as nanoGPT's generate; with targets,
        // GPT-2's [12,1024,50304] logits are 2.3 GiB, past WebGPU's 2 GiB binding limit.
        return { timing: await measure(() => forward(idx), () => kdev.device.queue.onSubmittedWorkDone()) };
      });
      variants.push({ name, timing, peakBytes });
    }
    out.push({ suite: 'nanogpt', name: `nanoGPT ${label} forward B${B} T${T}`, variants });
  }
  return out;
};

/**
 * Time per training batch: forward, backward, clipping and AdamW as one compiled step
 * (compiler/train-step.ts), the parameters staying on the GPU. Dropout 0, and shakespeare-char also with its config's
 * 0.2 (a fresh mask each step, as training draws them). GPT-2 runs at
 * B8: at B12 its [12,1024,50304] logits (and their gradient) are 2.3 GiB, past WebGPU's 2 GiB binding limit.
 */
/** One more step, its loss read: a finite number, so the timed steps trained. Returns `peakBytes` for chaining. */
async function finiteLoss(step: () => Promise<StepResult>, peakBytes: number): Promise<number> {
  const loss = await (await step()).loss.item();
  if (!Number.isFinite(loss)) throw new Error(`the loss is ${loss} after the timed steps`);
  return peakBytes;
}

/** `--train-small`: the train suite without GPT-2 (its four compilations take most of the suite's time). */
let skipGpt2 = false;

const train: Suite = async (kdev, smoke) => {
  const configs: [string, Partial<GPTConfig>, number, number][] = smoke
    ? [['tiny', { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11 }, 2, 8]]
    : [
        ['shakespeare-char', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false, dropout: 0 }, 64, 256],
        // train_shakespeare_char.py as it trains: dropout 0.2 on the embeddings, attention weights and residuals
        ['shakespeare-char, dropout 0.2', { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false, dropout: 0.2 }, 64, 256],
        ['GPT-2 124M', { dropout: 0 }, 8, 1024],
      ].filter(([label]) => !(skipGpt2 && label === 'GPT-2 124M')) as [string, Partial<GPTConfig>, number, number][];
  const out: CaseResult[] = [];
  const kinds = [['manual, fused', false, true], ['sdpa, fused', true, true], ['manual, unfused', false, false], ['sdpa, unfused', true, false]] as const;
  for (const [label, config, B, T] of configs) {
    // GPT-2's variants do not fit the GPU together: they run one after another. The smaller ones are
    // built first and timed in interleaved rounds, so drift of the machine falls on all alike.
    const together = label !== 'GPT-2 124M';
    const built: { name: string; step: () => Promise<StepResult>; peakBytes: number }[] = [];
    const variants: VariantResult[] = [];
    for (const [name, flash, fused] of kinds) {
      try {
        manualSeed(1);
        const model = createModel({ dropout: 0, ...config, flash });
        const vocab = model.config.vocab_size;
        const idx = tensor(Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab), [B, T], 'i32');
        const targets = tensor(Array.from({ length: B * T }, (_, i) => (i * 104729 + 3) % vocab), [B, T], 'i32');
        const optimizer = new AdamW(model, { lr: 1e-4, betas: [0.9, 0.99], weightDecay: 0.1 });
        const compiled = compileTrainStep(model, optimizer, { backend: 'webgpu', gradClip: 1, passes: { fuse_attention: fused } });
        const step = () => compiled(idx, targets);
        const { peakBytes } = await withPeakBytes(async () => ({ warm: await (await step()).loss.item() }));
        if (together) {
          built.push({ name: `train step ${name}`, step, peakBytes });
          continue;
        }
        const timing = await measure(step, () => kdev.device.queue.onSubmittedWorkDone(), { minBatches: smoke ? 3 : 5 });
        variants.push({ name: `train step ${name}`, timing, peakBytes: await finiteLoss(step, peakBytes) });
      } catch (e) {
        variants.push({ name: `train step ${name}`, failed: oneLine(e) });
      }
    }
    if (built.length > 0) {
      const timings = await measureInterleaved(built.map((b) => b.step), () => kdev.device.queue.onSubmittedWorkDone(), { minBatches: smoke ? 3 : 7, budgetMs: smoke ? 40 : 8000 });
      for (const [i, b] of built.entries()) {
        try {
          variants.push({ name: b.name, timing: timings[i], peakBytes: await finiteLoss(b.step, b.peakBytes) });
        } catch (e) {
          variants.push({ name: b.name, failed: oneLine(e) });
        }
      }
    }
    out.push({ suite: 'train', name: `nanoGPT ${label} training step B${B} T${T}`, variants });
  }
  return out;
};

/**
 * The matmul suite times kiln's variants; tfjs's matMul joins each of its cases (named `matmul N^3 ...`),
 * fed the same inputs as kiln's matmul graph and checked against its output.
 */
const withMatmulPeers = (suite: Suite): Suite => async (kdev, smoke) => {
  const cases = await suite(kdev, smoke);
  for (const c of cases) {
    const n = Number(/^matmul (\d+)\^3/.exec(c.name)?.[1]);
    if (!n) continue;
    const graph = matmulGraph(n, n, n);
    const [inputs, reference] = [floatInputs(graph), await graphOutput(kdev, graph)];
    for (const peer of MATMUL_PEERS) {
      const v = await timePeer(peer, n, inputs, reference, { smoke });
      c.variants.push(v.timing ? { ...v, rate: formatRate(2 * n ** 3, v.timing.medianMs) } : v);
    }
  }
  return cases;
};

function suites(peers: boolean): Record<string, Suite> {
  return { attention: attention(peers), matmul: peers ? withMatmulPeers(matmul) : matmul, nanogpt, train };
}

/** Runs the suites named by argv, prints a table per case, writes `--json OUT`; returns what it measured. */
export async function main(argv: string[]): Promise<BenchReport> {
  const suite = flagValue(argv, 'suite') ?? 'all';
  const smoke = argv.includes('--smoke');
  const peers = !argv.includes('--no-peers');
  skipGpt2 = argv.includes('--train-small');
  const available = suites(peers);
  const names = suite === 'all' ? Object.keys(available) : suite.split(',');
  for (const n of names) if (!available[n]) throw new Error(`unknown suite ${n}; suites: ${Object.keys(available).join(', ')}, all`);
  // Smoke sizes check that every variant runs; a few batches of a few runs are enough for that.
  const measureDefaults = setMeasureDefaults(smoke ? { budgetMs: 40, minBatches: 3 } : {});
  const kdev = await getDevice();
  const results: CaseResult[] = [];
  try {
    if (peers) await sharePeersKilnGpu();
    console.log(`adapter: ${kdev.description}${smoke ? '  (smoke sizes: the times say nothing about speed)' : ''}`);
    for (const n of names) {
      let cases: CaseResult[];
      try {
        cases = await available[n](kdev, smoke);
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
  const report: BenchReport = { date: new Date().toISOString(), adapter: kdev.description, smoke, node: process.version, peers: versions, results };
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

// kiln's benchmark: `npm run bench -- --suite attention|matmul|nanogpt|all [--json OUT] [--smoke]`.
// Every case times its variants in this one process, on whatever adapter kiln finds, and prints ratios.

import { writeFileSync } from 'node:fs';
import { compile } from '../../compiler/compile.ts';
import { tensor } from '../../compiler/frontend/create.ts';
import { manualSeed } from '../../compiler/frontend/random.ts';
import '../../compiler/webgpu.ts';
import createModel, { type GPTConfig } from '../../examples/nanogpt/model.ts';
import { type KilnDevice, getDevice, releaseDevice } from '../../runtime/webgpu/index.ts';
import { attentionGraph, matmulGraph, timeGraph } from './kiln-cases.ts';
import { type Timing, measure } from './measure.ts';

export interface VariantResult {
  readonly name: string;
  readonly timing: Timing;
  /** e.g. TFLOP/s for matmul */
  readonly rate?: string;
  readonly kernels?: number;
}

export interface CaseResult {
  readonly suite: string;
  readonly name: string;
  readonly variants: VariantResult[];
}

type Suite = (kdev: KilnDevice, smoke: boolean) => Promise<CaseResult[]>;

const attention: Suite = async (kdev, smoke) => {
  const shapes = smoke ? [[1, 2, 16, 8]] : [[12, 12, 1024, 64], [64, 6, 256, 64]];
  const out: CaseResult[] = [];
  for (const [b, h, t, d] of shapes) {
    const variants: VariantResult[] = [];
    for (const fused of [true, false]) {
      const r = await timeGraph(kdev, attentionGraph(b, h, t, d, fused));
      variants.push({ name: fused ? 'kiln fused' : 'kiln unfused', timing: r.timing, kernels: r.kernels });
    }
    out.push({ suite: 'attention', name: `causal attention B${b} H${h} T${t} D${d}`, variants });
  }
  return out;
};

const matmul: Suite = async (kdev, smoke) => {
  const sizes = smoke ? [64] : [4096];
  const out: CaseResult[] = [];
  for (const n of sizes) {
    const r = await timeGraph(kdev, matmulGraph(n, n, n));
    const tflops = (2 * n ** 3) / (r.timing.medianMs * 1e-3) / 1e12;
    out.push({ suite: 'matmul', name: `matmul ${n}^3 f32`, variants: [{ name: 'kiln', timing: r.timing, rate: `${tflops.toFixed(2)} TFLOP/s` }] });
  }
  return out;
};

const nanogpt: Suite = async (_kdev, smoke) => {
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
      const forward = compile(model, { backend: 'webgpu', passes: { fuse_attention: fused } });
      const kdev = await getDevice();
      // Inference forward (no targets): logits for the last position only, as nanoGPT's generate; with targets,
      // GPT-2's [12,1024,50304] logits are 2.3 GiB, past WebGPU's 2 GiB binding limit.
      const timing = await measure(() => forward(idx), () => kdev.device.queue.onSubmittedWorkDone());
      variants.push({ name, timing });
    }
    out.push({ suite: 'nanogpt', name: `nanoGPT ${label} forward B${B} T${T}`, variants });
  }
  return out;
};

const SUITES: Record<string, Suite> = { attention, matmul, nanogpt };

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
}

export async function main(argv: string[]): Promise<CaseResult[]> {
  const suite = flag(argv, 'suite') ?? 'all';
  const smoke = argv.includes('--smoke');
  const names = suite === 'all' ? Object.keys(SUITES) : [suite];
  for (const n of names) if (!SUITES[n]) throw new Error(`unknown suite ${n}; suites: ${Object.keys(SUITES).join(', ')}, all`);
  const kdev = await getDevice();
  console.log(`adapter: ${kdev.description}`);
  const results: CaseResult[] = [];
  for (const n of names) {
    for (const c of await SUITES[n](kdev, smoke)) {
      results.push(c);
      const base = c.variants[c.variants.length - 1].timing.medianMs;
      console.log(`\n${c.name}`);
      for (const v of c.variants) {
        const t = v.timing;
        const ratio = c.variants.length > 1 ? `  ${(base / t.medianMs).toFixed(2)}x vs ${c.variants[c.variants.length - 1].name}` : '';
        console.log(`  ${v.name.padEnd(28)} ${t.medianMs.toFixed(3).padStart(9)} ms  [p10 ${t.p10Ms.toFixed(3)}, p90 ${t.p90Ms.toFixed(3)}]${v.rate ? '  ' + v.rate : ''}${v.kernels ? `  ${v.kernels} kernels` : ''}${ratio}`);
      }
    }
  }
  const json = flag(argv, 'json');
  if (json) writeFileSync(json, JSON.stringify({ date: new Date().toISOString(), adapter: kdev.description, results }, null, 2));
  await releaseDevice();
  return results;
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

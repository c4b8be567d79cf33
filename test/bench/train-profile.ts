// Where a training step's GPU time goes: the compiled step of nanoGPT (shakespeare-char by default)
// on an Executor of its own, every kernel timed with timestamp-query, totals by op and by part
// (forward, backward, optimizer). `--f16` profiles the step under autocast f16 (f16 matmuls and
// attention, f32 master weights, the GradScaler's unscale and inf check; its casts show as their ops).
// A tool for tuning, run on the GPU machine:
//   bash .device/run.sh .device/train-profile.mjs [--gpt2] [--unfused] [--sdpa] [--f16] [--json OUT]

import { lowerGraph } from '../../codegen/index.ts';
import { tensor } from '../../compiler/frontend/create.ts';
import { manualSeed } from '../../compiler/frontend/random.ts';
import { leafFeeder, leafKind, stateTensors } from '../../compiler/leaves.ts';
import { AdamW } from '../../compiler/optim.ts';
import { compileTrainStep } from '../../compiler/train-step.ts';
import createModel from '../../examples/nanogpt/model.ts';
import type { Node } from '../../ir/graph.ts';
import { getOp } from '../../ir/registry.ts';
import { writeFileAtomic } from '../../runtime/files.ts';
import { Executor, type Feed, getDevice, releaseDevice, upload } from '../../runtime/webgpu/index.ts';
import { KernelTimer } from '../../runtime/webgpu/timing.ts';
import { NO_SHADER_F16 } from './results.ts';

const argv = process.argv.slice(2);
const gpt2 = argv.includes('--gpt2');
const fused = !argv.includes('--unfused');
const flash = argv.includes('--sdpa');
const f16 = argv.includes('--f16');
const tiny = argv.includes('--tiny'); // a check that it runs (SwiftShader)
const config = tiny ? { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, vocab_size: 11 } : gpt2 ? {} : { n_layer: 6, n_head: 6, n_embd: 384, block_size: 256, vocab_size: 65, bias: false }; // nanoGPT's shakespeare_char config
const [B, T] = tiny ? [2, 8] : gpt2 ? [8, 1024] : [64, 256];

manualSeed(1);
const model = createModel({ ...config, flash, dropout: 0 });
const vocab = model.config.vocab_size;
const idx = tensor(Array.from({ length: B * T }, (_, i) => (i * 7919) % vocab), [B, T], 'i32');
const targets = tensor(Array.from({ length: B * T }, (_, i) => (i * 104729 + 3) % vocab), [B, T], 'i32');
const optimizer = new AdamW(model, { lr: 1e-4 });
const step = compileTrainStep(model, optimizer, { backend: 'cpu', gradClip: 1, passes: { fuse_attention: fused }, ...(f16 ? { autocast: 'f16' as const } : {}) });
const c = await step.lower(idx, targets);
const graph = c.step.graph;
const forwardIds = new Set(c.forward.graph.nodes.map((n) => n.id));

const kdev = await getDevice();
if (f16 && !kdev.f16) throw new Error(`--f16: skipped: ${NO_SHADER_F16}`);
const program = lowerGraph(graph, kdev.limits);
const exec = await Executor.create(kdev, program);
// The step's leaves: the forward's as compile() feeds them, the optimizer's moments as zeros, the hyperparameters.
const base = leafFeeder(graph, stateTensors(model), c.trace.argNames, [idx, targets]);
const feeds = new Map<Node, Feed>();
for (const node of graph.nodes.filter((n) => getOp(n.op).leaf)) {
  const name = String(node.attrs.name);
  // The GradScaler's state (amp.*): torch's initial scale 2^16, no good steps yet.
  const host = node.op === 'input' && name.startsWith('amp.')
    ? { type: node.type, data: Float32Array.of(name === 'amp.scale' ? 65536 : 0) }
    : node.op === 'input' && name.startsWith('optim.')
      ? { type: node.type, data: name.includes('.decay') || name.includes('step_size') || name.includes('inv_bias') ? Float32Array.of(0.5) : new Float32Array(node.type.shape.reduce((a, b) => a * b, 1)) }
      : base(node).readHost()!;
  // Per call, as the training step feeds them: the batch, the hyperparameters, the dropout seed. The
  // moments and the scaler's state live on the GPU like the weights.
  const perCall = leafKind(node).fedPerCall && !name.startsWith('amp.') && !(name.startsWith('optim.') && !name.startsWith('optim.hypers'));
  feeds.set(node, perCall ? host : upload(kdev, host, name));
}

const timer = new KernelTimer(kdev);
const part = (n: Node) => (n.scope === 'optim' ? 'optimizer' : forwardIds.has(n.id) ? 'forward' : 'backward');
const byOp = new Map<string, { ns: number; count: number }>();
const byPart = new Map<string, number>();
const runs = 5;
exec.run(feeds, timer);
await timer.collect(); // warm-up
for (let r = 0; r < runs; r++) {
  exec.run(feeds, timer);
  for (const { kernel, ns } of await timer.collect()) {
    const key = `${part(kernel.node)} ${kernel.node.op}`;
    const e = byOp.get(key) ?? { ns: 0, count: 0 };
    e.ns += ns / runs;
    e.count += 1 / runs;
    byOp.set(key, e);
    byPart.set(part(kernel.node), (byPart.get(part(kernel.node)) ?? 0) + ns / runs);
  }
}
// Wall time per step without per-kernel passes, 20 back to back; and the CPU time of encoding them alone.
exec.run(feeds);
await kdev.device.queue.onSubmittedWorkDone();
const t0 = performance.now();
let encodeMs = 0;
for (let r = 0; r < 20; r++) {
  const e0 = performance.now();
  exec.run(feeds);
  encodeMs += (performance.now() - e0) / 20;
}
await kdev.device.queue.onSubmittedWorkDone();
const wallMs = (performance.now() - t0) / 20;

const total = [...byPart.values()].reduce((a, b) => a + b, 0);
const rows = [...byOp].sort((a, b) => b[1].ns - a[1].ns);
console.log(`adapter: ${kdev.description}`);
console.log(`${gpt2 ? 'GPT-2 124M' : 'shakespeare-char'} B${B} T${T} training step, ${fused ? 'fused' : 'unfused'}, ${flash ? 'sdpa' : 'manual'}, ${f16 ? 'autocast f16' : 'f32'}: ${program.kernels.length} kernels`);
console.log(`wall ${wallMs.toFixed(2)} ms per step (encoding ${encodeMs.toFixed(2)} ms on the CPU); kernels sum ${(total / 1e6).toFixed(2)} ms (${[...byPart].map(([p, ns]) => `${p} ${(ns / 1e6).toFixed(2)}`).join(', ')})`);
for (const [key, e] of rows.slice(0, 30)) console.log(`${(e.ns / 1e6).toFixed(3).padStart(9)} ms  ${String(Math.round(e.count)).padStart(4)}x  ${key}`);
const json = argv[argv.indexOf('--json') + 1];
if (argv.includes('--json') && json) {
  await writeFileAtomic(json, JSON.stringify({ date: new Date().toISOString(), adapter: kdev.description, B, T, gpt2, fused, flash, dtype: f16 ? 'f16' : 'f32', wallMs, encodeMs, parts: Object.fromEntries(byPart), ops: Object.fromEntries(rows) }, null, 2));
}
timer.destroy();
exec.destroy();
await releaseDevice();
process.exit(0);

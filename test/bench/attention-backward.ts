// Times the flash-attention backward (attention_lse, delta, fused_attention_backward wrt q and kv)
// against the composed backward (matmul, softmax, ...) and the forward, on the machine's adapter, in f32
// and f16 (`--dtype`, default both: f16 inputs and gradients, f32 statistics), each f16 time also over
// the same rule's f32 time in this process. Each graph holds the forward too (delta reads its output), so
// "backward" times below include it. Both graphs go through kiln's pass pipeline first (elementwise
// fusion, ...), as a compiled training step's would: without it the composed backward runs unfused
// elementwise kernels and looks slower than it is (the first numbers in ATTENTION_NOTES.md were taken that
// way). The bench's attention suite times the same graphs (its "causal attention backward" cases).
//   node bin/run-ts.mjs test/bench/attention-backward.ts [B H T D] [--dtype f32,f16] [--sweep]   (or packed for the GPU machine)
// --sweep also times each backward kernel alone over tilings (slices, owned rows, tile), each checked
// against the default tiling's output (f32 only).

import { kernelFromPlan } from '../../codegen/index.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import { flashAttentionBackward } from '../../ir/ops/attention_backward.ts';
import { attentionBackwardKernel, attentionLseKernel } from '../../codegen/wgsl/attention_backward.ts';
import { type BackwardMode, type BackwardTiling, backwardTiling, backwardTilingOf } from '../../ir/ops/attention_backward.tiling.ts';
import { Executor, type KilnDevice, getDevice } from '../../runtime/webgpu/index.ts';
import { backwardGraph, caseData } from '../attention-cases.ts';
import { attentionBackwardGraph, inputsOf, optimized, timeGraph } from './kiln-cases.ts';
import { readback, upload } from '../../runtime/webgpu/index.ts';
import { measure } from './measure.ts';
import { BENCH_DTYPES, type BenchDtype, NO_SHADER_F16, flagValue } from './results.ts';

const argv = process.argv.slice(2);
const args = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--dtype');
const sweep = argv.includes('--sweep');
const dtypes = (flagValue(argv, 'dtype') ?? BENCH_DTYPES.join(',')).split(',') as BenchDtype[];
const [b, h, t, d] = (args.length === 4 ? args : ['12', '12', '1024', '64']).map(Number);
const kdev = await getDevice();
console.log(`${kdev.description}; B${b} H${h} T${t} D${d} causal`);
for (const mode of ['lse', 'q', 'kv'] as const) console.log(mode, JSON.stringify(backwardTiling(mode, d, d, kdev.limits)));
const data = caseData({ b, h, l: t, s: t, d, causal: true, scaling: 'post', seed: 1 });
const flops = (2 * b * h * t * t * d) / 2; // one causal product of D
const f32Ms = new Map<string, number>();
for (const dtype of dtypes) {
  if (dtype === 'f16' && !kdev.f16) {
    console.log(`f16: skipped: ${NO_SHADER_F16}`);
    continue;
  }
  for (const rule of ['flash', 'composed'] as const) {
    const { timing, kernels, peakBytes } = await timeGraph(kdev, optimized(attentionBackwardGraph(b, h, t, d, rule, dtype)));
    // forward 2 products, backward: lse 1, dq 3, dk and dv 4 (flash) or the 5 products of the composed chain
    const products = rule === 'flash' ? 10 : 7;
    if (dtype === 'f32') f32Ms.set(rule, timing.medianMs);
    const vsF32 = dtype === 'f16' && f32Ms.has(rule) ? `, ${(timing.medianMs / f32Ms.get(rule)!).toFixed(2)}x of f32` : '';
    console.log(`${rule} ${dtype}: ${timing.medianMs.toFixed(3)} ms (p10 ${timing.p10Ms.toFixed(3)}, p90 ${timing.p90Ms.toFixed(3)})${vsF32}, ${kernels} kernels, ` +
      `${(peakBytes / 2 ** 20).toFixed(0)} MiB peak, ${((products * flops) / timing.medianMs / 1e9).toFixed(1)} TFLOP/s of its own products`);
  }
  {
    // With nanoGPT's attention dropout 0.2 drawn inside the forward and backward kernels. f16 attention takes "pre_qk" scaling.
    const dropped = caseData({ b, h, l: t, s: t, d, causal: true, scaling: dtype === 'f16' ? 'pre_qk' : 'post', dropout: 0.2, seed: 1 });
    const as = (x: HostTensor): HostTensor => ({ ...x, type: { ...x.type, dtype } });
    const { graph } = backwardGraph({ ...dropped, q: as(dropped.q), k: as(dropped.k), v: as(dropped.v), dout: as(dropped.dout) }, flashAttentionBackward);
    const { timing } = await timeGraph(kdev, optimized(graph));
    console.log(`flash ${dtype} with dropout 0.2: ${timing.medianMs.toFixed(3)} ms (p10 ${timing.p10Ms.toFixed(3)}, p90 ${timing.p90Ms.toFixed(3)})`);
  }
}
if (sweep) await sweepKernels(kdev);
process.exit(0);

/** One backward kernel alone, at a given tiling, on random inputs: its time, and its output (to check against the baseline's). */
async function timeKernel(kdev: KilnDevice, mode: BackwardMode, tiling: BackwardTiling): Promise<{ ms: number; out: Float32Array }> {
  const g = new Graph();
  const input = (name: string, shape: number[]) => g.add('input', [], { name, dtype: 'f32', shape });
  const [q, k, v, dout] = ['q', 'k', 'v', 'dout'].map((name) => input(name, [b, h, t, d]));
  const spec = data.spec;
  const attrs = { causal: true, scale: spec.scale, scaling: spec.scaling };
  let node: Node;
  if (mode === 'lse') node = g.add('attention_lse', [q, k], attrs);
  else node = g.add('fused_attention_backward', [q, k, v, dout, input('lse', [b, h, t, 2]), input('delta', [b, h, t])], { ...attrs, wrt: mode });
  g.setOutputs([{ name: 'out', node }]);
  const req = { inputs: node.inputs.map((x) => (x as Node).type), attrs: node.attrs, out: node.type, limits: kdev.limits };
  const plan = mode === 'lse' ? attentionLseKernel(req, spec, tiling) : attentionBackwardKernel(req, spec, mode, tiling);
  const kernel = kernelFromPlan(node, plan);
  const exec = await Executor.create(kdev, { graph: g, kernels: [kernel], storageOf: (n) => n });
  const hosts = inputsOf(g);
  const feeds = new Map(g.nodesOf('input').map((n) => [n, upload(kdev, hosts.get(String(n.attrs.name))!)]));
  const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), { budgetMs: 300, minBatches: 5 });
  const out = (await readback(kdev, exec.run(feeds).get('out')!, node.type)) as Float32Array;
  exec.destroy();
  return { ms: timing.medianMs, out };
}

/** max |a - b| / max |b|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let [err, scale] = [0, 0];
  for (let i = 0; i < b.length; i++) [err, scale] = [Math.max(err, Math.abs(a[i] - b[i])), Math.max(scale, Math.abs(b[i]))];
  return Number.isFinite(err) ? err / (scale || 1) : Infinity;
}

async function sweepKernels(kdev: KilnDevice): Promise<void> {
  const limits = kdev.limits;
  const baseline = (mode: BackwardMode) => backwardTiling(mode, d, d, limits)!;
  const old: Record<string, number> = {};
  const reference: Record<string, Float32Array> = {};
  for (const mode of ['lse', 'q', 'k', 'v', 'kv'] as const) ({ ms: old[mode], out: reference[mode] } = await timeKernel(kdev, mode, baseline(mode)));
  const kv = reference.kv;
  // kv: k's and v's outputs side by side
  reference.kv = new Float32Array(reference.k.length * 2);
  for (let row = 0; row < reference.k.length / d; row++) {
    reference.kv.set(reference.k.subarray(row * d, (row + 1) * d), row * 2 * d);
    reference.kv.set(reference.v.subarray(row * d, (row + 1) * d), row * 2 * d + d);
  }
  // What the rule ran before dk and dv were merged (commit 8b3e63a): 16-row tiles at 48 KiB for D = 64.
  let beforeSum = 0;
  for (const mode of ['lse', 'q', 'k', 'v'] as const) beforeSum += (await timeKernel(kdev, mode, backwardTilingOf(mode, d, d, { slices: 2, rows: 64, tile: 16 }))).ms;
  console.log(`before (lse, q, k, v at 16-row tiles): ${beforeSum.toFixed(3)} ms`);
  console.log(`kv against k and v: ${relDiff(kv, reference.kv).toExponential(1)}`);
  console.log(`default tilings, k and v apart: ${JSON.stringify(Object.fromEntries(Object.entries(old).map(([m, ms]) => [m, +ms.toFixed(3)])))} ` +
    `sum ${Object.values(old).reduce((a, x) => a + x, 0).toFixed(3)} ms`);
  for (const mode of ['lse', 'q', 'kv'] as const) {
    const results: [string, number][] = [];
    for (const slices of [1, 2]) {
      for (const rows of [32, 64, 128]) {
        for (const tile of mode === 'lse' ? [8, 16] : [4, 8]) {
          {
            const tiling = backwardTilingOf(mode, d, d, { slices, rows, tile });
            if (tiling.workgroupSize > limits.maxComputeInvocationsPerWorkgroup || tiling.workgroupBytes > limits.maxComputeWorkgroupStorageSize) continue;
            const what = `slices ${slices} rows ${rows} tile ${tile}`;
            try {
              const { ms, out } = await timeKernel(kdev, mode, tiling);
              const diff = relDiff(out, reference[mode]);
              results.push([diff > 1e-4 ? `${what} WRONG (${diff.toExponential(1)})` : what, ms]);
            } catch (e) {
              console.log(`  ${mode} ${what} failed: ${String(e).slice(0, 200)}`);
            }
          }
        }
      }
    }
    results.sort((x, y) => x[1] - y[1]);
    console.log(`${mode}: ${results.map(([what, ms]) => `${what}: ${ms.toFixed(3)}`).join('; ')}`);
  }
}

// Times the flash-attention backward (attention_lse, delta, fused_attention_backward wrt q and kv)
// against the composed backward (matmul, softmax, ...) and the forward, on the machine's adapter.
// Each graph holds the forward too (delta reads its output), so "backward" times below include it.
// Both graphs go through kiln's pass pipeline first (elementwise fusion, ...), as a compiled training
// step's would: without it the composed backward runs unfused elementwise kernels and looks slower
// than it is (the first numbers in ATTENTION_NOTES.md were taken that way).
//   node test/bench/run.mjs test/bench/attention-backward.ts [B H T D] [--sweep]   (or packed for the GPU machine)
// --sweep also times each backward kernel alone over tilings (slices, owned rows, tile), each checked
// against the default tiling's output.

import { kernelFromPlan } from '../../codegen/index.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import { attentionBackward } from '../../ir/ops/attention.ts';
import { flashAttentionBackward } from '../../ir/ops/attention_backward.ts';
import { attentionBackwardKernel, attentionLseKernel } from '../../codegen/wgsl/attention_backward.ts';
import { type BackwardMode, type BackwardTiling, backwardTiling, backwardTilingOf } from '../../ir/ops/attention_backward.tiling.ts';
import { Executor, type KilnDevice, getDevice } from '../../runtime/webgpu/index.ts';
import { backwardGraph, caseData } from '../attention-cases.ts';
import { inputsOf, timeGraph } from './kiln-cases.ts';
import { readback, upload } from '../../runtime/webgpu/index.ts';
import { measure } from './measure.ts';
import { DEFAULT_PIPELINE, runPasses } from '../../passes/index.ts';

const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const sweep = process.argv.includes('--sweep');
const [b, h, t, d] = (args.length === 4 ? args : ['12', '12', '1024', '64']).map(Number);
const kdev = await getDevice();
console.log(`${kdev.description}; B${b} H${h} T${t} D${d} causal`);
for (const mode of ['lse', 'q', 'kv'] as const) console.log(mode, JSON.stringify(backwardTiling(mode, d, d, kdev.limits)));
const data = caseData({ b, h, l: t, s: t, d, causal: true, scaling: 'post', seed: 1 });
const flops = (2 * b * h * t * t * d) / 2; // one causal product of D
for (const [name, rule] of [['flash', flashAttentionBackward], ['composed', attentionBackward]] as const) {
  const { timing, kernels, peakBytes } = await timeGraph(kdev, optimized(backwardGraph(data, rule).graph));
  // forward 2 products, backward: lse 1, dq 3, dk and dv 4 (flash) or the 5 products of the composed chain
  const products = name === 'flash' ? 10 : 7;
  console.log(`${name}: ${timing.medianMs.toFixed(3)} ms (p10 ${timing.p10Ms.toFixed(3)}, p90 ${timing.p90Ms.toFixed(3)}), ${kernels} kernels, ` +
    `${(peakBytes / 2 ** 20).toFixed(0)} MiB peak, ${((products * flops) / timing.medianMs / 1e9).toFixed(1)} TFLOP/s of its own products`);
}
{
  // With nanoGPT's attention dropout 0.2 drawn inside the forward and backward kernels.
  const { graph } = backwardGraph(caseData({ b, h, l: t, s: t, d, causal: true, scaling: 'post', dropout: 0.2, seed: 1 }), flashAttentionBackward);
  const { timing } = await timeGraph(kdev, optimized(graph));
  console.log(`flash with dropout 0.2: ${timing.medianMs.toFixed(3)} ms (p10 ${timing.p10Ms.toFixed(3)}, p90 ${timing.p90Ms.toFixed(3)})`);
}
if (sweep) await sweepKernels(kdev);
process.exit(0);

/** The graph after kiln's passes, as compile() would run them (but constant folding: timeGraph feeds inputs only, and a compiled step's causal mask is a buffer, not folded). */
function optimized(graph: Graph): Graph {
  return runPasses(graph, DEFAULT_PIPELINE.filter((p) => p.name !== 'constant_fold')).graph;
}

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

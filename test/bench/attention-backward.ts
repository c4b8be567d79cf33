// Times the flash-attention backward (attention_lse, delta, fused_attention_backward wrt q, k, v)
// against the composed backward (matmul, softmax, ...) and the forward, on the machine's adapter.
// Each graph holds the forward too (delta reads its output), so "backward" times below include it.
//   node test/bench/run.mjs test/bench/attention-backward.ts [B H T D]   (or packed for the GPU machine)

import { attentionBackward } from '../../ir/ops/attention.ts';
import { flashAttentionBackward } from '../../ir/ops/attention_backward.ts';
import { backwardTiling } from '../../ir/ops/attention_backward.wgsl.ts';
import { getDevice } from '../../runtime/webgpu/index.ts';
import { backwardGraph, caseData } from '../attention-cases.ts';
import { timeGraph } from './kiln-cases.ts';

const [b, h, t, d] = (process.argv.slice(2).length === 4 ? process.argv.slice(2) : ['12', '12', '1024', '64']).map(Number);
const kdev = await getDevice();
console.log(`${kdev.description}; B${b} H${h} T${t} D${d} causal`);
for (const mode of ['lse', 'q', 'k', 'v'] as const) console.log(mode, JSON.stringify(backwardTiling(mode, d, d, kdev.limits)));
const data = caseData({ b, h, l: t, s: t, d, causal: true, scaling: 'post', seed: 1 });
const flops = (2 * b * h * t * t * d) / 2; // one causal product of D
for (const [name, rule] of [['flash', flashAttentionBackward], ['composed', attentionBackward]] as const) {
  const { graph } = backwardGraph(data, rule);
  const { timing, kernels, peakBytes } = await timeGraph(kdev, graph);
  // forward 2 products, backward: lse 1, dq 3, dk 3, dv 2 (flash) or the same 5 products of the composed chain
  const products = name === 'flash' ? 11 : 7;
  console.log(`${name}: ${timing.medianMs.toFixed(3)} ms (p10 ${timing.p10Ms.toFixed(3)}, p90 ${timing.p90Ms.toFixed(3)}), ${kernels} kernels, ` +
    `${(peakBytes / 2 ** 20).toFixed(0)} MiB peak, ${((products * flops) / timing.medianMs / 1e9).toFixed(1)} TFLOP/s of its own products`);
}
process.exit(0);

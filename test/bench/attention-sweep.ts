// Flash-attention forward layouts side by side on one GPU, in one process: kiln's kernel and the
// experimental ones of attention-variants.ts, each checked against kiln's output on the same inputs,
// then timed on the two causal cases of the performance issue (and D = 128). ATTENTION_NOTES.md
// says what was run and what came out. `--f16` also times kiln's kernel on f16 q, k, v (its "pre_qk"
// scaling) after the f32 rows, with its time over kiln's f32 one: the experimental layouts are f32 only.
// On the GPU machine:
//   bash ../shared/device/pack.sh test/bench/attention-sweep.ts
//   bash .device/run.sh .device/attention-sweep.mjs [--round1] [--only NAME,NAME] [--smoke] [--f16]

import { kernelFromPlan, lowerGraph } from '../../codegen/index.ts';
import type { Node } from '../../ir/graph.ts';
import type { KernelLimits, KernelPlan } from '../../codegen/wgsl/plan.ts';
import { attentionSpec } from '../../ir/ops/fused_attention.ts';
import { flashAttentionKernel } from '../../codegen/wgsl/fused_attention.ts';
import '../../ir/ops/index.ts';
import { Executor, type KilnDevice, getDevice, readback, releaseDevice, upload } from '../../runtime/webgpu/index.ts';
import { type VariantShape, variantKernel, variantName } from './attention-variants.ts';
import { attentionGraph, inputsOf } from './kiln-cases.ts';
import { measure } from './measure.ts';
import { NO_SHADER_F16 } from './results.ts';

type Variant = { name: string; plan: (node: Node, limits: KernelLimits) => KernelPlan };

const req = (node: Node, limits: KernelLimits) => ({ inputs: (node.inputs as Node[]).map((x) => x.type), attrs: node.attrs, out: node.type, limits });
const kiln: Variant = { name: 'kiln', plan: (n, l) => flashAttentionKernel(req(n, l), attentionSpec(n.attrs)) };
const variant = (v: VariantShape): Variant => ({ name: variantName(v), plan: (n, l) => variantKernel(req(n, l), attentionSpec(n.attrs), v) });
const base: VariantShape = { slices: 2, rowBlock: 1, invRows: 64, keys: 16, exchange: 'workgroup', unroll: false };
// Round 1 (see ATTENTION_NOTES.md): subgroup exchange, row blocking, unrolling, crossed.
const round1: VariantShape[] = [
  base, // kiln's layout through the experimental generator: the generator's own overhead
  { ...base, exchange: 'subgroup' },
  { ...base, exchange: 'subgroup', unroll: true },
  { ...base, rowBlock: 2, keys: 8 },
  { ...base, rowBlock: 2, keys: 8, exchange: 'subgroup' },
  { ...base, rowBlock: 2, keys: 8, exchange: 'subgroup', unroll: true },
  { ...base, rowBlock: 2, keys: 16, exchange: 'subgroup' },
  { ...base, rowBlock: 2, keys: 16, exchange: 'subgroup', unroll: true },
  { ...base, rowBlock: 2, invRows: 32, keys: 16, exchange: 'subgroup', unroll: true },
  { ...base, rowBlock: 2, invRows: 128, keys: 8, exchange: 'subgroup', unroll: true },
  { ...base, slices: 4, rowBlock: 4, invRows: 32, keys: 8, exchange: 'subgroup' },
  { ...base, slices: 4, rowBlock: 4, invRows: 32, keys: 8, exchange: 'subgroup', unroll: true },
  { ...base, slices: 4, rowBlock: 4, invRows: 32, keys: 16, exchange: 'subgroup', unroll: true },
  { ...base, slices: 4, rowBlock: 2, invRows: 32, keys: 16, exchange: 'subgroup', unroll: true },
  { ...base, slices: 4, rowBlock: 4, invRows: 32, keys: 8, exchange: 'workgroup', unroll: true },
];
// Round 2: two rows per invocation with the workgroup exchange (round 1's only gain at T1024), around its tile sizes.
const r2: VariantShape = { ...base, rowBlock: 2, keys: 8 };
const round2: VariantShape[] = [
  base,
  r2,
  { ...r2, unroll: true },
  { ...r2, keys: 4 },
  { ...r2, keys: 16 },
  { ...r2, invRows: 32 },
  { ...r2, invRows: 32, unroll: true },
  { ...r2, invRows: 32, keys: 16 },
  { ...r2, slices: 4, invRows: 64 },
  { ...r2, slices: 4, invRows: 32, keys: 16 },
  { ...r2, rowBlock: 3, slices: 4, invRows: 32 },
  { ...base, invRows: 32 },
];
const shapes = process.argv.includes('--round1') ? round1 : round2;
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1].split(',') : null;
const all = [kiln, ...shapes.map(variant)].filter((v) => !only || v.name === 'kiln' || only.includes(v.name));
const cases: [number, number, number, number][] = process.argv.includes('--smoke')
  ? [[2, 3, 200, 64]]
  : [[12, 12, 1024, 64], [64, 6, 256, 64], [12, 12, 1024, 128]];

async function main(): Promise<void> {
  const kdev: KilnDevice = await getDevice();
  console.log(`adapter: ${kdev.description}; subgroupMinSize ${kdev.limits.subgroupMinSize ?? 'none'}`);
  const rows: string[] = [];
  // kiln's f32 time and output of the case: every row's ratio divides by the time; f16 rows compare with the output
  let kilnMs = 0;
  let kilnF32: Float32Array | null = null;
  for (const [b, h, t, d] of cases) for (const dtype of process.argv.includes('--f16') ? (['f32', 'f16'] as const) : (['f32'] as const)) {
    if (dtype === 'f16' && !kdev.f16) {
      console.log(`B${b} H${h} T${t} D${d} f16: skipped: ${NO_SHADER_F16}`);
      continue;
    }
    const graph = attentionGraph(b, h, t, d, 'fused', dtype);
    const node = graph.outputs[0].node;
    const hosts = inputsOf(graph);
    const feeds = new Map(graph.nodes.filter((n) => n.op === 'input').map((n) => [n, upload(kdev, hosts.get(String(n.attrs.name))!)]));
    const flops = 2 * 2 * b * h * t * t * d / 2;
    let reference: Float32Array | null = null;
    for (const v of dtype === 'f32' ? all : [kiln]) {
      let plan: KernelPlan;
      let exec: Executor;
      try {
        plan = v.plan(node, kdev.limits);
        exec = await Executor.create(kdev, { ...lowerGraph(graph, kdev.limits), kernels: [kernelFromPlan(node, plan)] });
      } catch (e) {
        console.log(`${v.name}: ${e instanceof Error ? e.message.slice(0, 300) : e}`);
        continue;
      }
      const got = (await readback(kdev, exec.run(feeds).get('y')!, node.type)) as Float32Array;
      let err = 0;
      if (dtype === 'f16') reference = kilnF32; // f16 rows: the difference from kiln's f32 output, reported (no verdict)
      if (!reference) reference = got;
      else for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i] - reference[i]) || (Number.isNaN(got[i]) ? Infinity : 0));
      const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), { budgetMs: 400, minBatches: 7 });
      if (v === kiln && dtype === 'f32') [kilnMs, kilnF32] = [timing.medianMs, got];
      const tf = flops / (timing.medianMs * 1e-3) / 1e12;
      const name = dtype === 'f16' ? `${v.name} f16` : v.name;
      const row = `B${b} H${h} T${t} D${d}  ${name.padEnd(34)} ${timing.medianMs.toFixed(3).padStart(7)} ms [${timing.p10Ms.toFixed(3)}, ${timing.p90Ms.toFixed(3)}] ${(timing.medianMs / kilnMs).toFixed(3)}x ${tf.toFixed(2).padStart(6)} TFLOP/s wg ${plan.workgroupSize}x${plan.workgroups} ${dtype === 'f16' ? `max|diff| vs f32 ${err.toExponential(1)}` : err <= 1e-5 ? 'ok' : `WRONG max|diff| ${err}`}`;
      console.log(row);
      rows.push(row);
      exec.destroy();
    }
    for (const f of feeds.values()) (f as GPUBuffer).destroy();
  }
  console.log(`\n${new Date().toISOString()} ${kdev.description}\n${rows.join('\n')}`);
  await releaseDevice();
}

main().then(() => process.exit(0), (e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});

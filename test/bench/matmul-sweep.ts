// Matmul tilings and kernel variants side by side on one GPU, in one process: first every variant is
// checked against the f64 CPU reference (whole outputs of ragged shapes, sampled outputs of the timed
// ones), then timed. MATMUL_NOTES.md says what was run and what came out. `--f16` repeats both in f16
// (f16 operands and output, f32 accumulation; the reference takes the same f16 operands and each output
// may differ from it by f16's rounding u |c| more), each f16 time also over its f32 time. On the GPU machine:
//   bash ../shared/device/pack.sh test/bench/matmul-sweep.ts
//   bash .device/run.sh .device/matmul-sweep.mjs [--final | --quick | --check-only | --smoke] [--f16]

import { kernelFromPlan, lowerGraph } from '../../codegen/index.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import type { KernelLimits, KernelPlan } from '../../codegen/wgsl/plan.ts';
import '../../ir/ops/index.ts';
import { MATMUL_TILINGS, type MatmulTiling, matmulKernel } from '../../codegen/wgsl/linalg.ts';
import { getOp } from '../../ir/registry.ts';
import { numel } from '../../ir/types.ts';
import { Executor, type KilnDevice, getDevice, readback, releaseDevice, upload } from '../../runtime/webgpu/index.ts';
import type { DType } from '../../ir/dtypes.ts';
import { roundF16 } from '../../ir/f16.ts';
import { randomHost } from './kiln-cases.ts';
import { measure } from './measure.ts';
import { NO_SHADER_F16 } from './results.ts';

interface Shape {
  label: string;
  a: number[];
  b: number[];
  ta: boolean;
  tb: boolean;
}
type Variant = { name: string; plan: (node: Node, limits: KernelLimits) => KernelPlan };

const req = (node: Node, limits: KernelLimits) => {
  const [a, b] = node.inputs as Node[];
  return { inputs: [a.type, b.type], attrs: node.attrs, out: node.type, limits };
};

/** Tiles visited in bands of 8 tile rows (column by column inside a band): neighbours share operand panels in L2. */
function bandOrder(plan: KernelPlan): KernelPlan {
  const from = ['let tile_n = wid % params.tiles_n;', 'let tile_m = (wid / params.tiles_n) % params.tiles_m;'];
  const to = [
    'let in_batch = wid % (params.tiles_n * params.tiles_m);',
    'let band_rows = min(8u, params.tiles_m - (in_batch / (8u * params.tiles_n)) * 8u);',
    'let band_start = (in_batch / (8u * params.tiles_n)) * 8u;',
    'let in_band = in_batch - band_start * params.tiles_n;',
    'let tile_m = band_start + in_band % band_rows;',
    'let tile_n = in_band / band_rows;',
  ];
  let body = plan.body;
  for (const l of from) if (!body.includes(l)) throw new Error('bandOrder: tile lines not found');
  body = body.replace(`${from[0]}\n  ${from[1]}`, to.join('\n  '));
  return { ...plan, body };
}

const tiled = (t: MatmulTiling): Variant => ({ name: `${t.bm}x${t.bn} bk${t.bk}`, plan: (n, l) => matmulKernel(req(n, l), t) });
const tilings = [...Object.values(MATMUL_TILINGS), { ...MATMUL_TILINGS.medium, bk: 16 }].map(tiled);
const choice: Variant = { name: 'kiln choice', plan: (n, l) => matmulKernel(req(n, l)) };
const bands: Variant = { name: '128x128 bk8 bands', plan: (n, l) => bandOrder(matmulKernel(req(n, l), MATMUL_TILINGS.largeK8)) };
const all = [...tilings, choice];

const sq = (s: number, tb = false): Shape => ({ label: `${s}^3${tb ? ' B^T' : ''}`, a: [s, s], b: [s, s], ta: false, tb });
const linear = (label: string, rows: number[], k: number, n: number): Shape => ({ label, a: [...rows, k], b: [n, k], ta: false, tb: true });
const quick = process.argv.includes('--quick');
const timed: [Shape, Variant[]][] = [
  [sq(4096), [...all, bands]],
  [sq(4096, true), all],
  [linear('GPT-2 MLP up [12,1024,768] -> 3072', [12, 1024], 768, 3072), all],
  [linear('GPT-2 MLP down [12,1024,3072] -> 768', [12, 1024], 3072, 768), all],
  [linear('GPT-2 attn proj [12,1024,768] -> 768', [12, 1024], 768, 768), all],
  [linear('GPT-2 qkv [12,1024,768] -> 2304', [12, 1024], 768, 2304), all],
  [{ label: 'attention q@k^T [48,1024,64]', a: [48, 1024, 64], b: [48, 1024, 64], ta: false, tb: true }, all],
  [{ label: 'attention p@v [48,1024,1024]x[..,64]', a: [48, 1024, 1024], b: [48, 1024, 64], ta: false, tb: false }, all],
  [linear('shakespeare qkv [64,256,384] -> 1152', [64, 256], 384, 1152), all],
  [linear('shakespeare MLP down [64,256,1536] -> 384', [64, 256], 1536, 384), all],
  [sq(2048), all],
  [sq(1024), all],
  [sq(512), all],
  // Residency probes: 128x128 gives 198 / 264 / 276 workgroups, 128x64 396 / 528 / 552.
  [{ label: 'probe 1408x4096x2304', a: [1408, 4096], b: [4096, 2304], ta: false, tb: false }, tilings],
  [{ label: 'probe 1408x4096x3072', a: [1408, 4096], b: [4096, 3072], ta: false, tb: false }, tilings],
  [{ label: 'probe 1536x4096x2944', a: [1536, 4096], b: [4096, 2944], ta: false, tb: false }, tilings],
  [{ label: '4000^3 (ragged M, N)', a: [4000, 4000], b: [4000, 4000], ta: false, tb: false }, [tilings[0], tilings[1], choice]],
  [{ label: '4001x4003x4005 (ragged M, N, K)', a: [4001, 4003], b: [4003, 4005], ta: false, tb: false }, [tilings[0], tilings[1], choice]],
];

function graphOf(s: Shape, dtype: DType = 'f32'): { graph: Graph; node: Node } {
  const graph = new Graph();
  const a = graph.add('input', [], { name: 'a', dtype, shape: s.a });
  const b = graph.add('input', [], { name: 'b', dtype, shape: s.b });
  const node = graph.add('matmul', [a, b], { transposeA: s.ta, transposeB: s.tb });
  graph.setOutputs([{ name: 'c', node }]);
  return { graph, node };
}

async function run(kdev: KilnDevice, graph: Graph, node: Node, plan: KernelPlan): Promise<Executor> {
  const program = lowerGraph(graph, kdev.limits);
  return Executor.create(kdev, { ...program, kernels: [kernelFromPlan(node, plan)] });
}

/** Output element `i` in f64 from the host operands (for sampled checks of large products). */
function refElement(node: Node, a: HostTensor, b: HostTensor, i: number): number {
  const [ta, tb] = [node.attrs.transposeA === true, node.attrs.transposeB === true];
  const [m, n] = node.type.shape.slice(-2);
  const k = ta ? a.type.shape[a.type.shape.length - 2] : a.type.shape[a.type.shape.length - 1];
  const batch = Math.floor(i / (m * n));
  const row = Math.floor(i / n) % m;
  const col = i % n;
  const aBatches = numel(a.type.shape.slice(0, -2));
  const bBatches = numel(b.type.shape.slice(0, -2));
  const ao = (aBatches === 1 ? 0 : batch) * m * k;
  const bo = (bBatches === 1 ? 0 : batch) * k * n;
  let sum = 0;
  for (let kk = 0; kk < k; kk++) sum += a.data[ao + (ta ? kk * m + row : row * k + kk)] * b.data[bo + (tb ? col * k + kk : kk * n + col)];
  return sum;
}

/** Random operands of an input's type, rounded to f16 values where it is f16. */
function operand(node: Node, seed: number, scale: number): HostTensor {
  const t = randomHost(node.type, seed, scale);
  if (node.type.dtype === 'f16') for (let i = 0; i < t.data.length; i++) t.data[i] = roundF16(t.data[i]);
  return t;
}

/** f16's unit roundoff: an f16 output may differ from the f64 product by u |c| more than an f32 one. */
const U16 = 2 ** -11;
const dtypes: DType[] = process.argv.includes('--f16') ? ['f32', 'f16'] : ['f32'];

function maxAbs(d: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < d.length; i++) m = Math.max(m, Math.abs(d[i]));
  return m;
}

async function main(): Promise<void> {
  const kdev = await getDevice();
  console.log(`adapter: ${kdev.description}; workgroup storage ${kdev.limits.maxComputeWorkgroupStorageSize}, invocations ${kdev.limits.maxComputeInvocationsPerWorkgroup}`);
  // 1. Whole outputs of small ragged products, every variant, against the f64 reference.
  let checks = 0;
  let worstRatio = 0;
  if (dtypes.includes('f16') && !kdev.f16) {
    console.log(`f16: skipped: ${NO_SHADER_F16}`);
    dtypes.pop();
  }
  for (const dtype of dtypes) for (const [m, k, n, ta, tb, batch] of [[129, 37, 257, false, false, [2]], [65, 257, 7, true, false, []], [257, 65, 129, false, true, [3]], [7, 129, 65, true, true, [2]],
    [256, 136, 128, false, true, [2]], [128, 64, 256, true, false, []], [1, 257, 1, false, false, []], [300, 1, 200, false, true, []]] as [number, number, number, boolean, boolean, number[]][]) {
    const s: Shape = { label: '', a: [...batch, ...(ta ? [k, m] : [m, k])], b: [...batch, ...(tb ? [n, k] : [k, n])], ta, tb };
    const { graph, node } = graphOf(s, dtype);
    const [an, bn] = node.inputs as Node[];
    const a = operand(an, 7, 2);
    const b = operand(bn, 8, 2);
    const ref = getOp('matmul').cpu([a, b], node.attrs, node.type, 'f64');
    const rounding = dtype === 'f16' ? U16 : 0;
    const tol = 2e-5 * Math.sqrt(k) * maxAbs(a.data) * maxAbs(b.data);
    const feeds = new Map([[an, upload(kdev, a)], [bn, upload(kdev, b)]]);
    for (const v of all) {
      const exec = await run(kdev, graph, node, v.plan(node, kdev.limits)).catch((e) => {
        console.log(`${v.name}: ${e instanceof Error ? e.message.slice(0, 160) : e}`);
        return null;
      });
      if (!exec) continue;
      const got = await readback(kdev, exec.run(feeds).get('c')!, node.type);
      let ratio = 0; // the largest error over its element's tolerance
      for (let i = 0; i < ref.length; i++) ratio = Math.max(ratio, Math.abs(got[i] - ref[i]) / (tol + rounding * Math.abs(ref[i])) || (Number.isNaN(got[i]) ? Infinity : 0));
      if (!(ratio <= 1)) throw new Error(`${v.name} ${dtype} wrong on ${JSON.stringify(s)}: an error ${ratio.toFixed(2)}x its tolerance (${tol} + ${rounding} |c|)`);
      worstRatio = Math.max(worstRatio, ratio);
      checks++;
      exec.destroy();
    }
    for (const f of feeds.values()) f.destroy();
  }
  console.log(`checked ${checks} (shape, variant${dtypes.length > 1 ? ', dtype' : ''}) in full: all within tolerance, worst at ${(worstRatio * 100).toFixed(2)}% of it`);

  // 2. Timings, with 256 sampled outputs of each timed run checked too.
  const rows: string[] = [];
  const smoke: [Shape, Variant[]][] = [[sq(256), [...all, bands]], [{ label: 'smoke ragged', a: [201, 203], b: [203, 205], ta: false, tb: false }, [choice]], [linear('smoke batched', [3, 64], 136, 200), tilings]];
  // --final: kiln's choice alone on every shape. (The notes' "before" column came from also timing
  // git ae0251b's kernel here: restore it from there to compare again in one run.)
  const final: [Shape, Variant[]][] = timed.filter(([s]) => !s.label.startsWith('probe')).map(([s]) => [s, [choice]]);
  const shapes = process.argv.includes('--check-only') ? [] : process.argv.includes('--smoke') ? smoke : process.argv.includes('--final') ? final : quick ? timed.slice(0, 1) : timed;
  const f32Ms = new Map<string, number>();
  for (const [shape, variants] of shapes) for (const dtype of dtypes) {
    const { graph, node } = graphOf(shape, dtype);
    const [an, bn] = node.inputs as Node[];
    const a = operand(an, 1, 0.5);
    const b = operand(bn, 2, 0.5);
    const feeds = new Map([[an, upload(kdev, a)], [bn, upload(kdev, b)]]);
    const [m, n] = node.type.shape.slice(-2);
    const k = shape.ta ? shape.a[shape.a.length - 2] : shape.a[shape.a.length - 1];
    const flops = 2 * (numel(node.type.shape) / (m * n)) * m * n * k;
    for (const v of variants) {
      const plan = v.plan(node, kdev.limits);
      const exec = await run(kdev, graph, node, plan).catch(() => null);
      if (!exec) continue;
      const timing = await measure(() => exec.run(feeds), () => kdev.device.queue.onSubmittedWorkDone(), { budgetMs: 300, minBatches: 5 });
      const got = await readback(kdev, exec.run(feeds).get('c')!, node.type);
      let err = 0;
      for (let s = 0; s < 256; s++) {
        const i = Math.floor(((s * 2654435761) % 4294967296) / 4294967296 * got.length);
        const ref = refElement(node, a, b, i);
        // over the element's tolerance: f32 accumulation, and f16's rounding of the output
        err = Math.max(err, Math.abs(got[i] - ref) / (2e-5 * Math.sqrt(k) * 0.25 + (dtype === 'f16' ? U16 * Math.abs(ref) : 0)) || (Number.isNaN(got[i]) ? Infinity : 0));
      }
      const tf = flops / (timing.medianMs * 1e-3) / 1e12;
      const key = `${shape.label} ${v.name}`;
      if (dtype === 'f32') f32Ms.set(key, timing.medianMs);
      const vsF32 = dtype === 'f16' && f32Ms.has(key) ? `  f16/f32 ${(timing.medianMs / f32Ms.get(key)!).toFixed(2)}x` : '';
      const row = `${shape.label.padEnd(42)} ${`${v.name} ${dtype}`.padEnd(28)} ${timing.medianMs.toFixed(3).padStart(8)} ms [${timing.p10Ms.toFixed(3)}, ${timing.p90Ms.toFixed(3)}]  ${tf.toFixed(2).padStart(6)} TFLOP/s  wg ${plan.workgroupSize}x${plan.workgroups}  ${err <= 1 ? 'ok' : `WRONG err ${err.toFixed(2)}x the tolerance`}${vsF32}`;
      console.log(row);
      rows.push(row);
      exec.destroy();
    }
    for (const f of feeds.values()) f.destroy();
  }
  console.log(`\n${new Date().toISOString()} ${kdev.description}\n${rows.join('\n')}`);
  await releaseDevice();
}

main().then(() => process.exit(0), (e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});

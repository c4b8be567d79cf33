// The tensor-core matmul (codegen/wgsl/matmul_tc.ts) on the shapes nanoGPT's f16 products have, and
// the tensor-core flash attention forward (codegen/wgsl/flash_tc.ts), against kiln's CPU f16 reference,
// the f64 one and the SIMT f16 kernels, on a device with subgroup matrices. No CPU driver has them: test/tensor-cores.gpu.test.ts runs this where the device offers them
// (it skips elsewhere), and test/bench/tensor-core-check.ts runs it on the GPU machine.
//
// Tolerance, as test/f16-linalg.gpu.test.ts derives it for the SIMT kernel: the kernel stores fl16(a) for
// an f32 sum a of exact f16 x f16 products, so with E a bound on |a - y| (y the exact sum):
//   vs the CPU f16 reference c:  |gpu - c| <= ulp16(gpu) / 2 + ulp16(c) / 2 + E + u |y|
//   vs f64:                      |gpu - y| <= ulp16(gpu) / 2 + E
//   vs the SIMT kernel s:        |gpu - s| <= ulp16(gpu) / 2 + ulp16(s) / 2 + 2 E
// E = 4 K u sum_k |a_ik b_kj| (u = 2^-24): twice the SIMT kernel's, since a tensor core's f32 accumulation
// need not round to nearest (NVIDIA's MMA units align and truncate the addends), which at most doubles
// each step's error. Any indexing or staging error moves an output by whole products: far past E.

import { kernelFromPlan } from '../codegen/index.ts';
import { flashAttentionKernel, flashTiling } from '../codegen/wgsl/fused_attention.ts';
import { MATMUL_TILINGS } from '../codegen/wgsl/linalg.ts';
import { attentionSpec } from '../ir/ops/fused_attention.ts';
import type { HostData, HostTensor } from '../ir/host.ts';
import type { Graph, Node } from '../ir/graph.ts';
import { getOp } from '../ir/registry.ts';
import { type Shape, numel } from '../ir/types.ts';
import type { KernelPlan } from '../codegen/wgsl/plan.ts';
import { interpret } from '../runtime/interpreter.ts';
import { type KilnDevice, readback, runKernel, upload } from '../runtime/webgpu/index.ts';
import { randomF16, ulp16 } from './helpers.ts';
import { planOf } from './matmul-cases.ts';
import { singleOp } from './op-graph.ts';

const U = 2 ** -24;

export interface TensorCoreCase {
  readonly label: string;
  readonly a: Shape;
  readonly b: Shape;
  readonly transposeA: boolean;
  readonly transposeB: boolean;
}

/** nanoGPT's f16 products (shrunk where the CPU reference would be slow) in each layout matmul takes. */
export const TENSOR_CORE_CASES: readonly TensorCoreCase[] = [
  { label: 'x @ W^T (nn.Linear, GPT-2 c_attn at B2 T1024)', a: [2048, 768], b: [2304, 768], transposeA: false, transposeB: true },
  { label: 'x @ W (a [M, K], b [K, N])', a: [512, 256], b: [256, 384], transposeA: false, transposeB: false },
  { label: 'x^T @ dy (the weight gradient)', a: [512, 1024], b: [512, 768], transposeA: true, transposeB: false },
  { label: 'a^T @ b^T', a: [256, 128], b: [192, 256], transposeA: true, transposeB: true },
  { label: 'q @ k^T, batched [2, 6] heads, T 256, D 64', a: [2, 6, 256, 64], b: [2, 6, 256, 64], transposeA: false, transposeB: true },
  { label: 'p @ v, batched, K = T 256', a: [2, 6, 256, 256], b: [2, 6, 256, 64], transposeA: false, transposeB: false },
  { label: 'a batch times one shared b', a: [3, 128, 64], b: [64, 128], transposeA: false, transposeB: false },
];

export interface TensorCoreResult {
  readonly label: string;
  /** The kernel kiln chose ran on subgroup matrices. */
  readonly tensorCores: boolean;
  readonly elements: number;
  /** Largest error over its tolerance (above): <= 1 passes. */
  readonly vsCpu16: number;
  readonly vsF64: number;
  readonly vsSimt: number;
  /** Largest difference from the CPU f16 reference in f16 ULPs, and how many elements differ at all. */
  readonly ulps: number;
  readonly differ: number;
  /** The first element past a tolerance, if any. */
  readonly failure?: string;
}

/** The node's kernel from `plan` on the device, its output poisoned with NaN first (an element left unwritten fails). */
async function runPlan(kdev: KilnDevice, node: Node, feeds: Map<Node, HostTensor>, plan: KernelPlan): Promise<Float64Array> {
  const kernel = kernelFromPlan(node, plan);
  const inputs = (node.inputs as Node[]).map((n) => upload(kdev, feeds.get(n)!));
  const out = upload(kdev, { type: node.type, data: new Float32Array(numel(node.type.shape)).fill(NaN) });
  runKernel(kdev, kernel, inputs, out);
  const data = await readback(kdev, out, node.type);
  for (const buf of [...inputs, out]) buf.destroy();
  return Float64Array.from(data as ArrayLike<number>);
}

/** Per element: the tolerances against the CPU f16 reference, f64 and the SIMT kernel (each file section says how they are derived). */
type Tolerances = (i: number, gpu: number, cpu16: number, simt: number) => readonly [number, number, number];

/**
 * The largest error over each tolerance, and the first element past one. With `nonFinite` 'match', an
 * element that is not finite on either side must equal the CPU f16 reference's (overflow to inf); otherwise
 * a non-finite element fails.
 */
function compare(label: string, tensorCores: boolean, gpu: Float64Array, cpu16: ArrayLike<number>, exact: ArrayLike<number>, simt: Float64Array, tolerances: Tolerances, nonFinite: 'match' | 'fail'): TensorCoreResult {
  let [vsCpu16, vsF64, vsSimt, ulps, differ] = [0, 0, 0, 0, 0];
  let failure: string | undefined;
  for (let i = 0; i < gpu.length; i++) {
    const [g, cc, y, s] = [gpu[i]!, cpu16[i]!, exact[i]!, simt[i]!];
    if (nonFinite === 'match' && (!Number.isFinite(g) || !Number.isFinite(cc))) {
      if (!Object.is(g, cc)) failure ??= `element ${i}: ${g}, the CPU f16 reference ${cc}`;
      continue;
    }
    const [t16, t64, tSimt] = tolerances(i, g, cc, s);
    const r16 = Math.abs(g - cc) / t16;
    const r64 = Math.abs(g - y) / t64;
    const rs = Math.abs(g - s) / tSimt;
    if (!(r16 <= 1 && r64 <= 1 && rs <= 1)) failure ??= `element ${i}: ${g}, CPU f16 ${cc}, f64 ${y}, SIMT ${s}`;
    vsCpu16 = Math.max(vsCpu16, r16);
    vsF64 = Math.max(vsF64, r64);
    vsSimt = Math.max(vsSimt, rs);
    if (g !== cc) differ++;
    ulps = Math.max(ulps, Math.abs(g - cc) / ulp16(Math.max(Math.abs(g), Math.abs(cc))));
  }
  return { label, tensorCores, elements: gpu.length, vsCpu16, vsF64, vsSimt, ulps, differ, ...(failure ? { failure } : {}) };
}

/** The graph's output `y` on the CPU: as the device rounds (f16 stored once, 'f32') and the ideal ('f64'). */
function references(graph: Graph, feeds: Map<Node, HostTensor>): { cpu16: HostData; exact: HostData } {
  const feed = (n: Node) => feeds.get(n)!;
  return { cpu16: interpret(graph, feed, 'f32').get('y')!.data, exact: interpret(graph, feed, 'f64').get('y')!.data };
}

const usesTensorCores = (plan: KernelPlan) => plan.directives?.some((d) => d.includes('subgroup_matrix')) === true;

/** One case: kiln's chosen kernel (tensor cores where the device has them) against the references and the SIMT kernel. */
export async function checkTensorCoreCase(kdev: KilnDevice, c: TensorCoreCase, seed = 1): Promise<TensorCoreResult> {
  const { graph, feeds, node } = singleOp('matmul', [randomF16(c.a, seed), randomF16(c.b, seed + 1)], { transposeA: c.transposeA, transposeB: c.transposeB });
  const plan = planOf(node, undefined, kdev.limits);
  const gpu = await runPlan(kdev, node, feeds, plan);
  const simt = await runPlan(kdev, node, feeds, planOf(node, MATMUL_TILINGS.medium));
  const { cpu16, exact } = references(graph, feeds);
  const [a, b] = (node.inputs as Node[]).map((n) => { const t = feeds.get(n)!; return { type: t.type, data: Float64Array.from(t.data, Math.abs) }; });
  const k = c.transposeA ? c.a.at(-2)! : c.a.at(-1)!;
  const bound = Float64Array.from(getOp('matmul').cpu([a, b], node.attrs, node.type, 'f64') as ArrayLike<number>, (x) => 4 * k * U * x);
  return compare(c.label, usesTensorCores(plan), gpu, cpu16, exact, simt, (i, g, cc, s) => {
    const e = bound[i]!;
    return [ulp16(g) / 2 + ulp16(cc) / 2 + e + U * Math.abs(exact[i]!), ulp16(g) / 2 + e, ulp16(g) / 2 + ulp16(s) / 2 + 2 * e];
  }, 'match');
}

export function formatTensorCoreResult(r: TensorCoreResult): string {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return `${r.tensorCores ? 'tensor cores' : 'SIMT (not chosen!)'} | ${r.label}: ${r.elements} values, vs cpu f16 ${pct(r.vsCpu16)} of tol (${r.ulps.toFixed(1)} ulp, ${r.differ} differ), vs f64 ${pct(r.vsF64)}, vs SIMT ${pct(r.vsSimt)}${r.failure ? ` FAILED at ${r.failure}` : ''}`;
}

// ---- flash attention forward ----
//
// Tolerance against the CPU f16 reference c (and the SIMT kernel s, which computes what c does): both round
// q and k scaled by sqrt(scale) to f16 identically and sum the scores in f32 (differences of D u |q||k|,
// far below the rest); the tensor-core kernel rounds each weight p to f16 before P v (relative error
// 2^-11 a weight, the sum of weights taken before rounding), which moves an output by at most 2^-11 max|v|;
// then each output is rounded to f16 once: |gpu - c| <= ulp16(gpu) / 2 + ulp16(c) / 2 + 2^-11 max|v| + 2^-16 max|v|
// (the last a margin for the f32 exp2 and sums, which are 2^-22-relative). Against f64 the f16 rounding
// of q and k (2^-11 relative each, a score moves by 2^-10 |score|) adds (2^-10 S) max|v| with S the
// largest |score|, as the bench's f16 check reads it.

export interface AttentionTcCase {
  readonly label: string;
  readonly batch: Shape;
  readonly l: number;
  readonly s: number;
  readonly d: number;
  readonly causal: boolean;
}

export const ATTENTION_TC_CASES: readonly AttentionTcCase[] = [
  { label: 'causal, B2 H6 T256 D64 (shakespeare-char heads)', batch: [2, 6], l: 256, s: 256, d: 64, causal: true },
  { label: 'causal, T200: ragged row and key tiles', batch: [1, 3], l: 200, s: 200, d: 64, causal: true },
  { label: 'not causal, L128 S192 D32', batch: [2, 2], l: 128, s: 192, d: 32, causal: false },
  { label: 'causal, T64 D16', batch: [4], l: 64, s: 64, d: 16, causal: true },
];

export async function checkAttentionTcCase(kdev: KilnDevice, c: AttentionTcCase, seed = 7): Promise<TensorCoreResult> {
  const attrs = { causal: c.causal, scale: 1 / Math.sqrt(c.d), scaling: 'pre_qk' };
  const [q, k, v] = [[c.l], [c.s], [c.s]].map(([rows], i) => randomF16([...c.batch, rows!, c.d], seed + i));
  const { graph, feeds, node } = singleOp('fused_attention', [q!, k!, v!], attrs);
  const [qn, kn, vn] = node.inputs as Node[];
  const req = { inputs: [qn!.type, kn!.type, vn!.type], attrs: node.attrs, out: node.type, limits: kdev.limits };
  const plan = flashAttentionKernel(req, attentionSpec(node.attrs));
  const gpu = await runPlan(kdev, node, feeds, plan);
  const simt = await runPlan(kdev, node, feeds, flashAttentionKernel(req, attentionSpec(node.attrs), flashTiling(c.d, c.d, kdev.limits, 'f16')!));
  const { cpu16, exact } = references(graph, feeds);
  const maxV = Array.from(v!.data, Math.abs).reduce((a, b) => Math.max(a, b), 0);
  const maxScore = c.d * 2 * 2 * attrs.scale; // |q|, |k| <= 2
  const pTerm = (2 ** -11 + 2 ** -16) * maxV;
  return compare(`attention ${c.label}`, usesTensorCores(plan), gpu, cpu16, exact, simt, (_, g, cc, s) =>
    [ulp16(g) / 2 + ulp16(cc) / 2 + pTerm, ulp16(g) / 2 + pTerm + 2 ** -10 * maxScore * maxV, ulp16(g) / 2 + ulp16(s) / 2 + pTerm], 'fail');
}

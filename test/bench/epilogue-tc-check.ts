// The matmul epilogue on the tensor-core kernel (codegen/wgsl/matmul_tc.ts write8), on the GPU machine: no
// CPU driver has subgroup matrices, so test/matmul-epilogue-f16.gpu.test.ts checks the SIMT kernel only.
// nanoGPT's two f16 linear epilogues under autocast (c_fc: bias and GELU, stored f16; c_proj: bias and the
// f32 residual, stored f32) against the CPU reference as the device rounds ('f32') and the SIMT kernel.
// One line per case; exit status 1 if a case fails or kiln did not choose tensor cores.
//
//   add test/bench/epilogue-tc-check.ts to test/bench/pack.sh's list, then bash .device/run.sh .device/epilogue-tc-check.mjs
//
// Tolerance per output, p the exact product there, y the reference: the tensor-core sum is within
// E = 4 K u sum|a b| of p (test/tensor-core-cases.ts: twice the SIMT bound, MMA units truncate), then rounded
// to f16 once, where the GPU and CPU may pick neighbouring f16s (one ulp16(|p| + E)); the chain's derivative
// is at most ~1.2 (GELU's 1.13, the adds' 1); an f16 store may differ by one ulp16(|y|); 1e-4 covers the f32
// chain and GELU's erfc fit. |gpu - ref| <= 1.2 (ulp16(|p| + E) + E) + ulp16(|y|) [f16 out] + 1e-4 max(1, |y|).

import '../../ir/ops/index.ts';
import { kernelFromPlan } from '../../codegen/index.ts';
import { MATMUL_TILINGS, matmulKernel } from '../../codegen/wgsl/linalg.ts';
import { f16Bits, roundF16 } from '../../ir/f16.ts';
import { Graph, type Node } from '../../ir/graph.ts';
import type { HostTensor } from '../../ir/host.ts';
import { getOp } from '../../ir/registry.ts';
import { type DType, type Shape, numel } from '../../ir/types.ts';
import type { KernelPlan } from '../../codegen/wgsl/plan.ts';
import { interpret } from '../../runtime/interpreter.ts';
import { type KilnDevice, getDevice, readback, releaseDevice, runKernel, upload } from '../../runtime/webgpu/index.ts';
import { rng } from '../helpers.ts';

const U = 2 ** -24;
const ulp16 = (v: number) => 2 ** (Math.max(Math.min((f16Bits(Math.min(Math.abs(v), 65504)) >>> 10) & 0x1f, 30), 1) - 25);

function values(dtype: DType, shape: Shape, seed: number): HostTensor {
  const r = rng(seed);
  return { type: { dtype, shape: [...shape] }, data: Float32Array.from({ length: numel(shape) }, () => (dtype === 'f16' ? roundF16 : Math.fround)(-2 + 4 * r())) };
}

interface EpilogueTcCase { label: string; m: number; k: number; n: number; residual: boolean }
const CASES: EpilogueTcCase[] = [
  { label: 'c_fc: f16(gelu(x @ W^T + bias)), GPT-2 shapes at 512 rows', m: 512, k: 768, n: 3072, residual: false },
  { label: 'c_proj: residual + (x @ W^T + bias) in f32', m: 512, k: 768, n: 768, residual: true },
];

async function run(kdev: KilnDevice, node: Node, feeds: Map<Node, HostTensor>, plan: KernelPlan): Promise<Float64Array> {
  const inputs = (node.inputs as Node[]).map((x) => upload(kdev, feeds.get(x)!));
  const out = upload(kdev, { type: node.type, data: new Float32Array(numel(node.type.shape)).fill(NaN) });
  runKernel(kdev, kernelFromPlan(node, plan), inputs, out);
  const data = Float64Array.from((await readback(kdev, out, node.type)) as ArrayLike<number>);
  for (const b of [...inputs, out]) b.destroy();
  return data;
}

const kdev = await getDevice();
let failed = false;
for (const c of CASES) {
  const g = new Graph();
  const feeds = new Map<Node, HostTensor>();
  const leaf = (name: string, dtype: DType, shape: Shape, seed: number) => {
    const n = g.add('input', [], { name, dtype, shape: [...shape] });
    feeds.set(n, values(dtype, shape, seed));
    return n;
  };
  const x = leaf('x', 'f16', [c.m, c.k], 1);
  const w = leaf('w', 'f16', [c.n, c.k], 2);
  const bias = leaf('bias', 'f32', [c.n], 3);
  const operands = c.residual ? [x, w, leaf('residual', 'f32', [c.m, c.n], 4), bias] : [x, w, bias];
  const expr = c.residual ? 'add($1, add(f32($0), $2))' : 'f16(gelu(add(f32($0), $1)))';
  const node = g.add('matmul_epilogue', operands, { transposeA: false, transposeB: true, expr });
  g.setOutputs([{ name: 'y', node }]);
  const req = { inputs: operands.map((o) => o.type), attrs: node.attrs, out: node.type, limits: kdev.limits };
  const plan = matmulKernel(req);
  const tensorCores = plan.directives?.some((d) => d.includes('subgroup_matrix')) === true;
  const gpu = await run(kdev, node, feeds, plan);
  const simt = await run(kdev, node, feeds, matmulKernel(req, MATMUL_TILINGS.medium));
  const want = interpret(g, (n) => feeds.get(n)!, 'f32').get('y')!.data;
  const [a, b] = [x, w].map((n) => feeds.get(n)!);
  const product = getOp('matmul').cpu([a, b], { transposeA: false, transposeB: true }, { dtype: 'f16', shape: [c.m, c.n] }, 'f64');
  const absProduct = getOp('matmul').cpu([a, b].map((t) => ({ type: t.type, data: Float64Array.from(t.data, Math.abs) })), { transposeA: false, transposeB: true }, { dtype: 'f16', shape: [c.m, c.n] }, 'f64');
  let [worst, worstSimt] = [0, 0];
  for (let i = 0; i < want.length; i++) {
    const e = 4 * c.k * U * absProduct[i];
    const tol = 1.2 * (ulp16(Math.abs(product[i]) + e) + e) + (node.type.dtype === 'f16' ? ulp16(want[i]) : 0) + 1e-4 * Math.max(1, Math.abs(want[i]));
    worst = Math.max(worst, Math.abs(gpu[i] - want[i]) / tol);
    worstSimt = Math.max(worstSimt, Math.abs(gpu[i] - simt[i]) / (2 * tol));
  }
  const ok = tensorCores && worst <= 1 && worstSimt <= 1;
  failed ||= !ok;
  console.log(`${tensorCores ? 'tensor cores' : 'SIMT (not chosen!)'} | ${c.label}: ${want.length} values, vs cpu ${(100 * worst).toFixed(1)}% of tol, vs SIMT ${(100 * worstSimt).toFixed(1)}% of 2 tol${ok ? '' : ' FAILED'}`);
}
releaseDevice();
process.exitCode = failed ? 1 : 0;

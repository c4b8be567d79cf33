// fused_attention's flash kernel on the GPU against the f64 CPU reference, with FlashAttention's
// acceptance rule: the fused f32 result may be at most 2x as far from f64 as the unfused f32 chain
// (matmul, mul, masked_fill or add, softmax, matmul: kiln's own separate kernels, run in the same
// graph on the same GPU). The unfused GPU chain is the fair yardstick: the f32 CPU reference
// accumulates in f64 and rounds once, an error no f32 kernel can come within 2x of.
// Rows whose every score is -inf are checked apart: the unfused softmax gives NaN there, and the
// fused kernel NaN (emptyRows "nan", the chain's answer) or zeros ("zero", sdpa's), exactly.
// The flash tiling's own limits, which need no GPU: flash-tiling.test.ts.

import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { kernelFromPlan, lowerGraph, lowerNode } from '../codegen/index.ts';
import { Graph, type Node } from '../ir/graph.ts';
import type { HostData, HostTensor } from '../ir/host.ts';
import '../ir/ops/index.ts';
import type { KernelLimits } from '../codegen/wgsl/plan.ts';
import { type FlashShape, flashAttentionKernel, flashTiling, flashTilingOf } from '../codegen/wgsl/fused_attention.ts';
import { getOp } from '../ir/registry.ts';
import { type DType, type Shape, numel } from '../ir/types.ts';
import { Executor, getDevice, readback, releaseDevice } from '../runtime/webgpu/index.ts';
import { rng } from './helpers.ts';

afterAll(releaseDevice);


function tensor(dtype: DType, shape: Shape, values: (r: () => number) => number, seed: number): HostTensor {
  const r = rng(seed);
  const n = numel(shape);
  const data = dtype === 'bool' ? Uint8Array.from({ length: n }, () => values(r)) : Float32Array.from({ length: n }, () => values(r));
  return { type: { dtype, shape }, data };
}
const uniform = (lo: number, hi: number) => (r: () => number) => lo + r() * (hi - lo);

interface Attention {
  q: HostTensor;
  k: HostTensor;
  v: HostTensor;
  /** Bool keep-mask or additive f32, broadcast to [..., L, S]. */
  mask?: HostTensor;
  causal: boolean;
  scale: number;
  scaling: 'post' | 'pre_qk';
  /** What a bool mask fills dropped keys with (default -inf), in the chain and in fused_attention's attrs. */
  fill?: number;
  emptyRows?: 'nan' | 'zero';
}

interface Outcome {
  fused: HostData;
  unfused: HostData;
  ref: HostData;
}

/**
 * Runs fused_attention and (unless told not to) the unfused chain in one graph on the GPU, and the
 * f64 reference on the CPU. The kernel is lowered for `limits` (WebGPU's defaults when absent), or
 * with the given flash tiling.
 */
async function runBoth(a: Attention, withUnfused = true, lowering: { limits?: KernelLimits; tiling?: FlashShape } = {}): Promise<Outcome> {
  const g = new Graph();
  const feeds = new Map<Node, HostTensor>();
  const input = (name: string, t: HostTensor) => {
    const leaf = g.add('input', [], { name, dtype: t.type.dtype, shape: [...t.type.shape] });
    feeds.set(leaf, t);
    return leaf;
  };
  const [q, k, v] = [input('q', a.q), input('k', a.k), input('v', a.v)];
  const mask = a.mask ? input('mask', a.mask) : undefined;
  const attrs = { causal: a.causal, scale: a.scale, scaling: a.scaling, ...(a.fill !== undefined ? { fill: a.fill } : {}), ...(a.emptyRows ? { emptyRows: a.emptyRows } : {}) };
  const fused = g.add('fused_attention', mask ? [q, k, v, mask] : [q, k, v], attrs);

  const unfused = withUnfused ? unfusedChain(g, a, q, k, v, mask, input) : undefined;
  g.setOutputs([{ name: 'fused', node: fused }, ...(unfused ? [{ name: 'unfused', node: unfused }] : [])]);

  const kdev = await getDevice();
  let program = lowerGraph(g, lowering.limits);
  const { tiling } = lowering;
  if (tiling) {
    const req = { inputs: fused.inputs.map((x) => (x as Node).type), attrs: fused.attrs, out: fused.type };
    const plan = flashAttentionKernel(req, attrs, flashTilingOf(a.q.type.shape.at(-1)!, a.v.type.shape.at(-1)!, tiling));
    program = { ...program, kernels: program.kernels.map((k) => (k.node === fused ? kernelFromPlan(fused, plan) : k)) };
  }
  const exec = await Executor.create(kdev, program);
  const outs = exec.run(feeds);
  const result = {
    fused: await readback(kdev, outs.get('fused')!, fused.type),
    unfused: unfused ? await readback(kdev, outs.get('unfused')!, unfused.type) : new Float32Array(0),
    ref: reference(a, fused),
  };
  exec.destroy();
  return result;
}

/** softmax(q k^T * scale + mask) v as kiln's separate kernels; a causal mask comes in as a bool input. */
function unfusedChain(g: Graph, a: Attention, q: Node, k: Node, v: Node, mask: Node | undefined, input: (name: string, t: HostTensor) => Node): Node {
  const [l, s] = [a.q.type.shape.at(-2)!, a.k.type.shape.at(-2)!];
  const root = Math.sqrt(a.scale);
  let scores = a.scaling === 'pre_qk'
    ? g.add('matmul', [g.add('mul', [q, root]), g.add('mul', [k, root])], { transposeA: false, transposeB: true })
    : g.add('mul', [g.add('matmul', [q, k], { transposeA: false, transposeB: true }), a.scale]);
  if (a.causal) {
    const above = tensor('bool', [l, s], () => 0, 0);
    for (let i = 0; i < l; i++) for (let j = i + 1; j < s; j++) above.data[i * s + j] = 1;
    scores = g.add('masked_fill', [scores, input('above', above), -Infinity]);
  } else if (a.mask?.type.dtype === 'bool') {
    scores = g.add('masked_fill', [scores, g.add('logical_not', [mask!]), a.fill ?? -Infinity]);
  } else if (a.mask) {
    scores = g.add('add', [scores, mask!]);
  }
  return g.add('matmul', [g.add('softmax', [scores], { dim: -1 }), v], { transposeA: false, transposeB: false });
}

function reference(a: Attention, node: Node): HostData {
  const f64 = (t: HostTensor): HostTensor => (t.type.dtype === 'f32' ? { type: t.type, data: Float64Array.from(t.data as Float32Array) } : t);
  const inputs = [a.q, a.k, a.v, ...(a.mask ? [a.mask] : [])].map(f64);
  return getOp('fused_attention').cpu(inputs, node.attrs, node.type, 'f64');
}

// f32 roundings the fused and unfused paths cannot share however accurate both are: the output
// is a convex combination of v rows, and its last steps (rescale, 1/sum, the final product) round
// independently in each path, a few units in the last place of max |v|. 8 ULP of it is the floor
// under the 2x rule; it matters only where the unfused error happens to be near zero (D = 1, S = 1).
const FLOOR_ULPS = 1;

const worst = { fused: 0, unfused: 0, ratio: 0, overflowFused: 0 };
afterAll(() => {
  console.log(`fused_attention: largest |fused - f64| ${worst.fused.toExponential(2)}, largest |unfused - f64| ${worst.unfused.toExponential(2)}, ` +
    `largest fused/unfused error ratio ${worst.ratio.toFixed(2)}; overflow case |fused - f64| ${worst.overflowFused.toExponential(2)}`);
});

/** Rows (of Dv values) whose every score is -inf: no key survives the mask (a finite fill keeps them all). */
function fullyMaskedRows(a: Attention): boolean[] {
  const { shape } = a.q.type;
  const [l, s] = [shape.at(-2)!, a.k.type.shape.at(-2)!];
  const rows = numel(shape.slice(0, -1));
  if (!a.mask || a.causal || a.fill !== undefined) return new Array(rows).fill(false);
  const m = a.mask;
  const full = [...shape.slice(0, -1), s];
  const lead = full.length - m.type.shape.length;
  const strides = full.map((_, d) => (d < lead || m.type.shape[d - lead] === 1 ? 0 : numel(m.type.shape.slice(d - lead + 1))));
  const masked: boolean[] = [];
  for (let row = 0; row < rows; row++) {
    let base = 0;
    let rest = row;
    for (let d = full.length - 2; d >= 0; d--) {
      base += (rest % full[d]) * strides[d];
      rest = Math.floor(rest / full[d]);
    }
    let any = false;
    for (let j = 0; j < s && !any; j++) {
      const x = m.data[base + j * strides.at(-1)!];
      any = m.type.dtype === 'bool' ? x !== 0 : x > -Infinity;
    }
    masked.push(!any && l > 0);
  }
  return masked;
}

/** The 2x rule on rows that see a key; on rows that see none, NaN in the chain and NaN or zeros (emptyRows) fused. */
function expectWithinTwiceUnfused(a: Attention, { fused, unfused, ref }: Outcome, what: string): void {
  const dv = a.v.type.shape.at(-1)!;
  const masked = fullyMaskedRows(a);
  let fusedErr = 0;
  let unfusedErr = 0;
  for (let e = 0; e < ref.length; e++) {
    const row = Math.floor(e / dv);
    if (masked[row]) {
      const want = a.emptyRows === 'nan' ? NaN : 0;
      if (!Object.is(fused[e], want)) expect.fail(`${what}: fully masked row ${row} gives ${fused[e]} at element ${e}, not ${want}`);
      if (unfused.length > 0 && !Number.isNaN(unfused[e])) expect.fail(`${what}: the unfused chain gives ${unfused[e]} on fully masked row ${row}, not NaN`);
      continue;
    }
    if (!Number.isFinite(fused[e])) expect.fail(`${what}: element ${e} is ${fused[e]}, reference ${ref[e]}`);
    fusedErr = Math.max(fusedErr, Math.abs(fused[e] - ref[e]));
    unfusedErr = Math.max(unfusedErr, Math.abs(unfused[e] - ref[e]));
  }
  let maxV = 0;
  for (const x of a.v.data) maxV = Math.max(maxV, Math.abs(x));
  const floor = FLOOR_ULPS * 2 ** -23 * maxV;
  expect(fusedErr, `${what}: fused error ${fusedErr} vs unfused ${unfusedErr} (floor ${floor})`).toBeLessThanOrEqual(2 * unfusedErr + floor);
  worst.fused = Math.max(worst.fused, fusedErr);
  worst.unfused = Math.max(worst.unfused, unfusedErr);
  if (unfusedErr > floor) worst.ratio = Math.max(worst.ratio, fusedErr / unfusedErr);
}

function describeCase(a: Attention): string {
  const shape = (t: HostTensor) => `${t.type.dtype}[${t.type.shape.join(',')}]`;
  return `q ${shape(a.q)} k ${shape(a.k)} v ${shape(a.v)}${a.mask ? ` mask ${shape(a.mask)}` : ''} causal=${a.causal} scaling=${a.scaling} scale=${a.scale}`;
}

// ---- generated cases ----

const HEAD_DIMS = [1, 8, 16, 59, 64, 111, 128];

type MaskKind = 'none' | 'bool' | 'additive';

interface CaseSpec {
  b: number;
  h: number;
  l: number;
  s: number;
  d: number;
  causal: boolean;
  scaling: 'post' | 'pre_qk';
  maskKind: MaskKind;
  /** Per mask dim of [B, H, L, S]: kept (true) or broadcast as 1 (false); leading dims may be dropped. */
  maskDims: boolean[];
  maskRank: number;
  /** Fully mask one row of the mask (when it has an L dim). */
  blankRow: boolean;
  seed: number;
}

function buildCase(c: CaseSpec): Attention {
  const { b, h, l, s, d } = c;
  const q = tensor('f32', [b, h, l, d], uniform(-2, 2), c.seed);
  const k = tensor('f32', [b, h, s, d], uniform(-2, 2), c.seed + 1);
  const v = tensor('f32', [b, h, s, d], uniform(-2, 2), c.seed + 2);
  const a: Attention = { q, k, v, causal: c.causal, scale: 1 / Math.sqrt(d), scaling: c.scaling };
  if (c.causal || c.maskKind === 'none') return a;
  const full = [b, h, l, s];
  const shape = full.map((n, i) => (c.maskDims[i] ? n : 1)).slice(4 - c.maskRank);
  const additive = c.maskKind === 'additive';
  // Bool: keep about 70%. Additive: values in [-2, 1], a fifth of them -inf.
  const mask = additive
    ? tensor('f32', shape, (r) => (r() < 0.2 ? -Infinity : -2 + 3 * r()), c.seed + 3)
    : tensor('bool', shape, (r) => (r() < 0.7 ? 1 : 0), c.seed + 3);
  const rowDim = shape.length - 2;
  if (c.blankRow && rowDim >= 0 && shape[rowDim] > 1) {
    const cols = shape.at(-1)!;
    // Row 1 of every leading index: masked throughout.
    for (let base = 0; base < mask.data.length; base += shape[rowDim] * cols) {
      for (let j = 0; j < cols; j++) mask.data[base + cols + j] = additive ? -Infinity : 0;
    }
  }
  return { ...a, mask };
}

/** Random cases with one kind of mask (ignored where causal). */
const caseSpec = (maskKind: MaskKind): fc.Arbitrary<CaseSpec> => fc.record({
  b: fc.integer({ min: 1, max: 4 }),
  h: fc.integer({ min: 1, max: 4 }),
  l: fc.integer({ min: 1, max: 80 }),
  s: fc.integer({ min: 1, max: 80 }),
  sameLength: fc.boolean(),
  d: fc.constantFrom(...HEAD_DIMS),
  causal: fc.boolean(),
  scaling: fc.constantFrom<'post' | 'pre_qk'>('post', 'pre_qk'),
  maskKind: fc.constant(maskKind),
  maskDims: fc.tuple(fc.boolean(), fc.boolean(), fc.boolean(), fc.boolean()),
  maskRank: fc.integer({ min: 1, max: 4 }),
  blankRow: fc.boolean(),
  seed: fc.integer({ min: 1, max: 1 << 30 }),
}).map(({ sameLength, ...c }) => ({ ...c, s: sameLength ? c.l : c.s }))
  // SwiftShader runs about 0.3 GFLOP/s: keep each case to a few MFLOP, twice over (fused and unfused).
  .filter((c) => c.b * c.h * c.l * c.s * c.d <= 2_000_000);

describe('fused_attention on the GPU', () => {
  // 30 random cases, 10 per mask kind. Their time goes to compiling each case's kernels on SwiftShader
  // (a second or so, whatever the shape), so each test stays a small part of the timeout on a busy machine.
  for (const [n, [maskKind, what]] of ([['none', 'no mask'], ['bool', 'a bool mask'], ['additive', 'an additive mask']] as const).entries()) {
    it(`stays within 2x of the unfused chain's error against f64, across shapes and scalings, with ${what}`, async () => {
      await fc.assert(fc.asyncProperty(caseSpec(maskKind), async (c) => {
        const a = buildCase(c);
        expectWithinTwiceUnfused(a, await runBoth(a), describeCase(a));
      }), { numRuns: 10, seed: 20261124 + n });
    });
  }

  it('covers every listed head dim, causal and not, with L != S', async () => {
    for (const [n, d] of HEAD_DIMS.entries()) {
      const a = buildCase({ b: 1, h: 2, l: 9 + 10 * n, s: 37, d, causal: n % 2 === 0, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 100 + n });
      expectWithinTwiceUnfused(a, await runBoth(a), describeCase(a));
    }
  });

  it('gives NaN on rows a bool or -inf mask blanks out, as the chain does, or zeros with emptyRows "zero" (sdpa\'s)', async () => {
    for (const maskKind of ['bool', 'additive'] as const) {
      for (const emptyRows of ['nan', 'zero'] as const) {
        const a = { ...buildCase({ b: 2, h: 3, l: 7, s: 37, d: 16, causal: false, scaling: 'post', maskKind, maskDims: [false, true, true, true], maskRank: 3, blankRow: true, seed: 7 }), emptyRows };
        expect(fullyMaskedRows(a).filter(Boolean).length).toBe(2 * 3);
        expectWithinTwiceUnfused(a, await runBoth(a), `${describeCase(a)} emptyRows=${emptyRows}`);
      }
    }
  });

  it('treats finite scores as scores however low: a row of only finite-filled or -1e30-masked keys averages v, as the chain does', async () => {
    // A finite masked_fill value (torch.finfo(float32).min, -1e30) and additive -1e30 and finfo.min:
    // a row with no other key is a softmax over those, not an empty row; rows with kept keys weigh them 0.
    for (const fill of [-1e30, -3.4028234663852886e38]) {
      const a: Attention = { ...buildCase({ b: 1, h: 2, l: 9, s: 37, d: 16, causal: false, scaling: 'post', maskKind: 'bool', maskDims: [false, true, true, true], maskRank: 3, blankRow: true, seed: 8 }), fill, emptyRows: 'nan' };
      expectWithinTwiceUnfused(a, await runBoth(a), `${describeCase(a)} fill=${fill}`);
      const additive = buildCase({ b: 1, h: 2, l: 9, s: 37, d: 16, causal: false, scaling: 'pre_qk', maskKind: 'additive', maskDims: [false, true, true, true], maskRank: 3, blankRow: true, seed: 9 });
      for (let e = 0; e < additive.mask!.data.length; e++) if (additive.mask!.data[e] === -Infinity) additive.mask!.data[e] = fill;
      expectWithinTwiceUnfused({ ...additive, emptyRows: 'nan' }, await runBoth({ ...additive, emptyRows: 'nan' }), `${describeCase(additive)} additive ${fill}`);
    }
  });

  it('stays finite and accurate with "pre_qk" when q and k are around 40', async () => {
    const d = 64;
    const signed = (r: () => number) => (r() < 0.5 ? -1 : 1) * (36 + 8 * r());
    const a: Attention = {
      q: tensor('f32', [1, 2, 33, d], signed, 41),
      k: tensor('f32', [1, 2, 33, d], signed, 42),
      v: tensor('f32', [1, 2, 33, d], uniform(-2, 2), 43),
      causal: true,
      scale: 1 / Math.sqrt(d),
      scaling: 'pre_qk',
    };
    const outcome = await runBoth(a);
    expect(outcome.fused.every((x) => Number.isFinite(x))).toBe(true);
    expectWithinTwiceUnfused(a, outcome, describeCase(a));
    for (let e = 0; e < outcome.ref.length; e++) worst.overflowFused = Math.max(worst.overflowFused, Math.abs(outcome.fused[e] - outcome.ref[e]));
  });

  it('is causal across row tiles when T is not a multiple of the tile, and when T is below it', async () => {
    const { rows } = flashTiling(64, 64)!;
    for (const t of [rows - 27, 2 * rows - 29]) {
      const a = buildCase({ b: 2, h: 1, l: t, s: t, d: 64, causal: true, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: t });
      expectWithinTwiceUnfused(a, await runBoth(a), describeCase(a));
    }
  });

  it('never reads keys past the last one a causal row tile can see', async () => {
    // NaN in k and v beyond the first row tile: a kernel that computed those tiles and masked the
    // scores afterwards would still multiply the zero weights by NaN values of v.
    const d = 16;
    const { rows } = flashTiling(d, d)!;
    const t = rows + 9;
    const a = buildCase({ b: 1, h: 1, l: t, s: t, d, causal: true, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 5 });
    for (let j = rows; j < t; j++) for (let c = 0; c < d; c++) a.k.data[j * d + c] = a.v.data[j * d + c] = NaN;
    const { fused, ref } = await runBoth(a);
    for (let e = 0; e < rows * d; e++) expect(Math.abs(fused[e] - ref[e])).toBeLessThan(1e-5);
  });

  it('rescales rightly when later keys score far above the running max, and when they fall far below it', async () => {
    // Scores grow with the key (k rows scaled up along S), then drop: the running max moves by more
    // than MAX_SLACK (8 in base 2) several times, and by less in between, where weights above 1 stand.
    const [l, s, d] = [40, 70, 16];
    const a = buildCase({ b: 1, h: 2, l, s, d, causal: false, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 11 });
    for (let h = 0; h < 2; h++) {
      for (let j = 0; j < s; j++) {
        const gain = j < 50 ? 1 + j / 4 : 0.05;
        for (let c = 0; c < d; c++) a.k.data[(h * s + j) * d + c] *= gain;
      }
    }
    expectWithinTwiceUnfused(a, await runBoth(a), describeCase(a));
  });

  it('is right for every tiling shape: one, two or four slices a row, 4 to 16 keys a tile', async () => {
    for (const [n, [slices, keys, d]] of ([[1, 4, 8], [1, 16, 27], [2, 8, 64], [2, 16, 37], [4, 4, 111], [4, 16, 128]] as const).entries()) {
      const a = buildCase({ b: 1, h: 2, l: 70, s: 45, d, causal: n % 2 === 0, scaling: 'pre_qk', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 200 + n });
      expectWithinTwiceUnfused(a, await runBoth(a, true, { tiling: { slices, rows: 64, keys } }), `${describeCase(a)} slices=${slices} keys=${keys}`);
    }
  });

  it('stages more keys a tile where the device has more workgroup memory, and stays right', async () => {
    const { limits } = await getDevice();
    expect(flashTiling(256, 256)!.keys).toBe(4);
    expect(flashTiling(256, 256, { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024 })!.keys).toBe(8);
    expect(flashTiling(256, 256, limits)!.keys).toBeGreaterThan(4);
    const a = buildCase({ b: 1, h: 1, l: 37, s: 37, d: 256, causal: true, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 9 });
    expectWithinTwiceUnfused(a, await runBoth(a, true, { limits }), describeCase(a));
  });

  it('runs more workgroups than one dispatch dimension holds', async () => {
    // B*H = 70000 heads of one row each: 70000 workgroups, spread over x and y by codegen.
    const a = buildCase({ b: 70000, h: 1, l: 1, s: 3, d: 1, causal: false, scaling: 'post', maskKind: 'none', maskDims: [], maskRank: 0, blankRow: false, seed: 3 });
    const g = new Graph();
    const inputs = (['q', 'k', 'v'] as const).map((name) => g.add('input', [], { name, dtype: 'f32', shape: [...a[name].type.shape] }));
    const node = g.add('fused_attention', inputs, { causal: false, scale: 1, scaling: 'post' });
    expect(lowerNode(node)!.workgroups[1]).toBeGreaterThan(1);
    // The unfused chain would take minutes on SwiftShader here: each output is an average of 3 v values.
    const { fused, ref } = await runBoth(a, false);
    for (let e = 0; e < ref.length; e++) expect(Math.abs(fused[e] - ref[e])).toBeLessThan(1e-6);
  });
});

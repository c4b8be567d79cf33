// matmul of two f16 operands on tensor cores, through WebGPU's subgroup matrices (Dawn's
// `chromium-experimental-subgroup-matrix`, on NVIDIA Vulkan's cooperative matrices): f16 x f16 products
// summed in f32 at 16x16x16 a step. Chosen by matmulKernel (linalg.ts) when the device offers that
// config with 32-wide subgroups and the tiles divide the product; every other product, and every device
// without the feature, takes the SIMT kernel there. No CPU driver has the feature: these kernels are
// checked on the GPU only (test/tensor-core-cases.ts), against kiln's CPU f16 reference and the SIMT kernel.
//
// Design (llama.cpp's WebGPU mul_mat_subgroup_matrix and onnxruntime's SubgroupMatrixGemm tile the same
// way): a workgroup computes a bm x bn output tile with sgm x sgn subgroups of 32, each a (bm/sgm) x (bn/sgn)
// block of 16x16 result matrices held as subgroup matrices. K is walked bk at a time: the next K tile is
// read into registers (8 halves a vec4<u32> load, along each operand's contiguous dim) while the
// subgroups multiply the current one out of workgroup memory. Each operand keeps its own layout in
// workgroup memory (contiguous dim contiguous, rows padded by 8 halves against bank conflicts) and the
// subgroup-matrix load's column-major flag says which way it is read, so a^T and b^T (nn.Linear's
// x @ W^T, the backward's x^T @ dy) load as fast as a and b. The sums stay f32 until the one store: the
// output (f16, as matmul's type rule gives for f16 operands) passes through a 16x16 f32 scratch per
// subgroup and is rounded once as it is written, as the SIMT kernel rounds.

import { type TensorType, numel } from '../../ir/types.ts';
import { type MatmulDims, matmulDims } from '../../ir/ops/linalg.ts';
import type { KernelLimits, KernelPlan, KernelRequest } from './plan.ts';
import { indent, store } from './helpers.ts';
import { matmulEpilogue } from './matmul_epilogue.ts';
import { matmulParams, matmulTileLines } from './linalg.ts';

/** A tensor-core tiling: output tile bm x bn, K step bk, subgroups sgm x sgn (32 invocations each). */
export interface TensorCoreTiling {
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  readonly sgm: number;
  readonly sgn: number;
}

/** The tilings kiln chooses from, largest first. */
export const TENSOR_CORE_TILINGS = {
  large: { bm: 128, bn: 128, bk: 32, sgm: 2, sgn: 4 },
  medium: { bm: 128, bn: 64, bk: 32, sgm: 2, sgn: 2 },
  small: { bm: 64, bn: 64, bk: 32, sgm: 2, sgn: 2 },
} as const satisfies Record<string, TensorCoreTiling>;

/** The subgroup-matrix shape these kernels use: left 16x16, right 16x16, result 16x16 (M, N, K). */
export const TC_SHAPE = 16;
const SUBGROUP = 32;
const PAD = 8; // halves of padding per tile row: 16 bytes, so rows start on different banks

/** Whether the device offers f16 x f16 -> f32 subgroup matrices of 16x16x16 and 32-wide subgroups. */
export function tensorCoresUsable(limits: KernelLimits | undefined): boolean {
  if (!limits?.subgroupMatrix || limits.subgroupMinSize !== SUBGROUP || limits.subgroupMaxSize !== SUBGROUP) return false;
  return limits.subgroupMatrix.some((c) => c.m === TC_SHAPE && c.n === TC_SHAPE && c.k === TC_SHAPE);
}

export function tensorCoreInvocations(t: TensorCoreTiling): number {
  return t.sgm * t.sgn * SUBGROUP;
}

/** Workgroup bytes: both operand tiles (f16, padded rows) and one 16x16 f32 scratch per subgroup. */
export function tensorCoreWorkgroupBytes(t: TensorCoreTiling, transposeA: boolean, transposeB: boolean): number {
  return 2 * (tileRows('a', t, transposeA) * tileRow('a', t, transposeA) + tileRows('b', t, transposeB) * tileRow('b', t, transposeB)) + t.sgm * t.sgn * 256 * 4;
}

/**
 * A tiling that divides this product exactly and fits the device, or undefined (the SIMT kernel then).
 * The largest tile whose grid still gives every one of ~132 SMs two workgroups; else the smallest that divides.
 */
export function chooseTensorCoreTiling(dims: MatmulDims, transposeA: boolean, transposeB: boolean, limits: KernelLimits): TensorCoreTiling | undefined {
  const { m, n, k, batch } = dims;
  const fitting = Object.values(TENSOR_CORE_TILINGS).filter((t) =>
    m % t.bm === 0 && n % t.bn === 0 && k % t.bk === 0 &&
    tensorCoreWorkgroupBytes(t, transposeA, transposeB) <= limits.maxComputeWorkgroupStorageSize &&
    tensorCoreInvocations(t) <= limits.maxComputeInvocationsPerWorkgroup);
  const grid = (t: TensorCoreTiling) => numel(batch) * (m / t.bm) * (n / t.bn);
  return fitting.find((t) => grid(t) >= 264) ?? fitting.at(-1);
}

/** How operand x sits in device memory: its outer dim (M for a, N for b) or K contiguous. */
function kContiguous(x: 'a' | 'b', transposed: boolean): boolean {
  return x === 'a' ? !transposed : transposed;
}

/** The operand tile's rows in workgroup memory: one per element of its non-contiguous dim. */
function tileRows(x: 'a' | 'b', t: TensorCoreTiling, transposed: boolean): number {
  return kContiguous(x, transposed) ? (x === 'a' ? t.bm : t.bn) : t.bk;
}

/** Halves per row of the operand tile: its contiguous dim's extent plus padding. */
function tileRow(x: 'a' | 'b', t: TensorCoreTiling, transposed: boolean): number {
  return (kContiguous(x, transposed) ? t.bk : x === 'a' ? t.bm : t.bn) + PAD;
}

/**
 * The copy of one K tile of operand x: `loads` reads its vec4<u32>s (8 halves each) into registers,
 * `stores` writes them into `x_tile`. Vec e of the tile is row e / perRow, halves (e % perRow) * 8 + 0..7.
 */
function operandCopy(x: 'a' | 'b', t: TensorCoreTiling, transposed: boolean, threads: number) {
  const kc = kContiguous(x, transposed);
  const outer = x === 'a' ? t.bm : t.bn;
  const cols = kc ? t.bk : outer; // contiguous extent of the tile
  const perRow = cols / 8;
  const vecs = (t.bk * outer) / 8;
  const per = vecs / threads;
  if (!Number.isInteger(per) || !Number.isInteger(perRow)) throw new Error(`tensor-core tiling ${JSON.stringify(t)} does not split operand ${x}'s tile evenly`);
  const ld = tileRow(x, t, transposed);
  const origin = x === 'a' ? 'row0' : 'col0';
  const extent = x === 'a' ? 'params.m' : 'params.n';
  const loads: string[] = [];
  const stores: string[] = [];
  for (let s = 0; s < per; s++) {
    const e = `(lid + ${s * threads}u)`;
    const row = `${e} / ${perRow}u`;
    const col8 = `${e} % ${perRow}u`;
    // In halves: k-contiguous rows are (origin + row, k0 + 8 col8); otherwise (k0 + row, origin + 8 col8).
    const at = kc
      ? `(${x}_base + (${origin} + ${row}) * params.k + k0) / 8u + ${col8}`
      : `(${x}_base + (k0 + ${row}) * ${extent} + ${origin}) / 8u + ${col8}`;
    loads.push(`${x}_regs[${s}] = ${x}[${at}];`);
    stores.push(`put8_${x}((${row}) * ${ld}u + (${col8}) * 8u, ${x}_regs[${s}]);`);
  }
  return { loads, stores, per, ld, rows: tileRows(x, t, transposed) };
}

/** The matmul on subgroup matrices with this tiling (matmulKernel decides when). */
export function tensorCoreMatmulKernel(req: KernelRequest, t: TensorCoreTiling): KernelPlan {
  const [a, b] = req.inputs as TensorType[];
  const transposeA = req.attrs.transposeA === true;
  const transposeB = req.attrs.transposeB === true;
  const dims = matmulDims(a, b, transposeA, transposeB);
  const { batch, m, k, n } = dims;
  const { bm, bn, bk, sgm, sgn } = t;
  const [wm, wn] = [bm / sgm, bn / sgn];
  const [fm, fn] = [wm / TC_SHAPE, wn / TC_SHAPE];
  const threads = tensorCoreInvocations(t);
  if (!Number.isInteger(fm) || !Number.isInteger(fn) || bk % TC_SHAPE || m % bm || n % bn || k % bk) {
    throw new Error(`tensor-core tiling ${JSON.stringify(t)} does not divide ${m}x${n}x${k}`);
  }
  const rank = batch.length;
  const epilogue = matmulEpilogue(req, rank); // matmul_epilogue: its chain, applied to each sum before the store
  const aCopy = operandCopy('a', t, transposeA, threads);
  const bCopy = operandCopy('b', t, transposeB, threads);
  const accs = [...Array(fm * fn).keys()];

  // One K tile multiplied: for each 16-deep slice, this subgroup's fm left and fn right matrices.
  const multiply: string[] = [];
  for (let kk = 0; kk < bk; kk += TC_SHAPE) {
    multiply.push(`{ // k ${kk}..${kk + TC_SHAPE - 1} of the tile`);
    for (let i = 0; i < fm; i++) {
      const r = `sg_m * ${wm}u + ${i * TC_SHAPE}u`;
      // a[m][k] at row m (k contiguous), or a^T tile [k][m] read column-major.
      multiply.push(kContiguous('a', transposeA)
        ? `  let l${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, (${r}) * ${aCopy.ld}u + ${kk}u, false, ${aCopy.ld}u);`
        : `  let l${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&a_tile, ${kk * aCopy.ld}u + ${r}, true, ${aCopy.ld}u);`);
    }
    for (let j = 0; j < fn; j++) {
      const c = `sg_n * ${wn}u + ${j * TC_SHAPE}u`;
      // b[k][n] row-major (n contiguous), or b^T tile [n][k] read column-major.
      multiply.push(kContiguous('b', transposeB)
        ? `  let r${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, (${c}) * ${bCopy.ld}u + ${kk}u, true, ${bCopy.ld}u);`
        : `  let r${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&b_tile, ${kk * bCopy.ld}u + ${c}, false, ${bCopy.ld}u);`);
    }
    for (let i = 0; i < fm; i++) {
      for (let j = 0; j < fn; j++) multiply.push(`  acc${i * fn + j} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, acc${i * fn + j});`);
    }
    multiply.push('}');
  }

  // The sums out through this subgroup's scratch: lane l writes row l / 2, columns (l % 2) * 8 + 0..7.
  if (!epilogue && req.out.dtype !== 'f16') throw new Error(`tensor-core matmul stores f16, not ${req.out.dtype}`);
  const writes: string[] = [];
  for (let i = 0; i < fm; i++) {
    for (let j = 0; j < fn; j++) {
      const row = `row0 + sg_m * ${wm}u + ${i * TC_SHAPE}u`;
      const col = `col0 + sg_n * ${wn}u + ${j * TC_SHAPE}u`;
      writes.push(
        `subgroupMatrixStore(&c_tile, scratch, acc${i * fn + j}, false, 16u);`,
        'workgroupBarrier();',
        epilogue
          ? `write8(out_base, ${row} + lane / 2u, ${col} + (lane % 2u) * 8u, scratch + lane * 8u);`
          : `write_half8(out_base + (${row} + lane / 2u) * params.n + ${col} + (lane % 2u) * 8u, scratch + lane * 8u);`,
        'workgroupBarrier();',
      );
    }
  }

  const body = [
    ...matmulTileLines(rank),
    ...(epilogue?.setup ?? []),
    '// Subgroup sg computes rows sg_m * WM.. and columns sg_n * WN.. of the tile (32 invocations a subgroup,',
    '// numbered by local index: the lowering is chosen only where subgroups are exactly 32 wide).',
    'let sg = lid / 32u;',
    `let sg_m = sg / ${sgn}u;`,
    `let sg_n = sg % ${sgn}u;`,
    ...accs.map((x) => `var acc${x}: subgroup_matrix_result<f32, 16, 16>;`),
    `var a_regs: array<vec4<u32>, ${aCopy.per}>;`,
    `var b_regs: array<vec4<u32>, ${bCopy.per}>;`,
    'var k0 = 0u;',
    ...aCopy.loads,
    ...bCopy.loads,
    '// Step by step: store the K tile read last step, read the next one, multiply the stored one.',
    'for (; k0 < params.k; k0 = k0 + TILE_K) {',
    '  workgroupBarrier();',
    indent([...aCopy.stores, ...bCopy.stores], '  '),
    '  workgroupBarrier();',
    '  if (k0 + TILE_K < params.k) {',
    '    let k0 = k0 + TILE_K;',
    indent([...aCopy.loads, ...bCopy.loads], '    '),
    '  }',
    indent(multiply, '  '),
    '}',
    'let out_base = batch * params.m * params.n;',
    'let lane = lid % 32u;',
    'let scratch = sg * 256u;',
    ...writes,
  ];

  const put8 = (x: 'a' | 'b') => [
    `fn put8_${x}(at: u32, v: vec4<u32>) {`,
    '  let h0 = bitcast<vec2<f16>>(v.x); let h1 = bitcast<vec2<f16>>(v.y); let h2 = bitcast<vec2<f16>>(v.z); let h3 = bitcast<vec2<f16>>(v.w);',
    `  ${x}_tile[at] = h0.x; ${x}_tile[at + 1u] = h0.y; ${x}_tile[at + 2u] = h1.x; ${x}_tile[at + 3u] = h1.y;`,
    `  ${x}_tile[at + 4u] = h2.x; ${x}_tile[at + 5u] = h2.y; ${x}_tile[at + 6u] = h3.x; ${x}_tile[at + 7u] = h3.y;`,
    '}',
  ];
  const decls = [
    `// a is ${transposeA ? '[K, M]' : '[M, K]'}, b is ${transposeB ? '[N, K]' : '[K, N]'}, both f16, read 8 halves at a time. Each workgroup computes a`,
    `// ${bm}x${bn} output tile on ${sgm * sgn} subgroups, each ${wm}x${wn} of it as ${fm}x${fn} 16x16 f32 result matrices; the tiles divide M, N and K.`,
    `const TILE_M = ${bm}u;`,
    `const TILE_N = ${bn}u;`,
    `const TILE_K = ${bk}u;`,
    `var<workgroup> a_tile: array<f16, ${aCopy.rows * aCopy.ld}>; // ${kContiguous('a', transposeA) ? '[m][k]' : '[k][m]'}, rows padded by ${PAD}`,
    `var<workgroup> b_tile: array<f16, ${bCopy.rows * bCopy.ld}>; // ${kContiguous('b', transposeB) ? '[n][k]' : '[k][n]'}, rows padded by ${PAD}`,
    `var<workgroup> c_tile: array<f32, ${sgm * sgn * 256}>; // one 16x16 scratch per subgroup`,
    '',
    '// Eight halves into a tile, from one vec4<u32> read.',
    ...put8('a'),
    ...put8('b'),
    '',
    ...(epilogue
      ? [epilogue.decls, '',
        `// Eight adjacent outputs of one row, from the scratch, each through the epilogue and stored as ${req.out.dtype} once.`,
        'fn write8(out_base: u32, row: u32, col: u32, from: u32) {',
        '  let at = out_base + row * params.n + col;',
        `  for (var e = 0u; e < 8u; e = e + 1u) { out[at + e] = ${store(req.out.dtype, epilogue.apply('row', 'col + e', 'c_tile[from + e]'))}; }`,
        '}']
      : ['// Eight adjacent outputs of one row, from the scratch, each rounded to f16 once.',
        'fn write_half8(at: u32, from: u32) {',
        `  for (var e = 0u; e < 8u; e = e + 1u) { out[at + e] = ${store('f16', 'c_tile[from + e]')}; }`,
        '}']),
  ];
  return {
    inputNames: ['a', 'b', ...(epilogue?.inputNames ?? [])],
    directives: ['enable f16;', 'enable subgroups;', 'enable chromium_experimental_subgroup_matrix;'],
    bindingTypes: { a: 'vec4<u32>', b: 'vec4<u32>' },
    params: { ...matmulParams(a, b, dims, m / bm, n / bn), ...epilogue?.params },
    decls: decls.join('\n'),
    body: indent(body),
    workgroupSize: threads,
    workgroups: numel(batch) * (m / bm) * (n / bn),
  };
}

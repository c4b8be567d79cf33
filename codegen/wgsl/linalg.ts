// WGSL lowerings of matmul and embedding (the entries live in linalg.ts).
//
// matmul is register-tiled: a workgroup computes a bm x bn output tile, each invocation a tm x tn block
// of it held in registers. K is walked bk at a time; both operand tiles are staged in workgroup memory,
// k-major and padded by one vec4 a row, so that the inner loop reads whole vec4s and the transposing
// stores hit 32 different banks. Two stages alternate: while the workgroup multiplies one K tile, the
// next is already loaded into registers. Each operand is read from device memory along its contiguous
// dim whatever its transpose, so x @ W^T (nn.Linear) loads as fast as x @ W. Design, H100 timings and
// what was tried: test/bench/MATMUL_NOTES.md. f16 operands load as f32 (exact: every f16 is an f32), so
// the tiles and the accumulation stay f32 and a product of two f16s is exact; write4 rounds each
// output to f16 once, as it stores it.

import { DEFAULT_KERNEL_LIMITS, type KernelLimits, type KernelPlan, type KernelRequest } from './plan.ts';
import { type DType, type TensorType, numel } from '../../ir/types.ts';
import { type MatmulDims, matmulDims } from '../../ir/ops/linalg.ts';
import { broadcastStrides, coordLines, generateKernel, indent, listParams, load, offsetExpr, reportBadIndex, store } from './helpers.ts';
import type { Lowering } from './plan.ts';
import { chooseTensorCoreTiling, tensorCoreMatmulKernel, tensorCoresUsable } from './matmul_tc.ts';
import { type TuningSite, pickOf } from '../tuning.ts';
import { matmulEpilogue } from './matmul_epilogue.ts';

/** How matmul splits its output; all sizes are multiples of 4 (vec4s) and bm/tm, bn/tn of 4 and 8. */
export interface MatmulTiling {
  /** Output rows and columns a workgroup computes, and the K step. */
  readonly bm: number;
  readonly bn: number;
  readonly bk: number;
  /** Output rows and columns one invocation computes. */
  readonly tm: number;
  readonly tn: number;
}

/** The tilings kiln chooses from; H100 timings of each on many shapes are in test/bench/MATMUL_NOTES.md. */
export const MATMUL_TILINGS = {
  /** 256 invocations, 33 KiB: long-K products that fill whole waves of the GPU (4096^2: 42 TFLOP/s on an H100). */
  large: { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 },
  /** The same in K steps of 8, 16.5 KiB: K no multiple of 16 (the deeper step lost 14% there), or 33 KiB over the limit. */
  largeK8: { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  /** 128 invocations, 12.5 KiB: GPT-2's products (K of 768 and 3072, N of 64 in attention), and WebGPU's default limits. */
  medium: { bm: 128, bn: 64, bk: 8, tm: 8, tn: 8 },
  /** 256 invocations, 8.5 KiB, 4x4 an invocation: products of 64 rows or fewer, or 32 columns or fewer. */
  small: { bm: 64, bn: 64, bk: 8, tm: 4, tn: 4 },
} as const satisfies Record<string, MatmulTiling>;

// Workgroups an H100 keeps running at once: 132 SMs x 2 of the 128x128 tilings, x 3 of the 128x64 one
// (measured: one workgroup past these takes a second round). WebGPU reports no SM count, so kiln
// weighs grids as they would fill the GPU it was tuned on.
const H100_RESIDENT_LARGE = 264;
const H100_RESIDENT_MEDIUM = 396;

export function matmulInvocations(t: MatmulTiling): number {
  return (t.bm / t.tm) * (t.bn / t.tn);
}

/** Two stages of both operand tiles, each k row padded by 4 floats. */
export function matmulWorkgroupBytes(t: MatmulTiling): number {
  return 2 * t.bk * (t.bm + 4 + t.bn + 4) * 4;
}

function fits(t: MatmulTiling, limits: KernelLimits): boolean {
  return matmulWorkgroupBytes(t) <= limits.maxComputeWorkgroupStorageSize && matmulInvocations(t) <= limits.maxComputeInvocationsPerWorkgroup;
}

/** How full the grid of tiling t keeps `resident` slots, over all the rounds it takes. */
function waveUse(dims: MatmulDims, t: MatmulTiling, resident: number): number {
  const workgroups = numel(dims.batch) * Math.ceil(dims.m / t.bm) * Math.ceil(dims.n / t.bn);
  return workgroups / (Math.ceil(workgroups / resident) * resident);
}

/**
 * The tiling for one product on one device. 128x64 tiles are the default: on an H100 they beat 128x128
 * ones by up to 13% on all of GPT-2's products (K of 768 and 3072). 128x128 tiles win, by 17-44%, for K
 * of 2048 and more when their grid fills its rounds at least as well; tiles that would be mostly padding
 * give way to 64x64 ones.
 */
export function chooseMatmulTiling(dims: MatmulDims, limits: KernelLimits = DEFAULT_KERNEL_LIMITS): MatmulTiling {
  const { large, largeK8, medium, small } = MATMUL_TILINGS;
  if (dims.m <= 64 || dims.n <= 32) return small;
  const big = [large, largeK8].find((t) => fits(t, limits) && dims.k % t.bk === 0) ?? (fits(largeK8, limits) ? largeK8 : undefined);
  if (big && dims.n > 64 && dims.k >= 2048 && waveUse(dims, big, H100_RESIDENT_LARGE) >= waveUse(dims, medium, H100_RESIDENT_MEDIUM)) return big;
  return medium; // 12.5 KiB and 128 invocations: within every WebGPU device's limits
}

// --- autotune (codegen/tuning.ts): the tilings are candidates, chooseMatmulTiling the rule ---

/** The tilings that fit the device, each a candidate; none where tensor cores take the product (matmul_tc.ts). */
export const matmulTuning: TuningSite = {
  op: 'matmul',
  candidates(req) {
    const [a, b] = req.inputs as TensorType[];
    if (a.dtype === 'f16' && b.dtype === 'f16' && tensorCoresUsable(req.limits)) return [];
    const limits = req.limits ?? DEFAULT_KERNEL_LIMITS;
    return Object.entries(MATMUL_TILINGS)
      .filter(([, t]) => fits(t, limits))
      .map(([name, t]) => ({ name, plan: () => matmulKernel(req, t) }));
  },
  rule: (req) => tilingName(chooseMatmulTiling(dimsOf(req), req.limits)),
};

const dimsOf = (req: KernelRequest): MatmulDims => matmulDims(req.inputs[0] as TensorType, req.inputs[1] as TensorType, req.attrs.transposeA === true, req.attrs.transposeB === true);
const tilingName = (t: MatmulTiling): string => Object.entries(MATMUL_TILINGS).find(([, x]) => x === t)![0];

/** The measured tiling when this product was autotuned, else the rule's. */
export function pickedMatmulTiling(req: KernelRequest, dims: MatmulDims = dimsOf(req)): MatmulTiling {
  const picked = Object.entries(MATMUL_TILINGS).find(([name]) => name === pickOf('matmul', req))?.[1]; // a stale cache's unknown name: the rule
  return picked ?? chooseMatmulTiling(dims, req.limits);
}

/** One operand's tile as this invocation copies it: WGSL lines to set up, load from device memory, store into workgroup memory. */
interface OperandCopy {
  setup: string[];
  load: string[];
  store: string[];
}

/** Which edges of the output the tiles do not divide exactly: those loads and writes need care. */
interface Edges {
  m: boolean;
  n: boolean;
  k: boolean;
}

/**
 * The copy of operand `x` (a or b) into `x_tile`: `outer` rows (M for a, N for b) by bk, stored k-major.
 * Loads run along the operand's contiguous dim: consecutive invocations read consecutive addresses.
 * Past the edges, rows outside M (or N) read an element clamped into the matrix: garbage, but it only
 * reaches outputs that are never written. Past K the loads must be 0, so they are selected away.
 */
function operandCopy(x: 'a' | 'b', dtype: DType, kContiguous: boolean, outer: number, t: MatmulTiling, threads: number, edges: Edges): OperandCopy {
  const [origin, extent, outerEdge] = x === 'a' ? ['row0', 'params.m', edges.m] : ['col0', 'params.n', edges.n];
  const row = x.toUpperCase() + '_ROW';
  const loads = (outer * t.bk) / threads;
  // Invocation lid copies elements (o + j * dOuter, kk + j * dK) of the tile, j = 0..loads-1.
  const [dOuter, dK] = kContiguous ? [threads / t.bk, 0] : [0, threads / outer];
  const setup = kContiguous
    ? [`let ${x}_kk = lid % ${t.bk}u;`, `let ${x}_o = lid / ${t.bk}u;`, `let ${x}_at = ${x}_base + (${origin} + ${x}_o) * params.k + ${x}_kk;`,
      `let ${x}_step = ${dOuter}u * params.k; // to the next row this invocation loads`]
    : [`let ${x}_o = lid % ${outer}u;`, `let ${x}_kk = lid / ${outer}u;`, `let ${x}_at = ${x}_base + ${x}_kk * ${extent} + ${origin} + ${x}_o;`,
      `let ${x}_step = ${dK}u * ${extent}; // to the next k row this invocation loads`];
  const clamped = outerEdge || edges.k;
  if (clamped) setup.push(`let ${x}_last = ${x}_base + ${extent} * params.k - 1u; // the matrix's last element`);
  setup.push(`let ${x}_slot = ${x}_kk * ${row} + ${x}_o / 4u;`, `let ${x}_lane = ${x}_o % 4u;`);
  // k0: the first k of the tile being loaded; a k-major operand moves k0 whole rows, the other k0 elements.
  const tileOffset = kContiguous ? 'k0' : `k0 * ${extent}`;
  const loadLines: string[] = [];
  const storeLines: string[] = [];
  for (let j = 0; j < loads; j++) {
    const index = `${x}_at + ${tileOffset}${j ? ` + ${j}u * ${x}_step` : ''}`;
    const value = load(x, dtype, clamped ? `min(${index}, ${x}_last)` : index);
    const insideK = `k0 + ${x}_kk${dK * j ? ` + ${dK * j}u` : ''} < params.k`;
    loadLines.push(`${x}_regs[${j}] = ${edges.k ? `select(0.0, ${value}, ${insideK})` : value};`);
    // Slot j is dOuter / 4 vec4s, or dK rows, past slot 0.
    const slot = `${x}_slot + ${x}_stage${j ? ` + ${kContiguous ? `${(dOuter * j) / 4}u` : `${dK * j}u * ${row}`}` : ''}`;
    storeLines.push(`${x}_tile[${slot}][${x}_lane] = ${x}_regs[${j}];`);
  }
  return { setup, load: loadLines, store: storeLines };
}

/**
 * Batched matmul. Batch dims broadcast through per-operand batch strides (0 where broadcast). Tiles that
 * divide M, N and K exactly give a kernel without bounds checks; otherwise see operandCopy and write4.
 */
/** The params both matmul kernels (SIMT here, tensor cores in matmul_tc.ts) take: sizes, tile counts, batch shape and operand batch strides. */
export function matmulParams(a: TensorType, b: TensorType, dims: MatmulDims, tilesM: number, tilesN: number): Record<string, number> {
  const { batch, m, k, n } = dims;
  return {
    m, n, k,
    tiles_m: tilesM,
    tiles_n: tilesN,
    ...listParams('batch_shape', batch),
    ...listParams('a_batch_stride', broadcastStrides(batch, a.shape.slice(0, -2)).map((s) => s * m * k)),
    ...listParams('b_batch_stride', broadcastStrides(batch, b.shape.slice(0, -2)).map((s) => s * k * n)),
  };
}

/** The first lines of both matmul kernels: this workgroup's output tile and batch, its operands' batch offsets, the tile's first row and column. */
export function matmulTileLines(rank: number): string[] {
  return [
    'let tile_n = wid % params.tiles_n;',
    'let tile_m = (wid / params.tiles_n) % params.tiles_m;',
    'let batch = wid / (params.tiles_n * params.tiles_m);',
    ...coordLines('batch', rank, 'batch_shape', 'i'),
    `let a_base = ${offsetExpr(rank, 'i', 'a_batch_stride')};`,
    `let b_base = ${offsetExpr(rank, 'i', 'b_batch_stride')};`,
    'let row0 = tile_m * TILE_M;',
    'let col0 = tile_n * TILE_N;',
  ];
}

export function matmulKernel(req: KernelRequest, tiling?: MatmulTiling): KernelPlan {
  const [a, b] = req.inputs as TensorType[];
  const transposeA = req.attrs.transposeA === true;
  const transposeB = req.attrs.transposeB === true;
  const dims = matmulDims(a, b, transposeA, transposeB);
  const { batch, m, k, n } = dims;
  const epilogue = matmulEpilogue(req, batch.length); // matmul_epilogue: its chain, applied to each sum before the store
  // f16 x f16 on a device with tensor cores (subgroup matrices): matmul_tc.ts, where its tiles divide the product.
  if (!tiling && a.dtype === 'f16' && b.dtype === 'f16' && tensorCoresUsable(req.limits)) {
    const tc = chooseTensorCoreTiling(dims, transposeA, transposeB, req.limits!);
    if (tc) return tensorCoreMatmulKernel(req, tc);
  }
  const t = tiling ?? pickedMatmulTiling(req, dims);
  const { bm, bn, bk, tm, tn } = t;
  const threads = matmulInvocations(t);
  const [gx, gy] = [bn / tn, bm / tm]; // invocations along N and M
  if ([bm, bn, bk, tm, tn].some((s) => s % 4) || gx % 8 || gy % 4 || threads % bm || threads % bn || (threads / bk) % 4) {
    throw new Error(`matmul tiling ${JSON.stringify(t)} breaks the kernel's layout assumptions`);
  }
  const edges: Edges = { m: m % bm !== 0, n: n % bn !== 0, k: k % bk !== 0 };
  const rank = batch.length;
  const tilesM = Math.ceil(m / bm);
  const tilesN = Math.ceil(n / bn);
  const aCopy = operandCopy('a', a.dtype, !transposeA, bm, t, threads, edges);
  const bCopy = operandCopy('b', b.dtype, transposeB, bn, t, threads, edges);
  const [aRow, bRow] = [bm / 4 + 1, bn / 4 + 1];

  // Invocation (tx, ty) computes rows 4 * (ty + i * gy) + 0..3 and columns 4 * (tx + j * gx) + 0..3: the
  // vec4 reads of a warp's 8 x 4 invocations touch 8 and 4 distinct vec4s, one pass of the banks each.
  const warpsX = gx / 8;
  const coords = warpsX === 1
    ? ['let tx = lid % 8u;', 'let ty = lid / 8u;']
    : [`let tx = lid % 8u + 8u * ((lid / 32u) % ${warpsX}u);`, `let ty = (lid / 8u) % 4u + 4u * (lid / ${32 * warpsX}u);`];
  const fmas: string[] = [];
  const writes: string[] = [];
  for (let r = 0; r < tm; r++) {
    const cells = [...Array(tn / 4).keys()].map((j) => {
      const acc = `acc[${r * (tn / 4) + j}]`;
      writes.push(`write4(out_base, out_row + ${4 * gy * Math.floor(r / 4) + (r % 4)}u, out_col + ${4 * gx * j}u, ${acc});`);
      return `${acc} = fma(vec4<f32>(a${Math.floor(r / 4)}.${'xyzw'[r % 4]}), b${j}, ${acc});`;
    });
    fmas.push(cells.join(' '));
  }
  // The K tile's rows written out (the Vulkan driver left a loop here rolled: 18% slower on the H100).
  const multiply = [...Array(bk).keys()].flatMap((kk) => [
    `{ // k row ${kk}`,
    ...[...Array(tm / 4).keys()].map((i) => `  let a${i} = a_tile[a_frag + ${kk * aRow + i * gy}u];`),
    ...[...Array(tn / 4).keys()].map((j) => `  let b${j} = b_tile[b_frag + ${kk * bRow + j * gx}u];`),
    ...fmas.map((l) => '  ' + l),
    '}',
  ]);

  const body = [
    ...matmulTileLines(rank),
    ...(epilogue?.setup ?? []),
    '// What this invocation copies of each K tile: its element at (o, kk), then more rows of the same tile.',
    ...aCopy.setup,
    ...bCopy.setup,
    `var a_regs: array<f32, ${aCopy.load.length}>;`,
    `var b_regs: array<f32, ${bCopy.load.length}>;`,
    ...coords,
    `var acc: array<vec4<f32>, ${(tm * tn) / 4}>;`,
    'let k_tiles = (params.k + TILE_K - 1u) / TILE_K;',
    '// Step s loads K tile s into registers and stage s % 2 while the workgroup multiplies tile s - 1 from the other stage.',
    'for (var s = 0u; s <= k_tiles; s = s + 1u) {',
    '  if (s < k_tiles) {',
    '    let k0 = s * TILE_K;',
    indent([...aCopy.load, ...bCopy.load], '    '),
    '  }',
    '  if (s > 0u) {',
    '    let a_frag = ((s - 1u) % 2u) * A_STAGE + ty;',
    '    let b_frag = ((s - 1u) % 2u) * B_STAGE + tx;',
    indent(multiply, '    '),
    '  }',
    '  if (s < k_tiles) {',
    '    let a_stage = (s % 2u) * A_STAGE;',
    '    let b_stage = (s % 2u) * B_STAGE;',
    indent([...aCopy.store, ...bCopy.store], '    '),
    '  }',
    '  workgroupBarrier();',
    '}',
    'let out_base = batch * params.m * params.n;',
    'let out_row = row0 + 4u * ty;',
    'let out_col = col0 + 4u * tx;',
    ...writes,
  ];

  // f16: the one rounding of the f32 sum (or of the epilogue's value, computed from the sum in registers).
  const put = (v: string, col: string) => store(req.out.dtype, epilogue ? epilogue.apply('row', col, v) : v);
  const write4 = edges.m || edges.n
    ? ['  if (row >= params.m) { return; }', '  let at = out_base + row * params.n + col;',
      `  for (var c = 0u; c < 4u; c = c + 1u) { if (col + c < params.n) { out[at + c] = ${put('v[c]', 'col + c')}; } }`]
    : ['  let at = out_base + row * params.n + col;', `  out[at] = ${put('v.x', 'col')}; out[at + 1u] = ${put('v.y', 'col + 1u')}; out[at + 2u] = ${put('v.z', 'col + 2u')}; out[at + 3u] = ${put('v.w', 'col + 3u')};`];
  const ragged = (['m', 'n', 'k'] as const).filter((d) => edges[d]).map((d) => d.toUpperCase());
  const decls = [
    `// a is ${transposeA ? '[K, M]' : '[M, K]'}, b is ${transposeB ? '[N, K]' : '[K, N]'}. Each workgroup computes a ${bm}x${bn} output tile, each invocation`,
    ragged.length === 0
      ? `// ${tm}x${tn} of it; the tiles divide M, N and K exactly, so nothing is bounds-checked.`
      : `// ${tm}x${tn} of it; the tiles overhang ${ragged.join(', ').replace(/, (?=[^,]*$)/, ' and ')}, so the edge tiles clamp their loads${edges.k ? ', read 0 past K' : ''}${edges.m || edges.n ? ' and skip writes past M and N' : ''}.`,
    `const TILE_M = ${bm}u;`,
    `const TILE_N = ${bn}u;`,
    `const TILE_K = ${bk}u;`,
    '// vec4s per k row of a_tile and b_tile: the tile\'s rows plus one vec4 of padding, so that the',
    '// transposing stores of 8 k rows x 4 elements land in 32 different banks.',
    `const A_ROW = ${aRow}u;`,
    `const B_ROW = ${bRow}u;`,
    `const A_STAGE = ${bk * aRow}u;`,
    `const B_STAGE = ${bk * bRow}u;`,
    `var<workgroup> a_tile: array<vec4<f32>, ${2 * bk * aRow}>; // [stage][k][m / 4]`,
    `var<workgroup> b_tile: array<vec4<f32>, ${2 * bk * bRow}>; // [stage][k][n / 4]`,
    ...(epilogue ? ['', epilogue.decls] : []),
    '',
    '// Four adjacent outputs of one row.',
    'fn write4(out_base: u32, row: u32, col: u32, v: vec4<f32>) {',
    ...write4,
    '}',
  ];
  return {
    inputNames: ['a', 'b', ...(epilogue?.inputNames ?? [])],
    params: { ...matmulParams(a, b, dims, tilesM, tilesN), ...epilogue?.params },
    decls: decls.join('\n'),
    body: indent(body),
    workgroupSize: threads,
    workgroups: numel(batch) * tilesM * tilesN,
  };
}

/** embedding: out[r, c] = weight[idx[r], c]; an index outside the table is reported (by its row's first column) and clamped. */
export function embeddingKernel(req: KernelRequest): KernelPlan {
  const [weight] = req.inputs as TensorType[];
  const [rows, c] = weight.shape;
  return generateKernel(req.out, { c, rows }, ['weight', 'idx'], '', [
    'let r = gid / params.c;',
    'let id = idx[r];',
    reportBadIndex('id', 'params.rows', 'r', 'gid % params.c == 0u'),
    'let row = u32(clamp(id, 0, i32(params.rows) - 1));',
    'out[gid] = weight[row * params.c + gid % params.c];',
  ]);
}

export const linalgLowerings: Record<string, Lowering> = { matmul: matmulKernel, matmul_epilogue: (req) => matmulKernel(req), embedding: embeddingKernel };

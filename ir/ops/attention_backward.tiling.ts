// How the flash backward's kernels (codegen/wgsl/attention_backward.ts) cut the work: which rows each mode owns
// and which stream past in tiles (ROLES), and the tiling picked for the head dims and the device's
// limits. Apart from the kernel text, so the gradient rule can ask whether its kernels fit.

import { DTYPE_INFO } from '../dtypes.ts';
import { DEFAULT_KERNEL_LIMITS, type KernelLimits } from '../limits.ts';
import type { DType } from '../types.ts';
import type { AttentionWrt } from './attention_backward.ts';

/** attention_lse, or the gradient a fused_attention_backward kernel writes. */
export type BackwardMode = 'lse' | AttentionWrt;

/** Which bindings play which part in a mode: see the table in codegen/wgsl/attention_backward.ts's file comment. */
export interface Roles {
  /** The owned rows are query rows (the streamed ones keys), or key rows. */
  readonly own: 'query' | 'key';
  /** Owned D-wide row, scaled into base-2 scores as it is loaded. */
  readonly a: string;
  /** Owned Dv-wide row, dotted with y for dP. */
  readonly b?: string;
  /** Streamed D-wide rows. */
  readonly x: string;
  /** Streamed Dv-wide rows. */
  readonly y?: string;
  /** The tiles the gradients are sums of rows of: x weighted by dS (dq, dk), y by P (dv). */
  readonly acc: readonly ('x' | 'y')[];
}

export const ROLES: Record<BackwardMode, Roles> = {
  lse: { own: 'query', a: 'q', x: 'k', acc: [] },
  q: { own: 'query', a: 'q', b: 'grad_out', x: 'k', y: 'v', acc: ['x'] },
  k: { own: 'key', a: 'k', b: 'v', x: 'q', y: 'grad_out', acc: ['x'] },
  v: { own: 'key', a: 'k', x: 'q', y: 'grad_out', acc: ['y'] },
  kv: { own: 'key', a: 'k', b: 'v', x: 'q', y: 'grad_out', acc: ['x', 'y'] },
};

/** Per streamed (query) row words a key-owning mode stages beside its tiles: lse's two, and delta when it forms dS. */
export function stagedScalars(r: Roles): number {
  return r.own === 'key' ? (r.b ? 3 : 2) : 0;
}

/** How the work is cut (see codegen/wgsl/attention_backward.ts's file comment). */
export interface BackwardTiling {
  /** Invocations per owned row: 1, 2 or 4. */
  readonly slices: number;
  /** Owned rows per workgroup. */
  readonly rows: number;
  /** Streamed rows per tile. */
  readonly tile: number;
  /** vec4s of a D-wide row one invocation owns. */
  readonly aVec4: number;
  /** vec4s of a Dv-wide row one invocation owns. */
  readonly bVec4: number;
  readonly workgroupSize: number;
  readonly workgroupBytes: number;
}

// As in the forward kernel: the loop over a tile's rows, times the vec4s an invocation reads and
// writes per row (every dot product and every update), must stay small enough for the driver to
// unroll. The forward's 16 keys x (8 + 8) vec4 did on the H100; the backward measured the same
// bound: kv (32 vec4s a row) 0.49 ms at 8 rows a tile, 0.94 at 16; q (24) 0.35 at 8, 0.38 at 16.
const MAX_TILE_VEC4S = 256;
const TILES = [16, 8, 4];
const ROW_CHOICES = [64, 32];

/** vec4s one invocation reads or accumulates per streamed row: the dot products, then the updates. */
function vec4sPerRow(mode: BackwardMode, t: Pick<BackwardTiling, 'aVec4' | 'bVec4'>): number {
  const r = ROLES[mode];
  const perTile = (tile: 'x' | 'y') => (tile === 'x' ? t.aVec4 : t.bVec4);
  return t.aVec4 + (r.b ? t.bVec4 : 0) + r.acc.reduce((sum, tile) => sum + perTile(tile), 0);
}

/** Invocations per row: three D-wide arrays live in registers (two owned rows, the accumulator), so two slices from D = 33. */
function slicesFor(widest: number): number {
  return widest <= 32 ? 1 : widest <= 64 ? 2 : 4;
}

/** The sizes that follow from slices, rows and tile for a mode and head dims d, dv; the tiles hold vec4s of `dtype` (f16 ones take half the memory). */
export function backwardTilingOf(mode: BackwardMode, d: number, dv: number, shape: Pick<BackwardTiling, 'slices' | 'rows' | 'tile'>, dtype: DType = 'f32'): BackwardTiling {
  const r = ROLES[mode];
  const { slices, rows, tile } = shape;
  const aVec4 = Math.max(1, Math.ceil(Math.ceil(d / 4) / slices));
  const bVec4 = Math.max(1, Math.ceil(Math.ceil(dv / 4) / slices));
  const tiles = tile * slices * (aVec4 + (r.y ? bVec4 : 0)) * 4 * DTYPE_INFO[dtype].bytes;
  const exchanges = slices > 1 ? (r.b ? 2 : 1) * tile * rows * slices * 4 : 0;
  return { ...shape, aVec4, bVec4, workgroupSize: rows * slices, workgroupBytes: tiles + exchanges + stagedScalars(r) * tile * 4 };
}

/** The tiling of a mode for head dims d, dv (of `dtype`) on a device with these limits; null when none fits. */
export function backwardTiling(mode: BackwardMode, d: number, dv: number, limits: KernelLimits = DEFAULT_KERNEL_LIMITS, dtype: DType = 'f32'): BackwardTiling | null {
  const slices = slicesFor(mode === 'lse' ? d : Math.max(d, dv));
  for (const rows of ROW_CHOICES) {
    if (rows * slices > limits.maxComputeInvocationsPerWorkgroup) continue;
    for (const tile of TILES) {
      const t = backwardTilingOf(mode, d, dv, { slices, rows, tile }, dtype);
      const unrolled = tile * vec4sPerRow(mode, t) <= MAX_TILE_VEC4S || tile === TILES.at(-1);
      if (unrolled && t.workgroupBytes <= limits.maxComputeWorkgroupStorageSize) return t;
    }
  }
  return null;
}

/** Whether every backward kernel fits WebGPU's default limits for head dims d, dv of `dtype`: the gradient rule's test, made before any device is known. */
export function flashBackwardFits(d: number, dv: number, dtype: DType = 'f32'): boolean {
  return (['lse', 'q', 'k', 'v', 'kv'] as const).every((mode) => backwardTiling(mode, d, dv, DEFAULT_KERNEL_LIMITS, dtype) !== null);
}

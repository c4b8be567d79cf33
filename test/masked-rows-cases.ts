// The attention chains of the masked-rows tests (masked-rows.test.ts on the cpu, masked-rows.gpu.test.ts
// on the GPU): q, k, v [B, H, T, D] and a mask that leaves query row 1 with no key.

import { expect } from 'vitest';
import { type Compilation, F, Module, type Tensor, compile, manualSeed, randn, tensor } from '../index.ts';

export const [B, H, T, D] = [1, 2, 4, 4];
const SCALE = 1 / Math.sqrt(D);
/** Query row 1 keeps no key; the others keep keys j <= i and key 3. */
export const KEEP = Array.from({ length: T * T }, (_, idx) => (Math.floor(idx / T) === 1 ? 0 : Number(idx % T <= Math.floor(idx / T) || idx % T === 3)));
export const EMPTY_ROW = 1;

export type Body = (m: Masked, q: Tensor, k: Tensor, v: Tensor, mask?: Tensor) => Tensor;

/** forward(q, k, v, mask?) is `body`; the mask is `mask` when given at run time, else the `keep` buffer (or its additive twin). */
export class Masked extends Module {
  declare keep: Tensor;
  declare additive: Tensor;
  constructor(private readonly body: Body) {
    super();
    this.registerBuffer('keep', tensor(KEEP, [T, T], 'bool'));
    this.registerBuffer('additive', tensor(KEEP.map((x) => (x ? 0 : -Infinity)), [T, T]));
    this.eval();
  }

  forward(q: Tensor, k: Tensor, v: Tensor, mask?: Tensor): Tensor {
    return this.body(this, q, k, v, mask);
  }
}

const scores = (q: Tensor, k: Tensor) => q.matmul(k.transpose(-2, -1)).mul(SCALE);
/** The manual chain, masked_fill(mask == 0, fill): nanoGPT's spelling. */
export const chain = (fill: number): Body => (m, q, k, v, mask) => F.softmax(scores(q, k).maskedFill((mask ?? m.keep).eq(0), fill), -1).matmul(v);
export const additiveChain: Body = (m, q, k, v, mask) => F.softmax(scores(q, k).add(mask ?? m.additive), -1).matmul(v);
/** sdpa with a bool keep-mask (computed from the buffer, so that compile() folds it to a constant it can read). */
export const sdpa: Body = (m, q, k, v, mask) => F.scaledDotProductAttention(q, k, v, { attnMask: mask ?? m.keep.ne(0) });

export function qkv(seed = 3): Tensor[] {
  manualSeed(seed);
  return [0, 1, 2].map(() => tensor(Array.from({ length: B * H * T * D }, () => randn()), [B, H, T, D]));
}

/** Row r (of every head) of a [B, H, T, D] result. */
export function rowOf(data: ArrayLike<number>, r: number): number[] {
  return Array.from({ length: B * H }, (_, bh) => Array.from(data).slice((bh * T + r) * D, (bh * T + r + 1) * D)).flat();
}

/** forward() compiled on `backend`, with attention fusion on or off: its output, and the compilation. */
export async function compiled(model: Masked, args: Tensor[], backend: 'cpu' | 'webgpu', fuse: boolean): Promise<{ out: number[]; c: Compilation }> {
  const f = compile(model, { backend, passes: { fuse_attention: fuse } });
  const out = await (f as unknown as (...a: Tensor[]) => Promise<Tensor>)(...args);
  return { out: Array.from(await out.data()), c: f.last! };
}

/** `got` equals `want` to `tol` (relative to max |want|), with NaN exactly where `want` has NaN. */
export function expectSameAnswer(got: number[], want: number[], tol = 1e-5): void {
  expect(got.map(Number.isNaN)).toEqual(want.map(Number.isNaN));
  const scale = Math.max(1, ...want.filter(Number.isFinite).map(Math.abs));
  for (let e = 0; e < want.length; e++) if (!Number.isNaN(want[e])) expect(Math.abs(got[e] - want[e])).toBeLessThanOrEqual(tol * scale);
}

// The attention chains of the masked-rows tests (masked-rows.test.ts on the cpu, masked-rows.gpu.test.ts
// on the GPU): q, k, v [B, H, T, D] and a mask that leaves query row 1 with no key.

import { expect } from 'vitest';
import { loadBackend } from '../compiler/backends.ts';
import { leafFeeder, stateTensors } from '../compiler/leaves.ts';
import { type Compilation, F, Module, type Tensor, compile, differentiate, manualSeed, nn, randn, tensor, traceModule } from '../index.ts';
import { DEFAULT_PIPELINE, runPasses } from '../passes/index.ts';

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
  constructor(protected readonly body: Body) {
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

/** An attention layer with weights: q, k, v = x Wq, x Wk, x Wv [B, T, H*D] split into heads, `body`, and loss = the output's sum. */
export class MaskedLayer extends Masked {
  wq = new nn.Linear(H * D, H * D, false);
  wk = new nn.Linear(H * D, H * D, false);
  wv = new nn.Linear(H * D, H * D, false);

  forward(x: Tensor, mask?: Tensor): Tensor {
    const heads = (t: Tensor) => t.view(B, T, H, D).transpose(1, 2);
    const [q, k, v] = [this.wq, this.wk, this.wv].map((w) => heads(w.forward(x)));
    return this.body(this, q, k, v, mask).sum();
  }
}

/**
 * Each weight's gradient of the layer's loss, with attention fusion on or off, run on `backend`: the
 * traced graph through the passes up to the fused stage, then differentiated (as compileTrainStep does).
 */
export async function layerGradients(model: MaskedLayer, args: Tensor[], backend: 'cpu' | 'webgpu', fuse: boolean): Promise<{ grads: Map<string, number[]>; fused: number }> {
  const trace = traceModule(model, args);
  const buffers = new Map(model.namedBuffers().map(([name, t]) => [name, t.host!]));
  const pipeline = DEFAULT_PIPELINE.filter((p) => p.stage !== 'lowered');
  const graph = runPasses(trace.graph, pipeline, { passes: { fuse_attention: fuse }, bufferValue: (name) => buffers.get(name) }).graph;
  const withGrads = differentiate(graph, graph.outputs[0].node, graph.nodesOf('param'));
  const run = await (await loadBackend(backend)).prepare(withGrads);
  const outputs = await run(leafFeeder(withGrads, stateTensors(model), trace.argNames, args));
  const grads = new Map<string, number[]>();
  for (const [name] of model.namedParameters()) grads.set(name, Array.from(await outputs.get(`grad.${name}`)!.data()));
  return { grads, fused: graph.nodesOf('fused_attention').length };
}

/** The layer's weights whose gradient the chain makes NaN, by case. */
export const GRADIENT_CASES: [string, Body, string[], boolean?][] = [
  // masked_fill passes no gradient to the row's scores: only v's gradient (P^T dO) meets the NaN.
  ['masked_fill(-inf), constant mask', chain(-Infinity), ['wv.weight']],
  ['masked_fill(-inf), mask given at run time', chain(-Infinity), ['wv.weight'], true],
  // add passes the NaN of the row's dS on to q and k.
  ['additive 0 / -inf mask', additiveChain, ['wq.weight', 'wk.weight', 'wv.weight']],
  ['masked_fill(-1e30): finite everywhere', chain(-1e30), []],
];
